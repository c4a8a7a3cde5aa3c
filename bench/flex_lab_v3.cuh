/* flex_lab_v3.cuh - version 3 of the flex lab (bench/flex_lab.cu, the only includer, after pool v1):
 * the library's flex_pool_max_forward for EXPAND and the 3x3 stride-1 pad-1 window, rebuilt on pool
 * v1's sliding window (pool_forward_kernel1, whose slide_geo, slide_row, slide_load and pool_better
 * it uses). Same four outputs, bit for bit, as src/kernels/flex_pool.cu's k_pool_max_forward_expand:
 *   y      [n, c_out, hw]  in place over C: y = C where C > P~ or C is a NaN, else P~;
 *   window [n, c_in, hw]   the place kh*3 + kw of the window's maximum (window_max's rule), written
 *                          only for the pooled channels some output channel taps;
 *   winners                bit e%32 of word e/32 = C >= P~ for output element e (spare bits 0);
 *   conv_wins              += #(C > P~), an integer sum (exact in any order) added as a double.
 *
 * Work split: pool v1's items (a group of G lanes, one band of rows of one POOLED plane (n, i), one
 * strip of 32*V columns; lane l owns V consecutive columns). At each output row the group has the
 * window maxima of its columns in registers; it stores the window bytes (uchar4 when V = 4), then
 * walks the output channels that copy pooled channel i under EXPAND (block copy: j = i*r .. i*r+r-1,
 * r = c_out/c_in; tiling, c_in not dividing c_out: j = i, i+c_in, ... < c_out; none when i >= c_out):
 * per channel one coalesced (float4) read of C and write of y, and the winners bits.
 *
 * Winners without per-element atomics: a lane's V bits are V consecutive elements inside one word
 * (V = 4 only when w % 4 == 0, so every lane's first element is a multiple of 4). The lanes of a group
 * hold consecutive elements of one row, so the lanes sharing a word are a contiguous run; a segmented
 * OR by __shfl_down_sync (log2(32/V) steps; lane l takes lane l+d's bits when element e_l + d*V is in
 * e_l's word, which needs no shuffled index) leaves the word's bits in the run's first lane. That lane
 * stores the word with a plain store when the run covers all 32 elements (the word's first element is
 * in this group, and its 31 successors are columns of the same row and group), else ORs it in with one
 * atomicOr (a word straddling two rows, strips, planes or groups). The bitmap is zeroed first unless
 * every word is whole (w % 32 == 0: rows and strips start on word boundaries; conv1_x at 224).
 *
 * Loop counts are warp-uniform (the shuffles need the whole warp): rows + 2 steps per item as in pool
 * v1, and at each output step `taps` channel slots (the most any pooled channel has) in chunks of U,
 * the slots past a group's own channels idle. C loads: with at most U = 2 taps (PRE) the next output
 * row's C is loaded one step ahead, into a second set of registers, so that a warp keeps C and x rows
 * in flight while it works; with more taps (3 -> 64 tiling) each chunk's U = 4 loads are issued
 * together before they are used. */
#ifndef BIOFLEX_FLEX_LAB_V3_CUH
#define BIOFLEX_FLEX_LAB_V3_CUH

struct v3_geo {
    slide_geo s;    /* pool v1's split over the n*c_in pooled planes */
    int c_in, c_out, hw;
    int ratio;      /* c_out / c_in when c_in divides c_out, else 0: tiling (j % c_in) */
    int taps;       /* the most output channels one pooled channel feeds: ratio, or ceil(c_out / c_in) */
};

/* Registers (ptxas -v, sm_90, CUDA 13): unbounded, V = 4 took 75 / 88 / 94 with U = 1 / 2 / 4, i.e. 3, 2
 * and 2 blocks of 256 per SM; a minimum of 3 blocks caps them at 77 / 80 / 80 without spills (24 warps
 * per SM; 4 blocks spill 16-164 bytes). V = 1: 58 / 60 / 70 (4, 4, 3 blocks). */
#define V3_MIN_BLOCKS(V, U) ((V) == 1 && (U) < 4 ? 1 : 3)
template <int V, int U, bool PRE>
__global__ void __launch_bounds__(LAB_THREADS, V3_MIN_BLOCKS(V, U))
    flex_forward_kernel3(const float *__restrict__ x, float *y, uint8_t *__restrict__ window,
                         uint32_t *__restrict__ winners, v3_geo g, unsigned long long *__restrict__ counter) {
    static_assert(!PRE || U <= 2, "PRE keeps 2U vectors of C in registers");
    const unsigned full = 0xffffffffu;
    const int lane = (int)(threadIdx.x & 31), G = 1 << g.s.log2_group, gl = lane & (G - 1);
    const size_t warp = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const size_t item = (warp << (5 - g.s.log2_group)) + (size_t)(lane >> g.s.log2_group);
    const bool live = item < g.s.items;
    const size_t it = live ? item : 0;
    const int strip = (int)(it % (size_t)g.s.strips);
    const size_t rest = it / (size_t)g.s.strips;
    const int band = (int)(rest % (size_t)g.s.bands);
    const size_t plane = rest / (size_t)g.s.bands; /* pooled plane (sample, ci) */
    const size_t sample = plane / (size_t)g.c_in;
    const int ci = (int)(plane - sample * (size_t)g.c_in);
    int lo, hi, step; /* the output channels that copy ci: lo, lo+step, ... < hi (flex_common's fold_candidates) */
    if (g.ratio) {
        lo = ci * g.ratio;
        hi = lo + g.ratio;
        step = 1;
    } else {
        lo = ci;
        hi = g.c_out;
        step = g.c_in;
    }
    const bool tapped = live && lo < hi; /* an untapped channel writes nothing (its window bytes included) */
    const int h = g.s.h, w = g.s.w;
    const int c0 = (strip * G + gl) * V;
    const int r0 = band * g.s.rows, r1 = min(r0 + g.s.rows, h);
    const bool cols = tapped && c0 < w;
    const bool edge_l = cols && gl == 0 && c0 > 0;
    const bool edge_r = cols && gl == G - 1 && c0 + V < w;
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

    const int steps = g.s.rows + 2;
    int ih = r0 - 1;
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
                if (next_out && lo + u * step < hi) cn[u] = load_f<V>(yc + (size_t)u * tap_stride + (size_t)ih * w + c0);
        }
        float left = __shfl_up_sync(full, cur.v.v[V - 1], 1, G);
        float right = __shfl_down_sync(full, cur.v.v[0], 1, G);
        if (edge_l) left = cur.left;
        if (edge_r) right = cur.right;
        ka = kb;
        kb = kc;
        kc = 0;
#pragma unroll
        for (int j = 0; j < V; j++) {
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
        const int oh = ih - 1;
        if (t >= 2) { /* warp-uniform: every group's band starts its outputs at t = 2 */
            const bool out = cols && oh < r1;
            fvec<V> pv;
            bvec<V> pb;
#pragma unroll
            for (int j = 0; j < V; j++) { /* kh order over the in-bounds rows, as pool v1 */
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
                        if (out && lo + (k0 + u) * step < hi) cc[u] = load_f<V>(yc + (size_t)(k0 + u) * tap_stride + off);
                }
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int k = k0 + u;
                    const bool act = out && lo + k * step < hi;
                    fvec<V> o;
                    unsigned nib = 0;
#pragma unroll
                    for (int j = 0; j < V; j++) { /* flex_max_forward's expressions */
                        const float c = cc[u].v[j], p = pv.v[j];
                        const bool cw = c > p; /* strict: a tie counts as pool */
                        o.v[j] = cw || c != c ? c : p;
                        nib |= (c >= p ? 1u : 0u) << j;
                        wins += act && cw ? 1u : 0u;
                    }
                    const size_t e = e_first + (size_t)k * tap_stride + off;
                    if (act) store_f<V>(yc + (size_t)k * tap_stride + off, o);
                    const unsigned pos = (unsigned)e & 31u;
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
    const unsigned long long total = bf_block_sum((unsigned long long)wins);
    if (threadIdx.x == 0 && total) atomicAdd(counter, total);
}

/* Why version 3 cannot run a shape, or NULL when it can. */
static const char *v3_unsupported(const bf_pool_shape *ps, const bf_flex_shape *fs) {
    if (fs->channels != BF_FLEX_CHANNELS_EXPAND) return "channels rule is not EXPAND";
    if (ps->k != 3 || ps->stride != 1 || ps->pad != 1) return "pool is not 3x3 stride 1 pad 1";
    if ((double)ps->h_in * ps->w_in > 2147483647.0) return "plane over 2^31 elements";
    if (fs->c_in < 1 || fs->c_out < 1) return "no channels";
    return NULL;
}

/* The launch geometry of version 3 (pool v1's split of the pooled planes), and its vector width and blocks. */
static v3_geo v3_geo_of(const bf_pool_shape *ps, const bf_flex_shape *fs, int *vec, unsigned *blocks) {
    v3_geo g;
    g.s = slide_geo_of(ps->n * ps->c, ps->h_in, ps->w_in, vec, blocks);
    g.c_in = fs->c_in;
    g.c_out = fs->c_out;
    g.hw = fs->hw;
    g.ratio = fs->c_out % fs->c_in == 0 ? fs->c_out / fs->c_in : 0;
    g.taps = g.ratio ? g.ratio : (fs->c_out + fs->c_in - 1) / fs->c_in;
    return g;
}

template <int V>
static void v3_launch_t(cudaStream_t stream, const v3_geo &g, unsigned blocks, const float *x, float *y,
                        uint8_t *window, uint32_t *winners, unsigned long long *counter) {
    if (g.taps == 1) flex_forward_kernel3<V, 1, true><<<blocks, LAB_THREADS, 0, stream>>>(x, y, window, winners, g, counter);
    else if (g.taps == 2) flex_forward_kernel3<V, 2, true><<<blocks, LAB_THREADS, 0, stream>>>(x, y, window, winners, g, counter);
    else flex_forward_kernel3<V, 4, false><<<blocks, LAB_THREADS, 0, stream>>>(x, y, window, winners, g, counter);
    LAUNCH_CHECK("flex_forward_kernel3");
}

/* Version 3's forward: flex_pool_max_forward's contract (y holds C on entry), conv_wins as the library
 * adds it. counter: a device u64 that is 0 on entry and left 0 (count_finish_kernel0 resets it). */
static void launch_v3_forward(cudaStream_t stream, const bf_pool_shape *ps, const bf_flex_shape *fs, const float *x,
                              float *y, uint8_t *window, uint32_t *winners, float *conv_wins,
                              unsigned long long *counter) {
    const char *why = v3_unsupported(ps, fs);
    if (why) {
        fprintf(stderr, "error: version 3 cannot run this shape: %s\n", why);
        exit(1);
    }
    int vec;
    unsigned blocks;
    const v3_geo g = v3_geo_of(ps, fs, &vec, &blocks);
    const size_t nc = (size_t)fs->n * fs->c_out * fs->hw, words = (nc + 31) / 32;
    if (ps->w_in % 32 != 0) /* some words straddle and are ORed in: the bitmap starts at zero */
        CK(cudaMemsetAsync(winners, 0, words * sizeof(uint32_t), stream));
    if (vec == 4) v3_launch_t<4>(stream, g, blocks, x, y, window, winners, counter);
    else v3_launch_t<1>(stream, g, blocks, x, y, window, winners, counter);
    count_finish_kernel0<<<1, 1, 0, stream>>>(counter, conv_wins);
    LAUNCH_CHECK("count_finish_kernel0 (version 3)");
}

#endif
