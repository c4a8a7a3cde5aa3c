/* gradient_flow.c - how large the gradients of a checkpoint's parameters are (analysis.h says what
 * is computed): training- or evaluation-mode passes over the loader's first batches, their parameter gradients
 * summed on the device as one mean over those batches, then the statistics of each parameter
 * tensor on the host. The model is left as it was: its running statistics, batch count and
 * gradients are put back. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "batch_upload.h"
#include "bioflex/analysis.h"
#include "bioflex/train.h"

bf_status bf_mean_gradient(bf_model *m, bf_loader *loader, float label_smoothing, int batches, float *sum, double *loss,
                           int *samples) {
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    const int max_n = m->input_shape.n, k = m->num_classes;
    float *x = NULL, *losses = NULL, *dlogits = NULL, *losses_sum = NULL;
    int32_t *labels = NULL;
    bf_batch_uploader *upload = NULL;
    bf_status s = bf_alloc(b, bf_shape_count(m->input_shape) * sizeof(float), (void **)&x);
    if (s == BF_OK) s = bf_alloc(b, (size_t)max_n * sizeof(float), (void **)&losses);
    if (s == BF_OK) s = bf_alloc(b, sizeof(float), (void **)&losses_sum);
    if (s == BF_OK) s = ops->fill(b, losses_sum, 0.0f, 1);
    if (s == BF_OK) s = bf_alloc(b, (size_t)max_n * k * sizeof(float), (void **)&dlogits);
    if (s == BF_OK) s = bf_alloc(b, (size_t)max_n * sizeof(int32_t), (void **)&labels);
    if (s == BF_OK) s = bf_batch_uploader_create(b, &upload);
    if (s == BF_OK) s = ops->fill(b, sum, 0.0f, m->num_param_floats);
    if (s == BF_OK) s = bf_loader_start_epoch(loader, 0, 0);
    if (s == BF_OK && !m->training) s = bf_analysis_check_mode(m, BF_ANALYSIS_EVAL, "gradient");
    const int kept_param_grads = m->eval_parameter_gradients;
    const uint64_t kept_offset = m->sample_offset, kept_step = m->step;
    m->eval_parameter_gradients = 1; /* evaluation mode: the parameters' gradients too, not the image's alone */
    int done = 0;
    *samples = 0;
    while (s == BF_OK && done < batches) {
        bf_batch *batch = NULL;
        s = bf_loader_next(loader, &batch, NULL);
        if (s != BF_OK || !batch) break;
        const int n = batch->n;
        if (n > max_n) {
            bf_loader_release(loader, batch);
            s = bf_error(BF_ERR_ARG, "gradient flow: batch of %d exceeds the model's %d", n, max_n);
            break;
        }
        const uint64_t position = (uint64_t)batch->position; /* read before the upload gives the batch back */
        s = bf_batch_upload_once(upload, loader, batch, x, labels, n);
        const float *logits = NULL;
        if (!m->training) /* evaluation's random draws, as bf_evaluate keys them */
            m->step = BF_EVAL_STEP, m->sample_offset = position;
        if (s == BF_OK) s = bf_model_set_batch(m, n);
        if (s == BF_OK) s = bf_model_forward(m, x, &logits);
        if (s == BF_OK) s = ops->softmax_xent(b, n, k, logits, labels, label_smoothing, 1.0f / n, losses, dlogits);
        if (s == BF_OK) s = bf_model_backward(m, dlogits);
        if (s == BF_OK) s = ops->axpy(b, 1.0f / (float)batches, m->grad_data, sum, m->num_param_floats);
        if (s == BF_OK) s = ops->accumulate_sum(b, losses, (size_t)n, losses_sum); /* for the header */
        *samples += n;
        done++;
    }
    m->eval_parameter_gradients = kept_param_grads;
    m->sample_offset = kept_offset, m->step = kept_step;
    float total = 0;
    if (s == BF_OK) s = bf_to_host(b, &total, losses_sum, sizeof total);
    *loss = total;
    if (s == BF_OK && done < batches)
        s = bf_error(BF_ERR_ARG, "gradient flow: the training split has %d batches, fewer than the %d asked for", done,
                     batches);
    bf_batch_uploader_destroy(upload);
    bf_free(b, x), bf_free(b, losses), bf_free(b, dlogits), bf_free(b, labels), bf_free(b, losses_sum);
    return s;
}

/* One CSV line per parameter tensor from the gradient g and the weights w (host, the model's layout). */
static void write_rows(const bf_model *m, const float *g, const float *w, FILE *csv) {
    for (int p = 0; p < m->num_params; p++) {
        const bf_param *q = &m->params[p];
        double sum_abs = 0, max_abs = 0, sq = 0, w_sq = 0;
        for (size_t i = q->offset; i < q->offset + q->count; i++) {
            const double a = fabs((double)g[i]);
            sum_abs += a;
            max_abs = a > max_abs ? a : max_abs;
            sq += a * a;
            w_sq += (double)w[i] * w[i];
        }
        const double norm = sqrt(sq), w_norm = sqrt(w_sq);
        fprintf(csv, "%s,%zu,%.7g,%.7g,%.7g,%.7g,%.7g\n", q->name, q->count, sum_abs / (double)q->count, max_abs, norm,
                w_norm, w_norm > 0 ? norm / w_norm : 0.0);
    }
}

const char *bf_analysis_mode_name(bf_analysis_mode mode) { return mode == BF_ANALYSIS_EVAL ? "evaluation" : "training"; }

bf_status bf_analysis_check_mode(const bf_model *m, bf_analysis_mode mode, const char *analysis) {
    if (mode != BF_ANALYSIS_TRAIN && mode != BF_ANALYSIS_EVAL) return bf_error(BF_ERR_ARG, "%s: unknown mode %d", analysis, (int)mode);
    if (mode == BF_ANALYSIS_EVAL && !m->input_gradient)
        return bf_error(BF_ERR_ARG, "%s: evaluation mode needs a model built with input_gradient (model.h)", analysis);
    return BF_OK;
}

bf_status bf_gradient_flow(bf_model *m, bf_loader *loader, float label_smoothing, int batches, bf_analysis_mode mode,
                           FILE *csv) {
    if (batches < 1) return bf_error(BF_ERR_ARG, "gradient flow: %d batches (at least 1)", batches);
    BF_TRY(bf_analysis_check_mode(m, mode, "gradient flow"));
    bf_backend *b = m->backend;
    const size_t n = m->num_param_floats, buffers = m->num_buffer_floats;
    float *w = malloc((n + 1) * sizeof(float)), *g = malloc((n + 1) * sizeof(float));
    float *kept_buffers = malloc((buffers + 1) * sizeof(float)), *kept_grads = malloc((n + 1) * sizeof(float));
    float *sum = NULL;
    bf_status s = w && g && kept_buffers && kept_grads ? BF_OK : bf_error(BF_ERR_OOM, "gradient flow: out of host memory");
    /* what the training-mode passes change: running statistics, the batch count, the gradients */
    if (s == BF_OK && buffers) s = bf_to_host(b, kept_buffers, m->buffer_data, buffers * sizeof(float));
    if (s == BF_OK) s = bf_to_host(b, kept_grads, m->grad_data, n * sizeof(float));
    const int kept = s == BF_OK, was_training = m->training;
    const int64_t tracked = m->num_batches_tracked;
    const double flex_samples = m->flex_samples, spike_samples = m->spike_samples;
    if (s == BF_OK) s = bf_alloc(b, n * sizeof(float), (void **)&sum);
    double loss = 0;
    int samples = 0;
    m->training = mode == BF_ANALYSIS_TRAIN;
    if (s == BF_OK) s = bf_mean_gradient(m, loader, label_smoothing, batches, sum, &loss, &samples);
    if (s == BF_OK) s = bf_to_host(b, g, sum, n * sizeof(float));
    if (s == BF_OK) s = bf_to_host(b, w, m->param_data, n * sizeof(float));
    if (s == BF_OK) {
        fprintf(csv, "# bioflex gradient flow: the gradient of the mean training loss (%.6g) over the first %d training "
                "batches (%d images), %s mode; per parameter tensor\n", samples ? loss / samples : 0.0, batches,
                samples, bf_analysis_mode_name(mode));
        fprintf(csv, "parameter,count,mean_abs_grad,max_abs_grad,grad_norm,weight_norm,grad_to_weight\n");
        write_rows(m, g, w, csv);
    }
    m->training = was_training;
    m->num_batches_tracked = tracked;
    m->flex_samples = flex_samples, m->spike_samples = spike_samples;
    bf_model_set_batch(m, m->input_shape.n);
    bf_status restored = BF_OK;
    if (kept && buffers) restored = bf_to_device(b, m->buffer_data, kept_buffers, buffers * sizeof(float));
    if (kept && restored == BF_OK) restored = bf_to_device(b, m->grad_data, kept_grads, n * sizeof(float));
    bf_free(b, sum);
    free(w), free(g), free(kept_buffers), free(kept_grads);
    if (s == BF_OK && fflush(csv) != 0) s = bf_error(BF_ERR_IO, "gradient flow: cannot write the CSV");
    return s != BF_OK ? bf_error_context(s, "gradient flow") : restored;
}
