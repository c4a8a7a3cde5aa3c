#!/usr/bin/env bash
# VGG-16-BN training throughput, bioflex vs PyTorch eager, in one run on the same GPU, in fp32 and
# TF32 (target: bioflex >= 1.0x PyTorch). Build first (tools/build.sh). In TF32 bioflex also runs
# with `[run] conv_workspace_reuse = false` (every convolution in the separate cuDNN workspace, none
# in dead activation memory), to show what the reuse saves in peak memory and that it costs no
# speed. (The workspace limit, [run] conv_workspace_mib, is 8 GiB by default: on an H200 a 1 GiB
# limit ran at 0.62x of it, VGG-16's fast 224x224 TF32 convolutions needing 3.3 GiB.) ([run] conv_api = graph, cuDNN's graph API, ran as fast as the legacy
# API in TF32 there and slower in fp32: add `--set run.conv_api=graph` to ours() to compare.) In
# fp32 bioflex also runs with `[run] conv_workspace_slack = 0` (the fastest algorithm always, instead
# of one at most 5 % slower that needs no more workspace than is held). A run that fails prints its
# error and the others go on.
#   bash bench/vgg16_side_by_side.sh [batch] [size]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
batch=${1:-128}; size=${2:-224}
ours() { # ours PRECISION [--set ...]: bioflex's result line (or its error, and status 1)
  local precision=$1; shift
  ./build/bench/bench_train_throughput --device cuda --arch vgg16 --batch "$batch" --size "$size" --classes 100 \
    --precision "$precision" "$@" 2>&1
}
ratio() { # ratio NAME OURS THEIRS: their images/s quotient, when both lines have one
  local a b
  a=$(sed -nE 's/.*: ([0-9.]+) images\/s.*/\1/p' <<<"$2"); b=$(sed -nE 's/.*: ([0-9.]+) images\/s.*/\1/p' <<<"$3")
  if [ -n "$a" ] && [ -n "$b" ]; then python3 -c "print(f'$1: bioflex / pytorch = {$a / $b:.2f}x')"; else echo "$1: no ratio (a run failed)"; fi
}
for precision in fp32 tf32; do
  mine=$(ours "$precision")
  theirs=$(python3 bench/pytorch_train.py --arch vgg16 --batch "$batch" --size "$size" --classes 100 --precision "$precision" 2>&1)
  echo "$mine"; echo "$theirs"
  ratio "$precision" "$mine" "$theirs"
  if [ "$precision" = fp32 ]; then # the fastest algorithm always, whatever workspace it needs
    fastest=$(ours fp32 --set run.conv_workspace_slack=0)
    echo "$fastest"
    ratio "fp32, conv_workspace_slack = 0" "$fastest" "$theirs"
  fi
  if [ "$precision" = tf32 ]; then # what running convolutions in dead activation memory saves
    separate=$(ours tf32 --set run.conv_workspace_reuse=false)
    echo "$separate"
    ratio "tf32, separate workspace only" "$separate" "$theirs"
  fi
done
