#!/usr/bin/env bash
# bench/nats.sh - lucent's NATS mode against raw nats.c, in one run (issue 3).
#
#   bench/nats.sh [suite|order|partitions|events|rr] [bench_nats options...]
#                                             e.g. -r 5, -n 100000
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
trap 'exit 130' INT TERM
# The tests' helper: a free loopback port, a temporary store directory, and
# the server stopped by its PID on any exit.
. tests/integ/nats.sh
nats_start
echo "nats.sh: nats-server $(nats-server --version | awk '{print $2}') pid $NATS_PID on 127.0.0.1:$NATS_PORT, store $NATS_DIR; commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src cli || echo ' + uncommitted changes in src/ cli/')" >&2

CMD=suite
case "${1:-}" in suite|order|partitions|events|rr) CMD=$1; shift ;; esac
"$BUILD/bench/bench_nats" "$CMD" --nats "$NATS_URL" \
  --lucent "$BUILD/lucent" --plugin "$BUILD/bench/libbench_noop.so" \
  --server-pid "$NATS_PID" --logdir "$TMP" --json "$OUT/nats-runs.jsonl" "$@"
