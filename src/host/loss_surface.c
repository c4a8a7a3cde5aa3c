/* loss_surface.c - the loss on a plane through a checkpoint's weights (analysis.h says what is
 * computed). The directions are built on the host, once, and copied to the backend with theta; every
 * grid point then writes theta + a d1 + b d2 into the model's parameters there (a copy and two
 * axpys: no parameter-sized transfer or host loop per point, which for VGG-16 took longer than
 * scoring the point) and runs the ordinary evaluation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/analysis.h"
#include "bioflex/hash.h"
#include "bioflex/train.h"

/* The stream of direction k (0 or 1) for parameter p: a direction's draws do not depend on the
 * other parameters' sizes. */
static uint64_t direction_seed(const bf_loss_surface_options *o, int k, int p) {
    return bf_seed_derive(bf_seed_derive(o->seed, BF_STREAM_SURFACE, (uint64_t)k), BF_STREAM_SURFACE, (uint64_t)p);
}

static void draw(const bf_loss_surface_options *o, uint64_t seed, float *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (o->directions == BF_SURFACE_REFERENCE) {
            d[i] = bf_uniform(seed, i);
            continue;
        }
        d[i] = (float)bf_normal(seed, i);
    }
}

static double norm_of(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

/* Filter normalisation of direction d of one parameter: each slice along dimension 0 scaled to the
 * norm of theta's slice; a 1-D tensor zeroed (filter_normalized) or scaled whole (reference). */
static void normalise(const bf_loss_surface_options *o, const bf_param *p, const float *theta, float *d) {
    const int reference = o->directions == BF_SURFACE_REFERENCE;
    if (p->ndim < 2 && !reference) {
        memset(d, 0, p->count * sizeof(float));
        return;
    }
    const size_t slices = p->ndim < 2 ? 1 : (size_t)p->shape[0], per = p->count / slices;
    const double eps = reference ? 1e-8 : 1e-10;
    for (size_t f = 0; f < slices; f++) {
        const double scale = norm_of(theta + f * per, per) / (norm_of(d + f * per, per) + eps);
        for (size_t i = 0; i < per; i++) d[f * per + i] = (float)(d[f * per + i] * scale);
    }
}

bf_status bf_loss_surface_directions(const bf_model *m, const float *theta, const bf_loss_surface_options *o,
                                     float *d1, float *d2) {
    if (o->steps < 2 || !(o->distance > 0))
        return bf_error(BF_ERR_ARG, "loss surface: steps %d (>= 2) and distance %g (> 0)", o->steps, o->distance);
    const size_t n = m->num_param_floats;
    float *d[2] = {d1, d2};
    for (int k = 0; k < 2; k++)
        for (int p = 0; p < m->num_params; p++)
            draw(o, direction_seed(o, k, p), d[k] + m->params[p].offset, m->params[p].count);
    if (o->directions == BF_SURFACE_REFERENCE) { /* d2 orthogonal to d1, over all parameters at once */
        double dot = 0, d1d1 = 0;
        for (size_t i = 0; i < n; i++) dot += (double)d1[i] * d2[i], d1d1 += (double)d1[i] * d1[i];
        const double c = d1d1 > 0 ? dot / d1d1 : 0;
        for (size_t i = 0; i < n; i++) d2[i] = (float)(d2[i] - c * d1[i]);
    }
    for (int k = 0; k < 2; k++)
        for (int p = 0; p < m->num_params; p++) {
            const bf_param *q = &m->params[p];
            normalise(o, q, theta + q->offset, d[k] + q->offset);
        }
    if (o->directions == BF_SURFACE_REFERENCE) { /* each step a fixed fraction of norm(theta) */
        const double step = norm_of(theta, n) * o->distance / o->steps;
        for (int k = 0; k < 2; k++) {
            const double scale = step / (norm_of(d[k], n) + 1e-30);
            for (size_t i = 0; i < n; i++) d[k][i] = (float)(d[k][i] * scale);
        }
    }
    return BF_OK;
}

double bf_loss_surface_coefficient(const bf_loss_surface_options *o, int i) {
    if (o->directions == BF_SURFACE_REFERENCE) return (double)(i - o->steps / 2);
    return o->distance * (2.0 * i / (o->steps - 1) - 1.0);
}

/* The parameters at grid point (a, c): theta + a d1 + c d2, on the backend. */
static bf_status set_point(bf_model *m, const float *theta, const float *d1, const float *d2, double a, double c) {
    bf_backend *b = m->backend;
    const size_t n = m->num_param_floats;
    BF_TRY(b->ops->copy(b, m->param_data, theta, n * sizeof(float)));
    BF_TRY(b->ops->axpy(b, (float)a, d1, m->param_data, n));
    return b->ops->axpy(b, (float)c, d2, m->param_data, n);
}

bf_status bf_loss_surface(bf_model *m, bf_loader *loader, float label_smoothing, const bf_loss_surface_options *o,
                          FILE *csv, double *center_loss) {
    bf_backend *b = m->backend;
    const size_t n = m->num_param_floats, bytes = n * sizeof(float);
    float *theta = malloc(bytes + 1), *d1 = malloc(bytes + 1), *d2 = malloc(bytes + 1);
    float *on_backend = NULL; /* theta, d1, d2 */
    bf_status s = theta && d1 && d2 ? BF_OK : bf_error(BF_ERR_OOM, "loss surface: 3 x %zu floats", n);
    if (s == BF_OK) s = bf_to_host(b, theta, m->param_data, bytes);
    const int have_theta = s == BF_OK; /* what the parameters are restored to */
    /* training mode moves the running statistics and counts: kept once here, put back at the end */
    const size_t buffer_bytes = m->num_buffer_floats * sizeof(float);
    float *buffers = o->training_mode ? malloc(buffer_bytes + 1) : NULL;
    const int64_t tracked = m->num_batches_tracked;
    const double flex_samples = m->flex_samples, spike_samples = m->spike_samples;
    if (s == BF_OK && o->training_mode && !buffers) s = bf_error(BF_ERR_OOM, "loss surface: %zu bytes", buffer_bytes);
    if (s == BF_OK && buffers && buffer_bytes) s = bf_to_host(b, buffers, m->buffer_data, buffer_bytes);
    const int have_buffers = s == BF_OK && buffers;
    if (s == BF_OK) s = bf_loss_surface_directions(m, theta, o, d1, d2);
    if (s == BF_OK) s = bf_alloc(b, 3 * bytes, (void **)&on_backend);
    if (s == BF_OK) s = bf_to_device(b, on_backend, theta, bytes);
    if (s == BF_OK) s = bf_to_device(b, on_backend + n, d1, bytes);
    if (s == BF_OK) s = bf_to_device(b, on_backend + 2 * n, d2, bytes);
    free(d1), free(d2);
    if (s == BF_OK) {
        fprintf(csv, "# bioflex loss surface: theta + alpha d1 + beta d2, %s directions (seed %llu), %d x %d points, "
                "distance %g, %s, %s mode\n", o->directions == BF_SURFACE_REFERENCE ? "reference" : "filter_normalized",
                (unsigned long long)o->seed, o->steps, o->steps, o->distance,
                o->batches > 0 ? "the loader's first batches" : "the loader's whole split",
                o->training_mode ? "training" : "evaluation");
        fprintf(csv, "alpha,beta,loss,top1\n");
    }
    double best_distance = INFINITY;
    for (int i = 0; s == BF_OK && i < o->steps; i++) {
        const double a = bf_loss_surface_coefficient(o, i);
        for (int j = 0; s == BF_OK && j < o->steps; j++) {
            const double c = bf_loss_surface_coefficient(o, j);
            bf_eval_result r;
            s = set_point(m, on_backend, on_backend + n, on_backend + 2 * n, a, c);
            if (s == BF_OK)
                s = o->training_mode ? bf_evaluate_batches_training_mode(m, loader, label_smoothing, 0, o->batches, 0, &r)
                                     : bf_evaluate_batches(m, loader, label_smoothing, 0, o->batches, &r);
            if (s != BF_OK) break;
            fprintf(csv, "%.6g,%.6g,%.7g,%.6g\n", a, c, r.loss, r.top1);
            if (center_loss && a * a + c * c < best_distance) best_distance = a * a + c * c, *center_loss = r.loss;
        }
    }
    bf_status restored = have_theta ? bf_to_device(b, m->param_data, theta, bytes) : BF_OK;
    if (have_buffers) {
        if (restored == BF_OK && buffer_bytes) restored = bf_to_device(b, m->buffer_data, buffers, buffer_bytes);
        m->num_batches_tracked = tracked;
        m->flex_samples = flex_samples, m->spike_samples = spike_samples;
    }
    bf_free(b, on_backend);
    free(theta), free(buffers);
    if (s == BF_OK && fflush(csv) != 0) s = bf_error(BF_ERR_IO, "loss surface: cannot write the CSV");
    return s != BF_OK ? bf_error_context(s, "loss surface") : restored;
}
