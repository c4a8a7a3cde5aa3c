#!/usr/bin/env bash
# Configures and builds bioflex into build/ (CUDA backend when nvcc, cuDNN 9 and cuBLAS are found).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
# quiet but for bioflex's own lines: which backends, MPI and NCCL it found
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${BIOFLEX_CMAKE_ARGS:-} | { grep '^-- bioflex' || true; }
cmake --build build -j "$(nproc)"
