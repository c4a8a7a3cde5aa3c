/* test_v1_layers.c - the V1-constrained ResNet's layers on the CPU (layer_v1.c, divnorm_cpu.c;
 * ../shared/specs/v1-constrained.md):
 *   - the tuned divisive normalisation and the center-surround (DoG) layer against PyTorch's autograd
 *     of the spec's formulas (tests/fixtures/divnorm.safetensors and dog.safetensors, written by
 *     bench/make_divnorm_fixture.py and make_dog_fixture.py): y, dx and every parameter's gradient
 *     through a one-layer model, clamped widths included;
 *   - the DoG kernels' polarity: single-signed with the code's amplitude, not with the paper's;
 *   - W against the spec's formula computed here in double (with the 1/(2.5066 s) factor the op
 *     leaves out), and its columns' sums;
 *   - central differences of a small network, polar transform then divisive normalisation then a
 *     linear head: the gradients of the image and of every parameter;
 *   - the V1 ResNet-50s' parameters (torchvision's 25,557,032 plus 256 widths per normalisation),
 *     names, and the polar transform's refusal of maps that are not 32x32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "parity_util.h"
#include "testutil.h"

#define DIVNORM_FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/divnorm.safetensors"
#define DOG_FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/dog.safetensors"

/* Adds one V1 layer for a fixture variant (bf_parity_one_layer). */
typedef int (*add_layer_fn)(bf_model *m, int input, const char *variant);

static int add_divnorm(bf_model *m, int input, const char *variant) {
    (void)variant;
    return bf_model_add_divnorm(m, "dn", input, BF_OCI_OPPONENT);
}

/* the fixture's DoG variants: 3 of 6 channels, 3x3 (amp_paper: the paper's amplitude); v1: 16 of 64, 5x5 */
static int add_dog(bf_model *m, int input, const char *variant) {
    if (!strcmp(variant, "v1")) return bf_model_add_dog(m, "dog", input, 16, 5, 0);
    return bf_model_add_dog(m, "dog", input, 3, 3, !strcmp(variant, "amp_paper"));
}

/* The one-layer model of a fixture variant, checked (bf_parity_one_layer). */
static void test_fixture_variant(const bf_parity *px, const char *variant, add_layer_fn add) {
    bf_model_destroy(bf_parity_one_layer(px, variant, add));
}

static void test_fixtures(void) {
    bf_parity px = {.atol = 1e-6, .rtol = 1e-4, .name_width = 22};
    if (bf_parity_open(&px, DIVNORM_FIXTURE, "bench/make_divnorm_fixture.py", 1)) {
        test_fixture_variant(&px, "c8", add_divnorm);   /* 8 channels, widths below the 0.5 clamp included */
        test_fixture_variant(&px, "c256", add_divnorm); /* the reference's 256, at their initial widths */
        bf_parity_close(&px);
    }
    /* the gradients through the taps' norms (a sum over all kernels) cancel in part: rtol 1e-3 */
    bf_parity dog = {.atol = 1e-6, .rtol = 1e-3, .name_width = 22};
    if (bf_parity_open(&dog, DOG_FIXTURE, "bench/make_dog_fixture.py", 1)) {
        test_fixture_variant(&dog, "small", add_dog);     /* clamped widths included */
        test_fixture_variant(&dog, "amp_paper", add_dog); /* amplitude 1/(pi s) */
        test_fixture_variant(&dog, "v1", add_dog);        /* 16 of 64 channels, 5x5 */
        bf_parity_close(&dog);
    }
}

/* The spec's observation (2.3): with the code's amplitude s/pi every kernel is one blob of the sign
 * of -total_scale; the paper's 1/(pi s) gives the centre and the surround opposite signs. */
static void test_dog_polarity(bf_backend *b) {
    enum { P = 256, K = 5, T = K * K };
    float s1[P], s2[P], tau[P], w[P * T], norms[T];
    bf_test_fill_uniform(s1, P, 1, 2, 21);
    bf_test_fill_uniform(s2, P, 1.05f, 2, 22);
    bf_test_fill_uniform(tau, P, -3, 3, 23);
    for (int amp_paper = 0; amp_paper < 2; amp_paper++) {
        CHECK_OK(b->ops->dog_kernels(b, P, K, amp_paper, s1, s2, tau, w, norms));
        int single_signed = 0;
        for (int q = 0; q < P; q++) {
            int same = 1;
            for (int t = 0; t < T; t++) same &= (w[q * T + t] < 0) == (tau[q] > 0);
            single_signed += same;
        }
        printf("amplitude %s: %d of %d kernels single-signed with the sign of -total_scale\n",
               amp_paper ? "1/(pi s)" : "s/pi", single_signed, P);
        if (!amp_paper) CHECK(single_signed == P, "the code's DoG kernels are all single-signed (%d of %d)", single_signed, P);
        else CHECK(single_signed < P / 2, "the paper's DoG kernels change sign (%d of %d single-signed)", single_signed, P);
    }
}

/* W from the spec's formula, in double, the constant factor included; with oci_distance = similar
 * the distance is the ring distance instead (spec 12 Q5's reading). */
static void test_weights_formula(bf_backend *b, bf_oci_distance distance) {
    enum { C = 256 };
    const int similar = distance == BF_OCI_SIMILAR;
    float sigma[C], *w = malloc(sizeof(float) * C * C);
    bf_test_fill_uniform(sigma, C, 32, 33, 7);
    sigma[5] = 0.2f; /* clamped to 0.5 */
    CHECK_OK(b->ops->divnorm_weights(b, C, distance, sigma, w));
    double worst = 0, worst_sum = 0;
    for (int j = 0; j < C; j++) {
        double s = sigma[j] > 0.5f ? sigma[j] : 0.5, g[C], total = 0, sum = 0;
        for (int r = 0; r < C; r++) {
            int m = ((j - r) % C + C) % C;                /* base rolled by r */
            double d = similar ? (m < C - m ? m : C - m) : fabs((double)m - C / 2);
            g[r] = exp(-d * d / (2 * s * s)) / (2.5066 * s);
            total += g[r];
        }
        for (int r = 0; r < C; r++) {
            double e = fabs(w[r * C + j] - g[r] / total) / (1e-12 + 1e-6 * g[r] / total);
            if (e > worst) worst = e;
            sum += w[r * C + j];
        }
        if (fabs(sum - 1) > worst_sum) worst_sum = fabs(sum - 1);
    }
    printf("W at 256 channels (%s): largest violation %.3g of the spec's formula, column sums within %.2g of 1\n",
           similar ? "similar" : "opponent", worst, worst_sum);
    CHECK(worst <= 1, "W differs from the spec's formula (violation %g)", worst);
    CHECK(worst_sum < 1e-5, "W's columns sum to 1 (off by %g)", worst_sum);
    /* opponent: the channel opposite weighs most, the channel itself least (spec 4.1: e^-8 of it at
     * width 32); similar: the other way round */
    printf("channel 0's weight on channel 128 (opposite): %.4g, on itself: %.4g\n", w[128 * C + 0], w[0 * C + 0]);
    if (!similar)
        CHECK(w[0 * C + 0] < 1e-3f * w[128 * C + 0], "channel 0 inhibits channel 128, opposite it, most and itself least");
    else
        CHECK(w[128 * C + 0] < 1e-3f * w[0 * C + 0] && w[1 * C + 0] == w[255 * C + 0],
              "similar: channel 0 inhibits itself most, the opposite channel least, its two neighbours alike");
    free(w);
}

/* A network whose every gradient is checked against central differences of its loss. */
static void test_finite_differences(bf_backend *b, bf_oci_distance distance) {
    const bf_shape in = {2, 3, 32, 32};
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 11, &m));
    if (!m) return;
    int p = bf_model_add_polar(m, "lpp", BF_MODEL_INPUT, 0, 0);
    int d = bf_model_add_divnorm(m, "dn", p, distance);
    int f = bf_model_add_flatten(m, "flatten", d);
    bf_model_add_linear(m, "fc", f, 4, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    m->input_gradient = 1;
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize: %s", bf_last_error());
    if (s != BF_OK) return bf_model_destroy(m);
    m->training = 1, m->batch = in.n;
    const size_t nx = bf_shape_count(in), n_out = (size_t)in.n * 4;
    float *x = malloc(nx * sizeof(float)), g[8];
    bf_test_fill_uniform(x, nx, 0, 2, 3); /* post-ReLU-like: S >= 0 */
    bf_test_fill_uniform(g, n_out, -1, 1, 4);
    float sig[3] = {0.9f, 1.4f, 2.2f}; /* narrow enough for W to move with them */
    memcpy(m->param_data, sig, sizeof sig);
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(bf_model_backward(m, g));
    double worst = 0;
    const double h = 1e-2;
    /* every width, a sample of the head's weights, and a sample of pixels (those the polar map reads) */
    for (int k = 0; k < 3 + 20 + 40; k++) {
        float *v, analytic;
        if (k < 3) v = &m->param_data[k], analytic = m->grad_data[k];
        else if (k < 23) {
            size_t i = 3 + (size_t)(k - 3) * 97 % (m->num_param_floats - 3);
            v = &m->param_data[i], analytic = m->grad_data[i];
        } else {
            size_t i = (size_t)(k - 23) * 151 % nx;
            v = &x[i], analytic = m->dinput[i];
        }
        double numeric = bf_test_logits_dot_slope(m, x, g, n_out, v, (float)h);
        double e = fabs(numeric - analytic) / (1e-4 + 1e-2 * fabs(numeric));
        if (e > worst) worst = e;
    }
    printf("polar -> divnorm (%s) -> linear: central differences, largest violation %.3g\n",
           distance == BF_OCI_SIMILAR ? "similar" : "opponent", worst);
    CHECK(worst <= 1, "gradients differ from central differences (violation %g)", worst);
    free(x);
    bf_model_destroy(m);
}

typedef struct v1_parts {
    int dog, local, divnorm, polar;
} v1_parts;

/* Every V1 layer inside a residual graph as the ResNet places them (outputs with two consumers, an
 * in-place ReLU before the normalisation, batch-norms in training mode): each parameter's gradient
 * (every 5th) against central differences of the loss, elements at a ReLU's kink skipped as
 * test_model's residual check does. */
static void test_residual_v1_gradients(bf_backend *b) {
    enum { N = 2, C = 3, H = 32, K = 3 };
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 5, &m));
    if (!m) return;
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 4, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_batchnorm(m, "stem_bn", x, 1e-5f, 0.1f);
    x = bf_model_add_relu(m, "stem_relu", x);
    int trunk = bf_model_add_polar(m, "lpp", x, 0, 0); /* two consumers: the branch and the shortcut */
    int y = bf_model_add_conv(m, "branch.conv", trunk, 4, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    y = bf_model_add_dog(m, "branch.dog", y, 2, 3, 0);
    y = bf_model_add_batchnorm(m, "branch.bn", y, 1e-5f, 0.1f);
    y = bf_model_add_add(m, "add", y, trunk);
    y = bf_model_add_relu(m, "relu", y);
    int dn = bf_model_add_divnorm(m, "dn", y, BF_OCI_OPPONENT); /* two consumers again */
    int z = bf_model_add_local(m, "local", dn, 4, 3, 1, 1);
    z = bf_model_add_batchnorm(m, "local_bn", z, 1e-5f, 0.1f);
    z = bf_model_add_add(m, "add2", z, dn);
    z = bf_model_add_relu(m, "relu2", z);
    z = bf_model_add_global_avgpool(m, "gap", z);
    z = bf_model_add_flatten(m, "flatten", z);
    bf_model_add_linear(m, "fc", z, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize: %s", bf_last_error());
    if (s != BF_OK) return bf_model_destroy(m);
    m->training = 1, m->batch = N;
    /* the local layer's N(0, 1) weights scaled down, so that the loss stays smooth at this step size */
    for (int i = 0; i < m->num_params; i++)
        if (m->layers[m->params[i].layer].kind == BF_LAYER_LOCAL)
            for (size_t j = 0; j < m->params[i].count; j++) m->param_data[m->params[i].offset + j] *= 0.1f;
    float *xh = malloc(sizeof(float) * N * C * H * H), losses[N];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 9);
    int32_t labels[N] = {2, 0};
    float *grads = bf_test_model_xent_grads(m, xh, labels);
    CHECK(grads != NULL, "forward, loss and backward: %s", bf_last_error());
    if (!grads) {
        free(xh);
        bf_model_destroy(m);
        return;
    }
    int checked = 0, bad = 0, kinks = 0;
    const double l0 = bf_test_model_xent(m, xh, labels, losses);
    for (int p = 0; p < m->num_params; p++) {
        const bf_param *q = &m->params[p];
        size_t stride = q->count > 2000 ? 97 : 5; /* the locally connected weight: a sample */
        for (size_t j = 0; j < q->count; j += stride) {
            float *v = m->param_data + q->offset + j, saved = *v;
            const float h = 5e-4f; /* larger steps cross the ReLUs' kinks of many of the 8,192 elements */
            *v = saved + h;
            double lp = bf_test_model_xent(m, xh, labels, losses);
            *v = saved - h;
            double lm = bf_test_model_xent(m, xh, labels, losses);
            *v = saved;
            double numeric = (lp - lm) / (2 * h), analytic = grads[q->offset + j], tol = 2e-4 + 2e-2 * fabs(analytic);
            if (fabs((lp - l0) / h - (l0 - lm) / h) > 2 * tol + 2e-3) { /* a kink inside the step */
                kinks++;
                continue;
            }
            checked++;
            if (fabs(numeric - analytic) > tol && bad++ < 5)
                fprintf(stderr, "%s[%zu]: numeric %.6g analytic %.6g\n", q->name, j, numeric, analytic);
        }
    }
    printf("residual network of V1 layers: %d parameter gradients checked, %d skipped at kinks, %d differ\n", checked,
           kinks, bad);
    CHECK(checked > 200 && kinks < checked / 5, "%d checked, %d at kinks", checked, kinks);
    CHECK(bad == 0, "%d of %d parameter gradients differ from central differences", bad, checked);
    free(xh), free(grads);
    bf_model_destroy(m);
}

static bf_model *plan_v1(v1_parts v, int hw, bf_status *status) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_RESNET50;
    cfg.model.center_surround = v.dog;
    cfg.model.local_rf = v.local;
    cfg.model.divisive_norm = v.divnorm;
    cfg.model.cortical_magnification = v.polar;
    bf_model *m = NULL;
    *status = bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, hw, hw}, 1000, 1, &m);
    return m;
}

/* The parameters a model has whose names have `suffix`, checking each has `numel` elements. */
static int count_named(const bf_model *m, const char *suffix, size_t numel) {
    int n = 0;
    size_t len = strlen(suffix);
    for (int p = 0; p < m->num_params; p++) {
        size_t l = strlen(m->params[p].name);
        if (l >= len && !strcmp(m->params[p].name + l - len, suffix)) n += m->params[p].count == numel ? 1 : 1000;
    }
    return n;
}

/* [model] oci_distance reaches every tuned normalisation of the ResNet-50 the config builds. */
static void test_oci_distance_key(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "model.arch=resnet50"));
    CHECK_OK(bf_config_set(&cfg, "model.divisive_norm=tuned"));
    CHECK_OK(bf_config_set(&cfg, "model.oci_distance=similar"));
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, 64, 64}, 10, 1, &m));
    int similar = 0, dn = 0;
    for (int l = 0; m && l < m->num_layers; l++)
        if (m->layers[l].kind == BF_LAYER_DIVNORM) dn++, similar += m->layers[l].oci_distance == BF_OCI_SIMILAR;
    CHECK(dn == 3 && similar == 3, "oci_distance = similar: %d of %d tuned normalisations use it (want 3 of 3)", similar, dn);
    bf_model_destroy(m);
}

static void test_resnet50_variants(void) {
    /* v1-constrained.md 6, trained parameters (the reference's counts also hold its frozen tensors,
     * which bioflex generates: 3 x 65,536 channel distances per tuned norm, 41 per DoG layer):
     * resnet50 25,557,032; + 256 widths per tuned norm; + 768 per DoG layer; the locally connected
     * layer's 9,437,184 in place of a 36,864 conv; the polar transform has none. Composite a's
     * 34,959,656 is also the Brain-Score submission's trainable count. */
    const struct { v1_parts v; size_t params; const char *model_type; } cases[] = {
        {{0, 0, 0, 0}, 25557032, "resnet50"},
        {{0, 0, 1, 0}, 25557800, "resnet50_tuned_norm"},
        {{0, 0, 0, 1}, 25557032, "resnet50_cortical_magnification"},
        {{1, 0, 0, 0}, 25559336, "resnet50_center_surround"},
        {{0, 1, 0, 0}, 34957352, "resnet50_local_rf"},
        {{1, 1, 1, 1}, 34959656, "resnet50_composite_a"},
        {{0, 1, 1, 1}, 34958120, "resnet50_composite_b"},
        {{1, 1, 0, 1}, 34958888, "resnet50_composite_c"},
        {{1, 1, 1, 0}, 34959656, "resnet50_composite_d"},
        {{0, 0, 1, 1}, 25557800, "resnet50_composite_e"},
        {{0, 1, 0, 1}, 34957352, "resnet50_composite_f"},
        {{0, 1, 1, 0}, 34958120, "resnet50_composite_g"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_status s;
        const v1_parts v = cases[i].v;
        bf_model *m = plan_v1(v, 64, &s);
        CHECK(s == BF_OK && m, "%s at 64x64: %s", cases[i].model_type, s == BF_OK ? "" : bf_last_error());
        if (!m) continue;
        int dn = 0, polar = -1, pools = 0;
        for (int l = 0; l < m->num_layers; l++) {
            dn += m->layers[l].kind == BF_LAYER_DIVNORM;
            pools += m->layers[l].kind == BF_LAYER_MAXPOOL;
            if (m->layers[l].kind == BF_LAYER_POLAR) polar = l;
        }
        printf("%-34s %zu parameters, %d normalisations, %s\n", cases[i].model_type, m->num_param_floats, dn,
               polar >= 0 ? "polar transform" : "max-pool");
        CHECK(m->num_param_floats == cases[i].params, "%s: %zu parameters, expected %zu", cases[i].model_type,
              m->num_param_floats, cases[i].params);
        CHECK(dn == 3 * v.divnorm && pools == !v.polar, "%s: %d normalisations, %d max-pools", cases[i].model_type, dn,
              pools);
        /* the reference's state_dict names: composites conv2.conv / conv2.dog in blocks 0 and 1, the
         * DoG-only model conv2.0 / conv2.1 in all three; the locally connected layer1.2.conv2, in
         * resnet50_local_rf layer1.2.conv2.1 after its Dropout2d(0.5) layer1.2.conv2.0 */
        const int composite = v.local || v.divnorm || v.polar, local_alone = v.local && !v.dog && !v.divnorm && !v.polar;
        int dogs = count_named(m, ".dog_conv.sigma1", 256), dog_convs = count_named(m, ".conv2.conv.weight", 36864) +
                                                                         count_named(m, ".conv2.0.weight", 36864);
        int expect_dogs = v.dog ? (composite ? 2 : 3) : 0;
        CHECK(dogs == expect_dogs && dog_convs == expect_dogs &&
                  count_named(m, composite ? ".conv2.dog.dog_conv.total_scale" : ".conv2.1.dog_conv.total_scale", 256) ==
                      expect_dogs,
              "%s: %d DoG layers named as the reference (expected %d)", cases[i].model_type, dogs, expect_dogs);
        CHECK(count_named(m, "layer1.2.conv2.weight", v.local ? 9437184 : 36864) == (local_alone || (v.dog && !composite) ? 0 : 1),
              "%s: layer1.2.conv2.weight, %s", cases[i].model_type, v.local ? "locally connected" : "a 3x3 conv");
        int dropouts = 0, dropout2d = 0;
        for (int l = 0; l < m->num_layers; l++) {
            const bf_layer *d = &m->layers[l];
            dropouts += d->kind == BF_LAYER_DROPOUT;
            dropout2d += d->kind == BF_LAYER_DROPOUT && !strcmp(d->name, "layer1.2.conv2.0") && d->dropout_p == 0.5f &&
                         d->dropout_group == 16 * 16 && m->layers[l + 1].kind == BF_LAYER_LOCAL;
        }
        CHECK(dropouts == local_alone && dropout2d == local_alone &&
                  count_named(m, "layer1.2.conv2.1.weight", 9437184) == local_alone,
              "%s: %s", cases[i].model_type,
              local_alone ? "Dropout2d(0.5) layer1.2.conv2.0 by 16x16 planes before the LC layer1.2.conv2.1"
                          : "no dropout layer");
        if (polar >= 0) {
            bf_shape out = m->layers[polar].out_shape;
            CHECK(!strcmp(m->layers[polar].name, "lpp") && out.c == 64 && out.h == 16 && out.w == 16,
                  "the polar transform lpp gives 64x16x16 (got %dx%dx%d)", out.c, out.h, out.w);
        }
        if (v.divnorm) {
            int named = 0;
            for (int p = 0; p < m->num_params; p++)
                named += !strcmp(m->params[p].name, "layer1.2.dn.sigmas") && m->params[p].shape[0] == 256;
            CHECK(named == 1, "layer1.2.dn.sigmas [256], the reference's name");
        }
        bf_model_destroy(m);
    }
    bf_status s;
    bf_model *m = plan_v1((v1_parts){0, 0, 0, 1}, 224, &s);
    CHECK(!m && s == BF_ERR_CONFIG && strstr(bf_last_error(), "64x64 images"),
          "cortical magnification at 224x224 is a config error naming the 64x64 images it needs: %s", bf_last_error());
    bf_model_destroy(m);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    test_fixtures();
    test_weights_formula(b, BF_OCI_OPPONENT);
    test_weights_formula(b, BF_OCI_SIMILAR);
    test_dog_polarity(b);
    test_finite_differences(b, BF_OCI_OPPONENT);
    test_finite_differences(b, BF_OCI_SIMILAR);
    test_residual_v1_gradients(b);
    test_resnet50_variants();
    test_oci_distance_key();
    bf_backend_destroy(b);
    return bf_test_finish();
}
