/* test_butd_task_head.c - one guided BU-TD backprop step with the task head trained ([butd]
 * train_task_head: straight-through gates, src/host/butd_task_head.c) against PyTorch autograd:
 * tests/fixtures/butd_task_head.safetensors of bench/make_butd_task_head_fixture.py. Also: a
 * network with blocks is refused, and the trained head is saved once, among the parameters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/train.h"
#include "parity_util.h"
#include "testutil.h"

#ifndef BIOFLEX_SOURCE_DIR
#define BIOFLEX_SOURCE_DIR "."
#endif

enum { N = 6, T = 3, K = 5 };

int main(void) {
    bf_parity px;
    if (!bf_parity_open(&px, BIOFLEX_SOURCE_DIR "/tests/fixtures/butd_task_head.safetensors",
                        "bench/make_butd_task_head_fixture.py", 1))
        return bf_test_finish();
    px.atol = 1e-6;
    px.rtol = 1e-4;
    px.name_width = 36;
    bf_backend *b = px.backend;
    bf_butd_options opt = {.learning = BF_BUTD_BACKPROP, .shared_weights = 1, .guided = 1, .num_tasks = T,
                           .task_embedding = 6, .train_task_head = 1, .seed = 1};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 1, 12, 12, N, &opt, &net));
    bf_butd_add_conv(net, "core_net.0", 4, 3, 1, 0, 1, 1);
    bf_butd_add_conv(net, "core_net.1", 4, 2, 2, 0, 4, 1);
    bf_butd_add_conv(net, "core_net.2", 6, 3, 2, 1, 1, 1);
    bf_butd_add_linear(net, "core_net.3", 10, 1);
    CHECK_OK(bf_butd_finalize(net, K));

    /* The fixture's weights: every trained parameter by name, the task head's among them. */
    float *host = malloc(net->num_param_floats * sizeof(float));
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        CHECK_OK(bf_safetensors_copy_out(px.fixture, q->name, BF_DTYPE_F32, q->ndim, q->shape, host + q->offset));
    }
    CHECK_OK(bf_to_device(b, net->param_data, host, net->num_param_floats * sizeof(float)));
    CHECK(net->task_param >= 0 && net->task_data == net->param_data + net->params[net->task_param].offset,
          "the trained task head's weights are parameters");

    float xh[N * 144];
    int32_t tasks[N], labels[N];
    int64_t xs[4] = {N, 1, 12, 12}, ns[1] = {N};
    CHECK_OK(bf_safetensors_copy_out(px.fixture, "input", BF_DTYPE_F32, 4, xs, xh));
    CHECK_OK(bf_safetensors_copy_out(px.fixture, "tasks", BF_DTYPE_I32, 1, ns, tasks));
    CHECK_OK(bf_safetensors_copy_out(px.fixture, "labels", BF_DTYPE_I32, 1, ns, labels));
    float *x = bf_test_upload(b, xh, N * 144);
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
    bf_parity_compare(&px, "pass 2", "expected.logits", lh, N * K);
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, dlabels, 0.0f, 1.0f, losses, dl));
    float *loss = bf_test_download(b, losses, N);
    float mean = 0;
    for (int i = 0; i < N; i++) mean += loss[i] / N;
    bf_parity_compare(&px, "loss", "expected.loss", &mean, 1);
    CHECK_OK(bf_butd_backward(net, dl));
    float *g = bf_test_download(b, net->grad_data, net->num_param_floats);
    char name[BF_NAME_MAX + 16];
    for (int p = 0; p < net->num_params; p++) {
        snprintf(name, sizeof name, "grad.%s", net->params[p].name);
        bf_parity_compare(&px, "backprop + straight-through", name, g + net->params[p].offset, net->params[p].count);
    }
    bf_optim_config oc = {.optimizer = BF_OPTIM_ADAMW, .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    bf_optimizer *o = NULL;
    CHECK_OK(bf_optimizer_create(b, &oc, net->num_param_floats, &o));
    CHECK_OK(bf_optimizer_step(b, o, net->param_data, net->grad_data, oc.lr, NULL));
    float *after = bf_test_download(b, net->param_data, net->num_param_floats);
    for (int p = 0; p < net->num_params; p++) {
        snprintf(name, sizeof name, "after1.%s", net->params[p].name);
        bf_parity_compare(&px, "adam step", name, after + net->params[p].offset, net->params[p].count);
    }
    bf_optimizer_destroy(b, o);
    free(after), free(g), free(loss), free(lh), free(host);
    bf_free(b, x), bf_free(b, dlabels), bf_free(b, losses), bf_free(b, dl);
    /* Saved once: task_head.*.weight as parameters, no second copy. */
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
    bf_butd_destroy(net);

    /* Residual blocks are refused with a message naming the option. */
    net = NULL;
    CHECK_OK(bf_butd_create(b, 1, 12, 12, N, &opt, &net));
    bf_butd_add_conv(net, "conv1", 4, 3, 1, 1, 1, 0);
    bf_butd_add_block(net, "layer1.0", 4, 1);
    bf_status s = bf_butd_finalize(net, K);
    CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "train_task_head"), "blocks refused: %s", bf_last_error());
    bf_butd_destroy(net);
    bf_parity_close(&px);
    return bf_test_finish();
}
