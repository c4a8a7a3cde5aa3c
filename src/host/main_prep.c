/* main_prep.c - bioflex-prep: a resized copy of a JPEG dataset.
 *
 *   bioflex-prep SRC DST [--shorter N | --longest N] [--quality Q]
 *
 * Walks SRC, and writes every .jpg/.jpeg file to the same relative path under DST with its shorter
 * (default 256) or longest side resized to N (never enlarged), re-encoded at quality Q (default
 * 90); other files (Labels.json, ...) are copied. This is the offline pre-resizing that makes
 * FFCV-style loading fast: a 256-pixel JPEG decodes several times faster than a 500x375 one.
 * Undecodable JPEGs are reported and left out, as the training loader would skip them. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bioflex/image.h"
#include "cli.h"
#include "fsutil.h"

typedef struct prep {
    int longest, side, quality;
    long total, done, skipped;
    bf_jpeg_decoder *dec;
    bf_image_u8 decoded;
    bf_resampler resampler;
    uint8_t *out;
    size_t out_cap;
} prep;

static int is_jpeg(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

/* A bar redrawn in place on a terminal; in a log (stderr not a terminal) a line at each tenth. */
static void progress(const prep *p) {
    int width = 40, filled = p->total ? (int)(width * p->done / p->total) : width;
    if (isatty(fileno(stderr))) {
        fprintf(stderr, "\r[%.*s%*s] %ld/%ld files, %ld skipped", filled, "########################################",
                width - filled, "", p->done, p->total, p->skipped);
        return;
    }
    const long tenth = p->total >= 10 ? p->total / 10 : 1;
    if (p->done % tenth < 64 || p->done == p->total) /* progress() runs every 64 files */
        fprintf(stderr, "%ld/%ld files, %ld skipped\n", p->done, p->total, p->skipped);
}

static bf_status copy_file(const char *src, const char *dst) {
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    if (!in || !out) {
        if (in) fclose(in);
        return bf_error(BF_ERR_IO, "cannot copy %s to %s: %s", src, dst, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out) == 0 ? BF_OK : bf_error(BF_ERR_IO, "%s: write error", dst);
}

static bf_status resize_one(prep *p, const char *src, const char *dst) {
    int w, h;
    BF_TRY(bf_jpeg_load(p->dec, src, &w, &h));
    int ref = p->longest ? (w > h ? w : h) : (w < h ? w : h);
    double f = ref > p->side ? (double)p->side / ref : 1.0;
    int ow = (int)(w * f + 0.5), oh = (int)(h * f + 0.5);
    if (ow < 1) ow = 1;
    if (oh < 1) oh = 1;
    bf_rect full = {0, 0, w, h}, in_crop;
    double scale;
    BF_TRY(bf_jpeg_decode_region(p->dec, full, ow, oh, &p->decoded, &in_crop, &scale));
    size_t need = (size_t)ow * oh * 3;
    if (need > p->out_cap) {
        uint8_t *q = realloc(p->out, need);
        if (!q) return bf_error(BF_ERR_OOM, "out of memory");
        p->out = q;
        p->out_cap = need;
    }
    BF_TRY(bf_image_resample(&p->resampler, &p->decoded, in_crop, ow, oh, 0, p->out));
    return bf_jpeg_write(dst, p->out, ow, oh, 3, p->quality, 0);
}

/* count_only: just counts the JPEGs (for the progress bar). */
static bf_status walk(prep *p, const char *src, const char *dst, int count_only) {
    DIR *d = opendir(src);
    if (!d) return bf_error(BF_ERR_IO, "cannot open directory %s: %s", src, strerror(errno));
    if (!count_only) {
        bf_status st = bf_mkdir_p(dst);
        if (st != BF_OK) {
            closedir(d);
            return st;
        }
    }
    struct dirent *e;
    bf_status st = BF_OK;
    char s[BF_PATH_MAX * 2], t[BF_PATH_MAX * 2];
    while (st == BF_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(s, sizeof s, "%s/%s", src, e->d_name);
        snprintf(t, sizeof t, "%s/%s", dst, e->d_name);
        struct stat info;
        if (stat(s, &info) != 0) continue;
        if (S_ISDIR(info.st_mode)) {
            st = walk(p, s, t, count_only);
        } else if (!is_jpeg(e->d_name)) {
            if (!count_only) st = copy_file(s, t);
        } else if (count_only) {
            p->total++;
        } else {
            bf_status r = resize_one(p, s, t);
            if (r == BF_ERR_FORMAT) {
                p->skipped++;
                fprintf(stderr, "\nskipped: %s\n", bf_last_error());
            } else {
                st = r;
            }
            p->done++;
            if (p->done % 64 == 0 || p->done == p->total) progress(p);
        }
    }
    closedir(d);
    return st;
}

/* A copy into its own source would resize the source in place (DST = SRC), read its own output back
 * as more source, nesting DST/DST/... until the path is too long (DST inside SRC), or write over the
 * tree it reads (SRC inside DST). Compared as resolved paths (links, "..", "./"), DST's through its
 * nearest existing ancestor as it may not exist yet; refused before anything is written. */
static int check_separate_trees(const char *src, const char *dst) {
    char real_src[BF_RESOLVED_PATH_MAX], real_dst[BF_RESOLVED_PATH_MAX];
    if (bf_resolve_path(src, real_src, sizeof real_src) != BF_OK ||
        bf_resolve_path(dst, real_dst, sizeof real_dst) != BF_OK) {
        fprintf(stderr, "bioflex-prep: %s\n", bf_last_error());
        return 2;
    }
    const char *why = strcmp(real_src, real_dst) == 0            ? "is the same directory as"
                      : bf_path_is_within(real_dst, real_src) ? "lies inside"
                      : bf_path_is_within(real_src, real_dst) ? "contains"
                                                              : NULL;
    if (!why) return 0;
    fprintf(stderr, "bioflex-prep: DST %s %s SRC %s (resolved: DST %s, SRC %s): the copy must go to a directory "
            "outside SRC that does not contain it\n", dst, why, src, real_dst, real_src);
    return 2;
}

/* One option's value into *value: the whole text an integer in [lo, hi]; else a message naming the
 * flag, the text and the range, and 0. */
static int option_value(const char *flag, const char *text, long lo, long hi, int *value) {
    long n = 0;
    if (!bf_cli_parse_int(text, lo, hi, &n)) {
        fprintf(stderr, "bioflex-prep: %s %s: not an integer in %ld..%ld\n", flag, text, lo, hi);
        return 0;
    }
    *value = (int)n;
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bioflex-prep SRC DST [--shorter N | --longest N] [--quality Q]\n");
        return 2;
    }
    prep p = {.side = 256, .quality = 90};
    const char *side_flag = NULL, *quality_flag = NULL; /* each given once: a second would silently win */
    for (int i = 3; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *text = argv[i + 1];
        if (strcmp(flag, "--shorter") == 0 || strcmp(flag, "--longest") == 0) {
            if (side_flag && strcmp(side_flag, flag) != 0) {
                fprintf(stderr, "bioflex-prep: %s and %s given together: give one of --shorter N or --longest N\n",
                        side_flag, flag);
                return 2;
            }
            if (side_flag) {
                fprintf(stderr, "bioflex-prep: %s given twice: give it once\n", flag);
                return 2;
            }
            side_flag = flag;
            p.longest = strcmp(flag, "--longest") == 0;
            if (!option_value(flag, text, 8, 8192, &p.side)) return 2;
        } else if (strcmp(flag, "--quality") == 0) {
            if (quality_flag) {
                fprintf(stderr, "bioflex-prep: --quality given twice: give it once\n");
                return 2;
            }
            quality_flag = flag;
            if (!option_value(flag, text, 1, 100, &p.quality)) return 2;
        } else {
            fprintf(stderr, "bioflex-prep: unknown option %s (allowed: --shorter, --longest, --quality)\n", flag);
            return 2;
        }
    }
    if ((argc - 3) % 2 != 0) {
        fprintf(stderr, "bioflex-prep: option %s needs a value\n", argv[argc - 1]);
        return 2;
    }
    if (check_separate_trees(argv[1], argv[2]) != 0) return 2;
    bf_status st = bf_jpeg_decoder_create(&p.dec);
    if (st == BF_OK) st = walk(&p, argv[1], argv[2], 1);
    if (st == BF_OK) st = walk(&p, argv[1], argv[2], 0);
    if (p.total && isatty(fileno(stderr))) fprintf(stderr, "\n"); /* after the bar */
    bf_jpeg_decoder_free(p.dec);
    free(p.decoded.pixels);
    free(p.out);
    bf_resampler_free(&p.resampler);
    if (st != BF_OK) {
        fprintf(stderr, "bioflex-prep: %s\n", bf_last_error());
        return 1;
    }
    printf("%ld images written to %s (%s side %d, quality %d), %ld skipped\n", p.done - p.skipped, argv[2],
           p.longest ? "longest" : "shorter", p.side, p.quality, p.skipped);
    return 0;
}
