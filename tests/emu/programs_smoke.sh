#!/usr/bin/env bash
# programs_smoke.sh EMU_BENCH - the bioflex runs of the GPU benchmarks that
# tools/gpu_verify.sh starts (bench/spiking_side_by_side.sh, bench/flexnet_side_by_side.sh,
# bench/vgg16_side_by_side.sh, ResNet-50's step), each with the same --set keys, on tiny shapes
# through the kernel emulator's CUDA backend (EMU_BENCH, emu_bench_train_throughput), and the same
# run on its CPU backend (--device cpu): each must finish, and report the
# CPU's loss after its two steps to within 1e-3 relative. A device session is short: this is what
# it would run first, so that a crash or a refused configuration shows here instead.
set -euo pipefail
emu=$1
lif=(--set spiking.neuron=lif --set spiking.encoding=direct --set spiking.decay=0.95 --set spiking.threshold=1.0
     --set spiking.reset=hard --set spiking.detach_reset=false --set spiking.use_stbp=true --set spiking.surrogate=tanh
     --set spiking.height=0.3)
flex=(--set model.flex=true --set model.flex_joint=channelwise_max --set model.flex_channels=expand --set model.flex_tie=split)
failed=0

# run NAME PRECISION ARGS...: the emulated CUDA run in PRECISION (TF32 is not emulated: fp32 values)
# against the CPU's fp32 run
run() {
  local name=$1 precision=$2
  shift 2
  local common=(--batch 2 --steps 1 --warmup 1 "$@")
  local ours theirs
  if ! ours=$("$emu" --device cuda --precision "$precision" "${common[@]}" 2>&1); then
    printf '%-34s FAILED on the emulated GPU:\n%s\n' "$name" "$ours"
    failed=1
    return
  fi
  theirs=$("$emu" --device cpu --precision fp32 "${common[@]}" 2>&1)
  local a b
  a=$(sed -nE 's/.*\(loss ([-0-9.e+naif]+)\).*/\1/p' <<<"$ours")
  b=$(sed -nE 's/.*\(loss ([-0-9.e+naif]+)\).*/\1/p' <<<"$theirs")
  if [ -z "$a" ] || [ -z "$b" ]; then
    printf '%-34s no loss in the output:\n%s\n%s\n' "$name" "$ours" "$theirs"
    failed=1
    return
  fi
  if awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(d <= 1e-3 * m && a == a) }'; then
    printf '%-34s loss %s, CPU %s: ok\n' "$name" "$a" "$b"
  else
    printf '%-34s loss %s, CPU %s: DIFFER\n' "$name" "$a" "$b"
    failed=1
  fi
}

spiking=(--arch plasticflex_vgg11 --size 32 --classes 10 "${lif[@]}")
run "spiking VGG-11, T = 4" tf32 "${spiking[@]}" --set spiking.time_steps=4
run "spiking VGG-11, T = 8" tf32 "${spiking[@]}" --set spiking.time_steps=8 --set run.conv_workspace_mib=512
run "spiking VGG-11, T = 4, BN apart" tf32 "${spiking[@]}" --set spiking.time_steps=4 --set spiking.fuse_bn_backward=false
run "spiking VGG-11, T = 4, float spikes" tf32 "${spiking[@]}" --set spiking.time_steps=4 --set spiking.pack_spikes=false
vgg=(--arch vgg16 --size 32 --classes 10)
run "FlexNet VGG-16" tf32 "${vgg[@]}" "${flex[@]}"
run "FlexNet VGG-16, slide" tf32 "${vgg[@]}" "${flex[@]}" --set run.flex_kernels=slide
run "FlexNet VGG-16, BN apart" tf32 "${vgg[@]}" "${flex[@]}" --set model.fuse_flex_bn=false \
  --set model.fuse_flex_bn_stats=false
run "VGG-16, fp32" fp32 "${vgg[@]}"
run "VGG-16, fp32, no workspace slack" fp32 "${vgg[@]}" --set run.conv_workspace_slack=0
run "VGG-16, TF32, workspace apart" tf32 "${vgg[@]}" --set run.conv_workspace_reuse=false
# ResNet-50 at 64x64, its first step's loss (no update before it, --warmup 0 overriding): with
# 2 images its last batch-norms see few values each, which makes it chaotic (at 32x32, two values:
# a 1e-6 change of the input moves the loss as much as the backends differ; at 64x64 the loss
# after one update differs by 2e-3)
run "ResNet-50" fp32 --arch resnet50 --size 64 --classes 10 --warmup 0
exit $failed
