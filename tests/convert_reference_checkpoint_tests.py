#!/usr/bin/env python3
"""Helper of tests/convert_reference_tests.sh: reference-layout PyTorch checkpoints for
tools/convert_reference_checkpoint.py, and the logits PyTorch computes from them.

    convert_reference_checkpoint_tests.py save VARIANT OUT.pth      a model of random weights (seeded;
                                                                    batch-norm statistics not the init's)
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


def build(variant):
    torchvision_stand_in()
    import pytorch_train as pt
    if variant in V1:
        a = types.SimpleNamespace(size=64, classes=10, dog_amplitude="code", **V1[variant])
        return pt.v1_resnet50(a), (3, 64, 64)
    raise SystemExit("unknown variant " + variant)


def randomised(model, shape):
    """Weights off their init and batch-norm statistics of real activations: every batch-norm's
    affine drawn, then its running mean / variance one train-mode batch's."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) or isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.momentum = None
                m.reset_running_stats()
        model.train()
        model(torch.randn((4,) + shape, generator=g))
    model.eval()
    return model


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
        model = randomised(model, shape)
        state = reference_names(variant, model.state_dict())
        torch.save({"model": state, "epoch": 3, "best_acc": 0.0}, sys.argv[3])  # main.py's keys
        print(f"{len(state)} tensors saved")
        return 0
    if cmd == "compare":
        checkpoint = torch.load(sys.argv[3], map_location="cpu")
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
        print(f"{variant}: {x.shape[0]} images, logits max |bioflex - PyTorch| {err:.3g} of max |logit| {scale:.3g}, "
              f"top-1 agreement {agree:.2f}")
        return 0 if err <= 1e-3 * max(scale, 1.0) and agree == 1.0 else 1
    raise SystemExit("usage: save|compare ...")


if __name__ == "__main__":
    sys.exit(main())
