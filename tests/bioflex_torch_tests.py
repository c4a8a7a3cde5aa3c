#!/usr/bin/env python3
"""ctest bioflex_torch: tools/bioflex_torch.py against bioflex itself.

    bioflex_torch_tests.py TRAIN EVAL SRC [--keep DIR] [--only NAME,...]

For each case a small network is trained for one epoch with bioflex-train (procedural data or
Fashion-MNIST with data.train_limit / test_limit; the V1-constrained ResNets' components alone and
combined, and spiking LIF / IF networks, whose logits layer is the readout), bioflex-eval dumps the
logits layer and the normalised input of every test image (--activations) and the exact top-1 count
(--results), and the module tools/bioflex_torch.py builds from the run directory (config.ini,
checkpoints/latest, strict load) must give the same logits (max |diff| <= 1e-4 x max |logit|) and
the same top-1 on every test image, and the parameter count of bioflex-train --dry-run. Negative
controls: the same checkpoint loaded with a detail deliberately wrong (the flex channel rule, the
mask, the flex sites, the classifier, the DoG amplitude, the channel distance, the polar padding and
resize, the neuron's reset, decay, steps and readout) must fail the comparison or the strict load,
and configs the tool does not build must be refused naming the key. Also: --dry-run counts of large
VGGs (the 4096 cap of the classifier) and of the V1 ResNet-50s at ImageNet's 1000 classes with no
training, the loader's normalisation of Fashion-MNIST against normalize(), and the command line
(--summary, --out as torch.save and as TorchScript). Exit 0 on success, 1 on a failure.
"""
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FASHION = "/usr/share/datasets/fashion-mnist"
TOL = 1e-4

PROC = ["data.dataset=procedural", "data.procedural_train=64", "data.procedural_test=32",
        "data.batch_size=32"]
FMNIST = ["data.dataset=fashion_mnist", "data.path=" + FASHION, "data.train_limit=256", "data.test_limit=48",
          "data.batch_size=64"]


def proc(size, channels=3, classes=10):
    return PROC + ["data.procedural_size=%d" % size, "data.procedural_channels=%d" % channels,
                   "data.procedural_classes=%d" % classes]


def v1(size, *keys, arch="resnet50"):
    """A V1-constrained ResNet on size x size procedural images, 8 to train (one step), 8 to test."""
    return proc(size) + ["data.procedural_train=8", "data.procedural_test=8", "data.batch_size=8",
                         "model.arch=" + arch] + list(keys)


FLEX = ["model.flex=true", "model.conv_init=fan_in"]
# name, the keys of its run, the logits layer, negative controls (overrides that must break it)
CASES = [
    ("cnn", FMNIST + ["model.arch=cnn", "model.channels=32,64", "model.hidden=128", "model.dropout=0.2"],
     "classifier.3", [["model.hidden=0"]]),
    ("cnn_flex_fully", FMNIST + ["model.arch=cnn", "model.channels=8,16", "model.hidden=32"] + FLEX +
     ["model.fully_flex=true"], "classifier.3", [["model.fully_flex=false"]]),
    ("vgg6", proc(12) + ["model.arch=vgg6"], "classifier.6", [["model.flex=true"]]),
    ("vgg6_flex_expand", proc(12) + ["model.arch=vgg6", "model.flex_channels=expand"] + FLEX, "classifier.6",
     [["model.flex_channels=bilinear"], ["model.flex_layers=0,1,2"]]),
    ("vgg6_flex_bilinear", proc(12) + ["model.arch=vgg6", "model.flex_channels=bilinear"] + FLEX, "classifier.6",
     [["model.flex_channels=expand"]]),
    ("vgg11_flex_sites", proc(32) + ["model.arch=vgg11", "model.flex_layers=0,2,5"] + FLEX, "classifier.6",
     [["model.flex_layers=0,2,4"], ["model.flex_layers=0,1,5"]]),
    ("vgg16", proc(32, classes=5) + ["model.arch=vgg16", "data.procedural_train=32"], "classifier.6", []),
    ("resnet18", proc(32) + ["model.arch=resnet18", "data.procedural_train=32"], "fc", []),
    ("resnet50", proc(32) + ["model.arch=resnet50", "data.procedural_train=32"], "fc", []),
    ("resnet20_flex", proc(16) + ["model.arch=resnet20"] + FLEX, "fc", [["model.flex_channels=bilinear"]]),
    ("pf_vgg6_mask", proc(12) + ["model.arch=plasticflex_vgg6", "model.flex_joint=mask",
                                 "model.flex_logits_bn=true", "model.flex_channels=bilinear"] + FLEX, "fc3",
     [["model.flex_mask=sigmoid_mul"], ["model.flex_logits_bn=false"]]),
    ("pf_vgg6_max", proc(12) + ["model.arch=plasticflex_vgg6", "model.flex_joint=channelwise_max"] + FLEX, "fc3",
     [["model.flex_joint=mask", "model.threshold_mode=frozen_random"]]),
    ("pf_simple_flex_mask", proc(16) + ["model.arch=plasticflex_simple_flex", "model.flex_joint=mask",
                                        "model.flex_mask=sigmoid_mul", "model.flex_mask_factor=2",
                                        "model.threshold_mode=frozen_random"] + FLEX, "fc3",
     [["model.flex_mask_factor=1"]]),
    ("pf_simple_conv", proc(16) + ["model.arch=plasticflex_simple_conv"], "fc2", []),
    # spiking networks (direct encoding): LIF / IF over T steps, the readout layer the mean over the steps
    ("snn_cnn_lif", proc(16) + ["model.arch=cnn", "model.channels=8,16", "model.hidden=32", "spiking.neuron=lif",
                                "spiking.time_steps=4", "spiking.decay=0.9", "spiking.threshold=0.8"], "readout",
     [["spiking.reset=soft"], ["spiking.time_steps=3"], ["spiking.decay=0.95"], ["spiking.neuron=if"]]),
    ("snn_pf_vgg6_if_flex", proc(12) + ["model.arch=plasticflex_vgg6", "model.flex_joint=channelwise_max",
                                        "spiking.neuron=if", "spiking.reset=soft", "spiking.readout=spike_count",
                                        "spiking.time_steps=3"] + FLEX, "readout",
     [["spiking.readout=mean_output"], ["spiking.reset=hard"]]),
    # the V1-constrained ResNet's components (v1-constrained.md), each alone at the smallest size bioflex
    # takes (cortical magnification needs 64x64), then composite a (all four), few images (ResNet-50 on the
    # CPU); the normalisations and the polar transform apply to resnet18 too, where they cost less
    ("v1_center_surround", v1(32, "model.center_surround=true"), "fc", [["model.dog_amplitude=paper"]]),
    ("v1_local_rf", v1(32, "model.local_rf=true"), "fc", [["model.local_rf=false"]]),
    ("v1_tuned", v1(32, "model.divisive_norm=tuned", arch="resnet18"), "fc", [["model.oci_distance=similar"]]),
    ("v1_cirincione", v1(32, "model.divisive_norm=cirincione", arch="resnet18"), "fc",
     [["model.divisive_norm=tuned"]]),
    ("v1_cortical", v1(64, "model.cortical_magnification=true", "model.polar_padding=both",
                       "model.polar_antialias=true", arch="resnet18"), "fc",
     [["model.polar_padding=angle"], ["model.polar_padding=circular"], ["model.polar_antialias=false"]]),
    ("v1_composite_a", v1(64, "model.center_surround=true", "model.local_rf=true", "model.divisive_norm=tuned",
                          "model.cortical_magnification=true"), "fc",
     [["model.dog_amplitude=paper"], ["model.cortical_magnification=false"]]),
]
# --dry-run parameter counts only (no training): the classifier's 4096 cap, ImageNet shapes
COUNTS = [
    ("vgg6 28x28 (hidden 4096)", FMNIST + ["model.arch=vgg6"]),
    ("vgg16 224x224, 100 classes", ["data.dataset=imagenet100", "data.image_size=224", "model.arch=vgg16"]),
    ("flex vgg11 64x64", proc(64) + ["model.arch=vgg11", "model.flex=true"]),
    ("fully flex vgg16 32x32", proc(32) + ["model.arch=vgg16", "model.flex=true", "model.fully_flex=true"]),
    ("resnet50 64x64", proc(64, classes=100) + ["model.arch=resnet50"]),
    ("flex resnet18 32x32", proc(32) + ["model.arch=resnet18", "model.flex=true"]),
    ("V1 composite a 64x64, 1000 classes", ["data.dataset=imagenet", "data.image_size=64", "model.arch=resnet50",
                                            "model.center_surround=true", "model.local_rf=true",
                                            "model.divisive_norm=tuned", "model.cortical_magnification=true"]),
    ("V1 resnet50_div_norm 64x64, 1000 classes", ["data.dataset=imagenet", "data.image_size=64",
                                                  "model.arch=resnet50", "model.divisive_norm=cirincione"]),
]
# configs the tool must refuse, and the "[section] key = value" its message must name
REFUSALS = [
    (["spiking.neuron=lif", "spiking.encoding=rate", "data.normalize=false"], "[spiking] encoding = rate"),
    (["spiking.neuron=lif", "model.arch=resnet18"], "[spiking] neuron = lif"),
    (["model.flex=true", "model.flex_joint=mask", "model.flex_mask=stochastic_fpbp"],
     "[model] flex_mask = stochastic_fpbp"),
    (["model.flex=true", "model.flex_joint=mask", "model.threshold_mode=resample_each_forward"],
     "[model] threshold_mode = resample_each_forward"),
    (["model.flex=true", "model.flex_joint=mask", "model.flex_logits=spatial_attention"],
     "[model] flex_logits = spatial_attention"),
    (["model.arch=resnet50", "model.flex=true", "model.divisive_norm=tuned"], "[model] flex = true"),
    (["model.arch=resnet18", "model.center_surround=true"], "[model] center_surround = true"),
    (["model.arch=vgg6", "model.divisive_norm=cirincione"], "[model] divisive_norm = cirincione"),
    (["butd.network=fc"], "[butd] network = fc"),
    (["fragments.network=lateral"], "[fragments] network = lateral"),
    (["model.flex=true", "model.static_routing=routing.json"], "[model] static_routing = routing.json"),
]


def main():
    args = sys.argv[1:]
    keep = only = None
    if "--keep" in args:
        i = args.index("--keep")
        keep = args[i + 1]
        del args[i:i + 2]
    if "--only" in args:
        i = args.index("--only")
        only = set(args[i + 1].split(","))
        del args[i:i + 2]
    if len(args) != 3:
        print(__doc__)
        return 2
    train, eval_, src = args
    sys.path.insert(0, os.path.join(src, "tools"))
    import bioflex_torch as bt

    torch.set_num_threads(2)
    work = keep or tempfile.mkdtemp(prefix="bioflex_torch_")
    os.makedirs(work, exist_ok=True)
    failures = []
    t_start = time.time()

    def check(what, ok, detail=""):
        print("%s %s%s" % ("ok  " if ok else "FAIL", what, (": " + detail) if detail else ""))
        if not ok:
            failures.append(what)

    def run(cmd):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s" % (" ".join(cmd), r.returncode, r.stdout[-3000:]))
        return r.stdout

    base = os.path.join(work, "base.ini")
    with open(base, "w") as f:
        f.write("[run]\ndevice = cpu\nepochs = 1\nseed = 3\nthreads = 2\nlog_interval = 1000\neval_every = 1\n"
                "[optim]\noptimizer = adamw\nlr = 0.002\n[data]\nloader_threads = 1\n")

    def sets(keys):
        return [a for k in keys for a in ("--set", k)]

    def dry_run_total(keys):
        out = run([train, "--dry-run", base] + sets(keys + ["run.dir=" + os.path.join(work, "dry")]))
        m = re.search(r"^total: (\d+) parameters", out, re.M)
        return int(m.group(1))

    def compare(model, x, ref):
        with torch.no_grad():
            y = model(x)
        ref = ref.reshape(y.shape)
        diff = (y - ref).abs().max().item()
        scale = max(ref.abs().max().item(), 1e-30)
        return diff, diff / scale, bool((y.argmax(1) == ref.argmax(1)).all()), y

    worst = {}
    for name, keys, last, negatives in CASES:
        if only and name not in only:
            continue
        if name.startswith("cnn") and not os.path.isfile(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")):
            print("skip %s: no Fashion-MNIST in %s" % (name, FASHION))
            continue
        t0 = time.time()
        rundir = os.path.join(work, name)
        shutil.rmtree(rundir, ignore_errors=True)
        try:
            run([train, base] + sets(keys + ["run.dir=" + rundir]))
            acts, res = os.path.join(rundir, "acts.safetensors"), os.path.join(rundir, "results.json")
            tests = int(next(k.split("=")[1] for k in keys[::-1] if k.startswith(("data.test_limit=",
                                                                                   "data.procedural_test="))))
            run([eval_, "--checkpoint", rundir, "--activations", acts, "--results", res] +
                sets(["analysis.activation_images=%d" % tests, "analysis.activation_layers=" + last]) +
                [os.path.join(rundir, "config.ini")])
        except RuntimeError as e:
            check(name + ": bioflex run", False, str(e))
            continue
        tensors, _ = bt.read_safetensors(acts)
        x, ref = torch.from_numpy(tensors["input"]), torch.from_numpy(tensors[last])
        with open(res) as f:
            correct = json.load(f)["test"]["correct_top1"]
        try:
            model = bt.load(rundir)  # config.ini and checkpoints/latest of the run directory
        except (RuntimeError, ValueError) as e:
            check(name + ": load", False, str(e)[:300])
            continue
        diff, rel, same_top1, y = compare(model, x, ref)
        labels = torch.from_numpy(tensors["labels"].astype(np.int64))
        ours = int((y.argmax(1) == labels).sum())
        worst[name] = (diff, rel)
        check("%s: logits (%d images)" % (name, x.shape[0]), rel <= TOL and same_top1,
              "max |diff| %.3g, relative %.3g, max |logit| %.3g, top-1 %s" % (diff, rel, ref.abs().max().item(),
                                                                            "equal" if same_top1 else "DIFFERS"))
        check("%s: top-1 count" % name, ours == correct, "PyTorch %d, bioflex-eval --results %d of %d" %
              (ours, correct, x.shape[0]))
        total = dry_run_total(keys)
        check("%s: parameter count" % name, bt.parameter_count(model) == total,
              "%d, bioflex-train --dry-run %d" % (bt.parameter_count(model), total))
        for wrong in negatives:
            try:
                bad = bt.load(rundir, overrides=wrong)
            except (RuntimeError, ValueError) as e:
                check("%s: refused with %s" % (name, " ".join(wrong)), True, str(e).splitlines()[0][:150])
                continue
            d, r, same, _ = compare(bad, x, ref)
            check("%s: detected with %s" % (name, " ".join(wrong)), r > TOL,
                  "relative %.3g%s" % (r, "" if same else ", top-1 differs"))
        if name == "cnn":  # the loader's normalisation of the IDX file, against normalize()
            with gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")) as f:
                raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:x.shape[0]]
            mine = bt.normalize(torch.from_numpy(raw.copy()), bt.Config(os.path.join(rundir, "config.ini")))
            d = (mine - x).abs().max().item()
            check("cnn: normalize() of the IDX images = bioflex's input", d <= 1e-6, "max |diff| %.3g" % d)
        if name == "vgg6_flex_expand":  # the command line: --summary, torch.save and TorchScript
            tool = os.path.join(src, "tools", "bioflex_torch.py")
            for flag, path in (([], os.path.join(rundir, "m.pt")),
                               (["--torchscript"], os.path.join(rundir, "m.ts"))):
                out = run([sys.executable, tool, rundir, "--summary", "--out", path] + flag)
                m = re.search(r"^total: (\d+) parameters", out, re.M)
                check("command line %s: count" % (" ".join(flag) or "torch.save"),
                      m is not None and int(m.group(1)) == total, m.group(0) if m else out[-300:])
                saved = torch.jit.load(path) if flag else torch.load(path)
                with torch.no_grad():
                    d = (saved(x) - y).abs().max().item()
                check("command line %s: the saved module's logits" % (" ".join(flag) or "torch.save"), d == 0.0,
                      "max |diff| to load()'s %.3g" % d)
        print("     (%s: %.1f s)" % (name, time.time() - t0))

    if not only:
        for what, keys in COUNTS:
            total = dry_run_total(keys)
            model = bt.build(bt.Config(base, keys))
            check("count %s" % what, bt.parameter_count(model) == total,
                  "%d, bioflex-train --dry-run %d" % (bt.parameter_count(model), total))
            del model
        for keys, named in REFUSALS:
            try:
                bt.build(bt.Config(base, proc(16) + keys))
                check("refuses %s" % named, False, "built")
            except bt.Refused as e:
                check("refuses %s" % named, named in str(e), str(e)[:120])

    print("worst relative logit difference per case: " +
          ", ".join("%s %.2g" % (k, v[1]) for k, v in worst.items()))
    print("%d failure(s) in %.0f s" % (len(failures), time.time() - t_start))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
