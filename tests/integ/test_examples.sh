# test_examples.sh - every example does what its RUN: and OUTPUT: comments
# say (check_example.py): embed.c, orders/orders.c, orders/gen.c.  The
# commands run in a directory where build/ is this build and examples/ the
# source's, as they would from the top of the tree.
. "$(dirname "$0")/lib.sh"
: "${LUCENT_SRC:?source tree}" "${LUCENT_BUILD:?build tree}"
CHECK="python3 $LUCENT_SRC/tests/integ/check_example.py"

# 1. The checker fails what it should: a wrong line, a missing line, an
# extra line; and `...` matches text within a line and whole lines.
mk() { printf '%s\n' "$@" > "$T/ex.c"; }
mk "// RUN:" "//   printf 'a 1\\nb 2\\nc 3\\n'" "//" "// OUTPUT:" "//   a ..." "//   ..."
$CHECK "$T/ex.c" --cwd "$T" > /dev/null || fail "checker: '...' lines"
mk "// RUN:" "//   printf 'a 1\\nb 2\\n'" "//" "// OUTPUT:" "//   a 1" "//   b 3"
$CHECK "$T/ex.c" --cwd "$T" > /dev/null && fail "checker passed a wrong line"
mk "// RUN:" "//   printf 'a 1\\nb 2\\n'" "//" "// OUTPUT:" "//   a 1"
$CHECK "$T/ex.c" --cwd "$T" > /dev/null && fail "checker passed an extra line"
mk "// RUN:" "//   printf 'b 2\\na 1\\n'" "//" "// OUTPUT: (any order)" "//   a ..." "//   b 2"
$CHECK "$T/ex.c" --cwd "$T" > /dev/null || fail "checker: any order"
mk "// RUN:" "//   printf 'b 2\\n'" "//" "// OUTPUT: (any order)" "//   a ..." "//   b 2"
$CHECK "$T/ex.c" --cwd "$T" > /dev/null && fail "checker passed a missing line"
mk "// RUN:" "//   false" "//" "// OUTPUT:"
$CHECK "$T/ex.c" --cwd "$T" > /dev/null && fail "checker passed a failing command"
pass "check_example.py fails wrong, missing and extra lines"

# 2. Every example with a RUN: block.
mkdir "$T/top"
ln -s "$LUCENT_BUILD" "$T/top/build"
ln -s "$LUCENT_SRC/examples" "$T/top/examples"
n=0
for f in "$LUCENT_SRC"/examples/*.c "$LUCENT_SRC"/examples/*/*.c; do
  grep -q "RUN:" "$f" || continue
  $CHECK "$f" --cwd "$T/top" || fail "$f does not do what its comment says"
  n=$((n + 1))
done
[ "$n" -ge 3 ] || fail "only $n examples with RUN: blocks"
pass "$n examples print what their OUTPUT: says"
echo "2 passed, 0 failed"
