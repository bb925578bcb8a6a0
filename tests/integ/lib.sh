# lib.sh - shared helpers for the integration tests (sourced).
set -euo pipefail
: "${LUCENT:?path to the lucent binary}" "${LUCENT_PLUGIN:?orders plugin}"
T=$(mktemp -d "${LUCENT_TEST_TMP:-/tmp}/integ.XXXXXX")
trap '[ -n "${LUCENT_TEST_KEEP:-}" ] && echo "kept $T" >&2 || rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $* (${SECONDS}s)"; }
# json FILE EXPR: evaluates a Python expression over the parsed JSON `j`.
json() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
# expect_fail CODE PATTERN CMD...: CMD exits CODE and its stderr matches.
expect_fail() {
  local code=$1 pat=$2; shift 2
  set +e; "$@" > "$T/out" 2> "$T/err"; local rc=$?; set -e
  [ "$rc" = "$code" ] || fail "'$*' exited $rc, want $code: $(cat "$T/err")"
  grep -q -- "$pat" "$T/err" || fail "'$*' stderr lacks '$pat': $(cat "$T/err")"
}
