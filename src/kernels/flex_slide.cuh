/* flex_slide.cuh - internal: the sliding-window kernels of [run] flex_kernels = slide
 * (bf_cuda_set_flex_kernels in ops.h), included by flex_pool.cu alone. For EXPAND and the 3x3
 * stride-1 pad-1 window (every FlexNet flex layer) they compute what flex_pool.cu's
 * k_pool_max_forward_expand, k_pool_scatter_add and k_route_scatter compute, BIT FOR BIT, with
 * another split of the work:
 *   k_slide_max_forward   flex_pool_max_forward (y in place over C, window bytes, winners and ties bits,
 *                         conv_wins);
 *   k_slide_scatter_add   flex_pool_scatter_add (dx += maxpool_backward(dpooled) through the bytes);
 *   k_slide_route_scatter flex_pool_max_backward_scatter and _bn with dconv apart from dy (the route's
 *                         shares computed per output row as the window slides; tests/
 *                         test_flex_slide_route.c emulates it loop for loop), and their dbias.
 * They were written in the flex kernel lab (bench/flex_lab.cu's "pool v1", whose sliding window they
 * build on) and checked, before any GPU run, by lane-by-lane CPU emulations against C
 * transcriptions of the library's kernels; the lab now times them here, through the ops table, as
 * its "version 3" and "scatter v1" rows.
 * tests/test_flex_ops_cuda.c runs its fused-op cases under both kernel sets.
 *
 * ---- the sliding window (the lab's pool v1) ----
 * The library's kernels give each output its own thread and 9 bounds-checked loads (window_max); on
 * the H200 they stay near a quarter of DRAM bandwidth, which points at instructions and L1 traffic,
 * not DRAM, as their limit. Here each input element is loaded from global memory once per band it
 * lies in (a band's two halo rows are its neighbours' rows too: L1/L2 hits):
 *   - a GROUP of G lanes (G a power of two, 1..32) takes one ITEM: a band of `rows` rows of one
 *     plane and one column strip of 32*V columns (the whole row when it fits, so a narrow plane's
 *     warp holds several groups instead of idle lanes); lane l of the group owns the V columns
 *     c0 = (strip*G + l)*V .. c0+V-1 (V = 4: float4 loads and stores, when w % 4 == 0 and the
 *     pointers are aligned; see each launcher for its V);
 *   - the group walks down its band's rows (one halo row above and below): each row is one
 *     coalesced load per lane, loaded two rows ahead; the columns left and right of a lane's V
 *     come from its neighbours by __shfl_up_sync / __shfl_down_sync (within the group: width G),
 *     and only at a strip's edge from global memory (rows wider than 32*V: an L1/L2 hit);
 *   - the loop count is the same for every lane (rows + 2) so that the shuffles see the whole warp;
 *     lanes without work (past the row's end, past the last item) load and store nothing.
 * The split changes no result: every output is made by the same expressions whatever its item. */
#ifndef BIOFLEX_FLEX_SLIDE_CUH
#define BIOFLEX_FLEX_SLIDE_CUH

#include <stdint.h>

#include "cuda_backend.h"
#include "flex_common.cuh" /* k_add_count */
#include "flex_route.cuh"  /* routed, bn_grad_dev, bn_grad_at: the route with the scatter */
#include "vector_access.cuh" /* fvec, load_vec, store_vec */

namespace { /* kernels are private to the including file */

#define SLIDE_THREADS 256 /* threads per block of every kernel here (their __launch_bounds__) */

/* ---- vectors of V consecutive elements: V = 4 loads and stores 16 (floats: vector_access.cuh) or
 * 4 (bytes) bytes at once. Callers guarantee the alignment: every offset a multiple of V, the base
 * pointers aligned. */

template <int V>
struct bvec {
    uint8_t v[V];
};

template <int V>
__device__ __forceinline__ void store_b(uint8_t *p, const bvec<V> &r) {
    if constexpr (V == 4) {
        *reinterpret_cast<uchar4 *>(p) = make_uchar4(r.v[0], r.v[1], r.v[2], r.v[3]);
    } else {
        *p = r.v[0];
    }
}

/* ---- the split, shared by both kernels ---- */

struct slide_geo {
    int h, w;       /* the plane; 3x3, stride 1, pad 1 keeps its size */
    int log2_group; /* G = 1 << log2_group lanes per item */
    int strips;     /* column strips per row: 1 when the row fits in G lanes (then G < 32 is allowed) */
    int bands;      /* row bands per plane */
    int rows;       /* rows per band; the last band may have fewer */
    size_t items;   /* planes * bands * strips */
};

/* The split of `planes` planes of h x w with V-column lanes: a row of L = ceil(w / V) lane-columns
 * takes the smallest power-of-two group >= L, or strips of 32 lanes when L > 32. Bands of at most 32
 * rows (each band re-reads 2 halo rows, mostly from L2: its neighbour band is the next group or
 * warp), halved down to 4 while there are fewer than 32 warps per SM to hide DRAM latency (e.g.
 * conv1_1's 3 channels). *blocks: of SLIDE_THREADS threads. */
inline slide_geo slide_geo_of(size_t planes, int h, int w, int V, int sm_count, size_t *blocks) {
    slide_geo g;
    const int L = (w + V - 1) / V;
    g.h = h;
    g.w = w;
    g.log2_group = 0;
    while ((1 << g.log2_group) < L && g.log2_group < 5) g.log2_group++;
    g.strips = L > 32 ? (L + 31) / 32 : 1;
    const size_t groups_per_warp = (size_t)32 >> g.log2_group, warps_per_block = SLIDE_THREADS / 32;
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
    const size_t warps = (g.items + groups_per_warp - 1) / groups_per_warp;
    *blocks = (warps + warps_per_block - 1) / warps_per_block;
    return g;
}

/* Whether the sliding-window kernels take a call: EXPAND (the forward's channel walk; the scatter
 * goes with it so that one setting switches a flex layer's pool branch as a whole), the 3x3 stride-1
 * pad-1 window, planes whose offsets (and one vector past them) fit in an int, and a grid of at
 * most 2^31 - 1 blocks (at V = 1, the most blocks either kernel launches). Otherwise the fused
 * kernels of flex_pool.cu run. */
inline bool slide_takes(const bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s) {
    if (s->channels != BF_FLEX_CHANNELS_EXPAND) return false;
    if (ps->k != 3 || ps->stride != 1 || ps->pad != 1) return false;
    if (ps->h_in < 1 || ps->w_in < 1 || (long long)ps->h_in * ps->w_in > 0x7fffffffLL - 64) return false;
    size_t blocks;
    (void)slide_geo_of((size_t)s->n * s->c_in, ps->h_in, ps->w_in, 1, im->sm_count, &blocks);
    return blocks <= 0x7fffffffu;
}

/* ==== the forward (the lab's version 3): flex_pool_max_forward for EXPAND and 3x3/1/1 ====
 * Same five outputs, bit for bit, as k_pool_max_forward_expand:
 *   y      [n, c_out, hw]  in place over C: y = C where C > P~ or C is a NaN, else P~ (C = y + bias[j]
 *                          as it is read, with a bias);
 *   window [n, c_in, hw]   the place kh*3 + kw of the window's maximum (window_max's rule), written
 *                          only for the pooled channels some output channel taps;
 *   winners                bit e%32 of word e/32 = C >= P~ for output element e (spare bits 0);
 *   ties                   bit e%32 of word e/32 = C == P~ (ties are rare: a lane ORs its V bits in
 *                          with one atomicOr when it has any; the bitmap is zeroed first);
 *   conv_wins              += #(C > P~), an integer sum (exact in any order) added as a double.
 *
 * The window maximum is separable: each input row's 3-wide maxima are kept for the last three rows
 * in registers, and output row oh is the maximum over rows oh-1, oh, oh+1 of those. Bit-identical
 * to window_max (value and byte): its rule (the first in-bounds element initialises; v replaces when
 * v > best, or when v is NaN and best is not) picks the first NaN in scan order if there is one,
 * else the first maximum. Taken along kw within each row, then along kh over the rows' winners, it
 * picks the same element: the first row holding a NaN holds the window's first NaN, and without
 * NaNs the first row reaching the maximum holds its first occurrence (-0 and +0 compare equal, so
 * the earlier one stays, as in the row-major scan). Padding rows and columns are skipped, never
 * -infinity, so a window of NaN-free -infinities still reports an in-bounds place.
 *
 * Work split: an item is a band of rows of one POOLED plane (n, i) and a strip. At each output row
 * the group has the window maxima of its columns in registers; it stores the window bytes (uchar4
 * when V = 4), then walks the output channels that copy pooled channel i under EXPAND (block copy:
 * j = i*r .. i*r+r-1, r = c_out/c_in; tiling, c_in not dividing c_out: j = i, i+c_in, ... < c_out;
 * none when i >= c_out): per channel one coalesced (float4) read of C and write of y, and the
 * winners bits, with flex_max_forward's expressions.
 *
 * Winners without per-element atomics: a lane's V bits are V consecutive elements inside one word
 * (V = 4 only when w % 4 == 0, so every lane's first element is a multiple of 4). The lanes of a group
 * hold consecutive elements of one row, so the lanes sharing a word are a contiguous run; a segmented
 * OR by __shfl_down_sync (log2(32/V) steps; lane l takes lane l+d's bits when element e_l + d*V is in
 * e_l's word, which needs no shuffled index) leaves the word's bits in the run's first lane. That lane
 * stores the word with a plain store when the run covers all 32 elements (the word's first element is
 * in this group, and its 31 successors are columns of the same row and group), else ORs it in with one
 * atomicOr (a word straddling two rows, strips, planes or groups). The bitmap is zeroed first unless
 * every word is whole (w % 32 == 0: rows and strips start on word boundaries; conv1_x at 224). Every
 * output channel taps exactly one pooled channel, so with w % 32 == 0 every word is stored.
 *
 * Loop counts are warp-uniform (the shuffles need the whole warp): rows + 2 steps per item, and at
 * each output step `taps` channel slots (the most any pooled channel has) in chunks of U, the slots
 * past a group's own channels idle. C loads: with at most U = 2 taps (PRE) the next output row's C
 * is loaded one step ahead, into a second set of registers, so that a warp keeps C and x rows in
 * flight while it works; with more taps (3 -> 64 tiling) each chunk's U = 4 loads are issued
 * together before they are used. */

/* window_max's replacement rule, v > best || (v != v && best == best), in two comparisons: once best
 * is a NaN nothing replaces it; otherwise v replaces it unless v <= best (false for a NaN v). */
__device__ __forceinline__ bool pool_better(float v, float best) { return best == best && !(v <= best); }

/* One input row as a lane sees it: its V columns and, at a strip's edges, the column beyond. */
template <int V>
struct slide_row {
    fvec<V> v;
    float left, right;
};

/* Input row ih (zeros where nothing is loaded: a row outside the band or plane, a lane past the row). */
template <int V>
__device__ __forceinline__ slide_row<V> slide_load(const float *__restrict__ xp, int ih, int w, bool row_ok,
                                                   bool cols, bool edge_l, bool edge_r, int c0) {
    slide_row<V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v.v[j] = 0.0f;
    r.left = r.right = 0.0f;
    if (row_ok) {
        const float *row = xp + ih * w + c0; /* h*w fits in an int (slide_takes) */
        if (cols) r.v = load_vec<V>(row);
        if (edge_l) r.left = row[-1];
        if (edge_r) r.right = row[V];
    }
    return r;
}

struct slide_fwd_geo {
    slide_geo s;    /* the split over the n*c_in pooled planes */
    int c_in, c_out, hw;
    int ratio;      /* c_out / c_in when c_in divides c_out, else 0: tiling (j % c_in) */
    int taps;       /* the most output channels one pooled channel feeds: ratio, or ceil(c_out / c_in) */
};

/* A lane's item under the forward's split (k_slide_max_forward, k_slide_route_scatter): its group of
 * G lanes (gl its place), the item's strip, band and pooled plane (sample, ci), and the output
 * channels that copy ci: lo, lo+step, ... < hi (flex_common's fold_candidates; none when ci >= c_out
 * under tiling that narrows). live: the item exists (the last warp's spare lanes have none). */
struct slide_item {
    int G, gl, strip, band, ci, lo, hi, step;
    bool live;
    size_t it, plane, sample;
};

__device__ __forceinline__ slide_item slide_item_of(const slide_fwd_geo &g) {
    slide_item s;
    const int lane = (int)(threadIdx.x & 31);
    s.G = 1 << g.s.log2_group;
    s.gl = lane & (s.G - 1);
    const size_t warp = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const size_t item = (warp << (5 - g.s.log2_group)) + (size_t)(lane >> g.s.log2_group);
    s.live = item < g.s.items;
    s.it = s.live ? item : 0;
    s.strip = (int)(s.it % (size_t)g.s.strips);
    const size_t rest = s.it / (size_t)g.s.strips;
    s.band = (int)(rest % (size_t)g.s.bands);
    s.plane = rest / (size_t)g.s.bands;
    s.sample = s.plane / (size_t)g.c_in;
    s.ci = (int)(s.plane - s.sample * (size_t)g.c_in);
    if (g.ratio) {
        s.lo = s.ci * g.ratio;
        s.hi = s.lo + g.ratio;
        s.step = 1;
    } else {
        s.lo = s.ci;
        s.hi = g.c_out;
        s.step = g.c_in;
    }
    return s;
}

/* Registers (ptxas -v, sm_90, CUDA 13, in the lab): unbounded, V = 4 took 75 / 88 / 94 with U = 1 / 2
 * / 4, i.e. 3, 2 and 2 blocks of 256 per SM; a minimum of 3 blocks caps them at 77 / 80 / 80 without
 * spills (24 warps per SM; 4 blocks spill 16-164 bytes). V = 1: 58 / 60 / 70 (4, 4, 3 blocks). */
#define SLIDE_FWD_MIN_BLOCKS(V, U) ((V) == 1 && (U) < 4 ? 1 : 3)
/* With STATS, V = 4 spills 24-148 bytes under the 80-register cap of 3 blocks: 2 blocks there. */
#define SLIDE_FWD_STATS_MIN_BLOCKS(V, U, STATS) ((STATS) && (V) == 4 ? 2 : SLIDE_FWD_MIN_BLOCKS(V, U))

/* STATS (flex_pool_max_forward_bn_stats): the next batch-norm's sums of y and y^2 per output
 * channel, in double, as the values are written. With PRE (at most 2 taps) each lane adds its V
 * values' sums per row to its own slots in shared memory ([U][2][SLIDE_THREADS], conflict-free); at the item's end
 * the group's lanes are added by shuffles (width G, lane 0 of the group holding the sum). Without
 * PRE (more taps: 3 -> 64 tiling) the group's sums are taken by shuffles at every row and added by
 * its lane 0 to the group's slots ([SLIDE_THREADS / G][taps][2]). Either way lane 0 of the group
 * writes the item's partial for each of its channels j: partial[(j * chunks + chunk) * 2 + {0, 1}],
 * chunk = (sample * bands + band) * strips + strip, chunks = n * bands * strips (k_fold_chunks
 * and k_bn_stats_final add them in flex_pool.cu). */
__device__ __forceinline__ double group_sum(double v, int G) { /* lane 0 of each group of G lanes */
    for (int off = G >> 1; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off, G);
    return v;
}

/* counter: a device u64, 0 on entry, that the blocks add their conv wins to; NULL: no count.
 * partial: STATS's sums (above). */
template <int V, int U, bool PRE, bool STATS>
__global__ void __launch_bounds__(SLIDE_THREADS, SLIDE_FWD_STATS_MIN_BLOCKS(V, U, STATS))
    k_slide_max_forward(const float *__restrict__ x, const float *__restrict__ bias, float *y,
                        uint8_t *__restrict__ window,
                        uint32_t *__restrict__ winners, uint32_t *__restrict__ ties, slide_fwd_geo g,
                        unsigned long long *__restrict__ counter, double *__restrict__ partial) {
    static_assert(!PRE || U <= 2, "PRE keeps 2U vectors of C in registers");
    const unsigned full = 0xffffffffu;
    const slide_item si = slide_item_of(g);
    const int G = si.G, gl = si.gl, strip = si.strip, band = si.band, lo = si.lo, hi = si.hi, step = si.step;
    const bool live = si.live;
    const size_t it = si.it, plane = si.plane, sample = si.sample; /* pooled plane (sample, ci) */
    const bool tapped = live && lo < hi; /* an untapped channel writes nothing (its window bytes included) */
    const int h = g.s.h, w = g.s.w;
    const int c0 = (strip * G + gl) * V;
    const int r0 = band * g.s.rows, r1 = min(r0 + g.s.rows, h);
    const bool cols = tapped && c0 < w;
    const bool edge_l = cols && gl == 0 && c0 > 0;         /* column c0-1 is in the strip to the left */
    const bool edge_r = cols && gl == G - 1 && c0 + V < w; /* column c0+V is in the strip to the right */
    const bool whole_cols = gl + 32 / V <= G && c0 + 32 <= w; /* this lane and the next 32/V-1 hold 32 elements */
    const float *xp = x + plane * (size_t)g.hw;
    uint8_t *wp = window + plane * (size_t)g.hw;
    const size_t e_first = (sample * (size_t)g.c_out + (size_t)(tapped ? lo : 0)) * (size_t)g.hw; /* tap 0, p = 0 */
    const size_t tap_stride = (size_t)step * (size_t)g.hw;
    float *yc = y + e_first;

    /* rows oh-1 (a), oh (b), oh+1 (c): 3-wide maxima and their kw (2 bits per column) */
    float va[V], vb[V], vc[V];
    unsigned ka = 0, kb = 0, kc = 0;
#pragma unroll
    for (int j = 0; j < V; j++) va[j] = vb[j] = vc[j] = 0.0f;
    fvec<V> cc[U], cn[U]; /* C of this step's output row; PRE: of the next one */
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int j = 0; j < V; j++) cc[u].v[j] = cn[u].v[j] = 0.0f;
    unsigned wins = 0;
    extern __shared__ double slide_sums[]; /* STATS: PRE [U][2][SLIDE_THREADS], else [groups][taps][2] */
    const int group = (int)(threadIdx.x >> g.s.log2_group);
    if (STATS) {
        if (PRE) {
#pragma unroll
            for (int u = 0; u < U; u++)
                slide_sums[(size_t)(2 * u) * SLIDE_THREADS + threadIdx.x] =
                    slide_sums[(size_t)(2 * u + 1) * SLIDE_THREADS + threadIdx.x] = 0.0;
        } else if (gl == 0) {
            for (int k = 0; k < 2 * g.taps; k++) slide_sums[(size_t)group * g.taps * 2 + k] = 0.0;
        }
    }

    const int steps = g.s.rows + 2;
    int ih = r0 - 1;
    /* rows are loaded two ahead of their use (ih <= r1 ends the band: at most steps rows) */
    slide_row<V> cur = slide_load<V>(xp, ih, w, tapped && ih >= 0 && ih <= r1 && ih < h, cols, edge_l, edge_r, c0);
    slide_row<V> nxt = slide_load<V>(xp, ih + 1, w, tapped && ih + 1 <= r1 && ih + 1 < h, cols, edge_l, edge_r, c0);
#pragma unroll 1
    for (int t = 0; t < steps; t++, ih++) {
        const int in = ih + 2;
        const slide_row<V> far = slide_load<V>(xp, in, w, tapped && in <= r1 && in < h, cols, edge_l, edge_r, c0);
        if constexpr (PRE) { /* C of output row ih (the next step's), issued now, used one step later */
#pragma unroll
            for (int u = 0; u < U; u++) cc[u] = cn[u];
            const bool next_out = cols && ih >= r0 && ih < r1;
#pragma unroll
            for (int u = 0; u < U; u++)
                if (next_out && lo + u * step < hi) cn[u] = load_vec<V>(yc + (size_t)u * tap_stride + (size_t)ih * w + c0);
        }
        float left = __shfl_up_sync(full, cur.v.v[V - 1], 1, G);
        float right = __shfl_down_sync(full, cur.v.v[0], 1, G);
        if (edge_l) left = cur.left;
        if (edge_r) right = cur.right;
        ka = kb;
        kb = kc;
        kc = 0;
#pragma unroll
        for (int j = 0; j < V; j++) { /* row ih's window around column ow, in kw order over the in-bounds columns */
            va[j] = vb[j];
            vb[j] = vc[j];
            const int ow = c0 + j;
            const float lv = j == 0 ? left : cur.v.v[j > 0 ? j - 1 : 0], mv = cur.v.v[j];
            const float rv = j == V - 1 ? right : cur.v.v[j < V - 1 ? j + 1 : 0];
            float best = mv;
            unsigned kw = 1;
            if (ow > 0) {
                best = lv;
                kw = 0;
                if (pool_better(mv, best)) {
                    best = mv;
                    kw = 1;
                }
            }
            if (ow + 1 < w && pool_better(rv, best)) {
                best = rv;
                kw = 2;
            }
            vc[j] = best;
            kc |= kw << (2 * j);
        }
        const int oh = ih - 1; /* rows oh-1, oh, oh+1 are now in a, b, c */
        if (t >= 2) { /* warp-uniform: every group's band starts its outputs at t = 2 */
            const bool out = cols && oh < r1;
            fvec<V> pv;
            bvec<V> pb;
#pragma unroll
            for (int j = 0; j < V; j++) { /* in kh order over the in-bounds rows */
                float best = vb[j];
                unsigned place = 3u + ((kb >> (2 * j)) & 3u);
                if (oh > 0) {
                    best = va[j];
                    place = (ka >> (2 * j)) & 3u;
                    if (pool_better(vb[j], best)) {
                        best = vb[j];
                        place = 3u + ((kb >> (2 * j)) & 3u);
                    }
                }
                if (oh + 1 < h && pool_better(vc[j], best)) {
                    best = vc[j];
                    place = 6u + ((kc >> (2 * j)) & 3u);
                }
                pv.v[j] = best;
                pb.v[j] = (uint8_t)place;
            }
            const size_t off = (size_t)(out ? oh : 0) * (size_t)w + (size_t)c0;
            if (out) store_b<V>(wp + off, pb);
#pragma unroll 1
            for (int k0 = 0; k0 < g.taps; k0 += U) {
                if constexpr (!PRE) { /* the chunk's loads together, before any of them is used */
#pragma unroll
                    for (int u = 0; u < U; u++)
                        if (out && lo + (k0 + u) * step < hi) cc[u] = load_vec<V>(yc + (size_t)(k0 + u) * tap_stride + off);
                }
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int k = k0 + u;
                    const bool act = out && lo + k * step < hi;
                    const float bk = bias && act ? bias[lo + k * step] : 0.0f; /* the conv's bias, folded */
                    fvec<V> o;
                    unsigned nib = 0, tie_nib = 0;
#pragma unroll
                    for (int j = 0; j < V; j++) { /* flex_max_forward's expressions */
                        const float c = bias ? __fadd_rn(cc[u].v[j], bk) : cc[u].v[j], p = pv.v[j];
                        const bool cw = c > p; /* strict: a tie counts as pool */
                        o.v[j] = cw || c != c ? c : p;
                        nib |= (c >= p ? 1u : 0u) << j;
                        tie_nib |= (c == p ? 1u : 0u) << j;
                        wins += act && cw ? 1u : 0u;
                    }
                    const size_t e = e_first + (size_t)k * tap_stride + off;
                    if (act) store_vec<V>(yc + (size_t)k * tap_stride + off, o);
                    if constexpr (STATS) { /* the written values' sums, in double (section above) */
                        double s0 = 0.0, s1 = 0.0;
                        if (act)
#pragma unroll
                            for (int j = 0; j < V; j++) {
                                const double v = (double)o.v[j];
                                s0 += v;
                                s1 += v * v;
                            }
                        if constexpr (PRE) {
                            slide_sums[(size_t)(2 * u) * SLIDE_THREADS + threadIdx.x] += s0;
                            slide_sums[(size_t)(2 * u + 1) * SLIDE_THREADS + threadIdx.x] += s1;
                        } else {
                            s0 = group_sum(s0, G);
                            s1 = group_sum(s1, G);
                            if (gl == 0 && k < g.taps) {
                                slide_sums[((size_t)group * g.taps + k) * 2] += s0;
                                slide_sums[((size_t)group * g.taps + k) * 2 + 1] += s1;
                            }
                        }
                    }
                    const unsigned pos = (unsigned)e & 31u;
                    if (act && tie_nib) atomicOr(&ties[e >> 5], tie_nib << pos); /* V bits in one word */
                    unsigned bits = act ? nib << pos : 0u;
#pragma unroll
                    for (int d = 1; d * V < 32; d <<= 1) { /* segmented OR over the lanes of e's word */
                        const unsigned more = __shfl_down_sync(full, bits, d, G);
                        if (pos + (unsigned)(d * V) < 32u) bits |= more;
                    }
                    if (act && (gl == 0 || pos == 0)) { /* the first lane of its word in this group */
                        if (pos == 0 && whole_cols) winners[e >> 5] = bits;
                        else if (bits) atomicOr(&winners[e >> 5], bits);
                    }
                }
            }
        }
        cur = nxt;
        nxt = far;
    }
    if constexpr (STATS) { /* the item's partial per channel, by lane 0 of its group */
        const size_t chunks = (size_t)(g.s.items / (size_t)g.c_in), chunk = it % ((size_t)g.s.bands * g.s.strips) +
                                                                           sample * g.s.bands * g.s.strips;
        for (int k = 0; k < (PRE ? U : g.taps); k++) {
            double s0 = 0.0, s1 = 0.0;
            if constexpr (PRE) {
                s0 = group_sum(slide_sums[(size_t)(2 * k) * SLIDE_THREADS + threadIdx.x], G);
                s1 = group_sum(slide_sums[(size_t)(2 * k + 1) * SLIDE_THREADS + threadIdx.x], G);
            }
            if (gl == 0 && tapped && lo + k * step < hi) { /* (the group slots: lane 0's own writes) */
                if constexpr (!PRE) {
                    s0 = slide_sums[((size_t)group * g.taps + k) * 2];
                    s1 = slide_sums[((size_t)group * g.taps + k) * 2 + 1];
                }
                const size_t o = ((size_t)(lo + k * step) * chunks + chunk) * 2;
                partial[o] = s0;
                partial[o + 1] = s1;
            }
        }
    }
    if (counter) { /* the same for the whole launch */
        const unsigned long long total = bf_block_sum((unsigned long long)wins);
        if (threadIdx.x == 0 && total) atomicAdd(counter, total);
    }
}

template <int V, bool STATS>
static bf_status slide_forward_launch(bf_cuda_impl *im, const slide_fwd_geo &g, unsigned blocks, const float *x,
                                      const float *bias, float *y, uint8_t *window, uint32_t *winners,
                                      uint32_t *ties, unsigned long long *counter, double *partial, size_t smem) {
    if (g.taps == 1)
        k_slide_max_forward<V, 1, true, STATS>
            <<<blocks, SLIDE_THREADS, smem, im->stream>>>(x, bias, y, window, winners, ties, g, counter, partial);
    else if (g.taps == 2)
        k_slide_max_forward<V, 2, true, STATS>
            <<<blocks, SLIDE_THREADS, smem, im->stream>>>(x, bias, y, window, winners, ties, g, counter, partial);
    else
        k_slide_max_forward<V, 4, false, STATS>
            <<<blocks, SLIDE_THREADS, smem, im->stream>>>(x, bias, y, window, winners, ties, g, counter, partial);
    BF_LAUNCH_CHECK("k_slide_max_forward");
    return BF_OK;
}

/* Whether the forward's vector width suits the tensors: V = 4 (w % 4 == 0; every plane then starts
 * aligned, hw % 4 == 0) needs x and y 16-byte and window 4-byte aligned (cudaMalloc's 256 are, and
 * so are the model arena's 256-byte pieces). Unaligned ones go to the fused kernels rather than to
 * V = 1 at such a width, a configuration the lab never ran (its V = 1 planes have w % 4 != 0). */
inline bool slide_forward_aligned(const bf_pool_shape *ps, const float *x, const float *y, const uint8_t *window) {
    return ps->w_in % 4 != 0 || ((((uintptr_t)x | (uintptr_t)y) & 15u) == 0 && ((uintptr_t)window & 3u) == 0);
}

/* The forward's split for a call slide_takes and slide_forward_aligned accept: V = 4 when w % 4 == 0,
 * else V = 1; sm_count the device's (or SLIDE_STATS_SM_COUNT: the statistics' chunks, and so the
 * order of their additions, then depend on the shape alone). */
enum { SLIDE_STATS_SM_COUNT = 132 };
static slide_fwd_geo slide_forward_geo(int sm_count, const bf_pool_shape *ps, const bf_flex_shape *s,
                                       size_t *blocks) {
    const int V = ps->w_in % 4 == 0 ? 4 : 1;
    slide_fwd_geo g;
    g.s = slide_geo_of((size_t)s->n * s->c_in, ps->h_in, ps->w_in, V, sm_count, blocks);
    g.c_in = s->c_in;
    g.c_out = s->c_out;
    g.hw = s->hw;
    g.ratio = s->c_out % s->c_in == 0 ? s->c_out / s->c_in : 0;
    g.taps = g.ratio ? g.ratio : (s->c_out + s->c_in - 1) / s->c_in;
    return g;
}

/* STATS's shared memory (k_slide_max_forward's section on it) and its partials' chunks per channel. */
static size_t slide_stats_smem(const slide_fwd_geo &g) {
    const size_t slots = g.taps <= 2 ? (size_t)g.taps * SLIDE_THREADS : (size_t)(SLIDE_THREADS >> g.s.log2_group) * g.taps;
    return slots * 2 * sizeof(double);
}
static size_t slide_stats_chunks(const slide_fwd_geo &g) { return g.s.items / (size_t)g.c_in; }

/* flex_pool_max_forward's contract on split g (slide_forward_geo): counter a zeroed device u64 for
 * the conv wins or NULL; partial (NULL: none) STATS's sums, with smem its shared memory. */
static bf_status slide_forward_run(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s,
                                   const slide_fwd_geo &g, size_t blocks, const float *x, const float *bias, float *y,
                                   uint8_t *window, uint32_t *winners, uint32_t *ties, unsigned long long *counter,
                                   double *partial) {
    const size_t words = bf_cuda_div_up(out_elements(s), 32);
    if (ps->w_in % 32 != 0) /* some words straddle and are ORed in: the bitmap starts at zero */
        BF_CUDA_CHECK(cudaMemsetAsync(winners, 0, words * sizeof(uint32_t), im->stream));
    BF_CUDA_CHECK(cudaMemsetAsync(ties, 0, words * sizeof(uint32_t), im->stream)); /* ties are ORed in */
    if (blocks == 0) return BF_OK;
    const int V = g.s.w % 4 == 0 ? 4 : 1;
    const unsigned nb = (unsigned)blocks;
    im->flex_slide_launches++;
    if (partial) {
        const size_t smem = slide_stats_smem(g);
        if (V == 4)
            return slide_forward_launch<4, true>(im, g, nb, x, bias, y, window, winners, ties, counter, partial, smem);
        return slide_forward_launch<1, true>(im, g, nb, x, bias, y, window, winners, ties, counter, partial, smem);
    }
    if (V == 4) return slide_forward_launch<4, false>(im, g, nb, x, bias, y, window, winners, ties, counter, NULL, 0);
    return slide_forward_launch<1, false>(im, g, nb, x, bias, y, window, winners, ties, counter, NULL, 0);
}

/* flex_pool_max_forward's contract (y holds C on entry; conv_wins may be NULL) for a call slide_takes
 * and slide_forward_aligned accept. */
static bf_status slide_max_forward(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                   const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                   float *conv_wins) {
    size_t blocks;
    const slide_fwd_geo g = slide_forward_geo(im->sm_count, ps, s, &blocks);
    unsigned long long *counter = NULL;
    if (conv_wins) {
        void *total;
        BF_TRY(bf_cuda_scratch(im, sizeof(unsigned long long), &total));
        BF_CUDA_CHECK(cudaMemsetAsync(total, 0, sizeof(unsigned long long), im->stream));
        counter = (unsigned long long *)total;
    }
    BF_TRY(slide_forward_run(im, ps, s, g, blocks, x, bias, y, window, winners, ties, counter, NULL));
    if (conv_wins) {
        k_add_count<<<1, 1, 0, im->stream>>>(counter, conv_wins);
        BF_LAUNCH_CHECK("k_add_count");
    }
    return BF_OK;
}

/* ==== the scatter (the lab's scatter v1): flex_pool_scatter_add for 3x3/1/1, BIT FOR BIT ====
 *
 *   dx [planes, h, w] += maxpool_backward(dpooled [planes, h, w]) through window [planes, h, w]
 *
 * where window byte place = kh*3 + kw of pooled element o = (oh, ow) names input (oh-1+kh, ow-1+kw)
 * (always in bounds, as the forward writes it). Input (r, c) sums, from acc = 0.0f, with __fadd_rn,
 * in ascending output order (oh = r-1, r, r+1; in each, ow = c-1, c, c+1; those in the plane), the
 * dpooled v of the windows whose byte names it, skipping v == 0 (+0 and -0; a NaN is added), and
 * then dx = __fadd_rn(dx, acc) (always, acc = 0 included): k_pool_scatter_add's terms, order and
 * roundings. Window o names (r, c) exactly when its byte is (r - oh + 1)*3 + (c - ow + 1), so with
 * the terms in that order input (r, c)'s sum is, row by row of outputs:
 *   oh = r-1: bytes 8, 7, 6 at ow = c-1, c, c+1;  oh = r: 5, 4, 3;  oh = r+1: 2, 1, 0.
 * A byte that names nothing in the plane (possible only where dpooled is 0: a channel no output
 * channel taps, whose bytes the forward leaves unwritten) is read here (k_pool_scatter_add does not
 * read it) but never used: dpooled 0 means no term. (A byte naming padding or > 8 under a nonzero
 * dpooled breaks the contract; k_pool_scatter_add's flat offset may then alias another element,
 * this kernel drops the term.)
 *
 * Work split (the sliding window above): an item is a band of at most `rows` INPUT rows [r0, r1) of
 * one plane and a strip. The item walks the OUTPUT rows oh = r0-1 .. r1, each loaded once by its
 * lanes (dpooled and the bytes, two rows ahead of their use), with the strip's edge columns c0-1 and
 * c0+V loaded by the edge lanes and the others' neighbours (ow = c-1, c+1) taken by shuffles. Each
 * lane keeps three accumulators per column, for input rows oh-1 (A), oh (B) and oh+1 (C): output row
 * oh adds to C its bytes 8, 7, 6 (C starts at 0.0f here: row oh is oh+1's first output row), to B
 * its bytes 5, 4, 3 and to A its bytes 2, 1, 0, each in ow order; A is then complete, and is added
 * to dx row oh-1 (loaded one step ahead) and stored: dx is read once and written once, coalesced.
 * Then A <- B, B <- C, C <- 0. Each term is added under its own predicate (never an added zero), so
 * no sign of zero or NaN differs from k_pool_scatter_add's. Byte model: 4 (dpooled) + 1 (byte) + 4
 * + 4 (dx read and written) = 13 bytes per element.
 * Registers (ptxas -v, sm_90, CUDA 13.0, in the lab): V = 4: 64, V = 2: 47, V = 1: 39; no spills. */

#define SLIDE_NO_TERM 0xFFu /* a code that matches no byte: dpooled 0 (no term) or no element there */

/* One output row as a lane loads it: its V dpooled values and bytes (byte j of b is column c0+j's),
 * and, in a strip's edge lanes, the column beyond (lv, lb: c0-1; rv, rb: c0+V). Zeros where nothing
 * is loaded (a row outside the band or plane, a lane past the row): dpooled 0 is no term. */
template <int V>
struct scat_raw {
    float v[V];
    uint32_t b;
    float lv, rv;
    uint32_t lb, rb;
};

/* A row with nothing loaded: no terms. */
template <int V>
__device__ __forceinline__ scat_raw<V> scat_none() {
    scat_raw<V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = 0.0f;
    r.b = 0;
    r.lv = r.rv = 0.0f;
    r.lb = r.rb = 0;
    return r;
}

template <int V>
__device__ __forceinline__ scat_raw<V> scat_load(const float *__restrict__ dp, const uint8_t *__restrict__ wq, int oh,
                                                 int w, bool row_ok, bool cols, bool edge_l, bool edge_r, int c0) {
    scat_raw<V> r = scat_none<V>();
    if (row_ok) {
        const int at = oh * w + c0; /* h*w fits in an int (slide_takes) */
        if (cols) {
            if constexpr (V == 4) {
                const float4 q = *reinterpret_cast<const float4 *>(dp + at);
                r.v[0] = q.x;
                r.v[1] = q.y;
                r.v[2] = q.z;
                r.v[3] = q.w;
                r.b = *reinterpret_cast<const uint32_t *>(wq + at); /* little-endian: byte j = column c0+j */
            } else if constexpr (V == 2) {
                const float2 q = *reinterpret_cast<const float2 *>(dp + at);
                r.v[0] = q.x;
                r.v[1] = q.y;
                r.b = *reinterpret_cast<const uint16_t *>(wq + at);
            } else {
                r.v[0] = dp[at];
                r.b = wq[at];
            }
        }
        if (edge_l) {
            r.lv = dp[at - 1];
            r.lb = wq[at - 1];
        }
        if (edge_r) {
            r.rv = dp[at + V];
            r.rb = wq[at + V];
        }
    }
    return r;
}

/* The code of a pooled element: its byte when its dpooled is a term (v != 0: not +0, not -0; a NaN
 * is one), else SLIDE_NO_TERM. */
__device__ __forceinline__ unsigned scat_code(float v, unsigned byte) { return v != 0.0f ? byte : SLIDE_NO_TERM; }

/* acc += v (add.rn.f32, __fadd_rn) when code == want: k_pool_scatter_add's skip and test, its
 * rounding. Written as one predicated add so that no branch (nor an added zero) is left to ptxas. */
__device__ __forceinline__ void scat_term(float &acc, unsigned code, unsigned want, float v) {
#ifdef BIOFLEX_KERNEL_EMULATOR /* tests/emu compiles this file for the CPU: no PTX there */
    if (code == want) acc = __fadd_rn(acc, v);
#else
    asm("{\n\t.reg .pred p;\n\tsetp.eq.u32 p, %1, %2;\n\t@p add.rn.f32 %0, %0, %3;\n\t}"
        : "+f"(acc)
        : "r"(code), "r"(want), "f"(v));
#endif
}

/* One output row's terms into the three accumulators of a lane's V columns (input rows oh-1: a,
 * oh: b, oh+1: c; a was complete before and is replaced by b, b by c, c starts at 0): the row's
 * codes, its neighbours ow = c0-1 and c0+V by shuffles within the group of G lanes (gl the lane's
 * place in it) or, at the group's edges, the edge columns the lane holds; then each term in ascending
 * output order. Called warp-wide. */
template <int V>
__device__ __forceinline__ void scat_row_terms(const scat_raw<V> &cur, int G, int gl, float (&a)[V], float (&b)[V],
                                               float (&c)[V]) {
    const unsigned full = 0xffffffffu;
    unsigned sc[V];
#pragma unroll
    for (int j = 0; j < V; j++) sc[j] = scat_code(cur.v[j], (cur.b >> (8 * j)) & 0xFFu);
    float lv = __shfl_up_sync(full, cur.v[V - 1], 1, G);
    unsigned ls = __shfl_up_sync(full, sc[V - 1], 1, G);
    float rv = __shfl_down_sync(full, cur.v[0], 1, G);
    unsigned rs = __shfl_down_sync(full, sc[0], 1, G);
    if (gl == 0) { /* the loaded edge column, or none (cur.lv is 0 unless edge_l: no term) */
        lv = cur.lv;
        ls = scat_code(cur.lv, cur.lb);
    }
    if (gl == G - 1) {
        rv = cur.rv;
        rs = scat_code(cur.rv, cur.rb);
    }
#pragma unroll
    for (int j = 0; j < V; j++) {
        a[j] = b[j];
        b[j] = c[j];
        c[j] = 0.0f;
        const float vl = j == 0 ? lv : cur.v[j > 0 ? j - 1 : 0], vm = cur.v[j];
        const float vr = j == V - 1 ? rv : cur.v[j < V - 1 ? j + 1 : 0];
        const unsigned sl = j == 0 ? ls : sc[j > 0 ? j - 1 : 0], sm = sc[j];
        const unsigned sr = j == V - 1 ? rs : sc[j < V - 1 ? j + 1 : 0];
        /* each accumulator in ow order: c-1 (kw = 2), c (kw = 1), c+1 (kw = 0) */
        scat_term(a[j], sl, 2u, vl); /* input row oh-1: kh = 0, its last output row */
        scat_term(a[j], sm, 1u, vm);
        scat_term(a[j], sr, 0u, vr);
        scat_term(b[j], sl, 5u, vl); /* input row oh: kh = 1 */
        scat_term(b[j], sm, 4u, vm);
        scat_term(b[j], sr, 3u, vr);
        scat_term(c[j], sl, 8u, vl); /* input row oh+1: kh = 2, its first output row */
        scat_term(c[j], sm, 7u, vm);
        scat_term(c[j], sr, 6u, vr);
    }
}

template <int V>
__global__ void __launch_bounds__(SLIDE_THREADS)
    k_slide_scatter_add(const uint8_t *__restrict__ window, const float *__restrict__ dpooled, float *__restrict__ dx,
                        slide_geo g) {
    const int lane = (int)(threadIdx.x & 31), G = 1 << g.log2_group, gl = lane & (G - 1);
    const size_t warp = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const size_t item = (warp << (5 - g.log2_group)) + (size_t)(lane >> g.log2_group);
    const bool live = item < g.items;
    const size_t it = live ? item : 0;
    const int strip = (int)(it % (size_t)g.strips);
    const size_t rest = it / (size_t)g.strips;
    const int band = (int)(rest % (size_t)g.bands);
    const size_t plane = rest / (size_t)g.bands;
    const int h = g.h, w = g.w;
    const int c0 = (strip * G + gl) * V;
    const int r0 = band * g.rows, r1 = min(r0 + g.rows, h); /* input rows [r0, r1); output rows r0-1 .. r1 */
    const bool cols = live && c0 < w;
    const bool edge_l = cols && gl == 0 && c0 > 0;         /* column c0-1 is in the strip to the left */
    const bool edge_r = cols && gl == G - 1 && c0 + V < w; /* column c0+V is in the strip to the right */
    const size_t base = plane * (size_t)h * (size_t)w;
    const float *dp = dpooled + base;
    const uint8_t *wq = window + base;
    float *dq = dx + base;

    /* accumulators of input rows oh-1 (a), oh (b), oh+1 (c); dx of input row oh-1 (loaded a step ahead) */
    float a[V], b[V], c[V], dxc[V];
#pragma unroll
    for (int j = 0; j < V; j++) a[j] = b[j] = c[j] = dxc[j] = 0.0f;
    const int steps = g.rows + 2; /* the same in every lane */
    int oh = r0 - 1;
    /* output rows are loaded two ahead of their use (oh <= r1 ends the band) */
    scat_raw<V> cur = scat_load<V>(dp, wq, oh, w, live && oh >= 0 && oh <= r1 && oh < h, cols, edge_l, edge_r, c0);
    scat_raw<V> nxt = scat_load<V>(dp, wq, oh + 1, w, live && oh + 1 <= r1 && oh + 1 < h, cols, edge_l, edge_r, c0);
#pragma unroll 1
    for (int t = 0; t < steps; t++, oh++) {
        const int on = oh + 2;
        const scat_raw<V> far = scat_load<V>(dp, wq, on, w, live && on <= r1 && on < h, cols, edge_l, edge_r, c0);
        /* dx of input row oh, completed at the next step */
        float dxn[V];
#pragma unroll
        for (int j = 0; j < V; j++) dxn[j] = 0.0f;
        if (cols && oh >= r0 && oh < r1) {
            if constexpr (V == 4) {
                const float4 q = *reinterpret_cast<const float4 *>(dq + oh * w + c0);
                dxn[0] = q.x;
                dxn[1] = q.y;
                dxn[2] = q.z;
                dxn[3] = q.w;
            } else if constexpr (V == 2) {
                const float2 q = *reinterpret_cast<const float2 *>(dq + oh * w + c0);
                dxn[0] = q.x;
                dxn[1] = q.y;
            } else {
                dxn[0] = dq[oh * w + c0];
            }
        }
        scat_row_terms<V>(cur, G, gl, a, b, c); /* output row oh's terms */
        /* input row oh-1 is complete */
        const int ri = oh - 1;
        if (cols && ri >= r0 && ri < r1) {
            float out[V];
#pragma unroll
            for (int j = 0; j < V; j++) out[j] = __fadd_rn(dxc[j], a[j]);
            if constexpr (V == 4) {
                *reinterpret_cast<float4 *>(dq + ri * w + c0) = make_float4(out[0], out[1], out[2], out[3]);
            } else if constexpr (V == 2) {
                *reinterpret_cast<float2 *>(dq + ri * w + c0) = make_float2(out[0], out[1]);
            } else {
                dq[ri * w + c0] = out[0];
            }
        }
#pragma unroll
        for (int j = 0; j < V; j++) dxc[j] = dxn[j];
        cur = nxt;
        nxt = far;
    }
}

/* flex_pool_scatter_add for a call slide_takes accepts: planes = n*c_in of h x w (h_out = h, w_out =
 * w). V = 4 when w % 4 == 0 and dpooled and dx are 16-byte and window 4-byte aligned (cudaMalloc's
 * 256 are), else V = 2 when w % 2 == 0 (and 8- and 2-byte alignment; 14x14), else V = 1. */
static bf_status slide_scatter_add(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s,
                                   const uint8_t *window, const float *dpooled, float *dx) {
    const int w = ps->w_in;
    const uintptr_t a = (uintptr_t)dpooled | (uintptr_t)dx;
    const int V = w % 4 == 0 && (a & 15u) == 0 && ((uintptr_t)window & 3u) == 0   ? 4
                  : w % 2 == 0 && (a & 7u) == 0 && ((uintptr_t)window & 1u) == 0 ? 2
                                                                                  : 1;
    size_t blocks;
    const slide_geo g = slide_geo_of((size_t)s->n * s->c_in, ps->h_in, w, V, im->sm_count, &blocks);
    if (blocks == 0) return BF_OK;
    im->flex_slide_launches++;
    if (V == 4) k_slide_scatter_add<4><<<(unsigned)blocks, SLIDE_THREADS, 0, im->stream>>>(window, dpooled, dx, g);
    else if (V == 2) k_slide_scatter_add<2><<<(unsigned)blocks, SLIDE_THREADS, 0, im->stream>>>(window, dpooled, dx, g);
    else k_slide_scatter_add<1><<<(unsigned)blocks, SLIDE_THREADS, 0, im->stream>>>(window, dpooled, dx, g);
    BF_LAUNCH_CHECK("k_slide_scatter_add");
    return BF_OK;
}


/* ==== the route with the scatter: flex_pool_max_backward_scatter(_bn) for 3x3/1/1, BIT FOR BIT ====
 *
 * k_route_scatter's contract (flex_pool.cu) on the scatter's sliding window: each output position o
 * of pooled plane (n, i) has a share, the sum over the output channels j tapping i, in ascending
 * order from 0.0f, of g - dc, with g = dy[e] (with BN: the batch-norm's dx from dz[e] and y[e],
 * bn_grad_at) and dc = routed(g, bits of e), e = (n*c_out + j)*hw + o; dconv[e] = dc. Input (r, c)
 * sums from 0.0f, in ascending output order, the shares of the windows whose byte names it, and dx
 * is overwritten with the sum. As in the scatter, a zero share is no term (adding +0 or -0 to a sum
 * that starts at +0 changes no bit: the sum is never -0).
 *
 * The walk is k_slide_scatter_add's, with each output row's V shares computed at the row's own step
 * where the scatter loaded dpooled two rows ahead (computed shares gain nothing from being early, and
 * two rows fewer in registers: 76 rather than 128 at V = 4 with the batch-norm): for every tap, one vector load of dy (and y), the V positions' bits from one word
 * each of winners and ties, and one vector store of dconv. Output rows r0-1 and r1 (the band's halo)
 * and the strip-edge columns c0-1 and c0+V belong to other items: their shares are computed again,
 * their dconv not written. So dy is read by two items there and must not be dconv's buffer (the
 * caller checks that the two do not overlap; the fused kernel takes dconv over dy). Untapped planes
 * (tiling that narrows) have no shares: their dx is 0. Byte model: per output element 4 (dy) + 4
 * (dconv) + 1/4 (bits) [+ 4 (y) with BN], per pooled element 1 (byte) and per input element 4 (dx),
 * plus the halo rows' dy (and y) again, 2/rows of them. */

struct route_args {
    const uint8_t *wq;        /* the plane's window bytes */
    const uint32_t *winners, *ties;
    const float *dy, *y;      /* y with BN only */
    float *dconv;
    size_t e_first, tap_stride; /* element of tap 0 at position 0; between taps */
    int lo, hi, step, w;      /* the tapping channels lo, lo+step, ... < hi; the row width */
    float tie_share;
};

/* The share of one position p of the plane (an edge column: no dconv written). */
template <bool BN>
__device__ __forceinline__ float route_share_one(const route_args &a, const bn_grad_dev &bn, int p) {
    float share = 0.0f;
    for (int j = a.lo, k = 0; j < a.hi; j += a.step, k++) {
        const size_t e = a.e_first + (size_t)k * a.tap_stride + (size_t)p;
        float gv = a.dy[e];
        if (BN) gv = bn_grad_at(bn, j, a.y[e], gv);
        const float dc = routed(gv, a.winners[e >> 5], a.ties[e >> 5], (unsigned)(e & 31u), a.tie_share);
        share = __fadd_rn(share, __fsub_rn(gv, dc));
    }
    return share;
}

/* Output row oh as a lane sees it (scat_raw: V shares and bytes, the edge columns' beyond): shares
 * of the tapped channels (tapped), dconv written where the lane owns the row (own), and with DBIAS
 * added to db[k] for tap k (at most 2 taps: the host's rule). */
template <int V, bool BN, bool DBIAS>
__device__ __forceinline__ scat_raw<V> route_row(const route_args &a, const bn_grad_dev &bn, int oh, bool row_ok,
                                                 bool tapped, bool own, bool cols, bool edge_l, bool edge_r, int c0,
                                                 double *db) {
    scat_raw<V> r = scat_none<V>();
    if (!row_ok) return r;
    const int at = oh * a.w + c0; /* h*w fits in an int (slide_takes) */
    if (cols) {
        if constexpr (V == 4) r.b = *reinterpret_cast<const uint32_t *>(a.wq + at); /* byte j = column c0+j */
        else if constexpr (V == 2) r.b = *reinterpret_cast<const uint16_t *>(a.wq + at);
        else r.b = a.wq[at];
        if (tapped)
            for (int j = a.lo, k = 0; j < a.hi; j += a.step, k++) {
                const size_t e = a.e_first + (size_t)k * a.tap_stride + (size_t)at; /* a multiple of V */
                fvec<V> gv = load_vec<V>(a.dy + e);
                if (BN) {
                    const fvec<V> yv = load_vec<V>(a.y + e);
#pragma unroll
                    for (int q = 0; q < V; q++) gv.v[q] = bn_grad_at(bn, j, yv.v[q], gv.v[q]);
                }
                const uint32_t win = a.winners[e >> 5], tie = a.ties[e >> 5]; /* V elements in one word */
                fvec<V> dc;
#pragma unroll
                for (int q = 0; q < V; q++) {
                    dc.v[q] = routed(gv.v[q], win, tie, (unsigned)((e + (size_t)q) & 31u), a.tie_share);
                    r.v[q] = __fadd_rn(r.v[q], __fsub_rn(gv.v[q], dc.v[q]));
                }
                if (own) store_vec<V>(a.dconv + e, dc);
                if (DBIAS && own)
#pragma unroll
                    for (int q = 0; q < V; q++) db[k ? 1 : 0] += (double)dc.v[q];
            }
    }
    if (edge_l) {
        r.lb = a.wq[at - 1];
        if (tapped) r.lv = route_share_one<BN>(a, bn, at - 1);
    }
    if (edge_r) {
        r.rb = a.wq[at + V];
        if (tapped) r.rv = route_share_one<BN>(a, bn, at + V);
    }
    return r;
}

/* DBIAS (at most 2 taps): the conv's bias gradient, each item's owned dconv per tap summed in double
 * by its lanes, then across its group by shuffles, lane 0 of the group writing
 * dbias_partial[j * chunks + chunk] (chunk = (sample * bands + band) * strips + strip, chunks =
 * n * bands * strips: the forward's STATS layout, one writer each), which k_fold_sums adds up.
 * Registers (ptxas -v, sm_90, CUDA 13): the two sums spill 16 bytes at V = 4 without BN and 4 at
 * V = 1 with it (V = 1 with BN and without DBIAS already spilled 20). */
template <int V, bool BN, bool DBIAS>
__global__ void __launch_bounds__(SLIDE_THREADS)
    k_slide_route_scatter(const uint8_t *__restrict__ window, const uint32_t *__restrict__ winners,
                          const uint32_t *__restrict__ ties, const float *__restrict__ dy,
                          const float *__restrict__ y, float *__restrict__ dconv, float *__restrict__ dx,
                          slide_fwd_geo g, float tie_share, bn_grad_dev bn, double *__restrict__ dbias_partial) {
    const slide_item si = slide_item_of(g);
    const int G = si.G, gl = si.gl, strip = si.strip, band = si.band;
    const bool live = si.live;
    const size_t plane = si.plane, sample = si.sample; /* pooled plane (sample, ci) */
    route_args a;
    a.lo = si.lo; /* the output channels that copy ci, as the forward's */
    a.hi = si.hi;
    a.step = si.step;
    const bool tapped = live && a.lo < a.hi;
    const int h = g.s.h, w = g.s.w;
    const int c0 = (strip * G + gl) * V;
    const int r0 = band * g.s.rows, r1 = min(r0 + g.s.rows, h); /* input rows [r0, r1); output rows r0-1 .. r1 */
    const bool cols = live && c0 < w;                      /* dx is written for untapped planes too (0) */
    const bool edge_l = cols && gl == 0 && c0 > 0;         /* column c0-1 is in the strip to the left */
    const bool edge_r = cols && gl == G - 1 && c0 + V < w; /* column c0+V is in the strip to the right */
    a.wq = window + plane * (size_t)g.hw;
    a.winners = winners;
    a.ties = ties;
    a.dy = dy;
    a.y = y;
    a.dconv = dconv;
    a.e_first = (sample * (size_t)g.c_out + (size_t)(tapped ? a.lo : 0)) * (size_t)g.hw;
    a.tap_stride = (size_t)a.step * (size_t)g.hw;
    a.w = w;
    a.tie_share = tie_share;
    float *dq = dx + plane * (size_t)g.hw;

    float acc_a[V], acc_b[V], acc_c[V]; /* input rows oh-1, oh, oh+1 */
#pragma unroll
    for (int j = 0; j < V; j++) acc_a[j] = acc_b[j] = acc_c[j] = 0.0f;
    double db[2] = {0.0, 0.0}; /* DBIAS: this lane's dconv of taps 0 and 1 */
    const int steps = g.s.rows + 2; /* the same in every lane */
    int oh = r0 - 1;
#define ROUTE_ROW(o)                                                                                                  \
    route_row<V, BN, DBIAS>(a, bn, (o), live && (o) >= 0 && (o) <= r1 && (o) < h, tapped,                            \
                            cols && (o) >= r0 && (o) < r1, cols, edge_l, edge_r, c0, db)
#pragma unroll 1
    for (int t = 0; t < steps; t++, oh++) {
        /* the row's shares are computed as it is reached: unlike the scatter's loaded rows, they
         * would gain nothing from being taken ahead, and two rows fewer are kept in registers */
        const scat_raw<V> cur = ROUTE_ROW(oh);
        scat_row_terms<V>(cur, G, gl, acc_a, acc_b, acc_c); /* output row oh's terms */
        const int ri = oh - 1; /* input row oh-1 is complete: dx overwritten */
        if (cols && ri >= r0 && ri < r1) {
            fvec<V> o;
#pragma unroll
            for (int j = 0; j < V; j++) o.v[j] = acc_a[j];
            store_vec<V>(dq + ri * w + c0, o);
        }
    }
#undef ROUTE_ROW
    if constexpr (DBIAS) { /* every lane of the warp is here (the step loop is the same for all) */
        const double s0 = group_sum(db[0], G), s1 = group_sum(db[1], G);
        if (tapped && gl == 0) {
            const size_t chunks = g.s.items / (size_t)g.c_in,
                         chunk = (sample * (size_t)g.s.bands + (size_t)band) * (size_t)g.s.strips + (size_t)strip;
            dbias_partial[(size_t)a.lo * chunks + chunk] = s0;
            if (a.lo + a.step < a.hi) dbias_partial[(size_t)(a.lo + a.step) * chunks + chunk] = s1;
        }
    }
}

/* Whether the sliding route with the scatter takes a call slide_takes accepts: dconv overlaps
 * neither dy (dz) nor, with the batch-norm, y (the halo rows and edge columns read them where
 * another item's dconv would be written). */
inline bool slide_route_apart(const bf_flex_shape *s, const float *dy, const float *y, const float *dconv) {
    const uintptr_t bytes = (uintptr_t)s->n * s->c_out * s->hw * sizeof(float), d = (uintptr_t)dconv;
    const uintptr_t a = (uintptr_t)dy, b = (uintptr_t)y;
    return (d + bytes <= a || a + bytes <= d) && (!y || d + bytes <= b || b + bytes <= d);
}

/* flex_pool_max_backward_scatter(_bn) for a call slide_takes and slide_route_apart accept (bn NULL:
 * without the batch-norm). V = 4 when w % 4 == 0 and dy, y, dconv, dx are 16-byte and window 4-byte
 * aligned, else 2 (w % 2 == 0, 8- and 2-byte alignment), else 1: a lane's V elements then share a
 * bitmap word. dbias (nullable): summed in the pass (DBIAS) where at most 2 output channels tap a
 * pooled one, else by the conv's channel sum over dconv after it. */
static bf_status slide_route_scatter(bf_cuda_impl *im, const bf_pool_shape *ps, const bf_flex_shape *s,
                                     const bn_grad_dev *bn, const uint8_t *window, const uint32_t *winners,
                                     const uint32_t *ties, const float *y, const float *dy, float *dconv, float *dx,
                                     float tie_share, float *dbias) {
    const int w = ps->w_in;
    const uintptr_t f = (uintptr_t)dy | (uintptr_t)dconv | (uintptr_t)dx | (uintptr_t)(bn ? y : dy);
    const int V = w % 4 == 0 && (f & 15u) == 0 && ((uintptr_t)window & 3u) == 0   ? 4
                  : w % 2 == 0 && (f & 7u) == 0 && ((uintptr_t)window & 1u) == 0 ? 2
                                                                                  : 1;
    slide_fwd_geo g;
    size_t blocks;
    g.s = slide_geo_of((size_t)s->n * s->c_in, ps->h_in, w, V, im->sm_count, &blocks);
    g.c_in = s->c_in;
    g.c_out = s->c_out;
    g.hw = s->hw;
    g.ratio = s->c_out % s->c_in == 0 ? s->c_out / s->c_in : 0;
    g.taps = g.ratio ? g.ratio : (s->c_out + s->c_in - 1) / s->c_in;
    if (blocks == 0) return BF_OK;
    im->flex_slide_launches++;
    const bn_grad_dev b = bn ? *bn : bn_grad_dev{};
    const bool fused_dbias = dbias && g.taps <= 2;
    const unsigned chunks = (unsigned)(g.s.items / (size_t)g.c_in);
    double *dbias_partial = NULL;
    if (fused_dbias) {
        void *scratch;
        BF_TRY(bf_cuda_scratch(im, (size_t)s->c_out * chunks * sizeof(double), &scratch));
        dbias_partial = (double *)scratch;
    }
#define ROUTE_LAUNCH(V_, BN_, DB_)                                                                                    \
    k_slide_route_scatter<V_, BN_, DB_><<<(unsigned)blocks, SLIDE_THREADS, 0, im->stream>>>(                         \
        window, winners, ties, dy, y, dconv, dx, g, tie_share, b, dbias_partial)
#define ROUTE_LAUNCH_V(BN_, DB_)                                                                                      \
    do {                                                                                                              \
        if (V == 4) ROUTE_LAUNCH(4, BN_, DB_);                                                                        \
        else if (V == 2) ROUTE_LAUNCH(2, BN_, DB_);                                                                   \
        else ROUTE_LAUNCH(1, BN_, DB_);                                                                               \
    } while (0)
    if (bn && dbias_partial) ROUTE_LAUNCH_V(true, true);
    else if (bn) ROUTE_LAUNCH_V(true, false);
    else if (dbias_partial) ROUTE_LAUNCH_V(false, true);
    else ROUTE_LAUNCH_V(false, false);
#undef ROUTE_LAUNCH_V
#undef ROUTE_LAUNCH
    BF_LAUNCH_CHECK("k_slide_route_scatter");
    if (fused_dbias) return fold_sums(im, dbias_partial, chunks, s->c_out, dbias);
    return dbias ? bf_cuda_channel_sum(im, s->n, s->c_out, s->hw, dconv, dbias) : BF_OK;
}

}  // namespace

#endif
