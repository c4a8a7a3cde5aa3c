/* test_v1_ops_cuda.c - the V1 layers' ops on CUDA against the CPU reference, on the same inputs
 * (skipped, exit 77, without a GPU): the tuned divisive normalisation's weight generation and its
 * backward at the V1 ResNet-50's 256 channels and at an odd 7 (widths below the 0.5 clamp included),
 * with both channel distances (opponent, similar),
 * its division and backward, with and without dx; the DoG kernels and their backward (256 kernels of
 * 5x5, and 9 of 3x3 with clamped widths, both amplitudes); the channel block copies. */
#include <stdlib.h>

#include "cuda_pair.h"
#include "testutil.h"

static void check_weights(bf_backend *cpu, bf_backend *gpu, int c, float lo, float hi, bf_oci_distance distance) {
    pair sigma = pair_rand((size_t)c, lo, hi), w = pair_out((size_t)c * c), dw = pair_rand((size_t)c * c, -1, 1),
         ds = pair_out((size_t)c);
    CHECK_OK(cpu->ops->divnorm_weights(cpu, c, distance, sigma.c, w.c));
    CHECK_OK(gpu->ops->divnorm_weights(gpu, c, distance, sigma.g, w.g));
    char what[112];
    snprintf(what, sizeof what, "divnorm_weights, %d channels, widths in [%g, %g)%s", c, lo, hi,
             distance == BF_OCI_SIMILAR ? ", similar" : "");
    pair_compare(what, w, 1e-7, 1e-6);
    /* both sides read the CPU's W, so the backward is compared alone */
    float *w_host = NULL, *w_gpu = NULL;
    if (pair_download("W", w, &w_host, &w_gpu)) {
        CHECK_OK(bf_to_device(gpu, w.g, w_host, (size_t)c * c * sizeof(float)));
        free(w_host), free(w_gpu);
    }
    CHECK_OK(cpu->ops->divnorm_weights_backward(cpu, c, distance, sigma.c, w.c, dw.c, ds.c));
    CHECK_OK(gpu->ops->divnorm_weights_backward(gpu, c, distance, sigma.g, w.g, dw.g, ds.g));
    snprintf(what, sizeof what, "divnorm_weights_backward, %d channels", c);
    pair_compare(what, ds, 1e-7, 1e-5);
    pair_free(&sigma), pair_free(&w), pair_free(&dw), pair_free(&ds);
}

static void check_dog(bf_backend *cpu, bf_backend *gpu, int p, int k, int amp_paper) {
    const size_t taps = (size_t)k * k, nw = (size_t)p * taps;
    pair s1 = pair_rand((size_t)p, 0.05f, 2), s2 = pair_rand((size_t)p, 0.9f, 2), tau = pair_rand((size_t)p, -3, 3);
    pair w = pair_out(nw), norms = pair_out(taps), dw = pair_rand(nw, -1, 1);
    pair d1 = pair_out((size_t)p), d2 = pair_out((size_t)p), dt = pair_out((size_t)p);
    CHECK_OK(cpu->ops->dog_kernels(cpu, p, k, amp_paper, s1.c, s2.c, tau.c, w.c, norms.c));
    CHECK_OK(gpu->ops->dog_kernels(gpu, p, k, amp_paper, s1.g, s2.g, tau.g, w.g, norms.g));
    char what[96];
    snprintf(what, sizeof what, "dog_kernels %d x %dx%d%s", p, k, k, amp_paper ? " (1/(pi s))" : "");
    pair_compare(what, w, 1e-7, 1e-5);
    pair_compare("... the taps' norms", norms, 1e-7, 1e-6);
    CHECK_OK(cpu->ops->dog_kernels_backward(cpu, p, k, amp_paper, s1.c, s2.c, tau.c, w.c, norms.c, dw.c, d1.c, d2.c, dt.c));
    CHECK_OK(gpu->ops->dog_kernels_backward(gpu, p, k, amp_paper, s1.g, s2.g, tau.g, w.g, norms.g, dw.g, d1.g, d2.g, dt.g));
    pair_compare("dog_kernels_backward dsigma1", d1, 1e-6, 1e-4);
    pair_compare("dog_kernels_backward dsigma2_scale", d2, 1e-6, 1e-4);
    pair_compare("dog_kernels_backward dtotal_scale", dt, 1e-6, 1e-4);
    pair_free(&s1), pair_free(&s2), pair_free(&tau), pair_free(&w), pair_free(&norms), pair_free(&dw);
    pair_free(&d1), pair_free(&d2), pair_free(&dt);
}

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 5150)) return bf_test_finish();
    check_weights(cpu, gpu, 256, 32, 33, BF_OCI_OPPONENT); /* the reference's initial widths */
    check_weights(cpu, gpu, 7, 0.2f, 3, BF_OCI_OPPONENT);  /* some clamped at 0.5 */
    check_weights(cpu, gpu, 256, 32, 33, BF_OCI_SIMILAR);  /* [model] oci_distance = similar */
    check_weights(cpu, gpu, 7, 0.2f, 3, BF_OCI_SIMILAR);

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
    check_dog(cpu, gpu, 256, 5, 0);
    check_dog(cpu, gpu, 9, 3, 0);
    check_dog(cpu, gpu, 9, 3, 1);
    /* channel_copy: 16 of 64 channels out of a batch, and 48 into the middle of another */
    pair src = pair_rand((size_t)3 * 64 * 30, -1, 1), dst = pair_rand((size_t)3 * 70 * 30, -1, 1);
    CHECK_OK(cpu->ops->channel_copy(cpu, 3, 30, 48, src.c, 64, 16, dst.c, 70, 11));
    CHECK_OK(gpu->ops->channel_copy(gpu, 3, 30, 48, src.g, 64, 16, dst.g, 70, 11));
    pair_compare_exact("channel_copy (the untouched channels kept)", dst);
    CHECK(gpu->ops->channel_copy(gpu, 3, 30, 60, src.g, 64, 16, dst.g, 70, 11) == BF_ERR_ARG,
          "channel_copy past the source's channels is refused");
    pair_free(&src), pair_free(&dst);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
