#!/usr/bin/env bash
# imagenet_c.sh - a checkpoint's top-1 on every corruption and severity of an ImageNet-C tree
# (FlexNet spec section 5.1: ROOT/<corruption>/<severity>/<wnid>/*.JPEG, severities 1-5; top-1 per
# cell, no mCE), one bioflex-eval per cell with [data] val_dir pointing at it. The classes and their
# order stay the config's dataset's (class_list, Labels.json or its train/ folders), so an
# ImageNet-100 model is scored on the ImageNet-100 classes of each cell, as FlexNet's loader did.
#
# usage: tools/imagenet_c.sh [--eval PATH] CHECKPOINT CFG.ini ROOT OUT.json [section.key=value]...  (each passed on as --set)
#   --eval PATH   the bioflex-eval program (default: bioflex-eval on PATH, else build/bioflex-eval)
# OUT.json: {"cells": [{"corruption", "severity", "top1", "top5", "images"}...], "per_corruption":
# {name: mean top-1}, "mean_top1": the mean over all cells}. Exit status 2 for a bad command line,
# 1 when a cell's evaluation fails (its output is shown).
set -u
eval_prog=""
if [ "${1:-}" = "--eval" ]; then eval_prog=${2:-}; shift 2; fi
if [ $# -lt 4 ]; then
  sed -n '8,12p' "$0" >&2
  exit 2
fi
checkpoint=$1 cfg=$2 root=$3 out=$4
shift 4
if [ -z "$eval_prog" ]; then
  eval_prog=$(command -v bioflex-eval || echo "$(dirname "$0")/../build/bioflex-eval")
fi
[ -x "$eval_prog" ] || { echo "imagenet_c.sh: no bioflex-eval at $eval_prog (use --eval PATH)" >&2; exit 2; }
[ -d "$root" ] || { echo "imagenet_c.sh: ROOT $root is not a directory" >&2; exit 2; }
# OUT.json is written at the end: refuse one that cannot be before the evaluations, not after them
out_dir=$(dirname "$out")
if [ -d "$out" ] || [ ! -d "$out_dir" ] || [ ! -w "$out_dir" ] || { [ -e "$out" ] && [ ! -w "$out" ]; }; then
  echo "imagenet_c.sh: cannot write OUT.json $out" >&2; exit 2
fi
sets=()
for s in "$@"; do sets+=(--set "$s"); done

cells=""
count=0
for corruption_dir in "$root"/*/; do
  corruption=$(basename "$corruption_dir")
  for severity_dir in "$corruption_dir"*/; do
    [ -d "$severity_dir" ] || continue
    severity=$(basename "$severity_dir")
    log=$("$eval_prog" --checkpoint "$checkpoint" "${sets[@]}" --set data.val_dir="${severity_dir%/}" "$cfg" 2>&1)
    status=$?
    line=$(grep -E '^test: loss' <<<"$log" | tail -1)
    if [ $status -ne 0 ] || [ -z "$line" ]; then
      echo "imagenet_c.sh: $corruption/$severity failed (exit $status):" >&2
      echo "$log" >&2
      exit 1
    fi
    # test: loss 0.2437  top-1 91.15%  top-5 99.90%  (10000 images)
    top1=$(sed -E 's/.*top-1 ([0-9.]+)%.*/\1/' <<<"$line")
    top5=$(sed -E 's/.*top-5 ([0-9.]+)%.*/\1/' <<<"$line")
    images=$(sed -E 's/.*\(([0-9]+) images\).*/\1/' <<<"$line")
    echo "$corruption/$severity: top-1 $top1% ($images images)"
    cells+="$corruption $severity $top1 $top5 $images"$'\n'
    count=$((count + 1))
  done
done
[ $count -gt 0 ] || { echo "imagenet_c.sh: $root has no <corruption>/<severity>/ folders" >&2; exit 1; }

printf '%s' "$cells" | awk -v out="$out" '
  { c[NR] = $1; s[NR] = $2; t1[NR] = $3 / 100; t5[NR] = $4 / 100; n[NR] = $5
    sum[$1] += $3 / 100; k[$1]++; if (!($1 in seen)) { seen[$1] = 1; order[++m] = $1 }; total += $3 / 100 }
  END {
    printf "{\n  \"cells\": [\n" > out
    for (i = 1; i <= NR; i++)
      printf "    {\"corruption\": \"%s\", \"severity\": \"%s\", \"top1\": %.6f, \"top5\": %.6f, \"images\": %d}%s\n",
             c[i], s[i], t1[i], t5[i], n[i], (i < NR ? "," : "") > out
    printf "  ],\n  \"per_corruption\": {" > out
    for (j = 1; j <= m; j++) printf "%s\"%s\": %.6f", (j > 1 ? ", " : ""), order[j], sum[order[j]] / k[order[j]] > out
    printf "},\n  \"mean_top1\": %.6f\n}\n", total / NR > out
    printf "mean top-1 over %d cells: %.2f%%\n", NR, 100 * total / NR
    for (j = 2; j <= m; j++)  # a missing cell: the per-corruption means are over different severities
      if (k[order[j]] != k[order[1]]) {
        printf "imagenet_c.sh: note: %s has %d severities, %s %d (a cell missing?)\n", order[j], k[order[j]],
               order[1], k[order[1]] > "/dev/stderr"
      }
  }'
