# test_clock_step.sh - the wall clock of a `lucent serve` steps back an hour
# mid-run (NTP, an operator, a restored VM): the view does not change (no
# shard is dropped) and processing goes on.
#
# Shard b runs under Debian's libfaketime (the lucent command built without
# jemalloc, $LUCENT_LIBC_MALLOC: libfaketime calls malloc while it starts,
# from inside jemalloc's own start) with FAKETIME="-3600" and
# FAKETIME_START_AFTER_SECONDS: its CLOCK_REALTIME is true for its first
# STEP_AT seconds, then an hour behind; FAKETIME_DONT_FAKE_MONOTONIC=1
# keeps the monotonic clock true, as a real step does.  (An offset file
# reread at every clock read, FAKETIME_NO_CACHE=1, was tried first: now
# and then libfaketime then let b miss a's heartbeats for a timeout at the
# moment of the change, whatever lucent does.)  The proof that b's clock
# moved: the outcomes b stores after the step carry times an hour behind
# a's.  Then for two heartbeat timeouts nobody's view may change, and every
# event published after the step gets its outcome.
#
# What this cannot show: libfaketime also converts the deadline of each
# pthread_cond_timedwait at the moment of the call, so a wait already in
# progress does not stretch as it would under a real step.  The stall
# itself (a wall-clock deadline outliving a step) is reproduced by
# tests/unit/test_clock_step.c, which fails on the old code.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
CHECK="python3 $(dirname "$0")/check_outcomes.py"
SLOW=${LUCENT_TEST_SLOW:-1}
FT=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1)
: "${LUCENT_LIBC_MALLOC:?the lucent command without jemalloc}"
if [ -z "$FT" ]; then
  echo "skip: no libfaketime (Debian: libfaketime)"
  exit 77
fi
if [ -n "${LUCENT_TEST_SANITIZER:-}" ]; then
  # The sanitizers' allocators call clock_gettime while they start, as
  # jemalloc does, and libfaketime cannot start inside that (TSan also
  # interposes pthread_cond_* itself).  The plain pass runs this test.
  echo "skip: libfaketime under $LUCENT_TEST_SANITIZER"
  exit 77
fi

nats_start
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

# Heartbeats every second (a view timeout of 6 s): a suite running beside
# this test starved a shard of the CPU for the 1.5 s of the default, right
# at the step, and the view changed for that, not for the clock.  A shard
# that took the step for a lost peer would drop it for an hour either way.
HB=$((1000 * SLOW))
serve() { # serve ID BINARY [env...]: a shard with JSON logs in $T/ID.log
  local id=$1 bin=$2; shift 2
  env "$@" "$bin" serve --nats "$NATS_URL" --shard "$id" \
    --plugin "$LUCENT_PLUGIN" --ack-wait-ms $((10000 * SLOW)) \
    --heartbeat-ms "$HB" \
    --log-format json >> "$T/$id.out" 2>> "$T/$id.log" &
  SHARD_PIDS+=($!)
}

views() { grep -h '"msg":"shard view changed"' "$T/a.log" "$T/b.log" | wc -l; }

STEP_AT=$((10 * SLOW))
# libfaketime must start in b (it says so on stderr when it cannot).
FAKETIME="-3600" LD_PRELOAD="$FT" "$LUCENT_LIBC_MALLOC" --help \
  > /dev/null 2> "$T/ft.err" || true
if grep -q libfaketime "$T/ft.err"; then
  echo "skip: libfaketime cannot start here: $(head -1 "$T/ft.err")"
  exit 77
fi
serve a "$LUCENT"
b_started=$SECONDS
serve b "$LUCENT_LIBC_MALLOC" LD_PRELOAD="$FT" FAKETIME="-3600" \
  FAKETIME_START_AFTER_SECONDS="$STEP_AT" FAKETIME_DONT_FAKE_MONOTONIC=1
wait_view a "a,b"
wait_view b "a,b"
"$LUCENT_GEN" -n 300 --seed 21 > "$T/in1.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in1.jsonl" > /dev/null
store_outcomes "$T/in1.jsonl" 60
$CHECK "$T/in1.jsonl" "$T/stored.jsonl" > /dev/null || fail "books before the step"
pass "two shards, one under libfaketime, in one view"

# The step: b's wall clock goes back an hour STEP_AT seconds after it
# started (a second more for the start itself).
before=$(views)
while [ $SECONDS -lt $((b_started + STEP_AT + 1)) ]; do sleep 0.2; done
"$LUCENT_GEN" -n 300 --seed 22 > "$T/in2.jsonl" 2>/dev/null
sed -i 's/"id":"/"id":"s2-/' "$T/in2.jsonl"
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in2.jsonl" > /dev/null
store_outcomes "$T/in2.jsonl" 60
$CHECK "$T/in2.jsonl" "$T/stored.jsonl" > /dev/null || fail "books after the step"
# b's clock did move: what b stored after the step is an hour behind a's.
python3 - "$T/stored.jsonl" <<'PY' || fail "b's wall clock did not step back"
import json, sys
from datetime import datetime
t = {"a": [], "b": []}
for l in open(sys.argv[1]):
    e = json.loads(l)
    if str(e.get("causationid", "")).startswith("s2-") and e.get("shardid") in t:
        t[e["shardid"]].append(datetime.fromisoformat(e["time"].replace("Z", "+00:00")))
assert t["a"] and t["b"], {k: len(v) for k, v in t.items()}
# b's earliest: on a busy machine b may start late, and run a few of
# these before its clock steps (STEP_AT counts from its own start).
gap = (max(t["a"]) - min(t["b"])).total_seconds()
assert 3000 < gap < 4200, gap
print("b's outcomes are %.0f s behind a's" % gap)
PY
pass "processing went on across the step"

# Two heartbeat timeouts (6 x HB each) more: nobody dropped anybody.
for _ in $(seq 1 $((120 * SLOW))); do
  [ "$(views)" = "$before" ] || break
  sleep 0.1
done
[ "$(views)" = "$before" ] || { grep -h "shard view changed" "$T"/*.log; fail "a view changed after the step"; }
for p in "${SHARD_PIDS[@]}"; do kill -0 "$p" || fail "a shard died"; done
pass "the view did not change"
echo "3 passed, 0 failed"
