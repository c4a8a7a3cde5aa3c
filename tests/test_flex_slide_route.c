/* test_flex_slide_route.c - flex_slide.cuh's k_slide_route_scatter ([run] flex_kernels = slide:
 * flex_pool_max_backward_scatter and _bn with dconv apart from dy), emulated loop for loop on the CPU
 * and checked bit for bit against the CPU backend's ops, which test_flex_pool_ops.c checks against
 * the op-by-op sequence.
 *
 * The kernel cannot run here. The emulation is its transcription: slide_geo_of's split into items
 * (a band of rows of one pooled plane and a column strip, G lanes each), each warp's 32 lanes
 * stepping together down the output rows, every lane's registers kept per lane, and a shuffle as a
 * read of the neighbour lane's value in the same step (width G: a lane at its group's edge reads
 * its own, which the kernel then replaces by the edge column it computed). route_row computes the
 * shares (every tap's dy, or the batch-norm's dx from dz and y, routed by the bits) and writes dconv
 * only where the item owns the row; the halo rows and strip-edge columns are computed again. The
 * emulation also checks what the kernel assumes: a lane's V elements lie in one bitmap word; every
 * dconv element is written exactly once; every dx element once.
 *
 * Shapes: V = 4, 2 and 1 (w % 4, w % 2, odd w), groups of 2..32 lanes (several items per warp),
 * column strips (w > 32 V), bands (few planes: split by rows, with sm_count 132 and 1), block copy
 * with 1 and 2 taps, tiling with 22 taps (3 -> 64) and 3 taps, narrowing (pooled planes nobody
 * taps: dx 0), both tie rules, with and without the batch-norm (and its ReLU). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "testutil.h"

/* ---- mirrors of flex_slide.cuh (a change there belongs here too) ---- */

enum { EMU_SLIDE_THREADS = 256, EMU_NO_TERM = 0xFF };

typedef struct emu_geo {
    int h, w, log2_group, strips, bands, rows;
    size_t items;
} emu_geo;

/* slide_geo_of */
static emu_geo emu_geo_of(size_t planes, int h, int w, int V, int sm_count) {
    emu_geo g;
    const int L = (w + V - 1) / V;
    g.h = h;
    g.w = w;
    g.log2_group = 0;
    while ((1 << g.log2_group) < L && g.log2_group < 5) g.log2_group++;
    g.strips = L > 32 ? (L + 31) / 32 : 1;
    const size_t groups_per_warp = (size_t)32 >> g.log2_group;
    const size_t want = (size_t)32 * (size_t)(sm_count > 0 ? sm_count : 1);
    int rows = h < 32 ? h : 32;
    for (;;) {
        g.rows = rows;
        g.bands = (h + rows - 1) / rows;
        g.items = planes * (size_t)g.bands * (size_t)g.strips;
        const size_t warps = (g.items + groups_per_warp - 1) / groups_per_warp;
        if (rows <= 4 || warps >= want) break;
        rows = (rows + 1) / 2;
    }
    return g;
}

/* routed */
static float emu_routed(float g, uint32_t win, uint32_t tie, unsigned bit, float tie_share) {
    return (win >> bit) & 1u ? ((tie >> bit) & 1u ? g * tie_share : g) : 0.0f;
}

/* bn_grad_at (bn_apply_one, bn_dx_one): each operation rounded on its own (no contraction in C11) */
static float emu_bn_grad(const bf_bn_grad *bn, int c, int ch, float yv, float dz) {
    const float mu = bn->mean[ch], is = bn->invstd[ch], sc = bn->gamma[ch] * is;
    const float z = (yv - mu) * sc + bn->beta[ch];
    const float g = bn->relu && !(z > 0.0f) ? 0.0f : dz;
    const float xhat = (yv - mu) * is;
    return sc * ((g - bn->coef[ch]) - xhat * bn->coef[c + ch]);
}

/* One output row as a lane holds it (scat_raw). */
typedef struct emu_raw {
    float v[4];
    uint32_t b;
    float lv, rv;
    uint32_t lb, rb;
} emu_raw;

/* A lane's constants (the kernel's locals before its loop). */
typedef struct emu_lane {
    int live, tapped, cols, edge_l, edge_r, gl, c0, r0, r1, lo, hi, step;
    size_t plane, e_first, tap_stride;
} emu_lane;

typedef struct emu_run {
    const bf_flex_shape *s;
    const bf_bn_grad *bn; /* NULL: without the batch-norm */
    const uint8_t *window;
    const uint32_t *winners, *ties;
    const float *dy, *y;
    float *dconv, *dx;
    int *dconv_writes, *dx_writes;
    float tie_share;
    int V, word_violations;
} emu_run;

/* route_share_one */
static float emu_share_one(emu_run *r, const emu_lane *ln, int p) {
    float share = 0.0f;
    for (int j = ln->lo, k = 0; j < ln->hi; j += ln->step, k++) {
        const size_t e = ln->e_first + (size_t)k * ln->tap_stride + (size_t)p;
        float gv = r->dy[e];
        if (r->bn) gv = emu_bn_grad(r->bn, r->s->c_out, j, r->y[e], gv);
        const float dc = emu_routed(gv, r->winners[e >> 5], r->ties[e >> 5], (unsigned)(e & 31u), r->tie_share);
        share = share + (gv - dc);
    }
    return share;
}

/* route_row */
static emu_raw emu_route_row(emu_run *r, const emu_lane *ln, int oh, int w, int h) {
    emu_raw o;
    memset(&o, 0, sizeof o);
    const int row_ok = ln->live && oh >= 0 && oh <= ln->r1 && oh < h;
    if (!row_ok) return o;
    const int own = ln->cols && oh >= ln->r0 && oh < ln->r1;
    const int at = oh * w + ln->c0, V = r->V;
    const uint8_t *wq = r->window + ln->plane * (size_t)r->s->hw;
    if (ln->cols) {
        for (int q = 0; q < V; q++) o.b |= (uint32_t)wq[at + q] << (8 * q);
        if (ln->tapped)
            for (int j = ln->lo, k = 0; j < ln->hi; j += ln->step, k++) {
                const size_t e = ln->e_first + (size_t)k * ln->tap_stride + (size_t)at;
                if ((e >> 5) != ((e + (size_t)V - 1) >> 5)) r->word_violations++;
                for (int q = 0; q < V; q++) {
                    float gv = r->dy[e + q];
                    if (r->bn) gv = emu_bn_grad(r->bn, r->s->c_out, j, r->y[e + q], gv);
                    /* the kernel reads one word for the lane's V elements: e's */
                    const float dc = emu_routed(gv, r->winners[e >> 5], r->ties[e >> 5], (unsigned)((e + q) & 31u),
                                                r->tie_share);
                    o.v[q] = o.v[q] + (gv - dc);
                    if (own) {
                        r->dconv[e + q] = dc;
                        r->dconv_writes[e + q]++;
                    }
                }
            }
    }
    if (ln->edge_l) {
        o.lb = wq[at - 1];
        if (ln->tapped) o.lv = emu_share_one(r, ln, at - 1);
    }
    if (ln->edge_r) {
        o.rb = wq[at + V];
        if (ln->tapped) o.rv = emu_share_one(r, ln, at + V);
    }
    return o;
}

static unsigned emu_code(float v, unsigned byte) { return v != 0.0f ? byte : EMU_NO_TERM; }

static void emu_term(float *acc, unsigned code, unsigned want, float v) {
    if (code == want) *acc = *acc + v;
}

/* k_slide_route_scatter over the whole grid, warp by warp, its 32 lanes in step. */
static void emu_route_scatter(emu_run *r, const bf_pool_shape *ps, int sm_count) {
    const bf_flex_shape *s = r->s;
    const int V = r->V, h = ps->h_in, w = ps->w_in;
    const emu_geo g = emu_geo_of((size_t)s->n * s->c_in, h, w, V, sm_count);
    const int G = 1 << g.log2_group, ratio = s->c_out % s->c_in == 0 ? s->c_out / s->c_in : 0;
    const size_t groups_per_warp = (size_t)32 >> g.log2_group;
    const size_t warps = (g.items + groups_per_warp - 1) / groups_per_warp;
    const size_t blocks = (warps + EMU_SLIDE_THREADS / 32 - 1) / (EMU_SLIDE_THREADS / 32);
    for (size_t warp = 0; warp < blocks * (EMU_SLIDE_THREADS / 32); warp++) {
        emu_lane ln[32];
        for (int lane = 0; lane < 32; lane++) {
            emu_lane *l = &ln[lane];
            const size_t item = (warp << (5 - g.log2_group)) + (size_t)(lane >> g.log2_group);
            l->live = item < g.items;
            const size_t it = l->live ? item : 0;
            const int strip = (int)(it % (size_t)g.strips);
            const size_t rest = it / (size_t)g.strips;
            const int band = (int)(rest % (size_t)g.bands);
            l->plane = rest / (size_t)g.bands;
            const size_t sample = l->plane / (size_t)s->c_in;
            const int ci = (int)(l->plane - sample * (size_t)s->c_in);
            if (ratio) l->lo = ci * ratio, l->hi = l->lo + ratio, l->step = 1;
            else l->lo = ci, l->hi = s->c_out, l->step = s->c_in;
            l->tapped = l->live && l->lo < l->hi;
            l->gl = lane & (G - 1);
            l->c0 = (strip * G + l->gl) * V;
            l->r0 = band * g.rows;
            l->r1 = l->r0 + g.rows < h ? l->r0 + g.rows : h;
            l->cols = l->live && l->c0 < w;
            l->edge_l = l->cols && l->gl == 0 && l->c0 > 0;
            l->edge_r = l->cols && l->gl == G - 1 && l->c0 + V < w;
            l->e_first = (sample * (size_t)s->c_out + (size_t)(l->tapped ? l->lo : 0)) * (size_t)s->hw;
            l->tap_stride = (size_t)l->step * (size_t)s->hw;
        }
        float acc[32][3][4]; /* per lane: input rows oh-1 (0), oh (1), oh+1 (2) */
        memset(acc, 0, sizeof acc);
        emu_raw cur[32];
        int oh[32]; /* each lane's: its band's r0 - 1 first */
        for (int lane = 0; lane < 32; lane++) oh[lane] = ln[lane].r0 - 1;
        for (int t = 0; t < g.rows + 2; t++) {
            /* the row's shares as it is reached (route_row at the top of the kernel's loop) */
            for (int lane = 0; lane < 32; lane++) cur[lane] = emu_route_row(r, &ln[lane], oh[lane], w, h);
            unsigned sc[32][4];
            for (int lane = 0; lane < 32; lane++)
                for (int j = 0; j < V; j++) sc[lane][j] = emu_code(cur[lane].v[j], (cur[lane].b >> (8 * j)) & 0xFFu);
            for (int lane = 0; lane < 32; lane++) {
                const emu_lane *l = &ln[lane];
                /* __shfl_up_sync / __shfl_down_sync of width G: the neighbour in the group, else its own */
                const int up = l->gl >= 1 ? lane - 1 : lane, down = l->gl + 1 < G ? lane + 1 : lane;
                float lv = cur[up].v[V - 1], rv = cur[down].v[0];
                unsigned ls = sc[up][V - 1], rs = sc[down][0];
                if (l->gl == 0) lv = cur[lane].lv, ls = emu_code(cur[lane].lv, cur[lane].lb);
                if (l->gl == G - 1) rv = cur[lane].rv, rs = emu_code(cur[lane].rv, cur[lane].rb);
                for (int j = 0; j < V; j++) {
                    acc[lane][0][j] = acc[lane][1][j];
                    acc[lane][1][j] = acc[lane][2][j];
                    acc[lane][2][j] = 0.0f;
                    const float vl = j == 0 ? lv : cur[lane].v[j - 1], vm = cur[lane].v[j];
                    const float vr = j == V - 1 ? rv : cur[lane].v[j + 1];
                    const unsigned sl = j == 0 ? ls : sc[lane][j - 1], sm = sc[lane][j];
                    const unsigned sr = j == V - 1 ? rs : sc[lane][j + 1];
                    emu_term(&acc[lane][0][j], sl, 2u, vl);
                    emu_term(&acc[lane][0][j], sm, 1u, vm);
                    emu_term(&acc[lane][0][j], sr, 0u, vr);
                    emu_term(&acc[lane][1][j], sl, 5u, vl);
                    emu_term(&acc[lane][1][j], sm, 4u, vm);
                    emu_term(&acc[lane][1][j], sr, 3u, vr);
                    emu_term(&acc[lane][2][j], sl, 8u, vl);
                    emu_term(&acc[lane][2][j], sm, 7u, vm);
                    emu_term(&acc[lane][2][j], sr, 6u, vr);
                }
                const int ri = oh[lane] - 1;
                if (l->cols && ri >= l->r0 && ri < l->r1)
                    for (int j = 0; j < V; j++) {
                        const size_t at = l->plane * (size_t)s->hw + (size_t)ri * w + (size_t)(l->c0 + j);
                        r->dx[at] = acc[lane][0][j];
                        r->dx_writes[at]++;
                    }
            }
            for (int lane = 0; lane < 32; lane++) oh[lane]++;
        }
    }
}

/* ---- the cases ---- */

typedef struct route_case {
    const char *name;
    int n, c_in, c_out, h, w;
    bf_flex_tie_rule ties;
    int bn; /* 0 none, 1 the batch-norm, 2 with its ReLU */
    int sm_count;
} route_case;

static size_t differing(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return d;
}

static void run_case(bf_backend *b, const route_case *rc) {
    bf_pool_shape ps = {.n = rc->n, .c = rc->c_in, .h_in = rc->h, .w_in = rc->w, .k = 3, .stride = 1, .pad = 1};
    CHECK_OK(bf_pool_shape_init(&ps));
    const int hw = rc->h * rc->w;
    const bf_flex_shape s = {.n = rc->n, .c_in = rc->c_in, .c_out = rc->c_out, .hw = hw,
                             .channels = BF_FLEX_CHANNELS_EXPAND, .ties = rc->ties};
    const size_t nx = (size_t)rc->n * rc->c_in * hw, nc = (size_t)rc->n * rc->c_out * hw, words = (nc + 31) / 32;
    float *x = bf_test_eighths(nx, -1.0f, 17, 51), *y = bf_test_eighths(nc, -1.0f, 21, 52), *dy = bf_test_eighths(nc, -2.0f, 33, 53);
    for (size_t i = 0; i < nc; i++) dy[i] = dy[i] * 0.3f + 0.01f; /* sums that round: their order shows */
    uint8_t *window = bf_test_calloc(nx);
    uint32_t *winners = bf_test_calloc(words * sizeof(uint32_t)), *ties = bf_test_calloc(words * sizeof(uint32_t));
    memset(window, 0xAB, nx); /* untapped planes keep it: their shares are 0, so it is never a term */
    CHECK_OK(b->ops->flex_pool_max_forward(b, &ps, &s, x, NULL, y, window, winners, ties, NULL));
    const int c = rc->c_out;
    float *stats = bf_test_eighths(6 * (size_t)c, -0.5f, 9, 54); /* mean, invstd, gamma, beta, coef (2c) */
    for (int k = 0; k < c; k++) stats[c + k] = 0.5f + 0.25f * (float)(k % 5);
    const bf_bn_grad bn = {rc->bn == 2, stats, stats + c, stats + 2 * c, stats + 3 * c, stats + 4 * c};
    float *dconv_ref = bf_test_calloc(nc * sizeof(float)), *dx_ref = bf_test_calloc(nx * sizeof(float));
    if (rc->bn)
        CHECK_OK(b->ops->flex_pool_max_backward_scatter_bn(b, &ps, &s, &bn, window, winners, ties, y, dy, dconv_ref,
                                                           dx_ref, NULL));
    else
        CHECK_OK(b->ops->flex_pool_max_backward_scatter(b, &ps, &s, window, winners, ties, dy, dconv_ref, dx_ref, NULL));

    emu_run r = {.s = &s, .bn = rc->bn ? &bn : NULL, .window = window, .winners = winners, .ties = ties, .dy = dy,
                 .y = y, .tie_share = rc->ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f};
    r.V = rc->w % 4 == 0 ? 4 : rc->w % 2 == 0 ? 2 : 1;
    r.dconv = bf_test_calloc(nc * sizeof(float));
    r.dx = bf_test_calloc(nx * sizeof(float));
    r.dconv_writes = bf_test_calloc(nc * sizeof(int));
    r.dx_writes = bf_test_calloc(nx * sizeof(int));
    memset(r.dconv, 0xFF, nc * sizeof(float));
    memset(r.dx, 0xFF, nx * sizeof(float));
    emu_route_scatter(&r, &ps, rc->sm_count);
    size_t bad_dconv_writes = 0, bad_dx_writes = 0, nonzero = 0;
    for (size_t i = 0; i < nc; i++) bad_dconv_writes += r.dconv_writes[i] != 1;
    for (size_t i = 0; i < nx; i++) bad_dx_writes += r.dx_writes[i] != 1, nonzero += dx_ref[i] != 0.0f;
    const emu_geo g = emu_geo_of((size_t)rc->n * rc->c_in, rc->h, rc->w, r.V, rc->sm_count);
    CHECK(bad_dconv_writes == 0 && bad_dx_writes == 0 && r.word_violations == 0,
          "%s: dconv elements not written once %zu, dx %zu; lanes whose V elements straddle a word %d", rc->name,
          bad_dconv_writes, bad_dx_writes, r.word_violations);
    CHECK(differing(r.dconv, dconv_ref, nc) == 0 && differing(r.dx, dx_ref, nx) == 0 && nonzero > 0,
          "%s: the kernel's walk against the CPU op: dconv %zu, dx %zu of %zu elements differ (%zu nonzero)", rc->name,
          differing(r.dconv, dconv_ref, nc), differing(r.dx, dx_ref, nx), nx, nonzero);
    printf("%-46s V=%d G=%2d strips %d bands %2d (rows %2d): %7zu + %6zu elements bit-identical\n", rc->name, r.V,
           1 << g.log2_group, g.strips, g.bands, g.rows, nc, nx);
    free(x), free(y), free(dy), free(window), free(winners), free(ties), free(stats), free(dconv_ref), free(dx_ref);
    free(r.dconv), free(r.dx), free(r.dconv_writes), free(r.dx_writes);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    static const route_case cases[] = {
        {"3->6 @7x9 (V=1, 2 taps), split", 2, 3, 6, 7, 9, BF_FLEX_TIE_SPLIT, 0, 132},
        {"3->6 @7x9, BN + ReLU, pool", 2, 3, 6, 7, 9, BF_FLEX_TIE_POOL, 2, 132},
        {"4->8 @15x14 (V=2), BN", 3, 4, 8, 15, 14, BF_FLEX_TIE_SPLIT, 1, 132},
        {"3->64 (tiling, 22 taps) @9x16 (V=4), BN + ReLU", 2, 3, 64, 9, 16, BF_FLEX_TIE_SPLIT, 2, 132},
        {"5->13 (tiling, 3 taps) @11x13, pool", 2, 5, 13, 11, 13, BF_FLEX_TIE_POOL, 0, 132},
        {"8->3 (narrowing) @13x7, BN", 2, 8, 3, 13, 7, BF_FLEX_TIE_SPLIT, 1, 132},
        {"3->6 @5x132 (strips, V=4), BN + ReLU", 2, 3, 6, 5, 132, BF_FLEX_TIE_SPLIT, 2, 132},
        {"2->4 @3x130 (strips, V=2)", 2, 2, 4, 3, 130, BF_FLEX_TIE_SPLIT, 0, 132},
        {"4->4 @37x64 (bands), BN", 1, 4, 4, 37, 64, BF_FLEX_TIE_SPLIT, 1, 132},
        {"4->4 @37x64, n=8 (bands of 32 rows: sm 1)", 8, 4, 4, 37, 64, BF_FLEX_TIE_POOL, 2, 1},
        {"64->128 @56x56 (VGG-16 conv2_1), BN + ReLU", 2, 64, 128, 56, 56, BF_FLEX_TIE_SPLIT, 2, 132},
        {"64->64 @224x224 (VGG-16 conv1_2), BN + ReLU", 1, 64, 64, 224, 224, BF_FLEX_TIE_SPLIT, 2, 132},
        {"512->512 @14x14 (V=2), BN + ReLU", 2, 512, 512, 14, 14, BF_FLEX_TIE_SPLIT, 2, 132},
        {"1->8 @1x1", 2, 1, 8, 1, 1, BF_FLEX_TIE_SPLIT, 0, 132},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(b, &cases[i]);
    bf_backend_destroy(b);
    return bf_test_finish();
}
