/* test_pytorch_parity_spiking.c - bioflex's spiking networks compute what PyTorch computes (llm.c style).
 *
 * tests/fixtures/parity_spiking.safetensors is written by bench/make_spiking_parity_fixture.py
 * with plain PyTorch neurons written from the contract in include/bioflex/ops.h (a loop over the
 * T steps, the spike an autograd.Function with the surrogate gradient, BPTT by autograd; not from
 * bioflex's code), in the network
 *
 *     encode (direct, T steps, [T*N, ...] time outermost) -> conv Conv2d(1, 4, 3, pad 1)
 *     -> bn BatchNorm2d(4) (statistics over all T*N samples) -> lif1 -> pool MaxPool2d(2, 2)
 *     -> flatten -> fc1 Linear(64, 8) -> lif2 -> fc2 Linear(8, 3) -> readout (mean over T)
 *                                                                    input [4, 1, 8, 8], K = 3
 *
 * for four variants, each under its prefix "<variant>.":
 *     lif_hard_tanh     LIF decay 0.95, threshold 1, hard reset (not detached: the -H*g(u) term of
 *                       dV/dH is on), 0.3 tanh' surrogate, T 4
 *     lif_soft_sigmoid  LIF decay 0.95, threshold 1, soft reset, detached, sigmoid surrogate alpha 4, T 4
 *     if_hard_rect      IF, threshold 1, hard reset (not detached), rectangular surrogate width 2
 *                       height 0.3, T 4
 *     clamp01_T1        the reference's stateless clamp01, T 1
 * with the initial state_dict, a batch, the logits, the cross-entropy (mean, no smoothing), every
 * parameter gradient, the batch-norm buffers after the first forward pass (stats1.*), each neuron
 * layer's output sum and silent elements in that pass (fired.*) and the whole state_dict after two
 * SGD steps (lr 0.1, momentum 0.9; after2.*). No Python runs here. The neuron parameters of each
 * variant are also in the fixture's metadata ("params.<variant>"), and the test requires the same
 * line from its own bf_neuron_params, so the script and the test cannot drift apart silently.
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
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/parity_spiking.safetensors"

enum { N = 4, C = 1, H = 8, W = 8, K = 3 };

/* fp32 on both sides, in different summation orders (im2col + sgemm here, ATen there; bioflex
 * sums the readout step by step and scales by 1/T, PyTorch takes mean(0); bioflex evaluates the
 * smooth surrogates in double and rounds once, the script in fp32): agreement is expected to a
 * few ulps, far inside these tolerances. */
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

/* The name of the num_batches_tracked entry of the batch-norm whose running_mean is `buffer`
 * ("bn.running_mean" -> "<prefix>bn.num_batches_tracked"). */
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
    static const char *derived[] = {"input", "labels", "expected.", "grad.", "stats1.", "fired.", "after2."};
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

typedef struct variant {
    const char *name;
    int T;
    bf_neuron_params p;
} variant;

static const char *kind_name(bf_neuron_kind k) {
    switch (k) {
    case BF_NEURON_LIF: return "lif";
    case BF_NEURON_IF: return "if";
    case BF_NEURON_CLAMP01: return "clamp01";
    case BF_NEURON_STEP: return "step";
    }
    return "?";
}

static const char *reset_name(bf_reset_mode r) {
    return r == BF_RESET_HARD ? "hard" : r == BF_RESET_SOFT ? "soft" : "none";
}

static const char *surrogate_name(bf_surrogate s) {
    switch (s) {
    case BF_SURROGATE_SIGMOID: return "sigmoid";
    case BF_SURROGATE_ARCTAN: return "arctan";
    case BF_SURROGATE_RECTANGULAR: return "rectangular";
    case BF_SURROGATE_TRIANGLE: return "triangle";
    case BF_SURROGATE_TANH: return "tanh";
    }
    return "?";
}

/* The variant's parameters in the script's params_string format. */
static void params_line(const variant *v, char *out, size_t cap) {
    const bf_neuron_params *p = &v->p;
    snprintf(out, cap,
             "kind=%s T=%d decay=%g threshold=%g reset=%s detach_reset=%d surrogate=%s alpha=%g width=%g height=%g",
             kind_name(p->kind), v->T, (double)p->decay, (double)p->threshold, reset_name(p->reset),
             p->detach_reset != 0, surrogate_name(p->surrogate), (double)p->alpha, (double)p->width,
             (double)p->height);
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
    CHECK_OK(backend->ops->softmax_xent(backend, N, K, logits, bt->labels, 0.0f, 1.0f / N, bt->losses, bt->dlogits));
    if (logits_out) *logits_out = download(logits, 0, (size_t)N * K);
    float losses[N];
    CHECK_OK(bf_to_host(backend, losses, bt->losses, sizeof losses));
    CHECK_OK(bf_model_backward(m, bt->dlogits));
    double sum = 0;
    for (int i = 0; i < N; i++) sum += losses[i];
    return sum / N;
}

/* The spike monitor after the first forward pass against "<prefix>fired.<layer>" = [sum of the
 * outputs over all steps, silent elements]: exact counts for spikes (integers, far below 2^24),
 * the clamp01 output sum within the tolerances (bioflex sums in double, PyTorch in fp32). */
static void compare_fired(bf_model *m, const variant *v, const char *prefix) {
    double rate[4], silent[4];
    const char *names[4];
    int layers = bf_model_spike_monitor(m, rate, silent, names, 4);
    CHECK(layers == 2, "two neuron layers (got %d)", layers);
    for (int j = 0; j < layers && j < 2; j++) {
        int li = -1;
        for (int i = 0; i < m->num_layers; i++)
            if (!strcmp(m->layers[i].name, names[j])) li = i;
        if (li < 0) continue;
        double elements = (double)N * (double)bf_shape_per_sample(m->layers[li].out_shape);
        double sum = rate[j] * elements * v->T, quiet = silent[j] * elements;
        char name[BF_NAME_MAX + 64];
        float ref[2] = {-1, -1};
        int64_t shape[1] = {2};
        snprintf(name, sizeof name, "%sfired.%s", prefix, names[j]);
        CHECK_OK(bf_safetensors_copy_out(fixture, name, BF_DTYPE_F32, 1, shape, ref));
        int spiking = v->p.kind == BF_NEURON_LIF || v->p.kind == BF_NEURON_IF;
        printf("  spikes   %-40s outputs %.0f x %d steps: sum bioflex %.6g PyTorch %.6g, silent bioflex %.0f PyTorch %.0f\n",
               name, elements, v->T, sum, (double)ref[0], quiet, (double)ref[1]);
        if (spiking)
            CHECK(llround(sum) == llround(ref[0]), "%s: %lld spikes, PyTorch %lld (a spike flipped)", name,
                  (long long)llround(sum), (long long)llround(ref[0]));
        else
            CHECK_CLOSE(sum, ref[0], ATOL, RTOL, "clamp01 output sum");
        CHECK(llround(quiet) == llround(ref[1]), "%s: %lld silent elements, PyTorch %lld", name,
              (long long)llround(quiet), (long long)llround(ref[1]));
    }
}

static void run_variant(const variant *v) {
    char prefix[64], name[BF_NAME_MAX + 64], line[256];
    snprintf(prefix, sizeof prefix, "%s.", v->name);
    params_line(v, line, sizeof line);
    printf("%s: %s\n", v->name, line);
    snprintf(name, sizeof name, "params.%s", v->name);
    const char *fixture_line = bf_safetensors_meta(fixture, name);
    CHECK(fixture_line && !strcmp(fixture_line, line), "%s: the fixture was made with \"%s\", the test uses \"%s\"",
          v->name, fixture_line ? fixture_line : "(missing)", line);

    bf_model *m = NULL;
    CHECK_OK(bf_model_create(backend, (bf_shape){N, C, H, W}, 1, &m));
    if (!m) return;
    int x = bf_model_add_encode(m, "encode", BF_MODEL_INPUT, v->T, 0);
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
    sgd.lr = 0.1f;
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
            CHECK_CLOSE(loss, expected_loss, ATOL, RTOL, "mean cross-entropy");
            compare_fired(m, v, prefix);
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
          "reading the fixture: %s (regenerate it with /usr/bin/python3 bench/make_spiking_parity_fixture.py)",
          bf_last_error());
    if (s != BF_OK) return bf_test_finish();
    const char *version = bf_safetensors_meta(fixture, "torch_version");
    printf("fixture %s (torch %s)\n", FIXTURE, version ? version : "?");

    CHECK_OK(bf_backend_create_cpu(1, &backend));
    if (!backend) return bf_test_finish();

    /* The fields a kind does not use (IF's decay, clamp01's dynamics and surrogate) are set to what
     * the script's params line says, so the lines compare equal; bioflex ignores them. */
    const variant variants[] = {
        {"lif_hard_tanh", 4,
         {.kind = BF_NEURON_LIF, .decay = 0.95f, .threshold = 1.0f, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_TANH, .alpha = 0, .width = 0, .height = 0.3f}},
        {"lif_soft_sigmoid", 4,
         {.kind = BF_NEURON_LIF, .decay = 0.95f, .threshold = 1.0f, .reset = BF_RESET_SOFT, .detach_reset = 1,
          .through_time = 1, .surrogate = BF_SURROGATE_SIGMOID, .alpha = 4.0f, .width = 0, .height = 0}},
        {"if_hard_rect", 4,
         {.kind = BF_NEURON_IF, .decay = 1.0f, .threshold = 1.0f, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_RECTANGULAR, .alpha = 0, .width = 2.0f, .height = 0.3f}},
        {"clamp01_T1", 1,
         {.kind = BF_NEURON_CLAMP01, .decay = 0, .threshold = 0, .reset = BF_RESET_HARD, .detach_reset = 0,
          .through_time = 1, .surrogate = BF_SURROGATE_SIGMOID, .alpha = 0, .width = 0, .height = 0}},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) run_variant(&variants[i]);

    bf_backend_destroy(backend);
    bf_safetensors_close(fixture);
    return bf_test_finish();
}
