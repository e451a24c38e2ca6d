#!/usr/bin/env bash
# The README's demo command: build, then show the build and validate configs/tiny.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh build -DCMAKE_BUILD_TYPE=Release
./build/gptoss version
./build/gptoss train configs/tiny.yaml --dry-run
