# cluster.sh - an N-node nats-server cluster with JetStream, for fault tests
# (sourced, in the style of tests/integ/nats.sh; needs bash and python3).
#
#   cluster_start [N]         starts nodes n1..nN (default 3) on free
#                             loopback ports: client, route (cluster) and
#                             monitoring port each, store $CLUSTER_DIR/nI,
#                             log $CLUSTER_DIR/nI.log, all routed to each
#                             other (--cluster_name C); returns once a
#                             JetStream meta leader is elected and every
#                             node is current with it (cluster_ready).
#                             Sets CLUSTER_N, CLUSTER_DIR, CLUSTER_URLS (all
#                             client URLs, comma-separated: lucent's
#                             --nats), and per node I (1..N): CL_URL[I],
#                             CL_PORT[I], CL_CPORT[I], CL_MPORT[I], CL_PID[I]
#                             (empty while the node is down or stopped).
#   cluster_ready [SECS]      waits (default 30 s) until every node that is
#                             up answers /healthz "ok", they agree on a meta
#                             leader and it lists them all as current
#   cluster_node_ready I [SECS]  the same for node I alone (after a restart)
#   cluster_meta_leader       prints the index of the meta leader
#   cluster_stream STREAM     one JSON line: leader, nodes, replicas,
#                             current, lag, messages, last_seq, per_node
#                             (each replica's own messages, first and last
#                             seq: copies can differ) (clusterctl.py)
#   cluster_stream_leader STREAM  prints the index of the node leading
#                             STREAM (for an R1 stream: the node holding
#                             it); nothing and status 1 when none is up.
#                             A KV bucket B is the stream KV_B.
#   cluster_stream_nodes STREAM   the indexes of the nodes holding STREAM,
#                             leader first, one line, space-separated
#   cluster_wait_leader STREAM [SECS] [NOT]  waits (default 30 s) until
#                             STREAM has a leader other than node NOT;
#                             prints its index
#   cluster_wait_current STREAM [SECS]  waits until every replica of
#                             STREAM is current (caught up)
#   cluster_kill I            kill -9 node I (a crash); its store stays
#   cluster_start_node I      starts node I again: same ports, arguments
#                             and store; returns when it accepts clients
#   cluster_restart I [SECS]  cluster_kill I, SECS down (default 0),
#                             cluster_start_node I, then waits until it
#                             rejoined and caught up (cluster_node_ready)
#   cluster_pause I / cluster_resume I   SIGSTOP / SIGCONT node I
#   cluster_stop              stops every node (by PID: SIGCONT, SIGTERM,
#                             5 s, SIGKILL) and removes CLUSTER_DIR (kept
#                             when LUCENT_TEST_KEEP is set)
#   cluster_req SUBJ [DATA]   one request through natsreq.py (JetStream
#                             API: '$JS.API.STREAM.INFO.X'); prints the reply
#
# Environment: LUCENT_TEST_NATS_SERVER (the binary; else nats-server on
# PATH or /usr/sbin; without one the test is skipped, exit 77),
# LUCENT_TEST_TMP (where CLUSTER_DIR goes, default /tmp), CLUSTER_ARGS (an
# array of extra nats-server arguments for every node, read by
# cluster_start), LUCENT_TEST_KEEP.  Nodes are started under setpriv
# --pdeathsig KILL where it exists, so they die with the test's shell even
# when that is killed; cluster_stop runs on EXIT (chained trap).  One
# cluster per test script; it does not mix with nats.sh's single server
# in the same script unless each keeps its own trap (cluster.sh chains).

CLUSTER_BIN=${LUCENT_TEST_NATS_SERVER:-}
if [ -z "$CLUSTER_BIN" ]; then
  CLUSTER_BIN=$(command -v nats-server 2>/dev/null || true)
  [ -n "$CLUSTER_BIN" ] || [ ! -x /usr/sbin/nats-server ] || CLUSTER_BIN=/usr/sbin/nats-server
fi
if [ -z "$CLUSTER_BIN" ] || [ ! -x "$CLUSTER_BIN" ]; then
  echo "skip: no nats-server (set LUCENT_TEST_NATS_SERVER)"
  exit 77
fi
CLUSTER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER_N=0 CLUSTER_DIR= CLUSTER_URLS=
CL_URL=() CL_PORT=() CL_CPORT=() CL_MPORT=() CL_PID=()
declare -p CLUSTER_ARGS > /dev/null 2>&1 || CLUSTER_ARGS=()
_CL_PRE=()
[ ! -x /usr/bin/setpriv ] || _CL_PRE=(/usr/bin/setpriv --pdeathsig KILL)

_cl_ctl() { python3 "$CLUSTER_HERE/clusterctl.py" "$(_cl_mports)" "$@"; }

# Monitoring ports of nodes 1..N, "-" for a node that is down.
_cl_mports() {
  local i out=
  for i in $(seq 1 "$CLUSTER_N"); do
    if [ -n "${CL_PID[$i]:-}" ]; then out+="${out:+,}${CL_MPORT[$i]}"
    else out+="${out:+,}-"; fi
  done
  echo "$out"
}

# N*3 distinct free loopback ports, held open together while chosen.
_cl_free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

_cl_routes() { # the route URLs of every node but $1
  local i out=
  for i in $(seq 1 "$CLUSTER_N"); do
    [ "$i" = "$1" ] || out+="${out:+,}nats://127.0.0.1:${CL_CPORT[$i]}"
  done
  echo "$out"
}

# Starts node $1; 0 once its client and monitoring ports accept
# connections, 1 if it died or did not within 10 s.
_cl_spawn() {
  local i=$1 k
  mkdir -p "$CLUSTER_DIR/n$i"
  "${_CL_PRE[@]}" "$CLUSTER_BIN" -a 127.0.0.1 -p "${CL_PORT[$i]}" \
    -m "${CL_MPORT[$i]}" -js -sd "$CLUSTER_DIR/n$i" --server_name "n$i" \
    --cluster_name C --cluster "nats://127.0.0.1:${CL_CPORT[$i]}" \
    --routes "$(_cl_routes "$i")" "${CLUSTER_ARGS[@]}" \
    >> "$CLUSTER_DIR/n$i.log" 2>&1 &
  CL_PID[$i]=$!
  for k in $(seq 1 200); do
    if ! kill -0 "${CL_PID[$i]}" 2>/dev/null; then
      wait "${CL_PID[$i]}" 2>/dev/null || true
      CL_PID[$i]=
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/${CL_PORT[$i]}") 2>/dev/null &&
       (exec 3<>"/dev/tcp/127.0.0.1/${CL_MPORT[$i]}") 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  kill -9 "${CL_PID[$i]}" 2>/dev/null || true
  wait "${CL_PID[$i]}" 2>/dev/null || true
  CL_PID[$i]=
  return 1
}

cluster_start() {
  local n=${1:-3} attempt i ports
  CLUSTER_N=$n
  CLUSTER_DIR=$(mktemp -d "${LUCENT_TEST_TMP:-/tmp}/cluster.XXXXXX")
  for attempt in 1 2 3; do
    read -r -a ports <<< "$(_cl_free_ports $((3 * n)))"
    CLUSTER_URLS=
    for i in $(seq 1 "$n"); do
      CL_PORT[$i]=${ports[$((3 * (i - 1)))]}
      CL_CPORT[$i]=${ports[$((3 * (i - 1) + 1))]}
      CL_MPORT[$i]=${ports[$((3 * (i - 1) + 2))]}
      CL_URL[$i]="nats://127.0.0.1:${CL_PORT[$i]}"
      CL_PID[$i]=
      CLUSTER_URLS+="${CLUSTER_URLS:+,}${CL_URL[$i]}"
    done
    local okall=1
    for i in $(seq 1 "$n"); do _cl_spawn "$i" || { okall=0; break; }; done
    [ "$okall" = 1 ] && break
    _cl_kill_all  # a port was taken meanwhile: all again, new ports
    [ "$attempt" = 3 ] && { echo "FAIL: cluster did not start:" >&2;
                            tail -5 "$CLUSTER_DIR"/n*.log >&2; exit 1; }
  done
  export CLUSTER_URLS
  cluster_ready 30
}

cluster_ready() {
  local deadline=$((SECONDS + ${1:-30}))
  while [ "$SECONDS" -lt "$deadline" ]; do
    _cl_ctl ready > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAIL: cluster not ready after ${1:-30} s: $(_cl_ctl ready 2>&1)" >&2
  return 1
}

cluster_node_ready() {
  local deadline=$((SECONDS + ${2:-30}))
  while [ "$SECONDS" -lt "$deadline" ]; do
    _cl_ctl node-ready "$1" > /dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "FAIL: n$1 not ready after ${2:-30} s: $(_cl_ctl node-ready "$1" 2>&1)" >&2
  return 1
}

cluster_meta_leader() { _cl_ctl meta-leader; }
cluster_stream() { _cl_ctl stream "$1"; }

cluster_stream_leader() {
  local j
  j=$(_cl_ctl stream "$1") || return 1
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["leader"])' "$j"
}

cluster_stream_nodes() {
  local j
  j=$(_cl_ctl stream "$1") || return 1
  python3 -c 'import json,sys; print(*json.loads(sys.argv[1])["nodes"])' "$j"
}

cluster_wait_leader() {
  local deadline=$((SECONDS + ${2:-30})) l
  while [ "$SECONDS" -lt "$deadline" ]; do
    l=$(cluster_stream_leader "$1" 2>/dev/null || true)
    if [ -n "$l" ] && [ "$l" != "${3:-0}" ]; then echo "$l"; return 0; fi
    sleep 0.05
  done
  echo "FAIL: stream $1 has no leader${3:+ other than n$3} after ${2:-30} s" >&2
  return 1
}

cluster_wait_current() {
  local deadline=$((SECONDS + ${2:-30})) j
  while [ "$SECONDS" -lt "$deadline" ]; do
    j=$(_cl_ctl stream "$1" 2>/dev/null || true)
    case "$j" in *'"current": true'*) return 0 ;; esac
    sleep 0.1
  done
  echo "FAIL: stream $1 not current after ${2:-30} s: $j" >&2
  return 1
}

cluster_kill() {
  local i=$1
  [ -n "${CL_PID[$i]:-}" ] || return 0
  kill -9 "${CL_PID[$i]}" 2>/dev/null || true
  wait "${CL_PID[$i]}" 2>/dev/null || true
  CL_PID[$i]=
}

cluster_start_node() {
  local i=$1 k
  [ -z "${CL_PID[$i]:-}" ] || return 0
  for k in $(seq 1 50); do
    _cl_spawn "$i" && return 0
    sleep 0.1 # the port may linger a moment
  done
  echo "FAIL: n$i did not restart:" >&2
  tail -5 "$CLUSTER_DIR/n$i.log" >&2
  return 1
}

cluster_restart() {
  cluster_kill "$1"
  sleep "${2:-0}"
  cluster_start_node "$1" && cluster_node_ready "$1" 60
}

cluster_pause() { kill -STOP "${CL_PID[$1]}"; }
cluster_resume() { kill -CONT "${CL_PID[$1]}"; }

cluster_req() { python3 "$CLUSTER_HERE/natsreq.py" --servers "$CLUSTER_URLS" req "$@"; }

_cl_kill_all() {
  local i
  for i in $(seq 1 "$CLUSTER_N"); do cluster_kill "$i"; done
}

cluster_stop() {
  local i k p pids=()
  for i in $(seq 1 "$CLUSTER_N"); do
    p=${CL_PID[$i]:-}
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
    kill -CONT "$p" 2>/dev/null || true  # a paused node takes TERM too
    pids+=("$p")
  done
  for p in "${pids[@]}"; do
    for k in $(seq 1 100); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.05
    done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for i in $(seq 1 "$CLUSTER_N"); do CL_PID[$i]=; done
  if [ -n "$CLUSTER_DIR" ]; then
    if [ -n "${LUCENT_TEST_KEEP:-}" ]; then echo "kept $CLUSTER_DIR" >&2
    else rm -rf "$CLUSTER_DIR"; fi
  fi
  CLUSTER_DIR=
}

# Stop the cluster on any exit, then run whatever EXIT trap was there.
_cl_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT\$/\1/")
trap "cluster_stop; $_cl_prev_trap" EXIT
