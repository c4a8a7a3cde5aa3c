/* test_divnorm_ops_cuda.c - the tuned divisive normalisation's ops on CUDA against the CPU reference,
 * on the same inputs (skipped, exit 77, without a GPU): the weight generation and its backward at
 * the V1 ResNet-50's 256 channels and at an odd 7 (widths below the 0.5 clamp included), and the
 * division and its backward, with and without dx. */
#include <stdlib.h>

#include "cuda_pair.h"
#include "testutil.h"

static void check_weights(bf_backend *cpu, bf_backend *gpu, int c, float lo, float hi) {
    pair sigma = pair_rand((size_t)c, lo, hi), w = pair_out((size_t)c * c), dw = pair_rand((size_t)c * c, -1, 1),
         ds = pair_out((size_t)c);
    CHECK_OK(cpu->ops->divnorm_weights(cpu, c, sigma.c, w.c));
    CHECK_OK(gpu->ops->divnorm_weights(gpu, c, sigma.g, w.g));
    char what[96];
    snprintf(what, sizeof what, "divnorm_weights, %d channels, widths in [%g, %g)", c, lo, hi);
    pair_compare(what, w, 1e-7, 1e-6);
    /* both sides read the CPU's W, so the backward is compared alone */
    float *w_host = NULL, *w_gpu = NULL;
    if (pair_download("W", w, &w_host, &w_gpu)) {
        CHECK_OK(bf_to_device(gpu, w.g, w_host, (size_t)c * c * sizeof(float)));
        free(w_host), free(w_gpu);
    }
    CHECK_OK(cpu->ops->divnorm_weights_backward(cpu, c, sigma.c, w.c, dw.c, ds.c));
    CHECK_OK(gpu->ops->divnorm_weights_backward(gpu, c, sigma.g, w.g, dw.g, ds.g));
    snprintf(what, sizeof what, "divnorm_weights_backward, %d channels", c);
    pair_compare(what, ds, 1e-7, 1e-5);
    pair_free(&sigma), pair_free(&w), pair_free(&dw), pair_free(&ds);
}

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 5150)) return bf_test_finish();
    check_weights(cpu, gpu, 256, 32, 33); /* the reference's initial widths */
    check_weights(cpu, gpu, 7, 0.2f, 3);  /* some clamped at 0.5 */

    const size_t n = 100003; /* past the CPU's threading threshold, odd */
    pair x = pair_rand(n, 0, 3), s = pair_rand(n, 0, 2), y = pair_out(n), dy = pair_rand(n, -1, 1), dx = pair_out(n);
    CHECK_OK(cpu->ops->divnorm_apply(cpu, x.c, s.c, y.c, n));
    CHECK_OK(gpu->ops->divnorm_apply(gpu, x.g, s.g, y.g, n));
    pair_compare_exact("divnorm_apply", y);
    pair ds = pair_out(n);
    CHECK_OK(cpu->ops->divnorm_apply_backward(cpu, x.c, s.c, dy.c, dx.c, ds.c, n));
    CHECK_OK(gpu->ops->divnorm_apply_backward(gpu, x.g, s.g, dy.g, dx.g, ds.g, n));
    pair_compare_exact("divnorm_apply_backward dx", dx);
    pair_compare_exact("divnorm_apply_backward ds", ds);
    /* dS over S, no dx (the layer's own use) */
    CHECK_OK(cpu->ops->divnorm_apply_backward(cpu, x.c, s.c, dy.c, NULL, s.c, n));
    CHECK_OK(gpu->ops->divnorm_apply_backward(gpu, x.g, s.g, dy.g, NULL, s.g, n));
    pair_compare_exact("divnorm_apply_backward ds over s, no dx", s);
    pair_compare("... equal to the separate ds", (pair){s.c, ds.g, n}, 0, 0);
    pair_free(&x), pair_free(&s), pair_free(&y), pair_free(&dy), pair_free(&dx), pair_free(&ds);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
