#!/usr/bin/env python3
"""report.py - results.md and PNG plots from bench/peer/run.sh's raw data.

  report.py --runs runs.jsonl --cdf cdf.csv --out DIR [--meta TEXT]

runs.jsonl: one JSON object per run (bench_nats, moleculer_bench.js,
bullmq_bench.js and kill_bench.js print the same fields).  cdf.csv:
system,inflight,round,quantile,latency_us.  Medians over the rounds with
min..max; lucent-vs-peer ratios are taken per round (the systems measured
minutes apart in the same round) and their median (min..max) reported.
Plots are drawn by gnuplot.
"""
import argparse
import collections
import json
import os
import statistics
import subprocess

NAMES = {"lucent": "lucent", "moleculer": "Moleculer", "bullmq": "BullMQ",
         "raw": "raw NATS"}
PEERS = ("moleculer", "bullmq")


def med(v):
    return statistics.median(v) if v else float("nan")


def spread(v, fmt):
    if not v:
        return "-"
    return f"{fmt(med(v))} ({fmt(min(v))}..{fmt(max(v))})"


def us(x):
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def rate(x):
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def pct(x):
    return f"{100 * x:.1f}%"


def cnt(x):
    return f"{x:.0f}"


def secs(x):
    return f"{x:.1f} s"


def cpu1(x):
    return f"{x:.0f} µs"


def cpu_total(r):
    f = [r.get(k) for k in ("cpu_client_us", "cpu_serve_us", "cpu_server_us")]
    if any(x is None for x in f):
        return None
    return sum(x for x in f if x >= 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True)
    ap.add_argument("--cdf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--meta", default="")
    a = ap.parse_args()

    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    for r in runs:
        t = cpu_total(r)
        if t is not None:
            r["cpu_total_us"] = t
    by = collections.defaultdict(dict)  # (system, scenario) -> round -> run
    for r in runs:
        by[(r["system"], r["scenario"])][r["round"]] = r

    def ok(r, field):
        return (r.get("errors", 0) == 0 or field == "share") and \
            r.get(field) is not None

    def vals(system, scenario, field):
        if not scenario:
            return []
        return [r[field] for r in by[(system, scenario)].values()
                if ok(r, field)]

    def paired(sys_a, sc_a, sys_b, sc_b, field):
        if not sc_a or not sc_b:
            return []
        ra, rb = by[(sys_a, sc_a)], by[(sys_b, sc_b)]
        out = []
        for k in sorted(set(ra) & set(rb)):
            if not ok(ra[k], field) or not ok(rb[k], field):
                continue
            x, y = ra[k][field], rb[k][field]
            if x and y:
                out.append(x / y)
        return out

    def ratio_cell(pr):
        return (f"**{med(pr):.2f}x** ({min(pr):.2f}..{max(pr):.2f})"
                if pr else "-")

    errors = [r for r in runs if r.get("errors")]
    rows = []

    # sc: {system: scenario} (None: not measured / not comparable);
    # target/limit: against Moleculer (issue 5's).
    def row(name, field, fmt, sc, target="-", better="low", limit=0):
        cells = [name]
        for s in ("lucent", "moleculer", "bullmq", "raw"):
            cells.append(spread(vals(s, sc.get(s), field), fmt)
                         if sc.get(s) else "-")
        prs = {p: paired("lucent", sc.get("lucent"), p, sc.get(p), field)
               for p in PEERS}
        for p in PEERS:
            cells.append(ratio_cell(prs[p]))
        pr = prs["moleculer"]
        met = pr and ((med(pr) <= limit) if better == "low"
                      else (med(pr) >= limit))
        cells.append(target)
        cells.append(("met" if met else "**missed**") if target != "-"
                     else "-")
        rows.append(cells)

    rr = {"lucent": "rr1", "moleculer": "rr1", "bullmq": "rr1", "raw": "rr1"}
    rr64 = dict(rr, lucent="rr64", moleculer="rr64", bullmq="rr64",
                raw="rr64")
    row("1. request/response, 1 in flight: p50", "p50_us", us, rr)
    row("1. request/response, 1 in flight: p99", "p99_us", us, rr,
        "lucent <= 0.2x Moleculer", "low", 0.2)
    row("1. request/response, 1 in flight: p999", "p999_us", us, rr)
    row("2. request/response, 64 in flight: req/s", "rate", rate, rr64,
        "lucent >= 1.5x Moleculer", "high", 1.5)
    # lucent's opt-in executed replies (issue 18): the function has
    # returned, the result is stored after the reply.
    if by[("lucent", "rr1-executed")]:
        rx = dict(rr, lucent="rr1-executed")
        rx64 = dict(rr64, lucent="rr64-executed")
        row("1x. the same, lucent --exec-reply executed: p50", "p50_us", us,
            rx, "lucent <= 1x Moleculer", "low", 1.0)
        row("1x. the same, lucent --exec-reply executed: p99", "p99_us", us,
            rx, "lucent <= 0.5x Moleculer", "low", 0.5)
        row("2x. the same, lucent --exec-reply executed: req/s", "rate",
            rate, rx64, "lucent >= 1.2x Moleculer", "high", 1.2)
    row("3. keyed events to 2 workers: lucent at-most-once vs emit, "
        "events/s", "rate", rate,
        {"lucent": "events-amo", "moleculer": "events"},
        "lucent >= 2x Moleculer", "high", 2.0)
    row("3. keyed events to 2 workers: lucent at-least-once vs emit and "
        "BullMQ, events/s", "rate", rate,
        {"lucent": "events-alo", "moleculer": "events", "bullmq": "events"},
        "lucent >= 0.5x Moleculer", "high", 0.5)
    row("3. keyed events, lucent at-least-once: CPU per event, whole system",
        "cpu_total_us", cpu1,
        {"lucent": "events-alo", "moleculer": "events", "bullmq": "events"})
    lk = vals("lucent", "keymove", "share")
    mk = vals("moleculer", "keymove", "share")
    ideal = 1 / 3
    rows.append(["4. key movement, 2 -> 3 workers, 10k keys: share moved "
                 "(ideal 33.3%)", spread(lk, pct), spread(mk, pct), "-", "-",
                 f"**{med(lk) / ideal:.2f}x** ideal (Moleculer "
                 f"{med(mk) / ideal:.2f}x)" if lk and mk else "-", "-",
                 "lucent <= 1.1x ideal",
                 ("met" if lk and med(lk) <= 1.1 * ideal else "**missed**")])
    kill = {"lucent": "kill", "bullmq": "kill"}
    have_kill = by[("lucent", "kill")] or by[("bullmq", "kill")]
    if have_kill:
        row("5. kill -9 of a worker: events lost", "lost", cnt, kill)
        row("5. kill -9 of a worker: events stored twice", "stored_twice",
            cnt, kill)
        row("5. kill -9 of a worker: events executed twice",
            "executed_twice", cnt, kill)
        row("5. kill -9 of a worker: executions out of per-key order",
            "out_of_order", cnt, kill)
        row("5. kill -9 of a worker: first executions out of per-key order",
            "out_of_order_first", cnt, kill)
        row("5. kill -9 of a worker: time to finish", "finish_s", secs, kill)

    os.makedirs(a.out, exist_ok=True)
    md = []
    md.append("# lucent vs Moleculer and BullMQ\n")
    md.append(f"Generated by `bench/peer/run.sh` ({a.meta}).\n")
    md.append("Medians over the rounds, (min..max). The ratio columns are "
              "lucent / peer, computed per round (the systems ran minutes "
              "apart in the same round), median (min..max): below 1 is "
              "better for lucent in latency, CPU and time rows, above 1 in "
              "rate rows. Moleculer and lucent share one nats-server; "
              "BullMQ runs on its own redis-server (AOF, fsync every "
              "second). \"raw NATS\" is nats.c request/reply against a "
              "responder that does nothing, for reference. The targets are "
              "issue 5's (issue 18's for the executed rows), against "
              "Moleculer.\n")
    md.append("| scenario | lucent | Moleculer | BullMQ | raw NATS | "
              "lucent / Moleculer | lucent / BullMQ | target | |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in rows:
        md.append("| " + " | ".join(r) + " |")

    md.append("\nCPU µs per request or event (median over rounds): client "
              "process / worker or serve processes / server (nats-server; "
              "redis-server with the AOF rewrites it forked) = total.\n")
    md.append("| scenario | lucent | Moleculer | BullMQ | raw NATS |")
    md.append("|---|---:|---:|---:|---:|")
    for name, sc in [("1 in flight", rr), ("64 in flight", rr64),
                     ("keyed events, lucent at-most-once",
                      {"lucent": "events-amo", "moleculer": "events"}),
                     ("keyed events, lucent at-least-once",
                      {"lucent": "events-alo", "moleculer": "events",
                       "bullmq": "events"})]:
        def cpu(system):
            s = sc.get(system)
            if not s or not by[(system, s)]:
                return "-"
            f = [med(vals(system, s, k)) for k in
                 ("cpu_client_us", "cpu_serve_us", "cpu_server_us",
                  "cpu_total_us")]
            parts = " / ".join(f"{x:.1f}" if x >= 0 else "-" for x in f[:3])
            return f"{parts} = {f[3]:.1f}"
        md.append(f"| {name} | {cpu('lucent')} | {cpu('moleculer')} "
                  f"| {cpu('bullmq')} | {cpu('raw')} |")

    if have_kill:
        md.append("\nkill -9, per round: when worker-1 was killed (once a "
                  "third of the events had a stored result, lucent, or had "
                  "run, BullMQ) and how many executions were logged by "
                  "then; it was started again 3 s later. Times from the "
                  "first publish.\n")
        md.append("| round | lucent: killed after | lucent: finished | "
                  "lucent: all acked | BullMQ: killed after | "
                  "BullMQ: finished |")
        md.append("|---:|---:|---:|---:|---:|---:|")

        def when(r, field):
            v = r.get(field)
            return "-" if v is None else f"{v:.2f} s"
        for k in sorted(set(by[("lucent", "kill")]) |
                        set(by[("bullmq", "kill")])):
            cells = [str(k)]
            for s in ("lucent", "bullmq"):
                r = by[(s, "kill")].get(k, {})
                n = r.get("n")
                cells.append(f"{r.get('executed_at_kill', 0)} of {n} at "
                             f"{when(r, 'kill_at_s')}" if n else "-")
                cells.append(when(r, "finish_s"))
                if s == "lucent":
                    cells.append(when(r, "settled_s"))
            md.append("| " + " | ".join(cells) + " |")
        cfgs = sorted({f"{NAMES[r['system']]}: {r['config']}"
                       for r in runs if r["scenario"] == "kill"
                       and r.get("config")})
        md.append("\n" + "; ".join(cfgs) + ".")
    if errors:
        md.append("\n**Runs with errors** (left out of the medians):\n")
        for r in errors:
            md.append(f"- {r['system']} {r['scenario']} round {r['round']}: "
                      f"{r.get('errors')} errors, {r.get('why', '')}")
    md.append("\n![latency, 1 in flight](latency_1.png)\n")
    md.append("![latency, 64 in flight](latency_64.png)\n")
    md.append("![throughput](throughput.png)\n")
    if have_kill:
        md.append("![kill -9 of a worker](kill.png)\n")
    open(os.path.join(a.out, "results.md"), "w").write("\n".join(md) + "\n")

    # ---- plots ----------------------------------------------------------
    cdf = collections.defaultdict(list)  # (system, inflight, q) -> [lat]
    for l in open(a.cdf):
        p = l.strip().split(",")
        if len(p) == 5:
            cdf[(p[0], int(p[1]), float(p[3]))].append(float(p[4]))
    names = {"lucent": "lucent exec",
             "lucent-executed": "lucent exec, reply once executed",
             "moleculer": "Moleculer call",
             "bullmq": "BullMQ add + waitUntilFinished",
             "raw": "raw NATS request/reply"}
    for inflight in (1, 64):
        dat = os.path.join(a.out, f"latency_{inflight}.dat")
        systems = [s for s in ("lucent", "lucent-executed", "moleculer",
                               "bullmq", "raw")
                   if any(k[0] == s and k[1] == inflight for k in cdf)]
        with open(dat, "w") as f:
            for system in systems:
                f.write(f'"{names[system]}"\n')
                for (s, i, q), v in sorted(cdf.items()):
                    if s == system and i == inflight and q < 1.0:
                        f.write(f"{1 / (1 - q):.6g} {med(v):.3f} {q}\n")
                f.write("\n\n")
        gp = f"""
set terminal pngcairo size 900,540 font "sans,10"
set output "{a.out}/latency_{inflight}.png"
set title "Request/response latency, {inflight} in flight (median of the rounds per percentile)"
set logscale x
set logscale y
set xlabel "percentile"
set ylabel "latency (µs)"
set xtics ("0%%" 1, "50%%" 2, "90%%" 10, "99%%" 100, "99.9%%" 1000, "99.99%%" 10000)
set grid
set key top left
plot for [i=0:{len(systems) - 1}] "{dat}" index i using 1:2 with linespoints title columnheader(1) lw 2
"""
        subprocess.run(["gnuplot"], input=gp.encode(), check=True)
        os.remove(dat)

    bars = [("lucent exec\\n64 in flight", "lucent", "rr64", 1),
            ("lucent exec\\nexecuted\\n64 in flight", "lucent",
             "rr64-executed", 1),
            ("Moleculer\\ncall\\n64 in flight", "moleculer", "rr64", 2),
            ("BullMQ add +\\nwaitUntilFinished\\n64 in flight", "bullmq",
             "rr64", 4),
            ("raw NATS\\nrequest/reply\\n64 in flight", "raw", "rr64", 3),
            ("lucent keyed\\nevents\\nat-most-once", "lucent", "events-amo",
             1),
            ("lucent keyed\\nevents\\nat-least-once", "lucent", "events-alo",
             1),
            ("Moleculer\\nkeyed emit", "moleculer", "events", 2),
            ("BullMQ keyed\\njobs, 16 queues", "bullmq", "events", 4)]
    dat = os.path.join(a.out, "throughput.dat")
    with open(dat, "w") as f:
        for i, (label, system, sc, color) in enumerate(bars):
            v = vals(system, sc, "rate")
            if v:
                f.write(f'{i} {med(v):.0f} {min(v):.0f} {max(v):.0f} {color} '
                        f'"{label}"\n')
    gp = f"""
set terminal pngcairo size 1200,560 font "sans,10"
set output "{a.out}/throughput.png"
set title "Throughput, median of the rounds (bars: min..max; log scale)"
set ylabel "requests or events per second"
set style fill solid 0.6 border -1
set boxwidth 0.6
set logscale y
set yrange [100:*]
set grid ytics mytics
set xtics nomirror
set bmargin 6
unset key
set palette defined (1 "#1f77b4", 2 "#ff7f0e", 3 "#7f7f7f", 4 "#2ca02c")
unset colorbox
set cbrange [1:4]
plot "{dat}" using 1:2:5:xtic(6) with boxes lc palette, \\
     "{dat}" using 1:2:3:4 with yerrorbars lc rgb "black" lw 1.5 pt 7 ps 0.4
"""
    subprocess.run(["gnuplot"], input=gp.encode(), check=True)
    os.remove(dat)

    if not have_kill:
        return
    # kill -9: time to finish, and the counts, per system
    dat = os.path.join(a.out, "kill.dat")
    counts = [("lost", "lost"), ("stored twice", "stored_twice"),
              ("executed twice", "executed_twice"),
              ("executions out\\nof per-key order", "out_of_order"),
              ("first executions\\nout of order", "out_of_order_first")]

    def triple(system, field):
        v = vals(system, "kill", field)
        return (f"{med(v):.3f} {min(v):.3f} {max(v):.3f}" if v
                else "NaN NaN NaN")
    with open(dat, "w") as f:
        f.write(f'"time to finish (s)" {triple("lucent", "finish_s")} '
                f'{triple("bullmq", "finish_s")}\n\n\n')
        for label, field in counts:
            f.write(f'"{label}" {triple("lucent", field)} '
                    f'{triple("bullmq", field)}\n')
    gp = f"""
set terminal pngcairo size 1100,480 font "sans,10"
set output "{a.out}/kill.png"
set multiplot title "kill -9 of one of 2 workers a third of the way, back 3 s later (median of the rounds; bars: min..max)"
set style data histograms
set style histogram errorbars gap 1 lw 1.5
set style fill solid 0.6 border -1
set grid ytics
set xtics nomirror
set yrange [0:*]
set key top left
set origin 0,0
set size 0.3,0.94
set title "time to finish (s)"
plot "{dat}" index 0 using 2:3:4:xtic(1) title "lucent" lc rgb "#1f77b4", \\
     "" index 0 using 5:6:7 title "BullMQ" lc rgb "#2ca02c"
set origin 0.3,0
set size 0.7,0.94
set title "events (of N) lost, stored twice, executed twice; executions out of per-key order"
set bmargin 4
plot "{dat}" index 1 using 2:3:4:xtic(1) title "lucent" lc rgb "#1f77b4", \\
     "" index 1 using 5:6:7 title "BullMQ" lc rgb "#2ca02c"
unset multiplot
"""
    subprocess.run(["gnuplot"], input=gp.encode(), check=True)
    os.remove(dat)


if __name__ == "__main__":
    main()
