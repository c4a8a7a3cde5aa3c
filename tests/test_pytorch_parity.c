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
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/parity_cnn.safetensors"

enum { N = 6, C = 3, H = 12, W = 12, K = 5 };
static const float SMOOTHING = 0.1f;

/* fp32 on both sides, in different summation orders (im2col + sgemm here, MKL-DNN / ATen
 * there): agreement is expected to a few ulps, far inside these tolerances. */
static const double ATOL = 1e-5, RTOL = 1e-4;

static bf_backend *backend;
static bf_st_file *fixture;

/* Compares n host floats with the fixture tensor `name` (F32, numel n), printing the figures. */
static void compare(const char *what, const char *name, const float *actual, size_t n, double atol, double rtol) {
    const bf_st_tensor *t = bf_safetensors_find(fixture, name);
    CHECK(t != NULL, "%s: fixture has no tensor %s", what, name);
    if (!t) return;
    CHECK(t->dtype == BF_DTYPE_F32 && t->nbytes == n * sizeof(float), "%s: %s is %s, %zu bytes, expected F32 x %zu",
          what, name, bf_dtype_name(t->dtype), t->nbytes, n);
    if (t->dtype != BF_DTYPE_F32 || t->nbytes != n * sizeof(float)) return;
    float *expected = malloc(n * sizeof(float) + 1);
    memcpy(expected, t->data, n * sizeof(float));
    size_t worst = 0;
    double v = bf_test_max_violation(actual, expected, n, atol, rtol, &worst);
    double max_abs = 0, max_ref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)actual[i] - expected[i]);
        if (d > max_abs) max_abs = d;
        if (fabs(expected[i]) > max_ref) max_ref = fabs(expected[i]);
    }
    printf("  %-8s %-40s n=%-5zu max|ref| %-10.4g max|diff| %-10.3g violation %.3g\n", what, name, n, max_ref,
           max_abs, v);
    CHECK(v <= 1.0, "%s %s: max violation %.3g at [%zu]: bioflex %.9g vs PyTorch %.9g (atol %g, rtol %g)", what, name,
          v, worst, actual[worst], expected[worst], atol, rtol);
    free(expected);
}

/* Copies the device floats [offset, offset+count) of buf to a new host array. */
static float *download(const float *buf, size_t offset, size_t count) {
    return bf_test_download(backend, buf + offset, count);
}

/* The name of the num_batches_tracked entry of the batch-norm whose running_mean is `buffer`. */
static int tracked_name(const char *buffer, const char *prefix, char *out, size_t cap) {
    const char *suffix = ".running_mean";
    size_t len = strlen(buffer), sl = strlen(suffix);
    if (len < sl || strcmp(buffer + len - sl, suffix) != 0) return 0;
    snprintf(out, cap, "%s%.*s.num_batches_tracked", prefix, (int)(len - sl), buffer);
    return 1;
}

static int is_bioflex_name(const bf_model *m, const char *name) {
    char tracked[BF_NAME_MAX + 32];
    for (int i = 0; i < m->num_params; i++)
        if (!strcmp(m->params[i].name, name)) return 1;
    for (int i = 0; i < m->num_buffers; i++) {
        if (!strcmp(m->buffers[i].name, name)) return 1;
        if (tracked_name(m->buffers[i].name, "", tracked, sizeof tracked) && !strcmp(tracked, name)) return 1;
    }
    return 0;
}

/* Loads the fixture's initial state_dict into the model: every parameter and buffer by name,
 * with bf_safetensors_copy_out checking dtype and shape, and num_batches_tracked. */
static void load_initial(bf_model *m) {
    float *host = malloc((m->num_param_floats > m->num_buffer_floats ? m->num_param_floats : m->num_buffer_floats) *
                         sizeof(float) + 16);
    for (int i = 0; i < m->num_params; i++) {
        const bf_param *p = &m->params[i];
        CHECK_OK(bf_safetensors_copy_out(fixture, p->name, BF_DTYPE_F32, p->ndim, p->shape, host));
        CHECK_OK(bf_to_device(backend, m->param_data + p->offset, host, p->count * sizeof(float)));
    }
    int64_t tracked_value = -1;
    for (int i = 0; i < m->num_buffers; i++) {
        const bf_param *p = &m->buffers[i];
        CHECK_OK(bf_safetensors_copy_out(fixture, p->name, BF_DTYPE_F32, p->ndim, p->shape, host));
        CHECK_OK(bf_to_device(backend, m->buffer_data + p->offset, host, p->count * sizeof(float)));
        char tracked[BF_NAME_MAX + 32];
        if (tracked_name(p->name, "", tracked, sizeof tracked)) {
            int64_t v = -1;
            CHECK_OK(bf_safetensors_copy_out(fixture, tracked, BF_DTYPE_I64, 0, NULL, &v));
            if (tracked_value < 0) tracked_value = v;
            CHECK(v == tracked_value, "%s = %lld, other layers %lld", tracked, (long long)v, (long long)tracked_value);
        }
    }
    m->num_batches_tracked = tracked_value < 0 ? 0 : tracked_value;
    free(host);
}

/* Every bioflex name is in the fixture (load_initial), and every state_dict entry of the
 * fixture is a bioflex name: a tensor that is not input, labels or a derived entry. */
static void test_names(const bf_model *m) {
    static const char *derived[] = {"input", "labels", "expected.", "grad.", "after2.", "adamw_after2.", "adamw_after1."};
    int state_entries = 0, unknown = 0;
    for (int i = 0; i < bf_safetensors_count(fixture); i++) {
        const char *name = bf_safetensors_at(fixture, i)->name;
        int skip = 0;
        for (size_t d = 0; d < sizeof derived / sizeof derived[0]; d++)
            if (!strncmp(name, derived[d], strlen(derived[d]))) skip = 1;
        if (skip) continue;
        state_entries++;
        if (!is_bioflex_name(m, name)) {
            unknown++;
            CHECK(0, "fixture state_dict entry %s is not a bioflex parameter or buffer", name);
        }
    }
    int bn_layers = 0;
    for (int i = 0; i < m->num_buffers; i++) {
        char tracked[BF_NAME_MAX + 32];
        bn_layers += tracked_name(m->buffers[i].name, "", tracked, sizeof tracked);
    }
    int expected = m->num_params + m->num_buffers + bn_layers;
    printf("state_dict: %d entries in the fixture, bioflex has %d parameters + %d buffers + %d num_batches_tracked\n",
           state_entries, m->num_params, m->num_buffers, bn_layers);
    CHECK(unknown == 0 && state_entries == expected, "state_dict entries: fixture %d, bioflex %d", state_entries,
          expected);
}

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

typedef struct batch {
    float *x;           /* device [N, C, H, W] */
    int32_t *labels;    /* device [N] */
    float *losses;      /* device [N] */
    float *dlogits;     /* device [N, K] */
} batch;

/* One forward + loss + backward in train mode (as PyTorch's loss.backward()); returns the mean
 * loss and, when logits_out is given, a host copy of the logits (free() it). */
static double forward_backward(bf_model *m, const batch *bt, float **logits_out) {
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, bt->x, &logits));
    CHECK_OK(backend->ops->softmax_xent(backend, N, K, logits, bt->labels, SMOOTHING, 1.0f / N, bt->losses,
                                        bt->dlogits));
    if (logits_out) *logits_out = download(logits, 0, (size_t)N * K);
    float losses[N];
    CHECK_OK(bf_to_host(backend, losses, bt->losses, sizeof losses));
    CHECK_OK(bf_model_backward(m, bt->dlogits));
    double sum = 0;
    for (int i = 0; i < N; i++) sum += losses[i];
    return sum / N;
}

/* Compares every parameter, running statistic and num_batches_tracked with "<prefix><name>".
 * gauge_after1 (AdamW only, NULL otherwise): bioflex's parameters after step A; the gauge biases
 * are then checked against the AdamW step bound and their batch-norm's running_mean is compared
 * without the momentum * (bias after step A) term (see the top of the file). */
static void compare_state(bf_model *m, const char *what, const char *prefix, const bf_optim_config *oc,
                          const float *gauge_after1) {
    char name[BF_NAME_MAX + 32];
    float *params = download(m->param_data, 0, m->num_param_floats);
    for (int i = 0; i < m->num_params; i++) {
        const bf_param *p = &m->params[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        if (!gauge_after1 || gauge_bn(m, i) < 0) {
            compare(what, name, params + p->offset, p->count, ATOL, RTOL);
            continue;
        }
        /* |p2 - p0*(1-lr*wd)^2| <= lr*(|u1| + |u2|), and AdamW's |u_t| = |m_hat|/(sqrt(v_hat)+eps)
         * is < 1 at t = 1 and <= 1.0014 at t = 2 with betas 0.9/0.999 (Cauchy-Schwarz). */
        float *p0 = malloc(p->count * sizeof(float)), *pt = malloc(p->count * sizeof(float));
        CHECK_OK(bf_safetensors_copy_out(fixture, p->name, BF_DTYPE_F32, p->ndim, p->shape, p0));
        CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_F32, p->ndim, p->shape, pt));
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
        CHECK(worst_bf <= bound && worst_pt <= bound, "%s: gauge bias moved %g (bioflex), %g (PyTorch), bound %g",
              name, worst_bf, worst_pt, bound);
        free(p0);
        free(pt);
    }
    free(params);
    float *buffers = download(m->buffer_data, 0, m->num_buffer_floats);
    for (int i = 0; i < m->num_buffers; i++) {
        const bf_param *b = &m->buffers[i];
        snprintf(name, sizeof name, "%s%s", prefix, b->name);
        const bf_layer *bn = &m->layers[b->layer];
        int gauge = gauge_after1 && bn->buffer_index[0] == i ? gauge_bias_of_bn(m, b->layer) : -1;
        if (gauge < 0) {
            compare(what, name, buffers + b->offset, b->count, ATOL, RTOL);
        } else {
            /* running_mean after step B = (1-mom)*rm1 + mom*(bias-free mean of step B + bias after step A),
             * with rm1 and the bias-free mean identical on both sides: remove mom * bias after step A. */
            const bf_param *gp = &m->params[gauge];
            char after1[BF_NAME_MAX + 32];
            snprintf(after1, sizeof after1, "adamw_after1.%s", gp->name);
            float *pt_b1 = malloc(gp->count * sizeof(float)), *pt_rm = malloc(b->count * sizeof(float));
            float *bf_rm = malloc(b->count * sizeof(float));
            CHECK_OK(bf_safetensors_copy_out(fixture, after1, BF_DTYPE_F32, gp->ndim, gp->shape, pt_b1));
            CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_F32, b->ndim, b->shape, pt_rm));
            float mom = bn->bn.momentum;
            for (size_t k = 0; k < b->count; k++) {
                pt_rm[k] -= mom * pt_b1[k];
                bf_rm[k] = buffers[b->offset + k] - mom * gauge_after1[gp->offset + k];
            }
            size_t worst = 0;
            double v = bf_test_max_violation(bf_rm, pt_rm, b->count, ATOL, RTOL, &worst), max_abs = 0;
            for (size_t k = 0; k < b->count; k++) max_abs = fmax(max_abs, fabs((double)bf_rm[k] - pt_rm[k]));
            printf("  %-8s %-40s n=%-5zu minus momentum * %s after step A: max|diff| %-10.3g violation %.3g\n",
                   what, name, b->count, gp->name, max_abs, v);
            CHECK(v <= 1.0, "%s - momentum * %s after step A: max violation %.3g at [%zu]: %.9g vs %.9g", name,
                  gp->name, v, worst, bf_rm[worst], pt_rm[worst]);
            free(pt_b1);
            free(pt_rm);
            free(bf_rm);
        }
        if (tracked_name(b->name, prefix, name, sizeof name)) {
            int64_t v = -1;
            CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_I64, 0, NULL, &v));
            CHECK(v == m->num_batches_tracked, "%s: PyTorch %lld, bioflex %lld", name, (long long)v,
                  (long long)m->num_batches_tracked);
        }
    }
    free(buffers);
}

/* Step A: forward + backward, compared with expected.* and grad.* when check_grads, then an
 * optimiser step; step B: forward + backward + step. Then compares "<prefix>*"; gauge_aware
 * (AdamW) handles the gauge biases as the top of the file says. */
static void run_two_steps(bf_model *m, const batch *bt, const bf_optim_config *oc, const char *what,
                          const char *prefix, int check_grads, int gauge_aware) {
    load_initial(m);
    bf_optimizer *opt = NULL;
    CHECK_OK(bf_optimizer_create(backend, oc, m->num_param_floats, &opt));
    if (!opt) return;
    float *after1 = NULL;
    for (int step = 0; step < 2; step++) {
        float *logits = NULL;
        double loss = forward_backward(m, bt, step == 0 && check_grads ? &logits : NULL);
        if (step == 0 && check_grads) {
            compare("forward", "expected.logits", logits, (size_t)N * K, ATOL, RTOL);
            free(logits);
            float expected_loss = 0;
            CHECK_OK(bf_safetensors_copy_out(fixture, "expected.loss", BF_DTYPE_F32, 0, NULL, &expected_loss));
            printf("  loss     bioflex %.9f PyTorch %.9f diff %.3g\n", loss, expected_loss, fabs(loss - expected_loss));
            CHECK_CLOSE(loss, expected_loss, ATOL, RTOL, "mean label-smoothed cross-entropy");
            float *grads = download(m->grad_data, 0, m->num_param_floats);
            char name[BF_NAME_MAX + 8];
            for (int i = 0; i < m->num_params; i++) {
                snprintf(name, sizeof name, "grad.%s", m->params[i].name);
                /* gauge biases: both sides are rounding noise (~1e-8), inside ATOL; the check
                 * below says that bioflex's is noise around the exact 0. */
                compare("backward", name, grads + m->params[i].offset, m->params[i].count, ATOL, RTOL);
                if (gauge_bn(m, i) >= 0) {
                    double g = 0;
                    for (size_t k = 0; k < m->params[i].count; k++) g = fmax(g, fabs(grads[m->params[i].offset + k]));
                    CHECK(g <= 1e-6, "%s: gradient of a conv bias read only by a train-mode batch-norm is %g, "
                          "expected rounding noise around 0", name, g);
                }
            }
            free(grads);
        }
        CHECK_OK(bf_optimizer_step(backend, opt, m->param_data, m->grad_data, oc->lr, NULL));
        if (step == 0 && gauge_aware) after1 = download(m->param_data, 0, m->num_param_floats);
    }
    compare_state(m, what, prefix, oc, after1);
    free(after1);
    bf_optimizer_destroy(backend, opt);
}

int main(void) {
    bf_status s = bf_safetensors_read(FIXTURE, &fixture);
    CHECK(s == BF_OK, "reading the fixture: %s (regenerate it with /usr/bin/python3 bench/make_parity_fixture.py)",
          bf_last_error());
    if (s != BF_OK) return bf_test_finish();
    const char *version = bf_safetensors_meta(fixture, "torch_version");
    printf("fixture %s (torch %s)\n", FIXTURE, version ? version : "?");

    CHECK_OK(bf_backend_create_cpu(0, &backend));
    if (!backend) return bf_test_finish();

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
    CHECK_OK(bf_model_build(backend, &cfg.model, (bf_shape){N, C, H, W}, K, 1, &m));
    if (!m) return bf_test_finish();
    m->training = 1;

    test_names(m);

    /* the batch */
    batch bt = {0};
    float x[N * C * H * W];
    int32_t labels[N];
    int64_t xshape[4] = {N, C, H, W}, lshape[1] = {N};
    CHECK_OK(bf_safetensors_copy_out(fixture, "input", BF_DTYPE_F32, 4, xshape, x));
    CHECK_OK(bf_safetensors_copy_out(fixture, "labels", BF_DTYPE_I32, 1, lshape, labels));
    bt.x = bf_test_upload(backend, x, sizeof x / sizeof x[0]);
    CHECK_OK(bf_alloc(backend, sizeof labels, (void **)&bt.labels));
    CHECK_OK(bf_to_device(backend, bt.labels, labels, sizeof labels));
    bt.losses = bf_test_upload(backend, NULL, N);
    bt.dlogits = bf_test_upload(backend, NULL, (size_t)N * K);

    /* SGD, Nesterov momentum, weight decay: step A checks the forward and backward pass. */
    bf_optim_config sgd = cfg.optim;
    sgd.optimizer = BF_OPTIM_SGD;
    sgd.lr = 0.05f;
    sgd.momentum = 0.9f;
    sgd.nesterov = 1;
    sgd.weight_decay = 1e-3f;
    sgd.grad_clip_norm = 0;
    printf("SGD (lr 0.05, momentum 0.9, nesterov, weight_decay 1e-3): forward, backward, two steps\n");
    run_two_steps(m, &bt, &sgd, "sgd", "after2.", 1, 0);

    /* AdamW from the same initial state. */
    bf_optim_config adamw = cfg.optim;
    adamw.optimizer = BF_OPTIM_ADAMW;
    adamw.lr = 0.01f;
    adamw.beta1 = 0.9f;
    adamw.beta2 = 0.999f;
    adamw.eps = 1e-8f;
    adamw.weight_decay = 0.01f;
    adamw.grad_clip_norm = 0;
    printf("AdamW (lr 0.01, betas 0.9/0.999, eps 1e-8, weight_decay 0.01): two steps\n");
    run_two_steps(m, &bt, &adamw, "adamw", "adamw_after2.", 0, 1);

    bf_free(backend, bt.x);
    bf_free(backend, bt.labels);
    bf_free(backend, bt.losses);
    bf_free(backend, bt.dlogits);
    bf_model_destroy(m);
    bf_backend_destroy(backend);
    bf_safetensors_close(fixture);
    return bf_test_finish();
}
