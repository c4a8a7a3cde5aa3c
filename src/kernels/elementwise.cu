/* elementwise.cu - fill, scale, add, deterministic reductions, ReLU and dropout on the GPU
 * (contracts in ops.h; the CPU twins are in elementwise_cpu.c).
 *
 * Elementwise kernels are grid-stride loops over size_t indices. The two reductions (sum_squares,
 * accumulate_sum) are deterministic: a first kernel with a block count that depends on n only has
 * every thread accumulate a fixed strided subset in double, each block reduces in a fixed tree
 * order into one partial sum, and a second one-block kernel adds the partials in a fixed order. */
#include <math.h>

#include "bioflex/hash.h"
#include "cuda_backend.h"
#include "vector_access.cuh" /* fvec, load_vec, store_vec: the residual ReLU's 16-byte accesses */

namespace { /* kernels and helpers are private to this file */

/* ---- kernels ---- */

__global__ void k_fill(float *__restrict__ x, float value, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = value;
}

__global__ void k_scale(float *__restrict__ x, float alpha, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= alpha;
}

/* y may alias x0 or x1 (each element is read before it is written by the same thread). */
__global__ void k_add(const float *x0, const float *x1, float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = x0[i] + x1[i];
}

__global__ void k_mul(const float *x0, const float *x1, float *y, size_t n) { /* y may alias */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = x0[i] * x1[i];
}

/* One thread per output value: sample i, column j of its task's k. A task outside [0, num_tasks)
 * (device memory, not checked without a synchronisation) gives NaN instead of reading out of bounds. */
__global__ void k_task_slice_gather(int n, int k, int num_tasks, const int32_t *tasks, const float *full, float *out) {
    size_t total = (size_t)n * k;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e / k, j = e % k;
        int t = tasks[i];
        out[e] = t >= 0 && t < num_tasks ? full[(i * num_tasks + t) * k + j] : nanf("");
    }
}

/* One thread per full value: zero outside the sample's task slice. */
__global__ void k_task_slice_scatter(int n, int k, int num_tasks, const int32_t *tasks, const float *in, float *full) {
    size_t width = (size_t)num_tasks * k, total = (size_t)n * width;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e / width, col = e % width;
        int t = tasks[i];
        full[e] = t < 0 || t >= num_tasks ? nanf("") : (int)(col / k) == t ? in[i * k + col % k] : 0.0f;
    }
}

__global__ void k_add_inplace(float *y, const float *x, size_t n) { /* x may equal y (doubling) */
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

__global__ void k_axpy(float alpha, const float *x, float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i])); /* the CPU's two roundings */
}

/* x < 0 ? 0 : x, so that a NaN passes through (as in PyTorch and the CPU backend). y may alias x. */
__global__ void k_relu_forward(const float *x, float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

/* dx may alias dy. */
__global__ void k_relu_backward(const float *y, const float *dy, float *dx, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* The residual sum and its ReLU ([model] fuse_add_relu), V floats per thread and step (V = 4 when
 * every pointer is 16-byte aligned and n a multiple of 4: these passes are pure bandwidth, and a
 * 16-byte access moves four times the bytes per instruction). The expressions are the CPU's: the
 * sum rounded to a float, then x < 0 ? 0 : x (a NaN passes); y may alias x0 or x1. */
template <int V>
__global__ void k_add_relu_forward(const float *x0, const float *x1, float *y, size_t vectors) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < vectors; i += (size_t)gridDim.x * blockDim.x) {
        const fvec<V> a = load_vec<V>(x0 + i * V), c = load_vec<V>(x1 + i * V);
        fvec<V> out;
#pragma unroll
        for (int k = 0; k < V; k++) {
            const float sum = __fadd_rn(a.v[k], c.v[k]);
            out.v[k] = sum < 0.0f ? 0.0f : sum;
        }
        store_vec<V>(y + i * V, out);
    }
}

/* Both summands' gradient, dy where y > 0, from one read of y and dy; dx1 may be NULL (one summand
 * wanted), and either target may alias dy (each element is read before it is written). */
template <int V>
__global__ void k_add_relu_backward(const float *y, const float *dy, float *dx0, float *dx1, size_t vectors) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < vectors; i += (size_t)gridDim.x * blockDim.x) {
        const fvec<V> yv = load_vec<V>(y + i * V), g = load_vec<V>(dy + i * V);
        fvec<V> d;
#pragma unroll
        for (int k = 0; k < V; k++) d.v[k] = yv.v[k] > 0.0f ? g.v[k] : 0.0f;
        store_vec<V>(dx0 + i * V, d);
        if (dx1) store_vec<V>(dx1 + i * V, d);
    }
}

/* LeakyReLU, the CPU's expressions (the product rounded on its own); y may alias x, dx dy. */
__global__ void k_leaky_relu_forward(const float *x, float *y, size_t n, float slope) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        y[i] = v > 0.0f ? v : __fmul_rn(v, slope);
    }
}

__global__ void k_leaky_relu_backward(const float *y, const float *dy, float *dx, size_t n, float slope) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = dy[i];
        dx[i] = y[i] > 0.0f ? g : __fmul_rn(g, slope);
    }
}

/* Inverted dropout with the mask recomputed from (draws, i): the same expression as the CPU,
 * in * (keep * keep_scale), so the outputs are bit-identical. A dropped element is in * 0, not a
 * literal 0: a negative input gives -0 (and a NaN stays NaN) exactly as on the CPU. */
__global__ void k_dropout(const float *in, float *out, size_t n, size_t group, float p, float keep_scale,
                          bf_draws draws) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __fmul_rn(in[i], bf_draw_uniform(draws, group == 1 ? i : i - i % group) >= p ? keep_scale : 0.0f);
}

/* Rate coding, the same expression as the CPU: a spike when the counter's uniform is below the pixel. */
__global__ void k_encode_rate(const float *x, float *y, size_t n, size_t total, bf_draws draws) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float p = x[i % n];
        p = p < 0.0f ? 0.0f : (p > 1.0f ? 1.0f : p);
        y[i] = bf_draw_uniform(draws, i) < p ? 1.0f : 0.0f;
    }
}

/* The same expression as the CPU: lo + (hi - lo) * u without a fused multiply-add. */
__global__ void k_fill_uniform(float *x, size_t n, float lo, float span, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(lo, __fmul_rn(span, bf_uniform(seed, (uint64_t)i)));
}

/* Pass 1 of a sum: block b writes partial[b] = sum over its threads of their strided elements. */
template <bool SQUARES>
__global__ void k_sum_partial(const float *__restrict__ x, size_t n, double *__restrict__ partial) {
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double v = (double)x[i];
        acc += SQUARES ? v * v : v;
    }
    acc = bf_block_sum(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

/* Pass 2 (one block): total of partial[0..count); *out = total, or *out += total when ACCUMULATE. */
template <bool ACCUMULATE>
__global__ void k_sum_final(const double *__restrict__ partial, int count, float *out) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = bf_block_sum(acc);
    if (threadIdx.x == 0) *out = ACCUMULATE ? (float)((double)*out + acc) : (float)acc;
}

}  // namespace

/* ---- host side ---- */

#define ELEMENTWISE_ARGS(name, ...)                                                             \
    do {                                                                                        \
        const void *ptrs_[] = {__VA_ARGS__};                                                    \
        for (size_t k_ = 0; k_ < sizeof ptrs_ / sizeof ptrs_[0]; k_++)                          \
            if (!ptrs_[k_]) return bf_error(BF_ERR_ARG, "%s: NULL pointer for %zu elements", name, n); \
    } while (0)

extern "C" bf_status bf_cuda_fill(bf_backend *b, float *x, float value, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("fill", x);
    k_fill<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, value, n);
    BF_LAUNCH_CHECK("k_fill");
    return BF_OK;
}

extern "C" bf_status bf_cuda_scale(bf_backend *b, float *x, float alpha, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("scale", x);
    k_scale<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, alpha, n);
    BF_LAUNCH_CHECK("k_scale");
    return BF_OK;
}

extern "C" bf_status bf_cuda_add(bf_backend *b, const float *x0, const float *x1, float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("add", x0, x1, y);
    k_add<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x0, x1, y, n);
    BF_LAUNCH_CHECK("k_add");
    return BF_OK;
}

extern "C" bf_status bf_cuda_mul(bf_backend *b, const float *x0, const float *x1, float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("mul", x0, x1, y);
    k_mul<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x0, x1, y, n);
    BF_LAUNCH_CHECK("k_mul");
    return BF_OK;
}

extern "C" bf_status bf_cuda_add_inplace(bf_backend *b, float *y, const float *x, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("add_inplace", y, x);
    k_add_inplace<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(y, x, n);
    BF_LAUNCH_CHECK("k_add_inplace");
    return BF_OK;
}

extern "C" bf_status bf_cuda_axpy(bf_backend *b, float alpha, const float *x, float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("axpy", x, y);
    k_axpy<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(alpha, x, y, n);
    BF_LAUNCH_CHECK("k_axpy");
    return BF_OK;
}

/* Blocks of the first reduction pass: a function of n only (never of the device), at most 1024 so
 * that the second pass is one block, and about 8 elements per thread before the cap. */
static unsigned sum_blocks(size_t n) {
    size_t blocks = bf_cuda_div_up(n, (size_t)BF_CUDA_THREADS * 8);
    if (blocks > 1024) blocks = 1024;
    if (blocks < 1) blocks = 1;
    return (unsigned)blocks;
}

static bf_status launch_sum(bf_cuda_impl *im, const float *x, size_t n, float *out, bool squares, bool accumulate) {
    unsigned blocks = sum_blocks(n);
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, blocks * sizeof(double), &scratch));
    double *partial = (double *)scratch;
    if (n == 0) {
        /* an empty sum is 0: one partial of zero keeps the code path (and the *out write) uniform */
        BF_CUDA_CHECK(cudaMemsetAsync(partial, 0, sizeof(double), im->stream));
    } else if (squares) {
        k_sum_partial<true><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(x, n, partial);
        BF_LAUNCH_CHECK("k_sum_partial<squares>");
    } else {
        k_sum_partial<false><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(x, n, partial);
        BF_LAUNCH_CHECK("k_sum_partial");
    }
    if (accumulate) {
        k_sum_final<true><<<1, 1024, 0, im->stream>>>(partial, (int)blocks, out);
        BF_LAUNCH_CHECK("k_sum_final<accumulate>");
    } else {
        k_sum_final<false><<<1, 1024, 0, im->stream>>>(partial, (int)blocks, out);
        BF_LAUNCH_CHECK("k_sum_final");
    }
    return BF_OK;
}

extern "C" bf_status bf_cuda_sum_squares(bf_backend *b, const float *x, size_t n, float *out) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!out || (n > 0 && !x)) return bf_error(BF_ERR_ARG, "sum_squares: NULL pointer (n=%zu)", n);
    return launch_sum(im, x, n, out, true, false);
}

extern "C" bf_status bf_cuda_accumulate_sum(bf_backend *b, const float *x, size_t n, float *acc) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!acc || (n > 0 && !x)) return bf_error(BF_ERR_ARG, "accumulate_sum: NULL pointer (n=%zu)", n);
    if (n == 0) return BF_OK; /* acc += 0 */
    return launch_sum(im, x, n, acc, false, true);
}

extern "C" bf_status bf_cuda_relu_forward(bf_backend *b, const float *x, float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("relu_forward", x, y);
    k_relu_forward<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, y, n);
    BF_LAUNCH_CHECK("k_relu_forward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("relu_backward", y, dy, dx);
    k_relu_backward<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(y, dy, dx, n);
    BF_LAUNCH_CHECK("k_relu_backward");
    return BF_OK;
}

/* Whether every pointer given (NULL ones ignored) is 16-byte aligned and n a multiple of 4 floats:
 * the residual ReLU's kernels then run with V = 4. */
static bool vectors_of_four(size_t n, const void *p0, const void *p1, const void *p2, const void *p3) {
    const void *ptrs[] = {p0, p1, p2, p3};
    for (const void *p : ptrs)
        if (p && (uintptr_t)p % 16 != 0) return false;
    return n % 4 == 0;
}

extern "C" bf_status bf_cuda_add_relu_forward(bf_backend *b, const float *x0, const float *x1, float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("add_relu_forward", x0, x1, y);
    if (vectors_of_four(n, x0, x1, y, NULL))
        k_add_relu_forward<4><<<bf_cuda_grid(im, n / 4, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x0, x1, y, n / 4);
    else
        k_add_relu_forward<1><<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x0, x1, y, n);
    BF_LAUNCH_CHECK("k_add_relu_forward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_add_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx0, float *dx1,
                                               size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0 || (!dx0 && !dx1)) return BF_OK;
    ELEMENTWISE_ARGS("add_relu_backward", y, dy);
    if (!dx0) dx0 = dx1, dx1 = NULL; /* the one wanted first */
    if (vectors_of_four(n, y, dy, dx0, dx1))
        k_add_relu_backward<4><<<bf_cuda_grid(im, n / 4, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(y, dy, dx0, dx1,
                                                                                                             n / 4);
    else
        k_add_relu_backward<1><<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(y, dy, dx0, dx1, n);
    BF_LAUNCH_CHECK("k_add_relu_backward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_leaky_relu_forward(bf_backend *b, const float *x, float *y, size_t n, float slope) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("leaky_relu_forward", x, y);
    k_leaky_relu_forward<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, y, n, slope);
    BF_LAUNCH_CHECK("k_leaky_relu_forward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_leaky_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n,
                                                 float slope) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS("leaky_relu_backward", y, dy, dx);
    k_leaky_relu_backward<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(y, dy, dx, n, slope);
    BF_LAUNCH_CHECK("k_leaky_relu_backward");
    return BF_OK;
}

static bf_status dropout_apply(bf_backend *b, const char *name, const float *in, float *out, size_t n, size_t group,
                               float p, bf_draws draws) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!(p >= 0.0f && p <= 1.0f)) return bf_error(BF_ERR_ARG, "%s: p must be in [0, 1] (got %g)", name, p);
    if (group == 0 || n % group)
        return bf_error(BF_ERR_ARG, "%s: %zu elements are not whole groups of %zu", name, n, group);
    if (n == 0) return BF_OK;
    ELEMENTWISE_ARGS(name, in, out);
    if (p == 0.0f) {
        if (out != in) BF_CUDA_CHECK(cudaMemcpyAsync(out, in, n * sizeof(float), cudaMemcpyDeviceToDevice, im->stream));
        return BF_OK;
    }
    /* p = 1: nothing survives; zeros, as the CPU's fill (in * 0 would keep the signs of zero and NaNs,
     * and the scale would be infinite) */
    if (p == 1.0f) {
        BF_CUDA_CHECK(cudaMemsetAsync(out, 0, n * sizeof(float), im->stream));
        return BF_OK;
    }
    const float keep_scale = 1.0f / (1.0f - p);
    k_dropout<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(in, out, n, group, p,
                                                                                      keep_scale, draws);
    BF_LAUNCH_CHECK("k_dropout");
    return BF_OK;
}

extern "C" bf_status bf_cuda_dropout_forward(bf_backend *b, const float *x, float *y, size_t n, size_t group, float p,
                                             bf_draws draws) {
    return dropout_apply(b, "dropout_forward", x, y, n, group, p, draws);
}

extern "C" bf_status bf_cuda_dropout_backward(bf_backend *b, const float *dy, float *dx, size_t n, size_t group,
                                              float p, bf_draws draws) {
    return dropout_apply(b, "dropout_backward", dy, dx, n, group, p, draws);
}

extern "C" bf_status bf_cuda_spike_encode_rate(bf_backend *b, const float *x, float *y, size_t n, int T, bf_draws draws) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!x || !y || T < 1) return bf_error(BF_ERR_ARG, "spike_encode_rate: NULL tensor or T = %d < 1", T);
    const size_t total = n * (size_t)T;
    if (total == 0) return BF_OK;
    draws.step_elements = n; /* y is [T, n] */
    k_encode_rate<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, y, n, total, draws);
    BF_LAUNCH_CHECK("k_encode_rate");
    return BF_OK;
}

extern "C" bf_status bf_cuda_fill_uniform(bf_backend *b, float *x, size_t n, float lo, float hi, uint64_t seed) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!x) return bf_error(BF_ERR_ARG, "fill_uniform: NULL tensor");
    if (n == 0) return BF_OK;
    k_fill_uniform<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, n, lo, hi - lo, seed);
    BF_LAUNCH_CHECK("k_fill_uniform");
    return BF_OK;
}

extern "C" bf_status bf_cuda_task_slice_gather(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks,
                                               const float *full, float *out) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n <= 0 || k <= 0 || num_tasks <= 0)
        return bf_error(BF_ERR_ARG, "task_slice_gather: invalid shape n=%d k=%d num_tasks=%d", n, k, num_tasks);
    if (!tasks || !full || !out) return bf_error(BF_ERR_ARG, "task_slice_gather: NULL pointer");
    size_t total = (size_t)n * k;
    k_task_slice_gather<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(n, k, num_tasks,
                                                                                                     tasks, full, out);
    BF_LAUNCH_CHECK("k_task_slice_gather");
    return BF_OK;
}

extern "C" bf_status bf_cuda_task_slice_scatter(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks,
                                                const float *in, float *full) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n <= 0 || k <= 0 || num_tasks <= 0)
        return bf_error(BF_ERR_ARG, "task_slice_scatter: invalid shape n=%d k=%d num_tasks=%d", n, k, num_tasks);
    if (!tasks || !in || !full) return bf_error(BF_ERR_ARG, "task_slice_scatter: NULL pointer");
    size_t total = (size_t)n * num_tasks * k;
    k_task_slice_scatter<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        n, k, num_tasks, tasks, in, full);
    BF_LAUNCH_CHECK("k_task_slice_scatter");
    return BF_OK;
}
