/* divnorm_common.h - internal: the tuned divisive normalisation's per-column arithmetic (contract in
 * ops.h, divnorm_weights), one source for divnorm_cpu.c and divnorm.cu, so that both backends
 * compute the same thing. A column j of W depends on sigma_j alone, so each is one independent loop
 * over the c channels in a fixed order, in double (the exponentials of both backends agree to the
 * last bits of a double; the float results to the last bit but rarely). */
#ifndef BIOFLEX_DIVNORM_COMMON_H
#define BIOFLEX_DIVNORM_COMMON_H

#include <math.h>

#ifdef __CUDACC__
#define BF_DN_FN __host__ __device__ static inline
#else
#define BF_DN_FN static inline
#endif

/* The channel distance D[r, j] (ops.h, bf_oci_distance): opponent, the reference's base[(j - r) mod c]
 * with base[m] = |m - floor(c/2)|; similar, the ring distance min(m, c - m). */
BF_DN_FN double bf_divnorm_distance(int c, int similar, int r, int j) {
    int m = ((j - r) % c + c) % c;
    return similar ? (double)(m < c - m ? m : c - m) : fabs((double)(m - c / 2));
}

/* s_j = max(sigma_j, 0.5): the width the reference clamps to. */
BF_DN_FN double bf_divnorm_width(float sigma) { return sigma > 0.5f ? (double)sigma : 0.5; }

/* Column j of W: w[r * c + j] = g(r, j) / sum_q g(q, j). */
BF_DN_FN void bf_divnorm_column(int c, int similar, int j, float sigma, float *w) {
    double s = bf_divnorm_width(sigma), two_s2 = 2.0 * s * s, total = 0.0;
    for (int r = 0; r < c; r++) {
        double d = bf_divnorm_distance(c, similar, r, j);
        total += exp(-d * d / two_s2);
    }
    for (int r = 0; r < c; r++) {
        double d = bf_divnorm_distance(c, similar, r, j);
        w[(size_t)r * c + j] = (float)(exp(-d * d / two_s2) / total);
    }
}

/* dsigma_j from column j of W and of dW (ops.h, divnorm_weights_backward). */
BF_DN_FN float bf_divnorm_column_backward(int c, int similar, int j, float sigma, const float *w, const float *dw) {
    if (!(sigma >= 0.5f)) return 0.0f; /* clamped: the width does not move with sigma */
    double s = bf_divnorm_width(sigma), mean_d2 = 0.0, total = 0.0;
    for (int q = 0; q < c; q++) {
        double d = bf_divnorm_distance(c, similar, q, j);
        mean_d2 += (double)w[(size_t)q * c + j] * d * d;
    }
    for (int r = 0; r < c; r++) {
        double d = bf_divnorm_distance(c, similar, r, j);
        total += (double)dw[(size_t)r * c + j] * w[(size_t)r * c + j] * (d * d - mean_d2);
    }
    return (float)(total / (s * s * s));
}

#endif
