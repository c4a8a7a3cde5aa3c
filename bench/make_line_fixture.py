#!/usr/bin/python3
"""Writes tests/fixtures/line_stimuli.safetensors, the Python/PIL reference that tests/test_line_stimuli.c
compares bioflex's Net Fragments line stimuli (src/host/line_stimuli.c, include/bioflex/fragments_data.h)
against. Written from the specification (../shared/specs/netfragments.md 1.2, 1.4, 5.1, 7a), with
CPython's own `random` module and PIL's own ImageDraw.line (Pillow 9.4), since the C code must match
exactly those two:

    training line (1.2)  random() < 0.5 ? (2, y)-(30, 32-y) : (x, 2)-(32-x, 30), y or x = randint(2, 30)
    evaluation (5.1)     (2,16)-(30,16), then both endpoints one step counter-clockwise per line along
                         the perimeter of [2,30]^2
    image (1.1)          ImageDraw.line(coords, fill=255, width=1) on Image.new("L", (32, 32), 0)
    interrupt (1.4)      blank n = min(k, #pixels - 2) row-major line pixels around the one nearest (L1)
                         to the integer centre, from index i* - n//2

Tensors (coords are rows (x1, y1, x2, y2), x = column; an image is I32 [32], bit c of word r the pixel at
row r, column c: the writer has no U8):
    random.seed<S>.random        I64 [8]       random() * 2**53 (exact) of 8 draws after random.seed(S)
    random.seed<S>.randint       I32 [16]      randint(2, 30) of 16 draws after a fresh random.seed(S)
    random.seed<S>.randint_wide  I32 [12]      randint(a_i, b_i), a fresh seed, ranges randint_ranges
    random.randint_ranges        I32 [12, 2]   (a_i, b_i): widths 1, 2, 3, 29, 32, 2001, 2^16, 2^31 - 1, 2^32 - 1, 2^32
    train.lines                  I32 [1000, 4] the first 1000 training lines after random.seed(1)
    train.all_lines              I32 [58, 4]   every line 1.2 can draw: first branch y1 = 2..30, then the
                                               second x1 = 2..30 (the diagonals twice; 56 distinct images)
    train.all_images             I32 [58, 32]
    eval.lines, eval.images      I32 [60, 4], [60, 32]   the 60 evaluation lines (the stored n_samples)
    eval.interrupt               I32 [7, 60, 32]         eval image i interrupted with k = 1..7
    extra.lines, extra.k         I32 [200, 4], [200]     lines of every kind (extra_lines: clipped ones,
                                                         ties of 1.4's nearest pixel) and a k in 1..7 each
    extra.images                 I32 [200, 32]
    extra.interrupt              I32 [200, 32]           extra image i interrupted with k_i ...
    extra.interrupt_valid        I32 [200]               ... where the reference can (1), else 0 (too few
                                                         pixels or past the list's end: it raises)
for S in 1, 12345, 4294967301 (= 2^32 + 5: a two-word seed key).

Rerun (PIL 9.4 and torch for the writer):  /usr/bin/python3 bench/make_line_fixture.py [output path]
"""
import random
import sys

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw

from parity_fixture_util import fixture_path, write_fixture

SIZE = 32
EXTRA = 200
SEEDS = (1, 12345, 2**32 + 5)
RANGES = [(2, 30), (0, 0), (5, 6), (-3, -1), (0, 28), (-1000, 1000), (0, 65535), (7, 65542),
          (0, 2**31 - 2), (-2**31, 2**31 - 2), (-2**31, 2**31 - 1), (100, 131)]


def random_line(rng):
    """Spec 1.2: random() first, then randint(2, 30)."""
    if rng.random() < 0.5:
        y1 = rng.randint(2, SIZE - 2)
        return (2, y1, SIZE - 2, SIZE - y1)
    x1 = rng.randint(2, SIZE - 2)
    return (x1, 2, SIZE - x1, SIZE - 2)


def eval_lines(n):
    """Spec 5.1: one counter-clockwise perimeter step of both endpoints per line."""
    def step(x, y):
        if x == 2:
            return (x, y + 1) if y < 30 else (x + 1, y)
        if x < 30:
            return (x - 1, y) if y == 2 else (x + 1, y)
        return (x, y - 1) if y > 2 else (x - 1, y)

    p1, p2, lines = (2, 16), (30, 16), []
    for _ in range(n):
        lines.append(p1 + p2)
        p1, p2 = step(*p1), step(*p2)
    return lines


def draw(line):
    """Spec 1.1 with PIL itself: 0/255 uint8 [32, 32]."""
    img = Image.new("L", (SIZE, SIZE), color=0)
    ImageDraw.Draw(img).line(((line[0], line[1]), (line[2], line[3])), fill=255, width=1)
    return np.array(img)


def interrupt(img, line, k):
    """Spec 1.4, transcribed step by step."""
    img = img.copy()
    cx, cy = (line[0] + line[2]) // 2, (line[1] + line[3]) // 2
    pixels = [(r, c) for r in range(SIZE) for c in range(SIZE) if img[r, c] > 128]
    dists = [abs(r - cy) + abs(c - cx) for r, c in pixels]
    i_star = dists.index(min(dists))
    n = min(k, len(pixels) - 2)
    for i in range(i_star - n // 2, i_star - n // 2 + n):
        img[pixels[i]] = 0
    return img


def interrupt_numpy(img, line, k):
    """The same as the reference writes it with numpy (argwhere, argmin, one index at a time, so that
    a negative one counts from the end): a cross-check of the transcription above."""
    img = img.copy()
    center = np.array([(line[1] + line[3]) // 2, (line[0] + line[2]) // 2])
    coords = np.argwhere(img > 128)
    i_star = np.abs(coords - center[None]).sum(axis=1).argmin()
    n = min(k, coords.shape[0] - 2)
    idxs = np.array([list(coords[i]) for i in range(i_star - n // 2, i_star - n // 2 + n)])
    img[idxs[:, 0], idxs[:, 1]] = 0
    return img


def has_tie(img, line):
    """Whether two line pixels are equally near the centre of 1.4 at the smallest distance."""
    cx, cy = (line[0] + line[2]) // 2, (line[1] + line[3]) // 2
    d = sorted(abs(r - cy) + abs(c - cx) for r, c in np.argwhere(img > 128))
    return len(d) > 1 and d[0] == d[1]


def extra_lines():
    """Lines of any direction and length with endpoints in [-2, 33]^2 (some clipped), a k each: first
    the special cases (a point, horizontal and vertical both ways, the four exact diagonals, slopes 1/2
    and 2 with ties on every other step), then random ones from random.Random(7)."""
    special = [(5, 5, 5, 5), (3, 7, 20, 7), (20, 7, 3, 7), (9, 2, 9, 25), (9, 25, 9, 2), (4, 4, 14, 14),
               (14, 14, 4, 4), (4, 14, 14, 4), (14, 4, 4, 14), (1, 1, 21, 11), (21, 11, 1, 1), (1, 11, 21, 1),
               (21, 1, 1, 11), (3, 2, 13, 22), (13, 22, 3, 2), (3, 22, 13, 2), (13, 2, 3, 22), (-2, 10, 33, 20),
               (10, -2, 20, 33), (0, 0, 31, 31), (31, 0, 0, 31)]
    rng = random.Random(7)
    lines = special + [tuple(rng.randint(-2, 33) for _ in range(4)) for _ in range(EXTRA - len(special))]
    return lines, [rng.randint(1, 7) for _ in lines]


def pack(img):
    """uint8 [32, 32] of 0/255 -> int32 [32]: bit c of word r is pixel (r, c)."""
    assert set(np.unique(img)) <= {0, 255}
    words = [sum(1 << c for c in range(SIZE) if img[r, c]) for r in range(SIZE)]
    return torch.tensor([w - (1 << 32) if w >= 1 << 31 else w for w in words], dtype=torch.int32)


def i32(rows):
    return torch.tensor(rows, dtype=torch.int32)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else fixture_path("line_stimuli.safetensors")
    tensors = [("random.randint_ranges", i32(RANGES))]
    for s in SEEDS:
        rng = random.Random()
        rng.seed(s)
        mantissas = []
        for _ in range(8):
            v = rng.random() * 2**53
            assert v == int(v)
            mantissas.append(int(v))
        tensors.append(("random.seed%d.random" % s, torch.tensor(mantissas, dtype=torch.int64)))
        rng.seed(s)
        tensors.append(("random.seed%d.randint" % s, i32([rng.randint(2, 30) for _ in range(16)])))
        rng.seed(s)
        tensors.append(("random.seed%d.randint_wide" % s, i32([rng.randint(a, b) for a, b in RANGES])))

    random.seed(1)  # the module's own generator, as the reference uses it
    train = [random_line(random) for _ in range(1000)]
    tensors.append(("train.lines", i32(train)))
    all_lines = [(2, y, 30, 32 - y) for y in range(2, 31)] + [(x, 2, 32 - x, 30) for x in range(2, 31)]
    assert set(train) <= set(all_lines)
    all_images = [draw(l) for l in all_lines]
    distinct = len({img.tobytes() for img in all_images})
    assert distinct == 56, distinct
    tensors.append(("train.all_lines", i32(all_lines)))
    tensors.append(("train.all_images", torch.stack([pack(img) for img in all_images])))

    lines = eval_lines(60)
    assert lines[0] == (2, 16, 30, 16) and lines[58] == (30, 14, 2, 18), (lines[0], lines[58])
    images = [draw(l) for l in lines]
    tensors.append(("eval.lines", i32(lines)))
    tensors.append(("eval.images", torch.stack([pack(img) for img in images])))
    cut = []
    for k in range(1, 8):
        row = []
        for l, img in zip(lines, images):
            a = interrupt(img, l, k)
            assert np.array_equal(a, interrupt_numpy(img, l, k)), (l, k)
            assert (img > 0).sum() - (a > 0).sum() == min(k, (img > 0).sum() - 2)
            row.append(pack(a))
        cut.append(torch.stack(row))
    tensors.append(("eval.interrupt", torch.stack(cut)))

    lines, ks = extra_lines()
    images = [draw(l) for l in lines]
    cut, valid, ties = [], [], 0
    for l, k, img in zip(lines, ks, images):
        try:  # the reference fails on lines of 2 pixels or fewer (none: ValueError), and past the end of the list
            a = interrupt(img, l, k)
            assert np.array_equal(a, interrupt_numpy(img, l, k)), (l, k)
            valid.append(1)
            ties += has_tie(img, l)
        except (IndexError, ValueError):
            a = img
            valid.append(0)
        cut.append(pack(a))
    tensors += [("extra.lines", i32(lines)), ("extra.k", i32(ks)), ("extra.images", torch.stack([pack(i) for i in images])),
                ("extra.interrupt", torch.stack(cut)), ("extra.interrupt_valid", i32(valid))]

    summary = ["first training lines: %s" % (train[:4],),
               "distinct training images: %d of %d lines" % (distinct, len(all_lines)),
               "extra lines: %d, %d with an interrupt the reference can make, %d of those with a tie for i*"
               % (len(lines), sum(valid), ties)]
    write_fixture(path, tensors, {"generator": "bench/make_line_fixture.py", "pil_version": PIL.__version__,
                                  "python_version": sys.version.split()[0]}, summary)


if __name__ == "__main__":
    main()
