# nats.sh - a real nats-server for integration tests (sourced; after lib.sh
# or on its own).
#
#   nats_start [ARGS...]   starts nats-server -a 127.0.0.1 -p <free port>
#                          -js -sd <temp dir> ARGS..., waits until it
#                          accepts connections; sets NATS_URL, NATS_PORT,
#                          NATS_PID, NATS_DIR (server log: $NATS_DIR/log)
#   nats_kill              kill -9 (a crash); the directory stays
#   nats_restart [SECS]    nats_kill, SECS down (default 0), then the same
#                          server again: same port, same -sd directory
#   nats_stop              stops it (by PID) and removes its directory
#
# The binary is $LUCENT_TEST_NATS_SERVER, else nats-server on PATH or in
# /usr/sbin; without one the test is skipped (exit 77).  The server is
# stopped when the test exits (chained EXIT trap), and where util-linux's
# setpriv exists it is started with --pdeathsig KILL, so that it dies with
# the test's shell even when that is killed.  One server per test script.

NATS_BIN=${LUCENT_TEST_NATS_SERVER:-}
if [ -z "$NATS_BIN" ]; then
  NATS_BIN=$(command -v nats-server 2>/dev/null || true)
  [ -n "$NATS_BIN" ] || [ ! -x /usr/sbin/nats-server ] || NATS_BIN=/usr/sbin/nats-server
fi
if [ -z "$NATS_BIN" ] || [ ! -x "$NATS_BIN" ]; then
  echo "skip: no nats-server (set LUCENT_TEST_NATS_SERVER)"
  exit 77
fi
NATS_URL= NATS_PORT= NATS_PID= NATS_DIR=
NATS_ARGS=()
_NATS_PRE=()
[ ! -x /usr/bin/setpriv ] || _NATS_PRE=(/usr/bin/setpriv --pdeathsig KILL)

_nats_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the recorded server; 0 once it accepts connections, 1 if it died
# or did not listen within 10 s.
_nats_spawn() {
  "${_NATS_PRE[@]}" "$NATS_BIN" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR" \
    "${NATS_ARGS[@]}" >> "$NATS_DIR/log" 2>&1 &
  NATS_PID=$!
  local i
  for i in $(seq 1 200); do
    kill -0 "$NATS_PID" 2>/dev/null || { wait "$NATS_PID" 2>/dev/null; NATS_PID=; return 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  kill -9 "$NATS_PID" 2>/dev/null; wait "$NATS_PID" 2>/dev/null; NATS_PID=
  return 1
}

nats_start() {
  NATS_ARGS=("$@")
  NATS_DIR=$(mktemp -d "${LUCENT_TEST_TMP:-/tmp}/nats.XXXXXX")
  local attempt
  for attempt in 1 2 3 4 5; do
    NATS_PORT=$(_nats_free_port)
    if _nats_spawn; then
      NATS_URL="nats://127.0.0.1:$NATS_PORT"
      return 0
    fi
  done
  echo "FAIL: nats-server did not start:" >&2
  tail -5 "$NATS_DIR/log" >&2
  exit 1
}

nats_kill() {
  [ -n "$NATS_PID" ] || return 0
  kill -9 "$NATS_PID" 2>/dev/null || true
  wait "$NATS_PID" 2>/dev/null || true
  NATS_PID=
}

nats_restart() {
  nats_kill
  sleep "${1:-0}"
  local i
  for i in $(seq 1 50); do
    _nats_spawn && return 0
    sleep 0.1 # the port may linger a moment
  done
  echo "FAIL: nats-server did not restart:" >&2
  tail -5 "$NATS_DIR/log" >&2
  exit 1
}

nats_stop() {
  if [ -n "$NATS_PID" ]; then
    kill "$NATS_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
      kill -0 "$NATS_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill -9 "$NATS_PID" 2>/dev/null || true
    wait "$NATS_PID" 2>/dev/null || true
    NATS_PID=
  fi
  [ -z "$NATS_DIR" ] || rm -rf "$NATS_DIR"
  NATS_DIR=
}

# Stop the server on any exit, then run whatever EXIT trap was there.
_nats_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT\$/\1/")
trap "nats_stop; $_nats_prev_trap" EXIT

# Helpers of the tests that run `lucent serve` shards.
SHARD_PIDS=() # the shards a test started: add each one's PID
cleanup_shards() { # stops them (SIGCONT for a frozen one, SIGTERM; by PID) and waits for them
  local p
  for p in "${SHARD_PIDS[@]}"; do
    kill -CONT "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
  done
  for p in "${SHARD_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  SHARD_PIDS=()
}
wait_view() { # wait_view ID "a,b,c": until shard ID logs that view (JSON logs in $T/ID.log)
  for _ in $(seq 1 $((100 * ${SLOW:-1}))); do
    grep -q "\"view\":\"$2\"" "$T/$1.log" 2>/dev/null && return 0
    sleep 0.1
  done
  local s logs=
  for s in $(echo "$2" | tr , ' '); do # every shard's word on why not
    logs+=$'\n'"--- $s:"$'\n'"$(tail -5 "$T/$s.log" 2>/dev/null)"
  done
  fail "shard $1 never saw view [$2]:$logs"
}

# start_serves "a b c" [serve args]: one `lucent serve` of the orders
# plugin per shard id (JSON logs in $T/ID.log, PIDs appended to
# SHARD_PIDS), then waits until each has logged the view of all of them.
start_serves() {
  local ids=$1 s
  shift
  for s in $ids; do
    "$LUCENT" serve --nats "$NATS_URL" --shard "$s" --plugin "$LUCENT_PLUGIN" \
      --log-format json "$@" >> "$T/$s.out" 2>> "$T/$s.log" &
    SHARD_PIDS+=($!)
  done
  for s in $ids; do wait_view "$s" "${ids// /,}"; done
}

count() { "$LUCENT" events --nats "$NATS_URL" --count; }

# Until the event store stops growing (chains of emitted events ended).
store_quiet() {
  local last=-1 now
  for _ in $(seq 1 240); do
    now=$(count)
    [ "$now" = "$last" ] && return 0
    last=$now
    sleep 0.5
  done
  fail "the event store never stopped growing"
}

# store_outcomes INPUT SECONDS [AFTER_SEQ]: until every input of INPUT has
# an outcome in the store (check_outcomes.py --wait-only); the store's
# events after AFTER_SEQ are left in $T/stored.jsonl.
store_outcomes() {
  local deadline=$((SECONDS + $2 * ${SLOW:-1})) missing=
  local check="python3 $(dirname "${BASH_SOURCE[0]}")/check_outcomes.py"
  while [ $SECONDS -lt $deadline ]; do
    store_quiet
    "$LUCENT" events --nats "$NATS_URL" --after "${3:-0}" > "$T/stored.jsonl"
    missing=$($check "$1" "$T/stored.jsonl" --wait-only)
    [ "$missing" = 0 ] && return 0
    sleep 1
  done
  fail "$missing inputs of $1 have no outcome after $2 s"
}
