/* test_bn_relu_ops_cuda.c - a batch-norm and the ReLU after it as one layer on the GPU
 * (batchnorm_relu_apply, batchnorm_relu_backward; [model] fuse_bn_relu):
 *   - against the CPU's fused ops (tests/test_bn_relu_ops.c holds those to the unfused sequence):
 *     the output bit for bit (the same rounded operations), the gradients within the tolerance the
 *     batch-norm backward gets in test_ops_cuda (sums in another order);
 *   - against the GPU's own unfused sequence (batchnorm_forward_saved, relu_forward; relu_backward,
 *     batchnorm_backward): the same bits, dx, dgamma and dbeta;
 * for planes of 1 and 7 values (the flat kernels) and of 64 and 3136 (a block per plane), with
 * batch-norm outputs exactly 0 (masked) in channel 0, and per channel a different mean, a nonzero
 * beta and, in channel 1, a negative gamma elsewhere (so a coefficient taken from the wrong channel,
 * a dropped beta or a flipped mask shows); and a residual add with its ReLU (add_relu_forward,
 * add_relu_backward; [model] fuse_add_relu) against the CPU, bit for bit, on the 16-byte vector
 * path (n a multiple of 4, aligned), the scalar one (odd n; tensors one float off alignment), with
 * one gradient target left out and a target over dy. Skipped (exit 77) without a CUDA build or device. */
#include <stdio.h>
#include <stdlib.h>

#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;

static void test_case(int n, int c, int hw) {
    const size_t count = (size_t)n * c * hw;
    const bf_bn_shape s = {.n = n, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    float *host = malloc(count * sizeof(float));
    if (!host) exit(1);
    bf_test_fill_uniform(host, count, -2.0f, 2.0f, pair_next_seed());
    for (size_t i = 0; i < count; i += 7)
        if ((i / (size_t)hw) % (size_t)c == 0) host[i] = 0.25f; /* channel 0's statistics below: exactly 0 */
    pair x = pair_from(host, count), dy = pair_rand(count, -1.0f, 1.0f);
    free(host);
    float stats[4][64];
    for (int ch = 0; ch < c && ch < 64; ch++) {
        stats[0][ch] = 0.25f - 0.0625f * (float)(ch % 5);                      /* mean */
        stats[1][ch] = 1.0f + 0.03125f * (float)ch;                            /* invstd */
        stats[2][ch] = ch == 1 ? -0.75f : 0.75f + 0.0625f * (float)ch;         /* gamma */
        stats[3][ch] = (ch % 2 ? -0.125f : 0.125f) * (float)(ch % 4);          /* beta */
    } /* channel 0: mean 0.25, beta 0, so x = 0.25 normalises to exactly 0 */
    pair mean = pair_from(stats[0], (size_t)c), invstd = pair_from(stats[1], (size_t)c);
    pair gamma = pair_from(stats[2], (size_t)c), beta = pair_from(stats[3], (size_t)c);
    pair y = pair_out(count), y_seq = pair_out(count), g = pair_out(count), dx = pair_out(count), dx_seq = pair_out(count);
    pair dgb = pair_out(2 * (size_t)c), dgb_seq = pair_out(2 * (size_t)c);
    char what[96];
    snprintf(what, sizeof what, "bn+relu [%d, %d, %d]", n, c, hw);

    CHECK_OK(cpu->ops->batchnorm_relu_apply(cpu, &s, x.c, gamma.c, beta.c, mean.c, invstd.c, y.c));
    CHECK_OK(gpu->ops->batchnorm_relu_apply(gpu, &s, x.g, gamma.g, beta.g, mean.g, invstd.g, y.g));
    pair_compare_exact(what, y);
    CHECK_OK(gpu->ops->batchnorm_forward_saved(gpu, &s, x.g, gamma.g, beta.g, mean.g, invstd.g, y_seq.g));
    CHECK_OK(gpu->ops->relu_forward(gpu, y_seq.g, y_seq.g, count));
    check_repeats(what, y_seq.g, y.g, count);

    CHECK_OK(cpu->ops->batchnorm_relu_backward(cpu, &s, x.c, dy.c, gamma.c, beta.c, mean.c, invstd.c, dx.c, dgb.c,
                                               dgb.c + c));
    CHECK_OK(gpu->ops->batchnorm_relu_backward(gpu, &s, x.g, dy.g, gamma.g, beta.g, mean.g, invstd.g, dx.g, dgb.g,
                                               dgb.g + c));
    pair_compare(what, dx, 1e-4, 1e-3);
    pair_compare(what, dgb, 1e-4, 1e-3);
    CHECK_OK(gpu->ops->relu_backward(gpu, y_seq.g, dy.g, g.g, count));
    CHECK_OK(gpu->ops->batchnorm_backward(gpu, &s, x.g, g.g, gamma.g, mean.g, invstd.g, dx_seq.g, dgb_seq.g,
                                          dgb_seq.g + c));
    check_repeats(what, dx_seq.g, dx.g, count);
    check_repeats(what, dgb_seq.g, dgb.g, 2 * (size_t)c);
    pair *all[] = {&x, &dy, &mean, &invstd, &gamma, &beta, &y, &y_seq, &g, &dx, &dx_seq, &dgb, &dgb_seq};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* The residual ReLU's pair of ops on n values starting `offset` floats into each tensor (offset 1:
 * not 16-byte aligned, the scalar kernels). Sums of exactly 0 in every 5th value. */
static void test_add_relu(size_t n, size_t offset) {
    const size_t total = n + offset;
    pair x0 = pair_rand(total, -1.0f, 1.0f), x1 = pair_rand(total, -1.0f, 1.0f), dy = pair_rand(total, -1.0f, 1.0f);
    float *neg = malloc(total * sizeof(float));
    if (!neg) exit(1);
    for (size_t i = 0; i < total; i++) neg[i] = i % 5 == 0 ? -x0.c[i] : x0.c[i] * 0.5f; /* the CPU's is host memory */
    pair x1z = pair_from(neg, total);
    free(neg);
    pair y = pair_out(total), dx0 = pair_out(total), dx1 = pair_out(total);
    char what[96];
    snprintf(what, sizeof what, "add+relu [%zu, offset %zu]", n, offset);
    for (int k = 0; k < 2; k++) {
        pair *second = k ? &x1z : &x1;
        CHECK_OK(cpu->ops->add_relu_forward(cpu, x0.c + offset, second->c + offset, y.c + offset, n));
        CHECK_OK(gpu->ops->add_relu_forward(gpu, x0.g + offset, second->g + offset, y.g + offset, n));
        pair_compare_exact(what, y);
    }
    CHECK_OK(cpu->ops->add_relu_backward(cpu, y.c + offset, dy.c + offset, dx0.c + offset, dx1.c + offset, n));
    CHECK_OK(gpu->ops->add_relu_backward(gpu, y.g + offset, dy.g + offset, dx0.g + offset, dx1.g + offset, n));
    pair_compare_exact(what, dx0);
    pair_compare_exact(what, dx1);
    pair dx_one = pair_out(total); /* one target: the other is not written */
    CHECK_OK(cpu->ops->add_relu_backward(cpu, y.c + offset, dy.c + offset, NULL, dx_one.c + offset, n));
    CHECK_OK(gpu->ops->add_relu_backward(gpu, y.g + offset, dy.g + offset, NULL, dx_one.g + offset, n));
    pair_compare_exact(what, dx_one);
    CHECK_OK(cpu->ops->add_relu_backward(cpu, y.c + offset, dy.c + offset, dy.c + offset, NULL, n)); /* over dy */
    CHECK_OK(gpu->ops->add_relu_backward(gpu, y.g + offset, dy.g + offset, dy.g + offset, NULL, n));
    pair_compare_exact(what, dy);
    pair *all[] = {&x0, &x1, &x1z, &dy, &y, &dx0, &dx1, &dx_one};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

int main(void) {
    if (!pair_open(&cpu, &gpu, 9500)) return bf_test_finish();
    test_case(64, 16, 1);
    test_case(8, 5, 7);
    test_case(4, 32, 64);
    test_case(16, 64, 56 * 56);
    test_add_relu(4096, 0);
    test_add_relu(4096, 1);
    test_add_relu(1001, 0);
    test_add_relu(64 * 56 * 56, 0);
    CHECK_OK(gpu->ops->synchronize(gpu));
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
