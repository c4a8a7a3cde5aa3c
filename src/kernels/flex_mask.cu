/* flex_mask.cu - the fused mask joint on the GPU (contract in ops.h at flex_mask_joint_forward; the
 * CPU twin is flex_mask_cpu.c, which computes through the op-by-op sequence; every result is
 * bit-identical to it: the same IEEE expressions, flex_common.cuh's, in another order of loops).
 *
 * What a mask-joint flex layer keeps from its forward is C, the window bytes and (with batch-norm
 * on the logits) their batch statistics; P is pooled again from x in the backward. These kernels
 * take P [n, c_in, hw] and never store P~, L or M:
 *   k_mask_joint_forward   one thread per output element e, in flex.cu's k_mask_forward order and
 *                          grid (so the conv-mask sum and the routing statistics repeat that op's
 *                          bits): P~ from P's taps, L = P~ - T (or the given logits), M, y.
 *   k_mask_joint_backward  one thread per pooled element (n, i, p), over the output channels j that
 *                          tap it in ascending order, as flex.cu's k_fold_back: P~, L and M of each
 *                          again; the channel's first tap writes dconv and dlogits, and every tap
 *                          adds its weighted share of the pool branch's gradient to dpooled. Under
 *                          BILINEAR an output element's two taps each recompute its M (a mask is a
 *                          pure function of L, the draws and e, so both get the same bits).
 * Forward one kernel (two with the sums' finisher), backward one, where the op-by-op sequence runs
 * widen, logits, mask forward, mask statistics (two passes) and, in the backward, widen, logits,
 * mask forward, mask backward, add and fold-back. */
#include <math.h>

#include "flex_common.cuh"

namespace { /* kernels are private to this file */

/* The logits of output element e (channel j, position p): the given ones, or P~ - T. */
__device__ __forceinline__ float logit_at(const float *__restrict__ logits, const float *__restrict__ threshold,
                                          size_t e, const flex_geo &g, int j, size_t p, float widened) {
    return logits ? logits[e] : __fsub_rn(widened, threshold[(size_t)j * g.hw + p]);
}

/* With SUMS, block b writes partial[b] = its sum of M, partial[blocks + b] its count of M > 0.5 and
 * partial[2 * blocks + b] its sum of |M - 0.5| * 2 (flex.cu's k_mask_forward and k_mask_stat). */
template <bool SUMS>
__global__ void k_mask_joint_forward(bf_flex_mask kind, float factor, bf_draws draws, const float *__restrict__ pooled,
                                     const float *__restrict__ threshold, const float *__restrict__ logits,
                                     const float *__restrict__ conv, float *__restrict__ y, size_t total, flex_geo g,
                                     double *__restrict__ partial) {
    double sum = 0.0, chosen = 0.0, binariness = 0.0;
    GRID_STRIDE(e, total) {
        size_t n, p;
        int j;
        split_index(e, g.c_out, g.hw, &n, &j, &p);
        const float w = widen_at(taps_of(g, j), pooled + n * g.c_in * g.hw, (size_t)g.hw, p);
        const float m = mask_of(kind, factor, draws, e, logit_at(logits, threshold, e, g, j, p, w));
        y[e] = __fadd_rn(__fmul_rn(w, __fsub_rn(1.0f, m)), __fmul_rn(conv[e], m));
        if (SUMS) {
            sum += (double)m;
            chosen += m > 0.5f ? 1.0 : 0.0;
            binariness += fabs((double)m - 0.5) * 2.0;
        }
    }
    if (SUMS) { /* bf_block_sum may be called again: it waits for the previous call's readers */
        sum = bf_block_sum(sum);
        chosen = bf_block_sum(chosen);
        binariness = bf_block_sum(binariness);
        if (threadIdx.x == 0) {
            partial[blockIdx.x] = sum;
            partial[gridDim.x + blockIdx.x] = chosen;
            partial[2 * gridDim.x + blockIdx.x] = binariness;
        }
    }
}

/* dpooled nullable. The share of each tap as k_fold_back adds it: EXPAND's single tap unscaled,
 * BILINEAR's taps i0 then i1 with their weights. */
__global__ void k_mask_joint_backward(bf_flex_mask kind, float factor, bf_draws draws, const float *__restrict__ pooled,
                                      const float *__restrict__ threshold, const float *__restrict__ logits,
                                      const float *__restrict__ conv, const float *__restrict__ dy,
                                      float *__restrict__ dconv, float *__restrict__ dlogits,
                                      float *__restrict__ dpooled, size_t pooled_total, flex_geo g) {
    GRID_STRIDE(q, pooled_total) {
        size_t n, p;
        int i, lo, hi, step;
        split_index(q, g.c_in, g.hw, &n, &i, &p);
        const float *pn = pooled + n * g.c_in * g.hw;
        fold_candidates(g, i, &lo, &hi, &step);
        float acc = 0.0f;
        for (int j = lo; j < hi; j += step) {
            const flex_taps t = taps_of(g, j);
            if (t.i0 != i && t.i1 != i) continue;
            const size_t e = (n * g.c_out + (size_t)j) * g.hw + p;
            const float w = widen_at(t, pn, (size_t)g.hw, p);
            const float L = logit_at(logits, threshold, e, g, j, p, w);
            const float m = mask_of(kind, factor, draws, e, L), gv = dy[e];
            const float dl = __fmul_rn(__fmul_rn(gv, __fsub_rn(conv[e], w)), mask_grad(kind, factor, L, m));
            if (t.i0 == i) { /* one writer per output element */
                dconv[e] = __fmul_rn(gv, m);
                dlogits[e] = dl;
            }
            float share = __fmul_rn(gv, __fsub_rn(1.0f, m));
            if (!logits) share = __fadd_rn(share, dl); /* L = P~ - T: dL reaches P~ too (add_inplace) */
            if (t.i0 == i) acc = __fadd_rn(acc, t.i1 < 0 ? share : __fmul_rn(t.w0, share));
            if (t.i1 == i) acc = __fadd_rn(acc, __fmul_rn(t.w1, share));
        }
        if (dpooled) dpooled[q] = acc;
    }
}

}  // namespace

extern "C" bf_status bf_cuda_flex_mask_joint_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind,
                                                     float factor, bf_draws draws, const float *pooled,
                                                     const float *threshold, const float *logits, const float *conv,
                                                     float *y, float *conv_mask_sum, float *routing) {
    FLEX_ENTER("flex_mask_joint_forward", pooled, conv, y);
    BF_TRY(check_kind(kind, "flex_mask_joint_forward"));
    if (!logits && !threshold) return bf_error(BF_ERR_ARG, "flex_mask_joint_forward: neither logits nor threshold");
    const size_t total = out_elements(s);
    if (!conv_mask_sum && !routing) {
        LAUNCH_ELEMENTWISE(k_mask_joint_forward<false>, total, kind, factor, draws, pooled, threshold, logits, conv, y,
                           total, geo_of(s), (double *)NULL);
        return BF_OK;
    }
    const unsigned blocks = reduce_blocks(total); /* k_mask_forward's and k_mask_stat's grid */
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, 3 * (size_t)blocks * sizeof(double), &scratch));
    const double *partial = (const double *)scratch;
    k_mask_joint_forward<true><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(kind, factor, draws, pooled, threshold,
                                                                            logits, conv, y, total, geo_of(s),
                                                                            (double *)scratch);
    BF_LAUNCH_CHECK("k_mask_joint_forward<sums>");
    if (conv_mask_sum) {
        k_accumulate_partials<<<1, 1024, 0, im->stream>>>(partial, (int)blocks, conv_mask_sum);
        BF_LAUNCH_CHECK("k_accumulate_partials");
    }
    if (routing) { /* overwritten, as flex_mask_stats: zeroed, then the partials added */
        BF_CUDA_CHECK(cudaMemsetAsync(routing, 0, 2 * sizeof(float), im->stream));
        for (int stat = 0; stat < 2; stat++) {
            k_accumulate_partials<<<1, 1024, 0, im->stream>>>(partial + (size_t)(stat + 1) * blocks, (int)blocks,
                                                              routing + stat);
            BF_LAUNCH_CHECK("k_accumulate_partials");
        }
    }
    return BF_OK;
}

extern "C" bf_status bf_cuda_flex_mask_joint_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind,
                                                      float factor, bf_draws draws, const float *pooled,
                                                      const float *threshold, const float *logits, const float *conv,
                                                      const float *dy, float *dconv, float *dlogits, float *dpooled) {
    FLEX_ENTER("flex_mask_joint_backward", pooled, conv, dy, dconv, dlogits);
    BF_TRY(check_kind(kind, "flex_mask_joint_backward"));
    if (!logits && !threshold) return bf_error(BF_ERR_ARG, "flex_mask_joint_backward: neither logits nor threshold");
    const size_t pooled_total = (size_t)s->n * s->c_in * s->hw;
    LAUNCH_ELEMENTWISE(k_mask_joint_backward, pooled_total, kind, factor, draws, pooled, threshold, logits, conv, dy,
                       dconv, dlogits, dpooled, pooled_total, geo_of(s));
    return BF_OK;
}
