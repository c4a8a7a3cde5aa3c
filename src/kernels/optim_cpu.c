/* optim_cpu.c - SGD and Adam/AdamW steps over a flat parameter buffer, and the gradient-clipping
 * factor (PyTorch semantics, formulas in ops.h). Every element is updated on its own, so the
 * loops are split statically over threads without affecting any result. */
#include <float.h>
#include <math.h>

#include "cpu_backend.h"

/* A moment below FLT_MIN is stored as 0 (ops.h: subnormals are slow on x86); a NaN stays. */
static inline float flush_subnormal(float x) { return fabsf(x) < FLT_MIN ? 0.0f : x; }

static int loop_threads(const bf_backend *b, size_t n) {
    return n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
}

/* PyTorch SGD with dampening 0:
 *     g = grad*clip + wd*p;  buf = momentum*buf + g (buf = g on the first step);
 *     update = nesterov ? g + momentum*buf : buf;  p -= lr*update.
 * With momentum 0 there is no buffer (momentum_buf may be NULL) and update = g. */
bf_status bf_cpu_sgd_update(bf_backend *b, float *params, const float *grads, float *momentum_buf,
                            size_t n, float lr, float momentum, float weight_decay, int nesterov,
                            int first_step, const float *grad_scale) {
    if (momentum != 0.0f && !momentum_buf) return bf_error(BF_ERR_ARG, "sgd: momentum %g needs a momentum buffer", momentum);
    const float clip = grad_scale ? *grad_scale : 1.0f;
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * clip + weight_decay * params[i];
        float update = g;
        if (momentum != 0.0f) {
            float buf = flush_subnormal(first_step ? g : momentum * momentum_buf[i] + g);
            momentum_buf[i] = buf;
            update = nesterov ? g + momentum * buf : buf;
        }
        params[i] -= lr * update;
    }
    return BF_OK;
}

/* PyTorch Adam and AdamW (no amsgrad), step t counted from 1; decoupled_decay picks the weight decay:
 *     AdamW (decoupled_decay != 0):  g = grad*clip;          p *= 1 - lr*wd
 *     Adam  (decoupled_decay == 0):  g = grad*clip + wd*p    (coupled L2, torch.optim.Adam's
 *                                                              grad.add(param, alpha=wd))
 *     m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
 *     p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 * which is ops.h's lr * m_hat / (sqrt(v_hat) + eps) arranged as PyTorch evaluates it. Adam's decay
 * factor is 1 (p * 1 is p exactly), and AdamW's gradient gets no term: its path is the same arithmetic
 * as before Adam shared the op. */
bf_status bf_cpu_adam_update(bf_backend *b, float *params, const float *grads, float *m, float *v,
                             size_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, int decoupled_decay, long step, const float *grad_scale) {
    const char *what = decoupled_decay ? "adamw" : "adam";
    if (step < 1) return bf_error(BF_ERR_ARG, "%s: step must count from 1 (got %ld)", what, step);
    const float clip = grad_scale ? *grad_scale : 1.0f;
    const float decay = decoupled_decay ? (float)(1.0 - (double)lr * weight_decay) : 1.0f;
    const float l2 = decoupled_decay ? 0.0f : weight_decay;
    const float step_size = (float)(lr / (1.0 - pow(beta1, (double)step)));
    const float correction2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)step));
    const float one_minus_beta1 = 1.0f - beta1, one_minus_beta2 = 1.0f - beta2;
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
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
    return BF_OK;
}

bf_status bf_cpu_clip_scale(bf_backend *b, const float *sum_squares, float max_norm, float *scale) {
    (void)b;
    float factor = (float)(max_norm / (sqrt((double)*sum_squares) + 1e-6));
    *scale = factor < 1.0f ? factor : 1.0f;
    return BF_OK;
}
