/* test_flex_bn_stats.c - flex_pool_max_forward_bn_stats ([model] fuse_flex_bn_stats): the flex
 * forward that also takes the next batch-norm's training statistics.
 *
 * 1. The CPU op against the two ops it stands for, flex_pool_max_forward then
 *    batchnorm_forward_train with y NULL: every output by its bits (y, window bytes, both bitmaps,
 *    conv wins, saved and running statistics), both channel rules, with NaNs; and its refusals.
 * 2. The CUDA kernel (flex_pool.cu, k_pool_max_forward_expand<STATS>) cannot run here, so its walk
 *    is emulated loop for loop (one iteration per thread; a warp's shuffle sum as 32 lanes) on the
 *    shapes of VGG-16's flex layers and on small ones: the grid of stats_launch_of, each block's
 *    position tiles, a warp's sum per tap added by lane 0 to the warp's slot, the warps' slots into
 *    the partial of (channel, n * grid.y + tile). Every partial must be written by exactly one block,
 *    and k_fold_chunks's warp sums of them, finished as k_bn_stats_final finishes them, must give the
 *    CPU's statistics to rounding (the same
 *    double terms in another order; the GPU's variance is E[y^2] - mean^2, the CPU's two-pass). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/kernels/flex_cpu.h" /* fold_candidates: for the emulation */
#include "bioflex/ops.h"
#include "testutil.h"

static size_t differing_bits(const void *a, const void *b, size_t bytes) {
    const unsigned char *p = a, *q = b;
    size_t d = 0;
    for (size_t i = 0; i < bytes; i++) d += p[i] != q[i];
    return d;
}

typedef struct stats_case {
    const char *name;
    int n, c_in, c_out, h, w, k, stride, pad;
    bf_flex_channel_rule channels;
    int nan;
} stats_case;

/* 1. the op against flex_pool_max_forward + batchnorm_forward_train(y NULL), bit for bit */
static void check_op(bf_backend *b, const stats_case *sc) {
    bf_pool_shape ps = {.n = sc->n, .c = sc->c_in, .h_in = sc->h, .w_in = sc->w, .k = sc->k, .stride = sc->stride,
                        .pad = sc->pad};
    CHECK_OK(bf_pool_shape_init(&ps));
    const int hw = ps.h_out * ps.w_out, c = sc->c_out;
    const bf_flex_shape s = {.n = sc->n, .c_in = sc->c_in, .c_out = c, .hw = hw, .channels = sc->channels,
                             .ties = BF_FLEX_TIE_SPLIT};
    const bf_bn_shape bs = {.n = sc->n, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    const size_t nx = (size_t)sc->n * sc->c_in * sc->h * sc->w, np = (size_t)sc->n * sc->c_in * hw;
    const size_t nc = (size_t)sc->n * c * hw, words = (nc + 31) / 32;
    float *x = bf_test_eighths(nx, -1.0f, 17, 21), *conv = bf_test_eighths(nc, -1.0f, 21, 22);
    if (sc->nan) x[3] = NAN, conv[nc / 2] = NAN;
    float *y_ref = bf_test_calloc(nc * sizeof(float)), *y = bf_test_calloc(nc * sizeof(float));
    uint8_t *win_ref = bf_test_calloc(np), *win = bf_test_calloc(np);
    uint32_t *bits_ref = bf_test_calloc(2 * words * sizeof(uint32_t)), *bits = bf_test_calloc(2 * words * sizeof(uint32_t));
    float *stats_ref = bf_test_eighths(4 * (size_t)c, 0.5f, 9, 23), *stats = bf_test_calloc(4 * (size_t)c * sizeof(float));
    memcpy(stats, stats_ref, 4 * (size_t)c * sizeof(float)); /* the running statistics start equal */
    memcpy(y_ref, conv, nc * sizeof(float));
    memcpy(y, conv, nc * sizeof(float));
    memset(win_ref, 0xAB, np);
    memset(win, 0xAB, np);
    float wins_ref = 3.0f, wins = 3.0f;
    CHECK_OK(b->ops->flex_pool_max_forward(b, &ps, &s, x, NULL, y_ref, win_ref, bits_ref, bits_ref + words, &wins_ref));
    CHECK_OK(b->ops->batchnorm_forward_train(b, &bs, y_ref, NULL, NULL, NULL, stats_ref, stats_ref + c,
                                             stats_ref + 2 * c, stats_ref + 3 * c));
    CHECK_OK(b->ops->flex_pool_max_forward_bn_stats(b, &ps, &s, &bs, x, NULL, y, win, bits, bits + words, &wins, stats,
                                                    stats + c, stats + 2 * c, stats + 3 * c));
    const size_t d_y = differing_bits(y, y_ref, nc * sizeof(float)), d_w = differing_bits(win, win_ref, np);
    const size_t d_b = differing_bits(bits, bits_ref, 2 * words * sizeof(uint32_t));
    const size_t d_s = differing_bits(stats, stats_ref, 4 * (size_t)c * sizeof(float));
    CHECK(d_y == 0 && d_w == 0 && d_b == 0 && d_s == 0 && wins == wins_ref,
          "%s: the op against flex_pool_max_forward + batchnorm_forward_train: y %zu, window %zu, bitmap %zu, "
          "statistics %zu bytes differ; conv wins %g vs %g", sc->name, d_y, d_w, d_b, d_s, wins, wins_ref);
    CHECK(sc->nan || (isfinite(stats[0]) && stats[c] > 0.0f), "%s: finite statistics (mean %g, invstd %g)", sc->name,
          stats[0], stats[c]);
    /* without the running statistics and conv wins (both nullable) */
    memcpy(y, conv, nc * sizeof(float));
    CHECK_OK(b->ops->flex_pool_max_forward_bn_stats(b, &ps, &s, &bs, x, NULL, y, win, bits, bits + words, NULL, stats,
                                                    stats + c, NULL, NULL));
    CHECK(differing_bits(stats, stats_ref, 2 * (size_t)c * sizeof(float)) == 0,
          "%s: the saved statistics again without running statistics", sc->name);
    printf("%-36s %7zu elements: bit-identical to the two ops\n", sc->name, nc);
    free(x), free(conv), free(y_ref), free(y), free(win_ref), free(win), free(bits_ref), free(bits), free(stats_ref);
    free(stats);
}

static void test_refusals(bf_backend *b) {
    bf_pool_shape ps = {.n = 2, .c = 2, .h_in = 5, .w_in = 5, .k = 3, .stride = 1, .pad = 1};
    CHECK_OK(bf_pool_shape_init(&ps));
    const bf_flex_shape s = {.n = 2, .c_in = 2, .c_out = 4, .hw = 25, .channels = BF_FLEX_CHANNELS_EXPAND,
                             .ties = BF_FLEX_TIE_SPLIT};
    float x[100] = {0}, y[200] = {0}, st[16] = {0};
    uint8_t window[100];
    uint32_t winners[7], ties[7];
    bf_bn_shape bs = {.n = 2, .c = 4, .hw = 25, .eps = 1e-5f, .momentum = 0.1f};
    CHECK_OK(b->ops->flex_pool_max_forward_bn_stats(b, &ps, &s, &bs, x, NULL, y, window, winners, ties, NULL, st, st + 4,
                                                    st + 8, st + 12));
    bf_bn_shape wrong = bs;
    wrong.c = 2;
    CHECK(b->ops->flex_pool_max_forward_bn_stats(b, &ps, &s, &wrong, x, NULL, y, window, winners, ties, NULL, st, st + 4,
                                                 NULL, NULL) == BF_ERR_ARG &&
              strstr(bf_last_error(), "flex_pool_max_forward_bn_stats") && strstr(bf_last_error(), "c_out=4"),
          "a batch-norm of 2 channels over a flex output of 4 is refused, naming the op and both shapes: %s",
          bf_last_error());
    CHECK(b->ops->flex_pool_max_forward_bn_stats(b, &ps, &s, &bs, x, NULL, y, window, winners, ties, NULL, NULL, st + 4,
                                                 NULL, NULL) == BF_ERR_ARG &&
              strstr(bf_last_error(), "flex_pool_max_forward_bn_stats"),
          "a NULL save_mean is refused, naming the op: %s", bf_last_error());
    /* one value per channel: the unbiased running variance is undefined (batchnorm_forward_train) */
    bf_pool_shape one = {.n = 1, .c = 2, .h_in = 1, .w_in = 1, .k = 3, .stride = 1, .pad = 1};
    CHECK_OK(bf_pool_shape_init(&one));
    const bf_flex_shape s1 = {.n = 1, .c_in = 2, .c_out = 4, .hw = 1, .channels = BF_FLEX_CHANNELS_EXPAND,
                              .ties = BF_FLEX_TIE_SPLIT};
    const bf_bn_shape bs1 = {.n = 1, .c = 4, .hw = 1, .eps = 1e-5f, .momentum = 0.1f};
    CHECK(b->ops->flex_pool_max_forward_bn_stats(b, &one, &s1, &bs1, x, NULL, y, window, winners, ties, NULL, st, st + 4,
                                                 NULL, NULL) == BF_ERR_ARG,
          "one value per channel is refused: %s", bf_last_error());
}

/* ---- 2. the CUDA kernel's walk ----
 * Mirrors of flex_pool.cu's launch (plane_launch_of in pool_common.cuh; STATS_BLOCKS, stats_launch_of):
 * a change there belongs here too. */
enum { EMU_STATS_BLOCKS = 4096 };

static void emu_stats_launch(const bf_flex_shape *s, unsigned *threads, unsigned *grid_y) {
    const size_t hw = (size_t)s->hw, planes = (size_t)s->n * s->c_in;
    size_t t = (hw + 31) / 32 * 32;
    *threads = (unsigned)(t > 256 ? 256 : t < 32 ? 32 : t);
    size_t tiles = (hw + *threads - 1) / *threads;
    tiles = tiles > 65535 ? 65535 : tiles < 1 ? 1 : tiles;
    const size_t want = (EMU_STATS_BLOCKS + planes - 1) / planes;
    *grid_y = (unsigned)(tiles > want ? want : tiles);
}

/* bf_warp_sum as lane 0 gets it: v += shfl_down(v, off) for off = 16..1, a lane past 31 reading its own. */
static double emu_warp_sum(const double *lanes) {
    double v[32];
    memcpy(v, lanes, sizeof v);
    for (int off = 16; off > 0; off >>= 1) {
        double nv[32];
        for (int l = 0; l < 32; l++) nv[l] = v[l] + (l + off < 32 ? v[l + off] : v[l]);
        memcpy(v, nv, sizeof v);
    }
    return v[0];
}

/* k_pool_max_forward_expand<STATS>'s sums of y (the values the kernel writes) into partial
 * [c_out][chunks][2]; writes[c_out * chunks] counts each partial's writers. Returns chunks. */
static unsigned emu_stats_partials(const bf_flex_shape *s, const float *y, double **partial_out, int **writes_out) {
    unsigned threads, grid_y;
    emu_stats_launch(s, &threads, &grid_y);
    const unsigned warps = threads / 32, chunks = (unsigned)s->n * grid_y;
    const int taps_max = (s->c_out + s->c_in - 1) / s->c_in;
    double *partial = bf_test_calloc((size_t)s->c_out * chunks * 2 * sizeof(double));
    int *writes = bf_test_calloc((size_t)s->c_out * chunks * sizeof(int));
    double *slots = bf_test_calloc((size_t)warps * taps_max * 2 * sizeof(double)); /* tap_sums[warp][tap][2] */
    for (size_t plane = 0; plane < (size_t)s->n * s->c_in; plane++)
        for (unsigned by = 0; by < grid_y; by++) {
            const int n = (int)(plane / s->c_in), i = (int)(plane % s->c_in);
            int lo, hi, step;
            fold_candidates(s, i, &lo, &hi, &step);
            memset(slots, 0, (size_t)warps * taps_max * 2 * sizeof(double));
            if (lo >= hi) continue;
            for (int p0 = (int)(by * threads); p0 < s->hw; p0 += (int)(grid_y * threads))
                for (int j = lo, tap = 0; j < hi; j += step, tap++)
                    for (unsigned w = 0; w < warps; w++) {
                        double v[32], v2[32];
                        for (int l = 0; l < 32; l++) {
                            const int p = p0 + (int)(w * 32) + l;
                            v[l] = p < s->hw ? (double)y[((size_t)n * s->c_out + j) * s->hw + p] : 0.0;
                            v2[l] = v[l] * v[l];
                        }
                        slots[((size_t)w * taps_max + tap) * 2] += emu_warp_sum(v);
                        slots[((size_t)w * taps_max + tap) * 2 + 1] += emu_warp_sum(v2);
                    }
            const int taps = (hi - lo + step - 1) / step;
            for (int t = 0; t < taps; t++) {
                double a0 = 0.0, a1 = 0.0;
                for (unsigned w = 0; w < warps; w++) {
                    a0 += slots[((size_t)w * taps_max + t) * 2];
                    a1 += slots[((size_t)w * taps_max + t) * 2 + 1];
                }
                const size_t slot = (size_t)(lo + t * step) * chunks + (size_t)n * grid_y + by;
                partial[slot * 2] = a0;
                partial[slot * 2 + 1] = a1;
                writes[slot]++;
            }
        }
    free(slots);
    *partial_out = partial;
    *writes_out = writes;
    return chunks;
}

/* The kernel's sums, finished as k_bn_stats_final finishes them, against the CPU's statistics. */
static void check_kernel_walk(bf_backend *b, const char *name, int n, int c_in, int c_out, int hw) {
    const bf_flex_shape s = {.n = n, .c_in = c_in, .c_out = c_out, .hw = hw, .channels = BF_FLEX_CHANNELS_EXPAND,
                             .ties = BF_FLEX_TIE_SPLIT};
    const bf_bn_shape bs = {.n = n, .c = c_out, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    const size_t nc = (size_t)n * c_out * hw;
    float *y = bf_test_eighths(nc, -2.0f, 37, 31);
    for (int j = 0; j < c_out; j++) /* channels of different means and spreads, values no double sums exactly */
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) {
                float *v = &y[((size_t)i * c_out + j) * hw + p];
                *v = *v * 0.3f * (float)(1 + j % 5) + 0.7f * (float)(j % 7) - 2.9f;
            }
    double *partial;
    int *writes;
    const unsigned chunks = emu_stats_partials(&s, y, &partial, &writes);
    size_t bad_writes = 0;
    for (size_t k = 0; k < (size_t)c_out * chunks; k++) bad_writes += writes[k] != 1;
    float *cpu = bf_test_calloc(2 * (size_t)c_out * sizeof(float));
    CHECK_OK(b->ops->batchnorm_forward_train(b, &bs, y, NULL, NULL, NULL, cpu, cpu + c_out, NULL, NULL));
    double worst_mean = 0, worst_invstd = 0;
    const double count = (double)n * hw;
    for (int ch = 0; ch < c_out; ch++) {
        double l0[32] = {0}, l1[32] = {0}; /* k_fold_chunks: lane l adds chunks l, l + 32, ..., then the warp's tree */
        for (unsigned k = 0; k < chunks; k++) {
            l0[k % 32] += partial[((size_t)ch * chunks + k) * 2];
            l1[k % 32] += partial[((size_t)ch * chunks + k) * 2 + 1];
        }
        const double s0 = emu_warp_sum(l0), s1 = emu_warp_sum(l1); /* k_bn_stats_final with one chunk */
        const double mean = s0 / count;
        double var = s1 / count - mean * mean;
        if (var < 0) var = 0;
        const float invstd = (float)(1.0 / sqrt(var + 1e-5)), m = (float)mean;
        const double dm = fabs((double)m - cpu[ch]) / (1.0 + fabs(cpu[ch]));
        const double di = fabs((double)invstd - cpu[c_out + ch]) / cpu[c_out + ch];
        if (dm > worst_mean) worst_mean = dm;
        if (di > worst_invstd) worst_invstd = di;
    }
    CHECK(bad_writes == 0, "%s: %zu of %zu partials not written exactly once", name, bad_writes,
          (size_t)c_out * chunks);
    CHECK(worst_mean <= 1e-6 && worst_invstd <= 1e-6,
          "%s: the kernel's statistics against the CPU's: mean off by %.3g, invstd by %.3g (relative)", name,
          worst_mean, worst_invstd);
    printf("%-36s %9zu elements, %5u chunks per channel: partials once each, statistics within %.1e / %.1e\n", name,
           nc, chunks, worst_mean, worst_invstd);
    free(y), free(partial), free(writes), free(cpu);
}

/* ---- 3. the sliding-window kernel's walk (flex_slide.cuh, k_slide_max_forward<STATS>, whose split
 * flex_pool.cu makes with SLIDE_STATS_SM_COUNT = 132 whatever the device, so 132 here) ----
 * Mirrors of slide_geo_of and of the kernel's loops: an item is a band of rows of one pooled plane
 * and a strip, G lanes each; lane l of a group owns columns c0 = (strip*G + l)*V ..; its output rows
 * r0 .. r1-1 in order, at each the taps in order. With at most 2 taps (PRE) each lane sums its V
 * values per row and adds them to its own slot; at the end the group's lanes are added by the shuffle
 * tree; with more taps the group's tree is taken at every row and added to the group's slot. */
typedef struct emu_slide_geo {
    int log2_group, strips, bands, rows;
    size_t items;
} emu_slide_geo;

static emu_slide_geo emu_slide_geo_of(size_t planes, int h, int w, int V, int sm_count) {
    emu_slide_geo g;
    const int L = (w + V - 1) / V;
    g.log2_group = 0;
    while ((1 << g.log2_group) < L && g.log2_group < 5) g.log2_group++;
    g.strips = L > 32 ? (L + 31) / 32 : 1;
    const size_t groups_per_warp = (size_t)32 >> g.log2_group, want = (size_t)32 * (size_t)(sm_count > 0 ? sm_count : 1);
    int rows = h < 32 ? h : 32;
    for (;;) {
        g.rows = rows;
        g.bands = (h + rows - 1) / rows;
        g.items = planes * (size_t)g.bands * (size_t)g.strips;
        if (rows <= 4 || (g.items + groups_per_warp - 1) / groups_per_warp >= want) break;
        rows = (rows + 1) / 2;
    }
    return g;
}

/* group_sum: __shfl_down_sync of width G, lane 0 of the group's result (every lane computed) */
static double emu_group_sum(const double *lanes, int G) {
    double v[32];
    memcpy(v, lanes, (size_t)G * sizeof(double));
    for (int off = G >> 1; off > 0; off >>= 1) {
        double nv[32];
        for (int l = 0; l < G; l++) nv[l] = v[l] + (l + off < G ? v[l + off] : v[l]);
        memcpy(v, nv, (size_t)G * sizeof(double));
    }
    return v[0];
}

static void check_slide_walk(bf_backend *b, const char *name, int n, int c_in, int c_out, int h, int w, int sm_count) {
    const int hw = h * w, V = w % 4 == 0 ? 4 : 1;
    const size_t nc = (size_t)n * c_out * hw;
    float *y = bf_test_eighths(nc, -2.0f, 37, 41);
    for (size_t i = 0; i < nc; i++) y[i] = y[i] * 0.3f + 0.7f * (float)((i / (size_t)hw) % 7) - 2.9f;
    const emu_slide_geo g = emu_slide_geo_of((size_t)n * c_in, h, w, V, sm_count);
    const int G = 1 << g.log2_group, ratio = c_out % c_in == 0 ? c_out / c_in : 0;
    const int taps = ratio ? ratio : (c_out + c_in - 1) / c_in, pre = taps <= 2;
    CHECK(taps <= 64, "%s: the emulation holds 64 taps, not %d", name, taps);
    if (taps > 64) return;
    const size_t chunks = g.items / (size_t)c_in;
    double *partial = bf_test_calloc((size_t)c_out * chunks * 2 * sizeof(double));
    int *writes = bf_test_calloc((size_t)c_out * chunks * sizeof(int));
    for (size_t item = 0; item < g.items; item++) {
        const int strip = (int)(item % (size_t)g.strips);
        const size_t rest = item / (size_t)g.strips;
        const int band = (int)(rest % (size_t)g.bands);
        const size_t plane = rest / (size_t)g.bands, sample = plane / (size_t)c_in;
        const int ci = (int)(plane % (size_t)c_in);
        const int lo = ratio ? ci * ratio : ci, hi = ratio ? lo + ratio : c_out, step = ratio ? 1 : c_in;
        if (lo >= hi) continue; /* untapped: the kernel writes no partial (nothing is its) */
        const int r0 = band * g.rows, r1 = r0 + g.rows < h ? r0 + g.rows : h;
        double lane_slots[32][64][2], group_slot[64][2]; /* taps <= 64 (checked below) */
        memset(lane_slots, 0, sizeof lane_slots);
        memset(group_slot, 0, sizeof group_slot);
        for (int oh = r0; oh < r0 + g.rows; oh++) /* t = 2 .. rows + 1: out while oh < r1 */
            for (int k = 0; k < taps; k++) {
                double s0[32], s1[32];
                for (int gl = 0; gl < G; gl++) {
                    const int c0 = (strip * G + gl) * V;
                    const int act = c0 < w && oh < r1 && lo + k * step < hi;
                    s0[gl] = s1[gl] = 0.0;
                    if (act)
                        for (int j = 0; j < V; j++) {
                            const double v = (double)y[((sample * c_out) + (size_t)(lo + k * step)) * hw +
                                                       (size_t)oh * w + (size_t)(c0 + j)];
                            s0[gl] += v;
                            s1[gl] += v * v;
                        }
                    if (pre) lane_slots[gl][k][0] += s0[gl], lane_slots[gl][k][1] += s1[gl];
                }
                if (!pre) group_slot[k][0] += emu_group_sum(s0, G), group_slot[k][1] += emu_group_sum(s1, G);
            }
        const size_t chunk = (sample * (size_t)g.bands + (size_t)band) * (size_t)g.strips + (size_t)strip;
        for (int k = 0; k < taps && lo + k * step < hi; k++) {
            double a0, a1;
            if (pre) {
                double l0[32], l1[32];
                for (int gl = 0; gl < G; gl++) l0[gl] = lane_slots[gl][k][0], l1[gl] = lane_slots[gl][k][1];
                a0 = emu_group_sum(l0, G);
                a1 = emu_group_sum(l1, G);
            } else {
                a0 = group_slot[k][0];
                a1 = group_slot[k][1];
            }
            const size_t slot = (size_t)(lo + k * step) * chunks + chunk;
            partial[slot * 2] = a0;
            partial[slot * 2 + 1] = a1;
            writes[slot]++;
        }
    }
    size_t bad_writes = 0;
    for (size_t k = 0; k < (size_t)c_out * chunks; k++) bad_writes += writes[k] != 1;
    const bf_bn_shape bs = {.n = n, .c = c_out, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    float *cpu = bf_test_calloc(2 * (size_t)c_out * sizeof(float));
    CHECK_OK(b->ops->batchnorm_forward_train(b, &bs, y, NULL, NULL, NULL, cpu, cpu + c_out, NULL, NULL));
    double worst = 0;
    for (int ch = 0; ch < c_out; ch++) {
        double l0[32] = {0}, l1[32] = {0}; /* k_fold_chunks, then k_bn_stats_final */
        for (size_t k = 0; k < chunks; k++)
            l0[k % 32] += partial[((size_t)ch * chunks + k) * 2], l1[k % 32] += partial[((size_t)ch * chunks + k) * 2 + 1];
        const double s0 = emu_warp_sum(l0), s1 = emu_warp_sum(l1), count = (double)n * hw, mean = s0 / count;
        double var = s1 / count - mean * mean;
        if (var < 0) var = 0;
        const double dm = fabs((double)(float)mean - cpu[ch]) / (1.0 + fabs(cpu[ch]));
        const double di = fabs((double)(float)(1.0 / sqrt(var + 1e-5)) - cpu[c_out + ch]) / cpu[c_out + ch];
        worst = dm > worst ? dm : worst;
        worst = di > worst ? di : worst;
    }
    CHECK(bad_writes == 0 && worst <= 1e-6, "%s: sliding walk: %zu of %zu partials not written once; statistics off by %.3g",
          name, bad_writes, (size_t)c_out * chunks, worst);
    printf("%-36s V=%d G=%2d strips %d bands %2d, %s: partials once each, statistics within %.1e\n", name, V, G,
           g.strips, g.bands, pre ? "lane slots" : "group slots", worst);
    free(y), free(partial), free(writes), free(cpu);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    static const stats_case cases[] = {
        {"expand 3->6, 3x3/1", 2, 3, 6, 7, 9, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND, 0},
        {"expand 4->6 (tiling), 3x3/2", 3, 4, 6, 9, 7, 3, 2, 1, BF_FLEX_CHANNELS_EXPAND, 0},
        {"expand 6->4 (narrowing), 2x2/2", 2, 6, 4, 10, 6, 2, 2, 0, BF_FLEX_CHANNELS_EXPAND, 0},
        {"expand 5->5, NaNs", 2, 5, 5, 6, 7, 3, 1, 1, BF_FLEX_CHANNELS_EXPAND, 1},
        {"bilinear 3->8, 3x3/1", 2, 3, 8, 7, 9, 3, 1, 1, BF_FLEX_CHANNELS_BILINEAR, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_op(b, &cases[i]);
    test_refusals(b);
    /* the kernel's walk: small shapes (partial warps, several tiles per block, many taps by tiling,
     * narrowing), and VGG-16's flex layers at batch 2 (the grid then covers every tile) and at
     * batch 32 on a 56x56 plane (blocks walk several tiles) */
    check_kernel_walk(b, "walk: expand 3->6 @7x9", 2, 3, 6, 63);
    check_kernel_walk(b, "walk: expand 3->64 (22 taps) @40x40", 2, 3, 64, 1600);
    check_kernel_walk(b, "walk: expand 6->4 (narrowing) @5x3", 3, 6, 4, 15);
    check_kernel_walk(b, "walk: expand 1->40 @33x33", 5, 1, 40, 1089);
    check_kernel_walk(b, "walk: VGG-16 conv1_1 3->64 @224x224", 2, 3, 64, 224 * 224);
    check_kernel_walk(b, "walk: VGG-16 conv2_1 64->128 @112x112", 2, 64, 128, 112 * 112);
    check_kernel_walk(b, "walk: 64->128 @56x56, batch 32", 32, 64, 128, 56 * 56);
    check_kernel_walk(b, "walk: VGG-16 conv5_x 512->512 @14x14", 2, 512, 512, 14 * 14);
    /* the sliding-window kernel's walk: V = 4 and 1, groups of 2..32 lanes, strips, bands of 4..32
     * rows, 1, 2, 3 and 22 taps, narrowing */
    check_slide_walk(b, "slide: 3->6 @7x9", 2, 3, 6, 7, 9, 132);
    check_slide_walk(b, "slide: 4->4 @37x64 (bands)", 1, 4, 4, 37, 64, 132);
    check_slide_walk(b, "slide: 4->4 @37x64, n=1060 (32-row bands)", 1060, 4, 4, 37, 64, 132);
    check_slide_walk(b, "slide: 5->13 (3 taps) @11x13", 2, 5, 13, 11, 13, 132);
    check_slide_walk(b, "slide: 8->3 (narrowing) @13x7", 2, 8, 3, 13, 7, 132);
    check_slide_walk(b, "slide: 3->6 @5x132 (strips)", 2, 3, 6, 5, 132, 132);
    check_slide_walk(b, "slide: 3->64 (22 taps) @9x16 (G=4)", 2, 3, 64, 9, 16, 132);
    check_slide_walk(b, "slide: 2->4 @6x8 (G=2)", 3, 2, 4, 6, 8, 132);
    check_slide_walk(b, "slide: VGG-16 conv1_1 3->64 @224x224", 1, 3, 64, 224, 224, 132);
    check_slide_walk(b, "slide: VGG-16 conv2_1 64->128 @112x112", 2, 64, 128, 112, 112, 132);
    check_slide_walk(b, "slide: VGG-16 conv5_x 512->512 @14x14", 2, 512, 512, 14, 14, 132);
    bf_backend_destroy(b);
    return bf_test_finish();
}
