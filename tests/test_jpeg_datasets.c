/* test_jpeg_datasets.c - [data] subset on the JPEG datasets, and Tiny-ImageNet's own layout.
 *
 * Small synthetic trees (bf_jpeg_synth_tree, the generator behind bioflex-make-jpeg-tree) are
 * written to a fresh /tmp directory:
 *   - an ImageFolder tree of 4 classes (6 training and 3 validation images each): a balanced subset
 *     keeps exactly subset_size per class, the very files the stored datasets' rule picks (the same
 *     seed derivation and partial Fisher-Yates, recomputed here), in their original order; another
 *     seed picks others; a random subset keeps N; a subset is drawn from what train_limit kept;
 *     too-small classes and oversized subsets are refused with the stored datasets' messages; the
 *     checkpoint's data phrase names the subset;
 *   - a Tiny-ImageNet tree (train/<wnid>/images/, val/images/ + val/val_annotations.txt): classes
 *     are train/'s sorted WNIDs, validation labels map through them, a class list selects and
 *     orders, a missing annotation or a malformed line is refused, and a Tiny-ImageNet-C cell
 *     (<wnid>/*.JPEG, as [data] val_dir) gets the same labels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bioflex/checkpoint.h"
#include "bioflex/data.h"
#include "bioflex/hash.h"
#include "bioflex/image.h"
#include "fsutil.h"
#include "testutil.h"

#define CLASSES 4
#define TRAIN_PER_CLASS 6
#define VAL_PER_CLASS 3

static char root[256];

static void set(bf_config *cfg, const char *fmt, const char *arg) {
    char a[700];
    snprintf(a, sizeof a, fmt, arg);
    CHECK_OK(bf_config_set(cfg, a));
}

/* The imagefolder config of the tree under root/<sub>, 16-pixel images. */
static void config_for(bf_config *cfg, const char *sub) {
    char path[400];
    bf_config_defaults(cfg);
    snprintf(path, sizeof path, "%s/%s", root, sub);
    set(cfg, "data.dataset = %s", "imagefolder");
    set(cfg, "data.path = %s", path);
    set(cfg, "data.image_size = %s", "16");
}

static bf_dataset *open_split(const bf_config *cfg, bf_split split) {
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg->data, 1, split, &d));
    return d;
}

/* The class of a generated ImageFolder file, from its folder's name class_NNN (-1 if none). */
static int path_class(const char *path) {
    const char *p = strstr(path, "class_");
    return p ? atoi(p + 6) : -1;
}

/* The indices the stored datasets' rule keeps of a split whose labels are `labels` (dataset.c
 * apply_subset: per class, a partial Fisher-Yates of its indices from bf_seed_derive(bf_seed_derive(
 * subset_seed, BF_STREAM_SUBSET, split), BF_STREAM_SUBSET, class); sorted). Returns the count. */
static int expected_balanced(const int32_t *labels, int n, int classes, int per_class, long subset_seed, bf_split split,
                             int *keep) {
    uint64_t seed = bf_seed_derive((uint64_t)subset_seed, BF_STREAM_SUBSET, (uint64_t)split);
    int kept = 0, cand[256];
    for (int c = 0; c < classes; c++) {
        int count = 0;
        for (int i = 0; i < n; i++)
            if (labels[i] == c) cand[count++] = i;
        uint64_t class_seed = bf_seed_derive(seed, BF_STREAM_SUBSET, (uint64_t)c);
        for (int i = 0; i < per_class; i++) {
            int j = i + (int)(bf_uniform(class_seed, (uint64_t)i) * (double)(count - i));
            if (j >= count) j = count - 1;
            int t = cand[i];
            cand[i] = cand[j];
            cand[j] = t;
        }
        for (int i = 0; i < per_class; i++) keep[kept++] = cand[i];
    }
    for (int i = 1; i < kept; i++) /* insertion sort: the original order */
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    return kept;
}

/* Whether the samples' paths are in strictly increasing order (the original order: class by class,
 * each folder sorted, with the class names sorted too). */
static int paths_ascending(const bf_dataset *d) {
    for (int i = 1; i < d->num_samples; i++)
        if (strcmp(d->files->paths[i - 1], d->files->paths[i]) >= 0) return 0;
    return 1;
}

static void test_subsets(void) {
    bf_config cfg;
    config_for(&cfg, "if");
    bf_dataset *full = open_split(&cfg, BF_SPLIT_TRAIN);
    if (!full) return;
    CHECK(full->num_samples == CLASSES * TRAIN_PER_CLASS, "the whole training split: %d images", full->num_samples);

    /* balanced, 2 per class, seed 42: the stored datasets' rule, which the config check now allows */
    set(&cfg, "data.subset = %s", "balanced");
    set(&cfg, "data.subset_size = %s", "2");
    set(&cfg, "data.subset_seed = %s", "42");
    CHECK(bf_config_validate(&cfg) == BF_OK, "subset with dataset = imagefolder validates: %s", bf_last_error());
    bf_dataset *a = open_split(&cfg, BF_SPLIT_TRAIN), *b = open_split(&cfg, BF_SPLIT_TRAIN);
    int keep[64];
    int want = expected_balanced(full->labels, full->num_samples, CLASSES, 2, 42, BF_SPLIT_TRAIN, keep);
    if (a && b) {
        CHECK(a->num_samples == CLASSES * 2 && want == CLASSES * 2, "balanced 2 per class: %d images (want %d)",
              a->num_samples, CLASSES * 2);
        int per_class[CLASSES] = {0}, match = 1, same = a->num_samples == b->num_samples, consistent = 1;
        for (int i = 0; i < a->num_samples && i < want; i++) {
            if (a->labels[i] >= 0 && a->labels[i] < CLASSES) per_class[a->labels[i]]++;
            match &= strcmp(a->files->paths[i], full->files->paths[keep[i]]) == 0 && a->labels[i] == full->labels[keep[i]];
            same &= strcmp(a->files->paths[i], b->files->paths[i]) == 0;
            consistent &= path_class(a->files->paths[i]) == a->labels[i];
        }
        for (int c = 0; c < CLASSES; c++) CHECK(per_class[c] == 2, "class %d: %d images in the subset (want 2)", c, per_class[c]);
        CHECK(match, "the subset is the stored datasets' choice for seed 42 (first kept: %s)", a->files->paths[0]);
        CHECK(paths_ascending(a), "the kept files keep their original order");
        CHECK(consistent, "every kept file keeps its own label");
        CHECK(same, "the same subset_seed keeps the same files");
        /* The checkpoint's data phrase names the subset (a resume under another one is refused). */
        char phrase[192];
        bf_resume_describe_data(a->name, a->num_samples, 4, &cfg.data, phrase, sizeof phrase);
        CHECK(strcmp(phrase, "imagefolder, 8 training samples in global batches of 4, balanced subset of 2 per class "
                             "from seed 42") == 0, "data metadata: %s", phrase);
    }
    bf_dataset_free(b);
    set(&cfg, "data.subset_seed = %s", "43");
    b = open_split(&cfg, BF_SPLIT_TRAIN);
    if (a && b) {
        int differ = 0;
        for (int i = 0; i < a->num_samples && i < b->num_samples; i++)
            differ += strcmp(a->files->paths[i], b->files->paths[i]) != 0;
        int keep43[64];
        int n43 = expected_balanced(full->labels, full->num_samples, CLASSES, 2, 43, BF_SPLIT_TRAIN, keep43), match = 1;
        for (int i = 0; i < b->num_samples && i < n43; i++)
            match &= strcmp(b->files->paths[i], full->files->paths[keep43[i]]) == 0;
        CHECK(b->num_samples == CLASSES * 2 && differ > 0 && match, "seed 43 keeps other files (%d of 8 differ)", differ);
    }
    bf_dataset_free(a);
    bf_dataset_free(b);

    /* The validation split is drawn the same way, from its own stream; a class smaller than
     * subset_size is refused naming it. */
    bf_dataset *val = open_split(&cfg, BF_SPLIT_TEST);
    if (val) {
        int per_class[CLASSES] = {0};
        for (int i = 0; i < val->num_samples; i++) per_class[val->labels[i]]++;
        CHECK(val->num_samples == CLASSES * 2 && per_class[0] == 2 && per_class[CLASSES - 1] == 2 && paths_ascending(val),
              "validation: balanced 2 of 3 per class, %d images", val->num_samples);
    }
    bf_dataset_free(val);
    /* 4 more validation images in class 0 (7, 3, 3, 3): 16 in all, enough for 4 per class but for
     * class 1 */
    uint8_t px[8 * 8 * 3];
    memset(px, 90, sizeof px);
    for (int i = 0; i < 4; i++) {
        char extra[400];
        snprintf(extra, sizeof extra, "%s/if/val/class_000/extra_%d.JPEG", root, i);
        CHECK_OK(bf_jpeg_write(extra, px, 8, 8, 3, 90, 0));
    }
    set(&cfg, "data.subset_size = %s", "4");
    bf_dataset *d = NULL;
    CHECK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TEST, &d) == BF_ERR_CONFIG && !d &&
              strstr(bf_last_error(), "[data] subset = balanced: class 1 has 3 samples, subset_size = 4"),
          "a class below subset_size is refused: %s", bf_last_error());

    /* random: N in all, in their original order, each file once */
    set(&cfg, "data.subset = %s", "random");
    set(&cfg, "data.subset_size = %s", "5");
    a = open_split(&cfg, BF_SPLIT_TRAIN);
    b = open_split(&cfg, BF_SPLIT_TRAIN);
    if (a && b) {
        int same = a->num_samples == b->num_samples, consistent = 1;
        for (int i = 0; i < a->num_samples && same; i++) same &= strcmp(a->files->paths[i], b->files->paths[i]) == 0;
        for (int i = 0; i < a->num_samples; i++) consistent &= path_class(a->files->paths[i]) == a->labels[i];
        CHECK(a->num_samples == 5 && paths_ascending(a) && consistent, "random 5: %d images, in order, labelled",
              a->num_samples);
        CHECK(same, "random: the same seed keeps the same files");
    }
    bf_dataset_free(a);
    bf_dataset_free(b);
    set(&cfg, "data.subset_size = %s", "25");
    CHECK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d) == BF_ERR_CONFIG && !d &&
              strstr(bf_last_error(), "[data] subset_size = 25 asks for 25 samples, the train split of imagefolder has 24"),
          "a random subset larger than the split is refused: %s", bf_last_error());

    /* Limit first, then subset (as the stored datasets): train_limit = 12 keeps every other file
     * (_00000, _00002, _00004 of each class), and the balanced subset is drawn from those. */
    set(&cfg, "data.train_limit = %s", "12");
    set(&cfg, "data.subset = %s", "none");
    bf_dataset *limited = open_split(&cfg, BF_SPLIT_TRAIN);
    set(&cfg, "data.subset = %s", "balanced");
    set(&cfg, "data.subset_size = %s", "2");
    set(&cfg, "data.subset_seed = %s", "42");
    a = open_split(&cfg, BF_SPLIT_TRAIN);
    if (limited && a) {
        want = expected_balanced(limited->labels, limited->num_samples, CLASSES, 2, 42, BF_SPLIT_TRAIN, keep);
        int match = a->num_samples == want, odd = 0;
        for (int i = 0; i < a->num_samples && i < want; i++) {
            match &= strcmp(a->files->paths[i], limited->files->paths[keep[i]]) == 0;
            odd += strstr(a->files->paths[i], "1.JPEG") || strstr(a->files->paths[i], "3.JPEG") ||
                   strstr(a->files->paths[i], "5.JPEG");
        }
        CHECK(limited->num_samples == 12 && a->num_samples == CLASSES * 2 && match && odd == 0,
              "train_limit 12 then balanced 2: %d images, drawn from the limit's (%d outside it)", a->num_samples, odd);
    }
    bf_dataset_free(limited);
    bf_dataset_free(a);
    set(&cfg, "data.subset_size = %s", "4");
    CHECK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d) == BF_ERR_CONFIG && !d &&
              strstr(bf_last_error(), "[data] subset_size = 4 asks for 16 samples, the train split of imagefolder has 12"),
          "the limit leaves 12, so balanced 4 per class is refused: %s", bf_last_error());
    bf_dataset_free(full);

    /* the other JPEG datasets pass the config check; generated data still does not */
    set(&cfg, "data.train_limit = %s", "0");
    set(&cfg, "data.dataset = %s", "imagenet100");
    CHECK(bf_config_validate(&cfg) == BF_OK, "subset with imagenet100 validates: %s", bf_last_error());
    set(&cfg, "data.dataset = %s", "imagenet");
    CHECK(bf_config_validate(&cfg) == BF_OK, "subset with imagenet validates: %s", bf_last_error());
}

/* The WNID val_annotations.txt gives a file (its second tab-separated field), read here on its own. */
static int annotated_wnid(const char *annotations, const char *file, char *wnid, size_t size) {
    FILE *f = fopen(annotations, "r");
    char line[256];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) {
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = '\0';
        if (strcmp(line, file) != 0) continue;
        tab[1 + strcspn(tab + 1, "\t\n")] = '\0';
        snprintf(wnid, size, "%s", tab + 1);
        found = 1;
    }
    if (f) fclose(f);
    return found;
}

static void test_tiny_imagenet(void) {
    bf_config cfg;
    config_for(&cfg, "tiny");
    char annotations[400];
    snprintf(annotations, sizeof annotations, "%s/tiny/val/val_annotations.txt", root);
    /* The generator numbers class c's WNID n0000(1000 + 2 - c): train/'s sorted order reverses it. */
    const char *wnids[3] = {"n00001000", "n00001001", "n00001002"};
    CHECK(bf_image_class_count(&cfg.data) == 3, "--dry-run counts 3 classes");

    bf_dataset *d = open_split(&cfg, BF_SPLIT_TRAIN);
    if (d) {
        int ok = d->num_classes == 3 && d->num_samples == 3 * 4;
        CHECK(ok, "train/<wnid>/images/: %d classes, %d images (want 3, 12)", d->num_classes, d->num_samples);
        for (int c = 0; c < d->num_classes && c < 3; c++)
            CHECK(strcmp(d->files->class_names[c], wnids[c]) == 0, "class %d is %s (want %s: sorted WNIDs)", c,
                  d->files->class_names[c], wnids[c]);
        int labelled = 1;
        for (int i = 0; i < d->num_samples; i++) {
            char want[64];
            snprintf(want, sizeof want, "/train/%s/images/%s_", wnids[i / 4], wnids[i / 4]);
            labelled &= d->labels[i] == i / 4 && strstr(d->files->paths[i], want) != NULL;
        }
        CHECK(labelled, "training images in class order, from images/ (first %s)", d->files->paths[0]);
        bf_image_worker w;
        float pixels[3 * 16 * 16];
        CHECK_OK(bf_image_worker_init(&w, 16));
        CHECK_OK(bf_image_load_sample(d, 5, 1, &w, pixels));
        bf_image_worker_free(&w);
    }
    bf_dataset_free(d);

    /* val/images/ in name order, labelled by val_annotations.txt through train/'s WNIDs: val_k is
     * image k / 3 of generated class k % 3, whose WNID sorts to label 2 - k % 3. */
    d = open_split(&cfg, BF_SPLIT_TEST);
    if (d) {
        CHECK(d->num_classes == 3 && d->num_samples == 6, "val/images/: %d classes, %d images (want 3, 6)",
              d->num_classes, d->num_samples);
        for (int i = 0; i < d->num_samples && i < 6; i++) {
            char file[32], wnid[32] = "";
            snprintf(file, sizeof file, "val_%d.JPEG", i);
            int annotated = annotated_wnid(annotations, file, wnid, sizeof wnid);
            const char *base = strrchr(d->files->paths[i], '/');
            CHECK(base && strcmp(base + 1, file) == 0 && strstr(d->files->paths[i], "/val/images/"),
                  "validation image %d is %s (want val/images/%s)", i, d->files->paths[i], file);
            CHECK(d->labels[i] == 2 - i % 3 && annotated && strcmp(d->files->class_names[d->labels[i]], wnid) == 0,
                  "%s: label %d (want %d, annotated %s)", file, d->labels[i], 2 - i % 3, wnid);
        }
    }
    bf_dataset_free(d);

    /* A subset of it: one per class. */
    set(&cfg, "data.subset = %s", "balanced");
    set(&cfg, "data.subset_size = %s", "1");
    d = open_split(&cfg, BF_SPLIT_TEST);
    if (d) CHECK(d->num_samples == 3 && d->labels[0] != d->labels[1] && d->labels[1] != d->labels[2] &&
                     d->labels[0] != d->labels[2], "balanced 1 of Tiny-ImageNet's val: %d images", d->num_samples);
    bf_dataset_free(d);
    set(&cfg, "data.subset = %s", "none");

    /* A class list selects and orders: the other class's validation images are left out. */
    char list[400];
    snprintf(list, sizeof list, "%s/tiny_two.txt", root);
    FILE *f = fopen(list, "w");
    if (f) {
        fprintf(f, "n00001002\nn00001000\n");
        fclose(f);
    }
    set(&cfg, "data.class_list = %s", list);
    d = open_split(&cfg, BF_SPLIT_TEST);
    if (d) {
        /* val_0 (n00001002), val_2 (n00001000), val_3 (n00001002), val_5 (n00001000) */
        CHECK(d->num_classes == 2 && d->num_samples == 4 && d->labels[0] == 0 && d->labels[1] == 1 &&
                  d->labels[2] == 0 && d->labels[3] == 1 && strstr(d->files->paths[1], "/val_2.JPEG"),
              "class list of 2: %d images, labels %d %d %d %d", d->num_samples, d->labels[0], d->labels[1],
              d->num_samples > 2 ? d->labels[2] : -1, d->num_samples > 3 ? d->labels[3] : -1);
    }
    bf_dataset_free(d);
    set(&cfg, "data.class_list = %s", "");

    /* A Tiny-ImageNet-C cell (<corruption>/<severity>/<wnid>/*.JPEG) as val_dir: the classes stay
     * train/'s. The cell's class folders are links to train's images/ (in reversed creation order). */
    char cell[400], link_path[500], target[500];
    snprintf(cell, sizeof cell, "%s/tiny_c/blur/1", root);
    CHECK_OK(bf_mkdir_p(cell));
    for (int c = 2; c >= 0; c--) {
        snprintf(target, sizeof target, "%s/tiny/train/%s/images", root, wnids[c]);
        snprintf(link_path, sizeof link_path, "%s/%s", cell, wnids[c]);
        CHECK(symlink(target, link_path) == 0, "link %s", link_path);
    }
    set(&cfg, "data.val_dir = %s", cell);
    d = open_split(&cfg, BF_SPLIT_TEST);
    if (d) {
        int labelled = d->num_samples == 12;
        for (int i = 0; i < d->num_samples; i++) labelled &= d->labels[i] == i / 4 && strstr(d->files->paths[i], wnids[i / 4]);
        CHECK(d->num_classes == 3 && labelled, "Tiny-ImageNet-C cell: %d images of %d classes in WNID order",
              d->num_samples, d->num_classes);
    }
    bf_dataset_free(d);
    set(&cfg, "data.val_dir = %s", "");

    /* A WNID that train/ lacks has no label: refused naming the line and train/, unless a class
     * list selects the classes (then its images are left out like any unselected class's). */
    char *saved = NULL;
    CHECK_OK(bf_read_file_text(annotations, &saved));
    f = fopen(annotations, "a");
    if (f) {
        fprintf(f, "val_50.JPEG\tn09999999\t0\t0\t63\t63\n");
        fclose(f);
    }
    char want_message[700];
    snprintf(want_message, sizeof want_message, "val_annotations.txt:7: WNID n09999999 is not a class folder of %s/tiny/train",
             root);
    d = NULL;
    CHECK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TEST, &d) == BF_ERR_FORMAT && !d && strstr(bf_last_error(), want_message),
          "an annotated WNID that train/ lacks: %s", bf_last_error());
    set(&cfg, "data.class_list = %s", list);
    d = open_split(&cfg, BF_SPLIT_TEST);
    CHECK(d && d->num_samples == 4, "with a class list, the unknown WNID's line is left out (%d images)",
          d ? d->num_samples : -1);
    bf_dataset_free(d);
    set(&cfg, "data.class_list = %s", "");
    f = fopen(annotations, "w");
    if (f && saved) fputs(saved, f);
    if (f) fclose(f);
    free(saved);

    /* An image without an annotation line, and a line that is not tab-separated, are refused. */
    char extra[400];
    snprintf(extra, sizeof extra, "%s/tiny/val/images/val_99.JPEG", root);
    uint8_t px[8 * 8 * 3];
    memset(px, 128, sizeof px);
    CHECK_OK(bf_jpeg_write(extra, px, 8, 8, 3, 90, 0));
    d = NULL;
    CHECK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TEST, &d) == BF_ERR_FORMAT && !d &&
              strstr(bf_last_error(), "val/images/val_99.JPEG has no line in ") &&
              strstr(bf_last_error(), "val_annotations.txt"),
          "an image without an annotation: %s", bf_last_error());
    remove(extra);
    f = fopen(annotations, "a");
    if (f) {
        fprintf(f, "val_7.JPEG n00001000 0 0 63 63\n");
        fclose(f);
    }
    CHECK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TEST, &d) == BF_ERR_FORMAT && !d &&
              strstr(bf_last_error(), "val_annotations.txt:7: expected file<TAB>WNID<TAB>box"),
          "a line without tabs: %s", bf_last_error());
}

/* Opens the split and expects `want` with a message holding `needle`. */
static void expect_error(const bf_config *cfg, bf_split split, bf_status want, const char *needle, const char *what) {
    bf_dataset *d = NULL;
    bf_status st = bf_dataset_open(&cfg->data, 1, split, &d);
    CHECK(st == want && !d && strstr(bf_last_error(), needle), "%s: expected %s naming '%s', got %s: %s", what,
          bf_status_name(want), needle, bf_status_name(st), st == BF_OK ? "(opened)" : bf_last_error());
    bf_dataset_free(d);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "create %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* The test split's labels are train/'s classes, by folder name: a val/ without one class is not
 * shifted onto the next labels (it is refused: a class without validation images), a val/ (or
 * val_dir) folder that train/ lacks is refused naming it and train/, and a class list leaves such a
 * folder out like any class it does not select. */
static void test_val_labels_by_name(void) {
    char tree[300], path[500], needle[700];
    snprintf(tree, sizeof tree, "%s/byname", root);
    bf_jpeg_synth_options o = {.layout = BF_SYNTH_IMAGEFOLDER, .classes = CLASSES, .train_per_class = 2,
                               .val_per_class = 2, .width = 16, .height = 12, .quality = 90, .seed = 7};
    CHECK_OK(bf_jpeg_synth_tree(tree, &o));
    bf_config cfg;
    config_for(&cfg, "byname");
    bf_dataset *d = open_split(&cfg, BF_SPLIT_TEST);
    if (d) {
        int consistent = d->num_samples == CLASSES * 2 && d->num_classes == CLASSES;
        for (int i = 0; i < d->num_samples; i++) consistent &= path_class(d->files->paths[i]) == d->labels[i];
        CHECK(consistent, "val/class_NNN is labelled NNN (%d images of %d classes)", d->num_samples, d->num_classes);
    }
    bf_dataset_free(d);

    /* val/class_001 removed: class_002 was labelled 1 (and scored 0 %); now refused, naming it. */
    snprintf(path, sizeof path, "%s/val/class_001", tree);
    CHECK_OK(bf_remove_tree(path));
    snprintf(needle, sizeof needle, "imagefolder: class class_001 (label 1) has no folder in %s/val", tree);
    expect_error(&cfg, BF_SPLIT_TEST, BF_ERR_IO, needle, "val/ without class_001");
    CHECK_OK(bf_remove_tree(tree));
    CHECK_OK(bf_jpeg_synth_tree(tree, &o));

    /* An extra val/class_009: it trained an epoch and then failed on "label 4 outside [0, 4)". */
    uint8_t px[8 * 8 * 3];
    memset(px, 70, sizeof px);
    snprintf(path, sizeof path, "%s/val/class_009", tree);
    CHECK_OK(bf_mkdir_p(path));
    snprintf(path, sizeof path, "%s/val/class_009/extra.JPEG", tree);
    CHECK_OK(bf_jpeg_write(path, px, 8, 8, 3, 90, 0));
    snprintf(needle, sizeof needle, "imagefolder: %s/val/class_009 is a class folder that %s/train lacks", tree, tree);
    expect_error(&cfg, BF_SPLIT_TEST, BF_ERR_FORMAT, needle, "an extra val/class_009");
    d = open_split(&cfg, BF_SPLIT_TRAIN);
    CHECK(d && d->num_classes == CLASSES && bf_image_class_count(&cfg.data) == CLASSES,
          "the training split and --dry-run still count train/'s %d classes", CLASSES);
    bf_dataset_free(d);
    /* the same folder given as val_dir */
    snprintf(path, sizeof path, "%s/val", tree);
    set(&cfg, "data.val_dir = %s", path);
    expect_error(&cfg, BF_SPLIT_TEST, BF_ERR_FORMAT, needle, "an extra class folder in val_dir");
    set(&cfg, "data.val_dir = %s", "");

    /* A class list selects: class_009 is left out, class_002 and class_000 are labelled 0 and 1. */
    char list[400];
    snprintf(list, sizeof list, "%s/byname_two.txt", root);
    write_text(list, "class_002\nclass_000\n");
    set(&cfg, "data.class_list = %s", list);
    d = open_split(&cfg, BF_SPLIT_TEST);
    if (d) {
        int ok = d->num_classes == 2 && d->num_samples == 4;
        for (int i = 0; i < d->num_samples; i++) ok &= d->labels[i] == (path_class(d->files->paths[i]) == 2 ? 0 : 1);
        CHECK(ok, "class list of 2 beside an extra val folder: %d images, labels by name", d->num_samples);
    }
    bf_dataset_free(d);
    CHECK_OK(bf_remove_tree(tree));
}

/* class_list names are single folder names: '../train/class_000' built the test split from
 * val/../train/class_000, training images in the test set. A directory is named as one. */
static void test_class_list_names(void) {
    bf_config cfg;
    config_for(&cfg, "if");
    char list[400], needle[600];
    snprintf(list, sizeof list, "%s/bad_names.txt", root);
    set(&cfg, "data.class_list = %s", list);
    const char *bad[5] = {"../train/class_000", "..", ".", "class_001/", "class_001/../class_002"};
    for (int i = 0; i < 5; i++) {
        char text[128];
        snprintf(text, sizeof text, "class_003\n%s\n", bad[i]);
        write_text(list, text);
        snprintf(needle, sizeof needle, "%s:2: class '%s' is not a single folder name (allowed: the name of a class "
                 "folder, without '/', not '.' or '..')", list, bad[i]);
        expect_error(&cfg, BF_SPLIT_TEST, BF_ERR_FORMAT, needle, bad[i]);
        expect_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, needle, bad[i]);
        CHECK(bf_image_class_count(&cfg.data) == 0, "%s: --dry-run counts no classes", bad[i]);
    }
    snprintf(list, sizeof list, "%s/if", root);
    set(&cfg, "data.class_list = %s", list);
    snprintf(needle, sizeof needle, "[data] class_list = %s is a directory; expected a file of class folder names", list);
    expect_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_IO, needle, "class_list = a directory");
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/bioflex_test_jpeg_datasets_%d", (int)getpid());
    bf_remove_tree(root);
    CHECK_OK(bf_mkdir_p(root));
    char dir[300];
    bf_jpeg_synth_options o = {.layout = BF_SYNTH_IMAGEFOLDER, .classes = CLASSES, .train_per_class = TRAIN_PER_CLASS,
                               .val_per_class = VAL_PER_CLASS, .width = 16, .height = 12, .quality = 90, .seed = 5};
    snprintf(dir, sizeof dir, "%s/if", root);
    CHECK_OK(bf_jpeg_synth_tree(dir, &o));
    o = (bf_jpeg_synth_options){.layout = BF_SYNTH_TINYIMAGENET, .classes = 3, .train_per_class = 4, .val_per_class = 2,
                                .quality = 90, .seed = 6};
    snprintf(dir, sizeof dir, "%s/tiny", root);
    CHECK_OK(bf_jpeg_synth_tree(dir, &o));
    test_subsets();
    test_tiny_imagenet();
    test_val_labels_by_name();
    test_class_list_names();
    bf_test_remove_dir_if_passed(root);
    return bf_test_finish();
}
