#!/usr/bin/env python3
"""bioflex_torch: a bioflex checkpoint as a PyTorch nn.Module.

bioflex writes its weights with PyTorch state_dict names (RUN/checkpoints/NAME/model.safetensors),
but many bioflex networks have no PyTorch code to load them into. This module builds the network
from the bioflex config, as bioflex's model builder (src/host/model_zoo.c) does, and loads the
checkpoint into it with strict=True:

    import sys; sys.path.insert(0, "tools")
    import bioflex_torch
    model = bioflex_torch.load("runs/quickstart")                     # RUN/config.ini, RUN's latest
    model = bioflex_torch.load("runs/x/checkpoints/best", "cfg.ini", overrides=["model.flex=true"])
    logits = model(x)                                                  # x: normalised, see below

    python3 tools/bioflex_torch.py CHECKPOINT [CFG.ini] [--set section.key=value]... [--summary]
                                   [--out FILE.pt [--torchscript]]

CHECKPOINT is a run directory (its checkpoints/latest), its checkpoints/ directory or latest file,
a checkpoint directory (NAME/ with model.safetensors) or a model.safetensors file. CFG.ini defaults
to the run directory's config.ini (what training resolved, every key written); any bioflex config
works, keys it leaves out taking bioflex's defaults, and --set / overrides change keys as
bioflex-train's --set does ("model.flex_channels=bilinear").

Input. The module takes images as bioflex's network sees them: float32 [N, C, H, W], already
normalised by the loader, per channel x = (pixel / 255 - mean) / std (bioflex computes
(p - mean) * (1 / std)), with the dataset's statistics:
    fashion_mnist (0.2860, 0.3530), mnist (0.1307, 0.3081), cifar10 (0.4914, 0.4822, 0.4465) /
    (0.2470, 0.2435, 0.2616) ([data] cifar10_std = reference: (0.2023, 0.1994, 0.2010)),
    imagefolder / imagenet100 / imagenet (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225),
    [data] norm_stats = mnist: (0.1307, 0.3081) on every channel, half: 0.5 / 0.5;
    [data] normalize = false: x = pixel / 255; gray_to_rgb repeats the gray channel three times.
normalization(cfg) returns (mean, std) and normalize(images, cfg) applies them to images in [0, 1]
(uint8 is divided by 255 first). dataset = procedural computes its statistics from rendered images
that only bioflex makes: take the `input` tensor of `bioflex-eval --activations` there (it holds
the normalised test images for every dataset). The model's input size is the dataset's
([data] image_size for the JPEG datasets): the VGG and cnn classifiers flatten without adaptive
pooling, so other sizes do not fit.
The output is the logits (no softmax); the module is in eval mode (batch-norm with its running
statistics, dropout off).

Covered ([model] arch): cnn, vgg6, vgg11, vgg16 (with or without [model] batchnorm), resnet18,
resnet50 (torchvision's layout) and the CIFAR resnet20 ... resnet110, plasticflex_vgg6/11/16,
plasticflex_simple_flex and plasticflex_simple_conv. Flex
layers ([model] flex, flex_layers, fully_flex) with flex_joint = channelwise_max (flex_channels
expand or bilinear; the tie rule only matters for gradients), and flex_joint = mask with a
deterministic mask (sigmoid_hard, sigmoid_mul, ste_*), threshold logits (learned or frozen_random
threshold) and optional flex_logits_bn. [model] bn_eps and bn_var_floor are honoured.
The V1-constrained ResNet's components (README "The V1-constrained ResNet-50", v1-constrained.md), with
the reference's names, as bioflex computes them: center_surround (DoG layers on layer1's 3x3 convs,
dog_amplitude code or paper; alone as resnet50_center_surround, conv2.0/conv2.1, or in a composite,
conv2.conv/conv2.dog), local_rf (the locally connected layer1.2.conv2, alone after its Dropout2d,
conv2.1), divisive_norm = tuned (oci_distance opponent or similar) or cirincione after each layer1
block, cortical_magnification (the polar transform lpp, polar_padding angle, both or circular,
polar_antialias), alone or combined (composite a: all four), on resnet50 (divisive_norm and
cortical_magnification on resnet18 too). Their constants (DoG distance grids, channel distances, tap
coordinates, the 256 x 1024 polar operator with its float16-rounded masks) are generated here as bioflex
generates them (they are not in the checkpoint), the generated kernels in float64 from the float32
parameters, rounded to float32 where bioflex stores a float; they stay differentiable (captum).
Spiking networks (cnn, the VGGs and PlasticFlex's, as bioflex builds them; [spiking] neuron = lif, if,
clamp01 or step) with direct encoding, at evaluation: the image repeated over time_steps T (the batch
[T*N, ...], time outer), every ReLU a neuron layer over the T steps with bioflex's arithmetic (H = decay
V + x, a spike where H - threshold >= 0, reset hard, soft or none; IF with decay 1), readout mean_output
(the logits' mean over the steps) or spike_count (the classes' firing rates). The spike has no gradient
here (no surrogate): input attributions through a spiking module are zero.
Refused, with an error naming the key and its value: [spiking] encoding = rate (Bernoulli spikes drawn
at every evaluation), spiking neurons on the ResNets (bioflex refuses them too), BU-TD ([butd] network), Net
Fragments ([fragments] network), flex layers together with the V1 components, static_routing,
spatial-attention logits,
stochastic masks and threshold_mode = resample_each_forward (bioflex draws those at every
evaluation batch), and the multi-task datasets.
Parameter count: parameters() with requires_grad, the trained total of bioflex-train --dry-run
(a frozen fc1 and a frozen threshold are not counted, as there).
Needs torch and numpy (the safetensors file is read by hand).
"""
import argparse
import configparser
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# bioflex's defaults (bioflex-train --help-config) of the keys this tool reads.
DEFAULTS = {
    "model": {
        "arch": "cnn", "num_classes": "0", "dropout": "0.5", "channels": "32,64", "hidden": "128",
        "batchnorm": "true", "bn_eps": "1e-5", "bn_var_floor": "0", "freeze_fc1": "false", "flex": "false",
        "flex_layers": "", "fully_flex": "false", "flex_joint": "channelwise_max", "static_routing": "",
        "flex_channels": "expand", "flex_tie": "split", "flex_mask": "sigmoid_hard", "flex_mask_factor": "1",
        "flex_logits_bn": "false", "flex_logits": "threshold", "threshold_mode": "learned",
        "divisive_norm": "none", "cortical_magnification": "false", "center_surround": "false",
        "local_rf": "false", "local_rf_dropout": "0.5", "dog_amplitude": "code", "oci_distance": "opponent",
        "polar_padding": "angle", "polar_antialias": "false",
    },
    "data": {
        "dataset": "fashion_mnist", "normalize": "true", "gray_to_rgb": "false", "cifar10_std": "true",
        "norm_stats": "dataset", "procedural_classes": "10", "procedural_size": "32", "procedural_channels": "3",
        "image_size": "224", "input_noise_std": "0", "noise_splits": "both",
    },
    "spiking": {"neuron": "none", "time_steps": "10", "encoding": "direct", "readout": "mean_output", "decay": "0.95",
                "threshold": "1.0", "reset": "hard"},
    "butd": {"network": "none"},
    "fragments": {"network": "none"},
}

VGG = {
    "vgg6": [64, 64, 0, 128, 128, 0],
    "vgg11": [64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
    "vgg16": [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0],
}
# PlasticFlex VGGs: c > 0 a 3x3 conv (or flex) + BN + act; -c a learned 2x2/2 conv (or flex) alone.
PF_VGG = {
    "plasticflex_vgg6": ([64, 64, -64, 128, 128, -128], 256),
    "plasticflex_vgg11": ([64, -64, 128, -128, 256, 256, -256, 512, 512, -512, 512, 512, -512], 1024),
    "plasticflex_vgg16": ([64, 64, -64, 128, 128, -128, 256, 256, 256, -256, 512, 512, 512, -512,
                           512, 512, 512, -512], 4096),
}
CIFAR_RESNETS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
ARCHS = (["cnn"] + list(VGG) + list(PF_VGG) + ["plasticflex_simple_flex", "plasticflex_simple_conv",
         "resnet18", "resnet50"] + list(CIFAR_RESNETS))
MASKS = ["sigmoid_hard", "sigmoid_mul", "ste_fpbp", "ste_fpbs", "ste_fsbp", "ste_fsbs"]


class Refused(ValueError):
    """A config this tool cannot build faithfully (names the key and its value)."""


# ------------------------------------------------------------------------------------------------
# Config


class Config:
    """A bioflex INI (configparser) with --set overrides and bioflex's defaults for missing keys."""

    def __init__(self, path=None, overrides=()):
        self.cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(" ;", "\t;"),
                                            comment_prefixes=("#", ";"), strict=False)
        self.cp.optionxform = str  # bioflex's keys are case-sensitive (use_STBP)
        self.path = path
        if path is not None:
            with open(path, encoding="utf-8") as f:
                self.cp.read_file(f)
        for item in overrides:
            if "=" not in item or "." not in item.split("=", 1)[0]:
                raise ValueError("override %r: expected section.key=value" % item)
            key, value = item.split("=", 1)
            section, name = key.strip().split(".", 1)
            if not self.cp.has_section(section):
                self.cp.add_section(section)
            self.cp.set(section, name.strip(), value.strip())

    def get(self, section, key):
        if self.cp.has_option(section, key):
            return self.cp.get(section, key).strip()
        if key in DEFAULTS.get(section, {}):
            return DEFAULTS[section][key]
        raise KeyError("[%s] %s: not in the config and no default known to bioflex_torch" % (section, key))

    def bool(self, section, key):
        v = self.get(section, key).lower()
        if v in ("true", "1", "yes", "on"):
            return True
        if v in ("false", "0", "no", "off"):
            return False
        raise ValueError("[%s] %s = %s: not a boolean" % (section, key, v))

    def int(self, section, key):
        return int(self.get(section, key))

    def float(self, section, key):
        return float(self.get(section, key))

    def ints(self, section, key):
        v = self.get(section, key)
        return [int(t) for t in v.replace(" ", "").split(",") if t]


def _refuse(section, key, value, why):
    raise Refused("[%s] %s = %s: %s; bioflex_torch builds only what it can compute as bioflex does "
                  "(see tools/bioflex_torch.py's docstring)" % (section, key, value, why))


def v1_options(cfg):
    """The V1-constrained ResNet's [model] keys (v1-constrained.md; model_zoo.c), checked: a value this
    tool does not know is refused naming the key."""
    o = {}
    dn = cfg.get("model", "divisive_norm")
    if dn not in ("none", "tuned", "cirincione"):
        _refuse("model", "divisive_norm", dn, "unknown divisive normalisation")
    o["divisive_norm"] = dn
    for key in ("cortical_magnification", "center_surround", "local_rf"):
        o[key] = cfg.bool("model", key)
    choices = {"dog_amplitude": ("code", "paper"), "oci_distance": ("opponent", "similar"),
               "polar_padding": ("angle", "both", "circular")}
    for key, allowed in choices.items():
        v = cfg.get("model", key)
        if v not in allowed:
            _refuse("model", key, v, "unknown value (bioflex knows %s)" % ", ".join(allowed))
        o[key] = v
    o["polar_antialias"] = cfg.bool("model", "polar_antialias")
    o["local_rf_dropout"] = cfg.float("model", "local_rf_dropout")  # Dropout2d: nothing at evaluation
    o["composite"] = dn != "none" or o["cortical_magnification"] or o["local_rf"]
    o["any"] = o["composite"] or o["center_surround"]
    o["first_key"] = next((k for k in ("divisive_norm", "cortical_magnification", "center_surround", "local_rf")
                           if (o[k] != "none" if k == "divisive_norm" else o[k])), None)
    return o


SPIKING_ARCHS = ["cnn"] + list(VGG) + list(PF_VGG) + ["plasticflex_simple_flex", "plasticflex_simple_conv"]


def _spiking_key(cfg, key, alias):
    """A [spiking] key or its alias (the reference's spelling) where the config gives only that."""
    if not cfg.cp.has_option("spiking", key) and cfg.cp.has_option("spiking", alias):
        return cfg.get("spiking", alias)
    return cfg.get("spiking", key)


def spiking_options(cfg):
    """None for an ANN ([spiking] neuron = none), else the neuron's evaluation parameters (layer_spiking.c,
    neuron_cpu.c); refuses what is random per evaluation (rate coding) or unknown, naming the key."""
    neuron = cfg.get("spiking", "neuron")
    if neuron == "none":
        return None
    if neuron not in ("lif", "if", "clamp01", "step"):
        _refuse("spiking", "neuron", neuron, "unknown neuron")
    arch = cfg.get("model", "arch")
    if arch not in SPIKING_ARCHS:
        _refuse("spiking", "neuron", neuron, "bioflex builds spiking networks for %s only, not %s" %
                (", ".join(SPIKING_ARCHS), arch))
    encoding = cfg.get("spiking", "encoding")
    if encoding != "direct":
        _refuse("spiking", "encoding", encoding, "rate coding draws Bernoulli spikes at every evaluation (bioflex's "
                "own random streams); only direct encoding is built")
    readout = cfg.get("spiking", "readout")
    if readout not in ("mean_output", "spike_count"):
        _refuse("spiking", "readout", readout, "unknown readout")
    reset = cfg.get("spiking", "reset")
    if reset not in ("hard", "soft", "none"):
        _refuse("spiking", "reset", reset, "unknown reset")
    T = cfg.int("spiking", "time_steps")
    if T < 1:
        raise ValueError("[spiking] time_steps = %d: must be >= 1" % T)
    return {"neuron": neuron, "T": T, "readout": readout, "reset": reset,
            "decay": float(np.float32(_spiking_key(cfg, "decay", "spiking_decay"))),
            "threshold": float(np.float32(_spiking_key(cfg, "threshold", "spiking_threshold")))}


def check_supported(cfg):
    """Refuses every key value that changes the evaluation computation and is not implemented."""
    arch = cfg.get("model", "arch")
    if arch not in ARCHS:
        _refuse("model", "arch", arch, "unknown architecture")
    spiking_options(cfg)  # refuses what it does not build
    if cfg.get("butd", "network") != "none":
        _refuse("butd", "network", cfg.get("butd", "network"), "BU-TD networks are not built")
    if cfg.get("fragments", "network") != "none":
        _refuse("fragments", "network", cfg.get("fragments", "network"), "Net Fragments networks are not built")
    if cfg.get("data", "dataset") in ("multi_mnist", "multi_fashion_mnist", "celeba"):
        _refuse("data", "dataset", cfg.get("data", "dataset"), "multi-task datasets (BU-TD) are not built")
    v1 = v1_options(cfg)
    if v1["any"] and arch not in ("resnet18", "resnet50"):
        _refuse("model", v1["first_key"], cfg.get("model", v1["first_key"]), "the V1 components apply to resnet18 "
                "and resnet50 only (bioflex refuses them elsewhere)")
    if (v1["center_surround"] or v1["local_rf"]) and arch != "resnet50":
        key = "center_surround" if v1["center_surround"] else "local_rf"
        _refuse("model", key, "true", "applies to resnet50 only (bioflex refuses it elsewhere)")
    if v1["any"] and cfg.bool("model", "flex"):
        _refuse("model", "flex", cfg.get("model", "flex"), "flex layers together with the V1 components "
                "(%s) are not built" % v1["first_key"])
    if not cfg.bool("model", "flex"):
        return
    if cfg.get("model", "static_routing"):
        _refuse("model", "static_routing", cfg.get("model", "static_routing"), "static routing is not built")
    joint = cfg.get("model", "flex_joint")
    if joint not in ("channelwise_max", "mask"):
        _refuse("model", "flex_joint", joint, "unknown flex joint")
    if cfg.get("model", "flex_channels") not in ("expand", "bilinear"):
        _refuse("model", "flex_channels", cfg.get("model", "flex_channels"), "unknown channel rule")
    if joint == "mask":
        if cfg.get("model", "flex_mask") not in MASKS:
            _refuse("model", "flex_mask", cfg.get("model", "flex_mask"), "stochastic masks draw at every "
                    "evaluation batch (bioflex's own random streams); only the deterministic masks are built")
        if cfg.get("model", "flex_logits") != "threshold":
            _refuse("model", "flex_logits", cfg.get("model", "flex_logits"), "spatial-attention logits are not built")
        if cfg.get("model", "threshold_mode") not in ("learned", "frozen_random"):
            _refuse("model", "threshold_mode", cfg.get("model", "threshold_mode"), "the threshold is drawn anew "
                    "at every forward")


def input_shape_and_classes(cfg):
    """(C, H, W) of the dataset as bioflex sizes the model, and the class count (0: unknown)."""
    ds = cfg.get("data", "dataset")
    if ds in ("fashion_mnist", "mnist"):
        c, h, w, k = 1, 28, 28, 10
    elif ds == "cifar10":
        c, h, w, k = 3, 32, 32, 10
    elif ds == "procedural":
        c, s = cfg.int("data", "procedural_channels"), cfg.int("data", "procedural_size")
        h = w = s
        k = cfg.int("data", "procedural_classes")
    elif ds in ("imagenet100", "imagenet", "imagefolder"):
        c, h = 3, cfg.int("data", "image_size")
        w = h
        k = {"imagenet100": 100, "imagenet": 1000}.get(ds, 0)
    else:
        _refuse("data", "dataset", ds, "unknown dataset")
    if cfg.bool("data", "gray_to_rgb") and c == 1:
        c = 3
    n = cfg.int("model", "num_classes")
    return (c, h, w), (n if n > 0 else k)


def normalization(cfg):
    """(mean, std), one float each per input channel, of bioflex's loader for this config; None where
    bioflex computes them from its own rendered images (dataset = procedural)."""
    if isinstance(cfg, str):
        cfg = Config(cfg)
    (c, _, _), _ = input_shape_and_classes(cfg)
    if not cfg.bool("data", "normalize"):
        return [0.0] * c, [1.0] * c
    ds = cfg.get("data", "dataset")
    stats = cfg.get("data", "norm_stats")
    if stats == "mnist":
        return [0.1307] * c, [0.3081] * c
    if stats == "half":
        return [0.5] * c, [0.5] * c
    if ds == "fashion_mnist":
        return [0.2860] * c, [0.3530] * c
    if ds == "mnist":
        return [0.1307] * c, [0.3081] * c
    if ds == "cifar10":
        std = [0.2023, 0.1994, 0.2010] if cfg.get("data", "cifar10_std") == "reference" else [0.2470, 0.2435, 0.2616]
        return [0.4914, 0.4822, 0.4465], std
    if ds in ("imagenet100", "imagenet", "imagefolder"):
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return None


def normalize(images, cfg):
    """images [N, C, H, W] (or [N, H, W] gray) in [0, 1] (float) or 0..255 (uint8) -> the model's input,
    computed as bioflex's loader does in float32: (x - mean) * (1 / std); a gray image is repeated
    into 3 channels where the model takes 3 ([data] gray_to_rgb)."""
    if isinstance(cfg, str):
        cfg = Config(cfg)
    ms = normalization(cfg)
    if ms is None:
        raise ValueError("[data] dataset = procedural: bioflex computes its statistics from images it renders; "
                         "use the `input` tensor of bioflex-eval --activations")
    x = torch.as_tensor(images)
    x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    (c, _, _), _ = input_shape_and_classes(cfg)
    if x.shape[1] == 1 and c == 3:
        x = x.repeat(1, 3, 1, 1)
    mean = torch.tensor(ms[0], dtype=torch.float32).view(1, -1, 1, 1)
    inv_std = (1.0 / torch.tensor(ms[1], dtype=torch.float32)).view(1, -1, 1, 1)
    return (x - mean) * inv_std


# ------------------------------------------------------------------------------------------------
# Safetensors, read by hand

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """(tensors {name: numpy array}, metadata {str: str}) of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise ValueError("%s: tensor %s has dtype %s" % (path, name, info["dtype"]))
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=_DTYPES[info["dtype"]], count=(b - a) // np.dtype(_DTYPES[info["dtype"]]).itemsize,
                            offset=base + a)
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta


def resolve_checkpoint(path):
    """(model.safetensors path, the run directory's config.ini or None) of a run directory, its
    checkpoints/ directory or latest file, a checkpoint directory or a model file."""
    path = os.path.abspath(path)
    if os.path.isfile(path) and os.path.basename(path) == "latest":
        with open(path) as f:
            path = os.path.join(os.path.dirname(path), f.read().strip())
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "checkpoints", "latest")):
        return resolve_checkpoint(os.path.join(path, "checkpoints", "latest"))
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "latest")):
        return resolve_checkpoint(os.path.join(path, "latest"))
    if os.path.isdir(path):
        model = os.path.join(path, "model.safetensors")
        if not os.path.isfile(model) and os.path.isfile(os.path.join(path + ".old", "model.safetensors")):
            model = os.path.join(path + ".old", "model.safetensors")  # a crash between two renames
    else:
        model = path
    if not os.path.isfile(model):
        raise FileNotFoundError("%s: no model.safetensors (give a run directory, a checkpoint directory or "
                                "a model.safetensors file)" % path)
    run_config = None
    d = os.path.dirname(os.path.dirname(model))  # RUN/checkpoints/NAME/model.safetensors
    if os.path.basename(d) == "checkpoints" and os.path.isfile(os.path.join(os.path.dirname(d), "config.ini")):
        run_config = os.path.join(os.path.dirname(d), "config.ini")
    return model, run_config


# ------------------------------------------------------------------------------------------------
# Modules


def _widen_taps(c_in, c_out, rule):
    """P~_j = w0_j P_i0_j + w1_j P_i1_j (ops.h's channel rules)."""
    i0 = torch.zeros(c_out, dtype=torch.long)
    i1 = torch.zeros(c_out, dtype=torch.long)
    w0 = torch.ones(c_out)
    w1 = torch.zeros(c_out)
    for j in range(c_out):
        if rule == "expand":
            i0[j] = j // (c_out // c_in) if c_out % c_in == 0 else j % c_in
            i1[j] = i0[j]
        else:  # bilinear: F.interpolate(align_corners=False) along the channels
            src = max(0.0, (j + 0.5) * c_in / c_out - 0.5)
            a = int(math.floor(src))
            t = src - a
            i0[j], i1[j] = a, min(a + 1, c_in - 1)
            w0[j], w1[j] = 1.0 - t, t
    return i0, i1, w0, w1


class Flex2D(nn.Module):
    """bioflex's flex layer (layer_flex.c; FlexNet's Flex2D): C = flex_conv(x) (with bias),
    P = max_pool2d(x) with the conv's window (padding never wins), P~ = P widened to c_out channels
    (expand: block copy, or tiling j % c_in where c_out is no multiple of c_in; bilinear: linear
    interpolation along the channels); channelwise_max: y = max(C, P~); mask: L = P~ - threshold
    [-> bn_logits], M = mask(L), y = P~ (1 - M) + C M."""

    def __init__(self, c_in, c_out, k, s, p, hw_out, joint="channelwise_max", channels="expand",
                 mask="sigmoid_hard", mask_factor=1.0, logits_bn=False, threshold_learned=True, bn_eps=1e-5):
        super().__init__()
        self.k, self.s, self.p = k, s, p
        self.flex_conv = nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=True)
        self.is_mask = joint == "mask"
        self.mask_kind = MASKS.index(mask) if self.is_mask else 0
        self.mask_factor = float(mask_factor)
        self.logits_bn = bool(self.is_mask and logits_bn)
        i0, i1, w0, w1 = _widen_taps(c_in, c_out, channels)
        self.identity = bool(c_in == c_out and channels == "expand")
        self.interpolate = channels == "bilinear"
        self.register_buffer("i0", i0, persistent=False)
        self.register_buffer("i1", i1, persistent=False)
        self.register_buffer("w0", w0.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("w1", w1.view(1, -1, 1, 1), persistent=False)
        if self.is_mask:
            t = torch.zeros(c_out, hw_out[0], hw_out[1])
            if threshold_learned:
                self.threshold = nn.Parameter(t)
            else:  # frozen_random: a buffer in bioflex, saved in the checkpoint
                self.register_buffer("threshold", t)
        else:
            self.register_buffer("threshold", torch.zeros(0), persistent=False)
        self.bn_logits = nn.BatchNorm2d(c_out, eps=bn_eps) if self.logits_bn else nn.Identity()

    def extra_repr(self):
        rule = "bilinear" if self.interpolate else "expand"
        if not self.is_mask:
            return "joint=channelwise_max, channels=%s, pool=(%d, %d, %d)" % (rule, self.k, self.s, self.p)
        return "joint=mask, channels=%s, mask=%s, factor=%g, pool=(%d, %d, %d)" % (
            rule, MASKS[self.mask_kind], self.mask_factor, self.k, self.s, self.p)

    def widen(self, pooled):
        if self.identity:
            return pooled
        if self.interpolate:
            return self.w0 * pooled.index_select(1, self.i0) + self.w1 * pooled.index_select(1, self.i1)
        return pooled.index_select(1, self.i0)

    def forward(self, x):
        conv = self.flex_conv(x)
        wide = self.widen(F.max_pool2d(x, self.k, self.s, self.p))
        if not self.is_mask:
            return torch.maximum(conv, wide)
        logits = self.bn_logits(wide - self.threshold)
        if self.mask_kind == 0:
            m = torch.clamp(logits / 6.0 + 0.5, 0.0, 1.0)
        elif self.mask_kind == 1:
            m = torch.sigmoid(self.mask_factor * logits)
        elif self.mask_kind <= 3:
            m = (logits > 0.5).to(logits.dtype)
        else:
            m = (torch.sigmoid(logits) > 0.5).to(logits.dtype)
        return wide * (1.0 - m) + conv * m


class FlexConvWrapper(nn.Module):
    """FlexResNet's wrapper: the flex layer one module deeper (conv1.layer.flex_conv.weight)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


# ------------------------------------------------------------------------------------------------
# The V1-constrained ResNet's layers (v1-constrained.md; src/host/layer_v1.c, layer_local.c,
# layer_cirincione.c, polar_map.c; src/kernels/dog_common.h, divnorm_common.h, cirincione_common.h).
# bioflex generates their constants (distance grids, tap coordinates, the polar operator) rather than
# checkpointing them; so does this module, in float64 as bioflex does, rounded to float32 where
# bioflex stores a float. The generated weights stay differentiable in the parameters.

_F32 = lambda v: float(np.float32(v))  # a bound the reference applies to a float tensor, as a float


class DoGConv(nn.Module):
    """DoGConv2D (dog_common.h): d*d kernels of k x k generated from sigma1, sigma2_scale, total_scale
    [d*d, 1, 1]: R = scale (amp(s1) e^(-D/s1) - amp(s2) e^(-D/max(s2, 1e-6))), s1 = max(sigma1, 0.1f),
    s2 = s1 max(sigma2_scale, 1.0001f), amp(s) = s/pi (dog_amplitude = code) or 1/(pi s) (paper), D the
    squared distance to the centre; each tap divided by its L2 norm over the d*d kernels (the norm
    rounded to float, clamped at 1e-12); a conv with padding k // 2, no bias."""

    def __init__(self, d, k, amp_paper):
        super().__init__()
        self.d, self.k, self.amp_paper = d, k, bool(amp_paper)
        self.min_sigma1, self.min_scale = _F32(0.1), _F32(1.0001)
        shape = (d * d, 1, 1)
        self.sigma1 = nn.Parameter(torch.zeros(shape))
        self.sigma2_scale = nn.Parameter(torch.zeros(shape))
        self.total_scale = nn.Parameter(torch.zeros(shape))
        t = torch.arange(k * k)
        dist = ((t // k - k // 2) ** 2 + (t % k - k // 2) ** 2).to(torch.float64)
        self.register_buffer("dist", dist.view(1, k, k), persistent=False)

    def _gauss(self, s: torch.Tensor):
        e = torch.exp(-self.dist / s)
        return e / (math.pi * s) if self.amp_paper else s / math.pi * e

    def weight(self):
        s1 = torch.clamp(self.sigma1.double(), min=self.min_sigma1)
        s2 = s1 * torch.clamp(self.sigma2_scale.double(), min=self.min_scale)
        raw = self.total_scale.double() * (self._gauss(s1) - self._gauss(torch.clamp(s2, min=1e-6)))
        norm = torch.sqrt((raw * raw).sum(0, keepdim=True)).float().double()  # stored as float
        w = raw / torch.clamp(norm, min=1e-12)
        return w.float().view(self.d, self.d, self.k, self.k)

    def forward(self, x):
        return F.conv2d(x, self.weight(), padding=self.k // 2)


class DoGLayer(nn.Module):
    """DoGConv2DLayer: the DoG conv on the first d channels, the others passed unchanged."""

    def __init__(self, d, k=5, amp_paper=False):
        super().__init__()
        self.d = d
        self.dog_conv = DoGConv(d, k, amp_paper)

    def forward(self, x):
        return torch.cat([self.dog_conv(x[:, :self.d]), x[:, self.d:]], dim=1)


class ConvDoG(nn.Module):
    """The composites' conv2: a 3x3 conv (no bias) then the DoG layer (names conv, dog)."""

    def __init__(self, c, stride, amp_paper):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=stride, padding=1, bias=False)
        self.dog = DoGLayer(c // 4, 5, amp_paper)

    def forward(self, x):
        return self.dog(self.conv(x))


class LocallyConnected2d(nn.Module):
    """The locally connected layer (local_conv_cpu.c): weight [1, c_out, c_in, h_out, w_out, k*k], a
    k x k kernel per output position over the zero-padded input, taps row-major, no bias."""

    def __init__(self, c_in, c_out, hw_out, k=3, stride=1, pad=1):
        super().__init__()
        self.k, self.stride, self.pad = k, stride, pad
        self.weight = nn.Parameter(torch.zeros(1, c_out, c_in, hw_out[0], hw_out[1], k * k))

    def forward(self, x):
        c_out, c_in, h, w, kk = (self.weight.shape[1], self.weight.shape[2], self.weight.shape[3],
                                 self.weight.shape[4], self.weight.shape[5])
        cols = F.unfold(x, self.k, padding=self.pad, stride=self.stride)  # [N, c_in*k*k, h*w]
        cols = cols.view(x.shape[0], c_in, kk, h * w)
        wt = self.weight.view(c_out, c_in, h * w, kk)
        return torch.einsum("nctp,ocpt->nop", cols, wt).reshape(x.shape[0], c_out, h, w)


def _divnorm_distances(c, similar):
    r = torch.arange(c).view(-1, 1)
    j = torch.arange(c).view(1, -1)
    m = (j - r) % c
    d = torch.minimum(m, c - m) if similar else (m - c // 2).abs()
    return d.to(torch.float64)  # [r, j]


class TunedDivNorm(nn.Module):
    """The tuned divisive normalisation (divnorm_common.h; OpponentChannelInhibition): W[r, j] =
    g(r, j) / sum_q g(q, j), g = exp(-D[r, j]^2 / (2 s_j^2)), s_j = max(sigma_j, 0.5), D the opponent
    distance |((j - r) mod c) - c//2| or the similar one (ring distance); y = x / (1 + W x) (1x1 conv)."""

    def __init__(self, c, similar=False):
        super().__init__()
        self.sigmas = nn.Parameter(torch.zeros(c))
        self.register_buffer("d2", _divnorm_distances(c, similar) ** 2, persistent=False)

    def weight(self):
        s = torch.clamp(self.sigmas.double(), min=0.5).view(1, -1)
        g = torch.exp(-self.d2 / (2.0 * s * s))
        return (g / g.sum(0, keepdim=True)).float()

    def forward(self, x):
        w = self.weight()
        return x / (1.0 + F.conv2d(x, w[:, :, None, None]))


class CirincioneDivNorm(nn.Module):
    """The Cirincione divisive normalisation (cirincione_common.h): G[o, i] a 3x3 oriented Gaussian
    |A / max(2 pi rho sigma, 0.1)| exp(-((x' - v)^2 / max(rho^2, 0.1) + (y' - w)^2 / max(sigma^2, 0.1)) / 2),
    x' = X cos t + Y sin t, y' = -X sin t + Y cos t, X = column + 1, Y = row + 1 (bounds 0.1f);
    y = x / (conv(x, G, padding 1) + |bias|)."""

    def __init__(self, c, k=3):
        super().__init__()
        self.k = k
        self.bound = _F32(0.1)
        for name in ("A", "rho", "sigma", "theta", "v", "w"):
            setattr(self, name, nn.Parameter(torch.zeros(c, c, 1, 1)))
        self.bias = nn.Parameter(torch.zeros(1))
        taps = torch.arange(1, k + 1, dtype=torch.float64)
        self.register_buffer("X", taps.view(1, -1).repeat(k, 1), persistent=False)
        self.register_buffer("Y", taps.view(-1, 1).repeat(1, k), persistent=False)

    def weight(self):
        b = self.bound
        A, rho, sigma, theta = self.A.double(), self.rho.double(), self.sigma.double(), self.theta.double()
        v, w = self.v.double(), self.w.double()
        cos_t, sin_t = torch.cos(theta), torch.sin(theta)
        xr = self.X * cos_t + self.Y * sin_t
        yr = -self.X * sin_t + self.Y * cos_t
        q = (xr - v) ** 2 / torch.clamp(rho * rho, min=b) + (yr - w) ** 2 / torch.clamp(sigma * sigma, min=b)
        amp = torch.abs(A / torch.clamp(2.0 * math.pi * rho * sigma, min=b))
        return (amp * torch.exp(-0.5 * q)).float()

    def forward(self, x):
        return x / (F.conv2d(x, self.weight(), padding=self.k // 2) + torch.abs(self.bias))


_RING_EDGES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 23]


def _resize_weights(n_in, n_out, antialias):
    """torch's upsample_bilinear2d (or _upsample_bilinear2d_aa) weights along one axis, align_corners=False
    (polar_map.c's resize_weights): w[o, i]."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        if not antialias:
            src = max(scale * (o + 0.5) - 0.5, 0.0)
            left = int(src)
            right = left + 1 if left + 1 < n_in else n_in - 1
            t = src - left
            w[o, left] += 1 - t
            w[o, right] += t
            continue
        support = scale if scale >= 1 else 1.0
        inverse = 1 / scale if scale >= 1 else 1.0
        centre = scale * (o + 0.5)
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in)
        for i in range(lo, hi):
            d = abs((i - centre + 0.5) * inverse)
            w[o, i] = 1 - d if d < 1 else 0.0
        total = w[o, lo:hi].sum()
        if total != 0:
            w[o, lo:hi] /= total
    return w


def polar_operator(padding="angle", antialias=False):
    """The polar transform as one [256, 1024] float32 matrix (polar_map.c's bf_polar_operator): 32x32
    pixels binned into 18 rings x 30 wedges, the foveal rings' non-empty wedges resampled to 30, masks
    and counts rounded to float16, pooled = sum(x mask) / count, padded (angle: the wedges reflect-
    padded; both: rings too; circular: the wedges wrapped) and resized to 16x16 bilinearly."""
    S, R, W = 32, 18, 30
    rows, cols = np.meshgrid(np.arange(S), np.arange(S), indexing="ij")
    x, y = (cols - S // 2).ravel(), (S // 2 - rows).ravel()
    sq = x * x + y * y
    ring_of = sum((sq >= _RING_EDGES[j] ** 2).astype(int) for j in range(1, R))
    angle = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    angle = np.where(y < 0, angle + 2 * math.pi, angle)
    edge = lambda j: 2 * math.pi if j == W else j * (2 * math.pi / W)
    wedge_of = sum((angle >= edge(j)).astype(int) for j in range(1, W))
    masks = np.zeros((R * W, S * S), np.float32)
    counts = np.zeros(R * W, np.float32)
    for ring in range(R):
        in_ring = ring_of == ring
        nonempty = [wd for wd in range(W) if np.any(in_ring & (wedge_of == wd))]
        m = len(nonempty)
        for wedge in range(W):
            a, b, w0, w1 = wedge, wedge, 1.0, 0.0
            if _RING_EDGES[ring] <= S // 2:
                src = max((wedge + 0.5) * m / W - 0.5, 0.0)
                left = int(src)
                w1 = src - left
                w0 = 1 - w1
                a, b = nonempty[left], nonempty[left + 1 if left + 1 < m else m - 1]
            v = np.where(in_ring, (wedge_of == a) * w0 + (wedge_of == b) * w1, 0.0)
            count = v.sum()
            masks[ring * W + wedge] = v.astype(np.float16).astype(np.float32)
            counts[ring * W + wedge] = np.float16(1.0 if count == 0 else count)
    pad_rings = padding == "both"
    height = R + 2 * pad_rings
    reflect = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
    wrap = lambda i, n: i + n if i < 0 else (i - n if i >= n else i)
    shares = np.zeros((height, W + 2, S * S))
    for kk in range(height):
        ring = reflect(kk - 1, R) if pad_rings else kk
        for ll in range(W + 2):
            wedge = wrap(ll - 1, W) if padding == "circular" else reflect(ll - 1, W)
            b = ring * W + wedge
            shares[kk, ll] = masks[b].astype(np.float64) / float(counts[b])
    row_w = _resize_weights(height, 16, antialias)
    col_w = _resize_weights(W + 2, 16, antialias)
    op = np.einsum("ak,bl,klp->abp", row_w, col_w, shares)
    return torch.from_numpy(op.reshape(256, S * S).astype(np.float32))


class PolarTransform(nn.Module):
    """Cortical magnification (layer lpp): every 32x32 map times the constant operator -> 16x16."""

    def __init__(self, padding="angle", antialias=False):
        super().__init__()
        self.padding, self.antialias = padding, bool(antialias)
        self.register_buffer("operator", polar_operator(padding, antialias), persistent=False)

    def extra_repr(self):
        return "padding=%s, antialias=%s" % (self.padding, self.antialias)

    def forward(self, x):
        n, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        if h != 32 or w != 32:
            raise RuntimeError("the polar transform takes 32x32 maps")
        return F.linear(x.reshape(n * c, h * w), self.operator).view(n, c, 16, 16)


# ------------------------------------------------------------------------------------------------
# Spiking networks at evaluation (layer_spiking.c, neuron_cpu.c; README "Spiking networks"): time is
# the outer dimension of the batch, [T*N, ...], the same image at every step (direct encoding); the
# stateless layers run on the T*N samples, a neuron layer replaces every ReLU, and the readout is the
# mean over the steps of the logits (or of the readout neurons' spikes, readout = spike_count).


class Neuron(nn.Module):
    """A neuron layer over the T steps of [T*N, ...] (neuron_cpu.c's lif_step): LIF / IF (IF: decay 1)
    H = decay V + x (two roundings), S = 1[H - threshold >= 0], V after the reset: hard 0 where S,
    soft H - threshold where S, none H; V starts at 0. clamp01 / step: the reference's stateless
    clamp(x, 0, 1) and 1[x > 0]. No parameters."""

    def __init__(self, kind, T, decay=0.95, threshold=1.0, reset="hard"):
        super().__init__()
        self.kind, self.T, self.reset = kind, int(T), reset
        self.decay = 1.0 if kind == "if" else float(decay)
        self.threshold = float(threshold)

    def extra_repr(self):
        if self.kind in ("clamp01", "step"):
            return self.kind
        return "%s, T=%d, decay=%g, threshold=%g, reset=%s" % (self.kind, self.T, self.decay, self.threshold,
                                                               self.reset)

    def forward(self, x):
        if self.kind == "clamp01":
            return torch.clamp(x, 0.0, 1.0)
        if self.kind == "step":
            return (x > 0.0).to(x.dtype)
        xs = x.reshape([self.T, -1] + list(x.shape[1:]))
        v = torch.zeros_like(xs[0])
        out = []
        for t in range(self.T):
            h = self.decay * v + xs[t]
            fired = (h - self.threshold) >= 0.0
            out.append(fired.to(x.dtype))
            if self.reset == "hard":
                v = torch.where(fired, torch.zeros_like(h), h)
            elif self.reset == "soft":
                v = torch.where(fired, h - self.threshold, h)
            else:
                v = h
        return torch.stack(out).reshape(x.shape)


class TimeSteps(nn.Module):
    """The spiking network's time axis: encode repeats the [N, ...] input T times ([T*N, ...], direct
    encoding); decode is the readout: [readout neuron,] the sum over the steps in step order times
    float32(1 / T) (layer_spiking.c's time mean). T = 1 with no readout neuron: an ANN, both identity."""

    def __init__(self, T=1, readout_neuron=None):
        super().__init__()
        self.T = int(T)
        self.readout_neuron = readout_neuron if readout_neuron is not None else nn.Identity()
        self.spiking = readout_neuron is not None or self.T > 1
        self.inv_T = float(np.float32(1.0 / self.T))

    def encode(self, x):
        if not self.spiking:
            return x
        return x.repeat([self.T] + [1] * (x.dim() - 1))  # [T*N, ...], step t at t*N

    def decode(self, y):
        if not self.spiking:
            return y
        y = self.readout_neuron(y)
        ys = y.reshape([self.T, -1] + list(y.shape[1:]))
        acc = ys[0]
        for t in range(1, self.T):
            acc = acc + ys[t]
        return acc * self.inv_T


class Builder:
    """Numbers the convs (flex sites) in network order as model_zoo.c's convs_so_far does and builds
    a conv or a flex layer for each."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.flex = cfg.bool("model", "flex")
        self.sites = cfg.ints("model", "flex_layers")
        self.site = 0
        self.bn_eps = cfg.float("model", "bn_eps")
        self.spiking = spiking_options(cfg)

    def act(self):
        """The activation: ReLU, or a spiking network's neuron layer."""
        sp = self.spiking
        if sp is None:
            return nn.ReLU()
        return Neuron(sp["neuron"], sp["T"], sp["decay"], sp["threshold"], sp["reset"])

    def time_steps(self):
        sp = self.spiking
        if sp is None:
            return TimeSteps()
        return TimeSteps(sp["T"], self.act() if sp["readout"] == "spike_count" else None)

    def flex_here(self):
        here = self.flex and (not self.sites or self.site in self.sites)
        self.site += 1
        return here

    def flex_layer(self, c_in, c_out, k, s, p, hw_out):
        c = self.cfg
        return Flex2D(c_in, c_out, k, s, p, hw_out, joint=c.get("model", "flex_joint"),
                      channels=c.get("model", "flex_channels"), mask=c.get("model", "flex_mask"),
                      mask_factor=c.float("model", "flex_mask_factor"), logits_bn=c.bool("model", "flex_logits_bn"),
                      threshold_learned=c.get("model", "threshold_mode") == "learned", bn_eps=self.bn_eps)

    def conv(self, c_in, c_out, k, s, p, hw_in, bias=True, wrap=False):
        """(module, hw_out): a conv, or where this site is flex a flex layer (wrapped for ResNets)."""
        hw_out = tuple((v + 2 * p - k) // s + 1 for v in hw_in)
        if self.flex_here():
            layer = self.flex_layer(c_in, c_out, k, s, p, hw_out)
            return (FlexConvWrapper(layer) if wrap else layer), hw_out
        return nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=bias), hw_out

    def bn(self, c):
        return nn.BatchNorm2d(c, eps=self.bn_eps)


def _maxpool2(b, c, hw):
    """A 2x2/2 max-pool, or with fully_flex a flex layer C -> C on the 2x2/2 window (no flex site)."""
    hw_out = tuple((v - 2) // 2 + 1 for v in hw)
    if b.flex and b.cfg.bool("model", "fully_flex"):
        return b.flex_layer(c, c, 2, 2, 0, hw_out), hw_out
    return nn.MaxPool2d(2, 2), hw_out


def _features(b, c, hw, items, batchnorm):
    """cnn / VGG / PlasticFlex features: c_out > 0 conv(or flex)-[BN]-ReLU, 0 a max-pool (maxpool2),
    ("d", c_out) a learned 2x2/2 conv (or flex) alone."""
    layers = []
    for v in items:
        if v == 0:
            m, hw = _maxpool2(b, c, hw)
            layers.append(m)
        elif isinstance(v, tuple):
            m, hw = b.conv(c, v[1], 2, 2, 0, hw)
            layers.append(m)
            c = v[1]
        else:
            m, hw = b.conv(c, v, 3, 1, 1, hw)
            layers.append(m)
            if batchnorm:
                layers.append(b.bn(v))
            layers.append(b.act())
            c = v
    return nn.Sequential(*layers), c, hw


class SequentialNet(nn.Module):
    """features -> flatten -> classifier (cnn, vgg: state_dict names features.N, classifier.N)."""

    def __init__(self, features, classifier, time_steps=None):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.time = time_steps if time_steps is not None else TimeSteps()

    def forward(self, x):
        x = self.time.encode(x)
        return self.time.decode(self.classifier(torch.flatten(self.features(x), 1)))


class PlasticFlexNet(nn.Module):
    """features -> flatten -> fc1 act dropout fc2 act dropout [fc3] (names as bioflex's)."""

    def __init__(self, features, flat, dense, classes, fc2_is_last=False, dropout=0.5, b=None):
        super().__init__()
        self.features = features
        self.fc1 = nn.Linear(flat, dense)
        self.fc2 = nn.Linear(dense, classes if fc2_is_last else dense)
        self.fc3 = nn.Identity() if fc2_is_last else nn.Linear(dense, classes)
        self.fc2_is_last = fc2_is_last
        self.drop = nn.Dropout(dropout)
        self.fc1_act = b.act() if b is not None else nn.ReLU()
        self.fc2_act = b.act() if b is not None and not fc2_is_last else nn.ReLU()
        self.time = b.time_steps() if b is not None else TimeSteps()

    def forward(self, x):
        x = self.drop(self.fc1_act(self.fc1(torch.flatten(self.features(self.time.encode(x)), 1))))
        if self.fc2_is_last:
            return self.time.decode(self.fc2(x))
        return self.time.decode(self.fc3(self.drop(self.fc2_act(self.fc2(x)))))


class Block(nn.Module):
    """torchvision's BasicBlock (bottleneck False) or Bottleneck (stride on the 3x3), bioflex's order of
    flex sites: conv1, conv2, [conv3], downsample."""

    def __init__(self, b, c_in, planes, stride, bottleneck, hw, layer1_index=-1, v1=None):
        super().__init__()
        wrap = dict(bias=False, wrap=True)
        self.bottleneck = bottleneck
        exp = 4 if bottleneck else 1
        if bottleneck:
            self.conv1, h1 = b.conv(c_in, planes, 1, 1, 0, hw, **wrap)
            self.bn1 = b.bn(planes)
            if v1 and (v1["center_surround"] or v1["local_rf"]):
                self.conv2, h2 = _v1_conv2(b, v1, planes, stride, h1, layer1_index)
            else:
                self.conv2, h2 = b.conv(planes, planes, 3, stride, 1, h1, **wrap)
            self.bn2 = b.bn(planes)
            self.conv3, h_out = b.conv(planes, planes * 4, 1, 1, 0, h2, **wrap)
            self.bn3 = b.bn(planes * 4)
        else:
            self.conv1, h1 = b.conv(c_in, planes, 3, stride, 1, hw, **wrap)
            self.bn1 = b.bn(planes)
            self.conv2, h_out = b.conv(planes, planes, 3, 1, 1, h1, **wrap)
            self.bn2 = b.bn(planes)
            self.conv3, self.bn3 = nn.Identity(), nn.Identity()
        if stride != 1 or c_in != planes * exp:
            ds, _ = b.conv(c_in, planes * exp, 1, stride, 0, hw, **wrap)
            self.downsample = nn.Sequential(ds, b.bn(planes * exp))
        else:
            self.downsample = nn.Identity()
        self.hw_out = h_out
        # the V1 ResNet's divisive normalisation after each layer1 block (after its add and ReLU)
        c_out = planes * exp
        dn = v1["divisive_norm"] if v1 and layer1_index >= 0 else "none"
        self.dn = (TunedDivNorm(c_out, v1["oci_distance"] == "similar") if dn == "tuned" else
                   CirincioneDivNorm(c_out) if dn == "cirincione" else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(y)))
        return self.dn(F.relu(y + self.downsample(x)))


def _v1_conv2(b, v1, planes, stride, hw, layer1_index):
    """A bottleneck's 3x3 conv with center_surround or local_rf (model_zoo.c's bottleneck_conv2): in
    layer1 block 2 with local_rf the locally connected layer (alone, resnet50_local_rf: conv2.1 after
    the Dropout2d conv2.0); in layer1 with center_surround the conv and the DoG layer on its first
    planes/4 channels (composites: conv2.conv, conv2.dog in blocks 0 and 1; alone, resnet50_center_
    surround: conv2.0, conv2.1 in all three blocks); elsewhere the plain conv (no flex: refused)."""
    hw_out = tuple((v + 2 - 3) // stride + 1 for v in hw)
    amp_paper = v1["dog_amplitude"] == "paper"
    if layer1_index == 2 and v1["local_rf"]:
        lc = LocallyConnected2d(planes, planes, hw_out, 3, stride, 1)
        if v1["center_surround"] or v1["divisive_norm"] != "none" or v1["cortical_magnification"]:
            return lc, hw_out
        drop = v1["local_rf_dropout"]
        return nn.Sequential(nn.Dropout2d(drop) if drop > 0 else nn.Identity(), lc), hw_out
    if layer1_index < 0 or not v1["center_surround"] or (layer1_index == 2 and v1["composite"]):
        b.site += 1  # a conv (flex sites: flex is refused with the V1 components)
        return nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False), hw_out
    b.site += 1
    if v1["composite"]:
        return ConvDoG(planes, stride, amp_paper), hw_out
    return nn.Sequential(nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False),
                         DoGLayer(planes // 4, 5, amp_paper)), hw_out


class ResNet(nn.Module):
    """torchvision's ResNet (ImageNet stem) or the CIFAR ResNet of depth 6n + 2 (3x3 stem, no max-pool),
    every conv a flex layer (FlexConvWrapper) where bioflex makes it one."""

    def __init__(self, b, c_in, hw, blocks, bottleneck, classes, cifar):
        super().__init__()
        self.cifar = cifar
        width = 16 if cifar else 64
        if cifar:
            self.conv1, hw = b.conv(c_in, 16, 3, 1, 1, hw, bias=False, wrap=True)
        else:
            self.conv1, hw = b.conv(c_in, 64, 7, 2, 3, hw, bias=False, wrap=True)
        self.bn1 = b.bn(width)
        v1 = None if cifar else v1_options(b.cfg)
        v1 = v1 if v1 and v1["any"] else None
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        self.lpp = nn.Identity()
        if v1 and v1["cortical_magnification"]:  # the polar transform in the max-pool's place
            if hw != (32, 32):
                raise ValueError("[model] cortical_magnification = true needs 64x64 images (the stem's maps 32x32), "
                                 "got stem maps %dx%d" % hw)
            self.maxpool = nn.Identity()
            self.lpp = PolarTransform(v1["polar_padding"], v1["polar_antialias"])
            hw = (16, 16)
        elif not cifar:
            hw = tuple((v + 2 - 3) // 2 + 1 for v in hw)
        c = width
        for stage, n in enumerate(blocks):
            planes = width << stage
            layer = []
            for i in range(n):
                blk = Block(b, c, planes, 2 if stage > 0 and i == 0 else 1, bottleneck, hw,
                            i if stage == 0 else -1, v1)
                hw = blk.hw_out
                c = planes * (4 if bottleneck else 1)
                layer.append(blk)
            setattr(self, "layer%d" % (stage + 1), nn.Sequential(*layer))
        self.num_stages = len(blocks)
        if cifar:
            self.layer4 = nn.Identity()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.lpp(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(cfg, input_shape=None, num_classes=None):
    """The network of a Config (or an INI path) as bioflex builds it, randomly initialised, in eval mode."""
    if isinstance(cfg, str):
        cfg = Config(cfg)
    check_supported(cfg)
    shape, k = input_shape_and_classes(cfg)
    if input_shape is not None:
        shape = tuple(input_shape)
    if num_classes:
        k = num_classes
    if not k:
        raise ValueError("the class count is unknown: set [model] num_classes (or pass num_classes)")
    arch = cfg.get("model", "arch")
    b = Builder(cfg)
    c, hw = shape[0], (shape[1], shape[2])
    bn = cfg.bool("model", "batchnorm")
    dropout = cfg.float("model", "dropout")
    if arch == "cnn" or arch in VGG:
        items = [x for ch in cfg.ints("model", "channels") for x in (ch, 0)] if arch == "cnn" else VGG[arch]
        features, c, hw = _features(b, c, hw, items, bn)
        flat = c * hw[0] * hw[1]
        if arch == "cnn":
            hidden = cfg.int("model", "hidden")
            head = ([nn.Linear(flat, hidden), b.act(), nn.Dropout(dropout), nn.Linear(hidden, k)] if hidden > 0
                    else [nn.Linear(flat, k)])
        else:  # FlexNet's classifier: hidden = 4096, or the flattened size where that is <= 4096
            hidden = flat if flat <= 4096 else 4096
            head = [nn.Linear(flat, hidden), b.act(), nn.Dropout(dropout), nn.Linear(hidden, hidden), b.act(),
                    nn.Dropout(dropout), nn.Linear(hidden, k)]
        model = SequentialNet(features, nn.Sequential(*head), b.time_steps())
    elif arch in PF_VGG:
        spec, dense = PF_VGG[arch]
        items = [("d", -v) if v < 0 else v for v in spec]
        features, c, hw = _features(b, c, hw, items, bn)
        model = PlasticFlexNet(features, c * hw[0] * hw[1], dense, k, dropout=dropout, b=b)
    elif arch in ("plasticflex_simple_flex", "plasticflex_simple_conv"):
        conv_net = arch == "plasticflex_simple_conv"
        widths = [32, 64, 128, 256] if conv_net else [16, 32, 64, 128]
        items = []
        for i, wdt in enumerate(widths):
            items.append(wdt)
            if conv_net or i % 2 == 1:
                items.append(0)
        features, c, hw = _features(b, c, hw, items, False)  # no batch-norm in either
        model = PlasticFlexNet(features, c * hw[0] * hw[1], 128, k, fc2_is_last=conv_net, dropout=dropout, b=b)
    elif arch in ("resnet18", "resnet50"):
        if b.flex and cfg.bool("model", "fully_flex"):
            _refuse("model", "fully_flex", "true", "bioflex refuses it for ResNets")
        blocks = [2, 2, 2, 2] if arch == "resnet18" else [3, 4, 6, 3]
        model = ResNet(b, c, hw, blocks, arch == "resnet50", k, cifar=False)
    else:
        if b.flex and cfg.bool("model", "fully_flex"):
            _refuse("model", "fully_flex", "true", "bioflex refuses it for ResNets")
        model = ResNet(b, c, hw, [CIFAR_RESNETS[arch]] * 3, False, k, cifar=True)
    if b.flex and b.sites and max(b.sites) >= b.site:
        raise ValueError("[model] flex_layers names conv %d, but %s has %d convs" % (max(b.sites), arch, b.site))
    if arch.startswith("plasticflex_vgg") and cfg.bool("model", "freeze_fc1"):
        for p in model.fc1.parameters():  # buffers in bioflex: not in its trained total
            p.requires_grad_(False)
    model.bioflex_arch = arch
    model.bioflex_input_shape = tuple(shape)
    return model.eval()


def parameter_count(model):
    """The trained parameters, as bioflex-train --dry-run's total counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load(checkpoint, config_ini=None, overrides=(), input_shape=None):
    """The bioflex checkpoint (run directory, checkpoints/ or latest, checkpoint directory or
    model.safetensors) as an nn.Module in eval mode, built from config_ini (default: the run
    directory's config.ini) with overrides ("section.key=value"), weights loaded with strict=True.
    The module takes normalised float32 [N, C, H, W] (see normalize()) and returns the logits."""
    model_file, run_config = resolve_checkpoint(checkpoint)
    if config_ini is None:
        config_ini = run_config
    if config_ini is None:
        raise ValueError("%s: not inside a run directory: give the config (CFG.ini)" % checkpoint)
    cfg = config_ini if isinstance(config_ini, Config) else Config(config_ini, overrides)
    tensors, meta = read_safetensors(model_file)
    k = None
    if cfg.int("model", "num_classes") == 0 and input_shape_and_classes(cfg)[1] == 0 and "num_classes" in meta:
        k = int(meta["num_classes"])  # imagefolder: counted from the class folders by bioflex
    model = build(cfg, input_shape, k)
    if meta.get("arch") and meta["arch"] != model.bioflex_arch:
        raise ValueError("%s holds a %s, but the config builds [model] arch = %s" % (model_file, meta["arch"],
                                                                                     model.bioflex_arch))
    state = {n: torch.from_numpy(a) for n, a in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError("%s does not fit the network the config builds (%s): %s" % (model_file, cfg.path, e))
    floor = cfg.float("model", "bn_var_floor")
    if floor > 0:  # bioflex raises every running variance to the floor as it loads weights
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.clamp_(min=floor)
    if cfg.float("data", "input_noise_std") > 0 and cfg.get("data", "noise_splits") in ("test", "both"):
        print("bioflex_torch: note: [data] input_noise_std = %s: bioflex adds noise to the evaluation's inputs; "
              "the module does not" % cfg.get("data", "input_noise_std"), file=sys.stderr)
    model.bioflex_checkpoint = model_file
    model.bioflex_config = cfg.path
    return model.eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description="A bioflex checkpoint as a PyTorch module (tools/bioflex_torch.py).")
    ap.add_argument("checkpoint", help="run directory, checkpoint directory or model.safetensors")
    ap.add_argument("config", nargs="?", help="bioflex config (default: the run directory's config.ini)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    ap.add_argument("--summary", action="store_true", help="one line per parameter tensor instead of the module")
    ap.add_argument("--out", help="save the module: torch.save of the whole module (load it with this file on "
                    "the path), or with --torchscript a TorchScript file (torch.jit.load, no dependency)")
    ap.add_argument("--torchscript", action="store_true", help="--out writes TorchScript")
    a = ap.parse_args(argv)
    try:
        model = load(a.checkpoint, a.config, a.set)
    except (Refused, ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        print("bioflex_torch: %s" % e, file=sys.stderr)
        return 2
    if a.summary:
        for name, t in model.state_dict().items():
            print("%-48s %s" % (name, list(t.shape)))
    else:
        print(model)
    print("input: [N, %d, %d, %d] normalised float32 (mean, std: %s)" % (
        model.bioflex_input_shape + (normalization(Config(model.bioflex_config, a.set)) or "bioflex's own, procedural",)))
    print("total: %d parameters" % parameter_count(model))
    if a.out:
        if a.torchscript:
            scripted = torch.jit.script(model)
            scripted.save(a.out)
        else:
            torch.save(model, a.out)
        print("wrote %s" % a.out)
    return 0


if __name__ == "__main__":
    # run through the importable module, so that torch.save pickles its classes as bioflex_torch.*
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bioflex_torch
    sys.exit(bioflex_torch.main())
