/* conv_cpu_lab.c - the CPU convolutions, layer by layer: version 0, im2col + OpenBLAS's sgemm
 * (src/kernels/conv_cpu.c, [run] cpu_conv = im2col), against version 1, oneDNN's direct kernels
 * (conv_onednn_cpu.c, cpu_conv = onednn, which leaves some passes to version 0), through the CPU
 * backend's public ops, at the 3x3 layers of a CIFAR VGG-11 and the downsampling, 1x1 and stem
 * shapes of PlasticFlex and ResNet. Each shape is first checked (version 1 against version 0 to
 * rounding) and then timed: ms per call of forward, backward data and backward filter, GFLOP/s
 * and the speed-up. `python3 bench/conv_cpu_pytorch.py` times PyTorch's (oneDNN) on the same shapes.
 *   bench_conv_cpu_lab [batch 64] [threads 0 = all] [seconds per measurement 0.3] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/ops.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct lab_shape {
    const char *name;
    int c_in, c_out, size, k, stride, pad;
} lab_shape;

static const lab_shape shapes[] = {
    {"vgg11 conv1", 3, 64, 32, 3, 1, 1},       {"vgg11 conv2", 64, 128, 16, 3, 1, 1},
    {"vgg11 conv3", 128, 256, 8, 3, 1, 1},     {"vgg11 conv4", 256, 256, 8, 3, 1, 1},
    {"vgg11 conv5", 256, 512, 4, 3, 1, 1},     {"vgg11 conv6", 512, 512, 4, 3, 1, 1},
    {"vgg11 conv7/8", 512, 512, 2, 3, 1, 1},   {"2x2/2 downsampling", 64, 64, 32, 2, 2, 0},
    {"1x1 bottleneck", 256, 64, 8, 1, 1, 0},   {"7x7/2 stem @64", 3, 64, 64, 7, 2, 3},
};

enum { PASSES = 3 };
static const char *pass_names[PASSES] = {"forward", "backward data", "backward filter"};

static int run_pass(bf_backend *b, int pass, const bf_conv2d_shape *s, const float *x, const float *w,
                    const float *dy, float *y, float *dx, float *dw) {
    bf_status st = pass == 0   ? b->ops->conv2d_forward(b, s, x, w, NULL, y)
                   : pass == 1 ? b->ops->conv2d_backward_data(b, s, dy, w, dx)
                               : b->ops->conv2d_backward_filter(b, s, x, dy, dw, NULL);
    if (st != BF_OK) fprintf(stderr, "error: %s\n", bf_last_error());
    return st == BF_OK;
}

/* ms per call, repeated for `seconds` after one warm-up call */
static double time_pass(bf_backend *b, int pass, const bf_conv2d_shape *s, const float *x, const float *w,
                        const float *dy, float *y, float *dx, float *dw, double seconds) {
    if (!run_pass(b, pass, s, x, w, dy, y, dx, dw)) exit(1);
    int reps = 0;
    const double t0 = now();
    do {
        if (!run_pass(b, pass, s, x, w, dy, y, dx, dw)) exit(1);
        reps++;
    } while (now() - t0 < seconds);
    return (now() - t0) / reps * 1e3;
}

static void fill(float *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u + seed) % 1000u) / 1000.0f - 0.5f;
}

/* max |a - b| / (1e-4 * (1 + max |b|)): <= 1 passes */
static double violation(const float *a, const float *b, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) scale = b[i] > scale ? b[i] : -b[i] > scale ? -b[i] : scale;
    for (size_t i = 0; i < n; i++) {
        const double d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
        if (d > worst) worst = d;
    }
    return worst / (1e-4 * (1 + scale));
}

int main(int argc, char **argv) {
    const int batch = argc > 1 ? atoi(argv[1]) : 64, threads = argc > 2 ? atoi(argv[2]) : 0;
    const double seconds = argc > 3 ? atof(argv[3]) : 0.3;
    if (batch < 1 || threads < 0 || seconds <= 0) {
        fprintf(stderr, "usage: bench_conv_cpu_lab [batch 64] [threads 0] [seconds 0.3]\n");
        return 2;
    }
    if (!bf_cpu_have_onednn()) {
        fprintf(stderr, "bench_conv_cpu_lab: bioflex was built without oneDNN: version 1 is version 0\n");
        return 1;
    }
    bf_backend *v[2];
    for (int k = 0; k < 2; k++)
        if (bf_backend_create_cpu(threads, &v[k]) != BF_OK ||
            bf_cpu_set_conv_library(v[k], k ? BF_CPU_CONV_ONEDNN : BF_CPU_CONV_IM2COL) != BF_OK) {
            fprintf(stderr, "error: %s\n", bf_last_error());
            return 1;
        }
    printf("CPU convolutions, batch %d, %d threads: ms per call, version 0 (im2col) / version 1 (oneDNN)\n", batch,
           v[0]->num_threads);
    double total[2][PASSES] = {{0}};
    int failures = 0;
    for (size_t l = 0; l < sizeof shapes / sizeof shapes[0]; l++) {
        const lab_shape *ls = &shapes[l];
        bf_conv2d_shape s = {batch, ls->c_in, ls->size, ls->size, ls->c_out, ls->k, ls->k, ls->stride, ls->pad, 1, 0, 0};
        if (bf_conv2d_shape_init(&s) != BF_OK) return 1;
        const size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in, ny = (size_t)s.n * s.c_out * s.h_out * s.w_out;
        const size_t nw = (size_t)s.c_out * s.c_in * s.k_h * s.k_w;
        float *x = malloc(4 * nx), *w = malloc(4 * nw), *dy = malloc(4 * ny), *out[2][PASSES];
        for (int k = 0; k < 2; k++) {
            out[k][0] = malloc(4 * ny);
            out[k][1] = malloc(4 * nx);
            out[k][2] = malloc(4 * nw);
        }
        fill(x, nx, 1), fill(w, nw, 2), fill(dy, ny, 3);
        const size_t sizes[PASSES] = {ny, nx, nw};
        const double flop = 2.0 * ny * s.c_in * s.k_h * s.k_w;
        printf("%-20s %3d->%3d @%3d k%d/%d:", ls->name, s.c_in, s.c_out, ls->size, ls->k, ls->stride);
        for (int p = 0; p < PASSES; p++) {
            double ms[2];
            for (int k = 0; k < 2; k++)
                ms[k] = time_pass(v[k], p, &s, x, w, dy, out[k][0], out[k][1], out[k][2], seconds);
            const double viol = violation(out[1][p], out[0][p], sizes[p]);
            if (viol > 1) {
                printf("\n  %s: version 1 differs from version 0 (violation %.3g)\n", pass_names[p], viol);
                failures++;
            }
            for (int k = 0; k < 2; k++) total[k][p] += ms[k];
            printf("  %s %6.2f / %6.2f (%5.1f / %5.1f GFLOP/s, %.2fx)", p == 0 ? "fwd" : p == 1 ? "bwd data" : "bwd filter",
                   ms[0], ms[1], flop / ms[0] / 1e6, flop / ms[1] / 1e6, ms[0] / ms[1]);
        }
        printf("\n");
        free(x), free(w), free(dy);
        for (int k = 0; k < 2; k++)
            for (int p = 0; p < PASSES; p++) free(out[k][p]);
    }
    printf("total ms:");
    for (int p = 0; p < PASSES; p++)
        printf("  %s %.1f / %.1f (%.2fx)", pass_names[p], total[0][p], total[1][p], total[0][p] / total[1][p]);
    printf("\noneDNN calls: %ld\n", bf_cpu_onednn_conv_calls(v[1]));
    for (int k = 0; k < 2; k++) bf_backend_destroy(v[k]);
    return failures ? 1 : 0;
}
