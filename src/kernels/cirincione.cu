/* cirincione.cu - the Cirincione divisive normalisation on the GPU (contract in ops.h,
 * cirincione_kernels; cirincione_cpu.c is the CPU twin, tests/test_cirincione_cuda.c compares them).
 * The kernels are c*c pairs of 3x3 taps (65,536 of them in the V1 ResNet-50's layer1): one thread
 * per pair runs cirincione_common.h's loops for its taps or for its gradients, so no thread shares a
 * sum and the results repeat. The division is elementwise, each operation rounded on its own
 * (__f*_rn: no contraction into an FMA), so it gives the CPU's bits; the bias's gradient is a sum
 * over every element: per-thread sums in double over a grid that depends on n alone, each block's
 * reduced in a fixed tree order into one partial, and one block adding the partials in order (as
 * elementwise.cu's reductions), no atomics. */
#include "cirincione_common.h"
#include "cuda_backend.h"
#include "require.h"

namespace {

__global__ void k_cirincione_kernels(int p, int k, const float *A, const float *rho, const float *sigma,
                                     const float *theta, const float *v, const float *w, float *g) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < p) bf_cir_kernel(k, j, A, rho, sigma, theta, v, w, g);
}

__global__ void k_cirincione_kernels_backward(int p, int k, const float *A, const float *rho, const float *sigma,
                                              const float *theta, const float *v, const float *w, const float *dg,
                                              float *dA, float *drho, float *dsigma, float *dtheta, float *dv,
                                              float *dw) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < p) bf_cir_kernel_backward(k, j, A, rho, sigma, theta, v, w, dg, dA, drho, dsigma, dtheta, dv, dw);
}

__global__ void k_cirincione_divide(const float *x, const float *s, const float *bias, float *y, size_t n) {
    const float offset = fabsf(bias[0]);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fdiv_rn(x[i], __fadd_rn(s[i], offset));
}

/* ds may alias s: each thread reads its element before it writes it. dx may be NULL. With partial
 * (SUM), block b writes partial[b], the sum of ds over its threads' elements. */
template <bool SUM>
__global__ void k_cirincione_divide_backward(const float *x, const float *s, const float *bias, const float *dy,
                                             float *dx, float *ds, size_t n, double *partial) {
    const float offset = fabsf(bias[0]);
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float d = __fadd_rn(s[i], offset), g = dy[i];
        if (dx) dx[i] = __fdiv_rn(g, d);
        float r = -__fdiv_rn(__fmul_rn(g, x[i]), __fmul_rn(d, d));
        ds[i] = r;
        if (SUM) acc += (double)r;
    }
    if (SUM) {
        acc = bf_block_sum(acc);
        if (threadIdx.x == 0) partial[blockIdx.x] = acc;
    }
}

/* One block: dbias[0] = sgn(bias[0]) * the sum of partial[0..count). */
__global__ void k_cirincione_bias_grad(const double *partial, int count, const float *bias, float *dbias) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = bf_block_sum(acc);
    if (threadIdx.x == 0) dbias[0] = (float)(bf_cir_sgn((double)bias[0]) * acc);
}

bf_status check_kernels(const char *op, int p, int k) {
    return p > 0 && k > 0 && k % 2 == 1 && k <= 31
               ? BF_OK
               : bf_error(BF_ERR_ARG, "%s: %d kernels of %dx%d (p > 0, odd k <= 31)", op, p, k, k);
}

/* Blocks of the bias gradient's first pass: a function of n only (never of the device), at most
 * 1024, about 8 elements per thread before the cap. */
unsigned sum_blocks(size_t n) {
    size_t blocks = bf_cuda_div_up(n, (size_t)BF_CUDA_THREADS * 8);
    if (blocks > 1024) blocks = 1024;
    if (blocks < 1) blocks = 1;
    return (unsigned)blocks;
}

} // namespace

extern "C" bf_status bf_cuda_cirincione_kernels(bf_backend *b, int p, int k, const float *A, const float *rho,
                                                const float *sigma, const float *theta, const float *v, const float *w,
                                                float *g) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("cirincione_kernels", A, rho, sigma, theta, v, w, g);
    BF_TRY(check_kernels("cirincione_kernels", p, k));
    k_cirincione_kernels<<<(unsigned)bf_cuda_div_up((size_t)p, 128), 128, 0, im->stream>>>(p, k, A, rho, sigma, theta,
                                                                                            v, w, g);
    BF_LAUNCH_CHECK("k_cirincione_kernels");
    return BF_OK;
}

extern "C" bf_status bf_cuda_cirincione_kernels_backward(bf_backend *b, int p, int k, const float *A, const float *rho,
                                                         const float *sigma, const float *theta, const float *v,
                                                         const float *w, const float *dg, float *dA, float *drho,
                                                         float *dsigma, float *dtheta, float *dv, float *dw) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("cirincione_kernels_backward", A, rho, sigma, theta, v, w, dg, dA, drho, dsigma, dtheta, dv, dw);
    BF_TRY(check_kernels("cirincione_kernels_backward", p, k));
    k_cirincione_kernels_backward<<<(unsigned)bf_cuda_div_up((size_t)p, 128), 128, 0, im->stream>>>(
        p, k, A, rho, sigma, theta, v, w, dg, dA, drho, dsigma, dtheta, dv, dw);
    BF_LAUNCH_CHECK("k_cirincione_kernels_backward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_cirincione_divide(bf_backend *b, const float *x, const float *s, const float *bias,
                                               float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("cirincione_divide", x, s, bias, y);
    if (n == 0) return BF_OK;
    k_cirincione_divide<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, s, bias, y, n);
    BF_LAUNCH_CHECK("k_cirincione_divide");
    return BF_OK;
}

extern "C" bf_status bf_cuda_cirincione_divide_backward(bf_backend *b, const float *x, const float *s,
                                                        const float *bias, const float *dy, float *dx, float *ds,
                                                        float *dbias, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("cirincione_divide_backward", x, s, bias, dy, ds);
    if (!dbias) {
        if (n == 0) return BF_OK;
        k_cirincione_divide_backward<false><<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
            x, s, bias, dy, dx, ds, n, NULL);
        BF_LAUNCH_CHECK("k_cirincione_divide_backward");
        return BF_OK;
    }
    const unsigned blocks = sum_blocks(n);
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, blocks * sizeof(double), &scratch));
    double *partial = (double *)scratch;
    int count = (int)blocks;
    if (n == 0) {
        count = 0; /* an empty sum: dbias = 0 */
    } else {
        k_cirincione_divide_backward<true><<<blocks, BF_CUDA_THREADS, 0, im->stream>>>(x, s, bias, dy, dx, ds, n,
                                                                                      partial);
        BF_LAUNCH_CHECK("k_cirincione_divide_backward<sum>");
    }
    k_cirincione_bias_grad<<<1, 1024, 0, im->stream>>>(partial, count, bias, dbias);
    BF_LAUNCH_CHECK("k_cirincione_bias_grad");
    return BF_OK;
}
