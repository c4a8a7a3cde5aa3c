/* butd_step.c - milliseconds per guided BU-TD training step (instruction pass, BU pass, loss, TD
 * error pass + Counter-Hebb update, Adam) of the reference's Multi-MNIST model (SimpleNet 32,32,
 * hidden 50, task head 2 -> 50 -> 50, shared weights), batch 64, on random data. Side by side with
 * bench/butd_step_pytorch.py (the same step in PyTorch eager):
 *
 *   bench_butd_step [cpu|cuda] [steps] [batch]
 *   /usr/bin/python3 bench/butd_step_pytorch.py [cpu|cuda] [steps] [batch]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/butd.h"
#include "bioflex/hash.h"
#include "bioflex/train.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

#define TRY(x)                                                                  \
    do {                                                                        \
        if ((x) != BF_OK) {                                                     \
            fprintf(stderr, "error: %s: %s\n", #x, bf_last_error());            \
            return 1;                                                           \
        }                                                                       \
    } while (0)

static int usage(FILE *f) {
    fprintf(f, "usage: bench_butd_step [cpu|cuda] [steps >= 1 (200)] [batch >= 1 (64)]\n"
               "  ms per guided BU-TD training step of the reference's Multi-MNIST model on random data\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return usage(stdout);
    if (argc > 4 || (argc > 1 && strcmp(argv[1], "cpu") && strcmp(argv[1], "cuda"))) return usage(stderr);
    int cuda = argc > 1 && strcmp(argv[1], "cuda") == 0;
    int steps = argc > 2 ? atoi(argv[2]) : 200, n = argc > 3 ? atoi(argv[3]) : 64, K = 10, T = 2;
    if (steps < 1 || n < 1) return usage(stderr);
    bf_backend *b = NULL;
    TRY(cuda ? bf_backend_create_cuda(0, BF_PRECISION_FP32, &b) : bf_backend_create_cpu(0, &b));
    bf_butd_config bc = {.network = 2, .learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 1, .guided = 1,
                         .hidden = 50, .channels = {32, 32}, .num_channels = 2, .task_embedding = 50};
    bf_butd_net *net = NULL;
    TRY(bf_butd_build(b, &bc, 1, 28, 28, n, K, T, 1, &net));
    bf_optim_config oc = {.optimizer = BF_OPTIM_ADAMW, .lr = 5e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    bf_optimizer *opt = NULL;
    TRY(bf_optimizer_create(b, &oc, net->num_param_floats, &opt));
    float *xh = malloc((size_t)n * 784 * sizeof(float));
    int32_t *labels_h = malloc((size_t)n * sizeof(int32_t)), *tasks = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n * 784; i++) xh[i] = bf_uniform(7, (uint64_t)i) * 2.0f - 1.0f;
    for (int j = 0; j < n; j++) labels_h[j] = j % K, tasks[j] = j % T;
    float *x = NULL, *dl = NULL, *losses = NULL;
    int32_t *labels = NULL;
    TRY(bf_alloc(b, (size_t)n * 784 * sizeof(float), (void **)&x));
    TRY(bf_alloc(b, (size_t)n * K * sizeof(float), (void **)&dl));
    TRY(bf_alloc(b, (size_t)n * sizeof(float), (void **)&losses));
    TRY(bf_alloc(b, (size_t)n * sizeof(int32_t), (void **)&labels));
    TRY(bf_to_device(b, x, xh, (size_t)n * 784 * sizeof(float)));
    TRY(bf_to_device(b, labels, labels_h, (size_t)n * sizeof(int32_t)));
    double t0 = 0;
    for (int s = 0; s < steps + 10; s++) {
        if (s == 10) { /* 10 warm-up steps */
            TRY(b->ops->synchronize(b));
            t0 = now_ms();
        }
        const float *logits = NULL;
        TRY(bf_butd_instruct(net, tasks));
        TRY(bf_butd_forward(net, x, &logits));
        TRY(b->ops->softmax_xent(b, n, K, logits, labels, 0.0f, 1.0f, losses, dl));
        TRY(bf_butd_backward(net, dl));
        TRY(bf_optimizer_step(b, opt, net->param_data, net->grad_data, oc.lr, NULL));
    }
    TRY(b->ops->synchronize(b));
    double ms = (now_ms() - t0) / steps;
    printf("bioflex %s: guided BU-TD step (SimpleNet, batch %d): %.3f ms/step (%d steps)\n", cuda ? "cuda" : "cpu", n,
           ms, steps);
    bf_optimizer_destroy(b, opt);
    bf_free(b, x), bf_free(b, dl), bf_free(b, losses), bf_free(b, labels);
    free(xh), free(labels_h), free(tasks);
    bf_butd_destroy(net);
    bf_backend_destroy(b);
    return 0;
}
