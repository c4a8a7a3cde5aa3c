#!/usr/bin/env python3
"""Spatial-frequency analysis of layer outputs (FlexNet spec section 5.3), from the safetensors file
`bioflex-eval --activations FILE.safetensors` writes:

    python3 tools/spectrum.py acts.safetensors                    # every [N, C, H, W] tensor
    python3 tools/spectrum.py acts.safetensors -l features.3 -o spectrum.json

For each chosen layer (a tensor name or prefix; `input` and `labels` are left out unless named):
  (a) the layer spectrum: |fftshift(FFT2)| over (H, W) averaged over the N x C maps, and its radial
      profile, the mean of log(magnitude) in integer-radius bins (floor of the distance to the
      centre (H // 2, W // 2));
  (b) the spectral slope of each (image, channel) map (the manuscript's Fig 2 C-E): power =
      |fftshift(FFT2)|^2, its radial profile (mean power per integer-radius bin) divided by the
      profile's own mean, and the least-squares slope of log(profile) against log(k) over
      0 < k <= min(H, W) // 2 where the profile exceeds 1e-12. More negative: more low-frequency.
      Reported as mean, std and a histogram.
FlexNet hooks the conv or flex outputs before batch-norm and ReLU: dump with [model] fuse_bn_relu =
false, and read a flex layer's `LAYER` (the max, as FlexNet's hooks saw it) or `LAYER.flex_conv`.
Needs numpy. Writes JSON to -o (default: stdout), one object per layer.
"""
import argparse
import json
import struct
import sys

try:
    import numpy as np
except ImportError:
    sys.exit("spectrum.py: needs numpy (Debian: apt-get install python3-numpy, or pip install numpy)")

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "F16": np.float16, "U8": np.uint8}


def load_safetensors(path):
    """{name: array} of a safetensors file (the format's 8-byte header length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[base + begin:base + end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def radial_bins(h, w):
    """Each frequency's integer radius from the shifted spectrum's centre (h // 2, w // 2)."""
    y, x = np.indices((h, w))
    return np.sqrt((y - h // 2) ** 2 + (x - w // 2) ** 2).astype(int)


def radial_mean(values, bins):
    """The mean of values (..., H, W) per radius bin: (..., max radius + 1)."""
    flat = bins.ravel()
    counts = np.bincount(flat)
    lead = values.shape[:-2]
    sums = np.zeros(lead + (counts.size,))
    v = values.reshape(lead + (-1,))
    for r in range(counts.size):
        sums[..., r] = v[..., flat == r].sum(axis=-1)
    return sums / counts


def slopes_of(maps):
    """The spectral slope of each map of maps (M, H, W) (section 5.3 b); NaN where fewer than 2 bins count."""
    m, h, w = maps.shape
    bins = radial_bins(h, w)
    power = np.abs(np.fft.fftshift(np.fft.fft2(maps.astype(np.float64)), axes=(-2, -1))) ** 2
    profile = radial_mean(power, bins)
    means = profile.mean(axis=-1, keepdims=True)
    profile = np.divide(profile, means, out=np.zeros_like(profile), where=means > 0)
    k = np.arange(profile.shape[-1])
    kmax = min(h, w) // 2
    out = np.full(m, np.nan)
    for i in range(m):
        use = (k > 0) & (k <= kmax) & (profile[i] > 1e-12)
        if use.sum() >= 2:
            out[i] = np.polyfit(np.log(k[use]), np.log(profile[i][use]), 1)[0]
    return out


def analyse(name, t, bins_count):
    """Section 5.3 (a) and (b) of one [N, C, H, W] tensor."""
    n, c, h, w = t.shape
    maps = t.reshape(n * c, h, w).astype(np.float64)
    magnitude = np.abs(np.fft.fftshift(np.fft.fft2(maps), axes=(-2, -1))).mean(axis=0)
    log_magnitude = np.log(magnitude + 1e-12)
    slopes = slopes_of(maps)
    finite = slopes[np.isfinite(slopes)]
    counts, edges = np.histogram(finite, bins=bins_count) if finite.size else (np.array([]), np.array([]))
    return {
        "layer": name, "shape": [n, c, h, w], "maps": n * c,
        "radial_log_magnitude": radial_mean(log_magnitude, radial_bins(h, w)).tolist(),
        "slope_mean": float(finite.mean()) if finite.size else None,
        "slope_std": float(finite.std()) if finite.size else None,
        "slopes_counted": int(finite.size),
        "slope_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="bioflex-eval --activations output (safetensors)")
    p.add_argument("-l", "--layer", action="append", default=[], help="a tensor name or prefix (repeatable)")
    p.add_argument("-o", "--output", help="JSON file (default: stdout)")
    p.add_argument("--bins", type=int, default=20, help="slope histogram bins (20)")
    a = p.parse_args()
    tensors = load_safetensors(a.file)
    chosen = [n for n, t in tensors.items()  # [T, N, ...] tensors of spiking layers are left out
              if t.ndim == 4 and (any(n.startswith(l) for l in a.layer) if a.layer else n != "input")]
    if not chosen:
        sys.exit(f"spectrum.py: no [N, C, H, W] tensor in {a.file} matches {a.layer or 'any layer'}")
    result = [analyse(n, tensors[n], a.bins) for n in sorted(chosen)]
    text = json.dumps(result, indent=1)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text + "\n")
        for r in result:
            print(f"{r['layer']}: {r['maps']} maps, slope {r['slope_mean']:.3f} +- {r['slope_std']:.3f}"
                  if r["slope_mean"] is not None else f"{r['layer']}: no slope")
    else:
        print(text)


if __name__ == "__main__":
    main()
