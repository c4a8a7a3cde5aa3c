#!/usr/bin/python3
"""Writes tests/fixtures/dog.safetensors, the PyTorch reference that tests/test_dog.c compares
bioflex's center-surround layer (src/host/layer_v1.c, src/kernels/dog_cpu.c) against.

The layer is written here from the specification (../shared/specs/v1-constrained.md 2.1-2.3, the
reference's DoGConv2DLayer), not from bioflex's code, and differentiated by autograd:

    kernel_dists[a, b] = (a - k)^2 + (b - k)^2               (K = 2k + 1 taps a side)
    s1 = clamp(sigma1, min=0.1),  r = clamp(sigma2_scale, min=1 + 1e-4),  s2 = s1 r
    E = amp(s1) exp(-d / s1),  I = amp(s2) exp(-d / clamp(s2, min=1e-6))
        amp(s) = s / pi (the code as it runs) or 1 / (pi s) (the paper's Gaussian, variant amp_paper)
    R = total_scale (E - I);  W = F.normalize(R, dim=0)       (each tap over all D*D kernels)
    y = cat(conv2d(x[:, :D], W.view(D, D, K, K), padding=k), x[:, D:])

Computed in float64 and stored as float32 (see variant()).

Variants (each: input, sigma1, sigma2_scale, total_scale, dy; then y, dx and the three gradients):
    small      D = 3 of 6 channels, k = 1 (3x3), 2 x 6 x 6 x 5, the reference's init, one sigma1 and
               two sigma2_scale below their clamps
    amp_paper  the same with amplitude 1 / (pi s)
    v1         D = 16 of 64 channels, k = 2 (5x5), 1 x 64 x 6 x 6: the V1 ResNet-50's layer

Rerun (torch 1.13 here):  /usr/bin/python3 bench/make_dog_fixture.py [output path]
"""
import math
import sys

import torch
import torch.nn.functional as F

from parity_fixture_util import fixture_path, write_fixture


def dog_layer(x, d_channels, k, sigma1, sigma2_scale, total_scale, amp_paper):
    taps = torch.arange(2 * k + 1).float()
    dists = ((taps[:, None] - k) ** 2 + (taps[None, :] - k) ** 2)[None]
    s1 = torch.clamp(sigma1, min=0.1)
    s2 = s1 * torch.clamp(sigma2_scale, min=1 + 1e-4)
    amp = (lambda s: 1 / (math.pi * s)) if amp_paper else (lambda s: s / math.pi)
    e = amp(s1) * torch.exp(-dists / s1)
    i = amp(s2) * torch.exp(-dists / torch.clamp(s2, min=1e-6))
    w = F.normalize(total_scale * (e - i), dim=0).view(d_channels, d_channels, 2 * k + 1, 2 * k + 1)
    return torch.cat([F.conv2d(x[:, :d_channels], w, padding=k), x[:, d_channels:]], dim=1)


def variant(name, gen, shape, d_channels, k, amp_paper, clamp_some):
    p = d_channels * d_channels
    sigma1 = torch.rand(p, 1, 1, generator=gen) + k / 2
    sigma2_scale = torch.rand(p, 1, 1, generator=gen) + k / 2
    total_scale = torch.randn(p, 1, 1, generator=gen) * 2
    if clamp_some:
        sigma1[2], sigma2_scale[4], sigma2_scale[7] = 0.05, 0.8, 1.00001
    params = [t.requires_grad_(True) for t in (sigma1, sigma2_scale, total_scale)]
    x = torch.randn(shape, generator=gen).requires_grad_(True)
    dy = torch.randn(shape, generator=gen)
    # in float64, stored as float32: the reference's float32 loses up to 1e-3 of R where s2 is near s1 (r at its
    # clamp, 1 + 1e-4, makes E - I a difference of nearly equal numbers); bioflex computes the kernels in double
    y = dog_layer(x.double(), d_channels, k, *[t.double() for t in params], amp_paper)
    (y * dy.double()).sum().backward()
    y = y.float()
    return [(name + ".input", x), (name + ".sigma1", sigma1), (name + ".sigma2_scale", sigma2_scale),
            (name + ".total_scale", total_scale), (name + ".dy", dy), (name + ".y", y), (name + ".dx", x.grad),
            (name + ".dsigma1", sigma1.grad), (name + ".dsigma2_scale", sigma2_scale.grad),
            (name + ".dtotal_scale", total_scale.grad)]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else fixture_path("dog.safetensors")
    gen = torch.Generator().manual_seed(0)
    tensors = variant("small", gen, (2, 6, 6, 5), 3, 1, False, True)
    tensors += variant("amp_paper", gen, (2, 6, 6, 5), 3, 1, True, True)
    tensors += variant("v1", gen, (1, 64, 6, 6), 16, 2, False, False)
    write_fixture(path, tensors, {"torch_version": torch.__version__, "generator": "bench/make_dog_fixture.py"})


if __name__ == "__main__":
    main()
