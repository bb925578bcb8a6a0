#!/usr/bin/env bash
# bench/peer/run.sh - lucent against Moleculer on one nats-server, in one run
# (issue 5).  See bench/README.md, "Peer comparison".
#
#   bench/peer/run.sh                  # 3 rounds, ~6-8 minutes here
#   ROUNDS=5 N_EVENTS=100000 bench/peer/run.sh
#
# 1. Installs what is missing: gnuplot (Debian gnuplot-nox, with apt-get, as
#    root), Moleculer and the `nats` client from npm into bench/peer/
#    node_modules/ (ignored by git; package.json says which versions).
# 2. Builds lucent in Release ($BUILD, default build-bench/).
# 3. Starts one nats-server (JetStream, temporary store) on a free loopback
#    port, and stops it by PID at the end whatever happens.
# 4. Runs every scenario once per round, the systems one after the other
#    in each round (lucent, Moleculer, raw NATS), so that both see the same
#    machine:
#      rr      request/response of a trivial function: 1 in flight
#              (p50/p99/p999), 64 in flight (req/s)
#      events  fire-and-forget events to 2 workers by shard key, events/s
#              until all are processed (lucent at-most-once and
#              at-least-once; Moleculer emit)
#      keymove share of 10k keys that change owner when a 3rd worker joins
# 5. Writes results/results.md, results/*.png (gnuplot), and the raw data
#    (runs.jsonl, cdf.csv) into bench/peer/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
N_EVENTS=${N_EVENTS:-50000}
N1=${N1:-10000}
N64=${N64:-50000}
MAX_SECONDS=${MAX_SECONDS:-60}
BUILD=${BUILD:-build-bench}
PEER=bench/peer
RES=$PEER/results

for c in nats-server node npm python3 cmake; do
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
if ! (cd "$PEER" && node -e 'require("moleculer"); require("nats")' 2>/dev/null); then
  echo "run.sh: npm install (moleculer, nats) into $PEER/node_modules" >&2
  (cd "$PEER" && npm install --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null)
fi
MOL_VER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$PEER/node_modules/moleculer/package.json")
NATSJS_VER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$PEER/node_modules/nats/package.json")

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLUCENT_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j2 --target lucent_cli bench_nats bench_noop >/dev/null
BN=$BUILD/bench/bench_nats
LUCENT=(--lucent "$BUILD/lucent" --plugin "$BUILD/bench/libbench_noop.so")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lucent-peer.XXXXXX")
trap 'exit 130' INT TERM
# The tests' helper: a free loopback port, a temporary store directory, and
# the server stopped by its PID on any exit.
. tests/integ/nats.sh
nats_start
URL=$NATS_URL
COMMON=(--nats "$URL" --server-pid "$NATS_PID" --max-seconds "$MAX_SECONDS")
echo "run.sh: nats-server pid $NATS_PID on 127.0.0.1:$NATS_PORT; moleculer $MOL_VER, nats.js $NATSJS_VER, node $(node --version); $ROUNDS rounds" >&2

RUNS=$TMP/runs.jsonl
CDF=$TMP/cdf.csv
: >"$RUNS"
: >"$CDF"
T0=$(date +%s)
for r in $(seq "$ROUNDS"); do
  echo "run.sh: round $r: request/response" >&2
  "$BN" rr "${COMMON[@]}" "${LUCENT[@]}" --logdir "$TMP" --system lucent --shards 1 \
    -r 1 --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF" >>"$RUNS"
  node "$PEER/moleculer_bench.js" rr "${COMMON[@]}" --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF" >>"$RUNS"
  "$BN" rr "${COMMON[@]}" --system raw -r 1 --round "$r" --n1 "$N1" --n64 "$N64" --cdf "$CDF" >>"$RUNS"
  echo "run.sh: round $r: keyed events" >&2
  for d in amo alo; do
    "$BN" events "${COMMON[@]}" "${LUCENT[@]}" --logdir "$TMP" --type Keyed \
      --workers worker-1,worker-2 --delivery "$d" -n "$N_EVENTS" -r 1 --round "$r" >>"$RUNS"
  done
  node "$PEER/moleculer_bench.js" events "${COMMON[@]}" --round "$r" -n "$N_EVENTS" >>"$RUNS"
done
echo "run.sh: key movement" >&2
"$BN" keymove --keys 10000 -r "$ROUNDS" --workers worker-1,worker-2,worker-3 >>"$RUNS"
node "$PEER/moleculer_bench.js" keymove --keys 10000 --rounds "$ROUNDS" --workers worker-1,worker-2,worker-3 >>"$RUNS"
ELAPSED=$(( $(date +%s) - T0 ))

mkdir -p "$RES"
cp "$RUNS" "$RES/runs.jsonl"
cp "$CDF" "$RES/cdf.csv"
python3 "$PEER/report.py" --runs "$RES/runs.jsonl" --cdf "$RES/cdf.csv" --out "$RES" \
  --meta "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src cli || echo '+local changes'); $(date -u +%Y-%m-%d); $(nproc) cpus; nats-server $(nats-server --version | awk '{print $2}'); nats.c $(pkg-config --modversion libnats); moleculer $MOL_VER with nats.js $NATSJS_VER on node $(node --version); $ROUNDS rounds, $N1 requests with 1 in flight, $N64 with 64, $N_EVENTS events; measuring took ${ELAPSED} s"
echo "run.sh: wrote $RES/results.md and $RES/*.png" >&2
cat "$RES/results.md"
