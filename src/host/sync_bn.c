/* sync_bn.c - synchronised batch-norm (see sync_bn.h), written once for every backend with the
 * batchnorm_sync_* ops (ops.h): each op writes per-channel sums into the bf_bn_sync buffer
 * (backend memory), its hook all-reduces them over the ranks, and the next op
 * goes on from the global totals. Two collectives per forward (the sums, then the squared
 * deviations from the global mean: the two-pass variance of batchnorm_cpu.c) and one per backward
 * (sum dy and sum dy*xhat), of c+1, c and 2c+1 doubles. The hook runs in the backend's stream
 * order, so on CUDA nothing here waits for the device. */
#include "sync_bn.h"

static bf_status sync_buffer(const bf_bn_sync *sync, const bf_bn_shape *s) {
    if (!sync->sums) return bf_error(BF_ERR_INTERNAL, "sync_bn: no sync_sums hook");
    if (!sync->buffer || sync->doubles < 2 * (size_t)s->c + 1)
        return bf_error(BF_ERR_INTERNAL, "sync_bn: %zu doubles planned for the sums, a batch-norm of %d channels "
                        "needs %zu", sync->doubles, s->c, 2 * (size_t)s->c + 1);
    return BF_OK;
}

bf_status bf_sync_bn_forward_train(const bf_bn_sync *sync, const bf_bn_shape *s, const float *x, const float *gamma,
                                   const float *beta, float *y, float *save_mean, float *save_invstd,
                                   float *running_mean, float *running_var) {
    BF_TRY(sync_buffer(sync, s));
    bf_backend *b = sync->backend;
    double *stats = sync->buffer, *sq = stats + s->c + 1; /* [c sums, count], [c squared deviations] */
    BF_TRY(b->ops->batchnorm_sync_sums(b, s, x, stats));
    BF_TRY(sync->sums(sync->ctx, stats, (size_t)s->c + 1));
    BF_TRY(b->ops->batchnorm_sync_sqdev(b, s, x, stats, sq));
    BF_TRY(sync->sums(sync->ctx, sq, (size_t)s->c));
    return b->ops->batchnorm_sync_forward_apply(b, s, x, stats, sq, gamma, beta, y, save_mean, save_invstd,
                                                running_mean, running_var);
}

/* dbeta and dgamma stay this rank's sums (the gradient average over the ranks makes them the
 * global batch's); dx needs the sums over every rank's values of the channel:
 *     dx = gamma * invstd * (dy - sum_all(dy)/count_all - xhat * sum_all(dy*xhat)/count_all). */
bf_status bf_sync_bn_backward(const bf_bn_sync *sync, const bf_bn_shape *s, const float *x, const float *dy,
                              const float *gamma, const float *save_mean, const float *save_invstd, float *dx,
                              float *dgamma, float *dbeta) {
    BF_TRY(sync_buffer(sync, s));
    bf_backend *b = sync->backend;
    double *sums = sync->buffer; /* [c sum dy, c sum dy*xhat, count] */
    BF_TRY(b->ops->batchnorm_sync_backward_sums(b, s, x, dy, save_mean, save_invstd, sums, dgamma, dbeta));
    BF_TRY(sync->sums(sync->ctx, sums, 2 * (size_t)s->c + 1));
    return b->ops->batchnorm_sync_backward_apply(b, s, x, dy, gamma, save_mean, save_invstd, sums, dx);
}
