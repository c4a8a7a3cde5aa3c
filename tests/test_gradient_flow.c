/* test_gradient_flow.c - bf_gradient_flow (analysis.h) on the CPU backend, for a small CNN with
 * batch-norm and dropout on generated images, in training and in evaluation mode: every CSV line
 * (mean and max |g|, the gradient's and the weights' norms) equals the statistics of the gradient
 * taken by hand, two passes in that mode over the same two batches averaged, and the header names
 * the mode; the two modes' gradients differ (batch against running statistics); the running
 * statistics, the batch count, the mode and the gradients come back bit for bit; more batches than
 * the split has is an error that says so, and so is evaluation mode on a model built without
 * input_gradient. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "testutil.h"

enum { B = 6, S = 8, K = 3, SAMPLES = 12 };

/* The mean loss's gradient over the loader's first two batches, by hand, into g (host). */
static void gradient_by_hand(bf_model *m, bf_loader *l, float *g) {
    bf_backend *b = m->backend;
    const size_t n = m->num_param_floats;
    float *x = bf_test_alloc(b, (size_t)B * S * S), *losses = bf_test_alloc(b, B), *dlogits = bf_test_alloc(b, B * K);
    int32_t *labels = NULL;
    CHECK_OK(bf_alloc(b, B * sizeof(int32_t), (void **)&labels));
    memset(g, 0, n * sizeof(float));
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    for (int k = 0; k < 2; k++) {
        bf_batch *batch = NULL;
        CHECK_OK(bf_loader_next(l, &batch, NULL));
        if (!batch) break;
        CHECK_OK(bf_to_device(b, x, batch->images, (size_t)B * S * S * sizeof(float)));
        CHECK_OK(bf_to_device(b, labels, batch->labels, B * sizeof(int32_t)));
        bf_loader_release(l, batch);
        const float *logits = NULL;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(b->ops->softmax_xent(b, B, K, logits, labels, 0.0f, 1.0f / B, losses, dlogits));
        CHECK_OK(bf_model_backward(m, dlogits));
        float *grad = bf_test_download(b, m->grad_data, n);
        for (size_t i = 0; grad && i < n; i++) g[i] += 0.5f * grad[i];
        free(grad);
    }
    bf_free(b, x), bf_free(b, losses), bf_free(b, dlogits), bf_free(b, labels);
}

/* The gradient flow of a fresh model in mode against the gradient by hand; the gradient comes back
 * in g (host, the caller frees it). */
static void check_mode(bf_backend *b, bf_loader *l, bf_analysis_mode mode, float **g_out) {
    const int eval = mode == BF_ANALYSIS_EVAL;
    bf_model_config mc = bf_test_cnn_config(4, 8, 0.3f);
    mc.batchnorm = 1;
    mc.input_gradient = eval;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 5, &m));
    if (!m) return;
    if (eval) { /* running statistics away from their start: one training forward */
        float *x = bf_test_alloc(b, (size_t)B * S * S);
        float *host = malloc((size_t)B * S * S * sizeof(float));
        bf_test_fill_uniform(host, (size_t)B * S * S, -1.0f, 3.0f, 4);
        CHECK_OK(bf_to_device(b, x, host, (size_t)B * S * S * sizeof(float)));
        const float *logits = NULL;
        CHECK_OK(bf_model_forward(m, x, &logits));
        bf_free(b, x), free(host);
    }
    const size_t n = m->num_param_floats;
    m->step = 7; /* the dropout draws of both */
    float *buffers = bf_test_download(b, m->buffer_data, m->num_buffer_floats), *grads = bf_test_download(b, m->grad_data, n);
    const int64_t tracked = m->num_batches_tracked;
    char path[] = "/tmp/bioflex_gradient_flow_XXXXXX";
    int fd = mkstemp(path);
    FILE *csv = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK(csv != NULL, "cannot make %s", path);
    if (!csv) return;
    CHECK_OK(bf_gradient_flow(m, l, 0.0f, 2, mode, csv));
    fclose(csv);
    float *after = bf_test_download(b, m->buffer_data, m->num_buffer_floats), *grads_after = bf_test_download(b, m->grad_data, n);
    CHECK(memcmp(buffers, after, m->num_buffer_floats * sizeof(float)) == 0 && m->num_batches_tracked == tracked &&
              memcmp(grads, grads_after, n * sizeof(float)) == 0 && m->training == 1 && !m->eval_parameter_gradients,
          "%s mode: the running statistics, batch count, mode and gradients come back bit for bit", bf_analysis_mode_name(mode));

    float *g = malloc(n * sizeof(float)), *w = bf_test_download(b, m->param_data, n);
    m->training = !eval;
    m->eval_parameter_gradients = eval;
    gradient_by_hand(m, l, g);
    m->training = 1;
    m->eval_parameter_gradients = 0;
    size_t text_size = 0;
    char *text = bf_test_read_file(path, &text_size);
    remove(path);
    char named[64];
    snprintf(named, sizeof named, ", %s mode;", bf_analysis_mode_name(mode));
    CHECK(text && strstr(text, named), "the header names the mode (%s)", named);
    const char *line = text ? strstr(text, "grad_to_weight\n") : NULL;
    int rows = 0, nonzero = 0;
    for (line = line ? strchr(line, '\n') + 1 : NULL; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        char name[BF_NAME_MAX] = "";
        size_t count = 0;
        double mean_abs = -1, max_abs = -1, norm = -1, w_norm = -1, ratio = -1;
        sscanf(line, "%95[^,],%zu,%lf,%lf,%lf,%lf,%lf", name, &count, &mean_abs, &max_abs, &norm, &w_norm, &ratio);
        const bf_param *q = rows < m->num_params ? &m->params[rows] : NULL;
        double want_mean = 0, want_max = 0, want_sq = 0, want_w = 0;
        for (size_t i = q ? q->offset : 0; q && i < q->offset + q->count; i++) {
            want_mean += fabs(g[i]) / (double)q->count;
            want_max = fmax(want_max, fabs(g[i]));
            want_sq += (double)g[i] * g[i];
            want_w += (double)w[i] * w[i];
        }
        CHECK(q && !strcmp(name, q->name) && count == q->count, "row %d names %s (%zu values)", rows, name, count);
        CHECK(fabs(mean_abs - want_mean) <= 1e-6 * want_mean + 1e-12 && fabs(max_abs - want_max) <= 1e-6 * want_max + 1e-12 &&
                  fabs(norm - sqrt(want_sq)) <= 1e-6 * sqrt(want_sq) + 1e-12 && fabs(w_norm - sqrt(want_w)) <= 1e-6 * sqrt(want_w),
              "%s mode, %s: mean |g| %g max %g norm %g, weights %g; by hand %g %g %g %g", bf_analysis_mode_name(mode), name, mean_abs, max_abs, norm, w_norm,
              want_mean, want_max, sqrt(want_sq), sqrt(want_w));
        nonzero += max_abs > 0;
        rows++;
    }
    CHECK(rows == m->num_params && nonzero >= rows - 2, "%d rows for %d parameter tensors, %d nonzero", rows,
          m->num_params, nonzero);
    csv = fopen("/dev/null", "w");
    CHECK(bf_gradient_flow(m, l, 0.0f, 3, mode, csv) == BF_ERR_ARG && strstr(bf_last_error(), "fewer than the 3"),
          "more batches than the split has: %s", bf_last_error());
    if (!eval)
        CHECK(bf_gradient_flow(m, l, 0.0f, 1, BF_ANALYSIS_EVAL, csv) == BF_ERR_ARG && strstr(bf_last_error(), "input_gradient"),
              "evaluation mode without input_gradient: %s", bf_last_error());
    fclose(csv);
    free(buffers), free(after), free(grads), free(grads_after), free(w), free(text);
    *g_out = g;
    bf_model_destroy(m);
}

int main(void) {
    bf_test_noise t;
    bf_test_noise_open(&t, SAMPLES, S, K, BF_SPLIT_TRAIN, B, 0);
    bf_backend *b = t.b;
    bf_loader *l = t.loader;
    if (!l) return bf_test_noise_close(&t), bf_test_finish();
    float *train = NULL, *eval = NULL;
    check_mode(b, l, BF_ANALYSIS_TRAIN, &train);
    check_mode(b, l, BF_ANALYSIS_EVAL, &eval);
    /* the same weights (seed 5); the last tensor (the output layer's bias) sees the loss the same way in both */
    double differ = 0, scale = 0;
    for (size_t i = 0; train && eval && i < 100; i++) differ += fabs((double)train[i] - eval[i]), scale += fabs(train[i]);
    CHECK(train && eval && differ > 1e-3 * scale, "the two modes' gradients differ (first 100: %g of %g)", differ, scale);
    free(train), free(eval);
    bf_test_noise_close(&t);
    return bf_test_finish();
}
