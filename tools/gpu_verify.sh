#!/usr/bin/env bash
# The GPU checks of the open issues in one call, for a session that is lent a GPU machine
# (the device has no inih, cJSON or TurboJPEG, and maybe no libjpeg headers: run
# `bash ../shared/tools/gpu-deps.sh libjpeg62-turbo libjpeg62-turbo-dev` here first and carry
# `.deps`). Builds with CUDA, runs the `gpu` tests, then the benchmarks and kernel labs,
# and writes every log under $OUT (or ./gpu_verify_out): build.log, ctest_gpu.log, one log per
# benchmark, and summary.txt with the exit status of each step. A failing step does not stop the
# ones after it.
#   bash tools/gpu_verify.sh [tests|quick|targets|full]
#     tests:   build, then the `gpu` tests (every CUDA op against the CPU, the parity steps, NCCL)
#     quick:   tests, the kernel labs at one batch size and a short dp_overhead
#     targets: build (incremental), then the issues' target benchmarks, most important first
#     full:    tests, then targets (the default)
# With little device time (15 minutes a session), run `tests` first, then `targets` in a second call
# at once (the machine and its build/ stay warm only briefly); summary.txt grows step by step, so a
# run cut off by its time limit still reports what finished.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu_verify_out}
mkdir -p "$out"
mode=${1:-full}
deps=$PWD/.deps/usr
if [ -d "$deps" ]; then
  export LD_LIBRARY_PATH=$deps/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  prefix=(-DCMAKE_PREFIX_PATH="$deps")
else
  prefix=()
fi
jobs=$(nproc)
summary=$out/summary.txt
: >"$summary"

step() { # step NAME TIMEOUT_S COMMAND...: runs it with a time limit, logs to $out/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  printf '%-28s rc=%-3d %4ds\n' "$name" "$rc" $((SECONDS - t0)) | tee -a "$summary"
  return 0
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
step build 420 bash -c "cmake -S . -B build -DBIOFLEX_CUDA=ON -DCMAKE_BUILD_TYPE=Release ${prefix[*]} && cmake --build build -j $jobs"
if [ "$mode" != targets ]; then
  step ctest_gpu 300 ctest --test-dir build -L gpu --output-on-failure
fi
if [ "$mode" = quick ]; then
  step flex_lab 120 ./build/bench/bench_flex_lab --batch 32 --repeats 20
  step lif_lab 120 ./build/bench/bench_lif_lab --batch 256 --repeats 20
  step dp_overhead 300 bash bench/dp_overhead.sh --steps 20 --interval 5
elif [ "$mode" = targets ] || [ "$mode" = full ]; then
  step vgg16_side_by_side 400 bash bench/vgg16_side_by_side.sh 128 224                    # issue 2
  step flexnet_side_by_side 600 bash bench/flexnet_side_by_side.sh --batch 128 --size 224 # issue 3
  step spiking_side_by_side 300 bash bench/spiking_side_by_side.sh --batch 256 --time-steps "4 8" # issue 4
  step butd_step 120 ./build/bench/bench_butd_step cuda 500                               # issue 5
  step butd_step_pytorch 120 python3 bench/butd_step_pytorch.py cuda 500
  step dp_overhead 480 bash bench/dp_overhead.sh --arch vgg16 --batch 128 --size 224 --steps 40 # issue 7
  step data_wait 420 bash bench/data_wait.sh --build build                               # issue 6
  step flex_lab 240 ./build/bench/bench_flex_lab                                         # issue 3
  step lif_lab 240 ./build/bench/bench_lif_lab                                           # issue 4
  step allreduce_nccl 120 ./build/bench/bench_allreduce --gpus "$(nvidia-smi -L | wc -l)"
  ngpu=$(nvidia-smi -L | wc -l)
  if [ "$ngpu" -gt 1 ]; then step dp_scaling 600 bash bench/dp_overhead.sh --gpus "$ngpu"; fi
elif [ "$mode" != tests ]; then
  echo "unknown mode $mode (tests, quick, targets, full)" | tee -a "$summary"
fi
cat "$summary"
