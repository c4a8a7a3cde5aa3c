/* test_flex_ops_cuda.c - every flexible-neuron op of the CUDA backend against the CPU reference,
 * for both channel rules, both tie rules and every mask kind.
 *
 * flex.cu computes with the same IEEE expressions as flex_cpu.c, so selections, copies, counts,
 * logits, the threshold gradient and the stochastic masks (both draw bf_uniform(seed, i)) must be
 * bit-identical; arithmetic results are compared with a tight tolerance, the reductions over all
 * elements (whose summation orders differ) with a looser one. Outputs start as garbage, so an op
 * that leaves part of its output unwritten fails. The GPU reductions are also run twice, to check
 * that they repeat bit for bit. Skipped (exit 77) without a CUDA build or device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;

/* atol < 0: bit-identical; otherwise bf_test_max_violation <= 1. */
static void compare(const char *what, pair p, double atol, double rtol) {
    float *a, *b;
    if (pair_download(what, p, &a, &b)) {
        if (atol < 0) {
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < p.n; i++)
                if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && bad++ == 0) first = i;
            printf("  %-52s %zu of %zu differ\n", what, bad, p.n);
            CHECK(bad == 0, "%s: %zu differ, first %zu: cpu %.9g cuda %.9g", what, bad, first, a[first], b[first]);
        } else {
            size_t worst = 0;
            double v = bf_test_max_violation(a, b, p.n, atol, rtol, &worst);
            printf("  %-52s max violation %8.3g (n=%zu)\n", what, v, p.n);
            CHECK(v <= 1.0, "%s: element %zu cpu %.9g cuda %.9g (violation %.3g)", what, worst, a[worst], b[worst], v);
        }
    }
    free(a);
    free(b);
}

#define EXACT -1.0, 0.0
#define TIGHT 1e-6, 1e-6
#define REDUCTION 1e-3, 1e-5

static const char *rule_name(bf_flex_channel_rule r) { return r == BF_FLEX_CHANNELS_EXPAND ? "expand" : "bilinear"; }

static void test_max_and_widen(bf_flex_channel_rule rule, int n, int c_in, int c_out, int hw) {
    bf_flex_shape s = {.n = n, .c_in = c_in, .c_out = c_out, .hw = hw, .channels = rule};
    const size_t no = (size_t)n * c_out * hw, ni = (size_t)n * c_in * hw;
    char what[128];
    pair P = pair_rand(ni, -1, 1), W = pair_out(no), dW = pair_rand(no, -1, 1), dP = pair_out(ni);
    CHECK_OK(cpu->ops->flex_widen_forward(cpu, &s, P.c, W.c));
    CHECK_OK(gpu->ops->flex_widen_forward(gpu, &s, P.g, W.g));
    snprintf(what, sizeof what, "widen_forward %s %d->%d", rule_name(rule), c_in, c_out);
    compare(what, W, EXACT);
    CHECK_OK(cpu->ops->flex_widen_backward(cpu, &s, dW.c, dP.c));
    CHECK_OK(gpu->ops->flex_widen_backward(gpu, &s, dW.g, dP.g));
    snprintf(what, sizeof what, "widen_backward %s %d->%d", rule_name(rule), c_in, c_out);
    compare(what, dP, TIGHT);

    /* conv with exact ties every third element (the CPU's widened values) */
    float *h = malloc(no * sizeof(float)), *wide = bf_test_download(cpu, W.c, no);
    bf_test_fill_uniform(h, no, -1, 1, pair_next_seed());
    for (size_t i = 0; i < no; i += 3) h[i] = wide[i];
    pair C = pair_from(h, no), Y = pair_out(no), dy = pair_rand(no, -1, 1), dC = pair_out(no), wins = pair_from(h, 1),
         Y2 = pair_out(no), wins2 = pair_from(h, 1);
    CHECK_OK(cpu->ops->flex_max_forward(cpu, &s, C.c, P.c, Y.c, wins.c));
    CHECK_OK(gpu->ops->flex_max_forward(gpu, &s, C.g, P.g, Y.g, wins.g));
    CHECK_OK(gpu->ops->flex_max_forward(gpu, &s, C.g, P.g, Y2.g, wins2.g));
    snprintf(what, sizeof what, "max_forward %s %d->%d", rule_name(rule), c_in, c_out);
    compare(what, Y, EXACT);
    snprintf(what, sizeof what, "max_forward conv_wins %s %d->%d", rule_name(rule), c_in, c_out);
    compare(what, wins, EXACT);
    check_repeats(what, wins.g, wins2.g, 1);
    CHECK_OK(gpu->ops->fill(gpu, Y2.g, 1e3f, no)); /* Y2 already holds the result: garbage first */
    CHECK_OK(gpu->ops->flex_max_forward(gpu, &s, C.g, P.g, Y2.g, NULL));
    check_repeats("max_forward without conv_wins", Y.g, Y2.g, no);
    for (int ties = 0; ties < 2; ties++) {
        s.ties = ties;
        CHECK_OK(cpu->ops->flex_max_backward(cpu, &s, C.c, P.c, dy.c, dC.c, dP.c));
        CHECK_OK(gpu->ops->flex_max_backward(gpu, &s, C.g, P.g, dy.g, dC.g, dP.g));
        snprintf(what, sizeof what, "max_backward %s/%s %d->%d dconv", rule_name(rule), ties ? "pool" : "split", c_in,
                 c_out);
        compare(what, dC, EXACT);
        snprintf(what, sizeof what, "max_backward %s/%s %d->%d dpooled", rule_name(rule), ties ? "pool" : "split",
                 c_in, c_out);
        compare(what, dP, TIGHT);
    }
    free(h);
    free(wide);
    pair *all[] = {&P, &W, &dW, &dP, &C, &Y, &dy, &dC, &wins, &Y2, &wins2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

static int is_sigmoid_valued(bf_flex_mask k) { return k == BF_FLEX_MASK_SIGMOID_MUL; }

static void test_mask(int n, int c_out, int hw) {
    bf_flex_shape s = {.n = n, .c_in = 3, .c_out = c_out, .hw = hw};
    const size_t no = (size_t)n * c_out * hw, K = (size_t)c_out * hw;
    char what[128];
    pair W = pair_rand(no, -4, 4), T = pair_rand(K, -1, 1), L = pair_out(no), C = pair_rand(no, -1, 1),
         M = pair_out(no), Y = pair_out(no), sum = pair_rand(1, 2, 3), M2 = pair_out(no), Y2 = pair_out(no),
         sum2 = pair_from(NULL, 1), dy = pair_rand(no, -1, 1), dC = pair_out(no), dL = pair_out(no),
         dW = pair_out(no), dT = pair_out(K), dT2 = pair_out(K);
    CHECK_OK(cpu->ops->flex_logits_forward(cpu, &s, W.c, T.c, L.c));
    CHECK_OK(gpu->ops->flex_logits_forward(gpu, &s, W.g, T.g, L.g));
    compare("logits_forward", L, EXACT);
    for (bf_flex_mask k = 0; k < BF_FLEX_MASK_COUNT; k++) {
        const float factor = 2.5f;
        const uint64_t seed = 99 + (uint64_t)k;
        float start = 2.0f;
        CHECK_OK(bf_to_device(cpu, sum.c, &start, sizeof start));
        CHECK_OK(bf_to_device(gpu, sum.g, &start, sizeof start));
        CHECK_OK(bf_to_device(gpu, sum2.g, &start, sizeof start));
        CHECK_OK(cpu->ops->flex_mask_forward(cpu, &s, k, factor, seed, L.c, C.c, W.c, M.c, Y.c, sum.c));
        CHECK_OK(gpu->ops->flex_mask_forward(gpu, &s, k, factor, seed, L.g, C.g, W.g, M.g, Y.g, sum.g));
        CHECK_OK(gpu->ops->flex_mask_forward(gpu, &s, k, factor, seed, L.g, C.g, W.g, M2.g, Y2.g, sum2.g));
        snprintf(what, sizeof what, "mask_forward kind %d: mask", (int)k);
        if (is_sigmoid_valued(k)) compare(what, M, TIGHT);
        else compare(what, M, EXACT);
        snprintf(what, sizeof what, "mask_forward kind %d: y", (int)k);
        compare(what, Y, TIGHT);
        snprintf(what, sizeof what, "mask_forward kind %d: conv_mask_sum", (int)k);
        compare(what, sum, REDUCTION);
        check_repeats(what, sum.g, sum2.g, 1);
        check_repeats("mask_forward mask (second run)", M.g, M2.g, no);
        /* both backwards read the CPU's mask, so the backward is tested on its own */
        float *mh = bf_test_download(cpu, M.c, no);
        CHECK_OK(bf_to_device(gpu, M.g, mh, no * sizeof(float)));
        free(mh);
        CHECK_OK(cpu->ops->flex_mask_backward(cpu, &s, k, factor, L.c, M.c, C.c, W.c, dy.c, dC.c, dL.c, dW.c));
        CHECK_OK(gpu->ops->flex_mask_backward(gpu, &s, k, factor, L.g, M.g, C.g, W.g, dy.g, dC.g, dL.g, dW.g));
        snprintf(what, sizeof what, "mask_backward kind %d: dconv", (int)k);
        compare(what, dC, EXACT);
        snprintf(what, sizeof what, "mask_backward kind %d: dwidened", (int)k);
        compare(what, dW, EXACT);
        snprintf(what, sizeof what, "mask_backward kind %d: dlogits", (int)k);
        compare(what, dL, TIGHT);
    }
    /* the same dlogits on both sides: the fixed-order sums over n must agree bit for bit */
    float *dlh = bf_test_download(cpu, dL.c, no);
    CHECK_OK(bf_to_device(gpu, dL.g, dlh, no * sizeof(float)));
    free(dlh);
    CHECK_OK(cpu->ops->flex_threshold_backward(cpu, &s, dL.c, dT.c));
    CHECK_OK(gpu->ops->flex_threshold_backward(gpu, &s, dL.g, dT.g));
    CHECK_OK(gpu->ops->flex_threshold_backward(gpu, &s, dL.g, dT2.g));
    compare("threshold_backward", dT, EXACT);
    check_repeats("threshold_backward", dT.g, dT2.g, K);
    pair *all[] = {&W, &T, &L, &C, &M, &Y, &sum, &M2, &Y2, &sum2, &dy, &dC, &dL, &dW, &dT, &dT2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* Mask statistics (count of M > 0.5, sum of |M - 0.5| * 2) over masks with exact 0, 1 and 0.5 entries. */
static void test_mask_stats(size_t n) {
    float *h = malloc(n * sizeof(float) + 16);
    if (!h) exit(1);
    bf_test_fill_uniform(h, n, 0, 1, pair_next_seed());
    for (size_t i = 0; i < n; i += 7) h[i] = (float)(i % 3) * 0.5f;
    pair mask = pair_from(h, n), out = pair_out(2);
    CHECK_OK(cpu->ops->flex_mask_stats(cpu, mask.c, n, out.c));
    CHECK_OK(gpu->ops->flex_mask_stats(gpu, mask.g, n, out.g));
    compare("flex_mask_stats", out, 0, 1e-6);
    pair_free(&mask);
    pair_free(&out);
    free(h);
}

int main(void) {
    if (!pair_open(&cpu, &gpu, 5000)) return bf_test_finish();

    /* {c_in, c_out}: divisible, tiling, c_out < c_in, identity, VGG's first layer, a bilinear odd ratio */
    const int channels[][2] = {{4, 8}, {3, 8}, {8, 3}, {5, 5}, {3, 64}, {5, 13}};
    for (int rule = 0; rule < 2; rule++)
        for (size_t i = 0; i < sizeof channels / sizeof channels[0]; i++)
            test_max_and_widen(rule, 2, channels[i][0], channels[i][1], 37);
    /* large enough for many reduction blocks and grid-stride loops */
    test_max_and_widen(BF_FLEX_CHANNELS_EXPAND, 8, 64, 128, 196);
    test_max_and_widen(BF_FLEX_CHANNELS_BILINEAR, 8, 64, 128, 196);
    test_mask(2, 5, 37);
    test_mask(8, 64, 196);
    test_mask_stats(1000);
    {
        pair u = pair_out(100003); /* fill_uniform: the same counter-based draws on both backends */
        CHECK_OK(cpu->ops->fill_uniform(cpu, u.c, u.n, -0.25f, 0.75f, 99));
        CHECK_OK(gpu->ops->fill_uniform(gpu, u.g, u.n, -0.25f, 0.75f, 99));
        compare("fill_uniform", u, -1, 0);
        pair_free(&u);
    }
    test_mask_stats(8 * 64 * 196);
    CHECK_OK(gpu->ops->synchronize(gpu));

    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
