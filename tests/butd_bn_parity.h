/* butd_bn_parity.h - one guided BU-TD training step of the reference's celeb_a setup, scaled
 * down, against PyTorch (tests/fixtures/butd_guided_bn.safetensors, bench/make_butd_bn_parity_fixture.py):
 * a ResNet whose batch-norms have TD copies, shared weights, one-logit BCE heads (binary_xent),
 * backprop, Adam; then the running statistics (BU and TD) and an eval-mode pass. Run on the CPU by
 * test_butd_parity_bn.c and on CUDA by test_butd_parity_bn_cuda.c, on px->backend. */
#ifndef BIOFLEX_TEST_BUTD_BN_PARITY_H
#define BIOFLEX_TEST_BUTD_BN_PARITY_H

#include <stdio.h>
#include <stdlib.h>

#include "bioflex/butd.h"
#include "bioflex/train.h"
#include "butd_fixture.h"
#include "parity_util.h"
#include "testutil.h"

#ifndef BIOFLEX_SOURCE_DIR
#define BIOFLEX_SOURCE_DIR "."
#endif

enum { N = 8, T = 4, C = 3, H = 7, W = 6 };

/* Logits of the instruction and BU passes (train or eval mode) against "name". */
static void compare_logits(const bf_parity *px, bf_butd_net *net, const int32_t *tasks, const float *x,
                           const char *what, const char *name, const float **logits) {
    CHECK_OK(bf_butd_instruct(net, tasks));
    CHECK_OK(bf_butd_forward(net, x, logits));
    float *lh = bf_test_download(px->backend, *logits, N);
    bf_parity_compare(px, what, name, lh, N);
    free(lh);
}

#define BUTD_BN_FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/butd_guided_bn.safetensors"
#define BUTD_BN_SCRIPT "bench/make_butd_bn_parity_fixture.py"

static void run_bn_parity(bf_parity *pxp) {
    bf_parity px = *pxp;
    px.atol = 1e-5;
    px.rtol = 1e-4;
    px.name_width = 52;
    bf_backend *b = px.backend;
    bf_butd_options opt = {.learning = BF_BUTD_BACKPROP, .shared_weights = 1, .guided = 1, .num_tasks = T,
                           .task_embedding = 5, .batch_norm = 1, .seed = 1};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, C, H, W, N, &opt, &net));
    bf_butd_add_conv(net, "conv1", 4, 3, 1, 1, 1, 0);
    bf_butd_add_block(net, "layer1.0", 4, 1);
    bf_butd_add_block(net, "layer2.0", 6, 2);
    CHECK_OK(bf_butd_finalize(net, 1));

    butd_fixture_load_weights(&px, net);

    int32_t tasks[N], labels[N];
    float *x = butd_fixture_batch(&px, N, C, H, W, tasks, labels);
    int32_t *dlabels = NULL;
    float *losses = NULL, *dl = NULL;
    CHECK_OK(bf_alloc(b, sizeof labels, (void **)&dlabels));
    CHECK_OK(bf_alloc(b, N * sizeof(float), (void **)&losses));
    CHECK_OK(bf_alloc(b, N * sizeof(float), (void **)&dl));
    CHECK_OK(bf_to_device(b, dlabels, labels, sizeof labels));

    /* The training step: the TD copies normalise with the mixed-task batch's statistics. */
    const float *logits = NULL;
    compare_logits(&px, net, tasks, x, "pass 2", "expected.logits", &logits);
    CHECK_OK(b->ops->binary_xent(b, N, logits, dlabels, losses, dl, NULL));
    float *loss = bf_test_download(b, losses, N);
    float mean = 0;
    for (int i = 0; i < N; i++) mean += loss[i] / N;
    bf_parity_compare(&px, "loss", "expected.loss", &mean, 1);
    CHECK_OK(bf_butd_backward(net, dl));
    butd_fixture_compare_params(&px, net, net->grad_data, "backprop", "grad.");
    bf_optim_config oc = {.optimizer = BF_OPTIM_ADAMW, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    bf_optimizer *o = NULL;
    CHECK_OK(bf_optimizer_create(b, &oc, net->num_param_floats, &o));
    CHECK_OK(bf_optimizer_step(b, o, net->param_data, net->grad_data, oc.lr, NULL));
    butd_fixture_compare_params(&px, net, net->param_data, "adam step", "after1.");

    /* Running statistics, BU and TD, as the checkpoint names them. */
    float *state = bf_test_download(b, net->state_data, net->num_state_floats);
    int entries = bf_butd_norm_state_count(net);
    CHECK(entries == 4 * 6, "6 batch-norms x 4 statistics, got %d", entries);
    for (int k = 0; k < entries; k++) {
        char name[BF_NAME_MAX + 32], fixture[BF_NAME_MAX + 48];
        size_t offset;
        int64_t count;
        bf_butd_norm_state_entry(net, k, name, sizeof name, &offset, &count);
        snprintf(fixture, sizeof fixture, "stats1.%s", name);
        bf_parity_compare(&px, "running statistics", fixture, state + offset, (size_t)count);
    }

    /* Eval mode: running statistics in both directions, with the stepped weights. */
    bf_butd_set_training(net, 0);
    compare_logits(&px, net, tasks, x, "eval passes", "eval.logits", &logits);

    bf_optimizer_destroy(b, o);
    free(state), free(loss);
    bf_free(b, x), bf_free(b, dlabels), bf_free(b, losses), bf_free(b, dl);
    bf_butd_destroy(net);
}

#endif
