#!/usr/bin/env python3
"""torchvision side of bench/data_wait.sh: the data-wait fraction of a training step with an
ImageFolder + DataLoader (Pillow decoding in worker processes).

    python3 bench/data_wait_torchvision.py TREE [--device cuda] [--batch 128] [--workers W]
        [--steps 60] [--warmup 10] [--arch vgg16] [--size 224] [--precision fp32] [--limit N]

TREE/train/<class>/*.JPEG (bioflex-make-jpeg-tree's layout). The pipeline is the usual ImageNet
one: RandomResizedCrop(size) + RandomHorizontalFlip + ToTensor + Normalize(ImageNet mean/std) in
DataLoader(num_workers=W, pin_memory on CUDA, persistent workers, shuffle, drop_last), then
cross-entropy, backward and an SGD-with-momentum step. Each step is timed from asking the loader
for a batch to the end of the optimiser step, with torch.cuda.synchronize() at the end so the step
time is the device's, not the launch queue's; the data wait is the time in next(it) plus the
.to(device, non_blocking=True) calls. The first --warmup steps (worker start-up, cuDNN autotuning)
are left out. Prints one line in data_wait.sh's format.

--arch vgg6|vgg11|vgg16 builds bioflex's VGG (bench/pytorch_train.py: VGG-BN, no adaptive pool,
the FlexNet classifier), which at 224x224 is torchvision's vgg16_bn layer for layer, so both sides
train the same network at every size; any other name is a torchvision.models constructor
(resnet18, resnet50, vgg16 without batch-norm, ...)."""
import argparse
import os
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torchvision
    from torchvision import datasets, transforms
except ImportError as e:
    sys.exit(f"data_wait_torchvision.py: needs PyTorch and torchvision ({e}); install them "
             f"(pip install torch torchvision, or apt-get install python3-torchvision) or use another --python")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_train import VGG, vgg  # noqa: E402  the model bench/vgg16_side_by_side.sh compares

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tree", help="directory with train/<class>/*.JPEG")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader num_workers")
    p.add_argument("--steps", type=int, default=60, help="training steps, warm-up included")
    p.add_argument("--warmup", type=int, default=10, help="first steps left out of the figures")
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--size", type=int, default=224, help="RandomResizedCrop size")
    p.add_argument("--precision", choices=["fp32", "tf32"], default="fp32")
    p.add_argument("--limit", type=int, default=0,
                   help="train on the first N images of the sorted tree, as bioflex's train_limit (0 = all)")
    a = p.parse_args()
    if a.steps <= a.warmup:
        p.error(f"--steps {a.steps} must exceed --warmup {a.warmup}")
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("data_wait_torchvision.py: --device cuda but torch.cuda.is_available() is False")
    cuda = a.device == "cuda"
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    torch.backends.cudnn.benchmark = True

    transform = transforms.Compose([
        transforms.RandomResizedCrop(a.size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    full = datasets.ImageFolder(os.path.join(a.tree, "train"), transform=transform)
    classes = len(full.classes)  # the model's outputs, as bioflex: every class of the tree
    data = torch.utils.data.Subset(full, range(min(a.limit, len(full)))) if a.limit else full
    if len(data) < a.steps * a.batch:
        sys.exit(f"data_wait_torchvision.py: {len(data)} images < {a.steps} steps x batch {a.batch} "
                 f"(one epoch, no epoch boundary, is measured)")
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=True, drop_last=True,
                                         num_workers=a.workers, pin_memory=cuda,
                                         persistent_workers=a.workers > 0)

    model = vgg(a.arch, classes, a.size) if a.arch in VGG else getattr(torchvision.models, a.arch)(num_classes=classes)
    model = model.to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    it = iter(loader)
    step_s = wait_s = 0.0
    for step in range(a.steps):
        t0 = time.perf_counter()
        x, y = next(it)
        x = x.to(dev, non_blocking=True)
        y = y.to(dev, non_blocking=True)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step >= a.warmup:
            wait_s += t1 - t0
            step_s += t2 - t0
    n = a.steps - a.warmup
    print(f"torchvision {torchvision.__version__} (torch {torch.__version__}) {a.arch} {a.device} {a.precision} "
          f"batch {a.batch} {a.size}x{a.size} workers {a.workers}: {n * a.batch / step_s:.1f} images/s, "
          f"{1e3 * step_s / n:.1f} ms/step, data wait {1e3 * wait_s / n:.2f} ms/step = "
          f"{100 * wait_s / step_s:.1f} % of the step ({n} steps after {a.warmup} warm-up)")


if __name__ == "__main__":
    main()
