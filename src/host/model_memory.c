/* model_memory.c - finalising a built model: one allocation for parameters, one for gradients,
 * one for running statistics, and one arena for every activation, so a training step allocates
 * nothing. Output gradients share a few max-size "gradient slots": dout of layer i is live from
 * the backward of its last consumer down to its own backward, and layers whose intervals do not
 * overlap reuse a slot (a VGG needs two); the accumulation scratch, for layers with several
 * consumers, is sized by them (a chain has none). Weights are initialised here, on the host, from the
 * seed, so the CPU and CUDA backends start from identical weights. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/model.h"
#include "layers.h"

static size_t align_up(size_t x) { return bf_arena_align(x); }

/* A ReLU may overwrite its input when nothing else reads that input: every layer kind here
 * computes its backward from its own input (or, for ReLU, its output), never from its output,
 * except a flex layer with the channel-wise max, whose backward tells ties by its output. */
static int relu_can_be_in_place(const bf_model *m, const bf_layer *l) {
    if (l->kind != BF_LAYER_RELU || l->input[0] == BF_MODEL_INPUT) return 0;
    const bf_layer *in = &m->layers[l->input[0]];
    return in->num_consumers == 1 && !(in->kind == BF_LAYER_FLEX && in->flex_opt.joint == BF_FLEX_JOINT_MAX);
}

/* Bytes of arena one layer needs: its output (unless it aliases its input) and its scratch. */
static size_t layer_arena_bytes(const bf_model *m, const bf_layer *l) {
    size_t bytes = 0, count = bf_shape_count(l->out_shape);
    if (!l->in_place) bytes += align_up(count * sizeof(float));
    if (l->kind == BF_LAYER_MAXPOOL) bytes += align_up(count * sizeof(int32_t));
    if (l->kind == BF_LAYER_BATCHNORM) bytes += 2 * align_up((size_t)l->bn.c * sizeof(float));
    if (l->kind == BF_LAYER_FLEX) bytes += bf_flex_arena_bytes(l);
    bytes += bf_spiking_arena_bytes(l);
    return bytes;
}

/* Assigns gradient slots by replaying the backward order (see the file comment). */
static bf_status plan_gradient_slots(bf_model *m) {
    if (m->num_layers <= 0 || m->num_layers > 1000000) return bf_error(BF_ERR_ARG, "model: %d layers", m->num_layers);
    size_t L = (size_t)m->num_layers;
    int *last_consumer = malloc((size_t)L * sizeof(int));
    int *slot_free = calloc((size_t)L + 1, sizeof(int));
    if (!last_consumer || !slot_free) {
        free(last_consumer);
        free(slot_free);
        return bf_error(BF_ERR_OOM, "model: out of host memory");
    }
    for (size_t i = 0; i < L; i++) last_consumer[i] = -1;
    for (int t = 0; t < (int)L; t++)
        for (int j = 0; j < m->layers[t].num_inputs; j++)
            if (m->layers[t].input[j] >= 0) last_consumer[m->layers[t].input[j]] = t;
    int slots = 0;
    size_t max_floats = 0;
    for (size_t i = 0; i < L; i++) {
        size_t c = bf_shape_count(m->layers[i].out_shape);
        if (c > max_floats) max_floats = c;
    }
    /* The last layer's gradient (dlogits) is given by the caller; every other layer gets a slot
     * when its last consumer's backward runs, and returns it after its own backward. */
    for (int t = (int)L - 1; t >= 0; t--) {
        bf_layer *l = &m->layers[t];
        for (int j = 0; j < l->num_inputs; j++) {
            int in = l->input[j];
            if (in < 0 || last_consumer[in] != t || m->layers[in].grad_slot >= 0) continue;
            int s = 0;
            while (s < slots && !slot_free[s]) s++;
            if (s == slots) slots++;
            slot_free[s] = 0;
            m->layers[in].grad_slot = s;
        }
        if (l->grad_slot >= 0) slot_free[l->grad_slot] = 1;
    }
    for (int i = 0; i < (int)L; i++)
        if (m->layers[i].grad_slot < 0 && i != (int)L - 1 && m->layers[i].num_consumers > 0) {
            free(last_consumer);
            free(slot_free);
            return bf_error(BF_ERR_INTERNAL, "model: layer %s got no gradient slot", m->layers[i].name);
        }
    m->num_grad_slots = slots;
    m->grad_slot_floats = max_floats;
    /* The accumulation scratch holds a second consumer's gradient before it is added to the first
     * one's (layers.c), and a batch-norm on the raw input's unused dx: a chain needs none. */
    m->grad_scratch_floats = 0;
    for (size_t i = 0; i < L; i++) {
        const bf_layer *l = &m->layers[i];
        size_t need = l->num_consumers > 1 ? bf_shape_count(l->out_shape) : 0;
        if (l->kind == BF_LAYER_BATCHNORM && l->input[0] == BF_MODEL_INPUT) need = bf_shape_count(m->input_shape);
        if (need > m->grad_scratch_floats) m->grad_scratch_floats = need;
    }
    free(last_consumer);
    free(slot_free);
    return BF_OK;
}

/* Standard normal from two counter-based uniforms (Box-Muller). */
static float normal_sample(uint64_t seed, uint64_t i) {
    double u1 = 1.0 - bf_uniform(seed, 2 * i), u2 = bf_uniform(seed, 2 * i + 1);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

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
    if (m->num_layers == 0) return bf_error(BF_ERR_ARG, "model: no layers");
    bf_backend *b = m->backend;
    bf_shape last = m->layers[m->num_layers - 1].out_shape;
    m->num_classes = last.c * last.h * last.w;
    for (int i = 0; i < m->num_layers; i++) m->layers[i].in_place = relu_can_be_in_place(m, &m->layers[i]);
    BF_TRY(plan_gradient_slots(m));

    size_t arena_bytes = 0;
    for (int i = 0; i < m->num_layers; i++) arena_bytes += layer_arena_bytes(m, &m->layers[i]);
    size_t slot_bytes = align_up(m->grad_slot_floats * sizeof(float));
    arena_bytes += slot_bytes * (size_t)m->num_grad_slots + align_up(m->grad_scratch_floats * sizeof(float));
    m->flex_scratch_floats = 0;
    for (int i = 0; i < m->num_layers; i++) {
        size_t f = bf_flex_scratch_floats(m, i);
        if (f > m->flex_scratch_floats) m->flex_scratch_floats = f;
    }
    arena_bytes += align_up(m->flex_scratch_floats * sizeof(float));
    /* Synchronised batch-norm's per-channel sums (sync_bn.c): kept even when sync_bn is off, since
     * data parallelism is attached after finalize; a few KiB at most. */
    m->bn_sync_doubles = 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        const int normalises = l->kind == BF_LAYER_BATCHNORM || (l->kind == BF_LAYER_FLEX && l->flex_opt.logits_bn);
        if (normalises && 2 * (size_t)l->bn.c + 1 > m->bn_sync_doubles) m->bn_sync_doubles = 2 * (size_t)l->bn.c + 1;
    }
    arena_bytes += align_up(m->bn_sync_doubles * sizeof(double));
    m->arena_bytes = arena_bytes;
    if (!b) return BF_OK; /* planning only (--dry-run): shapes, parameters and memory, no allocation */

    BF_TRY(bf_alloc(b, (m->num_param_floats ? m->num_param_floats : 1) * sizeof(float), (void **)&m->param_data));
    BF_TRY(bf_alloc(b, (m->num_param_floats ? m->num_param_floats : 1) * sizeof(float), (void **)&m->grad_data));
    BF_TRY(bf_alloc(b, (m->num_buffer_floats ? m->num_buffer_floats : 1) * sizeof(float), (void **)&m->buffer_data));
    bf_status s = bf_alloc(b, arena_bytes, &m->arena);
    if (s != BF_OK)
        return bf_error_context(s, "model: allocating %.1f MiB of activations for batch %d", arena_bytes / 1048576.0, m->input_shape.n);

    char *cursor = m->arena;
    for (int i = 0; i < m->num_layers; i++) {
        bf_layer *l = &m->layers[i];
        size_t count = bf_shape_count(l->out_shape);
        if (l->in_place) {
            l->out = m->layers[l->input[0]].out;
        } else {
            l->out = (float *)cursor;
            cursor += align_up(count * sizeof(float));
        }
        if (l->kind == BF_LAYER_MAXPOOL) {
            l->argmax = (int32_t *)cursor;
            cursor += align_up(count * sizeof(int32_t));
        }
        if (l->kind == BF_LAYER_FLEX) cursor = bf_flex_place(l, cursor);
        cursor = bf_spiking_place(l, cursor);
        if (l->kind == BF_LAYER_BATCHNORM) {
            l->save_mean = (float *)cursor;
            cursor += align_up((size_t)l->bn.c * sizeof(float));
            l->save_invstd = (float *)cursor;
            cursor += align_up((size_t)l->bn.c * sizeof(float));
        }
    }
    m->grad_slots = calloc((size_t)m->num_grad_slots + 1, sizeof(float *));
    if (!m->grad_slots) return bf_error(BF_ERR_OOM, "model: out of host memory");
    for (int s2 = 0; s2 < m->num_grad_slots; s2++) {
        m->grad_slots[s2] = (float *)cursor;
        cursor += slot_bytes;
    }
    m->grad_scratch = m->grad_scratch_floats ? (float *)cursor : NULL;
    cursor += align_up(m->grad_scratch_floats * sizeof(float));
    m->flex_scratch = m->flex_scratch_floats ? (float *)cursor : NULL;
    cursor += align_up(m->flex_scratch_floats * sizeof(float));
    m->bn_sync_sums = m->bn_sync_doubles ? (double *)cursor : NULL;
    for (int i = 0; i < m->num_layers; i++)
        if (m->layers[i].grad_slot >= 0) m->layers[i].dout = m->grad_slots[m->layers[i].grad_slot];
    return init_weights(m);
}

bf_status bf_model_set_batch(bf_model *m, int n) {
    if (n < 1 || n > m->input_shape.n)
        return bf_error(BF_ERR_ARG, "model: batch %d outside 1..%d (the size the model was built for)", n, m->input_shape.n);
    m->batch = n;
    return BF_OK;
}

bf_status bf_model_forward(bf_model *m, const float *x, const float **logits) {
    m->input = x;
    for (int i = 0; i < m->num_layers; i++) {
        bf_status s = bf_layer_forward(m, i);
        if (s != BF_OK) return bf_error_context(s, "forward of %s (%s)", m->layers[i].name, bf_layer_kind_name(m->layers[i].kind));
    }
    if (m->training) {
        m->num_batches_tracked++;
        m->flex_samples += m->batch;
        m->spike_samples += m->batch;
    }
    *logits = m->layers[m->num_layers - 1].out;
    return BF_OK;
}

bf_status bf_model_backward(bf_model *m, const float *dlogits) {
    unsigned char written[4096];
    unsigned char *grad_written = m->num_layers <= (int)sizeof written ? written : calloc((size_t)m->num_layers, 1);
    if (!grad_written) return bf_error(BF_ERR_OOM, "model: out of host memory");
    memset(grad_written, 0, (size_t)m->num_layers);
    m->layers[m->num_layers - 1].dout = (float *)dlogits;
    grad_written[m->num_layers - 1] = 1;
    bf_status s = BF_OK;
    for (int i = m->num_layers - 1; i >= 0 && s == BF_OK; i--) {
        if (!grad_written[i]) continue; /* no path from the loss (e.g. an unused branch) */
        s = bf_layer_backward(m, i, grad_written);
        if (s == BF_OK && m->on_layer_backward) s = m->on_layer_backward(m->on_layer_backward_ctx, m, i);
        if (s != BF_OK) bf_error_context(s, "backward of %s (%s)", m->layers[i].name, bf_layer_kind_name(m->layers[i].kind));
    }
    if (grad_written != written) free(grad_written);
    return s;
}

uint64_t bf_layer_dropout_seed(const bf_model *m, int i) {
    uint64_t stream = bf_seed_derive((uint64_t)m->seed, BF_STREAM_DROPOUT, m->step * 4096u + (uint64_t)i);
    return m->noise_rank ? bf_seed_derive(stream, BF_STREAM_DROPOUT, (uint64_t)m->noise_rank) : stream;
}
