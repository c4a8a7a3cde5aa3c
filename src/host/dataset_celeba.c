/* dataset_celeba.c - CelebA's 40 binary attributes as 40 tasks (the BU-TD reference's guided
 * CelebA setup: torchvision CelebA, aligned 218x178 RGB images, no resize or crop).
 *
 * The directory (data.path, default /usr/share/datasets/celeba) holds the files of the official
 * release, as torchvision expects them:
 *   img_align_celeba/000001.jpg ...   aligned JPEGs, 178 wide and 218 high
 *   list_attr_celeba.txt              line 1: image count; line 2: the 40 attribute names; then
 *                                     "000001.jpg -1 1 ..." (40 values, -1 or 1)
 *   list_eval_partition.txt           "000001.jpg 0" (0 train, 1 valid, 2 test)
 * The two lists name the same images in the same order (as released); a mismatch is an error
 * naming both files and the line. split train = partition 0, test = partition 2 (torchvision's
 * 'train' and 'test'); 'valid' is unused, as in the reference. Attribute -1/1 becomes label 0/1.
 *
 * Images are decoded once with libjpeg-turbo (TurboJPEG, exact integer IDCT so results do not
 * depend on the machine's SIMD) into uint8 CHW, in parallel with OpenMP; the whole train split is
 * about 19 GB, so train_limit is the way to use part of it on a small machine. Normalisation
 * (0.5, 0.5) per channel, as the reference. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "dataset_tasks.h"
#include "fsutil.h"

#define CELEBA_TASKS 40
#define CELEBA_H 218
#define CELEBA_W 178
#define CELEBA_NAME_MAX 64
#define CELEBA_LINE_MAX 4096
/* An aligned image is a 178x218 JPEG of about 10 KB (even uncompressed it is 116 KB): a file past
 * this is not one, and is skipped unread rather than read whole into memory (a multi-GB file given
 * where an image is expected would be read entirely before the decoder could refuse it). */
#define CELEBA_FILE_MAX ((long)64 << 20)

typedef struct celeba_entry {
    char file[CELEBA_NAME_MAX];
    int32_t attr[CELEBA_TASKS];
} celeba_entry;

/* Reads list_attr_celeba.txt and list_eval_partition.txt, keeping the entries of partition
 * `want` (up to `limit` of them when limit > 0). */
static bf_status read_lists(const char *dir, int want, int limit, celeba_entry **out, int *count) {
    char attr_path[BF_PATH_MAX + 64], part_path[BF_PATH_MAX + 64];
    snprintf(attr_path, sizeof attr_path, "%s/list_attr_celeba.txt", dir);
    snprintf(part_path, sizeof part_path, "%s/list_eval_partition.txt", dir);
    FILE *fa = fopen(attr_path, "r");
    if (!fa)
        return bf_error(BF_ERR_IO, "celeba: cannot open %s: %s; download CelebA (img_align_celeba, "
                        "list_attr_celeba.txt, list_eval_partition.txt) from "
                        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into %s or set data.path",
                        attr_path, strerror(errno), dir);
    FILE *fp = fopen(part_path, "r");
    if (!fp) {
        fclose(fa);
        return bf_error(BF_ERR_IO, "celeba: cannot open %s: %s", part_path, strerror(errno));
    }
    bf_status s = BF_OK;
    celeba_entry *entries = NULL;
    int kept = 0;
    char line[CELEBA_LINE_MAX], pline[CELEBA_LINE_MAX];
    long total = 0;
    /* Header: the count, then the 40 attribute names. */
    if (!fgets(line, sizeof line, fa) || sscanf(line, "%ld", &total) != 1 || total < 1 || total > (1L << 28)) {
        s = bf_error(BF_ERR_FORMAT, "%s:1: expected the image count (a positive integer)", attr_path);
        goto done;
    }
    if (!fgets(line, sizeof line, fa)) {
        s = bf_error(BF_ERR_FORMAT, "%s:2: expected the %d attribute names", attr_path, CELEBA_TASKS);
        goto done;
    }
    int names = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) names++;
    if (names != CELEBA_TASKS) {
        s = bf_error(BF_ERR_FORMAT, "%s:2: %d attribute names (expected %d)", attr_path, names, CELEBA_TASKS);
        goto done;
    }
    /* The entries grow as lines are read, never to the count line 1 claims: a corrupt count (up to
     * 2^28, 60 GB of entries) ends at the list's real end with the error below, not in malloc. */
    long cap = 0;
    for (long i = 0; i < total; i++) {
        long aline = i + 3, pline_no = i + 1;
        if (kept == cap) {
            long grown = cap ? 2 * cap : 1024;
            celeba_entry *p = realloc(entries, (size_t)grown * sizeof *entries);
            if (!p) {
                s = bf_error(BF_ERR_OOM, "celeba: cannot allocate %ld entries (%s:%ld)", grown, attr_path, aline);
                goto done;
            }
            entries = p, cap = grown;
        }
        if (!fgets(line, sizeof line, fa)) {
            s = bf_error(BF_ERR_FORMAT, "%s:%ld: file ends after %ld of the %ld images its first line announces",
                         attr_path, aline, i, total);
            goto done;
        }
        if (!fgets(pline, sizeof pline, fp)) {
            s = bf_error(BF_ERR_FORMAT, "%s:%ld: file ends after %ld images, %s lists %ld", part_path, pline_no, i,
                         attr_path, total);
            goto done;
        }
        celeba_entry *e = &entries[kept];
        char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save);
        if (!tok || strlen(tok) >= CELEBA_NAME_MAX || strchr(tok, '/')) {
            s = bf_error(BF_ERR_FORMAT, "%s:%ld: expected an image file name first", attr_path, aline);
            goto done;
        }
        snprintf(e->file, sizeof e->file, "%s", tok);
        for (int k = 0; k < CELEBA_TASKS; k++) {
            tok = strtok_r(NULL, " \t\r\n", &save);
            if (!tok || (strcmp(tok, "1") != 0 && strcmp(tok, "-1") != 0)) {
                s = bf_error(BF_ERR_FORMAT, "%s:%ld: attribute %d is %s%s%s (expected -1 or 1, %d values per line)",
                             attr_path, aline, k + 1, tok ? "'" : "missing", tok ? tok : "", tok ? "'" : "",
                             CELEBA_TASKS);
                goto done;
            }
            e->attr[k] = tok[0] == '1' ? 1 : 0;
        }
        if ((tok = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
            s = bf_error(BF_ERR_FORMAT, "%s:%ld: more than %d attribute values ('%s')", attr_path, aline,
                         CELEBA_TASKS, tok);
            goto done;
        }
        char pfile[CELEBA_LINE_MAX];
        int partition = -1;
        char extra;
        if (sscanf(pline, "%4095s %d %c", pfile, &partition, &extra) != 2 || partition < 0 || partition > 2) {
            s = bf_error(BF_ERR_FORMAT, "%s:%ld: expected '<image>.jpg <partition 0, 1 or 2>'", part_path, pline_no);
            goto done;
        }
        if (strcmp(pfile, e->file) != 0) {
            s = bf_error(BF_ERR_FORMAT, "%s:%ld names %s but %s:%ld names %s (the lists must be in the same order)",
                         part_path, pline_no, pfile, attr_path, aline, e->file);
            goto done;
        }
        if (partition == want && (limit <= 0 || kept < limit)) kept++;
    }
    if (fgets(line, sizeof line, fa) && strspn(line, " \t\r\n") != strlen(line)) {
        s = bf_error(BF_ERR_FORMAT, "%s:%ld: more lines than the %ld images its first line announces", attr_path,
                     total + 3, total);
        goto done;
    }
    if (kept == 0)
        s = bf_error(BF_ERR_FORMAT, "%s: no image in partition %d", part_path, want);
done:
    fclose(fa);
    fclose(fp);
    if (s != BF_OK) {
        free(entries);
        return s;
    }
    *out = entries;
    *count = kept;
    return BF_OK;
}

/* Decodes one JPEG into CHW uint8: 1 done, 0 a bad image (unreadable, over CELEBA_FILE_MAX, not a
 * JPEG, truncated, not 178x218 RGB: skipped like the loader skips one), -1 a missing file (the
 * lists and the directory disagree: an error). Messages go to `err` (the caller runs in parallel). */
static int decode_one(tjhandle tj, const char *path, uint8_t *chw, uint8_t *hwc, char *err, size_t err_cap) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_cap, "celeba: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    /* fstat's size, not fseek/ftell's: a directory named like an image opens too, and its end can
     * lie at LONG_MAX. Not a regular file is a bad image, skipped as the loaders skip one. */
    long size = bf_regular_file_size(f);
    if (size > CELEBA_FILE_MAX) {
        fclose(f);
        snprintf(err, err_cap, "celeba: %s is %ld bytes, larger than an image can be (at most %ld MiB)", path, size,
                 CELEBA_FILE_MAX >> 20);
        return 0;
    }
    unsigned char *jpeg = size > 0 ? malloc((size_t)size) : NULL;
    int ok = jpeg && fread(jpeg, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    if (!ok) {
        free(jpeg);
        if (size < 0) snprintf(err, err_cap, "celeba: cannot read %s: not a regular file", path);
        else snprintf(err, err_cap, "celeba: cannot read %s (%ld bytes)", path, size);
        return 0;
    }
    int w = 0, h = 0, subsamp = 0, colorspace = 0;
    if (tjDecompressHeader3(tj, jpeg, (unsigned long)size, &w, &h, &subsamp, &colorspace) != 0) {
        snprintf(err, err_cap, "celeba: %s is not a readable JPEG: %s", path, tjGetErrorStr2(tj));
        free(jpeg);
        return 0;
    }
    if (w != CELEBA_W || h != CELEBA_H) {
        snprintf(err, err_cap, "celeba: %s is %dx%d (expected the aligned %dx%d, width x height)", path, w, h,
                 CELEBA_W, CELEBA_H);
        free(jpeg);
        return 0;
    }
    /* TJFLAG_LIMITSCANS: a progressive file of thousands of empty scans costs seconds of CPU each;
     * past 500 it is a bad image, as jpeg_decode.c's MAX_SCANS makes it for the other JPEG loaders */
    int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;
    if (tjDecompress2(tj, jpeg, (unsigned long)size, hwc, w, 0, h, TJPF_RGB, flags) != 0) {
        snprintf(err, err_cap, "celeba: cannot decode %s: %s", path, tjGetErrorStr2(tj));
        free(jpeg);
        return 0;
    }
    free(jpeg);
    size_t plane = (size_t)w * h;
    for (size_t p = 0; p < plane; p++)
        for (int ch = 0; ch < 3; ch++) chw[ch * plane + p] = hwc[p * 3 + ch];
    return 1;
}

bf_status bf_celeba_open(const bf_data_config *cfg, bf_split split, bf_dataset **out) {
    const char *dir = cfg->path[0] ? cfg->path : "/usr/share/datasets/celeba";
    int partition = split == BF_SPLIT_TRAIN ? 0 : 2;
    celeba_entry *entries = NULL;
    int n = 0;
    BF_TRY(read_lists(dir, partition, split == BF_SPLIT_TRAIN ? cfg->train_limit : cfg->test_limit, &entries, &n));

    size_t sample = (size_t)3 * CELEBA_H * CELEBA_W;
    bf_dataset *d = calloc(1, sizeof *d);
    if (d) {
        d->pixels = malloc((size_t)n * sample);
        d->labels = malloc((size_t)n * sizeof *d->labels);
        d->task_labels = malloc((size_t)n * CELEBA_TASKS * sizeof *d->task_labels);
    }
    if (!d || !d->pixels || !d->labels || !d->task_labels) {
        free(entries);
        bf_dataset_free(d);
        return bf_error(BF_ERR_OOM, "celeba: cannot hold %d images (%.1f GB) in memory; set data.train_limit / "
                        "data.test_limit", n, (double)n * sample / 1e9);
    }
    snprintf(d->name, sizeof d->name, "celeba");
    d->split = split;
    d->num_samples = n;
    d->c = 3, d->h = CELEBA_H, d->w = CELEBA_W;
    d->num_tasks = CELEBA_TASKS;
    d->task_classes = d->num_classes = 2;
    for (int ch = 0; ch < 3; ch++) d->mean[ch] = 0.5f, d->std[ch] = 0.5f;
    for (int i = 0; i < n; i++) {
        memcpy(d->task_labels + (size_t)i * CELEBA_TASKS, entries[i].attr, sizeof entries[i].attr);
        d->labels[i] = entries[i].attr[0];
    }

    /* Decode in parallel. A bad image is left out and warned about (DESIGN: a corrupt image never
     * stops a run); a missing file or no decoder is an error, the lowest index reported. */
    int *status = calloc((size_t)n + 1, sizeof *status);
    char **errors = calloc((size_t)n + 1, sizeof *errors); /* a copy of each failure's message */
    int failed_at = n;
    char first_error[BF_PATH_MAX + 256] = "";
    if (!status || !errors) {
        free(status);
        free(errors);
        free(entries);
        bf_dataset_free(d);
        return bf_error(BF_ERR_OOM, "celeba: out of memory");
    }
#pragma omp parallel
    {
        tjhandle tj = tjInitDecompress();
        uint8_t *hwc = malloc(sample);
        char err[BF_PATH_MAX + 256], path[BF_PATH_MAX + 128];
#pragma omp for schedule(dynamic, 16)
        for (int i = 0; i < n; i++) {
            if (!tj || !hwc) {
                snprintf(err, sizeof err, "celeba: cannot create a JPEG decoder");
                status[i] = -1;
            } else {
                snprintf(path, sizeof path, "%s/img_align_celeba/%s", dir, entries[i].file);
                status[i] = decode_one(tj, path, d->pixels + (size_t)i * sample, hwc, err, sizeof err);
            }
            if (status[i] == 0 && (errors[i] = malloc(strlen(err) + 1))) memcpy(errors[i], err, strlen(err) + 1);
            if (status[i] < 0) {
#pragma omp critical(celeba_error)
                if (i < failed_at) {
                    failed_at = i;
                    snprintf(first_error, sizeof first_error, "%s", err);
                }
            }
        }
        free(hwc);
        if (tj) tjDestroy(tj);
    }
    free(entries);
    if (failed_at < n) {
        for (int i = 0; i < n; i++) free(errors[i]);
        free(status);
        free(errors);
        bf_dataset_free(d);
        return bf_error(BF_ERR_FORMAT, "%s", first_error);
    }
    /* Keep the good images in order: samples, labels and task labels move down together. */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (status[i] == 0) {
            fprintf(stderr, "warning: skipping image (%s)\n", errors[i] ? errors[i] : "celeba: unreadable");
            free(errors[i]);
            continue;
        }
        if (kept != i) {
            memmove(d->pixels + (size_t)kept * sample, d->pixels + (size_t)i * sample, sample);
            memmove(d->task_labels + (size_t)kept * CELEBA_TASKS, d->task_labels + (size_t)i * CELEBA_TASKS,
                    CELEBA_TASKS * sizeof *d->task_labels);
            d->labels[kept] = d->labels[i];
        }
        kept++;
    }
    free(status);
    free(errors);
    d->skipped_images = n - kept;
    d->num_samples = kept;
    if (d->skipped_images > 0)
        fprintf(stderr, "warning: celeba %s: %d of %d images unreadable, left out\n",
                split == BF_SPLIT_TRAIN ? "train" : "test", d->skipped_images, n);
    if (kept == 0 && n > 0) {
        bf_dataset_free(d);
        return bf_error(BF_ERR_FORMAT, "celeba: none of the %d %s images in %s/img_align_celeba could be decoded", n,
                        split == BF_SPLIT_TRAIN ? "train" : "test", dir);
    }
    *out = d;
    return BF_OK;
}
