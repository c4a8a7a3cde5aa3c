/* test_flex_model.c - flex layers inside a model (layer_flex.c), on the CPU backend:
 *   - FlexNet's state_dict names and the parameter count (flex VGG-16 = vanilla VGG-16), and
 *     FlexResNet's (every one of ResNet-50's 53 convs flex, one level deeper, with a bias);
 *     FlexResNet-20, the CIFAR path (21 flex convs, no max-pool);
 *   - finite-difference gradients of a residual network of flex layers at ResNet's sites (a 1x1,
 *     a strided 3x3 and a strided 1x1 downsample on the shortcut, outputs with two consumers);
 *   - finite-difference gradients of every parameter of small flex networks, for the channel-wise
 *     max (expand and bilinear widening, split ties) and for the mask joint (hard sigmoid with a
 *     learned threshold and batch-norm on the logits; sigmoid_mul with a frozen threshold),
 *     including the input gradient through both branches (a conv layer before the flex layer), and
 *     with the second flex layer at a fully_flex site (C -> C, 2x2 stride 2, no padding: a max-pool
 *     made flex);
 *   - the tie rule reaches the model's layers: on an all-zero input the conv (bias 0) and the pool
 *     tie everywhere, and the conv's bias gradient is half the output gradient (split) or zero (pool);
 *   - the conv-ratio monitor against a count made on the host;
 *   - [model] static_routing (FlexNet's MaxPrefResNet): sites fixed to their pool or conv branch by a
 *     routing file, the pool site's output against the plain ops and every parameter's gradient
 *     against finite differences, with the fused flex paths and without;
 *   - spatial-attention logits ([model] flex_logits = spatial_attention): the block's layers and
 *     tensor names, no threshold, the gradients of every parameter (the block's included) against
 *     finite differences with and without batch-norm on the logits and with zero and two blocks,
 *     and a strided flex layer refused naming the key. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "layers.h"
#include "testutil.h"

enum { N = 3, C = 2, H = 6, K = 4 };

static int find_param(const bf_model *m, const char *name) {
    for (int i = 0; i < m->num_params; i++)
        if (!strcmp(m->params[i].name, name)) return i;
    return -1;
}

static int find_buffer(const bf_model *m, const char *name) {
    for (int i = 0; i < m->num_buffers; i++)
        if (!strcmp(m->buffers[i].name, name)) return i;
    return -1;
}

static void test_names_and_counts(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_VGG16;
    cfg.model.flex = 1;
    cfg.model.fuse_flex_bn = 0; /* the exact count below; with it, after */
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 100, 1, &m));
    if (!m) return;
    CHECK(m->num_param_floats == 134678692, "flex VGG-16 (channel-wise max) has vanilla's 134,678,692 parameters, got %zu",
          m->num_param_floats);
    CHECK(find_param(m, "features.0.flex_conv.weight") >= 0 && find_param(m, "features.0.flex_conv.bias") >= 0 &&
              find_param(m, "features.40.flex_conv.weight") >= 0 && find_param(m, "features.41.running_var") < 0 &&
              find_buffer(m, "features.41.running_var") >= 0,
          "FlexNet state_dict names (features.N.flex_conv.weight)");

    /* Memory: what flex adds to vanilla VGG-16's plan is, per flex layer, a window byte per pooled
     * element, a winner and a tie bit per output element and the monitors: no copy of C, P or an int32 argmax
     * (layer_flex.c); the backward writes dC over dy and scatters the pool's share straight into
     * dx (with fuse_flex_scatter = false its dP lies over dead activations, as the gradients do:
     * memory_plan.c; test_model checks that plan). */
    bf_model *vanilla = NULL;
    cfg.model.flex = 0;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 100, 1, &vanilla));
    cfg.model.flex = 1;
    if (vanilla) {
        size_t expect = 0;
        for (int i = 0; i < m->num_layers; i++) {
            const bf_layer *l = &m->layers[i];
            if (l->kind != BF_LAYER_FLEX) continue;
            const size_t pooled = (size_t)l->flex.n * l->flex.c_in * l->flex.hw;
            const size_t words = ((size_t)l->flex.n * l->flex.c_out * l->flex.hw + 31) / 32;
            expect += bf_arena_align(4 * sizeof(float)) + bf_arena_align(pooled) + 2 * bf_arena_align(words * 4);
        }
        CHECK(m->arena_bytes - vanilla->arena_bytes == expect,
              "flex VGG-16 plans %zu bytes more than vanilla, want %zu (window bytes, winner and tie bits)",
              m->arena_bytes - vanilla->arena_bytes, expect);
        bf_model_destroy(vanilla);
    }
    /* [model] fuse_flex_bn: each batch-norm after a flex layer (the first's too: its input needs no
     * gradient, so its flex layer applies the dx in its route alone) keeps 2c floats of
     * coefficients, and the flex output's gradient is the batch-norm's: the plan grows by the
     * coefficients at most */
    cfg.model.fuse_flex_bn = 1;
    bf_model *fused = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 100, 1, &fused));
    if (fused) {
        size_t coef = 0;
        int joined = 0, stats = 0;
        for (int i = 0; i < fused->num_layers; i++) {
            if (fused->layers[i].bn_in_flex) {
                coef += bf_arena_align(2 * (size_t)fused->layers[i].bn.c * sizeof(float));
                joined++;
            }
            stats += fused->layers[i].bn_stats_in_flex && fused->layers[i - 1].flex_gives_bn_stats;
        }
        /* [model] fuse_flex_bn_stats (the default): every flex layer takes its batch-norm's statistics */
        CHECK(stats == 13, "flex VGG-16: %d of 13 batch-norms take their statistics from their flex layer", stats);
        CHECK(joined == 13 && fused->arena_bytes <= m->arena_bytes + coef,
              "flex VGG-16 with fuse_flex_bn: %d batch-norms applied by their flex layers (want 13), %zu bytes "
              "planned against %zu + %zu of coefficients", joined, fused->arena_bytes, m->arena_bytes, coef);
        bf_model_destroy(fused);
    }
    /* [run] flex_kernels = slide: the plan gives every flex layer's backward its dC beside dy (the
     * sliding route reads dy across its items), also when planning without a device (--dry-run) */
    cfg.model.flex_kernels = 1;
    bf_model *slide = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 100, 1, &slide));
    cfg.model.flex_kernels = 0;
    if (slide) {
        int apart = 0, flex_layers = 0;
        size_t scratch_ok = 0;
        for (int i = 0; i < slide->num_layers; i++) {
            const bf_layer *l = &slide->layers[i];
            if (l->kind != BF_LAYER_FLEX) continue;
            flex_layers++;
            apart += l->flex_dconv_apart;
            scratch_ok += bf_flex_backward_scratch_floats(slide, i) == (size_t)l->flex.n * l->flex.c_out * l->flex.hw;
        }
        CHECK(flex_layers == 13 && apart == 13 && scratch_ok == 13 && slide->arena_bytes >= m->arena_bytes,
              "flex_kernels = slide: %d of %d flex layers with dC apart, %zu with a dC scratch; plan %zu bytes "
              "against %zu", apart, flex_layers, scratch_ok, slide->arena_bytes, m->arena_bytes);
        bf_model_destroy(slide);
    }
    bf_model_destroy(m);

    /* per layer: flex_layers = 0, 3 makes the first and the fourth conv flex, the others plain */
    cfg.model.arch = BF_ARCH_VGG11;
    cfg.model.flex_layers[0] = 0;
    cfg.model.flex_layers[1] = 3;
    cfg.model.num_flex_layers = 2;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 32, 32}, 10, 1, &m));
    if (m) {
        int site = 0, ok = 1;
        for (int i = 0; i < m->num_layers; i++) {
            bf_layer_kind k = m->layers[i].kind;
            if (k != BF_LAYER_CONV && k != BF_LAYER_FLEX) continue;
            ok &= (k == BF_LAYER_FLEX) == (site == 0 || site == 3);
            site++;
        }
        CHECK(ok && site == 8, "flex_layers = 0, 3: only convs 0 and 3 of VGG-11's 8 are flex");
        bf_model_destroy(m);
    }
    /* with fully_flex the pools become flex too, but flex_layers still counts convs: conv 1 is
     * features.4 of the CNN (conv, BN, ReLU, pool, conv...), conv 0 stays plain */
    cfg.model.arch = BF_ARCH_CNN;
    cfg.model.fully_flex = 1;
    cfg.model.flex_layers[0] = 1;
    cfg.model.num_flex_layers = 1;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 1, 28, 28}, 10, 1, &m));
    if (m) {
        CHECK(m->layers[0].kind == BF_LAYER_CONV && m->layers[3].kind == BF_LAYER_FLEX && m->layers[3].flex_pool_site &&
                  m->layers[4].kind == BF_LAYER_FLEX && !m->layers[4].flex_pool_site,
              "fully_flex with flex_layers = 1: conv 0 plain, pools flex, conv 1 (features.4) flex");
        bf_model_destroy(m);
    }
    /* what would be ignored is refused: a conv past the last, fully_flex without pools (FlexResNet:
     * test_flex_resnet50) */
    cfg.model.fully_flex = 0;
    cfg.model.flex_layers[0] = 2;
    CHECK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 1, 28, 28}, 10, 1, &m) == BF_ERR_CONFIG &&
              strstr(bf_last_error(), "flex_layers names conv 2, but cnn has 2 convs"),
          "flex_layers = 2 on a 2-conv CNN is refused (got: %s)", bf_last_error());
    cfg.model.num_flex_layers = 0;
    cfg.model.arch = BF_ARCH_PF_VGG6;
    cfg.model.fully_flex = 1;
    CHECK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 1, 28, 28}, 10, 1, &m) == BF_ERR_CONFIG &&
              strstr(bf_last_error(), "no max-pools"),
          "fully_flex on plasticflex_vgg6 (no max-pools) is refused (got: %s)", bf_last_error());
    cfg.model.fully_flex = 0;
    cfg.model.num_flex_layers = 0;
    cfg.model.arch = BF_ARCH_VGG16;

    cfg.model.flex_joint = BF_FLEX_JOINT_MASK;
    cfg.model.flex_logits_bn = 1;
    cfg.model.fully_flex = 1;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 32, 32}, 10, 1, &m));
    if (!m) return;
    int t = find_param(m, "features.0.threshold");
    CHECK(t >= 0 && m->params[t].shape[0] == 64 && m->params[t].shape[1] == 32 && m->params[t].shape[2] == 32,
          "mask joint: a learned threshold [64, 32, 32]");
    CHECK(find_param(m, "features.0.bn_logits.weight") >= 0 && find_buffer(m, "features.0.bn_logits.running_mean") >= 0,
          "mask joint with logits batch-norm: bn_logits.*");
    CHECK(find_param(m, "features.6.flex_conv.weight") >= 0 && m->params[find_param(m, "features.6.flex_conv.weight")].shape[2] == 2,
          "fully_flex: the first 2x2 max-pool is a flex layer with a 2x2 conv");
    bf_model_destroy(m);
}

/* FlexResNet (flexnet.md 2.2): with flex every conv of ResNet-50 is a flex layer, 53 of them, named
 * one level deeper (conv1.layer.flex_conv.weight) with a bias each; the BNs keep their names. */
static void test_flex_resnet50(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_RESNET50;
    cfg.model.flex = 1;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 1000, 1, &m));
    if (!m) return;
    int flex = 0, convs = 0;
    for (int i = 0; i < m->num_layers; i++) flex += m->layers[i].kind == BF_LAYER_FLEX, convs += m->layers[i].kind == BF_LAYER_CONV;
    /* vanilla's 25,557,032 plus a bias per output channel of every conv: 64 (stem) + 1,408 + 3,584
     * + 10,240 + 11,264 (the four stages, downsamples included) = 26,560 */
    CHECK(flex == 53 && convs == 0 && m->num_param_floats == 25557032 + 26560,
          "flex ResNet-50: %d flex layers, %d convs, %zu parameters (expected 53, 0, %d)", flex, convs,
          m->num_param_floats, 25557032 + 26560);
    CHECK(find_param(m, "conv1.layer.flex_conv.weight") >= 0 && find_param(m, "conv1.layer.flex_conv.bias") >= 0 &&
              find_param(m, "layer1.0.conv1.layer.flex_conv.weight") >= 0 &&
              find_param(m, "layer4.0.downsample.0.layer.flex_conv.bias") >= 0 &&
              find_param(m, "layer4.2.conv3.layer.flex_conv.weight") >= 0 && find_param(m, "layer1.0.bn1.weight") >= 0 &&
              find_param(m, "fc.weight") >= 0,
          "FlexResNet state_dict names (layer1.0.conv1.layer.flex_conv.weight)");
    int bias = find_param(m, "layer2.0.downsample.0.layer.flex_conv.bias"), weight = find_param(m, "conv1.layer.flex_conv.weight");
    CHECK(bias >= 0 && weight >= 0 && m->params[bias].init == BF_INIT_UNIFORM_FAN_IN &&
              m->params[weight].init == BF_INIT_KAIMING_NORMAL_FAN_OUT,
          "FlexResNet init as torchvision's ResNet: Kaiming-normal fan-out weights, nn.Conv2d's default biases");
    bf_model_destroy(m);
    m = NULL;
    /* conv_init = fan_in: the reference's RunLoader on every conv, flex or plain (flexnet.md 1.6) */
    cfg.model.conv_init_fan_in = 1;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 1000, 1, &m));
    if (m) {
        bias = find_param(m, "layer2.0.downsample.0.layer.flex_conv.bias");
        weight = find_param(m, "conv1.layer.flex_conv.weight");
        CHECK(bias >= 0 && weight >= 0 && m->params[bias].init == BF_INIT_ZEROS &&
                  m->params[weight].init == BF_INIT_KAIMING_NORMAL_FAN_IN,
              "FlexResNet with conv_init = fan_in: Kaiming-normal fan-in weights, zero biases");
        bf_model_destroy(m);
        m = NULL;
    }
    cfg.model.flex = 0;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 1000, 1, &m));
    if (m) {
        weight = find_param(m, "layer3.1.conv2.weight");
        CHECK(weight >= 0 && m->params[weight].init == BF_INIT_KAIMING_NORMAL_FAN_IN,
              "ResNet-50 with conv_init = fan_in: Kaiming-normal fan-in conv weights");
        bf_model_destroy(m);
    }
    cfg.model.flex = 1;
    cfg.model.conv_init_fan_in = 0;
    cfg.model.fully_flex = 1;
    CHECK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 224, 224}, 1000, 1, &m) == BF_ERR_CONFIG &&
              strstr(bf_last_error(), "fully_flex"),
          "fully_flex on a ResNet (no 2x2 max-pools) is refused: %s", bf_last_error());
}

static double loss_of(bf_model *m, const float *x, const int32_t *labels, float *losses) {
    const float *logits = NULL;
    if (bf_model_forward(m, x, &logits) != BF_OK) return NAN;
    m->backend->ops->softmax_xent(m->backend, N, K, logits, labels, 0.0f, 1.0f / N, losses, NULL);
    double s = 0;
    for (int i = 0; i < N; i++) s += losses[i];
    return s / N;
}

/* Forward, loss and backward at (xh, labels) with the model's step fixed, then every parameter's
 * gradient against central differences of step h; where the one-sided differences disagree a max, a
 * ReLU or a routing switched inside the step (a kink) and the parameter is skipped. */
static void check_model_gradients_step(bf_model *m, const float *xh, const int32_t *labels, const char *label,
                                       int min_checked, float h) {
    bf_backend *b = m->backend;
    float losses[N], dlogits[N * K];
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, xh, &logits));
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    CHECK_OK(bf_model_backward(m, dlogits));
    float *grads = bf_test_download(b, m->grad_data, m->num_param_floats);
    double l0 = loss_of(m, xh, labels, losses);
    int checked = 0, bad = 0, kinks = 0;
    for (size_t i = 0; grads && i < m->num_param_floats; i++) {
        float saved = m->param_data[i];
        m->param_data[i] = saved + h;
        double lp = loss_of(m, xh, labels, losses);
        m->param_data[i] = saved - h;
        double lm = loss_of(m, xh, labels, losses);
        m->param_data[i] = saved;
        double numeric = (lp - lm) / (2 * h), fwd = (lp - l0) / h, bwd = (l0 - lm) / h;
        double tol = 1e-3 + 2e-2 * fabs(grads[i]);
        if (fabs(fwd - bwd) > 2 * tol) {
            kinks++;
            continue;
        }
        checked++;
        if (fabs(numeric - grads[i]) > tol && bad++ < 5)
            fprintf(stderr, "%s: param %zu: numeric %.6g analytic %.6g\n", label, i, numeric, grads[i]);
    }
    printf("%s: %d parameters checked, %d skipped at kinks\n", label, checked, kinks);
    CHECK(checked > min_checked && kinks < checked / 10, "%s: %d checked, %d kinks", label, checked, kinks);
    CHECK(bad == 0, "%s: %d of %d parameter gradients disagree with finite differences", label, bad, checked);
    free(grads);
}

/* The step of most networks here: 5e-4 (with 1e-3 the mask network at the fully_flex site moved one
 * hard-sigmoid logit across its clamp inside the step in a way the one-sided difference test does
 * not see). */
static void check_model_gradients(bf_model *m, const float *xh, const int32_t *labels, const char *label,
                                  int min_checked) {
    check_model_gradients_step(m, xh, labels, label, min_checked, 5e-4f);
}

/* conv -> flex -> BN -> ReLU -> flex(stride 2) -> GAP -> linear; FD over every parameter. The second
 * flex layer is a 3x3 stride-2 conv site (6 -> 4 channels), or with pool_site & 1 the 2x2 stride-2
 * site with which fully_flex replaces a max-pool (6 -> 6 channels, no padding). pool_site & 2: no
 * BN, so the ReLU reads the first flex layer's output and runs in place over it (nothing in a flex
 * layer's backward reads its output: the max joint's ties are bits). */
static void check_gradients(const char *label, const bf_flex_options *opt, int pool_site) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 11, &m));
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 3, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_flex(m, "flex1", x, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    if (!(pool_site & 2)) x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f);
    const int relu = x = bf_model_add_relu(m, "relu", x);
    if (pool_site & 1)
        x = bf_model_add_flex(m, "flex2", x, 6, 2, 2, 0, BF_INIT_UNIFORM_FAN_IN, opt);
    else
        x = bf_model_add_flex(m, "flex2", x, 4, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) return;
    CHECK(m->layers[relu].in_place, "%s: the ReLU runs in place over its input", label);

    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 5);
    int32_t labels[N] = {0, 2, 3};
    float losses[N];
    const float *logits = NULL;
    m->step = 3;
    check_model_gradients(m, xh, labels, label, 100);

    if (opt->joint == BF_FLEX_JOINT_MAX) {
        /* conv ratio of flex1 over the forward passes since the last reset, against a host count */
        double ratio[4], homogeneity[4];
        const char *names[4];
        bf_model_flex_monitor(m, ratio, homogeneity, names, 4); /* reset */
        CHECK_OK(bf_model_forward(m, xh, &logits));
        /* the branches recomputed from flex1's input (the stem's output) with the plain ops */
        const bf_layer *f = &m->layers[1];
        size_t elems = (size_t)N * f->flex.c_out * f->flex.hw, pooled = (size_t)N * f->flex.c_in * f->flex.hw, wins = 0;
        bf_conv2d_shape cs = f->conv;
        bf_pool_shape ps = f->pool;
        cs.n = ps.n = N;
        float *conv = malloc(elems * sizeof(float)), *pool = malloc(pooled * sizeof(float));
        int32_t *argmax = malloc(pooled * sizeof(int32_t));
        CHECK_OK(b->ops->conv2d_forward(b, &cs, m->layers[0].out, m->param_data + m->params[f->param_index[0]].offset,
                                        m->param_data + m->params[f->param_index[1]].offset, conv));
        CHECK_OK(b->ops->maxpool_forward(b, &ps, m->layers[0].out, pool, argmax));
        int ratio_per = f->flex.c_out / f->flex.c_in; /* 3 -> 6: block copy, channel j from j/2 */
        for (int n = 0; n < N; n++)
            for (int j = 0; j < f->flex.c_out; j++)
                for (int p = 0; p < f->flex.hw; p++) {
                    float c = conv[((size_t)n * f->flex.c_out + j) * f->flex.hw + p];
                    float w = pool[((size_t)n * f->flex.c_in + j / ratio_per) * f->flex.hw + p];
                    wins += c > w;
                }
        free(conv), free(pool), free(argmax);
        int nf = bf_model_flex_monitor(m, ratio, homogeneity, names, 4);
        CHECK(nf == 2 && homogeneity[0] == 1.0, "%s: a channel-wise max is binary (homogeneity 1)", label);
        if (opt->channels == BF_FLEX_CHANNELS_EXPAND)
            CHECK(nf == 2 && !strcmp(names[0], "flex1") && fabs(ratio[0] - (double)wins / elems) < 1e-9,
                  "%s: conv ratio of flex1 %.6f, host count %.6f", label, nf ? ratio[0] : -1, (double)wins / elems);
    }
    if (opt->joint == BF_FLEX_JOINT_MASK) {
        /* the mask statistics of the last training batch, against a host count */
        double ratio[4], homogeneity[4];
        const char *names[4];
        CHECK_OK(bf_model_forward(m, xh, &logits));
        /* flex1's mask rebuilt here with the plain ops from its input, T, C and (with BN) the saved
         * batch statistics: the layer keeps no mask, the monitor computes it again */
        const bf_layer *f = &m->layers[1];
        size_t elems = (size_t)N * f->flex.c_out * f->flex.hw, pooled = (size_t)N * f->flex.c_in * f->flex.hw;
        bf_pool_shape ps = f->pool;
        bf_flex_shape fs = f->flex;
        ps.n = fs.n = N;
        float *P = malloc(pooled * sizeof(float)), *W = malloc(elems * sizeof(float)), *L = malloc(elems * sizeof(float));
        float *M = malloc(elems * sizeof(float)), *Y = malloc(elems * sizeof(float));
        int32_t *argmax = malloc(pooled * sizeof(int32_t));
        const float *T = f->param_index[2] >= 0 ? m->param_data + m->params[f->param_index[2]].offset
                                                : m->buffer_data + m->buffers[f->buffer_index[2]].offset;
        CHECK_OK(b->ops->maxpool_forward(b, &ps, m->layers[0].out, P, argmax));
        CHECK_OK(b->ops->flex_widen_forward(b, &fs, P, W));
        CHECK_OK(b->ops->flex_logits_forward(b, &fs, W, T, L));
        float *Lbn = malloc(elems * sizeof(float));
        if (opt->logits_bn) { /* with the statistics the training forward saved */
            bf_bn_shape bs = f->bn;
            bs.n = N;
            CHECK_OK(b->ops->batchnorm_forward_saved(b, &bs, L, m->param_data + m->params[f->param_index[3]].offset,
                                                     m->param_data + m->params[f->param_index[4]].offset,
                                                     f->save_mean, f->save_invstd, Lbn));
        }
        CHECK_OK(b->ops->flex_mask_forward(b, &fs, opt->mask, opt->mask_factor, bf_layer_draws(m, 1),
                                           opt->logits_bn ? Lbn : L, f->flex_conv, W, M, Y, NULL));
        free(Lbn);
        double chosen = 0, binary = 0;
        for (size_t i = 0; i < elems; i++) {
            chosen += M[i] > 0.5f;
            binary += fabs(M[i] - 0.5) * 2;
        }
        CHECK(memcmp(Y, f->out, elems * sizeof(float)) == 0, "%s: the rebuilt mask gives flex1's output", label);
        free(P), free(W), free(L), free(M), free(Y), free(argmax);
        /* an optimiser step between the forward and the monitor (as in training) must not change
         * what it reports: the statistics are of the forward's mask */
        float *params = bf_test_download(b, m->param_data, m->num_param_floats);
        float *buffers = bf_test_download(b, m->buffer_data, m->num_buffer_floats);
        for (size_t i = 0; i < m->num_param_floats; i++) m->param_data[i] += 0.25f;
        for (size_t i = 0; i < m->num_buffer_floats; i++) m->buffer_data[i] += 0.25f; /* a frozen threshold too */
        int nf = bf_model_flex_monitor(m, ratio, homogeneity, names, 4);
        if (params) memcpy(m->param_data, params, m->num_param_floats * sizeof(float));
        if (buffers) memcpy(m->buffer_data, buffers, m->num_buffer_floats * sizeof(float));
        free(params), free(buffers);
        CHECK(nf == 2 && fabs(ratio[0] - chosen / elems) < 1e-6 && fabs(homogeneity[0] - binary / elems) < 1e-5,
              "%s: mask conv ratio %.6f (host %.6f), homogeneity %.6f (host %.6f)", label, nf ? ratio[0] : -1,
              chosen / elems, nf ? homogeneity[0] : -1, binary / elems);
    }
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* stem flex 3x3 -> BN -> ReLU (two consumers) -> [branch: flex 1x1 -> BN -> ReLU -> flex 3x3 stride 2]
 * + [shortcut: flex 1x1 stride 2] -> ReLU -> GAP -> linear: ResNet's flex sites, FD over every
 * parameter. */
static void check_residual_gradients(const char *label, const bf_flex_options *opt) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 13, &m));
    int x = bf_model_add_flex(m, "stem", BF_MODEL_INPUT, 4, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    x = bf_model_add_batchnorm(m, "stem_bn", x, 1e-5f, 0.1f);
    int trunk = bf_model_add_relu(m, "stem_relu", x);
    int y = bf_model_add_flex(m, "conv1", trunk, 8, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN, opt);
    y = bf_model_add_batchnorm(m, "bn1", y, 1e-5f, 0.1f);
    y = bf_model_add_relu(m, "relu1", y);
    y = bf_model_add_flex(m, "conv2", y, 8, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    int shortcut = bf_model_add_flex(m, "downsample", trunk, 8, 1, 2, 0, BF_INIT_UNIFORM_FAN_IN, opt);
    y = bf_model_add_add(m, "add", y, shortcut);
    y = bf_model_add_global_avgpool(m, "gap", y);
    y = bf_model_add_flatten(m, "flatten", y);
    bf_model_add_linear(m, "fc", y, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) return;
    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 9);
    int32_t labels[N] = {1, 0, 3};
    m->step = 2;
    check_model_gradients(m, xh, labels, label, 200);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* flex -> GAP -> linear on an all-zero input, with the flex conv's bias 0: conv and pool are 0 at every
 * element, a tie everywhere. Split ties give the conv branch half of each output gradient, so its bias
 * gradient is half the sum of the flex output's gradient per channel; ties to the pool give it none. */
static void test_ties(bf_flex_tie_rule ties) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 11, &m));
    bf_flex_options opt = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND, .ties = ties};
    int x = bf_model_add_flex(m, "flex", BF_MODEL_INPUT, 4, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) return;
    int bias = find_param(m, "flex.flex_conv.bias"), fc_w = find_param(m, "fc.weight");
    CHECK(bias >= 0 && fc_w >= 0, "flex.flex_conv.bias and fc.weight exist");
    if (bias < 0 || fc_w < 0) return;
    memset(m->param_data + m->params[bias].offset, 0, 4 * sizeof(float));
    static float zeros[N * C * H * H];
    int32_t labels[N] = {0, 2, 3};
    float losses[N], dlogits[N * K];
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, zeros, &logits));
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    CHECK_OK(bf_model_backward(m, dlogits));
    /* the flex output's gradient, summed over its H*H positions per channel: the GAP spreads
     * dlogits . fc.weight[:, c] evenly over them, so the sum is that product itself */
    const float *w = m->param_data + m->params[fc_w].offset, *g = m->grad_data + m->params[bias].offset;
    int wrong = 0;
    double largest = 0;
    for (int c = 0; c < 4; c++) {
        double dy = 0;
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) dy += dlogits[n * K + k] * w[k * 4 + c];
        double expected = ties == BF_FLEX_TIE_SPLIT ? 0.5 * dy : 0.0;
        wrong += fabs(g[c] - expected) > 1e-6 + 1e-4 * fabs(expected);
        largest = fmax(largest, fabs(expected));
    }
    CHECK(wrong == 0 && (ties == BF_FLEX_TIE_POOL || largest > 1e-3),
          "ties = %s: the conv bias gradient is %s the output gradient at a tie everywhere (%d of 4 channels differ)",
          ties == BF_FLEX_TIE_SPLIT ? "split" : "pool", ties == BF_FLEX_TIE_SPLIT ? "half" : "none of", wrong);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* threshold_mode = resample_each_forward: a new U(+-sqrt(6/(C*H*W))) threshold at every step */
static void test_resampled_threshold(const bf_flex_options *opt) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 3, &m));
    int x = bf_model_add_flex(m, "flex1", BF_MODEL_INPUT, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    x = bf_model_add_global_avgpool(m, "gap", x);
    bf_model_add_flatten(m, "flatten", x);
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) return;
    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 4);
    const float *logits = NULL;
    const bf_layer *f = &m->layers[0];
    const float *t = m->buffer_data + m->buffers[f->buffer_index[2]].offset;
    size_t count = (size_t)f->flex.c_out * f->flex.hw;
    float bound = sqrtf(6.0f / (float)count), *first = malloc(count * sizeof(float));
    m->step = 1;
    CHECK_OK(bf_model_forward(m, xh, &logits));
    memcpy(first, t, count * sizeof(float));
    m->step = 2;
    CHECK_OK(bf_model_forward(m, xh, &logits));
    int within = 1, differs = 0;
    double mean = 0;
    for (size_t i = 0; i < count; i++) {
        within &= fabsf(first[i]) <= bound && fabsf(t[i]) <= bound;
        differs += first[i] != t[i];
        mean += first[i] / count;
    }
    CHECK(within && differs > (int)count / 2 && fabs(mean) < bound / 3,
          "resampled threshold: within +-%.3f, redrawn at the next step (%d of %zu differ), mean %.4f", bound, differs,
          count, mean);
    free(first);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* stem conv -> flex 3->6 (block copy) -> ReLU -> flex 6->6 2x2/2 -> flex 6->4 3x3/2 (tiling that
 * narrows: pooled channels 4 and 5 untapped) -> GAP -> linear, with the model's fuse_flex_scatter as
 * given. */
/* scatter: [model] fuse_flex_scatter; flex_bn: [model] fuse_flex_bn and fuse_flex_bn_stats (bn1 runs
 * its ReLU, bn2 none); stem 0: no stem, flex1 (2->6) reads the image, so it has no input gradient and
 * applies bn1's dx in its route alone (flex_pool_max_backward_bn) */
static bf_model *route_scatter_net(bf_backend *b, int scatter, int flex_bn, bf_flex_tie_rule ties, int stem) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 11, &m));
    if (!m) return NULL;
    m->fuse_flex_scatter = scatter;
    m->fuse_flex_bn = flex_bn;
    m->fuse_flex_bn_stats = flex_bn;
    bf_flex_options opt = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND, .ties = ties};
    int x = stem ? bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 3, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN)
                 : BF_MODEL_INPUT;
    x = bf_model_add_flex(m, "flex1", x, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_batchnorm(m, "bn1", x, 1e-5f, 0.1f);
    x = bf_model_add_relu(m, "relu", x);
    x = bf_model_add_flex(m, "flex2", x, 6, 2, 2, 0, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_batchnorm(m, "bn2", x, 1e-5f, 0.1f);
    x = bf_model_add_flex(m, "flex3", x, 4, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    return m;
}

/* [model] fuse_flex_scatter: the max joint's route and scatter in one op, then the conv's
 * backward-data added (flex_pool_max_backward_scatter, conv2d_backward_data_add), against the
 * route, the conv's backward-data and the scatter-add: every gradient bit for bit on the CPU (the
 * input's gradient sums the same two terms), inputs in multiples of 1/8 so that ties occur; and
 * the fused layers need no dP scratch. With [model] fuse_flex_bn too (the default) the batch-norms
 * after flex1 (with its ReLU) and flex2 (without) apply their dx inside the flex backward
 * (flex_pool_max_backward_scatter_bn), and with [model] fuse_flex_bn_stats their statistics come
 * from the flex forward (flex_pool_max_forward_bn_stats): the same bits again, the batch-norms'
 * running statistics too. */
static void test_route_scatter_same_bits(bf_flex_tie_rule ties, int stem) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    bf_model *fused = route_scatter_net(b, 1, 1, ties, stem), *separate = route_scatter_net(b, 0, 0, ties, stem);
    bf_model *bn_apart = route_scatter_net(b, 1, 0, ties, stem);
    if (fused && separate && bn_apart && fused->param_data && separate->param_data && bn_apart->param_data) {
        static float xh[N * C * H * H];
        for (int i = 0; i < N * C * H * H; i++) xh[i] = (float)((i * 7) % 17 - 8) / 8.0f;
        for (size_t i = 0; i < fused->num_param_floats; i++) /* multiples of 1/8: ties between the branches */
            fused->param_data[i] = separate->param_data[i] = (float)((int)(i * 5 % 9) - 4) / 8.0f;
        /* each flex conv copies its tapped input channel's window corner ((k-1)/2 each way), times
         * 1 or 9/8 by output channel, bias 0: C ties with the window's maximum wherever the corner
         * holds it */
        static const char *flex_names[] = {"flex1", "flex2", "flex3"};
        for (int f = 0; f < 3; f++) {
            char name[64];
            snprintf(name, sizeof name, "%s.flex_conv.weight", flex_names[f]);
            const int wi = find_param(fused, name);
            snprintf(name, sizeof name, "%s.flex_conv.bias", flex_names[f]);
            const int bi = find_param(fused, name);
            const bf_layer *l = &fused->layers[wi >= 0 ? fused->params[wi].layer : 0];
            CHECK(wi >= 0 && bi >= 0 && l->kind == BF_LAYER_FLEX, "%s's conv weight and bias", flex_names[f]);
            if (wi < 0 || bi < 0) continue;
            const int c_in = l->flex.c_in, c_out = l->flex.c_out, k = l->conv.k_h, centre = (k - 1) / 2;
            float *w = fused->param_data + fused->params[wi].offset;
            memset(w, 0, (size_t)c_out * c_in * k * k * sizeof(float));
            memset(fused->param_data + fused->params[bi].offset, 0, (size_t)c_out * sizeof(float));
            for (int j = 0; j < c_out; j++) {
                const int i = c_out % c_in == 0 ? j / (c_out / c_in) : j % c_in;
                w[(((size_t)j * c_in + i) * k + centre) * k + centre] = j % 2 ? 1.125f : 1.0f;
            }
        }
        memcpy(separate->param_data, fused->param_data, fused->num_param_floats * sizeof(float));
        memcpy(bn_apart->param_data, fused->param_data, fused->num_param_floats * sizeof(float));
        int32_t labels[N] = {0, 2, 3};
        bf_model *models[3] = {fused, separate, bn_apart};
        int joined = 0;
        for (int i = 0; i < fused->num_layers; i++) joined += fused->layers[i].bn_in_flex && !bn_apart->layers[i].bn_in_flex;
        CHECK(joined == 2, "fuse_flex_bn: bn1 and bn2 applied by their flex layers (%d)", joined);
        int stats_joined = 0;
        for (int i = 0; i < fused->num_layers; i++)
            stats_joined += fused->layers[i].bn_stats_in_flex && fused->layers[i - 1].flex_gives_bn_stats &&
                            !separate->layers[i].bn_stats_in_flex;
        CHECK(stats_joined == 2, "fuse_flex_bn_stats: bn1's and bn2's statistics from their flex layers (%d)",
              stats_joined);
        for (int k = 0; k < 3; k++) {
            float losses[N], dlogits[N * K];
            const float *logits = NULL;
            CHECK_OK(bf_model_forward(models[k], xh, &logits));
            CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
            CHECK_OK(bf_model_backward(models[k], dlogits));
        }
        size_t differ = 0, nonzero = 0;
        for (size_t i = 0; i < fused->num_param_floats; i++) {
            differ += memcmp(&fused->grad_data[i], &separate->grad_data[i], sizeof(float)) != 0;
            differ += memcmp(&bn_apart->grad_data[i], &separate->grad_data[i], sizeof(float)) != 0;
            nonzero += fused->grad_data[i] != 0.0f;
        }
        size_t buffers_differ = 0;
        for (size_t i = 0; i < fused->num_buffer_floats; i++)
            buffers_differ += memcmp(&fused->buffer_data[i], &separate->buffer_data[i], sizeof(float)) != 0;
        CHECK(buffers_differ == 0 && fused->num_buffer_floats > 0,
              "fuse_flex_bn_stats changes %zu of %zu running statistics", buffers_differ, fused->num_buffer_floats);
        CHECK(differ == 0 && nonzero > fused->num_param_floats / 5,
              "ties = %s: fuse_flex_scatter or fuse_flex_bn changes %zu of 2 x %zu gradients (%zu nonzero)",
              ties == BF_FLEX_TIE_SPLIT ? "split" : "pool", differ, fused->num_param_floats, nonzero);
        size_t fused_scratch = 0, separate_scratch = 0, pooled = 0, tie_count = 0;
        for (int i = 0; i < fused->num_layers; i++) {
            fused_scratch += bf_flex_backward_scratch_floats(fused, i);
            separate_scratch += bf_flex_backward_scratch_floats(separate, i);
            const bf_layer *l = &fused->layers[i];
            if (l->kind != BF_LAYER_FLEX) continue;
            pooled += (size_t)l->flex.n * l->flex.c_in * l->flex.hw;
            for (size_t w = 0; w < ((size_t)l->flex.n * l->flex.c_out * l->flex.hw + 31) / 32; w++)
                tie_count += (size_t)__builtin_popcount(l->flex_ties[w]);
        }
        CHECK(tie_count > 0, "the branches tie somewhere (%zu ties)", tie_count);
        CHECK(fused_scratch == 0 && separate_scratch == pooled,
              "backward scratch: %zu floats fused (want 0: dC over dy, no dP), %zu separate (want dP's %zu)",
              fused_scratch, separate_scratch, pooled);
        printf("fuse_flex_scatter and fuse_flex_bn, ties = %s%s: %zu gradients bit for bit (%zu nonzero), %zu ties\n",
               ties == BF_FLEX_TIE_SPLIT ? "split" : "pool", stem ? "" : ", flex1 on the image",
               fused->num_param_floats, nonzero, tie_count);
    }
    bf_model_destroy(fused);
    bf_model_destroy(separate);
    bf_model_destroy(bn_apart);
    bf_backend_destroy(b);
}

/* [model] fuse_flex_bn where the batch-norm after a flex layer has no gradient to share (no layer
 * reads it): the pair stays apart and the model finalizes; with only an unread ReLU after it the model
 * finalizes too (fuse_bn_relu leaves that ReLU apart); an ordinary stem -> flex -> batch-norm -> ReLU
 * -> head joins. */
static void test_flex_bn_sites(void) {
    const bf_flex_options opt = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND,
                                 .ties = BF_FLEX_TIE_SPLIT};
    for (int site = 0; site < 3; site++) { /* 0: the batch-norm unread, 1: its ReLU unread, 2: a chain */
        bf_model *m = NULL;
        CHECK_OK(bf_model_create(NULL, (bf_shape){2, 2, 6, 6}, 3, &m));
        if (!m) continue;
        const int stem = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 3, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
        const int flex = bf_model_add_flex(m, "flex", stem, 4, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
        int x = bf_model_add_batchnorm(m, "bn", flex, 1e-5f, 0.1f);
        if (site > 0) x = bf_model_add_relu(m, "relu", x);
        x = bf_model_add_flatten(m, "flatten", site < 2 ? stem : x);
        bf_model_add_linear(m, "fc", x, 3, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
        CHECK_OK(bf_model_finalize(m));
        if (site != 1) /* an unread ReLU is not fused: its batch-norm keeps a gradient, which the flex may share */
            CHECK(m->layers[flex].flex_applies_bn == (site == 2),
                  "site %d: the flex layer applies its batch-norm's dx: %d", site, m->layers[flex].flex_applies_bn);
        bf_model_destroy(m);
    }
}

/* [model] flex_recompute_conv: stem conv -> flex mask (hard sigmoid, batch-norm on the logits) -> BN
 * -> ReLU -> flex mask at a 2x2/2 site -> GAP -> linear, built twice from one seed, the second with
 * every mask layer's C computed again in the backward. Each layer's scratch, forward and backward,
 * holds its C then; the plan keeps the two C's no more, less what the scratch grew beyond the
 * activations it lies over; the logits, the loss's gradients of every parameter and the batch-norms'
 * running statistics are the same bits, over two training steps with an SGD update between. */
static bf_model *mask_net(bf_backend *b, int recompute) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 23, &m));
    if (!m) return NULL;
    bf_flex_options opt = {.joint = BF_FLEX_JOINT_MASK, .channels = BF_FLEX_CHANNELS_EXPAND, .mask = BF_FLEX_MASK_SIGMOID_HARD,
                           .mask_factor = 1, .logits_bn = 1, .threshold_mode = BF_THRESHOLD_LEARNED, .bn_eps = 1e-5f,
                           .bn_momentum = 0.1f};
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 3, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    const int f1 = x = bf_model_add_flex(m, "flex1", x, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f);
    x = bf_model_add_relu(m, "relu", x);
    const int f2 = x = bf_model_add_flex(m, "flex2", x, 6, 2, 2, 0, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    if (f1 >= 0 && f2 >= 0) m->layers[f1].flex_conv_recomputed = m->layers[f2].flex_conv_recomputed = recompute;
    CHECK_OK(bf_model_finalize(m));
    return m;
}

static void test_recompute_conv(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    bf_model *kept = mask_net(b, 0), *again = mask_net(b, 1);
    if (!kept || !again || !kept->param_data || !again->param_data) return;
    const size_t c1 = (size_t)N * 6 * H * H * sizeof(float), c2 = (size_t)N * 6 * (H / 2) * (H / 2) * sizeof(float);
    for (int k = 0; k < 2; k++) {
        const int f = k ? 4 : 1; /* flex1, flex2 */
        const size_t c = (k ? c2 : c1) / sizeof(float);
        CHECK(bf_flex_forward_scratch_floats(again, f) == bf_flex_forward_scratch_floats(kept, f) + c &&
                  bf_flex_backward_scratch_floats(again, f) == bf_flex_backward_scratch_floats(kept, f) + c,
              "flex_recompute_conv: %s's scratch holds its C (forward %zu and backward %zu floats against %zu and %zu)",
              again->layers[f].name, bf_flex_forward_scratch_floats(again, f), bf_flex_backward_scratch_floats(again, f),
              bf_flex_forward_scratch_floats(kept, f), bf_flex_backward_scratch_floats(kept, f));
    }
    const size_t growth = again->transient_bytes + again->grad_bytes - kept->transient_bytes - kept->grad_bytes;
    CHECK(kept->arena_bytes - again->arena_bytes == bf_arena_align(c1) + bf_arena_align(c2) - growth &&
              again->arena_bytes < kept->arena_bytes,
          "flex_recompute_conv: the plan %zu bytes against %zu kept (want the two C's less the scratch's growth, %zu)",
          again->arena_bytes, kept->arena_bytes, bf_arena_align(c1) + bf_arena_align(c2) - growth);
    CHECK(again->layers[1].flex_conv == NULL && kept->layers[1].flex_conv != NULL, "no C kept under flex_recompute_conv");
    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 17);
    int32_t labels[N] = {1, 3, 0};
    int same = 1;
    for (int step = 0; step < 2; step++) {
        bf_model *nets[2] = {kept, again};
        float losses[N], dlogits[2][N * K], *logits_copy[2];
        for (int k = 0; k < 2; k++) {
            const float *logits = NULL;
            nets[k]->step = step;
            CHECK_OK(bf_model_forward(nets[k], xh, &logits));
            logits_copy[k] = bf_test_download(b, logits, N * K);
            CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits[k]));
            CHECK_OK(bf_model_backward(nets[k], dlogits[k]));
        }
        same &= logits_copy[0] && logits_copy[1] && !memcmp(logits_copy[0], logits_copy[1], N * K * sizeof(float));
        same &= !memcmp(kept->grad_data, again->grad_data, kept->num_param_floats * sizeof(float));
        same &= !memcmp(kept->buffer_data, again->buffer_data, kept->num_buffer_floats * sizeof(float));
        free(logits_copy[0]), free(logits_copy[1]);
        for (int k = 0; k < 2; k++) /* a plain step, so that the second pass runs other weights */
            for (size_t i = 0; i < nets[k]->num_param_floats; i++) nets[k]->param_data[i] -= 0.1f * nets[k]->grad_data[i];
    }
    printf("flex_recompute_conv: plan %zu bytes against %zu with C kept\n", again->arena_bytes, kept->arena_bytes);
    CHECK(same, "flex_recompute_conv: logits, every parameter's gradient and the running statistics the same bits");
    bf_model_destroy(kept);
    bf_model_destroy(again);
    bf_backend_destroy(b);
}

/* PlasticFlex's flex VGG-16 on ImageNet-100 (mask joint, hard sigmoid, batch-norm on the logits;
 * configs/plasticflex/imagenet100_vgg16_ann_flex.ini) at its batch of 256, planned without memory: the
 * first flex layer's scratch, the largest (its forward's P~, L and normalised L, its backward's
 * those, dC and dL: three and five conv outputs of 64 x 224 x 224, 9.9 and 16.4 GB), lies wholly
 * over the activations of the layers above it, not yet written in its forward and dead in its
 * backward: it adds nothing to the plan, which once held six of those outputs apart. */
static void test_mask_scratch_placement(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_PF_VGG16;
    cfg.model.flex = 1;
    cfg.model.flex_joint = BF_FLEX_JOINT_MASK;
    cfg.model.flex_logits_bn = 1;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){256, 3, 224, 224}, 100, 1, &m));
    if (!m) return;
    int first = -1;
    for (int i = 0; i < m->num_layers && first < 0; i++)
        if (m->layers[i].kind == BF_LAYER_FLEX) first = i;
    if (first < 0) {
        CHECK(0, "PlasticFlex flex VGG-16: no flex layer");
        bf_model_destroy(m);
        return;
    }
    const bf_layer *l = &m->layers[first];
    const size_t branch = (size_t)256 * 64 * 224 * 224 * sizeof(float);
    const size_t fwd = bf_flex_forward_scratch_floats(m, first) * sizeof(float),
                 bwd = bf_flex_backward_scratch_floats(m, first) * sizeof(float);
    CHECK(fwd >= 3 * branch && bwd >= 5 * branch && l->fwd_scratch_at != SIZE_MAX && l->bwd_scratch_at != SIZE_MAX &&
              l->fwd_scratch_at + fwd <= m->transient_bytes && l->bwd_scratch_at + bwd <= m->transient_bytes,
          "PlasticFlex flex VGG-16, batch 256: %s's scratch (forward %.1f GB at %.1f, backward %.1f GB at %.1f) lies "
          "within the %.1f GB of activations",
          l->name, fwd / 1e9, l->fwd_scratch_at / 1e9, bwd / 1e9, l->bwd_scratch_at / 1e9, m->transient_bytes / 1e9);
    printf("PlasticFlex flex VGG-16 (mask), ImageNet-100, batch 256: plan %.1f MiB\n", m->arena_bytes / 1048576.0);
    bf_model_destroy(m);
}

/* FlexResNet's CIFAR path (arch = resnet20): every one of its 21 convs flex (the 3x3 stem, 18 in the
 * blocks, the two 1x1 stride-2 projections), a bias each: 272,474 + 16 + 6 x 16 + 7 x 32 + 7 x 64
 * parameters, named as FlexResNet's. */
static void test_flex_resnet20(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_RESNET20;
    cfg.model.flex = 1;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 32, 32}, 10, 1, &m));
    if (!m) return;
    int flex = 0, convs = 0, pools = 0;
    for (int i = 0; i < m->num_layers; i++)
        flex += m->layers[i].kind == BF_LAYER_FLEX, convs += m->layers[i].kind == BF_LAYER_CONV,
            pools += m->layers[i].kind == BF_LAYER_MAXPOOL;
    const size_t want = 272474 + 16 + 6 * 16 + 7 * 32 + 7 * 64;
    CHECK(flex == 21 && convs == 0 && pools == 0 && m->num_param_floats == want,
          "flex ResNet-20: %d flex layers, %d convs, %d max-pools, %zu parameters (expected 21, 0, 0, %zu)", flex, convs,
          pools, m->num_param_floats, want);
    CHECK(find_param(m, "conv1.layer.flex_conv.weight") >= 0 && find_param(m, "layer3.2.conv2.layer.flex_conv.bias") >= 0 &&
              find_param(m, "layer2.0.downsample.0.layer.flex_conv.weight") >= 0 &&
              find_param(m, "layer1.0.downsample.0.layer.flex_conv.weight") < 0 && find_param(m, "fc.weight") >= 0,
          "FlexResNet-20 state_dict names; no projection in stage 1");
    bf_shape out = bf_model_shape_of(m, m->num_layers - 1), last = bf_model_shape_of(m, m->num_layers - 4);
    CHECK(out.c == 10 && last.c == 64 && last.h == 8 && last.w == 8, "ResNet-20 on 32x32: 64 x 8 x 8 before the pool "
          "(got %d x %d x %d), 10 logits", last.c, last.h, last.w);
    bf_model_destroy(m);
}

/* stem conv -> flex1 (3 -> 6, conv fraction 0.3: its pool) -> BN -> ReLU -> flex2 (6 -> 4, 3x3 stride
 * 2, 0.8: its conv) -> flex3 (4 -> 4, 2x2 stride 2, 0.5: not above the threshold, its pool) -> GAP ->
 * linear, from a routing file as bioflex-eval --routing writes it. flex2 is a plain conv named
 * flex2.flex_conv; flex1 and flex3 are flex layers without parameters, whose output is the widened
 * max-pool of their input (maxpool_forward and flex_widen_forward, bit for bit) and whose conv ratio
 * is 0. Finite differences check every parameter's gradient, the stem's through flex1's scatter;
 * fused: the route-and-scatter and its batch-norm in one pass (fuse_flex_scatter, fuse_flex_bn,
 * fuse_flex_bn_stats), else apart. */
static void check_static_routes(const char *label, int fused) {
    char dir[] = "/tmp/bioflex_static_routes_XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        CHECK(0, "%s: mkdtemp", label);
        return;
    }
    snprintf(path, sizeof path, "%s/routing.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "{\"images\": 4, \"layers\": [\n  {\"name\": \"flex1\", \"joint\": \"channelwise_max\", \"conv\": 0.3},\n"
                   "  {\"name\": \"flex2\", \"joint\": \"channelwise_max\", \"conv\": 0.8},\n"
                   "  {\"name\": \"flex3\", \"joint\": \"channelwise_max\", \"conv\": 0.5}]}\n");
        fclose(f);
    }
    bf_static_routing *routes = NULL;
    CHECK_OK(bf_static_routing_read(path, 0.5, &routes));
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 17, &m));
    if (!m || !routes) return;
    m->fuse_flex_scatter = m->fuse_flex_bn = m->fuse_flex_bn_stats = fused;
    m->static_routes = routes;
    bf_flex_options opt = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND, .ties = BF_FLEX_TIE_SPLIT};
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 3, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    const int flex1 = x = bf_model_add_flex(m, "flex1", x, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f);
    x = bf_model_add_relu(m, "relu", x);
    const int flex2 = x = bf_model_add_flex(m, "flex2", x, 4, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
    const int flex3 = x = bf_model_add_flex(m, "flex3", x, 4, 2, 2, 0, BF_INIT_UNIFORM_FAN_IN, &opt);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    int conv_sites = -1, pool_sites = -1;
    CHECK_OK(bf_static_routing_check(routes, m, &conv_sites, &pool_sites));
    m->static_routes = NULL;
    bf_static_routing_free(routes);
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data || flex1 < 0 || flex2 < 0 || flex3 < 0) return;
    const bf_layer *f1 = &m->layers[flex1], *f2 = &m->layers[flex2];
    CHECK(conv_sites == 1 && pool_sites == 2 && f1->kind == BF_LAYER_FLEX && !bf_flex_has_conv(f1) &&
              f1->param_index[0] < 0 && f2->kind == BF_LAYER_CONV && !strcmp(f2->name, "flex2.flex_conv") &&
              find_param(m, "flex2.flex_conv.bias") >= 0 && find_param(m, "flex1.flex_conv.weight") < 0 &&
              !bf_flex_has_conv(&m->layers[flex3]),
          "%s: flex1 and flex3 pool sites without parameters, flex2 the conv flex2.flex_conv (%d conv, %d pool)", label,
          conv_sites, pool_sites);
    CHECK(!fused || f1->flex_gives_bn_stats, "%s: the pool site still gives its batch-norm's statistics", label);

    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 21);
    int32_t labels[N] = {2, 0, 1};
    const float *logits = NULL;
    m->step = 1;
    double ratio[4], homogeneity[4];
    const char *names[4];
    bf_model_flex_monitor(m, ratio, homogeneity, names, 4); /* reset */
    CHECK_OK(bf_model_forward(m, xh, &logits));
    const size_t pooled = (size_t)N * f1->flex.c_in * f1->flex.hw, elems = (size_t)N * f1->flex.c_out * f1->flex.hw;
    float *pool = malloc(pooled * sizeof(float)), *widened = malloc(elems * sizeof(float));
    int32_t *argmax = malloc(pooled * sizeof(int32_t));
    bf_pool_shape ps = f1->pool;
    bf_flex_shape fs = f1->flex;
    ps.n = fs.n = N;
    CHECK_OK(b->ops->maxpool_forward(b, &ps, m->layers[0].out, pool, argmax));
    CHECK_OK(b->ops->flex_widen_forward(b, &fs, pool, widened));
    CHECK(memcmp(widened, f1->out, elems * sizeof(float)) == 0, "%s: the pool site's output is the widened max-pool",
          label);
    free(pool), free(widened), free(argmax);
    const int nf = bf_model_flex_monitor(m, ratio, homogeneity, names, 4);
    CHECK(nf == 2 && ratio[0] == 0 && ratio[1] == 0, "%s: the pool sites' conv ratio is 0", label);
    check_model_gradients(m, xh, labels, label, 150);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    remove(path);
    bf_test_remove_dir_if_passed(dir);
}

/* stem conv -> flex (mask joint, spatial-attention logits, 3 -> 6, stride 1) -> BN -> ReLU -> GAP ->
 * fc; FD over every parameter: the block's convs and batch-norms get their gradient through the
 * logits alone, the stem's through both the flex layer's input and the block. */
static void check_attention_gradients(const char *label, const bf_flex_options *opt) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 11, &m));
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 3, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    const int flex = x = bf_model_add_flex(m, "flex1", x, 6, 3, 1, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f);
    x = bf_model_add_relu(m, "relu", x);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    if (!m->param_data) {
        bf_model_destroy(m);
        bf_backend_destroy(b);
        return;
    }
    /* the block: (blocks + 1) x [conv, LeakyReLU, BN] before the flex layer, which reads the last */
    const int block_layers = 3 * (opt->attention_blocks + 1);
    char name[64];
    snprintf(name, sizeof name, "flex1.spatial_attention_block.%d.weight", block_layers - 3);
    const int last_conv = find_param(m, name);
    snprintf(name, sizeof name, "flex1.spatial_attention_block.%d", block_layers - 1);
    CHECK(flex == 1 + block_layers && m->layers[flex].num_inputs == 2 && !strcmp(m->layers[flex - 1].name, name) &&
              m->layers[flex].input[1] == flex - 1 && m->layers[flex - 2].kind == BF_LAYER_LEAKY_RELU,
          "%s: the block's %d layers come before the flex layer, which reads the last", label, block_layers);
    CHECK(last_conv >= 0 && m->params[last_conv].shape[0] == 6 && m->params[last_conv].shape[1] == 3 &&
              find_param(m, "flex1.threshold") < 0 && find_buffer(m, "flex1.threshold") < 0 &&
              (find_param(m, "flex1.bn_logits.weight") >= 0) == opt->logits_bn,
          "%s: the block's last conv maps 3 -> 6 channels, no threshold, bn_logits as asked", label);
    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 5);
    int32_t labels[N] = {0, 2, 3};
    m->step = 3;
    /* 2e-4: the block's LeakyReLU, batch-norm over 3 small images and the mask curve the loss enough
     * that 5e-4's central difference is off by its own truncation error (1e-3 on a stem weight; the
     * gap shrinks with the step, so the analytic gradient is the right one) */
    check_model_gradients_step(m, xh, labels, label, 150, 2e-4f);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* [model] flex_layers counts the network's convs: a spatial-attention block's convs are none of
 * them. PlasticFlex's VGG-6 with sites 0 and 1 flex has the flex layers features.0 and features.3,
 * as without the blocks, and each reads its own block. */
static void test_attention_sites(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_PF_VGG6;
    cfg.model.flex = 1;
    cfg.model.flex_joint = BF_FLEX_JOINT_MASK;
    cfg.model.flex_logits = BF_FLEX_LOGITS_SPATIAL_ATTENTION;
    cfg.model.num_flex_layers = 2;
    cfg.model.flex_layers[0] = 0, cfg.model.flex_layers[1] = 1;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 1, 28, 28}, 10, 1, &m));
    if (!m) return;
    char names[2][BF_NAME_MAX] = {"", ""};
    int flex = 0, blocks = 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind == BF_LAYER_FLEX && flex < 2) snprintf(names[flex++], BF_NAME_MAX, "%s", l->name);
        else if (l->kind == BF_LAYER_FLEX) flex++;
        blocks += l->in_logits_block && l->kind == BF_LAYER_CONV;
    }
    CHECK(flex == 2 && !strcmp(names[0], "features.0") && !strcmp(names[1], "features.3") && blocks == 4,
          "flex_layers = 0,1 with spatial-attention logits: %d flex layers (%s, %s), %d block convs", flex, names[0],
          names[1], blocks);
    bf_model_destroy(m);
}

/* A flex layer whose output is not its input's size cannot take the block's logits. */
static void test_attention_refused(const bf_flex_options *opt) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(NULL, (bf_shape){N, C, H, H}, 11, &m));
    if (!m) return;
    bf_model_add_flex(m, "flex1", BF_MODEL_INPUT, 4, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, opt);
    CHECK(bf_model_build_status(m) == BF_ERR_CONFIG && strstr(bf_last_error(), "flex_logits = spatial_attention") &&
              strstr(bf_last_error(), "6x6 in, 3x3 out"),
          "a stride-2 flex layer with spatial-attention logits is refused naming the key: %s", bf_last_error());
    bf_model_destroy(m);
}

int main(void) {
    test_names_and_counts();
    bf_flex_options max_expand = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND, .ties = BF_FLEX_TIE_SPLIT};
    check_gradients("channelwise_max, expand", &max_expand, 0);
    check_gradients("channelwise_max, expand, fully_flex site", &max_expand, 1);
    check_gradients("channelwise_max, expand, ReLU in place over the flex output", &max_expand, 2);
    bf_flex_options max_bilinear = max_expand;
    max_bilinear.channels = BF_FLEX_CHANNELS_BILINEAR;
    check_gradients("channelwise_max, bilinear", &max_bilinear, 0);
    bf_flex_options mask_hard = {.joint = BF_FLEX_JOINT_MASK, .channels = BF_FLEX_CHANNELS_EXPAND,
                                 .mask = BF_FLEX_MASK_SIGMOID_HARD, .mask_factor = 1, .logits_bn = 1,
                                 .threshold_mode = BF_THRESHOLD_LEARNED, .bn_eps = 1e-5f, .bn_momentum = 0.1f};
    check_gradients("mask sigmoid_hard, logits BN, learned threshold", &mask_hard, 0);
    check_gradients("mask sigmoid_hard, logits BN, learned threshold, fully_flex site", &mask_hard, 1);
    bf_flex_options mask_mul = mask_hard;
    mask_mul.mask = BF_FLEX_MASK_SIGMOID_MUL;
    mask_mul.mask_factor = 2;
    mask_mul.logits_bn = 0;
    mask_mul.threshold_mode = BF_THRESHOLD_FROZEN_RANDOM;
    mask_mul.channels = BF_FLEX_CHANNELS_BILINEAR;
    check_gradients("mask sigmoid_mul, bilinear, frozen threshold", &mask_mul, 0);
    bf_flex_options mask_resample = mask_hard;
    mask_resample.logits_bn = 0;
    mask_resample.threshold_mode = BF_THRESHOLD_RESAMPLE;
    check_gradients("mask sigmoid_hard, threshold resampled each forward", &mask_resample, 0);
    test_resampled_threshold(&mask_resample);
    test_flex_resnet50();
    test_flex_resnet20();
    test_recompute_conv();
    test_mask_scratch_placement();
    check_residual_gradients("residual flex network, channelwise_max", &max_expand);
    check_residual_gradients("residual flex network, mask sigmoid_hard with logits BN", &mask_hard);
    test_ties(BF_FLEX_TIE_SPLIT);
    test_ties(BF_FLEX_TIE_POOL);
    test_route_scatter_same_bits(BF_FLEX_TIE_SPLIT, 1);
    test_route_scatter_same_bits(BF_FLEX_TIE_POOL, 1);
    test_route_scatter_same_bits(BF_FLEX_TIE_SPLIT, 0);
    test_flex_bn_sites();
    bf_flex_options attention = mask_hard;
    attention.logits = BF_FLEX_LOGITS_SPATIAL_ATTENTION;
    attention.attention_blocks = 1;
    check_attention_gradients("mask sigmoid_hard, spatial-attention logits, logits BN", &attention);
    attention.logits_bn = 0;
    attention.attention_blocks = 2;
    check_attention_gradients("mask sigmoid_hard, spatial-attention logits (2 blocks)", &attention);
    attention.mask = BF_FLEX_MASK_SIGMOID_MUL;
    attention.mask_factor = 2;
    attention.attention_blocks = 0;
    check_attention_gradients("mask sigmoid_mul, spatial-attention logits (the last conv alone)", &attention);
    test_attention_refused(&attention);
    test_attention_sites();
    check_static_routes("static routing, fused flex paths", 1);
    check_static_routes("static routing, flex paths apart", 0);
    return bf_test_finish();
}
