/* test_ilsvrc_val.c - dataset = imagenet with ILSVRC's official flat val/ and [data] val_labels
 * (LOC_val_solution.csv), on a tiny generated tree:
 *   - the labels of the flat images come from the first WNID of their PredictionString, the classes
 *     from train/'s folders (or a class list), and the files are in name order;
 *   - a class list leaves the other classes' validation images out;
 *   - an image missing from the CSV, a malformed line, a class without validation images and
 *     val_labels with another dataset are refused with messages naming what is wrong. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bioflex/data.h"
#include "bioflex/image.h"
#include "testutil.h"

static char root[] = "/tmp/bioflex_ilsvrc_XXXXXX";

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void write_jpeg(const char *path, int shade) {
    static uint8_t px[16 * 12 * 3];
    memset(px, shade, sizeof px);
    CHECK_OK(bf_jpeg_write(path, px, 16, 12, 3, 90, 0));
}

static void make_tree(void) {
    char p[256];
    const char *wnids[3] = {"n01440764", "n01443537", "n01484850"};
    snprintf(p, sizeof p, "%s/train", root);
    mkdir(p, 0755);
    for (int c = 0; c < 3; c++) {
        snprintf(p, sizeof p, "%s/train/%s", root, wnids[c]);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/train/%s/%s_1.JPEG", root, wnids[c], wnids[c]);
        write_jpeg(p, 40 * c);
    }
    snprintf(p, sizeof p, "%s/val", root);
    mkdir(p, 0755);
    for (int i = 1; i <= 4; i++) {
        snprintf(p, sizeof p, "%s/val/ILSVRC2012_val_%08d.JPEG", root, i);
        write_jpeg(p, 30 * i);
    }
    snprintf(p, sizeof p, "%s/LOC_val_solution.csv", root);
    write_text(p, "ImageId,PredictionString\n"
                  "ILSVRC2012_val_00000003,n01484850 1 2 3 4 n01484850 5 6 7 8\n"
                  "ILSVRC2012_val_00000001,n01443537 0 0 10 10\n"
                  "ILSVRC2012_val_00000004,n01443537 0 0 10 10\n"
                  "ILSVRC2012_val_00000002,n01440764 0 0 10 10\n");
    snprintf(p, sizeof p, "%s/three.txt", root);
    write_text(p, "n01440764\nn01443537\nn01484850\n");
    snprintf(p, sizeof p, "%s/two.txt", root);
    write_text(p, "# the first two\nn01443537\nn01440764\n");
}

static bf_data_config config(const char *class_list, const char *csv) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.data.dataset = BF_DATASET_IMAGENET;
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", root);
    snprintf(cfg.data.class_list, sizeof cfg.data.class_list, "%s/%s", root, class_list);
    snprintf(cfg.data.val_labels, sizeof cfg.data.val_labels, "%s/%s", root, csv);
    return cfg.data;
}

static void expect_error(const bf_data_config *cfg, const char *needle, const char *what) {
    bf_dataset *d = NULL;
    bf_status st = bf_dataset_open(cfg, 1, BF_SPLIT_TEST, &d);
    CHECK(st != BF_OK && d == NULL && strstr(bf_last_error(), needle), "%s: refused naming '%s' (got: %s)", what, needle,
          st == BF_OK ? "no error" : bf_last_error());
    bf_dataset_free(d);
}

int main(void) {
    if (!mkdtemp(root)) return 1;
    make_tree();
    char p[256];

    /* all three classes: labels from the CSV, files in name order */
    bf_data_config cfg = config("three.txt", "LOC_val_solution.csv");
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &d));
    if (d) {
        const int want[4] = {1, 0, 2, 1}; /* val 1..4: n01443537, n01440764, n01484850, n01443537 */
        CHECK(d->num_samples == 4 && d->num_classes == 3, "4 validation images of 3 classes, got %d of %d",
              d->num_samples, d->num_classes);
        for (int i = 0; i < 4 && i < d->num_samples; i++) {
            snprintf(p, sizeof p, "ILSVRC2012_val_%08d.JPEG", i + 1);
            CHECK(d->labels[i] == want[i] && strstr(d->files->paths[i], p), "val image %d: label %d (want %d), %s", i + 1,
                  d->labels[i], want[i], d->files->paths[i]);
        }
    }
    bf_dataset_free(d);

    /* a class list of two, in its own order: n01443537 = 0, n01440764 = 1; image 3 left out */
    cfg = config("two.txt", "LOC_val_solution.csv");
    d = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &d));
    if (d) {
        CHECK(d->num_samples == 3 && d->num_classes == 2, "class list of 2: 3 images, got %d", d->num_samples);
        CHECK(d->num_samples == 3 && d->labels[0] == 0 && d->labels[1] == 1 && d->labels[2] == 0,
              "class-list labels 0 1 0");
    }
    bf_dataset_free(d);

    /* the training split is untouched by val_labels */
    d = NULL;
    cfg = config("three.txt", "LOC_val_solution.csv");
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &d));
    CHECK(d && d->num_samples == 3, "train/: one image per class");
    bf_dataset_free(d);

    /* errors */
    snprintf(p, sizeof p, "%s/missing.csv", root);
    write_text(p, "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 0 0 1 1\n");
    cfg = config("three.txt", "missing.csv");
    expect_error(&cfg, "ILSVRC2012_val_00000002.JPEG has no line", "an image without a CSV line");
    snprintf(p, sizeof p, "%s/bad.csv", root);
    write_text(p, "ImageId,PredictionString\nILSVRC2012_val_00000001 n01443537\n");
    cfg = config("three.txt", "bad.csv");
    expect_error(&cfg, "bad.csv:2: expected ImageId,PredictionString", "a line without a comma");
    snprintf(p, sizeof p, "%s/noclass.csv", root);
    write_text(p, "ILSVRC2012_val_00000001,n01443537\nILSVRC2012_val_00000002,n01440764\n"
                  "ILSVRC2012_val_00000003,n01440764\nILSVRC2012_val_00000004,n01443537\n");
    cfg = config("three.txt", "noclass.csv");
    expect_error(&cfg, "class n01484850 (label 2) has no validation image", "a class without validation images");
    snprintf(p, sizeof p, "%s/twice.csv", root);
    write_text(p, "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 0 0 1 1\n"
                  "ILSVRC2012_val_00000002,n01440764 0 0 1 1\nILSVRC2012_val_00000001,n01484850 0 0 1 1\n");
    cfg = config("three.txt", "twice.csv");
    expect_error(&cfg, "twice.csv: ImageId ILSVRC2012_val_00000001 is on two lines", "an image with two labels");
    cfg = config("three.txt", "LOC_val_solution.csv");
    cfg.dataset = BF_DATASET_IMAGEFOLDER;
    expect_error(&cfg, "val_labels is for dataset = imagenet", "val_labels with imagefolder");

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return bf_test_finish();
}
