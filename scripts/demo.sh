#!/usr/bin/env bash
# demo.sh - installs what is missing, builds lucent, and runs the orders
# example embedded (4 shard threads, SQLite event store, no server):
# 100,000 generated events with a few bad lines.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
mkdir -p demo
./build/examples/orders_gen -n "${EVENTS:-100000}" --bad 25 --seed 1 > demo/orders.jsonl
rm -f demo/orders.db demo/orders.db-wal demo/orders.db-shm
echo "+ lucent run --plugin build/examples/liborders.so --shards 4 --store demo/orders.db --input demo/orders.jsonl"
./build/lucent run --plugin build/examples/liborders.so --shards 4 \
  --store demo/orders.db --input demo/orders.jsonl
echo
echo "+ lucent events --store demo/orders.db --type lucent.Rejected --limit 2"
./build/lucent events --store demo/orders.db --type lucent.Rejected --limit 2
echo
cid=$(head -1 demo/orders.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["correlationid"])')
echo "+ lucent events --store demo/orders.db --correlation $cid   (one order's whole chain)"
./build/lucent events --store demo/orders.db --correlation "$cid" |
  python3 -c 'import json,sys
for l in sys.stdin:
    e = json.loads(l); print("  %-28s %-8s %s" % (e["type"], e.get("shardid", ""), e["id"]))'
