# test_events_nats.sh - `lucent events --nats` reads the JetStream event
# store the way `lucent events --store` reads SQLite: the same events, in
# the same order, under the same filters; it never creates the stream,
# survives a server restart (persisted), and fails clearly (exit 1) when
# the server is unreachable, refuses the credentials, or holds no store.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
: "${LUCENT_JS_FILL:?path to the js_fill helper}"

nats_start

# 1. No stream yet: a clear error, exit 1, and nothing created.
expect_fail 1 "no lucent event store on this server (stream LUCENT_EVENTS not found)" \
  "$LUCENT" events --nats "$NATS_URL"
expect_fail 1 "stream LUCENT_EVENTS not found" "$LUCENT" events --nats "$NATS_URL"
pass "missing stream: exit 1, not created"

# 2. The same events in both stores, written by lucent's store code: types
#    with dots and spaces, shared subjects and correlation ids, some
#    missing, a few duplicate ids (of one type: the JetStream store
#    compares type and id, store.h).
python3 - > "$T/all_in.jsonl" <<'PY'
import json, random
r = random.Random(5)
types = ["OrderPlaced", "OrderPaid", "lucent.Rejected", "a.b.c", "with space",
         "OrderShipped"]
prev = None
for i in range(2500):
    t = r.choice(types)
    if i % 97 == 0 and prev:
        t = prev
    prev = t
    e = {"specversion": "1.0", "id": "ev-%d" % (i if i % 97 else i - 1),
         "type": t, "source": "test",
         "data": {"n": i, "text": "x" * r.randint(0, 300)}}
    if i % 5:
        e["subject"] = "order-%d" % r.randint(1, 40)
    if i % 7:
        e["correlationid"] = "corr-%d" % r.randint(1, 60)
    print(json.dumps(e, separators=(",", ":")))
PY
out=$("$LUCENT_JS_FILL" --store "$T/ev.db" < "$T/all_in.jsonl")
n=${out##*inserted }
[ "$n" -gt 2400 ] || fail "SQLite fill: $out"
"$LUCENT" events --store "$T/ev.db" > "$T/all.jsonl"
[ "$(grep -c . "$T/all.jsonl")" = "$n" ] || fail "SQLite holds $(grep -c . "$T/all.jsonl"), not $n"
out=$("$LUCENT_JS_FILL" "$NATS_URL" < "$T/all_in.jsonl")
[ "$out" = "appended 2500, inserted $n" ] || fail "fill: $out"
out=$("$LUCENT_JS_FILL" "$NATS_URL" < "$T/all_in.jsonl")
[ "$out" = "appended 2500, inserted 0" ] || fail "refill not deduplicated: $out"
pass "$n events in both stores, a second copy deduplicated"

# 3. Same output, byte for byte, for each filter.
IFS=$'\t' read -r typ subj corr < <(python3 - "$T/all.jsonl" <<'PY'
import json, sys, collections
ev = [json.loads(l) for l in open(sys.argv[1])]
t = collections.Counter(e["type"] for e in ev).most_common(2)[-1][0]
s = collections.Counter(e.get("subject") for e in ev if e.get("subject")).most_common(1)[0][0]
c = collections.Counter(e.get("correlationid") for e in ev if e.get("correlationid")).most_common(1)[0][0]
print(t, s, c, sep="\t")
PY
)
check() {
  "$LUCENT" events --store "$T/ev.db" "$@" > "$T/a.jsonl"
  "$LUCENT" events --nats "$NATS_URL" "$@" > "$T/b.jsonl" || fail "events --nats $*"
  [ -s "$T/a.jsonl" ] || [ "$*" = "--after $n" ] || [ "$*" = "--type NoSuchType" ] ||
    [ "$*" = "--type with_space" ] || [ "$*" = "--type a.b" ] || fail "events $*: no events"
  cmp -s "$T/a.jsonl" "$T/b.jsonl" ||
    fail "events $* differ: $(wc -l < "$T/a.jsonl") vs $(wc -l < "$T/b.jsonl") lines"
}
check
check --type "$typ"
check --type lucent.Rejected
check --type a.b.c
check --type "with space"
check --type with_space
check --type a.b
check --subject "$subj"
check --correlation "$corr"
check --type "$typ" --subject "$subj"
check --after 100 --limit 50
check --type "$typ" --after 200 --limit 7
check --after "$n"
check --type NoSuchType
[ "$(grep -c . "$T/b.jsonl")" = 0 ] || fail "NoSuchType printed events"
pass "same events as --store under every filter"

# 4. The URL from the environment; persistence across a server restart.
LUCENT_NATS_URL="$NATS_URL" "$LUCENT" events --limit 3 > "$T/env.jsonl"
[ "$(grep -c . "$T/env.jsonl")" = 3 ] || fail "LUCENT_NATS_URL"
nats_restart 0
"$LUCENT" events --nats "$NATS_URL" > "$T/after.jsonl"
cmp -s "$T/all.jsonl" "$T/after.jsonl" || fail "events lost in a restart"
pass "LUCENT_NATS_URL; the store survives a server restart"

# 5. Failures: unreachable server, usage errors.
expect_fail 1 "cannot connect to nats://127.0.0.1:1: no server available (connection refused)" \
  "$LUCENT" events --nats nats://127.0.0.1:1
expect_fail 2 "either --store or --nats" \
  "$LUCENT" events --store "$T/ev.db" --nats "$NATS_URL"
expect_fail 2 "need --nats" "$LUCENT" events --store "$T/ev.db" --user a
expect_fail 2 "bad NATS URL" "$LUCENT" events --nats "http://127.0.0.1:$NATS_PORT"
expect_fail 2 "needs a value" "$LUCENT" events --nats
env -u LUCENT_NATS_URL "$LUCENT" events > /dev/null 2> "$T/err" && fail "no store accepted"
grep -q -- "--store or --nats is required" "$T/err" || fail "no store: $(cat "$T/err")"
pass "unreachable server exits 1; usage errors exit 2"

# 6. Credentials: a server with user/password.
nats_stop
nats_start --user ev --pass s3cret
"$LUCENT_JS_FILL" "nats://ev:s3cret@127.0.0.1:$NATS_PORT" < "$T/all.jsonl" > /dev/null
"$LUCENT" events --nats "$NATS_URL" --user ev --password s3cret --limit 5 > "$T/c.jsonl"
[ "$(grep -c . "$T/c.jsonl")" = 5 ] || fail "user/password"
LUCENT_NATS_PASSWORD=s3cret "$LUCENT" events --nats "$NATS_URL" --user ev --limit 5 > "$T/c.jsonl"
[ "$(grep -c . "$T/c.jsonl")" = 5 ] || fail "password from LUCENT_NATS_PASSWORD"
expect_fail 1 "authorization violation" \
  "$LUCENT" events --nats "$NATS_URL" --user ev --password wrong
grep -q wrong "$T/err" && fail "password in the message"
expect_fail 1 "authorization violation" "$LUCENT" events --nats "$NATS_URL"
pass "credentials: right ones read, wrong ones exit 1"
