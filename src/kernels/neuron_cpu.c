/* neuron_cpu.c - spiking-neuron ops on the CPU (contract in ops.h at bf_neuron_kind and the neuron_*
 * members of bf_ops; plasticflex.md sections 3 and 9.3; the CUDA twin is neuron.cu).
 *
 * x, y, charge and the gradients are [T, n]: element i of step t is at t*n + i. Every element's T
 * steps run in order (the membrane of step t needs step t-1); elements are independent, so threads
 * take contiguous blocks of elements, and within a block a tile of NEURON_TILE elements advances one
 * step at a time, so every step reads and writes NEURON_TILE consecutive floats of each tensor
 * instead of one float per cache line.
 *
 * The float expressions are the ones neuron.cu evaluates with explicit __f*_rn intrinsics (ISO C
 * mode does not contract a*b+c into an FMA), and the surrogates come from surrogate.h (float, its
 * own exponential: the libm and CUDA expf and tanhf differ in their last bits), so spikes, charges
 * and gradients are bit-identical on both backends. The backward pass recomputes S[t] = 1[H[t] - threshold >= 0] from the
 * charge, exactly as the forward pass did, so it does not read y (one tensor less to stream, as
 * SpikingJelly's BPTT kernels do). neuron_backward_bn computes the charge of a tile again from
 * batch-norm's input, with the forward's own lif_step, and then runs the same BPTT over it.
 *
 * The statistics are summed in double: per element over t, then over the elements of a thread's
 * block in index order, then over the blocks in thread order, so the result repeats for a given
 * thread count (spike counts are integers, hence exact in any order). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_backend.h"
#include "neuron_check.h"
#include "require.h"
#include "surrogate.h"

/* Elements advanced together one step at a time: 64 floats = 4 cache lines per tensor and step. */
#define NEURON_TILE 64

/* The parameters as the loops use them: IF is LIF with decay 1 (1*v == v exactly). */
typedef struct neuron_consts {
    bf_neuron_kind kind;
    bf_reset_mode reset;
    bf_surrogate surrogate;
    int T, detach, through_time;
    float decay, threshold, alpha, width, height;
} neuron_consts;

static neuron_consts consts_of(const bf_neuron_params *p) {
    neuron_consts c;
    c.kind = p->kind;
    c.reset = p->reset;
    c.surrogate = p->surrogate;
    c.T = p->T;
    c.detach = p->detach_reset != 0;
    c.through_time = p->through_time != 0;
    c.decay = p->kind == BF_NEURON_IF ? 1.0f : p->decay;
    c.threshold = p->threshold;
    c.alpha = p->alpha;
    c.width = p->width;
    c.height = p->height;
    return c;
}

static int is_stateful(bf_neuron_kind k) { return k == BF_NEURON_LIF || k == BF_NEURON_IF; }

/* Threads for `total` neuron-steps: one for short loops, never more than there are elements. */
static int neuron_threads(const bf_backend *b, size_t n, size_t total) {
    int t = total >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
    return (size_t)t > n ? (int)(n > 0 ? n : 1) : t;
}

/* g(u), the surrogate dS/dH (see bf_surrogate): surrogate.h, shared with neuron.cu. */
static inline float surrogate_grad(const neuron_consts *c, float u) {
    return bf_surrogate_grad(c->surrogate, c->alpha, c->width, c->height, u);
}

/* ---- a batch-norm input (bf_neuron_bn_input): normalised as read ---- */

/* The coefficients of elements i0 .. i0+m-1: mean, gamma * invstd (as batchnorm_cpu.c rounds it)
 * and beta of each one's channel, walked from the first (a tile may span channels). */
static void bn_tile_coefficients(const bf_neuron_bn_input *in, size_t i0, size_t m, float *mean, float *scale,
                                 float *beta) {
    size_t ch = i0 / (size_t)in->hw % (size_t)in->c, at = i0 % (size_t)in->hw;
    for (size_t k = 0; k < m; k++) {
        mean[k] = in->mean[ch];
        scale[k] = in->gamma[ch] * in->invstd[ch];
        beta[k] = in->beta[ch];
        if (++at == (size_t)in->hw) {
            at = 0;
            if (++ch == (size_t)in->c) ch = 0;
        }
    }
}

/* out = the batch-norm output of a tile: batchnorm_cpu.c's (x - mean) * scale + beta. */
static inline void bn_tile_normalise(const float *restrict x, size_t m, const float *restrict mean,
                                     const float *restrict scale, const float *restrict beta, float *restrict out) {
    for (size_t k = 0; k < m; k++) out[k] = (x[k] - mean[k]) * scale[k] + beta[k];
}

/* ---- forward ---- */

/* One step of a tile of m LIF/IF elements: H = decay*V + x (two roundings, no FMA: as neuron.cu),
 * S = 1[H - threshold >= 0], and V after the reset (HARD: H*(1-S); SOFT: H - threshold*S, which
 * is u when S = 1; NONE: H). The reset is a compile-time constant of each inlined copy, and every
 * parameter is a local, so the loop has no branch and no reload through a pointer the stores
 * might alias: it vectorises. */
static inline void lif_step(bf_reset_mode reset, float decay, float thr, size_t m, const float *restrict xt,
                            float *restrict ht, float *restrict yt, float *restrict v, float *restrict ysum) {
    for (size_t k = 0; k < m; k++) {
        const float h = decay * v[k] + xt[k];
        const float u = h - thr;
        const float s = u >= 0.0f ? 1.0f : 0.0f;
        ht[k] = h;
        yt[k] = s;
        ysum[k] += s; /* at most T: exact in float */
        v[k] = s == 0.0f || reset == BF_RESET_NONE ? h : reset == BF_RESET_HARD ? 0.0f : u;
    }
}

/* Elements [lo, hi): y (and for LIF/IF the charge) of all T steps; adds the block's number of
 * spikes (sum of y) and of silent elements (all y zero) to *spikes and *silent. Step t's input is
 * at x + t*x_step (x_step = n, or 0 for a shared input). */
static void forward_block(const neuron_consts *c, const bf_neuron_bn_input *bn, size_t n, size_t x_step, size_t lo,
                          size_t hi, const float *x, float *y, float *charge, double *spikes, double *silent) {
    const bf_neuron_kind kind = c->kind;
    const bf_reset_mode reset = c->reset;
    const float decay = c->decay, thr = c->threshold;
    /* counted in locals and stored once: the threads' totals share a cache line */
    double block_spikes = 0.0, block_silent = 0.0;
    for (size_t i0 = lo; i0 < hi; i0 += NEURON_TILE) {
        const size_t m = hi - i0 < NEURON_TILE ? hi - i0 : NEURON_TILE;
        float v[NEURON_TILE] = {0};
        float ysum[NEURON_TILE] = {0}; /* integer counts for LIF/IF/STEP; CLAMP01's need not be */
        float h_unkept[NEURON_TILE];   /* the charges of a step, when none are kept */
        float mean[NEURON_TILE], scale[NEURON_TILE], beta[NEURON_TILE];
        float x_bn[NEURON_TILE]; /* the tile of input read (bn: normalised; else a copy where the charge is x) */
        if (bn) bn_tile_coefficients(bn, i0, m, mean, scale, beta);
        double clamp_sum[NEURON_TILE] = {0};
        for (int t = 0; t < c->T; t++) {
            const size_t base = (size_t)t * n + i0;
            const float *xt = x + (size_t)t * x_step + i0;
            float *yt = y + base, *ht = charge ? charge + base : h_unkept;
            if (bn) {
                if (t == 0 || x_step) bn_tile_normalise(xt, m, mean, scale, beta, x_bn); /* shared: once */
                xt = x_bn;
            } else if (xt == ht) { /* the charge over the input (ops.h): lif_step's restrict wants them apart */
                memcpy(x_bn, xt, m * sizeof *xt);
                xt = x_bn;
            }
            if (kind == BF_NEURON_CLAMP01) {
                for (size_t k = 0; k < m; k++) { /* a NaN passes through, as torch.clamp */
                    const float xv = xt[k], out = xv < 0.0f ? 0.0f : xv > 1.0f ? 1.0f : xv;
                    yt[k] = out;
                    clamp_sum[k] += out;
                }
            } else if (kind == BF_NEURON_STEP) {
                for (size_t k = 0; k < m; k++) {
                    const float out = xt[k] > 0.0f ? 1.0f : 0.0f;
                    yt[k] = out;
                    ysum[k] += out;
                }
            } else if (reset == BF_RESET_HARD) {
                lif_step(BF_RESET_HARD, decay, thr, m, xt, ht, yt, v, ysum);
            } else if (reset == BF_RESET_SOFT) {
                lif_step(BF_RESET_SOFT, decay, thr, m, xt, ht, yt, v, ysum);
            } else {
                lif_step(BF_RESET_NONE, decay, thr, m, xt, ht, yt, v, ysum);
            }
        }
        for (size_t k = 0; k < m; k++) {
            const double sum = kind == BF_NEURON_CLAMP01 ? clamp_sum[k] : (double)ysum[k];
            block_spikes += sum;
            block_silent += sum == 0.0 ? 1.0 : 0.0; /* y >= 0 (or NaN), so a zero sum means all zero */
        }
    }
    *spikes += block_spikes;
    *silent += block_silent;
}

/* The forward of neuron_forward and neuron_forward_bn (bn NULL: x is the input itself). */
static void forward_all(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *bn, size_t n, const float *x,
                        float *y, float *charge, float *stats) {
    const neuron_consts c = consts_of(p);
    const int threads = neuron_threads(b, n, n * (size_t)c.T);
    double spikes[BF_CPU_MAX_THREADS], silent[BF_CPU_MAX_THREADS];
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; t++) {
        const size_t lo = n * (size_t)t / (size_t)threads, hi = n * (size_t)(t + 1) / (size_t)threads;
        spikes[t] = silent[t] = 0.0;
        forward_block(&c, bn, n, p->shared_input ? 0 : n, lo, hi, x, y, charge, &spikes[t], &silent[t]);
    }
    if (stats) {
        double total_spikes = 0.0, total_silent = 0.0;
        for (int t = 0; t < threads; t++) {
            total_spikes += spikes[t];
            total_silent += silent[t];
        }
        stats[0] = (float)((double)stats[0] + total_spikes);
        stats[1] = (float)((double)stats[1] + total_silent);
    }
}

bf_status bf_cpu_neuron_forward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x, float *y,
                                float *charge, float *stats) {
    BF_TRY(bf_neuron_check_params(p, n, "neuron_forward"));
    BF_TRY(bf_neuron_check_shared(p, charge, "neuron_forward"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_forward", x, y);
    forward_all(b, p, NULL, n, x, y, charge, stats);
    return BF_OK;
}

bf_status bf_cpu_neuron_forward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                   const float *xin, float *y, uint32_t *bits, float *stats) {
    BF_TRY(bf_neuron_check_params(p, n, "neuron_forward_bn"));
    BF_TRY(bf_neuron_check_bn_input(p, in, n, "neuron_forward_bn"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_forward_bn", xin, y);
    forward_all(b, p, in, n, xin, y, NULL, stats);
    return bits ? bf_cpu_spikes_pack(b, y, bits, n * (size_t)p->T) : BF_OK; /* the CPU's speed is not the point */
}

/* ---- backward ---- */

/* g(H - threshold) for a tile of m charges: the surrogate kind is switched on once, outside the
 * loops, so that each loop runs one inlined, branch-free surrogate and vectorises. */
static void surrogate_tile(const neuron_consts *c, const float *h, size_t m, float *g) {
    const float thr = c->threshold, alpha = c->alpha, width = c->width, height = c->height;
    switch (c->surrogate) {
#define SURROGATE_LOOP(kind)                                                             \
    case kind:                                                                           \
        for (size_t k = 0; k < m; k++) g[k] = bf_surrogate_grad(kind, alpha, width, height, h[k] - thr); \
        return;
        SURROGATE_LOOP(BF_SURROGATE_SIGMOID)
        SURROGATE_LOOP(BF_SURROGATE_ARCTAN)
        SURROGATE_LOOP(BF_SURROGATE_RECTANGULAR)
        SURROGATE_LOOP(BF_SURROGATE_TRIANGLE)
        SURROGATE_LOOP(BF_SURROGATE_TANH)
#undef SURROGATE_LOOP
    }
}

/* One step of BPTT over a tile of m LIF/IF elements: dH = dy*g + dV*dV/dH (when through time;
 * the spike recomputed from the charge) and dV[t-1] = decay*dH. reset and detach are constants of
 * each inlined copy and every parameter a local, so the loop vectorises. */
static inline void bptt_step(bf_reset_mode reset, int detach, int through_time, float decay, float thr, size_t m,
                             const float *restrict ht, const float *restrict gt, const float *restrict gs,
                             float *restrict dxt, float *restrict dv) {
    for (size_t k = 0; k < m; k++) {
        const float h = ht[k], u = h - thr, g = gs[k];
        float dh = gt[k] * g;
        if (through_time) {
            const float s = u >= 0.0f ? 1.0f : 0.0f; /* the forward's spike, recomputed */
            float dvdh = 1.0f;                        /* NONE */
            if (reset == BF_RESET_HARD)
                dvdh = detach ? 1.0f - s : (1.0f - s) - h * g;
            else if (reset == BF_RESET_SOFT)
                dvdh = detach ? 1.0f : 1.0f - thr * g;
            dh = dh + dv[k] * dvdh;
            dv[k] = decay * dh; /* dL/dV[t-1] */
        }
        dxt[k] = dh;
    }
}

/* BPTT over one tile of m LIF/IF elements, from t = T-1 down to 0 with dV carried per element: the
 * charge of step t at h + t*h_stride (the kept [T, n] tensor, or a tile computed again), dy and dx of
 * step t at dy + t*n and dx + t*n; with sum_steps, dx is one step, the sum of the steps' gradients
 * in the order they come (T-1 first: ops.h at bf_neuron_params.shared_input). */
static void bptt_tile(const neuron_consts *c, size_t m, const float *h, size_t h_stride, size_t n, const float *dy,
                      float *dx, int sum_steps) {
    const bf_reset_mode reset = c->reset;
    const int detach = c->detach, through_time = c->through_time;
    const float decay = c->decay, thr = c->threshold;
    float dv[NEURON_TILE] = {0}; /* dL/dV[t], zero after the last step */
    float gs[NEURON_TILE], step_dx[NEURON_TILE];
    for (int t = c->T - 1; t >= 0; t--) {
        const float *ht = h + (size_t)t * h_stride, *gt = dy + (size_t)t * n;
        float *dxt = sum_steps ? step_dx : dx + (size_t)t * n;
        surrogate_tile(c, ht, m, gs);
        if (!through_time)
            bptt_step(reset, 0, 0, decay, thr, m, ht, gt, gs, dxt, dv);
        else if (reset == BF_RESET_HARD)
            detach ? bptt_step(BF_RESET_HARD, 1, 1, decay, thr, m, ht, gt, gs, dxt, dv)
                   : bptt_step(BF_RESET_HARD, 0, 1, decay, thr, m, ht, gt, gs, dxt, dv);
        else if (reset == BF_RESET_SOFT)
            detach ? bptt_step(BF_RESET_SOFT, 1, 1, decay, thr, m, ht, gt, gs, dxt, dv)
                   : bptt_step(BF_RESET_SOFT, 0, 1, decay, thr, m, ht, gt, gs, dxt, dv);
        else
            bptt_step(BF_RESET_NONE, 0, 1, decay, thr, m, ht, gt, gs, dxt, dv);
        if (sum_steps)
            for (size_t k = 0; k < m; k++) dx[k] = t == c->T - 1 ? step_dx[k] : dx[k] + step_dx[k];
    }
}

/* LIF/IF elements [lo, hi) from the kept charge. */
static void bptt_block(const neuron_consts *c, size_t n, size_t lo, size_t hi, const float *charge, const float *dy,
                       float *dx) {
    for (size_t i0 = lo; i0 < hi; i0 += NEURON_TILE) {
        const size_t m = hi - i0 < NEURON_TILE ? hi - i0 : NEURON_TILE;
        bptt_tile(c, m, charge + i0, n, n, dy + i0, dx + i0, 0);
    }
}

/* LIF/IF elements [lo, hi) with the charge computed again from batch-norm's input (ops.h at
 * neuron_backward_bn): per tile, X = the batch-norm output in batchnorm_cpu.c's expression, the
 * forward's lif_step over all T into a tile of charges, then the BPTT from that tile. shared: xin
 * and dx are one step (bf_neuron_params.shared_input). */
static void bptt_block_bn(const neuron_consts *c, const bf_neuron_bn_input *in, size_t n, int shared, size_t lo,
                          size_t hi, const float *xin, const float *dy, float *dx) {
    const bf_reset_mode reset = c->reset;
    const float decay = c->decay, thr = c->threshold;
    float h[BF_NEURON_BN_MAX_T * NEURON_TILE];
    float mean[NEURON_TILE], scale[NEURON_TILE], beta[NEURON_TILE], xt[NEURON_TILE], spikes[NEURON_TILE];
    for (size_t i0 = lo; i0 < hi; i0 += NEURON_TILE) {
        const size_t m = hi - i0 < NEURON_TILE ? hi - i0 : NEURON_TILE;
        bn_tile_coefficients(in, i0, m, mean, scale, beta);
        float v[NEURON_TILE] = {0}, ysum[NEURON_TILE] = {0};
        for (int t = 0; t < c->T; t++) {
            if (t == 0 || !shared) bn_tile_normalise(xin + (shared ? 0 : (size_t)t * n) + i0, m, mean, scale, beta, xt);
            float *ht = h + (size_t)t * NEURON_TILE;
            if (reset == BF_RESET_HARD) lif_step(BF_RESET_HARD, decay, thr, m, xt, ht, spikes, v, ysum);
            else if (reset == BF_RESET_SOFT) lif_step(BF_RESET_SOFT, decay, thr, m, xt, ht, spikes, v, ysum);
            else lif_step(BF_RESET_NONE, decay, thr, m, xt, ht, spikes, v, ysum);
        }
        bptt_tile(c, m, h, NEURON_TILE, n, dy + i0, dx + i0, shared);
    }
}

bf_status bf_cpu_neuron_backward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x, const float *y,
                                 const float *charge, const float *dy, float *dx) {
    (void)y; /* S is recomputed from the charge */
    BF_TRY(bf_neuron_check_params(p, n, "neuron_backward"));
    if (p->shared_input)
        return bf_error(BF_ERR_ARG, "neuron_backward: a shared input comes back through neuron_backward_bn only");
    if (n == 0) return BF_OK;
    REQUIRE("neuron_backward", dy, dx);
    const neuron_consts c = consts_of(p);
    const size_t total = n * (size_t)c.T;
    if (is_stateful(c.kind)) {
        REQUIRE("neuron_backward (charge of LIF/IF)", charge);
        const int threads = neuron_threads(b, n, total);
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int t = 0; t < threads; t++)
            bptt_block(&c, n, n * (size_t)t / (size_t)threads, n * (size_t)(t + 1) / (size_t)threads, charge, dy, dx);
        return BF_OK;
    }
    REQUIRE("neuron_backward (x of CLAMP01/STEP)", x);
    const int threads = total >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
    if (c.kind == BF_NEURON_CLAMP01) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (size_t i = 0; i < total; i++) {
            const float xv = x[i], g = dy[i];
            dx[i] = xv >= 0.0f && xv <= 1.0f ? g : 0.0f; /* inclusive at 0 and 1, as torch.clamp */
        }
    } else { /* STEP: dy/dx = g(x), the threshold ignored */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (size_t i = 0; i < total; i++) dx[i] = dy[i] * surrogate_grad(&c, x[i]);
    }
    return BF_OK;
}

bf_status bf_cpu_neuron_backward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                    const float *xin, const float *dy, float *dx) {
    BF_TRY(bf_neuron_check_params(p, n, "neuron_backward_bn"));
    BF_TRY(bf_neuron_check_bn_input(p, in, n, "neuron_backward_bn"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_backward_bn", xin, dy, dx);
    const neuron_consts c = consts_of(p);
    const int threads = neuron_threads(b, n, n * (size_t)c.T);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; t++)
        bptt_block_bn(&c, in, n, p->shared_input, n * (size_t)t / (size_t)threads, n * (size_t)(t + 1) / (size_t)threads,
                      xin, dy, dx);
    return BF_OK;
}

/* The bits of neuron_backward_bn and then batchnorm_backward: the neuron's gradient goes through the
 * backend's scratch (the CPU's speed is not this fusion's point; the GPU's bytes are, neuron.cu). */
bf_status bf_cpu_neuron_batchnorm_backward(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in,
                                           size_t n, const float *xin, const float *dy, float *dx, float *dgamma,
                                           float *dbeta) {
    BF_TRY(bf_neuron_check_params(p, n, "neuron_batchnorm_backward"));
    BF_TRY(bf_neuron_check_bn_input(p, in, n, "neuron_batchnorm_backward"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_batchnorm_backward", xin, dy, dx);
    const bf_bn_shape bs = bf_neuron_bn_shape(p, in, n);
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, (size_t)bs.n * (size_t)bs.c * (size_t)bs.hw * sizeof(float), &scratch));
    BF_TRY(bf_cpu_neuron_backward_bn(b, p, in, n, xin, dy, scratch));
    return bf_cpu_batchnorm_backward(b, &bs, xin, scratch, in->gamma, in->mean, in->invstd, dx, dgamma, dbeta);
}

/* ---- spikes kept as bits (ops.h at spikes_pack) ---- */

bf_status bf_cpu_spikes_pack(bf_backend *b, const float *y, uint32_t *bits, size_t n) {
    if (n == 0) return BF_OK;
    REQUIRE("spikes_pack", y, bits);
    const size_t words = (n + 31) / 32;
    const int threads = n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t w = 0; w < words; w++) {
        const size_t lo = w * 32, m = n - lo < 32 ? n - lo : 32;
        const float *yw = y + lo;
        uint32_t word = 0;
        if (m == 32) /* a whole word: a fixed trip count, which the compiler vectorises */
            for (int k = 0; k < 32; k++) word |= (uint32_t)(yw[k] != 0.0f) << k;
        else
            for (size_t k = 0; k < m; k++) word |= (uint32_t)(yw[k] != 0.0f) << k;
        bits[w] = word;
    }
    return BF_OK;
}

bf_status bf_cpu_spikes_unpack(bf_backend *b, const uint32_t *bits, float *y, size_t n) {
    if (n == 0) return BF_OK;
    REQUIRE("spikes_unpack", bits, y);
    const int threads = n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
    const size_t words = (n + 31) / 32;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t w = 0; w < words; w++) { /* word by word: no division per element, and whole words vectorise */
        const size_t lo = w * 32, m = n - lo < 32 ? n - lo : 32;
        const uint32_t word = bits[w];
        float *yw = y + lo;
        if (m == 32)
            for (int k = 0; k < 32; k++) yw[k] = (word >> k) & 1u ? 1.0f : 0.0f;
        else
            for (size_t k = 0; k < m; k++) yw[k] = (word >> k) & 1u ? 1.0f : 0.0f;
    }
    return BF_OK;
}
