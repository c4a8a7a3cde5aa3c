/* test_v1_layers.c - the V1-constrained ResNet's layers on the CPU (layer_v1.c, divnorm_cpu.c;
 * ../shared/specs/v1-constrained.md):
 *   - the tuned divisive normalisation against PyTorch's autograd of the spec's formula
 *     (tests/fixtures/divnorm.safetensors, bench/make_divnorm_fixture.py): y, dx and dsigmas through
 *     a model, at 8 channels (widths below the 0.5 clamp included) and at the reference's 256;
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
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/divnorm.safetensors"

static float *fixture_tensor(const bf_st_file *f, const char *name, size_t *n) {
    const bf_st_tensor *t = bf_safetensors_find(f, name);
    CHECK(t && t->dtype == BF_DTYPE_F32, "fixture tensor %s (rerun bench/make_divnorm_fixture.py)", name);
    if (!t) return NULL;
    *n = t->nbytes / sizeof(float);
    float *out = malloc(t->nbytes);
    if (out) memcpy(out, t->data, t->nbytes);
    return out;
}

/* A model of one divisive normalisation over [n, c, h, w], with the image's gradient. */
static bf_model *divnorm_model(bf_backend *b, bf_shape in) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 1, &m));
    if (!m) return NULL;
    bf_model_add_divnorm(m, "dn", BF_MODEL_INPUT);
    m->input_gradient = 1;
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize: %s", bf_last_error());
    if (s != BF_OK) bf_model_destroy(m), m = NULL;
    if (m) m->training = 1, m->batch = in.n;
    return m;
}

static void compare(const char *what, const float *a, const float *b, size_t n, double atol, double rtol) {
    size_t at = 0;
    double v = bf_test_max_violation(a, b, n, atol, rtol, &at);
    printf("  %-34s largest violation %.3g (at %zu: %.8g vs %.8g)\n", what, v, at, a[at], b[at]);
    CHECK(v <= 1, "%s: violation %g at %zu", what, v, at);
}

static void test_fixture_variant(bf_backend *b, const bf_st_file *f, const char *variant) {
    char name[64];
    size_t nx = 0, nc = 0, ndy = 0, ny = 0, ndx = 0, nds = 0;
    const bf_st_tensor *t = bf_safetensors_find(f, (snprintf(name, sizeof name, "%s.input", variant), name));
    CHECK(t && t->ndim == 4, "%s: 4-D input", name);
    if (!t || t->ndim != 4) return;
    bf_shape in = {(int)t->shape[0], (int)t->shape[1], (int)t->shape[2], (int)t->shape[3]};
    float *x = fixture_tensor(f, name, &nx);
    float *sig = fixture_tensor(f, (snprintf(name, sizeof name, "%s.sigmas", variant), name), &nc);
    float *dy = fixture_tensor(f, (snprintf(name, sizeof name, "%s.dy", variant), name), &ndy);
    float *y_ref = fixture_tensor(f, (snprintf(name, sizeof name, "%s.y", variant), name), &ny);
    float *dx_ref = fixture_tensor(f, (snprintf(name, sizeof name, "%s.dx", variant), name), &ndx);
    float *ds_ref = fixture_tensor(f, (snprintf(name, sizeof name, "%s.dsigmas", variant), name), &nds);
    bf_model *m = divnorm_model(b, in);
    if (m && x && sig && dy && y_ref && dx_ref && ds_ref && nc == (size_t)in.c && ny == nx && ndx == nx && nds == nc) {
        printf("%s: [%d, %d, %d, %d]\n", variant, in.n, in.c, in.h, in.w);
        float *y = malloc(nx * sizeof(float)), *dx = malloc(nx * sizeof(float)), *ds = malloc(nc * sizeof(float));
        const float *logits = NULL;
        memcpy(m->param_data, sig, nc * sizeof(float));
        CHECK_OK(bf_model_forward(m, x, &logits));
        memcpy(y, logits, nx * sizeof(float));
        CHECK_OK(bf_model_backward(m, dy));
        memcpy(dx, m->dinput, nx * sizeof(float));
        memcpy(ds, m->grad_data, nc * sizeof(float));
        compare("y", y, y_ref, nx, 1e-6, 1e-5);
        compare("dx", dx, dx_ref, nx, 1e-6, 1e-4);
        compare("dsigmas", ds, ds_ref, nc, 1e-6, 1e-3);
        int clamped_zero = 1;
        for (size_t j = 0; j < nc; j++)
            if (sig[j] < 0.5f) clamped_zero &= ds[j] == 0.0f;
        CHECK(clamped_zero, "%s: widths below 0.5 get no gradient", variant);
        free(y), free(dx), free(ds);
    }
    bf_model_destroy(m);
    free(x), free(sig), free(dy), free(y_ref), free(dx_ref), free(ds_ref);
}

/* W from the spec's formula, in double, the constant factor included. */
static void test_weights_formula(bf_backend *b) {
    enum { C = 256 };
    float sigma[C], *w = malloc(sizeof(float) * C * C);
    bf_test_fill_uniform(sigma, C, 32, 33, 7);
    sigma[5] = 0.2f; /* clamped to 0.5 */
    CHECK_OK(b->ops->divnorm_weights(b, C, sigma, w));
    double worst = 0, worst_sum = 0;
    for (int j = 0; j < C; j++) {
        double s = sigma[j] > 0.5f ? sigma[j] : 0.5, g[C], total = 0, sum = 0;
        for (int r = 0; r < C; r++) {
            int m = ((j - r) % C + C) % C;                /* base rolled by r */
            double d = fabs((double)m - C / 2);
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
    printf("W at 256 channels: largest violation %.3g of the spec's formula, column sums within %.2g of 1\n", worst,
           worst_sum);
    CHECK(worst <= 1, "W differs from the spec's formula (violation %g)", worst);
    CHECK(worst_sum < 1e-5, "W's columns sum to 1 (off by %g)", worst_sum);
    /* the opponent channel weighs most, the channel itself least (spec 4.1: e^-8 of it at width 32) */
    printf("channel 0's weight on channel 128 (opposite): %.4g, on itself: %.4g\n", w[128 * C + 0], w[0 * C + 0]);
    CHECK(w[0 * C + 0] < 1e-3f * w[128 * C + 0], "channel 0 inhibits channel 128, opposite it, most and itself least");
    free(w);
}

/* A network whose every gradient is checked against central differences of its loss. */
static double loss_of(bf_model *m, const float *x, const float *g, size_t n_out) {
    const float *logits = NULL;
    if (bf_model_forward(m, x, &logits) != BF_OK) return NAN;
    double l = 0;
    for (size_t i = 0; i < n_out; i++) l += (double)g[i] * logits[i];
    return l;
}

static void test_finite_differences(bf_backend *b) {
    const bf_shape in = {2, 3, 32, 32};
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 11, &m));
    if (!m) return;
    int p = bf_model_add_polar(m, "lpp", BF_MODEL_INPUT, 0, 0);
    int d = bf_model_add_divnorm(m, "dn", p);
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
        float keep = *v;
        *v = keep + (float)h;
        double up = loss_of(m, x, g, n_out);
        *v = keep - (float)h;
        double down = loss_of(m, x, g, n_out);
        *v = keep;
        double numeric = (up - down) / (2 * h), e = fabs(numeric - analytic) / (1e-4 + 1e-2 * fabs(numeric));
        if (e > worst) worst = e;
    }
    printf("polar -> divnorm -> linear: central differences, largest violation %.3g\n", worst);
    CHECK(worst <= 1, "gradients differ from central differences (violation %g)", worst);
    free(x);
    bf_model_destroy(m);
}

static bf_model *plan_v1(int divnorm, int polar, int hw, bf_status *status) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_RESNET50;
    cfg.model.divisive_norm = divnorm;
    cfg.model.cortical_magnification = polar;
    bf_model *m = NULL;
    *status = bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, hw, hw}, 1000, 1, &m);
    return m;
}

static void test_resnet50_variants(void) {
    /* v1-constrained.md 6: resnet50 25,557,032; tuned norm +3 x 256 trained widths (the reference also
     * counts its 3 x 65,536 frozen distances, which bioflex generates); cortical magnification +0 */
    const struct { int divnorm, polar; size_t params; const char *model_type; } cases[] = {
        {0, 0, 25557032, "resnet50"},
        {1, 0, 25557800, "resnet50_tuned_norm"},
        {0, 1, 25557032, "resnet50_cortical_magnification"},
        {1, 1, 25557800, "resnet50_composite_e"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_status s;
        bf_model *m = plan_v1(cases[i].divnorm, cases[i].polar, 64, &s);
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
        CHECK(dn == 3 * cases[i].divnorm && pools == !cases[i].polar, "%s: %d normalisations, %d max-pools",
              cases[i].model_type, dn, pools);
        if (polar >= 0) {
            bf_shape out = m->layers[polar].out_shape;
            CHECK(!strcmp(m->layers[polar].name, "lpp") && out.c == 64 && out.h == 16 && out.w == 16,
                  "the polar transform lpp gives 64x16x16 (got %dx%dx%d)", out.c, out.h, out.w);
        }
        if (cases[i].divnorm) {
            int named = 0;
            for (int p = 0; p < m->num_params; p++)
                named += !strcmp(m->params[p].name, "layer1.2.dn.sigmas") && m->params[p].shape[0] == 256;
            CHECK(named == 1, "layer1.2.dn.sigmas [256], the reference's name");
        }
        bf_model_destroy(m);
    }
    bf_status s;
    bf_model *m = plan_v1(0, 1, 224, &s);
    CHECK(!m && s == BF_ERR_CONFIG && strstr(bf_last_error(), "64x64 images"),
          "cortical magnification at 224x224 is a config error naming the 64x64 images it needs: %s", bf_last_error());
    bf_model_destroy(m);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    bf_st_file *f = NULL;
    bf_status s = bf_safetensors_read(FIXTURE, &f);
    CHECK(s == BF_OK, "%s: %s (bench/make_divnorm_fixture.py writes it)", FIXTURE, bf_last_error());
    if (f) {
        printf("fixture %s (torch %s)\n", FIXTURE, bf_safetensors_meta(f, "torch_version"));
        test_fixture_variant(b, f, "c8");
        test_fixture_variant(b, f, "c256");
        bf_safetensors_close(f);
    }
    test_weights_formula(b);
    test_finite_differences(b);
    test_resnet50_variants();
    bf_backend_destroy(b);
    return bf_test_finish();
}
