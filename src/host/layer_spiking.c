/* layer_spiking.c - the layers of spiking networks (plasticflex.md sections 3 and 9):
 *   encode     [N, ...] -> [T*N, ...]: the same image at every step (direct), or Bernoulli spikes
 *              with the pixel as probability (rate); time is the outer dimension. Under direct
 *              coding with [spiking] share_direct_input it stands before the first neuron layer, or
 *              not at all where that layer reads its one step itself (bf_model_add_neuron_shared);
 *   neuron     LIF / IF over the T steps of [T*N, ...] in one op each way (BPTT in the backward),
 *              or the reference code's stateless clamp01 / step;
 *   time mean  [T*N, ...] -> [N, ...]: the readout, the mean over the steps.
 * Stateless layers between encode and time mean see a batch of T*N (bf_layer_batch), as
 * SpikingJelly's multi-step mode folds time into the batch. Neuron layers count spikes and silent
 * elements on the device in training mode; bf_model_spike_monitor reads them at log intervals. */
#include "layers.h"
#include "sync_bn.h"

static size_t step_elements(const bf_model *m, const bf_layer *l) {
    return (size_t)m->batch * bf_shape_per_sample(l->out_shape);
}

/* Whether a LIF/IF layer keeps its charge in a buffer of its own (not over its input, not recomputed). */
static int keeps_own_charge(const bf_layer *l) {
    return (l->neuron.kind == BF_NEURON_LIF || l->neuron.kind == BF_NEURON_IF) && !l->charge_in_place &&
           !l->charge_recomputed;
}

size_t bf_spiking_arena_bytes(const bf_layer *l) {
    if (l->kind != BF_LAYER_NEURON) return 0;
    size_t bytes = bf_arena_align(2 * sizeof(float)); /* stats */
    if (keeps_own_charge(l))
        bytes += bf_arena_align(bf_shape_count(l->out_shape) * sizeof(float)); /* charge */
    return bytes;
}

char *bf_spiking_place(bf_layer *l, char *cursor) {
    if (l->kind != BF_LAYER_NEURON) return cursor;
    l->neuron_stats = (float *)cursor;
    cursor += bf_arena_align(2 * sizeof(float));
    if (keeps_own_charge(l)) {
        l->neuron_charge = (float *)cursor;
        cursor += bf_arena_align(bf_shape_count(l->out_shape) * sizeof(float));
    }
    return cursor;
}

/* A neuron layer with its charge recomputed ([spiking] recompute_charge, memory_plan.c): its
 * input as the batch-norm that produced it sees it, its own input and saved training statistics
 * (*in); returns that batch-norm's input. */
static const float *bn_input_of(const bf_model *m, const bf_layer *l, bf_neuron_bn_input *in) {
    const bf_layer *bn = &m->layers[l->input[0]];
    *in = (bf_neuron_bn_input){bn->bn.c, bn->bn.hw, bn->save_mean, bn->save_invstd, bf_layer_param(m, bn, 0),
                               bf_layer_param(m, bn, 1)};
    return bf_layer_input(m, bn, 0);
}

bf_status bf_spiking_forward(bf_model *m, int index) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const float *x = bf_layer_input(m, l, 0);
    switch (l->kind) {
    case BF_LAYER_ENCODE: {
        size_t n = step_elements(m, l);
        if (l->encoding == 1)
            return ops->spike_encode_rate(b, x, l->out, n, l->time_steps, bf_layer_draws(m, index));
        for (int t = 0; t < l->time_steps; t++) BF_TRY(ops->copy(b, l->out + (size_t)t * n, x, n * sizeof(float)));
        return BF_OK;
    }
    case BF_LAYER_NEURON: {
        if (l->charge_recomputed && m->training) { /* its batch-norm wrote statistics alone (layers.c) */
            bf_neuron_bn_input in;
            const float *xin = bn_input_of(m, l, &in);
            l->spikes_restored = 0; /* the bits packed in the same pass */
            return ops->neuron_forward_bn(b, &l->neuron, &in, step_elements(m, l), xin, l->out,
                                          l->spikes_packed ? l->spike_bits : NULL, l->neuron_stats);
        }
        BF_TRY(ops->neuron_forward(b, &l->neuron, step_elements(m, l), x, l->out, l->neuron_charge,
                                   m->training ? l->neuron_stats : NULL));
        l->spikes_restored = 0;
        if (!l->spikes_packed) return BF_OK;
        /* the bits outlive l->out, which the plan reuses once the consumers' forwards have read it */
        return ops->spikes_pack(b, l->out, l->spike_bits, step_elements(m, l) * (size_t)l->neuron.T);
    }
    case BF_LAYER_TIME_MEAN: {
        size_t n = step_elements(m, l);
        int T = l->neuron.T;
        BF_TRY(ops->copy(b, l->out, x, n * sizeof(float)));
        for (int t = 1; t < T; t++) BF_TRY(ops->add_inplace(b, l->out, x + (size_t)t * n, n));
        return ops->scale(b, l->out, 1.0f / (float)T, n);
    }
    default:
        return bf_error(BF_ERR_INTERNAL, "layer %s is not a spiking layer", l->name);
    }
}

bf_status bf_spiking_backward(bf_model *m, int index, float *dx) {
    bf_layer *l = &m->layers[index];
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    if (!dx) return BF_OK;
    switch (l->kind) {
    case BF_LAYER_ENCODE: { /* direct coding: the input was used at every step */
        /* summed from the last step down, as a neuron layer reading a shared input sums them
         * (ops.h at bf_neuron_params.shared_input): both layouts give the same bits */
        size_t n = step_elements(m, l);
        const int T = l->time_steps;
        BF_TRY(ops->copy(b, dx, l->dout + (size_t)(T - 1) * n, n * sizeof(float)));
        for (int t = T - 2; t >= 0; t--) BF_TRY(ops->add_inplace(b, dx, l->dout + (size_t)t * n, n));
        return BF_OK;
    }
    case BF_LAYER_NEURON: {
        if (l->neuron_in_bn) return BF_OK; /* its batch-norm runs it (bf_spiking_bn_backward) */
        if (!l->charge_recomputed)
            return ops->neuron_backward(b, &l->neuron, step_elements(m, l), bf_layer_input(m, l, 0), NULL,
                                        l->neuron_charge, l->dout, dx); /* y is never read (ops.h) */
        bf_neuron_bn_input in; /* the charge again from the batch-norm's input and statistics */
        const float *xin = bn_input_of(m, l, &in);
        return ops->neuron_backward_bn(b, &l->neuron, &in, step_elements(m, l), xin, l->dout, dx);
    }
    case BF_LAYER_TIME_MEAN: {
        size_t n = step_elements(m, l);
        int T = l->neuron.T;
        for (int t = 0; t < T; t++) BF_TRY(ops->copy(b, dx + (size_t)t * n, l->dout, n * sizeof(float)));
        return ops->scale(b, dx, 1.0f / (float)T, (size_t)T * n);
    }
    default:
        return bf_error(BF_ERR_INTERNAL, "layer %s is not a spiking layer", l->name);
    }
}

/* A batch-norm that runs the backward of the neuron layer reading it with its own (the memory plan's
 * neuron_in_bn, [spiking] fuse_bn_backward): its dout is the neuron's output gradient (the pair's one
 * buffer), dx its input's. Synchronised batch-norm needs the neuron's gradient itself, to add its
 * sums across ranks: then the two backwards in turn, that gradient written into dx first and moved
 * into the pair's buffer, dead once read and large enough (T steps, or the one of a shared input). */
bf_status bf_spiking_bn_backward(bf_model *m, int bn_index, float *dx) {
    bf_layer *bn = &m->layers[bn_index];
    const bf_layer *l = NULL;
    for (int i = bn_index + 1; i < m->num_layers && !l; i++)
        if (m->layers[i].neuron_in_bn && m->layers[i].input[0] == bn_index) l = &m->layers[i];
    if (!l || !dx) return bf_error(BF_ERR_INTERNAL, "batch-norm %s runs no neuron layer's backward", bn->name);
    bf_backend *b = m->backend;
    bf_neuron_bn_input in;
    const float *xin = bn_input_of(m, l, &in);
    float *dgamma = bf_layer_grad(m, bn, 0), *dbeta = bf_layer_grad(m, bn, 1);
    const size_t n = step_elements(m, l);
    if (!m->sync_sums)
        return b->ops->neuron_batchnorm_backward(b, &l->neuron, &in, n, xin, bn->dout, dx, dgamma, dbeta);
    BF_TRY(b->ops->neuron_backward_bn(b, &l->neuron, &in, n, xin, bn->dout, dx));
    const size_t values = n * (l->neuron.shared_input ? 1 : (size_t)l->neuron.T);
    BF_TRY(b->ops->copy(b, bn->dout, dx, values * sizeof(float)));
    bf_bn_shape bs = bn->bn;
    bs.n = bf_layer_batch(m, bn);
    bf_bn_sync sync = bf_model_bn_sync(m);
    return bf_sync_bn_backward(&sync, &bs, xin, bn->dout, bf_layer_param(m, bn, 0), bn->save_mean, bn->save_invstd, dx,
                               dgamma, dbeta);
}

int bf_model_spike_monitor(bf_model *m, double *rate, double *silent, const char **names, int max) {
    int count = 0;
    for (int i = 0; i < m->num_layers && count < max; i++) {
        bf_layer *l = &m->layers[i];
        if (l->kind != BF_LAYER_NEURON) continue;
        float stats[2] = {0, 0};
        if (bf_to_host(m->backend, stats, l->neuron_stats, sizeof stats) != BF_OK) stats[0] = stats[1] = 0;
        double elements = m->spike_samples * bf_shape_per_sample(l->out_shape);
        rate[count] = elements > 0 ? stats[0] / (elements * l->neuron.T) : 0;
        silent[count] = elements > 0 ? stats[1] / elements : 0;
        names[count] = l->name;
        m->backend->ops->fill(m->backend, l->neuron_stats, 0.0f, 2);
        count++;
    }
    m->spike_samples = 0;
    return count;
}

bf_status bf_model_spike_raster(bf_model *m, int index, int k, float *out) {
    const bf_layer *l = &m->layers[index];
    if (l->kind != BF_LAYER_NEURON) return bf_error(BF_ERR_ARG, "spike raster: %s is not a neuron layer", l->name);
    size_t per_sample = bf_shape_per_sample(l->out_shape), step = (size_t)m->batch * per_sample;
    if ((size_t)k > per_sample) k = (int)per_sample;
    /* [T, N, features]: sample 0 of step t starts at t * N * features */
    for (int t = 0; t < l->neuron.T; t++)
        BF_TRY(bf_to_host(m->backend, out + (size_t)t * k, l->out + (size_t)t * step, (size_t)k * sizeof(float)));
    return BF_OK;
}
