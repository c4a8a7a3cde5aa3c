#!/usr/bin/env bash
# Smoke test of bench/dp_overhead.sh on the CPU backend (its runs and its parsing; the figures are
# not judged): one rank against the plain run, then 2 MPI ranks with a given bus bandwidth, on a
# tiny CNN. Checks that each mode prints its lines and that the 2-rank run's comm_exposed_ms, read
# from metrics.jsonl, is a number > 0.
#   dp_overhead_smoke.sh SOURCE_DIR BUILD_DIR MPIEXEC
set -u
src=$1; build=$2
export MPIRUN="$3 --allow-run-as-root --oversubscribe" OMP_WAIT_POLICY=passive
small=(--device cpu --arch cnn --batch 8 --size 8 --classes 3 --steps 6 --interval 2 --loader-threads 1 --build "$build")
failed=0
check() { # check NAME OUTPUT PATTERN
  if grep -qE -- "$3" <<<"$2"; then return; fi
  failed=1; echo "FAIL $1: output should match /$3/:"; echo "$2" | tail -n 12
}
one=$(bash "$src/bench/dp_overhead.sh" "${small[@]}" 2>&1) || { failed=1; echo "FAIL one-rank mode exited $?"; }
check "plain line" "$one" "^plain +ms/step +[0-9.]+"
check "one-rank line" "$one" "^mpirun -np 1 +ms/step +[0-9.]+ .*comm_exposed_ms -$"
check "overhead line" "$one" "^overhead [-+][0-9.]+ % of the plain step \(target <= 2 %\)"
two=$(bash "$src/bench/dp_overhead.sh" "${small[@]}" --gpus 2 --busbw 1 2>&1) || { failed=1; echo "FAIL 2-rank mode exited $?"; }
check "2-rank line" "$two" "^2 ranks, data-parallel ms/step +[0-9.]+ .*comm_exposed_ms [0-9]*\.[0-9]*[1-9][0-9]*$"
check "efficiency" "$two" "^measured scaling efficiency \(weak, batch 8 per rank\): [0-9.]+ %"
check "scaling model command" "$two" "^scaling model: python3 bench/scaling_model.py --name cnn --step-ms [0-9.]+ --grad-mib [0-9.]+ --nvlink-gbs 1 --measured 2:[0-9.]+:[0-9.]+$"
check "scaling model output" "$two" "^measured at 2 GPUs: step [0-9.]+ ms, efficiency [0-9.]+%, exposed [0-9.]+ ms"
[ $failed -eq 0 ] && echo "dp_overhead.sh smoke: both modes ok"
exit $failed
