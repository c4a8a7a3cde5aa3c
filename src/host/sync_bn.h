/* sync_bn.h - internal: synchronised batch-norm ([run] sync_bn = true) for data parallelism on
 * every backend. The batch statistics (forward) and the two gradient sums of the backward are
 * summed over every rank through the model's sync_sums hook, so N ranks with batch b normalise
 * exactly as one process with batch N*b does. Same contract as the ops.h batch-norm ops; backend
 * memory. */
#ifndef BIOFLEX_SYNC_BN_H
#define BIOFLEX_SYNC_BN_H

#include "bioflex/model.h"

bf_status bf_sync_bn_forward_train(bf_model *m, const bf_bn_shape *s, const float *x, const float *gamma,
                                   const float *beta, float *y, float *save_mean, float *save_invstd,
                                   float *running_mean, float *running_var);
bf_status bf_sync_bn_backward(bf_model *m, const bf_bn_shape *s, const float *x, const float *dy, const float *gamma,
                              const float *save_mean, const float *save_invstd, float *dx, float *dgamma,
                              float *dbeta);

#endif
