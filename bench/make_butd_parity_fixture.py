#!/usr/bin/python3
"""Writes tests/fixtures/butd_guided.safetensors, the PyTorch reference of one guided BU-TD training
step with Counter-Hebb learning that tests/test_butd_parity.c compares bioflex against.

Written from ../shared/specs/butd-counterhebb.md (sections 1-2), in plain PyTorch eager ops:
a small multi-task net shaped like the reference's SimpleNet, input [6, 1, 12, 12], 3 tasks,
5 classes, SEPARATE TD weights (independent kaiming_uniform(a=0) draws with fan_in from B's own
shape), a task head 10 -> 6 -> 3 (used transposed):

    core_net.0 Conv2d(1, 4, 3)              12 -> 10
    core_net.1 Conv2d(4, 4, 2, stride 2, groups 4)   10 -> 5 (depthwise "learned pooling")
    core_net.2 Conv2d(4, 6, 3, stride 2, padding 1)  5 -> 3
    core_net.3 Linear(54, 10)
    head       Linear(10, 5)

One step: pass 1 (one-hot task -> task head^T + ReLU -> core^T + ReLU, storing the TD activity at
each core output level), pass 2 (BU, ReLU then GaLU x*1[td>0]; the head linear), the per-sample
CE gradient softmax - onehot, pass 3 (TD error: B (or conv_transpose with B) with no bias, gated by
1[a_in > 0]), Counter-Hebb updates into .grad (W: mean over the batch of td (x) bu; bias: mean td;
B: the transpose), then one Adam step (lr 1e-3, PyTorch defaults). The file holds:

    input, tasks (I32), labels (I32)         the batch
    <name>                                   every initial weight (core_net.*, head.*, *.back_weight,
                                             task_head.0.weight [6, 10], task_head.1.weight [3, 6])
    expected.logits, expected.loss           pass 2 and the mean CE loss
    grad.<name>                              the Counter-Hebb update of every trained parameter
    after1.<name>                            every trained parameter after the Adam step

    /usr/bin/python3 bench/make_butd_parity_fixture.py [output path]
"""
import math
import sys

import torch
import torch.nn.functional as F

from parity_fixture_util import fixture_path, write_fixture

N, T, K = 6, 3, 5
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)


def uniform(shape, bound):
    return (torch.rand(*shape) * 2 - 1) * bound


def make_layers():
    """(name, kind, weight, bias, back_weight, conv args) bottom to top; the last is the head."""
    specs = [("core_net.0", "conv", (4, 1, 3, 3), dict(stride=1, padding=0, groups=1)),
             ("core_net.1", "conv", (4, 1, 2, 2), dict(stride=2, padding=0, groups=4)),
             ("core_net.2", "conv", (6, 4, 3, 3), dict(stride=2, padding=1, groups=1)),
             ("core_net.3", "linear", (10, 54), None),
             ("head", "linear", (5, 10), None)]
    layers = []
    for name, kind, shape, args in specs:
        fan_in = math.prod(shape[1:])
        w = uniform(shape, 1 / math.sqrt(fan_in))            # PyTorch's default init
        b = uniform((shape[0],), 1 / math.sqrt(fan_in))
        bshape = shape if kind == "conv" else (shape[1], shape[0])
        bw = uniform(bshape, math.sqrt(6 / math.prod(bshape[1:])))  # kaiming_uniform(a=0), B's own fan_in
        layers.append(dict(name=name, kind=kind, w=w, b=b, bw=bw, args=args))
    return layers


def td_op(layer, above, bu_shape):
    """The transposed op through the separate weight B, no bias."""
    if layer["kind"] == "linear":
        return above @ layer["bw"].t()                      # B is [in, out]
    a = layer["args"]
    h_in = bu_shape[2]
    k = layer["w"].shape[2]
    op = (2 * a["padding"] + h_in - k) % a["stride"]         # output padding from the stored BU shape
    return F.conv_transpose2d(above, layer["bw"], stride=a["stride"], padding=a["padding"], groups=a["groups"],
                              output_padding=op)


def bu_op(layer, x):
    if layer["kind"] == "linear":
        return x.flatten(1) @ layer["w"].t() + layer["b"]
    a = layer["args"]
    return F.conv2d(x, layer["w"], layer["b"], stride=a["stride"], padding=a["padding"], groups=a["groups"])


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else fixture_path("butd_guided.safetensors")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    layers = make_layers()
    task_head = [uniform((6, 10), 1 / math.sqrt(10)), uniform((3, 6), 1 / math.sqrt(6))]
    x = torch.randn(N, 1, 12, 12)
    tasks = torch.randint(0, T, (N,))
    labels = torch.randint(0, K, (N,))
    initial = []
    for l in layers:
        initial += [(l["name"] + ".weight", l["w"].clone()), (l["name"] + ".bias", l["b"].clone()),
                    (l["name"] + ".back_weight", l["bw"].clone())]
    initial += [("task_head.0.weight", task_head[0]), ("task_head.1.weight", task_head[1])]

    # BU shapes (a dry pass) so the TD pass knows where to reshape
    acts = [x]
    for l in layers:
        acts.append(bu_op(l, acts[-1]))
    shapes = [a.shape for a in acts]

    # pass 1: instruction
    core = len(layers) - 1
    td = [None] * (len(layers) + 1)
    t = F.one_hot(tasks, T).float()
    t = torch.relu(t @ task_head[1])
    t = torch.relu(t @ task_head[0])
    td[core] = t
    for i in range(core - 1, 0, -1):
        above = td[i + 1].reshape(shapes[i + 1])
        td[i] = torch.relu(td_op(layers[i], above, shapes[i]))

    # pass 2: BU, gated
    acts = [x]
    for i, l in enumerate(layers):
        z = bu_op(l, acts[-1])
        if i < core:
            z = torch.relu(z) * (td[i + 1].reshape(z.shape) > 0).float()
        acts.append(z)
    logits = acts[-1]
    loss = F.cross_entropy(logits, labels)

    # pass 3: TD error from the per-sample gradient, then Counter-Hebb
    delta = torch.softmax(logits, 1) - F.one_hot(labels, K).float()
    grads = {}
    for i in range(len(layers) - 1, -1, -1):
        l = layers[i]
        bu = acts[i]
        if l["kind"] == "linear":
            bu2 = bu.flatten(1)
            dw = delta.t() @ bu2 / N
            db = delta.mean(0)
        else:
            a = l["args"]
            dw = torch.nn.grad.conv2d_weight(bu, l["w"].shape, delta, stride=a["stride"], padding=a["padding"],
                                             groups=a["groups"]) / N
            db = delta.sum((2, 3)).mean(0)
        grads[l["name"] + ".weight"] = dw
        grads[l["name"] + ".bias"] = db
        grads[l["name"] + ".back_weight"] = dw.t() if l["kind"] == "linear" else dw.clone()
        if i > 0:
            below = td_op(l, delta, shapes[i]).reshape(shapes[i])
            delta = below * (bu > 0).float()

    # one Adam step with the Counter-Hebb update as .grad
    params = []
    for l in layers:
        for key, suffix in (("w", ".weight"), ("b", ".bias"), ("bw", ".back_weight")):
            p = torch.nn.Parameter(l[key].clone())
            p.grad = grads[l["name"] + suffix].clone()
            params.append((l["name"] + suffix, p))
    opt = torch.optim.Adam([p for _, p in params], **ADAM)
    opt.step()

    tensors = [("input", x), ("tasks", tasks.to(torch.int32)), ("labels", labels.to(torch.int32))] + initial
    tensors += [("expected.logits", logits), ("expected.loss", loss)]
    tensors += [("grad." + name, grads[name]) for name, _ in params]
    tensors += [("after1." + name, p.detach().clone()) for name, p in params]
    metadata = {"torch_version": torch.__version__, "generator": "bench/make_butd_parity_fixture.py",
                "description": "one guided BU-TD Counter-Hebb step (separate TD weights) + Adam(lr 1e-3); see the script"}
    write_fixture(out, tensors, metadata, ["loss %.6f" % float(loss)])


if __name__ == "__main__":
    main()
