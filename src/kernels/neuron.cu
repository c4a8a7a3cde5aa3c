/* neuron.cu - spiking-neuron ops on the GPU (contract in ops.h at bf_neuron_kind and the neuron_*
 * members of bf_ops; the CPU twin is neuron_cpu.c).
 *
 * One fused kernel per direction, as SpikingJelly's multi-step CUDA neurons: one thread per element
 * of the [T, n] tensors (per 4 consecutive elements, moved as 16-byte vectors, when n % 4 == 0 and
 * the tensors are aligned), looping over all T steps with the state in registers, so every tensor
 * is streamed through exactly once (forward: x in, y and charge out; backward: charge and dy in, dx
 * out; consecutive threads touch consecutive floats of each step, so every access is coalesced).
 * The forward pass carries the membrane V; the backward pass walks t = T-1 .. 0 carrying dL/dV.
 * The stateless activations (CLAMP01, STEP) go through the same kernels. With [spiking]
 * recompute_charge the forward (BN = true) reads batch-norm's input and normalises it as it goes,
 * keeping no charge, and k_neuron_backward_bn computes the charges again from that input before it
 * walks back (ops.h at neuron_forward_bn and neuron_backward_bn): neither the charge nor the
 * batch-norm output is ever written.
 *
 * Float arithmetic uses explicit __f*_rn intrinsics (no FMA contraction) in the order neuron_cpu.c
 * evaluates it, and the surrogates come from surrogate.h (float, each operation rounded, its own
 * exponential), so spikes, charges and gradients are bit-identical to the CPU. The backward pass
 * recomputes S from the charge instead of reading y.
 *
 * Statistics (spikes, silent elements): per-thread double sums, a fixed block tree, one partial per
 * block, and one block that adds the partials; the grid depends on n only, never on the device, and
 * there are no floating-point atomics, so the sums repeat bit for bit. */
#include <math.h>

#include "cuda_backend.h"
#include "neuron_check.h"
#include "neuron_common.cuh" /* neuron_consts, lif_step, bptt_step, bn_input, the launch helpers */
#include "require.h"
#include "vector_access.cuh" /* fvec, load_vec, store_vec: 16-byte accesses when V = 4 (the op checks alignment) */

namespace { /* kernels and helpers are private to this file */

/* y (and for LIF/IF the charge) of all T steps of elements iv*V .. iv*V+V-1 (V = 4: 16-byte
 * accesses, fewer instructions and more bytes in flight per thread); with STATS, their spikes and
 * silent elements added to *spikes and *silent. A NULL charge is not stored. x and charge are not
 * __restrict__: the memory plan may pass the same buffer for both (ops.h), and each thread loads
 * x[idx] before it stores charge[idx].
 * PACK (BN only, n a multiple of 32): the spikes also packed as k_spikes_pack packs them, each step's
 * 32-element words put together from the warp, a ballot of its 32 elements (V = 1) or each lane's 4
 * bits ORed over the 8 lanes of a word (V = 4): every lane of the warp takes part, and a lane past
 * the end (!valid) loads and stores nothing; base is the warp's first item. */
template <int OP, bool STATS, int V, bool BN, bool PACK>
__device__ __forceinline__ void forward_item(const float *x, const bn_input &bn, float *__restrict__ y, float *charge,
                                             uint32_t *__restrict__ bits, size_t n, const neuron_consts &c,
                                             size_t iv, bool valid, size_t base, double *spikes, double *silent) {
    float v[V], mu[V], sc[V], bt[V];
    double ysum[V];
    fvec<V> xv;
#pragma unroll
    for (int k = 0; k < V; k++) v[k] = 0.0f, ysum[k] = 0.0, xv.v[k] = 0.0f;
    if (BN) bn_coefficients<V>(bn, (valid ? iv : base) * V, mu, sc, bt);
    size_t idx = iv * V;
    if (valid) xv = load_vec<V>(x + idx);
#pragma unroll 2
    for (int t = 0; t < c.T; t++, idx += n) {
        /* step t+1's input before step t's stores: the compiler may not move a load of x past a
         * store to charge (they may be one buffer), so the overlap of loads with the arithmetic
         * is written out here (reading x[t+1] before writing charge[t] is safe either way); a
         * shared input (one step, no charge) is loaded once */
        fvec<V> xnext = xv;
        if (valid && t + 1 < c.T && !c.shared) xnext = load_vec<V>(x + idx + n);
        fvec<V> out, h;
        unsigned nibble = 0;
#pragma unroll
        for (int k = 0; k < V; k++) {
            const float xk = BN ? bn_normalise(xv.v[k], mu[k], sc[k], bt[k]) : xv.v[k];
            if (OP == OP_CLAMP01) {
                out.v[k] = xk < 0.0f ? 0.0f : xk > 1.0f ? 1.0f : xk; /* a NaN passes through */
            } else if (OP == OP_STEP) {
                out.v[k] = xk > 0.0f ? 1.0f : 0.0f;
            } else {
                bool s;
                h.v[k] = lif_step<OP>(c, xk, v[k], s);
                out.v[k] = s ? 1.0f : 0.0f;
            }
            if (STATS) ysum[k] += (double)out.v[k];
            if (PACK) nibble |= (valid && out.v[k] != 0.0f ? 1u : 0u) << k;
        }
        if (valid) {
            if (OP != OP_CLAMP01 && OP != OP_STEP && charge) store_vec<V>(charge + idx, h); /* NULL: kept nowhere */
            store_vec<V>(y + idx, out);
        }
        if constexpr (PACK) {
            const unsigned lane = threadIdx.x & 31u;
            if constexpr (V == 1) {
                const unsigned word = __ballot_sync(0xffffffffu, nibble != 0);
                if (lane == 0) bits[((size_t)t * n + base) >> 5] = word;
            } else {
                unsigned word = nibble << (V * (lane & 7u));
                word |= __shfl_xor_sync(0xffffffffu, word, 1);
                word |= __shfl_xor_sync(0xffffffffu, word, 2);
                word |= __shfl_xor_sync(0xffffffffu, word, 4);
                if ((lane & 7u) == 0 && valid) bits[((size_t)t * n + iv * V) >> 5] = word;
            }
        }
        xv = xnext;
    }
    if (STATS && valid) {
#pragma unroll
        for (int k = 0; k < V; k++) {
            *spikes += ysum[k];
            *silent += ysum[k] == 0.0 ? 1.0 : 0.0;
        }
    }
}

/* Every element of [T, n], V a thread (forward_item); with STATS, block b writes partial[b] = its
 * number of spikes (sum of y) and partial[gridDim.x + b] = its silent elements. With PACK the warps
 * walk the items whole (the same items per thread as the grid-stride loop, so the same sums). */
/* __launch_bounds__: at most 64 registers, 4 blocks of 256 per SM, what the largest instance (LIF,
 * statistics, 16-byte vectors, batch-norm input) had before the shared input's check raised it to
 * 70 (3 blocks); ptxas keeps every instance without PACK within 64 without spills. With PACK the
 * largest ones spilled within 64 (28 bytes), so 3 blocks: up to 80 registers. */
template <int OP, bool STATS, int V, bool BN, bool PACK>
__global__ void __launch_bounds__(BF_CUDA_THREADS, PACK ? 3 : 4)
    k_neuron_forward(const float *x, bn_input bn, float *__restrict__ y, float *charge, uint32_t *__restrict__ bits,
                     size_t n, neuron_consts c, double *__restrict__ partial) {
    double spikes = 0.0, silent = 0.0;
    const size_t items = n / V;
    if constexpr (PACK) { /* blockDim.x is a multiple of 32 */
        for (size_t base = blockIdx.x * (size_t)blockDim.x + (threadIdx.x & ~31u); base < items;
             base += (size_t)gridDim.x * blockDim.x) {
            const size_t iv = base + (threadIdx.x & 31u);
            forward_item<OP, STATS, V, BN, PACK>(x, bn, y, charge, bits, n, c, iv, iv < items, base, &spikes, &silent);
        }
    } else {
        GRID_STRIDE(iv, items) forward_item<OP, STATS, V, BN, PACK>(x, bn, y, charge, bits, n, c, iv, true, iv, &spikes,
                                                                    &silent);
    }
    if (STATS) {
        spikes = bf_block_sum(spikes);
        if (threadIdx.x == 0) partial[blockIdx.x] = spikes;
        silent = bf_block_sum(silent);
        if (threadIdx.x == 0) partial[gridDim.x + blockIdx.x] = silent;
    }
}

/* dx of all T steps of each element (V consecutive ones per thread, as the forward). LIF/IF (OP a
 * reset mode): BPTT from t = T-1 down to 0 with dL/dV carried in a register; CLAMP01 and STEP:
 * elementwise. */
template <int OP, int V>
__global__ void k_neuron_backward(const float *__restrict__ x, const float *__restrict__ charge,
                                  const float *__restrict__ dy, float *__restrict__ dx, size_t n, neuron_consts c) {
    GRID_STRIDE(iv, n / V) {
        if constexpr (OP == OP_CLAMP01 || OP == OP_STEP) {
            size_t idx = iv * V;
            for (int t = 0; t < c.T; t++, idx += n) {
                const fvec<V> xv = load_vec<V>(x + idx), g = load_vec<V>(dy + idx);
                fvec<V> d;
#pragma unroll
                for (int k = 0; k < V; k++)
                    d.v[k] = OP == OP_CLAMP01 ? (xv.v[k] >= 0.0f && xv.v[k] <= 1.0f ? g.v[k] : 0.0f)
                                              : __fmul_rn(g.v[k], surrogate_grad(c, xv.v[k]));
                store_vec<V>(dx + idx, d);
            }
        } else {
            float dv[V]; /* dL/dV[t], zero after the last step */
#pragma unroll
            for (int k = 0; k < V; k++) dv[k] = 0.0f;
            size_t idx = (size_t)(c.T - 1) * n + iv * V;
#pragma unroll 2
            for (int t = c.T - 1; t >= 0; t--, idx -= n) {
                const fvec<V> hv = load_vec<V>(charge + idx), gy = load_vec<V>(dy + idx);
                fvec<V> d;
#pragma unroll
                for (int k = 0; k < V; k++) d.v[k] = bptt_step<OP>(c, hv.v[k], gy.v[k], dv[k]);
                store_vec<V>(dx + idx, d);
            }
        }
    }
}

/* neuron_backward_bn for LIF/IF (OP a reset mode), V consecutive elements per thread, T <= TMAX:
 * each element's T charges are computed again from the batch-norm input, in registers (the loops
 * unroll fully over TMAX, so h is indexed by constants), then the BPTT walks them back. X is
 * batchnorm.cu's bn_apply_one with its scale gamma * invstd (k_bn_saved_coef), so the charges are
 * the forward's bits; xin is read once and the charge never. A shared input (c.shared) is one step,
 * normalised once, and dx one step: the steps' gradients summed in registers as they come (T-1
 * first), then stored once. */
template <int OP, int V, int TMAX>
__global__ void k_neuron_backward_bn(const float *__restrict__ xin, bn_input bn, const float *__restrict__ dy,
                                     float *__restrict__ dx, size_t n, neuron_consts c) {
    GRID_STRIDE(iv, n / V) {
        const size_t i0 = iv * V;
        float mu[V], sc[V], bt[V], dv[V], h[TMAX][V], xr[TMAX][V];
        bn_coefficients<V>(bn, i0, mu, sc, bt);
#pragma unroll
        for (int k = 0; k < V; k++) dv[k] = 0.0f;
        charges_again<OP, V, TMAX>(c, xin, n, i0, mu, sc, bt, h, xr);
        fvec<V> sum;
#pragma unroll
        for (int k = 0; k < V; k++) sum.v[k] = 0.0f;
#pragma unroll
        for (int t = TMAX - 1; t >= 0; t--) {
            if (t >= c.T) continue;
            const size_t idx = (size_t)t * n + i0;
            const fvec<V> gy = load_vec<V>(dy + idx);
            fvec<V> d;
#pragma unroll
            for (int k = 0; k < V; k++) d.v[k] = bptt_step<OP>(c, h[t][k], gy.v[k], dv[k]);
            if (!c.shared) {
                store_vec<V>(dx + idx, d);
                continue;
            }
#pragma unroll
            for (int k = 0; k < V; k++) sum.v[k] = t == c.T - 1 ? d.v[k] : __fadd_rn(sum.v[k], d.v[k]);
        }
        if (c.shared) store_vec<V>(dx + i0, sum);
    }
}

/* Bit k of bits[w] = y[32w + k] != 0: one warp per word, each lane votes for its element (the
 * lanes of a warp walk the words together, so every __ballot_sync has all 32 of them). */
__global__ void k_spikes_pack(const float *__restrict__ y, uint32_t *__restrict__ bits, size_t n) {
    const size_t words = (n + 31) / 32, warps = (size_t)gridDim.x * blockDim.x / 32;
    const unsigned lane = threadIdx.x % 32;
    for (size_t w = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32; w < words; w += warps) {
        const size_t i = w * 32 + lane;
        const unsigned word = __ballot_sync(0xffffffffu, i < n && y[i] != 0.0f);
        if (lane == 0) bits[w] = word;
    }
}

__global__ void k_spikes_unpack(const uint32_t *__restrict__ bits, float *__restrict__ y, size_t n) {
    GRID_STRIDE(i, n) y[i] = (bits[i / 32] >> (i % 32)) & 1u ? 1.0f : 0.0f;
}

/* One block: *out += the partials, added in a fixed tree order. */
__global__ void k_accumulate_partials(const double *__restrict__ partial, int count, float *out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = bf_block_sum(acc);
    if (threadIdx.x == 0) *out = (float)((double)*out + acc);
}


/* bits (BN only): packed in the same pass (the PACK instances); NULL: not packed. */
template <int OP, bool STATS, int V, bool BN>
bf_status launch_forward(bf_cuda_impl *im, unsigned blocks, const float *x, const bn_input &bn, float *y, float *charge,
                         uint32_t *bits, size_t n, const neuron_consts &c, double *partial) {
    if constexpr (BN)
        if (bits) {
            k_neuron_forward<OP, STATS, V, BN, true><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(x, bn, y, charge, bits,
                                                                                             n, c, partial);
            BF_LAUNCH_CHECK("k_neuron_forward<pack>");
            return BF_OK;
        }
    k_neuron_forward<OP, STATS, V, BN, false><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(x, bn, y, charge, NULL, n, c,
                                                                                      partial);
    BF_LAUNCH_CHECK("k_neuron_forward");
    return BF_OK;
}

/* BN: the input normalised as read (LIF/IF only: the stateless kinds are not instantiated). */
template <bool STATS, int V, bool BN>
bf_status dispatch_forward(bf_cuda_impl *im, int op, unsigned blocks, const float *x, const bn_input &bn, float *y,
                           float *charge, uint32_t *bits, size_t n, const neuron_consts &c, double *partial) {
    switch (op) {
    case OP_HARD: return launch_forward<OP_HARD, STATS, V, BN>(im, blocks, x, bn, y, charge, bits, n, c, partial);
    case OP_SOFT: return launch_forward<OP_SOFT, STATS, V, BN>(im, blocks, x, bn, y, charge, bits, n, c, partial);
    case OP_NONE: return launch_forward<OP_NONE, STATS, V, BN>(im, blocks, x, bn, y, charge, bits, n, c, partial);
    }
    if constexpr (BN) return bf_error(BF_ERR_INTERNAL, "neuron_forward_bn: a stateless neuron");
    else if (op == OP_CLAMP01) return launch_forward<OP_CLAMP01, STATS, V, false>(im, blocks, x, bn, y, charge, bits, n, c, partial);
    else return launch_forward<OP_STEP, STATS, V, false>(im, blocks, x, bn, y, charge, bits, n, c, partial);
}

template <int OP, int V>
bf_status launch_backward(bf_cuda_impl *im, const float *x, const float *charge, const float *dy, float *dx, size_t n,
                          const neuron_consts &c) {
    k_neuron_backward<OP, V><<<neuron_blocks(n / V), BF_CUDA_THREADS, 0, im->stream>>>(x, charge, dy, dx, n, c);
    BF_LAUNCH_CHECK("k_neuron_backward");
    return BF_OK;
}

template <int V>
bf_status dispatch_backward(bf_cuda_impl *im, int op, const float *x, const float *charge, const float *dy, float *dx,
                            size_t n, const neuron_consts &c) {
    switch (op) {
    case OP_HARD: return launch_backward<OP_HARD, V>(im, x, charge, dy, dx, n, c);
    case OP_SOFT: return launch_backward<OP_SOFT, V>(im, x, charge, dy, dx, n, c);
    case OP_NONE: return launch_backward<OP_NONE, V>(im, x, charge, dy, dx, n, c);
    case OP_CLAMP01: return launch_backward<OP_CLAMP01, V>(im, x, charge, dy, dx, n, c);
    default: return launch_backward<OP_STEP, V>(im, x, charge, dy, dx, n, c);
    }
}

/* The forward with or without statistics, at vector width V. */
template <int V, bool BN>
bf_status run_forward(bf_cuda_impl *im, int op, const float *x, const bn_input &bn, float *y, float *charge,
                      uint32_t *bits, size_t n,
                      const neuron_consts &c, float *stats) {
    const unsigned blocks = neuron_blocks(n / V);
    if (!stats) return dispatch_forward<false, V, BN>(im, op, blocks, x, bn, y, charge, bits, n, c, (double *)NULL);
    void *partial;
    BF_TRY(bf_cuda_scratch(im, 2 * (size_t)blocks * sizeof(double), &partial));
    BF_TRY((dispatch_forward<true, V, BN>(im, op, blocks, x, bn, y, charge, bits, n, c, (double *)partial)));
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial, (int)blocks, stats);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial + blocks, (int)blocks, stats + 1);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    return BF_OK;
}

template <int OP, int V, int TMAX>
bf_status launch_backward_bn(bf_cuda_impl *im, const float *xin, const bn_input &bn, const float *dy, float *dx,
                             size_t n, const neuron_consts &c) {
    k_neuron_backward_bn<OP, V, TMAX><<<neuron_blocks(n / V), BF_CUDA_THREADS, 0, im->stream>>>(xin, bn, dy, dx, n, c);
    BF_LAUNCH_CHECK("k_neuron_backward_bn");
    return BF_OK;
}

/* TMAX: the smallest of 4, 8, 16, 32 that holds T; V = 4 only up to TMAX 8 (32 charges a thread). */
template <int OP>
bf_status dispatch_backward_bn(bf_cuda_impl *im, int v, const float *xin, const bn_input &bn, const float *dy,
                               float *dx, size_t n, const neuron_consts &c) {
    if (c.T <= 4) return v == 4 ? launch_backward_bn<OP, 4, 4>(im, xin, bn, dy, dx, n, c)
                                : launch_backward_bn<OP, 1, 4>(im, xin, bn, dy, dx, n, c);
    if (c.T <= 8) return v == 4 ? launch_backward_bn<OP, 4, 8>(im, xin, bn, dy, dx, n, c)
                                : launch_backward_bn<OP, 1, 8>(im, xin, bn, dy, dx, n, c);
    if (c.T <= 16) return launch_backward_bn<OP, 1, 16>(im, xin, bn, dy, dx, n, c);
    return launch_backward_bn<OP, 1, 32>(im, xin, bn, dy, dx, n, c);
}

}  // namespace

extern "C" bf_status bf_cuda_neuron_forward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x,
                                            float *y, float *charge, float *stats) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(bf_neuron_check_params(p, n, "neuron_forward"));
    BF_TRY(bf_neuron_check_shared(p, charge, "neuron_forward"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_forward", x, y);
    const neuron_consts c = consts_of(p);
    const int op = op_of(p);
    /* the charge is unused (maybe NULL) for the stateless kinds, and NULL when none is kept: x
     * stands in for its alignment */
    if (op != OP_CLAMP01 && vector_width(im, n, x, y, is_stateful(p) && charge ? charge : x) == 4)
        return run_forward<4, false>(im, op, x, bn_input{}, y, charge, NULL, n, c, stats);
    return run_forward<1, false>(im, op, x, bn_input{}, y, charge, NULL, n, c, stats);
}

extern "C" bf_status bf_cuda_neuron_backward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x,
                                             const float *y, const float *charge, const float *dy, float *dx) {
    (void)y; /* S is recomputed from the charge */
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(bf_neuron_check_params(p, n, "neuron_backward"));
    if (p->shared_input)
        return bf_error(BF_ERR_ARG, "neuron_backward: a shared input comes back through neuron_backward_bn only");
    if (n == 0) return BF_OK;
    REQUIRE("neuron_backward", dy, dx);
    if (is_stateful(p))
        REQUIRE("neuron_backward (charge of LIF/IF)", charge);
    else
        REQUIRE("neuron_backward (x of CLAMP01/STEP)", x);
    const neuron_consts c = consts_of(p);
    const float *in = is_stateful(p) ? charge : x; /* what the backward reads beside dy */
    if (vector_width(im, n, in, dy, dx) == 4) return dispatch_backward<4>(im, op_of(p), x, charge, dy, dx, n, c);
    return dispatch_backward<1>(im, op_of(p), x, charge, dy, dx, n, c);
}

extern "C" bf_status bf_cuda_neuron_forward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in,
                                               size_t n, const float *xin, float *y, uint32_t *bits, float *stats) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(bf_neuron_check_params(p, n, "neuron_forward_bn"));
    BF_TRY(bf_neuron_check_bn_input(p, in, n, "neuron_forward_bn"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_forward_bn", xin, y);
    const neuron_consts c = consts_of(p);
    const bn_input bn = {in->c, in->hw, in->mean, in->invstd, in->gamma, in->beta};
    /* the bits in the same pass where each step's row starts a 32-element word; else packed after */
    uint32_t *fused_bits = bits && n % 32 == 0 ? bits : NULL;
    if (vector_width(im, n, xin, y, xin) == 4)
        BF_TRY((run_forward<4, true>(im, op_of(p), xin, bn, y, NULL, fused_bits, n, c, stats)));
    else
        BF_TRY((run_forward<1, true>(im, op_of(p), xin, bn, y, NULL, fused_bits, n, c, stats)));
    return bits && !fused_bits ? bf_cuda_spikes_pack(b, y, bits, n * (size_t)p->T) : BF_OK;
}

extern "C" bf_status bf_cuda_neuron_backward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in,
                                                size_t n, const float *xin, const float *dy, float *dx) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(bf_neuron_check_params(p, n, "neuron_backward_bn"));
    BF_TRY(bf_neuron_check_bn_input(p, in, n, "neuron_backward_bn"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_backward_bn", xin, dy, dx);
    const neuron_consts c = consts_of(p);
    const bn_input bn = {in->c, in->hw, in->mean, in->invstd, in->gamma, in->beta};
    const int v = vector_width(im, n, xin, dy, dx);
    switch (op_of(p)) {
    case OP_HARD: return dispatch_backward_bn<OP_HARD>(im, v, xin, bn, dy, dx, n, c);
    case OP_SOFT: return dispatch_backward_bn<OP_SOFT>(im, v, xin, bn, dy, dx, n, c);
    default: return dispatch_backward_bn<OP_NONE>(im, v, xin, bn, dy, dx, n, c);
    }
}

extern "C" bf_status bf_cuda_spikes_pack(bf_backend *b, const float *y, uint32_t *bits, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    REQUIRE("spikes_pack", y, bits);
    static_assert(BF_CUDA_THREADS % 32 == 0, "k_spikes_pack needs whole warps");
    k_spikes_pack<<<neuron_blocks((n + 31) / 32 * 32), BF_CUDA_THREADS, 0, im->stream>>>(y, bits, n);
    BF_LAUNCH_CHECK("k_spikes_pack");
    return BF_OK;
}

extern "C" bf_status bf_cuda_spikes_unpack(bf_backend *b, const uint32_t *bits, float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    REQUIRE("spikes_unpack", bits, y);
    k_spikes_unpack<<<neuron_blocks(n), BF_CUDA_THREADS, 0, im->stream>>>(bits, y, n);
    BF_LAUNCH_CHECK("k_spikes_unpack");
    return BF_OK;
}
