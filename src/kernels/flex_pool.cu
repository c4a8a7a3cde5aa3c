/* flex_pool.cu - the fused channel-wise max flex on the GPU (contract in ops.h at
 * flex_pool_max_forward; the CPU twin is flex_pool_cpu.c, which computes through the op-by-op
 * sequence; every result is bit-identical to it, the same IEEE expressions in another order of
 * loops). tests/test_flex_pool_ops.c emulates these kernels loop for loop on the CPU: a change
 * here belongs there too.
 *
 * What a flex layer keeps between its forward and backward is the conv branch's output, overwritten
 * in place by y, plus one byte per pooled element (where its window's maximum was) and two bits per
 * output element (conv won or tied; tied). P and P~ are never written to memory, and the backward
 * reads neither x nor y: its route is dy and the two bits alone. The conv's bias, when the forward
 * is given it, is added to each C as it is read (k_conv_bias's float add, so the same bits as the
 * conv adding it), which saves the conv a read and a write of its output.
 *
 * EXPAND (FlexNet's rule) runs over pooled planes: blockIdx.x is the pooled plane (n, i), threads
 * walk its positions, so a window maximum is taken once however many output channels tap it (21
 * in VGG-16's first layer, 3 -> 64) and no thread divides a 64-bit index:
 *   k_pool_max_forward_expand  window maximum and byte, then for each tapping channel: y in place,
 *                              and the warp's ballots of "C >= P~" and "C == P~" ORed into the
 *                              winners and ties bitmaps at the element's bit (a plane need not start
 *                              on a word boundary); <STATS> also sums each written y per output
 *                              channel for the next batch-norm (flex_pool_max_forward_bn_stats),
 *                              and k_fold_chunks and k_bn_stats_final finish its statistics.
 *   k_route_expand<V>          for V consecutive positions of a pooled plane and each tapping
 *                              channel: dconv from dy and the two bits, and the sum of the pool
 *                              shares: dpooled (float4 loads and stores when V = 4); <BN>
 *                              (flex_pool_max_backward_bn) takes dy as the next batch-norm's dx,
 *                              from its output gradient and input, without dpooled.
 * BILINEAR (an output channel mixes two pooled channels) keeps one thread per output element:
 *   k_pool_max_forward_bilinear, whose warps' ballots are whole words of the bitmaps, and
 *   k_pool_max_route_bilinear over the candidate channels of each pooled element.
 * Both rules:
 *   k_pool_scatter_add   one thread per input element: the windows that contain it, in ascending
 *                        output order, add their dpooled where their byte chose it (a gather, so no
 *                        atomics), and the sum is added to dx.
 *   k_route_scatter      (EXPAND) k_route_expand and k_pool_scatter_add in one pass: one thread per
 *                        input element takes each window's share from dy and the bits where the
 *                        window's byte chose it, writing the window's dconv; dx is overwritten
 *                        (flex_pool_max_backward_scatter: the conv's backward-data adds after).
 *                        With BN (flex_pool_max_backward_scatter_bn) dy is the next batch-norm's
 *                        dx, computed from its output gradient dz and input y as each is read.
 *                        With DBIAS also the conv's bias gradient: each block's sums of the dconv
 *                        it writes, which k_fold_sums adds up per channel.
 *   k_pool_forward,      the mask joint's pool branch: one thread per pooled element writes its
 *   k_pool_gather        window maximum and byte, and reads the maximum back from x at the byte.
 * The windows of FlexNet (3x3 stride 1, 2x2 stride 2) are compiled in (pool_common.cuh).
 * conv_wins: per-thread double counts, block sums, and then (EXPAND) one 64-bit integer every block
 * adds to atomically (whole numbers: exact in any order) or (BILINEAR) the partials added in index
 * order.
 * [run] flex_kernels = slide (bf_cuda_set_flex_kernels): for EXPAND and the 3x3 stride-1 pad-1
 * window, flex_pool_max_forward (and _bn_stats), flex_pool_scatter_add and
 * flex_pool_max_backward_scatter (and _bn, where dconv is apart from dy) run flex_slide.cuh's
 * sliding-window kernels instead of k_pool_max_forward_expand, k_pool_scatter_add and
 * k_route_scatter, with the same bits (slide_takes, slide_forward_aligned and slide_route_apart say
 * which calls; the others run the kernels here). */
#include <math.h>

#include "bn_common.cuh" /* chunks_for, k_bn_stats_final */
#include "flex_common.cuh"
#include "flex_route.cuh" /* routed, bn_grad_dev, bn_grad_at: the route's per-element expressions */
#include "flex_slide.cuh" /* [run] flex_kernels = slide: the sliding-window forward and scatter */
#include "pool_common.cuh"
#include "vector_access.cuh" /* fvec, load_vec, store_vec */

namespace { /* kernels are private to this file */

/* ---- EXPAND (block copy or tiling; every FlexNet layer): one thread per pooled element ----
 * Pooled channel i is tapped by output channels j = lo, lo+step, ... < hi (fold_candidates: none
 * when tiling narrows and i >= c_out), each with weight 1, so its window maximum is the P~ of all of
 * them: taken once, then applied to each tapping channel's plane. */

/* The winners bits of one warp's 32 consecutive positions of output plane base: the ballot, shifted
 * to element e = base + p of lane 0 and ORed into the word(s) it straddles (a plane rarely starts
 * on a word boundary; the op zeroes the bitmap first). Lane 0 stores; the call is warp-wide. */
__device__ __forceinline__ void store_winner_bits(uint32_t *__restrict__ winners, size_t e_lane0, bool lane0_valid,
                                                  bool bit) { /* also the ties bitmap's */
    const unsigned bits = __ballot_sync(0xffffffffu, bit);
    if ((threadIdx.x & 31u) != 0 || !lane0_valid || bits == 0) return;
    const unsigned off = (unsigned)(e_lane0 & 31u);
    atomicOr(&winners[e_lane0 >> 5], bits << off);
    if (off != 0 && (bits >> (32u - off)) != 0) atomicOr(&winners[(e_lane0 >> 5) + 1], bits >> (32u - off));
}

/* With STATS (flex_pool_max_forward_bn_stats) the block also sums, per output channel it writes,
 * its y values and their squares in double for the next batch-norm's statistics: per (tap, p0) a
 * warp's sum by shuffles, added by lane 0 to the warp's own slot in shared memory (taps_max slots
 * per warp: [warp][tap][2]), and at the end the warps' slots in warp order into the partial of
 * (channel j, chunk n * gridDim.y + blockIdx.y): stats_partial[(j * chunks + chunk) * 2 + {0, 1}]
 * with chunks = n_batch * gridDim.y, k_bn_stats_final's layout. Every output channel has one
 * pooled source (EXPAND), so each partial is written by one block, in a fixed order. */
struct stats_out {
    double *partial; /* NULL without STATS */
    int taps_max;    /* the most output channels one pooled channel feeds: ceil(c_out / c_in) */
};

/* grid (n * c_in pooled planes, tiles); the position loop is the same for every thread of a block
 * (the ballot needs whole warps): p0 walks the block's tiles, p = p0 + threadIdx.x. */
template <int K, int S, bool COUNT, bool STATS>
__global__ void k_pool_max_forward_expand(const float *__restrict__ x, const float *__restrict__ bias,
                                          float *__restrict__ y, uint8_t *__restrict__ window,
                                          uint32_t *__restrict__ winners,
                                          uint32_t *__restrict__ ties, flex_geo g, pool_geo pg,
                                          unsigned long long *__restrict__ wins_total, stats_out so) {
    extern __shared__ double tap_sums[]; /* STATS: [blockDim.x / 32][so.taps_max][2] */
    const int plane = (int)blockIdx.x, n = plane / g.c_in, i = plane - n * g.c_in;
    const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
    int lo, hi, step;
    fold_candidates(g, i, &lo, &hi, &step);
    double *my_sums = STATS ? tap_sums + (size_t)warp * so.taps_max * 2 : NULL;
    if (STATS) {
        for (int t = lane; t < 2 * so.taps_max; t += 32) my_sums[t] = 0.0;
        __syncwarp();
    }
    double wins = 0.0;
    if (lo < hi) { /* the same for the whole block */
        const float *xq = x + (size_t)plane * pg.h_in * pg.w_in;
        for (int p0 = (int)(blockIdx.y * blockDim.x); p0 < g.hw; p0 += (int)(gridDim.y * blockDim.x)) {
            const int p = p0 + (int)threadIdx.x, p_lane0 = p - (int)(threadIdx.x & 31u);
            const bool valid = p < g.hw;
            float pooled = 0.0f;
            if (valid) {
                const int oh = p / pg.w_out, ow = p - oh * pg.w_out;
                int at;
                pooled = window_max<K, S>(pg, xq, oh, ow, &at);
                window[(size_t)plane * g.hw + p] = (uint8_t)at;
            }
            for (int j = lo, tap = 0; j < hi; j += step, tap++) {
                const size_t base = ((size_t)n * g.c_out + (size_t)j) * (size_t)g.hw;
                bool conv_or_tie = false, tie = false;
                double v = 0.0; /* the written y, for STATS */
                if (valid) {
                    const float c = bias ? __fadd_rn(y[base + p], bias[j]) : y[base + p]; /* k_conv_bias's add */
                    const bool conv_wins = c > pooled; /* strict: a tie counts as pool */
                    const float out = conv_wins || c != c ? c : pooled;
                    y[base + p] = out;
                    v = (double)out;
                    conv_or_tie = c >= pooled;
                    tie = c == pooled;
                    wins += conv_wins ? 1.0 : 0.0;
                }
                store_winner_bits(winners, base + (size_t)p_lane0, p_lane0 < g.hw, conv_or_tie);
                store_winner_bits(ties, base + (size_t)p_lane0, p_lane0 < g.hw, tie);
                if (STATS) {
                    const double s0 = bf_warp_sum(v), s1 = bf_warp_sum(v * v);
                    if (lane == 0) {
                        my_sums[2 * tap] += s0;
                        my_sums[2 * tap + 1] += s1;
                    }
                }
            }
        }
    }
    if (COUNT) add_block_count(wins, wins_total);
    if (STATS && lo < hi) {
        __syncthreads(); /* every warp's slots are final */
        const int warps = (int)(blockDim.x >> 5), taps = (hi - lo + step - 1) / step;
        const size_t chunks = (size_t)(gridDim.x / g.c_in) * gridDim.y, chunk = (size_t)n * gridDim.y + blockIdx.y;
        for (int t = (int)threadIdx.x; t < taps; t += (int)blockDim.x) {
            double a0 = 0.0, a1 = 0.0;
            for (int w = 0; w < warps; w++) {
                a0 += tap_sums[((size_t)w * so.taps_max + t) * 2];
                a1 += tap_sums[((size_t)w * so.taps_max + t) * 2 + 1];
            }
            const size_t o = ((size_t)(lo + t * step) * chunks + chunk) * 2;
            so.partial[o] = a0;
            so.partial[o + 1] = a1;
        }
    }
}

/* dconv of V consecutive elements e.. of output channel j (one bitmap word: e % V == 0), stored, and
 * returned with dy (BN: the batch-norm's dx from dz and y) for the pool's share. */
template <int V, bool BN>
__device__ __forceinline__ fvec<V> route_vec(const uint32_t *__restrict__ winners, const uint32_t *__restrict__ ties,
                                             const float *dy, float *dconv, const float *__restrict__ y,
                                             const bn_grad_dev &bn, int j, size_t e, float tie_share, fvec<V> *gv_out) {
    fvec<V> gv = load_vec<V>(dy + e);
    if (BN) {
        const fvec<V> yv = load_vec<V>(y + e);
#pragma unroll
        for (int k = 0; k < V; k++) gv.v[k] = bn_grad_at(bn, j, yv.v[k], gv.v[k]);
    }
    const uint32_t win = winners[e >> 5], tie = ties[e >> 5];
    fvec<V> dc;
#pragma unroll
    for (int k = 0; k < V; k++) dc.v[k] = routed(gv.v[k], win, tie, (unsigned)((e + (size_t)k) & 31u), tie_share);
    store_vec<V>(dconv + e, dc);
    *gv_out = gv;
    return dc;
}

/* V consecutive positions p0.. of pooled plane (n, i) per thread (V = 4: hw % 4 == 0 and dy,
 * dconv, dpooled (and y) 16-byte aligned, so a vector's 4 elements share one bitmap word); the
 * tapping channels in ascending order, as flex.cu's k_fold_back. dy and dconv are not __restrict__:
 * they may be one buffer (ops.h); each vector of dy is loaded before its dconv is stored. With BN
 * (flex_pool_max_backward_bn) dy is the next batch-norm's output gradient dz, and each element's
 * dy that batch-norm's dx, from dz and its input y (bn_grad_at). With DBIAS (no dpooled) the taps
 * are the outer loop, and each tap's dconv is summed in double by the block into
 * dbias_partial[j * chunks + chunk] (k_route_scatter's layout; k_fold_sums adds them up).
 * grid: the n * c_in pooled planes (plane_launch_of over hw / V; capped_launch_of with DBIAS). */
template <int V, bool BN, bool DBIAS>
__global__ void k_route_expand(const uint32_t *__restrict__ winners, const uint32_t *__restrict__ ties,
                               const float *dy, float *dconv, float *__restrict__ dpooled, flex_geo g,
                               float tie_share, const float *__restrict__ y, bn_grad_dev bn,
                               double *__restrict__ dbias_partial) {
    const int plane = (int)blockIdx.x, n = plane / g.c_in, i = plane - n * g.c_in;
    int lo, hi, step;
    fold_candidates(g, i, &lo, &hi, &step);
    const size_t plane_e = (size_t)n * g.c_out * (size_t)g.hw; /* element 0 of sample n */
    fvec<V> gv;
    if constexpr (DBIAS) { /* no dpooled (the host's rule): the taps outermost, each's dconv summed by the block */
        const size_t chunks = (size_t)(gridDim.x / g.c_in) * gridDim.y, chunk = (size_t)n * gridDim.y + blockIdx.y;
        for (int j = lo; j < hi; j += step) { /* the same for the whole block */
            double db = 0.0;
            PLANE_POSITIONS(pv, g.hw / V) {
                const size_t e = plane_e + (size_t)j * g.hw + (size_t)(pv * V);
                const fvec<V> dc = route_vec<V, BN>(winners, ties, dy, dconv, y, bn, j, e, tie_share, &gv);
#pragma unroll
                for (int k = 0; k < V; k++) db += (double)dc.v[k];
            }
            db = bf_block_sum(db);
            if (threadIdx.x == 0) dbias_partial[(size_t)j * chunks + chunk] = db;
        }
    } else {
        PLANE_POSITIONS(pv, g.hw / V) {
            const int p = pv * V;
            fvec<V> acc;
#pragma unroll
            for (int k = 0; k < V; k++) acc.v[k] = 0.0f;
            for (int j = lo; j < hi; j += step) {
                const size_t e = plane_e + (size_t)j * g.hw + (size_t)p;
                const fvec<V> dc = route_vec<V, BN>(winners, ties, dy, dconv, y, bn, j, e, tie_share, &gv);
#pragma unroll
                for (int k = 0; k < V; k++) acc.v[k] = __fadd_rn(acc.v[k], __fsub_rn(gv.v[k], dc.v[k]));
            }
            if (dpooled) store_vec<V>(dpooled + (size_t)plane * g.hw + (size_t)p, acc);
        }
    }
}

/* ---- BILINEAR (the older interpolating rule; an output channel mixes two pooled channels):
 * one thread per output element, a grid-stride loop over whole warps ---- */

/* Whether output channel j is the first that taps pooled channel i, so its thread writes i's window
 * byte: BILINEAR's taps grow with j, so if j-1 misses i, every j' < j does. */
__device__ __forceinline__ bool first_tapper(const flex_geo &g, int j, int i) {
    if (j == 0) return true;
    const flex_taps before = taps_of(g, j - 1);
    return before.i0 != i && before.i1 != i;
}

/* The warp's __ballot_sync of "C >= P~" is its 32-bit word of the winners bitmap (e of lane 0 is
 * a multiple of 32), stored by lane 0; "C == P~" likewise of the ties bitmap. */
template <bool COUNT>
__global__ void k_pool_max_forward_bilinear(const float *__restrict__ x, const float *__restrict__ bias,
                                            float *__restrict__ y,
                                            uint8_t *__restrict__ window, uint32_t *__restrict__ winners,
                                            uint32_t *__restrict__ ties, size_t total, flex_geo g, pool_geo pg,
                                            double *__restrict__ partial) {
    const unsigned lane = threadIdx.x & 31u;
    const size_t in_plane = (size_t)pg.h_in * pg.w_in, hw = (size_t)g.hw;
    double wins = 0.0;
    /* every lane of a warp runs the same iterations, so the ballot always has the whole warp */
    for (size_t e0 = blockIdx.x * (size_t)blockDim.x + (threadIdx.x & ~31u); e0 < total;
         e0 += (size_t)gridDim.x * blockDim.x) {
        const size_t e = e0 + lane;
        bool conv_or_tie = false, tie = false;
        if (e < total) {
            size_t n, p;
            int j;
            split_index(e, g.c_out, g.hw, &n, &j, &p);
            const int oh = (int)(p / pg.w_out), ow = (int)(p - (size_t)oh * pg.w_out);
            const flex_taps t = taps_of(g, j);
            const float *xn = x + n * g.c_in * in_plane;
            int at0, at1;
            const float v0 = window_max<0, 0>(pg, xn + (size_t)t.i0 * in_plane, oh, ow, &at0);
            const float v1 = window_max<0, 0>(pg, xn + (size_t)t.i1 * in_plane, oh, ow, &at1);
            const float w = __fadd_rn(__fmul_rn(t.w0, v0), __fmul_rn(t.w1, v1)); /* widen_at's expression */
            if (first_tapper(g, j, t.i0)) window[(n * g.c_in + t.i0) * hw + p] = (uint8_t)at0;
            if (t.i1 != t.i0 && first_tapper(g, j, t.i1)) window[(n * g.c_in + t.i1) * hw + p] = (uint8_t)at1;
            const float c = bias ? __fadd_rn(y[e], bias[j]) : y[e];
            const bool conv_wins = c > w; /* strict: a tie counts as pool */
            y[e] = conv_wins || c != c ? c : w;
            conv_or_tie = c >= w;
            tie = c == w;
            wins += conv_wins ? 1.0 : 0.0;
        }
        const unsigned bits = __ballot_sync(0xffffffffu, conv_or_tie), tie_bits = __ballot_sync(0xffffffffu, tie);
        if (lane == 0) {
            winners[e0 >> 5] = bits;
            ties[e0 >> 5] = tie_bits;
        }
    }
    if (COUNT) {
        wins = bf_block_sum(wins);
        if (threadIdx.x == 0) partial[blockIdx.x] = wins;
    }
}

/* One thread per pooled element (n, i, p): over the candidate output channels j in ascending order
 * it writes dconv (the channel's tap i0 writes it) and sums the pool share of the fold-back, as
 * flex.cu's k_fold_back: dpooled. dy and dconv are not __restrict__ (ops.h). */
__global__ void k_pool_max_route_bilinear(const uint32_t *__restrict__ winners, const uint32_t *__restrict__ ties,
                                          const float *dy, float *dconv, float *__restrict__ dpooled,
                                          size_t pooled_total, flex_geo g, float tie_share) {
    const size_t hw = (size_t)g.hw;
    GRID_STRIDE(idx, pooled_total) {
        size_t n, p;
        int i, lo, hi, step;
        split_index(idx, g.c_in, g.hw, &n, &i, &p);
        fold_candidates(g, i, &lo, &hi, &step);
        float acc = 0.0f;
        for (int j = lo; j < hi; j += step) {
            const flex_taps t = taps_of(g, j);
            if (t.i0 != i && t.i1 != i) continue;
            const size_t e = (n * g.c_out + (size_t)j) * hw + p;
            const float gv = dy[e];
            const float dc = routed(gv, winners[e >> 5], ties[e >> 5], (unsigned)(e & 31u), tie_share);
            if (t.i0 == i) dconv[e] = dc;
            const float gp = __fsub_rn(gv, dc);
            if (t.i0 == i) acc = __fadd_rn(acc, __fmul_rn(t.w0, gp));
            if (t.i1 == i) acc = __fadd_rn(acc, __fmul_rn(t.w1, gp));
        }
        if (dpooled) dpooled[idx] = acc;
    }
}

/* ---- both rules: the pool branch's gradient into dx, and the mask joint's pool branch ---- */

/* One thread per input element of a plane: the windows that contain it, in ascending output
 * order, add their dpooled where their byte chose it (a gather, so no atomics), and the sum is
 * added to dx. Zeros are skipped before their byte is read. */
template <int K, int S>
__global__ void k_pool_scatter_add(const uint8_t *__restrict__ window, const float *__restrict__ dpooled,
                                   float *__restrict__ dx, pool_geo pg, int hw) {
    const int in_plane = pg.h_in * pg.w_in, k = window_k<K>(pg), stride = window_stride<S>(pg);
    const float *dp = dpooled + (size_t)blockIdx.x * hw;
    const uint8_t *wq = window + (size_t)blockIdx.x * hw;
    float *dxq = dx + (size_t)blockIdx.x * in_plane;
    PLANE_POSITIONS(at, in_plane) {
        const int h = at / pg.w_in, w = at - h * pg.w_in;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        covering_outputs(h, stride, pg.pad, k, pg.h_out, &oh_lo, &oh_hi);
        covering_outputs(w, stride, pg.pad, k, pg.w_out, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (int oh = oh_lo; oh < oh_hi; oh++)
            for (int ow = ow_lo; ow < ow_hi; ow++) {
                const int o = oh * pg.w_out + ow;
                const float v = dp[o];
                if (v != 0.0f && window_offset<K, S>(pg, oh, ow, wq[o]) == at) acc = __fadd_rn(acc, v);
            }
        dxq[at] = __fadd_rn(dxq[at], acc);
    }
}

/* The route and the scatter in one pass (EXPAND): one thread per input element of pooled plane
 * (n, i), as k_pool_scatter_add; for each window that contains it, in ascending output order,
 * whose byte chose it, the window's share is taken from dy and the bits of the channels tapping i
 * (ascending, as k_route_expand), whose dconv it writes, and added to the sum, which overwrites dx.
 * A window's byte chooses exactly one input, so every element of dy is read, and its dconv written,
 * by one thread once: dy and dconv may be one buffer (not __restrict__). A plane no channel taps
 * (tiling that narrows) has no share: its dx is 0. With BN, dy is the batch-norm's output gradient
 * dz and each element's dy is that batch-norm's dx, from dz and y (bn_grad_at). With DBIAS (at
 * most 2 channels tap a pooled one) each thread also sums, in double, the dconv it writes per
 * tapping channel, and the block's sums go to dbias_partial[j * chunks + chunk] (chunk = n *
 * gridDim.y + blockIdx.y, chunks = n_batch * gridDim.y): each output channel has one pooled source
 * (EXPAND), so each partial is written by one block; k_fold_sums adds them up. */
template <int K, int S, bool BN, bool DBIAS>
__global__ void k_route_scatter(const uint8_t *__restrict__ window, const uint32_t *__restrict__ winners,
                                const uint32_t *__restrict__ ties, const float *dy, float *dconv,
                                float *__restrict__ dx, pool_geo pg, flex_geo g, float tie_share,
                                const float *__restrict__ y, bn_grad_dev bn, double *__restrict__ dbias_partial) {
    const int plane = (int)blockIdx.x, n = plane / g.c_in, i = plane - n * g.c_in;
    const int in_plane = pg.h_in * pg.w_in, k = window_k<K>(pg), stride = window_stride<S>(pg);
    int lo, hi, step;
    fold_candidates(g, i, &lo, &hi, &step);
    const uint8_t *wq = window + (size_t)plane * g.hw;
    float *dxq = dx + (size_t)plane * in_plane;
    double db0 = 0.0, db1 = 0.0; /* DBIAS: this thread's dconv of channels lo and lo + step */
    PLANE_POSITIONS(at, in_plane) {
        float acc = 0.0f;
        if (lo < hi) {
            const int h = at / pg.w_in, w = at - h * pg.w_in;
            int oh_lo, oh_hi, ow_lo, ow_hi;
            covering_outputs(h, stride, pg.pad, k, pg.h_out, &oh_lo, &oh_hi);
            covering_outputs(w, stride, pg.pad, k, pg.w_out, &ow_lo, &ow_hi);
            for (int oh = oh_lo; oh < oh_hi; oh++)
                for (int ow = ow_lo; ow < ow_hi; ow++) {
                    const int o = oh * pg.w_out + ow;
                    if (window_offset<K, S>(pg, oh, ow, wq[o]) != at) continue;
                    float share = 0.0f;
                    for (int j = lo; j < hi; j += step) {
                        const size_t e = ((size_t)n * g.c_out + (size_t)j) * (size_t)g.hw + (size_t)o;
                        float gv = dy[e];
                        if (BN) gv = bn_grad_at(bn, j, y[e], gv);
                        const float dc = routed(gv, winners[e >> 5], ties[e >> 5], (unsigned)(e & 31u), tie_share);
                        share = __fadd_rn(share, __fsub_rn(gv, dc));
                        dconv[e] = dc;
                        if (DBIAS) {
                            if (j == lo) db0 += (double)dc;
                            else db1 += (double)dc;
                        }
                    }
                    acc = __fadd_rn(acc, share);
                }
        }
        dxq[at] = acc;
    }
    if (DBIAS) { /* every thread of the block is here: the block sums */
        db0 = bf_block_sum(db0);
        db1 = bf_block_sum(db1);
        if (threadIdx.x == 0 && lo < hi) {
            const size_t chunks = (size_t)(gridDim.x / g.c_in) * gridDim.y, chunk = (size_t)n * gridDim.y + blockIdx.y;
            dbias_partial[(size_t)lo * chunks + chunk] = db0;
            if (lo + step < hi) dbias_partial[(size_t)(lo + step) * chunks + chunk] = db1;
        }
    }
}

/* k_pool_forward: one thread per pooled element, the window maximum and its byte (every channel). */
template <int K, int S>
__global__ void k_pool_forward(const float *__restrict__ x, float *__restrict__ pooled,
                               uint8_t *__restrict__ window, pool_geo pg, int hw) {
    const float *xq = x + (size_t)blockIdx.x * pg.h_in * pg.w_in;
    PLANE_POSITIONS(p, hw) {
        const size_t q = (size_t)blockIdx.x * hw + p;
        const int oh = p / pg.w_out, ow = p - oh * pg.w_out;
        int at;
        pooled[q] = window_max<K, S>(pg, xq, oh, ow, &at);
        window[q] = (uint8_t)at;
    }
}

/* k_pool_gather: one thread per pooled element, the input element its byte names. */
template <int K, int S>
__global__ void k_pool_gather(const float *__restrict__ x, const uint8_t *__restrict__ window,
                              float *__restrict__ pooled, pool_geo pg, int hw) {
    const float *xq = x + (size_t)blockIdx.x * pg.h_in * pg.w_in;
    PLANE_POSITIONS(p, hw) {
        const size_t q = (size_t)blockIdx.x * hw + p;
        const int oh = p / pg.w_out, ow = p - oh * pg.w_out;
        pooled[q] = xq[window_offset<K, S>(pg, oh, ow, window[q])];
    }
}

#define COUNTING , true
#define NOT_COUNTING , false
#define WITHOUT_STATS , false

/* ---- flex_pool_max_forward_bn_stats (EXPAND, [run] flex_kernels = fused) ----
 * k_pool_max_forward_expand<STATS> over a grid of its own: the tiles of a plane are capped so that
 * there are about STATS_BLOCKS blocks (a block then walks several tiles), keeping the partials per
 * channel (n * tiles, which k_fold_chunks adds) few. The grid depends on the shape alone, so the
 * statistics repeat on every device. */
enum { STATS_BLOCKS = 4096, STATS_SMEM_MAX = 47 * 1024 }; /* 48 KiB without an opt-in, less the static
                                                              * shared memory (bf_block_sum's 256 bytes) */

static plane_launch capped_launch_of(size_t planes, size_t plane_size) {
    plane_launch l = plane_launch_of(planes, plane_size);
    const size_t want = (STATS_BLOCKS + planes - 1) / planes;
    if (l.grid.y > want) l.grid.y = (unsigned)want;
    return l;
}
static plane_launch stats_launch_of(const bf_flex_shape *s) {
    return capped_launch_of((size_t)s->n * s->c_in, (size_t)s->hw);
}

/* The chunks of each channel's partials added by one warp (lane l: chunks l, l + 32, ... in order,
 * then bf_warp_sum's tree) into folded[ch * 2 + {0, 1}], k_bn_stats_final's layout with one chunk:
 * at batch 128 VGG-16's first layer has 1,408 chunks per channel, too many for one thread. */
__global__ void k_fold_chunks(const double *__restrict__ partial, unsigned chunks, int c, double *__restrict__ folded) {
    const int ch = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = (int)(threadIdx.x & 31u);
    if (ch >= c) return; /* whole warps: blockDim.x is a multiple of 32 */
    const double *p = partial + (size_t)ch * chunks * 2;
    double a0 = 0.0, a1 = 0.0;
    for (unsigned k = (unsigned)lane; k < chunks; k += 32) {
        a0 += p[2 * (size_t)k];
        a1 += p[2 * (size_t)k + 1];
    }
    a0 = bf_warp_sum(a0);
    a1 = bf_warp_sum(a1);
    if (lane == 0) {
        folded[2 * (size_t)ch] = a0;
        folded[2 * (size_t)ch + 1] = a1;
    }
}

static int taps_max_of(const bf_flex_shape *s) { return (s->c_out + s->c_in - 1) / s->c_in; }

/* The shared memory k_pool_max_forward_expand<STATS> needs: taps_max (sum, square) pairs per warp. */
static size_t stats_smem_bytes(const bf_flex_shape *s, unsigned threads) {
    return (size_t)(threads / 32) * (size_t)taps_max_of(s) * 2 * sizeof(double);
}

/* The fused forward with the sums; partial: c_out * n * grid.y pairs (stats_launch_of), and total
 * (used when conv_wins is given): the count of conv wins, both in the scratch. */
static bf_status forward_expand_stats(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s,
                                      const float *x, const float *bias, float *y, uint8_t *window,
                                      uint32_t *winners, uint32_t *ties, float *conv_wins, const plane_launch &l,
                                      double *partial,
                                      unsigned long long *total) {
    const size_t words = bf_cuda_div_up(out_elements(s), 32);
    BF_CUDA_CHECK(cudaMemsetAsync(winners, 0, words * sizeof(uint32_t), im->stream));
    BF_CUDA_CHECK(cudaMemsetAsync(ties, 0, words * sizeof(uint32_t), im->stream));
    const stats_out so = {partial, taps_max_of(s)};
    const size_t smem = stats_smem_bytes(s, l.threads);
    if (conv_wins) BF_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(unsigned long long), im->stream));
#define STATS_LAUNCH(K_, S_, COUNT_)                                                                                   \
    k_pool_max_forward_expand<K_, S_, COUNT_, true><<<l.grid, l.threads, smem, im->stream>>>(                          \
        x, bias, y, window, winners, ties, geo_of(s), pool_geo_of(ps), total, so)
    const bool count = conv_wins != NULL;
    if (ps->k == 3 && ps->stride == 1) {
        if (count) STATS_LAUNCH(3, 1, true); else STATS_LAUNCH(3, 1, false);
    } else if (ps->k == 2 && ps->stride == 2) {
        if (count) STATS_LAUNCH(2, 2, true); else STATS_LAUNCH(2, 2, false);
    } else {
        if (count) STATS_LAUNCH(0, 0, true); else STATS_LAUNCH(0, 0, false);
    }
#undef STATS_LAUNCH
    BF_LAUNCH_CHECK("k_pool_max_forward_expand<stats>");
    if (conv_wins) {
        k_add_count<<<1, 1, 0, im->stream>>>(total, conv_wins);
        BF_LAUNCH_CHECK("k_add_count");
    }
    return BF_OK;
}

static bf_status forward_expand(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                float *conv_wins) {
    const size_t words = bf_cuda_div_up(out_elements(s), 32);
    BF_CUDA_CHECK(cudaMemsetAsync(winners, 0, words * sizeof(uint32_t), im->stream)); /* the kernel ORs bits in */
    BF_CUDA_CHECK(cudaMemsetAsync(ties, 0, words * sizeof(uint32_t), im->stream));
    const plane_launch l = plane_launch_of((size_t)s->n * s->c_in, (size_t)s->hw);
    if (!conv_wins) {
        LAUNCH_WINDOW(ps, k_pool_max_forward_expand, NOT_COUNTING WITHOUT_STATS, l, x, bias, y, window, winners, ties,
                      geo_of(s), pool_geo_of(ps), (unsigned long long *)NULL, stats_out{});
        return BF_OK;
    }
    void *total;
    BF_TRY(bf_cuda_scratch(im, sizeof(unsigned long long), &total));
    BF_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(unsigned long long), im->stream));
    LAUNCH_WINDOW(ps, k_pool_max_forward_expand, COUNTING WITHOUT_STATS, l, x, bias, y, window, winners, ties,
                  geo_of(s), pool_geo_of(ps), (unsigned long long *)total, stats_out{});
    k_add_count<<<1, 1, 0, im->stream>>>((const unsigned long long *)total, conv_wins);
    BF_LAUNCH_CHECK("k_add_count");
    return BF_OK;
}

static bf_status forward_bilinear(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                  const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                  float *conv_wins) {
    const size_t total = out_elements(s);
    if (!conv_wins) {
        LAUNCH_ELEMENTWISE(k_pool_max_forward_bilinear<false>, total, x, bias, y, window, winners, ties, total,
                           geo_of(s), pool_geo_of(ps), (double *)NULL);
        return BF_OK;
    }
    const unsigned blocks = reduce_blocks(total);
    void *partial;
    BF_TRY(bf_cuda_scratch(im, blocks * sizeof(double), &partial));
    k_pool_max_forward_bilinear<true><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(
        x, bias, y, window, winners, ties, total, geo_of(s), pool_geo_of(ps), (double *)partial);
    BF_LAUNCH_CHECK("k_pool_max_forward_bilinear<count>");
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial, (int)blocks, conv_wins);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    return BF_OK;
}

}  // namespace

extern "C" bf_status bf_cuda_set_flex_kernels(bf_backend *b, int slide) {
    if (!b || b->kind != BF_DEVICE_CUDA) return BF_OK; /* the CPU backend has one set of kernels */
    ((bf_cuda_impl *)b->impl)->flex_slide = slide != 0;
    return BF_OK;
}

extern "C" long bf_cuda_flex_slide_launches(const bf_backend *b) {
    return b && b->kind == BF_DEVICE_CUDA ? ((const bf_cuda_impl *)b->impl)->flex_slide_launches : 0;
}

extern "C" int bf_cuda_flex_kernels_slide(const bf_backend *b) {
    return b && b->kind == BF_DEVICE_CUDA && ((const bf_cuda_impl *)b->impl)->flex_slide;
}

extern "C" bf_status bf_cuda_flex_pool_max_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                   const float *x, const float *bias, float *y, uint8_t *window,
                                                   uint32_t *winners, uint32_t *ties, float *conv_wins) {
    FLEX_ENTER("flex_pool_max_forward", x, y, window, winners, ties);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_forward"));
    if (s->channels == BF_FLEX_CHANNELS_BILINEAR)
        return forward_bilinear(im, ps, s, x, bias, y, window, winners, ties, conv_wins);
    if (im->flex_slide && slide_takes(im, ps, s) && slide_forward_aligned(ps, x, y, window))
        return slide_max_forward(im, ps, s, x, bias, y, window, winners, ties, conv_wins);
    return forward_expand(im, ps, s, x, bias, y, window, winners, ties, conv_wins);
}

/* The scratch of flex_pool_max_forward_bn_stats: the partials (c_out * chunks pairs), the folded
 * sums (c_out pairs) and the conv wins' count. */
struct stats_scratch {
    double *partial, *folded;
    unsigned long long *total;
};

static bf_status stats_scratch_of(bf_cuda_impl *im, const bf_flex_shape *s, size_t chunks, stats_scratch *sc) {
    const size_t partial_doubles = (size_t)s->c_out * chunks * 2, folded_doubles = (size_t)s->c_out * 2;
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, (partial_doubles + folded_doubles) * sizeof(double) + sizeof(unsigned long long),
                           &scratch));
    sc->partial = (double *)scratch;
    sc->folded = sc->partial + partial_doubles;
    sc->total = (unsigned long long *)(sc->folded + folded_doubles);
    return BF_OK;
}

/* The partials folded per channel (k_fold_chunks), then the statistics (k_bn_stats_final). */
static bf_status stats_finish(bf_cuda_impl *im, const bf_flex_shape *s, const bf_bn_shape *bs, const stats_scratch *sc,
                              size_t chunks, float *save_mean, float *save_invstd, float *running_mean,
                              float *running_var) {
    const double count = (double)s->n * s->hw, copies = count * bf_bn_copies(bs);
    k_fold_chunks<<<(unsigned)bf_cuda_div_up((size_t)s->c_out * 32, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        sc->partial, (unsigned)chunks, s->c_out, sc->folded);
    BF_LAUNCH_CHECK("k_fold_chunks");
    k_bn_stats_final<<<(unsigned)bf_cuda_div_up((size_t)s->c_out, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        sc->folded, 1, s->c_out, count, copies / (copies - 1.0), bs->eps, bs->momentum, bs->var_floor, NULL, NULL, NULL, save_mean,
        save_invstd, running_mean, running_var);
    BF_LAUNCH_CHECK("k_bn_stats_final");
    return BF_OK;
}

/* [run] flex_kernels = slide: the sliding-window forward with the sums (k_slide_max_forward<STATS>,
 * flex_slide.cuh), then the finish. */
static bf_status forward_stats_slide(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s,
                                     const bf_bn_shape *bs, const slide_fwd_geo &g, size_t blocks, const float *x,
                                     const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                     float *conv_wins, float *save_mean, float *save_invstd, float *running_mean,
                                     float *running_var) {
    const size_t chunks = slide_stats_chunks(g);
    stats_scratch sc;
    BF_TRY(stats_scratch_of(im, s, chunks, &sc));
    if (conv_wins) BF_CUDA_CHECK(cudaMemsetAsync(sc.total, 0, sizeof(unsigned long long), im->stream));
    BF_TRY(slide_forward_run(im, ps, s, g, blocks, x, bias, y, window, winners, ties, conv_wins ? sc.total : NULL,
                             sc.partial));
    if (conv_wins) {
        k_add_count<<<1, 1, 0, im->stream>>>(sc.total, conv_wins);
        BF_LAUNCH_CHECK("k_add_count");
    }
    return stats_finish(im, s, bs, &sc, chunks, save_mean, save_invstd, running_mean, running_var);
}

/* The fused kernel with the sums where it takes the call (EXPAND, the fused kernel set, the sums'
 * shared memory within STATS_SMEM_MAX), k_fold_chunks, then k_bn_stats_final; elsewhere the
 * forward, then batchnorm_forward_train's own pass over y (through the op). */
extern "C" bf_status bf_cuda_flex_pool_max_forward_bn_stats(bf_backend *b, const bf_pool_shape *ps,
                                                            const bf_flex_shape *s, const bf_bn_shape *bs,
                                                            const float *x, const float *bias, float *y,
                                                            uint8_t *window,
                                                            uint32_t *winners, uint32_t *ties, float *conv_wins,
                                                            float *save_mean, float *save_invstd, float *running_mean,
                                                            float *running_var) {
    FLEX_ENTER("flex_pool_max_forward_bn_stats", x, y, window, winners, ties, save_mean, save_invstd);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_forward_bn_stats"));
    BF_TRY(bf_flex_bn_shape_check(s, bs, "flex_pool_max_forward_bn_stats"));
    const double count = (double)s->n * s->hw, copies = count * bf_bn_copies(bs);
    if (copies < 2) /* batchnorm_forward_train's refusal, before anything is written */
        return bf_error(BF_ERR_ARG, "batchnorm: training needs more than one value per channel (n=%d hw=%d)", s->n,
                        s->hw);
    if (im->flex_slide && slide_takes(im, ps, s) && slide_forward_aligned(ps, x, y, window)) {
        size_t blocks;
        const slide_fwd_geo g = slide_forward_geo(SLIDE_STATS_SM_COUNT, ps, s, &blocks); /* device-independent */
        if (slide_stats_smem(g) <= STATS_SMEM_MAX) /* the sliding-window forward with the sums */
            return forward_stats_slide(im, ps, s, bs, g, blocks, x, bias, y, window, winners, ties, conv_wins,
                                       save_mean, save_invstd, running_mean, running_var);
        BF_TRY(slide_max_forward(im, ps, s, x, bias, y, window, winners, ties, conv_wins));
        return bf_cuda_batchnorm_forward_train(b, bs, y, NULL, NULL, NULL, save_mean, save_invstd, running_mean,
                                               running_var);
    }
    const plane_launch l = stats_launch_of(s);
    const bool fused = s->channels == BF_FLEX_CHANNELS_EXPAND && stats_smem_bytes(s, l.threads) <= STATS_SMEM_MAX;
    if (!fused) {
        BF_TRY(bf_cuda_flex_pool_max_forward(b, ps, s, x, bias, y, window, winners, ties, conv_wins));
        return bf_cuda_batchnorm_forward_train(b, bs, y, NULL, NULL, NULL, save_mean, save_invstd, running_mean,
                                               running_var);
    }
    const unsigned chunks = (unsigned)s->n * l.grid.y;
    stats_scratch sc;
    BF_TRY(stats_scratch_of(im, s, chunks, &sc));
    BF_TRY(forward_expand_stats(im, ps, s, x, bias, y, window, winners, ties, conv_wins, l, sc.partial, sc.total));
    return stats_finish(im, s, bs, &sc, chunks, save_mean, save_invstd, running_mean, running_var);
}

/* k_route_expand over the n * c_in pooled planes: float4 when every vector lies in one plane and one
 * bitmap word, and the pointers allow it. dbias (nullable; only without dpooled): summed per block
 * over a capped grid (a few partials per channel), then k_fold_sums. */
template <bool BN, bool DBIAS>
static bf_status route_expand_launch(bf_cuda_impl *im, const bf_flex_shape *s, const bn_grad_dev &bd,
                                     const uint32_t *winners, const uint32_t *ties, const float *y, const float *dy,
                                     float *dconv, float *dpooled, float tie_share, double *partial,
                                     const plane_launch &l, bool vec4) {
    if (vec4)
        k_route_expand<4, BN, DBIAS><<<l.grid, l.threads, 0, im->stream>>>(winners, ties, dy, dconv, dpooled, geo_of(s),
                                                                           tie_share, y, bd, partial);
    else
        k_route_expand<1, BN, DBIAS><<<l.grid, l.threads, 0, im->stream>>>(winners, ties, dy, dconv, dpooled, geo_of(s),
                                                                           tie_share, y, bd, partial);
    BF_LAUNCH_CHECK("k_route_expand");
    return BF_OK;
}
template <bool BN>
static bf_status route_expand_run(bf_cuda_impl *im, const bf_flex_shape *s, const bn_grad_dev &bd,
                                  const uint32_t *winners, const uint32_t *ties, const float *y, const float *dy,
                                  float *dconv, float *dpooled, float tie_share, float *dbias) {
    const size_t planes = (size_t)s->n * s->c_in;
    const bool vec4 =
        s->hw % 4 == 0 && (((uintptr_t)dy | (uintptr_t)dconv | (uintptr_t)dpooled | (uintptr_t)y) & 15u) == 0;
    const size_t positions = (size_t)s->hw / (vec4 ? 4 : 1);
    if (!dbias)
        return route_expand_launch<BN, false>(im, s, bd, winners, ties, y, dy, dconv, dpooled, tie_share, NULL,
                                              plane_launch_of(planes, positions), vec4);
    const plane_launch l = capped_launch_of(planes, positions);
    const unsigned chunks = (unsigned)s->n * l.grid.y;
    void *partial;
    BF_TRY(bf_cuda_scratch(im, (size_t)s->c_out * chunks * sizeof(double), &partial));
    const bf_status launched = route_expand_launch<BN, true>(im, s, bd, winners, ties, y, dy, dconv, NULL, tie_share,
                                                             (double *)partial, l, vec4);
    if (launched != BF_OK) return launched;
    return fold_sums(im, (const double *)partial, chunks, s->c_out, dbias);
}

extern "C" bf_status bf_cuda_flex_pool_max_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                    const uint32_t *winners, const uint32_t *ties, const float *dy,
                                                    float *dconv, float *dpooled) {
    FLEX_ENTER("flex_pool_max_backward", winners, ties, dy, dconv);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_backward"));
    const size_t planes = (size_t)s->n * s->c_in, pooled_total = planes * s->hw;
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    if (s->channels == BF_FLEX_CHANNELS_BILINEAR) {
        LAUNCH_ELEMENTWISE(k_pool_max_route_bilinear, pooled_total, winners, ties, dy, dconv, dpooled, pooled_total,
                           geo_of(s), tie_share);
        return BF_OK;
    }
    return route_expand_run<false>(im, s, bn_grad_dev{}, winners, ties, NULL, dy, dconv, dpooled, tie_share, NULL);
}

extern "C" bf_status bf_cuda_flex_pool_max_backward_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                       const bf_bn_grad *bn, const uint32_t *winners,
                                                       const uint32_t *ties, const float *y, const float *dz,
                                                       float *dconv, float *dbias) {
    FLEX_ENTER("flex_pool_max_backward_bn", winners, ties, y, dz, dconv);
    BF_TRY(bf_flex_route_bn_check(ps, s, bn, "flex_pool_max_backward_bn"));
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    const bn_grad_dev bd = {bn->relu, bn->mean, bn->invstd, bn->gamma, bn->relu ? bn->beta : bn->gamma, bn->coef,
                            s->c_out};
    return route_expand_run<true>(im, s, bd, winners, ties, y, dz, dconv, NULL, tie_share, dbias);
}

extern "C" bf_status bf_cuda_flex_pool_scatter_add(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                   const uint8_t *window, const float *dpooled, float *dx) {
    FLEX_ENTER("flex_pool_scatter_add", window, dpooled, dx);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_scatter_add"));
    if (im->flex_slide && slide_takes(im, ps, s)) return slide_scatter_add(im, ps, s, window, dpooled, dx);
    const plane_launch l = plane_launch_of((size_t)s->n * s->c_in, (size_t)ps->h_in * ps->w_in);
    LAUNCH_WINDOW(ps, k_pool_scatter_add, NO_EXTRA, l, window, dpooled, dx, pool_geo_of(ps), s->hw);
    return BF_OK;
}

/* k_route_scatter (BN: with the batch-norm's dx, bd) and dbias (nullable): summed in the route's
 * pass where a pooled channel feeds at most 2 output channels (a capped grid, so that the partials
 * per channel are few), else by the conv's channel sum over dconv after it. */
#define BN_WITHOUT_DBIAS , BN, false
#define BN_WITH_DBIAS , BN, true
template <bool BN>
static bf_status route_scatter_run(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s,
                                   const bn_grad_dev &bd, const uint8_t *window, const uint32_t *winners,
                                   const uint32_t *ties, const float *y, const float *dy, float *dconv, float *dx,
                                   float tie_share, float *dbias) {
    const size_t planes = (size_t)s->n * s->c_in, in_plane = (size_t)ps->h_in * ps->w_in;
    if (!dbias || taps_max_of(s) > 2) {
        const plane_launch l = plane_launch_of(planes, in_plane);
        LAUNCH_WINDOW(ps, k_route_scatter, BN_WITHOUT_DBIAS, l, window, winners, ties, dy, dconv, dx, pool_geo_of(ps),
                      geo_of(s), tie_share, y, bd, (double *)NULL);
        return dbias ? bf_cuda_channel_sum(im, s->n, s->c_out, s->hw, dconv, dbias) : BF_OK;
    }
    const plane_launch l = capped_launch_of(planes, in_plane);
    const unsigned chunks = (unsigned)s->n * l.grid.y;
    void *partial;
    BF_TRY(bf_cuda_scratch(im, (size_t)s->c_out * chunks * sizeof(double), &partial));
    LAUNCH_WINDOW(ps, k_route_scatter, BN_WITH_DBIAS, l, window, winners, ties, dy, dconv, dx, pool_geo_of(ps),
                  geo_of(s), tie_share, y, bd, (double *)partial);
    return fold_sums(im, (const double *)partial, chunks, s->c_out, dbias);
}
#undef BN_WITHOUT_DBIAS
#undef BN_WITH_DBIAS

extern "C" bf_status bf_cuda_flex_pool_max_backward_scatter(bf_backend *b, const bf_pool_shape *ps,
                                                            const bf_flex_shape *s, const uint8_t *window,
                                                            const uint32_t *winners, const uint32_t *ties,
                                                            const float *dy, float *dconv, float *dx, float *dbias) {
    FLEX_ENTER("flex_pool_max_backward_scatter", window, winners, ties, dy, dconv, dx);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_backward_scatter"));
    if (s->channels != BF_FLEX_CHANNELS_EXPAND)
        return bf_error(BF_ERR_ARG, "flex_pool_max_backward_scatter: EXPAND channels only (BILINEAR mixes two pooled "
                                    "channels per output: flex_pool_max_backward, then flex_pool_scatter_add)");
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    if (im->flex_slide && slide_takes(im, ps, s) && slide_route_apart(s, dy, NULL, dconv)) {
        return slide_route_scatter(im, ps, s, NULL, window, winners, ties, NULL, dy, dconv, dx, tie_share, dbias);
    }
    return route_scatter_run<false>(im, ps, s, bn_grad_dev{}, window, winners, ties, NULL, dy, dconv, dx, tie_share,
                                    dbias);
}

extern "C" bf_status bf_cuda_flex_pool_max_backward_scatter_bn(bf_backend *b, const bf_pool_shape *ps,
                                                               const bf_flex_shape *s, const bf_bn_grad *bn,
                                                               const uint8_t *window, const uint32_t *winners,
                                                               const uint32_t *ties, const float *y, const float *dz,
                                                               float *dconv, float *dx, float *dbias) {
    FLEX_ENTER("flex_pool_max_backward_scatter_bn", window, winners, ties, y, dz, dconv, dx);
    BF_TRY(bf_flex_route_bn_check(ps, s, bn, "flex_pool_max_backward_scatter_bn"));
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    const bn_grad_dev bd = {bn->relu, bn->mean, bn->invstd, bn->gamma, bn->relu ? bn->beta : bn->gamma, bn->coef,
                            s->c_out};
    if (im->flex_slide && slide_takes(im, ps, s) && slide_route_apart(s, dz, y, dconv)) {
        return slide_route_scatter(im, ps, s, &bd, window, winners, ties, y, dz, dconv, dx, tie_share, dbias);
    }
    return route_scatter_run<true>(im, ps, s, bd, window, winners, ties, y, dz, dconv, dx, tie_share, dbias);
}

extern "C" bf_status bf_cuda_flex_pool_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                               const float *x, float *pooled, uint8_t *window) {
    FLEX_ENTER("flex_pool_forward", x, pooled, window);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_forward"));
    const plane_launch l = plane_launch_of((size_t)s->n * s->c_in, (size_t)s->hw);
    LAUNCH_WINDOW(ps, k_pool_forward, NO_EXTRA, l, x, pooled, window, pool_geo_of(ps), s->hw);
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_pool_gather(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                              const float *x, const uint8_t *window, float *pooled) {
    FLEX_ENTER("flex_pool_gather", x, window, pooled);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_gather"));
    const plane_launch l = plane_launch_of((size_t)s->n * s->c_in, (size_t)s->hw);
    LAUNCH_WINDOW(ps, k_pool_gather, NO_EXTRA, l, x, window, pooled, pool_geo_of(ps), s->hw);
    return BF_OK;
}
