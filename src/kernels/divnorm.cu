/* divnorm.cu - the tuned divisive normalisation on the GPU (contract in ops.h, divnorm_weights;
 * divnorm_cpu.c is the CPU twin, tests/test_divnorm_ops_cuda.c compares them). W has c columns of c
 * values (c = 256 in the V1 ResNet-50's layer1): one thread per column runs divnorm_common.h's loop,
 * a few microseconds once per step, deterministic because no thread shares a sum. The division is
 * elementwise, each operation rounded on its own (__f*_rn: no contraction into an FMA), so it gives
 * the CPU's bits. */
#include "cuda_backend.h"
#include "divnorm_common.h"
#include "require.h"

namespace {

__global__ void k_divnorm_weights(int c, int similar, const float *sigma, float *w) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < c) bf_divnorm_column(c, similar, j, sigma[j], w);
}

__global__ void k_divnorm_weights_backward(int c, int similar, const float *sigma, const float *w, const float *dw,
                                           float *dsigma) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < c) dsigma[j] = bf_divnorm_column_backward(c, similar, j, sigma[j], w, dw);
}

__global__ void k_divnorm_apply(const float *x, const float *s, float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fdiv_rn(x[i], __fadd_rn(1.0f, s[i]));
}

/* ds may alias s: each thread reads its element before it writes it. dx may be NULL. */
__global__ void k_divnorm_apply_backward(const float *x, const float *s, const float *dy, float *dx, float *ds,
                                         size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float d = __fadd_rn(1.0f, s[i]), g = dy[i];
        if (dx) dx[i] = __fdiv_rn(g, d);
        ds[i] = -__fdiv_rn(__fmul_rn(g, x[i]), __fmul_rn(d, d));
    }
}

bf_status check_channels(const char *op, int c) {
    return c > 0 ? BF_OK : bf_error(BF_ERR_ARG, "%s: %d channels (must be > 0)", op, c);
}

} // namespace

extern "C" bf_status bf_cuda_divnorm_weights(bf_backend *b, int c, bf_oci_distance distance, const float *sigma,
                                             float *w) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("divnorm_weights", sigma, w);
    BF_TRY(check_channels("divnorm_weights", c));
    k_divnorm_weights<<<(unsigned)bf_cuda_div_up((size_t)c, 64), 64, 0, im->stream>>>(c, distance == BF_OCI_SIMILAR,
                                                                                        sigma, w);
    BF_LAUNCH_CHECK("k_divnorm_weights");
    return BF_OK;
}

extern "C" bf_status bf_cuda_divnorm_weights_backward(bf_backend *b, int c, bf_oci_distance distance,
                                                      const float *sigma, const float *w, const float *dw,
                                                      float *dsigma) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("divnorm_weights_backward", sigma, w, dw, dsigma);
    BF_TRY(check_channels("divnorm_weights_backward", c));
    k_divnorm_weights_backward<<<(unsigned)bf_cuda_div_up((size_t)c, 64), 64, 0, im->stream>>>(
        c, distance == BF_OCI_SIMILAR, sigma, w, dw, dsigma);
    BF_LAUNCH_CHECK("k_divnorm_weights_backward");
    return BF_OK;
}

extern "C" bf_status bf_cuda_divnorm_apply(bf_backend *b, const float *x, const float *s, float *y, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("divnorm_apply", x, s, y);
    if (n == 0) return BF_OK;
    k_divnorm_apply<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, s, y, n);
    BF_LAUNCH_CHECK("k_divnorm_apply");
    return BF_OK;
}

extern "C" bf_status bf_cuda_divnorm_apply_backward(bf_backend *b, const float *x, const float *s, const float *dy,
                                                    float *dx, float *ds, size_t n) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("divnorm_apply_backward", x, s, dy, ds);
    if (n == 0) return BF_OK;
    k_divnorm_apply_backward<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(x, s, dy, dx,
                                                                                                       ds, n);
    BF_LAUNCH_CHECK("k_divnorm_apply_backward");
    return BF_OK;
}
