# test_partitions.sh - the partition count of a deployment and the routes
# table (issue 19; docs/protocol.md, sections 2.2 and 6):
#   1. usage errors of --partitions, --partition-by, --plugin;
#   2. a publisher that runs before any serve creates the stream with
#      --partitions N, recorded as N explicit subjects, and warns that it
#      has no routes (it partitions by subject);
#   3. a serve or publisher asking for another count is refused with the
#      reason; one without --partitions uses the stream's;
#   4. a publish to a partition the stream does not list gets "no
#      responders" instead of being stored for ever;
#   5. the serve writes the routes table; the publisher then partitions a
#      keyed type by its key, a missing key and an unknown type by subject,
#      and their outcomes are a rejection and a dead letter;
#   6. a v1 stream (lucent.intake.>) is read as 16 partitions and converted
#      to the 16 subjects; a stream on foreign subjects is refused;
#   7. a server without JetStream is refused with the fix.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
NATSREQ="python3 $(dirname "$0")/../faults/natsreq.py"
SLOW=${LUCENT_TEST_SLOW:-1}
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT
serve() { # serve ID [args]
  local id=$1; shift
  "$LUCENT" serve --nats "$NATS_URL" --shard "$id" --plugin "$LUCENT_PLUGIN" \
    --log-format json "$@" >> "$T/$id.out" 2>> "$T/$id.log" &
  SHARD_PIDS+=($!)
}
subjects() { # the intake stream's subjects, comma-separated
  $NATSREQ --servers "$NATS_URL" req '$JS.API.STREAM.INFO.LUCENT_INTAKE' |
    python3 -c "import json,sys; print(','.join(json.load(sys.stdin)['config']['subjects']))"
}
ev() { # ev ID TYPE SUBJECT DATA
  printf '{"specversion":"1.0","id":"%s","type":"%s","source":"/p","subject":"%s","data":%s}\n' "$@"
}

# 1. Usage.
echo '{}' > "$T/one.jsonl"
expect_fail 2 "--partitions must be an integer in 1..1024" "$LUCENT" publish --dry-run --partitions 0 --input "$T/one.jsonl"
expect_fail 2 "--partitions must be an integer in 1..1024" "$LUCENT" publish --dry-run --partitions 1025 --input "$T/one.jsonl"
expect_fail 2 "--partition-by wants route or subject" "$LUCENT" publish --dry-run --partition-by key --input "$T/one.jsonl"
expect_fail 2 "--plugin gives the routes of a --dry-run without --nats" "$LUCENT" publish --nats nats://127.0.0.1:1 --plugin "$LUCENT_PLUGIN" --input "$T/one.jsonl"
expect_fail 2 "--partitions must be an integer in 1..1024" "$LUCENT" serve --nats nats://127.0.0.1:1 --shard a --plugin "$LUCENT_PLUGIN" --partitions 0
# A dry run with the plugin's routes: the key wins over the subject.
{ ev d1 OrderValidated s-1 '{"items":[{"sku":"SKU-9"}]}'
  ev d2 OrderValidated s-2 '{"items":[{"sku":"SKU-9"}]}'
  ev d3 OrderValidated s-3 '{"items":[]}'
  ev d4 OrderPlaced s-4 '{"items":[{"sku":"SKU-9"}]}'
  ev d5 Nope s-5 '{"items":[{"sku":"SKU-9"}]}'; } > "$T/dry-in.jsonl"
"$LUCENT" publish --dry-run --plugin "$LUCENT_PLUGIN" --partitions 8 --input "$T/dry-in.jsonl" > "$T/dry.jsonl"
python3 - "$T/dry.jsonl" <<'PY' || fail "dry run with --plugin routes"
import json, sys
d = [json.loads(l) for l in open(sys.argv[1])]
assert [x["key"] for x in d] == ["route", "route", "subject", "subject", "subject"], d
assert d[0]["partition"] == d[1]["partition"] and d[0]["value"] == "SKU-9", d
assert d[2].get("key_missing") is True and "key_missing" not in d[3], d
assert d[4]["value"] == "s-5" and "key_missing" not in d[4], d  # unknown type
assert all(0 <= x["partition"] < 8 for x in d), d
PY
pass "usage errors; dry run partitions by the plugin's routing keys"

# 2. A publisher first: it creates the stream with 8 partitions, and has no
#    routes yet.
nats_start
{ ev a1 OrderValidated s-1 '{"orderId":"o1","customer":{"id":"c1"},"items":[{"sku":"SKU-1","qty":1,"price":1}],"total":1}'
  ev a2 OrderValidated s-2 '{"orderId":"o2","customer":{"id":"c1"}}'
  ev a3 NobodyHandles s-3 '{}'; } > "$T/in.jsonl"
"$LUCENT" publish --nats "$NATS_URL" --partitions 8 --input "$T/in.jsonl" --json > "$T/pub.json" 2> "$T/pub.err" ||
  fail "first publish: $(cat "$T/pub.err")"
grep -q "no routes table on the server" "$T/pub.err" || fail "no warning without routes: $(cat "$T/pub.err")"
[ "$(subjects)" = "$(seq -s, -f 'lucent.intake.%g' 0 7)" ] || fail "stream subjects: $(subjects)"
pass "publish before any serve: stream with 8 explicit subjects; warns it has no routes"

# 3. Other counts are refused; the stream's count is used without one.
expect_fail 1 "stream LUCENT_INTAKE has 8 partitions" "$LUCENT" serve --nats "$NATS_URL" --shard x --plugin "$LUCENT_PLUGIN" --partitions 16
expect_fail 1 "stream LUCENT_INTAKE has 8 partitions" "$LUCENT" publish --nats "$NATS_URL" --partitions 4 --input "$T/in.jsonl"
serve a
wait_view a "a"
"$LUCENT" events --nats "$NATS_URL" > /dev/null 2>&1 || true
for _ in $(seq 1 $((100 * SLOW))); do
  [ "$("$LUCENT" events --nats "$NATS_URL" --count 2>/dev/null || echo 0)" -ge 4 ] && break
  sleep 0.2
done
"$LUCENT" events --nats "$NATS_URL" > "$T/stored.jsonl"
python3 - "$T/stored.jsonl" <<'PY' || fail "the events published before the serve"
import json, sys
s = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for e in s:
    if e.get("causationid"): by.setdefault(e["causationid"], []).append(e)
assert any(e["type"] == "ReserveInventoryCompleted" for e in by.get("a1", [])), by
assert any(e["type"] == "lucent.Rejected" and "missing" in e["data"]["reason"] for e in by.get("a2", [])), by
assert any(e["type"] == "lucent.DeadLettered" for e in by.get("a3", [])), by
PY
pass "other partition counts refused; the serve pulls the stream's 8"

# 4. A partition outside the list: no responders, nothing stored.
set +e; $NATSREQ --servers "$NATS_URL" req lucent.intake.8 '{}' > /dev/null 2>&1; rc=$?; set -e
[ "$rc" = 2 ] || fail "a publish to lucent.intake.8 of 8 partitions was not refused (exit $rc)"
$NATSREQ --servers "$NATS_URL" req lucent.intake.7 '{"specversion":"1.0","id":"p7","type":"NobodyHandles","source":"/p"}' |
  grep -q '"stream"' || fail "a publish to lucent.intake.7 was not stored"
pass "a publish to a partition the stream does not list gets no responders"

# 5. The routes table the serve wrote, and a publisher that uses it.
$NATSREQ --servers "$NATS_URL" req '$JS.API.STREAM.MSG.GET.KV_lucent_routes' '{"last_by_subj":"$KV.lucent_routes.routes"}' |
  python3 -c "
import base64, json, sys
t = json.loads(base64.b64decode(json.load(sys.stdin)['message']['data']))
assert t['version'] == 1, t
assert t['types']['OrderValidated'] == {'strategy': 'hash_based', 'key': 'items.0.sku', 'function': 'ReserveInventory'}, t
assert t['types']['FraudScored']['key'] == 'customer.id', t
assert 'key' not in t['types']['OrderPlaced'], t
" || fail "routes table in KV lucent_routes"
"$LUCENT" publish --nats "$NATS_URL" --dry-run --input "$T/dry-in.jsonl" > "$T/dry2.jsonl" 2> "$T/dry2.err"
! grep -q "no routes" "$T/dry2.err" || fail "the routes were not read: $(cat "$T/dry2.err")"
python3 - "$T/dry.jsonl" "$T/dry2.jsonl" <<'PY' || fail "server routes differ from the plugin's"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert a == b, (a, b)
PY
pass "the serve writes the routes table; publish partitions by it (missing key, unknown type: by subject)"
cleanup_shards
nats_stop

# 6. A v1 stream is converted; a foreign one refused.
nats_start
$NATSREQ --servers "$NATS_URL" req '$JS.API.STREAM.CREATE.LUCENT_INTAKE' \
  '{"name":"LUCENT_INTAKE","subjects":["lucent.intake.>"],"retention":"workqueue","storage":"file","duplicate_window":120000000000}' > /dev/null
expect_fail 1 "has 16 partitions" "$LUCENT" serve --nats "$NATS_URL" --shard x --plugin "$LUCENT_PLUGIN" --partitions 64
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" > /dev/null 2>&1 || fail "publish on a v1 stream"
[ "$(subjects)" = "$(seq -s, -f 'lucent.intake.%g' 0 15)" ] || fail "v1 stream not converted: $(subjects)"
nats_stop
nats_start
$NATSREQ --servers "$NATS_URL" req '$JS.API.STREAM.CREATE.LUCENT_INTAKE' \
  '{"name":"LUCENT_INTAKE","subjects":["orders.>"],"retention":"workqueue","storage":"file"}' > /dev/null
expect_fail 1 "is not lucent's intake" "$LUCENT" serve --nats "$NATS_URL" --shard x --plugin "$LUCENT_PLUGIN"
pass "a v1 stream is read as 16 partitions and listed; a foreign stream is refused"
nats_stop

# 7. A server without JetStream: the publisher says so (at once: no
#    responders is not an election to wait out).
nats_start -js=false
expect_fail 1 "cannot read stream LUCENT_INTAKE: JetStream is not enabled on the server" \
  "$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl"
pass "no JetStream on the server: publish refuses with the fix"
