#!/usr/bin/env bash
# FlexNet VGG-16 training throughput and peak memory, bioflex vs PyTorch eager, in one run on the
# same GPU (issue 3). For each precision it runs
#   bioflex flex     bench_train_throughput --arch vgg16 --set model.flex=true (channel-wise max,
#                    expand, split ties: FlexNet's CHANNELWISE_MAXPOOL Flex2D on all 13 convs)
#   bioflex flex slide  the same with --set run.flex_kernels=slide (the flex layers' pool-and-max
#                    forward and pool scatter by the sliding-window kernels, src/kernels/flex_slide.cuh)
#   bioflex flex, BN apart  the same with --set model.fuse_flex_bn=false and
#                    model.fuse_flex_bn_stats=false (each batch-norm's statistics by its own pass
#                    over the flex output instead of in the flex forward, and its whole backward
#                    before its flex layer's instead of its dx applied in the flex's route)
#   bioflex vanilla  bench_train_throughput --arch vgg16 (VGG-16-BN)
#   PyTorch flex     bench/pytorch_train.py --flex (the same network in eager PyTorch)
# and prints images/s, peak GiB (device memory during the timed steps, reset after the warm-up on
# both sides: bioflex's own cudaMalloc'd memory, torch.cuda.max_memory_allocated) and the targets:
#   bioflex flex / PyTorch flex images/s   >= 1.5   (target in TF32)
#   bioflex flex / bioflex vanilla images/s >= 0.9   (same precision)
#   bioflex flex / PyTorch flex peak GiB    <= 0.6
# each for bioflex flex and for bioflex flex slide, and slide's and the batch-norm fusions' speed-ups
# over the default kernels and the batch-norm apart.
# It checks that both flex networks have the same parameter count. The figures are printed, never
# asserted: the exit status is 0 whether or not a target is met. Build first (tools/build.sh).
#
#   bash bench/flexnet_side_by_side.sh [options]
# Every option also has an environment variable (in brackets); the option wins.
#   --device cuda|cpu       [DEVICE=cuda]
#   --batch B               [BATCH=128]
#   --size S                [SIZE=224]
#   --classes K             [CLASSES=100]
#   --steps N               [STEPS=30]        timed steps
#   --warmup N              [WARMUP=5]        untimed steps first (cuDNN's algorithm search)
#   --precisions "P..."     [PRECISIONS="tf32 fp32"]
#   --build DIR             [BUILD=build]     bioflex build directory (bench/bench_train_throughput)
#   --python PY             [PYTHON=python3]  interpreter with torch
# Example, CPU, tiny: bash bench/flexnet_side_by_side.sh --device cpu --batch 2 --size 32 --classes 10 --steps 2 --warmup 1 --precisions fp32
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

device=${DEVICE:-cuda} batch=${BATCH:-128} size=${SIZE:-224} classes=${CLASSES:-100} steps=${STEPS:-30}
warmup=${WARMUP:-5} precisions=${PRECISIONS:-tf32 fp32} build=${BUILD:-build} python=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage ;;
    --device|--batch|--size|--classes|--steps|--warmup|--precisions|--build|--python)
      [ $# -ge 2 ] || { echo "flexnet_side_by_side.sh: $1 needs a value" >&2; exit 2; } ;;
    *) echo "flexnet_side_by_side.sh: unknown argument '$1' (--help lists the options)" >&2; exit 2 ;;
  esac
  case $1 in
    --device) device=$2 ;; --batch) batch=$2 ;; --size) size=$2 ;; --classes) classes=$2 ;; --steps) steps=$2 ;;
    --warmup) warmup=$2 ;; --precisions) precisions=$2 ;; --build) build=$2 ;; --python) python=$2 ;;
  esac
  shift 2
done
bench=$build/bench/bench_train_throughput
[ -x "$bench" ] || { echo "flexnet_side_by_side.sh: $bench not found: build first (tools/build.sh, or --build DIR)" >&2; exit 1; }

common=(--device "$device" --batch "$batch" --size "$size" --classes "$classes" --steps "$steps" --warmup "$warmup")
flex=(--set model.flex=true --set model.flex_joint=channelwise_max --set model.flex_channels=expand --set model.flex_tie=split)

# field LINE: images/s, peak GiB ("n/a" on the CPU) and parameter count of a result line
ips() { sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$1"; }
peak() { if [[ $1 =~ peak\ ([0-9.]+)\ GiB ]]; then echo "${BASH_REMATCH[1]}"; else echo n/a; fi; }
params() { sed -E 's/.* ([0-9]+) params.*/\1/' <<<"$1"; }
# speedup A B: "A/B = R" without a target (slide's speed-up over the default kernels)
speedup() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx\n", a / b }'; }
# ratio A B OP TARGET: "A/B = R (target OP TARGET: met|NOT met)", or n/a when a figure is missing
ratio() {
  if [ "$1" = n/a ] || [ "$2" = n/a ]; then echo "n/a (no device memory count on $device)"; return; fi
  awk -v a="$1" -v b="$2" -v op="$3" -v t="$4" 'BEGIN {
    r = a / b; ok = (op == ">=") ? (r >= t) : (r <= t);
    printf "%.2fx (target %s %s: %s)\n", r, op, t, ok ? "met" : "NOT met" }'
}

echo "FlexNet VGG-16 side by side: $device, batch $batch, ${size}x${size}, $classes classes, $warmup warm-up + $steps timed steps"
[ "$device" = cuda ] || echo "(on the CPU the figures only show that the scripts run: the targets are GPU ones, and peak memory is counted on CUDA only)"
for precision in $precisions; do
  ours_flex=$("$bench" "${common[@]}" --arch vgg16 --precision "$precision" "${flex[@]}" --label "vgg16[flex]")
  echo "$ours_flex"
  ours_slide=$("$bench" "${common[@]}" --arch vgg16 --precision "$precision" "${flex[@]}" \
    --set run.flex_kernels=slide --label "vgg16[flex,slide]")
  echo "$ours_slide"
  ours_bn_apart=$("$bench" "${common[@]}" --arch vgg16 --precision "$precision" "${flex[@]}" \
    --set model.fuse_flex_bn=false --set model.fuse_flex_bn_stats=false --label "vgg16[flex,bn apart]")
  echo "$ours_bn_apart"
  ours_vanilla=$("$bench" "${common[@]}" --arch vgg16 --precision "$precision")
  echo "$ours_vanilla"
  theirs_flex=$("$python" bench/pytorch_train.py "${common[@]}" --arch vgg16 --flex --precision "$precision")
  echo "$theirs_flex"
  if [ "$(params "$ours_flex")" != "$(params "$theirs_flex")" ]; then
    echo "WARNING: parameter counts differ (bioflex $(params "$ours_flex"), PyTorch $(params "$theirs_flex")): not the same network"
  fi
  note=""
  [ "$precision" = tf32 ] || note=" [the issue's targets are for TF32]"
  echo "$precision: bioflex flex / PyTorch flex images/s   = $(ratio "$(ips "$ours_flex")" "$(ips "$theirs_flex")" ">=" 1.5)$note"
  echo "$precision: bioflex flex / bioflex vanilla images/s = $(ratio "$(ips "$ours_flex")" "$(ips "$ours_vanilla")" ">=" 0.9)"
  echo "$precision: bioflex flex / PyTorch flex peak GiB    = $(ratio "$(peak "$ours_flex")" "$(peak "$theirs_flex")" "<=" 0.6)"
  echo "$precision: bioflex flex slide / PyTorch flex images/s   = $(ratio "$(ips "$ours_slide")" "$(ips "$theirs_flex")" ">=" 1.5)$note"
  echo "$precision: bioflex flex slide / bioflex vanilla images/s = $(ratio "$(ips "$ours_slide")" "$(ips "$ours_vanilla")" ">=" 0.9)"
  echo "$precision: bioflex flex slide / PyTorch flex peak GiB    = $(ratio "$(peak "$ours_slide")" "$(peak "$theirs_flex")" "<=" 0.6)"
  echo "$precision: bioflex flex slide / bioflex flex images/s    = $(speedup "$(ips "$ours_slide")" "$(ips "$ours_flex")")"
  echo "$precision: bioflex flex / flex with BN apart images/s    = $(speedup "$(ips "$ours_flex")" "$(ips "$ours_bn_apart")")"
done
