#!/usr/bin/env bash
# test_lost_consumer.sh - the consumers a serve pulls vanish under it (an
# operator deletes them, or a takeover deleted one and timed out making
# it again during an election: seen in the node-loss test, 128 inputs
# left in the stream with nobody to deliver them).
#
# A pull request sent to a consumer that does not exist gets no answer
# at all (JetStream's API owns the subject, so not even a 503), so a serve
# that only waits for answers pulls nothing, for ever, without a word.
#
# Asserted: a serve whose intake and forward consumers are all deleted
# while no pull request of its own waits on them (it is paused: a
# request waiting at deletion gets a 409, which the serve heeded before)
# makes them again by itself (and says so), and the events published
# after the deletion all get their one outcome; nothing is stored twice.
# Exit 77 without nats-server.
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/../integ/nats.sh"
CHECK="python3 $(dirname "$0")/../integ/check_outcomes.py"
REQ="python3 $(dirname "$0")/natsreq.py"
SLOW=${LUCENT_TEST_SLOW:-1}

nats_start

trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

"$LUCENT" serve --nats "$NATS_URL" --shard a --plugin "$LUCENT_PLUGIN" \
  --log-format json >> "$T/a.out" 2>> "$T/a.log" &
SHARD_PIDS+=($!)
wait_view a "a"

# 1. A first run: every consumer exists and is pulled.
"$LUCENT_GEN" -n 300 --seed 11 > "$T/in1.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in1.jsonl" > /dev/null
store_outcomes "$T/in1.jsonl" $((60 * SLOW))
pass "first run: every input has its outcome"

# 2. Every consumer of the work queues deleted under the serve, paused
#    until its pull requests (1 s) have expired.
kill -STOP "${SHARD_PIDS[0]}"
sleep 2
names=$($REQ --servers "$NATS_URL" req '$JS.API.CONSUMER.NAMES.LUCENT_INTAKE' '{}')
fwd=$($REQ --servers "$NATS_URL" req '$JS.API.CONSUMER.NAMES.LUCENT_FWD' '{}')
deleted=0
for pair in $(python3 -c '
import json, sys
for stream, text in (("LUCENT_INTAKE", sys.argv[1]), ("LUCENT_FWD", sys.argv[2])):
    for c in json.loads(text).get("consumers") or []:
        print("%s/%s" % (stream, c))' "$names" "$fwd"); do
  out=$($REQ --servers "$NATS_URL" req "\$JS.API.CONSUMER.DELETE.${pair%/*}.${pair#*/}" '')
  grep -q '"success":true' <<< "$out" || fail "deleting $pair: $out"
  deleted=$((deleted + 1))
done
kill -CONT "${SHARD_PIDS[0]}"
[ "$deleted" -ge 16 ] || fail "only $deleted consumers to delete"
pass "deleted $deleted consumers under the serve"

# 3. New events, to every partition: each must find its consumer again.
"$LUCENT_GEN" -n 300 --seed 12 > "$T/in2.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in2.jsonl" > /dev/null
store_outcomes "$T/in2.jsonl" $((90 * SLOW))
cat "$T/in1.jsonl" "$T/in2.jsonl" > "$T/all.jsonl"
"$LUCENT" events --nats "$NATS_URL" > "$T/stored.jsonl"
$CHECK "$T/all.jsonl" "$T/stored.jsonl" || fail "books after the deletion"
n=$(grep -c "was missing on the server; created it again" "$T/a.log" || true)
[ "$n" -ge 16 ] || fail "the serve recreated $n of $deleted consumers: $(tail -5 "$T/a.log")"
pass "the serve made its $n consumers again; every input of both runs has one outcome"

# 4. The stop is clean (status 0; under ASan, nothing leaked).
kill "${SHARD_PIDS[0]}"
rc=0; wait "${SHARD_PIDS[0]}" || rc=$?
SHARD_PIDS=()
[ "$rc" = 0 ] || fail "serve exited $rc after SIGTERM: $(tail -5 "$T/a.log")"
pass "the serve stopped cleanly"
