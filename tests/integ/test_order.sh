# test_order.sh - per-key order (issue 19): events of one hash_based or
# sticky_session key run in publish order, whatever their subjects; the
# events of one subject of a round_robin type too (distributed); emitted
# events in order per emitting shard and key.  Inversions are counted from
# every execution (tests/plugins/order.c logs each one; order_check.py):
#   1. embedded, `lucent run` with 4 shards: 0 inversions for keys and
#      emitted events;
#   2. 2 serves, then 3 serves, at-least-once: 0 inversions for keys,
#      subjects of round_robin, emitted events;
#   3. the same input partitioned the v1 way (--partition-by subject), on
#      2 serves: inversions reported (the "before"), not asserted;
#   4. a shard joins, another leaves (SIGTERM) during a run: reported;
#   5. kill -9 of one of 3 serves during a run: every input still has its
#      outcome; inversions and re-executions reported.
# The reported numbers are in README.md ("Order") and bench/README.md.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
: "${ORDER_PLUGIN:?path to the order test plugin}"
OC="python3 $(dirname "$0")/order_check.py"
SLOW=${LUCENT_TEST_SLOW:-1}
N=${LUCENT_TEST_ORDER_EVENTS:-20000}
if [ -n "${LUCENT_TEST_SANITIZER:-}${LUCENT_TEST_QUICK:-}" ]; then
  N=${LUCENT_TEST_ORDER_EVENTS:-3000}
fi
KEYS=500
$OC gen "$N" "$KEYS" 19 > "$T/in.jsonl"
WANT=$($OC expect "$T/in.jsonl")

trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

serve() { # serve LOGDIR ID [args]: a shard of the order plugin
  local dir=$1 id=$2; shift 2
  LUCENT_ORDER_LOG=$dir "$LUCENT" serve --nats "$NATS_URL" --shard "$id" \
    --plugin "$ORDER_PLUGIN" --log-format json "$@" \
    >> "$T/$id.out" 2>> "$T/$id.log" &
  SHARD_PIDS+=($!)
  eval "PID_$id=$!"
}
fresh_logs() { # a phase starts: the shards' logs of the last one go
  local s
  for s in a b c; do
    [ ! -f "$T/$s.log" ] || mv "$T/$s.log" "$T/$s.log.$SECONDS"
  done
}
NATSREQ="python3 $(dirname "$0")/../faults/natsreq.py"
wait_pulled() { # until every intake partition and forward queue is pulled
  local want=$(($1 + $2)) got=0
  for _ in $(seq 1 $((150 * SLOW))); do
    got=0
    for st in LUCENT_INTAKE LUCENT_FWD; do
      got=$((got + $($NATSREQ --servers "$NATS_URL" req "\$JS.API.CONSUMER.LIST.$st" '{"offset":0}' 2>/dev/null |
        python3 -c "import json,sys; print(sum(1 for c in json.load(sys.stdin).get('consumers') or [] if c.get('num_waiting',0) > 0))" 2>/dev/null || echo 0)))
    done
    [ "$got" -ge "$want" ] && return 0
    sleep 0.1
  done
  fail "only $got of $want consumers are pulled"
}
ran_past() { # ran_past LOGDIR N: until N inputs have executed (bounded)
  for _ in $(seq 1 $((200 * SLOW))); do
    [ "$($OC count "$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
}
wait_runs() { # wait_runs LOGDIR SECONDS: until every input has executed
  local deadline=$((SECONDS + $2 * SLOW)) have=0
  while [ $SECONDS -lt $deadline ]; do
    have=$($OC count "$1")
    [ "$have" -ge "$WANT" ] && return 0
    sleep 0.5
  done
  fail "only $have of $WANT executions in $1 after $2 s"
}
field() { # field REPORT TYPE NAME
  python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2],{}).get(sys.argv[3],0))" "$1" "$2" "$3"
}
zero() { # zero REPORT WHAT TYPES...: no inversions for these types
  local r=$1 what=$2 t; shift 2
  for t in "$@"; do
    [ "$(field "$r" "$t" inversions)" = 0 ] ||
      fail "$what: $t executed out of per-key order: $(cat "$r")"
  done
}
stopped_quiet() { # the store holds one outcome per input: none missing
  "$LUCENT" events --nats "$NATS_URL" > "$T/stored.jsonl"
  python3 - "$T/in.jsonl" "$T/stored.jsonl" <<'PY'
import json, sys
ids = {json.loads(l)["id"] for l in open(sys.argv[1])}
done = {}
for l in open(sys.argv[2]):
    e = json.loads(l)
    c = e.get("causationid")
    if c in ids and e["type"] in ("KeyedCompleted", "StickyCompleted",
                                  "PlainCompleted", "SpreadCompleted"):
        done[c] = done.get(c, 0) + 1
missing = ids - set(done)
twice = [c for c, n in done.items() if n > 1]
assert not missing and not twice, (len(missing), len(twice))
PY
}

# 1. Embedded, 4 shards.
mkdir -p "$T/emb"
LUCENT_ORDER_LOG=$T/emb "$LUCENT" run --plugin "$ORDER_PLUGIN" --shards 4 \
  --input "$T/in.jsonl" --json > "$T/emb.json" 2> "$T/emb.err" ||
  fail "lucent run: $(tail -3 "$T/emb.err")"
[ "$(json "$T/emb.json" "j['outcomes']['completed']")" = "$N" ] ||
  fail "embedded: not every input completed: $(cat "$T/emb.json")"
$OC report "$T/emb" > "$T/emb.report"
[ "$(field "$T/emb.report" KeyedChild inputs)" -gt 0 ] || fail "no emitted events ran"
zero "$T/emb.report" "embedded, 4 shards" Keyed Sticky KeyedChild
echo "# embedded: $(cat "$T/emb.report")"
pass "embedded, 4 shards: $N events, $KEYS keys, 0 inversions per key and per emitting shard"

# 2. Distributed: 2 serves, then 3, each on a fresh server, in steady
#    state (a static view).
distributed() { # distributed NAME K [publish args]: K serves, one publish
  local dir=$T/$1 k=$2 ids=a,b,c; shift 2
  mkdir -p "$dir"
  fresh_logs
  nats_start
  local view
  view=$(echo "$ids" | cut -d, -f1-"$k")
  # A static view: steady state means no view change.  (With heartbeats,
  # a shard starved of CPU for 6 heartbeats, 1.5 s, on a loaded machine
  # sees the others leave and takes their partitions over: a takeover,
  # whose order is phases 4 and 5's.)
  for s in $(echo "$view" | tr , ' '); do serve "$dir" "$s" --shards "$view"; done
  for s in $(echo "$view" | tr , ' '); do wait_view "$s" "$view"; done
  wait_pulled 16 "$k"
  "$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" "$@" --json \
    > "$T/pub.json" 2> "$T/pub.err" || fail "publish: $(cat "$T/pub.err")"
  wait_runs "$dir" 120
  cleanup_shards
  stopped_quiet || fail "$k serves: an input has no outcome, or two"
  $OC report "$dir" > "$dir.report"
  nats_stop
}
distributed d2 2
zero "$T/d2.report" "2 serves" Keyed Sticky KeyedChild Plain
echo "# 2 serves: $(cat "$T/d2.report")"
pass "2 serves: 0 inversions per key, per subject (round_robin), per emitting shard"
distributed d3 3
zero "$T/d3.report" "3 serves" Keyed Sticky KeyedChild Plain
echo "# 3 serves: $(cat "$T/d3.report")"
pass "3 serves: 0 inversions per key, per subject (round_robin), per emitting shard"

# 3. The v1 partitioning, for comparison (not asserted: it is the bug).
distributed v1 2 --partition-by subject
echo "# 2 serves, partitioned by subject (v1): $(cat "$T/v1.report")"
pass "2 serves, v1 partitioning: measured"

# 4. A shard joins and another leaves during a run.
mkdir -p "$T/jl"
fresh_logs
nats_start
serve "$T/jl" a; serve "$T/jl" b
wait_view a "a,b"; wait_view b "a,b"; wait_pulled 16 2
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" > /dev/null 2> "$T/pub.err" &
PUB=$!
ran_past "$T/jl" $((WANT / 4))
serve "$T/jl" c
ran_past "$T/jl" $((WANT / 2))
kill -TERM "$PID_b"
wait "$PUB" || fail "publish during join/leave: $(cat "$T/pub.err")"
wait_runs "$T/jl" 120
cleanup_shards
stopped_quiet || fail "join/leave: an input has no outcome, or two"
$OC report "$T/jl" > "$T/jl.report"
echo "# join c, then stop b (SIGTERM): $(cat "$T/jl.report")"
pass "join and leave during a run: every input has one outcome (order measured)"
nats_stop

# 5. kill -9 of one of three serves during a run.
mkdir -p "$T/k9"
fresh_logs
nats_start
for s in a b c; do serve "$T/k9" $s --ack-wait-ms $((2000 * SLOW)); done
for s in a b c; do wait_view $s "a,b,c"; done
wait_pulled 16 3
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" > /dev/null 2> "$T/pub.err" &
PUB=$!
ran_past "$T/k9" $((WANT / 3))
kill -9 "$PID_b"
wait "$PID_b" 2>/dev/null || true
wait "$PUB" || fail "publish during the kill: $(cat "$T/pub.err")"
wait_runs "$T/k9" 180
cleanup_shards
stopped_quiet || fail "kill -9: an input has no outcome, or two"
$OC report "$T/k9" > "$T/k9.report"
echo "# kill -9 of b of a,b,c: $(cat "$T/k9.report")"
pass "kill -9 of one of 3 serves: every input has one outcome (order measured)"
