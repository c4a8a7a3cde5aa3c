/* butd_norm.c - batch-norm inside BU-TD networks (see butd_internal.h and the bf_butd_norm comment in
 * include/bioflex/butd.h; spec section 1.4, "BatchNorm"). Every operation is a bf_ops batch-norm
 * op, so the CPU and CUDA backends share this file. */
#include <stdlib.h>
#include <string.h>

#include "butd_internal.h"
#include "sync_bn.h"

#define NORM_EPS 1e-5f     /* PyTorch's BatchNorm2d defaults, as the reference */
#define NORM_MOMENTUM 0.1f

bf_butd_norm *bf_butd_norm_new(const char *name, int max_batch, int c, int hw, int td_c, int td_hw) {
    bf_butd_norm *norm = calloc(1, sizeof *norm);
    if (!norm) {
        bf_error(BF_ERR_OOM, "butd: out of memory for batch-norm %s", name);
        return NULL;
    }
    snprintf(norm->name, sizeof norm->name, "%s", name);
    norm->bu = (bf_bn_shape){.n = max_batch, .c = c, .hw = hw, .eps = NORM_EPS, .momentum = NORM_MOMENTUM};
    norm->td = (bf_bn_shape){.n = max_batch, .c = td_c, .hw = td_hw, .eps = NORM_EPS, .momentum = NORM_MOMENTUM};
    norm->gamma = norm->beta = -1;
    return norm;
}

/* The k-th norm of the network, in layer order (conv or conv1, conv2, downsample); NULL past the last. */
static bf_butd_norm *norm_at(const bf_butd_net *net, int k) {
    for (int i = 0; i < net->num_layers; i++)
        for (int j = 0; j < 3; j++)
            if (net->layers[i].norm[j] && k-- == 0) return net->layers[i].norm[j];
    return NULL;
}

bf_status bf_butd_norm_add_params(bf_butd_net *net, bf_butd_norm *norm, int layer) {
    int64_t shape[1] = {norm->bu.c};
    norm->gamma = bf_butd_param_add(net, norm->name, "weight", 1, shape, norm->bu.c, layer);
    norm->beta = bf_butd_param_add(net, norm->name, "bias", 1, shape, norm->bu.c, layer);
    if (norm->gamma < 0 || norm->beta < 0) return bf_error(BF_ERR_OOM, "butd: out of memory");
    norm->state = net->num_state_floats;
    net->num_state_floats += 2 * (size_t)norm->bu.c + 2 * (size_t)norm->td.c;
    return BF_OK;
}

static void fill(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

void bf_butd_norm_init(const bf_butd_net *net, float *host_params, float *host_state) {
    for (int k = 0;; k++) {
        const bf_butd_norm *norm = norm_at(net, k);
        if (!norm) break;
        fill(host_params + net->params[norm->gamma].offset, (size_t)norm->bu.c, 1.0f);
        fill(host_params + net->params[norm->beta].offset, (size_t)norm->bu.c, 0.0f);
        float *s = host_state + norm->state;
        size_t c = (size_t)norm->bu.c, td = (size_t)norm->td.c;
        fill(s, c, 0.0f), fill(s + c, c, 1.0f);
        fill(s + 2 * c, td, 0.0f), fill(s + 2 * c + td, td, 1.0f);
    }
}

bf_status bf_butd_norm_allocate(bf_butd_net *net, const float *host_state) {
    bf_backend *b = net->backend;
    int widest = 0;
    for (int k = 0;; k++) {
        bf_butd_norm *norm = norm_at(net, k);
        if (!norm) break;
        BF_TRY(bf_alloc(b, (size_t)norm->bu.n * norm->bu.c * norm->bu.hw * sizeof(float), (void **)&norm->z));
        BF_TRY(bf_alloc(b, 2 * (size_t)norm->bu.c * sizeof(float), (void **)&norm->save));
        BF_TRY(bf_alloc(b, 2 * (size_t)norm->td.c * sizeof(float), (void **)&norm->td_save));
        if (norm->bu.c > widest) widest = norm->bu.c;
        if (norm->td.c > widest) widest = norm->td.c;
    }
    if (widest == 0) return BF_OK; /* no batch-norm */
    BF_TRY(bf_alloc(b, net->num_state_floats * sizeof(float), (void **)&net->state_data));
    BF_TRY(bf_to_device(b, net->state_data, host_state, net->num_state_floats * sizeof(float)));
    BF_TRY(bf_alloc(b, (size_t)widest * sizeof(float), (void **)&net->norm_ones));
    BF_TRY(bf_alloc(b, (size_t)widest * sizeof(float), (void **)&net->norm_zeros)); /* alloc zero-fills */
    net->bn_sync_doubles = 2 * (size_t)widest + 1; /* sync_bn's per-channel sums, when a run sets the hook */
    BF_TRY(bf_alloc(b, net->bn_sync_doubles * sizeof(double), (void **)&net->bn_sync_sums));
    return b->ops->fill(b, net->norm_ones, 1.0f, (size_t)widest);
}

void bf_butd_norm_set_batch(bf_butd_net *net, int n) {
    for (int k = 0;; k++) {
        bf_butd_norm *norm = norm_at(net, k);
        if (!norm) break;
        norm->bu.n = norm->td.n = n;
    }
}

void bf_butd_norm_free(bf_butd_net *net) {
    bf_backend *b = net->backend;
    for (int i = 0; i < net->num_layers; i++)
        for (int j = 0; j < 3; j++) {
            bf_butd_norm *norm = net->layers[i].norm[j];
            if (!norm) continue;
            bf_free(b, norm->z);
            bf_free(b, norm->save);
            bf_free(b, norm->td_save);
            free(norm);
        }
    bf_free(b, net->state_data);
    bf_free(b, net->norm_ones);
    bf_free(b, net->norm_zeros);
    bf_free(b, net->bn_sync_sums);
}

bf_status bf_butd_norm_zero_grads(bf_butd_net *net) {
    bf_backend *b = net->backend;
    for (int k = 0;; k++) {
        bf_butd_norm *norm = norm_at(net, k);
        if (!norm) return BF_OK;
        BF_TRY(b->ops->fill(b, net->grad_data + net->params[norm->gamma].offset, 0.0f, (size_t)norm->bu.c));
        BF_TRY(b->ops->fill(b, net->grad_data + net->params[norm->beta].offset, 0.0f, (size_t)norm->bu.c));
    }
}

static bf_bn_sync net_sync(const bf_butd_net *net) {
    return (bf_bn_sync){net->backend, net->sync_sums, net->sync_ctx, net->bn_sync_sums, net->bn_sync_doubles};
}

bf_status bf_butd_norm_bu(bf_butd_net *net, bf_butd_norm *norm, float *y) {
    bf_backend *b = net->backend;
    const float *gamma = net->param_data + net->params[norm->gamma].offset;
    const float *beta = net->param_data + net->params[norm->beta].offset;
    float *mean = net->state_data + norm->state, *var = mean + norm->bu.c;
    if (!net->training) return b->ops->batchnorm_forward_eval(b, &norm->bu, norm->z, gamma, beta, mean, var, y);
    bf_bn_sync sync = net_sync(net);
    if (net->sync_sums) /* [run] sync_bn: the statistics of every rank's batch */
        return bf_sync_bn_forward_train(&sync, &norm->bu, norm->z, gamma, beta, y, norm->save,
                                        norm->save + norm->bu.c, mean, var);
    return b->ops->batchnorm_forward_train(b, &norm->bu, norm->z, gamma, beta, y, norm->save, norm->save + norm->bu.c,
                                           mean, var);
}

bf_status bf_butd_norm_td(bf_butd_net *net, bf_butd_norm *norm, const float *x, float *y) {
    bf_backend *b = net->backend;
    float *mean = net->state_data + norm->state + 2 * (size_t)norm->bu.c, *var = mean + norm->td.c;
    if (!net->training)
        return b->ops->batchnorm_forward_eval(b, &norm->td, x, net->norm_ones, net->norm_zeros, mean, var, y);
    bf_bn_sync sync = net_sync(net);
    if (net->sync_sums) /* the TD copy too: its statistics are the global batch's task mix */
        return bf_sync_bn_forward_train(&sync, &norm->td, x, net->norm_ones, net->norm_zeros, y, norm->td_save,
                                        norm->td_save + norm->td.c, mean, var);
    return b->ops->batchnorm_forward_train(b, &norm->td, x, net->norm_ones, net->norm_zeros, y, norm->td_save,
                                           norm->td_save + norm->td.c, mean, var);
}

bf_status bf_butd_norm_backward(bf_butd_net *net, bf_butd_norm *norm, const float *dy, float *dz) {
    bf_backend *b = net->backend;
    float *dgamma = net->grad_data + net->params[norm->gamma].offset;
    float *dbeta = net->grad_data + net->params[norm->beta].offset;
    const float *gamma = net->param_data + net->params[norm->gamma].offset;
    bf_bn_sync sync = net_sync(net);
    if (net->sync_sums) /* dz over every rank's batch; dgamma and dbeta this rank's, averaged with the weights */
        BF_TRY(bf_sync_bn_backward(&sync, &norm->bu, norm->z, dy, gamma, norm->save, norm->save + norm->bu.c, dz,
                                   dgamma, dbeta));
    else
        BF_TRY(b->ops->batchnorm_backward(b, &norm->bu, norm->z, dy, gamma, norm->save, norm->save + norm->bu.c, dz,
                                          dgamma, dbeta));
    /* dy holds per-sample gradients: gamma and beta get the batch mean, as the weights do. */
    BF_TRY(b->ops->scale(b, dgamma, 1.0f / (float)norm->bu.n, (size_t)norm->bu.c));
    return b->ops->scale(b, dbeta, 1.0f / (float)norm->bu.n, (size_t)norm->bu.c);
}

int bf_butd_norm_state_count(const bf_butd_net *net) {
    int k = 0;
    while (norm_at(net, k)) k++;
    return 4 * k;
}

void bf_butd_norm_state_entry(const bf_butd_net *net, int k, char *name, size_t name_size, size_t *offset,
                              int64_t *count) {
    static const char *what[4] = {"running_mean", "running_var", "back_running_mean", "back_running_var"};
    const bf_butd_norm *norm = norm_at(net, k / 4);
    int part = k % 4;
    size_t c = (size_t)norm->bu.c, td = (size_t)norm->td.c;
    size_t starts[4] = {0, c, 2 * c, 2 * c + td};
    snprintf(name, name_size, "%s.%s", norm->name, what[part]);
    *offset = norm->state + starts[part];
    *count = (int64_t)(part < 2 ? c : td);
}
