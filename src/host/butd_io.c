/* butd_io.c - a BU-TD network's weights to and from safetensors files (names patterned on the
 * reference's modules; the fixed task head and batch-norm's running statistics included), and its
 * layer table (--dry-run). */
#include <stdlib.h>
#include <string.h>

#include "bioflex/safetensors.h"
#include "butd_internal.h"

bf_status bf_butd_save(const bf_butd_net *net, const char *path) {
    bf_backend *b = net->backend;
    int fixed_head = net->task_param < 0 ? net->num_task_layers : 0; /* a trained head is among the params */
    int num_state = bf_butd_norm_state_count(net), count = net->num_params + fixed_head + num_state;
    size_t state_at = net->num_param_floats + net->num_task_floats; /* the running statistics after both */
    float *host = malloc((state_at + net->num_state_floats + 1) * sizeof(float));
    bf_st_tensor *t = calloc((size_t)count + 1, sizeof *t);
    if (!host || !t) {
        free(host), free(t);
        return bf_error(BF_ERR_OOM, "butd: out of memory");
    }
    bf_status s = bf_to_host(b, host, net->param_data, net->num_param_floats * sizeof(float));
    if (s == BF_OK && fixed_head)
        s = bf_to_host(b, host + net->num_param_floats, net->task_data, net->num_task_floats * sizeof(float));
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        snprintf(t[p].name, sizeof t[p].name, "%s", q->name);
        t[p].dtype = BF_DTYPE_F32;
        t[p].ndim = q->ndim;
        for (int d = 0; d < q->ndim; d++) t[p].shape[d] = q->shape[d];
        t[p].data = host + q->offset;
        t[p].nbytes = q->count * sizeof(float);
    }
    for (int i = 0; i < fixed_head; i++) { /* the fixed task head, as the reference's state_dict */
        const bf_butd_layer *l = &net->task_head[i];
        bf_st_tensor *e = &t[net->num_params + i];
        snprintf(e->name, sizeof e->name, "%s.weight", l->name);
        e->dtype = BF_DTYPE_F32;
        e->ndim = 2;
        e->shape[0] = l->out_size, e->shape[1] = l->in_size;
        e->data = host + net->num_param_floats + l->w;
        e->nbytes = (size_t)l->in_size * l->out_size * sizeof(float);
    }
    if (s == BF_OK && num_state) s = bf_to_host(b, host + state_at, net->state_data, net->num_state_floats * sizeof(float));
    for (int k = 0; k < num_state; k++) { /* batch-norm running statistics, BU and TD */
        bf_st_tensor *e = &t[net->num_params + fixed_head + k];
        size_t offset;
        bf_butd_norm_state_entry(net, k, e->name, sizeof e->name, &offset, &e->shape[0]);
        e->dtype = BF_DTYPE_F32;
        e->ndim = 1;
        e->data = host + state_at + offset;
        e->nbytes = (size_t)e->shape[0] * sizeof(float);
    }
    bf_st_meta meta[1] = {{"bioflex_network", "butd"}};
    if (s == BF_OK) s = bf_safetensors_write(path, t, count, meta, 1);
    free(host);
    free(t);
    return s;
}

static int is_downsample_back_weight(const bf_butd_net *net, int p) {
    for (int i = 0; i < net->num_layers; i++)
        if (net->layers[i].td_wd == p) return 1;
    return 0;
}

/* Weights of a separate-weight ResNet whose 1x1 downsamples shared W (the reference's, or
 * bioflex's before they had a B) lack the downsamples' back_weight: the message says how they load. */
static bf_status explain_missing(const bf_butd_net *net, const bf_st_file *f, int p, bf_status s) {
    if (s != BF_ERR_CHECKPOINT || !is_downsample_back_weight(net, p) || bf_safetensors_find(f, net->params[p].name))
        return s;
    char message[1024];
    snprintf(message, sizeof message, "%s", bf_last_error());
    return bf_error(s, "%s; weights saved with the 1x1 downsamples sharing W load with [butd] "
                       "downsample_always_shared = true", message);
}

/* Whether the network has a tensor of this name: a parameter, a fixed task head's weight or a
 * batch-norm's running statistic (what bf_butd_save writes). */
static int has_tensor(const bf_butd_net *net, const char *name) {
    for (int p = 0; p < net->num_params; p++)
        if (strcmp(net->params[p].name, name) == 0) return 1;
    for (int i = 0; net->task_param < 0 && i < net->num_task_layers; i++) {
        char weight[BF_NAME_MAX + 16];
        snprintf(weight, sizeof weight, "%s.weight", net->task_head[i].name);
        if (strcmp(weight, name) == 0) return 1;
    }
    for (int k = 0; k < bf_butd_norm_state_count(net); k++) {
        char entry[BF_NAME_MAX + 32];
        size_t offset;
        int64_t count;
        bf_butd_norm_state_entry(net, k, entry, sizeof entry, &offset, &count);
        if (strcmp(entry, name) == 0) return 1;
    }
    return 0;
}

bf_status bf_butd_load(bf_butd_net *net, const char *path) {
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(path, &f));
    size_t state_at = net->num_param_floats + net->num_task_floats;
    float *host = malloc((state_at + net->num_state_floats + 1) * sizeof(float));
    bf_status s = host ? BF_OK : bf_error(BF_ERR_OOM, "butd: out of memory");
    const char *kind = bf_safetensors_meta(f, "bioflex_network");
    if (s == BF_OK && (!kind || strcmp(kind, "butd") != 0))
        s = bf_error(BF_ERR_CHECKPOINT, "%s is not a BU-TD network's weights (metadata bioflex_network = %s)", path,
                     kind ? kind : "missing");
    for (int p = 0; p < net->num_params && s == BF_OK; p++) {
        const bf_param *q = &net->params[p];
        s = explain_missing(net, f, p, bf_safetensors_copy_out(f, q->name, BF_DTYPE_F32, q->ndim, q->shape,
                                                               host + q->offset));
    }
    int fixed_head = net->task_param < 0 ? net->num_task_layers : 0; /* a trained head is among the params */
    for (int i = 0; i < fixed_head && s == BF_OK; i++) {
        const bf_butd_layer *l = &net->task_head[i];
        char name[BF_NAME_MAX + 16];
        int64_t shape[2] = {l->out_size, l->in_size};
        snprintf(name, sizeof name, "%s.weight", l->name);
        s = bf_safetensors_copy_out(f, name, BF_DTYPE_F32, 2, shape, host + net->num_param_floats + l->w);
    }
    int num_state = bf_butd_norm_state_count(net);
    for (int k = 0; k < num_state && s == BF_OK; k++) {
        char name[BF_NAME_MAX + 32];
        size_t offset;
        int64_t shape[1];
        bf_butd_norm_state_entry(net, k, name, sizeof name, &offset, &shape[0]);
        s = bf_safetensors_copy_out(f, name, BF_DTYPE_F32, 1, shape, host + state_at + offset);
    }
    /* a tensor this network lacks: the file holds another network. A back_weight is let through:
     * separate weights start a shared network ([model] init_weights) or are evaluated as one, which
     * bioflex-eval notes and a resume refuses (the checkpoint's network phrase) */
    for (int i = 0; i < bf_safetensors_count(f) && s == BF_OK; i++) {
        const char *name = bf_safetensors_at(f, i)->name;
        size_t len = strlen(name), suffix = strlen(".back_weight");
        int back_weight = len > suffix && strcmp(name + len - suffix, ".back_weight") == 0;
        if (!back_weight && !has_tensor(net, name))
            s = bf_error(BF_ERR_CHECKPOINT, "%s holds %s, which this BU-TD network does not have (written by a network "
                         "with other [butd] network, weights, guided or batch_norm settings?)", path,
                         bf_safetensors_at(f, i)->name);
    }
    if (s == BF_OK && num_state)
        s = bf_to_device(net->backend, net->state_data, host + state_at, net->num_state_floats * sizeof(float));
    if (s == BF_OK) s = bf_to_device(net->backend, net->param_data, host, net->num_param_floats * sizeof(float));
    if (s == BF_OK && fixed_head)
        s = bf_to_device(net->backend, net->task_data, host + net->num_param_floats,
                         net->num_task_floats * sizeof(float));
    free(host);
    bf_safetensors_close(f);
    return s;
}

void bf_butd_print_table(const bf_butd_net *net, FILE *out) {
    static const char *kinds[] = {"linear", "conv", "block"};
    fprintf(out, "%-20s %-7s %-16s %12s\n", "layer", "kind", "output", "parameters");
    for (int i = 0; i < net->num_layers; i++) {
        const bf_butd_layer *l = &net->layers[i];
        size_t count = 0;
        for (int p = 0; p < net->num_params; p++)
            if (net->params[p].layer == i) count += net->params[p].count;
        char shape[32];
        snprintf(shape, sizeof shape, "%dx%dx%d", l->out_c, l->out_h, l->out_w);
        fprintf(out, "%-20s %-7s %-16s %12zu\n", l->name, kinds[l->kind], shape, count);
    }
    fprintf(out, "total: %zu parameters (%.1f MiB)%s\n", net->num_param_floats, net->num_param_floats * 4.0 / 1048576.0,
            !net->opt.guided ? "" : net->task_param >= 0 ? ", the trained task head among them" : ", plus the fixed task head");
}
