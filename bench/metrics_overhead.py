#!/usr/bin/env python3
"""metrics_overhead.py - what `lucent run --http` costs the embedded pipeline.

Runs the same input through `lucent run` in four configurations, interleaved
(each repetition runs every configuration once, in a rotated order, so a
machine that gets busier or quieter affects them alike):

  off       no --http
  on        --http 127.0.0.1:0, never scraped
  scraped   --http, /metrics scraped every 1 s (a busy Prometheus)
  stress    --http, /metrics + /functions + /shards every 100 ms

Each run's time is the summary's "seconds" (submit of the first event to the
drain of the last, so process start and plugin loading are left out).  Prints
the median events/s of each configuration and its difference from `off`, and
the median CPU time (user + system, from wait4) per event: on a machine
shared with other work, wall-clock throughput moves with the neighbours, CPU
per event much less.

  bench/metrics_overhead.py --lucent build/lucent \
      --plugin build/examples/liborders.so --gen build/examples/orders_gen \
      [-n 200000] [--reps 7] [--shards 2] [--store file|memory]

Then it measures one scrape's cost directly: a `--http-hold` server that
has run the input answers --scrapes requests to each endpoint, and the CPU
time the lucent process spent (from /proc/PID/stat) is divided by their
number.  At one scrape a second, that cost over one second of CPU is the
largest share of the machine metrics can take from the pipeline.

Only loopback addresses are used; every wait is bounded.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape_loop(addr_box, stop, period, paths, counter):
    while not stop.wait(period):
        if not addr_box:
            continue
        for p in paths:
            try:
                OPENER.open("http://%s%s" % (addr_box[0], p), timeout=5).read()
                counter[0] += 1
            except Exception:
                pass


def run_once(a, inp, mode, tmp):
    cmd = [a.lucent, "run", "--plugin", a.plugin, "--input", inp,
           "--shards", str(a.shards), "--json", "--no-progress",
           "--log-format", "json"]
    if a.store == "file":
        db = os.path.join(tmp, "bench-%s.db" % mode)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.unlink(db + suffix)
        cmd += ["--store", db]
    if mode != "off":
        cmd += ["--http", "127.0.0.1:0"]
    errpath = os.path.join(tmp, "err-%s.log" % mode)
    err = open(errpath, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    addr_box, stop, counter = [], threading.Event(), [0]
    scraper = None
    if mode in ("scraped", "stress"):
        period = 1.0 if mode == "scraped" else 0.1
        paths = ["/metrics"] if mode == "scraped" else \
            ["/metrics", "/functions", "/shards"]
        scraper = threading.Thread(target=scrape_loop,
                                   args=(addr_box, stop, period, paths, counter))
        scraper.start()
        deadline = time.time() + 10
        while not addr_box and time.time() < deadline and proc.poll() is None:
            for line in open(errpath):
                j = json.loads(line)
                if j.get("msg") == "http listening":
                    addr_box.append(j["addr"])
            time.sleep(0.01)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    if scraper:
        scraper.join()
    err.close()
    if proc.returncode != 0:
        sys.exit("lucent run (%s) exited %d: %s" %
                 (mode, proc.returncode, open(errpath).read()))
    s = json.loads(out)
    cpu = ru.ru_utime + ru.ru_stime
    return s["events_in"] / s["seconds"], cpu * 1e6 / s["events_in"], counter[0]


def proc_cpu(pid):
    """user + system CPU seconds of a process so far."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def scrape_cost(a, inp, tmp):
    cmd = [a.lucent, "run", "--plugin", a.plugin, "--input", inp,
           "--shards", str(a.shards), "--json", "--log-format", "json",
           "--http", "127.0.0.1:0", "--http-hold"]
    errpath = os.path.join(tmp, "err-cost.log")
    err = open(errpath, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    addr, drained = None, False
    deadline = time.time() + 600
    while not drained and time.time() < deadline and proc.poll() is None:
        for line in open(errpath):
            j = json.loads(line)
            if j.get("msg") == "http listening":
                addr = j["addr"]
            if j.get("msg", "").startswith("input drained"):
                drained = True
        time.sleep(0.05)
    if not (addr and drained):
        proc.kill()
        sys.exit("scrape cost: the server did not come up")
    print("\n%-10s %8s %12s %12s %10s" %
          ("endpoint", "bytes", "wall ms", "cpu ms", "share@1/s"))
    try:
        for path in ("/metrics", "/functions", "/shards", "/readyz"):
            size = len(OPENER.open("http://%s%s" % (addr, path),
                                   timeout=5).read())
            c0, t0 = proc_cpu(proc.pid), time.time()
            for _ in range(a.scrapes):
                OPENER.open("http://%s%s" % (addr, path), timeout=5).read()
            c1, t1 = proc_cpu(proc.pid), time.time()
            cpu = (c1 - c0) / a.scrapes
            print("%-10s %8d %12.3f %12.3f %9.3f%%" %
                  (path, size, (t1 - t0) / a.scrapes * 1e3, cpu * 1e3,
                   cpu / os.cpu_count() * 100))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        err.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lucent", required=True)
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--store", choices=("file", "memory"), default="file")
    ap.add_argument("--scrapes", type=int, default=500,
                    help="requests per endpoint for the scrape cost (0: skip)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="lucent-bench-")
    try:
        inp = os.path.join(tmp, "in.jsonl")
        with open(inp, "w") as f:
            subprocess.run([a.gen, "-n", str(a.n), "--bad", "25", "--seed",
                            "5"], stdout=f, stderr=subprocess.DEVNULL,
                           check=True)
        modes = ["off", "on", "scraped", "stress"]
        rates = {m: [] for m in modes}
        cpus = {m: [] for m in modes}
        scrapes = {m: 0 for m in modes}
        for r in range(a.reps):
            order = modes[r % 4:] + modes[:r % 4]
            for m in order:
                rate, cpu, n = run_once(a, inp, m, tmp)
                rates[m].append(rate)
                cpus[m].append(cpu)
                scrapes[m] += n
            print("rep %d: %s" % (r + 1, "  ".join(
                "%s %.0f ev/s %.1f cpu-us/ev" % (m, rates[m][-1], cpus[m][-1])
                for m in modes)), flush=True)
        base = statistics.median(rates["off"])
        cbase = statistics.median(cpus["off"])
        print("\n%-8s %12s %9s %9s %14s %9s %8s" %
              ("mode", "median ev/s", "stdev", "vs off", "cpu us/event",
               "vs off", "scrapes"))
        for m in modes:
            med = statistics.median(rates[m])
            sd = statistics.stdev(rates[m]) if len(rates[m]) > 1 else 0
            cmed = statistics.median(cpus[m])
            print("%-8s %12.0f %9.0f %+8.1f%% %14.2f %+8.1f%% %8d" %
                  (m, med, sd, (med / base - 1) * 100, cmed,
                   (cmed / cbase - 1) * 100, scrapes[m]))
        if a.scrapes:
            scrape_cost(a, inp, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
