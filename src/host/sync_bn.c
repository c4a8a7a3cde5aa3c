/* sync_bn.c - synchronised batch-norm on the CPU backend (see sync_bn.h). Two collectives per
 * forward (the mean, then the squared deviations: the two-pass variance of batchnorm_cpu.c) and one
 * per backward (sum dy and sum dy*xhat), each of c+1 doubles. */
#include <math.h>
#include <stdlib.h>

#include "sync_bn.h"

static const float *plane(const bf_bn_shape *s, const float *base, int i, int ch) {
    return base + ((size_t)i * s->c + ch) * s->hw;
}

bf_status bf_sync_bn_forward_train(bf_model *m, const bf_bn_shape *s, const float *x, const float *gamma,
                                   const float *beta, float *y, float *save_mean, float *save_invstd,
                                   float *running_mean, float *running_var) {
    if (m->backend->kind != BF_DEVICE_CPU)
        return bf_error(BF_ERR_UNAVAILABLE, "[run] sync_bn = true is implemented for the CPU backend only");
    int c = s->c;
    double *sums = calloc((size_t)c + 1, sizeof *sums), *mean = calloc((size_t)c, sizeof *mean);
    if (!sums || !mean) {
        free(sums);
        free(mean);
        return bf_error(BF_ERR_OOM, "sync_bn: out of host memory");
    }
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < s->n; i++) {
            const float *p = plane(s, x, i, ch);
            for (int j = 0; j < s->hw; j++) sums[ch] += p[j];
        }
    sums[c] = (double)s->n * s->hw; /* this rank's values per channel */
    bf_status st = m->sync_sums(m->sync_ctx, sums, (size_t)c + 1);
    const double count = sums[c];
    if (st == BF_OK && count < 2)
        st = bf_error(BF_ERR_ARG, "batchnorm: training needs more than one value per channel (%g over all ranks)", count);
    for (int ch = 0; st == BF_OK && ch < c; ch++) {
        mean[ch] = sums[ch] / count;
        double sq = 0;
        for (int i = 0; i < s->n; i++) {
            const float *p = plane(s, x, i, ch);
            for (int j = 0; j < s->hw; j++) sq += ((double)p[j] - mean[ch]) * ((double)p[j] - mean[ch]);
        }
        sums[ch] = sq;
    }
    sums[c] = 0;
    if (st == BF_OK) st = m->sync_sums(m->sync_ctx, sums, (size_t)c + 1);
    for (int ch = 0; st == BF_OK && ch < c; ch++) {
        const double var = sums[ch] / count; /* biased: what the batch is normalised with */
        const float invstd = (float)(1.0 / sqrt(var + s->eps)), mu = (float)mean[ch];
        const double momentum = s->momentum;
        if (save_mean) save_mean[ch] = mu;
        if (save_invstd) save_invstd[ch] = invstd;
        if (running_mean) running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean[ch]);
        if (running_var)
            running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * var * count / (count - 1));
        const float scale = gamma[ch] * invstd;
        for (int i = 0; i < s->n; i++) {
            const float *p = plane(s, x, i, ch);
            float *q = y + ((size_t)i * c + ch) * s->hw;
            for (int j = 0; j < s->hw; j++) q[j] = (p[j] - mu) * scale + beta[ch];
        }
    }
    free(sums);
    free(mean);
    return st;
}

/* dbeta and dgamma stay this rank's sums (the gradient average over the ranks makes them the
 * global batch's); dx needs the sums over every rank's values of the channel:
 *     dx = gamma * invstd * (dy - sum_all(dy)/count_all - xhat * sum_all(dy*xhat)/count_all). */
bf_status bf_sync_bn_backward(bf_model *m, const bf_bn_shape *s, const float *x, const float *dy, const float *gamma,
                              const float *save_mean, const float *save_invstd, float *dx, float *dgamma,
                              float *dbeta) {
    if (m->backend->kind != BF_DEVICE_CPU)
        return bf_error(BF_ERR_UNAVAILABLE, "[run] sync_bn = true is implemented for the CPU backend only");
    int c = s->c;
    double *sums = calloc(2 * (size_t)c + 1, sizeof *sums);
    if (!sums) return bf_error(BF_ERR_OOM, "sync_bn: out of host memory");
    for (int ch = 0; ch < c; ch++) {
        double sdy = 0, sdyc = 0;
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch), *dyp = plane(s, dy, i, ch);
            for (int j = 0; j < s->hw; j++) {
                sdy += dyp[j];
                sdyc += (double)dyp[j] * ((double)xp[j] - save_mean[ch]);
            }
        }
        sums[ch] = sdy;
        sums[c + ch] = sdyc * save_invstd[ch];
        if (dbeta) dbeta[ch] = (float)sdy;
        if (dgamma) dgamma[ch] = (float)sums[c + ch];
    }
    sums[2 * c] = (double)s->n * s->hw;
    bf_status st = m->sync_sums(m->sync_ctx, sums, 2 * (size_t)c + 1);
    const double count = sums[2 * c];
    for (int ch = 0; st == BF_OK && ch < c; ch++) {
        const float mean = save_mean[ch], invstd = save_invstd[ch], scale = gamma[ch] * invstd;
        const float mean_dy = (float)(sums[ch] / count), mean_dy_xhat = (float)(sums[c + ch] / count);
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch), *dyp = plane(s, dy, i, ch);
            float *dxp = dx + ((size_t)i * c + ch) * s->hw;
            for (int j = 0; j < s->hw; j++) {
                float xhat = (xp[j] - mean) * invstd;
                dxp[j] = scale * (dyp[j] - mean_dy - xhat * mean_dy_xhat);
            }
        }
    }
    free(sums);
    return st;
}
