/* linear.cu - fully connected layer on the GPU with cuBLAS (contract in ops.h; the CPU twin is
 * linear_cpu.c). Row-major y[n, out] = x[n, in] * w[out, in]^T + bias.
 *
 * cuBLAS is column-major, and a row-major [r, c] matrix is the column-major [c, r] matrix with the
 * same memory, so every product is computed transposed (C^T = B^T A^T) on the same buffers:
 *   forward   y^T[out, n]  = w[out, in] (= op T of w's col-major [in, out]) * x^T[in, n]
 *   dx        dx^T[in, n]  = w^T[in, out] * dy^T[out, n]
 *   dw        dw^T[in, out] = x^T[in, n] * dy[n, out] (= op T of dy's col-major [out, n])
 * The bias is broadcast into y first and the GEMM adds onto it (beta = 1), as on the CPU; dbias is
 * the column sums of dy by a deterministic kernel (one thread per output, samples in order). */
#include "cuda_backend.h"

namespace { /* kernels and helpers are private to this file */

/* y[i, o] = bias[o] */
__global__ void k_bias_broadcast(const float *__restrict__ bias, float *__restrict__ y, size_t total, int out) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = bias[i % (size_t)out];
}

/* dbias[o] = sum_i dy[i, o] in double; consecutive threads read consecutive columns (coalesced). */
__global__ void k_column_sums(const float *__restrict__ dy, float *__restrict__ dbias, int n, int out) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out) return;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)dy[(size_t)i * out + o];
    dbias[o] = (float)sum;
}

static bf_status check_linear(const bf_linear_shape *s, const char *op) {
    if (!s) return bf_error(BF_ERR_ARG, "%s: NULL shape", op);
    if (s->n <= 0 || s->in <= 0 || s->out <= 0)
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d in=%d out=%d", op, s->n, s->in, s->out);
    return BF_OK;
}

}  // namespace

extern "C" bf_status bf_cuda_linear_forward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                            const float *w, const float *bias, float *y) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_linear(s, "linear_forward"));
    if (!x || !w || !y) return bf_error(BF_ERR_ARG, "linear_forward: NULL input or output");
    const float one = 1.0f, zero = 0.0f;
    if (bias) {
        const size_t total = (size_t)s->n * s->out;
        k_bias_broadcast<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(bias, y, total,
                                                                                                     s->out);
        BF_LAUNCH_CHECK("k_bias_broadcast");
    }
    BF_CUBLAS_CHECK(cublasSgemm(im->cublas, CUBLAS_OP_T, CUBLAS_OP_N, s->out, s->n, s->in, &one, w, s->in, x, s->in,
                                bias ? &one : &zero, y, s->out));
    return BF_OK;
}

extern "C" bf_status bf_cuda_linear_backward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                             const float *w, const float *dy, float *dx, float *dw, float *dbias) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_linear(s, "linear_backward"));
    if (!w || !dy || (dw && !x)) return bf_error(BF_ERR_ARG, "linear_backward: NULL w or dy, or NULL x with dw");
    const float one = 1.0f, zero = 0.0f;
    if (dx)
        BF_CUBLAS_CHECK(cublasSgemm(im->cublas, CUBLAS_OP_N, CUBLAS_OP_N, s->in, s->n, s->out, &one, w, s->in, dy,
                                    s->out, &zero, dx, s->in));
    if (dw)
        BF_CUBLAS_CHECK(cublasSgemm(im->cublas, CUBLAS_OP_N, CUBLAS_OP_T, s->in, s->out, s->n, &one, x, s->in, dy,
                                    s->out, &zero, dw, s->in));
    if (dbias) {
        k_column_sums<<<(unsigned)bf_cuda_div_up((size_t)s->out, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
            dy, dbias, s->n, s->out);
        BF_LAUNCH_CHECK("k_column_sums");
    }
    return BF_OK;
}
