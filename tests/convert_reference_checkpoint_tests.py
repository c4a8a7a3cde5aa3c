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
  flexnet_vgg6_attention FlexNet's mask joint with SpatialAttentionBlock logits (2 blocks, under
                         LAYER.spatial_attention_block.blocks.N) and the unread CPU threshold; 16x16
  plasticflex_vgg6_mask_epoch0  plasticflex_vgg6_mask as checkpoint_0.pth holds it: no fc1, thresholds
                         [3, 28, 28] (compare takes fc1 and the thresholds from argv[6], a bioflex run's
                         model.safetensors)
  flexresnet20, flexresnet20_max, flexresnet56  FlexNet's FlexResNet on CIFAR (FlexConvWrapper.layer):
                         plain, channel-wise max flex (S's inert bn_logits), the Bottleneck path (refused)
    convert_reference_checkpoint_tests.py suite EVAL TRAIN SRC      (ctest convert_reference_more) those
                         five saved, converted, scored and compared (this helper and the converter run
                         in-process: one PyTorch import)
The V1 models need torchvision's ResNet-50, which the ones here stand in for where torchvision is
not installed (torchvision.models.resnet50 and its Bottleneck; transforms.Resize without antialias,
the polar transform's, as F.interpolate).
"""
import json
import os
import re
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
    # FlexNet's mask joint with spatial-attention logits (logits_mechanism SpatialAttentionBlock,
    # num_spatial_attention_block 2, logits_use_batchnorm, SIGMOID_HARD) in a VGG-6 on 16x16, built on
    # the CPU: the block's nn.Sequential under LAYER.spatial_attention_block.blocks.N, and the threshold
    # [C, H, W] that the reference registers there and its attention logits never read
    "flexnet_vgg6_attention": dict(family="flexnet", arch="vgg6", c_in=3, size=16, classes=10,
                                   flex=dict(joint="mask", channels="expand", mask="SIGMOID_HARD", factor=1.0,
                                             logits_bn=True, attention_blocks=2), cpu_threshold=True),
    # PlasticFlex's VGG-6 as above saved at epoch 0 (checkpoint_0.pth, before the first forward pass):
    # no fc1 (built lazily by that forward), every threshold the DimensionTracer's image shape [3, 28, 28]
    "plasticflex_vgg6_mask_epoch0": dict(family="plasticflex", arch="plasticflex_vgg6", c_in=3, size=28, classes=10,
                                         flex=dict(joint="mask", channels="bilinear", mask="SIGMOID_HARD",
                                                   factor=1.0, logits_bn=True), epoch0=True),
    # FlexNet's FlexResNet, CIFAR path at depth 20 (flexnet.md 2.2, flex_resnet.py): every conv in a
    # FlexConvWrapper, `layer` an nn.Conv2d without bias (use_flex false) or a Flex2D (channel-wise max,
    # expand, release S's inert bn_logits, built on CUDA: no threshold); 32x32 RGB, 10 classes
    "flexresnet20": dict(family="flexresnet", depth=20, c_in=3, size=32, classes=10, flex=None),
    "flexresnet20_max": dict(family="flexresnet", depth=20, c_in=3, size=32, classes=10,
                             flex=dict(joint="max", channels="expand")),
    # its CIFAR path above depth 50: three stages of Bottleneck blocks, which bioflex does not build
    "flexresnet56": dict(family="flexresnet", depth=56, c_in=3, size=32, classes=10, flex=None),
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
            if flex.spatial_attention_block is not None:  # the reference's module: blocks = nn.Sequential
                flex.spatial_attention_block = SpatialAttentionBlock(flex.spatial_attention_block)
            if v.get("cpu_threshold"):  # registered on the CPU (flexnet.md 1.6), unread by the attention logits
                flex.threshold = nn.Parameter(torch.empty(width, hw, hw))
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


class SpatialAttentionBlock(nn.Module):
    """FlexNet's logits/spatial_attention.py: its layers in an nn.Sequential named blocks (conv 3x3,
    LeakyReLU, batch-norm per block), iterated by bench's Flex2D as its own Sequential."""

    def __init__(self, layers):
        super().__init__()
        self.blocks = layers

    def __iter__(self):
        return iter(self.blocks)


class FlexConvWrapper(nn.Module):
    """FlexResNet's wrapper (flex_resnet.py): `layer` a Flex2D, or with use_flex false an nn.Conv2d
    without bias."""

    def __init__(self, c_in, c_out, k, s, p, hw, flex):
        super().__init__()
        from make_flex_parity_fixture import Flex2D
        if flex is None:
            self.layer = nn.Conv2d(c_in, c_out, k, s, p, bias=False)
        else:
            self.layer = Flex2D(c_in, c_out, k, s, p, ((hw + 2 * p - k) // s + 1,) * 2, **flex)
            if flex["joint"] == "max":
                self.layer.bn_logits = nn.BatchNorm2d(c_out)  # S's inert batch-norm on the logits

    def forward(self, x):
        return self.layer(x)


class FlexBlock(nn.Module):
    """FlexResNet's BasicBlock (expansion 1) or Bottleneck (expansion 4, stride on the 3x3)."""

    def __init__(self, c_in, planes, stride, hw, flex, bottleneck):
        super().__init__()
        self.expansion = 4 if bottleneck else 1
        out = planes * self.expansion
        if bottleneck:
            self.conv1, self.bn1 = FlexConvWrapper(c_in, planes, 1, 1, 0, hw, flex), nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = FlexConvWrapper(planes, planes, 3, stride, 1, hw, flex), nn.BatchNorm2d(planes)
            self.conv3 = FlexConvWrapper(planes, out, 1, 1, 0, (hw - 1) // stride + 1, flex)
            self.bn3 = nn.BatchNorm2d(out)
        else:
            self.conv1, self.bn1 = FlexConvWrapper(c_in, planes, 3, stride, 1, hw, flex), nn.BatchNorm2d(planes)
            self.conv2 = FlexConvWrapper(planes, planes, 3, 1, 1, (hw - 1) // stride + 1, flex)
            self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = nn.Sequential(FlexConvWrapper(c_in, out, 1, stride, 0, hw, flex), nn.BatchNorm2d(out)) \
            if stride != 1 or c_in != out else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if self.expansion == 4:
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
        else:
            y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class FlexResNet(nn.Module):
    """FlexNet's FlexResNet on CIFAR (flex_resnet.py): a 3x3 stem of 16 (maxpool an Identity), three
    stages of (depth - 2) / 6 blocks of 16, 32, 64 planes (BasicBlocks below depth 50, Bottlenecks
    above), layer4 an Identity, average pool, fc."""

    def __init__(self, v, g):
        super().__init__()
        n, bottleneck, hw = (v["depth"] - 2) // 6, v["depth"] > 50, v["size"]
        self.conv1, self.bn1 = FlexConvWrapper(v["c_in"], 16, 3, 1, 1, hw, v["flex"]), nn.BatchNorm2d(16)
        c = 16
        for stage, planes in enumerate((16, 32, 64)):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(FlexBlock(c, planes, stride, hw, v["flex"], bottleneck))
                hw, c = (hw - 1) // stride + 1, planes * blocks[-1].expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c, v["classes"])
        linear_weights(self, g, 1.0)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


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
        model = {"flexnet": FlexNetVGG, "plasticflex": PlasticFlexVGG, "flexresnet": FlexResNet}[v["family"]](v, g)
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
    if sys.argv[1] == "suite":  # suite EVAL TRAIN SRC
        return suite(*sys.argv[2:5])
    cmd, variant = sys.argv[1], sys.argv[2]
    model, shape = build(variant)
    if cmd == "save":
        model = randomised(model, shape, read_safetensors(sys.argv[4])["input"] if len(sys.argv) > 4 else None)
        if variant in FLEX:  # FlexNet's and PlasticFlex's RunLoader.save_checkpoint (flexnet.md 7.2)
            state, epoch = model.state_dict(), 200
            if FLEX[variant].get("epoch0"):  # checkpoint_0.pth: no fc1 yet, the thresholds the image's shape
                v, g, epoch = FLEX[variant], torch.Generator().manual_seed(5), 0
                state = {k: t for k, t in state.items() if not k.startswith("fc1.")}
                for k in state:
                    if k.endswith(".threshold"):
                        state[k] = 0.5 * torch.randn(v["c_in"], v["size"], v["size"], generator=g)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            torch.save({"model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(), "epoch": epoch,
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
        if variant in FLEX and FLEX[variant].get("epoch0"):
            # what the reference's first forward pass makes (fc1, the thresholds) from the bioflex run
            # started from the converted weights (its model.safetensors, argv[6]); the rest the .pth's
            state = {k: t for k, t in checkpoint["model_state_dict"].items() if not k.endswith(".threshold")}
            drawn = read_safetensors(sys.argv[6])
            for k, t in model.state_dict().items():
                if k.startswith("fc1.") or k.endswith(".threshold"):
                    state[k] = drawn[k].reshape(t.shape)
            model.load_state_dict(state)
        elif variant in FLEX:
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
    raise SystemExit("usage: save|cpu_built|compare ...")


def suite(eval_, train, src):
    """The cases that tests/CMakeLists.txt runs as ctest convert_reference_more: FlexNet's spatial-
    attention logits, FlexResNet-20 (plain and flex) and PlasticFlex's epoch-0 checkpoint, each
    saved, converted, scored by bioflex-eval and compared with PyTorch; FlexResNet's Bottleneck CIFAR
    path refused."""
    import glob
    import subprocess
    import tempfile
    py, helper, convert = sys.executable, os.path.abspath(__file__), os.path.join(src, "tools",
                                                                                   "convert_reference_checkpoint.py")
    small = ["--set", "data.procedural_test=4", "--set", "analysis.activation_images=4", "--set", "run.threads=2"]
    results = []
    d = tempfile.mkdtemp(prefix="bioflex_convert_more.")

    def run(*args):
        """A program's exit status and output; this helper and the converter run in this process (one
        PyTorch import), as their command lines would."""
        if args[0] == py:
            import contextlib
            import importlib.util
            import io
            argv, out = sys.argv, io.StringIO()
            sys.argv = [str(a) for a in args[1:]]
            try:
                with contextlib.redirect_stdout(out):
                    if args[1] == convert:
                        spec = importlib.util.spec_from_file_location("convert_reference_checkpoint", convert)
                        module = importlib.util.module_from_spec(spec)
                        spec.loader.exec_module(module)
                        rc = module.main() or 0
                    else:
                        rc = main()
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
                if not isinstance(e.code, int):
                    out.write(str(e.code) + "\n")
            except Exception:  # as the program would end: a traceback, exit 1
                import traceback
                rc = 1
                out.write(traceback.format_exc())
            finally:
                sys.argv = argv
            return rc, out.getvalue()
        p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return p.returncode, p.stdout

    def check(what, ok):
        results.append(bool(ok))
        if not ok:
            print("FAIL " + what)

    def scored(v, weights, cfg, layer, sets, stats=None, extra=()):
        """bioflex-eval of weights (its --activations dump v.acts), compared with PyTorch's."""
        rc, out = run(eval_, "--checkpoint", weights, "--activations", f"{d}/{v}.acts.safetensors", *small,
                      "--set", f"analysis.activation_layers={layer}", *sets, cfg)
        check(f"{v}: bioflex-eval scores the converted weights ({out.strip().splitlines()[-1:]})",
              rc == 0 and "\ntest: loss" in "\n" + out)
        rc, out = run(py, helper, "compare", v, f"{d}/{v}.pth", f"{d}/{v}.acts.safetensors", layer, *extra)
        check(f"{v}: bioflex's logits are PyTorch's ({out.strip()})", rc == 0)
        print(out.strip())

    def saved(v, cfg, layer, sets, opts=(), stats=None):
        """v saved (batch-norm statistics of the images scored: stats, else a first pass's) and converted."""
        if stats is None:
            run(py, helper, "save", v, f"{d}/{v}.pth")
            run(py, convert, f"{d}/{v}.pth", f"{d}/{v}", *opts)
            run(eval_, "--checkpoint", f"{d}/{v}", "--activations", f"{d}/{v}.input.safetensors", *small,
                "--set", f"analysis.activation_layers={layer}", *sets, cfg)
            stats = f"{d}/{v}.input.safetensors"
        run(py, helper, "save", v, f"{d}/{v}.pth", *([stats] if os.path.exists(stats) else []))
        return run(py, convert, f"{d}/{v}.pth", f"{d}/{v}", *opts)

    # FlexNet's mask joint with spatial-attention logits (2 blocks) in a VGG-6 on 16x16 procedural images
    v, cfg = "flexnet_vgg6_attention", f"{src}/configs/flexnet/flex_vgg6_fashion_mnist.ini"
    sets = ["--set", "data.dataset=procedural", "--set", "data.procedural_size=16", "--set", "model.flex_joint=mask",
            "--set", "model.flex_mask=sigmoid_hard", "--set", "model.flex_logits_bn=true",
            "--set", "model.flex_logits=spatial_attention", "--set", "model.flex_attention_blocks=2"]
    rc, out = saved(v, cfg, "classifier.6", sets)
    check(f"{v}: converted, the blocks renamed, the 4 unread thresholds left out ({out.strip()})",
          rc == 0 and re.match(r"^138 tensors .*; left out 4: features.0.threshold, features.3.threshold, "
                               r"features.7.threshold, features.10.threshold$", out.strip()))
    scored(v, f"{d}/{v}", cfg, "classifier.6", sets)

    # FlexResNet-20 on 32x32: plain (FlexConvWrapper's nn.Conv2d) and every conv a channel-wise max flex layer
    cfg = f"{src}/configs/flexnet/flex_resnet20_cifar10.ini"
    for v, pattern, flex in (("flexresnet20", r"^128 tensors \(274,042 floats\) -> [^;]*$", "false"),
                             ("flexresnet20_max", r"^254 tensors \(277,962 floats\) -> [^;]*$", "true")):
        sets = ["--set", "data.dataset=procedural", "--set", "data.procedural_size=32", "--set", f"model.flex={flex}"]
        # (the same images: the first pass of the plain network serves both)
        rc, out = saved(v, cfg, "fc", sets, stats=None if flex == "false" else f"{d}/flexresnet20.input.safetensors")
        check(f"{v}: converted ({out.strip()})", rc == 0 and re.match(pattern, out.strip()))
        scored(v, f"{d}/{v}", cfg, "fc", sets)
    # its Bottleneck CIFAR path (depth 56): no bioflex architecture, refused naming the tensor
    run(py, helper, "save", "flexresnet56", f"{d}/flexresnet56.pth")
    rc, out = run(py, convert, f"{d}/flexresnet56.pth", f"{d}/flexresnet56")
    check(f"FlexResNet-56's Bottleneck CIFAR path refused naming the tensor (exit {rc}: {out.strip()})",
          rc == 1 and out.startswith("error: layer1.0.conv3.layer.weight: a FlexResNet of three stages of Bottleneck")
          and "Traceback" not in out and not os.path.exists(f"{d}/flexresnet56"))

    # PlasticFlex's VGG-6 at epoch 0 (no fc1, thresholds [3, 28, 28]) on 28x28 procedural images: converted
    # (thresholds left out, fc1 said), a run started from it (init_weights, fc1 and the frozen thresholds
    # its own draw; lr 1e-30 and batch-norm momentum 0: nothing moves in its one step), its checkpoint
    # scored and compared with PyTorch's model of the .pth, fc1 and the thresholds from the run
    cfg = f"{src}/configs/plasticflex/fashion_mnist_vgg6_ann_flex.ini"
    sets = ["--set", "data.dataset=procedural", "--set", "data.procedural_size=28",
            "--set", "model.threshold_mode=frozen_random"]
    saved("plasticflex_vgg6_mask", cfg, "fc3", sets)  # for its dump of the scored images
    v = "plasticflex_vgg6_mask_epoch0"
    rc, out = saved(v, cfg, "fc3", sets, stats=f"{d}/plasticflex_vgg6_mask.input.safetensors")
    check(f"{v}: converted, the 6 image-shaped thresholds left out, the missing fc1 said ({out.strip()})",
          rc == 0 and re.match(r"^66 tensors .*; left out 6: features.0.threshold, features.3.threshold, ", out)
          and "note: an epoch-0 PlasticFlex checkpoint: no fc1" in out and f"init_weights = {d}/{v}" in out)
    rc, out = run(eval_, "--checkpoint", f"{d}/{v}", *small, *sets, cfg)
    check(f"{v}: bioflex-eval --checkpoint refuses it (exit {rc})", rc != 0 and "holds 66 tensors" in out)
    rc, out = run(train, "--set", f"run.dir={d}/{v}.run", "--set", "run.epochs=1", "--set", "data.procedural_train=8",
                  "--set", "optim.lr=1e-30", "--set", "model.bn_momentum=0", "--set", f"model.init_weights={d}/{v}",
                  "--set", "model.init_exclude=fc1", "--set", "run.threads=2", *sets, cfg)
    check(f"{v}: a run starts from it with init_exclude = fc1 (exit {rc}: {out.strip().splitlines()[-1:]})", rc == 0)
    weights = sorted(glob.glob(f"{d}/{v}.run/checkpoints/*/model.safetensors"))
    scored(v, f"{d}/{v}.run", cfg, "fc3", sets, extra=weights[-1:] or ["missing"])

    import shutil
    shutil.rmtree(d)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
