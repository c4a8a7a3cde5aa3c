#!/usr/bin/env python3
"""Pillow side of bench/jpeg_throughput.c: decode + RandomResizedCrop(224) + flip + float CHW.

    python3 bench/jpeg_pillow.py DIR [seconds_per_run] [size]

DIR is the same imagefolder tree. Each image is opened with Pillow, converted to RGB, cropped with
torchvision's RandomResizedCrop parameters (10 attempts, then the central fallback), resized with
Image.BILINEAR (antialiased, what torchvision's PIL path does), flipped with probability 1/2 and
turned into a float32 CHW array in [0, 1] - the work a torchvision DataLoader worker does. Runs
one process, then one per core (multiprocessing), and prints images/s (wall) and images per
CPU-second (meaningful on a shared machine) like the C benchmark.
torchvision is not needed; numpy is used when present."""
import math
import multiprocessing as mp
import os
import random
import sys
import time

from PIL import Image

try:
    import numpy as np
except ImportError:  # Pillow-only: the conversion to floats is then skipped
    np = None


def rrc_params(w, h, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def load(path, rng, size):
    with Image.open(path) as im:
        im = im.convert("RGB")
        x, y, cw, ch = rrc_params(im.width, im.height, rng)
        im = im.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        if np is not None:
            return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return im.tobytes()


def worker(args):
    files, seconds, size, seed = args
    rng = random.Random(seed)
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - t0 < seconds:
        load(files[n % len(files)], rng, size)
        n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


def main():
    usage = "usage: jpeg_pillow.py DIR [seconds_per_run (5)] [size (224)]"
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    if not 2 <= len(sys.argv) <= 4:
        print(usage, file=sys.stderr)
        sys.exit(2)
    root = os.path.join(sys.argv[1], "train")
    try:
        seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
        size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
        if not seconds > 0 or size < 1:
            raise ValueError
    except ValueError:
        print(usage, file=sys.stderr)
        sys.exit(2)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                   if f.lower().endswith((".jpg", ".jpeg")) and not f.startswith("zz_"))
    if not files:
        print(f"jpeg_pillow.py: no .jpg/.jpeg files under {root} (DIR is an imagefolder tree: DIR/train/<class>/)",
              file=sys.stderr)
        sys.exit(1)
    print(f"{sys.argv[1]}: {len(files)} training files, Pillow {Image.__version__} RandomResizedCrop({size}) + flip, "
          f"{seconds:.0f} s per run")
    n, dt, cpu = worker((files, seconds, size, 1))
    print(f"1 process:   {n / dt:8.1f} images/s wall, {n / cpu:8.1f} images per CPU-second")
    cores = os.cpu_count() or 1
    if cores > 1:
        with mp.Pool(cores) as pool:
            t0 = time.perf_counter()
            results = pool.map(worker, [(files[i::cores], seconds, size, i + 1) for i in range(cores)])
            dt = time.perf_counter() - t0
        total, cpu = sum(r[0] for r in results), sum(r[2] for r in results)
        print(f"{cores} processes: {total / dt:8.1f} images/s wall = {total / dt / cores:.1f} per core, "
              f"{total / cpu:8.1f} images per CPU-second")


if __name__ == "__main__":
    main()
