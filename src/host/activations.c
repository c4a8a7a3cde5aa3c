/* activations.c - every layer's output for the first images of a split, into a safetensors file
 * (analysis.h says what is written). The model's forward hands each layer's output to
 * on_layer_forward as soon as it is computed, before the memory plan reuses the buffer; the
 * outputs of the chosen layers are copied to host tensors laid out [images, ...], or
 * [T, images, ...] inside the time steps. */
#include <stdlib.h>
#include <string.h>

#include "batch_upload.h"
#include "bioflex/analysis.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"

typedef struct dump {
    int images;                /* the file's image count */
    int offset, n;             /* the current batch: its first image's place, its images */
    float **out;               /* per layer: host [T, images, per_sample], NULL = not kept */
} dump;

/* Whether a layer's name starts with one of the comma-separated prefixes ("" = every layer). */
static int chosen(const char *name, const char *prefixes) {
    if (!prefixes || !*prefixes) return 1;
    for (const char *p = prefixes; *p;) {
        const char *end = strchr(p, ',');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len && strncmp(name, p, len) == 0) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

static bf_status keep_output(void *ctx, bf_model *m, int i) {
    dump *d = ctx;
    const bf_layer *l = &m->layers[i];
    if (!d->out[i]) return BF_OK;
    const size_t per = bf_shape_per_sample(l->out_shape), step = (size_t)m->batch * per;
    for (int t = 0; t < l->time_steps; t++) /* step t of the batch into step t of the file */
        BF_TRY(bf_to_host(m->backend, d->out[i] + ((size_t)t * d->images + d->offset) * per, l->out + t * step,
                          (size_t)d->n * per * sizeof(float)));
    return BF_OK;
}

static bf_status write_file(const bf_model *m, const dump *d, const float *input, const int32_t *labels,
                            const char *path) {
    bf_st_tensor *t = calloc((size_t)m->num_layers + 2, sizeof *t);
    if (!t) return bf_error(BF_ERR_OOM, "activations: out of host memory");
    int k = 0;
    const bf_shape in = m->input_shape;
    t[k++] = (bf_st_tensor){.name = "input", .dtype = BF_DTYPE_F32, .ndim = 4, .shape = {d->images, in.c, in.h, in.w},
                            .data = input, .nbytes = (size_t)d->images * bf_shape_per_sample(in) * sizeof(float)};
    t[k++] = (bf_st_tensor){.name = "labels", .dtype = BF_DTYPE_I32, .ndim = 1, .shape = {d->images}, .data = labels,
                            .nbytes = (size_t)d->images * sizeof(int32_t)};
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (!d->out[i]) continue;
        bf_st_tensor *x = &t[k++];
        snprintf(x->name, sizeof x->name, "%s", l->name);
        x->dtype = BF_DTYPE_F32;
        const int64_t dims[4] = {d->images, l->out_shape.c, l->out_shape.h, l->out_shape.w};
        const int timed = l->time_steps > 1;
        x->ndim = timed ? 5 : 4;
        x->shape[0] = l->time_steps;
        memcpy(x->shape + timed, dims, sizeof dims);
        x->data = d->out[i];
        x->nbytes = (size_t)l->time_steps * d->images * bf_shape_per_sample(l->out_shape) * sizeof(float);
    }
    bf_st_meta meta[1];
    snprintf(meta[0].key, sizeof meta[0].key, "layout");
    snprintf(meta[0].value, sizeof meta[0].value, "each layer's output in evaluation mode: [images, C, H, W], or [T, images, "
             "C, H, W] inside the time steps (a linear layer's C features with H = W = 1)");
    bf_status s = bf_safetensors_write(path, t, k, meta, 1);
    free(t);
    return s;
}

bf_status bf_dump_activations(bf_model *m, bf_loader *loader, int images, const char *layers, const char *path,
                              int *kept_layers) {
    if (images < 1) return bf_error(BF_ERR_ARG, "activations: %d images (at least 1)", images);
    bf_backend *b = m->backend;
    const size_t image_floats = bf_shape_per_sample(m->input_shape);
    dump d = {.images = images, .out = calloc((size_t)m->num_layers, sizeof(float *))};
    float *input = malloc((size_t)images * image_floats * sizeof(float)), *x = NULL;
    int32_t *labels = malloc((size_t)images * sizeof(int32_t));
    bf_status s = d.out && input && labels ? BF_OK : bf_error(BF_ERR_OOM, "activations: out of host memory");
    *kept_layers = 0;
    for (int i = 0; s == BF_OK && i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (!chosen(l->name, layers)) continue;
        const size_t floats = (size_t)l->time_steps * images * bf_shape_per_sample(l->out_shape);
        if (!(d.out[i] = malloc(floats * sizeof(float))))
            s = bf_error(BF_ERR_OOM, "activations: out of host memory for %s (%zu floats)", l->name, floats);
        (*kept_layers)++;
    }
    if (s == BF_OK && *kept_layers == 0)
        s = bf_error(BF_ERR_ARG, "activations: no layer's name starts with '%s' (the model table of --dry-run names "
                     "them)", layers);
    bf_batch_uploader *upload = NULL;
    if (s == BF_OK) s = bf_alloc(b, (size_t)m->input_shape.n * image_floats * sizeof(float), (void **)&x);
    if (s == BF_OK) s = bf_batch_uploader_create(b, &upload);
    const int was_training = m->training, shuffled = bf_loader_set_shuffle(loader, 0);
    const uint64_t step = m->step, offset = m->sample_offset;
    m->training = 0;
    m->on_layer_forward = keep_output;
    m->on_layer_forward_ctx = &d;
    if (s == BF_OK) s = bf_loader_start_epoch(loader, 0, 0);
    while (s == BF_OK && d.offset < images) {
        bf_batch *batch = NULL;
        s = bf_loader_next(loader, &batch, NULL);
        if (s != BF_OK) break;
        if (!batch) {
            s = bf_error(BF_ERR_ARG, "activations: the split has %d images, fewer than the %d asked for", d.offset, images);
            break;
        }
        d.n = batch->n < images - d.offset ? batch->n : images - d.offset;
        memcpy(labels + d.offset, batch->labels, (size_t)d.n * sizeof(int32_t));
        const uint64_t position = (uint64_t)batch->position;
        s = bf_batch_upload_once(upload, loader, batch, x, NULL, 0);
        const float *logits = NULL;
        m->step = BF_EVAL_STEP; /* drawn as bf_evaluate draws */
        m->sample_offset = position;
        if (s == BF_OK) s = bf_model_set_batch(m, d.n);
        if (s == BF_OK) s = bf_to_host(b, input + (size_t)d.offset * image_floats, x, (size_t)d.n * image_floats * sizeof(float));
        if (s == BF_OK) s = bf_model_forward(m, x, &logits);
        d.offset += d.n;
    }
    m->on_layer_forward = NULL;
    m->on_layer_forward_ctx = NULL;
    m->training = was_training;
    m->step = step;
    m->sample_offset = offset;
    bf_model_set_batch(m, m->input_shape.n);
    bf_loader_set_shuffle(loader, shuffled);
    if (s == BF_OK) s = write_file(m, &d, input, labels, path);
    bf_batch_uploader_destroy(upload);
    bf_free(b, x);
    for (int i = 0; d.out && i < m->num_layers; i++) free(d.out[i]);
    free(d.out), free(input), free(labels);
    return s == BF_OK ? BF_OK : bf_error_context(s, "activations");
}
