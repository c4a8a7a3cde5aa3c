#!/usr/bin/env python3
"""Writes configs/plasticflex/{cifar10_vgg11,mnist_vgg6,fashion_mnist_vgg6,imagenet100_vgg16}_{ann,snn_clamp01,snn_step,snn_lif,snn_lif_nostbp}[_flex].ini:
the PlasticFlex reference grid (../shared/specs/plasticflex.md sections 1 and 5) in bioflex's terms,
with the reference optimiser (SGD 0.1, momentum 0.9, weight decay 1e-5, cosine), and the MNIST grid
again on Fashion-MNIST.

  ann               ReLU network                              (reference "ANN")
  snn_clamp01       the reference's stateless clamp(x, 0, 1)  (reference "SNN" and "SNN_BP": what its configs built)
  snn_step          Heaviside with the 0.3 tanh' surrogate    (reference use_STBP = True, T = 1)
  snn_lif           LIF over T steps trained through time (the intended model, plasticflex.md 9.3: T = 10,
                    its forward_STBP's; T = 4 on Fashion-MNIST, the CPU-sized grid and issue 4's T)
  snn_lif_nostbp    the same without backprop through the membrane
  _flex             every conv a flex layer with the reference's mask path (threshold logits,
                    batch-norm on the logits, hard sigmoid, linear channel interpolation)

Run again after changing it: python3 tools/make_plasticflex_configs.py [--out DIR]
(DIR: where to write them instead of configs/plasticflex; tests/plasticflex_configs_tests.sh diffs
such a copy with the committed files).
"""
import argparse
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "plasticflex")

DATASETS = {
    "cifar10_vgg11": dict(dataset="cifar10", arch="plasticflex_vgg11", dropout=0.5, noise=0.1, lif_T=10,
                          note="CIFAR-10 binary batches in [data] path (data_batch_1..5.bin, test_batch.bin).\n"
                               "; The reference normalised with std (0.2023, 0.1994, 0.2010) (cifar10_std = reference);\n"
                               "; bioflex defaults to the true (0.2470, 0.2435, 0.2616). input_noise_std = 0.1 on both\n"
                               "; splits reproduces its loader.",
                          reference_inputs="cifar10_std = true"),
    "mnist_vgg6": dict(dataset="mnist", arch="plasticflex_vgg6", dropout=0.3, noise=0.0, lif_T=10,
                       note="MNIST IDX files in [data] path. The reference repeated the gray channel three times\n"
                            "; (gray_to_rgb = true); bioflex feeds the single channel by default (the first conv has\n"
                            "; 64*1*9 instead of 64*3*9 weights).",
                       reference_inputs="gray_to_rgb = false"),
    "imagenet100_vgg16": dict(dataset="imagenet100", arch="plasticflex_vgg16", dropout=0.3, noise=0.0, lif_T=10,
                              batch=256, epochs=180,
                              note="ImageNet-100 JPEGs in [data] path (Kaggle ambityga/imagenet100 layout). Labels in\n"
                                   "; the reference's order, the sorted WNIDs (class_list; FlexNet's is Labels.json's), every\n"
                                   "; image squashed to 224x224 without augmentation, as its loader. Run from the repository\n"
                                   "; root, or give class_list as an absolute path. The LIF cells over 10 steps hold ten times\n"
                                   "; the ANN's activations: at batch 256 --dry-run plans some 127 GiB of device memory for\n"
                                   "; snn_lif, some 513 GiB with flex (its mask joint keeps each layer's conv output over the\n"
                                   "; steps; --set model.flex_recompute_conv=true: 427 GiB): spread them over GPUs (--gpus,\n"
                                   "; nodes), or run each batch in slices with the same update (--set data.micro_batches=4:\n"
                                   "; 32 GiB for snn_lif; 16: 32 GiB with flex). The ANN with flex plans some 57 GiB (45 with\n"
                                   "; flex_recompute_conv), within one 80 GB GPU.",
                              reference_inputs="class_list = configs/plasticflex/imagenet100_classes_sorted.txt\n"
                                               "train_transform = squash\nval_resize = 0\nimage_size = 224\n"
                                               "loader_threads = 16"),
    # Not in the reference: the MNIST grid on Fashion-MNIST, whose files come with Debian's
    # dataset-fashion-mnist (the default path), so every cell runs on a machine without downloads.
    "fashion_mnist_vgg6": dict(dataset="fashion_mnist", arch="plasticflex_vgg6", dropout=0.3, noise=0.0, lif_T=4,
                               note="Fashion-MNIST IDX files (Debian's dataset-fashion-mnist, the default path): the\n"
                                    "; MNIST grid on a dataset that runs here. On a CPU, --set run.epochs=N shortens it.",
                               reference_inputs="gray_to_rgb = false"),
}

MODES = {
    "ann": dict(neuron="none", T=1, stbp="true", doc="ANN (ReLU)"),
    "snn_clamp01": dict(neuron="clamp01", T=1, stbp="true", doc="the reference's stateless clamp(x, 0, 1)"),
    "snn_step": dict(neuron="step", T=1, stbp="true", doc="Heaviside spikes with the 0.3 tanh' surrogate, one step"),
    "snn_lif": dict(neuron="lif", T=None, stbp="true", doc="LIF neurons over {T} steps, backprop through time"),
    "snn_lif_nostbp": dict(neuron="lif", T=None, stbp="false",
                           doc="LIF neurons over {T} steps, no backprop through the membrane"),
}


def write(root, name, ds, mode, flex):
    d, m = DATASETS[ds], dict(MODES[mode])
    if m["T"] is None:  # LIF: the dataset's T
        m["T"] = d["lif_T"]
        m["doc"] = m["doc"].format(T=m["T"])
    flex_block = ("flex = true\nflex_joint = mask\nflex_mask = sigmoid_hard\nflex_logits_bn = true\n"
                  "flex_channels = bilinear\nthreshold_mode = learned\n") if flex else "flex = false\n"
    text = f"""; PlasticFlex reference grid: {d['arch']} on {d['dataset']}, {m['doc']}{', flex' if flex else ''}.
; Generated by tools/make_plasticflex_configs.py (plasticflex.md sections 1, 4, 5).
; {d['note']}
; Recipe of the reference: SGD lr 0.1, momentum 0.9, weight decay 1e-5, cosine over {d.get('epochs', 120)} epochs
; stepped per epoch, batch {d.get('batch', 128)}, cross-entropy without smoothing. Differences on purpose: fc1 is
; trained (freeze_fc1 = true keeps it at its random init, as the reference code did), the whole
; test set is evaluated (val_batches = 1 scores one random test batch per epoch, as the reference
; did; the final evaluation stays whole), and a learned flex threshold is a real parameter.
[run]
dir = runs/plasticflex/{name}
epochs = {d.get('epochs', 120)}
eval_every = 1
val_batches = 0
checkpoint_every = 5

[data]
dataset = {d['dataset']}
batch_size = {d.get('batch', 128)}
input_noise_std = {d['noise']}
noise_splits = both
{d['reference_inputs']}

[model]
arch = {d['arch']}
dropout = {d['dropout']}
conv_init = fan_in
freeze_fc1 = false
{flex_block}
[optim]
optimizer = sgd
lr = 0.1
momentum = 0.9
weight_decay = 1e-5

[schedule]
type = cosine
unit = epoch

[spiking]
neuron = {m['neuron']}
time_steps = {m['T']}
use_stbp = {m['stbp']}
decay = 0.95
threshold = 1.0
surrogate = tanh
height = 0.3
"""
    with open(os.path.join(root, name + ".ini"), "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser(description="Writes the PlasticFlex reference grid's configs.")
    p.add_argument("--out", default=ROOT, help="the directory to write them into (default: configs/plasticflex)")
    root = p.parse_args().out
    os.makedirs(root, exist_ok=True)
    for ds in DATASETS:
        for mode in MODES:
            for flex in (False, True):
                write(root, f"{ds}_{mode}{'_flex' if flex else ''}", ds, mode, flex)


if __name__ == "__main__":
    main()
