# test_distributed.sh - three `lucent serve` shard processes on a real
# nats-server (started here on a free loopback port, JetStream in a temp
# dir): routing agrees across processes, request/reply from any shard,
# bad input recorded, and nothing lost when a shard is killed with -9.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
CHECK="python3 $(dirname "$0")/check_outcomes.py"
# Sizes and patience: the issue's 20k events by default; the sanitizer
# passes (5-20x slower) set a smaller count and a longer wait.
KILL_N=${LUCENT_TEST_KILL_EVENTS:-20000}
SLOW=${LUCENT_TEST_SLOW:-1}
# JetStream's redelivery delay for the shards: lucent's default.  With
# 2 s, a loaded machine (two CPU burners and another test suite) let
# forwarded events wait in a shard's queue past AckWait: each came back,
# ran again and emitted its child again with new bytes (a new time), so a
# new forward - LUCENT_FWD reached 940,000 messages for 20,000 inputs and
# the test timed out.  That storm is a real weakness, left to the fault-
# handling work (issue 15); this test is about routing and recovery.
ACK_WAIT_MS=10000

nats_start
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

serve() { # serve ID [extra args]: starts a shard, records its pid
  local id=$1; shift
  "$LUCENT" serve --nats "$NATS_URL" --shard "$id" --plugin "$LUCENT_PLUGIN" \
    --ack-wait-ms $((ACK_WAIT_MS * SLOW)) --log-format json "$@" \
    >> "$T/$id.out" 2>> "$T/$id.log" &
  SHARD_PIDS+=($!)
  eval "PID_$id=$!"
}



# 1. Bad URL and bad credentials: clear message, non-zero exit.
expect_fail 1 "cannot connect" "$LUCENT" serve --nats nats://127.0.0.1:1 --shard x --plugin "$LUCENT_PLUGIN"
expect_fail 2 "--shard is required" "$LUCENT" serve --nats "$NATS_URL" --plugin "$LUCENT_PLUGIN"
expect_fail 2 "--pack must be an integer" "$LUCENT" serve --nats "$NATS_URL" --shard x --plugin "$LUCENT_PLUGIN" --delivery at-most-once --pack 0
expect_fail 2 "--forward wants core or jetstream" "$LUCENT" serve --nats "$NATS_URL" --shard x --plugin "$LUCENT_PLUGIN" --forward fast
expect_fail 2 "--pack must be an integer in 1..4096" "$LUCENT" publish --nats "$NATS_URL" --input /dev/null --pack 0
pass "bad URL and usage errors"

# 2. Three shards join one view by heartbeats (c also serves /metrics).
serve a; serve b; serve c --http 127.0.0.1:0
for s in a b c; do wait_view $s "a,b,c"; done
pass "three shards in one view"

# 3. Steady state: every input gets one outcome, routing agrees.
"$LUCENT_GEN" -n 3000 --bad 10 --seed 11 --customers 40 > "$T/in1.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in1.jsonl" --json > "$T/pub1.json"
[ "$(json "$T/pub1.json" "j['accepted']")" = 3000 ] || fail "publish: $(cat "$T/pub1.json")"
[ "$(json "$T/pub1.json" "j['invalid']")" -ge 4 ] || fail "publish invalid count"
store_outcomes "$T/in1.jsonl" 60
$CHECK "$T/in1.jsonl" "$T/stored.jsonl" --routing || { grep -h "shard view changed" "$T"/*.log; fail "books or routing (steady state)"; }
grep -q '"type":"lucent.Rejected"' "$T/stored.jsonl" || fail "no rejection recorded"
python3 - "$T/stored.jsonl" <<'PY' || fail "work did not spread over the shards"
import json, sys
shards = {}
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"].endswith("Completed"):
        shards[e["shardid"]] = shards.get(e["shardid"], 0) + 1
assert len(shards) == 3 and min(shards.values()) > 100, shards
PY
# Publishing the same file again stores nothing new (Msg-Id dedup).  Not
# a pause: wait until the intake stream holds nothing (what it took in, if
# anything, was pulled and acked), then until the store is quiet.
before=$(count)
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in1.jsonl" > /dev/null
intake_empty() {
  python3 "$(dirname "$0")/../faults/natsreq.py" --servers "$NATS_URL" \
    req '$JS.API.STREAM.INFO.LUCENT_INTAKE' |
    python3 -c "import json,sys; s=json.load(sys.stdin)['state']; sys.exit(s['messages'] != 0)"
}
for _ in $(seq 1 $((100 * SLOW))); do intake_empty && break; sleep 0.1; done
intake_empty || fail "the intake stream never emptied after the republish"
store_quiet
[ "$(count)" = "$before" ] || fail "republish stored duplicates ($before -> $(count))"
pass "steady state: one outcome per input, hash and session routing agree"

# 3b. Intake packs.  Five events of one subject travel as one pack; each is
#     rejected on its own (its hash key is missing) and names its line.
for i in 1 2 3 4 5; do
  echo '{"specversion":"1.0","id":"pk-'$i'","type":"OrderValidated","source":"t","subject":"s-pack","data":{}}'
done > "$T/in6.jsonl"
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in6.jsonl" --json > "$T/pub6.json"
[ "$(json "$T/pub6.json" "j['accepted']")" = 5 ] || fail "publish pack: $(cat "$T/pub6.json")"
store_outcomes "$T/in6.jsonl" 30
python3 - "$T/stored.jsonl" <<'PY' || fail "lines of a packed event's rejection"
import json, sys
lines = {}
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"] == "lucent.Rejected" and str(e.get("causationid", "")).startswith("pk-"):
        lines[e["causationid"]] = e["data"].get("line")
assert lines == {"pk-%d" % i: i for i in range(1, 6)}, lines
PY
#     A pipe that stays open: what was written is published when the input
#     would block, not when the pipe closes.
"$LUCENT_GEN" -n 5 --seed 16 > "$T/in7.jsonl" 2>/dev/null
mkfifo "$T/fifo"
"$LUCENT" publish --nats "$NATS_URL" --input "$T/fifo" --json > "$T/pub7.json" &
PUB7=$!
exec 7> "$T/fifo"
cat "$T/in7.jsonl" >&7
store_outcomes "$T/in7.jsonl" 30     # while the publisher still waits
kill -0 "$PUB7" || fail "the publisher ended before its input did"
exec 7>&-
wait "$PUB7" || fail "publish from a pipe: $(cat "$T/pub7.json")"
[ "$(json "$T/pub7.json" "j['accepted']")" = 5 ] || fail "pipe: $(cat "$T/pub7.json")"
pass "intake packs: lines kept, a pipe is sent as it goes"

# 3c. A serve's /metrics says which way its forwards went: over core NATS,
#     confirmed by their owner.  (Fallbacks are only counted: one forward
#     slower than half the AckWait on a loaded machine is not a failure.)
python3 - "$T/c.log" <<'PY' || fail "forward metrics of shard c"
import json, sys, urllib.request
addr = next(json.loads(l)["addr"] for l in open(sys.argv[1])
            if l.startswith("{") and json.loads(l)["msg"] == "http listening")
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
text = opener.open("http://%s/metrics" % addr, timeout=5).read().decode()
m = {}
for l in text.splitlines():
    if l.startswith("lucent_bus_forward") or l.startswith("lucent_store_batches"):
        k, v = l.rsplit(" ", 1)
        m[k] = float(v)
assert m['lucent_bus_forwards_total{path="core"}'] > 0, m
assert m['lucent_bus_forwards_total{path="at_most_once"}'] == 0, m
assert "lucent_bus_forward_fallbacks_total" in m, m  # present; any value
# Shard-begun store batches: a part of all batches (how many depends on
# whether the store thread was busy).
assert 0 <= m["lucent_store_batches_direct_total"] <= m["lucent_store_batches_total"], m
PY
pass "forward metrics"

# 4. Request/reply from any shard.  A plain hash_based function: every
#    request for one key runs on its owner, whichever shard it lands on.
#    (Not ReserveInventory: its load bound moves a key off an owner whose
#    last heartbeat showed it busy - with 3 shards, one event in flight is
#    enough - so its owner depends on timing.)
for i in 1 2 3 4 5 6; do
  "$LUCENT" exec --nats "$NATS_URL" --type CustomerUpdated --timeout 5000 \
    --data '{"customer":{"id":"cust-0001","email":"x'$i'@example.com"}}' \
    > "$T/exec$i.json" || fail "exec $i: $(cat "$T/exec$i.json")"
done
python3 - "$T" <<'PY' || { grep -h "shard view changed" "$T"/*.log; cat "$T"/exec*.json; fail "exec replies"; }
import json, sys
shards = set()
for i in range(1, 7):
    r = json.load(open("%s/exec%d.json" % (sys.argv[1], i)))
    assert r["success"] and r["function"] == "UpdateCustomerProfile", r
    assert r["result"]["updated"] == ["email"], r
    shards.add(r["shard"])
assert len(shards) == 1, shards   # hash of cust-0001: always its owner
PY
expect_fail 1 "no function handles event type 'Nope'" "$LUCENT" exec --nats "$NATS_URL" --type Nope --timeout 5000
expect_fail 1 "hash key" "$LUCENT" exec --nats "$NATS_URL" --type OrderValidated --data '{}' --timeout 5000
pass "exec: owner answers wherever the request lands; clear errors"

# 5. kill -9 one shard mid-run: nothing lost, nothing stored twice.
"$LUCENT_GEN" -n "$KILL_N" --bad 20 --seed 12 > "$T/in2.jsonl" 2>/dev/null
base=$(count)
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in2.jsonl" > /dev/null || fail "publish $KILL_N"
for _ in $(seq 1 $((200 * SLOW))); do   # kill when the run is well under way
  [ $(($(count) - base)) -gt $((KILL_N * 3 / 4)) ] && break
  sleep 0.1
done
kill -9 "$PID_b"
wait_view a "a,c"
store_outcomes "$T/in2.jsonl" 120 "$base"
$CHECK "$T/in2.jsonl" "$T/stored.jsonl" --competing-ok || fail "books after kill -9"
pass "kill -9: every input has exactly one outcome, no duplicates"

if [ -n "${LUCENT_TEST_QUICK:-}" ]; then
  # ThreadSanitizer pass: the threaded paths above are what it is for; the
  # rejoin, restart and at-most-once phases ran in the other passes.
  echo "7 passed, 0 failed"
  exit 0
fi

# 6. The killed shard comes back and takes its share again.  It comes back
#    with --forward jetstream: it serves no lucent.cfwd.b, so the others'
#    forwards to it find no responder and take LUCENT_FWD instead.
serve b --forward jetstream
for s in a b c; do wait_view $s "a,b,c"; done
"$LUCENT_GEN" -n 2000 --seed 13 > "$T/in3.jsonl" 2>/dev/null
base=$(count)
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in3.jsonl" > /dev/null
store_outcomes "$T/in3.jsonl" 60 "$base"
$CHECK "$T/in3.jsonl" "$T/stored.jsonl" --competing-ok || fail "books after the return (mixed --forward)"
python3 - "$T/stored.jsonl" "$T/in3.jsonl" <<'PY' || fail "returning shard took no share"
import json, sys
ids = {json.loads(l)["id"] for l in open(sys.argv[2]) if l.strip()}
on_b = sum(1 for l in open(sys.argv[1])
           if (e := json.loads(l)).get("shardid") == "b" and e.get("causationid") in ids)
assert on_b > 50, on_b
PY
pass "returning shard takes its share"

# 7. A NATS server restart: shards reconnect and keep working.
nats_restart
"$LUCENT_GEN" -n 500 --seed 14 > "$T/in4.jsonl" 2>/dev/null
base=$(count)
for _ in $(seq 1 50); do
  "$LUCENT" publish --nats "$NATS_URL" --input "$T/in4.jsonl" > /dev/null 2>&1 && break
  sleep 0.2
done
store_outcomes "$T/in4.jsonl" 60 "$base"
pass "server restart survived"

# 8. No shard left: exec fails fast and clearly.  The stopped shards' last
#    log lines count their forwards: a and c sent theirs over core NATS
#    (confirmed by the owner), and to b, which serves none, durably.
cleanup_shards
python3 - "$T" <<'PY' || fail "forward counters"
import json, sys
last = {}
for s in "abc":
    for l in open("%s/%s.log" % (sys.argv[1], s)):
        if l.startswith("{") and json.loads(l).get("msg") == "stopped":
            last[s] = json.loads(l)
assert set(last) == {"a", "b", "c"}, last
for s in "ac":
    assert last[s]["forwards_confirmed"] > 0, last[s]
assert last["a"]["forwards_durable_fallback"] + last["c"]["forwards_durable_fallback"] > 0, last
assert last["b"]["forwards_confirmed"] == 0 and last["b"]["forwarded"] > 0, last["b"]
PY
pass "forwards over core NATS, durable where the owner serves none"
expect_fail 1 "no shard is serving" "$LUCENT" exec --nats "$NATS_URL" --type OrderPlaced --timeout 3000
pass "exec with no shard"

# 9. At-most-once delivery over core NATS.
serve d --delivery at-most-once; serve e --delivery at-most-once
wait_view d "d,e"; wait_view e "d,e"
"$LUCENT_GEN" -n 2000 --seed 15 > "$T/in5.jsonl" 2>/dev/null
base=$(count)
"$LUCENT" publish --nats "$NATS_URL" --delivery at-most-once --input "$T/in5.jsonl" > /dev/null
store_outcomes "$T/in5.jsonl" 60 "$base"
$CHECK "$T/in5.jsonl" "$T/stored.jsonl" || fail "books (at-most-once, no failure)"
pass "at-most-once delivery"

# 10. A stop with the server gone is bounded.  f is stopped while the
#     server it was working through is dead: it exits within its
#     --stop-timeout-ms (status 1 and a clear message when the stop itself
#     could not finish), where it used to wait for ever (a puller blocked
#     on a full queue that only stored outcomes could free).
cleanup_shards
serve f --stop-timeout-ms $((3000 * SLOW))
wait_view f "f"
"$LUCENT_GEN" -n 20000 --seed 16 > "$T/in8.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in8.jsonl" > /dev/null
nats_kill
kill -TERM "$PID_f"
for _ in $(seq 1 $((200 * SLOW))); do
  kill -0 "$PID_f" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$PID_f" 2>/dev/null && fail "stop with the server gone: still running after $((20 * SLOW)) s"
rc=0
wait "$PID_f" || rc=$?
SHARD_PIDS=()
[ "$rc" = 0 ] || { [ "$rc" = 1 ] && grep -q "stop did not finish in time" "$T/f.log"; } ||
  fail "stop with the server gone: status $rc: $(tail -3 "$T/f.log")"
pass "stop with the server gone: exited (status $rc)"
echo "13 passed, 0 failed"
