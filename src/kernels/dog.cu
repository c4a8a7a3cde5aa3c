/* dog.cu - the center-surround (DoG) layer's ops on the GPU (contracts in ops.h; dog_cpu.c is the
 * CPU twin, tests/test_dog_ops_cuda.c compares them). The kernels are small (256 kernels of 25 taps
 * in the V1 ResNet-50): one thread per tap for the norms, one per kernel for the backward, each
 * running dog_common.h's loops, so no thread shares a sum and the results repeat. */
#include "cuda_backend.h"
#include "dog_common.h"
#include "require.h"

namespace {

__global__ void k_channel_copy(int n, size_t block, const float *src, size_t src_stride, float *dst,
                               size_t dst_stride) {
    size_t total = (size_t)n * block;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t img = i / block, j = i % block;
        dst[img * dst_stride + j] = src[img * src_stride + j];
    }
}

__global__ void k_dog_norms(int p, int k, int amp_paper, const float *sigma1, const float *sigma2_scale,
                            const float *scale, float *norms) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < k * k) norms[t] = (float)bf_dog_tap_norm(p, k, t, amp_paper, sigma1, sigma2_scale, scale);
}

__global__ void k_dog_kernels(int p, int k, int amp_paper, const float *sigma1, const float *sigma2_scale,
                              const float *scale, const float *norms, float *w) {
    const int taps = k * k;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p * taps) w[i] = bf_dog_normalised(p, k, i / taps, i % taps, amp_paper, sigma1, sigma2_scale, scale, norms);
}

__global__ void k_dog_backward(int p, int k, int amp_paper, const float *sigma1, const float *sigma2_scale,
                               const float *scale, const float *w, const float *norms, const float *dw, float *dsigma1,
                               float *dsigma2_scale, float *dscale) {
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q < p)
        bf_dog_kernel_backward(p, k, amp_paper, q, sigma1, sigma2_scale, scale, w, norms, dw, dsigma1, dsigma2_scale,
                               dscale);
}

bf_status check_dog(const char *op, int p, int k) {
    return p > 0 && k > 0 && k % 2 == 1 && k <= 31 ? BF_OK /* the norms' one block of k*k threads */
                                                   : bf_error(BF_ERR_ARG, "%s: %d kernels of %dx%d (odd k <= 31)", op, p, k, k);
}

} // namespace

extern "C" bf_status bf_cuda_channel_copy(bf_backend *b, int n, int hw, int count, const float *src, int src_c,
                                          int src_c0, float *dst, int dst_c, int dst_c0) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("channel_copy", src, dst);
    if (n < 0 || hw < 0 || count < 0 || src_c0 < 0 || dst_c0 < 0 || src_c0 + count > src_c || dst_c0 + count > dst_c)
        return bf_error(BF_ERR_ARG, "channel_copy: %d channels from %d of %d to %d of %d (n %d, hw %d)", count, src_c0,
                        src_c, dst_c0, dst_c, n, hw);
    const size_t block = (size_t)count * hw;
    if (n == 0 || block == 0) return BF_OK;
    k_channel_copy<<<bf_cuda_grid(im, (size_t)n * block, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        n, block, src + (size_t)src_c0 * hw, (size_t)src_c * hw, dst + (size_t)dst_c0 * hw, (size_t)dst_c * hw);
    BF_LAUNCH_CHECK("k_channel_copy");
    return BF_OK;
}

extern "C" bf_status bf_cuda_dog_kernels(bf_backend *b, int p, int k, int amp_paper, const float *sigma1,
                                         const float *sigma2_scale, const float *scale, float *w, float *norms) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("dog_kernels", sigma1, sigma2_scale, scale, w, norms);
    BF_TRY(check_dog("dog_kernels", p, k));
    k_dog_norms<<<1, (unsigned)(k * k), 0, im->stream>>>(p, k, amp_paper, sigma1, sigma2_scale, scale, norms);
    BF_LAUNCH_CHECK("k_dog_norms");
    size_t total = (size_t)p * k * k;
    k_dog_kernels<<<(unsigned)bf_cuda_div_up(total, 128), 128, 0, im->stream>>>(p, k, amp_paper, sigma1, sigma2_scale,
                                                                                 scale, norms, w);
    BF_LAUNCH_CHECK("k_dog_kernels");
    return BF_OK;
}

extern "C" bf_status bf_cuda_dog_kernels_backward(bf_backend *b, int p, int k, int amp_paper, const float *sigma1,
                                                  const float *sigma2_scale, const float *scale, const float *w,
                                                  const float *norms, const float *dw, float *dsigma1,
                                                  float *dsigma2_scale, float *dscale) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("dog_kernels_backward", sigma1, sigma2_scale, scale, w, norms, dw, dsigma1, dsigma2_scale, dscale);
    BF_TRY(check_dog("dog_kernels_backward", p, k));
    k_dog_backward<<<(unsigned)bf_cuda_div_up((size_t)p, 64), 64, 0, im->stream>>>(
        p, k, amp_paper, sigma1, sigma2_scale, scale, w, norms, dw, dsigma1, dsigma2_scale, dscale);
    BF_LAUNCH_CHECK("k_dog_backward");
    return BF_OK;
}
