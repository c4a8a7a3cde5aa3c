/* flex_common.cuh - internal: what the flex CUDA files (flex.cu, flex_pool.cu, flex_mask.cu) share:
 * the shape as the kernels see it, the channel taps of the widening, the fold-back candidates and
 * the mask joint's masks (the same float expressions as flex_cpu.h, so both backends agree bit for
 * bit), the partial-sum finisher, and the argument checks every op starts with. Kernels and helpers are private to each including file. */
#ifndef BIOFLEX_FLEX_COMMON_CUH
#define BIOFLEX_FLEX_COMMON_CUH

#include <math.h>

#include "bioflex/hash.h" /* bf_uniform: the stochastic masks */
#include "cuda_backend.h"
#include "require.h"

namespace {

/* The shape as the kernels need it; scale = c_in/c_out is rounded on the host, as the CPU does. */
struct flex_geo {
    int c_in, c_out, hw, bilinear;
    float scale;
};

/* Output channel j reads pooled channel i0 (weight w0) and, for BILINEAR, i1 (w1); i1 < 0: one tap. */
struct flex_taps {
    int i0, i1;
    float w0, w1;
};

__device__ __forceinline__ flex_taps taps_of(const flex_geo &g, int j) {
    flex_taps t = {0, -1, 1.0f, 0.0f};
    if (!g.bilinear) {
        t.i0 = g.c_out % g.c_in == 0 ? j / (g.c_out / g.c_in) : j % g.c_in;
        return t;
    }
    float src = __fsub_rn(__fmul_rn(g.scale, (float)j + 0.5f), 0.5f); /* PyTorch's float source index */
    if (src < 0.0f) src = 0.0f;
    t.i0 = (int)src;
    t.i1 = t.i0 + 1 < g.c_in ? t.i0 + 1 : g.c_in - 1;
    t.w1 = __fsub_rn(src, (float)t.i0);
    t.w0 = __fsub_rn(1.0f, t.w1);
    return t;
}

/* Output channels j = lo, lo+step, ... < hi that may tap pooled channel i (for BILINEAR a superset of
 * the channels tapping i with nonzero weight; taps_of decides; see flex_cpu.h on the zero-weight
 * taps at the left edge). Same ranges as flex_cpu.h, so the same terms are added in the same order. */
__device__ __forceinline__ void fold_candidates(const flex_geo &g, int i, int *lo, int *hi, int *step) {
    *step = 1;
    if (!g.bilinear) {
        if (g.c_out % g.c_in == 0) {
            const int r = g.c_out / g.c_in;
            *lo = i * r;
            *hi = *lo + r;
        } else {
            *lo = i;
            *hi = g.c_out;
            *step = g.c_in;
        }
        return;
    }
    const double ratio = (double)g.c_out / g.c_in;
    const int l = (int)floor((i - 0.5) * ratio - 0.5) - 1, h = (int)ceil((i + 1.5) * ratio - 0.5) + 1;
    *lo = l < 0 ? 0 : l;
    *hi = h > g.c_out ? g.c_out : h;
}

/* The widened value at position p of one sample's pooled block pn [c_in, hw]. */
__device__ __forceinline__ float widen_at(const flex_taps &t, const float *pn, size_t hw, size_t p) {
    const float v = pn[(size_t)t.i0 * hw + p];
    return t.i1 < 0 ? v : __fadd_rn(__fmul_rn(t.w0, v), __fmul_rn(t.w1, pn[(size_t)t.i1 * hw + p]));
}

/* ---- the mask joint's masks (ops.h at bf_flex_mask), the expressions of flex_cpu.h ---- */

/* The logistic function in double, rounded once to float, exactly as flex_cpu.c (see there). */
__device__ __forceinline__ float sigmoid(float x) { return (float)(1.0 / (1.0 + exp(-(double)x))); }

__device__ __forceinline__ float mask_of(bf_flex_mask kind, float factor, bf_draws draws, size_t i, float L) {
    switch (kind) {
    case BF_FLEX_MASK_SIGMOID_HARD: {
        const float v = __fadd_rn(__fdiv_rn(L, 6.0f), 0.5f);
        return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    case BF_FLEX_MASK_SIGMOID_MUL: return sigmoid(__fmul_rn(factor, L));
    case BF_FLEX_MASK_STE_FPBP:
    case BF_FLEX_MASK_STE_FPBS: return L > 0.5f ? 1.0f : 0.0f;
    case BF_FLEX_MASK_STE_FSBP:
    case BF_FLEX_MASK_STE_FSBS: return sigmoid(L) > 0.5f ? 1.0f : 0.0f;
    default: break;
    }
    float v = L;
    if (kind == BF_FLEX_MASK_STOCHASTIC_FSBP || kind == BF_FLEX_MASK_STOCHASTIC_FSBS ||
        kind == BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED)
        v = sigmoid(L);
    if (kind == BF_FLEX_MASK_STOCHASTIC_FCBP || kind == BF_FLEX_MASK_STOCHASTIC_FCBS ||
        kind == BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED)
        v = L < 0.0f ? 0.0f : L > 1.0f ? 1.0f : L;
    const float lower = floorf(v);
    return lower + (bf_draw_uniform(draws, i) < __fsub_rn(v, lower) ? 1.0f : 0.0f);
}

__device__ __forceinline__ float mask_grad(bf_flex_mask kind, float factor, float L, float m) {
    switch (kind) {
    case BF_FLEX_MASK_SIGMOID_HARD: return L > -3.0f && L < 3.0f ? 1.0f / 6.0f : 0.0f;
    case BF_FLEX_MASK_SIGMOID_MUL: return __fmul_rn(__fmul_rn(factor, m), __fsub_rn(1.0f, m));
    case BF_FLEX_MASK_STE_FPBS:
    case BF_FLEX_MASK_STE_FSBS:
    case BF_FLEX_MASK_STOCHASTIC_FPBS:
    case BF_FLEX_MASK_STOCHASTIC_FSBS:
    case BF_FLEX_MASK_STOCHASTIC_FCBS: {
        const float sg = sigmoid(L);
        return __fmul_rn(sg, __fsub_rn(1.0f, sg));
    }
    case BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED: {
        const float sg = sigmoid(sigmoid(L));
        return __fmul_rn(sg, __fsub_rn(1.0f, sg));
    }
    case BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED: {
        const float sg = sigmoid(L < 0.0f ? 0.0f : L > 1.0f ? 1.0f : L);
        return __fmul_rn(sg, __fsub_rn(1.0f, sg));
    }
    default: return 1.0f;
    }
}

/* Element idx of a [n, c, hw] tensor -> (sample, channel, position). */
__device__ __forceinline__ void split_index(size_t idx, int c, int hw, size_t *sample, int *channel, size_t *p) {
    const size_t plane = idx / (size_t)hw;
    *p = idx - plane * (size_t)hw;
    *sample = plane / (size_t)c;
    *channel = (int)(plane - *sample * (size_t)c);
}

#define GRID_STRIDE(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* One block: *out += the partials, added in a fixed tree order. */
__global__ void k_accumulate_partials(const double *__restrict__ partial, int count, float *out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = bf_block_sum(acc);
    if (threadIdx.x == 0) *out = (float)((double)*out + acc);
}

/* The count of a plane-kernel launch (one block per plane and tile: too many blocks for a partial
 * each): every block adds its whole-number count to one 64-bit integer, exact in any order, so the
 * total repeats bit for bit; k_add_count then adds it to *out as the partial sums do. Every thread
 * of the block must call it. */
__device__ __forceinline__ void add_block_count(double count, unsigned long long *total) {
    count = bf_block_sum(count);
    if (threadIdx.x == 0 && count != 0.0) atomicAdd(total, (unsigned long long)count);
}

__global__ void k_add_count(const unsigned long long *__restrict__ total, float *out) {
    *out = (float)((double)*out + (double)*total);
}

/* out[ch] = the chunks of partial[ch * chunks + k] added by one warp (lane l: chunks l, l + 32, ...
 * in order, then bf_warp_sum's tree), rounded to float once: the bias gradient the flex routes sum
 * per block or item (flex_pool.cu, flex_slide.cuh). */
__global__ void k_fold_sums(const double *__restrict__ partial, unsigned chunks, int c, float *__restrict__ out) {
    const int ch = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5), lane = (int)(threadIdx.x & 31u);
    if (ch >= c) return; /* whole warps: blockDim.x is a multiple of 32 */
    const double *p = partial + (size_t)ch * chunks;
    double a = 0.0;
    for (unsigned k = (unsigned)lane; k < chunks; k += 32) a += p[k];
    a = bf_warp_sum(a);
    if (lane == 0) out[ch] = (float)a;
}

/* k_fold_sums over c channels on im's stream. */
inline bf_status fold_sums(bf_cuda_impl *im, const double *partial, unsigned chunks, int c, float *out) {
    k_fold_sums<<<(unsigned)bf_cuda_div_up((size_t)c * 32, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, c, out);
    BF_LAUNCH_CHECK("k_fold_sums");
    return BF_OK;
}

/* ---- host helpers ---- */

inline bf_status check_kind(bf_flex_mask kind, const char *op) {
    if ((int)kind < 0 || kind >= BF_FLEX_MASK_COUNT) return bf_error(BF_ERR_ARG, "%s: unknown mask kind %d", op, (int)kind);
    return BF_OK;
}

inline flex_geo geo_of(const bf_flex_shape *s) {
    flex_geo g;
    g.c_in = s->c_in;
    g.c_out = s->c_out;
    g.hw = s->hw;
    g.bilinear = s->channels == BF_FLEX_CHANNELS_BILINEAR;
    g.scale = (float)s->c_in / (float)s->c_out;
    return g;
}

inline size_t out_elements(const bf_flex_shape *s) { return (size_t)s->n * s->c_out * s->hw; }
inline size_t out_planes(const bf_flex_shape *s) { return (size_t)s->n * s->c_out; }
inline size_t in_planes(const bf_flex_shape *s) { return (size_t)s->n * s->c_in; }

/* Blocks of a counting/summing launch: a function of the element count only (never of the device),
 * at most 1024 so that one block adds the partials, about 8 elements per thread before the cap. */
inline unsigned reduce_blocks(size_t n) {
    size_t blocks = bf_cuda_div_up(n, (size_t)BF_CUDA_THREADS * 8);
    return (unsigned)(blocks > 1024 ? 1024 : blocks < 1 ? 1 : blocks);
}

}  // namespace

/* The start of every op: device current, shape valid, no NULL tensor; declares im. */
#define FLEX_ENTER(op, ...)                                                           \
    bf_cuda_impl *im;                                                                 \
    BF_TRY(bf_cuda_enter(b, &im));                                                    \
    BF_TRY(bf_flex_shape_check(s, op));                                               \
    REQUIRE(op, __VA_ARGS__)

/* kernel over `planes` planes of `plane_size` positions (pool_common.cuh's plane_launch_of). */
#define LAUNCH_PLANES(kernel, planes, plane_size, ...)                                     \
    do {                                                                                   \
        const plane_launch lp_ = plane_launch_of((planes), (size_t)(plane_size));          \
        kernel<<<lp_.grid, lp_.threads, 0, im->stream>>>(__VA_ARGS__);                     \
        BF_LAUNCH_CHECK(#kernel);                                                          \
    } while (0)

#define LAUNCH_ELEMENTWISE(kernel, total, ...)                                                                   \
    do {                                                                                                         \
        kernel<<<bf_cuda_grid(im, (total), BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(__VA_ARGS__); \
        BF_LAUNCH_CHECK(#kernel);                                                                                \
    } while (0)

#endif
