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
 *
 * Correctness, checked before anything is timed; any difference is reported and fails the run (exit 1):
 *   - on --device cuda, both versions' y, conv-mask sum, dC, dT and dx against the CPU reference
 *     backend (bf_backend_create_cpu: the same ops on the same inputs) at batch 2 on the 3->64 @224,
 *     64->128 @112 and 512->512 @14 shapes (on 16x16 inputs with --small), as flex_lab.cu checks the
 *     max joint; which outputs must match bit for bit is said at validate_against_cpu. Skipped on
 *     --device cpu, where it would compare the CPU with itself.
 *   - at every shape and batch that is timed, version 1's five outputs against version 0's, bit for
 *     bit (ops.h: the fused ops are bit-identical to the op-by-op sequence on every backend).
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
 * (usage() says what each does). Without --batch: batch 32, then 128 (the two) on cuda, and
 * batch 1 on the CPU, where the lab is a correctness run (its fused ops compute through the sequence). */
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
/* The shapes checked against the CPU, as in flex_lab.cu: 3->64 (the widening tiles), 64->128 (block
 * copy), 512->512 (identity); batch 2 keeps the CPU's share of the check short. */
static const int k_cpu_checked[] = {0, 2, 8};
enum { CPU_CHECK_BATCH = 2 };

typedef struct lab_options {
    bf_device_kind device;
    int batch, repeats, small; /* batch 0: the defaults (32 and 128 on cuda, 1 on the CPU) */
    bf_flex_mask mask;
} lab_options;

/* One shape at one batch: the pool and flex shapes, the input's side h, and the element counts of the
 * input (X), the pooled tensor (Np), the output (Nc) and the threshold (K). */
typedef struct lab_case {
    int h;
    bf_pool_shape ps;
    bf_flex_shape fs;
    size_t X, Np, Nc, K;
} lab_case;

/* The tensors of one case on a backend. The outputs both versions write are pairs, [0] version 0's
 * and [1] version 1's; version 0 also keeps widened, logits and mask from its forward. */
typedef struct lab_tensors {
    float *x, *C, *T, *dy, *P, *widened, *logits, *mask, *dL, *dW, *dP;
    float *y[2], *sum[2], *dC[2], *dT[2], *dx[2];
    uint8_t *window;
} lab_tensors;

/* The outputs the checks compare. */
enum { OUT_Y, OUT_SUM, OUT_DC, OUT_DT, OUT_DX, LAB_OUTPUTS };
static const char *const k_output_names[LAB_OUTPUTS] = {"y", "sum", "dC", "dT", "dx"};

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

/* Multiples of 1/8 in [lo, lo + levels/8), uploaded: exact ties between pool and conv occur. The
 * values depend on the seed alone, so every backend gets the same inputs. */
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

/* A host copy of n floats of the backend's memory (free() it). */
static float *host_copy(bf_backend *b, const float *p, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) die("malloc", BF_ERR_OOM);
    RUN(bf_to_host(b, h, p, n * sizeof(float)));
    return h;
}

static lab_case case_of(const lab_shape *sh, int batch, int small) {
    lab_case c = {.h = small ? (sh->h * 16 / 224 > 1 ? sh->h * 16 / 224 : 1) : sh->h}; /* 224 -> 16, 14 -> 1 */
    c.ps = (bf_pool_shape){.n = batch, .c = sh->c_in, .h_in = c.h, .w_in = c.h, .k = 3, .stride = 1, .pad = 1};
    RUN(bf_pool_shape_init(&c.ps));
    c.fs = (bf_flex_shape){.n = batch, .c_in = sh->c_in, .c_out = sh->c_out, .hw = c.ps.h_out * c.ps.w_out,
                           .channels = BF_FLEX_CHANNELS_EXPAND};
    c.X = (size_t)batch * sh->c_in * c.h * c.h;
    c.Np = (size_t)batch * sh->c_in * c.fs.hw;
    c.Nc = (size_t)batch * sh->c_out * c.fs.hw;
    c.K = (size_t)sh->c_out * c.fs.hw;
    return c;
}

static void tensors_alloc(bf_backend *b, const lab_case *c, lab_tensors *t) {
    t->x = dev_eighths(b, c->X, -2.0f, 32, 1);
    t->C = dev_eighths(b, c->Nc, -2.0f, 48, 2);
    t->T = dev_eighths(b, c->K, -1.0f, 16, 3);
    t->dy = dev_eighths(b, c->Nc, -1.0f, 16, 4);
    float **like_y[] = {&t->widened, &t->logits, &t->mask, &t->dL, &t->dW, &t->y[0], &t->y[1], &t->dC[0], &t->dC[1]};
    for (size_t i = 0; i < sizeof like_y / sizeof like_y[0]; i++) *like_y[i] = dev_floats(b, c->Nc);
    t->P = dev_floats(b, c->Np);
    t->dP = dev_floats(b, c->Np);
    for (int v = 0; v < 2; v++) {
        t->sum[v] = dev_floats(b, 1);
        t->dT[v] = dev_floats(b, c->K);
        t->dx[v] = dev_floats(b, c->X);
    }
    void *window = NULL;
    RUN(bf_alloc(b, c->Np, &window));
    t->window = window;
}

static void tensors_free(bf_backend *b, lab_tensors *t) {
    void *all[] = {t->x,     t->C,     t->T,      t->dy,     t->P,      t->widened, t->logits, t->mask,
                   t->dL,    t->dW,    t->dP,     t->y[0],   t->y[1],   t->sum[0],  t->sum[1], t->dC[0],
                   t->dC[1], t->dT[0], t->dT[1],  t->dx[0],  t->dx[1],  t->window};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

static void version0_forward(bf_backend *b, const lab_case *c, const lab_options *o, lab_tensors *t) {
    const bf_ops *ops = b->ops;
    RUN(ops->flex_pool_forward(b, &c->ps, &c->fs, t->x, t->P, t->window));
    RUN(ops->flex_widen_forward(b, &c->fs, t->P, t->widened));
    RUN(ops->flex_logits_forward(b, &c->fs, t->widened, t->T, t->logits));
    RUN(ops->flex_mask_forward(b, &c->fs, o->mask, 1.0f, bf_draws_of(5), t->logits, t->C, t->widened, t->mask, t->y[0],
                               t->sum[0]));
}

static void version0_backward(bf_backend *b, const lab_case *c, const lab_options *o, lab_tensors *t) {
    const bf_ops *ops = b->ops;
    RUN(ops->flex_mask_backward(b, &c->fs, o->mask, 1.0f, t->logits, t->mask, t->C, t->widened, t->dy, t->dC[0],
                                t->dL, t->dW));
    RUN(ops->add_inplace(b, t->dW, t->dL, c->Nc));
    RUN(ops->flex_threshold_backward(b, &c->fs, t->dL, t->dT[0]));
    RUN(ops->flex_widen_backward(b, &c->fs, t->dW, t->dP));
    RUN(ops->flex_pool_scatter_add(b, &c->ps, &c->fs, t->window, t->dP, t->dx[0]));
}

static void version1_forward(bf_backend *b, const lab_case *c, const lab_options *o, lab_tensors *t) {
    const bf_ops *ops = b->ops;
    RUN(ops->flex_pool_forward(b, &c->ps, &c->fs, t->x, t->P, t->window));
    RUN(ops->flex_mask_joint_forward(b, &c->fs, o->mask, 1.0f, bf_draws_of(5), t->P, t->T, NULL, t->C, t->y[1], t->sum[1], NULL));
}

static void version1_backward(bf_backend *b, const lab_case *c, const lab_options *o, lab_tensors *t) {
    const bf_ops *ops = b->ops;
    RUN(ops->flex_pool_gather(b, &c->ps, &c->fs, t->x, t->window, t->P));
    RUN(ops->flex_mask_joint_backward(b, &c->fs, o->mask, 1.0f, bf_draws_of(5), t->P, t->T, NULL, t->C, t->dy, t->dC[1], t->dL,
                                      t->dP));
    RUN(ops->flex_threshold_backward(b, &c->fs, t->dL, t->dT[1]));
    RUN(ops->flex_pool_scatter_add(b, &c->ps, &c->fs, t->window, t->dP, t->dx[1]));
}

/* One pass of each version from zeroed dx and sums (the scatter and the sum add to them): what the
 * checks compare. */
static void run_versions_once(bf_backend *b, const lab_case *c, const lab_options *o, lab_tensors *t) {
    for (int v = 0; v < 2; v++) {
        RUN(b->ops->fill(b, t->dx[v], 0.0f, c->X));
        RUN(b->ops->fill(b, t->sum[v], 0.0f, 1));
    }
    version0_forward(b, c, o, t);
    version0_backward(b, c, o, t);
    version1_forward(b, c, o, t);
    version1_backward(b, c, o, t);
}

/* How output k of one version compares with the wanted one: n elements, of which bits are
 * bit-identical and bad fail; max_abs, the largest difference. */
typedef struct lab_diff {
    size_t n, bits, bad;
    double max_abs;
} lab_diff;

/* Output k (k_output_names' order) of version gv in gt, on backend gb, against that of version wv in
 * wt, on wb. An element fails when its bits differ if exact, else when it is off by more than
 * 1e-6 + 1e-5 |wanted| (flex_lab.cu's tolerance); the first few failures are printed to stderr. */
static lab_diff compare_output(const lab_case *c, int k, bf_backend *gb, const lab_tensors *gt, int gv, bf_backend *wb,
                               const lab_tensors *wt, int wv, int exact) {
    const float *const got_of[LAB_OUTPUTS] = {gt->y[gv], gt->sum[gv], gt->dC[gv], gt->dT[gv], gt->dx[gv]};
    const float *const want_of[LAB_OUTPUTS] = {wt->y[wv], wt->sum[wv], wt->dC[wv], wt->dT[wv], wt->dx[wv]};
    const size_t counts[LAB_OUTPUTS] = {c->Nc, 1, c->Nc, c->K, c->X};
    lab_diff d = {counts[k], 0, 0, 0.0};
    float *got = host_copy(gb, got_of[k], d.n), *want = host_copy(wb, want_of[k], d.n);
    for (size_t i = 0; i < d.n; i++) {
        if (!memcmp(&got[i], &want[i], sizeof(float))) {
            d.bits++;
            continue;
        }
        const double diff = fabs((double)got[i] - (double)want[i]), off = isnan(diff) ? INFINITY : diff;
        if (off > d.max_abs) d.max_abs = off;
        if (!exact && off <= 1e-6 + 1e-5 * fabs((double)want[i])) continue;
        if (d.bad++ < 5) fprintf(stderr, "  v%d %s[%zu]: %.9g, want %.9g\n", gv, k_output_names[k], i, got[i], want[i]);
    }
    free(got);
    free(want);
    return d;
}

/* Version 1's outputs against version 0's on one backend, bit for bit (ops.h); a MISMATCH row names
 * what differs. Returns the number of differing elements. */
static size_t fused_mismatches(bf_backend *b, const lab_shape *sh, const lab_case *c, const lab_tensors *t) {
    size_t bad[LAB_OUTPUTS], total = 0;
    for (int k = 0; k < LAB_OUTPUTS; k++) total += bad[k] = compare_output(c, k, b, t, 1, b, t, 0, 1).bad;
    if (total)
        printf("  MISMATCH %d->%d %dx%d n=%d: y %zu, sum %zu, dC %zu, dT %zu, dx %zu elements differ\n", sh->c_in,
               sh->c_out, c->h, c->h, c->fs.n, bad[OUT_Y], bad[OUT_SUM], bad[OUT_DC], bad[OUT_DT], bad[OUT_DX]);
    return total;
}

/* Both versions on the GPU against both on the CPU reference backend, from the same inputs, on
 * k_cpu_checked's shapes; returns 1 on a pass. Tolerance policy: ops.h promises bits only between
 * the fused ops and the op-by-op sequence on one backend (fused_mismatches). Between the backends its
 * contract is agreement, which tests/test_flex_ops_cuda.c holds as this check does: y and dC bit for
 * bit (the CUDA kernels round the CPU's IEEE expressions explicitly, and the stochastic masks draw
 * the same bf_uniform), except under sigmoid_mul, whose exp may round differently on the GPU; and
 * within flex_lab.cu's tight tolerance the conv-mask sum (both sum in double, in different orders,
 * then round to float), dT and dx (sums of dlogits and dpooled, which the test holds to a tight
 * tolerance). Each row prints how many elements are bit-identical: with the default mask, all. */
static int validate_against_cpu(bf_backend *gpu, const lab_options *o) {
    const int exact_y_dC = o->mask != BF_FLEX_MASK_SIGMOID_MUL;
    printf("validation against the CPU reference, batch %d (%s, the sum, dT and dx within 1e-6 + 1e-5|cpu|):\n",
           CPU_CHECK_BATCH, exact_y_dC ? "y and dC bit for bit" : "y, dC");
    bf_backend *cpu = NULL;
    RUN(bf_backend_create_cpu(0, &cpu));
    int ok = 1;
    for (size_t i = 0; i < sizeof k_cpu_checked / sizeof k_cpu_checked[0]; i++) {
        const lab_shape *sh = &k_vgg16[k_cpu_checked[i]];
        const lab_case c = case_of(sh, CPU_CHECK_BATCH, o->small);
        lab_tensors g, r;
        tensors_alloc(gpu, &c, &g);
        tensors_alloc(cpu, &c, &r);
        run_versions_once(gpu, &c, o, &g);
        run_versions_once(cpu, &c, o, &r);
        for (int v = 0; v < 2; v++) {
            printf("  %4d->%-4d %3dx%-3d n=%d v%d  bit-identical:", sh->c_in, sh->c_out, c.h, c.h, c.fs.n, v);
            size_t bad = 0;
            double worst = 0.0;
            for (int k = 0; k < LAB_OUTPUTS; k++) {
                const int exact = (k == OUT_Y || k == OUT_DC) && exact_y_dC;
                const lab_diff d = compare_output(&c, k, gpu, &g, v, cpu, &r, v, exact);
                bad += d.bad;
                if (d.max_abs > worst) worst = d.max_abs;
                printf(" %s %zu/%zu", k_output_names[k], d.bits, d.n);
            }
            printf("; max |gpu - cpu| %.3g  %s\n", worst, bad ? "MISMATCH" : "ok");
            ok &= bad == 0;
        }
        tensors_free(gpu, &g);
        tensors_free(cpu, &r);
    }
    bf_backend_destroy(cpu);
    printf("validation against the CPU: %s\n", ok ? "passed" : "FAILED (see the MISMATCH rows and stderr)");
    return ok;
}

typedef void (*lab_pass)(bf_backend *, const lab_case *, const lab_options *, lab_tensors *);

/* Mean seconds per call of pass over o->repeats calls after one warm-up. */
static double time_pass(bf_backend *b, lab_pass pass, const lab_case *c, const lab_options *o, lab_tensors *t) {
    pass(b, c, o, t);
    RUN(b->ops->synchronize(b));
    const double start = now_s();
    for (int r = 0; r < o->repeats; r++) pass(b, c, o, t);
    RUN(b->ops->synchronize(b));
    return (now_s() - start) / o->repeats;
}

typedef struct lab_totals {
    double fwd[2], bwd[2], bytes_fwd, bytes_bwd, kept[2];
    size_t mismatches;
} lab_totals;

/* One shape at batch n: version 1 checked against version 0, then both timed; adds to tot. */
static void run_shape(bf_backend *b, const lab_shape *sh, int n, const lab_options *o, lab_totals *tot) {
    const lab_case c = case_of(sh, n, o->small);
    const double X = (double)c.X, Np = (double)c.Np, Nc = (double)c.Nc;
    lab_tensors t;
    tensors_alloc(b, &c, &t);
    run_versions_once(b, &c, o, &t);
    tot->mismatches += fused_mismatches(b, sh, &c, &t);

    const double f0 = time_pass(b, version0_forward, &c, o, &t), b0 = time_pass(b, version0_backward, &c, o, &t);
    const double f1 = time_pass(b, version1_forward, &c, o, &t), b1 = time_pass(b, version1_backward, &c, o, &t);
    const double bytes_fwd = 4.0 * X + 5.0 * Np + 4.0 * Np + 12.0 * Nc;
    const double bytes_bwd = 9.0 * Np + 8.0 * Np + 20.0 * Nc + 4.0 * Nc + 5.0 * Np + 8.0 * X;
    printf("  %4d->%-4d %3dx%-3d x%d   v0 %8.3f + %8.3f ms   v1 %8.3f + %8.3f ms   %5.2fx   v1 %6.1f GB/s\n",
           sh->c_in, sh->c_out, c.h, c.h, sh->count, 1e3 * f0, 1e3 * b0, 1e3 * f1, 1e3 * b1, (f0 + b0) / (f1 + b1),
           (bytes_fwd + bytes_bwd) / (f1 + b1) / 1e9);
    tot->fwd[0] += sh->count * f0;
    tot->bwd[0] += sh->count * b0;
    tot->fwd[1] += sh->count * f1;
    tot->bwd[1] += sh->count * b1;
    tot->bytes_fwd += sh->count * bytes_fwd;
    tot->bytes_bwd += sh->count * bytes_bwd;
    tot->kept[0] += sh->count * (16.0 * Nc + Np);
    tot->kept[1] += sh->count * (4.0 * Nc + Np);
    tensors_free(b, &t);
}

/* The 13 layers at batch n: a row per shape, then the totals. Returns the elements where version 1
 * differed from version 0. */
static size_t run_batch(bf_backend *b, int n, const lab_options *o) {
    printf("batch %d:\n", n);
    lab_totals tot = {{0, 0}, {0, 0}, 0, 0, {0, 0}, 0};
    for (size_t i = 0; i < sizeof k_vgg16 / sizeof k_vgg16[0]; i++) run_shape(b, &k_vgg16[i], n, o, &tot);
    const double t0 = tot.fwd[0] + tot.bwd[0], t1 = tot.fwd[1] + tot.bwd[1];
    printf("all 13 layers, batch %d: v0 unfused %.3f ms (fwd %.3f, bwd %.3f), v1 fused %.3f ms (fwd %.3f, bwd %.3f): "
           "%.2fx\n",
           n, 1e3 * t0, 1e3 * tot.fwd[0], 1e3 * tot.bwd[0], 1e3 * t1, 1e3 * tot.fwd[1], 1e3 * tot.bwd[1], t0 / t1);
    printf("v1 byte model: %.2f GB/s (fwd %.2f, bwd %.2f); kept for the backward: v0 %.3f GB, v1 %.3f GB\n",
           (tot.bytes_fwd + tot.bytes_bwd) / t1 / 1e9, tot.bytes_fwd / tot.fwd[1] / 1e9, tot.bytes_bwd / tot.bwd[1] / 1e9,
           tot.kept[0] / 1e9, tot.kept[1] / 1e9);
    return tot.mismatches;
}

/* Every bf_flex_mask, in its order, by the names [model] flex_mask takes (the *_SQUASHED kinds are
 * the config's *_reference). */
static const char *const k_mask_names[] = {"sigmoid_hard",    "sigmoid_mul",     "ste_fpbp",
                                           "ste_fpbs",        "ste_fsbp",        "ste_fsbs",
                                           "stochastic_fpbp", "stochastic_fpbs", "stochastic_fsbp",
                                           "stochastic_fsbs", "stochastic_fcbp", "stochastic_fcbs",
                                           "stochastic_fsbs_reference", "stochastic_fcbs_reference"};
_Static_assert(sizeof k_mask_names / sizeof k_mask_names[0] == BF_FLEX_MASK_COUNT, "a name for every bf_flex_mask");

static void usage(void) {
    fprintf(stderr, "usage: bench_flex_mask_lab [--device cpu|cuda] [--batch N] [--repeats R] [--mask NAME] [--small]\n"
                    "  --device   cuda (default) or cpu; on cuda both versions are first checked against the CPU\n"
                    "  --batch N  batch N alone (default: 32, then 128 on cuda; 1 on cpu, a correctness run)\n"
                    "  --repeats  timed runs per pass, after one warm-up (default 10)\n"
                    "  --mask     sigmoid_hard (default), sigmoid_mul, ste_*, stochastic_* (ops.h bf_flex_mask; the\n"
                    "             reference code's backward: stochastic_fsbs_reference, stochastic_fcbs_reference)\n"
                    "  --small    the VGG-16 channel plan on 16x16 inputs (a quick check on a CPU)\n");
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
    lab_options o = {.device = BF_DEVICE_CUDA, .batch = 0, .repeats = 10, .small = 0, .mask = BF_FLEX_MASK_SIGMOID_HARD};
    parse(argc, argv, &o);
    const int on_cuda = o.device == BF_DEVICE_CUDA;
    bf_backend *b = NULL;
    bf_status st = on_cuda ? bf_backend_create_cuda(0, BF_PRECISION_FP32, &b) : bf_backend_create_cpu(0, &b);
    if (st != BF_OK) {
        fprintf(stderr, "bench_flex_mask_lab: no %s backend: %s\n", on_cuda ? "cuda" : "cpu", bf_last_error());
        return 2;
    }
    printf("flex mask-joint lab: %s, mask %s, %d repeats, VGG-16 flex layers%s (fwd + bwd, no conv)\n",
           on_cuda ? "cuda" : "cpu", k_mask_names[o.mask], o.repeats, o.small ? " on 16x16" : " at 224x224");
    if (!on_cuda) {
        printf("validation against the CPU reference: skipped (--device cpu would compare the CPU with itself)\n");
    } else if (!validate_against_cpu(b, &o)) {
        bf_backend_destroy(b);
        return 1;
    }

    /* the two batches on the GPU; on the CPU, a correctness run, batch 1 */
    const int batches[] = {o.batch ? o.batch : on_cuda ? 32 : 1, 128}, count = o.batch || !on_cuda ? 1 : 2;
    size_t mismatches = 0;
    for (int i = 0; i < count; i++) mismatches += run_batch(b, batches[i], &o);
    printf("validation: %s\n", mismatches ? "FAILED (see MISMATCH rows)" : "v1 bit-identical to v0 at every shape");
    bf_backend_destroy(b);
    return mismatches ? 1 : 0;
}
