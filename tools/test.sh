#!/usr/bin/env bash
# The test command: installs the dependencies, builds, and runs the ctest suite. Tests labelled
# `gpu` report "Not Run (skipped)" on a machine without an NVIDIA GPU. Pass ctest arguments
# through, e.g. `bash tools/test.sh -L unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
ctest --test-dir build --output-on-failure "$@"
