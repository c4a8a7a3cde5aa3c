/* layer_v1.c - the V1 layers of the V1-constrained ResNet-50 (../shared/specs/v1-constrained.md),
 * forward and backward through bf_ops:
 *
 * Tuned divisive normalisation (spec 4.1): W [c, c] from the widths (divnorm_weights), S = W x as a
 * 1x1 conv, y = x / (1 + S) (divnorm_apply). Its backward: dx = dy / (1 + S) plus the conv's
 * backward-data of dS = -dy x / (1 + S)^2 (divnorm_apply_backward writes dS over S, which nothing
 * needs after), dW = the conv's backward-filter of x and dS, dsigma from dW (divnorm_weights_backward).
 * W is generated at every forward, as the reference does, and kept for the backward.
 *
 * Cortical magnification (spec 5): a fixed linear map of every 32x32 map onto 16x16, one GEMM
 * through linear_forward with the maps as rows (n = batch x channels); its backward is the
 * transposed GEMM (linear_backward, dx only). The operator [256, 1024] is built on the host
 * (polar_map.c) and uploaded once when the model is finalised. */
#include <stdlib.h>

#include "layers.h"
#include "polar_map.h"

static size_t per_batch_max(const bf_layer *l) { return bf_shape_count(l->out_shape); }
static size_t square(int c) { return (size_t)c * (size_t)c; }

size_t bf_v1_arena_bytes(const bf_layer *l) {
    if (l->kind == BF_LAYER_DIVNORM) /* W, dW and S */
        return 2 * bf_arena_align(square(l->conv.c_in) * sizeof(float)) + bf_arena_align(per_batch_max(l) * sizeof(float));
    if (l->kind == BF_LAYER_POLAR) return bf_arena_align((size_t)l->linear.in * l->linear.out * sizeof(float));
    return 0;
}

static float *take(char **cursor, size_t bytes) {
    float *p = (float *)*cursor;
    *cursor += bf_arena_align(bytes);
    return p;
}

char *bf_v1_place(bf_layer *l, char *cursor) {
    if (l->kind == BF_LAYER_DIVNORM) {
        l->v1_weights = take(&cursor, square(l->conv.c_in) * sizeof(float));
        l->v1_dweights = take(&cursor, square(l->conv.c_in) * sizeof(float));
        l->v1_sums = take(&cursor, per_batch_max(l) * sizeof(float));
    } else if (l->kind == BF_LAYER_POLAR) {
        l->v1_weights = take(&cursor, (size_t)l->linear.in * l->linear.out * sizeof(float));
    }
    return cursor;
}

bf_status bf_v1_upload_constants(bf_model *m) {
    float *op = NULL;
    bf_status s = BF_OK;
    for (int i = 0; i < m->num_layers && s == BF_OK; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind != BF_LAYER_POLAR) continue;
        const size_t floats = (size_t)l->linear.in * l->linear.out;
        if (!op && !(op = malloc(floats * sizeof(float))))
            return bf_error(BF_ERR_OOM, "polar transform %s: out of host memory", l->name);
        bf_polar_options opt = {.pad_both = l->polar_pad_both, .antialias = l->polar_antialias};
        s = bf_polar_operator(&opt, op);
        if (s == BF_OK) s = bf_to_device(m->backend, l->v1_weights, op, floats * sizeof(float));
    }
    free(op);
    return s;
}

/* The layer's 1x1 conv at the current batch. */
static bf_conv2d_shape divnorm_conv(const bf_model *m, const bf_layer *l) {
    bf_conv2d_shape s = l->conv;
    s.n = bf_layer_batch(m, l);
    return s;
}

bf_status bf_v1_forward(bf_model *m, int index) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const float *x = bf_layer_input(m, l, 0);
    if (l->kind == BF_LAYER_POLAR) {
        bf_linear_shape s = l->linear;
        s.n = bf_layer_batch(m, l) * l->out_shape.c;
        return b->ops->linear_forward(b, &s, x, l->v1_weights, NULL, l->out);
    }
    bf_conv2d_shape cs = divnorm_conv(m, l);
    BF_TRY(b->ops->divnorm_weights(b, cs.c_in, bf_layer_param(m, l, 0), l->v1_weights));
    BF_TRY(b->ops->conv2d_forward(b, &cs, x, l->v1_weights, NULL, l->v1_sums));
    return b->ops->divnorm_apply(b, x, l->v1_sums, l->out, (size_t)cs.n * cs.c_in * cs.h_in * cs.w_in);
}

bf_status bf_v1_backward(bf_model *m, int index, float *dx) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    if (l->kind == BF_LAYER_POLAR) {
        bf_linear_shape s = l->linear;
        s.n = bf_layer_batch(m, l) * l->out_shape.c;
        return dx ? ops->linear_backward(b, &s, bf_layer_input(m, l, 0), l->v1_weights, l->dout, dx, NULL, NULL) : BF_OK;
    }
    const float *x = bf_layer_input(m, l, 0);
    bf_conv2d_shape cs = divnorm_conv(m, l);
    const size_t count = (size_t)cs.n * cs.c_in * cs.h_in * cs.w_in;
    const int param_grads = bf_model_param_grads(m);
    if (!dx && !param_grads) return BF_OK;
    BF_TRY(ops->divnorm_apply_backward(b, x, l->v1_sums, l->dout, dx, l->v1_sums, count)); /* dS over S */
    if (param_grads) {
        BF_TRY(ops->conv2d_backward_filter(b, &cs, x, l->v1_sums, l->v1_dweights, NULL));
        BF_TRY(ops->divnorm_weights_backward(b, cs.c_in, bf_layer_param(m, l, 0), l->v1_weights, l->v1_dweights,
                                             bf_layer_grad(m, l, 0)));
    }
    return dx ? ops->conv2d_backward_data_add(b, &cs, l->v1_sums, l->v1_weights, dx) : BF_OK;
}
