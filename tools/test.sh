#!/usr/bin/env bash
# The test command: installs the dependencies, builds, and runs the ctest suite. Tests labelled
# `gpu` report "Not Run (skipped)" on a machine without an NVIDIA GPU. Pass ctest arguments
# through, e.g. `bash tools/test.sh -L unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --tests
bash tools/build.sh
# as many tests at once as there are cores (the emulator's tests run on one core each: the suite takes
# about half the time on two); BIOFLEX_TEST_JOBS=1 runs them one by one
ctest --test-dir build --output-on-failure --parallel "${BIOFLEX_TEST_JOBS:-$(nproc)}" "$@"
