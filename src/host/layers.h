/* layers.h - internal: the per-kind forward and backward passes used by model.c. */
#ifndef BIOFLEX_LAYERS_H
#define BIOFLEX_LAYERS_H

#include "bioflex/model.h"

/* Pointer to a layer's input activation j (the image batch for BF_MODEL_INPUT). */
const float *bf_layer_input(const bf_model *m, const bf_layer *l, int j);

bf_status bf_layer_forward(bf_model *m, int index);
/* Computes the gradients of layer `index`: its parameter gradients and, for each input that is a
 * layer, that input's output gradient (written, or added when another consumer already wrote it). */
bf_status bf_layer_backward(bf_model *m, int index, unsigned char *grad_written);

#endif
