/* train_throughput.c - training images/s of a model zoo network on synthetic data: the full step
 * (forward, softmax cross-entropy, backward, SGD with momentum) on one backend, after warm-up
 * steps (which include cuDNN's algorithm search), timed over --steps steps with one
 * synchronisation at the end. bench/vgg16_side_by_side.sh, bench/flexnet_side_by_side.sh and
 * bench/spiking_side_by_side.sh run it beside bench/pytorch_train.py.
 *
 *   bench_train_throughput [--device cuda|cpu] [--arch vgg16] [--batch 128] [--size 224]
 *                          [--classes 100] [--precision fp32|tf32|tf32_conv] [--steps 30] [--warmup 5]
 *                          [--set section.key=value]... [--label NAME]
 *
 * --set applies any config key as bioflex-train's --set does, after --arch (so flex and spiking
 * networks can be measured): --set model.flex=true for FlexNet's channel-wise max joint, or
 * --arch plasticflex_vgg11 --set spiking.neuron=lif --set spiking.time_steps=4. Images/s counts
 * input images (a spiking network runs each one over T steps). --label names the network on the
 * result line (default: the arch and the overrides).
 *
 * Peak memory (CUDA): the backend's own device memory (bf_cuda_memory_bytes: every buffer, the
 * scratch and the cuDNN/cuBLAS workspaces, not the CUDA context), reset after the warm-up steps,
 * so "peak" is the most held during the timed steps; "with warm-up" is the most since the backend
 * was created (it includes cuDNN's algorithm search). Beside them: the model's arena (activations,
 * gradients, scratch: the memory plan) and the separate cuDNN workspace at the end. bench/pytorch_train.py reports
 * torch.cuda.max_memory_allocated the same two ways. The CPU backend keeps no count: "n/a". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/hash.h"
#include "bioflex/train.h"

enum { MAX_SETS = 64 };

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void usage(FILE *out) {
    fprintf(out, "usage: bench_train_throughput [--device cuda|cpu] [--arch vgg16] [--batch 128] [--size 224]\n"
                 "                              [--classes 100] [--precision fp32|tf32|tf32_conv] [--steps 30] [--warmup 5]\n"
                 "                              [--set section.key=value]... [--label NAME] [--profile 1]\n"
                 "  --profile 1: only the timed steps run between cudaProfilerStart and Stop, for\n"
                 "  ncu --profile-from-start off (bench/kernel_profile.sh); the images/s it prints are then not\n"
                 "  a throughput\n"
                 "  e.g. --set model.flex=true (FlexNet VGG-16), or --arch plasticflex_vgg11 --size 32 --classes 10\n"
                 "       --set spiking.neuron=lif --set spiking.time_steps=4 (spiking VGG-11)\n");
}

int main(int argc, char **argv) {
    const char *device = "cuda", *arch = "vgg16", *precision = "fp32", *name = NULL;
    const char *sets[MAX_SETS];
    int num_sets = 0;
    int batch = 128, size = 224, classes = 100, steps = 30, warmup = 5, profile = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "option %s needs a value\n", argv[i]);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(argv[i - 1], "--device")) device = v;
        else if (!strcmp(argv[i - 1], "--arch")) arch = v;
        else if (!strcmp(argv[i - 1], "--label")) name = v;
        else if (!strcmp(argv[i - 1], "--precision")) precision = v;
        else if (!strcmp(argv[i - 1], "--batch")) batch = atoi(v);
        else if (!strcmp(argv[i - 1], "--size")) size = atoi(v);
        else if (!strcmp(argv[i - 1], "--classes")) classes = atoi(v);
        else if (!strcmp(argv[i - 1], "--steps")) steps = atoi(v);
        else if (!strcmp(argv[i - 1], "--warmup")) warmup = atoi(v);
        else if (!strcmp(argv[i - 1], "--profile")) profile = atoi(v);
        else if (!strcmp(argv[i - 1], "--set")) {
            if (num_sets == MAX_SETS) {
                fprintf(stderr, "at most %d --set options\n", MAX_SETS);
                return 2;
            }
            sets[num_sets++] = v;
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (strcmp(device, "cuda") && strcmp(device, "cpu")) {
        fprintf(stderr, "--device %s: allowed cuda, cpu\n", device);
        return 2;
    }
    if (strcmp(precision, "fp32") && strcmp(precision, "tf32") && strcmp(precision, "tf32_conv")) {
        fprintf(stderr, "--precision %s: allowed fp32, tf32, tf32_conv\n", precision);
        return 2;
    }
    if (batch < 1 || size < 1 || classes < 1 || steps < 1 || warmup < 0) {
        fprintf(stderr, "--batch, --size, --classes and --steps must be >= 1 and --warmup >= 0\n");
        return 2;
    }
    bf_config cfg;
    bf_config_defaults(&cfg);
    char set[256];
    snprintf(set, sizeof set, "model.arch=%s", arch);
    bf_status s = bf_config_set(&cfg, set);
    for (int i = 0; i < num_sets && s == BF_OK; i++) s = bf_config_set(&cfg, sets[i]);
    if (s == BF_OK) s = bf_config_validate(&cfg);
    if (s != BF_OK) {
        fprintf(stderr, "%s\n", bf_last_error());
        return 2;
    }
    /* the name on the result line: the arch and the overrides */
    char label[1024];
    size_t len = (size_t)snprintf(label, sizeof label, "%s", bf_arch_name(cfg.model.arch));
    for (int i = 0; i < num_sets && len < sizeof label; i++)
        len += (size_t)snprintf(label + len, sizeof label - len, "%s%s", i ? "," : "[", sets[i]);
    if (num_sets && len < sizeof label) snprintf(label + len, sizeof label - len, "]");
    if (name) snprintf(label, sizeof label, "%s", name);

    cfg.optim.lr = 0.01f;
    bf_precision prec = !strcmp(precision, "tf32")        ? BF_PRECISION_TF32
                        : !strcmp(precision, "tf32_conv") ? BF_PRECISION_TF32_CONV
                                                          : BF_PRECISION_FP32;
    cfg.run.precision = (int)prec;
    int cuda = strcmp(device, "cpu") != 0;
    bf_backend *b = NULL;
    /* as bioflex-train makes it: [run] deterministic, conv_workspace_mib, conv_api and flex_kernels
     * apply, and on the CPU threads and cpu_conv (--set run.KEY=...) */
    s = cuda ? bf_backend_cuda_from_config(&cfg, 0, &b) : bf_backend_cpu_from_config(&cfg, &b);
    bf_model *m = NULL;
    bf_optimizer *opt = NULL;
    if (s == BF_OK) s = bf_model_build(b, &cfg.model, (bf_shape){batch, 3, size, size}, classes, 1, &m);
    if (s == BF_OK) s = bf_optimizer_create(b, &cfg.optim, m->num_param_floats, &opt);
    if (s != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return 1;
    }
    size_t image_floats = (size_t)batch * 3 * size * size;
    float *xh = malloc(image_floats * sizeof(float));
    int32_t *lh = malloc((size_t)batch * sizeof(int32_t));
    if (!xh || !lh) {
        fprintf(stderr, "error: out of host memory\n");
        return 1;
    }
    for (size_t i = 0; i < image_floats; i++) xh[i] = 2 * bf_uniform(7, i) - 1;
    for (int i = 0; i < batch; i++) lh[i] = i % classes;
    float *x = NULL, *losses = NULL, *dlogits = NULL;
    int32_t *labels = NULL;
    s = bf_alloc(b, image_floats * sizeof(float), (void **)&x);
    if (s == BF_OK) s = bf_alloc(b, (size_t)batch * sizeof(int32_t), (void **)&labels);
    if (s == BF_OK) s = bf_alloc(b, (size_t)batch * sizeof(float), (void **)&losses);
    if (s == BF_OK) s = bf_alloc(b, (size_t)batch * classes * sizeof(float), (void **)&dlogits);
    if (s == BF_OK) s = bf_to_device(b, x, xh, image_floats * sizeof(float));
    if (s == BF_OK) s = bf_to_device(b, labels, lh, (size_t)batch * sizeof(int32_t));
    double flops = 0;
    for (int i = 0; i < m->num_layers; i++) flops += bf_layer_flops(m, i);
    double t0 = 0;
    size_t peak_all = 0, peak = 0;
    for (int step = 0; step < warmup + steps && s == BF_OK; step++) {
        if (step == warmup) {
            s = b->ops->synchronize(b);
            bf_cuda_memory_bytes(b, 1, NULL, &peak_all); /* the peak so far; then count from here */
            if (s == BF_OK && profile) s = bf_cuda_profiler(b, 1);
            t0 = now_s();
        }
        const float *logits = NULL;
        m->step = (uint64_t)step;
        m->flex_monitor_due = 0; /* as a training run between its log steps */
        if (s == BF_OK) s = bf_model_forward(m, x, &logits);
        if (s == BF_OK) s = b->ops->softmax_xent(b, batch, classes, logits, labels, 0, 1.0f / batch, losses, dlogits);
        if (s == BF_OK) s = bf_model_backward(m, dlogits);
        if (s == BF_OK) s = bf_optimizer_step(b, opt, m->param_data, m->grad_data, cfg.optim.lr, NULL);
    }
    if (s == BF_OK) s = b->ops->synchronize(b);
    if (s == BF_OK && profile) s = bf_cuda_profiler(b, 0);
    if (s != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return 1;
    }
    double dt = now_s() - t0, ips = (double)steps * batch / dt;
    bf_cuda_memory_bytes(b, 0, NULL, &peak);
    if (peak > peak_all) peak_all = peak;
    float loss0 = 0;
    bf_to_host(b, &loss0, losses, sizeof loss0);
    char memory[192];
    const double gib = 1024.0 * 1024.0 * 1024.0;
    if (cuda) /* what the peak is made of: the planned arena, and the separate cuDNN workspace */
        snprintf(memory, sizeof memory, "peak %.2f GiB (with warm-up %.2f GiB; arena %.2f GiB, cuDNN workspace %.2f GiB)",
                 peak / gib, peak_all / gib, m->arena_bytes / gib, bf_cuda_conv_workspace_bytes(b) / gib);
    else snprintf(memory, sizeof memory, "peak n/a");
    printf("bioflex %s %s %s batch %d %dx%d: %.1f images/s, %.1f ms/step, %.1f model TFLOP/s, %zu params, %s "
           "(loss %.3f)\n",
           device, label, precision, batch, size, size, ips, 1e3 * dt / steps, 3 * flops * ips / 1e12,
           m->num_param_floats, memory, loss0);
    bf_free(b, x);
    bf_free(b, labels);
    bf_free(b, losses);
    bf_free(b, dlogits);
    bf_optimizer_destroy(b, opt);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    free(xh);
    free(lh);
    return 0;
}
