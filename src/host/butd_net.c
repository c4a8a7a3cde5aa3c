/* butd_net.c - building a BU-TD network: layers, parameter layout, memory and initialisation
 * (see include/bioflex/butd.h; the passes are in butd_passes.c, saving and loading in butd_io.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/hash.h"
#include "butd_internal.h"

bf_status bf_butd_create(bf_backend *b, int c, int h, int w, int max_batch, const bf_butd_options *opt,
                         bf_butd_net **out) {
    *out = NULL; /* b == NULL plans the network without allocating (--dry-run) */
    if (c <= 0 || h <= 0 || w <= 0 || max_batch <= 0)
        return bf_error(BF_ERR_ARG, "butd: bad input shape %dx%dx%d, batch %d", c, h, w, max_batch);
    if (opt->guided && opt->num_tasks <= 0)
        return bf_error(BF_ERR_ARG, "butd: a guided network needs num_tasks > 0 (got %d)", opt->num_tasks);
    if (opt->multi_decoders && !opt->guided)
        return bf_error(BF_ERR_CONFIG, "[butd] multi_decoders = true needs guided = true (the task picks the decoder)");
    if (opt->ch_bn != BF_BUTD_CH_BN_EXACT && opt->ch_bn != BF_BUTD_CH_BN_INDEPENDENT)
        return bf_error(BF_ERR_ARG, "butd: ch_bn %d is neither exact (0) nor independent (1)", opt->ch_bn);
    if (opt->ch_bn == BF_BUTD_CH_BN_INDEPENDENT && (!opt->batch_norm || opt->learning != BF_BUTD_COUNTER_HEBB))
        return bf_error(BF_ERR_CONFIG, "[butd] ch_bn = independent applies with batch_norm = true and learning = "
                                       "counter_hebb only (it says what the Counter-Hebb error pass does at a "
                                       "batch-norm)");
    bf_butd_net *net = calloc(1, sizeof *net);
    if (!net) return bf_error(BF_ERR_OOM, "butd: out of memory");
    net->backend = b;
    net->opt = *opt;
    net->in_c = c;
    net->in_h = h;
    net->in_w = w;
    net->max_batch = net->batch = max_batch;
    net->training = 1;
    net->task_param = -1;
    *out = net;
    return BF_OK;
}

static bf_butd_layer *push_layer(bf_butd_net *net) {
    if (net->has_head) {
        bf_error(BF_ERR_ARG, "butd: no layer may follow the prediction head");
        net->build_failed = BF_ERR_ARG;
        return NULL;
    }
    if (net->num_layers == net->cap_layers) {
        int cap = net->cap_layers ? 2 * net->cap_layers : 8;
        bf_butd_layer *l = realloc(net->layers, (size_t)cap * sizeof *l);
        if (!l) {
            bf_error(BF_ERR_OOM, "butd: out of memory");
            net->build_failed = BF_ERR_OOM;
            return NULL;
        }
        net->layers = l;
        net->cap_layers = cap;
    }
    bf_butd_layer *l = &net->layers[net->num_layers];
    memset(l, 0, sizeof *l);
    l->w = l->bias = l->td_w = l->w2 = l->td_w2 = l->wd = l->td_wd = -1;
    return l;
}

/* The output shape of the level the next layer reads. */
static void top_shape(const bf_butd_net *net, int *c, int *h, int *w) {
    if (net->num_layers == 0) {
        *c = net->in_c, *h = net->in_h, *w = net->in_w;
        return;
    }
    const bf_butd_layer *l = &net->layers[net->num_layers - 1];
    *c = l->out_c, *h = l->out_h, *w = l->out_w;
}

int bf_butd_add_conv(bf_butd_net *net, const char *name, int c_out, int k, int stride, int pad, int groups, int bias) {
    if (net->build_failed) return -1;
    int c, h, w;
    top_shape(net, &c, &h, &w);
    bf_butd_layer *l = push_layer(net);
    if (!l) return -1;
    l->kind = BF_BUTD_CONV;
    snprintf(l->name, sizeof l->name, "%s", name);
    bf_conv2d_shape s = {.n = net->max_batch, .c_in = c, .h_in = h, .w_in = w, .c_out = c_out, .k_h = k, .k_w = k,
                         .stride = stride, .pad = pad, .groups = groups};
    if (bf_conv2d_shape_init(&s) != BF_OK) {
        net->build_failed = BF_ERR_ARG;
        return -1;
    }
    l->conv = s;
    l->relu = 1;
    l->bias = bias; /* a flag until finalize turns it into an index */
    l->in_size = c * h * w;
    l->out_c = c_out, l->out_h = s.h_out, l->out_w = s.w_out;
    l->out_size = c_out * s.h_out * s.w_out;
    if (net->opt.batch_norm) { /* "conv1" -> "bn1", as torchvision's ResNet */
        char bn[BF_NAME_MAX];
        if (strncmp(name, "conv", 4) == 0)
            snprintf(bn, sizeof bn, "bn%.100s", name + 4);
        else
            snprintf(bn, sizeof bn, "%.100s.bn", name);
        l->norm[0] = bf_butd_norm_new(bn, net->max_batch, c_out, s.h_out * s.w_out, c, h * w);
        if (!l->norm[0]) net->build_failed = BF_ERR_OOM;
    }
    return net->num_layers++;
}

int bf_butd_add_block(bf_butd_net *net, const char *name, int c_out, int stride) {
    if (net->build_failed) return -1;
    int c, h, w;
    top_shape(net, &c, &h, &w);
    bf_butd_layer *l = push_layer(net);
    if (!l) return -1;
    l->kind = BF_BUTD_BLOCK;
    snprintf(l->name, sizeof l->name, "%s", name);
    bf_conv2d_shape c1 = {.n = net->max_batch, .c_in = c, .h_in = h, .w_in = w, .c_out = c_out, .k_h = 3, .k_w = 3,
                          .stride = stride, .pad = 1, .groups = 1};
    if (bf_conv2d_shape_init(&c1) != BF_OK) {
        net->build_failed = BF_ERR_ARG;
        return -1;
    }
    bf_conv2d_shape c2 = {.n = net->max_batch, .c_in = c_out, .h_in = c1.h_out, .w_in = c1.w_out, .c_out = c_out,
                          .k_h = 3, .k_w = 3, .stride = 1, .pad = 1, .groups = 1};
    bf_conv2d_shape d = {.n = net->max_batch, .c_in = c, .h_in = h, .w_in = w, .c_out = c_out, .k_h = 1, .k_w = 1,
                         .stride = stride, .pad = 0, .groups = 1};
    if (bf_conv2d_shape_init(&c2) != BF_OK || bf_conv2d_shape_init(&d) != BF_OK) {
        net->build_failed = BF_ERR_ARG;
        return -1;
    }
    l->conv = c1, l->conv2 = c2, l->down = d;
    l->has_down = stride != 1 || c != c_out;
    l->relu = 1;
    l->bias = 0;
    l->in_size = c * h * w;
    l->out_c = c_out, l->out_h = c1.h_out, l->out_w = c1.w_out;
    l->out_size = c_out * c1.h_out * c1.w_out;
    if (net->opt.batch_norm) { /* TD copies over the transposed ops' outputs: conv1^T and the downsample's
                                * give the block's input channels, conv2^T conv1's output channels */
        char bn[3][BF_NAME_MAX];
        snprintf(bn[0], sizeof bn[0], "%.100s.bn1", name);
        snprintf(bn[1], sizeof bn[1], "%.100s.bn2", name);
        snprintf(bn[2], sizeof bn[2], "%.100s.downsample.bn", name);
        int plane = c1.h_out * c1.w_out;
        l->norm[0] = bf_butd_norm_new(bn[0], net->max_batch, c_out, plane, c, h * w);
        l->norm[1] = bf_butd_norm_new(bn[1], net->max_batch, c_out, plane, c_out, plane);
        if (l->has_down) l->norm[2] = bf_butd_norm_new(bn[2], net->max_batch, c_out, plane, c, h * w);
        if (!l->norm[0] || !l->norm[1] || (l->has_down && !l->norm[2])) net->build_failed = BF_ERR_OOM;
    }
    return net->num_layers++;
}

static int add_linear(bf_butd_net *net, const char *name, int out_features, int bias, int relu) {
    if (net->build_failed) return -1;
    int c, h, w;
    top_shape(net, &c, &h, &w);
    bf_butd_layer *l = push_layer(net);
    if (!l) return -1;
    if (out_features <= 0) {
        bf_error(BF_ERR_ARG, "butd: layer %s: out_features %d", name, out_features);
        net->build_failed = BF_ERR_ARG;
        return -1;
    }
    l->kind = BF_BUTD_LINEAR;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->in_size = c * h * w; /* an NCHW activity read flat, as PyTorch's Flatten */
    l->linear = (bf_linear_shape){.n = net->max_batch, .in = l->in_size, .out = out_features};
    l->relu = relu;
    l->bias = bias;
    l->out_c = out_features, l->out_h = 1, l->out_w = 1;
    l->out_size = out_features;
    return net->num_layers++;
}

int bf_butd_add_linear(bf_butd_net *net, const char *name, int out_features, int bias) {
    return add_linear(net, name, out_features, bias, 1);
}

/* ---- parameters ---- */

int bf_butd_param_add(bf_butd_net *net, const char *layer, const char *what, int ndim, const int64_t *shape,
                      int64_t fan_in, int layer_index) {
    bf_param *p = realloc(net->params, (size_t)(net->num_params + 1) * sizeof *p);
    if (!p) return -1;
    net->params = p;
    bf_param *q = &p[net->num_params];
    memset(q, 0, sizeof *q);
    snprintf(q->name, sizeof q->name, "%s.%s", layer, what);
    q->ndim = ndim;
    q->count = 1;
    for (int i = 0; i < ndim; i++) {
        q->shape[i] = shape[i];
        q->count *= (size_t)shape[i];
    }
    q->offset = net->num_param_floats;
    q->fan_in = fan_in;
    q->layer = layer_index;
    net->num_param_floats += q->count;
    return net->num_params++;
}

static void weight_shape(const bf_butd_layer *l, int64_t *shape, int *ndim, int64_t *fan_in) {
    if (l->kind != BF_BUTD_LINEAR) { /* a block: its conv1 */
        shape[0] = l->conv.c_out, shape[1] = l->conv.c_in / l->conv.groups, shape[2] = l->conv.k_h,
        shape[3] = l->conv.k_w;
        *ndim = 4;
        *fan_in = shape[1] * shape[2] * shape[3];
    } else {
        shape[0] = l->linear.out, shape[1] = l->linear.in;
        *ndim = 2;
        *fan_in = shape[1];
    }
}

/* U(-bound, bound) draws for one parameter from its own seed: the same weights on every backend. */
static void fill_uniform_host(float *x, size_t n, float bound, uint64_t seed) {
    for (size_t i = 0; i < n; i++) x[i] = bound * (2.0f * bf_uniform(seed, (uint64_t)i) - 1.0f);
}

/* symmetric_init_noise: every element of a symmetric B times (1 + std N(0, 1)) (the reference's
 * NoiseInit), the normal draws by Box-Muller from B's own seed (which a symmetric B draws nothing else from). */
static void perturb_symmetric_host(float *x, size_t n, float std, uint64_t seed) {
    for (size_t i = 0; std > 0 && i < n; i++) x[i] *= (float)(1.0 + std * bf_normal(seed, i));
}

/* The bound of an independent draw of B, fan_in from B's own shape (spec 2.3): kaiming_uniform_
 * with a = 0, U(+-sqrt(6/fan_in)) (the reference's current code), or with a = sqrt 5,
 * U(+-1/sqrt(fan_in)) (its older code, [butd] td_init = legacy). */
static float td_init_bound(const bf_butd_options *o, const bf_param *b) {
    return o->td_init_legacy ? 1.0f / sqrtf((float)b->fan_in) : sqrtf(6.0f / (float)b->fan_in);
}

static bf_status allocate_levels(bf_butd_net *net) {
    bf_backend *b = net->backend;
    int L = net->num_layers;
    net->act = calloc((size_t)L + 1, sizeof(float *));
    net->td = calloc((size_t)L + 1, sizeof(float *));
    if (!net->act || !net->td) return bf_error(BF_ERR_OOM, "butd: out of memory");
    size_t largest = (size_t)net->in_c * net->in_h * net->in_w;
    for (int i = 0; i < L; i++) {
        size_t bytes = (size_t)net->max_batch * net->layers[i].out_size * sizeof(float);
        BF_TRY(bf_alloc(b, bytes, (void **)&net->act[i + 1]));
        BF_TRY(bf_alloc(b, bytes, (void **)&net->td[i + 1]));
        if ((size_t)net->layers[i].out_size > largest) largest = (size_t)net->layers[i].out_size;
        if (net->layers[i].kind == BF_BUTD_BLOCK) {
            BF_TRY(bf_alloc(b, bytes, (void **)&net->layers[i].u));
            BF_TRY(bf_alloc(b, bytes, (void **)&net->layers[i].td_u));
        }
    }
    BF_TRY(bf_alloc(b, (size_t)net->max_batch * largest * sizeof(float), (void **)&net->scratch));
    if (net->num_state_floats) /* batch-norm's TD copies and backward need a second one */
        BF_TRY(bf_alloc(b, (size_t)net->max_batch * largest * sizeof(float), (void **)&net->scratch2));
    return BF_OK;
}

/* The task head's shapes: BU direction core output -> [embedding ->] tasks. A fixed head (the
 * reference's) keeps its weights in task_data; a trained one (opt.train_task_head) adds them to the
 * parameters, task_head.0.weight first, and task_data then points at them. */
static bf_status plan_task_head(bf_butd_net *net) {
    const bf_butd_options *o = &net->opt;
    int core_out = net->layers[net->num_layers - 2].out_size;
    int sizes[3], n = 0;
    sizes[n++] = core_out;
    if (o->task_embedding > 0) sizes[n++] = o->task_embedding;
    sizes[n++] = o->num_tasks;
    net->num_task_layers = n - 1;
    net->task_param = -1;
    size_t offset = 0;
    for (int i = 0; i < n - 1; i++) {
        bf_butd_layer *l = &net->task_head[i];
        memset(l, 0, sizeof *l);
        l->kind = BF_BUTD_LINEAR;
        snprintf(l->name, sizeof l->name, "task_head.%d", i);
        l->linear = (bf_linear_shape){.n = net->max_batch, .in = sizes[i], .out = sizes[i + 1]};
        l->in_size = sizes[i], l->out_size = sizes[i + 1];
        l->w = (int)offset; /* offset into task_data */
        offset += (size_t)sizes[i] * sizes[i + 1];
        if (o->train_task_head) {
            int64_t shape[2] = {sizes[i + 1], sizes[i]};
            int p = bf_butd_param_add(net, l->name, "weight", 2, shape, sizes[i], net->num_layers);
            if (p < 0) return bf_error(BF_ERR_OOM, "butd: out of memory");
            if (i == 0) net->task_param = p;
        }
    }
    net->num_task_floats = offset;
    return BF_OK;
}

/* Task head memory and its PyTorch-default init, and the straight-through buffers when trained. */
static bf_status build_task_head(bf_butd_net *net) {
    const bf_butd_options *o = &net->opt;
    int n = net->num_task_layers + 1;
    size_t offset = net->num_task_floats;
    bf_backend *b = net->backend;
    float *host = malloc(offset * sizeof(float));
    if (!host) return bf_error(BF_ERR_OOM, "butd: out of memory");
    for (int i = 0; i < n - 1; i++) {
        const bf_butd_layer *l = &net->task_head[i];
        /* PyTorch's default Linear init: U(+-1/sqrt(fan_in)), fan_in = the BU input width. */
        fill_uniform_host(host + l->w, (size_t)l->in_size * l->out_size, 1.0f / sqrtf((float)l->in_size),
                          bf_seed_derive((uint64_t)o->seed, BF_STREAM_INIT, 100000u + (uint64_t)i));
    }
    bf_status s = BF_OK;
    if (net->task_param >= 0) /* trained: a part of param_data */
        net->task_data = net->param_data + net->params[net->task_param].offset;
    else
        s = bf_alloc(b, offset * sizeof(float), (void **)&net->task_data);
    if (s == BF_OK) s = bf_to_device(b, net->task_data, host, offset * sizeof(float));
    free(host);
    BF_TRY(s);
    if (net->task_param >= 0) BF_TRY(bf_butd_task_head_allocate(net));
    int widest = o->task_embedding > 0 ? o->task_embedding : 1;
    BF_TRY(bf_alloc(b, (size_t)net->max_batch * o->num_tasks * sizeof(float), (void **)&net->task_onehot));
    net->task_onehot_host = malloc((size_t)net->max_batch * o->num_tasks * sizeof(float));
    if (!net->task_onehot_host) return bf_error(BF_ERR_OOM, "butd: out of host memory for the instruction");
    BF_TRY(bf_alloc(b, (size_t)net->max_batch * widest * sizeof(float), (void **)&net->task_hidden));
    return BF_OK;
}

static bf_status add_norm_params(bf_butd_net *net, bf_butd_layer *l, int i) {
    for (int j = 0; j < 3; j++)
        if (l->norm[j]) BF_TRY(bf_butd_norm_add_params(net, l->norm[j], i));
    return BF_OK;
}

/* A block's parameters, per conv W then its B (separate weights): conv1, conv2, the downsample.
 * The downsample gets no B with downsample_always_shared (the reference's quirk, spec section 1.4). */
static bf_status add_block_params(bf_butd_net *net, bf_butd_layer *l, int i, const int64_t *s1, int64_t fan_in1) {
    const bf_butd_options *o = &net->opt;
    char n1[BF_NAME_MAX], n2[BF_NAME_MAX], nd[BF_NAME_MAX];
    snprintf(n1, sizeof n1, "%.80s.conv1", l->name);
    snprintf(n2, sizeof n2, "%.80s.conv2", l->name);
    snprintf(nd, sizeof nd, "%.80s.downsample", l->name);
    int64_t s2[4] = {l->conv2.c_out, l->conv2.c_in, 3, 3}, sd[4] = {l->down.c_out, l->down.c_in, 1, 1};
    int separate = !o->shared_weights, down_separate = separate && !o->downsample_always_shared;
    l->w = bf_butd_param_add(net, n1, "weight", 4, s1, fan_in1, i);
    if (separate) l->td_w = bf_butd_param_add(net, n1, "back_weight", 4, s1, fan_in1, i);
    l->w2 = bf_butd_param_add(net, n2, "weight", 4, s2, s2[1] * 9, i);
    if (separate) l->td_w2 = bf_butd_param_add(net, n2, "back_weight", 4, s2, s2[1] * 9, i);
    if (l->has_down) l->wd = bf_butd_param_add(net, nd, "weight", 4, sd, sd[1], i);
    if (l->has_down && down_separate) l->td_wd = bf_butd_param_add(net, nd, "back_weight", 4, sd, sd[1], i);
    l->bias = -1;
    if (l->w < 0 || l->w2 < 0 || (separate && (l->td_w < 0 || l->td_w2 < 0)) || (l->has_down && l->wd < 0) ||
        (l->has_down && down_separate && l->td_wd < 0))
        return bf_error(BF_ERR_OOM, "butd: out of memory");
    return add_norm_params(net, l, i);
}

bf_status bf_butd_finalize(bf_butd_net *net, int num_classes) {
    if (net->build_failed) return bf_error_context(net->build_failed, "butd: building failed");
    if (net->num_layers == 0) return bf_error(BF_ERR_ARG, "butd: no core layer before the head");
    int decoders = net->opt.multi_decoders ? net->opt.num_tasks : 1; /* one head of num_classes per task */
    if (add_linear(net, "head", num_classes * decoders, 1, 0) < 0)
        return bf_error_context(net->build_failed, "butd: head");
    net->has_head = 1;
    net->num_classes = num_classes;
    const bf_butd_options *o = &net->opt;
    if (o->train_task_head) BF_TRY(bf_butd_task_head_check(net));
    /* Parameter layout: per layer W, bias, then B (separate weights). */
    for (int i = 0; i < net->num_layers; i++) {
        bf_butd_layer *l = &net->layers[i];
        int64_t shape[4], fan_in;
        int ndim, has_bias = l->bias;
        weight_shape(l, shape, &ndim, &fan_in);
        if (l->kind == BF_BUTD_BLOCK) {
            BF_TRY(add_block_params(net, l, i, shape, fan_in));
            continue;
        }
        l->w = bf_butd_param_add(net, l->name, "weight", ndim, shape, fan_in, i);
        l->bias = -1;
        if (has_bias) {
            int64_t bshape[1] = {shape[0]};
            l->bias = bf_butd_param_add(net, l->name, "bias", 1, bshape, fan_in, i);
        }
        if (!o->shared_weights) {
            int64_t tshape[4] = {shape[0], shape[1], shape[2], shape[3]};
            int64_t td_fan_in = fan_in;
            if (l->kind == BF_BUTD_LINEAR) {
                tshape[0] = shape[1], tshape[1] = shape[0]; /* [in, out] */
                td_fan_in = tshape[1];                      /* torch's fan_in of B's own shape */
            }
            l->td_w = bf_butd_param_add(net, l->name, "back_weight", ndim, tshape, td_fan_in, i);
        }
        if (l->w < 0 || (has_bias && l->bias < 0) || (!o->shared_weights && l->td_w < 0))
            return bf_error(BF_ERR_OOM, "butd: out of memory");
        BF_TRY(add_norm_params(net, l, i));
    }
    if (o->guided) {
        if (net->num_layers < 2) return bf_error(BF_ERR_ARG, "butd: a guided network needs a core layer");
        BF_TRY(plan_task_head(net)); /* after the core's parameters: a trained head's come last */
    }
    bf_backend *b = net->backend;
    if (!b) return BF_OK; /* planned only */
    size_t bytes = net->num_param_floats * sizeof(float);
    float *host = calloc(net->num_param_floats + 1, sizeof(float)); /* a trained task head is filled later */
    if (!host) return bf_error(BF_ERR_OOM, "butd: out of memory");
    for (int i = 0; i < net->num_layers; i++) {
        const bf_butd_layer *l = &net->layers[i];
        if (l->kind == BF_BUTD_BLOCK) { /* bias-free convs: W default init, B as W (symmetric) or its own draw */
            int ws[3] = {l->w, l->w2, l->wd}, ts[3] = {l->td_w, l->td_w2, l->td_wd};
            for (int k = 0; k < 3; k++) {
                if (ws[k] < 0) continue;
                const bf_param *pw = &net->params[ws[k]];
                fill_uniform_host(host + pw->offset, pw->count, 1.0f / sqrtf((float)pw->fan_in),
                                  bf_seed_derive((uint64_t)o->seed, BF_STREAM_INIT, (uint64_t)ws[k]));
                if (ts[k] < 0) continue;
                const bf_param *pt = &net->params[ts[k]];
                if (o->symmetric_init) {
                    memcpy(host + pt->offset, host + pw->offset, pt->count * sizeof(float));
                    perturb_symmetric_host(host + pt->offset, pt->count, o->symmetric_init_noise,
                                           bf_seed_derive((uint64_t)o->seed, BF_STREAM_INIT, (uint64_t)ts[k]));
                } else
                    fill_uniform_host(host + pt->offset, pt->count, td_init_bound(o, pt),
                                      bf_seed_derive((uint64_t)o->seed, BF_STREAM_INIT, (uint64_t)ts[k]));
            }
            continue;
        }
        const bf_param *w = &net->params[l->w];
        float bound = 1.0f / sqrtf((float)w->fan_in); /* kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)) */
        fill_uniform_host(host + w->offset, w->count, bound, bf_seed_derive((uint64_t)o->seed, BF_STREAM_INIT, (uint64_t)l->w));
        if (l->bias >= 0) {
            const bf_param *p = &net->params[l->bias];
            fill_uniform_host(host + p->offset, p->count, bound,
                              bf_seed_derive((uint64_t)o->seed, BF_STREAM_INIT, (uint64_t)l->bias));
        }
        if (l->td_w >= 0) {
            const bf_param *t = &net->params[l->td_w];
            const uint64_t seed = bf_seed_derive((uint64_t)o->seed, BF_STREAM_INIT, (uint64_t)l->td_w);
            if (!o->symmetric_init) {
                fill_uniform_host(host + t->offset, t->count, td_init_bound(o, t), seed);
            } else {
                if (l->kind == BF_BUTD_LINEAR) {
                    int out = l->linear.out, in = l->linear.in;
                    for (int r = 0; r < out; r++)
                        for (int c = 0; c < in; c++)
                            host[t->offset + (size_t)c * out + r] = host[w->offset + (size_t)r * in + c];
                } else {
                    memcpy(host + t->offset, host + w->offset, t->count * sizeof(float));
                }
                perturb_symmetric_host(host + t->offset, t->count, o->symmetric_init_noise, seed);
            }
        }
    }
    float *state = malloc((net->num_state_floats + 1) * sizeof(float));
    if (!state) {
        free(host);
        return bf_error(BF_ERR_OOM, "butd: out of memory");
    }
    bf_butd_norm_init(net, host, state);
    bf_status s = bf_alloc(b, bytes, (void **)&net->param_data);
    if (s == BF_OK) s = bf_alloc(b, bytes, (void **)&net->grad_data);
    if (s == BF_OK) s = bf_to_device(b, net->param_data, host, bytes);
    if (s == BF_OK) s = bf_butd_norm_allocate(net, state);
    free(host);
    free(state);
    BF_TRY(s);
    BF_TRY(allocate_levels(net));
    if (o->guided) BF_TRY(build_task_head(net));
    if (o->multi_decoders) {
        BF_TRY(bf_alloc(b, (size_t)net->max_batch * sizeof(int32_t), (void **)&net->task_ids));
        BF_TRY(bf_alloc(b, (size_t)net->max_batch * num_classes * sizeof(float), (void **)&net->logits));
    }
    return BF_OK;
}

bf_status bf_butd_set_batch(bf_butd_net *net, int n) {
    if (n <= 0 || n > net->max_batch)
        return bf_error(BF_ERR_ARG, "butd: batch %d outside 1..%d", n, net->max_batch);
    net->batch = n;
    for (int i = 0; i < net->num_layers; i++) {
        net->layers[i].conv.n = n;
        net->layers[i].conv2.n = n;
        net->layers[i].down.n = n;
        net->layers[i].linear.n = n;
    }
    for (int i = 0; i < net->num_task_layers; i++) net->task_head[i].linear.n = n;
    bf_butd_norm_set_batch(net, n);
    return BF_OK;
}

void bf_butd_set_training(bf_butd_net *net, int training) { net->training = training; }

void bf_butd_destroy(bf_butd_net *net) {
    if (!net) return;
    bf_backend *b = net->backend;
    for (int i = 1; net->act && i <= net->num_layers; i++) {
        bf_free(b, net->act[i]);
        bf_free(b, net->td[i]);
    }
    for (int i = 0; i < net->num_layers; i++) {
        bf_free(b, net->layers[i].u);
        bf_free(b, net->layers[i].td_u);
    }
    bf_butd_norm_free(net);
    free(net->act);
    free(net->td);
    bf_free(b, net->scratch2);
    bf_free(b, net->scratch); /* every pointer is NULL in a planned network */
    bf_free(b, net->param_data);
    bf_free(b, net->grad_data);
    if (net->task_param < 0) bf_free(b, net->task_data); /* else a part of param_data */
    bf_butd_task_head_free(net);
    bf_free(b, net->task_onehot);
    bf_free(b, net->task_ids);
    bf_free(b, net->logits);
    bf_free(b, net->task_hidden);
    free(net->task_onehot_host);
    free(net->params);
    free(net->layers);
    free(net);
}
