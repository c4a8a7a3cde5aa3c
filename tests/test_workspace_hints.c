/* test_workspace_hints.c - the model's convolution workspace hints at run time (model_memory.c,
 * conv_workspace_hint in ops.h), on the CPU backend, whose ops table is wrapped here so that every
 * hint and convolution call is seen:
 *   - during each convolution (forward, backward data, backward filter) the hinted block shares no
 *     byte with the call's operands, which a cuDNN call would overwrite it with;
 *   - every hint is the planned block of the layer whose pass is running (the model's layers in
 *     order in the forward, in reverse in the backward), so no stale hint reaches another layer;
 *   - the hint is cleared at the end of every pass (other code shares the backend);
 *   - the hinted blocks are large where the plan says: some convolution ran with one.
 * test_model checks the planned blocks themselves against every buffer live during the pass; this
 * test checks the plumbing that hands them to the backend, which on a GPU only a CUDA run would
 * otherwise exercise. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/model.h"
#include "layers.h"
#include "testutil.h"

/* What the wrapped ops saw. */
static struct {
    const bf_ops *cpu;          /* the real ops */
    const bf_model *model;
    uintptr_t hint_lo, hint_hi; /* the current hint */
    int pass;                   /* 0: forward, 1: backward (set by the test around the calls) */
    int expected_layer;         /* the layer whose block the next non-empty hint must be */
    long convs, convs_with_hint, hints, bad;
} seen;

static int overlaps(const void *p, size_t bytes) {
    uintptr_t lo = (uintptr_t)p, hi = lo + bytes;
    return p && bytes && seen.hint_lo < hi && lo < seen.hint_hi;
}

static void check_operand(const char *op, const char *what, const void *p, size_t floats) {
    if (overlaps(p, floats * sizeof(float))) {
        if (seen.bad++ < 5) CHECK(0, "%s: the workspace hint overlaps its %s", op, what);
    }
}

static size_t in_floats(const bf_conv2d_shape *s) { return (size_t)s->n * s->c_in * s->h_in * s->w_in; }
static size_t out_floats(const bf_conv2d_shape *s) { return (size_t)s->n * s->c_out * s->h_out * s->w_out; }
static size_t w_floats(const bf_conv2d_shape *s) { return (size_t)s->c_out * (s->c_in / s->groups) * s->k_h * s->k_w; }

static void count_conv(void) {
    seen.convs++;
    if (seen.hint_hi > seen.hint_lo) seen.convs_with_hint++;
}

static bf_status conv_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x, const float *w,
                              const float *bias, float *y) {
    count_conv();
    check_operand("conv2d_forward", "x", x, in_floats(s));
    check_operand("conv2d_forward", "w", w, w_floats(s));
    check_operand("conv2d_forward", "y", y, out_floats(s));
    return seen.cpu->conv2d_forward(b, s, x, w, bias, y);
}

static bf_status conv_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy, const float *w,
                                    float *dx) {
    count_conv();
    check_operand("conv2d_backward_data", "dy", dy, out_floats(s));
    check_operand("conv2d_backward_data", "w", w, w_floats(s));
    check_operand("conv2d_backward_data", "dx", dx, in_floats(s));
    return seen.cpu->conv2d_backward_data(b, s, dy, w, dx);
}

static bf_status conv_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x, const float *dy,
                                      float *dw, float *dbias) {
    count_conv();
    check_operand("conv2d_backward_filter", "x", x, in_floats(s));
    check_operand("conv2d_backward_filter", "dy", dy, out_floats(s));
    check_operand("conv2d_backward_filter", "dw", dw, w_floats(s));
    return seen.cpu->conv2d_backward_filter(b, s, x, dy, dw, dbias);
}

/* Hints come one per layer and pass, in the pass's order, then one that clears (NULL, 0). */
static bf_status workspace_hint(bf_backend *b, void *p, size_t bytes) {
    seen.hints++;
    seen.hint_lo = (uintptr_t)p;
    seen.hint_hi = p ? (uintptr_t)p + bytes : (uintptr_t)p;
    const bf_model *m = seen.model;
    if (p) {
        /* every layer hints its block, empty or not, in the pass's order: the next one */
        const int i = seen.expected_layer;
        if (i < 0 || i >= m->num_layers || m->layers[i].ws_free[seen.pass] != p ||
            m->layers[i].ws_free_bytes[seen.pass] != bytes) {
            if (seen.bad++ < 5)
                CHECK(0, "%s hint %ld: %zu bytes at %p, not the planned block of layer %d", seen.pass ? "backward" : "forward",
                      seen.hints, bytes, p, i);
        }
    }
    seen.expected_layer += seen.pass ? -1 : 1;
    return seen.cpu->conv_workspace_hint(b, p, bytes);
}

static void run_model(bf_backend *b, bf_model *m, const char *what) {
    const int N = m->input_shape.n;
    const size_t image = bf_shape_per_sample(m->input_shape);
    float *x = NULL, *dlogits = NULL, *losses = NULL;
    int32_t *labels = malloc((size_t)N * sizeof(int32_t));
    CHECK_OK(bf_alloc(b, (size_t)N * image * sizeof(float), (void **)&x));
    CHECK_OK(bf_alloc(b, (size_t)N * m->num_classes * sizeof(float), (void **)&dlogits));
    CHECK_OK(bf_alloc(b, (size_t)N * sizeof(float), (void **)&losses));
    if (!x || !dlogits || !losses || !labels) return;
    for (size_t i = 0; i < (size_t)N * image; i++) x[i] = 2.0f * bf_uniform(5, i) - 1.0f;
    for (int i = 0; i < N; i++) labels[i] = i % m->num_classes;
    seen.model = m;
    seen.convs = seen.convs_with_hint = seen.hints = seen.bad = 0;
    for (int step = 0; step < 2; step++) {
        const float *logits = NULL;
        seen.pass = 0;
        seen.expected_layer = 0;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK(seen.hint_lo == 0 && seen.hint_hi == 0, "%s: the hint is cleared after the forward", what);
        CHECK_OK(b->ops->softmax_xent(b, N, m->num_classes, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
        seen.pass = 1;
        seen.expected_layer = m->num_layers - 1;
        CHECK_OK(bf_model_backward(m, dlogits));
        CHECK(seen.hint_lo == 0 && seen.hint_hi == 0, "%s: the hint is cleared after the backward", what);
    }
    printf("%s: %ld convolution calls, %ld of them with a workspace hint, %ld hints\n", what, seen.convs,
           seen.convs_with_hint, seen.hints);
    CHECK(seen.bad == 0, "%s: %ld hints or convolutions went wrong", what, seen.bad);
    CHECK(seen.convs > 0 && seen.convs_with_hint * 2 > seen.convs,
          "%s: most convolutions ran with a workspace hint (%ld of %ld)", what, seen.convs_with_hint, seen.convs);
    bf_free(b, x);
    bf_free(b, dlogits);
    bf_free(b, losses);
    free(labels);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    static bf_ops wrapped;
    seen.cpu = b->ops;
    wrapped = *b->ops;
    wrapped.conv2d_forward = conv_forward;
    wrapped.conv2d_backward_data = conv_backward_data;
    wrapped.conv2d_backward_filter = conv_backward_filter;
    wrapped.conv_workspace_hint = workspace_hint;
    b->ops = &wrapped;

    struct { const char *what; bf_arch arch; int c, hw, flex, neuron; } cases[] = {
        {"VGG-11", BF_ARCH_VGG11, 3, 32, 0, -1},
        {"ResNet-18", BF_ARCH_RESNET18, 3, 32, 0, -1},
        {"flex VGG-11", BF_ARCH_VGG11, 3, 32, 1, -1},
        {"PlasticFlex VGG-6, flex, LIF", BF_ARCH_PF_VGG6, 1, 28, 1, BF_NEURON_LIF},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        cfg.model.arch = cases[i].arch;
        cfg.model.flex = cases[i].flex;
        cfg.model.spiking.neuron = cases[i].neuron;
        cfg.model.spiking.time_steps = 2;
        bf_model *m = NULL;
        CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){2, cases[i].c, cases[i].hw, cases[i].hw}, 10, 1, &m));
        if (m) run_model(b, m, cases[i].what);
        bf_model_destroy(m);
    }
    b->ops = seen.cpu;
    bf_backend_destroy(b);
    return bf_test_finish();
}
