/* butd_internal.h - what the BU-TD files (src/host/butd_*.c) share besides include/bioflex/butd.h:
 * the parameter layout, batch-norm inside BU-TD networks (butd_norm.c) and the trained task head
 * (butd_task_head.c). Private to src/host/butd_*.c. */
#ifndef BIOFLEX_BUTD_INTERNAL_H
#define BIOFLEX_BUTD_INTERNAL_H

#include "bioflex/butd.h"

/* Appends a parameter "<layer>.<what>" of the given shape at the end of the parameter buffer's
 * layout (butd_net.c); returns its index, -1 when out of memory. */
int bf_butd_param_add(bf_butd_net *net, const char *layer, const char *what, int ndim, const int64_t *shape,
                      int64_t fan_in, int layer_index);

/* ---- batch-norm (butd_norm.c) ---- */
/* A norm for a conv with c x hw outputs whose transposed op has td_c x td_hw outputs (host struct,
 * no backend memory yet). NULL when out of memory (the error is set). */
bf_butd_norm *bf_butd_norm_new(const char *name, int max_batch, int c, int hw, int td_c, int td_hw);
/* Registers gamma and beta as parameters of layer `layer` and reserves its running statistics. */
bf_status bf_butd_norm_add_params(bf_butd_net *net, bf_butd_norm *norm, int layer);
/* gamma = 1, beta = 0 into the host copy of the parameters; running mean 0, var 1 into the state. */
void bf_butd_norm_init(const bf_butd_net *net, float *host_params, float *host_state);
/* Backend memory of every norm, the state buffer and the TD copies' fixed gamma and beta. */
bf_status bf_butd_norm_allocate(bf_butd_net *net, const float *host_state);
void bf_butd_norm_set_batch(bf_butd_net *net, int n);
void bf_butd_norm_free(bf_butd_net *net);
/* Zero gradients for every gamma and beta (Counter-Hebb with ch_bn = independent updates neither). */
bf_status bf_butd_norm_zero_grads(bf_butd_net *net);

/* BU: y = BN(norm->z) (batch statistics when net->training, else running). */
bf_status bf_butd_norm_bu(bf_butd_net *net, bf_butd_norm *norm, float *y);
/* TD copy: y = BN_td(x) over td.c channels, gamma 1 and beta 0; y must not alias x. */
bf_status bf_butd_norm_td(bf_butd_net *net, bf_butd_norm *norm, const float *x, float *y);
/* Backprop through the last BU pass: dz from dy (per-sample loss gradients, not divided by the
 * batch) and gamma's and beta's gradients of the batch-mean loss into grad_data. */
bf_status bf_butd_norm_backward(bf_butd_net *net, bf_butd_norm *norm, const float *dy, float *dz);

/* ---- the trained task head ([butd] train_task_head, butd_task_head.c) ---- */
/* The network it applies to: guided, plain conv and linear layers (no block, no batch-norm). */
bf_status bf_butd_task_head_check(const bf_butd_net *net);
/* The per-level buffers the straight-through gradient needs. */
bf_status bf_butd_task_head_allocate(bf_butd_net *net);
void bf_butd_task_head_free(bf_butd_net *net);
/* After the error pass: the gradient of the batch-mean loss for the task head's weights, into
 * grad_data (their place in the parameters). */
bf_status bf_butd_task_head_backward(bf_butd_net *net);

#endif
