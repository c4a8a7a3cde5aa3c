/* parity_util.c - see parity_util.h. */
#include "parity_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

int bf_parity_open(bf_parity *px, const char *path, const char *script, int threads) {
    bf_status s = bf_safetensors_read(path, &px->fixture);
    CHECK(s == BF_OK, "reading the fixture: %s (regenerate it with /usr/bin/python3 %s)", bf_last_error(), script);
    if (s != BF_OK) return 0;
    const char *version = bf_safetensors_meta(px->fixture, "torch_version");
    printf("fixture %s (torch %s)\n", path, version ? version : "?");
    CHECK_OK(bf_backend_create_cpu(threads, &px->backend));
    return px->backend != NULL;
}

void bf_parity_close(bf_parity *px) {
    bf_backend_destroy(px->backend);
    bf_safetensors_close(px->fixture);
    px->backend = NULL;
    px->fixture = NULL;
}

void bf_parity_compare(const bf_parity *px, const char *what, const char *name, const float *actual, size_t n) {
    const double atol = px->atol, rtol = px->rtol;
    const bf_st_tensor *t = bf_safetensors_find(px->fixture, name);
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
    printf("  %-8s %-*s n=%-5zu max|ref| %-10.4g max|diff| %-10.3g violation %.3g\n", what, px->name_width, name, n,
           max_ref, max_abs, v);
    CHECK(v <= 1.0, "%s %s: max violation %.3g at [%zu]: bioflex %.9g vs PyTorch %.9g (atol %g, rtol %g)", what, name,
          v, worst, actual[worst], expected[worst], atol, rtol);
    free(expected);
}

int bf_parity_tracked_name(const char *buffer, const char *prefix, char *out, size_t cap) {
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
        if (bf_parity_tracked_name(m->buffers[i].name, "", tracked, sizeof tracked) && !strcmp(tracked, name)) return 1;
    }
    return 0;
}

/* Checks that the fixture has "<prefix><p->name>" with p's shape (F32). */
static void check_shape(const bf_parity *px, const char *prefix, const bf_param *p) {
    char name[BF_NAME_MAX + 64];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    const bf_st_tensor *t = bf_safetensors_find(px->fixture, name);
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

void bf_parity_check_names(const bf_parity *px, const bf_model *m, const char *prefix, const char *const *derived,
                           size_t num_derived, int check_shapes) {
    if (check_shapes)
        for (int i = 0; i < m->num_params; i++) check_shape(px, prefix, &m->params[i]);
    int bn_layers = 0;
    for (int i = 0; i < m->num_buffers; i++) {
        if (check_shapes) check_shape(px, prefix, &m->buffers[i]);
        char tracked[BF_NAME_MAX + 64];
        if (bf_parity_tracked_name(m->buffers[i].name, prefix, tracked, sizeof tracked)) {
            bn_layers++;
            if (!check_shapes) continue;
            const bf_st_tensor *t = bf_safetensors_find(px->fixture, tracked);
            CHECK(t && t->dtype == BF_DTYPE_I64 && t->ndim == 0, "%s: an I64 scalar in the fixture", tracked);
        }
    }
    int state_entries = 0, unknown = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < bf_safetensors_count(px->fixture); i++) {
        const char *full = bf_safetensors_at(px->fixture, i)->name;
        if (strncmp(full, prefix, pl) != 0) continue;
        const char *name = full + pl;
        int skip = 0;
        for (size_t d = 0; d < num_derived; d++)
            if (!strncmp(name, derived[d], strlen(derived[d]))) skip = 1;
        if (skip) continue;
        state_entries++;
        if (!is_bioflex_name(m, name)) {
            unknown++;
            CHECK(0, "fixture state_dict entry %s is not a bioflex parameter or buffer", full);
        }
    }
    int expected = m->num_params + m->num_buffers + bn_layers;
    printf("%sstate_dict: %d entries in the fixture, bioflex has %d parameters + %d buffers + %d num_batches_tracked\n",
           prefix[0] ? "  " : "", state_entries, m->num_params, m->num_buffers, bn_layers);
    CHECK(unknown == 0 && state_entries == expected, "%sstate_dict entries: fixture %d, bioflex %d", prefix,
          state_entries, expected);
}

void bf_parity_load_initial(const bf_parity *px, bf_model *m, const char *prefix) {
    char name[BF_NAME_MAX + 64], tracked[BF_NAME_MAX + 64];
    float *host = malloc((m->num_param_floats > m->num_buffer_floats ? m->num_param_floats : m->num_buffer_floats) *
                         sizeof(float) + 16);
    for (int i = 0; i < m->num_params; i++) {
        const bf_param *p = &m->params[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, p->ndim, p->shape, host));
        CHECK_OK(bf_to_device(px->backend, m->param_data + p->offset, host, p->count * sizeof(float)));
    }
    int64_t tracked_value = -1;
    for (int i = 0; i < m->num_buffers; i++) {
        const bf_param *p = &m->buffers[i];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, p->ndim, p->shape, host));
        CHECK_OK(bf_to_device(px->backend, m->buffer_data + p->offset, host, p->count * sizeof(float)));
        if (bf_parity_tracked_name(p->name, prefix, tracked, sizeof tracked)) {
            int64_t v = -1;
            CHECK_OK(bf_safetensors_copy_out(px->fixture, tracked, BF_DTYPE_I64, 0, NULL, &v));
            if (tracked_value < 0) tracked_value = v;
            CHECK(v == tracked_value, "%s = %lld, other layers %lld", tracked, (long long)v, (long long)tracked_value);
        }
    }
    m->num_batches_tracked = tracked_value < 0 ? 0 : tracked_value;
    free(host);
}

void bf_parity_compare_state(const bf_parity *px, bf_model *m, const char *what, const char *prefix,
                             int with_params, const bf_parity_hooks *hooks) {
    char name[BF_NAME_MAX + 64];
    if (with_params) {
        float *params = bf_test_download(px->backend, m->param_data, m->num_param_floats);
        for (int i = 0; i < m->num_params; i++) {
            const bf_param *p = &m->params[i];
            snprintf(name, sizeof name, "%s%s", prefix, p->name);
            if (hooks && hooks->param && hooks->param(hooks->user, m, i, what, name, params)) continue;
            bf_parity_compare(px, what, name, params + p->offset, p->count);
        }
        free(params);
    }
    float *buffers = bf_test_download(px->backend, m->buffer_data, m->num_buffer_floats);
    for (int i = 0; i < m->num_buffers; i++) {
        const bf_param *b = &m->buffers[i];
        snprintf(name, sizeof name, "%s%s", prefix, b->name);
        if (!(hooks && hooks->buffer && hooks->buffer(hooks->user, m, i, what, name, buffers)))
            bf_parity_compare(px, what, name, buffers + b->offset, b->count);
        if (bf_parity_tracked_name(b->name, prefix, name, sizeof name)) {
            int64_t v = -1;
            CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_I64, 0, NULL, &v));
            CHECK(v == m->num_batches_tracked, "%s: PyTorch %lld, bioflex %lld", name, (long long)v,
                  (long long)m->num_batches_tracked);
        }
    }
    free(buffers);
}

void bf_parity_batch_load(const bf_parity *px, bf_parity_batch *bt, const char *prefix, bf_shape input, int k,
                          float smoothing) {
    char name[BF_NAME_MAX + 64];
    const size_t count = bf_shape_count(input);
    float *x = malloc(count * sizeof(float) + 16);
    int32_t *labels = malloc((size_t)input.n * sizeof(int32_t) + 16);
    int64_t xshape[4] = {input.n, input.c, input.h, input.w}, lshape[1] = {input.n};
    memset(bt, 0, sizeof *bt);
    bt->n = input.n;
    bt->k = k;
    bt->smoothing = smoothing;
    snprintf(name, sizeof name, "%sinput", prefix);
    CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, 4, xshape, x));
    snprintf(name, sizeof name, "%slabels", prefix);
    CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_I32, 1, lshape, labels));
    bt->x = bf_test_upload(px->backend, x, count);
    CHECK_OK(bf_alloc(px->backend, (size_t)input.n * sizeof(int32_t), (void **)&bt->labels));
    CHECK_OK(bf_to_device(px->backend, bt->labels, labels, (size_t)input.n * sizeof(int32_t)));
    bt->losses = bf_test_upload(px->backend, NULL, (size_t)input.n);
    bt->dlogits = bf_test_upload(px->backend, NULL, (size_t)input.n * k);
    free(x);
    free(labels);
}

void bf_parity_batch_free(const bf_parity *px, bf_parity_batch *bt) {
    bf_free(px->backend, bt->x);
    bf_free(px->backend, bt->labels);
    bf_free(px->backend, bt->losses);
    bf_free(px->backend, bt->dlogits);
    memset(bt, 0, sizeof *bt);
}

double bf_parity_forward_backward(const bf_parity *px, bf_model *m, const bf_parity_batch *bt, float **logits_out) {
    bf_backend *backend = px->backend;
    const int n = bt->n, k = bt->k;
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, bt->x, &logits));
    CHECK_OK(backend->ops->softmax_xent(backend, n, k, logits, bt->labels, bt->smoothing, 1.0f / n, bt->losses,
                                        bt->dlogits));
    if (logits_out) *logits_out = bf_test_download(backend, logits, (size_t)n * k);
    float *losses = malloc((size_t)n * sizeof(float) + 16);
    CHECK_OK(bf_to_host(backend, losses, bt->losses, (size_t)n * sizeof(float)));
    CHECK_OK(bf_model_backward(m, bt->dlogits));
    double sum = 0;
    for (int i = 0; i < n; i++) sum += losses[i];
    free(losses);
    return sum / n;
}

bf_optim_config bf_parity_sgd(float lr, float momentum, int nesterov, float weight_decay) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    bf_optim_config sgd = cfg.optim;
    sgd.optimizer = BF_OPTIM_SGD;
    sgd.lr = lr;
    sgd.momentum = momentum;
    sgd.nesterov = nesterov;
    sgd.weight_decay = weight_decay;
    sgd.grad_clip_norm = 0;
    return sgd;
}

void bf_parity_two_steps(const bf_parity *px, bf_model *m, const bf_parity_batch *bt, const bf_parity_steps *s) {
    char name[BF_NAME_MAX + 64];
    bf_parity_load_initial(px, m, s->prefix);
    bf_optimizer *opt = NULL;
    CHECK_OK(bf_optimizer_create(px->backend, s->oc, m->num_param_floats, &opt));
    if (!opt) return;
    for (int step = 0; step < 2; step++) {
        float *logits = NULL;
        double loss = bf_parity_forward_backward(px, m, bt, step == 0 && s->check_first ? &logits : NULL);
        if (step == 0 && s->check_first) {
            snprintf(name, sizeof name, "%sexpected.logits", s->prefix);
            bf_parity_compare(px, "forward", name, logits, (size_t)bt->n * bt->k);
            free(logits);
            float expected_loss = 0;
            snprintf(name, sizeof name, "%sexpected.loss", s->prefix);
            CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, 0, NULL, &expected_loss));
            printf("  loss     bioflex %.9f PyTorch %.9f diff %.3g\n", loss, expected_loss, fabs(loss - expected_loss));
            CHECK_CLOSE(loss, expected_loss, px->atol, px->rtol, s->loss_what);
            if (s->after_loss) s->after_loss(s->user, m);
            float *grads = bf_test_download(px->backend, m->grad_data, m->num_param_floats);
            for (int i = 0; i < m->num_params; i++) {
                snprintf(name, sizeof name, "%sgrad.%s", s->prefix, m->params[i].name);
                bf_parity_compare(px, "backward", name, grads + m->params[i].offset, m->params[i].count);
            }
            if (s->after_grads) s->after_grads(s->user, m, grads);
            free(grads);
        }
        if (step == 0 && s->check_stats1) {
            snprintf(name, sizeof name, "%sstats1.", s->prefix);
            bf_parity_compare_state(px, m, "stats", name, 0, NULL);
        }
        CHECK_OK(bf_optimizer_step(px->backend, opt, m->param_data, m->grad_data, s->oc->lr, NULL));
        if (s->after_step) s->after_step(s->user, m, step);
    }
    snprintf(name, sizeof name, "%s%s", s->prefix, s->after);
    bf_parity_compare_state(px, m, s->what, name, 1, s->final);
    bf_optimizer_destroy(px->backend, opt);
}

bf_model *bf_parity_build_one_layer(bf_backend *b, bf_shape in, int (*add)(bf_model *m, int input, const char *variant),
                                    const char *variant) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 1, &m));
    if (!m) return NULL;
    add(m, BF_MODEL_INPUT, variant);
    m->input_gradient = 1;
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize: %s", bf_last_error());
    if (s != BF_OK) {
        bf_model_destroy(m);
        return NULL;
    }
    m->training = 1, m->batch = in.n;
    return m;
}

bf_model *bf_parity_one_layer(const bf_parity *px, const char *variant,
                              int (*add)(bf_model *m, int input, const char *variant)) {
    char name[BF_NAME_MAX + 64];
    const bf_st_tensor *t = bf_safetensors_find(px->fixture, (snprintf(name, sizeof name, "%s.input", variant), name));
    CHECK(t && t->ndim == 4 && t->dtype == BF_DTYPE_F32, "%s: a 4-D input", name);
    if (!t || t->ndim != 4 || t->dtype != BF_DTYPE_F32) return NULL;
    bf_shape in = {(int)t->shape[0], (int)t->shape[1], (int)t->shape[2], (int)t->shape[3]};
    printf("%s: [%d, %d, %d, %d]\n", variant, in.n, in.c, in.h, in.w);
    bf_model *m = bf_parity_build_one_layer(px->backend, in, add, variant);
    if (!m) return NULL;
    const size_t nx = bf_shape_count(in);
    float *x = malloc(nx * sizeof(float)), *dy = malloc(nx * sizeof(float));
    int64_t shape[4] = {in.n, in.c, in.h, in.w};
    CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, 4, shape, x));
    CHECK_OK(bf_safetensors_copy_out(px->fixture, (snprintf(name, sizeof name, "%s.dy", variant), name), BF_DTYPE_F32,
                                     4, shape, dy));
    for (int i = 0; i < m->num_params; i++) {
        const bf_param *p = &m->params[i];
        snprintf(name, sizeof name, "%s.%s", variant, strrchr(p->name, '.') + 1);
        CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, p->ndim, p->shape, m->param_data + p->offset));
    }
    const float *y = NULL;
    CHECK_OK(bf_model_forward(m, x, &y));
    if (y) bf_parity_compare(px, "y", (snprintf(name, sizeof name, "%s.y", variant), name), y, nx);
    CHECK_OK(bf_model_backward(m, dy));
    bf_parity_compare(px, "dx", (snprintf(name, sizeof name, "%s.dx", variant), name), m->dinput, nx);
    for (int i = 0; i < m->num_params; i++) {
        const bf_param *p = &m->params[i];
        snprintf(name, sizeof name, "%s.d%s", variant, strrchr(p->name, '.') + 1);
        bf_parity_compare(px, "grad", name, m->grad_data + p->offset, p->count);
    }
    free(x), free(dy);
    return m;
}

static const char *neuron_kind_name(bf_neuron_kind k) {
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

void bf_parity_neuron_line(const bf_neuron_params *p, int T, int encoding, char *out, size_t cap) {
    snprintf(out, cap,
             "kind=%s T=%d encoding=%s decay=%g threshold=%g reset=%s detach_reset=%d through_time=%d surrogate=%s "
             "alpha=%g width=%g height=%g",
             neuron_kind_name(p->kind), T, encoding ? "rate" : "direct", (double)p->decay, (double)p->threshold,
             reset_name(p->reset), p->detach_reset != 0, p->through_time != 0, surrogate_name(p->surrogate),
             (double)p->alpha, (double)p->width, (double)p->height);
}

void bf_parity_compare_fired(const bf_parity *px, bf_model *m, const char *prefix, int n, int T, int layers) {
    enum { MAX_LAYERS = 16 };
    double rate[MAX_LAYERS], silent[MAX_LAYERS];
    const char *names[MAX_LAYERS];
    int got = bf_model_spike_monitor(m, rate, silent, names, MAX_LAYERS);
    CHECK(got == layers, "%d neuron layers (got %d)", layers, got);
    for (int j = 0; j < got && j < MAX_LAYERS; j++) {
        int li = -1;
        for (int i = 0; i < m->num_layers; i++)
            if (!strcmp(m->layers[i].name, names[j])) li = i;
        if (li < 0) continue;
        const bf_layer *l = &m->layers[li];
        double elements = (double)n * (double)bf_shape_per_sample(l->out_shape);
        double sum = rate[j] * elements * T, quiet = silent[j] * elements;
        char name[BF_NAME_MAX + 64];
        float ref[2] = {-1, -1};
        int64_t shape[1] = {2};
        snprintf(name, sizeof name, "%sfired.%s", prefix, names[j]);
        CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, 1, shape, ref));
        const int spiking = l->neuron.kind != BF_NEURON_CLAMP01;
        printf("  spikes   %-*s outputs %.0f x %d steps: sum bioflex %.6g PyTorch %.6g, silent bioflex %.0f PyTorch %.0f\n",
               px->name_width, name, elements, T, sum, (double)ref[0], quiet, (double)ref[1]);
        if (spiking)
            CHECK(llround(sum) == llround(ref[0]), "%s: %lld spikes, PyTorch %lld (a spike flipped)", name,
                  (long long)llround(sum), (long long)llround(ref[0]));
        else
            CHECK_CLOSE(sum, ref[0], px->atol, px->rtol, "clamp01 output sum");
        CHECK(llround(quiet) == llround(ref[1]), "%s: %lld silent elements, PyTorch %lld", name,
              (long long)llround(quiet), (long long)llround(ref[1]));
    }
}
