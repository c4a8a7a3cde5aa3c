/* flex_pool.cu - the fused channel-wise max flex on the GPU (contract in ops.h at
 * flex_pool_max_forward; the CPU twin is flex_pool_cpu.c, which computes through the op-by-op
 * sequence; every result is bit-identical to it, the same IEEE expressions in another order of
 * loops). tests/test_flex_pool_ops.c emulates these kernels loop for loop on the CPU: a change
 * here belongs there too.
 *
 * What a flex layer keeps between its forward and backward is the conv branch's output, overwritten
 * in place by y, plus one byte per pooled element (where its window's maximum was) and one bit per
 * output element (conv won or tied). P and P~ are never written to memory:
 *   k_pool_max_forward   one thread per output element e, a grid-stride loop over whole warps: the
 *                        thread takes its tap(s)' window maxima straight from x (neighbouring
 *                        threads read neighbouring windows, so x comes from L1/L2), writes y in
 *                        place, and the warp's __ballot_sync of "C >= P~" is its 32-bit word of the
 *                        winners bitmap (e of lane 0 is a multiple of 32), stored by lane 0.
 *   k_pool_max_route     one thread per pooled element (n, i, p): P_i is one load of x at the place
 *                        the window byte names; over the candidate output channels j in ascending
 *                        order it writes dconv (the channel's tap i0 writes it) and sums the pool
 *                        share of the fold-back, as flex.cu's k_fold_back: dpooled.
 *   k_pool_scatter_add   one thread per input element: the windows that contain it, in ascending
 *                        output order, add their dpooled where their byte chose it (a gather, so no
 *                        atomics), and the sum is added to dx.
 *   k_pool_forward,      the mask joint's pool branch: one thread per pooled element writes its
 *   k_pool_gather        window maximum and byte, and reads the maximum back from x at the byte.
 * conv_wins: per-thread double counts, block sums, and the partials added in index order. */
#include <math.h>

#include "flex_common.cuh"
#include "pool_common.cuh"

namespace { /* kernels are private to this file */

/* Window (oh, ow)'s maximum in one input plane: the first in row-major order, a NaN winning,
 * padding never; *place = kh * k + kw. */
__device__ __forceinline__ float window_max(const pool_geo &pg, const float *__restrict__ plane, int oh, int ow,
                                            unsigned *place) {
    const int hs = oh * pg.stride - pg.pad, ws = ow * pg.stride - pg.pad;
    const int h0 = hs < 0 ? 0 : hs, h1 = hs + pg.k < pg.h_in ? hs + pg.k : pg.h_in;
    const int w0 = ws < 0 ? 0 : ws, w1 = ws + pg.k < pg.w_in ? ws + pg.k : pg.w_in;
    float best = plane[(size_t)h0 * pg.w_in + w0];
    int at = (h0 - hs) * pg.k + (w0 - ws);
    for (int ih = h0; ih < h1; ih++)
        for (int iw = w0; iw < w1; iw++) {
            const float v = plane[(size_t)ih * pg.w_in + iw];
            if (v > best || (v != v && best == best)) {
                best = v;
                at = (ih - hs) * pg.k + (iw - ws);
            }
        }
    *place = (unsigned)at;
    return best;
}

/* The offset in its plane of the input element window (oh, ow) chose. */
__device__ __forceinline__ size_t window_offset(const pool_geo &pg, int oh, int ow, unsigned place) {
    const int ih = oh * pg.stride - pg.pad + (int)(place / pg.k), iw = ow * pg.stride - pg.pad + (int)(place % pg.k);
    return (size_t)ih * pg.w_in + iw;
}

/* Whether output channel j is the first that taps pooled channel i, so its thread writes i's window
 * byte: EXPAND by its formula; BILINEAR's taps grow with j, so if j-1 misses i, every j' < j does. */
__device__ __forceinline__ bool first_tapper(const flex_geo &g, int j, int i) {
    if (!g.bilinear) return g.c_out % g.c_in == 0 ? j % (g.c_out / g.c_in) == 0 : j < g.c_in;
    if (j == 0) return true;
    const flex_taps before = taps_of(g, j - 1);
    return before.i0 != i && before.i1 != i;
}

template <bool COUNT>
__global__ void k_pool_max_forward(const float *__restrict__ x, float *__restrict__ y, uint8_t *__restrict__ window,
                                   uint32_t *__restrict__ winners, size_t total, flex_geo g, pool_geo pg,
                                   double *__restrict__ partial) {
    const unsigned lane = threadIdx.x & 31u;
    const size_t in_plane = (size_t)pg.h_in * pg.w_in, hw = (size_t)g.hw;
    double wins = 0.0;
    /* every lane of a warp runs the same iterations, so the ballot always has the whole warp */
    for (size_t e0 = blockIdx.x * (size_t)blockDim.x + (threadIdx.x & ~31u); e0 < total;
         e0 += (size_t)gridDim.x * blockDim.x) {
        const size_t e = e0 + lane;
        bool conv_or_tie = false;
        if (e < total) {
            size_t n, p;
            int j;
            split_index(e, g.c_out, g.hw, &n, &j, &p);
            const int oh = (int)(p / pg.w_out), ow = (int)(p - (size_t)oh * pg.w_out);
            const flex_taps t = taps_of(g, j);
            const float *xn = x + n * g.c_in * in_plane;
            unsigned at0, at1 = 0;
            const float v0 = window_max(pg, xn + (size_t)t.i0 * in_plane, oh, ow, &at0);
            float w = v0;
            if (t.i1 >= 0) {
                const float v1 = window_max(pg, xn + (size_t)t.i1 * in_plane, oh, ow, &at1);
                w = __fadd_rn(__fmul_rn(t.w0, v0), __fmul_rn(t.w1, v1)); /* widen_at's expression */
            }
            if (first_tapper(g, j, t.i0)) window[(n * g.c_in + t.i0) * hw + p] = (uint8_t)at0;
            if (t.i1 >= 0 && t.i1 != t.i0 && first_tapper(g, j, t.i1)) window[(n * g.c_in + t.i1) * hw + p] = (uint8_t)at1;
            const float c = y[e];
            const bool conv_wins = c > w; /* strict: a tie counts as pool */
            y[e] = conv_wins || c != c ? c : w;
            conv_or_tie = c >= w;
            wins += conv_wins ? 1.0 : 0.0;
        }
        const unsigned bits = __ballot_sync(0xffffffffu, conv_or_tie);
        if (lane == 0) winners[e0 >> 5] = bits;
    }
    if (COUNT) {
        wins = bf_block_sum(wins);
        if (threadIdx.x == 0) partial[blockIdx.x] = wins;
    }
}

/* dy and dconv are not __restrict__: under EXPAND they may be one buffer (ops.h). */
__global__ void k_pool_max_route(const float *__restrict__ x, const float *__restrict__ y,
                                 const uint8_t *__restrict__ window, const uint32_t *__restrict__ winners,
                                 const float *dy, float *dconv, float *__restrict__ dpooled,
                                 size_t pooled_total, flex_geo g, pool_geo pg, float tie_share) {
    const size_t in_plane = (size_t)pg.h_in * pg.w_in, hw = (size_t)g.hw;
    GRID_STRIDE(idx, pooled_total) {
        size_t n, p;
        int i, lo, hi, step;
        split_index(idx, g.c_in, g.hw, &n, &i, &p);
        const int oh = (int)(p / pg.w_out), ow = (int)(p - (size_t)oh * pg.w_out);
        const float *xn = x + n * g.c_in * in_plane;
        const uint8_t *wn = window + n * g.c_in * hw;
        fold_candidates(g, i, &lo, &hi, &step);
        float acc = 0.0f;
        for (int j = lo; j < hi; j += step) {
            const flex_taps t = taps_of(g, j);
            if (t.i0 != i && t.i1 != i) continue;
            const float v0 = xn[(size_t)t.i0 * in_plane + window_offset(pg, oh, ow, wn[(size_t)t.i0 * hw + p])];
            float w = v0;
            if (t.i1 >= 0) {
                const float v1 = xn[(size_t)t.i1 * in_plane + window_offset(pg, oh, ow, wn[(size_t)t.i1 * hw + p])];
                w = __fadd_rn(__fmul_rn(t.w0, v0), __fmul_rn(t.w1, v1));
            }
            const size_t e = (n * g.c_out + (size_t)j) * hw + p;
            const float gv = dy[e];
            const float dc = (winners[e >> 5] >> (e & 31)) & 1u ? (y[e] == w ? __fmul_rn(gv, tie_share) : gv) : 0.0f;
            if (t.i0 == i) dconv[e] = dc;
            const float gp = __fsub_rn(gv, dc);
            if (t.i0 == i) acc = __fadd_rn(acc, t.i1 < 0 ? gp : __fmul_rn(t.w0, gp));
            if (t.i1 == i) acc = __fadd_rn(acc, __fmul_rn(t.w1, gp));
        }
        if (dpooled) dpooled[idx] = acc;
    }
}

__global__ void k_pool_scatter_add(const uint8_t *__restrict__ window, const float *__restrict__ dpooled,
                                   float *__restrict__ dx, size_t input_total, pool_geo pg, int hw) {
    const size_t in_plane = (size_t)pg.h_in * pg.w_in;
    GRID_STRIDE(idx, input_total) {
        const size_t plane = idx / in_plane, at = idx - plane * in_plane;
        const int h = (int)(at / pg.w_in), w = (int)(at - (size_t)h * pg.w_in);
        const float *dp = dpooled + plane * hw;
        const uint8_t *wq = window + plane * hw;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        covering_outputs(h, pg.stride, pg.pad, pg.k, pg.h_out, &oh_lo, &oh_hi);
        covering_outputs(w, pg.stride, pg.pad, pg.k, pg.w_out, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (int oh = oh_lo; oh < oh_hi; oh++)
            for (int ow = ow_lo; ow < ow_hi; ow++) {
                const size_t o = (size_t)oh * pg.w_out + ow;
                const float v = dp[o];
                if (v != 0.0f && window_offset(pg, oh, ow, wq[o]) == at) acc = __fadd_rn(acc, v);
            }
        dx[idx] = __fadd_rn(dx[idx], acc);
    }
}

/* k_pool_forward: one thread per pooled element, the window maximum and its byte (every channel). */
__global__ void k_pool_forward(const float *__restrict__ x, float *__restrict__ pooled, uint8_t *__restrict__ window,
                               size_t pooled_total, pool_geo pg, int hw) {
    const size_t in_plane = (size_t)pg.h_in * pg.w_in;
    GRID_STRIDE(idx, pooled_total) {
        const size_t plane = idx / (size_t)hw, p = idx - plane * (size_t)hw;
        const int oh = (int)(p / pg.w_out), ow = (int)(p - (size_t)oh * pg.w_out);
        unsigned at;
        pooled[idx] = window_max(pg, x + plane * in_plane, oh, ow, &at);
        window[idx] = (uint8_t)at;
    }
}

/* k_pool_gather: one thread per pooled element, the input element its byte names. */
__global__ void k_pool_gather(const float *__restrict__ x, const uint8_t *__restrict__ window,
                              float *__restrict__ pooled, size_t pooled_total, pool_geo pg, int hw) {
    const size_t in_plane = (size_t)pg.h_in * pg.w_in;
    GRID_STRIDE(idx, pooled_total) {
        const size_t plane = idx / (size_t)hw, p = idx - plane * (size_t)hw;
        const int oh = (int)(p / pg.w_out), ow = (int)(p - (size_t)oh * pg.w_out);
        pooled[idx] = x[plane * in_plane + window_offset(pg, oh, ow, window[idx])];
    }
}

}  // namespace

extern "C" bf_status bf_cuda_flex_pool_max_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                   const float *x, float *y, uint8_t *window, uint32_t *winners,
                                                   float *conv_wins) {
    FLEX_ENTER("flex_pool_max_forward", x, y, window, winners);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_forward"));
    const size_t total = out_elements(s);
    if (!conv_wins) {
        LAUNCH_ELEMENTWISE(k_pool_max_forward<false>, total, x, y, window, winners, total, geo_of(s), pool_geo_of(ps),
                           (double *)NULL);
        return BF_OK;
    }
    const unsigned blocks = reduce_blocks(total);
    void *partial;
    BF_TRY(bf_cuda_scratch(im, blocks * sizeof(double), &partial));
    k_pool_max_forward<true><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(x, y, window, winners, total, geo_of(s),
                                                                         pool_geo_of(ps), (double *)partial);
    BF_LAUNCH_CHECK("k_pool_max_forward<count>");
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial, (int)blocks, conv_wins);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_pool_max_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                    const float *x, const float *y, const uint8_t *window,
                                                    const uint32_t *winners, const float *dy, float *dconv,
                                                    float *dpooled) {
    FLEX_ENTER("flex_pool_max_backward", x, y, window, winners, dy, dconv);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_backward"));
    const size_t pooled_total = (size_t)s->n * s->c_in * s->hw;
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    LAUNCH_ELEMENTWISE(k_pool_max_route, pooled_total, x, y, window, winners, dy, dconv, dpooled, pooled_total,
                       geo_of(s), pool_geo_of(ps), tie_share);
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_pool_scatter_add(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                   const uint8_t *window, const float *dpooled, float *dx) {
    FLEX_ENTER("flex_pool_scatter_add", window, dpooled, dx);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_scatter_add"));
    const size_t input_total = (size_t)s->n * s->c_in * ps->h_in * ps->w_in;
    LAUNCH_ELEMENTWISE(k_pool_scatter_add, input_total, window, dpooled, dx, input_total, pool_geo_of(ps), s->hw);
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_pool_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                               const float *x, float *pooled, uint8_t *window) {
    FLEX_ENTER("flex_pool_forward", x, pooled, window);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_forward"));
    const size_t pooled_total = (size_t)s->n * s->c_in * s->hw;
    LAUNCH_ELEMENTWISE(k_pool_forward, pooled_total, x, pooled, window, pooled_total, pool_geo_of(ps), s->hw);
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_pool_gather(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                              const float *x, const uint8_t *window, float *pooled) {
    FLEX_ENTER("flex_pool_gather", x, window, pooled);
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_gather"));
    const size_t pooled_total = (size_t)s->n * s->c_in * s->hw;
    LAUNCH_ELEMENTWISE(k_pool_gather, pooled_total, x, window, pooled, pooled_total, pool_geo_of(ps), s->hw);
    return BF_OK;
}
