#!/usr/bin/env bash
# gptoss export, on the tiny fixture models and their PEFT-made adapters (tests/fixtures/model):
#   - adapter export (from an adapter directory with --model, and from a run directory's adapter/ with the base
#     taken from adapter_config.json): the exported adapter gives the same `gptoss eval` loss as the original
#     (to the printed digits: the tensors are copied, fp32 in and out);
#   - merged export, bf16 and MXFP4: config.json, model.safetensors, and the tokenizer and generation files
#     copied from the base; the output says how the experts were stored; then tests/ref/check_merged_export.py
#     loads each export with HF transformers, compares HF's loss with ours on the export (1e-5 relative) and
#     the bf16 weights with PEFT's merge_and_unload (1 bf16 ulp) -- skipped (exit 77 at the end, after the other
#     checks) when python3 cannot import torch/transformers/peft;
#   - mistakes: no --model for an adapter whose base is null, --merged without --model, --quant for an adapter
#     export, an adapter passed as --model.
set -uo pipefail
. "$(dirname "$0")/shell_util.sh"
cli_test_setup cli_export
has() { grep -qF -- "$2" "$1"; }
expect_fail() { # expect_fail NAME TEXT COMMAND...: non-zero exit and TEXT in stderr
  "${@:3}" >"$tmp/$1.out" 2>"$tmp/$1.err"; local rc=$?
  check "$1: non-zero exit" test $rc -ne 0
  check "$1: message '$2' (got: $(tail -n 1 "$tmp/$1.err"))" has "$tmp/$1.err" "$2"
}
fix=tests/fixtures/model
loss() { "$bin" eval --data "$fix/eval.jsonl" --json "$@" 2>/dev/null | sed -n 's/.*"mean_token_loss": \([-0-9.eE+]*\).*/\1/p'; }

# --- adapter export
check "adapter export" "$bin" export --adapter "$fix/adapter_bf16" --model "$fix/bf16" --out "$tmp/a1"
check "adapter export writes adapter_config.json" test -f "$tmp/a1/adapter_config.json"
want=$(loss --model "$fix/bf16" --adapter "$fix/adapter_bf16")
got=$(loss --model "$fix/bf16" --adapter "$tmp/a1")
check "exported adapter: same eval loss ($got vs $want)" test -n "$want" -a "$got" = "$want"
# From a run directory: its adapter/, the base from the adapter's own config.
mkdir -p "$tmp/run/adapter"
cp "$tmp/a1"/* "$tmp/run/adapter/"
check "export from a run directory" "$bin" export --adapter "$tmp/run" --out "$tmp/a2"
got=$(loss --model "$fix/bf16" --adapter "$tmp/a2")
check "run-dir export: same eval loss ($got vs $want)" test "$got" = "$want"
expect_fail null_base "does not name its base (base_model_name_or_path is null): pass --model BASE" \
  "$bin" export --adapter "$fix/adapter_bf16" --out "$tmp/a3"
expect_fail quant_for_adapter "--quant is for --merged exports" \
  "$bin" export --adapter "$fix/adapter_bf16" --model "$fix/bf16" --quant mxfp4 --out "$tmp/a4"

# --- merged export
cp tests/fixtures/tokenizer/tokenizer.json "$tmp/tokenizer.json"
mkdir -p "$tmp/base_bf16" && cp "$fix/bf16"/* "$tmp/base_bf16/" && printf '{"eos_token_id": [63]}\n' >"$tmp/base_bf16/generation_config.json"
cp "$tmp/tokenizer.json" "$tmp/base_bf16/" # copied along, whatever its vocabulary
"$bin" export --merged --model "$tmp/base_bf16" --adapter "$fix/adapter_bf16" --out "$tmp/m16" >"$tmp/m16.out" 2>&1; rc=$?
check "merged bf16 export exits 0 (rc $rc: $(tail -n 1 "$tmp/m16.out"))" test $rc -eq 0
check "merged bf16: says the experts were kept bf16" has "$tmp/m16.out" "experts kept bf16"
for f in config.json model.safetensors generation_config.json tokenizer.json; do
  check "merged bf16 export has $f" test -f "$tmp/m16/$f"
done
"$bin" export --merged --model "$fix/mxfp4" --adapter "$fix/adapter_q" --quant mxfp4 --out "$tmp/m4" >"$tmp/m4.out" 2>&1; rc=$?
check "merged mxfp4 export exits 0 (rc $rc)" test $rc -eq 0
check "merged mxfp4: says the experts were requantized" has "$tmp/m4.out" "requantized to mxfp4"
check "merged mxfp4: quantization_config in config.json" grep -q '"mxfp4"' "$tmp/m4/config.json"
expect_fail merged_no_model "--merged needs --model" "$bin" export --merged --adapter "$fix/adapter_q" --out "$tmp/x"
expect_fail merged_adapter_as_model "not a model: pass it as --adapter" \
  "$bin" export --merged --model "$fix/adapter_q" --adapter "$fix/adapter_q" --out "$tmp/x"
expect_fail merged_bad_quant "--quant 'nf4': bf16 or mxfp4" \
  "$bin" export --merged --model "$fix/mxfp4" --adapter "$fix/adapter_q" --quant nf4 --out "$tmp/x"

# --- HF transformers loads the exports (tests/ref/check_merged_export.py)
skip=0
if python3 -c 'import torch, transformers, peft, safetensors' 2>/dev/null; then
  cases=()
  for pair in base_bf16:adapter_bf16:m16 mxfp4:adapter_q:m4; do
    IFS=: read -r base adapter out <<<"$pair"
    bdir=$fix/$base; [ "$base" = base_bf16 ] && bdir=$tmp/base_bf16
    "$bin" eval --model "$tmp/$out" --data "$fix/eval.jsonl" --json >"$tmp/$out.eval.json" 2>/dev/null
    cases+=(--case "$bdir,$fix/$adapter,$tmp/$out,$tmp/$out.eval.json")
  done
  python3 tests/ref/check_merged_export.py --data "$fix/eval.jsonl" "${cases[@]}" >"$tmp/check.out" 2>&1; rc=$?
  grep -E "^==|mean token loss|weights vs|logits" "$tmp/check.out"
  check "check_merged_export.py (rc $rc: $(tail -n 1 "$tmp/check.out"))" test $rc -eq 0
else
  echo "skip: python3 cannot import torch/transformers/peft (the HF interop check)"
  skip=1
fi
[ $fail -ne 0 ] && exit 1
[ $skip -eq 1 ] && exit 77
echo "cli_export: ok"
