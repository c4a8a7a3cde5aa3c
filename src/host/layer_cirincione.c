/* layer_cirincione.c - the Cirincione divisive normalisation of the V1-constrained ResNet-50
 * (../shared/specs/v1-constrained.md 4.2; the reference's DivisiveNormalizationCirincione, which
 * only resnet50_div_norm uses), forward and backward through bf_ops:
 *
 * Forward: G [c, c, 3, 3] generated from the six parameters of each (out, in) channel pair
 * (cirincione_kernels; kept in v1_weights for the backward), N = conv2d(x, G, padding 1) into
 * v1_sums, y = x / (N + |bias|) (cirincione_divide).
 *
 * Backward: dx = dy / (N + |bias|) and dN = -dy x / (N + |bias|)^2, written over N, which nothing
 * needs after, and dbias = sgn(bias) sum dN (cirincione_divide_backward); dG = the conv's
 * backward-filter of x and dN (into v1_dweights), the six parameters' gradients from dG
 * (cirincione_kernels_backward); dx += the conv's backward-data of dN. Parameter slots (model.c):
 * 0 A, 1 rho, 2 sigma, 3 theta, 4 v, 5 w, 6 bias. */
#include "layers.h"

static size_t kernel_floats(const bf_layer *l) {
    return (size_t)l->conv.c_out * l->conv.c_in * l->conv.k_h * l->conv.k_w;
}

size_t bf_cirincione_arena_bytes(const bf_layer *l) {
    if (l->kind != BF_LAYER_CIRINCIONE) return 0;
    /* G, dG, and N at the maximum batch */
    return 2 * bf_arena_align(kernel_floats(l) * sizeof(float)) +
           bf_arena_align(bf_shape_count(l->out_shape) * sizeof(float));
}

static float *take(char **cursor, size_t bytes) {
    float *p = (float *)*cursor;
    *cursor += bf_arena_align(bytes);
    return p;
}

char *bf_cirincione_place(bf_layer *l, char *cursor) {
    if (l->kind != BF_LAYER_CIRINCIONE) return cursor;
    l->v1_weights = take(&cursor, kernel_floats(l) * sizeof(float));
    l->v1_dweights = take(&cursor, kernel_floats(l) * sizeof(float));
    l->v1_sums = take(&cursor, bf_shape_count(l->out_shape) * sizeof(float));
    return cursor;
}

/* The layer's conv at the current batch. */
static bf_conv2d_shape layer_conv(const bf_model *m, const bf_layer *l) {
    bf_conv2d_shape s = l->conv;
    s.n = bf_layer_batch(m, l);
    return s;
}

static size_t count_of(const bf_conv2d_shape *cs) { return (size_t)cs->n * cs->c_in * cs->h_in * cs->w_in; }

bf_status bf_cirincione_forward(bf_model *m, int index) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const float *x = bf_layer_input(m, l, 0);
    bf_conv2d_shape cs = layer_conv(m, l);
    BF_TRY(ops->cirincione_kernels(b, cs.c_out * cs.c_in, cs.k_h, bf_layer_param(m, l, 0), bf_layer_param(m, l, 1),
                                   bf_layer_param(m, l, 2), bf_layer_param(m, l, 3), bf_layer_param(m, l, 4),
                                   bf_layer_param(m, l, 5), l->v1_weights));
    BF_TRY(ops->conv2d_forward(b, &cs, x, l->v1_weights, NULL, l->v1_sums));
    return ops->cirincione_divide(b, x, l->v1_sums, bf_layer_param(m, l, 6), l->out, count_of(&cs));
}

bf_status bf_cirincione_backward(bf_model *m, int index, float *dx) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const float *x = bf_layer_input(m, l, 0);
    bf_conv2d_shape cs = layer_conv(m, l);
    const int param_grads = bf_layer_param_grads(m, l);
    if (!dx && !param_grads) return BF_OK;
    BF_TRY(ops->cirincione_divide_backward(b, x, l->v1_sums, bf_layer_param(m, l, 6), l->dout, dx, l->v1_sums,
                                           param_grads ? bf_layer_grad(m, l, 6) : NULL, count_of(&cs))); /* dN over N */
    if (param_grads) {
        BF_TRY(ops->conv2d_backward_filter(b, &cs, x, l->v1_sums, l->v1_dweights, NULL));
        BF_TRY(ops->cirincione_kernels_backward(b, cs.c_out * cs.c_in, cs.k_h, bf_layer_param(m, l, 0),
                                                bf_layer_param(m, l, 1), bf_layer_param(m, l, 2),
                                                bf_layer_param(m, l, 3), bf_layer_param(m, l, 4),
                                                bf_layer_param(m, l, 5), l->v1_dweights, bf_layer_grad(m, l, 0),
                                                bf_layer_grad(m, l, 1), bf_layer_grad(m, l, 2), bf_layer_grad(m, l, 3),
                                                bf_layer_grad(m, l, 4), bf_layer_grad(m, l, 5)));
    }
    return dx ? ops->conv2d_backward_data_add(b, &cs, l->v1_sums, l->v1_weights, dx) : BF_OK;
}
