#!/usr/bin/python3
"""Writes two PyTorch references that tests/test_butd_parity.c compares bioflex against, one guided
BU-TD step each of the same small net with shared weights:

  tests/fixtures/butd_task_head.safetensors: backprop with a TRAINED task head ([butd]
    train_task_head);
  tests/fixtures/butd_multi_decoders.safetensors: [butd] multi_decoders, the head giving 5
    outputs per task and the sample's task picking its own; autograd's gradient, which
    Counter-Hebb with shared weights must equal (the error scattered into the task's slice).

Trained task head: the GaLU gate 1[h > 0] has derivative 0, so the reference's task head never learns. This option
takes the gate's derivative as 1 (the straight-through estimator), written here the usual way:
gate(h) = (h > 0) + h - h.detach(). Only the task head learns through it: the core weights are
used detached in the instruction pass and learn by backprop through the BU pass alone.

Net (shared weights, as the reference's guided configs), input [6, 1, 12, 12], 3 tasks, 5 classes,
task head 10 -> 6 -> 3 (used transposed, ReLU after each layer):

    core_net.0 Conv2d(1, 4, 3)                       12 -> 10
    core_net.1 Conv2d(4, 4, 2, stride 2, groups 4)   10 -> 5
    core_net.2 Conv2d(4, 6, 3, stride 2, padding 1)  5 -> 3
    core_net.3 Linear(54, 10)
    head       Linear(10, 5)

One step: the three passes, the mean cross-entropy, autograd, one Adam step (lr 1e-3). The file
holds input, tasks, labels, every initial weight (task_head.0.weight [6, 10], task_head.1.weight
[3, 6] among them), expected.logits, expected.loss, grad.<name> and after1.<name> for every
trained parameter, the task head's included.

    /usr/bin/python3 bench/make_butd_task_head_fixture.py [output directory]
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

from parity_fixture_util import fixture_path, write_fixture

N, T, K = 6, 3, 5
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
SPECS = [("core_net.0", "conv", (4, 1, 3, 3), dict(stride=1, padding=0, groups=1)),
         ("core_net.1", "conv", (4, 1, 2, 2), dict(stride=2, padding=0, groups=4)),
         ("core_net.2", "conv", (6, 4, 3, 3), dict(stride=2, padding=1, groups=1)),
         ("core_net.3", "linear", (10, 54), None),
         ("head", "linear", (5, 10), None)]  # (5 * T, 10) with multi_decoders


def uniform(shape, bound):
    return ((torch.rand(*shape) * 2 - 1) * bound).requires_grad_()


def bu_op(layer, x):
    if layer["kind"] == "linear":
        return x.flatten(1) @ layer["w"].t() + layer["b"]
    a = layer["args"]
    return F.conv2d(x, layer["w"], layer["b"], stride=a["stride"], padding=a["padding"], groups=a["groups"])


def td_op(layer, above, bu_shape):
    """The transposed op through W, detached: the instruction pass trains only the task head."""
    w = layer["w"].detach()
    if layer["kind"] == "linear":
        return (above @ w).reshape(bu_shape)
    a = layer["args"]
    op = (2 * a["padding"] + bu_shape[2] - w.shape[2]) % a["stride"]
    return F.conv_transpose2d(above, w, stride=a["stride"], padding=a["padding"], groups=a["groups"],
                              output_padding=op)


def gate(h, straight_through):
    """1[h > 0] forward; derivative 1 backward when straight_through, else none (the reference)."""
    g = (h > 0).float()
    return g + h - h.detach() if straight_through else g


def write_step(out, trained_head, decoders):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    layers = []
    for name, kind, shape, args in SPECS:
        if name == "head":
            shape = (K * decoders, 10)
        bound = 1 / math.sqrt(math.prod(shape[1:]))
        layers.append(dict(name=name, kind=kind, w=uniform(shape, bound), b=uniform((shape[0],), bound), args=args))
    task_head = [uniform((6, 10), 1 / math.sqrt(10)), uniform((T, 6), 1 / math.sqrt(6))]
    x = torch.randn(N, 1, 12, 12)
    tasks = torch.tensor([0, 1, 2, 2, 1, 0])
    labels = torch.randint(0, K, (N,))
    params = []
    for l in layers:
        params += [(l["name"] + ".weight", l["w"]), (l["name"] + ".bias", l["b"])]
    heads = [("task_head.0.weight", task_head[0]), ("task_head.1.weight", task_head[1])]
    if trained_head:
        params += heads
    initial = [(name, p.detach().clone()) for name, p in params + ([] if trained_head else heads)]

    with torch.no_grad():  # the BU shapes, so the TD pass knows where to reshape
        shapes = [x.shape]
        for l in layers:
            shapes.append(bu_op(l, torch.zeros(shapes[-1])).shape)
    core = len(layers) - 1
    td = [None] * (len(layers) + 1)
    t = F.one_hot(tasks, T).float()
    td[core] = torch.relu(torch.relu(t @ task_head[1]) @ task_head[0])  # pass 1, with gradient
    for i in range(core - 1, 0, -1):
        td[i] = torch.relu(td_op(layers[i], td[i + 1].reshape(shapes[i + 1]), shapes[i]))
    a = x  # pass 2
    for i, l in enumerate(layers):
        z = bu_op(l, a)
        a = torch.relu(z) * gate(td[i + 1].reshape(z.shape), trained_head) if i < core else z
    logits = a.reshape(N, decoders, K)[torch.arange(N), tasks % decoders]  # decoders = 1: a itself
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = [("grad." + name, p.grad.detach().clone()) for name, p in params]
    opt = torch.optim.Adam([p for _, p in params], **ADAM)
    opt.step()
    after = [("after1." + name, p.detach().clone()) for name, p in params]

    tensors = [("input", x), ("tasks", tasks.to(torch.int32)), ("labels", labels.to(torch.int32))] + initial
    tensors += [("expected.logits", logits.detach()), ("expected.loss", loss.detach())] + grads + after
    what = "the task head trained through straight-through gates" if trained_head else "multi_decoders"
    metadata = {"torch_version": torch.__version__, "generator": "bench/make_butd_task_head_fixture.py",
                "description": "one guided BU-TD backprop step, shared weights, " + what}
    write_fixture(out, tensors, metadata, ["loss %.6f" % float(loss)])


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(fixture_path("x"))
    write_step(os.path.join(folder, "butd_task_head.safetensors"), trained_head=True, decoders=1)
    write_step(os.path.join(folder, "butd_multi_decoders.safetensors"), trained_head=False, decoders=T)


if __name__ == "__main__":
    main()
