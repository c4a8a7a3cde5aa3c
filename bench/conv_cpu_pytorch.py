#!/usr/bin/env python3
"""PyTorch's CPU convolutions (oneDNN through mkldnn_convolution) on bench_conv_cpu_lab's shapes:
ms per call of forward, backward data and backward filter (each from torch.autograd.grad alone),
to set beside bench_conv_cpu_lab's figures measured in the same minutes.
    python3 bench/conv_cpu_pytorch.py [batch 64] [threads 0 = PyTorch's default] [seconds 0.3]"""
import sys
import time

import torch

SHAPES = [  # name, c_in, c_out, size, k, stride, pad: bench/conv_cpu_lab.c's
    ("vgg11 conv1", 3, 64, 32, 3, 1, 1), ("vgg11 conv2", 64, 128, 16, 3, 1, 1),
    ("vgg11 conv3", 128, 256, 8, 3, 1, 1), ("vgg11 conv4", 256, 256, 8, 3, 1, 1),
    ("vgg11 conv5", 256, 512, 4, 3, 1, 1), ("vgg11 conv6", 512, 512, 4, 3, 1, 1),
    ("vgg11 conv7/8", 512, 512, 2, 3, 1, 1), ("2x2/2 downsampling", 64, 64, 32, 2, 2, 0),
    ("1x1 bottleneck", 256, 64, 8, 1, 1, 0), ("7x7/2 stem @64", 3, 64, 64, 7, 2, 3),
]


def per_call_ms(fn, seconds):
    fn()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        reps += 1
    return (time.perf_counter() - t0) / reps * 1e3


def main():
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    try:
        batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
        threads = int(sys.argv[2]) if len(sys.argv) > 2 else 0
        seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.3
        if batch < 1 or threads < 0 or not seconds > 0 or len(sys.argv) > 4:
            raise ValueError
    except ValueError:
        print("usage: conv_cpu_pytorch.py [batch >= 1 (64)] [threads >= 0 (0: PyTorch's default)] [seconds > 0 (0.3)]",
              file=sys.stderr)
        sys.exit(2)
    if threads:
        torch.set_num_threads(threads)
    print(f"PyTorch {torch.__version__} CPU convolutions, batch {batch}, {torch.get_num_threads()} threads: ms per call")
    totals = [0.0, 0.0, 0.0]
    for name, c_in, c_out, size, k, stride, pad in SHAPES:
        conv = torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False)
        x = torch.randn(batch, c_in, size, size, requires_grad=True)
        with torch.no_grad():
            y = conv(x)
        dy = torch.randn_like(y)
        y = conv(x)  # a graph for the backward passes, kept
        fwd = per_call_ms(lambda: conv(x), seconds)
        bwd_data = per_call_ms(lambda: torch.autograd.grad(y, x, dy, retain_graph=True), seconds)
        bwd_filter = per_call_ms(lambda: torch.autograd.grad(y, conv.weight, dy, retain_graph=True), seconds)
        flop = 2.0 * y.numel() * c_in * k * k
        ms = (fwd, bwd_data, bwd_filter)
        totals = [a + b for a, b in zip(totals, ms)]
        print(f"{name:20s} {c_in:3d}->{c_out:3d} @{size:3d} k{k}/{stride}:" +
              "".join(f"  {label} {t:6.2f} ({flop / t / 1e6:5.1f} GFLOP/s)"
                      for label, t in zip(("fwd", "bwd data", "bwd filter"), ms)))
    print("total ms:  forward %.1f  backward data %.1f  backward filter %.1f" % tuple(totals))


if __name__ == "__main__":
    main()
