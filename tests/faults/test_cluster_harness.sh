#!/usr/bin/env bash
# test_cluster_harness.sh - the fault harness checks itself: a 3-node
# cluster starts, an R3 stream survives kill -9 of its leader (a new leader
# is elected, publishes go on, the Nats-Msg-Id window still holds), the
# killed node rejoins and catches up, an R1 stream is found on its one node,
# a paused follower does not stop an R3 stream.  Exit 0; 77 without
# nats-server.  Needs only bash and python3.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/cluster.sh"
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $* (${SECONDS}s)"; }
pub() { python3 "$HERE/natsreq.py" --servers "$CLUSTER_URLS" js-pub "$@"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

cluster_start 3
[ -n "$(cluster_meta_leader)" ] || fail "no meta leader"
pass "3 nodes up, meta leader n$(cluster_meta_leader): $CLUSTER_URLS"

# An R3 stream and an R1 stream, created through the JetStream API.
r=$(cluster_req '$JS.API.STREAM.CREATE.H3' \
  '{"name":"H3","subjects":["h3.>"],"num_replicas":3,"storage":"file"}')
case "$r" in *'"did_create":true'*) ;; *) fail "create H3: $r" ;; esac
r=$(cluster_req '$JS.API.STREAM.CREATE.H1' \
  '{"name":"H1","subjects":["h1.>"],"num_replicas":1,"storage":"file"}')
case "$r" in *'"did_create":true'*) ;; *) fail "create H1: $r" ;; esac
cluster_wait_current H3 20 || fail "H3 replicas never current"
read -r -a nodes <<< "$(cluster_stream_nodes H3)"
[ "${#nodes[@]}" = 3 ] || fail "H3 on ${nodes[*]}, want 3 nodes"
read -r -a nodes <<< "$(cluster_stream_nodes H1)"
[ "${#nodes[@]}" = 1 ] || fail "H1 on ${nodes[*]}, want 1 node"
[ "$(cluster_stream_leader H1)" = "${nodes[0]}" ] || fail "H1 leader"
pass "R3 stream on 3 nodes, R1 stream on n${nodes[0]}"

out=$(pub h3.x 300 --id-prefix a-) || fail "publish before the kill: $out"
leader=$(cluster_stream_leader H3)

# kill -9 the leader: a new one, publishes go on, dedup still holds.
t0=$(date +%s%N)
cluster_kill "$leader"
new=$(cluster_wait_leader H3 30 "$leader") || fail "no new leader"
ms=$((($(date +%s%N) - t0) / 1000000))
out=$(pub h3.x 300 --id-prefix b-) || fail "publish after the kill: $out"
[ "$(field "$out" duplicates)" = 0 ] || fail "new ids reported duplicate: $out"
out=$(pub h3.x 300 --id-prefix a-) || fail "republish: $out"
[ "$(field "$out" duplicates)" = 300 ] || fail "dedup lost across the leader change: $out"
[ "$(field "$(cluster_stream H3)" messages)" = 600 ] || fail "H3: $(cluster_stream H3)"
pass "kill -9 of leader n$leader: n$new leads after $ms ms, 600 stored, republish all duplicates"

# The killed node comes back and catches up.
cluster_restart "$leader" || fail "n$leader did not rejoin"
cluster_wait_current H3 30 || fail "n$leader did not catch up"
read -r -a nodes <<< "$(cluster_stream_nodes H3)"
[ "${#nodes[@]}" = 3 ] || fail "H3 on ${nodes[*]} after the restart"
pass "n$leader rejoined and caught up"

# A paused follower: the other two still make a quorum.
l=$(cluster_stream_leader H3)
f=$(cluster_stream_nodes H3 | tr ' ' '\n' | grep -vx "$l" | head -1)
cluster_pause "$f"
out=$(pub h3.x 100 --id-prefix c- --deadline 20) || fail "publish with n$f paused: $out"
cluster_resume "$f"
cluster_wait_current H3 30 || fail "n$f did not catch up after SIGCONT"
[ "$(field "$(cluster_stream H3)" messages)" = 700 ] || fail "H3: $(cluster_stream H3)"
pass "follower n$f paused: publishes go on; resumed, it catches up"

echo "5 passed, 0 failed"
