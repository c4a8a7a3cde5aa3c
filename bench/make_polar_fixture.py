#!/usr/bin/python3
"""Writes tests/fixtures/polar_transform.safetensors, the PyTorch reference that tests/test_polar_map.c
compares bioflex's polar operator (src/host/polar_map.c) against: the V1-constrained ResNet-50's
cortical magnification (spec /work/shared/specs/v1-constrained.md section 5), rebuilt here as the
reference's PolarTransform builds and runs it:

  * pixel polar coordinates of the 32x32 map from integer tensors (torch's float32 sqrt and atan2,
    2*pi added where y < 0), radius edges 0..11 + 12,13,14,16,18,20,23 and angle edges
    numpy.linspace(0, 2*pi, 31) as the builders pass them (numpy scalars; torch compares in float32);
  * 540 half-open (ring, wedge) masks; for each ring with lower edge <= 16 its non-empty masks
    resampled to 30 by F.interpolate(mode='linear', align_corners=False); counts = mask sums, zeros
    replaced by 1; masks and counts cast to float16 (the reference's buffers);
  * forward: sum(x * mask) / count -> (N, C, 18, 30), F.pad(mode='reflect') of the angle axis by 1
    (the repo's PolarTransform) or of both axes (Brain-Score's LPP_v49), then torchvision's
    Resize((16, 16), BILINEAR, antialias=False or True) on the tensor.

The file holds
  mask.index (K, 2) I32   [mask, pixel] of every nonzero mask entry (mask = ring * 30 + wedge,
                          pixel = row * 32 + col), in order;   mask.value (K) F32: its fp16 value
  counts (540) F32        the fp16 counts
  input (2, 3, 32, 32)    torch.rand, seed 0
  out.angle, out.angle_aa, out.both, out.both_aa, out.circular, out.circular_aa (2, 3, 16, 16):
                          the forward with the angle axis reflect-padded, both axes, or the angle axis
                          wrapped around, without or with antialias
  grad.dy (2, 1, 16, 16)  torch.randn, seed 1: an upstream gradient of the forward of input[:, :1]
                          (channel 0 of both samples: every operator column, two GEMM rows)
  grad.angle, ..., grad.circular_aa (2, 1, 32, 32): autograd's gradient of sum(forward * grad.dy) with
                          respect to input[:, :1], per variant: the resize's, the padding's and the mask
                          sum's backward as PyTorch runs them

The summary printed also gives each variant's largest difference of the float32 forward and gradient
from the same computation in float64 (the fp16 masks and counts taken exactly): the rounding that the
C test's tolerances cover.

Rerun (torch 1.13 here; torchvision 0.14 when installed, else the F.interpolate call its Resize makes of a
float tensor, which writes the same bytes):  /usr/bin/python3 bench/make_polar_fixture.py [output directory]
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

try:
    from torchvision import transforms
except ImportError:  # torchvision 0.14's Resize of a float tensor is this very F.interpolate call
    transforms = None

from parity_fixture_util import fixture_path, write_fixture

SIZE, OUT = 32, 16
RADIUS_EDGES = list(np.arange(0, 12)) + [12, 13, 14, 16, 18, 20, 23]
ANGLE_EDGES = list(np.linspace(0, 2 * np.pi, SIZE + 1 - 2))
RINGS, WEDGES = len(RADIUS_EDGES) - 1, len(ANGLE_EDGES) - 1


def pooling_masks():
    """(540, 1024) float32 masks after the wedge interpolation, and their (540) counts."""
    col = torch.arange(SIZE).repeat(SIZE, 1) - SIZE // 2
    row_up = SIZE // 2 - torch.arange(SIZE).unsqueeze(-1).repeat(1, SIZE)
    rho = torch.sqrt(col ** 2 + row_up ** 2)
    phi = torch.atan2(row_up, col)
    phi[row_up < 0] += 2 * torch.pi
    masks = []
    for lo, hi in zip(RADIUS_EDGES, RADIUS_EDGES[1:]):
        in_ring = (rho >= lo) & (rho < hi)
        for a0, a1 in zip(ANGLE_EDGES, ANGLE_EDGES[1:]):
            masks.append((in_ring & (phi >= a0) & (phi < a1)).to(torch.float32).flatten())
    masks = torch.stack(masks)
    for ring in range(RINGS):
        if RADIUS_EDGES[ring] > SIZE // 2:  # the rings outside the inscribed circle stay as binned
            continue
        block = masks[ring * WEDGES:(ring + 1) * WEDGES]
        nonempty = block[block.sum(dim=1) > 0]  # (M, 1024), in wedge order
        resampled = F.interpolate(nonempty.t().unsqueeze(0), size=WEDGES, mode="linear", align_corners=False)
        masks[ring * WEDGES:(ring + 1) * WEDGES] = resampled[0].t()
    counts = masks.sum(dim=1)
    counts[counts == 0] = 1
    return masks, counts


def forward(x, masks16, counts16, padding, antialias):
    """padding: "angle" (the repository's), "both" (Brain-Score's LPP_v49) or "circular" (the wedges
    wrapped around, which neither copy of the reference does: bioflex's polar_padding = circular)."""
    n, c = x.shape[:2]
    pooled = torch.sum(x.reshape(n, c, 1, SIZE * SIZE) * masks16, dim=-1) / counts16  # float32
    pooled = pooled.view(n, c, RINGS, WEDGES)
    if padding == "both":
        pooled = F.pad(pooled, (0, 0, 1, 1), mode="reflect")
    pooled = F.pad(pooled, (1, 1, 0, 0), mode="circular" if padding == "circular" else "reflect")
    if transforms is None:
        return F.interpolate(pooled, size=[OUT, OUT], mode="bilinear", align_corners=False, antialias=antialias)
    resize = transforms.Resize((OUT, OUT), interpolation=transforms.InterpolationMode.BILINEAR, antialias=antialias)
    return resize(pooled)


def input_gradient(x, dy, masks, counts, padding, antialias):
    """autograd's d sum(forward(x) * dy) / dx, and the forward."""
    x = x.detach().clone().requires_grad_(True)
    out = forward(x, masks, counts, padding, antialias)
    out.backward(dy)
    return x.grad.detach().clone(), out.detach()


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(fixture_path("x"))
    masks, counts = pooling_masks()
    masks16, counts16 = masks.half(), counts.half()
    torch.manual_seed(0)
    x = torch.rand(2, 3, SIZE, SIZE)
    nonzero = masks16.float().nonzero()
    tensors = [("mask.index", nonzero.to(torch.int32)),
               ("mask.value", masks16.float()[nonzero[:, 0], nonzero[:, 1]]),
               ("counts", counts16.float()), ("input", x)]
    variants = [("angle", "angle", False), ("angle_aa", "angle", True), ("both", "both", False),
                ("both_aa", "both", True), ("circular", "circular", False), ("circular_aa", "circular", True)]
    for name, padding, antialias in variants:
        tensors.append(("out." + name, forward(x, masks16, counts16, padding, antialias)))
    torch.manual_seed(1)
    dy = torch.randn(2, 1, OUT, OUT)
    tensors.append(("grad.dy", dy))
    rows = []
    for name, padding, antialias in variants:
        dx, out = input_gradient(x[:, :1], dy, masks16, counts16, padding, antialias)
        dx64, out64 = input_gradient(x[:, :1].double(), dy.double(), masks16.double(), counts16.double(), padding,
                                     antialias)
        tensors.append(("grad." + name, dx))
        rows.append("%-11s float32 vs float64: forward %.3g (max %.3g), gradient %.3g (max %.3g)" % (
            name, (out.double() - out64).abs().max(), out64.abs().max(), (dx.double() - dx64).abs().max(),
            dx64.abs().max()))
    metadata = {"torch_version": torch.__version__, "generator": "bench/make_polar_fixture.py",
                "description": "the V1-constrained ResNet-50's polar transform: fp16 masks, counts, 6 forwards "
                               "and their input gradients"}
    for ring in range(RINGS):
        block, cnt = masks[ring * WEDGES:(ring + 1) * WEDGES], counts[ring * WEDGES:(ring + 1) * WEDGES]
        rows.append("ring [%g,%g): count min/max %.4g/%.4g, sum %.4g, %d empty" % (
            RADIUS_EDGES[ring], RADIUS_EDGES[ring + 1], cnt.min(), cnt.max(), block.sum(),
            int((block.sum(dim=1) == 0).sum())))
    rows.append("%d nonzero entries, total weight %.6g" % (len(nonzero), float(masks.sum())))
    write_fixture(os.path.join(folder, "polar_transform.safetensors"), tensors, metadata, rows)


if __name__ == "__main__":
    main()
