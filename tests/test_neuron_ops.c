/* test_neuron_ops.c - the spiking-neuron ops of the CPU backend (ops.h, bf_neuron_params): forward
 * values and statistics against a naive double reference, the BPTT gradient against an independent
 * naive reference, finite differences of a smooth relaxation, T = 1 against the stateless step,
 * thread-count determinism and argument checks; the charge written over x (as the memory plan runs
 * the forward) against separate buffers; spikes as bits (spikes_pack/unpack) against the layout
 * of their contract.
 *
 * Most inputs are "dyadic": multiples of 1/64 in [-1, 2) with decay 0.5 (or IF's 1) and threshold
 * 1 or 0.75. Then every float operation of the op is exact (at most 22 fractional bits over 16 steps,
 * |V| < 32), so the float op and the double reference agree bit for bit, and exact threshold hits
 * (H == threshold, which must spike) and exact surrogate edges (|u| == width/2) occur often. A
 * general decay (0.9) is checked separately, with the elements whose reference charge comes within
 * 1e-4 of the threshold left out from that step on (float and double may round to opposite sides).
 *
 * The finite-difference check makes the surrogate gradient a true gradient: around the forward's
 * spikes S*[t] and charges H*[t], the relaxed spike S~[t](H) = S*[t] + Phi(H - thr) - Phi(H*[t] - thr),
 * with Phi a primitive of the surrogate g, equals S*[t] at the base point and has dS~/dH = g, so
 * the exact gradient of sum dy * S~ through V = reset(H, S~) (or through the constant S* when
 * detach_reset) is the contract's BPTT gradient for every reset mode. It is evaluated in double
 * with central differences and compared with the op. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "../src/kernels/surrogate.h" /* bf_surrogate_grad, bf_surrogate_exp_neg: float, shared with neuron.cu */
#include "bioflex/ops.h"
#include "testutil.h"

#define PI 3.14159265358979323846

static bf_backend *cpu;
static unsigned long next_seed = 4242;
static size_t threshold_hits; /* exact H == threshold steps seen by test_forward_exact */

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
/* multiples of 1/64 in [-1, 2) */
static float *dyadic(size_t n) {
    float *p = buf(n);
    const unsigned long seed = next_seed++;
    for (size_t i = 0; i < n; i++) p[i] = (float)(floor(bf_uniform(seed, i) * 192.0) - 64.0) / 64.0f;
    return p;
}
static float *garbage(size_t n) { return rnd(n, 1e3f, 2e3f); } /* what an op that skips elements leaves */

static const char *kind_name[] = {"lif", "if", "clamp01", "step"};
static const char *reset_name[] = {"hard", "soft", "none"};
static const char *surr_name[] = {"sigmoid", "arctan", "rect", "triangle", "tanh"};

static bf_neuron_params params(bf_neuron_kind kind, int T, float decay, float thr, bf_reset_mode reset, int detach,
                               int through, bf_surrogate surr) {
    bf_neuron_params p = {.kind = kind, .T = T, .decay = decay, .threshold = thr, .reset = reset,
                          .detach_reset = detach, .through_time = through, .surrogate = surr,
                          .alpha = 4.0f, .width = 1.0f, .height = 0.3f};
    return p;
}

/* ---- naive references, in double ---- */

static double ref_g(const bf_neuron_params *p, double u) {
    switch (p->surrogate) {
    case BF_SURROGATE_SIGMOID: {
        const double s = 1.0 / (1.0 + exp(-p->alpha * u));
        return p->alpha * s * (1.0 - s);
    }
    case BF_SURROGATE_ARCTAN: {
        const double k = PI / 2.0 * p->alpha * u;
        return (p->alpha / 2.0) / (1.0 + k * k);
    }
    case BF_SURROGATE_RECTANGULAR: return fabs(u) < p->width / 2.0 ? p->height : 0.0;
    case BF_SURROGATE_TRIANGLE: return p->height * fmax(0.0, 1.0 - fabs(u) / p->width);
    case BF_SURROGATE_TANH: return p->height * (1.0 - tanh(u) * tanh(u));
    }
    return NAN;
}

/* Phi with Phi' = g (only for the smooth surrogates) */
static double ref_primitive(const bf_neuron_params *p, double u) {
    switch (p->surrogate) {
    case BF_SURROGATE_SIGMOID: return 1.0 / (1.0 + exp(-p->alpha * u));
    case BF_SURROGATE_ARCTAN: return atan(PI / 2.0 * p->alpha * u) / PI + 0.5;
    case BF_SURROGATE_TANH: return p->height * tanh(u);
    case BF_SURROGATE_TRIANGLE: {
        const double w = p->width, a = fabs(u), sign = u < 0 ? -1.0 : 1.0;
        return p->height * sign * (a >= w ? w / 2.0 : a - a * a / (2.0 * w));
    }
    default: return NAN;
    }
}

static double ref_decay(const bf_neuron_params *p) { return p->kind == BF_NEURON_IF ? 1.0 : p->decay; }

/* One element's forward over T steps from its column x[t*n + i] (col[t]); h and s out (may be NULL). */
static void ref_forward_column(const bf_neuron_params *p, const double *col, double *y, double *h, double *s) {
    double v = 0.0;
    for (int t = 0; t < p->T; t++) {
        const double xv = col[t];
        if (p->kind == BF_NEURON_CLAMP01) {
            y[t] = xv < 0 ? 0 : xv > 1 ? 1 : xv;
            continue;
        }
        if (p->kind == BF_NEURON_STEP) {
            y[t] = xv > 0 ? 1 : 0;
            continue;
        }
        const double H = ref_decay(p) * v + xv, S = H - p->threshold >= 0 ? 1.0 : 0.0;
        y[t] = S;
        if (h) h[t] = H;
        if (s) s[t] = S;
        v = p->reset == BF_RESET_HARD ? H * (1.0 - S) : p->reset == BF_RESET_SOFT ? H - p->threshold * S : H;
    }
}

static void column(const float *a, size_t n, size_t i, int T, double *col) {
    for (int t = 0; t < T; t++) col[t] = a[(size_t)t * n + i];
}

/* dx of one element by BPTT, written as the chain rule through the graph H -> S -> y and
 * (H, S) -> V -> H[t+1], with dS/dH = g and the S -> V edge cut when detach_reset. */
static void ref_backward_column(const bf_neuron_params *p, const double *xcol, const double *dycol, double *dx) {
    double y[64], H[64], S[64];
    if (p->kind == BF_NEURON_CLAMP01 || p->kind == BF_NEURON_STEP) {
        for (int t = 0; t < p->T; t++)
            dx[t] = p->kind == BF_NEURON_CLAMP01 ? (xcol[t] >= 0 && xcol[t] <= 1 ? dycol[t] : 0.0)
                                                 : dycol[t] * ref_g(p, xcol[t]);
        return;
    }
    ref_forward_column(p, xcol, y, H, S);
    double dV = 0.0; /* dL/dV[t] from the steps after t */
    for (int t = p->T - 1; t >= 0; t--) {
        double dH = 0.0, dS = dycol[t]; /* y[t] = S[t] */
        if (p->through_time) {
            double dS_from_V = 0.0;
            switch (p->reset) {
            case BF_RESET_HARD: /* V = H * (1 - S) */
                dH += dV * (1.0 - S[t]);
                dS_from_V = dV * -H[t];
                break;
            case BF_RESET_SOFT: /* V = H - threshold * S */
                dH += dV;
                dS_from_V = dV * -(double)p->threshold;
                break;
            case BF_RESET_NONE: dH += dV; break; /* V = H */
            }
            if (!p->detach_reset) dS += dS_from_V;
        }
        dH += dS * ref_g(p, H[t] - p->threshold);
        dx[t] = dH; /* H = decay * V[t-1] + X */
        dV = p->through_time ? ref_decay(p) * dH : 0.0;
    }
}

/* The relaxed loss of one element: sum_t w[t] * S~[t] (see the file comment). */
static double relaxed_loss(const bf_neuron_params *p, const double *xcol, const double *Hs, const double *Ss,
                           const double *w) {
    double v = 0.0, L = 0.0;
    for (int t = 0; t < p->T; t++) {
        const double H = ref_decay(p) * v + xcol[t];
        const double S = Ss[t] + ref_primitive(p, H - p->threshold) - ref_primitive(p, Hs[t] - p->threshold);
        L += w[t] * S;
        const double Sr = p->detach_reset ? Ss[t] : S;
        v = p->reset == BF_RESET_HARD ? H * (1.0 - Sr) : p->reset == BF_RESET_SOFT ? H - p->threshold * Sr : H;
    }
    return L;
}

/* ---- tests ---- */

/* Hand-computed sequences: exact threshold hits, a value just below it, the [T, n] layout (n = 2). */
static void test_forward_by_hand(void) {
    enum { T = 6, N = 2 };
    const float below = nextafterf(1.0f, 0.0f);
    /* x[t][i]: element 0 hits H == 1 exactly at t = 1 and 2; element 1 stays just below */
    const float xs[T][N] = {{0.5f, below}, {0.75f, 0.0f}, {1.0f, 0.0f}, {0.25f, 0.0f}, {2.0f, 0.0f}, {-1.0f, 0.0f}};
    struct {
        bf_neuron_kind kind;
        bf_reset_mode reset;
        float y0[T], h0[T];
    } cases[] = {
        {BF_NEURON_LIF, BF_RESET_HARD, {0, 1, 1, 0, 1, 0}, {0.5f, 1.0f, 1.0f, 0.25f, 2.125f, -1.0f}},
        {BF_NEURON_LIF, BF_RESET_SOFT, {0, 1, 1, 0, 1, 0}, {0.5f, 1.0f, 1.0f, 0.25f, 2.125f, -0.4375f}},
        {BF_NEURON_LIF, BF_RESET_NONE, {0, 1, 1, 1, 1, 0}, {0.5f, 1.0f, 1.5f, 1.0f, 2.5f, 0.25f}},
        {BF_NEURON_IF, BF_RESET_HARD, {0, 1, 1, 0, 1, 0}, {0.5f, 1.25f, 1.0f, 0.25f, 2.25f, -1.0f}},
    };
    float *x = buf(T * N), *y = buf(T * N), *h = buf(T * N), *stats = buf(2);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < N; i++) x[t * N + i] = xs[t][i];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const bf_neuron_params p = params(cases[c].kind, T, 0.5f, 1.0f, cases[c].reset, 0, 1, BF_SURROGATE_SIGMOID);
        stats[0] = 10.0f;
        stats[1] = 20.0f;
        CHECK_OK(cpu->ops->neuron_forward(cpu, &p, N, x, y, h, stats));
        float spikes = 0;
        for (int t = 0; t < T; t++) {
            CHECK(y[t * N] == cases[c].y0[t], "by hand %s/%s t=%d: y %g, expected %g", kind_name[p.kind],
                  reset_name[p.reset], t, y[t * N], cases[c].y0[t]);
            CHECK(h[t * N] == cases[c].h0[t], "by hand %s/%s t=%d: H %.9g, expected %.9g", kind_name[p.kind],
                  reset_name[p.reset], t, h[t * N], cases[c].h0[t]);
            CHECK(y[t * N + 1] == 0.0f, "by hand %s/%s t=%d: element 1 spiked", kind_name[p.kind],
                  reset_name[p.reset], t);
            spikes += cases[c].y0[t];
        }
        CHECK(h[1] == below, "by hand: element 1's first charge %.9g", h[1]);
        CHECK(stats[0] == 10.0f + spikes && stats[1] == 21.0f, "by hand %s/%s: stats %g %g, expected %g 21",
              kind_name[p.kind], reset_name[p.reset], stats[0], stats[1], 10.0f + spikes);
    }
    /* stateless: STEP is strict at 0 and ignores the threshold; CLAMP01's gradient is inclusive */
    const float sx[] = {-1.0f, 0.0f, 1e-30f, 0.5f, 1.0f, 1.5f, -0.0f};
    const float step_y[] = {0, 0, 1, 1, 1, 1, 0}, clamp_y[] = {0, 0, 1e-30f, 0.5f, 1, 1, 0},
                clamp_dx[] = {0, 2, 2, 2, 2, 0, 2};
    const size_t ns = sizeof sx / sizeof sx[0];
    float *dy = buf(ns), *dx = buf(ns);
    for (size_t i = 0; i < ns; i++) {
        x[i] = sx[i];
        dy[i] = 2.0f;
    }
    bf_neuron_params p = params(BF_NEURON_STEP, 1, 0.5f, 5.0f, BF_RESET_HARD, 0, 1, BF_SURROGATE_RECTANGULAR);
    stats[0] = stats[1] = 0.0f;
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, ns, x, y, NULL, stats));
    for (size_t i = 0; i < ns; i++) CHECK(y[i] == step_y[i], "step(%g) = %g", sx[i], y[i]);
    CHECK(stats[0] == 4.0f && stats[1] == 3.0f, "step stats %g %g, expected 4 3", stats[0], stats[1]);
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, ns, x, y, NULL, dy, dx));
    for (size_t i = 0; i < ns; i++) /* rectangular: 0.3 * 1[|x| < 0.5] */
        CHECK(dx[i] == (fabsf(sx[i]) < 0.5f ? 2.0f * 0.3f : 0.0f), "step backward at %g: %g", sx[i], dx[i]);
    p.kind = BF_NEURON_CLAMP01;
    stats[0] = stats[1] = 0.0f;
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, ns, x, y, NULL, stats));
    for (size_t i = 0; i < ns; i++) CHECK(y[i] == clamp_y[i], "clamp01(%g) = %g", sx[i], y[i]);
    CHECK_CLOSE(stats[0], 1e-30 + 0.5 + 1 + 1, 1e-6, 0, "clamp01 sum of y");
    CHECK(stats[1] == 3.0f, "clamp01 silent %g, expected 3", stats[1]);
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, ns, x, y, NULL, dy, dx));
    for (size_t i = 0; i < ns; i++) CHECK(dx[i] == clamp_dx[i], "clamp01 backward at %g: %g", sx[i], dx[i]);
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, h);
    bf_free(cpu, stats);
    bf_free(cpu, dy);
    bf_free(cpu, dx);
}

/* Forward values, charges and statistics on dyadic inputs: all exact. */
static void test_forward_exact(bf_neuron_kind kind, bf_reset_mode reset, float thr, int T, size_t n) {
    const bf_neuron_params p = params(kind, T, 0.5f, thr, reset, 0, 1, BF_SURROGATE_SIGMOID);
    const size_t total = (size_t)T * n;
    float *x = dyadic(total), *y = garbage(total), *h = garbage(total), *stats = buf(2);
    stats[0] = 3.0f;
    stats[1] = 4.0f;
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, h, stats));
    double col[64], ry[64], rh[64], spikes = 0, silent = 0;
    size_t bad_y = 0, bad_h = 0, hits = 0;
    const int stateful = kind == BF_NEURON_LIF || kind == BF_NEURON_IF;
    for (size_t i = 0; i < n; i++) {
        column(x, n, i, T, col);
        ref_forward_column(&p, col, ry, rh, NULL);
        double sum = 0;
        for (int t = 0; t < T; t++) {
            const size_t k = (size_t)t * n + i;
            bad_y += y[k] != ry[t];
            if (stateful) {
                bad_h += h[k] != rh[t];
                hits += rh[t] == thr;
            }
            sum += ry[t];
        }
        spikes += sum;
        silent += sum == 0;
    }
    CHECK(bad_y == 0 && bad_h == 0, "forward %s/%s thr=%g T=%d n=%zu: %zu spikes and %zu charges differ",
          kind_name[kind], reset_name[reset], thr, T, n, bad_y, bad_h);
    threshold_hits += hits;
    CHECK_CLOSE(stats[0], 3.0 + spikes, 0, 1e-7, "forward stats: spikes");
    CHECK(stats[1] == (float)(4.0 + silent), "forward %s/%s T=%d: silent %g, expected %g", kind_name[kind],
          reset_name[reset], T, stats[1], 4.0 + silent);
    /* stats is nullable, and charge for the stateless kinds */
    float *y2 = garbage(total);
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y2, stateful ? h : NULL, NULL));
    CHECK(memcmp(y, y2, total * sizeof(float)) == 0, "forward without stats differs");
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, y2);
    bf_free(cpu, h);
    bf_free(cpu, stats);
}

/* A general decay: spikes exact and charges close until the reference comes near the threshold. */
static void test_forward_general(bf_neuron_kind kind, bf_reset_mode reset) {
    const int T = 16;
    const size_t n = 500, total = (size_t)T * n;
    const bf_neuron_params p = params(kind, T, 0.9f, 1.0f, reset, 0, 1, BF_SURROGATE_SIGMOID);
    float *x = rnd(total, -0.5f, 1.5f), *y = garbage(total), *h = garbage(total);
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, h, NULL));
    double col[64], ry[64], rh[64];
    size_t bad = 0, ambiguous = 0, spikes = 0;
    for (size_t i = 0; i < n; i++) {
        column(x, n, i, T, col);
        ref_forward_column(&p, col, ry, rh, NULL);
        for (int t = 0; t < T; t++) {
            const size_t k = (size_t)t * n + i;
            if (fabs(rh[t] - p.threshold) < 1e-4) {
                ambiguous++;
                break;
            }
            bad += y[k] != ry[t] || fabs(h[k] - rh[t]) > 1e-5 * (1 + fabs(rh[t]));
            spikes += ry[t] != 0;
        }
    }
    CHECK(bad == 0, "forward %s/%s decay 0.9: %zu of %zu steps differ", kind_name[kind], reset_name[reset], bad,
          total);
    CHECK(ambiguous < n / 20 && spikes > total / 10, "forward %s/%s decay 0.9: %zu ambiguous elements, %zu spikes",
          kind_name[kind], reset_name[reset], ambiguous, spikes);
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, h);
}

/* The BPTT gradient against ref_backward_column, on dyadic inputs (the charges are then exact). */
static void test_backward_ref(bf_neuron_kind kind, bf_reset_mode reset, int detach, int through, bf_surrogate surr,
                              int T, size_t n) {
    const bf_neuron_params p = params(kind, T, 0.5f, 0.75f, reset, detach, through, surr);
    const size_t total = (size_t)T * n;
    float *x = dyadic(total), *y = garbage(total), *h = garbage(total), *dy = rnd(total, -1, 1),
          *dx = garbage(total), *ref = buf(total);
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, h, NULL));
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, n, x, y, h, dy, dx));
    double xcol[64], dycol[64], rdx[64], scale = 1.0;
    for (size_t i = 0; i < n; i++) {
        column(x, n, i, T, xcol);
        column(dy, n, i, T, dycol);
        ref_backward_column(&p, xcol, dycol, rdx);
        for (int t = 0; t < T; t++) {
            ref[(size_t)t * n + i] = (float)rdx[t];
            if (fabs(rdx[t]) > scale) scale = fabs(rdx[t]);
        }
    }
    size_t worst = 0;
    const double v = bf_test_max_violation(dx, ref, total, 1e-6 * scale, 1e-5, &worst);
    CHECK(v <= 1.0, "backward %s/%s detach=%d through=%d %s T=%d: dx[%zu] %.9g, reference %.9g (violation %.3g)",
          kind_name[kind], reset_name[reset], detach, through, surr_name[surr], T, worst, dx[worst], ref[worst], v);
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, h);
    bf_free(cpu, dy);
    bf_free(cpu, dx);
    bf_free(cpu, ref);
}

/* through_time = 0: every step on its own, dx = dy * g(H - threshold) exactly. */
static void test_backward_no_time(bf_reset_mode reset, bf_surrogate surr) {
    const int T = 8;
    const size_t n = 100, total = (size_t)T * n;
    const bf_neuron_params p = params(BF_NEURON_LIF, T, 0.5f, 1.0f, reset, 0, 0, surr);
    float *x = dyadic(total), *y = buf(total), *h = buf(total), *dy = rnd(total, -1, 1), *dx = garbage(total);
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, h, NULL));
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, n, x, y, h, dy, dx));
    size_t bad = 0;
    for (size_t k = 0; k < total; k++) bad += fabs(dx[k] - dy[k] * ref_g(&p, h[k] - 1.0)) > 1e-6;
    CHECK(bad == 0, "backward without time %s %s: %zu of %zu differ", reset_name[reset], surr_name[surr], bad, total);
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, h);
    bf_free(cpu, dy);
    bf_free(cpu, dx);
}

/* Central differences of the relaxed loss (file comment) against the op's dx. */
static void test_backward_fd(bf_neuron_kind kind, bf_reset_mode reset, int detach, bf_surrogate surr) {
    const int T = 10;
    const size_t n = 24, total = (size_t)T * n;
    const bf_neuron_params p = params(kind, T, 0.5f, 1.0f, reset, detach, 1, surr);
    float *x = dyadic(total), *y = buf(total), *h = buf(total), *dy = rnd(total, -1, 1), *dx = garbage(total);
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, h, NULL));
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, n, x, y, h, dy, dx));
    const double eps = 1e-6;
    double worst = 0, wnum = 0, wana = 0, spikes = 0;
    for (size_t i = 0; i < n; i++) {
        double xcol[64], w[64], Hs[64], Ss[64], yr[64];
        column(x, n, i, T, xcol);
        column(dy, n, i, T, w);
        ref_forward_column(&p, xcol, yr, Hs, Ss);
        for (int t = 0; t < T; t++) {
            spikes += Ss[t];
            const double x0 = xcol[t];
            xcol[t] = x0 + eps;
            const double lp = relaxed_loss(&p, xcol, Hs, Ss, w);
            xcol[t] = x0 - eps;
            const double lm = relaxed_loss(&p, xcol, Hs, Ss, w);
            xcol[t] = x0;
            const double num = (lp - lm) / (2 * eps), ana = dx[(size_t)t * n + i];
            const double v = fabs(num - ana) / (1e-5 + 1e-4 * fmax(fabs(num), fabs(ana)));
            if (v > worst) {
                worst = v;
                wnum = num;
                wana = ana;
            }
        }
    }
    CHECK(worst <= 1.0 && spikes > 0, "finite differences %s/%s detach=%d %s: numeric %.9g, op %.9g (violation %.3g, %g spikes)",
          kind_name[kind], reset_name[reset], detach, surr_name[surr], wnum, wana, worst, spikes);
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, h);
    bf_free(cpu, dy);
    bf_free(cpu, dx);
}

/* CLAMP01 by central differences of sum dy * clamp(x) away from the kinks at 0 and 1. */
static void test_clamp_fd(void) {
    const int T = 3;
    const size_t n = 200, total = (size_t)T * n;
    const bf_neuron_params p = params(BF_NEURON_CLAMP01, T, 0.5f, 1.0f, BF_RESET_HARD, 0, 1, BF_SURROGATE_SIGMOID);
    float *x = rnd(total, -0.5f, 1.5f), *y = buf(total), *dy = rnd(total, -1, 1), *dx = garbage(total),
          *yp = buf(total), *ym = buf(total);
    for (size_t k = 0; k < total; k++) /* keep every input at least 0.01 from a kink */
        if (fabsf(x[k]) < 0.01f || fabsf(x[k] - 1.0f) < 0.01f) x[k] += 0.02f;
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, NULL, NULL));
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, n, x, y, NULL, dy, dx));
    const float step = 1e-3f;
    size_t bad = 0;
    for (size_t k = 0; k < total; k += 7) {
        const float x0 = x[k];
        x[k] = x0 + step;
        CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, yp, NULL, NULL));
        x[k] = x0 - step;
        CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, ym, NULL, NULL));
        x[k] = x0;
        const double num = (double)dy[k] * ((double)yp[k] - ym[k]) / ((double)(x0 + step) - (double)(x0 - step));
        bad += fabs(num - dx[k]) > 5e-3 * fmax(1.0, fabs(num));
    }
    CHECK(bad == 0, "clamp01 finite differences: %zu differ", bad);
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, dy);
    bf_free(cpu, dx);
    bf_free(cpu, yp);
    bf_free(cpu, ym);
}

/* T = 1: LIF is the stateless step at the threshold (>=), and its gradient is STEP's at x - thr. */
static void test_single_step(bf_reset_mode reset, int detach, bf_surrogate surr) {
    const size_t n = 300;
    const float thr = 0.75f;
    bf_neuron_params p = params(BF_NEURON_LIF, 1, 0.5f, thr, reset, detach, 1, surr);
    float *x = dyadic(n), *y = garbage(n), *h = garbage(n), *dy = rnd(n, -1, 1), *dx = garbage(n), *xs = buf(n),
          *ys = garbage(n), *dxs = garbage(n);
    x[0] = thr; /* an exact hit, and its neighbours on the 1/64 grid */
    x[1] = thr - 1.0f / 64;
    x[2] = thr + 1.0f / 64;
    for (size_t i = 0; i < n; i++) xs[i] = x[i] - thr;
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, h, NULL));
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, n, x, y, h, dy, dx));
    bf_neuron_params q = p;
    q.kind = BF_NEURON_STEP;
    CHECK_OK(cpu->ops->neuron_forward(cpu, &q, n, xs, ys, NULL, NULL));
    CHECK_OK(cpu->ops->neuron_backward(cpu, &q, n, xs, ys, NULL, dy, dxs));
    size_t bad = 0, hits = 0;
    for (size_t i = 0; i < n; i++) {
        bad += y[i] != (x[i] >= thr ? 1.0f : 0.0f) || h[i] != x[i];
        if (xs[i] == 0.0f)
            hits++; /* STEP is strict, LIF is not: only here they differ */
        else
            bad += y[i] != ys[i];
        bad += dx[i] != dxs[i]; /* == : a zero's sign may differ (dy*g + 0*dV/dH) */
    }
    CHECK(bad == 0 && hits > 0, "T=1 lif/%s detach=%d %s vs step: %zu differ (%zu threshold hits)", reset_name[reset],
          detach, surr_name[surr], bad, hits);
    float *all[] = {x, y, h, dy, dx, xs, ys, dxs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(cpu, all[i]);
}

/* 1 and 2 threads give the same bits, statistics included (n large enough for the parallel path). */
static void test_threads(void) {
    bf_backend *one = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &one));
    if (!one) return;
    const int T = 4;
    const size_t n = 40000, total = (size_t)T * n;
    for (int kind = 0; kind < 4; kind++) {
        const bf_neuron_params p = params(kind, T, 0.9f, 1.0f, BF_RESET_SOFT, 0, 1, BF_SURROGATE_ARCTAN);
        float *x = rnd(total, -0.5f, 1.5f), *dy = rnd(total, -1, 1), *y1 = garbage(total), *y2 = garbage(total),
              *h1 = garbage(total), *h2 = garbage(total), *d1 = garbage(total), *d2 = garbage(total), *s1 = buf(2),
              *s2 = buf(2);
        CHECK_OK(one->ops->neuron_forward(one, &p, n, x, y1, h1, s1));
        CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y2, h2, s2));
        CHECK_OK(one->ops->neuron_backward(one, &p, n, x, y1, h1, dy, d1));
        CHECK_OK(cpu->ops->neuron_backward(cpu, &p, n, x, y2, h2, dy, d2));
        const int stateful = kind <= BF_NEURON_IF;
        CHECK(memcmp(y1, y2, total * sizeof(float)) == 0 && (!stateful || memcmp(h1, h2, total * sizeof(float)) == 0) &&
                  memcmp(d1, d2, total * sizeof(float)) == 0,
              "%s: 1 and %d threads differ", kind_name[kind], cpu->num_threads);
        /* the statistics too, clamp01's real-valued output sums included: floats in [0, 1] summed in
         * double are exact in any order while the sum needs under 53 bits */
        CHECK(s1[1] == s2[1] && s1[0] == s2[0], "%s: stats differ between thread counts: %.9g %g vs %.9g %g",
              kind_name[kind], s1[0], s1[1], s2[0], s2[1]);
        CHECK(s1[0] > 0 && s1[1] >= 0, "%s: stats %g %g", kind_name[kind], s1[0], s1[1]);
        float *all[] = {x, dy, y1, y2, h1, h2, d1, d2, s1, s2};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(cpu, all[i]);
    }
    bf_backend_destroy(one);
}

static void test_arguments(void) {
    float *x = buf(8), *y = buf(8), *h = buf(8);
    bf_neuron_params p = params(BF_NEURON_LIF, 2, 0.5f, 1.0f, BF_RESET_HARD, 0, 1, BF_SURROGATE_SIGMOID);
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, 4, x, y, NULL, NULL)); /* keeps no charge: test_neuron_bn_ops */
    CHECK(cpu->ops->neuron_backward(cpu, &p, 4, x, y, NULL, x, y) == BF_ERR_ARG, "LIF backward without charge accepted");
    CHECK(cpu->ops->neuron_forward(cpu, NULL, 4, x, y, h, NULL) == BF_ERR_ARG, "NULL params accepted");
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, 0, NULL, NULL, NULL, NULL)); /* nothing to do */
    p.T = 0;
    CHECK(cpu->ops->neuron_forward(cpu, &p, 4, x, y, h, NULL) == BF_ERR_ARG, "T = 0 accepted");
    p.T = 2;
    p.kind = (bf_neuron_kind)7;
    CHECK(cpu->ops->neuron_forward(cpu, &p, 4, x, y, h, NULL) == BF_ERR_ARG, "kind 7 accepted");
    p.kind = BF_NEURON_LIF;
    p.reset = (bf_reset_mode)3;
    CHECK(cpu->ops->neuron_forward(cpu, &p, 4, x, y, h, NULL) == BF_ERR_ARG, "reset 3 accepted");
    p.reset = BF_RESET_SOFT;
    p.surrogate = BF_SURROGATE_TRIANGLE;
    p.width = 0.0f;
    CHECK(cpu->ops->neuron_backward(cpu, &p, 4, x, y, h, x, y) == BF_ERR_ARG, "triangle width 0 accepted");
    p.width = 1.0f;
    p.surrogate = BF_SURROGATE_SIGMOID;
    p.alpha = -4.0f; /* surrogate.h's exponential takes -alpha|u| <= 0 only */
    CHECK(cpu->ops->neuron_backward(cpu, &p, 4, x, y, h, x, y) == BF_ERR_ARG, "sigmoid alpha -4 accepted");
    p.surrogate = BF_SURROGATE_ARCTAN;
    p.alpha = 0.0f;
    CHECK(cpu->ops->neuron_backward(cpu, &p, 4, x, y, h, x, y) == BF_ERR_ARG, "arctan alpha 0 accepted");
    p.kind = BF_NEURON_CLAMP01; /* no surrogate, so the width does not matter; x is needed */
    CHECK_OK(cpu->ops->neuron_backward(cpu, &p, 4, x, NULL, NULL, x, y));
    CHECK(cpu->ops->neuron_backward(cpu, &p, 4, NULL, y, h, x, y) == BF_ERR_ARG, "CLAMP01 backward without x accepted");
    bf_free(cpu, x);
    bf_free(cpu, y);
    bf_free(cpu, h);
}

/* surrogate.h's float surrogates and exponential against double references, on a dense grid:
 * within a few float ulps everywhere (their whole point is to match double's answers closely while
 * staying cheap and identical on both backends), a NaN propagates, g(0) is the peak exactly. */
static void test_surrogate_accuracy(void) {
    double worst_exp = 0.0;
    for (int i = 0; i < 800000; i++) { /* (-80, 0]: below -80 it returns 0 by definition */
        const float x = -80.0f * (float)i / 800000.0f;
        const double want = exp((double)x), got = bf_surrogate_exp_neg(x);
        const double rel = fabs(got - want) / want;
        if (rel > worst_exp) worst_exp = rel;
    }
    CHECK(worst_exp < 3.6e-7, "bf_surrogate_exp_neg: worst relative error %.3g over [-80, 0] (want < 3 ulps)", worst_exp);
    CHECK(bf_surrogate_exp_neg(-80.5f) == 0.0f && bf_surrogate_exp_neg(0.0f) == 1.0f, "exp_neg at its ends");
    const bf_surrogate kinds[] = {BF_SURROGATE_SIGMOID, BF_SURROGATE_ARCTAN, BF_SURROGATE_TANH};
    for (int k = 0; k < 3; k++) {
        const bf_neuron_params p = params(BF_NEURON_LIF, 1, 1.0f, 1.0f, BF_RESET_HARD, 0, 1, kinds[k]);
        double worst = 0.0;
        for (int i = -400000; i <= 400000; i++) {
            const float u = (float)i / 20000.0f; /* [-20, 20] */
            /* the smooth bells without ref_g's cancellation in 1 - s or 1 - tanh^2 at large |u| */
            const double z = exp(-(kinds[k] == BF_SURROGATE_TANH ? 2.0 : (double)p.alpha) * fabs((double)u));
            const double want = kinds[k] == BF_SURROGATE_SIGMOID ? p.alpha * z / ((1 + z) * (1 + z))
                                : kinds[k] == BF_SURROGATE_TANH  ? p.height * 4 * z / ((1 + z) * (1 + z))
                                                                 : ref_g(&p, (double)u);
            const double got = bf_surrogate_grad(kinds[k], p.alpha, p.width, p.height, u);
            const double rel = fabs(got - want) / (want + 1e-30);
            if (want > 1e-30 && rel > worst) worst = rel;
        }
        CHECK(worst < 6e-7, "surrogate %d: worst relative error %.3g over u in [-20, 20] (want < 5 ulps)", (int)kinds[k],
              worst);
        const float peak = bf_surrogate_grad(kinds[k], p.alpha, p.width, p.height, 0.0f);
        CHECK(peak == (float)ref_g(&p, 0.0), "surrogate %d: g(0) = %.9g, want %.9g", (int)kinds[k], (double)peak,
              ref_g(&p, 0.0));
        CHECK(isnan(bf_surrogate_grad(kinds[k], p.alpha, p.width, p.height, NAN)), "surrogate %d: g(NaN) is not NaN",
              (int)kinds[k]);
        printf("  surrogate %d (float, surrogate.h): worst relative error %.3g against double\n", (int)kinds[k], worst);
    }
    printf("  bf_surrogate_exp_neg: worst relative error %.3g against exp\n", worst_exp);
}

/* The forward with charge == x gives the spikes and charges of separate buffers, bit for bit. */
static void test_charge_over_input(bf_neuron_kind kind, bf_reset_mode reset) {
    const int T = 5;
    const size_t n = 70000; /* above the threading threshold: two threads */
    bf_neuron_params p = params(kind, T, 0.9f, 1.0f, reset, 0, 1, BF_SURROGATE_TANH);
    float *x = rnd((size_t)T * n, -0.5f, 1.5f), *y = garbage((size_t)T * n), *h = garbage((size_t)T * n);
    float *y2 = garbage((size_t)T * n), *xh = buf((size_t)T * n);
    memcpy(xh, x, (size_t)T * n * sizeof(float));
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x, y, h, NULL));
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, xh, y2, xh, NULL));
    CHECK(!memcmp(y, y2, (size_t)T * n * sizeof(float)) && !memcmp(h, xh, (size_t)T * n * sizeof(float)),
          "%s/%s: the charge over x gives the same spikes and charges", kind_name[kind], reset_name[reset]);
    float *all[] = {x, y, h, y2, xh};
    for (int i = 0; i < 5; i++) bf_free(cpu, all[i]);
}

/* spikes_pack: bit k of word w is y[32w + k] != 0, a partial last word's high bits 0; unpack
 * gives the 0/1 spikes back exactly; n = 0 touches nothing. */
static void test_spike_bits(size_t n) {
    const size_t words = (n + 31) / 32;
    float *y = rnd(n, 0.0f, 1.0f), *back = garbage(n);
    for (size_t i = 0; i < n; i++) y[i] = y[i] < 0.4f ? 1.0f : 0.0f;
    uint32_t *bits = (uint32_t *)garbage(words + 1);
    bits[words] = 0xdeadbeefu;
    CHECK_OK(cpu->ops->spikes_pack(cpu, y, bits, n));
    int layout = 1;
    for (size_t w = 0; w < words; w++)
        for (size_t k = 0; k < 32; k++) {
            const size_t i = w * 32 + k;
            const unsigned expect = i < n && y[i] != 0.0f;
            if (((bits[w] >> k) & 1u) != expect) layout = 0;
        }
    CHECK(layout && bits[words] == 0xdeadbeefu, "spikes_pack n=%zu: bit k of word w is y[32w+k], nothing beyond", n);
    CHECK_OK(cpu->ops->spikes_unpack(cpu, bits, back, n));
    CHECK(!memcmp(y, back, n * sizeof(float)), "spikes_unpack n=%zu restores the spikes exactly", n);
    CHECK_OK(cpu->ops->spikes_pack(cpu, NULL, NULL, 0));
    CHECK_OK(cpu->ops->spikes_unpack(cpu, NULL, NULL, 0));
    CHECK(cpu->ops->spikes_pack(cpu, NULL, bits, n) == BF_ERR_ARG, "spikes_pack: NULL y accepted");
    bf_free(cpu, y);
    bf_free(cpu, back);
    bf_free(cpu, bits);
}

int main(void) {
    CHECK_OK(bf_backend_create_cpu(2, &cpu));
    if (!cpu) return bf_test_finish();

    test_forward_by_hand();
    test_surrogate_accuracy();
    for (int reset = 0; reset < 3; reset++) test_charge_over_input(BF_NEURON_LIF, reset);
    test_charge_over_input(BF_NEURON_IF, BF_RESET_SOFT);
    test_spike_bits(1);
    test_spike_bits(63);
    test_spike_bits(300001);
    const int Ts[] = {1, 4, 16};
    const size_t ns[] = {37, 200};
    for (int kind = 0; kind < 4; kind++)
        for (int reset = 0; reset < 3; reset++) {
            if (kind >= BF_NEURON_CLAMP01 && reset > 0) continue; /* no reset in the stateless kinds */
            for (size_t a = 0; a < 3; a++)
                for (size_t b = 0; b < 2; b++) {
                    test_forward_exact(kind, reset, 1.0f, Ts[a], ns[b]);
                    if (kind <= BF_NEURON_IF) test_forward_exact(kind, reset, 0.75f, Ts[a], ns[b]);
                }
            if (kind <= BF_NEURON_IF) test_forward_general(kind, reset);
        }

    for (int kind = 0; kind < 4; kind++)
        for (int reset = 0; reset < 3; reset++)
            for (int detach = 0; detach < 2; detach++)
                for (int through = 0; through < 2; through++)
                    for (int surr = 0; surr < 5; surr++) {
                        if (kind >= BF_NEURON_CLAMP01 && (reset > 0 || detach || !through)) continue;
                        if (kind == BF_NEURON_CLAMP01 && surr > 0) continue;
                        for (size_t a = 0; a < 3; a++) test_backward_ref(kind, reset, detach, through, surr, Ts[a], 37);
                    }
    for (int reset = 0; reset < 3; reset++)
        for (int surr = 0; surr < 5; surr++) test_backward_no_time(reset, surr);

    const bf_surrogate smooth[] = {BF_SURROGATE_SIGMOID, BF_SURROGATE_ARCTAN, BF_SURROGATE_TRIANGLE,
                                   BF_SURROGATE_TANH};
    for (int kind = 0; kind < 2; kind++)
        for (int reset = 0; reset < 3; reset++)
            for (int detach = 0; detach < 2; detach++)
                for (size_t s = 0; s < sizeof smooth / sizeof smooth[0]; s++)
                    test_backward_fd(kind, reset, detach, smooth[s]);
    test_clamp_fd();

    for (int reset = 0; reset < 3; reset++)
        for (int detach = 0; detach < 2; detach++)
            for (int surr = 0; surr < 5; surr++) test_single_step(reset, detach, surr);
    test_threads();
    test_arguments();

    bf_backend_destroy(cpu);
    return bf_test_finish();
}
