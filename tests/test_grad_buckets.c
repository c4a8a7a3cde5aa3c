/* test_grad_buckets.c - the data-parallel gradient buckets (src/host/grad_buckets.c), run on the CPU
 * through the model's on_layer_backward hook exactly as data_parallel.c runs them for NCCL:
 *   - a step's buckets cover the gradient buffer once, from its end down to offset 0, and every
 *     bucket but the last holds at least the bucket size;
 *   - a bucket is final when it is handed out: its gradients, copied at that moment, equal the
 *     gradients at the end of the backward pass (no layer still to run writes into it), so its
 *     all-reduce may overlap the rest of the backward;
 *   - the first bucket is handed out before the backward pass ends, and smaller buckets come
 *     earlier and more often; a bucket larger than the model is one bucket at the end;
 *   - the next step starts over with the whole buffer.
 * For VGG-11 (a chain) and ResNet-18 (residual blocks, downsample branches). */
#include <stdlib.h>
#include <string.h>

#include "bioflex/config.h"
#include "bioflex/model.h"
#include "grad_buckets.h"
#include "testutil.h"

enum { N = 2, K = 10, MAX_BUCKETS = 512 };

typedef struct recorder {
    bf_grad_buckets g;
    int count;
    size_t from[MAX_BUCKETS], size[MAX_BUCKETS];
    int layer[MAX_BUCKETS];       /* the layer after whose backward it was handed out; -1: at the end */
    float *copy[MAX_BUCKETS];     /* its gradients at that moment */
} recorder;

static void record(recorder *r, bf_model *m, int layer, size_t from, size_t size) {
    if (r->count >= MAX_BUCKETS) return;
    int i = r->count++;
    r->from[i] = from, r->size[i] = size, r->layer[i] = layer;
    r->copy[i] = malloc(size * sizeof(float));
    if (r->copy[i]) memcpy(r->copy[i], m->grad_data + from, size * sizeof(float));
}

static bf_status after_layer(void *ctx, bf_model *m, int layer) {
    recorder *r = ctx;
    size_t from, size;
    if (bf_grad_buckets_after_layer(&r->g, layer, &from, &size)) record(r, m, layer, from, size);
    return BF_OK;
}

static void forget(recorder *r) {
    for (int i = 0; i < r->count; i++) free(r->copy[i]);
    r->count = 0;
}

/* One training step's backward with buckets of bucket_floats; returns the number of buckets. */
static int one_step(bf_model *m, recorder *r, const float *x, const int32_t *labels, const char *what) {
    const float *logits = NULL;
    float losses[N], dlogits[N * K];
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(m->backend->ops->softmax_xent(m->backend, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    forget(r);
    CHECK_OK(bf_model_backward(m, dlogits));
    size_t from, size;
    if (bf_grad_buckets_finish(&r->g, &from, &size)) record(r, m, -1, from, size);

    size_t end = m->num_param_floats;
    int partition = 1, big_enough = 1, final = 1;
    for (int i = 0; i < r->count; i++) {
        partition &= r->from[i] + r->size[i] == end && r->size[i] > 0;
        end = r->from[i];
        if (i < r->count - 1) big_enough &= r->size[i] >= r->g.bucket_floats;
        final &= r->copy[i] && memcmp(r->copy[i], m->grad_data + r->from[i], r->size[i] * sizeof(float)) == 0;
    }
    CHECK(partition && end == 0, "%s: the %d buckets cover the %zu gradients once, from the end down", what, r->count,
          m->num_param_floats);
    CHECK(big_enough, "%s: every bucket but the last holds at least %zu floats", what, r->g.bucket_floats);
    CHECK(final, "%s: every bucket's gradients were final when it was handed out", what);
    return r->count;
}

static void check_model(bf_arch arch, const char *name) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(0, &b));
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = arch;
    cfg.model.dropout = 0;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){N, 3, 32, 32}, K, 5, &m));
    if (!m) return;
    static float x[N * 3 * 32 * 32];
    bf_test_fill_uniform(x, N * 3 * 32 * 32, -1, 1, 3);
    int32_t labels[N] = {1, 7};
    recorder *r = calloc(1, sizeof *r);
    m->on_layer_backward = after_layer;
    m->on_layer_backward_ctx = r;
    char what[96];

    /* small buckets: many, the first long before the backward pass ends */
    size_t small = m->num_param_floats / 20;
    CHECK_OK(bf_grad_buckets_plan(&r->g, m, small));
    snprintf(what, sizeof what, "%s, buckets of %zu floats", name, small);
    int many = one_step(m, r, x, labels, what);
    CHECK(many >= 5 && r->layer[0] >= m->num_layers / 2, "%s: %d buckets, the first after layer %d of %d", what, many,
          r->layer[0], m->num_layers);
    int again = one_step(m, r, x, labels, what); /* the next step starts over */
    CHECK(again == many, "%s: the next step hands out the same %d buckets (got %d)", what, many, again);
    bf_grad_buckets_free(&r->g);

    /* 25 MiB, the default: fewer, later */
    CHECK_OK(bf_grad_buckets_plan(&r->g, m, (25u << 20) / sizeof(float)));
    snprintf(what, sizeof what, "%s, buckets of 25 MiB", name);
    int fewer = one_step(m, r, x, labels, what);
    CHECK(fewer >= 1 && fewer < many, "%s: %d buckets (fewer than %d)", what, fewer, many);
    bf_grad_buckets_free(&r->g);

    /* larger than the model: one bucket, at the end */
    CHECK_OK(bf_grad_buckets_plan(&r->g, m, m->num_param_floats + 1));
    snprintf(what, sizeof what, "%s, one bucket larger than the model", name);
    int one = one_step(m, r, x, labels, what);
    CHECK(one == 1 && r->layer[0] == -1, "%s: %d buckets, handed out at layer %d (expected 1, at the end)", what, one,
          r->layer[0]);
    bf_grad_buckets_free(&r->g);

    forget(r);
    free(r);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

int main(void) {
    check_model(BF_ARCH_VGG11, "VGG-11");
    check_model(BF_ARCH_RESNET18, "ResNet-18");
    return bf_test_finish();
}
