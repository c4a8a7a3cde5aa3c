/* butd_zoo.c - the BU-TD architectures of the reference (specs/butd-counterhebb.md section 4):
 * fc (BUTDFCNet), simple (BUTDSimpleNet) and resnet18 (BUTDResNet: norm_layer = "no_norm", or
 * batch-norm with TD copies when [butd] batch_norm = true, the celeb_a config). */
#include "bioflex/butd.h"

bf_status bf_butd_build(bf_backend *b, const bf_butd_config *cfg, int c, int h, int w, int max_batch,
                        int num_classes, int num_tasks, long seed, bf_butd_net **out) {
    bf_butd_options opt = {.learning = (bf_butd_learning)cfg->learning, .shared_weights = cfg->shared_weights,
                           .symmetric_init = cfg->symmetric_init,
                           .symmetric_init_noise = cfg->symmetric_init_noise,
                           .feedback_alignment = cfg->feedback_alignment, .td_init_legacy = cfg->td_init_legacy,
                           .downsample_always_shared = cfg->downsample_always_shared, .guided = cfg->guided,
                           .num_tasks = num_tasks, .task_embedding = cfg->task_embedding, .noise_std = cfg->noise_std,
                           .batch_norm = cfg->batch_norm, .ch_bn = cfg->ch_bn, .train_task_head = cfg->train_task_head,
                           .multi_decoders = cfg->multi_decoders, .seed = seed};
    if (cfg->guided && num_tasks <= 0)
        return bf_error(BF_ERR_CONFIG, "[butd] guided = true needs a multi-task dataset ([data] dataset = "
                                       "multi_mnist | multi_fashion_mnist | celeba)");
    if (cfg->feedback_alignment && cfg->learning != BF_BUTD_COUNTER_HEBB)
        return bf_error(BF_ERR_CONFIG, "[butd] feedback_alignment = true applies to learning = counter_hebb only "
                                       "(backprop never updates B)");
    if (cfg->noise_std > 0 && cfg->learning != BF_BUTD_COUNTER_HEBB)
        return bf_error(BF_ERR_CONFIG, "[butd] noise_std applies to learning = counter_hebb only (the reference's "
                                       "AddNoise scales the Counter-Hebb updates; backprop's gradients take none)");
    if (cfg->batch_norm && cfg->network != 3)
        return bf_error(BF_ERR_CONFIG, "[butd] batch_norm = true applies to network = resnet18 only (the reference's "
                                       "fc and simple nets have no batch-norm)");
    bf_butd_net *net = NULL;
    BF_TRY(bf_butd_create(b, c, h, w, max_batch, &opt, &net));
    char name[32];
    switch (cfg->network) {
    case 1: /* fc: Flatten -> depth x Linear(hidden) + ReLU -> head */
        for (int i = 0; i < cfg->depth; i++) {
            snprintf(name, sizeof name, "core_net.%d", i);
            bf_butd_add_linear(net, name, cfg->hidden, 1);
        }
        break;
    case 2: { /* simple: conv5 -> depthwise k2 s2 -> conv5 -> depthwise k3 s2 -> Linear(hidden) */
        int c1 = cfg->channels[0], c2 = cfg->num_channels > 1 ? cfg->channels[1] : c1;
        bf_butd_add_conv(net, "core_net.0", c1, 5, 1, 0, 1, 1);
        bf_butd_add_conv(net, "core_net.1", c1, 2, 2, 0, c1, 1);
        bf_butd_add_conv(net, "core_net.2", c2, 5, 1, 0, 1, 1);
        bf_butd_add_conv(net, "core_net.3", c2, 3, 2, 0, c2, 1);
        bf_butd_add_linear(net, "core_net.4", cfg->hidden, 1);
        break;
    }
    case 3: { /* resnet18: stem conv3x3 s1 p1 (no bias) [+ BN] + ReLU, 4 stages x 2 blocks, flatten */
        static const int widths[4] = {64, 128, 256, 512};
        bf_butd_add_conv(net, "conv1", 64, 3, 1, 1, 1, 0);
        for (int stage = 0; stage < 4; stage++)
            for (int k = 0; k < 2; k++) {
                snprintf(name, sizeof name, "layer%d.%d", stage + 1, k);
                bf_butd_add_block(net, name, widths[stage], stage > 0 && k == 0 ? 2 : 1);
            }
        break;
    }
    default:
        bf_butd_destroy(net);
        return bf_error(BF_ERR_CONFIG, "[butd] network: %d is not a BU-TD network (fc | simple | resnet18)", cfg->network);
    }
    bf_status s = bf_butd_finalize(net, num_classes);
    /* [butd] and the data's shape are the only inputs here: a layer that does not fit (simple's two
     * 5x5 convs and stride-2 downsamplings on 8x8 images) is a config error (exit status 2) */
    if (s == BF_ERR_ARG) {
        static const char *network_names[] = {"none", "fc", "simple", "resnet18"};
        s = bf_error_context(BF_ERR_CONFIG, "[butd] network = %s does not fit the %dx%dx%d images (a smaller "
                             "network, or larger images)", network_names[cfg->network], c, h, w);
    }
    if (s != BF_OK) {
        bf_butd_destroy(net);
        return s;
    }
    *out = net;
    return BF_OK;
}

bf_status bf_butd_outputs(const bf_config *cfg, const char *dataset, int classes, int *outputs) {
    *outputs = cfg->model.num_classes ? cfg->model.num_classes : classes;
    if (cfg->butd.loss != BF_BUTD_LOSS_BCE) return BF_OK;
    /* one logit per sample: the label of the sample's task is 0 or 1 */
    if (classes != 2)
        return bf_error(BF_ERR_CONFIG, "[butd] loss = bce needs binary labels (2 classes per task); dataset %s has %d: "
                                       "use loss = cross_entropy", dataset, classes);
    if (cfg->optim.label_smoothing > 0)
        return bf_error(BF_ERR_CONFIG, "[optim] label_smoothing applies to [butd] loss = cross_entropy only");
    *outputs = 1;
    return BF_OK;
}
