#!/usr/bin/env bash
# Builds gptoss for the GPU machine (which has CUDA 13 but no Debian packages): Debian libraries linked
# statically, cudart static, cuBLASLt shared (it is on that machine), all CUDA archs, into build-gpu/. The
# device tool carries at most 64 MiB, less than the whole build directory, so what the GPU machine runs
# (gptoss and the GPU tests: what scripts/gpu_check.sh uses) is also copied into build-gpu-bundle/:
#   run(command="bash scripts/gpu_check.sh build-gpu-bundle", carry=["build-gpu-bundle"])
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build-gpu -DCMAKE_BUILD_TYPE=Release -DGPTOSS_CUDA=ON -DGPTOSS_STATIC_DEPS=ON \
  -DCMAKE_CUDA_ARCHITECTURES="80;86;89;90"
ldd build-gpu/gptoss | grep -E "yaml|jansson|pcre|libz|edit|snappy|zstd" && { echo "a Debian library is still linked shared"; exit 1; }
rm -rf build-gpu-bundle
mkdir -p build-gpu-bundle/tests
cp build-gpu/gptoss build-gpu-bundle/
cp build-gpu/tests/test_gpu_* build-gpu-bundle/tests/
size=$(du -sm build-gpu-bundle | cut -f1)
[ "$size" -lt 64 ] || { echo "build-gpu-bundle is $size MiB: over the device tool's 64 MiB carry"; exit 1; }
echo "build-gpu-bundle ready ($size MiB)"
