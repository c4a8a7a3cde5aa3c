/* hessian.c - the top eigenvalues, the trace and the spectral density of the loss's Hessian at a
 * checkpoint's weights (analysis.h says what is computed). Hessian-vector products are central differences of the
 * gradient along a unit direction, H v = (g(theta + h v) - g(theta - h v)) / 2h, each gradient a
 * bf_mean_gradient over the same batches with the same random draws; the vectors live on the host,
 * their dot products are summed in double. The products and the eigenvalue algorithms serve
 * input_hessian.c too (hessian_internal.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "hessian_internal.h"
#include "json_number.h"

double bf_hessian_dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* v /= |v|; returns the norm it had. */
static double normalise(float *v, size_t n) {
    const double norm = sqrt(bf_hessian_dot(v, v, n));
    for (size_t i = 0; norm > 0 && i < n; i++) v[i] = (float)(v[i] / norm);
    return norm;
}

/* g (host) = the mean gradient at theta + c v. */
static bf_status weights_gradient_at(hessian_run *r, const float *v, double c, float *g) {
    for (size_t i = 0; i < r->n; i++) r->point[i] = (float)(r->theta[i] + c * v[i]);
    BF_TRY(bf_to_device(r->m->backend, r->m->param_data, r->point, r->n * sizeof(float)));
    r->m->step = r->step;
    BF_TRY(bf_mean_gradient(r->m, r->loader, r->label_smoothing, r->o->batches, r->sum, &r->loss, &r->samples));
    return bf_to_host(r->m->backend, g, r->sum, r->n * sizeof(float));
}

bf_status bf_hessian_product(hessian_run *r, const float *v, float *hv) {
    if (r->product) {
        r->products++;
        return r->product(r, v, hv);
    }
    const double h = r->o->step;
    BF_TRY(r->gradient_at(r, v, h, r->g_plus));
    BF_TRY(r->gradient_at(r, v, -h, r->g_minus));
    for (size_t i = 0; i < r->n; i++) hv[i] = (float)(((double)r->g_plus[i] - r->g_minus[i]) / (2 * h));
    r->products++;
    return BF_OK;
}

/* v minus its projections on the k unit vectors found so far (Gram-Schmidt), then normalised. */
static void orthonormalise(float *v, float *const *found, int k, size_t n) {
    for (int j = 0; j < k; j++) {
        const double c = bf_hessian_dot(v, found[j], n);
        for (size_t i = 0; i < n; i++) v[i] = (float)(v[i] - c * found[j][i]);
    }
    normalise(v, n);
}

bf_status bf_hessian_top_eigenvalues(hessian_run *r, float **vectors, float *hv, double *eigenvalues, int *iterations) {
    for (int k = 0; k < r->o->top_n; k++) {
        float *v = vectors[k];
        const uint64_t seed = bf_seed_derive(r->o->seed, BF_STREAM_HESSIAN, (uint64_t)k);
        for (size_t i = 0; i < r->n; i++) v[i] = (float)bf_normal(seed, i);
        double eigenvalue = 0;
        int i = 0, converged = 0;
        while (i < r->o->max_iterations && !converged) {
            orthonormalise(v, vectors, k, r->n);
            BF_TRY(bf_hessian_product(r, v, hv));
            const double quotient = bf_hessian_dot(v, hv, r->n);
            memcpy(v, hv, r->n * sizeof(float));
            normalise(v, r->n);
            converged = i > 0 && fabs(eigenvalue - quotient) / (fabs(eigenvalue) + 1e-6) < r->o->tolerance;
            eigenvalue = quotient;
            i++;
        }
        orthonormalise(v, vectors, k, r->n); /* the deflation basis stays orthonormal */
        eigenvalues[k] = eigenvalue;
        iterations[k] = i;
    }
    return BF_OK;
}

/* Hutchinson: the mean of v' H v over Rademacher v, until the running mean changes by less than the
 * tolerance (PyHessian's rule). H v = |v| H (v / |v|), a product along a unit direction. */
static bf_status hutchinson_trace(hessian_run *r, float *v, float *hv, bf_hessian_result *out) {
    double sum = 0, trace = 0;
    int i = 0;
    while (i < r->o->max_iterations) {
        const uint64_t seed = bf_seed_derive(r->o->seed, BF_STREAM_HESSIAN, 1000000u + (uint64_t)i);
        for (size_t j = 0; j < r->n; j++) v[j] = bf_uniform(seed, j) < 0.5f ? -1.0f : 1.0f;
        const double norm = normalise(v, r->n);
        BF_TRY(bf_hessian_product(r, v, hv));
        sum += bf_hessian_dot(v, hv, r->n) * norm * norm;
        i++;
        const double mean = sum / i;
        const int converged = i > 1 && fabs(mean - trace) / (fabs(trace) + 1e-6) < r->o->tolerance;
        trace = mean;
        if (converged) break;
    }
    out->trace = trace;
    out->trace_samples = i;
    return BF_OK;
}

void bf_symmetric_eigen(double *a, int n, double *values, double *first) {
    double *v = calloc((size_t)n * n, sizeof *v); /* the rotations so far: a's eigenvectors in its columns */
    if (!v) return;
    for (int i = 0; i < n; i++) v[(size_t)i * n + i] = 1;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, total = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                const double sq = a[(size_t)i * n + j] * a[(size_t)i * n + j];
                if (i == j) total += sq;
                else off += sq;
            }
        if (off <= 1e-30 * (total + off) || off == 0) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                const double apq = a[(size_t)p * n + q];
                if (apq == 0) continue;
                const double theta = (a[(size_t)q * n + q] - a[(size_t)p * n + p]) / (2 * apq);
                const double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                const double c = 1 / sqrt(t * t + 1), sn = t * c;
                for (int k = 0; k < n; k++) { /* columns p and q of a and v */
                    double *row = a + (size_t)k * n, *vrow = v + (size_t)k * n;
                    const double akp = row[p], akq = row[q], vkp = vrow[p], vkq = vrow[q];
                    row[p] = c * akp - sn * akq, row[q] = sn * akp + c * akq;
                    vrow[p] = c * vkp - sn * vkq, vrow[q] = sn * vkp + c * vkq;
                }
                for (int k = 0; k < n; k++) { /* rows p and q of a */
                    const double apk = a[(size_t)p * n + k], aqk = a[(size_t)q * n + k];
                    a[(size_t)p * n + k] = c * apk - sn * aqk, a[(size_t)q * n + k] = sn * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < n; i++) values[i] = a[(size_t)i * n + i], first[i] = v[i];
    free(v);
}

/* PyHessian's stochastic Lanczos quadrature, one run: Lanczos from a normalised Rademacher vector,
 * each new vector orthonormalised against all before it (a fresh random one where beta is 0); the
 * tridiagonal matrix's eigenvalues are the nodes, the squared first components of its eigenvectors
 * the weights. lanczos: density_iterations vectors of n floats. */
static bf_status spectral_density(hessian_run *r, float **lanczos, float *w, float *hv, bf_hessian_result *out) {
    const int m = r->o->density_iterations;
    const size_t n = r->n;
    double *alpha = calloc((size_t)m, sizeof *alpha), *beta = calloc((size_t)m, sizeof *beta);
    double *t = calloc((size_t)m * m, sizeof *t);
    if (!alpha || !beta || !t) {
        free(alpha), free(beta), free(t);
        return bf_error(BF_ERR_OOM, "hessian: out of host memory for the density");
    }
    bf_status s = BF_OK;
    for (int i = 0; s == BF_OK && i < m; i++) {
        float *v = lanczos[i];
        if (i == 0 || beta[i - 1] == 0) { /* the start, or a restart: a random vector */
            const uint64_t seed = bf_seed_derive(r->o->seed, BF_STREAM_HESSIAN, 2000000u + (uint64_t)i);
            for (size_t j = 0; j < n; j++) v[j] = bf_uniform(seed, j) < 0.5f ? -1.0f : 1.0f;
        } else {
            memcpy(v, w, n * sizeof(float));
        }
        orthonormalise(v, lanczos, i, n);
        s = bf_hessian_product(r, v, hv);
        if (s != BF_OK) break;
        alpha[i] = bf_hessian_dot(hv, v, n);
        for (size_t j = 0; j < n; j++) /* w = H v - alpha v - beta v_prev */
            w[j] = (float)(hv[j] - alpha[i] * v[j] - (i > 0 ? beta[i - 1] * lanczos[i - 1][j] : 0.0));
        if (i + 1 < m) beta[i] = sqrt(bf_hessian_dot(w, w, n));
    }
    if (s == BF_OK) {
        for (int i = 0; i < m; i++) {
            t[(size_t)i * m + i] = alpha[i];
            if (i + 1 < m) t[(size_t)i * m + i + 1] = t[(size_t)(i + 1) * m + i] = beta[i];
        }
        bf_symmetric_eigen(t, m, out->density_nodes, out->density_weights);
        for (int i = 0; i < m; i++) out->density_weights[i] *= out->density_weights[i];
        out->density_points = m;
    }
    free(alpha), free(beta), free(t);
    return s;
}

static bf_status check_options(const bf_hessian_options *o) {
    if (o->batches < 1 || o->top_n < 0 || o->top_n > BF_HESSIAN_MAX_TOP || o->max_iterations < 1 || !(o->tolerance > 0) ||
        !(o->step > 0) || o->density_iterations < 0 || o->density_iterations > BF_HESSIAN_MAX_DENSITY)
        return bf_error(BF_ERR_ARG, "hessian: batches %d, top_n %d (0 to %d), max_iterations %d, tolerance %g, step %g, "
                        "density_iterations %d (0 to %d)", o->batches, o->top_n, BF_HESSIAN_MAX_TOP, o->max_iterations,
                        o->tolerance, o->step, o->density_iterations, BF_HESSIAN_MAX_DENSITY);
    return BF_OK;
}

bf_status bf_hessian(bf_model *m, bf_loader *loader, float label_smoothing, const bf_hessian_options *o,
                     bf_hessian_result *out) {
    BF_TRY(check_options(o));
    BF_TRY(bf_analysis_check_mode(m, o->mode, "hessian"));
    bf_backend *b = m->backend;
    const size_t n = m->num_param_floats, nb = m->num_buffer_floats, bytes = (n + 1) * sizeof(float);
    hessian_run r = {.m = m, .loader = loader, .label_smoothing = label_smoothing, .o = o, .n = n, .step = m->step,
                     .gradient_at = weights_gradient_at};
    /* the eigenvectors and the trace's probe, then the Lanczos vectors and w */
    const int count = o->top_n + 1 + (o->density_iterations ? o->density_iterations + 1 : 0);
    float **vectors = calloc((size_t)count, sizeof *vectors), *hv = malloc(bytes);
    float *kept_buffers = malloc((nb + 1) * sizeof(float));
    float *kept_grads = malloc(bytes);
    r.theta = malloc(bytes), r.point = malloc(bytes), r.g_plus = malloc(bytes), r.g_minus = malloc(bytes);
    bf_status s = vectors && hv && kept_buffers && kept_grads && r.theta && r.point && r.g_plus && r.g_minus
                      ? BF_OK : bf_error(BF_ERR_OOM, "hessian: out of host memory for %zu parameters", n);
    for (int k = 0; s == BF_OK && k < count; k++)
        if (!(vectors[k] = malloc(bytes)))
            s = bf_error(BF_ERR_OOM, "hessian: out of host memory for %d vectors of %zu parameters (%.1f GiB)", count, n,
                         count * (double)bytes / 1073741824.0);
    /* what the passes change: the parameters, running statistics, the batch count, the gradients */
    if (s == BF_OK) s = bf_to_host(b, r.theta, m->param_data, n * sizeof(float));
    if (s == BF_OK && nb) s = bf_to_host(b, kept_buffers, m->buffer_data, nb * sizeof(float));
    if (s == BF_OK) s = bf_to_host(b, kept_grads, m->grad_data, n * sizeof(float));
    const int kept = s == BF_OK, was_training = m->training;
    const int64_t tracked = m->num_batches_tracked;
    const double flex_samples = m->flex_samples, spike_samples = m->spike_samples;
    if (s == BF_OK) s = bf_alloc(b, n * sizeof(float), (void **)&r.sum);
    m->training = o->mode == BF_ANALYSIS_TRAIN;
    memset(out, 0, sizeof *out);
    out->top_n = o->top_n;
    if (s == BF_OK) s = weights_gradient_at(&r, r.theta, 0.0, r.g_plus); /* the loss at theta */
    out->loss = r.samples ? r.loss / r.samples : 0;
    out->samples = r.samples;
    if (s == BF_OK) s = bf_hessian_top_eigenvalues(&r, vectors, hv, out->eigenvalues, out->iterations);
    if (s == BF_OK) s = hutchinson_trace(&r, vectors[o->top_n], hv, out);
    if (s == BF_OK && o->density_iterations)
        s = spectral_density(&r, vectors + o->top_n + 1, vectors[count - 1], hv, out);
    out->products = r.products;
    m->training = was_training;
    m->step = r.step;
    m->num_batches_tracked = tracked;
    m->flex_samples = flex_samples, m->spike_samples = spike_samples;
    bf_model_set_batch(m, m->input_shape.n);
    bf_status restored = BF_OK;
    if (kept) restored = bf_to_device(b, m->param_data, r.theta, n * sizeof(float));
    if (kept && restored == BF_OK && nb) restored = bf_to_device(b, m->buffer_data, kept_buffers, nb * sizeof(float));
    if (kept && restored == BF_OK) restored = bf_to_device(b, m->grad_data, kept_grads, n * sizeof(float));
    bf_free(b, r.sum);
    for (int k = 0; vectors && k < count; k++) free(vectors[k]);
    free(vectors), free(hv), free(kept_buffers), free(kept_grads), free(r.theta), free(r.point), free(r.g_plus), free(r.g_minus);
    return s != BF_OK ? bf_error_context(s, "hessian") : restored;
}

bf_status bf_hessian_write_json(const bf_hessian_options *o, const bf_hessian_result *r, FILE *f) {
    fprintf(f, "{\n  \"mode\": \"%s\",\n  \"batches\": %d,\n  \"samples\": %d,\n", o->mode == BF_ANALYSIS_EVAL ? "eval" : "train",
            o->batches, r->samples);
    bf_json_number(f, "  \"loss\": ", r->loss, 9);
    fprintf(f, ",\n  \"step\": %.9g,\n  \"tolerance\": %.9g,\n", o->step, o->tolerance);
    fprintf(f, "  \"eigenvalues\": [");
    for (int k = 0; k < r->top_n; k++) bf_json_number(f, k ? ", " : "", r->eigenvalues[k], 9);
    fprintf(f, "],\n  \"iterations\": [");
    for (int k = 0; k < r->top_n; k++) fprintf(f, "%s%d", k ? ", " : "", r->iterations[k]);
    bf_json_number(f, "],\n  \"trace\": ", r->trace, 9);
    fprintf(f, ",\n  \"trace_samples\": %d,\n", r->trace_samples);
    fprintf(f, "  \"density_nodes\": [");
    for (int k = 0; k < r->density_points; k++) bf_json_number(f, k ? ", " : "", r->density_nodes[k], 9);
    fprintf(f, "],\n  \"density_weights\": [");
    for (int k = 0; k < r->density_points; k++) bf_json_number(f, k ? ", " : "", r->density_weights[k], 9);
    fprintf(f, "],\n  \"hessian_vector_products\": %d,\n  \"seed\": %llu\n}\n", r->products, (unsigned long long)o->seed);
    return ferror(f) ? bf_error(BF_ERR_IO, "hessian: writing the results failed") : BF_OK;
}
