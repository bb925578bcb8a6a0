# test_cli_options.sh - every subcommand words its option errors the same
# way (one helper, cli_getopt), exits 2 on them, and the top level has -V.
. "$(dirname "$0")/lib.sh"

# 1. -V, --version and `version` print the same line.
v=$("$LUCENT" -V)
[[ "$v" =~ ^lucent\ [0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "-V printed '$v'"
[ "$("$LUCENT" --version)" = "$v" ] || fail "--version differs from -V"
[ "$("$LUCENT" version)" = "$v" ] || fail "version differs from -V"
expect_fail 2 "^lucent: unknown option '--frob'$" "$LUCENT" --frob
expect_fail 2 "^lucent: unknown command 'frob'$" "$LUCENT" frob
pass "-V, --version, version; top-level errors"

# 2. Each subcommand: unknown long and short options, a missing value, a
# value given to a flag, an ambiguous abbreviation.  One wording, exit 2,
# the subcommand's usage after it, and never getopt's own message.
for cmd in run functions events top serve publish exec; do
  expect_fail 2 "^lucent: unknown option '--frob'$" "$LUCENT" $cmd --frob
  grep -q "^usage: lucent $cmd" "$T/err" || fail "$cmd: no usage after the error"
  expect_fail 2 "^lucent: unknown option '-q'$" "$LUCENT" $cmd -q
  [ $cmd != run ] || expect_fail 2 "^lucent: unknown option '-q'$" "$LUCENT" run -jq
  expect_fail 2 "^lucent: option '--help' takes no value$" "$LUCENT" $cmd --help=1
  if grep -rqE "unrecognized|invalid option|requires an argument" "$T/err"; then
    fail "$cmd: getopt's own message: $(cat "$T/err")"
  fi
done
for cmd in serve publish exec events; do
  expect_fail 2 "^lucent: option '--nats' needs a value$" "$LUCENT" $cmd --nats
done
expect_fail 2 "^lucent: option '--plugin' needs a value$" "$LUCENT" run --plugin
expect_fail 2 "^lucent: option '-p' needs a value$" "$LUCENT" functions -p
expect_fail 2 "^lucent: option '--limit' needs a value$" "$LUCENT" events --lim
expect_fail 2 "^lucent: option '--json' takes no value$" "$LUCENT" run --js=yes
expect_fail 2 "^lucent: ambiguous option '--s' (--shards, --store, " "$LUCENT" run --s 3
expect_fail 2 "^lucent: option '--interval' needs a value$" "$LUCENT" top --interval
# Abbreviations that are unique still work.
"$LUCENT" functions --plug "$LUCENT_PLUGIN" --js > "$T/fns.json" || fail "--plug --js"
pass "one wording of option errors in every subcommand"
echo "2 passed, 0 failed"
