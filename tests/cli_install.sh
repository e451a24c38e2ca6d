#!/usr/bin/env bash
# `cmake --install` puts gptoss and the gptoss-train symlink into the prefix, and both names work.
set -u
build=$(dirname "$GPTOSS_BIN")
prefix="$GPTOSS_TMP/cli_install/prefix"
rm -rf "$prefix" && mkdir -p "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null || { echo "FAIL: cmake --install"; exit 1; }
[ -x "$prefix/bin/gptoss" ] || { echo "FAIL: no $prefix/bin/gptoss"; exit 1; }
[ -L "$prefix/bin/gptoss-train" ] || { echo "FAIL: $prefix/bin/gptoss-train is not a symlink"; exit 1; }
[ "$(readlink "$prefix/bin/gptoss-train")" = gptoss ] || { echo "FAIL: gptoss-train points elsewhere"; exit 1; }
"$prefix/bin/gptoss-train" --help | grep -q "usage: gptoss train" || { echo "FAIL: gptoss-train --help"; exit 1; }
"$prefix/bin/gptoss" version | grep -q "^gptoss " || { echo "FAIL: gptoss version"; exit 1; }
echo "cli_install: ok"
