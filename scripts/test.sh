#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls it):
#   1. release build with warnings as errors, all ctest tests (GPU tests skip without a GPU)
#   2. ASan + UBSan build, the CPU tests again
#   3. libFuzzer targets (clang), GPTOSS_FUZZ_SECONDS each (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
GPTOSS_FUZZ_DEPS=1 bash scripts/deps.sh
jobs=$(nproc)
# ctest runs tests side by side: OpenMP threads sleep instead of spinning at barriers, so parallel
# tests don't starve each other on a small machine.
export OMP_WAIT_POLICY=PASSIVE

echo "== release build + tests"
bash scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DGPTOSS_WERROR=ON
(cd build && ctest --output-on-failure -j"$jobs")

echo "== ASan + UBSan build + CPU tests"
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DGPTOSS_WERROR=ON -DGPTOSS_SANITIZE=ON -DGPTOSS_CUDA=OFF
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -L cpu -j"$jobs")

echo "== libFuzzer targets"
CC=clang bash scripts/build.sh build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGPTOSS_FUZZ=ON -DGPTOSS_CUDA=OFF
secs=${GPTOSS_FUZZ_SECONDS:-30}
for f in build-fuzz/tests/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  mkdir -p "build-fuzz/corpus/$name"
  seeds=tests/fuzz/seeds/$name
  [ -d "$seeds" ] || seeds=
  echo "-- $name for ${secs}s"
  "$f" -max_total_time="$secs" -print_final_stats=0 "build-fuzz/corpus/$name" $seeds 2>&1 | tail -n 3
done
echo "gptoss: all test stages passed"
