#!/usr/bin/env python3
"""check_example.py - runs what an example's RUN: comment says and checks
its standard output against the example's OUTPUT: comment.

usage: check_example.py FILE [--cwd DIR] [--code NAME] [--prelude SH]

In FILE's comments (// or /* ... */ lines):

  RUN: (a remark)     the lines below it, indented, are a shell script (one
  //   command         command a line; a line ending in | or \\ goes on);
  //   command         a `cmake ...` line is a build step and is skipped:
                      the test has built everything.  Up to a blank line.
  OUTPUT: ...         the lines below it, indented, are the script's
  //   text           standard output, line by line: `...` within a line
  //   text ... text  matches any text; a line that is only `...` matches
                      any number of lines.  With "any order" on the
                      OUTPUT: line the lines may come in any order.

The script runs under bash (set -e -o pipefail) in --cwd (default: the
current directory), after --prelude (shell code: functions such as
cc() that stand in for the commands the example names).  --code NAME
first writes the example program itself to NAME there: the indented
block that starts at its first `#include` and ends before RUN:.
Exit 0 when the output matches; 1 (with both texts) otherwise.
"""
import argparse
import os
import re
import subprocess
import sys

COMMENT = re.compile(r"^\s*(?://|/?\*)(.*)$")


def comment_bodies(path):
    """(body or None) per line: the text after // or * of a comment line."""
    out = []
    for line in open(path, encoding="utf-8").read().split("\n"):
        m = COMMENT.match(line)
        out.append(m.group(1).rstrip() if m else None)
    return out


def block(bodies, header):
    """The header's line ("RUN:", "OUTPUT:"): (its text, the indented lines
    below it, dedented), or (None, None)."""
    for i, b in enumerate(bodies):
        if b is not None and b.strip().startswith(header):
            head = b.strip()
            # A remark in parentheses may go on over the next lines.
            while head.count("(") > head.count(")") and i + 1 < len(bodies) \
                    and bodies[i + 1] is not None:
                i += 1
                head += " " + bodies[i].strip()
            lines = []
            for body in bodies[i + 1:]:
                if body is None or not body.startswith("  ") or not body.strip():
                    break
                lines.append(body)
            ind = min(len(l) - len(l.lstrip()) for l in lines) if lines else 0
            return head, [l[ind:] for l in lines]
    return None, None


def code_block(bodies):
    """The example program: from the first indented #include to RUN:."""
    start = next((i for i, b in enumerate(bodies)
                  if b is not None and re.match(r"^\s{2,}#include", b)), None)
    end = next((i for i, b in enumerate(bodies)
                if b is not None and b.strip().startswith("RUN:")), None)
    if start is None or end is None or end < start:
        return None
    lines = [b if b is not None else "" for b in bodies[start:end]]
    while lines and not lines[-1].strip():
        lines.pop()
    ind = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
    return "\n".join(l[ind:] for l in lines) + "\n"


def line_re(pat):
    return re.compile(".*".join(re.escape(p) for p in pat.split("...")))


def match_in_order(pats, lines):
    memo = {}

    def go(p, l):
        if (p, l) in memo:
            return memo[(p, l)]
        if p == len(pats):
            r = l == len(lines)
        elif pats[p].strip() == "...":
            r = any(go(p + 1, k) for k in range(l, len(lines) + 1))
        else:
            r = l < len(lines) and line_re(pats[p]).fullmatch(lines[l]) \
                is not None and go(p + 1, l + 1)
        memo[(p, l)] = r
        return r

    return go(0, 0)


def match_any_order(pats, lines):
    if len(pats) != len(lines):
        return False
    res = [line_re(p) for p in pats]
    owner = [-1] * len(lines)  # line -> pattern

    def assign(p, seen):
        for l, line in enumerate(lines):
            if l in seen or not res[p].fullmatch(line):
                continue
            seen.add(l)
            if owner[l] < 0 or assign(owner[l], seen):
                owner[l] = p
                return True
        return False

    return all(assign(p, set()) for p in range(len(pats)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--cwd", default=".")
    ap.add_argument("--code")
    ap.add_argument("--prelude", default="")
    a = ap.parse_args()
    bodies = comment_bodies(a.file)
    _, run = block(bodies, "RUN:")
    out_head, want = block(bodies, "OUTPUT:")
    if not run or want is None:
        print("%s: no RUN: or OUTPUT: block" % a.file)
        return 1
    if a.code:
        code = code_block(bodies)
        if not code:
            print("%s: no example program before RUN:" % a.file)
            return 1
        with open(os.path.join(a.cwd, a.code), "w") as f:
            f.write(code)
    script = [l for l in run if not re.match(r"^cmake\s", l)]
    sh = "set -e -o pipefail\n" + a.prelude + "\n" + "\n".join(script) + "\n"
    p = subprocess.run(["bash", "-c", sh], cwd=a.cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    got = [l.rstrip() for l in p.stdout.split("\n")]
    while got and not got[-1]:
        got.pop()
    want = [l.rstrip() for l in want]
    any_order = "any order" in out_head
    ok = p.returncode == 0 and (match_any_order(want, got) if any_order
                                else match_in_order(want, got))
    if ok:
        print("ok - %s: %d lines as OUTPUT says" % (a.file, len(got)))
        return 0
    print("FAIL: %s (exit %d)\n--- script\n%s--- OUTPUT says%s\n%s\n"
          "--- got\n%s\n--- stderr\n%s" % (
              a.file, p.returncode, sh, " (any order)" if any_order else "",
              "\n".join(want), "\n".join(got), p.stderr[-3000:]))
    return 1


if __name__ == "__main__":
    sys.exit(main())
