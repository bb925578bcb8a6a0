# test_serve_nats.sh - examples/serve_nats.c: shards of a distributed
# lucent run by a program of its own through lucent/nats.h, on a real
# nats-server (started here on a free loopback port):
#  1. a usage error, an unreachable server and a bad shard id fail with a
#     clear message and a non-zero status;
#  2. two such programs (WordCount and the orders plugin) join one view;
#  3. events published with `lucent publish` - orders, with bad lines,
#     and Text - each get one outcome, stored where `lucent events --nats`
#     reads them: WordCount's results and its failure among them;
#  4. `lucent exec` is answered by one of them;
#  5. SIGTERM: each leaves the view, prints its counters, status 0.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
: "${LUCENT_SERVE_NATS:?path to the serve_nats example}" "${LUCENT_GEN:?orders_gen}"
CHECK="python3 $(dirname "$0")/check_outcomes.py"
SLOW=${LUCENT_TEST_SLOW:-1}
EX=$LUCENT_SERVE_NATS
trap 'cleanup_shards; nats_stop; [ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT

# 1. Bad arguments and an unreachable server, before any server runs.
expect_fail 2 "usage: serve_nats NATS_URLS SHARD_ID" "$EX" nats://127.0.0.1:1
expect_fail 1 "shard wc-1: cannot connect to nats://127.0.0.1:1: no server available (connection refused) (LU_EIO)" \
  "$EX" nats://127.0.0.1:1 wc-1
expect_fail 1 "plugin $T/missing.so: No such file" "$EX" nats://127.0.0.1:1 wc-1 "$T/missing.so"
nats_start
expect_fail 1 "shard id 'bad.id' is not valid.*(LU_EINVAL)" "$EX" "$NATS_URL" bad.id
pass "usage, unreachable server, missing plugin, bad shard id: clear errors"

# 2. Two programs, one view.
start() { # start ID: the example as shard ID, with the orders plugin
  "$EX" "$NATS_URL" "$1" "$LUCENT_PLUGIN" > "$T/$1.out" 2> "$T/$1.log" &
  SHARD_PIDS+=($!)
  eval "PID_${1//-/_}=$!"
  for _ in $(seq 1 $((100 * SLOW))); do
    grep -q "^serving shard $1 on $NATS_URL: 8 functions$" "$T/$1.out" && return 0
    kill -0 "$!" 2>/dev/null || fail "$1 exited: $(cat "$T/$1.log")"
    sleep 0.1
  done
  fail "$1 never said it serves: $(cat "$T/$1.out" "$T/$1.log")"
}
start wc-1
start wc-2
wait_view wc-1 "wc-1,wc-2"
wait_view wc-2 "wc-1,wc-2"
pass "two serve_nats programs in one view"

# 3. Publish; every input one outcome, WordCount's among them.
"$LUCENT_GEN" -n 400 --bad 4 --seed 3 > "$T/in.jsonl" 2>/dev/null
cat >> "$T/in.jsonl" <<'EOF'
{"specversion":"1.0","id":"t-1","type":"Text","source":"test","subject":"doc-1","data":{"text":"to be or not to be"}}
{"specversion":"1.0","id":"t-2","type":"Text","source":"test","subject":"doc-2","data":{"text":"  two   words "}}
{"specversion":"1.0","id":"t-3","type":"Text","source":"test","subject":"doc-3","data":{"title":"no text"}}
EOF
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" --json > "$T/pub.json"
[ "$(json "$T/pub.json" "j['accepted']")" = 403 ] || fail "publish: $(cat "$T/pub.json")"
store_outcomes "$T/in.jsonl" 60
$CHECK "$T/in.jsonl" "$T/stored.jsonl" || fail "the books do not balance"
"$LUCENT" events --nats "$NATS_URL" --type WordCountCompleted > "$T/wc.jsonl"
python3 - "$T/wc.jsonl" <<'PY' || fail "WordCount results: $(cat "$T/wc.jsonl")"
import json, sys
got = {}
for l in open(sys.argv[1]):
    e = json.loads(l)
    got[e["causationid"]] = (e["data"], e["shardid"])
assert {k: v[0] for k, v in got.items()} == {"t-1": {"words": 6}, "t-2": {"words": 2}}, got
assert all(v[1] in ("wc-1", "wc-2") for v in got.values()), got
PY
"$LUCENT" events --nats "$NATS_URL" --type WordCountFailed > "$T/wcf.jsonl"
grep -q '"causationid":"t-3"' "$T/wcf.jsonl" && grep -q "data.text must be a string" "$T/wcf.jsonl" ||
  fail "WordCountFailed: $(cat "$T/wcf.jsonl")"
pass "403 inputs published, each one outcome; WordCount completed 2, failed 1"

# 4. exec.
"$LUCENT" exec --nats "$NATS_URL" --type Text --data '{"text":"a b c"}' > "$T/exec.json" ||
  fail "exec: $(cat "$T/exec.json")"
[ "$(json "$T/exec.json" "j['success'] and j['shard'] in ('wc-1', 'wc-2') and j['result']['words']")" = 3 ] ||
  fail "exec reply: $(cat "$T/exec.json")"
pass "exec answered by a serve_nats shard"

# 5. SIGTERM: the other takes over, each reports and exits 0.
kill -TERM "$PID_wc_2"
wait "$PID_wc_2" || fail "wc-2 exited $?: $(tail -5 "$T/wc-2.log")"
grep -q "^wc-2 stopped: [0-9]* inputs (.*): [0-9]* completed," "$T/wc-2.out" ||
  fail "wc-2's counters: $(cat "$T/wc-2.out")"
wait_view wc-1 "wc-1"
kill -TERM "$PID_wc_1"
wait "$PID_wc_1" || fail "wc-1 exited $?: $(tail -5 "$T/wc-1.log")"
grep -q "^wc-1 stopped: " "$T/wc-1.out" || fail "wc-1's counters: $(cat "$T/wc-1.out")"
SHARD_PIDS=()
python3 - "$T/wc-1.out" "$T/wc-2.out" <<'PY' || fail "counters: $(cat "$T"/wc-*.out)"
import re, sys
total = 0
for f in sys.argv[1:]:
    m = re.search(r"stopped: (\d+) inputs \((\d+) pulled, (\d+) exec requests\)", open(f).read())
    total += int(m.group(1))
assert total >= 403, total  # each published input was taken by one
PY
pass "SIGTERM: both left the view and reported, status 0"
echo "5 passed, 0 failed"
