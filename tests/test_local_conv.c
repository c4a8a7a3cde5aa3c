/* test_local_conv.c - the locally connected layer on the CPU (layer_local.c, local_conv_cpu.c;
 * ../shared/specs/v1-constrained.md 3):
 *   - against PyTorch's autograd of the reference's LocallyConnected2d (tests/fixtures/local_conv.safetensors,
 *     bench/make_local_fixture.py): y, dx and dw through a model, at k 3 stride 1 pad 1 and at an odd
 *     k 3 stride 2 pad 0 on 7x5;
 *   - the ops on a third shape (k 2, stride 2, pad 1, non-square): the forward against the spec's sum
 *     in double, dx and dw against central differences;
 *   - the same bits with 1 and 2 threads at the spec's layer (64 -> 64, 16x16, k 3) with a batch whose
 *     backward data runs in several chunks, and that dx against the spec's sum for two of its images;
 *   - argument errors, and the spec's 9,437,184 weights of the composite's layer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/local_conv.safetensors"

static float *fixture_tensor(const bf_st_file *f, const char *name, size_t *n) {
    const bf_st_tensor *t = bf_safetensors_find(f, name);
    CHECK(t && t->dtype == BF_DTYPE_F32, "fixture tensor %s (rerun bench/make_local_fixture.py)", name);
    if (!t) return NULL;
    *n = t->nbytes / sizeof(float);
    float *out = malloc(t->nbytes);
    if (out) memcpy(out, t->data, t->nbytes);
    return out;
}

static void compare(const char *what, const float *a, const float *b, size_t n, double atol, double rtol) {
    size_t at = 0;
    double v = bf_test_max_violation(a, b, n, atol, rtol, &at);
    printf("  %-34s largest violation %.3g (at %zu: %.8g vs %.8g)\n", what, v, at, a[at], b[at]);
    CHECK(v <= 1, "%s: violation %g at %zu", what, v, at);
}

/* ---- the spec's sums in double, straight from the formula (ops.h) ---- */

static double x_pad(const bf_local_shape *s, const float *x, int i, int c, int row, int col) {
    row -= s->pad, col -= s->pad;
    if (row < 0 || row >= s->h_in || col < 0 || col >= s->w_in) return 0.0;
    return x[(((size_t)i * s->c_in + c) * s->h_in + row) * s->w_in + col];
}

static size_t w_index(const bf_local_shape *s, int o, int c, int oi, int oj, int tap) {
    return ((((size_t)o * s->c_in + c) * s->h_out + oi) * s->w_out + oj) * (size_t)(s->k * s->k) + tap;
}

static void naive_forward(const bf_local_shape *s, const float *x, const float *w, float *y) {
    for (int i = 0; i < s->n; i++)
        for (int o = 0; o < s->c_out; o++)
            for (int oi = 0; oi < s->h_out; oi++)
                for (int oj = 0; oj < s->w_out; oj++) {
                    double sum = 0;
                    for (int c = 0; c < s->c_in; c++)
                        for (int a = 0; a < s->k; a++)
                            for (int b = 0; b < s->k; b++)
                                sum += (double)w[w_index(s, o, c, oi, oj, a * s->k + b)] *
                                       x_pad(s, x, i, c, oi * s->stride + a, oj * s->stride + b);
                    y[(((size_t)i * s->c_out + o) * s->h_out + oi) * s->w_out + oj] = (float)sum;
                }
}

/* dx of image i alone: every window's dy times its weights, added where the window read. */
static void naive_backward_data_image(const bf_local_shape *s, const float *dy, const float *w, int i, double *dx) {
    const size_t plane = (size_t)s->h_in * s->w_in;
    memset(dx, 0, sizeof(double) * plane * s->c_in);
    for (int o = 0; o < s->c_out; o++)
        for (int oi = 0; oi < s->h_out; oi++)
            for (int oj = 0; oj < s->w_out; oj++) {
                const double g = dy[(((size_t)i * s->c_out + o) * s->h_out + oi) * s->w_out + oj];
                for (int c = 0; c < s->c_in; c++)
                    for (int a = 0; a < s->k; a++)
                        for (int b = 0; b < s->k; b++) {
                            int row = oi * s->stride + a - s->pad, col = oj * s->stride + b - s->pad;
                            if (row < 0 || row >= s->h_in || col < 0 || col >= s->w_in) continue;
                            dx[c * plane + (size_t)row * s->w_in + col] += g * w[w_index(s, o, c, oi, oj, a * s->k + b)];
                        }
            }
}

/* ---- the PyTorch fixture through a model ---- */

static void test_fixture_variant(bf_backend *b, const bf_st_file *f, const char *variant, int c_out, int k, int stride,
                                 int pad) {
    char name[64];
    size_t nx = 0, nw = 0, ndy = 0, ny = 0, ndx = 0, ndw = 0;
    const bf_st_tensor *t = bf_safetensors_find(f, (snprintf(name, sizeof name, "%s.input", variant), name));
    CHECK(t && t->ndim == 4, "%s: 4-D input", name);
    if (!t || t->ndim != 4) return;
    bf_shape in = {(int)t->shape[0], (int)t->shape[1], (int)t->shape[2], (int)t->shape[3]};
    const bf_st_tensor *tw = bf_safetensors_find(f, (snprintf(name, sizeof name, "%s.weight", variant), name));
    float *x = fixture_tensor(f, (snprintf(name, sizeof name, "%s.input", variant), name), &nx);
    float *w = fixture_tensor(f, (snprintf(name, sizeof name, "%s.weight", variant), name), &nw);
    float *dy = fixture_tensor(f, (snprintf(name, sizeof name, "%s.dy", variant), name), &ndy);
    float *y_ref = fixture_tensor(f, (snprintf(name, sizeof name, "%s.y", variant), name), &ny);
    float *dx_ref = fixture_tensor(f, (snprintf(name, sizeof name, "%s.dx", variant), name), &ndx);
    float *dw_ref = fixture_tensor(f, (snprintf(name, sizeof name, "%s.dw", variant), name), &ndw);
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 1, &m));
    if (m) {
        bf_model_add_local(m, "lc", BF_MODEL_INPUT, c_out, k, stride, pad);
        m->input_gradient = 1;
        bf_status s = bf_model_finalize(m);
        CHECK(s == BF_OK, "finalize: %s", bf_last_error());
        if (s != BF_OK) bf_model_destroy(m), m = NULL;
    }
    if (m) m->training = 1, m->batch = in.n;
    const bf_param *p = m ? &m->params[0] : NULL;
    int same_shape = p && tw && p->ndim == 6 && tw->ndim == 6 && !strcmp(p->name, "lc.weight");
    for (int d = 0; same_shape && d < 6; d++) same_shape = p->shape[d] == tw->shape[d];
    CHECK(same_shape, "%s: the model's weight lc.weight has the reference's 6-D shape", variant);
    if (m && same_shape && x && w && dy && y_ref && dx_ref && dw_ref && ny == ndy && ndx == nx && nw == ndw &&
        nw == m->num_param_floats && ny == bf_shape_count(m->layers[0].out_shape)) {
        bf_local_shape ls = m->layers[0].local;
        printf("%s: [%d, %d, %d, %d] -> [%d, %d, %d, %d], k %d stride %d pad %d, %zu weights\n", variant, in.n, in.c,
               in.h, in.w, in.n, c_out, ls.h_out, ls.w_out, k, stride, pad, nw);
        float *y = malloc(ny * sizeof(float)), *dx = malloc(nx * sizeof(float)), *dw = malloc(nw * sizeof(float));
        const float *out = NULL;
        memcpy(m->param_data, w, nw * sizeof(float));
        CHECK_OK(bf_model_forward(m, x, &out));
        memcpy(y, out, ny * sizeof(float));
        CHECK_OK(bf_model_backward(m, dy));
        memcpy(dx, m->dinput, nx * sizeof(float));
        memcpy(dw, m->grad_data, nw * sizeof(float));
        compare("y", y, y_ref, ny, 1e-5, 1e-5);
        compare("dx", dx, dx_ref, nx, 1e-5, 1e-5);
        compare("dw", dw, dw_ref, nw, 1e-5, 1e-5);
        free(y), free(dx), free(dw);
    }
    bf_model_destroy(m);
    free(x), free(w), free(dy), free(y_ref), free(dx_ref), free(dw_ref);
}

/* ---- the ops on a third shape: the forward's sum, central differences of both gradients ---- */

static double loss_of(bf_backend *b, const bf_local_shape *s, const float *x, const float *w, const float *g,
                      float *y) {
    if (b->ops->local_forward(b, s, x, w, y) != BF_OK) return NAN;
    double l = 0;
    for (size_t i = 0; i < (size_t)s->n * s->c_out * s->h_out * s->w_out; i++) l += (double)g[i] * y[i];
    return l;
}

static void test_finite_differences(bf_backend *b) {
    bf_local_shape s = {.n = 2, .c_in = 3, .h_in = 5, .w_in = 7, .c_out = 2, .k = 2, .stride = 2, .pad = 1};
    CHECK_OK(bf_local_shape_init(&s));
    CHECK(s.h_out == 3 && s.w_out == 4, "k 2 stride 2 pad 1 on 5x7 gives 3x4 (got %dx%d)", s.h_out, s.w_out);
    const size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in, ny = (size_t)s.n * s.c_out * s.h_out * s.w_out;
    const size_t nw = (size_t)s.c_out * s.c_in * s.h_out * s.w_out * s.k * s.k;
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float)), *g = malloc(ny * sizeof(float));
    float *y = malloc(ny * sizeof(float)), *y_ref = malloc(ny * sizeof(float));
    float *dx = malloc(nx * sizeof(float)), *dw = malloc(nw * sizeof(float));
    bf_test_fill_uniform(x, nx, -1, 1, 21);
    bf_test_fill_uniform(w, nw, -1, 1, 22);
    bf_test_fill_uniform(g, ny, -1, 1, 23);
    for (size_t i = 0; i < nx; i++) dx[i] = 1e30f; /* overwritten, not added to */
    for (size_t i = 0; i < nw; i++) dw[i] = 1e30f;
    CHECK_OK(b->ops->local_forward(b, &s, x, w, y));
    naive_forward(&s, x, w, y_ref);
    compare("k2 s2 p1: y against the spec's sum", y, y_ref, ny, 1e-6, 1e-5);
    CHECK_OK(b->ops->local_backward_data(b, &s, g, w, dx));
    CHECK_OK(b->ops->local_backward_filter(b, &s, x, g, dw));
    /* the loss is linear in x and in w: central differences are exact but for rounding */
    const double h = 0.05;
    double worst_x = 0, worst_w = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *v = pass ? w : x;
        const float *analytic = pass ? dw : dx;
        const size_t count = pass ? nw : nx;
        for (size_t i = 0; i < count; i++) {
            const float keep = v[i];
            v[i] = keep + (float)h;
            double up = loss_of(b, &s, x, w, g, y);
            v[i] = keep - (float)h;
            double down = loss_of(b, &s, x, w, g, y);
            v[i] = keep;
            double numeric = (up - down) / (2 * h), e = fabs(numeric - analytic[i]) / (1e-4 + 1e-3 * fabs(numeric));
            if (pass) worst_w = e > worst_w ? e : worst_w;
            else worst_x = e > worst_x ? e : worst_x;
        }
    }
    printf("k2 s2 p1 on 5x7: central differences, largest violation dx %.3g (%zu values), dw %.3g (%zu values)\n",
           worst_x, nx, worst_w, nw);
    CHECK(worst_x <= 1, "dx differs from central differences (violation %g)", worst_x);
    CHECK(worst_w <= 1, "dw differs from central differences (violation %g)", worst_w);
    free(x), free(w), free(g), free(y), free(y_ref), free(dx), free(dw);
}

/* ---- the same bits with any thread count, at the spec's layer ---- */

static void run_ops(bf_backend *b, const bf_local_shape *s, const float *x, const float *w, const float *dy, float *y,
                    float *dx, float *dw) {
    CHECK_OK(b->ops->local_forward(b, s, x, w, y));
    CHECK_OK(b->ops->local_backward_data(b, s, dy, w, dx));
    CHECK_OK(b->ops->local_backward_filter(b, s, x, dy, dw));
}

static void test_threads(void) {
    /* batch 32: a position's dpatch is 32 x 576 floats, so the backward data's 256 positions take two
     * chunks of its 16 MiB buffer */
    bf_local_shape s = {.n = 32, .c_in = 64, .h_in = 16, .w_in = 16, .c_out = 64, .k = 3, .stride = 1, .pad = 1};
    CHECK_OK(bf_local_shape_init(&s));
    const size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in, ny = (size_t)s.n * s.c_out * s.h_out * s.w_out;
    const size_t nw = (size_t)s.c_out * s.c_in * s.h_out * s.w_out * s.k * s.k;
    float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float)), *dy = malloc(ny * sizeof(float));
    float *out[2][3];
    bf_test_fill_uniform(x, nx, 0, 2, 31);
    bf_test_fill_uniform(w, nw, -1, 1, 32);
    bf_test_fill_uniform(dy, ny, -1, 1, 33);
    for (int r = 0; r < 2; r++) {
        out[r][0] = malloc(ny * sizeof(float)), out[r][1] = malloc(nx * sizeof(float));
        out[r][2] = malloc(nw * sizeof(float));
        bf_backend *b = NULL;
        CHECK_OK(bf_backend_create_cpu(r + 1, &b));
        if (b) run_ops(b, &s, x, w, dy, out[r][0], out[r][1], out[r][2]);
        bf_backend_destroy(b);
    }
    const int same_y = !memcmp(out[0][0], out[1][0], ny * sizeof(float));
    const int same_dx = !memcmp(out[0][1], out[1][1], nx * sizeof(float));
    const int same_dw = !memcmp(out[0][2], out[1][2], nw * sizeof(float));
    printf("n 32, 64 -> 64, 16x16, k 3 s 1 p 1 (%zu weights): 1 vs 2 threads bit-identical: y %s, dx %s, dw %s\n", nw,
           same_y ? "yes" : "NO", same_dx ? "yes" : "NO", same_dw ? "yes" : "NO");
    CHECK(same_y && same_dx && same_dw, "the same bits with 1 and 2 threads");
    /* dx of the first and the last image (the second chunk included) against the sum in double */
    const size_t per_image = (size_t)s.c_in * s.h_in * s.w_in;
    double *ref = malloc(per_image * sizeof(double));
    float *ref_f = malloc(per_image * sizeof(float));
    for (int i = 0; i < s.n; i += s.n - 1) {
        naive_backward_data_image(&s, dy, w, i, ref);
        for (size_t j = 0; j < per_image; j++) ref_f[j] = (float)ref[j];
        char what[64];
        snprintf(what, sizeof what, "dx of image %d, n 32", i);
        compare(what, out[0][1] + i * per_image, ref_f, per_image, 1e-5, 1e-5);
    }
    free(ref), free(ref_f);
    for (int r = 0; r < 2; r++) free(out[r][0]), free(out[r][1]), free(out[r][2]);
    free(x), free(w), free(dy);
}

/* ---- argument errors ---- */

static void expect_arg_error(bf_status s, const char *what, const char *needle) {
    const char *msg = bf_last_error();
    CHECK(s == BF_ERR_ARG && strstr(msg, needle), "%s: BF_ERR_ARG naming \"%s\" (got %s: %s)", what, needle,
          bf_status_name(s), msg);
}

static void test_errors(bf_backend *b) {
    bf_local_shape s = {.n = 1, .c_in = 2, .h_in = 4, .w_in = 4, .c_out = 2, .k = 3, .stride = 1, .pad = 0};
    CHECK_OK(bf_local_shape_init(&s));
    float buf[512] = {0};
    const bf_ops *o = b->ops;
    expect_arg_error(o->local_forward(b, &s, NULL, buf, buf + 64), "forward with NULL x", "local_forward: NULL");
    expect_arg_error(o->local_backward_data(b, &s, buf, NULL, buf + 64), "backward data with NULL w",
                     "local_backward_data: NULL");
    expect_arg_error(o->local_backward_filter(b, &s, buf, buf + 64, NULL), "backward filter with NULL dw",
                     "local_backward_filter: NULL");
    expect_arg_error(o->local_forward(b, NULL, buf, buf, buf), "forward with NULL shape", "NULL shape");
    bf_local_shape bad = s;
    bad.h_out = 3; /* not what k, stride, pad give */
    expect_arg_error(o->local_forward(b, &bad, buf, buf + 128, buf + 256), "a wrong output size", "bf_local_shape_init");
    bad = s, bad.stride = 0;
    expect_arg_error(o->local_backward_data(b, &bad, buf, buf + 128, buf + 256), "stride 0", "stride 0");
    bad = s, bad.n = 0;
    expect_arg_error(o->local_backward_filter(b, &bad, buf, buf + 128, buf + 256), "batch 0", "n=0");
    bad = s, bad.k = 5;
    expect_arg_error(bf_local_shape_init(&bad), "a 5x5 kernel on 4x4", "does not fit");
    /* and in a model: the layer names itself */
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(NULL, (bf_shape){1, 2, 4, 4}, 1, &m));
    if (m) {
        int idx = bf_model_add_local(m, "lc", BF_MODEL_INPUT, 2, 5, 1, 0);
        bf_status st = bf_model_build_status(m);
        CHECK(idx < 0 && st == BF_ERR_ARG && strstr(bf_last_error(), "lc"),
              "bf_model_add_local with a kernel larger than the padded input fails naming the layer: %s",
              bf_last_error());
        bf_model_destroy(m);
    }
}

/* ---- the spec's parameter count (planning only) ---- */

static void test_parameter_count(void) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(NULL, (bf_shape){2, 64, 16, 16}, 1, &m));
    if (!m) return;
    int l = bf_model_add_local(m, "layer1.2.conv2", BF_MODEL_INPUT, 64, 3, 1, 1);
    CHECK_OK(bf_model_finalize(m));
    const bf_param *p = m->num_params > 0 ? &m->params[0] : NULL;
    printf("layer1.2.conv2 (64 -> 64, 16x16, k 3 s 1 p 1): %zu weights, %s [%lld, %lld, %lld, %lld, %lld, %lld]\n",
           m->num_param_floats, p ? p->name : "?", p ? (long long)p->shape[0] : 0, p ? (long long)p->shape[1] : 0,
           p ? (long long)p->shape[2] : 0, p ? (long long)p->shape[3] : 0, p ? (long long)p->shape[4] : 0,
           p ? (long long)p->shape[5] : 0);
    CHECK(m->num_param_floats == 9437184, "the spec's 9,437,184 weights (got %zu)", m->num_param_floats);
    CHECK(m->num_params == 1 && p && !strcmp(p->name, "layer1.2.conv2.weight") && p->ndim == 6 && p->shape[0] == 1 &&
              p->shape[1] == 64 && p->shape[2] == 64 && p->shape[3] == 16 && p->shape[4] == 16 && p->shape[5] == 9,
          "one parameter layer1.2.conv2.weight [1, 64, 64, 16, 16, 9] (no bias)");
    if (l >= 0) {
        bf_shape out = m->layers[l].out_shape;
        CHECK(out.n == 2 && out.c == 64 && out.h == 16 && out.w == 16, "output [2, 64, 16, 16] (got [%d, %d, %d, %d])",
              out.n, out.c, out.h, out.w);
    }
    bf_model_destroy(m);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    bf_st_file *f = NULL;
    bf_status s = bf_safetensors_read(FIXTURE, &f);
    CHECK(s == BF_OK, "%s: %s (bench/make_local_fixture.py writes it)", FIXTURE, bf_last_error());
    if (f) {
        printf("fixture %s (torch %s)\n", FIXTURE, bf_safetensors_meta(f, "torch_version"));
        test_fixture_variant(b, f, "a", 4, 3, 1, 1);
        test_fixture_variant(b, f, "b", 3, 3, 2, 0);
        bf_safetensors_close(f);
    }
    test_finite_differences(b);
    test_errors(b);
    bf_backend_destroy(b);
    test_threads();
    test_parameter_count();
    return bf_test_finish();
}
