/* test_static_routing.c - FlexNet's MaxPrefResNet ablation (flexnet.md 2.2) as bioflex builds it:
 *   - [model] static_routing on FlexResNet-50: a routing file fixing its 53 sites alternately to
 *     their conv and their pool gives plain convs named "<site>.flex_conv" (a FlexResNet flex
 *     conv's bias initialisation kept) and parameter-free pool sites, and the parameter count is
 *     the flex model's less the pool sites' convs;
 *   - a bad routing file is refused with its name and what is wrong: missing, not a routing file,
 *     a mask-joint layer, a conv fraction outside [0, 1], a layer twice, a site of the model that
 *     it lacks, a layer the model does not have;
 *   - [model] bn_var_floor (the hardened batch-norm): the CPU ops' running-variance update is
 *     raised to the floor where it falls under it and left alone elsewhere (the plain and the
 *     synchronised batch-norm), and weights loaded from a checkpoint (or by init_weights) have
 *     their running variances raised to it.
 * The forward, the gradients and the checkpoint round trip of routed networks: test_flex_model
 * and the cli test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/checkpoint.h"
#include "bioflex/train.h"
#include "testutil.h"

static char root[] = "/tmp/bioflex_static_routing_XXXXXX";

static int find_param(const bf_model *m, const char *name) {
    for (int i = 0; i < m->num_params; i++)
        if (!strcmp(m->params[i].name, name)) return i;
    return -1;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
}

/* The routing file of `flex`'s channel-wise max layers, the i-th with conv fraction 0.9 when i is
 * even, else 0.1 (the sites that will be convs, then pools). */
static void write_alternating_routing(const bf_model *flex, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "{\"images\": 8, \"layers\": [");
    int site = 0;
    for (int i = 0; i < flex->num_layers; i++) {
        if (flex->layers[i].kind != BF_LAYER_FLEX) continue;
        fprintf(f, "%s\n  {\"name\": \"%s\", \"joint\": \"channelwise_max\", \"conv\": %s}", site ? "," : "",
                flex->layers[i].name, site % 2 == 0 ? "0.9" : "0.1");
        site++;
    }
    fprintf(f, "\n]}\n");
    fclose(f);
}

static void test_flex_resnet50(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_RESNET50;
    cfg.model.flex = 1;
    bf_model *flex = NULL, *fixed = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 64, 64}, 100, 1, &flex));
    if (!flex) return;
    snprintf(cfg.model.static_routing, sizeof cfg.model.static_routing, "%s/resnet50_routing.json", root);
    write_alternating_routing(flex, cfg.model.static_routing);
    cfg.model.static_routing_threshold = 0.5f;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 64, 64}, 100, 1, &fixed));
    if (!fixed) {
        bf_model_destroy(flex);
        return;
    }
    int site = 0, convs_ok = 0, pools_ok = 0, bias_ok = 0;
    size_t pool_conv_floats = 0;
    for (int i = 0; i < flex->num_layers; i++) {
        const bf_layer *l = &flex->layers[i];
        if (l->kind != BF_LAYER_FLEX) continue;
        char weight[BF_NAME_MAX + 32], bias[BF_NAME_MAX + 32];
        snprintf(weight, sizeof weight, "%s.flex_conv.weight", l->name);
        snprintf(bias, sizeof bias, "%s.flex_conv.bias", l->name);
        const int w = find_param(fixed, weight), b = find_param(fixed, bias);
        if (site % 2 == 0) {
            convs_ok += w >= 0 && b >= 0 && fixed->layers[fixed->params[w].layer].kind == BF_LAYER_CONV &&
                        fixed->params[w].count == flex->params[l->param_index[0]].count;
            bias_ok += b >= 0 && fixed->params[b].init == flex->params[l->param_index[1]].init;
        } else {
            pools_ok += w < 0 && b < 0;
            pool_conv_floats += flex->params[l->param_index[0]].count + flex->params[l->param_index[1]].count;
        }
        site++;
    }
    int fixed_flex = 0, fixed_convs = 0;
    for (int i = 0; i < fixed->num_layers; i++) {
        fixed_flex += fixed->layers[i].kind == BF_LAYER_FLEX && !bf_flex_has_conv(&fixed->layers[i]);
        fixed_convs += fixed->layers[i].kind == BF_LAYER_CONV;
    }
    CHECK(site == 53 && convs_ok == 27 && bias_ok == 27 && pools_ok == 26 && fixed_flex == 26 && fixed_convs == 27,
          "FlexResNet-50 fixed alternately: %d sites, %d plain convs with the flex tensors' names and sizes (%d with the "
          "flex bias init), %d pool sites without parameters (want 53, 27, 27, 26)", site, convs_ok, bias_ok, pools_ok);
    CHECK(fixed->num_param_floats == flex->num_param_floats - pool_conv_floats,
          "the fixed network has the flex one's %zu parameters less the pool sites' %zu (got %zu)", flex->num_param_floats,
          pool_conv_floats, fixed->num_param_floats);
    bf_model_destroy(fixed);
    bf_model_destroy(flex);
}

/* A routing file `text` for the flex CNN (channels 4, 6: sites features.0 and features.4) is
 * refused by the model build with an error containing `want`; returns the build's status. */
static bf_status expect_refused(const char *label, const char *text, const char *want) {
    bf_model_config mc = bf_test_cnn_config(4, 0, 0.0f);
    mc.channels[1] = 6;
    mc.num_channels = 2;
    mc.flex = 1;
    mc.static_routing_threshold = 0.5f;
    snprintf(mc.static_routing, sizeof mc.static_routing, "%s/%s", root, text ? "bad.json" : "absent.json");
    if (text) write_text(mc.static_routing, text);
    bf_model *m = NULL;
    const bf_status s = bf_model_build(NULL, &mc, (bf_shape){2, 1, 16, 16}, 3, 1, &m);
    CHECK(s != BF_OK && !m && strstr(bf_last_error(), want) && strstr(bf_last_error(), mc.static_routing),
          "%s: refused naming the file and '%s' (got %s: %s)", label, want, bf_status_name(s), bf_last_error());
    bf_model_destroy(m);
    return s;
}

#define SITE(name, conv) "{\"name\": \"" name "\", \"joint\": \"channelwise_max\", \"conv\": " conv "}"

static void test_bad_files(void) {
    expect_refused("a missing file", NULL, "cannot open");
    { /* a directory given as the file: it opens, and its size read as LONG_MAX was malloc'd */
        bf_model_config mc = bf_test_cnn_config(4, 0, 0.0f);
        mc.channels[1] = 6;
        mc.num_channels = 2;
        mc.flex = 1;
        snprintf(mc.static_routing, sizeof mc.static_routing, "%s", root);
        bf_model *m = NULL;
        const bf_status s = bf_model_build(NULL, &mc, (bf_shape){2, 1, 16, 16}, 3, 1, &m);
        CHECK(s == BF_ERR_IO && !m && strstr(bf_last_error(), "not a regular file") && strstr(bf_last_error(), root),
              "a directory as the routing file refused naming it (got %s: %s)", bf_status_name(s), bf_last_error());
        bf_model_destroy(m);
    }
    expect_refused("not JSON", "hello", "is not a routing file");
    expect_refused("no layers", "{\"images\": 3}", "is not a routing file");
    expect_refused("a mask-joint layer", "{\"layers\": [" SITE("features.0", "0.5") ", {\"name\": \"features.4\", \"joint\": \"mask\"}]}",
                   "layer features.4 has joint mask");
    expect_refused("a fraction above 1", "{\"layers\": [" SITE("features.0", "1.5") "," SITE("features.4", "0.1") "]}",
                   "layer features.0 has no \"conv\" fraction in [0, 1]");
    expect_refused("a layer twice", "{\"layers\": [" SITE("features.0", "0.5") "," SITE("features.0", "0.1") "]}",
                   "lists layer features.0 twice");
    /* a file that does not fit the model is a config error (exit status 2), not a layer shape that
     * fails: bioflex-train once reported it as images too small for the arch */
    CHECK(expect_refused("a site missing", "{\"layers\": [" SITE("features.0", "0.7") "]}", "has no layer features.4") ==
              BF_ERR_CONFIG,
          "a routing file without one of the model's sites is a config error");
    expect_refused("a layer the model lacks",
                   "{\"layers\": [" SITE("features.0", "0.7") "," SITE("features.4", "0.2") "," SITE("features.8", "0.2") "]}",
                   "names layer features.8, which this cnn model does not have");
    /* the same file with both sites is accepted: features.0 a conv, features.4 a pool */
    bf_model_config mc = bf_test_cnn_config(4, 0, 0.0f);
    mc.channels[1] = 6;
    mc.num_channels = 2;
    mc.flex = 1;
    mc.static_routing_threshold = 0.5f;
    snprintf(mc.static_routing, sizeof mc.static_routing, "%s/good.json", root);
    write_text(mc.static_routing, "{\"layers\": [" SITE("features.0", "0.7") "," SITE("features.4", "0.2") "]}");
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(NULL, &mc, (bf_shape){2, 1, 16, 16}, 3, 1, &m));
    CHECK(m && m->layers[0].kind == BF_LAYER_CONV && !strcmp(m->layers[0].name, "features.0.flex_conv") &&
              m->layers[4].kind == BF_LAYER_FLEX && !bf_flex_has_conv(&m->layers[4]),
          "a good file: features.0 the conv features.0.flex_conv, features.4 a pool site");
    bf_model_destroy(m);
}

/* The running variance of a channel after one update, as PyTorch computes it, in double. */
static double updated_var(double running, const float *x, int n, int c, int hw, int ch, double momentum) {
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++)
        for (int p = 0; p < hw; p++) sum += x[((size_t)i * c + ch) * hw + p];
    const double mean = sum / (n * hw);
    for (int i = 0; i < n; i++)
        for (int p = 0; p < hw; p++) sq += pow(x[((size_t)i * c + ch) * hw + p] - mean, 2);
    return (1 - momentum) * running + momentum * sq / (n * hw - 1);
}

/* Channel 0 is constant (variance 0) with a running variance of 0.01: its update, 0.009, is raised
 * to the floor 0.5; channel 1 varies, from 4: its update stays PyTorch's. The same through the
 * synchronised batch-norm's ops with one rank. */
static void test_var_floor_ops(void) {
    enum { N = 4, C = 2, HW = 9 };
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return;
    float x[N * C * HW], gamma[C] = {1, 1}, beta[C] = {0, 0}, y[N * C * HW], mean[C], invstd[C];
    bf_test_fill_uniform(x, N * C * HW, -2, 2, 31);
    for (int i = 0; i < N; i++)
        for (int p = 0; p < HW; p++) x[(size_t)i * C * HW + p] = 0.75f;
    const bf_bn_shape s = {.n = N, .c = C, .hw = HW, .eps = 1e-4f, .momentum = 0.1f, .var_floor = 0.5f};
    const double want1 = updated_var(4.0, x, N, C, HW, 1, 0.1);
    float running_mean[C] = {0, 0}, running_var[C] = {0.01f, 4.0f};
    CHECK_OK(b->ops->batchnorm_forward_train(b, &s, x, gamma, beta, y, mean, invstd, running_mean, running_var));
    CHECK(running_var[0] == 0.5f && fabs(running_var[1] - want1) < 1e-6 * want1,
          "batchnorm_forward_train with var_floor 0.5: running variances %.6g (want the floor) and %.6g (want %.6g)",
          running_var[0], running_var[1], want1);
    double stats[C + 1], sq[C];
    float sync_mean[C] = {0, 0}, sync_var[C] = {0.01f, 4.0f};
    CHECK_OK(b->ops->batchnorm_sync_sums(b, &s, x, stats));
    CHECK_OK(b->ops->batchnorm_sync_sqdev(b, &s, x, stats, sq));
    CHECK_OK(b->ops->batchnorm_sync_forward_apply(b, &s, x, stats, sq, gamma, beta, y, mean, invstd, sync_mean, sync_var));
    CHECK(sync_var[0] == 0.5f && fabs(sync_var[1] - want1) < 1e-6 * want1,
          "batchnorm_sync_forward_apply with var_floor 0.5: running variances %.6g and %.6g (want 0.5, %.6g)",
          sync_var[0], sync_var[1], want1);
    bf_backend_destroy(b);
}

/* A checkpoint whose batch-norm has running variances 1e-7 and 2, loaded into a model with
 * bn_var_floor = 1e-3 (by bf_checkpoint_load_model and by init_weights): 1e-3 and 2. */
static void test_var_floor_load(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model = bf_test_cnn_config(2, 0, 0.0f);
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run", root);
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL, *floored = NULL;
    bf_optimizer *opt = NULL;
    if (b) CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){2, 1, 8, 8}, 3, 1, &m));
    if (m) CHECK_OK(bf_optimizer_create(b, &cfg.optim, m->num_param_floats, &opt));
    int var = -1;
    for (int i = 0; m && i < m->num_buffers; i++)
        if (strstr(m->buffers[i].name, "running_var")) var = i;
    if (!m || !opt || var < 0) return;
    float *v = m->buffer_data + m->buffers[var].offset;
    v[0] = 1e-7f, v[1] = 2.0f;
    bf_train_state st;
    memset(&st, 0, sizeof st);
    st.epoch = 1, st.eval_top1 = -1;
    char written[BF_PATH_MAX];
    CHECK_OK(bf_checkpoint_save(&cfg, m, opt, &st, written));
    cfg.model.bn_var_floor = 1e-3f;
    CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){2, 1, 8, 8}, 3, 1, &floored));
    if (floored) {
        const float *fv = floored->buffer_data + floored->buffers[var].offset;
        CHECK_OK(bf_checkpoint_load_model(written, floored));
        CHECK(fv[0] == 1e-3f && fv[1] == 2.0f, "checkpoint load with bn_var_floor 1e-3: running variances %g, %g (want "
              "1e-3, 2)", fv[0], fv[1]);
        floored->buffer_data[floored->buffers[var].offset] = 7.0f;
        CHECK_OK(bf_checkpoint_init_weights(written, "", floored));
        CHECK(fv[0] == 1e-3f && fv[1] == 2.0f, "init_weights with bn_var_floor 1e-3: running variances %g, %g", fv[0], fv[1]);
    }
    bf_optimizer_destroy(b, opt);
    bf_model_destroy(floored);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

int main(void) {
    if (!mkdtemp(root)) bf_test_skip("mkdtemp failed");
    test_flex_resnet50();
    test_bad_files();
    test_var_floor_ops();
    test_var_floor_load();
    bf_test_remove_dir_if_passed(root);
    return bf_test_finish();
}
