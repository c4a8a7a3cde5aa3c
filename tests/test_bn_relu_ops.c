/* test_bn_relu_ops.c - a batch-norm and the ReLU after it run as one layer ([model] fuse_bn_relu),
 * on the CPU backend:
 *   - batchnorm_relu_apply gives the bits of batchnorm_forward_saved then relu_forward, and
 *     batchnorm_relu_backward those of relu_backward then batchnorm_backward (dx, dgamma, dbeta),
 *     with batch-norm outputs that are exactly 0 (masked, as relu_backward masks them) and planes of
 *     1, 7 and 64 values;
 *   - whole networks (VGG-11, ResNet-18, a flex VGG-6 with a flex layer before each batch-norm)
 *     give bit-identical parameter gradients over two steps fused and unfused, and the fused plan
 *     shares one gradient buffer between each batch-norm and its ReLU;
 *   - an evaluation (not fused) gives the logits of the unfused network.
 * tests/test_bn_relu_ops_cuda.c holds the CUDA kernels to the same results. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/config.h"
#include "bioflex/hash.h"
#include "bioflex/model.h"
#include "testutil.h"

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static void test_ops(bf_backend *b, int n, int c, int hw, unsigned long seed) {
    const size_t count = (size_t)n * c * hw;
    const bf_bn_shape s = {.n = n, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    float *x = bf_test_uniform(b, count, -2.0f, 2.0f, seed), *dy = bf_test_uniform(b, count, -1.0f, 1.0f, seed + 1);
    float *gamma = bf_test_uniform(b, (size_t)c, 0.5f, 1.5f, seed + 2), *beta = bf_test_uniform(b, (size_t)c, -0.5f, 0.5f, seed + 3);
    float *mean = bf_test_alloc(b, (size_t)c), *invstd = bf_test_alloc(b, (size_t)c);
    float *y_ref = bf_test_alloc(b, count), *y = bf_test_alloc(b, count), *g = bf_test_alloc(b, count);
    float *dx_ref = bf_test_alloc(b, count), *dx = bf_test_alloc(b, count);
    float *dgb_ref = bf_test_alloc(b, 2 * (size_t)c), *dgb = bf_test_alloc(b, 2 * (size_t)c);
    CHECK_OK(b->ops->batchnorm_forward_train(b, &s, x, gamma, beta, NULL, mean, invstd, NULL, NULL));
    beta[0] = 0.0f; /* channel 0: values at the mean normalise to exactly 0, which the ReLU masks */
    for (size_t i = 0; i < count; i += 5)
        if ((i / (size_t)hw) % (size_t)c == 0) x[i] = mean[0];

    CHECK_OK(b->ops->batchnorm_forward_saved(b, &s, x, gamma, beta, mean, invstd, y_ref));
    CHECK_OK(b->ops->relu_forward(b, y_ref, y_ref, count));
    bf_test_fill_uniform(y, count, 1e3f, 2e3f, seed + 4);
    CHECK_OK(b->ops->batchnorm_relu_apply(b, &s, x, gamma, beta, mean, invstd, y));
    CHECK(same_bits(y, y_ref, count), "[%d, %d, %d]: batchnorm_relu_apply differs from batch-norm then ReLU", n, c, hw);
    size_t zeros = 0;
    for (size_t i = 0; i < count; i++) zeros += y_ref[i] == 0.0f;
    CHECK(zeros > count / 4 && zeros < count, "[%d, %d, %d]: %zu of %zu outputs masked", n, c, hw, zeros, count);

    CHECK_OK(b->ops->relu_backward(b, y_ref, dy, g, count));
    CHECK_OK(b->ops->batchnorm_backward(b, &s, x, g, gamma, mean, invstd, dx_ref, dgb_ref, dgb_ref + c));
    bf_test_fill_uniform(dx, count, 1e3f, 2e3f, seed + 5);
    CHECK_OK(b->ops->batchnorm_relu_backward(b, &s, x, dy, gamma, beta, mean, invstd, dx, dgb, dgb + c));
    CHECK(same_bits(dx, dx_ref, count) && same_bits(dgb, dgb_ref, 2 * (size_t)c),
          "[%d, %d, %d]: batchnorm_relu_backward differs from ReLU then batch-norm backward", n, c, hw);
    CHECK(b->ops->batchnorm_relu_backward(b, &s, x, dy, gamma, NULL, mean, invstd, dx, NULL, NULL) == BF_ERR_ARG,
          "batchnorm_relu_backward without beta accepted");
    float *all[] = {x, dy, gamma, beta, mean, invstd, y_ref, y, g, dx_ref, dx, dgb_ref, dgb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

/* Parameter gradients of two forward-backward steps (no update between) into grads[2], and the
 * logits of an evaluation after them into *eval; returns the parameter count. */
static size_t network_gradients(bf_arch arch, int flex, int fuse, float **grads, float **eval) {
    enum { B = 3, S = 32, K = 10 };
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return 0;
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = arch;
    cfg.model.flex = flex;
    cfg.model.fuse_bn_relu = fuse;
    cfg.model.dropout = 0.0f;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){B, 3, S, S}, K, 1, &m));
    if (!m) {
        bf_backend_destroy(b);
        return 0;
    }
    int fused = 0;
    for (int i = 0; i < m->num_layers; i++) fused += m->layers[i].relu_fused;
    CHECK(fuse ? fused >= 3 : fused == 0, "%s fuse_bn_relu = %d: %d fused batch-norms", bf_arch_name(arch), fuse, fused);
    float x[B * 3 * S * S], losses[B], *dlogits = NULL;
    int32_t labels[B] = {3, 7, 1};
    CHECK_OK(bf_alloc(b, (size_t)B * K * sizeof(float), (void **)&dlogits));
    const size_t count = m->num_param_floats;
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < B * 3 * S * S; i++) x[i] = 2.0f * bf_uniform(31 + step, (uint64_t)i) - 1.0f;
        const float *logits = NULL;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(b->ops->softmax_xent(b, B, K, logits, labels, 0.0f, 1.0f / B, losses, dlogits));
        CHECK_OK(b->ops->fill(b, m->grad_data, 0.0f, count));
        CHECK_OK(bf_model_backward(m, dlogits));
        grads[step] = malloc(count * sizeof(float));
        if (grads[step]) memcpy(grads[step], m->grad_data, count * sizeof(float));
        m->step++;
    }
    m->training = 0;
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, x, &logits));
    *eval = malloc(B * K * sizeof(float));
    if (*eval && logits) memcpy(*eval, logits, B * K * sizeof(float));
    bf_free(b, dlogits);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    return count;
}

static void test_network(bf_arch arch, int flex) {
    float *plain[2] = {NULL, NULL}, *fused[2] = {NULL, NULL}, *eval_plain = NULL, *eval_fused = NULL;
    const size_t n = network_gradients(arch, flex, 0, plain, &eval_plain);
    const size_t n_fused = network_gradients(arch, flex, 1, fused, &eval_fused);
    const char *name = bf_arch_name(arch);
    CHECK(n == n_fused && n > 0, "%s: the same parameters (%zu, %zu)", name, n, n_fused);
    for (int step = 0; step < 2 && n == n_fused; step++) {
        if (!plain[step] || !fused[step]) continue;
        double norm = 0;
        for (size_t i = 0; i < n; i++) norm += fabs(plain[step][i]);
        CHECK(norm > 0, "%s step %d: the gradients are not all zero", name, step);
        CHECK(same_bits(plain[step], fused[step], n), "%s%s step %d: fused gradients differ from unfused ones", name,
              flex ? " (flex)" : "", step);
    }
    CHECK(eval_plain && eval_fused && same_bits(eval_plain, eval_fused, 30), "%s: evaluation logits differ", name);
    free(plain[0]);
    free(plain[1]);
    free(fused[0]);
    free(fused[1]);
    free(eval_plain);
    free(eval_fused);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    test_ops(b, 16, 3, 1, 100);
    test_ops(b, 4, 5, 7, 200);
    test_ops(b, 3, 6, 64, 300);
    bf_backend_destroy(b);
    test_network(BF_ARCH_VGG11, 0);
    test_network(BF_ARCH_RESNET18, 0);
    test_network(BF_ARCH_VGG6, 1);
    return bf_test_finish();
}
