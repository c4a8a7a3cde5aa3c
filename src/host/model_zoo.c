/* model_zoo.c - the architectures of the [model] section, with PyTorch state_dict names:
 *   cnn      conv-BN-ReLU-maxpool stages of `channels`, then [hidden] and the classifier
 *            (the quick start's small network);
 *   vgg6/11/16 with batch-norm, as in FlexNet (../shared/specs/flexnet.md section 2.1): every
 *            conv is 3x3 pad 1 with bias, followed by BN and ReLU; flatten with no adaptive pool;
 *            classifier hidden-hidden-K with dropout, where hidden = 4096 shrinks to the flattened
 *            size when that is <= 4096; VGG-16 with K=100 on 224x224 has 134,678,692 parameters;
 *   plasticflex_vgg6/11/16 as PlasticFlex builds them (learned 2x2/2 downsampling convs), and its
 *            SimpleFlexNet and SimpleConvNet (plasticflex_simple_flex, _simple_conv);
 *   flex = true turns every cnn/vgg conv into a flex layer (layer_flex.c) and fully_flex the
 *            2x2 max-pools too, named like FlexNet's Flex2D (features.0.flex_conv.weight);
 *   resnet18/50 in torchvision's layout (BasicBlock / Bottleneck with stride on the 3x3); with
 *            flex = true every conv, downsamples and stem included, is a flex layer named like
 *            FlexResNet's (layer1.0.conv1.layer.flex_conv.weight, flexnet.md 2.2); divisive_norm,
 *            cortical_magnification, center_surround and local_rf add the V1-constrained ResNet's
 *            components (../shared/specs/v1-constrained.md: layer1.N.dn after each layer1 block, lpp
 *            in place of the stem's max-pool, DoG layers after layer1's 3x3 convs, a locally
 *            connected layer1.2.conv2; layer_v1.c, layer_local.c).
 * Initialisation follows torchvision: Kaiming-normal fan-out convs, BN weight 1 bias 0, VGG
 * linear N(0, 0.01), ResNet fc PyTorch's default uniform; [model] conv_init = fan_in gives every
 * conv FlexNet's reference init (fan-in, bias 0). */
#include <stdio.h>
#include <string.h>

#include "bioflex/model.h"

static int spiking(const bf_model_config *cfg) { return cfg->spiking.neuron >= 0; }

/* [spiking] share_direct_input: with direct coding every step sees the same image, so the layers
 * before the first neuron layer (a conv or flex layer and its batch-norm, in every arch here)
 * compute the same thing at each step. They run once per image, and the steps begin at the first
 * neuron layer instead of at the input (activation()): it reads its batch-norm's one step at every
 * step itself, or else an encode layer just before it repeats that step. Not where the first
 * layer draws per element: a flex mask with stochastic rounding draws its own at each step there.
 * (A threshold redrawn at every forward is one draw shared by all the steps of that forward, keyed
 * by the layer's name: the same in either layout.) */
static int shares_direct_input(const bf_model_config *cfg) {
    /* a shared input's gradient comes back through neuron_backward_bn alone, with training statistics */
    if (!spiking(cfg) || cfg->spiking.encoding != 0 || !cfg->spiking.share_direct_input || cfg->input_gradient) return 0;
    int first_is_flex = cfg->flex && cfg->num_flex_layers == 0;
    for (int i = 0; cfg->flex && i < cfg->num_flex_layers; i++) first_is_flex |= cfg->flex_layers[i] == 0;
    if (!first_is_flex || cfg->flex_joint != BF_FLEX_JOINT_MASK) return 1;
    return cfg->flex_mask < BF_FLEX_MASK_STOCHASTIC_FPBP;
}

/* Whether the steps have begun: an encode or a neuron layer is in the model. */
static int steps_begun(const bf_model *m) {
    for (int i = 0; i < m->num_layers; i++)
        if (m->layers[i].kind == BF_LAYER_ENCODE || m->layers[i].kind == BF_LAYER_NEURON) return 1;
    return 0;
}

/* Whether the first neuron layer can read its one step of input itself, with no encode layer to
 * repeat it (bf_model_add_neuron_shared): a LIF/IF after a batch-norm whose charge it recomputes. */
static int neuron_reads_shared_input(const bf_model *m, const bf_model_config *cfg, int input) {
    const bf_spiking_config *sp = &cfg->spiking;
    return input >= 0 && m->layers[input].kind == BF_LAYER_BATCHNORM && sp->recompute_charge &&
           (sp->neuron == BF_NEURON_LIF || sp->neuron == BF_NEURON_IF) && sp->time_steps <= BF_NEURON_BN_MAX_T;
}

/* The activation: ReLU, or with [spiking] neuron set, a neuron layer over the time steps; sharing
 * the direct input, the first neuron layer begins the steps (reading its batch-norm's one step
 * itself, or after an encode layer that repeats it). */
static int activation(bf_model *m, const bf_model_config *cfg, const char *name, int input) {
    if (!spiking(cfg)) return bf_model_add_relu(m, name, input);
    const bf_spiking_config *sp = &cfg->spiking;
    bf_neuron_params p = {.kind = (bf_neuron_kind)sp->neuron, .decay = sp->decay, .threshold = sp->threshold,
                          .reset = (bf_reset_mode)sp->reset, .detach_reset = sp->detach_reset,
                          .through_time = sp->use_stbp, .surrogate = (bf_surrogate)sp->surrogate,
                          .alpha = sp->alpha, .width = sp->width, .height = sp->height};
    if (shares_direct_input(cfg) && !steps_begun(m)) {
        if (neuron_reads_shared_input(m, cfg, input)) return bf_model_add_neuron_shared(m, name, input, &p, sp->time_steps);
        input = bf_model_add_encode(m, "encode", input, sp->time_steps, sp->encoding);
    }
    return bf_model_add_neuron(m, name, input, &p);
}

/* Spiking: the input over T steps first (or, sharing the direct input, just before the first
 * neuron layer), the mean of the logits (or of the output neurons' spikes, [spiking] readout =
 * spike_count) over the steps last. */
static int network_input(bf_model *m, const bf_model_config *cfg) {
    if (!spiking(cfg) || shares_direct_input(cfg)) return BF_MODEL_INPUT;
    return bf_model_add_encode(m, "encode", BF_MODEL_INPUT, cfg->spiking.time_steps, cfg->spiking.encoding);
}

/* After the build, sharing the direct input: the batch-norms before the steps begin see each
 * image once for the T copies a step-by-step network normalises, so their running variance's
 * unbiased correction counts T x their values (bf_bn_shape.repeats), as over the copies. */
static void mark_shared_batchnorms(bf_model *m, const bf_model_config *cfg) {
    if (!shares_direct_input(cfg)) return;
    for (int i = 0; i < m->num_layers && m->layers[i].kind != BF_LAYER_ENCODE && m->layers[i].kind != BF_LAYER_NEURON;
         i++) {
        bf_layer *l = &m->layers[i];
        if (l->kind == BF_LAYER_BATCHNORM || (l->kind == BF_LAYER_FLEX && l->flex_opt.logits_bn))
            l->bn.repeats = cfg->spiking.time_steps;
    }
}

static int network_output(bf_model *m, const bf_model_config *cfg, int logits) {
    if (!spiking(cfg) || logits < 0) return logits;
    /* spike_count: the classes spike too, and the loss sees their firing rates */
    if (cfg->spiking.readout == 1) logits = activation(m, cfg, "readout_neuron", logits);
    return bf_model_add_time_mean(m, "readout", logits);
}

static bf_init conv_init(const bf_model_config *cfg) {
    return cfg->conv_init_fan_in ? BF_INIT_KAIMING_NORMAL_FAN_IN : BF_INIT_KAIMING_NORMAL_FAN_OUT;
}

/* The convs built so far, flex or not ([model] flex_layers counts them from 0 in network order);
 * the flex layers that stand in for max-pools (fully_flex) are not convs, nor are they when
 * static_routing makes them plain convs. */
static int convs_so_far(const bf_model *m) {
    int convs = 0;
    for (int i = 0; i < m->num_layers; i++)
        convs += (m->layers[i].kind == BF_LAYER_CONV || m->layers[i].kind == BF_LAYER_FLEX) && !m->layers[i].flex_pool_site &&
                 !m->layers[i].in_logits_block; /* a spatial-attention block's convs are no sites */
    return convs;
}

/* Whether the next conv of the network is a flex layer: flex on, and flex_layers empty or naming
 * this conv. */
static int flex_here(const bf_model *m, const bf_model_config *cfg) {
    if (!cfg->flex) return 0;
    if (cfg->num_flex_layers == 0) return 1;
    int site = convs_so_far(m);
    for (int i = 0; i < cfg->num_flex_layers; i++)
        if (cfg->flex_layers[i] == site) return 1;
    return 0;
}

static bf_flex_options flex_options(const bf_model_config *cfg) {
    return (bf_flex_options){.joint = (bf_flex_joint)cfg->flex_joint, .channels = (bf_flex_channel_rule)cfg->flex_channels,
                             .ties = (bf_flex_tie_rule)cfg->flex_tie, .mask = (bf_flex_mask)cfg->flex_mask,
                             .mask_factor = cfg->flex_mask_factor, .logits_bn = cfg->flex_logits_bn,
                             .logits = (bf_flex_logits)cfg->flex_logits, .attention_blocks = cfg->flex_attention_blocks,
                             .threshold_mode = (bf_threshold_mode)cfg->threshold_mode, .bn_eps = cfg->bn_eps,
                             .bn_momentum = cfg->bn_momentum};
}

/* conv (or flex) -> [BN] -> ReLU under the Sequential `prefix`, numbering modules from *index. */
static int conv_bn_relu(bf_model *m, const bf_model_config *cfg, const char *prefix, int *index, int input, int c_out) {
    char name[BF_NAME_MAX];
    snprintf(name, sizeof name, "%s.%d", prefix, (*index)++);
    bf_flex_options flex = flex_options(cfg);
    bf_init init = conv_init(cfg);
    int x = flex_here(m, cfg) ? bf_model_add_flex(m, name, input, c_out, 3, 1, 1, init, &flex)
                      : bf_model_add_conv(m, name, input, c_out, 3, 1, 1, 1, 1, init);
    if (cfg->batchnorm) {
        snprintf(name, sizeof name, "%s.%d", prefix, (*index)++);
        x = bf_model_add_batchnorm(m, name, x, cfg->bn_eps, cfg->bn_momentum);
    }
    snprintf(name, sizeof name, "%s.%d", prefix, (*index)++);
    return activation(m, cfg, name, x);
}

/* A 2x2/2 max-pool, or with fully_flex a flex layer C->C with a 2x2/2 conv against the 2x2 max. */
static int maxpool2(bf_model *m, const bf_model_config *cfg, const char *prefix, int *index, int input) {
    char name[BF_NAME_MAX];
    snprintf(name, sizeof name, "%s.%d", prefix, (*index)++);
    if (cfg->flex && cfg->fully_flex) {
        bf_flex_options flex = flex_options(cfg);
        int x = bf_model_add_flex(m, name, input, bf_model_shape_of(m, input).c, 2, 2, 0, conv_init(cfg), &flex);
        if (x >= 0) m->layers[x].flex_pool_site = 1;
        return x;
    }
    return bf_model_add_maxpool(m, name, input, 2, 2, 0);
}

/* classifier: [Linear(hidden) activation Dropout] x hidden_layers, Linear(K) */
static int classifier(bf_model *m, const bf_model_config *cfg, int input, int hidden, int hidden_layers, float dropout,
                      int num_classes, bf_init init, bf_init bias_init) {
    char name[BF_NAME_MAX];
    int idx = 0, x = bf_model_add_flatten(m, "flatten", input);
    for (int i = 0; i < hidden_layers; i++) {
        snprintf(name, sizeof name, "classifier.%d", idx++);
        x = bf_model_add_linear(m, name, x, hidden, 1, init, bias_init);
        snprintf(name, sizeof name, "classifier.%d", idx++);
        x = activation(m, cfg, name, x);
        snprintf(name, sizeof name, "classifier.%d", idx++);
        x = bf_model_add_dropout(m, name, x, dropout);
    }
    snprintf(name, sizeof name, "classifier.%d", idx++);
    return network_output(m, cfg, bf_model_add_linear(m, name, x, num_classes, 1, init, bias_init));
}

static void build_cnn(bf_model *m, const bf_model_config *cfg, int num_classes) {
    int idx = 0, x = network_input(m, cfg);
    for (int i = 0; i < cfg->num_channels; i++) {
        x = conv_bn_relu(m, cfg, "features", &idx, x, cfg->channels[i]);
        x = maxpool2(m, cfg, "features", &idx, x);
    }
    classifier(m, cfg, x, cfg->hidden, cfg->hidden > 0, cfg->dropout, num_classes, BF_INIT_UNIFORM_FAN_IN,
               BF_INIT_UNIFORM_FAN_IN);
}

/* VGG layer lists: channel counts, 0 = max-pool 2x2/2. */
static const int vgg6_layers[] = {64, 64, 0, 128, 128, 0, -1};
static const int vgg11_layers[] = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0, -1};
static const int vgg16_layers[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0, -1};

static void build_vgg(bf_model *m, const bf_model_config *cfg, const int *layers, int num_classes) {
    int idx = 0, x = network_input(m, cfg);
    for (int i = 0; layers[i] >= 0; i++)
        x = layers[i] ? conv_bn_relu(m, cfg, "features", &idx, x, layers[i]) : maxpool2(m, cfg, "features", &idx, x);
    if (x < 0) return;
    bf_shape s = bf_model_shape_of(m, x);
    int flat = s.c * s.h * s.w, hidden = flat <= 4096 ? flat : 4096;
    if (cfg->linear_init_pytorch)
        classifier(m, cfg, x, hidden, 2, cfg->dropout, num_classes, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    else
        classifier(m, cfg, x, hidden, 2, cfg->dropout, num_classes, BF_INIT_NORMAL_0_01, BF_INIT_ZEROS);
}

/* PlasticFlex VGGs (plasticflex.md section 4). Positive entries are c3(c): a 3x3 pad-1 conv (or
 * flex) with BN and the activation; negative entries are d2(c): a learned 2x2 stride-2 conv (or
 * flex) with no BN and no activation, in place of a max-pool. The classifier is fc1 (flat -> D),
 * act, dropout, fc2 (D -> D), act, dropout, fc3 (D -> K), all trained (the reference never trained
 * its lazily built fc1). */
static const int pf_vgg6_layers[] = {64, 64, -64, 128, 128, -128, 0};
static const int pf_vgg11_layers[] = {64, -64, 128, -128, 256, 256, -256, 512, 512, -512, 512, 512, -512, 0};
static const int pf_vgg16_layers[] = {64, 64, -64, 128, 128, -128, 256, 256, 256, -256,
                                      512, 512, 512, -512, 512, 512, 512, -512, 0};

static void build_plasticflex_vgg(bf_model *m, const bf_model_config *cfg, const int *layers, int dense,
                                  int num_classes) {
    char name[BF_NAME_MAX];
    int idx = 0, x = network_input(m, cfg);
    bf_flex_options flex = flex_options(cfg);
    for (int i = 0; layers[i] != 0; i++) {
        if (layers[i] > 0) {
            x = conv_bn_relu(m, cfg, "features", &idx, x, layers[i]);
            continue;
        }
        snprintf(name, sizeof name, "features.%d", idx++);
        x = flex_here(m, cfg) ? bf_model_add_flex(m, name, x, -layers[i], 2, 2, 0, conv_init(cfg), &flex)
                      : bf_model_add_conv(m, name, x, -layers[i], 2, 2, 0, 1, 1, conv_init(cfg));
    }
    x = bf_model_add_flatten(m, "flatten", x);
    const char *fc_names[3] = {"fc1", "fc2", "fc3"};
    for (int j = 0; j < 2; j++) {
        x = j == 0 && cfg->freeze_fc1
                ? bf_model_add_frozen_linear(m, fc_names[j], x, dense, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN)
                : bf_model_add_linear(m, fc_names[j], x, dense, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
        snprintf(name, sizeof name, "%s_act", fc_names[j]);
        x = activation(m, cfg, name, x);
        snprintf(name, sizeof name, "%s_dropout", fc_names[j]);
        x = bf_model_add_dropout(m, name, x, cfg->dropout);
    }
    network_output(m, cfg, bf_model_add_linear(m, "fc3", x, num_classes, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN));
}

/* PlasticFlex's small networks (plasticflex.md section 4), without batch-norm:
 *   SimpleFlexNet: 3x3 pad-1 convs (or flex) of 16, 32, 64, 128 channels, each with the activation,
 *     a 2x2 max-pool after every second; fc1 (flat -> 128), act, dropout, fc2 (128 -> 128), act,
 *     dropout, fc3 (128 -> K). The reference turns flex on by default here: bioflex by [model] flex.
 *   SimpleConvNet: 4 x (3x3 conv of 32, 64, 128, 256 channels, act, 2x2 max-pool); fc1 (flat ->
 *     128), act (the spec names none between the two; SimpleFlexNet has one), fc2 (128 -> K, the
 *     reference's hard-coded 10); no dropout.
 * fc1 is trained unless freeze_fc1 (both references build it lazily, after their optimiser). */
static void build_plasticflex_simple(bf_model *m, const bf_model_config *cfg, int conv_net, int num_classes) {
    static const int flex_widths[] = {16, 32, 64, 128}, conv_widths[] = {32, 64, 128, 256};
    bf_model_config plain = *cfg;
    plain.batchnorm = 0;
    char name[BF_NAME_MAX];
    int idx = 0, x = network_input(m, cfg);
    for (int i = 0; i < 4; i++) {
        x = conv_bn_relu(m, &plain, "features", &idx, x, conv_net ? conv_widths[i] : flex_widths[i]);
        if (conv_net || i % 2 == 1) x = maxpool2(m, cfg, "features", &idx, x);
    }
    x = bf_model_add_flatten(m, "flatten", x);
    const char *fc_names[2] = {"fc1", "fc2"};
    for (int j = 0; j < (conv_net ? 1 : 2); j++) {
        x = j == 0 && cfg->freeze_fc1
                ? bf_model_add_frozen_linear(m, fc_names[j], x, 128, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN)
                : bf_model_add_linear(m, fc_names[j], x, 128, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
        snprintf(name, sizeof name, "%s_act", fc_names[j]);
        x = activation(m, cfg, name, x);
        if (conv_net) continue;
        snprintf(name, sizeof name, "%s_dropout", fc_names[j]);
        x = bf_model_add_dropout(m, name, x, cfg->dropout);
    }
    network_output(m, cfg, bf_model_add_linear(m, conv_net ? "fc2" : "fc3", x, num_classes, 1, BF_INIT_UNIFORM_FAN_IN,
                                               BF_INIT_UNIFORM_FAN_IN));
}

static int resnet_conv_bn(bf_model *m, const bf_model_config *cfg, const char *block, const char *conv, const char *bn,
                          int input, int c_out, int k, int stride, int pad) {
    char name[BF_NAME_MAX];
    int x;
    if (flex_here(m, cfg)) {
        /* FlexResNet (flexnet.md 2.2): FlexConvWrapper puts the Flex2D one module deeper
         * ("layer1.0.conv1.layer.flex_conv.weight"), with a bias where the plain conv has none; the
         * pool branch shares the conv's window (7x7/2 at the stem, a strided subsample at a 1x1) */
        bf_flex_options flex = flex_options(cfg);
        snprintf(name, sizeof name, "%s%s.layer", block, conv);
        x = bf_model_add_flex(m, name, input, c_out, k, stride, pad, conv_init(cfg), &flex);
        /* torchvision's ResNet init (fan_out) sets conv weights only: the flex conv's bias keeps
         * nn.Conv2d's default U(+-1/sqrt(fan_in)). FlexNet's RunLoader (conv_init = fan_in, flexnet.md
         * 1.6) zeroes every conv's bias, as bf_model_add_flex does. */
        if (x >= 0 && !cfg->conv_init_fan_in && m->layers[x].param_index[1] >= 0)
            m->params[m->layers[x].param_index[1]].init = BF_INIT_UNIFORM_FAN_IN;
    } else {
        snprintf(name, sizeof name, "%s%s", block, conv);
        x = bf_model_add_conv(m, name, input, c_out, k, stride, pad, 1, 0, conv_init(cfg));
    }
    snprintf(name, sizeof name, "%s%s", block, bn);
    return bf_model_add_batchnorm(m, name, x, cfg->bn_eps, cfg->bn_momentum);
}

/* The V1-constrained ResNet (v1-constrained.md 6): its composites (ResNetComposite) name the DoG
 * block's conv "conv2.conv" and initialise it as every conv; the DoG-only resnet50_center_surround
 * replaces conv2 by an nn.Sequential ("conv2.0", "conv2.1") after torchvision's init loop, so its
 * 3x3 conv keeps nn.Conv2d's default U(+-1/sqrt(fan_in)), and puts DoG into all three layer1
 * blocks, where the composites leave block 2 to the locally connected layer. */
static int v1_composite(const bf_model_config *cfg) {
    return cfg->divisive_norm || cfg->cortical_magnification || cfg->local_rf;
}

/* A bottleneck's 3x3 conv (before bn2): "<block>.conv2", or in layer1 block `index` of the V1 ResNet
 * the locally connected layer (block 2 with local_rf; local_rf alone is resnet50_local_rf, whose
 * conv2 is nn.Sequential(Dropout2d, LC): conv2.0, conv2.1) or a conv and the DoG layer on its first
 * planes/4 channels (center_surround: blocks 0 and 1, block 2 too without local_rf). */
static int bottleneck_conv2(bf_model *m, const bf_model_config *cfg, const char *block, int input, int planes,
                            int stride, int layer1_index) {
    char name[BF_NAME_MAX];
    if (layer1_index == 2 && cfg->local_rf) { /* BrainBottleneckLocal's conv3x3_local: k 3, padding = dilation 1 */
        if (cfg->center_surround || cfg->divisive_norm || cfg->cortical_magnification) {
            snprintf(name, sizeof name, "%s.conv2", block);
            return bf_model_add_local(m, name, input, planes, 3, stride, 1);
        }
        /* resnet50_local_rf: conv2 = nn.Sequential(Dropout2d(0.5), LC) */
        if (cfg->local_rf_dropout > 0) {
            snprintf(name, sizeof name, "%s.conv2.0", block);
            input = bf_model_add_dropout2d(m, name, input, cfg->local_rf_dropout);
        }
        snprintf(name, sizeof name, "%s.conv2.1", block);
        return bf_model_add_local(m, name, input, planes, 3, stride, 1);
    }
    if (layer1_index < 0 || !cfg->center_surround || (layer1_index == 2 && v1_composite(cfg))) {
        snprintf(name, sizeof name, "%s.conv2", block);
        return bf_model_add_conv(m, name, input, planes, 3, stride, 1, 1, 0, conv_init(cfg));
    }
    const int composite = v1_composite(cfg);
    snprintf(name, sizeof name, "%s.conv2.%s", block, composite ? "conv" : "0");
    int x = bf_model_add_conv(m, name, input, planes, 3, stride, 1, 1, 0,
                              composite ? conv_init(cfg) : BF_INIT_UNIFORM_FAN_IN);
    snprintf(name, sizeof name, "%s.conv2.%s", block, composite ? "dog" : "1");
    return bf_model_add_dog(m, name, x, planes / 4, 5, cfg->dog_amp_paper); /* DoGConv2DLayer(width // 4, k 2) */
}

/* One residual block (torchvision BasicBlock when bottleneck == 0, else Bottleneck); in layer1 of the
 * V1-constrained ResNet (layer1_index >= 0, else -1) a BrainBottleneck: its 3x3 conv as
 * bottleneck_conv2 builds it, and with divisive_norm its output passed through its divisive
 * normalisation "<block>.dn" (v1-constrained.md 4). */
static int resnet_block(bf_model *m, const bf_model_config *cfg, const char *block, int input, int planes, int stride,
                        int bottleneck, int layer1_index) {
    char name[BF_NAME_MAX];
    int expansion = bottleneck ? 4 : 1, c_in = bf_model_shape_of(m, input).c, x;
    if (bottleneck) {
        x = resnet_conv_bn(m, cfg, block, ".conv1", ".bn1", input, planes, 1, 1, 0);
        snprintf(name, sizeof name, "%s.relu1", block);
        x = bf_model_add_relu(m, name, x);
        if (cfg->center_surround || cfg->local_rf) {
            x = bottleneck_conv2(m, cfg, block, x, planes, stride, layer1_index);
            snprintf(name, sizeof name, "%s.bn2", block);
            x = bf_model_add_batchnorm(m, name, x, cfg->bn_eps, cfg->bn_momentum);
        } else {
            x = resnet_conv_bn(m, cfg, block, ".conv2", ".bn2", x, planes, 3, stride, 1);
        }
        snprintf(name, sizeof name, "%s.relu2", block);
        x = bf_model_add_relu(m, name, x);
        x = resnet_conv_bn(m, cfg, block, ".conv3", ".bn3", x, planes * 4, 1, 1, 0);
    } else {
        x = resnet_conv_bn(m, cfg, block, ".conv1", ".bn1", input, planes, 3, stride, 1);
        snprintf(name, sizeof name, "%s.relu1", block);
        x = bf_model_add_relu(m, name, x);
        x = resnet_conv_bn(m, cfg, block, ".conv2", ".bn2", x, planes, 3, 1, 1);
    }
    int shortcut = input;
    if (stride != 1 || c_in != planes * expansion)
        shortcut = resnet_conv_bn(m, cfg, block, ".downsample.0", ".downsample.1", input, planes * expansion, 1, stride, 0);
    snprintf(name, sizeof name, "%s.add", block);
    x = bf_model_add_add(m, name, x, shortcut);
    snprintf(name, sizeof name, "%s.relu", block);
    x = bf_model_add_relu(m, name, x);
    if (layer1_index < 0 || !cfg->divisive_norm) return x;
    snprintf(name, sizeof name, "%s.dn", block);
    if (cfg->divisive_norm == 2) return bf_model_add_cirincione(m, name, x); /* resnet50_div_norm (4.2) */
    return bf_model_add_divnorm(m, name, x, (bf_oci_distance)cfg->oci_distance);
}

static void build_resnet(bf_model *m, const bf_model_config *cfg, const int blocks[4], int bottleneck, int num_classes) {
    int x = resnet_conv_bn(m, cfg, "", "conv1", "bn1", BF_MODEL_INPUT, 64, 7, 2, 3);
    x = bf_model_add_relu(m, "relu", x);
    /* the V1-constrained ResNet's cortical magnification takes the max-pool's place (v1-constrained.md 5.5;
     * "lpp" as ResNetComposite names it) */
    if (cfg->cortical_magnification) x = bf_model_add_polar(m, "lpp", x, cfg->polar_padding, cfg->polar_antialias);
    else x = bf_model_add_maxpool(m, "maxpool", x, 3, 2, 1);
    for (int stage = 0; stage < 4; stage++) {
        for (int i = 0; i < blocks[stage]; i++) {
            char block[BF_NAME_MAX];
            snprintf(block, sizeof block, "layer%d.%d", stage + 1, i);
            x = resnet_block(m, cfg, block, x, 64 << stage, (stage > 0 && i == 0) ? 2 : 1, bottleneck,
                             stage == 0 ? i : -1);
        }
    }
    x = bf_model_add_global_avgpool(m, "avgpool", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, num_classes, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
}

/* The CIFAR ResNet of depth 6n + 2 (He et al. 2016, 4.2; FlexResNet's CIFAR path, flexnet.md 2.2): a
 * 3x3 conv of 16 with its batch-norm and ReLU, three stages of n BasicBlocks of 16, 32 and 64
 * channels (stride 2 at the first block of stages 2 and 3, with a 1x1 conv + batch-norm projection
 * on its shortcut, He et al.'s option B as torchvision's BasicBlock has it), global average pool, fc.
 * Named as torchvision's ResNet (conv1, bn1, layer1.0.conv1, ..., fc); with flex every conv is a flex
 * layer as FlexResNet's (layer1.0.conv1.layer.flex_conv.weight). */
static void build_resnet_cifar(bf_model *m, const bf_model_config *cfg, int n, int num_classes) {
    int x = resnet_conv_bn(m, cfg, "", "conv1", "bn1", BF_MODEL_INPUT, 16, 3, 1, 1);
    x = bf_model_add_relu(m, "relu", x);
    for (int stage = 0; stage < 3; stage++)
        for (int i = 0; i < n; i++) {
            char block[BF_NAME_MAX];
            snprintf(block, sizeof block, "layer%d.%d", stage + 1, i);
            x = resnet_block(m, cfg, block, x, 16 << stage, (stage > 0 && i == 0) ? 2 : 1, 0, -1);
        }
    x = bf_model_add_global_avgpool(m, "avgpool", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, num_classes, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
}

/* A flex_layers entry past the network's last conv, or fully_flex where there are no max-pools,
 * would otherwise be ignored without a word. */
static bf_status check_flex_sites(const bf_model *m, const bf_model_config *cfg) {
    if (!cfg->flex) return BF_OK;
    int convs = convs_so_far(m);
    for (int i = 0; i < cfg->num_flex_layers; i++)
        if (cfg->flex_layers[i] >= convs)
            return bf_error(BF_ERR_CONFIG, "[model] flex_layers names conv %d, but %s has %d convs (0 to %d)",
                            cfg->flex_layers[i], bf_arch_name(cfg->arch), convs, convs - 1);
    int pools = 0;
    for (int i = 0; i < m->num_layers; i++) pools += m->layers[i].flex_pool_site || m->layers[i].kind == BF_LAYER_MAXPOOL;
    if (cfg->fully_flex && pools == 0)
        return bf_error(BF_ERR_CONFIG, "[model] fully_flex = true: %s has no max-pools to make flex (its downsampling "
                        "convs are convs: flex_layers covers them)", bf_arch_name(cfg->arch));
    return BF_OK;
}

bf_status bf_model_build(bf_backend *b, const bf_model_config *cfg, bf_shape input_shape, int num_classes, long seed,
                         bf_model **out) {
    bf_model *m = NULL;
    bf_static_routing *routes = NULL;
    if (cfg->flex && cfg->static_routing[0])
        BF_TRY(bf_static_routing_read(cfg->static_routing, cfg->static_routing_threshold, &routes));
    bf_status made = bf_model_create(b, input_shape, seed, &m);
    if (made != BF_OK) {
        bf_static_routing_free(routes);
        return made;
    }
    m->static_routes = routes;
    static const int resnet18_blocks[4] = {2, 2, 2, 2}, resnet50_blocks[4] = {3, 4, 6, 3};
    snprintf(m->arch, sizeof m->arch, "%s", bf_arch_name(cfg->arch));
    switch (cfg->arch) {
    case BF_ARCH_CNN: build_cnn(m, cfg, num_classes); break;
    case BF_ARCH_VGG6: build_vgg(m, cfg, vgg6_layers, num_classes); break;
    case BF_ARCH_VGG11: build_vgg(m, cfg, vgg11_layers, num_classes); break;
    case BF_ARCH_VGG16: build_vgg(m, cfg, vgg16_layers, num_classes); break;
    case BF_ARCH_PF_VGG6: build_plasticflex_vgg(m, cfg, pf_vgg6_layers, 256, num_classes); break;
    case BF_ARCH_PF_VGG11: build_plasticflex_vgg(m, cfg, pf_vgg11_layers, 1024, num_classes); break;
    case BF_ARCH_PF_VGG16: build_plasticflex_vgg(m, cfg, pf_vgg16_layers, 4096, num_classes); break;
    case BF_ARCH_PF_SIMPLE_FLEX: build_plasticflex_simple(m, cfg, 0, num_classes); break;
    case BF_ARCH_PF_SIMPLE_CONV: build_plasticflex_simple(m, cfg, 1, num_classes); break;
    case BF_ARCH_RESNET20:
    case BF_ARCH_RESNET32:
    case BF_ARCH_RESNET44:
    case BF_ARCH_RESNET56:
    case BF_ARCH_RESNET110:
    case BF_ARCH_RESNET18:
    case BF_ARCH_RESNET50:
        if (cfg->flex && cfg->fully_flex) { /* FlexResNet makes every conv flex, and its max-pool stays */
            bf_model_destroy(m), bf_static_routing_free(routes);
            return bf_error(BF_ERR_CONFIG, "[model] fully_flex = true makes the 2x2 max-pools of cnn and vgg flex; "
                            "[model] arch = %s has none (every conv is flex already with [model] flex = true)",
                            bf_arch_name(cfg->arch));
        }
        if (spiking(cfg)) {
            bf_model_destroy(m), bf_static_routing_free(routes);
            return bf_error(BF_ERR_CONFIG, "[spiking] neuron = %s works with [model] arch = cnn, vgg6, vgg11, vgg16 and "
                            "plasticflex_vgg6, _vgg11, _vgg16, _simple_flex and _simple_conv, not %s",
                            cfg->spiking.neuron == BF_NEURON_LIF ? "lif" : "a spiking neuron", bf_arch_name(cfg->arch));
        }
        /* the stem (7x7, stride 2, pad 3) halves the image: 63 or 64 pixels give the polar map's 32 */
        if (cfg->cortical_magnification && ((input_shape.h + 1) / 2 != 32 || (input_shape.w + 1) / 2 != 32)) {
            bf_model_destroy(m), bf_static_routing_free(routes);
            return bf_error(BF_ERR_CONFIG, "[model] cortical_magnification = true needs 64x64 images (its polar "
                            "transform resamples the stem's 32x32 maps, v1-constrained.md 1), got %dx%d ([data] "
                            "image_size)", input_shape.h, input_shape.w);
        }
        if (bf_arch_cifar_blocks(cfg->arch)) build_resnet_cifar(m, cfg, bf_arch_cifar_blocks(cfg->arch), num_classes);
        else if (cfg->arch == BF_ARCH_RESNET18) build_resnet(m, cfg, resnet18_blocks, 0, num_classes);
        else build_resnet(m, cfg, resnet50_blocks, 1, num_classes);
        break;
    }
    for (int i = 0; i < m->num_layers; i++) { /* [model] bn_var_floor: every batch-norm's, the flex logits' too */
        bf_layer *l = &m->layers[i];
        l->bn.var_floor = cfg->bn_var_floor;
        l->flex_conv_recomputed = l->kind == BF_LAYER_FLEX && l->flex_opt.joint == BF_FLEX_JOINT_MASK && cfg->flex_recompute_conv;
    }
    m->keep_neuron_outputs = cfg->spiking.raster_neurons > 0; /* train.c reads them after the step */
    m->pack_spikes = cfg->spiking.pack_spikes;
    m->recompute_charge = cfg->spiking.recompute_charge;
    m->fuse_bn_backward = cfg->spiking.fuse_bn_backward;
    m->fuse_bn_relu = cfg->fuse_bn_relu;
    m->fuse_add_relu = cfg->fuse_add_relu;
    m->fold_conv_bias = cfg->fold_conv_bias;
    m->fuse_flex_scatter = cfg->fuse_flex_scatter;
    m->fuse_flex_bn = cfg->fuse_flex_bn;
    m->fuse_flex_bn_stats = cfg->fuse_flex_bn_stats;
    m->flex_kernels_slide = cfg->flex_kernels == 1;
    m->input_gradient = cfg->input_gradient;
    m->eval_backward = cfg->eval_backward;
    snprintf(m->trained_only, sizeof m->trained_only, "%s", cfg->trained_only ? cfg->trained_only : "");
    mark_shared_batchnorms(m, cfg);
    bf_status s = check_flex_sites(m, cfg);
    if (s == BF_OK && routes && bf_model_build_status(m) == BF_OK) s = bf_static_routing_check(routes, m, NULL, NULL);
    m->static_routes = NULL;
    bf_static_routing_free(routes);
    if (s == BF_OK) s = bf_model_finalize(m);
    if (s != BF_OK) {
        bf_model_destroy(m);
        return bf_error_context(s, "building %s for input [%d, %d, %d, %d]", bf_arch_name(cfg->arch), input_shape.n,
                                input_shape.c, input_shape.h, input_shape.w);
    }
    *out = m;
    return BF_OK;
}

void bf_model_print_table(const bf_model *m, FILE *out) {
    double total_flops = 0, total_act = 0;
    fprintf(out, "%-28s %-14s %-20s %12s %12s %12s\n", "layer", "kind", "output (per batch)", "parameters",
            "fwd MFLOP/img", "act. MiB");
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        size_t params = 0;
        for (int p = 0; p < l->num_params; p++)
            if (l->param_index[p] >= 0) params += m->params[l->param_index[p]].count;
        if (l->frozen) /* weight and bias are buffers: shown, but not in the trained total */
            for (int p = 0; p < 2; p++)
                if (l->buffer_index[p] >= 0) params += m->buffers[l->buffer_index[p]].count;
        char shape[48];
        snprintf(shape, sizeof shape, "%dx%dx%dx%d", l->out_shape.n, l->out_shape.c, l->out_shape.h, l->out_shape.w);
        double flops = bf_layer_flops(m, i);
        double act = l->in_place ? 0 : bf_shape_count(l->out_shape) * 4.0 / 1048576.0;
        total_flops += flops;
        total_act += act;
        const char *note = l->in_place          ? " (in place)"
                           : l->frozen          ? " (frozen)"
                           : l->spikes_packed && l->charge_in_place ? " (kept as bits; charge over its input)"
                           : l->spikes_packed && l->charge_recomputed ? " (kept as bits; charge recomputed)"
                           : l->spikes_packed   ? " (kept as bits)"
                           : l->charge_in_place ? " (charge over its input)"
                           : l->charge_recomputed ? " (charge recomputed)"
                           : l->out_forward_only ? " (until the neuron's forward)"
                                                : "";
        const char *kind = l->kind == BF_LAYER_DROPOUT && l->dropout_group > 1 ? "dropout2d"
                           : l->kind == BF_LAYER_FLEX && !bf_flex_has_conv(l) ? "flex_pool"
                                                                               : bf_layer_kind_name(l->kind);
        fprintf(out, "%-28s %-14s %-20s %12zu %12.2f %12.1f%s\n", l->name, kind, shape, params,
                flops / 1e6, act, note);
    }
    fprintf(out, "total: %zu parameters (%.1f MiB), %.3f GFLOP forward per image, %.1f MiB activations at batch %d "
                 "(+ gradients: %.1f MiB at most live at once, %.1f MiB of them beyond the activations they reuse; "
                 "%.1f MiB accumulation scratch)\n",
            m->num_param_floats, m->num_param_floats * 4.0 / 1048576.0, total_flops / 1e9, total_act, m->input_shape.n,
            m->grad_live_bytes / 1048576.0, m->grad_bytes / 1048576.0, m->grad_scratch_floats * 4.0 / 1048576.0);
}
