/* divnorm_cpu.c - the tuned divisive normalisation on the CPU (contract in ops.h, divnorm_weights;
 * ../shared/specs/v1-constrained.md 4.1). The 1x1 convolution S = W x between the weight generation
 * and the division is the backend's conv2d; here are the generation of W from the widths and the
 * division y = x / (1 + S), each with its backward. divnorm.cu is the CUDA twin. */
#include "cpu_backend.h"
#include "divnorm_common.h"
#include "require.h"

static bf_status check_channels(const char *op, int c) {
    return c > 0 ? BF_OK : bf_error(BF_ERR_ARG, "%s: %d channels (must be > 0)", op, c);
}

bf_status bf_cpu_divnorm_weights(bf_backend *b, int c, bf_oci_distance distance, const float *sigma, float *w) {
    REQUIRE("divnorm_weights", sigma, w);
    BF_TRY(check_channels("divnorm_weights", c));
    const int similar = distance == BF_OCI_SIMILAR;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int j = 0; j < c; j++) bf_divnorm_column(c, similar, j, sigma[j], w);
    return BF_OK;
}

bf_status bf_cpu_divnorm_weights_backward(bf_backend *b, int c, bf_oci_distance distance, const float *sigma,
                                          const float *w, const float *dw, float *dsigma) {
    REQUIRE("divnorm_weights_backward", sigma, w, dw, dsigma);
    BF_TRY(check_channels("divnorm_weights_backward", c));
    const int similar = distance == BF_OCI_SIMILAR;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int j = 0; j < c; j++) dsigma[j] = bf_divnorm_column_backward(c, similar, j, sigma[j], w, dw);
    return BF_OK;
}

bf_status bf_cpu_divnorm_apply(bf_backend *b, const float *x, const float *s, float *y, size_t n) {
    REQUIRE("divnorm_apply", x, s, y);
#pragma omp parallel for num_threads(n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + s[i]);
    return BF_OK;
}

/* As PyTorch's division backward: dx = dy / d and ds = -dy * x / (d * d), d = 1 + s. */
bf_status bf_cpu_divnorm_apply_backward(bf_backend *b, const float *x, const float *s, const float *dy, float *dx,
                                        float *ds, size_t n) {
    REQUIRE("divnorm_apply_backward", x, s, dy, ds);
#pragma omp parallel for num_threads(n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float d = 1.0f + s[i], g = dy[i];
        if (dx) dx[i] = g / d;
        ds[i] = -(g * x[i]) / (d * d);
    }
    return BF_OK;
}
