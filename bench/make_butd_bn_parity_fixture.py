#!/usr/bin/python3
"""Writes tests/fixtures/butd_guided_bn.safetensors, the PyTorch reference of one guided BU-TD
training step of the reference's celeb_a setup, scaled down, that tests/test_butd_parity.c compares
bioflex against: a ResNet with batch-norm (each BN with its own TD copy), shared weights,
per-task binary heads (one logit, BCE), trained by backprop (autograd) and Adam.

Written from ../shared/specs/butd-counterhebb.md (sections 1.4, 3, 5) in plain PyTorch eager ops.
Input [8, 3, 7, 6] (odd sizes exercise output_padding), 4 tasks, task head 72 -> 5 -> 4 (used
transposed, fixed), label = one attribute of the sample's task, 0 or 1:

    conv1 Conv2d(3, 4, 3, padding 1, no bias) + bn1          4 x 7 x 6
    layer1.0 BasicBlock(4 -> 4, stride 1)                     4 x 7 x 6
    layer2.0 BasicBlock(4 -> 6, stride 2, 1x1 downsample)     6 x 4 x 3
    head Linear(72, 1)

Step (train mode): pass 1 without grad (task head^T + ReLU, then down the core: conv^T, the TD
batch-norm with batch statistics, ReLU; in a block the sum splits), pass 2 with GaLU, the mean
BCE-with-logits loss, autograd backward, one Adam step (lr 1e-3). Then both passes again in eval
mode (running statistics everywhere) with the new weights. The file holds:

    input, tasks (I32), labels (I32)       the batch
    <name>                                 every initial weight and BN affine parameter, task_head.*
    expected.logits, expected.loss         pass 2 and the loss
    grad.<name>                            autograd's gradient of every trained parameter
    after1.<name>                          every trained parameter after the Adam step
    stats1.<bn>.running_mean|running_var|back_running_mean|back_running_var
                                           after the step (the stem's TD copy never runs: its
                                           output would be the image level, which gates nothing)
    eval.logits                            the eval-mode passes after the step

    /usr/bin/python3 bench/make_butd_bn_parity_fixture.py [output path]
"""
import math
import sys

import torch
import torch.nn.functional as F

from parity_fixture_util import fixture_path, write_fixture

N, T, C, H, W = 8, 4, 3, 7, 6
ADAM = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)


def uniform(shape, bound):
    return (torch.rand(*shape) * 2 - 1) * bound


class Norm:
    """A BU batch-norm over c channels and its TD copy over td_c channels (gamma 1, beta 0 fixed)."""

    def __init__(self, name, c, td_c):
        self.name = name
        self.gamma = (1 + 0.1 * torch.randn(c)).requires_grad_()  # not the init values, so they matter
        self.beta = (0.1 * torch.randn(c)).requires_grad_()
        self.rm, self.rv = torch.zeros(c), torch.ones(c)
        self.trm, self.trv = torch.zeros(td_c), torch.ones(td_c)

    def bu(self, x, train):
        return F.batch_norm(x, self.rm, self.rv, self.gamma, self.beta, training=train, momentum=0.1, eps=1e-5)

    def td(self, x, train):
        return F.batch_norm(x, self.trm, self.trv, None, None, training=train, momentum=0.1, eps=1e-5)


def conv_weight(c_out, c_in, k):
    return uniform((c_out, c_in, k, k), 1 / math.sqrt(c_in * k * k)).requires_grad_()


def conv_t(x, w, stride, pad, in_hw):
    k = w.shape[2]
    op = tuple((2 * pad + in_hw[d] - k) % stride for d in range(2))  # from the stored BU input shape
    return F.conv_transpose2d(x, w, stride=stride, padding=pad, output_padding=op)


class Block:
    def __init__(self, name, c_in, c_out, stride):
        self.name, self.stride = name, stride
        self.w1, self.w2 = conv_weight(c_out, c_in, 3), conv_weight(c_out, c_out, 3)
        self.n1, self.n2 = Norm(name + ".bn1", c_out, c_in), Norm(name + ".bn2", c_out, c_out)
        self.down = stride != 1 or c_in != c_out
        if self.down:
            self.wd = conv_weight(c_out, c_in, 1)
            self.nd = Norm(name + ".downsample.bn", c_out, c_in)

    def params(self):
        p = [(self.name + ".conv1.weight", self.w1), (self.name + ".conv2.weight", self.w2)]
        if self.down:
            p.append((self.name + ".downsample.weight", self.wd))
        return p

    def norms(self):
        return [self.n1, self.n2] + ([self.nd] if self.down else [])

    def td(self, above, in_hw, mid_hw, train):
        """Instruction pass: returns (TD activity at conv1's output, TD activity at the block input)."""
        td_u = torch.relu(self.n2.td(conv_t(above, self.w2, 1, 1, mid_hw), train))
        r = self.n1.td(conv_t(td_u, self.w1, self.stride, 1, in_hw), train)
        idt = self.nd.td(conv_t(above, self.wd, self.stride, 0, in_hw), train) if self.down else above
        return td_u, torch.relu(r + idt)

    def bu(self, x, td_u, td_out, train):
        u = torch.relu(self.n1.bu(F.conv2d(x, self.w1, stride=self.stride, padding=1), train)) * (td_u > 0)
        v = self.n2.bu(F.conv2d(u, self.w2, padding=1), train)
        ident = self.nd.bu(F.conv2d(x, self.wd, stride=self.stride), train) if self.down else x
        return torch.relu(v + ident) * (td_out > 0)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else fixture_path("butd_guided_bn.safetensors")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    stem_w = conv_weight(4, C, 3)
    stem_n = Norm("bn1", 4, C)
    blocks = [Block("layer1.0", 4, 4, 1), Block("layer2.0", 4, 6, 2)]
    head_w = uniform((1, 72), 1 / math.sqrt(72)).requires_grad_()
    head_b = uniform((1,), 1 / math.sqrt(72)).requires_grad_()
    task_head = [uniform((5, 72), 1 / math.sqrt(72)), uniform((T, 5), 1 / math.sqrt(5))]
    x = torch.randn(N, C, H, W)
    tasks = torch.tensor([0, 1, 2, 3, 0, 1, 2, 1])
    labels = torch.randint(0, 2, (N,))

    params = [("conv1.weight", stem_w)]
    for blk in blocks:
        params += blk.params()
    norms = [stem_n] + [n for blk in blocks for n in blk.norms()]
    params += [(n.name + ".weight", n.gamma) for n in norms] + [(n.name + ".bias", n.beta) for n in norms]
    params += [("head.weight", head_w), ("head.bias", head_b)]
    initial = [(name, p.detach().clone()) for name, p in params]
    initial += [("task_head.0.weight", task_head[0]), ("task_head.1.weight", task_head[1])]
    hw0, hw1 = (H, W), (4, 3)  # the stem and layer1 level, and layer2's

    def passes(train):
        with torch.no_grad():  # pass 1: the instruction
            t = F.one_hot(tasks, T).float()
            t = torch.relu(torch.relu(t @ task_head[1]) @ task_head[0]).reshape(N, 6, 4, 3)
            td_u2, td1 = blocks[1].td(t, hw0, hw1, train)
            td_u1, td0 = blocks[0].td(td1, hw0, hw0, train)
        a = torch.relu(stem_n.bu(F.conv2d(x, stem_w, padding=1), train)) * (td0 > 0)  # pass 2
        a = blocks[0].bu(a, td_u1, td1, train)
        a = blocks[1].bu(a, td_u2, t, train)
        return a.flatten(1) @ head_w.t() + head_b

    logits = passes(True)
    loss = F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    loss.backward()
    grads = [("grad." + name, p.grad.detach().clone()) for name, p in params]
    opt = torch.optim.Adam([p for _, p in params], **ADAM)
    opt.step()
    after = [("after1." + name, p.detach().clone()) for name, p in params]
    stats = []
    for n in norms:
        stats += [("stats1." + n.name + ".running_mean", n.rm.clone()), ("stats1." + n.name + ".running_var", n.rv.clone())]
        stats += [("stats1." + n.name + ".back_running_mean", n.trm.clone()),
                  ("stats1." + n.name + ".back_running_var", n.trv.clone())]
    with torch.no_grad():
        eval_logits = passes(False)

    tensors = [("input", x), ("tasks", tasks.to(torch.int32)), ("labels", labels.to(torch.int32))] + initial
    tensors += [("expected.logits", logits.detach()), ("expected.loss", loss.detach())] + grads + after + stats
    tensors += [("eval.logits", eval_logits)]
    metadata = {"torch_version": torch.__version__, "generator": "bench/make_butd_bn_parity_fixture.py",
                "description": "one guided BU-TD backprop step with batch-norm (TD copies) and BCE heads + Adam"}
    write_fixture(out, tensors, metadata, ["loss %.6f" % float(loss)])


if __name__ == "__main__":
    main()
