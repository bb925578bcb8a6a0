# test_crash_run.sh - a function that crashes `lucent run` costs one run,
# not every run: the process dies naming the function and the event, and
# the rerun over the same store runs that input isolated, dead-letters it
# with the signal and the function, completes every other line and stores
# nothing twice.  Also one step down a chain (the crash in an emitted
# event's function), and a hang.
. "$(dirname "$0")/lib.sh"
: "${POISON_PLUGIN:?poison test plugin}"

# gen N SPECIAL_LINE JSON_FIELDS: N Poison events, line SPECIAL_LINE with
# the extra fields.
gen() {
  python3 - "$@" <<'PY'
import json, sys
n, special, extra = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
for i in range(1, n + 1):
    d = {"n": i}
    if i == special: d.update(extra)
    print(json.dumps({"specversion": "1.0", "id": "p%d" % i, "type": "Poison",
                      "source": "test", "data": d}))
PY
}

# crash_then_rerun NAME EXTRA FN SIG: the first run dies of SIG in FN on
# line 20 of 50, the second dead-letters it and completes the rest.
crash_then_rerun() {
  local name=$1 extra=$2 fn=$3 sig=$4 db="$T/$1.db"
  gen 50 20 "$extra" > "$T/$name.jsonl"
  set +e
  "$LUCENT" run --plugin "$POISON_PLUGIN" --shards 2 --store "$db" \
    --input "$T/$name.jsonl" --json > "$T/$name.out" 2> "$T/$name.err"
  local rc=$?
  set -e
  [ "$rc" -gt 128 ] || fail "$name: first run exited $rc, want death by signal"
  grep -q "fatal $sig in function $fn on event" "$T/$name.err" ||
    fail "$name: no crash report: $(tail -3 "$T/$name.err")"
  grep -q "line 20" "$T/$name.err" || fail "$name: crash report lacks the line"
  [ -s "$db.crash" ] || fail "$name: no crash marker"
  "$LUCENT" run --plugin "$POISON_PLUGIN" --shards 2 --store "$db" \
    --input "$T/$name.jsonl" --json > "$T/$name.sum" 2> "$T/$name.err2" ||
    fail "$name: rerun failed: $(tail -3 "$T/$name.err2")"
  grep -q "runs isolated this time" "$T/$name.err2" || fail "$name: no warning"
  [ ! -e "$db.crash" ] || fail "$name: marker left after a good rerun"
  [ "$(json "$T/$name.sum" "j['balanced']")" = True ] || fail "$name: books"
  "$LUCENT" events --store "$db" > "$T/$name.ev"
  python3 - "$T/$name.ev" "$fn" "$sig" <<'PY'
import json, sys, collections
evs = [json.loads(l) for l in open(sys.argv[1])]
ids = [e["id"] for e in evs]
assert len(ids) == len(set(ids)), "a record stored twice"
types = collections.Counter(e["type"] for e in evs)
dead = [e for e in evs if e["type"] == "lucent.DeadLettered"]
assert len(dead) == 1, (types, dead)
reason = dead[0]["data"]["reason"]
assert sys.argv[3] in reason and sys.argv[2] in reason, reason
assert "isolated" in reason, reason
if sys.argv[2] == "Poison":
    assert types["PoisonCompleted"] == 49, types
    assert types["PoisonChildCompleted"] == 49, types
else:  # the crash was in the child: every parent completed
    assert types["PoisonCompleted"] == 50, types
    assert types["PoisonChildCompleted"] == 49, types
PY
  pass "$name: died of $sig in $fn, the rerun dead-lettered line 20 only"
}

crash_then_rerun segv '{"crash":"segv"}' Poison SIGSEGV
crash_then_rerun abort '{"crash":"abort"}' Poison SIGABRT
crash_then_rerun child '{"child":"segv"}' PoisonChild SIGSEGV

# A hang does not kill the process: the watchdog abandons the function at
# its hard limit (10 x its 200 ms timeout, at least 1 s), dead-letters the
# event and the run goes on.
gen 20 5 '{"hang":true}' > "$T/hang.jsonl"
"$LUCENT" run --plugin "$POISON_PLUGIN" --store "$T/hang.db" \
  --input "$T/hang.jsonl" --json > "$T/hang.sum" 2> "$T/hang.err" ||
  fail "hang run failed: $(tail -3 "$T/hang.err")"
[ "$(json "$T/hang.sum" "j['outcomes']['completed']")" = 19 ] || fail "hang: completed"
[ "$(json "$T/hang.sum" "j['outcomes']['dead_lettered']")" = 1 ] || fail "hang: dead"
"$LUCENT" events --store "$T/hang.db" --type lucent.DeadLettered > "$T/hang.dl"
grep -q "Poison" "$T/hang.dl" || fail "hang: reason lacks the function"
pass "a hung function is abandoned and its event dead-lettered"

# A marker that cannot be read is reported and ignored, not trusted.
gen 10 0 '{}' > "$T/clean.jsonl"
printf 'not json' > "$T/clean.db.crash"
"$LUCENT" run --plugin "$POISON_PLUGIN" --store "$T/clean.db" \
  --input "$T/clean.jsonl" --json > "$T/clean.sum" 2> "$T/clean.err" ||
  fail "run beside a bad marker failed: $(tail -3 "$T/clean.err")"
grep -q "crash marker .* cannot be read" "$T/clean.err" || fail "no warning"
[ "$(json "$T/clean.sum" "j['outcomes']['completed']")" = 10 ] || fail "clean"
[ ! -e "$T/clean.db.crash" ] || fail "bad marker left"
pass "an unreadable crash marker is reported and ignored"
