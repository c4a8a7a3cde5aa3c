/* image_ops_cpu.c - uint8 NHWC RGB batches to normalised float NCHW (see ops.h, image.h), and
 * the step of an adversarial attack on such images (attack_step). The CUDA twin is image_ops.cu;
 * tests/test_image_ops_cuda.c checks they agree bit for bit (both evaluate the same float
 * expressions with the same operations, no FMA contraction). */
#include <math.h>
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

/* The checks both backends make of attack_step's arguments. */
bf_status bf_attack_step_check(const bf_attack_box *box, size_t n, size_t plane, const float *x0, const float *d,
                               const float *x) {
    if (!box || !x0 || !d || !x) return bf_error(BF_ERR_ARG, "attack_step: NULL argument");
    if (box->c < 1 || box->c > 3) return bf_error(BF_ERR_ARG, "attack_step: %d channels (1 to 3)", box->c);
    if (plane == 0 || n % (plane * (size_t)box->c) != 0)
        return bf_error(BF_ERR_ARG, "attack_step: %zu values are not whole images of %d x %zu", n, box->c, plane);
    return BF_OK;
}

bf_status bf_cpu_attack_step(bf_backend *b, const bf_attack_box *box, size_t n, size_t plane, const float *x0,
                             const float *d, int use_sign, float *x) {
    BF_TRY(bf_attack_step_check(box, n, plane, x0, d, x));
    const long long planes = (long long)(n / plane);
    int threads = b && b->num_threads > 0 ? b->num_threads : omp_get_max_threads();
#pragma omp parallel for num_threads(threads) schedule(static) if (n > 65536)
    for (long long q = 0; q < planes; q++) {
        const int ch = (int)(q % box->c);
        const float step = box->step[ch], radius = box->radius[ch], lo = box->lo[ch], hi = box->hi[ch];
        for (size_t p = (size_t)q * plane; p < (size_t)(q + 1) * plane; p++) {
            const float g = use_sign ? (float)((d[p] > 0.0f) - (d[p] < 0.0f)) : d[p];
            float v = x[p] + step * g;
            v = fminf(fmaxf(v, x0[p] - radius), x0[p] + radius);
            x[p] = fminf(fmaxf(v, lo), hi);
        }
    }
    return BF_OK;
}
