/* input_hessian.c - the Hessian of one image's cross-entropy with respect to the image (FlexNet
 * spec section 5.4: the input-space curvature flex and vanilla networks are compared by), for the
 * loader's first images one at a time (analysis.h says what is computed).
 *
 * With z = f(x) the logits, p = softmax(z) and J = dz/dx (K x pixels), the Hessian is
 *     H = J' (diag(p) - p p') J + sum_k (p_k - y_k) d2z_k/dx2.
 * The networks compared are piecewise linear in x (ReLU, max-pool, evaluation batch-norm, the
 * channel-wise max flex joint), so the second term is 0 wherever the Hessian exists; it is what
 * FlexNet's double backprop gives there too. bioflex takes J by K backward passes (rows of J, a
 * batch of copies of the image each with its own one-hot logit gradient) and then every product
 * H v = J'(S (J v)) exactly on the host, S in double (the softmax's saturation, the reason FlexNet
 * ran float64, is no trouble then). Central differences of the input gradient, as hessian.c takes
 * for the weights, fail here: a uniform background makes max-pool windows tie exactly at x, so the
 * gradient jumps in every direction through it. For networks with smooth layers (sigmoid masks,
 * spiking surrogates) this is the Gauss-Newton part of the Hessian.
 *
 * Chosen images (bf_input_hessian_options.positions) come through the same loader as the first ones
 * do, each from its batch (the loader jumps to it), so that an image's pixels, label, input noise
 * and draws are those it has among the first images, and so are its results. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch_upload.h"
#include "bioflex/hash.h"
#include "bioflex/train.h"
#include "hessian_internal.h"
#include "json_number.h"

typedef struct image_jacobian {
    int K;
    float *rows;     /* host: K x n, row k = dz_k/dx */
    double *p, *u;   /* host: the softmax at x, and J v */
} image_jacobian;

/* hv = J'(diag(p) - p p')(J v). */
static bf_status exact_product(hessian_run *r, const float *v, float *hv) {
    const image_jacobian *j = r->context;
    const size_t n = r->n;
    double pu = 0;
    for (int k = 0; k < j->K; k++) {
        j->u[k] = bf_hessian_dot(j->rows + (size_t)k * n, v, n);
        pu += j->p[k] * j->u[k];
    }
    for (int k = 0; k < j->K; k++) j->u[k] = j->p[k] * (j->u[k] - pu);
    for (size_t i = 0; i < n; i++) {
        double sum = 0;
        for (int k = 0; k < j->K; k++) sum += j->u[k] * j->rows[(size_t)k * n + i];
        hv[i] = (float)sum;
    }
    return BF_OK;
}

/* j->rows and j->p at the image x (device, one image) of the given label; *loss its cross-entropy,
 * *predicted its top logit's class (the lowest on ties, as top-1 counts it). copies: a device buffer
 * of the model's batch of images; dlogits: of its logits. */
static bf_status take_jacobian(bf_model *m, const float *x, int label, float *copies, float *dlogits, image_jacobian *j,
                               double *loss, int *predicted) {
    bf_backend *b = m->backend;
    const int K = j->K, batch = m->input_shape.n;
    const size_t n = bf_shape_per_sample(m->input_shape);
    float *onehot = calloc((size_t)batch * K, sizeof *onehot), *z = malloc((size_t)K * sizeof *z);
    bf_status s = onehot && z ? BF_OK : bf_error(BF_ERR_OOM, "input hessian: out of host memory");
    for (int c0 = 0; s == BF_OK && c0 < K; c0 += batch) {
        const int rows = K - c0 < batch ? K - c0 : batch;
        const float *logits = NULL;
        for (int i = 0; s == BF_OK && i < rows; i++) s = b->ops->copy(b, copies + (size_t)i * n, x, n * sizeof(float));
        if (s == BF_OK) s = bf_model_set_batch(m, rows);
        if (s == BF_OK) s = bf_model_forward(m, copies, &logits);
        if (s == BF_OK && c0 == 0) s = bf_to_host(b, z, logits, (size_t)K * sizeof(float));
        memset(onehot, 0, (size_t)batch * K * sizeof *onehot);
        for (int i = 0; i < rows; i++) onehot[(size_t)i * K + c0 + i] = 1;
        if (s == BF_OK) s = bf_to_device(b, dlogits, onehot, (size_t)rows * K * sizeof(float));
        if (s == BF_OK) s = bf_model_backward(m, dlogits);
        if (s == BF_OK) s = bf_to_host(b, j->rows + (size_t)c0 * n, m->dinput, (size_t)rows * n * sizeof(float));
    }
    if (s == BF_OK) { /* the softmax and the loss, in double */
        double top = z[0], total = 0;
        *predicted = 0;
        for (int k = 1; k < K; k++) {
            top = fmax(top, z[k]);
            if (z[k] > z[*predicted]) *predicted = k;
        }
        for (int k = 0; k < K; k++) total += j->p[k] = exp((double)z[k] - top);
        for (int k = 0; k < K; k++) j->p[k] /= total;
        *loss = log(total) - ((double)z[label] - top);
    }
    free(onehot), free(z);
    return s;
}

/* FlexNet's Lanczos: from a random unit vector, without re-orthogonalisation, stopping where beta
 * < 1e-6; the Ritz values are the eigenvalues of the tridiagonal matrix, largest first. */
static bf_status ritz_values(hessian_run *r, uint64_t seed, float *v, float *v_prev, float *hv, double *values,
                             int *count) {
    const int m = r->o->density_iterations;
    const size_t n = r->n;
    double *alpha = calloc((size_t)m, sizeof *alpha), *beta = calloc((size_t)m, sizeof *beta);
    double *t = calloc((size_t)m * m, sizeof *t), *first = malloc((size_t)m * sizeof *first);
    bf_status s = alpha && beta && t && first ? BF_OK : bf_error(BF_ERR_OOM, "input hessian: out of host memory");
    for (size_t j = 0; j < n; j++) v[j] = (float)bf_normal(seed, j), v_prev[j] = 0;
    double norm = sqrt(bf_hessian_dot(v, v, n));
    for (size_t j = 0; j < n; j++) v[j] = (float)(v[j] / norm);
    int steps = 0;
    while (s == BF_OK && steps < m) {
        s = bf_hessian_product(r, v, hv);
        if (s != BF_OK) break;
        const double b = steps > 0 ? beta[steps - 1] : 0.0;
        for (size_t j = 0; j < n; j++) hv[j] = (float)(hv[j] - b * v_prev[j]); /* w = H v - beta v_prev */
        alpha[steps] = bf_hessian_dot(hv, v, n);
        for (size_t j = 0; j < n; j++) hv[j] = (float)(hv[j] - alpha[steps] * v[j]);
        steps++;
        norm = sqrt(bf_hessian_dot(hv, hv, n));
        if (steps == m || norm < 1e-6) break;
        beta[steps - 1] = norm;
        for (size_t j = 0; j < n; j++) v_prev[j] = v[j], v[j] = (float)(hv[j] / norm);
    }
    if (s == BF_OK) {
        for (int i = 0; i < steps; i++) {
            t[(size_t)i * steps + i] = alpha[i];
            if (i + 1 < steps) t[(size_t)i * steps + i + 1] = t[(size_t)(i + 1) * steps + i] = beta[i];
        }
        bf_symmetric_eigen(t, steps, values, first);
        for (int i = 0; i < steps; i++) /* largest first */
            for (int j = i + 1; j < steps; j++)
                if (values[j] > values[i]) {
                    const double keep = values[i];
                    values[i] = values[j], values[j] = keep;
                }
        *count = steps;
    }
    free(alpha), free(beta), free(t), free(first);
    return s;
}

static bf_status check_options(const bf_model *m, const bf_input_hessian_options *o) {
    if (!m->input_gradient) return bf_error(BF_ERR_ARG, "input hessian: the model was not built with input_gradient");
    if (o->images < 1 || o->images > BF_INPUT_HESSIAN_MAX_IMAGES || o->top_n < 0 || o->top_n > BF_HESSIAN_MAX_TOP ||
        o->power_steps < 1 || o->lanczos_steps < 1 || o->lanczos_steps > BF_INPUT_HESSIAN_MAX_RITZ ||
        o->surface_points < 0 || o->surface_points > BF_INPUT_HESSIAN_MAX_SURFACE || (o->surface_points && o->top_n < 2) ||
        (o->surface_points && !(o->surface_range > 0)))
        return bf_error(BF_ERR_ARG, "input hessian: images %d (1 to %d), top_n %d (0 to %d; 2 or more with a surface), "
                        "power_steps %d (>= 1), lanczos_steps %d (1 to %d), surface_points %d (0 to %d), surface_range %g (> 0)",
                        o->images, BF_INPUT_HESSIAN_MAX_IMAGES, o->top_n, BF_HESSIAN_MAX_TOP, o->power_steps,
                        o->lanczos_steps, BF_INPUT_HESSIAN_MAX_RITZ, o->surface_points, BF_INPUT_HESSIAN_MAX_SURFACE,
                        o->surface_range);
    for (int i = 0; o->positions && i < o->images; i++)
        if (o->positions[i] < 0) return bf_error(BF_ERR_ARG, "input hessian: position %d < 0", o->positions[i]);
    return BF_OK;
}

/* The first position still to analyse, or -1 when every one is done. */
static int lowest_pending(const int *wanted, const unsigned char *analysed, int images) {
    int lowest = -1;
    for (int i = 0; i < images; i++)
        if (!analysed[i] && (lowest < 0 || wanted[i] < lowest)) lowest = wanted[i];
    return lowest;
}

/* surface (points^2) = the loss at x + alpha v1 + beta v2 (x, v1, v2 on the host), alpha and beta
 * evenly from -range to range, alpha by rows; the grid points in batches of the model's. */
static bf_status loss_surface(bf_model *m, const float *x, int label, const float *v1, const float *v2, int points,
                              float range, float *copies, float *scratch, float *surface) {
    bf_backend *b = m->backend;
    const int batch = m->input_shape.n, total = points * points;
    const size_t n = bf_shape_per_sample(m->input_shape);
    float *host = malloc((size_t)batch * n * sizeof *host), *losses = scratch;
    int32_t *labels = malloc((size_t)batch * sizeof *labels), *device_labels = (int32_t *)(scratch + batch);
    bf_status s = host && labels ? BF_OK : bf_error(BF_ERR_OOM, "input hessian: out of host memory");
    for (int i = 0; i < batch && labels; i++) labels[i] = label;
    if (s == BF_OK) s = bf_to_device(b, device_labels, labels, (size_t)batch * sizeof(int32_t));
    for (int first = 0; s == BF_OK && first < total; first += batch) {
        const int rows = total - first < batch ? total - first : batch;
        const float *logits = NULL;
        for (int g = 0; g < rows; g++) {
            const int a = (first + g) / points, c = (first + g) % points;
            const double alpha = points > 1 ? -range + 2.0 * range * a / (points - 1) : 0;
            const double beta = points > 1 ? -range + 2.0 * range * c / (points - 1) : 0;
            for (size_t j = 0; j < n; j++) host[(size_t)g * n + j] = (float)(x[j] + alpha * v1[j] + beta * v2[j]);
        }
        s = bf_model_set_batch(m, rows);
        if (s == BF_OK) s = bf_to_device(b, copies, host, (size_t)rows * n * sizeof(float));
        if (s == BF_OK) s = bf_model_forward(m, copies, &logits);
        if (s == BF_OK) s = b->ops->softmax_xent(b, rows, m->num_classes, logits, device_labels, 0.0f, 1.0f, losses, NULL);
        if (s == BF_OK) s = bf_to_host(b, surface + first, losses, (size_t)rows * sizeof(float));
    }
    free(host), free(labels);
    return s;
}

/* One image (x on the device, its label given): loss, top eigenvalues and Ritz values. */
static bf_status analyse_image(hessian_run *r, const bf_input_hessian_options *o, const float *x, int label,
                               float *copies, float *dlogits, float **vectors, float *hv, bf_input_hessian_image *out) {
    BF_TRY(take_jacobian(r->m, x, label, copies, dlogits, r->context, &out->loss, &out->predicted));
    const uint64_t seed = bf_seed_derive(o->seed, BF_STREAM_HESSIAN, 3000000u + (uint64_t)out->position);
    bf_hessian_options power = {.top_n = o->top_n, .max_iterations = o->power_steps, .tolerance = 0,
                                .density_iterations = o->lanczos_steps, .seed = seed};
    r->o = &power;
    bf_status s = bf_hessian_top_eigenvalues(r, vectors, hv, out->eigenvalues, out->iterations);
    if (s == BF_OK)
        s = ritz_values(r, bf_seed_derive(seed, BF_STREAM_HESSIAN, 1), vectors[o->top_n], vectors[o->top_n + 1], hv,
                        out->ritz, &out->ritz_count);
    r->o = NULL;
    return s;
}

void bf_input_hessian_free(bf_input_hessian_result *r) {
    free(r->surface);
    r->surface = NULL;
}

bf_status bf_input_hessian(bf_model *m, bf_loader *loader, const bf_input_hessian_options *o,
                           bf_input_hessian_result *out) {
    BF_TRY(check_options(m, o));
    bf_backend *b = m->backend;
    const int K = m->num_classes, batch = m->input_shape.n, was_training = m->training;
    const size_t n = bf_shape_per_sample(m->input_shape), bytes = n * sizeof(float);
    image_jacobian jacobian = {.K = K, .rows = malloc((size_t)K * bytes), .p = malloc(2 * (size_t)K * sizeof(double))};
    jacobian.u = jacobian.p ? jacobian.p + K : NULL;
    hessian_run r = {.m = m, .n = n, .step = BF_EVAL_STEP, .product = exact_product, .context = &jacobian};
    const int count = o->top_n + 2;
    float **vectors = calloc((size_t)count, sizeof *vectors), *hv = malloc(bytes), *x0 = NULL, *copies = NULL,
          *dlogits = NULL;
    int32_t *labels = malloc((size_t)batch * sizeof *labels), *device_labels = NULL;
    bf_status s = jacobian.rows && jacobian.p && vectors && hv && labels
                      ? BF_OK : bf_error(BF_ERR_OOM, "input hessian: out of host memory (%d classes x %zu floats)", K, n);
    for (int k = 0; s == BF_OK && k < count; k++)
        if (!(vectors[k] = malloc(bytes))) s = bf_error(BF_ERR_OOM, "input hessian: out of host memory");
    if (s == BF_OK) s = bf_alloc(b, (size_t)batch * bytes, (void **)&x0);
    if (s == BF_OK) s = bf_alloc(b, (size_t)batch * bytes, (void **)&copies);
    if (s == BF_OK) s = bf_alloc(b, (size_t)batch * K * sizeof(float), (void **)&dlogits);
    if (s == BF_OK) s = bf_alloc(b, (size_t)batch * sizeof(int32_t), (void **)&device_labels);
    float *surface_scratch = NULL; /* the surface's losses and labels, a batch of each */
    if (s == BF_OK) s = bf_alloc(b, 2 * (size_t)batch * sizeof(float), (void **)&surface_scratch);
    bf_batch_uploader *upload = NULL;
    if (s == BF_OK) s = bf_batch_uploader_create(b, &upload);
    m->training = 0;
    m->step = BF_EVAL_STEP;
    memset(out, 0, sizeof *out);
    const size_t surface = (size_t)o->images * o->surface_points * o->surface_points;
    if (s == BF_OK && surface && !(out->surface = malloc(surface * sizeof(float))))
        s = bf_error(BF_ERR_OOM, "input hessian: out of host memory for the surfaces");
    /* slot i of the result: the image at split position wanted[i] */
    int *wanted = malloc((size_t)o->images * sizeof *wanted);
    unsigned char *analysed = calloc((size_t)o->images, 1);
    if (s == BF_OK && !(wanted && analysed)) s = bf_error(BF_ERR_OOM, "input hessian: out of host memory");
    for (int i = 0; s == BF_OK && i < o->images; i++) wanted[i] = o->positions ? o->positions[i] : i;
    const int shuffled = bf_loader_set_shuffle(loader, 0);
    if (s == BF_OK) s = bf_loader_start_epoch(loader, 0, 0);
    int loader_batch = 0; /* the loader's batch size: its first batch's (only a last batch is smaller) */
    while (s == BF_OK && out->images < o->images) {
        bf_batch *next = NULL;
        s = bf_loader_next(loader, &next, NULL);
        if (s != BF_OK) break;
        if (!next) {
            s = bf_error(BF_ERR_ARG, "input hessian: position %d is past the end of the split",
                         lowest_pending(wanted, analysed, o->images));
            break;
        }
        const int first = next->position, index = next->index;
        if (!loader_batch) loader_batch = next->n;
        if (next->n > batch) {
            bf_loader_release(loader, next);
            s = bf_error(BF_ERR_ARG, "input hessian: batch of %d exceeds the model's %d", next->n, batch);
            break;
        }
        int take = 0; /* the batch's images up to the last one wanted */
        for (int i = 0; i < o->images; i++)
            if (!analysed[i] && wanted[i] >= first && wanted[i] < first + next->n && wanted[i] - first >= take)
                take = wanted[i] - first + 1;
        if (!take) bf_loader_release(loader, next);
        else s = bf_batch_upload_once(upload, loader, next, x0, device_labels, take);
        if (s == BF_OK && take) s = bf_to_host(b, labels, device_labels, (size_t)take * sizeof(int32_t));
        for (int i = 0; s == BF_OK && i < o->images; i++) {
            const int at = wanted[i] - first;
            if (analysed[i] || at < 0 || at >= take) continue;
            bf_input_hessian_image *img = &out->image[i];
            img->position = (uint64_t)wanted[i], img->label = labels[at];
            m->sample_offset = img->position;
            s = analyse_image(&r, o, x0 + (size_t)at * n, labels[at], copies, dlogits, vectors, hv, img);
            if (s == BF_OK && o->surface_points) {
                s = bf_to_host(b, hv, x0 + (size_t)at * n, bytes); /* hv: free between products */
                if (s == BF_OK)
                    s = loss_surface(m, hv, labels[at], vectors[0], vectors[1], o->surface_points, o->surface_range,
                                     copies, surface_scratch,
                                     out->surface + (size_t)i * o->surface_points * o->surface_points);
            }
            analysed[i] = s == BF_OK;
            out->images += s == BF_OK;
        }
        /* on to the batch of the first position still wanted: the next batch, or a jump to it */
        const int lowest = lowest_pending(wanted, analysed, o->images);
        if (s != BF_OK || lowest < 0 || lowest / loader_batch == index + 1) continue;
        if (lowest / loader_batch <= index || lowest / loader_batch >= bf_loader_num_batches(loader))
            s = bf_error(BF_ERR_ARG, "input hessian: position %d is past the end of the split (%d batches of %d images)",
                         lowest, bf_loader_num_batches(loader), loader_batch);
        else
            s = bf_loader_start_epoch(loader, 0, lowest / loader_batch);
    }
    out->products = r.products;
    bf_loader_set_shuffle(loader, shuffled);
    m->training = was_training;
    bf_model_set_batch(m, batch);
    bf_batch_uploader_destroy(upload);
    bf_free(b, x0), bf_free(b, copies), bf_free(b, dlogits), bf_free(b, device_labels), bf_free(b, surface_scratch);
    for (int k = 0; vectors && k < count; k++) free(vectors[k]);
    free(vectors), free(hv), free(labels), free(jacobian.rows), free(jacobian.p), free(wanted), free(analysed);
    return s != BF_OK ? bf_error_context(s, "input hessian") : BF_OK;
}

bf_status bf_input_hessian_write_json(const bf_input_hessian_options *o, const bf_input_hessian_result *r, FILE *f) {
    fprintf(f, "{\n  \"images\": %d,\n  \"power_steps\": %d,\n  \"lanczos_steps\": %d,\n  \"surface_points\": %d,\n"
            "  \"surface_range\": %.9g,\n  \"seed\": %llu,\n  \"hessian_vector_products\": %d,\n  \"per_image\": [",
            r->images, o->power_steps, o->lanczos_steps, r->surface ? o->surface_points : 0, o->surface_range,
            (unsigned long long)o->seed, r->products);
    for (int i = 0; i < r->images; i++) {
        const bf_input_hessian_image *img = &r->image[i];
        fprintf(f, "%s\n    {\"position\": %llu, \"label\": %d, \"predicted\": %d, \"correct\": %s, ", i ? "," : "",
                (unsigned long long)img->position, img->label, img->predicted,
                img->predicted == img->label ? "true" : "false");
        bf_json_number(f, "\"loss\": ", img->loss, 9);
        fprintf(f, ", \"eigenvalues\": [");
        for (int k = 0; k < o->top_n; k++) bf_json_number(f, k ? ", " : "", img->eigenvalues[k], 9);
        fprintf(f, "], \"ritz\": [");
        for (int k = 0; k < img->ritz_count; k++) bf_json_number(f, k ? ", " : "", img->ritz[k], 9);
        if (r->surface) { /* points x points, alpha by rows */
            const int points = o->surface_points;
            fprintf(f, "], \"surface\": [");
            for (int k = 0; k < points * points; k++)
                bf_json_number(f, k ? ", " : "", r->surface[(size_t)i * points * points + k], 7);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n  ]\n}\n");
    return ferror(f) ? bf_error(BF_ERR_IO, "input hessian: writing the results failed") : BF_OK;
}
