/* elementwise_cpu.c - CPU fill, scale, add, mul, reductions, ReLU, dropout and the per-task head
 * slices (contracts in ops.h).
 *
 * Elementwise loops are split statically over threads; since every element is computed on its
 * own, the split never changes a result. Reductions go through bf_cpu_sum, whose summation order
 * depends only on n (not on the thread count). */
#include <string.h>

#include "bioflex/hash.h"
#include "cpu_backend.h"

/* Thread count for a loop of n elements: one thread for short loops. */
static int loop_threads(const bf_backend *b, size_t n) {
    return n >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
}

bf_status bf_cpu_fill(bf_backend *b, float *x, float value, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = value;
    return BF_OK;
}

bf_status bf_cpu_scale(bf_backend *b, float *x, float alpha, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= alpha;
    return BF_OK;
}

bf_status bf_cpu_add(bf_backend *b, const float *x0, const float *x1, float *y, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x0[i] + x1[i];
    return BF_OK;
}

bf_status bf_cpu_mul(bf_backend *b, const float *x0, const float *x1, float *y, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x0[i] * x1[i];
    return BF_OK;
}

bf_status bf_cpu_add_inplace(bf_backend *b, float *y, const float *x, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += x[i];
    return BF_OK;
}

bf_status bf_cpu_axpy(bf_backend *b, float alpha, const float *x, float *y, size_t n) {
    if (n > 0 && (!x || !y)) return bf_error(BF_ERR_ARG, "axpy: NULL pointer (n=%zu)", n);
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float product = alpha * x[i]; /* rounded on its own: no contraction into an FMA */
        y[i] += product;
    }
    return BF_OK;
}

/* n is cut into one block per BF_CPU_PARALLEL_MIN elements (at most BF_CPU_MAX_THREADS blocks),
 * whatever the thread count; each block is summed in double, and the partial sums are then added in
 * block order. OpenMP's reduction clause is avoided because its combining order is unspecified. */
double bf_cpu_sum(const bf_backend *b, const float *x, size_t n, int squares) {
    size_t wanted = (n + BF_CPU_PARALLEL_MIN - 1) / BF_CPU_PARALLEL_MIN;
    int blocks = wanted < 1 ? 1 : wanted > BF_CPU_MAX_THREADS ? BF_CPU_MAX_THREADS : (int)wanted;
    int threads = bf_cpu_threads(b) < blocks ? bf_cpu_threads(b) : blocks;
    double partial[BF_CPU_MAX_THREADS];
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < blocks; t++) {
        size_t begin = n * (size_t)t / (size_t)blocks, end = n * (size_t)(t + 1) / (size_t)blocks;
        partial[t] = squares ? bf_cpu_lane_dot(x + begin, 0, x + begin, 0, end - begin)
                             : bf_cpu_lane_sum(x + begin, end - begin);
    }
    double total = 0;
    for (int t = 0; t < blocks; t++) total += partial[t];
    return total;
}

bf_status bf_cpu_sum_squares(bf_backend *b, const float *x, size_t n, float *out) {
    *out = (float)bf_cpu_sum(b, x, n, 1);
    return BF_OK;
}

bf_status bf_cpu_accumulate_sum(bf_backend *b, const float *x, size_t n, float *acc) {
    *acc = (float)((double)*acc + bf_cpu_sum(b, x, n, 0));
    return BF_OK;
}

/* x < 0 ? 0 : x rather than x > 0 ? x : 0, so that a NaN passes through (as in PyTorch) and a
 * diverging run shows up in the loss. */
bf_status bf_cpu_relu_forward(bf_backend *b, const float *x, float *y, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
    return BF_OK;
}

bf_status bf_cpu_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = dy[i]; /* loaded unconditionally, so the select vectorises */
        dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
    return BF_OK;
}

/* The residual sum then the ReLU (ops.h), rounded as add then relu_forward: the sum is a float
 * before it is compared. */
bf_status bf_cpu_add_relu_forward(bf_backend *b, const float *x0, const float *x1, float *y, size_t n) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float sum = x0[i] + x1[i];
        y[i] = sum < 0.0f ? 0.0f : sum;
    }
    return BF_OK;
}

/* Both summands' gradient from one read of y and dy; a NULL target is skipped (its loop is
 * written out, so that the common case, both wanted, vectorises without a test per element). */
bf_status bf_cpu_add_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx0, float *dx1, size_t n) {
    if (!dx0 || !dx1) return dx0 || dx1 ? bf_cpu_relu_backward(b, y, dy, dx0 ? dx0 : dx1, n) : BF_OK;
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float d = dy[i]; /* loaded unconditionally, so the select vectorises */
        const float g = y[i] > 0.0f ? d : 0.0f;
        dx0[i] = g;
        dx1[i] = g;
    }
    return BF_OK;
}

bf_status bf_cpu_leaky_relu_forward(bf_backend *b, const float *x, float *y, size_t n, float slope) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float v = x[i], scaled = v * slope;
        y[i] = v > 0.0f ? v : scaled;
    }
    return BF_OK;
}

bf_status bf_cpu_leaky_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n, float slope) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float g = dy[i], scaled = g * slope;
        dx[i] = y[i] > 0.0f ? g : scaled;
    }
    return BF_OK;
}

/* Inverted dropout: element i survives when the draw of its group's first element,
 * bf_draw_uniform(draws, i - i % group), is >= p, and is scaled by 1/(1-p). Forward and backward are
 * the same masked scaling, so one routine serves both; the mask is recomputed from (draws, i) rather
 * than stored. The mask multiplies (0 or 1, as in PyTorch) instead of selecting: a random branch per
 * element is mispredicted half the time, which made the loop five times slower. p = 0 copies; p = 1
 * drops everything (the scale would be infinite). */
static bf_status dropout_apply(bf_backend *b, const float *in, float *out, size_t n, size_t group, float p,
                               bf_draws draws) {
    if (!(p >= 0.0f && p <= 1.0f)) return bf_error(BF_ERR_ARG, "dropout: p must be in [0, 1] (got %g)", p);
    if (group == 0 || n % group)
        return bf_error(BF_ERR_ARG, "dropout: %zu elements are not whole groups of %zu", n, group);
    if (p == 0.0f) {
        if (out != in) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
            for (size_t i = 0; i < n; i++) out[i] = in[i];
        }
        return BF_OK;
    }
    if (p == 1.0f) return bf_cpu_fill(b, out, 0.0f, n);
    const float keep_scale = 1.0f / (1.0f - p);
    if (group == 1) {
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
        for (size_t i = 0; i < n; i++) {
            float keep = (float)(bf_draw_uniform(draws, i) >= p);
            out[i] = in[i] * (keep * keep_scale);
        }
        return BF_OK;
    }
    const size_t groups = n / group;
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t g = 0; g < groups; g++) { /* one draw per group, then a plain scaling of its run */
        const float scale = bf_draw_uniform(draws, g * group) >= p ? keep_scale : 0.0f;
        const float *src = in + g * group;
        float *dst = out + g * group;
        for (size_t j = 0; j < group; j++) dst[j] = src[j] * scale;
    }
    return BF_OK;
}

bf_status bf_cpu_dropout_forward(bf_backend *b, const float *x, float *y, size_t n, size_t group, float p,
                                 bf_draws draws) {
    return dropout_apply(b, x, y, n, group, p, draws);
}

bf_status bf_cpu_dropout_backward(bf_backend *b, const float *dy, float *dx, size_t n, size_t group, float p,
                                  bf_draws draws) {
    return dropout_apply(b, dy, dx, n, group, p, draws);
}

/* Rate coding: the pixel (clamped to [0, 1]) is the probability of a spike at each of T steps. */
bf_status bf_cpu_spike_encode_rate(bf_backend *b, const float *x, float *y, size_t n, int T, bf_draws draws) {
    if (!x || !y || T < 1) return bf_error(BF_ERR_ARG, "spike_encode_rate: NULL tensor or T = %d < 1", T);
    const size_t total = n * (size_t)T;
    draws.step_elements = n; /* y is [T, n] */
#pragma omp parallel for num_threads(loop_threads(b, total)) schedule(static)
    for (size_t i = 0; i < total; i++) {
        float p = x[i % n];
        p = p < 0.0f ? 0.0f : (p > 1.0f ? 1.0f : p);
        y[i] = bf_draw_uniform(draws, i) < p ? 1.0f : 0.0f;
    }
    return BF_OK;
}

bf_status bf_cpu_fill_uniform(bf_backend *b, float *x, size_t n, float lo, float hi, uint64_t seed) {
    if (!x) return bf_error(BF_ERR_ARG, "fill_uniform: NULL tensor");
#pragma omp parallel for num_threads(loop_threads(b, n)) schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * bf_uniform(seed, i);
    return BF_OK;
}

static bf_status check_task_slices(int n, int k, int num_tasks, const int32_t *tasks, const char *op) {
    if (n <= 0 || k <= 0 || num_tasks <= 0)
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d k=%d num_tasks=%d", op, n, k, num_tasks);
    for (int i = 0; i < n; i++)
        if (tasks[i] < 0 || tasks[i] >= num_tasks)
            return bf_error(BF_ERR_ARG, "%s: task %d of sample %d is outside [0, %d)", op, (int)tasks[i], i, num_tasks);
    return BF_OK;
}

bf_status bf_cpu_task_slice_gather(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks, const float *full,
                                   float *out) {
    (void)b;
    BF_TRY(check_task_slices(n, k, num_tasks, tasks, "task_slice_gather"));
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * k, full + ((size_t)i * num_tasks + tasks[i]) * k, (size_t)k * sizeof(float));
    return BF_OK;
}

bf_status bf_cpu_task_slice_scatter(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks, const float *in,
                                    float *full) {
    (void)b;
    BF_TRY(check_task_slices(n, k, num_tasks, tasks, "task_slice_scatter"));
    memset(full, 0, (size_t)n * num_tasks * k * sizeof(float));
    for (int i = 0; i < n; i++)
        memcpy(full + ((size_t)i * num_tasks + tasks[i]) * k, in + (size_t)i * k, (size_t)k * sizeof(float));
    return BF_OK;
}
