/* test_cirincione_cuda.c - the Cirincione divisive normalisation on CUDA against the CPU reference, on
 * the same inputs (skipped, exit 77, without a GPU): the kernel generation and its backward at 64 x
 * 64 channel pairs at the reference's inits and at 7 x 7 with the clamps, A = 0, negative widths and
 * far centres; the division and its backward (bit for bit; the bias's gradient, a sum over every
 * element, to 1e-6 and bit for bit between two GPU runs), with and without dx, dS over S, for a
 * positive, a negative and a zero bias; and a small network through it (a conv, ReLU, the
 * normalisation, a linear head) forward and backward: logits, the image's gradient and every
 * parameter's gradient. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "cuda_pair.h"
#include "testutil.h"

enum { K = 3, TAPS = K * K };

/* The six parameters of p pairs: the reference's inits, or (edge) with clamps and odd values. */
static void fill_params(float *prm[6], int p, int edge, unsigned long seed) {
    bf_test_fill_uniform(prm[0], (size_t)p, edge ? -1.0f : 0.0f, 1, seed);      /* A */
    bf_test_fill_uniform(prm[1], (size_t)p, 1, 2, seed + 1);                     /* rho */
    bf_test_fill_uniform(prm[2], (size_t)p, 1, 2, seed + 2);                     /* sigma */
    bf_test_fill_uniform(prm[3], (size_t)p, 0, 6.2831855f, seed + 3);            /* theta */
    bf_test_fill_uniform(prm[4], (size_t)p, -1.5f, 3.5f, seed + 4);              /* v */
    bf_test_fill_uniform(prm[5], (size_t)p, -1.5f, 3.5f, seed + 5);              /* w */
    if (!edge) return;
    prm[0][0] = 0.0f, prm[0][1] = 1e-4f;      /* A = 0: no gradient; a tiny A */
    prm[1][2] = 0.2f, prm[2][3] = 0.28f;      /* rho^2, sigma^2 under 0.1 */
    prm[1][4] = 0.1f, prm[2][4] = 0.12f;      /* 2 pi rho sigma under 0.1 too */
    prm[1][5] = -1.2f, prm[2][6] = -0.3f;     /* negative widths */
    prm[4][7] = 6.0f, prm[5][8] = -4.0f;      /* centres far off the taps */
}

static void check_kernels(bf_backend *cpu, bf_backend *gpu, int p, int edge) {
    float *host[6];
    for (int i = 0; i < 6; i++) host[i] = malloc((size_t)p * sizeof(float));
    fill_params(host, p, edge, 100 + (unsigned long)p);
    pair prm[6], g = pair_out((size_t)p * TAPS), dg = pair_rand((size_t)p * TAPS, -1, 1), d[6];
    for (int i = 0; i < 6; i++) prm[i] = pair_from(host[i], (size_t)p), d[i] = pair_out((size_t)p);
    CHECK_OK(cpu->ops->cirincione_kernels(cpu, p, K, prm[0].c, prm[1].c, prm[2].c, prm[3].c, prm[4].c, prm[5].c, g.c));
    CHECK_OK(gpu->ops->cirincione_kernels(gpu, p, K, prm[0].g, prm[1].g, prm[2].g, prm[3].g, prm[4].g, prm[5].g, g.g));
    char what[96];
    snprintf(what, sizeof what, "cirincione_kernels %d x %dx%d%s", p, K, K, edge ? " (clamps, A = 0, ...)" : "");
    pair_compare(what, g, 1e-7, 1e-6);
    CHECK_OK(cpu->ops->cirincione_kernels_backward(cpu, p, K, prm[0].c, prm[1].c, prm[2].c, prm[3].c, prm[4].c,
                                                   prm[5].c, dg.c, d[0].c, d[1].c, d[2].c, d[3].c, d[4].c, d[5].c));
    CHECK_OK(gpu->ops->cirincione_kernels_backward(gpu, p, K, prm[0].g, prm[1].g, prm[2].g, prm[3].g, prm[4].g,
                                                   prm[5].g, dg.g, d[0].g, d[1].g, d[2].g, d[3].g, d[4].g, d[5].g));
    static const char *const names[6] = {"dA", "drho", "dsigma", "dtheta", "dv", "dw"};
    for (int i = 0; i < 6; i++) {
        snprintf(what, sizeof what, "cirincione_kernels_backward %s", names[i]);
        pair_compare(what, d[i], 1e-7, 1e-5);
    }
    if (edge) { /* A = 0 (sgn 0), and pair 4's widths, every clamp of theirs active: exactly 0 on the GPU too */
        float *dc = NULL, *dgpu = NULL, *rc = NULL, *rg = NULL, *sc = NULL, *sg = NULL;
        if (pair_download("dA", d[0], &dc, &dgpu) && pair_download("drho", d[1], &rc, &rg) &&
            pair_download("dsigma", d[2], &sc, &sg))
            CHECK(dgpu[0] == 0.0f && rg[4] == 0.0f && sg[4] == 0.0f,
                  "the GPU's gradient of A = 0 and of the fully clamped widths is 0 (%g %g %g)", dgpu[0], rg[4], sg[4]);
        free(dc), free(dgpu), free(rc), free(rg), free(sc), free(sg);
    }
    for (int i = 0; i < 6; i++) pair_free(&prm[i]), pair_free(&d[i]), free(host[i]);
    pair_free(&g), pair_free(&dg);
}

static void check_divide(bf_backend *cpu, bf_backend *gpu, float bias_value) {
    const size_t n = 100003; /* past the CPU's threading threshold, odd */
    pair x = pair_rand(n, 0, 3), s = pair_rand(n, 0, 2), y = pair_out(n), dy = pair_rand(n, -1, 1), dx = pair_out(n);
    pair bias = pair_from(&bias_value, 1), ds = pair_out(n), db = pair_out(1);
    char what[96];
    CHECK_OK(cpu->ops->cirincione_divide(cpu, x.c, s.c, bias.c, y.c, n));
    CHECK_OK(gpu->ops->cirincione_divide(gpu, x.g, s.g, bias.g, y.g, n));
    snprintf(what, sizeof what, "cirincione_divide, bias %g", bias_value);
    pair_compare_exact(what, y);
    CHECK_OK(cpu->ops->cirincione_divide_backward(cpu, x.c, s.c, bias.c, dy.c, dx.c, ds.c, db.c, n));
    CHECK_OK(gpu->ops->cirincione_divide_backward(gpu, x.g, s.g, bias.g, dy.g, dx.g, ds.g, db.g, n));
    pair_compare_exact("cirincione_divide_backward dx", dx);
    pair_compare_exact("... ds", ds);
    pair_compare("... dbias (a sum of ds)", db, 1e-6, 1e-6);
    if (bias_value == 0.0f) { /* sgn(0) = 0 */
        float *c = NULL, *g = NULL;
        if (pair_download("dbias", db, &c, &g))
            CHECK(c[0] == 0.0f && g[0] == 0.0f, "a bias of 0 has the gradient 0 (%g, %g)", c[0], g[0]);
        free(c), free(g);
    }
    /* again on the GPU: the same bits */
    float *again = bf_test_alloc(gpu, 1);
    CHECK_OK(gpu->ops->cirincione_divide_backward(gpu, x.g, s.g, bias.g, dy.g, NULL, ds.g, again, n));
    check_repeats("... dbias again (no dx)", db.g, again, 1);
    bf_free(gpu, again);
    /* dS over S, no dx, no dbias (the layer's use without parameter gradients) */
    CHECK_OK(cpu->ops->cirincione_divide_backward(cpu, x.c, s.c, bias.c, dy.c, NULL, s.c, NULL, n));
    CHECK_OK(gpu->ops->cirincione_divide_backward(gpu, x.g, s.g, bias.g, dy.g, NULL, s.g, NULL, n));
    pair_compare_exact("... ds over s, no dx, no dbias", s);
    pair_compare("... equal to the separate ds", (pair){s.c, ds.g, n}, 0, 0);
    pair_free(&x), pair_free(&s), pair_free(&y), pair_free(&dy), pair_free(&dx), pair_free(&bias), pair_free(&ds);
    pair_free(&db);
}

static bf_model *build(bf_backend *b, bf_shape in) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 31, &m));
    if (!m) return NULL;
    int x = bf_model_add_conv(m, "conv1", BF_MODEL_INPUT, 8, 3, 1, 1, 1, 0, BF_INIT_KAIMING_NORMAL_FAN_OUT);
    x = bf_model_add_relu(m, "relu", x);
    x = bf_model_add_cirincione(m, "dn", x);
    x = bf_model_add_global_avgpool(m, "avgpool", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, 5, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    return pair_finalize_model(m, in.n);
}

static void check_model(bf_backend *cpu, bf_backend *gpu) {
    const bf_shape in = {3, 3, 12, 12};
    bf_model *mc = build(cpu, in), *mg = build(gpu, in);
    if (mc && mg) {
        /* narrower Gaussians than the init's and a few clamped widths, the same on both */
        float *host[6];
        for (int i = 0; i < 6; i++) host[i] = malloc(64 * sizeof(float));
        fill_params(host, 64, 1, 900);
        for (int i = 0; i < 6; i++) {
            const bf_param *p = &mc->params[mc->layers[2].param_index[i]];
            CHECK_OK(bf_to_device(cpu, mc->param_data + p->offset, host[i], 64 * sizeof(float)));
            CHECK_OK(bf_to_device(gpu, mg->param_data + p->offset, host[i], 64 * sizeof(float)));
            free(host[i]);
        }
        const size_t nx = bf_shape_count(in), nl = (size_t)in.n * 5;
        pair x = pair_rand(nx, -1, 1), dl = pair_rand(nl, -1, 1);
        pair_compare_model_passes(mc, mg, x, dl);
        pair_free(&x), pair_free(&dl);
    }
    bf_model_destroy(mc);
    bf_model_destroy(mg);
}

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 4242)) return bf_test_finish();
    check_kernels(cpu, gpu, 64 * 64, 0); /* the reference's inits at 64 channels */
    check_kernels(cpu, gpu, 7 * 7, 1);   /* clamps, A = 0, negative widths, far centres */
    check_divide(cpu, gpu, 1.37f);
    check_divide(cpu, gpu, -0.8f);
    check_divide(cpu, gpu, 0.0f);
    CHECK(gpu->ops->cirincione_kernels(gpu, 4, 4, NULL, NULL, NULL, NULL, NULL, NULL, NULL) == BF_ERR_ARG,
          "cirincione_kernels without tensors is refused");
    check_model(cpu, gpu);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
