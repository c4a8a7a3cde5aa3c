/* test_pytorch_parity_spiking_flex.c - bioflex's spiking flex networks (PlasticFlex: flex layers ->
 * batch-norm -> LIF neurons over T steps, STBP with a surrogate gradient) compute what PyTorch
 * computes (llm.c style).
 *
 * tests/fixtures/parity_spiking_flex.safetensors is written by bench/make_spiking_flex_parity_fixture.py,
 * whose PyTorch network puts together the other two parity scripts' modules, each written from a
 * specification and not from bioflex's code: Flex2D (make_flex_parity_fixture.py; flexnet.md 1.2-1.5,
 * plasticflex.md 2.2-2.5) and the neurons looped over T with BPTT by autograd
 * (make_spiking_parity_fixture.py; ops.h's contract), as plasticflex.md 3.3 and 9.3 combine them:
 *
 *     direct encoding, [T*N, ...] time outermost
 *     features.0 Flex2D(3 -> 4, k 3, p 1) -> features.1 BatchNorm2d(4) over T*N -> features.2 neuron
 *     -> features.3 MaxPool2d(2, 2), or with fully_flex Flex2D(4 -> 4, k 2, s 2) (PlasticFlex's d2 layer)
 *     -> features.4 Flex2D(4 -> 8, k 3, p 1) -> features.5 BatchNorm2d(8) -> features.6 neuron
 *     -> features.7 MaxPool2d(2, 2) or Flex2D(8 -> 8, k 2, s 2)
 *     -> flatten -> classifier.0 Linear(32, 12) -> classifier.1 neuron -> classifier.2 Dropout(0)
 *     -> classifier.3 Linear(12, 5) -> readout (mean over T)              input [4, 3, 8, 8], K = 5
 *
 * for three variants, each under its prefix "<variant>.":
 *     lif_max_expand      channel-wise max, expand; LIF decay 0.95, threshold 1, hard reset, 0.3 tanh', T 4
 *     lif_mask_bilinear   mask joint, SIGMOID_HARD, logits batch-norm, learned threshold, bilinear
 *                         channels (PlasticFlex's flex), fully_flex; LIF decay 0.9, threshold 0.5, hard
 *                         reset, sigmoid surrogate alpha 4, T 3
 *     lif_soft_max_fully  channel-wise max, expand, fully_flex (2x2 flex layers over spikes, the next
 *                         flex layer over their max); LIF decay 0.95, threshold 1, soft reset, arctan
 *                         surrogate alpha 2, T 4
 * with the initial state_dict, a batch, the logits, the cross-entropy (mean), every parameter
 * gradient, the batch-norm buffers after the first forward pass (stats1.*), each neuron layer's
 * output sum and silent elements in that pass (fired.*) and the state_dict after two SGD steps
 * (lr 0.1, momentum 0.9; after2.*). No Python runs here.
 *
 * Unlike test_pytorch_parity_spiking and test_pytorch_parity_flex, which add their layers one by one,
 * the network here is bf_model_build's from a config (arch = cnn with [model] flex and [spiking]
 * keys), so bioflex runs it as a run would, with every default of the plan: the first flex layer and
 * its batch-norm once per image (share_direct_input: the first LIF reads the batch-norm's one step at
 * every step, recomputes its charge from the batch-norm's input and runs its backward inside the
 * batch-norm's; the running variance's correction counts the T copies), the other LIF layers'
 * charges recomputed or written over their input, spikes kept as bits, the channel-wise max flex
 * layers' forward summing the next batch-norm's statistics and adding the conv bias in the joint
 * (fold_conv_bias), their route and scatter in one pass (a flex layer followed by batch-norm -> LIF
 * leaves that batch-norm's dx to the LIF's fused backward, not to the flex route). The test prints
 * the plan it ran; the same fixture also passes with those fusions off (the plain plan: checked by
 * hand, not part of the test). The fixture keeps the config as "config.<variant>" (the assignments, which must
 * be the test's own) and the neuron parameters as "params.<variant>" (the line bioflex's config
 * gives, bf_parity_neuron_line, must be the script's): the script and the test cannot drift apart
 * silently.
 *
 * For each variant the test checks that
 *   - every bioflex parameter and buffer has a tensor of the same name and shape in the fixture,
 *     and every state_dict entry of the fixture is a bioflex parameter or buffer;
 *   - from the fixture's weights, forward + loss + backward give PyTorch's logits, loss and every
 *     parameter's gradient (through the surrogates, back through time and through both flex
 *     branches), and every batch-norm's running statistics (bn and bn_logits) after it;
 *   - the spike monitor counts PyTorch's spikes and silent elements exactly (no spike flipped);
 *   - two SGD steps give PyTorch's parameters, running statistics and num_batches_tracked.
 * Each comparison prints its largest violation |a-b| / (atol + rtol*max(|a|,|b|)): <= 1 passes.
 *
 * Tolerances. Both sides compute in fp32 in different orders (im2col + sgemm against ATen, the
 * readout summed step by step against mean(0), bioflex's surrogates with its own exponential). Over
 * T <= 4 steps the membrane is a sum of T terms, and the gradient a sum over T of products of as
 * many factors: the rounding grows by a small factor of T, a few ulps of the largest term, still far
 * inside atol 1e-5 and rtol 1e-4 (the other parity tests' bounds; measured: see the README's line).
 * That holds only away from the discontinuities: a spike, a channel-wise max winner or a SIGMOID_HARD
 * corner moved by rounding would change the logits by O(weight / T). The script refuses a seed
 * unless every |H - threshold|, |C - P~| and ||L| - 3| stays >= 1e-4 in both forward passes (the
 * chosen seeds keep >= 4.7e-4, >= 5.9e-4 and 1.6e-2), and the fired.* counts show that none flipped. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/config.h"
#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "parity_util.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/parity_spiking_flex.safetensors"

enum { N = 4, C = 3, H = 8, W = 8, K = 5, NEURON_LAYERS = 3 };

static const double ATOL = 1e-5, RTOL = 1e-4;

static bf_parity px; /* the fixture and the backend */

#define NETWORK                                                                                                        \
    "model.arch=cnn", "model.channels=4,8", "model.hidden=12", "model.dropout=0", "model.batchnorm=true",             \
        "model.bn_eps=1e-05", "model.bn_momentum=0.1", "model.flex=true"

typedef struct variant {
    const char *name;
    const char *assignments[32]; /* NULL-terminated, applied to bf_config_defaults */
} variant;

static const variant VARIANTS[] = {
    {"lif_max_expand",
     {NETWORK, "model.fully_flex=false", "model.flex_joint=channelwise_max", "model.flex_channels=expand",
      "spiking.neuron=lif", "spiking.time_steps=4", "spiking.encoding=direct", "spiking.decay=0.95",
      "spiking.threshold=1", "spiking.reset=hard", "spiking.detach_reset=false", "spiking.use_stbp=true",
      "spiking.surrogate=tanh", "spiking.height=0.3", NULL}},
    {"lif_mask_bilinear",
     {NETWORK, "model.fully_flex=true", "model.flex_joint=mask", "model.flex_channels=bilinear",
      "model.flex_mask=sigmoid_hard", "model.flex_logits_bn=true", "model.threshold_mode=learned", "spiking.neuron=lif",
      "spiking.time_steps=3", "spiking.encoding=direct", "spiking.decay=0.9", "spiking.threshold=0.5",
      "spiking.reset=hard", "spiking.detach_reset=false", "spiking.use_stbp=true", "spiking.surrogate=sigmoid",
      "spiking.alpha=4", NULL}},
    {"lif_soft_max_fully",
     {NETWORK, "model.fully_flex=true", "model.flex_joint=channelwise_max", "model.flex_channels=expand",
      "spiking.neuron=lif", "spiking.time_steps=4", "spiking.encoding=direct", "spiking.decay=0.95",
      "spiking.threshold=1", "spiking.reset=soft", "spiking.detach_reset=false", "spiking.use_stbp=true",
      "spiking.surrogate=arctan", "spiking.alpha=2", NULL}},
};

/* The neuron parameters of the config, with the fields its surrogate does not read at 0 (the
 * script's lines carry only the used ones). */
static bf_neuron_params neuron_params(const bf_spiking_config *sp) {
    bf_neuron_params p = {.kind = (bf_neuron_kind)sp->neuron, .decay = sp->decay, .threshold = sp->threshold,
                          .reset = (bf_reset_mode)sp->reset, .detach_reset = sp->detach_reset,
                          .through_time = sp->use_stbp, .surrogate = (bf_surrogate)sp->surrogate};
    if (p.surrogate == BF_SURROGATE_SIGMOID || p.surrogate == BF_SURROGATE_ARCTAN) p.alpha = sp->alpha;
    if (p.surrogate == BF_SURROGATE_RECTANGULAR || p.surrogate == BF_SURROGATE_TRIANGLE) p.width = sp->width;
    if (p.surrogate != BF_SURROGATE_SIGMOID && p.surrogate != BF_SURROGATE_ARCTAN) p.height = sp->height;
    return p;
}

/* "<what> <layer>, ..." for the layers of the plan that have the property: what this variant ran. */
static void print_plan(const bf_model *m) {
    int flex = 0, neurons = 0, shared = 0, in_bn = 0, packed = 0, recomputed = 0, in_place = 0, bn_stats = 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        flex += l->kind == BF_LAYER_FLEX;
        bn_stats += l->kind == BF_LAYER_FLEX && l->flex_gives_bn_stats;
        if (l->kind != BF_LAYER_NEURON) continue;
        neurons++;
        shared += l->neuron.shared_input != 0;
        in_bn += l->neuron_in_bn;
        packed += l->spikes_packed;
        recomputed += l->charge_recomputed;
        in_place += l->charge_in_place;
    }
    printf("  plan: %d flex layers (%d summing the next batch-norm's statistics), %d neuron layers: %d reading the "
           "shared direct input, %d with the charge recomputed (%d of them inside the batch-norm's backward), %d "
           "written over its input, %d with packed spikes\n",
           flex, bn_stats, neurons, shared, recomputed, in_bn, in_place, packed);
}

typedef struct fired_check {
    const char *prefix;
    int T;
} fired_check;

static void check_fired(void *user, bf_model *m) {
    const fired_check *fc = user;
    bf_parity_compare_fired(&px, m, fc->prefix, N, fc->T, NEURON_LAYERS);
}

static void run_variant(const variant *v) {
    char prefix[64], name[BF_NAME_MAX + 64], line[256], config[1024] = "";
    snprintf(prefix, sizeof prefix, "%s.", v->name);
    bf_config cfg;
    bf_config_defaults(&cfg);
    for (int i = 0; v->assignments[i]; i++) {
        bf_status s = bf_config_set(&cfg, v->assignments[i]);
        CHECK(s == BF_OK, "%s: %s: %s", v->name, v->assignments[i], bf_last_error());
        if (s != BF_OK) return;
        snprintf(config + strlen(config), sizeof config - strlen(config), "%s%s", i ? " " : "", v->assignments[i]);
    }
    snprintf(name, sizeof name, "config.%s", v->name);
    const char *fixture_config = bf_safetensors_meta(px.fixture, name);
    CHECK(fixture_config && !strcmp(fixture_config, config), "%s: the fixture was made for \"%s\", the test sets \"%s\"",
          v->name, fixture_config ? fixture_config : "(missing)", config);
    const bf_spiking_config *sp = &cfg.model.spiking;
    const bf_neuron_params p = neuron_params(sp);
    bf_parity_neuron_line(&p, sp->time_steps, sp->encoding, line, sizeof line);
    printf("%s: %s\n  %s\n", v->name, config, line);
    snprintf(name, sizeof name, "params.%s", v->name);
    const char *fixture_line = bf_safetensors_meta(px.fixture, name);
    CHECK(fixture_line && !strcmp(fixture_line, line), "%s: the fixture's neurons are \"%s\", the config's \"%s\"",
          v->name, fixture_line ? fixture_line : "(missing)", line);

    bf_model *m = NULL;
    CHECK_OK(bf_model_build(px.backend, &cfg.model, (bf_shape){N, C, H, W}, K, 1, &m));
    if (!m) return;
    m->training = 1;
    print_plan(m);

    static const char *const derived[] = {"input", "labels", "expected.", "grad.", "stats1.", "fired.", "after2."};
    bf_parity_check_names(&px, m, prefix, derived, sizeof derived / sizeof derived[0], 1);
    bf_parity_batch bt;
    bf_parity_batch_load(&px, &bt, prefix, (bf_shape){N, C, H, W}, K, 0.0f);
    const bf_optim_config sgd = bf_parity_sgd(0.1f, 0.9f, 0, 0);
    fired_check fc = {prefix, sp->time_steps};
    bf_parity_two_steps(&px, m, &bt,
                        &(bf_parity_steps){.prefix = prefix, .oc = &sgd, .check_first = 1,
                                           .loss_what = "mean cross-entropy", .check_stats1 = 1, .what = "sgd",
                                           .after = "after2.", .after_loss = check_fired, .user = &fc});
    bf_parity_batch_free(&px, &bt);
    bf_model_destroy(m);
}

int main(void) {
    px.atol = ATOL;
    px.rtol = RTOL;
    px.name_width = 48;
    if (!bf_parity_open(&px, FIXTURE, "bench/make_spiking_flex_parity_fixture.py", 1)) return bf_test_finish();
    for (size_t i = 0; i < sizeof VARIANTS / sizeof VARIANTS[0]; i++) run_variant(&VARIANTS[i]);
    bf_parity_close(&px);
    return bf_test_finish();
}
