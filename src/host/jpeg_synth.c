/* jpeg_synth.c - synthetic ImageNet-like JPEG trees for tests and benchmarks (see image.h).
 *
 * Each image is a smooth two-colour gradient (class-dependent hues), a few filled ellipses and
 * rectangles, and pixel noise - content with edges and texture, so JPEG sizes and decode times
 * resemble photos rather than flat colour. Everything is a function of (seed, class, index).
 * The edge cases of a real crawl are planted in class 0 of the training split:
 *   good but unusual: gray.JPEG (1 channel), cmyk.JPEG (Adobe CMYK), ycck.JPEG (Adobe YCCK: the same
 *   CMYK stored as YCbCr + K, Adobe transform 2, as Photoshop writes it), progressive.JPEG;
 *   bad (the loader must skip them): png.JPEG (a PNG), truncated.JPEG, corrupt.JPEG, empty.JPEG.
 * The tinyimagenet layout is Tiny-ImageNet's own: train/<wnid>/images/<wnid>_<i>.JPEG beside
 * train/<wnid>/<wnid>_boxes.txt, val/images/val_<k>.JPEG labelled by val/val_annotations.txt
 * (file, WNID, box; tab-separated) and wnids.txt, 64x64 images unless a size is given. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>

#include "bioflex/hash.h"
#include "bioflex/image.h"
#include "fsutil.h"

static void render(uint64_t seed, int cls, int w, int h, uint8_t *rgb) {
    float hue = (float)cls * 0.618034f;
    float base[3], other[3];
    for (int c = 0; c < 3; c++) {
        base[c] = 128.0f + 100.0f * sinf(6.2831853f * (hue + c / 3.0f));
        other[c] = 128.0f + 100.0f * cosf(6.2831853f * (hue * 1.7f + bf_uniform(seed, 1) + c / 3.0f));
    }
    float angle = 6.2831853f * bf_uniform(seed, 2), ca = cosf(angle), sa = sinf(angle);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            float t = 0.5f + 0.5f * ((x - w / 2) * ca + (y - h / 2) * sa) / (float)(w > h ? w : h);
            for (int c = 0; c < 3; c++) rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(base[c] * (1 - t) + other[c] * t);
        }
    }
    int shapes = 3 + (int)(bf_uniform(seed, 3) * 5);
    for (int s = 0; s < shapes; s++) {
        uint64_t k = 16 + 8 * (uint64_t)s;
        float cx = bf_uniform(seed, k) * w, cy = bf_uniform(seed, k + 1) * h;
        float rx = (0.05f + 0.25f * bf_uniform(seed, k + 2)) * w, ry = (0.05f + 0.25f * bf_uniform(seed, k + 3)) * h;
        int ellipse = bf_uniform(seed, k + 4) < 0.5f;
        uint8_t col[3];
        for (int c = 0; c < 3; c++) col[c] = (uint8_t)(255.0f * bf_uniform(seed, k + 5 + (uint64_t)c));
        for (int y = (int)(cy - ry) < 0 ? 0 : (int)(cy - ry); y < h && y < cy + ry; y++) {
            for (int x = (int)(cx - rx) < 0 ? 0 : (int)(cx - rx); x < w && x < cx + rx; x++) {
                float dx = (x - cx) / rx, dy = (y - cy) / ry;
                if (ellipse && dx * dx + dy * dy > 1.0f) continue;
                memcpy(rgb + ((size_t)y * w + x) * 3, col, 3);
            }
        }
    }
    uint64_t noise = bf_seed_derive(seed, 77, 0);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        int v = rgb[i] + (int)((bf_uniform(noise, i) - 0.5f) * 24.0f);
        rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

/* Encodes to memory (buffer from libjpeg's allocator, freed by the caller with free()). `cs` is the
 * colour space of `pixels`, `stored` the one written to the file (RGB is stored as YCbCr, CMYK as
 * CMYK or YCCK). */
static int encode(const uint8_t *pixels, int w, int h, int comps, J_COLOR_SPACE cs, J_COLOR_SPACE stored, int quality,
                  int progressive, unsigned char **buf, unsigned long *size) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err); /* a failure here is a bug (valid input), so the default exit is fine */
    jpeg_create_compress(&ci);
    *buf = NULL;
    *size = 0;
    jpeg_mem_dest(&ci, buf, size);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = comps;
    ci.in_color_space = cs;
    jpeg_set_defaults(&ci);
    /* Also sets the Adobe marker's transform for CMYK (0) and YCCK (2); for RGB and gray it is the
     * default set_defaults chose, so those files do not change. */
    jpeg_set_colorspace(&ci, stored);
    jpeg_set_quality(&ci, quality, TRUE);
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)ci.next_scanline * w * comps);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    return 0;
}

static bf_status write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return bf_error(BF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t wrote = n ? fwrite(data, 1, n, f) : 0;
    if (fclose(f) != 0 || wrote != n) return bf_error(BF_ERR_IO, "%s: write error", path);
    return BF_OK;
}

static bf_status make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return bf_error(BF_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    return BF_OK;
}

/* The start of the entropy-coded data: just past the SOS segment. */
static size_t scan_start(const unsigned char *b, size_t n) {
    for (size_t i = 2; i + 3 < n; i++)
        if (b[i] == 0xFF && b[i + 1] == 0xDA) return i + 2 + ((size_t)b[i + 2] << 8 | b[i + 3]);
    return n / 2;
}

/* The sizes of a crawl: mostly 500x375 and its portrait twin, some larger and smaller. */
static void pick_size(uint64_t seed, int *w, int *h, int fixed_w, int fixed_h) {
    if (fixed_w > 0) {
        *w = fixed_w, *h = fixed_h;
        return;
    }
    static const int sizes[][2] = {{500, 375}, {500, 375}, {500, 375}, {375, 500}, {500, 333}, {640, 480}, {400, 300}};
    int i = (int)(bf_uniform(seed, 99) * 7);
    *w = sizes[i > 6 ? 6 : i][0], *h = sizes[i > 6 ? 6 : i][1];
}

static bf_status write_image(const char *path, uint64_t seed, int cls, const bf_jpeg_synth_options *o, uint8_t *rgb,
                             const char *kind) {
    int w, h;
    pick_size(seed, &w, &h, o->width, o->height);
    render(seed, cls, w, h, rgb);
    unsigned char *buf = NULL;
    unsigned long size = 0;
    bf_status st = BF_OK;
    if (strcmp(kind, "gray") == 0) {
        for (size_t i = 0; i < (size_t)w * h; i++)
            rgb[i] = (uint8_t)((299 * rgb[3 * i] + 587 * rgb[3 * i + 1] + 114 * rgb[3 * i + 2]) / 1000);
        encode(rgb, w, h, 1, JCS_GRAYSCALE, JCS_GRAYSCALE, o->quality, 0, &buf, &size);
    } else if (strcmp(kind, "cmyk") == 0 || strcmp(kind, "ycck") == 0) {
        /* Adobe-style inverted CMYK of the same picture: stored c' = 255 - C etc. YCCK holds the same
         * values: libjpeg turns the inverted C, M, Y into YCbCr before the DCT and back after it. */
        uint8_t *cmyk = malloc((size_t)w * h * 4);
        if (!cmyk) return bf_error(BF_ERR_OOM, "out of memory");
        for (size_t i = 0; i < (size_t)w * h; i++) {
            int r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
            int k = r > g ? (r > b ? r : b) : (g > b ? g : b); /* 255 - K */
            cmyk[4 * i] = (uint8_t)(k ? r * 255 / k : 0);
            cmyk[4 * i + 1] = (uint8_t)(k ? g * 255 / k : 0);
            cmyk[4 * i + 2] = (uint8_t)(k ? b * 255 / k : 0);
            cmyk[4 * i + 3] = (uint8_t)k;
        }
        encode(cmyk, w, h, 4, JCS_CMYK, strcmp(kind, "ycck") == 0 ? JCS_YCCK : JCS_CMYK, o->quality, 0, &buf, &size);
        free(cmyk);
    } else {
        encode(rgb, w, h, 3, JCS_RGB, JCS_YCbCr, o->quality, strcmp(kind, "progressive") == 0, &buf, &size);
    }
    if (strcmp(kind, "truncated") == 0) {
        size = (unsigned long)scan_start(buf, size) + 100; /* the header and a sliver of the first rows */
    } else if (strcmp(kind, "corrupt") == 0) {
        size_t s = scan_start(buf, size);
        for (size_t i = s; i < s + 64 && i + 1 < size; i += 2) buf[i] = 0xFF, buf[i + 1] = 0x99; /* bogus markers */
    }
    if (strcmp(kind, "png") == 0) {
        static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                            0, 0, 0, 16, 0, 0, 0, 16, 8, 2, 0, 0, 0, 0x90, 0x91, 0x68, 0x36};
        st = write_bytes(path, png, sizeof png);
    } else if (strcmp(kind, "empty") == 0) {
        st = write_bytes(path, "", 0);
    } else {
        st = write_bytes(path, buf, size);
    }
    free(buf);
    return st;
}

/* The edge-case files, zz_<kind>.JPEG, and the picture each shows (the index its seed is derived
 * from). ycck shows cmyk's picture, so the two files differ only in how the same CMYK is stored and
 * a test can compare their decodes; every other kind keeps a picture of its own. */
static const struct edge_file {
    const char *kind;
    int picture;
} edge_files[] = {{"gray", 0},  {"cmyk", 1},      {"ycck", 1},    {"progressive", 2},
                  {"png", 3},   {"truncated", 4}, {"corrupt", 5}, {"empty", 6}};
#define NUM_EDGE_FILES (int)(sizeof edge_files / sizeof edge_files[0])
_Static_assert(sizeof edge_files / sizeof edge_files[0] == BF_SYNTH_EDGE_FILES, "image.h counts the edge-case files");

/* Appends a line to a text file (Tiny-ImageNet's annotation and box files). */
static bf_status append_line(const char *path, const char *line) {
    FILE *f = fopen(path, "a");
    if (!f) return bf_error(BF_ERR_IO, "%s: cannot open for appending: %s", path, strerror(errno));
    fprintf(f, "%s\n", line);
    if (fclose(f) != 0) return bf_error(BF_ERR_IO, "%s: write error", path);
    return BF_OK;
}

bf_status bf_jpeg_synth_tree(const char *root, const bf_jpeg_synth_options *opt) {
    if (opt->classes < 1 || opt->classes > 1000)
        return bf_error(BF_ERR_ARG, "synthetic tree: classes %d (1..1000)", opt->classes);
    int kaggle = opt->layout == BF_SYNTH_KAGGLE, tiny = opt->layout == BF_SYNTH_TINYIMAGENET;
    bf_jpeg_synth_options sized = *opt; /* Tiny-ImageNet's images are all 64x64 */
    if (tiny && sized.width <= 0) sized.width = sized.height = 64;
    const bf_jpeg_synth_options *o = &sized;
    char dir[BF_PATH_MAX * 2], path[BF_PATH_MAX * 3], line[256];
    BF_TRY(bf_mkdir_p(root)); /* its parents too, as bioflex-prep makes its DST */
    uint8_t *rgb = malloc((size_t)2048 * 2048 * 3);
    if (!rgb) return bf_error(BF_ERR_OOM, "out of memory");
    bf_status st = BF_OK;
    /* Class names: WNID-like (kaggle and tinyimagenet); Labels.json and wnids.txt list them in an
     * order that is not sorted (reversed), so a loader that sorts instead of following Labels.json,
     * or follows wnids.txt instead of sorting train/'s folders, gets every label wrong. */
    if (tiny) {
        snprintf(path, sizeof path, "%s/wnids.txt", root);
        remove(path); /* the tree's text files are appended to: start them afresh */
        snprintf(path, sizeof path, "%s/val", root);
        st = make_dir(path);
        snprintf(path, sizeof path, "%s/val/val_annotations.txt", root);
        remove(path);
        for (int c = 0; st == BF_OK && c < o->classes; c++) {
            snprintf(line, sizeof line, "n%08d", 1000 + (o->classes - 1 - c));
            snprintf(path, sizeof path, "%s/wnids.txt", root);
            st = append_line(path, line);
        }
    }
    if (kaggle) {
        snprintf(path, sizeof path, "%s/Labels.json", root);
        FILE *f = fopen(path, "w");
        if (!f) st = bf_error(BF_ERR_IO, "%s: cannot create", path);
        for (int c = 0; st == BF_OK && c < o->classes; c++)
            fprintf(f, "%s\"n%08d\": \"synthetic class %d\"", c ? ", " : "{", 1000 + (o->classes - 1 - c), c);
        if (f) {
            fprintf(f, "}\n");
            fclose(f);
        }
    }
    for (int split = 0; split < 2 && st == BF_OK; split++) {
        int per_class = split == 0 ? o->train_per_class : o->val_per_class;
        for (int c = 0; c < o->classes && st == BF_OK; c++) {
            char cname[32];
            if (kaggle || tiny) snprintf(cname, sizeof cname, "n%08d", 1000 + (o->classes - 1 - c));
            else snprintf(cname, sizeof cname, "class_%03d", c);
            const char *top = kaggle ? (split == 0 ? (c % 2 ? "train.X2" : "train.X1") : "val.X") : (split == 0 ? "train" : "val");
            snprintf(dir, sizeof dir, "%s/%s", root, top);
            st = make_dir(dir);
            if (tiny && split == 0) { /* train/<wnid>/images/, and the boxes file beside it */
                snprintf(dir, sizeof dir, "%s/%s/%s", root, top, cname);
                if (st == BF_OK) st = make_dir(dir);
                snprintf(path, sizeof path, "%s/%s_boxes.txt", dir, cname);
                remove(path);
                snprintf(dir, sizeof dir, "%s/%s/%s/images", root, top, cname);
            } else if (tiny) { /* every class's images in val/images/ */
                snprintf(dir, sizeof dir, "%s/%s/images", root, top);
            } else {
                snprintf(dir, sizeof dir, "%s/%s/%s", root, top, cname);
            }
            if (st == BF_OK) st = make_dir(dir);
            for (int i = 0; i < per_class && st == BF_OK; i++) {
                uint64_t seed = bf_seed_derive(o->seed, (uint64_t)(split * 100000 + c), (uint64_t)i);
                char file[64];
                /* Tiny-ImageNet's validation images are numbered across the classes: image i of
                 * class c is val_<i * classes + c>, so name order is not class order. */
                if (tiny && split == 1) snprintf(file, sizeof file, "val_%d.JPEG", i * o->classes + c);
                else if (tiny) snprintf(file, sizeof file, "%s_%d.JPEG", cname, i);
                else snprintf(file, sizeof file, "%s_%05d.JPEG", cname, i);
                snprintf(path, sizeof path, "%s/%s", dir, file);
                st = write_image(path, seed, c, o, rgb, "plain");
                if (st == BF_OK && tiny) { /* the box: the whole image (the loader reads only the WNID) */
                    if (split == 1) {
                        snprintf(line, sizeof line, "%s\t%s\t0\t0\t%d\t%d", file, cname, o->width - 1, o->height - 1);
                        snprintf(path, sizeof path, "%s/val/val_annotations.txt", root);
                    } else {
                        snprintf(line, sizeof line, "%s\t0\t0\t%d\t%d", file, o->width - 1, o->height - 1);
                        snprintf(path, sizeof path, "%s/train/%s/%s_boxes.txt", root, cname, cname);
                    }
                    st = append_line(path, line);
                }
            }
            if (split == 0 && c == 0 && o->edge_cases) {
                for (int e = 0; e < NUM_EDGE_FILES && st == BF_OK; e++) {
                    const struct edge_file *f = &edge_files[e];
                    snprintf(path, sizeof path, "%s/zz_%s.JPEG", dir, f->kind);
                    st = write_image(path, bf_seed_derive(o->seed, 999, (uint64_t)f->picture), c, o, rgb, f->kind);
                }
            }
            if (o->progress) fprintf(stderr, "\r%s: %s %d/%d classes", root, split ? "val" : "train", c + 1, o->classes);
        }
    }
    if (o->progress) fprintf(stderr, "\n");
    free(rgb);
    return st;
}
