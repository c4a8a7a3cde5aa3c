#!/usr/bin/python3
"""Milliseconds per guided BU-TD training step in PyTorch eager, the side-by-side partner of
bench/butd_step.c: the reference's Multi-MNIST model (SimpleNet 32,32, hidden 50, task head
2 -> 50 -> 50, shared weights, batch 64), the three passes written as the reference does them
(specs/butd-counterhebb.md sections 1-2: instruction pass under no_grad, GaLU-gated BU pass, TD error
pass with conv_transpose / W^T, Counter-Hebb updates into .grad), then Adam.

    /usr/bin/python3 bench/butd_step_pytorch.py [cpu|cuda] [steps] [batch]
"""
import sys
import time

import torch
import torch.nn.functional as F


def main():
    usage = "usage: butd_step_pytorch.py [cpu|cuda] [steps >= 1 (200)] [batch >= 1 (64)]"
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    try:
        dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
        steps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 64
        if dev not in ("cpu", "cuda") or steps < 1 or n < 1 or len(sys.argv) > 4:
            raise ValueError
    except ValueError:
        print(usage, file=sys.stderr)
        sys.exit(2)
    torch.manual_seed(0)
    K, T = 10, 2
    specs = [("conv", (32, 1, 5, 5), 1, 1), ("conv", (32, 1, 2, 2), 2, 32), ("conv", (32, 32, 5, 5), 1, 1),
             ("conv", (32, 1, 3, 3), 2, 32), ("linear", (50, 288), 0, 0), ("linear", (K, 50), 0, 0)]
    layers = []
    for kind, shape, stride, groups in specs:
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        w = ((torch.rand(*shape) * 2 - 1) / fan_in ** 0.5).to(dev).requires_grad_()
        b = ((torch.rand(shape[0]) * 2 - 1) / fan_in ** 0.5).to(dev).requires_grad_()
        layers.append(dict(kind=kind, w=w, b=b, stride=stride, groups=groups))
    task_head = [(torch.rand(50, 50) * 2 - 1).to(dev) / 50 ** 0.5, (torch.rand(T, 50) * 2 - 1).to(dev) / 50 ** 0.5]
    opt = torch.optim.Adam([p for l in layers for p in (l["w"], l["b"])], lr=5e-4)
    x = torch.rand(n, 1, 28, 28, device=dev) * 2 - 1
    labels = torch.arange(n, device=dev) % K
    tasks = torch.arange(n, device=dev) % T

    def bu(l, a):
        if l["kind"] == "linear":
            return a.flatten(1) @ l["w"].t() + l["b"]
        return F.conv2d(a, l["w"], l["b"], stride=l["stride"], groups=l["groups"])

    def td(l, above, below_shape):
        if l["kind"] == "linear":
            return (above.flatten(1) @ l["w"]).reshape(below_shape)
        op = (below_shape[2] - l["w"].shape[2]) % l["stride"]
        return F.conv_transpose2d(above.reshape(-1, l["w"].shape[0], *above.shape[2:]) if above.dim() == 4 else above,
                                  l["w"], stride=l["stride"], groups=l["groups"], output_padding=op)

    shapes = [x.shape]
    with torch.no_grad():
        a = x
        for l in layers:
            a = bu(l, a)
            shapes.append(a.shape)

    def step():
        with torch.no_grad():
            opt.zero_grad(set_to_none=False)
            core = len(layers) - 1
            tdn = [None] * (len(layers) + 1)
            t = F.one_hot(tasks, T).float()
            t = torch.relu(t @ task_head[1])
            tdn[core] = torch.relu(t @ task_head[0])
            for i in range(core - 1, 0, -1):
                tdn[i] = torch.relu(td(layers[i], tdn[i + 1].reshape(shapes[i + 1]), shapes[i]))
            acts = [x]
            for i, l in enumerate(layers):
                z = bu(l, acts[-1])
                if i < core:
                    z = torch.relu(z) * (tdn[i + 1].reshape(z.shape) > 0)
                acts.append(z)
            logits = acts[-1]
            delta = torch.softmax(logits, 1) - F.one_hot(labels, K).float()
            for i in range(len(layers) - 1, -1, -1):
                l, a = layers[i], acts[i]
                if l["kind"] == "linear":
                    l["w"].grad += delta.t() @ a.flatten(1) / n
                    l["b"].grad += delta.mean(0)
                else:
                    l["w"].grad += torch.nn.grad.conv2d_weight(a, l["w"].shape, delta, stride=l["stride"],
                                                               groups=l["groups"]) / n
                    l["b"].grad += delta.sum((2, 3)).mean(0)
                if i > 0:
                    delta = td(l, delta.reshape(shapes[i + 1]), shapes[i]) * (a > 0)
        opt.step()

    for l in layers:
        l["w"].grad = torch.zeros_like(l["w"])
        l["b"].grad = torch.zeros_like(l["b"])
    for _ in range(10):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) * 1e3 / steps
    print("pytorch %s %s: guided BU-TD step (SimpleNet, batch %d): %.3f ms/step (%d steps, %d threads)" %
          (dev, torch.__version__, n, ms, steps, torch.get_num_threads()))


if __name__ == "__main__":
    main()
