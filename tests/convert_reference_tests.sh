#!/usr/bin/env bash
# convert_reference_tests.sh - tools/convert_reference_checkpoint.py end to end on the V1-constrained
# ResNet-50, FlexNet's and PlasticFlex's VGGs (ctest "convert_reference"): PyTorch twins of the
# references' models (tests/convert_reference_checkpoint_tests.py, from bench/'s spec-written modules)
# with random weights and batch-norm statistics, saved as the references save them, are converted and
# scored by bioflex-eval on procedural images; the logits bioflex-eval --activations writes are
# PyTorch's on the same input (`input` of the dump) within 1e-3 of the largest (or of 1), same top-1:
#   V1 ({"model": state_dict, "epoch"}, as its main.py, the frozen nn.Parameters and buffers it stores
#   included; configs/v1/v1_resnet50_procedural.ini):
#   composite a (DoG, locally connected, tuned normalisation, polar transform): 9 constants left out
#     (kernel_dists, the DoG's zero bias, channel_distances, the float16 pooling masks and counts);
#   resnet50_cortical_magnification, an nn.Sequential saved under numeric names ('0.weight' ...);
#   FlexNet and PlasticFlex ({"model_state_dict", "optimizer_state_dict", "epoch", "loss"}; their
#   batch-norm statistics those of the very images scored, from a first pass):
#   Exp 4's channel-wise max flex VGG-16 with release S's 13 inert bn_logits, converted with --drop
#     bn_logits (97 tensors); the same weights as S saves them from a model built on the CPU (13 unused
#     thresholds [C, H, W] too), converted with --drop threshold (162 tensors: bioflex-eval passes over
#     the bn_logits), the same logits;
#   FlexNet's mask joint (threshold [C, H, W], bn_logits, hard sigmoid) in a VGG-6 on 16x16;
#   PlasticFlex's VGG-6 with its flex layers (bilinear channels, bn_logits, thresholds saved [1, C, H, W]
#     and converted to [C, H, W]) on 28x28 images, with ReLU and with LIF neurons over T = 2;
# and the refusals: the composite's weights into resnet50_center_surround (bioflex-eval names the
# tensor it lacks), a file that is no checkpoint and one without a state_dict (exit 1, no traceback).
# Skipped (exit 77) without a Python that has PyTorch; torchvision is stood in for where missing.
# Usage: convert_reference_tests.sh EVAL SRC
set -u
eval_=$1 src=$2
py=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then py=$candidate; break; fi
done
[ -n "$py" ] || { echo "no Python with PyTorch: skipped"; exit 77; }
dir=$(mktemp -d /tmp/bioflex_convert.XXXXXX)
trap 'rm -rf "$dir"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
helper=$src/tests/convert_reference_checkpoint_tests.py
convert=$src/tools/convert_reference_checkpoint.py
cfg=$src/configs/v1/v1_resnet50_procedural.ini
small=(--set data.procedural_test=4 --set analysis.activation_images=4 --set run.threads=2)

# VARIANT "LEFT-OUT PATTERN" [--set ...]: save, convert (with the options in $opts), evaluate with
# $cfg, compare the logits ($layer, fc unless set). With calibrate=1 a first pass dumps the images
# bioflex-eval scores, and the model saved takes its batch-norm statistics from them (a deep VGG's
# statistics of noise images leave the scored images' features dead: the same logits for every image);
# calibrate=VARIANT takes that variant's dump (the same images)
round_trip() {
  local v=$1 pattern=$2 layer=${layer:-fc} stats=(); shift 2
  if [ -n "${calibrate:-}" ] && [ "$calibrate" != 1 ]; then
    stats=("$dir/$calibrate.input.safetensors")
  elif [ -n "${calibrate:-}" ]; then
    "$py" "$helper" save "$v" "$dir/$v.pth" >"$dir/$v.save" 2>&1
    "$py" "$convert" "$dir/$v.pth" "$dir/$v" ${opts:-} >"$dir/$v.convert" 2>&1
    "$eval_" --checkpoint "$dir/$v" --activations "$dir/$v.input.safetensors" "${small[@]}" \
      --set analysis.activation_layers="$layer" "$@" "$cfg" >"$dir/$v.eval" 2>&1
    stats=("$dir/$v.input.safetensors")
  fi
  "$py" "$helper" save "$v" "$dir/$v.pth" "${stats[@]}" >"$dir/$v.save" 2>&1
  "$py" "$convert" "$dir/$v.pth" "$dir/$v" ${opts:-} >"$dir/$v.convert" 2>&1
  rc=$?
  check "$v: converted ($(cat "$dir/$v.convert"))" '[ $rc -eq 0 ] && grep -qE -- "$pattern" "$dir/$v.convert"'
  "$eval_" --checkpoint "$dir/$v" --activations "$dir/$v.acts.safetensors" "${small[@]}" \
    --set analysis.activation_layers="$layer" "$@" "$cfg" >"$dir/$v.eval" 2>&1
  rc=$?
  check "$v: bioflex-eval scores the converted weights ($(grep -E "^(test|error)" "$dir/$v.eval"))" \
    '[ $rc -eq 0 ] && grep -q "^test: loss" "$dir/$v.eval"'
  "$py" "$helper" compare "$v" "$dir/$v.pth" "$dir/$v.acts.safetensors" "$layer" >"$dir/$v.compare" 2>&1
  rc=$?
  check "$v: bioflex's logits are PyTorch's ($(tail -1 "$dir/$v.compare"))" '[ $rc -eq 0 ]'
}
round_trip composite_a "^329 tensors .* left out 9: layer1.0.conv2.dog.dog_conv.kernel_dists, layer1.0.conv2.dog.dog_conv.bias, layer1.0.dn.channel_distances"
round_trip cortical_magnification "^320 tensors .* left out 2: lpp.pooling_masks, lpp.pooling_mask_counts$" \
  --set model.center_surround=false --set model.local_rf=false --set model.divisive_norm=none

# FlexNet (model_state_dict): Exp 4's channel-wise max flex VGG-16 with S's inert bn_logits, on 32x32
# procedural images; the mask joint's [C, H, W] threshold and bn_logits in a VGG-6 on 16x16
calibrate=1 cfg=$src/configs/flexnet/exp4_flex_vgg16_imagenet100.ini layer=classifier.6 opts="--drop bn_logits" \
  round_trip flexnet_vgg16_max "^97 tensors .* left out 65: features.0.bn_logits.weight, " \
  --set data.dataset=procedural --set data.procedural_size=32
# the same weights as S saves them from a model built on the CPU, where every Flex2D's threshold is
# registered (13 inert [C, H, W] tensors): --drop threshold; the 13 inert bn_logits kept, which
# bioflex-eval passes over; the same logits
"$py" "$helper" cpu_built flexnet_vgg16_max "$dir/flexnet_vgg16_max.pth" "$dir/cpu_built.pth" >"$dir/cpu_built.save" 2>&1
"$py" "$convert" "$dir/cpu_built.pth" "$dir/cpu_built" --drop threshold >"$dir/cpu_built.convert" 2>&1
"$eval_" --checkpoint "$dir/cpu_built" --activations "$dir/cpu_built.acts.safetensors" "${small[@]}" \
  --set analysis.activation_layers=classifier.6 --set data.dataset=procedural --set data.procedural_size=32 \
  "$src/configs/flexnet/exp4_flex_vgg16_imagenet100.ini" >"$dir/cpu_built.eval" 2>&1 &&
  "$py" "$helper" compare flexnet_vgg16_max "$dir/flexnet_vgg16_max.pth" "$dir/cpu_built.acts.safetensors" \
  classifier.6 >"$dir/cpu_built.compare" 2>&1
rc=$?
check "Exp 4 built on the CPU, --drop threshold, bn_logits kept: $(head -c 60 "$dir/cpu_built.convert"), scored alike ($(tail -1 "$dir/cpu_built.compare"))" \
  '[ $rc -eq 0 ] && grep -q "^162 tensors .*; left out 13: features.0.threshold, features.3.threshold," "$dir/cpu_built.convert"'
calibrate=1 cfg=$src/configs/flexnet/flex_vgg6_fashion_mnist.ini layer=classifier.6 \
  round_trip flexnet_vgg6_mask "^58 tensors \(8,725,578 floats\)[^;]*$" \
  --set data.dataset=procedural --set data.procedural_size=16 --set model.flex_joint=mask \
  --set model.flex_mask=sigmoid_hard --set model.flex_logits_bn=true --set model.threshold_mode=learned
# PlasticFlex (model_state_dict): its VGG-6 with its flex layers (bilinear channels, bn_logits, the
# thresholds [1, C, H, W]) on 28x28 RGB procedural images (its MNIST's [3, 28, 28]; the grid's Fashion-MNIST
# configs), ReLU and LIF over 2 steps (the same images, so the first pass of one serves both)
pf=(--set data.dataset=procedural --set data.procedural_size=28)
calibrate=1 cfg=$src/configs/plasticflex/fashion_mnist_vgg6_ann_flex.ini layer=fc3 \
  round_trip plasticflex_vgg6_mask "^74 tensors \(2,189,706 floats\)[^;]*$" "${pf[@]}"
calibrate=plasticflex_vgg6_mask cfg=$src/configs/plasticflex/fashion_mnist_vgg6_snn_lif_flex.ini layer=readout \
  round_trip plasticflex_vgg6_lif_mask "^74 tensors \(2,189,706 floats\)[^;]*$" "${pf[@]}" --set spiking.time_steps=2
cfg=$src/configs/v1/v1_resnet50_procedural.ini

# another architecture: the composite's weights where resnet50_center_surround is configured
"$eval_" --checkpoint "$dir/composite_a" "${small[@]}" --set model.local_rf=false --set model.divisive_norm=none \
  --set model.cortical_magnification=false "$cfg" >"$dir/other.eval" 2>&1
rc=$?
check "composite weights into center_surround: refused naming the tensor (exit $rc)" \
  '[ $rc -ne 0 ] && grep -q "no tensor named layer1.0.conv2.0.weight" "$dir/other.eval"'
# files the tool cannot use
"$py" "$convert" "$src/README.md" "$dir/readme" >"$dir/bad.out" 2>&1
check "a file that is no checkpoint: exit 1, its name, no traceback" '[ $? -eq 1 ] \
  && grep -q "^error: .*README.md: not a PyTorch checkpoint that loads" "$dir/bad.out" && ! grep -q Traceback "$dir/bad.out" \
  && [ ! -e "$dir/readme" ]'
"$py" -c "import torch, sys; torch.save({'optimizer': {}, 'epoch': 2}, sys.argv[1])" "$dir/nostate.pth"
"$py" "$convert" "$dir/nostate.pth" "$dir/nostate" >"$dir/nostate.out" 2>&1
check "a checkpoint without a state_dict: exit 1 naming what it holds" '[ $? -eq 1 ] \
  && grep -q "no state_dict in the checkpoint .*it holds epoch, optimizer" "$dir/nostate.out"'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
