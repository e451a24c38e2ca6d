#!/usr/bin/env bash
# Installs the Debian packages gptoss builds with, when missing. Used by the README's commands.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git libyaml-dev libjansson-dev zlib1g-dev libpcre2-dev libedit-dev
      libsnappy-dev libzstd-dev)
# The test command also needs clang's libFuzzer and a Python for the HF/PEFT reference tests.
if [ "${GPTOSS_TEST_DEPS:-0}" = 1 ]; then
  pkgs+=(clang libclang-rt-14-dev)
  command -v python3 >/dev/null || pkgs+=(python3 python3-venv python3-pip)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gptoss: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" != 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
