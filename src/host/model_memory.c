/* model_memory.c - finalising a built model: one allocation for parameters, one for gradients,
 * one for running statistics, and one arena for every activation, gradient and scratch, placed by
 * the memory plan (memory_plan.c), so a training step allocates nothing; and the passes that walk
 * the layers (bf_model_forward, bf_model_backward), handing each layer's dead memory to the
 * backend's convolutions as workspace. Weights are initialised here, on the host, from the seed, so
 * the CPU and CUDA backends start from identical weights. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/model.h"
#include "layers.h"
#include "memory_plan.h"

/* Standard normal from two counter-based uniforms (Box-Muller). */
static float normal_sample(uint64_t seed, uint64_t i) { return (float)bf_normal(seed, i); }

static void init_param(const bf_param *p, uint64_t seed, float *out) {
    for (size_t i = 0; i < p->count; i++) {
        switch (p->init) {
        case BF_INIT_ZEROS: out[i] = 0; break;
        case BF_INIT_ONES: out[i] = 1; break;
        case BF_INIT_KAIMING_NORMAL_FAN_OUT: out[i] = normal_sample(seed, i) * sqrtf(2.0f / (float)p->fan_out); break;
        case BF_INIT_KAIMING_NORMAL_FAN_IN: out[i] = normal_sample(seed, i) * sqrtf(2.0f / (float)p->fan_in); break;
        case BF_INIT_NORMAL_0_01: out[i] = normal_sample(seed, i) * 0.01f; break;
        case BF_INIT_KAIMING_UNIFORM: {
            float bound = sqrtf(6.0f / (float)p->fan_in);
            out[i] = (2.0f * bf_uniform(seed, i) - 1.0f) * bound;
            break;
        }
        case BF_INIT_UNIFORM_FAN_IN: {
            float bound = 1.0f / sqrtf((float)p->fan_in);
            out[i] = (2.0f * bf_uniform(seed, i) - 1.0f) * bound;
            break;
        }
        case BF_INIT_UNIFORM_PLUS_FAN_IN_8: out[i] = bf_uniform(seed, i) + (float)p->fan_in / 8.0f; break;
        case BF_INIT_UNIFORM_PLUS_HALF_FAN_IN: out[i] = bf_uniform(seed, i) + (float)p->fan_in / 2.0f; break;
        case BF_INIT_NORMAL_STD_FAN_IN: out[i] = normal_sample(seed, i) * (float)p->fan_in; break;
        case BF_INIT_UNIFORM_0_1: out[i] = bf_uniform(seed, i); break;
        case BF_INIT_UNIFORM_PLUS_1: out[i] = bf_uniform(seed, i) + 1.0f; break;
        case BF_INIT_UNIFORM_2PI: out[i] = bf_uniform(seed, i) * 6.28318530717958647692f; break;
        case BF_INIT_NORMAL_PLUS_FAN_IN: out[i] = normal_sample(seed, i) + (float)p->fan_in; break;
        }
    }
}

static bf_status init_weights(bf_model *m) {
    bf_backend *b = m->backend;
    float *host = malloc((m->num_param_floats + m->num_buffer_floats + 1) * sizeof(float));
    if (!host) return bf_error(BF_ERR_OOM, "model: out of host memory for %zu parameters", m->num_param_floats);
    for (int i = 0; i < m->num_params; i++)
        init_param(&m->params[i], bf_seed_derive((uint64_t)m->seed, BF_STREAM_INIT, (uint64_t)i), host + m->params[i].offset);
    bf_status s = bf_to_device(b, m->param_data, host, m->num_param_floats * sizeof(float));
    for (int i = 0; i < m->num_buffers && s == BF_OK; i++)
        init_param(&m->buffers[i], bf_seed_derive((uint64_t)m->seed, BF_STREAM_INIT, 1000000u + (uint64_t)i),
                   host + m->buffers[i].offset);
    if (s == BF_OK && m->num_buffers)
        s = bf_to_device(b, m->buffer_data, host, m->num_buffer_floats * sizeof(float));
    free(host);
    return s;
}

bf_status bf_model_finalize(bf_model *m) {
    BF_TRY(bf_model_build_status(m));
    if (m->num_layers <= 0 || m->num_layers > 1000000) return bf_error(BF_ERR_ARG, "model: %d layers", m->num_layers);
    bf_backend *b = m->backend;
    const int L = m->num_layers;
    bf_shape last = m->layers[L - 1].out_shape;
    m->num_classes = last.c * last.h * last.w;
    size_t *fwd_at = malloc((size_t)L * sizeof(size_t));
    if (!fwd_at) return bf_error(BF_ERR_OOM, "model: out of host memory");
    bf_status planned = bf_memory_plan(m, fwd_at);
    if (planned != BF_OK) {
        free(fwd_at);
        return planned;
    }
    if (!b) { /* planning only (--dry-run): shapes, parameters and memory, no allocation */
        free(fwd_at);
        return BF_OK;
    }

    const size_t param_bytes = (m->num_param_floats ? m->num_param_floats : 1) * sizeof(float);
    bf_status s = bf_alloc(b, param_bytes, (void **)&m->param_data);
    if (s == BF_OK) s = bf_alloc(b, param_bytes, (void **)&m->grad_data);
    if (s == BF_OK) s = bf_alloc(b, (m->num_buffer_floats ? m->num_buffer_floats : 1) * sizeof(float), (void **)&m->buffer_data);
    if (s == BF_OK && (s = bf_alloc(b, m->arena_bytes, &m->arena)) != BF_OK)
        s = bf_error_context(s, "model: allocating %.1f MiB of activations for batch %d", m->arena_bytes / 1048576.0,
                             m->input_shape.n);
    if (s != BF_OK) {
        free(fwd_at);
        return s;
    }

    char *base = m->arena, *transient = base, *cursor = base + m->transient_bytes + m->grad_bytes;
    for (int i = 0; i < L; i++) {
        bf_layer *l = &m->layers[i];
        char **at = bf_memory_plan_is_transient(m, i) ? &transient : &cursor;
        size_t count = bf_shape_count(l->out_shape);
        if (l->in_place) {
            l->out = m->layers[l->input[0]].out;
        } else if (l->spikes_packed) { /* the bits stay, the floats live in the forward-only region */
            l->out = (float *)(base + fwd_at[i]);
            l->spike_bits = (uint32_t *)*at;
            *at += bf_memory_plan_spike_bits_bytes(l);
            l->spikes_unpacked = l->unpack_at != SIZE_MAX ? (float *)(base + l->unpack_at) : NULL;
        } else if (l->out_forward_only) {
            l->out = (float *)(base + fwd_at[i]);
        } else {
            l->out = (float *)*at;
            *at += bf_arena_align(count * sizeof(float));
        }
        if (l->kind == BF_LAYER_MAXPOOL) {
            l->argmax = (int32_t *)*at;
            *at += bf_arena_align(count * sizeof(int32_t));
        }
        if (l->kind == BF_LAYER_FLEX) cursor = bf_flex_place(l, cursor);
        cursor = bf_v1_place(l, cursor);
        cursor = bf_cirincione_place(l, cursor);
        cursor = bf_spiking_place(l, cursor);
        if (l->charge_in_place) l->neuron_charge = m->layers[l->input[0]].out;
        if (l->kind == BF_LAYER_BATCHNORM) {
            l->save_mean = (float *)cursor;
            cursor += bf_arena_align((size_t)l->bn.c * sizeof(float));
            l->save_invstd = (float *)cursor;
            cursor += bf_arena_align((size_t)l->bn.c * sizeof(float));
            l->bn_coef = NULL;
            if (l->bn_in_flex) {
                l->bn_coef = (float *)cursor;
                cursor += bf_arena_align(2 * (size_t)l->bn.c * sizeof(float));
            }
        }
        if (l->dout_at != SIZE_MAX) l->dout = (float *)(base + l->dout_at);
        if (l->bwd_scratch_at != SIZE_MAX) l->bwd_scratch = (float *)(base + l->bwd_scratch_at);
        if (l->fwd_scratch_at != SIZE_MAX) l->fwd_scratch = (float *)(base + l->fwd_scratch_at);
        for (int pass = 0; pass < 2; pass++) l->ws_free[pass] = l->ws_free_bytes[pass] ? base + l->ws_free_at[pass] : NULL;
    }
    m->grad_scratch = m->grad_scratch_floats ? (float *)cursor : NULL;
    cursor += bf_arena_align(m->grad_scratch_floats * sizeof(float));
    m->bn_sync_sums = m->bn_sync_doubles ? (double *)cursor : NULL;
    cursor += bf_arena_align(m->bn_sync_doubles * sizeof(double));
    m->dinput = m->eval_zeros = m->eval_scratch = NULL;
    if (m->input_gradient) {
        m->dinput = (float *)cursor;
        cursor += bf_arena_align(bf_shape_count(m->input_shape) * sizeof(float));
    }
    if (m->input_gradient || m->eval_backward) {
        m->eval_zeros = (float *)cursor; /* bn_sync_doubles > every batch-norm's channels */
        cursor += bf_arena_align(m->bn_sync_doubles * sizeof(float));
        m->eval_scratch = (float *)cursor;
        s = b->ops->fill(b, m->eval_zeros, 0.0f, m->bn_sync_doubles);
    }
    free(fwd_at);
    if (s == BF_OK) s = bf_v1_upload_constants(m);
    return s == BF_OK ? init_weights(m) : s;
}

bf_status bf_model_set_batch(bf_model *m, int n) {
    if (n < 1 || n > m->input_shape.n)
        return bf_error(BF_ERR_ARG, "model: batch %d outside 1..%d (the size the model was built for)", n, m->input_shape.n);
    m->batch = n;
    return BF_OK;
}

/* Hands layer i's dead memory of this pass to the backend's convolutions (i < 0: none). */
static bf_status hint_workspace(bf_model *m, int i, int pass) {
    const bf_ops *ops = m->backend->ops;
    if (i < 0) return ops->conv_workspace_hint(m->backend, NULL, 0);
    return ops->conv_workspace_hint(m->backend, m->layers[i].ws_free[pass], m->layers[i].ws_free_bytes[pass]);
}

bf_status bf_model_forward(bf_model *m, const float *x, const float **logits) {
    m->input = x;
    for (int i = 0; i < m->num_layers; i++) {
        bf_status s = hint_workspace(m, i, 0);
        if (s == BF_OK) s = bf_layer_forward(m, i);
        if (s == BF_OK && m->on_layer_forward) s = m->on_layer_forward(m->on_layer_forward_ctx, m, i);
        if (s != BF_OK) {
            hint_workspace(m, -1, 0);
            return bf_error_context(s, "forward of %s (%s)", m->layers[i].name, bf_layer_kind_name(m->layers[i].kind));
        }
    }
    BF_TRY(hint_workspace(m, -1, 0)); /* no hint outlives the pass: other code shares the backend */
    if (m->training) {
        m->num_batches_tracked++;
        m->flex_samples += m->batch;
        m->spike_samples += m->batch;
    }
    *logits = m->layers[m->num_layers - 1].out;
    return BF_OK;
}

/* Before layer i's backward: the packed spikes whose first reader it is, back from their bits. */
static bf_status restore_spikes(bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    for (int j = 0; j < l->num_inputs; j++) {
        if (l->input[j] < 0) continue;
        bf_layer *p = &m->layers[l->input[j]];
        if (p->unpack_before != i || p->spikes_restored) continue;
        size_t count = (size_t)bf_layer_batch(m, p) * bf_shape_per_sample(p->out_shape);
        BF_TRY(m->backend->ops->spikes_unpack(m->backend, p->spike_bits, p->spikes_unpacked, count));
        p->spikes_restored = 1;
    }
    return BF_OK;
}

bf_status bf_model_backward(bf_model *m, const float *dlogits) {
    if (!m->training && !m->input_gradient && !m->eval_backward)
        return bf_error(BF_ERR_ARG, "model: a backward in evaluation mode needs a model built with input_gradient or "
                        "eval_backward");
    unsigned char written[4096];
    unsigned char *grad_written = m->num_layers <= (int)sizeof written ? written : calloc((size_t)m->num_layers, 1);
    if (!grad_written) return bf_error(BF_ERR_OOM, "model: out of host memory");
    memset(grad_written, 0, (size_t)m->num_layers);
    m->dinput_written = 0;
    m->layers[m->num_layers - 1].dout = (float *)dlogits;
    grad_written[m->num_layers - 1] = 1;
    bf_status s = BF_OK;
    for (int i = m->num_layers - 1; i >= 0 && s == BF_OK; i--) {
        s = restore_spikes(m, i);
        if (s != BF_OK || !grad_written[i]) continue; /* no path from the loss (e.g. an unused branch) */
        s = hint_workspace(m, i, 1);
        if (s == BF_OK) s = bf_layer_backward(m, i, grad_written);
        if (s == BF_OK && m->on_layer_backward) s = m->on_layer_backward(m->on_layer_backward_ctx, m, i);
        if (s != BF_OK) bf_error_context(s, "backward of %s (%s)", m->layers[i].name, bf_layer_kind_name(m->layers[i].kind));
    }
    if (grad_written != written) free(grad_written);
    bf_status cleared = hint_workspace(m, -1, 1);
    return s != BF_OK ? s : cleared;
}

/* The layer by its name (FNV-1a), not its index: a layout that adds or drops a layer without
 * parameters elsewhere (an encode layer, [spiking] share_direct_input) draws the same masks. */
static uint64_t name_hash(const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) h = (h ^ *c) * 0x100000001b3ull;
    return h;
}

uint64_t bf_layer_step_seed(const bf_model *m, int i, uint64_t stream) {
    const uint64_t step = bf_seed_derive((uint64_t)m->seed, stream, (uint64_t)m->step);
    return bf_seed_derive(step, stream, name_hash(m->layers[i].name));
}

bf_draws bf_layer_draws(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    const uint64_t per_sample = (uint64_t)bf_shape_per_sample(l->out_shape);
    bf_draws d = bf_draws_of(bf_layer_step_seed(m, i, BF_STREAM_DROPOUT));
    d.first = m->sample_offset * per_sample;
    if (l->time_steps > 1) d.step_elements = (uint64_t)m->batch * per_sample; /* [T, batch, ...] */
    return d;
}
