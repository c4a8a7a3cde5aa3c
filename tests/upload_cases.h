/* upload_cases.h - what the uint8-batch tests (test_batch_upload.c on the CPU and
 * test_batch_upload_cuda.c) share: a synthetic JPEG tree under `root` and its config. */
#ifndef BIOFLEX_TEST_UPLOAD_CASES_H
#define BIOFLEX_TEST_UPLOAD_CASES_H

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bioflex/config.h"
#include "bioflex/image.h"
#include "fsutil.h"
#include "testutil.h"

static char root[256];

static void set(bf_config *cfg, const char *a) { CHECK_OK(bf_config_set(cfg, a)); }

/* An imagefolder tree (3 classes, edge cases included) at <root>/if, root named after the test. */
static void make_tree(const char *name, int train_per_class, int width, int height, unsigned seed) {
    snprintf(root, sizeof root, "/tmp/bioflex_test_%s_%d", name, (int)getpid());
    bf_remove_tree(root);
    mkdir(root, 0755);
    char dir[300];
    bf_jpeg_synth_options o = {.layout = BF_SYNTH_IMAGEFOLDER, .classes = 3, .train_per_class = train_per_class,
                               .val_per_class = 3, .width = width, .height = height, .quality = 90, .edge_cases = 1,
                               .seed = seed};
    snprintf(dir, sizeof dir, "%s/if", root);
    CHECK_OK(bf_jpeg_synth_tree(dir, &o));
}

/* The tree as a dataset: RandomResizedCrop to `size` and flip; val_resize when > 0. */
static void jpeg_config(bf_config *cfg, int size, int val_resize) {
    char a[512];
    bf_config_defaults(cfg);
    set(cfg, "data.dataset = imagefolder");
    snprintf(a, sizeof a, "data.path = %s/if", root);
    set(cfg, a);
    snprintf(a, sizeof a, "data.image_size = %d", size);
    set(cfg, a);
    set(cfg, "data.train_transform = random_resized_crop");
    set(cfg, "data.augment_flip = true");
    if (val_resize > 0) {
        snprintf(a, sizeof a, "data.val_resize = %d", val_resize);
        set(cfg, a);
    }
}

#endif
