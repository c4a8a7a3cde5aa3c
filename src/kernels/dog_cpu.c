/* dog_cpu.c - the center-surround (DoG) layer's ops on the CPU (contracts in ops.h, dog_kernels and
 * channel_copy; ../shared/specs/v1-constrained.md 2): the kernels generated from their widths and
 * gains, their backward, and the channel block copies that cut the DoG's channels out of its input
 * and put its output back. The convolution between them is the backend's conv2d. dog.cu is the
 * CUDA twin. */
#include <string.h>

#include "cpu_backend.h"
#include "dog_common.h"
#include "require.h"

bf_status bf_cpu_channel_copy(bf_backend *b, int n, int hw, int count, const float *src, int src_c, int src_c0,
                              float *dst, int dst_c, int dst_c0) {
    (void)b;
    REQUIRE("channel_copy", src, dst);
    if (n < 0 || hw < 0 || count < 0 || src_c0 < 0 || dst_c0 < 0 || src_c0 + count > src_c || dst_c0 + count > dst_c)
        return bf_error(BF_ERR_ARG, "channel_copy: %d channels from %d of %d to %d of %d (n %d, hw %d)", count, src_c0,
                        src_c, dst_c0, dst_c, n, hw);
    const size_t block = (size_t)count * hw;
    for (int i = 0; i < n; i++)
        memcpy(dst + ((size_t)i * dst_c + dst_c0) * hw, src + ((size_t)i * src_c + src_c0) * hw, block * sizeof(float));
    return BF_OK;
}

static bf_status check_dog(const char *op, int p, int k) {
    return p > 0 && k > 0 && k % 2 == 1 && k <= 31 ? BF_OK
                                                   : bf_error(BF_ERR_ARG, "%s: %d kernels of %dx%d (odd k <= 31)", op, p, k, k);
}

bf_status bf_cpu_dog_kernels(bf_backend *b, int p, int k, int amp_paper, const float *sigma1, const float *sigma2_scale,
                             const float *scale, float *w, float *norms) {
    REQUIRE("dog_kernels", sigma1, sigma2_scale, scale, w, norms);
    BF_TRY(check_dog("dog_kernels", p, k));
    const int taps = k * k;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int t = 0; t < taps; t++) {
        norms[t] = (float)bf_dog_tap_norm(p, k, t, amp_paper, sigma1, sigma2_scale, scale);
        for (int q = 0; q < p; q++) w[(size_t)q * taps + t] = bf_dog_normalised(p, k, q, t, amp_paper, sigma1, sigma2_scale, scale, norms);
    }
    return BF_OK;
}

bf_status bf_cpu_dog_kernels_backward(bf_backend *b, int p, int k, int amp_paper, const float *sigma1,
                                      const float *sigma2_scale, const float *scale, const float *w, const float *norms,
                                      const float *dw, float *dsigma1, float *dsigma2_scale, float *dscale) {
    REQUIRE("dog_kernels_backward", sigma1, sigma2_scale, scale, w, norms, dw, dsigma1, dsigma2_scale, dscale);
    BF_TRY(check_dog("dog_kernels_backward", p, k));
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int q = 0; q < p; q++)
        bf_dog_kernel_backward(p, k, amp_paper, q, sigma1, sigma2_scale, scale, w, norms, dw, dsigma1, dsigma2_scale,
                               dscale);
    return BF_OK;
}
