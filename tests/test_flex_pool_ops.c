/* test_flex_pool_ops.c - the fused channel-wise max ops of the CPU backend (ops.h
 * flex_pool_max_forward, flex_pool_max_backward, flex_pool_scatter_add, flex_route_tally (its
 * counts against C > P~ counted from the values); and the mask joint's
 * flex_pool_forward and flex_pool_gather against maxpool_forward) against the op-by-op
 * sequence they replace, which test_flex_ops.c checks against naive references and finite
 * differences: maxpool_forward + flex_max_forward, flex_max_backward, maxpool_backward + add.
 * The contract says bit-identical, so every float is compared by its bits.
 *
 * Cases cover both channel rules (EXPAND by block copy, by tiling, and narrowing; BILINEAR widening
 * and narrowing), both tie rules, the VGG window (3x3, stride 1, pad 1), the fully_flex 2x2/2 window
 * and a 3x3/2 one, on sizes where neither hw nor the element count is a multiple of 32 (so the
 * winners bitmap's last word is partial). Inputs are multiples of 1/8, so ties between the branches
 * are common (each case checks it met some), and one case carries NaNs on both branches. Window
 * bytes of channels that no output channel taps must be left as they were. Under EXPAND the
 * backward also runs with dconv written over dy, which the contract allows.
 *
 * The CUDA kernels (flex_pool.cu) cannot run without a GPU, and the CPU ops compute through
 * the op-by-op sequence, so the kernels' own algorithm is emulated here loop for loop (one
 * iteration per CUDA thread, a warp's ballot as 32 lanes' bits) and must give the same bits too:
 * the window-max scan, EXPAND's walk over pooled planes (a warp's ballot ORed into the one or two
 * words of the bitmap its 32 positions straddle), BILINEAR's walk over output elements (which
 * output channel writes a window byte, a warp's ballot as one word), the route per pooled element
 * over its candidate channels from dy and the winners and ties bits alone, and the gather of the
 * scatter-add that skips zeros, and (EXPAND) the route and scatter in one pass, flex_pool_max_backward_scatter,
 * whose kernel must visit every element of dy exactly once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/kernels/flex_cpu.h" /* taps_of, fold_candidates, widen_at: for the emulation below */
#include "bioflex/ops.h"
#include "testutil.h"

typedef struct pool_case {
    const char *name;
    int n, c_in, c_out, h, w, k, stride, pad;
    bf_flex_channel_rule channels;
    bf_flex_tie_rule ties;
    int nan;
} pool_case;

static const pool_case k_cases[] = {
    {"expand 3->6, 3x3/1", 2, 3, 6, 7, 9, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 0},
    {"expand 3->6, ties to pool", 2, 3, 6, 7, 9, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_POOL, 0},
    {"expand 4->6 (tiling), 3x3/2", 3, 4, 6, 9, 7, 3, 2, 1, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 0},
    {"expand 6->4 (narrowing), 2x2/2", 2, 6, 4, 10, 6, 2, 2, 0, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 0},
    {"expand 5->5, NaNs", 2, 5, 5, 6, 7, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 1},
    {"bilinear 3->8, 3x3/1", 2, 3, 8, 7, 9, 3, 1, 1, BF_FLEX_CHANNELS_BILINEAR, BF_FLEX_TIE_POOL, 0},
    {"bilinear 8->3, 2x2/2", 2, 8, 3, 11, 9, 2, 2, 0, BF_FLEX_CHANNELS_BILINEAR, BF_FLEX_TIE_SPLIT, 0},
    {"bilinear 4->7, NaNs", 1, 4, 7, 5, 6, 3, 1, 1, BF_FLEX_CHANNELS_BILINEAR, BF_FLEX_TIE_SPLIT, 1},
    /* FlexResNet's 1x1 sites: the pool branch is the identity, or a strided subsample */
    {"expand 4->8, 1x1/1", 2, 4, 8, 5, 7, 1, 1, 0, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 0},
    {"expand 6->3 (narrowing), 1x1/2", 3, 6, 3, 9, 7, 1, 2, 0, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_POOL, 0},
    /* planes narrower than the kernel (VGG-16's last block on 32x32 inputs): window bytes by division */
    {"expand 3->6, 3x3/1 on 2x2", 3, 3, 6, 2, 2, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND, BF_FLEX_TIE_SPLIT, 0},
    {"bilinear 3->7, 3x3/1 on 3x1", 4, 3, 7, 3, 1, 3, 1, 1, BF_FLEX_CHANNELS_BILINEAR, BF_FLEX_TIE_POOL, 0},
};

static size_t differing_bits(const float *a, const float *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return bad;
}

/* Whether some output channel's taps (either, any weight) name pooled channel i. */
static int tapped(const bf_flex_shape *s, int i) {
    for (int j = 0; j < s->c_out; j++) {
        if (s->channels == BF_FLEX_CHANNELS_EXPAND) {
            if ((s->c_out % s->c_in == 0 ? j / (s->c_out / s->c_in) : j % s->c_in) == i) return 1;
            continue;
        }
        float src = (float)s->c_in / (float)s->c_out * ((float)j + 0.5f) - 0.5f;
        if (src < 0.0f) src = 0.0f;
        const int i0 = (int)src, i1 = i0 + 1 < s->c_in ? i0 + 1 : s->c_in - 1;
        if (i0 == i || i1 == i) return 1;
    }
    return 0;
}

/* ---- flex_pool.cu's kernels, one loop iteration per CUDA thread ---- */

/* window_max in pool_common.cuh: every place of the window in row-major order, padding skipped. */
static float emu_window_max(const bf_pool_shape *ps, const float *plane, int oh, int ow, uint8_t *place) {
    const int hs = oh * ps->stride - ps->pad, ws = ow * ps->stride - ps->pad;
    float best = 0.0f;
    int at = -1;
    for (int kh = 0; kh < ps->k; kh++) {
        const int ih = hs + kh;
        if (ih < 0 || ih >= ps->h_in) continue;
        for (int kw = 0; kw < ps->k; kw++) {
            const int iw = ws + kw;
            if (iw < 0 || iw >= ps->w_in) continue;
            const float v = plane[(size_t)ih * ps->w_in + iw];
            if (at < 0 || v > best || (v != v && best == best)) {
                best = v;
                at = kh * ps->k + kw;
            }
        }
    }
    *place = (uint8_t)at;
    return best;
}

static size_t emu_window_offset(const bf_pool_shape *ps, int oh, int ow, uint8_t place) {
    return (size_t)(oh * ps->stride - ps->pad + place / ps->k) * ps->w_in + (size_t)(ow * ps->stride - ps->pad + place % ps->k);
}

static int emu_first_tapper(const bf_flex_shape *s, int j, int i) {
    if (j == 0) return 1;
    const flex_taps before = taps_of(s, j - 1);
    return before.i0 != i && before.i1 != i;
}

/* store_winner_bits: a warp's ballot for 32 consecutive positions of one output plane, lane 0's
 * element e, ORed into the one or two words it straddles. */
static void emu_store_bits(uint32_t *winners, size_t e_lane0, uint32_t bits) {
    if (bits == 0) return;
    const unsigned off = (unsigned)(e_lane0 % 32);
    winners[e_lane0 / 32] |= bits << off;
    if (off != 0 && (bits >> (32u - off)) != 0) winners[e_lane0 / 32 + 1] |= bits >> (32u - off);
}

/* k_pool_max_forward_expand: per pooled plane (n, i) and warp of 32 positions, the window maxima,
 * then each tapping channel's plane. The op zeroes the bitmaps first. Returns the strict wins. */
static long emu_forward_expand(const bf_pool_shape *ps, const bf_flex_shape *s, const float *x, float *y,
                               uint8_t *window, uint32_t *winners, uint32_t *ties) {
    const size_t hw = (size_t)s->hw, in_plane = (size_t)ps->h_in * ps->w_in;
    memset(winners, 0, ((size_t)s->n * s->c_out * hw + 31) / 32 * sizeof(uint32_t));
    memset(ties, 0, ((size_t)s->n * s->c_out * hw + 31) / 32 * sizeof(uint32_t));
    long wins = 0;
    float pooled[32];
    for (size_t plane = 0; plane < (size_t)s->n * s->c_in; plane++) {
        const size_t n = plane / s->c_in;
        const int i = (int)(plane % s->c_in);
        int lo, hi, step;
        fold_candidates(s, i, &lo, &hi, &step);
        if (lo >= hi) continue;
        for (size_t p0 = 0; p0 < hw; p0 += 32) {
            for (unsigned lane = 0; lane < 32 && p0 + lane < hw; lane++) {
                const size_t p = p0 + lane;
                pooled[lane] = emu_window_max(ps, x + plane * in_plane, (int)(p / ps->w_out), (int)(p % ps->w_out),
                                              &window[plane * hw + p]);
            }
            for (int j = lo; j < hi; j += step) {
                const size_t base = (n * s->c_out + (size_t)j) * hw;
                uint32_t ballot = 0, tie_ballot = 0;
                for (unsigned lane = 0; lane < 32 && p0 + lane < hw; lane++) {
                    const size_t e = base + p0 + lane;
                    const float c = y[e];
                    y[e] = c > pooled[lane] || c != c ? c : pooled[lane];
                    ballot |= (uint32_t)(c >= pooled[lane]) << lane;
                    tie_ballot |= (uint32_t)(c == pooled[lane]) << lane;
                    wins += c > pooled[lane];
                }
                emu_store_bits(winners, base + p0, ballot);
                emu_store_bits(ties, base + p0, tie_ballot);
            }
        }
    }
    return wins;
}

/* k_pool_max_forward_bilinear: thread e of warp e/32; the ballot is the lanes' bits. Returns the
 * strict wins. */
static long emu_forward_bilinear(const bf_pool_shape *ps, const bf_flex_shape *s, const float *x, float *y,
                                 uint8_t *window, uint32_t *winners, uint32_t *ties) {
    const size_t hw = (size_t)s->hw, in_plane = (size_t)ps->h_in * ps->w_in, total = (size_t)s->n * s->c_out * hw;
    long wins = 0;
    for (size_t e0 = 0; e0 < total; e0 += 32) {
        uint32_t ballot = 0, tie_ballot = 0;
        for (unsigned lane = 0; lane < 32; lane++) {
            const size_t e = e0 + lane;
            if (e >= total) continue;
            const size_t plane = e / hw, p = e % hw, n = plane / s->c_out;
            const int j = (int)(plane % s->c_out), oh = (int)(p / ps->w_out), ow = (int)(p % ps->w_out);
            const flex_taps t = taps_of(s, j);
            const float *xn = x + n * s->c_in * in_plane;
            uint8_t at0, at1;
            const float v0 = emu_window_max(ps, xn + (size_t)t.i0 * in_plane, oh, ow, &at0);
            const float w = t.w0 * v0 + t.w1 * emu_window_max(ps, xn + (size_t)t.i1 * in_plane, oh, ow, &at1);
            if (emu_first_tapper(s, j, t.i0)) window[(n * s->c_in + t.i0) * hw + p] = at0;
            if (t.i1 != t.i0 && emu_first_tapper(s, j, t.i1)) window[(n * s->c_in + t.i1) * hw + p] = at1;
            const float c = y[e];
            y[e] = c > w || c != c ? c : w;
            ballot |= (uint32_t)(c >= w) << lane;
            tie_ballot |= (uint32_t)(c == w) << lane;
            wins += c > w;
        }
        winners[e0 / 32] = ballot;
        ties[e0 / 32] = tie_ballot;
    }
    return wins;
}

/* routed in flex_pool.cu: the conv's share of dy at element e, from its winners and ties bits */
static float emu_routed(float g, const uint32_t *winners, const uint32_t *ties, size_t e, float tie_share) {
    const int win = (winners[e / 32] >> (e % 32)) & 1u, tie = (ties[e / 32] >> (e % 32)) & 1u;
    return win ? (tie ? g * tie_share : g) : 0.0f;
}

/* covering_outputs in pool_common.cuh, both ways: the outputs [oh_lo, oh_hi) x [ow_lo, ow_hi) whose
 * windows contain input element at of a plane. */
static void emu_covering(const bf_pool_shape *ps, size_t at, int *oh_lo, int *oh_hi, int *ow_lo, int *ow_hi) {
    const int h = (int)(at / ps->w_in), w = (int)(at % ps->w_in);
    const int oh_first = h + ps->pad - ps->k + 1, ow_first = w + ps->pad - ps->k + 1;
    *oh_lo = oh_first <= 0 ? 0 : (oh_first + ps->stride - 1) / ps->stride;
    *ow_lo = ow_first <= 0 ? 0 : (ow_first + ps->stride - 1) / ps->stride;
    *oh_hi = (h + ps->pad) / ps->stride + 1;
    *ow_hi = (w + ps->pad) / ps->stride + 1;
    if (*oh_hi > ps->h_out) *oh_hi = ps->h_out;
    if (*ow_hi > ps->w_out) *ow_hi = ps->w_out;
}

/* k_route_expand / k_pool_max_route_bilinear: per pooled element, its candidate channels in
 * ascending order, from dy and the two bits alone (k_route_expand's V positions of a thread are
 * independent elements, so one per iteration here gives the same bits). */
static void emu_route(const bf_flex_shape *s, const uint32_t *winners, const uint32_t *ties, const float *dy,
                      float *dconv, float *dpooled) {
    const size_t hw = (size_t)s->hw;
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    for (size_t idx = 0; idx < (size_t)s->n * s->c_in * hw; idx++) {
        const size_t plane = idx / hw, p = idx % hw, n = plane / s->c_in;
        const int i = (int)(plane % s->c_in);
        int lo, hi, step;
        fold_candidates(s, i, &lo, &hi, &step);
        float acc = 0.0f;
        for (int j = lo; j < hi; j += step) {
            const flex_taps t = taps_of(s, j);
            if (t.i0 != i && t.i1 != i) continue;
            const size_t e = (n * s->c_out + (size_t)j) * hw + p;
            const float g = dy[e];
            const float dc = emu_routed(g, winners, ties, e, tie_share);
            if (t.i0 == i) dconv[e] = dc;
            const float gp = g - dc;
            if (t.i0 == i) acc += t.i1 < 0 ? gp : t.w0 * gp;
            if (t.i1 == i) acc += t.w1 * gp;
        }
        dpooled[idx] = acc;
    }
}

/* k_pool_scatter_add: one thread per input element, its covering windows in ascending order. */
static void emu_scatter_add(const bf_pool_shape *ps, const bf_flex_shape *s, const uint8_t *window,
                            const float *dpooled, float *dx) {
    const size_t in_plane = (size_t)ps->h_in * ps->w_in;
    for (size_t idx = 0; idx < (size_t)s->n * s->c_in * in_plane; idx++) {
        const size_t plane = idx / in_plane, at = idx % in_plane;
        int oh_lo, oh_hi, ow_lo, ow_hi;
        emu_covering(ps, at, &oh_lo, &oh_hi, &ow_lo, &ow_hi);
        float acc = 0.0f;
        for (int oh = oh_lo; oh < oh_hi; oh++)
            for (int ow = ow_lo; ow < ow_hi; ow++) {
                const size_t o = plane * s->hw + (size_t)oh * ps->w_out + ow;
                if (dpooled[o] != 0.0f && emu_window_offset(ps, oh, ow, window[o]) == at) acc += dpooled[o];
            }
        dx[idx] += acc;
    }
}

/* k_route_scatter (EXPAND): one thread per input element, its covering windows in ascending order;
 * where a window's byte chose the element, the window's share from dy and the bits of the channels
 * tapping its plane (ascending), writing their dconv; the sum overwrites dx. visits[e] counts the
 * threads that read dy[e] and wrote dconv[e]: the kernel lets dconv overwrite dy because that is
 * one thread, once, for every element. */
static void emu_route_scatter(const bf_pool_shape *ps, const bf_flex_shape *s, const uint8_t *window,
                              const uint32_t *winners, const uint32_t *ties, const float *dy, float *dconv, float *dx,
                              uint8_t *visits) {
    const size_t in_plane = (size_t)ps->h_in * ps->w_in, hw = (size_t)s->hw;
    const float tie_share = s->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f;
    for (size_t idx = 0; idx < (size_t)s->n * s->c_in * in_plane; idx++) {
        const size_t plane = idx / in_plane, at = idx % in_plane, n = plane / s->c_in;
        const int i = (int)(plane % s->c_in);
        int lo, hi, step;
        fold_candidates(s, i, &lo, &hi, &step);
        float acc = 0.0f;
        if (lo < hi) {
            int oh_lo, oh_hi, ow_lo, ow_hi;
            emu_covering(ps, at, &oh_lo, &oh_hi, &ow_lo, &ow_hi);
            for (int oh = oh_lo; oh < oh_hi; oh++)
                for (int ow = ow_lo; ow < ow_hi; ow++) {
                    const size_t o = (size_t)oh * ps->w_out + ow;
                    if (emu_window_offset(ps, oh, ow, window[plane * hw + o]) != at) continue;
                    float share = 0.0f;
                    for (int j = lo; j < hi; j += step) {
                        const size_t e = (n * s->c_out + (size_t)j) * hw + o;
                        const float g = dy[e];
                        const float dc = emu_routed(g, winners, ties, e, tie_share);
                        share += g - dc;
                        dconv[e] = dc;
                        visits[e]++;
                    }
                    acc += share;
                }
        }
        dx[idx] = acc;
    }
}

/* The emulated kernels from the same inputs: every result with the ops' bits. */
static void check_emulation(const pool_case *pc, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                            const float *conv, const float *dy, const float *y, const uint8_t *window,
                            const uint32_t *winners, const uint32_t *ties, long wins, const float *dconv,
                            const float *dP, const float *dx0, const float *dx) {
    const size_t nx = (size_t)s->n * s->c_in * ps->h_in * ps->w_in, np = (size_t)s->n * s->c_in * s->hw;
    const size_t nc = (size_t)s->n * s->c_out * s->hw, words = (nc + 31) / 32;
    float *ey = bf_test_calloc(nc * sizeof(float)), *edconv = bf_test_calloc(nc * sizeof(float)), *edP = bf_test_calloc(np * sizeof(float));
    float *edx = bf_test_calloc(nx * sizeof(float));
    uint8_t *ewindow = bf_test_calloc(np);
    uint32_t *ewinners = bf_test_calloc(words * sizeof(uint32_t)), *eties = bf_test_calloc(words * sizeof(uint32_t));
    memcpy(ey, conv, nc * sizeof(float));
    memcpy(edx, dx0, nx * sizeof(float));
    memset(ewindow, 0xAB, np);
    memset(ewinners, 0xFF, words * sizeof(uint32_t)); /* every bit must be written */
    memset(eties, 0xFF, words * sizeof(uint32_t));
    const long ewins = s->channels == BF_FLEX_CHANNELS_EXPAND
                           ? emu_forward_expand(ps, s, x, ey, ewindow, ewinners, eties)
                           : emu_forward_bilinear(ps, s, x, ey, ewindow, ewinners, eties);
    emu_route(s, ewinners, eties, dy, edconv, edP);
    emu_scatter_add(ps, s, ewindow, edP, edx);
    const int winners_differ = memcmp(ewinners, winners, words * sizeof(uint32_t)) != 0;
    const int ties_differ = memcmp(eties, ties, words * sizeof(uint32_t)) != 0;
    CHECK(differing_bits(ey, y, nc) == 0 && ewins == wins && !memcmp(ewindow, window, np) && !winners_differ &&
              !ties_differ,
          "%s: the CUDA forward's algorithm differs: y %zu, wins %ld vs %ld, window %d, winners %d, ties %d",
          pc->name, differing_bits(ey, y, nc), ewins, wins, memcmp(ewindow, window, np) != 0, winners_differ,
          ties_differ);
    CHECK(differing_bits(edconv, dconv, nc) == 0 && differing_bits(edP, dP, np) == 0 && differing_bits(edx, dx, nx) == 0,
          "%s: the CUDA backward's algorithm differs: dconv %zu, dpooled %zu, dx %zu elements", pc->name,
          differing_bits(edconv, dconv, nc), differing_bits(edP, dP, np), differing_bits(edx, dx, nx));
    free(ey), free(edconv), free(edP), free(edx), free(ewindow), free(ewinners), free(eties);
}

/* conv2d_backward_filter's bias gradient of the output gradient dconv [n, c_out, hw] (a 1x1 conv
 * over hw x 1 planes: the same channel sum) into dbias, overwritten. */
static void conv_dbias(bf_backend *b, const bf_flex_shape *s, const float *dconv, float *dbias) {
    bf_conv2d_shape cs = {.n = s->n, .c_in = 1, .h_in = s->hw, .w_in = 1, .c_out = s->c_out, .k_h = 1, .k_w = 1,
                          .stride = 1, .pad = 0, .groups = 1};
    CHECK_OK(bf_conv2d_shape_init(&cs));
    float *x = bf_test_calloc((size_t)s->n * s->hw * sizeof(float)), *dw = bf_test_calloc((size_t)s->c_out * sizeof(float));
    CHECK_OK(b->ops->conv2d_backward_filter(b, &cs, x, dconv, dw, dbias));
    free(x), free(dw);
}

/* dbias from a route-and-scatter against conv2d_backward_filter's sum of its dconv: the same bits. */
static void check_route_dbias(bf_backend *b, const pool_case *pc, const bf_flex_shape *s, const float *dconv,
                              const float *dbias, const char *what) {
    float *ref = bf_test_calloc((size_t)s->c_out * sizeof(float));
    conv_dbias(b, s, dconv, ref);
    CHECK(differing_bits(dbias, ref, (size_t)s->c_out) == 0, "%s: %s: %zu of %d bias gradients differ from the conv's",
          pc->name, what, differing_bits(dbias, ref, (size_t)s->c_out), s->c_out);
    free(ref);
}

/* flex_pool_max_backward_scatter (EXPAND) and its CUDA kernel's emulation: dconv as the op-by-op
 * flex_max_backward's, also written over dy, and dx (poisoned first: overwritten) as
 * maxpool_backward of its dpooled from zero, bit for bit; dbias as the conv's sum of dconv. */
static void check_route_scatter(bf_backend *b, const pool_case *pc, const bf_pool_shape *ps, const bf_flex_shape *s,
                                const uint8_t *window, const uint32_t *winners, const uint32_t *ties, const float *dy,
                                const float *dconv_ref, const float *dx_pool_ref) {
    const size_t nx = (size_t)s->n * s->c_in * ps->h_in * ps->w_in, nc = (size_t)s->n * s->c_out * s->hw;
    float *dconv = bf_test_calloc(nc * sizeof(float)), *dx = bf_test_calloc(nx * sizeof(float)), *inplace = bf_test_calloc(nc * sizeof(float));
    float *dx2 = bf_test_calloc(nx * sizeof(float));
    memset(dconv, 0xFF, nc * sizeof(float));
    memset(dx, 0xFF, nx * sizeof(float));
    CHECK_OK(b->ops->flex_pool_max_backward_scatter(b, ps, s, window, winners, ties, dy, dconv, dx, NULL));
    CHECK(differing_bits(dconv, dconv_ref, nc) == 0 && differing_bits(dx, dx_pool_ref, nx) == 0,
          "%s: backward with the scatter: %zu dconv and %zu dx elements differ from flex_max_backward and "
          "maxpool_backward", pc->name, differing_bits(dconv, dconv_ref, nc), differing_bits(dx, dx_pool_ref, nx));
    float *dbias = bf_test_calloc((size_t)s->c_out * sizeof(float));
    memset(dbias, 0xFF, (size_t)s->c_out * sizeof(float));
    CHECK_OK(b->ops->flex_pool_max_backward_scatter(b, ps, s, window, winners, ties, dy, dconv, dx, dbias));
    check_route_dbias(b, pc, s, dconv_ref, dbias, "backward with the scatter and the bias gradient");
    CHECK(differing_bits(dconv, dconv_ref, nc) == 0 && differing_bits(dx, dx_pool_ref, nx) == 0,
          "%s: backward with the scatter and the bias gradient: other dconv or dx", pc->name);
    memcpy(inplace, dy, nc * sizeof(float));
    memset(dx2, 0xFF, nx * sizeof(float));
    memset(dbias, 0xFF, (size_t)s->c_out * sizeof(float));
    CHECK_OK(b->ops->flex_pool_max_backward_scatter(b, ps, s, window, winners, ties, inplace, inplace, dx2, dbias));
    check_route_dbias(b, pc, s, dconv_ref, dbias, "backward with the scatter and the bias gradient, dconv over dy");
    free(dbias);
    CHECK(differing_bits(inplace, dconv_ref, nc) == 0 && differing_bits(dx2, dx_pool_ref, nx) == 0,
          "%s: backward with the scatter, dconv over dy: %zu dconv and %zu dx elements differ", pc->name,
          differing_bits(inplace, dconv_ref, nc), differing_bits(dx2, dx_pool_ref, nx));

    uint8_t *visits = bf_test_calloc(nc);
    memset(dconv, 0xFF, nc * sizeof(float));
    memset(dx, 0xFF, nx * sizeof(float));
    emu_route_scatter(ps, s, window, winners, ties, dy, dconv, dx, visits);
    size_t not_once = 0;
    for (size_t e = 0; e < nc; e++) not_once += visits[e] != 1;
    CHECK(not_once == 0, "%s: k_route_scatter visits %zu of %zu dy elements other than exactly once", pc->name,
          not_once, nc);
    CHECK(differing_bits(dconv, dconv_ref, nc) == 0 && differing_bits(dx, dx_pool_ref, nx) == 0,
          "%s: the CUDA route-and-scatter's algorithm differs: dconv %zu, dx %zu elements", pc->name,
          differing_bits(dconv, dconv_ref, nc), differing_bits(dx, dx_pool_ref, nx));
    free(dconv), free(dx), free(inplace), free(dx2), free(visits);
}

/* flex_pool_max_backward_scatter_bn (EXPAND): with the batch-norm after the layer given by its
 * statistics and batchnorm_backward_sums's coefficients (with and without its ReLU), dconv (also
 * written over dz) and dx bit for bit the batch-norm's whole backward (batchnorm_backward or
 * batchnorm_relu_backward: its dx, dgamma, dbeta) then flex_pool_max_backward_scatter. y: the batch-
 * norm's input (the flex output); dz: its output gradient. */
static void check_route_scatter_bn(bf_backend *b, const pool_case *pc, const bf_pool_shape *ps, const bf_flex_shape *s,
                                   const uint8_t *window, const uint32_t *winners, const uint32_t *ties,
                                   const float *y, const float *dz) {
    const size_t nx = (size_t)s->n * s->c_in * ps->h_in * ps->w_in, nc = (size_t)s->n * s->c_out * s->hw;
    const int c = s->c_out;
    const bf_bn_shape bs = {.n = s->n, .c = c, .hw = s->hw, .eps = 1e-5f, .momentum = 0.1f};
    float *stats = bf_test_eighths(4 * (size_t)c, -1.0f, 9, 41); /* mean, invstd, gamma, beta */
    for (int k = 0; k < c; k++) stats[c + k] = 0.5f + 0.125f * (float)(k % 7); /* invstd > 0 */
    const float *mean = stats, *invstd = stats + c, *gamma = stats + 2 * c, *beta = stats + 3 * c;
    float *dbn = bf_test_calloc(nc * sizeof(float)), *dconv_ref = bf_test_calloc(nc * sizeof(float)), *dx_ref = bf_test_calloc(nx * sizeof(float));
    float *dconv = bf_test_calloc(nc * sizeof(float)), *dx = bf_test_calloc(nx * sizeof(float)), *coef = bf_test_calloc(2 * (size_t)c * sizeof(float));
    float *g_ref = bf_test_calloc(2 * (size_t)c * sizeof(float)), *g = bf_test_calloc(2 * (size_t)c * sizeof(float));
    for (int relu = 0; relu < 2; relu++) {
        if (relu)
            CHECK_OK(b->ops->batchnorm_relu_backward(b, &bs, y, dz, gamma, beta, mean, invstd, dbn, g_ref, g_ref + c));
        else
            CHECK_OK(b->ops->batchnorm_backward(b, &bs, y, dz, gamma, mean, invstd, dbn, g_ref, g_ref + c));
        CHECK_OK(b->ops->flex_pool_max_backward_scatter(b, ps, s, window, winners, ties, dbn, dconv_ref, dx_ref, NULL));
        memset(g, 0xFF, 2 * (size_t)c * sizeof(float));
        CHECK_OK(b->ops->batchnorm_backward_sums(b, &bs, relu, y, dz, gamma, beta, mean, invstd, g, g + c, coef));
        const bf_bn_grad bn = {relu, mean, invstd, gamma, beta, coef};
        memset(dconv, 0xFF, nc * sizeof(float));
        memset(dx, 0xFF, nx * sizeof(float));
        CHECK_OK(b->ops->flex_pool_max_backward_scatter_bn(b, ps, s, &bn, window, winners, ties, y, dz, dconv, dx, NULL));
        CHECK(differing_bits(g, g_ref, 2 * (size_t)c) == 0 && differing_bits(dconv, dconv_ref, nc) == 0 &&
                  differing_bits(dx, dx_ref, nx) == 0,
              "%s: the batch-norm%s dx applied in the scatter: dgamma/dbeta %zu, dconv %zu, dx %zu elements differ "
              "from its whole backward then the scatter", pc->name, relu ? " + ReLU" : "",
              differing_bits(g, g_ref, 2 * (size_t)c), differing_bits(dconv, dconv_ref, nc), differing_bits(dx, dx_ref, nx));
        memcpy(dconv, dz, nc * sizeof(float)); /* dconv written over dz, and the bias gradient */
        float *dbias = bf_test_calloc((size_t)c * sizeof(float));
        memset(dbias, 0xFF, (size_t)c * sizeof(float));
        CHECK_OK(b->ops->flex_pool_max_backward_scatter_bn(b, ps, s, &bn, window, winners, ties, y, dconv, dconv, dx, dbias));
        check_route_dbias(b, pc, s, dconv_ref, dbias, relu ? "the batch-norm + ReLU's dx applied, the bias gradient"
                                                           : "the batch-norm's dx applied, the bias gradient");
        free(dbias);
        /* the route alone (no input gradient): dconv as the batch-norm's dx then flex_pool_max_backward */
        float *dconv_route = bf_test_calloc(nc * sizeof(float));
        CHECK_OK(b->ops->flex_pool_max_backward(b, ps, s, winners, ties, dbn, dconv_route, NULL));
        memset(dconv, 0xFF, nc * sizeof(float));
        CHECK_OK(b->ops->flex_pool_max_backward_bn(b, ps, s, &bn, winners, ties, y, dz, dconv, NULL));
        CHECK(differing_bits(dconv, dconv_route, nc) == 0 && differing_bits(dconv_route, dconv_ref, nc) == 0,
              "%s: the batch-norm%s dx applied in the route alone: %zu dconv elements differ", pc->name,
              relu ? " + ReLU" : "", differing_bits(dconv, dconv_route, nc));
        memcpy(dconv, dz, nc * sizeof(float));
        float *dbias_route = bf_test_calloc((size_t)c * sizeof(float));
        CHECK_OK(b->ops->flex_pool_max_backward_bn(b, ps, s, &bn, winners, ties, y, dconv, dconv, dbias_route));
        CHECK(differing_bits(dconv, dconv_route, nc) == 0, "%s: the route alone, dconv over dz: other bits", pc->name);
        check_route_dbias(b, pc, s, dconv_route, dbias_route, "the route alone, the bias gradient");
        free(dbias_route);
        free(dconv_route);
        CHECK(differing_bits(dconv, dconv_ref, nc) == 0 && differing_bits(dx, dx_ref, nx) == 0,
              "%s: the batch-norm%s dx applied in the scatter, dconv over dz: other bits", pc->name,
              relu ? " + ReLU" : "");
    }
    free(stats), free(dbn), free(dconv_ref), free(dx_ref), free(dconv), free(dx), free(coef), free(g_ref), free(g);
}

static void run_case(bf_backend *b, const pool_case *pc) {
    bf_pool_shape ps = {.n = pc->n, .c = pc->c_in, .h_in = pc->h, .w_in = pc->w, .k = pc->k, .stride = pc->stride,
                        .pad = pc->pad};
    CHECK_OK(bf_pool_shape_init(&ps));
    const int hw = ps.h_out * ps.w_out;
    bf_flex_shape s = {.n = pc->n, .c_in = pc->c_in, .c_out = pc->c_out, .hw = hw, .channels = pc->channels,
                       .ties = pc->ties};
    const size_t nx = (size_t)pc->n * pc->c_in * pc->h * pc->w, np = (size_t)pc->n * pc->c_in * hw;
    const size_t nc = (size_t)pc->n * pc->c_out * hw, words = (nc + 31) / 32;
    CHECK(nc % 32 != 0, "%s: the element count %zu leaves a partial last word", pc->name, nc);
    float *x = bf_test_eighths(nx, -1.0f, 17, 11), *conv = bf_test_eighths(nc, -1.0f, 21, 12), *dy = bf_test_eighths(nc, -2.0f, 33, 13);
    if (pc->nan) {
        x[5] = NAN;            /* a window holding a NaN pools to NaN, and so does its widening */
        conv[nc / 2] = NAN;    /* a NaN conv response wins */
        conv[nc / 3] = -NAN;
    }

    /* the op-by-op sequence */
    float *P = bf_test_calloc(np * sizeof(float)), *widened = bf_test_calloc(nc * sizeof(float)), *y_ref = bf_test_calloc(nc * sizeof(float));
    int32_t *argmax = bf_test_calloc(np * sizeof(int32_t));
    float wins_ref = 5.0f;
    CHECK_OK(b->ops->maxpool_forward(b, &ps, x, P, argmax));
    CHECK_OK(b->ops->flex_widen_forward(b, &s, P, widened));
    CHECK_OK(b->ops->flex_max_forward(b, &s, conv, P, y_ref, &wins_ref));
    float *dconv_ref = bf_test_calloc(nc * sizeof(float)), *dP_ref = bf_test_calloc(np * sizeof(float));
    CHECK_OK(b->ops->flex_max_backward(b, &s, conv, P, dy, dconv_ref, dP_ref));
    float *dx_ref = bf_test_eighths(nx, -1.0f, 16, 14), *dx_pool = bf_test_calloc(nx * sizeof(float));
    float *dx = bf_test_calloc(nx * sizeof(float)), *dx0 = bf_test_calloc(nx * sizeof(float));
    memcpy(dx, dx_ref, nx * sizeof(float));
    memcpy(dx0, dx_ref, nx * sizeof(float));
    CHECK_OK(b->ops->maxpool_backward(b, &ps, dP_ref, argmax, dx_pool));
    for (size_t i = 0; i < nx; i++) dx_ref[i] += dx_pool[i];

    /* fused forward: y starts as C */
    float *y = bf_test_calloc(nc * sizeof(float)), wins = 5.0f;
    memcpy(y, conv, nc * sizeof(float));
    uint8_t *window = bf_test_calloc(np);
    uint32_t *winners = bf_test_calloc(words * sizeof(uint32_t)), *tie_bits = bf_test_calloc(words * sizeof(uint32_t));
    memset(window, 0xAB, np);
    memset(winners, 0xFF, words * sizeof(uint32_t));
    memset(tie_bits, 0xFF, words * sizeof(uint32_t));
    CHECK_OK(b->ops->flex_pool_max_forward(b, &ps, &s, x, NULL, y, window, winners, tie_bits, &wins));
    CHECK(differing_bits(y, y_ref, nc) == 0, "%s: y differs from maxpool + flex_max_forward in %zu of %zu elements",
          pc->name, differing_bits(y, y_ref, nc), nc);
    CHECK(wins == wins_ref && wins > 5.0f, "%s: conv_wins %g, op by op %g", pc->name, wins, wins_ref);
    if (!pc->nan) { /* flex_route_tally from the bits: where C > P~ strictly, per element and per sample */
        const size_t per = (size_t)pc->c_out * hw;
        uint32_t *elements = bf_test_calloc(per * sizeof(uint32_t)), *samples = bf_test_calloc((size_t)pc->n * sizeof(uint32_t));
        for (size_t j = 0; j < per; j++) elements[j] = (uint32_t)(j % 3); /* the op adds to what is there */
        CHECK_OK(b->ops->flex_route_tally(b, pc->n, per, winners, tie_bits, elements, samples));
        size_t bad = 0, won = 0;
        for (size_t j = 0; j < per; j++) {
            uint32_t want = (uint32_t)(j % 3);
            for (int i = 0; i < pc->n; i++) want += conv[(size_t)i * per + j] > widened[(size_t)i * per + j];
            bad += elements[j] != want;
        }
        for (int i = 0; i < pc->n; i++) {
            uint32_t want = 0;
            for (size_t j = 0; j < per; j++) want += conv[(size_t)i * per + j] > widened[(size_t)i * per + j];
            bad += samples[i] != want;
            won += want;
        }
        CHECK(bad == 0 && won > 0 && won < (size_t)pc->n * per, "%s: flex_route_tally: %zu counts differ from C > P~ "
              "(%zu strict wins)", pc->name, bad, won);
        free(elements), free(samples);
    }
    { /* the conv's bias folded in (bias[j] added to C as it is read): the op on C + bias without it, bit for bit */
        float *bias = bf_test_calloc((size_t)pc->c_out * sizeof(float)), *yb = bf_test_calloc(nc * sizeof(float));
        float *yb_ref = bf_test_calloc(nc * sizeof(float)), wins_b = 0.0f, wins_b_ref = 0.0f;
        uint8_t *wb = bf_test_calloc(np), *wb_ref = bf_test_calloc(np);
        uint32_t *bits = bf_test_calloc(4 * words * sizeof(uint32_t)), *bits_ref = bits + 2 * words;
        for (int j = 0; j < pc->c_out; j++) bias[j] = j == 0 ? -0.0f : (float)(j % 5 - 2) / 8.0f;
        for (size_t e = 0; e < nc; e++) {
            yb[e] = conv[e];
            yb_ref[e] = conv[e] + bias[(e / (size_t)hw) % (size_t)pc->c_out];
        }
        CHECK_OK(b->ops->flex_pool_max_forward(b, &ps, &s, x, NULL, yb_ref, wb_ref, bits_ref, bits_ref + words,
                                               &wins_b_ref));
        CHECK_OK(b->ops->flex_pool_max_forward(b, &ps, &s, x, bias, yb, wb, bits, bits + words, &wins_b));
        const size_t bad = differing_bits(yb, yb_ref, nc) + (memcmp(bits, bits_ref, 2 * words * sizeof(uint32_t)) != 0) +
                           (memcmp(wb, wb_ref, np) != 0) + (wins_b != wins_b_ref);
        CHECK(bad == 0 && differing_bits(yb, y, nc) > 0, "%s: with the bias: %zu outputs differ from the op on C + bias",
              pc->name, bad);
        free(bias), free(yb), free(yb_ref), free(wb), free(wb_ref), free(bits);
    }

    size_t bad_bits = 0, bad_tie_bits = 0, ties = 0, bad_window = 0, untapped = 0;
    for (size_t e = 0; e < words * 32; e++) {
        const int bit = (int)((winners[e / 32] >> (e % 32)) & 1u), tie_bit = (int)((tie_bits[e / 32] >> (e % 32)) & 1u);
        bad_bits += bit != (e < nc && conv[e] >= widened[e]);
        bad_tie_bits += tie_bit != (e < nc && conv[e] == widened[e]);
        ties += e < nc && conv[e] == widened[e];
    }
    for (size_t q = 0; q < (size_t)pc->n * pc->c_in; q++) {
        const int is_tapped = tapped(&s, (int)(q % pc->c_in));
        untapped += !is_tapped;
        for (int p = 0; p < hw; p++) {
            const uint8_t byte = window[q * hw + p];
            if (!is_tapped) {
                bad_window += byte != 0xAB;
                continue;
            }
            const int oh = p / ps.w_out, ow = p % ps.w_out;
            const int ih = oh * ps.stride - ps.pad + byte / ps.k, iw = ow * ps.stride - ps.pad + byte % ps.k;
            bad_window += byte >= ps.k * ps.k || ih * ps.w_in + iw != argmax[q * hw + p];
        }
    }
    CHECK(bad_bits == 0, "%s: %zu winner bits differ from C >= P~ (spare bits must be 0)", pc->name, bad_bits);
    CHECK(bad_tie_bits == 0, "%s: %zu tie bits differ from C == P~ (spare bits must be 0)", pc->name, bad_tie_bits);
    /* (narrowing by interpolation weighs with fractions like 5/6, so its P~ are never multiples of 1/8) */
    const int interpolates = pc->channels == BF_FLEX_CHANNELS_BILINEAR && pc->c_in > pc->c_out;
    CHECK(pc->nan || interpolates || ties > 0, "%s: the data makes ties (%zu)", pc->name, ties);
    CHECK(bad_window == 0, "%s: %zu window bytes disagree with maxpool's argmax (or touched an untapped channel)",
          pc->name, bad_window);

    /* fused backward, with and without the pool share */
    float *dconv = bf_test_calloc(nc * sizeof(float)), *dP = bf_test_calloc(np * sizeof(float)), *dconv_only = bf_test_calloc(nc * sizeof(float));
    memset(dP, 0xFF, np * sizeof(float));
    CHECK_OK(b->ops->flex_pool_max_backward(b, &ps, &s, winners, tie_bits, dy, dconv, dP));
    CHECK_OK(b->ops->flex_pool_max_backward(b, &ps, &s, winners, tie_bits, dy, dconv_only, NULL));
    CHECK(differing_bits(dconv, dconv_ref, nc) == 0, "%s: dconv differs from flex_max_backward in %zu elements",
          pc->name, differing_bits(dconv, dconv_ref, nc));
    CHECK(differing_bits(dconv_only, dconv_ref, nc) == 0, "%s: dconv without dpooled differs in %zu elements",
          pc->name, differing_bits(dconv_only, dconv_ref, nc));
    CHECK(differing_bits(dP, dP_ref, np) == 0, "%s: dpooled differs from flex_max_backward in %zu elements", pc->name,
          differing_bits(dP, dP_ref, np));
    if (pc->channels == BF_FLEX_CHANNELS_EXPAND) { /* dconv may overwrite dy there */
        float *inplace = bf_test_calloc(nc * sizeof(float)), *dP2 = bf_test_calloc(np * sizeof(float));
        memcpy(inplace, dy, nc * sizeof(float));
        CHECK_OK(b->ops->flex_pool_max_backward(b, &ps, &s, winners, tie_bits, inplace, inplace, dP2));
        CHECK(differing_bits(inplace, dconv_ref, nc) == 0 && differing_bits(dP2, dP_ref, np) == 0,
              "%s: dconv written over dy: %zu dconv and %zu dpooled elements differ", pc->name,
              differing_bits(inplace, dconv_ref, nc), differing_bits(dP2, dP_ref, np));
        free(inplace), free(dP2);
    }
    CHECK_OK(b->ops->flex_pool_scatter_add(b, &ps, &s, window, dP, dx));
    CHECK(differing_bits(dx, dx_ref, nx) == 0, "%s: dx + scatter differs from dx + maxpool_backward in %zu elements",
          pc->name, differing_bits(dx, dx_ref, nx));
    check_emulation(pc, &ps, &s, x, conv, dy, y, window, winners, tie_bits, (long)(wins - 5.0f), dconv, dP, dx0, dx);
    if (pc->channels == BF_FLEX_CHANNELS_EXPAND)
        check_route_scatter(b, pc, &ps, &s, window, winners, tie_bits, dy, dconv_ref, dx_pool);
    if (pc->channels == BF_FLEX_CHANNELS_EXPAND && !pc->nan) /* a NaN in y makes every batch-norm sum NaN */
        check_route_scatter_bn(b, pc, &ps, &s, window, winners, tie_bits, y, dy);

    /* the mask joint's pool branch: maxpool's P, a byte for every channel, and P read back */
    float *P2 = bf_test_calloc(np * sizeof(float)), *P3 = bf_test_calloc(np * sizeof(float));
    uint8_t *all_windows = bf_test_calloc(np);
    size_t bad_bytes = 0;
    CHECK_OK(b->ops->flex_pool_forward(b, &ps, &s, x, P2, all_windows));
    CHECK_OK(b->ops->flex_pool_gather(b, &ps, &s, x, all_windows, P3));
    for (size_t q = 0; q < np; q++) {
        const int p = (int)(q % hw), oh = p / ps.w_out, ow = p % ps.w_out;
        const int ih = oh * ps.stride - ps.pad + all_windows[q] / ps.k, iw = ow * ps.stride - ps.pad + all_windows[q] % ps.k;
        bad_bytes += ih * ps.w_in + iw != argmax[q];
    }
    CHECK(differing_bits(P2, P, np) == 0 && differing_bits(P3, P, np) == 0 && bad_bytes == 0,
          "%s: flex_pool_forward / gather against maxpool_forward: P %zu, P again %zu, window bytes %zu differ",
          pc->name, differing_bits(P2, P, np), differing_bits(P3, P, np), bad_bytes);
    free(P2), free(P3), free(all_windows);
    printf("%-32s %6zu elements, %5zu ties, %zu untapped pooled planes: bit-identical\n", pc->name, nc, ties, untapped);

    free(x), free(conv), free(dy), free(P), free(widened), free(y_ref), free(argmax), free(dconv_ref), free(dP_ref);
    free(dx_ref), free(dx_pool), free(dx), free(dx0), free(y), free(window), free(winners), free(tie_bits), free(dconv), free(dP),
        free(dconv_only);
}

static void test_refusals(bf_backend *b) {
    bf_pool_shape ps = {.n = 1, .c = 2, .h_in = 6, .w_in = 6, .k = 3, .stride = 1, .pad = 1};
    CHECK_OK(bf_pool_shape_init(&ps));
    bf_flex_shape s = {.n = 1, .c_in = 2, .c_out = 4, .hw = 36, .channels = BF_FLEX_CHANNELS_EXPAND,
                       .ties = BF_FLEX_TIE_SPLIT};
    float x[72] = {0}, y[144] = {0}, dx[72] = {0};
    uint8_t window[72];
    uint32_t winners[5], tie_bits[5];
    CHECK_OK(b->ops->flex_pool_max_forward(b, &ps, &s, x, NULL, y, window, winners, tie_bits, NULL));
    bf_pool_shape wrong_c = ps, wide = ps;
    wrong_c.c = 3;
    wide.k = 16, wide.pad = 0, wide.h_in = wide.w_in = 21;
    CHECK_OK(bf_pool_shape_init(&wide));
    CHECK(b->ops->flex_pool_max_forward(b, &wrong_c, &s, x, NULL, y, window, winners, tie_bits, NULL) == BF_ERR_ARG &&
              strstr(bf_last_error(), "flex_pool_max_forward") && strstr(bf_last_error(), "c_in=2"),
          "a pool of 3 channels under a flex of 2 is refused, naming the op and shapes: %s", bf_last_error());
    CHECK(b->ops->flex_pool_max_backward(b, &wide, &s, winners, tie_bits, y, y, NULL) == BF_ERR_ARG,
          "a 16x16 window (256 places, more than a byte) is refused: %s", bf_last_error());
    CHECK(b->ops->flex_pool_max_backward(b, &ps, &s, winners, NULL, y, y, NULL) == BF_ERR_ARG &&
              strstr(bf_last_error(), "flex_pool_max_backward"),
          "a NULL ties bitmap is refused, naming the op: %s", bf_last_error());
    CHECK(b->ops->flex_pool_scatter_add(b, &ps, &s, window, NULL, dx) == BF_ERR_ARG, "a NULL dpooled is refused");
    CHECK(b->ops->flex_pool_max_backward_scatter(b, &ps, &s, window, winners, tie_bits, y, y, NULL, NULL) == BF_ERR_ARG &&
              strstr(bf_last_error(), "flex_pool_max_backward_scatter"),
          "a NULL dx is refused, naming the op: %s", bf_last_error());
    bf_flex_shape bilinear = s;
    bilinear.channels = BF_FLEX_CHANNELS_BILINEAR;
    CHECK(b->ops->flex_pool_max_backward_scatter(b, &ps, &bilinear, window, winners, tie_bits, y, y, dx, NULL) == BF_ERR_ARG &&
              strstr(bf_last_error(), "EXPAND"),
          "BILINEAR is refused by the backward with the scatter: %s", bf_last_error());
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) run_case(b, &k_cases[i]);
    test_refusals(b);
    bf_backend_destroy(b);
    return bf_test_finish();
}
