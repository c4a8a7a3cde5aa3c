/* butd_passes.c - the three passes of a BU-TD network and its update (include/bioflex/butd.h,
 * specs/butd-counterhebb.md sections 1-2). Every operation goes through bf_ops, so the CPU and
 * CUDA backends share this file. GaLU x * 1[g > 0] is relu_backward(y = g, dy = x): the ReLU
 * derivative mask read from the gate. Batch-norm (butd_norm.c) sits between a conv and what
 * follows it: BU it normalises the conv output kept in norm->z, TD its copy normalises the
 * transposed op's output (instruction pass), and the error pass backprops through the BU one
 * (backprop; Counter-Hebb with ch_bn = exact) or, Counter-Hebb with ch_bn = independent, applies
 * the TD copy after each transposed op as the instruction pass does (the reference's error pass). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/hash.h"
#include "butd_internal.h"

static float *param(const bf_butd_net *net, float *base, int index) {
    return index < 0 ? NULL : base + net->params[index].offset;
}

/* GaLU in place: x *= 1[gate > 0]. */
static bf_status galu(bf_backend *b, float *x, const float *gate, size_t n) {
    return b->ops->relu_backward(b, gate, x, x, n);
}

/* The TD op of layer l: below [n, in_size] = the transposed op of above [n, out_size], through W
 * (use_bu_weight, or shared weights) or the separate B. No bias (it is blocked or absent). */
static bf_status td_op(bf_butd_net *net, const bf_butd_layer *l, int use_bu_weight, const float *above, float *below) {
    bf_backend *b = net->backend;
    int td_own = l->td_w >= 0 && !use_bu_weight;
    const float *w = param(net, net->param_data, td_own ? l->td_w : l->w);
    if (l->kind == BF_BUTD_CONV) /* conv-transpose at the stored BU input shape = backward-data */
        return b->ops->conv2d_backward_data(b, &l->conv, above, w, below);
    if (td_own) { /* B is [in, out]: below = above * B^T, a linear layer from out to in */
        bf_linear_shape t = {.n = l->linear.n, .in = l->linear.out, .out = l->linear.in};
        return b->ops->linear_forward(b, &t, above, w, NULL, below);
    }
    /* below = above * W: the input gradient of the linear layer. */
    return b->ops->linear_backward(b, &l->linear, NULL, w, above, below, NULL, NULL);
}

static bf_status block_td(bf_butd_net *net, const bf_butd_layer *l, int i, int error_pass, int use_bu_weight);

/* Counter-Hebb with ch_bn = independent: the error pass normalises with the TD copies (the
 * reference's back_batch_norm) instead of going back through the BU batch-norms. */
static int td_norm_in_error_pass(const bf_butd_net *net) {
    return net->opt.batch_norm && net->opt.learning == BF_BUTD_COUNTER_HEBB &&
           net->opt.ch_bn == BF_BUTD_CH_BN_INDEPENDENT;
}

bf_status bf_butd_instruct(bf_butd_net *net, const int32_t *tasks) {
    if (!net->opt.guided) return bf_error(BF_ERR_ARG, "butd: bf_butd_instruct on an unguided network");
    if (!tasks) return bf_error(BF_ERR_ARG, "butd: a guided network needs a task per sample (the dataset has none)");
    bf_backend *b = net->backend;
    int n = net->batch, T = net->opt.num_tasks;
    float *onehot = net->task_onehot_host;
    memset(onehot, 0, (size_t)n * T * sizeof(float));
    for (int j = 0; j < n; j++) {
        if (tasks[j] < 0 || tasks[j] >= T)
            return bf_error(BF_ERR_ARG, "butd: task %d of sample %d outside 0..%d", tasks[j], j, T - 1);
        onehot[(size_t)j * T + tasks[j]] = 1.0f;
    }
    BF_TRY(bf_to_device(b, net->task_onehot, onehot, (size_t)n * T * sizeof(float)));
    if (net->opt.multi_decoders) BF_TRY(bf_to_device(b, net->task_ids, tasks, (size_t)n * sizeof(int32_t)));
    /* Task head, transposed, top to bottom, ReLU after each layer, no gate, no bias. */
    const float *x = net->task_onehot;
    int core_top = net->num_layers - 1; /* the head reads level core_top */
    for (int i = net->num_task_layers - 1; i >= 0; i--) {
        const bf_butd_layer *l = &net->task_head[i];
        float *y = i == 0 ? net->td[core_top] : net->task_hidden;
        const float *w = net->task_data + l->w;
        BF_TRY(b->ops->linear_backward(b, &l->linear, NULL, w, x, y, NULL, NULL));
        BF_TRY(b->ops->relu_forward(b, y, y, (size_t)n * l->in_size));
        x = y;
    }
    /* Down the core: td[i] = ReLU(TD op of layer i (td[i+1])), for the levels above the image. */
    for (int i = core_top - 1; i >= 0; i--) {
        const bf_butd_layer *l = &net->layers[i];
        if (l->kind == BF_BUTD_BLOCK) { /* its inner level is gated too, even for the first block */
            BF_TRY(block_td(net, l, i, 0, 0));
            continue;
        }
        if (i == 0) break;
        bf_butd_norm *norm = l->norm[0];
        BF_TRY(td_op(net, l, 0, net->td[i + 1], norm ? net->scratch : net->td[i]));
        if (norm) BF_TRY(bf_butd_norm_td(net, norm, net->scratch, net->td[i]));
        BF_TRY(b->ops->relu_forward(b, net->td[i], net->td[i], (size_t)n * l->in_size));
    }
    /* A trained task head needs the gates' TD activity after the error pass overwrote td[]. */
    for (int l = 1; net->task_param >= 0 && l <= core_top; l++)
        BF_TRY(b->ops->copy(b, net->td_instruction[l], net->td[l], (size_t)n * net->layers[l - 1].out_size * sizeof(float)));
    return BF_OK;
}

/* Residual block, BU: u = ReLU(conv1 x) (GaLU with td_u), s = conv2 u + id(x), a = ReLU(s) (GaLU). */
static bf_status block_forward(bf_butd_net *net, const bf_butd_layer *l, int i) {
    bf_backend *b = net->backend;
    size_t nu = (size_t)net->batch * l->out_size;
    const float *x = net->act[i];
    float *y = net->act[i + 1];
    bf_butd_norm *n1 = l->norm[0], *n2 = l->norm[1], *nd = l->norm[2];
    BF_TRY(b->ops->conv2d_forward(b, &l->conv, x, param(net, net->param_data, l->w), NULL, n1 ? n1->z : l->u));
    if (n1) BF_TRY(bf_butd_norm_bu(net, n1, l->u));
    BF_TRY(b->ops->relu_forward(b, l->u, l->u, nu));
    if (net->opt.guided) BF_TRY(galu(b, l->u, l->td_u, nu));
    BF_TRY(b->ops->conv2d_forward(b, &l->conv2, l->u, param(net, net->param_data, l->w2), NULL, n2 ? n2->z : y));
    if (n2) BF_TRY(bf_butd_norm_bu(net, n2, y));
    if (l->has_down) {
        BF_TRY(b->ops->conv2d_forward(b, &l->down, x, param(net, net->param_data, l->wd), NULL,
                                      nd ? nd->z : net->scratch));
        if (nd) BF_TRY(bf_butd_norm_bu(net, nd, net->scratch));
        BF_TRY(b->ops->add_inplace(b, y, net->scratch, nu));
    } else {
        BF_TRY(b->ops->add_inplace(b, y, x, nu));
    }
    BF_TRY(b->ops->relu_forward(b, y, y, nu));
    if (net->opt.guided) BF_TRY(galu(b, y, net->td[i + 1], nu));
    return BF_OK;
}

/* Residual block, TD, from above = td[i+1]: td_u = conv2^T(above) then ReLU (instruction) or
 * x 1[u > 0] (error); below = conv1^T(td_u) + id^T(above), then ReLU or x 1[x > 0]. below may be
 * NULL (the image level: only td_u is needed). */
static bf_status block_td(bf_butd_net *net, const bf_butd_layer *l, int i, int error_pass, int use_bu_weight) {
    bf_backend *b = net->backend;
    size_t nu = (size_t)net->batch * l->out_size, nx = (size_t)net->batch * l->in_size;
    const float *above = net->td[i + 1];
    int own = !use_bu_weight && l->td_w >= 0;
    bf_butd_norm *n1 = l->norm[0], *n2 = l->norm[1], *nd = l->norm[2];
    if (n1 && error_pass && !td_norm_in_error_pass(net))
        return bf_error(BF_ERR_ARG, "butd: the error pass of a block with batch-norm is block_backprop");
    BF_TRY(b->ops->conv2d_backward_data(b, &l->conv2, above, param(net, net->param_data, own ? l->td_w2 : l->w2),
                                        n2 ? net->scratch : l->td_u));
    if (n2) BF_TRY(bf_butd_norm_td(net, n2, net->scratch, l->td_u));
    if (error_pass)
        BF_TRY(galu(b, l->td_u, l->u, nu));
    else
        BF_TRY(b->ops->relu_forward(b, l->td_u, l->td_u, nu));
    if (i == 0) return BF_OK;
    float *below = net->td[i];
    BF_TRY(b->ops->conv2d_backward_data(b, &l->conv, l->td_u, param(net, net->param_data, own ? l->td_w : l->w),
                                        n1 ? net->scratch : below));
    if (n1) BF_TRY(bf_butd_norm_td(net, n1, net->scratch, below));
    if (l->has_down) { /* no B of its own with downsample_always_shared: W then */
        int down_w = own && l->td_wd >= 0 ? l->td_wd : l->wd;
        BF_TRY(b->ops->conv2d_backward_data(b, &l->down, above, param(net, net->param_data, down_w), net->scratch));
        if (nd) BF_TRY(bf_butd_norm_td(net, nd, net->scratch, net->scratch2));
        BF_TRY(b->ops->add_inplace(b, below, nd ? net->scratch2 : net->scratch, nx));
    } else {
        BF_TRY(b->ops->add_inplace(b, below, above, nx));
    }
    if (error_pass) return galu(b, below, net->act[i], nx);
    return b->ops->relu_forward(b, below, below, nx);
}

bf_status bf_butd_forward(bf_butd_net *net, const float *x, const float **logits) {
    bf_backend *b = net->backend;
    int n = net->batch;
    net->act[0] = (float *)x;
    for (int i = 0; i < net->num_layers; i++) {
        const bf_butd_layer *l = &net->layers[i];
        const float *w = param(net, net->param_data, l->w), *bias = param(net, net->param_data, l->bias);
        float *y = net->act[i + 1];
        if (l->kind == BF_BUTD_BLOCK) {
            BF_TRY(block_forward(net, l, i));
            continue;
        }
        if (l->kind == BF_BUTD_CONV) {
            BF_TRY(b->ops->conv2d_forward(b, &l->conv, net->act[i], w, bias, l->norm[0] ? l->norm[0]->z : y));
            if (l->norm[0]) BF_TRY(bf_butd_norm_bu(net, l->norm[0], y));
        } else
            BF_TRY(b->ops->linear_forward(b, &l->linear, net->act[i], w, bias, y));
        size_t count = (size_t)n * l->out_size;
        if (l->relu) BF_TRY(b->ops->relu_forward(b, y, y, count));
        if (l->relu && net->task_param >= 0) /* ReLU(z) before its gate: the straight-through gradient's factor */
            BF_TRY(b->ops->copy(b, net->bu_ungated[i + 1], y, count * sizeof(float)));
        if (l->relu && net->opt.guided) BF_TRY(galu(b, y, net->td[i + 1], count));
    }
    *logits = net->act[net->num_layers];
    if (net->opt.multi_decoders) { /* each sample's own decoder */
        BF_TRY(b->ops->task_slice_gather(b, n, net->num_classes, net->opt.num_tasks, net->task_ids, *logits,
                                         net->logits));
        *logits = net->logits;
    }
    return BF_OK;
}

/* One N(1, std) draw per (weight, step): `which` is 2 * the weight's parameter index (+1 for its
 * separate TD weight). Box-Muller on the counter RNG. */
static float noise_factor(const bf_butd_net *net, int which) {
    uint64_t s = bf_seed_derive(bf_seed_derive((uint64_t)net->opt.seed, BF_STREAM_NOISE, net->step), 0x42757464u,
                                (uint64_t)which);
    float u1 = bf_uniform(s, 0), u2 = bf_uniform(s, 1);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return 1.0f + net->opt.noise_std * sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

/* Where the Counter-Hebb update writes B's mirror update: B's gradient, or nowhere under
 * feedback_alignment (B's gradient is then zeroed apart: B never moves). */
static float *mirror_target(const bf_butd_net *net, float *dtd) { return net->opt.feedback_alignment ? NULL : dtd; }

/* One conv's update: Counter-Hebb (mirror into dtd) or backprop (the weight gradient / n). */
static bf_status conv_update(bf_butd_net *net, const bf_conv2d_shape *s, const float *bu, const float *td, int w,
                             int td_w) {
    bf_backend *b = net->backend;
    float *dw = param(net, net->grad_data, w), *dtd = param(net, net->grad_data, td_w);
    size_t count = net->params[w].count;
    if (net->opt.learning == BF_BUTD_COUNTER_HEBB) {
        float *mirror = mirror_target(net, dtd);
        BF_TRY(b->ops->counter_hebb_conv2d(b, s, bu, td, dw, NULL, mirror));
        if (net->opt.noise_std > 0.0f) {
            BF_TRY(b->ops->scale(b, dw, noise_factor(net, 2 * w), count));
            if (mirror) BF_TRY(b->ops->scale(b, mirror, noise_factor(net, 2 * w + 1), count));
        }
        return dtd && !mirror ? b->ops->fill(b, dtd, 0.0f, count) : BF_OK;
    }
    BF_TRY(b->ops->conv2d_backward_filter(b, s, bu, td, dw, NULL));
    BF_TRY(b->ops->scale(b, dw, 1.0f / (float)net->batch, count));
    return dtd ? b->ops->fill(b, dtd, 0.0f, count) : BF_OK;
}

/* The update of layer i from the BU activity below (act[i]) and the TD activity above: td, the
 * activity at the conv or linear output (td[i+1], or the gradient behind its batch-norm); a block
 * reads td[i+1] and td_u itself. */
static bf_status layer_update(bf_butd_net *net, int i, const float *td) {
    bf_backend *b = net->backend;
    const bf_butd_layer *l = &net->layers[i];
    if (l->kind == BF_BUTD_BLOCK) { /* needs td_u: called after block_td */
        BF_TRY(conv_update(net, &l->conv2, l->u, net->td[i + 1], l->w2, l->td_w2));
        BF_TRY(conv_update(net, &l->conv, net->act[i], l->td_u, l->w, l->td_w));
        if (l->has_down) BF_TRY(conv_update(net, &l->down, net->act[i], net->td[i + 1], l->wd, l->td_wd));
        return BF_OK;
    }
    float *dw = param(net, net->grad_data, l->w), *db = param(net, net->grad_data, l->bias);
    float *dtd = param(net, net->grad_data, l->td_w);
    const float *bu = net->act[i];
    int n = net->batch;
    if (net->opt.learning == BF_BUTD_COUNTER_HEBB) {
        float *mirror = mirror_target(net, dtd);
        if (l->kind == BF_BUTD_CONV)
            BF_TRY(b->ops->counter_hebb_conv2d(b, &l->conv, bu, td, dw, db, mirror));
        else
            BF_TRY(b->ops->counter_hebb_linear(b, &l->linear, bu, td, dw, db, mirror));
        if (net->opt.noise_std > 0.0f) {
            /* AddNoise: W and B each get their own scalar; the bias's update is left as it is, as
             * the reference's counter_hebbian_update_value leaves bias.grad */
            const bf_param *pw = &net->params[l->w];
            BF_TRY(b->ops->scale(b, dw, noise_factor(net, 2 * l->w), pw->count));
            if (mirror) BF_TRY(b->ops->scale(b, mirror, noise_factor(net, 2 * l->w + 1), pw->count));
        }
        return dtd && !mirror ? b->ops->fill(b, dtd, 0.0f, net->params[l->td_w].count) : BF_OK;
    }
    /* Backprop: the engine's weight-gradient ops, then 1/n for the batch-mean loss. B gets nothing. */
    if (l->kind == BF_BUTD_CONV)
        BF_TRY(b->ops->conv2d_backward_filter(b, &l->conv, bu, td, dw, db));
    else
        BF_TRY(b->ops->linear_backward(b, &l->linear, bu, param(net, net->param_data, l->w), td, NULL, dw, db));
    BF_TRY(b->ops->scale(b, dw, 1.0f / (float)n, net->params[l->w].count));
    if (db) BF_TRY(b->ops->scale(b, db, 1.0f / (float)n, net->params[l->bias].count));
    if (dtd) BF_TRY(b->ops->fill(b, dtd, 0.0f, net->params[l->td_w].count));
    return BF_OK;
}

/* The error pass through a residual block with batch-norm, exact (learning = backprop, or
 * counter_hebb with ch_bn = exact): the gradient at each conv's output passes its batch-norm first
 * (into scratch2: gamma's and beta's gradients are written there), then the update and the
 * transposed conv follow as without it, the latter through W (use_bu_weight, or shared weights) or
 * the separate B. */
static bf_status block_backprop(bf_butd_net *net, const bf_butd_layer *l, int i, int use_bu_weight) {
    bf_backend *b = net->backend;
    size_t nu = (size_t)net->batch * l->out_size, nx = (size_t)net->batch * l->in_size;
    const float *above = net->td[i + 1], *x = net->act[i];
    float *dz = net->scratch2, *below = i > 0 ? net->td[i] : NULL;
    int own = !use_bu_weight && l->td_w >= 0;
    int down_w = own && l->td_wd >= 0 ? l->td_wd : l->wd; /* downsample_always_shared: no B of its own */
    BF_TRY(bf_butd_norm_backward(net, l->norm[1], above, dz));
    BF_TRY(conv_update(net, &l->conv2, l->u, dz, l->w2, l->td_w2));
    BF_TRY(b->ops->conv2d_backward_data(b, &l->conv2, dz, param(net, net->param_data, own ? l->td_w2 : l->w2),
                                        l->td_u));
    BF_TRY(galu(b, l->td_u, l->u, nu));
    BF_TRY(bf_butd_norm_backward(net, l->norm[0], l->td_u, dz));
    BF_TRY(conv_update(net, &l->conv, x, dz, l->w, l->td_w));
    if (below)
        BF_TRY(b->ops->conv2d_backward_data(b, &l->conv, dz, param(net, net->param_data, own ? l->td_w : l->w), below));
    if (l->has_down) {
        BF_TRY(bf_butd_norm_backward(net, l->norm[2], above, dz));
        BF_TRY(conv_update(net, &l->down, x, dz, l->wd, l->td_wd));
        if (below) {
            BF_TRY(b->ops->conv2d_backward_data(b, &l->down, dz, param(net, net->param_data, down_w), net->scratch));
            BF_TRY(b->ops->add_inplace(b, below, net->scratch, nx));
        }
    } else if (below) {
        BF_TRY(b->ops->add_inplace(b, below, above, nx));
    }
    return below ? galu(b, below, x, nx) : BF_OK;
}

bf_status bf_butd_backward(bf_butd_net *net, const float *dlogits) {
    bf_backend *b = net->backend;
    int L = net->num_layers, n = net->batch;
    if (net->opt.multi_decoders) /* the other tasks' decoders get no error */
        BF_TRY(b->ops->task_slice_scatter(b, n, net->num_classes, net->opt.num_tasks, net->task_ids, dlogits,
                                          net->td[L]));
    else
        BF_TRY(b->ops->copy(b, net->td[L], dlogits, (size_t)n * net->layers[L - 1].out_size * sizeof(float)));
    int bu_weights = net->opt.learning == BF_BUTD_BACKPROP;
    int td_norm = td_norm_in_error_pass(net); /* ch_bn = independent: the TD copies, no batch-norm update */
    if (td_norm) BF_TRY(bf_butd_norm_zero_grads(net));
    for (int i = L - 1; i >= 0; i--) {
        const bf_butd_layer *l = &net->layers[i];
        if (l->kind == BF_BUTD_BLOCK && l->norm[0] && !td_norm) {
            BF_TRY(block_backprop(net, l, i, bu_weights));
            continue;
        }
        if (l->kind == BF_BUTD_BLOCK) { /* the TD pass inside the block first: conv1's update reads td_u */
            BF_TRY(block_td(net, l, i, 1, bu_weights));
            BF_TRY(layer_update(net, i, NULL));
            continue;
        }
        const float *delta = net->td[i + 1]; /* at the layer's output; behind its batch-norm if any */
        bf_butd_norm *td_copy = td_norm ? l->norm[0] : NULL; /* normalises the transposed op's output */
        if (l->norm[0] && !td_norm) {
            BF_TRY(bf_butd_norm_backward(net, l->norm[0], delta, net->scratch2));
            delta = net->scratch2;
        }
        BF_TRY(layer_update(net, i, delta));
        if (i == 0) break; /* the TD activity at the image level is not used */
        BF_TRY(td_op(net, l, bu_weights, delta, td_copy ? net->scratch : net->td[i]));
        if (td_copy) BF_TRY(bf_butd_norm_td(net, td_copy, net->scratch, net->td[i]));
        /* dL/da before the gate, times ReLU(z): the gate's straight-through gradient (trained task head). */
        if (net->task_param >= 0)
            BF_TRY(b->ops->mul(b, net->td[i], net->bu_ungated[i], net->gate_grad[i], (size_t)n * l->in_size));
        /* Bias blocked; GaLU against the BU counter activity: 1[a > 0] is ReLU' times the attention gate. */
        BF_TRY(galu(b, net->td[i], net->act[i], (size_t)n * l->in_size));
    }
    if (net->task_param >= 0) BF_TRY(bf_butd_task_head_backward(net));
    net->step++;
    return BF_OK;
}
