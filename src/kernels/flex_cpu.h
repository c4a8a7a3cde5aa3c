/* flex_cpu.h - internal: what the flex CPU files (flex_cpu.c, flex_pool_cpu.c, flex_mask_cpu.c)
 * share: the channel taps of the widening, the fold-back candidates, the mask joint's masks and
 * their gradients, and argument checks. Every function computes with the same float expressions as
 * its twin in flex_common.cuh, so both backends agree bit for bit. */
#ifndef BIOFLEX_FLEX_CPU_H
#define BIOFLEX_FLEX_CPU_H

#include <math.h>

#include "bioflex/hash.h" /* bf_uniform: the stochastic masks */
#include "cpu_backend.h"
#include "require.h"

/* Output channel j reads pooled channel i0 (weight w0) and, for BILINEAR, i1 (weight w1); i1 < 0
 * means a single tap (EXPAND copies, so no multiply may turn an inf into a NaN). */
typedef struct flex_taps {
    int i0, i1;
    float w0, w1;
} flex_taps;

static inline flex_taps taps_of(const bf_flex_shape *s, int j) {
    flex_taps t = {0, -1, 1.0f, 0.0f};
    if (s->channels == BF_FLEX_CHANNELS_EXPAND) {
        t.i0 = s->c_out % s->c_in == 0 ? j / (s->c_out / s->c_in) : j % s->c_in;
        return t;
    }
    /* F.interpolate(align_corners=False) as PyTorch computes it: scale and source index in float */
    const float scale = (float)s->c_in / (float)s->c_out;
    float src = scale * ((float)j + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    t.i0 = (int)src;
    t.i1 = t.i0 + 1 < s->c_in ? t.i0 + 1 : s->c_in - 1;
    t.w1 = src - (float)t.i0;
    t.w0 = 1.0f - t.w1;
    return t;
}

/* Output channels j = lo, lo+step, ... < hi that may have pooled channel i among their taps (for
 * BILINEAR a superset of the channels tapping i with nonzero weight, whose i0 is i-1 or i; taps_of
 * decides membership). The zero-weight taps of channels clamped at the left edge fall inside or
 * outside the range depending on the ratio: inside, they add 0*g, a NaN only when g is infinite
 * (PyTorch adds them all). The CUDA twin uses the same ranges, so both add the same terms. */
static inline void fold_candidates(const bf_flex_shape *s, int i, int *lo, int *hi, int *step) {
    *step = 1;
    if (s->channels == BF_FLEX_CHANNELS_EXPAND) {
        if (s->c_out % s->c_in == 0) {
            const int r = s->c_out / s->c_in;
            *lo = i * r;
            *hi = *lo + r;
        } else { /* tiling: j = i, i + c_in, ...; empty when i >= c_out */
            *lo = i;
            *hi = s->c_out;
            *step = s->c_in;
        }
        return;
    }
    const double ratio = (double)s->c_out / s->c_in; /* i0(j) in {i-1, i} <=> j in [(i-0.5)r-0.5, (i+1.5)r-0.5) */
    int l = (int)floor((i - 0.5) * ratio - 0.5) - 1, h = (int)ceil((i + 1.5) * ratio - 0.5) + 1;
    *lo = l < 0 ? 0 : l;
    *hi = h > s->c_out ? s->c_out : h;
}

/* The widened value at position p of a (sample) pooled block pn [c_in, hw]. */
static inline float widen_at(const flex_taps *t, const float *pn, size_t hw, size_t p) {
    float v = pn[(size_t)t->i0 * hw + p];
    return t->i1 < 0 ? v : t->w0 * v + t->w1 * pn[(size_t)t->i1 * hw + p];
}

/* The logistic function in double, rounded once to float: the CUDA backend computes the same
 * expression, and double keeps its result identical to ours (float expf differs by an ulp between
 * libm and CUDA), which the thresholded masks and stochastic roundings need. */
static inline float sigmoid(float x) { return (float)(1.0 / (1.0 + exp(-(double)x))); }

/* M = mask(L) for element i (see bf_flex_mask). */
static inline float mask_of(bf_flex_mask kind, float factor, bf_draws draws, size_t i, float L) {
    switch (kind) {
    case BF_FLEX_MASK_SIGMOID_HARD: {
        const float v = L / 6.0f + 0.5f;
        return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; /* a NaN stays NaN */
    }
    case BF_FLEX_MASK_SIGMOID_MUL: return sigmoid(factor * L);
    case BF_FLEX_MASK_STE_FPBP:
    case BF_FLEX_MASK_STE_FPBS: return L > 0.5f ? 1.0f : 0.0f;
    case BF_FLEX_MASK_STE_FSBP:
    case BF_FLEX_MASK_STE_FSBS: return sigmoid(L) > 0.5f ? 1.0f : 0.0f;
    default: break;
    }
    float v = L; /* stochastic rounding of L (FP), sigmoid(L) (FS) or clamp(L, 0, 1) (FC) */
    if (kind == BF_FLEX_MASK_STOCHASTIC_FSBP || kind == BF_FLEX_MASK_STOCHASTIC_FSBS ||
        kind == BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED)
        v = sigmoid(L);
    if (kind == BF_FLEX_MASK_STOCHASTIC_FCBP || kind == BF_FLEX_MASK_STOCHASTIC_FCBS ||
        kind == BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED)
        v = L < 0.0f ? 0.0f : L > 1.0f ? 1.0f : L;
    const float lower = floorf(v);
    return lower + (bf_draw_uniform(draws, i) < v - lower ? 1.0f : 0.0f);
}

/* dM/dL under the mask's backward rule; m is the forward mask value. */
static inline float mask_grad(bf_flex_mask kind, float factor, float L, float m) {
    switch (kind) {
    case BF_FLEX_MASK_SIGMOID_HARD: return L > -3.0f && L < 3.0f ? 1.0f / 6.0f : 0.0f;
    case BF_FLEX_MASK_SIGMOID_MUL: return factor * m * (1.0f - m); /* m = sigmoid(f*L) */
    case BF_FLEX_MASK_STE_FPBS:
    case BF_FLEX_MASK_STE_FSBS:
    case BF_FLEX_MASK_STOCHASTIC_FPBS:
    case BF_FLEX_MASK_STOCHASTIC_FSBS:
    case BF_FLEX_MASK_STOCHASTIC_FCBS: {
        const float sg = sigmoid(L); /* sigmoid'(L) of the raw logits, per ops.h */
        return sg * (1.0f - sg);
    }
    case BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED: { /* the reference: sigmoid' at the squashed value */
        const float sg = sigmoid(sigmoid(L));
        return sg * (1.0f - sg);
    }
    case BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED: {
        const float sg = sigmoid(L < 0.0f ? 0.0f : L > 1.0f ? 1.0f : L);
        return sg * (1.0f - sg);
    }
    default: return 1.0f; /* the *BP rules: identity (straight-through) */
    }
}

static inline bf_status check_kind(bf_flex_mask kind, const char *op) {
    if ((int)kind < 0 || kind >= BF_FLEX_MASK_COUNT)
        return bf_error(BF_ERR_ARG, "%s: unknown mask kind %d", op, (int)kind);
    return BF_OK;
}

/* Threads for a loop over `planes` planes holding `total` elements: one for short loops. */
static inline int plane_threads(const bf_backend *b, size_t total) {
    return total >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
}

#endif
