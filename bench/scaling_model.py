#!/usr/bin/env python3
"""scaling_model.py - predicted data-parallel efficiency at 2..64 GPUs from measured figures.

Model (per training step, weak scaling: the per-GPU batch stays fixed):
  t_step   measured step time on one GPU (ms), e.g. from `bioflex-train` metrics.jsonl ms_per_step
           or bench_train_throughput;
  t_comm   ring all-reduce of the gradient: 2 (N-1)/N * bytes / busbw, where busbw is the bus
           bandwidth bench_allreduce (or nccl-tests) measured: NVLink inside a node, the network
           (InfiniBand/RoCE) once N spans nodes;
  overlap  buckets are all-reduced while the backward pass still runs: communication can hide
           behind the backward (about 2/3 of the step) except the last bucket, which is launched
           after the first layer's backward and is always exposed;
  exposed  = max(t_comm - overlap_fraction * t_backward, t_last_bucket);
  efficiency(N) = t_step / (t_step + exposed).

Usage: scaling_model.py --step-ms 180 --grad-mib 528 [--nvlink-gbs 350] [--net-gbs 40]
                        [--gpus-per-node 8] [--overlap 0.9] [--bucket-mib 25]
                        [--measured N:STEP_MS[:EXPOSED_MS]]...
--measured adds what a run on N GPUs measured (bench/dp_overhead.sh --gpus N prints the line): its
step time gives the measured weak-scaling efficiency t_step / STEP_MS, and its comm_exposed_ms from
metrics.jsonl the exposed time, both beside the model's prediction at N.
Without arguments it prints the reference cases of issue 7 (VGG-16-BN and ResNet-50, batch 128
per GPU on H100/H200-class GPUs): VGG-16-BN with the step times one H200 measured, ResNet-50 with a
placeholder step time. The last column is the least bus bandwidth at which the model predicts 90 %
efficiency at that GPU count: what a measured busbw has to beat.
"""
import argparse


def exposed_ms(n, grad_bytes, busbw_gbs, t_backward_ms, overlap, bucket_bytes):
    if n <= 1:
        return 0.0
    ring = 2.0 * (n - 1) / n
    t_comm = ring * grad_bytes / (busbw_gbs * 1e9) * 1e3
    t_last = ring * min(bucket_bytes, grad_bytes) / (busbw_gbs * 1e9) * 1e3
    return max(t_comm - overlap * t_backward_ms, t_last)


def busbw_needed(n, grad_bytes, step_ms, overlap, bucket_bytes, efficiency=0.9):
    """The least bus bandwidth (GB/s) at which the model predicts `efficiency` at n GPUs: exposed
    time may be step * (1/efficiency - 1); exposed = max(t_comm - overlap * t_backward, t_last),
    both terms inversely proportional to the bandwidth."""
    if n <= 1:
        return 0.0
    allowed = step_ms * (1.0 / efficiency - 1.0)
    ring = 2.0 * (n - 1) / n
    comm_ms_at_1gbs = ring * grad_bytes / 1e9 * 1e3  # t_comm at 1 GB/s
    last_ms_at_1gbs = ring * min(bucket_bytes, grad_bytes) / 1e9 * 1e3
    return max(comm_ms_at_1gbs / (allowed + overlap * step_ms * 2.0 / 3.0), last_ms_at_1gbs / allowed)


def table(name, step_ms, grad_mib, nvlink_gbs, net_gbs, gpus_per_node, overlap, bucket_mib):
    grad = grad_mib * 1048576.0
    bucket = bucket_mib * 1048576.0
    t_bwd = step_ms * 2.0 / 3.0
    print(f"{name}: step {step_ms:.1f} ms on 1 GPU, gradient {grad_mib:.1f} MiB, NVLink busbw {nvlink_gbs} GB/s, "
          f"network busbw {net_gbs} GB/s, {gpus_per_node} GPUs/node, overlap {overlap}")
    print(f"{'GPUs':>6} {'busbw':>8} {'t_comm ms':>10} {'exposed ms':>11} {'efficiency':>11} {'busbw for 90%':>14}")
    for n in (1, 2, 4, 8, 16, 32, 64):
        bw = nvlink_gbs if n <= gpus_per_node else net_gbs
        t_comm = 2.0 * (n - 1) / n * grad / (bw * 1e9) * 1e3 if n > 1 else 0.0
        e = exposed_ms(n, grad, bw, t_bwd, overlap, bucket)
        need = busbw_needed(n, grad, step_ms, overlap, bucket)
        print(f"{n:>6} {bw:>8.0f} {t_comm:>10.2f} {e:>11.2f} {100 * step_ms / (step_ms + e):>10.1f}% {need:>9.1f} GB/s")
    print()


def measured(spec, step_ms, grad_mib, nvlink_gbs, net_gbs, gpus_per_node, overlap, bucket_mib):
    """One --measured N:STEP_MS[:EXPOSED_MS] beside the model's figures at N GPUs."""
    parts = spec.split(":")
    n, t = int(parts[0]), float(parts[1])
    bw = nvlink_gbs if n <= gpus_per_node else net_gbs
    e = exposed_ms(n, grad_mib * 1048576.0, bw, step_ms * 2.0 / 3.0, overlap, bucket_mib * 1048576.0)
    line = f"measured at {n} GPUs: step {t:.1f} ms, efficiency {100 * step_ms / t:.1f}%"
    if len(parts) > 2:
        line += f", exposed {float(parts[2]):.2f} ms"
    print(line + f"  (model: exposed {e:.2f} ms, efficiency {100 * step_ms / (step_ms + e):.1f}%)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="model")
    p.add_argument("--step-ms", type=float)
    p.add_argument("--grad-mib", type=float)
    p.add_argument("--nvlink-gbs", type=float, default=350.0)
    p.add_argument("--net-gbs", type=float, default=40.0)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--overlap", type=float, default=0.9)
    p.add_argument("--bucket-mib", type=float, default=25.0)
    p.add_argument("--measured", action="append", default=[], metavar="N:STEP_MS[:EXPOSED_MS]",
                   help="step time (and comm_exposed_ms) a run on N GPUs measured, per-GPU batch as for --step-ms")
    a = p.parse_args()
    if a.step_ms and a.grad_mib:
        table(a.name, a.step_ms, a.grad_mib, a.nvlink_gbs, a.net_gbs, a.gpus_per_node, a.overlap, a.bucket_mib)
        for spec in a.measured:
            measured(spec, a.step_ms, a.grad_mib, a.nvlink_gbs, a.net_gbs, a.gpus_per_node, a.overlap, a.bucket_mib)
        return
    # Gradient sizes from the model zoo (bench_allreduce prints them). VGG-16-BN's step times were
    # measured on one H200 at batch 128 (README "Measured results": 237.4 ms fp32 in
    # bench/dp_overhead.sh, 128 / 1,173 images/s = 109.1 ms TF32); ResNet-50's is a placeholder.
    table("vgg16_bn fp32 (H200, measured step)", 237.4, 527.8, a.nvlink_gbs, a.net_gbs, a.gpus_per_node, a.overlap,
          a.bucket_mib)
    table("vgg16_bn tf32 (H200, measured step)", 109.1, 527.8, a.nvlink_gbs, a.net_gbs, a.gpus_per_node, a.overlap,
          a.bucket_mib)
    table("resnet50 (placeholder step time)", 250.0, 97.5, a.nvlink_gbs, a.net_gbs, a.gpus_per_node, a.overlap,
          a.bucket_mib)


if __name__ == "__main__":
    main()
