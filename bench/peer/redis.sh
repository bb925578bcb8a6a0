# redis.sh - a private redis-server for bench/peer/run.sh (sourced), in the
# manner of tests/integ/nats.sh.
#
#   redis_start   starts redis-server on 127.0.0.1:<free port> with AOF
#                 (appendonly yes, appendfsync everysec), no RDB snapshots,
#                 its files in a temporary directory; waits until it answers
#                 PING; sets REDIS_PORT, REDIS_PID, REDIS_DIR (log:
#                 $REDIS_DIR/log)
#   redis_stop    stops it by PID (SIGTERM, SIGKILL after 10 s) and removes
#                 its directory
#
# The server is stopped when the script exits (chained EXIT trap), and
# where util-linux's setpriv exists it is started with --pdeathsig KILL, so
# that it dies with the script's shell even when that is killed.

REDIS_BIN=${REDIS_SERVER:-$(command -v redis-server 2>/dev/null || true)}
REDIS_PORT= REDIS_PID= REDIS_DIR=
_REDIS_PRE=()
[ ! -x /usr/bin/setpriv ] || _REDIS_PRE=(/usr/bin/setpriv --pdeathsig KILL)

_redis_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Is the server at $REDIS_PORT answering PING?  (bash's /dev/tcp, no client)
_redis_ping() {
  local r
  { exec 9<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&9
  read -r -t 1 r <&9 || r=
  exec 9<&- 9>&-
  [[ $r == +PONG* ]]
}

redis_start() {
  [ -n "$REDIS_BIN" ] || { echo "redis.sh: no redis-server (apt-get install redis-server)" >&2; exit 1; }
  REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/peer-redis.XXXXXX")
  local attempt i
  for attempt in 1 2 3 4 5; do
    REDIS_PORT=$(_redis_free_port)
    "${_REDIS_PRE[@]}" "$REDIS_BIN" --bind 127.0.0.1 --port "$REDIS_PORT" \
      --dir "$REDIS_DIR" --appendonly yes --appendfsync everysec --save '' \
      --daemonize no --protected-mode yes --maxmemory-policy noeviction \
      --logfile "$REDIS_DIR/log" >/dev/null 2>&1 &
    REDIS_PID=$!
    for i in $(seq 1 200); do
      kill -0 "$REDIS_PID" 2>/dev/null || break
      _redis_ping && return 0
      sleep 0.05
    done
    kill -9 "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; REDIS_PID=
  done
  echo "redis.sh: redis-server did not start:" >&2
  tail -5 "$REDIS_DIR/log" >&2
  exit 1
}

redis_stop() {
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 200); do
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill -9 "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
  fi
  [ -z "$REDIS_DIR" ] || rm -rf "$REDIS_DIR"
  REDIS_DIR=
}

_redis_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '\(.*\)' EXIT\$/\1/")
trap "redis_stop; $_redis_prev_trap" EXIT
