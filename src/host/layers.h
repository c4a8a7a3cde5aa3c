/* layers.h - internal: the per-kind forward and backward passes used by model.c. */
#ifndef BIOFLEX_LAYERS_H
#define BIOFLEX_LAYERS_H

#include "bioflex/model.h"

/* Pointer to a layer's input activation j (the image batch for BF_MODEL_INPUT). */
const float *bf_layer_input(const bf_model *m, const bf_layer *l, int j);

/* A layer's parameter in slot `slot` (model.h at param_index) and its gradient; NULL for none. */
static inline float *bf_layer_param(const bf_model *m, const bf_layer *l, int slot) {
    return l->param_index[slot] < 0 ? NULL : m->param_data + m->params[l->param_index[slot]].offset;
}
static inline float *bf_layer_grad(const bf_model *m, const bf_layer *l, int slot) {
    return l->param_index[slot] < 0 ? NULL : m->grad_data + m->params[l->param_index[slot]].offset;
}

/* Whether a backward writes parameter gradients: in training, or in evaluation mode when asked
 * (bf_model.eval_parameter_gradients; input gradients alone otherwise). */
static inline int bf_model_param_grads(const bf_model *m) { return m->training || m->eval_parameter_gradients; }
/* ... and of layer l: not for one whose parameters all stay ([optim] train_only leaves them out; the
 * trainer zeroes their gradients each step), nor for a layer without any. */
static inline int bf_layer_param_grads(const bf_model *m, const bf_layer *l) {
    return bf_model_param_grads(m) && l->params_trained;
}

/* Evaluation mode: dgamma and dbeta of a batch-norm that normalised x with its running statistics,
 * sum dy * (x - running_mean) / sqrt(running_var + eps) and sum dy per channel. */
bf_status bf_batchnorm_eval_param_grads(bf_model *m, const bf_bn_shape *s, const float *x, const float *dy,
                                        const float *running_mean, const float *running_var, float *dgamma,
                                        float *dbeta);
/* Evaluation mode: a batch-norm's dx, the running statistics' affine map applied to dy. */
bf_status bf_batchnorm_eval_backward(bf_model *m, const bf_bn_shape *s, const float *dy, const float *gamma,
                                     const float *running_var, float *dx);

bf_status bf_layer_forward(bf_model *m, int index);
/* Computes the gradients of layer `index`: its parameter gradients and, for each input that is a
 * layer, that input's output gradient (written, or added when another consumer already wrote it). */
bf_status bf_layer_backward(bf_model *m, int index, unsigned char *grad_written);

/* The flex layer (layer_flex.c): arena bytes of its private buffers, their placement (returns
 * the advanced cursor), the scratch the mask joint needs in its forward (l->fwd_scratch) and either
 * joint in its backward (l->bwd_scratch), both placed by the memory plan over activations not yet
 * written or already dead (0: none), and its passes. */
size_t bf_flex_arena_bytes(const bf_layer *l);
char *bf_flex_place(bf_layer *l, char *cursor);
size_t bf_flex_forward_scratch_floats(const bf_model *m, int index);
size_t bf_flex_backward_scratch_floats(const bf_model *m, int index);
bf_status bf_flex_forward(bf_model *m, int index);
/* Writes the gradient of the layer's input into dx (nullable: the model input needs none), and with
 * spatial-attention logits that of its second input, the logits, into dlogits (nullable likewise). */
bf_status bf_flex_backward(bf_model *m, int index, float *dx, float *dlogits);

/* The spiking layers (layer_spiking.c): encode, neuron, time mean. */
size_t bf_spiking_arena_bytes(const bf_layer *l);
char *bf_spiking_place(bf_layer *l, char *cursor);
bf_status bf_spiking_forward(bf_model *m, int index);
bf_status bf_spiking_backward(bf_model *m, int index, float *dx);
/* The backward of a batch-norm that runs its neuron layer's too (bf_layer.bn_runs_neuron). */
bf_status bf_spiking_bn_backward(bf_model *m, int bn_index, float *dx);

/* The V1 layers (layer_v1.c): divisive normalisation and the polar transform. Arena bytes of their
 * private buffers and their placement (returns the advanced cursor), the polar operators' upload
 * (bf_model_finalize, once the arena is placed), and their passes. */
size_t bf_v1_arena_bytes(const bf_layer *l);
char *bf_v1_place(bf_layer *l, char *cursor);
bf_status bf_v1_upload_constants(bf_model *m);
bf_status bf_v1_forward(bf_model *m, int index);
bf_status bf_v1_backward(bf_model *m, int index, float *dx);
/* The locally connected layer (layer_local.c). */
bf_status bf_local_forward(bf_model *m, int index);
bf_status bf_local_backward(bf_model *m, int index, float *dx);
/* The Cirincione divisive normalisation (layer_cirincione.c): arena bytes of its private buffers,
 * their placement (returns the advanced cursor), and its passes. */
size_t bf_cirincione_arena_bytes(const bf_layer *l);
char *bf_cirincione_place(bf_layer *l, char *cursor);
bf_status bf_cirincione_forward(bf_model *m, int index);
bf_status bf_cirincione_backward(bf_model *m, int index, float *dx);

/* Arena alignment shared by memory_plan.c, model_memory.c and layer_flex.c. */
#define BF_ARENA_ALIGN 256
static inline size_t bf_arena_align(size_t x) { return (x + BF_ARENA_ALIGN - 1) / BF_ARENA_ALIGN * BF_ARENA_ALIGN; }

#endif
