/* batchnorm_cpu.c - batch normalisation over (n, hw) per channel on the CPU (contract in ops.h).
 *
 * x is [n, c, hw]; channel ch of sample i is the plane x + (i*c + ch)*hw. Each thread handles
 * whole channels, so every per-channel sum is taken by one thread in a fixed order, in double.
 * The variance is computed in two passes (mean first, then squared deviations), which stays
 * accurate when the mean is large compared with the spread. */
#include <math.h>
#include <omp.h>

#include "cpu_backend.h"

static bf_status check_shape(const bf_bn_shape *s) {
    if (s->n <= 0 || s->c <= 0 || s->hw <= 0 || !(s->eps > 0.0f))
        return bf_error(BF_ERR_ARG, "batchnorm: invalid shape n=%d c=%d hw=%d eps=%g", s->n, s->c, s->hw, s->eps);
    return BF_OK;
}

static inline const float *plane(const bf_bn_shape *s, const float *base, int i, int ch) {
    return base + ((size_t)i * s->c + ch) * s->hw;
}

static inline float *plane_mut(const bf_bn_shape *s, float *base, int i, int ch) {
    return base + ((size_t)i * s->c + ch) * s->hw;
}

/* y = (x - mean) * (gamma * invstd) + beta over one channel. */
static void normalise_channel(const bf_bn_shape *s, int ch, const float *x, float mean, float scale,
                              float beta, float *y) {
    for (int i = 0; i < s->n; i++) {
        const float *xp = plane(s, x, i, ch);
        float *yp = plane_mut(s, y, i, ch);
        for (int j = 0; j < s->hw; j++) yp[j] = (xp[j] - mean) * scale + beta;
    }
}

bf_status bf_cpu_batchnorm_forward_train(bf_backend *b, const bf_bn_shape *s, const float *x,
                                         const float *gamma, const float *beta, float *y,
                                         float *save_mean, float *save_invstd,
                                         float *running_mean, float *running_var) {
    BF_TRY(check_shape(s));
    if (!x || (y && (!gamma || !beta))) return bf_error(BF_ERR_ARG, "batchnorm_forward_train: NULL input");
    const double count = (double)s->n * s->hw, copies = count * bf_bn_copies(s);
    /* PyTorch refuses to train with one value per channel: the unbiased variance is undefined. */
    if (copies < 2) return bf_error(BF_ERR_ARG, "batchnorm: training needs more than one value per channel (n=%d hw=%d)", s->n, s->hw);
    const double unbias = copies / (copies - 1);
    const double momentum = s->momentum;

#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        double sum = 0;
        for (int i = 0; i < s->n; i++) sum += bf_cpu_lane_sum(plane(s, x, i, ch), (size_t)s->hw);
        const double mean = sum / count;
        double squares = 0;
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch);
            squares += bf_cpu_lane_dot(xp, mean, xp, mean, (size_t)s->hw);
        }
        const double var = squares / count; /* biased: what the batch is normalised with */
        const float invstd = (float)(1.0 / sqrt(var + s->eps));

        if (save_mean) save_mean[ch] = (float)mean;
        if (save_invstd) save_invstd[ch] = invstd;
        if (running_mean) running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
        if (running_var) {
            const float updated = (float)((1.0 - momentum) * running_var[ch] + momentum * var * unbias);
            running_var[ch] = updated < s->var_floor ? s->var_floor : updated; /* NaN stays NaN */
        }
        if (y) normalise_channel(s, ch, x, (float)mean, gamma[ch] * invstd, beta[ch], y); /* NULL: statistics alone */
    }
    return BF_OK;
}

bf_status bf_cpu_batchnorm_forward_saved(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                         const float *beta, const float *save_mean, const float *save_invstd,
                                         float *y) {
    BF_TRY(check_shape(s));
    if (!x || !gamma || !beta || !save_mean || !save_invstd || !y)
        return bf_error(BF_ERR_ARG, "batchnorm_forward_saved: NULL input or output");
    /* the training forward normalised with (float)mean = save_mean and gamma * invstd */
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) normalise_channel(s, ch, x, save_mean[ch], gamma[ch] * save_invstd[ch], beta[ch], y);
    return BF_OK;
}

bf_status bf_cpu_batchnorm_forward_eval(bf_backend *b, const bf_bn_shape *s, const float *x,
                                        const float *gamma, const float *beta,
                                        const float *running_mean, const float *running_var, float *y) {
    BF_TRY(check_shape(s));
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        float invstd = (float)(1.0 / sqrt((double)running_var[ch] + s->eps));
        normalise_channel(s, ch, x, running_mean[ch], gamma[ch] * invstd, beta[ch], y);
    }
    return BF_OK;
}


/* dx of one plane: scale * (dy - mean(dy) - xhat * mean(dy*xhat)), xhat = (x - mean) * invstd. */
static void dx_plane(const float *xp, const float *dyp, float *dxp, int hw, float mean, float invstd, float scale,
                     float mean_dy, float mean_dy_xhat) {
    for (int j = 0; j < hw; j++) {
        float xhat = (xp[j] - mean) * invstd;
        dxp[j] = scale * (dyp[j] - mean_dy - xhat * mean_dy_xhat);
    }
}

/* dx of channel ch: gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)), the means given (over
 * this batch, or over every rank's for synchronised batch-norm). */
void bf_cpu_bn_dx_channel(const bf_bn_shape *s, const float *x, const float *dy, const float *gamma, int ch, float mean,
                          float invstd, float mean_dy, float mean_dy_xhat, float *dx) {
    const float scale = gamma[ch] * invstd;
    for (int i = 0; i < s->n; i++)
        dx_plane(plane(s, x, i, ch), plane(s, dy, i, ch), plane_mut(s, dx, i, ch), s->hw, mean, invstd, scale, mean_dy,
                 mean_dy_xhat);
}

/* ---- batch-norm and ReLU fused (ops.h at batchnorm_relu_apply) ---- */

bf_status bf_cpu_batchnorm_relu_apply(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                      const float *beta, const float *save_mean, const float *save_invstd, float *y) {
    BF_TRY(check_shape(s));
    if (!x || !gamma || !beta || !save_mean || !save_invstd || !y)
        return bf_error(BF_ERR_ARG, "batchnorm_relu_apply: NULL input or output");
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        const float mean = save_mean[ch], scale = gamma[ch] * save_invstd[ch], shift = beta[ch];
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch);
            float *yp = plane_mut(s, y, i, ch);
            for (int j = 0; j < s->hw; j++) { /* normalise_channel's z, then relu_forward's x < 0 ? 0 : x */
                const float z = (xp[j] - mean) * scale + shift;
                yp[j] = z < 0.0f ? 0.0f : z;
            }
        }
    }
    return BF_OK;
}

/* g = dy where the batch-norm output z of x is > 0, else 0: relu_backward's mask, whose y = relu(z)
 * is > 0 exactly when z is. */
static void relu_mask_plane(const float *xp, const float *dyp, int hw, float mean, float scale, float shift, float *g) {
    for (int j = 0; j < hw; j++) {
        const float z = (xp[j] - mean) * scale + shift, d = dyp[j];
        g[j] = z > 0.0f ? d : 0.0f;
    }
}

/* The per-channel sums of the backward over channel ch: sum of g and of g * xhat (as invstd * the sum of
 * g * (x - mean), in double), g = dy, or with relu dy where the batch-norm output z of x is > 0
 * (relu_mask_plane into the plane g_plane of the thread). One source for every backward op, so that
 * their dgamma, dbeta and means have the same bits. */
static void backward_sums_channel(const bf_bn_shape *s, int relu, const float *x, const float *dy, int ch, float mean,
                                  float invstd, float scale, float shift, float *g_plane, double *sum_dy,
                                  double *sum_dy_xhat) {
    double sum = 0, centred = 0;
    for (int i = 0; i < s->n; i++) {
        const float *xp = plane(s, x, i, ch), *g = plane(s, dy, i, ch);
        if (relu) {
            relu_mask_plane(xp, g, s->hw, mean, scale, shift, g_plane);
            g = g_plane;
        }
        sum += bf_cpu_lane_sum(g, (size_t)s->hw);
        centred += bf_cpu_lane_dot(g, 0, xp, mean, (size_t)s->hw);
    }
    *sum_dy = sum;
    *sum_dy_xhat = centred * invstd;
}

/* batchnorm_backward's sums and dx over the masked gradient, plane by plane (the mask computed
 * again for the second pass rather than kept: a plane of floats per thread). */
bf_status bf_cpu_batchnorm_relu_backward(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                         const float *gamma, const float *beta, const float *save_mean,
                                         const float *save_invstd, float *dx, float *dgamma, float *dbeta) {
    BF_TRY(check_shape(s));
    if (!x || !dy || !gamma || !beta || !save_mean || !save_invstd || !dx)
        return bf_error(BF_ERR_ARG, "batchnorm_relu_backward: NULL input or output");
    const double count = (double)s->n * s->hw;
    const int threads = bf_cpu_threads(b);
    void *scratch; /* a plane of masked gradients per thread, from the backend's scratch: no allocation per step */
    BF_TRY(bf_cpu_scratch(b, (size_t)threads * (size_t)s->hw * sizeof(float), &scratch));
    float *masked = scratch;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        float *g = masked + (size_t)omp_get_thread_num() * (size_t)s->hw;
        const float mean = save_mean[ch], invstd = save_invstd[ch], scale = gamma[ch] * invstd, shift = beta[ch];
        double sum_dy, sum_dy_xhat;
        backward_sums_channel(s, 1, x, dy, ch, mean, invstd, scale, shift, g, &sum_dy, &sum_dy_xhat);
        if (dbeta) dbeta[ch] = (float)sum_dy;
        if (dgamma) dgamma[ch] = (float)sum_dy_xhat;
        const float mean_dy = (float)(sum_dy / count), mean_dy_xhat = (float)(sum_dy_xhat / count);
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch);
            relu_mask_plane(xp, plane(s, dy, i, ch), s->hw, mean, scale, shift, g);
            dx_plane(xp, g, plane_mut(s, dx, i, ch), s->hw, mean, invstd, scale, mean_dy, mean_dy_xhat);
        }
    }
    return BF_OK;
}

/* With xhat = (x - mean) * invstd and y = gamma * xhat + beta, over the count values of a channel:
 *     dbeta = sum dy,  dgamma = sum dy * xhat,
 *     dx = gamma * invstd * (dy - dbeta/count - xhat * dgamma/count). */
bf_status bf_cpu_batchnorm_backward(bf_backend *b, const bf_bn_shape *s, const float *x,
                                    const float *dy, const float *gamma, const float *save_mean,
                                    const float *save_invstd, float *dx, float *dgamma, float *dbeta) {
    BF_TRY(check_shape(s));
    const double count = (double)s->n * s->hw;

#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        const float mean = save_mean[ch], invstd = save_invstd[ch];
        double sum_dy, sum_dy_xhat;
        backward_sums_channel(s, 0, x, dy, ch, mean, invstd, 0.0f, 0.0f, NULL, &sum_dy, &sum_dy_xhat);
        if (dbeta) dbeta[ch] = (float)sum_dy;
        if (dgamma) dgamma[ch] = (float)sum_dy_xhat;

        bf_cpu_bn_dx_channel(s, x, dy, gamma, ch, mean, invstd, (float)(sum_dy / count), (float)(sum_dy_xhat / count),
                             dx);
    }
    return BF_OK;
}

bf_status bf_cpu_batchnorm_backward_sums(bf_backend *b, const bf_bn_shape *s, int relu, const float *x,
                                         const float *dy, const float *gamma, const float *beta,
                                         const float *save_mean, const float *save_invstd, float *dgamma,
                                         float *dbeta, float *coef) {
    BF_TRY(check_shape(s));
    if (!x || !dy || !gamma || (relu && !beta) || !save_mean || !save_invstd || !coef)
        return bf_error(BF_ERR_ARG, "batchnorm_backward_sums: NULL input or output");
    const double count = (double)s->n * s->hw;
    const int threads = bf_cpu_threads(b);
    float *masked = NULL;
    if (relu) {
        void *scratch;
        BF_TRY(bf_cpu_scratch(b, (size_t)threads * (size_t)s->hw * sizeof(float), &scratch));
        masked = scratch;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        const float mean = save_mean[ch], invstd = save_invstd[ch];
        const float scale = relu ? gamma[ch] * invstd : 0.0f, shift = relu ? beta[ch] : 0.0f;
        double sum_dy, sum_dy_xhat;
        backward_sums_channel(s, relu, x, dy, ch, mean, invstd, scale, shift,
                              relu ? masked + (size_t)omp_get_thread_num() * (size_t)s->hw : NULL, &sum_dy,
                              &sum_dy_xhat);
        if (dbeta) dbeta[ch] = (float)sum_dy;
        if (dgamma) dgamma[ch] = (float)sum_dy_xhat;
        coef[ch] = (float)(sum_dy / count);
        coef[s->c + ch] = (float)(sum_dy_xhat / count);
    }
    return BF_OK;
}

void bf_cpu_bn_dx_from_coef(const bf_bn_shape *s, const bf_bn_grad *bn, const float *x, const float *dy, float *dx,
                            int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int ch = 0; ch < s->c; ch++) {
        const float mean = bn->mean[ch], invstd = bn->invstd[ch], scale = bn->gamma[ch] * invstd;
        const float shift = bn->relu ? bn->beta[ch] : 0.0f, mdy = bn->coef[ch], mdx = bn->coef[s->c + ch];
        for (int i = 0; i < s->n; i++) {
            const float *xp = plane(s, x, i, ch), *dyp = plane(s, dy, i, ch);
            float *dxp = plane_mut(s, dx, i, ch);
            for (int j = 0; j < s->hw; j++) { /* relu_mask_plane's g, then dx_plane's expression */
                const float d = dyp[j];
                const float g = bn->relu && !((xp[j] - mean) * scale + shift > 0.0f) ? 0.0f : d;
                const float xhat = (xp[j] - mean) * invstd;
                dxp[j] = scale * (g - mdy - xhat * mdx);
            }
        }
    }
}
