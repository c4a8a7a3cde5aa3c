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

}  // namespace

#endif
