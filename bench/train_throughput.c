/* train_throughput.c - training images/s of a model zoo network on synthetic data: the full step
 * (forward, softmax cross-entropy, backward, SGD with momentum) on one backend, after warm-up
 * steps (which include cuDNN's algorithm search), timed over --steps steps with one
 * synchronisation at the end. bench/vgg16_side_by_side.sh runs it beside bench/pytorch_train.py.
 *
 *   bench_train_throughput [--device cuda|cpu] [--arch vgg16] [--batch 128] [--size 224]
 *                          [--classes 100] [--precision fp32|tf32] [--steps 30] [--warmup 5] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/hash.h"
#include "bioflex/train.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *device = "cuda", *arch = "vgg16", *precision = "fp32";
    int batch = 128, size = 224, classes = 100, steps = 30, warmup = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--device")) device = argv[i + 1];
        else if (!strcmp(argv[i], "--arch")) arch = argv[i + 1];
        else if (!strcmp(argv[i], "--precision")) precision = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--classes")) classes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    bf_config cfg;
    bf_config_defaults(&cfg);
    char set[128];
    snprintf(set, sizeof set, "model.arch=%s", arch);
    if (bf_config_set(&cfg, set) != BF_OK) {
        fprintf(stderr, "%s\n", bf_last_error());
        return 2;
    }
    cfg.optim.lr = 0.01f;
    bf_precision prec = strcmp(precision, "tf32") ? BF_PRECISION_FP32 : BF_PRECISION_TF32;
    bf_backend *b = NULL;
    bf_status s = strcmp(device, "cpu") ? bf_backend_create_cuda(0, prec, &b) : bf_backend_create_cpu(0, &b);
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
    for (size_t i = 0; i < image_floats; i++) xh[i] = 2 * bf_uniform(7, i) - 1;
    for (int i = 0; i < batch; i++) lh[i] = i % classes;
    float *x = NULL, *losses = NULL, *dlogits = NULL;
    int32_t *labels = NULL;
    bf_alloc(b, image_floats * sizeof(float), (void **)&x);
    bf_alloc(b, (size_t)batch * sizeof(int32_t), (void **)&labels);
    bf_alloc(b, (size_t)batch * sizeof(float), (void **)&losses);
    bf_alloc(b, (size_t)batch * classes * sizeof(float), (void **)&dlogits);
    bf_to_device(b, x, xh, image_floats * sizeof(float));
    bf_to_device(b, labels, lh, (size_t)batch * sizeof(int32_t));
    double flops = 0;
    for (int i = 0; i < m->num_layers; i++) flops += bf_layer_flops(m, i);
    double t0 = 0;
    for (int step = 0; step < warmup + steps && s == BF_OK; step++) {
        if (step == warmup) {
            b->ops->synchronize(b);
            t0 = now_s();
        }
        const float *logits = NULL;
        m->step = (uint64_t)step;
        s = bf_model_forward(m, x, &logits);
        if (s == BF_OK) s = b->ops->softmax_xent(b, batch, classes, logits, labels, 0, 1.0f / batch, losses, dlogits);
        if (s == BF_OK) s = bf_model_backward(m, dlogits);
        if (s == BF_OK) s = bf_optimizer_step(b, opt, m->param_data, m->grad_data, cfg.optim.lr, NULL);
    }
    if (s == BF_OK) s = b->ops->synchronize(b);
    if (s != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return 1;
    }
    double dt = now_s() - t0, ips = (double)steps * batch / dt;
    float loss0 = 0;
    bf_to_host(b, &loss0, losses, sizeof loss0);
    printf("bioflex %s %s %s batch %d %dx%d: %.1f images/s, %.1f ms/step, %.1f model TFLOP/s (loss %.3f)\n", device,
           arch, precision, batch, size, size, ips, 1e3 * dt / steps, 3 * flops * ips / 1e12, loss0);
    return 0;
}
