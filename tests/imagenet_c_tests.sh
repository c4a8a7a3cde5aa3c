#!/usr/bin/env bash
# imagenet_c_tests.sh - tools/imagenet_c.sh on a tiny <corruption>/<severity>/<class> tree (ctest
# "imagenet_c"): a 3-class imagefolder tree and a tiny CNN trained on it for one epoch; cells that are
# copies of its val/ with some images taken out. Each cell's top-1, top-5 and image count in OUT.json
# are bioflex-eval's on that cell run by hand (--set data.val_dir), top-1 and top-5 exactly (the count of
# correct images over the cell's, not the two printed decimals: cells of 11 and 9 images), per_corruption
# and mean_top1 their means; a corruption with fewer severities is noted; a corruption named with a
# quote, a backslash and a tab is held as it is in valid JSON, a folder name that is not UTF-8 refused; an OUT.json that cannot be written is refused
# (exit 2) before any evaluation; a cell without one of the classes, ROOT given one level too low
# (a corruption) or at a cell, and another checkpoint's path end with exit 1 and the reason.
# (jpeg_tools_tests.sh runs it on Kaggle- and Tiny-ImageNet-shaped trees.)
# Usage: imagenet_c_tests.sh MAKE_TREE TRAIN EVAL SRC
set -u
make_tree=$1 train=$2 eval_=$3 src=$4
script=$src/tools/imagenet_c.sh
dir=$(mktemp -d /tmp/bioflex_imagenet_c.XXXXXX)
trap 'rm -rf "$dir"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }

"$make_tree" "$dir/tree" --classes 3 --train 6 --val 4 --size 40x32 --no-edge-cases >/dev/null 2>&1
cat >"$dir/tiny.ini" <<EOF
[run]
dir = $dir/run
epochs = 1
threads = 1
device = cpu
[data]
dataset = imagefolder
path = $dir/tree
image_size = 16
batch_size = 6
[model]
arch = cnn
channels = 4
hidden = 0
dropout = 0
EOF
OMP_WAIT_POLICY=passive "$train" "$dir/tiny.ini" >"$dir/train.out" 2>&1
check "a tiny CNN trains on the tree" '[ $? -eq 0 ] && [ -d "$dir/run/checkpoints" ]'

# blur/1 and noise/1: val/ as it is; noise/2: 2 images fewer; snow/1, snow/2, snow/3: 1, 2, 3 fewer
cells="blur/1 noise/1 noise/2 snow/1 snow/2 snow/3"
for cell in $cells; do mkdir -p "$dir/c/$cell" && cp -r "$dir/tree/val/." "$dir/c/$cell/"; done
rm "$dir/c/noise/2/class_000/class_000_00000.JPEG" "$dir/c/noise/2/class_001/class_001_00001.JPEG"
rm "$dir"/c/snow/{1,2,3}/class_002/class_002_00000.JPEG "$dir"/c/snow/{2,3}/class_001/class_001_00003.JPEG
rm "$dir/c/snow/3/class_000/class_000_00002.JPEG"
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c" "$dir/out.json" >"$dir/out.txt" 2>"$dir/out.err"
rc=$?
check "imagenet_c.sh over 6 cells: exit 0 (exit $rc)" '[ $rc -eq 0 ] && [ -s "$dir/out.json" ]'
for cell in $cells; do
  "$eval_" --checkpoint "$dir/run" --set data.val_dir="$dir/c/$cell" "$dir/tiny.ini" 2>/dev/null | grep '^test: ' \
    | sed -E "s|.*top-1 ([0-9.]+)%  top-5 ([0-9.]+)%.*\(([0-9]+) images\).*|$cell \1 \2 \3|"
done >"$dir/by_hand.txt"
python3 - "$dir/out.json" "$dir/by_hand.txt" >"$dir/compare.txt" 2>&1 <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
hand, beyond = {}, 0
for line in open(sys.argv[2]):
    cell, top1, top5, images = line.split()
    # bioflex-eval prints 100 * correct / images to two decimals: with under 10,000 images that
    # fixes the count of correct images, and so the exact fraction
    n = int(images)
    t1, t5 = round(float(top1) * n / 100) / n, round(float(top5) * n / 100) / n
    beyond += abs(t1 - float(top1) / 100) > 1e-6
    hand[cell] = (t1, t5, n)
bad = [] if beyond else ["no cell's top-1 has digits beyond the printed two decimals: the check sees no rounding"]
got = {c["corruption"] + "/" + c["severity"]: (c["top1"], c["top5"], c["images"]) for c in out["cells"]}
if sorted(got) != sorted(hand) or len(hand) != 6:
    bad.append(f"cells {sorted(got)}, by hand {sorted(hand)}")
for cell, (t1, t5, n) in hand.items():
    g = got.get(cell)
    if g is None or abs(g[0] - t1) > 1e-9 or abs(g[1] - t5) > 1e-9 or g[2] != n:
        bad.append(f"{cell}: imagenet_c.sh {g}, bioflex-eval {(t1, t5, n)}")
if [got[c][2] for c in sorted(got)] != [12, 12, 10, 11, 10, 9]:
    bad.append("image counts " + str([got[c][2] for c in sorted(got)]))
for corruption, mean in out["per_corruption"].items():
    cs = [v[0] for c, v in hand.items() if c.startswith(corruption + "/")]
    if abs(mean - sum(cs) / len(cs)) > 1e-9:
        bad.append(f"per_corruption {corruption}: {mean}, the cells' mean {sum(cs) / len(cs)}")
if list(out["per_corruption"]) != ["blur", "noise", "snow"]:
    bad.append("per_corruption " + str(list(out["per_corruption"])))
mean = sum(v[0] for v in hand.values()) / len(hand)
if abs(out["mean_top1"] - mean) > 1e-9:
    bad.append(f"mean_top1 {out['mean_top1']}, the cells' mean {mean}")
print("\n".join(bad) if bad else "as by hand")
sys.exit(1 if bad else 0)
PY
rc=$?
check "OUT.json: every cell, per_corruption and mean_top1 exactly the fractions bioflex-eval's counts give (to 1e-9, not its two printed decimals) ($(head -3 "$dir/compare.txt" | tr '\n' ';'))" '[ $rc -eq 0 ]'

# a corruption whose folder name JSON must escape (a quote, a backslash, a tab, a space): OUT.json
# still parses and holds the name as it is
odd=$'odd "name"\\with\ttab'
mkdir -p "$dir/c3/$odd/1" && cp -r "$dir/tree/val/." "$dir/c3/$odd/1/"
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c3" "$dir/odd.json" >"$dir/odd.out" 2>&1
rc=$?
python3 - "$dir/odd.json" "$odd" >"$dir/odd.compare" 2>&1 <<'PY'
import json, sys
out = json.load(open(sys.argv[1]))
name = sys.argv[2]
ok = [c["corruption"] for c in out["cells"]] == [name] and list(out["per_corruption"]) == [name] \
    and out["cells"][0]["severity"] == "1" and out["cells"][0]["images"] == 12
print("as named" if ok else "cells " + repr(out["cells"]) + ", per_corruption " + repr(out["per_corruption"]))
sys.exit(0 if ok else 1)
PY
check "a corruption named with a quote, a backslash and a tab: exit 0, OUT.json valid JSON naming it ($(tail -1 "$dir/odd.compare"))" \
  '[ $rc -eq 0 ] && grep -q "^as named$" "$dir/odd.compare"'
# a folder name that is not UTF-8 (JSON text is): refused before any evaluation (where iconv can tell)
if command -v iconv >/dev/null; then
  mkdir -p "$dir/c4/"$'bad\xff'"/1" && cp -r "$dir/tree/val/." "$dir/c4/"$'bad\xff'"/1/"
  bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c4" "$dir/bad.json" >"$dir/bad.out" 2>&1
  check "a folder name that is not UTF-8: exit 2 naming it, nothing evaluated" '[ $? -eq 2 ] \
    && grep -q "folder name .*bad.* is not UTF-8" "$dir/bad.out" && ! grep -q "top-1" "$dir/bad.out" && [ ! -e "$dir/bad.json" ]'
fi
check "the table's lines: 6 cells and the mean" '[ "$(grep -c "^[a-z]*/[0-9]: top-1 [0-9.]*% ([0-9]* images)$" "$dir/out.txt")" -eq 6 ] \
  && grep -q "^mean top-1 over 6 cells: " "$dir/out.txt"'
check "corruptions of 1, 2 and 3 severities noted" 'grep -q "note: noise has 2 severities, blur 1" "$dir/out.err" \
  && grep -q "note: snow has 3 severities, blur 1" "$dir/out.err"'

# an OUT.json that cannot be written: exit 2 before any cell is evaluated
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c" "$dir/nowhere/out.json" >"$dir/w.out" 2>&1
check "an unwritable OUT.json: exit 2 before evaluating" '[ $? -eq 2 ] && grep -q "cannot write OUT.json $dir/nowhere/out.json" "$dir/w.out" \
  && ! grep -q "top-1" "$dir/w.out"'
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c" "$dir/c" >"$dir/w.out" 2>&1
check "OUT.json a directory: exit 2" '[ $? -eq 2 ]'
# a cell without one of the classes' folders
cp -r "$dir/c/blur" "$dir/c2" && mkdir "$dir/c2b" && mv "$dir/c2" "$dir/c2b/blur" && rm -r "$dir/c2b/blur/1/class_002"
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c2b" "$dir/c2b.json" >"$dir/m.out" 2>&1
check "a cell missing a class folder: exit 1 naming the cell and the class" '[ $? -eq 1 ] && grep -q "blur/1 failed" "$dir/m.out" \
  && grep -q "class class_002 (label 2) has no folder" "$dir/m.out" && [ ! -e "$dir/c2b.json" ]'
# ROOT one level too low (a corruption: its severities taken for corruptions, the classes for severities)
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c/noise" "$dir/l.json" >"$dir/l.out" 2>&1
check "ROOT a corruption: exit 1" '[ $? -eq 1 ] && grep -q "failed" "$dir/l.out" && [ ! -e "$dir/l.json" ]'
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" "$dir/c/noise/1" "$dir/l.json" >"$dir/l.out" 2>&1
check "ROOT a cell: exit 1, no <corruption>/<severity>/ folders" '[ $? -eq 1 ] && grep -q "has no <corruption>/<severity>/ folders" "$dir/l.out"'
bash "$script" --eval "$eval_" "$dir/nothing" "$dir/tiny.ini" "$dir/c" "$dir/n.json" >"$dir/n.out" 2>&1
check "no checkpoint: exit 1 naming it" '[ $? -eq 1 ] && grep -q "nothing is not a checkpoint" "$dir/n.out"'
bash "$script" --eval "$eval_" "$dir/run" "$dir/tiny.ini" >/dev/null 2>&1
check "too few arguments: exit 2" '[ $? -eq 2 ]'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
