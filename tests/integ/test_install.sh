# test_install.sh - lucent installs and links like any C library.
# `cmake --install` into a fresh prefix, then, from that prefix only:
#   1. the layout: command, headers, libraries with their SONAMEs,
#      pkg-config files, the CMake package, the man page;
#   2. the installed command finds its libraries by itself (RPATH);
#   3. with pkg-config: the orders plugin built with --cflags alone and
#      with --cflags --libs (it links liblucent) both load into the
#      installed command, and so does the README's function; embed.c and
#      the example in lucent.h build and run as programs; serve_nats.c
#      (lucent/nats.h) builds with lucent-nats, links liblucent-nats.so.0
#      and runs (to a clear error: no server here);
#   4. with CMake: examples/cmake/ (find_package(lucent)) builds the same
#      plugin and programs from the installed examples; the version file
#      refuses another minor version.
# Out-of-tree code is built with this build's compiler and sanitizer,
# and -Wall -Wextra -Werror.
. "$(dirname "$0")/lib.sh"
: "${LUCENT_BUILD:?build tree}" "${LUCENT_SRC:?source tree}"
CMAKE=${LUCENT_CMAKE:-cmake}
CC=${LUCENT_CC:-cc}
CFLAGS="${LUCENT_SAN_FLAGS:-} -Wall -Wextra -Werror"
CHECK="python3 $LUCENT_SRC/tests/integ/check_example.py"
unset LD_LIBRARY_PATH
P=$T/prefix

# 1. Install, and what is where.
"$CMAKE" --install "$LUCENT_BUILD" --prefix "$P" > "$T/install.log" ||
  fail "install: $(tail -5 "$T/install.log")"
lib=$(dirname "$(find "$P" -name liblucent.so.0 | head -1)")
[ -d "$lib" ] || fail "no liblucent.so.0 under $P: $(find "$P" | head -30)"
for f in bin/lucent include/lucent/lucent.h include/lucent/fn.h \
         include/lucent/version.h include/lucent/store.h \
         include/lucent/http.h include/lucent/nats.h share/man/man1/lucent.1 \
         share/doc/lucent/examples/embed.c \
         share/doc/lucent/examples/serve_nats.c \
         share/doc/lucent/examples/orders/orders.c \
         share/doc/lucent/examples/cmake/CMakeLists.txt; do
  [ -f "$P/$f" ] || fail "not installed: $f"
done
for l in lucent lucent-nats lucent-http; do
  [ -L "$lib/lib$l.so" ] || fail "no lib$l.so (the link-time name)"
  soname=$(readelf -d "$lib/lib$l.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ "$soname" = "lib$l.so.0" ] || fail "lib$l.so: SONAME '$soname'"
  [ -f "$lib/pkgconfig/$l.pc" ] || fail "no $l.pc"
done
for f in lucentConfig.cmake lucentConfigVersion.cmake lucentTargets.cmake; do
  [ -f "$lib/cmake/lucent/$f" ] || fail "no cmake/lucent/$f"
done
pass "installed: command, headers, libraries with SONAMEs, .pc, CMake package"

# 2. The installed command runs with nothing set, on the installed library.
export PKG_CONFIG_PATH=$lib/pkgconfig
ver=$(pkg-config --modversion lucent)
[ "$("$P/bin/lucent" -V)" = "lucent $ver" ] || fail "lucent -V: $("$P/bin/lucent" -V 2>&1)"
grep -q "#define LU_VERSION \"$ver\"" "$P/include/lucent/version.h" || fail "version.h"
LD_TRACE_LOADED_OBJECTS=1 "$P/bin/lucent" > "$T/ldd.txt" 2>&1 || true
got=$(sed -n 's/^[[:space:]]*liblucent.so.0 => \([^ ]*\) .*/\1/p' "$T/ldd.txt")
[ -n "$got" ] && [ "$(realpath "$got")" = "$(realpath "$lib/liblucent.so.0")" ] ||
  fail "the installed lucent does not load $lib/liblucent.so.0: $(cat "$T/ldd.txt")"
pass "lucent $ver runs from $P/bin on $lib/liblucent.so.0, no LD_LIBRARY_PATH"

# 3. pkg-config: a plugin both ways, a program, the lucent.h example.
ex=$P/share/doc/lucent/examples
sample=$ex/orders/sample.jsonl
cd "$T"
# shellcheck disable=SC2046
$CC $CFLAGS -shared -fPIC -o libcflags.so "$ex/orders/orders.c" \
  $(pkg-config --cflags lucent) || fail "plugin, --cflags"
# shellcheck disable=SC2046
$CC $CFLAGS -shared -fPIC -o liblinked.so "$ex/orders/orders.c" \
  $(pkg-config --cflags --libs lucent) || fail "plugin, --cflags --libs"
readelf -d liblinked.so | grep -q "NEEDED.*\[liblucent.so.0\]" ||
  fail "liblinked.so does not link liblucent"
# The README's function, built as the README says.
python3 - "$P/share/doc/lucent/README.md" > mine.c <<'PY'
import sys
t = open(sys.argv[1]).read()
a = t.index("```c\n#include <lucent/fn.h>") + 5
print(t[a:t.index("```", a)], end="")
PY
# shellcheck disable=SC2046
$CC $CFLAGS -shared -fPIC -o libmine.so mine.c \
  $(pkg-config --cflags --libs lucent) || fail "the README's function"
"$P/bin/lucent" functions --plugin ./libmine.so | grep -q "^ReserveInventory " ||
  fail "the README's function does not load"
for pl in libcflags.so liblinked.so; do
  "$P/bin/lucent" functions --plugin "./$pl" > fns.txt || fail "$pl: $(cat fns.txt)"
  grep -q "^ScoreFraudModel " fns.txt || fail "$pl: functions"
  "$P/bin/lucent" run --plugin "./$pl" --input "$sample" --shards 2 --json \
    > run.json 2> run.err || fail "$pl: run: $(cat run.err)"
  [ "$(json run.json "j['balanced'] and j['events_in']")" = 20 ] ||
    fail "$pl: run: $(cat run.json)"
done
pass "a plugin built with --cflags alone, and one linking liblucent, both run"

# shellcheck disable=SC2046
$CC $CFLAGS -o embed "$ex/embed.c" $(pkg-config --cflags --libs lucent) ||
  fail "embed.c with pkg-config"
LD_LIBRARY_PATH=$lib ./embed > embed.out || fail "embed: $(cat embed.out)"
grep -q "^3 events in: 1 completed, 1 failed, 0 rejected, 1 dead_lettered$" embed.out ||
  fail "embed: $(cat embed.out)"
mkdir hdr
$CHECK "$P/include/lucent/lucent.h" --code double.c --cwd hdr \
  --prelude "cc() { $CC $CFLAGS \"\$@\"; }; export LD_LIBRARY_PATH=$lib" ||
  fail "the example in lucent.h"
pass "embed.c and the example in lucent.h build with pkg-config and run"

# serve_nats.c: a shard on NATS, from lucent/nats.h and liblucent-nats
# alone.  No server here: a port nobody listens on says that it links,
# loads and runs as far as the connect (test_serve_nats.sh runs it on a
# server).
nats_runs() { # nats_runs PROGRAM: runs it to its clear error
  local out
  out=$(LD_LIBRARY_PATH=$lib "$1" nats://127.0.0.1:1 s1 2>&1) &&
    fail "$1 ran without a server: $out"
  case $out in
    *"shard s1: cannot connect to nats://127.0.0.1:1"*"(LU_EIO)"*) ;;
    *) fail "$1: $out" ;;
  esac
  LD_LIBRARY_PATH=$lib LD_TRACE_LOADED_OBJECTS=1 "$1" > "$T/ldd-nats.txt" 2>&1 || true
  got=$(sed -n 's/^[[:space:]]*liblucent-nats.so.0 => \(\/[^ ]*\) .*/\1/p' "$T/ldd-nats.txt")
  [ -n "$got" ] && [ "$(realpath "$got")" = "$(realpath "$lib/liblucent-nats.so.0")" ] ||
    fail "$1 does not load $lib/liblucent-nats.so.0: $(cat "$T/ldd-nats.txt")"
}
# shellcheck disable=SC2046
$CC $CFLAGS -o serve_nats "$ex/serve_nats.c" \
  $(pkg-config --cflags --libs lucent-nats) || fail "serve_nats.c with pkg-config"
readelf -d serve_nats | grep -q "NEEDED.*\[liblucent-nats.so.0\]" ||
  fail "serve_nats does not link liblucent-nats"
nats_runs ./serve_nats
pass "serve_nats.c (lucent/nats.h) builds with pkg-config lucent-nats and runs"

# 4. CMake: find_package(lucent), from the installed examples.
cmake_cfg() { # dir: configure an out-of-tree project against $P
  "$CMAKE" -S "$1" -B "$1.build" -DCMAKE_PREFIX_PATH="$P" \
    -DCMAKE_C_COMPILER="$CC" -DCMAKE_C_FLAGS="$CFLAGS" \
    -DCMAKE_EXE_LINKER_FLAGS="${LUCENT_SAN_FLAGS:-}" \
    -DCMAKE_SHARED_LINKER_FLAGS="${LUCENT_SAN_FLAGS:-}" \
    -DCMAKE_MODULE_LINKER_FLAGS="${LUCENT_SAN_FLAGS:-}"
}
cp -r "$ex" cmex
cmake_cfg cmex/cmake > cm.log 2>&1 || fail "find_package(lucent): $(tail -20 cm.log)"
"$CMAKE" --build cmex/cmake.build > cmb.log 2>&1 || fail "cmake build: $(tail -20 cmb.log)"
cmex/cmake.build/embed > embed2.out || fail "CMake embed: $(cat embed2.out)"
grep -q "^3 events in: 1 completed" embed2.out || fail "CMake embed: $(cat embed2.out)"
"$P/bin/lucent" run --plugin cmex/cmake.build/liborders.so --input "$sample" \
  --json > run2.json 2> run2.err || fail "CMake plugin: $(cat run2.err)"
[ "$(json run2.json "j['balanced'] and j['events_in']")" = 20 ] || fail "CMake plugin run"
nats_runs cmex/cmake.build/serve_nats
# The version file: this minor version is found, another is not.
mkdir vok vbad
IFS=. read -r maj min _ <<< "$ver"
for d in vok:$maj.$min vbad:$maj.$((min + 1)); do
  printf 'cmake_minimum_required(VERSION 3.16)\nproject(v C)\nfind_package(lucent %s REQUIRED)\n' \
    "${d#*:}" > "${d%%:*}/CMakeLists.txt"
done
cmake_cfg vok > v.log 2>&1 || fail "find_package(lucent $maj.$min): $(tail v.log)"
cmake_cfg vbad > v.log 2>&1 && fail "find_package(lucent $maj.$((min + 1))) found $ver"
grep -q "version: $ver" v.log || fail "version refusal: $(tail v.log)"
pass "find_package(lucent): the plugin, embed.c and serve_nats.c build and run; version checked"
echo "5 passed, 0 failed"
