/* test_pytorch_parity.c - bioflex computes what PyTorch computes (llm.c style).
 *
 * tests/fixtures/parity_cnn.safetensors is written by bench/make_parity_fixture.py with PyTorch:
 * a tiny arch = cnn network (channels 4,8, hidden 16, dropout 0, batch-norm; input [6,3,12,12],
 * K = 5), its initial state_dict, a batch, the logits, the label-smoothed cross-entropy, every
 * parameter gradient, and the parameters and batch-norm running statistics after two SGD
 * (momentum 0.9, Nesterov, weight decay) steps and after two AdamW steps. No Python runs here.
 *
 * The test builds the same network with bf_model_build on the CPU backend and checks that
 *   - every bioflex parameter and buffer has a tensor of the same name and shape in the fixture,
 *     and every state_dict entry of the fixture is a bioflex parameter or buffer (the names are
 *     PyTorch's state_dict names, both ways);
 *   - from the fixture's weights, forward + loss + backward give PyTorch's logits, loss and
 *     gradients;
 *   - two SGD steps and two AdamW steps (each a forward + backward in train mode, as the script
 *     does) give PyTorch's parameters, running_mean / running_var and num_batches_tracked.
 * Each comparison prints its largest violation |a-b| / (atol + rtol*max(|a|,|b|)): <= 1 passes.
 *
 * Gauge biases. A conv bias read only by a batch-norm in train mode does not change the output
 * (the batch mean removes it), so its gradient is exactly 0 in exact arithmetic and ~1e-8 of
 * rounding noise in fp32, with signs that differ between any two implementations (PyTorch fp32
 * and fp64 differ too). The gradient check and SGD see only that noise times lr and compare
 * tightly. AdamW divides it by sqrt(v) ~ |noise| ~ eps and moves the bias by up to ~lr per step
 * in a direction set by the noise, so after AdamW these biases are not comparable: they are
 * checked against AdamW's step bound (both sides), their gradient against 0, and the running_mean
 * of their batch-norm, which the step-A bias shifts by momentum * bias, is compared exactly after
 * removing that term (the fixture records PyTorch's bias after step A as adamw_after1.*). */
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

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/parity_cnn.safetensors"

enum { N = 6, C = 3, H = 12, W = 12, K = 5 };
static const float SMOOTHING = 0.1f;

/* fp32 on both sides, in different summation orders (im2col + sgemm here, MKL-DNN / ATen
 * there): agreement is expected to a few ulps, far inside these tolerances. */
static const double ATOL = 1e-5, RTOL = 1e-4;

static bf_parity px; /* the fixture and the backend */

/* The batch-norm layer that is the only reader of the conv layer owning parameter p, when p is
 * that conv's bias (a gauge bias, see the top of the file); -1 otherwise. */
static int gauge_bn(const bf_model *m, int p) {
    int li = m->params[p].layer;
    const bf_layer *l = &m->layers[li];
    if (l->kind != BF_LAYER_CONV || !l->has_bias || l->num_params < 2 || l->param_index[1] != p ||
        l->num_consumers != 1)
        return -1;
    for (int j = li + 1; j < m->num_layers; j++)
        for (int k = 0; k < m->layers[j].num_inputs; k++)
            if (m->layers[j].input[k] == li) return m->layers[j].kind == BF_LAYER_BATCHNORM ? j : -1;
    return -1;
}

/* The gauge bias read by batch-norm layer bn, or -1. */
static int gauge_bias_of_bn(const bf_model *m, int bn) {
    for (int p = 0; p < m->num_params; p++)
        if (gauge_bn(m, p) == bn) return p;
    return -1;
}

/* The user data of the AdamW run's hooks, which check the gauge biases (see the top of the file). */
typedef struct gauge_check {
    const bf_optim_config *oc;
    float *after1; /* bioflex's parameters after step A */
} gauge_check;

/* A gauge bias after two AdamW steps: checked against the step bound on both sides. */
static int gauge_param(void *user, const bf_model *m, int i, const char *what, const char *name, const float *params) {
    const gauge_check *gc = user;
    const bf_optim_config *oc = gc->oc;
    if (gauge_bn(m, i) < 0) return 0;
    const bf_param *p = &m->params[i];
    /* |p2 - p0*(1-lr*wd)^2| <= lr*(|u1| + |u2|), and AdamW's |u_t| = |m_hat|/(sqrt(v_hat)+eps)
     * is < 1 at t = 1 and <= 1.0014 at t = 2 with betas 0.9/0.999 (Cauchy-Schwarz). */
    float *p0 = malloc(p->count * sizeof(float)), *pt = malloc(p->count * sizeof(float));
    CHECK_OK(bf_safetensors_copy_out(px.fixture, p->name, BF_DTYPE_F32, p->ndim, p->shape, p0));
    CHECK_OK(bf_safetensors_copy_out(px.fixture, name, BF_DTYPE_F32, p->ndim, p->shape, pt));
    double decay = (1.0 - (double)oc->lr * oc->weight_decay) * (1.0 - (double)oc->lr * oc->weight_decay);
    double bound = 2.01 * oc->lr, worst_bf = 0, worst_pt = 0, max_diff = 0;
    for (size_t k = 0; k < p->count; k++) {
        double base = p0[k] * decay, a = params[p->offset + k];
        worst_bf = fmax(worst_bf, fabs(a - base));
        worst_pt = fmax(worst_pt, fabs(pt[k] - base));
        max_diff = fmax(max_diff, fabs(a - pt[k]));
    }
    printf("  %-8s %-40s n=%-5zu gauge bias (gradient is rounding noise): moved by <= %.3g (bioflex), "
           "%.3g (PyTorch), bound %.3g; max|diff| %.3g not compared\n",
           what, name, p->count, worst_bf, worst_pt, bound, max_diff);
    CHECK(worst_bf <= bound && worst_pt <= bound, "%s: gauge bias moved %g (bioflex), %g (PyTorch), bound %g", name,
          worst_bf, worst_pt, bound);
    free(p0);
    free(pt);
    return 1;
}

/* The running_mean of a gauge bias's batch-norm after two AdamW steps, without the momentum *
 * (bias after step A) term. */
static int gauge_buffer(void *user, const bf_model *m, int i, const char *what, const char *name,
                        const float *buffers) {
    const gauge_check *gc = user;
    const bf_param *b = &m->buffers[i];
    const bf_layer *bn = &m->layers[b->layer];
    int gauge = bn->buffer_index[0] == i ? gauge_bias_of_bn(m, b->layer) : -1;
    if (gauge < 0) return 0;
    /* running_mean after step B = (1-mom)*rm1 + mom*(bias-free mean of step B + bias after step A),
     * with rm1 and the bias-free mean identical on both sides: remove mom * bias after step A. */
    const bf_param *gp = &m->params[gauge];
    char after1[BF_NAME_MAX + 32];
    snprintf(after1, sizeof after1, "adamw_after1.%s", gp->name);
    float *pt_b1 = malloc(gp->count * sizeof(float)), *pt_rm = malloc(b->count * sizeof(float));
    float *bf_rm = malloc(b->count * sizeof(float));
    CHECK_OK(bf_safetensors_copy_out(px.fixture, after1, BF_DTYPE_F32, gp->ndim, gp->shape, pt_b1));
    CHECK_OK(bf_safetensors_copy_out(px.fixture, name, BF_DTYPE_F32, b->ndim, b->shape, pt_rm));
    float mom = bn->bn.momentum;
    for (size_t k = 0; k < b->count; k++) {
        pt_rm[k] -= mom * pt_b1[k];
        bf_rm[k] = buffers[b->offset + k] - mom * gc->after1[gp->offset + k];
    }
    size_t worst = 0;
    double v = bf_test_max_violation(bf_rm, pt_rm, b->count, ATOL, RTOL, &worst), max_abs = 0;
    for (size_t k = 0; k < b->count; k++) max_abs = fmax(max_abs, fabs((double)bf_rm[k] - pt_rm[k]));
    printf("  %-8s %-40s n=%-5zu minus momentum * %s after step A: max|diff| %-10.3g violation %.3g\n", what, name,
           b->count, gp->name, max_abs, v);
    CHECK(v <= 1.0, "%s - momentum * %s after step A: max violation %.3g at [%zu]: %.9g vs %.9g", name, gp->name, v,
          worst, bf_rm[worst], pt_rm[worst]);
    free(pt_b1);
    free(pt_rm);
    free(bf_rm);
    return 1;
}

/* Keeps bioflex's parameters after step A for gauge_buffer. */
static void gauge_after_step(void *user, bf_model *m, int step) {
    gauge_check *gc = user;
    if (step == 0) gc->after1 = bf_test_download(px.backend, m->param_data, m->num_param_floats);
}

/* The gradient of a gauge bias: both sides are rounding noise (~1e-8), inside ATOL (compared
 * with the others); this says that bioflex's is noise around the exact 0. */
static void gauge_grads(void *user, bf_model *m, const float *grads) {
    (void)user;
    for (int i = 0; i < m->num_params; i++) {
        if (gauge_bn(m, i) < 0) continue;
        double g = 0;
        for (size_t k = 0; k < m->params[i].count; k++) g = fmax(g, fabs(grads[m->params[i].offset + k]));
        CHECK(g <= 1e-6, "grad.%s: gradient of a conv bias read only by a train-mode batch-norm is %g, "
              "expected rounding noise around 0", m->params[i].name, g);
    }
}

int main(void) {
    px.atol = ATOL;
    px.rtol = RTOL;
    px.name_width = 40;
    if (!bf_parity_open(&px, FIXTURE, "bench/make_parity_fixture.py", 0)) return bf_test_finish();

    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_CNN;
    cfg.model.channels[0] = 4;
    cfg.model.channels[1] = 8;
    cfg.model.num_channels = 2;
    cfg.model.hidden = 16;
    cfg.model.dropout = 0;
    cfg.model.batchnorm = 1;
    cfg.model.bn_momentum = 0.1f; /* PyTorch's BatchNorm2d defaults */
    cfg.model.bn_eps = 1e-5f;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(px.backend, &cfg.model, (bf_shape){N, C, H, W}, K, 1, &m));
    if (!m) return bf_test_finish();
    m->training = 1;

    /* Every bioflex name is in the fixture (bf_parity_load_initial), and every state_dict entry
     * of the fixture is a bioflex name: a tensor that is not input, labels or a derived entry. */
    static const char *const derived[] = {"input", "labels", "expected.", "grad.", "after2.", "adamw_after2.",
                                          "adamw_after1."};
    bf_parity_check_names(&px, m, "", derived, sizeof derived / sizeof derived[0], 0);

    bf_parity_batch bt;
    bf_parity_batch_load(&px, &bt, "", (bf_shape){N, C, H, W}, K, SMOOTHING);

    /* SGD, Nesterov momentum, weight decay: step A checks the forward and backward pass. */
    const bf_optim_config sgd = bf_parity_sgd(0.05f, 0.9f, 1, 1e-3f);
    printf("SGD (lr 0.05, momentum 0.9, nesterov, weight_decay 1e-3): forward, backward, two steps\n");
    bf_parity_two_steps(&px, m, &bt,
                        &(bf_parity_steps){.prefix = "", .oc = &sgd, .check_first = 1,
                                           .loss_what = "mean label-smoothed cross-entropy", .what = "sgd",
                                           .after = "after2.", .after_grads = gauge_grads});

    /* AdamW from the same initial state; the gauge biases as the top of the file says. */
    bf_optim_config adamw = cfg.optim;
    adamw.optimizer = BF_OPTIM_ADAMW;
    adamw.lr = 0.01f;
    adamw.beta1 = 0.9f;
    adamw.beta2 = 0.999f;
    adamw.eps = 1e-8f;
    adamw.weight_decay = 0.01f;
    adamw.grad_clip_norm = 0;
    printf("AdamW (lr 0.01, betas 0.9/0.999, eps 1e-8, weight_decay 0.01): two steps\n");
    gauge_check gc = {.oc = &adamw, .after1 = NULL};
    const bf_parity_hooks gauge_hooks = {.param = gauge_param, .buffer = gauge_buffer, .user = &gc};
    bf_parity_two_steps(&px, m, &bt,
                        &(bf_parity_steps){.prefix = "", .oc = &adamw, .what = "adamw", .after = "adamw_after2.",
                                           .after_step = gauge_after_step, .final = &gauge_hooks, .user = &gc});
    free(gc.after1);

    bf_parity_batch_free(&px, &bt);
    bf_model_destroy(m);
    bf_parity_close(&px);
    return bf_test_finish();
}
