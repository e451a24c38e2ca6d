#!/usr/bin/env bash
# The README's demo: build, make the tiny random-weight model on first use (init-model, with the small
# tokenizer from tests/fixtures), then train it with LoRA on the CPU on the bundled multilingual sample
# (configs/tiny.yaml): the loss falls within a minute on 2 cores, and the run ends with the adapter in
# PEFT's format (runs/tiny/adapter/) and the loss plot (runs/tiny/loss.svg). Running it again starts the
# run over (--overwrite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build -DCMAKE_BUILD_TYPE=Release
./build/gptoss version
model=runs/tiny-model
if [ ! -f "$model/config.json" ] || [ ! -f "$model/tokenizer.json" ]; then
  ./build/gptoss init-model --preset tiny --vocab 3015 --seed 0 --out "$model"
  cp tests/fixtures/tokenizer/tokenizer.json "$model/tokenizer.json"
fi
./build/gptoss train configs/tiny.yaml --overwrite
echo
echo "adapter (PEFT format): runs/tiny/adapter/"
ls -l runs/tiny/adapter/
echo "loss plot: runs/tiny/loss.svg   metrics: runs/tiny/metrics.jsonl   log: runs/tiny/train.log"
echo
# Base first, then the trained adapter on top; a toy model a minute old answers with noise, but the whole
# path (Harmony prompt, KV-cache decoding, channel parsing, streaming) is the one the 20B model uses.
echo "chat with the result: ./build/gptoss chat --model $model --adapter runs/tiny/adapter --prompt ..."
./build/gptoss chat --model "$model" --adapter runs/tiny/adapter --prompt "Bonjour ! Comment vas-tu ?" \
  --max-new-tokens 32 --show-thinking --seed 0
