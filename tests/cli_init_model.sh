#!/usr/bin/env bash
# gptoss init-model from the command line: the files it writes, determinism in the seed, and usage errors.
set -euo pipefail
bin=${GPTOSS_BIN:?}
tmp=${GPTOSS_TMP:-/tmp}/cli_init_model.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

for q in bf16 mxfp4 nf4; do
  "$bin" init-model --preset tiny --layers 2 --vocab 300 --quant $q --seed 3 --out "$tmp/$q" >/dev/null
  for f in config.json generation_config.json model.safetensors; do
    [ -s "$tmp/$q/$f" ] || fail "$q: $f missing"
  done
done
grep -q '"quant_method": "mxfp4"' "$tmp/mxfp4/config.json" || fail "mxfp4 quantization_config"
grep -q '"quant_method": "bitsandbytes"' "$tmp/nf4/config.json" || fail "nf4 quantization_config"
! grep -q quantization_config "$tmp/bf16/config.json" || fail "bf16 has a quantization_config"
grep -q '"num_hidden_layers": 2' "$tmp/bf16/config.json" || fail "--layers"
grep -q '"vocab_size": 300' "$tmp/bf16/config.json" || fail "--vocab"
# Same seed, same bytes; another seed, other bytes.
"$bin" init-model --preset tiny --layers 2 --vocab 300 --quant mxfp4 --seed 3 --out "$tmp/again" >/dev/null
cmp -s "$tmp/mxfp4/model.safetensors" "$tmp/again/model.safetensors" || fail "not deterministic in the seed"
"$bin" init-model --preset tiny --layers 2 --vocab 300 --quant mxfp4 --seed 4 --out "$tmp/other" >/dev/null
! cmp -s "$tmp/mxfp4/model.safetensors" "$tmp/other/model.safetensors" || fail "seed ignored"

# Usage errors: exit 2 and a message that names the problem.
expect_usage() {
  local want=$1; shift
  set +e; out=$("$bin" init-model "$@" 2>&1); rc=$?; set -e
  [ $rc -eq 2 ] || fail "init-model $*: exit $rc, expected 2"
  grep -q -- "$want" <<<"$out" || fail "init-model $*: message lacks '$want': $out"
}
expect_usage "unknown preset 'huge'" --preset huge --out "$tmp/x"
expect_usage "--quant int8" --preset tiny --quant int8 --out "$tmp/x"
expect_usage "did you mean --layers" --preset tiny --layer 3 --out "$tmp/x"
expect_usage "expected an integer" --preset tiny --layers 2x --out "$tmp/x"
expect_usage "--out are required" --preset tiny
expect_usage "needs a value" --preset tiny --out
echo "cli_init_model: ok"
