# test_serve_shards.sh - `lucent serve --shard a,b,c`: one process owns
# several shards, each joining the view and pulling its partitions as a
# serve of its own would; and exec's two reply modes (issue 18).
#
#  1. usage errors of --shard lists, --exec-reply and exec --reply;
#  2. two processes owning three shards each: one view of six, the books
#     balance (every input exactly one outcome, nothing stored twice), hash
#     and session routing agree, every shard ran work;
#  3. exec answers in both modes, says which ("stored"), and the outcome
#     is in the store in both; the serve's --exec-reply is its default;
#  4. a stop: every shard of a process leaves and reports, status 0.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
CHECK="python3 $(dirname "$0")/check_outcomes.py"
SLOW=${LUCENT_TEST_SLOW:-1}

nats_start
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

serve() { # serve NAME IDS [extra args]: a process owning shards IDS
  local name=$1 ids=$2; shift 2
  "$LUCENT" serve --nats "$NATS_URL" --shard "$ids" --plugin "$LUCENT_PLUGIN" \
    --log-format json "$@" >> "$T/$name.out" 2>> "$T/$name.log" &
  SHARD_PIDS+=($!)
  eval "PID_$name=$!"
}

# Until every shard of process NAME has logged the view VIEW.
wait_views() { # wait_views NAME "a,b,c" VIEW
  local id
  for id in ${2//,/ }; do
    for _ in $(seq 1 $((150 * SLOW))); do
      grep "\"view\":\"$3\"" "$T/$1.log" 2>/dev/null | grep -q "\"shard\":\"$id\"" && break
      sleep 0.1
    done
    grep "\"view\":\"$3\"" "$T/$1.log" | grep -q "\"shard\":\"$id\"" ||
      fail "shard $id of $1 never saw view [$3]: $(tail -5 "$T/$1.log")"
  done
}

# 1. Usage errors.
for bad in "a,,b" ",a" "a," "a,a" "a,b.c"; do
  expect_fail 2 "^lucent: --shard" "$LUCENT" serve --nats "$NATS_URL" --shard "$bad" --plugin "$LUCENT_PLUGIN"
done
expect_fail 2 "^lucent: --exec-reply wants stored or executed" "$LUCENT" serve --nats "$NATS_URL" --shard a --plugin "$LUCENT_PLUGIN" --exec-reply soon
expect_fail 2 "^lucent: --reply wants stored or executed" "$LUCENT" exec --nats "$NATS_URL" --type X --reply soon
pass "usage errors"

# 2. Two processes, three shards each, one view of six.
serve p1 a,b,c
serve p2 d,e,f --exec-reply executed
wait_views p1 a,b,c "a,b,c,d,e,f"
wait_views p2 d,e,f "a,b,c,d,e,f"
pass "two processes, six shards, one view"

"$LUCENT_GEN" -n 3000 --bad 10 --seed 21 --customers 40 > "$T/in1.jsonl" 2>/dev/null
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in1.jsonl" --json > "$T/pub1.json"
[ "$(json "$T/pub1.json" "j['accepted']")" = 3000 ] || fail "publish: $(cat "$T/pub1.json")"
store_outcomes "$T/in1.jsonl" 90
$CHECK "$T/in1.jsonl" "$T/stored.jsonl" --routing || fail "books or routing"
python3 - "$T/stored.jsonl" <<'PY' || fail "work did not reach every shard"
import json, sys
shards = {}
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"].endswith("Completed"):
        shards[e["shardid"]] = shards.get(e["shardid"], 0) + 1
assert set(shards) == set("abcdef"), shards
PY
pass "books balance over six shards in two processes, routing agrees"

# 3. exec in both modes, on whichever shard the request lands.  The reply
#    says whether the outcome was stored; in both modes it is, in the end.
exec_one() { # exec_one ID MODE|"" : prints the reply's "stored"
  local id=$1 mode=$2
  "$LUCENT" exec --nats "$NATS_URL" --type CustomerUpdated --timeout 10000 \
    --id "$id" ${mode:+--reply $mode} \
    --data '{"customer":{"id":"cust-0003","email":"'$id'@example.com"}}' \
    > "$T/$id.json" || fail "exec $id: $(cat "$T/$id.json")"
  json "$T/$id.json" "j['success'] and j['function'] == 'UpdateCustomerProfile' and j['result']['updated'] == ['email'] and j['stored']"
}
stored_has() { # stored_has ID: until a result of ID is in the store
  for _ in $(seq 1 $((100 * SLOW))); do
    "$LUCENT" events --nats "$NATS_URL" --type UpdateCustomerProfileCompleted > "$T/r.jsonl"
    grep -q "\"causationid\":\"$1\"" "$T/r.jsonl" && return 0
    sleep 0.1
  done
  fail "the outcome of $1 was never stored"
}
for i in 1 2 3; do
  [ "$(exec_one st-$i stored)" = True ] || fail "stored mode: $(cat "$T/st-$i.json")"
  # Stored before the reply: in the store at once, no waiting.
  "$LUCENT" events --nats "$NATS_URL" --type UpdateCustomerProfileCompleted > "$T/r.jsonl"
  grep -q '"causationid":"st-'$i'"' "$T/r.jsonl" || fail "stored mode: st-$i not stored at the reply"
  [ "$(exec_one ex-$i executed)" = False ] || fail "executed mode: $(cat "$T/ex-$i.json")"
  stored_has ex-$i
done
# Nothing runs for a request whose hash key is missing: its rejection is
# answered once recorded, in executed mode too; a bad header is refused.
expect_fail 1 "hash key" "$LUCENT" exec --nats "$NATS_URL" --type OrderValidated --data '{}' --reply executed --timeout 10000
json "$T/out" "j['outcome'] == 'rejected' and j['stored']" | grep -qx True || fail "executed-mode rejection: $(cat "$T/out")"
python3 - "$(dirname "$0")/../faults" "$NATS_URL" <<'PY' || fail "a bad Lucent-Exec-Reply header"
import json, sys
sys.path.insert(0, sys.argv[1])
from natsreq import Conn
c = Conn([sys.argv[2]], timeout=10)
ev = b'{"specversion":"1.0","id":"bad-h","type":"CustomerUpdated","source":"t","data":{"customer":{"id":"c1"}}}'
_, _, _, body = c.request("lucent.exec", ev, timeout=10,
                          headers={"Lucent-Exec-Reply": "whenever"})
r = json.loads(body)
assert not r["success"] and "Lucent-Exec-Reply" in r["error"], r
PY
pass "exec: both reply modes answer, and store the outcome"

# The serve's --exec-reply is its default: p2 alone answers executed.
kill -TERM "$PID_p1"
wait "$PID_p1" || fail "p1 stopped with status $?"
wait_views p2 d,e,f "d,e,f"
[ "$(exec_one df-1 "")" = False ] || fail "p2's default: $(cat "$T/df-1.json")"
stored_has df-1
[ "$(exec_one df-2 stored)" = True ] || fail "header over p2's default: $(cat "$T/df-2.json")"
pass "a serve's --exec-reply is its default; the request's header wins"

# 4. The stop: each shard of p1 reported its counts and left.
python3 - "$T/p1.log" <<'PY' || fail "p1's stop"
import json, sys
stopped = {}
for l in open(sys.argv[1]):
    if l.startswith("{") and json.loads(l).get("msg") == "stopped":
        j = json.loads(l)
        stopped[j["shard"]] = j
assert set(stopped) == set("abc"), stopped
assert sum(s["events_in"] for s in stopped.values()) > 0, stopped
PY
kill -TERM "$PID_p2"
wait "$PID_p2" || fail "p2 stopped with status $?"
SHARD_PIDS=()
pass "a stop: every shard leaves and reports"
echo "7 passed, 0 failed"
