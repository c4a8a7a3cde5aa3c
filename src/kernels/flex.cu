/* flex.cu - flexible-neuron ops on the GPU (contracts in ops.h at bf_flex_shape and the flex_* members
 * of bf_ops; the CPU twins are in flex_cpu.c).
 *
 * Every kernel is one thread per output element (the widening, max, fold-back and logits kernels
 * as plane kernels, pool_common.cuh; the mask kernels in a flat grid-stride loop), computing with
 * the same IEEE expressions as the CPU (explicit __f*_rn intrinsics, so nvcc cannot contract them):
 * widening, the max joint, the fold-back and the threshold gradient are bit-identical to the CPU.
 * No float atomics anywhere:
 *   - the fold-back (widen backward and the pool share of max backward) is a gather: each pooled
 *     element sums, in ascending output channel j and tap order, the gradients of the channels
 *     whose taps name it;
 *   - the threshold gradient sums over n in ascending order per element;
 *   - conv_wins: per-thread counts, block sums, then one 64-bit integer that every block adds to
 *     atomically (whole numbers: exact in any order; flex_common.cuh's add_block_count);
 *   - conv_mask_sum: per-thread double sums over a block count that depends on the element count
 *     only, a fixed block tree, then one block adds the partials in index order. */
#include <math.h>

#include "flex_common.cuh"
#include "pool_common.cuh"

namespace { /* kernels are private to this file */

/* The kernels over [n, c, hw] planes run as pool_common.cuh's plane kernels: blockIdx.x is the
 * plane, so a block's channel and taps are found once and no thread divides a 64-bit index. */

/* grid: the n * c_out output planes. */
__global__ void k_widen_forward(const float *__restrict__ pooled, float *__restrict__ widened, flex_geo g) {
    const int plane = (int)blockIdx.x, n = plane / g.c_out, j = plane - n * g.c_out;
    const flex_taps t = taps_of(g, j);
    const float *pn = pooled + (size_t)n * g.c_in * g.hw;
    PLANE_POSITIONS(p, g.hw) widened[(size_t)plane * g.hw + p] = widen_at(t, pn, (size_t)g.hw, (size_t)p);
}

/* dpooled = fold-back of dy - dconv (max joint) or of dy (dconv NULL: widening); see flex_cpu.c.
 * grid: the n * c_in pooled planes. */
__global__ void k_fold_back(const float *__restrict__ dy, const float *__restrict__ dconv, float *__restrict__ dpooled,
                            flex_geo g) {
    const int plane = (int)blockIdx.x, n = plane / g.c_in, i = plane - n * g.c_in;
    int lo, hi, step;
    fold_candidates(g, i, &lo, &hi, &step);
    PLANE_POSITIONS(p, g.hw) {
        const size_t base = (size_t)n * g.c_out * g.hw + p;
        float acc = 0.0f;
        for (int j = lo; j < hi; j += step) {
            const flex_taps t = taps_of(g, j);
            if (t.i0 != i && t.i1 != i) continue;
            const size_t o = base + (size_t)j * g.hw;
            const float gv = dconv ? __fsub_rn(dy[o], dconv[o]) : dy[o];
            if (t.i0 == i) acc = __fadd_rn(acc, t.i1 < 0 ? gv : __fmul_rn(t.w0, gv));
            if (t.i1 == i) acc = __fadd_rn(acc, __fmul_rn(t.w1, gv));
        }
        dpooled[(size_t)plane * g.hw + p] = acc;
    }
}

/* y = max(conv, widened); with COUNT, *wins_total += the number of strict conv wins
 * (add_block_count). grid: the n * c_out output planes. */
template <bool COUNT>
__global__ void k_max_forward(const float *__restrict__ conv, const float *__restrict__ pooled, float *__restrict__ y,
                              flex_geo g, unsigned long long *__restrict__ wins_total) {
    const int plane = (int)blockIdx.x, n = plane / g.c_out, j = plane - n * g.c_out;
    const flex_taps t = taps_of(g, j);
    const float *pn = pooled + (size_t)n * g.c_in * g.hw;
    double wins = 0.0;
    PLANE_POSITIONS(p, g.hw) {
        const size_t idx = (size_t)plane * g.hw + p;
        const float c = conv[idx], w = widen_at(t, pn, (size_t)g.hw, (size_t)p);
        const bool conv_wins = c > w; /* strict: a tie counts as pool */
        y[idx] = conv_wins || c != c ? c : w; /* a NaN on either side propagates */
        wins += conv_wins ? 1.0 : 0.0;
    }
    if (COUNT) add_block_count(wins, wins_total);
}

/* grid: the n * c_out output planes. */
__global__ void k_max_backward_conv(const float *__restrict__ conv, const float *__restrict__ pooled,
                                    const float *__restrict__ dy, float *__restrict__ dconv, flex_geo g,
                                    float tie_share) {
    const int plane = (int)blockIdx.x, n = plane / g.c_out, j = plane - n * g.c_out;
    const flex_taps t = taps_of(g, j);
    const float *pn = pooled + (size_t)n * g.c_in * g.hw;
    PLANE_POSITIONS(p, g.hw) {
        const size_t idx = (size_t)plane * g.hw + p;
        const float c = conv[idx], w = widen_at(t, pn, (size_t)g.hw, (size_t)p);
        const float gv = dy[idx];
        dconv[idx] = c > w ? gv : c == w ? __fmul_rn(gv, tie_share) : 0.0f;
    }
}

/* grid: the n * c_out output planes; the threshold is [c_out, hw], the same for every sample. */
__global__ void k_logits(const float *__restrict__ widened, const float *__restrict__ threshold,
                         float *__restrict__ logits, flex_geo g) {
    const int plane = (int)blockIdx.x, j = plane % g.c_out;
    const float *tj = threshold + (size_t)j * g.hw;
    PLANE_POSITIONS(p, g.hw) {
        const size_t idx = (size_t)plane * g.hw + p;
        logits[idx] = __fsub_rn(widened[idx], tj[p]);
    }
}

/* mask and y = widened*(1-M) + conv*M; with SUM, block b writes partial[b] = its sum of M. */
template <bool SUM>
__global__ void k_mask_forward(bf_flex_mask kind, float factor, bf_draws draws, const float *__restrict__ logits,
                               const float *__restrict__ conv, const float *__restrict__ widened,
                               float *__restrict__ mask, float *__restrict__ y, size_t total,
                               double *__restrict__ partial) {
    double sum = 0.0;
    GRID_STRIDE(idx, total) {
        const float m = mask_of(kind, factor, draws, idx, logits[idx]);
        mask[idx] = m;
        y[idx] = __fadd_rn(__fmul_rn(widened[idx], __fsub_rn(1.0f, m)), __fmul_rn(conv[idx], m));
        sum += (double)m;
    }
    if (SUM) {
        sum = bf_block_sum(sum);
        if (threadIdx.x == 0) partial[blockIdx.x] = sum;
    }
}

__global__ void k_mask_backward(bf_flex_mask kind, float factor, const float *__restrict__ logits,
                                const float *__restrict__ mask, const float *__restrict__ conv,
                                const float *__restrict__ widened, const float *__restrict__ dy,
                                float *__restrict__ dconv, float *__restrict__ dlogits, float *__restrict__ dwidened,
                                size_t total) {
    GRID_STRIDE(idx, total) {
        const float m = mask[idx], gv = dy[idx];
        dconv[idx] = __fmul_rn(gv, m);
        dwidened[idx] = __fmul_rn(gv, __fsub_rn(1.0f, m));
        dlogits[idx] = __fmul_rn(__fmul_rn(gv, __fsub_rn(conv[idx], widened[idx])),
                                 mask_grad(kind, factor, logits[idx], m));
    }
}

/* dthreshold[k] = -sum over n (ascending, in double) of dlogits[n, k]; consecutive threads read
 * consecutive k, so every load of the loop is coalesced. */
__global__ void k_threshold_backward(const float *__restrict__ dlogits, float *__restrict__ dthreshold, int n,
                                     size_t per_sample) {
    GRID_STRIDE(k, per_sample) {
        double sum = 0.0;
        for (int s = 0; s < n; s++) sum += (double)dlogits[(size_t)s * per_sample + k];
        dthreshold[k] = (float)-sum;
    }
}

/* Per-block partial sums of a mask statistic: BINARINESS = 0: count of mask > 0.5; 1: |mask-0.5|*2. */
template <int BINARINESS>
__global__ void k_mask_stat(const float *__restrict__ mask, size_t total, double *__restrict__ partial) {
    double sum = 0.0;
    GRID_STRIDE(idx, total) {
        const float m = mask[idx];
        sum += BINARINESS ? fabs((double)m - 0.5) * 2.0 : (m > 0.5f ? 1.0 : 0.0);
    }
    sum = bf_block_sum(sum);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}


/* flex_route_tally, per element: a thread per element j of a sample, its strict wins (winners set,
 * ties clear) over the samples summed in a register; a warp's 32 elements share a word. */
__global__ void k_route_elements(int samples, size_t per, const uint32_t *__restrict__ winners,
                                 const uint32_t *__restrict__ ties, uint32_t *__restrict__ counts) {
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < per; j += (size_t)gridDim.x * blockDim.x) {
        uint32_t won = 0;
        for (int s = 0; s < samples; s++) {
            const size_t e = (size_t)s * per + j;
            won += ((winners[e >> 5] & ~ties[e >> 5]) >> (e & 31)) & 1u;
        }
        counts[j] += won;
    }
}

/* ... per sample: a block per sample counts the strict wins of its words, the bits of a word that
 * belong to the samples before or after it masked off. */
__global__ void k_route_samples(size_t per, const uint32_t *__restrict__ winners, const uint32_t *__restrict__ ties,
                                uint32_t *__restrict__ counts) {
    const size_t first = (size_t)blockIdx.x * per, end = first + per; /* the sample's elements [first, end) */
    unsigned long long won = 0;
    for (size_t w = first / 32 + threadIdx.x; w * 32 < end; w += blockDim.x) {
        uint32_t bits = winners[w] & ~ties[w];
        const size_t lo = w * 32;
        if (lo < first) bits &= ~0u << (first - lo);     /* 1 to 31 bits of the sample before */
        if (lo + 32 > end) bits &= ~0u >> (lo + 32 - end); /* 1 to 31 bits of the sample after */
        won += (unsigned long long)__popc(bits);
    }
    won = bf_block_sum(won);
    if (threadIdx.x == 0) counts[blockIdx.x] = (uint32_t)won;
}

}  // namespace

extern "C" bf_status bf_cuda_flex_route_tally(bf_backend *b, int samples, size_t per_sample, const uint32_t *winners,
                                              const uint32_t *ties, uint32_t *element_counts, uint32_t *sample_counts) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (samples <= 0 || per_sample == 0) return bf_error(BF_ERR_ARG, "flex_route_tally: %d samples of %zu elements", samples, per_sample);
    if (!winners || !ties || !element_counts || !sample_counts) return bf_error(BF_ERR_ARG, "flex_route_tally: NULL argument");
    k_route_elements<<<bf_cuda_grid(im, per_sample, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        samples, per_sample, winners, ties, element_counts);
    BF_LAUNCH_CHECK("k_route_elements");
    k_route_samples<<<(unsigned)samples, BF_CUDA_THREADS, 0, im->stream>>>(per_sample, winners, ties, sample_counts);
    BF_LAUNCH_CHECK("k_route_samples");
    return BF_OK;
}


extern "C" bf_status bf_cuda_flex_widen_forward(bf_backend *b, const bf_flex_shape *s, const float *pooled,
                                                float *widened) {
    FLEX_ENTER("flex_widen_forward", pooled, widened);
    LAUNCH_PLANES(k_widen_forward, out_planes(s), s->hw, pooled, widened, geo_of(s));
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_widen_backward(bf_backend *b, const bf_flex_shape *s, const float *dwidened,
                                                 float *dpooled) {
    FLEX_ENTER("flex_widen_backward", dwidened, dpooled);
    LAUNCH_PLANES(k_fold_back, in_planes(s), s->hw, dwidened, (const float *)NULL, dpooled, geo_of(s));
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_max_forward(bf_backend *b, const bf_flex_shape *s, const float *conv,
                                              const float *pooled, float *y, float *conv_wins) {
    FLEX_ENTER("flex_max_forward", conv, pooled, y);
    if (!conv_wins) {
        LAUNCH_PLANES(k_max_forward<false>, out_planes(s), s->hw, conv, pooled, y, geo_of(s),
                      (unsigned long long *)NULL);
        return BF_OK;
    }
    void *total;
    BF_TRY(bf_cuda_scratch(im, sizeof(unsigned long long), &total));
    BF_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(unsigned long long), im->stream));
    LAUNCH_PLANES(k_max_forward<true>, out_planes(s), s->hw, conv, pooled, y, geo_of(s), (unsigned long long *)total);
    k_add_count<<<1, 1, 0, im->stream>>>((const unsigned long long *)total, conv_wins);
    BF_LAUNCH_CHECK("k_add_count");
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_max_backward(bf_backend *b, const bf_flex_shape *s, const float *conv,
                                               const float *pooled, const float *dy, float *dconv, float *dpooled) {
    FLEX_ENTER("flex_max_backward", conv, pooled, dy, dconv, dpooled);
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    LAUNCH_PLANES(k_max_backward_conv, out_planes(s), s->hw, conv, pooled, dy, dconv, geo_of(s), tie_share);
    /* the pool branch gets dy - dconv, folded back (reads the dconv just written, in stream order) */
    LAUNCH_PLANES(k_fold_back, in_planes(s), s->hw, dy, (const float *)dconv, dpooled, geo_of(s));
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_logits_forward(bf_backend *b, const bf_flex_shape *s, const float *widened,
                                                 const float *threshold, float *logits) {
    FLEX_ENTER("flex_logits_forward", widened, threshold, logits);
    LAUNCH_PLANES(k_logits, out_planes(s), s->hw, widened, threshold, logits, geo_of(s));
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_mask_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                               bf_draws draws, const float *logits, const float *conv,
                                               const float *widened, float *mask, float *y, float *conv_mask_sum) {
    FLEX_ENTER("flex_mask_forward", logits, conv, widened, mask, y);
    BF_TRY(check_kind(kind, "flex_mask_forward"));
    const size_t total = out_elements(s);
    if (!conv_mask_sum) {
        LAUNCH_ELEMENTWISE(k_mask_forward<false>, total, kind, factor, draws, logits, conv, widened, mask, y, total,
                           (double *)NULL);
        return BF_OK;
    }
    const unsigned blocks = reduce_blocks(total);
    void *partial;
    BF_TRY(bf_cuda_scratch(im, blocks * sizeof(double), &partial));
    k_mask_forward<true><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(kind, factor, draws, logits, conv, widened, mask,
                                                                      y, total, (double *)partial);
    BF_LAUNCH_CHECK("k_mask_forward<sum>");
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial, (int)blocks, conv_mask_sum);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_mask_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind,
                                                float factor, const float *logits, const float *mask,
                                                const float *conv, const float *widened, const float *dy,
                                                float *dconv, float *dlogits, float *dwidened) {
    FLEX_ENTER("flex_mask_backward", logits, mask, conv, widened, dy, dconv, dlogits, dwidened);
    BF_TRY(check_kind(kind, "flex_mask_backward"));
    const size_t total = out_elements(s);
    LAUNCH_ELEMENTWISE(k_mask_backward, total, kind, factor, logits, mask, conv, widened, dy, dconv, dlogits, dwidened,
                       total);
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_threshold_backward(bf_backend *b, const bf_flex_shape *s, const float *dlogits,
                                                     float *dthreshold) {
    FLEX_ENTER("flex_threshold_backward", dlogits, dthreshold);
    const size_t per_sample = (size_t)s->c_out * s->hw;
    LAUNCH_ELEMENTWISE(k_threshold_backward, per_sample, dlogits, dthreshold, s->n, per_sample);
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_mask_stats(bf_backend *b, const float *mask, size_t n, float *out) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!mask || !out) return bf_error(BF_ERR_ARG, "flex_mask_stats: NULL argument");
    const unsigned blocks = reduce_blocks(n);
    void *partial;
    BF_TRY(bf_cuda_scratch(im, blocks * sizeof(double), &partial));
    BF_CUDA_CHECK(cudaMemsetAsync(out, 0, 2 * sizeof(float), im->stream));
    /* the two statistics share the scratch one after the other, in stream order */
    k_mask_stat<0><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(mask, n, (double *)partial);
    BF_LAUNCH_CHECK("k_mask_stat<count>");
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial, (int)blocks, out);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    k_mask_stat<1><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(mask, n, (double *)partial);
    BF_LAUNCH_CHECK("k_mask_stat<binariness>");
    k_accumulate_partials<<<1, 1024, 0, im->stream>>>((const double *)partial, (int)blocks, out + 1);
    BF_LAUNCH_CHECK("k_accumulate_partials");
    return BF_OK;
}
