#!/usr/bin/env bash
# Installs what bioflex needs on a fresh Debian/Ubuntu machine (run as root or with sudo).
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
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
