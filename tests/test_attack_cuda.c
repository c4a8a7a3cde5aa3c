/* test_attack_cuda.c - input gradients (a model built with input_gradient) and an FGSM attack on
 * the CUDA backend against the CPU backend, from identical weights and running statistics:
 *   - the gradient of the summed cross-entropy with respect to the image, and with respect to the
 *     parameters (bf_model.eval_parameter_gradients: the Hessian's and gradient flow's evaluation
 *     mode), in evaluation mode, for a CNN with batch-norm and channel-wise max flex layers, one with
 *     mask-joint flex layers (batch-normalised logits, sigmoid_mul), and a spiking CNN of LIF neurons
 *     over 4 steps (BPTT through the surrogate, the direct input summed over the steps);
 *   - bf_attack's FGSM, Jitter, SPSA, JSMA and APGD curves on generated images: top-1 within one image of the
 *     CPU's at every epsilon (a sign that rounding flips can move one image across the boundary);
 *   - bf_input_hessian's losses, top eigenvalues and top Ritz values within 1e-3 of the CPU's.
 * Skipped (exit 77) without a CUDA build or device. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "bioflex/train.h"
#include "cuda_pair.h"
#include "testutil.h"

enum { N = 4, S = 12, K = 5 };

static bf_model *build(bf_backend *b, bf_model_config mc) {
    mc.input_gradient = 1;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){N, 1, S, S}, K, 3, &m));
    return m;
}

/* One training forward on the CPU moves the running statistics; the GPU model gets the CPU's. */
static void share_statistics(bf_model *cpu, bf_model *gpu, const float *x_host) {
    float *x = bf_test_upload(cpu->backend, x_host, (size_t)N * S * S);
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(cpu, x, &logits));
    float *buffers = bf_test_download(cpu->backend, cpu->buffer_data, cpu->num_buffer_floats);
    CHECK_OK(bf_to_device(gpu->backend, gpu->buffer_data, buffers, cpu->num_buffer_floats * sizeof(float)));
    bf_free(cpu->backend, x);
    free(buffers);
}

/* The evaluation-mode backward's image gradient (returned) and parameter gradients (*grads). */
static float *input_gradient(bf_model *m, const float *x_host, const int32_t *labels_host, float **grads) {
    bf_backend *b = m->backend;
    float *x = bf_test_upload(b, x_host, (size_t)N * S * S), *losses = bf_test_alloc(b, N);
    float *dlogits = bf_test_alloc(b, N * K);
    int32_t *labels = NULL;
    CHECK_OK(bf_alloc(b, N * sizeof(int32_t), (void **)&labels));
    CHECK_OK(bf_to_device(b, labels, labels_host, N * sizeof(int32_t)));
    const float *logits = NULL;
    m->training = 0;
    m->eval_parameter_gradients = 1;
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f, losses, dlogits));
    CHECK_OK(bf_model_backward(m, dlogits));
    float *dx = bf_test_download(b, m->dinput, (size_t)N * S * S);
    *grads = bf_test_download(b, m->grad_data, m->num_param_floats);
    bf_free(b, x), bf_free(b, losses), bf_free(b, dlogits), bf_free(b, labels);
    return dx;
}

static void compare_gradients(bf_backend *cpu, bf_backend *gpu, bf_model_config mc, const char *what) {
    bf_model *mc_cpu = build(cpu, mc), *mc_gpu = build(gpu, mc);
    if (!mc_cpu || !mc_gpu) return;
    float x[N * S * S];
    bf_test_fill_uniform(x, N * S * S, -1.0f, 2.0f, 9);
    const int32_t labels[N] = {0, 4, 2, 1};
    share_statistics(mc_cpu, mc_gpu, x);
    bf_test_fill_uniform(x, N * S * S, -2.0f, 1.0f, 10); /* mostly below 0: the first flex conv wins somewhere */
    float *want_grads = NULL, *got_grads = NULL;
    float *want = input_gradient(mc_cpu, x, labels, &want_grads), *got = input_gradient(mc_gpu, x, labels, &got_grads);
    double norm = 0;
    for (int i = 0; i < N * S * S; i++) norm += (double)want[i] * want[i];
    size_t worst = 0;
    double v = bf_test_max_violation(want, got, N * S * S, 1e-4 * sqrt(norm / (N * S * S)) + 1e-7, 1e-3, &worst);
    CHECK(v <= 1 && norm > 0, "%s: the input gradient on CUDA is the CPU's (worst pixel %zu: %g vs %g, %.2fx the "
          "tolerance; RMS %g)", what, worst, want[worst], got[worst], v, sqrt(norm / (N * S * S)));
    for (int q = 0; q < mc_cpu->num_params; q++) { /* each tensor against its own scale */
        const bf_param *p = &mc_cpu->params[q];
        double sq = 0;
        for (size_t i = p->offset; i < p->offset + p->count; i++) sq += (double)want_grads[i] * want_grads[i];
        const double rms = sqrt(sq / (double)p->count);
        v = bf_test_max_violation(want_grads + p->offset, got_grads + p->offset, p->count, 1e-4 * rms + 1e-7, 1e-3, &worst);
        CHECK(v <= 1 && rms > 0, "%s: the evaluation-mode gradient of %s on CUDA is the CPU's (worst %zu: %g vs %g, "
              "%.2fx the tolerance; RMS %g)", what, p->name, worst, want_grads[p->offset + worst],
              got_grads[p->offset + worst], v, rms);
    }
    free(want), free(got), free(want_grads), free(got_grads);
    bf_model_destroy(mc_cpu), bf_model_destroy(mc_gpu);
}

static bf_model_config cnn(void) {
    bf_model_config mc = bf_test_cnn_config(6, 16, 0.2f);
    mc.channels[1] = 8;
    mc.num_channels = 2;
    mc.batchnorm = 1;
    return mc;
}

/* `images` generated test images of K classes in batches of N, in file order: *d and its loader. */
static bf_loader *generated_images(int images, bf_dataset **d) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.data.dataset = BF_DATASET_PROCEDURAL;
    cfg.data.procedural_size = S, cfg.data.procedural_classes = K, cfg.data.procedural_channels = 1;
    cfg.data.procedural_train = images, cfg.data.procedural_test = images;
    cfg.data.batch_size = N;
    *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, 3, BF_SPLIT_TEST, d));
    bf_loader_options lo = bf_loader_options_from_config(&cfg, BF_SPLIT_TEST);
    lo.shuffle = 0;
    bf_loader *l = NULL;
    if (*d) CHECK_OK(bf_loader_create(*d, &lo, &l));
    return l;
}

/* An attack on 24 generated images of 5 classes, through a model trained on none: its decisions are
 * arbitrary but the same function on both backends. */
static void compare_attack(bf_backend *cpu, bf_backend *gpu, bf_attack_method method) {
    bf_dataset *d = NULL;
    bf_loader *l = generated_images(24, &d);
    bf_model_config mc = cnn();
    mc.flex = 1;
    bf_model *on_cpu = build(cpu, mc), *on_gpu = build(gpu, mc);
    if (!l || !on_cpu || !on_gpu) return;
    const bf_attack_options o = {.method = method, .epsilons = 6, .epsilon_max = 0.5f, .pgd_steps = 1,
                                 .pgd_step_fraction = 1, .eot_samples = 1, .seed = 1, .jitter_scale = 10,
                                 .jitter_std = 0.1f, .spsa_delta = 0.01f, .spsa_lr = 0.05f, .spsa_iterations = 2,
                                 .spsa_samples = 4, .jsma_gamma = 0.1f, .apgd_steps = 10, .apgd_restarts = 1,
                                 .apgd_rho = 0.75f};
    static bf_attack_result want, got;
    CHECK_OK(bf_attack(on_cpu, l, &o, &want));
    CHECK_OK(bf_attack(on_gpu, l, &o, &got));
    double worst = 0;
    for (int e = 0; e < o.epsilons; e++) worst = fmax(worst, fabs(want.top1[e] - got.top1[e]) * 24);
    CHECK(want.samples == 24 && got.samples == 24 && worst <= 1 && (method != BF_ATTACK_FGSM || want.top1[5] < want.top1[0]),
          "%s: top-1 on CUDA within %g images of the CPU's at every epsilon (CPU %g -> %g)", bf_attack_method_name(method),
          worst, want.top1[0], want.top1[5]);
    bf_model_destroy(on_cpu), bf_model_destroy(on_gpu);
    bf_loader_destroy(l);
    bf_dataset_free(d);
}

/* The input Hessian of 3 generated images through a flex CNN with the same weights on both backends. */
static void compare_input_hessian(bf_backend *cpu, bf_backend *gpu) {
    bf_dataset *d = NULL;
    bf_loader *l = generated_images(8, &d);
    bf_model_config mc = cnn();
    mc.flex = 1;
    bf_model *on_cpu = build(cpu, mc), *on_gpu = build(gpu, mc);
    if (!l || !on_cpu || !on_gpu) return;
    const bf_input_hessian_options o = {.images = 3, .top_n = 2, .power_steps = 30, .lanczos_steps = 10, .seed = 5};
    static bf_input_hessian_result want, got;
    CHECK_OK(bf_input_hessian(on_cpu, l, &o, &want));
    CHECK_OK(bf_input_hessian(on_gpu, l, &o, &got));
    for (int i = 0; i < want.images && got.images == want.images; i++) {
        CHECK_CLOSE(got.image[i].loss, want.image[i].loss, 1e-6, 1e-4, "input Hessian on CUDA: the image's loss");
        for (int k = 0; k < 2; k++)
            CHECK_CLOSE(got.image[i].eigenvalues[k], want.image[i].eigenvalues[k], 1e-6 * want.image[i].eigenvalues[0], 1e-3,
                        "input Hessian on CUDA: a top eigenvalue");
        CHECK_CLOSE(got.image[i].ritz[0], want.image[i].ritz[0], 1e-9, 1e-3, "input Hessian on CUDA: the top Ritz value");
    }
    CHECK(want.images == 3 && got.images == 3, "input Hessian: 3 images on both backends");
    bf_model_destroy(on_cpu), bf_model_destroy(on_gpu);
    bf_loader_destroy(l);
    bf_dataset_free(d);
}

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 1)) return bf_test_finish();
    bf_model_config mc = cnn();
    mc.flex = 1;
    compare_gradients(cpu, gpu, mc, "flex, channel-wise max");
    mc.flex_joint = BF_FLEX_JOINT_MASK;
    mc.flex_mask = BF_FLEX_MASK_SIGMOID_MUL;
    mc.flex_logits_bn = 1;
    compare_gradients(cpu, gpu, mc, "flex, mask joint with batch-normalised logits");
    mc = cnn();
    mc.dropout = 0;
    mc.spiking.neuron = BF_NEURON_LIF;
    mc.spiking.time_steps = 4;
    mc.spiking.threshold = 0.3f;
    compare_gradients(cpu, gpu, mc, "spiking, LIF over 4 steps");
    compare_attack(cpu, gpu, BF_ATTACK_FGSM);
    compare_attack(cpu, gpu, BF_ATTACK_JITTER);
    compare_attack(cpu, gpu, BF_ATTACK_SPSA);
    compare_attack(cpu, gpu, BF_ATTACK_JSMA);
    compare_attack(cpu, gpu, BF_ATTACK_APGD);
    compare_input_hessian(cpu, gpu);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
