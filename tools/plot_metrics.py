#!/usr/bin/env python3
"""Summarises and plots bioflex runs from their run directories (metrics.jsonl, spikes.jsonl).

    python3 tools/plot_metrics.py runs/a runs/b              # runs/a/metrics.png: the curves of both runs
    python3 tools/plot_metrics.py runs/a -o curves.png       # another file name
    python3 tools/plot_metrics.py runs/a --summary           # a text table, no matplotlib needed
    python3 tools/plot_metrics.py runs/snn --raster features.2  # spike raster of one neuron layer
    python3 tools/plot_metrics.py runs/* --metric balanced_top1 --ema 0.998 --best-after 20 --summary
                                                              # PlasticFlex's smoothed balanced accuracy

The figure has one panel per quantity the runs logged: training loss and learning rate against
the step; test top-1 against the epoch (guided BU-TD runs: the mean accuracy over tasks);
images/s, data-wait and exposed communication time per step; the conv ratio of every flex layer;
the firing rate of every neuron layer. Runs are overlaid, labelled by their directory name.

--metric picks the evaluation figure shown and summarised: top1 (the default) or balanced_top1 (the
mean per-class recall, sklearn's balanced accuracy, which PlasticFlex's figures show). --ema A
smooths it over the evaluations in order, s = A s + (1 - A) v from the first value (PlasticFlex's
0.998 over one-batch validations, [run] val_batches = 1), and --best-after N takes the best only
from epoch N on (PlasticFlex's 20).

A run resumed from a checkpoint logs the steps after that checkpoint again; the last record of
each step is the one kept, as it belongs to the run that went on. A fresh run started in a
directory that held another appends after the older run's lines: only the records from the last
fresh start ({"type": "start", "resumed": false}) on are read. Plotting needs matplotlib
(Debian: python3-matplotlib); --summary needs only Python.
"""
import argparse
import json
import os
import statistics
import sys


def read_jsonl(path):
    """The JSON objects of a .jsonl file, one per line (a torn last line, from a killed run, is skipped)."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                print(f"{path}:{number}: not JSON, skipped", file=sys.stderr)
    return records


def last_per_key(records, key):
    """One record per value of `key`, the last one logged, in key order."""
    kept = {}
    for r in records:
        kept[r[key]] = r
    return [kept[k] for k in sorted(kept)]


class Run:
    """The metrics of one run directory, split by record type."""

    def __init__(self, run_dir):
        path = os.path.join(run_dir, "metrics.jsonl")
        if not os.path.exists(path):
            raise SystemExit(f"error: {path} does not exist (is {run_dir} a bioflex run directory?)")
        records = read_jsonl(path)
        fresh = [i for i, r in enumerate(records) if r.get("type") == "start" and not r.get("resumed")]
        if fresh:  # an older run's lines before it belong to another history
            records = records[fresh[-1]:]
        self.dir = run_dir
        self.name = os.path.basename(os.path.normpath(run_dir))
        self.train = last_per_key([r for r in records if r.get("type") == "train"], "step")
        # eval: the whole test split ("test") or a few random batches ("test_batches", [run] val_batches;
        # the last of an epoch is kept, the whole split where both exist); eval_tasks: guided BU-TD
        evals = [r for r in records if r.get("type") == "eval" and r.get("split") == "test_batches"]
        evals += [r for r in records if r.get("type") == "eval" and r.get("split") == "test"]
        evals += [dict(r, top1=r["accuracy"]) for r in records if r.get("type") == "eval_tasks"]
        self.evals = last_per_key(evals, "epoch")
        # Net Fragments: one record per epoch (its weights and the S2 support monitor)
        self.fragments = last_per_key([r for r in records if r.get("type") == "fragments_epoch"], "epoch")

    def series(self, field):
        """(steps, values) of a train field; nested per-layer fields give {layer: (steps, values)}."""
        rows = [r for r in self.train if field in r]
        if rows and isinstance(rows[0][field], dict):
            layers = {}
            for r in rows:
                for layer, v in r[field].items():
                    layers.setdefault(layer, ([], []))
                    layers[layer][0].append(r["step"])
                    layers[layer][1].append(v)
            return layers
        return [r["step"] for r in rows], [r[field] for r in rows]

    def summary(self, metric="top1", ema=0.0, best_after=0):
        """A dict of the figures a reader looks for first."""
        steps = [r["step"] for r in self.train + self.evals]  # BU-TD runs log evaluations only
        s = {"run": self.name, "steps": max(steps) if steps else 0}
        if self.fragments:  # Net Fragments: the last epoch's weights and support
            last = self.fragments[-1]
            s["epochs"] = last["epoch"]
            s["weight_sum"] = last["weight_sum"]
            for field in ("avg_support_active", "avg_support_inactive"):
                if last.get(field) is not None:
                    s[field] = last[field]
        if self.train:
            last = self.train[-1]
            s["train_loss"] = last["loss"]
            s["train_acc"] = last["accuracy"]
            s["images_per_s"] = statistics.median(r["images_per_s"] for r in self.train)
            waits = [r["data_wait_ms"] / r["ms_per_step"] for r in self.train if r.get("ms_per_step", 0) > 0]
            s["data_wait"] = statistics.median(waits) if waits else 0.0
            for field in ("mean_conv_ratio", "mean_firing_rate", "skipped_images"):
                if field in last:
                    s[field] = last[field]
            peaks = [r["device_peak_gib"] for r in self.train if "device_peak_gib" in r]  # GPU runs
            if peaks:
                s["peak_gib"] = max(peaks)
        epochs, values = self.eval_series(metric, ema)
        if values:
            later = [(v, e) for e, v in zip(epochs, values) if e >= best_after] or list(zip(values, epochs))
            best = max(later, key=lambda p: p[0])
            s[f"test_{metric}"] = values[-1]
            s[f"best_{metric}"] = best[0]
            s["best_epoch"] = best[1]
            s["epochs"] = epochs[-1]
        return s

    def eval_series(self, metric="top1", ema=0.0):
        """(epochs, values) of an evaluation figure, smoothed by an exponential moving average."""
        points = [(r["epoch"], r[metric]) for r in self.evals if metric in r]
        values, smoothed = [], None
        for _, v in points:
            smoothed = v if smoothed is None else ema * smoothed + (1 - ema) * v
            values.append(smoothed)
        return [e for e, _ in points], values


def print_summary(runs, metric="top1", ema=0.0, best_after=0):
    columns = [("run", "{}"), ("steps", "{}"), ("epochs", "{}"), ("train_loss", "{:.4f}"), ("train_acc", "{:.2%}"),
               (f"test_{metric}", "{:.2%}"), (f"best_{metric}", "{:.2%}"), ("best_epoch", "{}"), ("images_per_s", "{:.0f}"),
               ("data_wait", "{:.1%}"), ("peak_gib", "{:.2f}"), ("mean_conv_ratio", "{:.3f}"), ("mean_firing_rate", "{:.3f}"),
               ("skipped_images", "{}"), ("weight_sum", "{:.2f}"), ("avg_support_active", "{:.3f}"),
               ("avg_support_inactive", "{:.4f}")]
    rows = [r.summary(metric, ema, best_after) for r in runs]
    shown = [(c, f) for c, f in columns if any(c in r for r in rows)]
    table = [[c for c, _ in shown]] + [[f.format(r[c]) if c in r else "-" for c, f in shown] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(shown))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


def import_pyplot():
    """matplotlib's pyplot for files (no display), or a clear error where it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: plotting needs matplotlib (apt-get install python3-matplotlib, or pip install "
                         "matplotlib); --summary works without it")
    return plt


def plot(runs, out, metric="top1", ema=0.0):
    plt = import_pyplot()
    panels = [("loss", "training loss", "step"), ("top1", "test top-1", "epoch"), ("lr", "learning rate", "step"),
              ("images_per_s", "images/s", "step"), ("data_wait_ms", "data wait (ms/step)", "step"),
              ("comm_exposed_ms", "exposed communication (ms/step)", "step"),
              ("conv_ratio", "flex conv ratio", "step"), ("firing_rate", "firing rate", "step"),
              ("support", "S2 support (active solid, inactive dotted; lambda dashed)", "epoch"),
              ("weight_sum", "S2 weight sum", "epoch")]
    present = []
    for field, title, x in panels:
        if field in ("support", "weight_sum"):  # Net Fragments' epochs
            if any(r.fragments for r in runs):
                present.append((field, title, x))
        elif field == "top1":
            if any(r.evals for r in runs):
                present.append((field, title, x))
        elif any(any(field in t for t in r.train) for r in runs):
            present.append((field, title, x))
    if not present:
        raise SystemExit("error: the runs have no train or eval records to plot yet")
    cols = 2 if len(present) > 1 else 1
    rows = (len(present) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax, (field, title, x) in zip(axes.flat, present):
        for run in runs:
            if field in ("support", "weight_sum") and run.fragments:
                epochs = [r["epoch"] for r in run.fragments]
                if field == "weight_sum":
                    ax.plot(epochs, [r["weight_sum"] for r in run.fragments], marker="o", label=run.name)
                    continue
                line = ax.plot(epochs, [r.get("avg_support_active") for r in run.fragments], marker="o",
                               label=f"{run.name} active")[0]
                ax.plot(epochs, [r.get("avg_support_inactive") for r in run.fragments], linestyle=":",
                        color=line.get_color(), label=f"{run.name} inactive")
                if "support_lambda" in run.fragments[-1]:
                    ax.axhline(run.fragments[-1]["support_lambda"], linestyle="--", color="grey", linewidth=1)
                continue
            if field == "top1":
                epochs, values = run.eval_series(metric, ema)
                ax.plot(epochs, [100 * v for v in values], marker="o", label=run.name)
                continue
            data = run.series(field)
            if isinstance(data, dict):  # one line per layer
                for layer, (steps, values) in data.items():
                    ax.plot(steps, values, label=f"{run.name} {layer}" if len(runs) > 1 else layer)
            elif data[0]:
                ax.plot(data[0], data[1], label=run.name)
        ax.set_title(title if field != "top1" else f"test {metric}" + (f" (EMA {ema})" if ema else ""))
        ax.set_xlabel(x)
        if field == "lr" and all(v > 0 for run in runs for v in run.series("lr")[1]):
            ax.set_yscale("log")  # linear when a rate of 0 (warm-up start, eta_min = 0) would vanish
        if field == "top1":
            ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def plot_raster(run_dir, layer, out, max_records):
    """The spikes of one neuron layer ([spiking] raster_neurons): neurons against time steps, the
    logged steps side by side."""
    path = os.path.join(run_dir, "spikes.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} does not exist (set [spiking] raster_neurons > 0 to record spikes)")
    records = [r for r in read_jsonl(path) if r.get("layer") == layer][-max_records:]
    if not records:
        layers = sorted({r.get("layer") for r in read_jsonl(path)})
        raise SystemExit(f"error: no spikes of layer {layer} in {path}; it has {', '.join(layers)}")
    plt = import_pyplot()
    xs, ys, t0, bounds = [], [], 0, []
    for r in records:
        for t, row in enumerate(r["spikes"]):
            for neuron, spiked in enumerate(row):
                if spiked:
                    xs.append(t0 + t)
                    ys.append(neuron)
        t0 += len(r["spikes"])
        bounds.append(t0)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.scatter(xs, ys, marker="|", s=30, color="black")
    for b in bounds[:-1]:
        ax.axvline(b - 0.5, color="tab:blue", alpha=0.3)
    ax.set_title(f"{layer}: spikes at steps {records[0]['step']}..{records[-1]['step']} (first sample, T per step)")
    ax.set_xlim(-0.5, t0 - 0.5)
    ax.set_ylim(-0.5, len(records[0]["spikes"][0]) - 0.5)
    ax.set_xlabel("time step (logged steps side by side)")
    ax.set_ylabel("neuron")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="+", help="run directories ([run] dir)")
    p.add_argument("-o", "--output", help="image file (default: metrics.png, or raster_LAYER.png, in the first run)")
    p.add_argument("--summary", action="store_true", help="print a table of each run's figures instead of plotting")
    p.add_argument("--raster", metavar="LAYER", help="plot the recorded spikes of this neuron layer (first run)")
    p.add_argument("--raster-steps", type=int, default=8, help="how many logged steps the raster shows (the last ones)")
    p.add_argument("--metric", choices=("top1", "balanced_top1"), default="top1", help="the evaluation figure (top1)")
    p.add_argument("--ema", type=float, default=0.0, help="smooth it: s = EMA s + (1 - EMA) v (0: none)")
    p.add_argument("--best-after", type=int, default=0, help="the best evaluation only from this epoch on")
    args = p.parse_args()
    if args.raster:
        out = args.output or os.path.join(args.runs[0], f"raster_{args.raster}.png")
        plot_raster(args.runs[0], args.raster, out, args.raster_steps)
        return
    runs = [Run(d) for d in args.runs]
    if args.summary:
        print_summary(runs, args.metric, args.ema, args.best_after)
    else:
        plot(runs, args.output or os.path.join(args.runs[0], "metrics.png"), args.metric, args.ema)


if __name__ == "__main__":
    main()
