/* test_butd_parity.c - one guided BU-TD training step (instruction pass, gated BU pass, TD error
 * pass, update, Adam) against PyTorch, for two fixtures of the same small multi-task net:
 *   butd_guided.safetensors (bench/make_butd_parity_fixture.py): Counter-Hebb, separate TD weights;
 *   butd_task_head.safetensors (bench/make_butd_task_head_fixture.py): backprop, shared weights and
 *     the task head trained ([butd] train_task_head) through straight-through gates, against
 *     autograd; then the trained head saved once among the parameters, and blocks refused;
 *   butd_multi_decoders.safetensors (the same script): multi_decoders (5 outputs per task, the
 *     sample's task picking its own), Counter-Hebb with shared weights against autograd. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/train.h"
#include "butd_fixture.h"
#include "parity_util.h"
#include "testutil.h"

#ifndef BIOFLEX_SOURCE_DIR
#define BIOFLEX_SOURCE_DIR "."
#endif

enum { N = 6, T = 3, K = 5 };

/* conv 1->4 k3, depthwise k2 s2, conv 4->6 k3 s2 p1, linear 54->10, head 10->5; task head 10->6->3. */
static bf_butd_net *small_net(bf_backend *b, const bf_butd_options *opt) {
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 1, 12, 12, N, opt, &net));
    if (!net) return NULL;
    bf_butd_add_conv(net, "core_net.0", 4, 3, 1, 0, 1, 1);
    bf_butd_add_conv(net, "core_net.1", 4, 2, 2, 0, 4, 1);
    bf_butd_add_conv(net, "core_net.2", 6, 3, 2, 1, 1, 1);
    bf_butd_add_linear(net, "core_net.3", 10, 1);
    CHECK_OK(bf_butd_finalize(net, K));
    return net;
}

/* The step against the fixture; returns the stepped network (NULL when the fixture is missing). */
static bf_butd_net *guided_step(bf_parity *px, const bf_butd_options *opt, const char *update) {
    px->atol = 1e-6;
    px->rtol = 1e-4;
    px->name_width = 36;
    bf_backend *b = px->backend;
    bf_butd_net *net = small_net(b, opt);
    if (!net) return NULL;
    butd_fixture_load_weights(px, net);
    int32_t tasks[N], labels[N];
    float *x = butd_fixture_batch(px, N, 1, 12, 12, tasks, labels);
    int32_t *dlabels = NULL;
    float *losses = NULL, *dl = NULL;
    CHECK_OK(bf_alloc(b, sizeof labels, (void **)&dlabels));
    CHECK_OK(bf_alloc(b, N * sizeof(float), (void **)&losses));
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dl));
    CHECK_OK(bf_to_device(b, dlabels, labels, sizeof labels));

    const float *logits = NULL;
    CHECK_OK(bf_butd_instruct(net, tasks));
    CHECK_OK(bf_butd_forward(net, x, &logits));
    float *lh = bf_test_download(b, logits, N * K);
    bf_parity_compare(px, "pass 2", "expected.logits", lh, N * K);
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, dlabels, 0.0f, 1.0f, losses, dl));
    float *loss = bf_test_download(b, losses, N);
    float mean = 0;
    for (int i = 0; i < N; i++) mean += loss[i] / N;
    bf_parity_compare(px, "loss", "expected.loss", &mean, 1);
    CHECK_OK(bf_butd_backward(net, dl));
    butd_fixture_compare_params(px, net, net->grad_data, update, "grad.");
    bf_optim_config oc = {.optimizer = BF_OPTIM_ADAMW, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    bf_optimizer *o = NULL;
    CHECK_OK(bf_optimizer_create(b, &oc, net->num_param_floats, &o));
    CHECK_OK(bf_optimizer_step(b, o, net->param_data, net->grad_data, oc.lr, NULL));
    butd_fixture_compare_params(px, net, net->param_data, "adam step", "after1.");
    bf_optimizer_destroy(b, o);
    free(loss), free(lh);
    bf_free(b, x), bf_free(b, dlabels), bf_free(b, losses), bf_free(b, dl);
    return net;
}

/* A trained task head is saved once, among the parameters, and reloads; blocks are refused. */
static void trained_head_checks(bf_backend *b, bf_butd_net *net, const bf_butd_options *opt) {
    CHECK(net->task_param >= 0 && net->task_data == net->param_data + net->params[net->task_param].offset,
          "the trained task head's weights are parameters");
    const char *path = "/tmp/bioflex_test_butd_task_head.safetensors";
    CHECK_OK(bf_butd_save(net, path));
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(path, &f));
    if (f) {
        CHECK(bf_safetensors_find(f, "task_head.1.weight") != NULL, "task_head.1.weight saved");
        CHECK(bf_safetensors_count(f) == net->num_params, "%d tensors saved for %d parameters",
              bf_safetensors_count(f), net->num_params);
        bf_safetensors_close(f);
    }
    CHECK_OK(bf_butd_load(net, path));
    remove(path);
    bf_butd_net *blocks = NULL;
    CHECK_OK(bf_butd_create(b, 1, 12, 12, N, opt, &blocks));
    bf_butd_add_conv(blocks, "conv1", 4, 3, 1, 1, 1, 0);
    bf_butd_add_block(blocks, "layer1.0", 4, 1);
    bf_status s = bf_butd_finalize(blocks, K);
    CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "train_task_head"), "blocks refused: %s", bf_last_error());
    bf_butd_destroy(blocks);
}

int main(void) {
    bf_parity px;
    if (bf_parity_open(&px, BIOFLEX_SOURCE_DIR "/tests/fixtures/butd_guided.safetensors",
                       "bench/make_butd_parity_fixture.py", 1)) {
        bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 0, .guided = 1, .num_tasks = T,
                               .task_embedding = 6, .seed = 1};
        bf_butd_destroy(guided_step(&px, &opt, "counter-hebb"));
        bf_parity_close(&px);
    }
    if (bf_parity_open(&px, BIOFLEX_SOURCE_DIR "/tests/fixtures/butd_task_head.safetensors",
                       "bench/make_butd_task_head_fixture.py", 1)) {
        bf_butd_options opt = {.learning = BF_BUTD_BACKPROP, .shared_weights = 1, .guided = 1, .num_tasks = T,
                               .task_embedding = 6, .train_task_head = 1, .seed = 1};
        bf_butd_net *net = guided_step(&px, &opt, "straight-through");
        if (net) trained_head_checks(px.backend, net, &opt);
        bf_butd_destroy(net);
        bf_parity_close(&px);
    }
    if (bf_parity_open(&px, BIOFLEX_SOURCE_DIR "/tests/fixtures/butd_multi_decoders.safetensors",
                       "bench/make_butd_task_head_fixture.py", 1)) {
        bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 1, .guided = 1, .num_tasks = T,
                               .task_embedding = 6, .multi_decoders = 1, .seed = 1};
        bf_butd_destroy(guided_step(&px, &opt, "multi-decoder counter-hebb"));
        bf_parity_close(&px);
    }
    return bf_test_finish();
}
