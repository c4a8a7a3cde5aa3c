/* test_flex_attention_cuda.c - the mask joint's spatial-attention logits ([model] flex_logits =
 * spatial_attention) on the GPU against the CPU:
 *   - LeakyReLU (leaky_relu_forward, leaky_relu_backward), the block's activation: bit for bit, with
 *     exact zeros, a NaN and the gradient taken over dy;
 *   - one forward and backward of a network with such a flex layer (stem conv, the block, the mask
 *     joint reading its logits, batch-norm, ReLU, fc) on both backends, with and without batch-norm
 *     on the logits and with one and two blocks: the logits, the image's gradient and every
 *     parameter's gradient (pair_compare_model_passes), so the block's tensors get theirs through the
 *     logits on the GPU as test_flex_model checks them against finite differences on the CPU.
 * Skipped (exit 77) without a CUDA build or device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bioflex/model.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;

static void test_leaky_relu(size_t n) {
    pair x = pair_rand(n, -1.0f, 1.0f), dy = pair_rand(n, -1.0f, 1.0f);
    x.c[0] = 0.0f, x.c[1] = -0.0f, x.c[2] = NAN; /* the CPU's side is host memory */
    pair x_set = pair_from(x.c, n);
    pair y = pair_out(n), dx = pair_out(n);
    char what[64];
    snprintf(what, sizeof what, "leaky_relu [%zu]", n);
    CHECK_OK(cpu->ops->leaky_relu_forward(cpu, x_set.c, y.c, n, 0.01f));
    CHECK_OK(gpu->ops->leaky_relu_forward(gpu, x_set.g, y.g, n, 0.01f));
    pair_compare_exact(what, y);
    CHECK(y.c[5] == (x_set.c[5] > 0 ? x_set.c[5] : x_set.c[5] * 0.01f) && isnan(y.c[2]),
          "%s: the CPU's forward is x > 0 ? x : 0.01 x, a NaN passing", what);
    CHECK_OK(cpu->ops->leaky_relu_backward(cpu, y.c, dy.c, dx.c, n, 0.01f));
    CHECK_OK(gpu->ops->leaky_relu_backward(gpu, y.g, dy.g, dx.g, n, 0.01f));
    pair_compare_exact(what, dx);
    CHECK_OK(cpu->ops->leaky_relu_backward(cpu, y.c, dy.c, dy.c, n, 0.01f)); /* over dy */
    CHECK_OK(gpu->ops->leaky_relu_backward(gpu, y.g, dy.g, dy.g, n, 0.01f));
    pair_compare_exact(what, dy);
    pair *all[] = {&x, &x_set, &dy, &y, &dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

static bf_model *build(bf_backend *b, bf_shape in, const bf_flex_options *opt) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 21, &m));
    if (!m) return NULL;
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 8, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_flex(m, "flex", x, 16, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f);
    x = bf_model_add_relu(m, "relu", x);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, 5, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    m = pair_finalize_model(m, in.n);
    if (m) m->step = 2;
    return m;
}

static void test_model(int logits_bn, int blocks) {
    const bf_flex_options opt = {.joint = BF_FLEX_JOINT_MASK, .channels = BF_FLEX_CHANNELS_EXPAND,
                                 .mask = BF_FLEX_MASK_SIGMOID_HARD, .mask_factor = 1, .logits_bn = logits_bn,
                                 .logits = BF_FLEX_LOGITS_SPATIAL_ATTENTION, .attention_blocks = blocks,
                                 .bn_eps = 1e-5f, .bn_momentum = 0.1f};
    const bf_shape in = {4, 3, 12, 12};
    bf_model *mc = build(cpu, in, &opt), *mg = build(gpu, in, &opt);
    if (mc && mg) {
        printf("spatial-attention logits, logits_bn %d, %d blocks:\n", logits_bn, blocks);
        pair x = pair_rand(bf_shape_count(in), -1, 1), dl = pair_rand((size_t)in.n * 5, -1, 1);
        pair_compare_model_passes(mc, mg, x, dl);
        pair_free(&x), pair_free(&dl);
    }
    bf_model_destroy(mc);
    bf_model_destroy(mg);
}

int main(void) {
    if (!pair_open(&cpu, &gpu, 4242)) return bf_test_finish();
    test_leaky_relu(1001);
    test_leaky_relu(64 * 1024);
    test_model(1, 1);
    test_model(0, 2);
    CHECK_OK(gpu->ops->synchronize(gpu));
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
