#!/usr/bin/env bash
# bench/peer/run.sh - lucent against Moleculer (on one nats-server) and
# BullMQ (on one redis-server with AOF), in one run (issues 5 and 18).
# See bench/peer/README.md and bench/README.md, "Peer comparison".
#
#   bench/peer/run.sh                  # 3 rounds, ~10-12 minutes here
#   ROUNDS=1 N1=2000 N64=5000 N_EVENTS=10000 N_KILL=6000 bench/peer/run.sh  # quick
#   ROUNDS=5 N_EVENTS=100000 bench/peer/run.sh
#
# 1. Installs what is missing: gnuplot (Debian gnuplot-nox) and redis-server
#    (Debian), with apt-get, as root; Moleculer, the `nats` client and
#    BullMQ from npm into bench/peer/node_modules/ (ignored by git;
#    package.json says which versions).
# 2. Builds lucent in Release ($BUILD, default build-bench/), and the kill
#    scenario's plugin (bench/peer/peer_plugin.c) into $BUILD/bench/peer/.
# 3. Starts one nats-server (JetStream, temporary store) and one
#    redis-server (AOF, fsync every second, no RDB snapshots, temporary
#    directory), each on a free loopback port, and stops both by PID at the
#    end whatever happens.
# 4. Runs every scenario once per round, the systems one after the other
#    in each round (lucent, Moleculer, BullMQ, raw NATS), so that all see
#    the same machine:
#      rr      request/response of a trivial function: 1 in flight
#              (p50/p99/p999), 64 in flight (req/s); BullMQ: a job added
#              and its completion awaited (the result stored)
#      events  keyed events to 2 workers, events/s until all are processed
#              (lucent at-most-once and at-least-once; Moleculer emit;
#              BullMQ: 16 queues of global concurrency 1, keys hashed to
#              them), CPU per event of the whole system
#      kill    kill -9 of one of 2 workers a third of the way through
#              N_KILL keyed durable events, back 3 s later (lucent
#              at-least-once, BullMQ): lost, stored twice, executed twice,
#              out of per-key order, time to finish
#      keymove share of 10k keys that change owner when a 3rd worker joins
# 5. Writes results/results.md, results/*.png (gnuplot), and the raw data
#    (runs.jsonl, cdf.csv) into bench/peer/results/.
#
# Knobs (environment): ROUNDS, N1, N64, N_EVENTS, MAX_SECONDS (bound of
# every load loop), N_KILL, KILL_KEYS, KILL_MAX_SECONDS, KILL=0 (no kill
# scenario), PEERS (default "moleculer bullmq"), KILL_ACK_WAIT_MS (lucent
# serves' --ack-wait-ms in the kill scenario; default lucent's own),
# KILL_BULL_LOCK_MS and KILL_BULL_STALLED_MS (BullMQ lockDuration and
# stalledInterval there; default BullMQ's own), BUILD.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
N_EVENTS=${N_EVENTS:-50000}
N1=${N1:-10000}
N64=${N64:-50000}
MAX_SECONDS=${MAX_SECONDS:-60}
N_KILL=${N_KILL:-30000}
KILL_KEYS=${KILL_KEYS:-1000}
KILL_MAX_SECONDS=${KILL_MAX_SECONDS:-150}
KILL=${KILL:-1}
PEERS=${PEERS:-moleculer bullmq}
has_peer() { [[ " $PEERS " == *" $1 "* ]]; }
BUILD=${BUILD:-build-bench}
PEER=bench/peer
RES=$PEER/results

for c in nats-server node npm python3 cmake gcc pkg-config; do
  command -v "$c" >/dev/null || { echo "run.sh: $c is missing (scripts/deps.sh installs the C side; node/npm come with the machine)" >&2; exit 1; }
done
if ! command -v gnuplot >/dev/null; then
  if [[ $(id -u) == 0 ]]; then
    echo "run.sh: installing gnuplot-nox" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
  else
    echo "run.sh: gnuplot is missing: apt-get install gnuplot-nox (as root)" >&2; exit 1
  fi
fi
if has_peer bullmq && ! command -v redis-server >/dev/null; then
  if [[ $(id -u) == 0 ]]; then
    echo "run.sh: installing redis-server" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "run.sh: redis-server is missing: apt-get install redis-server (as root)" >&2; exit 1
  fi
fi
if ! (cd "$PEER" && node -e 'require("moleculer"); require("nats"); require("bullmq")' 2>/dev/null); then
  echo "run.sh: npm install (moleculer, nats, bullmq) into $PEER/node_modules" >&2
  (cd "$PEER" && npm install --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null)
fi
ver() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$PEER/node_modules/$1/package.json"; }
MOL_VER=$(ver moleculer)
NATSJS_VER=$(ver nats)
BULL_VER=$(ver bullmq)
IOREDIS_VER=$(ver ioredis)

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLUCENT_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j2 --target lucent_cli bench_nats bench_noop >/dev/null
BN=$BUILD/bench/bench_nats
LUCENT=(--lucent "$BUILD/lucent" --plugin "$BUILD/bench/libbench_noop.so")
# The kill scenario's plugin: built like any plugin, against include/.
mkdir -p "$BUILD/bench/peer"
PROBE=$BUILD/bench/peer/libpeer_probe.so
gcc -O2 -Wall -shared -fPIC -I include $(pkg-config --cflags libcjson) \
  "$PEER/peer_plugin.c" -o "$PROBE"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lucent-peer.XXXXXX")
trap 'exit 130' INT TERM
# The tests' helper: a free loopback port, a temporary store directory, and
# the server stopped by its PID on any exit.
. tests/integ/nats.sh
nats_start
URL=$NATS_URL
COMMON=(--nats "$URL" --server-pid "$NATS_PID" --max-seconds "$MAX_SECONDS")
echo "run.sh: nats-server pid $NATS_PID on 127.0.0.1:$NATS_PORT; moleculer $MOL_VER, nats.js $NATSJS_VER, node $(node --version); $ROUNDS rounds" >&2
REDIS_VER=-
if has_peer bullmq; then
  . "$PEER/redis.sh"
  redis_start
  REDIS=(--redis-port "$REDIS_PORT" --redis-pid "$REDIS_PID" --max-seconds "$MAX_SECONDS")
  REDIS_VER=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
  echo "run.sh: redis-server $REDIS_VER pid $REDIS_PID on 127.0.0.1:$REDIS_PORT (AOF everysec); bullmq $BULL_VER" >&2
fi
KILL_L=() KILL_B=()
[ -z "${KILL_ACK_WAIT_MS:-}" ] || KILL_L=(--ack-wait-ms "$KILL_ACK_WAIT_MS")
[ -z "${KILL_BULL_LOCK_MS:-}" ] || KILL_B+=(--lock-ms "$KILL_BULL_LOCK_MS")
[ -z "${KILL_BULL_STALLED_MS:-}" ] || KILL_B+=(--stalled-ms "$KILL_BULL_STALLED_MS")
KILLC=(-n "$N_KILL" --keys "$KILL_KEYS" --max-seconds "$KILL_MAX_SECONDS" --tmp "$TMP")

# A peer's run that fails is recorded as a run with an error (report.py
# lists it) and the others go on.
peer_run() { # peer_run SCENARIO SYSTEM ROUND CMD...
  local sc=$1 sys=$2 rd=$3
  shift 3
  "$@" >>"$RUNS" || {
    echo "run.sh: $sys $sc round $rd failed (status $?)" >&2
    echo "{\"scenario\":\"$sc\",\"system\":\"$sys\",\"round\":$rd,\"errors\":1,\"why\":\"the script failed (see the run's stderr)\"}" >>"$RUNS"
  }
}
RUNS=$TMP/runs.jsonl
CDF=$TMP/cdf.csv
: >"$RUNS"
: >"$CDF"
T0=$(date +%s)
for r in $(seq "$ROUNDS"); do
  echo "run.sh: round $r: request/response" >&2
  "$BN" rr "${COMMON[@]}" "${LUCENT[@]}" --logdir "$TMP" --system lucent --shards 1 \
    -r 1 --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF" >>"$RUNS"
  "$BN" rr "${COMMON[@]}" "${LUCENT[@]}" --logdir "$TMP" --system lucent --shards 1 \
    --exec-reply executed -r 1 --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF" >>"$RUNS"
  if has_peer moleculer; then
    node "$PEER/moleculer_bench.js" rr "${COMMON[@]}" --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF" >>"$RUNS"
  fi
  if has_peer bullmq; then
    peer_run rr1 bullmq "$r" node "$PEER/bullmq_bench.js" rr "${REDIS[@]}" --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF"
  fi
  "$BN" rr "${COMMON[@]}" --system raw -r 1 --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF" >>"$RUNS"
  echo "run.sh: round $r: keyed events" >&2
  for d in amo alo; do
    "$BN" events "${COMMON[@]}" "${LUCENT[@]}" --logdir "$TMP" --type Keyed \
      --workers worker-1,worker-2 --delivery "$d" -n "$N_EVENTS" -r 1 --round "$r" >>"$RUNS"
  done
  if has_peer moleculer; then
    node "$PEER/moleculer_bench.js" events "${COMMON[@]}" --round "$r" -n "$N_EVENTS" >>"$RUNS"
  fi
  if has_peer bullmq; then
    peer_run events bullmq "$r" node "$PEER/bullmq_bench.js" events "${REDIS[@]}" --round "$r" -n "$N_EVENTS"
    if [[ $KILL != 0 ]]; then
      echo "run.sh: round $r: kill -9 of a worker" >&2
      peer_run kill lucent "$r" node "$PEER/kill_bench.js" --system lucent --nats "$URL" \
        --lucent "$BUILD/lucent" --plugin "$PROBE" "${KILL_L[@]}" --round "$r" "${KILLC[@]}"
      peer_run kill bullmq "$r" node "$PEER/kill_bench.js" --system bullmq \
        --redis-port "$REDIS_PORT" "${KILL_B[@]}" --round "$r" "${KILLC[@]}"
    fi
  fi
done
echo "run.sh: key movement" >&2
"$BN" keymove --keys 10000 -r "$ROUNDS" --workers worker-1,worker-2,worker-3 >>"$RUNS"
if has_peer moleculer; then
  node "$PEER/moleculer_bench.js" keymove --keys 10000 --rounds "$ROUNDS" --workers worker-1,worker-2,worker-3 >>"$RUNS"
fi
ELAPSED=$(( $(date +%s) - T0 ))

mkdir -p "$RES"
cp "$RUNS" "$RES/runs.jsonl"
cp "$CDF" "$RES/cdf.csv"
python3 "$PEER/report.py" --runs "$RES/runs.jsonl" --cdf "$RES/cdf.csv" --out "$RES" \
  --meta "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src cli || echo '+local changes'); $(date -u +%Y-%m-%d); $(nproc) cpus; nats-server $(nats-server --version | awk '{print $2}'); nats.c $(pkg-config --modversion libnats); moleculer $MOL_VER with nats.js $NATSJS_VER; bullmq $BULL_VER with ioredis $IOREDIS_VER on redis-server $REDIS_VER (AOF everysec); node $(node --version); $ROUNDS rounds, $N1 requests with 1 in flight, $N64 with 64, $N_EVENTS events, kill -9 during $N_KILL events over $KILL_KEYS keys; measuring took ${ELAPSED} s"
echo "run.sh: wrote $RES/results.md and $RES/*.png" >&2
cat "$RES/results.md"
