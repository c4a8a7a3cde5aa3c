#!/usr/bin/env bash
# install_tests.sh BUILD_DIR SOURCE_DIR [CFLAGS [CC]] - `cmake --install` into a temporary prefix, then
# what a user of the installed bioflex does: run the installed programs, and build and run a program
# of their own (tests/install_consumer.c) with `pkg-config --cflags --libs bioflex`. CFLAGS: the
# build's own C flags, added to the consumer's (e.g. -fsanitize=address in a sanitizer build, whose
# library needs the sanitizer's runtime at link time). CC: the build's C compiler (default cc): the
# .pc file's OpenMP flag is that compiler's (clang's -fopenmp=libomp is no GCC option).
set -uo pipefail
build=$1 src=$2 build_cflags=${3:-} compiler=${4:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }
for prog in bioflex-train bioflex-eval bioflex-prep bioflex-make-jpeg-tree; do
  [ -x "$tmp/prefix/bin/$prog" ] || fail "$prog not installed under bin/"
done
"$tmp/prefix/bin/bioflex-train" --version | grep -Eq "bioflex-train [0-9]+\.[0-9]+" || fail "installed bioflex-train --version"
[ -f "$tmp/prefix/include/bioflex/ops.h" ] || fail "headers not installed under include/bioflex/"
[ -d "$tmp/prefix/share/bioflex/configs" ] || fail "configs not installed under share/bioflex/"
pc=$(find "$tmp/prefix" -name bioflex.pc)
[ -n "$pc" ] || fail "bioflex.pc not installed"
libs=$(find "$tmp/prefix" -name libbioflex.a)
[ -n "$libs" ] || fail "libbioflex.a not installed"

PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
flags=$(pkg-config --cflags --libs bioflex) || fail "pkg-config bioflex"
printf '[run]\nepochs = 7\n[optim]\nlr = 0.25\n' > "$tmp/my.ini"
# shellcheck disable=SC2086 # both are lists of flags
"$compiler" -std=c11 $build_cflags -o "$tmp/consumer" "$src/tests/install_consumer.c" $flags 2>"$tmp/cc.log" || { cat "$tmp/cc.log"; fail "building a program against the installed library: $compiler ... $flags"; }
out=$("$tmp/consumer" "$tmp/my.ini") || fail "the program linked against the installed library: $out"
echo "$out"
grep -q "epochs 7, lr 0.25; relu: ok" <<<"$out" || fail "unexpected output: $out"
echo "install: programs, headers, configs, libbioflex.a and bioflex.pc installed; a program built with pkg-config runs"
