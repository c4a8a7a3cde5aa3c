#!/usr/bin/env bash
# Data-wait fraction of a training step (issue 6 point 8): how much of each VGG-16 224x224 step the
# training loop spends waiting for the JPEG loader, bioflex beside a torchvision ImageFolder +
# DataLoader on the same tree (target on the GPU: bioflex's wait <= 5 % of the step).
#
#   bash bench/data_wait.sh [options]
#
# Makes (or reuses) a synthetic ImageNet-like JPEG tree (bioflex-make-jpeg-tree: mostly 500x375,
# quality 90), trains one epoch of exactly --steps batches on it with RandomResizedCrop + flip, reads
# ms_per_step, images_per_s and data_wait_ms from metrics.jsonl, drops the first log intervals
# (cuDNN autotuning, the loader filling its ring) and prints the step-weighted figures. Then runs
# bench/data_wait_torchvision.py with the same settings and prints the ratio of the two.
# Every option also has an environment variable (in brackets); the option wins.
#   --device cpu|cuda       [DEVICE=cuda]
#   --batch B               [BATCH=128]
#   --workers W             [WORKERS=nproc]   bioflex [data] loader_threads, DataLoader num_workers
#   --steps N               [STEPS=60]        training steps, warm-up included
#   --log-every L           [LOG_EVERY=10]    steps per metrics.jsonl line
#   --warmup K              [WARMUP=1]        log intervals (K*L steps) left out of the figures
#   --arch A                [ARCH=vgg16]      bioflex [model] arch (vgg6|vgg11|vgg16|resnet18|resnet50|...)
#   --tv-arch A             [TV_ARCH=ARCH]    the PyTorch model (see data_wait_torchvision.py)
#   --size S                [SIZE=224]        crop side
#   --precision fp32|tf32   [PRECISION=fp32]
#   --prefetch P            [PREFETCH=]       bioflex [data] prefetch (empty: bioflex's default)
#   --classes C             [CLASSES=100]     classes of the tree
#   --per-class N           [PER_CLASS=]      training JPEGs per class (empty: enough for STEPS*BATCH)
#   --jpeg-size WxH         [JPEG_SIZE=]      every JPEG this size (empty: the maker's mixed sizes, mostly 500x375)
#   --tree DIR              [TREE=]           the tree (empty: one under $TMPDIR named by its size)
#   --build DIR             [BUILD=build]     bioflex build directory (bioflex-train, bioflex-make-jpeg-tree)
#   --python PY             [PYTHON=python3]  interpreter with torch + torchvision
#   --no-torchvision        [TORCHVISION=0]   bioflex only
#   --work DIR              [WORK=]           run directories (empty: a temporary one, removed at exit)
#   --set s.k=v             (repeatable)      passed on to bioflex-train, e.g. --set model.dropout=0
# Example, CPU, small: bash bench/data_wait.sh --device cpu --arch resnet18 --size 64 --batch 16 --steps 12 --log-every 3
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

device=${DEVICE:-cuda} batch=${BATCH:-128} workers=${WORKERS:-$(nproc)} steps=${STEPS:-60}
log_every=${LOG_EVERY:-10} warmup=${WARMUP:-1} arch=${ARCH:-vgg16} tv_arch=${TV_ARCH:-} size=${SIZE:-224}
precision=${PRECISION:-fp32} prefetch=${PREFETCH:-} classes=${CLASSES:-100} per_class=${PER_CLASS:-}
jpeg_size=${JPEG_SIZE:-}
tree=${TREE:-} build=${BUILD:-build} python=${PYTHON:-python3} torchvision=${TORCHVISION:-1} work=${WORK:-}
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    --no-torchvision) torchvision=0; shift; continue ;;
    -h|--help) usage ;;
    --device|--batch|--workers|--steps|--log-every|--warmup|--arch|--tv-arch|--size|--precision|--prefetch|\
    --classes|--per-class|--jpeg-size|--tree|--build|--python|--work|--set)
      [ $# -ge 2 ] || { echo "data_wait.sh: $1 needs a value" >&2; exit 2; } ;;
    *) echo "data_wait.sh: unknown argument '$1' (--help lists the options)" >&2; exit 2 ;;
  esac
  case $1 in
    --device) device=$2 ;; --batch) batch=$2 ;; --workers) workers=$2 ;; --steps) steps=$2 ;;
    --log-every) log_every=$2 ;; --warmup) warmup=$2 ;; --arch) arch=$2 ;; --tv-arch) tv_arch=$2 ;;
    --size) size=$2 ;; --precision) precision=$2 ;; --prefetch) prefetch=$2 ;; --classes) classes=$2 ;;
    --per-class) per_class=$2 ;; --jpeg-size) jpeg_size=$2 ;; --tree) tree=$2 ;; --build) build=$2 ;; --python) python=$2 ;;
    --work) work=$2 ;; --set) sets+=(--set "$2") ;;
  esac
  shift 2
done
tv_arch=${tv_arch:-$arch}
for v in batch workers steps log_every warmup size classes ${per_class:+per_class}; do
  [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || { [ "$v" = warmup ] && [ "${!v}" = 0 ]; } ||
    { echo "data_wait.sh: $v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
case $device in cpu|cuda) ;; *) echo "data_wait.sh: --device cpu|cuda, not '$device'" >&2; exit 2 ;; esac
# Whole log intervals only, and at least one left after the warm-up: the figures are interval means.
if [ $((steps % log_every)) -ne 0 ] || [ $((steps / log_every)) -le "$warmup" ]; then
  echo "data_wait.sh: --steps ($steps) must be a multiple of --log-every ($log_every) with more than" \
       "--warmup ($warmup) intervals" >&2; exit 2
fi
train_bin=$build/bioflex-train make_tree=$build/bioflex-make-jpeg-tree
for b in "$train_bin" "$make_tree"; do
  [ -x "$b" ] || { echo "data_wait.sh: $b not found: build bioflex first, or point --build at its build directory" >&2; exit 2; }
done

# One epoch of exactly `steps` batches: no epoch boundary (the loader would refill its ring there)
# inside the measured steps. The first train_limit samples of the sorted tree are the first classes,
# so the tree needs that many images in all.
images=$((steps * batch))
per_class=${per_class:-$(( (images + classes - 1) / classes ))}
if [ $((per_class * classes)) -lt "$images" ]; then
  echo "data_wait.sh: $classes classes x $per_class images < $steps steps x batch $batch" >&2; exit 2
fi
# A --tree that exists (a real ImageNet, say) is used as it is; a missing one, or our own default
# one left unfinished (no .complete), is made.
default_tree=${TMPDIR:-/tmp}/bioflex_data_wait_tree_${classes}x${per_class}${jpeg_size:+_$jpeg_size}
if [ -n "$tree" ] && [ -e "$tree" ]; then
  [ -d "$tree/train" ] || { echo "data_wait.sh: --tree $tree has no train/ directory" >&2; exit 2; }
elif [ ! -f "${tree:-$default_tree}/.complete" ]; then
  tree=${tree:-$default_tree}
  # No edge-case files: torchvision's ImageFolder would stop on the undecodable ones.
  echo "making $tree: $classes classes x $per_class training JPEGs" >&2
  [ "$tree" = "$default_tree" ] && rm -rf "$tree"
  "$make_tree" "$tree" --classes "$classes" --train "$per_class" --val 1 --no-edge-cases \
    ${jpeg_size:+--size "$jpeg_size"} 2>/dev/null
  touch "$tree/.complete"
fi
tree=${tree:-$default_tree}

if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/bioflex_data_wait.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
run=$work/bioflex_run
rm -rf "$run"
mkdir -p "$run"
# eval and checkpoint only at the end (the one test batch and the checkpoint come after the loop).
cat >"$work/data_wait.ini" <<EOF
[run]
dir = $run
epochs = 1
log_interval = $log_every
eval_every = 0
checkpoint_every = 0
precision = $precision
[data]
dataset = imagefolder
path = $tree
batch_size = $batch
train_limit = $images
test_limit = $batch
loader_threads = $workers
train_transform = random_resized_crop
augment_flip = true
image_size = $size
${prefetch:+prefetch = $prefetch}
[model]
arch = $arch
EOF

label="$arch $device $precision batch $batch ${size}x${size} workers $workers"
if ! "$train_bin" --device "$device" ${sets[@]+"${sets[@]}"} "$work/data_wait.ini" >"$work/bioflex.log" 2>&1; then
  trap - EXIT # keep the log
  echo "data_wait.sh: bioflex-train failed (log: $work/bioflex.log):" >&2
  # The error comes before the resolved-config dump; progress lines end in \r.
  tr '\r' '\n' <"$work/bioflex.log" | grep -i -m 5 'error' >&2 || tail -n 20 "$work/bioflex.log" >&2
  exit 1
fi
rm -rf "$run/checkpoints" # a VGG-16 checkpoint is over 1 GB and nobody reads it

# Step-weighted means over the intervals after the warm-up: time = ms_per_step x steps of the
# interval, images = images_per_s x time. cJSON writes one unformatted object per line.
ours=$(awk -v skip="$warmup" -v want="$steps" -v label="bioflex $label" '
  function num(key,   m) { return match($0, "\"" key "\":[-0-9.eE+]+") ? substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0 : -1 }
  /"type":"train"/ {
    step = num("step"); n = step - last; last = step
    if (++seen <= skip) next
    ms = num("ms_per_step"); t += ms * n; w += num("data_wait_ms") * n; img += num("images_per_s") * ms * n / 1000; steps += n
  }
  END {
    if (steps == 0) { print "no train lines after the warm-up in metrics.jsonl" > "/dev/stderr"; exit 1 }
    if (last != want) printf "data_wait.sh: bioflex trained %d steps, not %d (too few images in the tree?)\n", last, want > "/dev/stderr"
    printf "%s: %.1f images/s, %.1f ms/step, data wait %.2f ms/step = %.1f %% of the step (%d steps after %d warm-up)\n",
           label, 1000 * img / t, t / steps, w / steps, 100 * w / t, steps, last - steps
  }' "$run/metrics.jsonl")
echo "$ours"

[ "$torchvision" = 1 ] || exit 0
if ! "$python" -c 'import torch, torchvision' 2>/dev/null; then
  echo "torchvision: skipped ($python cannot import torch and torchvision; --python PY picks another interpreter)"
  exit 0
fi
theirs=$("$python" bench/data_wait_torchvision.py "$tree" --device "$device" --batch "$batch" --workers "$workers" \
  --steps "$steps" --warmup $((warmup * log_every)) --arch "$tv_arch" --size "$size" --precision "$precision" \
  --limit "$images")
echo "$theirs"
# images/s and the wait fraction of both lines, e.g. "...: 123.4 images/s, ... = 5.6 % of the step ..."
rate() { sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$1"; }
frac() { sed -E 's/.* = ([0-9.]+) % of the step.*/\1/' <<<"$1"; }
awk -v a="$(rate "$ours")" -v b="$(rate "$theirs")" -v fa="$(frac "$ours")" -v fb="$(frac "$theirs")" 'BEGIN {
  printf "bioflex / torchvision: %.2fx images/s; data-wait fraction %.1f %% vs %.1f %%\n", a / b, fa, fb }'
