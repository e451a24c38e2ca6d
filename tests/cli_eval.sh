#!/usr/bin/env bash
# gptoss eval --model M [--adapter DIR] --data FILE [--device cpu|cuda] [--json]: the issue's acceptance —
# on tiny models (bf16, MXFP4 and NF4 experts) with adapters that HF/PEFT made and saved
# (tests/fixtures/model, tests/ref/make_model_fixtures.py), the token-weighted mean loss over
# tests/fixtures/model/eval.jsonl equals HF's (eval_ref.json) within 1e-5 relative (both are fp32 on the
# same weights; they differ by summation order only, ~1e-7 measured). Then the devices: with a GPU
# (`gptoss version` lists one; scripts/gpu_check.sh runs this file on the GPU machine) --device cuda gives
# the CPU's loss within 1e-2 relative (the issue's bar: bf16 weights and GEMM operands round each product
# to ~2^-9 relative, fp32 accumulation; a few 1e-3 on these losses is expected); without one --device cuda
# fails naming the reason and auto is the CPU. Then the errors: an adapter for another base, a bad row,
# ids outside the vocabulary, usage mistakes. Conversation rows (messages, Multilingual-Thinking, flat): the
# same loss as their pre-tokenized twins that HF made (tests/fixtures/eval), HF's loss within 1e-5, and their
# errors (no tokenizer, a tokenizer for another model, bad rows by file:line).
set -uo pipefail
. "$(dirname "$0")/shell_util.sh"
cli_test_setup cli_eval
fix=tests/fixtures/model
data=$fix/eval.jsonl

ref() { # ref KEY: HF's loss from eval_ref.json
  sed -n "s|^ *\"$1\": \([-0-9.eE+]*\),\{0,1\}$|\1|p" "$fix/eval_ref.json"
}
json_field() { # json_field NAME FILE
  sed -n "s/.*\"$1\": \([-0-9.eE+]*\).*/\1/p" "$2"
}
close() { # close OURS REF TOL: |ours - ref| <= tol * |ref|
  awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; r = b < 0 ? -b : b; exit !(a != "" && d <= t * r) }'
}

for pair in bf16:none bf16:adapter_bf16 bf16:adapter_down mxfp4:none mxfp4:adapter_q nf4:none nf4:adapter_q; do
  base=${pair%%:*} adapter=${pair#*:}
  args=(eval --model "$fix/$base" --data "$data" --device cpu --json)
  [ "$adapter" = none ] || args+=(--adapter "$fix/$adapter")
  "$bin" "${args[@]}" >"$tmp/$base-$adapter.json" 2>"$tmp/$base-$adapter.err"; rc=$?
  check "$base + $adapter exits 0 (rc $rc: $(cat "$tmp/$base-$adapter.err"))" test $rc -eq 0
  ours=$(json_field mean_token_loss "$tmp/$base-$adapter.json")
  want=$(ref "$base/$adapter")
  check "$base + $adapter: ours $ours vs HF $want (1e-5 relative)" close "$ours" "$want" 1e-5
  check "$base + $adapter: token count" test "$(json_field tokens "$tmp/$base-$adapter.json")" = "$(ref tokens)"
  check "$base + $adapter: row count" test "$(json_field rows "$tmp/$base-$adapter.json")" = "$(ref rows)"
  echo "eval $base + $adapter: $ours (HF $want)"
done

# The sentence form.
"$bin" eval --model "$fix/bf16" --data "$data" --device cpu >"$tmp/plain" 2>/dev/null
check "plain output" grep -q "^mean next-token loss 4.58658[89] (perplexity .*) over 63 target tokens in 3 rows$" "$tmp/plain"

# An adapter made for another base: rejected, naming the tensor and the shapes.
"$bin" eval --model "$fix/bf16" --adapter "$fix/adapter_q" --data "$data" >/dev/null 2>"$tmp/err1"; rc=$?
check "adapter for another base exits 1" test $rc -eq 1
check "names the tensor and shapes ($(cat "$tmp/err1"))" \
  grep -q "adapter_q/adapter_model.safetensors: tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape \[3, 32\], expected \[3, 24\]" "$tmp/err1"

# A row whose labels are not the tokens, and ids outside the vocabulary (64): named by file:line.
printf '%s\n' '{"input_ids": [1, 2, 3]}' '{"input_ids": [1, 2, 3], "labels": [-100, 5, 3]}' >"$tmp/bad_labels.jsonl"
"$bin" eval --model "$fix/bf16" --data "$tmp/bad_labels.jsonl" >/dev/null 2>"$tmp/err2"; rc=$?
check "bad labels exit 1" test $rc -eq 1
check "bad labels named ($(cat "$tmp/err2"))" grep -q "bad_labels.jsonl:2: labels\[1\] = 5 is neither -100 nor input_ids\[1\]" "$tmp/err2"
printf '%s\n' '{"input_ids": [1, 2, 3]}' '{"input_ids": [1, 64, 3]}' >"$tmp/bad_ids.jsonl"
"$bin" eval --model "$fix/bf16" --data "$tmp/bad_ids.jsonl" >/dev/null 2>"$tmp/err3"; rc=$?
check "ids outside the vocabulary exit 1" test $rc -eq 1
check "ids outside the vocabulary named ($(cat "$tmp/err3"))" grep -q "bad_ids.jsonl:2: input_ids\[1\] = 64 is outside the model's vocabulary \[0, 64)" "$tmp/err3"

# Conversation rows (tests/fixtures/eval, tests/ref/make_eval_conv_fixture.py): Multilingual-Thinking rows,
# a developer multi-turn row and a flat row, and their pre-tokenized twins that HF's chat template machinery
# and HF `tokenizers` made without gptoss, one per template case (train_on, reasoning, date: the script's
# CASES). Same ids and labels -> the same computation: the loss must be equal to the last digit, and the
# token and row counts too. The model: tiny, vocabulary 3015 = the fixture tokenizer's (init-model).
conv=tests/fixtures/eval
"$bin" init-model --preset tiny --layers 2 --vocab 3015 --quant bf16 --seed 7 --out "$tmp/conv_model" >/dev/null
for c in "assistant medium 2025-08-05" "final low 2026-02-28" "all high 2025-08-05"; do
  read -r on effort date <<<"$c"
  args=(--train-on "$on" --reasoning "$effort" --date "$date")
  # The defaults of eval are the first case's (the config schema's pinned template.date included).
  [ "$on" = assistant ] && args=()
  "$bin" eval --model "$tmp/conv_model" --tokenizer tests/fixtures/tokenizer/tokenizer.json --data "$conv/conversations.jsonl" \
    "${args[@]}" --device cpu --json >"$tmp/conv-$on.json" 2>"$tmp/conv-$on.err"; rc=$?
  check "conversations ($on) exit 0 (rc $rc: $(cat "$tmp/conv-$on.err"))" test $rc -eq 0
  "$bin" eval --model "$tmp/conv_model" --data "$conv/tokens_$on.jsonl" --device cpu --json >"$tmp/tok-$on.json" 2>/dev/null
  check "conversations ($on): $(cat "$tmp/conv-$on.json") == pre-tokenized $(cat "$tmp/tok-$on.json")" \
    cmp -s "$tmp/conv-$on.json" "$tmp/tok-$on.json"
  echo "eval conversations --train-on $on: $(cat "$tmp/conv-$on.json")"
done
# Without a tokenizer in the model directory and no --tokenizer: conversation rows are refused naming the fix;
# pre-tokenized rows need none (above). Then the model directory's tokenizer.json is the default, and .gz reads.
"$bin" eval --model "$tmp/conv_model" --data "$conv/conversations.jsonl" >/dev/null 2>"$tmp/err_tok"; rc=$?
check "no tokenizer exits 1" test $rc -eq 1
check "no tokenizer names the row and --tokenizer ($(cat "$tmp/err_tok"))" grep -q \
  "conv_model has no tokenizer.json: pass --tokenizer FILE .*conversations.jsonl:1: a conversation row needs a tokenizer" "$tmp/err_tok"
cp tests/fixtures/tokenizer/tokenizer.json "$tmp/conv_model/"
gzip -c "$conv/conversations.jsonl" >"$tmp/conversations.jsonl.gz"
"$bin" eval --model "$tmp/conv_model" --data "$tmp/conversations.jsonl.gz" --device cpu --json >"$tmp/conv-gz.json" 2>/dev/null
check "the model's tokenizer.json and .gz: the same loss" cmp -s "$tmp/conv-gz.json" "$tmp/conv-assistant.json"
"$bin" eval --model "$tmp/conv_model" --tokenizer "$tmp/nope.json" --data "$conv/conversations.jsonl" >/dev/null 2>"$tmp/err_tok2"; rc=$?
check "missing --tokenizer file exits 1" test $rc -eq 1
check "missing --tokenizer file named ($(cat "$tmp/err_tok2"))" grep -q -- "--tokenizer $tmp/nope.json: no such file" "$tmp/err_tok2"
# A tokenizer with more ids than the model's vocabulary (64) belongs to another model.
"$bin" eval --model "$fix/bf16" --tokenizer tests/fixtures/tokenizer/tokenizer.json --data "$conv/conversations.jsonl" \
  >/dev/null 2>"$tmp/err_tok3"; rc=$?
check "a tokenizer for another model exits 1" test $rc -eq 1
check "a tokenizer for another model explained ($(cat "$tmp/err_tok3"))" grep -q "has 3015 ids but the model's vocabulary is 64" "$tmp/err_tok3"
# Bad conversation rows: file:line and the field.
bad_conv() { # bad_conv NAME ROW PATTERN: the row on line 2 after a good one is refused with FILE:2PATTERN
  { head -n 1 "$conv/conversations.jsonl"; printf '%s\n' "$2"; } >"$tmp/$1.jsonl"
  "$bin" eval --model "$tmp/conv_model" --data "$tmp/$1.jsonl" >/dev/null 2>"$tmp/$1.err"; rc=$?
  check "$1 exits 1" test $rc -eq 1
  check "$1 named ($(cat "$tmp/$1.err"))" grep -q "$1.jsonl:2:$3" "$tmp/$1.err"
}
bad_conv bad_role '{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}' \
  " messages\[0\].role: 'robot' is not supported"
bad_conv no_assistant '{"messages": [{"role": "user", "content": "hi"}]}' " no assistant turn"
bad_conv flat_no_final '{"user": "hi", "analysis": "x"}' " column 'final' (data.answer_column)"
bad_conv bad_json '{"messages": [' "14: invalid JSON" # line:column
"$bin" eval --model "$tmp/conv_model" --data "$conv/conversations.jsonl" --date 2025-13-01 >/dev/null 2>"$tmp/err_date"; rc=$?
check "bad --date exits 2" test $rc -eq 2
check "bad --date explained ($(cat "$tmp/err_date"))" grep -q "2025-13-01' is not a YYYY-MM-DD date" "$tmp/err_date"
"$bin" eval --model "$tmp/conv_model" --data "$conv/conversations.jsonl" --train-on user >/dev/null 2>"$tmp/err_on"; rc=$?
check "bad --train-on exits 2" test $rc -eq 2
check "bad --train-on lists the choices" grep -q "expected assistant, final or all" "$tmp/err_on"

# HF's loss on the pre-tokenized twin (tests/ref/eval_hf_loss.py: transformers in fp32) equals ours on the
# conversations within 1e-5 relative (fp32 both, summation order only). Without torch/transformers this part
# is skipped, unless GPTOSS_REQUIRE_PYTHON_REF=1 (scripts/test.sh sets it): then it fails.
py=${GPTOSS_PYTHON:-python3}
"$py" tests/ref/eval_hf_loss.py --model "$tmp/conv_model" --data "$conv/tokens_assistant.jsonl" >"$tmp/hf.json" 2>"$tmp/hf.err"; rc=$?
if [ $rc -eq 77 ] && [ "${GPTOSS_REQUIRE_PYTHON_REF:-0}" != 1 ]; then
  echo "skip: HF reference loss on conversations ($py cannot import torch/transformers/peft)"
else
  check "HF reference exits 0 (rc $rc: $(tail -n 3 "$tmp/hf.err"))" test $rc -eq 0
  hf=$(json_field mean_token_loss "$tmp/hf.json") ours=$(json_field mean_token_loss "$tmp/conv-assistant.json")
  check "conversations: ours $ours vs HF $hf (1e-5 relative)" close "$ours" "$hf" 1e-5
  check "conversations: HF token count" test "$(json_field tokens "$tmp/hf.json")" = "$(json_field tokens "$tmp/conv-assistant.json")"
  echo "eval conversations vs HF: ours $ours, HF $hf"
fi

# The devices.
"$bin" version >"$tmp/version"
if grep -q "^gpus: none" "$tmp/version"; then
  "$bin" eval --model "$fix/bf16" --data "$data" --device cuda >/dev/null 2>"$tmp/err4"; rc=$?
  check "--device cuda without a GPU exits 1" test $rc -eq 1
  if grep -q "^cuda: on" "$tmp/version"; then
    check "--device cuda says no GPU ($(cat "$tmp/err4"))" grep -q "^gptoss eval: --device cuda: no GPU found" "$tmp/err4"
  else
    check "--device cuda says no CUDA backend ($(cat "$tmp/err4"))" \
      grep -q "^gptoss eval: --device cuda: this build has no CUDA backend" "$tmp/err4"
  fi
  "$bin" eval --model "$fix/bf16" --data "$data" --device auto --json >"$tmp/auto.json" 2>/dev/null; rc=$?
  check "--device auto without a GPU exits 0" test $rc -eq 0
  check "--device auto without a GPU is the CPU" test "$(json_field mean_token_loss "$tmp/auto.json")" = \
    "$(json_field mean_token_loss "$tmp/bf16-none.json")"
else
  for pair in bf16:none bf16:adapter_bf16 bf16:adapter_down mxfp4:adapter_q nf4:adapter_q; do
    base=${pair%%:*} adapter=${pair#*:}
    args=(eval --model "$fix/$base" --data "$data" --device cuda --json)
    [ "$adapter" = none ] || args+=(--adapter "$fix/$adapter")
    "$bin" "${args[@]}" >"$tmp/cuda-$base-$adapter.json" 2>"$tmp/cuda-$base-$adapter.err"; rc=$?
    check "cuda $base + $adapter exits 0 (rc $rc: $(cat "$tmp/cuda-$base-$adapter.err"))" test $rc -eq 0
    gpu=$(json_field mean_token_loss "$tmp/cuda-$base-$adapter.json")
    cpu=$(json_field mean_token_loss "$tmp/$base-$adapter.json")
    check "cuda $base + $adapter: GPU $gpu vs CPU $cpu (1e-2 relative)" close "$gpu" "$cpu" 1e-2
    check "cuda $base + $adapter: token count" test "$(json_field tokens "$tmp/cuda-$base-$adapter.json")" = "$(ref tokens)"
    awk -v g="$gpu" -v c="$cpu" -v p="$pair" 'BEGIN { d = g - c; printf "eval --device cuda %s: GPU %s CPU %s rel diff %.2e\n", p, g, c, (d < 0 ? -d : d) / c }'
  done
  # Conversation rows on the GPU: the same documents, the same 1e-2 bar.
  "$bin" eval --model "$tmp/conv_model" --data "$conv/conversations.jsonl" --device cuda --json >"$tmp/cuda-conv.json" 2>"$tmp/cuda-conv.err"; rc=$?
  check "cuda conversations exit 0 (rc $rc: $(cat "$tmp/cuda-conv.err"))" test $rc -eq 0
  gpu=$(json_field mean_token_loss "$tmp/cuda-conv.json") cpu=$(json_field mean_token_loss "$tmp/conv-assistant.json")
  check "cuda conversations: GPU $gpu vs CPU $cpu (1e-2 relative)" close "$gpu" "$cpu" 1e-2
fi
"$bin" eval --model "$fix/bf16" --data "$data" --device tpu >/dev/null 2>"$tmp/err4b"; rc=$?
check "--device tpu exits 2" test $rc -eq 2
check "--device tpu lists the choices ($(cat "$tmp/err4b"))" grep -q "expected auto, cpu or cuda" "$tmp/err4b"

# Usage errors.
"$bin" eval --model "$fix/bf16" >/dev/null 2>"$tmp/err5"; rc=$?
check "missing --data exits 2" test $rc -eq 2
check "missing --data explained" grep -q "are required" "$tmp/err5"
"$bin" eval --modle "$fix/bf16" --data "$data" >/dev/null 2>"$tmp/err6"; rc=$?
check "unknown flag exits 2" test $rc -eq 2
check "unknown flag suggests --model" grep -q "did you mean --model" "$tmp/err6"
"$bin" eval --model "$tmp/no_such_model" --data "$data" >/dev/null 2>"$tmp/err7"; rc=$?
check "missing model exits 1" test $rc -eq 1
check "missing model named" grep -q "no_such_model" "$tmp/err7"

[ $fail -eq 0 ] && echo "cli_eval: ok"
exit $fail
