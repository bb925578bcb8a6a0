#!/usr/bin/env bash
# test_busy.sh - outcomes do not depend on how busy the machine is.  The
# orders example runs beside three CPU hogs (more runnable threads than
# cores): its functions' deadlines count their own CPU time, not the
# wall clock, so not one of them times out, and the outcomes are the same
# as on an idle machine (same input, same seed).
. "$(dirname "$0")/../integ/lib.sh"
N=${LUCENT_TEST_BUSY_EVENTS:-20000}

"$LUCENT_GEN" -n "$N" --seed 21 > "$T/in.jsonl" 2>/dev/null
run() {
  "$LUCENT" run --plugin "$LUCENT_PLUGIN" --shards 4 --seed 5 --json \
    --input "$T/in.jsonl" > "$T/$1.json" || fail "run $1"
}
run idle
HOGS=()
trap 'for p in "${HOGS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"' EXIT
for _ in 1 2 3; do
  timeout 300 sh -c 'while :; do :; done' &
  HOGS+=($!)
done
run busy
for p in "${HOGS[@]}"; do kill "$p" 2>/dev/null || true; done
python3 - "$T/idle.json" "$T/busy.json" <<'PY'
import json, sys
idle, busy = (json.load(open(f)) for f in sys.argv[1:3])
t = {f["name"]: f["timeouts"] for f in busy["functions"]}
assert sum(t.values()) == 0, "timeouts on a busy machine: %s" % t
assert busy["balanced"], "books"
assert busy["outcomes"] == idle["outcomes"], (idle["outcomes"], busy["outcomes"])
PY
pass "$N orders beside 3 CPU hogs: 0 timeouts, the same outcomes as idle"
