/* image_ops.cu - uint8 NHWC RGB batches to normalised float NCHW on the GPU, and the step of an
 * adversarial attack on such images (see ops.h). Same float expressions as image_ops_cpu.c, so
 * both backends give the same bits. One thread per output element; reads of 3 neighbouring bytes
 * per pixel coalesce well enough for a copy-bound op. */
#include "cuda_backend.h"

struct image_norm {
    float mean[3], scale[3];
};

static __global__ void k_image_u8_to_float(const uint8_t *src, float *dst, size_t plane, size_t total, image_norm norm) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < total; k += (size_t)gridDim.x * blockDim.x) {
        size_t image = k / (3 * plane), rest = k % (3 * plane), c = rest / plane, p = rest % plane;
        float v = (float)src[(image * plane + p) * 3 + c];
        /* __fmul_rn keeps nvcc from fusing into an FMA, so the bits match the CPU backend. */
        dst[k] = __fmul_rn(__fmul_rn(v, 1.0f / 255.0f) - norm.mean[c], norm.scale[c]);
    }
}

extern "C" bf_status bf_cuda_image_u8_to_float(bf_backend *b, const uint8_t *src, float *dst, int n, int h, int w,
                                               const float *mean, const float *std) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!src || !dst || !mean || !std) return bf_error(BF_ERR_ARG, "image_u8_to_float: NULL argument");
    if (n < 0 || h < 1 || w < 1) return bf_error(BF_ERR_ARG, "image_u8_to_float: shape %dx%dx%d", n, h, w);
    image_norm norm;
    for (int c = 0; c < 3; c++) {
        if (!(std[c] > 0.0f)) return bf_error(BF_ERR_ARG, "image_u8_to_float: std[%d] = %g (must be > 0)", c, std[c]);
        norm.mean[c] = mean[c];
        norm.scale[c] = 1.0f / std[c];
    }
    size_t plane = (size_t)h * w, total = (size_t)n * 3 * plane;
    if (total == 0) return BF_OK;
    k_image_u8_to_float<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(src, dst, plane,
                                                                                                     total, norm);
    BF_LAUNCH_CHECK("k_image_u8_to_float");
    return BF_OK;
}

static __global__ void k_attack_step(bf_attack_box box, size_t n, size_t plane, const float *__restrict__ x0,
                                     const float *__restrict__ d, int use_sign, float *x) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int ch = (int)((i / plane) % (size_t)box.c);
        const float g = use_sign ? (float)((d[i] > 0.0f) - (d[i] < 0.0f)) : d[i];
        float v = __fadd_rn(x[i], __fmul_rn(box.step[ch], g)); /* no FMA: the CPU's bits */
        v = fminf(fmaxf(v, x0[i] - box.radius[ch]), x0[i] + box.radius[ch]);
        x[i] = fminf(fmaxf(v, box.lo[ch]), box.hi[ch]);
    }
}

extern "C" bf_status bf_cuda_attack_step(bf_backend *b, const bf_attack_box *box, size_t n, size_t plane,
                                         const float *x0, const float *d, int use_sign, float *x) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(bf_attack_step_check(box, n, plane, x0, d, x));
    if (n == 0) return BF_OK;
    k_attack_step<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(*box, n, plane, x0, d,
                                                                                            use_sign, x);
    BF_LAUNCH_CHECK("k_attack_step");
    return BF_OK;
}
