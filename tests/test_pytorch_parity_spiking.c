/* test_pytorch_parity_spiking.c - bioflex's spiking networks compute what PyTorch computes (llm.c style).
 *
 * tests/fixtures/parity_spiking.safetensors is written by bench/make_spiking_parity_fixture.py
 * with plain PyTorch neurons written from the contract in include/bioflex/ops.h (a loop over the
 * T steps, the spike an autograd.Function with the surrogate gradient, BPTT by autograd; not from
 * bioflex's code), in the network
 *
 *     encode (direct or rate, T steps, [T*N, ...] time outermost) -> conv Conv2d(1, 4, 3, pad 1)
 *     -> bn BatchNorm2d(4) (statistics over all T*N samples) -> lif1 -> pool MaxPool2d(2, 2)
 *     -> flatten -> fc1 Linear(64, 8) -> lif2 -> fc2 Linear(8, 3) -> readout (mean over T)
 *                                                                    input [4, 1, 8, 8], K = 3
 *
 * for nine variants, each under its prefix "<variant>.":
 *     lif_hard_tanh     LIF decay 0.95, threshold 1, hard reset (not detached: the -H*g(u) term of
 *                       dV/dH is on), 0.3 tanh' surrogate, T 4
 *     lif_soft_sigmoid  LIF decay 0.95, threshold 1, soft reset, detached, sigmoid surrogate alpha 4, T 4
 *     if_hard_rect      IF, threshold 1, hard reset (not detached), rectangular surrogate width 2
 *                       height 0.3, T 4
 *     clamp01_T1        the reference's stateless clamp01, T 1
 *     lif_rate_sigmoid  LIF decay 0.9, threshold 0.5, hard reset, sigmoid alpha 4, T 4, Bernoulli rate
 *                       coding: the script draws the spikes with a numpy port of hash.h and bioflex's
 *                       seed for the encode layer (model seed 1, step 0 then 1)
 *     lif_none_arctan   LIF decay 0.8, threshold 1, no reset, arctan surrogate alpha 2, T 4
 *     if_soft_triangle  IF, threshold 1, soft reset (not detached), triangle surrogate width 1 height 0.5, T 4
 *     lif_nostbp_tanh   LIF decay 0.95, threshold 1, hard reset, 0.3 tanh', through_time = 0 (the
 *                       script detaches V between steps: use_stbp = false), T 4
 *     step_tanh_T1      the reference's stateless step 1[x > 0] with 0.3 tanh', T 1
 * with the initial state_dict, a batch, the logits, the cross-entropy (mean, no smoothing), every
 * parameter gradient, the batch-norm buffers after the first forward pass (stats1.*), each neuron
 * layer's output sum and silent elements in that pass (fired.*) and the whole state_dict after two
 * SGD steps (lr 0.1, momentum 0.9; after2.*). No Python runs here. The neuron parameters of each
 * variant are also in the fixture's metadata ("params.<variant>"), and the test requires the same
 * line from its own bf_neuron_params, so the script and the test cannot drift apart silently.
 *
 * The memory plan's spiking rules are in force (a model packs spikes and recomputes charges by
 * default): lif1 keeps no charge and computes it again from the bn's input and statistics, lif2
 * writes its charge over the fc1 output, and fc2's backward reads lif2's spikes restored from bits.
 *
 * For each variant the test builds the same network with bf_model_add_encode / _neuron /
 * _time_mean etc. on the CPU backend and checks that
 *   - every bioflex parameter and buffer has a tensor of the same name and shape in the fixture,
 *     and every state_dict entry of the fixture is a bioflex parameter or buffer;
 *   - from the fixture's weights, forward + loss + backward give PyTorch's logits, loss and
 *     gradients (through the surrogate and back through time), and the running statistics of the
 *     batch-norm after it;
 *   - the spike monitor counts PyTorch's spikes and silent elements exactly (clamp01: the output
 *     sum to the tolerance below, the silent elements exactly): no spike flipped;
 *   - two SGD steps (each a forward + backward in train mode, as the script does) give PyTorch's
 *     parameters, running statistics and num_batches_tracked.
 * Each comparison prints its largest violation |a-b| / (atol + rtol*max(|a|,|b|)): <= 1 passes.
 *
 * Spikes are discontinuous in the membrane potential: if fp32 rounding put one H on the other side
 * of the threshold in one implementation, a spike would flip and the logits would move by O(weight
 * / T), far outside any tolerance. The script picks seeds whose batch keeps every |H - threshold|
 * (and the rectangular surrogate's edges, clamp01's corners, near-ties of a max-pool window)
 * at least 3e-4 away in both forward passes, while the two sides' charges agree to ~1e-6, so the
 * usual tight tolerances hold with no loosening. conv.bias is a gauge bias (read only by a
 * batch-norm in train mode): its gradient is rounding noise (~1e-9) on both sides, and SGD moves
 * it by lr times that noise, far inside atol (see test_pytorch_parity.c for the AdamW case, not
 * used here). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "parity_util.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/parity_spiking.safetensors"

enum { N = 4, C = 1, H = 8, W = 8, K = 3 };

/* fp32 on both sides, in different summation orders (im2col + sgemm here, ATen there; bioflex
 * sums the readout step by step and scales by 1/T, PyTorch takes mean(0); bioflex evaluates the
 * smooth surrogates in float with its own exponential (src/kernels/surrogate.h), the script with
 * torch's): agreement is expected to a few ulps, far inside these tolerances. */
static const double ATOL = 1e-5, RTOL = 1e-4;

static bf_parity px; /* the fixture and the backend */

typedef struct variant {
    const char *name;
    int T;
    int encoding; /* 0 direct, 1 rate (Bernoulli spikes from hash.h's counter RNG, ported to the script) */
    bf_neuron_params p;
} variant;

typedef struct fired_check {
    const variant *v;
    const char *prefix;
} fired_check;

/* The spike monitor after the first forward pass against "<prefix>fired.<layer>" (parity_util.h:
 * exact counts for spikes, the clamp01 output sum within the tolerances). user: a fired_check. */
static void compare_fired(void *user, bf_model *m) {
    const fired_check *fc = user;
    bf_parity_compare_fired(&px, m, fc->prefix, N, fc->v->T, 2);
}

/* Rate coding draws its spikes from (model seed, step, layer): the script uses step 0 for the first
 * forward pass and 1 for the second. */
static void next_model_step(void *user, bf_model *m, int step) {
    (void)user;
    m->step = step + 1;
}

static void run_variant(const variant *v) {
    char prefix[64], name[BF_NAME_MAX + 64], line[256];
    snprintf(prefix, sizeof prefix, "%s.", v->name);
    bf_parity_neuron_line(&v->p, v->T, v->encoding, line, sizeof line);
    printf("%s: %s\n", v->name, line);
    snprintf(name, sizeof name, "params.%s", v->name);
    const char *fixture_line = bf_safetensors_meta(px.fixture, name);
    CHECK(fixture_line && !strcmp(fixture_line, line), "%s: the fixture was made with \"%s\", the test uses \"%s\"",
          v->name, fixture_line ? fixture_line : "(missing)", line);

    bf_model *m = NULL;
    CHECK_OK(bf_model_create(px.backend, (bf_shape){N, C, H, W}, 1, &m));
    if (!m) return;
    int x = bf_model_add_encode(m, "encode", BF_MODEL_INPUT, v->T, v->encoding);
    x = bf_model_add_conv(m, "conv", x, 4, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f); /* PyTorch's BatchNorm2d defaults */
    x = bf_model_add_neuron(m, "lif1", x, &v->p);
    x = bf_model_add_maxpool(m, "pool", x, 2, 2, 0);
    x = bf_model_add_flatten(m, "flatten", x);
    x = bf_model_add_linear(m, "fc1", x, 8, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_neuron(m, "lif2", x, &v->p);
    x = bf_model_add_linear(m, "fc2", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    bf_model_add_time_mean(m, "readout", x);
    CHECK_OK(bf_model_build_status(m));
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) {
        bf_model_destroy(m);
        return;
    }
    CHECK(m->layers[1].out_shape.n == N * v->T && m->layers[m->num_layers - 1].out_shape.n == N &&
              m->layers[m->num_layers - 1].out_shape.c == K,
          "time folding: conv sees [T*N = %d, ...], the readout gives [N, K]", N * v->T);
    m->training = 1;

    static const char *const derived[] = {"input", "labels", "expected.", "grad.", "stats1.", "fired.", "after2."};
    bf_parity_check_names(&px, m, prefix, derived, sizeof derived / sizeof derived[0], 1);
    bf_parity_batch bt;
    bf_parity_batch_load(&px, &bt, prefix, (bf_shape){N, C, H, W}, K, 0.0f);
    const bf_optim_config sgd = bf_parity_sgd(0.1f, 0.9f, 0, 0);
    fired_check fc = {v, prefix};
    bf_parity_two_steps(&px, m, &bt,
                        &(bf_parity_steps){.prefix = prefix, .oc = &sgd, .check_first = 1,
                                           .loss_what = "mean cross-entropy", .check_stats1 = 1, .what = "sgd",
                                           .after = "after2.", .after_loss = compare_fired,
                                           .after_step = next_model_step, .user = &fc});
    bf_parity_batch_free(&px, &bt);
    bf_model_destroy(m);
}

int main(void) {
    px.atol = ATOL;
    px.rtol = RTOL;
    px.name_width = 40;
    if (!bf_parity_open(&px, FIXTURE, "bench/make_spiking_parity_fixture.py", 1)) return bf_test_finish();

    /* The fields a kind does not use (IF's decay, clamp01's dynamics and surrogate) are set to what
     * the script's params line says, so the lines compare equal; bioflex ignores them. */
    const variant variants[] = {
        {"lif_hard_tanh", 4, 0,
         {.kind = BF_NEURON_LIF, .decay = 0.95f, .threshold = 1.0f, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_TANH, .alpha = 0, .width = 0, .height = 0.3f}},
        {"lif_soft_sigmoid", 4, 0,
         {.kind = BF_NEURON_LIF, .decay = 0.95f, .threshold = 1.0f, .reset = BF_RESET_SOFT, .detach_reset = 1,
          .through_time = 1, .surrogate = BF_SURROGATE_SIGMOID, .alpha = 4.0f, .width = 0, .height = 0}},
        {"if_hard_rect", 4, 0,
         {.kind = BF_NEURON_IF, .decay = 1.0f, .threshold = 1.0f, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_RECTANGULAR, .alpha = 0, .width = 2.0f, .height = 0.3f}},
        {"clamp01_T1", 1, 0,
         {.kind = BF_NEURON_CLAMP01, .decay = 0, .threshold = 0, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_SIGMOID, .alpha = 0, .width = 0, .height = 0}},
        {"lif_rate_sigmoid", 4, 1,
         {.kind = BF_NEURON_LIF, .decay = 0.9f, .threshold = 0.5f, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_SIGMOID, .alpha = 4.0f, .width = 0, .height = 0}},
        {"lif_none_arctan", 4, 0,
         {.kind = BF_NEURON_LIF, .decay = 0.8f, .threshold = 1.0f, .reset = BF_RESET_NONE, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_ARCTAN, .alpha = 2.0f, .width = 0, .height = 0}},
        {"if_soft_triangle", 4, 0,
         {.kind = BF_NEURON_IF, .decay = 1.0f, .threshold = 1.0f, .reset = BF_RESET_SOFT, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_TRIANGLE, .alpha = 0, .width = 1.0f, .height = 0.5f}},
        {"lif_nostbp_tanh", 4, 0,
         {.kind = BF_NEURON_LIF, .decay = 0.95f, .threshold = 1.0f, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 0, .surrogate = BF_SURROGATE_TANH, .alpha = 0, .width = 0, .height = 0.3f}},
        {"step_tanh_T1", 1, 0,
         {.kind = BF_NEURON_STEP, .decay = 0, .threshold = 0, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_TANH, .alpha = 0, .width = 0, .height = 0.3f}},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) run_variant(&variants[i]);

    bf_parity_close(&px);
    return bf_test_finish();
}
