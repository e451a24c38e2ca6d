#!/usr/bin/env bash
# Builds gptoss for the GPU machine (which has CUDA 13 but no Debian packages): Debian libraries linked
# statically, cudart static, cuBLASLt shared (it is on that machine), all CUDA archs. The result, build-gpu/,
# travels with the device tool's `carry: ["build-gpu"]`; run tests there with
#   cd build-gpu && ctest --output-on-failure
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build-gpu -DCMAKE_BUILD_TYPE=Release -DGPTOSS_CUDA=ON -DGPTOSS_STATIC_DEPS=ON \
  -DCMAKE_CUDA_ARCHITECTURES="80;86;89;90"
ldd build-gpu/gptoss | grep -E "yaml|jansson|pcre|libz|edit" && { echo "a Debian library is still linked shared"; exit 1; }
echo "build-gpu ready"
