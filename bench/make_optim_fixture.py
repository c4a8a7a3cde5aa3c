#!/usr/bin/python3
"""Writes tests/fixtures/optim_adam.safetensors, the PyTorch reference that tests/test_optim_parity.c
compares bioflex's Adam and AdamW update (ops.h adam_update; src/kernels/optim_cpu.c, optim.cu)
against: torch.optim.Adam and torch.optim.AdamW themselves, stepped on one small tensor with given
gradients.

    params0            [61] initial values (randn * 2; three of them 0, one large)
    grads              [STEPS, 61] the gradient of each step (randn * 0.1; element 0 always 0, element 1
                       0 from step 3 on: only the weight decay moves them)
    lrs                [STEPS] the learning rate of each step (lr * 0.95^t, set in param_groups before
                       step t as ExponentialLR would: the rate changes between steps, the step count not)
then for each variant <name>: <name>.params [STEPS, 61] (the parameter after each step),
<name>.exp_avg and <name>.exp_avg_sq [61] (after the last step). Variants (betas 0.9/0.999, eps 1e-8):

    adam_wd      Adam(lr 0.01, weight_decay 0.1): L2 coupled, added to the gradient before the moments
    adamw_wd     AdamW(lr 0.01, weight_decay 0.1): the same steps with decoupled decay, for contrast
    adam_butd    Adam(lr 1e-4, weight_decay 0.01): the BU-TD reference's "asymmetric + weight decay"
                 setting (main.py WeightDecay = True on config.json; specs/butd-counterhebb.md 2.3)
    adam_nowd    Adam(lr 1e-3, weight_decay 0): the BU-TD configs' default

61 elements: PyTorch's CPU kernels run 8- or 16-wide vectors and a scalar tail, both reached.

Rerun (torch 1.13 here):  /usr/bin/python3 bench/make_optim_fixture.py [output path]
"""
import sys

import torch

from parity_fixture_util import fixture_path, write_fixture

N, STEPS = 61, 6
VARIANTS = [
    ("adam_wd", torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    ("adamw_wd", torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    ("adam_butd", torch.optim.Adam, dict(lr=1e-4, weight_decay=0.01)),
    ("adam_nowd", torch.optim.Adam, dict(lr=1e-3, weight_decay=0.0)),
]


def run(cls, kwargs, params0, grads, gamma):
    p = torch.nn.Parameter(params0.clone())
    opt = cls([p], betas=(0.9, 0.999), eps=1e-8, **kwargs)
    after, lrs = [], []
    for t in range(STEPS):
        lr = kwargs["lr"] * gamma ** t
        for group in opt.param_groups:
            group["lr"] = lr
        lrs.append(lr)
        p.grad = grads[t].clone()
        opt.step()
        after.append(p.detach().clone())
    state = opt.state[p]
    return torch.stack(after), state["exp_avg"].clone(), state["exp_avg_sq"].clone(), lrs


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else fixture_path("optim_adam.safetensors")
    gen = torch.Generator().manual_seed(0)
    params0 = torch.randn(N, generator=gen) * 2
    params0[[2, 30, 60]] = 0.0
    params0[7] = 50.0
    grads = torch.randn(STEPS, N, generator=gen) * 0.1
    grads[:, 0] = 0.0
    grads[2:, 1] = 0.0
    gamma = 0.95
    tensors = [("params0", params0), ("grads", grads)]
    summary, results = [], {}
    for name, cls, kwargs in VARIANTS:
        after, exp_avg, exp_avg_sq, lrs = run(cls, kwargs, params0, grads, gamma)
        results[name] = after
        # the per-step rates as float32: what bioflex's op receives
        tensors += [(name + ".lrs", torch.tensor(lrs, dtype=torch.float32)), (name + ".params", after),
                    (name + ".exp_avg", exp_avg), (name + ".exp_avg_sq", exp_avg_sq)]
        summary.append("%-10s %s%s: element 7 (50.0) after %d steps %.7g, element 0 (zero gradient) %.7g" %
                       (name, cls.__name__, kwargs, STEPS, after[-1, 7].item(), after[-1, 0].item()))
    diff = (results["adam_wd"] - results["adamw_wd"]).abs().max().item()
    summary.append("adam_wd vs adamw_wd: largest difference %.4g" % diff)
    write_fixture(path, tensors, {"torch_version": torch.__version__, "generator": "bench/make_optim_fixture.py",
                                  "betas": "0.9,0.999", "eps": "1e-8", "gamma": str(gamma)}, summary)


if __name__ == "__main__":
    main()
