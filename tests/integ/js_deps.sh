# js_deps.sh - node and the npm packages of examples/clients/js (nats,
# cloudevents) for the JavaScript tests (sourced after lib.sh).
#
# Skips the test (exit 77) when node or npm is missing; a failed install is
# a failure.  Installs into $LUCENT_TEST_TMP/npm - outside the source tree,
# with its own npm cache there - once, and again only when package.json
# changes; tests running at the same time take turns (flock).  Sets
# JS_SRC (the client's directory) and NODE_PATH (so that its require()s and
# the tests' find the packages).
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  echo "skip: node and npm are needed"
  exit 77
fi
JS_SRC=${LUCENT_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/examples/clients/js
export LUCENT_SRC=${LUCENT_SRC:-$(cd "$JS_SRC/../../.." && pwd)}
NPM_DIR=${LUCENT_TEST_TMP:-/tmp}/npm
mkdir -p "$NPM_DIR"
(
  flock 9
  if ! cmp -s "$JS_SRC/package.json" "$NPM_DIR/package.json" ||
     [ ! -d "$NPM_DIR/node_modules/nats" ] ||
     [ ! -d "$NPM_DIR/node_modules/cloudevents" ]; then
    cp "$JS_SRC/package.json" "$NPM_DIR/package.json"
    if ! (cd "$NPM_DIR" && npm install --no-audit --no-fund --no-package-lock \
            --cache "$NPM_DIR/cache" --loglevel error) > "$NPM_DIR/install.log" 2>&1; then
      rm -f "$NPM_DIR/package.json"
      cat "$NPM_DIR/install.log" >&2
      exit 1
    fi
  fi
) 9> "$NPM_DIR/.lock" || fail "npm install of examples/clients/js failed (log above)"
export NODE_PATH="$NPM_DIR/node_modules"
