#!/usr/bin/env bash
# bench/nats.sh - lucent's NATS mode against raw nats.c, in one run (issue 3).
#
#   bench/nats.sh [bench_nats options...]     e.g. -r 5, -n 100000
#
# Builds lucent in Release (build-bench/), starts its own nats-server with
# JetStream on a free loopback port and a temporary store directory, runs
# build-bench/bench/bench_nats (raw baselines, then lucent serve processes
# it starts and stops itself), and stops the server by its PID at the end,
# whatever happens.  The Markdown table goes to stdout, progress to stderr,
# one JSON line per run to $OUT/nats-runs.jsonl (OUT defaults to a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-bench}

command -v nats-server >/dev/null || { echo "nats.sh: nats-server is missing (scripts/deps.sh installs it)" >&2; exit 1; }
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLUCENT_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j2 --target lucent_cli bench_nats bench_noop >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/lucent-nats-bench.XXXXXX")
OUT=${OUT:-$TMP}
SERVER_PID=
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP/js"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats-server -a 127.0.0.1 -p "$PORT" -js -sd "$TMP/js" >"$TMP/nats-server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/nats-server.log" >&2; exit 1; }
  sleep 0.05
done
echo "nats.sh: nats-server $(nats-server --version | awk '{print $2}') pid $SERVER_PID on 127.0.0.1:$PORT, store $TMP/js; commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src cli || echo ' + uncommitted changes in src/ cli/')" >&2

"$BUILD/bench/bench_nats" suite --nats "nats://127.0.0.1:$PORT" \
  --lucent "$BUILD/lucent" --plugin "$BUILD/bench/libbench_noop.so" \
  --server-pid "$SERVER_PID" --logdir "$TMP" --json "$OUT/nats-runs.jsonl" "$@"
