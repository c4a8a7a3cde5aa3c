/* layer_flex.c - the flex layer (FlexNet's Flex2D, ../shared/specs/flexnet.md section 1):
 *   C  = conv(x)                      cuDNN / im2col, like a conv layer
 *   P  = maxpool(x), same window      padding never wins a max
 *   channelwise_max:  y = max(C, widen(P))
 *   mask:             L = widen(P) - T, [L = BN(L)], M = mask(L), y = widen(P)(1-M) + C M
 * The channel-wise max runs fused (ops.h flex_pool_max_*): the conv writes C into the layer's
 * output (without its bias under [model] fold_conv_bias: the op adds it as it reads C, and the
 * backward's route sums its gradient), one op turns it into y in place computing P on the fly, and
 * the layer keeps only a byte per pooled element (where its window's maximum was) and two bits per
 * output element (conv won or tied; tied) for the backward, which routes dy to dC and scatters the
 * pool's share into dx in one pass (EXPAND, [model] fuse_flex_scatter; the conv's backward-data then
 * adds its part), or routes dy to dC and dP in one pass over dy alone and scatters dP into dx after
 * the conv's backward-data. With [model] fuse_flex_bn the batch-norm after the layer took only its
 * sums (layers.c), and the route-and-scatter computes its dx from its output gradient (this layer's
 * dout, the pair's one buffer) and input (this layer's y) as it reads them
 * (flex_pool_max_backward_scatter_bn), or, where the layer's input needs no gradient, the route
 * alone does (flex_pool_max_backward_bn).
 * The mask joint keeps C, the same window bytes and (with batch-norm on the logits) their batch
 * statistics: P goes to the layer's forward scratch, and
 * one fused op each way (ops.h flex_mask_joint_*) computes P~, L, M and y, or M again and the
 * gradients, without storing them; with batch-norm the raw and normalised L are in the scratch
 * too, computed again in the backward (logits_again) into the backward scratch, which also holds
 * dC, dP and the mask path's gradients. Both scratches are the layer's own, placed by the memory
 * plan (memory_plan.c) over activations not yet written (forward) or already dead (backward):
 * the first layers' scratch, the largest, then costs nothing, where one region for all layers
 * held six of the first layer's conv outputs all the time. Monitors (conv wins, or the mask sum) are
 * summed on the device in training mode and read by bf_model_flex_monitor at log intervals. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "bioflex/hash.h"

#include "layers.h"
#include "sync_bn.h"

static size_t branch_floats(const bf_layer *l) { return (size_t)l->flex.n * l->flex.c_out * l->flex.hw; }
static size_t pooled_floats(const bf_layer *l) { return (size_t)l->flex.n * l->flex.c_in * l->flex.hw; }
static int is_mask(const bf_layer *l) { return l->flex_opt.joint == BF_FLEX_JOINT_MASK; }
/* Mask joint with spatial-attention logits: they are the layer's second input (model.h). */
static int has_attention(const bf_layer *l) { return is_mask(l) && l->num_inputs == 2; }

static size_t winner_words(const bf_layer *l) { return (branch_floats(l) + 31) / 32; }

size_t bf_flex_arena_bytes(const bf_layer *l) {
    size_t bytes = bf_arena_align(4 * sizeof(float)); /* monitors */
    if (!is_mask(l))
        return bytes + bf_arena_align(pooled_floats(l)) /* window bytes */
               + 2 * bf_arena_align(winner_words(l) * sizeof(uint32_t)); /* winners and ties */
    if (!l->flex_conv_recomputed) bytes += bf_arena_align(branch_floats(l) * sizeof(float)); /* C */
    bytes += bf_arena_align(pooled_floats(l));                                               /* window bytes */
    if (l->flex_opt.logits_bn) bytes += 2 * bf_arena_align((size_t)l->flex.c_out * sizeof(float)); /* saved stats */
    return bytes;
}

static float *take(char **cursor, size_t bytes) {
    float *p = (float *)*cursor;
    *cursor += bf_arena_align(bytes);
    return p;
}

char *bf_flex_place(bf_layer *l, char *cursor) {
    l->flex_stats = take(&cursor, 4 * sizeof(float));
    l->flex_window = (uint8_t *)take(&cursor, pooled_floats(l));
    if (!is_mask(l)) {
        l->flex_winners = (uint32_t *)take(&cursor, winner_words(l) * sizeof(uint32_t));
        l->flex_ties = (uint32_t *)take(&cursor, winner_words(l) * sizeof(uint32_t));
        return cursor;
    }
    l->flex_conv = l->flex_conv_recomputed ? NULL : take(&cursor, branch_floats(l) * sizeof(float));
    if (l->flex_opt.logits_bn) {
        l->save_mean = take(&cursor, (size_t)l->flex.c_out * sizeof(float));
        l->save_invstd = take(&cursor, (size_t)l->flex.c_out * sizeof(float));
    }
    return cursor;
}

/* The max joint's dC overwrites dy under EXPAND (ops.h allows it there): dy is a gradient buffer that
 * nothing reads after this backward, except in the last layer, where it is the caller's dlogits; and
 * except under the sliding-window kernels, whose route reads dy across items (flex_dconv_apart). */
static int dconv_in_place(const bf_model *m, int index) {
    const bf_layer *l = &m->layers[index];
    return !is_mask(l) && l->flex_opt.channels == BF_FLEX_CHANNELS_EXPAND && index != m->num_layers - 1 &&
           !l->flex_dconv_apart;
}

/* The mask joint's forward scratch (mask_scratch_at): P; with batch-norm on the logits P~, L and
 * the normalised L (with spatial-attention logits, the normalised L alone: L is the input); with the
 * conv recomputed, C. */
static size_t mask_forward_floats(const bf_layer *l) {
    const size_t logits_bn = !l->flex_opt.logits_bn ? 0 : has_attention(l) ? 1 : 3;
    return pooled_floats(l) + logits_bn * branch_floats(l) + (l->flex_conv_recomputed ? branch_floats(l) : 0);
}

size_t bf_flex_forward_scratch_floats(const bf_model *m, int index) {
    const bf_layer *l = &m->layers[index];
    return l->kind == BF_LAYER_FLEX && is_mask(l) ? mask_forward_floats(l) : 0;
}

/* Whether the max joint's backward routes and scatters in one op (the model's fuse_flex_scatter;
 * EXPAND only: flex_pool_max_backward_scatter), so that dP is never stored. */
static int route_scatter(const bf_model *m, const bf_layer *l) {
    return m->fuse_flex_scatter && !is_mask(l) && l->flex_opt.channels == BF_FLEX_CHANNELS_EXPAND;
}

size_t bf_flex_backward_scratch_floats(const bf_model *m, int index) {
    const bf_layer *l = &m->layers[index];
    if (l->kind != BF_LAYER_FLEX) return 0;
    if (has_attention(l)) /* the forward's buffers again, then dC, dL (post-BN), dP, [dL (pre-BN)] */
        return mask_forward_floats(l) + (l->flex_opt.logits_bn ? 3 : 2) * branch_floats(l) + pooled_floats(l);
    if (is_mask(l)) /* the forward's buffers again, then dC, dL (post-BN), dP, [dP of the logits] */
        return mask_forward_floats(l) + 2 * branch_floats(l) + pooled_floats(l) +
               (l->flex_opt.logits_bn ? pooled_floats(l) : 0);
    return (dconv_in_place(m, index) ? 0 : branch_floats(l)) + (route_scatter(m, l) ? 0 : pooled_floats(l)); /* [dC,] [dP] */
}

/* The mask joint's P (and, with batch-norm on the logits, P~, the raw and the normalised L) live
 * in the layer's forward scratch: the forward computes them there, and the backward computes them
 * again into the same places of its backward scratch from x, the window bytes, T and the saved
 * batch statistics (the same ops on the same inputs: the same bits) rather than keeping them. The
 * fused joint ops take M from L and the step's seed each time. The gradients follow in the backward
 * scratch; dL (post-BN) takes P~'s place, dead once L is computed. The batch-norm buffers are NULL
 * without it, the gradients in the forward's layout. With spatial-attention logits L is the layer's
 * second input (logits points there), and dL (pre-BN) has a place of its own after dP, used when
 * that input needs no gradient. */
typedef struct mask_scratch {
    float *pooled, *dconv, *dlogits_used, *dpooled;                 /* every mask layer */
    float *widened, *logits, *logits_bn, *dlogits, *dpooled_logits; /* batch-norm on the logits */
    float *conv;               /* C: the layer's own (kept), or the scratch's ([model] flex_recompute_conv) */
} mask_scratch;

static mask_scratch mask_scratch_at(const bf_model *m, const bf_layer *l, float *base, int with_gradients) {
    const size_t branch = (size_t)bf_layer_batch(m, l) * l->flex.c_out * l->flex.hw;
    const size_t pooled = (size_t)bf_layer_batch(m, l) * l->flex.c_in * l->flex.hw;
    mask_scratch w = {0};
    w.pooled = base;
    float *end = w.pooled + pooled;
    const int attention = has_attention(l);
    if (attention) w.logits = (float *)bf_layer_input(m, l, 1); /* read, never written */
    if (l->flex_opt.logits_bn && !attention) {
        w.widened = end;
        w.logits = w.widened + branch;
        end = w.logits + branch;
    }
    if (l->flex_opt.logits_bn) w.logits_bn = end, end += branch;
    w.conv = l->flex_conv;
    if (l->flex_conv_recomputed) w.conv = end, end += branch;
    if (!with_gradients) return w;
    w.dconv = end;
    w.dlogits_used = w.dconv + branch;
    w.dpooled = w.dlogits_used + branch;
    if (l->flex_opt.logits_bn && attention) w.dlogits = w.dpooled + pooled;
    else if (l->flex_opt.logits_bn) w.dlogits = w.widened, w.dpooled_logits = w.dpooled + pooled;
    return w;
}

static float *buffer(const bf_model *m, const bf_layer *l, int slot) {
    return l->buffer_index[slot] < 0 ? NULL : m->buffer_data + m->buffers[l->buffer_index[slot]].offset;
}

/* The threshold is a parameter when learned, a buffer when frozen. */
static const float *threshold(const bf_model *m, const bf_layer *l) {
    return l->param_index[2] >= 0 ? bf_layer_param(m, l, 2) : buffer(m, l, 2);
}

/* The layer's shapes at the current batch size. */
static void current_shapes(const bf_model *m, const bf_layer *l, bf_conv2d_shape *cs, bf_pool_shape *ps,
                           bf_flex_shape *fs, bf_bn_shape *bs) {
    *cs = l->conv;
    *ps = l->pool;
    *fs = l->flex;
    *bs = l->bn;
    cs->n = ps->n = fs->n = bs->n = bf_layer_batch(m, l);
}

bf_status bf_flex_forward(bf_model *m, int index) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const float *x = bf_layer_input(m, l, 0);
    bf_conv2d_shape cs;
    bf_pool_shape ps;
    bf_flex_shape fs;
    bf_bn_shape bs;
    current_shapes(m, l, &cs, &ps, &fs, &bs);
    float *stats = m->training ? l->flex_stats : NULL;
    if (!is_mask(l)) { /* C straight into the output, turned into y in place */
        /* [model] fold_conv_bias: the joint adds the conv's bias as it reads C, a pass fewer */
        const float *bias = bf_layer_param(m, l, 1), *joint_bias = m->fold_conv_bias ? bias : NULL;
        if (!bf_flex_has_conv(l)) { /* a static pool site: a conv that never wins, so y is the widened pool */
            BF_TRY(ops->fill(b, l->out, -FLT_MAX, (size_t)fs.n * fs.c_out * fs.hw));
        } else {
            BF_TRY(ops->conv2d_forward(b, &cs, x, bf_layer_param(m, l, 0), joint_bias ? NULL : bias, l->out));
            if (m->on_flex_conv) BF_TRY(m->on_flex_conv(m->on_layer_forward_ctx, m, index, l->out));
        }
        if (m->training && l->flex_gives_bn_stats && !m->sync_sums) { /* and the next batch-norm's statistics */
            bf_layer *bn = &m->layers[index + 1];
            bf_bn_shape bns = bn->bn;
            bns.n = bf_layer_batch(m, bn);
            return ops->flex_pool_max_forward_bn_stats(b, &ps, &fs, &bns, x, joint_bias, l->out, l->flex_window,
                                                       l->flex_winners, l->flex_ties, stats, bn->save_mean,
                                                       bn->save_invstd, buffer(m, bn, 0), buffer(m, bn, 1));
        }
        return ops->flex_pool_max_forward(b, &ps, &fs, x, joint_bias, l->out, l->flex_window, l->flex_winners,
                                          l->flex_ties, stats);
    }
    const mask_scratch w = mask_scratch_at(m, l, l->fwd_scratch, 0);
    BF_TRY(ops->conv2d_forward(b, &cs, x, bf_layer_param(m, l, 0), bf_layer_param(m, l, 1), w.conv));
    if (m->on_flex_conv) BF_TRY(m->on_flex_conv(m->on_layer_forward_ctx, m, index, w.conv));
    BF_TRY(ops->flex_pool_forward(b, &ps, &fs, x, w.pooled, l->flex_window));
    if (l->flex_opt.threshold_mode == BF_THRESHOLD_RESAMPLE && !has_attention(l)) {
        /* PlasticFlex re-draws its threshold with kaiming_uniform_ on every forward pass: one for a
         * training step's whole global batch (every rank draws it), one per evaluation batch (keyed
         * by its first sample, so its score depends on the evaluation's batches, as the reference's) */
        float bound = sqrtf(6.0f / (float)((size_t)l->flex.c_out * l->flex.hw));
        uint64_t seed = bf_layer_step_seed(m, index, BF_STREAM_THRESHOLD); /* by name: any layout draws it */
        if (!m->training) seed = bf_seed_derive(seed, BF_STREAM_THRESHOLD, m->sample_offset);
        BF_TRY(ops->fill_uniform(b, buffer(m, l, 2), (size_t)l->flex.c_out * l->flex.hw, -bound, bound, seed));
    }
    /* without batch-norm the joint takes L = P~ - T itself, or the spatial-attention block's output */
    const float *logits = has_attention(l) ? w.logits : NULL;
    if (l->flex_opt.logits_bn) {
        if (!has_attention(l)) {
            BF_TRY(ops->flex_widen_forward(b, &fs, w.pooled, w.widened));
            BF_TRY(ops->flex_logits_forward(b, &fs, w.widened, threshold(m, l), w.logits));
        }
        bf_bn_sync sync = bf_model_bn_sync(m);
        if (m->training && m->sync_sums) /* [run] sync_bn: the logits' statistics over every rank's batch */
            BF_TRY(bf_sync_bn_forward_train(&sync, &bs, w.logits, bf_layer_param(m, l, 3), bf_layer_param(m, l, 4), w.logits_bn,
                                            l->save_mean, l->save_invstd, buffer(m, l, 0), buffer(m, l, 1)));
        else if (m->training)
            BF_TRY(ops->batchnorm_forward_train(b, &bs, w.logits, bf_layer_param(m, l, 3), bf_layer_param(m, l, 4), w.logits_bn,
                                                l->save_mean, l->save_invstd, buffer(m, l, 0), buffer(m, l, 1)));
        else
            BF_TRY(ops->batchnorm_forward_eval(b, &bs, w.logits, bf_layer_param(m, l, 3), bf_layer_param(m, l, 4), buffer(m, l, 0),
                                               buffer(m, l, 1), w.logits_bn));
        logits = w.logits_bn;
    }
    /* the routing statistics of this batch's mask, which nothing keeps, for a monitor due after it */
    float *routing = m->training && m->flex_monitor_due ? l->flex_stats + 1 : NULL;
    return ops->flex_mask_joint_forward(b, &fs, l->flex_opt.mask, l->flex_opt.mask_factor,
                                        bf_layer_draws(m, index), w.pooled, threshold(m, l), logits,
                                        w.conv, l->out, stats, routing);
}

/* P, and with batch-norm P~, the raw and the normalised L, in the scratch again as the forward
 * computed them: for the backward, before the optimiser changes T, gamma and beta. *logits = the
 * logits the joint takes (NULL: it computes P~ - T itself; spatial attention: the input's, or their
 * normalised copy). */
static bf_status logits_again(bf_model *m, int index, const mask_scratch *w, const float **logits) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    bf_conv2d_shape cs;
    bf_pool_shape ps;
    bf_flex_shape fs;
    bf_bn_shape bs;
    current_shapes(m, l, &cs, &ps, &fs, &bs);
    BF_TRY(ops->flex_pool_gather(b, &ps, &fs, bf_layer_input(m, l, 0), l->flex_window, w->pooled));
    *logits = has_attention(l) ? w->logits : NULL;
    if (!l->flex_opt.logits_bn) return BF_OK;
    if (!has_attention(l)) {
        BF_TRY(ops->flex_widen_forward(b, &fs, w->pooled, w->widened));
        BF_TRY(ops->flex_logits_forward(b, &fs, w->widened, threshold(m, l), w->logits));
    }
    /* normalised with the statistics the training forward saved, or as the evaluation's was */
    if (!m->training)
        BF_TRY(ops->batchnorm_forward_eval(b, &bs, w->logits, bf_layer_param(m, l, 3), bf_layer_param(m, l, 4),
                                           buffer(m, l, 0), buffer(m, l, 1), w->logits_bn));
    else
        BF_TRY(ops->batchnorm_forward_saved(b, &bs, w->logits, bf_layer_param(m, l, 3), bf_layer_param(m, l, 4),
                                            l->save_mean, l->save_invstd, w->logits_bn));
    *logits = w->logits_bn;
    return BF_OK;
}

/* The batch-norm after flex layer index, as a route that applies its dx takes it (flex_applies_bn). */
static bf_bn_grad next_bn_grad(const bf_model *m, int index) {
    const bf_layer *bn = &m->layers[index + 1];
    const bf_bn_grad g = {bn->relu_fused, bn->save_mean, bn->save_invstd, bf_layer_param(m, bn, 0),
                          bf_layer_param(m, bn, 1), bn->bn_coef};
    return g;
}

bf_status bf_flex_backward(bf_model *m, int index, float *dx, float *dlogits_in) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const float *x = bf_layer_input(m, l, 0);
    bf_conv2d_shape cs;
    bf_pool_shape ps;
    bf_flex_shape fs;
    bf_bn_shape bs;
    current_shapes(m, l, &cs, &ps, &fs, &bs);
    if (!is_mask(l)) { /* the winners and ties bits route dy; the window bytes scatter the pool's share */
        /* the scratch holds [dC (unless over dy),] [dP (unless scattered in the route)]: it may be empty */
        const int in_place = dconv_in_place(m, index);
        float *dconv = in_place ? l->dout : l->bwd_scratch;
        /* [model] fold_conv_bias: a route that applies or scatters sums the bias gradient as it writes dconv */
        const int param_grads = bf_layer_param_grads(m, l);
        float *dbias = bf_layer_grad(m, l, 1), *route_dbias = m->fold_conv_bias && param_grads ? dbias : NULL;
        if (dx && route_scatter(m, l)) { /* dx = the pool's share, then the conv's part added */
            if (l->flex_applies_bn && !m->sync_sums) { /* dy: the next batch-norm's dx, from its dy as read */
                const bf_bn_grad g = next_bn_grad(m, index);
                BF_TRY(ops->flex_pool_max_backward_scatter_bn(b, &ps, &fs, &g, l->flex_window, l->flex_winners,
                                                              l->flex_ties, l->out, l->dout, dconv, dx, route_dbias));
            } else {
                BF_TRY(ops->flex_pool_max_backward_scatter(b, &ps, &fs, l->flex_window, l->flex_winners,
                                                           l->flex_ties, l->dout, dconv, dx, route_dbias));
            }
            if (!bf_flex_has_conv(l)) return BF_OK; /* a static pool site: dx is the pool's share alone */
            if (param_grads) /* evaluation (input_gradient): parameter gradients only when asked */
                BF_TRY(ops->conv2d_backward_filter(b, &cs, x, dconv, bf_layer_grad(m, l, 0), route_dbias ? NULL : dbias));
            return ops->conv2d_backward_data_add(b, &cs, dconv, bf_layer_param(m, l, 0), dx);
        }
        float *dpooled = !dx ? NULL : in_place ? l->bwd_scratch : l->bwd_scratch + (size_t)fs.n * fs.c_out * fs.hw;
        if (!dx && l->flex_applies_bn && !m->sync_sums) { /* no input gradient: the route alone, applying the dx */
            const bf_bn_grad g = next_bn_grad(m, index);
            BF_TRY(ops->flex_pool_max_backward_bn(b, &ps, &fs, &g, l->flex_winners, l->flex_ties, l->out, l->dout,
                                                  dconv, route_dbias));
        } else {
            route_dbias = NULL;
            BF_TRY(ops->flex_pool_max_backward(b, &ps, &fs, l->flex_winners, l->flex_ties, l->dout, dconv, dpooled));
        }
        if (!bf_flex_has_conv(l)) { /* a static pool site: its dx is the pool's share alone */
            if (!dx) return BF_OK;
            BF_TRY(ops->fill(b, dx, 0.0f, (size_t)fs.n * fs.c_in * (size_t)cs.h_in * cs.w_in));
            return ops->flex_pool_scatter_add(b, &ps, &fs, l->flex_window, dpooled, dx);
        }
        if (param_grads) BF_TRY(ops->conv2d_backward_filter(b, &cs, x, dconv, bf_layer_grad(m, l, 0), route_dbias ? NULL : dbias));
        if (!dx) return BF_OK;
        BF_TRY(ops->conv2d_backward_data(b, &cs, dconv, bf_layer_param(m, l, 0), dx));
        return ops->flex_pool_scatter_add(b, &ps, &fs, l->flex_window, dpooled, dx);
    }
    const mask_scratch w = mask_scratch_at(m, l, l->bwd_scratch, 1);
    if (l->flex_conv_recomputed) /* C again, as the forward computed it: the same op on the same inputs */
        BF_TRY(ops->conv2d_forward(b, &cs, x, bf_layer_param(m, l, 0), bf_layer_param(m, l, 1), w.conv));
    const float *logits;
    BF_TRY(logits_again(m, index, &w, &logits));
    /* spatial attention: the gradient of the raw logits goes to the block (dlogits_in), where they
     * are the joint's own (no batch-norm), else from the batch-norm's backward below */
    const int attention = has_attention(l);
    float *raw_dlogits = attention ? (dlogits_in ? dlogits_in : l->flex_opt.logits_bn ? w.dlogits : w.dlogits_used) : w.dlogits;
    float *joint_dlogits = attention && !l->flex_opt.logits_bn ? raw_dlogits : w.dlogits_used;
    BF_TRY(ops->flex_mask_joint_backward(b, &fs, l->flex_opt.mask, l->flex_opt.mask_factor,
                                         bf_layer_draws(m, index), w.pooled, threshold(m, l), logits,
                                         w.conv, l->dout, w.dconv, joint_dlogits, dx ? w.dpooled : NULL));
    const float *dlogits = joint_dlogits; /* the gradient of L (P~ - T, or the block's output) */
    if (l->flex_opt.logits_bn) {
        bf_bn_sync sync = bf_model_bn_sync(m);
        if (!m->training) { /* evaluation (input_gradient): the running statistics' affine map, as layers.c */
            if (m->eval_parameter_gradients)
                BF_TRY(bf_batchnorm_eval_param_grads(m, &bs, w.logits, w.dlogits_used, buffer(m, l, 0), buffer(m, l, 1),
                                                     bf_layer_grad(m, l, 3), bf_layer_grad(m, l, 4)));
            BF_TRY(bf_batchnorm_eval_backward(m, &bs, w.dlogits_used, bf_layer_param(m, l, 3), buffer(m, l, 1), raw_dlogits));
        } else if (m->sync_sums)
            BF_TRY(bf_sync_bn_backward(&sync, &bs, w.logits, w.dlogits_used, bf_layer_param(m, l, 3), l->save_mean,
                                       l->save_invstd, raw_dlogits, bf_layer_grad(m, l, 3), bf_layer_grad(m, l, 4)));
        else
            BF_TRY(ops->batchnorm_backward(b, &bs, w.logits, w.dlogits_used, bf_layer_param(m, l, 3), l->save_mean,
                                           l->save_invstd, raw_dlogits, bf_layer_grad(m, l, 3), bf_layer_grad(m, l, 4)));
        dlogits = raw_dlogits;
        if (dx && !attention) { /* the joint folded back only dy (1 - M): the raw logits' gradient reaches P too */
            BF_TRY(ops->flex_widen_backward(b, &fs, dlogits, w.dpooled_logits));
            BF_TRY(ops->add_inplace(b, w.dpooled, w.dpooled_logits, (size_t)fs.n * fs.c_in * fs.hw));
        }
    }
    const int param_grads = bf_layer_param_grads(m, l);
    if (param_grads && l->param_index[2] >= 0) BF_TRY(ops->flex_threshold_backward(b, &fs, dlogits, bf_layer_grad(m, l, 2)));
    if (param_grads) BF_TRY(ops->conv2d_backward_filter(b, &cs, x, w.dconv, bf_layer_grad(m, l, 0), bf_layer_grad(m, l, 1)));
    if (!dx) return BF_OK;
    BF_TRY(ops->conv2d_backward_data(b, &cs, w.dconv, bf_layer_param(m, l, 0), dx));
    return ops->flex_pool_scatter_add(b, &ps, &fs, l->flex_window, w.dpooled, dx);
}

/* Channel-wise max: the fraction of elements where the conv won, summed on the device over the
 * interval; its routing is binary by construction, so its homogeneity is 1 (flexnet.md section 6
 * notes the reference logs 0 there because its monitor never runs). Mask joint: as the reference,
 * the fraction of mask entries > 0.5 and the mean |M - 0.5| * 2 of the last training batch. */
int bf_model_flex_monitor(bf_model *m, double *ratio, double *homogeneity, const char **names, int max) {
    int count = 0;
    for (int i = 0; i < m->num_layers && count < max; i++) {
        bf_layer *l = &m->layers[i];
        if (l->kind != BF_LAYER_FLEX) continue;
        float stats[3] = {0, 0, 0};
        double elements;
        if (is_mask(l)) {
            elements = (double)bf_layer_batch(m, l) * l->flex.c_out * l->flex.hw;
            if (m->flex_samples > 0) bf_to_host(m->backend, stats, l->flex_stats, 3 * sizeof(float));
            ratio[count] = elements > 0 ? stats[1] / elements : 0;
            homogeneity[count] = elements > 0 ? stats[2] / elements : 0;
        } else {
            if (bf_to_host(m->backend, stats, l->flex_stats, sizeof(float)) != BF_OK) stats[0] = 0;
            elements = m->flex_samples * l->time_steps * l->flex.c_out * l->flex.hw;
            ratio[count] = elements > 0 ? stats[0] / elements : 0;
            homogeneity[count] = 1.0;
        }
        names[count] = l->name;
        m->backend->ops->fill(m->backend, l->flex_stats, 0.0f, 1);
        count++;
    }
    m->flex_samples = 0;
    return count;
}
