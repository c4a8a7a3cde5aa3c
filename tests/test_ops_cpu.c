/* test_ops_cpu.c - value tests of the CPU backend's ops against naive double-precision references
 * written here, plus hand-computed cases for the contract's corner rules (pooling ties and
 * padding, count_include_pad, label smoothing, top-k ties, optimiser step sequences). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/ops.h"
#include "testutil.h"

/* ---- helpers ---- */

static float *random_buffer(bf_backend *b, size_t n, float lo, float hi, unsigned long seed, float **host) {
    float *h = malloc(n * sizeof(float));
    bf_test_fill_uniform(h, n, lo, hi, seed);
    float *d = bf_test_upload(b, h, n);
    if (host) *host = h; else free(h);
    return d;
}

/* Compares a backend buffer with a double reference; reports the worst element. */
static void check_buffer(bf_backend *b, const float *dev, const double *want, size_t n, double atol,
                         double rtol, const char *what) {
    float *got = bf_test_download(b, dev, n), *ref = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) ref[i] = (float)want[i];
    size_t worst = 0;
    double v = bf_test_max_violation(got, ref, n, atol, rtol, &worst);
    CHECK(v <= 1.0, "%s: element %zu is %.9g, want %.9g (violation %.3g)", what, worst, got[worst], want[worst], v);
    free(got);
    free(ref);
}

static double *zeros(size_t n) { return calloc(n, sizeof(double)); }

/* ---- memory and elementwise ---- */

static void test_memory_and_elementwise(bf_backend *b) {
    void *p = NULL;
    CHECK_OK(bf_alloc(b, 1000, &p));
    CHECK(((uintptr_t)p & 63) == 0, "alloc is 64-byte aligned");
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= ((unsigned char *)p)[i] == 0;
    CHECK(zero, "alloc is zero-filled");
    bf_free(b, p);

    const size_t n = 100003; /* long enough to run threaded */
    float *hx, *hy;
    float *x = random_buffer(b, n, -2, 2, 1, &hx), *y = random_buffer(b, n, -1, 3, 2, &hy);
    float *z = bf_test_upload(b, NULL, n), *acc = bf_test_upload(b, NULL, 1);
    double *want = zeros(n), squares = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        squares += (double)hx[i] * hx[i];
        sum += hx[i];
    }
    CHECK_OK(b->ops->copy(b, z, x, n * sizeof(float)));
    for (size_t i = 0; i < n; i++) want[i] = hx[i];
    check_buffer(b, z, want, n, 0, 0, "copy");
    CHECK_OK(b->ops->add(b, x, y, z, n));
    for (size_t i = 0; i < n; i++) want[i] = (float)(hx[i] + hy[i]);
    check_buffer(b, z, want, n, 0, 0, "add");
    CHECK_OK(b->ops->add(b, z, y, z, n)); /* y may alias an input */
    for (size_t i = 0; i < n; i++) want[i] = (float)((float)(hx[i] + hy[i]) + hy[i]);
    check_buffer(b, z, want, n, 0, 0, "add aliased");
    CHECK_OK(b->ops->add_inplace(b, z, x, n));
    for (size_t i = 0; i < n; i++) want[i] = (float)((float)want[i] + hx[i]);
    check_buffer(b, z, want, n, 0, 0, "add_inplace");
    CHECK_OK(b->ops->axpy(b, 0.3f, y, z, n));
    for (size_t i = 0; i < n; i++) want[i] = (float)((float)want[i] + (float)(0.3f * hy[i]));
    check_buffer(b, z, want, n, 0, 0, "axpy");
    CHECK_OK(b->ops->scale(b, z, -0.5f, n));
    for (size_t i = 0; i < n; i++) want[i] *= -0.5;
    check_buffer(b, z, want, n, 0, 0, "scale");
    CHECK_OK(b->ops->fill(b, z, 3.25f, n));
    for (size_t i = 0; i < n; i++) want[i] = 3.25;
    check_buffer(b, z, want, n, 0, 0, "fill");

    float got;
    CHECK_OK(b->ops->sum_squares(b, x, n, acc));
    CHECK_OK(bf_to_host(b, &got, acc, sizeof got));
    CHECK_CLOSE(got, squares, 0, 1e-6, "sum_squares");
    float start = 1.5f;
    CHECK_OK(bf_to_device(b, acc, &start, sizeof start));
    CHECK_OK(b->ops->accumulate_sum(b, x, n, acc));
    CHECK_OK(b->ops->accumulate_sum(b, x, 7, acc));
    CHECK_OK(bf_to_host(b, &got, acc, sizeof got));
    double sum7 = 0;
    for (int i = 0; i < 7; i++) sum7 += hx[i];
    CHECK_CLOSE(got, 1.5 + sum + sum7, 1e-3, 1e-6, "accumulate_sum adds onto the accumulator");

    /* relu, in place (y aliases x) and backward from the output. */
    CHECK_OK(b->ops->copy(b, z, x, n * sizeof(float)));
    CHECK_OK(b->ops->relu_forward(b, z, z, n));
    for (size_t i = 0; i < n; i++) want[i] = hx[i] > 0 ? hx[i] : 0;
    check_buffer(b, z, want, n, 0, 0, "relu forward in place");
    CHECK_OK(b->ops->relu_backward(b, z, y, y, n));
    for (size_t i = 0; i < n; i++) want[i] = hx[i] > 0 ? hy[i] : 0;
    check_buffer(b, y, want, n, 0, 0, "relu backward (dx aliases dy)");

    free(hx); free(hy); free(want);
    bf_free(b, x); bf_free(b, y); bf_free(b, z); bf_free(b, acc);
}

/* ---- convolution ---- */

/* Direct definitions: y = conv(x, w) + bias; dx, dw, dbias from dy by scattering each product. */
static void conv_reference(const bf_conv2d_shape *s, const float *x, const float *w, const float *bias,
                           const float *dy, double *y, double *dx, double *dw, double *dbias) {
    int cin_g = s->c_in / s->groups, cout_g = s->c_out / s->groups;
    for (int n = 0; n < s->n; n++)
        for (int o = 0; o < s->c_out; o++)
            for (int oh = 0; oh < s->h_out; oh++)
                for (int ow = 0; ow < s->w_out; ow++) {
                    size_t yi = (((size_t)n * s->c_out + o) * s->h_out + oh) * s->w_out + ow;
                    double acc = bias ? bias[o] : 0;
                    if (dbias) dbias[o] += dy[yi];
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int ki = 0; ki < s->k_h; ki++)
                            for (int kj = 0; kj < s->k_w; kj++) {
                                int ih = oh * s->stride - s->pad + ki, iw = ow * s->stride - s->pad + kj;
                                if (ih < 0 || ih >= s->h_in || iw < 0 || iw >= s->w_in) continue;
                                int c = (o / cout_g) * cin_g + ci;
                                size_t xi = (((size_t)n * s->c_in + c) * s->h_in + ih) * s->w_in + iw;
                                size_t wi = (((size_t)o * cin_g + ci) * s->k_h + ki) * s->k_w + kj;
                                acc += (double)x[xi] * w[wi];
                                dx[xi] += (double)w[wi] * dy[yi];
                                dw[wi] += (double)x[xi] * dy[yi];
                            }
                    y[yi] = acc;
                }
}

static void test_conv_case(bf_backend *b, bf_conv2d_shape s, int with_bias, const char *name) {
    CHECK_OK(bf_conv2d_shape_init(&s));
    size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in, ny = (size_t)s.n * s.c_out * s.h_out * s.w_out;
    size_t nw = (size_t)s.c_out * (s.c_in / s.groups) * s.k_h * s.k_w;
    float *hx, *hw, *hb, *hdy;
    float *x = random_buffer(b, nx, -1, 1, 11, &hx), *w = random_buffer(b, nw, -1, 1, 12, &hw);
    float *bias = random_buffer(b, (size_t)s.c_out, -1, 1, 13, &hb), *dy = random_buffer(b, ny, -1, 1, 14, &hdy);
    float *y = bf_test_upload(b, NULL, ny), *dx = bf_test_upload(b, NULL, nx);
    float *dw = bf_test_upload(b, NULL, nw), *db = bf_test_upload(b, NULL, (size_t)s.c_out);
    double *ry = zeros(ny), *rdx = zeros(nx), *rdw = zeros(nw), *rdb = zeros((size_t)s.c_out);
    conv_reference(&s, hx, hw, with_bias ? hb : NULL, hdy, ry, rdx, rdw, rdb);

    char what[160];
    /* Backward ops overwrite: start from garbage to prove it. */
    CHECK_OK(b->ops->fill(b, dx, 7.0f, nx));
    CHECK_OK(b->ops->fill(b, dw, 7.0f, nw));
    CHECK_OK(b->ops->conv2d_forward(b, &s, x, w, with_bias ? bias : NULL, y));
    CHECK_OK(b->ops->conv2d_backward_data(b, &s, dy, w, dx));
    CHECK_OK(b->ops->conv2d_backward_filter(b, &s, x, dy, dw, with_bias ? db : NULL));
    snprintf(what, sizeof what, "%s forward", name);
    check_buffer(b, y, ry, ny, 1e-5, 1e-5, what);
    snprintf(what, sizeof what, "%s backward data", name);
    check_buffer(b, dx, rdx, nx, 1e-5, 1e-5, what);
    snprintf(what, sizeof what, "%s backward filter", name);
    check_buffer(b, dw, rdw, nw, 1e-5, 1e-5, what);
    if (with_bias) {
        snprintf(what, sizeof what, "%s backward bias", name);
        check_buffer(b, db, rdb, (size_t)s.c_out, 1e-5, 1e-5, what);
    }

    /* conv2d_backward_data_add: dx + the same result, one addition per element, bit for bit. */
    float *hdx = bf_test_download(b, dx, nx), *hprior;
    float *acc = random_buffer(b, nx, -1, 1, 15, &hprior);
    CHECK_OK(b->ops->conv2d_backward_data_add(b, &s, dy, w, acc));
    float *hacc = bf_test_download(b, acc, nx);
    size_t bad_add = 0;
    for (size_t i = 0; i < nx; i++) {
        const float want = hprior[i] + hdx[i];
        bad_add += memcmp(&hacc[i], &want, sizeof want) != 0;
    }
    CHECK(bad_add == 0, "%s: backward data added onto dx differs from dx + backward data in %zu of %zu elements", name,
          bad_add, nx);
    free(hdx); free(hprior); free(hacc);
    bf_free(b, acc);

    /* Bit-identical on a second run. */
    float *first = bf_test_download(b, dw, nw);
    CHECK_OK(b->ops->conv2d_backward_filter(b, &s, x, dy, dw, NULL));
    float *second = bf_test_download(b, dw, nw);
    CHECK(memcmp(first, second, nw * sizeof(float)) == 0, "%s: backward filter repeats bit for bit", name);

    free(first); free(second); free(hx); free(hw); free(hb); free(hdy);
    free(ry); free(rdx); free(rdw); free(rdb);
    bf_free(b, x); bf_free(b, w); bf_free(b, bias); bf_free(b, dy);
    bf_free(b, y); bf_free(b, dx); bf_free(b, dw); bf_free(b, db);
}

static void test_conv(bf_backend *b) {
    test_conv_case(b, (bf_conv2d_shape){.n = 3, .c_in = 4, .h_in = 9, .w_in = 7, .c_out = 6, .k_h = 3, .k_w = 3,
                                        .stride = 2, .pad = 1, .groups = 2}, 1, "conv 3x3 stride 2 pad 1 groups 2 bias");
    test_conv_case(b, (bf_conv2d_shape){.n = 5, .c_in = 3, .h_in = 6, .w_in = 6, .c_out = 4, .k_h = 1, .k_w = 1,
                                        .stride = 1, .pad = 0, .groups = 1}, 1, "conv 1x1 direct");
    test_conv_case(b, (bf_conv2d_shape){.n = 2, .c_in = 2, .h_in = 5, .w_in = 8, .c_out = 3, .k_h = 3, .k_w = 2,
                                        .stride = 1, .pad = 2, .groups = 1}, 0, "conv 3x2 pad 2 no bias");
    test_conv_case(b, (bf_conv2d_shape){.n = 1, .c_in = 4, .h_in = 7, .w_in = 7, .c_out = 4, .k_h = 5, .k_w = 5,
                                        .stride = 3, .pad = 2, .groups = 4}, 1, "conv depthwise 5x5 stride 3 batch 1");
    /* Batches of 32 images and more take tiles of several images per GEMM where the output is
     * small (conv_cpu.c): 2 images of 4x4 per tile, the last tile with 1; then 3 pointwise images of
     * 5x5, the last tile with 2. */
    test_conv_case(b, (bf_conv2d_shape){.n = 37, .c_in = 4, .h_in = 7, .w_in = 7, .c_out = 6, .k_h = 3, .k_w = 3,
                                        .stride = 2, .pad = 1, .groups = 2}, 1, "conv tiles of 2 images, groups 2, bias");
    test_conv_case(b, (bf_conv2d_shape){.n = 50, .c_in = 3, .h_in = 5, .w_in = 5, .c_out = 4, .k_h = 1, .k_w = 1,
                                        .stride = 1, .pad = 0, .groups = 1}, 0, "conv 1x1 tiles of 3 images");
    /* A batch of few columns in all (150) takes its weight gradient in one GEMM per group, its output
     * in slices (here 16 slices of the 72 weight columns, 32 x 72 x 150 multiply-adds being enough) */
    test_conv_case(b, (bf_conv2d_shape){.n = 5, .c_in = 16, .h_in = 6, .w_in = 5, .c_out = 64, .k_h = 3, .k_w = 3,
                                        .stride = 1, .pad = 1, .groups = 2}, 1, "conv weight gradient in slices");

    bf_conv2d_shape bad = {.n = 1, .c_in = 3, .h_in = 5, .w_in = 5, .c_out = 4, .k_h = 3, .k_w = 3, .stride = 1};
    float *buf = bf_test_upload(b, NULL, 1000);
    CHECK(b->ops->conv2d_forward(b, &bad, buf, buf, NULL, buf) == BF_ERR_ARG, "conv rejects an uninitialised shape");
    bf_free(b, buf);
}

/* ---- batch normalisation ---- */

static void test_batchnorm(bf_backend *b) {
    const bf_bn_shape s = {.n = 3, .c = 4, .hw = 5, .eps = 1e-5f, .momentum = 0.1f};
    const size_t count = (size_t)s.n * s.c * s.hw, per = (size_t)s.n * s.hw;
    float *hx, *hg, *hbeta, *hdy;
    float *x = random_buffer(b, count, -2, 5, 21, &hx), *gamma = random_buffer(b, 4, 0.5f, 1.5f, 22, &hg);
    float *beta = random_buffer(b, 4, -1, 1, 23, &hbeta), *dy = random_buffer(b, count, -1, 1, 24, &hdy);
    float *y = bf_test_upload(b, NULL, count), *dx = bf_test_upload(b, NULL, count);
    float *mean = bf_test_upload(b, NULL, 4), *invstd = bf_test_upload(b, NULL, 4);
    float *dgamma = bf_test_upload(b, NULL, 4), *dbeta = bf_test_upload(b, NULL, 4);
    float hrm[4] = {0.5f, -0.5f, 0, 1}, hrv[4] = {2, 1, 0.5f, 3};
    float *rm = bf_test_upload(b, hrm, 4), *rv = bf_test_upload(b, hrv, 4);

    double ry[60], rdx[60], rmean[4], rinv[4], rrm[4], rrv[4], rdg[4], rdb[4], ryeval[60];
#define AT(ch, j) (((size_t)((j) / s.hw) * s.c + (ch)) * s.hw + (j) % s.hw)
    for (int ch = 0; ch < 4; ch++) {
        double m = 0, v = 0, sdy = 0, sdyx = 0;
        for (size_t j = 0; j < per; j++) m += hx[AT(ch, j)] / (double)per;
        for (size_t j = 0; j < per; j++) v += pow(hx[AT(ch, j)] - m, 2) / (double)per;
        double inv = 1 / sqrt(v + s.eps);
        rmean[ch] = m;
        rinv[ch] = inv;
        rrm[ch] = 0.9 * hrm[ch] + 0.1 * m;
        rrv[ch] = 0.9 * hrv[ch] + 0.1 * v * per / (per - 1.0); /* unbiased */
        for (size_t j = 0; j < per; j++) {
            double xhat = (hx[AT(ch, j)] - m) * inv;
            ry[AT(ch, j)] = hg[ch] * xhat + hbeta[ch];
            ryeval[AT(ch, j)] = hg[ch] * (hx[AT(ch, j)] - rrm[ch]) / sqrt(rrv[ch] + s.eps) + hbeta[ch];
            sdy += hdy[AT(ch, j)];
            sdyx += hdy[AT(ch, j)] * xhat;
        }
        rdg[ch] = sdyx;
        rdb[ch] = sdy;
        for (size_t j = 0; j < per; j++) {
            double xhat = (hx[AT(ch, j)] - m) * inv;
            rdx[AT(ch, j)] = hg[ch] * inv * (hdy[AT(ch, j)] - sdy / per - xhat * sdyx / per);
        }
    }
#undef AT
    CHECK_OK(b->ops->batchnorm_forward_train(b, &s, x, gamma, beta, y, mean, invstd, rm, rv));
    check_buffer(b, y, ry, count, 1e-5, 1e-5, "batchnorm train output");
    check_buffer(b, mean, rmean, 4, 1e-6, 1e-6, "batchnorm saved mean");
    check_buffer(b, invstd, rinv, 4, 1e-6, 1e-6, "batchnorm saved invstd");
    check_buffer(b, rm, rrm, 4, 1e-6, 1e-6, "batchnorm running mean");
    check_buffer(b, rv, rrv, 4, 1e-6, 1e-6, "batchnorm running variance (unbiased)");
    /* the output again from the saved statistics: the same bits */
    float *y_again = bf_test_upload(b, NULL, count);
    CHECK_OK(b->ops->batchnorm_forward_saved(b, &s, x, gamma, beta, mean, invstd, y_again));
    CHECK(memcmp(y_again, y, count * sizeof(float)) == 0, "batchnorm_forward_saved gives the train output bit for bit");
    bf_free(b, y_again);
    CHECK_OK(b->ops->batchnorm_backward(b, &s, x, dy, gamma, mean, invstd, dx, dgamma, dbeta));
    check_buffer(b, dx, rdx, count, 1e-5, 1e-5, "batchnorm dx");
    check_buffer(b, dgamma, rdg, 4, 1e-5, 1e-5, "batchnorm dgamma");
    check_buffer(b, dbeta, rdb, 4, 1e-5, 1e-5, "batchnorm dbeta");
    CHECK_OK(b->ops->batchnorm_forward_eval(b, &s, x, gamma, beta, rm, rv, y));
    check_buffer(b, y, ryeval, count, 1e-5, 1e-5, "batchnorm eval output");

    const bf_bn_shape single = {.n = 1, .c = 4, .hw = 1, .eps = 1e-5f, .momentum = 0.1f};
    CHECK(b->ops->batchnorm_forward_train(b, &single, x, gamma, beta, y, mean, invstd, rm, rv) == BF_ERR_ARG,
          "batchnorm train refuses one value per channel");
    free(hx); free(hg); free(hbeta); free(hdy);
    float *bufs[] = {x, gamma, beta, dy, y, dx, mean, invstd, dgamma, dbeta, rm, rv};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) bf_free(b, bufs[i]);
}

/* ---- pooling ---- */

/* Naive pooling: max (padding -inf, first maximum in row-major order) or average (divisor k*k),
 * and the backward scatter of dy. */
static void pool_reference(const bf_pool_shape *s, int is_max, const float *x, const float *dy, double *y,
                           int32_t *argmax, double *dx) {
    for (int p = 0; p < s->n * s->c; p++)
        for (int oh = 0; oh < s->h_out; oh++)
            for (int ow = 0; ow < s->w_out; ow++) {
                size_t o = ((size_t)p * s->h_out + oh) * s->w_out + ow;
                double best = -INFINITY, sum = 0;
                int best_index = -1;
                for (int ki = 0; ki < s->k; ki++)
                    for (int kj = 0; kj < s->k; kj++) {
                        int ih = oh * s->stride - s->pad + ki, iw = ow * s->stride - s->pad + kj;
                        if (ih < 0 || ih >= s->h_in || iw < 0 || iw >= s->w_in) continue;
                        double v = x[((size_t)p * s->h_in + ih) * s->w_in + iw];
                        sum += v;
                        if (best_index < 0 || v > best) {
                            best = v;
                            best_index = ih * s->w_in + iw;
                        }
                        if (!is_max) dx[((size_t)p * s->h_in + ih) * s->w_in + iw] += dy[o] / (s->k * s->k);
                    }
                y[o] = is_max ? best : sum / (s->k * s->k);
                if (is_max) {
                    argmax[o] = best_index;
                    dx[(size_t)p * s->h_in * s->w_in + best_index] += dy[o];
                }
            }
}

static void test_pool_case(bf_backend *b, bf_pool_shape s, int is_max, const float *hx_given, const char *name) {
    CHECK_OK(bf_pool_shape_init(&s));
    size_t nx = (size_t)s.n * s.c * s.h_in * s.w_in, ny = (size_t)s.n * s.c * s.h_out * s.w_out;
    float *hx = malloc(nx * sizeof(float)), *hdy;
    if (hx_given) memcpy(hx, hx_given, nx * sizeof(float));
    else bf_test_fill_uniform(hx, nx, -3, 3, 31);
    float *x = bf_test_upload(b, hx, nx), *dy = random_buffer(b, ny, -1, 1, 32, &hdy);
    float *y = bf_test_upload(b, NULL, ny), *dx = bf_test_upload(b, NULL, nx);
    int32_t *argmax = NULL, *rarg = calloc(ny, sizeof(int32_t));
    CHECK_OK(bf_alloc(b, ny * sizeof(int32_t), (void **)&argmax));
    double *ry = zeros(ny), *rdx = zeros(nx);
    pool_reference(&s, is_max, hx, hdy, ry, rarg, rdx);

    char what[160];
    CHECK_OK(b->ops->fill(b, dx, 7.0f, nx)); /* backward overwrites all of dx */
    if (is_max) {
        CHECK_OK(b->ops->maxpool_forward(b, &s, x, y, argmax));
        CHECK_OK(b->ops->maxpool_backward(b, &s, dy, argmax, dx));
        int32_t *harg = malloc(ny * sizeof(int32_t));
        CHECK_OK(bf_to_host(b, harg, argmax, ny * sizeof(int32_t)));
        int same = 1;
        for (size_t i = 0; i < ny; i++) same &= harg[i] == rarg[i];
        CHECK(same, "%s: argmax follows the first-maximum rule", name);
        free(harg);
    } else {
        CHECK_OK(b->ops->avgpool_forward(b, &s, x, y));
        CHECK_OK(b->ops->avgpool_backward(b, &s, dy, dx));
    }
    snprintf(what, sizeof what, "%s forward", name);
    check_buffer(b, y, ry, ny, 1e-6, 1e-6, what);
    snprintf(what, sizeof what, "%s backward", name);
    check_buffer(b, dx, rdx, nx, 1e-6, 1e-6, what);
    free(hx); free(hdy); free(rarg); free(ry); free(rdx);
    bf_free(b, x); bf_free(b, dy); bf_free(b, y); bf_free(b, dx); bf_free(b, argmax);
}

static void test_pooling(bf_backend *b) {
    /* Hand-checked max pool, k3 s2 p1 on 4x4: windows overlap, ties pick the first maximum. */
    const float tie[16] = {1, 3, 3, 0, 2, 3, 1, 3, 0, 0, -1, 2, 5, 5, 4, 5};
    bf_pool_shape s = {.n = 1, .c = 1, .h_in = 4, .w_in = 4, .k = 3, .stride = 2, .pad = 1};
    CHECK_OK(bf_pool_shape_init(&s));
    float *x = bf_test_upload(b, tie, 16), *y = bf_test_upload(b, NULL, 4), *dx = bf_test_upload(b, NULL, 16);
    const float hdy[4] = {1, 2, 3, 4};
    float *dy = bf_test_upload(b, hdy, 4);
    int32_t *argmax = NULL, harg[4];
    float hy[4], hdx[16];
    CHECK_OK(bf_alloc(b, 4 * sizeof(int32_t), (void **)&argmax));
    CHECK_OK(b->ops->maxpool_forward(b, &s, x, y, argmax));
    CHECK_OK(b->ops->maxpool_backward(b, &s, dy, argmax, dx));
    CHECK_OK(bf_to_host(b, hy, y, sizeof hy));
    CHECK_OK(bf_to_host(b, harg, argmax, sizeof harg));
    CHECK_OK(bf_to_host(b, hdx, dx, sizeof hdx));
    CHECK(hy[0] == 3 && hy[1] == 3 && hy[2] == 5 && hy[3] == 5, "maxpool values %g %g %g %g", hy[0], hy[1], hy[2], hy[3]);
    CHECK(harg[0] == 1 && harg[1] == 1 && harg[2] == 12 && harg[3] == 13, "maxpool tie rule: argmax %d %d %d %d",
          harg[0], harg[1], harg[2], harg[3]);
    CHECK(hdx[1] == 3 && hdx[12] == 3 && hdx[13] == 4 && hdx[0] == 0 && hdx[5] == 0, "maxpool backward adds overlaps");
    /* All inputs negative: padding (-inf) must never win. */
    float negative[16];
    for (int i = 0; i < 16; i++) negative[i] = -5;
    CHECK_OK(bf_to_device(b, x, negative, sizeof negative));
    CHECK_OK(b->ops->maxpool_forward(b, &s, x, y, argmax));
    CHECK_OK(bf_to_host(b, hy, y, sizeof hy));
    CHECK_OK(bf_to_host(b, harg, argmax, sizeof harg));
    CHECK(hy[0] == -5 && hy[3] == -5, "maxpool padding is -infinity (got %g)", hy[0]);
    CHECK(harg[0] == 0 && harg[1] == 1 && harg[2] == 4 && harg[3] == 5, "maxpool ties pick the first valid input");
    /* A NaN propagates (as in PyTorch), and argmax may be omitted. */
    negative[6] = NAN;
    CHECK_OK(bf_to_device(b, x, negative, sizeof negative));
    CHECK_OK(b->ops->maxpool_forward(b, &s, x, y, NULL));
    CHECK_OK(bf_to_host(b, hy, y, sizeof hy));
    CHECK(isnan(hy[1]) && isnan(hy[3]) && hy[0] == -5 && hy[2] == -5, "maxpool propagates NaN (%g %g %g %g)", hy[0],
          hy[1], hy[2], hy[3]);
    /* The same in the 2x2 stride-2 loop: a NaN in the last tap of window 1 (of 0-3) wins it, and
     * one in the first tap of window 2 holds on against the larger values after it. */
    const float with_nan[16] = {0, 1, 2, 3, 4, 5, 6, NAN, NAN, 9, 10, 11, 12, 13, 14, 15};
    bf_pool_shape s2 = {.n = 1, .c = 1, .h_in = 4, .w_in = 4, .k = 2, .stride = 2, .pad = 0};
    CHECK_OK(bf_pool_shape_init(&s2));
    CHECK_OK(bf_to_device(b, x, with_nan, sizeof with_nan));
    CHECK_OK(b->ops->maxpool_forward(b, &s2, x, y, argmax));
    CHECK_OK(bf_to_host(b, hy, y, sizeof hy));
    CHECK_OK(bf_to_host(b, harg, argmax, sizeof harg));
    CHECK(hy[0] == 5 && isnan(hy[1]) && isnan(hy[2]) && hy[3] == 15 && harg[1] == 7 && harg[2] == 8,
          "maxpool k2 s2 propagates NaN (%g %g %g %g, argmax %d %d)", hy[0], hy[1], hy[2], hy[3], harg[1], harg[2]);

    /* Hand-checked average pool: x[i] = i on 5x5, k3 s2 p1, padding counted in the divisor. */
    float ramp[25], avg[9];
    for (int i = 0; i < 25; i++) ramp[i] = (float)i;
    bf_pool_shape a = {.n = 1, .c = 1, .h_in = 5, .w_in = 5, .k = 3, .stride = 2, .pad = 1};
    CHECK_OK(bf_pool_shape_init(&a));
    float *xr = bf_test_upload(b, ramp, 25), *ya = bf_test_upload(b, NULL, 9);
    CHECK_OK(b->ops->avgpool_forward(b, &a, xr, ya));
    CHECK_OK(bf_to_host(b, avg, ya, sizeof avg));
    CHECK_CLOSE(avg[0], (0 + 1 + 5 + 6) / 9.0, 1e-6, 1e-6, "avgpool corner counts padding (count_include_pad)");
    CHECK_CLOSE(avg[4], (6 + 7 + 8 + 11 + 12 + 13 + 16 + 17 + 18) / 9.0, 1e-6, 1e-6, "avgpool centre");
    bf_free(b, x); bf_free(b, y); bf_free(b, dx); bf_free(b, dy); bf_free(b, argmax); bf_free(b, xr); bf_free(b, ya);

    test_pool_case(b, (bf_pool_shape){.n = 2, .c = 3, .h_in = 7, .w_in = 6, .k = 3, .stride = 2, .pad = 1}, 1, NULL, "maxpool k3 s2 p1");
    test_pool_case(b, (bf_pool_shape){.n = 2, .c = 3, .h_in = 8, .w_in = 8, .k = 2, .stride = 2, .pad = 0}, 1, NULL, "maxpool k2 s2");
    /* k2 s2 has its own loop too (every VGG pool): odd sizes (the last row and column unused) and
     * values from {-1, -0.5, 0, 0.5, 1}, so that most windows hold a tie for their maximum */
    float coarse[2 * 3 * 7 * 9];
    bf_test_fill_uniform(coarse, 2 * 3 * 7 * 9, -1.2f, 1.2f, 33);
    for (int i = 0; i < 2 * 3 * 7 * 9; i++) coarse[i] = roundf(coarse[i] * 2) / 2;
    test_pool_case(b, (bf_pool_shape){.n = 2, .c = 3, .h_in = 7, .w_in = 9, .k = 2, .stride = 2, .pad = 0}, 1, coarse,
                   "maxpool k2 s2 ties");
    /* and k3 s1 p1 (every 3x3 flex layer's pool branch: rows of window maxima, then columns): ties,
     * and planes of one and two columns or rows */
    test_pool_case(b, (bf_pool_shape){.n = 2, .c = 3, .h_in = 7, .w_in = 9, .k = 3, .stride = 1, .pad = 1}, 1, coarse,
                   "maxpool k3 s1 p1 ties");
    test_pool_case(b, (bf_pool_shape){.n = 3, .c = 2, .h_in = 5, .w_in = 1, .k = 3, .stride = 1, .pad = 1}, 1, coarse,
                   "maxpool k3 s1 p1 one column, ties");
    test_pool_case(b, (bf_pool_shape){.n = 3, .c = 2, .h_in = 1, .w_in = 2, .k = 3, .stride = 1, .pad = 1}, 1, coarse,
                   "maxpool k3 s1 p1 one row, ties");
    test_pool_case(b, (bf_pool_shape){.n = 1, .c = 2, .h_in = 2, .w_in = 2, .k = 3, .stride = 1, .pad = 1}, 1, coarse,
                   "maxpool k3 s1 p1 2x2, ties");
    /* stride 1 has its own loop (the flex layers' pool branch), also on planes narrower than k */
    test_pool_case(b, (bf_pool_shape){.n = 2, .c = 3, .h_in = 5, .w_in = 6, .k = 3, .stride = 1, .pad = 1}, 1, NULL, "maxpool k3 s1 p1");
    test_pool_case(b, (bf_pool_shape){.n = 1, .c = 2, .h_in = 7, .w_in = 9, .k = 5, .stride = 1, .pad = 2}, 1, NULL, "maxpool k5 s1 p2");
    test_pool_case(b, (bf_pool_shape){.n = 2, .c = 2, .h_in = 3, .w_in = 2, .k = 5, .stride = 1, .pad = 2}, 1, NULL, "maxpool k5 s1 p2 on 3x2");
    test_pool_case(b, (bf_pool_shape){.n = 2, .c = 3, .h_in = 7, .w_in = 6, .k = 3, .stride = 2, .pad = 1}, 0, NULL, "avgpool k3 s2 p1");
    test_pool_case(b, (bf_pool_shape){.n = 1, .c = 2, .h_in = 5, .w_in = 5, .k = 3, .stride = 1, .pad = 1}, 0, NULL, "avgpool k3 s1 p1");

    /* Global average pooling over hw = 10. */
    const int n = 3, c = 4, hw = 10;
    float *hg, *hgd;
    float *gx = random_buffer(b, (size_t)n * c * hw, -1, 1, 33, &hg), *gy = bf_test_upload(b, NULL, (size_t)n * c);
    float *gdy = random_buffer(b, (size_t)n * c, -1, 1, 34, &hgd), *gdx = bf_test_upload(b, NULL, (size_t)n * c * hw);
    double ry[12], rdx[120];
    for (int p = 0; p < n * c; p++) {
        ry[p] = 0;
        for (int i = 0; i < hw; i++) {
            ry[p] += hg[p * hw + i] / (double)hw;
            rdx[p * hw + i] = hgd[p] / (double)hw;
        }
    }
    CHECK_OK(b->ops->global_avgpool_forward(b, n, c, hw, gx, gy));
    CHECK_OK(b->ops->global_avgpool_backward(b, n, c, hw, gdy, gdx));
    check_buffer(b, gy, ry, 12, 1e-6, 1e-6, "global avgpool forward");
    check_buffer(b, gdx, rdx, 120, 1e-6, 1e-6, "global avgpool backward");
    free(hg); free(hgd);
    bf_free(b, gx); bf_free(b, gy); bf_free(b, gdy); bf_free(b, gdx);
}

/* ---- fully connected ---- */

static void test_linear_case(bf_backend *b, bf_linear_shape s, int with_bias, const char *name) {
    size_t nx = (size_t)s.n * s.in, ny = (size_t)s.n * s.out, nw = (size_t)s.out * s.in;
    float *hx, *hw, *hb, *hdy;
    float *x = random_buffer(b, nx, -1, 1, 41, &hx), *w = random_buffer(b, nw, -1, 1, 42, &hw);
    float *bias = random_buffer(b, (size_t)s.out, -1, 1, 43, &hb), *dy = random_buffer(b, ny, -1, 1, 44, &hdy);
    float *y = bf_test_upload(b, NULL, ny), *dx = bf_test_upload(b, NULL, nx);
    float *dw = bf_test_upload(b, NULL, nw), *db = bf_test_upload(b, NULL, (size_t)s.out);
    double *ry = zeros(ny), *rdx = zeros(nx), *rdw = zeros(nw), *rdb = zeros((size_t)s.out);
    for (int i = 0; i < s.n; i++)
        for (int o = 0; o < s.out; o++) {
            double g = hdy[(size_t)i * s.out + o], acc = with_bias ? hb[o] : 0;
            for (int k = 0; k < s.in; k++) {
                acc += (double)hx[(size_t)i * s.in + k] * hw[(size_t)o * s.in + k];
                rdx[(size_t)i * s.in + k] += g * hw[(size_t)o * s.in + k];
                rdw[(size_t)o * s.in + k] += g * hx[(size_t)i * s.in + k];
            }
            ry[(size_t)i * s.out + o] = acc;
            rdb[o] += g;
        }
    char what[160];
    CHECK_OK(b->ops->linear_forward(b, &s, x, w, with_bias ? bias : NULL, y));
    CHECK_OK(b->ops->linear_backward(b, &s, x, w, dy, dx, dw, with_bias ? db : NULL));
    snprintf(what, sizeof what, "%s forward", name);
    check_buffer(b, y, ry, ny, 1e-5, 1e-5, what);
    snprintf(what, sizeof what, "%s dx", name);
    check_buffer(b, dx, rdx, nx, 1e-5, 1e-5, what);
    snprintf(what, sizeof what, "%s dw", name);
    check_buffer(b, dw, rdw, nw, 1e-5, 1e-5, what);
    if (with_bias) {
        snprintf(what, sizeof what, "%s dbias", name);
        check_buffer(b, db, rdb, (size_t)s.out, 1e-5, 1e-5, what);
    }
    CHECK_OK(b->ops->fill(b, dw, 0, nw));
    CHECK_OK(b->ops->linear_backward(b, &s, x, w, dy, NULL, dw, NULL)); /* first layer: no dx */
    snprintf(what, sizeof what, "%s dw without dx", name);
    check_buffer(b, dw, rdw, nw, 1e-5, 1e-5, what);
    CHECK_OK(b->ops->fill(b, dx, 0, nx));
    CHECK_OK(b->ops->linear_backward(b, &s, NULL, w, dy, dx, NULL, NULL)); /* dx alone: x not needed */
    snprintf(what, sizeof what, "%s dx alone (x NULL)", name);
    check_buffer(b, dx, rdx, nx, 1e-5, 1e-5, what);
    CHECK(b->ops->linear_backward(b, &s, NULL, w, dy, dx, dw, NULL) == BF_ERR_ARG, "%s: NULL x with dw accepted", name);
    free(hx); free(hw); free(hb); free(hdy); free(ry); free(rdx); free(rdw); free(rdb);
    bf_free(b, x); bf_free(b, w); bf_free(b, bias); bf_free(b, dy);
    bf_free(b, y); bf_free(b, dx); bf_free(b, dw); bf_free(b, db);
}

static void test_linear(bf_backend *b) {
    test_linear_case(b, (bf_linear_shape){.n = 3, .in = 5, .out = 4}, 1, "linear small");
    test_linear_case(b, (bf_linear_shape){.n = 64, .in = 100, .out = 50}, 1, "linear rows split");
    test_linear_case(b, (bf_linear_shape){.n = 2, .in = 300, .out = 500}, 0, "linear columns split");
}

/* ---- dropout ---- */

static void test_dropout(bf_backend *b) {
    const size_t n = 200000;
    const float p = 0.3f;
    float *hx, *hdy;
    float *x = random_buffer(b, n, 0.5f, 1.5f, 51, &hx), *dy = random_buffer(b, n, 0.5f, 1.5f, 52, &hdy);
    float *y = bf_test_upload(b, NULL, n), *dx = bf_test_upload(b, NULL, n);
    /* a batch at sample offset 7 (of 1000 elements each) whose tensor has 4 time steps: element
     * j of step t draws bf_uniform(seed, t * 2^48 + 7000 + j) (hash.h's bf_draws) */
    const bf_draws draws = {1234, 7000, n / 4};
    CHECK_OK(b->ops->dropout_forward(b, x, y, n, 1, p, draws));
    CHECK_OK(b->ops->dropout_backward(b, dy, dx, n, 1, p, draws));
    float *hy = bf_test_download(b, y, n), *hdx = bf_test_download(b, dx, n);
    size_t kept = 0, mask_ok = 0, scale_ok = 0, backward_ok = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t t = i / (n / 4);
        int keep = bf_uniform(1234, (t << 48) + 7000 + i % (n / 4)) >= p;
        kept += hy[i] != 0;
        mask_ok += keep == (hy[i] != 0);
        scale_ok += !keep || fabs(hy[i] - hx[i] / 0.7) <= 1e-6 * fabs(hy[i]);
        backward_ok += keep ? fabs(hdx[i] - hdy[i] / 0.7) <= 1e-6 * fabs(hdx[i]) : hdx[i] == 0;
    }
    CHECK_CLOSE((double)kept / n, 0.7, 0.005, 0, "dropout keep rate is 1 - p");
    CHECK(mask_ok == n, "dropout keeps exactly the elements whose draw is >= p (%zu of %zu)", mask_ok, n);
    CHECK(scale_ok == n, "dropout scales kept elements by 1/(1-p) (%zu of %zu)", scale_ok, n);
    CHECK(backward_ok == n, "dropout backward applies the same mask and scale (%zu of %zu)", backward_ok, n);

    float *again = bf_test_upload(b, NULL, n);
    CHECK_OK(b->ops->dropout_forward(b, x, again, n, 1, p, draws));
    float *hagain = bf_test_download(b, again, n);
    CHECK(memcmp(hy, hagain, n * sizeof(float)) == 0, "dropout repeats for the same draws");
    CHECK_OK(b->ops->dropout_forward(b, x, again, n, 1, p, (bf_draws){1235, 7000, n / 4}));
    free(hagain);
    hagain = bf_test_download(b, again, n);
    CHECK(memcmp(hy, hagain, n * sizeof(float)) != 0, "dropout differs for another seed");
    CHECK_OK(b->ops->dropout_forward(b, x, again, n, 1, 0.0f, bf_draws_of(1234)));
    free(hagain);
    hagain = bf_test_download(b, again, n);
    CHECK(memcmp(hx, hagain, n * sizeof(float)) == 0, "dropout with p = 0 copies");
    free(hagain); free(hx); free(hdy); free(hy); free(hdx);
    bf_free(b, x); bf_free(b, dy); bf_free(b, y); bf_free(b, dx); bf_free(b, again);
}

/* Dropout2d (group = h*w): every plane of a sample is dropped or kept whole, by the draw of its
 * first element, with the same draws in the backward; a tensor that is not whole planes is refused. */
static void test_dropout2d(bf_backend *b) {
    const size_t hw = 49, planes = 2 * 3 * 50, n = planes * hw; /* T = 2 steps of 3 samples of 50 channels */
    const float p = 0.3f;
    float *hx, *hdy;
    float *x = random_buffer(b, n, 0.5f, 1.5f, 53, &hx), *dy = random_buffer(b, n, 0.5f, 1.5f, 54, &hdy);
    float *y = bf_test_upload(b, NULL, n), *dx = bf_test_upload(b, NULL, n);
    const bf_draws draws = {99, 5 * 50 * hw, n / 2}; /* the batch starts at sample 5 */
    CHECK_OK(b->ops->dropout_forward(b, x, y, n, hw, p, draws));
    CHECK_OK(b->ops->dropout_backward(b, dy, dx, n, hw, p, draws));
    float *hy = bf_test_download(b, y, n), *hdx = bf_test_download(b, dx, n);
    size_t kept = 0, planes_ok = 0;
    for (size_t g = 0; g < planes; g++) {
        const size_t i0 = g * hw, t = i0 / (n / 2);
        const int keep = bf_uniform(99, (t << 48) + 5 * 50 * hw + i0 % (n / 2)) >= p;
        size_t ok = 0;
        for (size_t j = i0; j < i0 + hw; j++)
            ok += keep ? fabs(hy[j] - hx[j] / 0.7) <= 1e-6 * fabs(hy[j]) && fabs(hdx[j] - hdy[j] / 0.7) <= 1e-6 * fabs(hdx[j])
                       : hy[j] == 0 && hdx[j] == 0;
        kept += keep;
        planes_ok += ok == hw;
    }
    CHECK(planes_ok == planes, "Dropout2d keeps or drops whole planes by their first element's draw (%zu of %zu)",
          planes_ok, planes);
    CHECK(kept > planes / 2 && kept < planes * 9 / 10, "Dropout2d keeps %zu of %zu planes at p = 0.3", kept, planes);
    CHECK(b->ops->dropout_forward(b, x, y, n - 1, hw, p, draws) == BF_ERR_ARG, "dropout refuses a partial plane");
    CHECK(strstr(bf_last_error(), "not whole groups of 49") != NULL, "names the group: %s", bf_last_error());
    free(hx); free(hdy); free(hy); free(hdx);
    bf_free(b, x); bf_free(b, dy); bf_free(b, y); bf_free(b, dx);
}

/* ---- loss and metrics ---- */

static void test_softmax_xent(bf_backend *b) {
    /* Hand formula: with equal logits every class has probability 1/k, so the loss is log k for
     * any smoothing, and dlogits = (1/k - target) * grad_scale. */
    const int k = 4;
    float zero_logits[4] = {0, 0, 0, 0}, loss, d[4];
    int32_t label = 2;
    float *z = bf_test_upload(b, zero_logits, 4), *dl = bf_test_upload(b, NULL, 4), *lossd = bf_test_upload(b, NULL, 1);
    int32_t *labd = NULL;
    CHECK_OK(bf_alloc(b, 16 * sizeof(int32_t), (void **)&labd));
    CHECK_OK(bf_to_device(b, labd, &label, sizeof label));
    CHECK_OK(b->ops->softmax_xent(b, 1, k, z, labd, 0.1f, 0.5f, lossd, dl));
    CHECK_OK(bf_to_host(b, &loss, lossd, sizeof loss));
    CHECK_OK(bf_to_host(b, d, dl, sizeof d));
    CHECK_CLOSE(loss, log(4.0), 1e-6, 1e-6, "xent of equal logits is log k");
    CHECK_CLOSE(d[2], (0.25 - (0.9 + 0.025)) * 0.5, 1e-7, 1e-6, "xent smoothed dlogit of the label");
    CHECK_CLOSE(d[0], (0.25 - 0.025) * 0.5, 1e-7, 1e-6, "xent smoothed dlogit of another class");
    bf_free(b, z); bf_free(b, dl); bf_free(b, lossd);

    /* Against -sum_j t_j log softmax_j in double, including large logits. */
    const int n = 3;
    const float logits[12] = {1.5f, -0.5f, 0.25f, 2.0f, 0.1f, 0.2f, 0.3f, 0.4f, 1000, 999, 995, 1000};
    const int32_t labels[3] = {3, 0, 1};
    z = bf_test_upload(b, logits, 12);
    dl = bf_test_upload(b, NULL, 12);
    lossd = bf_test_upload(b, NULL, 3);
    CHECK_OK(bf_to_device(b, labd, labels, sizeof labels));
    for (int smooth = 0; smooth < 2; smooth++) {
        double eps = smooth ? 0.2 : 0.0, rloss[3], rd[12];
        for (int i = 0; i < n; i++) {
            double max = -INFINITY, sum = 0;
            for (int j = 0; j < k; j++) max = fmax(max, logits[i * k + j]);
            for (int j = 0; j < k; j++) sum += exp(logits[i * k + j] - max);
            rloss[i] = 0;
            for (int j = 0; j < k; j++) {
                double logp = logits[i * k + j] - max - log(sum);
                double target = eps / k + (j == labels[i] ? 1 - eps : 0);
                rloss[i] -= target * logp;
                rd[i * k + j] = (exp(logp) - target) / n;
            }
        }
        CHECK_OK(b->ops->softmax_xent(b, n, k, z, labd, (float)eps, 1.0f / n, lossd, dl));
        check_buffer(b, lossd, rloss, 3, 1e-6, 1e-6, smooth ? "xent loss smoothed" : "xent loss");
        check_buffer(b, dl, rd, 12, 1e-7, 1e-6, smooth ? "xent dlogits smoothed" : "xent dlogits");
    }
    CHECK_OK(b->ops->softmax_xent(b, n, k, z, labd, 0.0f, 1.0f, lossd, NULL)); /* dlogits nullable */
    label = 4;
    CHECK_OK(bf_to_device(b, labd, &label, sizeof label));
    CHECK(b->ops->softmax_xent(b, 1, k, z, labd, 0.0f, 1.0f, lossd, NULL) == BF_ERR_ARG, "xent rejects label >= k");
    bf_free(b, z); bf_free(b, dl); bf_free(b, lossd);

    /* Top-k with ties: a label is in the top m when fewer than m logits are strictly greater or
     * equal at a lower index. Label 3 ties label 1's 5 and comes second; the last row is silent
     * (all equal, as a spike-count readout of a network that never fires): only class 0 wins it. */
    const float row[7] = {1, 5, 3, 5, 2, 0, 4};
    float many[35];
    for (int i = 0; i < 28; i++) many[i] = row[i % 7];
    for (int i = 28; i < 35; i++) many[i] = 0.25f;
    const int32_t tl[5] = {1, 3, 6, 5, 4};
    const float want1[5] = {1, 0, 0, 0, 0}, want5[5] = {1, 1, 1, 0, 1};
    float c1[5], c5[5];
    z = bf_test_upload(b, many, 35);
    float *d1 = bf_test_upload(b, NULL, 5), *d5 = bf_test_upload(b, NULL, 5);
    CHECK_OK(bf_to_device(b, labd, tl, sizeof tl));
    CHECK_OK(b->ops->topk_correct(b, 5, 7, z, labd, d1, d5));
    CHECK_OK(bf_to_host(b, c1, d1, sizeof c1));
    CHECK_OK(bf_to_host(b, c5, d5, sizeof c5));
    for (int i = 0; i < 5; i++)
        CHECK(c1[i] == want1[i] && c5[i] == want5[i], "topk sample %d: top1 %g top5 %g, want %g %g", i, c1[i],
              c5[i], want1[i], want5[i]);
    /* k = 3 < 5: top-5 is top-3, which holds every label. */
    const float three[6] = {0.1f, 0.2f, 0.3f, 0.3f, 0.2f, 0.1f};
    const int32_t l3[2] = {0, 0};
    CHECK_OK(bf_to_device(b, z, three, sizeof three));
    CHECK_OK(bf_to_device(b, labd, l3, sizeof l3));
    CHECK_OK(b->ops->topk_correct(b, 2, 3, z, labd, d1, d5));
    CHECK_OK(bf_to_host(b, c1, d1, 2 * sizeof(float)));
    CHECK_OK(bf_to_host(b, c5, d5, 2 * sizeof(float)));
    CHECK(c1[0] == 0 && c1[1] == 1 && c5[0] == 1 && c5[1] == 1, "topk with k = 3: %g %g %g %g", c1[0], c1[1], c5[0], c5[1]);
    bf_free(b, z); bf_free(b, d1); bf_free(b, d5); bf_free(b, labd);
}

/* ---- optimisers ---- */

/* Runs `steps` SGD steps on one parameter with gradient g each step; returns the parameter. */
static float sgd_run(bf_backend *b, float p0, const float *g, int steps, float lr, float momentum, float wd,
                     int nesterov, const float *clip) {
    float *p = bf_test_upload(b, &p0, 1), *buf = bf_test_upload(b, NULL, 1), *grad = bf_test_upload(b, NULL, 1);
    float *clipd = clip ? bf_test_upload(b, clip, 1) : NULL, out;
    for (int t = 0; t < steps; t++) {
        CHECK_OK(bf_to_device(b, grad, &g[t], sizeof(float)));
        CHECK_OK(b->ops->sgd_update(b, p, grad, buf, 1, lr, momentum, wd, nesterov, t == 0, clipd));
    }
    CHECK_OK(bf_to_host(b, &out, p, sizeof out));
    bf_free(b, p); bf_free(b, buf); bf_free(b, grad); bf_free(b, clipd);
    return out;
}

static void test_optimisers(bf_backend *b) {
    const float ones[2] = {1, 1};
    /* Hand-computed: lr 0.1, gradient 1 twice, starting at p = 1. */
    CHECK_CLOSE(sgd_run(b, 1, ones, 2, 0.1f, 0, 0, 0, NULL), 0.8, 1e-6, 0, "sgd plain");
    CHECK_CLOSE(sgd_run(b, 1, ones, 2, 0.1f, 0.9f, 0, 0, NULL), 0.71, 1e-6, 0, "sgd momentum: buf 1 then 1.9");
    CHECK_CLOSE(sgd_run(b, 1, ones, 2, 0.1f, 0.9f, 0, 1, NULL), 0.539, 1e-6, 0, "sgd nesterov: updates 1.9 then 2.71");
    /* wd 0.5 and clip 0.5: step 1 g = 0.5 + 0.5 = 1, p = 0.9; step 2 g = 0.5 + 0.45 = 0.95,
     * buf = 0.9 + 0.95 = 1.85, p = 0.9 - 0.185 = 0.715. */
    const float clip = 0.5f;
    CHECK_CLOSE(sgd_run(b, 1, ones, 2, 0.1f, 0.9f, 0.5f, 0, &clip), 0.715, 1e-6, 0, "sgd weight decay and clip scale");

    /* A buffer of parameters against the PyTorch formulas in double, two steps each. */
    enum { N = 5 };
    float hp[N] = {1, -2, 0.5f, 3, -0.25f}, hg1[N] = {0.1f, -0.3f, 0.2f, 0, 2}, hg2[N] = {-0.2f, 0.1f, 0.4f, 1, -1};
    const float *grads[2] = {hg1, hg2};
    const float lr = 0.05f, mom = 0.8f, wd = 0.01f, b1 = 0.9f, b2 = 0.99f, eps = 1e-8f, scale = 0.75f;
    float *p = bf_test_upload(b, hp, N), *g = bf_test_upload(b, NULL, N), *buf = bf_test_upload(b, NULL, N);
    float *v = bf_test_upload(b, NULL, N), *sc = bf_test_upload(b, &scale, 1);
    double rp[N], rbuf[N], rm[N], rv[N];
    for (int nesterov = 0; nesterov < 2; nesterov++) {
        CHECK_OK(bf_to_device(b, p, hp, sizeof hp));
        for (int i = 0; i < N; i++) rp[i] = hp[i];
        for (int t = 0; t < 2; t++) {
            CHECK_OK(bf_to_device(b, g, grads[t], sizeof hg1));
            CHECK_OK(b->ops->sgd_update(b, p, g, buf, N, lr, mom, wd, nesterov, t == 0, sc));
            for (int i = 0; i < N; i++) {
                double gi = grads[t][i] * (double)scale + wd * rp[i];
                rbuf[i] = t == 0 ? gi : mom * rbuf[i] + gi;
                rp[i] -= lr * (nesterov ? gi + mom * rbuf[i] : rbuf[i]);
            }
        }
        check_buffer(b, p, rp, N, 1e-6, 1e-6, nesterov ? "sgd nesterov two steps" : "sgd momentum two steps");
    }

    /* AdamW, hand-computed: gradient 1 twice from p = 1 gives m_hat = v_hat = 1, so each step
     * moves by lr after the decay: 1 -> 0.999 - 0.1 = 0.899 -> 0.899*0.999 - 0.1 = 0.798101. */
    float one = 1, *p1 = bf_test_upload(b, &one, 1), *g1 = bf_test_upload(b, &one, 1);
    float *m1 = bf_test_upload(b, NULL, 1), *v1 = bf_test_upload(b, NULL, 1), got;
    for (long t = 1; t <= 2; t++) CHECK_OK(b->ops->adam_update(b, p1, g1, m1, v1, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, t, NULL));
    CHECK_OK(bf_to_host(b, &got, p1, sizeof got));
    CHECK_CLOSE(got, 0.798101, 1e-6, 0, "adamw constant gradient");
    bf_free(b, p1); bf_free(b, g1); bf_free(b, m1); bf_free(b, v1);

    CHECK_OK(bf_to_device(b, p, hp, sizeof hp));
    CHECK_OK(b->ops->fill(b, buf, 0, N)); /* m */
    for (int i = 0; i < N; i++) rp[i] = hp[i], rm[i] = 0, rv[i] = 0;
    for (int t = 1; t <= 2; t++) {
        CHECK_OK(bf_to_device(b, g, grads[t - 1], sizeof hg1));
        CHECK_OK(b->ops->adam_update(b, p, g, buf, v, N, lr, b1, b2, eps, wd, 1, t, sc));
        for (int i = 0; i < N; i++) {
            double gi = grads[t - 1][i] * (double)scale;
            rp[i] *= 1 - (double)lr * wd;
            rm[i] = b1 * rm[i] + (1 - (double)b1) * gi;
            rv[i] = b2 * rv[i] + (1 - (double)b2) * gi * gi;
            rp[i] -= lr * (rm[i] / (1 - pow(b1, t))) / (sqrt(rv[i] / (1 - pow(b2, t))) + eps);
        }
    }
    check_buffer(b, p, rp, N, 1e-6, 1e-5, "adamw two steps");
    check_buffer(b, buf, rm, N, 1e-7, 1e-5, "adamw first moment");
    check_buffer(b, v, rv, N, 1e-9, 1e-5, "adamw second moment");

    /* Adam (torch.optim.Adam: the weight decay coupled, g = grad*clip + wd*p before the moments, no
     * decay of p itself), four steps against the formulas in double, with a weight decay large enough
     * (0.2 at lr 0.05) that the coupled and decoupled decays end far apart; steps 2 and 4 clipped. */
    {
        const float *agrads[4] = {hg1, hg2, hg2, hg1};
        const float awd = 0.2f;
        float *wp = bf_test_upload(b, hp, N), *wm = bf_test_upload(b, NULL, N), *wv = bf_test_upload(b, NULL, N);
        double rw[N], rwm[N], rwv[N];
        CHECK_OK(bf_to_device(b, p, hp, sizeof hp));
        CHECK_OK(b->ops->fill(b, buf, 0, N));
        CHECK_OK(b->ops->fill(b, v, 0, N));
        for (int i = 0; i < N; i++) rp[i] = hp[i], rm[i] = 0, rv[i] = 0, rw[i] = hp[i], rwm[i] = 0, rwv[i] = 0;
        for (int t = 1; t <= 4; t++) {
            const float *clipd = t % 2 == 0 ? sc : NULL;
            const double cs = t % 2 == 0 ? scale : 1.0;
            CHECK_OK(bf_to_device(b, g, agrads[t - 1], sizeof hg1));
            CHECK_OK(b->ops->adam_update(b, p, g, buf, v, N, lr, b1, b2, eps, awd, 0, t, clipd));
            CHECK_OK(b->ops->adam_update(b, wp, g, wm, wv, N, lr, b1, b2, eps, awd, 1, t, clipd));
            for (int i = 0; i < N; i++) {
                double gi = agrads[t - 1][i] * cs + (double)awd * rp[i]; /* Adam: L2 into the gradient */
                rm[i] = b1 * rm[i] + (1 - (double)b1) * gi;
                rv[i] = b2 * rv[i] + (1 - (double)b2) * gi * gi;
                rp[i] -= lr * (rm[i] / (1 - pow(b1, t))) / (sqrt(rv[i] / (1 - pow(b2, t))) + eps);
                double wi = agrads[t - 1][i] * cs; /* AdamW: the same steps, p decayed instead */
                rw[i] *= 1 - (double)lr * awd;
                rwm[i] = b1 * rwm[i] + (1 - (double)b1) * wi;
                rwv[i] = b2 * rwv[i] + (1 - (double)b2) * wi * wi;
                rw[i] -= lr * (rwm[i] / (1 - pow(b1, t))) / (sqrt(rwv[i] / (1 - pow(b2, t))) + eps);
            }
        }
        check_buffer(b, p, rp, N, 1e-6, 1e-5, "adam (coupled weight decay) four steps");
        check_buffer(b, buf, rm, N, 1e-7, 1e-5, "adam first moment (of the gradient plus wd*p)");
        check_buffer(b, v, rv, N, 1e-9, 1e-5, "adam second moment");
        check_buffer(b, wp, rw, N, 1e-6, 1e-5, "adamw (decoupled weight decay) four steps beside it");
        double apart = 0;
        for (int i = 0; i < N; i++) apart = fmax(apart, fabs(rp[i] - rw[i]));
        CHECK(apart > 1e-2, "adam and adamw end apart with weight decay 0.2 (max difference %g)", apart);

        /* Without weight decay Adam and AdamW are one optimiser: bit for bit over three steps. */
        float *zp = bf_test_upload(b, hp, N), *zm = bf_test_upload(b, NULL, N), *zv = bf_test_upload(b, NULL, N);
        CHECK_OK(bf_to_device(b, wp, hp, sizeof hp));
        CHECK_OK(b->ops->fill(b, wm, 0, N));
        CHECK_OK(b->ops->fill(b, wv, 0, N));
        for (int t = 1; t <= 3; t++) {
            CHECK_OK(bf_to_device(b, g, agrads[t - 1], sizeof hg1));
            CHECK_OK(b->ops->adam_update(b, zp, g, zm, zv, N, lr, b1, b2, eps, 0, 0, t, t == 2 ? sc : NULL));
            CHECK_OK(b->ops->adam_update(b, wp, g, wm, wv, N, lr, b1, b2, eps, 0, 1, t, t == 2 ? sc : NULL));
        }
        float *za = bf_test_download(b, zp, N), *wa = bf_test_download(b, wp, N);
        float *zb = bf_test_download(b, zv, N), *wb = bf_test_download(b, wv, N);
        CHECK(memcmp(za, wa, N * sizeof(float)) == 0 && memcmp(zb, wb, N * sizeof(float)) == 0,
              "adam and adamw without weight decay: the same bits");
        free(za), free(wa), free(zb), free(wb);
        CHECK(b->ops->adam_update(b, zp, g, zm, zv, N, lr, b1, b2, eps, 0, 0, 0, NULL) == BF_ERR_ARG,
              "adam: step 0 refused (steps count from 1)");
        bf_free(b, zp); bf_free(b, zm); bf_free(b, zv);
        bf_free(b, wp); bf_free(b, wm); bf_free(b, wv);
    }

    /* A zero gradient after one step: the moments decay geometrically (0.5 per step for SGD's
     * buffer, beta1 = 0.5 for AdamW's m, beta2 = 0.5 for v here) and are stored as 0 once below
     * FLT_MIN, never as subnormals (ops.h); on the way down they are exact powers of two. */
    {
        float start = 1, zero = 0, state[3];
        float *sp = bf_test_upload(b, &start, 1), *sg = bf_test_upload(b, &start, 1), *sbuf = bf_test_upload(b, NULL, 1);
        float *ap = bf_test_upload(b, &start, 1), *am = bf_test_upload(b, NULL, 1), *av = bf_test_upload(b, NULL, 1);
        CHECK_OK(b->ops->sgd_update(b, sp, sg, sbuf, 1, 1e-3f, 0.5f, 0, 0, 1, NULL));
        CHECK_OK(b->ops->adam_update(b, ap, sg, am, av, 1, 1e-3f, 0.5f, 0.5f, 1e-8f, 0, 1, 1, NULL));
        CHECK_OK(bf_to_device(b, sg, &zero, sizeof zero));
        int subnormal = 0, last_normal = 1;
        for (long t = 2; t <= 160; t++) {
            CHECK_OK(b->ops->sgd_update(b, sp, sg, sbuf, 1, 1e-3f, 0.5f, 0, 0, 0, NULL));
            CHECK_OK(b->ops->adam_update(b, ap, sg, am, av, 1, 1e-3f, 0.5f, 0.5f, 1e-8f, 0, 1, t, NULL));
            CHECK_OK(bf_to_host(b, &state[0], sbuf, sizeof(float)));
            CHECK_OK(bf_to_host(b, &state[1], am, sizeof(float)));
            CHECK_OK(bf_to_host(b, &state[2], av, sizeof(float)));
            for (int k = 0; k < 3; k++) subnormal += state[k] != 0 && fabsf(state[k]) < FLT_MIN;
            if (t == 126) last_normal = state[0] == ldexpf(1.0f, -125) && state[1] == ldexpf(0.5f, -125);
        }
        CHECK(subnormal == 0 && last_normal && state[0] == 0 && state[1] == 0 && state[2] == 0,
              "momentum buffers decay to 2^-125 and then to exactly 0, never subnormal (%d subnormal values; "
              "at the end %g %g %g)", subnormal, state[0], state[1], state[2]);
        bf_free(b, sp); bf_free(b, sg); bf_free(b, sbuf); bf_free(b, ap); bf_free(b, am); bf_free(b, av);
    }

    /* Clipping factor: min(1, max_norm / (sqrt(sum_squares) + 1e-6)). */
    float sixteen = 16, factor;
    float *ss = bf_test_upload(b, &sixteen, 1);
    CHECK_OK(b->ops->clip_scale(b, ss, 2.0f, sc));
    CHECK_OK(bf_to_host(b, &factor, sc, sizeof factor));
    CHECK_CLOSE(factor, 2 / (4 + 1e-6), 1e-7, 1e-6, "clip_scale below 1");
    CHECK_OK(b->ops->clip_scale(b, ss, 10.0f, sc));
    CHECK_OK(bf_to_host(b, &factor, sc, sizeof factor));
    CHECK(factor == 1.0f, "clip_scale is at most 1 (got %g)", factor);
    bf_free(b, ss); bf_free(b, p); bf_free(b, g); bf_free(b, buf); bf_free(b, v); bf_free(b, sc);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(0, &b));
    if (!b) return bf_test_finish();
    CHECK(b->kind == BF_DEVICE_CPU && b->num_threads >= 1, "cpu backend kind and thread count");
    test_memory_and_elementwise(b);
    test_conv(b);
    test_batchnorm(b);
    test_pooling(b);
    test_linear(b);
    test_dropout(b);
    test_dropout2d(b);
    test_softmax_xent(b);
    test_optimisers(b);
    bf_backend_destroy(b);
    bf_backend_destroy(NULL);
    return bf_test_finish();
}
