/* test_bn_relu_ops.c - a batch-norm and the ReLU after it run as one layer ([model] fuse_bn_relu),
 * on the CPU backend:
 *   - batchnorm_relu_apply gives the bits of batchnorm_forward_saved then relu_forward, and
 *     batchnorm_relu_backward those of relu_backward then batchnorm_backward (dx, dgamma, dbeta),
 *     with batch-norm outputs that are exactly 0 (masked, as relu_backward masks them) and planes of
 *     1, 7 and 64 values;
 *   - whole networks (VGG-11, ResNet-18, a flex VGG-6 with a flex layer before each batch-norm)
 *     give bit-identical parameter gradients over two steps fused and unfused, and the fused plan
 *     shares one gradient buffer between each batch-norm and its ReLU;
 *   - an evaluation (not fused) gives the logits of the unfused network;
 * and a residual add and the ReLU after it as one layer ([model] fuse_add_relu):
 *   - add_relu_forward gives the bits of add then relu_forward, and add_relu_backward those of
 *     relu_backward for each summand, with sums that are exactly 0 or -0, a NaN, targets aliasing
 *     dy and one target left out;
 *   - ResNet-18, FlexResNet-20 and a V1-constrained ResNet-50 (DoG and divisive normalisation in
 *     layer1) give bit-identical gradients and evaluation logits fused and unfused, one fused add per
 *     block;
 *   - a hand-built graph whose adds sum a layer with itself and two layers whose gradients other
 *     consumers wrote first (the backward's one-summand-at-a-time path) gives the unfused gradients
 *     and input gradient, bit for bit.
 * tests/test_bn_relu_ops_cuda.c and test_ops_cuda.c hold the CUDA kernels to the same results. */
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

/* add_relu_forward and add_relu_backward against add, relu_forward and relu_backward. */
static void test_add_ops(bf_backend *b, size_t n, unsigned long seed) {
    float *x0 = bf_test_uniform(b, n, -1.0f, 1.0f, seed), *x1 = bf_test_uniform(b, n, -1.0f, 1.0f, seed + 1);
    float *dy = bf_test_uniform(b, n, -1.0f, 1.0f, seed + 2), *y_ref = bf_test_alloc(b, n), *y = bf_test_alloc(b, n);
    float *dx_ref = bf_test_alloc(b, n), *dx0 = bf_test_alloc(b, n), *dx1 = bf_test_alloc(b, n);
    x1[0] = -x0[0];                 /* a sum of exactly 0 */
    x0[1] = -0.0f, x1[1] = -0.0f;   /* -0: relu keeps it, the mask drops its gradient */
    x0[2] = NAN;                    /* a NaN passes forward, and masks its gradient */
    x0[3] = 1e-30f, x1[3] = -1e-30f;
    CHECK_OK(b->ops->add(b, x0, x1, y_ref, n));
    CHECK_OK(b->ops->relu_forward(b, y_ref, y_ref, n));
    CHECK_OK(b->ops->add_relu_forward(b, x0, x1, y, n));
    CHECK(same_bits(y, y_ref, n), "[%zu]: add_relu_forward differs from add then ReLU", n);
    CHECK(isnan(y[2]) && y[0] == 0.0f, "[%zu]: NaN passed (%g), a zero sum clamped (%g)", n, y[2], y[0]);
    CHECK_OK(b->ops->relu_backward(b, y_ref, dy, dx_ref, n));
    CHECK_OK(b->ops->add_relu_backward(b, y, dy, dx0, dx1, n));
    CHECK(same_bits(dx0, dx_ref, n) && same_bits(dx1, dx_ref, n), "[%zu]: add_relu_backward differs from ReLU backward", n);
    size_t masked = 0;
    for (size_t i = 0; i < n; i++) masked += dx_ref[i] == 0.0f;
    CHECK(masked > n / 4 && masked < n, "[%zu]: %zu of %zu gradients masked", n, masked, n);
    bf_test_fill_uniform(dx1, n, 1e3f, 2e3f, seed + 3); /* the target left out keeps its values */
    memcpy(dx0, y, n * sizeof(float));
    CHECK_OK(b->ops->add_relu_backward(b, y, dy, NULL, dx0, n));
    CHECK(same_bits(dx0, dx_ref, n), "[%zu]: add_relu_backward with summand 0 left out", n);
    memcpy(dx0, dx1, n * sizeof(float));
    CHECK_OK(b->ops->add_relu_backward(b, y, dy, dx0, NULL, n));
    CHECK(same_bits(dx0, dx_ref, n), "[%zu]: add_relu_backward with summand 1 left out", n);
    CHECK_OK(b->ops->add_relu_backward(b, y, dy, dy, dx1, n)); /* in place on dy */
    CHECK(same_bits(dy, dx_ref, n) && same_bits(dx1, dx_ref, n), "[%zu]: add_relu_backward over dy", n);
    CHECK_OK(b->ops->add_relu_forward(b, x0, x1, x0, n)); /* y over a summand */
    CHECK(same_bits(x0, y_ref, n), "[%zu]: add_relu_forward over x0", n);
    float *all[] = {x0, x1, dy, y_ref, y, dx_ref, dx0, dx1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

/* Which fusion a network run compares: a batch-norm's ReLU or a residual add's. */
typedef enum { FUSE_BN, FUSE_ADD } fusion;

/* Parameter gradients of two forward-backward steps (no update between) into grads[2], and the
 * logits of an evaluation after them into *eval; returns the parameter count. */
static size_t network_gradients(bf_arch arch, int flex, fusion which, int fuse, float **grads, float **eval) {
    enum { B = 3, S = 32, K = 10 };
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return 0;
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = arch;
    cfg.model.flex = flex;
    if (which == FUSE_BN) cfg.model.fuse_bn_relu = fuse;
    else cfg.model.fuse_add_relu = fuse;
    cfg.model.dropout = 0.0f;
    if (arch == BF_ARCH_RESNET50) cfg.model.center_surround = 1, cfg.model.divisive_norm = 1; /* V1 layers in layer1 */
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){B, 3, S, S}, K, 1, &m));
    if (!m) {
        bf_backend_destroy(b);
        return 0;
    }
    int fused = 0, adds = 0;
    const bf_layer_kind kind = which == FUSE_BN ? BF_LAYER_BATCHNORM : BF_LAYER_ADD;
    for (int i = 0; i < m->num_layers; i++) {
        fused += m->layers[i].relu_fused && m->layers[i].kind == kind;
        adds += m->layers[i].kind == BF_LAYER_ADD;
    }
    if (which == FUSE_BN)
        CHECK(fuse ? fused >= 3 : fused == 0, "%s fuse_bn_relu = %d: %d fused batch-norms", bf_arch_name(arch), fuse, fused);
    else /* every block's add runs its ReLU */
        CHECK(adds > 0 && fused == (fuse ? adds : 0), "%s fuse_add_relu = %d: %d of %d adds fused", bf_arch_name(arch),
              fuse, fused, adds);
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

static void test_network(bf_arch arch, int flex, fusion which) {
    float *plain[2] = {NULL, NULL}, *fused[2] = {NULL, NULL}, *eval_plain = NULL, *eval_fused = NULL;
    const size_t n = network_gradients(arch, flex, which, 0, plain, &eval_plain);
    const size_t n_fused = network_gradients(arch, flex, which, 1, fused, &eval_fused);
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

/* The parameter gradients and input gradient of one step of a hand-built graph into grads and
 * dinput (sizes in *n_grads, *n_input), with fuse_add_relu as given; returns the fused adds:
 *   a = conv(x), c = conv(x); r1 = relu(a + c), r2 = relu(a + c); r3 = relu(r1 + r1);
 *   r4 = relu(r3 + r2); fc(r4).
 * Backward, r2's add writes a's and c's gradients first, so r1's add finds both written (both
 * targets the one scratch buffer), and r3's add sums r1 with itself: both take the fused backward's
 * one-summand-at-a-time path. */
static int shared_summands_step(int fuse, float **grads, size_t *n_grads, float **dinput, size_t *n_input) {
    const bf_shape in = {2, 3, 5, 5};
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    bf_model *m = NULL;
    if (b) CHECK_OK(bf_model_create(b, in, 7, &m));
    if (!m) {
        bf_backend_destroy(b);
        return -1;
    }
    const int a = bf_model_add_conv(m, "a", BF_MODEL_INPUT, 4, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    const int c = bf_model_add_conv(m, "c", BF_MODEL_INPUT, 4, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    const int r1 = bf_model_add_relu(m, "r1", bf_model_add_add(m, "s1", a, c));
    const int r2 = bf_model_add_relu(m, "r2", bf_model_add_add(m, "s2", a, c));
    const int r3 = bf_model_add_relu(m, "r3", bf_model_add_add(m, "s3", r1, r1));
    const int r4 = bf_model_add_relu(m, "r4", bf_model_add_add(m, "s4", r3, r2));
    bf_model_add_linear(m, "fc", bf_model_add_flatten(m, "flatten", r4), 5, 1, BF_INIT_UNIFORM_FAN_IN,
                        BF_INIT_UNIFORM_FAN_IN);
    m->input_gradient = 1;
    m->fuse_add_relu = fuse;
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize: %s", bf_last_error());
    int fused = -1;
    if (s == BF_OK) {
        fused = 0;
        for (int i = 0; i < m->num_layers; i++) fused += m->layers[i].relu_fused;
        m->training = 1, m->batch = in.n;
        float x[2 * 3 * 5 * 5], g[2 * 5];
        bf_test_fill_uniform(x, sizeof x / sizeof x[0], -1, 1, 11);
        bf_test_fill_uniform(g, sizeof g / sizeof g[0], -1, 1, 12);
        const float *logits = NULL;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(b->ops->fill(b, m->grad_data, 0.0f, m->num_param_floats));
        CHECK_OK(bf_model_backward(m, g));
        *n_grads = m->num_param_floats, *n_input = sizeof x / sizeof x[0];
        *grads = malloc(*n_grads * sizeof(float)), *dinput = malloc(*n_input * sizeof(float));
        if (*grads) memcpy(*grads, m->grad_data, *n_grads * sizeof(float));
        if (*dinput) memcpy(*dinput, m->dinput, *n_input * sizeof(float));
    }
    bf_model_destroy(m);
    bf_backend_destroy(b);
    return fused;
}

static void test_shared_summands(void) {
    float *grads[2] = {NULL, NULL}, *dinput[2] = {NULL, NULL};
    size_t n_grads[2] = {0, 0}, n_input[2] = {0, 0};
    const int fused_off = shared_summands_step(0, &grads[0], &n_grads[0], &dinput[0], &n_input[0]);
    const int fused_on = shared_summands_step(1, &grads[1], &n_grads[1], &dinput[1], &n_input[1]);
    CHECK(fused_off == 0 && fused_on == 4, "shared summands: %d and %d fused adds (0 and 4 expected)", fused_off, fused_on);
    if (grads[0] && grads[1] && dinput[0] && dinput[1] && n_grads[0] == n_grads[1]) {
        double norm = 0;
        for (size_t i = 0; i < n_input[0]; i++) norm += fabs(dinput[0][i]);
        CHECK(norm > 0, "shared summands: the input gradient is not all zero");
        CHECK(same_bits(grads[0], grads[1], n_grads[0]) && same_bits(dinput[0], dinput[1], n_input[0]),
              "shared summands: fused gradients differ from unfused ones");
    } else {
        CHECK(0, "shared summands: no gradients to compare");
    }
    for (int k = 0; k < 2; k++) free(grads[k]), free(dinput[k]);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    test_ops(b, 16, 3, 1, 100);
    test_ops(b, 4, 5, 7, 200);
    test_ops(b, 3, 6, 64, 300);
    test_add_ops(b, 37, 400);
    test_add_ops(b, 4096 + 3, 500);
    bf_backend_destroy(b);
    test_network(BF_ARCH_VGG11, 0, FUSE_BN);
    test_network(BF_ARCH_RESNET18, 0, FUSE_BN);
    test_network(BF_ARCH_VGG6, 1, FUSE_BN);
    test_network(BF_ARCH_RESNET18, 0, FUSE_ADD);
    test_network(BF_ARCH_RESNET20, 1, FUSE_ADD);
    test_network(BF_ARCH_RESNET50, 0, FUSE_ADD);
    test_shared_summands();
    return bf_test_finish();
}
