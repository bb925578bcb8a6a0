# test_js_client.sh - the JavaScript client of examples/clients/js (npm
# `nats` and `cloudevents`), written from docs/protocol.md alone, against a
# real nats-server and two `lucent serve` shards with the orders plugin:
#   1. its partition function agrees with lucent's (the documented test
#      vectors, and every event of a generated input: `lucent publish
#      --dry-run` against the client's own computation);
#   2. it publishes in structured AND binary content mode, and every input
#      has exactly one outcome in the event store, with its attributes;
#   3. exec in both modes answers success:true with the result, and a
#      hash-routed key runs on one shard whichever mode asked;
#   4. `lucent publish --binary` (the C encoder) is read back alike;
#   5. the examples publish.js and exec.js print what their OUTPUT says;
#      a pretty-printed structured event keeps the store JSON Lines;
#   6. binary-mode messages that are not valid events are rejected with a
#      clear reason (intake: a lucent.Rejected; exec: the reply).
# Skipped (77) without nats-server, node or npm.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
. "$(dirname "$0")/js_deps.sh"
CHECK="python3 $(dirname "$0")/check_outcomes.py"
DRIVER="node $(dirname "$0")/js_client.js"
SLOW=${LUCENT_TEST_SLOW:-1}
N=${LUCENT_TEST_JS_EVENTS:-400}

# 1a. The client's own unit tests: the documented vectors (no server).
node --test "$JS_SRC/test.js" > "$T/node-test.log" 2>&1 || { cat "$T/node-test.log"; fail "node --test examples/clients/js/test.js"; }
pass "JS client unit tests (partition vectors, percent-encoding, binary mapping)"

# 1b. Partitions: lucent and the client, line by line.  Keys: the
#     documented vectors as subjects and as ids, then a generated input.
python3 - "$T/vectors.jsonl" <<'PY'
import json, sys
keys = ["a", "foobar", "order-1", "order-42", "customer/c-0001", "café",
        "日本語", "😀", "The quick brown fox jumps over the lazy dog", "x" * 1000]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    for i, k in enumerate(keys):
        f.write(json.dumps({"specversion": "1.0", "id": "v%d" % i, "type": "T",
                            "source": "/v", "subject": k}, ensure_ascii=False) + "\n")
        f.write(json.dumps({"specversion": "1.0", "id": k, "type": "T",
                            "source": "/v"}, ensure_ascii=False) + "\n")
PY
"$LUCENT_GEN" -n "$N" --seed 21 --customers 30 > "$T/in.jsonl" 2>/dev/null
same_partitions() { # FILE [live]: lucent publish --dry-run and the client agree
  if [ "${2:-}" = live ]; then # the server's partition count and routes
    "$LUCENT" publish --dry-run --nats "$NATS_URL" --input "$1" > "$T/dry.jsonl"
    $DRIVER partitions-live "$1" > "$T/jsp.jsonl"
  else
    "$LUCENT" publish --dry-run --partitions 16 --input "$1" > "$T/dry.jsonl"
    $DRIVER partitions "$1" > "$T/jsp.jsonl"
  fi
  python3 - "$T/dry.jsonl" "$T/jsp.jsonl" <<'PY'
import json, sys
c = [json.loads(l) for l in open(sys.argv[1])]
j = [json.loads(l) for l in open(sys.argv[2])]
assert len(c) == len(j) > 0, (len(c), len(j))
for a, b in zip(c, j):
    assert a["valid"], a
    assert (a["line"], a["partition"], a["subject"]) == (b["line"], b["partition"], b["subject"]), (a, b)
assert len(set(a["partition"] for a in c)) > 1
PY
}
same_partitions "$T/vectors.jsonl" || fail "partitions of the test vectors differ"
same_partitions "$T/in.jsonl" || fail "partitions of the generated input differ"
pass "partition: lucent publish --dry-run == JS client (vectors and $N events)"

nats_start
export LUCENT_NATS_URL=$NATS_URL
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT
serve() { # serve ID: a shard of the orders example
  "$LUCENT" serve --nats "$NATS_URL" --shard "$1" --plugin "$LUCENT_PLUGIN" \
    --ack-wait-ms $((2000 * SLOW)) --log-format json \
    >> "$T/$1.out" 2>> "$T/$1.log" &
  SHARD_PIDS+=($!)
}
serve a; serve b
wait_view a "a,b"; wait_view b "a,b"
pass "two shards in one view"

# 1c. Protocol v2 against a server: the partition count from the stream's
#     subjects and the routes table the serves wrote.  Keyed types
#     (hash_based, sticky_session) go by their key's text, whatever their
#     subject: strings, numbers, booleans; a missing key and other types by
#     subject, else id.
python3 - "$T/keyed.jsonl" <<'PY'
import json, sys
rows = []
for i, (t, d) in enumerate([
        ("OrderValidated", {"items": [{"sku": "SKU-1"}]}),
        ("OrderValidated", {"items": [{"sku": 42}]}),
        ("OrderValidated", {"items": [{"sku": 0.1}]}),
        ("OrderValidated", {"items": [{"sku": 1e21}]}),
        ("OrderValidated", {"items": [{"sku": True}]}),
        ("OrderValidated", {"items": []}),
        ("FraudScored", {"customer": {"id": "cust-0042"}}),
        ("CustomerUpdated", {"customer": {"id": "cust-0042"}}),
        ("OrderPlaced", {"customer": {"id": "cust-0042"}}),
        ("InventoryReserved", {"customer": {"id": "cust-0042"}}),
        ("NobodyHandles", {"customer": {"id": "cust-0042"}})]):
    for subj in ("s-%d" % i, None):
        e = {"specversion": "1.0", "id": "kv-%d-%s" % (i, subj), "type": t, "source": "/v"}
        if subj: e["subject"] = subj
        e["data"] = d
        rows.append(e)
with open(sys.argv[1], "w") as f:
    for e in rows: f.write(json.dumps(e) + "\n")
PY
same_partitions "$T/keyed.jsonl" live || fail "v2 partitions of keyed events differ"
python3 - "$T/dry.jsonl" <<'PY' || fail "v2: keyed events do not go by their key"
import json, sys
d = [json.loads(l) for l in open(sys.argv[1])]
keyed = [x for x in d if x["key"] == "route"]
assert [x["value"] for x in keyed[:10]] == ["SKU-1", "SKU-1", "42", "42", "0.10000000000000001", "0.10000000000000001", "1e+21", "1e+21", "true", "true"], keyed
assert len(keyed) == 14, len(keyed) # + FraudScored, CustomerUpdated twice each
assert all(x["subject"].startswith("lucent.intake.") and int(x["partition"]) < 16 for x in d)
PY
"$LUCENT" publish --dry-run --nats "$NATS_URL" --input "$T/in.jsonl" > "$T/dry.jsonl"
pass "v2 partitions: lucent publish --dry-run --nats == JS client (server's count and routes)"

# 2. Publish: odd lines structured, even lines binary.
$DRIVER publish "$T/in.jsonl" > "$T/pub.jsonl" || fail "JS publish"
python3 - "$T/pub.jsonl" "$T/dry.jsonl" "$N" <<'PY' || fail "JS publish acks or subjects"
import json, sys
pub = [json.loads(l) for l in open(sys.argv[1])]
dry = {d["line"]: d for d in map(json.loads, open(sys.argv[2]))}
assert len(pub) == int(sys.argv[3]), len(pub)
modes = {"structured": 0, "binary": 0}
for p in pub:
    assert p["seq"] > 0 and not p["duplicate"], p          # stored by JetStream
    assert p["subject"] == dry[p["line"]]["subject"], (p, dry[p["line"]])
    modes[p["mode"]] += 1
assert modes["structured"] > 0 and modes["binary"] > 0, modes
PY
store_outcomes "$T/in.jsonl" 90
$CHECK "$T/in.jsonl" "$T/stored.jsonl" || fail "books of the JS-published input"
python3 - "$T/in.jsonl" "$T/stored.jsonl" <<'PY' || fail "attributes of binary-mode inputs"
import json, sys
inputs = {}
for n, l in enumerate(open(sys.argv[1]), 1):
    e = json.loads(l)
    inputs[e["id"]] = (n, e)
seen = {"structured": 0, "binary": 0}
for l in open(sys.argv[2]):
    e = json.loads(l)
    c = e.get("causationid")
    if c not in inputs or not e["type"].endswith("Completed"):
        continue
    n, i = inputs[c]
    # The business context and the correlation come through either mode.
    for k in ("tenantid", "userid"):
        assert e.get(k) == i.get(k), (k, e, i)
    assert e["correlationid"] == i["correlationid"], (e, i)
    seen["structured" if n % 2 else "binary"] += 1
assert seen["structured"] > 0 and seen["binary"] > 0, seen
PY
pass "JS publish: $N events, structured and binary, one outcome each"

# 3. Exec in both modes.
cat > "$T/exec.jsonl" <<'EOF'
{"specversion":"1.0","id":"jx-1","type":"CustomerUpdated","source":"/tests/js","data":{"customer":{"id":"cust-0001","email":"a@example.com"}}}
{"specversion":"1.0","id":"jx-2","type":"CustomerUpdated","source":"/tests/js","data":{"customer":{"id":"cust-0001","email":"b@example.com"}}}
{"specversion":"1.0","id":"jx-3","type":"CustomerUpdated","source":"/tests/js","data":{"customer":{"id":"cust-0002","email":"c@example.com"}}}
{"specversion":"1.0","id":"jx-4","type":"OrderPlaced","source":"/tests/js","subject":"jx-order","tenantid":"acme","data":{"orderId":"jx-o-4","customer":{"id":"cust-0003"},"items":[{"sku":"SKU-1","qty":2,"price":5}],"currency":"EUR"}}
EOF
$DRIVER exec "$T/exec.jsonl" > "$T/exec-out.jsonl" || fail "JS exec"
python3 - "$T/exec-out.jsonl" <<'PY' || { cat "$T/exec-out.jsonl"; fail "exec replies"; }
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
assert len(rs) == 8, len(rs)
owner = {}
for r in rs:
    rep = r.get("reply")
    assert rep and rep["success"] is True and "error" not in r, r
    assert rep["outcome"] == "completed" and rep["attempts"] >= 1, r
    assert rep["eventId"].endswith("-bin" if r["mode"] == "binary" else "-str"), r
    if r["line"] <= 3:
        assert rep["function"] == "UpdateCustomerProfile", r
        assert rep["result"]["updated"] == ["email"], r
        cust = {1: "cust-0001", 2: "cust-0001", 3: "cust-0002"}[r["line"]]
        owner.setdefault(cust, set()).add(rep["shard"])
    else:
        assert rep["function"] == "ValidateOrder", r
        assert rep["result"] == {"orderId": "jx-o-4", "total": 10, "itemCount": 1}, r
# hash_based on customer.id: one shard per customer, in either mode.
assert all(len(s) == 1 for s in owner.values()), owner
PY
pass "JS exec: success:true with results in both modes; routing agrees"

# 4. lucent publish --binary: the C encoder, read back alike.
"$LUCENT_GEN" -n 60 --seed 22 --bad 4 > "$T/in2.jsonl" 2>/dev/null
expect_fail 2 "no --pack" "$LUCENT" publish --nats "$NATS_URL" --input "$T/in2.jsonl" --binary --pack 8
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in2.jsonl" --binary --json > "$T/pub2.json" || fail "publish --binary: $(cat "$T/pub2.json")"
[ "$(json "$T/pub2.json" "j['accepted']")" = 60 ] || fail "publish --binary: $(cat "$T/pub2.json")"
store_outcomes "$T/in2.jsonl" 60
$CHECK "$T/in2.jsonl" "$T/stored.jsonl" || fail "books of lucent publish --binary"
pass "lucent publish --binary: one outcome per input line"

# 5. The examples, as their RUN blocks say, print what their OUTPUT says.
(cd "$JS_SRC" && node publish.js) > "$T/ex-pub.txt" || fail "publish.js: $(cat "$T/ex-pub.txt")"
grep -qx "structured js-order-1 -> lucent.intake.4 (LUCENT_INTAKE seq [0-9]*)" "$T/ex-pub.txt" &&
  grep -qx "binary     js-order-2 -> lucent.intake.13 (LUCENT_INTAKE seq [0-9]*)" "$T/ex-pub.txt" ||
  fail "publish.js printed: $(cat "$T/ex-pub.txt")"
(cd "$JS_SRC" && node exec.js) > "$T/ex-exec.txt" || fail "exec.js: $(cat "$T/ex-exec.txt")"
grep -qx 'structured UpdateCustomerProfile on [ab]: {"customerId":"cust-0042","updated":\["email"\]}' "$T/ex-exec.txt" &&
  grep -qx 'binary     UpdateCustomerProfile on [ab]: {"customerId":"cust-0042","updated":\["email"\]}' "$T/ex-exec.txt" &&
  grep -qx "binary     Nope: DEAD_LETTERED: no function handles event type 'Nope'" "$T/ex-exec.txt" ||
  fail "exec.js printed: $(cat "$T/ex-exec.txt")"
store_outcomes "$T/in.jsonl" 30  # and the examples' orders stored nothing twice
$CHECK "$T/in.jsonl" "$T/stored.jsonl" || fail "books after the examples"
pass "examples publish.js and exec.js print their OUTPUT"
# 5b. A pretty-printed structured event (published and exec'd) that is
#     dead-lettered: the dead letter carries it, on one line, so the store
#     stays JSON Lines.
$DRIVER pretty > "$T/pretty.jsonl" || fail "JS pretty"
python3 - "$T/pretty.jsonl" <<'PY' || { cat "$T/pretty.jsonl"; fail "exec of a pretty-printed event"; }
import json, sys
rs = {r["what"]: r for r in map(json.loads, open(sys.argv[1]))}
assert rs["intake"]["ack"]["seq"] > 0, rs
rep = rs["exec"]["reply"]
assert rep["success"] is False and rep["outcome"] == "dead_lettered", rep
PY
found=
for _ in $(seq 1 $((30 * SLOW))); do
  "$LUCENT" events --nats "$NATS_URL" --type lucent.DeadLettered > "$T/dead.jsonl"
  if [ "$(grep -c '"causationid":"js-pretty-[12]"' "$T/dead.jsonl")" = 2 ]; then found=1; break; fi
  sleep 0.5
done
[ -n "$found" ] || fail "no dead letters of the pretty-printed events: $(cat "$T/dead.jsonl")"
"$LUCENT" events --nats "$NATS_URL" > "$T/all.jsonl"
python3 - "$T/all.jsonl" <<'PY' || fail "the event store is not JSON Lines"
import json, sys
n = 0
for l in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(l)
    n += 1
    if e["type"] == "lucent.DeadLettered" and e["causationid"].startswith("js-pretty-"):
        assert e["data"]["event"]["data"]["note"] == "two\nlines", e
print("%d stored events, every line one JSON event" % n)
PY
pass "pretty-printed events: dead letters on one line, the store stays JSON Lines"

# 6. Binary-mode messages that are not events (last: their rejections
#    belong to no input line, which check_outcomes.py counts as an error).
$DRIVER bad > "$T/bad.jsonl" || fail "JS bad messages"
python3 - "$T/bad.jsonl" <<'PY' || { cat "$T/bad.jsonl"; fail "exec reply to a binary request without ce-type"; }
import json, sys
rs = {r["what"]: r for r in map(json.loads, open(sys.argv[1]))}
assert rs["intake without ce-id"]["ack"]["seq"] > 0, rs
rep = rs["exec without ce-type"]["reply"]
assert rep["success"] is False and rep["outcome"] == "rejected", rep
assert rep["error"] == "binary mode: missing required attribute 'type' (header ce-type)", rep
PY
found=
for _ in $(seq 1 $((30 * SLOW))); do
  "$LUCENT" events --nats "$NATS_URL" --type lucent.Rejected > "$T/rej.jsonl"
  if grep -q "missing required attribute 'id' (header ce-id)" "$T/rej.jsonl"; then found=1; break; fi
  sleep 0.5
done
[ -n "$found" ] || fail "no lucent.Rejected for the binary message without ce-id: $(cat "$T/rej.jsonl")"
python3 - "$T/rej.jsonl" <<'PY' || fail "the rejection keeps the message"
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)["data"]
    if d["reason"] == "binary mode: missing required attribute 'id' (header ce-id)":
        raw = d["raw"]
        assert raw.startswith("NATS/1.0\r\n") and raw.endswith('\r\n\r\n{"orderId":"x"}'), raw
        assert "ce-type: OrderPlaced\r\n" in raw, raw
        break
else:
    raise AssertionError("not found")
PY
pass "invalid binary events: rejected with the reason, on intake and exec"

echo "9 passed, 0 failed"
