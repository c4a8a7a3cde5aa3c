/* flex_pool_cpu.c - the fused channel-wise max flex on the CPU (contract in ops.h at
 * flex_pool_max_forward; the CUDA twin is flex_pool.cu).
 *
 * On a CPU nothing is gained by fusing the passes: what costs is the per-element work, and the
 * plane-wise loops of the op-by-op sequence vectorise. So these ops keep the fused contract (what
 * the layer stores between forward and backward: y in place of C, a window byte per pooled element,
 * a winner and a tie bit per output element) but compute through the CPU backend's own maxpool and
 * fold-back, with P and the per-element flags in backend scratch for the duration of one call:
 *   forward:  P and its int32 argmax (maxpool_forward) -> window bytes of the tapped channels;
 *             per (n, j) plane y = max(C, P~), C = y + bias[j] with a bias, and a flag byte
 *             (bit 0: C >= P~, bit 1: C == P~)
 *             -> packed 32 to a word of each bitmap.
 *   backward: per (n, j) plane dconv from the two bits and the pool's share dy - dconv (each dy
 *             read before its dconv is written, so they may alias under EXPAND); the share folded
 *             back with flex_widen_backward.
 *   scatter:  the window bytes as int32 argmax -> maxpool_backward into scratch -> added to dx.
 *   backward with the scatter (flex_pool_max_backward_scatter): the backward's dpooled into scratch
 *             -> maxpool_backward straight into dx; dbias by conv2d_backward_filter's channel sum.
 *   flex_pool_forward / flex_pool_gather (the mask joint's pool branch): maxpool_forward with its
 *             argmax turned into window bytes; P read back from x at the bytes.
 * Every float expression is the op-by-op sequence's, so the results are bit-identical to it (and
 * to flex_pool.cu). */
#include <string.h>

#include "flex_cpu.h"

/* Marks in tapped[c_in] the pooled channels some output channel takes as a tap (any weight). */
static void mark_tapped(const bf_flex_shape *s, uint8_t *tapped) {
    memset(tapped, 0, (size_t)s->c_in);
    for (int j = 0; j < s->c_out; j++) {
        const flex_taps t = taps_of(s, j);
        tapped[t.i0] = 1;
        if (t.i1 >= 0) tapped[t.i1] = 1;
    }
}

/* Carves n bytes (rounded to 64) off a scratch cursor. */
static void *carve(char **cursor, size_t bytes) {
    void *p = *cursor;
    *cursor += (bytes + 63) & ~(size_t)63;
    return p;
}

/* Window arithmetic without a division per element. A pooled position p's window has its corner
 * at input-plane offset origin[p] (in the padding it may be negative or fall in the row before);
 * window place (dh, dw), the byte dh * k + dw, lies delta[place] = dh * w_in + dw further on, and
 * place_of[d] inverts that for the d = argmax - origin that maxpool's winners can have. The inverse
 * is one-to-one only while k <= w_in; planes narrower than the kernel (a 3x3 flex on 2x2 maps)
 * divide instead, and are too small for it to matter. */
typedef struct window_table {
    int32_t *origin;            /* [hw] */
    uint8_t *place_of;          /* [(k - 1) * w_in + k], or NULL where only delta is needed */
    int32_t delta[255];         /* k * k <= 255, as bf_flex_pool_shape_check ensures */
} window_table;

static size_t window_table_bytes(const bf_pool_shape *ps, int with_place_of) {
    const size_t hw = (size_t)ps->h_out * ps->w_out, span = (size_t)(ps->k - 1) * ps->w_in + ps->k;
    return 64 + hw * sizeof(int32_t) + (with_place_of ? 64 + span : 0);
}

static void window_table_fill(const bf_pool_shape *ps, window_table *wt) {
    for (int oh = 0, p = 0; oh < ps->h_out; oh++)
        for (int ow = 0; ow < ps->w_out; ow++, p++)
            wt->origin[p] = (oh * ps->stride - ps->pad) * ps->w_in + ow * ps->stride - ps->pad;
    for (int place = 0; place < ps->k * ps->k; place++) {
        wt->delta[place] = place / ps->k * ps->w_in + place % ps->k;
        if (wt->place_of && ps->k <= ps->w_in) wt->place_of[wt->delta[place]] = (uint8_t)place;
    }
}

/* The table of ps's windows, carved off a scratch cursor (window_table_bytes(ps, with_place_of)). */
static window_table window_table_carve(const bf_pool_shape *ps, char **cursor, int with_place_of) {
    window_table wt = {.origin = carve(cursor, (size_t)ps->h_out * ps->w_out * sizeof(int32_t))};
    if (with_place_of) wt.place_of = carve(cursor, (size_t)(ps->k - 1) * ps->w_in + ps->k);
    window_table_fill(ps, &wt);
    return wt;
}

/* One pooled plane's window bytes from maxpool's int32 argmax (an offset in the input plane). */
static void window_bytes(const bf_pool_shape *ps, const window_table *wt, size_t hw, const int32_t *argmax,
                         uint8_t *window) {
    if (ps->k <= ps->w_in) {
        for (size_t p = 0; p < hw; p++) window[p] = wt->place_of[argmax[p] - wt->origin[p]];
        return;
    }
    for (size_t p = 0; p < hw; p++) {
        const int hs = (int)(p / (size_t)ps->w_out) * ps->stride - ps->pad;
        const int ws = (int)(p % (size_t)ps->w_out) * ps->stride - ps->pad;
        window[p] = (uint8_t)((argmax[p] / ps->w_in - hs) * ps->k + (argmax[p] % ps->w_in - ws));
    }
}

/* The offset in its input plane of the element pooled position p's window byte names. */
static inline int32_t chosen_offset(const window_table *wt, size_t p, uint8_t place) {
    return wt->origin[p] + wt->delta[place];
}

bf_status bf_cpu_flex_pool_max_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                       const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                       float *conv_wins) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_forward"));
    REQUIRE("flex_pool_max_forward", x, y, window, winners, ties);
    const size_t hw = (size_t)s->hw, np = (size_t)s->n * s->c_in * hw, nc = (size_t)s->n * s->c_out * hw;
    const size_t words = (nc + 31) / 32;
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, 4 * 64 + np * (sizeof(float) + sizeof(int32_t)) + nc + (size_t)s->c_in +
                                 window_table_bytes(ps, 1), &scratch));
    char *cursor = scratch;
    float *P = carve(&cursor, np * sizeof(float));
    int32_t *argmax = carve(&cursor, np * sizeof(int32_t));
    uint8_t *flags = carve(&cursor, nc), *tapped = carve(&cursor, (size_t)s->c_in);
    const window_table wt = window_table_carve(ps, &cursor, 1);
    BF_TRY(bf_cpu_maxpool_forward(b, ps, x, P, argmax)); /* argmax given: maxpool takes no scratch */
    mark_tapped(s, tapped);

    const long pooled_planes = (long)s->n * s->c_in, planes = (long)s->n * s->c_out;
#pragma omp parallel for num_threads(plane_threads(b, np)) schedule(static)
    for (long q = 0; q < pooled_planes; q++) /* the contract leaves untapped channels' bytes as they were */
        if (tapped[q % s->c_in]) window_bytes(ps, &wt, hw, argmax + (size_t)q * hw, window + (size_t)q * hw);
    long wins = 0; /* an integer reduction is exact, so OpenMP's combining order does not matter */
#pragma omp parallel for num_threads(plane_threads(b, nc)) schedule(static) reduction(+ : wins)
    for (long q = 0; q < planes; q++) {
        const flex_taps t = taps_of(s, (int)(q % s->c_out));
        const float *pn = P + (size_t)(q / s->c_out) * s->c_in * hw;
        float *yq = y + (size_t)q * hw;
        uint8_t *flag = flags + (size_t)q * hw;
        const float bias_q = bias ? bias[q % s->c_out] : 0.0f;
        for (size_t p = 0; p < hw; p++) { /* flex_max_forward's expressions */
            const float c = bias ? yq[p] + bias_q : yq[p], w = widen_at(&t, pn, hw, p);
            const int conv_wins_here = c > w;
            yq[p] = conv_wins_here || c != c ? c : w;
            flag[p] = (uint8_t)((c >= w) | (c == w) << 1);
            wins += conv_wins_here;
        }
    }
#pragma omp parallel for num_threads(plane_threads(b, nc)) schedule(static)
    for (long word = 0; word < (long)words; word++) {
        const size_t e0 = (size_t)word * 32, e1 = e0 + 32 < nc ? e0 + 32 : nc;
        uint32_t win_bits = 0, tie_bits = 0;
        for (size_t e = e0; e < e1; e++) {
            win_bits |= (uint32_t)(flags[e] & 1u) << (e - e0);
            tie_bits |= (uint32_t)(flags[e] >> 1) << (e - e0);
        }
        winners[word] = win_bits;
        ties[word] = tie_bits;
    }
    if (conv_wins) *conv_wins = (float)((double)*conv_wins + (double)wins);
    return BF_OK;
}

/* dconv from dy and the two bits, and (pool_share non-NULL) the pool's share dy - dconv per
 * element: flex_max_backward's expressions. Each dy is read before its dconv is written (they may
 * alias). */
static void route(bf_backend *b, const bf_flex_shape *s, const uint32_t *winners, const uint32_t *ties, const float *dy,
                  float *dconv, float *pool_share) {
    const size_t nc = (size_t)s->n * s->c_out * s->hw;
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
#pragma omp parallel for num_threads(plane_threads(b, nc)) schedule(static)
    for (long word = 0; word < (long)((nc + 31) / 32); word++) {
        const size_t e0 = (size_t)word * 32, e1 = e0 + 32 < nc ? e0 + 32 : nc;
        const uint32_t win = winners[word], tie = ties[word];
        for (size_t e = e0; e < e1; e++) {
            const float g = dy[e];
            const float dc = (win >> (e - e0)) & 1u ? ((tie >> (e - e0)) & 1u ? g * tie_share : g) : 0.0f;
            if (pool_share) pool_share[e] = g - dc;
            dconv[e] = dc;
        }
    }
}

/* The flex forward, then the batch-norm's statistics over its output: the two ops, bit for bit. */
bf_status bf_cpu_flex_pool_max_forward_bn_stats(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                const bf_bn_shape *bs, const float *x, const float *bias, float *y,
                                                uint8_t *window, uint32_t *winners, uint32_t *ties, float *conv_wins,
                                                float *save_mean, float *save_invstd, float *running_mean,
                                                float *running_var) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_forward_bn_stats"));
    BF_TRY(bf_flex_bn_shape_check(s, bs, "flex_pool_max_forward_bn_stats"));
    REQUIRE("flex_pool_max_forward_bn_stats", save_mean, save_invstd);
    BF_TRY(bf_cpu_flex_pool_max_forward(b, ps, s, x, bias, y, window, winners, ties, conv_wins));
    return bf_cpu_batchnorm_forward_train(b, bs, y, NULL, NULL, NULL, save_mean, save_invstd, running_mean, running_var);
}

bf_status bf_cpu_flex_pool_max_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                        const uint32_t *winners, const uint32_t *ties, const float *dy, float *dconv,
                                        float *dpooled) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_backward"));
    REQUIRE("flex_pool_max_backward", winners, ties, dy, dconv);
    float *pool_share = NULL;
    if (dpooled) BF_TRY(bf_cpu_scratch(b, (size_t)s->n * s->c_out * s->hw * sizeof(float), (void **)&pool_share));
    route(b, s, winners, ties, dy, dconv, pool_share);
    if (dpooled) BF_TRY(bf_cpu_flex_widen_backward(b, s, pool_share, dpooled)); /* takes no scratch */
    return BF_OK;
}

/* Scratch of pool_argmax: the int32 argmax, the tapped flags and the window table. */
static size_t pool_argmax_bytes(const bf_pool_shape *ps, const bf_flex_shape *s) {
    return 2 * 64 + (size_t)s->n * s->c_in * s->hw * sizeof(int32_t) + (size_t)s->c_in + window_table_bytes(ps, 0);
}

/* The window bytes as maxpool's int32 argmax (offsets in the input plane), carved off cursor; the
 * planes of untapped channels (bytes never written, dpooled 0 there) point at element 0. */
static int32_t *pool_argmax(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const uint8_t *window,
                            char **cursor) {
    const size_t hw = (size_t)s->hw, np = (size_t)s->n * s->c_in * hw;
    int32_t *argmax = carve(cursor, np * sizeof(int32_t));
    uint8_t *tapped = carve(cursor, (size_t)s->c_in);
    const window_table wt = window_table_carve(ps, cursor, 0);
    mark_tapped(s, tapped);
    const long pooled_planes = (long)s->n * s->c_in;
#pragma omp parallel for num_threads(plane_threads(b, np)) schedule(static)
    for (long q = 0; q < pooled_planes; q++) {
        int32_t *aq = argmax + (size_t)q * hw;
        if (!tapped[q % s->c_in]) {
            memset(aq, 0, hw * sizeof(int32_t));
            continue;
        }
        for (size_t p = 0; p < hw; p++) aq[p] = chosen_offset(&wt, p, window[(size_t)q * hw + p]);
    }
    return argmax;
}

bf_status bf_cpu_flex_pool_max_backward_scatter(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                const uint8_t *window, const uint32_t *winners, const uint32_t *ties,
                                                const float *dy, float *dconv, float *dx, float *dbias) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_max_backward_scatter"));
    REQUIRE("flex_pool_max_backward_scatter", window, winners, ties, dy, dconv, dx);
    if (s->channels != BF_FLEX_CHANNELS_EXPAND)
        return bf_error(BF_ERR_ARG, "flex_pool_max_backward_scatter: EXPAND channels only (BILINEAR mixes two pooled "
                                    "channels per output: flex_pool_max_backward, then flex_pool_scatter_add)");
    const size_t nc = (size_t)s->n * s->c_out * s->hw, np = (size_t)s->n * s->c_in * s->hw;
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, 2 * 64 + (nc + np) * sizeof(float) + pool_argmax_bytes(ps, s), &scratch));
    char *cursor = scratch;
    float *pool_share = carve(&cursor, nc * sizeof(float)), *dpooled = carve(&cursor, np * sizeof(float));
    route(b, s, winners, ties, dy, dconv, pool_share);
    if (dbias) bf_cpu_channel_sum(b, s->n, s->c_out, (size_t)s->hw, dconv, dbias); /* the conv's own sum */
    BF_TRY(bf_cpu_flex_widen_backward(b, s, pool_share, dpooled));
    const int32_t *argmax = pool_argmax(b, ps, s, window, &cursor);
    return bf_cpu_maxpool_backward(b, ps, dpooled, argmax, dx); /* dx from zero, in ascending output order */
}

/* The batch-norm's dx into dconv first (over dz itself, element by element, where dconv is dz), then
 * the route and the scatter from it: the sequence the op stands for, bit for bit. */
bf_status bf_cpu_flex_pool_max_backward_scatter_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                   const bf_bn_grad *bn, const uint8_t *window,
                                                   const uint32_t *winners, const uint32_t *ties, const float *y,
                                                   const float *dz, float *dconv, float *dx, float *dbias) {
    BF_TRY(bf_flex_route_bn_check(ps, s, bn, "flex_pool_max_backward_scatter_bn")); /* before dconv is written */
    REQUIRE("flex_pool_max_backward_scatter_bn", window, winners, ties, y, dz, dconv, dx);
    const bf_bn_shape bs = {.n = s->n, .c = s->c_out, .hw = s->hw, .eps = 1e-5f, .momentum = 0.1f};
    bf_cpu_bn_dx_from_coef(&bs, bn, y, dz, dconv, bf_cpu_threads(b));
    return bf_cpu_flex_pool_max_backward_scatter(b, ps, s, window, winners, ties, dconv, dconv, dx, dbias);
}

/* The batch-norm's dx into dconv, then the route over it in place: the two ops' bits. */
bf_status bf_cpu_flex_pool_max_backward_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                           const bf_bn_grad *bn, const uint32_t *winners, const uint32_t *ties,
                                           const float *y, const float *dz, float *dconv, float *dbias) {
    BF_TRY(bf_flex_route_bn_check(ps, s, bn, "flex_pool_max_backward_bn")); /* before dconv is written */
    REQUIRE("flex_pool_max_backward_bn", winners, ties, y, dz, dconv);
    const bf_bn_shape bs = {.n = s->n, .c = s->c_out, .hw = s->hw, .eps = 1e-5f, .momentum = 0.1f};
    bf_cpu_bn_dx_from_coef(&bs, bn, y, dz, dconv, bf_cpu_threads(b));
    route(b, s, winners, ties, dconv, dconv, NULL);
    if (dbias) bf_cpu_channel_sum(b, s->n, s->c_out, (size_t)s->hw, dconv, dbias); /* the conv's own sum */
    return BF_OK;
}

bf_status bf_cpu_flex_pool_scatter_add(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                       const uint8_t *window, const float *dpooled, float *dx) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_scatter_add"));
    REQUIRE("flex_pool_scatter_add", window, dpooled, dx);
    const size_t nx = (size_t)s->n * s->c_in * ps->h_in * ps->w_in;
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, 64 + nx * sizeof(float) + pool_argmax_bytes(ps, s), &scratch));
    char *cursor = scratch;
    float *dx_pool = carve(&cursor, nx * sizeof(float));
    const int32_t *argmax = pool_argmax(b, ps, s, window, &cursor);
    BF_TRY(bf_cpu_maxpool_backward(b, ps, dpooled, argmax, dx_pool));
#pragma omp parallel for num_threads(plane_threads(b, nx)) schedule(static)
    for (long i = 0; i < (long)nx; i++) dx[i] += dx_pool[i];
    return BF_OK;
}

bf_status bf_cpu_flex_pool_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                   float *pooled, uint8_t *window) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_forward"));
    REQUIRE("flex_pool_forward", x, pooled, window);
    const size_t hw = (size_t)s->hw, np = (size_t)s->n * s->c_in * hw;
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, 64 + np * sizeof(int32_t) + window_table_bytes(ps, 1), &scratch));
    char *cursor = scratch;
    int32_t *argmax = carve(&cursor, np * sizeof(int32_t));
    const window_table wt = window_table_carve(ps, &cursor, 1);
    BF_TRY(bf_cpu_maxpool_forward(b, ps, x, pooled, argmax)); /* argmax given: maxpool takes no scratch */
    const long planes = (long)s->n * s->c_in;
#pragma omp parallel for num_threads(plane_threads(b, np)) schedule(static)
    for (long q = 0; q < planes; q++) window_bytes(ps, &wt, hw, argmax + (size_t)q * hw, window + (size_t)q * hw);
    return BF_OK;
}

bf_status bf_cpu_flex_pool_gather(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                  const uint8_t *window, float *pooled) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, "flex_pool_gather"));
    REQUIRE("flex_pool_gather", x, window, pooled);
    const size_t hw = (size_t)s->hw, in_plane = (size_t)ps->h_in * ps->w_in;
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, window_table_bytes(ps, 0), &scratch));
    char *cursor = scratch;
    const window_table wt = window_table_carve(ps, &cursor, 0);
    const long planes = (long)s->n * s->c_in;
#pragma omp parallel for num_threads(plane_threads(b, (size_t)planes * hw)) schedule(static)
    for (long q = 0; q < planes; q++)
        for (size_t p = 0; p < hw; p++)
            pooled[(size_t)q * hw + p] = x[(size_t)q * in_plane + chosen_offset(&wt, p, window[(size_t)q * hw + p])];
    return BF_OK;
}
