/* dog_common.h - internal: the center-surround (DoG) kernels' arithmetic (contract in ops.h,
 * dog_kernels), one source for dog_cpu.c and dog.cu. A tap's norm runs over all p kernels and a
 * kernel's parameter gradients over all its taps, each a loop in a fixed order, in double, rounded
 * once. */
#ifndef BIOFLEX_DOG_COMMON_H
#define BIOFLEX_DOG_COMMON_H

#include <math.h>

#ifdef __CUDACC__
#define BF_DOG_FN __host__ __device__ static inline
#else
#define BF_DOG_FN static inline
#endif

#define BF_DOG_PI 3.14159265358979323846

/* The squared distance of tap t of a k x k kernel to its centre. */
BF_DOG_FN double bf_dog_distance(int k, int t) {
    int a = t / k - k / 2, b = t % k - k / 2;
    return (double)(a * a + b * b);
}

/* One Gaussian of the pair at squared distance d: amp(s) exp(-d / s), amp = s/pi (the reference's
 * code) or 1/(pi s) (amp_paper); *ds gets its derivative in s. */
BF_DOG_FN double bf_dog_gaussian(double s, double d, int amp_paper, double *ds) {
    double e = exp(-d / s);
    if (amp_paper) {
        *ds = e / (BF_DOG_PI * s * s) * (d / s - 1.0);
        return e / (BF_DOG_PI * s);
    }
    *ds = e * (1.0 + d / s) / BF_DOG_PI;
    return s / BF_DOG_PI * e;
}

typedef struct bf_dog_widths {
    double s1, r, s2;
} bf_dog_widths;

BF_DOG_FN bf_dog_widths bf_dog_widths_of(float sigma1, float sigma2_scale) {
    bf_dog_widths w;
    w.s1 = sigma1 > 0.1f ? (double)sigma1 : (double)0.1f; /* torch.clamp's bound, a float */
    w.r = sigma2_scale > 1.0001f ? (double)sigma2_scale : (double)1.0001f; /* 1 + 1e-4 as float, as torch */
    w.s2 = w.s1 * w.r;
    return w;
}

/* R[p, t] before the normalisation, and optionally the Gaussians' derivatives in s1 and s2 and the
 * difference E - I. */
BF_DOG_FN double bf_dog_raw(bf_dog_widths w, double scale, double d, int amp_paper, double *de_ds1, double *di_ds2,
                            double *diff) {
    double de, di;
    double e = bf_dog_gaussian(w.s1, d, amp_paper, &de), i = bf_dog_gaussian(w.s2 > 1e-6 ? w.s2 : 1e-6, d, amp_paper, &di);
    if (de_ds1) *de_ds1 = de;
    if (di_ds2) *di_ds2 = di;
    if (diff) *diff = e - i;
    return scale * (e - i);
}

/* The norm of tap t over the p kernels (not clamped). */
BF_DOG_FN double bf_dog_tap_norm(int p, int k, int t, int amp_paper, const float *sigma1, const float *sigma2_scale,
                                 const float *scale) {
    double d = bf_dog_distance(k, t), sum = 0.0;
    for (int q = 0; q < p; q++) {
        double r = bf_dog_raw(bf_dog_widths_of(sigma1[q], sigma2_scale[q]), scale[q], d, amp_paper, 0, 0, 0);
        sum += r * r;
    }
    return sqrt(sum);
}

/* w[q, t]: R over the tap's norm as stored (a float, clamped at 1e-12): what the backward divides by. */
BF_DOG_FN float bf_dog_normalised(int p, int k, int q, int t, int amp_paper, const float *sigma1,
                                  const float *sigma2_scale, const float *scale, const float *norms) {
    (void)p;
    double r = bf_dog_raw(bf_dog_widths_of(sigma1[q], sigma2_scale[q]), scale[q], bf_dog_distance(k, t), amp_paper, 0,
                          0, 0);
    return (float)(r / (norms[t] > 1e-12f ? (double)norms[t] : 1e-12));
}

/* Kernel q's gradients from dw (ops.h, dog_kernels_backward): dR = (G - K sum_q' G K) / n per tap,
 * then the chain rule through R = scale (E(s1) - I(s1 r)). */
BF_DOG_FN void bf_dog_kernel_backward(int p, int k, int amp_paper, int q, const float *sigma1, const float *sigma2_scale,
                                      const float *scale, const float *w, const float *norms, const float *dw,
                                      float *dsigma1, float *dsigma2_scale, float *dscale) {
    const int taps = k * k;
    bf_dog_widths wd = bf_dog_widths_of(sigma1[q], sigma2_scale[q]);
    double g_tau = 0.0, g_s1 = 0.0, g_r = 0.0;
    for (int t = 0; t < taps; t++) {
        double dot = 0.0; /* sum over kernels of G K at this tap */
        for (int o = 0; o < p; o++) dot += (double)dw[(size_t)o * taps + t] * w[(size_t)o * taps + t];
        double n = norms[t] > 1e-12f ? (double)norms[t] : 1e-12;
        double g = (double)dw[(size_t)q * taps + t];
        /* below the clamp the norm is a constant: no term through it */
        double d_raw = norms[t] > 1e-12f ? (g - (double)w[(size_t)q * taps + t] * dot) / n : g / n;
        double de, di, diff;
        bf_dog_raw(wd, scale[q], bf_dog_distance(k, t), amp_paper, &de, &di, &diff);
        g_tau += d_raw * diff;
        g_s1 += d_raw * scale[q] * (de - wd.r * di);
        g_r += d_raw * scale[q] * (-wd.s1 * di);
    }
    dscale[q] = (float)g_tau;
    dsigma1[q] = sigma1[q] >= 0.1f ? (float)g_s1 : 0.0f;
    dsigma2_scale[q] = sigma2_scale[q] >= 1.0001f ? (float)g_r : 0.0f;
}

#endif
