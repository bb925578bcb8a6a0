#!/usr/bin/env bash
# test_pause.sh - a serve frozen (SIGSTOP) mid-run for longer than the
# view's patience, then thawed.  While it is frozen the others see it
# leave and take its partitions over (replaying what it held first);
# when it thaws it still believes it owns them, pulls and acks for a
# moment on consumers that were recreated, sees the view again and hands
# them back.  Nothing may be lost, nothing stored twice, and the run must
# finish by itself with the thawed serve back in the view.
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/../integ/nats.sh"
CHECK="python3 $(dirname "$0")/../integ/check_outcomes.py"
SLOW=${LUCENT_TEST_SLOW:-1}
N=${LUCENT_TEST_FAULT_EVENTS:-20000}

nats_start
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT
# lucent's default AckWait (10 s), longer than the freeze: every
# redelivery to the frozen serve (it still has a pull request open) counts
# as a delivery, and past --max-deliveries (5) what it held would be
# dead-lettered when it thaws (README, "Failure model").
start_serves "a b c"
# until shard $1's latest view is $2 (wait_view: any view it ever logged)
wait_last_view() {
  for _ in $(seq 1 $((300 * SLOW))); do
    [ "$(grep -o '"view":"[^"]*"' "$T/$1.log" | tail -1)" = "\"view\":\"$2\"" ] && return 0
    sleep 0.1
  done
  fail "shard $1's view never became [$2]: $(grep -o '"view":"[^"]*"' "$T/$1.log" | tail -1)"
}

"$LUCENT_GEN" -n "$N" --seed 37 > "$T/in.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" > /dev/null || fail "publish"
for _ in $(seq 1 $((600 * SLOW))); do # freeze b when the run is under way
  [ "$(count 2>/dev/null || echo 0)" -gt $((N * 2)) ] && break
  sleep 0.1
done
kill -STOP "${SHARD_PIDS[1]}"
wait_last_view a "a,c"   # the others gave up on b and took its partitions
sleep 2
kill -CONT "${SHARD_PIDS[1]}"
pass "b frozen until a and c took its partitions over, then thawed"
wait_last_view b "a,b,c"
wait_last_view a "a,b,c"

# Waits while the run makes progress: a busy machine is slow, not stuck.
# The books are read (a full dump) only once the store has been quiet for
# 3 s; the test fails when nothing changed for 120 s (x LUCENT_TEST_SLOW).
seen= since=$SECONDS quiet=0
while :; do
  n=$(count 2>/dev/null || echo "?")
  if [ "$n" = "$seen" ]; then quiet=$((quiet + 1)); else seen=$n since=$SECONDS quiet=0; fi
  if [ $quiet -ge 3 ]; then
    "$LUCENT" events --nats "$NATS_URL" > "$T/stored.jsonl" 2>/dev/null || true
    missing=$($CHECK "$T/in.jsonl" "$T/stored.jsonl" --wait-only 2>/dev/null || echo "?")
    [ "$missing" = 0 ] && break
  fi
  [ $((SECONDS - since)) -lt $((120 * SLOW)) ] || fail "stuck for 120 s: $n events stored, outcomes missing: ${missing:-?}"
  sleep 1
done
$CHECK "$T/in.jsonl" "$T/stored.jsonl" --competing-ok || fail "books after the pause"
for i in 0 1 2; do kill -0 "${SHARD_PIDS[$i]}" || fail "serve $i died"; done
pass "every input one outcome, nothing stored twice, b back in the view"
