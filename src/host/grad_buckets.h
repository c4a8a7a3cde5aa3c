/* grad_buckets.h - internal: which gradients a data-parallel rank can all-reduce while the backward
 * pass is still running (PyTorch DDP's buckets).
 *
 * The parameters sit in one buffer, in layer order; the backward pass finishes layers from the last
 * to the first. After layer i's backward, every gradient at or above ready_below[i] (the end of the
 * highest parameter of a layer before i) is final: no layer still to run writes there. Once
 * bucket_floats of final gradients are pending, they form a bucket to launch; what is left after the
 * first layer is the last bucket. The buckets of a step cover the gradient buffer once, from its end
 * down to offset 0. data_parallel.c launches them on the NCCL stream; the logic here needs no
 * backend, so tests run it on the CPU (test_grad_buckets.c). */
#ifndef BIOFLEX_GRAD_BUCKETS_H
#define BIOFLEX_GRAD_BUCKETS_H

#include <stddef.h>

#include "bioflex/model.h"

typedef struct bf_grad_buckets {
    size_t *ready_below;  /* per layer: gradients at offsets >= this are final after its backward */
    size_t total;         /* the model's gradient floats */
    size_t pending_end;   /* gradients [0, pending_end) are not yet in a bucket this step */
    size_t bucket_floats; /* a bucket once this many final floats are pending */
} bf_grad_buckets;

/* Plans the buckets of model m for buckets of at least bucket_floats floats (>= 1). */
bf_status bf_grad_buckets_plan(bf_grad_buckets *g, const bf_model *m, size_t bucket_floats);
void bf_grad_buckets_free(bf_grad_buckets *g);

/* After the backward of `layer`: 1 and [*from, *from + *count) when a bucket is due, else 0. */
int bf_grad_buckets_after_layer(bf_grad_buckets *g, int layer, size_t *from, size_t *count);

/* At the end of the backward pass: the last bucket (1 and its range, or 0 when nothing is pending);
 * the next step starts with the whole buffer pending again. */
int bf_grad_buckets_finish(bf_grad_buckets *g, size_t *from, size_t *count);

#endif
