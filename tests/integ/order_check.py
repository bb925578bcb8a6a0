#!/usr/bin/env python3
"""order_check.py - inputs for the order tests, and what the executions say.

  order_check.py gen N KEYS SEED > in.jsonl
      N events: 50% Keyed (hash_based by data.k, 500 keys "k-<i>"; one in
      five emits a KeyedChild), 20% Sticky (sticky_session by data.u.id,
      keys "u-<i>"), 25% Plain (round_robin, 200 subjects "p-<i>"), 5%
      Spread (load_balanced, 50 subjects "q-<i>").  Keyed and Sticky
      events get subjects that have nothing to do with their keys (random
      "s-<0..999>").  data.seq counts per key (Keyed, Sticky) or per
      subject (Plain, Spread) from 1, in publish order.

  order_check.py expect in.jsonl
      executions a run must show at least: every input once, plus the
      children.

  order_check.py count LOGDIR
      distinct executions logged so far (re-executions not counted).

  order_check.py report LOGDIR
      one JSON object: per type, executions (log lines), distinct inputs,
      re-executions (lines beyond the first of one input) and inversions:
      executions whose seq is below a seq already executed for their key
      or subject, in execution order (CLOCK_MONOTONIC across processes).
      first_inversions counts only first executions (an input that had
      never run ran after a later one of its key), so that a replay of old
      inputs and a new input out of order can be told apart.  KeyedChild
      is grouped by (the shard that ran its cause, key): the order an
      emitting shard promises.
"""
import glob
import json
import random
import sys


def gen(n, keys, seed):
    rnd = random.Random(seed)
    seqs = {}
    out = sys.stdout
    for i in range(n):
        r = rnd.random()
        if r < 0.50:
            t, k = "Keyed", "k-%d" % rnd.randrange(keys)
        elif r < 0.70:
            t, k = "Sticky", "u-%d" % rnd.randrange(keys)
        elif r < 0.95:
            t, k = "Plain", "p-%d" % rnd.randrange(200)
        else:
            t, k = "Spread", "q-%d" % rnd.randrange(50)
        seqs[(t, k)] = s = seqs.get((t, k), 0) + 1
        ev = {"specversion": "1.0", "id": "o-%d" % i, "type": t,
              "source": "/order-test"}
        if t in ("Keyed", "Sticky"):
            ev["subject"] = "s-%d" % rnd.randrange(1000)
            data = {"k": k, "seq": s}
            if t == "Sticky":
                data["u"] = {"id": k}
            elif rnd.randrange(5) == 0:
                data["emit"] = True
        else:
            ev["subject"] = k
            data = {"seq": s}
        ev["data"] = data
        out.write(json.dumps(ev, separators=(",", ":")) + "\n")


def expect(path):
    n = 0
    for line in open(path):
        e = json.loads(line)
        n += 1 + (1 if e["data"].get("emit") else 0)
    print(n)


def read(logdir):
    rows = []
    for f in glob.glob(logdir + "/*.log"):
        for line in open(f):
            p = line.split()
            if len(p) != 6:
                continue  # a line cut by a kill -9
            rows.append((int(p[0]), p[1], p[2], int(p[3]), int(p[4]), p[5]))
    rows.sort()
    return rows


def count(logdir):
    print(len({(r[1], r[2], r[3]) for r in read(logdir)}))


def report(logdir):
    rows = read(logdir)
    # The shard that ran each Keyed input (its last execution).
    ran_on = {(r[2], r[3]): r[5] for r in rows if r[1] == "Keyed"}
    res = {}
    best = {}
    seen = set()
    for _, t, key, seq, _attempt, shard in rows:
        g = res.setdefault(t, {"executions": 0, "inputs": 0,
                               "reexecutions": 0, "inversions": 0,
                               "first_inversions": 0, "keys": 0})
        g["executions"] += 1
        first = (t, key, seq) not in seen
        if not first:
            g["reexecutions"] += 1
        else:
            seen.add((t, key, seq))
            g["inputs"] += 1
        group = (t, key)
        if t == "KeyedChild":
            group = (t, ran_on.get((key, seq), "?"), key)
        hi = best.get(group)
        if hi is None:
            g["keys"] += 1
        elif seq < hi:
            g["inversions"] += 1
            if first:  # a new event ran after a later one of its key
                g["first_inversions"] += 1
        if hi is None or seq > hi:
            best[group] = seq
    print(json.dumps(res, sort_keys=True))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "gen":
        gen(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "expect":
        expect(sys.argv[2])
    elif cmd == "count":
        count(sys.argv[2])
    elif cmd == "report":
        report(sys.argv[2])
    else:
        sys.exit("unknown command " + cmd)
