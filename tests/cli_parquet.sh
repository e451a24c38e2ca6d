#!/usr/bin/env bash
# `gptoss data` on parquet, end to end: configs/multilingual.yaml (data.path HuggingFaceH4/Multilingual-Thinking)
# against a fake HF cache laid out as huggingface_hub lays a dataset out (refs/main -> snapshots/<hash>/
# data/{train,test}-00000-of-00001.parquet, symlinks into blobs/), with the fixture tokenizer:
#   - data.split train finds the train parquet file and only it, and gives the same rows, documents,
#     tokens, packing and length histogram as its JSONL twin (tests/fixtures/parquet/mt_good.jsonl, the
#     rows pyarrow reads from mt_good.parquet); --show names the parquet file and row;
#   - data.split test finds the test file, whose row 7 (an empty messages list) stops the run with
#     FILE: row 7, and under on_bad_row skip is counted like the same rows' JSONL;
#   - a snapshot without data files says which kinds it looked for.
set -uo pipefail
. "$(dirname "$0")/shell_util.sh"
cli_test_setup cli_parquet
fx=tests/fixtures/parquet
hub=$tmp/hub
repo=$hub/datasets--HuggingFaceH4--Multilingual-Thinking
hash=0123456789abcdef0123456789abcdef01234567
mkdir -p "$repo/refs" "$repo/blobs" "$repo/snapshots/$hash/data"
printf %s "$hash" >"$repo/refs/main"
cp "$fx/mt_good.parquet" "$repo/blobs/aaaa"
cp "$fx/mt_v2_dict_zstd_pages.parquet" "$repo/blobs/bbbb"
echo "# Multilingual-Thinking (fake)" >"$repo/blobs/cccc"
ln -s ../../../blobs/aaaa "$repo/snapshots/$hash/data/train-00000-of-00001.parquet"
ln -s ../../../blobs/bbbb "$repo/snapshots/$hash/data/test-00000-of-00001.parquet"
ln -s ../../blobs/cccc "$repo/snapshots/$hash/README.md"
common=(configs/multilingual.yaml --set "model.tokenizer=tests/fixtures/tokenizer/tokenizer.json"
        --set "data.cache_dir=$tmp/cache" --set data.max_seq_len=512)
gd() { env HF_HUB_CACHE="$hub" HF_HOME="$tmp/home" HOME="$tmp/home" "$bin" data "$@"; }
# The summary lines that count rows, documents, tokens and packing.
counts() { grep -E "^(rows:|documents:|packing:|train +[0-9]|validation +[0-9]|  )" "$1"; }

gd "${common[@]}" --show 1 >"$tmp/pq.out" 2>"$tmp/pq.err"; rc=$?
check "parquet from the fake cache exits 0 (rc $rc: $(cat "$tmp/pq.err"))" test $rc -eq 0
check "only the train split's file is read" grep -q "^train file: .*/snapshots/$hash/data/train-00000-of-00001.parquet$" "$tmp/pq.out"
check "one train file" test "$(grep -c "^train file:" "$tmp/pq.out")" -eq 1
check "7 rows read" grep -q "^rows:       7 read, 0 skipped" "$tmp/pq.out"
check "--show names the parquet row" grep -q "^document 1 (.*train-00000-of-00001.parquet:2)" "$tmp/pq.out"
gd "${common[@]}" --set "data.path=$fx/mt_good.jsonl" --show 1 >"$tmp/js.out" 2>"$tmp/js.err"; rc=$?
check "the JSONL twin exits 0 (rc $rc: $(cat "$tmp/js.err"))" test $rc -eq 0
check "the summary has its count lines" test "$(counts "$tmp/pq.out" | wc -l)" -ge 14
check "parquet and JSONL: the same counts" diff <(counts "$tmp/pq.out") <(counts "$tmp/js.out")
check "parquet and JSONL: the same document shown" diff <(sed -n '/^document 1/,$p' "$tmp/pq.out" | tail -n +2) \
  <(sed -n '/^document 1/,$p' "$tmp/js.out" | tail -n +2)

# The test split: bad rows stop the run with FILE: row N, or are skipped and counted as in the JSONL.
gd "${common[@]}" --set data.split=test >/dev/null 2>"$tmp/bad.err"; rc=$?
check "a bad parquet row exits 1" test $rc -eq 1
check "the bad row is named by file and row" grep -q "test-00000-of-00001.parquet: row 7: 'messages' is empty" "$tmp/bad.err"
gd "${common[@]}" --set data.split=test --set data.on_bad_row=skip >"$tmp/skip.out" 2>/dev/null; rc=$?
gd "${common[@]}" --set "data.path=$fx/mt_rows.jsonl" --set data.on_bad_row=skip >"$tmp/skipjs.out" 2>/dev/null
check "skip exits 0" test $rc -eq 0
check "skipped rows counted" grep -q "^rows:       10 read, 3 skipped as bad" "$tmp/skip.out"
check "skip: parquet and JSONL the same" diff <(counts "$tmp/skip.out") <(counts "$tmp/skipjs.out")

# No data file of the split: the kinds looked for.
gd "${common[@]}" --set data.split=validation >/dev/null 2>"$tmp/none.err"; rc=$?
check "no file of the split exits 1" test $rc -eq 1
check "the message lists parquet" grep -q "no \*.jsonl, \*.jsonl.gz or \*.parquet file whose name holds 'validation'" "$tmp/none.err"

if [ $fail -ne 0 ]; then echo "cli_parquet: FAILED" >&2; exit 1; fi
echo "cli_parquet: ok"
