#!/usr/bin/env python3
"""check_outcomes.py - the books of a distributed run, from the event store.

usage: check_outcomes.py INPUT.jsonl STORED.jsonl [--wait-only] [--routing]
                         [--competing-ok]

Every non-blank input line must have exactly one recorded outcome, and so
must every event a function emitted whose type some function handles (a
type is taken as handled when any event of it has an outcome):
  - a valid event: exactly one of <Fn>Completed, <Fn>Failed (causationid =
    its id, function = a function handling its type) or lucent.DeadLettered
    (causationid = its id), or lucent.Rejected (causationid = its id, e.g. a
    missing hash key);
  - an invalid line: exactly one lucent.Rejected whose data.line is its line
    number; and no lucent.Rejected without a causation id lacks a line.
No event id may be stored twice, and no (causation, function) pair may have
two results.  With --routing, also: every UpdateCustomerProfile (hash of
customer.id) and every ProcessPayment (sticky on customer.id) of one
customer ran on one shard (steady state only).  Prints a one-line summary; exit 0 when the books
balance, 1 otherwise, 3 when outcomes are still missing (--wait-only: just
report how many are missing).

--competing-ok (the fault tests): an event with one outcome from each of
two competing functions (both handle its type) is counted and reported,
not an error.  It happens when an input runs on two processes at once
(a replay after a crash or a freeze while the first run's outcome was
still on its way to the store): neither run could see the other's outcome
(README, "Failure model").  Two outcomes of one function, or any id
stored twice, stay errors.  Under a sanitizer (LUCENT_TEST_SANITIZER set,
5-20x slower), --competing-ok also counts an event with a dead letter
beside its one completion: a replayed copy judged over its hard limit or
its delivery budget while the other copy completed (README, "Failure
model").  The plain pass keeps that an error.
"""
import json
import os
import sys


def main():
    inp, stored = sys.argv[1], sys.argv[2]
    wait_only = "--wait-only" in sys.argv
    routing = "--routing" in sys.argv
    competing_ok = "--competing-ok" in sys.argv
    inputs = {}   # id -> line
    input_data = {}  # id -> customer id, for inputs that have one
    bad_lines = set()
    for n, line in enumerate(open(inp), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
            ok = isinstance(e, dict) and all(
                isinstance(e.get(k), str) and e.get(k) for k in ("id", "type", "source"))
        except ValueError:
            ok = False
        if ok:
            inputs[e["id"]] = n
            d = e.get("data")
            if isinstance(d, dict) and isinstance(d.get("customer"), dict):
                input_data[e["id"]] = d["customer"].get("id")
        else:
            bad_lines.add(n)

    outcomes = {}      # input id -> [types]
    rejected_lines = {}
    ids = set()
    dup_ids = 0
    results = {}
    derived_outcomes = {}  # emitted event id -> [outcome types]
    emitted = []     # events functions emitted (not outcomes)
    by_id = {}
    events = []
    for raw in open(stored, "rb"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            print("stored event is not UTF-8 (%s): %r" % (err, raw[:3000]))
            return 1
        e = json.loads(line)
        events.append(e)
        if e["id"] in ids:
            dup_ids += 1
        ids.add(e["id"])
        by_id[e["id"]] = e
        t = e["type"]
        c = e.get("causationid")
        if t == "lucent.Rejected" and c is None:
            ln = e["data"].get("line")
            rejected_lines[ln] = rejected_lines.get(ln, 0) + 1
            continue
        is_outcome = (t in ("lucent.Rejected", "lucent.DeadLettered")
                      or (e.get("function") and (t == e["function"] + "Completed"
                                                 or t == e["function"] + "Failed")))
        if not is_outcome and c is not None and not t.startswith("lucent."):
            emitted.append(e)
        if not is_outcome or c is None:
            continue
        if c in inputs:
            outcomes.setdefault(c, []).append(t)
        else:
            derived_outcomes.setdefault(c, []).append(t)
        key = (c, e.get("function"), t)
        results[key] = results.get(key, 0) + 1

    missing = [i for i in inputs if i not in outcomes]
    missing_bad = [n for n in bad_lines if n not in rejected_lines]
    handled = set(by_id[c]["type"] for c in derived_outcomes if c in by_id)
    missing_derived = [e["id"] for e in emitted
                       if e["type"] in handled and e["id"] not in derived_outcomes]
    n_missing = len(missing) + len(missing_bad) + len(missing_derived)
    if wait_only:
        print(n_missing)
        return 0
    errors = []
    slow = bool(os.environ.get("LUCENT_TEST_SANITIZER"))

    def competing(o):  # one outcome per function, several functions
        if slow and len(o) == 2 and o.count("lucent.DeadLettered") == 1:
            return True
        fns = [t[:-len("Completed")] if t.endswith("Completed") else
               t[:-len("Failed")] if t.endswith("Failed") else None for t in o]
        return None not in fns and len(set(fns)) == len(fns)
    raced = 0
    for what, table in (("inputs", outcomes), ("emitted events", derived_outcomes)):
        multi = {i: o for i, o in table.items() if len(o) != 1}
        if competing_ok:
            raced += sum(1 for o in multi.values() if competing(o))
            multi = {i: o for i, o in multi.items() if not competing(o)}
        if multi:
            errors.append("%d %s with 2+ outcomes, e.g. %s" % (
                len(multi), what, list(multi.items())[:2]))
    # A rejection must be of an input line: one of no line is of something
    # that was never an event (a pull request's status taken for a message
    # of the queue, say).
    lineless = sum(k for ln, k in rejected_lines.items()
                   if not isinstance(ln, int) or ln < 1)
    if lineless:
        errors.append("%d rejections of no input line" % lineless)
    twice = [ln for ln, k in rejected_lines.items() if k != 1]
    if twice:
        errors.append("bad lines rejected more than once: %s" % twice[:5])
    if dup_ids:
        errors.append("%d event ids stored twice" % dup_ids)
    dup_results = [k for k, v in results.items() if v > 1]
    if dup_results:
        errors.append("%d results stored twice, e.g. %s" % (len(dup_results), dup_results[:2]))
    if routing:
        # UpdateCustomerProfile: hash_based on customer.id (no load bound:
        # ReserveInventory's bounded loads may move a hot SKU on purpose);
        # ProcessPayment: sticky_session on customer.id.
        hashed, sticky = {}, {}
        for e in events:
            t = e["type"]
            if t in ("UpdateCustomerProfileCompleted", "UpdateCustomerProfileFailed"):
                cause = by_id.get(e["causationid"])
                cust = (cause or {}).get("data", {}).get("customer", {}).get("id")
                if cust is None and e["causationid"] in inputs:
                    cust = input_data.get(e["causationid"])
                if cust:
                    hashed.setdefault(cust, set()).add(e["shardid"])
            if t in ("ProcessPaymentCompleted", "ProcessPaymentFailed"):
                cause = by_id.get(e["causationid"])
                if cause:
                    cust = cause["data"]["customer"]["id"]
                    sticky.setdefault(cust, set()).add(e["shardid"])
        for name, table in (("hash_based customer.id", hashed),
                            ("sticky customer.id", sticky)):
            split = {k: v for k, v in table.items() if len(v) > 1}
            if split:
                errors.append("%s: keys executed on several shards: %s" % (
                    name, list(split.items())[:3]))
            shards = set(s for v in table.values() for s in v)
            repeated = sum(1 for v in table.values())
            if repeated < 10 or len(shards) < 2:
                errors.append("%s: routing check saw too little: %d keys on %s" % (
                    name, repeated, shards))
    print("inputs %d (+%d invalid lines), emitted %d, stored %d events, "
          "missing %d (%d of emitted events), errors %d" % (
              len(inputs), len(bad_lines), len(emitted), len(events), n_missing,
              len(missing_derived), len(errors)))
    if raced:
        print("  %d events with one outcome per competing function "
              "(runs that raced on two processes)" % raced)
    for err in errors:
        print("  " + err)
    if errors:
        return 1
    return 3 if n_missing else 0


if __name__ == "__main__":
    sys.exit(main())
