/* linear_cpu.c - fully connected layer on the CPU: y[n, out] = x[n, in] * w[out, in]^T + bias.
 *
 *     forward:  y  = x * w^T (+ bias broadcast over rows)
 *     backward: dx = dy * w,  dw = dy^T * x,  dbias = column sums of dy
 *
 * OpenBLAS runs single-threaded in this backend (see backend_cpu.c), so each GEMM is split into
 * static slices, one per thread; every element of the result is still computed by one sgemm
 * call over the full K, and the slicing depends only on the sizes and the thread count. */
#include <cblas.h>

#include "cpu_backend.h"

/* Below this many multiply-adds a GEMM runs on one thread. */
#define SMALL_GEMM (1 << 18)
#define GEMM_SLICES 16 /* slices of a large GEMM: work for up to 16 threads */

void bf_cpu_parallel_sgemm(const bf_backend *b, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int split_rows = M >= N;
    int extent = split_rows ? M : N;
    int slices = (double)M * N * K < SMALL_GEMM ? 1 : GEMM_SLICES < extent ? GEMM_SLICES : extent;
    int threads = bf_cpu_threads(b) < slices ? bf_cpu_threads(b) : slices;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < slices; t++) {
        int begin = (int)((long)extent * t / slices), end = (int)((long)extent * (t + 1) / slices);
        if (begin == end) continue;
        if (split_rows) {
            const float *a = ta == CblasNoTrans ? A + (size_t)begin * lda : A + begin;
            cblas_sgemm(CblasRowMajor, ta, tb, end - begin, N, K, 1.0f, a, lda, B, ldb, beta,
                        C + (size_t)begin * ldc, ldc);
        } else {
            const float *bs = tb == CblasNoTrans ? B + begin : B + (size_t)begin * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, M, end - begin, K, 1.0f, A, lda, bs, ldb, beta, C + begin, ldc);
        }
    }
}

static bf_status check_shape(const bf_linear_shape *s) {
    if (s->n <= 0 || s->in <= 0 || s->out <= 0)
        return bf_error(BF_ERR_ARG, "linear: invalid shape n=%d in=%d out=%d", s->n, s->in, s->out);
    return BF_OK;
}

bf_status bf_cpu_linear_forward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                const float *w, const float *bias, float *y) {
    BF_TRY(check_shape(s));
    /* With a bias, every row of y starts as the bias and the GEMM adds onto it (beta = 1). */
    if (bias)
        for (int i = 0; i < s->n; i++)
            for (int o = 0; o < s->out; o++) y[(size_t)i * s->out + o] = bias[o];
    bf_cpu_parallel_sgemm(b, CblasNoTrans, CblasTrans, s->n, s->out, s->in, x, s->in, w, s->in,
                   bias ? 1.0f : 0.0f, y, s->out);
    return BF_OK;
}

bf_status bf_cpu_linear_backward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                 const float *w, const float *dy, float *dx, float *dw, float *dbias) {
    BF_TRY(check_shape(s));
    if (!w || !dy || (dw && !x)) return bf_error(BF_ERR_ARG, "linear_backward: NULL w or dy, or NULL x with dw");
    if (dx) bf_cpu_parallel_sgemm(b, CblasNoTrans, CblasNoTrans, s->n, s->in, s->out, dy, s->out, w, s->in, 0.0f, dx, s->in);
    if (dw) bf_cpu_parallel_sgemm(b, CblasTrans, CblasNoTrans, s->out, s->in, s->n, dy, s->out, x, s->in, 0.0f, dw, s->in);
    if (dbias) {
        int threads = (long)s->n * s->out < BF_CPU_PARALLEL_MIN ? 1 : bf_cpu_threads(b);
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int o = 0; o < s->out; o++) {
            double sum = 0;
            for (int i = 0; i < s->n; i++) sum += dy[(size_t)i * s->out + o];
            dbias[o] = (float)sum;
        }
    }
    return BF_OK;
}
