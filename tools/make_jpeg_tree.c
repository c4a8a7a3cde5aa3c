/* make_jpeg_tree.c - writes a synthetic ImageNet-like tree of JPEGs (bioflex-make-jpeg-tree).
 *
 *   bioflex-make-jpeg-tree ROOT [--layout imagefolder|kaggle|tinyimagenet] [--classes N] [--train N] [--val N]
 *                          [--size WxH] [--quality Q] [--no-edge-cases] [--seed S]
 *
 * imagefolder writes ROOT/train/class_NNN/ and ROOT/val/class_NNN/; kaggle writes the ImageNet-100
 * Kaggle layout (train.X1, train.X2, val.X, Labels.json); tinyimagenet writes Tiny-ImageNet's own
 * (train/<wnid>/images/, val/images/ with val/val_annotations.txt, 64x64 images). By default
 * images have realistic mixed sizes (mostly 500x375) at quality 90, and class 0 of train holds the
 * 8 edge-case files (gray, CMYK, YCCK, progressive, and 4 undecodable ones: PNG, truncated,
 * corrupt, empty). See jpeg_synth.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/image.h"

static int usage(void) {
    fprintf(stderr, "usage: bioflex-make-jpeg-tree ROOT [--layout imagefolder|kaggle|tinyimagenet] [--classes N] [--train N] "
                    "[--val N] [--size WxH] [--quality Q] [--no-edge-cases] [--seed S]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') return usage();
    bf_jpeg_synth_options o = {.layout = BF_SYNTH_IMAGEFOLDER, .classes = 10, .train_per_class = 20,
                               .val_per_class = 5, .quality = 90, .edge_cases = 1, .seed = 1,
                               .progress = isatty(fileno(stderr))}; /* redrawn in place: a terminal's only */
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-edge-cases") == 0) { o.edge_cases = 0; continue; }
        if (!v) return usage();
        i++;
        if (strcmp(a, "--layout") == 0) {
            if (strcmp(v, "imagefolder") == 0) o.layout = BF_SYNTH_IMAGEFOLDER;
            else if (strcmp(v, "kaggle") == 0) o.layout = BF_SYNTH_KAGGLE;
            else if (strcmp(v, "tinyimagenet") == 0) o.layout = BF_SYNTH_TINYIMAGENET;
            else { fprintf(stderr, "--layout %s (allowed: imagefolder, kaggle, tinyimagenet)\n", v); return 2; }
        } else if (strcmp(a, "--classes") == 0) o.classes = atoi(v);
        else if (strcmp(a, "--train") == 0) o.train_per_class = atoi(v);
        else if (strcmp(a, "--val") == 0) o.val_per_class = atoi(v);
        else if (strcmp(a, "--quality") == 0) o.quality = atoi(v);
        else if (strcmp(a, "--seed") == 0) o.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--size") == 0) {
            if (sscanf(v, "%dx%d", &o.width, &o.height) != 2 || o.width < 8 || o.height < 8 || o.width > 2048 ||
                o.height > 2048) { fprintf(stderr, "--size %s (expected WxH, 8..2048)\n", v); return 2; }
        } else return usage();
    }
    if (o.quality < 1 || o.quality > 100) { fprintf(stderr, "--quality %d (allowed 1..100)\n", o.quality); return 2; }
    if (bf_jpeg_synth_tree(argv[1], &o) != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return 1;
    }
    return 0;
}
