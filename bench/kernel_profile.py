#!/usr/bin/env python3
"""Where a training step's GPU time goes: sums the kernel durations of an Nsight Compute CSV
(ncu --csv --metrics gpu__time_duration.sum, as bench/kernel_profile.sh runs it) by kernel and by
family, per step.

    python3 bench/kernel_profile.py FILE.csv --steps N [--top 25]

Families: cuDNN/cuBLAS (convolutions and GEMMs: names with gemm, conv, xmma, cudnn, cutlass, wgrad,
dgrad, fprop, implicit, winograd, fft), bioflex (our kernels, k_*), PyTorch (at::native), other.
"""
import argparse
import csv
import re
import sys
from collections import defaultdict

LIBRARY = re.compile(r"gemm|conv|xmma|cudnn|cutlass|wgrad|dgrad|fprop|implicit|winograd|fft|cublas", re.I)


def short_name(name):
    """The kernel's name without its parameter list, return type and namespaces."""
    name = name.replace("(anonymous namespace)::", "")
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the parameter list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0:
            cut = i
            break
    name = name[:cut]
    name = re.sub(r"^void ", "", name)
    return name[:110]


def family(name):
    if LIBRARY.search(name):
        return "cuDNN/cuBLAS (conv, GEMM)"
    if name.startswith("k_") or "::k_" in name:
        return "bioflex kernels"
    if "at::native" in name or "at::" in name:
        return "PyTorch kernels"
    return "other"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv")
    p.add_argument("--steps", type=int, required=True, help="profiled training steps (the sums are per step)")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    with open(a.csv, newline="") as f:
        rows = [line for line in f if line.startswith('"')]  # ncu's own ==PROF== lines are not CSV
    if not rows:
        sys.exit(f"{a.csv}: no CSV rows (did ncu profile any kernel?)")
    per_kernel = defaultdict(lambda: [0.0, 0])
    for r in csv.DictReader(rows):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}.get(unit, 1e-6)
        k = per_kernel[short_name(r["Kernel Name"])]
        k[0] += value * scale
        k[1] += 1
    total = sum(v[0] for v in per_kernel.values())
    fam = defaultdict(float)
    for name, (ms, _) in per_kernel.items():
        fam[family(name)] += ms
    print(f"{a.csv}: {total / a.steps:.2f} ms of kernels per step ({sum(v[1] for v in per_kernel.values()) // a.steps} launches)")
    for name, ms in sorted(fam.items(), key=lambda kv: -kv[1]):
        print(f"  {name:30s} {ms / a.steps:9.2f} ms/step {100 * ms / total:5.1f}%")
    print(f"  top {a.top} kernels:")
    for name, (ms, calls) in sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:a.top]:
        print(f"  {ms / a.steps:9.3f} ms/step {100 * ms / total:5.1f}% {calls // a.steps:4d}x  {name}")


if __name__ == "__main__":
    main()
