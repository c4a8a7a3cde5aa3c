#!/usr/bin/env python3
"""PyTorch eager reference for bench/train_throughput.c: the same model (torchvision-layout
VGG-6/11/16-BN with the FlexNet classifier, ResNet-18/50, or PlasticFlex's VGGs), the same
synthetic batch and the same step (forward, cross-entropy, backward, SGD with momentum), timed the
same way (warm-up steps, then --steps steps with one synchronisation at the end).

    python3 bench/pytorch_train.py --arch vgg16 --batch 128 --size 224 --classes 100 --precision fp32
    python3 bench/pytorch_train.py --arch vgg16 --flex --precision tf32            # FlexNet VGG-16
    python3 bench/pytorch_train.py --spiking 4 --batch 256 --size 32 --classes 10  # spiking VGG-11

--flex: every conv of the VGG is FlexNet's Flex2D with the CHANNELWISE_MAXPOOL joint
(../shared/specs/flexnet.md 1.2-1.4, as bench/make_flex_parity_fixture.py writes it and as
bioflex's `[model] flex = true` with its defaults channelwise_max / expand / split):
    C = flex_conv(x)  (3x3 pad 1, bias);  P = max_pool2d(x, 3, 1, 1);
    P~ = P (c_out = c_in), P.repeat_interleave(c_out / c_in) (divisible), else channel j <- P channel j % c_in;
    y = torch.maximum(C, P~)  (ties split the gradient), then the VGG's BN and ReLU.

--spiking T: the network (default arch plasticflex_vgg11, PlasticFlex's VGG-11 with learned 2x2/2
downsampling convs, plasticflex.md section 4) with every activation a LIF neuron looped over the T
steps the plain way, as bench/make_spiking_parity_fixture.py does (its Spike autograd function
with the surrogate gradient; autograd does the BPTT), with bioflex's [spiking] defaults: direct
encoding (the image repeated T times, time outermost: [T*N, ...]), decay 0.95, threshold 1, hard
reset not detached, tanh surrogate of height 0.3; BN over all T*N samples; the logits are the mean
over T of the last layer's output.

The V1-constrained ResNet-50 (../shared/specs/v1-constrained.md; --arch resnet50 only; bioflex's
[model] keys of the same names, for bench_train_throughput --arch resnet50 --set model.center_surround=true
--set model.local_rf=true --set model.divisive_norm=tuned --set model.cortical_magnification=true):
    /usr/bin/python3 bench/pytorch_train.py --device cpu --arch resnet50 --size 64 --classes 100 --batch 16 \
        --steps 3 --warmup 1 --threads 2 --center-surround --local-rf --divisive-norm tuned --cortical-magnification
--center-surround: the DoG layer (spec 2, DoGConv2DLayer on the first 16 of 64 channels, 256 5x5 kernels
    regenerated from sigma1, sigma2_scale, total_scale at every forward, each tap L2-normalised over the
    256); with another V1 flag after the 3x3 conv2 of layer1 blocks 0 and 1 (the composites' ConvDog,
    kaiming-normal conv), alone in all three blocks (resnet50_center_surround, the conv at nn.Conv2d's
    default init). --dog-amplitude code (default: s/pi, the reference's operator precedence) or paper
    (1/(pi s)), bioflex's dog_amplitude.
--local-rf: layer1 block 2's conv2 the reference's LocallyConnected2d (spec 3, weight [1,64,64,16,16,9]
    ~ N(0,1)) computed the reference's way: unfold and the materialised (N,64,64,16,16,9) product.
    Alone (resnet50_local_rf) after a Dropout2d(0.5): conv2 = Sequential(Dropout2d, LC), as bioflex's
    local_rf_dropout.
--divisive-norm tuned|cirincione: after each layer1 block (after its add and ReLU) the reference's
    OpponentChannelInhibition (spec 4.1) or DivisiveNormalizationCirincione(256, 3) (4.2).
--cortical-magnification: the stem's max-pool replaced by the reference's PolarTransform (spec 5: 540
    float16 pooling masks over the stem's 32x32 maps, (N,C,540,1024) product in sub-batches of 32,
    reflect-padded angles, resized to 16x16 without antialias: bioflex's defaults polar_padding = angle,
    polar_antialias = false); needs --size 64 (or 63).
With --local-rf, --divisive-norm or --cortical-magnification the layout is the reference's ResNetComposite
(module names = its state_dict names, spec 10). The math is bench/make_{dog,local,divnorm,cirincione,polar}_fixture.py's (imported); the DoG, tuned and
Cirincione forwards are restated with their constant tensors stored in the module (the reference's frozen
nn.Parameters / buffers, so they live on the model's device) and checked against the fixture functions
before the run (v1_self_check). The trainable parameter count (what bioflex counts) and the frozen
nn.Parameters (DoG tap distances and zero bias, tuned-norm channel distances; the spec's section 6 table
counts them) go to stderr at the start; the result line's "params" is the trainable count. Composite a at
1000 classes: 34,959,656 trainable, 35,156,346 with the frozen (spec 6).

Memory (CUDA): torch.cuda.max_memory_allocated, reset after the warm-up steps, so "peak" is the
most allocated during the timed steps; "with warm-up" is the most since the start (it includes
cuDNN's benchmark search). bench_train_throughput reports its backend's memory the same two ways.
On the CPU: "peak n/a".
"""
import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VGG = {
    "vgg6": [64, 64, "M", 128, 128, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
# PlasticFlex VGGs (plasticflex.md section 4): c3(c) = 3x3 pad 1 conv, BN, activation; ("d", c) =
# a learned 2x2 stride-2 conv with no BN and no activation; classifier dense width D.
PF_VGG = {
    "plasticflex_vgg6": ([64, 64, ("d", 64), 128, 128, ("d", 128)], 256),
    "plasticflex_vgg11": ([64, ("d", 64), 128, ("d", 128), 256, 256, ("d", 256), 512, 512, ("d", 512),
                           512, 512, ("d", 512)], 1024),
    "plasticflex_vgg16": ([64, 64, ("d", 64), 128, 128, ("d", 128), 256, 256, 256, ("d", 256),
                           512, 512, 512, ("d", 512), 512, 512, 512, ("d", 512)], 4096),
}
# bioflex's [spiking] defaults (README "Configuration reference"); the side-by-side scripts pass the
# same values to bench_train_throughput explicitly.
LIF = dict(kind="lif", decay=0.95, threshold=1.0, reset="hard", detach_reset=False, surrogate="tanh",
           alpha=4.0, width=2.0, height=0.3)


class Flex2D(nn.Module):
    """FlexNet's Flex2D with the channel-wise max joint (flexnet.md 1.2-1.4; the construction of
    bench/make_flex_parity_fixture.py, "max" joint with the "expand" channel rule)."""

    def __init__(self, c_in, c_out, k=3, s=1, p=1):
        super().__init__()
        self.c_in, self.c_out, self.k, self.s, self.p = c_in, c_out, k, s, p
        self.flex_conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=True)
        # the tiling rule's channel map (j % c_in), only where c_out is not a multiple of c_in
        self.register_buffer("tile_index", torch.arange(c_out) % c_in if c_out % c_in else None,
                             persistent=False)

    def widen(self, pooled):
        if self.c_out == self.c_in:
            return pooled
        if self.c_out % self.c_in == 0:
            return pooled.repeat_interleave(self.c_out // self.c_in, dim=1)
        return pooled.index_select(1, self.tile_index)

    def forward(self, x):
        conv = self.flex_conv(x)
        pooled = F.max_pool2d(x, self.k, self.s, self.p)
        return torch.maximum(conv, self.widen(pooled))


class Spike(torch.autograd.Function):
    """S = 1[u >= 0], u = H - threshold; backward grad * g(u) (bench/make_spiking_parity_fixture.py)."""

    @staticmethod
    def forward(ctx, u, p):
        ctx.save_for_backward(u)
        ctx.p = p
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        p = ctx.p
        if p["surrogate"] == "tanh":
            g = p["height"] * (1 - torch.tanh(u) ** 2)
        elif p["surrogate"] == "sigmoid":
            s = torch.sigmoid(p["alpha"] * u)
            g = p["alpha"] * s * (1 - s)
        elif p["surrogate"] == "rectangular":
            g = p["height"] * (u.abs() < p["width"] / 2).to(u.dtype)
        else:
            raise ValueError(p["surrogate"])
        return grad * g, None


class Neuron(nn.Module):
    """LIF/IF over T steps on x [T*N, ...] (time outermost), the plain loop of
    bench/make_spiking_parity_fixture.py without its margin bookkeeping."""

    def __init__(self, T, p):
        super().__init__()
        self.T, self.p = T, p

    def forward(self, x):
        p, T = self.p, self.T
        xs = x.reshape(T, x.shape[0] // T, *x.shape[1:])
        decay = 1.0 if p["kind"] == "if" else p["decay"]
        v = torch.zeros_like(xs[0])
        spikes = []
        for t in range(T):
            h = decay * v + xs[t]
            s = Spike.apply(h - p["threshold"], p)
            sr = s.detach() if p["detach_reset"] else s
            if p["reset"] == "hard":
                v = h * (1 - sr)
            elif p["reset"] == "soft":
                v = h - p["threshold"] * sr
            else:
                v = h
            spikes.append(s)
        return torch.stack(spikes).reshape(x.shape)


def make_act(T):
    return (lambda: nn.ReLU(inplace=True)) if T == 0 else (lambda: Neuron(T, LIF))


def vgg(name, classes, size, flex=False, T=0, dropout=0.5):
    act = make_act(T)
    layers, c, hw = [], 3, size
    for v in VGG[name]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            hw //= 2
        else:
            conv = Flex2D(c, v) if flex else nn.Conv2d(c, v, 3, padding=1)
            layers += [conv, nn.BatchNorm2d(v), act()]
            c = v
    flat = c * hw * hw
    hidden = flat if flat <= 4096 else 4096
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(),
                         nn.Sequential(nn.Linear(flat, hidden), act(), nn.Dropout(dropout),
                                       nn.Linear(hidden, hidden), act(), nn.Dropout(dropout),
                                       nn.Linear(hidden, classes)))


class PlasticFlexVGG(nn.Module):
    """features (c3 / d2) -> flatten -> fc1 act dropout fc2 act dropout fc3, names as bioflex's."""

    def __init__(self, name, classes, size, flex=False, T=0, dropout=0.5):
        super().__init__()
        act = make_act(T)
        spec, dense = PF_VGG[name]
        layers, c, hw = [], 3, size
        for v in spec:
            if isinstance(v, tuple):
                layers.append(Flex2D(c, v[1], 2, 2, 0) if flex else nn.Conv2d(c, v[1], 2, stride=2))
                c, hw = v[1], hw // 2
            else:
                layers += [Flex2D(c, v) if flex else nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), act()]
                c = v
        self.features = nn.Sequential(*layers)
        self.fc1, self.fc1_act, self.fc1_dropout = nn.Linear(c * hw * hw, dense), act(), nn.Dropout(dropout)
        self.fc2, self.fc2_act, self.fc2_dropout = nn.Linear(dense, dense), act(), nn.Dropout(dropout)
        self.fc3 = nn.Linear(dense, classes)

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        x = self.fc1_dropout(self.fc1_act(self.fc1(x)))
        x = self.fc2_dropout(self.fc2_act(self.fc2(x)))
        return self.fc3(x)


class OverTime(nn.Module):
    """Direct encoding over T steps (time outermost) and the mean of the logits over T."""

    def __init__(self, net, T):
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x):
        out = self.net(x.repeat(self.T, 1, 1, 1))
        return out.reshape(self.T, x.shape[0], -1).mean(0)


# --- The V1-constrained ResNet-50 (../shared/specs/v1-constrained.md, --center-surround, --local-rf,
# --divisive-norm, --cortical-magnification). The math of every component is the parity-fixture
# scripts' (bench/make_{dog,local,divnorm,cirincione,polar}_fixture.py, which bioflex's tests compare
# against); they are imported here. Their DoG, tuned and Cirincione functions build their constant
# tensors (tap distances, the channel-distance matrix, tap coordinates) on the CPU at every call, where
# the reference stores them in the module (frozen nn.Parameters or buffers) on the model's device: those
# three forwards are restated below with the stored tensors, and v1_self_check() compares them with the
# fixture functions before a run.

def v1_refs():
    """The fixture modules (they run nothing on import: main() is behind __name__ == "__main__")."""
    import importlib
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)  # they import parity_fixture_util from their folder
    return {n: importlib.import_module("make_%s_fixture" % n) for n in ("dog", "local", "divnorm", "cirincione", "polar")}


class DoGConv2D(nn.Module):
    """The reference's DoGConv2D(c -> c, k) (spec 2.2-2.3, make_dog_fixture.dog_layer): 3 learned
    parameters per (out, in) pair, the (2k+1)^2 kernels regenerated at every forward; amplitude s/pi
    (the reference's operator precedence, "code") or 1/(pi s) ("paper"); each tap L2-normalised over
    all c*c kernels. kernel_dists and the zero bias are frozen nn.Parameters as in the reference
    (the bias is not applied: bias=False), 41 frozen scalars for c = 16, k = 2."""

    def __init__(self, c, k, amp_paper=False):
        super().__init__()
        self.c, self.k, self.amp_paper = c, k, amp_paper
        p = c * c
        self.sigma1 = nn.Parameter(torch.rand(p, 1, 1) + k / 2)
        self.sigma2_scale = nn.Parameter(torch.rand(p, 1, 1) + k / 2)
        self.total_scale = nn.Parameter(torch.randn(p, 1, 1) * 2)
        taps = torch.arange(2 * k + 1).float()
        self.kernel_dists = nn.Parameter((taps[:, None] - k) ** 2 + (taps[None, :] - k) ** 2, requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(c), requires_grad=False)

    def weight(self):
        s1 = torch.clamp(self.sigma1, min=0.1)
        s2 = s1 * torch.clamp(self.sigma2_scale, min=1 + 1e-4)
        amp = (lambda s: 1 / (math.pi * s)) if self.amp_paper else (lambda s: s / math.pi)
        d = self.kernel_dists[None]
        e = amp(s1) * torch.exp(-d / s1)
        i = amp(s2) * torch.exp(-d / torch.clamp(s2, min=1e-6))
        return F.normalize(self.total_scale * (e - i), dim=0).view(self.c, self.c, 2 * self.k + 1, 2 * self.k + 1)

    def forward(self, x):
        return F.conv2d(x, self.weight(), padding=self.k)


class DoGConv2DLayer(nn.Module):
    """DoG on the first d channels, the rest passed through (spec 2.1)."""

    def __init__(self, d, k=2, amp_paper=False):
        super().__init__()
        self.d = d
        self.dog_conv = DoGConv2D(d, k, amp_paper)

    def forward(self, x):
        return torch.cat([self.dog_conv(x[:, :self.d]), x[:, self.d:]], dim=1)


class ConvDog(nn.Module):
    """The composites' conv2 (spec 2.5): 3x3 conv (kaiming-normal fan-out) then DoG on width // 4 channels."""

    def __init__(self, width, amp_paper=False):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.dog = DoGConv2DLayer(width // 4, 2, amp_paper)

    def forward(self, x):
        return self.dog(self.conv(x))


class LocallyConnected2d(nn.Module):
    """The reference's LocallyConnected2d (spec 3; ptrblck's forum recipe): weight (1, O, C, H_out,
    W_out, k*k) ~ N(0, 1), no bias. The forward is make_local_fixture.locally_connected, the reference's
    way: unfold, then the materialised (N, O, C, H_out, W_out, k*k) product and its sum. That is what
    the researchers run today (memory heavy: 37.7 MB per image for the 64x64 model), not a GEMM per
    output position as bioflex does."""

    def __init__(self, c_in, c_out, out_hw, k=3, stride=1, padding=1):
        super().__init__()
        self.k, self.stride, self.padding = k, stride, padding
        self.weight = nn.Parameter(torch.randn(1, c_out, c_in, out_hw, out_hw, k * k))
        self.fn = v1_refs()["local"].locally_connected

    def forward(self, x):
        return self.fn(x, self.weight, self.k, self.stride, self.padding)


class OpponentChannelInhibition(nn.Module):
    """The tuned divisive normalisation (spec 4.1, make_divnorm_fixture.tuned_divnorm): learned widths
    U(n/8, n/8 + 1); the channel-distance matrix (make_divnorm_fixture.channel_distances) a frozen
    nn.Parameter as in the reference (65,536 scalars for n = 256)."""

    def __init__(self, n):
        super().__init__()
        self.sigmas = nn.Parameter(torch.rand(n) + n / 8)
        self.channel_distances = nn.Parameter(v1_refs()["divnorm"].channel_distances(n), requires_grad=False)

    def forward(self, x):
        s = torch.clamp(self.sigmas, min=0.5)
        g = torch.exp(-self.channel_distances ** 2 / (2 * s[None, :] ** 2)) / (2.5066 * s[None, :])
        w = g / g.sum(dim=0, keepdim=True)
        return x / (F.conv2d(x, w[:, :, None, None]) + 1)


class DivisiveNormalizationCirincione(nn.Module):
    """Spec 4.2 (make_cirincione_fixture.cirincione, its reference_init): an oriented anisotropic 3x3
    Gaussian per (out, in) channel pair from 6 learned parameters, plus a learned bias; the 1-based tap
    coordinates are buffers (x_coords, y_coords)."""

    def __init__(self, c, k=3):
        super().__init__()
        ref = v1_refs()["cirincione"]
        assert k == ref.K
        self.k = k
        for name, t in ref.reference_init(None, c).items():
            setattr(self, name, nn.Parameter(t))
        taps = torch.arange(1, k + 1, dtype=torch.float32)
        self.register_buffer("x_coords", taps.repeat(k, 1))             # X[i, j] = j + 1
        self.register_buffer("y_coords", taps.view(-1, 1).repeat(1, k))  # Y[i, j] = i + 1

    def forward(self, x):
        X, Y, th = self.x_coords, self.y_coords, self.theta
        xr = X * torch.cos(th) + Y * torch.sin(th)
        yr = -X * torch.sin(th) + Y * torch.cos(th)
        q = (xr - self.v) ** 2 / torch.clamp(self.rho ** 2, min=0.1) + \
            (yr - self.w) ** 2 / torch.clamp(self.sigma ** 2, min=0.1)
        g = torch.abs(self.A / torch.clamp(2 * math.pi * self.rho * self.sigma, min=0.1)) * torch.exp(-0.5 * q)
        return x / (F.conv2d(x, g, padding=self.k // 2) + torch.abs(self.bias))


class PolarTransform(nn.Module):
    """Cortical magnification (spec 5): the stem's 32x32 maps pooled by the 540 (ring, wedge) masks
    (make_polar_fixture.pooling_masks, float16 buffers as the reference's), reflect-padded on the angle
    axis (the repository's PolarTransform; bioflex's polar_padding = angle) and resized to 16x16 without
    antialias (bioflex's polar_antialias = false; torchvision <= 0.16's default), by
    make_polar_fixture.forward: the (N, C, 540, 1024) mask product is materialised, in sub-batches of
    32 as the reference does. No parameters."""

    def __init__(self):
        super().__init__()
        self.ref = v1_refs()["polar"]
        masks, counts = self.ref.pooling_masks()
        size = self.ref.SIZE
        self.register_buffer("pooling_masks", masks.half().view(-1, size, size))
        self.register_buffer("pooling_mask_counts", counts.half())

    def forward(self, x):
        size = self.ref.SIZE
        if x.shape[-2:] != (size, size):
            raise RuntimeError("the polar transform takes %dx%d maps, got %s" % (size, size, tuple(x.shape[-2:])))
        masks = self.pooling_masks.view(-1, size * size)
        return torch.cat([self.ref.forward(chunk, masks, self.pooling_mask_counts, False, False)
                          for chunk in x.split(32)])


def brain_bottleneck_forward(block, x):
    """The composites' BrainBottleneck / BrainBottleneckLocal: torchvision's Bottleneck (its conv2 swapped
    as the composite says), the output after the add and ReLU through dn when there is one (spec 4)."""
    from torchvision.models.resnet import Bottleneck
    out = Bottleneck.forward(block, x)
    return out if block.dn is None else block.dn(out)


def composite_forward(model, x):
    """ResNetComposite's forward: the stem, then lpp (the polar transform) in place of the max-pool."""
    x = model.lpp(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return model.fc(torch.flatten(model.avgpool(x), 1))


def v1_resnet50(a):
    """resnet50 with the V1 components of a (spec 6), as bioflex builds them: with --local-rf,
    --divisive-norm or --cortical-magnification the reference's ResNetComposite (DoG in layer1 blocks 0
    and 1 as ConvDog, the locally connected layer as block 2's conv2, dn after each layer1 block, lpp
    in place of the max-pool); --center-surround alone its resnet50_center_surround (DoG in all three
    layer1 blocks, conv2 = Sequential(3x3 conv at nn.Conv2d's default init, DoG)); --local-rf alone
    resnet50_local_rf (conv2 = Sequential(Dropout2d(0.5), LC)); resnet50_cortical_magnification's
    Sequential wrapper computes the same as the composite with lpp.
    Module names are the reference's state_dict names (spec 10)."""
    import types
    import torchvision
    amp_paper = a.dog_amplitude == "paper"
    model = torchvision.models.resnet50(num_classes=a.classes)  # kaiming-normal fan-out convs, BN 1 / 0
    stem = (a.size + 2 * 3 - 7) // 2 + 1
    if not (a.local_rf or a.divisive_norm != "none" or a.cortical_magnification):
        for block in model.layer1:  # resnet50_center_surround
            block.conv2 = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1, bias=False), DoGConv2DLayer(16, 2, amp_paper))
        return model
    if a.cortical_magnification and stem != 32:
        raise SystemExit("--cortical-magnification needs 64x64 images (the polar transform resamples the stem's "
                         "32x32 maps, spec 1): --size 63 or 64, got %d" % a.size)
    hw = 16 if a.cortical_magnification else (stem + 2 - 3) // 2 + 1  # layer1's maps (16 at 64x64)
    for i, block in enumerate(model.layer1):
        if i == 2 and a.local_rf:  # BrainBottleneckLocal's conv3x3_local: k 3, stride 1, padding 1
            block.conv2 = LocallyConnected2d(64, 64, hw, 3, 1, 1)
            if not (a.center_surround or a.divisive_norm != "none" or a.cortical_magnification):
                block.conv2 = nn.Sequential(nn.Dropout2d(0.5), block.conv2)  # resnet50_local_rf
        elif i < 2 and a.center_surround:
            block.conv2 = ConvDog(64, amp_paper)
        block.dn = (OpponentChannelInhibition(256) if a.divisive_norm == "tuned" else
                    DivisiveNormalizationCirincione(256, 3) if a.divisive_norm == "cirincione" else None)
        block.forward = types.MethodType(brain_bottleneck_forward, block)
    if a.cortical_magnification:
        model.lpp = PolarTransform()  # the max-pool stays, unused, as in ResNetComposite
        model.forward = types.MethodType(composite_forward, model)
    return model


def v1_self_check():
    """The restated forwards (DoG, tuned, Cirincione) against the fixture functions, in float64 on the CPU."""
    ref = v1_refs()
    with torch.random.fork_rng(devices=[]):  # leaves the run's initialisation as without the check
        torch.manual_seed(1)
        v1_self_check_with(ref)


def v1_self_check_with(ref):
    x = torch.relu(torch.randn(2, 8, 5, 6, dtype=torch.float64))
    for amp_paper in (False, True):
        dog = DoGConv2DLayer(3, 1, amp_paper).double()
        p = dog.dog_conv
        want = ref["dog"].dog_layer(x, 3, 1, p.sigma1, p.sigma2_scale, p.total_scale, amp_paper)
        assert torch.allclose(dog(x), want, rtol=1e-12, atol=1e-12), "DoG differs from make_dog_fixture"
    oci = OpponentChannelInhibition(8).double()
    assert torch.allclose(oci(x), ref["divnorm"].tuned_divnorm(x, oci.sigmas), rtol=1e-12, atol=1e-12), \
        "tuned normalisation differs from make_divnorm_fixture"
    cir = DivisiveNormalizationCirincione(8, 3).double()
    want = ref["cirincione"].cirincione(x, cir.A, cir.rho, cir.sigma, cir.theta, cir.v, cir.w, cir.bias)
    assert torch.allclose(cir(x), want, rtol=1e-12, atol=1e-12), "Cirincione differs from make_cirincione_fixture"


def v1_flags(a):
    """The V1 components asked for, as bioflex's [model] keys (the run's label)."""
    return ((["center_surround"] if a.center_surround else []) +
            (["dog_amplitude=paper"] if a.dog_amplitude == "paper" else []) +
            (["local_rf"] if a.local_rf else []) +
            (["divisive_norm=" + a.divisive_norm] if a.divisive_norm != "none" else []) +
            (["cortical_magnification"] if a.cortical_magnification else []))


CIFAR_RESNETS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


class CifarBlock(nn.Module):
    """A BasicBlock of bioflex's CIFAR ResNets: 1x1 conv + BN projection where the shape changes."""

    def __init__(self, c_in, c, stride, flex):
        super().__init__()
        conv = (lambda a, b, k, s, p: Flex2D(a, b, k, s, p)) if flex else \
            (lambda a, b, k, s, p: nn.Conv2d(a, b, k, stride=s, padding=p, bias=False))
        self.conv1, self.bn1 = conv(c_in, c, 3, stride, 1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = conv(c, c, 3, 1, 1), nn.BatchNorm2d(c)
        self.downsample = nn.Sequential(conv(c_in, c, 1, stride, 0), nn.BatchNorm2d(c)) \
            if stride != 1 or c_in != c else None

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """bioflex's arch = resnet20 ... resnet110 (depth 6n + 2), every conv a Flex2D with --flex."""

    def __init__(self, n, classes, flex):
        super().__init__()
        self.conv1 = Flex2D(3, 16, 3, 1, 1) if flex else nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for stage, c in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(CifarBlock(c_in, c, 2 if stage > 0 and i == 0 else 1, flex))
                c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(a):
    if a.arch in CIFAR_RESNETS:
        if a.spiking or v1_flags(a):
            raise SystemExit("--spiking and the V1 flags do not apply to %s" % a.arch)
        return CifarResNet(CIFAR_RESNETS[a.arch], a.classes, a.flex)
    if a.arch.startswith("resnet"):
        if a.flex or a.spiking:
            raise SystemExit("--flex and --spiking work with the VGGs, not %s" % a.arch)
        if v1_flags(a):
            return v1_resnet50(a)
        import torchvision
        return getattr(torchvision.models, a.arch)(num_classes=a.classes)
    if a.arch in PF_VGG:
        model = PlasticFlexVGG(a.arch, a.classes, a.size, a.flex, a.spiking)
    elif a.arch in VGG:
        model = vgg(a.arch, a.classes, a.size, a.flex, a.spiking)
    else:
        raise SystemExit("unknown --arch %s (allowed: %s, resnet18, resnet50, %s)" % (
            a.arch, ", ".join(list(VGG) + list(PF_VGG)), ", ".join(CIFAR_RESNETS)))
    return OverTime(model, a.spiking) if a.spiking else model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--arch", default=None, help="vgg6/11/16, resnet18/50, the CIFAR resnet20/32/44/56/110 (with "
                   "--flex every conv flex), plasticflex_vgg6/11/16 (default vgg16; plasticflex_vgg11 with --spiking)")
    p.add_argument("--flex", action="store_true", help="every conv a FlexNet channel-wise max flex layer")
    p.add_argument("--spiking", type=int, default=0, metavar="T", help="LIF neurons over T time steps (0: ReLU)")
    v1 = p.add_argument_group("the V1-constrained ResNet-50 (--arch resnet50; bioflex's [model] keys of the same names)")
    v1.add_argument("--center-surround", action="store_true",
                    help="DoG layers after layer1's 3x3 convs (blocks 0 and 1 with another component, else all three)")
    v1.add_argument("--dog-amplitude", choices=["code", "paper"], default="code",
                    help="--center-surround: the Gaussians' amplitude s/pi (code, as the reference runs) or 1/(pi s)")
    v1.add_argument("--local-rf", action="store_true", help="layer1 block 2's 3x3 conv a locally connected layer")
    v1.add_argument("--divisive-norm", choices=["none", "tuned", "cirincione"], default="none",
                    help="divisive normalisation after each layer1 block")
    v1.add_argument("--cortical-magnification", action="store_true",
                    help="the polar transform in place of the stem's max-pool (--size 64)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--precision", choices=["fp32", "tf32", "tf32_conv", "bf16"], default="fp32",
                   help="bf16: autocast to bfloat16 (bioflex has no bf16; for reference only)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--profile", action="store_true",
                   help="CUDA: only the timed steps run between cudaProfilerStart and Stop, for "
                        "ncu --profile-from-start off (bench/kernel_profile.sh)")
    p.add_argument("--threads", type=int, default=0, help="CPU: torch.set_num_threads (0: PyTorch's default)")
    a = p.parse_args()
    if a.arch is None:
        a.arch = "plasticflex_vgg11" if a.spiking else "vgg16"
    if a.spiking < 0 or a.batch < 1 or a.size < 1 or a.steps < 1 or a.warmup < 0:
        p.error("--spiking must be >= 0, --batch, --size and --steps >= 1, --warmup >= 0")
    if v1_flags(a):
        if a.arch != "resnet50":
            p.error("--center-surround, --local-rf, --divisive-norm and --cortical-magnification need --arch resnet50")
        if a.dog_amplitude == "paper" and not a.center_surround:
            p.error("--dog-amplitude needs --center-surround")
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = a.device == "cuda"
    tf32 = a.precision in ("tf32", "bf16")  # bf16: what autocast leaves in fp32 may use TF32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32 or a.precision == "tf32_conv"  # tf32_conv: PyTorch's defaults
    torch.backends.cudnn.benchmark = True
    dev = a.device
    if v1_flags(a):
        v1_self_check()
    model = build(a).to(dev).train()
    trainable = [t for t in model.parameters() if t.requires_grad]
    params = sum(t.numel() for t in trainable)  # what bioflex counts (it generates the frozen tensors)
    frozen = sum(t.numel() for t in model.parameters() if not t.requires_grad)
    label = a.arch + ("[" + ",".join((["flex"] if a.flex else []) + (["lif,T=%d" % a.spiking] if a.spiking else [])
                                     + v1_flags(a)) + "]" if a.flex or a.spiking or v1_flags(a) else "")
    # on stderr: the side-by-side scripts read the one result line of stdout
    print(f"{label}: {params} trainable parameters" + (f", {params + frozen} with the {frozen} frozen ones "
          "(nn.Parameters with requires_grad=False)" if frozen else ""), file=sys.stderr, flush=True)
    opt = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)
    x = torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1
    y = torch.arange(a.batch, device=dev) % a.classes
    loss_fn = nn.CrossEntropyLoss()
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    peak_all = 0
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            sync()
            if cuda:
                peak_all = torch.cuda.max_memory_allocated()  # the peak so far; then count from here
                torch.cuda.reset_peak_memory_stats()
                if a.profile:
                    torch.cuda.profiler.start()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    sync()
    dt = time.perf_counter() - t0
    if cuda and a.profile:
        torch.cuda.profiler.stop()
    if cuda:
        gib = 1024.0 ** 3
        peak = torch.cuda.max_memory_allocated()
        memory = "peak %.2f GiB (with warm-up %.2f GiB)" % (peak / gib, max(peak, peak_all) / gib)
    else:
        memory = "peak n/a"
    print(f"pytorch {torch.__version__} {dev} {label} {a.precision} batch {a.batch} {a.size}x{a.size}: "
          f"{a.steps * a.batch / dt:.1f} images/s, {1e3 * dt / a.steps:.1f} ms/step, {params} params, {memory} "
          f"(loss {loss.item():.3f})")


if __name__ == "__main__":
    main()
