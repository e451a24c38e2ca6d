#!/usr/bin/env bash
# gptoss data CONFIG.yaml [--set K=V]... [--show N]: the summary, the token cache (written, then hit),
# --show with the trained spans in [[...]], bad rows as FILE:LINE errors and as skipped counts, usage errors.
set -uo pipefail
. "$(dirname "$0")/shell_util.sh"
cli_test_setup cli_data
tok=tests/fixtures/tokenizer/tokenizer.json
common=(configs/tiny.yaml --set "model.tokenizer=$tok" --set "data.cache_dir=$tmp/cache" --set data.max_seq_len=1024)

"$bin" data "${common[@]}" >"$tmp/out1" 2>"$tmp/err1"; rc=$?
check "first run exits 0 (rc $rc: $(cat "$tmp/err1"))" test $rc -eq 0
check "rows read" grep -q "rows:       100 read, 0 skipped" "$tmp/out1"
check "cache written" grep -q "(written)" "$tmp/out1"
check "histogram" grep -q "longer than max_seq_len (1024): 0" "$tmp/out1"
"$bin" data "${common[@]}" --show 2 >"$tmp/out2" 2>"$tmp/err2"; rc=$?
check "second run exits 0" test $rc -eq 0
check "second run hits the cache" grep -q "hit: nothing re-tokenized" "$tmp/out2"
check "same numbers from the cache" diff <(grep -E "^(documents|train|validation)" "$tmp/out1") \
  <(grep -E "^(documents|train|validation)" "$tmp/out2")
check "--show names the row" grep -q "^document 2 (data/samples/multilingual_sample.jsonl:3)" "$tmp/out2"
check "--show marks the trained answer" grep -q "<|return|>\]\]$" "$tmp/out2"
check "--show leaves the prompt unmarked" grep -q "^<|start|>system<|message|>You are ChatGPT" "$tmp/out2"

# Bad rows: the first one stops the run with FILE:LINE and the reason.
"$bin" data "${common[@]}" --set data.path=tests/fixtures/data/bad_rows.jsonl >/dev/null 2>"$tmp/err3"; rc=$?
check "bad rows exit 1" test $rc -eq 1
check "bad row named by file:line:col" grep -q "tests/fixtures/data/bad_rows.jsonl:1:14: invalid JSON" "$tmp/err3"
# Skip: counted. Good sample rows around the bad ones.
{ head -n 3 data/samples/multilingual_sample.jsonl; cat tests/fixtures/data/bad_rows.jsonl; head -n 2 data/samples/multilingual_sample.jsonl; } >"$tmp/mixed.jsonl"
n_bad=$(wc -l <tests/fixtures/data/bad_rows.jsonl)
"$bin" data "${common[@]}" --set "data.path=$tmp/mixed.jsonl" --set data.on_bad_row=skip \
  >"$tmp/out4" 2>"$tmp/err4"; rc=$?
check "skip exits 0 ($(cat "$tmp/err4"))" test $rc -eq 0
check "skipped rows counted" grep -q "rows:       $((n_bad + 5)) read, $n_bad skipped as bad" "$tmp/out4"
check "skipped rows logged with file:line" grep -q "mixed.jsonl:5: the row is an array" "$tmp/err4"

"$bin" data "${common[@]}" --show 100 >/dev/null 2>"$tmp/err5"; rc=$?
check "--show out of range exits 1" test $rc -eq 1
check "--show out of range says the range" grep -q "documents 0..99" "$tmp/err5"
"$bin" data configs/tiny.yaml --shw 1 >/dev/null 2>&1; rc=$?
check "unknown option exits 2" test $rc -eq 2
"$bin" data "${common[@]}" --set model.tokenizer=/nonexistent/tokenizer.json >/dev/null 2>"$tmp/err6"; rc=$?
check "missing tokenizer exits 1 with its path" grep -q "/nonexistent/tokenizer.json" "$tmp/err6"

if [ $fail -ne 0 ]; then echo "cli_data: FAILED" >&2; exit 1; fi
echo "cli_data: ok"
