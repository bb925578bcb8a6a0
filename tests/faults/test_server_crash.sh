#!/usr/bin/env bash
# test_server_crash.sh - kill -9 of the NATS server while three serves work:
# nothing lost, nothing stored twice, and the work queues empty out.  A
# crashed nats-server loses the deletions of the last seconds of acks
# (docs/nats-notes.md e1): those messages come back below their
# consumer's ack floor or above it as if acked, where nothing delivers or
# removes them, and a pending message may never be redelivered (holding
# the ack floor).  The serves take their partitions over again after they
# reconnect (resync), so LUCENT_INTAKE and LUCENT_FWD hold nothing once
# the run is over.  Without the resync, hundreds stay for ever.
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/../integ/nats.sh"
CHECK="python3 $(dirname "$0")/../integ/check_outcomes.py"
REQ="python3 $(dirname "$0")/natsreq.py"
SLOW=${LUCENT_TEST_SLOW:-1}
N=${LUCENT_TEST_FAULT_EVENTS:-20000}

nats_start
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT
start_serves "a b c" --ack-wait-ms $((2000 * SLOW))

"$LUCENT_GEN" -n "$N" --seed 31 > "$T/in.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" > /dev/null || fail "publish"
for _ in $(seq 1 $((600 * SLOW))); do # crash it when the run is well under way
  [ "$(count 2>/dev/null || echo 0)" -gt $((N * 2)) ] && break
  sleep 0.1
done
nats_restart 1
pass "nats-server killed mid-run and restarted"

msgs() { $REQ --servers "$NATS_URL" req "\$JS.API.STREAM.INFO.$1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["state"]["messages"])'; }
# Waits while the run makes progress: a busy machine is slow, not stuck.
# The books are read (a full dump) only once the store has been quiet for
# 3 s; the test fails when nothing changed for 120 s (x LUCENT_TEST_SLOW).
seen= since=$SECONDS quiet=0
while :; do
  n=$(count 2>/dev/null || echo "?")
  left="$(msgs LUCENT_INTAKE 2>/dev/null || echo ?)/$(msgs LUCENT_FWD 2>/dev/null || echo ?)"
  if [ "$n/$left" = "$seen" ]; then quiet=$((quiet + 1)); else seen="$n/$left" since=$SECONDS quiet=0; fi
  if [ $quiet -ge 3 ] && [ "$left" = "0/0" ]; then
    "$LUCENT" events --nats "$NATS_URL" > "$T/stored.jsonl" 2>/dev/null || true
    missing=$($CHECK "$T/in.jsonl" "$T/stored.jsonl" --wait-only 2>/dev/null || echo "?")
    [ "$missing" = 0 ] && break
  fi
  [ $((SECONDS - since)) -lt $((120 * SLOW)) ] || fail "stuck for 120 s: $n events stored, intake/fwd messages left $left"
  sleep 1
done
$CHECK "$T/in.jsonl" "$T/stored.jsonl" --competing-ok || fail "books after the server crash"
resyncs=$(cat "$T"/*.log | grep -c '"how":"resync"' || true)
[ "$resyncs" -gt 0 ] || fail "no serve resynced its partitions after the crash"
pass "every input one outcome, nothing twice, work queues empty ($resyncs partitions resynced)"
