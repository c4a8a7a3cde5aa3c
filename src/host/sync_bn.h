/* sync_bn.h - internal: synchronised batch-norm ([run] sync_bn = true) for data parallelism on
 * every backend. The batch statistics (forward) and the two gradient sums of the backward are
 * summed over every rank through a sync_sums hook (the model's, or a BU-TD network's), so N ranks with batch b normalise
 * exactly as one process with batch N*b does. Same contract as the ops.h batch-norm ops; backend
 * memory. */
#ifndef BIOFLEX_SYNC_BN_H
#define BIOFLEX_SYNC_BN_H

#include "bioflex/model.h"

/* Where the sums go: backend memory of at least 2c+1 doubles, and the hook that sums n of them over
 * the ranks in the backend's stream order (data_parallel.c). A model's come from bf_model_bn_sync;
 * a BU-TD network keeps its own (butd_norm.c). */
typedef struct bf_bn_sync {
    bf_backend *backend;
    bf_status (*sums)(void *ctx, double *sums, size_t n);
    void *ctx;
    double *buffer;
    size_t doubles;
} bf_bn_sync;

static inline bf_bn_sync bf_model_bn_sync(const bf_model *m) {
    return (bf_bn_sync){m->backend, m->sync_sums, m->sync_ctx, m->bn_sync_sums, m->bn_sync_doubles};
}

bf_status bf_sync_bn_forward_train(const bf_bn_sync *sync, const bf_bn_shape *s, const float *x, const float *gamma,
                                   const float *beta, float *y, float *save_mean, float *save_invstd,
                                   float *running_mean, float *running_var);
bf_status bf_sync_bn_backward(const bf_bn_sync *sync, const bf_bn_shape *s, const float *x, const float *dy,
                              const float *gamma, const float *save_mean, const float *save_invstd, float *dx,
                              float *dgamma, float *dbeta);

#endif
