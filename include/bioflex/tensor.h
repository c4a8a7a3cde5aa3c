/* tensor.h - shapes. bioflex tensors are plain float arrays in NCHW order owned by a backend;
 * a fully connected activation is [n, c, 1, 1]. */
#ifndef BIOFLEX_TENSOR_H
#define BIOFLEX_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef struct bf_shape {
    int n, c, h, w;
} bf_shape;

static inline size_t bf_shape_count(bf_shape s) { return (size_t)s.n * s.c * s.h * s.w; }
static inline size_t bf_shape_per_sample(bf_shape s) { return (size_t)s.c * s.h * s.w; }

#endif
