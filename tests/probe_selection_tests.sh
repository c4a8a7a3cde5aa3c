#!/usr/bin/env bash
# probe_selection_tests.sh - tools/plot_analysis.py --select-probes (FlexNet 5.4 b's loss-surface
# probes) on a hand-made flex/vanilla pair of --input-hessian files whose answer is worked out by hand
# below; plain Python, no numpy or matplotlib.
#
# position  flex: ok, loss, l1+l2   vanilla: ok, loss, l1+l2   in the pool of 5?
#    10        yes  0.5   2            yes  0.4   4            yes (ratio 2)
#    11        yes  0.2   1            no   1.0   5            no: vanilla misclassifies it
#    12        yes  3.5   1            yes  0.1   5            no: flex loss 3.5 > 3
#    13        yes  0.3   0.1          yes  0.3   2            yes (ratio 20, below the median)
#    14        yes  1.0   1            yes  2.0   3            yes (ratio 3, at the median)
#    15        yes  0.7   0.5          yes  0.5   3            yes (ratio 6, at the median)
#    16        yes  3.0   1            yes  3.0   1            yes (loss 3 is <= 3; ratio 1, below)
#    17        yes  0.1   0.1          yes  0.1   9            past the pool of 5 (ratio 90)
# Pool 5: 10, 13, 14, 15, 16; vanilla curvatures 4, 2, 3, 3, 1: median 3, reached by two images;
# at or above it 10, 14, 15, ranked by ratio 15 (6), 14 (3), 10 (2): chosen 15, 14.
# Pool 4 (10, 13, 14, 15: 4, 2, 3, 3, median (3 + 3) / 2 = 3): the same three, the same ranking.
# Pool 6 adds 17 (9: median (3 + 3) / 2 = 3 again): 17 (90) first, then 15.
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d /tmp/bioflex_probes.XXXXXX)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" <<'PY'
import json, os, sys
rows = [  # position, label, (flex correct, loss, l1, l2), (vanilla correct, loss, l1, l2)
    (10, 1, (True, 0.5, 1.0, 1.0), (True, 0.4, 3.0, 1.0)),
    (11, 1, (True, 0.2, 0.5, 0.5), (False, 1.0, 4.0, 1.0)),
    (12, 2, (True, 3.5, 0.5, 0.5), (True, 0.1, 4.0, 1.0)),
    (13, 0, (True, 0.3, 0.05, 0.05), (True, 0.3, 1.5, 0.5)),
    (14, 2, (True, 1.0, 0.75, 0.25), (True, 2.0, 2.0, 1.0)),
    (15, 0, (True, 0.7, 0.25, 0.25), (True, 0.5, 2.5, 0.5)),
    (16, 1, (True, 3.0, 0.5, 0.5), (True, 3.0, 0.5, 0.5)),
    (17, 2, (True, 0.1, 0.05, 0.05), (True, 0.1, 8.0, 1.0)),
]
def write(name, which, edit=lambda image: None):
    images = []
    for position, label, *nets in rows:
        correct, loss, l1, l2 = nets[which]
        image = {"position": position, "label": label, "predicted": label if correct else (label + 1) % 3,
                 "correct": correct, "loss": loss, "eigenvalues": [l1, l2], "ritz": [l1, l2, 0.0]}
        edit(image)
        images.append(image)
    data = {"images": len(images), "power_steps": 50, "lanczos_steps": 50, "surface_points": 0,
            "surface_range": 10, "seed": 42, "hessian_vector_products": 0, "per_image": images}
    json.dump(data, open(os.path.join(sys.argv[1], name), "w"), indent=1)
write("flex.json", 0)
write("vanilla.json", 1)
write("relabelled.json", 1, lambda im: im.update(label=0) if im["position"] == 14 else None)
write("moved.json", 1, lambda im: im.update(position=30) if im["position"] == 17 else None)
write("old.json", 1, lambda im: (im.pop("correct"), im.pop("predicted")))
write("top1.json", 1, lambda im: im.update(eigenvalues=im["eigenvalues"][:1]))
PY
pass=0 fail=0
# check NAME STATUS PATTERN... -- ARGS: plot_analysis.py with ARGS exits with STATUS and prints every
# PATTERN (a fixed string) as a whole line of its own
check() {
  local name="$1" want="$2"; shift 2
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local out; out=$(python3 "$src/tools/plot_analysis.py" "$@" 2>&1); local got=$?
  local ok=1
  [ "$got" -eq "$want" ] || ok=0
  for p in "${patterns[@]}"; do grep -qxF -- "$p" <<<"$out" || ok=0; done
  if [ "$ok" = 1 ]; then pass=$((pass + 1)); else
    fail=$((fail + 1)); echo "FAIL $name: exit $got (want $want), want the lines:"; printf '  %s\n' "${patterns[@]}"
    echo "got:"; echo "$out"
  fi
}
d=$dir
check "pool of 5: the median tie kept, the pool cut at 5, the loss bound inclusive" 0 \
  "pool: 5 images both classify correctly with loss <= 3: positions 10, 13, 14, 15, 16" \
  "left out: positions 11 (vanilla misclassifies it); 12 (flex loss 3.5 > 3)" \
  "median vanilla curvature (lambda1 + lambda2) over the pool: 3" \
  "ranked by (lambda1 + lambda2) vanilla / flex, the 3 images at or above the median:" \
  "  1. position 15: ratio 6 (vanilla 3, flex 0.5)" \
  "  2. position 14: ratio 3 (vanilla 3, flex 1)" \
  "  3. position 10: ratio 2 (vanilla 4, flex 2)" \
  "chosen: positions 15, 14" \
  "--set analysis.input_hessian_positions=15,14 --set analysis.input_hessian_surface_points=51" \
  -- "$d/flex.json" "$d/vanilla.json" --select-probes --pool 5
check "an even pool of 4: the median between two equal middle values" 0 \
  "pool: 4 images both classify correctly with loss <= 3: positions 10, 13, 14, 15" \
  "median vanilla curvature (lambda1 + lambda2) over the pool: 3" \
  "chosen: positions 15, 14, 10" \
  "--set analysis.input_hessian_positions=15,14,10 --set analysis.input_hessian_surface_points=51" \
  -- "$d/flex.json" "$d/vanilla.json" --select-probes --pool 4 --top 3
check "the default pool of 16 holds all 6 (a note says so), 17 first" 0 \
  "pool: 6 images both classify correctly with loss <= 3: positions 10, 13, 14, 15, 16, 17" \
  "note: the pool holds 6 of the 16 images asked for: compute more images ([analysis] input_hessian_images, up to 64)" \
  "  1. position 17: ratio 90 (vanilla 9, flex 0.1)" \
  "--set analysis.input_hessian_positions=17,15 --set analysis.input_hessian_surface_points=51" \
  -- "$d/flex.json" "$d/vanilla.json" --select-probes
check "--max-loss 2.5 leaves out 16 (and 12)" 0 \
  "pool: 5 images both classify correctly with loss <= 2.5: positions 10, 13, 14, 15, 17" \
  "left out: positions 11 (vanilla misclassifies it); 12 (flex loss 3.5 > 2.5); 16 (flex loss 3 > 2.5, vanilla loss 3 > 2.5)" \
  -- "$d/flex.json" "$d/vanilla.json" --select-probes --pool 5 --max-loss 2.5
check "another label: refused" 1 \
  "error: --select-probes needs two files over the same images: image 4 is position 14 (label 2) in $d/flex.json, position 14 (label 0) in $d/relabelled.json" \
  -- "$d/flex.json" "$d/relabelled.json" --select-probes
check "another position: refused" 1 \
  "error: --select-probes needs two files over the same images: image 7 is position 17 (label 2) in $d/flex.json, position 30 (label 2) in $d/moved.json" \
  -- "$d/flex.json" "$d/moved.json" --select-probes
check "a file without \"correct\": refused" 1 \
  "error: $d/old.json does not say which images its network classifies correctly (no \"correct\"): it predates them; run bioflex-eval --input-hessian again" \
  -- "$d/flex.json" "$d/old.json" --select-probes
check "one eigenvalue per image: refused" 1 \
  "error: $d/top1.json has fewer than two eigenvalues per image: the curvature lambda1 + lambda2 needs [analysis] input_hessian_top_n >= 2" \
  -- "$d/flex.json" "$d/top1.json" --select-probes
check "one file: refused" 1 \
  "error: --select-probes takes two --input-hessian files, the flex network's and the vanilla one's" \
  -- "$d/flex.json" --select-probes
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
