#!/usr/bin/env bash
# Spiking VGG-11 training throughput and peak memory, bioflex vs PyTorch eager, in one run on the
# same GPU (issue 4): PlasticFlex's VGG-11 (learned 2x2/2 downsampling convs, fc1-fc2-fc3 of width
# 1024) on 32x32 inputs with LIF neurons over T steps (direct encoding, decay 0.95, threshold 1,
# hard reset, backprop through time, tanh' surrogate of height 0.3: bioflex's [spiking] keys passed
# explicitly, and bench/pytorch_train.py --spiking T looping its neurons over T the plain way).
# For each T it prints both result lines (images/s; peak GiB: device memory during the timed steps,
# reset after the warm-up on both sides) and the ratios against the targets:
#   bioflex / PyTorch images/s   >= 3    (target at T = 4)
#   bioflex / PyTorch peak GiB   <= 0.5  (target at T = 8)
# It checks that both networks have the same parameter count. The figures are printed, never
# asserted: the exit status is 0 whether or not a target is met. Build first (tools/build.sh).
#
#   bash bench/spiking_side_by_side.sh [options]
# Every option also has an environment variable (in brackets); the option wins.
#   --device cuda|cpu       [DEVICE=cuda]
#   --batch B               [BATCH=256]
#   --size S                [SIZE=32]
#   --classes K             [CLASSES=10]
#   --steps N               [STEPS=50]        timed steps
#   --warmup N              [WARMUP=5]        untimed steps first (cuDNN's algorithm search)
#   --time-steps "T..."     [TIME_STEPS="4 8"]
#   --precision fp32|tf32   [PRECISION=tf32]
#   --build DIR             [BUILD=build]     bioflex build directory (bench/bench_train_throughput)
#   --python PY             [PYTHON=python3]  interpreter with torch
#   --workspace-mib N       [WORKSPACE_MIB=]  bioflex's [run] conv_workspace_mib (default: the config's,
#                                             8192): a smaller limit trades speed for peak memory
#   --bioflex-only          [BIOFLEX_ONLY=0]  skip PyTorch (e.g. a second memory figure at another limit)
#   --set SECTION.KEY=VALUE                   passed to bioflex's runs (repeatable), e.g. run.conv_api=graph
# Example, CPU, tiny: bash bench/spiking_side_by_side.sh --device cpu --batch 4 --steps 2 --warmup 1 --time-steps "2 4"
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

device=${DEVICE:-cuda} batch=${BATCH:-256} size=${SIZE:-32} classes=${CLASSES:-10} steps=${STEPS:-50}
warmup=${WARMUP:-5} time_steps=${TIME_STEPS:-4 8} precision=${PRECISION:-tf32} build=${BUILD:-build}
python=${PYTHON:-python3} workspace_mib=${WORKSPACE_MIB:-} bioflex_only=${BIOFLEX_ONLY:-0}
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage ;;
    --bioflex-only) bioflex_only=1; shift; continue ;;
    --device|--batch|--size|--classes|--steps|--warmup|--time-steps|--precision|--build|--python|--workspace-mib|--set)
      [ $# -ge 2 ] || { echo "spiking_side_by_side.sh: $1 needs a value" >&2; exit 2; } ;;
    *) echo "spiking_side_by_side.sh: unknown argument '$1' (--help lists the options)" >&2; exit 2 ;;
  esac
  case $1 in
    --device) device=$2 ;; --batch) batch=$2 ;; --size) size=$2 ;; --classes) classes=$2 ;; --steps) steps=$2 ;;
    --warmup) warmup=$2 ;; --time-steps) time_steps=$2 ;; --precision) precision=$2 ;; --build) build=$2 ;;
    --python) python=$2 ;; --workspace-mib) workspace_mib=$2 ;; --set) extra+=(--set "$2") ;;
  esac
  shift 2
done
bench=$build/bench/bench_train_throughput
[ -x "$bench" ] || { echo "spiking_side_by_side.sh: $bench not found: build first (tools/build.sh, or --build DIR)" >&2; exit 1; }

common=(--device "$device" --batch "$batch" --size "$size" --classes "$classes" --steps "$steps" --warmup "$warmup"
        --precision "$precision" --arch plasticflex_vgg11)
# bench/pytorch_train.py's LIF: bioflex's defaults, spelled out so that a change of default shows
neuron=(--set spiking.neuron=lif --set spiking.encoding=direct --set spiking.decay=0.95 --set spiking.threshold=1.0
        --set spiking.reset=hard --set spiking.detach_reset=false --set spiking.use_stbp=true
        --set spiking.surrogate=tanh --set spiking.height=0.3)
[ -z "$workspace_mib" ] || neuron+=(--set run.conv_workspace_mib="$workspace_mib")
neuron+=("${extra[@]}")

ips() { sed -E 's/.*: ([0-9.]+) images\/s.*/\1/' <<<"$1"; }
peak() { if [[ $1 =~ peak\ ([0-9.]+)\ GiB ]]; then echo "${BASH_REMATCH[1]}"; else echo n/a; fi; }
params() { sed -E 's/.* ([0-9]+) params.*/\1/' <<<"$1"; }
# ratio A B OP TARGET NOTE: "R (target OP TARGET: met|NOT met)", or n/a when a figure is missing
ratio() {
  if [ "$1" = n/a ] || [ "$2" = n/a ]; then echo "n/a (no device memory count on $device)"; return; fi
  awk -v a="$1" -v b="$2" -v op="$3" -v t="$4" -v note="$5" 'BEGIN {
    r = a / b; ok = (op == ">=") ? (r >= t) : (r <= t);
    printf "%.2fx (target %s %s%s: %s)\n", r, op, t, note, ok ? "met" : "NOT met" }'
}

echo "Spiking VGG-11 side by side: $device, $precision, batch $batch, ${size}x${size}, $classes classes, $warmup warm-up + $steps timed steps${workspace_mib:+, bioflex cuDNN workspace limit $workspace_mib MiB}${extra[*]:+, bioflex with ${extra[*]}}"
[ "$device" = cuda ] || echo "(on the CPU the figures only show that the scripts run: the targets are GPU ones, and peak memory is counted on CUDA only)"
for T in $time_steps; do
  ours=$("$bench" "${common[@]}" "${neuron[@]}" --set spiking.time_steps="$T" --label "plasticflex_vgg11[lif,T=$T]")
  echo "$ours"
  [ "$bioflex_only" = 1 ] && continue
  theirs=$("$python" bench/pytorch_train.py "${common[@]}" --spiking "$T")
  echo "$theirs"
  if [ "$(params "$ours")" != "$(params "$theirs")" ]; then
    echo "WARNING: parameter counts differ (bioflex $(params "$ours"), PyTorch $(params "$theirs")): not the same network"
  fi
  echo "T=$T: bioflex / PyTorch images/s = $(ratio "$(ips "$ours")" "$(ips "$theirs")" ">=" 3 " at T = 4")"
  echo "T=$T: bioflex / PyTorch peak GiB = $(ratio "$(peak "$ours")" "$(peak "$theirs")" "<=" 0.5 " at T = 8")"
done
