/* image_ops_cpu.c - uint8 NHWC RGB batches to normalised float NCHW (see ops.h, image.h).
 * The CUDA twin is image_ops.cu; tests/test_image_ops_cuda.c checks they agree bit for bit (both
 * compute (v * (1/255) - mean) * (1/std) in float with the same operations). */
#include <omp.h>

#include "cpu_backend.h"

bf_status bf_cpu_image_u8_to_float(bf_backend *b, const uint8_t *src, float *dst, int n, int h, int w, const float *mean,
                                   const float *std) {
    if (!src || !dst || !mean || !std) return bf_error(BF_ERR_ARG, "image_u8_to_float: NULL argument");
    if (n < 0 || h < 1 || w < 1) return bf_error(BF_ERR_ARG, "image_u8_to_float: shape %dx%dx%d", n, h, w);
    float scale[3], shift[3];
    for (int c = 0; c < 3; c++) {
        if (!(std[c] > 0.0f)) return bf_error(BF_ERR_ARG, "image_u8_to_float: std[%d] = %g (must be > 0)", c, std[c]);
        scale[c] = 1.0f / std[c];
        shift[c] = mean[c];
    }
    size_t plane = (size_t)h * w;
    int threads = b && b->num_threads > 0 ? b->num_threads : omp_get_max_threads();
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 1)
    for (int i = 0; i < n; i++) {
        const uint8_t *in = src + (size_t)i * plane * 3;
        float *out = dst + (size_t)i * plane * 3;
        for (size_t p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++)
                out[c * plane + p] = ((float)in[3 * p + c] * (1.0f / 255.0f) - shift[c]) * scale[c];
    }
    return BF_OK;
}
