/* bn_recalibrate.c - a model's batch-norm running statistics recomputed from training batches before
 * it is evaluated ([analysis] bn_recalibrate_batches; include/bioflex/train.h). A flex network's
 * max-routed, near-constant channels can collapse a running variance, and the evaluation then
 * divides by almost nothing (FlexNet spec 2.2, MaxPrefResNet's "BN recalibration before eval", and
 * 9 Q6). As PyTorch's recipe (reset_running_stats(), momentum = None, forward passes in train mode):
 * the k-th batch updates every batch-norm with momentum 1/k, so the running mean and variance end as
 * the plain average of the batches' statistics (the first batch replaces whatever was there). The
 * weights are not touched; dropout drops as in any training-mode forward. */
#include <stdlib.h>

#include "batch_upload.h"
#include "bioflex/train.h"

/* The batch-norms whose running statistics a training-mode forward updates: the layers, and the
 * flex layers' batch-norm on their logits. */
static int keeps_running_stats(const bf_layer *l) {
    return l->kind == BF_LAYER_BATCHNORM || (l->kind == BF_LAYER_FLEX && l->flex_opt.logits_bn);
}

bf_status bf_model_recalibrate_bn(bf_model *m, bf_loader *loader, int batches, int *used) {
    *used = 0;
    if (batches < 1) return bf_error(BF_ERR_ARG, "bn recalibration: %d batches (at least 1)", batches);
    bf_backend *b = m->backend;
    const int max_n = m->input_shape.n;
    float *x = NULL, *momentum = malloc(((size_t)m->num_layers + 1) * sizeof *momentum);
    bf_batch_uploader *upload = NULL;
    bf_status s = momentum ? BF_OK : bf_error(BF_ERR_OOM, "bn recalibration: out of host memory");
    if (s == BF_OK) s = bf_alloc(b, (size_t)max_n * bf_shape_per_sample(m->input_shape) * sizeof(float), (void **)&x);
    if (s == BF_OK) s = bf_batch_uploader_create(b, &upload);
    for (int i = 0; s == BF_OK && i < m->num_layers; i++) momentum[i] = m->layers[i].bn.momentum;
    const int was_training = m->training;
    const uint64_t step = m->step, offset = m->sample_offset;
    if (s == BF_OK) s = bf_loader_start_epoch(loader, 0, 0);
    while (s == BF_OK && *used < batches) {
        bf_batch *batch = NULL;
        s = bf_loader_next(loader, &batch, NULL);
        if (s != BF_OK || !batch) break;
        const int n = batch->n;
        const uint64_t position = (uint64_t)batch->position; /* before the release */
        if (n > max_n) {
            bf_loader_release(loader, batch);
            s = bf_error(BF_ERR_ARG, "bn recalibration: batch of %d exceeds the model's %d", n, max_n);
            break;
        }
        s = bf_batch_upload_once(upload, loader, batch, x, NULL, n);
        const float k = (float)(*used + 1);
        for (int i = 0; i < m->num_layers; i++)
            if (keeps_running_stats(&m->layers[i])) m->layers[i].bn.momentum = 1.0f / k;
        m->training = 1, m->step = BF_EVAL_STEP, m->sample_offset = position; /* draws no training step's */
        const float *logits = NULL;
        if (s == BF_OK) s = bf_model_set_batch(m, n);
        if (s == BF_OK) s = bf_model_forward(m, x, &logits);
        if (s == BF_OK) ++*used;
    }
    for (int i = 0; momentum && i < m->num_layers; i++) m->layers[i].bn.momentum = momentum[i];
    m->training = was_training, m->step = step, m->sample_offset = offset;
    bf_model_set_batch(m, max_n);
    bf_batch_uploader_destroy(upload);
    bf_free(b, x);
    free(momentum);
    return s == BF_OK ? BF_OK : bf_error_context(s, "bn recalibration");
}
