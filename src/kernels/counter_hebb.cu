/* counter_hebb.cu - the Counter-Hebb update of BU-TD networks on CUDA (see counter_hebb_cpu.c for
 * the rule; tests/test_butd_ops_cuda.c checks both backends agree).
 * Linear: one cuBLAS GEMM with alpha = 1/n, a column-mean kernel for the bias and a transpose kernel
 * for a separate TD weight. Conv: the weight gradient (cuDNN backward-filter) given td, scaled by 1/n. */
#include "cuda_backend.h"

static __global__ void k_column_mean(const float *td, float *dbias, int n, int out, float inv_n) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out) return;
    /* in double, in sample order, scaled in double: counter_hebb_cpu.c's expression, so the bias is
     * bit-identical to the CPU's (a float sum over a large batch drifts from it) */
    double sum = 0.0;
    for (int j = 0; j < n; j++) sum += td[(size_t)j * out + o];
    dbias[o] = (float)(sum * inv_n);
}

/* dw_td[i, o] = dw[o, i] */
static __global__ void k_transpose(const float *dw, float *dw_td, int out, int in) {
    size_t total = (size_t)out * in;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x) {
        size_t i = k / out, o = k % out;
        dw_td[k] = dw[o * in + i];
    }
}

static __global__ void k_scale_copy(float *x, float *copy, size_t n, float alpha) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        float v = x[k] * alpha;
        x[k] = v;
        if (copy) copy[k] = v;
    }
}

extern "C" bf_status bf_cuda_counter_hebb_linear(bf_backend *b, const bf_linear_shape *s, const float *bu,
                                                 const float *td, float *dw, float *dbias, float *dw_td) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!s || s->n <= 0 || s->in <= 0 || s->out <= 0)
        return bf_error(BF_ERR_ARG, "counter_hebb_linear: bad shape");
    if (!bu || !td || !dw) return bf_error(BF_ERR_ARG, "counter_hebb_linear: NULL bu, td or dw");
    const float inv_n = 1.0f / (float)s->n, zero = 0.0f;
    /* Row-major dw[out, in] = td^T bu / n is column-major dw^T[in, out] = bu^T(in x n) td(n x out) / n. */
    BF_CUBLAS_CHECK(cublasSgemm(im->cublas, CUBLAS_OP_N, CUBLAS_OP_T, s->in, s->out, s->n, &inv_n, bu, s->in, td,
                                s->out, &zero, dw, s->in));
    if (dbias) {
        k_column_mean<<<(unsigned)bf_cuda_div_up((size_t)s->out, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
            td, dbias, s->n, s->out, inv_n);
        BF_LAUNCH_CHECK("k_column_mean");
    }
    if (dw_td) {
        size_t total = (size_t)s->out * s->in;
        k_transpose<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(dw, dw_td, s->out,
                                                                                                s->in);
        BF_LAUNCH_CHECK("k_transpose");
    }
    return BF_OK;
}

extern "C" bf_status bf_cuda_counter_hebb_conv2d(bf_backend *b, const bf_conv2d_shape *s, const float *bu,
                                                 const float *td, float *dw, float *dbias, float *dw_td) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!s || s->n <= 0) return bf_error(BF_ERR_ARG, "counter_hebb_conv2d: bad shape");
    if (!bu || !td || !dw) return bf_error(BF_ERR_ARG, "counter_hebb_conv2d: NULL bu, td or dw");
    BF_TRY(bf_cuda_conv2d_backward_filter(b, s, bu, td, dw, dbias));
    const size_t wn = (size_t)s->c_out * (size_t)(s->c_in / s->groups) * (size_t)s->k_h * (size_t)s->k_w;
    const float inv_n = 1.0f / (float)s->n;
    k_scale_copy<<<bf_cuda_grid(im, wn, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(dw, dw_td, wn, inv_n);
    BF_LAUNCH_CHECK("k_scale_copy");
    if (dbias) {
        k_scale_copy<<<bf_cuda_grid(im, (size_t)s->c_out, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
            dbias, NULL, (size_t)s->c_out, inv_n);
        BF_LAUNCH_CHECK("k_scale_copy");
    }
    return BF_OK;
}
