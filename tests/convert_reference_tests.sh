#!/usr/bin/env bash
# convert_reference_tests.sh - tools/convert_reference_checkpoint.py end to end on the V1-constrained
# ResNet-50 (ctest "convert_reference"): PyTorch twins of the reference's models
# (bench/pytorch_train.py, through tests/convert_reference_checkpoint_tests.py) with random weights and
# batch-norm statistics, saved as its main.py saves them ({"model": state_dict, "epoch"}: the frozen
# nn.Parameters and buffers it stores included), are converted and scored by bioflex-eval on the
# procedural set (configs/v1/v1_resnet50_procedural.ini); the logits bioflex-eval --activations writes
# are PyTorch's on the same input (`input` of the dump) within 1e-3 of the largest, with the same top-1:
#   composite a (DoG, locally connected, tuned normalisation, polar transform): 9 constants left out
#     (kernel_dists, the DoG's zero bias, channel_distances, the float16 pooling masks and counts);
#   resnet50_cortical_magnification, an nn.Sequential saved under numeric names ('0.weight' ...);
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
small=(--set data.procedural_test=4 --set analysis.activation_images=4 --set analysis.activation_layers=fc --set run.threads=2)

# VARIANT "LEFT-OUT PATTERN" [--set ...]: save, convert, evaluate, compare
round_trip() {
  local v=$1 pattern=$2; shift 2
  "$py" "$helper" save "$v" "$dir/$v.pth" >"$dir/$v.save" 2>&1
  "$py" "$convert" "$dir/$v.pth" "$dir/$v" >"$dir/$v.convert" 2>&1
  rc=$?
  check "$v: converted ($(cat "$dir/$v.convert"))" '[ $rc -eq 0 ] && grep -qE -- "$pattern" "$dir/$v.convert"'
  "$eval_" --checkpoint "$dir/$v" --activations "$dir/$v.acts.safetensors" "${small[@]}" "$@" "$cfg" >"$dir/$v.eval" 2>&1
  rc=$?
  check "$v: bioflex-eval scores the converted weights ($(grep -E "^(test|error)" "$dir/$v.eval"))" \
    '[ $rc -eq 0 ] && grep -q "^test: loss" "$dir/$v.eval"'
  "$py" "$helper" compare "$v" "$dir/$v.pth" "$dir/$v.acts.safetensors" fc >"$dir/$v.compare" 2>&1
  rc=$?
  check "$v: bioflex's logits are PyTorch's ($(tail -1 "$dir/$v.compare"))" '[ $rc -eq 0 ]'
}
round_trip composite_a "^329 tensors .* left out 9: layer1.0.conv2.dog.dog_conv.kernel_dists, layer1.0.conv2.dog.dog_conv.bias, layer1.0.dn.channel_distances"
round_trip cortical_magnification "^320 tensors .* left out 2: lpp.pooling_masks, lpp.pooling_mask_counts$" \
  --set model.center_surround=false --set model.local_rf=false --set model.divisive_norm=none

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
