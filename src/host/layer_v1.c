/* layer_v1.c - the V1 layers of the V1-constrained ResNet-50 (../shared/specs/v1-constrained.md),
 * forward and backward through bf_ops:
 *
 * Tuned divisive normalisation (spec 4.1): W [c, c] from the widths (divnorm_weights), S = W x as a
 * 1x1 conv, y = x / (1 + S) (divnorm_apply). Its backward: dx = dy / (1 + S) plus the conv's
 * backward-data of dS = -dy x / (1 + S)^2 (divnorm_apply_backward writes dS over S, which nothing
 * needs after), dW = the conv's backward-filter of x and dS, dsigma from dW (divnorm_weights_backward).
 * W is generated at every forward, as the reference does, and kept for the backward.
 *
 * Center-surround (spec 2): the kernels [d^2, k, k] generated from their widths and gains at every
 * forward (dog_kernels, the taps' norms kept for the backward); the first d channels of x copied out
 * (channel_copy), convolved, and copied into the output beside the other channels, which pass
 * unchanged. Its backward: the conv's backward-filter of the copied slice and dy's slice, the
 * kernels' backward to the widths and gains, the conv's backward-data into dx's first d channels,
 * dy's other channels copied into dx's.
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

/* A DoG layer's kernel floats and the floats of its channel slice at the maximum batch. */
static size_t dog_kernel_floats(const bf_layer *l) { return square(l->dog_channels) * l->conv.k_h * l->conv.k_w; }
static size_t dog_slice_floats(const bf_layer *l) { return (size_t)l->conv.n * l->dog_channels * l->conv.h_in * l->conv.w_in; }

size_t bf_v1_arena_bytes(const bf_layer *l) {
    if (l->kind == BF_LAYER_DIVNORM) /* W, dW and S */
        return 2 * bf_arena_align(square(l->conv.c_in) * sizeof(float)) + bf_arena_align(per_batch_max(l) * sizeof(float));
    if (l->kind == BF_LAYER_DOG) /* kernels, their gradient, the taps' norms, the slice in and out */
        return 2 * bf_arena_align(dog_kernel_floats(l) * sizeof(float)) +
               bf_arena_align((size_t)l->conv.k_h * l->conv.k_w * sizeof(float)) +
               2 * bf_arena_align(dog_slice_floats(l) * sizeof(float));
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
    } else if (l->kind == BF_LAYER_DOG) {
        l->v1_weights = take(&cursor, dog_kernel_floats(l) * sizeof(float));
        l->v1_dweights = take(&cursor, dog_kernel_floats(l) * sizeof(float));
        l->v1_sums = take(&cursor, (size_t)l->conv.k_h * l->conv.k_w * sizeof(float));
        l->v1_slice = take(&cursor, dog_slice_floats(l) * sizeof(float));
        l->v1_slice_out = take(&cursor, dog_slice_floats(l) * sizeof(float));
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
        bf_polar_options opt = {.padding = l->polar_padding, .antialias = l->polar_antialias};
        s = bf_polar_operator(&opt, op);
        if (s == BF_OK) s = bf_to_device(m->backend, l->v1_weights, op, floats * sizeof(float));
    }
    free(op);
    return s;
}

/* The layer's conv (a divisive normalisation's 1x1, a DoG layer's DoG conv) at the current batch. */
static bf_conv2d_shape layer_conv(const bf_model *m, const bf_layer *l) {
    bf_conv2d_shape s = l->conv;
    s.n = bf_layer_batch(m, l);
    return s;
}

/* The DoG layer's passes (see the file comment). */
static bf_status dog_forward(bf_model *m, bf_layer *l, const float *x) {
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    bf_conv2d_shape cs = layer_conv(m, l);
    const int c = l->out_shape.c, d = l->dog_channels, hw = cs.h_in * cs.w_in;
    BF_TRY(ops->dog_kernels(b, d * d, cs.k_h, l->dog_amp_paper, bf_layer_param(m, l, 0), bf_layer_param(m, l, 1),
                            bf_layer_param(m, l, 2), l->v1_weights, l->v1_sums));
    BF_TRY(ops->channel_copy(b, cs.n, hw, d, x, c, 0, l->v1_slice, d, 0));
    BF_TRY(ops->conv2d_forward(b, &cs, l->v1_slice, l->v1_weights, NULL, l->v1_slice_out));
    BF_TRY(ops->channel_copy(b, cs.n, hw, d, l->v1_slice_out, d, 0, l->out, c, 0));
    return ops->channel_copy(b, cs.n, hw, c - d, x, c, d, l->out, c, d);
}

static bf_status dog_backward(bf_model *m, bf_layer *l, float *dx) {
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    bf_conv2d_shape cs = layer_conv(m, l);
    const int c = l->out_shape.c, d = l->dog_channels, hw = cs.h_in * cs.w_in;
    float *dy_slice = l->v1_slice_out; /* the conv's output is not needed any more */
    BF_TRY(ops->channel_copy(b, cs.n, hw, d, l->dout, c, 0, dy_slice, d, 0));
    if (bf_layer_param_grads(m, l)) {
        BF_TRY(ops->conv2d_backward_filter(b, &cs, l->v1_slice, dy_slice, l->v1_dweights, NULL));
        BF_TRY(ops->dog_kernels_backward(b, d * d, cs.k_h, l->dog_amp_paper, bf_layer_param(m, l, 0),
                                         bf_layer_param(m, l, 1), bf_layer_param(m, l, 2), l->v1_weights, l->v1_sums,
                                         l->v1_dweights, bf_layer_grad(m, l, 0), bf_layer_grad(m, l, 1),
                                         bf_layer_grad(m, l, 2)));
    }
    if (!dx) return BF_OK;
    BF_TRY(ops->conv2d_backward_data(b, &cs, dy_slice, l->v1_weights, l->v1_slice)); /* over the input's slice */
    BF_TRY(ops->channel_copy(b, cs.n, hw, d, l->v1_slice, d, 0, dx, c, 0));
    return ops->channel_copy(b, cs.n, hw, c - d, l->dout, c, d, dx, c, d);
}

bf_status bf_v1_forward(bf_model *m, int index) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const float *x = bf_layer_input(m, l, 0);
    if (l->kind == BF_LAYER_DOG) return dog_forward(m, l, x);
    if (l->kind == BF_LAYER_POLAR) {
        bf_linear_shape s = l->linear;
        s.n = bf_layer_batch(m, l) * l->out_shape.c;
        return b->ops->linear_forward(b, &s, x, l->v1_weights, NULL, l->out);
    }
    bf_conv2d_shape cs = layer_conv(m, l);
    BF_TRY(b->ops->divnorm_weights(b, cs.c_in, l->oci_distance, bf_layer_param(m, l, 0), l->v1_weights));
    BF_TRY(b->ops->conv2d_forward(b, &cs, x, l->v1_weights, NULL, l->v1_sums));
    return b->ops->divnorm_apply(b, x, l->v1_sums, l->out, (size_t)cs.n * cs.c_in * cs.h_in * cs.w_in);
}

bf_status bf_v1_backward(bf_model *m, int index, float *dx) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    if (l->kind == BF_LAYER_DOG) return dog_backward(m, l, dx);
    if (l->kind == BF_LAYER_POLAR) {
        bf_linear_shape s = l->linear;
        s.n = bf_layer_batch(m, l) * l->out_shape.c;
        return dx ? ops->linear_backward(b, &s, bf_layer_input(m, l, 0), l->v1_weights, l->dout, dx, NULL, NULL) : BF_OK;
    }
    const float *x = bf_layer_input(m, l, 0);
    bf_conv2d_shape cs = layer_conv(m, l);
    const size_t count = (size_t)cs.n * cs.c_in * cs.h_in * cs.w_in;
    const int param_grads = bf_layer_param_grads(m, l);
    if (!dx && !param_grads) return BF_OK;
    BF_TRY(ops->divnorm_apply_backward(b, x, l->v1_sums, l->dout, dx, l->v1_sums, count)); /* dS over S */
    if (param_grads) {
        BF_TRY(ops->conv2d_backward_filter(b, &cs, x, l->v1_sums, l->v1_dweights, NULL));
        BF_TRY(ops->divnorm_weights_backward(b, cs.c_in, l->oci_distance, bf_layer_param(m, l, 0), l->v1_weights,
                                             l->v1_dweights, bf_layer_grad(m, l, 0)));
    }
    return dx ? ops->conv2d_backward_data_add(b, &cs, l->v1_sums, l->v1_weights, dx) : BF_OK;
}
