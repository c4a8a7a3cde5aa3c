/* test_hessian.c - bf_hessian (analysis.h) on the CPU backend, for softmax regression (flatten and
 * one linear layer with bias), whose Hessian is known in closed form: over a batch of N images
 * z_i = (x_i, 1) with softmax outputs p_i, the mean cross-entropy's Hessian with respect to (W, b) is
 *   H = 1/N sum_i (diag(p_i) - p_i p_i') (x) z_i z_i'.
 * The test builds that matrix in double from the model's weights and the loader's images, finds its
 * eigenvalues with Jacobi rotations, and checks: the top 3 from the power iteration (with
 * deflation) to 1e-3; the Hutchinson trace within 4 standard errors of the true trace (the error of
 * a mean of v'Hv over Rademacher v: sqrt(2 sum_{i!=j} H_ij^2 / samples)); the spectral density's
 * weights summing to 1, its top node the top eigenvalue, its bottom one the bottom of the spectrum,
 * its mean the start vector's Rayleigh quotient; the loss at theta; the
 * parameters, running statistics and gradients restored bit for bit; bad options refused.
 * Evaluation mode: the same regression with a dropout of 0.5 before its linear layer (built with
 * input_gradient) has the closed form's top eigenvalues in evaluation mode, where dropout passes
 * its input, and others in training mode; a model built without input_gradient refuses it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "bioflex/hash.h"
#include "testutil.h"

enum { N = 6, S = 3, D = S * S, K = 3, P = K * (D + 1) };

/* Eigenvalues of the symmetric P x P matrix a (destroyed) by cyclic Jacobi rotations, descending. */
static void jacobi_eigenvalues(double a[P][P], double *out) {
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int i = 0; i < P; i++)
            for (int j = i + 1; j < P; j++) off += a[i][j] * a[i][j];
        if (off < 1e-24) break;
        for (int p = 0; p < P; p++)
            for (int q = p + 1; q < P; q++) {
                if (fabs(a[p][q]) < 1e-300) continue;
                const double theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
                const double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                const double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < P; k++) { /* columns p and q */
                    const double akp = a[k][p], akq = a[k][q];
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for (int k = 0; k < P; k++) { /* rows p and q */
                    const double apk = a[p][k], aqk = a[q][k];
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < P; i++) out[i] = a[i][i];
    for (int i = 0; i < P; i++) /* descending */
        for (int j = i + 1; j < P; j++)
            if (out[j] > out[i]) {
                const double t = out[i];
                out[i] = out[j], out[j] = t;
            }
}

/* The closed-form Hessian of the mean loss over the loader's first batch, and that loss. */
static double closed_form(bf_model *m, bf_loader *l, double h[P][P]) {
    float *theta = bf_test_download(m->backend, m->param_data, P);
    bf_batch *batch = NULL;
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    CHECK_OK(bf_loader_next(l, &batch, NULL));
    memset(h, 0, sizeof(double) * P * P);
    double loss = 0;
    for (int i = 0; batch && theta && i < N; i++) {
        double z[D + 1], p[K], norm = 0, top = -INFINITY;
        for (int d = 0; d < D; d++) z[d] = batch->images[i * D + d];
        z[D] = 1;
        for (int k = 0; k < K; k++) {
            p[k] = theta[K * D + k];
            for (int d = 0; d < D; d++) p[k] += (double)theta[k * D + d] * z[d];
            top = fmax(top, p[k]);
        }
        for (int k = 0; k < K; k++) norm += exp(p[k] - top);
        loss += top + log(norm) - p[batch->labels[i]];
        for (int k = 0; k < K; k++) p[k] = exp(p[k] - top) / norm;
        for (int k = 0; k < K; k++)
            for (int c = 0; c < K; c++) {
                const double a = (k == c ? p[k] : 0) - p[k] * p[c];
                for (int d = 0; d <= D; d++)
                    for (int e = 0; e <= D; e++) {
                        const int row = d < D ? k * D + d : K * D + k, col = e < D ? c * D + e : K * D + c;
                        h[row][col] += a * z[d] * z[e] / N;
                    }
            }
    }
    if (batch) bf_loader_release(l, batch);
    free(theta);
    return loss / N;
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    if (b) CHECK_OK(bf_model_create(b, (bf_shape){N, 1, S, S}, 11, &m));
    if (!m) return bf_test_finish();
    const int flat = bf_model_add_flatten(m, "flatten", BF_MODEL_INPUT);
    bf_model_add_linear(m, "fc", flat, K, 1, BF_INIT_KAIMING_NORMAL_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    CHECK(m->num_param_floats == P, "softmax regression has %d parameters (%zu)", P, m->num_param_floats);
    static uint8_t pixels[2 * N * D];
    static int32_t labels[2 * N];
    bf_dataset d = bf_test_noise_images(pixels, labels, 2 * N, S, K, BF_SPLIT_TRAIN);
    bf_loader *l = bf_test_loader(&d, BF_SPLIT_TRAIN, N, 1); /* in order: the first batch is the first N images */
    if (!l) return bf_test_finish();

    static double h[P][P], h0[P][P], eig[P];
    const double loss = closed_form(m, l, h);
    memcpy(h0, h, sizeof h);
    double trace = 0, off = 0;
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) {
            if (i == j) trace += h[i][j];
            else off += h[i][j] * h[i][j];
        }
    jacobi_eigenvalues(h, eig);

    float *theta = bf_test_download(b, m->param_data, P), *grads = bf_test_download(b, m->grad_data, P);
    const bf_hessian_options o = {.batches = 1, .top_n = 3, .max_iterations = 400, .tolerance = 1e-7, .step = 1e-3,
                                  .density_iterations = 20, .seed = 42};
    static bf_hessian_result r;
    CHECK_OK(bf_hessian(m, l, 0.0f, &o, &r));
    for (int k = 0; k < 3; k++)
        CHECK_CLOSE(r.eigenvalues[k], eig[k], 1e-5, 1e-3, "eigenvalue k (power iteration with deflation)");
    CHECK(eig[0] > eig[1] * 1.05 && eig[2] > 0, "the closed form's top eigenvalues %g %g %g", eig[0], eig[1], eig[2]);
    const double se = sqrt(2 * off / r.trace_samples);
    CHECK(fabs(r.trace - trace) <= 4 * se && r.trace_samples > 10,
          "Hutchinson's trace %g within 4 standard errors (%g) of the true %g, %d samples", r.trace, se, trace,
          r.trace_samples);
    CHECK_CLOSE(r.loss, loss, 1e-6, 1e-5, "the loss at theta");
    /* the density: weights summing to 1 over nodes spanning the spectrum, whose mean is the first
     * Lanczos coefficient v'Hv of the normalised Rademacher start (drawn here as hessian.c draws it) */
    double weights = 0, mean = 0, top = -INFINITY, bottom = INFINITY, start[P], quotient = 0;
    for (int k = 0; k < r.density_points; k++) {
        weights += r.density_weights[k];
        mean += r.density_weights[k] * r.density_nodes[k];
        top = fmax(top, r.density_nodes[k]);
        bottom = fmin(bottom, r.density_nodes[k]);
    }
    const uint64_t seed = bf_seed_derive(42, BF_STREAM_HESSIAN, 2000000u);
    for (int j = 0; j < P; j++) start[j] = (bf_uniform(seed, (uint64_t)j) < 0.5f ? -1.0 : 1.0) / sqrt((double)P);
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++) quotient += start[i] * h0[i][j] * start[j];
    CHECK(r.density_points == 20 && fabs(weights - 1) < 1e-6, "density: %d nodes, weights summing to %.9g",
          r.density_points, weights);
    CHECK_CLOSE(top, eig[0], 1e-5, 1e-3, "density: the top node is the top eigenvalue");
    CHECK(bottom >= eig[P - 1] - 1e-3 && bottom < 0.05 * eig[0], "density: the bottom node %g near the smallest eigenvalue %g",
          bottom, eig[P - 1]);
    CHECK_CLOSE(mean, quotient, 1e-6, 1e-3, "density: its mean is the start vector's Rayleigh quotient");
    float *theta_after = bf_test_download(b, m->param_data, P), *grads_after = bf_test_download(b, m->grad_data, P);
    CHECK(memcmp(theta, theta_after, P * sizeof(float)) == 0 && memcmp(grads, grads_after, P * sizeof(float)) == 0,
          "the parameters and gradients are restored bit for bit");
    bf_hessian_options bad = o;
    bad.step = 0;
    CHECK(bf_hessian(m, l, 0.0f, &bad, &r) == BF_ERR_ARG, "step 0 is refused");
    bad = o;
    bad.batches = 3;
    CHECK(bf_hessian(m, l, 0.0f, &bad, &r) == BF_ERR_ARG && strstr(bf_last_error(), "fewer than the 3"),
          "more batches than the split has: %s", bf_last_error());
    bad = o;
    bad.mode = BF_ANALYSIS_EVAL;
    CHECK(bf_hessian(m, l, 0.0f, &bad, &r) == BF_ERR_ARG && strstr(bf_last_error(), "input_gradient"),
          "evaluation mode without input_gradient: %s", bf_last_error());

    bf_model *dropped = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, 1, S, S}, 11, &dropped));
    if (dropped) {
        dropped->input_gradient = 1;
        const int in = bf_model_add_flatten(dropped, "flatten", BF_MODEL_INPUT);
        const int drop = bf_model_add_dropout(dropped, "dropout", in, 0.5f);
        bf_model_add_linear(dropped, "fc", drop, K, 1, BF_INIT_KAIMING_NORMAL_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
        CHECK_OK(bf_model_finalize(dropped));
        CHECK_OK(bf_to_device(b, dropped->param_data, theta, P * sizeof(float)));
        bf_hessian_options eval = o;
        eval.density_iterations = 0;
        eval.mode = BF_ANALYSIS_EVAL;
        CHECK_OK(bf_hessian(dropped, l, 0.0f, &eval, &r));
        for (int k = 0; k < 3; k++)
            CHECK_CLOSE(r.eigenvalues[k], eig[k], 1e-5, 1e-3, "evaluation mode through a dropout: eigenvalue k");
        CHECK_CLOSE(r.loss, loss, 1e-6, 1e-5, "evaluation mode through a dropout: the loss at theta");
        CHECK(dropped->training == 1, "the model comes back in training mode");
        eval.mode = BF_ANALYSIS_TRAIN;
        CHECK_OK(bf_hessian(dropped, l, 0.0f, &eval, &r));
        CHECK(fabs(r.eigenvalues[0] - eig[0]) > 0.01 * eig[0], "training mode, dropout drawn: top eigenvalue %g, not %g",
              r.eigenvalues[0], eig[0]);
        bf_model_destroy(dropped);
    }
    free(theta), free(grads), free(theta_after), free(grads_after);
    bf_loader_destroy(l);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    return bf_test_finish();
}
