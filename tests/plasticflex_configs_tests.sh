#!/usr/bin/env bash
# plasticflex_configs_tests.sh - tools/make_plasticflex_configs.py (ctest "plasticflex_configs"): run
# into a temporary directory, it writes the 40 configs of the grid byte for byte as committed in
# configs/plasticflex/ (and every committed grid file is one it writes); each passes
# `bioflex-train --dry-run`; and the recipe in them is the reference's (plasticflex.md 1 and 5.1:
# SGD lr 0.1, momentum 0.9, weight decay 1e-5, cosine per epoch; VGG-11 on CIFAR-10 at batch 128,
# 120 epochs, dropout 0.5; VGG-6 on MNIST at 128, 120, 0.3; VGG-16 on ImageNet-100 at 256, 180, 0.3;
# the LIF cells over T = 10 steps, 4 on Fashion-MNIST), which a regenerated pair of drifted files
# would not show.
# Usage: plasticflex_configs_tests.sh TRAIN SRC
set -u
train=$1 src=$2
py=$(command -v python3 || command -v /usr/bin/python3)
dir=$(mktemp -d /tmp/bioflex_pf_configs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
pass=0 fail=0
check() { if eval "$2"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $1"; fi; }

"$py" "$src/tools/make_plasticflex_configs.py" --out "$dir/gen" >"$dir/gen.out" 2>&1
rc=$?
check "make_plasticflex_configs.py --out runs (exit $rc: $(head -3 "$dir/gen.out"))" '[ $rc -eq 0 ]'
check "it writes the 40 configs of the grid" '[ "$(ls "$dir/gen" | grep -c "\.ini$")" -eq 40 ]'
drift=""
for f in "$dir"/gen/*.ini; do
  cmp -s "$f" "$src/configs/plasticflex/$(basename "$f")" || drift+=" $(basename "$f")"
done
check "the written configs are the committed ones (drifted:${drift:- none})" '[ -z "$drift" ]'
[ -z "$drift" ] || for f in $drift; do diff -u "$src/configs/plasticflex/$f" "$dir/gen/$f" | head -20; done
stale=""
for f in "$src"/configs/plasticflex/{cifar10_vgg11,mnist_vgg6,fashion_mnist_vgg6,imagenet100_vgg16}_*.ini; do
  [ -e "$dir/gen/$(basename "$f")" ] || stale+=" $(basename "$f")"
done
check "every committed grid config is one the tool writes (not written:${stale:- none})" '[ -z "$stale" ]'

bad=""
for f in "$dir"/gen/*.ini; do  # from the source tree: the ImageNet-100 configs' class_list is relative to it
  (cd "$src" && "$train" --dry-run "$f") 2>&1 | grep -qE "^total: [0-9]+ parameters" || bad+=" $(basename "$f")"
done
check "every written config passes bioflex-train --dry-run (failed:${bad:- none})" '[ -z "$bad" ]'

"$py" - "$dir/gen" >"$dir/recipe.out" 2>&1 <<'PY'
import configparser, glob, os, sys
want = {"cifar10_vgg11": ("cifar10", "plasticflex_vgg11", 128, 120, 0.5, 10),
        "mnist_vgg6": ("mnist", "plasticflex_vgg6", 128, 120, 0.3, 10),
        "fashion_mnist_vgg6": ("fashion_mnist", "plasticflex_vgg6", 128, 120, 0.3, 4),
        "imagenet100_vgg16": ("imagenet100", "plasticflex_vgg16", 256, 180, 0.3, 10)}
neuron = {"ann": ("none", None, "true"), "snn_clamp01": ("clamp01", 1, "true"), "snn_step": ("step", 1, "true"),
          "snn_lif": ("lif", "T", "true"), "snn_lif_nostbp": ("lif", "T", "false")}
bad = []
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.ini"))):
    name = os.path.basename(path)[:-4]
    ds = next(d for d in want if name.startswith(d + "_"))
    flex = name.endswith("_flex")
    mode = name[len(ds) + 1:len(name) - (5 if flex else 0)]
    c = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    c.read(path)
    dataset, arch, batch, epochs, dropout, T = want[ds]
    kind, steps, stbp = neuron[mode]
    checks = {("data", "dataset"): dataset, ("model", "arch"): arch, ("data", "batch_size"): str(batch),
              ("run", "epochs"): str(epochs), ("model", "dropout"): str(dropout), ("optim", "optimizer"): "sgd",
              ("optim", "lr"): "0.1", ("optim", "momentum"): "0.9", ("optim", "weight_decay"): "1e-5",
              ("schedule", "type"): "cosine", ("schedule", "unit"): "epoch", ("spiking", "neuron"): kind,
              ("spiking", "use_stbp"): stbp, ("model", "flex"): "true" if flex else "false",
              ("data", "input_noise_std"): "0.1" if ds == "cifar10_vgg11" else "0.0"}
    if steps is not None:
        checks[("spiking", "time_steps")] = str(T if steps == "T" else steps)
    if flex:  # the reference's mask path (plasticflex.md 2): threshold logits, bn_logits, SIGMOID_HARD, bilinear
        checks.update({("model", "flex_joint"): "mask", ("model", "flex_mask"): "sigmoid_hard",
                       ("model", "flex_logits_bn"): "true", ("model", "flex_channels"): "bilinear"})
    for (section, key), value in checks.items():
        got = c.get(section, key, fallback=None)
        if got != value:
            bad.append(f"{name}: [{section}] {key} = {got}, the reference's {value}")
print("\n".join(bad) if bad else "recipe as the reference's in all %d" % len(glob.glob(os.path.join(sys.argv[1], "*.ini"))))
sys.exit(1 if bad else 0)
PY
rc=$?
check "the written configs carry the reference's recipe ($(head -5 "$dir/recipe.out" | tr '\n' ';'))" '[ $rc -eq 0 ]'

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
