/* optimizer.c - SGD, Adam and AdamW over the model's flat parameter buffer: the update is one op
 * (one fused kernel on CUDA), and the state is one buffer that checkpoints write in one piece.
 * [optim] train_only restricts the update to some ranges of it: one op per range. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/train.h"

size_t bf_optimizer_state_floats(const bf_optimizer *o) {
    return o->kind == BF_OPTIM_ADAMW || o->kind == BF_OPTIM_ADAM ? 2 * o->n : o->n;
}

bf_status bf_optimizer_create(bf_backend *b, const bf_optim_config *cfg, size_t num_params, bf_optimizer **out) {
    bf_optimizer *o = calloc(1, sizeof *o);
    if (!o) return bf_error(BF_ERR_OOM, "optimizer: out of host memory");
    o->kind = cfg->optimizer;
    o->cfg = *cfg;
    o->n = num_params;
    size_t floats = bf_optimizer_state_floats(o);
    bf_status s = bf_alloc(b, (floats ? floats : 1) * sizeof(float), (void **)&o->state);
    if (s != BF_OK) {
        free(o);
        return bf_error_context(s, "optimizer state (%zu floats)", floats);
    }
    *out = o;
    return BF_OK;
}

void bf_optimizer_destroy(bf_backend *b, bf_optimizer *o) {
    if (!o) return;
    bf_free(b, o->state);
    free(o->ranges);
    free(o);
}

bf_status bf_optimizer_restrict(bf_optimizer *o, const size_t *ranges, int num_ranges) {
    free(o->ranges);
    o->ranges = NULL;
    o->num_ranges = 0;
    if (num_ranges <= 0) return BF_OK;
    for (int k = 0; k < num_ranges; k++)
        if (ranges[2 * k] + ranges[2 * k + 1] > o->n)
            return bf_error(BF_ERR_ARG, "optimizer: range %zu+%zu past its %zu parameters", ranges[2 * k],
                            ranges[2 * k + 1], o->n);
    if (!(o->ranges = malloc(2 * (size_t)num_ranges * sizeof *o->ranges)))
        return bf_error(BF_ERR_OOM, "optimizer: out of host memory");
    memcpy(o->ranges, ranges, 2 * (size_t)num_ranges * sizeof *o->ranges);
    o->num_ranges = num_ranges;
    return BF_OK;
}

/* The update of count parameters from offset on (the whole buffer, or one range of it): the ops work
 * elementwise, so a slice of the parameters, gradients and state is updated as in the whole. */
static bf_status update(bf_backend *b, bf_optimizer *o, float *params, const float *grads, float lr,
                        const float *grad_scale, size_t offset, size_t count) {
    const bf_optim_config *c = &o->cfg;
    if (o->kind == BF_OPTIM_ADAMW || o->kind == BF_OPTIM_ADAM) /* one op: decoupled or coupled weight decay */
        return b->ops->adam_update(b, params + offset, grads + offset, o->state + offset, o->state + o->n + offset,
                                   count, lr, c->beta1, c->beta2, c->eps, c->weight_decay, o->kind == BF_OPTIM_ADAMW,
                                   o->steps + 1, grad_scale);
    return b->ops->sgd_update(b, params + offset, grads + offset, o->state + offset, count, lr, c->momentum,
                              c->weight_decay, c->nesterov, o->steps == 0, grad_scale);
}

bf_status bf_optimizer_step(bf_backend *b, bf_optimizer *o, float *params, const float *grads, float lr,
                            const float *grad_scale) {
    bf_status s = BF_OK;
    if (!o->num_ranges) s = update(b, o, params, grads, lr, grad_scale, 0, o->n);
    for (int k = 0; k < o->num_ranges && s == BF_OK; k++)
        s = update(b, o, params, grads, lr, grad_scale, o->ranges[2 * k], o->ranges[2 * k + 1]);
    if (s == BF_OK) o->steps++;
    return s;
}
