#!/usr/bin/env bash
# The quick start: installs the dependencies, builds, trains the small CNN of configs/quickstart.ini
# on Fashion-MNIST (on the GPU if there is one, else on the CPU) and prints its test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
time ./build/bioflex-train "$@" configs/quickstart.ini
