/* loss_cpu.c - softmax cross-entropy with label smoothing, and top-1/top-5 hits (ops.h).
 *
 * Each sample (one row of logits) is independent, so threads take whole rows. The per-row sums
 * are done in double: the loss is what a user reads, and it should not depend on float rounding
 * of a 1000-way sum. */
#include <math.h>

#include "cpu_backend.h"

static bf_status check_labels(int n, int k, const int32_t *labels, const char *op) {
    if (n <= 0 || k <= 0) return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d k=%d", op, n, k);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return bf_error(BF_ERR_ARG, "%s: label %d of sample %d is outside [0, %d)", op, (int)labels[i], i, k);
    return BF_OK;
}

static int row_threads(const bf_backend *b, int n, int k) {
    return (long)n * k < BF_CPU_PARALLEL_MIN / 4 ? 1 : bf_cpu_threads(b);
}

/* With target t = (1-eps)*onehot(label) + eps/k (which sums to 1) and lse = log sum_j exp(z_j):
 *     loss = -sum_j t_j (z_j - lse) = lse - (1-eps) z_label - (eps/k) sum_j z_j
 *     dloss/dz_j = softmax_j - t_j. */
bf_status bf_cpu_softmax_xent(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                              float smoothing, float grad_scale, float *losses, float *dlogits) {
    BF_TRY(check_labels(n, k, labels, "softmax_xent"));
    if (!(smoothing >= 0.0f && smoothing <= 1.0f))
        return bf_error(BF_ERR_ARG, "softmax_xent: label smoothing must be in [0, 1] (got %g)", smoothing);
    const double eps = smoothing, off_target = eps / k;

#pragma omp parallel for num_threads(row_threads(b, n, k)) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        const int label = labels[i];
        float max = z[0]; /* subtracted before exp so that nothing overflows */
        for (int j = 1; j < k; j++) max = z[j] > max ? z[j] : max;
        double sum_exp = 0, sum_z = 0;
        for (int j = 0; j < k; j++) {
            sum_exp += exp((double)z[j] - max);
            sum_z += z[j];
        }
        const double lse = max + log(sum_exp);
        if (losses) losses[i] = (float)(lse - (1.0 - eps) * z[label] - off_target * sum_z);
        if (dlogits) {
            float *d = dlogits + (size_t)i * k;
            for (int j = 0; j < k; j++) {
                double target = off_target + (j == label ? 1.0 - eps : 0.0);
                d[j] = (float)((exp((double)z[j] - max) / sum_exp - target) * grad_scale);
            }
        }
    }
    return BF_OK;
}

/* A label's rank is the number of logits ahead of it in a stable descending order: those strictly
 * greater, and those equal at a lower index (ties go to the first class, as torch.argmax does). It
 * is in the top m when its rank is below m. Ties matter for readouts with few distinct values (a
 * spike-count readout over T steps): counting every tie in the label's favour scored a silent
 * network 100 %. A NaN logit of the label is never correct. */
bf_status bf_cpu_topk_correct(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                              float *correct1, float *correct5) {
    BF_TRY(check_labels(n, k, labels, "topk_correct"));
    const int top5 = k < 5 ? k : 5;
#pragma omp parallel for num_threads(row_threads(b, n, k)) schedule(static)
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        const int label = labels[i];
        const float own = z[label];
        int rank = own == own ? 0 : k;
        for (int j = 0; j < k; j++) rank += z[j] > own || (z[j] == own && j < label);
        if (correct1) correct1[i] = rank < 1 ? 1.0f : 0.0f;
        if (correct5) correct5[i] = rank < top5 ? 1.0f : 0.0f;
    }
    return BF_OK;
}

/* Binary heads: with t in {0, 1}, loss = log(1 + exp(-y)) for t = 1 and log(1 + exp(y)) for t = 0,
 * written max(y,0) - y t + log1p(exp(-|y|)) so that neither exp overflows. */
bf_status bf_cpu_binary_xent(bf_backend *b, int n, const float *logits, const int32_t *labels, float *losses,
                             float *dlogits, float *correct) {
    BF_TRY(check_labels(n, 2, labels, "binary_xent"));
#pragma omp parallel for num_threads(row_threads(b, n, 1)) schedule(static)
    for (int i = 0; i < n; i++) {
        const double y = logits[i], t = labels[i];
        if (losses) losses[i] = (float)((y > 0 ? y : 0) - y * t + log1p(exp(-fabs(y))));
        if (dlogits) dlogits[i] = (float)(1.0 / (1.0 + exp(-y)) - t);
        if (correct) correct[i] = (y > 0) == (labels[i] == 1) ? 1.0f : 0.0f;
    }
    return BF_OK;
}
