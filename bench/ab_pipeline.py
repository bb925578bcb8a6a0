#!/usr/bin/env python3
"""ab_pipeline.py - two builds of bench_pipeline, alternating, compared.

  bench/ab_pipeline.py OLD_BIN NEW_BIN [-p PAIRS] [-- bench_pipeline args]

Runs OLD and NEW one after the other PAIRS times (default 6), each with
`-r 1 --json` and the arguments after `--` (default: -n 100000 --shards
1,2,4,16,64 --stores memory,file).  A busy machine moves both runs of a
pair alike, so the table compares within runs and within pairs:

  rate/best   a config's paired rate (over the baseline run just before
              it) over the best shard count's of the same run and store
              (issue 18's ">= 90%")
  cpu/1shard  its paired CPU per event (over that baseline run's) over
              one shard's of the same run and store (issue 18's "<= 1.15x")
  new/old     NEW's CPU per event over OLD's in the same pair
  p50         submit -> stored, the median over the pairs

Each cell is the median over the pairs, with min..max.  The load average
before each pair is printed, so a reader can see what the machine did.
"""
import json
import os
import statistics
import subprocess
import sys


def run(binary, args):
    out = subprocess.run([binary, "-r", "1", "--json"] + args,
                         capture_output=True, text=True, check=True).stdout
    j = json.loads(out)
    return {c["config"]: c for c in j["configs"] if c.get("kind") == "pipeline"}


def derived(configs):
    """per config: (rate/best, cpu/1 shard) within one run and store"""
    by_store = {}
    for name, c in configs.items():
        by_store.setdefault(c["store"], []).append(c)
    res = {}
    for cs in by_store.values():
        best = max(c["ratio_paired_median"] for c in cs)
        one = min(cs, key=lambda c: c["shards"])["runs"][0]["cpu_ratio"]
        for c in cs:
            res[c["config"]] = (c["ratio_paired_median"] / best,
                                c["runs"][0]["cpu_ratio"] / one)
    return res


def cell(xs, fmt):
    return "%s (%s..%s)" % (fmt % statistics.median(xs), fmt % min(xs),
                            fmt % max(xs))


def main():
    argv = sys.argv[1:]
    extra = ["-n", "100000", "--shards", "1,2,4,16,64", "--stores",
             "memory,file"]
    if "--" in argv:
        k = argv.index("--")
        extra, argv = argv[k + 1:], argv[:k]
    pairs = 6
    if "-p" in argv:
        k = argv.index("-p")
        pairs = int(argv[k + 1])
        del argv[k:k + 2]
    if len(argv) != 2:
        sys.exit(__doc__)
    old_bin, new_bin = argv
    rows = {}  # config -> lists
    for i in range(pairs):
        load = os.getloadavg()[0]
        o, n = run(old_bin, extra), run(new_bin, extra)
        do, dn = derived(o), derived(n)
        print("pair %d (load %.1f): %s" % (i + 1, load, "  ".join(
            "%s %.2f->%.2f" % (k, o[k]["cpu_us_per_event"],
                               n[k]["cpu_us_per_event"]) for k in o)),
              file=sys.stderr)
        for k in o:
            r = rows.setdefault(k, {"ob": [], "nb": [], "oc": [], "nc": [],
                                    "cpu": [], "ocpu": [], "ncpu": [],
                                    "oeps": [], "neps": [],
                                    "op50": [], "np50": []})
            r["ob"].append(do[k][0] * 100)
            r["nb"].append(dn[k][0] * 100)
            r["oc"].append(do[k][1])
            r["nc"].append(dn[k][1])
            r["ocpu"].append(o[k]["cpu_us_per_event"])
            r["ncpu"].append(n[k]["cpu_us_per_event"])
            r["cpu"].append(n[k]["cpu_us_per_event"] /
                            o[k]["cpu_us_per_event"])
            r["oeps"].append(o[k]["eps_median"] / 1000)
            r["neps"].append(n[k]["eps_median"] / 1000)
            r["op50"].append(o[k]["p50_ns"] / 1e6)
            r["np50"].append(n[k]["p50_ns"] / 1e6)
    print("| config | k events/s old -> new | rate/best old -> new | "
          "cpu/1shard old -> new | CPU µs/event old -> new | new/old CPU | "
          "p50 ms old -> new |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k, r in rows.items():
        print("| %s | %s -> %s | %s -> %s | %s -> %s | %s -> %s | %s | "
              "%.1f -> %.1f |" % (
            k, cell(r["oeps"], "%.0f"), cell(r["neps"], "%.0f"),
            cell(r["ob"], "%.1f%%"), cell(r["nb"], "%.1f%%"),
            cell(r["oc"], "%.2fx"), cell(r["nc"], "%.2fx"),
            "%.2f" % statistics.median(r["ocpu"]),
            "%.2f" % statistics.median(r["ncpu"]), cell(r["cpu"], "%.2fx"),
            statistics.median(r["op50"]), statistics.median(r["np50"])))


if __name__ == "__main__":
    main()
