/* test_attack.c - the adversarial attacks of analysis.h on the CPU backend, with a small CNN
 * (batch-norm, max-pool, a hidden layer) trained a few dozen steps on generated 3-class images,
 * normalised with mean 0.3 and std 0.2 so that the pixel domain's mapping matters:
 *   - the clean point (epsilon 0) is bf_evaluate's top-1 and top-5 of the same images, and
 *     attack_samples = 20 of 48 images scores what the attack of a 20-image split scores;
 *   - FGSM at the largest epsilon is FGSM done by hand: the model's input gradient, a step of
 *     epsilon x sign in pixel space, clamped to [0, 1], normalised again (pixels domain); and in the
 *     reference domain the batch's min-max scaling, the step in x01, the /0.99999 scaling back;
 *   - PGD of one step of the whole epsilon from the image is FGSM, point for point;
 *   - PGD with random starts and Gaussian noise draw per sample: evaluation batches of 8 and 5 score
 *     the same; the largest PGD lowers top-1; EOT over 3 passes of this deterministic model is EOT 1;
 *   - the AUCs are the trapezoids of the top-1 curve (the reference's with epsilon_max / epsilons);
 *   - a model built without input_gradient is refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { B = 8, S = 8, K = 3 };
static const float MEAN = 0.3f, STD = 0.2f;

static bf_config data_config(int test_samples) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.data.dataset = BF_DATASET_PROCEDURAL;
    cfg.data.procedural_size = S;
    cfg.data.procedural_classes = K;
    cfg.data.procedural_channels = 1;
    cfg.data.procedural_train = 192;
    cfg.data.procedural_test = test_samples;
    cfg.data.batch_size = B;
    return cfg;
}

static bf_dataset *open_split(int test_samples, bf_split split) {
    bf_config cfg = data_config(test_samples);
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, 3, split, &d));
    if (d) d->mean[0] = MEAN, d->std[0] = STD;
    return d;
}

static bf_loader *test_loader(const bf_dataset *d, int batch) {
    bf_config cfg = data_config(d->num_samples);
    cfg.data.batch_size = batch;
    bf_loader_options lo = bf_loader_options_from_config(&cfg, BF_SPLIT_TEST);
    lo.shuffle = 0;
    bf_loader *l = NULL;
    CHECK_OK(bf_loader_create(d, &lo, &l));
    return l;
}

static bf_model *build(bf_backend *b, int input_gradient, int batch) {
    bf_model_config mc = bf_test_cnn_config(4, 8, 0);
    mc.batchnorm = 1;
    mc.input_gradient = input_gradient;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){batch, 1, S, S}, K, 5, &m));
    return m;
}

/* Plain SGD on the training split, 4 epochs of 24 steps. */
static void train(bf_model *m, const bf_dataset *train_set) {
    bf_backend *b = m->backend;
    bf_config cfg = data_config(48);
    bf_loader_options lo = bf_loader_options_from_config(&cfg, BF_SPLIT_TRAIN);
    bf_loader *l = NULL;
    CHECK_OK(bf_loader_create(train_set, &lo, &l));
    float *x = bf_test_alloc(b, (size_t)B * S * S), *losses = bf_test_alloc(b, B), *dlogits = bf_test_alloc(b, B * K);
    int32_t *labels = NULL;
    CHECK_OK(bf_alloc(b, B * sizeof(int32_t), (void **)&labels));
    for (int epoch = 0; l && epoch < 4; epoch++) {
        CHECK_OK(bf_loader_start_epoch(l, epoch, 0));
        bf_batch *batch = NULL;
        while (bf_loader_next(l, &batch, NULL) == BF_OK && batch) {
            const float *logits = NULL;
            CHECK_OK(bf_model_set_batch(m, batch->n));
            CHECK_OK(bf_to_device(b, x, batch->images, (size_t)batch->n * S * S * sizeof(float)));
            CHECK_OK(bf_to_device(b, labels, batch->labels, (size_t)batch->n * sizeof(int32_t)));
            bf_loader_release(l, batch);
            CHECK_OK(bf_model_forward(m, x, &logits));
            CHECK_OK(b->ops->softmax_xent(b, m->batch, K, logits, labels, 0.0f, 1.0f / m->batch, losses, dlogits));
            CHECK_OK(bf_model_backward(m, dlogits));
            CHECK_OK(b->ops->axpy(b, -0.2f, m->grad_data, m->param_data, m->num_param_floats));
            m->step++;
        }
    }
    CHECK_OK(bf_model_set_batch(m, B));
    bf_free(b, x), bf_free(b, losses), bf_free(b, dlogits), bf_free(b, labels);
    bf_loader_destroy(l);
}

static bf_attack_options options(bf_attack_method method) {
    return (bf_attack_options){.method = method, .domain = BF_ATTACK_PIXELS, .epsilons = 5, .epsilon_max = 0.3f,
                               .pgd_steps = 5, .pgd_step_fraction = 0.25f, .random_start = 1, .eot_samples = 1,
                               .samples = 0, .seed = 42};
}

static bf_attack_result attack(bf_model *m, bf_loader *l, const bf_attack_options *o) {
    static bf_attack_result r;
    memset(&r, 0, sizeof r);
    CHECK_OK(bf_attack(m, l, o, &r));
    return r;
}

static int same_curves(const bf_attack_result *a, const bf_attack_result *b) {
    return a->samples == b->samples && a->epsilons == b->epsilons &&
           memcmp(a->top1, b->top1, sizeof(double) * (size_t)a->epsilons) == 0 &&
           memcmp(a->top5, b->top5, sizeof(double) * (size_t)a->epsilons) == 0;
}

/* FGSM at eps by hand over the loader's images: top-1 correct count. The gradient is the model's,
 * the step and the clamping are done here in pixel space (or in the reference's x01). */
static int fgsm_by_hand(bf_model *m, bf_loader *l, float eps, bf_attack_domain domain) {
    bf_backend *b = m->backend;
    float *x = bf_test_alloc(b, (size_t)B * S * S), *losses = bf_test_alloc(b, B), *dlogits = bf_test_alloc(b, B * K);
    float host[B * S * S], grad[B * S * S], logits_host[B * K];
    int32_t *labels = NULL;
    CHECK_OK(bf_alloc(b, B * sizeof(int32_t), (void **)&labels));
    m->training = 0;
    int correct = 0;
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    bf_batch *batch = NULL;
    while (bf_loader_next(l, &batch, NULL) == BF_OK && batch) {
        const int n = batch->n, count = n * S * S;
        float lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < count; i++) lo = fminf(lo, batch->images[i]), hi = fmaxf(hi, batch->images[i]);
        for (int i = 0; i < count; i++) /* the point the gradient is taken at */
            host[i] = domain == BF_ATTACK_REFERENCE ? (batch->images[i] - lo) / (hi - lo) : batch->images[i];
        int32_t want[B];
        memcpy(want, batch->labels, (size_t)n * sizeof(int32_t));
        bf_loader_release(l, batch);
        const float *logits = NULL;
        CHECK_OK(bf_model_set_batch(m, n));
        CHECK_OK(bf_to_device(b, x, host, (size_t)count * sizeof(float)));
        CHECK_OK(bf_to_device(b, labels, want, (size_t)n * sizeof(int32_t)));
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(b->ops->softmax_xent(b, n, K, logits, labels, 0.0f, 1.0f, losses, dlogits));
        CHECK_OK(bf_model_backward(m, dlogits));
        CHECK_OK(bf_to_host(b, grad, m->dinput, (size_t)count * sizeof(float)));
        for (int i = 0; i < count; i++) {
            const float sign = (float)((grad[i] > 0) - (grad[i] < 0));
            if (domain == BF_ATTACK_REFERENCE) {
                const float x01 = fminf(fmaxf(host[i] + eps * sign, 0.0f), 1.0f);
                host[i] = x01 / 0.99999f * (hi - lo) + lo;
            } else {
                const float pixel = fminf(fmaxf(host[i] * STD + MEAN + eps * sign, 0.0f), 1.0f);
                host[i] = (pixel - MEAN) / STD;
            }
        }
        CHECK_OK(bf_to_device(b, x, host, (size_t)count * sizeof(float)));
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(bf_to_host(b, logits_host, logits, (size_t)n * K * sizeof(float)));
        for (int j = 0; j < n; j++) {
            int best = 0;
            for (int k = 1; k < K; k++)
                if (logits_host[j * K + k] > logits_host[j * K + best]) best = k;
            correct += best == want[j];
        }
    }
    CHECK_OK(bf_model_set_batch(m, B));
    bf_free(b, x), bf_free(b, losses), bf_free(b, dlogits), bf_free(b, labels);
    return correct;
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_dataset *train_set = open_split(48, BF_SPLIT_TRAIN), *test = open_split(48, BF_SPLIT_TEST),
               *first20 = open_split(20, BF_SPLIT_TEST);
    bf_model *m = b ? build(b, 1, B) : NULL, *m5 = b ? build(b, 1, 5) : NULL, *plain = b ? build(b, 0, B) : NULL;
    if (!m || !m5 || !plain || !train_set || !test || !first20) return bf_test_finish();
    train(m, train_set);
    CHECK_OK(b->ops->copy(b, m5->param_data, m->param_data, m->num_param_floats * sizeof(float)));
    CHECK_OK(b->ops->copy(b, m5->buffer_data, m->buffer_data, m->num_buffer_floats * sizeof(float)));
    bf_loader *l = test_loader(test, B), *l5 = test_loader(test, 5), *l20 = test_loader(first20, B);

    /* the clean point, and the first 20 images */
    bf_attack_options o = options(BF_ATTACK_FGSM);
    o.samples = 20;
    const bf_attack_result fgsm20 = attack(m, l, &o);
    o.samples = 0;
    const bf_attack_result split20 = attack(m, l20, &o);
    bf_eval_result clean;
    CHECK_OK(bf_evaluate(m, l20, 0.0f, &clean));
    CHECK(fgsm20.samples == 20 && fgsm20.top1[0] == clean.top1 && fgsm20.top5[0] == clean.top5,
          "epsilon 0 is the evaluation: %d images, top-1 %g top-5 %g, bf_evaluate %g %g", fgsm20.samples, fgsm20.top1[0],
          fgsm20.top5[0], clean.top1, clean.top5);
    CHECK(clean.top1 > 0.6, "the model learnt the images (top-1 %g)", clean.top1);
    CHECK(same_curves(&fgsm20, &split20), "attack_samples = 20 scores the first 20 images");

    /* FGSM by hand, in both domains */
    const bf_attack_result fgsm = attack(m, l, &o);
    int by_hand = fgsm_by_hand(m, l, 0.3f, BF_ATTACK_PIXELS);
    CHECK(fabs(fgsm.top1[4] * 48 - by_hand) < 0.5 && fgsm.top1[4] < fgsm.top1[0],
          "FGSM at 0.3: top-1 %g of 48, by hand %d (clean %g)", fgsm.top1[4] * 48, by_hand, fgsm.top1[0] * 48);
    o.domain = BF_ATTACK_REFERENCE;
    const bf_attack_result reference = attack(m, l, &o);
    by_hand = fgsm_by_hand(m, l, 0.3f, BF_ATTACK_REFERENCE);
    CHECK(fabs(reference.top1[4] * 48 - by_hand) < 0.5, "FGSM at 0.3, reference domain: top-1 %g of 48, by hand %d",
          reference.top1[4] * 48, by_hand);
    CHECK(memcmp(reference.top1, fgsm.top1, sizeof fgsm.top1) != 0, "the reference domain attacks other points");

    /* PGD of one whole step from the image is FGSM */
    o = options(BF_ATTACK_PGD);
    o.pgd_steps = 1, o.pgd_step_fraction = 1, o.random_start = 0;
    const bf_attack_result one_step = attack(m, l, &o);
    CHECK(same_curves(&one_step, &fgsm), "PGD of 1 step of epsilon from the image is FGSM");

    /* draws keyed by the sample: batches of 8 and 5 agree */
    o = options(BF_ATTACK_PGD);
    const bf_attack_result pgd = attack(m, l, &o), pgd5 = attack(m5, l5, &o);
    CHECK(same_curves(&pgd, &pgd5), "PGD with random starts: batches of 8 and 5 score the same");
    CHECK(pgd.top1[4] < pgd.top1[0] && pgd.top1[4] <= fgsm.top1[4] + 2.0 / 48,
          "PGD lowers top-1: %g at 0.3 (FGSM %g, clean %g)", pgd.top1[4], fgsm.top1[4], pgd.top1[0]);
    o.eot_samples = 3;
    const bf_attack_result eot = attack(m, l, &o);
    CHECK(same_curves(&eot, &pgd), "EOT over 3 passes of a deterministic model is one pass");
    o = options(BF_ATTACK_GAUSSIAN_NOISE);
    o.epsilon_max = 1.0f;
    const bf_attack_result noise = attack(m, l, &o), noise5 = attack(m5, l5, &o);
    CHECK(same_curves(&noise, &noise5), "Gaussian noise: batches of 8 and 5 score the same");
    CHECK(noise.top1[4] < noise.top1[0], "noise of std 1 lowers top-1: %g (clean %g)", noise.top1[4], noise.top1[0]);

    /* the areas */
    double area = 0;
    for (int e = 1; e < 5; e++) area += 0.5 * (pgd.top1[e - 1] + pgd.top1[e]) * (double)0.3f / 4; /* the grid is in float */
    CHECK_CLOSE(pgd.auc, area, 1e-12, 1e-9, "AUC: the trapezoids of top-1 over epsilon");
    CHECK_CLOSE(pgd.auc_normalized, area / (double)0.3f, 1e-12, 1e-9, "the normalised AUC: the mean top-1 over the range");
    CHECK_CLOSE(pgd.auc_reference, area * 4 / 5, 1e-12, 1e-9, "the reference's AUC: a spacing of epsilon_max / 5");
    CHECK(fabs(pgd.epsilon[4] - 0.3) < 1e-7 && pgd.epsilon[2] == 0.15f, "the epsilons run from 0 to 0.3");

    bf_attack_result r;
    CHECK(bf_attack(plain, l, &o, &r) == BF_ERR_ARG && strstr(bf_last_error(), "input_gradient"),
          "a model without input_gradient is refused: %s", bf_last_error());
    o.epsilons = 1;
    CHECK(bf_attack(m, l, &o, &r) == BF_ERR_ARG, "a grid of 1 epsilon is refused");
    CHECK(bf_attack_preset_epsilon_max(BF_ATTACK_PGD) == 23.0f / 255.0f &&
              bf_attack_preset_epsilon_max(BF_ATTACK_FGSM) == 0.64f,
          "the reference's grids");

    bf_loader_destroy(l), bf_loader_destroy(l5), bf_loader_destroy(l20);
    bf_model_destroy(m), bf_model_destroy(m5), bf_model_destroy(plain);
    bf_dataset_free(train_set), bf_dataset_free(test), bf_dataset_free(first20);
    bf_backend_destroy(b);
    return bf_test_finish();
}
