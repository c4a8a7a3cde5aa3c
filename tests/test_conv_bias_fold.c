/* test_conv_bias_fold.c - [model] fold_conv_bias on the CPU backend: a conv whose output a
 * batch-norm alone reads adds no bias in training, writes its bias gradient as 0, and the
 * batch-norm adds momentum * bias to its running mean (memory_plan.c, layers.c). Against the same
 * network with the fold off, after two forward-backward passes from the same weights and batches:
 *   - the folded convs are exactly the conv -> batch-norm pairs (VGG-6: 4; a spiking PlasticFlex
 *     VGG-6: its 4; none in a flex VGG-6, whose convs are flex layers);
 *   - a flex layer's conv (channel-wise max) adds no bias in a pass of its own, in training and
 *     evaluation: the joint adds it as it reads C (flex_pool_max_forward's bias), as a wrapped ops
 *     table counts; with biases of 0.5 + c/100 the flex VGG-6's gradients (its biases' included),
 *     running statistics and evaluation logits agree with the unfolded network's to rounding (on the
 *     CPU the conv adds its bias before the GEMM's sum, the joint after it); and in the backward the
 *     routes of the 4 flex layers (3 with the scatter, the first, without an input gradient, alone)
 *     sum the bias gradient, which the conv's backward-filter then does not;
 *   - the folded biases' gradients are 0 where the unfolded ones are rounding noise (the loss does
 *     not depend on them);
 *   - VGG-6 with biases of 0.5 + c/100 (a running mean without the bias's share would be off by
 *     0.05): every other gradient, the running statistics and the evaluation logits (which add the
 *     bias as always) agree to rounding;
 *   - the spiking network with biases of 0, where adding the bias changes nothing: everything the
 *     same bit for bit (its LIF layers normalise their input and recompute their charge from the
 *     batch-norm's input; a spike that rounding tips would make a comparison to rounding chaotic). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/train.h"
#include "layers.h"
#include "testutil.h"

enum { B = 8, S = 28, K = 10 };

/* The wrapped ops table's counts: convolutions run with a bias, and flex joints given one. */
typedef struct bias_calls {
    const bf_ops *real;
    long conv_with_bias, joint_with_bias;
    long filter_with_bias, route_with_bias; /* backward: convs' backward-filter and routes given dbias */
} bias_calls;
static bias_calls g_calls; /* the wrappers have the ops table's signatures: no room for a context */

static bf_status conv_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x, const float *w,
                              const float *bias, float *y) {
    g_calls.conv_with_bias += bias != NULL;
    return g_calls.real->conv2d_forward(b, s, x, w, bias, y);
}
static bf_status joint_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                               const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                               float *conv_wins) {
    g_calls.joint_with_bias += bias != NULL;
    return g_calls.real->flex_pool_max_forward(b, ps, s, x, bias, y, window, winners, ties, conv_wins);
}
static bf_status filter_backward(bf_backend *b, const bf_conv2d_shape *s, const float *x, const float *dy, float *dw,
                                 float *dbias) {
    g_calls.filter_with_bias += dbias != NULL;
    return g_calls.real->conv2d_backward_filter(b, s, x, dy, dw, dbias);
}
static bf_status route_scatter(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const uint8_t *window,
                               const uint32_t *winners, const uint32_t *ties, const float *dy, float *dconv, float *dx,
                               float *dbias) {
    g_calls.route_with_bias += dbias != NULL;
    return g_calls.real->flex_pool_max_backward_scatter(b, ps, s, window, winners, ties, dy, dconv, dx, dbias);
}
static bf_status route_scatter_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const bf_bn_grad *bn,
                                  const uint8_t *window, const uint32_t *winners, const uint32_t *ties, const float *y,
                                  const float *dz, float *dconv, float *dx, float *dbias) {
    g_calls.route_with_bias += dbias != NULL;
    return g_calls.real->flex_pool_max_backward_scatter_bn(b, ps, s, bn, window, winners, ties, y, dz, dconv, dx, dbias);
}
static bf_status route_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const bf_bn_grad *bn,
                          const uint32_t *winners, const uint32_t *ties, const float *y, const float *dz, float *dconv,
                          float *dbias) {
    g_calls.route_with_bias += dbias != NULL;
    return g_calls.real->flex_pool_max_backward_bn(b, ps, s, bn, winners, ties, y, dz, dconv, dbias);
}
static bf_status joint_forward_bn_stats(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                        const bf_bn_shape *bs, const float *x, const float *bias, float *y,
                                        uint8_t *window, uint32_t *winners, uint32_t *ties, float *conv_wins,
                                        float *save_mean, float *save_invstd, float *running_mean,
                                        float *running_var) {
    g_calls.joint_with_bias += bias != NULL;
    return g_calls.real->flex_pool_max_forward_bn_stats(b, ps, s, bs, x, bias, y, window, winners, ties, conv_wins,
                                                        save_mean, save_invstd, running_mean, running_var);
}

typedef struct run {
    float *grads[2];  /* parameter gradients after each step */
    float *buffers;   /* running statistics after the steps */
    float *eval;      /* evaluation logits after them */
    float *bias_grad; /* the folded convs' bias gradients (fold on) or the same convs' (fold off), step 2 */
    size_t bias_at[64], bias_count[64]; /* where those are in the gradients */
    size_t num_params, num_buffers, num_bias;
    int folded, num_pairs;
    int flex_biases;                         /* flex layers with a conv bias */
    long conv_with_bias, joint_with_bias;    /* over the two training passes and the evaluation */
    long filter_with_bias, route_with_bias;  /* over the two backward passes */
} run;

static void network_run(const bf_model_config *base, int fold, float bias, run *r) {
    memset(r, 0, sizeof *r);
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    static bf_ops wrapped;
    g_calls = (bias_calls){.real = b->ops};
    wrapped = *b->ops;
    wrapped.conv2d_forward = conv_forward;
    wrapped.flex_pool_max_forward = joint_forward;
    wrapped.flex_pool_max_forward_bn_stats = joint_forward_bn_stats;
    wrapped.conv2d_backward_filter = filter_backward;
    wrapped.flex_pool_max_backward_scatter = route_scatter;
    wrapped.flex_pool_max_backward_scatter_bn = route_scatter_bn;
    wrapped.flex_pool_max_backward_bn = route_bn;
    b->ops = &wrapped;
    bf_model_config mc = *base;
    mc.fold_conv_bias = fold;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 1, &m));
    if (!m) return;
    /* the conv -> batch-norm pairs, whether or not folded, and their biases set to bias + c/100 (bias 0:
     * to 0) */
    int pairs[64], num_pairs = 0;
    for (int i = 0; i < m->num_layers - 1 && num_pairs < 64; i++) {
        const bf_layer *l = &m->layers[i];
        r->folded += l->bias_in_bn;
        if (l->kind == BF_LAYER_FLEX && l->param_index[1] >= 0) { /* its conv's bias: 0.5 + c/100 as well */
            float values[2048];
            for (int c = 0; c < l->flex.c_out && c < 2048; c++) values[c] = bias == 0.0f ? 0.0f : bias + 0.01f * (float)c;
            CHECK_OK(bf_to_device(b, bf_layer_param(m, l, 1), values, (size_t)l->flex.c_out * sizeof(float)));
            r->flex_biases++;
        }
        if (l->kind == BF_LAYER_CONV && l->param_index[1] >= 0 && l->num_consumers == 1 &&
            m->layers[i + 1].kind == BF_LAYER_BATCHNORM && m->layers[i + 1].input[0] == i) {
            pairs[num_pairs++] = i;
            float values[2048];
            for (int c = 0; c < l->conv.c_out && c < 2048; c++) values[c] = bias == 0.0f ? 0.0f : bias + 0.01f * (float)c;
            CHECK_OK(bf_to_device(b, bf_layer_param(m, l, 1), values, (size_t)l->conv.c_out * sizeof(float)));
            r->num_bias += (size_t)l->conv.c_out;
            r->bias_at[num_pairs - 1] = (size_t)(bf_layer_grad(m, l, 1) - m->grad_data);
            r->bias_count[num_pairs - 1] = (size_t)l->conv.c_out;
        }
    }
    float x[B * S * S], losses[B], *dlogits = NULL;
    int32_t labels[B] = {3, 7, 1, 0, 9, 4, 4, 2};
    CHECK_OK(bf_alloc(b, (size_t)B * K * sizeof(float), (void **)&dlogits));
    r->num_params = m->num_param_floats;
    r->num_buffers = m->num_buffer_floats;
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < B * S * S; i++) x[i] = 2.0f * bf_uniform(71 + step, (uint64_t)i) - 1.0f;
        const float *logits = NULL;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(b->ops->softmax_xent(b, B, K, logits, labels, 0.0f, 1.0f / B, losses, dlogits));
        CHECK_OK(b->ops->fill(b, m->grad_data, 1.0f, r->num_params)); /* every gradient must be written */
        CHECK_OK(bf_model_backward(m, dlogits));
        r->grads[step] = bf_test_download(b, m->grad_data, r->num_params);
        m->step++;
    }
    r->num_pairs = num_pairs;
    r->bias_grad = malloc((r->num_bias + 1) * sizeof(float));
    size_t at = 0;
    for (int p = 0; p < num_pairs && r->bias_grad; p++) {
        const bf_layer *l = &m->layers[pairs[p]];
        CHECK_OK(bf_to_host(b, r->bias_grad + at, bf_layer_grad(m, l, 1), (size_t)l->conv.c_out * sizeof(float)));
        at += (size_t)l->conv.c_out;
    }
    r->buffers = bf_test_download(b, m->buffer_data, r->num_buffers);
    m->training = 0;
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, x, &logits));
    r->eval = bf_test_download(b, logits, B * K);
    r->conv_with_bias = g_calls.conv_with_bias;
    r->joint_with_bias = g_calls.joint_with_bias;
    r->filter_with_bias = g_calls.filter_with_bias;
    r->route_with_bias = g_calls.route_with_bias;
    bf_free(b, dlogits);
    bf_model_destroy(m);
    b->ops = g_calls.real;
    bf_backend_destroy(b);
}

static void run_free(run *r) {
    free(r->grads[0]);
    free(r->grads[1]);
    free(r->buffers);
    free(r->eval);
    free(r->bias_grad);
}

/* a and b within atol + rtol * |b| everywhere; prints the worst */
static void close_enough(const char *what, const float *a, const float *b, size_t n, double atol, double rtol) {
    size_t worst = 0;
    double v = bf_test_max_violation(a, b, n, atol, rtol, &worst);
    printf("  %-44s max violation %.3g (n=%zu)\n", what, v, n);
    CHECK(v <= 1.0, "%s: element %zu folded %.9g unfolded %.9g", what, worst, a[worst], b[worst]);
}

/* exact: everything but the folded biases' gradients bit for bit, else to rounding */
static void test_network(const char *name, const bf_model_config *mc, int want_folded, int want_routes, float bias,
                         int exact) {
    printf("%s\n", name);
    run on, off;
    network_run(mc, 1, bias, &on);
    network_run(mc, 0, bias, &off);
    CHECK(on.folded == want_folded && off.folded == 0, "%s: %d convs folded (want %d), %d with the fold off", name,
          on.folded, want_folded, off.folded);
    /* the flex layers' biases: in the joint with the fold, in the conv without (3 forwards each) */
    const long flex_forwards = 3L * on.flex_biases;
    printf("  flex layers with a bias: %d; forwards with the bias in the joint %ld (fold) / %ld, in the conv %ld / %ld\n",
           on.flex_biases, on.joint_with_bias, off.joint_with_bias, on.conv_with_bias, off.conv_with_bias);
    CHECK(on.joint_with_bias == flex_forwards && off.joint_with_bias == 0, "%s: joints given the bias: %ld and %ld",
          name, on.joint_with_bias, off.joint_with_bias);
    CHECK(off.conv_with_bias - on.conv_with_bias == flex_forwards + 2L * want_folded,
          "%s: convs with a bias: %ld with the fold, %ld without", name, on.conv_with_bias, off.conv_with_bias);
    /* backward: the flex layers with an input gradient sum their bias gradient in the route */
    printf("  backward: routes summing the bias gradient %ld (fold) / %ld, backward-filters summing it %ld / %ld\n",
           on.route_with_bias, off.route_with_bias, on.filter_with_bias, off.filter_with_bias);
    CHECK(on.route_with_bias == 2L * want_routes && off.route_with_bias == 0, "%s: routes given dbias: %ld and %ld",
          name, on.route_with_bias, off.route_with_bias);
    CHECK(off.filter_with_bias - on.filter_with_bias == 2L * (want_routes + want_folded),
          "%s: backward-filters given dbias: %ld with the fold, %ld without", name, on.filter_with_bias,
          off.filter_with_bias);
    if (!on.grads[1] || !off.grads[1] || !on.bias_grad || !off.bias_grad || on.num_params != off.num_params) {
        CHECK(0, "%s: a run failed", name);
        run_free(&on);
        run_free(&off);
        return;
    }
    /* the folded biases' gradients: 0 with the fold, rounding noise without (the loss ignores them) */
    double noise = 0;
    size_t zeros = 0;
    for (size_t i = 0; i < on.num_bias; i++) {
        zeros += on.bias_grad[i] == 0.0f || !want_folded;
        noise = fmax(noise, fabs(off.bias_grad[i]));
    }
    printf("  folded bias gradients: %zu of %zu exactly 0; unfolded at most %.3g\n", zeros, on.num_bias, noise);
    CHECK(zeros == on.num_bias, "%s: %zu of %zu folded bias gradients are not 0", name, on.num_bias - zeros, on.num_bias);
    CHECK(!want_folded || noise < 1e-5, "%s: an unfolded bias gradient of %.3g is not rounding noise", name, noise);
    const double atol = exact ? 0 : 1e-6, rtol = exact ? 0 : 1e-4;
    for (int step = 0; step < 2; step++) {
        /* every other gradient (the folded biases' checked above: left out) */
        for (int p = 0; p < on.num_pairs && want_folded; p++)
            for (size_t i = 0; i < on.bias_count[p]; i++) on.grads[step][on.bias_at[p] + i] = off.grads[step][on.bias_at[p] + i] = 0;
        char what[64];
        snprintf(what, sizeof what, "other gradients, pass %d", step + 1);
        close_enough(what, on.grads[step], off.grads[step], on.num_params, exact ? 0 : 1e-5, exact ? 0 : 1e-3);
    }
    close_enough("running means and variances", on.buffers, off.buffers, on.num_buffers, atol, rtol);
    close_enough("evaluation logits", on.eval, off.eval, B * K, atol, rtol);
    run_free(&on);
    run_free(&off);
}

int main(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_VGG6;
    cfg.model.dropout = 0.0f;
    test_network("VGG-6, conv biases 0.5 + c/100", &cfg.model, 4, 0, 0.5f, 0);
    cfg.model.arch = BF_ARCH_PF_VGG6;
    cfg.model.spiking.neuron = BF_NEURON_LIF;
    cfg.model.spiking.time_steps = 2;
    cfg.model.spiking.threshold = 0.3f;
    test_network("spiking PlasticFlex VGG-6, LIF, T = 2, conv biases 0", &cfg.model, 4, 0, 0.0f, 1);
    cfg.model.arch = BF_ARCH_VGG6;
    cfg.model.spiking.neuron = -1;
    cfg.model.flex = 1;
    test_network("flex VGG-6, conv biases 0.5 + c/100 (its convs are flex layers: the bias in the joint)", &cfg.model, 0,
                 4, 0.5f, 0);
    return bf_test_finish();
}
