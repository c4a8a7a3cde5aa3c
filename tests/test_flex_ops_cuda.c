/* test_flex_ops_cuda.c - every flexible-neuron op of the CUDA backend against the CPU reference,
 * for both channel rules, both tie rules and every mask kind.
 *
 * flex.cu computes with the same IEEE expressions as flex_cpu.c, so selections, copies, counts,
 * logits, the threshold gradient and the stochastic masks (both draw bf_draw_uniform(draws, i), here at a
 * sample offset and over time steps) must be
 * bit-identical; arithmetic results are compared with a tight tolerance, the reductions over all
 * elements (whose summation orders differ) with a looser one. Outputs start as garbage, so an op
 * that leaves part of its output unwritten fails. The GPU reductions are also run twice, to check
 * that they repeat bit for bit.
 *
 * The fused channel-wise max (flex_pool_max_forward, flex_pool_max_backward, flex_pool_scatter_add;
 * flex_pool.cu against flex_pool_cpu.c) is checked bit for bit, every tensor: y, the window bytes
 * (poisoned first, so untapped channels must keep the poison), the winners words (the last one
 * partial), conv_wins (accumulated onto a nonzero start, and a run without it), dconv and dpooled
 * (and dconv alone, and under EXPAND dconv written over dy), and dx after the scatter-add onto
 * random values; under EXPAND also the route and scatter in one op (flex_pool_max_backward_scatter:
 * dconv, also over dy, and dx overwritten over NaNs); also against the CUDA op-by-op sequence the
 * ops replace. Every channel rule x pool window (3x3/1 pad 1, 2x2/2, 3x3/2 pad 1, 1x1/2) x tie
 * rule, on inputs in multiples of 1/8 with ties injected, plus NaNs and larger shapes; and the
 * shapes and NULL tensors the CUDA ops refuse. The mask joint's pool branch (flex_pool_forward,
 * flex_pool_gather) is checked on the same cases, and the fused mask joint (flex_mask_joint_*,
 * flex_mask.cu against flex_mask_cpu.c) for every mask kind, both channel rules and both sources of
 * the logits. The fused-op cases run under both kernel sets
 * (bf_cuda_set_flex_kernels: fused, then slide, whose sliding-window kernels take EXPAND with the
 * 3x3/1 pad 1 window), slide's with more shapes of its own (vector widths, column strips, whole
 * winners words, NaNs and -0). flex_route_tally (bioflex-eval --routing) counts the same as the CPU
 * on random bitmaps whose samples start inside words. Skipped (exit 77) without a CUDA build or device. */
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
        const bf_draws draws = {seed, 1000 * (uint64_t)k, (size_t)s.n * s.c_out * s.hw / 2}; /* an offset, 2 time steps */
        float start = 2.0f;
        CHECK_OK(bf_to_device(cpu, sum.c, &start, sizeof start));
        CHECK_OK(bf_to_device(gpu, sum.g, &start, sizeof start));
        CHECK_OK(bf_to_device(gpu, sum2.g, &start, sizeof start));
        CHECK_OK(cpu->ops->flex_mask_forward(cpu, &s, k, factor, draws, L.c, C.c, W.c, M.c, Y.c, sum.c));
        CHECK_OK(gpu->ops->flex_mask_forward(gpu, &s, k, factor, draws, L.g, C.g, W.g, M.g, Y.g, sum.g));
        CHECK_OK(gpu->ops->flex_mask_forward(gpu, &s, k, factor, draws, L.g, C.g, W.g, M2.g, Y2.g, sum2.g));
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

/* The fused mask joint (flex_mask.cu) against its CPU twin for every mask kind, with the logits
 * computed in the op (L = P~ - T) and given (as a caller's batch-norm leaves them): y, the mask sum
 * and routing statistics (the GPU's block partials: REDUCTION), dconv, dlogits and dpooled; a second
 * GPU forward without sums (another kernel grid) and a backward without dpooled must repeat them. */
static void test_mask_joint(bf_flex_channel_rule rule, int n, int c_in, int c_out, int hw) {
    bf_flex_shape s = {.n = n, .c_in = c_in, .c_out = c_out, .hw = hw, .channels = rule};
    const size_t no = (size_t)n * c_out * hw, ni = (size_t)n * c_in * hw;
    char what[160];
    pair P = pair_rand(ni, -3, 3), T = pair_rand((size_t)c_out * hw, -1, 1), given = pair_rand(no, -4, 4),
         C = pair_rand(no, -1, 1), Y = pair_out(no), Y2 = pair_out(no), sum = pair_out(1), routing = pair_out(2),
         dy = pair_rand(no, -1, 1), dC = pair_out(no), dC2 = pair_out(no), dL = pair_out(no), dP = pair_out(ni);
    for (int with_logits = 0; with_logits < 2; with_logits++)
        for (bf_flex_mask k = 0; k < BF_FLEX_MASK_COUNT; k++) {
            const float factor = 2.5f, start = 2.0f;
            const uint64_t seed = 7 + (uint64_t)k;
            const bf_draws draws = {seed, 333, (size_t)s.c_out * s.hw}; /* a sample offset, a time step per sample */
            const float *lc = with_logits ? given.c : NULL, *lg = with_logits ? given.g : NULL;
            const char *how = with_logits ? "given logits" : "P~ - T";
            CHECK_OK(bf_to_device(cpu, sum.c, &start, sizeof start));
            CHECK_OK(bf_to_device(gpu, sum.g, &start, sizeof start));
            CHECK_OK(cpu->ops->flex_mask_joint_forward(cpu, &s, k, factor, draws, P.c, T.c, lc, C.c, Y.c, sum.c,
                                                       routing.c));
            CHECK_OK(gpu->ops->flex_mask_joint_forward(gpu, &s, k, factor, draws, P.g, T.g, lg, C.g, Y.g, sum.g,
                                                       routing.g));
            CHECK_OK(gpu->ops->flex_mask_joint_forward(gpu, &s, k, factor, draws, P.g, T.g, lg, C.g, Y2.g, NULL, NULL));
            snprintf(what, sizeof what, "mask_joint %s %d->%d kind %d, %s: y", rule_name(rule), c_in, c_out, (int)k, how);
            if (is_sigmoid_valued(k)) compare(what, Y, TIGHT);
            else compare(what, Y, EXACT);
            check_repeats(what, Y.g, Y2.g, no);
            snprintf(what, sizeof what, "mask_joint kind %d, %s: conv_mask_sum", (int)k, how);
            compare(what, sum, REDUCTION);
            snprintf(what, sizeof what, "mask_joint kind %d, %s: routing", (int)k, how);
            compare(what, routing, REDUCTION);
            CHECK_OK(cpu->ops->flex_mask_joint_backward(cpu, &s, k, factor, draws, P.c, T.c, lc, C.c, dy.c, dC.c, dL.c,
                                                        dP.c));
            CHECK_OK(gpu->ops->flex_mask_joint_backward(gpu, &s, k, factor, draws, P.g, T.g, lg, C.g, dy.g, dC.g, dL.g,
                                                        dP.g));
            CHECK_OK(gpu->ops->flex_mask_joint_backward(gpu, &s, k, factor, draws, P.g, T.g, lg, C.g, dy.g, dC2.g,
                                                        dL.g, NULL));
            snprintf(what, sizeof what, "mask_joint kind %d, %s: dconv", (int)k, how);
            if (is_sigmoid_valued(k)) compare(what, dC, TIGHT);
            else compare(what, dC, EXACT);
            check_repeats(what, dC.g, dC2.g, no);
            snprintf(what, sizeof what, "mask_joint kind %d, %s: dlogits", (int)k, how);
            compare(what, dL, TIGHT);
            snprintf(what, sizeof what, "mask_joint kind %d, %s: dpooled", (int)k, how);
            compare(what, dP, TIGHT);
        }
    pair *all[] = {&P, &T, &given, &C, &Y, &Y2, &sum, &routing, &dy, &dC, &dC2, &dL, &dP};
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

/* ---- the fused channel-wise max: flex_pool_max_forward, flex_pool_max_backward, flex_pool_scatter_add ----
 * Every result must have the CPU's bits (a NaN matches any NaN: x86 and CUDA give an arithmetic NaN
 * different payloads), and the op-by-op sequence they replace on the GPU. Each case prints one line;
 * a mismatch is a CHECK failure naming the case, the tensor and the first differing element. */

typedef struct pool_case {
    char name[96];
    int n, c_in, c_out, h, w, k, stride, pad;
    bf_flex_channel_rule channels;
    bf_flex_tie_rule ties;
    int nan;         /* NaNs in x (so in P and P~) and in C; 2: also -0 in x and C */
    int full_words;  /* hw or the element count a multiple of 32 on purpose (slide's own cases) */
} pool_case;

/* One case's tensors: the pairs hold the same inputs on both backends and each backend's results; the
 * *_g pointers are the CUDA op-by-op sequence (maxpool_forward + flex_max_forward, flex_max_backward,
 * maxpool_backward + add_inplace). */
typedef struct pool_run {
    bf_pool_shape ps;
    bf_flex_shape s;
    size_t nx, np, nc, words;                 /* elements of x, of P (window bytes), of C and y; winners words */
    pair x, y, dy, dP;                          /* y: C on entry, the forward's output after */
    void *window_c, *window_g, *winners_c, *winners_g, *ties_c, *ties_g;
    float *conv_g, *P_g, *dP_g;                 /* the op-by-op sequence on the GPU */
    int32_t *argmax_g;
} pool_run;

static const char *g_case;   /* the case being checked, for the messages */
static int g_case_bad;       /* its comparisons that failed */
static int g_slide;          /* the GPU backend's kernel set: 1 slide (bf_cuda_set_flex_kernels) */

/* Under slide, a call the sliding-window kernels take (EXPAND, 3x3/1/1; the forward also aligned,
 * which cudaMalloc's pointers are) must have launched one: else the fused kernels ran quietly. */
static void check_slid(const pool_run *r, long before, const char *what) {
    const int takes = g_slide && r->s.channels == BF_FLEX_CHANNELS_EXPAND && r->ps.k == 3 && r->ps.stride == 1 &&
                      r->ps.pad == 1;
    if (!takes) return;
    const long ran = bf_cuda_flex_slide_launches(gpu) - before;
    g_case_bad += ran <= 0;
    CHECK(ran > 0, "%s: %s: the sliding-window kernels took the call (%ld launches)", g_case, what, ran);
}

/* A buffer of the backend with every byte set to fill (host == NULL) or holding host's bytes. */
static void *raw_upload(bf_backend *b, const void *host, size_t bytes, int fill) {
    void *p = NULL, *h = malloc(bytes + 16);
    if (!h || bf_alloc(b, bytes + 16, &p) != BF_OK) {
        fprintf(stderr, "cannot allocate %zu bytes: %s\n", bytes, bf_last_error());
        exit(1);
    }
    if (host) memcpy(h, host, bytes);
    else memset(h, fill, bytes);
    CHECK_OK(bf_to_device(b, p, h, bytes));
    free(h);
    return p;
}

static void *raw_download(bf_backend *b, const void *dev, size_t bytes) {
    void *h = malloc(bytes + 16);
    if (!h) exit(1);
    CHECK_OK(bf_to_host(b, h, dev, bytes));
    return h;
}

/* Multiples of 1/8 in [lo, lo + levels/8): ties between the branches are common. */
static float *eighths(size_t n, float lo, int levels) {
    float *h = malloc(n * sizeof(float) + 16);
    if (!h) exit(1);
    bf_test_fill_uniform(h, n, 0.0f, (float)levels, pair_next_seed());
    for (size_t i = 0; i < n; i++) h[i] = lo + floorf(h[i]) / 8.0f;
    return h;
}

static uint32_t float_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

/* ref (on backend rb) and got (on the GPU), n floats: the same bits, or both NaN. */
static void same_floats(const char *what, bf_backend *rb, const float *ref, const float *got, size_t n) {
    float *a = raw_download(rb, ref, n * sizeof(float)), *b = raw_download(gpu, got, n * sizeof(float));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (float_bits(a[i]) != float_bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) && bad++ == 0) first = i;
    g_case_bad += bad != 0;
    CHECK(bad == 0, "%s: %s: %zu of %zu differ, first [%zu]: %s %.9g (0x%08x), cuda %.9g (0x%08x)", g_case, what, bad,
          n, first, rb == cpu ? "cpu" : "op by op", a[first], float_bits(a[first]), b[first], float_bits(b[first]));
    free(a);
    free(b);
}

/* ref (on the CPU) and got (on the GPU), bytes / elem elements of elem (1 or 4) bytes: every byte the same. */
static void same_raw(const char *what, const void *ref, const void *got, size_t bytes, size_t elem) {
    uint8_t *a = raw_download(cpu, ref, bytes), *b = raw_download(gpu, got, bytes);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < bytes / elem; i++)
        if (memcmp(a + i * elem, b + i * elem, elem) != 0 && bad++ == 0) first = i;
    g_case_bad += bad != 0;
    uint32_t va = 0, vb = 0;
    memcpy(&va, a + first * elem, elem); /* little endian: the element's value */
    memcpy(&vb, b + first * elem, elem);
    CHECK(bad == 0, "%s: %s: %zu of %zu differ, first [%zu]: cpu 0x%0*x, cuda 0x%0*x", g_case, what, bad, bytes / elem,
          first, (int)(2 * elem), va, (int)(2 * elem), vb);
    free(a);
    free(b);
}

/* flex_pool_max_forward: y (from C), window (every byte 0xAB before: the channels no output channel
 * taps must keep it), winners and ties (all bits set before: the last word's spare bits must come
 * back 0) and
 * conv_wins (5 before: it accumulates) on both backends; again on the GPU without conv_wins (another
 * launch configuration); and y against the GPU's maxpool_forward + flex_max_forward. */
static void check_pool_forward(pool_run *r, const float *conv, size_t conv_wins) {
    const float start = 5.0f;
    pair wins = pair_from(&start, 1);
    r->window_c = raw_upload(cpu, NULL, r->np, 0xAB);
    r->window_g = raw_upload(gpu, NULL, r->np, 0xAB);
    r->winners_c = raw_upload(cpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    r->winners_g = raw_upload(gpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    r->ties_c = raw_upload(cpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    r->ties_g = raw_upload(gpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    CHECK_OK(cpu->ops->flex_pool_max_forward(cpu, &r->ps, &r->s, r->x.c, NULL, r->y.c, r->window_c, r->winners_c, r->ties_c,
                                             wins.c));
    CHECK_OK(gpu->ops->flex_pool_max_forward(gpu, &r->ps, &r->s, r->x.g, NULL, r->y.g, r->window_g, r->winners_g, r->ties_g,
                                             wins.g));
    same_floats("forward y", cpu, r->y.c, r->y.g, r->nc);
    same_raw("forward window", r->window_c, r->window_g, r->np, 1);
    same_raw("forward winners", r->winners_c, r->winners_g, r->words * sizeof(uint32_t), 4);
    same_raw("forward ties", r->ties_c, r->ties_g, r->words * sizeof(uint32_t), 4);
    same_floats("forward conv_wins", cpu, wins.c, wins.g, 1);
    float got = 0.0f;
    CHECK_OK(bf_to_host(gpu, &got, wins.g, sizeof got));
    CHECK(got == start + (float)conv_wins, "%s: conv_wins %.1f, expected %.1f + %zu", g_case, got, start, conv_wins);
    g_case_bad += got != start + (float)conv_wins;

    float *y2 = bf_test_upload(gpu, conv, r->nc);
    void *window2 = raw_upload(gpu, NULL, r->np, 0xAB);
    void *winners2 = raw_upload(gpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    void *ties2 = raw_upload(gpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    CHECK_OK(gpu->ops->flex_pool_max_forward(gpu, &r->ps, &r->s, r->x.g, NULL, y2, window2, winners2, ties2, NULL));
    same_floats("forward y (conv_wins NULL)", cpu, r->y.c, y2, r->nc);
    same_raw("forward window (conv_wins NULL)", r->window_c, window2, r->np, 1);
    same_raw("forward winners (conv_wins NULL)", r->winners_c, winners2, r->words * sizeof(uint32_t), 4);
    same_raw("forward ties (conv_wins NULL)", r->ties_c, ties2, r->words * sizeof(uint32_t), 4);

    float *y_ref = bf_test_upload(gpu, NULL, r->nc);
    CHECK_OK(gpu->ops->maxpool_forward(gpu, &r->ps, r->x.g, r->P_g, r->argmax_g));
    CHECK_OK(gpu->ops->flex_max_forward(gpu, &r->s, r->conv_g, r->P_g, y_ref, NULL));
    same_floats("forward y vs CUDA maxpool_forward + flex_max_forward", gpu, y_ref, r->y.g, r->nc);

    bf_free(gpu, y2);
    bf_free(gpu, window2);
    bf_free(gpu, winners2);
    bf_free(gpu, ties2);
    bf_free(gpu, y_ref);
    pair_free(&wins);
}

/* The conv's bias folded into the forward ([model] fold_conv_bias): y, window, bitmaps and conv_wins
 * from C with bias[j] given are, bit for bit, those of C + bias[j] (added here, one float add as
 * the conv's k_conv_bias) without one, on the CPU (its own bias path) and on the GPU (both ops; with
 * the batch-norm's statistics, the same statistics). The biases are multiples of 1/8 with a -0 and
 * a +0, so that C + bias still meets P~ often: ties and the sign of zero are exercised. */
static void check_pool_forward_bias(pool_run *r, const float *conv) {
    const int c = r->s.c_out;
    float *bias = malloc((size_t)c * sizeof(float)), *biased = malloc(r->nc * sizeof(float));
    if (!bias || !biased) exit(1);
    for (int j = 0; j < c; j++) bias[j] = j == 0 ? -0.0f : j == 1 ? 0.0f : (float)((j * 5) % 9 - 4) / 8.0f;
    for (size_t e = 0; e < r->nc; e++) biased[e] = conv[e] + bias[(e / (size_t)r->s.hw) % (size_t)c];
    pair b = pair_from(bias, (size_t)c), ref = pair_from(biased, r->nc), y = pair_from(conv, r->nc);
    void *bufs_c[3], *bufs_g[3], *ref_c[3]; /* window, winners, ties: from the biased reference, and of each op */
    const size_t sizes[3] = {r->np, r->words * sizeof(uint32_t), r->words * sizeof(uint32_t)};
    for (int k = 0; k < 3; k++) {
        ref_c[k] = raw_upload(cpu, NULL, sizes[k], k ? 0xFF : 0xAB);
        bufs_c[k] = raw_upload(cpu, NULL, sizes[k], k ? 0xFF : 0xAB);
        bufs_g[k] = raw_upload(gpu, NULL, sizes[k], k ? 0xFF : 0xAB);
    }
    const float zero = 0.0f;
    pair wins_ref = pair_from(&zero, 1), wins = pair_from(&zero, 1);
    CHECK_OK(cpu->ops->flex_pool_max_forward(cpu, &r->ps, &r->s, r->x.c, NULL, ref.c, ref_c[0], ref_c[1], ref_c[2],
                                             wins_ref.c));
    CHECK_OK(cpu->ops->flex_pool_max_forward(cpu, &r->ps, &r->s, r->x.c, b.c, y.c, bufs_c[0], bufs_c[1], bufs_c[2],
                                             wins.c));
    float *a = bf_test_download(cpu, ref.c, r->nc), *got = bf_test_download(cpu, y.c, r->nc);
    size_t bad = 0;
    for (size_t e = 0; e < r->nc; e++) bad += float_bits(a[e]) != float_bits(got[e]);
    for (int k = 0; k < 3; k++) {
        uint8_t *u = raw_download(cpu, ref_c[k], sizes[k]), *v = raw_download(cpu, bufs_c[k], sizes[k]);
        bad += memcmp(u, v, sizes[k]) != 0;
        free(u), free(v);
    }
    g_case_bad += bad != 0;
    CHECK(bad == 0, "%s: the CPU forward with the bias against C + bias without it: %zu differ", g_case, bad);
    free(a), free(got);

    const long before = bf_cuda_flex_slide_launches(gpu);
    CHECK_OK(gpu->ops->flex_pool_max_forward(gpu, &r->ps, &r->s, r->x.g, b.g, y.g, bufs_g[0], bufs_g[1], bufs_g[2],
                                             wins.g));
    check_slid(r, before, "forward with the bias");
    same_floats("forward with the bias: y", cpu, ref.c, y.g, r->nc);
    same_raw("forward with the bias: window", ref_c[0], bufs_g[0], r->np, 1);
    same_raw("forward with the bias: winners", ref_c[1], bufs_g[1], sizes[1], 4);
    same_raw("forward with the bias: ties", ref_c[2], bufs_g[2], sizes[2], 4);
    same_floats("forward with the bias: conv_wins", cpu, wins_ref.c, wins.g, 1);

    if ((size_t)r->s.n * r->s.hw >= 2) { /* with the statistics: against the GPU's own from C + bias */
        const bf_bn_shape bs = {.n = r->s.n, .c = c, .hw = r->s.hw, .eps = 1e-5f, .momentum = 0.1f};
        float *saved = bf_test_upload(gpu, NULL, 2 * (size_t)c), *saved_ref = bf_test_upload(gpu, NULL, 2 * (size_t)c);
        CHECK_OK(gpu->ops->flex_pool_max_forward_bn_stats(gpu, &r->ps, &r->s, &bs, r->x.g, NULL, ref.g, bufs_g[0],
                                                          bufs_g[1], bufs_g[2], NULL, saved_ref, saved_ref + c, NULL,
                                                          NULL));
        CHECK_OK(gpu->ops->copy(gpu, y.g, r->conv_g, r->nc * sizeof(float)));
        CHECK_OK(gpu->ops->flex_pool_max_forward_bn_stats(gpu, &r->ps, &r->s, &bs, r->x.g, b.g, y.g, bufs_g[0],
                                                          bufs_g[1], bufs_g[2], NULL, saved, saved + c, NULL, NULL));
        same_floats("forward with the bias and statistics: y", cpu, ref.c, y.g, r->nc);
        same_raw("forward with the bias and statistics: winners", ref_c[1], bufs_g[1], sizes[1], 4);
        same_floats("forward with the bias and statistics: saved statistics", gpu, saved_ref, saved, 2 * (size_t)c);
        bf_free(gpu, saved), bf_free(gpu, saved_ref);
    }
    for (int k = 0; k < 3; k++) bf_free(cpu, ref_c[k]), bf_free(cpu, bufs_c[k]), bf_free(gpu, bufs_g[k]);
    pair *all[] = {&b, &ref, &y, &wins_ref, &wins};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
    free(bias), free(biased);
}

/* flex_pool_max_forward_bn_stats from C again (after check_pool_forward): y, window, bitmaps and
 * conv_wins bit for bit the CPU forward's; the next batch-norm's saved and running statistics (from
 * the same running values) against the CPU op's to rounding (the GPU adds the same doubles in another
 * order, and its variance is E[y^2] - mean^2), and, by the same test, against the GPU's own
 * batchnorm_forward_train over its y. With NaNs in y the statistics are NaN: only the flex outputs
 * are compared. Both kernel sets take the sums in their pass (the sliding window's per item); for
 * BILINEAR, or 1 -> 384 and 1 -> 512 channels (the sums' shared memory too large) the op takes the
 * batch-norm's own pass; the results must not tell. */
static void check_pool_forward_bn_stats(pool_run *r, const float *conv, size_t conv_wins, int nan) {
    const int c = r->s.c_out;
    /* a floor ([model] bn_var_floor) that some running variances' updates fall under */
    const bf_bn_shape bs = {.n = r->s.n, .c = c, .hw = r->s.hw, .eps = 1e-5f, .momentum = 0.1f, .var_floor = 0.95f};
    if ((size_t)r->s.n * r->s.hw < 2) { /* one value per channel: no batch-norm trains on it */
        float tmp[1];
        CHECK(gpu->ops->flex_pool_max_forward_bn_stats(gpu, &r->ps, &r->s, &bs, r->x.g, NULL, r->y.g, r->window_g,
                                                       r->winners_g, r->ties_g, NULL, tmp, tmp, NULL, NULL) == BF_ERR_ARG,
              "%s: forward with statistics refuses one value per channel: %s", g_case, bf_last_error());
        return;
    }
    const float start = 2.0f;
    pair wins = pair_from(&start, 1), y = pair_from(conv, r->nc), saved = pair_out(2 * (size_t)c);
    pair running = pair_rand(2 * (size_t)c, 0.25f, 1.0f);
    float *running_gpu_own = bf_test_upload(gpu, NULL, 2 * (size_t)c), *saved_gpu_own = bf_test_upload(gpu, NULL, 2 * (size_t)c);
    CHECK_OK(gpu->ops->copy(gpu, running_gpu_own, running.g, 2 * (size_t)c * sizeof(float)));
    void *window = raw_upload(gpu, NULL, r->np, 0xAB), *winners = raw_upload(gpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    void *ties = raw_upload(gpu, NULL, r->words * sizeof(uint32_t), 0xFF);
    CHECK_OK(cpu->ops->batchnorm_forward_train(cpu, &bs, r->y.c, NULL, NULL, NULL, saved.c, saved.c + c, running.c,
                                               running.c + c));
    const long before = bf_cuda_flex_slide_launches(gpu);
    CHECK_OK(gpu->ops->flex_pool_max_forward_bn_stats(gpu, &r->ps, &r->s, &bs, r->x.g, NULL, y.g, window, winners, ties,
                                                      wins.g, saved.g, saved.g + c, running.g, running.g + c));
    check_slid(r, before, "forward with statistics");
    same_floats("forward with statistics: y", cpu, r->y.c, y.g, r->nc);
    same_raw("forward with statistics: window", r->window_c, window, r->np, 1);
    same_raw("forward with statistics: winners", r->winners_c, winners, r->words * sizeof(uint32_t), 4);
    same_raw("forward with statistics: ties", r->ties_c, ties, r->words * sizeof(uint32_t), 4);
    float got = 0.0f;
    CHECK_OK(bf_to_host(gpu, &got, wins.g, sizeof got));
    g_case_bad += got != start + (float)conv_wins;
    CHECK(got == start + (float)conv_wins, "%s: forward with statistics: conv_wins %.1f, expected %.1f + %zu", g_case,
          got, start, conv_wins);
    if (!nan) {
        pair_compare("forward with statistics: saved mean and invstd vs CPU", saved, 1e-6, 1e-6);
        pair_compare("forward with statistics: running mean and var vs CPU", running, 1e-6, 1e-6);
        CHECK_OK(gpu->ops->batchnorm_forward_train(gpu, &bs, y.g, NULL, NULL, NULL, saved_gpu_own, saved_gpu_own + c,
                                                   running_gpu_own, running_gpu_own + c));
        /* again without conv_wins (the kernel without its count) from C: the same statistics */
        float *saved2 = bf_test_upload(gpu, NULL, 2 * (size_t)c);
        CHECK_OK(gpu->ops->copy(gpu, y.g, r->conv_g, r->nc * sizeof(float)));
        CHECK_OK(gpu->ops->flex_pool_max_forward_bn_stats(gpu, &r->ps, &r->s, &bs, r->x.g, NULL, y.g, window, winners, ties,
                                                          NULL, saved2, saved2 + c, NULL, NULL));
        same_floats("forward with statistics, conv_wins NULL: saved mean and invstd", gpu, saved.g, saved2, 2 * (size_t)c);
        bf_free(gpu, saved2);
        float *a = bf_test_download(gpu, saved_gpu_own, 2 * (size_t)c), *b = bf_test_download(gpu, saved.g, 2 * (size_t)c);
        double worst = 0;
        for (int k = 0; k < 2 * c; k++) {
            const double d = fabs((double)a[k] - b[k]) / (1e-6 + fabs((double)a[k]));
            if (d > worst) worst = d;
        }
        g_case_bad += worst > 1e-6;
        CHECK(worst <= 1e-6, "%s: forward with statistics against the GPU's batchnorm_forward_train: %.3g relative",
              g_case, worst);
        free(a), free(b);
    }
    bf_free(gpu, window), bf_free(gpu, winners), bf_free(gpu, ties), bf_free(gpu, running_gpu_own);
    bf_free(gpu, saved_gpu_own);
    pair *all[] = {&wins, &y, &saved, &running};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* flex_pool_max_backward from each backend's own forward results: dconv and dpooled (garbage before),
 * then dconv alone (dpooled NULL) on the GPU; both against the GPU's flex_max_backward. */
static void check_pool_backward(pool_run *r) {
    pair dconv = pair_out(r->nc);
    r->dP = pair_out(r->np);
    CHECK_OK(cpu->ops->flex_pool_max_backward(cpu, &r->ps, &r->s, r->winners_c, r->ties_c, r->dy.c, dconv.c, r->dP.c));
    CHECK_OK(gpu->ops->flex_pool_max_backward(gpu, &r->ps, &r->s, r->winners_g, r->ties_g, r->dy.g, dconv.g, r->dP.g));
    same_floats("backward dconv", cpu, dconv.c, dconv.g, r->nc);
    same_floats("backward dpooled", cpu, r->dP.c, r->dP.g, r->np);

    float *dconv2 = bf_test_upload(gpu, NULL, r->nc);
    CHECK_OK(gpu->ops->fill(gpu, dconv2, 1e3f, r->nc));
    CHECK_OK(gpu->ops->flex_pool_max_backward(gpu, &r->ps, &r->s, r->winners_g, r->ties_g, r->dy.g, dconv2, NULL));
    same_floats("backward dconv (dpooled NULL)", cpu, dconv.c, dconv2, r->nc);
    if (r->s.channels == BF_FLEX_CHANNELS_EXPAND) { /* dconv written over dy, as the flex layer does */
        float *inplace = bf_test_upload(gpu, NULL, r->nc), *dP2 = bf_test_upload(gpu, NULL, r->np);
        CHECK_OK(gpu->ops->copy(gpu, inplace, r->dy.g, r->nc * sizeof(float)));
        CHECK_OK(gpu->ops->flex_pool_max_backward(gpu, &r->ps, &r->s, r->winners_g, r->ties_g, inplace, inplace, dP2));
        same_floats("backward dconv written over dy", cpu, dconv.c, inplace, r->nc);
        same_floats("backward dpooled with dconv over dy", cpu, r->dP.c, dP2, r->np);
        bf_free(gpu, inplace);
        bf_free(gpu, dP2);
    }

    float *dconv_ref = bf_test_upload(gpu, NULL, r->nc);
    CHECK_OK(gpu->ops->flex_max_backward(gpu, &r->s, r->conv_g, r->P_g, r->dy.g, dconv_ref, r->dP_g));
    same_floats("backward dconv vs CUDA flex_max_backward", gpu, dconv_ref, dconv.g, r->nc);
    same_floats("backward dpooled vs CUDA flex_max_backward", gpu, r->dP_g, r->dP.g, r->np);

    bf_free(gpu, dconv2);
    bf_free(gpu, dconv_ref);
    pair_free(&dconv);
}

/* The mask joint's pool branch: flex_pool_forward (P and a byte for every channel) and
 * flex_pool_gather (P read back at the bytes), CUDA against CPU, and P against maxpool_forward. */
static void check_pool_branch(pool_run *r) {
    pair P = pair_out(r->np), P2 = pair_out(r->np);
    void *win_c = raw_upload(cpu, NULL, r->np, 0xAB), *win_g = raw_upload(gpu, NULL, r->np, 0xCD);
    CHECK_OK(cpu->ops->flex_pool_forward(cpu, &r->ps, &r->s, r->x.c, P.c, win_c));
    CHECK_OK(gpu->ops->flex_pool_forward(gpu, &r->ps, &r->s, r->x.g, P.g, win_g));
    same_floats("pool branch P", cpu, P.c, P.g, r->np);
    same_raw("pool branch window bytes (every channel)", win_c, win_g, r->np, 1);
    CHECK_OK(gpu->ops->flex_pool_gather(gpu, &r->ps, &r->s, r->x.g, win_g, P2.g));
    same_floats("pool branch P gathered back", cpu, P.c, P2.g, r->np);
    float *P_ref = bf_test_upload(gpu, NULL, r->np);
    int32_t *arg_ref = raw_upload(gpu, NULL, r->np * sizeof(int32_t), 0);
    CHECK_OK(gpu->ops->maxpool_forward(gpu, &r->ps, r->x.g, P_ref, arg_ref));
    same_floats("pool branch P vs CUDA maxpool_forward", gpu, P_ref, P.g, r->np);
    bf_free(gpu, P_ref);
    bf_free(gpu, arg_ref);
    bf_free(cpu, win_c);
    bf_free(gpu, win_g);
    pair_free(&P);
    pair_free(&P2);
}

/* flex_pool_scatter_add into dx holding random values (it adds), from each backend's dpooled; and
 * against dx + the GPU's maxpool_backward. */
static void check_pool_scatter(pool_run *r, const float *dx0) {
    pair dx = pair_from(dx0, r->nx);
    CHECK_OK(cpu->ops->flex_pool_scatter_add(cpu, &r->ps, &r->s, r->window_c, r->dP.c, dx.c));
    CHECK_OK(gpu->ops->flex_pool_scatter_add(gpu, &r->ps, &r->s, r->window_g, r->dP.g, dx.g));
    same_floats("scatter_add dx", cpu, dx.c, dx.g, r->nx);

    float *dx_ref = bf_test_upload(gpu, dx0, r->nx), *dx_pool = bf_test_upload(gpu, NULL, r->nx);
    CHECK_OK(gpu->ops->maxpool_backward(gpu, &r->ps, r->dP_g, r->argmax_g, dx_pool));
    CHECK_OK(gpu->ops->add_inplace(gpu, dx_ref, dx_pool, r->nx));
    same_floats("scatter_add dx vs CUDA maxpool_backward + add_inplace", gpu, dx_ref, dx.g, r->nx);

    bf_free(gpu, dx_ref);
    bf_free(gpu, dx_pool);
    pair_free(&dx);
}

/* flex_pool_max_backward_scatter (EXPAND): dconv (garbage before, then over dy) and dx (all bits
 * set before: it overwrites) on both backends from each one's forward results, and dx against the
 * GPU's maxpool_backward of its op-by-op dpooled (from zero). */
/* The bias gradient a route-and-scatter summed on the GPU (gpu_dbias) against the CPU's conv sum of
 * the CPU's dconv: to the rounding of a double sum (the GPU adds in another order). NaNs: skipped. */
static void check_route_dbias(const char *what, pool_run *r, const float *cpu_dconv, const float *gpu_dbias, int nan) {
    if (nan) return;
    const int c = r->s.c_out;
    float *ref = bf_test_upload(cpu, NULL, (size_t)c);
    bf_conv2d_shape cs = {.n = r->s.n, .c_in = 1, .h_in = r->s.hw, .w_in = 1, .c_out = c, .k_h = 1, .k_w = 1,
                          .stride = 1, .pad = 0, .groups = 1};
    CHECK_OK(bf_conv2d_shape_init(&cs));
    float *x = bf_test_upload(cpu, NULL, (size_t)r->s.n * r->s.hw), *dw = bf_test_upload(cpu, NULL, (size_t)c);
    CHECK_OK(cpu->ops->conv2d_backward_filter(cpu, &cs, x, cpu_dconv, dw, ref));
    pair p = {ref, (float *)gpu_dbias, (size_t)c};
    pair_compare(what, p, 1e-6, 1e-6);
    bf_free(cpu, ref), bf_free(cpu, x), bf_free(cpu, dw);
}

static void check_pool_route_scatter(pool_run *r, int nan) {
    pair dconv = pair_out(r->nc), dx = pair_out(r->nx);
    CHECK_OK(cpu->ops->fill(cpu, dx.c, NAN, r->nx));
    CHECK_OK(gpu->ops->fill(gpu, dx.g, NAN, r->nx));
    CHECK_OK(cpu->ops->flex_pool_max_backward_scatter(cpu, &r->ps, &r->s, r->window_c, r->winners_c, r->ties_c, r->dy.c,
                                                      dconv.c, dx.c, NULL));
    float *dbias = bf_test_upload(gpu, NULL, (size_t)r->s.c_out);
    CHECK_OK(gpu->ops->fill(gpu, dbias, NAN, (size_t)r->s.c_out));
    const long before = bf_cuda_flex_slide_launches(gpu);
    CHECK_OK(gpu->ops->flex_pool_max_backward_scatter(gpu, &r->ps, &r->s, r->window_g, r->winners_g, r->ties_g, r->dy.g,
                                                      dconv.g, dx.g, dbias));
    check_slid(r, before, "backward with the scatter");
    same_floats("backward with the scatter: dconv", cpu, dconv.c, dconv.g, r->nc);
    same_floats("backward with the scatter: dx", cpu, dx.c, dx.g, r->nx);
    check_route_dbias("backward with the scatter, dconv apart: dbias", r, dconv.c, dbias, nan);

    float *inplace = bf_test_upload(gpu, NULL, r->nc), *dx2 = bf_test_upload(gpu, NULL, r->nx);
    CHECK_OK(gpu->ops->copy(gpu, inplace, r->dy.g, r->nc * sizeof(float)));
    CHECK_OK(gpu->ops->fill(gpu, dx2, NAN, r->nx));
    CHECK_OK(gpu->ops->fill(gpu, dbias, NAN, (size_t)r->s.c_out));
    CHECK_OK(gpu->ops->flex_pool_max_backward_scatter(gpu, &r->ps, &r->s, r->window_g, r->winners_g, r->ties_g, inplace,
                                                      inplace, dx2, dbias));
    same_floats("backward with the scatter: dconv written over dy (and dbias)", cpu, dconv.c, inplace, r->nc);
    same_floats("backward with the scatter: dx with dconv over dy (and dbias)", cpu, dx.c, dx2, r->nx);
    check_route_dbias("backward with the scatter: dbias", r, dconv.c, dbias, nan);
    bf_free(gpu, dbias);

    float *dx_ref = bf_test_upload(gpu, NULL, r->nx);
    CHECK_OK(gpu->ops->maxpool_backward(gpu, &r->ps, r->dP_g, r->argmax_g, dx_ref));
    same_floats("backward with the scatter: dx vs CUDA maxpool_backward", gpu, dx_ref, dx.g, r->nx);

    bf_free(gpu, inplace);
    bf_free(gpu, dx2);
    bf_free(gpu, dx_ref);
    pair_free(&dconv);
    pair_free(&dx);
}

/* flex_pool_max_backward_scatter_bn: the route and scatter of the next batch-norm's dx, computed from
 * its output gradient (dy here) and input (y, the forward's output) as read, with and without the
 * batch-norm's ReLU: batchnorm_backward_sums to reduction tolerance against the CPU, then from the
 * CPU's coefficients on both sides dconv (also written over dz) and dx bit for bit. */
static void check_pool_route_scatter_bn(pool_run *r) {
    const int c = r->s.c_out;
    const bf_bn_shape bs = {.n = r->s.n, .c = c, .hw = r->s.hw, .eps = 1e-5f, .momentum = 0.1f};
    pair mean = pair_rand((size_t)c, -0.25f, 0.25f), invstd = pair_rand((size_t)c, 0.5f, 2.0f);
    pair gamma = pair_rand((size_t)c, -1.0f, 1.5f), beta = pair_rand((size_t)c, -0.5f, 0.5f);
    pair coef = pair_out(2 * (size_t)c), dgamma = pair_out((size_t)c), dbeta = pair_out((size_t)c);
    pair dconv = pair_out(r->nc), dx = pair_out(r->nx);
    for (int relu = 0; relu < 2; relu++) {
        CHECK_OK(cpu->ops->batchnorm_backward_sums(cpu, &bs, relu, r->y.c, r->dy.c, gamma.c, beta.c, mean.c, invstd.c,
                                                   dgamma.c, dbeta.c, coef.c));
        CHECK_OK(gpu->ops->batchnorm_backward_sums(gpu, &bs, relu, r->y.g, r->dy.g, gamma.g, beta.g, mean.g, invstd.g,
                                                   dgamma.g, dbeta.g, coef.g));
        pair_compare(relu ? "batch-norm + ReLU backward sums: coef" : "batch-norm backward sums: coef", coef, 1e-4, 1e-3);
        pair_compare("batch-norm backward sums: dgamma", dgamma, 1e-4, 1e-3);
        pair_compare("batch-norm backward sums: dbeta", dbeta, 1e-4, 1e-3);
        CHECK_OK(bf_to_host(cpu, coef.c, coef.c, 2 * (size_t)c * sizeof(float))); /* (host memory on the CPU) */
        float *coef_g = bf_test_upload(gpu, coef.c, 2 * (size_t)c); /* the CPU's coefficients on both sides */
        const bf_bn_grad gc = {relu, mean.c, invstd.c, gamma.c, beta.c, coef.c};
        const bf_bn_grad gg = {relu, mean.g, invstd.g, gamma.g, beta.g, coef_g};
        CHECK_OK(cpu->ops->flex_pool_max_backward_scatter_bn(cpu, &r->ps, &r->s, &gc, r->window_c, r->winners_c,
                                                             r->ties_c, r->y.c, r->dy.c, dconv.c, dx.c, NULL));
        CHECK_OK(gpu->ops->fill(gpu, dx.g, NAN, r->nx));
        float *dbias = bf_test_upload(gpu, NULL, (size_t)c);
        CHECK_OK(gpu->ops->fill(gpu, dbias, NAN, (size_t)c));
        const long before = bf_cuda_flex_slide_launches(gpu);
        CHECK_OK(gpu->ops->flex_pool_max_backward_scatter_bn(gpu, &r->ps, &r->s, &gg, r->window_g, r->winners_g,
                                                             r->ties_g, r->y.g, r->dy.g, dconv.g, dx.g, dbias));
        check_slid(r, before, "backward with the scatter and the batch-norm's dx");
        check_route_dbias(relu ? "scatter with batch-norm + ReLU dx, dconv apart: dbias"
                               : "scatter with batch-norm dx, dconv apart: dbias", r, dconv.c, dbias, 0);
        same_floats(relu ? "scatter with batch-norm + ReLU dx: dconv" : "scatter with batch-norm dx: dconv", cpu,
                    dconv.c, dconv.g, r->nc);
        same_floats("scatter with batch-norm dx: dx", cpu, dx.c, dx.g, r->nx);
        float *inplace = bf_test_upload(gpu, NULL, r->nc);
        CHECK_OK(gpu->ops->copy(gpu, inplace, r->dy.g, r->nc * sizeof(float)));
        CHECK_OK(gpu->ops->fill(gpu, dbias, NAN, (size_t)c));
        CHECK_OK(gpu->ops->flex_pool_max_backward_scatter_bn(gpu, &r->ps, &r->s, &gg, r->window_g, r->winners_g,
                                                             r->ties_g, r->y.g, inplace, inplace, dx.g, dbias));
        same_floats("scatter with batch-norm dx: dconv written over dz (and dbias)", cpu, dconv.c, inplace, r->nc);
        same_floats("scatter with batch-norm dx: dx (and dbias)", cpu, dx.c, dx.g, r->nx);
        check_route_dbias(relu ? "scatter with batch-norm + ReLU dx: dbias" : "scatter with batch-norm dx: dbias", r,
                          dconv.c, dbias, 0);
        /* the route alone (no input gradient), from the CPU's: the same dconv, also over dz */
        pair routed = pair_out(r->nc);
        CHECK_OK(cpu->ops->flex_pool_max_backward_bn(cpu, &r->ps, &r->s, &gc, r->winners_c, r->ties_c, r->y.c, r->dy.c,
                                                     routed.c, NULL));
        CHECK_OK(gpu->ops->flex_pool_max_backward_bn(gpu, &r->ps, &r->s, &gg, r->winners_g, r->ties_g, r->y.g, r->dy.g,
                                                     routed.g, NULL));
        same_floats("route with batch-norm dx, no scatter: dconv", cpu, routed.c, routed.g, r->nc);
        same_floats("route with batch-norm dx, no scatter: the scatter's dconv", cpu, dconv.c, routed.g, r->nc);
        CHECK_OK(gpu->ops->copy(gpu, inplace, r->dy.g, r->nc * sizeof(float)));
        CHECK_OK(gpu->ops->fill(gpu, dbias, NAN, (size_t)c));
        CHECK_OK(gpu->ops->flex_pool_max_backward_bn(gpu, &r->ps, &r->s, &gg, r->winners_g, r->ties_g, r->y.g, inplace,
                                                     inplace, dbias));
        same_floats("route with batch-norm dx, no scatter: dconv over dz (and dbias)", cpu, routed.c, inplace, r->nc);
        check_route_dbias(relu ? "route with batch-norm + ReLU dx, no scatter: dbias"
                               : "route with batch-norm dx, no scatter: dbias", r, routed.c, dbias, 0);
        pair_free(&routed);
        bf_free(gpu, dbias);
        bf_free(gpu, inplace);
        bf_free(gpu, coef_g);
    }
    pair *all[] = {&mean, &invstd, &gamma, &beta, &coef, &dgamma, &dbeta, &dconv, &dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

static void test_pool_case(const pool_case *pc) {
    pool_run r;
    memset(&r, 0, sizeof r);
    r.ps = (bf_pool_shape){.n = pc->n, .c = pc->c_in, .h_in = pc->h, .w_in = pc->w, .k = pc->k, .stride = pc->stride,
                           .pad = pc->pad};
    CHECK_OK(bf_pool_shape_init(&r.ps));
    r.s = (bf_flex_shape){.n = pc->n, .c_in = pc->c_in, .c_out = pc->c_out, .hw = r.ps.h_out * r.ps.w_out,
                          .channels = pc->channels, .ties = pc->ties};
    r.nx = (size_t)pc->n * pc->c_in * pc->h * pc->w;
    r.np = (size_t)pc->n * pc->c_in * r.s.hw;
    r.nc = (size_t)pc->n * pc->c_out * r.s.hw;
    r.words = (r.nc + 31) / 32;
    g_case = pc->name;
    g_case_bad = 0;
    CHECK(pc->full_words || (r.s.hw % 32 != 0 && r.nc % 32 != 0),
          "%s: hw %d and %zu elements: neither should be a multiple of 32", pc->name, r.s.hw, r.nc);

    float *x = eighths(r.nx, -1.0f, 17), *conv = eighths(r.nc, -1.0f, 21), *dy = eighths(r.nc, -2.0f, 33);
    float *dx0 = eighths(r.nx, -1.0f, 16);
    if (pc->nan) {
        x[5] = NAN; /* its windows pool to NaN, and so do their widenings */
        x[r.nx - 2] = NAN;
        conv[r.nc / 2] = NAN; /* a NaN conv response wins */
        conv[r.nc / 3] = -NAN;
    }
    if (pc->nan > 1) { /* -0 beside +0 in the windows, and C of -0 against P~ of +0 (a tie) */
        for (size_t i = 3; i < r.nx; i += 11) x[i] = x[i] == 0.0f ? -0.0f : x[i];
        for (size_t i = 7; i < r.nc; i += 13) conv[i] = conv[i] == 0.0f ? -0.0f : conv[i];
        x[1] = -0.0f;
    }
    /* P~ on the CPU, op by op; C takes its value at every fifth element, so every case has ties
     * (narrowing by interpolation weighs with fractions, which seldom meet a multiple of 1/8) */
    float *P = bf_test_upload(cpu, NULL, r.np), *W = bf_test_upload(cpu, NULL, r.nc);
    int32_t *argmax = raw_upload(cpu, NULL, r.np * sizeof(int32_t), 0);
    CHECK_OK(cpu->ops->maxpool_forward(cpu, &r.ps, x, P, argmax));
    CHECK_OK(cpu->ops->flex_widen_forward(cpu, &r.s, P, W));
    float *wide = bf_test_download(cpu, W, r.nc);
    size_t ties = 0, conv_wins = 0;
    for (size_t e = 0; e < r.nc; e++) {
        if (e % 5 == 0 && e != r.nc / 2 && e != r.nc / 3) conv[e] = wide[e];
        ties += conv[e] == wide[e];
        conv_wins += conv[e] > wide[e];
    }
    CHECK(ties > 0, "%s: no ties", pc->name);

    r.x = pair_from(x, r.nx);
    r.y = pair_from(conv, r.nc);
    r.dy = pair_from(dy, r.nc);
    r.conv_g = bf_test_upload(gpu, conv, r.nc);
    r.P_g = bf_test_upload(gpu, NULL, r.np);
    r.dP_g = bf_test_upload(gpu, NULL, r.np);
    r.argmax_g = raw_upload(gpu, NULL, r.np * sizeof(int32_t), 0xFF);

    check_pool_forward(&r, conv, conv_wins);
    check_pool_forward_bn_stats(&r, conv, conv_wins, pc->nan);
    check_pool_forward_bias(&r, conv);
    check_pool_backward(&r);
    check_pool_scatter(&r, dx0);
    if (pc->channels == BF_FLEX_CHANNELS_EXPAND) {
        check_pool_route_scatter(&r, pc->nan);
        if (!pc->nan) check_pool_route_scatter_bn(&r); /* a NaN in y makes every sum NaN */
    }
    check_pool_branch(&r);
    printf("  %-50s %6zu elements, %5zu ties, %5zu conv wins: %s\n", pc->name, r.nc, ties, conv_wins,
           g_case_bad ? "MISMATCH" : "bit-identical");

    pair *pairs[] = {&r.x, &r.y, &r.dy, &r.dP};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) pair_free(pairs[i]);
    void *gpu_bufs[] = {r.window_g, r.winners_g, r.ties_g, r.conv_g, r.P_g, r.dP_g, r.argmax_g};
    for (size_t i = 0; i < sizeof gpu_bufs / sizeof gpu_bufs[0]; i++) bf_free(gpu, gpu_bufs[i]);
    void *cpu_bufs[] = {r.window_c, r.winners_c, r.ties_c, P, W, argmax};
    for (size_t i = 0; i < sizeof cpu_bufs / sizeof cpu_bufs[0]; i++) bf_free(cpu, cpu_bufs[i]);
    free(x), free(conv), free(dy), free(dx0), free(wide);
}

/* Every channel rule x pool window x tie rule, at batch 2 on odd output sizes (so neither hw nor the
 * element count is a multiple of 32: the winners' last word is partial), then NaNs and larger shapes;
 * under kernels (bf_cuda_set_flex_kernels: 0 fused, 1 slide). */
static void test_pool_cases(int kernels) {
    static const struct {
        const char *name;
        int c_in, c_out;
        bf_flex_channel_rule rule;
    } channels[] = {
        {"expand 3->6", 3, 6, BF_FLEX_CHANNELS_EXPAND},   {"expand 4->6 (tiling)", 4, 6, BF_FLEX_CHANNELS_EXPAND},
        {"expand 6->4", 6, 4, BF_FLEX_CHANNELS_EXPAND},   {"bilinear 3->8", 3, 8, BF_FLEX_CHANNELS_BILINEAR},
        {"bilinear 8->3", 8, 3, BF_FLEX_CHANNELS_BILINEAR},
    };
    static const struct {
        const char *name;
        int h, w, k, stride, pad;
    } windows[] = {
        {"3x3/1 pad 1 @7x9", 7, 9, 3, 1, 1},    /* VGG's flex layers: 7x9 out */
        {"2x2/2 @11x15", 11, 15, 2, 2, 0},      /* fully_flex: 5x7 out, the last row and column unused */
        {"3x3/2 pad 1 @10x13", 10, 13, 3, 2, 1}, /* 5x7 out, the last column's windows clipped */
        {"1x1/2 @9x13", 9, 13, 1, 2, 0},         /* FlexResNet's strided 1x1 sites: a subsample, 5x7 out */
    };
    CHECK_OK(bf_cuda_set_flex_kernels(gpu, kernels));
    g_slide = kernels;
    printf("flex_pool ops (flex_kernels = %s), CUDA against the CPU and against the CUDA op-by-op sequence:\n",
           kernels ? "slide" : "fused");
    for (size_t c = 0; c < sizeof channels / sizeof channels[0]; c++)
        for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++)
            for (int ties = 0; ties < 2; ties++) {
                pool_case pc = {.n = 2, .c_in = channels[c].c_in, .c_out = channels[c].c_out, .h = windows[w].h,
                                .w = windows[w].w, .k = windows[w].k, .stride = windows[w].stride,
                                .pad = windows[w].pad, .channels = channels[c].rule, .ties = ties};
                snprintf(pc.name, sizeof pc.name, "%s, %s, %s", channels[c].name, windows[w].name,
                         ties == BF_FLEX_TIE_SPLIT ? "split" : "pool");
                test_pool_case(&pc);
            }
    static const pool_case extra[] = {
        {"expand 3->6, 3x3/1 @7x9, split, NaNs", 2, 3, 6, 7, 9, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 1, 0},
        {"bilinear 4->7, 3x3/2 @10x13, split, NaNs", 2, 4, 7, 10, 13, 3, 2, 1, BF_FLEX_CHANNELS_BILINEAR,
         BF_FLEX_TIE_SPLIT, 1, 0},
        {"expand 48->120 (tiling), 3x3/1 @29x27, n=3, split", 3, 48, 120, 29, 27, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 0},
        {"bilinear 24->100, 3x3/2 @29x27, n=3, pool", 3, 24, 100, 29, 27, 3, 2, 1, BF_FLEX_CHANNELS_BILINEAR,
         BF_FLEX_TIE_POOL, 0, 0},
        /* many taps: the statistics' shared memory (8 warps x taps x 16 bytes) at 32 KiB, and past 48 KiB
         * (flex_pool_max_forward_bn_stats then takes the batch-norm's own pass) */
        {"expand 1->256, 3x3/1 @15x17, split", 2, 1, 256, 15, 17, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 1},
        {"expand 1->512, 3x3/1 @15x17, split", 2, 1, 512, 15, 17, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 1},
        /* 384 taps: 48 KiB of sums, over the limit with the kernel's static shared memory */
        {"expand 1->384, 3x3/1 @15x17, split", 2, 1, 384, 15, 17, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 1},
        /* the statistics' grid capped (STATS_BLOCKS): blocks walk several tiles, the last one partial */
        {"expand 64->64, 3x3/1 @18x30, n=32, split", 32, 64, 64, 18, 30, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 1},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) test_pool_case(&extra[i]);
    if (!kernels) return;
    /* slide's own (EXPAND, 3x3/1 pad 1): its forward's V = 4 (w % 4 == 0) and V = 1, the scatter's
     * V = 4, 2 and 1; groups of 2..32 lanes, column strips (w > 32*V), bands; block copy with 1, 2
     * and 21+ taps, tiling (5->13) and narrowing (8->3: pooled channels nobody taps keep the poison);
     * winners words whole (w % 32 == 0: plain stores over the 0xFF poison, no zeroing) or straddling */
    static const pool_case slide[] = {
        {"slide: expand 3->64, 3x3/1 @9x16, split, NaNs -0", 2, 3, 64, 9, 16, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 2, 1},
        {"slide: expand 64->128, 3x3/1 @56x56 (VGG-16's conv2_x), split", 2, 64, 128, 56, 56, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 1},
        {"slide: expand 5->13 (tiling), 3x3/1 @11x13, pool, NaNs -0", 2, 5, 13, 11, 13, 3, 1, 1,
         BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_POOL, 2, 0},
        {"slide: expand 8->3, 3x3/1 @13x7, split, NaNs -0", 2, 8, 3, 13, 7, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 2, 0},
        {"slide: expand 4->8, 3x3/1 @15x14, split", 3, 4, 8, 15, 14, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 0},
        {"slide: expand 3->6, 3x3/1 @5x132 (strips, V=4), split, NaNs", 2, 3, 6, 5, 132, 3, 1, 1,
         BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 1, 0},
        {"slide: expand 2->4, 3x3/1 @3x130 (strips, V=1/2), pool", 2, 2, 4, 3, 130, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_POOL, 0, 0},
        {"slide: expand 4->4, 3x3/1 @37x64 (bands, whole words), split", 1, 4, 4, 37, 64, 3, 1, 1,
         BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 1, 1},
        {"slide: expand 1->8, 3x3/1 @1x1, split", 1, 1, 8, 1, 1, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT,
         0, 0},
        /* whole winners words (w % 32 == 0) with more than two taps: plain stores in the chunked loop */
        {"slide: expand 3->7 (tiling, 3 taps), 3x3/1 @5x32 (whole words), split", 2, 3, 7, 5, 32, 3, 1, 1,
         BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 1, 1},
        {"slide: expand 3->64, 3x3/1 @9x32 (whole words), split", 2, 3, 64, 9, 32, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND,
         BF_FLEX_TIE_SPLIT, 0, 1},
    };
    for (size_t i = 0; i < sizeof slide / sizeof slide[0]; i++) test_pool_case(&slide[i]);
}

/* Shapes and pointers the CUDA ops must refuse with BF_ERR_ARG, before touching any tensor. */
static void test_pool_refusals(void) {
    bf_pool_shape ps = {.n = 1, .c = 2, .h_in = 6, .w_in = 6, .k = 3, .stride = 1, .pad = 1};
    CHECK_OK(bf_pool_shape_init(&ps));
    const bf_flex_shape s = {.n = 1, .c_in = 2, .c_out = 4, .hw = 36, .channels = BF_FLEX_CHANNELS_EXPAND,
                             .ties = BF_FLEX_TIE_SPLIT};
    float *x = bf_test_upload(gpu, NULL, 72), *dP = bf_test_upload(gpu, NULL, 72), *dx = bf_test_upload(gpu, NULL, 72);
    float *y = bf_test_upload(gpu, NULL, 144), *dy = bf_test_upload(gpu, NULL, 144);
    float *dconv = bf_test_upload(gpu, NULL, 144);
    void *window = raw_upload(gpu, NULL, 72, 0), *winners = raw_upload(gpu, NULL, 5 * sizeof(uint32_t), 0);
    void *ties = raw_upload(gpu, NULL, 5 * sizeof(uint32_t), 0);
    CHECK_OK(gpu->ops->flex_pool_max_forward(gpu, &ps, &s, x, NULL, y, window, winners, ties, NULL));
    CHECK_OK(gpu->ops->flex_pool_max_backward(gpu, &ps, &s, winners, ties, dy, dconv, NULL));
    CHECK_OK(gpu->ops->flex_pool_scatter_add(gpu, &ps, &s, window, dP, dx));
    CHECK_OK(gpu->ops->fill(gpu, y, 7.0f, 144));

    bf_pool_shape wrong_c = ps, wrong_n = ps, wide = ps, stale = ps;
    wrong_c.c = 3;
    wrong_n.n = 2;
    CHECK_OK(bf_pool_shape_init(&wrong_c));
    CHECK_OK(bf_pool_shape_init(&wrong_n));
    wide.k = 16, wide.pad = 0, wide.h_in = wide.w_in = 21; /* 6x6 out, but 256 places: more than a byte */
    CHECK_OK(bf_pool_shape_init(&wide));
    stale.h_in = 7; /* h_out left at 6: not what bf_pool_shape_init gives */
    bf_flex_shape wrong_hw = s;
    wrong_hw.hw = 35;

    CHECK(gpu->ops->flex_pool_max_forward(gpu, &wrong_c, &s, x, NULL, y, window, winners, ties, NULL) == BF_ERR_ARG &&
              strstr(bf_last_error(), "flex_pool_max_forward") != NULL,
          "cuda: a pool of 3 channels under a flex of 2 is refused, naming the op: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_max_forward(gpu, &wide, &s, x, NULL, y, window, winners, ties, NULL) == BF_ERR_ARG,
          "cuda: a 16x16 window is refused by the forward: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_max_forward(gpu, &stale, &s, x, NULL, y, window, winners, ties, NULL) == BF_ERR_ARG,
          "cuda: a pool shape whose h_out does not follow from h_in is refused: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_max_forward(gpu, &ps, &s, x, NULL, y, NULL, winners, ties, NULL) == BF_ERR_ARG,
          "cuda: a NULL window is refused: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_max_forward(gpu, &ps, &s, x, NULL, y, window, winners, NULL, NULL) == BF_ERR_ARG,
          "cuda: a NULL ties bitmap is refused: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_max_backward(gpu, &wrong_n, &s, winners, ties, dy, dconv, dP) == BF_ERR_ARG,
          "cuda: a pool of batch 2 under a flex of batch 1 is refused by the backward: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_max_backward(gpu, &wide, &s, winners, ties, dy, dconv, NULL) == BF_ERR_ARG,
          "cuda: a 16x16 window is refused by the backward: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_max_backward(gpu, &ps, &s, winners, ties, dy, NULL, dP) == BF_ERR_ARG,
          "cuda: a NULL dconv is refused: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_scatter_add(gpu, &ps, &wrong_hw, window, dP, dx) == BF_ERR_ARG,
          "cuda: a flex hw of 35 under a 6x6 pool is refused by the scatter: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_scatter_add(gpu, &wrong_c, &s, window, dP, dx) == BF_ERR_ARG,
          "cuda: a pool of 3 channels is refused by the scatter: %s", bf_last_error());
    CHECK(gpu->ops->flex_pool_scatter_add(gpu, &ps, &s, window, NULL, dx) == BF_ERR_ARG,
          "cuda: a NULL dpooled is refused by the scatter: %s", bf_last_error());
    float *yh = bf_test_download(gpu, y, 144);
    size_t touched = 0;
    for (size_t i = 0; yh && i < 144; i++) touched += yh[i] != 7.0f;
    CHECK(yh && touched == 0, "cuda: the refused forwards left y alone (%zu elements changed)", touched);
    printf("  refusals (pool channels, batch, hw, a 16x16 window, a stale h_out, NULL tensors): %s\n",
           yh && touched == 0 ? "ok" : "FAILED");
    free(yh);
    void *bufs[] = {x, y, dy, dconv, dP, dx, window, winners, ties};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) bf_free(gpu, bufs[i]);
}

/* flex_route_tally on random bitmaps (ties a subset of the winners, as the forward makes them):
 * every count the CPU's, the element counts added onto a start. per_sample: under a word, straddling
 * words, and many words per sample. */
static void test_route_tally(int samples, size_t per) {
    const size_t elements = (size_t)samples * per, words = (elements + 31) / 32;
    uint32_t *winners = malloc(words * sizeof(uint32_t) + 16), *ties = malloc(words * sizeof(uint32_t) + 16);
    uint32_t *start = malloc(per * sizeof(uint32_t) + 16);
    float *draws = malloc(2 * words * sizeof(float) + 16);
    if (!winners || !ties || !start || !draws) exit(1);
    bf_test_fill_uniform(draws, 2 * words, 0.0f, 1.0f, pair_next_seed());
    for (size_t w = 0; w < words; w++) {
        memcpy(&winners[w], &draws[2 * w], sizeof(uint32_t));
        uint32_t t;
        memcpy(&t, &draws[2 * w + 1], sizeof t);
        ties[w] = winners[w] & (t >> 3);
    }
    for (size_t j = 0; j < per; j++) start[j] = (uint32_t)(j * 7 % 5);
    static char name[64]; /* g_case outlives the call */
    snprintf(name, sizeof name, "route tally %d x %zu", samples, per);
    g_case = name;
    void *bits[2][2], *counts[2][2];
    bf_backend *backends[2] = {cpu, gpu};
    for (int k = 0; k < 2; k++) {
        bits[k][0] = raw_upload(backends[k], winners, words * sizeof(uint32_t), 0);
        bits[k][1] = raw_upload(backends[k], ties, words * sizeof(uint32_t), 0);
        counts[k][0] = raw_upload(backends[k], start, per * sizeof(uint32_t), 0);
        counts[k][1] = raw_upload(backends[k], NULL, (size_t)samples * sizeof(uint32_t), 0xCD);
        CHECK_OK(backends[k]->ops->flex_route_tally(backends[k], samples, per, bits[k][0], bits[k][1], counts[k][0],
                                                    counts[k][1]));
    }
    same_raw("element counts", counts[0][0], counts[1][0], per * sizeof(uint32_t), 4);
    same_raw("sample counts", counts[0][1], counts[1][1], (size_t)samples * sizeof(uint32_t), 4);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 2; i++) bf_free(backends[k], bits[k][i]), bf_free(backends[k], counts[k][i]);
    free(winners), free(ties), free(start), free(draws);
}

int main(void) {
    if (!pair_open(&cpu, &gpu, 5000)) return bf_test_finish();
    test_route_tally(5, 7);
    test_route_tally(3, 45);
    test_route_tally(9, 1000);
    test_route_tally(300, 37);

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
    for (int rule = 0; rule < 2; rule++)
        for (size_t i = 0; i < sizeof channels / sizeof channels[0]; i++)
            test_mask_joint(rule, 2, channels[i][0], channels[i][1], 37);
    test_mask_joint(BF_FLEX_CHANNELS_EXPAND, 8, 32, 64, 196); /* many reduction blocks */
    test_mask_joint(BF_FLEX_CHANNELS_BILINEAR, 8, 32, 64, 196);
    test_mask_stats(1000);
    {
        pair u = pair_out(100003); /* fill_uniform: the same counter-based draws on both backends */
        CHECK_OK(cpu->ops->fill_uniform(cpu, u.c, u.n, -0.25f, 0.75f, 99));
        CHECK_OK(gpu->ops->fill_uniform(gpu, u.g, u.n, -0.25f, 0.75f, 99));
        compare("fill_uniform", u, -1, 0);
        pair_free(&u);
    }
    test_mask_stats(8 * 64 * 196);
    test_pool_cases(0);
    test_pool_cases(1);
    CHECK_OK(bf_cuda_set_flex_kernels(gpu, 0));
    g_slide = 0;
    test_pool_refusals();
    CHECK_OK(gpu->ops->synchronize(gpu));

    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
