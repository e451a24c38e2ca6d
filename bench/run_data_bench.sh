#!/usr/bin/env bash
# The data pipeline on one core: 1,000 Multilingual-Thinking-shaped rows (.jsonl.gz, made by
# tests/ref/make_sample_data.py) rendered, tokenized, masked and packed by `gptoss data`, twice: the first
# run tokenizes and writes the token cache, the second must hit it. Prints wall/user/sys for each.
#
#   bash bench/run_data_bench.sh [BUILD_DIR] [ROWS]
#
# Tokenizer: $GPTOSS_TOKENIZER (a tokenizer.json), else o200k_harmony built from the o200k_base ranks in
# $GPTOSS_O200K_RANKS (tiktoken format; transformers' TikTokenConverter + the Harmony special tokens at
# their gpt-oss ids), else the small test tokenizer (tests/fixtures/tokenizer/tokenizer.json).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rows=${2:-1000}
work=${TMPDIR:-/tmp}/gptoss_data_bench
mkdir -p "$work"
python3 tests/ref/make_sample_data.py --rows "$rows" --out "$work/mt$rows.jsonl.gz"

tok=${GPTOSS_TOKENIZER:-}
if [ -z "$tok" ] && [ -n "${GPTOSS_O200K_RANKS:-}" ]; then
  tok=$work/o200k_harmony_tokenizer.json
  [ -f "$tok" ] || python3 - "$GPTOSS_O200K_RANKS" "$tok" <<'EOF'
import sys
from tokenizers import AddedToken
from transformers.convert_slow_tokenizer import TikTokenConverter
# o200k's pre-tokenizer pattern (as gpt-oss's tokenizer.json carries it).
PAT = (r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
       r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
       r"""\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL = {199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>", 200003: "<|constrain|>",
           200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>", 200008: "<|message|>", 200012: "<|call|>",
           200018: "<|endofprompt|>"}
tok = TikTokenConverter(vocab_file=sys.argv[1], pattern=PAT, additional_special_tokens=[]).converted()
assert tok.get_vocab_size() == 199998
tok.add_special_tokens([AddedToken(SPECIAL.get(i, f"<|reserved_{i}|>"), special=True, normalized=False)
                        for i in range(199998, 201088)])
assert tok.token_to_id("<|end|>") == 200007 and tok.token_to_id("<|return|>") == 200002
tok.save(sys.argv[2])
EOF
fi
tok=${tok:-tests/fixtures/tokenizer/tokenizer.json}
cache=$work/cache
rm -rf "$cache"
echo "rows: $rows, tokenizer: $tok"
for run in first second; do
  /usr/bin/time -f "$run run: %e s wall, %U s user, %S s sys, %M KB max RSS" taskset -c 0 \
    "$build/gptoss" data configs/tiny.yaml --set "model.tokenizer=$tok" --set "data.path=$work/mt$rows.jsonl.gz" \
    --set "data.cache_dir=$cache" --set data.max_seq_len=2048 --set data.val_fraction=0.1 \
    | grep -E "^(token cache|documents|train |validation)"
done
