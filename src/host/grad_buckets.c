/* grad_buckets.c - the data-parallel gradient buckets of a model (see grad_buckets.h). */
#include "grad_buckets.h"

#include <stdlib.h>
#include <string.h>

bf_status bf_grad_buckets_plan(bf_grad_buckets *g, const bf_model *m, size_t bucket_floats) {
    memset(g, 0, sizeof *g);
    if (bucket_floats < 1) return bf_error(BF_ERR_ARG, "gradient buckets: bucket size must be at least 1 float");
    g->ready_below = calloc((size_t)m->num_layers + 1, sizeof *g->ready_below);
    if (!g->ready_below) return bf_error(BF_ERR_OOM, "gradient buckets: out of host memory");
    /* ready_below[i] = the largest end of the parameters of the layers before i */
    for (int i = 0; i < m->num_layers; i++) {
        size_t end = 0;
        for (int p = 0; p < m->num_params; p++)
            if (m->params[p].layer < i && m->params[p].offset + m->params[p].count > end)
                end = m->params[p].offset + m->params[p].count;
        g->ready_below[i] = end;
    }
    g->total = m->num_param_floats;
    g->pending_end = g->total;
    g->bucket_floats = bucket_floats;
    return BF_OK;
}

void bf_grad_buckets_free(bf_grad_buckets *g) {
    free(g->ready_below);
    memset(g, 0, sizeof *g);
}

int bf_grad_buckets_after_layer(bf_grad_buckets *g, int layer, size_t *from, size_t *count) {
    size_t ready = g->ready_below[layer];
    if (g->pending_end <= ready || g->pending_end - ready < g->bucket_floats) return 0;
    *from = ready;
    *count = g->pending_end - ready;
    g->pending_end = ready;
    return 1;
}

int bf_grad_buckets_finish(bf_grad_buckets *g, size_t *from, size_t *count) {
    int due = g->pending_end > 0;
    *from = 0;
    *count = g->pending_end;
    g->pending_end = g->total;
    return due;
}
