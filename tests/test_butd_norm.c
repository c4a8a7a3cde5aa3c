/* test_butd_norm.c - what the PyTorch parity step (test_butd_parity_bn.c) does not cover of BU-TD
 * batch-norm and binary heads: the running statistics survive bf_butd_save / bf_butd_load (the
 * checkpoint of --resume) so that a reloaded network predicts the same; Counter-Hebb with
 * batch-norm builds (ch_bn = exact, the default; test_butd_chbn.c checks what it computes); binary_xent against its closed form, also where exp
 * would overflow; mul (the trained task head's straight-through factor), in place too; the
 * multi_decoders slice ops against direct indexing, and bad tasks refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "testutil.h"

enum { N = 6, T = 3, C = 2, H = 6, W = 5 };

static bf_butd_net *small_resnet(bf_backend *b, long seed) {
    bf_butd_options opt = {.learning = BF_BUTD_BACKPROP, .shared_weights = 1, .guided = 1, .num_tasks = T,
                           .task_embedding = 4, .batch_norm = 1, .seed = seed};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, C, H, W, N, &opt, &net));
    if (!net) return NULL;
    bf_butd_add_conv(net, "conv1", 3, 3, 1, 1, 1, 0);
    bf_butd_add_block(net, "layer1.0", 4, 2);
    CHECK_OK(bf_butd_finalize(net, 1));
    return net;
}

/* Two training steps, so that parameters and running statistics have moved from their init. */
static void train_two_steps(bf_backend *b, bf_butd_net *net, const float *x, const int32_t *tasks,
                            const int32_t *labels) {
    float *losses = NULL, *dl = NULL;
    CHECK_OK(bf_alloc(b, N * sizeof(float), (void **)&losses));
    CHECK_OK(bf_alloc(b, N * sizeof(float), (void **)&dl));
    for (int step = 0; step < 2; step++) {
        const float *logits = NULL;
        CHECK_OK(bf_butd_instruct(net, tasks));
        CHECK_OK(bf_butd_forward(net, x, &logits));
        CHECK_OK(b->ops->binary_xent(b, N, logits, labels, losses, dl, NULL));
        CHECK_OK(bf_butd_backward(net, dl));
        CHECK_OK(b->ops->add(b, net->param_data, net->grad_data, net->param_data, net->num_param_floats));
    }
    bf_free(b, losses), bf_free(b, dl);
}

static float *eval_logits(bf_backend *b, bf_butd_net *net, const float *x, const int32_t *tasks) {
    const float *logits = NULL;
    bf_butd_set_training(net, 0);
    CHECK_OK(bf_butd_instruct(net, tasks));
    CHECK_OK(bf_butd_forward(net, x, &logits));
    return bf_test_download(b, logits, N);
}

static void test_save_load(bf_backend *b) {
    float xh[N * C * H * W];
    for (int i = 0; i < N * C * H * W; i++) xh[i] = sinf(0.37f * (float)i) + 0.2f;
    int32_t tasks[N] = {0, 1, 2, 0, 1, 2}, labels[N] = {1, 0, 1, 1, 0, 0};
    float *x = bf_test_upload(b, xh, N * C * H * W);
    int32_t *dlabels = NULL;
    CHECK_OK(bf_alloc(b, sizeof labels, (void **)&dlabels));
    CHECK_OK(bf_to_device(b, dlabels, labels, sizeof labels));
    bf_butd_net *a = small_resnet(b, 1), *c = small_resnet(b, 2);
    if (!a || !c) return;
    train_two_steps(b, a, x, tasks, dlabels);
    float *state = bf_test_download(b, a->state_data, a->num_state_floats);
    int moved = 0;
    for (size_t i = 0; i < a->num_state_floats; i++) moved += state[i] != 0.0f && state[i] != 1.0f;
    CHECK(moved > (int)a->num_state_floats / 2, "training moved the running statistics (%d of %zu)", moved,
          a->num_state_floats);
    const char *path = "/tmp/bioflex_test_butd_norm.safetensors";
    CHECK_OK(bf_butd_save(a, path));
    CHECK_OK(bf_butd_load(c, path)); /* c had other weights (seed 2) and initial statistics */
    float *reloaded = bf_test_download(b, c->state_data, c->num_state_floats);
    CHECK(memcmp(state, reloaded, a->num_state_floats * sizeof(float)) == 0, "running statistics reloaded exactly");
    float *la = eval_logits(b, a, x, tasks), *lc = eval_logits(b, c, x, tasks);
    CHECK(memcmp(la, lc, N * sizeof(float)) == 0, "the reloaded network predicts the same (eval mode): %g vs %g",
          la[0], lc[0]);
    float *lt = eval_logits(b, a, x, tasks);
    bf_butd_set_training(a, 1);
    const float *train_logits = NULL;
    CHECK_OK(bf_butd_instruct(a, tasks));
    CHECK_OK(bf_butd_forward(a, x, &train_logits));
    float *ltr = bf_test_download(b, train_logits, N);
    CHECK(memcmp(lt, ltr, N * sizeof(float)) != 0, "train mode (batch statistics) differs from eval mode");
    remove(path);
    free(state), free(reloaded), free(la), free(lc), free(lt), free(ltr);
    bf_free(b, x), bf_free(b, dlabels);
    bf_butd_destroy(a), bf_butd_destroy(c);
}

static void test_refusal(bf_backend *b) {
    bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 1, .batch_norm = 1, .seed = 1};
    bf_butd_net *net = NULL;
    bf_status s = bf_butd_create(b, C, H, W, N, &opt, &net);
    CHECK(s == BF_OK, "counter_hebb with batch-norm (ch_bn = exact) builds: %s", s == BF_OK ? "" : bf_last_error());
    bf_butd_destroy(net);
}

static void test_binary_xent(bf_backend *b) {
    enum { M = 7 };
    const float y[M] = {-200.0f, -3.0f, -0.5f, 0.0f, 0.5f, 3.0f, 200.0f};
    const int32_t t[M] = {1, 0, 1, 0, 1, 1, 0};
    float loss[M], d[M], hit[M];
    CHECK_OK(b->ops->binary_xent(b, M, y, t, loss, d, hit));
    for (int i = 0; i < M; i++) {
        double p = 1.0 / (1.0 + exp(-(double)y[i]));
        /* -log p or -log(1-p), written with log1p so that large |y| is exact */
        double want = t[i] ? log1p(exp(-(double)y[i])) : log1p(exp((double)y[i]));
        if (fabs(y[i]) > 50) want = t[i] ? (y[i] < 0 ? -y[i] : 0) : (y[i] > 0 ? y[i] : 0);
        CHECK(fabs(loss[i] - want) <= 1e-6 * (1 + fabs(want)), "binary_xent loss y=%g t=%d: %g, want %g", y[i], t[i],
              loss[i], want);
        CHECK(fabs(d[i] - (p - t[i])) <= 1e-7, "binary_xent dlogits y=%g t=%d: %g, want %g", y[i], t[i], d[i], p - t[i]);
        CHECK(hit[i] == (float)((y[i] > 0) == (t[i] == 1)), "binary_xent correct y=%g t=%d: %g", y[i], t[i], hit[i]);
    }
    int32_t bad = 2;
    CHECK(b->ops->binary_xent(b, 1, y, &bad, loss, NULL, NULL) == BF_ERR_ARG, "label 2 refused: %s", bf_last_error());
}

static void test_mul(bf_backend *b) {
    float x0[5] = {1.5f, -2.0f, 0.0f, 3.0f, -0.25f}, x1[5] = {2.0f, 0.5f, 7.0f, -1.0f, -4.0f}, y[5];
    const float want[5] = {3.0f, -1.0f, 0.0f, -3.0f, 1.0f};
    CHECK_OK(b->ops->mul(b, x0, x1, y, 5));
    CHECK_OK(b->ops->mul(b, x0, x1, x0, 5)); /* y may alias an input */
    for (int i = 0; i < 5; i++)
        CHECK(y[i] == want[i] && x0[i] == want[i], "mul[%d] = %g and in place %g, want %g", i, y[i], x0[i], want[i]);
}

static void test_task_slices(bf_backend *b) {
    enum { NS = 3, KS = 2, TS = 3 };
    float full[NS * TS * KS], slice[NS * KS], back[NS * TS * KS];
    for (int i = 0; i < NS * TS * KS; i++) full[i] = (float)i;
    const int32_t tasks[NS] = {2, 0, 1};
    CHECK_OK(b->ops->task_slice_gather(b, NS, KS, TS, tasks, full, slice));
    const float want[NS * KS] = {4, 5, 6, 7, 14, 15}; /* sample i, task t: full[(i*3 + t)*2 + j] */
    CHECK(memcmp(slice, want, sizeof want) == 0, "task_slice_gather: %g %g %g %g %g %g", slice[0], slice[1], slice[2],
          slice[3], slice[4], slice[5]);
    CHECK_OK(b->ops->task_slice_scatter(b, NS, KS, TS, tasks, slice, back));
    for (int i = 0; i < NS * TS * KS; i++) {
        int sample = i / (TS * KS), task = i % (TS * KS) / KS;
        float expect = task == tasks[sample] ? full[i] : 0.0f;
        CHECK(back[i] == expect, "task_slice_scatter[%d] = %g, want %g", i, back[i], expect);
    }
    const int32_t bad[NS] = {0, 3, 1};
    CHECK(b->ops->task_slice_gather(b, NS, KS, TS, bad, full, slice) == BF_ERR_ARG, "task 3 of 3 refused: %s",
          bf_last_error());
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    test_save_load(b);
    test_refusal(b);
    test_binary_xent(b);
    test_mul(b);
    test_task_slices(b);
    bf_backend_destroy(b);
    return bf_test_finish();
}
