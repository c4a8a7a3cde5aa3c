#!/usr/bin/env bash
# Command-line behaviour of bioflex-train and bioflex-eval: exit status (0 ok, 2 bad command line
# or config, 1 runtime failure), messages that name file:line, key and allowed values, --dry-run's
# model table, a tiny train -> eval -> corrupt -> refuse round trip on procedural data, a run
# stopped by SIGTERM and resumed, stopped by SIGUSR1, and tools/plot_metrics.py on a run's metrics.
set -u
train="$1"; eval_="$2"; src="$3"
tmp=$(mktemp -d /tmp/bioflex_cli_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0

# expect NAME STATUS PATTERN -- command...: runs it, checks the exit status and that the output matches PATTERN
expect() {
  local name="$1" want="$2" pattern="$3"; shift 4
  local out; out=$("$@" 2>&1); local got=$?
  if [ "$got" -eq "$want" ] && grep -qE -- "$pattern" <<<"$out"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL $name: exit $got (want $want), output should match /$pattern/:"; echo "$out" | tail -n 8
  fi
}

cat > "$tmp/tiny.ini" <<INI
[run]
dir = $tmp/run
device = cpu
epochs = 2
log_interval = 2
[data]
dataset = procedural
procedural_train = 96
procedural_test = 32
procedural_size = 8
procedural_classes = 3
batch_size = 16
[model]
arch = cnn
channels = 4
hidden = 8
[optim]
optimizer = sgd
lr = 0.05
INI
# tiny.ini without its cnn widths and generated-data keys, for other archs, datasets and BU-TD
# (a key the run would not read is refused)
grep -v '^channels\|^hidden' "$tmp/tiny.ini" > "$tmp/any_arch.ini"
grep -v '^procedural_' "$tmp/any_arch.ini" > "$tmp/any_data.ini"
printf '[run]\nepochs = 2\n[modle]\narch = cnn\n' > "$tmp/badsection.ini"
printf '[run]\nepochs = 2\n[model]\narhc = cnn\n' > "$tmp/badkey.ini"
printf '[model]\narch = vgg19\n' > "$tmp/badenum.ini"
printf '[data]\n\nbatch_size = 0\n' > "$tmp/badrange.ini"
printf '[optim]\nlr = fast\n' > "$tmp/badtype.ini"

expect "help" 0 "usage: bioflex-train" -- "$train" --help
expect "version" 0 "bioflex-train [0-9]+\.[0-9]+" -- "$train" --version
expect "help-config lists keys" 0 "label_smoothing" -- "$train" --help-config
expect "no config" 2 "no config file" -- "$train"
expect "unknown option" 2 "unknown option --frobnicate" -- "$train" --frobnicate "$tmp/tiny.ini"
expect "a path option given twice" 2 "given twice: --gradient-flow" -- "$eval_" --checkpoint "$tmp/none" \
  --gradient-flow "$tmp/a.csv" --gradient-flow "$tmp/b.csv" "$tmp/tiny.ini"
expect "bad --device" 2 "--device must be cpu, cuda or auto" -- "$train" --device tpu "$tmp/tiny.ini"
# [run] force_nccl sends a one-GPU run through the NCCL path (bench/dp_overhead.sh): refused on the
# CPU; without a GPU, bf_train_gpus is reached and says what is missing (NCCL, or a GPU).
expect "force_nccl on cpu" 2 "force_nccl = true needs \\[run\\] device" -- "$train" "$tmp/tiny.ini" --set run.force_nccl=true
if ! nvidia-smi -L >/dev/null 2>&1; then
  out=$("$train" "$tmp/tiny.ini" --set run.device=auto --set run.force_nccl=true --set run.dir="$tmp/fn" 2>&1); got=$?
  if { [ $got -eq 1 ] && grep -q "force_nccl needs NCCL" <<<"$out"; } || { [ $got -eq 2 ] && grep -q "sees 0 GPU" <<<"$out"; }; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAIL force_nccl without a GPU: exit $got:"; echo "$out" | tail -n 4
  fi
fi
expect "missing file" 2 "nonexistent.ini" -- "$train" "$tmp/nonexistent.ini"
expect "unknown section" 2 "badsection.ini:3: .*modle.*allowed: run, data, model, optim, schedule, spiking" -- "$train" "$tmp/badsection.ini"
expect "unknown key" 2 "badkey.ini:4: .*arhc.*allowed: .*arch" -- "$train" "$tmp/badkey.ini"
expect "bad enum" 2 "badenum.ini:2: .*arch.*vgg19.*cnn, vgg6, vgg11, vgg16, resnet18, resnet50" -- "$train" "$tmp/badenum.ini"
expect "out of range" 2 "badrange.ini:3: .*batch_size.*1\.\.65536" -- "$train" "$tmp/badrange.ini"
expect "wrong type" 2 "badtype.ini:2: .*lr.*fast" -- "$train" "$tmp/badtype.ini"
expect "bad --set key" 2 "--set optim.lrr=1.*lrr" -- "$train" --set optim.lrr=1 "$tmp/tiny.ini"
expect "bad --set value" 2 "--set run.epochs=-1.*epochs" -- "$train" --set run.epochs=-1 "$tmp/tiny.ini"
expect "spike_count readout needs neurons" 2 "readout = spike_count needs \\[spiking\\] neuron" -- "$train" --set spiking.readout=spike_count "$tmp/tiny.ini"
expect "rate coding needs neurons" 2 "encoding = rate needs \\[spiking\\] neuron" -- "$train" --set spiking.encoding=rate "$tmp/tiny.ini"
expect "rate coding needs raw pixels" 2 "encoding = rate needs \\[data\\] normalize = false" -- "$train" \
  --set spiking.neuron=lif --set spiking.time_steps=2 --set spiking.encoding=rate "$tmp/tiny.ini"
expect "the reference's use_STBP on a stateless neuron" 2 "use_STBP = true is neuron = step" -- "$train" \
  --set spiking.neuron=clamp01 --set spiking.use_STBP=true "$tmp/tiny.ini"
expect "use_stbp = false without a membrane" 2 "use_stbp = false applies to \\[spiking\\] neuron = lif or if" -- "$train" \
  --set spiking.neuron=step --set spiking.use_stbp=false "$tmp/tiny.ini"
expect "recompute_charge without a charge" 2 "recompute_charge = false applies to \\[spiking\\] neuron = lif or if only \\(got step" -- \
  "$train" --dry-run --set spiking.neuron=step --set spiking.recompute_charge=false "$tmp/tiny.ini"
expect "fragments with a [model] key" 2 "\\[model\\] arch = vgg6.*not \\[fragments\\] network = lateral" -- "$train" --dry-run \
  --set model.arch=vgg6 "$src/configs/fragments/net_fragments.ini"
expect "fragments: a threshold with Bernoulli cells" 2 "act_threshold = 0.3 is not read with \\[fragments\\] bernoulli = true" -- \
  "$train" --dry-run --set fragments.bernoulli=true --set fragments.act_threshold=0.3 "$src/configs/fragments/net_fragments.ini"
expect "a [fragments] key without the network" 2 "time_steps = 4 needs \\[fragments\\] network = lateral" -- "$train" --dry-run \
  --set fragments.time_steps=4 "$tmp/tiny.ini"
# a Net Fragments checkpoint's evaluation appends to its own run's results, whatever [run] dir says
tiny_frag=(--set fragments.train_lines=10 --set fragments.eval_lines=2 --set fragments.eval_noise_max=0.01
           --set fragments.eval_interrupt_max=1 --set run.epochs=1)
"$train" --set run.dir="$tmp/frag_run" "${tiny_frag[@]}" "$src/configs/fragments/net_fragments.ini" >/dev/null 2>&1
expect "fragments eval writes beside its checkpoint" 0 "results appended to $tmp/frag_run/fragments_results.jsonl" -- \
  "$eval_" --checkpoint "$tmp/frag_run/checkpoints/epoch_0001" --set run.dir="$tmp/frag_elsewhere" "${tiny_frag[@]}" \
  "$src/configs/fragments/net_fragments.ini"
[ ! -e "$tmp/frag_elsewhere" ] && [ "$(grep -c . "$tmp/frag_run/fragments_results.jsonl" 2>/dev/null)" -ge 4 ] \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL fragments eval: results not in the checkpoint's run"; }
expect "V1 keys on a VGG" 2 "local_rf = true applies to \\[model\\] arch = resnet50 only" -- "$train" --dry-run \
  --set model.local_rf=true "$tmp/tiny.ini"
expect "the Dropout2d of resnet50_local_rf in a composite" 2 "local_rf_dropout = 0.2 needs \\[model\\] local_rf = true without center_surround" -- \
  "$train" --dry-run --set model.local_rf_dropout=0.2 "$src/configs/v1/resnet50_composite_a_imagenet64.ini"
expect "pack_spikes without spikes" 2 "pack_spikes = false applies to \\[spiking\\] neuron = lif, if or step only \\(got none" -- \
  "$train" --dry-run --set spiking.pack_spikes=false "$tmp/tiny.ini"
expect "num_classes below the data's is located" 2 "num_classes = 2 but \\[data\\] dataset = procedural has 3 classes.*\\[model\\] num_classes: --set" -- \
  "$train" --set model.num_classes=2 "$tmp/tiny.ini"
expect "a subset of generated data is refused before the dry run" 2 "subset needs a stored single-task .*not procedural" -- \
  "$train" --dry-run --set data.subset=balanced "$tmp/tiny.ini"
expect "gray_to_rgb on colour or generated data is refused" 2 "gray_to_rgb = true applies to .*not procedural" -- \
  "$train" --dry-run --set data.gray_to_rgb=true "$tmp/tiny.ini"
expect "bad --set form" 2 "section.key=value" -- "$train" --set epochs "$tmp/tiny.ini"
expect "dry-run VGG-16 table" 0 "total: 134678692 parameters" -- "$train" --dry-run --set model.arch=vgg16 \
  --set data.procedural_size=224 --set data.procedural_classes=100 "$tmp/any_arch.ini"
expect "dry-run prints the resolved config" 0 "procedural_classes *= *100" -- "$train" --dry-run --set model.arch=vgg16 \
  --set data.procedural_size=224 --set data.procedural_classes=100 "$tmp/any_arch.ini"
expect "dry-run notes an empty JPEG dataset path" 0 "note: \\[data\\] path is empty: a training start needs it" -- \
  "$train" --dry-run --set data.path= "$src/configs/flexnet/flex_resnet50_imagenet100.ini"
expect "dry-run ResNet-50 table" 0 "layer4.2.conv3 +conv2d" -- "$train" --dry-run --set model.arch=resnet50 \
  --set data.procedural_size=64 "$tmp/any_arch.ini"
expect "a model that does not fit the images is a config error" 2 \
  "any_arch.ini: \\[model\\] arch = vgg16 does not fit the 3x8x8 images of \\[data\\] dataset = procedural.*features.* does not fit" \
  -- "$train" --set model.arch=vgg16 "$tmp/any_arch.ini"
expect "a BU-TD network that does not fit the images is a config error" 2 \
  "\\[butd\\] network = simple does not fit the 3x8x8 images.*kernel 5x5 .pad 0. does not fit input 2x2 .set where: \\[butd\\] network: --set" \
  -- "$train" --dry-run --set butd.network=simple "$tmp/any_arch.ini"
expect "missing dataset is a runtime error" 1 "nowhere" -- "$train" --set data.dataset=mnist --set data.path="$tmp/nowhere" "$tmp/any_data.ini"

expect "train" 0 "test accuracy: [0-9.]+% top-1" -- "$train" "$tmp/tiny.ini"
[ -s "$tmp/run/metrics.jsonl" ] && grep -q '"type":"eval"' "$tmp/run/metrics.jsonl" && grep -q '"images_per_s"' "$tmp/run/metrics.jsonl" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL metrics.jsonl lacks train/eval lines"; }
# epochs count from 1 in both kinds of line: the last step of epoch 1 (6 of 6) is logged as epoch 1,
# and so is the evaluation after it
grep -q '"type":"train","epoch":1,"step":6,' "$tmp/run/metrics.jsonl" && grep -q '"type":"train","epoch":2,"step":12,' "$tmp/run/metrics.jsonl" \
  && grep -q '"type":"eval","split":"test","epoch":1,"step":6,' "$tmp/run/metrics.jsonl" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL metrics.jsonl: train and eval lines number epochs alike"; head -4 "$tmp/run/metrics.jsonl"; }
[ -f "$tmp/run/config.ini" ] && [ -f "$tmp/run/checkpoints/epoch_0002/model.safetensors" ] && [ -f "$tmp/run/checkpoints/latest" ] \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL run directory lacks config.ini or checkpoints"; }
expect "eval needs --checkpoint" 2 "--checkpoint DIR is required" -- "$eval_" "$tmp/tiny.ini"
expect "eval refuses bioflex-train's options" 2 "--help-config are bioflex-train options" -- \
  "$eval_" --help-config --checkpoint "$tmp/run" "$tmp/tiny.ini"
expect "train refuses eval's --checkpoint" 2 "--checkpoint is a bioflex-eval option; to continue a run use --resume" \
  -- "$train" --checkpoint "$tmp/run" --dry-run "$tmp/tiny.ini"
expect "eval a run directory" 0 "top-1 [0-9.]+%" -- "$eval_" --checkpoint "$tmp/run" "$tmp/tiny.ini"
# --loss-surface: a 4 x 4 plane (reference directions) into a CSV of 16 points after its header
expect "eval writes a loss surface" 0 "loss surface: 4 x 4 points \\(reference directions, test split, evaluation mode\\)" -- "$eval_" \
  --checkpoint "$tmp/run" --loss-surface "$tmp/surface.csv" --set analysis.surface_steps=4 \
  --set analysis.surface_directions=reference "$tmp/tiny.ini"
[ "$(grep -c '^-\?[0-9]' "$tmp/surface.csv" 2>/dev/null)" = 16 ] && grep -q '^alpha,beta,loss,top1$' "$tmp/surface.csv" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL loss surface CSV: want a header and 16 points"; }
# ... and as the reference scored it: its first training batch in training mode
expect "eval writes a loss surface the reference's way" 0 "loss surface: 3 x 3 points \\(reference directions, training split, training mode\\)" \
  -- "$eval_" --checkpoint "$tmp/run" --loss-surface "$tmp/surface_train.csv" --set analysis.surface_steps=3 \
  --set analysis.surface_directions=reference --set analysis.surface_mode=train --set analysis.surface_split=train "$tmp/tiny.ini"
expect "train refuses --loss-surface" 2 "--loss-surface is a bioflex-eval option" -- "$train" --loss-surface x.csv \
  --dry-run "$tmp/tiny.ini"
expect "surface_steps out of range" 2 "surface_steps.*2\\.\\.1000" -- "$eval_" --checkpoint "$tmp/run" \
  --loss-surface "$tmp/x.csv" --set analysis.surface_steps=1 "$tmp/tiny.ini"
# --attack: FGSM over 5 epsilons of the first 20 test images into a JSON file; its clean point is
# bioflex-eval's top-1 of those 20 images
expect "eval writes an attack" 0 "fgsm attack \\(pixels domain\\): 20 images" -- "$eval_" --checkpoint "$tmp/run" \
  --attack "$tmp/attack.json" --set analysis.attack_epsilons=5 --set analysis.attack_samples=20 "$tmp/tiny.ini"
clean=$("$eval_" --checkpoint "$tmp/run" --set data.procedural_test=20 "$tmp/tiny.ini" 2>/dev/null | sed -n 's/.*top-1 \([0-9.]*\)%.*/\1/p')
first=$(tr -d '\n ' < "$tmp/attack.json" 2>/dev/null | sed -n 's/.*"top1":\[\([0-9.e-]*\),.*/\1/p')
[ -n "$first" ] && [ -n "$clean" ] && awk -v a="$first" -v b="$clean" 'BEGIN { exit !(a * 100 - b < 0.01 && b - a * 100 < 0.01) }' \
  && [ "$(tr -d '\n ' < "$tmp/attack.json" | grep -o '"epsilons":\[[^]]*\]' | tr ',' '\n' | wc -l)" = 5 ] \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL attack JSON: top-1 at epsilon 0 '$first', evaluation '$clean' (5 epsilons wanted)"; }
expect "eval writes an SPSA attack" 0 "spsa attack \\(pixels domain\\): 8 images" -- "$eval_" --checkpoint "$tmp/run" \
  --attack "$tmp/spsa.json" --set analysis.attack_method=spsa --set analysis.attack_epsilons=3 \
  --set analysis.attack_samples=8 --set analysis.attack_spsa_samples=4 "$tmp/tiny.ini"
grep -q '"spsa_samples": 4' "$tmp/spsa.json" 2>/dev/null && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL SPSA JSON: no spsa_samples 4"; }
expect "attack_spsa_delta must be positive" 2 "attack_spsa_delta" -- "$eval_" --checkpoint "$tmp/run" \
  --attack "$tmp/x.json" --set analysis.attack_spsa_delta=0 "$tmp/tiny.ini"
expect "train refuses --attack" 2 "--attack is a bioflex-eval option" -- "$train" --attack x.json --dry-run "$tmp/tiny.ini"
# --results: the printed scores as JSON, the counts of correct images behind the fractions
expect "eval --results" 0 "results -> $tmp/results.json" -- "$eval_" --checkpoint "$tmp/run" --results "$tmp/results.json" \
  --set run.eval_train=true "$tmp/tiny.ini"
printed=$("$eval_" --checkpoint "$tmp/run" "$tmp/tiny.ini" 2>/dev/null | sed -n 's/^test: .* top-1 \([0-9.]*\)%.*/\1/p')
python3 - "$tmp/results.json" "$printed" <<'PY' && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL --results"; cat "$tmp/results.json"; }
import json, sys
r = json.load(open(sys.argv[1]))
test, train = r["test"], r["train"]
assert r["checkpoint"].endswith("checkpoints/epoch_0002"), r["checkpoint"]
assert test["images"] == 32 and train["images"] == 96, (test["images"], train["images"])
for split in (test, train):
    assert split["correct_top1"] == round(split["top1"] * split["images"]), split
    assert split["top1"] == split["correct_top1"] / split["images"], split  # exact, not a float's rounding
    assert split["correct_top1"] <= split["correct_top5"] <= split["images"], split
    assert split["nonfinite_losses"] == 0 and split["loss"] > 0, split
assert "%.2f" % (100 * test["top1"]) == sys.argv[2], (test["top1"], sys.argv[2])
PY
expect "train refuses --results" 2 "--results is a bioflex-eval option" -- "$train" --results x.json --dry-run "$tmp/tiny.ini"
expect "--results and an analysis on one file" 2 "--attack .* and --results .* name the same file" -- "$eval_" \
  --checkpoint "$tmp/run" --attack "$tmp/same.json" --results "$tmp/same.json" "$tmp/tiny.ini"
expect "--results into the run's files" 2 "--results .* would write into the checkpoints or the files of run" -- "$eval_" \
  --checkpoint "$tmp/run" --results "$tmp/run/metrics.jsonl" "$tmp/tiny.ini"
# --hessian: 2 eigenvalues, a trace and a density of 3 nodes into JSON, in evaluation mode (the default)
expect "eval writes the Hessian" 0 "hessian \\(evaluation mode\\): top eigenvalue [0-9.e+-]+, trace" -- "$eval_" --checkpoint "$tmp/run" \
  --hessian "$tmp/hessian.json" --set analysis.hessian_top_n=2 --set analysis.hessian_max_iterations=20 \
  --set analysis.hessian_density_iterations=3 "$tmp/tiny.ini"
tr -d '\n ' < "$tmp/hessian.json" 2>/dev/null | grep -q '^{"mode":"eval",' \
  && tr -d '\n ' < "$tmp/hessian.json" | grep -q '"eigenvalues":\[[0-9.e+-]*,[0-9.e+-]*\],"iterations"' \
  && tr -d '\n ' < "$tmp/hessian.json" | grep -q '"density_weights":\[[0-9.e+-]*,[0-9.e+-]*,[0-9.e+-]*\]' \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL Hessian JSON: want mode eval, 2 eigenvalues and 3 density weights"; }
expect "eval writes the input Hessian" 0 "input hessian: 2 images, [0-9]+ Hessian-vector products" -- "$eval_" \
  --checkpoint "$tmp/run" --input-hessian "$tmp/input_hessian.json" --set analysis.input_hessian_images=2 "$tmp/tiny.ini"
[ "$(tr -d '\n ' < "$tmp/input_hessian.json" 2>/dev/null | grep -o '"eigenvalues":\[[0-9.e+-]*,[0-9.e+-]*\]' | wc -l)" = 2 ] \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL input Hessian JSON: want 2 images of 2 eigenvalues"; }
# [analysis] input_hessian_positions: the images named, in the order given, each with the results it
# has among the first images (position 1 above), its predicted class and whether that is right;
# a position outside the split is a config error naming the key and the split's size
expect "eval writes the input Hessian of chosen images" 0 "input hessian: 2 images" -- "$eval_" --checkpoint "$tmp/run" \
  --input-hessian "$tmp/input_hessian_chosen.json" --set analysis.input_hessian_positions=17,1 "$tmp/tiny.ini"
python3 - "$tmp/input_hessian.json" "$tmp/input_hessian_chosen.json" <<'PY' && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL input_hessian_positions: want positions 17, 1 and image 1 as among the first"; }
import json, sys
first, chosen = (json.load(open(p))["per_image"] for p in sys.argv[1:])
same = ("label", "predicted", "correct", "loss", "eigenvalues", "ritz")
sys.exit(not ([im["position"] for im in chosen] == [17, 1] and all(chosen[1][k] == first[1][k] for k in same)
              and all(im["correct"] == (im["predicted"] == im["label"]) for im in first + chosen)))
PY
expect "input_hessian_positions outside the test split" 2 \
  "\\[analysis\\] input_hessian_positions: position 32 is outside the test split of 32 images" -- "$eval_" \
  --checkpoint "$tmp/run" --input-hessian "$tmp/x.json" --set analysis.input_hessian_positions=5,32 "$tmp/tiny.ini"
expect "eval writes the Hessian in training mode" 0 "hessian \\(training mode\\): top eigenvalue" -- "$eval_" \
  --checkpoint "$tmp/run" --hessian "$tmp/hessian_train.json" --set analysis.hessian_mode=train \
  --set analysis.hessian_top_n=1 --set analysis.hessian_max_iterations=5 "$tmp/tiny.ini"
expect "hessian_mode not known" 2 "hessian_mode.*train, eval" -- "$eval_" --checkpoint "$tmp/run" --hessian "$tmp/x.json" \
  --set analysis.hessian_mode=both "$tmp/tiny.ini"
expect "hessian_step must be positive" 2 "hessian_step" -- "$eval_" --checkpoint "$tmp/run" --hessian "$tmp/x.json" \
  --set analysis.hessian_step=0 "$tmp/tiny.ini"
# --activations: the first 20 test images through the tiny CNN's 9 layers
expect "eval writes activations" 0 "activations: 9 layers of 20 images" -- "$eval_" --checkpoint "$tmp/run" \
  --activations "$tmp/act.safetensors" --set analysis.activation_images=20 "$tmp/tiny.ini"
for py in python3 /usr/bin/python3; do # tools/spectrum.py (FlexNet 5.3) reads the dump, where numpy is
  if command -v "$py" >/dev/null && "$py" -c "import numpy" 2>/dev/null; then
    "$py" "$src/tools/spectrum.py" "$tmp/act.safetensors" -o "$tmp/spectrum.json" >/dev/null 2>&1 \
      && grep -q '"slope_mean"' "$tmp/spectrum.json" && passed=$((passed + 1)) \
      || { failed=$((failed + 1)); echo "FAIL tools/spectrum.py on the activations dump"; }
    break
  fi
done
expect "activation_layers names no layer" 1 "no layer's name starts with 'conv'" -- "$eval_" --checkpoint "$tmp/run" \
  --activations "$tmp/act.safetensors" --set analysis.activation_layers=conv "$tmp/tiny.ini"
# --gradient-flow: one CSV line per parameter tensor of the tiny CNN (conv, batch-norm, two linear: 8)
expect "eval writes the gradient flow" 0 "gradient flow: 8 parameter tensors over 2 training batches" -- "$eval_" \
  --checkpoint "$tmp/run" --gradient-flow "$tmp/flow.csv" --set analysis.gradient_batches=2 "$tmp/tiny.ini"
[ "$(grep -c '^features\|^classifier' "$tmp/flow.csv" 2>/dev/null)" = 8 ] \
  && grep -q '^parameter,count,mean_abs_grad,max_abs_grad,grad_norm,weight_norm,grad_to_weight$' "$tmp/flow.csv" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL gradient flow CSV: want a header and 8 rows"; }
expect "eval writes the gradient flow in evaluation mode" 0 "gradient flow: 8 parameter tensors over 1 training batches, evaluation mode" \
  -- "$eval_" --checkpoint "$tmp/run" --gradient-flow "$tmp/flow_eval.csv" --set analysis.gradient_mode=eval "$tmp/tiny.ini"
# An analysis never writes over what the evaluation reads nor over the checkpoints and files of the
# run it evaluates (README): refused with exit status 2 before anything runs, the file named left
# byte for byte as it was. A new file in the run directory is written.
weights="$tmp/run/checkpoints/epoch_0002/model.safetensors"
weights_sum=$(cksum <"$weights"); config_sum=$(cksum <"$tmp/tiny.ini"); metrics_sum=$(cksum <"$tmp/run/metrics.jsonl")
expect "eval refuses an output over the checkpoint's weights" 2 \
  "--activations $weights would write into the checkpoints or the files of run .*/run " \
  -- "$eval_" --checkpoint "$tmp/run" --activations "$weights" "$tmp/tiny.ini"
expect "eval refuses an output over the run's metrics" 2 "--gradient-flow .*/run/metrics.jsonl would write into the checkpoints or the files of run" \
  -- "$eval_" --checkpoint "$tmp/run/checkpoints/epoch_0001" --gradient-flow "$tmp/run/metrics.jsonl" "$tmp/tiny.ini"
expect "eval writes a new file in the run directory" 0 "gradient flow: 8 parameter tensors" \
  -- "$eval_" --checkpoint "$tmp/run" --gradient-flow "$tmp/run/flow.csv" "$tmp/tiny.ini"
[ -s "$tmp/run/flow.csv" ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL eval wrote no $tmp/run/flow.csv"; }
rm -f "$tmp/run/flow.csv"
expect "eval refuses an output over its config file (another spelling of it)" 2 \
  "--loss-surface $tmp/./tiny.ini would overwrite the config file $tmp/tiny.ini, which this evaluation reads" \
  -- "$eval_" --checkpoint "$tmp/run" --loss-surface "$tmp/./tiny.ini" "$tmp/tiny.ini"
[ "$(cksum <"$weights")" = "$weights_sum" ] && [ "$(cksum <"$tmp/tiny.ini")" = "$config_sum" ] \
  && [ "$(cksum <"$tmp/run/metrics.jsonl")" = "$metrics_sum" ] && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL a refused analysis output changed the weights, the config or metrics.jsonl"; }
# two analyses into one file: the second would replace the first's result
expect "eval refuses two analyses into one file, naming both flags" 2 \
  "--loss-surface $tmp/same.csv and --gradient-flow $tmp/./same.csv name the same file" \
  -- "$eval_" --checkpoint "$tmp/run" --gradient-flow "$tmp/./same.csv" --loss-surface "$tmp/same.csv" "$tmp/tiny.ini"
[ ! -e "$tmp/same.csv" ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL a refused pair of analyses wrote $tmp/same.csv"; }
expect "an unwritable output says why" 1 "--gradient-flow: cannot write $tmp/nodir/x.csv: No such file or directory" \
  -- "$eval_" --checkpoint "$tmp/run" --gradient-flow "$tmp/nodir/x.csv" "$tmp/tiny.ini"
# epoch 1's weights copied into epoch 2's checkpoint: refused (the check --resume makes), not scored as epoch 2
mkdir -p "$tmp/mixed" && cp "$tmp/run/checkpoints/epoch_0002/state.safetensors" "$tmp/run/checkpoints/epoch_0001/model.safetensors" "$tmp/mixed/"
expect "eval refuses an output inside a checkpoint directory of no run" 2 "--gradient-flow .*mixed/flow.csv lies inside checkpoint directory .*mixed" \
  -- "$eval_" --checkpoint "$tmp/mixed" --gradient-flow "$tmp/mixed/flow.csv" "$tmp/tiny.ini"
expect "eval refuses weights from another epoch than the state file's" 1 \
  "mixed/state.safetensors was written beside weights with checksum [0-9a-f]{8}, but .*mixed/model.safetensors has [0-9a-f]{8}: the two files come from different checkpoints" \
  -- "$eval_" --checkpoint "$tmp/mixed" "$tmp/tiny.ini"
# --routing needs channel-wise max flex layers (test_routing checks its statistics)
expect "routing refuses a network without flex layers" 2 "--routing measures channel-wise max flex layers .*this config has no flex layers" \
  -- "$eval_" --checkpoint "$tmp/run" --routing "$tmp/routing.json" "$tmp/tiny.ini"
# and leaves no file behind (an empty one would pass for a result)
[ ! -e "$tmp/routing.json" ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL refused routing left $tmp/routing.json"; }
expect "train refuses --routing" 2 "--routing is a bioflex-eval option" -- "$train" --routing x.json --dry-run "$tmp/tiny.ini"
# ... and on a flex network of the tiny config: its JSON and maps, read back by the summary below
flex=(--set model.flex=true --set run.dir="$tmp/flex_run" --set run.epochs=1)
expect "train a tiny flex network" 0 "test accuracy" -- "$train" "${flex[@]}" "$tmp/tiny.ini"
expect "eval writes the routing" 0 "routing: 1 channel-wise max flex layers -> .*routing.json, maps -> .*routing.safetensors" \
  -- "$eval_" --checkpoint "$tmp/flex_run" --routing "$tmp/routing.json" \
  --set analysis.routing_maps="$tmp/routing.safetensors" "${flex[@]}" "$tmp/tiny.ini"
# [model] static_routing (FlexNet's MaxPrefResNet): that routing fixes features.0 to one branch. The
# flex checkpoint evaluates in the fixed network (a pool site lacks the conv the file holds), whose
# own routing is then all pool; threshold 0 makes the site the plain conv features.0.flex_conv, which
# takes the flex conv's tensors; a fixed network trains from the flex weights; a routing file of
# another network, and a threshold without a file, are refused.
pool_site=(--set model.static_routing="$tmp/routing.json" --set model.static_routing_threshold=1)
expect "dry-run shows a static pool site" 0 "features.0 +flex_pool " -- "$train" --dry-run "${flex[@]}" "${pool_site[@]}" \
  "$tmp/tiny.ini"
expect "eval a flex checkpoint with its site fixed to the pool" 0 "routing: 1 channel-wise max flex layers" -- "$eval_" \
  --checkpoint "$tmp/flex_run" --routing "$tmp/routing_pool.json" --set analysis.bn_recalibrate_batches=2 "${flex[@]}" \
  "${pool_site[@]}" "$tmp/tiny.ini"
grep -q '"name": "features.0", "joint": "channelwise_max"' "$tmp/routing_pool.json" \
  && grep -q '"conv": 0, "always_conv": 0, "always_pool": 1,' "$tmp/routing_pool.json" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL static pool site: its routing should be all pool"; }
expect "eval a flex checkpoint with its site fixed to the conv" 0 "top-1 [0-9.]+%" -- "$eval_" --checkpoint "$tmp/flex_run" \
  "${flex[@]}" --set model.static_routing="$tmp/routing.json" --set model.static_routing_threshold=0 "$tmp/tiny.ini"
expect "train a fixed network from the flex weights" 0 "test accuracy" -- "$train" "${flex[@]}" "${pool_site[@]}" \
  --set model.init_weights="$tmp/flex_run" --set run.dir="$tmp/pool_site_run" "$tmp/tiny.ini"
expect "static_routing of another network" 2 "routing.json has no layer features.4, a flex site of this model" -- "$train" \
  --dry-run "${flex[@]}" "${pool_site[@]}" --set model.channels=4,6 "$tmp/tiny.ini"
expect "static_routing_threshold without static_routing" 2 "applies with \[model\] static_routing only" -- "$train" \
  --dry-run "${flex[@]}" --set model.static_routing_threshold=0.3 "$tmp/tiny.ini"
expect "attack_method not known" 2 "attack_method.*fgsm, pgd, gaussian_noise" -- "$eval_" --checkpoint "$tmp/run" \
  --attack "$tmp/x.json" --set analysis.attack_method=cw "$tmp/tiny.ini"
# a --gpus run's config.ini says gpus = 2 (and device = cuda or auto): bioflex-eval scores on one device
expect "eval a --gpus run's config on the CPU" 0 "top-1 [0-9.]+%" -- "$eval_" --checkpoint "$tmp/run" --device cpu \
  --set run.gpus=2 "$tmp/tiny.ini"
expect "resume a finished run" 0 "resumed from .*epoch_0002" -- "$train" --resume "$tmp/run" "$tmp/tiny.ini"
expect "resume with more epochs" 0 "resumed from .*epoch 2" -- "$train" --resume "$tmp/run/checkpoints/epoch_0002" --set run.epochs=3 "$tmp/tiny.ini"
# A per-step schedule resumed at an epoch boundary with another global batch goes on in this run's
# steps: the cosine over 2 epochs of 3 steps is at 5/6 of its way on the last step (0.05 * (1 +
# cos(5 pi / 6)) / 2 = 0.00335), not past its end at the old run's step count (lr 0).
cos=(--set schedule.type=cosine --set schedule.unit=step --set run.log_interval=1)
"$train" "${cos[@]}" --set run.dir="$tmp/cos" "$tmp/tiny.ini" >/dev/null 2>&1
expect "a per-step schedule resumed with another batch" 0 "resumed from" -- "$train" "${cos[@]}" \
  --set run.dir="$tmp/cos2" --set data.batch_size=32 --resume "$tmp/cos/checkpoints/epoch_0001" "$tmp/tiny.ini"
last_lr=$(grep '"type":"train"' "$tmp/cos2/metrics.jsonl" | tail -n 1 | sed 's/.*"lr":\([^,]*\).*/\1/')
awk -v x="$last_lr" 'BEGIN { exit !(x > 0.00334 && x < 0.00336) }' && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL per-step cosine after a resume with batch 32: last lr $last_lr, expected 0.00335"; }
# Test-set input noise is drawn anew at every evaluation (keyed by its epoch), and bioflex-eval takes
# the epoch from the checkpoint: it repeats the run's score after epoch 1 and after epoch 2 exactly.
noisy=(--set data.input_noise_std=1.0)
"$train" "${noisy[@]}" --set run.dir="$tmp/noisy" "$tmp/tiny.ini" > "$tmp/noisy.log" 2>&1
for e in 1 2; do
  logged=$(sed -n "s/^eval after epoch $e: test \(loss [0-9.]*  top-1 [0-9.]*%\).*/\1/p" "$tmp/noisy.log")
  expect "eval repeats the noisy score after epoch $e" 0 "test: ${logged:-no logged score}" -- \
    "$eval_" --checkpoint "$tmp/noisy/checkpoints/epoch_000$e" "${noisy[@]}" "$tmp/tiny.ini"
done
# A BU-TD run's test noise is drawn anew at every evaluation too: with a rate too small to move the
# weights, its two evaluations differ only by their noise (and bioflex-eval repeats the second).
still=(--set butd.network=fc --set butd.hidden=16 --set butd.learning=counter_hebb --set optim.lr=1e-30
       --set data.input_noise_std=1.0)
"$train" "${still[@]}" --set run.dir="$tmp/butd_noise" "$tmp/any_arch.ini" > "$tmp/butd_noise.log" 2>&1
losses=$(grep '"type":"eval"' "$tmp/butd_noise/metrics.jsonl" | sed 's/.*"loss":\([^,]*\).*/\1/' | tr '\n' ' ')
read -r loss1 loss2 extra <<<"$losses"
[ -n "${loss2:-}" ] && [ -z "${extra:-}" ] && [ "$loss1" != "$loss2" ] && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL BU-TD test noise redrawn per evaluation: losses $losses"; }
second=$(sed -n 's/^epoch 2: .*test loss \([0-9.]*\),.*/\1/p' "$tmp/butd_noise.log")
expect "eval repeats a noisy BU-TD score" 0 "test: loss ${second:-none} " -- \
  "$eval_" --checkpoint "$tmp/butd_noise/checkpoints/epoch_0002" "${still[@]}" "$tmp/any_arch.ini"
# A learning rate that blows the weights up ends the run at the first log line whose loss is not a
# number (exit 1, naming the step and what to change), in the main loop and in BU-TD's.
expect "diverging run stops" 1 "training loss became (NaN|[+-]inf) at step 2 \(epoch 1\): lower \[optim\] lr" -- \
  "$train" --set optim.lr=1e30 --set run.dir="$tmp/diverge" "$tmp/tiny.ini"
expect "diverging BU-TD run stops" 1 "training loss became (NaN|[+-]inf) at step 2 \(epoch 1\): lower \[optim\] lr" -- \
  "$train" --set butd.network=fc --set butd.hidden=16 --set optim.lr=1e30 --set run.dir="$tmp/butd_diverge" \
  "$tmp/any_arch.ini"
# Rate-coded spikes are drawn per evaluation batch: under [run] val_batches (a shuffled test loader)
# the final whole-set evaluation still reads the split in file order, so bioflex-eval repeats it.
rate=(--set spiking.neuron=lif --set spiking.time_steps=2 --set spiking.encoding=rate --set data.normalize=false
      --set data.eval_batch_size=8 --set run.val_batches=1 --set run.epochs=1)
"$train" "${rate[@]}" --set run.dir="$tmp/rate" "$tmp/tiny.ini" > "$tmp/rate.log" 2>&1
final=$(sed -n 's/^test accuracy: .*, loss \([0-9.]*\) .*/\1/p' "$tmp/rate.log")
expect "eval repeats a rate-coded run's final score under val_batches" 0 "test: loss ${final:-none} " -- \
  "$eval_" --checkpoint "$tmp/rate" "${rate[@]}" "$tmp/tiny.ini"
# The run directory records every start (time, host, version, command line) and the config's provenance.
[ "$(tail -n 3 "$tmp/run/invocations.log" | grep -c -- "--resume")" -eq 2 ] \
  && head -n 1 "$tmp/run/config.ini" | grep -qE "^# [0-9T:-]+Z host .*bioflex-train [0-9.]+" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL invocations.log / config.ini header"; cat "$tmp/run/invocations.log"; }
expect "a non-spiking run's config.ini reads back" 0 "total: .* parameters" -- "$train" --dry-run "$tmp/run/config.ini"
# A refused resume leaves the run directory's config.ini (it describes the checkpoints) as it was.
cp "$tmp/run/config.ini" "$tmp/config_before.ini"
expect "resume under another optimizer is refused" 1 "optimizer \"sgd\", the config uses \"adamw\"" -- \
  "$train" --resume "$tmp/run" --set optim.optimizer=adamw "$tmp/tiny.ini"
cmp -s "$tmp/run/config.ini" "$tmp/config_before.ini" && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL a refused resume rewrote config.ini"; diff "$tmp/config_before.ini" "$tmp/run/config.ini"; }
cp -r "$tmp/run/checkpoints/epoch_0002" "$tmp/corrupt"
printf '\x55' | dd of="$tmp/corrupt/model.safetensors" bs=1 seek=2000 conv=notrunc status=none
expect "eval refuses a corrupt checkpoint" 1 "checksum" -- "$eval_" --checkpoint "$tmp/corrupt" "$tmp/tiny.ini"
expect "eval refuses another model" 1 "shape" -- "$eval_" --checkpoint "$tmp/run" --set model.channels=6 "$tmp/tiny.ini"
expect "eval names a tensor another depth lacks" 1 \
  "holds 11 tensors, the cnn model has 18; it lacks features.4.weight \\(and 6 more\\)" -- \
  "$eval_" --checkpoint "$tmp/run" --set model.channels=4,8 "$tmp/tiny.ini"
expect "eval as another network says so" 0 \
  "note: .* was trained as another network: spiking.neuron=none spiking.time_steps=10; it is evaluated with spiking.neuron=lif spiking.time_steps=2" \
  -- "$eval_" --checkpoint "$tmp/run" --set spiking.neuron=lif --set spiking.time_steps=2 "$tmp/tiny.ini"
# bioflex-eval on a BU-TD config scores the BU-TD network (the accuracy training printed last), and
# writes nothing to the run directory.
butd=(--set butd.network=fc --set butd.hidden=16 --set butd.learning=counter_hebb --set run.dir="$tmp/butd")
"$train" "${butd[@]}" "$tmp/any_arch.ini" > "$tmp/butd.log" 2>&1
trained=$(sed -n 's/^test accuracy: \([0-9.]*%\), loss \([0-9.]*\).*/\1 \2/p' "$tmp/butd.log")
lines=$(wc -l < "$tmp/butd/metrics.jsonl")
expect "eval a BU-TD run" 0 "accuracy ${trained%% *}" -- "$eval_" --checkpoint "$tmp/butd" "${butd[@]}" "$tmp/any_arch.ini"
expect "eval a BU-TD run with --results" 0 "results -> " -- "$eval_" --checkpoint "$tmp/butd" --results "$tmp/butd_results.json" \
  "${butd[@]}" "$tmp/any_arch.ini"
python3 - "$tmp/butd_results.json" "${trained%% *}" <<'PY' && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL BU-TD --results"; cat "$tmp/butd_results.json"; }
import json, sys
t = json.load(open(sys.argv[1]))["test"]
assert t["correct"] == round(t["accuracy"] * t["images"]) and "top5" not in t and "tasks" not in t, t
assert "%.2f%%" % (100 * t["accuracy"]) == sys.argv[2], (t, sys.argv[2])
PY
# --subnetworks: guided BU-TD networks only (test_butd_subnetworks checks what it writes)
expect "eval refuses --subnetworks for an unguided BU-TD net" 2 "--subnetworks applies to guided BU-TD.*guided = false" \
  -- "$eval_" --checkpoint "$tmp/butd" --subnetworks "$tmp/sub.json" "${butd[@]}" "$tmp/any_arch.ini"
expect "eval refuses --subnetworks for a [model] net" 2 "--subnetworks applies to guided BU-TD.*no \\[butd\\] network" \
  -- "$eval_" --checkpoint "$tmp/run" --subnetworks "$tmp/sub.json" "$tmp/tiny.ini"
expect "train refuses --subnetworks" 2 "--subnetworks is a bioflex-eval option" -- "$train" --subnetworks x.json --dry-run "$tmp/tiny.ini"
[ -n "$trained" ] && [ "$(wc -l < "$tmp/butd/metrics.jsonl")" -eq "$lines" ] && passed=$((passed + 1)) ||
  { failed=$((failed + 1)); echo "FAIL BU-TD eval: training printed '$trained', metrics.jsonl grew"; }
# BU-TD training logs a train line per log interval too: 2 epochs of 6 steps, every 2 steps.
[ "$(grep -c '"type":"train".*"loss":[0-9.]*,"accuracy":[0-9.]*' "$tmp/butd/metrics.jsonl")" -eq 6 ] && passed=$((passed + 1)) ||
  { failed=$((failed + 1)); echo "FAIL BU-TD metrics.jsonl train lines:"; grep train "$tmp/butd/metrics.jsonl" | head -3; }
# [run] eval_every spaces BU-TD evaluations too: over 3 epochs with eval_every = 2, after epochs 2 and 3.
"$train" "${butd[@]}" --set run.dir="$tmp/butd_every" --set run.epochs=3 --set run.eval_every=2 "$tmp/any_arch.ini" \
  > "$tmp/butd_every.log" 2>&1
evals=$(grep '"type":"eval"' "$tmp/butd_every/metrics.jsonl" | sed -n 's/.*"epoch":\([0-9]*\).*/\1/p' | tr '\n' ' ')
[ "$evals" = "2 3 " ] && passed=$((passed + 1)) ||
  { failed=$((failed + 1)); echo "FAIL BU-TD eval_every = 2 over 3 epochs evaluated after epochs '$evals' (want '2 3 ')"; }

# A spiking run logs firing rates and writes spike rasters (T rows of raster_neurons spikes).
expect "spiking train" 0 "neuron layers" -- "$train" --set run.dir="$tmp/spk" --set spiking.neuron=lif \
  --set spiking.time_steps=3 --set spiking.raster_neurons=5 --set run.epochs=1 "$tmp/tiny.ini"
if python3 - "$tmp/spk" <<'PY'
import json, sys
d = sys.argv[1]
rasters = [json.loads(l) for l in open(d + "/spikes.jsonl")]
metrics = [json.loads(l) for l in open(d + "/metrics.jsonl")]
ok = rasters and all(len(r["spikes"]) == 3 and all(len(row) == 5 and set(row) <= {0, 1} for row in r["spikes"]) for r in rasters)
ok = ok and any("firing_rate" in m and 0 <= m["mean_firing_rate"] <= 1 for m in metrics)
sys.exit(0 if ok else 1)
PY
then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL spikes.jsonl / firing_rate"; fi

# SIGTERM (Slurm, kill), SIGUSR1 (what to send through mpirun, and Slurm's --signal=USR1@...) and
# SIGHUP (the terminal or ssh session closed): the run finishes its step, checkpoints that position,
# names --resume and exits 128 + the signal; the resumed run completes. The signal goes once training
# has logged (the handler is in place by then); the run is long enough that it always lands during
# training. env --default-signal: these tests may themselves run under nohup, whose ignored SIGHUP
# bioflex-train keeps ignoring.
for stop in TERM:143 USR1:138 HUP:129; do
  sig=${stop%%:*} want=${stop##*:} dir="$tmp/sig_${stop%%:*}"
  env --default-signal=HUP "$train" "$tmp/tiny.ini" --set run.dir="$dir" --set run.epochs=100000 --set run.eval_every=0 \
    --set run.checkpoint_every=0 > "$dir.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do [ -s "$dir/metrics.jsonl" ] && break; sleep 0.1; done
  kill -"$sig" "$pid"
  wait "$pid"; got=$?
  latest=$(cat "$dir/checkpoints/latest" 2>/dev/null)
  stop_epoch=$(sed -n 's/.*stopped on request after step [0-9]* (epoch \([0-9]*\),.*/\1/p' "$dir.log")
  if [ "$got" -eq "$want" ] && [ -n "$stop_epoch" ] && [[ "$latest" == step_* ]] && grep -q -- "--resume $dir" "$dir.log"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAIL SIG$sig: exit $got (want $want), latest '$latest'"; tail -n 4 "$dir.log"
  fi
  expect "resume after SIG$sig" 0 "resumed from .*$latest" -- "$train" "$tmp/tiny.ini" --set run.dir="$dir" \
    --resume "$dir" --set run.epochs="${stop_epoch:-1}" --set run.eval_every=0 --set run.checkpoint_every=0
done
# Under nohup (SIGHUP ignored when the run starts) a hangup leaves the run training.
dir="$tmp/sig_nohup"
env --ignore-signal=HUP "$train" "$tmp/tiny.ini" --set run.dir="$dir" --set run.epochs=100000 --set run.eval_every=0 \
  --set run.checkpoint_every=0 > "$dir.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -s "$dir/metrics.jsonl" ] && break; sleep 0.1; done
kill -HUP "$pid"; sleep 1
if kill -0 "$pid" 2>/dev/null; then alive=1; else alive=0; fi
kill -TERM "$pid"; wait "$pid"; got=$?
if [ "$alive" -eq 1 ] && [ "$got" -eq 143 ]; then passed=$((passed + 1)); else
  failed=$((failed + 1)); echo "FAIL SIGHUP under nohup: alive $alive after it, exit $got after SIGTERM (want 143)"; fi

# A checkpoint written again (an epoch redone after resuming from an earlier one, best) waits as
# NAME.old while its new copy is renamed into place: a crash between the two renames leaves the
# previous copy there alone. --resume and bioflex-eval find it through `latest`, and a resumed
# keep_best run keeps best.old's top-1 to beat: redoing epoch 2, whose score no best exceeded,
# must not make it the best (once `latest` named a missing directory, and any score was a best).
dir="$tmp/moved_aside"
"$train" "$tmp/tiny.ini" --set run.dir="$dir" --set run.keep_best=true > /dev/null 2>&1
mv "$dir/checkpoints/epoch_0002" "$dir/checkpoints/epoch_0002.old"
mv "$dir/checkpoints/best" "$dir/checkpoints/best.old"
expect "latest naming a checkpoint moved aside" 0 "top-1" -- "$eval_" --checkpoint "$dir" "$tmp/tiny.ini"
out=$("$train" "$tmp/tiny.ini" --set run.dir="$dir" --set run.keep_best=true --resume "$dir/checkpoints/epoch_0001" 2>&1)
if [ $? -eq 0 ] && ! grep -q "best top-1 so far" <<<"$out"; then passed=$((passed + 1)); else
  failed=$((failed + 1)); echo "FAIL keep_best resumed beside best.old: took a score that beat no best as its best"; fi

# Net Fragments stop on SIGTERM too, after the epoch in progress (its checkpoints hold whole epochs),
# with exit 143 and an epoch checkpoint, and the resumed run ends with the weights of one never
# stopped (their loop once ignored the signal and trained on to its last epoch, exit 0).
frag_stop=(--set fragments.train_lines=10 --set fragments.eval_lines=2 --set fragments.eval_noise_max=0.01
           --set fragments.eval_interrupt_max=1 --set run.epochs=300 --set run.checkpoint_every=0)
"$train" --set run.dir="$tmp/frag_whole" "${frag_stop[@]}" "$src/configs/fragments/net_fragments.ini" >/dev/null 2>&1
dir="$tmp/frag_stop"
"$train" --set run.dir="$dir" "${frag_stop[@]}" "$src/configs/fragments/net_fragments.ini" > "$dir.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -s "$dir/metrics.jsonl" ] && break; sleep 0.05; done
kill -TERM "$pid"; wait "$pid"; got=$?
latest=$(cat "$dir/checkpoints/latest" 2>/dev/null)
if [ "$got" -eq 143 ] && [[ "$latest" == epoch_* ]] && [ "$latest" != epoch_0300 ] && grep -q -- "--resume $dir" "$dir.log"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL fragments SIGTERM: exit $got (want 143), latest '$latest'"; tail -n 3 "$dir.log"
fi
expect "fragments resume after SIGTERM" 0 "line reconstruction at a 1-pixel gap" -- "$train" --set run.dir="$dir" \
  "${frag_stop[@]}" --resume "$dir" "$src/configs/fragments/net_fragments.ini"
cmp -s "$tmp/frag_whole/checkpoints/epoch_0300/model.safetensors" "$dir/checkpoints/epoch_0300/model.safetensors" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL fragments SIGTERM: resumed weights differ"; }

# tools/plot_metrics.py: its summary agrees with what bioflex-train printed; a step logged twice
# (a run resumed from an earlier checkpoint) counts once, the last record; plots where matplotlib is.
"$train" "$tmp/tiny.ini" --set run.dir="$tmp/plot" --set model.flex=true --set spiking.neuron=lif \
  --set spiking.time_steps=2 --set spiking.raster_neurons=4 > "$tmp/plot.log" 2>&1
printed=$(sed -n 's/^test accuracy: \([0-9.]*\)% top-1.*/\1/p' "$tmp/plot.log")
python3 - "$tmp/plot/metrics.jsonl" <<'PY'
import json, sys
path = sys.argv[1]
train = [json.loads(l) for l in open(path) if '"type":"train"' in l]
again = dict(train[-1], loss=123.0)  # the last step logged once more, as a resumed run would
open(path, "a").write(json.dumps(again) + "\n")
PY
summary=$(python3 "$src/tools/plot_metrics.py" "$tmp/plot" --summary 2>&1)
row=$(tail -n 1 <<<"$summary")
if [ -n "$printed" ] && grep -q " ${printed}% " <<<"$row " && grep -q " 123.0000 " <<<"$row" && grep -q "mean_conv_ratio" <<<"$summary" \
   && grep -q "mean_firing_rate" <<<"$summary"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL plot_metrics --summary (bioflex-train printed ${printed}%):"; echo "$summary"
fi
# A fresh run in a directory that holds a longer one: the summary is the new run's alone (its
# "start" record; before, the older run's later steps and epochs were mixed in).
"$train" "$tmp/tiny.ini" --set run.dir="$tmp/refresh" > /dev/null 2>&1
"$train" "$tmp/tiny.ini" --set run.dir="$tmp/refresh" --set run.epochs=1 > /dev/null 2>&1
row=$(python3 "$src/tools/plot_metrics.py" "$tmp/refresh" --summary 2>&1 | tail -n 1)
[ "$(grep -c '"type":"start","resumed":false' "$tmp/refresh/metrics.jsonl")" -eq 2 ] && grep -qE "^ *refresh +6 +1 " <<<"$row" \
  && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL plot_metrics after a fresh run in a used directory: $row"; }
# --metric balanced_top1 --ema 0.5 --best-after 2 over evaluations of 0.5, 1.0 and 0.2 (epochs 1-3):
# smoothed 0.5, 0.75, 0.475; the best from epoch 2 on is 0.75 at epoch 2
mkdir -p "$tmp/ema"
for e in 1:0.5 2:1.0 3:0.2; do
  echo "{\"type\":\"eval\",\"split\":\"test\",\"epoch\":${e%%:*},\"step\":${e%%:*},\"loss\":1,\"top1\":0.1,\"top5\":0.9,\"balanced_top1\":${e#*:},\"samples\":10}"
done > "$tmp/ema/metrics.jsonl"
row=$(python3 "$src/tools/plot_metrics.py" "$tmp/ema" --summary --metric balanced_top1 --ema 0.5 --best-after 2 2>&1 | tail -n 1)
grep -qE "^ *ema .* 47.50% +75.00% +2 *$" <<<"$row" && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL plot_metrics --metric balanced_top1 --ema 0.5: $row"; }
# a Net Fragments run's epochs: its last weight sum and S2 support in the summary (and its panels below)
mkdir -p "$tmp/frag_metrics"
for e in 1:120.5:2.25:0.03 2:150:3.5:0.04; do
  IFS=: read -r ep sum act inact <<<"$e"
  echo "{\"type\":\"fragments_epoch\",\"epoch\":$ep,\"weight_sum\":$sum,\"avg_support_active\":$act,\"avg_support_inactive\":$inact,\"support_lambda\":14.3}"
done > "$tmp/frag_metrics/metrics.jsonl"
row=$(python3 "$src/tools/plot_metrics.py" "$tmp/frag_metrics" --summary 2>&1 | tail -n 1)
grep -qE "^ *frag_metrics +0 +2 +150.00 +3.500 +0.0400 *$" <<<"$row" && passed=$((passed + 1)) \
  || { failed=$((failed + 1)); echo "FAIL plot_metrics --summary of a Net Fragments run: $row"; }
if python3 -c "import matplotlib" 2>/dev/null; then
  python3 "$src/tools/plot_metrics.py" "$tmp/plot" "$tmp/run" "$tmp/frag_metrics" -o "$tmp/curves.png" > /dev/null &&
    python3 "$src/tools/plot_metrics.py" "$tmp/plot" --raster features.2 -o "$tmp/raster.png" > /dev/null
  if [ "$(head -c 4 "$tmp/curves.png" 2>/dev/null | od -An -c | tr -d ' ')" = "211PNG" ] &&
     [ "$(head -c 4 "$tmp/raster.png" 2>/dev/null | od -An -c | tr -d ' ')" = "211PNG" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAIL plot_metrics: no PNG written"
  fi
else
  echo "note: no matplotlib here; plot_metrics.py's plots not checked (its --summary is)"
fi

# tools/plot_analysis.py on the analyses written above: its summary quotes their files (the attack's
# AUC as the JSON has it, the Hessian's trace, the surface's points, the flow's tensors); and plots
# each kind where matplotlib is installed.
auc=$(tr -d '\n ' < "$tmp/attack.json" 2>/dev/null | sed -n 's/.*"auc":\([0-9.e-]*\),.*/\1/p')
analysis=$(python3 "$src/tools/plot_analysis.py" "$tmp/attack.json" "$tmp/hessian.json" "$tmp/surface.csv" "$tmp/flow.csv" \
  "$tmp/routing.json" "$tmp/input_hessian.json" --summary 2>&1)
if [ -n "$auc" ] && grep -q "AUC $(printf '%.4f' "$auc") " <<<"$analysis" && grep -q "fgsm attack (pixels domain), 20 images" <<<"$analysis" \
   && grep -q "loss surface of 16 points" <<<"$analysis" && grep -q "gradient flow of 8 tensors" <<<"$analysis" \
   && grep -q "density of 3 nodes" <<<"$analysis" && grep -q "(eval mode, loss" <<<"$analysis" \
   && grep -q "routing over 32 images, 1 channel-wise max layers: conv features.0 " <<<"$analysis" \
   && grep -q "input Hessian of 2 images: top eigenvalue per image" <<<"$analysis"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL plot_analysis --summary (AUC $auc):"; echo "$analysis"
fi
expect "plot_analysis refuses other files" 1 "none of bioflex-eval's" -- python3 "$src/tools/plot_analysis.py" "$tmp/tiny.ini"
# two input-Hessian spectra (FlexNet 5.4): the Wasserstein distance of the spectrum to itself is 0
# (p = 1), to a copy with every Ritz value shifted by 1 exactly 1
python3 - "$tmp/input_hessian.json" "$tmp/input_hessian_shifted.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
for image in data["per_image"]:
    image["ritz"] = [v + 1 for v in image["ritz"]]
json.dump(data, open(sys.argv[2], "w"))
PY
expect "plot_analysis: a spectrum against itself" 0 "Wasserstein distance 0 between .*p = 1$" -- python3 \
  "$src/tools/plot_analysis.py" "$tmp/input_hessian.json" "$tmp/input_hessian.json" --summary --permutations 50
expect "plot_analysis: a spectrum against its shift by 1" 0 "Wasserstein distance 1 between" -- python3 \
  "$src/tools/plot_analysis.py" "$tmp/input_hessian.json" "$tmp/input_hessian_shifted.json" --summary --permutations 50
if python3 -c "import matplotlib" 2>/dev/null; then
  pngs=0
  for f in attack.json hessian.json surface.csv flow.csv routing.json input_hessian.json; do
    python3 "$src/tools/plot_analysis.py" "$tmp/$f" -o "$tmp/$f.png" > /dev/null
    [ "$(head -c 4 "$tmp/$f.png" 2>/dev/null | od -An -c | tr -d ' ')" = "211PNG" ] && pngs=$((pngs + 1))
  done
  [ "$pngs" = 6 ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL plot_analysis: $pngs of 6 PNGs written"; }
else
  echo "note: no matplotlib here; plot_analysis.py's plots not checked (its --summary is)"
fi

# tools/convert_reference_checkpoint.py: the tiny run's weights saved as a reference .pth (a
# model_state_dict under DDP's module. prefix, one running_var in float64, an inert bn_logits tensor),
# converted back with --drop bn_logits, score as the run's own checkpoint; PyTorch needed
torch_python=""
for py in python3 /usr/bin/python3; do "$py" -c "import torch" 2>/dev/null && { torch_python=$py; break; }; done
if [ -n "$torch_python" ]; then
  "$torch_python" - "$tmp/run/checkpoints/epoch_0002/model.safetensors" "$tmp/reference.pth" <<'PY'
import json, struct, sys, torch
with open(sys.argv[1], "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    data = f.read()
state = {}
for name, e in header.items():
    if name != "__metadata__":
        t = torch.frombuffer(bytearray(data[e["data_offsets"][0]:e["data_offsets"][1]]),
                             dtype={"F32": torch.float32, "I64": torch.int64}[e["dtype"]]).reshape(e["shape"])
        state["module." + name] = t.double() if name.endswith("running_var") else t.clone()
state["module.features.0.bn_logits.weight"] = torch.ones(4)
torch.save({"model_state_dict": state, "epoch": 2}, sys.argv[2])
PY
  expect "convert a reference checkpoint" 0 "tensors .* -> .*converted/model.safetensors; left out 1: features.0.bn_logits.weight" \
    -- "$torch_python" "$src/tools/convert_reference_checkpoint.py" "$tmp/reference.pth" "$tmp/converted" --drop bn_logits
  own=$("$eval_" --checkpoint "$tmp/run/checkpoints/epoch_0002" "$tmp/tiny.ini" 2>/dev/null | grep '^test:')
  converted=$("$eval_" --checkpoint "$tmp/converted" "$tmp/tiny.ini" 2>/dev/null | grep '^test:')
  [ -n "$own" ] && [ "$own" = "$converted" ] && passed=$((passed + 1)) ||
    { failed=$((failed + 1)); echo "FAIL converted reference checkpoint: '$converted', the run's own: '$own'"; }
  # Net Fragments' Fabric checkpoint: {config, feature_extractor, lateral_network} with the lateral
  # weights under lateral_network["model.s2.W_lateral"], as checkpoints/net-fragments.ckpt holds them
  frag=(--set fragments.train_lines=20 --set fragments.eval_lines=4 --set fragments.eval_noise_max=0.02
        --set fragments.eval_interrupt_max=2)
  "$train" --set run.dir="$tmp/fragments" --set run.epochs=1 "${frag[@]}" "$src/configs/fragments/net_fragments.ini" \
    >/dev/null 2>&1
  "$torch_python" - "$tmp/fragments/checkpoints/epoch_0001/model.safetensors" "$tmp/fragments.ckpt" <<'PY'
import json, struct, sys, torch
with open(sys.argv[1], "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    data = f.read()
e = header["model.s2.W_lateral"]
w = torch.frombuffer(bytearray(data[e["data_offsets"][0]:e["data_offsets"][1]]), dtype=torch.float32).reshape(e["shape"])
torch.save({"config": {"n_alternative_cells": 10}, "feature_extractor": {}, "lateral_network": {"model.s2.W_lateral": w}},
           sys.argv[2])
PY
  expect "convert Net Fragments' Fabric checkpoint" 0 "1 tensors .* -> .*fragments_converted/model.safetensors" \
    -- "$torch_python" "$src/tools/convert_reference_checkpoint.py" "$tmp/fragments.ckpt" "$tmp/fragments_converted"
  own=$("$eval_" --checkpoint "$tmp/fragments/checkpoints/epoch_0001" "${frag[@]}" \
    "$src/configs/fragments/net_fragments.ini" 2>/dev/null | grep -E '^(noise|interrupt) ')
  converted=$("$eval_" --checkpoint "$tmp/fragments_converted" "${frag[@]}" \
    "$src/configs/fragments/net_fragments.ini" 2>/dev/null | grep -E '^(noise|interrupt) ')
  [ -n "$own" ] && [ "$own" = "$converted" ] && passed=$((passed + 1)) ||
    { failed=$((failed + 1)); echo "FAIL converted fragments checkpoint: '$converted', its own: '$own'"; }
else
  echo "note: no PyTorch here; tools/convert_reference_checkpoint.py not checked"
fi

# [run] eval_train: bioflex-eval scores the training split as the training run logged it
logged=$("$train" --set run.dir="$tmp/evtrain" --set run.epochs=1 --set run.eval_train=true "$tmp/tiny.ini" 2>&1 |
  sed -n 's/.*eval after epoch 1: train \(loss [0-9.]*  top-1 [0-9.]*%\).*/\1/p')
scored=$("$eval_" --checkpoint "$tmp/evtrain" --set run.eval_train=true "$tmp/tiny.ini" 2>&1 |
  sed -n 's/^train: \(loss [0-9.]*  top-1 [0-9.]*%\).*/\1/p')
[ -n "$logged" ] && [ "$logged" = "$scored" ] && passed=$((passed + 1)) ||
  { failed=$((failed + 1)); echo "FAIL eval_train: bioflex-eval's '$scored', the run's '$logged'"; }

# Every shipped config is valid and plans (dry-run) as it stands.
for f in "$src"/configs/*.ini "$src"/configs/*/*.ini; do
  expect "dry-run $(basename "$f")" 0 "total: [0-9]+ parameters" -- "$train" --dry-run "$f"
done

# The README's config reference is the generated one (tools/update_readme_config.sh).
if python3 - "$train" "$src/README.md" <<'PY'
import subprocess, sys
ref = subprocess.run([sys.argv[1], "--help-config"], check=True, capture_output=True, text=True).stdout
ref = "\n".join(("#" + l if l.startswith("#") else l) for l in ref.strip().splitlines())
sys.exit(0 if ref in open(sys.argv[2]).read() else 1)
PY
then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL README config reference is stale: run tools/update_readme_config.sh"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
