/* cirincione_common.h - internal: the Cirincione divisive normalisation's kernel arithmetic (contract
 * in ops.h, cirincione_kernels; ../shared/specs/v1-constrained.md 4.2), one source for
 * cirincione_cpu.c and cirincione.cu, so that both backends compute the same thing. A kernel (one
 * (out, in) channel pair) depends on its own six parameters alone: its k*k taps, and its gradients
 * summed over them, are one loop in tap order, in double, rounded once. */
#ifndef BIOFLEX_CIRINCIONE_COMMON_H
#define BIOFLEX_CIRINCIONE_COMMON_H

#include <math.h>
#include <stddef.h>

#ifdef __CUDACC__
#define BF_CIR_FN __host__ __device__ static inline
#else
#define BF_CIR_FN static inline
#endif

#define BF_CIR_PI 3.14159265358979323846

/* The clamps' bound: the reference's 0.1 as torch.clamp applies it to a float tensor, a float. */
#define BF_CIR_BOUND ((double)0.1f)

/* sgn as PyTorch's abs backward takes it: 0 at 0. */
BF_CIR_FN double bf_cir_sgn(double a) { return (double)((a > 0.0) - (a < 0.0)); }

/* One pair's parameters and what its taps share. */
typedef struct bf_cir_pair {
    double A, rho, sigma, v, w;
    double cos_t, sin_t;   /* of theta */
    double R, S;           /* max(rho^2, 0.1), max(sigma^2, 0.1) */
    double den_raw, den;   /* 2 pi rho sigma, and clamped at 0.1 */
    double a, amp;         /* A / den and |A / den| */
} bf_cir_pair;

BF_CIR_FN bf_cir_pair bf_cir_pair_of(float A, float rho, float sigma, float theta, float v, float w) {
    bf_cir_pair q;
    q.A = A, q.rho = rho, q.sigma = sigma, q.v = v, q.w = w;
    q.cos_t = cos((double)theta), q.sin_t = sin((double)theta);
    double r2 = q.rho * q.rho, s2 = q.sigma * q.sigma;
    q.R = r2 > BF_CIR_BOUND ? r2 : BF_CIR_BOUND;
    q.S = s2 > BF_CIR_BOUND ? s2 : BF_CIR_BOUND;
    q.den_raw = 2.0 * BF_CIR_PI * q.rho * q.sigma;
    q.den = q.den_raw > BF_CIR_BOUND ? q.den_raw : BF_CIR_BOUND;
    q.a = q.A / q.den;
    q.amp = fabs(q.a);
    return q;
}

/* Tap t of a k x k kernel: its rotated coordinates (x', y'), their offsets from the centre (v, w),
 * and exp(-q / 2). X = column + 1, Y = row + 1: the reference's 1-based x_coords and y_coords. */
typedef struct bf_cir_tap {
    double xr, yr, ex, ey, e;
} bf_cir_tap;

BF_CIR_FN bf_cir_tap bf_cir_tap_of(const bf_cir_pair *q, int k, int t) {
    bf_cir_tap p;
    const double X = (double)(t % k + 1), Y = (double)(t / k + 1);
    p.xr = X * q->cos_t + Y * q->sin_t;
    p.yr = -X * q->sin_t + Y * q->cos_t;
    p.ex = p.xr - q->v;
    p.ey = p.yr - q->w;
    p.e = exp(-0.5 * (p.ex * p.ex / q->R + p.ey * p.ey / q->S));
    return p;
}

/* Kernel j (pair j): g[j*k*k + t] for its k*k taps. */
BF_CIR_FN void bf_cir_kernel(int k, int j, const float *A, const float *rho, const float *sigma, const float *theta,
                             const float *v, const float *w, float *g) {
    const bf_cir_pair q = bf_cir_pair_of(A[j], rho[j], sigma[j], theta[j], v[j], w[j]);
    const int taps = k * k;
    for (int t = 0; t < taps; t++) {
        const bf_cir_tap p = bf_cir_tap_of(&q, k, t);
        g[(size_t)j * taps + t] = (float)(q.amp * p.e);
    }
}

/* Kernel j's parameter gradients from its taps' dg (ops.h, cirincione_kernels_backward). With
 * G = amp E, E = exp(-q/2), amp = |A / den|:
 *   dA     = sgn(a) / den * sum dg E                        (abs'(0) = 0, PyTorch's sgn)
 *   d den  = -sgn(a) A / den^2 * sum dg E, through the clamp only where 2 pi rho sigma >= 0.1
 *   dq     = -G / 2 per tap;  dq/dv = -2 (x' - v) / R,  dq/dw = -2 (y' - w) / S
 *   dq/dR  = -(x' - v)^2 / R^2, dR/drho = 2 rho where rho^2 >= 0.1 (else 0); likewise S, sigma
 *   dq/dtheta = 2 (x' - v) / R * y' - 2 (y' - w) / S * x'   (dx'/dtheta = y', dy'/dtheta = -x')
 *   drho   = d den * 2 pi sigma + dR * 2 rho,  dsigma = d den * 2 pi rho + dS * 2 sigma
 * (PyTorch's clamp passes the gradient when its input equals the bound: >=). */
BF_CIR_FN void bf_cir_kernel_backward(int k, int j, const float *A, const float *rho, const float *sigma,
                                      const float *theta, const float *v, const float *w, const float *dg, float *dA,
                                      float *drho, float *dsigma, float *dtheta, float *dv, float *dw) {
    const bf_cir_pair q = bf_cir_pair_of(A[j], rho[j], sigma[j], theta[j], v[j], w[j]);
    const int taps = k * k;
    double s_e = 0.0, s_v = 0.0, s_w = 0.0, s_r = 0.0, s_s = 0.0, s_t = 0.0;
    for (int t = 0; t < taps; t++) {
        const bf_cir_tap p = bf_cir_tap_of(&q, k, t);
        const double g = (double)dg[(size_t)j * taps + t];
        const double gq = -0.5 * g * q.amp * p.e; /* dL/dq at this tap */
        const double fx = p.ex / q.R, fy = p.ey / q.S;
        s_e += g * p.e;
        s_v += gq * (-2.0 * fx);
        s_w += gq * (-2.0 * fy);
        s_r += gq * (-fx * fx);
        s_s += gq * (-fy * fy);
        s_t += gq * 2.0 * (fx * p.yr - fy * p.xr);
    }
    const double sg = bf_cir_sgn(q.a);
    const double d_den = q.den_raw >= BF_CIR_BOUND ? -sg * q.A / (q.den * q.den) * s_e : 0.0;
    const double d_r = q.rho * q.rho >= BF_CIR_BOUND ? s_r : 0.0, d_s = q.sigma * q.sigma >= BF_CIR_BOUND ? s_s : 0.0;
    dA[j] = (float)(sg / q.den * s_e);
    drho[j] = (float)(d_den * 2.0 * BF_CIR_PI * q.sigma + d_r * 2.0 * q.rho);
    dsigma[j] = (float)(d_den * 2.0 * BF_CIR_PI * q.rho + d_s * 2.0 * q.sigma);
    dtheta[j] = (float)s_t;
    dv[j] = (float)s_v;
    dw[j] = (float)s_w;
}

#endif
