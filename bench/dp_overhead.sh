#!/usr/bin/env bash
# dp_overhead.sh - what data parallelism costs per training step (issue 7, point 7), measured by
# bioflex-train itself on procedural data (VGG-16 at 224, batch 128 per GPU by default):
#
#   one GPU (default): the plain path and the NCCL path with one rank ([run] force_nccl: gradient
#     buckets launched from the backward pass, stream hand-offs, the compute stream's wait) train
#     the same model on the same data; prints ms/step of both, the overhead in % (target: <= 2 %)
#     and the NCCL run's comm_exposed_ms (metrics.jsonl: the time the step waited for the buckets).
#   --gpus N (N > 1): one GPU on the plain path, then N GPUs over NCCL with the same batch per GPU
#     (weak scaling); prints ms/step, comm_exposed_ms and data_wait_ms at N, the measured scaling
#     efficiency (1-GPU step / N-GPU step), the all-reduce bus bandwidth bench_allreduce measures at
#     the model's gradient size, and runs bench/scaling_model.py with these figures (the command is
#     printed, to rerun with other interconnect figures).
#   --device cpu: the same on the CPU backend, as a smoke test of this script's runs and parsing:
#     the data-parallel run is `mpirun -np 1` (one rank: MPI is then the plain path, so no
#     comm_exposed_ms) or `mpirun -np N` with --gpus N (MPIRUN overrides the launcher).
#
# Figures are means over the log intervals after the first (warm-up and cuDNN's algorithm search);
# a data_wait_ms that is not small against ms/step means the procedural loader, not the GPU, set
# the pace: raise --loader-threads or lower N. Each loader thread renders whole batches (several ms
# per 224x224 image on one core), so every thread gets a prefetch slot. Opening the dataset renders
# up to 4096 images on one core for its normalisation statistics (twice): tens of seconds per run
# at 224, the same for both runs.
#
#   bash bench/dp_overhead.sh [--arch vgg16] [--batch 128] [--size 224] [--steps 40] [--interval 10]
#        [--gpus N] [--device cuda|cpu] [--precision fp32|tf32] [--classes 100]
#        [--loader-threads K] [--busbw GB/s (skip bench_allreduce)] [--build DIR (default build)]
set -euo pipefail
cd "$(dirname "$0")/.."

arch=vgg16; batch=128; size=224; steps=40; interval=10; gpus=1; device=cuda; precision=fp32
classes=100; loader_threads=""; busbw=""; build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2 ;; --batch) batch=$2 ;; --size) size=$2 ;; --steps) steps=$2 ;;
    --interval) interval=$2 ;; --gpus) gpus=$2 ;; --device) device=$2 ;; --precision) precision=$2 ;;
    --classes) classes=$2 ;; --loader-threads) loader_threads=$2 ;; --busbw) busbw=$2 ;; --build) build=$2 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
  esac
  shift 2
done
train=$build/bioflex-train
[ -x "$train" ] || { echo "dp_overhead: $train not found: build first (or --build DIR)" >&2; exit 2; }
mpirun_cmd=${MPIRUN:-mpirun --allow-run-as-root --oversubscribe}
# The procedural loader renders every image on the CPU: give each rank its share of the cores.
[ -n "$loader_threads" ] || loader_threads=$(( $(nproc) / gpus > 1 ? $(nproc) / gpus : 1 ))
[ "$loader_threads" -le 64 ] || loader_threads=64

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bioflex_dp_overhead_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# One epoch: a restarting loader between epochs would add a bubble to the intervals. eval_every
# and checkpoint_every = 0: one evaluation (one batch) and one checkpoint, after the timed steps.
cat >"$tmp/bench.ini" <<INI
[run]
device = $device
epochs = 1
log_interval = $interval
eval_every = 0
checkpoint_every = 0
precision = $precision
threads = $([ "$device" = cpu ] && echo 1 || echo 0)
[data]
dataset = procedural
procedural_size = $size
procedural_classes = $classes
loader_threads = $loader_threads
prefetch = $(( loader_threads > 4 ? loader_threads : 4 ))
[model]
arch = $arch
[optim]
optimizer = sgd
lr = 0.01
momentum = 0.9
INI

# run NAME GLOBAL_BATCH [LAUNCHER...] -- [--set ...]: one training run, its log in $tmp/NAME.log
run() {
  local name=$1 global=$2; shift 2
  local launcher=()
  while [ "$1" != "--" ]; do launcher+=("$1"); shift; done
  shift
  if ! "${launcher[@]}" "$train" "$tmp/bench.ini" --set run.dir="$tmp/$name" --set data.batch_size="$global" \
      --set data.procedural_train=$((global * steps)) --set data.procedural_test="$global" "$@" \
      >"$tmp/$name.log" 2>&1; then
    echo "dp_overhead: the $name run failed:" >&2
    tail -n 20 "$tmp/$name.log" >&2
    exit 1
  fi
}

# stats NAME: "ms_per_step data_wait_ms comm_exposed_ms" averaged over the train lines after the
# first of $tmp/NAME/metrics.jsonl ("-" for a field the run did not log).
stats() {
  python3 - "$tmp/$1/metrics.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
train = [l for l in lines if l.get("type") == "train"]
steady = train[1:] if len(train) > 1 else train
def mean(key):
    v = [l[key] for l in steady if key in l]
    return f"{sum(v) / len(v):.3f}" if v and len(v) == len(steady) else "-"
print(mean("ms_per_step"), mean("data_wait_ms"), mean("comm_exposed_ms"))
PY
}

params() { sed -nE 's/.* with ([0-9]+) parameters.*/\1/p' "$tmp/$1.log" | head -n 1; }

echo "dp_overhead: $arch ${size}x${size}, batch $batch per GPU, $steps steps (means of the log intervals of" \
     "$interval steps after the first), $device $precision, $loader_threads loader threads per rank"

if [ "$gpus" -le 1 ]; then
  # ---- one GPU: plain vs NCCL with one rank ----
  run plain "$batch" --
  if [ "$device" = cpu ]; then run dp "$batch" $mpirun_cmd -np 1 --
  else run dp "$batch" -- --set run.force_nccl=true; fi
  read -r plain_ms plain_wait _ < <(stats plain)
  read -r dp_ms dp_wait dp_comm < <(stats dp)
  dp_name=$([ "$device" = cpu ] && echo "mpirun -np 1" || echo "NCCL, 1 rank")
  printf '%-22s ms/step %9.2f   data_wait_ms %7.2f\n' "plain" "$plain_ms" "$plain_wait"
  printf '%-22s ms/step %9.2f   data_wait_ms %7.2f   comm_exposed_ms %s\n' "$dp_name" "$dp_ms" "$dp_wait" "$dp_comm"
  python3 - "$plain_ms" "$dp_ms" <<'PY'
import sys
plain, dp = map(float, sys.argv[1:3])
over = 100 * (dp - plain) / plain
print(f"overhead {over:+.2f} % of the plain step (target <= 2 %): {'ok' if over <= 2 else 'ABOVE TARGET'}")
PY
  mib=$(python3 -c "print(f'{$(params plain) * 4 / 1048576:.1f}')")
  echo "to predict 2-64 GPUs: python3 bench/scaling_model.py --name $arch --step-ms $plain_ms --grad-mib $mib" \
       "--nvlink-gbs <busbw of bench_allreduce --gpus N>  (or run this script with --gpus N)"
  exit 0
fi

# ---- N GPUs (weak scaling) against one ----
run plain "$batch" --
if [ "$device" = cpu ]; then run dp $((batch * gpus)) $mpirun_cmd -np "$gpus" --
else run dp $((batch * gpus)) -- --gpus "$gpus"; fi
read -r plain_ms plain_wait _ < <(stats plain)
read -r dp_ms dp_wait dp_comm < <(stats dp)
printf '%-22s ms/step %9.2f   data_wait_ms %7.2f\n' "1 GPU, plain" "$plain_ms" "$plain_wait"
printf '%-22s ms/step %9.2f   data_wait_ms %7.2f   comm_exposed_ms %s\n' "$gpus ranks, data-parallel" "$dp_ms" \
       "$dp_wait" "$dp_comm"
python3 -c "print(f'measured scaling efficiency (weak, batch $batch per rank): {100 * $plain_ms / $dp_ms:.1f} %')"
if [ -z "$busbw" ]; then
  if [ "$device" = cpu ]; then $mpirun_cmd -np "$gpus" "$build/bench/bench_allreduce" --iters 3 >"$tmp/allreduce.log" 2>&1
  else "$build/bench/bench_allreduce" --gpus "$gpus" --iters 10 >"$tmp/allreduce.log" 2>&1; fi
  cat "$tmp/allreduce.log"
  # the row of this model's gradient (vgg16_bn, resnet50), else the largest size measured
  busbw=$(awk -v a="$arch" '$NF ~ /^[0-9.]+$/ { last = $NF; if (index($1, a) == 1) hit = $NF } END { print hit != "" ? hit : last }' \
          "$tmp/allreduce.log")
fi
mib=$(python3 -c "print(f'{$(params plain) * 4 / 1048576:.1f}')")
model=(python3 bench/scaling_model.py --name "$arch" --step-ms "$plain_ms" --grad-mib "$mib" --nvlink-gbs "$busbw"
       --measured "$gpus:$dp_ms$([ "$dp_comm" != - ] && echo ":$dp_comm")")
echo "scaling model: ${model[*]}"
"${model[@]}"
