/* evaluate.c - a pass over a split (or its first batches) in eval mode (running batch-norm
 * statistics, no dropout): mean loss, top-1 and top-5 accuracy, and the balanced top-1. Per-sample
 * results are summed on the device and read back once at the end; the balanced top-1 needs each
 * batch's per-sample top-1 on the host (n floats), counted there per class.
 *
 * What a forward pass draws at random in eval mode (rate-coded input spikes, stochastic flex masks)
 * is keyed by the step counter and the sample's position in the split (bf_layer_draws): the counter
 * is BF_EVAL_STEP (train.h), far above any training step, and the position is the batch's first sample's
 * plus the sample's place in the batch. So an evaluation repeats exactly, none of its draws are the
 * training steps', and a whole pass, which reads the split in file order, scores the same whatever
 * eval_batch_size and however many data-parallel ranks share it. (A flex threshold re-drawn on
 * every forward pass, threshold_mode = resample_each_forward, is one draw per batch: keyed by the
 * batch's first sample, so that score depends on the batches.) The training state is restored.
 * bf_evaluate_batches_training_mode scores the same way through the training-mode forward.
 * Each batch's logits and losses also come to the host for the health figures (the largest |logit|
 * and loss, the non-finite losses): a few huge logits hide behind a sane top-1. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch_upload.h"
#include "bioflex/train.h"

bf_status bf_evaluate(bf_model *m, bf_loader *loader, float label_smoothing, bf_eval_result *out) {
    return bf_evaluate_batches(m, loader, label_smoothing, 0, 0, out);
}

/* The pass itself, its forward in evaluation mode or (training) in training mode. */
double bf_balanced_top1(const double *class_counts, int classes) {
    double recall_sum = 0;
    int present = 0;
    for (int c = 0; c < classes; c++)
        if (class_counts[classes + c] > 0) recall_sum += class_counts[c] / class_counts[classes + c], present++;
    return present ? recall_sum / present : 0;
}

static bf_status score_batches(bf_model *m, bf_loader *loader, float label_smoothing, int epoch, int max_batches,
                               int training, double *counts_out, bf_eval_result *out) {
    bf_backend *b = m->backend;
    const bf_ops *ops = b->ops;
    int max_n = m->input_shape.n, k = m->num_classes;
    size_t image_floats = bf_shape_per_sample(m->input_shape);
    float *x = NULL, *losses = NULL, *c1 = NULL, *c5 = NULL, *sums = NULL;
    int32_t *labels = NULL;
    bf_batch_uploader *upload = NULL; /* float batches are copied, uint8 ones normalised on the backend */
    bf_status s = bf_alloc(b, (size_t)max_n * image_floats * sizeof(float), (void **)&x);
    if (s == BF_OK) s = bf_alloc(b, (size_t)max_n * sizeof(int32_t), (void **)&labels);
    if (s == BF_OK) s = bf_alloc(b, (size_t)max_n * 3 * sizeof(float), (void **)&losses);
    if (s == BF_OK) s = bf_alloc(b, 4 * sizeof(float), (void **)&sums);
    if (s == BF_OK) s = bf_batch_uploader_create(b, &upload);
    c1 = losses ? losses + max_n : NULL;
    c5 = losses ? losses + 2 * max_n : NULL;
    /* per class: correct top-1 and samples (the balanced top-1); the batch's labels and top-1 */
    double *class_counts = calloc(2 * (size_t)k, sizeof *class_counts);
    int32_t *host_labels = malloc((size_t)max_n * sizeof *host_labels);
    float *host_c1 = malloc((size_t)max_n * sizeof *host_c1);
    float *host_logits = malloc((size_t)max_n * (k + 1) * sizeof *host_logits), *host_losses = host_logits + (size_t)max_n * k;
    if (s == BF_OK && (!class_counts || !host_labels || !host_c1 || !host_logits))
        s = bf_error(BF_ERR_OOM, "evaluate: out of host memory");
    double max_abs_logit = 0, max_loss = 0;
    int nonfinite = 0;
    int was_training = m->training, samples = 0, batches = 0;
    uint64_t training_step = m->step, training_offset = m->sample_offset;
    m->training = training;
    /* A whole pass goes in file order, whatever the loader's shuffle ([run] val_batches draws its
     * batches at random): the draws are keyed by the position in the epoch's order, so only then does
     * each sample get the ones bioflex-eval gives it, and the run's final score is bioflex-eval's. */
    int shuffled = max_batches <= 0 ? bf_loader_set_shuffle(loader, 0) : -1;
    if (s == BF_OK) s = bf_loader_start_epoch(loader, epoch, 0);
    while (s == BF_OK && (max_batches <= 0 || batches++ < max_batches)) {
        bf_batch *batch = NULL;
        s = bf_loader_next(loader, &batch, NULL);
        if (s != BF_OK || !batch) break;
        int n = batch->n;
        uint64_t position = (uint64_t)batch->position; /* read before the release: a worker may refill the slot */
        if (n > max_n) {
            bf_loader_release(loader, batch);
            s = bf_error(BF_ERR_ARG, "evaluate: batch of %d exceeds the model's %d", n, max_n);
            break;
        }
        memcpy(host_labels, batch->labels, (size_t)n * sizeof *host_labels);
        s = bf_batch_upload_once(upload, loader, batch, x, labels, n);
        const float *logits = NULL;
        m->step = BF_EVAL_STEP;
        m->sample_offset = position;
        if (s == BF_OK) s = bf_model_set_batch(m, n);
        if (s == BF_OK) s = bf_model_forward(m, x, &logits);
        if (s == BF_OK) s = ops->softmax_xent(b, n, k, logits, labels, label_smoothing, 1.0f, losses, NULL);
        if (s == BF_OK) s = ops->topk_correct(b, n, k, logits, labels, c1, c5);
        if (s == BF_OK) s = ops->accumulate_sum(b, losses, (size_t)n, sums + 0);
        if (s == BF_OK) s = ops->accumulate_sum(b, c1, (size_t)n, sums + 1);
        if (s == BF_OK) s = ops->accumulate_sum(b, c5, (size_t)n, sums + 2);
        if (s == BF_OK) s = bf_to_host(b, host_c1, c1, (size_t)n * sizeof(float));
        for (int i = 0; s == BF_OK && i < n; i++)
            if (host_labels[i] >= 0 && host_labels[i] < k) class_counts[host_labels[i]] += host_c1[i], class_counts[k + host_labels[i]]++;
        if (s == BF_OK) s = bf_to_host(b, host_logits, logits, (size_t)n * k * sizeof(float));
        if (s == BF_OK) s = bf_to_host(b, host_losses, losses, (size_t)n * sizeof(float));
        for (size_t i = 0; s == BF_OK && i < (size_t)n * k; i++)
            if (fabs(host_logits[i]) > max_abs_logit || isnan(host_logits[i])) max_abs_logit = fabs(host_logits[i]);
        for (int i = 0; s == BF_OK && i < n; i++) {
            if (!isfinite(host_losses[i])) nonfinite++;
            else if (host_losses[i] > max_loss) max_loss = host_losses[i];
        }
        samples += n;
    }
    float host[4] = {0};
    if (s == BF_OK) s = bf_to_host(b, host, sums, sizeof host);
    if (shuffled >= 0) bf_loader_set_shuffle(loader, shuffled);
    m->training = was_training;
    m->step = training_step;
    m->sample_offset = training_offset;
    bf_model_set_batch(m, max_n);
    bf_batch_uploader_destroy(upload);
    bf_free(b, x);
    bf_free(b, labels);
    bf_free(b, losses);
    bf_free(b, sums);
    if (s == BF_OK) out->balanced_top1 = bf_balanced_top1(class_counts, k);
    if (s == BF_OK && counts_out) memcpy(counts_out, class_counts, 2 * (size_t)k * sizeof *counts_out);
    free(class_counts), free(host_labels), free(host_c1), free(host_logits);
    if (s != BF_OK) return bf_error_context(s, "evaluation");
    out->samples = samples;
    out->max_abs_logit = max_abs_logit, out->max_loss = max_loss, out->nonfinite_losses = nonfinite;
    /* in double: the sums of correct images are exact counts, whose fraction a float would round */
    out->loss = samples ? (double)host[0] / samples : 0;
    out->top1 = samples ? (double)host[1] / samples : 0;
    out->top5 = samples ? (double)host[2] / samples : 0;
    return BF_OK;
}

bf_status bf_evaluate_batches(bf_model *m, bf_loader *loader, float label_smoothing, int epoch, int max_batches,
                              bf_eval_result *out) {
    return score_batches(m, loader, label_smoothing, epoch, max_batches, 0, NULL, out);
}

bf_status bf_evaluate_batches_by_class(bf_model *m, bf_loader *loader, float label_smoothing, int epoch, int max_batches,
                                       double *class_counts, bf_eval_result *out) {
    return score_batches(m, loader, label_smoothing, epoch, max_batches, 0, class_counts, out);
}

bf_status bf_evaluate_batches_training_mode(bf_model *m, bf_loader *loader, float label_smoothing, int epoch,
                                            int max_batches, int put_back, bf_eval_result *out) {
    if (!put_back) return score_batches(m, loader, label_smoothing, epoch, max_batches, 1, NULL, out);
    bf_backend *b = m->backend;
    const size_t floats = m->num_buffer_floats;
    float *kept = malloc((floats + 1) * sizeof(float));
    if (!kept) return bf_error(BF_ERR_OOM, "evaluation in training mode: out of host memory");
    bf_status s = floats ? bf_to_host(b, kept, m->buffer_data, floats * sizeof(float)) : BF_OK;
    const int64_t tracked = m->num_batches_tracked;
    const double flex_samples = m->flex_samples, spike_samples = m->spike_samples;
    if (s == BF_OK) s = score_batches(m, loader, label_smoothing, epoch, max_batches, 1, NULL, out);
    m->num_batches_tracked = tracked;
    m->flex_samples = flex_samples, m->spike_samples = spike_samples;
    bf_status restored = floats ? bf_to_device(b, m->buffer_data, kept, floats * sizeof(float)) : BF_OK;
    free(kept);
    return s != BF_OK ? s : restored;
}
