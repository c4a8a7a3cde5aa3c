/* conv_graph.h - internal: convolutions through cuDNN's graph (backend) API, for conv.cu when
 * [run] conv_api = graph (bf_cuda_set_conv_api). conv.cu keeps its legacy-API algorithm for every
 * shape and direction, and runs a graph plan instead where one was made and the call's pointers
 * have the alignment the plan was made for. */
#ifndef BIOFLEX_CONV_GRAPH_H
#define BIOFLEX_CONV_GRAPH_H

#include "cuda_backend.h"

/* One finalised execution plan of one direction of one shape (opaque). */
typedef struct bf_conv_plan bf_conv_plan;

/* The directions, as conv.cu numbers them. Operands (a, b, out):
 *   BF_CONV_GRAPH_FWD:        x, w, y
 *   BF_CONV_GRAPH_BWD_DATA:   dy, w, dx
 *   BF_CONV_GRAPH_BWD_FILTER: x, dy, dw */
enum { BF_CONV_GRAPH_FWD = 0, BF_CONV_GRAPH_BWD_DATA = 1, BF_CONV_GRAPH_BWD_FILTER = 2 };

/* Makes the plan of direction dir for shape s: the engine configurations cuDNN's heuristics (modes A,
 * then FALLBACK) offer, less those the precision or determinism rules out (fp32: no tensor-core or
 * down-converting engine; deterministic: none marked non-deterministic) and those needing runtime
 * compilation or more than ws_limit bytes of workspace; the first ten that finalise are timed on the
 * real buffers a, b, out (out is overwritten) and the fastest kept, or when deterministic the first
 * one that runs is kept untimed. If the workspace cannot grow to try them, only the plans that fit
 * the workspace already needed are tried. *plan = NULL with BF_OK when no engine qualifies; *workspace = the
 * plan's workspace bytes. May grow im's workspace for the timing. */
bf_status bf_conv_graph_plan(bf_cuda_impl *im, const bf_conv2d_shape *s, int dir, const void *a, const void *b,
                             void *out, size_t ws_limit, bf_conv_plan **plan, size_t *workspace);

/* 1 when a, b and out have the byte alignment the plan was made for. */
int bf_conv_graph_fits(const bf_conv_plan *plan, const void *a, const void *b, const void *out);

/* Runs the plan on im's stream with im's workspace (at least the plan's workspace bytes); the plan
 * keeps the variant pack of its last call, reused while the pointers stay the same. */
bf_status bf_conv_graph_run(bf_cuda_impl *im, bf_conv_plan *plan, const void *a, const void *b, void *out);

void bf_conv_graph_free(bf_conv_plan *plan);

#endif
