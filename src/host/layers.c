/* layers.c - forward and backward of each layer kind, through bf_ops only. Shapes stored in a
 * layer are at the model's maximum batch; each call uses the current batch, bf_layer_batch: the
 * model's batch times the layer's time steps (spiking layers fold time into the batch). */
#include <string.h>

#include "layers.h"
#include "sync_bn.h"

const char *bf_layer_kind_name(bf_layer_kind k) {
    static const char *names[BF_LAYER_KIND_COUNT] = {
        "conv2d", "batchnorm", "relu", "maxpool", "avgpool", "global_avgpool", "linear", "dropout", "flatten", "add",
        "flex", "encode", "neuron", "time_mean", "divnorm", "polar", "dog", "local", "cirincione", "leaky_relu"};
    return k >= 0 && k < BF_LAYER_KIND_COUNT ? names[k] : "?";
}

/* Packed spikes: the float output until the backward restores them (memory_plan.c), then the copy. */
const float *bf_layer_input(const bf_model *m, const bf_layer *l, int j) {
    int in = l->input[j];
    if (in == BF_MODEL_INPUT) return m->input;
    return m->layers[in].spikes_restored ? m->layers[in].spikes_unpacked : m->layers[in].out;
}

static float *buffer(const bf_model *m, const bf_layer *l, int slot) {
    return m->buffer_data + m->buffers[l->buffer_index[slot]].offset;
}

/* Elements of a layer's output in the current batch (time steps folded in). */
static size_t per_batch(const bf_model *m, const bf_layer *l) {
    return (size_t)bf_layer_batch(m, l) * bf_shape_per_sample(l->out_shape);
}

bf_status bf_layer_forward(bf_model *m, int index) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const float *x = bf_layer_input(m, l, 0);
    size_t count = per_batch(m, l);
    switch (l->kind) {
    case BF_LAYER_CONV: {
        bf_conv2d_shape s = l->conv;
        s.n = bf_layer_batch(m, l);
        /* in training, a bias its batch-norm would take out again is left to it (bias_in_bn) */
        const float *bias = m->training && l->bias_in_bn ? NULL : bf_layer_param(m, l, 1);
        return ops->conv2d_forward(b, &s, x, bf_layer_param(m, l, 0), bias, l->out);
    }
    case BF_LAYER_BATCHNORM: {
        bf_bn_shape s = l->bn;
        s.n = bf_layer_batch(m, l);
        bf_bn_sync sync = bf_model_bn_sync(m);
        /* in training, the neuron that alone reads an output planned forward-only normalises its
         * input itself (layer_spiking.c), and a fused ReLU's batch-norm applies both below: the
         * statistics alone here */
        float *y = m->training && (l->out_forward_only || l->relu_fused) ? NULL : l->out;
        const float *gamma = bf_layer_param(m, l, 0), *beta = bf_layer_param(m, l, 1);
        if (!m->training)
            BF_TRY(ops->batchnorm_forward_eval(b, &s, x, gamma, beta, buffer(m, l, 0), buffer(m, l, 1), l->out));
        else if (m->sync_sums)
            BF_TRY(bf_sync_bn_forward_train(&sync, &s, x, gamma, beta, y, l->save_mean, l->save_invstd, buffer(m, l, 0),
                                            buffer(m, l, 1)));
        else if (l->bn_stats_in_flex) { /* the flex layer before it took the statistics */
            if (y) BF_TRY(ops->batchnorm_forward_saved(b, &s, x, gamma, beta, l->save_mean, l->save_invstd, y));
        } else
            BF_TRY(ops->batchnorm_forward_train(b, &s, x, gamma, beta, y, l->save_mean, l->save_invstd, buffer(m, l, 0),
                                                buffer(m, l, 1)));
        /* the conv before it added no bias (bias_in_bn): the running mean takes its share, so that it
         * stays the mean of what the conv computes with its bias, as evaluation runs it */
        if (m->training && l->input[0] >= 0 && m->layers[l->input[0]].bias_in_bn)
            BF_TRY(ops->axpy(b, s.momentum, bf_layer_param(m, &m->layers[l->input[0]], 1), buffer(m, l, 0), (size_t)s.c));
        if (!l->relu_fused) return BF_OK;
        if (!m->training) return ops->relu_forward(b, l->out, l->out, count); /* evaluation: not fused */
        return ops->batchnorm_relu_apply(b, &s, x, gamma, beta, l->save_mean, l->save_invstd, l->out);
    }
    case BF_LAYER_RELU: /* run by its batch-norm or add when fused */
        return l->relu_joined ? BF_OK : ops->relu_forward(b, x, l->out, count);
    case BF_LAYER_LEAKY_RELU:
        return ops->leaky_relu_forward(b, x, l->out, count, l->leaky_slope);
    case BF_LAYER_MAXPOOL: {
        bf_pool_shape s = l->pool;
        s.n = bf_layer_batch(m, l);
        return ops->maxpool_forward(b, &s, x, l->out, l->argmax);
    }
    case BF_LAYER_AVGPOOL: {
        bf_pool_shape s = l->pool;
        s.n = bf_layer_batch(m, l);
        return ops->avgpool_forward(b, &s, x, l->out);
    }
    case BF_LAYER_GLOBAL_AVGPOOL: {
        bf_shape in = bf_model_shape_of(m, l->input[0]);
        return ops->global_avgpool_forward(b, bf_layer_batch(m, l), in.c, in.h * in.w, x, l->out);
    }
    case BF_LAYER_LINEAR: {
        bf_linear_shape s = l->linear;
        s.n = bf_layer_batch(m, l);
        if (l->frozen)
            return ops->linear_forward(b, &s, x, buffer(m, l, 0), l->has_bias ? buffer(m, l, 1) : NULL, l->out);
        return ops->linear_forward(b, &s, x, bf_layer_param(m, l, 0), bf_layer_param(m, l, 1), l->out);
    }
    case BF_LAYER_DROPOUT:
        if (m->training && l->dropout_p > 0)
            return ops->dropout_forward(b, x, l->out, count, l->dropout_group, l->dropout_p, bf_layer_draws(m, index));
        return ops->copy(b, l->out, x, count * sizeof(float));
    case BF_LAYER_FLATTEN:
        return ops->copy(b, l->out, x, count * sizeof(float));
    case BF_LAYER_ADD: /* and the ReLU after it when fused (its output is the ReLU's, in place) */
        if (l->relu_fused) return ops->add_relu_forward(b, x, bf_layer_input(m, l, 1), l->out, count);
        return ops->add(b, x, bf_layer_input(m, l, 1), l->out, count);
    case BF_LAYER_FLEX:
        return bf_flex_forward(m, index);
    case BF_LAYER_ENCODE:
    case BF_LAYER_NEURON:
    case BF_LAYER_TIME_MEAN:
        return bf_spiking_forward(m, index);
    case BF_LAYER_DIVNORM:
    case BF_LAYER_POLAR:
    case BF_LAYER_DOG:
        return bf_v1_forward(m, index);
    case BF_LAYER_LOCAL:
        return bf_local_forward(m, index);
    case BF_LAYER_CIRINCIONE:
        return bf_cirincione_forward(m, index);
    case BF_LAYER_KIND_COUNT:
        break;
    }
    return bf_error(BF_ERR_INTERNAL, "unknown layer kind %d", (int)l->kind);
}

/* Where the backward of a consumer writes the gradient of input j: straight into the input's
 * dout when it is the first consumer to get there, else into the scratch buffer, which
 * finish_input_grad then adds on. */
static float *input_grad_target(bf_model *m, const bf_layer *l, int j, const unsigned char *grad_written) {
    int in = l->input[j];
    if (in < 0) return !m->input_gradient ? NULL : m->dinput_written ? m->grad_scratch : m->dinput; /* the image */
    if (!m->layers[in].needs_grad) return NULL; /* nothing to train below */
    return grad_written[in] ? m->grad_scratch : m->layers[in].dout;
}

static bf_status finish_input_grad(bf_model *m, const bf_layer *l, int j, unsigned char *grad_written) {
    int in = l->input[j];
    bf_backend *b = m->backend;
    if (in < 0 && m->input_gradient) { /* the image's gradient */
        if (!m->dinput_written) return m->dinput_written = 1, BF_OK;
        return b->ops->add_inplace(b, m->dinput, m->grad_scratch, (size_t)m->batch * bf_shape_per_sample(m->input_shape));
    }
    if (in < 0 || !m->layers[in].needs_grad) return BF_OK; /* no gradient: its backward is skipped */
    if (!grad_written[in]) {
        grad_written[in] = 1;
        return BF_OK;
    }
    bf_layer *src = &m->layers[in];
    return b->ops->add_inplace(b, src->dout, m->grad_scratch, per_batch(m, src));
}

/* A residual add that runs the ReLU after it ([model] fuse_add_relu): dy is the ReLU's gradient (the
 * pair's one buffer) and l->out the ReLU's output, so both summands' gradients are dy where that
 * output is positive, written by one pass. dx0 is summand 0's target; summand 1's is taken before
 * summand 0's is finished, which is safe unless both would land in the one scratch buffer (both
 * summands' gradients already written by other consumers, or x + x): then one summand at a time. */
static bf_status add_relu_backward(bf_model *m, const bf_layer *l, float *dx0, unsigned char *grad_written) {
    const bf_ops *ops = m->backend->ops;
    const size_t count = per_batch(m, l);
    float *dx1 = input_grad_target(m, l, 1, grad_written);
    const int one_pass = l->input[0] != l->input[1] && !(dx0 && dx0 == dx1);
    BF_TRY(ops->add_relu_backward(m->backend, l->out, l->dout, dx0, one_pass ? dx1 : NULL, count));
    BF_TRY(finish_input_grad(m, l, 0, grad_written));
    if (!one_pass) {
        dx1 = input_grad_target(m, l, 1, grad_written);
        if (dx1) BF_TRY(ops->relu_backward(m->backend, l->out, l->dout, dx1, count));
    }
    return finish_input_grad(m, l, 1, grad_written);
}

/* Evaluation mode (a model built with input_gradient): batch-norm with its running statistics is
 * y = gamma (x - mean) / sqrt(var + eps) + beta, affine in x, so its dx is the linear part applied
 * to dy, which the evaluation forward itself computes with mean and beta 0. */
bf_status bf_batchnorm_eval_backward(bf_model *m, const bf_bn_shape *s, const float *dy, const float *gamma,
                                     const float *running_var, float *dx) {
    return m->backend->ops->batchnorm_forward_eval(m->backend, s, dy, gamma, m->eval_zeros, m->eval_zeros, running_var, dx);
}

/* The training backward's sums with the running statistics in place of the batch's: invstd =
 * 1 / sqrt(running_var + eps) per channel is the evaluation forward of ones with gamma 1 and mean
 * and beta 0 (the same rounding as that forward's), then batchnorm_backward_sums over running_mean
 * and it gives sum dy * xhat and sum dy (its coefficients, the means, are not needed). */
bf_status bf_batchnorm_eval_param_grads(bf_model *m, const bf_bn_shape *s, const float *x, const float *dy,
                                        const float *running_mean, const float *running_var, float *dgamma,
                                        float *dbeta) {
    bf_backend *b = m->backend;
    const size_t c = (size_t)s->c;
    float *ones = m->eval_scratch, *invstd = ones + c, *coef = invstd + c; /* 4c <= 2 bn_sync_doubles */
    bf_bn_shape per_channel = *s;
    per_channel.n = per_channel.hw = 1;
    BF_TRY(b->ops->fill(b, ones, 1.0f, c));
    BF_TRY(b->ops->batchnorm_forward_eval(b, &per_channel, ones, ones, m->eval_zeros, m->eval_zeros, running_var, invstd));
    return b->ops->batchnorm_backward_sums(b, s, 0, x, dy, ones, NULL, running_mean, invstd, dgamma, dbeta, coef);
}

bf_status bf_layer_backward(bf_model *m, int index, unsigned char *grad_written) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const float *x = bf_layer_input(m, l, 0);
    const float *dy = l->dout;
    float *dx = input_grad_target(m, l, 0, grad_written);
    size_t count = per_batch(m, l);
    bf_status s = BF_OK;
    switch (l->kind) {
    case BF_LAYER_CONV: {
        bf_conv2d_shape cs = l->conv;
        cs.n = bf_layer_batch(m, l);
        /* a bias left to the batch-norm (bias_in_bn) did not change the training loss: its gradient is
         * 0 (the evaluation forward adds it, and the running mean does not take it out again) */
        const int bias_left = m->training && l->bias_in_bn;
        float *dbias = bias_left ? NULL : bf_layer_grad(m, l, 1);
        if (bf_layer_param_grads(m, l)) s = ops->conv2d_backward_filter(b, &cs, x, dy, bf_layer_grad(m, l, 0), dbias);
        if (s == BF_OK && bias_left) s = ops->fill(b, bf_layer_grad(m, l, 1), 0.0f, (size_t)cs.c_out);
        if (s == BF_OK && dx) s = ops->conv2d_backward_data(b, &cs, dy, bf_layer_param(m, l, 0), dx);
        break;
    }
    case BF_LAYER_BATCHNORM: {
        bf_bn_shape bs = l->bn;
        bs.n = bf_layer_batch(m, l);
        float *dx_or_scratch = dx ? dx : m->grad_scratch; /* BN on the raw input: dx unused */
        bf_bn_sync sync = bf_model_bn_sync(m);
        const float *gamma = bf_layer_param(m, l, 0);
        float *dgamma = bf_layer_grad(m, l, 0), *dbeta = bf_layer_grad(m, l, 1);
        if (!m->training) { /* the parameter gradients first: dx may be written over dy */
            if (m->eval_parameter_gradients)
                s = bf_batchnorm_eval_param_grads(m, &bs, x, dy, buffer(m, l, 0), buffer(m, l, 1), dgamma, dbeta);
            if (s == BF_OK) s = bf_batchnorm_eval_backward(m, &bs, dy, gamma, buffer(m, l, 1), dx_or_scratch);
            break;
        }
        if (l->bn_runs_neuron) { /* the neuron layer reading it left its backward to this one */
            s = bf_spiking_bn_backward(m, index, dx);
            break;
        }
        if (l->bn_in_flex && !m->sync_sums) { /* the sums alone: the flex layer before it applies its dx */
            s = ops->batchnorm_backward_sums(b, &bs, l->relu_fused, x, dy, gamma, bf_layer_param(m, l, 1),
                                             l->save_mean, l->save_invstd, dgamma, dbeta, l->bn_coef);
            break;
        }
        /* synchronised under bn_in_flex: dx is dy's own buffer (the pair's one gradient), which the
         * apply overwrites element by element after the sums have read it */
        if (l->relu_fused && !m->sync_sums) {
            s = ops->batchnorm_relu_backward(b, &bs, x, dy, gamma, bf_layer_param(m, l, 1), l->save_mean, l->save_invstd,
                                             dx_or_scratch, dgamma, dbeta);
            break;
        }
        if (l->relu_fused) /* synchronised: the ReLU's mask in place on its gradient (l->dout), then as unfused */
            s = ops->relu_backward(b, l->out, dy, l->dout, count);
        if (s == BF_OK && m->sync_sums)
            s = bf_sync_bn_backward(&sync, &bs, x, dy, gamma, l->save_mean, l->save_invstd, dx_or_scratch, dgamma, dbeta);
        else if (s == BF_OK)
            s = ops->batchnorm_backward(b, &bs, x, dy, gamma, l->save_mean, l->save_invstd, dx_or_scratch, dgamma, dbeta);
        break;
    }
    case BF_LAYER_RELU: /* fused: its batch-norm's or add's backward masks this gradient, which is also its dout */
        if (dx && !l->relu_joined) s = ops->relu_backward(b, l->out, dy, dx, count);
        break;
    case BF_LAYER_LEAKY_RELU:
        if (dx) s = ops->leaky_relu_backward(b, l->out, dy, dx, count, l->leaky_slope);
        break;
    case BF_LAYER_MAXPOOL: {
        bf_pool_shape ps = l->pool;
        ps.n = bf_layer_batch(m, l);
        if (dx) s = ops->maxpool_backward(b, &ps, dy, l->argmax, dx);
        break;
    }
    case BF_LAYER_AVGPOOL: {
        bf_pool_shape ps = l->pool;
        ps.n = bf_layer_batch(m, l);
        if (dx) s = ops->avgpool_backward(b, &ps, dy, dx);
        break;
    }
    case BF_LAYER_GLOBAL_AVGPOOL: {
        bf_shape in = bf_model_shape_of(m, l->input[0]);
        if (dx) s = ops->global_avgpool_backward(b, bf_layer_batch(m, l), in.c, in.h * in.w, dy, dx);
        break;
    }
    case BF_LAYER_LINEAR: {
        bf_linear_shape ls = l->linear;
        ls.n = bf_layer_batch(m, l);
        if (l->frozen) /* only dx: the weight and bias are not trained */
            s = dx ? ops->linear_backward(b, &ls, x, buffer(m, l, 0), dy, dx, NULL, NULL) : BF_OK;
        else if (!bf_layer_param_grads(m, l)) /* evaluation: the input gradient alone */
            s = dx ? ops->linear_backward(b, &ls, x, bf_layer_param(m, l, 0), dy, dx, NULL, NULL) : BF_OK;
        else
            s = ops->linear_backward(b, &ls, x, bf_layer_param(m, l, 0), dy, dx, bf_layer_grad(m, l, 0), bf_layer_grad(m, l, 1));
        break;
    }
    case BF_LAYER_DROPOUT:
        if (dx && m->training && l->dropout_p > 0)
            s = ops->dropout_backward(b, dy, dx, count, l->dropout_group, l->dropout_p, bf_layer_draws(m, index));
        else if (dx)
            s = ops->copy(b, dx, dy, count * sizeof(float));
        break;
    case BF_LAYER_FLATTEN:
        if (dx) s = ops->copy(b, dx, dy, count * sizeof(float));
        break;
    case BF_LAYER_ADD: {
        if (l->relu_fused) return add_relu_backward(m, l, dx, grad_written);
        if (dx) s = ops->copy(b, dx, dy, count * sizeof(float));
        if (s == BF_OK) s = finish_input_grad(m, l, 0, grad_written);
        float *dx1 = input_grad_target(m, l, 1, grad_written);
        if (s == BF_OK && dx1) s = ops->copy(b, dx1, dy, count * sizeof(float));
        if (s == BF_OK) s = finish_input_grad(m, l, 1, grad_written);
        return s;
    }
    case BF_LAYER_FLEX: { /* with spatial-attention logits, their gradient goes to input 1, the block */
        float *dlogits = l->num_inputs == 2 ? input_grad_target(m, l, 1, grad_written) : NULL;
        if (dlogits && dlogits == m->grad_scratch) /* the block's output has this layer as its one reader */
            return bf_error(BF_ERR_INTERNAL, "flex %s: its logits' gradient has another writer", l->name);
        s = bf_flex_backward(m, index, dx, dlogits);
        if (s == BF_OK && l->num_inputs == 2) s = finish_input_grad(m, l, 1, grad_written);
        break;
    }
    case BF_LAYER_ENCODE:
    case BF_LAYER_NEURON:
    case BF_LAYER_TIME_MEAN:
        s = bf_spiking_backward(m, index, dx);
        break;
    case BF_LAYER_DIVNORM:
    case BF_LAYER_POLAR:
    case BF_LAYER_DOG:
        s = bf_v1_backward(m, index, dx);
        break;
    case BF_LAYER_LOCAL:
        s = bf_local_backward(m, index, dx);
        break;
    case BF_LAYER_CIRINCIONE:
        s = bf_cirincione_backward(m, index, dx);
        break;
    case BF_LAYER_KIND_COUNT:
        return bf_error(BF_ERR_INTERNAL, "unknown layer kind %d", (int)l->kind);
    }
    if (s == BF_OK) s = finish_input_grad(m, l, 0, grad_written);
    return s;
}

/* Per image: a layer inside the time steps runs T times. */
static double layer_flops_per_step(const bf_model *m, const bf_layer *l);

double bf_layer_flops(const bf_model *m, int i) {
    return layer_flops_per_step(m, &m->layers[i]) * m->layers[i].time_steps;
}

static double layer_flops_per_step(const bf_model *m, const bf_layer *l) {
    double out = (double)bf_shape_per_sample(l->out_shape);
    switch (l->kind) {
    case BF_LAYER_CONV:
        return out * (2.0 * l->conv.c_in / l->conv.groups * l->conv.k_h * l->conv.k_w + (l->has_bias ? 1 : 0));
    case BF_LAYER_FLEX: /* the conv (a static pool site has none), the pool over c_in maps, and one compare or
                         * blend per output */
        return out * (bf_flex_has_conv(l) ? 2.0 * l->conv.c_in * l->conv.k_h * l->conv.k_w + 2 : 1) +
               (double)l->flex.c_in * l->flex.hw * l->pool.k * l->pool.k;
    case BF_LAYER_LINEAR:
        return out * (2.0 * l->linear.in + (l->has_bias ? 1 : 0));
    case BF_LAYER_DIVNORM: return out * (2.0 * l->conv.c_in + 2); /* the 1x1 conv, the sum and the division */
    case BF_LAYER_POLAR: return out * 2.0 * l->linear.in;
    case BF_LAYER_DOG: /* the DoG conv on its channels */
        return (double)l->conv.c_out * l->conv.h_out * l->conv.w_out * 2.0 * l->conv.c_in * l->conv.k_h * l->conv.k_w;
    case BF_LAYER_LOCAL: return out * 2.0 * l->local.c_in * l->local.k * l->local.k;
    case BF_LAYER_CIRINCIONE: /* the 3x3 conv, the sum and the division */
        return out * (2.0 * l->conv.c_in * l->conv.k_h * l->conv.k_w + 2);
    case BF_LAYER_BATCHNORM: return 2 * out;
    case BF_LAYER_MAXPOOL:
    case BF_LAYER_AVGPOOL: return out * l->pool.k * l->pool.k;
    case BF_LAYER_GLOBAL_AVGPOOL: return (double)bf_shape_per_sample(bf_model_shape_of(m, l->input[0]));
    case BF_LAYER_RELU:
    case BF_LAYER_LEAKY_RELU:
    case BF_LAYER_DROPOUT:
    case BF_LAYER_ADD:
    case BF_LAYER_NEURON: return out;
    default: return 0;
    }
}
