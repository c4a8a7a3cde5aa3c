/* routing.c - where a checkpoint's channel-wise max flex layers choose the conv branch over the pool
 * branch, on the test split in evaluation mode (analysis.h says what is computed). The forward
 * already writes, per output element, whether the conv won (winners) and tied (ties); after each
 * such layer's forward, on_layer_forward hands its bitmaps to the backend's flex_route_tally, which
 * adds the strict wins to per-element counters on the device and writes each sample's count. Only
 * the samples' counts (a few per image) come to the host per batch, for the per-image and per-class
 * statistics; the per-element counters once, at the end. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch_upload.h"
#include "bioflex/analysis.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "json_number.h"

typedef struct layer_tally {
    int layer;                 /* index in the model */
    size_t per;                /* elements per sample: c_out * h * w */
    uint32_t *elements;        /* backend [per]: strict wins summed over the samples */
    uint32_t *samples;         /* backend [T * max batch]: the current batch's wins per sample */
    uint32_t *host_samples;    /* host copy of samples */
    double sum, sum_sq;        /* over the images: their conv fractions, and squares */
    double *class_sum;         /* [classes]: per class, the sum of its images' fractions */
} layer_tally;

typedef struct routing_run {
    layer_tally *t;
    int count;                 /* channel-wise max flex layers */
    int *tally_of;             /* per model layer: its index in t, or -1 */
    const int32_t *labels;     /* the current batch's labels (host) */
    int classes;
    int *class_images;         /* [classes]: images of each class seen */
} routing_run;

static int is_max_flex(const bf_layer *l) { return l->kind == BF_LAYER_FLEX && l->flex_opt.joint == BF_FLEX_JOINT_MAX; }

/* After a channel-wise max layer's forward: its wins of the batch, counted. */
static bf_status tally_layer(void *ctx, bf_model *m, int i) {
    routing_run *r = ctx;
    if (r->tally_of[i] < 0) return BF_OK;
    layer_tally *t = &r->t[r->tally_of[i]];
    const bf_layer *l = &m->layers[i];
    const int samples = bf_layer_batch(m, l), n = m->batch, steps = l->time_steps;
    bf_backend *b = m->backend;
    BF_TRY(b->ops->flex_route_tally(b, samples, t->per, l->flex_winners, l->flex_ties, t->elements, t->samples));
    BF_TRY(bf_to_host(b, t->host_samples, t->samples, (size_t)samples * sizeof(uint32_t)));
    for (int k = 0; k < n; k++) { /* samples are [T, n]: image k's steps are k, n + k, ... */
        double won = 0;
        for (int step = 0; step < steps; step++) won += t->host_samples[(size_t)step * n + k];
        const double fraction = won / ((double)steps * (double)t->per);
        t->sum += fraction, t->sum_sq += fraction * fraction;
        const int label = r->labels[k];
        if (label >= 0 && label < r->classes) t->class_sum[label] += fraction;
    }
    return BF_OK;
}

/* One layer's JSON object from its per-element probabilities p (host, [per]) over `images`. */
static void write_layer(FILE *f, const bf_model *m, const layer_tally *t, const float *p, int images,
                        const routing_run *r, int last) {
    const bf_layer *l = &m->layers[t->layer];
    const bf_shape s = l->out_shape;
    const size_t hw = (size_t)s.h * s.w;
    double conv = 0;
    size_t always_conv = 0, always_pool = 0;
    for (size_t e = 0; e < t->per; e++) {
        conv += p[e];
        always_conv += p[e] > 0.95f, always_pool += p[e] < 0.05f;
    }
    const double mean = t->sum / images, var = t->sum_sq / images - mean * mean;
    fprintf(f, "    {\"name\": \"%s\", \"joint\": \"channelwise_max\", \"shape\": [%d, %d, %d], \"time_steps\": %d,\n",
            l->name, s.c, s.h, s.w, l->time_steps);
    fprintf(f, "     \"conv\": %.7g, \"always_conv\": %.7g, \"always_pool\": %.7g, \"static_share\": %.7g,\n",
            conv / (double)t->per, (double)always_conv / (double)t->per, (double)always_pool / (double)t->per,
            (double)(always_conv + always_pool) / (double)t->per);
    fprintf(f, "     \"per_image_mean\": %.7g, \"per_image_std\": %.7g,\n     \"per_class\": [", mean,
            sqrt(var > 0 ? var : 0));
    for (int k = 0; k < r->classes; k++) /* a class without images in the scored split: null */
        bf_json_number(f, k ? ", " : "", r->class_images[k] ? t->class_sum[k] / r->class_images[k] : NAN, 7);
    fprintf(f, "],\n     \"per_channel\": [");
    for (int c = 0; c < s.c; c++) {
        double sum = 0;
        for (size_t e = (size_t)c * hw; e < (size_t)(c + 1) * hw; e++) sum += p[e];
        fprintf(f, "%s%.7g", c ? ", " : "", sum / (double)hw);
    }
    fprintf(f, "]}%s\n", last ? "" : ",");
}

/* The JSON (and the maps' file): every flex layer in model order, the mask joints by name only. */
static bf_status write_results(const bf_model *m, const routing_run *r, int images, FILE *json, const char *maps_path) {
    bf_backend *b = m->backend;
    float **maps = calloc((size_t)r->count, sizeof *maps);
    bf_st_tensor *tensors = calloc((size_t)r->count + 1, sizeof *tensors);
    bf_status s = maps && tensors ? BF_OK : bf_error(BF_ERR_OOM, "routing: out of host memory");
    for (int k = 0; s == BF_OK && k < r->count; k++) { /* p_conv = wins / (images x steps) */
        const layer_tally *t = &r->t[k];
        uint32_t *counts = malloc(t->per * sizeof(uint32_t));
        maps[k] = malloc(t->per * sizeof(float));
        if (!counts || !maps[k]) s = bf_error(BF_ERR_OOM, "routing: out of host memory");
        if (s == BF_OK) s = bf_to_host(b, counts, t->elements, t->per * sizeof(uint32_t));
        const double samples = (double)images * m->layers[t->layer].time_steps;
        for (size_t e = 0; s == BF_OK && e < t->per; e++) maps[k][e] = (float)(counts[e] / samples);
        free(counts);
    }
    if (s == BF_OK) {
        fprintf(json, "{\n  \"images\": %d,\n  \"classes\": %d,\n  \"class_images\": [", images, r->classes);
        for (int k = 0; k < r->classes; k++) fprintf(json, "%s%d", k ? ", " : "", r->class_images[k]);
        fprintf(json, "],\n  \"layers\": [\n");
        int flex_left = 0;
        for (int i = 0; i < m->num_layers; i++) flex_left += m->layers[i].kind == BF_LAYER_FLEX;
        for (int i = 0; i < m->num_layers; i++) {
            const bf_layer *l = &m->layers[i];
            if (l->kind != BF_LAYER_FLEX) continue;
            const int last = --flex_left == 0;
            if (r->tally_of[i] >= 0) write_layer(json, m, &r->t[r->tally_of[i]], maps[r->tally_of[i]], images, r, last);
            else fprintf(json, "    {\"name\": \"%s\", \"joint\": \"mask\"}%s\n", l->name, last ? "" : ",");
        }
        fprintf(json, "  ]\n}\n");
    }
    if (s == BF_OK && maps_path && *maps_path) {
        for (int k = 0; k < r->count; k++) {
            const bf_layer *l = &m->layers[r->t[k].layer];
            bf_st_tensor *x = &tensors[k];
            *x = (bf_st_tensor){.dtype = BF_DTYPE_F32, .ndim = 3, .shape = {l->out_shape.c, l->out_shape.h, l->out_shape.w},
                                .data = maps[k], .nbytes = r->t[k].per * sizeof(float)};
            snprintf(x->name, sizeof x->name, "%s", l->name);
        }
        bf_st_meta meta[1];
        snprintf(meta[0].key, sizeof meta[0].key, "p_conv");
        snprintf(meta[0].value, sizeof meta[0].value, "per flex layer (channel-wise max), [C, H, W]: the fraction of %d "
                 "test images (and time steps) in which the conv won the element, C > P~ strictly", images);
        s = bf_safetensors_write(maps_path, tensors, r->count, meta, 1);
    }
    for (int k = 0; maps && k < r->count; k++) free(maps[k]);
    free(maps), free(tensors);
    return s;
}

bf_status bf_routing_statistics(bf_model *m, bf_loader *loader, int batches, FILE *json, const char *maps_path,
                                int *layers) {
    bf_backend *b = m->backend;
    routing_run r = {.classes = m->num_classes};
    *layers = 0;
    for (int i = 0; i < m->num_layers; i++) r.count += is_max_flex(&m->layers[i]);
    if (r.count == 0) return bf_error(BF_ERR_ARG, "routing: the model has no flex layer with the channel-wise max joint");
    r.t = calloc((size_t)r.count, sizeof *r.t);
    r.tally_of = malloc((size_t)m->num_layers * sizeof(int));
    r.class_images = calloc((size_t)r.classes, sizeof(int));
    bf_status s = r.t && r.tally_of && r.class_images ? BF_OK : bf_error(BF_ERR_OOM, "routing: out of host memory");
    for (int i = 0, k = 0; s == BF_OK && i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        r.tally_of[i] = is_max_flex(l) ? k : -1;
        if (!is_max_flex(l)) continue;
        layer_tally *t = &r.t[k++];
        const size_t most_samples = (size_t)m->input_shape.n * l->time_steps;
        t->layer = i;
        t->per = bf_shape_per_sample(l->out_shape);
        t->host_samples = malloc(most_samples * sizeof(uint32_t));
        t->class_sum = calloc((size_t)r.classes, sizeof(double));
        if (!t->host_samples || !t->class_sum) s = bf_error(BF_ERR_OOM, "routing: out of host memory");
        if (s == BF_OK) s = bf_alloc(b, t->per * sizeof(uint32_t), (void **)&t->elements);
        if (s == BF_OK) s = bf_alloc(b, most_samples * sizeof(uint32_t), (void **)&t->samples);
        if (s == BF_OK) s = b->ops->fill(b, (float *)t->elements, 0.0f, t->per); /* 0.0f: all bits 0 */
    }
    float *x = NULL;
    bf_batch_uploader *upload = NULL;
    int32_t *labels = malloc((size_t)m->input_shape.n * sizeof(int32_t));
    if (s == BF_OK && !labels) s = bf_error(BF_ERR_OOM, "routing: out of host memory");
    if (s == BF_OK) s = bf_alloc(b, bf_shape_count(m->input_shape) * sizeof(float), (void **)&x);
    if (s == BF_OK) s = bf_batch_uploader_create(b, &upload);
    const int was_training = m->training;
    const uint64_t step = m->step, offset = m->sample_offset;
    m->training = 0;
    m->on_layer_forward = tally_layer;
    m->on_layer_forward_ctx = &r;
    r.labels = labels;
    int images = 0;
    if (s == BF_OK) s = bf_loader_start_epoch(loader, 0, 0);
    for (int done = 0; s == BF_OK && (batches <= 0 || done < batches); done++) {
        bf_batch *batch = NULL;
        s = bf_loader_next(loader, &batch, NULL);
        if (s != BF_OK || !batch) break;
        const int n = batch->n;
        if (n > m->input_shape.n) {
            bf_loader_release(loader, batch);
            s = bf_error(BF_ERR_ARG, "routing: batch of %d exceeds the model's %d", n, m->input_shape.n);
            break;
        }
        memcpy(labels, batch->labels, (size_t)n * sizeof(int32_t));
        for (int k = 0; k < n; k++)
            if (labels[k] >= 0 && labels[k] < r.classes) r.class_images[labels[k]]++;
        const uint64_t position = (uint64_t)batch->position;
        s = bf_batch_upload_once(upload, loader, batch, x, NULL, 0);
        const float *logits = NULL;
        m->step = BF_EVAL_STEP, m->sample_offset = position; /* drawn as bf_evaluate draws */
        if (s == BF_OK) s = bf_model_set_batch(m, n);
        if (s == BF_OK) s = bf_model_forward(m, x, &logits);
        images += n;
    }
    m->on_layer_forward = NULL;
    m->on_layer_forward_ctx = NULL;
    m->training = was_training, m->step = step, m->sample_offset = offset;
    bf_model_set_batch(m, m->input_shape.n);
    if (s == BF_OK && images == 0) s = bf_error(BF_ERR_ARG, "routing: the split has no images");
    if (s == BF_OK) s = write_results(m, &r, images, json, maps_path);
    if (s == BF_OK) *layers = r.count;
    bf_batch_uploader_destroy(upload);
    bf_free(b, x);
    for (int k = 0; r.t && k < r.count; k++) {
        bf_free(b, r.t[k].elements), bf_free(b, r.t[k].samples);
        free(r.t[k].host_samples), free(r.t[k].class_sum);
    }
    free(r.t), free(r.tally_of), free(r.class_images), free(labels);
    return s == BF_OK ? BF_OK : bf_error_context(s, "routing");
}
