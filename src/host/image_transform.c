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
 * enlarging is plain bilinear interpolation. Two passes in fixed point (see COEF_BITS), the
 * horizontal flip folded into the horizontal weights. All buffers live in a bf_resampler that
 * grows and is reused, so a worker allocates nothing per image once warm. */
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
    free(r->coefs);
    free(r->bounds);
    free(r->rows);
    free(r->acc);
    free(r->pairs);
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

/* Fixed point, as Pillow-SIMD does it: integer multiply-adds are short, exact and vectorise on
 * every target. Weights are int16 with COEF_BITS fraction bits (1.0 = 16384; 15 bits could not
 * hold a weight of exactly 1). The first pass keeps MID_BITS fraction bits in int16, so the
 * second pass does not start from a value already rounded to a whole grey level: 255 << 7 = 32640
 * fits. The triangle's weights are never negative and sum to exactly 1 << COEF_BITS, so no sum
 * leaves [0, 255 << bits] and nothing needs clamping. Error against exact arithmetic: weight
 * rounding at most taps * 2^-15 * 255 per pass plus 2^-8 from the intermediate rounding, about
 * 0.02 grey levels for 2-4 taps - the output is the correctly rounded value except where the exact
 * one lies that close to a half (tests/test_jpeg_pipeline.c bounds it). */
enum { COEF_BITS = 14, MID_BITS = 7 };

/* Weights of the triangle filter for out_size outputs covering [start, start + length) of an axis
 * of in_size pixels. Every output reads exactly `taps` pixels, bounds[o] .. bounds[o] + taps - 1,
 * with coefs[o * taps ..] (zero outside the filter's support): a fixed count lets the passes
 * below use unrolled kernels. With `mirror`, output o gets the weights of output out_size - 1 - o,
 * which is how the horizontal flip costs nothing. */
static void filter_coefs(double start, double length, int in_size, int out_size, int taps, int mirror,
                         int16_t *coefs, int *bounds) {
    double scale = length / out_size, filter_scale = scale > 1.0 ? scale : 1.0, support = filter_scale;
    double inv = 1.0 / filter_scale; /* this runs for every image: multiply, do not divide */
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
        int o = mirror ? out_size - 1 - i : i;
        int16_t *wt = coefs + (size_t)o * taps;
        for (int k = 0; k < taps; k++) wt[k] = 0;
        double total = 0;
        for (int j = lo; j < hi; j++) {
            double t = fabs(j + 0.5 - center) * inv;
            total += t < 1.0 ? 1.0 - t : 0.0;
        }
        double unit = total > 0 ? (1 << COEF_BITS) / total : 0.0;
        int sum = 0, biggest = lo - first;
        for (int j = lo; j < hi; j++) {
            double t = fabs(j + 0.5 - center) * inv;
            double v = total > 0 ? (t < 1.0 ? 1.0 - t : 0.0) * unit : (j == lo ? 1 << COEF_BITS : 0);
            wt[j - first] = (int16_t)(v + 0.5); /* v >= 0: rounds to nearest */
            sum += wt[j - first];
            if (wt[j - first] > wt[biggest]) biggest = j - first;
        }
        wt[biggest] = (int16_t)(wt[biggest] + (1 << COEF_BITS) - sum); /* exactly 1: flat areas stay exact */
        bounds[o] = first;
    }
}

static int taps_for(double length, int out_size, int in_size) {
    double scale = length / out_size;
    /* Enlarging, the triangle has support 1: the pixels j with |j + 0.5 - center| < 1 are at most two
     * (a third in the window would have weight exactly 0). */
    int taps = scale <= 1.0 ? 2 : (int)ceil(scale * 2.0) + 1;
    return taps < in_size ? taps : in_size;
}

#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

/* SSE2 is part of x86-64 itself, so this needs no -m flag and no run-time dispatch; elsewhere (or
 * built with -DBF_RESAMPLE_NO_SIMD, e.g. to compare the two) the portable kernels run. Both compute
 * the same integer sums, so their outputs are identical bit for bit. */
#if defined(__SSE2__) && !defined(BF_RESAMPLE_NO_SIMD)
#include <emmintrin.h>
#define RESAMPLE_SSE2 1
#endif

/* A pass's kernels take `taps` as a literal from one of these switches, so their tap loops unroll
 * and the weights stay in registers. */
#define SWITCH_TAPS(taps, CALL)                                                                                        \
    switch (taps) {                                                                                                    \
    case 2: CALL(2); break;                                                                                            \
    case 3: CALL(3); break;                                                                                            \
    case 4: CALL(4); break;                                                                                            \
    case 5: CALL(5); break;                                                                                            \
    case 6: CALL(6); break;                                                                                            \
    default: CALL(taps); break;                                                                                        \
    }

/* ---------------------------------------------------------------- horizontal (gathering) pass
 *
 * One row of RGB pixels to out_w RGB pixels, each output a dot product of `taps` neighbouring
 * pixels starting at bounds[x]. The input is bytes (horizontal pass first) or int16 with MID_BITS
 * fraction bits (vertical pass first); `shift` takes the sums to the output's scale. */

/* Portable: one output pixel. */
INLINE void h_pixel(const uint8_t *in8, const int16_t *in16, size_t p, const int16_t *wt, int taps, int shift,
                    int16_t *out16, uint8_t *out8) {
    int32_t s0 = 1 << (shift - 1), s1 = s0, s2 = s0;
    for (int j = 0; j < taps; j++) {
        int32_t w = wt[j];
        if (in8) s0 += w * in8[p + 3 * j], s1 += w * in8[p + 3 * j + 1], s2 += w * in8[p + 3 * j + 2];
        else s0 += w * in16[p + 3 * j], s1 += w * in16[p + 3 * j + 1], s2 += w * in16[p + 3 * j + 2];
    }
    if (out8) out8[0] = (uint8_t)(s0 >> shift), out8[1] = (uint8_t)(s1 >> shift), out8[2] = (uint8_t)(s2 >> shift);
    else out16[0] = (int16_t)(s0 >> shift), out16[1] = (int16_t)(s1 >> shift), out16[2] = (int16_t)(s2 >> shift);
}

#ifdef RESAMPLE_SSE2
/* The SSE2 horizontal kernel takes taps in pairs (j, j + 1): the two pixels' channels interleaved
 * as int16 (R_j, R_j+1, G_j, G_j+1, B_j, B_j+1, ..) and one _mm_madd_epi16 with (w_j, w_j+1) in
 * every 32-bit lane gives the three channels' sums. Those multipliers are precomputed per output
 * (the "pair table", PAIR_LANES int32 per pair, 16-byte aligned by malloc), so the loop loads them
 * straight into the multiply. An odd count pairs the last tap with a zero weight. */
enum { PAIR_LANES = 4 };

static void pair_table(const int16_t *coefs, int out_w, int taps, int32_t *pairs) {
    int npairs = (taps + 1) / 2;
    for (int x = 0; x < out_w; x++)
        for (int k = 0; k < npairs; k++) {
            const int16_t *w = coefs + (size_t)x * taps + 2 * k;
            uint32_t v = (uint16_t)w[0] | (uint32_t)(2 * k + 1 < taps ? (uint16_t)w[1] : 0) << 16;
            for (int l = 0; l < PAIR_LANES; l++) pairs[((size_t)x * npairs + k) * PAIR_LANES + l] = (int32_t)v;
        }
}

static inline __m128i load32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtsi32_si128(v);
}

/* Pixels 0 .. out_w - 2. Every load is 4 bytes (4 int16) at a pixel, so for the last pair it reads
 * up to 4 values past the window (the caller keeps that inside the buffer); every store writes a
 * fourth value that the next pixel overwrites, so the last pixel is left to the portable code. */
INLINE void h_row_sse2(const uint8_t *restrict in8, const int16_t *restrict in16, int16_t *restrict out16,
                       uint8_t *restrict out8, const int32_t *restrict pairs, const int *restrict bounds, int out_w,
                       int taps, int shift) {
    const __m128i zero = _mm_setzero_si128(), half = _mm_set1_epi32(1 << (shift - 1));
    const int npairs = (taps + 1) / 2;
    for (int x = 0; x + 1 < out_w; x++) {
        size_t p = (size_t)bounds[x] * 3;
        const __m128i *w = (const __m128i *)(pairs + (size_t)x * npairs * PAIR_LANES);
        __m128i s = half;
        for (int k = 0; k < npairs; k++, p += 6) {
            __m128i px;
            if (in8)
                px = _mm_unpacklo_epi8(_mm_unpacklo_epi8(load32(in8 + p), load32(in8 + p + 3)), zero);
            else
                px = _mm_unpacklo_epi16(_mm_loadl_epi64((const __m128i *)(in16 + p)),
                                        _mm_loadl_epi64((const __m128i *)(in16 + p + 3)));
            s = _mm_add_epi32(s, _mm_madd_epi16(px, _mm_load_si128(w + k)));
        }
        s = _mm_srai_epi32(s, shift);
        s = _mm_packs_epi32(s, s);
        if (out8) {
            int32_t v = _mm_cvtsi128_si32(_mm_packus_epi16(s, s));
            memcpy(out8 + 3 * x, &v, 4);
        } else {
            _mm_storel_epi64((__m128i *)(out16 + 3 * x), s);
        }
    }
}
#endif

/* `safe`: the input may be read 4 values past any window (see h_row_sse2). */
INLINE void h_row_taps(const uint8_t *in8, const int16_t *in16, int16_t *out16, uint8_t *out8, const int16_t *coefs,
                       const int32_t *pairs, const int *bounds, int out_w, int taps, int shift, int safe) {
    int x = 0;
#ifdef RESAMPLE_SSE2
    if (safe) {
        h_row_sse2(in8, in16, out16, out8, pairs, bounds, out_w, taps, shift);
        x = out_w - 1;
    }
#else
    (void)safe, (void)pairs;
#endif
    for (; x < out_w; x++)
        h_pixel(in8, in16, (size_t)bounds[x] * 3, coefs + (size_t)x * taps, taps, shift,
                out16 ? out16 + 3 * x : NULL, out8 ? out8 + 3 * x : NULL);
}

static void h_row(const uint8_t *in8, const int16_t *in16, int16_t *out16, uint8_t *out8, const int16_t *coefs,
                  const int32_t *pairs, const int *bounds, int out_w, int taps, int shift, int safe) {
#define H_ROW(t) h_row_taps(in8, in16, out16, out8, coefs, pairs, bounds, out_w, t, shift, safe)
    SWITCH_TAPS(taps, H_ROW)
#undef H_ROW
}

/* ------------------------------------------------------------------ vertical (streaming) pass
 *
 * One output row is a weighted sum of `taps` whole input rows of n values (row j at in + j * stride):
 * every value is independent, so this is the vector-friendly pass. */

/* Portable: one weight at a time along the row into int32 accumulators, loops the compiler
 * vectorises; taps in pairs so a 2-tap (enlarging) row is one pass over memory. */
static void v_row_portable(const uint8_t *in8, const int16_t *in16, size_t stride, size_t n, const int16_t *wt,
                           int taps, int shift, int32_t *restrict acc, int16_t *restrict out16,
                           uint8_t *restrict out8) {
    const int32_t half = 1 << (shift - 1);
    for (size_t i = 0; i < n; i++) acc[i] = half;
    for (int j = 0; j < taps; j += 2) {
        int32_t w0 = wt[j], w1 = j + 1 < taps ? wt[j + 1] : 0;
        size_t r0 = (size_t)j * stride, r1 = j + 1 < taps ? r0 + stride : r0;
        if (in8)
            for (size_t i = 0; i < n; i++) acc[i] += w0 * in8[r0 + i] + w1 * in8[r1 + i];
        else
            for (size_t i = 0; i < n; i++) acc[i] += w0 * in16[r0 + i] + w1 * in16[r1 + i];
    }
    if (out8)
        for (size_t i = 0; i < n; i++) out8[i] = (uint8_t)(acc[i] >> shift);
    else
        for (size_t i = 0; i < n; i++) out16[i] = (int16_t)(acc[i] >> shift);
}

#ifdef RESAMPLE_SSE2
/* Eight values at a time with every tap summed in registers: the rows of a pair interleaved so one
 * _mm_madd_epi16 gives w0 * a + w1 * b in 32 bits. Returns how many values it did (a multiple of 8). */
INLINE size_t v_row_sse2(const uint8_t *restrict in8, const int16_t *restrict in16, size_t stride, size_t n,
                         const int16_t *restrict wt, int taps, int shift, int16_t *restrict out16,
                         uint8_t *restrict out8) {
    const __m128i zero = _mm_setzero_si128(), half = _mm_set1_epi32(1 << (shift - 1));
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i lo = half, hi = half;
        for (int j = 0; j < taps; j += 2) {
            int pair = j + 1 < taps;
            __m128i w = _mm_set1_epi32((int32_t)((uint32_t)(uint16_t)wt[j] |
                                                 (uint32_t)(pair ? (uint16_t)wt[j + 1] : 0) << 16)),
                    a, b;
            if (in8) {
                const uint8_t *r0 = in8 + (size_t)j * stride + i;
                __m128i ab = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)r0),
                                               pair ? _mm_loadl_epi64((const __m128i *)(r0 + stride)) : zero);
                a = _mm_unpacklo_epi8(ab, zero), b = _mm_unpackhi_epi8(ab, zero);
            } else {
                const int16_t *r0 = in16 + (size_t)j * stride + i;
                __m128i x0 = _mm_loadu_si128((const __m128i *)r0);
                __m128i x1 = pair ? _mm_loadu_si128((const __m128i *)(r0 + stride)) : zero;
                a = _mm_unpacklo_epi16(x0, x1), b = _mm_unpackhi_epi16(x0, x1);
            }
            lo = _mm_add_epi32(lo, _mm_madd_epi16(a, w));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(b, w));
        }
        __m128i v = _mm_packs_epi32(_mm_srai_epi32(lo, shift), _mm_srai_epi32(hi, shift));
        if (out8) _mm_storel_epi64((__m128i *)(out8 + i), _mm_packus_epi16(v, v));
        else _mm_storeu_si128((__m128i *)(out16 + i), v);
    }
    return i;
}
#endif

static void v_row(const uint8_t *in8, const int16_t *in16, size_t stride, size_t n, const int16_t *wt, int taps,
                  int shift, int32_t *acc, int16_t *out16, uint8_t *out8) {
    size_t i = 0;
#ifdef RESAMPLE_SSE2
#define V_ROW(t) i = v_row_sse2(in8, in16, stride, n, wt, t, shift, out16, out8)
    SWITCH_TAPS(taps, V_ROW)
#undef V_ROW
    if (i == n) return;
#endif
    v_row_portable(in8 ? in8 + i : NULL, in16 ? in16 + i : NULL, stride, n - i, wt, taps, shift, acc,
                   out16 ? out16 + i : NULL, out8 ? out8 + i : NULL);
}

/* Horizontal first: source rows -> int16 rows out_w wide -> output rows. */
static void resample_horizontal_first(const bf_image_u8 *src, const int16_t *wx, const int32_t *px, const int *bx,
                                      int taps_x, const int16_t *wy, const int *by, int taps_y, int out_w, int out_h,
                                      int row0, int row1, int16_t *rows, int32_t *acc, uint8_t *out) {
    size_t stride = (size_t)out_w * 3, src_stride = (size_t)src->w * 3;
    for (int y = row0; y < row1; y++) {
        int safe = (size_t)(src->h - 1 - y) * src_stride >= 4; /* room to read past a window */
        h_row(src->pixels + (size_t)y * src_stride, NULL, rows + (size_t)(y - row0) * stride, NULL, wx, px, bx, out_w,
              taps_x, COEF_BITS - MID_BITS, safe);
    }
    for (int y = 0; y < out_h; y++)
        v_row(NULL, rows + (size_t)(by[y] - row0) * stride, stride, stride, wy + (size_t)y * taps_y, taps_y,
              COEF_BITS + MID_BITS, acc, NULL, out + (size_t)y * stride);
}

/* Vertical first: for each output row, the source rows (only the columns the horizontal pass
 * reads, col0..col1) -> one int16 line -> the output row. The line has LINE_PAD spare values so
 * the horizontal pass may read past its end. */
enum { LINE_PAD = 8 };
static void resample_vertical_first(const bf_image_u8 *src, const int16_t *wx, const int32_t *px, int *bx,
                                    int taps_x, const int16_t *wy, const int *by, int taps_y, int out_w, int out_h,
                                    int col0, int col1, int16_t *line, int32_t *acc, uint8_t *out) {
    size_t width = (size_t)(col1 - col0) * 3, src_stride = (size_t)src->w * 3, stride = (size_t)out_w * 3;
    for (int x = 0; x < out_w; x++) bx[x] -= col0; /* the line holds columns col0..col1 */
    memset(line + width, 0, LINE_PAD * sizeof *line);
    for (int y = 0; y < out_h; y++) {
        const uint8_t *base = src->pixels + (size_t)by[y] * src_stride + (size_t)col0 * 3;
        v_row(base, NULL, src_stride, width, wy + (size_t)y * taps_y, taps_y, MID_BITS, acc, line, NULL);
        h_row(NULL, line, NULL, out + (size_t)y * stride, wx, px, bx, out_w, taps_x, COEF_BITS + MID_BITS, 1);
    }
}

bf_status bf_image_resample(bf_resampler *r, const bf_image_u8 *src, bf_rect crop, int out_w, int out_h, int flip,
                            uint8_t *out) {
    if (out_w < 1 || out_h < 1 || src->w < 1 || src->h < 1)
        return bf_error(BF_ERR_ARG, "bf_image_resample: %dx%d -> %dx%d", src->w, src->h, out_w, out_h);
    int taps_x = taps_for(crop.w, out_w, src->w), taps_y = taps_for(crop.h, out_h, src->h);
    size_t coefs = ((size_t)taps_x * out_w + (size_t)taps_y * out_h) * sizeof(int16_t);
    size_t bounds = ((size_t)out_w + out_h) * sizeof(int);
    if (!grow((void **)&r->coefs, &r->coefs_cap, coefs) || !grow((void **)&r->bounds, &r->bounds_cap, bounds))
        return bf_error(BF_ERR_OOM, "resampler: out of memory");
    int16_t *wx = r->coefs, *wy = wx + (size_t)taps_x * out_w;
    int *bx = r->bounds, *by = r->bounds + out_w;
    filter_coefs(crop.x, crop.w, src->w, out_w, taps_x, flip, wx, bx);
    filter_coefs(crop.y, crop.h, src->h, out_h, taps_y, 0, wy, by);
    int32_t *px = NULL;
#ifdef RESAMPLE_SSE2
    size_t pairs = (size_t)out_w * ((taps_x + 1) / 2) * PAIR_LANES * sizeof(int32_t);
    if (!grow((void **)&r->pairs, &r->pairs_cap, pairs)) return bf_error(BF_ERR_OOM, "resampler: out of memory");
    px = r->pairs;
    pair_table(wx, out_w, taps_x, px);
#endif

    /* The gathering pass costs a few times the streaming one per value, so it runs on the smaller
     * of (crop rows x output width) and (output rows x output width): when the crop has more rows
     * than the output, filter vertically first. */
    int row0 = by[0], row1 = by[out_h - 1] + taps_y;
    int col0 = flip ? bx[out_w - 1] : bx[0], col1 = (flip ? bx[0] : bx[out_w - 1]) + taps_x;
    size_t stride = (size_t)out_w * 3, width = (size_t)(col1 - col0) * 3;
    int vertical_first = row1 - row0 > out_h;
    size_t rows = vertical_first ? width + LINE_PAD : (size_t)(row1 - row0) * stride;
    size_t acc = vertical_first ? width : stride;
    if (!grow((void **)&r->rows, &r->rows_cap, rows * sizeof(int16_t)) ||
        !grow((void **)&r->acc, &r->acc_cap, acc * sizeof(int32_t)))
        return bf_error(BF_ERR_OOM, "resampler: out of memory");
    if (vertical_first)
        resample_vertical_first(src, wx, px, bx, taps_x, wy, by, taps_y, out_w, out_h, col0, col1, r->rows, r->acc,
                                out);
    else
        resample_horizontal_first(src, wx, px, bx, taps_x, wy, by, taps_y, out_w, out_h, row0, row1, r->rows, r->acc,
                                  out);
    return BF_OK;
}

/* ------------------------------------------------------------------ bytes to CHW floats */

void bf_image_to_chw_float(const uint8_t *restrict hwc, size_t pixels, float *restrict chw) {
    const float unit = 1.0f / 255.0f;
    float *r = chw, *g = chw + pixels, *b = chw + 2 * pixels;
    size_t i = 0;
#ifdef RESAMPLE_SSE2
    /* Four pixels at a time: 12 bytes widened to three vectors of four floats, which shuffles
     * regroup by channel - (R0 G0 B0 R1) (G1 B1 R2 G2) (B2 R3 G3 B3) -> R, G, B. The 16-byte load
     * reads 4 bytes past the 4 pixels, so the loop stops two pixels early. */
    const __m128i zero = _mm_setzero_si128();
    const __m128 scale = _mm_set1_ps(unit);
    for (; i + 6 <= pixels; i += 4) {
        __m128i bytes = _mm_loadu_si128((const __m128i *)(hwc + 3 * i));
        __m128i lo = _mm_unpacklo_epi8(bytes, zero), hi = _mm_unpackhi_epi8(bytes, zero);
        __m128 v0 = _mm_cvtepi32_ps(_mm_unpacklo_epi16(lo, zero)), v1 = _mm_cvtepi32_ps(_mm_unpackhi_epi16(lo, zero));
        __m128 v2 = _mm_cvtepi32_ps(_mm_unpacklo_epi16(hi, zero));
        /* _mm_shuffle_ps(a, b, (d, c, b, a)) = (a[a], a[b], b[c], b[d]) */
        __m128 red = _mm_shuffle_ps(v0, _mm_shuffle_ps(v1, v2, _MM_SHUFFLE(0, 1, 0, 2)), _MM_SHUFFLE(2, 0, 3, 0));
        __m128 green = _mm_shuffle_ps(_mm_shuffle_ps(v0, v1, _MM_SHUFFLE(0, 0, 0, 1)),
                                      _mm_shuffle_ps(v1, v2, _MM_SHUFFLE(0, 2, 0, 3)), _MM_SHUFFLE(2, 0, 2, 0));
        __m128 blue = _mm_shuffle_ps(_mm_shuffle_ps(v0, v1, _MM_SHUFFLE(0, 1, 0, 2)), v2, _MM_SHUFFLE(3, 0, 2, 0));
        _mm_storeu_ps(r + i, _mm_mul_ps(red, scale));
        _mm_storeu_ps(g + i, _mm_mul_ps(green, scale));
        _mm_storeu_ps(b + i, _mm_mul_ps(blue, scale));
    }
#endif
    for (; i < pixels; i++) {
        r[i] = (float)hwc[3 * i] * unit;
        g[i] = (float)hwc[3 * i + 1] * unit;
        b[i] = (float)hwc[3 * i + 2] * unit;
    }
}
