#!/usr/bin/env bash
# memory_smoke.sh EMU_TRAIN SOURCE_DIR - on the kernel emulator's CUDA backend with a 200 MiB device
# (BF_EMU_MEMORY_MIB): the quick-start CNN at batch 512 plans 296.5 MiB and does not fit, so
# bioflex-train exits 1 naming the plan's size and [data] micro_batches; in 8 slices
# ([data] micro_batches = 8, 37 MiB planned) the same batch trains.
set -euo pipefail
train=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=("$src/configs/quickstart.ini" --device cuda --set run.epochs=1 --set data.dataset=procedural
      --set data.train_limit=512 --set data.test_limit=64 --set data.batch_size=512)
export BF_EMU_MEMORY_MIB=200
rc=0
"$train" "${args[@]}" --set run.dir="$tmp/whole" >"$tmp/whole.log" 2>&1 || rc=$?
if [ "$rc" -ne 1 ] || ! grep -q "plans 296.5 MiB of activations" "$tmp/whole.log" ||
   ! grep -q "micro_batches" "$tmp/whole.log"; then
  echo "FAIL batch 512 on a 200 MiB device: want exit status 1 naming the plan and micro_batches, got $rc:"
  cat "$tmp/whole.log"
  exit 1
fi
echo "batch 512 on a 200 MiB device refused: $(grep -o 'the network at.*micro_batches = K' "$tmp/whole.log")"
"$train" "${args[@]}" --set data.micro_batches=8 --set run.dir="$tmp/sliced" >"$tmp/sliced.log" 2>&1 ||
  { echo "FAIL batch 512 in 8 slices on a 200 MiB device:"; cat "$tmp/sliced.log"; exit 1; }
grep -q "test accuracy" "$tmp/sliced.log" || { echo "FAIL no test accuracy"; cat "$tmp/sliced.log"; exit 1; }
echo "batch 512 in 8 slices trained: $(grep 'test accuracy' "$tmp/sliced.log")"
