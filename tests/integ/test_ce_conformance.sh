# test_ce_conformance.sh - every event lucent stores is a valid CloudEvent
# (issue 17), checked with the official CloudEvents SDK (npm `cloudevents`,
# tests/integ/ce_check.js) over every stored event of
#   (a) an embedded `lucent run` of the orders example (with bad lines), and
#   (b) a hostile-input run: extension names like TenantID and my-ext,
#       invalid UTF-8 inside strings and attributes, huge numbers, control
#       characters, unknown specversions, binary garbage lines ...
# and each hostile line ends as it should: rejected with a reason that
# says what is wrong (and where), or accepted and stored valid.  Every
# rejection keeps its input line losslessly (raw, or raw_base64 when the
# line is not UTF-8).  Skipped (77) without node or npm.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/js_deps.sh"
CHECK_CE="node $(dirname "$0")/ce_check.js"

# (a) The orders example.
"$LUCENT_GEN" -n 3000 --bad 30 --seed 31 > "$T/orders.jsonl" 2>/dev/null
"$LUCENT" run --plugin "$LUCENT_PLUGIN" --shards 4 --store "$T/orders.db" \
  --input "$T/orders.jsonl" --json > "$T/orders-run.json" 2> "$T/orders-run.log" ||
  fail "lucent run (orders): $(tail -3 "$T/orders-run.log")"
"$LUCENT" events --store "$T/orders.db" > "$T/orders-stored.jsonl"
$CHECK_CE "$T/orders-stored.jsonl" --input "$T/orders.jsonl" || fail "stored events of the orders run are not valid CloudEvents"
pass "orders example: every stored event passes the CloudEvents SDK"

# (b) Hostile input: one line per case, and what lucent must do with it
#     (outcome, and a piece of the rejection's reason).
python3 - "$T/hostile.jsonl" "$T/expect.json" <<'PY'
import json, sys
ORDER = {"orderId": "h-1", "customer": {"id": "cust-0001"},
         "items": [{"sku": "SKU-00001", "qty": 1, "price": 2.5}], "currency": "EUR"}
def ev(i, **kw):
    e = {"specversion": "1.0", "id": "h-%d" % i, "type": "OrderPlaced",
         "source": "/hostile", "subject": "h-subject-%d" % i, "data": ORDER}
    e.update(kw)
    return e
def js(e):
    return json.dumps(e, ensure_ascii=False, separators=(",", ":")).encode()
cases = []  # (bytes, outcome, reason piece)
def add(line, outcome, why=None):
    cases.append((line, outcome, why))
n = 0
def nid():
    global n
    n += 1
    return n
# Attribute names.
add(js(ev(nid(), TenantID="acme")), "rejected", "invalid attribute name 'TenantID'")
add(js(ev(nid(), **{"my-ext": "x"})), "rejected", "invalid attribute name 'my-ext'")
add(js(ev(nid(), **{"x" * 21: "x"})), "rejected", "invalid attribute name 'xxxxxxxxxxxxxxxxxxxxx'")
add(js(ev(nid(), **{"t\u00ebnant": "x"})), "rejected", "invalid attribute name 't\u00ebnant'")
add(js(ev(nid(), **{"a" * 1000: "x"})), "rejected", "invalid attribute name 'aaaa")
add(js(ev(nid(), **{"": "x"})), "rejected", "invalid attribute name ''")
# Invalid UTF-8: in data, in an attribute, an overlong form, a surrogate.
i = nid(); add(js(ev(i, data={"note": "CAFE_"})).replace(b"CAFE_", b"caf\xe9"), "rejected", "invalid UTF-8 at byte offset")
i = nid(); add(js(ev(i, type="Unhandled", data={"note": "CAFE_"})).replace(b"CAFE_", b"caf\xe9"), "rejected", "invalid UTF-8 at byte offset")
i = nid(); add(js(ev(i, tenantid="T_")).replace(b"T_", b"\xff\xfe"), "rejected", "invalid UTF-8 at byte offset")
i = nid(); add(js(ev(i, data={"p": "S_"})).replace(b"S_", b"\xc0\xaf"), "rejected", "invalid UTF-8 at byte offset")
i = nid(); add(js(ev(i, data={"p": "S_"})).replace(b"S_", b"\xed\xa0\x80"), "rejected", "invalid UTF-8 at byte offset")
# A lone surrogate escape (valid UTF-8 text, not a valid JSON string for cJSON).
i = nid(); add(js(ev(i, data={"p": "S_"})).replace(b"S_", b"\\ud800"), "rejected", "malformed JSON")
# Numbers.
i = nid(); add(js(ev(i, data={"n": 1})).replace(b'"n":1', b'"n":1e999'), "rejected", "number out of range")
i = nid(); add(js(ev(i, data={"n": 1})).replace(b'"n":1', b'"n":-2E+400'), "rejected", "number out of range")
i = nid(); add(js(ev(i, big=1)).replace(b'"big":1', b'"big":1e400'), "rejected", "number out of range")
add(js(ev(nid(), big=9007199254740993)), "rejected", "attribute 'big' is the number")
add(js(ev(nid(), score=0.5)), "rejected", "attribute 'score' is the number 0.5")
i = nid(); add(js(ev(i, data=dict(ORDER, huge=1))).replace(b'"huge":1', b'"huge":123456789012345678901234567890'), "completed")
i = nid(); add(js(ev(i, type="Unhandled", data={"n": 1})).replace(b'"n":1', b'"n":1e308'), "dead_lettered")
# Control characters: raw inside a string is not JSON; escaped is.
i = nid(); add(js(ev(i, data={"p": "C_"})).replace(b"C_", b"a\x01b"), "rejected", "unescaped control character 0x01")
i = nid(); add(js(ev(i, data={"p": "C_"})).replace(b"C_", b"tab\there"), "rejected", "unescaped control character 0x09")
add(js(ev(nid(), type="Unhandled", data={"p": "bell\u0007 esc\u001b nl\n"})), "dead_lettered")
i = nid(); add(js(ev(i, data={"p": "Z_"})).replace(b"Z_", b"a\\u0000b"), "rejected", "the escape \\u0000")
# specversion.
add(js(ev(nid(), specversion="0.3")), "rejected", "unsupported specversion")
add(js(ev(nid(), specversion="2.0")), "rejected", "unsupported specversion")
add(js(ev(nid(), specversion=1.0)), "rejected", "unsupported specversion")
# Attribute values outside the type system, empty subject, duplicates.
add(js(ev(nid(), ctx={"a": 1})), "rejected", "attribute 'ctx' is an object")
add(js(ev(nid(), tags=["a"])), "rejected", "attribute 'tags' is an array")
add(js(ev(nid(), subject="")), "rejected", "attribute 'subject' must not be empty")
add(js(ev(nid(), subject=5)), "rejected", "attribute 'subject' must be a string")
i = nid(); add(js(ev(i, tenantid="a")).replace(b'"tenantid":"a"', b'"tenantid":"a","tenantid":"b"'), "rejected", "attribute 'tenantid' appears more than once")
add(js(ev(nid(), data_base64="AA==")), "rejected", "data or data_base64, not both")
# Binary garbage, a BOM, NULs, a huge line of junk.
add(b"\x00\x01\x02\xff\xfe\xfd binary \x80\x81", "rejected", "invalid UTF-8 at byte offset 3")
add(bytes(range(1, 256)).replace(b"\n", b"").replace(b"\r", b""), "rejected", "invalid UTF-8")
add(b"\xef\xbb\xbf" + js(ev(nid())), "rejected", "a byte order mark")
add(b"\xef\xbb\xbf" + js(ev(nid(), type="Unhandled")), "rejected", "a byte order mark")
add(b"\x89PNG\r\x1a\x00\x00\x00\rIHDR", "rejected", "invalid UTF-8")
# Valid events with every kind of valid extension: accepted, stored valid.
add(js(ev(nid(), tenantid="acme", region="eu-1", retries=3, vip=True, nothing=None,
          userid="J\u00fcrgen \U0001F600", correlationid="h-corr")), "completed")
add(js(ev(nid(), type="Unhandled", tenantid="t", a2345678901234567890="twenty")), "dead_lettered")
add(js(ev(nid(), subject="bell\u0007", data={"orderId": "h-x", "customer": {"id": "c"}, "items": []})), "failed")
add(js({"specversion": "1.0", "id": "h-nohash", "type": "OrderValidated", "source": "/hostile",
        "tenantid": "t", "data": {}}), "rejected", "hash key 'items.0.sku'")
with open(sys.argv[1], "wb") as f:
    for line, _, _ in cases:
        assert b"\n" not in line and not line.endswith(b"\r"), line
        f.write(line + b"\n")
json.dump([{"line": k + 1, "outcome": o, "why": w} for k, (_, o, w) in enumerate(cases)],
          open(sys.argv[2], "w"))
PY
set +e
"$LUCENT" run --plugin "$LUCENT_PLUGIN" --shards 2 --store "$T/hostile.db" \
  --input "$T/hostile.jsonl" --json > "$T/hostile-run.json" 2> "$T/hostile-run.log"
rc=$?
set -e
[ "$rc" = 0 ] || fail "lucent run (hostile) exited $rc: $(tail -3 "$T/hostile-run.log")"
"$LUCENT" events --store "$T/hostile.db" > "$T/hostile-stored.jsonl"
$CHECK_CE "$T/hostile-stored.jsonl" --input "$T/hostile.jsonl" || fail "stored events of the hostile run are not valid CloudEvents"
python3 - "$T/hostile.jsonl" "$T/hostile-stored.jsonl" "$T/expect.json" <<'PY' || fail "hostile lines did not end as they should"
import json, sys
expect = json.load(open(sys.argv[3]))
ids = {}
for n, raw in enumerate(open(sys.argv[1], "rb"), 1):
    try:
        e = json.loads(raw.decode("utf-8"))
        if isinstance(e, dict) and isinstance(e.get("id"), str):
            ids[e["id"]] = n
    except Exception:
        pass
got = {}  # line -> [(outcome, reason)]
for l in open(sys.argv[2], encoding="utf-8"):
    e = json.loads(l)
    t, d = e["type"], e.get("data") or {}
    if t == "lucent.Rejected":
        line = d.get("line")
        got.setdefault(line, []).append(("rejected", d["reason"]))
        continue
    c = e.get("causationid")
    if c not in ids:
        continue
    if t == "lucent.DeadLettered":
        got.setdefault(ids[c], []).append(("dead_lettered", d.get("reason")))
    elif e.get("function") and t == e["function"] + "Completed":
        got.setdefault(ids[c], []).append(("completed", None))
    elif e.get("function") and t == e["function"] + "Failed":
        got.setdefault(ids[c], []).append(("failed", d.get("reason")))
bad = []
for x in expect:
    g = got.get(x["line"], [])
    if len(g) != 1 or g[0][0] != x["outcome"] or (x["why"] and x["why"] not in (g[0][1] or "")):
        bad.append("line %d: want %s (%s), got %s" % (x["line"], x["outcome"], x["why"], g))
for b in bad:
    print(b)
print("hostile: %d lines, %d as expected" % (len(expect), len(expect) - len(bad)))
sys.exit(1 if bad else 0)
PY
pass "hostile input: each line rejected with its reason or stored valid; raw bytes kept"
echo "2 passed, 0 failed"
