#!/usr/bin/env bash
# scripts/build.sh DIR [cmake args...]: configure (once) and build gptoss into DIR.
set -euo pipefail
dir=$1; shift
cmake -S "$(dirname "$0")/.." -B "$dir" "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
