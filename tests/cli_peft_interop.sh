#!/usr/bin/env bash
# The adapter `gptoss train` exports, loaded by PEFT onto HF's GptOssForCausalLM (tests/ref/check_peft_interop.py):
# a tiny bf16 random model (init-model), a short training run (all seven targets, rslora), then on
# pre-tokenized rows HF+PEFT's mean token loss must equal `gptoss eval --adapter RUN/adapter` (1e-5 relative).
# Also: the final checkpoint directory works as an adapter too (same loss as RUN/adapter).
#
# Python: $GPTOSS_PYTHON (scripts/test.sh sets it to its cached virtualenv), else python3. Without torch,
# transformers and peft the test is skipped (77), unless GPTOSS_REQUIRE_PYTHON_REF=1 (scripts/test.sh sets it,
# so that CI cannot pass by skipping): then it fails.
set -uo pipefail
. "$(dirname "$0")/shell_util.sh"
cli_test_setup cli_peft_interop
py=${GPTOSS_PYTHON:-python3}

if ! "$py" -c 'import torch, transformers, peft, safetensors' 2>"$tmp/import.err"; then
  if [ "${GPTOSS_REQUIRE_PYTHON_REF:-0}" = 1 ]; then
    echo "FAIL: $py cannot import torch/transformers/peft/safetensors: $(tail -n 1 "$tmp/import.err")" >&2
    exit 1
  fi
  echo "skip: $py cannot import torch/transformers/peft/safetensors (scripts/test.sh sets up a virtualenv)"
  exit 77
fi

"$bin" init-model --preset tiny --layers 2 --vocab 3015 --quant bf16 --seed 5 --out "$tmp/model" >/dev/null || exit 1
cp tests/fixtures/tokenizer/tokenizer.json "$tmp/model/"
cat >"$tmp/t.yaml" <<EOF
model:
  name: $tmp/model
data:
  path: data/samples/multilingual_sample.jsonl
  format: messages
  max_seq_len: 128
  max_rows: 16
  cache_dir: $tmp/cache
template:
  date: "2025-08-05"
  train_on: all
lora:
  rank: 4
  alpha: 8
  use_rslora: true
  targets: all
optim:
  lr: 0.02
  warmup_steps: 1
train:
  out_dir: $tmp/runs
  epochs: 10
  max_steps: 12
  batch_size: 2
checkpoint:
  every_steps: 0
log:
  progress: off
device:
  type: cpu
  threads: 1
EOF
"$bin" train "$tmp/t.yaml" >/dev/null 2>"$tmp/train.err"; rc=$?
check "train exits 0 (rc $rc: $(tail -n 1 "$tmp/train.err"))" test $rc -eq 0
run=$tmp/runs/t

# Pre-tokenized rows (HF labels: unshifted, -100 ignored), fixed by the seed of bash's generator.
RANDOM=7
for len in 37 64 20; do
  ids="" labels=""
  for ((i = 0; i < len; i++)); do
    id=$((RANDOM % 3005))
    ids+="${ids:+,}$id"
    if [ $i -lt 5 ]; then labels+="${labels:+,}-100"; else labels+="${labels:+,}$id"; fi
  done
  echo "{\"input_ids\": [$ids], \"labels\": [$labels]}"
done >"$tmp/rows.jsonl"

"$bin" eval --model "$tmp/model" --adapter "$run/adapter" --data "$tmp/rows.jsonl" --json >"$tmp/ours.json" \
  2>"$tmp/eval.err" || { echo "FAIL: gptoss eval --adapter: $(tail -n 1 "$tmp/eval.err")" >&2; exit 1; }
"$bin" eval --model "$tmp/model" --data "$tmp/rows.jsonl" --json >"$tmp/base.json" 2>>"$tmp/eval.err" ||
  { echo "FAIL: gptoss eval (base): $(tail -n 1 "$tmp/eval.err")" >&2; exit 1; }
ckpt=$(ls -d "$run"/checkpoints/step-* | tail -n 1)
"$bin" eval --model "$tmp/model" --adapter "$ckpt" --data "$tmp/rows.jsonl" --json >"$tmp/ckpt.json" 2>>"$tmp/eval.err"
check "the final checkpoint as an adapter: the same loss" cmp "$tmp/ours.json" "$tmp/ckpt.json"

"$py" tests/ref/check_peft_interop.py --base "$tmp/model" --adapter "$run/adapter" --data "$tmp/rows.jsonl" \
  --ours "$tmp/ours.json" --ours-base "$tmp/base.json" >"$tmp/check.out" 2>&1; rc=$?
grep -v "^Failed to load\|kernels" "$tmp/check.out"
check "check_peft_interop.py (rc $rc)" test $rc -eq 0

if [ $fail -ne 0 ]; then echo "cli_peft_interop: FAILED" >&2; exit 1; fi
echo "cli_peft_interop: ok"
