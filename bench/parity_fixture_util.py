"""What the PyTorch-parity fixture scripts share (bench/make_parity_fixture.py,
bench/make_flex_parity_fixture.py, bench/make_spiking_parity_fixture.py): the safetensors writer
(by hand: needs only torch, no safetensors package) and the recording of two optimiser steps in
train mode, each exactly what the C tests do:

    step A: zero_grad, forward, loss, backward (the logits, loss and gradients recorded), step
    step B: zero_grad, forward, loss, backward, step

Imported by the scripts from their own folder; not a program.
"""
import json
import os
import struct
import sys

import torch


def fixture_path(name):
    """tests/fixtures/<name>, the default output of a fixture script."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", name)


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, torch tensor) in file order; F32, I32 and I64 only. Creates the
    folder of path when missing; writes path.tmp and renames it."""
    dtypes = {torch.float32: "F32", torch.int32: "I32", torch.int64: "I64"}
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes() if t.dim() > 0 else t.reshape(1).numpy().tobytes()
        assert sys.byteorder == "little"
        assert name not in header, name
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def state_entries(model, prefix):
    """Every state_dict entry (parameters, running statistics, num_batches_tracked) under prefix."""
    return [(prefix + name, t.detach().clone()) for name, t in model.state_dict().items()]


def two_steps(model, opt, criterion, x, y, prefix="", record=True, stats1=False, extra=None, after_step_a=None,
              after="after2."):
    """Runs steps A and B in train mode; returns (tensors, loss of step A). tensors, in this order,
    all under prefix:
        expected.logits, expected.loss, grad.<param>   step A's forward and backward (when record)
        stats1.<buffer>                                 every buffer after step A's forward (when stats1)
        extra(model)                                    more (name, tensor) of step A's forward (when given)
        after_step_a(model)                             (name, tensor) after step A's update (when given)
        <after><state_dict name>                        the whole state_dict after step B (after: "after2.")"""
    tensors, step_a = [], []
    buffers = [k for k, _ in model.named_buffers()]
    model.train()
    loss_a = None
    for step in range(2):
        opt.zero_grad()
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        if step == 0:
            loss_a = float(loss)
            if record:
                tensors.append((prefix + "expected.logits", logits.detach().clone()))
                tensors.append((prefix + "expected.loss", loss.detach().clone()))
                for name, p in model.named_parameters():
                    tensors.append((prefix + "grad." + name, p.grad.detach().clone()))
            if stats1:
                state = model.state_dict()
                tensors += [(prefix + "stats1." + b, state[b].detach().clone()) for b in buffers]
            if extra is not None:
                tensors += [(prefix + name, t) for name, t in extra(model)]
        opt.step()
        if step == 0 and after_step_a is not None:
            step_a = [(prefix + name, t) for name, t in after_step_a(model)]
    return tensors + step_a + state_entries(model, prefix + after), loss_a


def sgd_variant(prefix, seed, make_model, input_shape, classes, criterion, sgd, **recording):
    """One variant of a fixture under prefix: from torch.manual_seed(seed), the model make_model(),
    a batch (randn input_shape, labels randint in [0, classes)), then prefix + input, labels, the
    initial state_dict and two_steps(..., **recording) of SGD(**sgd). Returns (model, tensors, loss
    of step A)."""
    torch.manual_seed(seed)
    model = make_model()
    x = torch.randn(*input_shape)
    y = torch.randint(0, classes, (input_shape[0],))
    tensors = [(prefix + "input", x), (prefix + "labels", y.to(torch.int32))] + state_entries(model, prefix)
    opt = torch.optim.SGD(model.parameters(), **sgd)
    recorded, loss = two_steps(model, opt, criterion, x, y, prefix=prefix, **recording)
    return model, tensors + recorded, loss


def variants_metadata(generator, variants, seeds, description):
    """The metadata of a fixture with variants: torch version, generator script, variant names, seeds."""
    return {
        "torch_version": torch.__version__,
        "generator": generator,
        "variants": ",".join(variants),
        "seeds": json.dumps(seeds, separators=(",", ":")),
        "description": description,
    }


def write_fixture(path, tensors, metadata, summary=()):
    """write_safetensors, then the line "wrote ..." and the summary lines."""
    write_safetensors(path, tensors, metadata)
    print("wrote %s: %d tensors, %d bytes" % (path, len(tensors), os.path.getsize(path)))
    for line in summary:
        print("  " + line)
