#!/usr/bin/env bash
# test_replicas_cluster.sh - --replicas on a 3-node cluster: a stream
# created with 1 replica is changed to 3 when 3 are asked (a warning
# says so, its messages are kept); a count the cluster cannot give (5)
# is refused, naming the stream, what it has and what was asked; a serve
# without --replicas keeps the existing count; `lucent publish` rides
# through kill -9 of LUCENT_INTAKE's leader in the middle of its input:
# every line accepted, each stored once.  Exit 77 without nats-server.
. "$(dirname "$0")/../integ/lib.sh"
. "$(dirname "$0")/cluster.sh"
SLOW=${LUCENT_TEST_SLOW:-1}
PIDS=()
stop_ours() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; }
_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT\$/\1/")
trap "stop_ours; $_prev_trap" EXIT
field() { # one field of the stream's view; asked again while no node answers
  local k v
  for k in $(seq 1 $((20 * SLOW))); do
    v=$(cluster_stream "$1" 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])" 2>/dev/null) &&
      [ -n "$v" ] && [ "$v" != None ] && { echo "$v"; return 0; }
    sleep 0.5
  done
  fail "no view of stream $1 ($2)"
}
nnodes() { local n; read -r -a n <<< "$(cluster_stream_nodes "$1")"; echo "${#n[@]}"; }
# A serve's start on a cluster waits for R3 raft groups to elect leaders
# (docs/nats-notes.md a5): up to two minutes on a busy machine.
wait_log() { # wait_log FILE PATTERN
  for _ in $(seq 1 $((1200 * SLOW))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "no '$2' in $1: $(tail -3 "$1")"
}

cluster_start 3
"$LUCENT_GEN" -n 30000 --seed 5 > "$T/in.jsonl" 2>/dev/null
head -n 2000 "$T/in.jsonl" > "$T/first.jsonl"

# 1. Created with the default (1), then changed to 3 with a warning.
"$LUCENT" publish --nats "$CLUSTER_URLS" --pack 1 --input "$T/first.jsonl" > /dev/null ||
  fail "publish"
[ "$(nnodes LUCENT_INTAKE)" = 1 ] || fail "LUCENT_INTAKE on $(nnodes LUCENT_INTAKE) nodes, want 1"
"$LUCENT" publish --nats "$CLUSTER_URLS" --pack 1 --replicas 3 --input "$T/first.jsonl" \
  > "$T/pub.out" 2> "$T/pub.err" || fail "publish --replicas 3: $(cat "$T/pub.err")"
grep -q "stream LUCENT_INTAKE had 1 replica: changed to 3 (--replicas 3)" "$T/pub.err" ||
  fail "no warning: $(cat "$T/pub.err")"
cluster_wait_current LUCENT_INTAKE $((30 * SLOW)) || fail "LUCENT_INTAKE copies not current"
[ "$(nnodes LUCENT_INTAKE)" = 3 ] || fail "LUCENT_INTAKE on $(nnodes LUCENT_INTAKE) nodes, want 3"
[ "$(field LUCENT_INTAKE messages)" = 2000 ] || fail "LUCENT_INTAKE: $(cluster_stream LUCENT_INTAKE)"
pass "R1 stream changed to R3 with a warning, its 2000 messages kept"

# 2. More copies than nodes: refused, naming the stream and the fix.
expect_fail 1 "stream LUCENT_INTAKE has 3 replicas and --replicas 5 was asked, but the server refused to change it" \
  timeout $((60 * SLOW)) "$LUCENT" publish --nats "$CLUSTER_URLS" --replicas 5 --input "$T/first.jsonl"
grep -q "Keep it with --replicas 3" "$T/err" || fail "no fix in: $(cat "$T/err")"
expect_fail 1 "cannot create stream LUCENT_EVENTS with 5 replicas" \
  timeout $((60 * SLOW)) "$LUCENT" serve --nats "$CLUSTER_URLS" --shard x --plugin "$LUCENT_PLUGIN" --replicas 5
[ "$(nnodes LUCENT_INTAKE)" = 3 ] || fail "LUCENT_INTAKE changed"
pass "--replicas 5 on 3 nodes: refused with what it has, what was asked, the fix"

# 3. A serve with --replicas 3 makes the rest R3; one without keeps them.
"$LUCENT" serve --nats "$CLUSTER_URLS" --shard a --plugin "$LUCENT_PLUGIN" --replicas 3 \
  --log-format json > "$T/a.out" 2> "$T/a.log" &
PIDS+=($!)
wait_log "$T/a.log" '"msg":"serving"'
for s in LUCENT_FWD LUCENT_EVENTS KV_lucent_sessions; do
  [ "$(nnodes $s)" = 3 ] || fail "$s on $(nnodes $s) nodes, want 3"
done
"$LUCENT" serve --nats "$CLUSTER_URLS" --shard b --plugin "$LUCENT_PLUGIN" \
  --log-format json > "$T/b.out" 2> "$T/b.log" &
PIDS+=($!)
wait_log "$T/b.log" '"msg":"serving"'
grep -q "stream LUCENT_EVENTS has 3 replicas: kept (--replicas not given)" "$T/b.log" ||
  fail "serve b said nothing about the replicas it kept: $(head -5 "$T/b.log")"
for s in LUCENT_INTAKE LUCENT_FWD LUCENT_EVENTS KV_lucent_sessions; do
  [ "$(nnodes $s)" = 3 ] || fail "$s on $(nnodes $s) nodes after serve b, want 3"
done
stop_ours
PIDS=()
pass "serve --replicas 3: all four on 3 nodes; a serve without it keeps them (and says so)"

# 4. publish rides through kill -9 of LUCENT_INTAKE's leader: the input
#    pauses right after the kill, so the rest is sent while the stream
#    elects a leader.  Every line accepted, each stored once.
before=$(field LUCENT_INTAKE messages)
sed -n 2001,12000p "$T/in.jsonl" > "$T/a.jsonl"
tail -n +12001 "$T/in.jsonl" > "$T/b.jsonl"
want=$(( $(wc -l < "$T/a.jsonl") + $(wc -l < "$T/b.jsonl") ))
mkfifo "$T/pipe"
"$LUCENT" publish --nats "$CLUSTER_URLS" --pack 1 --input "$T/pipe" \
  > "$T/pub.out" 2> "$T/pub.err" &
ppid_=$!
PIDS+=($ppid_)
exec 3> "$T/pipe"
cat "$T/a.jsonl" >&3
for _ in $(seq 1 $((300 * SLOW))); do # a's messages are in
  [ "$(field LUCENT_INTAKE messages)" -ge $((before + 10000)) ] && break; sleep 0.1; done
leader=$(cluster_stream_leader LUCENT_INTAKE)
cluster_kill "$leader"
sleep 1
cat "$T/b.jsonl" >&3
exec 3>&-
wait "$ppid_" || fail "publish through the leader kill: $(cat "$T/pub.out" "$T/pub.err")"
grep -q "$want accepted, 0 rejected" "$T/pub.out" || fail "publish: $(cat "$T/pub.out")"
cluster_wait_leader LUCENT_INTAKE $((30 * SLOW)) "$leader" > /dev/null || fail "no new leader"
got=$(field LUCENT_INTAKE messages)
[ "$got" = $((before + want)) ] || fail "LUCENT_INTAKE holds $got messages, want $((before + want))"
episode=$(grep -c "publishing to LUCENT_INTAKE failed" "$T/pub.err" || true)
pass "publish through kill -9 of n$leader (leader of LUCENT_INTAKE): $want accepted, each stored once ($episode retry episode logged)"
