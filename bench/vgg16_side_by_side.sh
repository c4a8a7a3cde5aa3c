#!/usr/bin/env bash
# VGG-16-BN training throughput, bioflex vs PyTorch eager, in one run on the same GPU, in fp32 and
# TF32 (target: bioflex >= 1.0x PyTorch). Build first (tools/build.sh). bioflex also runs with
# cuDNN's graph API ([run] conv_api = graph: the engines PyTorch 2 chooses among) in both precisions,
# and in TF32 with an 8 GiB cuDNN workspace limit ([run] conv_workspace_mib; 1 GiB by default):
# some fast TF32 convolutions of the 224x224 layers may need more than 1 GiB.
#   bash bench/vgg16_side_by_side.sh [batch] [size]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${1:-128}; size=${2:-224}
rate() { sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$1"; }
for precision in fp32 tf32; do
  ours=$(./build/bench/bench_train_throughput --device cuda --arch vgg16 --batch "$batch" --size "$size" --classes 100 --precision "$precision")
  theirs=$(python3 bench/pytorch_train.py --arch vgg16 --batch "$batch" --size "$size" --classes 100 --precision "$precision")
  echo "$ours"; echo "$theirs"
  python3 -c "print(f'$precision: bioflex / pytorch = {$(rate "$ours") / $(rate "$theirs"):.2f}x')"
  graph=$(./build/bench/bench_train_throughput --device cuda --arch vgg16 --batch "$batch" --size "$size" --classes 100 \
    --precision "$precision" --set run.conv_api=graph)
  echo "$graph"
  python3 -c "print(f'$precision, conv_api = graph: bioflex / pytorch = {$(rate "$graph") / $(rate "$theirs"):.2f}x')"
  if [ "$precision" = tf32 ]; then
    wide=$(./build/bench/bench_train_throughput --device cuda --arch vgg16 --batch "$batch" --size "$size" --classes 100 \
      --precision tf32 --set run.conv_workspace_mib=8192)
    echo "$wide"
    python3 -c "print(f'tf32, conv workspace 8 GiB: bioflex / pytorch = {$(rate "$wide") / $(rate "$theirs"):.2f}x')"
  fi
done
