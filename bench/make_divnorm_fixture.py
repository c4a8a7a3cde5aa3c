#!/usr/bin/python3
"""Writes tests/fixtures/divnorm.safetensors, the PyTorch reference that tests/test_divnorm.c compares
bioflex's tuned divisive normalisation (src/host/layer_v1.c, src/kernels/divnorm_cpu.c) against.

The layer is written here from the specification (../shared/specs/v1-constrained.md 4.1, the
reference's OpponentChannelInhibition), not from bioflex's code, and differentiated by autograd:

    base[m] = |m - n // 2|,  D[r, j] = base[(j - r) mod n]     (row r is base rolled by r)
    s = clamp(sigmas, min=0.5)
    g[r, j] = exp(-D[r, j]^2 / (2 s_j^2)) / (2.5066 s_j)
    W = g / g.sum(dim=0)                                        (each column sums to 1)
    y = x / (conv2d(x, W[:, :, None, None]) + 1)

Variants (each: input, sigmas, the output gradient dy, then y, dx = d(sum y*dy)/dx and dsigmas):
    c8     n = 8 channels, 2 x 8 x 3 x 5 post-ReLU input, widths U(0.3, 2.5) (two below the clamp)
    c256   n = 256, 1 x 256 x 2 x 2, the reference's initial widths U(0, 1) + 256/8

Rerun (torch 1.13 here):  /usr/bin/python3 bench/make_divnorm_fixture.py [output path]
"""
import sys

import torch
import torch.nn.functional as F

from parity_fixture_util import fixture_path, write_fixture


def channel_distances(n):
    base = (torch.arange(n) - n // 2).abs().float()
    return torch.stack([torch.roll(base, r) for r in range(n)])


def tuned_divnorm(x, sigmas):
    n = x.shape[1]
    d = channel_distances(n)
    s = torch.clamp(sigmas, min=0.5)
    g = torch.exp(-d ** 2 / (2 * s[None, :] ** 2)) / (2.5066 * s[None, :])
    w = g / g.sum(dim=0, keepdim=True)
    return x / (F.conv2d(x, w[:, :, None, None]) + 1)


def variant(name, gen, shape, sigmas):
    x = torch.relu(torch.randn(shape, generator=gen)).requires_grad_(True)
    sigmas = sigmas.clone().requires_grad_(True)
    dy = torch.randn(shape, generator=gen)
    y = tuned_divnorm(x, sigmas)
    (y * dy).sum().backward()
    return [(name + ".input", x), (name + ".sigmas", sigmas), (name + ".dy", dy), (name + ".y", y),
            (name + ".dx", x.grad), (name + ".dsigmas", sigmas.grad)]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else fixture_path("divnorm.safetensors")
    gen = torch.Generator().manual_seed(0)
    # roll check: the diagonal is n/2, the channel opposite 0 (spec 4.1)
    d = channel_distances(8)
    assert d[3, 3] == 4 and d[3, 7] == 0 and torch.equal(d, d.T)
    small = torch.rand(8, generator=gen) * 2.2 + 0.3
    small[1], small[6] = 0.3, 0.45  # clamped: no gradient
    tensors = variant("c8", gen, (2, 8, 3, 5), small)
    tensors += variant("c256", gen, (1, 256, 2, 2), torch.rand(256, generator=gen) + 256 / 8)
    write_fixture(path, tensors, {"torch_version": torch.__version__, "generator": "bench/make_divnorm_fixture.py"},
                  ["c8 dsigmas: " + " ".join("%.3g" % v for v in dict(tensors)["c8.dsigmas"].tolist())])


if __name__ == "__main__":
    main()
