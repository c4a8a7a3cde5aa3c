#!/usr/bin/env bash
# Where the GPU time of a training step goes, bioflex beside PyTorch eager: Nsight Compute records
# each kernel's duration over a few steps after warm-up (bench_train_throughput --profile and
# pytorch_train.py --profile bracket only those), and bench/kernel_profile.py sums them by kernel
# and by family (cuDNN/cuBLAS, ours, PyTorch's). ncu runs the kernels one at a time, so the sums
# leave out launch gaps and overlap: they say which kernels cost, not the images/s.
#   bash bench/kernel_profile.sh [vgg16|flex|vgg16_fp32|spiking] [steps]   (CSVs under ${OUT:-/tmp})
# spiking: PlasticFlex VGG-11 on 32x32, batch 256, LIF over T = 4 in TF32, as spiking_side_by_side.sh
# (issue 4's 3x target: how much of the step is cuDNN's convolutions, which both sides share).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-vgg16}; steps=${2:-2}
out=${OUT:-/tmp}
command -v ncu >/dev/null || export PATH=$PATH:/usr/local/cuda/bin
precision=tf32; ours=(); theirs=(); net=(--arch vgg16 --batch 128 --size 224 --classes 100)
case $what in
  vgg16) ;;
  vgg16_fp32) precision=fp32 ;;
  flex) ours=(--set model.flex=true); theirs=(--flex) ;;
  spiking) net=(--arch plasticflex_vgg11 --batch 256 --size 32 --classes 10); theirs=(--spiking 4)
           ours=(--set spiking.neuron=lif --set spiking.time_steps=4 --set spiking.decay=0.95 --set spiking.threshold=1.0
                 --set spiking.surrogate=tanh --set spiking.height=0.3) ;;
  *) echo "unknown model $what (vgg16, vgg16_fp32, flex, spiking)" >&2; exit 2 ;;
esac
ncu_run() { # ncu_run CSV COMMAND...
  local csv=$1; shift
  ncu --profile-from-start off --metrics gpu__time_duration.sum --csv --print-units base --clock-control none \
    "$@" >"$csv"
}
ncu_run "$out/profile_bioflex_$what.csv" ./build/bench/bench_train_throughput --device cuda "${net[@]}" \
  --precision "$precision" --steps "$steps" --warmup 3 --profile 1 "${ours[@]}"
python3 bench/kernel_profile.py "$out/profile_bioflex_$what.csv" --steps "$steps"
ncu_run "$out/profile_pytorch_$what.csv" python3 bench/pytorch_train.py "${net[@]}" \
  --precision "$precision" --steps "$steps" --warmup 3 --profile "${theirs[@]}"
python3 bench/kernel_profile.py "$out/profile_pytorch_$what.csv" --steps "$steps"
