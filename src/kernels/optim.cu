/* optim.cu - fused SGD and Adam/AdamW steps over a flat parameter buffer, and the gradient-clipping
 * factor, on the GPU (PyTorch semantics, formulas in ops.h; the CPU twins are in optim_cpu.c and
 * the per-element expressions below are written in the same order).
 *
 * The optional clipping factor is a device scalar (computed by clip_scale from sum_squares), read
 * by every thread, so gradient clipping costs no host synchronisation. */
#include <float.h>
#include <math.h>

#include "cuda_backend.h"

namespace { /* kernels and helpers are private to this file */

/* A moment below FLT_MIN is stored as 0, as on the CPU (ops.h); a NaN stays. */
__device__ __forceinline__ float flush_subnormal(float x) { return fabsf(x) < FLT_MIN ? 0.0f : x; }

__global__ void k_sgd(float *__restrict__ params, const float *__restrict__ grads, float *__restrict__ buf,
                      size_t n, float lr, float momentum, float weight_decay, int nesterov, int first_step,
                      const float *__restrict__ grad_scale) {
    const float clip = grad_scale ? *grad_scale : 1.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float p = params[i];
        float g = grads[i] * clip + weight_decay * p;
        float update = g;
        if (buf) { /* momentum != 0 */
            float bi = flush_subnormal(first_step ? g : momentum * buf[i] + g);
            buf[i] = bi;
            update = nesterov ? g + momentum * bi : bi;
        }
        params[i] = p - lr * update;
    }
}

/* Adam (l2 = weight decay, decay = 1) and AdamW (l2 = 0, decay = 1 - lr*wd), as optim_cpu.c. */
__global__ void k_adam(float *__restrict__ params, const float *__restrict__ grads, float *__restrict__ m,
                       float *__restrict__ v, size_t n, float beta1, float beta2, float one_minus_beta1,
                       float one_minus_beta2, float eps, float l2, float decay, float step_size,
                       float correction2_sqrt, const float *__restrict__ grad_scale) {
    const float clip = grad_scale ? *grad_scale : 1.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float p = params[i];
        float g = grads[i] * clip;
        if (l2 != 0.0f) g = g + l2 * p;
        float mi = flush_subnormal(beta1 * m[i] + one_minus_beta1 * g);
        float vi = flush_subnormal(beta2 * v[i] + one_minus_beta2 * g * g);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / correction2_sqrt + eps;
        params[i] = p * decay - step_size * mi / denom;
    }
}

/* One thread: *scale = min(1, max_norm / (sqrt(*sum_squares) + 1e-6)), in double like the CPU. */
__global__ void k_clip_scale(const float *sum_squares, float max_norm, float *scale) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        float factor = (float)((double)max_norm / (sqrt((double)*sum_squares) + 1e-6));
        *scale = factor < 1.0f ? factor : 1.0f;
    }
}

}  // namespace

extern "C" bf_status bf_cuda_sgd_update(bf_backend *b, float *params, const float *grads, float *momentum_buf,
                                        size_t n, float lr, float momentum, float weight_decay, int nesterov,
                                        int first_step, const float *grad_scale) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (momentum != 0.0f && !momentum_buf)
        return bf_error(BF_ERR_ARG, "sgd: momentum %g needs a momentum buffer", momentum);
    if (n == 0) return BF_OK;
    if (!params || !grads) return bf_error(BF_ERR_ARG, "sgd: NULL parameter or gradient buffer (n=%zu)", n);
    float *buf = momentum != 0.0f ? momentum_buf : NULL; /* momentum 0: no buffer, update = g */
    k_sgd<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        params, grads, buf, n, lr, momentum, weight_decay, nesterov ? 1 : 0, first_step ? 1 : 0, grad_scale);
    BF_LAUNCH_CHECK("k_sgd");
    return BF_OK;
}

extern "C" bf_status bf_cuda_adam_update(bf_backend *b, float *params, const float *grads, float *m, float *v,
                                         size_t n, float lr, float beta1, float beta2, float eps,
                                         float weight_decay, int decoupled_decay, long step,
                                         const float *grad_scale) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    const char *what = decoupled_decay ? "adamw" : "adam";
    if (step < 1) return bf_error(BF_ERR_ARG, "%s: step must count from 1 (got %ld)", what, step);
    if (n == 0) return BF_OK;
    if (!params || !grads || !m || !v) return bf_error(BF_ERR_ARG, "%s: NULL buffer (n=%zu)", what, n);
    /* the step constants are computed on the host in double, exactly as optim_cpu.c does */
    const float decay = decoupled_decay ? (float)(1.0 - (double)lr * weight_decay) : 1.0f;
    const float l2 = decoupled_decay ? 0.0f : weight_decay;
    const float step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    const float correction2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    const float one_minus_beta1 = 1.0f - beta1, one_minus_beta2 = 1.0f - beta2;
    k_adam<<<bf_cuda_grid(im, n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        params, grads, m, v, n, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, l2, decay, step_size,
        correction2_sqrt, grad_scale);
    BF_LAUNCH_CHECK("k_adam");
    return BF_OK;
}

extern "C" bf_status bf_cuda_clip_scale(bf_backend *b, const float *sum_squares, float max_norm, float *scale) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (!sum_squares || !scale) return bf_error(BF_ERR_ARG, "clip_scale: NULL pointer");
    k_clip_scale<<<1, 32, 0, im->stream>>>(sum_squares, max_norm, scale);
    BF_LAUNCH_CHECK("k_clip_scale");
    return BF_OK;
}
