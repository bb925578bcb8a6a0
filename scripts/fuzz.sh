#!/usr/bin/env bash
# fuzz.sh [SECONDS] - builds the libFuzzer targets (fuzz/, clang with
# -DLUCENT_FUZZ=ON, in build-fuzz/) and runs each for SECONDS (default 10),
# one after the other, starting from its seed corpus in fuzz/corpus/<target>/.
# New inputs go to build-fuzz/corpus/<target>/ (not to the repository: add
# one to fuzz/corpus/ by hand when it is a regression); crashes to
# build-fuzz/artifacts/.  Exits 1 if any target crashed, printing the
# input; 77 when clang's libFuzzer runtime is missing.
# `fuzz.sh --build` only builds them (scripts/test.sh, ahead of time).
#   FUZZ_TARGETS="fuzz_event fuzz_hb"  only these
#   FUZZ_BUILD=DIR                     another build directory
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
build=${FUZZ_BUILD:-build-fuzz}
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; (void)n; return 0; }' > "$probe/p.c"
if ! clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2>/dev/null; then
  echo "fuzz: clang's libFuzzer runtime is missing (Debian: libclang-rt-14-dev)"
  exit 77
fi
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DLUCENT_FUZZ=ON \
  -DLUCENT_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
if ! cmake --build "$build" -j"$(nproc)" --target fuzz_all > "$build/fuzz-build.log" 2>&1; then
  cat "$build/fuzz-build.log"; echo "fuzz: build failed"; exit 1
fi
[ "$secs" = --build ] && exit 0
targets=${FUZZ_TARGETS:-$(cd fuzz && ls fuzz_*.c | sed 's/\.c$//')}
mkdir -p "$build/artifacts"
failed=0
for t in $targets; do
  work="$build/corpus/$t"
  mkdir -p "$work"
  log="$build/$t.log"
  set +e
  "$build/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
    "$work" "fuzz/corpus/$t" > "$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  size=$(ls "$work" | wc -l)
  if [ "$rc" != 0 ]; then
    failed=1
    echo "FAIL $t (exit $rc, ${execs:-?} runs): see $log"
    grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5
  else
    echo "ok   $t: ${secs}s, ${execs:-?} runs, ${rate:-?}/s, corpus $size"
  fi
done
exit $failed
