#!/usr/bin/env python3
"""PyTorch eager reference for bench/train_throughput.c: the same model (torchvision-layout
VGG-16-BN with the FlexNet classifier, or ResNet-18/50), the same synthetic batch and the same
step (forward, cross-entropy, backward, SGD with momentum), timed the same way.

    python3 bench/pytorch_train.py --arch vgg16 --batch 128 --size 224 --classes 100 --precision fp32
"""
import argparse
import time

import torch
import torch.nn as nn

VGG = {
    "vgg6": [64, 64, "M", 128, 128, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg(name, classes, size, dropout=0.5):
    layers, c, hw = [], 3, size
    for v in VGG[name]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            hw //= 2
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
    flat = c * hw * hw
    hidden = flat if flat <= 4096 else 4096
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(),
                         nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(True), nn.Dropout(dropout),
                                       nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
                                       nn.Linear(hidden, classes)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--precision", choices=["fp32", "tf32"], default="fp32")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    tf32 = a.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    dev = "cuda"
    if a.arch.startswith("resnet"):
        import torchvision
        model = getattr(torchvision.models, a.arch)(num_classes=a.classes)
    else:
        model = vgg(a.arch, a.classes, a.size)
    model = model.to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(a.batch, 3, a.size, a.size, device=dev) * 2 - 1
    y = torch.arange(a.batch, device=dev) % a.classes
    loss_fn = nn.CrossEntropyLoss()
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"pytorch {torch.__version__} cuda {a.arch} {a.precision} batch {a.batch} {a.size}x{a.size}: "
          f"{a.steps * a.batch / dt:.1f} images/s, {1e3 * dt / a.steps:.1f} ms/step")


if __name__ == "__main__":
    main()
