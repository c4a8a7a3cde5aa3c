/* layer_local.c - the locally connected layer (../shared/specs/v1-constrained.md 3; ops.h,
 * bf_local_shape): forward y = local_forward(x, w), and its backward, dw = local_backward_filter(x,
 * dy) when parameter gradients are wanted and dx = local_backward_data(dy, w) when the input needs
 * one. Its one parameter is the weight [1, c_out, c_in, h_out, w_out, k*k] (model.c), no bias; the
 * ops need no buffers of the layer's own (their gathers live in the backend's scratch). */
#include "layers.h"

/* The layer's shape at the current batch. */
static bf_local_shape local_shape(const bf_model *m, const bf_layer *l) {
    bf_local_shape s = l->local;
    s.n = bf_layer_batch(m, l);
    return s;
}

bf_status bf_local_forward(bf_model *m, int index) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_local_shape s = local_shape(m, l);
    return b->ops->local_forward(b, &s, bf_layer_input(m, l, 0), bf_layer_param(m, l, 0), l->out);
}

bf_status bf_local_backward(bf_model *m, int index, float *dx) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_local_shape s = local_shape(m, l);
    if (bf_layer_param_grads(m, l))
        BF_TRY(b->ops->local_backward_filter(b, &s, bf_layer_input(m, l, 0), l->dout, bf_layer_grad(m, l, 0)));
    return dx ? b->ops->local_backward_data(b, &s, l->dout, bf_layer_param(m, l, 0), dx) : BF_OK;
}
