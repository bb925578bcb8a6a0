# test_observability.sh - `lucent run --http` end to end: /metrics parses
# with a real Prometheus text parser (and promtool when installed) and its
# counters equal the run's own summary exactly; /healthz; /readyz answers
# 503 naming the store while another process holds the database's write
# lock, and 200 again after; /functions and /shards; `lucent top --once`;
# every log line is JSON with time, level and msg.  Loopback only; every
# wait is bounded.
. "$(dirname "$0")/lib.sh"
npass=0
pass() { npass=$((npass + 1)); echo "ok - $*"; }

# The Prometheus parser is Debian's python3-prometheus-client, which lives
# in the system Python (a pyenv python3 may shadow it).
PY=
for p in python3 /usr/bin/python3; do
  if command -v "$p" > /dev/null && "$p" -c "import prometheus_client" 2> /dev/null; then
    PY=$p
    break
  fi
done
if [ -z "$PY" ]; then
  echo "SKIP: python3-prometheus-client is not installed (scripts/deps.sh installs it)"
  exit 77
fi

# get URL: body on stdout, HTTP status in $T/status.  No proxy, 5 s limit.
cat > "$T/get.py" <<'PY'
import sys, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    r = opener.open(sys.argv[1], timeout=5)
    code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
except Exception as e:
    code, body = 0, str(e).encode()
sys.stdout.buffer.write(body)
open(sys.argv[2], "w").write(str(code))
PY
get() { "$PY" "$T/get.py" "http://$ADDR$1" "$T/status"; }
status() { cat "$T/status"; }

# wait_for TRIES CMD...: runs CMD every 0.1 s until it succeeds.
wait_for() {
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}

"$LUCENT_GEN" -n 4000 --bad 10 --seed 11 > "$T/in.jsonl" 2> /dev/null
lines=$(grep -c . "$T/in.jsonl")

# ---- 1. a run that holds its endpoints open after the input is drained ----
"$LUCENT" run --plugin "$LUCENT_PLUGIN" --shards 3 --store "$T/ev.db" \
  --input "$T/in.jsonl" --http 127.0.0.1:0 --http-hold --json \
  > "$T/sum.json" 2> "$T/err.log" &
pid=$!
stop_lucent() { kill -TERM "$pid" 2> /dev/null || true; }
trap 'stop_lucent; rm -rf "$T"' EXIT

listening() { grep -q '"msg":"http listening"' "$T/err.log"; }
wait_for 100 listening || fail "no 'http listening' log line: $(cat "$T/err.log")"
ADDR=$("$PY" -c "
import json, sys
for l in open(sys.argv[1]):
    j = json.loads(l)
    if j['msg'] == 'http listening': print(j['addr']); break" "$T/err.log")
case "$ADDR" in 127.0.0.1:[1-9]*) ;; *) fail "addr '$ADDR' is not loopback with a port" ;; esac
pass "listening on $ADDR (port chosen by the kernel)"

# Scrape while it runs, until every input event is counted and decided.
counted() {
  get /metrics > "$T/m.txt" && [ "$(status)" = 200 ] || return 1
  "$PY" - "$T/m.txt" "$lines" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families as parse
v = {}
for fam in parse(open(sys.argv[1]).read()):
    for s in fam.samples:
        if s.name in ("lucent_events_in_total", "lucent_outcomes_total"):
            v[s.name] = v.get(s.name, 0) + s.value
n = int(sys.argv[2])
sys.exit(0 if v.get("lucent_events_in_total") == n and v.get("lucent_outcomes_total") == n else 1)
PY
}
wait_for 600 counted || fail "lucent_events_in_total never reached $lines"
drained() { grep -q '"msg":"input drained; serving until SIGINT or SIGTERM"' "$T/err.log"; }
wait_for 300 drained || fail "run never drained: $(tail -3 "$T/err.log")"
pass "/metrics counted all $lines input events"

# ---- 2. the final scrape: format, parser, promtool -------------------------
get /metrics > "$T/metrics.txt"
[ "$(status)" = 200 ] || fail "/metrics status $(status)"
get /functions > "$T/functions.json"
[ "$(status)" = 200 ] || fail "/functions status $(status)"
get /shards > "$T/shards.json"
[ "$(status)" = 200 ] || fail "/shards status $(status)"
"$PY" - "$T/metrics.txt" <<'PY' || fail "metrics do not parse"
import sys
from prometheus_client.parser import text_string_to_metric_families as parse
text = open(sys.argv[1]).read()
fams = {f.name: f for f in parse(text)}
want = {
    "lucent_function_executions": "counter", "lucent_function_completed": "counter",
    "lucent_function_failed": "counter", "lucent_function_retries": "counter",
    "lucent_function_timeouts": "counter",
    "lucent_function_duration_seconds": "histogram",
    "lucent_function_e2e_seconds": "histogram",
    "lucent_function_breaker_open": "gauge", "lucent_shard_in_flight": "gauge",
    "lucent_shard_queue_depth": "gauge", "lucent_shard_routed": "counter",
    "lucent_shard_forwarded": "counter", "lucent_shard_received": "counter",
    "lucent_shard_retries": "counter", "lucent_shard_outcomes": "counter",
    "lucent_events_in": "counter", "lucent_outcomes": "counter",
    "lucent_store_batches": "counter", "lucent_store_records": "counter",
    "lucent_store_errors": "counter", "lucent_bus_errors": "counter",
    "lucent_build_info": "gauge",
}
for name, typ in want.items():
    assert name in fams, name
    assert fams[name].type == typ, (name, fams[name].type)
# Histograms: cumulative, +Inf == _count, for every function.
for h in ("lucent_function_duration_seconds", "lucent_function_e2e_seconds"):
    series = {}
    for s in fams[h].samples:
        series.setdefault(s.labels["function"], []).append(s)
    assert len(series) == 7, series.keys()
    for fn, ss in series.items():
        buckets = [s for s in ss if s.name.endswith("_bucket")]
        count = [s.value for s in ss if s.name.endswith("_count")][0]
        les = [float(s.labels["le"]) for s in buckets]
        assert les == sorted(les) and les[-1] == float("inf"), les
        assert les[0] == 1e-06 and les[-2] == 10.0, les
        vals = [s.value for s in buckets]
        assert vals == sorted(vals), (fn, vals)
        assert vals[-1] == count, (fn, vals[-1], count)
assert text.endswith("\n")
print("parsed", len(fams), "families")
PY
if command -v promtool > /dev/null; then
  promtool check metrics < "$T/metrics.txt" || fail "promtool check metrics"
  pass "promtool check metrics"
fi
pass "/metrics parses (prometheus_client), histograms cumulative with +Inf == count"

# /healthz and /readyz while healthy.
[ "$(get /healthz)" = '{"status":"ok"}' ] && [ "$(status)" = 200 ] || fail "/healthz"
get /readyz > "$T/ready.json"
[ "$(status)" = 200 ] || fail "/readyz status $(status): $(cat "$T/ready.json")"
[ "$(json "$T/ready.json" "j['ready'] and all(c['ok'] for c in j['checks'].values())")" = True ] || fail "readyz body"
[ "$(json "$T/ready.json" "sorted(j['checks'])")" = "['bus', 'registry', 'shard', 'store']" ] || fail "readyz checks"
get /nope > /dev/null; [ "$(status)" = 404 ] || fail "404"
pass "/healthz 200, /readyz 200 with every check"

# /functions and /shards.
"$PY" - "$T/functions.json" "$T/shards.json" <<'PY' || fail "/functions or /shards"
import json, sys
f = json.load(open(sys.argv[1]))
names = [x["name"] for x in f["functions"]]
assert len(names) == 7 and "ReserveInventory" in names, names
for x in f["functions"]:
    st = x["stats"]
    assert x["strategy"]["type"] and x["events"], x
    assert st["duration_seconds"]["count"] == st["executions"], x["name"]
    assert len(st["breaker_open"]) == 3
s = json.load(open(sys.argv[2]))
assert [x["id"] for x in s["shards"]] == ["shard-0", "shard-1", "shard-2"]
assert all(x["local"] and x["in_flight"] == 0 and x["queue_depth"] == 0 for x in s["shards"])
assert s["intake"]["outcomes"]["rejected"] == 8
PY
pass "/functions (registry + stats), /shards (view + counters)"

# ---- 3. lucent top --once -------------------------------------------------
"$LUCENT" top --http "$ADDR" --once --interval 100 > "$T/top.txt" || fail "top exited $?"
for w in shard-0 shard-1 shard-2 intake ValidateOrder ReserveInventory \
         ScoreFraudRules ScoreFraudModel ProcessPayment SendNotification \
         UpdateCustomerProfile EXEC/S P99 BREAKER; do
  grep -q -- "$w" "$T/top.txt" || fail "top lacks $w: $(cat "$T/top.txt")"
done
expect_fail 1 "cannot reach lucent" "$LUCENT" top --http 127.0.0.1:1 --once
expect_fail 2 "--http is required" "$LUCENT" top --once
pass "top --once shows every shard and function; a dead address exits 1"

# ---- 4. /readyz is 503 while the store cannot be written -------------------
"$PY" - "$T/ev.db" > "$T/locker.out" 2>&1 <<'PY' &
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(20)   # killed by the test long before
PY
locker=$!
locked() { grep -q locked "$T/locker.out"; }
wait_for 100 locked || fail "could not lock the store: $(cat "$T/locker.out")"
not_ready() { get /readyz > "$T/ready.json"; [ "$(status)" = 503 ]; }
wait_for 50 not_ready || fail "/readyz stayed $(status) with the store locked: $(cat "$T/ready.json")"
[ "$(json "$T/ready.json" "j['ready']")" = False ] || fail "ready flag"
[ "$(json "$T/ready.json" "j['checks']['store']['ok']")" = False ] || fail "store check"
json "$T/ready.json" "j['checks']['store']['detail']" | grep -q "ev.db" || fail "store detail"
[ "$(json "$T/ready.json" "j['checks']['registry']['ok'] and j['checks']['bus']['ok'] and j['checks']['shard']['ok']")" = True ] || fail "other checks"
kill "$locker"; wait "$locker" 2> /dev/null || true
ready() { get /readyz > "$T/ready.json"; [ "$(status)" = 200 ]; }
wait_for 50 ready || fail "/readyz did not recover: $(cat "$T/ready.json")"
pass "/readyz 503 naming the store while it is locked, 200 after"

# ---- 5. SIGTERM: the summary, and metrics equal to it ----------------------
kill -TERM "$pid"
exited() { ! kill -0 "$pid" 2> /dev/null; }
wait_for 100 exited || fail "lucent did not stop on SIGTERM"
wait "$pid" || fail "lucent exited $?: $(tail -3 "$T/err.log")"
"$PY" - "$T/metrics.txt" "$T/sum.json" "$lines" <<'PY' || fail "metrics differ from the summary"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as parse
m = {}
for fam in parse(open(sys.argv[1]).read()):
    for s in fam.samples:
        m[(s.name, tuple(sorted(s.labels.items())))] = s.value
def get(name, **labels):
    return m[(name, tuple(sorted(labels.items())))]
j = json.load(open(sys.argv[2]))
n = int(sys.argv[3])
assert j["events_in"] == n == get("lucent_events_in_total"), j["events_in"]
for k, v in j["outcomes"].items():
    assert get("lucent_outcomes_total", outcome=k) == v, (k, v)
for k, v in j["emitted"].items():
    assert get("lucent_emitted_outcomes_total", outcome=k) == v, (k, v)
for f in j["functions"]:
    for field in ("executions", "completed", "failed", "retries", "timeouts"):
        got = get("lucent_function_%s_total" % field, function=f["name"])
        assert got == f[field], (f["name"], field, got, f[field])
    assert get("lucent_function_duration_seconds_count", function=f["name"]) == f["executions"]
for s in j["shards"]:
    for field in ("routed", "forwarded", "received", "retries"):
        assert get("lucent_shard_%s_total" % field, shard=s["id"]) == s[field], (s["id"], field)
    for origin, key in (("input", "outcomes"), ("emitted", "emitted")):
        for k, v in s[key].items():
            assert get("lucent_shard_outcomes_total", shard=s["id"], outcome=k, origin=origin) == v
for k, v in j["intake"]["outcomes"].items():
    assert get("lucent_shard_outcomes_total", shard="intake", outcome=k, origin="input") == v
assert get("lucent_store_errors_total") == 0 and get("lucent_bus_errors_total") == 0
assert get("lucent_store_batches_total") > 0 and get("lucent_store_records_total") > n
retries = sum(f["retries"] for f in j["functions"])
assert retries > 0, "the retry path did not run"
print("equal:", n, "events,", retries, "retries")
PY
pass "after SIGTERM: summary printed, /metrics equals it exactly"

# Every line the run logged is a JSON record, none per event at info.
"$PY" - "$T/err.log" <<'PY' || fail "log lines"
import json, sys
msgs = []
for line in open(sys.argv[1]):
    j = json.loads(line)
    assert {"time", "level", "msg"} <= j.keys(), j
    msgs.append(j["msg"])
for want in ("http listening", "run started", "run finished", "stopping on SIGTERM"):
    assert want in msgs, (want, msgs)
assert len(msgs) < 10, msgs
PY
pass "logs: one JSON object per line, a handful of records for $lines events"

# ---- 6. debug logs: explain decisions as records ---------------------------
head -300 "$T/in.jsonl" > "$T/small.jsonl"
"$LUCENT" run --plugin "$LUCENT_PLUGIN" --shards 2 --input "$T/small.jsonl" \
  --log-format json --log-level debug --json > /dev/null 2> "$T/debug.log"
"$PY" - "$T/debug.log" <<'PY' || fail "debug log lines"
import json, sys
levels, sel = {}, 0
for line in open(sys.argv[1]):
    j = json.loads(line)   # every line, or the test fails here
    assert isinstance(j["time"], str) and j["time"].endswith("Z"), j
    assert j["level"] in ("debug", "info", "warn", "error"), j
    levels[j["level"]] = levels.get(j["level"], 0) + 1
    if j["msg"] == "selection":
        sel += 1
        assert j["shard"].startswith("shard-") and j["event"] and j["chosen"], j
        assert "total=" in j["candidates"], j
assert levels.get("info", 0) >= 2 and sel > 100, (levels, sel)
PY
"$LUCENT" run --plugin "$LUCENT_PLUGIN" --input "$T/small.jsonl" \
  --log-level warn --json > /dev/null 2> "$T/quiet.log"
[ ! -s "$T/quiet.log" ] || fail "--log-level warn still logged: $(cat "$T/quiet.log")"
"$LUCENT" run --plugin "$LUCENT_PLUGIN" --input "$T/small.jsonl" \
  --log-format text --json > /dev/null 2> "$T/text.log"
grep -Eq '^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3} INFO  run finished events_in=300 ' "$T/text.log" \
  || fail "text format: $(cat "$T/text.log")"
pass "debug records for each decision, level filter, text format"

# ---- 7. failure paths --------------------------------------------------------
expect_fail 1 "bad address" "$LUCENT" run --plugin "$LUCENT_PLUGIN" --input "$T/small.jsonl" --http nonsense
expect_fail 2 "needs --http" "$LUCENT" run --plugin "$LUCENT_PLUGIN" --input "$T/small.jsonl" --http-hold
expect_fail 2 "--log-level wants" "$LUCENT" run --plugin "$LUCENT_PLUGIN" --input "$T/small.jsonl" --log-level loud
"$PY" -c "
import socket, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(20)" > "$T/port" &
holder=$!
have_port() { [ -s "$T/port" ]; }
wait_for 100 have_port || fail "no port"
expect_fail 1 "cannot serve" "$LUCENT" run --plugin "$LUCENT_PLUGIN" --input "$T/small.jsonl" --http "127.0.0.1:$(cat "$T/port")"
kill "$holder"; wait "$holder" 2> /dev/null || true
pass "bad address, --http-hold alone, bad level, port in use"
echo "$npass passed, 0 failed"
