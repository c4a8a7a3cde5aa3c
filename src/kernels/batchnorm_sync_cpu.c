/* batchnorm_sync_cpu.c - the steps of synchronised batch-norm on the CPU (contracts in ops.h; the
 * CUDA twin is in batchnorm.cu). The data-parallel code all-reduces the per-channel sums between
 * the steps (src/host/sync_bn.c).
 *
 * Every per-channel sum is taken by one thread over the channel's planes, with the same lane
 * helpers and in the same order as batchnorm_cpu.c, so with one rank the results are those of
 * batchnorm_forward_train / batchnorm_backward bit for bit. */
#include <math.h>

#include "cpu_backend.h"

static bf_status check_shape(const bf_bn_shape *s, const char *op) {
    if (!s || s->n <= 0 || s->c <= 0 || s->hw <= 0 || !(s->eps > 0.0f))
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d c=%d hw=%d eps=%g", op, s ? s->n : 0, s ? s->c : 0,
                        s ? s->hw : 0, s ? s->eps : 0.0);
    return BF_OK;
}

static inline const float *plane(const bf_bn_shape *s, const float *base, int i, int ch) {
    return base + ((size_t)i * s->c + ch) * s->hw;
}

static inline float *plane_mut(const bf_bn_shape *s, float *base, int i, int ch) {
    return base + ((size_t)i * s->c + ch) * s->hw;
}

bf_status bf_cpu_batchnorm_sync_sums(bf_backend *b, const bf_bn_shape *s, const float *x, double *stats) {
    BF_TRY(check_shape(s, "batchnorm_sync_sums"));
    if (!x || !stats) return bf_error(BF_ERR_ARG, "batchnorm_sync_sums: NULL input or output");
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        double sum = 0;
        for (int i = 0; i < s->n; i++) sum += bf_cpu_lane_sum(plane(s, x, i, ch), (size_t)s->hw);
        stats[ch] = sum;
    }
    stats[s->c] = (double)s->n * s->hw;
    return BF_OK;
}

bf_status bf_cpu_batchnorm_sync_sqdev(bf_backend *b, const bf_bn_shape *s, const float *x, const double *stats,
                                      double *sq) {
    BF_TRY(check_shape(s, "batchnorm_sync_sqdev"));
    if (!x || !stats || !sq) return bf_error(BF_ERR_ARG, "batchnorm_sync_sqdev: NULL input or output");
    const double count = stats[s->c];
    if (!(count > 0)) return bf_error(BF_ERR_ARG, "batchnorm_sync_sqdev: the summed count is %g", count);
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        const double mean = stats[ch] / count;
        double squares = 0;
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch);
            squares += bf_cpu_lane_dot(xp, mean, xp, mean, (size_t)s->hw);
        }
        sq[ch] = squares;
    }
    return BF_OK;
}

bf_status bf_cpu_batchnorm_sync_forward_apply(bf_backend *b, const bf_bn_shape *s, const float *x,
                                              const double *stats, const double *sq, const float *gamma,
                                              const float *beta, float *y, float *save_mean, float *save_invstd,
                                              float *running_mean, float *running_var) {
    BF_TRY(check_shape(s, "batchnorm_sync_forward_apply"));
    if (!x || !stats || !sq || !gamma || !beta)
        return bf_error(BF_ERR_ARG, "batchnorm_sync_forward_apply: NULL input");
    const double count = stats[s->c], copies = count * bf_bn_copies(s);
    /* PyTorch refuses to train with one value per channel: the unbiased variance is undefined. */
    if (copies < 2)
        return bf_error(BF_ERR_ARG, "batchnorm: training needs more than one value per channel (%g over all ranks)",
                        count);
    const double unbias = copies / (copies - 1), momentum = s->momentum;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        const double mean = stats[ch] / count;
        const double var = sq[ch] / count; /* biased: what the batch is normalised with */
        const float invstd = (float)(1.0 / sqrt(var + s->eps)), mu = (float)mean, scale = gamma[ch] * invstd;
        if (save_mean) save_mean[ch] = mu;
        if (save_invstd) save_invstd[ch] = invstd;
        if (running_mean) running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
        if (running_var) {
            const float updated = (float)((1.0 - momentum) * running_var[ch] + momentum * var * unbias);
            running_var[ch] = updated < s->var_floor ? s->var_floor : updated; /* NaN stays NaN */
        }
        for (int i = 0; y && i < s->n; i++) { /* y NULL: the statistics alone */
            const float *xp = plane(s, x, i, ch);
            float *yp = plane_mut(s, y, i, ch);
            for (int j = 0; j < s->hw; j++) yp[j] = (xp[j] - mu) * scale + beta[ch];
        }
    }
    return BF_OK;
}

bf_status bf_cpu_batchnorm_sync_backward_sums(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                              const float *save_mean, const float *save_invstd, double *sums,
                                              float *dgamma, float *dbeta) {
    BF_TRY(check_shape(s, "batchnorm_sync_backward_sums"));
    if (!x || !dy || !save_mean || !save_invstd || !sums)
        return bf_error(BF_ERR_ARG, "batchnorm_sync_backward_sums: NULL input or output");
    const int c = s->c;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        const float mean = save_mean[ch];
        double sum_dy = 0, sum_dy_centred = 0;
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch), *dyp = plane(s, dy, i, ch);
            sum_dy += bf_cpu_lane_sum(dyp, (size_t)s->hw);
            sum_dy_centred += bf_cpu_lane_dot(dyp, 0, xp, mean, (size_t)s->hw);
        }
        const double sum_dy_xhat = sum_dy_centred * save_invstd[ch];
        sums[ch] = sum_dy;
        sums[c + ch] = sum_dy_xhat;
        if (dbeta) dbeta[ch] = (float)sum_dy;
        if (dgamma) dgamma[ch] = (float)sum_dy_xhat;
    }
    sums[2 * c] = (double)s->n * s->hw;
    return BF_OK;
}

bf_status bf_cpu_batchnorm_sync_backward_apply(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                               const float *gamma, const float *save_mean, const float *save_invstd,
                                               const double *sums, float *dx) {
    BF_TRY(check_shape(s, "batchnorm_sync_backward_apply"));
    if (!x || !dy || !gamma || !save_mean || !save_invstd || !sums || !dx)
        return bf_error(BF_ERR_ARG, "batchnorm_sync_backward_apply: NULL input or output");
    const int c = s->c;
    const double count = sums[2 * c];
    if (!(count > 0)) return bf_error(BF_ERR_ARG, "batchnorm_sync_backward_apply: the summed count is %g", count);
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < c; ch++) {
        bf_cpu_bn_dx_channel(s, x, dy, gamma, ch, save_mean[ch], save_invstd[ch], (float)(sums[ch] / count),
                             (float)(sums[c + ch] / count), dx);
    }
    return BF_OK;
}
