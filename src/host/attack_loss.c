/* attack_loss.c - Jitter's cost and SPSA's margin on one image's logits (attack_loss.h says what
 * each computes). In double: these are a few dozen operations per image. */
#include <math.h>
#include <stdlib.h>

#include "attack_loss.h"

double bf_jitter_cost(const float *z, int K, int label, float scale, float std, const double *noise, double *dz) {
    double norm = 0;
    for (int k = 0; k < K; k++) norm = fmax(norm, fabs((double)z[k]));
    const double factor = norm > 0 ? scale / norm : 0; /* u = factor * z */
    double top = -INFINITY, total = 0, cost = 0;
    for (int k = 0; k < K; k++) top = fmax(top, factor * z[k]);
    double *p = malloc(2 * (size_t)K * sizeof *p), *dp = p ? p + K : NULL;
    if (!p) return NAN;
    for (int k = 0; k < K; k++) total += p[k] = exp(factor * z[k] - top);
    double dot = 0; /* sum_k p_k dcost/dp_k */
    for (int k = 0; k < K; k++) {
        p[k] /= total;
        const double diff = p[k] + (noise ? std * noise[k] : 0.0) - (k == label);
        cost += diff * diff / K;
        dp[k] = 2 * diff / K;
        dot += p[k] * dp[k];
    }
    if (dz) {
        double du_dot_z = 0; /* sum_k dcost/du_k z_k: what N's change does through every u_k */
        int ties = 0;
        for (int k = 0; k < K; k++) {
            const double du = p[k] * (dp[k] - dot);
            du_dot_z += du * z[k];
            dz[k] = factor * du;
            ties += norm > 0 && fabs((double)z[k]) == norm;
        }
        for (int k = 0; k < K && ties; k++) /* d u_k / d N = -factor * z_k / N */
            if (fabs((double)z[k]) == norm) dz[k] -= (z[k] > 0 ? 1.0 : -1.0) * factor / norm * du_dot_z / ties;
    }
    free(p);
    return cost;
}

/* |x_j - a0_j| s_j, as bf_perturbation_norm and its gradient both compare it. */
static double element_distance(const float *x, const float *a0, size_t j, size_t plane, const float *channel_scale,
                               int channels) {
    return fabs((double)x[j] - (double)a0[j]) * channel_scale[(j / plane) % (size_t)channels];
}

double bf_perturbation_norm(const float *x, const float *a0, size_t count, size_t plane, const float *channel_scale,
                            int channels) {
    double top = 0;
    for (size_t j = 0; j < count; j++) top = fmax(top, element_distance(x, a0, j, plane, channel_scale, channels));
    return top;
}

void bf_perturbation_norm_gradient(const float *x, const float *a0, size_t count, size_t plane,
                                   const float *channel_scale, int channels, double c, double r, float *g) {
    if (!(r > 0)) return;
    size_t ties = 0;
    for (size_t j = 0; j < count; j++) ties += element_distance(x, a0, j, plane, channel_scale, channels) == r;
    for (size_t j = 0; j < count; j++)
        if (element_distance(x, a0, j, plane, channel_scale, channels) == r) {
            const double dr = (x[j] > a0[j] ? 1.0 : -1.0) * channel_scale[(j / plane) % (size_t)channels] / (double)ties;
            g[j] = (float)(g[j] - c / (r * r) * dr);
        }
}

double bf_margin_loss(const float *z, int K, int label) {
    double other = -INFINITY;
    for (int k = 0; k < K; k++)
        if (k != label) other = fmax(other, (double)z[k]);
    return (double)z[label] - other;
}
