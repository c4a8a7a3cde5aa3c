#!/usr/bin/python3
"""Writes tests/fixtures/parity_cnn.safetensors, the PyTorch reference that
tests/test_pytorch_parity.c compares bioflex against (llm.c style: PyTorch computes, C compares).

The network is bioflex's arch = cnn (src/host/model_zoo.c) with channels = 4,8, hidden = 16,
dropout = 0, batchnorm on, for an input of [6, 3, 12, 12] and K = 5 classes:

    features.0 Conv2d(3, 4, 3, padding=1)  features.1 BatchNorm2d(4)  features.2 ReLU  features.3 MaxPool2d(2, 2)
    features.4 Conv2d(4, 8, 3, padding=1)  features.5 BatchNorm2d(8)  features.6 ReLU  features.7 MaxPool2d(2, 2)
    flatten
    classifier.0 Linear(72, 16)  classifier.1 ReLU  classifier.2 Dropout(0)  classifier.3 Linear(16, 5)

with torch.manual_seed(0) and PyTorch's default initialisation. The file holds:

    input, labels (I32)                     the batch (randn, randint)
    <state_dict name>                       every initial state_dict entry (BN running statistics and
                                            num_batches_tracked, I64 0-d, included)
    expected.logits, expected.loss          first forward pass in train mode; the loss is
                                            CrossEntropyLoss(label_smoothing=0.1), mean over the batch
    grad.<param>                            gradient of that loss for every parameter
    after2.<name>                           every parameter, BN running_mean / running_var and
                                            num_batches_tracked after two SGD steps (lr 0.05,
                                            momentum 0.9, nesterov, weight_decay 1e-3)
    adamw_after2.<name>                     the same after two AdamW steps (lr 0.01, betas 0.9/0.999,
                                            eps 1e-8, weight_decay 0.01) from the same initial state
    adamw_after1.<conv>.bias                the bias of each conv followed by batch-norm after AdamW
                                            step A (see "gauge biases" below)

Each optimiser run, in train mode on the same batch, is exactly what the C test does:
    step A: zero_grad, forward, loss, backward (the logits, loss and gradients recorded), step
    step B: zero_grad, forward, loss, backward, step
so the batch-norm running statistics see the same two forward passes.

Gauge biases: a conv bias read only by a batch-norm in train mode does not change the output (the
batch mean removes it), so its gradient is exactly 0 in exact arithmetic (~1e-17 in float64) and
~1e-8 of rounding noise in float32, on both sides, with unrelated signs. SGD multiplies that noise
by lr and both sides agree to 1e-9; AdamW divides it by sqrt(v) (~ |noise|, comparable to eps)
and moves the bias by up to ~lr per step in a direction chosen by the noise -- PyTorch's own fp32
and fp64 runs differ there. That bias then shifts the next batch mean, so the running_mean after
step B differs by momentum * (difference of the biases after step A). adamw_after1.* lets the C
test remove that term and compare the rest of running_mean exactly; the biases themselves are
only checked against AdamW's step bound.

Needs only torch (no safetensors package): the file is written by hand (bench/parity_fixture_util.py).

    /usr/bin/python3 bench/make_parity_fixture.py [output path]
"""
import os
import sys

import torch
import torch.nn as nn

from parity_fixture_util import fixture_path, two_steps, write_safetensors

N, C, H, W, K = 6, 3, 12, 12, 5
CHANNELS, HIDDEN = (4, 8), 16
SMOOTHING = 0.1
SGD = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
ADAMW = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


class CNN(nn.Module):
    """bioflex arch = cnn: conv-BN-ReLU-maxpool stages, flatten, [Linear ReLU Dropout] Linear."""

    def __init__(self):
        super().__init__()
        layers, c, hw = [], C, H
        for ch in CHANNELS:
            layers += [nn.Conv2d(c, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(), nn.MaxPool2d(2, 2)]
            c, hw = ch, hw // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(c * hw * hw, HIDDEN), nn.ReLU(), nn.Dropout(0.0),
                                        nn.Linear(HIDDEN, K))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def gauge_biases(model):
    """Names of conv biases read only by the batch-norm that follows them."""
    mods = list(model.features.named_children())
    return ["features.%s.bias" % name for (name, mod), (_, nxt) in zip(mods, mods[1:])
            if isinstance(mod, nn.Conv2d) and mod.bias is not None and isinstance(nxt, nn.BatchNorm2d)]


def gauge_biases_after(model):
    """adamw_after1.<name> for every gauge bias: its value after AdamW's step A."""
    params = dict(model.named_parameters())
    return [("adamw_after1." + name, params[name].detach().clone()) for name in gauge_biases(model)]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else fixture_path("parity_cnn.safetensors")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = CNN()
    x = torch.randn(N, C, H, W)
    y = torch.randint(0, K, (N,))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    criterion = nn.CrossEntropyLoss(label_smoothing=SMOOTHING)

    tensors = [("input", x), ("labels", y.to(torch.int32))]
    tensors += list(initial.items())

    recorded, loss = two_steps(model, torch.optim.SGD(model.parameters(), **SGD), criterion, x, y)
    tensors += recorded

    adam_model = CNN()
    adam_model.load_state_dict(initial)
    tensors += two_steps(adam_model, torch.optim.AdamW(adam_model.parameters(), **ADAMW), criterion, x, y,
                         record=False, after_step_a=gauge_biases_after, after="adamw_after2.")[0]

    metadata = {
        "torch_version": torch.__version__,
        "generator": "bench/make_parity_fixture.py",
        "description": ("PyTorch reference for tests/test_pytorch_parity.c: bioflex arch=cnn, channels 4,8, hidden 16, "
                        "dropout 0, batchnorm, input [6,3,12,12], K=5, torch.manual_seed(0) default init; "
                        "CrossEntropyLoss(label_smoothing=0.1) mean; 2 steps of SGD(lr=0.05, momentum=0.9, "
                        "nesterov=True, weight_decay=1e-3) -> after2.*, 2 steps of AdamW(lr=0.01, betas=(0.9,0.999), "
                        "eps=1e-8, weight_decay=0.01) -> adamw_after2.* (adamw_after1.*: conv biases before BN after the first "
                        "step), each step forward+backward in train mode"),
    }
    write_safetensors(out, tensors, metadata)
    print("wrote %s: %d tensors, %d bytes, loss %.6f" % (out, len(tensors), os.path.getsize(out), loss))


if __name__ == "__main__":
    main()
