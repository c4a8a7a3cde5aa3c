/* test_pytorch_parity_flex.c - bioflex's flex layers compute what PyTorch computes (llm.c style).
 *
 * tests/fixtures/parity_flex.safetensors is written by bench/make_flex_parity_fixture.py with a
 * PyTorch Flex2D written from the specification (../shared/specs/flexnet.md 1.2-1.5, not from
 * bioflex's code), in the network
 *
 *     flex1 Flex2D(3 -> 6, k 3, s 1, p 1) -> bn BatchNorm2d(6) -> relu -> flex2 Flex2D(6 -> 4, k 3, s 2, p 1)
 *     -> gap (global average pool) -> flatten -> fc Linear(4, 5)         input [4, 3, 8, 8], K = 5
 *
 * for four variants, each under its prefix "<variant>.":
 *     max_expand     channel-wise max (torch.maximum, ties split), expand widening
 *                    (3 -> 6 block copy, 6 -> 4 tiling j % 6)
 *     max_bilinear   channel-wise max, bilinear widening (F.interpolate along the channel axis)
 *     mask_hard_bn   mask joint, SIGMOID_HARD, batch-norm on the logits, learned threshold, expand
 *     mask_mul       mask joint, SIGMOID_MUL f = 2, no logits batch-norm, learned threshold, bilinear
 * with the initial state_dict, a batch, the logits, the label-smoothed cross-entropy, every
 * parameter gradient, the batch-norm buffers after the first forward pass (stats1.*) and the whole
 * state_dict after two SGD steps (lr 0.05, momentum 0.9; after2.*). No Python runs here.
 *
 * For each variant the test builds the same network with bf_model_add_flex etc. on the CPU
 * backend and checks that
 *   - every bioflex parameter and buffer has a tensor of the same name and shape in the fixture,
 *     and every state_dict entry of the fixture is a bioflex parameter or buffer: bioflex's flex
 *     layers have FlexNet's state_dict (flex_conv.*, threshold, bn_logits.*);
 *   - from the fixture's weights, forward + loss + backward give PyTorch's logits, loss and
 *     gradients, and the running statistics of every batch-norm (bn and bn_logits) after it;
 *   - two SGD steps (each a forward + backward in train mode, as the script does) give PyTorch's
 *     parameters, running statistics and num_batches_tracked.
 * Each comparison prints its largest violation |a-b| / (atol + rtol*max(|a|,|b|)): <= 1 passes.
 *
 * The script picks a seed whose batch stays away from every kink (channel-wise max ties, the
 * corners of SIGMOID_HARD, ReLU at 0, near-ties of a computed max-pool window) in both forward
 * passes, so that fp32 rounding differences cannot switch a branch and the tight tolerances hold.
 * There is no gauge bias here (no conv bias read only by a batch-norm), and SGD moves rounding
 * noise by lr * noise only, so nothing needs the special handling of test_pytorch_parity.c. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/parity_flex.safetensors"

enum { N = 4, C = 3, H = 8, W = 8, K = 5 };
static const float SMOOTHING = 0.1f;

/* fp32 on both sides, in different summation orders (im2col + sgemm here, ATen there):
 * agreement is expected to a few ulps, far inside these tolerances. */
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
    printf("  %-8s %-48s n=%-5zu max|ref| %-10.4g max|diff| %-10.3g violation %.3g\n", what, name, n, max_ref,
           max_abs, v);
    CHECK(v <= 1.0, "%s %s: max violation %.3g at [%zu]: bioflex %.9g vs PyTorch %.9g (atol %g, rtol %g)", what, name,
          v, worst, actual[worst], expected[worst], atol, rtol);
    free(expected);
}

/* Copies the device floats [offset, offset+count) of buf to a new host array. */
static float *download(const float *buf, size_t offset, size_t count) {
    return bf_test_download(backend, buf + offset, count);
}

/* The name of the num_batches_tracked entry of the batch-norm whose running_mean is `buffer`
 * ("flex1.bn_logits.running_mean" -> "<prefix>flex1.bn_logits.num_batches_tracked"). */
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

/* Checks that the fixture has "<prefix><p->name>" with p's shape (F32). */
static void check_shape(const char *prefix, const bf_param *p) {
    char name[BF_NAME_MAX + 64];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    const bf_st_tensor *t = bf_safetensors_find(fixture, name);
    CHECK(t != NULL, "bioflex's %s has no tensor %s in the fixture", p->name, name);
    if (!t) return;
    int same = t->dtype == BF_DTYPE_F32 && t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
    CHECK(same, "%s: fixture %s with %d dims [%lld,%lld,%lld,%lld], bioflex F32 with %d dims [%lld,%lld,%lld,%lld]",
          name, bf_dtype_name(t->dtype), t->ndim, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
          (long long)(t->ndim > 2 ? t->shape[2] : 0), (long long)(t->ndim > 3 ? t->shape[3] : 0), p->ndim,
          (long long)p->shape[0], (long long)(p->ndim > 1 ? p->shape[1] : 0), (long long)(p->ndim > 2 ? p->shape[2] : 0),
          (long long)(p->ndim > 3 ? p->shape[3] : 0));
}

/* Both ways: every bioflex parameter and buffer (and num_batches_tracked of each batch-norm) is a
 * fixture tensor "<prefix>name" of the same shape, and every state_dict entry of the fixture under
 * prefix is a bioflex name (entries other than input, labels and derived ones). */
static void test_names(const bf_model *m, const char *prefix) {
    static const char *derived[] = {"input", "labels", "expected.", "grad.", "stats1.", "after2."};
    for (int i = 0; i < m->num_params; i++) check_shape(prefix, &m->params[i]);
    int bn_layers = 0;
    for (int i = 0; i < m->num_buffers; i++) {
        check_shape(prefix, &m->buffers[i]);
        char tracked[BF_NAME_MAX + 64];
        if (tracked_name(m->buffers[i].name, prefix, tracked, sizeof tracked)) {
            bn_layers++;
            const bf_st_tensor *t = bf_safetensors_find(fixture, tracked);
            CHECK(t && t->dtype == BF_DTYPE_I64 && t->ndim == 0, "%s: an I64 scalar in the fixture", tracked);
        }
    }
    int state_entries = 0, unknown = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < bf_safetensors_count(fixture); i++) {
        const char *full = bf_safetensors_at(fixture, i)->name;
        if (strncmp(full, prefix, pl) != 0) continue;
        const char *name = full + pl;
        int skip = 0;
        for (size_t d = 0; d < sizeof derived / sizeof derived[0]; d++)
            if (!strncmp(name, derived[d], strlen(derived[d]))) skip = 1;
        if (skip) continue;
        state_entries++;
        if (!is_bioflex_name(m, name)) {
            unknown++;
            CHECK(0, "fixture state_dict entry %s is not a bioflex parameter or buffer", full);
        }
    }
    int expected = m->num_params + m->num_buffers + bn_layers;
    printf("  state_dict: %d entries in the fixture, bioflex has %d parameters + %d buffers + %d num_batches_tracked\n",
           state_entries, m->num_params, m->num_buffers, bn_layers);
    CHECK(unknown == 0 && state_entries == expected, "%sstate_dict entries: fixture %d, bioflex %d", prefix,
          state_entries, expected);
}

/* Loads the fixture's initial state_dict "<prefix>name" into the model: every parameter and
 * buffer by name, with bf_safetensors_copy_out checking dtype and shape, and num_batches_tracked
 * (one counter in bioflex: every batch-norm of the fixture must agree). */
static void load_initial(bf_model *m, const char *prefix) {
    char name[BF_NAME_MAX + 64], tracked[BF_NAME_MAX + 64];
    float *host = malloc((m->num_param_floats > m->num_buffer_floats ? m->num_param_floats : m->num_buffer_floats) *
                         sizeof(float) + 16);
    for (int i = 0; i < m->num_params; i++) {
        const bf_param *p = &m->params[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_F32, p->ndim, p->shape, host));
        CHECK_OK(bf_to_device(backend, m->param_data + p->offset, host, p->count * sizeof(float)));
    }
    int64_t tracked_value = -1;
    for (int i = 0; i < m->num_buffers; i++) {
        const bf_param *p = &m->buffers[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_F32, p->ndim, p->shape, host));
        CHECK_OK(bf_to_device(backend, m->buffer_data + p->offset, host, p->count * sizeof(float)));
        if (tracked_name(p->name, prefix, tracked, sizeof tracked)) {
            int64_t v = -1;
            CHECK_OK(bf_safetensors_copy_out(fixture, tracked, BF_DTYPE_I64, 0, NULL, &v));
            if (tracked_value < 0) tracked_value = v;
            CHECK(v == tracked_value, "%s = %lld, other layers %lld", tracked, (long long)v, (long long)tracked_value);
        }
    }
    m->num_batches_tracked = tracked_value < 0 ? 0 : tracked_value;
    free(host);
}

/* Compares every buffer (running statistics) and num_batches_tracked with "<prefix><name>";
 * and every parameter too when with_params. */
static void compare_state(bf_model *m, const char *what, const char *prefix, int with_params) {
    char name[BF_NAME_MAX + 64];
    if (with_params) {
        float *params = download(m->param_data, 0, m->num_param_floats);
        for (int i = 0; i < m->num_params; i++) {
            const bf_param *p = &m->params[i];
            snprintf(name, sizeof name, "%s%s", prefix, p->name);
            compare(what, name, params + p->offset, p->count, ATOL, RTOL);
        }
        free(params);
    }
    float *buffers = download(m->buffer_data, 0, m->num_buffer_floats);
    for (int i = 0; i < m->num_buffers; i++) {
        const bf_param *b = &m->buffers[i];
        snprintf(name, sizeof name, "%s%s", prefix, b->name);
        compare(what, name, buffers + b->offset, b->count, ATOL, RTOL);
        if (tracked_name(b->name, prefix, name, sizeof name)) {
            int64_t v = -1;
            CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_I64, 0, NULL, &v));
            CHECK(v == m->num_batches_tracked, "%s: PyTorch %lld, bioflex %lld", name, (long long)v,
                  (long long)m->num_batches_tracked);
        }
    }
    free(buffers);
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

typedef struct variant {
    const char *name;
    bf_flex_options opt;
} variant;

static void run_variant(const variant *v) {
    char prefix[64], name[BF_NAME_MAX + 64];
    snprintf(prefix, sizeof prefix, "%s.", v->name);
    printf("%s: joint %s, widening %s", v->name, v->opt.joint == BF_FLEX_JOINT_MAX ? "channelwise_max" : "mask",
           v->opt.channels == BF_FLEX_CHANNELS_EXPAND ? "expand" : "bilinear");
    if (v->opt.joint == BF_FLEX_JOINT_MASK)
        printf(", mask %s (factor %g), logits BN %s, learned threshold",
               v->opt.mask == BF_FLEX_MASK_SIGMOID_HARD ? "sigmoid_hard" : "sigmoid_mul", v->opt.mask_factor,
               v->opt.logits_bn ? "on" : "off");
    printf("\n");

    bf_model *m = NULL;
    CHECK_OK(bf_model_create(backend, (bf_shape){N, C, H, W}, 1, &m));
    if (!m) return;
    int x = bf_model_add_flex(m, "flex1", BF_MODEL_INPUT, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, &v->opt);
    x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f); /* PyTorch's BatchNorm2d defaults */
    x = bf_model_add_relu(m, "relu", x);
    x = bf_model_add_flex(m, "flex2", x, 4, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, &v->opt);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_build_status(m));
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) {
        bf_model_destroy(m);
        return;
    }
    m->training = 1;

    test_names(m, prefix);
    load_initial(m, prefix);

    /* the batch */
    batch bt = {0};
    float xh[N * C * H * W];
    int32_t labels[N];
    int64_t xshape[4] = {N, C, H, W}, lshape[1] = {N};
    snprintf(name, sizeof name, "%sinput", prefix);
    CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_F32, 4, xshape, xh));
    snprintf(name, sizeof name, "%slabels", prefix);
    CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_I32, 1, lshape, labels));
    bt.x = bf_test_upload(backend, xh, sizeof xh / sizeof xh[0]);
    CHECK_OK(bf_alloc(backend, sizeof labels, (void **)&bt.labels));
    CHECK_OK(bf_to_device(backend, bt.labels, labels, sizeof labels));
    bt.losses = bf_test_upload(backend, NULL, N);
    bt.dlogits = bf_test_upload(backend, NULL, (size_t)N * K);

    bf_config cfg;
    bf_config_defaults(&cfg);
    bf_optim_config sgd = cfg.optim;
    sgd.optimizer = BF_OPTIM_SGD;
    sgd.lr = 0.05f;
    sgd.momentum = 0.9f;
    sgd.nesterov = 0;
    sgd.weight_decay = 0;
    sgd.grad_clip_norm = 0;
    bf_optimizer *opt = NULL;
    CHECK_OK(bf_optimizer_create(backend, &sgd, m->num_param_floats, &opt));

    for (int step = 0; opt && step < 2; step++) {
        float *logits = NULL;
        double loss = forward_backward(m, &bt, step == 0 ? &logits : NULL);
        if (step == 0) {
            snprintf(name, sizeof name, "%sexpected.logits", prefix);
            compare("forward", name, logits, (size_t)N * K, ATOL, RTOL);
            free(logits);
            float expected_loss = 0;
            snprintf(name, sizeof name, "%sexpected.loss", prefix);
            CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_F32, 0, NULL, &expected_loss));
            printf("  loss     bioflex %.9f PyTorch %.9f diff %.3g\n", loss, expected_loss, fabs(loss - expected_loss));
            CHECK_CLOSE(loss, expected_loss, ATOL, RTOL, "mean label-smoothed cross-entropy");
            float *grads = download(m->grad_data, 0, m->num_param_floats);
            for (int i = 0; i < m->num_params; i++) {
                snprintf(name, sizeof name, "%sgrad.%s", prefix, m->params[i].name);
                compare("backward", name, grads + m->params[i].offset, m->params[i].count, ATOL, RTOL);
            }
            free(grads);
            snprintf(name, sizeof name, "%sstats1.", prefix);
            compare_state(m, "stats", name, 0);
        }
        CHECK_OK(bf_optimizer_step(backend, opt, m->param_data, m->grad_data, sgd.lr, NULL));
    }
    snprintf(name, sizeof name, "%safter2.", prefix);
    compare_state(m, "sgd", name, 1);

    if (opt) bf_optimizer_destroy(backend, opt);
    bf_free(backend, bt.x);
    bf_free(backend, bt.labels);
    bf_free(backend, bt.losses);
    bf_free(backend, bt.dlogits);
    bf_model_destroy(m);
}

int main(void) {
    bf_status s = bf_safetensors_read(FIXTURE, &fixture);
    CHECK(s == BF_OK,
          "reading the fixture: %s (regenerate it with /usr/bin/python3 bench/make_flex_parity_fixture.py)",
          bf_last_error());
    if (s != BF_OK) return bf_test_finish();
    const char *version = bf_safetensors_meta(fixture, "torch_version");
    printf("fixture %s (torch %s)\n", FIXTURE, version ? version : "?");

    CHECK_OK(bf_backend_create_cpu(1, &backend));
    if (!backend) return bf_test_finish();

    const bf_flex_options max_expand = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND,
                                        .ties = BF_FLEX_TIE_SPLIT, .mask = BF_FLEX_MASK_SIGMOID_HARD, .mask_factor = 1,
                                        .logits_bn = 0, .threshold_mode = BF_THRESHOLD_LEARNED, .bn_eps = 1e-5f,
                                        .bn_momentum = 0.1f};
    variant variants[4] = {{"max_expand", max_expand}, {"max_bilinear", max_expand},
                           {"mask_hard_bn", max_expand}, {"mask_mul", max_expand}};
    variants[1].opt.channels = BF_FLEX_CHANNELS_BILINEAR;
    variants[2].opt.joint = BF_FLEX_JOINT_MASK;
    variants[2].opt.mask = BF_FLEX_MASK_SIGMOID_HARD;
    variants[2].opt.logits_bn = 1;
    variants[3].opt.joint = BF_FLEX_JOINT_MASK;
    variants[3].opt.channels = BF_FLEX_CHANNELS_BILINEAR;
    variants[3].opt.mask = BF_FLEX_MASK_SIGMOID_MUL;
    variants[3].opt.mask_factor = 2;
    for (int i = 0; i < 4; i++) run_variant(&variants[i]);

    bf_backend_destroy(backend);
    bf_safetensors_close(fixture);
    return bf_test_finish();
}
