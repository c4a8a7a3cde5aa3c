/* test_cirincione.c - the Cirincione divisive normalisation on the CPU (layer_cirincione.c,
 * cirincione_cpu.c; ../shared/specs/v1-constrained.md 4.2):
 *   - against PyTorch's autograd of the spec's formulas (tests/fixtures/cirincione.safetensors,
 *     written by bench/make_cirincione_fixture.py) through a one-layer model: y, dx and the gradients
 *     of A, rho, sigma, theta, v, w and bias, at 4 channels (orientations in every quadrant, centres
 *     off the taps, an A of exactly 0, whose gradient is exactly 0, a tiny and a negative A, rho^2,
 *     sigma^2 and 2 pi rho sigma under their 0.1 clamps, a negative rho) and at 7 (a negative bias);
 *   - the inits: A in [0, 1), rho, sigma and bias in [1, 2), theta in [0, 2 pi), v and w N(1, 1);
 *   - central differences of a small network, the normalisation then a linear head: the gradients
 *     of every parameter of the normalisation (clamped ones included), of a sample of the head's
 *     and of the image;
 *   - central differences of every parameter of a residual network with the normalisation where
 *     the V1 ResNet puts it (after a block's add and ReLU, run fused and in place, its output the next
 *     block's identity), its input also read by a later add (its dx accumulated over two consumers);
 *   - the bias's gradient (a sum over every element) with 1 and with 3 threads: the same bits;
 *   - resnet50_div_norm: [model] divisive_norm = cirincione plans the spec's 26,736,683 parameters
 *     at 1000 classes, named as the reference's state_dict (layer1.N.dn.A ... bias) in its order;
 *     resnet18 gets the normalisation at its 64 channels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "parity_util.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/cirincione.safetensors"

static const char *const PARAM_NAMES[7] = {"A", "rho", "sigma", "theta", "v", "w", "bias"};

static int add_cirincione(bf_model *m, int input, const char *variant) {
    (void)variant;
    return bf_model_add_cirincione(m, "dn", input);
}

/* A model of one Cirincione layer over an input of shape `in`, with the image's gradient. */
static bf_model *one_layer(bf_backend *b, bf_shape in) { return bf_parity_build_one_layer(b, in, add_cirincione, ""); }

/* The one-layer model of a fixture variant, checked (bf_parity_one_layer), and its parameters'
 * names and order, the reference's. */
static void test_fixture_variant(const bf_parity *px, const char *variant) {
    bf_model *m = bf_parity_one_layer(px, variant, add_cirincione);
    if (!m) return;
    CHECK(m->num_params == 7, "7 parameters (got %d)", m->num_params);
    for (int i = 0; i < m->num_params && i < 7; i++)
        CHECK(!strcmp(strrchr(m->params[i].name, '.') + 1, PARAM_NAMES[i]), "parameter %d is %s (got %s)", i,
              PARAM_NAMES[i], m->params[i].name);
    /* abs'(0) = 0: an amplitude of exactly 0 gets no gradient, as in PyTorch (the fixture's c4 A[5]) */
    if (!strcmp(variant, "c4")) {
        const float *A = m->param_data + m->params[0].offset, *dA = m->grad_data + m->params[0].offset;
        CHECK(A[5] == 0.0f && dA[5] == 0.0f, "A = 0 has the gradient 0 exactly (A %g, dA %g)", A[5], dA[5]);
    }
    bf_model_destroy(m);
}

static void test_fixtures(void) {
    /* sums over the image of products with the kernels' derivatives: rtol 1e-4 */
    bf_parity px = {.atol = 1e-6, .rtol = 1e-4, .name_width = 22};
    if (bf_parity_open(&px, FIXTURE, "bench/make_cirincione_fixture.py", 1)) {
        test_fixture_variant(&px, "c4"); /* spreads, clamps, A = 0 */
        test_fixture_variant(&px, "c7"); /* a negative bias */
        bf_parity_close(&px);
    }
}

/* The reference's inits (v1-constrained.md 4.2) at 32 channels: 1024 draws of each tensor. */
static void test_init(bf_backend *b) {
    bf_model *m = one_layer(b, (bf_shape){1, 32, 4, 4});
    if (!m) return;
    const struct { float lo, hi; } range[7] = {{0, 1}, {1, 2}, {1, 2}, {0, 6.2831855f}, {-INFINITY, INFINITY},
                                               {-INFINITY, INFINITY}, {1, 2}};
    for (int i = 0; i < 7; i++) {
        const bf_param *p = &m->params[i];
        const float *v = m->param_data + p->offset;
        double lo = INFINITY, hi = -INFINITY, mean = 0, sq = 0;
        for (size_t j = 0; j < p->count; j++) {
            lo = fmin(lo, v[j]), hi = fmax(hi, v[j]);
            mean += v[j], sq += (double)v[j] * v[j];
        }
        mean /= (double)p->count;
        double sd = sqrt(fmax(sq / (double)p->count - mean * mean, 0));
        printf("init %-6s %5zu values in [%.3f, %.3f], mean %.3f, sd %.3f\n", PARAM_NAMES[i], p->count, lo, hi, mean, sd);
        CHECK(lo >= range[i].lo && hi < range[i].hi, "%s drawn in [%g, %g)", PARAM_NAMES[i], range[i].lo, range[i].hi);
        if (i == 4 || i == 5) /* N(0, 1) + K // 2: sd of the mean of 1024 draws 0.03 */
            CHECK(fabs(mean - 1) < 0.15 && fabs(sd - 1) < 0.15, "%s ~ N(1, 1) (mean %g, sd %g)", PARAM_NAMES[i], mean, sd);
        else if (i < 6) /* uniform over [lo, lo + span): mean at its middle */
            CHECK(fabs(mean - (range[i].lo + range[i].hi) / 2) < 0.1 * (range[i].hi - range[i].lo) &&
                      hi - lo > 0.9 * (range[i].hi - range[i].lo),
                  "%s spread over its range (mean %g)", PARAM_NAMES[i], mean);
    }
    CHECK(m->params[6].count == 1 && m->params[6].ndim == 1, "bias is one value [1]");
    bf_model_destroy(m);
}

static void test_finite_differences(bf_backend *b) {
    enum { C = 3, P = C * C };
    const bf_shape in = {2, C, 6, 5};
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 11, &m));
    if (!m) return;
    int d = bf_model_add_cirincione(m, "dn", BF_MODEL_INPUT);
    int f = bf_model_add_flatten(m, "flatten", d);
    bf_model_add_linear(m, "fc", f, 4, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    m->input_gradient = 1;
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize: %s", bf_last_error());
    if (s != BF_OK) return bf_model_destroy(m);
    m->training = 1, m->batch = in.n;
    const size_t nx = bf_shape_count(in), n_out = (size_t)in.n * 4;
    float *x = malloc(nx * sizeof(float)), g[8];
    bf_test_fill_uniform(x, nx, 0, 2, 3); /* post-ReLU-like */
    bf_test_fill_uniform(g, n_out, -1, 1, 4);
    /* parameters away from the kinks (|A| >= 0.3, widths far from their clamps), but pair 1's rho^2,
     * pair 4's sigma^2 and pair 7's 2 pi rho sigma under their clamps, where the gradient is 0 */
    float *A = m->param_data + m->params[0].offset, *rho = m->param_data + m->params[1].offset;
    float *sigma = m->param_data + m->params[2].offset, *theta = m->param_data + m->params[3].offset;
    float *v = m->param_data + m->params[4].offset, *w = m->param_data + m->params[5].offset;
    bf_test_fill_uniform(A, P, 0.3f, 1.5f, 5);
    A[2] = -A[2], A[6] = -A[6];
    bf_test_fill_uniform(rho, P, 0.6f, 1.6f, 6);
    bf_test_fill_uniform(sigma, P, 0.6f, 1.6f, 7);
    bf_test_fill_uniform(theta, P, 0, 6.2f, 8);
    bf_test_fill_uniform(v, P, -0.5f, 3, 9);
    bf_test_fill_uniform(w, P, -0.5f, 3, 10);
    rho[1] = 0.2f, sigma[4] = -0.25f, rho[7] = 0.1f, sigma[7] = 0.1f;
    m->param_data[m->params[6].offset] = 0.9f;
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(bf_model_backward(m, g));
    const size_t dn_floats = 6 * P + 1, fc_floats = m->num_param_floats - dn_floats;
    double worst = 0;
    const double h = 1e-2;
    for (size_t k = 0; k < dn_floats + 16 + 30; k++) {
        float *p, analytic;
        if (k < dn_floats) p = &m->param_data[k], analytic = m->grad_data[k];
        else if (k < dn_floats + 16) {
            size_t i = dn_floats + (k - dn_floats) * 31 % fc_floats;
            p = &m->param_data[i], analytic = m->grad_data[i];
        } else {
            size_t i = (k - dn_floats - 16) * 7 % nx;
            p = &x[i], analytic = m->dinput[i];
        }
        double numeric = bf_test_logits_dot_slope(m, x, g, n_out, p, (float)h);
        double e = fabs(numeric - analytic) / (1e-4 + 1e-2 * fabs(numeric));
        if (e > worst) worst = e;
        if (e > 1) printf("  float %zu: analytic %.6g, numeric %.6g\n", k, analytic, numeric);
    }
    printf("cirincione -> linear: central differences of %zu parameters and 30 pixels, largest violation %.3g\n",
           dn_floats + 16, worst);
    CHECK(worst <= 1, "gradients differ from central differences (violation %g)", worst);
    /* the clamped directions: exactly 0 */
    const float *drho = m->grad_data + m->params[1].offset, *dsigma = m->grad_data + m->params[2].offset;
    CHECK(drho[7] == 0.0f && dsigma[7] == 0.0f, "both widths of a pair whose rho^2, sigma^2 and 2 pi rho sigma are "
          "clamped have the gradient 0 (%g, %g)", drho[7], dsigma[7]);
    free(x);
    bf_model_destroy(m);
}

/* The normalisation inside a residual graph, as resnet50_div_norm places it: after a block's add
 * and ReLU (one fused layer, in place), its output the next block's identity (two consumers), and
 * here its input read again by a last add, so that the gradient of that input sums the
 * normalisation's dx and the add's. The test of the single layer above cannot see how the layer's
 * dx and parameter gradients meet the model's plumbing (in-place ReLU, fused add, accumulation).
 * Every parameter's gradient against central differences of the loss; elements whose one-sided
 * differences disagree (a ReLU kink or |A| at 0 inside the step) are skipped, as test_v1_layers. */
static void test_residual_gradients(bf_backend *b) {
    enum { N = 2, C = 3, H = 8, K = 3 };
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 7, &m));
    if (!m) return;
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 4, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_batchnorm(m, "stem_bn", x, 1e-5f, 0.1f);
    const int trunk = bf_model_add_relu(m, "stem_relu", x);
    int y = bf_model_add_conv(m, "block0.conv", trunk, 4, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    y = bf_model_add_batchnorm(m, "block0.bn", y, 1e-5f, 0.1f);
    y = bf_model_add_add(m, "block0.add", y, trunk);
    const int block0 = bf_model_add_relu(m, "block0.relu", y); /* read by dn and the last add */
    const int dn = bf_model_add_cirincione(m, "block0.dn", block0);
    int z = bf_model_add_conv(m, "block1.conv", dn, 4, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    z = bf_model_add_batchnorm(m, "block1.bn", z, 1e-5f, 0.1f);
    z = bf_model_add_add(m, "block1.add", z, dn);
    z = bf_model_add_relu(m, "block1.relu", z);
    z = bf_model_add_add(m, "skip", z, block0);
    z = bf_model_add_global_avgpool(m, "gap", z);
    z = bf_model_add_flatten(m, "flatten", z);
    bf_model_add_linear(m, "fc", z, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize: %s", bf_last_error());
    if (s != BF_OK) return bf_model_destroy(m);
    CHECK(m->layers[block0].in_place && m->layers[block0].relu_joined && m->layers[dn].num_consumers == 2 &&
              m->layers[block0].num_consumers == 2,
          "the block's ReLU runs in place inside its add; dn's input and output have two consumers");
    m->training = 1, m->batch = N;
    float *xh = malloc(sizeof(float) * N * C * H * H), losses[N];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 17);
    int32_t labels[N] = {1, 2};
    float *grads = bf_test_model_xent_grads(m, xh, labels);
    CHECK(grads != NULL, "forward, loss and backward: %s", bf_last_error());
    if (!grads) {
        free(xh);
        bf_model_destroy(m);
        return;
    }
    int checked = 0, bad = 0, kinks = 0, dn_checked = 0;
    const double l0 = bf_test_model_xent(m, xh, labels, losses);
    for (int p = 0; p < m->num_params; p++) {
        const bf_param *q = &m->params[p];
        for (size_t j = 0; j < q->count; j++) {
            float *v = m->param_data + q->offset + j, saved = *v;
            /* dn's gradients are ~1e-3, the float loss's rounding ~1e-7: a wider step there (its
             * kernels are smooth in their parameters) and an absolute tolerance to match */
            const int in_dn = q->layer == dn;
            const float h = in_dn ? 1e-2f : 1e-3f;
            *v = saved + h;
            double lp = bf_test_model_xent(m, xh, labels, losses);
            *v = saved - h;
            double lm = bf_test_model_xent(m, xh, labels, losses);
            *v = saved;
            double numeric = (lp - lm) / (2 * h), analytic = grads[q->offset + j];
            double tol = (in_dn ? 3e-5 : 1e-3) + 2e-2 * fabs(analytic);
            if (fabs((lp - l0) / h - (l0 - lm) / h) > 2 * tol) { /* a kink inside the step */
                kinks++;
                continue;
            }
            checked++;
            dn_checked += in_dn;
            if (fabs(numeric - analytic) > tol && bad++ < 5)
                fprintf(stderr, "%s[%zu]: numeric %.6g analytic %.6g\n", q->name, j, numeric, analytic);
        }
    }
    printf("residual network with the Cirincione normalisation: %d parameter gradients checked (%d of dn), %d "
           "skipped at kinks, %d differ\n", checked, dn_checked, kinks, bad);
    CHECK(checked > 300 && dn_checked > 80 && kinks < checked / 10, "%d checked (%d of dn), %d at kinks", checked,
          dn_checked, kinks);
    CHECK(bad == 0, "%d of %d parameter gradients differ from central differences", bad, checked);
    free(xh), free(grads);
    bf_model_destroy(m);
}

/* The bias's gradient is a sum over every element: the same bits with any thread count. */
static void test_bias_grad_threads(void) {
    const size_t n = 300007;
    float *x = malloc(n * sizeof(float)), *s = malloc(n * sizeof(float)), *dy = malloc(n * sizeof(float));
    float *ds[2] = {malloc(n * sizeof(float)), malloc(n * sizeof(float))}, dbias[2] = {0, 0}, bias = -1.4f;
    bf_test_fill_uniform(x, n, 0, 3, 31);
    bf_test_fill_uniform(s, n, 0, 2, 32);
    bf_test_fill_uniform(dy, n, -1, 1, 33);
    const int threads[2] = {1, 3};
    double exact = 0;
    for (int t = 0; t < 2; t++) {
        bf_backend *b = NULL;
        CHECK_OK(bf_backend_create_cpu(threads[t], &b));
        if (!b) continue;
        CHECK_OK(b->ops->cirincione_divide_backward(b, x, s, &bias, dy, NULL, ds[t], &dbias[t], n));
        bf_backend_destroy(b);
    }
    for (size_t i = 0; i < n; i++) exact += (double)ds[0][i];
    printf("dbias over %zu elements: %.9g with 1 thread, %.9g with 3, -(sum of ds) %.9g\n", n, dbias[0], dbias[1],
           -exact);
    CHECK(memcmp(&dbias[0], &dbias[1], sizeof(float)) == 0 && memcmp(ds[0], ds[1], n * sizeof(float)) == 0,
          "the same bits with 1 and 3 threads");
    CHECK_CLOSE(dbias[0], -exact, 0, 1e-6, "dbias = sgn(bias) * sum ds, bias < 0");
    free(x), free(s), free(dy), free(ds[0]), free(ds[1]);
}

static bf_model *plan(const char *arch, int hw, bf_status *status) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    char set[64];
    snprintf(set, sizeof set, "model.arch=%s", arch);
    CHECK_OK(bf_config_set(&cfg, set));
    CHECK_OK(bf_config_set(&cfg, "model.divisive_norm=cirincione"));
    CHECK(cfg.model.divisive_norm == 2, "divisive_norm = cirincione is 2 (got %d)", cfg.model.divisive_norm);
    bf_model *m = NULL;
    *status = bf_model_build(NULL, &cfg.model, (bf_shape){2, 3, hw, hw}, 1000, 1, &m);
    return m;
}

static void test_resnet_div_norm(void) {
    /* v1-constrained.md 6: resnet50_div_norm = torchvision's 25,557,032 + 3 x (6 x 256^2 + 1); its
     * x_coords and y_coords are buffers bioflex generates. resnet18: 11,689,512 + 2 x (6 x 64^2 + 1). */
    const struct { const char *arch; int blocks, c; size_t params; } cases[] = {
        {"resnet50", 3, 256, 26736683},
        {"resnet18", 2, 64, 11738666},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_status s;
        bf_model *m = plan(cases[i].arch, 64, &s);
        CHECK(s == BF_OK && m, "%s with divisive_norm = cirincione at 64x64: %s", cases[i].arch,
              s == BF_OK ? "" : bf_last_error());
        if (!m) continue;
        int cir = 0, tuned = 0, pools = 0, named = 0, in_order = 0;
        for (int l = 0; l < m->num_layers; l++) {
            const bf_layer *ly = &m->layers[l];
            tuned += ly->kind == BF_LAYER_DIVNORM;
            pools += ly->kind == BF_LAYER_MAXPOOL;
            if (ly->kind != BF_LAYER_CIRINCIONE) continue;
            char want[BF_NAME_MAX];
            snprintf(want, sizeof want, "layer1.%d.dn", cir++);
            CHECK(!strcmp(ly->name, want), "normalisation %d is %s (got %s)", cir - 1, want, ly->name);
            /* after the block's final ReLU, which is its input */
            const bf_layer *src = &m->layers[ly->input[0]];
            char relu[BF_NAME_MAX];
            snprintf(relu, sizeof relu, "layer1.%d.relu", cir - 1);
            CHECK(src->kind == BF_LAYER_RELU && !strcmp(src->name, relu), "%s reads %s (got %s)", ly->name, relu,
                  src->name);
            int ok = ly->num_params == 7;
            for (int k = 0; k < 7 && ok; k++) {
                const bf_param *p = &m->params[ly->param_index[k]];
                char full[BF_NAME_MAX + 16];
                snprintf(full, sizeof full, "%s.%s", ly->name, PARAM_NAMES[k]);
                const int64_t c = cases[i].c;
                int shape_ok = k < 6 ? p->ndim == 4 && p->shape[0] == c && p->shape[1] == c && p->shape[2] == 1 &&
                                           p->shape[3] == 1
                                     : p->ndim == 1 && p->shape[0] == 1;
                ok = !strcmp(p->name, full) && shape_ok;
                named += ok;
                in_order += ok && (k == 0 || ly->param_index[k] == ly->param_index[k - 1] + 1);
            }
        }
        printf("%s_div_norm: %zu parameters, %d Cirincione normalisations, %d of %d parameters named as the "
               "reference's\n", cases[i].arch, m->num_param_floats, cir, named, 7 * cir);
        CHECK(m->num_param_floats == cases[i].params, "%s: %zu parameters, expected %zu", cases[i].arch,
              m->num_param_floats, cases[i].params);
        CHECK(cir == cases[i].blocks && tuned == 0 && pools == 1, "%s: %d Cirincione normalisations, %d tuned, %d "
              "max-pools", cases[i].arch, cir, tuned, pools);
        CHECK(named == 7 * cir && in_order == 7 * cir, "the state_dict names A, rho, sigma, theta, v, w ([c, c, 1, 1]) "
              "and bias ([1]) in that order (%d, %d of %d)", named, in_order, 7 * cir);
        bf_model_destroy(m);
    }
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    test_fixtures();
    test_init(b);
    test_finite_differences(b);
    test_residual_gradients(b);
    test_bias_grad_threads();
    test_resnet_div_norm();
    bf_backend_destroy(b);
    return bf_test_finish();
}
