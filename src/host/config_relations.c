/* config_relations.c - the relations between config keys that must hold (bf_config_validate's
 * second part, after every value was checked on its own): an option another key makes
 * meaningless or unread is refused, naming the key that decides, rather than let the researcher
 * believe it took effect; and the phrases a checkpoint records of the network it trained. */
#include <stdio.h>
#include <string.h>

#include "bioflex/ops.h" /* the flex and neuron enums */
#include "config_keys.h"

/* The first of the keys of `section` in `keys` (NULL-terminated) whose value in cfg is not its
 * default, written as "[section] key = value" into text; NULL when every one holds its default. Used
 * to refuse options that would be ignored: a value left at its default says nothing (a run's
 * config.ini lists every key), so it is let through. */
static const char *changed_key(const bf_config *cfg, const char *section, const char *const *keys, char *text,
                               size_t cap) {
    bf_config defaults;
    bf_config_defaults(&defaults);
    for (const char *const *key = keys; *key; key++) {
        char value[256], default_value[256];
        bf_config_value_text(cfg, section, *key, value, sizeof value);
        bf_config_value_text(&defaults, section, *key, default_value, sizeof default_value);
        if (strcmp(value, default_value) == 0) continue;
        /* named as the config set it: by its alias (spiking_decay for decay) where that was the one */
        snprintf(text, cap, "[%s] %s = %s", section, bf_config_name_as_set(cfg, section, *key), value);
        return text;
    }
    return NULL;
}

/* Flex options that the chosen flex layers would ignore are refused, naming the key that decides. */
static bf_status check_flex_options(const bf_config *cfg) {
    static const char *const any_flex[] = {"flex_layers", "fully_flex", "flex_joint", "flex_channels", "flex_tie",
                                           "flex_mask", "flex_mask_factor", "flex_logits_bn", "flex_logits",
                                           "flex_attention_blocks", "threshold_mode", "static_routing",
                                           "static_routing_threshold", "flex_recompute_conv", NULL};
    static const char *const mask_only[] = {"flex_mask", "flex_mask_factor", "flex_logits_bn", "flex_logits",
                                            "flex_attention_blocks", "threshold_mode", "flex_recompute_conv", NULL};
    static const char *const attention_only[] = {"flex_attention_blocks", NULL};
    static const char *const threshold_only[] = {"threshold_mode", NULL};
    static const char *const channelwise_max_only[] = {"flex_tie", "static_routing", "static_routing_threshold", NULL};
    static const char *const static_routing_only[] = {"static_routing_threshold", NULL};
    static const char *const sigmoid_mul_only[] = {"flex_mask_factor", NULL};
    char text[320];
    const bf_model_config *m = &cfg->model;
    if (!m->flex && changed_key(cfg, "model", any_flex, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs [model] flex = true (without it no layer is a flex layer)", text);
    if (m->flex && m->flex_joint == 0 && changed_key(cfg, "model", mask_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] flex_joint = mask only, not channelwise_max", text);
    if (m->flex && m->flex_joint == 1 && changed_key(cfg, "model", channelwise_max_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] flex_joint = channelwise_max only, not mask", text);
    if (m->flex && m->flex_joint == 1 && m->flex_logits != 1 &&
        changed_key(cfg, "model", attention_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] flex_logits = spatial_attention only", text);
    if (m->flex && m->flex_joint == 1 && m->flex_logits == 1 &&
        changed_key(cfg, "model", threshold_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] flex_logits = threshold only (spatial_attention logits "
                        "have no threshold)", text);
    if (!m->static_routing[0] && changed_key(cfg, "model", static_routing_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies with [model] static_routing only (a routing JSON of bioflex-eval "
                        "--routing)", text);
    if (m->flex && m->flex_joint == 1 && m->flex_mask != BF_FLEX_MASK_SIGMOID_MUL &&
        changed_key(cfg, "model", sigmoid_mul_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] flex_mask = sigmoid_mul only (got flex_mask = %s)", text,
                        bf_config_enum_text("model", "flex_mask", m->flex_mask));
    return BF_OK;
}

/* Spiking options that the chosen neuron would ignore, or that would defeat the encoding. */
static bf_status check_spiking_options(const bf_config *cfg) {
    const bf_spiking_config *sp = &cfg->model.spiking;
    const int has_membrane = sp->neuron == BF_NEURON_LIF || sp->neuron == BF_NEURON_IF;
    const char *neuron = bf_config_enum_text("spiking", "neuron", sp->neuron);
    /* The reference's use_STBP chose between its two stateless activations (true: the Heaviside
     * step with the 0.3 tanh' surrogate, false: clamp(x, 0, 1)); here neuron names them, and
     * use_STBP is only use_stbp's other spelling. A ported reference line would do nothing. */
    if (!has_membrane && bf_config_key_line(cfg, "spiking", "use_STBP") != 0)
        return bf_error(BF_ERR_CONFIG, "[spiking] use_STBP is an alias of use_stbp, which applies to [spiking] neuron = "
                        "lif or if only (got %s); the reference code's use_STBP = true is neuron = step here, "
                        "use_STBP = false is neuron = clamp01", neuron);
    if (!has_membrane && !sp->use_stbp)
        return bf_error(BF_ERR_CONFIG, "[spiking] use_stbp = false applies to [spiking] neuron = lif or if only (got %s, "
                        "which has no membrane to backprop through)", neuron);
    /* the spiking layers' memory rules turned off where they would not apply (a run's config.ini
     * lists them at their defaults, so only the change is refused) */
    if (!has_membrane && !sp->recompute_charge)
        return bf_error(BF_ERR_CONFIG, "[spiking] recompute_charge = false applies to [spiking] neuron = lif or if only "
                        "(got %s, which keeps no charge)", neuron);
    if (!has_membrane && !sp->fuse_bn_backward)
        return bf_error(BF_ERR_CONFIG, "[spiking] fuse_bn_backward = false applies to [spiking] neuron = lif or if only "
                        "(got %s, which has no charge to compute again)", neuron);
    if ((sp->neuron < 0 || sp->encoding != 0) && !sp->share_direct_input)
        return bf_error(BF_ERR_CONFIG, "[spiking] share_direct_input = false applies to [spiking] encoding = direct with "
                        "a neuron only (got neuron = %s, encoding = %s: %s)", neuron,
                        sp->encoding ? "rate" : "direct",
                        sp->neuron < 0 ? "no time steps" : "each step draws its own spikes");
    if ((sp->neuron < 0 || sp->neuron == BF_NEURON_CLAMP01) && !sp->pack_spikes)
        return bf_error(BF_ERR_CONFIG, "[spiking] pack_spikes = false applies to [spiking] neuron = lif, if or step only "
                        "(got %s, whose outputs are not spikes of 0 or 1)", neuron);
    /* the neuron's parameters that the chosen neuron, reset or surrogate does not read */
    static const char *const ann_ignores[] = {"encoding", "readout", "decay", "threshold", "reset",
                                              "detach_reset", "surrogate", "alpha", "width", "height",
                                              "raster_neurons", NULL};
    static const char *const clamp01_ignores[] = {"decay", "threshold", "reset", "detach_reset", "surrogate", "alpha",
                                                  "width", "height", NULL};
    static const char *const step_ignores[] = {"decay", "threshold", "reset", "detach_reset", NULL};
    static const char *const if_ignores[] = {"decay", NULL};
    static const char *const no_reset_ignores[] = {"detach_reset", NULL};
    static const char *const alpha_only[] = {"alpha", NULL}, *const width_only[] = {"width", NULL};
    static const char *const height_only[] = {"height", NULL};
    char text[320];
    static const char *const time_steps[] = {"time_steps", NULL};
    /* an ANN is one step: the reference grid's ANN configs say so (time_steps = 1) */
    if (sp->neuron < 0 && sp->time_steps != 1 && changed_key(cfg, "spiking", time_steps, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs a [spiking] neuron (lif, if, clamp01 or step); neuron = none is an "
                        "ANN with ReLU, which runs one step (time_steps = 1)", text);
    if (sp->neuron < 0 && changed_key(cfg, "spiking", ann_ignores, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs a [spiking] neuron (lif, if, clamp01 or step); neuron = none is an "
                        "ANN with ReLU, which has no time steps", text);
    if (sp->neuron == BF_NEURON_CLAMP01 && changed_key(cfg, "spiking", clamp01_ignores, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [spiking] neuron = lif, if or step only (got clamp01: clamp(x, "
                        "0, 1), with no membrane, threshold or surrogate)", text);
    if (sp->neuron == BF_NEURON_STEP && changed_key(cfg, "spiking", step_ignores, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [spiking] neuron = lif or if only (got step: the reference's "
                        "stateless 1[x > 0], with no membrane or threshold)", text);
    if (sp->neuron == BF_NEURON_IF && changed_key(cfg, "spiking", if_ignores, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [spiking] neuron = lif only (got if: integrate-and-fire, whose "
                        "membrane does not decay)", text);
    if (has_membrane && sp->reset == BF_RESET_NONE && changed_key(cfg, "spiking", no_reset_ignores, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [spiking] reset = hard or soft only (got reset = none)", text);
    if (has_membrane || sp->neuron == BF_NEURON_STEP) { /* the neurons with a surrogate */
        const int s = sp->surrogate;
        const char *surrogate = bf_config_enum_text("spiking", "surrogate", s);
        if (s != BF_SURROGATE_SIGMOID && s != BF_SURROGATE_ARCTAN &&
            changed_key(cfg, "spiking", alpha_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [spiking] surrogate = sigmoid or arctan only (got %s)", text,
                            surrogate);
        if (s != BF_SURROGATE_RECTANGULAR && s != BF_SURROGATE_TRIANGLE &&
            changed_key(cfg, "spiking", width_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [spiking] surrogate = rectangular or triangle only (got %s)",
                            text, surrogate);
        if ((s == BF_SURROGATE_SIGMOID || s == BF_SURROGATE_ARCTAN) &&
            changed_key(cfg, "spiking", height_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [spiking] surrogate = rectangular, triangle or tanh only "
                            "(got %s)", text, surrogate);
    }
    /* The stateless activations are the reference's single step: with direct coding every one of T
     * steps computes the same thing again (only dropout draws differ), T times the cost, and the
     * default T = 10 would do so unasked. */
    if ((sp->neuron == BF_NEURON_CLAMP01 || sp->neuron == BF_NEURON_STEP) && sp->encoding == 0 && sp->time_steps > 1)
        return bf_error(BF_ERR_CONFIG, "[spiking] neuron = %s is stateless, the reference's single-step activation: "
                        "with direct encoding its [spiking] time_steps = %d steps would each compute the same step; set "
                        "time_steps = 1, as the reference ran (or encoding = rate for steps that differ)", neuron,
                        sp->time_steps);
    /* Rate coding fires with probability clamp(pixel, 0, 1): normalised pixels (mean 0, std 1)
     * would clamp most of the image to never or always. */
    if (sp->encoding != 0 && cfg->data.normalize)
        return bf_error(BF_ERR_CONFIG, "[spiking] encoding = rate needs [data] normalize = false (spikes fire with "
                        "probability clamp(pixel, 0, 1), which wants pixels in [0, 1], not normalised ones)");
    return BF_OK;
}

/* Keys of the other sections that a BU-TD run ([butd] network) would ignore. */
static bf_status check_butd_options(const bf_config *cfg) {
    static const char *const bn_keys[] = {"bn_eps", "bn_momentum", NULL};
    char text[320];
    const bf_butd_config *bt = &cfg->butd;
    if (bt->network == 0) return BF_OK;
    /* the relations bf_butd_build also checks, here so that the message says where each key was set */
    const bf_dataset_kind ds = cfg->data.dataset;
    if (bt->guided && ds != BF_DATASET_MULTI_MNIST && ds != BF_DATASET_MULTI_FASHION_MNIST && ds != BF_DATASET_CELEBA)
        return bf_error(BF_ERR_CONFIG, "[butd] guided = true needs a multi-task [data] dataset (multi_mnist, "
                        "multi_fashion_mnist or celeba), not %s", bf_dataset_name(ds));
    if (bt->multi_decoders && !bt->guided)
        return bf_error(BF_ERR_CONFIG, "[butd] multi_decoders = true needs [butd] guided = true (the task picks the decoder)");
    if (bt->train_task_head && !bt->guided)
        return bf_error(BF_ERR_CONFIG, "[butd] train_task_head = true needs [butd] guided = true");
    if (bt->batch_norm && bt->network != 3)
        return bf_error(BF_ERR_CONFIG, "[butd] batch_norm = true applies to [butd] network = resnet18 only (the "
                        "reference's fc and simple nets have no batch-norm)");
    if (bt->ch_bn != 0 && (!bt->batch_norm || bt->learning != 1))
        return bf_error(BF_ERR_CONFIG, "[butd] ch_bn = %s applies with [butd] batch_norm = true and [butd] learning = "
                        "counter_hebb only (it says what the Counter-Hebb error pass does at a batch-norm)",
                        bf_config_enum_text("butd", "ch_bn", bt->ch_bn));
    if (bt->feedback_alignment && bt->learning != 1)
        return bf_error(BF_ERR_CONFIG, "[butd] feedback_alignment = true applies to [butd] learning = counter_hebb only "
                        "(backprop never updates B)");
    if (bt->noise_std > 0 && bt->learning != 1)
        return bf_error(BF_ERR_CONFIG, "[butd] noise_std applies to [butd] learning = counter_hebb only (the reference's "
                        "AddNoise scales the Counter-Hebb updates; backprop's gradients take none)");
    if (bt->loss == 1 && cfg->optim.label_smoothing > 0)
        return bf_error(BF_ERR_CONFIG, "[optim] label_smoothing applies to [butd] loss = cross_entropy only, not bce");
    if (changed_key(cfg, "model", bn_keys, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] networks, not [butd] network = %s, whose batch-norm "
                        "keeps the reference's eps 1e-5 and momentum 0.1", text,
                        bf_config_enum_text("butd", "network", cfg->butd.network));
    if (cfg->data.micro_batches > 1)
        return bf_error(BF_ERR_CONFIG, "[data] micro_batches = %d applies to [model] networks, not [butd] network = %s, "
                        "whose step takes its whole batch at once", cfg->data.micro_batches,
                        bf_config_enum_text("butd", "network", cfg->butd.network));
    if (cfg->run.val_batches > 0)
        return bf_error(BF_ERR_CONFIG, "[run] val_batches = %d applies to [model] networks, not [butd] network = %s, "
                        "which scores the whole test split (every task); [run] eval_every spaces its evaluations",
                        cfg->run.val_batches, bf_config_enum_text("butd", "network", cfg->butd.network));
    return BF_OK;
}

static const char *changed_key_in_section(const bf_config *cfg, const char *section, const char *const *except,
                                          char *text, size_t cap);

/* [fragments] network = lateral reads [run] dir, epochs, checkpoint_every and its own section: a value
 * set in the sections of the other networks would change nothing. */
static bf_status check_fragments_options(const bf_config *cfg) {
    char text[320];
    static const char *const none[] = {NULL}, *const network[] = {"network", NULL};
    if (cfg->fragments.network == 0) {
        if (changed_key_in_section(cfg, "fragments", network, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [fragments] network = lateral", text);
        return BF_OK;
    }
    static const char *const threshold[] = {"act_threshold", NULL};
    if (cfg->fragments.bernoulli && changed_key(cfg, "fragments", threshold, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s is not read with [fragments] bernoulli = true (the cells fire with "
                        "probability r^gamma)", text);
    if (cfg->butd.network != 0)
        return bf_error(BF_ERR_CONFIG, "[fragments] network = lateral and [butd] network = %s: one network a run",
                        bf_config_enum_text("butd", "network", cfg->butd.network));
    static const char *const sections[] = {"data", "model", "optim", "schedule", "spiking"};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        if (changed_key_in_section(cfg, sections[i], none, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to the engine's networks, not [fragments] network = lateral (its "
                            "lines, S1 and S2 are set in [fragments]; it reads [run] dir, epochs and checkpoint_every)",
                            text);
    return BF_OK;
}

/* The first key of `section` outside `except` (NULL-terminated) whose value is not its default. */
static const char *changed_key_in_section(const bf_config *cfg, const char *section, const char *const *except,
                                          char *text, size_t cap) {
    for (int i = 0; i < bf_config_key_count(); i++) {
        if (strcmp(bf_config_key_section(i), section) != 0) continue;
        int excepted = 0;
        for (const char *const *e = except; *e && !excepted; e++) excepted = strcmp(*e, bf_config_key_name(i)) == 0;
        const char *const one[] = {bf_config_key_name(i), NULL};
        if (!excepted && changed_key(cfg, section, one, text, cap)) return text;
    }
    return NULL;
}

/* Keys that the chosen arch, schedule, optimiser or dataset never reads: a value set there would
 * change nothing, so it is refused rather than let the researcher think it took effect. */
static bf_status check_ignored_keys(const bf_config *cfg) {
    char text[320];
    static const char *const none[] = {NULL};
    const bf_butd_config *bt = &cfg->butd;
    const char *network = bf_config_enum_text("butd", "network", bt->network);
    if (bt->network == 0) {
        static const char *const network_key[] = {"network", NULL};
        if (changed_key_in_section(cfg, "butd", network_key, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [butd] network = fc, simple or resnet18 (network = none trains the "
                            "[model] network, which reads no [butd] key)", text);
    } else {
        static const char *const butd_reads[] = {"num_classes", "init_weights", "init_exclude", NULL};
        if (changed_key_in_section(cfg, "model", butd_reads, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] networks, not [butd] network = %s (a BU-TD run reads "
                            "only num_classes, init_weights and init_exclude of [model])", text, network);
        if (changed_key_in_section(cfg, "spiking", none, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] networks, not [butd] network = %s (BU-TD networks "
                            "have no spiking neurons)", text, network);
        static const char *const train_only[] = {"train_only", "train_only_mode", NULL};
        if (changed_key(cfg, "optim", train_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] networks, not [butd] network = %s (a BU-TD run trains "
                            "every parameter)", text, network);
        static const char *const flex_kernels[] = {"flex_kernels", NULL};
        if (changed_key(cfg, "run", flex_kernels, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] networks with flex layers, not [butd] network = %s",
                            text, network);
        /* [butd] keys of another BU-TD network, or of another weight or task setting */
        static const char *const fc_only[] = {"depth", NULL}, *const simple_only[] = {"conv_channels", NULL};
        static const char *const not_resnet[] = {"hidden", NULL}, *const guided_only[] = {"task_embedding", NULL};
        static const char *const separate_only[] = {"symmetric_init", "symmetric_init_noise", "td_init",
                                                    "downsample_always_shared", "feedback_alignment", NULL};
        static const char *const symmetric_only[] = {"symmetric_init_noise", NULL};
        static const char *const resnet_only[] = {"downsample_always_shared", NULL};
        if (bt->network != 1 && changed_key(cfg, "butd", fc_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [butd] network = fc only (got %s)", text, network);
        if (bt->network != 2 && changed_key(cfg, "butd", simple_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [butd] network = simple only (got %s)", text, network);
        if (bt->network == 3 && changed_key(cfg, "butd", not_resnet, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [butd] network = fc or simple only (resnet18 has its own "
                            "widths)", text);
        if (!bt->guided && changed_key(cfg, "butd", guided_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [butd] guided = true (the task's embedding)", text);
        if (bt->shared_weights && changed_key(cfg, "butd", separate_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [butd] weights = separate only (shared weights have no B)",
                            text);
        if (!bt->symmetric_init && changed_key(cfg, "butd", symmetric_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [butd] symmetric_init = true (it perturbs B = W^T)", text);
        if (bt->network != 3 && changed_key(cfg, "butd", resnet_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [butd] network = resnet18 only (its 1x1 downsamples)", text);
    }
    const bf_model_config *m = &cfg->model;
    const bf_arch arch = m->arch;
    const char *arch_name = bf_arch_name(arch);
    const int resnet = arch == BF_ARCH_RESNET18 || arch == BF_ARCH_RESNET50;
    const int any_resnet = resnet || bf_arch_cifar_blocks(arch) > 0; /* the CIFAR ResNets have no V1 layers */
    const int vgg = arch == BF_ARCH_VGG6 || arch == BF_ARCH_VGG11 || arch == BF_ARCH_VGG16;
    const int plasticflex = arch == BF_ARCH_PF_VGG6 || arch == BF_ARCH_PF_VGG11 || arch == BF_ARCH_PF_VGG16;
    const int simple = arch == BF_ARCH_PF_SIMPLE_FLEX || arch == BF_ARCH_PF_SIMPLE_CONV;
    static const char *const cnn_only[] = {"channels", "hidden", NULL}, *const vgg_only[] = {"linear_init", NULL};
    static const char *const batchnorm[] = {"batchnorm", NULL}, *const dropout[] = {"dropout", NULL};
    static const char *const fully_flex[] = {"fully_flex", NULL};
    static const char *const v1_keys[] = {"divisive_norm", "cortical_magnification", NULL};
    static const char *const bottleneck_keys[] = {"center_surround", "local_rf", NULL};
    static const char *const polar_keys[] = {"polar_padding", "polar_antialias", NULL};
    static const char *const dog_keys[] = {"dog_amplitude", NULL};
    static const char *const tuned_keys[] = {"oci_distance", NULL};
    static const char *const local_rf_dropout[] = {"local_rf_dropout", NULL};
    if (bt->network == 0) {
        if (!resnet && changed_key(cfg, "model", v1_keys, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] arch = resnet18 or resnet50 only (the V1-constrained "
                            "ResNet), not %s", text, arch_name);
        if (!m->cortical_magnification && changed_key(cfg, "model", polar_keys, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [model] cortical_magnification = true", text);
        if (arch != BF_ARCH_RESNET50 && changed_key(cfg, "model", bottleneck_keys, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] arch = resnet50 only (the V1-constrained ResNet-50's "
                            "bottlenecks), not %s", text, arch_name);
        if (m->flex && (m->center_surround || m->local_rf) && changed_key(cfg, "model", bottleneck_keys, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s does not combine with [model] flex = true (layer1's 3x3 convs would be "
                            "flex and V1 layers at once)", text);
        if (!m->center_surround && changed_key(cfg, "model", dog_keys, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [model] center_surround = true", text);
        if (m->divisive_norm != 1 && changed_key(cfg, "model", tuned_keys, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [model] divisive_norm = tuned", text);
        if ((!m->local_rf || m->center_surround || m->divisive_norm || m->cortical_magnification) &&
            changed_key(cfg, "model", local_rf_dropout, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [model] local_rf = true without center_surround, divisive_norm and "
                            "cortical_magnification (the reference's resnet50_local_rf; its composites have no "
                            "Dropout2d)", text);
        if (arch != BF_ARCH_CNN && changed_key(cfg, "model", cnn_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] arch = cnn only (%s has its own widths)", text, arch_name);
        if (!vgg && changed_key(cfg, "model", vgg_only, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s applies to [model] arch = vgg6, vgg11 or vgg16 only (got %s)", text,
                            arch_name);
        /* where no dropout layer is built, dropout = 0 says what happens and is let through */
        if (any_resnet && (changed_key(cfg, "model", batchnorm, text, sizeof text) ||
                       (m->dropout > 0 && changed_key(cfg, "model", dropout, text, sizeof text))))
            return bf_error(BF_ERR_CONFIG, "%s does not apply to [model] arch = %s (torchvision's ResNet: batch-norm "
                            "after every conv, no dropout)", text, arch_name);
        if (arch == BF_ARCH_CNN && m->hidden == 0 && m->dropout > 0 && changed_key(cfg, "model", dropout, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s needs [model] hidden > 0 (arch = cnn puts its dropout after the hidden "
                            "layer; hidden = 0 has none)", text);
        if (simple && (changed_key(cfg, "model", batchnorm, text, sizeof text) ||
                       (arch == BF_ARCH_PF_SIMPLE_CONV && m->dropout > 0 && changed_key(cfg, "model", dropout, text, sizeof text))))
            return bf_error(BF_ERR_CONFIG, "%s does not apply to [model] arch = %s (the reference's network: no batch-norm%s)",
                            text, arch_name, arch == BF_ARCH_PF_SIMPLE_CONV ? ", no dropout" : "");
        if (plasticflex && m->flex && changed_key(cfg, "model", fully_flex, text, sizeof text))
            return bf_error(BF_ERR_CONFIG, "%s does not apply to [model] arch = %s, which has no max-pool (its learned "
                            "2x2 downsampling convs are flex layers under flex = true already)", text, arch_name);
    }
    /* the max joint's fusions, kept switchable for comparison */
    static const char *const max_fusions[] = {"fuse_flex_bn_stats", "fuse_flex_bn", "fuse_flex_scatter", NULL};
    static const char *const expand_fusions[] = {"fuse_flex_bn", "fuse_flex_scatter", NULL};
    static const char *const slide[] = {"flex_kernels", NULL};
    if (bt->network == 0 && !m->flex && changed_key(cfg, "run", slide, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs [model] flex = true", text); /* read by both joints' pool kernels */
    if (bt->network == 0 && (!m->flex || m->flex_joint != 0) && changed_key(cfg, "model", max_fusions, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] flex = true with flex_joint = channelwise_max only "
                        "(got %s)", text, m->flex ? "flex_joint = mask" : "flex = false");
    if (bt->network == 0 && m->flex && m->flex_joint == 0 && m->flex_channels != 0 &&
        changed_key(cfg, "model", expand_fusions, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [model] flex_channels = expand only (got bilinear)", text);
    /* the schedule's and the optimiser's own keys */
    const bf_schedule_config *sc = &cfg->schedule;
    const char *type = bf_config_enum_text("schedule", "type", sc->type);
    static const char *const step_size[] = {"step_size", NULL}, *const milestones[] = {"milestones", NULL};
    static const char *const gamma[] = {"gamma", NULL}, *const eta_min[] = {"eta_min", NULL};
    static const char *const warmup_start[] = {"warmup_start_factor", NULL}, *const unit[] = {"unit", NULL};
    if (sc->type != BF_SCHED_STEP && changed_key(cfg, "schedule", step_size, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [schedule] type = step only (got %s)", text, type);
    if (sc->type != BF_SCHED_MULTISTEP && changed_key(cfg, "schedule", milestones, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [schedule] type = multistep only (got %s)", text, type);
    if (sc->type != BF_SCHED_STEP && sc->type != BF_SCHED_MULTISTEP && changed_key(cfg, "schedule", gamma, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [schedule] type = step or multistep only (got %s)", text, type);
    if (sc->type != BF_SCHED_COSINE && changed_key(cfg, "schedule", eta_min, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [schedule] type = cosine only (got %s)", text, type);
    if (sc->warmup == 0 && changed_key(cfg, "schedule", warmup_start, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs [schedule] warmup > 0", text);
    if (sc->type == BF_SCHED_CONSTANT && sc->warmup == 0 && changed_key(cfg, "schedule", unit, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s changes nothing under [schedule] type = constant without warmup (the rate "
                        "never changes)", text);
    static const char *const sgd_only[] = {"momentum", NULL}, *const adam_only[] = {"beta1", "beta2", "eps", NULL};
    const char *optimizer = bf_config_enum_text("optim", "optimizer", cfg->optim.optimizer);
    if (cfg->optim.optimizer != BF_OPTIM_SGD && changed_key(cfg, "optim", sgd_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [optim] optimizer = sgd only, not %s (whose beta1 plays its "
                        "part)", text, optimizer);
    if (cfg->optim.optimizer == BF_OPTIM_SGD && changed_key(cfg, "optim", adam_only, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [optim] optimizer = adam or adamw only, not sgd", text);
    /* the keys of other datasets */
    const bf_data_config *d = &cfg->data;
    const bf_dataset_kind ds = d->dataset;
    const char *dataset = bf_dataset_name(ds);
    const int jpeg = ds == BF_DATASET_IMAGEFOLDER || ds == BF_DATASET_IMAGENET100 || ds == BF_DATASET_IMAGENET;
    static const char *const procedural_keys[] = {"procedural_classes", "procedural_size", "procedural_channels",
                                                  "procedural_train", "procedural_test", NULL};
    static const char *const jpeg_keys[] = {"image_size", "class_list", "val_dir", "train_transform", "crop_scale_min",
                                            "crop_scale_max", "crop_ratio_min", "crop_ratio_max", "val_resize", NULL};
    static const char *const crop_keys[] = {"crop_scale_min", "crop_scale_max", "crop_ratio_min", "crop_ratio_max", NULL};
    static const char *const val_labels[] = {"val_labels", NULL}, *const cifar10_std[] = {"cifar10_std", NULL};
    static const char *const multi_seed[] = {"multi_seed", NULL}, *const path[] = {"path", NULL};
    static const char *const subset_keys[] = {"subset_size", "subset_seed", NULL};
    static const char *const noise_splits[] = {"noise_splits", NULL};
    if (ds != BF_DATASET_PROCEDURAL && changed_key(cfg, "data", procedural_keys, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [data] dataset = procedural only (got %s)", text, dataset);
    if (ds == BF_DATASET_PROCEDURAL && changed_key(cfg, "data", path, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s does not apply to [data] dataset = procedural, which reads no files", text);
    if (!jpeg && changed_key(cfg, "data", jpeg_keys, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to the JPEG [data] dataset = imagefolder, imagenet100 or imagenet "
                        "only (got %s)", text, dataset);
    if (jpeg && d->train_transform == 0 && changed_key(cfg, "data", crop_keys, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [data] train_transform = random_resized_crop only (got squash)",
                        text);
    if (ds != BF_DATASET_IMAGENET && changed_key(cfg, "data", val_labels, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [data] dataset = imagenet only (ILSVRC's flat val/ directory; "
                        "got %s)", text, dataset);
    if (ds != BF_DATASET_CIFAR10 && changed_key(cfg, "data", cifar10_std, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [data] dataset = cifar10 only (got %s)", text, dataset);
    if (ds != BF_DATASET_MULTI_MNIST && ds != BF_DATASET_MULTI_FASHION_MNIST &&
        changed_key(cfg, "data", multi_seed, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s applies to [data] dataset = multi_mnist or multi_fashion_mnist only (got "
                        "%s)", text, dataset);
    if (d->subset == 0 && changed_key(cfg, "data", subset_keys, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs [data] subset = balanced or random", text);
    if (d->input_noise_std == 0 && changed_key(cfg, "data", noise_splits, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs [data] input_noise_std > 0", text);
    return BF_OK;
}

bf_status bf_config_check_relations(const bf_config *cfg) {
    const bf_schedule_config *s = &cfg->schedule;
    if (s->type == BF_SCHED_MULTISTEP && s->num_milestones == 0)
        return bf_error(BF_ERR_CONFIG, "[schedule] type = multistep needs [schedule] milestones "
                                                    "(for example milestones = 30,60)");
    if (s->type == BF_SCHED_STEP && s->step_size < 1)
        return bf_error(BF_ERR_CONFIG, "[schedule] type = step needs [schedule] step_size >= 1");
    const bf_spiking_config *sp = &cfg->model.spiking;
    if (sp->neuron < 0 && sp->readout != 0)
        return bf_error(BF_ERR_CONFIG, "[spiking] readout = spike_count needs [spiking] neuron = lif, if, "
                                                    "clamp01 or step (neuron = none is an ANN, which has no spikes)");
    if (sp->neuron < 0 && sp->encoding != 0)
        return bf_error(BF_ERR_CONFIG, "[spiking] encoding = rate needs [spiking] neuron = lif, if, clamp01 "
                                                    "or step (neuron = none is an ANN, which sees each image once)");
    bf_status spiking = check_spiking_options(cfg);
    if (spiking != BF_OK) return spiking;
    bf_status butd = check_butd_options(cfg);
    if (butd != BF_OK) return butd;
    bf_status fragments = check_fragments_options(cfg);
    if (fragments != BF_OK) return fragments;
    bf_status ignored = check_ignored_keys(cfg);
    if (ignored != BF_OK) return ignored;
    bf_arch arch = cfg->model.arch;
    if (cfg->model.freeze_fc1 && arch != BF_ARCH_PF_VGG6 && arch != BF_ARCH_PF_VGG11 && arch != BF_ARCH_PF_VGG16 &&
        arch != BF_ARCH_PF_SIMPLE_FLEX && arch != BF_ARCH_PF_SIMPLE_CONV)
        return bf_error(BF_ERR_CONFIG, "[model] freeze_fc1 = true needs [model] arch = plasticflex_vgg6, "
                                       "plasticflex_vgg11, plasticflex_vgg16, plasticflex_simple_flex or "
                                       "plasticflex_simple_conv (got %s)", bf_arch_name(arch));
    if (cfg->run.device == BF_DEVICE_SEL_CPU && cfg->run.gpus > 1)
        return bf_error(BF_ERR_CONFIG, "[run] gpus = %d needs [run] device = cuda or auto, not cpu",
                                     cfg->run.gpus);
    if (cfg->run.device == BF_DEVICE_SEL_CPU && cfg->run.force_nccl)
        return bf_error(BF_ERR_CONFIG, "[run] force_nccl = true needs [run] device = cuda or auto, not cpu");
    if (cfg->run.device == BF_DEVICE_SEL_CPU && cfg->run.rendezvous[0])
        return bf_error(BF_ERR_CONFIG, "[run] rendezvous = %s needs [run] device = cuda or auto, not cpu (it passes "
                        "NCCL's id between GPU ranks; CPU ranks meet through mpirun)", cfg->run.rendezvous);
    if (!cfg->model.init_weights[0] && cfg->model.init_exclude[0])
        return bf_error(BF_ERR_CONFIG, "[model] init_exclude = %s needs [model] init_weights (the file whose tensors "
                        "it leaves out)", cfg->model.init_exclude);
    if (cfg->optim.optimizer == BF_OPTIM_SGD && cfg->optim.nesterov && cfg->optim.momentum <= 0)
        return bf_error(BF_ERR_CONFIG, "[optim] nesterov = true needs [optim] momentum > 0");
    static const char *const train_only_mode[] = {"train_only_mode", NULL};
    char text[320];
    if (!cfg->optim.train_only[0] && changed_key(cfg, "optim", train_only_mode, text, sizeof text))
        return bf_error(BF_ERR_CONFIG, "%s needs [optim] train_only (the parameters that train)", text);
    if (cfg->optim.optimizer != BF_OPTIM_SGD && cfg->optim.nesterov)
        return bf_error(BF_ERR_CONFIG, "[optim] nesterov = true applies to [optim] optimizer = sgd only, not %s",
                        bf_config_enum_text("optim", "optimizer", cfg->optim.optimizer));
    if (s->type == BF_SCHED_COSINE && s->eta_min > cfg->optim.lr)
        return bf_error(BF_ERR_CONFIG, "[schedule] eta_min = %g is above [optim] lr = %g: the cosine "
                                                    "schedule would raise the rate", s->eta_min, cfg->optim.lr);
    bf_status flex = check_flex_options(cfg);
    if (flex != BF_OK) return flex;
    bf_dataset_kind ds = cfg->data.dataset;
    int multi_task = ds == BF_DATASET_MULTI_MNIST || ds == BF_DATASET_MULTI_FASHION_MNIST || ds == BF_DATASET_CELEBA;
    if (cfg->data.gray_to_rgb && ds != BF_DATASET_FASHION_MNIST && ds != BF_DATASET_MNIST)
        return bf_error(BF_ERR_CONFIG, "[data] gray_to_rgb = true applies to the one-channel stored "
                                              "[data] dataset = fashion_mnist or mnist, not %s", bf_dataset_name(ds));
    /* The subset is drawn by the labels over a split whose samples are held per index: the pixels
     * of a stored dataset or the file list of a JPEG one; generated data (procedural, Multi-MNIST)
     * has neither and a multi-task dataset no single label per sample. */
    int subsettable = ds == BF_DATASET_FASHION_MNIST || ds == BF_DATASET_MNIST || ds == BF_DATASET_CIFAR10 ||
                      ds == BF_DATASET_IMAGEFOLDER || ds == BF_DATASET_IMAGENET100 || ds == BF_DATASET_IMAGENET;
    if (!subsettable && cfg->data.subset)
        return bf_error(BF_ERR_CONFIG, "[data] subset needs a stored single-task [data] dataset (fashion_mnist, "
                                       "mnist, cifar10, imagefolder, imagenet100, imagenet), not %s%s",
                        multi_task ? "the multi-task " : "", bf_dataset_name(ds));
    const bf_data_config *d = &cfg->data;
    if (d->batch_size % d->micro_batches != 0)
        return bf_error(BF_ERR_CONFIG, "[data] micro_batches = %d must divide [data] batch_size = %d (the step's batch "
                        "runs in equal slices)", d->micro_batches, d->batch_size);
    if (d->norm_stats != 0 && d->cifar10_std != 0)
        return bf_error(BF_ERR_CONFIG, "[data] norm_stats = %s and [data] cifar10_std = reference both set the "
                                                    "std: keep one", d->norm_stats == 1 ? "mnist" : "half");
    if (d->crop_scale_min > d->crop_scale_max)
        return bf_error(BF_ERR_CONFIG, "[data] crop_scale_min = %g is above [data] crop_scale_max = %g",
                                     d->crop_scale_min, d->crop_scale_max);
    if (d->crop_ratio_min > d->crop_ratio_max)
        return bf_error(BF_ERR_CONFIG, "[data] crop_ratio_min = %g is above [data] crop_ratio_max = %g",
                                     d->crop_ratio_min, d->crop_ratio_max);
    int jpeg = ds == BF_DATASET_IMAGEFOLDER || ds == BF_DATASET_IMAGENET100 || ds == BF_DATASET_IMAGENET;
    if (jpeg && d->augment_crop_pad > 0)
        return bf_error(BF_ERR_CONFIG, "[data] augment_crop_pad = %d does not apply to the JPEG [data] dataset %s: "
                                                    "use train_transform = random_resized_crop", d->augment_crop_pad,
                                     bf_dataset_name(ds));
    if (d->val_resize > 0 && d->val_resize < d->image_size)
        return bf_error(BF_ERR_CONFIG, "[data] val_resize = %d is below [data] image_size = %d (the centre crop "
                                                    "must fit; 0 = squash)", d->val_resize, d->image_size);
    return BF_OK;
}

/* The keys of `list` ("section.key", NULL-terminated) whose value is not the default, as
 * "section.key=value" separated by blanks: the --set that would give them. */
/* The keys of `list` ("section.key", NULL-terminated) as "section.key=value" separated by blanks:
 * every one, so that a default changed in a later version still compares as the value it was. */
static void describe_keys(const bf_config *cfg, const char *const *list, char *out, size_t cap) {
    bf_text t = bf_text_on(out, cap);
    for (const char *const *entry = list; *entry; entry++) {
        char section[32], value[256];
        const char *dot = strchr(*entry, '.');
        snprintf(section, sizeof section, "%.*s", (int)(dot - *entry), *entry);
        bf_config_value_text(cfg, section, dot + 1, value, sizeof value);
        bf_text_add(&t, "%s%s=%s", t.len ? " " : "", *entry, value);
    }
}

void bf_config_describe_network(const bf_config *cfg, char *out, size_t cap) {
    /* what the weights compute from an image: the layers, what they hold, how they fire, the
     * input's scaling (num_classes is left out: 0 means the dataset's, and the head's shape says it) */
    static const char *const network[] = {
        "model.arch", "model.channels", "model.hidden", "model.batchnorm", "model.bn_eps", "model.freeze_fc1",
        "model.flex", "model.flex_layers", "model.fully_flex", "model.flex_joint", "model.flex_channels",
        "model.flex_mask", "model.flex_mask_factor", "model.flex_logits_bn", "model.flex_logits",
        "model.flex_attention_blocks", "model.threshold_mode",
        "model.divisive_norm", "model.oci_distance", "model.cortical_magnification", "model.polar_padding",
        "model.polar_antialias",
        "model.center_surround", "model.dog_amplitude", "model.local_rf",
        "spiking.neuron", "spiking.time_steps", "spiking.encoding", "spiking.readout", "spiking.decay",
        "spiking.threshold", "spiking.reset", "butd.network", "butd.weights", "butd.downsample_always_shared",
        "butd.guided", "butd.hidden", "butd.depth", "butd.conv_channels", "butd.task_embedding", "butd.batch_norm",
        "butd.train_task_head", "butd.multi_decoders", "butd.loss", "data.normalize", "data.norm_stats",
        "data.cifar10_std", NULL};
    describe_keys(cfg, network, out, cap);
}

void bf_config_describe_learning(const bf_config *cfg, char *out, size_t cap) {
    /* how the gradients or updates are formed, which the forward pass does not show */
    static const char *const learning[] = {"model.dropout", "model.local_rf_dropout", "model.bn_momentum", "model.flex_tie", "optim.train_only",
                                           "optim.train_only_mode",
                                           "spiking.use_stbp",
                                           "spiking.detach_reset", "spiking.surrogate", "spiking.alpha",
                                           "spiking.width", "spiking.height", "butd.learning", "butd.noise_std", "butd.ch_bn",
                                           NULL};
    describe_keys(cfg, learning, out, cap);
}

/* The value `key=` has in phrase (its length in *len), or NULL. */
static const char *phrase_value(const char *phrase, const char *key, size_t key_len, size_t *len) {
    for (const char *t = phrase; *t;) {
        size_t token = strcspn(t, " ");
        if (token > key_len && t[key_len] == '=' && strncmp(t, key, key_len) == 0) {
            *len = token - key_len - 1;
            return t + key_len + 1;
        }
        t += token;
        while (*t == ' ') t++;
    }
    return NULL;
}

int bf_config_phrase_differences(const char *saved, const char *now, char *was, char *is, size_t cap) {
    int count = 0;
    bf_text old_text = bf_text_on(was, cap), new_text = bf_text_on(is, cap);
    for (const char *t = now; *t;) {
        size_t token = strcspn(t, " "), key_len = strcspn(t, "=");
        if (key_len < token) {
            size_t old_len = 0, new_len = token - key_len - 1;
            const char *old = phrase_value(saved, t, key_len, &old_len), *new_value = t + key_len + 1;
            /* a key the checkpoint's version did not record is not compared */
            if (old && (old_len != new_len || strncmp(old, new_value, new_len) != 0)) {
                bf_text_add(&old_text, "%s%.*s=%.*s", count ? " " : "", (int)key_len, t, (int)old_len, old);
                bf_text_add(&new_text, "%s%.*s", count ? " " : "", (int)token, t);
                count++;
            }
        }
        t += token;
        while (*t == ' ') t++;
    }
    return count;
}
