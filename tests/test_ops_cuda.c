/* test_ops_cuda.c - every op of the CUDA backend against the CPU reference backend.
 *
 * The same random inputs go through both backends and the outputs are compared with an
 * absolute+relative tolerance (bf_test_max_violation <= 1 passes); the largest violation of each
 * comparison is printed. Outputs start filled with garbage on both sides, so an op that does not
 * overwrite all of its output fails. Skipped (exit 77) without a CUDA build or device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;

/* Tolerances: elementwise, reductions/conv/linear/bn. */
#define EW_ATOL 1e-5
#define EW_RTOL 1e-4
#define RED_ATOL 1e-4
#define RED_RTOL 1e-3

/* int32 buffers (labels, argmax). */
typedef struct ipair {
    int32_t *c, *g;
    size_t n;
} ipair;

static ipair ipair_from(const int32_t *host, size_t n) {
    ipair p = {NULL, NULL, n};
    void *c = NULL, *g = NULL;
    if (bf_alloc(cpu, n * sizeof(int32_t), &c) != BF_OK || bf_alloc(gpu, n * sizeof(int32_t), &g) != BF_OK) {
        fprintf(stderr, "cannot allocate %zu ints: %s\n", n, bf_last_error());
        exit(1);
    }
    if (host) {
        CHECK_OK(bf_to_device(cpu, c, host, n * sizeof(int32_t)));
        CHECK_OK(bf_to_device(gpu, g, host, n * sizeof(int32_t)));
    }
    p.c = c;
    p.g = g;
    return p;
}

static void ipair_free(ipair *p) {
    bf_free(cpu, p->c);
    bf_free(gpu, p->g);
}

static void compare_ints(const char *what, ipair p) {
    int32_t *a = malloc(p.n * sizeof(int32_t) + 16), *b = malloc(p.n * sizeof(int32_t) + 16);
    if (!a || !b) exit(1);
    CHECK_OK(bf_to_host(cpu, a, p.c, p.n * sizeof(int32_t)));
    CHECK_OK(bf_to_host(gpu, b, p.g, p.n * sizeof(int32_t)));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < p.n; i++)
        if (a[i] != b[i]) {
            if (!bad) first = i;
            bad++;
        }
    printf("  %-44s %zu of %zu differ\n", what, bad, p.n);
    CHECK(bad == 0, "%s: %zu differ, first %zu: cpu %d cuda %d", what, bad, first, (int)a[first], (int)b[first]);
    free(a);
    free(b);
}

/* ---- elementwise and reductions ---- */

/* Dropout forward and backward on both backends with the same draws: identical masks and scaling. */
static void compare_dropout(const char *what, pair x, pair dy, pair y, pair dx, size_t n, size_t group, float p,
                            bf_draws draws) {
    char name[160];
    CHECK_OK(cpu->ops->dropout_forward(cpu, x.c, y.c, n, group, p, draws));
    CHECK_OK(gpu->ops->dropout_forward(gpu, x.g, y.g, n, group, p, draws));
    snprintf(name, sizeof name, "dropout_forward %s", what);
    pair_compare_exact(name, y);
    CHECK_OK(cpu->ops->dropout_backward(cpu, dy.c, dx.c, n, group, p, draws));
    CHECK_OK(gpu->ops->dropout_backward(gpu, dy.g, dx.g, n, group, p, draws));
    snprintf(name, sizeof name, "dropout_backward %s", what);
    pair_compare_exact(name, dx);
}

static void test_elementwise(void) {
    printf("elementwise\n");
    const size_t n = 100003;
    pair x = pair_rand(n, -2, 2), x1 = pair_rand(n, -2, 2), y = pair_out(n);

    CHECK_OK(cpu->ops->fill(cpu, y.c, 0.375f, n));
    CHECK_OK(gpu->ops->fill(gpu, y.g, 0.375f, n));
    pair_compare_exact("fill", y);

    CHECK_OK(cpu->ops->copy(cpu, y.c, x.c, n * sizeof(float)));
    CHECK_OK(gpu->ops->copy(gpu, y.g, x.g, n * sizeof(float)));
    CHECK_OK(cpu->ops->scale(cpu, y.c, -1.7f, n));
    CHECK_OK(gpu->ops->scale(gpu, y.g, -1.7f, n));
    pair_compare("copy + scale", y, EW_ATOL, EW_RTOL);

    CHECK_OK(cpu->ops->add(cpu, x.c, x1.c, y.c, n));
    CHECK_OK(gpu->ops->add(gpu, x.g, x1.g, y.g, n));
    pair_compare("add", y, EW_ATOL, EW_RTOL);

    CHECK_OK(cpu->ops->add(cpu, y.c, x1.c, y.c, n)); /* y may alias */
    CHECK_OK(gpu->ops->add(gpu, y.g, x1.g, y.g, n));
    pair_compare("add (aliased output)", y, EW_ATOL, EW_RTOL);

    CHECK_OK(cpu->ops->add_inplace(cpu, y.c, x.c, n));
    CHECK_OK(gpu->ops->add_inplace(gpu, y.g, x.g, n));
    pair_compare("add_inplace", y, EW_ATOL, EW_RTOL);

    CHECK_OK(cpu->ops->axpy(cpu, 0.3f, x.c, y.c, n));
    CHECK_OK(gpu->ops->axpy(gpu, 0.3f, x.g, y.g, n));
    pair_compare_exact("axpy", y);

    /* reductions into device scalars */
    const float acc0 = 1.5f;
    pair s = pair_from(&acc0, 1);
    CHECK_OK(cpu->ops->sum_squares(cpu, x.c, n, s.c));
    CHECK_OK(gpu->ops->sum_squares(gpu, x.g, n, s.g));
    pair_compare("sum_squares", s, 1e-6, 1e-5);
    CHECK_OK(cpu->ops->sum_squares(cpu, x.c, 7, s.c));
    CHECK_OK(gpu->ops->sum_squares(gpu, x.g, 7, s.g));
    pair_compare("sum_squares (n=7)", s, 1e-6, 1e-5);

    pair acc = pair_from(&acc0, 1);
    CHECK_OK(cpu->ops->accumulate_sum(cpu, x.c, n, acc.c));
    CHECK_OK(gpu->ops->accumulate_sum(gpu, x.g, n, acc.g));
    CHECK_OK(cpu->ops->accumulate_sum(cpu, x1.c, n, acc.c));
    CHECK_OK(gpu->ops->accumulate_sum(gpu, x1.g, n, acc.g));
    pair_compare("accumulate_sum (twice)", acc, 1e-4, 1e-5);

    /* repeatability of the device reduction */
    float r1 = 0, r2 = 0;
    CHECK_OK(gpu->ops->sum_squares(gpu, x.g, n, s.g));
    CHECK_OK(bf_to_host(gpu, &r1, s.g, sizeof r1));
    CHECK_OK(gpu->ops->sum_squares(gpu, x.g, n, s.g));
    CHECK_OK(bf_to_host(gpu, &r2, s.g, sizeof r2));
    CHECK(memcmp(&r1, &r2, sizeof r1) == 0, "sum_squares does not repeat: %.9g vs %.9g", r1, r2);

    /* relu */
    pair dy = pair_rand(n, -1, 1), dx = pair_out(n);
    CHECK_OK(cpu->ops->relu_forward(cpu, x.c, y.c, n));
    CHECK_OK(gpu->ops->relu_forward(gpu, x.g, y.g, n));
    pair_compare_exact("relu_forward", y);
    CHECK_OK(cpu->ops->relu_backward(cpu, y.c, dy.c, dx.c, n));
    CHECK_OK(gpu->ops->relu_backward(gpu, y.g, dy.g, dx.g, n));
    pair_compare_exact("relu_backward", dx);

    /* dropout: identical masks, so identical outputs */
    const uint64_t seed = 0x5eed1234abcdull;
    compare_dropout("p=0.3", x, dy, y, dx, n, 1, 0.3f, bf_draws_of(seed));
    CHECK_OK(cpu->ops->dropout_forward(cpu, x.c, y.c, n, 1, 0.0f, bf_draws_of(seed)));
    CHECK_OK(gpu->ops->dropout_forward(gpu, x.g, y.g, n, 1, 0.0f, bf_draws_of(seed)));
    pair_compare_exact("dropout_forward p=0 (copy)", y);
    /* a batch at a sample offset, its tensor in time steps */
    compare_dropout("p=0.3 at a sample offset, over time steps", x, dy, y, dx, n, 1, 0.3f,
                    (bf_draws){seed, 12345, n / 3 + 1});
    /* Dropout2d: whole planes of 49 elements, 2040 of them over 2 time steps, at a sample offset */
    const size_t planes = 49 * 2040;
    const bf_draws plane_draws = {seed, 49 * 7, planes / 2};
    compare_dropout("p=0.3 by planes of 49 (Dropout2d)", x, dy, y, dx, planes, 49, 0.3f, plane_draws);
    CHECK(gpu->ops->dropout_forward(gpu, x.g, y.g, n, 49, 0.3f, plane_draws) == BF_ERR_ARG,
          "dropout refuses %zu elements in groups of 49", n);

    pair_free(&x);
    pair_free(&x1);
    pair_free(&y);
    pair_free(&s);
    pair_free(&acc);
    pair_free(&dy);
    pair_free(&dx);
}

/* ---- convolution ---- */

static void test_conv_case(const char *name, int n, int c_in, int h, int w, int c_out, int k_h, int k_w, int stride,
                           int pad, int groups, int with_bias) {
    bf_conv2d_shape s = {n, c_in, h, w, c_out, k_h, k_w, stride, pad, groups, 0, 0};
    CHECK_OK(bf_conv2d_shape_init(&s));
    printf("conv %s: n=%d %d->%d %dx%d k=%dx%d stride=%d pad=%d groups=%d -> %dx%d%s\n", name, n, c_in, c_out, h, w,
           k_h, k_w, stride, pad, groups, s.h_out, s.w_out, with_bias ? " +bias" : "");
    const size_t nx = (size_t)n * c_in * h * w, ny = (size_t)n * c_out * s.h_out * s.w_out;
    const size_t nw = (size_t)c_out * (c_in / groups) * k_h * k_w;
    pair x = pair_rand(nx, -1, 1), wt = pair_rand(nw, -0.5f, 0.5f), bias = pair_rand((size_t)c_out, -1, 1);
    pair y = pair_out(ny), dy = pair_rand(ny, -1, 1), dx = pair_out(nx), dw = pair_out(nw), db = pair_out((size_t)c_out);
    char what[128];

    CHECK_OK(cpu->ops->conv2d_forward(cpu, &s, x.c, wt.c, with_bias ? bias.c : NULL, y.c));
    CHECK_OK(gpu->ops->conv2d_forward(gpu, &s, x.g, wt.g, with_bias ? bias.g : NULL, y.g));
    snprintf(what, sizeof what, "conv %s forward", name);
    pair_compare(what, y, RED_ATOL, RED_RTOL);

    /* second call: the cached algorithm, and the same result */
    float *first = bf_test_download(gpu, y.g, ny);
    CHECK_OK(gpu->ops->fill(gpu, y.g, 12345.0f, ny));
    CHECK_OK(gpu->ops->conv2d_forward(gpu, &s, x.g, wt.g, with_bias ? bias.g : NULL, y.g));
    snprintf(what, sizeof what, "conv %s forward (cached algorithm)", name);
    pair_compare(what, y, RED_ATOL, RED_RTOL);
    float *second = bf_test_download(gpu, y.g, ny);
    CHECK(first && second && memcmp(first, second, ny * sizeof(float)) == 0,
          "conv %s: the forward pass does not repeat bit for bit", name);
    free(first);
    free(second);

    CHECK_OK(cpu->ops->conv2d_backward_data(cpu, &s, dy.c, wt.c, dx.c));
    CHECK_OK(gpu->ops->conv2d_backward_data(gpu, &s, dy.g, wt.g, dx.g));
    snprintf(what, sizeof what, "conv %s backward data", name);
    pair_compare(what, dx, RED_ATOL, RED_RTOL);

    CHECK_OK(cpu->ops->conv2d_backward_filter(cpu, &s, x.c, dy.c, dw.c, with_bias ? db.c : NULL));
    CHECK_OK(gpu->ops->conv2d_backward_filter(gpu, &s, x.g, dy.g, dw.g, with_bias ? db.g : NULL));
    snprintf(what, sizeof what, "conv %s backward filter", name);
    pair_compare(what, dw, RED_ATOL, RED_RTOL);
    if (with_bias) {
        snprintf(what, sizeof what, "conv %s dbias", name);
        pair_compare(what, db, RED_ATOL, RED_RTOL);
    }

    /* the cached backward algorithms again */
    CHECK_OK(gpu->ops->fill(gpu, dx.g, 777.0f, nx));
    CHECK_OK(gpu->ops->conv2d_backward_data(gpu, &s, dy.g, wt.g, dx.g));
    snprintf(what, sizeof what, "conv %s backward data (cached)", name);
    pair_compare(what, dx, RED_ATOL, RED_RTOL);

    /* added onto what dx holds (cuDNN's beta = 1; the flex max joint's pool share is there) */
    CHECK_OK(cpu->ops->fill(cpu, dx.c, 0.375f, nx));
    CHECK_OK(gpu->ops->fill(gpu, dx.g, 0.375f, nx));
    CHECK_OK(cpu->ops->conv2d_backward_data_add(cpu, &s, dy.c, wt.c, dx.c));
    CHECK_OK(gpu->ops->conv2d_backward_data_add(gpu, &s, dy.g, wt.g, dx.g));
    snprintf(what, sizeof what, "conv %s backward data added", name);
    pair_compare(what, dx, RED_ATOL, RED_RTOL);

    pair_free(&x);
    pair_free(&wt);
    pair_free(&bias);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
    pair_free(&dw);
    pair_free(&db);
}

/* conv2d_backward_data_add as the first call of a shape nothing else has used: the algorithm search
 * then runs on dx, which must come back holding what it held (the flex max joint's pool share), so
 * the sum is dx + the result; then again from the cache. */
static void test_conv_add_first(void) {
    bf_conv2d_shape s = {3, 6, 9, 7, 10, 3, 3, 1, 1, 1, 0, 0};
    CHECK_OK(bf_conv2d_shape_init(&s));
    const size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in, ny = (size_t)s.n * s.c_out * s.h_out * s.w_out;
    const size_t nw = (size_t)s.c_out * s.c_in * s.k_h * s.k_w;
    pair wt = pair_rand(nw, -0.5f, 0.5f), dy = pair_rand(ny, -1, 1), dx = pair_rand(nx, -1, 1);
    for (int call = 0; call < 2; call++) {
        CHECK_OK(cpu->ops->conv2d_backward_data_add(cpu, &s, dy.c, wt.c, dx.c));
        CHECK_OK(gpu->ops->conv2d_backward_data_add(gpu, &s, dy.g, wt.g, dx.g));
        pair_compare(call ? "conv backward data added, cached" : "conv backward data added, first call of its shape",
                     dx, RED_ATOL, RED_RTOL);
    }
    pair_free(&wt);
    pair_free(&dy);
    pair_free(&dx);
}

static void test_conv(void) {
    test_conv_add_first();
    test_conv_case("3x3/s2/p1/g2", 2, 4, 9, 9, 6, 3, 3, 2, 1, 2, 1);
    test_conv_case("1x1", 3, 5, 6, 7, 4, 1, 1, 1, 0, 1, 1);
    test_conv_case("3x3/s1/p1", 4, 16, 16, 16, 32, 3, 3, 1, 1, 1, 0);
    test_conv_case("5x3/s1/p2", 2, 3, 11, 8, 5, 5, 3, 1, 2, 1, 1);
    test_conv_case("depthwise 3x3", 2, 8, 10, 10, 8, 3, 3, 1, 1, 8, 1);
}

/* ---- batch normalisation ---- */

/* repeats > 1: the batch stands for that many copies (bf_bn_shape.repeats): the running variance's
 * unbiased correction counts them, on a count small enough (n*hw = 4) for the factor to show.
 * var_floor > 0 ([model] bn_var_floor): updated running variances below it are raised to it. */
static void test_bn_case(int n, int c, int hw, float lo, float hi, int repeats, float var_floor) {
    bf_bn_shape s = {.n = n, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f, .repeats = repeats, .var_floor = var_floor};
    printf("batchnorm n=%d c=%d hw=%d repeats=%d var_floor=%g, x in [%g, %g)\n", n, c, hw, repeats, var_floor, lo, hi);
    const size_t nx = (size_t)n * c * hw;
    pair x = pair_rand(nx, lo, hi), gamma = pair_rand((size_t)c, 0.5f, 1.5f), beta = pair_rand((size_t)c, -1, 1);
    pair rmean = pair_rand((size_t)c, -0.5f, 0.5f), rvar = pair_rand((size_t)c, 0.5f, 2.0f);
    pair y = pair_out(nx), smean = pair_out((size_t)c), sinv = pair_out((size_t)c);
    pair dy = pair_rand(nx, -1, 1), dx = pair_out(nx), dgamma = pair_out((size_t)c), dbeta = pair_out((size_t)c);

    CHECK_OK(cpu->ops->batchnorm_forward_train(cpu, &s, x.c, gamma.c, beta.c, y.c, smean.c, sinv.c, rmean.c, rvar.c));
    CHECK_OK(gpu->ops->batchnorm_forward_train(gpu, &s, x.g, gamma.g, beta.g, y.g, smean.g, sinv.g, rmean.g, rvar.g));
    pair_compare("bn train y", y, RED_ATOL, RED_RTOL);
    pair_compare("bn train save_mean", smean, RED_ATOL, RED_RTOL);
    pair_compare("bn train save_invstd", sinv, RED_ATOL, RED_RTOL);
    pair_compare("bn train running_mean", rmean, RED_ATOL, RED_RTOL);
    pair_compare("bn train running_var", rvar, RED_ATOL, RED_RTOL);

    /* the output again from the saved statistics: the train output's bits on each backend */
    pair y2 = pair_out(nx);
    CHECK_OK(cpu->ops->batchnorm_forward_saved(cpu, &s, x.c, gamma.c, beta.c, smean.c, sinv.c, y2.c));
    CHECK_OK(gpu->ops->batchnorm_forward_saved(gpu, &s, x.g, gamma.g, beta.g, smean.g, sinv.g, y2.g));
    pair_compare("bn forward_saved y", y2, RED_ATOL, RED_RTOL);
    {
        float *a = bf_test_download(gpu, y.g, nx), *b2 = bf_test_download(gpu, y2.g, nx);
        CHECK(a && b2 && memcmp(a, b2, nx * sizeof(float)) == 0, "bn forward_saved on CUDA gives its train output bit for bit");
        free(a);
        free(b2);
    }
    pair_free(&y2);
    CHECK_OK(cpu->ops->batchnorm_forward_eval(cpu, &s, x.c, gamma.c, beta.c, rmean.c, rvar.c, y.c));
    CHECK_OK(gpu->ops->batchnorm_forward_eval(gpu, &s, x.g, gamma.g, beta.g, rmean.g, rvar.g, y.g));
    pair_compare("bn eval y", y, RED_ATOL, RED_RTOL);

    CHECK_OK(cpu->ops->batchnorm_backward(cpu, &s, x.c, dy.c, gamma.c, smean.c, sinv.c, dx.c, dgamma.c, dbeta.c));
    CHECK_OK(gpu->ops->batchnorm_backward(gpu, &s, x.g, dy.g, gamma.g, smean.g, sinv.g, dx.g, dgamma.g, dbeta.g));
    pair_compare("bn backward dx", dx, RED_ATOL, RED_RTOL);
    pair_compare("bn backward dgamma", dgamma, RED_ATOL, RED_RTOL);
    pair_compare("bn backward dbeta", dbeta, RED_ATOL, RED_RTOL);

    /* training without the optional outputs */
    CHECK_OK(gpu->ops->batchnorm_forward_train(gpu, &s, x.g, gamma.g, beta.g, y.g, NULL, NULL, NULL, NULL));
    CHECK_OK(cpu->ops->batchnorm_forward_train(cpu, &s, x.c, gamma.c, beta.c, y.c, NULL, NULL, NULL, NULL));
    pair_compare("bn train y (no saved/running stats)", y, RED_ATOL, RED_RTOL);

    pair *all[] = {&x, &gamma, &beta, &rmean, &rvar, &y, &smean, &sinv, &dy, &dx, &dgamma, &dbeta};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

static void test_batchnorm(void) {
    test_bn_case(4, 3, 25, -1, 1, 0, 0);
    test_bn_case(16, 4, 1024, 2, 4, 0, 0); /* several reduction chunks per channel, a non-zero mean */
    test_bn_case(32, 10, 1, -3, 3, 0, 0);  /* BN after a linear layer */
    test_bn_case(2, 3, 2, -1, 1, 4, 0);    /* 4 values standing for 16: 16/15, not 4/3 */
    test_bn_case(2, 512, 1, -1, 1, 0, 0);  /* two values per channel: ResNet-50 at 32x32, batch 2, layer4 */
    test_bn_case(4, 64, 25, -1, 1, 0, 1.0f); /* updates of about 0.5 to 1.8: a third raised to the floor */
}

/* ---- pooling ---- */

/* specials: some inputs NaN (each its own payload) or -0, and some output gradients -0, where the
 * rules show: a NaN wins its window once, -0 ties +0 (the first stays), and a routed -0 arrives as
 * +0 on both backends. */
static void test_pool_case(const char *name, int n, int c, int h, int w, int k, int stride, int pad, int specials) {
    bf_pool_shape s = {n, c, h, w, k, stride, pad, 0, 0};
    CHECK_OK(bf_pool_shape_init(&s));
    printf("pool %s: n=%d c=%d %dx%d k=%d stride=%d pad=%d -> %dx%d\n", name, n, c, h, w, k, stride, pad, s.h_out,
           s.w_out);
    const size_t nx = (size_t)n * c * h * w, ny = (size_t)n * c * s.h_out * s.w_out;
    /* coarse values so that windows hold ties: the first-maximum rule is exercised */
    float *hx = malloc(nx * sizeof(float));
    if (!hx) exit(1);
    bf_test_fill_uniform(hx, nx, 0, 4, pair_next_seed());
    for (size_t i = 0; i < nx; i++) hx[i] = floorf(hx[i]) - 2.0f;
    for (size_t i = 0; specials && i < nx; i++) {
        if (i % 37 == 5) {
            uint32_t bits = 0x7fc00000u | (uint32_t)(i & 0xffff); /* a quiet NaN naming its element */
            memcpy(&hx[i], &bits, sizeof bits);
        } else if (i % 11 == 3) {
            hx[i] = -0.0f;
        }
    }
    pair x = pair_from(hx, nx);
    free(hx);
    pair y = pair_out(ny), dy = pair_rand(ny, -1, 1), dx = pair_out(nx);
    if (specials) { /* -0 gradients: rewrite every fifth on both sides */
        float *hdy = malloc(ny * sizeof(float));
        if (!hdy) exit(1);
        CHECK_OK(bf_to_host(cpu, hdy, dy.c, ny * sizeof(float)));
        for (size_t i = 0; i < ny; i += 5) hdy[i] = -0.0f;
        CHECK_OK(bf_to_device(cpu, dy.c, hdy, ny * sizeof(float)));
        CHECK_OK(bf_to_device(gpu, dy.g, hdy, ny * sizeof(float)));
        free(hdy);
    }
    ipair am = ipair_from(NULL, ny);
    char what[128];

    CHECK_OK(cpu->ops->maxpool_forward(cpu, &s, x.c, y.c, am.c));
    CHECK_OK(gpu->ops->maxpool_forward(gpu, &s, x.g, y.g, am.g));
    snprintf(what, sizeof what, "maxpool %s forward", name);
    pair_compare_exact(what, y);
    snprintf(what, sizeof what, "maxpool %s argmax", name);
    compare_ints(what, am);
    CHECK_OK(cpu->ops->maxpool_backward(cpu, &s, dy.c, am.c, dx.c));
    CHECK_OK(gpu->ops->maxpool_backward(gpu, &s, dy.g, am.g, dx.g));
    snprintf(what, sizeof what, "maxpool %s backward", name);
    pair_compare_exact(what, dx); /* each input's terms in the same order on both backends */

    pair xr = pair_rand(nx, -1, 1);
    CHECK_OK(cpu->ops->avgpool_forward(cpu, &s, xr.c, y.c));
    CHECK_OK(gpu->ops->avgpool_forward(gpu, &s, xr.g, y.g));
    snprintf(what, sizeof what, "avgpool %s forward", name);
    pair_compare(what, y, EW_ATOL, EW_RTOL);
    CHECK_OK(cpu->ops->fill(cpu, dx.c, 999.0f, nx));
    CHECK_OK(gpu->ops->fill(gpu, dx.g, 999.0f, nx));
    CHECK_OK(cpu->ops->avgpool_backward(cpu, &s, dy.c, dx.c));
    CHECK_OK(gpu->ops->avgpool_backward(gpu, &s, dy.g, dx.g));
    snprintf(what, sizeof what, "avgpool %s backward", name);
    pair_compare(what, dx, EW_ATOL, EW_RTOL);

    pair_free(&x);
    pair_free(&xr);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
    ipair_free(&am);
}

static void test_pool(void) {
    test_pool_case("3x3/s2/p1 (overlapping)", 2, 3, 9, 9, 3, 2, 1, 0);
    test_pool_case("2x2/s2", 2, 3, 8, 7, 2, 2, 0, 0);
    /* VGG's pools: rows of whole float4s take the two-outputs-per-thread kernels, 14 wide the general */
    test_pool_case("2x2/s2 on float4 rows", 2, 5, 12, 16, 2, 2, 0, 1);
    test_pool_case("2x2/s2 VGG conv3", 2, 3, 56, 56, 2, 2, 0, 1);
    test_pool_case("2x2/s2 VGG conv5", 2, 3, 14, 14, 2, 2, 0, 1);
    test_pool_case("3x3/s1/p1", 1, 2, 5, 6, 3, 1, 1, 1);

    const int n = 3, c = 5, hw = 49;
    printf("global avgpool n=%d c=%d hw=%d\n", n, c, hw);
    pair x = pair_rand((size_t)n * c * hw, -1, 1), y = pair_out((size_t)n * c);
    pair dy = pair_rand((size_t)n * c, -1, 1), dx = pair_out((size_t)n * c * hw);
    CHECK_OK(cpu->ops->global_avgpool_forward(cpu, n, c, hw, x.c, y.c));
    CHECK_OK(gpu->ops->global_avgpool_forward(gpu, n, c, hw, x.g, y.g));
    pair_compare("global avgpool forward", y, EW_ATOL, EW_RTOL);
    CHECK_OK(cpu->ops->global_avgpool_backward(cpu, n, c, hw, dy.c, dx.c));
    CHECK_OK(gpu->ops->global_avgpool_backward(gpu, n, c, hw, dy.g, dx.g));
    pair_compare("global avgpool backward", dx, EW_ATOL, EW_RTOL);
    pair_free(&x);
    pair_free(&y);
    pair_free(&dy);
    pair_free(&dx);
}

/* ---- linear ---- */

static void test_linear_case(int n, int in, int out) {
    bf_linear_shape s = {n, in, out};
    printf("linear n=%d in=%d out=%d\n", n, in, out);
    pair x = pair_rand((size_t)n * in, -1, 1), w = pair_rand((size_t)out * in, -0.5f, 0.5f);
    pair bias = pair_rand((size_t)out, -1, 1), y = pair_out((size_t)n * out), dy = pair_rand((size_t)n * out, -1, 1);
    pair dx = pair_out((size_t)n * in), dw = pair_out((size_t)out * in), db = pair_out((size_t)out);

    CHECK_OK(cpu->ops->linear_forward(cpu, &s, x.c, w.c, bias.c, y.c));
    CHECK_OK(gpu->ops->linear_forward(gpu, &s, x.g, w.g, bias.g, y.g));
    pair_compare("linear forward (bias)", y, RED_ATOL, RED_RTOL);
    CHECK_OK(cpu->ops->linear_forward(cpu, &s, x.c, w.c, NULL, y.c));
    CHECK_OK(gpu->ops->linear_forward(gpu, &s, x.g, w.g, NULL, y.g));
    pair_compare("linear forward (no bias)", y, RED_ATOL, RED_RTOL);

    CHECK_OK(cpu->ops->linear_backward(cpu, &s, x.c, w.c, dy.c, dx.c, dw.c, db.c));
    CHECK_OK(gpu->ops->linear_backward(gpu, &s, x.g, w.g, dy.g, dx.g, dw.g, db.g));
    pair_compare("linear backward dx", dx, RED_ATOL, RED_RTOL);
    pair_compare("linear backward dw", dw, RED_ATOL, RED_RTOL);
    pair_compare("linear backward dbias", db, RED_ATOL, RED_RTOL);

    CHECK_OK(cpu->ops->fill(cpu, dw.c, 5.0f, dw.n));
    CHECK_OK(gpu->ops->fill(gpu, dw.g, 5.0f, dw.n));
    CHECK_OK(cpu->ops->linear_backward(cpu, &s, x.c, w.c, dy.c, NULL, dw.c, NULL));
    CHECK_OK(gpu->ops->linear_backward(gpu, &s, x.g, w.g, dy.g, NULL, dw.g, NULL));
    pair_compare("linear backward dw (no dx, no dbias)", dw, RED_ATOL, RED_RTOL);
    CHECK_OK(cpu->ops->fill(cpu, dx.c, 5.0f, dx.n));
    CHECK_OK(gpu->ops->fill(gpu, dx.g, 5.0f, dx.n));
    CHECK_OK(cpu->ops->linear_backward(cpu, &s, NULL, w.c, dy.c, dx.c, NULL, NULL));
    CHECK_OK(gpu->ops->linear_backward(gpu, &s, NULL, w.g, dy.g, dx.g, NULL, NULL));
    pair_compare("linear backward dx alone (x NULL: BU-TD's transposed passes)", dx, RED_ATOL, RED_RTOL);
    CHECK(gpu->ops->linear_backward(gpu, &s, NULL, w.g, dy.g, dx.g, dw.g, NULL) == BF_ERR_ARG,
          "CUDA linear_backward accepted NULL x with dw");

    pair *all[] = {&x, &w, &bias, &y, &dy, &dx, &dw, &db};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

static void test_linear(void) {
    test_linear_case(7, 33, 10);
    test_linear_case(64, 256, 100);
}

/* ---- loss and metrics ---- */

static void test_loss_case(int n, int k, float smoothing, int quantise) {
    printf("softmax_xent / topk n=%d k=%d smoothing=%g%s\n", n, k, smoothing, quantise ? " (tied logits)" : "");
    float *hz = malloc((size_t)n * k * sizeof(float));
    int32_t *hl = malloc((size_t)n * sizeof(int32_t));
    if (!hz || !hl) exit(1);
    bf_test_fill_uniform(hz, (size_t)n * k, -4, 4, pair_next_seed());
    if (quantise)
        for (size_t i = 0; i < (size_t)n * k; i++) hz[i] = floorf(hz[i]);
    for (int i = 0; i < n; i++) hl[i] = (int32_t)((i * 7 + 3) % k);
    pair z = pair_from(hz, (size_t)n * k);
    ipair labels = ipair_from(hl, (size_t)n);
    free(hz);
    free(hl);
    pair loss = pair_out((size_t)n), dz = pair_out((size_t)n * k);
    pair c1 = pair_out((size_t)n), c5 = pair_out((size_t)n);
    const float grad_scale = 1.0f / (float)n;

    CHECK_OK(cpu->ops->softmax_xent(cpu, n, k, z.c, labels.c, smoothing, grad_scale, loss.c, dz.c));
    CHECK_OK(gpu->ops->softmax_xent(gpu, n, k, z.g, labels.g, smoothing, grad_scale, loss.g, dz.g));
    pair_compare("softmax_xent losses", loss, EW_ATOL, EW_RTOL);
    pair_compare("softmax_xent dlogits", dz, 1e-7, EW_RTOL);
    CHECK_OK(cpu->ops->softmax_xent(cpu, n, k, z.c, labels.c, 0.0f, 1.0f, loss.c, NULL));
    CHECK_OK(gpu->ops->softmax_xent(gpu, n, k, z.g, labels.g, 0.0f, 1.0f, loss.g, NULL));
    pair_compare("softmax_xent losses (no smoothing, no dlogits)", loss, EW_ATOL, EW_RTOL);

    CHECK_OK(cpu->ops->topk_correct(cpu, n, k, z.c, labels.c, c1.c, c5.c));
    CHECK_OK(gpu->ops->topk_correct(gpu, n, k, z.g, labels.g, c1.g, c5.g));
    pair_compare_exact("topk correct1", c1);
    pair_compare_exact("topk correct5", c5);

    pair_free(&z);
    pair_free(&loss);
    pair_free(&dz);
    pair_free(&c1);
    pair_free(&c5);
    ipair_free(&labels);
}

static void test_loss(void) {
    test_loss_case(9, 10, 0.1f, 0);
    test_loss_case(64, 10, 0.1f, 1);
    test_loss_case(5, 3, 0.2f, 1);
    test_loss_case(3, 1000, 0.1f, 0);
}

/* ---- optimisers ---- */

static void test_optim(void) {
    printf("optimisers\n");
    const size_t n = 10007;
    pair p = pair_rand(n, -1, 1), g = pair_rand(n, -1, 1), buf = pair_out(n);
    const float half = 0.5f;
    pair gs = pair_from(&half, 1);

    /* SGD: nesterov + weight decay, first step then a second step with gradient scaling */
    CHECK_OK(cpu->ops->sgd_update(cpu, p.c, g.c, buf.c, n, 0.1f, 0.9f, 1e-4f, 1, 1, NULL));
    CHECK_OK(gpu->ops->sgd_update(gpu, p.g, g.g, buf.g, n, 0.1f, 0.9f, 1e-4f, 1, 1, NULL));
    pair_compare("sgd nesterov first step params", p, EW_ATOL, EW_RTOL);
    pair_compare("sgd nesterov first step buffer", buf, EW_ATOL, EW_RTOL);
    CHECK_OK(cpu->ops->sgd_update(cpu, p.c, g.c, buf.c, n, 0.1f, 0.9f, 1e-4f, 1, 0, gs.c));
    CHECK_OK(gpu->ops->sgd_update(gpu, p.g, g.g, buf.g, n, 0.1f, 0.9f, 1e-4f, 1, 0, gs.g));
    pair_compare("sgd nesterov step 2 (grad_scale) params", p, EW_ATOL, EW_RTOL);
    pair_compare("sgd nesterov step 2 (grad_scale) buffer", buf, EW_ATOL, EW_RTOL);
    CHECK_OK(cpu->ops->sgd_update(cpu, p.c, g.c, buf.c, n, 0.05f, 0.9f, 5e-4f, 0, 0, NULL));
    CHECK_OK(gpu->ops->sgd_update(gpu, p.g, g.g, buf.g, n, 0.05f, 0.9f, 5e-4f, 0, 0, NULL));
    pair_compare("sgd momentum params", p, EW_ATOL, EW_RTOL);
    pair_compare("sgd momentum buffer", buf, EW_ATOL, EW_RTOL);
    CHECK_OK(cpu->ops->sgd_update(cpu, p.c, g.c, NULL, n, 0.05f, 0.0f, 0.0f, 0, 0, NULL));
    CHECK_OK(gpu->ops->sgd_update(gpu, p.g, g.g, NULL, n, 0.05f, 0.0f, 0.0f, 0, 0, NULL));
    pair_compare("sgd plain (no momentum buffer) params", p, EW_ATOL, EW_RTOL);

    /* AdamW: steps 1..3, comparing after 1 and after 3 */
    pair m = pair_from(NULL, n), v = pair_from(NULL, n);
    pair g2 = pair_rand(n, -1, 1);
    for (long step = 1; step <= 3; step++) {
        const pair *gr = step == 2 ? &g2 : &g;
        const float *scale_c = step == 3 ? gs.c : NULL, *scale_g = step == 3 ? gs.g : NULL;
        CHECK_OK(cpu->ops->adam_update(cpu, p.c, gr->c, m.c, v.c, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, step, scale_c));
        CHECK_OK(gpu->ops->adam_update(gpu, p.g, gr->g, m.g, v.g, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, step, scale_g));
        if (step == 1 || step == 3) {
            char what[96];
            snprintf(what, sizeof what, "adamw step %ld params", step);
            pair_compare(what, p, EW_ATOL, EW_RTOL);
            snprintf(what, sizeof what, "adamw step %ld m", step);
            pair_compare(what, m, EW_ATOL, EW_RTOL);
            snprintf(what, sizeof what, "adamw step %ld v", step);
            pair_compare(what, v, 1e-7, EW_RTOL);
        }
    }

    /* Adam (coupled weight decay: g = grad*clip + wd*p before the moments) from fresh moments, steps
     * 1..4 with a clipped step 2, and AdamW beside it from the same start: the kernel writes the CPU's
     * expressions in its order and --fmad=false keeps their roundings, so the bits are the CPU's. */
    {
        pair ap = pair_rand(n, -1, 1), am = pair_from(NULL, n), av = pair_from(NULL, n);
        for (long step = 1; step <= 4; step++) {
            const pair *gr = step % 2 == 0 ? &g2 : &g;
            const float *scale_c = step == 2 ? gs.c : NULL, *scale_g = step == 2 ? gs.g : NULL;
            CHECK_OK(cpu->ops->adam_update(cpu, ap.c, gr->c, am.c, av.c, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 0, step, scale_c));
            CHECK_OK(gpu->ops->adam_update(gpu, ap.g, gr->g, am.g, av.g, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 0, step, scale_g));
            if (step == 1 || step == 4) {
                char what[96];
                snprintf(what, sizeof what, "adam step %ld params", step);
                pair_compare_exact(what, ap);
                snprintf(what, sizeof what, "adam step %ld m", step);
                pair_compare_exact(what, am);
                snprintf(what, sizeof what, "adam step %ld v", step);
                pair_compare_exact(what, av);
            }
        }
        pair *adam_all[] = {&ap, &am, &av};
        for (size_t i = 0; i < sizeof adam_all / sizeof adam_all[0]; i++) pair_free(adam_all[i]);
    }

    /* clip_scale: a norm above and below max_norm */
    const float big = 25.0f, small = 0.01f;
    pair ss = pair_from(&big, 1), sc = pair_out(1);
    CHECK_OK(cpu->ops->clip_scale(cpu, ss.c, 1.0f, sc.c));
    CHECK_OK(gpu->ops->clip_scale(gpu, ss.g, 1.0f, sc.g));
    pair_compare("clip_scale (clipping)", sc, 1e-7, 1e-6);
    CHECK_OK(bf_to_device(cpu, ss.c, &small, sizeof small));
    CHECK_OK(bf_to_device(gpu, ss.g, &small, sizeof small));
    CHECK_OK(cpu->ops->clip_scale(cpu, ss.c, 1.0f, sc.c));
    CHECK_OK(gpu->ops->clip_scale(gpu, ss.g, 1.0f, sc.g));
    pair_compare("clip_scale (no clipping)", sc, 1e-7, 1e-6);

    pair *all[] = {&p, &g, &buf, &gs, &m, &v, &g2, &ss, &sc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* bf_cuda_memory_bytes: what the backend's own cudaMalloc calls hold, and its high-water mark
 * (the benchmarks' "peak GiB"). */
static void test_memory_counter(void) {
    size_t live0 = 0, live1 = 0, live2 = 0, peak = 0;
    bf_cuda_memory_bytes(gpu, 1, &live0, NULL);
    void *p = NULL;
    CHECK_OK(bf_alloc(gpu, (size_t)1 << 20, &p));
    bf_cuda_memory_bytes(gpu, 0, &live1, &peak);
    CHECK(live1 == live0 + ((size_t)1 << 20), "live bytes %zu after 1 MiB, were %zu", live1, live0);
    CHECK(peak >= live1, "peak %zu below live %zu", peak, live1);
    bf_free(gpu, p);
    bf_cuda_memory_bytes(gpu, 0, &live2, &peak);
    CHECK(live2 == live0 && peak >= live1, "after the free: live %zu (want %zu), peak %zu (want >= %zu)", live2, live0,
          peak, live1);
    bf_cuda_memory_bytes(gpu, 1, NULL, NULL);
    bf_cuda_memory_bytes(gpu, 0, NULL, &peak);
    CHECK(peak == live2, "peak %zu after a reset, want the live %zu", peak, live2);
    size_t cpu_live = 1, cpu_peak = 1;
    bf_cuda_memory_bytes(cpu, 0, &cpu_live, &cpu_peak);
    CHECK(cpu_live == 0 && cpu_peak == 0, "a CPU backend reads 0 (%zu, %zu)", cpu_live, cpu_peak);
}

int main(void) {
    if (!pair_open(&cpu, &gpu, 1000)) return bf_test_finish();

    test_memory_counter();

    test_elementwise();
    test_conv();
#ifndef BIOFLEX_KERNEL_EMULATOR /* tests/emu has no cuDNN graph API: its planner finds no engine */
    /* the same cases through cuDNN's graph API ([run] conv_api = graph): it must make plans (else
     * the legacy algorithms would run and this would test nothing new) with the same results */
    CHECK_OK(bf_cuda_set_conv_api(gpu, 1));
    printf("convolutions through cuDNN's graph API:\n");
    test_conv();
    const int plans = bf_cuda_conv_graph_plan_count(gpu);
    CHECK(plans >= 10, "the graph API made %d plans for the last case's 3 directions and the others' (want >= 10)",
          plans);
    printf("  %d graph plans in the cache\n", plans);
    CHECK_OK(bf_cuda_set_conv_api(gpu, 0));
#endif
    test_batchnorm();
    test_pool();
    test_linear();
    test_loss();
    test_optim();
    CHECK_OK(gpu->ops->synchronize(gpu));

    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
