#!/usr/bin/env bash
# jpeg_tools_tests.sh - bioflex-make-jpeg-tree and bioflex-prep end to end (ctest "jpeg_tools").
# Usage: jpeg_tools_tests.sh MAKE_TREE PREP TRAIN
set -u
make_tree=$1 prep=$2 train=$3
dir=$(mktemp -d /tmp/bioflex_jpeg_tools.XXXXXX)
trap 'rm -rf "$dir"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }

"$make_tree" "$dir/kg" --layout kaggle --classes 3 --train 5 --val 2 2>/dev/null
check "kaggle tree: Labels.json and shards" '[ -f "$dir/kg/Labels.json" ] && [ -d "$dir/kg/train.X1" ] && [ -d "$dir/kg/train.X2" ] && [ -d "$dir/kg/val.X" ]'
check "kaggle tree: 15 + 8 edge-case train files" '[ "$(find "$dir/kg"/train.X* -name "*.JPEG" | wc -l)" -eq 23 ]'

out=$("$prep" "$dir/kg" "$dir/small" --shorter 64 --quality 85 2>"$dir/prep.err")
check "prep exit 0" '[ $? -eq 0 ]'
check "prep summary: 25 written (15 + 4 good edge cases train, 6 val), 4 skipped" '[[ "$out" == *"25 images written"*"4 skipped"* ]]'
check "prep names the bad files" 'grep -q "zz_truncated.JPEG" "$dir/prep.err" && grep -q "zz_png.JPEG" "$dir/prep.err"'
check "prep copies Labels.json" 'cmp -s "$dir/kg/Labels.json" "$dir/small/Labels.json"'
check "prep shrinks the files" '[ "$(du -sk "$dir/small" | cut -f1)" -lt "$(du -sk "$dir/kg" | cut -f1)" ]'
"$prep" "$dir/kg" "$dir/x" --bogus 1 >/dev/null 2>&1
check "prep: unknown option exits 2" '[ $? -eq 2 ]'

# A Kaggle-layout tree trains a step through the real config (reduced model and images).
cfg=$(dirname "$0")/../configs/flexnet/exp2_vanilla_vgg16_imagenet100.ini
"$make_tree" "$dir/kg100" --layout kaggle --classes 100 --train 1 --val 1 --size 64x48 2>/dev/null
OMP_WAIT_POLICY=passive "$train" "$cfg" --device cpu --set data.path="$dir/kg100" --set model.arch=cnn \
    --set model.channels=4 --set model.hidden=0 --set model.dropout=0 --set model.linear_init=normal --set data.image_size=16 --set run.epochs=1 --set run.threads=1 \
    --set run.dir="$dir/run" --set run.log_interval=1 --set data.batch_size=8 >"$dir/train.out" 2>&1
check "exp2 config trains on a Kaggle tree" '[ $? -eq 0 ] && grep -q "\"skipped_images\"" "$dir/run/metrics.jsonl"'
"$train" "$cfg" --device cpu --set data.path="$dir/nowhere" --set run.dir="$dir/run2" >"$dir/err.out" 2>&1
check "missing dataset dir: exit 1 naming it" '[ $? -eq 1 ] && grep -q "nowhere" "$dir/err.out"'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
