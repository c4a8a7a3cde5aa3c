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
# {name: mean top-1}, "mean_top1": the mean over all cells}; top1 and top5 are fractions, each the
# count of correct images over the cell's images that bioflex-eval --results writes (exact, where its
# printed percentages have two decimals). Folder names are JSON-escaped (quotes, backslashes, control
# characters); a name that is not UTF-8 is refused. Exit status 2 for a bad command line or such a
# name, 1 when a cell's evaluation fails (its output is shown).
set -u
eval_prog=""
if [ "${1:-}" = "--eval" ]; then eval_prog=${2:-}; shift 2; fi
if [ $# -lt 4 ]; then
  sed -n '8,17p' "$0" >&2
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
scratch=$(mktemp -d "${TMPDIR:-/tmp}/imagenet_c_XXXXXX") || exit 1
trap 'rm -rf "$scratch"' EXIT
# A count in the cell's --results file (cJSON's layout: one "key": value per line); the test split's
# object comes first (a "train" one follows with [run] eval_train).
count_of() { sed -nE "s/^[[:space:]]*\"$1\":[[:space:]]*([0-9]+),?[[:space:]]*$/\1/p" "$scratch/cell.json" | head -n 1; }

# A folder name as the body of a JSON string: backslash and quote escaped, control characters as
# \n, \t, \r or \u00XX; the name must be UTF-8 (JSON text is), which iconv checks where installed.
json_string() {
  local in=$1 out="" c i code
  if command -v iconv >/dev/null && ! printf '%s' "$in" | iconv -f UTF-8 -t UTF-8 >/dev/null 2>&1; then
    return 1
  fi
  in=${in//\\/\\\\}
  in=${in//\"/\\\"}
  if [[ $in == *[[:cntrl:]]* ]]; then
    for ((i = 0; i < ${#in}; i++)); do
      c=${in:i:1}
      case $c in
        $'\n') out+='\n' ;;
        $'\t') out+='\t' ;;
        $'\r') out+='\r' ;;
        [[:cntrl:]]) printf -v code '%d' "'$c"; printf -v c '\\u%04x' "$code"; out+=$c ;;
        *) out+=$c ;;
      esac
    done
    in=$out
  fi
  printf '%s' "$in"
}
# Refused before any evaluation: a folder name that OUT.json cannot hold
for cell_dir in "$root"/*/*/; do
  [ -d "$cell_dir" ] || continue
  cell=${cell_dir%/}
  for name in "${cell##*/}" "$(c=${cell%/*}; printf '%s' "${c##*/}")"; do
    json_string "$name" >/dev/null || {
      printf 'imagenet_c.sh: folder name %q in %s is not UTF-8, which OUT.json (JSON) cannot hold: rename it\n' \
        "$name" "$root" >&2
      exit 2
    }
  done
done

cells=""
count=0
for corruption_dir in "$root"/*/; do
  corruption=${corruption_dir%/}; corruption=${corruption##*/}
  for severity_dir in "$corruption_dir"*/; do
    [ -d "$severity_dir" ] || continue
    severity=${severity_dir%/}; severity=${severity##*/}
    rm -f "$scratch/cell.json"
    log=$("$eval_prog" --checkpoint "$checkpoint" "${sets[@]}" --set data.val_dir="${severity_dir%/}" \
      --results "$scratch/cell.json" "$cfg" 2>&1)
    status=$?
    correct1=$(count_of correct_top1 2>/dev/null) correct5=$(count_of correct_top5 2>/dev/null)
    images=$(count_of images 2>/dev/null)
    if [ $status -ne 0 ] || [ -z "$correct1" ] || [ -z "$correct5" ] || [ -z "$images" ]; then
      echo "imagenet_c.sh: $corruption/$severity failed (exit $status):" >&2
      echo "$log" >&2
      exit 1
    fi
    echo "$corruption/$severity: $(grep -E '^test: loss' <<<"$log" | tail -n 1 | sed -E 's/.*(top-1 [0-9.]+%).*/\1/') ($images images)"
    # tab-separated: the escaped names hold no tab
    cells+="$(json_string "$corruption")"$'\t'"$(json_string "$severity")"$'\t'"$correct1"$'\t'"$correct5"$'\t'"$images"$'\n'
    count=$((count + 1))
  done
done
[ $count -gt 0 ] || { echo "imagenet_c.sh: $root has no <corruption>/<severity>/ folders" >&2; exit 1; }

printf '%s' "$cells" | awk -F '\t' -v out="$out" '
  { c[NR] = $1; s[NR] = $2; n[NR] = $5; t1[NR] = $3 / $5; t5[NR] = $4 / $5
    sum[$1] += t1[NR]; k[$1]++; if (!($1 in seen)) { seen[$1] = 1; order[++m] = $1 }; total += t1[NR] }
  END {
    printf "{\n  \"cells\": [\n" > out
    for (i = 1; i <= NR; i++)
      printf "    {\"corruption\": \"%s\", \"severity\": \"%s\", \"top1\": %.12f, \"top5\": %.12f, \"images\": %d}%s\n",
             c[i], s[i], t1[i], t5[i], n[i], (i < NR ? "," : "") > out
    printf "  ],\n  \"per_corruption\": {" > out
    for (j = 1; j <= m; j++) printf "%s\"%s\": %.12f", (j > 1 ? ", " : ""), order[j], sum[order[j]] / k[order[j]] > out
    printf "},\n  \"mean_top1\": %.12f\n}\n", total / NR > out
    printf "mean top-1 over %d cells: %.2f%%\n", NR, 100 * total / NR
    for (j = 2; j <= m; j++)  # a missing cell: the per-corruption means are over different severities
      if (k[order[j]] != k[order[1]]) {
        printf "imagenet_c.sh: note: %s has %d severities, %s %d (a cell missing?)\n", order[j], k[order[j]],
               order[1], k[order[1]] > "/dev/stderr"
      }
  }'
