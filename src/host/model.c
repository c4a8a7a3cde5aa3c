/* model.c - the layer list: building it (shape inference and parameter registration), allocating
 * its memory once, and initialising its weights. The forward and backward passes of each layer
 * kind are in layers.c. */
#include "bioflex/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "layers.h"
#include "polar_map.h"

bf_status bf_model_create(bf_backend *b, bf_shape input_shape, long seed, bf_model **out) {
    bf_model *m = calloc(1, sizeof *m);
    if (!m) return bf_error(BF_ERR_OOM, "model: out of host memory");
    m->backend = b;
    m->input_shape = input_shape;
    m->batch = input_shape.n;
    m->seed = seed;
    m->training = 1;
    m->flex_monitor_due = 1;
    m->pack_spikes = 1; /* as [spiking] pack_spikes defaults: set before bf_model_finalize to change */
    m->recompute_charge = 1; /* as [spiking] recompute_charge defaults */
    m->fuse_bn_backward = 1; /* as [spiking] fuse_bn_backward defaults */
    m->fuse_bn_relu = 1;
    m->fuse_add_relu = 1; /* as [model] fuse_add_relu defaults */
    m->fold_conv_bias = 1; /* as [model] fold_conv_bias defaults */
    m->fuse_flex_scatter = 1; /* as [model] fuse_flex_scatter defaults */
    m->fuse_flex_bn = 1;      /* as [model] fuse_flex_bn defaults */
    m->fuse_flex_bn_stats = 1; /* as [model] fuse_flex_bn_stats defaults */
    *out = m;
    return BF_OK;
}

void bf_model_destroy(bf_model *m) {
    if (!m) return;
    bf_backend *b = m->backend;
    if (b) {
        bf_free(b, m->param_data);
        bf_free(b, m->grad_data);
        bf_free(b, m->buffer_data);
        bf_free(b, m->arena);
    }
    free(m->layers);
    free(m->params);
    free(m->buffers);
    free(m);
}

/* ---- building ---- */

bf_status bf_model_build_status(const bf_model *m) {
    return m->build_failed == BF_ERR_CONFIG ? BF_ERR_CONFIG : m->build_failed ? BF_ERR_ARG : BF_OK;
}

/* Appends a layer after checking its inputs; returns NULL (and marks the model failed) on error. */
static bf_layer *append_layer(bf_model *m, bf_layer_kind kind, const char *name, int input0, int input1) {
    if (m->build_failed) return NULL;
    int inputs[2] = {input0, input1};
    int n_in = input1 == -2 ? 1 : 2;
    for (int i = 0; i < n_in; i++) {
        if (inputs[i] < BF_MODEL_INPUT || inputs[i] >= m->num_layers) {
            m->build_failed = 1;
            bf_error(BF_ERR_ARG, "model: layer %s names input %d, but only %d layers exist", name, inputs[i], m->num_layers);
            return NULL;
        }
    }
    if (m->num_layers == m->cap_layers) {
        int cap = m->cap_layers ? 2 * m->cap_layers : 64;
        bf_layer *grown = realloc(m->layers, (size_t)cap * sizeof *grown);
        if (!grown) {
            m->build_failed = 1;
            bf_error(BF_ERR_OOM, "model: out of host memory");
            return NULL;
        }
        m->layers = grown;
        m->cap_layers = cap;
    }
    bf_layer *l = &m->layers[m->num_layers];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->num_inputs = n_in;
    l->input[0] = input0;
    l->input[1] = n_in == 2 ? input1 : BF_MODEL_INPUT;
    for (int i = 0; i < (int)(sizeof l->param_index / sizeof l->param_index[0]); i++) l->param_index[i] = -1;
    for (int i = 0; i < 3; i++) l->buffer_index[i] = -1;
    l->dout_at = l->bwd_scratch_at = l->fwd_scratch_at = SIZE_MAX;
    for (int i = 0; i < n_in; i++)
        if (inputs[i] >= 0) m->layers[inputs[i]].num_consumers++;
    l->time_steps = input0 >= 0 ? m->layers[input0].time_steps : 1;
    return l;
}

static int finish_layer(bf_model *m, bf_layer *l, bf_status s) {
    if (s != BF_OK) {
        m->build_failed = 1;
        bf_error_context(s, "model: layer %s", l->name);
        return -1;
    }
    return m->num_layers++;
}

bf_shape bf_model_shape_of(const bf_model *m, int layer) {
    return layer == BF_MODEL_INPUT ? m->input_shape : m->layers[layer].out_shape;
}

static int register_param(bf_param **list, int *count, size_t *floats, const char *layer_name,
                          const char *suffix, int ndim, const int64_t *shape, bf_init init,
                          int64_t fan_in, int64_t fan_out, int layer) {
    bf_param *grown = realloc(*list, (size_t)(*count + 1) * sizeof *grown);
    if (!grown) return -1;
    *list = grown;
    bf_param *p = &grown[*count];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s.%s", layer_name, suffix);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->count *= (size_t)shape[i];
    }
    p->offset = *floats;
    p->init = init;
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    p->layer = layer;
    *floats += p->count;
    return (*count)++;
}

static int add_param(bf_model *m, bf_layer *l, int slot, const char *suffix, int ndim, const int64_t *shape,
                     bf_init init, int64_t fan_in, int64_t fan_out) {
    int i = register_param(&m->params, &m->num_params, &m->num_param_floats, l->name, suffix, ndim, shape,
                           init, fan_in, fan_out, m->num_layers);
    if (i < 0) return -1;
    l->param_index[slot] = i;
    l->num_params = slot + 1;
    return i;
}

int bf_model_add_conv(bf_model *m, const char *name, int input, int c_out, int k, int stride, int pad,
                      int groups, int bias, bf_init weight_init) {
    bf_layer *l = append_layer(m, BF_LAYER_CONV, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->conv = (bf_conv2d_shape){.n = in.n, .c_in = in.c, .h_in = in.h, .w_in = in.w, .c_out = c_out,
                                .k_h = k, .k_w = k, .stride = stride, .pad = pad, .groups = groups};
    bf_status s = bf_conv2d_shape_init(&l->conv);
    if (s == BF_OK) {
        l->out_shape = (bf_shape){in.n, c_out, l->conv.h_out, l->conv.w_out};
        int64_t w_shape[4] = {c_out, in.c / l->conv.groups, k, k};
        int64_t fan_in = (int64_t)in.c / l->conv.groups * k * k, fan_out = (int64_t)c_out / l->conv.groups * k * k;
        l->has_bias = bias;
        add_param(m, l, 0, "weight", 4, w_shape, weight_init, fan_in, fan_out);
        if (bias) {
            int64_t b_shape[1] = {c_out};
            /* PyTorch's Conv2d bias default is U(+-1/sqrt(fan_in)); torchvision VGG zeroes it. */
            add_param(m, l, 1, "bias", 1, b_shape,
                      weight_init == BF_INIT_UNIFORM_FAN_IN ? BF_INIT_UNIFORM_FAN_IN : BF_INIT_ZEROS, fan_in, fan_out);
        }
    }
    return finish_layer(m, l, s);
}

int bf_model_add_batchnorm(bf_model *m, const char *name, int input, float eps, float momentum) {
    bf_layer *l = append_layer(m, BF_LAYER_BATCHNORM, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->out_shape = in;
    l->bn = (bf_bn_shape){.n = in.n, .c = in.c, .hw = in.h * in.w, .eps = eps, .momentum = momentum};
    int64_t shape[1] = {in.c};
    add_param(m, l, 0, "weight", 1, shape, BF_INIT_ONES, 0, 0);
    add_param(m, l, 1, "bias", 1, shape, BF_INIT_ZEROS, 0, 0);
    l->buffer_index[0] = register_param(&m->buffers, &m->num_buffers, &m->num_buffer_floats, l->name,
                                        "running_mean", 1, shape, BF_INIT_ZEROS, 0, 0, m->num_layers);
    l->buffer_index[1] = register_param(&m->buffers, &m->num_buffers, &m->num_buffer_floats, l->name,
                                        "running_var", 1, shape, BF_INIT_ONES, 0, 0, m->num_layers);
    return finish_layer(m, l, BF_OK);
}

int bf_model_add_relu(bf_model *m, const char *name, int input) {
    bf_layer *l = append_layer(m, BF_LAYER_RELU, name, input, -2);
    if (!l) return -1;
    l->out_shape = bf_model_shape_of(m, input);
    return finish_layer(m, l, BF_OK);
}

int bf_model_add_leaky_relu(bf_model *m, const char *name, int input, float slope) {
    bf_layer *l = append_layer(m, BF_LAYER_LEAKY_RELU, name, input, -2);
    if (!l) return -1;
    l->out_shape = bf_model_shape_of(m, input);
    l->leaky_slope = slope;
    bf_status s = slope > 0 ? BF_OK : bf_error(BF_ERR_ARG, "leaky_relu %s: the slope must be > 0 (got %g)", name, slope);
    return finish_layer(m, l, s);
}

static int add_pool(bf_model *m, bf_layer_kind kind, const char *name, int input, int k, int stride, int pad) {
    bf_layer *l = append_layer(m, kind, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->pool = (bf_pool_shape){.n = in.n, .c = in.c, .h_in = in.h, .w_in = in.w, .k = k, .stride = stride, .pad = pad};
    bf_status s = bf_pool_shape_init(&l->pool);
    l->out_shape = (bf_shape){in.n, in.c, l->pool.h_out, l->pool.w_out};
    return finish_layer(m, l, s);
}

int bf_model_add_maxpool(bf_model *m, const char *name, int input, int k, int stride, int pad) {
    return add_pool(m, BF_LAYER_MAXPOOL, name, input, k, stride, pad);
}

int bf_model_add_avgpool(bf_model *m, const char *name, int input, int k, int stride, int pad) {
    return add_pool(m, BF_LAYER_AVGPOOL, name, input, k, stride, pad);
}

int bf_model_add_global_avgpool(bf_model *m, const char *name, int input) {
    bf_layer *l = append_layer(m, BF_LAYER_GLOBAL_AVGPOOL, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->out_shape = (bf_shape){in.n, in.c, 1, 1};
    return finish_layer(m, l, BF_OK);
}

int bf_model_add_flatten(bf_model *m, const char *name, int input) {
    bf_layer *l = append_layer(m, BF_LAYER_FLATTEN, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->out_shape = (bf_shape){in.n, in.c * in.h * in.w, 1, 1};
    return finish_layer(m, l, BF_OK);
}

static int add_linear(bf_model *m, const char *name, int input, int out_features, int bias, bf_init weight_init,
                      bf_init bias_init, int frozen) {
    bf_layer *l = append_layer(m, BF_LAYER_LINEAR, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    int in_features = in.c * in.h * in.w;
    l->linear = (bf_linear_shape){.n = in.n, .in = in_features, .out = out_features};
    l->out_shape = (bf_shape){in.n, out_features, 1, 1};
    l->has_bias = bias;
    l->frozen = frozen;
    int64_t w_shape[2] = {out_features, in_features}, b_shape[1] = {out_features};
    if (frozen) {
        l->buffer_index[0] = register_param(&m->buffers, &m->num_buffers, &m->num_buffer_floats, l->name, "weight", 2,
                                            w_shape, weight_init, in_features, out_features, m->num_layers);
        if (bias)
            l->buffer_index[1] = register_param(&m->buffers, &m->num_buffers, &m->num_buffer_floats, l->name, "bias",
                                                1, b_shape, bias_init, in_features, out_features, m->num_layers);
    } else {
        add_param(m, l, 0, "weight", 2, w_shape, weight_init, in_features, out_features);
        if (bias) add_param(m, l, 1, "bias", 1, b_shape, bias_init, in_features, out_features);
    }
    return finish_layer(m, l, BF_OK);
}

int bf_model_add_linear(bf_model *m, const char *name, int input, int out_features, int bias,
                        bf_init weight_init, bf_init bias_init) {
    return add_linear(m, name, input, out_features, bias, weight_init, bias_init, 0);
}

int bf_model_add_frozen_linear(bf_model *m, const char *name, int input, int out_features, int bias,
                               bf_init weight_init, bf_init bias_init) {
    return add_linear(m, name, input, out_features, bias, weight_init, bias_init, 1);
}

static int add_dropout(bf_model *m, const char *name, int input, float p, int whole_channels) {
    bf_layer *l = append_layer(m, BF_LAYER_DROPOUT, name, input, -2);
    if (!l) return -1;
    l->out_shape = bf_model_shape_of(m, input);
    l->dropout_p = p;
    l->dropout_group = whole_channels ? l->out_shape.h * l->out_shape.w : 1;
    bf_status s = (p < 0 || p >= 1) ? bf_error(BF_ERR_ARG, "dropout p must be in [0, 1), got %g", p) : BF_OK;
    return finish_layer(m, l, s);
}

int bf_model_add_dropout(bf_model *m, const char *name, int input, float p) {
    return add_dropout(m, name, input, p, 0);
}

int bf_model_add_dropout2d(bf_model *m, const char *name, int input, float p) {
    return add_dropout(m, name, input, p, 1);
}

int bf_model_add_add(bf_model *m, const char *name, int input0, int input1) {
    bf_layer *l = append_layer(m, BF_LAYER_ADD, name, input0, input1);
    if (!l) return -1;
    bf_shape a = bf_model_shape_of(m, input0), b = bf_model_shape_of(m, input1);
    l->out_shape = a;
    bf_status s = memcmp(&a, &b, sizeof a) == 0 ? BF_OK
                  : bf_error(BF_ERR_ARG, "add: input shapes [%d,%d,%d,%d] and [%d,%d,%d,%d] differ",
                             a.n, a.c, a.h, a.w, b.n, b.c, b.h, b.w);
    return finish_layer(m, l, s);
}

/* Flex layer name's spatial-attention block on input (model.h): its layers, the last one's index (-1
 * on failure). It keeps H x W, so the flex layer's output must too. */
static int add_spatial_attention(bf_model *m, const char *name, int input, int c_out, int k, int stride, int pad,
                                 bf_init weight_init, const bf_flex_options *opt) {
    const bf_shape in = bf_model_shape_of(m, input);
    const int h_out = (in.h + 2 * pad - k) / stride + 1, w_out = (in.w + 2 * pad - k) / stride + 1;
    if (h_out != in.h || w_out != in.w) {
        m->build_failed = BF_ERR_CONFIG;
        bf_error(BF_ERR_CONFIG, "[model] flex_logits = spatial_attention: flex layer %s keeps no input size (%dx%d in, "
                 "%dx%d out: kernel %d, stride %d, padding %d), and the attention block's logits keep the input's; choose "
                 "layers that do with [model] flex_layers, or flex_logits = threshold", name, in.h, in.w, h_out, w_out, k,
                 stride, pad);
        return -1;
    }
    if (opt->attention_blocks < 0) {
        m->build_failed = 1;
        bf_error(BF_ERR_ARG, "flex %s: attention_blocks must be >= 0 (got %d)", name, opt->attention_blocks);
        return -1;
    }
    int x = input, index = 0; /* x may be the image (BF_MODEL_INPUT, also -1): failures show in build_failed */
    for (int block = 0; block <= opt->attention_blocks && !m->build_failed; block++) {
        const int width = block < opt->attention_blocks ? in.c : c_out; /* the last block maps to c_out */
        char layer[BF_NAME_MAX];
        snprintf(layer, sizeof layer, "%s.spatial_attention_block.%d", name, index++);
        x = bf_model_add_conv(m, layer, x, width, 3, 1, 1, 1, 1, weight_init);
        snprintf(layer, sizeof layer, "%s.spatial_attention_block.%d", name, index++);
        x = bf_model_add_leaky_relu(m, layer, x, 0.01f);
        snprintf(layer, sizeof layer, "%s.spatial_attention_block.%d", name, index++);
        x = bf_model_add_batchnorm(m, layer, x, opt->bn_eps, opt->bn_momentum);
        for (int i = m->build_failed ? m->num_layers : m->num_layers - 3; i < m->num_layers; i++)
            m->layers[i].in_logits_block = 1;
    }
    return m->build_failed ? -1 : x;
}

int bf_model_add_flex(bf_model *m, const char *name, int input, int c_out, int k, int stride, int pad,
                      bf_init weight_init, const bf_flex_options *opt) {
    bf_flex_route route = BF_FLEX_ROUTE_LEARNED;
    if (m->static_routes && opt->joint == BF_FLEX_JOINT_MAX && !m->build_failed &&
        bf_static_routing_route(m->static_routes, name, &route) != BF_OK) {
        m->build_failed = BF_ERR_CONFIG; /* the routing file does not fit the model: not a shape that fails */
        return -1;
    }
    if (route == BF_FLEX_ROUTE_CONV) { /* the flex conv alone, its tensors named as in the flex layer */
        char conv_name[BF_NAME_MAX];
        if (snprintf(conv_name, sizeof conv_name, "%s.flex_conv", name) >= (int)sizeof conv_name) {
            m->build_failed = 1;
            bf_error(BF_ERR_ARG, "model: layer name %s.flex_conv is too long", name);
            return -1;
        }
        return bf_model_add_conv(m, conv_name, input, c_out, k, stride, pad, 1, 1, weight_init);
    }
    const int attention = opt->joint == BF_FLEX_JOINT_MASK && opt->logits == BF_FLEX_LOGITS_SPATIAL_ATTENTION;
    const int logits_input = attention ? add_spatial_attention(m, name, input, c_out, k, stride, pad, weight_init, opt) : -2;
    if (attention && logits_input < 0) return -1;
    bf_layer *l = append_layer(m, BF_LAYER_FLEX, name, input, logits_input);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->conv = (bf_conv2d_shape){.n = in.n, .c_in = in.c, .h_in = in.h, .w_in = in.w, .c_out = c_out,
                                .k_h = k, .k_w = k, .stride = stride, .pad = pad, .groups = 1};
    l->pool = (bf_pool_shape){.n = in.n, .c = in.c, .h_in = in.h, .w_in = in.w, .k = k, .stride = stride, .pad = pad};
    bf_status s = bf_conv2d_shape_init(&l->conv);
    /* PyTorch's max-pool refuses padding above half the kernel; the flex pool branch shares the
     * conv's padding, so a k=1 conv with padding cannot be flex. */
    if (s == BF_OK) s = bf_pool_shape_init(&l->pool);
    if (s == BF_OK) {
        int hw = l->conv.h_out * l->conv.w_out;
        l->flex_opt = *opt;
        l->flex_opt.route = route;
        l->flex = (bf_flex_shape){.n = in.n, .c_in = in.c, .c_out = c_out, .hw = hw,
                                  .channels = opt->channels, .ties = opt->ties};
        l->out_shape = (bf_shape){in.n, c_out, l->conv.h_out, l->conv.w_out};
        l->has_bias = route != BF_FLEX_ROUTE_POOL; /* FlexNet's flex_conv always has a bias */
        int64_t w_shape[4] = {c_out, in.c, k, k}, b_shape[1] = {c_out};
        int64_t fan_in = (int64_t)in.c * k * k, fan_out = (int64_t)c_out * k * k;
        if (route != BF_FLEX_ROUTE_POOL) { /* a pool site has no conv, and so no parameters */
            add_param(m, l, 0, "flex_conv.weight", 4, w_shape, weight_init, fan_in, fan_out);
            add_param(m, l, 1, "flex_conv.bias", 1, b_shape,
                      weight_init == BF_INIT_UNIFORM_FAN_IN ? BF_INIT_UNIFORM_FAN_IN : BF_INIT_ZEROS, fan_in, fan_out);
        }
        if (opt->joint == BF_FLEX_JOINT_MASK) {
            /* threshold [c_out, h_out, w_out]: kaiming_uniform_ on a 3-D tensor takes fan_in = h*w */
            int64_t t_shape[3] = {c_out, l->conv.h_out, l->conv.w_out};
            if (attention) { /* the logits come from the block: no threshold (the reference makes an unused one) */
            } else if (opt->threshold_mode == BF_THRESHOLD_LEARNED) {
                add_param(m, l, 2, "threshold", 3, t_shape, BF_INIT_KAIMING_UNIFORM, hw, hw);
            } else {
                l->buffer_index[2] = register_param(&m->buffers, &m->num_buffers, &m->num_buffer_floats, l->name,
                                                    "threshold", 3, t_shape, BF_INIT_KAIMING_UNIFORM, hw, hw,
                                                    m->num_layers);
            }
            if (opt->logits_bn) {
                int64_t c_shape[1] = {c_out};
                add_param(m, l, 3, "bn_logits.weight", 1, c_shape, BF_INIT_ONES, 0, 0);
                add_param(m, l, 4, "bn_logits.bias", 1, c_shape, BF_INIT_ZEROS, 0, 0);
                l->bn = (bf_bn_shape){.n = in.n, .c = c_out, .hw = hw, .eps = opt->bn_eps, .momentum = opt->bn_momentum};
                l->buffer_index[0] = register_param(&m->buffers, &m->num_buffers, &m->num_buffer_floats, l->name,
                                                    "bn_logits.running_mean", 1, c_shape, BF_INIT_ZEROS, 0, 0, m->num_layers);
                l->buffer_index[1] = register_param(&m->buffers, &m->num_buffers, &m->num_buffer_floats, l->name,
                                                    "bn_logits.running_var", 1, c_shape, BF_INIT_ONES, 0, 0, m->num_layers);
            }
        }
    }
    return finish_layer(m, l, s);
}

int bf_model_add_encode(bf_model *m, const char *name, int input, int time_steps, int encoding) {
    bf_layer *l = append_layer(m, BF_LAYER_ENCODE, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    bf_status s = BF_OK;
    if (time_steps < 1) s = bf_error(BF_ERR_ARG, "encode: time_steps must be >= 1 (got %d)", time_steps);
    if (l->time_steps != 1) s = bf_error(BF_ERR_ARG, "encode: the input already has %d time steps", l->time_steps);
    l->time_steps = time_steps;
    l->encoding = encoding;
    l->out_shape = (bf_shape){in.n * time_steps, in.c, in.h, in.w};
    return finish_layer(m, l, s);
}

int bf_model_add_neuron(bf_model *m, const char *name, int input, const bf_neuron_params *p) {
    bf_layer *l = append_layer(m, BF_LAYER_NEURON, name, input, -2);
    if (!l) return -1;
    l->out_shape = bf_model_shape_of(m, input);
    l->neuron = *p;
    l->neuron.T = l->time_steps; /* the steps of the tensor it sees */
    return finish_layer(m, l, BF_OK);
}

int bf_model_add_neuron_shared(bf_model *m, const char *name, int input, const bf_neuron_params *p, int time_steps) {
    bf_layer *l = append_layer(m, BF_LAYER_NEURON, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    bf_status s = BF_OK;
    if (time_steps < 1) s = bf_error(BF_ERR_ARG, "neuron %s: time_steps must be >= 1 (got %d)", name, time_steps);
    if (l->time_steps != 1) s = bf_error(BF_ERR_ARG, "neuron %s: a shared input has one step, not %d", name, l->time_steps);
    l->time_steps = time_steps;
    l->out_shape = (bf_shape){in.n * time_steps, in.c, in.h, in.w};
    l->neuron = *p;
    l->neuron.T = time_steps;
    l->neuron.shared_input = 1;
    return finish_layer(m, l, s);
}

int bf_model_add_time_mean(bf_model *m, const char *name, int input) {
    bf_layer *l = append_layer(m, BF_LAYER_TIME_MEAN, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    bf_status s = l->time_steps > 1 || in.n % l->time_steps == 0 ? BF_OK : bf_error(BF_ERR_ARG, "time mean: no time steps");
    l->out_shape = (bf_shape){in.n / l->time_steps, in.c, in.h, in.w};
    l->neuron.T = l->time_steps;
    l->time_steps = 1;
    return finish_layer(m, l, s);
}

int bf_model_add_divnorm(bf_model *m, const char *name, int input, bf_oci_distance distance) {
    bf_layer *l = append_layer(m, BF_LAYER_DIVNORM, name, input, -2);
    if (!l) return -1;
    l->oci_distance = distance;
    bf_shape in = bf_model_shape_of(m, input);
    l->out_shape = in;
    /* S = W x is a 1x1 conv, c channels in and out */
    l->conv = (bf_conv2d_shape){.n = in.n, .c_in = in.c, .h_in = in.h, .w_in = in.w, .c_out = in.c,
                                .k_h = 1, .k_w = 1, .stride = 1, .pad = 0, .groups = 1};
    bf_status s = bf_conv2d_shape_init(&l->conv);
    int64_t shape[1] = {in.c};
    if (s == BF_OK) add_param(m, l, 0, "sigmas", 1, shape, BF_INIT_UNIFORM_PLUS_FAN_IN_8, in.c, in.c);
    return finish_layer(m, l, s);
}

int bf_model_add_polar(bf_model *m, const char *name, int input, int padding, int antialias) {
    bf_layer *l = append_layer(m, BF_LAYER_POLAR, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    /* the reference's rings and wedges are fixed for a 32x32 map (v1-constrained.md 1, 5.1) */
    bf_status s = in.h == BF_POLAR_IN_SIZE && in.w == BF_POLAR_IN_SIZE
                      ? BF_OK
                      : bf_error(BF_ERR_CONFIG, "polar transform %s: needs %dx%d maps (a 64x64 image after a ResNet "
                                 "stem), got %dx%d", name, BF_POLAR_IN_SIZE, BF_POLAR_IN_SIZE, in.h, in.w);
    l->out_shape = (bf_shape){in.n, in.c, BF_POLAR_OUT_SIZE, BF_POLAR_OUT_SIZE};
    l->linear = (bf_linear_shape){.n = in.n * in.c, .in = BF_POLAR_IN_SIZE * BF_POLAR_IN_SIZE,
                                  .out = BF_POLAR_OUT_SIZE * BF_POLAR_OUT_SIZE};
    l->polar_padding = padding;
    l->polar_antialias = antialias;
    return finish_layer(m, l, s);
}

int bf_model_add_dog(bf_model *m, const char *name, int input, int dog_channels, int k, int amp_paper) {
    bf_layer *l = append_layer(m, BF_LAYER_DOG, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->out_shape = in;
    bf_status s = dog_channels >= 1 && dog_channels <= in.c && k % 2 == 1
                      ? BF_OK
                      : bf_error(BF_ERR_ARG, "DoG %s: %d of %d channels with a %dx%d kernel (1 to %d channels, odd kernel)",
                                 name, dog_channels, in.c, k, k, in.c);
    l->dog_channels = dog_channels;
    l->dog_amp_paper = amp_paper;
    l->conv = (bf_conv2d_shape){.n = in.n, .c_in = dog_channels, .h_in = in.h, .w_in = in.w, .c_out = dog_channels,
                                .k_h = k, .k_w = k, .stride = 1, .pad = k / 2, .groups = 1};
    if (s == BF_OK) s = bf_conv2d_shape_init(&l->conv);
    if (s == BF_OK) {
        /* the reference's DoGConv2D(k = half-size): widths U(0, 1) + k/2, gain N(0, 1) * 2 */
        int64_t shape[3] = {(int64_t)dog_channels * dog_channels, 1, 1};
        add_param(m, l, 0, "dog_conv.sigma1", 3, shape, BF_INIT_UNIFORM_PLUS_HALF_FAN_IN, k / 2, 0);
        add_param(m, l, 1, "dog_conv.sigma2_scale", 3, shape, BF_INIT_UNIFORM_PLUS_HALF_FAN_IN, k / 2, 0);
        add_param(m, l, 2, "dog_conv.total_scale", 3, shape, BF_INIT_NORMAL_STD_FAN_IN, 2, 0);
    }
    return finish_layer(m, l, s);
}

int bf_model_add_local(bf_model *m, const char *name, int input, int c_out, int k, int stride, int pad) {
    bf_layer *l = append_layer(m, BF_LAYER_LOCAL, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->local = (bf_local_shape){.n = in.n, .c_in = in.c, .h_in = in.h, .w_in = in.w, .c_out = c_out, .k = k,
                                .stride = stride, .pad = pad};
    bf_status s = bf_local_shape_init(&l->local);
    if (s == BF_OK) {
        l->out_shape = (bf_shape){in.n, c_out, l->local.h_out, l->local.w_out};
        int64_t shape[6] = {1, c_out, in.c, l->local.h_out, l->local.w_out, (int64_t)k * k};
        add_param(m, l, 0, "weight", 6, shape, BF_INIT_NORMAL_STD_FAN_IN, 1, 0);
    }
    return finish_layer(m, l, s);
}

/* The reference's DivisiveNormalizationCirincione(c, gaussian_kernel_size = 3) (v1-constrained.md 4.2). */
#define CIRINCIONE_K 3

int bf_model_add_cirincione(bf_model *m, const char *name, int input) {
    bf_layer *l = append_layer(m, BF_LAYER_CIRINCIONE, name, input, -2);
    if (!l) return -1;
    bf_shape in = bf_model_shape_of(m, input);
    l->out_shape = in;
    /* N = G * x: a K x K conv with padding K // 2, c channels in and out */
    l->conv = (bf_conv2d_shape){.n = in.n, .c_in = in.c, .h_in = in.h, .w_in = in.w, .c_out = in.c,
                                .k_h = CIRINCIONE_K, .k_w = CIRINCIONE_K, .stride = 1, .pad = CIRINCIONE_K / 2,
                                .groups = 1};
    bf_status s = bf_conv2d_shape_init(&l->conv);
    if (s == BF_OK) {
        /* the reference's inits, in its state_dict order */
        int64_t shape[4] = {in.c, in.c, 1, 1}, one[1] = {1};
        add_param(m, l, 0, "A", 4, shape, BF_INIT_UNIFORM_0_1, 0, 0);
        add_param(m, l, 1, "rho", 4, shape, BF_INIT_UNIFORM_PLUS_1, 0, 0);
        add_param(m, l, 2, "sigma", 4, shape, BF_INIT_UNIFORM_PLUS_1, 0, 0);
        add_param(m, l, 3, "theta", 4, shape, BF_INIT_UNIFORM_2PI, 0, 0);
        add_param(m, l, 4, "v", 4, shape, BF_INIT_NORMAL_PLUS_FAN_IN, CIRINCIONE_K / 2, 0);
        add_param(m, l, 5, "w", 4, shape, BF_INIT_NORMAL_PLUS_FAN_IN, CIRINCIONE_K / 2, 0);
        add_param(m, l, 6, "bias", 1, one, BF_INIT_UNIFORM_PLUS_1, 0, 0);
    }
    return finish_layer(m, l, s);
}

int bf_name_in_prefixes(const char *name, const char *prefixes) {
    for (const char *p = prefixes; p && *p;) {
        while (*p == ' ' || *p == ',') p++;
        size_t len = strcspn(p, ",");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '.')) len--; /* "classifier.6." = "classifier.6" */
        if (len > 0 && strncmp(name, p, len) == 0 && (name[len] == '\0' || name[len] == '.')) return 1;
        p += strcspn(p, ",");
    }
    return 0;
}
