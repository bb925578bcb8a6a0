# test_examples.sh - the example programs run and print what their
# OUTPUT: comments say (examples/embed.c).
. "$(dirname "$0")/lib.sh"
: "${LUCENT_EMBED:?path to the embed example}"
"$LUCENT_EMBED" > "$T/embed.out"
grep -q "^3 events in: 1 completed, 1 failed, 0 rejected, 1 dead_lettered$" "$T/embed.out" || fail "embed totals: $(cat "$T/embed.out")"
grep -q '"data":{"greeting":"Hello, Ada!"}' "$T/embed.out" || fail "embed result"
grep -q "reason: no function handles event type 'Goodbye'" "$T/embed.out" || fail "embed dead letter"
grep -q "reason: name must be a non-empty string" "$T/embed.out" || fail "embed failure"
pass "embed example"
echo "1 passed, 0 failed"
