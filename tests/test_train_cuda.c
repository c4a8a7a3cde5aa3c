/* test_train_cuda.c (label gpu) - three full training steps of a small VGG (VGG-6 with batch-norm,
 * dropout, SGD with Nesterov momentum and weight decay, label smoothing, gradient clipping) on
 * the CPU backend and on the CUDA backend (fp32) from identical weights and batches: the losses,
 * gradients and weights after every step must agree. Two more CUDA backends set deterministic
 * ([run] deterministic) take the same steps bit for bit. The same again for two flex VGG-6s: every
 * conv and pool a fused channel-wise max flex layer (fully_flex), and every conv a mask-joint flex
 * layer (bilinear widening, logits batch-norm, hard sigmoid; then expand, no batch-norm, sigmoid),
 * the layer code of both joints end to end on the GPU (the channel-wise max also under [run]
 * flex_kernels = slide); and a FlexResNet-18 (every conv flex: the 7x7/2 stem, 1x1 downsamples and strided
 * 3x3s, windows the VGGs do not have) for one step: at 16x16 with 8 images its later stages are 1x1 and
 * their batch-norms average 8 values, so a max that rounding tips the other way moves the next steps
 * by more than any bound could allow (in the kernel emulator, a 1e-6 change of the input moved the
 * first step's gradients by 1.5e-2, relative L2, against 2e-5 without flex; rounding alone, by
 * 2.6e-4 at the third step); and two spiking PlasticFlex VGG-6s (LIF over T = 4 with the GPU's
 * spiking defaults, without and with flex). Skipped without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/train.h"
#include "testutil.h"

enum { N = 8, C = 3, HW = 16, K = 10, STEPS = 3 };

typedef struct side {
    bf_backend *b;
    bf_model *m;
    bf_optimizer *opt;
    float *x, *losses, *dlogits, *sumsq, *clip;
    int32_t *labels;
} side;

static void side_init(side *s, bf_backend *b, const bf_config *cfg) {
    memset(s, 0, sizeof *s);
    s->b = b;
    CHECK_OK(bf_model_build(b, &cfg->model, (bf_shape){N, C, HW, HW}, K, cfg->run.seed, &s->m));
    CHECK_OK(bf_optimizer_create(b, &cfg->optim, s->m->num_param_floats, &s->opt));
    s->x = bf_test_upload(b, NULL, N * C * HW * HW);
    s->losses = bf_test_upload(b, NULL, N);
    s->dlogits = bf_test_upload(b, NULL, N * K);
    s->sumsq = bf_test_upload(b, NULL, 2);
    s->clip = s->sumsq + 1;
    bf_alloc(b, N * sizeof(int32_t), (void **)&s->labels);
}

static void side_free(side *s) {
    bf_optimizer_destroy(s->b, s->opt);
    bf_model_destroy(s->m);
    void *bufs[] = {s->x, s->losses, s->dlogits, s->sumsq, s->labels};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) bf_free(s->b, bufs[i]);
}

static void side_step(side *s, const bf_config *cfg, const float *x, const int32_t *labels, long step) {
    bf_backend *b = s->b;
    const bf_ops *ops = b->ops;
    bf_to_device(b, s->x, x, N * C * HW * HW * sizeof(float));
    bf_to_device(b, s->labels, labels, N * sizeof(int32_t));
    s->m->step = (uint64_t)step;
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(s->m, s->x, &logits));
    CHECK_OK(ops->softmax_xent(b, N, K, logits, s->labels, cfg->optim.label_smoothing, 1.0f / N, s->losses, s->dlogits));
    CHECK_OK(bf_model_backward(s->m, s->dlogits));
    CHECK_OK(ops->sum_squares(b, s->m->grad_data, s->m->num_param_floats, s->sumsq));
    CHECK_OK(ops->clip_scale(b, s->sumsq, cfg->optim.grad_clip_norm, s->clip));
    CHECK_OK(bf_optimizer_step(b, s->opt, s->m->param_data, s->m->grad_data, cfg->optim.lr, s->clip));
}

/* Element by element within (atol, rtol), with one allowance: cuDNN and OpenBLAS round the
 * convolutions differently (~1e-7 relative), so a ReLU input or a max-pool pair within that of a
 * tie can fall on different sides, which moves a few gradient elements by far more than rtol
 * while the tensor as a whole still agrees. So at most 1 in 1,000 elements may exceed the bound
 * when the whole buffer's relative L2 error stays below 1e-4 (a real bug moves it far more). */
static void compare(const char *what, side *cpu, side *gpu, const float *a_dev, const float *b_dev, size_t n,
                    double atol, double rtol, int step) {
    float *a = bf_test_download(cpu->b, a_dev, n), *b = bf_test_download(gpu->b, b_dev, n);
    size_t worst = 0, beyond = 0;
    double v = bf_test_max_violation(a, b, n, atol, rtol, &worst), diff2 = 0, ref2 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        diff2 += d * d;
        ref2 += (double)a[i] * a[i];
        beyond += fabs(d) > atol + rtol * fmax(fabs((double)a[i]), fabs((double)b[i])); /* as max_violation */
    }
    double rel_l2 = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    printf("step %d %-10s max violation %.3f (index %zu: cpu %.8g cuda %.8g), %zu beyond, relative L2 %.2g\n", step,
           what, v, worst, a[worst], b[worst], beyond, rel_l2);
    CHECK(v <= 1.0 || (beyond * 1000 <= n && rel_l2 < 1e-4),
          "step %d: %s differ between CPU and CUDA (violation %.3g at %zu, %zu of %zu beyond, relative L2 %.3g)", step,
          what, v, worst, beyond, n, rel_l2);
    free(a);
    free(b);
}

/* Two deterministic CUDA sides after the same step: equal bit for bit. */
static void compare_exact(const char *what, side *a, side *b, const float *a_dev, const float *b_dev, size_t n, int step) {
    float *x = bf_test_download(a->b, a_dev, n), *y = bf_test_download(b->b, b_dev, n);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += memcmp(&x[i], &y[i], sizeof(float)) != 0;
    printf("step %d %-10s deterministic runs: %zu of %zu differ\n", step, what, differ, n);
    CHECK(differ == 0, "step %d: %s of two deterministic CUDA runs differ in %zu of %zu values", step, what, differ, n);
    free(x);
    free(y);
}

/* `steps` steps of the network cfg describes on the CPU, the CUDA and two deterministic CUDA backends;
 * the model's step counter (which keys the dropout masks) counts from first_step. */
static void run_network(const char *label, const bf_config *cfg, bf_backend *cb, bf_backend *gb, bf_backend *db[2],
                        int steps, long first_step) {
    printf("%s\n", label);
    side cpu, gpu, det[2];
    side_init(&cpu, cb, cfg);
    side_init(&gpu, gb, cfg);
    for (int i = 0; i < 2; i++) side_init(&det[i], db[i], cfg);
    if (!cpu.m || !gpu.m || !det[0].m || !det[1].m) return;
    static float x[N * C * HW * HW];
    int32_t labels[N];
    for (int step = 0; step < steps; step++) {
        bf_test_fill_uniform(x, N * C * HW * HW, -2, 2, 100 + step);
        for (int i = 0; i < N; i++) labels[i] = (i * 7 + step) % K;
        side_step(&cpu, cfg, x, labels, first_step + step);
        side_step(&gpu, cfg, x, labels, first_step + step);
        compare("losses", &cpu, &gpu, cpu.losses, gpu.losses, N, 1e-5, 1e-4, step);
        compare("gradients", &cpu, &gpu, cpu.m->grad_data, gpu.m->grad_data, cpu.m->num_param_floats, 1e-5, 2e-3, step);
        compare("weights", &cpu, &gpu, cpu.m->param_data, gpu.m->param_data, cpu.m->num_param_floats, 1e-6, 1e-3, step);
        compare("bn stats", &cpu, &gpu, cpu.m->buffer_data, gpu.m->buffer_data, cpu.m->num_buffer_floats, 1e-5, 1e-3, step);
        for (int i = 0; i < 2; i++) side_step(&det[i], cfg, x, labels, first_step + step);
        compare("det weights", &cpu, &det[0], cpu.m->param_data, det[0].m->param_data, cpu.m->num_param_floats, 1e-6,
                1e-3, step);
        compare_exact("gradients", &det[0], &det[1], det[0].m->grad_data, det[1].m->grad_data, cpu.m->num_param_floats,
                      step);
        compare_exact("weights", &det[0], &det[1], det[0].m->param_data, det[1].m->param_data, cpu.m->num_param_floats,
                      step);
        compare_exact("bn stats", &det[0], &det[1], det[0].m->buffer_data, det[1].m->buffer_data,
                      cpu.m->num_buffer_floats, step);
    }
    side_free(&cpu);
    side_free(&gpu);
    for (int i = 0; i < 2; i++) side_free(&det[i]);
}

int main(void) {
    if (!bf_cuda_built()) bf_test_skip("bioflex was built without the CUDA backend");
    if (bf_cuda_device_count() == 0) bf_test_skip("no CUDA device");
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_VGG6;
    cfg.model.dropout = 0.5f;
    cfg.optim.optimizer = BF_OPTIM_SGD;
    cfg.optim.lr = 0.02f;
    cfg.optim.nesterov = 1;
    cfg.optim.weight_decay = 5e-4f;
    cfg.optim.label_smoothing = 0.1f;
    cfg.optim.grad_clip_norm = 1.0f;
    bf_backend *cb = NULL, *gb = NULL, *db[2] = {NULL, NULL};
    CHECK_OK(bf_backend_create_cpu(0, &cb));
    /* The reference's convolutions (im2col, test_conv_onednn holds oneDNN's to them): the
     * FlexResNet-18's step tips on rounding, and its bound was set against these sums. */
    if (cb) CHECK_OK(bf_cpu_set_conv_library(cb, BF_CPU_CONV_IM2COL));
    CHECK_OK(bf_backend_create_cuda(0, BF_PRECISION_FP32, &gb));
    for (int i = 0; i < 2; i++) {
        CHECK_OK(bf_backend_create_cuda(0, BF_PRECISION_FP32, &db[i]));
        if (db[i]) CHECK_OK(bf_cuda_set_deterministic(db[i], 1));
    }
    if (!cb || !gb || !db[0] || !db[1]) return bf_test_finish();
    run_network("VGG-6", &cfg, cb, gb, db, STEPS, 0);
    cfg.model.flex = 1;
    cfg.model.fully_flex = 1;
    run_network("flex VGG-6, channel-wise max, fully flex", &cfg, cb, gb, db, STEPS, 0);
    /* [model] static_routing (MaxPrefResNet's ablation): the six sites fixed alternately to their pool
     * (a flex layer without a conv) and their conv (a plain conv), a max-pool site among each */
    char routing[] = "/tmp/bioflex_train_cuda_routing_XXXXXX";
    const int routing_fd = mkstemp(routing);
    FILE *rf = routing_fd >= 0 ? fdopen(routing_fd, "w") : NULL;
    if (rf) {
        const char *sites[6] = {"features.0", "features.3", "features.6", "features.7", "features.10", "features.13"};
        fprintf(rf, "{\"layers\": [");
        for (int i = 0; i < 6; i++)
            fprintf(rf, "%s{\"name\": \"%s\", \"joint\": \"channelwise_max\", \"conv\": %s}", i ? ", " : "", sites[i],
                    i % 2 ? "0.8" : "0.2");
        fprintf(rf, "]}\n");
        fclose(rf);
        snprintf(cfg.model.static_routing, sizeof cfg.model.static_routing, "%s", routing);
        cfg.model.static_routing_threshold = 0.5f;
        run_network("flex VGG-6, fully flex, sites fixed alternately to pool and conv (static_routing)", &cfg, cb, gb, db,
                    STEPS, 0);
        cfg.model.static_routing[0] = '\0';
        remove(routing);
    }
    CHECK(rf != NULL, "a routing file for static_routing");
    /* [run] flex_kernels = slide: the sliding-window forward and route with the scatter (dC apart from
     * dy in the plan), the batch-norms' statistics by their own pass */
    CHECK_OK(bf_cuda_set_flex_kernels(gb, 1));
    for (int i = 0; i < 2; i++) CHECK_OK(bf_cuda_set_flex_kernels(db[i], 1));
    run_network("flex VGG-6, channel-wise max, fully flex, flex_kernels = slide", &cfg, cb, gb, db, STEPS, 0);
    CHECK_OK(bf_cuda_set_flex_kernels(gb, 0));
    for (int i = 0; i < 2; i++) CHECK_OK(bf_cuda_set_flex_kernels(db[i], 0));
    cfg.model.fully_flex = 0;
    cfg.model.flex_joint = BF_FLEX_JOINT_MASK;
    cfg.model.flex_channels = BF_FLEX_CHANNELS_BILINEAR;
    cfg.model.flex_logits_bn = 1;
    cfg.model.flex_mask = BF_FLEX_MASK_SIGMOID_HARD;
    run_network("flex VGG-6, mask joint (bilinear, logits batch-norm, hard sigmoid)", &cfg, cb, gb, db, STEPS, 0);
    cfg.model.flex_recompute_conv = 1; /* C computed again in the backward, into the shared scratch */
    run_network("flex VGG-6, mask joint as above, flex_recompute_conv", &cfg, cb, gb, db, STEPS, 0);
    cfg.model.flex_recompute_conv = 0;
    cfg.model.flex_channels = BF_FLEX_CHANNELS_EXPAND; /* the fused joint computing L = P~ - T itself */
    cfg.model.flex_logits_bn = 0;
    cfg.model.flex_mask = BF_FLEX_MASK_SIGMOID_MUL;
    run_network("flex VGG-6, mask joint (expand, no logits batch-norm, sigmoid)", &cfg, cb, gb, db, STEPS, 0);
    cfg.model.arch = BF_ARCH_RESNET18;
    cfg.model.flex_joint = BF_FLEX_JOINT_MAX;
    cfg.model.flex_channels = BF_FLEX_CHANNELS_EXPAND;
    cfg.model.flex_logits_bn = 0;
    run_network("FlexResNet-18, channel-wise max (16x16 inputs)", &cfg, cb, gb, db, 1, 0);
    /* spiking: PlasticFlex VGG-6 with LIF neurons over T = 4 steps, trained through time, with the
     * GPU's defaults (spikes kept as bits, the charge recomputed from the batch-norm's input, the
     * neuron's backward inside its batch-norm's, the first conv and batch-norm once per image) */
    cfg.model.arch = BF_ARCH_PF_VGG6;
    cfg.model.flex = 0;
    cfg.model.spiking.neuron = BF_NEURON_LIF;
    cfg.model.spiking.time_steps = 4;
    cfg.model.spiking.decay = 0.9f;
    cfg.model.spiking.threshold = 0.3f; /* spikes in every layer at this small scale */
    /* A spike is a threshold: a membrane potential within rounding of it (convolutions round ~1e-7
     * apart on the two backends) fires on one and not the other, and moves its surrogate gradient
     * and everything downstream by far more than any bound. The classifier's dropout masks decide
     * which potentials the next steps meet: with those of steps 0-2 one lay that close in the
     * kernel emulator (0.4% of the gradients apart at step 1), with those of 10-12 none did, nor
     * with those of 20-22. The steps here count from 10; a GPU, whose cuDNN rounds otherwise, may
     * still meet such a tie. */
    run_network("spiking PlasticFlex VGG-6, LIF, T = 4", &cfg, cb, gb, db, STEPS, 10);
    cfg.model.flex = 1;
    run_network("spiking PlasticFlex VGG-6, LIF, T = 4, channel-wise max flex", &cfg, cb, gb, db, STEPS, 10);
    bf_backend_destroy(cb);
    bf_backend_destroy(gb);
    for (int i = 0; i < 2; i++) bf_backend_destroy(db[i]);
    return bf_test_finish();
}
