#!/usr/bin/env python3
"""floor_profile.py - where the embedded pipeline's CPU per event goes.

Reads `perf script` output of a `perf record --call-graph dwarf` run of
bench_pipeline and puts every sample of the timed pipeline into one step
of the embedded floor table (bench/README.md): parse, route, queue
hand-offs, execute, build result, store, report + free, other.  A sample
belongs to the innermost frame of its stack that names a step; samples of
the baseline, of setup and teardown, and of the bench's own checks are
left out.

    cmake -S . -B build-prof -DCMAKE_BUILD_TYPE=Release \\
        -DCMAKE_C_FLAGS="-g -fno-omit-frame-pointer" -DLUCENT_BUILD_TESTS=OFF
    cmake --build build-prof -j --target bench_pipeline
    perf record -F 2000 --call-graph dwarf,32768 -o p.data \\
        build-prof/bench/bench_pipeline -n 100000 -r 3 --shards 1 --stores file
    perf script -i p.data -F comm,tid,ip,sym,dso | bench/floor_profile.py --cpu-us 9.8

--cpu-us: the CPU µs/event of the profiled runs (the bench's stderr), to
turn shares into µs.  --by-function N also lists the N hottest leaf
functions of each step; --by-thread the steps of each busy thread (the
submitting thread, the worker, the store writer), whose busiest sets the
pace.
"""
import argparse
import collections
import re
import sys

# Steps, each with the frames that mark it.  The innermost frame of a
# stack that matches any of these decides the step.
STEPS = [
    ("parse", "parse + validate input",
     ["lu_event_parse"]),
    ("route", "route",
     ["lu__dispatch", "lu__route", "submit_common", "lu_manager_submit_json",
      "lu_manager_submit_input", "lu__stats_event_in", "lu__pending_add"]),
    ("queue", "queue hand-offs",
     ["lu__shard_enqueue", "lu__pool_push", "lu__writer_push",
      "lu__writer_out", "lu__writer_flush", "worker_main", "writer_main",
      "lu__shard_run", "batch_pop", "turn_leave", "lu__cond_wait_until",
      "lu_manager_drain"]),
    ("execute", "execute",
     ["lu__run_item", "prepare", "choose", "lu__select", "decide", "Noop",
      "lu__out_reset", "lu_out_result", "lu__breaker_peek",
      "lu__breaker_allow", "lu__breaker_record", "cpu_at"]),
    ("build", "build result",
     ["lu__outcome_completed", "complete"]),
    ("store", "store",
     ["sq_append", "lu_store_append", "append_sync", "lu__unit_records",
      "checkpointer_main", "wal_hook"]),
    ("report", "report + free",
     ["report", "lu__stats_batch", "lu__unit_free", "lu__unit_recycle",
      "lu__unit_free_list", "lu__item_free", "lu_event_free",
      "lu__pending_done", "on_outcome", "lu__unit_outcome"]),
]
# Not the timed pipeline: left out of the shares.
EXCLUDE = ["run_baseline", "gen_events", "lu_manager_new", "lu_manager_free",
           "lu_store_count", "lu_manager_fn_stats", "lu__manager_store_stats",
           "rm_store", "qsort", "_dl_start", "_dl_start_user", "dl_main",
           "exit", "_dl_init"]

MARK = {}
for key, _, names in STEPS:
    for n in names:
        MARK[n] = key
EXCL = set(EXCLUDE)


def frames(lines):
    """Yields (thread id, [function names, leaf first]) per sample."""
    tid, stack = None, []
    for line in lines:
        if not line.strip():
            if tid is not None:
                yield tid, stack
            tid, stack = None, []
            continue
        if not line.startswith("\t"):
            head = line.split()  # comm, tid
            tid, stack = head[1] if len(head) > 1 else head[0], []
            continue
        # "\t<address> <function>[+0x..] (<dso>)", "(inlined)" for an
        # inlined frame
        parts = line.split()
        name = parts[1] if len(parts) > 1 else "?"
        stack.append(re.sub(r"\+0x[0-9a-f]+$", "", name))
    if tid is not None:
        yield tid, stack


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-us", type=float, default=0.0)
    ap.add_argument("--by-function", type=int, default=0)
    ap.add_argument("--by-thread", action="store_true")
    a = ap.parse_args()
    counts = collections.Counter()
    leaves = collections.defaultdict(collections.Counter)
    threads = collections.defaultdict(collections.Counter)
    excluded = 0
    for tid, stack in frames(sys.stdin):
        if any(f in EXCL for f in stack):
            excluded += 1
            continue
        step = None
        for f in stack:
            if f in MARK:
                step = MARK[f]
                break
        if step is None:
            # A thread's stack that never reached a marked frame: the
            # pipeline's threads with a truncated unwind, or the kernel.
            step = "other"
        counts[step] += 1
        threads[tid][step] += 1
        leaves[step][stack[0] if stack else "?"] += 1
    total = sum(counts.values())
    if not total:
        sys.exit("floor_profile: no pipeline samples")
    print(f"{total} pipeline samples ({excluded} left out)\n")
    print("| step | share | µs/event |")
    print("|---|---:|---:|")
    rows = [(k, d) for k, d, _ in STEPS] + [("other", "other")]
    for key, desc in rows:
        share = counts[key] / total
        us = f"{share * a.cpu_us:.2f}" if a.cpu_us else "-"
        print(f"| {desc} | {100 * share:.1f}% | {us} |")
    if a.by_thread:
        # A thread's role is its busiest step's: the submitting thread
        # parses, the worker builds results, the writer stores (each
        # round of the bench has its own worker and writer).
        role_of = {"parse": "submitting thread", "route": "submitting thread",
                   "build": "worker", "execute": "worker", "store": "writer"}
        roles = collections.defaultdict(collections.Counter)
        for tid, c in threads.items():
            roles[role_of.get(c.most_common(1)[0][0], "other")].update(c)
        print("\n| thread | all | " + " | ".join(d for _, d in rows) + " |")
        print("|---|---:|" + "---:|" * len(rows))
        for role in ("submitting thread", "worker", "writer", "other"):
            c = roles.get(role)
            if not c:
                continue
            n = sum(c.values())
            cell = (lambda k: f"{c[k] / total * a.cpu_us:.2f}") if a.cpu_us \
                else (lambda k: f"{100 * c[k] / total:.1f}%")
            allc = f"{n / total * a.cpu_us:.2f}" if a.cpu_us \
                else f"{100 * n / total:.1f}%"
            print(f"| {role} | {allc} | " +
                  " | ".join(cell(k) for k, _ in rows) + " |")
    if a.by_function:
        for key, desc in rows:
            print(f"\n{desc}:")
            for fn, c in leaves[key].most_common(a.by_function):
                print(f"  {100 * c / total:5.1f}%  {fn}")


if __name__ == "__main__":
    main()
