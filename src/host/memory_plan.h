/* memory_plan.h - internal: the memory plan of a built model (memory_plan.c). */
#ifndef BIOFLEX_MEMORY_PLAN_H
#define BIOFLEX_MEMORY_PLAN_H

#include <stddef.h>

#include "bioflex/model.h"

/* Decides every layer's memory rules (in-place ReLU, the batch-norm that runs its ReLU, packed
 * spikes, the charge over its input or recomputed, forward-only outputs) and places every
 * activation, gradient and scratch of a training step: the layers' dout_at, unpack_at,
 * bwd_scratch_at, fwd_scratch_at and workspace blocks, and the model's transient_bytes, grad_bytes,
 * forward_only_bytes, grad_live_bytes, grad_scratch_floats, bn_sync_doubles
 * and arena_bytes. fwd_at (the caller's, one per layer): the offset of a forward-only output. */
bf_status bf_memory_plan(bf_model *m, size_t *fwd_at);
/* Whether layer i's output lies in the transient region (read by the step's own passes alone). */
int bf_memory_plan_is_transient(const bf_model *m, int i);
/* Bytes of a layer's packed spikes in the arena: one bit per element, in whole 32-bit words. */
size_t bf_memory_plan_spike_bits_bytes(const bf_layer *l);

#endif
