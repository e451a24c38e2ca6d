#!/usr/bin/env bash
# scripts/gpu_check.sh [BUILD_DIR [PART...]]: everything the GPU machine checks, in one command (run from the
# repo root on that machine, with the build directory carried there; default build-gpu-bundle, made here by
# scripts/build_gpu.sh). PARTs run in the order given (default: all of them in this order):
#   tests    the GPU tests (tests/test_gpu_*: every op against the CPU reference, the optimizer, the step);
#   eval     tests/cli_eval.sh, which on a machine with a GPU also checks gptoss eval --device cuda against
#            --device cpu (1e-2 relative) on the fixture models (bf16, MXFP4, NF4) with PEFT adapters;
#   train    configs/tiny.yaml (a fresh tiny model from init-model) trained 30 steps with device cpu
#            and cuda, the same seeds: tests/ref/compare_curves.py checks that the GPU follows the CPU's
#            loss curve (its docstring states the tolerances); then on the GPU: the run stopped at its
#            step-20 checkpoint and resumed gives the straight run's step 21 loss bit for bit (the restored
#            parameters) and steps 22-30 within 1e-3 (the GPU backward is not bitwise reproducible from one
#            process to the next: measured 4e-5 on step 21's gradient norm, 1.8e-4 at most on later losses,
#            bench/NOTES.md), and the NaN-injection hook (GPTOSS_TEST_INJECT_NAN_STEP) is skipped under
#            nan_policy skip and stops under stop;
#   memcheck compute-sanitizer memcheck on the tiny model's step, optimizer included (test_gpu_model --tiny: no
#            stream-hold checks there, the sanitizer makes every launch wait);
#   bench    gptoss init-model --preset gpt-oss-20b --quant mxfp4 (random weights, real shapes) into /tmp,
#            then gptoss bench --batch 1 --seq 2048 --lora-r 8 --targets all --json (bench/NOTES.md).
# The test binaries run directly (not through ctest: ctest's files hold this machine's absolute paths).
# Logs go to $OUT when it is set (the device tool brings them back). Exit status: the number of failed parts.
# Example (device tool): run(command="bash scripts/gpu_check.sh build-gpu-bundle", carry=["build-gpu-bundle"])
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu-bundle}
shift
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(tests eval train memcheck bench)
bin=$build/gptoss
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

part_tests() {
    for t in "$build"/tests/test_gpu_*; do
        part "$(basename "$t")" 300 "$t"
    done
}

part_eval() {
    part cli_eval 120 env "GPTOSS_BIN=$bin" GPTOSS_TMP=/tmp/gptoss-gpu-check-tmp bash tests/cli_eval.sh
}

# The tiny training run on the CPU and the GPU, their curves compared; resume and the NaN hook on the GPU.
part_train() {
    local tiny=/tmp/gptoss-tiny-model runs=/tmp/gptoss-gpu-runs
    rm -rf "$tiny" "$runs"
    part tiny_model 60 "$bin" init-model --preset tiny --vocab 3015 --seed 0 --out "$tiny" || return
    cp tests/fixtures/tokenizer/tokenizer.json "$tiny/"
    local args=(train configs/tiny.yaml --set "model.name=$tiny" --set "train.out_dir=$runs" --set train.max_steps=30
                --set eval.every_steps=10 --set checkpoint.every_steps=10 --set checkpoint.keep_last=3
                --set log.every_steps=10)
    part train_cpu 200 "$bin" "${args[@]}" --set train.name=cpu --set device.type=cpu
    part train_cuda 120 "$bin" "${args[@]}" --set train.name=cuda --set device=cuda || return
    part train_curves 30 python3 tests/ref/compare_curves.py "$runs/cpu" "$runs/cuda"
    # Resume: back to the step-20 checkpoint, then on to 30: step 21 exact, then the straight run's curve.
    cp -r "$runs/cuda" "$runs/cuda-straight"
    rm -rf "$runs/cuda/checkpoints/step-00000030" "$runs/cuda/adapter"
    part train_cuda_resume 120 "$bin" "${args[@]}" --set train.name=cuda --set device.type=cuda --resume "$runs/cuda" &&
        part train_cuda_resume_curves 30 python3 tests/ref/compare_curves.py "$runs/cuda-straight" "$runs/cuda" \
            --exact-through 21 --tol-step 1e-3 --tol-mean 1e-3 --tol-first 0 --tol-first-gnorm 0
    # The NaN hook on the GPU: step 3's gradient is poisoned on the device.
    local nan=(--set device.type=cuda --set train.max_steps=6 --set eval.every_steps=0 --set checkpoint.every_steps=0)
    part train_cuda_nan_skip 60 env GPTOSS_TEST_INJECT_NAN_STEP=3 "$bin" "${args[@]}" "${nan[@]}" --set train.name=nan-skip &&
        part train_cuda_nan_skip_metrics 5 grep -q '"type": *"skip", *"step": *3' "$runs/nan-skip/metrics.jsonl"
    timeout 60 env GPTOSS_TEST_INJECT_NAN_STEP=3 "$bin" "${args[@]}" "${nan[@]}" --set train.name=nan-stop \
        --set train.nan_policy=stop >"$out/train_cuda_nan_stop.log" 2>&1
    local rc=$?
    echo "=== train_cuda_nan_stop: exit $rc (want 1 and 'step 3: non-finite gradient')"
    [ $rc -eq 1 ] && grep -q "step 3: non-finite gradient" "$out/train_cuda_nan_stop.log" || fails=$((fails + 1))
    cp "$runs/cpu/metrics.jsonl" "$out/metrics_cpu.jsonl"
    cp "$runs/cuda-straight/metrics.jsonl" "$out/metrics_cuda.jsonl"
}

part_memcheck() {
    if command -v compute-sanitizer >/dev/null; then
        part memcheck 300 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 1 \
            "$build/tests/test_gpu_model" --tiny
    else
        echo "=== memcheck: compute-sanitizer not found"
        fails=$((fails + 1))
    fi
}

part_bench() {
    local model=/tmp/gptoss-20b-mxfp4
    part init_model 400 "$bin" init-model --preset gpt-oss-20b --quant mxfp4 --out "$model" &&
        part bench 400 "$bin" bench --model "$model" --batch 1 --seq 2048 --lora-r 8 --targets all --json
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for p in "${parts[@]}"; do
    case $p in
    tests | eval | train | memcheck | bench) "part_$p" ;;
    *) echo "gpu_check: unknown part '$p' (tests, eval, train, memcheck, bench)"; fails=$((fails + 1)) ;;
    esac
done
echo "gpu_check: $fails part(s) failed"
exit "$fails"
