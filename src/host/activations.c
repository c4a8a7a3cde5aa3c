/* activations.c - every layer's output for the first images of a split, into a safetensors file
 * (analysis.h says what is written). The model's forward hands each layer's output to
 * on_layer_forward as soon as it is computed, before the memory plan reuses the buffer, and a flex
 * layer's convolution output to on_flex_conv before its joint; the chosen layers' tensors are
 * copied to host tensors laid out [images, ...], or [T, images, ...] inside the time steps. */
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
    float **conv;              /* per flex layer kept: its convolution's output C, as out */
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

/* A layer-shaped tensor of the batch (backend memory) into its place in a host tensor of the file. */
static bf_status keep(const dump *d, const bf_model *m, const bf_layer *l, const float *from, float *to) {
    const size_t per = bf_shape_per_sample(l->out_shape), step = (size_t)m->batch * per;
    for (int t = 0; t < l->time_steps; t++) /* step t of the batch into step t of the file */
        BF_TRY(bf_to_host(m->backend, to + ((size_t)t * d->images + d->offset) * per, from + t * step,
                          (size_t)d->n * per * sizeof(float)));
    return BF_OK;
}

static bf_status keep_output(void *ctx, bf_model *m, int i) {
    dump *d = ctx;
    return d->out[i] ? keep(d, m, &m->layers[i], m->layers[i].out, d->out[i]) : BF_OK;
}

/* A flex layer's C; where the joint was to add the conv's bias (fold_conv_bias), added here. */
static bf_status keep_conv(void *ctx, bf_model *m, int i, const float *conv) {
    dump *d = ctx;
    const bf_layer *l = &m->layers[i];
    if (!d->conv[i]) return BF_OK;
    BF_TRY(keep(d, m, l, conv, d->conv[i]));
    const int bias_left = m->fold_conv_bias && l->flex_opt.joint != BF_FLEX_JOINT_MASK && l->param_index[1] >= 0;
    if (!bias_left) return BF_OK;
    const int c = l->out_shape.c;
    const size_t hw = (size_t)l->out_shape.h * l->out_shape.w;
    float *bias = malloc((size_t)c * sizeof(float));
    if (!bias) return bf_error(BF_ERR_OOM, "activations: out of host memory");
    bf_status s = bf_to_host(m->backend, bias, m->param_data + m->params[l->param_index[1]].offset, (size_t)c * sizeof(float));
    for (int t = 0; s == BF_OK && t < l->time_steps; t++)
        for (int j = 0; j < d->n; j++) {
            float *plane = d->conv[i] + ((size_t)t * d->images + d->offset + j) * (size_t)c * hw;
            for (size_t e = 0; e < (size_t)c * hw; e++) plane[e] += bias[e / hw];
        }
    free(bias);
    return s;
}

static bf_status write_file(const bf_model *m, const dump *d, const float *input, const int32_t *labels,
                            const char *path) {
    bf_st_tensor *t = calloc(2 * (size_t)m->num_layers + 2, sizeof *t);
    if (!t) return bf_error(BF_ERR_OOM, "activations: out of host memory");
    int k = 0;
    const bf_shape in = m->input_shape;
    t[k++] = (bf_st_tensor){.name = "input", .dtype = BF_DTYPE_F32, .ndim = 4, .shape = {d->images, in.c, in.h, in.w},
                            .data = input, .nbytes = (size_t)d->images * bf_shape_per_sample(in) * sizeof(float)};
    t[k++] = (bf_st_tensor){.name = "labels", .dtype = BF_DTYPE_I32, .ndim = 1, .shape = {d->images}, .data = labels,
                            .nbytes = (size_t)d->images * sizeof(int32_t)};
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        for (int branch = 0; branch < 2; branch++) { /* the output, then a flex layer's C */
            float *data = branch ? d->conv[i] : d->out[i];
            if (!data) continue;
            bf_st_tensor *x = &t[k++];
            snprintf(x->name, sizeof x->name, "%s%s", l->name, branch ? ".flex_conv" : "");
            x->dtype = BF_DTYPE_F32;
            const int64_t dims[4] = {d->images, l->out_shape.c, l->out_shape.h, l->out_shape.w};
            const int timed = l->time_steps > 1;
            x->ndim = timed ? 5 : 4;
            x->shape[0] = l->time_steps;
            memcpy(x->shape + timed, dims, sizeof dims);
            x->data = data;
            x->nbytes = (size_t)l->time_steps * d->images * bf_shape_per_sample(l->out_shape) * sizeof(float);
        }
    }
    bf_st_meta meta[1];
    snprintf(meta[0].key, sizeof meta[0].key, "layout");
    snprintf(meta[0].value, sizeof meta[0].value, "each layer's output in evaluation mode: [images, C, H, W], or [T, images, "
             "C, H, W] inside the time steps (a linear layer's C features with H = W = 1); LAYER.flex_conv: a flex "
             "layer's convolution output before its joint");
    bf_status s = bf_safetensors_write(path, t, k, meta, 1);
    free(t);
    return s;
}

bf_status bf_dump_activations(bf_model *m, bf_loader *loader, int images, const char *layers, const char *path,
                              int *kept_layers) {
    if (images < 1) return bf_error(BF_ERR_ARG, "activations: %d images (at least 1)", images);
    bf_backend *b = m->backend;
    const size_t image_floats = bf_shape_per_sample(m->input_shape);
    dump d = {.images = images, .out = calloc((size_t)m->num_layers, sizeof(float *)),
              .conv = calloc((size_t)m->num_layers, sizeof(float *))};
    float *input = malloc((size_t)images * image_floats * sizeof(float)), *x = NULL;
    int32_t *labels = malloc((size_t)images * sizeof(int32_t));
    bf_status s = d.out && d.conv && input && labels ? BF_OK : bf_error(BF_ERR_OOM, "activations: out of host memory");
    *kept_layers = 0;
    for (int i = 0; s == BF_OK && i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (!chosen(l->name, layers)) continue;
        const size_t floats = (size_t)l->time_steps * images * bf_shape_per_sample(l->out_shape);
        if (!(d.out[i] = malloc(floats * sizeof(float))) ||
            (l->kind == BF_LAYER_FLEX && bf_flex_has_conv(l) && !(d.conv[i] = malloc(floats * sizeof(float)))))
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
    m->on_flex_conv = keep_conv;
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
    m->on_flex_conv = NULL;
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
    for (int i = 0; d.conv && i < m->num_layers; i++) free(d.conv[i]);
    free(d.out), free(d.conv), free(input), free(labels);
    return s == BF_OK ? BF_OK : bf_error_context(s, "activations");
}
