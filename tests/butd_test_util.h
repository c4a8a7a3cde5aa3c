/* butd_test_util.h - the helpers the BU-TD case headers share (butd_cases.h, butd_chbn_cases.h):
 * a tensor's relative error and the cross-entropy's gradient at the logits, on a backend. */
#ifndef BIOFLEX_TESTS_BUTD_TEST_UTIL_H
#define BIOFLEX_TESTS_BUTD_TEST_UTIL_H
#include <math.h>
#include <stdlib.h>

#include "bioflex/ops.h"
#include "testutil.h"

/* max |a - b| over max |b|: the relative error of a whole tensor. */
static double rel_error(const float *a, const float *b, size_t n) {
    double diff = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > diff) diff = d;
        if (fabs(b[i]) > mag) mag = fabs(b[i]);
    }
    return mag > 0 ? diff / mag : diff;
}

/* Per-sample CE gradient at the logits (softmax - onehot) and the mean loss, on the backend. */
static double ce_grad(bf_backend *b, int n, int k, const float *logits, const int32_t *labels_host, float grad_scale,
                      float *dlogits) {
    int32_t *labels = NULL;
    float *losses = NULL;
    CHECK_OK(bf_alloc(b, (size_t)n * sizeof(int32_t), (void **)&labels));
    CHECK_OK(bf_alloc(b, (size_t)n * sizeof(float), (void **)&losses));
    CHECK_OK(bf_to_device(b, labels, labels_host, (size_t)n * sizeof(int32_t)));
    CHECK_OK(b->ops->softmax_xent(b, n, k, logits, labels, 0.0f, grad_scale, losses, dlogits));
    float *h = bf_test_download(b, losses, (size_t)n);
    double mean = 0;
    for (int i = 0; i < n; i++) mean += h[i] / n;
    free(h);
    bf_free(b, labels);
    bf_free(b, losses);
    return mean;
}

#endif
