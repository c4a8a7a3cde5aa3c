/* test_ops_grad.c - finite-difference gradient checks of every CPU op that has a backward pass,
 * in the style of Caffe's GradientChecker.
 *
 * For an op y = f(x, ...) we take a random projection loss L = sum_i r_i * y_i. The analytic
 * gradient dL/dx is what the op's backward pass returns when given dy = r. The numerical gradient
 * of each input element is the central difference (L(x + h) - L(x - h)) / 2h with h = 1e-3, the
 * forward pass run in float and L accumulated in double. They must agree to
 *     |num - ana| <= TOLERANCE * max(1, |num|, |ana|).
 * Non-differentiable points are avoided the way Caffe does: ReLU skips inputs within 2h of zero,
 * max pooling uses inputs that differ pairwise by more than 2h so no perturbation changes a winner. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/ops.h"
#include "testutil.h"

#define STEP 1e-3f
#define TOLERANCE 5e-3

/* Runs the op's forward pass on the buffers named in ctx. */
typedef bf_status (*forward_fn)(bf_backend *b, const void *ctx);

/* L = sum r_i * y_i after running the forward pass; a failing call counts in *failures. */
static double projected_loss(bf_backend *b, forward_fn forward, const void *ctx, const float *y,
                             const float *r, size_t ny, size_t *failures) {
    if (forward(b, ctx) != BF_OK) ++*failures;
    float *hy = bf_test_download(b, y, ny);
    double loss = 0;
    for (size_t i = 0; i < ny; i++) loss += (double)r[i] * hy[i];
    free(hy);
    return loss;
}

/* Writes one float of a backend buffer; a failing call counts in *failures. */
static void set_element(bf_backend *b, float *dev, float value, size_t *failures) {
    if (bf_to_device(b, dev, &value, sizeof value) != BF_OK) ++*failures;
}

/* Compares `analytic` (host, dL/d input) with central differences of every element of the device
 * buffer `input`, skipping elements with |x| < skip_below. */
static void check_gradient(bf_backend *b, const char *what, forward_fn forward, const void *ctx, const float *y,
                           size_t ny, const float *r, float *input, size_t n, const float *analytic, float skip_below) {
    float *hx = bf_test_download(b, input, n);
    double worst = 0, largest = 0;
    size_t compared = 0, failed = 0, worst_index = 0, call_failures = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabsf(hx[i]) < skip_below) continue;
        float plus = hx[i] + STEP, minus = hx[i] - STEP;
        set_element(b, input + i, plus, &call_failures);
        double loss_plus = projected_loss(b, forward, ctx, y, r, ny, &call_failures);
        set_element(b, input + i, minus, &call_failures);
        double loss_minus = projected_loss(b, forward, ctx, y, r, ny, &call_failures);
        set_element(b, input + i, hx[i], &call_failures);
        /* Divide by the step actually taken: x +- h is rounded to float. */
        double numeric = (loss_plus - loss_minus) / ((double)plus - (double)minus);
        double ana = analytic[i], scale = fmax(1.0, fmax(fabs(numeric), fabs(ana)));
        double error = fabs(numeric - ana) / scale;
        compared++;
        largest = fmax(largest, fabs(ana));
        if (error > TOLERANCE) failed++;
        if (error >= worst) {
            worst = error;
            worst_index = i;
        }
    }
    CHECK(call_failures == 0, "%s: %zu backend calls failed: %s", what, call_failures, bf_last_error());
    CHECK(compared > 0 && largest > 0, "%s: the check compared %zu elements with a nonzero gradient", what, compared);
    CHECK(failed == 0, "%s: %zu of %zu elements off; worst at %zu: analytic %.6g (error %.3g)", what, failed,
          compared, worst_index, analytic[worst_index], worst);
    printf("  %-44s %5zu elements, worst scaled error %.2e\n", what, compared, worst);
    free(hx);
}

/* A device buffer of uniform values in [lo, hi), with its host copy in *host when asked. */
static float *random_buffer(bf_backend *b, size_t n, float lo, float hi, unsigned long seed, float **host) {
    float *h = malloc(n * sizeof(float));
    bf_test_fill_uniform(h, n, lo, hi, seed);
    float *d = bf_test_upload(b, h, n);
    if (host) *host = h; else free(h);
    return d;
}

static float *download_and_free(bf_backend *b, float *dev, size_t n) {
    float *h = bf_test_download(b, dev, n);
    bf_free(b, dev);
    return h;
}

/* ---- convolution ---- */

typedef struct conv_ctx {
    bf_conv2d_shape s;
    float *x, *w, *bias, *y;
} conv_ctx;

static bf_status conv_forward(bf_backend *b, const void *p) {
    const conv_ctx *c = p;
    return b->ops->conv2d_forward(b, &c->s, c->x, c->w, c->bias, c->y);
}

static void grad_conv(bf_backend *b, bf_conv2d_shape s, int with_bias, const char *name) {
    CHECK_OK(bf_conv2d_shape_init(&s));
    size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in, ny = (size_t)s.n * s.c_out * s.h_out * s.w_out;
    size_t nw = (size_t)s.c_out * (s.c_in / s.groups) * s.k_h * s.k_w;
    float *r;
    conv_ctx c = {s, random_buffer(b, nx, -1, 1, 1, NULL), random_buffer(b, nw, -1, 1, 2, NULL),
                  with_bias ? random_buffer(b, (size_t)s.c_out, -1, 1, 3, NULL) : NULL, bf_test_upload(b, NULL, ny)};
    float *dy = random_buffer(b, ny, -1, 1, 4, &r);
    float *dx = bf_test_upload(b, NULL, nx), *dw = bf_test_upload(b, NULL, nw), *db = bf_test_upload(b, NULL, (size_t)s.c_out);
    CHECK_OK(b->ops->conv2d_backward_data(b, &s, dy, c.w, dx));
    CHECK_OK(b->ops->conv2d_backward_filter(b, &s, c.x, dy, dw, with_bias ? db : NULL));
    float *hdx = download_and_free(b, dx, nx), *hdw = download_and_free(b, dw, nw);
    float *hdb = download_and_free(b, db, (size_t)s.c_out);
    char what[128];
    snprintf(what, sizeof what, "%s wrt x", name);
    check_gradient(b, what, conv_forward, &c, c.y, ny, r, c.x, nx, hdx, 0);
    snprintf(what, sizeof what, "%s wrt w", name);
    check_gradient(b, what, conv_forward, &c, c.y, ny, r, c.w, nw, hdw, 0);
    if (with_bias) {
        snprintf(what, sizeof what, "%s wrt bias", name);
        check_gradient(b, what, conv_forward, &c, c.y, ny, r, c.bias, (size_t)s.c_out, hdb, 0);
    }
    free(r); free(hdx); free(hdw); free(hdb);
    bf_free(b, c.x); bf_free(b, c.w); bf_free(b, c.bias); bf_free(b, c.y); bf_free(b, dy);
}

/* ---- batch normalisation (training mode) ---- */

typedef struct bn_ctx {
    bf_bn_shape s;
    float *x, *gamma, *beta, *y, *mean, *invstd, *running_mean, *running_var;
} bn_ctx;

static bf_status bn_forward(bf_backend *b, const void *p) {
    const bn_ctx *c = p;
    return b->ops->batchnorm_forward_train(b, &c->s, c->x, c->gamma, c->beta, c->y, c->mean, c->invstd,
                                           c->running_mean, c->running_var);
}

static void grad_batchnorm(bf_backend *b) {
    const bf_bn_shape s = {.n = 4, .c = 3, .hw = 6, .eps = 1e-5f, .momentum = 0.1f};
    const size_t count = (size_t)s.n * s.c * s.hw;
    float *r;
    bn_ctx c = {s, random_buffer(b, count, -2, 3, 11, NULL), random_buffer(b, 3, 0.5f, 2, 12, NULL),
                random_buffer(b, 3, -1, 1, 13, NULL), bf_test_upload(b, NULL, count), bf_test_upload(b, NULL, 3),
                bf_test_upload(b, NULL, 3), bf_test_upload(b, NULL, 3), bf_test_upload(b, NULL, 3)};
    float *dy = random_buffer(b, count, -1, 1, 14, &r);
    float *dx = bf_test_upload(b, NULL, count), *dg = bf_test_upload(b, NULL, 3), *dbeta = bf_test_upload(b, NULL, 3);
    CHECK_OK(bn_forward(b, &c));
    CHECK_OK(b->ops->batchnorm_backward(b, &s, c.x, dy, c.gamma, c.mean, c.invstd, dx, dg, dbeta));
    float *hdx = download_and_free(b, dx, count), *hdg = download_and_free(b, dg, 3), *hdb = download_and_free(b, dbeta, 3);
    check_gradient(b, "batchnorm train wrt x", bn_forward, &c, c.y, count, r, c.x, count, hdx, 0);
    check_gradient(b, "batchnorm train wrt gamma", bn_forward, &c, c.y, count, r, c.gamma, 3, hdg, 0);
    check_gradient(b, "batchnorm train wrt beta", bn_forward, &c, c.y, count, r, c.beta, 3, hdb, 0);
    free(r); free(hdx); free(hdg); free(hdb);
    float *bufs[] = {c.x, c.gamma, c.beta, c.y, c.mean, c.invstd, c.running_mean, c.running_var, dy};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) bf_free(b, bufs[i]);
}

/* ---- pooling ---- */

typedef struct pool_ctx {
    bf_pool_shape s;
    int is_max; /* 1 max, 0 average, -1 global average over the whole plane */
    float *x, *y;
    int32_t *argmax;
} pool_ctx;

static bf_status pool_forward(bf_backend *b, const void *p) {
    const pool_ctx *c = p;
    if (c->is_max > 0) return b->ops->maxpool_forward(b, &c->s, c->x, c->y, c->argmax);
    if (c->is_max == 0) return b->ops->avgpool_forward(b, &c->s, c->x, c->y);
    return b->ops->global_avgpool_forward(b, c->s.n, c->s.c, c->s.h_in * c->s.w_in, c->x, c->y);
}

static void grad_pool(bf_backend *b, bf_pool_shape s, int is_max, const char *name) {
    if (is_max >= 0) CHECK_OK(bf_pool_shape_init(&s));
    else s.h_out = s.w_out = 1;
    size_t nx = (size_t)s.n * s.c * s.h_in * s.w_in, ny = (size_t)s.n * s.c * s.h_out * s.w_out;
    /* Distinct inputs 0.01 apart (a shuffled arithmetic sequence), so max pooling has no ties
     * within a perturbation of 2*STEP. */
    float *hx = malloc(nx * sizeof(float)), *r;
    for (size_t i = 0; i < nx; i++) hx[i] = 0.01f * (float)i - 0.005f * (float)nx;
    for (size_t i = nx - 1; i > 0; i--) {
        size_t j = (size_t)(bf_hash64(i) % (i + 1)); /* Fisher-Yates */
        float t = hx[i];
        hx[i] = hx[j];
        hx[j] = t;
    }
    pool_ctx c = {s, is_max, bf_test_upload(b, hx, nx), bf_test_upload(b, NULL, ny), NULL};
    CHECK_OK(bf_alloc(b, ny * sizeof(int32_t), (void **)&c.argmax));
    float *dy = random_buffer(b, ny, -1, 1, 21, &r), *dx = bf_test_upload(b, NULL, nx);
    CHECK_OK(pool_forward(b, &c));
    if (is_max > 0) CHECK_OK(b->ops->maxpool_backward(b, &s, dy, c.argmax, dx));
    else if (is_max == 0) CHECK_OK(b->ops->avgpool_backward(b, &s, dy, dx));
    else CHECK_OK(b->ops->global_avgpool_backward(b, s.n, s.c, s.h_in * s.w_in, dy, dx));
    float *hdx = download_and_free(b, dx, nx);
    check_gradient(b, name, pool_forward, &c, c.y, ny, r, c.x, nx, hdx, 0);
    free(hx); free(r); free(hdx);
    bf_free(b, c.x); bf_free(b, c.y); bf_free(b, c.argmax); bf_free(b, dy);
}

/* ---- fully connected ---- */

typedef struct linear_ctx {
    bf_linear_shape s;
    float *x, *w, *bias, *y;
} linear_ctx;

static bf_status linear_forward(bf_backend *b, const void *p) {
    const linear_ctx *c = p;
    return b->ops->linear_forward(b, &c->s, c->x, c->w, c->bias, c->y);
}

static void grad_linear(bf_backend *b) {
    const bf_linear_shape s = {.n = 3, .in = 7, .out = 5};
    float *r;
    linear_ctx c = {s, random_buffer(b, 21, -1, 1, 31, NULL), random_buffer(b, 35, -1, 1, 32, NULL),
                    random_buffer(b, 5, -1, 1, 33, NULL), bf_test_upload(b, NULL, 15)};
    float *dy = random_buffer(b, 15, -1, 1, 34, &r);
    float *dx = bf_test_upload(b, NULL, 21), *dw = bf_test_upload(b, NULL, 35), *db = bf_test_upload(b, NULL, 5);
    CHECK_OK(b->ops->linear_backward(b, &s, c.x, c.w, dy, dx, dw, db));
    float *hdx = download_and_free(b, dx, 21), *hdw = download_and_free(b, dw, 35), *hdb = download_and_free(b, db, 5);
    check_gradient(b, "linear wrt x", linear_forward, &c, c.y, 15, r, c.x, 21, hdx, 0);
    check_gradient(b, "linear wrt w", linear_forward, &c, c.y, 15, r, c.w, 35, hdw, 0);
    check_gradient(b, "linear wrt bias", linear_forward, &c, c.y, 15, r, c.bias, 5, hdb, 0);
    free(r); free(hdx); free(hdw); free(hdb);
    bf_free(b, c.x); bf_free(b, c.w); bf_free(b, c.bias); bf_free(b, c.y); bf_free(b, dy);
}

/* ---- ReLU, LeakyReLU and dropout ---- */

typedef enum unary_kind { UNARY_RELU, UNARY_LEAKY_RELU, UNARY_DROPOUT } unary_kind;

typedef struct unary_ctx {
    unary_kind kind;
    size_t n, group;
    float p;     /* dropout's probability, or LeakyReLU's negative slope */
    uint64_t seed;
    float *x, *y;
} unary_ctx;

static bf_status unary_forward(bf_backend *b, const void *p) {
    const unary_ctx *c = p;
    if (c->kind == UNARY_RELU) return b->ops->relu_forward(b, c->x, c->y, c->n);
    if (c->kind == UNARY_LEAKY_RELU) return b->ops->leaky_relu_forward(b, c->x, c->y, c->n, c->p);
    return b->ops->dropout_forward(b, c->x, c->y, c->n, c->group, c->p, bf_draws_of(c->seed));
}

/* group: dropout's elements per draw (1 nn.Dropout, 20 planes of a Dropout2d); p: dropout's
 * probability or LeakyReLU's slope */
static void grad_unary(bf_backend *b, unary_kind kind, size_t group, float p) {
    const size_t n = 200;
    float *r;
    unary_ctx c = {kind, n, group, p, 77, random_buffer(b, n, -1, 1, 41, NULL), bf_test_upload(b, NULL, n)};
    float *dy = random_buffer(b, n, -1, 1, 42, &r), *dx = bf_test_upload(b, NULL, n);
    CHECK_OK(unary_forward(b, &c));
    if (kind == UNARY_RELU) CHECK_OK(b->ops->relu_backward(b, c.y, dy, dx, n));
    /* the backward reads the output, as the layer keeps it (in place over x) */
    else if (kind == UNARY_LEAKY_RELU) CHECK_OK(b->ops->leaky_relu_backward(b, c.y, dy, dx, n, p));
    else CHECK_OK(b->ops->dropout_backward(b, dy, dx, n, group, c.p, bf_draws_of(c.seed)));
    float *hdx = download_and_free(b, dx, n);
    /* the (leaky) ReLU's kink at 0 is skipped, like Caffe's checker does */
    char name[64];
    if (kind == UNARY_RELU) snprintf(name, sizeof name, "relu");
    else if (kind == UNARY_LEAKY_RELU) snprintf(name, sizeof name, "leaky_relu slope %g", p);
    else if (group > 1) snprintf(name, sizeof name, "dropout2d p=%g, planes of %zu", p, group);
    else snprintf(name, sizeof name, "dropout p=%g", p);
    check_gradient(b, name, unary_forward, &c, c.y, n, r, c.x, n, hdx, kind == UNARY_DROPOUT ? 0 : 2 * STEP);
    if (kind == UNARY_LEAKY_RELU) { /* the negative side's slope is what the check must see, not only the 1s */
        float *hx = bf_test_download(b, c.x, n);
        size_t negative = 0;
        for (size_t i = 0; i < n; i++) negative += hx[i] < -2 * STEP && hdx[i] != 0;
        CHECK(negative > n / 4, "leaky_relu: %zu of %zu inputs on the negative side with a gradient", negative, n);
        free(hx);
    }
    free(r); free(hdx);
    bf_free(b, c.x); bf_free(b, c.y); bf_free(b, dy);
}

/* ---- softmax cross-entropy ---- */

typedef struct xent_ctx {
    int n, k;
    float smoothing;
    float *logits, *losses;
    int32_t *labels;
} xent_ctx;

static bf_status xent_forward(bf_backend *b, const void *p) {
    const xent_ctx *c = p;
    return b->ops->softmax_xent(b, c->n, c->k, c->logits, c->labels, c->smoothing, 1.0f, c->losses, NULL);
}

/* The op scales dlogits by one grad_scale, so with grad_scale 1 the gradient of L = sum r_i loss_i
 * is r_i times row i of dlogits. */
static void grad_xent(bf_backend *b, float smoothing, const char *name) {
    enum { N = 4, K = 6 };
    const int32_t labels[N] = {0, 5, 2, 2};
    float *r;
    xent_ctx c = {N, K, smoothing, random_buffer(b, N * K, -3, 3, 51, NULL), bf_test_upload(b, NULL, N), NULL};
    CHECK_OK(bf_alloc(b, sizeof labels, (void **)&c.labels));
    CHECK_OK(bf_to_device(b, c.labels, labels, sizeof labels));
    float *rdev = random_buffer(b, N, -1, 1, 52, &r), *dl = bf_test_upload(b, NULL, N * K);
    CHECK_OK(b->ops->softmax_xent(b, N, K, c.logits, c.labels, smoothing, 1.0f, c.losses, dl));
    float *hdl = download_and_free(b, dl, N * K);
    for (int i = 0; i < N * K; i++) hdl[i] *= r[i / K];
    check_gradient(b, name, xent_forward, &c, c.losses, N, r, c.logits, N * K, hdl, 0);
    free(r); free(hdl);
    bf_free(b, c.logits); bf_free(b, c.losses); bf_free(b, c.labels); bf_free(b, rdev);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(0, &b));
    if (!b) return bf_test_finish();
    grad_conv(b, (bf_conv2d_shape){.n = 3, .c_in = 4, .h_in = 7, .w_in = 6, .c_out = 4, .k_h = 3, .k_w = 3,
                                   .stride = 2, .pad = 1, .groups = 2}, 1, "conv s2 p1 g2");
    grad_conv(b, (bf_conv2d_shape){.n = 2, .c_in = 3, .h_in = 5, .w_in = 5, .c_out = 2, .k_h = 3, .k_w = 2,
                                   .stride = 1, .pad = 1, .groups = 1}, 0, "conv 3x2 s1 p1");
    grad_conv(b, (bf_conv2d_shape){.n = 2, .c_in = 3, .h_in = 4, .w_in = 4, .c_out = 2, .k_h = 1, .k_w = 1,
                                   .stride = 1, .pad = 0, .groups = 1}, 1, "conv 1x1");
    grad_batchnorm(b);
    grad_unary(b, UNARY_RELU, 1, 0);
    grad_unary(b, UNARY_LEAKY_RELU, 1, 0.01f); /* the spatial-attention block's LeakyReLU(0.01) */
    grad_unary(b, UNARY_LEAKY_RELU, 1, 0.3f);  /* a slope the tolerance cannot miss */
    grad_unary(b, UNARY_DROPOUT, 1, 0.4f);
    grad_unary(b, UNARY_DROPOUT, 20, 0.4f);
    grad_pool(b, (bf_pool_shape){.n = 2, .c = 2, .h_in = 7, .w_in = 6, .k = 3, .stride = 2, .pad = 1}, 1, "maxpool k3 s2 p1");
    grad_pool(b, (bf_pool_shape){.n = 2, .c = 2, .h_in = 6, .w_in = 6, .k = 2, .stride = 2, .pad = 0}, 1, "maxpool k2 s2");
    grad_pool(b, (bf_pool_shape){.n = 2, .c = 2, .h_in = 7, .w_in = 6, .k = 3, .stride = 2, .pad = 1}, 0, "avgpool k3 s2 p1");
    grad_pool(b, (bf_pool_shape){.n = 2, .c = 3, .h_in = 4, .w_in = 5}, -1, "global avgpool");
    grad_linear(b);
    grad_xent(b, 0.0f, "softmax_xent");
    grad_xent(b, 0.1f, "softmax_xent smoothing 0.1");
    bf_backend_destroy(b);
    return bf_test_finish();
}
