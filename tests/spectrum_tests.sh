#!/usr/bin/env bash
# spectrum_tests.sh - tools/spectrum.py (FlexNet 5.3) on maps whose spectra are known: random-phase
# fields with power proportional to k^-beta must give slopes near -beta (white noise: 0), a
# narrower tensor its own radial profile (cli_tests runs it on a real --activations dump).
# Skipped (exit 77) without a Python that has numpy.
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
py=""
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c "import numpy" 2>/dev/null; then py=$candidate; break; fi
done
[ -n "$py" ] || { echo "no Python with numpy: skipped"; exit 77; }
dir=$(mktemp -d /tmp/bioflex_spectrum.XXXXXX)
trap 'rm -rf "$dir"' EXIT
"$py" - "$dir/fields.safetensors" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(0)
def field(beta, n, c, h, w):
    """Maps whose power falls as k^-beta: white noise filtered by k^(-beta/2) in frequency."""
    ky, kx = np.meshgrid(np.fft.fftfreq(h) * h, np.fft.fftfreq(w) * w, indexing="ij")
    k = np.sqrt(kx ** 2 + ky ** 2)
    k[0, 0] = 1
    noise = np.fft.fft2(rng.standard_normal((n, c, h, w)))
    return np.real(np.fft.ifft2(noise * k ** (-beta / 2))).astype(np.float32)
tensors = {"steep": field(2.0, 4, 3, 64, 64), "white": field(0.0, 4, 3, 64, 64), "small": field(1.0, 2, 2, 16, 12)}
header, blobs, offset = {}, [], 0
for name, t in tensors.items():
    b = t.tobytes()
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
    blobs.append(b); offset += len(b)
h = json.dumps(header).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }
"$py" "$src/tools/spectrum.py" "$dir/fields.safetensors" -o "$dir/out.json" >"$dir/out.txt" 2>&1
check "spectrum.py runs" '[ $? -eq 0 ]'
"$py" - "$dir/out.json" >"$dir/check.txt" 2>&1 <<'PY'
import json, sys
r = {x["layer"]: x for x in json.load(open(sys.argv[1]))}
ok = abs(r["steep"]["slope_mean"] + 2) < 0.15 and abs(r["white"]["slope_mean"]) < 0.15
ok &= r["steep"]["maps"] == 12 and r["steep"]["slopes_counted"] == 12 and sum(r["steep"]["slope_histogram"]["counts"]) == 12
ok &= len(r["small"]["radial_log_magnitude"]) == 11  # floor(sqrt(8^2 + 6^2)) + 1 bins around (8, 6)
ok &= r["steep"]["radial_log_magnitude"][1] > r["steep"]["radial_log_magnitude"][20]
print(r["steep"]["slope_mean"], r["white"]["slope_mean"], len(r["small"]["radial_log_magnitude"]))
sys.exit(0 if ok else 1)
PY
check "slopes of k^-2 and white fields near -2 and 0, radial bins, histogram ($(cat "$dir/check.txt"))" '[ $? -eq 0 ]'
"$py" "$src/tools/spectrum.py" "$dir/fields.safetensors" -l nothing >/dev/null 2>&1
check "no matching layer: an error" '[ $? -ne 0 ]'
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
