/* test_butd_options.c - [butd] and [optim] options of BU-TD networks, on the CPU backend:
 *   - td_init: an independent B is U(+-sqrt(6/fan_in)) (current) or U(+-1/sqrt(fan_in)) (legacy),
 *     fan_in from B's own shape, the same draws scaled; W and the biases do not depend on it;
 *   - residual blocks with separate weights: the 1x1 downsample has its own back_weight (an
 *     independent draw, W with symmetric_init) that the TD pass uses and that gets the transposed
 *     update (zero under backprop), saved and loaded; with downsample_always_shared there is no
 *     such tensor, the parameter layout is the reference's and the TD pass goes through W; a
 *     checkpoint without it is refused naming it and the option that loads it; the config key
 *     reaches the network;
 *   - symmetric_init_noise: B starts as W^T times (1 + 0.05 N(0, 1)) per element, W untouched; refused
 *     without symmetric_init;
 *   - feedback_alignment: two SGD steps with momentum and weight decay leave every back_weight
 *     bit for bit at its initial value while W moves (without it B moves); refused with backprop;
 *   - [optim] grad_clip_norm in BU-TD training: one SGD step is the unclipped one times
 *     clip / norm, and metrics.jsonl logs grad_norm, the update's global norm. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

static int find_param(const bf_butd_net *net, const char *name) {
    for (int p = 0; p < net->num_params; p++)
        if (strcmp(net->params[p].name, name) == 0) return p;
    return -1;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > m) m = fabs((double)a[i] - b[i]);
    return m;
}

/* torch's fan_in of a tensor: everything but the first dimension. */
static double fan_in_of(const bf_param *q) {
    double f = 1;
    for (int d = 1; d < q->ndim; d++) f *= (double)q->shape[d];
    return f;
}

/* ---- td_init ---- */

static bf_butd_net *td_init_net(bf_backend *b, int legacy) {
    bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 0, .td_init_legacy = legacy, .seed = 21};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 16, 8, 8, 2, &opt, &net));
    bf_butd_add_conv(net, "conv", 32, 3, 1, 1, 1, 1); /* B [32, 16, 3, 3]: fan_in 144 */
    bf_butd_add_block(net, "block", 48, 2);           /* conv1, conv2 and the 1x1 downsample (fan_in 32) */
    bf_butd_add_linear(net, "fc", 64, 1);             /* B [768, 64]: fan_in 64 */
    CHECK_OK(bf_butd_finalize(net, 10));
    return net;
}

static void test_td_init(bf_backend *b) {
    bf_butd_net *cur = td_init_net(b, 0), *leg = td_init_net(b, 1);
    CHECK(cur->num_params == leg->num_params && cur->num_params == 15, "td_init: 15 parameters in both (%d, %d)",
          cur->num_params, leg->num_params);
    float *hc = bf_test_download(b, cur->param_data, cur->num_param_floats);
    float *hl = bf_test_download(b, leg->param_data, leg->num_param_floats);
    int backs = 0;
    for (int p = 0; p < cur->num_params && p < leg->num_params; p++) {
        const bf_param *q = &cur->params[p];
        const float *c = hc + q->offset, *l = hl + q->offset;
        if (!strstr(q->name, "back_weight")) {
            CHECK(memcmp(c, l, q->count * sizeof(float)) == 0, "td_init: %s is the same under both", q->name);
            continue;
        }
        backs++;
        double bound_cur = sqrt(6.0 / fan_in_of(q)), bound_leg = 1.0 / sqrt(fan_in_of(q));
        double mc = max_abs(c, q->count), ml = max_abs(l, q->count);
        CHECK(mc <= bound_cur * (1 + 1e-6), "td_init current: max |%s| %.5f <= sqrt(6/fan_in) %.5f", q->name, mc,
              bound_cur);
        CHECK(ml <= bound_leg * (1 + 1e-6), "td_init legacy: max |%s| %.5f <= 1/sqrt(fan_in) %.5f", q->name, ml,
              bound_leg);
        if (q->count >= 1000) /* a uniform draw this large comes within 2% of its bound */
            CHECK(mc >= 0.98 * bound_cur && ml >= 0.98 * bound_leg,
                  "td_init: %s reaches its bound (current %.5f of %.5f, legacy %.5f of %.5f)", q->name, mc, bound_cur,
                  ml, bound_leg);
        CHECK(ml < mc, "td_init: legacy max |%s| %.5f < current %.5f", q->name, ml, mc);
        double worst = 0; /* the same uniform draws, only the bound differs: legacy = current / sqrt 6 */
        for (size_t i = 0; i < q->count; i++) {
            double d = fabs(l[i] - c[i] / sqrt(6.0));
            if (d > worst) worst = d;
        }
        CHECK(worst <= 2e-6 * bound_leg, "td_init: legacy %s = current / sqrt 6 (max diff %.3g)", q->name, worst);
    }
    CHECK(backs == 6, "td_init: 6 back_weights (conv, the block's conv1, conv2, downsample, fc, head): %d", backs);
    free(hc), free(hl);
    bf_butd_destroy(cur);
    bf_butd_destroy(leg);
}

/* ---- symmetric_init_noise: B = W^T x (1 + s N(0, 1)) ---- */

static bf_butd_net *symmetric_net(bf_backend *b, float noise) {
    bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 0, .symmetric_init = 1,
                           .symmetric_init_noise = noise, .seed = 21};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 16, 8, 8, 2, &opt, &net));
    bf_butd_add_conv(net, "conv", 32, 3, 1, 1, 1, 1);
    bf_butd_add_block(net, "block", 48, 2);
    bf_butd_add_linear(net, "fc", 64, 1);
    CHECK_OK(bf_butd_finalize(net, 10));
    return net;
}

/* Against the exact W^T start of the same seed: every weight but the back_weights the same, and
 * B / W^T - 1 over all back_weights a N(0, 0.05^2) sample (mean and standard deviation within 5
 * standard errors); the config refuses the key without symmetric_init. */
static void test_symmetric_init_noise(bf_backend *b) {
    bf_butd_net *exact = symmetric_net(b, 0), *noisy = symmetric_net(b, 0.05f);
    float *he = bf_test_download(b, exact->param_data, exact->num_param_floats);
    float *hn = bf_test_download(b, noisy->param_data, noisy->num_param_floats);
    double sum = 0, sum2 = 0;
    size_t n = 0;
    int backs = 0;
    for (int p = 0; p < exact->num_params; p++) {
        const bf_param *q = &exact->params[p];
        if (!strstr(q->name, "back_weight")) {
            CHECK(memcmp(he + q->offset, hn + q->offset, q->count * sizeof(float)) == 0,
                  "symmetric_init_noise: %s is untouched", q->name);
            continue;
        }
        backs++;
        for (size_t i = 0; i < q->count; i++) {
            const double w = he[q->offset + i];
            if (fabs(w) < 1e-3) continue; /* the ratio of a weight near 0 says little */
            const double r = hn[q->offset + i] / w - 1.0;
            sum += r, sum2 += r * r, n++;
        }
    }
    const double mean = n ? sum / n : 1, sd = n ? sqrt(sum2 / n - mean * mean) : 0;
    CHECK(backs == 6 && n > 10000, "symmetric_init_noise: %d back_weights, %zu ratios", backs, n);
    CHECK(fabs(mean) < 5 * 0.05 / sqrt((double)n) && fabs(sd - 0.05) < 5 * 0.05 / sqrt(2.0 * n),
          "symmetric_init_noise = 0.05: B / W^T - 1 has mean %.5f and sd %.5f over %zu elements, want 0 and 0.05", mean,
          sd, n);
    free(he), free(hn);
    bf_butd_destroy(exact);
    bf_butd_destroy(noisy);
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "butd.network=fc"));
    CHECK_OK(bf_config_set(&cfg, "butd.weights=separate"));
    CHECK_OK(bf_config_set(&cfg, "butd.symmetric_init_noise=0.05"));
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "symmetric_init = true"),
          "symmetric_init_noise without symmetric_init is refused naming it: %s", bf_last_error());
    CHECK_OK(bf_config_set(&cfg, "butd.symmetric_init=true"));
    CHECK_OK(bf_config_validate(&cfg));
}

/* ---- the residual downsample with separate weights ---- */

enum { BN = 4, BC = 3, BH = 8, BK = 5 };

/* A stem conv (its update reads the TD activity the block sends down, through the downsample's
 * TD weight among others) and a stride-2 block with a 1x1 downsample. */
static bf_butd_net *block_net(bf_backend *b, bf_butd_learning learning, int always_shared, int symmetric, long seed) {
    bf_butd_options opt = {.learning = learning, .shared_weights = 0, .symmetric_init = symmetric,
                           .downsample_always_shared = always_shared, .seed = seed};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, BC, BH, BH, BN, &opt, &net));
    bf_butd_add_conv(net, "conv1", 4, 3, 1, 1, 1, 0);
    bf_butd_add_block(net, "layer1.0", 6, 2);
    CHECK_OK(bf_butd_finalize(net, BK));
    return net;
}

/* One Counter-Hebb (or backprop) step's update on a fixed batch, downloaded. */
static float *block_update(bf_backend *b, bf_butd_net *net) {
    float xh[BN * BC * BH * BH];
    bf_test_fill_uniform(xh, sizeof xh / sizeof xh[0], -1.0f, 1.0f, 61);
    int32_t labels[BN] = {1, 4, 0, 2};
    float *x = bf_test_upload(b, xh, sizeof xh / sizeof xh[0]), *dl = NULL, *losses = NULL;
    int32_t *lab = NULL;
    CHECK_OK(bf_alloc(b, BN * BK * sizeof(float), (void **)&dl));
    CHECK_OK(bf_alloc(b, BN * sizeof(float), (void **)&losses));
    CHECK_OK(bf_alloc(b, BN * sizeof(int32_t), (void **)&lab));
    CHECK_OK(bf_to_device(b, lab, labels, sizeof labels));
    const float *logits = NULL;
    CHECK_OK(bf_butd_forward(net, x, &logits));
    CHECK_OK(b->ops->softmax_xent(b, BN, BK, logits, lab, 0.0f, 1.0f, losses, dl)); /* per sample */
    CHECK_OK(b->ops->fill(b, net->grad_data, 7.0f, net->num_param_floats)); /* the step overwrites every update */
    CHECK_OK(bf_butd_backward(net, dl));
    float *g = bf_test_download(b, net->grad_data, net->num_param_floats);
    bf_free(b, x), bf_free(b, dl), bf_free(b, losses), bf_free(b, lab);
    return g;
}

/* dst's parameters that src has too, copied by name. */
static void copy_common_params(bf_backend *b, bf_butd_net *dst, const bf_butd_net *src) {
    for (int p = 0; p < src->num_params; p++) {
        int q = find_param(dst, src->params[p].name);
        CHECK(q >= 0, "%s in both networks", src->params[p].name);
        if (q >= 0)
            CHECK_OK(b->ops->copy(b, dst->param_data + dst->params[q].offset, src->param_data + src->params[p].offset,
                                  src->params[p].count * sizeof(float)));
    }
}

/* The downsample's B of a network: an independent draw, or W with symmetric_init. */
static void check_downsample_init(bf_backend *b, const bf_butd_net *net, int symmetric) {
    const char *what = symmetric ? "symmetric_init" : "independent";
    int wd = find_param(net, "layer1.0.downsample.weight"), td = find_param(net, "layer1.0.downsample.back_weight");
    CHECK(wd >= 0 && td >= 0 && net->layers[1].td_wd == td, "%s: separate weights give layer1.0.downsample.back_weight",
          what);
    if (wd < 0 || td < 0) return;
    const bf_param *pw = &net->params[wd], *pt = &net->params[td];
    CHECK(pt->ndim == 4 && memcmp(pt->shape, pw->shape, sizeof pt->shape) == 0 && pt->count == pw->count,
          "%s: the downsample's back_weight has W's layout", what);
    float *h = bf_test_download(b, net->param_data, net->num_param_floats);
    double bound = sqrt(6.0 / fan_in_of(pt)), diff = max_abs_diff(h + pt->offset, h + pw->offset, pw->count);
    if (symmetric)
        CHECK(diff == 0.0, "symmetric_init: the downsample's back_weight starts as W (max |B - W| %.3g)", diff);
    else
        CHECK(diff > 0.1 * bound, "independent: the downsample's back_weight is its own draw (max |B - W| %.4f)", diff);
    CHECK(max_abs(h + pt->offset, pt->count) <= bound * (1 + 1e-6), "%s: the downsample's back_weight within "
          "sqrt(6/fan_in) %.4f", what, bound);
    free(h);
}

static void test_downsample_init(bf_backend *b) {
    for (int symmetric = 0; symmetric < 2; symmetric++) {
        bf_butd_net *net = block_net(b, BF_BUTD_COUNTER_HEBB, 0, symmetric, 9);
        check_downsample_init(b, net, symmetric);
        bf_butd_destroy(net);
    }
}

/* Counter-Hebb: B gets W's update (the transposed one: a conv's B has W's layout); backprop: none. */
static void test_downsample_update(bf_backend *b) {
    for (int k = 0; k < 2; k++) {
        bf_butd_learning learning = k ? BF_BUTD_BACKPROP : BF_BUTD_COUNTER_HEBB;
        const char *what = k ? "backprop" : "counter_hebb";
        bf_butd_net *net = block_net(b, learning, 0, 0, 9);
        const bf_butd_layer *l = &net->layers[1];
        if (l->wd < 0 || l->td_wd < 0) {
            CHECK(0, "%s: the downsample has W and B", what);
            bf_butd_destroy(net);
            continue;
        }
        float *g = block_update(b, net);
        const bf_param *pw = &net->params[l->wd], *pt = &net->params[l->td_wd];
        double gw = max_abs(g + pw->offset, pw->count), gt = max_abs(g + pt->offset, pt->count);
        CHECK(gw > 1e-6, "%s: the downsample's W is updated (max %.3g)", what, gw);
        if (k == 0)
            CHECK(memcmp(g + pt->offset, g + pw->offset, pw->count * sizeof(float)) == 0,
                  "counter_hebb: the downsample's back_weight gets W's update (max diff %.3g)",
                  max_abs_diff(g + pt->offset, g + pw->offset, pw->count));
        else
            CHECK(gt == 0.0, "backprop: the downsample's back_weight is not updated (max %.3g)", gt);
        free(g);
        bf_butd_destroy(net);
    }
}

/* The layout downsample_always_shared keeps: the reference's, and bioflex's before B existed for
 * the downsample (so its seeds, and its weights, are the same as then). */
static const char *const shared_down_layout[] = {
    "conv1.weight", "conv1.back_weight", "layer1.0.conv1.weight", "layer1.0.conv1.back_weight",
    "layer1.0.conv2.weight", "layer1.0.conv2.back_weight", "layer1.0.downsample.weight", "head.weight", "head.bias",
    "head.back_weight"};

/* The TD pass uses the downsample's B: with B = W every update equals downsample_always_shared's
 * (TD through W), with B its own draw the stem's update differs. */
static void test_downsample_td(bf_backend *b) {
    bf_butd_net *ds = block_net(b, BF_BUTD_COUNTER_HEBB, 1, 0, 9), *sep = block_net(b, BF_BUTD_COUNTER_HEBB, 0, 0, 5);
    int n = (int)(sizeof shared_down_layout / sizeof shared_down_layout[0]), same = ds->num_params == n;
    for (int p = 0; same && p < n; p++) same = strcmp(ds->params[p].name, shared_down_layout[p]) == 0;
    CHECK(same, "downsample_always_shared: the reference's %d parameters in its order, no downsample back_weight", n);
    CHECK(ds->layers[1].td_wd == -1 && find_param(ds, "layer1.0.downsample.back_weight") < 0,
          "downsample_always_shared: no downsample back_weight");
    copy_common_params(b, sep, ds); /* sep differs from ds by its downsample's own B alone */
    float *g_ds = block_update(b, ds), *g_own = block_update(b, sep);
    const bf_param *stem = &ds->params[find_param(ds, "conv1.weight")];
    double d = max_abs_diff(g_own + sep->params[find_param(sep, "conv1.weight")].offset, g_ds + stem->offset,
                            stem->count);
    CHECK(d > 1e-3 * max_abs(g_ds + stem->offset, stem->count),
          "separate: the stem's update reads the TD pass through the downsample's own B (differs by %.3g)", d);
    int wd = sep->layers[1].wd, td = sep->layers[1].td_wd;
    if (wd >= 0 && td >= 0)
        CHECK_OK(b->ops->copy(b, sep->param_data + sep->params[td].offset, sep->param_data + sep->params[wd].offset,
                              sep->params[wd].count * sizeof(float)));
    float *g_w = block_update(b, sep);
    for (int p = 0; p < ds->num_params; p++) {
        const bf_param *q = &ds->params[p], *r = &sep->params[find_param(sep, q->name)];
        double e = max_abs_diff(g_w + r->offset, g_ds + q->offset, q->count);
        CHECK(e <= 1e-6 * max_abs(g_ds + q->offset, q->count),
              "separate with the downsample's B = W: %s's update is downsample_always_shared's (max diff %.3g)",
              q->name, e);
    }
    free(g_ds), free(g_own), free(g_w);
    bf_butd_destroy(ds);
    bf_butd_destroy(sep);
}

/* The downsample's B is saved and loaded; a checkpoint without it is refused naming it (and loads
 * into a network with downsample_always_shared). */
static void test_downsample_checkpoint(bf_backend *b, const char *root) {
    char with[256], without[256];
    snprintf(with, sizeof with, "%s/separate.safetensors", root);
    snprintf(without, sizeof without, "%s/always_shared.safetensors", root);
    bf_butd_net *sep = block_net(b, BF_BUTD_COUNTER_HEBB, 0, 0, 9), *ds = block_net(b, BF_BUTD_COUNTER_HEBB, 1, 0, 9);
    bf_butd_net *other = block_net(b, BF_BUTD_COUNTER_HEBB, 0, 0, 4); /* other initial weights */
    CHECK_OK(bf_butd_save(sep, with));
    CHECK_OK(bf_butd_save(ds, without));
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(with, &f));
    CHECK(f && bf_safetensors_find(f, "layer1.0.downsample.back_weight"), "the saved weights hold the downsample's B");
    bf_safetensors_close(f);
    CHECK_OK(bf_butd_load(other, with));
    float *a = bf_test_download(b, sep->param_data, sep->num_param_floats);
    float *c = bf_test_download(b, other->param_data, other->num_param_floats);
    CHECK(memcmp(a, c, sep->num_param_floats * sizeof(float)) == 0, "every tensor (the downsample's B too) reloads");
    free(a), free(c);
    bf_status s = bf_butd_load(other, without);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "layer1.0.downsample.back_weight") &&
              strstr(bf_last_error(), "downsample_always_shared = true"),
          "a checkpoint without the downsample's B is refused naming it and the option that loads it: %s",
          bf_last_error());
    CHECK_OK(bf_butd_load(ds, without));
    bf_butd_destroy(sep);
    bf_butd_destroy(other);
    bf_butd_destroy(ds);
}

/* [butd] downsample_always_shared through bf_butd_build (planned only): resnet18 has three downsamples. */
static void test_downsample_config(void) {
    int counts[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        CHECK_OK(bf_config_set(&cfg, "butd.network=resnet18"));
        CHECK_OK(bf_config_set(&cfg, "butd.weights=separate"));
        if (k) CHECK_OK(bf_config_set(&cfg, "butd.downsample_always_shared=true"));
        bf_butd_net *net = NULL;
        CHECK_OK(bf_butd_build(NULL, &cfg.butd, 3, 32, 32, 2, 10, 0, 1, &net));
        if (!net) continue;
        counts[k] = net->num_params;
        CHECK((find_param(net, "layer2.0.downsample.back_weight") >= 0) == !k &&
                  (find_param(net, "layer4.0.downsample.back_weight") >= 0) == !k,
              "resnet18, downsample_always_shared = %s: downsample back_weights %s", k ? "true" : "false",
              k ? "absent" : "present");
        CHECK(find_param(net, "layer1.0.downsample.weight") < 0, "resnet18: layer1.0 has no downsample");
        bf_butd_destroy(net);
    }
    CHECK(counts[0] == counts[1] + 3, "resnet18: three downsample back_weights more without the option (%d vs %d)",
          counts[0], counts[1]);
    /* noise_std scales Counter-Hebb updates only: with backprop it would do nothing, so it is refused */
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "butd.network=fc"));
    CHECK_OK(bf_config_set(&cfg, "butd.learning=backprop"));
    CHECK_OK(bf_config_set(&cfg, "butd.noise_std=0.1"));
    bf_butd_net *net = NULL;
    CHECK(bf_butd_build(NULL, &cfg.butd, 1, 8, 8, 2, 10, 0, 1, &net) == BF_ERR_CONFIG && !net &&
              strstr(bf_last_error(), "[butd] noise_std applies to learning = counter_hebb only"),
          "noise_std with learning = backprop is refused: %s", bf_last_error());
}

/* ---- [optim] grad_clip_norm ---- */

static void configure_clip(bf_config *cfg, const char *dir, float lr, float clip) {
    bf_config_defaults(cfg);
    const char *sets[] = {"run.threads=1", "run.device=cpu", "run.epochs=1", "data.dataset=procedural",
                          "data.procedural_size=8", "data.procedural_channels=1", "data.procedural_train=20",
                          "data.procedural_test=20", "data.batch_size=20", "optim.optimizer=sgd", "optim.momentum=0",
                          "optim.weight_decay=0", "butd.network=fc", "butd.hidden=16",
                          "butd.learning=counter_hebb", "butd.weights=separate"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) CHECK_OK(bf_config_set(cfg, sets[i]));
    snprintf(cfg->run.dir, sizeof cfg->run.dir, "%s", dir);
    cfg->optim.lr = lr;
    cfg->optim.grad_clip_norm = clip;
}

/* The grad_norm of the (one) train line of a run's metrics.jsonl; -1 when there is none. */
static double logged_grad_norm(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    size_t size = 0;
    char *text = bf_test_read_file(path, &size);
    if (!text) return -1;
    const char *train = strstr(text, "\"type\":\"train\""), *at = train ? strstr(train, "\"grad_norm\":") : NULL;
    const char *end = train ? strchr(train, '\n') : NULL;
    double norm = at && (!end || at < end) ? strtod(at + strlen("\"grad_norm\":"), NULL) : -1;
    free(text);
    return norm;
}

/* Trains cfg; *w gets the final weights in the network's layout. Returns the steps taken. */
static long train_weights(const bf_config *cfg, const bf_butd_net *layout, float *w) {
    bf_train_options opt = {.quiet = 1};
    bf_train_result res;
    memset(&res, 0, sizeof res);
    CHECK_OK(bf_train(cfg, &opt, &res));
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(res.checkpoint, &f));
    for (int p = 0; f && p < layout->num_params; p++) {
        const bf_param *q = &layout->params[p];
        CHECK_OK(bf_safetensors_copy_out(f, q->name, BF_DTYPE_F32, q->ndim, q->shape, w + q->offset));
    }
    bf_safetensors_close(f);
    return res.steps_done;
}

/* One training step (one batch, one epoch) from the seed's initial weights; *w gets the final
 * weights in the network's layout. */
static double train_one_step(const char *dir, float lr, float clip, const bf_butd_net *layout, float *w) {
    bf_config cfg;
    configure_clip(&cfg, dir, lr, clip);
    long steps = train_weights(&cfg, layout, w);
    CHECK(steps == 1, "grad_clip_norm %g: one step (%ld)", clip, steps);
    return logged_grad_norm(dir);
}

/* ---- feedback_alignment: B never moves ---- */

/* Two steps of SGD with momentum and weight decay, and of Adam with its weight decay coupled (the
 * reference's "asymmetric + weight decay" optimiser, which gives B a gradient wd*B of its own), B
 * kept across the optimiser's step: under feedback_alignment every back_weight ends bit for bit at
 * its initial value while W moves; without it B moves too. Refused with learning = backprop. */
static void test_feedback_alignment(const char *root) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    for (int run = 0; run < 4; run++) {
        const int fa = run % 2, adam = run / 2;
        bf_config cfg;
        char dir[300];
        snprintf(dir, sizeof dir, "%s/fa%d%s", root, fa, adam ? "_adam" : "");
        configure_clip(&cfg, dir, adam ? 0.01f : 0.2f, 0.0f);
        const char *sets[] = {"data.batch_size=10", "optim.momentum=0.9", "optim.weight_decay=0.01",
                              adam ? "optim.optimizer=adam" : "optim.optimizer=sgd"};
        for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) CHECK_OK(bf_config_set(&cfg, sets[i]));
        if (fa) CHECK_OK(bf_config_set(&cfg, "butd.feedback_alignment=true"));
        bf_butd_net *init = NULL;
        CHECK_OK(bf_butd_build(b, &cfg.butd, 1, 8, 8, 10, 10, 0, cfg.run.seed, &init));
        if (!init) continue;
        float *w0 = bf_test_download(b, init->param_data, init->num_param_floats);
        float *w = calloc(init->num_param_floats, sizeof(float));
        const char *opt = adam ? "adam" : "sgd";
        CHECK(train_weights(&cfg, init, w) == 2, "%s, feedback_alignment = %d: two steps", opt, fa);
        for (int p = 0; p < init->num_params; p++) {
            const bf_param *q = &init->params[p];
            const int same = memcmp(w0 + q->offset, w + q->offset, q->count * sizeof(float)) == 0;
            if (strstr(q->name, "back_weight"))
                CHECK(same == fa, "%s, feedback_alignment = %s: %s %s", opt, fa ? "true" : "false", q->name,
                      fa ? "stays at its initial value" : "moves (the mirror update)");
            else if (strstr(q->name, ".weight"))
                CHECK(!same, "%s, feedback_alignment = %s: %s moves", opt, fa ? "true" : "false", q->name);
        }
        free(w0), free(w);
        bf_butd_destroy(init);
    }
    bf_backend_destroy(b);
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "butd.network=fc"));
    CHECK_OK(bf_config_set(&cfg, "butd.weights=separate"));
    CHECK_OK(bf_config_set(&cfg, "butd.learning=backprop"));
    CHECK_OK(bf_config_set(&cfg, "butd.feedback_alignment=true"));
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "counter_hebb only"),
          "feedback_alignment with backprop is refused: %s", bf_last_error());
}

static void test_grad_clip(const char *root) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_config cfg;
    configure_clip(&cfg, root, 0.2f, 0.0f);
    bf_butd_net *init = NULL; /* the run's initial weights: the same config and seed */
    CHECK_OK(bf_butd_build(b, &cfg.butd, 1, 8, 8, 20, 10, 0, cfg.run.seed, &init));
    if (!init) {
        bf_backend_destroy(b);
        return;
    }
    size_t n = init->num_param_floats;
    float *w0 = bf_test_download(b, init->param_data, n);
    float *wu = calloc(n, sizeof(float)), *wc = calloc(n, sizeof(float));
    char dir_u[256], dir_c[256];
    snprintf(dir_u, sizeof dir_u, "%s/unclipped", root);
    snprintf(dir_c, sizeof dir_c, "%s/clipped", root);
    const float lr = 0.2f;
    double norm = train_one_step(dir_u, lr, 0.0f, init, wu);
    CHECK(norm > 0, "metrics.jsonl logs grad_norm for a BU-TD step (%g)", norm);
    double sumsq = 0; /* SGD without momentum: the update is -lr * grad_data */
    for (size_t i = 0; i < n; i++) sumsq += ((double)w0[i] - wu[i]) * ((double)w0[i] - wu[i]);
    CHECK_CLOSE(norm, sqrt(sumsq) / lr, 0, 1e-4, "grad_norm is the global norm of the update");
    float clip = (float)(0.1 * norm); /* the step shrinks to a tenth */
    double norm_c = train_one_step(dir_c, lr, clip, init, wc);
    CHECK_CLOSE(norm_c, norm, 0, 1e-6, "the clipped run logs the update's norm before clipping");
    double scale = clip / (norm + 1e-6); /* clip_scale: min(1, clip / (norm + 1e-6)) */
    for (int p = 0; p < init->num_params; p++) {
        const bf_param *q = &init->params[p];
        double worst = 0, mag = 0;
        for (size_t i = q->offset; i < q->offset + q->count; i++) {
            double expected = scale * ((double)wu[i] - w0[i]), got = (double)wc[i] - w0[i];
            if (fabs(got - expected) > worst) worst = fabs(got - expected);
            if (fabs(expected) > mag) mag = fabs(expected);
        }
        CHECK(mag > 0 && worst <= 1e-4 * mag,
              "grad_clip_norm: %s's update is the unclipped one x %.4f (max diff %.3g of %.3g)", q->name, scale, worst,
              mag);
    }
    free(w0), free(wu), free(wc);
    bf_butd_destroy(init);
    bf_backend_destroy(b);
}

int main(void) {
    char root[] = "/tmp/bioflex_butd_options_XXXXXX";
    if (!mkdtemp(root)) return 1;
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    test_td_init(b);
    test_symmetric_init_noise(b);
    test_downsample_init(b);
    test_downsample_update(b);
    test_downsample_td(b);
    test_downsample_checkpoint(b, root);
    bf_backend_destroy(b);
    test_downsample_config();
    test_grad_clip(root);
    test_feedback_alignment(root);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return bf_test_finish();
}
