#!/usr/bin/env bash
# resume_smoke.sh EMU_TRAIN SOURCE_DIR - a run on the kernel emulator's CUDA backend
# (emu_bioflex-train --device cuda, [run] deterministic: the quick-start CNN with flex layers on
# procedural data, 2 epochs) and a second run resumed from the first's epoch-1 checkpoint end with
# bit-identical weights and optimiser state: the GPU path's checkpoints (parameters, optimiser
# moments, batch-norm buffers and the flex layers' state copied off and back onto the device) lose
# nothing, as test_checkpoint holds for the CPU.
set -euo pipefail
train=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=("$src/configs/quickstart.ini" --device cuda --set run.epochs=2 --set data.dataset=procedural
      --set data.train_limit=256 --set data.test_limit=128 --set data.batch_size=32 --set model.flex=true
      --set run.deterministic=true)
"$train" "${args[@]}" --set run.dir="$tmp/straight" >"$tmp/straight.log" 2>&1 || { cat "$tmp/straight.log"; exit 1; }
"$train" "${args[@]}" --set run.dir="$tmp/resumed" --resume "$tmp/straight/checkpoints/epoch_0001" \
  >"$tmp/resumed.log" 2>&1 || { cat "$tmp/resumed.log"; exit 1; }
grep -q "resumed from" "$tmp/resumed.log" || { echo "FAIL the second run did not resume"; cat "$tmp/resumed.log"; exit 1; }
failed=0
for f in model state; do
  if cmp -s "$tmp/straight/checkpoints/epoch_0002/$f.safetensors" "$tmp/resumed/checkpoints/epoch_0002/$f.safetensors"; then
    echo "$f.safetensors after epoch 2: straight and resumed runs bit-identical"
  else
    echo "FAIL $f.safetensors after epoch 2 differs between the straight and the resumed run"
    failed=1
  fi
done
exit $failed
