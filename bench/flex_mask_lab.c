/* flex_mask_lab.c - kernel lab for the flex layer's mask joint, forward and backward WITHOUT the
 * convolution, at the FlexNet VGG-16 shapes (every flex layer 3x3, stride 1, pad 1; EXPAND
 * widening; hard-sigmoid mask by default, no batch-norm on the logits), through the public bf_ops
 * table on either backend (the channel-wise max joint has its own lab, flex_lab.cu):
 *
 *   0  unfused: one op per step, keeping P~, L and M for the backward (what an eager framework
 *      keeps for autograd; bioflex's layer ran these ops until the fusion):
 *        forward:  flex_pool_forward (P, window bytes), flex_widen_forward (P~),
 *                  flex_logits_forward (L = P~ - T), flex_mask_forward (M, y, conv-mask sum);
 *        backward: flex_mask_backward (dC, dL, dP~), add_inplace (dP~ += dL),
 *                  flex_threshold_backward (dT), flex_widen_backward (dP), flex_pool_scatter_add (dx).
 *   1  fused: what layer_flex.c runs, keeping only C and the window bytes:
 *        forward:  flex_pool_forward, flex_mask_joint_forward (P~, L, M and y in one pass);
 *        backward: flex_pool_gather (P again), flex_mask_joint_backward (M again, dC, dL and the
 *                  folded dP in one pass), flex_threshold_backward, flex_pool_scatter_add.
 * Version 1's outputs must be version 0's bit for bit (ops.h): y, the conv-mask sum, dC, dT and dx
 * are compared first, at every shape, and any difference is reported and fails the run (exit 1).
 *
 * Byte model of version 1 (every tensor it reads or writes crosses DRAM once; X = n*c_in*h*w,
 * Np = n*c_in*hw, Nc = n*c_out*hw; T is read per sample, so counted with Nc; GB = 1e9 bytes):
 *   forward:  pool: read x, write P and bytes (4X + 5Np); joint: read P, C, T, write y (4Np + 12Nc)
 *   backward: gather: read bytes and one x each, write P (9Np); joint: read P, C, T, dy, write dC,
 *             dL, dP (8Np + 20Nc); threshold: read dL (4Nc); scatter: read bytes, dP, dx, write dx
 *             (5Np + 8X)
 * and the memory kept from the forward for the backward per element: version 0 C, P~, L, M (16 bytes
 * per Nc) and the bytes (Np); version 1 C (4 per Nc) and the bytes.
 *
 * Usage: bench_flex_mask_lab [--device cpu|cuda] [--batch N] [--repeats R] [--mask NAME] [--small]
 *   --small: the VGG-16 channel plan on 16x16 inputs (a quick check on a CPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/ops.h"

typedef struct lab_shape {
    int c_in, c_out, h, count; /* count: how many VGG-16 flex layers have it */
} lab_shape;

/* VGG-16's thirteen flex convs (flexnet.md 2.1) at 224x224, grouped by shape. */
static const lab_shape k_vgg16[] = {{3, 64, 224, 1},   {64, 64, 224, 1},  {64, 128, 112, 1}, {128, 128, 112, 1},
                                    {128, 256, 56, 1}, {256, 256, 56, 2}, {256, 512, 28, 1}, {512, 512, 28, 2},
                                    {512, 512, 14, 3}};

typedef struct lab_options {
    bf_device_kind device;
    int batch, repeats, small;
    bf_flex_mask mask;
} lab_options;

/* The tensors of one shape on the device; v0 keeps widened, logits and mask from its forward. */
typedef struct lab_tensors {
    float *x, *C, *T, *dy, *P, *widened, *logits, *mask, *y0, *y1, *dC0, *dC1, *dL, *dW, *dP, *dT0, *dT1, *dx0,
        *dx1, *sum0, *sum1;
    uint8_t *window;
} lab_tensors;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, bf_status st) {
    fprintf(stderr, "bench_flex_mask_lab: %s failed: %s\n", what, bf_last_error());
    exit(st == BF_OK ? 1 : 2);
}
#define RUN(call)                                   \
    do {                                            \
        bf_status st_ = (call);                     \
        if (st_ != BF_OK) die(#call, st_);          \
    } while (0)

static float *dev_floats(bf_backend *b, size_t n) {
    void *p = NULL;
    RUN(bf_alloc(b, (n ? n : 1) * sizeof(float), &p));
    return p;
}

/* Multiples of 1/8 in [lo, lo + levels/8), uploaded: exact ties between pool and conv occur. */
static float *dev_eighths(bf_backend *b, size_t n, float lo, int levels, unsigned seed) {
    float *h = malloc((n ? n : 1) * sizeof(float)), *d = dev_floats(b, n);
    if (!h) die("malloc", BF_ERR_OOM);
    unsigned s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        h[i] = lo + (float)((s >> 8) % (unsigned)levels) / 8.0f;
    }
    RUN(bf_to_device(b, d, h, n * sizeof(float)));
    free(h);
    return d;
}

static void version0_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *fs, const lab_options *o,
                             lab_tensors *t) {
    const bf_ops *ops = b->ops;
    RUN(ops->flex_pool_forward(b, ps, fs, t->x, t->P, t->window));
    RUN(ops->flex_widen_forward(b, fs, t->P, t->widened));
    RUN(ops->flex_logits_forward(b, fs, t->widened, t->T, t->logits));
    RUN(ops->flex_mask_forward(b, fs, o->mask, 1.0f, 5, t->logits, t->C, t->widened, t->mask, t->y0, t->sum0));
}

static void version0_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *fs, const lab_options *o,
                              lab_tensors *t) {
    const bf_ops *ops = b->ops;
    const size_t nc = (size_t)fs->n * fs->c_out * fs->hw;
    RUN(ops->flex_mask_backward(b, fs, o->mask, 1.0f, t->logits, t->mask, t->C, t->widened, t->dy, t->dC0, t->dL,
                                t->dW));
    RUN(ops->add_inplace(b, t->dW, t->dL, nc));
    RUN(ops->flex_threshold_backward(b, fs, t->dL, t->dT0));
    RUN(ops->flex_widen_backward(b, fs, t->dW, t->dP));
    RUN(ops->flex_pool_scatter_add(b, ps, fs, t->window, t->dP, t->dx0));
}

static void version1_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *fs, const lab_options *o,
                             lab_tensors *t) {
    const bf_ops *ops = b->ops;
    RUN(ops->flex_pool_forward(b, ps, fs, t->x, t->P, t->window));
    RUN(ops->flex_mask_joint_forward(b, fs, o->mask, 1.0f, 5, t->P, t->T, NULL, t->C, t->y1, t->sum1, NULL));
}

static void version1_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *fs, const lab_options *o,
                              lab_tensors *t) {
    const bf_ops *ops = b->ops;
    RUN(ops->flex_pool_gather(b, ps, fs, t->x, t->window, t->P));
    RUN(ops->flex_mask_joint_backward(b, fs, o->mask, 1.0f, 5, t->P, t->T, NULL, t->C, t->dy, t->dC1, t->dL, t->dP));
    RUN(ops->flex_threshold_backward(b, fs, t->dL, t->dT1));
    RUN(ops->flex_pool_scatter_add(b, ps, fs, t->window, t->dP, t->dx1));
}

/* Number of elements that differ in their bits between two device tensors. */
static size_t differing(bf_backend *b, const float *a, const float *c, size_t n) {
    float *ha = malloc((n ? n : 1) * sizeof(float)), *hc = malloc((n ? n : 1) * sizeof(float));
    if (!ha || !hc) die("malloc", BF_ERR_OOM);
    RUN(bf_to_host(b, ha, a, n * sizeof(float)));
    RUN(bf_to_host(b, hc, c, n * sizeof(float)));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&ha[i], &hc[i], sizeof(float)) != 0;
    free(ha);
    free(hc);
    return bad;
}

typedef void (*lab_pass)(bf_backend *, const bf_pool_shape *, const bf_flex_shape *, const lab_options *,
                         lab_tensors *);

/* Mean seconds per call of pass over o->repeats calls after one warm-up. */
static double time_pass(bf_backend *b, lab_pass pass, const bf_pool_shape *ps, const bf_flex_shape *fs,
                        const lab_options *o, lab_tensors *t) {
    pass(b, ps, fs, o, t);
    RUN(b->ops->synchronize(b));
    const double start = now_s();
    for (int r = 0; r < o->repeats; r++) pass(b, ps, fs, o, t);
    RUN(b->ops->synchronize(b));
    return (now_s() - start) / o->repeats;
}

typedef struct lab_totals {
    double fwd[2], bwd[2], bytes_fwd, bytes_bwd, kept[2];
    size_t mismatches;
} lab_totals;

static void run_shape(bf_backend *b, const lab_shape *sh, const lab_options *o, lab_totals *tot) {
    const int h = o->small ? (sh->h * 16 / 224 > 1 ? sh->h * 16 / 224 : 1) : sh->h; /* 224 -> 16, 14 -> 1 */
    bf_pool_shape ps = {.n = o->batch, .c = sh->c_in, .h_in = h, .w_in = h, .k = 3, .stride = 1, .pad = 1};
    RUN(bf_pool_shape_init(&ps));
    bf_flex_shape fs = {.n = o->batch, .c_in = sh->c_in, .c_out = sh->c_out, .hw = ps.h_out * ps.w_out,
                        .channels = BF_FLEX_CHANNELS_EXPAND};
    const size_t X = (size_t)o->batch * sh->c_in * h * h, Np = (size_t)o->batch * sh->c_in * fs.hw;
    const size_t Nc = (size_t)o->batch * sh->c_out * fs.hw, K = (size_t)sh->c_out * fs.hw;
    lab_tensors t;
    t.x = dev_eighths(b, X, -2.0f, 32, 1);
    t.C = dev_eighths(b, Nc, -2.0f, 48, 2);
    t.T = dev_eighths(b, K, -1.0f, 16, 3);
    t.dy = dev_eighths(b, Nc, -1.0f, 16, 4);
    float **outs[] = {&t.P, &t.widened, &t.logits, &t.mask, &t.y0, &t.y1, &t.dC0, &t.dC1, &t.dL, &t.dW};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) *outs[i] = dev_floats(b, i == 0 ? Np : Nc);
    t.dP = dev_floats(b, Np);
    t.dT0 = dev_floats(b, K);
    t.dT1 = dev_floats(b, K);
    t.dx0 = dev_floats(b, X);
    t.dx1 = dev_floats(b, X);
    t.sum0 = dev_floats(b, 1);
    t.sum1 = dev_floats(b, 1);
    void *window = NULL;
    RUN(bf_alloc(b, Np, &window));
    t.window = window;

    /* validation: one pass of each from the same zeroed dx and sums, compared bit for bit */
    float *zeros[] = {t.dx0, t.dx1, t.sum0, t.sum1};
    for (int i = 0; i < 4; i++) RUN(b->ops->fill(b, zeros[i], 0.0f, i < 2 ? X : 1));
    version0_forward(b, &ps, &fs, o, &t);
    version0_backward(b, &ps, &fs, o, &t);
    version1_forward(b, &ps, &fs, o, &t);
    version1_backward(b, &ps, &fs, o, &t);
    const size_t bad[] = {differing(b, t.y0, t.y1, Nc), differing(b, t.sum0, t.sum1, 1), differing(b, t.dC0, t.dC1, Nc),
                          differing(b, t.dT0, t.dT1, K), differing(b, t.dx0, t.dx1, X)};
    size_t mismatches = 0;
    for (int i = 0; i < 5; i++) mismatches += bad[i];
    if (mismatches)
        printf("  MISMATCH %d->%d %dx%d: y %zu, sum %zu, dC %zu, dT %zu, dx %zu elements differ\n", sh->c_in,
               sh->c_out, h, h, bad[0], bad[1], bad[2], bad[3], bad[4]);
    tot->mismatches += mismatches;

    const double f0 = time_pass(b, version0_forward, &ps, &fs, o, &t), b0 = time_pass(b, version0_backward, &ps, &fs, o, &t);
    const double f1 = time_pass(b, version1_forward, &ps, &fs, o, &t), b1 = time_pass(b, version1_backward, &ps, &fs, o, &t);
    const double bytes_fwd = 4.0 * X + 5.0 * Np + 4.0 * Np + 12.0 * Nc;
    const double bytes_bwd = 9.0 * Np + 8.0 * Np + 20.0 * Nc + 4.0 * Nc + 5.0 * Np + 8.0 * X;
    printf("  %4d->%-4d %3dx%-3d x%d   v0 %8.3f + %8.3f ms   v1 %8.3f + %8.3f ms   %5.2fx   v1 %6.1f GB/s\n",
           sh->c_in, sh->c_out, h, h, sh->count, 1e3 * f0, 1e3 * b0, 1e3 * f1, 1e3 * b1, (f0 + b0) / (f1 + b1),
           (bytes_fwd + bytes_bwd) / (f1 + b1) / 1e9);
    tot->fwd[0] += sh->count * f0;
    tot->bwd[0] += sh->count * b0;
    tot->fwd[1] += sh->count * f1;
    tot->bwd[1] += sh->count * b1;
    tot->bytes_fwd += sh->count * bytes_fwd;
    tot->bytes_bwd += sh->count * bytes_bwd;
    tot->kept[0] += sh->count * (16.0 * Nc + Np);
    tot->kept[1] += sh->count * (4.0 * Nc + Np);

    void *all[] = {t.x, t.C, t.T, t.dy, t.P, t.widened, t.logits, t.mask, t.y0, t.y1, t.dC0, t.dC1, t.dL, t.dW,
                   t.dP, t.dT0, t.dT1, t.dx0, t.dx1, t.sum0, t.sum1, t.window};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

static const char *const k_mask_names[] = {"sigmoid_hard", "sigmoid_mul", "ste_fpbp", "ste_fpbs", "ste_fsbp",
                                           "ste_fsbs", "stochastic_fpbp", "stochastic_fpbs", "stochastic_fsbp",
                                           "stochastic_fsbs", "stochastic_fcbp", "stochastic_fcbs"};

static void usage(void) {
    fprintf(stderr, "usage: bench_flex_mask_lab [--device cpu|cuda] [--batch N] [--repeats R] [--mask NAME] [--small]\n"
                    "  NAME: sigmoid_hard (default), sigmoid_mul, ste_*, stochastic_* (ops.h bf_flex_mask)\n");
    exit(2);
}

static void parse(int argc, char **argv, lab_options *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--small")) {
            o->small = 1;
            continue;
        }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda"))) {
            o->device = strcmp(v, "cpu") ? BF_DEVICE_CUDA : BF_DEVICE_CPU;
        } else if (!strcmp(a, "--batch") && atoi(v) > 0) {
            o->batch = atoi(v);
        } else if (!strcmp(a, "--repeats") && atoi(v) > 0) {
            o->repeats = atoi(v);
        } else if (!strcmp(a, "--mask")) {
            size_t k = 0, count = sizeof k_mask_names / sizeof k_mask_names[0];
            while (k < count && strcmp(v, k_mask_names[k])) k++;
            if (k == count) usage();
            o->mask = (bf_flex_mask)k;
        } else {
            usage();
        }
    }
}

int main(int argc, char **argv) {
    lab_options o = {.device = BF_DEVICE_CUDA, .batch = 32, .repeats = 10, .small = 0, .mask = BF_FLEX_MASK_SIGMOID_HARD};
    parse(argc, argv, &o);
    bf_backend *b = NULL;
    bf_status st = o.device == BF_DEVICE_CUDA ? bf_backend_create_cuda(0, BF_PRECISION_FP32, &b)
                                              : bf_backend_create_cpu(0, &b);
    if (st != BF_OK) {
        fprintf(stderr, "bench_flex_mask_lab: no %s backend: %s\n", o.device == BF_DEVICE_CUDA ? "cuda" : "cpu",
                bf_last_error());
        return 2;
    }
    printf("flex mask-joint lab: %s, batch %d, mask %s, %d repeats, VGG-16 flex layers%s (fwd + bwd, no conv)\n",
           o.device == BF_DEVICE_CUDA ? "cuda" : "cpu", o.batch, k_mask_names[o.mask], o.repeats,
           o.small ? " on 16x16" : " at 224x224");
    lab_totals tot = {{0, 0}, {0, 0}, 0, 0, {0, 0}, 0};
    for (size_t i = 0; i < sizeof k_vgg16 / sizeof k_vgg16[0]; i++) run_shape(b, &k_vgg16[i], &o, &tot);
    const double t0 = tot.fwd[0] + tot.bwd[0], t1 = tot.fwd[1] + tot.bwd[1];
    printf("all 13 layers: v0 unfused %.3f ms (fwd %.3f, bwd %.3f), v1 fused %.3f ms (fwd %.3f, bwd %.3f): %.2fx\n",
           1e3 * t0, 1e3 * tot.fwd[0], 1e3 * tot.bwd[0], 1e3 * t1, 1e3 * tot.fwd[1], 1e3 * tot.bwd[1], t0 / t1);
    printf("v1 byte model: %.2f GB/s (fwd %.2f, bwd %.2f); kept for the backward: v0 %.3f GB, v1 %.3f GB\n",
           (tot.bytes_fwd + tot.bytes_bwd) / t1 / 1e9, tot.bytes_fwd / tot.fwd[1] / 1e9, tot.bytes_bwd / tot.bwd[1] / 1e9,
           tot.kept[0] / 1e9, tot.kept[1] / 1e9);
    printf("validation: %s\n", tot.mismatches ? "FAILED (see MISMATCH rows)" : "v1 bit-identical to v0 at every shape");
    bf_backend_destroy(b);
    return tot.mismatches ? 1 : 0;
}
