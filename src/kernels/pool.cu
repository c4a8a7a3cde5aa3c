/* pool.cu - max, average and global average pooling on the GPU (contracts in ops.h; the CPU twins
 * are in pool_cpu.c).
 *
 * Max pooling runs over planes (blockIdx.x the (n, c) plane; pool_common.cuh), with VGG's 2x2/2
 * and FlexNet's 3x3/1 windows compiled in, so no thread divides a 64-bit flat index.
 * Forward: one thread per output. Backward: one thread per INPUT, gathering from the outputs whose
 * window contains it, in ascending output order. This needs no atomics, overwrites all of dx, and
 * adds the same terms in the same order as the CPU's scatter, so the results are bit-identical to
 * it and repeat from run to run. VGG's exactly tiling 2x2/2 pools on float4 rows take two outputs
 * per thread, forward and backward (k_maxpool2x2_*_pairs), with the same results. */
#include <math.h>

#include "pool_common.cuh"

namespace { /* kernels and helpers are private to this file */

static bf_status check_pool(const bf_pool_shape *s, const char *op) {
    if (!s) return bf_error(BF_ERR_ARG, "%s: NULL shape", op);
    if (s->n <= 0 || s->c <= 0 || s->h_in <= 0 || s->w_in <= 0 || s->k <= 0 || s->stride <= 0 || s->pad < 0 ||
        2 * s->pad > s->k || s->h_out <= 0 || s->w_out <= 0 ||
        s->h_out != (s->h_in + 2 * s->pad - s->k) / s->stride + 1 ||
        s->w_out != (s->w_in + 2 * s->pad - s->k) / s->stride + 1)
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d c=%d %dx%d k=%d stride=%d pad=%d out=%dx%d "
                        "(initialise it with bf_pool_shape_init)", op, s->n, s->c, s->h_in, s->w_in, s->k,
                        s->stride, s->pad, s->h_out, s->w_out);
    if ((long long)s->h_in * s->w_in > INT32_MAX)
        return bf_error(BF_ERR_ARG, "%s: plane %dx%d too large for int32 argmax", op, s->h_in, s->w_in);
    return BF_OK;
}

/* One thread per output of a plane (blockIdx.x): padding is -infinity, so only the clipped window
 * competes; strictly greater replaces, so ties keep the first in row-major order; a NaN wins once,
 * so that it propagates (window_max). */
template <int K, int S>
__global__ void k_maxpool_forward(const float *__restrict__ x, float *__restrict__ y, int32_t *__restrict__ argmax,
                                  pool_geo g) {
    const int out_plane = g.h_out * g.w_out;
    const float *xp = x + (size_t)blockIdx.x * g.h_in * g.w_in;
    PLANE_POSITIONS(r, out_plane) {
        const size_t o = (size_t)blockIdx.x * out_plane + r;
        const int oh = r / g.w_out, ow = r - oh * g.w_out;
        int place;
        y[o] = window_max<K, S>(g, xp, oh, ow, &place);
        if (argmax) argmax[o] = window_offset<K, S>(g, oh, ow, (unsigned)place);
    }
}

/* One thread per input of a plane: the outputs whose window contains it, in ascending order. */
template <int K, int S>
__global__ void k_maxpool_backward(const float *__restrict__ dy, const int32_t *__restrict__ argmax,
                                   float *__restrict__ dx, pool_geo g) {
    const int in_plane = g.h_in * g.w_in;
    const size_t out_plane = (size_t)g.h_out * g.w_out;
    const float *dyp = dy + blockIdx.x * out_plane;
    const int32_t *ap = argmax + blockIdx.x * out_plane;
    PLANE_POSITIONS(r, in_plane) {
        const int ih = r / g.w_in, iw = r - ih * g.w_in;
        int oh0, oh1, ow0, ow1;
        covering_outputs(ih, window_stride<S>(g), g.pad, window_k<K>(g), g.h_out, &oh0, &oh1);
        covering_outputs(iw, window_stride<S>(g), g.pad, window_k<K>(g), g.w_out, &ow0, &ow1);
        float acc = 0.0f;
        for (int oh = oh0; oh < oh1; oh++)
            for (int ow = ow0; ow < ow1; ow++) {
                const int o = oh * g.w_out + ow;
                if (ap[o] == r) acc += dyp[o];
            }
        dx[(size_t)blockIdx.x * in_plane + r] = acc;
    }
}

/* ---- VGG's 2x2 stride-2 max-pool, two outputs per thread ----
 * The general kernels above spend about a quarter of the GPU's bandwidth on VGG's pools (each
 * thread one output, four scalar loads; backward, each input gathering from its window's output).
 * When the windows tile the plane exactly (2x2, stride 2, no padding, even sides) and rows hold
 * whole float4s (w_in % 4 == 0: VGG's 224, 112, 56 and 28), one thread takes two horizontally
 * adjacent outputs: their two input rows are one float4 each, the outputs a float2 and an int2;
 * backward, the same thread writes both windows' four dx as two float4s, since each input lies in
 * exactly one window. Same rules, same bits as the general kernels: window_max's scan order (row
 * major, the first maximum, a NaN once), and dx = 0 + dy where the argmax names the input (so a
 * -0 gradient arrives as +0, as the CPU's zeroed sum gives), 0 elsewhere. */

/* window_max's replacement rule: strictly greater, or the first NaN over a number. */
__device__ __forceinline__ void take_if_better(float v, int at, float *best, int *best_at) {
    if (v > *best || (v != v && *best == *best)) {
        *best = v;
        *best_at = at;
    }
}

/* One 2x2 window from its top row (a, b) and bottom row (c, d), top left element at input offset at. */
__device__ __forceinline__ float max2x2(float a, float b, float c, float d, int at, int w_in, int *place) {
    float best = a;
    int best_at = at;
    take_if_better(b, at + 1, &best, &best_at);
    take_if_better(c, at + w_in, &best, &best_at);
    take_if_better(d, at + w_in + 1, &best, &best_at);
    *place = best_at;
    return best;
}

__global__ void k_maxpool2x2_forward_pairs(const float *__restrict__ x, float *__restrict__ y,
                                           int32_t *__restrict__ argmax, int h_out, int w_out) {
    const int w_in = 2 * w_out, half = w_out / 2, out_plane = h_out * w_out;
    const float *xp = x + (size_t)blockIdx.x * 4 * out_plane;
    PLANE_POSITIONS(r, h_out * half) {
        const int oh = r / half, q = r - oh * half, at = 2 * oh * w_in + 4 * q;
        const float4 top = *reinterpret_cast<const float4 *>(xp + at);
        const float4 bottom = *reinterpret_cast<const float4 *>(xp + at + w_in);
        int place0, place1;
        const float y0 = max2x2(top.x, top.y, bottom.x, bottom.y, at, w_in, &place0);
        const float y1 = max2x2(top.z, top.w, bottom.z, bottom.w, at + 2, w_in, &place1);
        const size_t o = (size_t)blockIdx.x * out_plane + (size_t)oh * w_out + 2 * q;
        *reinterpret_cast<float2 *>(y + o) = make_float2(y0, y1);
        if (argmax) *reinterpret_cast<int2 *>(argmax + o) = make_int2(place0, place1);
    }
}

/* dx of one window's element at input offset at: dy where the argmax names it. */
__device__ __forceinline__ float routed(float dy, int place, int at) { return place == at ? __fadd_rn(0.0f, dy) : 0.0f; }

__global__ void k_maxpool2x2_backward_pairs(const float *__restrict__ dy, const int32_t *__restrict__ argmax,
                                            float *__restrict__ dx, int h_out, int w_out) {
    const int w_in = 2 * w_out, half = w_out / 2, out_plane = h_out * w_out;
    float *dxp = dx + (size_t)blockIdx.x * 4 * out_plane;
    PLANE_POSITIONS(r, h_out * half) {
        const int oh = r / half, q = r - oh * half, at = 2 * oh * w_in + 4 * q;
        const size_t o = (size_t)blockIdx.x * out_plane + (size_t)oh * w_out + 2 * q;
        const float2 g = *reinterpret_cast<const float2 *>(dy + o);
        const int2 place = *reinterpret_cast<const int2 *>(argmax + o);
        *reinterpret_cast<float4 *>(dxp + at) = make_float4(routed(g.x, place.x, at), routed(g.x, place.x, at + 1),
                                                            routed(g.y, place.y, at + 2), routed(g.y, place.y, at + 3));
        *reinterpret_cast<float4 *>(dxp + at + w_in) =
            make_float4(routed(g.x, place.x, at + w_in), routed(g.x, place.x, at + w_in + 1),
                        routed(g.y, place.y, at + w_in + 2), routed(g.y, place.y, at + w_in + 3));
    }
}

/* Whether the two-outputs-per-thread kernels apply: exact 2x2/2 tiling, float4 rows, and the
 * pointers aligned for the vector accesses (16 bytes for input-sized, 8 for output-sized ones). */
static bool pairs_apply(const bf_pool_shape *s, const void *in16, const void *out8a, const void *out8b) {
    const uintptr_t in = (uintptr_t)in16, out = (uintptr_t)out8a | (uintptr_t)out8b;
    return s->k == 2 && s->stride == 2 && s->pad == 0 && s->h_in == 2 * s->h_out && s->w_in == 2 * s->w_out &&
           s->w_in % 4 == 0 && in % 16 == 0 && out % 8 == 0;
}

__global__ void k_avgpool_forward(const float *__restrict__ x, float *__restrict__ y, size_t total, pool_geo g,
                                  float inv_area) {
    const size_t out_plane = (size_t)g.h_out * g.w_out, in_plane = (size_t)g.h_in * g.w_in;
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < total; o += (size_t)gridDim.x * blockDim.x) {
        const size_t p = o / out_plane;
        const int r = (int)(o - p * out_plane);
        const int oh = r / g.w_out, ow = r - oh * g.w_out;
        const int hs = oh * g.stride - g.pad, ws = ow * g.stride - g.pad;
        const int h0 = hs < 0 ? 0 : hs, w0 = ws < 0 ? 0 : ws;
        const int h1 = hs + g.k < g.h_in ? hs + g.k : g.h_in, w1 = ws + g.k < g.w_in ? ws + g.k : g.w_in;
        const float *xp = x + p * in_plane;
        float sum = 0.0f;
        for (int ih = h0; ih < h1; ih++)
            for (int iw = w0; iw < w1; iw++) sum += xp[ih * g.w_in + iw];
        y[o] = sum * inv_area;
    }
}

/* Every window lies inside the padded input (floor mode), so each covering output contributes
 * dy * 1/k^2 (count_include_pad). */
__global__ void k_avgpool_backward(const float *__restrict__ dy, float *__restrict__ dx, size_t total, pool_geo g,
                                   float inv_area) {
    const size_t out_plane = (size_t)g.h_out * g.w_out, in_plane = (size_t)g.h_in * g.w_in;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t p = i / in_plane;
        const int r = (int)(i - p * in_plane);
        const int ih = r / g.w_in, iw = r - ih * g.w_in;
        int oh0, oh1, ow0, ow1;
        covering_outputs(ih, g.stride, g.pad, g.k, g.h_out, &oh0, &oh1);
        covering_outputs(iw, g.stride, g.pad, g.k, g.w_out, &ow0, &ow1);
        const float *dyp = dy + p * out_plane;
        float acc = 0.0f;
        for (int oh = oh0; oh < oh1; oh++)
            for (int ow = ow0; ow < ow1; ow++) acc += __fmul_rn(dyp[oh * g.w_out + ow], inv_area); /* no FMA: as the CPU */
        dx[i] = acc;
    }
}

/* One warp per (n, c) plane: lanes take strided elements, summed in double in a fixed order. */
__global__ void k_global_avgpool_forward(const float *__restrict__ x, float *__restrict__ y, size_t planes, int hw) {
    const int lane = threadIdx.x & 31;
    const size_t warps_per_block = blockDim.x >> 5;
    for (size_t p = blockIdx.x * warps_per_block + (threadIdx.x >> 5); p < planes;
         p += (size_t)gridDim.x * warps_per_block) {
        const float *xp = x + p * (size_t)hw;
        double sum = 0.0;
        for (int j = lane; j < hw; j += 32) sum += (double)xp[j];
        sum = bf_warp_sum(sum);
        if (lane == 0) y[p] = (float)(sum / hw);
    }
}

__global__ void k_global_avgpool_backward(const float *__restrict__ dy, float *__restrict__ dx, size_t total, int hw,
                                          float inv_hw) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = dy[i / (size_t)hw] * inv_hw;
}

}  // namespace

/* ---- host side ---- */

extern "C" bf_status bf_cuda_maxpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y,
                                             int32_t *argmax) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_pool(s, "maxpool_forward"));
    if (!x || !y) return bf_error(BF_ERR_ARG, "maxpool_forward: NULL input or output");
    if (pairs_apply(s, x, y, argmax)) {
        const plane_launch l = plane_launch_of((size_t)s->n * s->c, (size_t)s->h_out * (s->w_out / 2));
        k_maxpool2x2_forward_pairs<<<l.grid, l.threads, 0, im->stream>>>(x, y, argmax, s->h_out, s->w_out);
        BF_LAUNCH_CHECK("k_maxpool2x2_forward_pairs");
        return BF_OK;
    }
    const plane_launch l = plane_launch_of((size_t)s->n * s->c, (size_t)s->h_out * s->w_out);
    LAUNCH_WINDOW(s, k_maxpool_forward, NO_EXTRA, l, x, y, argmax, pool_geo_of(s));
    return BF_OK;
}

extern "C" bf_status bf_cuda_maxpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy,
                                              const int32_t *argmax, float *dx) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_pool(s, "maxpool_backward"));
    if (!dy || !argmax || !dx) return bf_error(BF_ERR_ARG, "maxpool_backward: NULL pointer");
    if (pairs_apply(s, dx, dy, argmax)) {
        const plane_launch l = plane_launch_of((size_t)s->n * s->c, (size_t)s->h_out * (s->w_out / 2));
        k_maxpool2x2_backward_pairs<<<l.grid, l.threads, 0, im->stream>>>(dy, argmax, dx, s->h_out, s->w_out);
        BF_LAUNCH_CHECK("k_maxpool2x2_backward_pairs");
        return BF_OK;
    }
    const plane_launch l = plane_launch_of((size_t)s->n * s->c, (size_t)s->h_in * s->w_in);
    LAUNCH_WINDOW(s, k_maxpool_backward, NO_EXTRA, l, dy, argmax, dx, pool_geo_of(s));
    return BF_OK;
}

extern "C" bf_status bf_cuda_avgpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_pool(s, "avgpool_forward"));
    if (!x || !y) return bf_error(BF_ERR_ARG, "avgpool_forward: NULL input or output");
    const size_t total = (size_t)s->n * s->c * s->h_out * s->w_out;
    const float inv_area = 1.0f / (float)(s->k * s->k);
    k_avgpool_forward<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        x, y, total, pool_geo_of(s), inv_area);
    BF_LAUNCH_CHECK("k_avgpool_forward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_avgpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy, float *dx) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_pool(s, "avgpool_backward"));
    if (!dy || !dx) return bf_error(BF_ERR_ARG, "avgpool_backward: NULL pointer");
    const size_t total = (size_t)s->n * s->c * s->h_in * s->w_in;
    const float inv_area = 1.0f / (float)(s->k * s->k);
    k_avgpool_backward<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        dy, dx, total, pool_geo_of(s), inv_area);
    BF_LAUNCH_CHECK("k_avgpool_backward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_global_avgpool_forward(bf_backend *b, int n, int c, int hw, const float *x, float *y) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n <= 0 || c <= 0 || hw <= 0)
        return bf_error(BF_ERR_ARG, "global avgpool: invalid shape n=%d c=%d hw=%d", n, c, hw);
    if (!x || !y) return bf_error(BF_ERR_ARG, "global avgpool: NULL pointer");
    const size_t planes = (size_t)n * c;
    const unsigned warps_per_block = BF_CUDA_THREADS / 32;
    k_global_avgpool_forward<<<bf_cuda_grid(im, planes, warps_per_block), BF_CUDA_THREADS, 0, im->stream>>>(
        x, y, planes, hw);
    BF_LAUNCH_CHECK("k_global_avgpool_forward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_global_avgpool_backward(bf_backend *b, int n, int c, int hw, const float *dy,
                                                     float *dx) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n <= 0 || c <= 0 || hw <= 0)
        return bf_error(BF_ERR_ARG, "global avgpool: invalid shape n=%d c=%d hw=%d", n, c, hw);
    if (!dy || !dx) return bf_error(BF_ERR_ARG, "global avgpool: NULL pointer");
    const size_t total = (size_t)n * c * hw;
    const float inv_hw = 1.0f / (float)hw;
    k_global_avgpool_backward<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        dy, dx, total, hw, inv_hw);
    BF_LAUNCH_CHECK("k_global_avgpool_backward");
    return BF_OK;
}
