#!/usr/bin/env python3
"""Converts a FlexNet, PlasticFlex, V1-constrained ResNet or Net Fragments reference checkpoint (a torch.save'd .pth or
Lightning Fabric .ckpt) into a directory that
bioflex reads as a checkpoint (bioflex-eval --checkpoint DIR) or as starting weights
([model] init_weights = DIR):

    python3 tools/convert_reference_checkpoint.py checkpoint_200.pth runs/exp4_reference
    python3 tools/convert_reference_checkpoint.py checkpoint_200.pth runs/exp4_reference --drop bn_logits
    bioflex-eval --checkpoint runs/exp4_reference configs/flexnet/exp4_flex_vgg16_imagenet100.ini

The checkpoint is a dict with the model's state_dict under "model_state_dict" (FlexNet spec 7.2,
PlasticFlex's save_checkpoint), "model" (the V1-constrained ResNet's main.py) or "lateral_network" (Net Fragments'
Fabric checkpoint, checkpoints/net-fragments.ckpt: model.s2.W_lateral), or a bare state_dict. Its names are PyTorch's, which bioflex's
models use, so the tensors are written as they are into DIR/model.safetensors, except:
  - a DistributedDataParallel "module." prefix is removed;
  - a flex threshold of shape [1, C, H, W] becomes bioflex's [C, H, W];
  - float64 tensors become float32 (num_batches_tracked stays int64);
  - the V1-constrained ResNet's constant tensors, which bioflex generates instead of storing, are
    left out: the tuned normalisations' channel_distances, the DoG layers' kernel_dists and their
    zero, untrained bias, the Cirincione normalisations' x_coords and y_coords, the polar
    transform's pooling_masks and pooling_mask_counts;
  - the V1-constrained resnet50_cortical_magnification's nn.Sequential(conv1, bn1, relu, polar
    transform, layer1..4, avgpool, flatten, fc), whose names are numeric ('0.weight', '3.pooling_masks',
    '10.weight'; v1-constrained.md 5.5 and 10), gets the names of the composite that bioflex builds for
    [model] cortical_magnification = true (conv1, bn1, layer1..4, fc);
  - FlexNet's FlexResNet (flexnet.md 2.2; bioflex's resnet50 and resnet20 ... resnet110, with or
    without [model] flex = true) wraps every conv in a FlexConvWrapper whose `layer` is the Flex2D
    or, with use_flex false, an nn.Conv2d: a flex conv's names are bioflex's as they are
    (layer1.0.conv1.layer.flex_conv.weight), a plain conv's wrapper level is removed
    (layer1.0.conv1.layer.weight -> layer1.0.conv1.weight). Its CIFAR path above depth 50 stacks
    three stages of Bottleneck blocks (conv3 and no layer4), and below 50 on ImageNet it puts three
    stages of BasicBlocks behind the 7x7 stem: neither is a bioflex architecture (bioflex's resnet56
    and resnet110 are BasicBlock ResNets), so they are refused, naming the tensor;
  - the mask joint's spatial-attention logits (FlexNet's SpatialAttentionBlock, [model] flex_logits =
    spatial_attention): the reference's LAYER.spatial_attention_block.blocks.N.* are bioflex's
    LAYER.spatial_attention_block.N.* (the same nn.Sequential indices: conv 3i, batch-norm 3i + 2),
    and the threshold such a layer holds when built on the CPU, which its logits never read, is left
    out; a block of another layout is refused, naming the tensor;
  - an epoch-0 PlasticFlex checkpoint (checkpoint_0.pth, saved as its RunLoader builds the model, before
    the first forward pass; plasticflex.md 2.3, 4, 5.1) has no fc1, which that forward creates, and
    holds every threshold in the shape the DimensionTracer gave it, the image's [C, H, W], which that
    forward replaces with a fresh draw: those thresholds are left out and the missing fc1 is said,
    with the [model] init_weights / init_exclude lines that start a bioflex run from the file
    (bioflex-eval --checkpoint needs every tensor, fc1 included);
  - --drop NAME (repeatable) leaves out every tensor with NAME as one of its dot-separated
    components: FlexNet's channel-wise max layers carry a batch-norm on the logits they never use
    (bn_logits), which bioflex's loaders (bioflex-eval and init_weights) pass over, so --drop
    bn_logits only makes the file smaller; a release-S FlexNet model built on the CPU also holds
    every channel-wise max layer's unused threshold [C, H, W] (flexnet.md 1.6), which bioflex
    refuses: --drop threshold (for a network whose flex layers are all channel-wise max).
What bioflex will not find (a checkpoint of another architecture, or an epoch-0 checkpoint's missing
fc1 given to bioflex-eval) it refuses when it loads the file: init_weights names the
tensor, bioflex-eval names it where the counts agree and otherwise gives the two counts. Needs PyTorch (Debian:
python3-torch) to read the .pth; the safetensors file is written without the safetensors package.
"""
import argparse
import json
import os
import re
import struct
import sys

DTYPES = {"torch.float32": "F32", "torch.int64": "I64"}
# The V1-constrained ResNet's constants (v1-constrained.md 10), which bioflex generates.
GENERATED = ("channel_distances", "kernel_dists", "pooling_masks", "pooling_mask_counts", "x_coords", "y_coords")


def state_dict_of(checkpoint):
    """The state_dict inside a reference checkpoint (or the checkpoint itself when it is one)."""
    for key in ("model_state_dict", "model", "lateral_network"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    if isinstance(checkpoint, dict) and checkpoint and all(hasattr(v, "shape") for v in checkpoint.values()):
        return checkpoint
    keys = ", ".join(sorted(checkpoint)[:8]) if isinstance(checkpoint, dict) else type(checkpoint).__name__
    raise SystemExit(f"error: no state_dict in the checkpoint (no model_state_dict, model or lateral_network; it holds {keys})")


# resnet50_cortical_magnification's nn.Sequential indices (v1-constrained.md 5.5): 2 is the ReLU, 8 the
# average pool and 9 the flatten, which hold no tensors.
SEQUENTIAL = {"0": "conv1", "1": "bn1", "3": "lpp", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4",
              "10": "fc"}


ATTENTION = re.compile(r"^(.+)\.spatial_attention_block\.blocks\.(\d+)\.(weight|bias|running_mean|running_var|"
                       r"num_batches_tracked)$")


def flex_resnet(names, state):
    """FlexResNet's FlexConvWrapper (flexnet.md 2.2): refuses its layouts that no bioflex arch has."""
    if not any(n.endswith((".layer.weight", ".layer.flex_conv.weight")) for n in names):
        return
    stages = {n.split(".")[0] for n in names if re.match(r"layer\d+\.", n)}
    if "layer4" in stages or "layer3" not in stages:
        return
    keys = dict(zip(names, state.values()))
    for n in names:
        if re.match(r"layer\d+\.\d+\.conv3\.", n):
            raise SystemExit(f"error: {n}: a FlexResNet of three stages of Bottleneck blocks (the reference's CIFAR "
                             "path above depth 50) is no bioflex architecture: bioflex's resnet56 and resnet110 are "
                             "BasicBlock ResNets, its Bottleneck ResNet-50 has four stages")
    stem = next((n for n in ("conv1.layer.weight", "conv1.layer.flex_conv.weight") if n in keys), None)
    if stem and tuple(keys[stem].shape[-2:]) != (3, 3):
        raise SystemExit(f"error: {stem} is {list(keys[stem].shape)}: a FlexResNet of three stages behind the "
                         "ImageNet stem (the reference's depth below 50 on ImageNet) is no bioflex architecture: "
                         "bioflex's resnet20 ... resnet110 have the CIFAR stem, a 3x3 conv")


def epoch0_plasticflex(names, state):
    """An epoch-0 PlasticFlex checkpoint: fc2 but no fc1 (built lazily at the first forward pass);
    returns its thresholds (all of the image's [C, H, W] shape, which that forward replaces)."""
    if "fc2.weight" not in names or "fc1.weight" in names:
        return None
    return [n for n, t in zip(names, state.values()) if n.split(".")[-1] == "threshold" and t.dim() == 3]


def converted(state, drop, torch):
    """(name, tensor) pairs in bioflex's terms, the names left out and notes to print."""
    out, dropped, notes = [], [], []
    names = [n[len("module."):] if n.startswith("module.") else n for n in state]
    if "0.weight" in names and "3.pooling_masks" in names:  # resnet50_cortical_magnification
        names = [SEQUENTIAL.get(n.split(".")[0], n.split(".")[0]) + n[len(n.split(".")[0]):] for n in names]
    flex_resnet(names, state)
    # a spatial-attention layer's threshold: its logits come from the block, so nothing reads it
    attention = {n.split(".spatial_attention_block.")[0] for n in names if ".spatial_attention_block." in n}
    epoch0 = epoch0_plasticflex(names, state)
    if epoch0 is not None:
        shapes = sorted({str(list(state[k].shape)) for k, n in zip(state, names) if n in epoch0})
        exclude = ",".join(["fc1"] + epoch0)
        notes.append("an epoch-0 PlasticFlex checkpoint: no fc1 (the reference builds it at its first forward pass, "
                     "after saving checkpoint_0.pth)" + (f"; its {len(epoch0)} thresholds, of the image's shape "
                                                        f"{', '.join(shapes)} (that forward replaces them), left out"
                                                        if epoch0 else "") +
                     ". bioflex-eval --checkpoint needs fc1; start a run from these weights with [model] init_weights "
                     f"= DIR and init_exclude = fc1 (threshold_mode = frozen_random or resample_each_forward), or "
                     f"init_exclude = {exclude} (threshold_mode = learned); freeze_fc1 = true keeps fc1 untrained, "
                     "as the reference's")
    for name, t in zip(names, state.values()):
        parts = name.split(".")
        if parts[-2:-1] == ["layer"] and parts[-1] in ("weight", "bias"):  # FlexResNet's plain conv in its wrapper
            name = ".".join(parts[:-2] + parts[-1:])
        elif ".spatial_attention_block." in name:
            m = ATTENTION.match(name)
            if not m or int(m.group(2)) % 3 == 1:
                raise SystemExit(f"error: {name}: not a tensor of FlexNet's SpatialAttentionBlock (LAYER.spatial_"
                                 "attention_block.blocks.N: conv 3i, LeakyReLU, batch-norm 3i + 2), which bioflex builds")
            name = f"{m.group(1)}.spatial_attention_block.{m.group(2)}.{m.group(3)}"
        parts = name.split(".")
        if any(d in parts for d in drop) or parts[-1] in GENERATED or name.endswith("dog_conv.bias") or \
                (parts[-1] == "threshold" and ".".join(parts[:-1]) in attention) or (epoch0 and name in epoch0):
            dropped.append(name)
            continue
        t = t.detach().cpu()
        if t.dtype == torch.float64:
            t = t.float()
        if name.split(".")[-1] == "threshold" and t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if str(t.dtype) not in DTYPES:
            raise SystemExit(f"error: {name} is {t.dtype}; bioflex reads float32 and int64 tensors")
        out.append((name, t.contiguous()))
    return out, dropped, notes


def write_safetensors(path, tensors, metadata):
    """The safetensors format: an 8-byte little-endian header size, the JSON header, the data."""
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, t in tensors:
        data = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[str(t.dtype)], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="the reference's .pth file")
    p.add_argument("out_dir", help="the directory to write model.safetensors into (made if missing)")
    p.add_argument("--drop", action="append", default=[], metavar="NAME",
                   help="leave out tensors with this dot-separated name component (e.g. bn_logits); repeatable")
    a = p.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("error: reading a .pth needs PyTorch (Debian: apt-get install python3-torch)")
    try:
        try:
            checkpoint = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
        except TypeError:  # PyTorch before 1.13 has no weights_only
            checkpoint = torch.load(a.checkpoint, map_location="cpu")
    except Exception as e:  # a missing file, a file that is no checkpoint, a truncated one
        raise SystemExit(f"error: {a.checkpoint}: not a PyTorch checkpoint that loads ({type(e).__name__}: {e})")
    tensors, dropped, notes = converted(state_dict_of(checkpoint), a.drop, torch)
    if not tensors:
        raise SystemExit("error: no tensors left to write")
    os.makedirs(a.out_dir, exist_ok=True)
    path = os.path.join(a.out_dir, "model.safetensors")
    metadata = {"source": os.path.abspath(a.checkpoint), "converted_by": "tools/convert_reference_checkpoint.py"}
    if isinstance(checkpoint, dict) and "epoch" in checkpoint:
        metadata["reference_epoch"] = str(checkpoint["epoch"])
    write_safetensors(path, tensors, metadata)
    floats = sum(t.numel() for _, t in tensors if t.dtype == torch.float32)
    print(f"{len(tensors)} tensors ({floats:,} floats) -> {path}" + (f"; left out {len(dropped)}: "
          + ", ".join(dropped[:6]) + (" ..." if len(dropped) > 6 else "") if dropped else ""))
    for note in notes:
        print("note: " + note.replace("= DIR", "= " + a.out_dir))


if __name__ == "__main__":
    sys.exit(main())
