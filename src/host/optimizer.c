/* optimizer.c - SGD and AdamW over the model's flat parameter buffer: the update is one op
 * (one fused kernel on CUDA), and the state is one buffer that checkpoints write in one piece. */
#include <stdlib.h>

#include "bioflex/train.h"

size_t bf_optimizer_state_floats(const bf_optimizer *o) {
    return o->kind == BF_OPTIM_ADAMW ? 2 * o->n : o->n;
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
    free(o);
}

bf_status bf_optimizer_step(bf_backend *b, bf_optimizer *o, float *params, const float *grads, float lr,
                            const float *grad_scale) {
    const bf_optim_config *c = &o->cfg;
    bf_status s;
    if (o->kind == BF_OPTIM_ADAMW)
        s = b->ops->adamw_update(b, params, grads, o->state, o->state + o->n, o->n, lr, c->beta1, c->beta2, c->eps,
                                 c->weight_decay, o->steps + 1, grad_scale);
    else
        s = b->ops->sgd_update(b, params, grads, o->state, o->n, lr, c->momentum, c->weight_decay, c->nesterov,
                               o->steps == 0, grad_scale);
    if (s == BF_OK) o->steps++;
    return s;
}
