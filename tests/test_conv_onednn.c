/* test_conv_onednn.c - the CPU backend's convolutions through oneDNN ([run] cpu_conv = onednn,
 * src/kernels/conv_onednn_cpu.c) against the im2col + OpenBLAS reference (conv_cpu.c, itself
 * checked by finite differences in test_ops_grad), on both sides the same backend ops:
 *   - forward (with and without a bias), backward data (also added onto dx) and backward filter
 *     (with the bias gradient) agree to rounding, over shapes that oneDNN takes (3x3 stride 1 and 2,
 *     the 2x2 stride-2 downsampling of PlasticFlex, 1x1, ResNet's 7x7 stem, groups, batches that do
 *     not fill the weight gradient's slices of 16 output channels) and some it leaves to im2col;
 *   - oneDNN took the calls it should (bf_cpu_onednn_conv_calls), so the comparison is not of the
 *     reference with itself;
 *   - the bits do not depend on the thread count (1, 2 and 3 threads), as cpu_backend.h promises;
 *   - a forward with a bias equals the forward without it plus the bias, bit for bit (what a flex
 *     joint given the bias computes, [model] fold_conv_bias);
 *   - bf_cpu_set_conv_library refuses an unknown library and a NULL backend.
 * Skipped (exit 77) in a build without oneDNN. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "testutil.h"

typedef struct conv_case {
    const char *name;
    bf_conv2d_shape s;
    int onednn_passes; /* how many of forward, backward data, backward filter oneDNN must take */
} conv_case;

/* The results of one backend on one case. */
typedef struct conv_results {
    float *y, *y_bias, *dx, *dx_add, *dw, *db;
} conv_results;

typedef struct conv_inputs {
    size_t nx, ny, nw;
    float *x, *w, *bias, *dy, *dx0;
} conv_inputs;

static void inputs_make(const bf_conv2d_shape *s, conv_inputs *in) {
    in->nx = (size_t)s->n * s->c_in * s->h_in * s->w_in;
    in->ny = (size_t)s->n * s->c_out * s->h_out * s->w_out;
    in->nw = (size_t)s->c_out * (s->c_in / s->groups) * s->k_h * s->k_w;
    in->x = bf_test_calloc(4 * in->nx);
    in->w = bf_test_calloc(4 * in->nw);
    in->bias = bf_test_calloc(4 * (size_t)s->c_out);
    in->dy = bf_test_calloc(4 * in->ny);
    in->dx0 = bf_test_calloc(4 * in->nx);
    bf_test_fill_uniform(in->x, in->nx, -1, 1, 11);
    bf_test_fill_uniform(in->w, in->nw, -0.5f, 0.5f, 12);
    bf_test_fill_uniform(in->bias, (size_t)s->c_out, 0.25f, 0.75f, 13);
    bf_test_fill_uniform(in->dy, in->ny, -1, 1, 14);
    bf_test_fill_uniform(in->dx0, in->nx, -1, 1, 15);
}

static void inputs_free(conv_inputs *in) {
    free(in->x), free(in->w), free(in->bias), free(in->dy), free(in->dx0);
}

static void results_free(conv_results *r) {
    free(r->y), free(r->y_bias), free(r->dx), free(r->dx_add), free(r->dw), free(r->db);
}

/* Every op of the case on b (CPU: host pointers are device pointers). */
static void run_case(bf_backend *b, const bf_conv2d_shape *s, const conv_inputs *in, conv_results *r) {
    r->y = bf_test_calloc(4 * in->ny);
    r->y_bias = bf_test_calloc(4 * in->ny);
    r->dx = bf_test_calloc(4 * in->nx);
    r->dx_add = bf_test_calloc(4 * in->nx);
    r->dw = bf_test_calloc(4 * in->nw);
    r->db = bf_test_calloc(4 * (size_t)s->c_out);
    memcpy(r->dx_add, in->dx0, 4 * in->nx);
    CHECK_OK(b->ops->conv2d_forward(b, s, in->x, in->w, NULL, r->y));
    CHECK_OK(b->ops->conv2d_forward(b, s, in->x, in->w, in->bias, r->y_bias));
    CHECK_OK(b->ops->conv2d_backward_data(b, s, in->dy, in->w, r->dx));
    CHECK_OK(b->ops->conv2d_backward_data_add(b, s, in->dy, in->w, r->dx_add));
    CHECK_OK(b->ops->conv2d_backward_filter(b, s, in->x, in->dy, r->dw, r->db));
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, 4 * n) == 0; }

/* a against the reference b: sums of up to a few thousand products of terms in [-1, 1], rounded in
 * another order */
static void close_to(const char *name, const char *what, const float *a, const float *b, size_t n) {
    size_t worst = 0;
    const double v = bf_test_max_violation(a, b, n, 2e-4, 2e-5, &worst);
    CHECK(v <= 1.0, "%s: %s element %zu onednn %.9g im2col %.9g", name, what, worst, a[worst], b[worst]);
}

static bf_backend *cpu_backend(int threads, bf_cpu_conv_library library) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(threads, &b));
    CHECK_OK(bf_cpu_set_conv_library(b, library));
    return b;
}

static void test_case(const conv_case *c) {
    bf_conv2d_shape s = c->s;
    CHECK_OK(bf_conv2d_shape_init(&s));
    conv_inputs in;
    inputs_make(&s, &in);
    bf_backend *ref = cpu_backend(2, BF_CPU_CONV_IM2COL), *fast = cpu_backend(2, BF_CPU_CONV_ONEDNN);
    conv_results r_ref, r_fast;
    run_case(ref, &s, &in, &r_ref);
    run_case(fast, &s, &in, &r_fast);
    /* forward twice (with and without the bias), backward data twice, backward filter once */
    const long calls = bf_cpu_onednn_conv_calls(fast);
    CHECK(bf_cpu_onednn_conv_calls(ref) == 0, "%s: the im2col backend ran oneDNN", c->name);
    CHECK(calls >= c->onednn_passes, "%s: oneDNN ran %ld calls, expected at least %d", c->name, calls,
          c->onednn_passes);
    close_to(c->name, "forward", r_fast.y, r_ref.y, in.ny);
    close_to(c->name, "forward with bias", r_fast.y_bias, r_ref.y_bias, in.ny);
    close_to(c->name, "backward data", r_fast.dx, r_ref.dx, in.nx);
    close_to(c->name, "backward data added", r_fast.dx_add, r_ref.dx_add, in.nx);
    close_to(c->name, "backward filter", r_fast.dw, r_ref.dw, in.nw);
    CHECK(same_bits(r_fast.db, r_ref.db, (size_t)s.c_out), "%s: the bias gradient is not bf_cpu_channel_sum's", c->name);

    /* the bias after the sum: y + bias, one rounding */
    size_t bias_mismatches = 0, hw = (size_t)s.h_out * s.w_out;
    for (size_t i = 0; i < in.ny; i++) {
        const float want = r_fast.y[i] + in.bias[(i / hw) % (size_t)s.c_out];
        bias_mismatches += memcmp(&want, &r_fast.y_bias[i], 4) != 0;
    }
    CHECK(bias_mismatches == 0, "%s: %zu forward elements with the bias differ from y + bias", c->name, bias_mismatches);

    /* the same bits with 1 and 3 threads as with 2 */
    for (int threads = 1; threads <= 3; threads += 2) {
        bf_backend *other = cpu_backend(threads, BF_CPU_CONV_ONEDNN);
        conv_results r;
        run_case(other, &s, &in, &r);
        CHECK(same_bits(r.y, r_fast.y, in.ny) && same_bits(r.y_bias, r_fast.y_bias, in.ny),
              "%s: forward with %d threads differs from 2", c->name, threads);
        CHECK(same_bits(r.dx, r_fast.dx, in.nx) && same_bits(r.dx_add, r_fast.dx_add, in.nx),
              "%s: backward data with %d threads differs from 2", c->name, threads);
        CHECK(same_bits(r.dw, r_fast.dw, in.nw) && same_bits(r.db, r_fast.db, (size_t)s.c_out),
              "%s: backward filter with %d threads differs from 2", c->name, threads);
        results_free(&r);
        bf_backend_destroy(other);
    }
    printf("%-40s oneDNN calls %ld of 5\n", c->name, calls);
    results_free(&r_ref);
    results_free(&r_fast);
    bf_backend_destroy(ref);
    bf_backend_destroy(fast);
    inputs_free(&in);
}

static void test_library_setting(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    CHECK(bf_cpu_set_conv_library(b, (bf_cpu_conv_library)7) == BF_ERR_ARG, "an unknown library is accepted");
    CHECK(bf_cpu_set_conv_library(NULL, BF_CPU_CONV_IM2COL) == BF_ERR_ARG, "a NULL backend is accepted");
    CHECK_OK(bf_cpu_set_conv_library(b, BF_CPU_CONV_IM2COL));
    bf_backend_destroy(b);
}

int main(void) {
    if (!bf_cpu_have_onednn()) bf_test_skip("bioflex was built without oneDNN (libdnnl-dev, BIOFLEX_ONEDNN)");
    test_library_setting();
    /* n, c_in, h, w, c_out, kh, kw, stride, pad, groups; the calls oneDNN must take: forward (2),
     * backward data (2, where c_in per group >= 16), backward filter (1, without groups: in slices
     * of 16 output channels, the last one shorter where c_out is not a multiple) */
    static const conv_case cases[] = {
        {"3x3 s1 p1 16->32 @10, n 37", {37, 16, 10, 10, 32, 3, 3, 1, 1, 1, 0, 0}, 4},
        {"3x3 s1 p1 64->64 @4, n 9", {9, 64, 4, 4, 64, 3, 3, 1, 1, 1, 0, 0}, 4},
        {"first layer 3x3 3->16 @12, n 21", {21, 3, 12, 12, 16, 3, 3, 1, 1, 1, 0, 0}, 3},
        {"2x2 s2 downsampling 16->16 @14, n 19", {19, 16, 14, 14, 16, 2, 2, 2, 0, 1, 0, 0}, 5},
        {"1x1 32->16 @6, n 23", {23, 32, 6, 6, 16, 1, 1, 1, 0, 1, 0, 0}, 5},
        {"7x7 s2 p3 stem 3->16 @20, n 6", {6, 3, 20, 20, 16, 7, 7, 2, 3, 1, 0, 0}, 3},
        {"3x3 s2 p1 32->32 @9 (odd), n 17", {17, 32, 9, 9, 32, 3, 3, 2, 1, 1, 0, 0}, 4},
        {"3x3 s1 p1 groups 2 32->32 @8, n 11", {11, 32, 8, 8, 32, 3, 3, 1, 1, 2, 0, 0}, 4},
        {"3x3 s1 p1 24->40 @6 (slices 16+16+8), n 13", {13, 24, 6, 6, 40, 3, 3, 1, 1, 1, 0, 0}, 5},
        {"3x3 s1 p1 16->8 @5 (one short slice), n 7", {7, 16, 5, 5, 8, 3, 3, 1, 1, 1, 0, 0}, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_case(&cases[i]);
    return bf_test_finish();
}
