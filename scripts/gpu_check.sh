#!/usr/bin/env bash
# scripts/gpu_check.sh [BUILD_DIR]: everything the GPU machine checks, in one command (run from the repo
# root on that machine, with the build directory carried there; default build-gpu, made here by
# scripts/build_gpu.sh):
#   1. the GPU tests (tests/test_gpu_*: every op against the CPU reference, the optimizer, the whole step);
#   2. compute-sanitizer memcheck on the tiny model's training step (test_gpu_model --tiny);
#   3. gptoss init-model --preset gpt-oss-20b --quant mxfp4 (random weights, real shapes) into /tmp;
#   4. gptoss bench --batch 1 --seq 2048 --lora-r 8 --targets all --json on it (the bench/NOTES.md number).
# The test binaries run directly (not through ctest: ctest's files hold this machine's absolute paths).
# Logs go to $OUT when it is set (the device tool brings them back). Exit status: the number of failed parts.
# Example (device tool): run(command="bash scripts/gpu_check.sh build-gpu", carry=["build-gpu"])
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
out=${OUT:-/tmp/gptoss-gpu-check}
mkdir -p "$out"
fails=0
part() { # part NAME TIMEOUT CMD...: runs CMD with a time limit, logs to $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc in $((SECONDS - t0)) s"
    [ "$rc" -eq 0 ] || fails=$((fails + 1))
    return "$rc"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for t in "$build"/tests/test_gpu_*; do
    part "$(basename "$t")" 300 "$t"
done
if command -v compute-sanitizer >/dev/null; then
    part memcheck 300 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 1 \
        "$build/tests/test_gpu_model" --tiny
else
    echo "=== memcheck: compute-sanitizer not found"
    fails=$((fails + 1))
fi
model=/tmp/gptoss-20b-mxfp4
part init_model 400 "$build/gptoss" init-model --preset gpt-oss-20b --quant mxfp4 --out "$model" &&
    part bench 400 "$build/gptoss" bench --model "$model" --batch 1 --seq 2048 --lora-r 8 --targets all --json
echo "gpu_check: $fails part(s) failed"
exit "$fails"
