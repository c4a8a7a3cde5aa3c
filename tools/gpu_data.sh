#!/usr/bin/env bash
# Copies the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist, installed by tools/setup.sh)
# into .data/fashion-mnist at the project root, ignored by git, so that a run on the GPU machine,
# which has no dataset packages, can carry them (`carry: [".deps", ".data"]`, about 30 MB):
# tools/gpu_verify.sh then trains the spiking flex VGG-6 of issue 4's accuracy target there.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.data/' .git/info/exclude 2>/dev/null || echo '/.data/' >> .git/info/exclude
src=/usr/share/datasets/fashion-mnist
[ -d "$src" ] || { echo "gpu_data.sh: $src is missing (bash tools/setup.sh installs dataset-fashion-mnist)" >&2; exit 1; }
mkdir -p .data/fashion-mnist
cp "$src"/*-ubyte.gz .data/fashion-mnist/
echo "copied into .data/fashion-mnist: $(find .data/fashion-mnist -type f | wc -l) files ($(du -sh .data | cut -f1))"
