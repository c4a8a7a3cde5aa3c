/* test_pytorch_parity_flex.c - bioflex's flex layers compute what PyTorch computes (llm.c style).
 *
 * tests/fixtures/parity_flex.safetensors is written by bench/make_flex_parity_fixture.py with a
 * PyTorch Flex2D written from the specification (../shared/specs/flexnet.md 1.2-1.5, not from
 * bioflex's code), in the network
 *
 *     flex1 Flex2D(3 -> 6, k 3, s 1, p 1) -> bn BatchNorm2d(6) -> relu -> flex2 Flex2D(6 -> 4, k 3, s 2, p 1)
 *     -> gap (global average pool) -> flatten -> fc Linear(4, 5)         input [4, 3, 8, 8], K = 5
 *
 * for five variants, and two of a residual network with FlexResNet's sites (flexnet.md 2.2)
 *
 *     stem Flex2D(3 -> 8, k 3, s 1, p 1) -> bn0 -> relu0 -> trunk
 *     trunk -> conv1 Flex2D(8 -> 4, k 1) -> bn1 -> relu1 -> conv2 Flex2D(4 -> 8, k 3, s 2, p 1)
 *     trunk -> downsample Flex2D(8 -> 8, k 1, s 2)      (a 1x1 pool branch: x narrowed / subsampled)
 *     conv2 + downsample -> relu2 -> gap -> flatten -> fc Linear(8, 5)
 *
 * each under its prefix "<variant>.":
 *     max_expand     channel-wise max (torch.maximum, ties split), expand widening
 *                    (3 -> 6 block copy, 6 -> 4 tiling j % 6)
 *     max_bilinear   channel-wise max, bilinear widening (F.interpolate along the channel axis)
 *     mask_hard_bn   mask joint, SIGMOID_HARD, batch-norm on the logits, learned threshold, expand
 *     mask_mul       mask joint, SIGMOID_MUL f = 2, no logits batch-norm, learned threshold, bilinear
 *     residual_max   the residual network, channel-wise max, expand
 *     residual_mask  the residual network, mask joint, SIGMOID_HARD, logits batch-norm, expand
 *     mask_attention mask joint, SIGMOID_HARD, logits batch-norm, expand, the logits from a one-block
 *                    SpatialAttentionBlock of the layer's input ([model] flex_logits =
 *                    spatial_attention; no threshold), flex2 with stride 1 (the block keeps H x W)
 * with the initial state_dict, a batch, the logits, the label-smoothed cross-entropy, every
 * parameter gradient, the batch-norm buffers after the first forward pass (stats1.*) and the whole
 * state_dict after two SGD steps (lr 0.05, momentum 0.9; after2.*). No Python runs here.
 *
 * For each variant the test builds the same network with bf_model_add_flex etc. on the CPU
 * backend and checks that
 *   - every bioflex parameter and buffer has a tensor of the same name and shape in the fixture,
 *     and every state_dict entry of the fixture is a bioflex parameter or buffer: bioflex's flex
 *     layers have FlexNet's state_dict (flex_conv.*, threshold, bn_logits.*, spatial_attention_block.*);
 *   - from the fixture's weights, forward + loss + backward give PyTorch's logits, loss and
 *     gradients, and the running statistics of every batch-norm (bn and bn_logits) after it;
 *   - two SGD steps (each a forward + backward in train mode, as the script does) give PyTorch's
 *     parameters, running statistics and num_batches_tracked.
 * Each comparison prints its largest violation |a-b| / (atol + rtol*max(|a|,|b|)): <= 1 passes.
 *
 * The script picks a seed whose batch stays away from every kink (channel-wise max ties, the
 * corners of SIGMOID_HARD, ReLU at 0, near-ties of a computed max-pool window) in both forward
 * passes, so that fp32 rounding differences cannot switch a branch and the tight tolerances hold.
 * There is no gauge bias here (no conv bias read only by a batch-norm), and SGD moves rounding
 * noise by lr * noise only, so nothing needs the special handling of test_pytorch_parity.c. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "parity_util.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/parity_flex.safetensors"

enum { N = 4, C = 3, H = 8, W = 8, K = 5 };
static const float SMOOTHING = 0.1f;

/* fp32 on both sides, in different summation orders (im2col + sgemm here, ATen there):
 * agreement is expected to a few ulps, far inside these tolerances. */
static const double ATOL = 1e-5, RTOL = 1e-4;

static bf_parity px; /* the fixture and the backend */

typedef struct variant {
    const char *name;
    bf_flex_options opt;
    int residual; /* the residual network of FlexResNet's sites */
} variant;

/* The script's ResidualNet: stem -> bn0 -> relu0 -> [conv1 -> bn1 -> relu1 -> conv2] + downsample
 * -> relu2 -> gap -> flatten -> fc. Returns the last layer. */
static int add_residual_network(bf_model *m, const bf_flex_options *opt) {
    int x = bf_model_add_flex(m, "stem", BF_MODEL_INPUT, 8, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    x = bf_model_add_batchnorm(m, "bn0", x, 1e-5f, 0.1f);
    int trunk = bf_model_add_relu(m, "relu0", x);
    int y = bf_model_add_flex(m, "conv1", trunk, 4, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN, opt);
    y = bf_model_add_batchnorm(m, "bn1", y, 1e-5f, 0.1f);
    y = bf_model_add_relu(m, "relu1", y);
    y = bf_model_add_flex(m, "conv2", y, 8, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    int shortcut = bf_model_add_flex(m, "downsample", trunk, 8, 1, 2, 0, BF_INIT_UNIFORM_FAN_IN, opt);
    y = bf_model_add_add(m, "add", y, shortcut);
    y = bf_model_add_relu(m, "relu2", y);
    y = bf_model_add_global_avgpool(m, "gap", y);
    y = bf_model_add_flatten(m, "flatten", y);
    return bf_model_add_linear(m, "fc", y, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
}

static void run_variant(const variant *v) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.", v->name);
    printf("%s: %sjoint %s, widening %s", v->name, v->residual ? "residual network, " : "", v->opt.joint == BF_FLEX_JOINT_MAX ? "channelwise_max" : "mask",
           v->opt.channels == BF_FLEX_CHANNELS_EXPAND ? "expand" : "bilinear");
    const int attention = v->opt.joint == BF_FLEX_JOINT_MASK && v->opt.logits == BF_FLEX_LOGITS_SPATIAL_ATTENTION;
    if (v->opt.joint == BF_FLEX_JOINT_MASK)
        printf(", mask %s (factor %g), logits BN %s, %s",
               v->opt.mask == BF_FLEX_MASK_SIGMOID_HARD ? "sigmoid_hard" : "sigmoid_mul", v->opt.mask_factor,
               v->opt.logits_bn ? "on" : "off", attention ? "spatial-attention logits" : "learned threshold");
    printf("\n");

    bf_model *m = NULL;
    CHECK_OK(bf_model_create(px.backend, (bf_shape){N, C, H, W}, 1, &m));
    if (!m) return;
    if (v->residual) {
        add_residual_network(m, &v->opt);
    } else {
        int x = bf_model_add_flex(m, "flex1", BF_MODEL_INPUT, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, &v->opt);
        x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f); /* PyTorch's BatchNorm2d defaults */
        x = bf_model_add_relu(m, "relu", x);
        x = bf_model_add_flex(m, "flex2", x, 4, 3, attention ? 1 : 2, 1, BF_INIT_UNIFORM_FAN_IN, &v->opt);
        x = bf_model_add_global_avgpool(m, "gap", x);
        x = bf_model_add_flatten(m, "flatten", x);
        bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    }
    CHECK_OK(bf_model_build_status(m));
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) {
        bf_model_destroy(m);
        return;
    }
    m->training = 1;

    static const char *const derived[] = {"input", "labels", "expected.", "grad.", "stats1.", "after2."};
    bf_parity_check_names(&px, m, prefix, derived, sizeof derived / sizeof derived[0], 1);
    bf_parity_batch bt;
    bf_parity_batch_load(&px, &bt, prefix, (bf_shape){N, C, H, W}, K, SMOOTHING);
    const bf_optim_config sgd = bf_parity_sgd(0.05f, 0.9f, 0, 0);
    bf_parity_two_steps(&px, m, &bt,
                        &(bf_parity_steps){.prefix = prefix, .oc = &sgd, .check_first = 1,
                                           .loss_what = "mean label-smoothed cross-entropy", .check_stats1 = 1,
                                           .what = "sgd", .after = "after2."});
    bf_parity_batch_free(&px, &bt);
    bf_model_destroy(m);
}

int main(void) {
    px.atol = ATOL;
    px.rtol = RTOL;
    px.name_width = 48;
    if (!bf_parity_open(&px, FIXTURE, "bench/make_flex_parity_fixture.py", 1)) return bf_test_finish();

    const bf_flex_options max_expand = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND,
                                        .ties = BF_FLEX_TIE_SPLIT, .mask = BF_FLEX_MASK_SIGMOID_HARD, .mask_factor = 1,
                                        .logits_bn = 0, .threshold_mode = BF_THRESHOLD_LEARNED, .bn_eps = 1e-5f,
                                        .bn_momentum = 0.1f};
    variant variants[7] = {{"max_expand", max_expand, 0},   {"max_bilinear", max_expand, 0},
                           {"mask_hard_bn", max_expand, 0}, {"mask_mul", max_expand, 0},
                           {"residual_max", max_expand, 1}, {"residual_mask", max_expand, 1},
                           {"mask_attention", max_expand, 0}};
    variants[1].opt.channels = BF_FLEX_CHANNELS_BILINEAR;
    variants[2].opt.joint = BF_FLEX_JOINT_MASK;
    variants[2].opt.mask = BF_FLEX_MASK_SIGMOID_HARD;
    variants[2].opt.logits_bn = 1;
    variants[3].opt.joint = BF_FLEX_JOINT_MASK;
    variants[3].opt.channels = BF_FLEX_CHANNELS_BILINEAR;
    variants[3].opt.mask = BF_FLEX_MASK_SIGMOID_MUL;
    variants[3].opt.mask_factor = 2;
    variants[5].opt.joint = BF_FLEX_JOINT_MASK;
    variants[5].opt.mask = BF_FLEX_MASK_SIGMOID_HARD;
    variants[5].opt.logits_bn = 1;
    variants[6].opt = variants[2].opt;
    variants[6].opt.logits = BF_FLEX_LOGITS_SPATIAL_ATTENTION;
    variants[6].opt.attention_blocks = 1;
    for (int i = 0; i < 7; i++) run_variant(&variants[i]);

    bf_parity_close(&px);
    return bf_test_finish();
}
