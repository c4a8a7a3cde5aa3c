#!/usr/bin/env python3
"""make_celeba_fixture.py - writes a small CelebA-format directory for smoke runs of
[data] dataset = celeba (the ctest tests/test_multi_task_data.c writes its own in C).

    tools/make_celeba_fixture.py DIR [--images 48]

DIR gets img_align_celeba/000001.jpg ... (178x218 RGB JPEGs, quality 95), list_attr_celeba.txt
(count, 40 attribute names, then one line of -1/1 per image) and list_eval_partition.txt
(0 train, 1 valid, 2 test: every 5th image valid, the next test). Image content is a smooth
pattern whose brightness follows attribute 0, so a model can learn it. Needs Pillow."""
import argparse
import math
import os

from PIL import Image

ATTRIBUTES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
              "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
              "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
              "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
              "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
W, H = 178, 218


def attribute(i, k):
    return 1 if (i * 13 + k * 7) % 5 < 2 else -1


def partition(i):
    return 1 if i % 5 == 3 else 2 if i % 5 == 4 else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument("--images", type=int, default=48)
    a = p.parse_args()
    os.makedirs(os.path.join(a.dir, "img_align_celeba"), exist_ok=True)
    with open(os.path.join(a.dir, "list_attr_celeba.txt"), "w") as attr, \
            open(os.path.join(a.dir, "list_eval_partition.txt"), "w") as part:
        attr.write(f"{a.images}\n{' '.join(ATTRIBUTES)}\n")
        for i in range(a.images):
            name = f"{i + 1:06d}.jpg"
            base = 160 if attribute(i, 0) > 0 else 96
            img = Image.new("RGB", (W, H))
            img.putdata([tuple(int(max(0, min(255, base + 60 * math.sin(0.03 * (x + 3 * i) + c) * math.cos(0.025 * y))))
                               for c in range(3)) for y in range(H) for x in range(W)])
            img.save(os.path.join(a.dir, "img_align_celeba", name), quality=95)
            attr.write(name + "".join(f" {attribute(i, k):2d}" for k in range(40)) + "\n")
            part.write(f"{name} {partition(i)}\n")
    print(f"wrote {a.images} images to {a.dir}")


if __name__ == "__main__":
    main()
