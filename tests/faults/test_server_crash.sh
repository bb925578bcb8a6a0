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
PIDS=()
# Wait for the serves only: a bare `wait` would wait for nats-server too,
# a child of this shell, and hang until CTest's timeout.
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT
for s in a b c; do
  "$LUCENT" serve --nats "$NATS_URL" --shard "$s" --plugin "$LUCENT_PLUGIN" \
    --ack-wait-ms $((2000 * SLOW)) --log-format json >> "$T/$s.out" 2>> "$T/$s.log" &
  PIDS+=($!)
done
for s in a b c; do wait_view $s "a,b,c"; done

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
deadline=$((SECONDS + 300 * SLOW))
while :; do
  "$LUCENT" events --nats "$NATS_URL" > "$T/stored.jsonl" 2>/dev/null || true
  missing=$($CHECK "$T/in.jsonl" "$T/stored.jsonl" --wait-only 2>/dev/null || echo "?")
  left="$(msgs LUCENT_INTAKE 2>/dev/null || echo ?)/$(msgs LUCENT_FWD 2>/dev/null || echo ?)"
  [ "$missing" = 0 ] && [ "$left" = "0/0" ] && break
  [ $SECONDS -lt $deadline ] || fail "after 300 s: $missing inputs without an outcome, intake/fwd messages left $left"
  sleep 1
done
$CHECK "$T/in.jsonl" "$T/stored.jsonl" || fail "books after the server crash"
resyncs=$(cat "$T"/*.log | grep -c '"how":"resync"' || true)
[ "$resyncs" -gt 0 ] || fail "no serve resynced its partitions after the crash"
pass "every input one outcome, nothing twice, work queues empty ($resyncs partitions resynced)"
