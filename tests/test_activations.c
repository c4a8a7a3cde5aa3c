/* test_activations.c - bf_dump_activations (analysis.h) on the CPU backend, 5 images in batches of
 * 2 (so the file's images come from three batches):
 *   - a CNN with batch-norm, an in-place ReLU (unfused, so the batch-norm's own output is kept),
 *     max-pool and a hidden layer: "input" is the loader's images, "labels" its labels, the first
 *     conv's tensor is conv2d_forward of the input, the batch-norm's has negative values and the
 *     ReLU's is its max with 0, the last layer's is the logits of bf_model_forward on those images;
 *   - a spiking CNN (LIF, T = 3, the image repeated first): the encode layer's [T, images, ...]
 *     tensor holds the input at every step, the readout is the mean of the last linear layer's steps;
 *   - flex CNNs (channel-wise max with the conv's bias folded into the joint; mask joint): the first
 *     flex layer's "features.0.flex_conv" is conv2d_forward of the input with its weight and
 *     (nonzero) bias, and the max joint's output is >= it, equal where the conv won;
 *   - every tensor name distinct; activation_layers' prefixes keep only those layers; a prefix no
 *     layer has, and more images than the split, are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { B = 2, S = 8, K = 3, SAMPLES = 5 };

static const float *tensor(const bf_st_file *f, const char *name, size_t floats) {
    const bf_st_tensor *t = f ? bf_safetensors_find(f, name) : NULL;
    CHECK(t && t->nbytes == floats * sizeof(float), "tensor %s: %zu bytes, want %zu", name, t ? t->nbytes : 0,
          floats * sizeof(float));
    return t && t->nbytes == floats * sizeof(float) ? t->data : NULL;
}

static int names_distinct(const bf_st_file *f) {
    for (int i = 0; i < bf_safetensors_count(f); i++)
        for (int j = i + 1; j < bf_safetensors_count(f); j++)
            if (!strcmp(bf_safetensors_at(f, i)->name, bf_safetensors_at(f, j)->name)) return 0;
    return 1;
}

static bf_st_file *dump(bf_model *m, bf_loader *l, int images, const char *layers, int *kept) {
    char path[] = "/tmp/bioflex_activations_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    CHECK_OK(bf_dump_activations(m, l, images, layers, path, kept));
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(path, &f));
    remove(path);
    return f;
}

static void test_cnn(bf_backend *b, bf_loader *l) {
    bf_model_config mc = bf_test_cnn_config(4, 8, 0.5f);
    mc.batchnorm = 1;
    mc.fuse_bn_relu = 0;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 5, &m));
    if (!m) return;
    int kept = 0;
    bf_st_file *f = dump(m, l, SAMPLES, "", &kept);
    CHECK(f && kept == m->num_layers && bf_safetensors_count(f) == m->num_layers + 2 && names_distinct(f),
          "every layer kept (%d of %d), names distinct", kept, m->num_layers);
    const float *input = tensor(f, "input", SAMPLES * S * S), *conv = tensor(f, "features.0", SAMPLES * 4 * S * S);
    const float *bn = tensor(f, "features.1", SAMPLES * 4 * S * S), *relu = tensor(f, "features.2", SAMPLES * 4 * S * S);
    const float *last = tensor(f, m->layers[m->num_layers - 1].name, SAMPLES * K);
    const bf_st_tensor *labels = f ? bf_safetensors_find(f, "labels") : NULL;
    if (!input || !conv || !bn || !relu || !last || !labels) {
        bf_safetensors_close(f);
        bf_model_destroy(m);
        return;
    }
    /* the images and labels as the loader gives them, over its three batches */
    float images[SAMPLES * S * S];
    int32_t want_labels[SAMPLES];
    int at = 0;
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    for (bf_batch *batch = NULL; bf_loader_next(l, &batch, NULL) == BF_OK && batch;) {
        memcpy(images + at * S * S, batch->images, (size_t)batch->n * S * S * sizeof(float));
        memcpy(want_labels + at, batch->labels, (size_t)batch->n * sizeof(int32_t));
        at += batch->n;
        bf_loader_release(l, batch);
    }
    CHECK(at == SAMPLES && memcmp(images, input, sizeof images) == 0 && memcmp(want_labels, labels->data, sizeof want_labels) == 0,
          "input and labels are the loader's");
    /* the conv by hand; the ReLU of the batch-norm; the logits by the model's forward */
    float want_conv[SAMPLES * 4 * S * S], logits[SAMPLES * K];
    bf_conv2d_shape cs = m->layers[0].conv;
    cs.n = SAMPLES;
    const bf_layer *first = &m->layers[0];
    float *weights = bf_test_download(b, m->param_data + m->params[first->param_index[0]].offset, 36);
    float *bias = bf_test_download(b, m->param_data + m->params[first->param_index[1]].offset, 4);
    CHECK_OK(b->ops->conv2d_forward(b, &cs, images, weights, bias, want_conv));
    size_t worst = 0;
    CHECK(bf_test_max_violation(want_conv, conv, SAMPLES * 4 * S * S, 1e-6, 1e-5, &worst) <= 1,
          "the first conv's tensor is the conv of the input (worst %zu)", worst);
    int negative = 0, relu_ok = 1;
    for (int i = 0; i < SAMPLES * 4 * S * S; i++) {
        negative += bn[i] < 0;
        relu_ok &= relu[i] == (bn[i] > 0 ? bn[i] : 0.0f);
    }
    CHECK(negative > 0 && relu_ok, "the batch-norm's own output (%d negative values) and its ReLU", negative);
    float *x = bf_test_upload(b, images, SAMPLES * S * S);
    for (int first = 0; first < SAMPLES; first += B) {
        const int n = SAMPLES - first < B ? SAMPLES - first : B;
        const float *out = NULL;
        m->training = 0;
        m->step = BF_EVAL_STEP, m->sample_offset = (uint64_t)first;
        CHECK_OK(bf_model_set_batch(m, n));
        CHECK_OK(bf_model_forward(m, x + first * S * S, &out));
        CHECK_OK(bf_to_host(b, logits + first * K, out, (size_t)n * K * sizeof(float)));
    }
    CHECK(memcmp(logits, last, sizeof logits) == 0, "the last layer's tensor is the model's logits");
    bf_safetensors_close(f);

    f = dump(m, l, 3, "features.0,classifier.3", &kept);
    CHECK(f && kept == 2 && bf_safetensors_count(f) == 4 && bf_safetensors_find(f, "classifier.3") &&
              !bf_safetensors_find(f, "features.1"),
          "activation_layers keeps the named layers only (%d)", kept);
    bf_safetensors_close(f);
    CHECK(bf_dump_activations(m, l, 3, "nothing", "/tmp/never_written", &kept) == BF_ERR_ARG &&
              strstr(bf_last_error(), "no layer's name starts with 'nothing'"),
          "an unknown prefix is refused: %s", bf_last_error());
    CHECK(bf_dump_activations(m, l, SAMPLES + 1, "", "/tmp/never_written", &kept) == BF_ERR_ARG &&
              strstr(bf_last_error(), "fewer than the 6"),
          "more images than the split: %s", bf_last_error());
    free(weights), free(bias);
    bf_free(b, x);
    bf_model_destroy(m);
}

static void test_spiking(bf_backend *b, bf_loader *l) {
    bf_model_config mc = bf_test_cnn_config(4, 0, 0);
    mc.spiking.neuron = BF_NEURON_LIF;
    mc.spiking.time_steps = 3;
    mc.spiking.share_direct_input = 0;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 5, &m));
    if (!m) return;
    int kept = 0, encode = -1, readout = -1;
    for (int i = 0; i < m->num_layers; i++) {
        if (m->layers[i].kind == BF_LAYER_ENCODE) encode = i;
        if (m->layers[i].kind == BF_LAYER_TIME_MEAN) readout = i;
    }
    bf_st_file *f = dump(m, l, SAMPLES, "", &kept);
    CHECK(f && encode >= 0 && readout > 0 && names_distinct(f), "spiking: an encode layer and a readout, names distinct");
    if (!f || encode < 0 || readout <= 0) return;
    const float *input = tensor(f, "input", SAMPLES * S * S);
    const bf_st_tensor *steps = bf_safetensors_find(f, m->layers[encode].name);
    const float *fc = tensor(f, m->layers[readout - 1].name, 3 * SAMPLES * K), *mean = tensor(f, "readout", SAMPLES * K);
    CHECK(steps && steps->ndim == 5 && steps->shape[0] == 3 && steps->shape[1] == SAMPLES, "the encode layer's tensor "
          "is [T, images, C, H, W]");
    int same = steps != NULL && input != NULL;
    for (int t = 0; same && t < 3; t++) same = memcmp((const float *)steps->data + t * SAMPLES * S * S, input, SAMPLES * S * S * sizeof(float)) == 0;
    CHECK(same, "every step of the encode layer's tensor is the input");
    double worst = 0;
    for (int i = 0; fc && mean && i < SAMPLES * K; i++)
        worst = fmax(worst, fabs((fc[i] + fc[SAMPLES * K + i] + fc[2 * SAMPLES * K + i]) / 3 - mean[i]));
    CHECK(fc && mean && worst < 1e-5, "the readout is the mean of the last linear layer's steps (worst %g)", worst);
    bf_safetensors_close(f);
    bf_model_destroy(m);
}

/* The loader's images of the file, in its order (three batches). */
static void loader_images(bf_loader *l, float *images) {
    int at = 0;
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    for (bf_batch *batch = NULL; bf_loader_next(l, &batch, NULL) == BF_OK && batch;) {
        memcpy(images + at * S * S, batch->images, (size_t)batch->n * S * S * sizeof(float));
        at += batch->n;
        bf_loader_release(l, batch);
    }
}

static void test_flex(bf_backend *b, bf_loader *l, bf_flex_joint joint) {
    const char *what = joint == BF_FLEX_JOINT_MAX ? "channel-wise max" : "mask joint";
    bf_model_config mc = bf_test_cnn_config(4, 8, 0);
    mc.flex = 1;
    mc.flex_joint = joint;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 5, &m));
    if (!m) return;
    const bf_layer *first = &m->layers[0];
    CHECK(first->kind == BF_LAYER_FLEX && (joint != BF_FLEX_JOINT_MAX || m->fold_conv_bias),
          "%s: the first layer is flex (%s), the bias folded into the max joint", what, first->name);
    float bias[4] = {0.25f, -0.5f, 0.125f, 1.0f};
    float *bias_at = m->param_data + m->params[first->param_index[1]].offset;
    CHECK_OK(bf_to_device(b, bias_at, bias, sizeof bias));
    int kept = 0;
    bf_st_file *f = dump(m, l, SAMPLES, "features.0", &kept);
    const float *out = tensor(f, "features.0", SAMPLES * 4 * S * S), *conv = tensor(f, "features.0.flex_conv", SAMPLES * 4 * S * S);
    float images[SAMPLES * S * S], want[SAMPLES * 4 * S * S];
    loader_images(l, images);
    bf_conv2d_shape cs = first->conv;
    cs.n = SAMPLES;
    float *weights = bf_test_download(b, m->param_data + m->params[first->param_index[0]].offset, 36);
    CHECK_OK(b->ops->conv2d_forward(b, &cs, images, weights, bias, want));
    size_t worst = 0;
    CHECK(conv && kept == 1 && bf_test_max_violation(want, conv, SAMPLES * 4 * S * S, 1e-6, 1e-5, &worst) <= 1,
          "%s: features.0.flex_conv is the conv of the input with its bias (worst %zu)", what, worst);
    if (conv && out && joint == BF_FLEX_JOINT_MAX) {
        int above = 1, won = 0, lost = 0;
        for (int i = 0; i < SAMPLES * 4 * S * S; i++) {
            above &= out[i] >= conv[i];
            won += out[i] == conv[i], lost += out[i] > conv[i];
        }
        CHECK(above && won > 0 && lost > 0, "%s: the output is max(C, pool): %d elements the conv's, %d the pool's",
              what, won, lost);
    }
    free(weights);
    bf_safetensors_close(f);
    bf_model_destroy(m);
}

int main(void) {
    bf_test_noise t;
    bf_test_noise_open(&t, SAMPLES, S, K, BF_SPLIT_TEST, B, 1);
    if (t.loader) {
        test_cnn(t.b, t.loader);
        test_spiking(t.b, t.loader);
        test_flex(t.b, t.loader, BF_FLEX_JOINT_MAX);
        test_flex(t.b, t.loader, BF_FLEX_JOINT_MASK);
    }
    bf_test_noise_close(&t);
    return bf_test_finish();
}
