/* test_sync_bn_cuda.c - synchronised batch-norm's ops (ops.h batchnorm_sync_*) on CUDA against the
 * CPU reference. Skipped (exit 77) without a CUDA build or device.
 *
 * Per shape (several reduction chunks per channel, BN after a linear layer, a mean far from zero):
 *   - each op alone, fed the CPU's sums where it reads sums, so its own work is what is compared:
 *     the double sums to 1e-12 relative (the summation orders differ), and the apply steps, whose
 *     inputs are then equal, bit for bit (both round every float operation the same way);
 *   - the whole chain on each backend (as with one rank) to the bn tolerances of test_ops_cuda.c;
 *   - the statistics alone (y NULL) then batchnorm_relu_apply: relu of the apply's y, bit for bit;
 *   - the GPU sums repeat bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;

#define RED_ATOL 1e-4
#define RED_RTOL 1e-3

typedef struct dpair { /* doubles on both backends */
    double *c, *g;
    size_t n;
} dpair;

static dpair dpair_new(size_t n) {
    dpair p = {NULL, NULL, n};
    if (bf_alloc(cpu, n * sizeof(double), (void **)&p.c) != BF_OK ||
        bf_alloc(gpu, n * sizeof(double), (void **)&p.g) != BF_OK) {
        fprintf(stderr, "cannot allocate %zu doubles: %s\n", n, bf_last_error());
        exit(1);
    }
    return p;
}

static void dpair_free(dpair *p) {
    bf_free(cpu, p->c);
    bf_free(gpu, p->g);
}

/* The CPU's values into the GPU side: the next op then starts from equal sums on both. */
static void dpair_sync_to_gpu(dpair p) { CHECK_OK(bf_to_device(gpu, p.g, p.c, p.n * sizeof(double))); }

static void compare_doubles(const char *what, dpair p, double atol, double rtol) {
    double *g = malloc(p.n * sizeof(double));
    if (!g) exit(1);
    CHECK_OK(bf_to_host(gpu, g, p.g, p.n * sizeof(double)));
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < p.n; i++) {
        double v = fabs(p.c[i] - g[i]) / (atol + rtol * fmax(fabs(p.c[i]), fabs(g[i])));
        if (v > worst) worst = v, at = i;
    }
    printf("  %-44s max violation %8.3g  (n=%zu)\n", what, worst, p.n);
    CHECK(worst <= 1.0, "%s: element %zu cpu %.17g cuda %.17g", what, at, p.c[at], g[at]);
    free(g);
}

static void test_case(int n, int c, int hw, float lo, float hi, int repeats, float var_floor) {
    const bf_bn_shape s = {.n = n, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f, .repeats = repeats,
                           .var_floor = var_floor};
    printf("sync batchnorm n=%d c=%d hw=%d repeats=%d, x in [%g, %g)\n", n, c, hw, repeats, lo, hi);
    const size_t nx = (size_t)n * c * hw, nc = (size_t)c;
    pair x = pair_rand(nx, lo, hi), dy = pair_rand(nx, -1, 1);
    pair gamma = pair_rand(nc, 0.5f, 1.5f), beta = pair_rand(nc, -1, 1);
    pair rmean = pair_rand(nc, -0.5f, 0.5f), rvar = pair_rand(nc, 0.5f, 2.0f);
    pair y = pair_out(nx), smean = pair_out(nc), sinv = pair_out(nc);
    pair dx = pair_out(nx), dgamma = pair_out(nc), dbeta = pair_out(nc);
    dpair stats = dpair_new(nc + 1), sq = dpair_new(nc), sums = dpair_new(2 * nc + 1);

    /* ---- op by op, each GPU op from the CPU's sums ---- */
    CHECK_OK(cpu->ops->batchnorm_sync_sums(cpu, &s, x.c, stats.c));
    CHECK_OK(gpu->ops->batchnorm_sync_sums(gpu, &s, x.g, stats.g));
    compare_doubles("sync_sums (sum x, count)", stats, 1e-9, 1e-12);
    dpair_sync_to_gpu(stats);

    CHECK_OK(cpu->ops->batchnorm_sync_sqdev(cpu, &s, x.c, stats.c, sq.c));
    CHECK_OK(gpu->ops->batchnorm_sync_sqdev(gpu, &s, x.g, stats.g, sq.g));
    compare_doubles("sync_sqdev (sum (x - mean)^2)", sq, 1e-9, 1e-12);
    dpair_sync_to_gpu(sq);

    CHECK_OK(cpu->ops->batchnorm_sync_forward_apply(cpu, &s, x.c, stats.c, sq.c, gamma.c, beta.c, y.c, smean.c, sinv.c,
                                                    rmean.c, rvar.c));
    CHECK_OK(gpu->ops->batchnorm_sync_forward_apply(gpu, &s, x.g, stats.g, sq.g, gamma.g, beta.g, y.g, smean.g, sinv.g,
                                                    rmean.g, rvar.g));
    pair_compare_exact("sync_forward_apply y", y);
    pair_compare_exact("sync_forward_apply save_mean", smean);
    pair_compare_exact("sync_forward_apply save_invstd", sinv);
    pair_compare_exact("sync_forward_apply running_mean", rmean);
    pair_compare_exact("sync_forward_apply running_var", rvar);

    /* the statistics alone (y NULL), then the fused batch-norm + ReLU from the saved statistics: what
     * a synchronised batch-norm with its ReLU runs ([model] fuse_bn_relu): relu(y), bit for bit */
    pair z = pair_out(nx), smean2 = pair_out(nc), sinv2 = pair_out(nc);
    CHECK_OK(gpu->ops->batchnorm_sync_forward_apply(gpu, &s, x.g, stats.g, sq.g, gamma.g, beta.g, NULL, smean2.g,
                                                    sinv2.g, NULL, NULL));
    CHECK_OK(gpu->ops->batchnorm_relu_apply(gpu, &s, x.g, gamma.g, beta.g, smean2.g, sinv2.g, z.g));
    CHECK_OK(cpu->ops->relu_forward(cpu, y.c, z.c, nx));
    pair_compare_exact("sync statistics alone + batchnorm_relu_apply = relu(y)", z);
    pair_free(&z);
    pair_free(&smean2);
    pair_free(&sinv2);

    CHECK_OK(cpu->ops->batchnorm_sync_backward_sums(cpu, &s, x.c, dy.c, smean.c, sinv.c, sums.c, dgamma.c, dbeta.c));
    CHECK_OK(gpu->ops->batchnorm_sync_backward_sums(gpu, &s, x.g, dy.g, smean.g, sinv.g, sums.g, dgamma.g, dbeta.g));
    compare_doubles("sync_backward_sums (dy, dy*xhat, count)", sums, 1e-9, 1e-10);
    pair_compare("sync_backward_sums dgamma", dgamma, 1e-6, 1e-6);
    pair_compare("sync_backward_sums dbeta", dbeta, 1e-6, 1e-6);
    dpair_sync_to_gpu(sums);

    CHECK_OK(cpu->ops->batchnorm_sync_backward_apply(cpu, &s, x.c, dy.c, gamma.c, smean.c, sinv.c, sums.c, dx.c));
    CHECK_OK(gpu->ops->batchnorm_sync_backward_apply(gpu, &s, x.g, dy.g, gamma.g, smean.g, sinv.g, sums.g, dx.g));
    pair_compare_exact("sync_backward_apply dx", dx);

    /* ---- the whole chain on each backend, nothing between the steps (one rank) ---- */
    CHECK_OK(cpu->ops->batchnorm_sync_sums(cpu, &s, x.c, stats.c));
    CHECK_OK(cpu->ops->batchnorm_sync_sqdev(cpu, &s, x.c, stats.c, sq.c));
    CHECK_OK(cpu->ops->batchnorm_sync_forward_apply(cpu, &s, x.c, stats.c, sq.c, gamma.c, beta.c, y.c, smean.c, sinv.c,
                                                    NULL, NULL));
    CHECK_OK(cpu->ops->batchnorm_sync_backward_sums(cpu, &s, x.c, dy.c, smean.c, sinv.c, sums.c, NULL, NULL));
    CHECK_OK(cpu->ops->batchnorm_sync_backward_apply(cpu, &s, x.c, dy.c, gamma.c, smean.c, sinv.c, sums.c, dx.c));
    /* y, sinv and dx already hold the op-by-op results (equal to the CPU's): garbage first, so a
     * chain that leaves them unwritten fails */
    CHECK_OK(gpu->ops->fill(gpu, y.g, 1e3f, nx));
    CHECK_OK(gpu->ops->fill(gpu, sinv.g, 1e3f, nc));
    CHECK_OK(gpu->ops->fill(gpu, dx.g, 1e3f, nx));
    CHECK_OK(gpu->ops->batchnorm_sync_sums(gpu, &s, x.g, stats.g));
    CHECK_OK(gpu->ops->batchnorm_sync_sqdev(gpu, &s, x.g, stats.g, sq.g));
    CHECK_OK(gpu->ops->batchnorm_sync_forward_apply(gpu, &s, x.g, stats.g, sq.g, gamma.g, beta.g, y.g, smean.g, sinv.g,
                                                    NULL, NULL));
    CHECK_OK(gpu->ops->batchnorm_sync_backward_sums(gpu, &s, x.g, dy.g, smean.g, sinv.g, sums.g, NULL, NULL));
    CHECK_OK(gpu->ops->batchnorm_sync_backward_apply(gpu, &s, x.g, dy.g, gamma.g, smean.g, sinv.g, sums.g, dx.g));
    pair_compare("chain y", y, RED_ATOL, RED_RTOL);
    pair_compare("chain save_invstd", sinv, RED_ATOL, RED_RTOL);
    pair_compare("chain dx", dx, RED_ATOL, RED_RTOL);

    /* ---- the GPU sums repeat ---- */
    double *first = malloc(nc * sizeof(double)), *again = malloc(nc * sizeof(double));
    if (!first || !again) exit(1);
    CHECK_OK(gpu->ops->batchnorm_sync_sqdev(gpu, &s, x.g, stats.g, sq.g));
    CHECK_OK(bf_to_host(gpu, first, sq.g, nc * sizeof(double)));
    CHECK_OK(gpu->ops->batchnorm_sync_sqdev(gpu, &s, x.g, stats.g, sq.g));
    CHECK_OK(bf_to_host(gpu, again, sq.g, nc * sizeof(double)));
    CHECK(memcmp(first, again, nc * sizeof(double)) == 0, "sync_sqdev does not repeat bit for bit");
    free(first);
    free(again);

    pair *all[] = {&x, &dy, &gamma, &beta, &rmean, &rvar, &y, &smean, &sinv, &dx, &dgamma, &dbeta};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
    dpair_free(&stats);
    dpair_free(&sq);
    dpair_free(&sums);
}

int main(void) {
    if (!pair_open(&cpu, &gpu, 71)) return bf_test_finish();
    test_case(4, 3, 25, -1, 1, 0, 0);
    test_case(16, 4, 1024, 2, 4, 0, 0);      /* several reduction chunks per channel, a non-zero mean */
    test_case(32, 10, 1, -3, 3, 0, 0);       /* BN after a linear layer */
    test_case(3, 5, 37, 300.0f, 301.0f, 0, 0); /* a mean far larger than the spread: the two-pass variance */
    test_case(2, 3, 2, -1, 1, 4, 0);         /* 4 values standing for 16 copies: the running variance's 16/15 */
    test_case(4, 64, 25, -1, 1, 0, 1.0f);    /* [model] bn_var_floor: a third of the updates raised to 1 */
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
