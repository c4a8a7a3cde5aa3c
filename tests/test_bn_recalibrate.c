/* test_bn_recalibrate.c - bf_model_recalibrate_bn ([analysis] bn_recalibrate_batches), on the CPU:
 *   - after 3 batches the batch-norm's running mean and variance are the plain averages of the three
 *     batches' channel means and unbiased variances, counted here in double from the conv outputs
 *     the same forwards give (whatever the running statistics held before), and its weights and
 *     the batch-norm's momentum are as they were;
 *   - a split shorter than asked for runs the batches it has, and 0 batches are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/train.h"
#include "testutil.h"

enum { S = 8, SAMPLES = 24, BATCH = 8, K = 3 };

static int layer_of_kind(const bf_model *m, bf_layer_kind kind) {
    for (int i = 0; i < m->num_layers; i++)
        if (m->layers[i].kind == kind) return i;
    return -1;
}

int main(void) {
    bf_test_noise t;
    bf_test_noise_open(&t, SAMPLES, S, K, BF_SPLIT_TRAIN, BATCH, 1);
    bf_model_config mc = bf_test_cnn_config(4, 0, 0.0f);
    mc.fold_conv_bias = 0, mc.fuse_bn_relu = 0; /* the batch-norm's input is the conv's whole output */
    bf_model *m = NULL;
    if (t.b) CHECK_OK(bf_model_build(t.b, &mc, (bf_shape){BATCH, 1, S, S}, K, 3, &m));
    const int bn = m ? layer_of_kind(m, BF_LAYER_BATCHNORM) : -1;
    CHECK(bn > 0 && m->layers[bn].input[0] >= 0, "the CNN has a batch-norm after a conv");
    if (!m || !t.loader || bn <= 0) return bf_test_finish();
    const bf_layer *l = &m->layers[bn];
    const int C = l->bn.c, HW = l->bn.hw;
    float *mean = m->buffer_data + m->buffers[l->buffer_index[0]].offset;
    float *var = m->buffer_data + m->buffers[l->buffer_index[1]].offset;
    for (int c = 0; c < C; c++) mean[c] = 5.0f, var[c] = 9.0f; /* far from anything a batch gives */
    float *weights = malloc(m->num_param_floats * sizeof *weights);
    memcpy(weights, m->param_data, m->num_param_floats * sizeof *weights);

    /* each batch's statistics by hand: the same training-mode forward, its conv output */
    double want_mean[16] = {0}, want_var[16] = {0};
    float *x = bf_test_alloc(t.b, (size_t)BATCH * S * S);
    CHECK_OK(bf_loader_start_epoch(t.loader, 0, 0));
    for (int k = 0; k < 3; k++) {
        bf_batch *batch = NULL;
        CHECK_OK(bf_loader_next(t.loader, &batch, NULL));
        if (!batch) break;
        memcpy(x, batch->images, (size_t)BATCH * S * S * sizeof(float));
        bf_loader_release(t.loader, batch);
        const float *logits;
        m->training = 1;
        CHECK_OK(bf_model_forward(m, x, &logits));
        const float *in = m->layers[l->input[0]].out;
        for (int c = 0; c < C && C <= 16; c++) {
            double sum = 0, sq = 0;
            for (int n = 0; n < BATCH; n++)
                for (int p = 0; p < HW; p++) sum += in[((size_t)n * C + c) * HW + p];
            const double mu = sum / (BATCH * HW);
            for (int n = 0; n < BATCH; n++)
                for (int p = 0; p < HW; p++) sq += pow(in[((size_t)n * C + c) * HW + p] - mu, 2);
            want_mean[c] += mu / 3, want_var[c] += sq / (BATCH * HW - 1) / 3;
        }
    }
    for (int c = 0; c < C; c++) mean[c] = 5.0f, var[c] = 9.0f;
    int used = 0;
    const float momentum = l->bn.momentum;
    CHECK_OK(bf_model_recalibrate_bn(m, t.loader, 3, &used));
    double worst = 0;
    for (int c = 0; c < C && C <= 16; c++)
        worst = fmax(worst, fmax(fabs(mean[c] - want_mean[c]) / (1e-3 + fabs(want_mean[c])),
                                 fabs(var[c] - want_var[c]) / (1e-3 + want_var[c])));
    printf("recalibrated over %d batches: running mean and variance against the batches' averages, worst relative "
           "difference %.3g\n", used, worst);
    CHECK(used == 3 && worst < 1e-5, "3 batches: the running statistics are the batches' averages (%.3g)", worst);
    CHECK(!memcmp(weights, m->param_data, m->num_param_floats * sizeof *weights) && l->bn.momentum == momentum,
          "the weights and the batch-norm's momentum are as they were");
    CHECK_OK(bf_model_recalibrate_bn(m, t.loader, 10, &used));
    CHECK(used == SAMPLES / BATCH, "a split of %d batches runs them all when 10 are asked for (%d)", SAMPLES / BATCH,
          used);
    CHECK(bf_model_recalibrate_bn(m, t.loader, 0, &used) == BF_ERR_ARG, "0 batches refused");
    free(weights);
    bf_free(t.b, x);
    bf_model_destroy(m);
    bf_test_noise_close(&t);
    return bf_test_finish();
}
