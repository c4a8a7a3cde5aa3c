/* flex_cpu.c - flexible-neuron ops on the CPU (contracts in ops.h at bf_flex_shape and the flex_*
 * members of bf_ops; FlexNet spec sections 1.2-1.7, PlasticFlex spec section 2).
 *
 * Widening maps output channel j to at most two pooled channels ("taps") with weights; every op
 * computes the taps of a channel with the same float expressions as flex.cu, so the widened values
 * and the fold-back sums are bit-identical on both backends. The fold-back (widen backward) is a
 * gather: each pooled channel i sums, in ascending j, the gradients of the output channels j whose
 * taps name i. Threads take whole (n, channel) planes, so no two threads write the same element and
 * the summation order never depends on the thread count. */
#include <math.h>
#include <string.h>

#include "flex_cpu.h"

bf_status bf_cpu_flex_widen_forward(bf_backend *b, const bf_flex_shape *s, const float *pooled, float *widened) {
    BF_TRY(bf_flex_shape_check(s, "flex_widen_forward"));
    REQUIRE("flex_widen_forward", pooled, widened);
    const size_t hw = (size_t)s->hw;
    const long planes = (long)s->n * s->c_out;
#pragma omp parallel for num_threads(plane_threads(b, planes * hw)) schedule(static)
    for (long q = 0; q < planes; q++) {
        const flex_taps t = taps_of(s, (int)(q % s->c_out));
        const float *pn = pooled + (size_t)(q / s->c_out) * s->c_in * hw;
        float *out = widened + (size_t)q * hw;
        for (size_t p = 0; p < hw; p++) out[p] = widen_at(&t, pn, hw, p);
    }
    return BF_OK;
}

/* dpooled[n, i] = sum over candidate j ascending of w * g[n, j], with g = dy - dconv (the pool
 * branch's share of a max joint) or g = dy when dconv is NULL (plain widening). The two taps of
 * one j are added separately, first i0 then i1, as PyTorch's backward does. */
static void fold_back(bf_backend *b, const bf_flex_shape *s, const float *dy, const float *dconv, float *dpooled) {
    const size_t hw = (size_t)s->hw;
    const long planes = (long)s->n * s->c_in;
#pragma omp parallel for num_threads(plane_threads(b, (size_t)s->n * s->c_out * hw)) schedule(static)
    for (long q = 0; q < planes; q++) {
        const int i = (int)(q % s->c_in);
        const size_t sample = (size_t)(q / s->c_in) * s->c_out * hw;
        float *dp = dpooled + (size_t)q * hw;
        memset(dp, 0, hw * sizeof(float));
        int lo, hi, step;
        fold_candidates(s, i, &lo, &hi, &step);
        for (int j = lo; j < hi; j += step) {
            const flex_taps t = taps_of(s, j);
            const float *gy = dy + sample + (size_t)j * hw;
            const float *gc = dconv ? dconv + sample + (size_t)j * hw : NULL;
            for (int tap = 0; tap < 2; tap++) {
                if ((tap == 0 ? t.i0 : t.i1) != i) continue;
                const float w = tap == 0 ? t.w0 : t.w1;
                if (t.i1 < 0) { /* EXPAND: a copy, added unscaled */
                    for (size_t p = 0; p < hw; p++) dp[p] += gc ? gy[p] - gc[p] : gy[p];
                } else {
                    for (size_t p = 0; p < hw; p++) dp[p] += w * (gc ? gy[p] - gc[p] : gy[p]);
                }
            }
        }
    }
}

bf_status bf_cpu_flex_widen_backward(bf_backend *b, const bf_flex_shape *s, const float *dwidened, float *dpooled) {
    BF_TRY(bf_flex_shape_check(s, "flex_widen_backward"));
    REQUIRE("flex_widen_backward", dwidened, dpooled);
    fold_back(b, s, dwidened, NULL, dpooled);
    return BF_OK;
}

bf_status bf_cpu_flex_max_forward(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                  float *y, float *conv_wins) {
    BF_TRY(bf_flex_shape_check(s, "flex_max_forward"));
    REQUIRE("flex_max_forward", conv, pooled, y);
    const size_t hw = (size_t)s->hw;
    const long planes = (long)s->n * s->c_out;
    long wins = 0; /* an integer reduction is exact, so OpenMP's combining order does not matter */
#pragma omp parallel for num_threads(plane_threads(b, planes * hw)) schedule(static) reduction(+ : wins)
    for (long q = 0; q < planes; q++) {
        const flex_taps t = taps_of(s, (int)(q % s->c_out));
        const float *pn = pooled + (size_t)(q / s->c_out) * s->c_in * hw;
        const float *cq = conv + (size_t)q * hw;
        float *yq = y + (size_t)q * hw;
        for (size_t p = 0; p < hw; p++) {
            const float c = cq[p], w = widen_at(&t, pn, hw, p);
            const int conv_wins_here = c > w; /* strict: a tie counts as pool */
            yq[p] = conv_wins_here || c != c ? c : w; /* a NaN on either side propagates, as torch.maximum */
            wins += conv_wins_here;
        }
    }
    if (conv_wins) *conv_wins = (float)((double)*conv_wins + (double)wins);
    return BF_OK;
}

bf_status bf_cpu_flex_max_backward(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                   const float *dy, float *dconv, float *dpooled) {
    BF_TRY(bf_flex_shape_check(s, "flex_max_backward"));
    REQUIRE("flex_max_backward", conv, pooled, dy, dconv, dpooled);
    const size_t hw = (size_t)s->hw;
    const long planes = (long)s->n * s->c_out;
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
#pragma omp parallel for num_threads(plane_threads(b, planes * hw)) schedule(static)
    for (long q = 0; q < planes; q++) {
        const flex_taps t = taps_of(s, (int)(q % s->c_out));
        const float *pn = pooled + (size_t)(q / s->c_out) * s->c_in * hw;
        const float *cq = conv + (size_t)q * hw, *gq = dy + (size_t)q * hw;
        float *dq = dconv + (size_t)q * hw;
        for (size_t p = 0; p < hw; p++) {
            const float c = cq[p], w = widen_at(&t, pn, hw, p), g = gq[p];
            dq[p] = c > w ? g : c == w ? g * tie_share : 0.0f;
        }
    }
    /* the pool branch gets the rest, dy - dconv (flexnet.md 1.7 step 2), folded back */
    fold_back(b, s, dy, dconv, dpooled);
    return BF_OK;
}

bf_status bf_cpu_flex_logits_forward(bf_backend *b, const bf_flex_shape *s, const float *widened,
                                     const float *threshold, float *logits) {
    BF_TRY(bf_flex_shape_check(s, "flex_logits_forward"));
    REQUIRE("flex_logits_forward", widened, threshold, logits);
    const size_t per_sample = (size_t)s->c_out * s->hw;
#pragma omp parallel for num_threads(plane_threads(b, per_sample * s->n)) schedule(static)
    for (int n = 0; n < s->n; n++)
        for (size_t k = 0; k < per_sample; k++)
            logits[n * per_sample + k] = widened[n * per_sample + k] - threshold[k];
    return BF_OK;
}

bf_status bf_cpu_flex_mask_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                   bf_draws draws, const float *logits, const float *conv, const float *widened,
                                   float *mask, float *y, float *conv_mask_sum) {
    BF_TRY(bf_flex_shape_check(s, "flex_mask_forward"));
    BF_TRY(check_kind(kind, "flex_mask_forward"));
    REQUIRE("flex_mask_forward", logits, conv, widened, mask, y);
    const size_t total = (size_t)s->n * s->c_out * s->hw;
#pragma omp parallel for num_threads(plane_threads(b, total)) schedule(static)
    for (size_t i = 0; i < total; i++) {
        const float m = mask_of(kind, factor, draws, i, logits[i]);
        mask[i] = m;
        y[i] = widened[i] * (1.0f - m) + conv[i] * m;
    }
    if (conv_mask_sum) *conv_mask_sum = (float)((double)*conv_mask_sum + bf_cpu_sum(b, mask, total, 0));
    return BF_OK;
}

bf_status bf_cpu_flex_mask_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                    const float *logits, const float *mask, const float *conv, const float *widened,
                                    const float *dy, float *dconv, float *dlogits, float *dwidened) {
    BF_TRY(bf_flex_shape_check(s, "flex_mask_backward"));
    BF_TRY(check_kind(kind, "flex_mask_backward"));
    REQUIRE("flex_mask_backward", logits, mask, conv, widened, dy, dconv, dlogits, dwidened);
    const size_t total = (size_t)s->n * s->c_out * s->hw;
#pragma omp parallel for num_threads(plane_threads(b, total)) schedule(static)
    for (size_t i = 0; i < total; i++) {
        const float m = mask[i], g = dy[i];
        dconv[i] = g * m;
        dwidened[i] = g * (1.0f - m);
        dlogits[i] = g * (conv[i] - widened[i]) * mask_grad(kind, factor, logits[i], m);
    }
    return BF_OK;
}

bf_status bf_cpu_flex_threshold_backward(bf_backend *b, const bf_flex_shape *s, const float *dlogits,
                                         float *dthreshold) {
    BF_TRY(bf_flex_shape_check(s, "flex_threshold_backward"));
    REQUIRE("flex_threshold_backward", dlogits, dthreshold);
    const size_t per_sample = (size_t)s->c_out * s->hw;
    /* one element per iteration, its n terms summed in double in ascending n, as flex.cu does */
#pragma omp parallel for num_threads(plane_threads(b, per_sample * s->n)) schedule(static)
    for (size_t k = 0; k < per_sample; k++) {
        double sum = 0.0;
        for (int n = 0; n < s->n; n++) sum += dlogits[n * per_sample + k];
        dthreshold[k] = (float)-sum;
    }
    return BF_OK;
}

bf_status bf_cpu_flex_mask_stats(bf_backend *b, const float *mask, size_t n, float *out) {
    (void)b;
    REQUIRE("flex_mask_stats", mask, out);
    /* runs at log intervals only: one sequential pass in double keeps it simple and repeatable */
    double chosen = 0.0, binariness = 0.0;
    for (size_t i = 0; i < n; i++) {
        chosen += mask[i] > 0.5f ? 1.0 : 0.0;
        binariness += fabs((double)mask[i] - 0.5) * 2.0;
    }
    out[0] = (float)chosen;
    out[1] = (float)binariness;
    return BF_OK;
}

/* Whether the conv won element e strictly: its winners bit set, its ties bit clear. */
static inline uint32_t strict_win(const uint32_t *winners, const uint32_t *ties, size_t e) {
    return ((winners[e >> 5] & ~ties[e >> 5]) >> (e & 31)) & 1u;
}

bf_status bf_cpu_flex_route_tally(bf_backend *b, int samples, size_t per_sample, const uint32_t *winners,
                                  const uint32_t *ties, uint32_t *element_counts, uint32_t *sample_counts) {
    if (samples <= 0 || per_sample == 0)
        return bf_error(BF_ERR_ARG, "flex_route_tally: %d samples of %zu elements", samples, per_sample);
    REQUIRE("flex_route_tally", winners, ties, element_counts, sample_counts);
    const long per = (long)per_sample;
#pragma omp parallel for num_threads(plane_threads(b, (size_t)samples * per_sample)) schedule(static)
    for (long j = 0; j < per; j++) {
        uint32_t won = 0;
        for (int s = 0; s < samples; s++) won += strict_win(winners, ties, (size_t)s * per_sample + (size_t)j);
        element_counts[j] += won;
    }
#pragma omp parallel for num_threads(plane_threads(b, (size_t)samples * per_sample)) schedule(static)
    for (int s = 0; s < samples; s++) {
        uint32_t won = 0;
        for (size_t j = 0; j < per_sample; j++) won += strict_win(winners, ties, (size_t)s * per_sample + j);
        sample_counts[s] = won;
    }
    return BF_OK;
}
