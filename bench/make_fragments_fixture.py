#!/usr/bin/python3
"""Writes tests/fixtures/fragments.safetensors, the PyTorch reference that tests/test_fragments.c compares
bioflex's Net Fragments model (src/host/fragments.c, fragments_hebbian.c) against.

The model is written here from the specification (../shared/specs/netfragments.md 1.2, 2, 3.1-3.4, 7),
not from bioflex's code, in float32 as the reference:

    S1       F.conv2d(img, kernels, padding=2), then 1[a > 0] (threshold) or max(a, 0) ('None')
    S2 step  x = 1[concat(f, z) > 0.5];  s = F.conv2d(x, W.view(40, 44, 11, 11), padding=5)
             t = 0: M = first-index argmax over each group's 10 alternatives of (3m - n_W - n_X) / 5324
             s^ = where(s < lam, s, lam - 0.5 (s - lam));  s^ = s^ * M;  r = s^ / (1e-10 + max over the group)
             z = 1[r ** gamma_t >= theta]
    Hebbian  y = torch.median over the T states (the lower median);  P = F.unfold(concat(f, y), 11, padding=5)
             x~ = clip(P, 0, 1);  pos = Y x~^T;  negA = rowsum(Y) - Y 1[P != 0]^T;  negB = colsum(x~) - pos
             u = relu((pos - negA - negB) / 1024);  u = (u - min u) / (max u - min u + 1e-10)
             W = clip(W + 0.2 u, 0, 1)

Variants:
    thr  the net-fragments config (threshold S1, theta 0.5, gamma 1.2 ... 2.2, T 6, lambda 1.3 * 11):
         one training epoch replayed as spec 7a (Python random seeded 1, 4 validation draws, then 300
         training lines, each random() then randint(2, 30)), from the initial W. Every sample's image
         (its lit pixels), the nonzero count and sum of W after its update; the samples in RECORD in
         full: S1 (its ones), every z (its ones), r (its nonzeros) and W after the update (sparse).
    noisy  evaluation without learning (spec 5.2) on noisy S1: spec 5.1's evaluation lines, S1 with
         feature noise p = 0.01, 0.05, 0.2 (spec 1.5: the first int(p * 4096) of torch.randperm(4096)
         under a generator seeded 1000 * line + level, each set to 1 - value), then T = 6 steps of S2 from
         z = 0, for the NOISY_SETS: W after thr's epoch (stored as thr.s299.w) at theta 0.5, gamma
         1.2 ... 2.2, and, with --converged, the converged W (stored as noisy.wc) at that setting and at
         theta 0.3, gamma 0.6 ... 1.6. Stored per (set, level, line): the noisy S1 (its ones), every z
         (its ones) and, for the runs in NOISY_R, r (its nonzeros).
    v5   the larger S1 kernels with the 'None' (real-valued) activation, S2 at a fixed theta 0.5 (v5's
         Bernoulli S2 is random), gamma 1.0 ... 2.0: 3 samples in full with S1 dense.

Rerun (torch 1.13 here):
    /usr/bin/python3 bench/make_fragments_fixture.py [--converged CKPT] [output path]
CKPT: a safetensors with model.s2.W_lateral [40, 5324, 1, 1], the converged weights (spec 7a: 2529
nonzero, sum 848.45, the reference's net-fragments.ckpt). The committed fixture used bioflex's
  bioflex-train --set run.epochs=48 configs/fragments/net_fragments.ini   (checkpoints/epoch_0048)
which spec 7a's replay says equals the reference checkpoint. Without it only the epoch-1 set is written.
"""
import random
import sys

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from parity_fixture_util import fixture_path, write_fixture

SMALL = [[[0, -1, 0, -1, 0], [0, -1, 2, -1, 0], [0, -1, 2, -1, 0], [0, -1, 2, -1, 0], [0, -1, 0, -1, 0]],
         [[0, 0, -1, -1, 0], [0, -1, 0, 2, -1], [-1, 0, 2, 0, -1], [-1, 2, 0, -1, 0], [0, -1, -1, 0, 0]],
         [[0, 0, 0, 0, 0], [-1, -1, -1, -1, -1], [0, 2, 2, 2, 0], [-1, -1, -1, -1, -1], [0, 0, 0, 0, 0]],
         [[0, -1, -1, 0, 0], [-1, 2, 0, -1, 0], [-1, 0, 2, 0, -1], [0, -1, 0, 2, -1], [0, 0, -1, -1, 0]]]
n = -0.5
LARGE = [[[n, n, 0, n, n], [0, n, 1, n, 0], [n, n, 2, n, n], [0, n, 1, n, 0], [n, n, 0, n, n]],
         [[n, 0, n, n, 0], [0, n, n, 1, n], [n, n, 2, n, n], [n, 1, n, n, 0], [0, n, n, 0, n]],
         [[n, 0, n, 0, n], [n, n, n, n, n], [0, 1, 2, 1, 0], [n, n, n, n, n], [n, 0, n, 0, n]],
         [[0, n, n, 0, n], [n, 1, n, n, 0], [n, n, 2, n, n], [0, n, n, 1, n], [n, 0, n, n, 0]]]
RECORD = (0, 1, 2, 5, 150, 299)
NOISE = (0.01, 0.05, 0.2)
NOISY_LINES = ((0, 14, 29, 43, 58), (0, 14, 29, 43, 58), (0, 29, 58))  # per noise level
GAMMA_A, GAMMA_B = [1.2, 1.4, 1.6, 1.8, 2.0, 2.2], [0.6, 0.8, 1.0, 1.2, 1.4, 1.6]
NOISY_SETS = (("epoch1", 0.5, GAMMA_A), ("converged", 0.5, GAMMA_A), ("converged", 0.3, GAMMA_B))
NOISY_R = ((1, 0, 0), (1, 1, 0), (0, 1, 29))  # (set, level, line)


def random_line():
    """Spec 1.2: one random() then one randint(2, 30)."""
    if random.random() < 0.5:
        y1 = random.randint(2, 30)
        return (2, y1), (30, 32 - y1)
    x1 = random.randint(2, 30)
    return (x1, 2), (32 - x1, 30)


def eval_line(i):
    """Spec 5.1: line i of 59, p1 from (2, 16) i steps counter-clockwise along the perimeter of [2, 30]^2
    (down the left edge, right along the bottom, up the right edge), p2 = (32, 32) - p1."""
    x, y = 2, 16
    for _ in range(i):
        if x == 2 and y < 30:
            y += 1
        elif y == 30 and x < 30:
            x += 1
        else:
            y -= 1
    return (x, y), (32 - x, 32 - y)


def line_image(line):
    img = Image.new("L", (32, 32), color=0)
    ImageDraw.Draw(img).line(line, fill=255, width=1)
    return (torch.tensor(list(img.getdata()), dtype=torch.float32) / 255).view(1, 1, 32, 32)


def s1_features(img, larger, activation):
    k = torch.tensor(LARGE if larger else SMALL, dtype=torch.float32).view(4, 1, 5, 5)
    if not larger:
        k = k / 6
    a = F.conv2d(img, k, padding=2)
    return torch.where(a > 0, 1.0, 0.0) if activation == "threshold" else torch.where(a > 0, a, 0.0)


def initial_weights():
    w = torch.zeros(40, 44, 11, 11)
    for o in range(40):
        w[o, o // 10, 5, 5] = 1
        w[o, 4 + o, 5, 5] = 1
    return w


def forward(w, f, T, theta, gammas, lam, stats):
    """T steps of S2 from z = 0: the states and the normalised supports."""
    z, zs, rs, mask = torch.zeros(1, 40, 32, 32), [], [], None
    wb = (w.view(40, 5324) > 0).float()
    for t in range(T):
        x = torch.where(torch.cat([f, z], dim=1) > 0.5, 1.0, 0.0)
        s = F.conv2d(x, w, padding=5)
        if t == 0:
            p = F.unfold(x, 11, padding=5)[0]
            m = wb @ p
            score = (3 * m - wb.sum(1, keepdim=True) - p.sum(0, keepdim=True)) / 5324
            best = torch.argmax(score.view(4, 10, 1024), dim=1)
            mask = (torch.arange(10).view(1, 10, 1) == best.view(4, 1, 1024)).view(1, 40, 32, 32)
        sh = torch.where(s < lam, s, lam - 0.5 * (s - lam))
        stats["inhibited"] += int(((s >= lam) & mask).sum())
        sh = (sh * mask).view(1, 4, 10, 32, 32)
        gmax = sh.view(1, 4, -1).max(dim=2)[0]
        r = (sh / (1e-10 + gmax.view(1, 4, 1, 1, 1))).view(1, 40, 32, 32)
        z = (r ** gammas[t] >= theta).float()
        zs.append(z)
        rs.append(r)
    return torch.cat(zs), torch.cat(rs)


def hebbian(w, f, zs, lr=0.2):
    y = torch.median(zs, dim=0)[0].view(1, 40, 32, 32)
    p = F.unfold(torch.cat([f, y], dim=1), 11, padding=5)[0]
    xt = torch.clip(p, 0, 1)
    yv = y.view(40, 1024)
    pos = yv @ xt.T
    neg_a = yv.sum(1, keepdim=True) - yv @ (p != 0).float().T
    neg_b = xt.sum(1).view(1, -1) - pos
    u = (pos - neg_a - neg_b) / 1024
    u = torch.where(u > 0, u, 0.0)
    u = (u - u.min()) / (u.max() - u.min() + 1e-10)
    return torch.clip(w + lr * u.view(w.shape), 0.0, 1.0)


def ones(t):
    return torch.nonzero(t.flatten()).flatten().to(torch.int32)


def sparse(prefix, t):
    idx = ones(t)
    return [(prefix + "_idx", idx), (prefix + "_val", t.flatten()[idx.long()].clone())]


def run_thr(tensors, summary, converged=None):
    theta, gammas, lam, T = 0.5, [1.2, 1.4, 1.6, 1.8, 2.0, 2.2], 1.3 * 11, 6
    random.seed(1)
    for _ in range(4):
        random_line()
    w, stats = initial_weights(), {"inhibited": 0}
    pixels, starts, nnz, wsum, order_flips = [], [0], [], [], 0
    for i in range(300):
        img = line_image(random_line())
        f = s1_features(img, False, "threshold")
        exact = F.conv2d(img.double(), torch.tensor(SMALL, dtype=torch.float64).view(4, 1, 5, 5), padding=2) > 0
        order_flips += int((exact != (f > 0)).sum())
        zs, rs = forward(w, f, T, theta, gammas, lam, stats)
        w = hebbian(w, f, zs)
        lit = ones(img)
        pixels.append(lit)
        starts.append(starts[-1] + len(lit))
        nnz.append(int((w != 0).sum()))
        wsum.append(float(w.double().sum()))
        if i in RECORD:
            k = "thr.s%d." % i
            tensors += [(k + "s1", ones(f)), (k + "z", ones(zs))] + sparse(k + "r", rs) + sparse(k + "w", w)
    run_noisy(dict(epoch1=w, **({"converged": converged} if converged is not None else {})), tensors, summary)
    tensors += [("thr.pixels", torch.cat(pixels)), ("thr.pixel_start", torch.tensor(starts, dtype=torch.int32)),
                ("thr.nnz", torch.tensor(nnz, dtype=torch.int32)), ("thr.wsum", torch.tensor(wsum, dtype=torch.float32))]
    summary += ["thr: after 300 samples %d nonzero weights, sum %.2f (spec 7a: 1612, 332.64)" % (nnz[-1], wsum[-1]),
                "thr: %d inhibited (s >= lambda) selected cells; S1 float32 vs exact sign differences: %d"
                % (stats["inhibited"], order_flips)]


def load_converged(path):
    import json
    import struct
    with open(path, "rb") as fh:
        blob = fh.read()
    n = struct.unpack("<Q", blob[:8])[0]
    entry = json.loads(blob[8:8 + n])["model.s2.W_lateral"]
    a, b = entry["data_offsets"]
    assert entry["dtype"] == "F32"
    return torch.frombuffer(bytearray(blob[8 + n + a:8 + n + b]), dtype=torch.float32).view(40, 44, 11, 11).clone()


def run_noisy(weights, tensors, summary):
    lam, T, counts = 1.3 * 11, 6, []
    for si, (which, theta, gammas) in enumerate(NOISY_SETS):
        if which not in weights:
            continue
        w = weights[which]
        for li, p in enumerate(NOISE):
            flips = int(p * 4096)
            for i in NOISY_LINES[li]:
                f = s1_features(line_image(eval_line(i)), False, "threshold").flatten()
                g = torch.Generator().manual_seed(1000 * i + li)
                idx = torch.randperm(4096, generator=g)[:flips]
                f[idx] = 1 - f[idx]
                f = f.view(1, 4, 32, 32)
                zs, rs = forward(w, f, T, theta, gammas, lam, {"inhibited": 0})
                k = "noisy.%d.%d.%d." % (si, li, i)
                tensors += [(k + "s1", ones(f)), (k + "z", ones(zs))]
                if (si, li, i) in NOISY_R:
                    tensors += sparse(k + "r", rs)
                counts.append(int(zs[-1].sum()))
    if "converged" in weights:
        w = weights["converged"]
        tensors += sparse("noisy.wc", w)
        summary += ["noisy: converged W %d nonzero, sum %.2f (spec 7a: 2529, 848.45)" % (int((w != 0).sum()), float(w.double().sum()))]
    summary += ["noisy: %d runs, final-step states on: %s" % (len(counts), counts)]


def run_v5(tensors, summary):
    theta, gammas, lam, T = 0.5, [1.0, 1.2, 1.4, 1.6, 1.8, 2.0], 1.3 * 11, 6
    lines = [((2, 9), (30, 23)), ((12, 2), (20, 30)), ((2, 9), (30, 23))]
    w, stats = initial_weights(), {"inhibited": 0}
    for i, line in enumerate(lines):
        img = line_image(line)
        f = s1_features(img, True, "None")
        zs, rs = forward(w, f, T, theta, gammas, lam, stats)
        w = hebbian(w, f, zs)
        k = "v5.s%d." % i
        tensors += [(k + "image", img.view(32, 32)), (k + "s1", f.view(4, 32, 32)), (k + "z", ones(zs))]
        tensors += sparse(k + "w", w)
    summary += ["v5: %d nonzero weights, sum %.4f after %d samples" % (int((w != 0).sum()), float(w.double().sum()), len(lines))]


def main():
    args, converged = sys.argv[1:], None
    if args[:1] == ["--converged"]:
        converged, args = load_converged(args[1]), args[2:]
    path = args[0] if args else fixture_path("fragments.safetensors")
    torch.set_num_threads(2)
    tensors, summary = [], []
    run_thr(tensors, summary, converged)
    run_v5(tensors, summary)
    write_fixture(path, tensors, {"torch_version": torch.__version__, "generator": "bench/make_fragments_fixture.py",
                                  "record": ",".join(map(str, RECORD)),
                                  "noisy_lines": ",".join(str(i) for i in sorted(set(sum(NOISY_LINES, ())))),
                                  "noisy_sets": ";".join("%s %g %s" % (w, th, ",".join(map(str, g))) for w, th, g in NOISY_SETS)}, summary)


if __name__ == "__main__":
    main()
