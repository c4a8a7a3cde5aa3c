#!/usr/bin/python3
"""Writes tests/fixtures/cirincione.safetensors, the PyTorch reference that tests/test_cirincione.c
compares bioflex's Cirincione divisive normalisation (src/host/layer_cirincione.c,
src/kernels/cirincione_cpu.c) against.

The layer is written here from the specification (../shared/specs/v1-constrained.md 4.2, the
reference's DivisiveNormalizationCirincione(C, 3)), not from bioflex's code, and differentiated by
autograd:

    X[i, j] = j + 1,  Y[i, j] = i + 1                        (1-based tap coordinates, K = 3)
    x' = X cos(theta) + Y sin(theta),  y' = -X sin(theta) + Y cos(theta)
    q = (x' - v)^2 / clamp(rho^2, min=0.1) + (y' - w)^2 / clamp(sigma^2, min=0.1)
    G = |A / clamp(2 pi rho sigma, min=0.1)| exp(-q / 2)     ([C, C, 3, 3])
    y = x / (conv2d(x, G, padding=1) + |bias|)

Computed in float64 and stored as float32 (the C side computes G in double and the rest in float).

Variants (each: input, A, rho, sigma, theta, v, w, bias, dy; then y, dx and the seven gradients
dA, drho, dsigma, dtheta, dv, dw, dbias), inputs 2 x C x 5 x 6, post-ReLU (relu of N(0, 1)):
    c4   C = 4, the reference's init, then a theta spread over the quadrants (0, pi/2, pi, 3 pi/2
         and between), centres v, w spread (one far off the taps, one negative), A = 0 exactly
         (abs'(0) = 0: no gradient), A = 1e-4 and A < 0; one rho whose square is under the 0.1
         clamp, one sigma too, a pair with 2 pi rho sigma under its 0.1 clamp (both squares
         clamped), and a negative rho (2 pi rho sigma clamped, rho^2 not)
    c7   C = 7, the reference's init with a few of the same spreads and a negative bias (sgn -1)

Rerun (torch 1.13 here):  /usr/bin/python3 bench/make_cirincione_fixture.py [output path]
"""
import math
import sys

import torch
import torch.nn.functional as F

from parity_fixture_util import fixture_path, write_fixture

K = 3


def cirincione(x, A, rho, sigma, theta, v, w, bias):
    taps = torch.arange(1, K + 1, dtype=x.dtype)
    X = taps.repeat(K, 1)                 # X[i, j] = j + 1
    Y = taps.view(-1, 1).repeat(1, K)     # Y[i, j] = i + 1
    xr = X * torch.cos(theta) + Y * torch.sin(theta)
    yr = -X * torch.sin(theta) + Y * torch.cos(theta)
    q = (xr - v) ** 2 / torch.clamp(rho ** 2, min=0.1) + (yr - w) ** 2 / torch.clamp(sigma ** 2, min=0.1)
    g = torch.abs(A / torch.clamp(2 * math.pi * rho * sigma, min=0.1)) * torch.exp(-0.5 * q)
    return x / (F.conv2d(x, g, padding=K // 2) + torch.abs(bias))


def reference_init(gen, c):
    shape = (c, c, 1, 1)
    return dict(A=torch.rand(shape, generator=gen), rho=torch.rand(shape, generator=gen) + 1.0,
                sigma=torch.rand(shape, generator=gen) + 1.0, theta=torch.rand(shape, generator=gen) * 2 * math.pi,
                v=torch.randn(shape, generator=gen) + K // 2, w=torch.randn(shape, generator=gen) + K // 2,
                bias=torch.rand(1, generator=gen) + 1.0)


def variant(name, gen, c, edits):
    p = reference_init(gen, c)
    flat = {k: t.view(-1) for k, t in p.items()}
    for key, index, value in edits:
        flat[key][index] = value
    names = ["A", "rho", "sigma", "theta", "v", "w", "bias"]
    params = [p[k].requires_grad_(True) for k in names]
    shape = (2, c, 5, 6)
    x = torch.relu(torch.randn(shape, generator=gen)).requires_grad_(True)
    dy = torch.randn(shape, generator=gen)
    y = cirincione(x.double(), *[t.double() for t in params])
    (y * dy.double()).sum().backward()
    out = [(name + ".input", x)] + [(name + "." + k, t) for k, t in zip(names, params)]
    out += [(name + ".dy", dy), (name + ".y", y.float()), (name + ".dx", x.grad)]
    return out + [(name + ".d" + k, t.grad) for k, t in zip(names, params)]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else fixture_path("cirincione.safetensors")
    gen = torch.Generator().manual_seed(0)
    pi = math.pi
    c4 = [("theta", 0, 0.0), ("theta", 1, pi / 2), ("theta", 2, pi), ("theta", 3, 1.5 * pi), ("theta", 4, 0.3),
          ("theta", 5, 2.2), ("theta", 6, 4.0), ("theta", 7, 5.9),
          ("v", 3, 3.5), ("w", 3, -0.8), ("v", 9, -1.2), ("w", 10, 2.9), ("v", 11, 2.0), ("w", 11, 2.0),
          ("A", 5, 0.0), ("A", 6, 1e-4), ("A", 7, -0.7),
          ("rho", 8, 0.2), ("sigma", 9, 0.28),            # rho^2 = 0.04, sigma^2 = 0.0784: clamped at 0.1
          ("rho", 12, 0.1), ("sigma", 12, 0.12),          # 2 pi rho sigma = 0.075 and both squares: clamped
          ("rho", 13, -1.2)]                              # 2 pi rho sigma < 0: clamped; rho^2 = 1.44 not
    c7 = [("theta", 0, pi), ("v", 1, 3.0), ("w", 2, -1.0), ("A", 3, 0.0), ("rho", 4, 0.25), ("sigma", 5, 0.2),
          ("bias", 0, -1.3)]
    tensors = variant("c4", gen, 4, c4) + variant("c7", gen, 7, c7)
    write_fixture(path, tensors, {"torch_version": torch.__version__, "generator": "bench/make_cirincione_fixture.py"})


if __name__ == "__main__":
    main()
