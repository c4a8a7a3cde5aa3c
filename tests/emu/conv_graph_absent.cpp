/* conv_graph_absent.cpp - the kernel emulator has no cuDNN graph API: conv_graph.h's planner
 * answers that no engine qualifies (what it answers on a GPU when none does), so conv.cu keeps its
 * legacy-API algorithm, which emu_dnn.cpp runs. */
#include "conv_graph.h"

bf_status bf_conv_graph_plan(bf_cuda_impl *im, const bf_conv2d_shape *s, int dir, const void *a, const void *b,
                             void *out, size_t ws_limit, bf_conv_plan **plan, size_t *workspace) {
    (void)im, (void)s, (void)dir, (void)a, (void)b, (void)out, (void)ws_limit;
    *plan = NULL;
    *workspace = 0;
    return BF_OK;
}

int bf_conv_graph_fits(const bf_conv_plan *plan, const void *a, const void *b, const void *out) {
    (void)plan, (void)a, (void)b, (void)out;
    return 0;
}

bf_status bf_conv_graph_run(bf_cuda_impl *im, bf_conv_plan *plan, const void *a, const void *b, void *out) {
    (void)im, (void)plan, (void)a, (void)b, (void)out;
    return bf_error(BF_ERR_UNAVAILABLE, "the kernel emulator has no cuDNN graph API");
}

void bf_conv_graph_free(bf_conv_plan *plan) { (void)plan; }
