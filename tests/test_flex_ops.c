/* test_flex_ops.c - the flexible-neuron ops of the CPU backend (ops.h, bf_flex_*): values against
 * naive double references written here, and finite-difference gradient checks.
 *
 * The CPU backend's memory is host memory, so the tests read and write its buffers directly.
 * Gradient checks follow test_ops_grad.c: loss = sum(r .* y) with random r, central differences
 * with the forward in float and the loss in double, tolerance 5e-3 * max(1, |num|, |ana|); kinks
 * are kept out of reach of the step (|C - P~| > 2 step for the max joint, |L| away from +-3 for
 * the hard sigmoid). STE and stochastic masks have surrogate gradients, so for them only the exact
 * identities of the backward rule are checked. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/ops.h"
#include "testutil.h"

#define STEP 1e-3f
#define TOLERANCE 5e-3

static bf_backend *cpu;
static unsigned long next_seed = 77;

static float *buf(size_t n) { /* zero-filled backend (= host) memory */
    void *p = NULL;
    if (bf_alloc(cpu, n * sizeof(float) + 16, &p) != BF_OK) exit(1);
    return p;
}
static float *rnd(size_t n, float lo, float hi) {
    float *p = buf(n);
    bf_test_fill_uniform(p, n, lo, hi, next_seed++);
    return p;
}
static size_t outs(const bf_flex_shape *s) { return (size_t)s->n * s->c_out * s->hw; }
static size_t ins(const bf_flex_shape *s) { return (size_t)s->n * s->c_in * s->hw; }

/* ---- naive references ---- */

/* taps of output channel j with the contract's formulas, in double */
static void ref_taps(const bf_flex_shape *s, int j, int *i0, int *i1, double *w0, double *w1) {
    if (s->channels == BF_FLEX_CHANNELS_EXPAND) {
        *i0 = *i1 = s->c_out % s->c_in == 0 ? j / (s->c_out / s->c_in) : j % s->c_in;
        *w0 = 1, *w1 = 0;
        return;
    }
    double src = fmax(0.0, (j + 0.5) * s->c_in / s->c_out - 0.5);
    *i0 = (int)floor(src);
    *i1 = *i0 + 1 < s->c_in ? *i0 + 1 : s->c_in - 1;
    *w1 = src - *i0, *w0 = 1 - *w1;
}
static double ref_widen(const bf_flex_shape *s, const float *P, int n, int j, int p) {
    int i0, i1;
    double w0, w1;
    ref_taps(s, j, &i0, &i1, &w0, &w1);
    const float *pn = P + (size_t)n * s->c_in * s->hw;
    return w0 * pn[i0 * s->hw + p] + w1 * pn[i1 * s->hw + p];
}
/* the transpose: scatter g [n, c_out, hw] into dP [n, c_in, hw] */
static void ref_fold(const bf_flex_shape *s, const double *g, double *dP) {
    memset(dP, 0, ins(s) * sizeof(double));
    for (int n = 0; n < s->n; n++)
        for (int j = 0; j < s->c_out; j++) {
            int i0, i1;
            double w0, w1;
            ref_taps(s, j, &i0, &i1, &w0, &w1);
            for (int p = 0; p < s->hw; p++) {
                double gv = g[((size_t)n * s->c_out + j) * s->hw + p];
                dP[((size_t)n * s->c_in + i0) * s->hw + p] += w0 * gv;
                dP[((size_t)n * s->c_in + i1) * s->hw + p] += w1 * gv;
            }
        }
}
static void check_close_d(const char *what, const float *got, const double *want, size_t n, double atol, double rtol) {
    size_t bad = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(got[i] - want[i]) <= atol + rtol * fabs(want[i])) && bad++ == 0) worst = i;
    CHECK(bad == 0, "%s: %zu of %zu off, first %zu: %.9g vs %.9g", what, bad, n, worst, got[worst], want[worst]);
}

/* ---- widening ---- */

static void test_widen_case(int c_in, int c_out, bf_flex_channel_rule rule, const int *expect_src) {
    bf_flex_shape s = {.n = 2, .c_in = c_in, .c_out = c_out, .hw = 5, .channels = rule};
    float *P = rnd(ins(&s), -2, 2), *W = rnd(outs(&s), 9, 9), *G = rnd(outs(&s), -1, 1), *dP = rnd(ins(&s), 9, 9);
    double *ref = malloc(outs(&s) * sizeof(double)), *g = malloc(outs(&s) * sizeof(double)),
           *dref = malloc(ins(&s) * sizeof(double));
    CHECK_OK(cpu->ops->flex_widen_forward(cpu, &s, P, W));
    CHECK_OK(cpu->ops->flex_widen_backward(cpu, &s, G, dP));
    char what[96];
    size_t copies_wrong = 0;
    for (int n = 0; n < s.n; n++)
        for (int j = 0; j < c_out; j++)
            for (int p = 0; p < s.hw; p++) {
                size_t o = ((size_t)n * c_out + j) * s.hw + p;
                ref[o] = ref_widen(&s, P, n, j, p);
                if (expect_src && W[o] != P[((size_t)n * c_in + expect_src[j]) * s.hw + p]) copies_wrong++;
            }
    for (size_t i = 0; i < outs(&s); i++) g[i] = G[i];
    ref_fold(&s, g, dref);
    snprintf(what, sizeof what, "%s %d->%d", rule == BF_FLEX_CHANNELS_EXPAND ? "expand" : "bilinear", c_in, c_out);
    CHECK(copies_wrong == 0, "%s: %zu widened values are not exact copies of the expected channel", what, copies_wrong);
    check_close_d(what, W, ref, outs(&s), 1e-6, 1e-6);
    check_close_d(what, dP, dref, ins(&s), 1e-6, 1e-6);
    free(ref), free(g), free(dref);
    bf_free(cpu, P), bf_free(cpu, W), bf_free(cpu, G), bf_free(cpu, dP);
}

static void test_widen(void) {
    const int div[] = {0, 0, 1, 1, 2, 2, 3, 3}, tile[] = {0, 1, 2, 0, 1, 2, 0, 1}, first[] = {0, 1, 2}, id[] = {0, 1, 2, 3};
    test_widen_case(4, 8, BF_FLEX_CHANNELS_EXPAND, div);
    test_widen_case(3, 8, BF_FLEX_CHANNELS_EXPAND, tile);
    test_widen_case(8, 3, BF_FLEX_CHANNELS_EXPAND, first);
    test_widen_case(4, 4, BF_FLEX_CHANNELS_EXPAND, id);
    test_widen_case(3, 8, BF_FLEX_CHANNELS_BILINEAR, NULL);
    test_widen_case(8, 3, BF_FLEX_CHANNELS_BILINEAR, NULL);
    test_widen_case(1, 4, BF_FLEX_CHANNELS_BILINEAR, NULL);
    test_widen_case(5, 13, BF_FLEX_CHANNELS_BILINEAR, NULL);
    test_widen_case(4, 4, BF_FLEX_CHANNELS_BILINEAR, id);

    /* VGG-16's first layer 3->64 tiles: fold-back of ones counts 22, 21, 21 */
    bf_flex_shape s = {.n = 1, .c_in = 3, .c_out = 64, .hw = 1, .channels = BF_FLEX_CHANNELS_EXPAND};
    float *ones = rnd(64, 1, 1), *dP = buf(3);
    CHECK_OK(cpu->ops->flex_widen_backward(cpu, &s, ones, dP));
    CHECK(dP[0] == 22 && dP[1] == 21 && dP[2] == 21, "3->64 fold-back counts %g %g %g", dP[0], dP[1], dP[2]);
    bf_free(cpu, ones), bf_free(cpu, dP);

    /* bilinear 3->8, channel 1 by hand: src = 1.5*3/8 - 0.5 = 0.0625 */
    bf_flex_shape b = {.n = 1, .c_in = 3, .c_out = 8, .hw = 1, .channels = BF_FLEX_CHANNELS_BILINEAR};
    float P[3] = {1, 17, 5}, W[8];
    CHECK_OK(cpu->ops->flex_widen_forward(cpu, &b, P, W));
    CHECK_CLOSE(W[1], 0.9375 * 1 + 0.0625 * 17, 1e-6, 1e-6, "bilinear 3->8 channel 1");
    CHECK(W[0] == 1 && W[7] == 5, "bilinear 3->8 ends clamp: %g %g", W[0], W[7]);
}

/* ---- max joint ---- */

static void test_max_case(bf_flex_channel_rule rule, bf_flex_tie_rule ties) {
    bf_flex_shape s = {.n = 2, .c_in = 3, .c_out = 8, .hw = 6, .channels = rule, .ties = ties};
    const size_t no = outs(&s);
    float *P = rnd(ins(&s), -1, 1), *W = buf(no), *C = rnd(no, -1, 1), *Y = buf(no), *dy = rnd(no, -1, 1),
          *dC = buf(no), *dP = buf(ins(&s));
    CHECK_OK(cpu->ops->flex_widen_forward(cpu, &s, P, W));
    for (size_t i = 0; i < no; i += 3) C[i] = W[i]; /* exact ties */
    float wins = 7;
    CHECK_OK(cpu->ops->flex_max_forward(cpu, &s, C, P, Y, &wins));
    CHECK_OK(cpu->ops->flex_max_backward(cpu, &s, C, P, dy, dC, dP));
    double *g = malloc(no * sizeof(double)), *dref = malloc(ins(&s) * sizeof(double));
    size_t expect_wins = 0, bad_y = 0, bad_dc = 0;
    for (size_t i = 0; i < no; i++) {
        expect_wins += C[i] > W[i];
        bad_y += Y[i] != (C[i] > W[i] ? C[i] : W[i]);
        float want = C[i] > W[i] ? dy[i] : C[i] == W[i] ? (ties == BF_FLEX_TIE_SPLIT ? dy[i] / 2 : 0) : 0;
        bad_dc += dC[i] != want;
        g[i] = (double)dy[i] - want;
    }
    ref_fold(&s, g, dref);
    CHECK(bad_y == 0, "max_forward rule %d: %zu outputs differ from max(C, P~)", rule, bad_y);
    CHECK(wins == 7 + (float)expect_wins, "conv_wins %g, expected 7 + %zu (ties count as pool)", wins, expect_wins);
    CHECK(bad_dc == 0, "max_backward rule %d ties %d: %zu dconv values wrong", rule, ties, bad_dc);
    check_close_d("max_backward dpooled", dP, dref, ins(&s), 1e-6, 1e-6);
    CHECK_OK(cpu->ops->flex_max_forward(cpu, &s, C, P, Y, NULL)); /* conv_wins is optional */
    free(g), free(dref);
    float *all[] = {P, W, C, Y, dy, dC, dP};
    for (int i = 0; i < 7; i++) bf_free(cpu, all[i]);
}

/* ---- masks ---- */

static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
static int kind_is(bf_flex_mask k, bf_flex_mask a, bf_flex_mask b) { return k == a || k == b; }

/* The value a stochastic mask rounds: sigmoid(L) (FS), clamp(L, 0, 1) (FC) or L (FP). */
static double squashed(bf_flex_mask k, double L) {
    if (kind_is(k, BF_FLEX_MASK_STOCHASTIC_FSBP, BF_FLEX_MASK_STOCHASTIC_FSBS) || k == BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED)
        return sigmoid_d(L);
    if (kind_is(k, BF_FLEX_MASK_STOCHASTIC_FCBP, BF_FLEX_MASK_STOCHASTIC_FCBS) || k == BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED)
        return fmin(1, fmax(0, L));
    return L;
}

/* reference mask; *ambiguous when a stochastic draw lies within rounding of its threshold */
static double ref_mask(bf_flex_mask k, double f, uint64_t seed, size_t i, double L, int *ambiguous) {
    *ambiguous = 0;
    if (k == BF_FLEX_MASK_SIGMOID_HARD) return fmin(1, fmax(0, L / 6 + 0.5));
    if (k == BF_FLEX_MASK_SIGMOID_MUL) return sigmoid_d(f * L);
    if (kind_is(k, BF_FLEX_MASK_STE_FPBP, BF_FLEX_MASK_STE_FPBS)) return L > 0.5;
    if (kind_is(k, BF_FLEX_MASK_STE_FSBP, BF_FLEX_MASK_STE_FSBS)) return sigmoid_d(L) > 0.5;
    double v = squashed(k, L);
    double u = bf_uniform(seed, i), frac = v - floor(v);
    *ambiguous = fabs(u - frac) < 1e-6;
    return floor(v) + (u < frac);
}
static double ref_rule(bf_flex_mask k, double f, double L, double m) {
    switch (k) {
    case BF_FLEX_MASK_SIGMOID_HARD: return L > -3 && L < 3 ? 1.0 / 6 : 0;
    case BF_FLEX_MASK_SIGMOID_MUL: return f * m * (1 - m);
    case BF_FLEX_MASK_STE_FPBS: case BF_FLEX_MASK_STE_FSBS: case BF_FLEX_MASK_STOCHASTIC_FPBS:
    case BF_FLEX_MASK_STOCHASTIC_FSBS: case BF_FLEX_MASK_STOCHASTIC_FCBS: return sigmoid_d(L) * (1 - sigmoid_d(L));
    case BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED: case BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED: {
        double s = sigmoid_d(squashed(k, L)); /* the reference's quirk: sigmoid' at the squashed value */
        return s * (1 - s);
    }
    default: return 1;
    }
}

static void test_mask_kind(bf_flex_mask k) {
    bf_flex_shape s = {.n = 2, .c_in = 4, .c_out = 4, .hw = 64};
    const size_t no = outs(&s);
    const float f = 2.5f, specials[] = {-3, 3, 0, 0.5f, 1.5f, -0.5f, 1, 2};
    float *L = rnd(no, -4, 4), *C = rnd(no, -1, 1), *Wd = rnd(no, -1, 1), *M = buf(no), *Y = buf(no),
          *dy = rnd(no, -1, 1), *dC = buf(no), *dL = buf(no), *dW = buf(no);
    memcpy(L, specials, sizeof specials);
    float msum = 1.5f;
    CHECK_OK(cpu->ops->flex_mask_forward(cpu, &s, k, f, bf_draws_of(1234), L, C, Wd, M, Y, &msum));
    CHECK_OK(cpu->ops->flex_mask_backward(cpu, &s, k, f, L, M, C, Wd, dy, dC, dL, dW));
    size_t bad_m = 0, bad_y = 0, bad_b = 0, worst = 0;
    double total = 0;
    for (size_t i = 0; i < no; i++) {
        int amb;
        double m = ref_mask(k, f, 1234, i, L[i], &amb), mi = M[i];
        if (!amb && fabs(mi - m) > 1e-6) bad_m++, worst = i;
        total += mi;
        bad_y += fabs(Y[i] - (Wd[i] * (1 - mi) + C[i] * mi)) > 1e-6;
        double dl = dy[i] * ((double)C[i] - Wd[i]) * ref_rule(k, f, L[i], mi);
        bad_b += dC[i] != dy[i] * M[i] || dW[i] != dy[i] * (1 - M[i]) || fabs(dL[i] - dl) > 1e-6 + 1e-5 * fabs(dl);
    }
    CHECK(bad_m == 0, "mask kind %d: %zu values wrong, e.g. L=%g mask %g", k, bad_m, L[worst], M[worst]);
    CHECK(bad_y == 0 && bad_b == 0, "mask kind %d: %zu outputs, %zu gradients wrong", k, bad_y, bad_b);
    CHECK_CLOSE(msum, 1.5 + total, 1e-4, 1e-6, "conv_mask_sum");
    if (k == BF_FLEX_MASK_SIGMOID_HARD)
        CHECK(M[0] == 0 && M[1] == 1 && M[2] == 0.5f && M[4] == 0.75f && dL[0] == 0 && dL[1] == 0,
              "hard sigmoid at -3, 3, 0, 1.5: %g %g %g %g, dM/dL at +-3 not 0", M[0], M[1], M[2], M[4]);
    if (kind_is(k, BF_FLEX_MASK_STE_FPBP, BF_FLEX_MASK_STE_FSBP))
        CHECK(M[3] == (k == BF_FLEX_MASK_STE_FSBP) && M[2] == 0, "STE strict thresholds: L=0.5 -> %g, L=0 -> %g", M[3], M[2]);
    float *all[] = {L, C, Wd, M, Y, dy, dC, dL, dW};
    for (int i = 0; i < 9; i++) bf_free(cpu, all[i]);
}

/* Stochastic roundings: repeatable for a seed, different for another, unbiased (mean of M close
 * to the mean of the rounded value), and BS/BP variants draw the same forward mask (the reference's
 * squashed-BS kinds the same as their BS kind). */
static bf_flex_mask forward_twin(bf_flex_mask k) {
    if (k == BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED) return BF_FLEX_MASK_STOCHASTIC_FSBS;
    if (k == BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED) return BF_FLEX_MASK_STOCHASTIC_FCBS;
    return k ^ 1; /* FPBP <-> FPBS, ... */
}

static void test_stochastic(void) {
    bf_flex_shape s = {.n = 4, .c_in = 50, .c_out = 50, .hw = 1000}; /* 200000 elements: the threaded path */
    const size_t no = outs(&s);
    float *L = rnd(no, -1.5f, 2.5f), *C = rnd(no, -1, 1), *Wd = rnd(no, -1, 1), *M1 = buf(no), *M2 = buf(no), *Y = buf(no);
    for (bf_flex_mask k = BF_FLEX_MASK_STOCHASTIC_FPBP; k < BF_FLEX_MASK_COUNT; k++) {
        CHECK_OK(cpu->ops->flex_mask_forward(cpu, &s, k, 1, bf_draws_of(42), L, C, Wd, M1, Y, NULL));
        CHECK_OK(cpu->ops->flex_mask_forward(cpu, &s, forward_twin(k), 1, bf_draws_of(42), L, C, Wd, M2, Y, NULL));
        CHECK(memcmp(M1, M2, no * sizeof(float)) == 0, "stochastic kind %d: same seed, different masks", k);
        CHECK_OK(cpu->ops->flex_mask_forward(cpu, &s, k, 1, bf_draws_of(43), L, C, Wd, M2, Y, NULL));
        size_t differ = 0, off_grid = 0;
        double sum_m = 0, sum_v = 0, var = 0;
        for (size_t i = 0; i < no; i++) {
            differ += M1[i] != M2[i];
            double v = squashed(k, L[i]);
            double frac = v - floor(v);
            off_grid += M1[i] != floor(v) && M1[i] != floor(v) + 1;
            sum_m += M1[i], sum_v += v, var += frac * (1 - frac);
        }
        /* two independent draws differ with probability 2 frac (1 - frac) per element */
        CHECK(differ > var, "stochastic kind %d: seeds 42 and 43 differ in only %zu elements (expected %.0f)", k,
              differ, 2 * var);
        CHECK(off_grid == 0, "stochastic kind %d: %zu values are neither floor(v) nor floor(v)+1", k, off_grid);
        CHECK(fabs(sum_m - sum_v) < 5 * sqrt(var) + 1e-9, "stochastic kind %d: mean %g, expected %g (sd %g)", k,
              sum_m / no, sum_v / no, sqrt(var) / no);
    }
    float *all[] = {L, C, Wd, M1, M2, Y};
    for (int i = 0; i < 6; i++) bf_free(cpu, all[i]);
}

static void test_logits_threshold(void) {
    bf_flex_shape s = {.n = 3, .c_in = 2, .c_out = 5, .hw = 7};
    const size_t K = (size_t)s.c_out * s.hw, no = outs(&s);
    float *W = rnd(no, -1, 1), *T = rnd(K, -1, 1), *L = buf(no), *dL = rnd(no, -1, 1), *dT = buf(K);
    CHECK_OK(cpu->ops->flex_logits_forward(cpu, &s, W, T, L));
    CHECK_OK(cpu->ops->flex_threshold_backward(cpu, &s, dL, dT));
    size_t bad_l = 0, bad_t = 0;
    for (size_t i = 0; i < no; i++) bad_l += L[i] != W[i] - T[i % K];
    for (size_t k = 0; k < K; k++) bad_t += dT[k] != (float)-((double)dL[k] + dL[K + k] + dL[2 * K + k]);
    CHECK(bad_l == 0 && bad_t == 0, "logits: %zu wrong; threshold gradient: %zu wrong", bad_l, bad_t);
    float *all[] = {W, T, L, dL, dT};
    for (int i = 0; i < 5; i++) bf_free(cpu, all[i]);
}

/* ---- finite differences ---- */

typedef struct fd_ctx {
    int op; /* 0 widen (P -> Y), 1 max joint (C, P -> Y), 2 mask joint (C, W, T -> L, M, Y) */
    bf_flex_shape s;
    bf_flex_mask kind;
    float factor;
    float *P, *C, *W, *T, *L, *M, *Y;
} fd_ctx;

static double fd_loss(const fd_ctx *c, const float *r, size_t *failures) {
    bf_status st = c->op == 0 ? cpu->ops->flex_widen_forward(cpu, &c->s, c->P, c->Y)
                   : c->op == 1 ? cpu->ops->flex_max_forward(cpu, &c->s, c->C, c->P, c->Y, NULL)
                                : cpu->ops->flex_logits_forward(cpu, &c->s, c->W, c->T, c->L);
    if (st == BF_OK && c->op == 2)
        st = cpu->ops->flex_mask_forward(cpu, &c->s, c->kind, c->factor, bf_draws_of(0), c->L, c->C, c->W, c->M, c->Y, NULL);
    if (st != BF_OK) ++*failures;
    double loss = 0;
    for (size_t i = 0; i < outs(&c->s); i++) loss += (double)r[i] * c->Y[i];
    return loss;
}

static void fd_check(const char *what, const fd_ctx *c, const float *r, float *x, size_t nx, const float *ana) {
    size_t failed = 0, worst_i = 0, failures = 0;
    double worst = 0, largest = 0;
    for (size_t i = 0; i < nx; i++) {
        const float save = x[i], plus = save + STEP, minus = save - STEP;
        x[i] = plus;
        double lp = fd_loss(c, r, &failures);
        x[i] = minus;
        double lm = fd_loss(c, r, &failures);
        x[i] = save;
        double num = (lp - lm) / ((double)plus - (double)minus);
        double err = fabs(num - ana[i]) / fmax(1.0, fmax(fabs(num), fabs(ana[i])));
        largest = fmax(largest, fabs(ana[i]));
        failed += err > TOLERANCE;
        if (err >= worst) worst = err, worst_i = i;
    }
    CHECK(failures == 0, "%s: %zu forward calls failed: %s", what, failures, bf_last_error());
    CHECK(largest > 0, "%s: every analytic gradient is zero", what);
    CHECK(failed == 0, "%s: %zu of %zu off, worst at %zu: analytic %.6g (error %.3g)", what, failed, nx, worst_i,
          ana[worst_i], worst);
    printf("  %-48s %4zu elements, worst scaled error %.2e\n", what, nx, worst);
}

static void grad_widen(bf_flex_channel_rule rule, int c_in, int c_out) {
    fd_ctx c = {.op = 0, .s = {.n = 2, .c_in = c_in, .c_out = c_out, .hw = 5, .channels = rule}};
    float *r = rnd(outs(&c.s), -1, 1), *dP = buf(ins(&c.s));
    c.P = rnd(ins(&c.s), -1, 1), c.Y = buf(outs(&c.s));
    CHECK_OK(cpu->ops->flex_widen_backward(cpu, &c.s, r, dP));
    char what[96];
    snprintf(what, sizeof what, "widen %s %d->%d: d/dpooled", rule ? "bilinear" : "expand", c_in, c_out);
    fd_check(what, &c, r, c.P, ins(&c.s), dP);
    bf_free(cpu, r), bf_free(cpu, dP), bf_free(cpu, c.P), bf_free(cpu, c.Y);
}

static void grad_max(bf_flex_channel_rule rule, bf_flex_tie_rule ties, int c_in, int c_out) {
    fd_ctx c = {.op = 1, .s = {.n = 2, .c_in = c_in, .c_out = c_out, .hw = 9, .channels = rule, .ties = ties}};
    const size_t no = outs(&c.s);
    float *r = rnd(no, -1, 1), *W = buf(no), *dC = buf(no), *dP = buf(ins(&c.s));
    c.P = rnd(ins(&c.s), -1, 1), c.C = rnd(no, -1, 1), c.Y = buf(no);
    CHECK_OK(cpu->ops->flex_widen_forward(cpu, &c.s, c.P, W));
    for (size_t i = 0; i < no; i++) /* keep every |C - P~| > 2*STEP: no perturbation flips a winner */
        if (fabsf(c.C[i] - W[i]) < 0.01f) c.C[i] = W[i] + 0.05f;
    CHECK_OK(cpu->ops->flex_max_backward(cpu, &c.s, c.C, c.P, r, dC, dP));
    char what[96];
    snprintf(what, sizeof what, "max %s/%s %d->%d: d/dconv", rule ? "bilinear" : "expand", ties ? "pool" : "split",
             c_in, c_out);
    fd_check(what, &c, r, c.C, no, dC);
    snprintf(what, sizeof what, "max %s/%s %d->%d: d/dpooled", rule ? "bilinear" : "expand", ties ? "pool" : "split",
             c_in, c_out);
    fd_check(what, &c, r, c.P, ins(&c.s), dP);
    float *all[] = {r, W, dC, dP, c.P, c.C, c.Y};
    for (int i = 0; i < 7; i++) bf_free(cpu, all[i]);
}

static void grad_mask(bf_flex_mask kind, float factor) {
    fd_ctx c = {.op = 2, .s = {.n = 3, .c_in = 2, .c_out = 4, .hw = 6}, .kind = kind, .factor = factor};
    const size_t no = outs(&c.s), K = (size_t)c.s.c_out * c.s.hw;
    float *r = rnd(no, -1, 1), *dC = buf(no), *dL = buf(no), *dW = buf(no), *dT = buf(K);
    c.C = rnd(no, -1, 1), c.W = rnd(no, -4, 4), c.T = rnd(K, -0.5f, 0.5f);
    c.L = buf(no), c.M = buf(no), c.Y = buf(no);
    for (size_t i = 0; i < no; i++) /* keep the logits 2*STEP away from the hard sigmoid's kinks at +-3 */
        if (fabsf(fabsf(c.W[i] - c.T[i % K]) - 3) < 0.01f) c.W[i] += 0.05f;
    size_t failures = 0;
    fd_loss(&c, r, &failures); /* forward, to fill L and M */
    CHECK_OK(cpu->ops->flex_mask_backward(cpu, &c.s, kind, factor, c.L, c.M, c.C, c.W, r, dC, dL, dW));
    CHECK_OK(cpu->ops->flex_threshold_backward(cpu, &c.s, dL, dT));
    CHECK_OK(cpu->ops->add_inplace(cpu, dW, dL, no)); /* logits = widened - threshold: the full dwidened */
    const char *name = kind == BF_FLEX_MASK_SIGMOID_HARD ? "sigmoid_hard" : "sigmoid_mul";
    char what[96];
    snprintf(what, sizeof what, "mask %s: d/dconv", name);
    fd_check(what, &c, r, c.C, no, dC);
    snprintf(what, sizeof what, "mask %s: d/dwidened (with logits)", name);
    fd_check(what, &c, r, c.W, no, dW);
    snprintf(what, sizeof what, "mask %s: d/dthreshold", name);
    fd_check(what, &c, r, c.T, K, dT);
    float *all[] = {r, dC, dL, dW, dT, c.C, c.W, c.T, c.L, c.M, c.Y};
    for (int i = 0; i < 11; i++) bf_free(cpu, all[i]);
}

static void test_args(void) {
    float x[8] = {0};
    bf_flex_shape bad = {.n = 1, .c_in = 0, .c_out = 2, .hw = 2}, ok = {.n = 1, .c_in = 1, .c_out = 1, .hw = 4};
    CHECK(cpu->ops->flex_widen_forward(cpu, NULL, x, x) == BF_ERR_ARG, "NULL shape accepted");
    CHECK(cpu->ops->flex_max_backward(cpu, &bad, x, x, x, x, x) == BF_ERR_ARG, "c_in = 0 accepted");
    CHECK(cpu->ops->flex_mask_forward(cpu, &ok, BF_FLEX_MASK_COUNT, 1, bf_draws_of(0), x, x, x, x, x, NULL) == BF_ERR_ARG,
          "unknown mask kind accepted");
    CHECK(cpu->ops->flex_threshold_backward(cpu, &ok, x, NULL) == BF_ERR_ARG, "NULL output accepted");
}

/* flex_mask_stats: count of mask > 0.5 and sum of |mask - 0.5| * 2, by hand */
static void test_mask_stats_cpu(bf_backend *b) {
    const float mask[6] = {0.0f, 1.0f, 0.5f, 0.75f, 0.25f, 0.9f};
    float out[2] = {-1, -1};
    CHECK_OK(b->ops->flex_mask_stats(b, mask, 6, out));
    CHECK_CLOSE(out[0], 3.0, 0, 0, "mask stats: 1, 0.75 and 0.9 choose the conv");
    CHECK_CLOSE(out[1], 1 + 1 + 0 + 0.5 + 0.5 + 0.8, 1e-6, 1e-6, "mask stats: binariness sum");
}

int main(void) {
    CHECK_OK(bf_backend_create_cpu(2, &cpu));
    if (!cpu) return bf_test_finish();
    test_widen();
    for (int rule = 0; rule < 2; rule++)
        for (int ties = 0; ties < 2; ties++) test_max_case(rule, ties);
    for (bf_flex_mask k = 0; k < BF_FLEX_MASK_COUNT; k++) test_mask_kind(k);
    test_stochastic();
    test_logits_threshold();
    test_args();
    test_mask_stats_cpu(cpu);

    printf("finite-difference gradient checks (step %g, tolerance %g):\n", STEP, TOLERANCE);
    grad_widen(BF_FLEX_CHANNELS_EXPAND, 3, 8);
    grad_widen(BF_FLEX_CHANNELS_EXPAND, 4, 8);
    grad_widen(BF_FLEX_CHANNELS_BILINEAR, 3, 8);
    grad_widen(BF_FLEX_CHANNELS_BILINEAR, 8, 3);
    for (int rule = 0; rule < 2; rule++)
        for (int ties = 0; ties < 2; ties++) grad_max(rule, ties, 3, 8);
    grad_max(BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 4, 8);
    grad_max(BF_FLEX_CHANNELS_BILINEAR, BF_FLEX_TIE_POOL, 8, 3);
    grad_mask(BF_FLEX_MASK_SIGMOID_HARD, 1);
    grad_mask(BF_FLEX_MASK_SIGMOID_MUL, 2);

    bf_backend_destroy(cpu);
    return bf_test_finish();
}
