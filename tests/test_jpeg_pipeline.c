/* test_jpeg_pipeline.c - JPEG datasets: decoding, crops, resampling, layouts, the loader's skips.
 *
 * A tiny synthetic tree (bf_jpeg_synth_tree, the generator behind tools/make_jpeg_tree) is written
 * to a fresh /tmp directory. Decoded pixels are checked against an independent reference: a full
 * decode with TurboJPEG's tjDecompress2, cropped, and a direct (non-separable, double precision)
 * evaluation of the triangle filter. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <turbojpeg.h>

#include "bioflex/data.h"
#include "bioflex/image.h"
#include "fsutil.h"
#include "testutil.h"

static char root[256];

/* zz_ycck.JPEG against zz_cmyk.JPEG (the same picture), in levels per channel: the largest mean
 * absolute difference and the largest mean difference (a colour cast). Measured 3.9, 3.2, 6.5 and
 * -1.1, -0.2, +0.0; a YCCK decode that skips the YCC transform gives 124, 31, 53 and -118, -19, -21. */
#define YCCK_MEAN_ABS 10.0
#define YCCK_MEAN_CAST 3.0

/* The whole file in memory (NULL if unreadable; *n = 0 on a short read). */
static unsigned char *read_all(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)*n);
    if (fread(buf, 1, (size_t)*n, f) != (size_t)*n) *n = 0;
    fclose(f);
    return buf;
}

/* Full decode with TurboJPEG at a scaling factor num/8 (RGB; CMYK converted like Adobe files). */
static uint8_t *reference_decode(const char *path, int num, int *w, int *h) {
    long n = 0;
    unsigned char *buf = read_all(path, &n);
    if (!buf) return NULL;
    tjhandle tj = tjInitDecompress();
    int iw, ih, sub, cs;
    uint8_t *out = NULL;
    if (tjDecompressHeader3(tj, buf, (unsigned long)n, &iw, &ih, &sub, &cs) == 0) {
        *w = TJSCALED(iw, ((tjscalingfactor){num, 8}));
        *h = TJSCALED(ih, ((tjscalingfactor){num, 8}));
        int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
        uint8_t *raw = malloc((size_t)*w * *h * (cmyk ? 4 : 3));
        if (tjDecompress2(tj, buf, (unsigned long)n, raw, *w, 0, *h, cmyk ? TJPF_CMYK : TJPF_RGB, 0) == 0) {
            if (cmyk) {
                out = malloc((size_t)*w * *h * 3);
                for (int i = 0; i < *w * *h; i++)
                    for (int c = 0; c < 3; c++) out[3 * i + c] = (uint8_t)((raw[4 * i + c] * raw[4 * i + 3] + 127) / 255);
                free(raw);
            } else {
                out = raw;
            }
        } else {
            free(raw);
        }
    }
    tjDestroy(tj);
    free(buf);
    return out;
}

/* The triangle filter straight from its definition: output pixel (x, y) of a crop resized to
 * ow x oh is the normalised weighted sum of every source pixel, weight tri(dx/fx) * tri(dy/fy). */
static double reference_pixel(const uint8_t *img, int w, int h, bf_rect crop, int ow, int oh, int x, int y, int c) {
    double sx = crop.w / ow, sy = crop.h / oh, fx = sx > 1 ? sx : 1, fy = sy > 1 ? sy : 1;
    double cx = crop.x + (x + 0.5) * sx, cy = crop.y + (y + 0.5) * sy;
    double sum = 0, total = 0;
    for (int j = 0; j < h; j++) {
        double ty = fabs((j + 0.5 - cy) / fy);
        if (ty >= 1) continue;
        for (int i = 0; i < w; i++) {
            double tx = fabs((i + 0.5 - cx) / fx);
            if (tx >= 1) continue;
            double wt = (1 - tx) * (1 - ty);
            sum += wt * img[((size_t)j * w + i) * 3 + c];
            total += wt;
        }
    }
    return sum / total;
}

static void test_decode(void) {
    bf_jpeg_decoder *dec = NULL;
    CHECK_OK(bf_jpeg_decoder_create(&dec));
    bf_image_u8 out = {0};
    const char *good[] = {"class_000/class_000_00000.JPEG", "class_001/class_001_00001.JPEG", "class_000/zz_gray.JPEG",
                          "class_000/zz_cmyk.JPEG", "class_000/zz_ycck.JPEG", "class_000/zz_progressive.JPEG"};
    for (int g = 0; g < 6; g++) {
        char path[512];
        snprintf(path, sizeof path, "%s/if/train/%s", root, good[g]);
        int w = 0, h = 0, rw = 0, rh = 0;
        CHECK_OK(bf_jpeg_load(dec, path, &w, &h));
        uint8_t *ref = reference_decode(path, 8, &rw, &rh);
        CHECK(ref && rw == w && rh == h, "%s: reference decode %dx%d vs header %dx%d", good[g], rw, rh, w, h);
        if (!ref) continue;
        /* A crop at full scale: the decoded region must equal the same pixels of the full decode. */
        bf_rect crop = {123.4, 77.7, 200, 150}, in;
        double scale = 0;
        CHECK_OK(bf_jpeg_decode_region(dec, crop, 200, 150, &out, &in, &scale));
        CHECK(scale == 1.0, "%s: scale %g for a crop no larger than the output", good[g], scale);
        int ox = (int)lround(crop.x - in.x), oy = (int)lround(crop.y - in.y), maxdiff = 0, maxedge = 0;
        CHECK(ox <= 123 && oy == 77 && out.w >= 200 && out.h >= 150, "%s: region at %d,%d size %dx%d", good[g], ox, oy,
              out.w, out.h);
        for (int y = 0; y < out.h; y++)
            for (int x = 0; x < out.w * 3; x++) {
                int d = abs((int)out.pixels[(size_t)y * out.w * 3 + x] - (int)ref[((size_t)(y + oy) * w + ox) * 3 + x]);
                int edge = x < 3 || x >= (out.w - 1) * 3;
                if (edge && d > maxedge) maxedge = d;
                if (!edge && d > maxdiff) maxdiff = d;
            }
        /* libjpeg-turbo's cropped path upsamples chroma without SIMD, so a few levels of difference
         * are allowed; a wrong offset gives tens. In the region's first and last column it has no
         * chroma sample beyond the crop and repeats the edge one, so those columns are off by up to
         * a quarter of the chroma step across the border times 1.772 (Cb -> B): 4 levels in
         * zz_ycck.JPEG; 12 allows a step of 27. */
        CHECK(maxdiff <= 3, "%s: cropped decode differs from the full decode by %d", good[g], maxdiff);
        CHECK(maxedge <= 12, "%s: cropped decode's edge columns differ from the full decode by %d", good[g], maxedge);
        free(ref);
        /* DCT scaling: a crop 4x larger than the output decodes at 1/4, as tjDecompress2 at 1/4 does. */
        CHECK_OK(bf_jpeg_load(dec, path, &w, &h));
        bf_rect big = {0, 0, w, h};
        CHECK_OK(bf_jpeg_decode_region(dec, big, w / 4 - 1, h / 4 - 1, &out, &in, &scale));
        CHECK(scale == 0.25, "%s: scale %g for a 4x reduction (expected 0.25)", good[g], scale);
        ref = reference_decode(path, 2, &rw, &rh);
        CHECK(ref && rw == out.w && rh == out.h, "%s: 1/4 decode %dx%d vs reference %dx%d", good[g], out.w, out.h, rw, rh);
        if (ref && rw == out.w && rh == out.h) {
            maxdiff = 0;
            for (size_t i = 0; i < (size_t)rw * rh * 3; i++) {
                int d = abs((int)out.pixels[i] - (int)ref[i]);
                if (d > maxdiff) maxdiff = d;
            }
            CHECK(maxdiff <= 1, "%s: 1/4-scaled decode differs from TurboJPEG's by %d", good[g], maxdiff);
        }
        free(ref);
    }
    /* The undecodable files: each a BF_ERR_FORMAT naming the file, and the decoder stays usable. */
    const char *bad[] = {"zz_png.JPEG", "zz_truncated.JPEG", "zz_corrupt.JPEG", "zz_empty.JPEG"};
    for (int b = 0; b < 4; b++) {
        char path[512];
        snprintf(path, sizeof path, "%s/if/train/class_000/%s", root, bad[b]);
        int w = 0, h = 0;
        bf_status st = bf_jpeg_load(dec, path, &w, &h);
        if (st == BF_OK) {
            bf_rect in, all = {0, 0, w, h};
            double scale;
            st = bf_jpeg_decode_region(dec, all, 224, 224, &out, &in, &scale);
        }
        CHECK(st == BF_ERR_FORMAT && strstr(bf_last_error(), bad[b]), "%s: %s (%s)", bad[b], bf_status_name(st),
              bf_last_error());
    }
    char path[512];
    int w, h;
    snprintf(path, sizeof path, "%s/if/train/class_000/class_000_00001.JPEG", root);
    CHECK_OK(bf_jpeg_load(dec, path, &w, &h));
    free(out.pixels);
    bf_jpeg_decoder_free(dec);
}

/* The transform byte of the file's Adobe APP14 marker (0 CMYK, 1 YCbCr, 2 YCCK), -1 if it has none. */
static int adobe_transform(const char *path) {
    long n = 0;
    unsigned char *b = read_all(path, &n);
    int transform = -1;
    /* Marker segments from just past SOI up to the scan: FF xx, a 2-byte length, the payload. */
    for (long i = 2; b && i + 4 <= n && b[i] == 0xFF && b[i + 1] != 0xDA;) {
        long len = (long)b[i + 2] << 8 | b[i + 3];
        /* "Adobe", version (2 bytes), flags0 (2), flags1 (2), transform (1) */
        if (b[i + 1] == 0xEE && len >= 14 && i + 2 + len <= n && memcmp(b + i + 4, "Adobe", 5) == 0) transform = b[i + 15];
        i += 2 + len;
    }
    free(b);
    return transform;
}

/* The whole image decoded by bioflex at full scale (the caller frees); NULL on failure. */
static uint8_t *bioflex_decode(bf_jpeg_decoder *dec, const char *path, int *w, int *h) {
    bf_image_u8 out = {0};
    bf_rect in;
    double scale = 0;
    if (bf_jpeg_load(dec, path, w, h) != BF_OK) return NULL;
    bf_rect all = {0, 0, *w, *h};
    if (bf_jpeg_decode_region(dec, all, *w, *h, &out, &in, &scale) != BF_OK || out.w != *w || out.h != *h) {
        free(out.pixels);
        return NULL;
    }
    return out.pixels;
}

static void test_ycck(void) {
    /* zz_ycck.JPEG holds the CMYK of zz_cmyk.JPEG's picture stored as YCCK (Adobe transform 2): the
     * form Photoshop writes CMYK JPEGs in. Decoding must undo the YCC transform (libjpeg's YCCK ->
     * CMYK) and then the inverted-CMYK conversion, giving the picture zz_cmyk.JPEG decodes to. */
    char cmyk_path[512], ycck_path[512];
    snprintf(cmyk_path, sizeof cmyk_path, "%s/if/train/class_000/zz_cmyk.JPEG", root);
    snprintf(ycck_path, sizeof ycck_path, "%s/if/train/class_000/zz_ycck.JPEG", root);
    /* The files are what they claim to be, so the comparison below tests the YCCK path. */
    int t_cmyk = adobe_transform(cmyk_path), t_ycck = adobe_transform(ycck_path);
    CHECK(t_cmyk == 0 && t_ycck == 2, "Adobe transform: zz_cmyk %d (expected 0), zz_ycck %d (expected 2)", t_cmyk, t_ycck);
    long n = 0;
    unsigned char *buf = read_all(ycck_path, &n);
    tjhandle tj = tjInitDecompress();
    int iw = 0, ih = 0, sub = 0, cs = -1;
    if (buf) tjDecompressHeader3(tj, buf, (unsigned long)n, &iw, &ih, &sub, &cs);
    CHECK(cs == TJCS_YCCK, "zz_ycck.JPEG: TurboJPEG colour space %d (expected TJCS_YCCK %d)", cs, TJCS_YCCK);
    tjDestroy(tj);
    free(buf);

    bf_jpeg_decoder *dec = NULL;
    CHECK_OK(bf_jpeg_decoder_create(&dec));
    int cw = 0, ch = 0, yw = 0, yh = 0;
    uint8_t *from_cmyk = dec ? bioflex_decode(dec, cmyk_path, &cw, &ch) : NULL;
    uint8_t *from_ycck = dec ? bioflex_decode(dec, ycck_path, &yw, &yh) : NULL;
    CHECK(from_cmyk && from_ycck && cw == yw && ch == yh, "decodes of zz_cmyk %dx%d and zz_ycck %dx%d", cw, ch, yw, yh);
    if (from_cmyk && from_ycck && cw == yw && ch == yh) {
        /* The two are lossy codings of the same CMYK (YCCK with 2x2 chroma subsampling), so they
         * differ by a few levels, most at the shapes' edges; a YCCK decode without the transform,
         * or with the wrong inversion, is tens of levels off everywhere. Checked: the mean
         * absolute difference per channel, and each channel's mean (a colour cast). */
        size_t pixels = (size_t)cw * ch;
        double absdiff[3] = {0, 0, 0}, cast[3] = {0, 0, 0};
        for (size_t i = 0; i < pixels; i++)
            for (int c = 0; c < 3; c++) {
                int d = (int)from_ycck[3 * i + c] - (int)from_cmyk[3 * i + c];
                absdiff[c] += abs(d);
                cast[c] += d;
            }
        for (int c = 0; c < 3; c++) {
            absdiff[c] /= (double)pixels;
            cast[c] /= (double)pixels;
            CHECK(absdiff[c] <= YCCK_MEAN_ABS && fabs(cast[c]) <= YCCK_MEAN_CAST,
                  "zz_ycck vs zz_cmyk channel %d: mean |difference| %.2f (<= %g), mean difference %+.2f (|.| <= %g)", c,
                  absdiff[c], YCCK_MEAN_ABS, cast[c], YCCK_MEAN_CAST);
        }
        printf("zz_ycck vs zz_cmyk (%dx%d): mean |difference| %.2f %.2f %.2f, mean difference %+.2f %+.2f %+.2f\n", cw, ch,
               absdiff[0], absdiff[1], absdiff[2], cast[0], cast[1], cast[2]);
    }
    free(from_cmyk);
    free(from_ycck);
    bf_jpeg_decoder_free(dec);
}

static void test_resample(void) {
    /* A random 37x29 image resized to 10x7 (antialiased), to 50x40 (enlarged) and a crop of it
     * flipped, against the direct evaluation of the filter. */
    int w = 37, h = 29;
    bf_image_u8 src = {0};
    CHECK_OK(bf_image_reserve(&src, w, h));
    for (int i = 0; i < w * h * 3; i++) src.pixels[i] = (uint8_t)((i * 7919u + (unsigned)(i / 3) * 31u) % 256u);
    bf_resampler r = {0};
    struct { bf_rect crop; int ow, oh, flip; } cases[] = {
        {{0, 0, 37, 29}, 10, 7, 0}, {{0, 0, 37, 29}, 50, 40, 0}, {{5.5, 3.25, 20, 15}, 8, 6, 1}};
    for (int k = 0; k < 3; k++) {
        uint8_t out[50 * 40 * 3];
        CHECK_OK(bf_image_resample(&r, &src, cases[k].crop, cases[k].ow, cases[k].oh, cases[k].flip, out));
        double worst = 0;
        for (int y = 0; y < cases[k].oh; y++)
            for (int x = 0; x < cases[k].ow; x++)
                for (int c = 0; c < 3; c++) {
                    int xs = cases[k].flip ? cases[k].ow - 1 - x : x;
                    double want = reference_pixel(src.pixels, w, h, cases[k].crop, cases[k].ow, cases[k].oh, xs, y, c);
                    double d = fabs(want - out[((size_t)y * cases[k].ow + x) * 3 + c]);
                    if (d > worst) worst = d;
                }
        CHECK(worst <= 0.51, "resample case %d: worst difference %.3f from the direct filter", k, worst);
    }
    bf_resampler_free(&r);
    free(src.pixels);
}

/* Weights of the triangle filter along one axis, straight from the definition (every source pixel,
 * double precision): the separable form of reference_pixel, fast enough for 224 x 224 outputs. */
static void reference_axis(double start, double length, int in, int out, double *wt /* out x in */,
                           int *lo /* out: first nonzero */, int *hi /* out: last nonzero + 1 */) {
    double s = length / out, f = s > 1 ? s : 1;
    for (int i = 0; i < out; i++) {
        double c = start + (i + 0.5) * s, total = 0;
        lo[i] = in, hi[i] = 0;
        for (int j = 0; j < in; j++) {
            double t = fabs((j + 0.5 - c) / f);
            wt[(size_t)i * in + j] = t < 1 ? 1 - t : 0;
            total += wt[(size_t)i * in + j];
            if (t < 1) lo[i] = j < lo[i] ? j : lo[i], hi[i] = j + 1;
        }
        for (int j = 0; j < in; j++) wt[(size_t)i * in + j] /= total;
    }
}

static void test_resample_fixed_point(void) {
    /* The resampler computes in fixed point (14-bit weights, an int16 intermediate with 7 fraction
     * bits). Against exact arithmetic, each pass may be off by its weight rounding, at most
     * taps * 255 / 2^15 levels, and the intermediate by 1/256: so an output may differ from the
     * exact value by 0.5 (rounding to a byte) plus that bound, and may be the other neighbour of a
     * value within that bound of a half - rarely. Checked on realistic sizes: RandomResizedCrop(224)
     * + flip plans on a 341x256 image (enlarging, 2 taps) and a 500x375 one (shrinking, 3-5 taps,
     * both pass orders), noise so that every rounding shows, and 1-pixel-wide edge cases. */
    struct { int w, h, out; } sizes[] = {{341, 256, 224}, {500, 375, 224}, {1, 40, 7}, {40, 1, 7}, {9, 5, 24}};
    bf_image_plan_options o = {.transform = BF_TRANSFORM_RANDOM_RESIZED_CROP, .size = 224, .scale_min = 0.08f,
                               .scale_max = 1.0f, .ratio_min = 0.75f, .ratio_max = 4.0f / 3.0f, .flip = 1};
    bf_resampler r = {0};
    uint8_t *out = malloc(224 * 224 * 3);
    double *wx = malloc(sizeof(double) * 224 * 500), *wy = malloc(sizeof(double) * 224 * 375);
    int xlo[224], xhi[224], ylo[224], yhi[224];
    long values = 0, off = 0;
    for (int k = 0; k < 5; k++) {
        int w = sizes[k].w, h = sizes[k].h, n = sizes[k].out;
        bf_image_u8 src = {0};
        CHECK_OK(bf_image_reserve(&src, w, h));
        for (int i = 0; i < w * h * 3; i++) src.pixels[i] = (uint8_t)((i * 2654435761u) >> 24);
        for (int p = 0; p < (k < 2 ? 12 : 4); p++) {
            bf_image_plan plan = bf_image_plan_make(&o, w, h, 1000 + (uint64_t)p);
            if (p == 0) plan.crop = (bf_rect){0, 0, w, h}, plan.flip = 0;
            CHECK_OK(bf_image_resample(&r, &src, plan.crop, n, n, plan.flip, out));
            reference_axis(plan.crop.x, plan.crop.w, w, n, wx, xlo, xhi);
            reference_axis(plan.crop.y, plan.crop.h, h, n, wy, ylo, yhi);
            double sx = plan.crop.w / n, sy = plan.crop.h / n;
            int taps = (sx > 1 ? (int)ceil(2 * sx) + 1 : 2) + (sy > 1 ? (int)ceil(2 * sy) + 1 : 2);
            double bound = 0.5 + taps * 255.0 / 32768.0 + 1.0 / 256.0, worst = 0;
            for (int y = 0; y < n; y++)
                for (int x = 0; x < n; x++) {
                    int xs = plan.flip ? n - 1 - x : x;
                    for (int c = 0; c < 3; c++) {
                        double want = 0;
                        for (int j = ylo[y]; j < yhi[y]; j++) {
                            double row = 0;
                            for (int i = xlo[xs]; i < xhi[xs]; i++)
                                row += wx[(size_t)xs * w + i] * src.pixels[((size_t)j * w + i) * 3 + c];
                            want += wy[(size_t)y * h + j] * row;
                        }
                        int got = out[((size_t)y * n + x) * 3 + c];
                        double d = fabs(want - got);
                        if (d > worst) worst = d;
                        values++;
                        off += got != (int)floor(want + 0.5);
                    }
                }
            CHECK(worst <= bound, "fixed point %dx%d plan %d (crop %.1fx%.1f, flip %d): worst %.4f > %.4f", w, h, p,
                  plan.crop.w, plan.crop.h, plan.flip, worst, bound);
        }
        free(src.pixels);
    }
    /* Not correctly rounded only near halves: well under 1% of the values. */
    CHECK(off * 100 < values, "fixed point: %ld of %ld values not the correctly rounded one", off, values);
    printf("fixed-point resampler: %ld of %ld values differ from the correctly rounded exact value\n", off, values);

    /* Bytes -> CHW floats: exactly byte / 255 as the scalar formula computes it, odd counts too. */
    uint8_t hwc[3 * 37];
    float chw[3 * 37];
    for (int i = 0; i < 3 * 37; i++) hwc[i] = (uint8_t)(i * 97 + 13);
    for (int n = 1; n <= 37; n += 6) {
        bf_image_to_chw_float(hwc, (size_t)n, chw);
        int bad = 0;
        for (int i = 0; i < n; i++)
            for (int c = 0; c < 3; c++) bad += chw[(size_t)c * n + i] != (float)hwc[3 * i + c] * (1.0f / 255.0f);
        CHECK(bad == 0, "bf_image_to_chw_float(%d pixels): %d values wrong", n, bad);
    }
    free(out);
    free(wx);
    free(wy);
    bf_resampler_free(&r);
}

static void test_plans(void) {
    bf_image_plan_options o = {.transform = BF_TRANSFORM_RANDOM_RESIZED_CROP, .size = 224, .scale_min = 0.08f,
                               .scale_max = 1.0f, .ratio_min = 0.75f, .ratio_max = 4.0f / 3.0f, .flip = 1};
    int flips = 0;
    for (int s = 0; s < 2000; s++) {
        bf_image_plan p = bf_image_plan_make(&o, 500, 375, (uint64_t)s * 7 + 1), q = bf_image_plan_make(&o, 500, 375, (uint64_t)s * 7 + 1);
        CHECK(p.crop.x == q.crop.x && p.crop.y == q.crop.y && p.crop.w == q.crop.w && p.crop.h == q.crop.h && p.flip == q.flip,
              "plan %d is not a function of its seed", s);
        double area = p.crop.w * p.crop.h / (500.0 * 375.0), ratio = p.crop.w / p.crop.h;
        int ok = p.crop.x >= 0 && p.crop.y >= 0 && p.crop.x + p.crop.w <= 500 && p.crop.y + p.crop.h <= 375 &&
                 area >= 0.075 && area <= 1.0 && ratio > 0.72 && ratio < 1.38;
        if (!ok) CHECK(0, "plan %d: crop %g,%g %gx%g (area %.3f ratio %.3f)", s, p.crop.x, p.crop.y, p.crop.w, p.crop.h, area, ratio);
        flips += p.flip;
    }
    CHECK(flips > 900 && flips < 1100, "%d flips in 2000 (expected about 1000)", flips);
    /* torchvision's fallback: an image too wide for any attempt gets the central crop at max ratio. */
    bf_image_plan p = bf_image_plan_make(&o, 1000, 10, 5);
    CHECK(p.crop.w == 13 && p.crop.h == 10 && p.crop.x == 493 && p.crop.y == 0, "fallback crop %g,%g %gx%g", p.crop.x,
          p.crop.y, p.crop.w, p.crop.h);
    o.transform = BF_TRANSFORM_CENTER;
    o.resize = 256;
    p = bf_image_plan_make(&o, 500, 375, 1);
    CHECK_CLOSE(p.crop.w, 224.0 * 375 / 256, 1e-9, 0, "centre crop side");
    CHECK_CLOSE(p.crop.x, (500 - 224.0 * 375 / 256) / 2, 1e-9, 0, "centre crop x");
}

static void set(bf_config *cfg, const char *a) { CHECK_OK(bf_config_set(cfg, a)); }

static void test_datasets(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    char a[512];
    set(&cfg, "data.dataset = imagefolder");
    snprintf(a, sizeof a, "data.path = %s/if", root);
    set(&cfg, a);
    set(&cfg, "data.image_size = 32");
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d));
    if (d) {
        CHECK(d->num_classes == 3 && d->num_samples == 3 * 4 + BF_SYNTH_EDGE_FILES && d->c == 3 && d->h == 32,
              "imagefolder train: %d classes, %d samples, %dx%dx%d", d->num_classes, d->num_samples, d->c, d->h, d->w);
        int sorted = 1;
        for (int i = 1; i < d->num_samples; i++) sorted &= d->labels[i] >= d->labels[i - 1];
        CHECK(sorted && d->labels[0] == 0 && d->labels[d->num_samples - 1] == 2, "labels in class order");
    }

    /* The loader: every epoch position gets a decodable image; the 4 bad files are skipped and
     * replaced; the same seed gives the same batches and the same count. */
    float *first = NULL;
    long skipped[2] = {0, 0};
    for (int run = 0; run < 2 && d; run++) {
        bf_loader_options o = {.batch_size = 5, .threads = run + 1, .prefetch = 2, .shuffle = 1, .normalize = 1,
                               .seed = 3};
        bf_loader *l = NULL;
        CHECK_OK(bf_loader_create(d, &o, &l));
        if (!l) break;
        CHECK_OK(bf_loader_start_epoch(l, 0, 0));
        bf_batch *b;
        int seen = 0;
        size_t floats = (size_t)3 * 32 * 32;
        if (run == 0) first = malloc((size_t)d->num_samples * floats * sizeof(float));
        while (bf_loader_next(l, &b, NULL) == BF_OK && b) {
            for (int k = 0; k < b->n; k++) {
                CHECK(b->labels[k] >= 0 && b->labels[k] < 3, "label %d", b->labels[k]);
                float *img = b->images + (size_t)k * floats;
                if (run == 0) memcpy(first + (size_t)(seen + k) * floats, img, floats * sizeof(float));
                else if (memcmp(first + (size_t)(seen + k) * floats, img, floats * sizeof(float)) != 0)
                    CHECK(0, "position %d differs between 1 and 2 loader threads", seen + k);
            }
            seen += b->n;
            bf_loader_release(l, b);
        }
        CHECK(seen == d->num_samples, "epoch delivered %d of %d samples", seen, d->num_samples);
        skipped[run] = bf_loader_skipped_images(l);
        bf_loader_destroy(l);
    }
    /* Resuming inside the epoch: batch 2 onwards are the same images as in the full epoch. */
    if (d && first) {
        bf_loader_options o = {.batch_size = 5, .threads = 2, .prefetch = 2, .shuffle = 1, .normalize = 1, .seed = 3};
        bf_loader *l = NULL;
        CHECK_OK(bf_loader_create(d, &o, &l));
        bf_batch *b = NULL;
        if (l) {
            CHECK_OK(bf_loader_start_epoch(l, 0, 2));
            CHECK_OK(bf_loader_next(l, &b, NULL));
            size_t floats = (size_t)3 * 32 * 32;
            CHECK(b && b->index == 2 && memcmp(b->images, first + 10 * floats, (size_t)b->n * floats * sizeof(float)) == 0,
                  "resumed batch 2 differs from batch 2 of the full epoch");
            if (b) bf_loader_release(l, b);
            bf_loader_destroy(l);
        }
    }
    CHECK(skipped[0] >= BF_SYNTH_BAD_FILES && skipped[0] == skipped[1], "skipped %ld and %ld (expected the same, >= %d)",
          skipped[0], skipped[1], BF_SYNTH_BAD_FILES);
    free(first);

    /* A squashed sample against the reference: TurboJPEG's decode at the same DCT scale (500 px ->
     * 32 px decodes at 1/8) and the direct filter over the whole (scaled) image. */
    if (d) {
        bf_image_worker w;
        CHECK_OK(bf_image_worker_init(&w, 32));
        float img[3 * 32 * 32];
        CHECK_OK(bf_image_load_sample(d, 1, 42, &w, img));
        int rw, rh, fw, fh;
        uint8_t *full = reference_decode(d->files->paths[1], 8, &fw, &fh);
        uint8_t *ref = reference_decode(d->files->paths[1], 1, &rw, &rh);
        free(full);
        /* the whole picture is fw x fh source pixels, fw/8 x fh/8 at 1/8: the decode's last column
         * and row (rw = ceil(fw/8)) are a partial block, whatever lies past fw/8 padding */
        double worst = 0, s = 1.0 / 8.0;
        bf_rect all = {0, 0, fw * s, fh * s};
        for (int y = 0; ref && y < 32; y++)
            for (int x = 0; x < 32; x++)
                for (int c = 0; c < 3; c++) {
                    double want = reference_pixel(ref, rw, rh, all, 32, 32, x, y, c);
                    double diff = fabs(want - 255.0 * img[(size_t)c * 1024 + y * 32 + x]);
                    if (diff > worst) worst = diff;
                }
        CHECK(ref && worst < 1.5, "squashed sample vs reference decode + filter: worst %.1f levels", worst);
        free(ref);
        bf_image_worker_free(&w);
    }
    bf_dataset_free(d);
    d = NULL;

    /* class_list selects and orders; val has no bad files. */
    char list[512];
    snprintf(list, sizeof list, "%s/classes.txt", root);
    FILE *f = fopen(list, "w");
    fprintf(f, "# two classes, reversed\nclass_002\n\nclass_000\n");
    fclose(f);
    snprintf(a, sizeof a, "data.class_list = %s", list);
    set(&cfg, a);
    CHECK_OK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TEST, &d));
    if (d) {
        CHECK(d->num_classes == 2 && d->num_samples == 4 && d->labels[0] == 0 && strstr(d->files->paths[0], "class_002"),
              "class_list: %d classes, %d samples, first %s", d->num_classes, d->num_samples, d->files->paths[0]);
        bf_dataset_free(d);
        d = NULL;
    }
    /* a class listed twice would give its files two labels */
    f = fopen(list, "w");
    fprintf(f, "class_002\nclass_000\nclass_002\n");
    fclose(f);
    CHECK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TEST, &d) == BF_ERR_FORMAT && !d &&
              strstr(bf_last_error(), "classes.txt:3: class 'class_002' is listed twice (already as class 0)"),
          "class_list with a class twice is refused: %s", bf_last_error());
    set(&cfg, "data.class_list = ");

    /* Kaggle layout: labels follow Labels.json (reversed WNIDs), over both train shards. */
    set(&cfg, "data.dataset = imagenet100");
    snprintf(a, sizeof a, "data.path = %s/kg", root);
    set(&cfg, a);
    bf_status st = bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d);
    CHECK(st == BF_ERR_FORMAT && strstr(bf_last_error(), "expected 100"), "imagenet100 with 3 classes: %s", bf_last_error());
    set(&cfg, "data.dataset = imagenet100");
    snprintf(list, sizeof list, "%s/kg_classes.txt", root);
    f = fopen(list, "w");
    fprintf(f, "n00001002\nn00001001\nn00001000\n");
    fclose(f);
    snprintf(a, sizeof a, "data.class_list = %s", list);
    set(&cfg, a);
    CHECK_OK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d));
    if (d) {
        CHECK(d->num_classes == 3 && d->num_samples == 6 && strstr(d->files->paths[0], "train.X1/n00001002") &&
              strstr(d->files->paths[2], "train.X2/n00001001") && d->labels[2] == 1,
              "kaggle: %d classes %d samples, %s label %d", d->num_classes, d->num_samples, d->files->paths[2], d->labels[2]);
        bf_dataset_free(d);
        d = NULL;
    }
    set(&cfg, "data.class_list = ");
    /* a WNID twice in Labels.json (JSON allows it) would give its folder two labels */
    char labels_json[400], saved_json[4096] = "";
    snprintf(labels_json, sizeof labels_json, "%s/kg/Labels.json", root);
    f = fopen(labels_json, "r");
    size_t saved_len = f ? fread(saved_json, 1, sizeof saved_json - 1, f) : 0;
    if (f) fclose(f);
    f = fopen(labels_json, "w");
    fprintf(f, "{\"n00001000\": \"a\", \"n00001001\": \"b\", \"n00001000\": \"c\"}\n");
    fclose(f);
    st = bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d);
    CHECK(st == BF_ERR_FORMAT && !d && strstr(bf_last_error(), "WNID 'n00001000' is a key twice (classes 0 and 2)"),
          "Labels.json with a key twice is refused: %s", bf_last_error());
    f = fopen(labels_json, "w");
    fwrite(saved_json, 1, saved_len, f);
    fclose(f);

    /* Errors at open: no path, a missing directory, an empty class. */
    set(&cfg, "data.dataset = imagefolder");
    snprintf(a, sizeof a, "data.path = %s/nowhere", root);
    set(&cfg, a);
    st = bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d);
    CHECK(st == BF_ERR_IO && strstr(bf_last_error(), "nowhere"), "missing dir: %s", bf_last_error());
    snprintf(a, sizeof a, "%s/if/train/class_empty", root);
    mkdir(a, 0755);
    snprintf(a, sizeof a, "data.path = %s/if", root);
    set(&cfg, a);
    st = bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d);
    CHECK(st == BF_ERR_IO && strstr(bf_last_error(), "class_empty"), "empty class: %s", bf_last_error());
    set(&cfg, "data.path = ");
    st = bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d);
    CHECK(st == BF_ERR_CONFIG && strstr(bf_last_error(), "data] path"), "no path: %s", bf_last_error());
    /* Config validation of the crop keys. */
    set(&cfg, "data.crop_scale_min = 0.9");
    set(&cfg, "data.crop_scale_max = 0.5");
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "crop_scale_min"), "scale range: %s",
          bf_last_error());
    CHECK(bf_config_set(&cfg, "data.train_transform = crop") != BF_OK && strstr(bf_last_error(), "random_resized_crop"),
          "train_transform error names the allowed values: %s", bf_last_error());
}

/* Files a corrupt or hostile header makes costly or wrong are refused as format errors (the
 * loader skips and counts them): a 65000 x 65000 header in a small file (a progressive decode would
 * buffer gigabytes), 2000 empty progressive scans (seconds of CPU each; tests/fixtures, from
 * fuzzing) and arithmetic-coded data libjpeg flags as corrupt (tests/fixtures). */
static void test_hostile_files(void) {
    bf_jpeg_decoder *dec = NULL;
    CHECK_OK(bf_jpeg_decoder_create(&dec));
    bf_image_u8 out = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/huge.jpg", root);
    uint8_t pixels[16 * 16 * 3];
    memset(pixels, 90, sizeof pixels);
    CHECK_OK(bf_jpeg_write(path, pixels, 16, 16, 3, 90, 1));
    FILE *f = fopen(path, "r+b");
    uint8_t bytes[4096];
    size_t n = f ? fread(bytes, 1, sizeof bytes, f) : 0;
    size_t sof = 0;
    for (size_t i = 0; i + 9 < n && !sof; i++)
        if (bytes[i] == 0xFF && bytes[i + 1] == 0xC2) sof = i; /* SOF2: FF C2, length, precision, height, width */
    CHECK(sof > 0, "the progressive JPEG has an SOF2 marker");
    if (f && sof) {
        const uint8_t big[4] = {0xFD, 0xE8, 0xFD, 0xE8}; /* 65000 x 65000 */
        fseek(f, (long)(sof + 5), SEEK_SET);
        fwrite(big, 1, sizeof big, f);
    }
    if (f) fclose(f);
    int w = 0, h = 0;
    bf_status s = bf_jpeg_load(dec, path, &w, &h);
    CHECK(s == BF_ERR_FORMAT && strstr(bf_last_error(), "a 65000x65000 JPEG is over the"), "huge header: %s",
          bf_last_error());
    const char *fixtures[2][2] = {{"jpeg_many_scans.jpg", "more than 500 scans"},
                                  {"jpeg_arith_bad_code.jpg", "corrupt or truncated JPEG data"}};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/tests/fixtures/%s", BIOFLEX_SOURCE_DIR, fixtures[i][0]);
        s = bf_jpeg_load(dec, path, &w, &h);
        bf_rect whole = {0, 0, w, h}, in;
        double scale = 0;
        if (s == BF_OK) s = bf_jpeg_decode_region(dec, whole, w, h, &out, &in, &scale);
        CHECK(s == BF_ERR_FORMAT && strstr(bf_last_error(), fixtures[i][1]), "%s refused as \"%s\": %s",
              fixtures[i][0], fixtures[i][1], bf_last_error());
    }
    /* and the decoder goes on with the next file */
    snprintf(path, sizeof path, "%s/if/train/class_000/class_000_00000.JPEG", root);
    CHECK_OK(bf_jpeg_load(dec, path, &w, &h));
    bf_rect whole = {0, 0, w, h}, in;
    double scale = 0;
    CHECK_OK(bf_jpeg_decode_region(dec, whole, w, h, &out, &in, &scale));
    free(out.pixels);
    bf_jpeg_decoder_free(dec);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/bioflex_test_jpeg_%d", (int)getpid());
    bf_remove_tree(root);
    mkdir(root, 0755);
    char dir[300];
    bf_jpeg_synth_options o = {.layout = BF_SYNTH_IMAGEFOLDER, .classes = 3, .train_per_class = 4, .val_per_class = 2,
                               .quality = 90, .edge_cases = 1, .seed = 7};
    snprintf(dir, sizeof dir, "%s/if", root);
    CHECK_OK(bf_jpeg_synth_tree(dir, &o));
    o.layout = BF_SYNTH_KAGGLE;
    o.train_per_class = 2;
    o.edge_cases = 0;
    snprintf(dir, sizeof dir, "%s/kg", root);
    CHECK_OK(bf_jpeg_synth_tree(dir, &o));
    test_decode();
    test_ycck();
    test_resample();
    test_resample_fixed_point();
    test_plans();
    test_datasets();
    test_hostile_files();
    bf_remove_tree(root);
    return bf_test_finish();
}
