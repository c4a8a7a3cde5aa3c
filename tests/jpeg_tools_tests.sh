#!/usr/bin/env bash
# jpeg_tools_tests.sh - bioflex-make-jpeg-tree, bioflex-prep and tools/imagenet_c.sh end to end
# (ctest "jpeg_tools").
# Usage: jpeg_tools_tests.sh MAKE_TREE PREP TRAIN EVAL
set -u
make_tree=$1 prep=$2 train=$3 eval_=$4
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
# make-jpeg-tree makes its root's missing parents, as mkdir -p
"$make_tree" "$dir/deep/er/jt" --classes 2 --train 1 --val 1 --size 40x32 --no-edge-cases >/dev/null 2>&1
check "make-jpeg-tree makes its root's parents" '[ $? -eq 0 ] && [ -d "$dir/deep/er/jt/train" ] && [ -d "$dir/deep/er/jt/val" ]'
# prep refuses, before writing anything, a DST that is SRC, lies inside it or contains it (also
# through a link or ".."), and values that are not wholly an integer in range, or two side options.
"$make_tree" "$dir/jt" --classes 3 --train 8 --val 4 --size 40x32 --no-edge-cases 2>/dev/null
ln -s "$dir/jt" "$dir/jt_link"
tree_sum() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs cksum); }
jt_before=$(tree_sum "$dir/jt")
prep_refuses() { # NAME PATTERN ARGS...: exit 2, a message matching PATTERN, SRC's tree as it was, no $dir/out
  local name=$1 pattern=$2; shift 2
  local msg; msg=$("$prep" "$@" 2>&1 >/dev/null); local rc=$?
  check "prep refuses $name (exit $rc: $msg)" '[ $rc -eq 2 ] && grep -qE -- "$pattern" <<<"$msg" \
    && [ "$(tree_sum "$dir/jt")" = "$jt_before" ] && [ ! -e "$dir/out" ]'
}
prep_refuses "DST = SRC" "DST $dir/jt is the same directory as SRC $dir/jt" "$dir/jt" "$dir/jt" --shorter 16
prep_refuses "DST = SRC through a link and .." "DST $dir/jt_link/train/\\.\\./ is the same directory as SRC $dir/jt \\(resolved: DST [^,]*/jt, SRC [^)]*/jt\\)" \
  "$dir/jt" "$dir/jt_link/train/../" --shorter 16
prep_refuses "DST inside SRC" "DST $dir/jt/train/sub lies inside SRC $dir/jt" "$dir/jt" "$dir/jt/train/sub" --shorter 16
check "prep: no DST made inside SRC" '[ ! -e "$dir/jt/train/sub" ]'
prep_refuses "SRC inside DST" "DST $dir contains SRC $dir/jt/train" "$dir/jt/train" "$dir" --shorter 16
prep_refuses "--shorter 16x" "--shorter 16x: not an integer in 8\\.\\.8192" "$dir/jt" "$dir/out" --shorter 16x
prep_refuses "--shorter 1e9" "--shorter 1e9: not an integer in 8\\.\\.8192" "$dir/jt" "$dir/out" --shorter 1e9
prep_refuses "--quality 101" "--quality 101: not an integer in 1\\.\\.100" "$dir/jt" "$dir/out" --quality 101
prep_refuses "--shorter with --longest" "--shorter and --longest given together" "$dir/jt" "$dir/out" --shorter 16 --longest 16
out=$("$prep" "$dir/jt" "$dir/out" --longest 16 2>/dev/null)
check "prep into a separate DST still works: 36 images, longest side 16" '[ $? -eq 0 ] && [[ "$out" == "36 images written"*"longest side 16"* ]]'

# A Kaggle-layout tree trains a step through the real config (reduced model and images).
cfg=$(dirname "$0")/../configs/flexnet/exp2_vanilla_vgg16_imagenet100.ini
"$make_tree" "$dir/kg100" --layout kaggle --classes 100 --train 1 --val 1 --size 64x48 2>/dev/null
OMP_WAIT_POLICY=passive "$train" "$cfg" --device cpu --set data.path="$dir/kg100" --set model.arch=cnn \
    --set model.channels=4 --set model.hidden=0 --set model.dropout=0 --set model.linear_init=normal --set data.image_size=16 --set run.epochs=1 --set run.threads=1 \
    --set run.dir="$dir/run" --set run.log_interval=1 --set data.batch_size=8 >"$dir/train.out" 2>&1
check "exp2 config trains on a Kaggle tree" '[ $? -eq 0 ] && grep -q "\"skipped_images\"" "$dir/run/metrics.jsonl"'
# tools/imagenet_c.sh over an ImageNet-C-shaped tree whose 2 x 2 cells are copies of val.X (with one
# class more, which the dataset's 100 classes leave out): every cell scores what val.X scores.
sets="--set model.arch=cnn --set model.channels=4 --set model.hidden=0 --set model.dropout=0 --set model.linear_init=normal --set data.image_size=16"
for cell in blur/1 blur/2 noise/1 noise/3; do
  mkdir -p "$dir/inc/$cell" && cp -r "$dir/kg100/val.X/." "$dir/inc/$cell/" && cp -r "$dir/kg100/val.X/$(ls "$dir/kg100/val.X" | head -1)" "$dir/inc/$cell/n99999999"
done
clean=$("$eval_" --checkpoint "$dir/run" --device cpu --set data.path="$dir/kg100" $sets "$cfg" 2>/dev/null | sed -n 's/^test: .*top-1 \([0-9.]*\)%.*/\1/p')
bash "$(dirname "$0")/../tools/imagenet_c.sh" --eval "$eval_" "$dir/run" "$cfg" "$dir/inc" "$dir/inc.json" data.path="$dir/kg100" \
  model.arch=cnn model.channels=4 model.hidden=0 model.dropout=0 model.linear_init=normal data.image_size=16 run.device=cpu >"$dir/inc.out" 2>&1
check "imagenet_c.sh: 4 cells of 100 images, each val.X's top-1 $clean%" '[ $? -eq 0 ] && [ -n "$clean" ] \
  && [ "$(grep -c "\"images\": 100}" "$dir/inc.json")" -eq 4 ] && grep -q "mean top-1 over 4 cells: $clean%" "$dir/inc.out" \
  && grep -q "\"per_corruption\": {\"blur\": [0-9.]*, \"noise\": [0-9.]*}" "$dir/inc.json"'
bash "$(dirname "$0")/../tools/imagenet_c.sh" --eval "$eval_" "$dir/run" "$cfg" "$dir/nowhere" "$dir/x.json" >/dev/null 2>&1
check "imagenet_c.sh: a missing ROOT exits 2" '[ $? -eq 2 ]'
"$eval_" --checkpoint "$dir/run" --device cpu --set data.path="$dir/kg100" --set data.val_dir="$dir/none" $sets "$cfg" >"$dir/vd.out" 2>&1
check "a missing val_dir: exit 1 naming it" '[ $? -eq 1 ] && grep -q "val_dir $dir/none is not a directory" "$dir/vd.out"'

# Tiny-ImageNet's own layout (train/<wnid>/images/, val/images/ + val_annotations.txt) trains as
# dataset = imagefolder, here on a balanced subset (2 per class of each split), which the
# checkpoint's data metadata names; its Tiny-ImageNet-C cells (<wnid>/*.JPEG) go through imagenet_c.sh.
"$make_tree" "$dir/tiny" --layout tinyimagenet --classes 3 --train 4 --val 3 --no-edge-cases 2>/dev/null
check "tinyimagenet tree: 12 train/<wnid>/images/ files, boxes, 9 val/images/ files annotated" \
  '[ "$(find "$dir/tiny/train" -path "*/images/*.JPEG" | wc -l)" -eq 12 ] && [ -f "$dir/tiny/train/n00001000/n00001000_boxes.txt" ] \
  && [ "$(ls "$dir/tiny/val/images" | wc -l)" -eq 9 ] && [ "$(wc -l <"$dir/tiny/val/val_annotations.txt")" -eq 9 ]'
tiny_sets="--set data.dataset=imagefolder --set data.path=$dir/tiny $sets"
OMP_WAIT_POLICY=passive "$train" "$cfg" --device cpu $tiny_sets --set run.epochs=1 --set run.threads=1 --set data.batch_size=4 \
  --set data.subset=balanced --set data.subset_size=2 --set run.dir="$dir/tiny_run" >"$dir/tiny.out" 2>&1
check "Tiny-ImageNet trains on a balanced subset: 6 train / 6 test images, named in the checkpoint" '[ $? -eq 0 ] \
  && grep -q "imagefolder: 6 train / 6 test images" "$dir/tiny.out" \
  && grep -aq "imagefolder, 6 training samples in global batches of 4, balanced subset of 2 per class from seed 42" "$dir/tiny_run/checkpoints/epoch_0001/state.safetensors"'
for cell in blur/1 blur/2; do
  for w in n00001000 n00001001 n00001002; do mkdir -p "$dir/tiny_c/$cell/$w" && cp "$dir/tiny/train/$w/images/"*.JPEG "$dir/tiny_c/$cell/$w/"; done
done
bash "$(dirname "$0")/../tools/imagenet_c.sh" --eval "$eval_" "$dir/tiny_run" "$cfg" "$dir/tiny_c" "$dir/tiny_c.json" \
  data.dataset=imagefolder data.path="$dir/tiny" model.arch=cnn model.channels=4 model.hidden=0 model.dropout=0 \
  model.linear_init=normal data.image_size=16 run.device=cpu >"$dir/tiny_c.out" 2>&1
check "imagenet_c.sh over Tiny-ImageNet-C cells: 2 cells of 12 images" '[ $? -eq 0 ] && [ "$(grep -c "\"images\": 12}" "$dir/tiny_c.json")" -eq 2 ]'

"$train" "$cfg" --device cpu --set data.path="$dir/nowhere" --set run.dir="$dir/run2" >"$dir/err.out" 2>&1
check "missing dataset dir: exit 1 naming it" '[ $? -eq 1 ] && grep -q "nowhere" "$dir/err.out"'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
