#!/usr/bin/env bash
# Installs what bioflex needs on a fresh Debian/Ubuntu machine (run as root or with sudo).
#   bash tools/setup.sh [--tests]
# --tests (tools/test.sh) also tries python3-torch, with which the tests against PyTorch twins run
# (convert_reference*, bioflex_torch, the converter's cli case); where it cannot be installed they
# are reported as skipped and setup goes on.
# The CUDA toolkit with cuDNN 9 and cuBLAS is optional: when nvcc is found (PATH or /usr/local/cuda)
# the CUDA backend is built as well.
set -euo pipefail
# libjpeg-dev is libjpeg-turbo's libjpeg API under both distributions' names (Debian's
# libjpeg62-turbo-dev, Ubuntu's libjpeg-turbo8-dev).
# libdnnl-dev (oneDNN) runs the CPU convolutions (src/kernels/conv_onednn_cpu.c); the build works
# without it, slower. python3-numpy serves tools/spectrum.py (its test is skipped without it),
# python3-pil tools/make_celeba_fixture.py (a CelebA-format fixture for configs/butd/celeb_a.ini).
packages=(build-essential cmake pkg-config zlib1g-dev libinih-dev libopenblas-dev libdnnl-dev libcjson-dev
          libturbojpeg0-dev libjpeg-dev dataset-fashion-mnist python3 python3-numpy python3-pil
          libopenmpi-dev openmpi-bin)
optional=()
case "${1:-}" in
  --tests) optional=(python3-torch) ;;
  "") ;;
  *) echo "usage: bash tools/setup.sh [--tests]" >&2; exit 2 ;;
esac
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=() missing_optional=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
for p in "${optional[@]}"; do installed "$p" || missing_optional+=("$p"); done
if [ ${#missing[@]} -eq 0 ] && [ ${#missing_optional[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#missing_optional[@]} -gt 0 ]; then
  echo "setup: installing ${missing_optional[*]} (optional: for the tests against PyTorch)"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_optional[@]}" >/dev/null \
    || echo "setup: ${missing_optional[*]} not installed: the tests that need PyTorch will be reported as skipped"
fi
echo "setup: done"
