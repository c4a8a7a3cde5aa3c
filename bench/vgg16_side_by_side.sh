#!/usr/bin/env bash
# VGG-16-BN training throughput, bioflex vs PyTorch eager, in one run on the same GPU, in fp32 and
# TF32 (target: bioflex >= 1.0x PyTorch). Build first (tools/build.sh).
#   bash bench/vgg16_side_by_side.sh [batch] [size]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${1:-128}; size=${2:-224}
for precision in fp32 tf32; do
  ours=$(./build/bench/bench_train_throughput --device cuda --arch vgg16 --batch "$batch" --size "$size" --classes 100 --precision "$precision")
  theirs=$(python3 bench/pytorch_train.py --arch vgg16 --batch "$batch" --size "$size" --classes 100 --precision "$precision")
  echo "$ours"; echo "$theirs"
  a=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$ours"); b=$(sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$theirs")
  python3 -c "print(f'$precision: bioflex / pytorch = {$a / $b:.2f}x')"
done
