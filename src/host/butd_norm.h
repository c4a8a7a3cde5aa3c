/* butd_norm.h - batch-norm inside BU-TD networks (the bf_butd_norm of include/bioflex/butd.h):
 * building, memory, the three uses (BU, TD copy, backprop) and the running statistics' tensors.
 * Private to src/host/butd_*.c. */
#ifndef BIOFLEX_BUTD_NORM_H
#define BIOFLEX_BUTD_NORM_H

#include "bioflex/butd.h"

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

/* BU: y = BN(norm->z) (batch statistics when net->training, else running). */
bf_status bf_butd_norm_bu(bf_butd_net *net, bf_butd_norm *norm, float *y);
/* TD copy: y = BN_td(x) over td.c channels, gamma 1 and beta 0; y must not alias x. */
bf_status bf_butd_norm_td(bf_butd_net *net, bf_butd_norm *norm, const float *x, float *y);
/* Backprop through the last BU pass: dz from dy (per-sample loss gradients, not divided by the
 * batch) and gamma's and beta's gradients of the batch-mean loss into grad_data. */
bf_status bf_butd_norm_backward(bf_butd_net *net, bf_butd_norm *norm, const float *dy, float *dz);

#endif
