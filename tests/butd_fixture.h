/* butd_fixture.h - what the BU-TD PyTorch-parity tests (test_butd_parity.c and
 * butd_bn_parity.h) share: loading a fixture's weights into a network by name, its batch, and
 * comparing parameters or gradients with it. */
#ifndef BIOFLEX_TEST_BUTD_FIXTURE_H
#define BIOFLEX_TEST_BUTD_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

#include "bioflex/butd.h"
#include "parity_util.h"
#include "testutil.h"

/* Every trained parameter by its name, then a fixed task head ("task_head.<i>.weight"; a trained
 * one is among the parameters). */
static void butd_fixture_load_weights(const bf_parity *px, bf_butd_net *net) {
    bf_backend *b = px->backend;
    float *host = malloc(net->num_param_floats * sizeof(float));
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        CHECK_OK(bf_safetensors_copy_out(px->fixture, q->name, BF_DTYPE_F32, q->ndim, q->shape, host + q->offset));
    }
    CHECK_OK(bf_to_device(b, net->param_data, host, net->num_param_floats * sizeof(float)));
    free(host);
    if (net->task_param >= 0 || net->num_task_floats == 0) return;
    float *task = malloc(net->num_task_floats * sizeof(float));
    for (int i = 0; i < net->num_task_layers; i++) {
        const bf_butd_layer *l = &net->task_head[i];
        char name[32];
        snprintf(name, sizeof name, "task_head.%d.weight", i);
        int64_t shape[2] = {l->out_size, l->in_size};
        CHECK_OK(bf_safetensors_copy_out(px->fixture, name, BF_DTYPE_F32, 2, shape, task + l->w));
    }
    CHECK_OK(bf_to_device(b, net->task_data, task, net->num_task_floats * sizeof(float)));
    free(task);
}

/* Every trained parameter of `data` (param_data or grad_data, backend memory) against the
 * fixture's "<prefix><name>". */
static void butd_fixture_compare_params(const bf_parity *px, const bf_butd_net *net, const float *data,
                                        const char *what, const char *prefix) {
    float *host = bf_test_download(px->backend, data, net->num_param_floats);
    char name[BF_NAME_MAX + 16];
    for (int p = 0; p < net->num_params; p++) {
        snprintf(name, sizeof name, "%s%s", prefix, net->params[p].name);
        bf_parity_compare(px, what, name, host + net->params[p].offset, net->params[p].count);
    }
    free(host);
}

/* The fixture's batch: "tasks" and "labels" (I32, n each) into host arrays, "input" [n, c, h, w]
 * uploaded to px->backend (returned; bf_free it). */
static float *butd_fixture_batch(const bf_parity *px, int n, int c, int h, int w, int32_t *tasks, int32_t *labels) {
    size_t count = (size_t)n * c * h * w;
    float *xh = malloc(count * sizeof(float));
    int64_t xs[4] = {n, c, h, w}, ns[1] = {n};
    CHECK_OK(bf_safetensors_copy_out(px->fixture, "input", BF_DTYPE_F32, 4, xs, xh));
    CHECK_OK(bf_safetensors_copy_out(px->fixture, "tasks", BF_DTYPE_I32, 1, ns, tasks));
    CHECK_OK(bf_safetensors_copy_out(px->fixture, "labels", BF_DTYPE_I32, 1, ns, labels));
    float *x = bf_test_upload(px->backend, xh, count);
    free(xh);
    return x;
}

#endif
