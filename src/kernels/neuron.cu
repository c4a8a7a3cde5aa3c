/* neuron.cu - spiking-neuron ops on the GPU (contract in ops.h at bf_neuron_kind and the neuron_*
 * members of bf_ops; the CPU twin is neuron_cpu.c).
 *
 * One fused kernel per direction, as SpikingJelly's multi-step CUDA neurons: one thread per element
 * of the [T, n] tensors, looping over all T steps with the state in registers, so every tensor is
 * streamed through exactly once (forward: x in, y and charge out; backward: charge and dy in, dx
 * out; consecutive threads touch consecutive floats of each step, so every access is coalesced).
 * The forward pass carries the membrane V; the backward pass walks t = T-1 .. 0 carrying dL/dV.
 * The stateless activations (CLAMP01, STEP) go through the same kernels.
 *
 * Float arithmetic uses explicit __f*_rn intrinsics (no FMA contraction) in the order neuron_cpu.c
 * evaluates it, and the surrogates come from surrogate.h (float, each operation rounded, its own
 * exponential), so spikes, charges and gradients are bit-identical to the CPU. The backward pass recomputes S from the charge instead of reading y.
 *
 * Statistics (spikes, silent elements): per-thread double sums, a fixed block tree, one partial per
 * block, and one block that adds the partials; the grid depends on n only, never on the device, and
 * there are no floating-point atomics, so the sums repeat bit for bit. */
#include <math.h>

#include "cuda_backend.h"
#include "require.h"
#include "surrogate.h"

namespace { /* kernels and helpers are private to this file */

/* What the kernels compute per step: the reset mode of LIF/IF, or a stateless activation. */
enum neuron_op { OP_HARD = 0, OP_SOFT, OP_NONE, OP_CLAMP01, OP_STEP };

/* The parameters as the kernels use them: IF is LIF with decay 1 (1*v == v exactly). */
struct neuron_consts {
    int T, detach, through_time;
    bf_surrogate surrogate;
    float decay, threshold, alpha, width, height;
};

#define GRID_STRIDE(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* g(u), the surrogate dS/dH (see bf_surrogate): surrogate.h, shared with neuron_cpu.c. */
__device__ __forceinline__ float surrogate_grad(const neuron_consts &c, float u) {
    return bf_surrogate_grad(c.surrogate, c.alpha, c.width, c.height, u);
}

/* y (and for LIF/IF the charge) of all T steps of each element; with STATS, block b writes
 * partial[b] = its number of spikes (sum of y) and partial[gridDim.x + b] = its silent elements. */
template <int OP, bool STATS>
__global__ void k_neuron_forward(const float *__restrict__ x, float *__restrict__ y, float *__restrict__ charge,
                                 size_t n, neuron_consts c, double *__restrict__ partial) {
    double spikes = 0.0, silent = 0.0;
    GRID_STRIDE(i, n) {
        float v = 0.0f;
        double ysum = 0.0;
        size_t idx = i;
#pragma unroll 4
        for (int t = 0; t < c.T; t++, idx += n) {
            const float xv = x[idx];
            float out;
            if (OP == OP_CLAMP01) {
                out = xv < 0.0f ? 0.0f : xv > 1.0f ? 1.0f : xv; /* a NaN passes through */
            } else if (OP == OP_STEP) {
                out = xv > 0.0f ? 1.0f : 0.0f;
            } else {
                const float h = __fadd_rn(__fmul_rn(c.decay, v), xv);
                const float u = __fsub_rn(h, c.threshold);
                const bool s = u >= 0.0f;
                charge[idx] = h;
                out = s ? 1.0f : 0.0f;
                /* HARD: H*(1-S); SOFT: H - threshold*S (= u when S = 1); NONE: H */
                v = !s || OP == OP_NONE ? h : OP == OP_HARD ? 0.0f : u;
            }
            y[idx] = out;
            if (STATS) ysum += (double)out;
        }
        if (STATS) {
            spikes += ysum;
            silent += ysum == 0.0 ? 1.0 : 0.0;
        }
    }
    if (STATS) {
        spikes = bf_block_sum(spikes);
        if (threadIdx.x == 0) partial[blockIdx.x] = spikes;
        silent = bf_block_sum(silent);
        if (threadIdx.x == 0) partial[gridDim.x + blockIdx.x] = silent;
    }
}

/* dx of all T steps of each element. LIF/IF (OP a reset mode): BPTT from t = T-1 down to 0 with
 * dL/dV carried in a register; CLAMP01 and STEP: elementwise. */
template <int OP>
__global__ void k_neuron_backward(const float *__restrict__ x, const float *__restrict__ charge,
                                  const float *__restrict__ dy, float *__restrict__ dx, size_t n, neuron_consts c) {
    GRID_STRIDE(i, n) {
        if (OP == OP_CLAMP01 || OP == OP_STEP) {
            size_t idx = i;
            for (int t = 0; t < c.T; t++, idx += n) {
                const float xv = x[idx], g = dy[idx];
                dx[idx] = OP == OP_CLAMP01 ? (xv >= 0.0f && xv <= 1.0f ? g : 0.0f)
                                           : __fmul_rn(g, surrogate_grad(c, xv));
            }
            continue;
        }
        float dv = 0.0f; /* dL/dV[t], zero after the last step */
        size_t idx = (size_t)(c.T - 1) * n + i;
#pragma unroll 4
        for (int t = c.T - 1; t >= 0; t--, idx -= n) {
            const float h = charge[idx], u = __fsub_rn(h, c.threshold), g = surrogate_grad(c, u);
            float dh = __fmul_rn(dy[idx], g);
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
            dx[idx] = dh;
        }
    }
}

/* One block: *out += the partials, added in a fixed tree order. */
__global__ void k_accumulate_partials(const double *__restrict__ partial, int count, float *out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = bf_block_sum(acc);
    if (threadIdx.x == 0) *out = (float)((double)*out + acc);
}

/* ---- host helpers ---- */

/* The same checks, in the same order and with the same messages, as neuron_cpu.c. */
bf_status check_params(const bf_neuron_params *p, size_t n, const char *op) {
    if (!p) return bf_error(BF_ERR_ARG, "%s: NULL neuron parameters", op);
    if ((int)p->kind < (int)BF_NEURON_LIF || (int)p->kind > (int)BF_NEURON_STEP)
        return bf_error(BF_ERR_ARG, "%s: unknown neuron kind %d", op, (int)p->kind);
    if (p->T < 1) return bf_error(BF_ERR_ARG, "%s: T must be >= 1 (got %d)", op, p->T);
    if ((int)p->reset < (int)BF_RESET_HARD || (int)p->reset > (int)BF_RESET_NONE)
        return bf_error(BF_ERR_ARG, "%s: unknown reset mode %d", op, (int)p->reset);
    if ((int)p->surrogate < (int)BF_SURROGATE_SIGMOID || (int)p->surrogate > (int)BF_SURROGATE_TANH)
        return bf_error(BF_ERR_ARG, "%s: unknown surrogate %d", op, (int)p->surrogate);
    if (p->kind != BF_NEURON_CLAMP01 &&
        (p->surrogate == BF_SURROGATE_RECTANGULAR || p->surrogate == BF_SURROGATE_TRIANGLE) && !(p->width > 0.0f))
        return bf_error(BF_ERR_ARG, "%s: the surrogate's width must be > 0 (got %g)", op, (double)p->width);
    if (n > SIZE_MAX / sizeof(float) / (size_t)p->T)
        return bf_error(BF_ERR_ARG, "%s: T=%d x n=%zu elements overflow", op, p->T, n);
    return BF_OK;
}

neuron_consts consts_of(const bf_neuron_params *p) {
    neuron_consts c;
    c.T = p->T;
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

int op_of(const bf_neuron_params *p) {
    if (p->kind == BF_NEURON_CLAMP01) return OP_CLAMP01;
    if (p->kind == BF_NEURON_STEP) return OP_STEP;
    return p->reset == BF_RESET_HARD ? OP_HARD : p->reset == BF_RESET_SOFT ? OP_SOFT : OP_NONE;
}

bool is_stateful(const bf_neuron_params *p) { return p->kind == BF_NEURON_LIF || p->kind == BF_NEURON_IF; }

/* Blocks of both kernels: one thread per element, capped at 4096 blocks (about 8 resident waves of
 * an H100's threads; beyond that threads loop). A function of n only, so the statistics' partials
 * and their summation order never depend on the device. */
unsigned neuron_blocks(size_t n) {
    const size_t blocks = bf_cuda_div_up(n, BF_CUDA_THREADS);
    return (unsigned)(blocks > 4096 ? 4096 : blocks < 1 ? 1 : blocks);
}

template <int OP, bool STATS>
bf_status launch_forward(bf_cuda_impl *im, unsigned blocks, const float *x, float *y, float *charge, size_t n,
                         const neuron_consts &c, double *partial) {
    k_neuron_forward<OP, STATS><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(x, y, charge, n, c, partial);
    BF_LAUNCH_CHECK("k_neuron_forward");
    return BF_OK;
}

template <bool STATS>
bf_status dispatch_forward(bf_cuda_impl *im, int op, unsigned blocks, const float *x, float *y, float *charge,
                           size_t n, const neuron_consts &c, double *partial) {
    switch (op) {
    case OP_HARD: return launch_forward<OP_HARD, STATS>(im, blocks, x, y, charge, n, c, partial);
    case OP_SOFT: return launch_forward<OP_SOFT, STATS>(im, blocks, x, y, charge, n, c, partial);
    case OP_NONE: return launch_forward<OP_NONE, STATS>(im, blocks, x, y, charge, n, c, partial);
    case OP_CLAMP01: return launch_forward<OP_CLAMP01, STATS>(im, blocks, x, y, charge, n, c, partial);
    default: return launch_forward<OP_STEP, STATS>(im, blocks, x, y, charge, n, c, partial);
    }
}

template <int OP>
bf_status launch_backward(bf_cuda_impl *im, const float *x, const float *charge, const float *dy, float *dx, size_t n,
                          const neuron_consts &c) {
    k_neuron_backward<OP><<<neuron_blocks(n), BF_CUDA_THREADS, 0, im->stream>>>(x, charge, dy, dx, n, c);
    BF_LAUNCH_CHECK("k_neuron_backward");
    return BF_OK;
}

}  // namespace

extern "C" bf_status bf_cuda_neuron_forward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x,
                                            float *y, float *charge, float *stats) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_params(p, n, "neuron_forward"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_forward", x, y);
    if (is_stateful(p)) REQUIRE("neuron_forward (charge of LIF/IF)", charge);
    const neuron_consts c = consts_of(p);
    const int op = op_of(p);
    const unsigned blocks = neuron_blocks(n);
    if (!stats) return dispatch_forward<false>(im, op, blocks, x, y, charge, n, c, (double *)NULL);
    void *partial;
    BF_TRY(bf_cuda_scratch(im, 2 * (size_t)blocks * sizeof(double), &partial));
    BF_TRY(dispatch_forward<true>(im, op, blocks, x, y, charge, n, c, (double *)partial));
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial, (int)blocks, stats);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial + blocks, (int)blocks, stats + 1);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    return BF_OK;
}

extern "C" bf_status bf_cuda_neuron_backward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x,
                                             const float *y, const float *charge, const float *dy, float *dx) {
    (void)y; /* S is recomputed from the charge */
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_params(p, n, "neuron_backward"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_backward", dy, dx);
    if (is_stateful(p))
        REQUIRE("neuron_backward (charge of LIF/IF)", charge);
    else
        REQUIRE("neuron_backward (x of CLAMP01/STEP)", x);
    const neuron_consts c = consts_of(p);
    switch (op_of(p)) {
    case OP_HARD: return launch_backward<OP_HARD>(im, x, charge, dy, dx, n, c);
    case OP_SOFT: return launch_backward<OP_SOFT>(im, x, charge, dy, dx, n, c);
    case OP_NONE: return launch_backward<OP_NONE>(im, x, charge, dy, dx, n, c);
    case OP_CLAMP01: return launch_backward<OP_CLAMP01>(im, x, charge, dy, dx, n, c);
    default: return launch_backward<OP_STEP>(im, x, charge, dy, dx, n, c);
    }
}
