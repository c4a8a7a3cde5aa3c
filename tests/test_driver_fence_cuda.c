/* test_driver_fence_cuda.c (label gpu) - the CUDA backend's driver fence (bf_cuda_set_driver_fence in
 * ops.h), which --gpus sets so that no host thread blocks inside the driver while its GPU runs an NCCL
 * collective:
 *   - the calls that may block there (alloc, free, copies to and from the host, a convolution's
 *     algorithm search, scratch and workspace growth) call the fence first, before they allocate;
 *   - a fence's error (a dead peer) stops the call with that error, and a cleared fence is not called;
 *   - once a network has taken a step (training's warm-up, bf_dp_set_warmup: the first step, which
 *     also gathers the monitors), its later steps never call it, from the forward pass to the
 *     optimiser, with the monitors or without: between the gradient buckets they launch, a fence
 *     would wait for the buckets in flight and lose the overlap (VGG-6 with batch-norm and dropout,
 *     a fully flex VGG-6, a spiking flex VGG-6).
 * Skipped without a GPU; the kernel emulator runs it on the CPU (emu_test_driver_fence_cuda). */
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { N = 4, C = 3, HW = 16, K = 10 };

typedef struct fence_log {
    bf_backend *b;
    int calls;
    size_t live_at_first; /* the backend's device memory when the fence was first called */
    int fail;             /* return an error, as the communicator's wait does when a peer died */
} fence_log;

static bf_status fence(void *ctx) {
    fence_log *f = ctx;
    if (f->calls++ == 0) bf_cuda_memory_bytes(f->b, 0, &f->live_at_first, NULL);
    return f->fail ? bf_error(BF_ERR_DEVICE, "rank 1: the test's peer died") : BF_OK;
}

static size_t live_bytes(bf_backend *b) {
    size_t live = 0;
    bf_cuda_memory_bytes(b, 0, &live, NULL);
    return live;
}

/* Each blocking call calls the fence once or more, and first: the memory it allocates is not held yet. */
static void check_blocking_calls(bf_backend *b, fence_log *f) {
    f->calls = 0;
    size_t before = live_bytes(b);
    void *p = NULL;
    CHECK_OK(bf_alloc(b, 4096, &p));
    CHECK(f->calls >= 1 && f->live_at_first == before, "alloc: fence called %d time(s), first with %zu bytes "
          "held (%zu before the call)", f->calls, f->live_at_first, before);
    float host[16] = {0};
    f->calls = 0;
    CHECK_OK(bf_to_device(b, p, host, sizeof host));
    CHECK(f->calls >= 1, "copy to the device: fence called %d time(s)", f->calls);
    f->calls = 0;
    CHECK_OK(bf_to_host(b, host, p, sizeof host));
    CHECK(f->calls >= 1, "copy to the host: fence called %d time(s)", f->calls);
    f->calls = 0;
    bf_free(b, p);
    CHECK(f->calls >= 1, "free: fence called %d time(s)", f->calls);

    /* a convolution shape met for the first time: the algorithm search, and the workspace it sizes */
    bf_conv2d_shape s = {.n = 2, .c_in = 3, .h_in = 9, .w_in = 9, .c_out = 5, .k_h = 3, .k_w = 3, .stride = 1,
                         .pad = 1, .groups = 1, .h_out = 9, .w_out = 9};
    float *x = bf_test_upload(b, NULL, 2 * 3 * 81), *w = bf_test_upload(b, NULL, 5 * 3 * 9),
          *y = bf_test_upload(b, NULL, 2 * 5 * 81);
    f->calls = 0;
    before = live_bytes(b);
    CHECK_OK(b->ops->conv2d_forward(b, &s, x, w, NULL, y));
    CHECK(f->calls >= 1 && f->live_at_first == before, "first convolution of a shape: fence called %d time(s), "
          "first with %zu bytes held (%zu before the call)", f->calls, f->live_at_first, before);
    f->calls = 0;
    CHECK_OK(b->ops->conv2d_forward(b, &s, x, w, NULL, y));
    CHECK(f->calls == 0, "the same convolution again: fence called %d time(s), expected none", f->calls);

    /* a peer died: the call fails with the fence's error and allocates nothing */
    f->fail = 1;
    f->calls = 0;
    before = live_bytes(b);
    p = NULL;
    bf_status st = bf_alloc(b, 4096, &p);
    CHECK(st == BF_ERR_DEVICE && !p && live_bytes(b) == before, "alloc under a failing fence: status %d, "
          "pointer %p, %zu bytes held (%zu before)", (int)st, p, live_bytes(b), before);
    CHECK(strstr(bf_last_error(), "peer died") != NULL, "the fence's error is the call's: %s", bf_last_error());
    s.c_out = 6; /* a new shape: its search is fenced too */
    float *y6 = NULL;
    f->fail = 0;
    y6 = bf_test_upload(b, NULL, 2 * 6 * 81);
    f->fail = 1;
    st = b->ops->conv2d_forward(b, &s, x, w, NULL, y6);
    CHECK(st == BF_ERR_DEVICE, "a new convolution shape under a failing fence: status %d", (int)st);
    f->fail = 0;

    /* cleared: never called */
    CHECK_OK(bf_cuda_set_driver_fence(b, NULL, NULL));
    f->calls = 0;
    CHECK_OK(bf_alloc(b, 4096, &p));
    bf_free(b, p);
    CHECK_OK(b->ops->conv2d_forward(b, &s, x, w, NULL, y6));
    CHECK(f->calls == 0, "a cleared fence was called %d time(s)", f->calls);
    CHECK_OK(bf_cuda_set_driver_fence(b, fence, f));
    void *bufs[] = {x, w, y, y6};
    for (int i = 0; i < 4; i++) bf_free(b, bufs[i]);
}

/* Three training steps of a network as train.c takes them (the first and the third gather the
 * monitors); the second's and the third's must not call the fence. */
static void check_steady_state(const char *label, const bf_config *cfg, bf_backend *b, fence_log *f) {
    bf_model *m = NULL;
    bf_optimizer *opt = NULL;
    CHECK_OK(bf_model_build(b, &cfg->model, (bf_shape){N, C, HW, HW}, K, cfg->run.seed, &m));
    CHECK_OK(bf_optimizer_create(b, &cfg->optim, m->num_param_floats, &opt));
    if (!m || !opt) return;
    float *x = bf_test_upload(b, NULL, N * C * HW * HW), *losses = bf_test_upload(b, NULL, N),
          *dlogits = bf_test_upload(b, NULL, N * K), *sumsq = bf_test_upload(b, NULL, 2);
    int32_t *labels = NULL;
    CHECK_OK(bf_alloc(b, N * sizeof(int32_t), (void **)&labels));
    float host_x[N * C * HW * HW];
    int32_t host_labels[N];
    for (int step = 0; step < 3; step++) {
        bf_test_fill_uniform(host_x, N * C * HW * HW, -1.0f, 1.0f, 100 + step);
        for (int i = 0; i < N; i++) host_labels[i] = (i * 3 + step) % K;
        CHECK_OK(bf_to_device(b, x, host_x, sizeof host_x));
        CHECK_OK(bf_to_device(b, labels, host_labels, sizeof host_labels));
        CHECK_OK(bf_model_set_batch(m, N));
        m->training = 1;
        m->step = (uint64_t)step;
        m->flex_monitor_due = step != 1;
        f->calls = 0;
        const float *logits = NULL;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
        CHECK_OK(bf_model_backward(m, dlogits));
        CHECK_OK(b->ops->sum_squares(b, m->grad_data, m->num_param_floats, sumsq));
        CHECK_OK(b->ops->clip_scale(b, sumsq, 1.0f, sumsq + 1));
        CHECK_OK(bf_optimizer_step(b, opt, m->param_data, m->grad_data, cfg->optim.lr, sumsq + 1));
        if (step == 0)
            CHECK(f->calls >= 1, "%s: the first step's searches called the fence %d time(s)", label, f->calls);
        else
            CHECK(f->calls == 0, "%s: step %d (monitors %s) called the fence %d time(s) between its forward pass "
                  "and its optimiser step, expected none", label, step + 1, step == 1 ? "off" : "on", f->calls);
    }
    void *bufs[] = {x, losses, dlogits, sumsq, labels};
    for (int i = 0; i < 5; i++) bf_free(b, bufs[i]);
    bf_optimizer_destroy(b, opt);
    bf_model_destroy(m);
}

int main(void) {
    if (!bf_cuda_built()) bf_test_skip("bioflex was built without the CUDA backend");
    if (bf_cuda_device_count() == 0) bf_test_skip("no CUDA device");
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cuda(0, BF_PRECISION_FP32, &b));
    if (!b) return bf_test_finish();
    fence_log f = {.b = b};
    CHECK_OK(bf_cuda_set_driver_fence(b, fence, &f));
    check_blocking_calls(b, &f);

    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_VGG6;
    cfg.model.dropout = 0.5f;
    cfg.optim.optimizer = BF_OPTIM_SGD;
    cfg.optim.lr = 0.02f;
    check_steady_state("VGG-6", &cfg, b, &f);
    cfg.model.flex = 1;
    cfg.model.fully_flex = 1;
    check_steady_state("flex VGG-6, channel-wise max, fully flex", &cfg, b, &f);
    cfg.model.fully_flex = 0;
    cfg.model.arch = BF_ARCH_PF_VGG6;
    cfg.model.spiking.neuron = BF_NEURON_LIF;
    cfg.model.spiking.time_steps = 4;
    check_steady_state("spiking flex PlasticFlex VGG-6, LIF, T = 4", &cfg, b, &f);
    bf_backend_destroy(b);
    return bf_test_finish();
}
