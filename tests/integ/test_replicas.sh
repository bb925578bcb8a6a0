# test_replicas.sh - --replicas on a single nats-server: asking for more
# than one copy is refused at once with a message saying why and what to
# do (a lone server cannot keep copies; it would even accept an update to
# R3 and keep one), whether the stream is missing or exists; --replicas 1
# and no --replicas work; bad values are usage errors.  The cluster side
# (changing an existing stream, a count the cluster cannot give, riding
# through a leader kill) is tests/faults/test_replicas_cluster.sh.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nats.sh"
REQ="python3 $(dirname "$0")/../faults/natsreq.py"

nats_start
"$LUCENT_GEN" -n 50 --seed 3 > "$T/in.jsonl" 2>/dev/null
replicas() { $REQ --servers "$NATS_URL" req "\$JS.API.STREAM.INFO.$1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["num_replicas"])'; }

# 1. Usage errors.
expect_fail 2 "replicas must be an integer in 1..5" \
  "$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" --replicas 0
expect_fail 2 "replicas must be an integer in 1..5" \
  "$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" --replicas 6
expect_fail 2 "replicas must be an integer in 1..5" \
  "$LUCENT" serve --nats "$NATS_URL" --shard a --plugin "$LUCENT_PLUGIN" --replicas x
pass "bad --replicas values: usage errors"

# 2. R3 on a single server, nothing there yet: refused at once (the
#    server's answer, 10074, with the fix), nothing created.
expect_fail 1 "cannot create stream LUCENT_INTAKE with 3 replicas: the NATS server is a single server, not a cluster" \
  timeout 20 "$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" --replicas 3
grep -q "use --replicas 1, or a cluster of at least 3 nodes" "$T/err" || fail "no fix in: $(cat "$T/err")"
expect_fail 1 "cannot create stream LUCENT_EVENTS with 3 replicas" \
  timeout 20 "$LUCENT" serve --nats "$NATS_URL" --shard a --plugin "$LUCENT_PLUGIN" --replicas 3
pass "--replicas 3 on a single server, nothing there: clear error, no hang"

# 3. Created with 1 (the default), then R3 asked on the existing stream:
#    refused before asking the server, naming the stream; still R1.
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" > /dev/null || fail "publish"
[ "$(replicas LUCENT_INTAKE)" = 1 ] || fail "LUCENT_INTAKE has $(replicas LUCENT_INTAKE) replicas"
expect_fail 1 "stream LUCENT_INTAKE: --replicas 3 asked, but the NATS server is a single server" \
  timeout 20 "$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" --replicas 3
[ "$(replicas LUCENT_INTAKE)" = 1 ] || fail "LUCENT_INTAKE changed to $(replicas LUCENT_INTAKE) replicas"
"$LUCENT" publish --nats "$NATS_URL" --input "$T/in.jsonl" --replicas 1 > /dev/null ||
  fail "publish --replicas 1"
pass "existing R1 stream: --replicas 3 refused, --replicas 1 and none accepted"

# 4. A serve with --replicas 1 creates everything with 1 and runs; one
#    asking 3 is refused naming the stream it found.
"$LUCENT" serve --nats "$NATS_URL" --shard a --plugin "$LUCENT_PLUGIN" --replicas 1 \
  --log-format json > "$T/a.out" 2> "$T/a.log" &
spid=$!
_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT\$/\1/")
trap "kill $spid 2>/dev/null || true; wait $spid 2>/dev/null || true; $_prev_trap" EXIT
wait_view a "a"
for s in LUCENT_INTAKE LUCENT_FWD LUCENT_EVENTS KV_lucent_sessions; do
  [ "$(replicas $s)" = 1 ] || fail "$s has $(replicas $s) replicas"
done
expect_fail 1 "replicas 3 asked, but the NATS server is a single server" \
  timeout 20 "$LUCENT" serve --nats "$NATS_URL" --shard b --plugin "$LUCENT_PLUGIN" --replicas 3
kill $spid; wait $spid || fail "serve exited $?: $(tail -3 "$T/a.log")"
pass "serve --replicas 1 creates all four with 1; --replicas 3 then refused"
