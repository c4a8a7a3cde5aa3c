#!/usr/bin/python3
"""Writes tests/fixtures/local_conv.safetensors, the PyTorch reference that tests/test_local_conv.c compares
bioflex's locally connected layer (src/host/layer_local.c, src/kernels/local_conv_cpu.c) against.

The layer is written here from the specification (../shared/specs/v1-constrained.md 3, the reference's
LocallyConnected2d, after ptrblck's forum recipe), not from bioflex's code, and differentiated by autograd:

    weight (1, O, C, H_out, W_out, k*k) = randn, no bias
    x = F.pad(x, (p, p, p, p))                                  zeros on all four sides
    x = x.unfold(2, k, s).unfold(3, k, s)                       rows, then columns: (N, C, H_out, W_out, k, k)
    x = x.contiguous().view(N, C, H_out, W_out, k*k)            tap a*k + b
    y = (x.unsqueeze(1) * weight).sum([2, -1])                  (N, O, H_out, W_out)

The inputs, weight and dy are float32 draws; the forward and backward run in float64 on exactly those values
(so the stored y, dx and dw are the exact results rounded once to float32), then everything is stored as
float32. Variants (each: input, weight in its 6-D shape, the output gradient dy, then y, dx = d(sum y*dy)/dx
and dw = d(sum y*dy)/dweight):
    a   2 x 3 x 6 x 6 input, 4 outputs, k 3, stride 1, pad 1 (6 x 6 out: the spec's layer in small)
    b   3 x 2 x 7 x 5 input, 3 outputs, k 3, stride 2, pad 0 (3 x 2 out: odd sizes, rows and columns apart)

Rerun (torch 1.13 here):  /usr/bin/python3 bench/make_local_fixture.py [output path]
"""
import sys

import torch
import torch.nn.functional as F

from parity_fixture_util import fixture_path, write_fixture


def locally_connected(x, weight, k, stride, padding):
    n, c = x.shape[:2]
    x = F.pad(x, (padding,) * 4)
    x = x.unfold(2, k, stride).unfold(3, k, stride)
    x = x.contiguous().view(*x.size()[:-2], -1)
    return (x.unsqueeze(1) * weight).sum([2, -1])


def variant(name, gen, n, c_in, c_out, h, w, k, stride, pad):
    h_out, w_out = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    x32 = torch.randn(n, c_in, h, w, generator=gen)
    w32 = torch.randn(1, c_out, c_in, h_out, w_out, k * k, generator=gen)
    dy32 = torch.randn(n, c_out, h_out, w_out, generator=gen)
    x = x32.double().requires_grad_(True)
    weight = w32.double().requires_grad_(True)
    y = locally_connected(x, weight, k, stride, pad)
    assert y.shape == (n, c_out, h_out, w_out), y.shape
    (y * dy32.double()).sum().backward()
    return [(name + ".input", x32), (name + ".weight", w32), (name + ".dy", dy32), (name + ".y", y.float()),
            (name + ".dx", x.grad.float()), (name + ".dw", weight.grad.float())]


def tap_order_check():
    """The tap index is a*k + b (a the row offset): a one-hot weight at tap 1 reads the pixel to the right."""
    x = torch.arange(16.0).view(1, 1, 4, 4)
    weight = torch.zeros(1, 1, 1, 2, 2, 9)
    weight[..., 1] = 1  # a = 0, b = 1
    y = locally_connected(x, weight, 3, 1, 0)
    assert torch.equal(y, x[:, :, 0:2, 1:3]), y


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else fixture_path("local_conv.safetensors")
    tap_order_check()
    gen = torch.Generator().manual_seed(0)
    tensors = variant("a", gen, 2, 3, 4, 6, 6, 3, 1, 1)
    tensors += variant("b", gen, 3, 2, 3, 7, 5, 3, 2, 0)
    d = dict(tensors)
    write_fixture(path, tensors, {"torch_version": torch.__version__, "generator": "bench/make_local_fixture.py"},
                  ["a: y %s, |y| max %.3g" % (list(d["a.y"].shape), float(d["a.y"].abs().max())),
                   "b: y %s, |y| max %.3g" % (list(d["b.y"].shape), float(d["b.y"].abs().max()))])


if __name__ == "__main__":
    main()
