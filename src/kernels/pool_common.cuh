/* pool_common.cuh - internal: the pooling window as the CUDA kernels see it, shared by pool.cu and
 * flex_pool.cu (a flex layer's pool branch). */
#ifndef BIOFLEX_POOL_COMMON_CUH
#define BIOFLEX_POOL_COMMON_CUH

#include "cuda_backend.h"

namespace {

/* Geometry passed by value to the kernels. */
struct pool_geo {
    int h_in, w_in, h_out, w_out, k, stride, pad;
};

inline pool_geo pool_geo_of(const bf_pool_shape *s) {
    pool_geo g;
    g.h_in = s->h_in;
    g.w_in = s->w_in;
    g.h_out = s->h_out;
    g.w_out = s->w_out;
    g.k = s->k;
    g.stride = s->stride;
    g.pad = s->pad;
    return g;
}

/* Outputs o (along one axis) whose window [o*stride - pad, o*stride - pad + k) contains input i:
 * o in [*lo, *hi). Empty when *lo >= *hi. */
__device__ __forceinline__ void covering_outputs(int i, int stride, int pad, int k, int out_size, int *lo, int *hi) {
    int first = i + pad - k + 1; /* o*stride >= first */
    int l = first <= 0 ? 0 : (first + stride - 1) / stride;
    int h = (i + pad) / stride + 1; /* o*stride <= i + pad; i + pad >= 0 */
    if (h > out_size) h = out_size;
    *lo = l;
    *hi = h;
}

/* K and S: the window size and stride when known at compile time (the window's loops unroll and
 * the divisions by them become multiplications), 0 when they are read from the geometry. */
template <int K>
__device__ __forceinline__ int window_k(const pool_geo &g) { return K > 0 ? K : g.k; }
template <int S>
__device__ __forceinline__ int window_stride(const pool_geo &g) { return S > 0 ? S : g.stride; }

/* Window (oh, ow)'s maximum in one input plane: the first in row-major order, a NaN winning once
 * (so that it propagates), padding never (as maxpool_forward); *place = kh * k + kw. */
template <int K, int S>
__device__ __forceinline__ float window_max(const pool_geo &g, const float *__restrict__ plane, int oh, int ow,
                                            int *place) {
    const int k = window_k<K>(g);
    const int hs = oh * window_stride<S>(g) - g.pad, ws = ow * window_stride<S>(g) - g.pad;
    float best = 0.0f;
    int at = -1;
#pragma unroll
    for (int kh = 0; kh < k; kh++) {
        const int ih = hs + kh;
        if (ih < 0 || ih >= g.h_in) continue;
#pragma unroll
        for (int kw = 0; kw < k; kw++) {
            const int iw = ws + kw;
            if (iw < 0 || iw >= g.w_in) continue;
            const float v = plane[ih * g.w_in + iw];
            if (at < 0 || v > best || (v != v && best == best)) {
                best = v;
                at = kh * k + kw;
            }
        }
    }
    *place = at;
    return best;
}

/* The offset in its input plane of the element at place (kh * k + kw) of window (oh, ow). */
template <int K, int S>
__device__ __forceinline__ int window_offset(const pool_geo &g, int oh, int ow, unsigned place) {
    const int k = window_k<K>(g);
    const int ih = oh * window_stride<S>(g) - g.pad + (int)(place / (unsigned)k);
    const int iw = ow * window_stride<S>(g) - g.pad + (int)(place % (unsigned)k);
    return ih * g.w_in + iw;
}

/* Kernels over planes: blockIdx.x is the plane (n, c), blockIdx.y and threadIdx.x walk its
 * positions, so no thread divides a flat index by the plane size. Threads: the plane rounded up
 * to whole warps, 32..256; grid.y: the tiles of a plane, at most 65535 (the kernels loop). */
struct plane_launch {
    dim3 grid;
    unsigned threads;
};

inline plane_launch plane_launch_of(size_t planes, size_t plane_size) {
    plane_launch l;
    size_t t = (plane_size + 31) / 32 * 32;
    l.threads = (unsigned)(t > 256 ? 256 : t < 32 ? 32 : t);
    size_t tiles = (plane_size + l.threads - 1) / l.threads;
    l.grid = dim3((unsigned)planes, (unsigned)(tiles > 65535 ? 65535 : tiles < 1 ? 1 : tiles), 1);
    return l;
}

/* A plane kernel's position loop: p = this thread's positions of the block's plane. */
#define PLANE_POSITIONS(p, size) \
    for (int p = (int)(blockIdx.y * blockDim.x + threadIdx.x); p < (int)(size); p += (int)(gridDim.y * blockDim.x))

}  // namespace

/* Launches KERNEL<K, S EXTRA> (EXTRA: NO_EXTRA, or more template arguments with their leading
 * comma) over plane_launch l on im->stream, with the window size and stride compiled in for the
 * two windows VGG and FlexNet use (2x2 stride 2: VGG's pools and fully_flex's; 3x3 stride 1: a flex
 * conv's pool branch), read from the geometry for any other. */
#define LAUNCH_WINDOW(ps, KERNEL, EXTRA, l, ...)                                                    \
    do {                                                                                            \
        if ((ps)->k == 3 && (ps)->stride == 1)                                                      \
            KERNEL<3, 1 EXTRA><<<(l).grid, (l).threads, 0, im->stream>>>(__VA_ARGS__);              \
        else if ((ps)->k == 2 && (ps)->stride == 2)                                                 \
            KERNEL<2, 2 EXTRA><<<(l).grid, (l).threads, 0, im->stream>>>(__VA_ARGS__);              \
        else                                                                                        \
            KERNEL<0, 0 EXTRA><<<(l).grid, (l).threads, 0, im->stream>>>(__VA_ARGS__);              \
        BF_LAUNCH_CHECK(#KERNEL);                                                                   \
    } while (0)
#define NO_EXTRA

#endif
