/* flex_lab_scatter.cuh - the flex lab's (bench/flex_lab.cu) "scatter v1 (sliding window)": a
 * candidate for the library's flex_pool_scatter_add (src/kernels/flex_pool.cu, k_pool_scatter_add)
 * for the 3x3 stride-1 pad-1 window, with the same result BIT FOR BIT:
 *
 *   dx [planes, h, w] += maxpool_backward(dpooled [planes, h, w]) through window [planes, h, w]
 *
 * where window byte place = kh*3 + kw of pooled element o = (oh, ow) names input (oh-1+kh, ow-1+kw)
 * (always in bounds, as forward writes it). Input (r, c) sums, from acc = 0.0f, with __fadd_rn, in
 * ascending output order (oh = r-1, r, r+1; in each, ow = c-1, c, c+1; those in the plane), the
 * dpooled v of the windows whose byte names it, skipping v == 0 (+0 and -0; a NaN is added), and
 * then dx = __fadd_rn(dx, acc) (always, acc = 0 included): k_pool_scatter_add's terms, order and
 * roundings. Window o names (r, c) exactly when its byte is (r - oh + 1)*3 + (c - ow + 1), so with
 * the terms in that order input (r, c)'s sum is, row by row of outputs:
 *   oh = r-1: bytes 8, 7, 6 at ow = c-1, c, c+1;  oh = r: 5, 4, 3;  oh = r+1: 2, 1, 0.
 * A byte that names nothing in the plane (possible only where dpooled is 0: a channel no output
 * channel taps, whose bytes forward leaves unwritten) is read here (the library does not read it)
 * but never used: dpooled 0 means no term. (A byte naming padding or > 8 under a nonzero dpooled
 * breaks the contract; the library's flat offset may then alias another element, this kernel drops
 * the term.)
 *
 * Work split (pool v1's, pool_forward_kernel1 in flex_lab.cu, restated here so that this header
 * stands alone): an item is a group of G lanes, a band of at most `rows` INPUT rows [r0, r1) of one
 * plane and one strip of 32*V columns (the whole row when it fits: G = the smallest power of two
 * >= ceil(w / V), several items per warp); lane l owns V consecutive columns c0 .. c0+V-1 (V = 4,
 * float4 / 4-byte loads and float4 dx stores, when w % 4 == 0 and the pointers are aligned; V = 2,
 * float2 / 2-byte, when w % 2 == 0 (14x14); else V = 1). The item walks the OUTPUT rows
 * oh = r0-1 .. r1 (rows + 2 steps in every lane: the shuffles need the whole warp), each loaded
 * once by its lanes (dpooled and the bytes, two rows
 * ahead of their use), with the strip's edge columns c0-1 and c0+V loaded by the edge lanes and the
 * others' neighbours (ow = c-1, c+1) taken by __shfl_up_sync / __shfl_down_sync. Each lane keeps
 * three accumulators per column, for input rows oh-1 (A), oh (B) and oh+1 (C): output row oh adds
 * to C its bytes 8, 7, 6 (C starts at 0.0f here: row oh is oh+1's first output row), to B its
 * bytes 5, 4, 3 and to A its bytes 2, 1, 0, each in ow order; A is then complete, and is added to
 * dx row oh-1 (loaded one step ahead) and stored: dx is read once and written once, coalesced.
 * Then A <- B, B <- C, C <- 0. Each term is added under its own predicate (never an added zero), so
 * no sign of zero or NaN differs from the library's.
 *
 * Halo: a band re-reads the two output rows beyond its ends (from L2, mostly: they belong to the
 * neighbouring band, the next item); bands of 32 rows, halved down to 4 while the grid has fewer
 * than 32 warps per SM (pool v1's rule). Byte model: 4 (dpooled) + 1 (byte) + 4 + 4 (dx read and
 * written) = 13 bytes per element.
 *
 * Checked (before any GPU run) by a lane-by-lane CPU emulation of this kernel against a C
 * transcription of k_pool_scatter_add: bit-identical on random data with +0/-0/NaN/inf dpooled and
 * unwritten bytes under zeros, V = 1/2/4, 1x1 .. 224x224, 5x300, strips, bands of 1..32 rows.
 * Registers (ptxas -v, sm_90, CUDA 13.0): V = 4: 64, V = 2: 47, V = 1: 39; no spills. Loop body:
 * about 52 (V = 4), 73 (V = 2) and 104 (V = 1) instructions per element.
 *
 * Include order: after lab_util.cuh or alone (it includes lab_util.cuh, whose guard makes that a
 * no-op in flex_lab.cu); it needs nothing else of flex_lab.cu. */
#ifndef BIOFLEX_FLEX_LAB_SCATTER_CUH
#define BIOFLEX_FLEX_LAB_SCATTER_CUH

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "lab_util.cuh" /* LAUNCH_CHECK, CK, LAB_THREADS, g_sm_count */

struct scat_geo {
    int h, w;       /* the plane: input and output (3x3, stride 1, pad 1 keeps its size) */
    int log2_group; /* G = 1 << log2_group lanes per item */
    int strips;     /* column strips of 32*V per row: 1 when the row fits in G lanes (G < 32 allowed) */
    int bands;      /* row bands per plane */
    int rows;       /* input rows per band; the last band may have fewer */
    size_t items;   /* planes * bands * strips */
};

#define SCAT_NONE 0xFFu /* a code that matches no byte: dpooled 0 (no term) or no element there */

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

template <int V>
__device__ __forceinline__ scat_raw<V> scat_load(const float *__restrict__ dp, const uint8_t *__restrict__ wq, int oh,
                                                 int w, bool row_ok, bool cols, bool edge_l, bool edge_r, int c0) {
    scat_raw<V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v[j] = 0.0f;
    r.b = 0;
    r.lv = r.rv = 0.0f;
    r.lb = r.rb = 0;
    if (row_ok) {
        const int at = oh * w + c0; /* h*w < 2^31 (lab_scatter_v1_supported) */
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
 * is one), else SCAT_NONE. */
__device__ __forceinline__ unsigned scat_code(float v, unsigned byte) { return v != 0.0f ? byte : SCAT_NONE; }

/* acc += v (add.rn.f32, __fadd_rn) when code == want: k_pool_scatter_add's skip and test, its
 * rounding. Written as one predicated add so that no branch (nor an added zero) is left to ptxas. */
__device__ __forceinline__ void scat_term(float &acc, unsigned code, unsigned want, float v) {
    asm("{\n\t.reg .pred p;\n\tsetp.eq.u32 p, %1, %2;\n\t@p add.rn.f32 %0, %0, %3;\n\t}"
        : "+f"(acc)
        : "r"(code), "r"(want), "f"(v));
}

template <int V>
__global__ void __launch_bounds__(LAB_THREADS)
    scatter_kernel1(const uint8_t *__restrict__ window, const float *__restrict__ dpooled, float *__restrict__ dx,
                    scat_geo g) {
    const unsigned full = 0xffffffffu;
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
        /* output row oh's codes, and its neighbours ow = c0-1 and c0+V */
        unsigned s[V];
#pragma unroll
        for (int j = 0; j < V; j++) s[j] = scat_code(cur.v[j], (cur.b >> (8 * j)) & 0xFFu);
        float lv = __shfl_up_sync(full, cur.v[V - 1], 1, G);
        unsigned ls = __shfl_up_sync(full, s[V - 1], 1, G);
        float rv = __shfl_down_sync(full, cur.v[0], 1, G);
        unsigned rs = __shfl_down_sync(full, s[0], 1, G);
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
            const unsigned sl = j == 0 ? ls : s[j > 0 ? j - 1 : 0], sm = s[j];
            const unsigned sr = j == V - 1 ? rs : s[j < V - 1 ? j + 1 : 0];
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

/* ---- host side ---- */

/* The SMs of the current device: the lab's g_sm_count once lab_device_open has set it, else asked. */
static inline int scat_sm_count(void) {
    if (g_sm_count > 1) return g_sm_count;
    static int n = 0;
    if (n == 0) {
        int d = 0;
        CK(cudaGetDevice(&d));
        CK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, d));
        if (n < 1) n = 1;
    }
    return n;
}

/* The shapes scatter v1 takes: any plane whose offsets (and one vector past them) fit in an int. */
static inline int lab_scatter_v1_supported(int h, int w) {
    return h >= 1 && w >= 1 && (long long)h * (long long)w <= 0x7fffffffLL - 64;
}

/* The split for planes of h x w with V-column lanes (pool v1's slide_geo_of): a row of L =
 * ceil(w / V) lane-columns takes the smallest power-of-two group >= L, or strips of 32 lanes when
 * L > 32; bands of at most 32 rows, halved down to 4 while there are fewer than 32 warps per SM. */
static inline scat_geo scat_geo_of(int planes, int h, int w, int V, unsigned *blocks) {
    scat_geo g;
    const int L = (w + V - 1) / V;
    g.h = h;
    g.w = w;
    g.log2_group = 0;
    while ((1 << g.log2_group) < L && g.log2_group < 5) g.log2_group++;
    g.strips = L > 32 ? (L + 31) / 32 : 1;
    const size_t groups_per_warp = (size_t)32 >> g.log2_group, warps_per_block = LAB_THREADS / 32;
    const size_t want = (size_t)32 * (size_t)scat_sm_count();
    int rows = h < 32 ? h : 32;
    for (;;) {
        g.rows = rows;
        g.bands = (h + rows - 1) / rows;
        g.items = (size_t)planes * g.bands * g.strips;
        const size_t warps = (g.items + groups_per_warp - 1) / groups_per_warp;
        if (rows <= 4 || warps >= want) break;
        rows = (rows + 1) / 2;
    }
    const size_t warps = (g.items + groups_per_warp - 1) / groups_per_warp;
    *blocks = (unsigned)((warps + warps_per_block - 1) / warps_per_block);
    return g;
}

/* Scatter v1: dx += maxpool_backward(dpooled) through window, 3x3 / stride 1 / pad 1, planes of h x w
 * (h_out = h, w_out = w), as flex_pool_scatter_add. V = 4 when w % 4 == 0 and dpooled and dx are
 * 16-byte aligned and window 4-byte aligned (cudaMalloc's 256 are), else V = 2 when w % 2 == 0 (and
 * 8- and 2-byte alignment), else V = 1. Exits on a shape
 * lab_scatter_v1_supported refuses (the caller checks first). */
static inline void lab_scatter_v1(const uint8_t *window, const float *dpooled, float *dx, int planes, int h, int w,
                                  cudaStream_t stream) {
    if (!lab_scatter_v1_supported(h, w)) {
        fprintf(stderr, "error: scatter v1 does not take %d x %d planes\n", h, w);
        exit(1);
    }
    if (planes <= 0) return;
    const uintptr_t a = (uintptr_t)dpooled | (uintptr_t)dx;
    const int V = w % 4 == 0 && (a & 15u) == 0 && ((uintptr_t)window & 3u) == 0   ? 4
                  : w % 2 == 0 && (a & 7u) == 0 && ((uintptr_t)window & 1u) == 0 ? 2
                                                                                  : 1;
    unsigned blocks;
    const scat_geo g = scat_geo_of(planes, h, w, V, &blocks);
    if (V == 4) scatter_kernel1<4><<<blocks, LAB_THREADS, 0, stream>>>(window, dpooled, dx, g);
    else if (V == 2) scatter_kernel1<2><<<blocks, LAB_THREADS, 0, stream>>>(window, dpooled, dx, g);
    else scatter_kernel1<1><<<blocks, LAB_THREADS, 0, stream>>>(window, dpooled, dx, g);
    LAUNCH_CHECK("scatter_kernel1");
}

#endif
