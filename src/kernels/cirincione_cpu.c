/* cirincione_cpu.c - the Cirincione divisive normalisation on the CPU (contract in ops.h,
 * cirincione_kernels; ../shared/specs/v1-constrained.md 4.2). The 3x3 convolution N = G * x between
 * the kernel generation and the division is the backend's conv2d; here are the generation of G from
 * its six parameters per channel pair and the division y = x / (N + |bias|), each with its backward.
 * cirincione.cu is the CUDA twin. */
#include <math.h>

#include "cirincione_common.h"
#include "cpu_backend.h"
#include "require.h"

static bf_status check_kernels(const char *op, int p, int k) {
    return p > 0 && k > 0 && k % 2 == 1 && k <= 31
               ? BF_OK
               : bf_error(BF_ERR_ARG, "%s: %d kernels of %dx%d (p > 0, odd k <= 31)", op, p, k, k);
}

bf_status bf_cpu_cirincione_kernels(bf_backend *b, int p, int k, const float *A, const float *rho, const float *sigma,
                                    const float *theta, const float *v, const float *w, float *g) {
    REQUIRE("cirincione_kernels", A, rho, sigma, theta, v, w, g);
    BF_TRY(check_kernels("cirincione_kernels", p, k));
#pragma omp parallel for num_threads(p >= 1024 ? bf_cpu_threads(b) : 1) schedule(static)
    for (int j = 0; j < p; j++) bf_cir_kernel(k, j, A, rho, sigma, theta, v, w, g);
    return BF_OK;
}

bf_status bf_cpu_cirincione_kernels_backward(bf_backend *b, int p, int k, const float *A, const float *rho,
                                             const float *sigma, const float *theta, const float *v, const float *w,
                                             const float *dg, float *dA, float *drho, float *dsigma, float *dtheta,
                                             float *dv, float *dw) {
    REQUIRE("cirincione_kernels_backward", A, rho, sigma, theta, v, w, dg, dA, drho, dsigma, dtheta, dv, dw);
    BF_TRY(check_kernels("cirincione_kernels_backward", p, k));
#pragma omp parallel for num_threads(p >= 1024 ? bf_cpu_threads(b) : 1) schedule(static)
    for (int j = 0; j < p; j++)
        bf_cir_kernel_backward(k, j, A, rho, sigma, theta, v, w, dg, dA, drho, dsigma, dtheta, dv, dw);
    return BF_OK;
}

bf_status bf_cpu_cirincione_divide(bf_backend *b, const float *x, const float *s, const float *bias, float *y,
                                   size_t n) {
    REQUIRE("cirincione_divide", x, s, bias, y);
    const float offset = fabsf(bias[0]);
#pragma omp parallel for num_threads(n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (s[i] + offset);
    return BF_OK;
}

/* As PyTorch's division backward: dx = dy / d and ds = -dy * x / (d * d), d = s + |bias|; the bias's
 * gradient sums ds (bf_cpu_sum: blocks fixed by n, added in block order, whatever the threads). */
bf_status bf_cpu_cirincione_divide_backward(bf_backend *b, const float *x, const float *s, const float *bias,
                                            const float *dy, float *dx, float *ds, float *dbias, size_t n) {
    REQUIRE("cirincione_divide_backward", x, s, bias, dy, ds);
    const float offset = fabsf(bias[0]);
    const double sign = bf_cir_sgn((double)bias[0]);
#pragma omp parallel for num_threads(n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float d = s[i] + offset, g = dy[i];
        if (dx) dx[i] = g / d;
        ds[i] = -(g * x[i]) / (d * d);
    }
    if (dbias) dbias[0] = (float)(sign * bf_cpu_sum(b, ds, n, 0));
    return BF_OK;
}
