/* test_sample_draws.c - a sample's random draws do not depend on the batch that holds it
 * (bf_layer_draws, bf_draws in hash.h), on the CPU backend.
 *
 * A data-parallel rank holds a slice of the global batch (model.h sample_offset = its place there),
 * and an evaluation batch a slice of the split. For each network below, a training forward pass of
 * a batch of B samples gives the logits of the same samples passed as two batches of B/2 at sample
 * offsets 0 and B/2 (to the rounding of products over another batch size); a third pass at offset 1
 * must differ by far more (the offset is used):
 *   - a CNN with dropout (per-element draws, no time axis);
 *   - a rate-coded LIF CNN over T = 3 steps with dropout after the time expansion (the encode
 *     layer's and the dropout's [T, batch, ...] draws, each step with its own counters);
 *   - a flex CNN whose mask joint rounds stochastically (the joint's per-element draws).
 * None has batch-norm, whose batch statistics would differ between the halves anyway. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/config.h"
#include "bioflex/hash.h"
#include "bioflex/model.h"
#include "testutil.h"

enum { B = 4, S = 8, K = 5 };

static bf_model_config tiny_cnn(void) {
    bf_model_config mc = bf_test_cnn_config(4, 16, 0.5f);
    mc.batchnorm = 0;
    return mc;
}

/* The logits of x (n images from image `from` of xs) at sample offset `offset`, in training mode. */
static void logits_of(bf_model *m, const float *xs, int from, int n, uint64_t offset, float *out) {
    const size_t image = (size_t)S * S;
    CHECK_OK(bf_model_set_batch(m, n));
    m->training = 1;
    m->step = 3;
    m->sample_offset = offset;
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, xs + (size_t)from * image, &logits)); /* CPU backend: host memory */
    if (logits) memcpy(out, logits, (size_t)n * K * sizeof(float));
}

/* The largest |a - b|, relative to the larger magnitude where that is over 1. */
static double largest_difference(const float *a, const float *b, int n) {
    double largest = 0;
    for (int i = 0; i < n; i++) {
        const double scale = fabs(a[i]) > 1 ? fabs(a[i]) : 1, d = fabs((double)a[i] - b[i]) / scale;
        if (!(d <= largest)) largest = d; /* a NaN stays the largest */
    }
    return largest;
}

static void check_halves(const char *label, const bf_model_config *mc) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, mc, (bf_shape){B, 1, S, S}, K, 9, &m));
    if (!m) {
        bf_backend_destroy(b);
        return;
    }
    float xs[B * S * S], whole[B * K], halves[B * K], shifted[B * K];
    for (int i = 0; i < B * S * S; i++) xs[i] = bf_uniform(5, (uint64_t)i); /* in [0, 1): spike probabilities */
    logits_of(m, xs, 0, B, 0, whole);
    logits_of(m, xs, 0, B / 2, 0, halves);
    logits_of(m, xs, B / 2, B / 2, B / 2, halves + B / 2 * K);
    /* The same draws give the same logits up to the products' rounding: OpenBLAS and oneDNN need not
     * give a sample the same bits in a batch of another size (on an AVX-512 machine they did not).
     * Other draws (another dropout mask) move them by far more. */
    const double same = largest_difference(whole, halves, B * K);
    CHECK(same <= 1e-5, "%s: two half batches at offsets 0 and %d draw what the whole batch draws (logits to "
          "rounding: largest difference %g)", label, B / 2, same);
    logits_of(m, xs, 0, B / 2, 0, shifted);
    logits_of(m, xs, B / 2, B / 2, 1, shifted + B / 2 * K);
    const double other = largest_difference(whole + B / 2 * K, shifted + B / 2 * K, B / 2 * K);
    CHECK(other > 1e-3, "%s: the second half at offset 1 draws other numbers (largest difference %g)", label, other);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

int main(void) {
    bf_model_config cnn = tiny_cnn();
    check_halves("CNN with dropout", &cnn);

    bf_model_config rate = tiny_cnn();
    rate.spiking.neuron = BF_NEURON_LIF;
    rate.spiking.time_steps = 3;
    rate.spiking.threshold = 0.3f;
    rate.spiking.encoding = 1; /* rate */
    check_halves("rate-coded LIF CNN with dropout, T = 3", &rate);

    bf_model_config flex = tiny_cnn();
    flex.dropout = 0;
    flex.flex = 1;
    flex.flex_joint = BF_FLEX_JOINT_MASK;
    flex.flex_mask = BF_FLEX_MASK_STOCHASTIC_FSBP;
    flex.flex_logits_bn = 0;
    check_halves("flex CNN, stochastic mask", &flex);
    return bf_test_finish();
}
