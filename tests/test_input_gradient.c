/* test_input_gradient.c - bf_model_backward's gradient with respect to the image (a model built with
 * input_gradient, model.h: what the adversarial attacks of analysis.h follow), on the CPU backend,
 * against central finite differences of the summed cross-entropy, in evaluation mode (running
 * statistics, no dropout) and in training mode (batch statistics, dropout drawn for a fixed step):
 *   - a CNN with batch-norm, ReLU, max-pool, dropout and a hidden layer;
 *   - the same with flex layers, channel-wise max joint;
 *   - ... mask joint with batch-normalised logits and the smooth sigmoid_mul mask;
 *   - a spiking CNN of clamp01 neurons over 3 steps (the reference's stateless activation: piecewise
 *     linear, so its surrogate is its derivative).
 * The evaluation-mode parameter gradients (bf_model.eval_parameter_gradients: what the Hessian and
 * gradient flow take in evaluation mode) against central differences of the evaluation loss, for all
 * four nets: every parameter tensor at up to 8 elements (conv weights and the biases a
 * batch-norm takes out in training, batch-norm's gamma and beta through the running statistics,
 * the flex threshold and its logits' batch-norm).
 * And: training with input_gradient computes the parameter gradients of the model built without it
 * (the fused pairs it turns off change the rounding alone), an evaluation-mode backward leaves them
 * as they were unless asked, and a model built without input_gradient refuses an evaluation-mode
 * backward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/config.h"
#include "bioflex/model.h"
#include "testutil.h"

enum { B = 3, S = 8, K = 4 };

typedef struct fixture {
    bf_backend *b;
    bf_model *m;
    float *x, *losses, *dlogits;
    int32_t *labels;
} fixture;

static void fixture_open(fixture *f, bf_backend *b, bf_model_config mc) {
    memset(f, 0, sizeof *f);
    f->b = b;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, K, 7, &f->m));
    f->x = bf_test_alloc(b, (size_t)B * S * S);
    f->losses = bf_test_alloc(b, B);
    f->dlogits = bf_test_alloc(b, (size_t)B * K);
    const int32_t labels[B] = {1, 3, 0};
    CHECK_OK(bf_alloc(b, sizeof labels, (void **)&f->labels));
    CHECK_OK(bf_to_device(b, f->labels, labels, sizeof labels));
}

static void fixture_close(fixture *f) {
    bf_free(f->b, f->x), bf_free(f->b, f->losses), bf_free(f->b, f->dlogits), bf_free(f->b, f->labels);
    bf_model_destroy(f->m);
}

/* The summed cross-entropy at image batch x (host); with dx (host, nullable) its gradient. The step
 * counter stays fixed, so training mode draws the same dropout every time. */
static double loss_at(fixture *f, const float *x, float *dx) {
    bf_model *m = f->m;
    const float *logits = NULL;
    m->step = 5;
    CHECK_OK(bf_to_device(f->b, f->x, x, (size_t)B * S * S * sizeof(float)));
    CHECK_OK(bf_model_forward(m, f->x, &logits));
    CHECK_OK(f->b->ops->softmax_xent(f->b, B, K, logits, f->labels, 0.0f, 1.0f, f->losses, f->dlogits));
    float l[B];
    CHECK_OK(bf_to_host(f->b, l, f->losses, sizeof l));
    if (dx) {
        CHECK_OK(bf_model_backward(m, f->dlogits));
        CHECK_OK(bf_to_host(f->b, dx, m->dinput, (size_t)B * S * S * sizeof(float)));
    }
    return (double)l[0] + l[1] + l[2];
}

/* Trains 3 steps (so the running statistics are not the initial ones), then compares the input
 * gradient with central differences at every 5th pixel, in the mode asked for. */
static void check_against_differences(bf_backend *b, bf_model_config mc, int training, const char *what) {
    fixture f;
    mc.input_gradient = 1;
    fixture_open(&f, b, mc);
    const size_t n = (size_t)B * S * S;
    float *x = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
    for (int step = 0; step < 3; step++) {
        bf_test_fill_uniform(x, n, -1.0f, 2.0f, 100 + step);
        loss_at(&f, x, NULL);
    }
    f.m->training = training;
    bf_test_fill_uniform(x, n, 0.0f, 1.0f, 11);
    const double at = loss_at(&f, x, dx);
    const float h = 1e-3f;
    int checked = 0, close = 0, nonzero = 0, kinks = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i += 5) {
        const float keep = x[i];
        x[i] = keep + h;
        const double up = loss_at(&f, x, NULL);
        x[i] = keep - h;
        const double down = loss_at(&f, x, NULL);
        x[i] = keep;
        /* a ReLU, pool or clamp that switches within +-h: the one-sided slopes differ, and no
         * difference stands for the derivative there (Caffe's checker skips such kinks too) */
        const double right = (up - at) / h, left = (at - down) / h;
        if (fabs(right - left) > 1.5e-3 + 0.03 * fabs(right + left)) {
            kinks++;
            continue;
        }
        const double fd = (up - down) / (2.0 * h), err = fabs(fd - dx[i]) / (2e-3 + 2e-2 * fabs(fd));
        checked++;
        close += err <= 1;
        nonzero += fabs(dx[i]) > 1e-4;
        if (err > 1) fprintf(stderr, "  %s: pixel %zu: backward %.6g, differences %.6g (right %.6g, left %.6g)\n", what, i, dx[i], fd, right, left);
        if (err > worst) worst = err;
    }
    CHECK(close == checked && checked >= 30 && nonzero >= 2,
          "%s (%s mode): %d of %d input gradients match central differences (worst at %.2fx the tolerance; %d kinks "
          "skipped), %d nonzero", what, training ? "training" : "evaluation", close, checked, worst, kinks, nonzero);
    free(x), free(dx);
    fixture_close(&f);
}

/* One central difference of the loss along parameter i: compared with g, or counted as a kink. */
typedef struct difference_tally {
    int checked, close, kinks;
    double worst;
} difference_tally;

static void check_parameter(fixture *f, float *w, size_t i, const float *x, double at, float g, difference_tally *t,
                            const char *what) {
    bf_model *m = f->m;
    const size_t p = m->num_param_floats;
    const float keep = w[i], h = 1e-3f;
    w[i] = keep + h;
    CHECK_OK(bf_to_device(f->b, m->param_data, w, p * sizeof(float)));
    const double up = loss_at(f, x, NULL);
    w[i] = keep - h;
    CHECK_OK(bf_to_device(f->b, m->param_data, w, p * sizeof(float)));
    const double down = loss_at(f, x, NULL);
    w[i] = keep;
    CHECK_OK(bf_to_device(f->b, m->param_data, w, p * sizeof(float)));
    const double right = (up - at) / h, left = (at - down) / h;
    if (fabs(right - left) > 1.5e-3 + 0.03 * fabs(right + left)) { /* a kink within +-h, as above */
        t->kinks++;
        return;
    }
    const double fd = (up - down) / (2.0 * h), err = fabs(fd - g) / (2e-3 + 2e-2 * fabs(fd));
    t->checked++;
    t->close += err <= 1;
    if (err > 1) fprintf(stderr, "  %s: parameter %zu: backward %.6g, differences %.6g\n", what, i, g, fd);
    if (err > t->worst) t->worst = err;
}

/* Evaluation mode with eval_parameter_gradients: each parameter tensor's gradient at up to 8 evenly
 * spread elements against central differences of the evaluation loss; every tensor's gradient is
 * nonzero (in evaluation a bias before a batch-norm moves the loss). */
static void check_eval_parameter_gradients(bf_backend *b, bf_model_config mc, const char *what) {
    fixture f;
    mc.input_gradient = 1;
    fixture_open(&f, b, mc);
    bf_model *m = f.m;
    const size_t n = (size_t)B * S * S, p = m->num_param_floats;
    float *x = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
    for (int step = 0; step < 3; step++) { /* running statistics that are not the initial ones */
        bf_test_fill_uniform(x, n, -1.0f, 2.0f, 100 + step);
        loss_at(&f, x, NULL);
    }
    m->training = 0;
    m->eval_parameter_gradients = 1;
    bf_test_fill_uniform(x, n, -2.0f, 1.0f, 11); /* mostly below 0: the first flex conv wins somewhere over its pool */
    const double at = loss_at(&f, x, dx);
    float *g = bf_test_download(b, m->grad_data, p), *w = bf_test_download(b, m->param_data, p);
    difference_tally t = {0, 0, 0, 0};
    int nonzero_tensors = 0;
    for (int q = 0; q < m->num_params; q++) {
        const bf_param *par = &m->params[q];
        double largest = 0;
        for (size_t k = 0; k < par->count; k++) largest = fmax(largest, fabs(g[par->offset + k]));
        nonzero_tensors += largest > 1e-6;
        if (!(largest > 1e-6)) fprintf(stderr, "  %s: %s has no gradient\n", what, par->name);
        const size_t stride = par->count > 8 ? par->count / 8 : 1;
        for (size_t k = 0; k < par->count; k += stride)
            check_parameter(&f, w, par->offset + k, x, at, g[par->offset + k], &t, what);
    }
    CHECK(t.close == t.checked && t.checked >= 4 * m->num_params,
          "%s (evaluation mode): %d of %d parameter gradients match central differences (worst at %.2fx the "
          "tolerance; %d kinks skipped)", what, t.close, t.checked, t.worst, t.kinks);
    CHECK(nonzero_tensors == m->num_params, "%s (evaluation mode): %d of %d parameter tensors have a nonzero gradient",
          what, nonzero_tensors, m->num_params);
    free(g), free(w), free(x), free(dx);
    fixture_close(&f);
}

static bf_model_config cnn(void) {
    bf_model_config mc = bf_test_cnn_config(4, 8, 0.3f);
    mc.channels[1] = 6;
    mc.num_channels = 2;
    mc.batchnorm = 1;
    return mc;
}

/* The parameter gradients of a training step with and without input_gradient; then an
 * evaluation-mode backward leaves them alone, and only the input_gradient model has one. */
static void check_parameter_gradients(bf_backend *b) {
    fixture plain, with;
    bf_model_config mc = cnn();
    mc.flex = 1;
    fixture_open(&plain, b, mc);
    mc.input_gradient = 1;
    fixture_open(&with, b, mc);
    const size_t n = (size_t)B * S * S, p = plain.m->num_param_floats;
    float *x = malloc(n * sizeof(float)), *dx = malloc(n * sizeof(float));
    bf_test_fill_uniform(x, n, -1.0f, 2.0f, 3);
    const double l0 = loss_at(&plain, x, NULL), l1 = loss_at(&with, x, dx);
    CHECK_CLOSE(l0, l1, 1e-6, 1e-5, "the training loss with input_gradient");
    CHECK_OK(bf_model_backward(plain.m, plain.dlogits));
    float *g0 = bf_test_download(b, plain.m->grad_data, p), *g1 = bf_test_download(b, with.m->grad_data, p);
    size_t worst = 0;
    const double v = bf_test_max_violation(g0, g1, p, 1e-6, 1e-4, &worst);
    CHECK(v <= 1, "training: the parameter gradients with input_gradient are the plain model's (worst %zu: %g vs %g)",
          worst, g0[worst], g1[worst]);
    with.m->training = 0;
    loss_at(&with, x, dx);
    float *g2 = bf_test_download(b, with.m->grad_data, p);
    CHECK(memcmp(g1, g2, p * sizeof(float)) == 0, "an evaluation-mode backward leaves the parameter gradients alone");
    with.m->eval_parameter_gradients = 1;
    loss_at(&with, x, dx);
    float *g3 = bf_test_download(b, with.m->grad_data, p);
    CHECK(memcmp(g1, g3, p * sizeof(float)) != 0, "... and writes them when asked (eval_parameter_gradients)");
    free(g3);
    plain.m->training = 0;
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(plain.m, plain.x, &logits));
    CHECK(bf_model_backward(plain.m, plain.dlogits) == BF_ERR_ARG && strstr(bf_last_error(), "input_gradient"),
          "a model built without input_gradient refuses an evaluation-mode backward: %s", bf_last_error());
    free(g0), free(g1), free(g2), free(x), free(dx);
    fixture_close(&plain);
    fixture_close(&with);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    for (int training = 0; training < 2; training++) {
        check_against_differences(b, cnn(), training, "cnn with batch-norm and dropout");
        bf_model_config mc = cnn();
        mc.flex = 1;
        check_against_differences(b, mc, training, "flex, channel-wise max");
        mc.flex_joint = BF_FLEX_JOINT_MASK;
        mc.flex_mask = BF_FLEX_MASK_SIGMOID_MUL;
        mc.flex_logits_bn = 1;
        check_against_differences(b, mc, training, "flex, mask joint with batch-normalised logits");
        mc = cnn();
        mc.dropout = 0;
        mc.spiking.neuron = BF_NEURON_CLAMP01;
        mc.spiking.time_steps = 3;
        check_against_differences(b, mc, training, "spiking, clamp01 over 3 steps");
    }
    check_eval_parameter_gradients(b, cnn(), "cnn with batch-norm and dropout");
    bf_model_config mc = cnn();
    mc.flex = 1;
    check_eval_parameter_gradients(b, mc, "flex, channel-wise max");
    mc.flex_joint = BF_FLEX_JOINT_MASK;
    mc.flex_mask = BF_FLEX_MASK_SIGMOID_MUL;
    mc.flex_logits_bn = 1;
    check_eval_parameter_gradients(b, mc, "flex, mask joint with batch-normalised logits");
    mc = cnn();
    mc.dropout = 0;
    mc.spiking.neuron = BF_NEURON_CLAMP01;
    mc.spiking.time_steps = 3;
    check_eval_parameter_gradients(b, mc, "spiking, clamp01 over 3 steps");
    check_parameter_gradients(b);
    bf_backend_destroy(b);
    return bf_test_finish();
}
