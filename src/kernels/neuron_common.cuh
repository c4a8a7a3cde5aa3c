/* neuron_common.cuh - internal: what the neuron CUDA files (neuron.cu, neuron_bn_backward.cu) share:
 * the parameters as the kernels take them, one LIF/IF step each way (one source, so a charge or a
 * gradient computed again has the same bits), the batch-norm input normalised as read, and the
 * launch helpers. Everything is private to each including file. */
#ifndef BIOFLEX_NEURON_COMMON_CUH
#define BIOFLEX_NEURON_COMMON_CUH

#include "cuda_backend.h"
#include "surrogate.h"
#include "vector_access.cuh" /* fvec, load_vec */

namespace {

/* What the kernels compute per step: the reset mode of LIF/IF, or a stateless activation. */
enum neuron_op { OP_HARD = 0, OP_SOFT, OP_NONE, OP_CLAMP01, OP_STEP };

/* The parameters as the kernels use them: IF is LIF with decay 1 (1*v == v exactly). shared: the
 * input is one step read at every step, and neuron_backward_bn's dx one step, the steps' sum
 * (bf_neuron_params.shared_input). */
struct neuron_consts {
    int T, detach, through_time, shared;
    bf_surrogate surrogate;
    float decay, threshold, alpha, width, height;
};

#define GRID_STRIDE(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* g(u), the surrogate dS/dH (see bf_surrogate): surrogate.h, shared with neuron_cpu.c. */
__device__ __forceinline__ float surrogate_grad(const neuron_consts &c, float u) {
    return bf_surrogate_grad(c.surrogate, c.alpha, c.width, c.height, u);
}


/* One LIF/IF step of one element: H = decay*V + x, and V after the reset of S = 1[H - threshold >= 0]
 * (HARD: H*(1-S); SOFT: H - threshold*S, which is u when S = 1; NONE: H). Returns H; *spike = S. One
 * source for every kernel that computes a charge, so a charge computed again has the same bits. */
template <int OP>
__device__ __forceinline__ float lif_step(const neuron_consts &c, float x, float &v, bool &spike) {
    const float h = __fadd_rn(__fmul_rn(c.decay, v), x);
    const float u = __fsub_rn(h, c.threshold);
    spike = u >= 0.0f;
    v = !spike || OP == OP_NONE ? h : OP == OP_HARD ? 0.0f : u;
    return h;
}

/* One BPTT step of one element from its charge h and output gradient gy: returns dH = dX, and
 * carries dv = dL/dV back from step t to t-1 (through time only). */
template <int OP>
__device__ __forceinline__ float bptt_step(const neuron_consts &c, float h, float gy, float &dv) {
    const float u = __fsub_rn(h, c.threshold), g = surrogate_grad(c, u);
    float dh = __fmul_rn(gy, g);
    if (c.through_time) {
        const float s = u >= 0.0f ? 1.0f : 0.0f; /* the forward's spike, recomputed */
        float dvdh = 1.0f;                        /* NONE */
        if (OP == OP_HARD)
            dvdh = c.detach ? __fsub_rn(1.0f, s) : __fsub_rn(__fsub_rn(1.0f, s), __fmul_rn(h, g));
        else if (OP == OP_SOFT)
            dvdh = c.detach ? 1.0f : __fsub_rn(1.0f, __fmul_rn(c.threshold, g));
        dh = __fadd_rn(dh, __fmul_rn(dv, dvdh));
        dv = __fmul_rn(c.decay, dh); /* dL/dV[t-1] */
    }
    return dh;
}

/* The batch-norm input of neuron_forward_bn and neuron_backward_bn (ops.h), as the kernels take it. */
struct bn_input {
    int c, hw;
    const float *mean, *invstd, *gamma, *beta;
};

/* The channels of elements i0 .. i0+V-1 of a step: the first takes two divisions (32-bit ones
 * below 2^32 elements: a 64-bit division is a long software sequence on the GPU), the others are
 * walked. */
template <int V>
__device__ __forceinline__ void channels_of(const bn_input &bn, size_t i0, unsigned *chs) {
    unsigned ch, at;
    if (i0 <= 0xffffffffu) {
        const unsigned i = (unsigned)i0, plane = i / (unsigned)bn.hw;
        at = i - plane * (unsigned)bn.hw;
        ch = plane % (unsigned)bn.c;
    } else {
        const size_t plane = i0 / (size_t)bn.hw;
        at = (unsigned)(i0 - plane * (size_t)bn.hw);
        ch = (unsigned)(plane % (size_t)bn.c);
    }
#pragma unroll
    for (int k = 0; k < V; k++) {
        chs[k] = ch;
        if (++at == (unsigned)bn.hw) {
            at = 0;
            if (++ch == (unsigned)bn.c) ch = 0;
        }
    }
}

/* The coefficients of elements i0 .. i0+V-1: mean, gamma * invstd (k_bn_saved_coef's rounding) and
 * beta of each one's channel. */
template <int V>
__device__ __forceinline__ void bn_coefficients(const bn_input &bn, size_t i0, float *mu, float *sc, float *bt) {
    unsigned chs[V];
    channels_of<V>(bn, i0, chs);
#pragma unroll
    for (int k = 0; k < V; k++) {
        mu[k] = bn.mean[chs[k]];
        sc[k] = __fmul_rn(bn.gamma[chs[k]], bn.invstd[chs[k]]);
        bt[k] = bn.beta[chs[k]];
    }
}

/* batchnorm.cu's bn_apply_one: the batch-norm output of x, each operation rounded. */
__device__ __forceinline__ float bn_normalise(float x, float mu, float sc, float bt) {
    return __fadd_rn(__fmul_rn(__fsub_rn(x, mu), sc), bt);
}

/* The T <= TMAX charges of elements i0 .. i0+V-1 computed again from the batch-norm input, as the
 * forward computed them (lif_step over the normalised input: the same bits), into h; the inputs as
 * read into xr (with a shared input, step 0 alone). The loops unroll fully over TMAX, so h and xr
 * are indexed by constants and stay in registers (a caller that never reads xr loses its stores). */
template <int OP, int V, int TMAX>
__device__ __forceinline__ void charges_again(const neuron_consts &c, const float *__restrict__ xin, size_t n,
                                              size_t i0, const float *mu, const float *sc, const float *bt,
                                              float (&h)[TMAX][V], float (&xr)[TMAX][V]) {
    float v[V], xs[V];
#pragma unroll
    for (int k = 0; k < V; k++) v[k] = xs[k] = 0.0f;
#pragma unroll
    for (int t = 0; t < TMAX; t++) {
        if (t >= c.T) break;
        if (t == 0 || !c.shared) {
            const fvec<V> xv = load_vec<V>(xin + (c.shared ? 0 : (size_t)t * n) + i0);
#pragma unroll
            for (int k = 0; k < V; k++) {
                xr[t][k] = xv.v[k];
                xs[k] = bn_normalise(xv.v[k], mu[k], sc[k], bt[k]);
            }
        }
#pragma unroll
        for (int k = 0; k < V; k++) {
            bool s;
            h[t][k] = lif_step<OP>(c, xs[k], v[k], s);
        }
    }
}

/* ---- host helpers ---- */

inline neuron_consts consts_of(const bf_neuron_params *p) {
    neuron_consts c;
    c.T = p->T;
    c.shared = p->shared_input != 0;
    c.detach = p->detach_reset != 0;
    c.through_time = p->through_time != 0;
    c.surrogate = p->surrogate;
    c.decay = p->kind == BF_NEURON_IF ? 1.0f : p->decay;
    c.threshold = p->threshold;
    c.alpha = p->alpha;
    c.width = p->width;
    c.height = p->height;
    return c;
}

inline int op_of(const bf_neuron_params *p) {
    if (p->kind == BF_NEURON_CLAMP01) return OP_CLAMP01;
    if (p->kind == BF_NEURON_STEP) return OP_STEP;
    return p->reset == BF_RESET_HARD ? OP_HARD : p->reset == BF_RESET_SOFT ? OP_SOFT : OP_NONE;
}

inline bool is_stateful(const bf_neuron_params *p) { return p->kind == BF_NEURON_LIF || p->kind == BF_NEURON_IF; }

/* Blocks of both kernels: one thread per item (an element, or V of them), capped at 4096 blocks
 * (about 8 resident waves of an H100's threads; beyond that threads loop). A function of the item
 * count only, so the statistics' partials never depend on the device. Spikes and silent elements
 * are whole numbers, exact in double, so the vector width cannot change their sums either; CLAMP01's
 * outputs are not, so its forward always runs one element per thread (run_forward's caller). */
inline unsigned neuron_blocks(size_t items) {
    const size_t blocks = bf_cuda_div_up(items, BF_CUDA_THREADS);
    return (unsigned)(blocks > 4096 ? 4096 : blocks < 1 ? 1 : blocks);
}

/* 4 when n is a multiple of 4, every tensor is 16-byte aligned (then each step's row t*n is too)
 * and n/4 threads still fill the GPU: the kernels take 16-byte vectors; else 1. A thread walks its
 * elements through all T steps in turn, so on small layers (VGG-11's 2x2 convs and fc layers: n of
 * 0.26-0.5 M at batch 256) four elements per thread leave SMs half empty and latency-bound: the
 * H200 measured them at 36-60 % of peak bandwidth while the large layers ran at 80 %. */
inline int vector_width(const bf_cuda_impl *im, size_t n, const void *p0, const void *p1, const void *p2) {
    const uintptr_t bits = (uintptr_t)p0 | (uintptr_t)p1 | (uintptr_t)p2;
    const size_t full = (size_t)(im->sm_count > 0 ? im->sm_count : 1) * 2048; /* resident threads (sm_80/90) */
    return n % 4 == 0 && bits % 16 == 0 && n / 4 >= full ? 4 : 1;
}

}  // namespace

#endif
