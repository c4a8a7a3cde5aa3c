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

/* Max pooling of one (n, c) plane, one output row at a time. Every output of the row starts from
 * the first input of its (clipped) window; then each kernel tap (ki, kj), in row-major window
 * order, is compared across the whole row at once. Each output still sees its window in
 * row-major order, and a strictly greater value replaces the best, so ties keep the first maximum;
 * padding (-infinity) never enters. A NaN wins once, so that it propagates as in PyTorch.
 * Going across the row lets the compare-and-select vectorise: a per-output loop over a 2x2 window
 * mispredicts its branch on real data and ran three times slower. */
static void maxpool_plane(const bf_pool_shape *s, const float *xp, float *yp, int32_t *ap) {
    for (int oh = 0; oh < s->h_out; oh++) {
        int hs = oh * s->stride - s->pad;
        int h0 = hs < 0 ? 0 : hs, h1 = hs + s->k < s->h_in ? hs + s->k : s->h_in;
        float *y_row = yp + (size_t)oh * s->w_out;
        int32_t *arg_row = ap + (size_t)oh * s->w_out;
        for (int ow = 0; ow < s->w_out; ow++) {
            int ws = ow * s->stride - s->pad;
            arg_row[ow] = h0 * s->w_in + (ws < 0 ? 0 : ws);
            y_row[ow] = xp[arg_row[ow]];
        }
        const int stride = s->stride; /* a local, so the compiler need not reload it per element */
        for (int ih = h0; ih < h1; ih++)
            for (int kj = 0; kj < s->k; kj++) {
                int lo, hi, offset = kj - s->pad; /* input column = ow*stride + offset */
                const float *x_row = xp + (size_t)ih * s->w_in;
                const int row_start = ih * s->w_in + offset;
                if (stride == 1) { /* the flex layers' 3x3 pools: contiguous loads, no gather, and
                                    * bf_cpu_valid_outputs without its divisions (a 28-wide row is
                                    * only a few vectors: two divisions per tap cost as much) */
                    lo = offset < 0 ? -offset : 0;
                    hi = s->w_in - offset < s->w_out ? s->w_in - offset : s->w_out;
                    const float *x_tap = x_row + offset;
#pragma omp simd
                    for (int ow = lo; ow < hi; ow++) {
                        float v = x_tap[ow], best = y_row[ow];
                        int better = (v > best) | ((v != v) & (best == best));
                        y_row[ow] = better ? v : best;
                        arg_row[ow] = better ? row_start + ow : arg_row[ow];
                    }
                    continue;
                }
                bf_cpu_valid_outputs(s->w_in, s->w_out, stride, s->pad, kj, &lo, &hi);
#pragma omp simd
                for (int ow = lo; ow < hi; ow++) {
                    float v = x_row[ow * stride + offset], best = y_row[ow];
                    int better = (v > best) | ((v != v) & (best == best));
                    y_row[ow] = better ? v : best;
                    arg_row[ow] = better ? row_start + ow * stride : arg_row[ow];
                }
            }
    }
}

/* Whether the plane holds a NaN, from the bits (an exponent of all ones and a non-zero fraction): one
 * integer compare per value, which vectorises where a float compare of v with itself, combined
 * with another compare, does not (GCC 12). */
static int plane_has_nan(const float *x, size_t n) {
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        any |= (bits & 0x7fffffffu) > 0x7f800000u;
    }
    return any;
}

/* The 2x2 stride-2 window without padding (every VGG and CNN pool) over a plane without NaNs.
 * maxpool_plane's per-tap set-up (a division in bf_cpu_valid_outputs, gathered stride-2 loads)
 * costs more than its maxima on rows of 7-16 outputs: with it the pool took 12-16 % of the quick
 * start's step. Here every window lies inside the input, and without NaNs maxpool_plane's rule
 * (strictly greater replaces, in row-major tap order) is one compare per tap, so the loop
 * vectorises; the outputs and winners are the same. A plane with a NaN takes maxpool_plane. */
static void maxpool_plane_2x2(const bf_pool_shape *s, const float *restrict xp, float *restrict yp,
                              int32_t *restrict ap) {
    const int w_in = s->w_in, w_out = s->w_out;
    for (int oh = 0; oh < s->h_out; oh++) {
        const int top = 2 * oh * w_in; /* index of the window row's first input */
        const float *r0 = xp + top, *r1 = r0 + w_in;
        float *restrict y_row = yp + (size_t)oh * w_out;
        int32_t *restrict arg_row = ap + (size_t)oh * w_out;
        /* The winner's index through an all-ones mask rather than a select: GCC 12 then vectorises
         * the loop, and rows of 7 outputs run in vectors too (a third of the time of selects). */
#pragma omp simd
        for (int ow = 0; ow < w_out; ow++) {
            const float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            const int32_t at = top + 2 * ow;
            float best = a;
            int32_t arg = at, take;
            take = -(b > best), arg = (arg & ~take) | ((at + 1) & take), best = b > best ? b : best;
            take = -(c > best), arg = (arg & ~take) | ((at + w_in) & take), best = c > best ? c : best;
            take = -(d > best), arg = (arg & ~take) | ((at + w_in + 1) & take), best = d > best ? d : best;
            y_row[ow] = best;
            arg_row[ow] = arg;
        }
    }
}

/* The widest plane maxpool_plane_3x3 takes: its three rows of window maxima live on the stack. */
#define SEPARABLE_MAX_WIDTH 512

/* The maxima of one row's 3-wide windows (columns c-1..c+1, clipped) and their columns, the first
 * maximum on ties: no NaN in x. */
static void row_maxima3(const float *restrict x, int w, float *restrict best, int32_t *restrict col) {
    best[0] = x[0], col[0] = 0;
    if (w == 1) return;
    if (x[1] > best[0]) best[0] = x[1], col[0] = 1;
#pragma omp simd
    for (int c = 1; c < w - 1; c++) { /* the winner's column through a mask, as in maxpool_plane_2x2 */
        const float a = x[c - 1], b = x[c], d = x[c + 1];
        float m = a;
        int32_t at = c - 1, take;
        take = -(b > m), at = (at & ~take) | (c & take), m = b > m ? b : m;
        take = -(d > m), at = (at & ~take) | ((c + 1) & take), m = d > m ? d : m;
        best[c] = m, col[c] = at;
    }
    best[w - 1] = x[w - 2], col[w - 1] = w - 2;
    if (x[w - 1] > best[w - 1]) best[w - 1] = x[w - 1], col[w - 1] = w - 1;
}

/* The 3x3 stride-1 window with padding 1 (the pool branch of every 3x3 flex layer) over a plane
 * without NaNs, in two passes: each row's 3-wide maxima, then the maximum of three rows of them.
 * The first maximum in row-major window order is the first row's that holds the window's maximum,
 * at that row's first column that does; the row pass keeps the first column and the column pass
 * replaces only on strictly greater, so the outputs and winners are maxpool_plane's. Four
 * compares per output instead of nine taps, each of which loaded and stored the output row. */
static void maxpool_plane_3x3(const bf_pool_shape *s, const float *xp, float *yp, int32_t *ap) {
    const int h = s->h_in, w = s->w_in;
    float best[3][SEPARABLE_MAX_WIDTH];
    int32_t col[3][SEPARABLE_MAX_WIDTH];
    row_maxima3(xp, w, best[0], col[0]);
    for (int oh = 0; oh < h; oh++) {
        if (oh + 1 < h) row_maxima3(xp + (size_t)(oh + 1) * w, w, best[(oh + 1) % 3], col[(oh + 1) % 3]);
        const int top = oh > 0 ? oh - 1 : 0, bottom = oh + 1 < h ? oh + 1 : h - 1;
        float *restrict y_row = yp + (size_t)oh * w;
        int32_t *restrict arg_row = ap + (size_t)oh * w;
        const float *first = best[top % 3];
        const int32_t *first_col = col[top % 3];
        for (int c = 0; c < w; c++) y_row[c] = first[c], arg_row[c] = top * w + first_col[c];
        for (int r = top + 1; r <= bottom; r++) {
            const float *restrict next = best[r % 3];
            const int32_t *restrict next_col = col[r % 3];
#pragma omp simd
            for (int c = 0; c < w; c++) {
                const int32_t take = -(next[c] > y_row[c]);
                arg_row[c] = (arg_row[c] & ~take) | ((r * w + next_col[c]) & take);
                y_row[c] = next[c] > y_row[c] ? next[c] : y_row[c];
            }
        }
    }
}

bf_status bf_cpu_maxpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y,
                                 int32_t *argmax) {
    BF_TRY(check_shape(s));
    const long planes = (long)s->n * s->c;
    const size_t in_plane = (size_t)s->h_in * s->w_in, out_plane = (size_t)s->h_out * s->w_out;
    if (!argmax) { /* the winners are tracked anyway; without a caller's buffer they go to scratch */
        void *scratch = NULL;
        BF_TRY(bf_cpu_scratch(b, sizeof(int32_t) * out_plane * planes, &scratch));
        argmax = scratch;
    }
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (long p = 0; p < planes; p++) {
        const int pool_2x2 = s->k == 2 && s->stride == 2 && s->pad == 0;
        const int pool_3x3 = s->k == 3 && s->stride == 1 && s->pad == 1 && s->w_in <= SEPARABLE_MAX_WIDTH;
        if ((pool_2x2 || pool_3x3) && !plane_has_nan(x + p * in_plane, in_plane)) {
            if (pool_2x2) maxpool_plane_2x2(s, x + p * in_plane, y + p * out_plane, argmax + p * out_plane);
            else maxpool_plane_3x3(s, x + p * in_plane, y + p * out_plane, argmax + p * out_plane);
        } else
            maxpool_plane(s, x + p * in_plane, y + p * out_plane, argmax + p * out_plane);
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
        y[p] = (float)(bf_cpu_lane_sum(x + p * hw, (size_t)hw) / hw);
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
