#!/usr/bin/env bash
# test_poison.sh - a poison input does not take the fleet down.  Three
# serves share 2000 inputs, one of which abort()s the function that runs
# it: the serve that first runs it dies (naming the function and the
# event on stderr); JetStream redelivers it, the serve that takes the
# partition over runs it isolated in a child process, where it crashes
# again and becomes a dead letter naming the signal and the function.
# At least two serves are alive at the end, every other input has exactly
# one outcome, nothing is stored twice, and /metrics counts the crash.
# Then a function that never returns: abandoned at its hard limit, its
# input dead-lettered, no serve lost.
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/../integ/nats.sh"
: "${POISON_PLUGIN:?poison test plugin}"
SLOW=${LUCENT_TEST_SLOW:-1}
N=${LUCENT_TEST_POISON_EVENTS:-2000}

nats_start
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

serve() { # serve ID: a shard with the poison plugin, JSON logs in $T/ID.log
  "$LUCENT" serve --nats "$NATS_URL" --shard "$1" --plugin "$POISON_PLUGIN" \
    --ack-wait-ms $((2000 * SLOW)) --log-format json --http 127.0.0.1:0 \
    >> "$T/$1.out" 2>> "$T/$1.log" &
  SHARD_PIDS+=($!)
  eval "PID_$1=$!"
}

# gen N SPECIAL EXTRA_JSON PREFIX: N Poison events, SPECIAL with the extra
# fields; subjects spread them over the partitions.
gen() {
  python3 - "$@" <<'PY'
import json, sys
n, special, extra, pre = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
for i in range(1, n + 1):
    d = {"n": i}
    if i == special: d.update(extra)
    print(json.dumps({"specversion": "1.0", "id": "%s%d" % (pre, i),
                      "type": "Poison", "source": "test",
                      "subject": "s-%d" % (i % 97), "data": d}))
PY
}

# books INPUT STORED DEAD_ID: every input one outcome; DEAD_ID the only dead
# letter; nothing stored twice.  Prints the dead letter's reason.
books() {
  python3 - "$@" <<'PY'
import json, sys, collections
ids = [json.loads(l)["id"] for l in open(sys.argv[1])]
evs = [json.loads(l) for l in open(sys.argv[2])]
dup = [k for k, v in collections.Counter(e["id"] for e in evs).items() if v > 1]
assert not dup, "stored twice: %s" % dup[:5]
out = collections.defaultdict(list)
for e in evs:
    if e["type"] in ("PoisonCompleted", "lucent.DeadLettered", "PoisonFailed"):
        out[e["causationid"]].append(e)
missing = [i for i in ids if i not in out]
assert not missing, "%d inputs without an outcome, e.g. %s" % (len(missing), missing[:5])
two = [i for i in ids if len(out[i]) != 1]
assert not two, "inputs with 2+ outcomes: %s" % two[:5]
dead = [i for i in ids if out[i][0]["type"] != "PoisonCompleted"]
assert dead == [sys.argv[3]], "dead letters: %s" % dead
print(out[sys.argv[3]][0]["data"]["reason"])
PY
}

wait_books() { # wait_books INPUT DEAD_ID SECONDS
  local deadline=$((SECONDS + $3 * SLOW)) r
  while [ $SECONDS -lt $deadline ]; do
    "$LUCENT" events --nats "$NATS_URL" > "$T/stored.jsonl" 2>/dev/null || true
    if r=$(books "$1" "$T/stored.jsonl" "$2" 2> "$T/books.err"); then
      echo "$r"
      return 0
    fi
    sleep 1
  done
  fail "books of $1: $(tail -1 "$T/books.err")"
}

alive() { local n=0 p; for p in "$@"; do kill -0 "$p" 2>/dev/null && n=$((n + 1)); done; echo $n; }

serve a; serve b; serve c
for s in a b c; do wait_view $s "a,b,c"; done

# 1. One input of N abort()s.
gen "$N" $((N / 2)) '{"crash":"abort"}' p > "$T/in1.jsonl"
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in1.jsonl" > /dev/null || fail "publish"
reason=$(wait_books "$T/in1.jsonl" "p$((N / 2))" 180)
case "$reason" in *SIGABRT*Poison*|*Poison*SIGABRT*) ;; *) fail "reason: $reason" ;; esac
case "$reason" in *isolated*) ;; *) fail "reason does not say isolated: $reason" ;; esac
[ "$(alive "$PID_a" "$PID_b" "$PID_c")" -ge 2 ] || fail "more than one serve died"
grep -h "fatal SIGABRT in function Poison on event p$((N / 2))" "$T"/*.log > /dev/null ||
  fail "no crash report naming the function and the event"
crashes=0
for s in a b c; do
  kill -0 "$(eval echo "\$PID_$s")" 2>/dev/null || continue
  addr=$(grep -o '"addr":"[^"]*"' "$T/$s.log" | head -1 | cut -d'"' -f4)
  v=$(curl -s "http://$addr/metrics" | awk '/^lucent_function_crashes_total\{function="Poison"\}/ {print $2}')
  crashes=$((crashes + ${v:-0}))
done
[ "$crashes" -ge 1 ] || fail "no crash counted in /metrics"
pass "poison: $(alive "$PID_a" "$PID_b" "$PID_c") of 3 serves alive, dead letter: $reason"

# 2. A function that never returns: abandoned, dead-lettered, nobody dies.
before=$(alive "$PID_a" "$PID_b" "$PID_c")
gen 200 100 '{"hang":true}' h > "$T/in2.jsonl"
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in2.jsonl" > /dev/null || fail "publish 2"
reason=$(wait_books "$T/in2.jsonl" h100 180)
case "$reason" in *"did not return"*) ;; *) fail "hang reason: $reason" ;; esac
[ "$(alive "$PID_a" "$PID_b" "$PID_c")" = "$before" ] || fail "a serve died of a hang"
pass "hang: abandoned and dead-lettered: $reason"
