#!/usr/bin/env bash
# gptoss chat, end to end on the CPU:
#   - a "scripted" model (tests/ref/make_scripted_model.py turns an init-model tiny model into a bigram model
#     whose greedy output is <|channel|>analysis<|message|>THINKING<|end|>ANSWER<|return|>): the answer must
#     appear (generation goes on after the analysis message's <|end|>), the thinking must not (unless
#     --show-thinking, labelled), it ends by <|return|> after exactly the script's tokens, tokens/s is
#     reported; a generation_config.json that lists <|end|> as eos is warned about and ignored;
#     --max-new-tokens cuts inside the thinking with a note; --batch answers a JSONL file; the REPL's
#     commands (/effort, /think, /system, /reset, unknown ones, /quit) with piped stdin;
#   - the loading mistakes (issue item 2), each with its message and a non-zero exit: an adapter, a training
#     checkpoint and a run directory passed as --model, a model passed as --adapter, an adapter for other
#     shapes, an adapter whose base_model_name_or_path names another model (and --ignore-base-mismatch);
#   - --merge says whether the merged experts were kept bf16 or requantized.
# Needs python3 (stdlib only) for the scripted model; skips (77) without it.
set -uo pipefail
. "$(dirname "$0")/shell_util.sh"
cli_test_setup cli_chat
has() { grep -qF -- "$2" "$1"; } # has FILE TEXT
fix=tests/fixtures/model
command -v python3 >/dev/null || { echo "skip: no python3"; exit 77; }

# --- the scripted model
m=$tmp/scripted
"$bin" init-model --preset tiny --layers 1 --vocab 3015 --quant bf16 --seed 3 --out "$m" >/dev/null || exit 1
cp tests/fixtures/tokenizer/tokenizer.json "$m/"
python3 tests/ref/make_scripted_model.py "$m" "$m/tokenizer.json" >"$tmp/script.json" || exit 1
n_script=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["tokens"]))' "$tmp/script.json")
chat=("$bin" chat --model "$m" --temperature 0 --date 2025-01-01)

"${chat[@]}" --prompt "What is Paris?" >"$tmp/once.out" 2>"$tmp/once.err"; rc=$?
check "--prompt exits 0 (rc $rc)" test $rc -eq 0
check "--prompt prints exactly the answer (got: $(cat "$tmp/once.out"))" test "$(cat "$tmp/once.out")" = "Paris is big!"
check "the thinking is hidden by default" test "$(grep -c Thinking "$tmp/once.out")" = 0
check "ends by <|return|> after the $n_script scripted tokens: $(tail -n 1 "$tmp/once.err")" \
  has "$tmp/once.err" "[$n_script tokens, "
check "ended by <|return|>" has "$tmp/once.err" "ended by <|return|>]"
check "tokens/s reported" grep -q "tokens/s" "$tmp/once.err"

"${chat[@]}" --prompt "What is Paris?" --show-thinking >"$tmp/think.out" 2>/dev/null
check "--show-thinking labels the analysis" has "$tmp/think.out" "[analysis]"
check "--show-thinking shows the thinking" has "$tmp/think.out" "Thinking hard."
check "--show-thinking still shows the answer" has "$tmp/think.out" "Paris is big!"

# A generation_config.json that (wrongly) lists <|end|> as a stop token: warned about, not obeyed.
end_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["end"])' "$tmp/script.json")
ret_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["return"])' "$tmp/script.json")
cp -r "$m" "$tmp/endstop"
printf '{"eos_token_id": [%s, %s]}\n' "$end_id" "$ret_id" >"$tmp/endstop/generation_config.json"
"$bin" chat --model "$tmp/endstop" --temperature 0 --prompt hi >"$tmp/endstop.out" 2>"$tmp/endstop.err"
check "<|end|> as eos is ignored: the answer still comes" test "$(cat "$tmp/endstop.out")" = "Paris is big!"
check "<|end|> as eos is warned about" has "$tmp/endstop.err" "lists <|end|>"

"${chat[@]}" --prompt hi --max-new-tokens 4 >"$tmp/short.out" 2>"$tmp/short.err"; rc=$?
check "--max-new-tokens 4: exit 0" test $rc -eq 0
check "--max-new-tokens 4: a note says there is no answer yet" has "$tmp/short.err" "no final answer within --max-new-tokens 4"

# --batch
cat >"$tmp/in.jsonl" <<'EOF'
{"prompt": "first"}

{"id": "q2", "reasoning": "high", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "thinking": "t"}, {"role": "user", "content": "c"}]}
EOF
"${chat[@]}" --batch "$tmp/in.jsonl" --out "$tmp/out.jsonl" 2>"$tmp/batch.err"; rc=$?
check "--batch exits 0 (rc $rc: $(tail -n 2 "$tmp/batch.err"))" test $rc -eq 0
check "--batch writes one line per row" test "$(wc -l <"$tmp/out.jsonl")" = 2
check "--batch answers" test "$(grep -c '"answer":"Paris is big!"' "$tmp/out.jsonl")" = 2
check "--batch keeps the row id" has "$tmp/out.jsonl" '"id":"q2"'
check "--batch records the thinking" has "$tmp/out.jsonl" '"thinking":"Thinking hard."'
printf '{"prompt": "ok"}\n{"messages": [{"role": "user"}]}\n' >"$tmp/bad.jsonl"
"${chat[@]}" --batch "$tmp/bad.jsonl" --out "$tmp/bad_out.jsonl" 2>"$tmp/bad.err"; rc=$?
check "--batch bad row: non-zero exit" test $rc -ne 0
check "--batch bad row: file:line named ($(cat "$tmp/bad.err" | tail -n 1))" has "$tmp/bad.err" "bad.jsonl:2: messages[0]"
check "--batch bad row: no output file" test ! -e "$tmp/bad_out.jsonl"

# The REPL, commands through a pipe.
printf '/effort high\n/think on\nhello\n/think off\n/system Answer in French.\nagain\n/reset\n/efort low\n/quit\nnever\n' |
  "${chat[@]}" >"$tmp/repl.out" 2>"$tmp/repl.err"; rc=$?
check "REPL exits 0 (rc $rc)" test $rc -eq 0
check "/effort" has "$tmp/repl.out" "(reasoning effort high)"
check "/think on shows the analysis" has "$tmp/repl.out" "[analysis]"
check "/system" has "$tmp/repl.out" "(developer instructions set)"
check "/reset" has "$tmp/repl.out" "(conversation cleared)"
check "unknown command suggests" has "$tmp/repl.out" "unknown command /efort (did you mean /effort?"
check "two answers before /quit, none after" test "$(grep -c "tokens/s" "$tmp/repl.err")" = 2

# --- loading mistakes
expect_fail() { # expect_fail NAME TEXT COMMAND...: non-zero exit and TEXT in stderr
  "${@:3}" >"$tmp/$1.out" 2>"$tmp/$1.err"; local rc=$?
  check "$1: non-zero exit" test $rc -ne 0
  check "$1: message '$2' (got: $(tail -n 1 "$tmp/$1.err"))" has "$tmp/$1.err" "$2"
}
expect_fail adapter_as_model "is a LoRA adapter (adapter_config.json, no config.json), not a model: pass it as --adapter" \
  "$bin" chat --model "$fix/adapter_bf16" --prompt x
mkdir -p "$tmp/run/checkpoints/step-00000002"
cp "$fix/adapter_bf16"/* "$tmp/run/checkpoints/step-00000002/"
printf 'state' >"$tmp/run/checkpoints/step-00000002/state.bin"
expect_fail checkpoint_as_model "is a training checkpoint's LoRA adapter" \
  "$bin" chat --model "$tmp/run/checkpoints/step-00000002" --prompt x
printf 'model:\n  name: %s\n' "$fix/bf16" >"$tmp/run/config.resolved.yaml"
expect_fail run_as_model "is a training run directory, not a model: pass --adapter $tmp/run" \
  "$bin" chat --model "$tmp/run" --prompt x
expect_fail model_as_adapter "is a model (config.json, no adapter_config.json), not a LoRA adapter: pass it as --model" \
  "$bin" chat --model "$fix/bf16" --adapter "$fix/mxfp4" --prompt x
expect_fail other_shapes "the adapter was made for a different base model" \
  "$bin" chat --model "$fix/bf16" --adapter "$fix/adapter_q" --prompt x
mkdir -p "$tmp/other_base"
cp "$fix/adapter_bf16/adapter_model.safetensors" "$tmp/other_base/"
sed 's|"base_model_name_or_path": null|"base_model_name_or_path": "org/another-model"|' \
  "$fix/adapter_bf16/adapter_config.json" >"$tmp/other_base/adapter_config.json"
expect_fail other_base "was trained on base 'org/another-model'" \
  "$bin" chat --model "$fix/bf16" --adapter "$tmp/other_base" --prompt x
# With --ignore-base-mismatch it loads (and then stops at the tiny fixture's missing tokenizer).
"$bin" chat --model "$fix/bf16" --adapter "$tmp/other_base" --ignore-base-mismatch --prompt x >/dev/null 2>"$tmp/ignore.err"
check "--ignore-base-mismatch: warned and loaded" has "$tmp/ignore.err" "applied on top of the base, unmerged"
expect_fail no_tokenizer "pass --tokenizer FILE" "$bin" chat --model "$fix/bf16" --prompt x

# --- --merge says what it did with the experts
"$bin" chat --model "$fix/bf16" --adapter "$fix/adapter_bf16" --merge --prompt x >/dev/null 2>"$tmp/merge.err"
check "--merge: experts kept bf16" has "$tmp/merge.err" "merged into the base (rank 3, scale 2); merged experts kept bf16"
"$bin" chat --model "$fix/mxfp4" --adapter "$fix/adapter_q" --merge --merge-experts mxfp4 --prompt x >/dev/null 2>"$tmp/merge4.err"
check "--merge-experts mxfp4: requantized" has "$tmp/merge4.err" "merged experts requantized to mxfp4"
expect_fail merge_no_adapter "--merge needs --adapter" "$bin" chat --model "$m" --merge --prompt x
expect_fail bad_effort "--reasoning 'extreme'" "$bin" chat --model "$m" --reasoning extreme --prompt x
expect_fail bad_top_p "--top-p '1.5'" "$bin" chat --model "$m" --top-p 1.5 --prompt x

[ $fail -eq 0 ] && echo "cli_chat: ok"
exit $fail
