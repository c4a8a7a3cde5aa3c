#!/usr/bin/env python3
"""Helper of tests/convert_reference_tests.sh: reference-layout PyTorch checkpoints for
tools/convert_reference_checkpoint.py, and the logits PyTorch computes from them.

    convert_reference_checkpoint_tests.py save VARIANT OUT.pth [ACTS.safetensors]
                                                                    a model of random weights (seeded;
                                                                    batch-norm statistics not the init's:
                                                                    those of one train-mode batch, ACTS's
                                                                    `input` where given, else noise)
                                                                    saved the reference's way
    convert_reference_checkpoint_tests.py compare VARIANT REF.pth ACTS.safetensors LAYER
                                                                    the model rebuilt from REF.pth, run
                                                                    (eval mode) on ACTS's `input`; its
                                                                    logits against ACTS's LAYER

VARIANT, the models are bench/pytorch_train.py's PyTorch twins (their module names are the
references' state_dict names):
  composite_a     the V1-constrained ResNet-50's composite a (DoG, locally connected, tuned norm,
                  polar transform; 64x64, 10 classes), {"model": state_dict, "epoch": 3} as its
                  main.py saves it: frozen nn.Parameters kernel_dists, the DoG's zero bias,
                  channel_distances and the float16 polar buffers pooling_masks / pooling_mask_counts
                  in the state_dict, as the reference's are
  div_norm        resnet50_div_norm (Cirincione normalisation; x_coords / y_coords buffers)
  center_surround resnet50_center_surround (conv2 = Sequential(conv, DoG) in all three layer1 blocks)
  local_rf        resnet50_local_rf (conv2 = Sequential(Dropout2d, locally connected) in layer1 block 2)
  tuned_norm      resnet50_tuned_norm (the tuned normalisation after each layer1 block)
  cortical_magnification  resnet50_cortical_magnification: the polar transform in place of the max-pool,
                  saved under the numeric names of the reference's nn.Sequential ('0.weight' ... '10.bias')
FlexNet and PlasticFlex, {"model_state_dict", "optimizer_state_dict", "epoch", "loss"} as their
RunLoader.save_checkpoint writes it (flexnet.md 7.2), the models arranged and named as the
references build them from the spec-written modules of bench/ (make_flex_parity_fixture.py's
Flex2D: flex_conv, threshold, bn_logits; make_spiking_parity_fixture.py's LIF Neuron; the layer
lists of pytorch_train.py); every threshold drawn N(0, 0.5^2), every Linear Kaiming-normal (logits
of a few units):
  flexnet_vgg16_max      Exp 4: VGG-16-BN, every conv a CHANNELWISE_MAXPOOL Flex2D (expand channels:
                         3 -> 64 tiled, 64 -> 128 block copies) with release S's inert bn_logits and no
                         threshold (a model built on CUDA; flexnet.md 1.6, 7.2): features.{0,3,...,40},
                         classifier.{0,3,6}; 32x32 RGB, 10 classes (162 tensors, 97 without bn_logits)
  flexnet_vgg6_mask      VGG-6-BN with FlexNet's mask joint (THRESHOLD, bn_logits, SIGMOID_HARD, expand),
                         built on the CPU: the threshold a registered [C, H, W] parameter; 16x16 RGB
  plasticflex_vgg6_mask  PlasticFlex's VGG-6 (plasticflex.md 4: 3x3 flex + BN + ReLU, the learned 2x2/2
                         flex downsamplings alone, fc1 fc2 fc3) with its flex layer (THRESHOLD,
                         bn_logits, SIGMOID_HARD, channel_interpolate = bilinear), the threshold [1, C,
                         H, W] as its forward leaves it; [3, 28, 28] input as its MNIST
  plasticflex_vgg6_lif_mask  the same with LIF neurons (decay 0.95, threshold 1, hard reset, 0.3 tanh')
                         over T = 2 steps, direct encoding, the mean of fc3 over T (plasticflex.md 9.3)
The V1 models need torchvision's ResNet-50, which the ones here stand in for where torchvision is
not installed (torchvision.models.resnet50 and its Bottleneck; transforms.Resize without antialias,
the polar transform's, as F.interpolate).
"""
import json
import os
import struct
import sys
import types

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))


def torchvision_stand_in():
    """torchvision.models.resnet50 (its module names, init and Bottleneck) and transforms.Resize
    (bilinear, no antialias), enough for bench/pytorch_train.py's V1 models."""
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        pass

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: the stride here
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self, layers=(3, 4, 6, 3), num_classes=1000):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._layer(64, layers[0], 1)
            self.layer2 = self._layer(128, layers[1], 2)
            self.layer3 = self._layer(256, layers[2], 2)
            self.layer4 = self._layer(512, layers[3], 2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def _layer(self, planes, blocks, stride):
            down = None
            if stride != 1 or self.inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                     nn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(self.inplanes, planes, stride, down)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class Resize:
        def __init__(self, size, interpolation=None, antialias=None):
            if antialias:
                raise SystemExit("the torchvision stand-in resizes without antialias only")
            self.size = size

        def __call__(self, x):
            return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    tv = types.ModuleType("torchvision")
    tv.__path__ = []
    tv.models = types.ModuleType("torchvision.models")
    tv.models.resnet50 = lambda num_classes=1000: ResNet((3, 4, 6, 3), num_classes)
    tv.models.resnet = types.ModuleType("torchvision.models.resnet")
    tv.models.resnet.Bottleneck = Bottleneck
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Resize = Resize
    tv.transforms.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear")
    for name, mod in (("torchvision", tv), ("torchvision.models", tv.models),
                      ("torchvision.models.resnet", tv.models.resnet), ("torchvision.transforms", tv.transforms)):
        sys.modules[name] = mod


V1 = {
    "composite_a": dict(center_surround=True, local_rf=True, divisive_norm="tuned", cortical_magnification=True),
    "div_norm": dict(center_surround=False, local_rf=False, divisive_norm="cirincione", cortical_magnification=False),
    "center_surround": dict(center_surround=True, local_rf=False, divisive_norm="none", cortical_magnification=False),
    "local_rf": dict(center_surround=False, local_rf=True, divisive_norm="none", cortical_magnification=False),
    "tuned_norm": dict(center_surround=False, local_rf=False, divisive_norm="tuned", cortical_magnification=False),
    "cortical_magnification": dict(center_surround=False, local_rf=False, divisive_norm="none",
                                   cortical_magnification=True),
}
# resnet50_cortical_magnification is nn.Sequential(conv1, bn1, relu, PolarTransform, layer1..4, avgpool,
# Flatten, fc) (v1-constrained.md 5.5): its state_dict names are these indices
SEQUENTIAL = {"conv1": "0", "bn1": "1", "lpp": "3", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7",
              "fc": "10"}


def reference_names(variant, state):
    if variant != "cortical_magnification":
        return state
    return {SEQUENTIAL[k.split(".")[0]] + k[len(k.split(".")[0]):]: v for k, v in state.items()}


def model_names(variant, state):
    if variant != "cortical_magnification":
        return state
    back = {v: k for k, v in SEQUENTIAL.items()}
    return {back[k.split(".")[0]] + k[len(k.split(".")[0]):]: v for k, v in state.items()}


# FlexNet's and PlasticFlex's VGGs, arranged and named as the reference codes build them (flexnet.md 2.1
# and 7.2, plasticflex.md 4) from the spec-written modules of bench/: Flex2D of
# make_flex_parity_fixture.py (flex_conv, threshold, bn_logits), the LIF Neuron of
# make_spiking_parity_fixture.py, the layer lists of pytorch_train.py (VGG, PF_VGG).
FLEX = {
    # FlexNet Exp 4 (release S): VGG-16-BN, every conv a CHANNELWISE_MAXPOOL Flex2D (expand), built on
    # CUDA: no threshold in the state_dict, but S's inert bn_logits in every flex layer; 32x32 RGB
    # (the 3 -> 64 layer tiles, 64 -> 128 copies blocks), 10 classes, classifier 512-512-512-10
    "flexnet_vgg16_max": dict(family="flexnet", arch="vgg16", c_in=3, size=32, classes=10,
                              flex=dict(joint="max", channels="expand")),
    # FlexNet's mask joint (joint_mechanism False, THRESHOLD, logits_use_batchnorm, SIGMOID_HARD),
    # built on the CPU: the threshold a registered [C, H, W] parameter; VGG-6 on 16x16 RGB
    "flexnet_vgg6_mask": dict(family="flexnet", arch="vgg6", c_in=3, size=16, classes=10,
                              flex=dict(joint="mask", channels="expand", mask="SIGMOID_HARD", factor=1.0,
                                        logits_bn=True)),
    # PlasticFlex's shipped flex layer (THRESHOLD, bn_logits, SIGMOID_HARD, channel_interpolate) in its
    # VGG-6 (3x3 flex + BN + act, learned 2x2/2 flex downsamplings, fc1 fc2 fc3) on 28x28 MNIST-like
    # [3, 28, 28] input; the threshold as its forward leaves it, a [1, C, H, W] parameter
    "plasticflex_vgg6_mask": dict(family="plasticflex", arch="plasticflex_vgg6", c_in=3, size=28, classes=10,
                                  flex=dict(joint="mask", channels="bilinear", mask="SIGMOID_HARD", factor=1.0,
                                            logits_bn=True)),
    # the same with LIF neurons over T = 2 steps (plasticflex.md 9.3's intended neuron: decay 0.95,
    # threshold 1, hard reset; direct encoding, the mean of fc3 over T as readout)
    "plasticflex_vgg6_lif_mask": dict(family="plasticflex", arch="plasticflex_vgg6", c_in=3, size=28, classes=10,
                                      flex=dict(joint="mask", channels="bilinear", mask="SIGMOID_HARD",
                                                factor=1.0, logits_bn=True), T=2),
}
LIF = dict(kind="lif", T=2, encoding="direct", decay=0.95, threshold=1.0, reset="hard", detach_reset=False,
           through_time=True, surrogate="tanh", alpha=0.0, width=0.0, height=0.3)


class FlexNetVGG(nn.Module):
    """FlexNet's VGG (flexnet.md 2.1): features = [Flex2D 3x3 p1, BatchNorm2d, ReLU] per conv and
    MaxPool2d(2, 2) per "M" (features.0, 1, 2, 3 ...); flatten, no average pool; classifier =
    [Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear] (classifier.0, 3, 6), hidden 4096 or the
    flattened size where smaller."""

    def __init__(self, v, g):
        super().__init__()
        import pytorch_train as pt
        from make_flex_parity_fixture import Flex2D
        layers, c, hw = [], v["c_in"], v["size"]
        for width in pt.VGG[v["arch"]]:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
                hw //= 2
                continue
            flex = Flex2D(c, width, 3, 1, 1, (hw, hw), **v["flex"])
            if v["flex"]["joint"] == "max":
                flex.bn_logits = nn.BatchNorm2d(width)  # S builds it unconditionally; the max never uses it
            layers += [flex, nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        flat = c * hw * hw
        hidden = min(flat, 4096)
        self.classifier = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, hidden),
                                        nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, v["classes"]))
        random_thresholds(self, g, lambda t: t)
        linear_weights(self, g, 1.0)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class PlasticFlexVGG(nn.Module):
    """PlasticFlex's VGG (plasticflex.md 4, vgg6.py): features = [Flex2D 3x3 p1, BatchNorm2d, act] per
    c3 and a Flex2D 2x2 s2 alone per d2; flatten -> fc1 -> act -> dropout -> fc2 -> act -> dropout ->
    fc3. act: ReLU, or with T the LIF Neuron over T steps: direct encoding (the image at every step,
    time outermost) and the mean of fc3's output over T."""

    def __init__(self, v, g):
        super().__init__()
        import pytorch_train as pt
        from make_flex_parity_fixture import Flex2D
        from make_spiking_parity_fixture import Neuron
        self.T = v.get("T", 1)
        self.margins = {}

        def act():
            if "T" not in v:
                return nn.ReLU()
            neuron = Neuron(dict(LIF, T=self.T))
            neuron.margins, neuron.rates = self.margins, []
            return neuron

        spec, dense = pt.PF_VGG[v["arch"]]
        layers, c, hw = [], v["c_in"], v["size"]
        for width in spec:
            if isinstance(width, tuple):
                hw //= 2
                layers.append(Flex2D(c, width[1], 2, 2, 0, (hw, hw), **v["flex"]))
                c = width[1]
            else:
                layers += [Flex2D(c, width, 3, 1, 1, (hw, hw), **v["flex"]), nn.BatchNorm2d(width), act()]
                c = width
        self.features = nn.Sequential(*layers)
        self.fc1, self.fc1_act, self.fc1_dropout = nn.Linear(c * hw * hw, dense), act(), nn.Dropout(0.3)
        self.fc2, self.fc2_act, self.fc2_dropout = nn.Linear(dense, dense), act(), nn.Dropout(0.3)
        self.fc3 = nn.Linear(dense, v["classes"])
        # the threshold as the reference's forward leaves it: replaced by a [1, C, H, W] Parameter
        random_thresholds(self, g, lambda t: t.unsqueeze(0))
        linear_weights(self, g, 3.0 if "T" in v else 1.0)  # spiking: so that fc1's and fc2's neurons fire

    def forward(self, x):
        n = x.shape[0]
        x = torch.flatten(self.features(x.repeat(self.T, 1, 1, 1)), 1)
        x = self.fc1_dropout(self.fc1_act(self.fc1(x)))
        x = self.fc2_dropout(self.fc2_act(self.fc2(x)))
        x = self.fc3(x)
        return x.reshape(self.T, n, -1).mean(0)


def random_thresholds(model, g, shape):
    """Every flex threshold drawn N(0, 0.5^2) (the init's Kaiming bound is 0.01-0.15 here: too small to
    tell a threshold lost from one kept), as a Parameter of shape(T)."""
    for m in model.modules():
        if isinstance(getattr(m, "threshold", None), torch.Tensor):
            m.threshold = nn.Parameter(shape(0.5 * torch.randn(m.threshold.shape, generator=g)))


def linear_weights(model, g, gain):
    """Every Linear's weights Kaiming-normal (std gain sqrt(2 / fan_in)) instead of PyTorch's
    U(+-1/sqrt(fan_in)): logits of a few units rather than hundredths, which the 1e-3 tolerance
    would hardly see, and (gain 3) spiking classifier layers that fire."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(gain * (2.0 / m.in_features) ** 0.5 * torch.randn(m.weight.shape, generator=g))


def build(variant):
    if variant in FLEX:
        v = FLEX[variant]
        g = torch.Generator().manual_seed(11)
        model = (FlexNetVGG if v["family"] == "flexnet" else PlasticFlexVGG)(v, g)
        return model, (v["c_in"], v["size"], v["size"])
    torchvision_stand_in()
    import pytorch_train as pt
    if variant in V1:
        a = types.SimpleNamespace(size=64, classes=10, dog_amplitude="code", **V1[variant])
        return pt.v1_resnet50(a), (3, 64, 64)
    raise SystemExit("unknown variant " + variant)


def randomised(model, shape, x=None):
    """Weights off their init and batch-norm statistics of real activations: every batch-norm's
    affine drawn, then its running mean / variance one train-mode batch's (x, or 4 images of
    N(0, 1) noise)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) or isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.momentum = None
                m.reset_running_stats()
        model.train()
        noise = torch.randn((4,) + shape, generator=g)
        model(noise if x is None else x)
    model.eval()
    return model


def firing(model):
    """A spiking model's last forward: each neuron layer's firing rate and the smallest |H - threshold|
    (a spike within rounding of its threshold could go either way in bioflex)."""
    margins = getattr(model, "margins", None)
    if not margins:
        return ""
    rates = [m.rates[-1][0] for m in model.modules() if getattr(m, "rates", None)]
    return "; firing rates " + " ".join(f"{r:.2f}" for r in rates) + f", min |H - threshold| {margins['spike']:.2g}"


def read_safetensors(path):
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": torch.float32, "I64": torch.int64, "I32": torch.int32}[e["dtype"]]
        a, b = e["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=dtype).reshape(e["shape"]) if b > a else \
            torch.zeros(e["shape"], dtype=dtype)
    return out


def main():
    torch.manual_seed(3)
    torch.set_num_threads(2)
    cmd, variant = sys.argv[1], sys.argv[2]
    model, shape = build(variant)
    if cmd == "save":
        model = randomised(model, shape, read_safetensors(sys.argv[4])["input"] if len(sys.argv) > 4 else None)
        if variant in FLEX:  # FlexNet's and PlasticFlex's RunLoader.save_checkpoint (flexnet.md 7.2)
            state = model.state_dict()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            torch.save({"model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(), "epoch": 200,
                        "loss": 2.25}, sys.argv[3])
        else:
            state = reference_names(variant, model.state_dict())
            torch.save({"model": state, "epoch": 3, "best_acc": 0.0}, sys.argv[3])  # main.py's keys
        print(f"{len(state)} tensors saved" + firing(model))
        return 0
    if cmd == "cpu_built":  # VARIANT IN.pth OUT.pth
        # release S built on the CPU: every Flex2D's threshold [C, H, W] is a registered parameter,
        # also where the channel-wise max never reads it (flexnet.md 1.1, 1.6)
        checkpoint = torch.load(sys.argv[3], map_location="cpu")
        sizes = {}  # each flex layer's output [C, H, W]
        for name, m in model.named_modules():
            if hasattr(m, "flex_conv"):
                m.register_forward_hook(lambda m, x, y, name=name: sizes.__setitem__(name, y.shape[1:]))
        with torch.no_grad():
            model.eval()(torch.zeros((1,) + shape))
        state = {}
        for name, t in checkpoint["model_state_dict"].items():
            state[name] = t
            if name.endswith(".flex_conv.bias"):
                layer = name[:-len(".flex_conv.bias")]
                state[layer + ".threshold"] = nn.init.kaiming_uniform_(torch.empty(sizes[layer]))
        torch.save(dict(checkpoint, model_state_dict=state), sys.argv[4])
        print(f"{len(state)} tensors saved")
        return 0
    if cmd == "compare":
        checkpoint = torch.load(sys.argv[3], map_location="cpu")
        if variant in FLEX:
            model.load_state_dict(checkpoint["model_state_dict"])
        else:
            model.load_state_dict(model_names(variant, checkpoint["model"]))
        model.eval()
        acts = read_safetensors(sys.argv[4])
        x, got = acts["input"], acts[sys.argv[5]]
        with torch.no_grad():
            want = model(x)
        got = got.reshape(want.shape)
        err = (got - want).abs().max().item()
        scale = want.abs().max().item()
        agree = (got.argmax(1) == want.argmax(1)).float().mean().item()
        spread = (want - want.mean(0)).abs().max().item()  # how far the images' logits differ
        print(f"{variant}: {x.shape[0]} images, logits max |bioflex - PyTorch| {err:.3g} of max |logit| {scale:.3g} "
              f"(between images up to {spread:.3g}), top-1 agreement {agree:.2f}" + firing(model))
        return 0 if err <= 1e-3 * max(scale, 1.0) and agree == 1.0 else 1
    raise SystemExit("usage: save|compare ...")


if __name__ == "__main__":
    sys.exit(main())
