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

Memory (CUDA): torch.cuda.max_memory_allocated, reset after the warm-up steps, so "peak" is the
most allocated during the timed steps; "with warm-up" is the most since the start (it includes
cuDNN's benchmark search). bench_train_throughput reports its backend's memory the same two ways.
On the CPU: "peak n/a".
"""
import argparse
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


def build(a):
    if a.arch.startswith("resnet"):
        if a.flex or a.spiking:
            raise SystemExit("--flex and --spiking work with the VGGs, not %s" % a.arch)
        import torchvision
        return getattr(torchvision.models, a.arch)(num_classes=a.classes)
    if a.arch in PF_VGG:
        model = PlasticFlexVGG(a.arch, a.classes, a.size, a.flex, a.spiking)
    elif a.arch in VGG:
        model = vgg(a.arch, a.classes, a.size, a.flex, a.spiking)
    else:
        raise SystemExit("unknown --arch %s (allowed: %s, resnet18, resnet50)" % (a.arch, ", ".join(list(VGG) + list(PF_VGG))))
    return OverTime(model, a.spiking) if a.spiking else model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--arch", default=None, help="vgg6/11/16, resnet18/50, plasticflex_vgg6/11/16 "
                   "(default vgg16; plasticflex_vgg11 with --spiking)")
    p.add_argument("--flex", action="store_true", help="every conv a FlexNet channel-wise max flex layer")
    p.add_argument("--spiking", type=int, default=0, metavar="T", help="LIF neurons over T time steps (0: ReLU)")
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
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = a.device == "cuda"
    tf32 = a.precision in ("tf32", "bf16")  # bf16: what autocast leaves in fp32 may use TF32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32 or a.precision == "tf32_conv"  # tf32_conv: PyTorch's defaults
    torch.backends.cudnn.benchmark = True
    dev = a.device
    model = build(a).to(dev).train()
    params = sum(t.numel() for t in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
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
    label = a.arch + ("[" + ",".join((["flex"] if a.flex else []) + (["lif,T=%d" % a.spiking] if a.spiking else []))
                      + "]" if a.flex or a.spiking else "")
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
