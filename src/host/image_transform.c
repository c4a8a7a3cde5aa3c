/* image_transform.c - crops (RandomResizedCrop, squash, centre crop) and antialiased resizing.
 *
 * The crop rules follow torchvision so that a bioflex run sees the same distribution of crops as
 * the reference: RandomResizedCrop draws a target area in [scale_min, scale_max] of the image and a
 * log-uniform aspect ratio, takes the first of 10 attempts that fits, and otherwise falls back to
 * the largest central crop within the ratio range. Random numbers are bf_uniform(seed, k) for
 * k = 0, 1, 2, ..., so a sample's crop depends only on (seed, epoch, position).
 *
 * Resampling is Pillow's BILINEAR "reduce" filter: separable, a triangle whose support is scaled
 * by the downscale factor, so shrinking averages over every source pixel (no aliasing) and
 * enlarging is plain bilinear interpolation. Two passes: horizontal into float rows, then
 * vertical into bytes. All buffers live in a bf_resampler that grows and is reused. */
#include "bioflex/image.h"

#include "bioflex/hash.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bf_image_plan bf_image_plan_make(const bf_image_plan_options *opt, int w, int h, uint64_t seed) {
    bf_image_plan p = {.crop = {0, 0, w, h}, .flip = 0};
    uint64_t k = 0;
    if (opt->flip) p.flip = bf_uniform(seed, k) < 0.5f;
    k++;
    if (opt->transform == BF_TRANSFORM_SQUASH) return p;
    if (opt->transform == BF_TRANSFORM_CENTER) {
        /* Resize the shorter side to `resize`, centre crop size x size: in source pixels, a square
         * of side size * shorter / resize (clamped to the image). */
        int shorter = w < h ? w : h;
        double side = (double)opt->size * shorter / (double)opt->resize;
        if (side > shorter) side = shorter;
        p.crop.w = p.crop.h = side;
        p.crop.x = (w - side) / 2.0;
        p.crop.y = (h - side) / 2.0;
        return p;
    }
    double area = (double)w * h;
    double log_r0 = log(opt->ratio_min), log_r1 = log(opt->ratio_max);
    for (int attempt = 0; attempt < 10; attempt++, k += 4) {
        double target = area * (opt->scale_min + (opt->scale_max - opt->scale_min) * bf_uniform(seed, k));
        double aspect = exp(log_r0 + (log_r1 - log_r0) * bf_uniform(seed, k + 1));
        int cw = (int)lround(sqrt(target * aspect)), ch = (int)lround(sqrt(target / aspect));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            /* torch.randint(0, H - h + 1): an integer offset in 0..H-h */
            int y = (int)(bf_uniform(seed, k + 2) * (float)(h - ch + 1));
            int x = (int)(bf_uniform(seed, k + 3) * (float)(w - cw + 1));
            p.crop = (bf_rect){x > w - cw ? w - cw : x, y > h - ch ? h - ch : y, cw, ch};
            return p;
        }
    }
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < opt->ratio_min) ch = (int)lround(w / (double)opt->ratio_min);
    else if (in_ratio > opt->ratio_max) cw = (int)lround(h * (double)opt->ratio_max);
    p.crop = (bf_rect){(w - cw) / 2, (h - ch) / 2, cw, ch};
    return p;
}

void bf_resampler_free(bf_resampler *r) {
    free(r->weights);
    free(r->bounds);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static int grow(void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return 1;
    void *p = realloc(*buf, bytes);
    if (!p) return 0;
    *buf = p;
    *cap = bytes;
    return 1;
}

/* Weights of the triangle filter for out_size outputs covering [start, start + length) of an axis
 * of in_size pixels. Every output reads exactly `taps` pixels, bounds[i] .. bounds[i] + taps - 1,
 * with weights[i * taps ..] (zero outside the filter's support): a fixed count keeps the inner
 * loops simple enough for the compiler to vectorise. */
static void filter_weights(double start, double length, int in_size, int out_size, float *weights, int *bounds,
                           int taps) {
    double scale = length / out_size, filter_scale = scale > 1.0 ? scale : 1.0, support = filter_scale;
    for (int i = 0; i < out_size; i++) {
        double center = start + (i + 0.5) * scale;
        int lo = (int)floor(center - support + 0.5), hi = (int)floor(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        if (hi - lo > taps) hi = lo + taps;
        if (hi <= lo) { /* a crop at the very edge: take the nearest pixel */
            lo = center < 0 ? 0 : (int)center >= in_size ? in_size - 1 : (int)center;
            hi = lo + 1;
        }
        int first = lo + taps > in_size ? in_size - taps : lo; /* the window of `taps` pixels read */
        float *wt = weights + (size_t)i * taps;
        for (int k = 0; k < taps; k++) wt[k] = 0.0f;
        double total = 0;
        for (int j = lo; j < hi; j++) {
            double t = fabs((j + 0.5 - center) / filter_scale);
            total += t < 1.0 ? 1.0 - t : 0.0;
        }
        for (int j = lo; j < hi; j++) {
            double t = fabs((j + 0.5 - center) / filter_scale);
            double v = t < 1.0 ? 1.0 - t : 0.0;
            wt[j - first] = total > 0 ? (float)(v / total) : (j == lo ? 1.0f : 0.0f);
        }
        bounds[i] = first;
    }
}

static int taps_for(double length, int out_size, int in_size) {
    double scale = length / out_size;
    /* Enlarging, the triangle has support 1: the pixels j with |j + 0.5 - center| < 1 are at most two
     * (a third in the window would have weight exactly 0). */
    int taps = scale <= 1.0 ? 2 : (int)ceil(scale * 2.0) + 1;
    return taps < in_size ? taps : in_size;
}

static uint8_t to_byte(float v) {
    v += 0.5f;
    return (uint8_t)(v < 0.0f ? 0 : v > 255.0f ? 255 : (int)v);
}

/* The same filter, vertical pass first: each output row is a weighted sum of whole source rows
 * (bytes to floats, over the columns the horizontal pass reads), then gathered horizontally. */
static bf_status resample_vertical_first(bf_resampler *r, const bf_image_u8 *src, const float *wx, const int *bx,
                                         int taps_x, const float *wy, const int *by, int taps_y, int out_w, int out_h,
                                         int flip, uint8_t *out) {
    int col0 = bx[0], col1 = bx[out_w - 1] + taps_x;
    size_t width = (size_t)(col1 - col0) * 3, stride = (size_t)out_w * 3;
    if (!grow((void **)&r->rows, &r->rows_cap, width * sizeof(float)))
        return bf_error(BF_ERR_OOM, "resampler: out of memory");
    float *line = r->rows;
    for (int y = 0; y < out_h; y++) {
        const float *wt = wy + (size_t)y * taps_y;
        for (size_t i = 0; i < width; i++) line[i] = 0.0f;
        for (int j = 0; j < taps_y; j++) {
            float wj = wt[j];
            const uint8_t *row = src->pixels + ((size_t)(by[y] + j) * src->w + col0) * 3;
            if (wj != 0.0f)
                for (size_t i = 0; i < width; i++) line[i] += wj * (float)row[i];
        }
        uint8_t *dst = out + (size_t)y * stride;
        for (int x = 0; x < out_w; x++) {
            const float *w = wx + (size_t)x * taps_x, *p = line + (size_t)(bx[x] - col0) * 3;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
            for (int j = 0; j < taps_x; j++) {
                s0 += w[j] * p[3 * j];
                s1 += w[j] * p[3 * j + 1];
                s2 += w[j] * p[3 * j + 2];
            }
            int o = flip ? out_w - 1 - x : x;
            dst[3 * o] = to_byte(s0), dst[3 * o + 1] = to_byte(s1), dst[3 * o + 2] = to_byte(s2);
        }
    }
    return BF_OK;
}

bf_status bf_image_resample(bf_resampler *r, const bf_image_u8 *src, bf_rect crop, int out_w, int out_h, int flip,
                            uint8_t *out) {
    if (out_w < 1 || out_h < 1 || src->w < 1 || src->h < 1)
        return bf_error(BF_ERR_ARG, "bf_image_resample: %dx%d -> %dx%d", src->w, src->h, out_w, out_h);
    int taps_x = taps_for(crop.w, out_w, src->w), taps_y = taps_for(crop.h, out_h, src->h);
    size_t stride = (size_t)out_w * 3;
    /* float: vertical weights and one accumulator row; int32: the horizontal weights in fixed point */
    size_t weights = ((size_t)taps_x * out_w * 2 + (size_t)taps_y * out_h + stride) * sizeof(float);
    size_t bounds = ((size_t)out_w + out_h) * sizeof(int);
    if (!grow((void **)&r->weights, &r->weights_cap, weights) || !grow((void **)&r->bounds, &r->bounds_cap, bounds))
        return bf_error(BF_ERR_OOM, "resampler: out of memory");
    float *wx = r->weights, *wy = wx + (size_t)taps_x * out_w, *acc = wy + (size_t)taps_y * out_h;
    int *bx = r->bounds, *by = r->bounds + out_w;
    filter_weights(crop.x, crop.w, src->w, out_w, wx, bx, taps_x);
    filter_weights(crop.y, crop.h, src->h, out_h, wy, by, taps_y);
    /* The horizontal pass runs on integers: bytes times 14-bit weights summed in int32. Integer
     * adds have a third of the latency of float adds, which is what bounds this short dot product;
     * the rounding of the weights costs at most ~0.05 grey levels. */
    int32_t *ix = (int32_t *)(acc + stride);
    for (int x = 0; x < out_w; x++) {
        int32_t *iw = ix + (size_t)x * taps_x, total = 0, biggest = 0;
        for (int j = 0; j < taps_x; j++) {
            iw[j] = (int32_t)lrintf(wx[(size_t)x * taps_x + j] * (float)(1 << 14));
            total += iw[j];
            if (iw[j] > iw[biggest]) biggest = j;
        }
        iw[biggest] += (1 << 14) - total; /* weights sum to exactly 1, so flat areas stay exact */
    }

    /* Horizontal pass over the source rows the vertical pass reads. */
    int row0 = by[0], row1 = by[out_h - 1] + taps_y;
    /* The horizontal pass gathers (scalar), the vertical one streams whole rows (vectorised): when
     * the crop has more rows than the output, filtering vertically first gathers over fewer rows. */
    if (row1 - row0 > out_h) return resample_vertical_first(r, src, wx, bx, taps_x, wy, by, taps_y, out_w, out_h, flip, out);
    size_t rows_bytes = (size_t)(row1 - row0) * stride * sizeof(float);
    if (!grow((void **)&r->rows, &r->rows_cap, rows_bytes)) return bf_error(BF_ERR_OOM, "resampler: out of memory");
    for (int y = row0; y < row1; y++) {
        const uint8_t *in = src->pixels + (size_t)y * src->w * 3;
        float *dst = r->rows + (size_t)(y - row0) * stride;
        for (int x = 0; x < out_w; x++) {
            const int32_t *wt = ix + (size_t)x * taps_x;
            const uint8_t *p = in + (size_t)bx[x] * 3;
            int32_t s0 = 0, s1 = 0, s2 = 0;
            for (int j = 0; j < taps_x; j++) {
                s0 += wt[j] * p[3 * j];
                s1 += wt[j] * p[3 * j + 1];
                s2 += wt[j] * p[3 * j + 2];
            }
            const float unit = 1.0f / (float)(1 << 14);
            dst[3 * x] = (float)s0 * unit, dst[3 * x + 1] = (float)s1 * unit, dst[3 * x + 2] = (float)s2 * unit;
        }
    }
    /* Vertical pass: a weighted sum of whole rows (vectorisable), then bytes, mirrored when flipping. */
    for (int y = 0; y < out_h; y++) {
        const float *wt = wy + (size_t)y * taps_y;
        const float *base = r->rows + (size_t)(by[y] - row0) * stride;
        for (size_t i = 0; i < stride; i++) acc[i] = 0.0f;
        for (int j = 0; j < taps_y; j++) {
            float wj = wt[j];
            const float *row = base + (size_t)j * stride;
            if (wj != 0.0f)
                for (size_t i = 0; i < stride; i++) acc[i] += wj * row[i];
        }
        uint8_t *dst = out + (size_t)y * stride;
        for (int x = 0; x < out_w; x++) {
            int o = flip ? out_w - 1 - x : x;
            for (int c = 0; c < 3; c++) {
                float v = acc[3 * x + c] + 0.5f;
                dst[3 * o + c] = (uint8_t)(v < 0.0f ? 0 : v > 255.0f ? 255 : (int)v);
            }
        }
    }
    return BF_OK;
}
