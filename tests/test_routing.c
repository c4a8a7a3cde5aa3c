/* test_routing.c - bf_routing_statistics (analysis.h) on the CPU backend, 12 noise images of 3
 * classes in batches of 5 (the last batch partial):
 *   - a CNN of two channel-wise max flex layers: the first layer's per-element map (the safetensors
 *     file) equals, for every element, the fraction of images whose C > P~ by hand (C from the flex
 *     layer's on_flex_conv, P~ from maxpool_forward and flex_widen_forward of the image), and its
 *     JSON conv, always_conv/always_pool, per-image mean and standard deviation, per-class means and
 *     per-channel fractions equal those counts; both layers' conv is their per-image mean; the
 *     model comes back in training mode at its batch size;
 *   - routing_batches = 1 counts the first batch's 5 images alone;
 *   - a spiking flex CNN (LIF over 3 steps): the second flex layer's conv over every image's steps
 *     is its per-image mean;
 *   - a class the scored images lack has a null per-class mean, and the file stays JSON;
 *   - a mask-joint model has no channel-wise max layer: refused, naming the joint. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { B = 5, S = 8, K = 3, SAMPLES = 12, C1 = 4 };

/* The first flex layer's C of the current batch, into its images' places. */
typedef struct capture {
    int offset;
    float *conv; /* [SAMPLES, C1, S, S] */
} capture;

static bf_status keep_first_conv(void *ctx, bf_model *m, int layer, const float *conv) {
    capture *c = ctx;
    if (layer != 0) return BF_OK;
    const size_t per = bf_shape_per_sample(m->layers[0].out_shape);
    return bf_to_host(m->backend, c->conv + (size_t)c->offset * per, conv, (size_t)m->batch * per * sizeof(float));
}

static bf_model *build(bf_backend *b, int spiking, int classes) {
    bf_model_config mc = bf_test_cnn_config(C1, 8, 0);
    mc.channels[1] = 6;
    mc.num_channels = 2;
    mc.flex = 1;
    mc.fold_conv_bias = 0; /* C from on_flex_conv holds the bias */
    if (spiking) mc.spiking.neuron = BF_NEURON_LIF, mc.spiking.time_steps = 3, mc.spiking.threshold = 0.3f;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, classes, 9, &m));
    return m;
}

/* Runs the statistics; returns the JSON text (free it) and, with maps, the maps' file. */
static char *routing(bf_model *m, bf_loader *l, int batches, bf_st_file **maps) {
    char json_path[] = "/tmp/bioflex_routing_XXXXXX", maps_path[] = "/tmp/bioflex_routing_maps_XXXXXX";
    int fd = mkstemp(json_path), fd2 = mkstemp(maps_path);
    if (fd2 >= 0) close(fd2);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int layers = 0;
    CHECK_OK(bf_routing_statistics(m, l, batches, f, maps ? maps_path : NULL, &layers));
    if (f) fclose(f);
    CHECK(layers == 2, "two channel-wise max layers measured (%d)", layers);
    size_t size = 0;
    char *text = bf_test_read_file(json_path, &size);
    if (maps) CHECK_OK(bf_safetensors_read(maps_path, maps));
    remove(json_path), remove(maps_path);
    return text;
}

/* The number after "key": in the JSON text from `from` on. */
static double number(const char *from, const char *key) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\": ", key);
    const char *at = from ? strstr(from, quoted) : NULL;
    return at ? atof(at + strlen(quoted)) : NAN;
}

/* The n numbers of the array after "key": in the JSON text from `from` on. */
static void numbers(const char *from, const char *key, double *out, int n) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\": [", key);
    const char *at = from ? strstr(from, quoted) : NULL;
    char *cursor = at ? (char *)at + strlen(quoted) : NULL;
    for (int i = 0; i < n; i++) {
        out[i] = cursor ? strtod(cursor, &cursor) : NAN;
        if (cursor && *cursor == ',') cursor++;
    }
}

static void test_cnn(bf_backend *b, bf_loader *l, const int32_t *labels) {
    bf_model *m = build(b, 0, K);
    if (!m) return;
    const bf_layer *first = &m->layers[0];
    const size_t per = bf_shape_per_sample(first->out_shape), hw = (size_t)S * S;
    capture c = {.conv = bf_test_calloc((size_t)SAMPLES * per * sizeof(float))};
    /* C of every image, by an evaluation pass with the hook (the same forward the statistics run) */
    m->on_flex_conv = keep_first_conv;
    m->on_layer_forward_ctx = &c;
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    float images[SAMPLES * S * S];
    int at = 0;
    for (bf_batch *batch = NULL; bf_loader_next(l, &batch, NULL) == BF_OK && batch;) {
        memcpy(images + at * S * S, batch->images, (size_t)batch->n * S * S * sizeof(float));
        float *x = bf_test_upload(b, batch->images, (size_t)batch->n * S * S);
        const float *logits = NULL;
        c.offset = at;
        m->training = 0;
        CHECK_OK(bf_model_set_batch(m, batch->n));
        CHECK_OK(bf_model_forward(m, x, &logits));
        at += batch->n;
        bf_free(b, x);
        bf_loader_release(l, batch);
    }
    m->on_flex_conv = NULL, m->on_layer_forward_ctx = NULL;
    m->training = 1;
    /* P~ by hand: the pool of the image, widened */
    bf_pool_shape ps = first->pool;
    bf_flex_shape fs = first->flex;
    ps.n = fs.n = SAMPLES;
    float *pooled = bf_test_calloc((size_t)SAMPLES * hw * sizeof(float)), *widened = bf_test_calloc((size_t)SAMPLES * per * sizeof(float));
    int32_t *argmax = bf_test_calloc((size_t)SAMPLES * hw * sizeof(int32_t));
    CHECK_OK(b->ops->maxpool_forward(b, &ps, images, pooled, argmax));
    CHECK_OK(b->ops->flex_widen_forward(b, &fs, pooled, widened));
    double image_fraction[SAMPLES], class_sum[K] = {0}, mean = 0, sq = 0, conv = 0;
    int class_images[K] = {0};
    float *p = bf_test_calloc(per * sizeof(float));
    size_t always_conv = 0, always_pool = 0;
    for (size_t e = 0; e < per; e++) {
        int won = 0;
        for (int i = 0; i < SAMPLES; i++) won += c.conv[i * per + e] > widened[i * per + e];
        p[e] = (float)(won / (double)SAMPLES);
        conv += p[e] / per;
        always_conv += p[e] > 0.95f, always_pool += p[e] < 0.05f;
    }
    for (int i = 0; i < SAMPLES; i++) {
        int won = 0;
        for (size_t e = 0; e < per; e++) won += c.conv[i * per + e] > widened[i * per + e];
        image_fraction[i] = won / (double)per;
        mean += image_fraction[i] / SAMPLES, sq += image_fraction[i] * image_fraction[i] / SAMPLES;
        class_sum[labels[i]] += image_fraction[i], class_images[labels[i]]++;
    }
    bf_st_file *maps = NULL;
    char *text = routing(m, l, 0, &maps);
    const bf_st_tensor *map = maps ? bf_safetensors_find(maps, first->name) : NULL;
    CHECK(map && map->nbytes == per * sizeof(float) && memcmp(map->data, p, per * sizeof(float)) == 0,
          "the first layer's map is the fraction of images with C > P~, element by element");
    CHECK(text && number(text, "images") == SAMPLES, "12 images counted");
    const char *layer1 = text ? strstr(text, "\"name\": \"features.0\"") : NULL;
    CHECK_CLOSE(number(layer1, "conv"), conv, 1e-6, 1e-5, "features.0: conv");
    CHECK_CLOSE(number(layer1, "per_image_mean"), mean, 1e-6, 1e-5, "features.0: per-image mean");
    CHECK_CLOSE(number(layer1, "per_image_std"), sqrt(sq - mean * mean), 1e-6, 1e-5, "features.0: per-image std");
    CHECK_CLOSE(number(layer1, "always_conv"), (double)always_conv / per, 1e-7, 1e-6, "features.0: always_conv");
    CHECK_CLOSE(number(layer1, "always_pool"), (double)always_pool / per, 1e-7, 1e-6, "features.0: always_pool");
    CHECK(conv > 0.01 && conv < 0.99, "features.0: the conv wins some elements, not all (%g)", conv);
    double per_class[K], per_channel[C1];
    numbers(layer1, "per_class", per_class, K);
    numbers(layer1, "per_channel", per_channel, C1);
    for (int k = 0; k < K; k++)
        CHECK_CLOSE(per_class[k], class_sum[k] / class_images[k], 1e-6, 1e-5, "features.0: per_class[k]");
    for (int ch = 0; ch < C1; ch++) {
        double want = 0;
        for (size_t e = ch * hw; e < (ch + 1) * hw; e++) want += p[e] / hw;
        CHECK_CLOSE(per_channel[ch], want, 1e-6, 1e-5, "features.0: per_channel[ch]");
    }
    const char *layer2 = layer1 ? strstr(layer1 + 1, "\"name\": \"") : NULL;
    CHECK(layer2 && fabs(number(layer2, "conv") - number(layer2, "per_image_mean")) < 1e-6,
          "the second flex layer: conv %g = its per-image mean %g", number(layer2, "conv"), number(layer2, "per_image_mean"));
    CHECK(m->training == 1 && m->batch == B && !m->on_layer_forward, "the model comes back as it was");
    free(text);
    bf_safetensors_close(maps);
    text = routing(m, l, 1, NULL);
    CHECK(text && number(text, "images") == B, "routing_batches = 1: the first batch's %d images", B);
    free(text), free(p), free(pooled), free(widened), free(argmax), free(c.conv);
    bf_model_destroy(m);
}

/* A class without images in the scored split (the model has a 4th class the data lacks, as a
 * class-sorted ImageNet file cut by test_limit has hundreds): its per-class mean is null and the
 * file is JSON (it held a bare nan, which no reader takes, static_routing included). */
static void test_empty_class(bf_backend *b, bf_loader *l) {
    bf_model *m = build(b, 0, K + 1);
    if (!m) return;
    char *text = routing(m, l, 0, NULL);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    CHECK(root != NULL, "the routing file with an empty class parses as JSON");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    const cJSON *per_class = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(layers, 0), "per_class");
    CHECK(cJSON_GetArraySize(per_class) == K + 1 && cJSON_IsNumber(cJSON_GetArrayItem(per_class, 0)) &&
              cJSON_IsNull(cJSON_GetArrayItem(per_class, K)),
          "per_class: %d entries, the classes with images numbers, the empty one null", K + 1);
    cJSON_Delete(root);
    free(text);
    bf_model_destroy(m);
}

static void test_spiking_and_mask(bf_backend *b, bf_loader *l) {
    bf_model *m = build(b, 1, K);
    char *text = m ? routing(m, l, 0, NULL) : NULL;
    const char *layer = text ? strstr(text, "\"name\": \"") : NULL;
    const char *second = layer ? strstr(layer + 1, "\"name\": \"") : NULL;
    CHECK(second && number(second, "time_steps") == 3 && fabs(number(second, "conv") - number(second, "per_image_mean")) < 1e-6 &&
              number(second, "conv") > 0,
          "spiking: the second flex layer over %g steps: conv %g = the per-image mean %g", number(second, "time_steps"),
          number(second, "conv"), number(second, "per_image_mean"));
    free(text);
    bf_model_destroy(m);
    bf_model_config mc = bf_test_cnn_config(C1, 8, 0);
    mc.flex = 1;
    mc.flex_joint = BF_FLEX_JOINT_MASK;
    m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 9, &m));
    int layers = 0;
    FILE *f = fopen("/dev/null", "w");
    CHECK(m && bf_routing_statistics(m, l, 0, f, NULL, &layers) == BF_ERR_ARG && strstr(bf_last_error(), "channel-wise max"),
          "a model without channel-wise max flex layers is refused: %s", bf_last_error());
    fclose(f);
    bf_model_destroy(m);
}

int main(void) {
    bf_test_noise t;
    bf_test_noise_open(&t, SAMPLES, S, K, BF_SPLIT_TEST, B, 1);
    if (t.loader) {
        test_cnn(t.b, t.loader, t.labels);
        test_empty_class(t.b, t.loader);
        test_spiking_and_mask(t.b, t.loader);
    }
    bf_test_noise_close(&t);
    return bf_test_finish();
}
