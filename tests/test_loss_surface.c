/* test_loss_surface.c - the loss surface of analysis.h on the CPU backend, for a small CNN with
 * batch-norm (so there are 4-D, 2-D and 1-D parameters):
 *   - filter_normalized directions: every output filter of a weight has the norm of theta's filter
 *     (both directions), 1-D tensors get 0, the two directions differ and repeat for a seed;
 *   - reference directions: d1 >= 0 (U[0, 1) scaled), 1-D tensors scaled to their norm in theta
 *     before the global scaling, and each direction's norm is norm(theta) x distance / steps;
 *   - bf_loss_surface writes steps^2 points over the documented coefficients; the one at (0, 0) is
 *     the unperturbed model's evaluation; another point equals the model evaluated with its
 *     parameters set to theta + a d1 + b d2 by hand; the parameters come back bit for bit;
 *   - in training mode (the reference's): bf_evaluate_batches_training_mode's loss is the training
 *     forward's of the same batch by hand (batch statistics, not the evaluation's), the running
 *     statistics and batch count come back bit for bit, and the surface's (0, 0) is that score; the
 *     surface, which keeps them once for all its points, puts them back too. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { B = 8, S = 8, K = 3, SAMPLES = 24 };

static double norm_of(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

static bf_model *small_cnn(bf_backend *b) {
    bf_model_config mc = bf_test_cnn_config(4, 8, 0);
    mc.batchnorm = 1;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 5, &m));
    return m;
}

static void test_filter_normalized(const bf_model *m, const float *theta) {
    const size_t n = m->num_param_floats;
    float *d1 = malloc(n * sizeof(float)), *d2 = malloc(n * sizeof(float)), *again = malloc(n * sizeof(float));
    bf_loss_surface_options o = {.steps = 5, .distance = 1, .directions = BF_SURFACE_FILTER_NORMALIZED, .seed = 42};
    CHECK_OK(bf_loss_surface_directions(m, theta, &o, d1, d2));
    int filters = 0, flat = 0;
    for (int p = 0; p < m->num_params; p++) {
        const bf_param *q = &m->params[p];
        if (q->ndim < 2) {
            CHECK(norm_of(d1 + q->offset, q->count) == 0 && norm_of(d2 + q->offset, q->count) == 0,
                  "filter_normalized: the 1-D %s stays still", q->name);
            flat++;
            continue;
        }
        const size_t per = q->count / (size_t)q->shape[0];
        for (int f = 0; f < q->shape[0]; f++, filters++) {
            const size_t at = q->offset + (size_t)f * per;
            const double want = norm_of(theta + at, per);
            const double n1 = norm_of(d1 + at, per), n2 = norm_of(d2 + at, per);
            CHECK(fabs(n1 - want) <= 1e-5 * want && fabs(n2 - want) <= 1e-5 * want,
                  "filter_normalized: filter %d of %s has norms %.7g and %.7g, theta's %.7g", f, q->name, n1, n2, want);
        }
    }
    CHECK(filters > 10 && flat >= 4, "filter_normalized: %d filters and %d 1-D tensors checked", filters, flat);
    CHECK(memcmp(d1, d2, n * sizeof(float)) != 0, "the two directions differ");
    CHECK_OK(bf_loss_surface_directions(m, theta, &o, again, d2));
    CHECK(memcmp(d1, again, n * sizeof(float)) == 0, "the directions repeat for a seed");
    o.seed = 43;
    CHECK_OK(bf_loss_surface_directions(m, theta, &o, again, d2));
    CHECK(memcmp(d1, again, n * sizeof(float)) != 0, "another seed draws other directions");
    free(d1), free(d2), free(again);
}

static void test_reference(const bf_model *m, const float *theta) {
    const size_t n = m->num_param_floats;
    float *d1 = malloc(n * sizeof(float)), *d2 = malloc(n * sizeof(float));
    const bf_loss_surface_options o = {.steps = 10, .distance = 1, .directions = BF_SURFACE_REFERENCE, .seed = 42};
    CHECK_OK(bf_loss_surface_directions(m, theta, &o, d1, d2));
    const double step = norm_of(theta, n) / 10;
    CHECK_CLOSE(norm_of(d1, n), step, 0, 1e-5, "reference: norm(d1) = norm(theta) x distance / steps");
    CHECK_CLOSE(norm_of(d2, n), step, 0, 1e-5, "reference: norm(d2) = norm(theta) x distance / steps");
    size_t negative = 0;
    for (size_t i = 0; i < n; i++) negative += d1[i] < 0;
    CHECK(negative == 0, "reference: d1 is U[0, 1) scaled (%zu negative entries)", negative);
    /* before the global scaling every tensor had its norm in theta: so the ratio of a 1-D tensor's
     * norm to theta's is the same global factor as for the whole direction */
    double global = 0; /* the ratio of the first 1-D tensor */
    int flat = 0;
    for (int p = 0; p < m->num_params; p++) {
        const bf_param *q = &m->params[p];
        const double t = norm_of(theta + q->offset, q->count);
        if (q->ndim >= 2 || t == 0) continue;
        const double ratio = norm_of(d1 + q->offset, q->count) / t;
        if (flat++ == 0) global = ratio;
        CHECK(fabs(ratio - global) <= 1e-5 * global, "reference: the 1-D %s scaled whole to its norm in theta (%.7g, %.7g)",
              q->name, ratio, global);
    }
    CHECK(flat >= 2 && global > 0, "reference: %d 1-D tensors with a norm checked", flat);
    CHECK(bf_loss_surface_coefficient(&o, 0) == -5 && bf_loss_surface_coefficient(&o, 9) == 4,
          "reference: coefficients -steps/2 .. steps - steps/2 - 1");
    free(d1), free(d2);
}

/* One CSV line's values, the one after `skip` data lines. */
static void csv_point(const char *text, int skip, double v[4]) {
    const char *line = strstr(text, "alpha,beta,loss,top1\n");
    line = line ? strchr(line, '\n') + 1 : text;
    for (int i = 0; i < skip && line; i++) line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL;
    v[0] = v[1] = v[2] = v[3] = NAN;
    if (line) sscanf(line, "%lf,%lf,%lf,%lf", &v[0], &v[1], &v[2], &v[3]);
}

static void test_surface(bf_backend *b, bf_model *m, const float *theta) {
    static uint8_t pixels[SAMPLES * S * S];
    static int32_t labels[SAMPLES];
    bf_dataset d = bf_test_noise_images(pixels, labels, SAMPLES, S, K, BF_SPLIT_TEST);
    bf_loader *loader = bf_test_loader(&d, BF_SPLIT_TEST, B, 1);
    if (!loader) return;
    bf_eval_result plain;
    CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 0, 2, &plain));

    const bf_loss_surface_options o = {.steps = 3, .distance = 0.5f, .batches = 2,
                                       .directions = BF_SURFACE_FILTER_NORMALIZED, .seed = 7};
    char path[] = "/tmp/bioflex_surface_XXXXXX";
    int fd = mkstemp(path);
    FILE *csv = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK(csv != NULL, "cannot make %s", path);
    if (!csv) return;
    double center = -1;
    CHECK_OK(bf_loss_surface(m, loader, 0.0f, &o, csv, &center));
    fclose(csv);
    size_t size = 0;
    char *text = bf_test_read_file(path, &size);
    remove(path);
    if (!text) return;
    int lines = 0;
    for (const char *p = strstr(text, "alpha,beta"); p && (p = strchr(p, '\n')) && p[1]; p++) lines++;
    CHECK(lines == 9, "3 x 3 points written (%d)", lines);
    double v[4];
    csv_point(text, 4, v); /* row-major over (alpha, beta): the middle point */
    CHECK(v[0] == 0 && v[1] == 0 && fabs(v[2] - plain.loss) <= 1e-6 * plain.loss && v[3] == plain.top1 &&
              center == plain.loss,
          "the point (0, 0) is the unperturbed evaluation: (%g, %g) loss %.7g top-1 %g, want %.7g %g", v[0], v[1],
          v[2], v[3], plain.loss, plain.top1);
    csv_point(text, 2, v); /* (-0.5, 0.5) */
    CHECK(v[0] == -0.5 && v[1] == 0.5, "the grid runs over [-distance, distance]: (%g, %g)", v[0], v[1]);

    const size_t n = m->num_param_floats;
    float *after = bf_test_download(b, m->param_data, n);
    CHECK(memcmp(after, theta, n * sizeof(float)) == 0, "the parameters are restored bit for bit");
    float *d1 = malloc(n * sizeof(float)), *d2 = malloc(n * sizeof(float)), *point = malloc(n * sizeof(float));
    CHECK_OK(bf_loss_surface_directions(m, theta, &o, d1, d2));
    for (size_t i = 0; i < n; i++) point[i] = (float)(theta[i] + -0.5 * d1[i] + 0.5 * d2[i]);
    CHECK_OK(bf_to_device(b, m->param_data, point, n * sizeof(float)));
    bf_eval_result by_hand;
    CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 0, 2, &by_hand));
    CHECK(fabs(v[2] - by_hand.loss) <= 1e-6 * by_hand.loss && v[3] == by_hand.top1 && fabs(v[2] - plain.loss) > 1e-4,
          "(-0.5, 0.5): loss %.7g top-1 %g, the model set to theta - 0.5 d1 + 0.5 d2 by hand %.7g %g (unperturbed %.7g)",
          v[2], v[3], by_hand.loss, by_hand.top1, plain.loss);
    CHECK_OK(bf_to_device(b, m->param_data, theta, n * sizeof(float)));
    free(after), free(d1), free(d2), free(point), free(text);
    bf_loader_destroy(loader);
}

/* The summed loss of one batch through the training-mode forward, by hand (host x and labels). */
static double training_loss_by_hand(bf_model *m, const float *x_host, const int32_t *labels_host) {
    bf_backend *b = m->backend;
    float *x = bf_test_upload(b, x_host, (size_t)B * S * S), *losses = bf_test_alloc(b, B);
    int32_t *labels = NULL;
    CHECK_OK(bf_alloc(b, B * sizeof(int32_t), (void **)&labels));
    CHECK_OK(bf_to_device(b, labels, labels_host, B * sizeof(int32_t)));
    const float *logits = NULL;
    m->training = 1;
    m->step = BF_EVAL_STEP;
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(b->ops->softmax_xent(b, B, K, logits, labels, 0.0f, 1.0f, losses, NULL));
    float l[B];
    CHECK_OK(bf_to_host(b, l, losses, sizeof l));
    double sum = 0;
    for (int i = 0; i < B; i++) sum += l[i];
    bf_free(b, x), bf_free(b, losses), bf_free(b, labels);
    return sum;
}

static void test_training_mode(bf_backend *b, bf_model *m) {
    static uint8_t pixels[SAMPLES * S * S];
    static int32_t labels[SAMPLES];
    bf_dataset d = bf_test_noise_images(pixels, labels, SAMPLES, S, K, BF_SPLIT_TRAIN);
    bf_loader *loader = bf_test_loader(&d, BF_SPLIT_TRAIN, B, 1);
    if (!loader) return;
    float *buffers = bf_test_download(b, m->buffer_data, m->num_buffer_floats);
    const int64_t tracked = m->num_batches_tracked;
    bf_eval_result eval, train;
    CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 0, 1, &eval));
    CHECK_OK(bf_evaluate_batches_training_mode(m, loader, 0.0f, 0, 1, 1, &train));
    float *after = bf_test_download(b, m->buffer_data, m->num_buffer_floats);
    CHECK(memcmp(buffers, after, m->num_buffer_floats * sizeof(float)) == 0 && m->num_batches_tracked == tracked,
          "training mode: the running statistics and batch count come back bit for bit");
    float x[B * S * S];
    CHECK_OK(bf_loader_start_epoch(loader, 0, 0));
    bf_batch *batch = NULL;
    CHECK_OK(bf_loader_next(loader, &batch, NULL));
    if (batch) {
        memcpy(x, batch->images, sizeof x);
        const double by_hand = training_loss_by_hand(m, x, batch->labels) / B;
        bf_loader_release(loader, batch);
        CHECK_OK(bf_to_device(b, m->buffer_data, buffers, m->num_buffer_floats * sizeof(float)));
        m->num_batches_tracked = tracked;
        CHECK(fabs(train.loss - by_hand) <= 1e-6 * by_hand && fabs(train.loss - eval.loss) > 1e-3 * eval.loss,
              "training mode: loss %.7g, the training forward's by hand %.7g (evaluation mode: %.7g)", train.loss,
              by_hand, eval.loss);
    }
    const bf_loss_surface_options o = {.steps = 3, .distance = 0.5f, .batches = 1, .seed = 7, .training_mode = 1};
    FILE *csv = fopen("/dev/null", "w");
    double center = -1;
    CHECK_OK(bf_loss_surface(m, loader, 0.0f, &o, csv, &center));
    fclose(csv);
    CHECK(center == train.loss, "training mode: the surface's (0, 0) is that score (%.7g, want %.7g)", center, train.loss);
    float *after_surface = bf_test_download(b, m->buffer_data, m->num_buffer_floats);
    CHECK(memcmp(buffers, after_surface, m->num_buffer_floats * sizeof(float)) == 0 && m->num_batches_tracked == tracked,
          "training mode: the surface puts back the running statistics and batch count (kept once for its 9 points)");
    free(buffers), free(after), free(after_surface);
    bf_loader_destroy(loader);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = b ? small_cnn(b) : NULL;
    if (!m) return bf_test_finish();
    float *theta = bf_test_download(b, m->param_data, m->num_param_floats);
    test_filter_normalized(m, theta);
    test_reference(m, theta);
    test_surface(b, m, theta);
    test_training_mode(b, m);
    free(theta);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    return bf_test_finish();
}
