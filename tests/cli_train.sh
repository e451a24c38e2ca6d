#!/usr/bin/env bash
# gptoss train / gptoss-train end to end on a tiny random model (init-model) with the fixture tokenizer:
#   - a straight run: log lines (not a terminal), metrics.jsonl, loss.svg, keep_last, PEFT adapter files;
#   - an existing run directory is refused; --overwrite clears what the old run wrote;
#   - a second run interrupted by SIGINT (exit 130, complete checkpoint), resumed under a file-size limit
#     (`ulimit -f`, a full disk: exit 1, the last complete checkpoint intact), resumed and stopped by SIGTERM
#     (exit 143), resumed to the end: its adapter and every step's loss equal the straight run's, bit for bit;
#   - NaN injection (GPTOSS_TEST_INJECT_NAN_STEP): skipped and logged, or the run stops (nan_policy stop);
#   - without a GPU, device cuda is refused before anything is written, naming the reason (no GPU, or a
#     build without CUDA), and auto trains on the CPU (scripts/gpu_check.sh trains on the GPU machine);
#   - a run directory under a regular file is an error.
set -uo pipefail
. "$(dirname "$0")/shell_util.sh"
cli_test_setup cli_train

"$bin" init-model --preset tiny --layers 1 --vocab 3015 --quant bf16 --seed 3 --out "$tmp/model" >/dev/null || exit 1
cp tests/fixtures/tokenizer/tokenizer.json "$tmp/model/"
cfg=$tmp/t.yaml
cat >"$cfg" <<EOF
model:
  name: $tmp/model
data:
  path: data/samples/multilingual_sample.jsonl
  format: messages
  max_seq_len: 64
  max_rows: 24
  val_fraction: 0.2
  cache_dir: $tmp/cache
template:
  date: "2025-08-05"
  train_on: all
lora:
  rank: 4
optim:
  lr: 0.003
  warmup_steps: 2
train:
  out_dir: $tmp/runs
  epochs: 100
  max_steps: 24
  batch_size: 2
checkpoint:
  every_steps: 4
  keep_last: 2
eval:
  every_steps: 10
  max_batches: 1
log:
  every_steps: 5
device:
  type: cpu
  threads: 1   # fast and steady on a loaded 2-core machine (the CPU ops are bitwise the same for any count)
EOF
runs=$tmp/runs

# step -> loss of a run's train lines, sorted by step
losses() { sed -n 's/.*"type":"train","step":\([0-9]*\),.*"loss":\([^,]*\),.*/\1 \2/p' "$1/metrics.jsonl" | sort -n; }
# waits until FILE has at least N lines (or 120 s)
wait_lines() {
  for _ in $(seq 2400); do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
complete_ckpts() { ls -d "$1"/checkpoints/step-*/COMPLETE 2>/dev/null | wc -l; }

# --- straight run, through the gptoss-train name
"$(dirname "$bin")/gptoss-train" "$cfg" --set train.name=straight >"$tmp/out1" 2>"$tmp/err1"; rc=$?
check "straight run exits 0 (rc $rc: $(tail -3 "$tmp/err1"))" test $rc -eq 0
s=$runs/straight
check "plain log line every 5 steps" grep -q "^step 10/24 loss " "$tmp/err1"
check "no log line at step 7" bash -c "! grep -q '^step 7/24' '$tmp/err1'"
check "optimizer memory printed" grep -q "optimizer adamw (fp32) state" "$tmp/err1"
check "24 train lines" test "$(grep -c '"type":"train"' "$s/metrics.jsonl")" -eq 24
check "4 eval lines (steps 0, 10, 20, 24)" test "$(grep -c '"type":"eval"' "$s/metrics.jsonl")" -eq 4
check "loss.svg" grep -q "<polyline" "$s/loss.svg"
check "train.log" grep -q "done: 24 steps" "$s/train.log"
check "keep_last 2: steps 20 and 24" test "$(ls "$s/checkpoints")" = "$(printf 'step-00000020\nstep-00000024')"
check "adapter safetensors" test -s "$s/adapter/adapter_model.safetensors"
for key in '"peft_type": "LORA"' '"task_type": "CAUSAL_LM"' '"r": 4' '"lora_alpha": 16' '"use_rslora": false' \
  '"target_modules"' '"target_parameters"' "\"base_model_name_or_path\": \"$tmp/model\""; do
  check "adapter_config.json has $key" grep -qF "$key" "$s/adapter/adapter_config.json"
done
check "loss falls" awk 'NR==1{a=$2} END{exit !($2 < a)}' <(losses "$s")

# --- an existing run directory
"$bin" train "$cfg" --set train.name=straight >/dev/null 2>"$tmp/err2"; rc=$?
check "existing run dir exits 1" test $rc -eq 1
check "existing run dir: the ways out" grep -q "already exists. Continue that run with --resume" "$tmp/err2"
"$bin" train "$cfg" --set train.name=ow --set train.max_steps=3 >/dev/null 2>&1
mkdir -p "$runs/ow/checkpoints/step-00000099" && echo '{}' >"$runs/ow/checkpoints/step-00000099/COMPLETE"
echo keep >"$runs/ow/notes.txt"
"$bin" train "$cfg" --set train.name=ow --set train.max_steps=3 --set log.progress=on --overwrite >/dev/null \
  2>"$tmp/err3"; rc=$?
check "--overwrite exits 0 ($(tail -2 "$tmp/err3"))" test $rc -eq 0
check "--overwrite removed the old checkpoints" test ! -e "$runs/ow/checkpoints/step-00000099"
check "--overwrite keeps files it did not write" test -f "$runs/ow/notes.txt"
check "--overwrite: a fresh metrics.jsonl" test "$(grep -c '"type":"train"' "$runs/ow/metrics.jsonl")" -eq 3
check "progress bar drawn (log.progress on)" grep -q $'\r\033\\[K\\[#' "$tmp/err3"

# --- SIGINT, a full disk, SIGTERM, then to the end: the same bits as the straight run
r=$runs/sig
"$bin" train "$cfg" --set train.name=sig >/dev/null 2>"$tmp/err4" &
pid=$!
wait_lines "$r/metrics.jsonl" 3
kill -INT $pid
wait $pid; rc=$?
check "SIGINT exits 130 (rc $rc)" test $rc -eq 130
check "SIGINT message" grep -q "SIGINT: stopping after step" "$tmp/err4"
check "SIGINT says how to resume" grep -q -- "--resume $r" "$tmp/err4"
check "SIGINT left a complete checkpoint" test "$(complete_ckpts "$r")" -ge 1
first=$(ls -d "$r"/checkpoints/step-* | tail -1)

(ulimit -f 64; exec "$bin" train "$cfg" --set train.name=sig --resume "$r" >/dev/null 2>"$tmp/err5"); rc=$?
check "full disk exits 1 (rc $rc)" test $rc -eq 1
check "full disk: clear error" grep -q "write failed: File too large" "$tmp/err5"
check "full disk: the last complete checkpoint is named" grep -q "the last complete checkpoint, $first, is intact" "$tmp/err5"
check "full disk: $first still complete" test -f "$first/COMPLETE"
check "full disk: no unfinished checkpoint left" test "$(ls -d "$r"/checkpoints/step-* | wc -l)" -eq "$(complete_ckpts "$r")"

n=$(wc -l <"$r/metrics.jsonl")
"$bin" train "$cfg" --set train.name=sig --resume "$r" >/dev/null 2>"$tmp/err6" &
pid=$!
wait_lines "$r/metrics.jsonl" $((n + 3))
kill -TERM $pid
wait $pid; rc=$?
check "SIGTERM exits 143 (rc $rc)" test $rc -eq 143
"$bin" train "$cfg" --set train.name=sig --resume "$r" >/dev/null 2>"$tmp/err7"; rc=$?
check "final resume exits 0 (rc $rc: $(tail -2 "$tmp/err7"))" test $rc -eq 0
check "resumed runs: the same adapter, bit for bit" cmp "$s/adapter/adapter_model.safetensors" "$r/adapter/adapter_model.safetensors"
check "resumed runs: the same loss at every step" diff <(losses "$s") <(losses "$r")
check "resumed runs: one line per step" test "$(grep -c '"type":"train"' "$r/metrics.jsonl")" -eq 24

# --- NaN injection
GPTOSS_TEST_INJECT_NAN_STEP=2 "$bin" train "$cfg" --set train.name=nan --set train.max_steps=3 >/dev/null \
  2>"$tmp/err8"; rc=$?
check "nan skip exits 0" test $rc -eq 0
check "nan skip reported" grep -q "step 2: non-finite gradient .*skipped, not applied" "$tmp/err8"
check "nan skip in metrics" grep -q '"type":"skip","step":2' "$runs/nan/metrics.jsonl"
GPTOSS_TEST_INJECT_NAN_STEP=2 "$bin" train "$cfg" --set train.name=nanstop --set train.max_steps=3 \
  --set train.nan_policy=stop >/dev/null 2>"$tmp/err9"; rc=$?
check "nan stop exits 1" test $rc -eq 1
check "nan stop reported" grep -q "step 2: non-finite gradient .*stopped (train.nan_policy: stop)" "$tmp/err9"

# --- device and unwritable places
"$bin" version >"$tmp/version"
if grep -q "^gpus: none" "$tmp/version"; then
  "$bin" train "$cfg" --set train.name=gpu --set device.type=cuda >/dev/null 2>"$tmp/err10"; rc=$?
  check "cuda without a GPU exits 1" test $rc -eq 1
  if grep -q "^cuda: on" "$tmp/version"; then
    check "cuda: clear error ($(cat "$tmp/err10"))" grep -q "^gptoss train: device.type cuda: no GPU found" "$tmp/err10"
  else
    check "cuda: clear error ($(cat "$tmp/err10"))" \
      grep -q "^gptoss train: device.type cuda: this build has no CUDA backend" "$tmp/err10"
  fi
  check "cuda: nothing written" test ! -e "$runs/gpu"
  "$bin" train "$cfg" --set train.name=auto --set device.type=auto --set train.max_steps=3 >/dev/null \
    2>"$tmp/err10b"; rc=$?
  check "auto without a GPU exits 0" test $rc -eq 0
  check "auto without a GPU trains on the CPU" grep -q "device: cpu" "$runs/auto/train.log"
fi
echo x >"$tmp/afile"
"$bin" train "$cfg" --set "train.out_dir=$tmp/afile/runs" >/dev/null 2>"$tmp/err11"; rc=$?
check "run dir under a file exits 1" test $rc -eq 1
check "run dir under a file: names the path" grep -q "$tmp/afile" "$tmp/err11"

if [ $fail -ne 0 ]; then echo "cli_train: FAILED" >&2; exit 1; fi
echo "cli_train: ok"
