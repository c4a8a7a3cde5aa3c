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
 *   - a model built without input_gradient is refused;
 *   - Jitter's cost and gradient are PyTorch 1.13's autograd of torchattacks' formula (values below)
 *     and agree with finite differences, and so does the gradient of the cost divided by the
 *     perturbation's L-inf norm, through a linear map; SPSA's margin is the label's logit minus the
 *     best other;
 *   - SPGD is PGD on its own grid; Jitter of one whole step from the image without noise is the
 *     step along the sign of its cost's gradient done by hand; Jitter and SPSA draw per sample
 *     (batches of 8 and 5 score the same) and lower top-1; SPSA takes int(40 epsilon) steps by
 *     default, none below 0.025;
 *   - JSMA is the attack done by hand image by image, with torchattacks' saliency map (the blanked
 *     pixels pushed out of range by twice the largest derivative, the full pixel-by-pixel map and its
 *     first maximum), and batches of 8 and 5 score the same;
 *   - OnePixel's grid runs from 1 pixel; its searches are the image's own (batches of 8 and 5 score the
 *     same); 6 pixels of 64 lower top-1 below the clean images' and below 1 pixel's; more generations
 *     (the same search, continued) fool at least as many images; a grid that ends below 1 is refused;
 *   - APGD draws per sample (batches of 8 and 5 score the same), lowers top-1 and, being stronger,
 *     below PGD's with as many steps; a second restart (the first one the same) fools at least as
 *     many images. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attack_loss.h"
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
static int fgsm_by_hand(bf_model *m, bf_loader *l, float eps, bf_attack_domain domain, int jitter) {
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
        if (jitter) { /* the gradient of Jitter's cost without noise, the image unperturbed */
            float z[B * K];
            double dz[K];
            CHECK_OK(bf_to_host(b, z, logits, (size_t)n * K * sizeof(float)));
            for (int j = 0; j < n; j++) {
                bf_jitter_cost(z + j * K, K, want[j], 10.0f, 0.0f, NULL, dz);
                for (int k = 0; k < K; k++) z[j * K + k] = (float)dz[k];
            }
            CHECK_OK(bf_to_device(b, dlogits, z, (size_t)n * K * sizeof(float)));
        } else {
            CHECK_OK(b->ops->softmax_xent(b, n, K, logits, labels, 0.0f, 1.0f, losses, dlogits));
        }
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

/* Jitter's cost at float logits z, in double, for finite differences. */
static double jitter_at(const double *z, int K, int label, const double *noise) {
    float zf[8];
    for (int k = 0; k < K; k++) zf[k] = (float)z[k];
    return bf_jitter_cost(zf, K, label, 10.0f, 0.1f, noise, NULL);
}

/* The attack losses on the host (attack_loss.h). */
static void check_losses(void) {
    /* torchattacks' Jitter in PyTorch 1.13, float64 (MSELoss of softmax(10 z / ||z||_inf) + 0.1 noise
     * against the one-hot label, mean over classes, .backward()): z = (1.5, -3, 0.25, 3) with a tie
     * for the norm, label 2, noise (0.3, -1.2, 0.5, 0.8); and z = (0.5, -2, 1.25), label 0, no noise. */
    const float z1[4] = {1.5f, -3.0f, 0.25f, 3.0f}, z2[3] = {0.5f, -2.0f, 1.25f};
    const double noise1[4] = {0.3, -1.2, 0.5, 0.8};
    const double want1[4] = {-0.011481125291785176, 0.003030059161741622, -0.00034860619373532813, 0.008799672323778821};
    const double want2[3] = {-0.14622385508877273, 0.054834111942688515, 0.14622412114381073};
    double dz[4];
    CHECK_CLOSE(bf_jitter_cost(z1, 4, 2, 10.0f, 0.1f, noise1, dz), 0.5174540511202956, 1e-12, 1e-9, "Jitter's cost, PyTorch's");
    for (int k = 0; k < 4; k++) CHECK_CLOSE(dz[k], want1[k], 1e-12, 1e-9, "Jitter's gradient (a tie for the norm), PyTorch's");
    CHECK_CLOSE(bf_jitter_cost(z2, 3, 0, 10.0f, 0.0f, NULL, dz), 0.6363820932609371, 1e-12, 1e-9, "Jitter's cost without noise");
    for (int k = 0; k < 3; k++) CHECK_CLOSE(dz[k], want2[k], 1e-12, 1e-9, "Jitter's gradient without noise, PyTorch's");

    /* finite differences, the largest magnitude unique (the norm differentiable) */
    double z[5] = {0.75, -1.5, 0.375, 1.25, -0.5}, fd_noise[5] = {0.1, -0.4, 0.2, 0.0, 0.3}, dz5[5];
    float zf[5];
    for (int k = 0; k < 5; k++) zf[k] = (float)z[k];
    bf_jitter_cost(zf, 5, 3, 10.0f, 0.1f, fd_noise, dz5);
    for (int k = 0; k < 5; k++) {
        const double h = 1.0 / 1024, keep = z[k];
        z[k] = keep + h;
        const double up = jitter_at(z, 5, 3, fd_noise);
        z[k] = keep - h;
        const double down = jitter_at(z, 5, 3, fd_noise);
        z[k] = keep;
        CHECK_CLOSE(dz5[k], (up - down) / (2 * h), 2e-5, 2e-3, "Jitter's gradient against finite differences");
    }

    /* c(W x) / r(x): two channels of 3 elements scaled 0.5 and 2, the norm reached at one element */
    enum { P = 6, C = 3 };
    const float scale[2] = {0.5f, 2.0f}, a0[P] = {0.25f, 0.5f, 0.75f, 0.125f, 0.375f, 0.625f};
    const float W[C * P] = {1, -2, 0.5f, 1.5f, -1, 2, -0.5f, 1, 2, -1.5f, 0.5f, -1, 2, 0.5f, -1, 1, 1.5f, -2};
    double x[P] = {0.3125, 0.4375, 0.8125, 0.1875, 0.3125, 0.59375};
    double analytic[P];
    {
        float xf[P], zw[C], g[P];
        double dzw[C];
        for (int j = 0; j < P; j++) xf[j] = (float)x[j];
        for (int k = 0; k < C; k++) {
            double acc = 0;
            for (int j = 0; j < P; j++) acc += (double)W[k * P + j] * xf[j];
            zw[k] = (float)acc;
        }
        const double c = bf_jitter_cost(zw, C, 1, 10.0f, 0.1f, fd_noise, dzw);
        const double r = bf_perturbation_norm(xf, a0, P, 3, scale, 2);
        CHECK_CLOSE(r, 0.0625 * 2, 0, 1e-12, "the norm in [0, 1] units: the second channel's 0.0625 x 2");
        for (int j = 0; j < P; j++) {
            double acc = 0;
            for (int k = 0; k < C; k++) acc += (double)W[k * P + j] * dzw[k];
            g[j] = (float)(acc / r);
        }
        bf_perturbation_norm_gradient(xf, a0, P, 3, scale, 2, c, r, g);
        for (int j = 0; j < P; j++) analytic[j] = g[j];
    }
    for (int j = 0; j < P; j++) {
        double f[2];
        for (int side = 0; side < 2; side++) {
            const double h = 1.0 / 4096;
            double xs[P], zw[C];
            float xf[P];
            memcpy(xs, x, sizeof xs);
            xs[j] += side ? -h : h;
            for (int i = 0; i < P; i++) xf[i] = (float)xs[i];
            for (int k = 0; k < C; k++) {
                zw[k] = 0;
                for (int i = 0; i < P; i++) zw[k] += (double)W[k * P + i] * xs[i];
            }
            f[side] = jitter_at(zw, C, 1, fd_noise) / bf_perturbation_norm(xf, a0, P, 3, scale, 2);
        }
        CHECK_CLOSE(analytic[j], (f[0] - f[1]) / (2.0 / 4096), 1e-4, 2e-3, "c / r: its gradient against finite differences");
    }
    const float margin_z[3] = {1.0f, 5.0f, 3.0f};
    CHECK(bf_margin_loss(margin_z, 3, 2) == -2.0 && bf_margin_loss(margin_z, 3, 1) == 2.0,
          "SPSA's margin: the label's logit minus the best other (%g, %g)", bf_margin_loss(margin_z, 3, 2),
          bf_margin_loss(margin_z, 3, 1));
}

/* JSMA by hand over the loader's images, one image at a time in pixel space (pixels domain): the
 * top-1 correct count at theta, gamma. */
static int jsma_by_hand(bf_model *m, bf_loader *l, float theta, float gamma) {
    enum { P = S * S };
    bf_backend *b = m->backend;
    float *x = bf_test_alloc(b, P), *dlogits = bf_test_alloc(b, K);
    float pixel[P], normalised[P], jac[K][P], z[K];
    int correct = 0;
    CHECK_OK(bf_model_set_batch(m, 1));
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    bf_batch *batch = NULL;
    while (bf_loader_next(l, &batch, NULL) == BF_OK && batch) {
        for (int j = 0; j < batch->n; j++) {
            const int label = batch->labels[j], target = (label + 1) % K, budget = (int)ceil(P * (double)gamma / 2);
            unsigned char domain[P];
            for (int i = 0; i < P; i++) {
                pixel[i] = batch->images[j * P + i] * STD + MEAN;
                domain[i] = pixel[i] < 0.99f;
            }
            for (int round = 0;; round++) {
                const float *logits = NULL;
                for (int i = 0; i < P; i++) normalised[i] = (pixel[i] - MEAN) / STD;
                CHECK_OK(bf_to_device(b, x, normalised, sizeof normalised));
                CHECK_OK(bf_model_forward(m, x, &logits));
                CHECK_OK(bf_to_host(b, z, logits, sizeof z));
                int predicted = 0;
                for (int k = 1; k < K; k++) predicted = z[k] > z[predicted] ? k : predicted;
                if (round == budget || predicted == target) break;
                for (int k = 0; k < K; k++) { /* the Jacobian in pixel units */
                    float onehot[K] = {0};
                    onehot[k] = 1;
                    CHECK_OK(bf_model_forward(m, x, &logits));
                    CHECK_OK(bf_to_device(b, dlogits, onehot, sizeof onehot));
                    CHECK_OK(bf_model_backward(m, dlogits));
                    CHECK_OK(bf_to_host(b, jac[k], m->dinput, sizeof jac[k]));
                    for (int i = 0; i < P; i++) jac[k][i] /= STD;
                }
                float t[P], o[P], t_max = 0, o_max = 0;
                for (int i = 0; i < P; i++) {
                    float all = 0;
                    for (int k = 0; k < K; k++) all += jac[k][i];
                    t[i] = jac[target][i], o[i] = all - t[i];
                    t_max = fmaxf(t_max, fabsf(t[i])), o_max = fmaxf(o_max, fabsf(o[i]));
                }
                for (int i = 0; i < P; i++) /* torchattacks' increase_coef: 2 where not searchable */
                    if (!domain[i]) t[i] -= 2 * t_max, o[i] += 2 * o_max;
                float best = 0;
                int at = 0;
                for (int flat = 0; flat < P * P; flat++) {
                    const int p = flat / P, q = flat % P;
                    const float alpha = t[p] + t[q], beta = o[p] + o[q];
                    const float saliency = p != q && alpha > 0 && beta < 0 ? alpha * fabsf(beta) : 0.0f;
                    if (saliency > best) best = saliency, at = flat;
                }
                if (best == 0) break; /* no admissible pair: bioflex stops the image */
                const int pair[2] = {at / P, at % P};
                for (int side = 0; side < 2; side++) {
                    pixel[pair[side]] = fminf(fmaxf(pixel[pair[side]] + theta, 0.0f), 1.0f);
                    domain[pair[side]] = 0;
                }
            }
            int best = 0;
            for (int k = 1; k < K; k++) best = z[k] > z[best] ? k : best;
            correct += best == label;
        }
        bf_loader_release(l, batch);
    }
    CHECK_OK(bf_model_set_batch(m, B));
    bf_free(b, x), bf_free(b, dlogits);
    return correct;
}

int main(void) {
    check_losses();
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
    int by_hand = fgsm_by_hand(m, l, 0.3f, BF_ATTACK_PIXELS, 0);
    CHECK(fabs(fgsm.top1[4] * 48 - by_hand) < 0.5 && fgsm.top1[4] < fgsm.top1[0],
          "FGSM at 0.3: top-1 %g of 48, by hand %d (clean %g)", fgsm.top1[4] * 48, by_hand, fgsm.top1[0] * 48);
    o.domain = BF_ATTACK_REFERENCE;
    const bf_attack_result reference = attack(m, l, &o);
    by_hand = fgsm_by_hand(m, l, 0.3f, BF_ATTACK_REFERENCE, 0);
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

    /* SPGD, Jitter, SPSA */
    o = options(BF_ATTACK_SPGD);
    const bf_attack_result spgd = attack(m, l, &o);
    CHECK(same_curves(&spgd, &pgd) && bf_attack_preset_epsilon_max(BF_ATTACK_SPGD) == 0.5f,
          "SPGD is PGD, on a grid to 0.5 by default");
    o = options(BF_ATTACK_JITTER);
    o.jitter_scale = 10.0f, o.jitter_std = 0.0f, o.pgd_steps = 1, o.pgd_step_fraction = 1, o.random_start = 0;
    const bf_attack_result jitter_step = attack(m, l, &o);
    by_hand = fgsm_by_hand(m, l, 0.3f, BF_ATTACK_PIXELS, 1);
    CHECK(fabs(jitter_step.top1[4] * 48 - by_hand) < 0.5, "Jitter, one step of 0.3 from the image: top-1 %g of 48, by hand %d",
          jitter_step.top1[4] * 48, by_hand);
    o = options(BF_ATTACK_JITTER);
    o.jitter_scale = 10.0f, o.jitter_std = 0.1f;
    const bf_attack_result jitter = attack(m, l, &o), jitter5 = attack(m5, l5, &o);
    CHECK(same_curves(&jitter, &jitter5), "Jitter: batches of 8 and 5 score the same");
    CHECK(jitter.top1[4] < jitter.top1[0], "Jitter lowers top-1: %g at 0.3 (clean %g)", jitter.top1[4], jitter.top1[0]);
    o = options(BF_ATTACK_SPSA);
    o.spsa_delta = 0.01f, o.spsa_lr = 0.05f, o.spsa_iterations = 6, o.spsa_samples = 16;
    const bf_attack_result spsa = attack(m, l, &o), spsa5 = attack(m5, l5, &o);
    CHECK(same_curves(&spsa, &spsa5), "SPSA: batches of 8 and 5 score the same");
    CHECK(spsa.top1[4] < spsa.top1[0], "SPSA lowers top-1: %g at 0.3 (clean %g)", spsa.top1[4], spsa.top1[0]);
    o.spsa_iterations = 0, o.epsilon_max = 0.02f; /* int(40 epsilon) = 0 steps */
    const bf_attack_result spsa_none = attack(m, l, &o);
    int unchanged = 1;
    for (int e = 1; e < 5; e++) unchanged &= spsa_none.top1[e] == spsa_none.top1[0] && spsa_none.top5[e] == spsa_none.top5[0];
    CHECK(unchanged, "SPSA below epsilon 0.025 takes no step (the reference's int(40 epsilon))");
    o.epsilon_max = 0.3f;
    const bf_attack_result spsa_reference = attack(m, l, &o);
    CHECK(spsa_reference.top1[4] < spsa_reference.top1[0], "SPSA with int(40 x 0.3) = 12 steps lowers top-1: %g (clean %g)",
          spsa_reference.top1[4], spsa_reference.top1[0]);

    o = options(BF_ATTACK_JSMA);
    o.jsma_gamma = 0.1f, o.epsilon_max = 1.0f;
    const bf_attack_result jsma = attack(m, l, &o), jsma5 = attack(m5, l5, &o);
    CHECK(same_curves(&jsma, &jsma5), "JSMA: batches of 8 and 5 score the same");
    for (int e = 2; e < 5; e += 2) {
        by_hand = jsma_by_hand(m, l, (float)jsma.epsilon[e], 0.1f);
        CHECK(fabs(jsma.top1[e] * 48 - by_hand) < 0.5 && jsma.top1[4] < jsma.top1[0],
              "JSMA at theta %g: top-1 %g of 48, by hand %d (clean %g)", jsma.epsilon[e], jsma.top1[e] * 48, by_hand,
              jsma.top1[0] * 48);
    }

    o = options(BF_ATTACK_ONEPIXEL);
    o.epsilons = 3, o.epsilon_max = 6.0f;
    const bf_attack_result onepixel = attack(m, l, &o), onepixel5 = attack(m5, l5, &o);
    CHECK(onepixel.epsilon[0] == 1 && onepixel.epsilon[2] == 6 && same_curves(&onepixel, &onepixel5),
          "OnePixel: from 1 to 6 pixels, batches of 8 and 5 score the same");
    CHECK(onepixel.top1[2] < onepixel.top1[0] && onepixel.top1[2] < fgsm.top1[0],
          "OnePixel with 6 pixels lowers top-1: %g (1 pixel %g, clean %g)", onepixel.top1[2], onepixel.top1[0], fgsm.top1[0]);
    CHECK_CLOSE(onepixel.auc, 0.5 * (onepixel.top1[0] + onepixel.top1[1]) * 2.5 + 0.5 * (onepixel.top1[1] + onepixel.top1[2]) * 2.5,
                1e-12, 1e-9, "OnePixel's AUC: trapezoids 2.5 pixels wide");
    o.onepixel_steps = 30; /* the same search continued past int(2 epsilon) = 2, 7, 12 generations */
    const bf_attack_result longer = attack(m, l, &o);
    int no_worse = 1;
    for (int e = 0; e < 3; e++) no_worse &= longer.top1[e] <= onepixel.top1[e];
    CHECK(no_worse && longer.top1[2] <= longer.top1[0], "OnePixel with 30 generations fools at least as many: %g %g %g",
          longer.top1[0], longer.top1[1], longer.top1[2]);
    o.onepixel_steps = 0;
    o.epsilon_max = 0.5f;
    bf_attack_result refused;
    CHECK(bf_attack(m, l, &o, &refused) == BF_ERR_ARG && strstr(bf_last_error(), "below the grid's start"),
          "OnePixel up to 0.5 pixels is refused: %s", bf_last_error());

    o = options(BF_ATTACK_APGD);
    o.apgd_steps = 20, o.apgd_restarts = 1, o.apgd_rho = 0.75f, o.pgd_steps = 20;
    const bf_attack_result apgd = attack(m, l, &o), apgd5 = attack(m5, l5, &o);
    CHECK(same_curves(&apgd, &apgd5), "APGD: batches of 8 and 5 score the same");
    o.method = BF_ATTACK_PGD;
    const bf_attack_result pgd20 = attack(m, l, &o);
    int apgd_stronger = 1;
    for (int e = 1; e < 5; e++) apgd_stronger &= apgd.top1[e] <= pgd20.top1[e];
    CHECK(apgd_stronger && apgd.top1[4] < apgd.top1[0], "APGD (20 steps) at most PGD's (20 steps) top-1: %g %g %g %g vs %g %g %g %g",
          apgd.top1[1], apgd.top1[2], apgd.top1[3], apgd.top1[4], pgd20.top1[1], pgd20.top1[2], pgd20.top1[3], pgd20.top1[4]);
    o.method = BF_ATTACK_APGD, o.apgd_steps = 3, o.apgd_restarts = 1;
    const bf_attack_result short1 = attack(m, l, &o);
    o.apgd_restarts = 2;
    const bf_attack_result short2 = attack(m, l, &o);
    int restart_helps = 1;
    for (int e = 0; e < 5; e++) restart_helps &= short2.top1[e] <= short1.top1[e] && short1.top1[e] <= short1.top1[0];
    CHECK(restart_helps, "APGD: a second restart fools at least as many (3 steps: %g -> %g at 0.3)", short1.top1[4],
          short2.top1[4]);

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
