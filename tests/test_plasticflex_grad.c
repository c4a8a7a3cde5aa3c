/* test_plasticflex_grad.c - whole-model finite differences of the PlasticFlex family (model_zoo.c's
 * plasticflex_vgg6 and plasticflex_simple_flex; ../shared/specs/plasticflex.md), on the CPU backend.
 *
 * The per-op checks (test_flex_ops, test_neuron_ops) and the flex networks of test_flex_model hold
 * each piece; what no other test differentiates is the zoo's PlasticFlex graph as it is built from a
 * config: flex layers -> batch-norm -> neuron over time-folded batches, the shared direct input
 * (the layers before the first neuron run once, an encode layer repeats their output, whose
 * backward sums the steps), rate-coded steps, dropout per step, a frozen fc1 that still passes dx
 * down, and the memory plan's default fusions (fold_conv_bias, fuse_flex_bn, fuse_flex_scatter,
 * flex_recompute_conv when asked). LIF/IF spikes have a surrogate, not a true gradient, so the
 * neuron here is the reference's stateless clamp01 (piecewise linear: its backward is its exact
 * derivative); test_spiking_model holds the LIF networks' gradients to these plans bit for bit.
 *
 * Loss: sum g .* logits with a fixed random g (bf_test_logits_dot), the model's step fixed so that
 * dropout, the rate coding's spikes and a resampled threshold draw the same at every forward. For a
 * sample of every parameter tensor (12 elements spread over it) the backward's gradient must match
 * the central difference; where the two one-sided differences disagree, or the central differences
 * of two steps do (asked where the gradient would fail), a max or clamp corner lies inside the step
 * and the element is skipped (at most a fifth of them). The parameters are set where few corners
 * are (smooth_operating_point). Each check fails when a backward is wrong: an encode layer that
 * drops a step's gradient, a frozen fc1 without dx, C recomputed without its bias, a first flex
 * layer's route that does not sum its bias gradient (each tried by hand). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/config.h"
#include "bioflex/model.h"
#include "testutil.h"

enum { N = 2, C = 3, S = 8, K = 4, PER_TENSOR = 12 };

#define STEP 1e-3f
#define ATOL 6e-4 /* the float forward's rounding over STEP */
#define RTOL 2e-2

/* The config's [model] section after `assignments` (NULL-terminated "section.key=value" strings). */
static int model_config(bf_model_config *mc, const char *const *assignments) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    for (int i = 0; assignments[i]; i++) {
        bf_status s = bf_config_set(&cfg, assignments[i]);
        CHECK(s == BF_OK, "%s: %s", assignments[i], bf_last_error());
        if (s != BF_OK) return 0;
    }
    *mc = cfg.model;
    return 1;
}

static int count_kind(const bf_model *m, bf_layer_kind kind) {
    int n = 0;
    for (int i = 0; i < m->num_layers; i++) n += m->layers[i].kind == kind;
    return n;
}

/* The parameters where the check can see most: every batch-norm's affine set so that its normalised
 * output, ~N(0, 1), lands within (0, 1) to four standard deviations (gamma 0.12, beta 0.5), and a
 * mask's logits batch-norm well inside the hard sigmoid's (-3, 3) (gamma 0.5): otherwise thousands of the 64- and 128-channel layers' elements sit
 * at a clamp01 or hard-sigmoid corner, a parameter's step moves many of them across, and the
 * central differences measure the corners (they converge on the backward's gradient only at steps
 * where the float forward's rounding swamps them). The ops' corners are test_neuron_ops' and
 * test_flex_ops'; the max joint's and the pools' remain here, and are skipped as corners. */
static void smooth_operating_point(bf_model *m) {
    for (int p = 0; p < m->num_params; p++) {
        const bf_param *q = &m->params[p];
        const bf_layer *l = &m->layers[q->layer];
        const size_t len = strlen(q->name);
        const int weight = len > 7 && !strcmp(q->name + len - 7, ".weight");
        const int bias = len > 5 && !strcmp(q->name + len - 5, ".bias");
        if ((l->kind == BF_LAYER_CONV || l->kind == BF_LAYER_FLEX) && !strstr(q->name, ".bn_logits.") && bias) {
            /* FlexNet's init zeroes the conv biases: nonzero ones, so that a backward that loses the
             * bias of the C it uses (the joint adds it, flex_recompute_conv computes C again) shows */
            bf_test_fill_uniform(m->param_data + q->offset, q->count, -0.2f, 0.2f, 100 + (unsigned long)p);
            continue;
        }
        float value;
        if (l->kind == BF_LAYER_BATCHNORM && (weight || bias)) value = weight ? 0.12f : 0.5f;
        else if (l->kind == BF_LAYER_FLEX && strstr(q->name, ".bn_logits.") && (weight || bias)) value = weight ? 0.5f : 0.0f;
        else continue;
        for (size_t j = 0; j < q->count; j++) m->param_data[q->offset + j] = value;
    }
}

/* What a variant's plan must hold, so that the check runs the path it names. */
enum {
    PLAN_FLEX_APPLIES_BN = 1,  /* a max-joint flex layer runs its batch-norm's dx (fuse_flex_bn) */
    PLAN_CONV_RECOMPUTED = 2,  /* a mask-joint flex layer keeps no C (flex_recompute_conv) */
    PLAN_FROZEN_FC1 = 4,       /* fc1 a frozen linear layer (freeze_fc1) */
    PLAN_SHARED_INPUT = 8,     /* the steps begin after the first layers: an encode layer past the input */
};

static int plan_holds(const bf_model *m, int what) {
    int found = 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if ((what & PLAN_FLEX_APPLIES_BN) && l->kind == BF_LAYER_FLEX && l->flex_applies_bn) found = 1;
        if ((what & PLAN_CONV_RECOMPUTED) && l->kind == BF_LAYER_FLEX && l->flex_conv_recomputed) found = 1;
        if ((what & PLAN_FROZEN_FC1) && l->kind == BF_LAYER_LINEAR && l->frozen && !strcmp(l->name, "fc1")) found = 1;
        if ((what & PLAN_SHARED_INPUT) && l->kind == BF_LAYER_ENCODE && l->input[0] != BF_MODEL_INPUT) found = 1;
    }
    return found;
}

/* Builds the model of `assignments` and checks its plan holds each of `plan` (PLAN_*), then
 * PER_TENSOR elements of every parameter tensor; pixels in [0, 1) when rate coded (spike
 * probabilities), else in [-1, 1). */
static void check_family(const char *label, const char *const *assignments, int plan, int rate_coded) {
    bf_model_config mc;
    if (!model_config(&mc, assignments)) return;
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b)); /* one thread: no spinning workers on a loaded machine */
    if (!b) return;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){N, C, S, S}, K, 3, &m));
    if (!m || !m->param_data) {
        if (m) bf_model_destroy(m);
        bf_backend_destroy(b);
        return;
    }
    CHECK(count_kind(m, BF_LAYER_FLEX) >= 4 && count_kind(m, BF_LAYER_NEURON) >= 4 &&
              count_kind(m, BF_LAYER_TIME_MEAN) == 1,
          "%s: flex layers, neuron layers and the time readout built", label);
    for (int bit = 1; bit <= PLAN_SHARED_INPUT; bit <<= 1)
        if (plan & bit) CHECK(plan_holds(m, bit), "%s: the plan lacks what the check is for (PLAN_* %d)", label, bit);
    smooth_operating_point(m);
    m->step = 5; /* fixed: the same dropout, spikes and thresholds at every forward below */
    static float x[N * C * S * S];
    float g[N * K];
    bf_test_fill_uniform(x, N * C * S * S, rate_coded ? 0.0f : -1.0f, 1.0f, 21);
    bf_test_fill_uniform(g, N * K, -1, 1, 22);

    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(b->ops->fill(b, m->grad_data, 0.0f, m->num_param_floats));
    CHECK_OK(bf_model_backward(m, g));
    float *grads = bf_test_download(b, m->grad_data, m->num_param_floats);
    const double l0 = bf_test_logits_dot(m, x, g, N * K);

    int checked = 0, kinks = 0, bad = 0, substantial = 0, tensors_seen = 0;
    for (int p = 0; grads && p < m->num_params; p++) {
        const bf_param *q = &m->params[p];
        const size_t stride = q->count > PER_TENSOR ? q->count / PER_TENSOR : 1;
        int tensor_checked = 0;
        for (size_t j = (size_t)p % stride; j < q->count; j += stride) {
            float *v = m->param_data + q->offset + j;
            const float keep = *v;
            *v = keep + STEP;
            const double up = bf_test_logits_dot(m, x, g, N * K);
            *v = keep - STEP;
            const double down = bf_test_logits_dot(m, x, g, N * K);
            *v = keep;
            const double analytic = grads[q->offset + j], tol = ATOL + RTOL * fabs(analytic);
            const double numeric = (up - down) / (2.0 * STEP);
            /* a corner inside the step: the one-sided differences disagree, or (asked only where the
             * gradient would fail, several corners can leave those alike) the central difference
             * of twice the step does not agree with this one */
            int corner = fabs((up - l0) - (l0 - down)) / STEP > tol;
            if (!corner && fabs(numeric - analytic) > tol)
                corner = fabs(numeric - bf_test_logits_dot_slope(m, x, g, N * K, v, 2 * STEP)) > tol / 2;
            if (corner) {
                kinks++;
                continue;
            }
            checked++, tensor_checked++;
            substantial += fabs(analytic) > 10 * ATOL;
            if (fabs(numeric - analytic) > tol && bad++ < 8)
                fprintf(stderr, "%s: %s[%zu]: numeric %.6g analytic %.6g\n", label, q->name, j, numeric, analytic);
        }
        tensors_seen += tensor_checked > 0;
    }
    printf("%s: %d parameters of %d tensors checked (%d with |gradient| > %g), %d skipped at corners, %d differ\n",
           label, checked, tensors_seen, substantial, 10 * ATOL, kinks, bad);
    CHECK(tensors_seen == m->num_params, "%s: only %d of %d parameter tensors checked", label, tensors_seen, m->num_params);
    /* teeth: most elements compared, and dozens of them far above the rounding's floor */
    CHECK(kinks <= checked / 5 && substantial >= 40, "%s: %d checked, %d at corners, %d above %g", label, checked, kinks,
          substantial, 10 * ATOL);
    CHECK(bad == 0, "%s: %d of %d parameter gradients differ from central differences", label, bad, checked);
    free(grads);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

int main(void) {
    /* the reference's single step: flex layers with FlexNet's channel-wise max (expand, split ties),
     * each before its batch-norm, the fused route-scatter-and-batch-norm backward of the defaults */
    static const char *const vgg6_max[] = {"model.arch=plasticflex_vgg6", "model.flex=true",
                                           "model.dropout=0.3", "spiking.neuron=clamp01", "spiking.time_steps=1", NULL};
    check_family("plasticflex_vgg6, channel-wise max, clamp01, T = 1", vgg6_max, PLAN_FLEX_APPLIES_BN, 0);

    /* PlasticFlex's own joint: a mask of the bilinear-widened pool against a threshold drawn anew at
     * every forward (one draw for all steps), batch-norm on the logits, C computed again in the
     * backward; rate-coded input over 2 steps (every layer time-folded), fc1 frozen */
    static const char *const vgg6_mask[] = {"model.arch=plasticflex_vgg6", "model.flex=true",
                                            "model.flex_joint=mask", "model.flex_channels=bilinear",
                                            "model.flex_mask=sigmoid_hard", "model.flex_logits_bn=true",
                                            "model.threshold_mode=resample_each_forward",
                                            "model.flex_recompute_conv=true", "model.freeze_fc1=true",
                                            "model.dropout=0.3", "spiking.neuron=clamp01", "spiking.encoding=rate",
                                            "spiking.time_steps=2", "data.normalize=false", NULL};
    check_family("plasticflex_vgg6, mask (bilinear, resampled threshold), clamp01, rate T = 2, fc1 frozen", vgg6_mask,
                 PLAN_CONV_RECOMPUTED | PLAN_FROZEN_FC1, 1);

    /* the shared direct input over 2 steps: the first flex layer and its batch-norm run once, an
     * encode layer repeats their output and its backward sums the steps' gradients (the plan of a
     * LIF network that keeps its charge; the config refuses clamp01 with direct steps for users,
     * whose steps would all be alike, which is no matter to the gradient) */
    static const char *const vgg6_shared[] = {"model.arch=plasticflex_vgg6", "model.flex=true",
                                              "model.dropout=0.3", "spiking.neuron=clamp01",
                                              "spiking.time_steps=2", NULL};
    check_family("plasticflex_vgg6, channel-wise max, clamp01, shared direct input T = 2", vgg6_shared,
                 PLAN_FLEX_APPLIES_BN | PLAN_SHARED_INPUT, 0);

    /* SimpleFlexNet: no batch-norm, each flex layer's output read by its neuron directly; the
     * older tie rule and bilinear widening */
    static const char *const simple[] = {"model.arch=plasticflex_simple_flex", "model.flex=true",
                                         "model.flex_channels=bilinear", "model.flex_tie=pool", "model.dropout=0.3",
                                         "spiking.neuron=clamp01", "spiking.time_steps=2", NULL};
    check_family("plasticflex_simple_flex, channel-wise max (bilinear, pool ties), clamp01, T = 2", simple,
                 PLAN_SHARED_INPUT, 0);
    return bf_test_finish();
}
