/* pool_cpu.c - max, average and global average pooling on the CPU (contracts in ops.h).
 *
 * Every (n, c) plane is independent, so threads take whole planes; the backward passes then
 * scatter into their own dx plane without races and in a fixed order. */
#include <string.h>

#include "cpu_backend.h"

static bf_status check_shape(const bf_pool_shape *s) {
    if (s->n <= 0 || s->c <= 0 || s->k <= 0 || s->stride <= 0 || s->pad < 0 || 2 * s->pad > s->k ||
        s->h_out <= 0 || s->w_out <= 0 ||
        s->h_out != (s->h_in + 2 * s->pad - s->k) / s->stride + 1 ||
        s->w_out != (s->w_in + 2 * s->pad - s->k) / s->stride + 1)
        return bf_error(BF_ERR_ARG, "pool: invalid shape n=%d c=%d %dx%d k=%d stride=%d pad=%d out=%dx%d "
                        "(initialise it with bf_pool_shape_init)", s->n, s->c, s->h_in, s->w_in, s->k,
                        s->stride, s->pad, s->h_out, s->w_out);
    return BF_OK;
}

/* The window of output (oh, ow) clipped to the input: rows [*h0, *h1), columns [*w0, *w1).
 * Padding is at most half the kernel, so the clipped window is never empty. */
static void window(const bf_pool_shape *s, int oh, int ow, int *h0, int *h1, int *w0, int *w1) {
    int hs = oh * s->stride - s->pad, ws = ow * s->stride - s->pad;
    *h0 = hs < 0 ? 0 : hs;
    *w0 = ws < 0 ? 0 : ws;
    *h1 = hs + s->k < s->h_in ? hs + s->k : s->h_in;
    *w1 = ws + s->k < s->w_in ? ws + s->k : s->w_in;
}

bf_status bf_cpu_maxpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y,
                                 int32_t *argmax) {
    BF_TRY(check_shape(s));
    const long planes = (long)s->n * s->c;
    const size_t in_plane = (size_t)s->h_in * s->w_in, out_plane = (size_t)s->h_out * s->w_out;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (long p = 0; p < planes; p++) {
        const float *xp = x + p * in_plane;
        for (int oh = 0; oh < s->h_out; oh++)
            for (int ow = 0; ow < s->w_out; ow++) {
                int h0, h1, w0, w1;
                window(s, oh, ow, &h0, &h1, &w0, &w1);
                /* Padding is -infinity, so only the clipped window competes. A strictly greater
                 * value replaces the best, so ties keep the first in row-major order; a NaN wins
                 * (once) so that it propagates as in PyTorch. */
                int best_index = -1;
                float best = 0.0f;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) {
                        float v = xp[ih * s->w_in + iw];
                        if (best_index < 0 || v > best || (v != v && best == best)) {
                            best = v;
                            best_index = ih * s->w_in + iw;
                        }
                    }
                size_t o = p * out_plane + (size_t)oh * s->w_out + ow;
                y[o] = best;
                if (argmax) argmax[o] = best_index;
            }
    }
    return BF_OK;
}

bf_status bf_cpu_maxpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy,
                                  const int32_t *argmax, float *dx) {
    BF_TRY(check_shape(s));
    const long planes = (long)s->n * s->c;
    const size_t in_plane = (size_t)s->h_in * s->w_in, out_plane = (size_t)s->h_out * s->w_out;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (long p = 0; p < planes; p++) {
        float *dxp = dx + p * in_plane;
        memset(dxp, 0, sizeof(float) * in_plane);
        /* Overlapping windows (stride < k) can route several outputs to one input: they add. */
        for (size_t o = p * out_plane; o < (size_t)(p + 1) * out_plane; o++) dxp[argmax[o]] += dy[o];
    }
    return BF_OK;
}

bf_status bf_cpu_avgpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y) {
    BF_TRY(check_shape(s));
    const long planes = (long)s->n * s->c;
    const size_t in_plane = (size_t)s->h_in * s->w_in, out_plane = (size_t)s->h_out * s->w_out;
    const float inv_area = 1.0f / (float)(s->k * s->k); /* count_include_pad: padding counts */
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (long p = 0; p < planes; p++) {
        const float *xp = x + p * in_plane;
        for (int oh = 0; oh < s->h_out; oh++)
            for (int ow = 0; ow < s->w_out; ow++) {
                int h0, h1, w0, w1;
                window(s, oh, ow, &h0, &h1, &w0, &w1);
                float sum = 0.0f;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) sum += xp[ih * s->w_in + iw];
                y[p * out_plane + (size_t)oh * s->w_out + ow] = sum * inv_area;
            }
    }
    return BF_OK;
}

bf_status bf_cpu_avgpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy, float *dx) {
    BF_TRY(check_shape(s));
    const long planes = (long)s->n * s->c;
    const size_t in_plane = (size_t)s->h_in * s->w_in, out_plane = (size_t)s->h_out * s->w_out;
    const float inv_area = 1.0f / (float)(s->k * s->k);
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (long p = 0; p < planes; p++) {
        float *dxp = dx + p * in_plane;
        memset(dxp, 0, sizeof(float) * in_plane);
        for (int oh = 0; oh < s->h_out; oh++)
            for (int ow = 0; ow < s->w_out; ow++) {
                int h0, h1, w0, w1;
                window(s, oh, ow, &h0, &h1, &w0, &w1);
                float share = dy[p * out_plane + (size_t)oh * s->w_out + ow] * inv_area;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) dxp[ih * s->w_in + iw] += share;
            }
    }
    return BF_OK;
}

bf_status bf_cpu_global_avgpool_forward(bf_backend *b, int n, int c, int hw, const float *x, float *y) {
    if (n <= 0 || c <= 0 || hw <= 0) return bf_error(BF_ERR_ARG, "global avgpool: invalid shape n=%d c=%d hw=%d", n, c, hw);
    const long planes = (long)n * c;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (long p = 0; p < planes; p++) {
        const float *xp = x + p * hw;
        double sum = 0;
        for (int i = 0; i < hw; i++) sum += xp[i];
        y[p] = (float)(sum / hw);
    }
    return BF_OK;
}

bf_status bf_cpu_global_avgpool_backward(bf_backend *b, int n, int c, int hw, const float *dy, float *dx) {
    if (n <= 0 || c <= 0 || hw <= 0) return bf_error(BF_ERR_ARG, "global avgpool: invalid shape n=%d c=%d hw=%d", n, c, hw);
    const long planes = (long)n * c;
    const float inv_hw = 1.0f / (float)hw;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (long p = 0; p < planes; p++) {
        float share = dy[p] * inv_hw;
        for (int i = 0; i < hw; i++) dx[p * hw + i] = share;
    }
    return BF_OK;
}
