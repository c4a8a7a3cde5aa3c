#!/usr/bin/env python3
"""Summarises and plots what bioflex-eval's analyses wrote (README, Programs):

    python3 tools/plot_analysis.py pgd_flex.json pgd_plain.json -o pgd.png   # attack curves, overlaid
    python3 tools/plot_analysis.py surface.csv                              # loss surface -> surface.png
    python3 tools/plot_analysis.py hessian.json                             # eigenvalues and density
    python3 tools/plot_analysis.py flow.csv                                 # gradient flow
    python3 tools/plot_analysis.py routing.json                             # flex routing shares
    python3 tools/plot_analysis.py flex_ih.json vanilla_ih.json             # input-Hessian spectra
    python3 tools/plot_analysis.py flex_ih.json vanilla_ih.json --select-probes  # FlexNet's surface probes
    python3 tools/plot_analysis.py a.json surface.csv hessian.json --summary   # text, no matplotlib

Each file's kind is read from its content: an --attack JSON (top-1 against epsilon, one curve per
file, labelled by its name and AUC), a --hessian JSON (the top eigenvalues, and the spectral density
broadened by Gaussians of variance 1e-5 x max(1, its range) as PyHessian's density_generate does,
on a log scale), a --loss-surface CSV (filled contours of the loss over alpha and beta) or a
--gradient-flow CSV (mean and max |g| per tensor, biases left out as in the reference's plot, on a
log scale) or a --routing JSON (per flex layer, the elements the conv always wins, those it never
wins and those the input decides, stacked: FlexNet's Fig 6 "routing determinism", with each layer's
conv fraction marked) or an --input-hessian JSON (the Ritz values of every image pooled, as a histogram
of their logarithms: FlexNet's flex-against-vanilla spectra). Files of one kind share a figure, written beside the first one (NAME.png) or to -o;
--summary prints a few lines per file instead. Two --input-hessian files are also compared as FlexNet
5.4 compares the flex and vanilla spectra: the 1-D Wasserstein distance between their pooled Ritz
values (scipy.stats.wasserstein_distance's) and a permutation test of it (--permutations, 1000:
the pooled values shuffled between the two files, p = (1 + the shuffles at least as far apart) /
(1 + shuffles), seeded by --seed), printed with --summary and in the figure's title. --select-probes
chooses from such a pair (the flex network's first, the vanilla one's second, over the same images)
the loss-surface probes FlexNet 5.4 b plots, "cherry-picked by design": the pool is the first --pool
(16) images in file order that both classify correctly with loss <= --max-loss (3); among those whose
vanilla curvature lambda1 + lambda2 is at or above the pool's median, the --top (2) of the largest
(lambda1 + lambda2)_vanilla / (lambda1 + lambda2)_flex; it prints the pool, the median, the ranking and
the --set line that recomputes their surfaces ([analysis] input_hessian_positions). --activations' safetensors files are read with
safetensors.numpy.load_file. Plotting needs matplotlib (Debian: python3-matplotlib); --summary
needs only Python.
"""
import argparse
import csv
import json
import math
import os
import sys


def read_csv(path):
    """The rows of a bioflex CSV as dicts, '#' comment lines skipped."""
    with open(path) as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines))


def kind_of(path):
    """attack, hessian, surface or flow, from the file's content."""
    if path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        if "method" in data and "top1" in data:
            return "attack", data
        if "per_image" in data and "lanczos_steps" in data:
            return "input_hessian", data
        if "eigenvalues" in data:
            return "hessian", data
        if "layers" in data and "class_images" in data:
            return "routing", data
    else:
        rows = read_csv(path)
        if rows and "alpha" in rows[0]:
            return "surface", rows
        if rows and "mean_abs_grad" in rows[0]:
            return "flow", rows
    raise SystemExit(f"error: {path} is none of bioflex-eval's --attack, --hessian, --input-hessian or --routing JSON, "
                     f"--loss-surface or --gradient-flow CSV")


def label(path):
    return os.path.splitext(os.path.basename(path))[0]


def summarise(path, kind, data):
    if kind == "attack":
        print(f"{path}: {data['method']} attack ({data['domain']} domain), {data['samples']} images: top-1 "
              f"{100 * data['top1'][0]:.2f}% at epsilon {data['epsilons'][0]:.4g}, {100 * data['top1'][-1]:.2f}% at "
              f"{data['epsilons'][-1]:.4g}; "
              f"AUC {data['auc']:.4f} (normalised {data['auc_normalized']:.4f}, reference {data['auc_reference']:.4f})")
    elif kind == "hessian":
        eig = ", ".join(f"{v:.6g}" for v in data["eigenvalues"])
        mode = f"{data['mode']} mode, " if "mode" in data else ""  # files before hessian_mode: training mode
        print(f"{path}: Hessian over {data['samples']} images ({mode}loss {data['loss']:.4f}): top eigenvalues [{eig}], "
              f"trace {data['trace']:.6g} ({data['trace_samples']} samples)"
              + (f", density of {len(data['density_nodes'])} nodes over [{min(data['density_nodes']):.4g}, "
                 f"{max(data['density_nodes']):.4g}]" if data.get("density_nodes") else ""))
    elif kind == "input_hessian":
        images = data["per_image"]
        ritz = [v for im in images for v in im["ritz"]]
        tops = ", ".join(f"{im['eigenvalues'][0]:.4g}" if im["eigenvalues"] else "-" for im in images)
        print(f"{path}: input Hessian of {len(images)} images: top eigenvalue per image [{tops}]; "
              f"{len(ritz)} Ritz values pooled, largest {max(ritz, default=0):.4g}")
    elif kind == "surface":
        points = [(float(r["alpha"]), float(r["beta"]), float(r["loss"])) for r in data]
        centre = min(points, key=lambda p: p[0] ** 2 + p[1] ** 2)
        lowest = min(points, key=lambda p: p[2])
        print(f"{path}: loss surface of {len(points)} points: loss {centre[2]:.4f} at ({centre[0]:.3g}, {centre[1]:.3g}), "
              f"lowest {lowest[2]:.4f} at ({lowest[0]:.3g}, {lowest[1]:.3g}), highest {max(p[2] for p in points):.4f}")
    elif kind == "routing":
        measured = [l for l in data["layers"] if "conv" in l]
        shares = ", ".join(f"{l['name']} {l['conv']:.3f}" for l in measured)
        static = ", ".join(f"{l['static_share']:.3f}" for l in measured)
        print(f"{path}: routing over {data['images']} images, {len(measured)} channel-wise max layers: conv {shares}; "
              f"static share {static}")
    else:
        ranked = sorted(data, key=lambda r: -float(r["grad_to_weight"]))
        top = ", ".join(f"{r['parameter']} {float(r['grad_to_weight']):.3g}" for r in ranked[:3])
        print(f"{path}: gradient flow of {len(data)} tensors; largest |g|/|w|: {top}")


def wasserstein_1d(a, b):
    """The 1-D Wasserstein (earth mover's) distance between the empirical distributions of a and b,
    equally weighted samples: the integral of |F_a - F_b| (scipy.stats.wasserstein_distance)."""
    a, b = sorted(a), sorted(b)
    values = sorted(set(a) | set(b))
    i = j = 0
    total = 0.0
    for k in range(len(values) - 1):
        while i < len(a) and a[i] <= values[k]:
            i += 1
        while j < len(b) and b[j] <= values[k]:
            j += 1
        total += abs(i / len(a) - j / len(b)) * (values[k + 1] - values[k])
    return total


def compare_spectra(first, second, permutations, seed):
    """(distance, p-value) of two --input-hessian files' pooled Ritz values (FlexNet 5.4)."""
    import random
    a = [v for im in first["per_image"] for v in im["ritz"]]
    b = [v for im in second["per_image"] for v in im["ritz"]]
    if not a or not b:
        raise SystemExit("error: an --input-hessian file without Ritz values")
    observed = wasserstein_1d(a, b)
    pooled, rng, at_least = a + b, random.Random(seed), 0
    for _ in range(permutations):
        rng.shuffle(pooled)
        at_least += wasserstein_1d(pooled[:len(a)], pooled[len(a):]) >= observed - 1e-12 * abs(observed)
    return observed, (1 + at_least) / (1 + permutations)


def curvature(image):
    """lambda1 + lambda2: the sum of an image's top two input-Hessian eigenvalues (FlexNet 5.4 b)."""
    return image["eigenvalues"][0] + image["eigenvalues"][1]


def select_probes(flex_file, vanilla_file, pool_size, max_loss, top):
    """FlexNet 5.4 b's loss-surface probes from a flex and a vanilla --input-hessian file over the same
    images: the pool (the first pool_size images, in file order, that both networks classify correctly
    with loss <= max_loss), its median vanilla curvature, the images at or above it ranked by vanilla /
    flex curvature (file order among equal ratios), and the top of them; printed, the chosen positions
    returned."""
    (flex_path, flex), (vanilla_path, vanilla) = flex_file, vanilla_file
    flex_images, vanilla_images = flex["per_image"], vanilla["per_image"]
    if len(flex_images) != len(vanilla_images):
        raise SystemExit(f"error: --select-probes needs two files over the same images: {flex_path} has "
                         f"{len(flex_images)}, {vanilla_path} {len(vanilla_images)}")
    for i, (f, v) in enumerate(zip(flex_images, vanilla_images)):
        if (f["position"], f["label"]) != (v["position"], v["label"]):
            raise SystemExit(f"error: --select-probes needs two files over the same images: image {i} is position "
                             f"{f['position']} (label {f['label']}) in {flex_path}, position {v['position']} "
                             f"(label {v['label']}) in {vanilla_path}")
    for path, images in ((flex_path, flex_images), (vanilla_path, vanilla_images)):
        if any("correct" not in im for im in images):
            raise SystemExit(f"error: {path} does not say which images its network classifies correctly (no "
                             f"\"correct\"): it predates them; run bioflex-eval --input-hessian again")
        if any(len(im["eigenvalues"]) < 2 for im in images):
            raise SystemExit(f"error: {path} has fewer than two eigenvalues per image: the curvature lambda1 + "
                             f"lambda2 needs [analysis] input_hessian_top_n >= 2")
    pool, left_out = [], []
    for f, v in zip(flex_images, vanilla_images):
        if len(pool) == pool_size:
            break
        why = [f"{name} misclassifies it" for name, im in (("flex", f), ("vanilla", v)) if not im["correct"]]
        why += [f"{name} loss {im['loss']:.4g} > {max_loss:g}" for name, im in (("flex", f), ("vanilla", v))
                if im["correct"] and not im["loss"] <= max_loss]
        if why:
            left_out.append(f"{f['position']} ({', '.join(why)})")
        else:
            pool.append((f, v))
    print(f"probe selection (FlexNet 5.4 b) over {len(flex_images)} images: flex {flex_path}, vanilla {vanilla_path}")
    if not pool:
        raise SystemExit(f"error: no image that both networks classify correctly with loss <= {max_loss:g}: "
                         f"nothing to select from (left out: {'; '.join(left_out)})")
    print(f"pool: {len(pool)} images both classify correctly with loss <= {max_loss:g}: positions "
          + ", ".join(str(f["position"]) for f, _ in pool))
    if len(pool) < pool_size:
        print(f"note: the pool holds {len(pool)} of the {pool_size} images asked for: compute more images "
              f"([analysis] input_hessian_images, up to 64)")
    if left_out:
        print("left out: positions " + "; ".join(left_out))
    import statistics
    median = statistics.median(curvature(v) for _, v in pool)
    print(f"median vanilla curvature (lambda1 + lambda2) over the pool: {median:.6g}")
    candidates = []
    for f, v in pool:
        if curvature(v) >= median:
            flat = curvature(f) <= 0  # a saturated softmax: no curvature left in the flex network
            ratio = curvature(v) / curvature(f) if not flat else math.inf if curvature(v) > 0 else math.nan
            candidates.append((ratio, f, v))
    ranked = sorted(candidates, key=lambda c: -c[0] if not math.isnan(c[0]) else math.inf)
    print(f"ranked by (lambda1 + lambda2) vanilla / flex, the {len(ranked)} images at or above the median:")
    for rank, (ratio, f, v) in enumerate(ranked, 1):
        print(f"  {rank}. position {f['position']}: ratio {ratio:.6g} (vanilla {curvature(v):.6g}, flex "
              f"{curvature(f):.6g})")
    chosen = [f["position"] for _, f, _ in ranked[:top]]
    print("chosen: positions " + ", ".join(str(p) for p in chosen))
    print("their loss surfaces (bioflex-eval --input-hessian, once with each network's checkpoint):")
    print(f"--set analysis.input_hessian_positions={','.join(str(p) for p in chosen)} "
          f"--set analysis.input_hessian_surface_points=51")
    return chosen


def gaussian_density(nodes, weights, points=1000):
    """PyHessian's density_generate: the weighted nodes broadened by Gaussians of variance
    1e-5 x max(1, range), on a grid 1% wider than the nodes."""
    lo, hi = min(nodes) - 0.01, max(nodes) + 0.01
    var = 1e-5 * max(1.0, hi - lo)
    grid = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    density = [sum(w * math.exp(-(x - n) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
                   for n, w in zip(nodes, weights)) for x in grid]
    total = sum(density) * (grid[1] - grid[0])
    return grid, [d / total for d in density]


def plot(kind, files, out, plt, subtitle=None):
    fig, axes = plt.subplots(1, 2 if kind == "hessian" else 1, figsize=(12 if kind == "hessian" else 7, 4.5),
                             squeeze=False)
    ax = axes[0][0]
    for path, data in files:
        if kind == "attack":
            ax.plot(data["epsilons"], [100 * v for v in data["top1"]], marker=".",
                    label=f"{label(path)} (AUC {data['auc_normalized']:.3f})")
            ax.set_xlabel(f"epsilon ({data['domain']})")
            ax.set_ylabel("top-1 (%)")
            ax.set_title(f"{data['method']} attack")
        elif kind == "hessian":
            ax.plot(range(1, len(data["eigenvalues"]) + 1), data["eigenvalues"], marker="o", label=label(path))
            ax.set_xlabel("rank")
            ax.set_ylabel("eigenvalue")
            ax.set_title("top Hessian eigenvalues")
            if data.get("density_nodes"):
                grid, density = gaussian_density(data["density_nodes"], data["density_weights"])
                axes[0][1].semilogy(grid, [max(d, 1e-12) for d in density], label=label(path))
                axes[0][1].set_xlabel("eigenvalue")
                axes[0][1].set_ylabel("density")
                axes[0][1].set_title("spectral density (SLQ)")
        elif kind == "input_hessian":  # FlexNet 5.4: the pooled Ritz values, flex against vanilla
            ritz = [v for im in data["per_image"] for v in im["ritz"] if v > 0]
            if ritz:
                ax.hist([math.log10(v) for v in ritz], bins=30, histtype="step", label=label(path))
            ax.set_xlabel("log10 Ritz value (positive ones)")
            ax.set_ylabel("count")
            ax.set_title("input-Hessian spectra (Lanczos)" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
        elif kind == "surface":
            alphas = sorted({float(r["alpha"]) for r in data})
            betas = sorted({float(r["beta"]) for r in data})
            loss = {(float(r["alpha"]), float(r["beta"])): float(r["loss"]) for r in data}
            grid = [[loss[(a, b)] for a in alphas] for b in betas]
            filled = ax.contourf(alphas, betas, grid, levels=30)
            fig.colorbar(filled, ax=ax, label="loss")
            ax.set_xlabel("alpha")
            ax.set_ylabel("beta")
            ax.set_title(f"loss surface ({label(path)})")
            break  # one surface per figure
        elif kind == "routing":
            layers = [l for l in data["layers"] if "conv" in l]
            x = range(len(layers))
            always_conv = [l["always_conv"] for l in layers]
            always_pool = [l["always_pool"] for l in layers]
            chosen = [1 - c - p for c, p in zip(always_conv, always_pool)]
            ax.bar(x, always_pool, label="always pool", color="tab:blue")
            ax.bar(x, chosen, bottom=always_pool, label="input-dependent", color="tab:gray")
            ax.bar(x, always_conv, bottom=[p + c for p, c in zip(always_pool, chosen)], label="always conv",
                   color="tab:orange")
            ax.plot(x, [l["conv"] for l in layers], "k.-", label="conv fraction")
            ax.set_xticks(list(x))
            ax.set_xticklabels([l["name"] for l in layers], rotation=90, fontsize=7)
            ax.set_ylabel("share of elements")
            ax.set_title(f"flex routing ({label(path)}, {data['images']} images)")
            break  # one network per figure
        else:
            rows = [r for r in data if not r["parameter"].endswith("bias")]
            ax.bar(range(len(rows)), [float(r["max_abs_grad"]) for r in rows], alpha=0.5, label=f"{label(path)} max |g|")
            ax.bar(range(len(rows)), [float(r["mean_abs_grad"]) for r in rows], alpha=0.8, label=f"{label(path)} mean |g|")
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([r["parameter"] for r in rows], rotation=90, fontsize=7)
            ax.set_yscale("log")
            ax.set_title("gradient flow")
    if kind != "surface":
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"{kind}: {len(files)} file(s) -> {out}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="bioflex-eval --attack / --hessian / --routing JSON, --loss-surface / "
                        "--gradient-flow CSV")
    parser.add_argument("-o", "--output", help="the PNG (one kind of file only; default: beside the first file)")
    parser.add_argument("--summary", action="store_true", help="a few lines of text per file, no plot")
    parser.add_argument("--permutations", type=int, default=1000,
                        help="two --input-hessian files: shuffles of the permutation test (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the permutation test's shuffles (default 0)")
    parser.add_argument("--select-probes", action="store_true",
                        help="two --input-hessian files, flex then vanilla, over the same images: FlexNet 5.4 b's "
                        "loss-surface probes (printed, no plot)")
    parser.add_argument("--pool", type=int, default=16,
                        help="--select-probes: the first this many images both classify correctly (default 16)")
    parser.add_argument("--max-loss", type=float, default=3.0,
                        help="--select-probes: ... with at most this loss in both (default 3)")
    parser.add_argument("--top", type=int, default=2, help="--select-probes: the probes chosen (default 2)")
    args = parser.parse_args()
    by_kind = {}
    for path in args.files:
        if not os.path.exists(path):
            raise SystemExit(f"error: {path} does not exist")
        kind, data = kind_of(path)
        by_kind.setdefault(kind, []).append((path, data))
    spectra = by_kind.get("input_hessian", [])
    if args.select_probes:
        if len(args.files) != 2 or len(spectra) != 2:
            raise SystemExit("error: --select-probes takes two --input-hessian files, the flex network's and the "
                             "vanilla one's")
        if args.pool < 1 or args.top < 1:
            raise SystemExit("error: --pool and --top must be at least 1")
        select_probes(spectra[0], spectra[1], args.pool, args.max_loss, args.top)
        return
    comparison = None
    if len(spectra) == 2:
        distance, p = compare_spectra(spectra[0][1], spectra[1][1], args.permutations, args.seed)
        comparison = (f"Wasserstein distance {distance:.6g} between the pooled Ritz values of {spectra[0][0]} and "
                      f"{spectra[1][0]}; permutation test ({args.permutations} shuffles, seed {args.seed}): p = {p:.4g}")
    if args.summary:
        for kind, files in by_kind.items():
            for path, data in files:
                summarise(path, kind, data)
        if comparison:
            print(comparison)
        return
    if args.output and len(by_kind) > 1:
        raise SystemExit("error: -o names one figure, but the files are of several kinds: plot each kind on its own")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: plotting needs matplotlib (Debian: apt-get install python3-matplotlib); "
                         "--summary works without it")
    for kind, files in by_kind.items():
        subtitle = None
        if kind == "input_hessian" and comparison:
            subtitle = f"Wasserstein {distance:.4g}, permutation p = {p:.3g} ({args.permutations} shuffles)"
        plot(kind, files, args.output or os.path.splitext(files[0][0])[0] + ".png", plt, subtitle)


if __name__ == "__main__":
    sys.exit(main())
