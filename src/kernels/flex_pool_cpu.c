/* flex_pool_cpu.c - the fused channel-wise max flex on the CPU (contract in ops.h at
 * flex_pool_max_forward; the CUDA twin is flex_pool.cu, with the same loop structure).
 *
 * The pool branch is never stored: the forward takes each element's pooled values straight from x
 * (one k*k window per tap) and keeps, per pooled element, only the byte that says where in its
 * window the maximum was; the backward reads that one input element back. Per element of the
 * output, one bit says whether the conv won or tied; a tie is then told from a win by y == P~.
 *
 *   forward: one iteration per 32-element word of the winners bitmap (the CUDA warp), so no two
 *            threads share a word; a pooled element's window byte is written by the first output
 *            channel that taps it (taps_of is monotone in j for BILINEAR; EXPAND is explicit).
 *   backward (route): one iteration per pooled element (n, i, p): its candidate output channels j
 *            in ascending order, as the fold-back of flex_cpu.c, so dpooled is bit-identical to
 *            flex_max_backward's; dconv of channel j is written by the thread of its tap i0.
 *   scatter-add: one iteration per input element, summing the windows that chose it in ascending
 *            output order (maxpool_backward's scatter order), then adding to dx. */
#include <string.h>

#include "flex_cpu.h"

/* Where window (oh, ow) of one input plane starts, and its maximum: the first maximum in row-major
 * order, a NaN winning, padding never (as maxpool_forward). *place = kh * k + kw. */
static inline float window_max(const bf_pool_shape *ps, const float *plane, int oh, int ow, uint8_t *place) {
    const int hs = oh * ps->stride - ps->pad, ws = ow * ps->stride - ps->pad;
    const int h0 = hs < 0 ? 0 : hs, h1 = hs + ps->k < ps->h_in ? hs + ps->k : ps->h_in;
    const int w0 = ws < 0 ? 0 : ws, w1 = ws + ps->k < ps->w_in ? ws + ps->k : ps->w_in;
    float best = plane[(size_t)h0 * ps->w_in + w0];
    int at = (h0 - hs) * ps->k + (w0 - ws);
    for (int ih = h0; ih < h1; ih++)
        for (int iw = w0; iw < w1; iw++) {
            const float v = plane[(size_t)ih * ps->w_in + iw];
            if (v > best || (v != v && best == best)) {
                best = v;
                at = (ih - hs) * ps->k + (iw - ws);
            }
        }
    *place = (uint8_t)at;
    return best;
}

/* The input element window (oh, ow) chose: its offset in the plane. */
static inline size_t window_offset(const bf_pool_shape *ps, int oh, int ow, uint8_t place) {
    const int ih = oh * ps->stride - ps->pad + place / ps->k, iw = ow * ps->stride - ps->pad + place % ps->k;
    return (size_t)ih * ps->w_in + iw;
}

/* Whether output channel j is the first that taps pooled channel i (so it writes i's window). */
static inline int first_tapper(const bf_flex_shape *s, int j, int i) {
    if (s->channels == BF_FLEX_CHANNELS_EXPAND)
        return s->c_out % s->c_in == 0 ? j % (s->c_out / s->c_in) == 0 : j < s->c_in;
    if (j == 0) return 1;
    const flex_taps before = taps_of(s, j - 1); /* monotone taps: j-1 misses i => every j' < j does */
    return before.i0 != i && before.i1 != i;
}

bf_status bf_cpu_flex_pool_max_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                       float *y, uint8_t *window, uint32_t *winners, float *conv_wins) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_forward"));
    REQUIRE("flex_pool_max_forward", x, y, window, winners);
    const size_t hw = (size_t)s->hw, in_plane = (size_t)ps->h_in * ps->w_in;
    const size_t total = (size_t)s->n * s->c_out * hw, words = (total + 31) / 32;
    long wins = 0; /* an integer reduction is exact, so OpenMP's combining order does not matter */
#pragma omp parallel for num_threads(plane_threads(b, total)) schedule(static) reduction(+ : wins)
    for (long word = 0; word < (long)words; word++) {
        uint32_t bits = 0;
        const size_t e0 = (size_t)word * 32, e1 = e0 + 32 < total ? e0 + 32 : total;
        for (size_t e = e0; e < e1; e++) {
            const size_t plane = e / hw, p = e - plane * hw, n = plane / s->c_out;
            const int j = (int)(plane - n * s->c_out), oh = (int)(p / ps->w_out), ow = (int)(p % ps->w_out);
            const flex_taps t = taps_of(s, j);
            const float *xn = x + n * s->c_in * in_plane;
            uint8_t at0, at1 = 0;
            const float v0 = window_max(ps, xn + (size_t)t.i0 * in_plane, oh, ow, &at0);
            float w = v0;
            if (t.i1 >= 0) {
                const float v1 = window_max(ps, xn + (size_t)t.i1 * in_plane, oh, ow, &at1);
                w = t.w0 * v0 + t.w1 * v1; /* widen_at's expression */
            }
            if (first_tapper(s, j, t.i0)) window[(n * s->c_in + t.i0) * hw + p] = at0;
            if (t.i1 >= 0 && t.i1 != t.i0 && first_tapper(s, j, t.i1)) window[(n * s->c_in + t.i1) * hw + p] = at1;
            const float c = y[e];
            const int conv_wins_here = c > w; /* strict: a tie counts as pool */
            y[e] = conv_wins_here || c != c ? c : w;
            bits |= (uint32_t)(c >= w) << (e - e0);
            wins += conv_wins_here;
        }
        winners[word] = bits;
    }
    if (conv_wins) *conv_wins = (float)((double)*conv_wins + (double)wins);
    return BF_OK;
}

bf_status bf_cpu_flex_pool_max_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                        const float *x, const float *y, const uint8_t *window,
                                        const uint32_t *winners, const float *dy, float *dconv, float *dpooled) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_backward"));
    REQUIRE("flex_pool_max_backward", x, y, window, winners, dy, dconv);
    const size_t hw = (size_t)s->hw, in_plane = (size_t)ps->h_in * ps->w_in;
    const long planes = (long)s->n * s->c_in;
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
#pragma omp parallel for num_threads(plane_threads(b, (size_t)s->n * s->c_out * hw)) schedule(static)
    for (long q = 0; q < planes; q++) {
        const size_t n = (size_t)(q / s->c_in);
        const int i = (int)(q % s->c_in);
        const float *xn = x + n * s->c_in * in_plane;
        const uint8_t *wn = window + n * s->c_in * hw;
        int lo, hi, step;
        fold_candidates(s, i, &lo, &hi, &step);
        for (size_t p = 0; p < hw; p++) {
            const int oh = (int)(p / ps->w_out), ow = (int)(p % ps->w_out);
            float acc = 0.0f;
            for (int j = lo; j < hi; j += step) {
                const flex_taps t = taps_of(s, j);
                if (t.i0 != i && t.i1 != i) continue;
                const float v0 = xn[(size_t)t.i0 * in_plane + window_offset(ps, oh, ow, wn[(size_t)t.i0 * hw + p])];
                float w = v0;
                if (t.i1 >= 0) {
                    const float v1 = xn[(size_t)t.i1 * in_plane + window_offset(ps, oh, ow, wn[(size_t)t.i1 * hw + p])];
                    w = t.w0 * v0 + t.w1 * v1;
                }
                const size_t e = (n * s->c_out + (size_t)j) * hw + p;
                const float g = dy[e]; /* read before dconv[e] is written: they may alias (EXPAND) */
                const float dc = (winners[e / 32] >> (e % 32)) & 1u ? (y[e] == w ? g * tie_share : g) : 0.0f;
                if (t.i0 == i) dconv[e] = dc;
                const float gp = g - dc; /* the pool branch's share, folded back as flex_cpu.c's fold_back */
                if (t.i0 == i) acc += t.i1 < 0 ? gp : t.w0 * gp;
                if (t.i1 == i) acc += t.w1 * gp;
            }
            if (dpooled) dpooled[(size_t)q * hw + p] = acc;
        }
    }
    return BF_OK;
}

bf_status bf_cpu_flex_pool_scatter_add(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                       const uint8_t *window, const float *dpooled, float *dx) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_scatter_add"));
    REQUIRE("flex_pool_scatter_add", window, dpooled, dx);
    const size_t hw = (size_t)s->hw, in_plane = (size_t)ps->h_in * ps->w_in;
    const long planes = (long)s->n * s->c_in;
#pragma omp parallel for num_threads(plane_threads(b, planes * in_plane)) schedule(static)
    for (long q = 0; q < planes; q++) {
        const float *dp = dpooled + (size_t)q * hw;
        const uint8_t *wq = window + (size_t)q * hw;
        float *dxq = dx + (size_t)q * in_plane;
        for (int h = 0; h < ps->h_in; h++) {
            /* windows oh with oh*stride - pad <= h <= oh*stride - pad + k - 1 */
            const int oh_lo_num = h + ps->pad - ps->k + 1;
            int oh_lo = oh_lo_num <= 0 ? 0 : (oh_lo_num + ps->stride - 1) / ps->stride;
            int oh_hi = (h + ps->pad) / ps->stride;
            if (oh_hi > ps->h_out - 1) oh_hi = ps->h_out - 1;
            for (int w = 0; w < ps->w_in; w++) {
                const int ow_lo_num = w + ps->pad - ps->k + 1;
                int ow_lo = ow_lo_num <= 0 ? 0 : (ow_lo_num + ps->stride - 1) / ps->stride;
                int ow_hi = (w + ps->pad) / ps->stride;
                if (ow_hi > ps->w_out - 1) ow_hi = ps->w_out - 1;
                float acc = 0.0f;
                for (int oh = oh_lo; oh <= oh_hi; oh++)
                    for (int ow = ow_lo; ow <= ow_hi; ow++) {
                        const size_t o = (size_t)oh * ps->w_out + ow;
                        /* a zero adds nothing; skipping it leaves untapped channels' windows unread */
                        if (dp[o] != 0.0f && window_offset(ps, oh, ow, wq[o]) == (size_t)h * ps->w_in + w) acc += dp[o];
                    }
                dxq[(size_t)h * ps->w_in + w] += acc;
            }
        }
    }
    return BF_OK;
}
