/* test_micro_batches.c - `[data] micro_batches` (gradient accumulation), on the CPU:
 *   - a CNN without batch-norm, with dropout and label smoothing, trained for an epoch of 120
 *     procedural images in batches of 32 (the last one 24), once whole and once in 2 and 4 slices:
 *     the weights agree to float rounding (the sums run in another order), where an update from
 *     the last slice alone, or a loss not scaled by the whole batch, would be far off; dropout draws
 *     what the whole batch draws (by each image's place in it);
 *   - with batch-norm, the slices' statistics: the running statistics take one update per slice
 *     (num_batches_tracked = steps x slices), and the planned activation memory is the slice's;
 *   - a run stopped after its first epoch and resumed ends with the uninterrupted run's weights,
 *     bit for bit;
 *   - a spiking run's [spiking] raster_neurons records the batch's first image (in the first slice),
 *     as the whole batch does, not the last slice's;
 *   - a count that does not divide batch_size, and a BU-TD network, are refused naming the keys. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/checkpoint.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

static char root[256];

static void small_config(bf_config *cfg, const char *run, int micro_batches, int batchnorm) {
    char dir[BF_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, run);
    bf_test_procedural_run_config(cfg, dir);
    cfg->data.procedural_train = 120; /* three batches of 32 and one of 24 */
    cfg->data.micro_batches = micro_batches;
    cfg->model.batchnorm = batchnorm;
    cfg->model.dropout = 0.3f;
    cfg->optim.momentum = 0.9f;
    cfg->optim.label_smoothing = 0.1f;
}

static void weights_path(const char *run, char *file) {
    char dir[BF_PATH_MAX + 300];
    snprintf(dir, sizeof dir, "%s/%s", root, run);
    CHECK_OK(bf_checkpoint_weights_file(dir, file));
}

static double weights_diff(const char *a, const char *b) {
    char fa[BF_PATH_MAX], fb[BF_PATH_MAX];
    weights_path(a, fa);
    weights_path(b, fb);
    return bf_test_weights_max_abs_diff(fa, fb);
}

static void test_same_update(FILE *quiet) {
    bf_train_options opt = {.quiet = 1, .log = quiet};
    bf_train_result res;
    bf_config cfg;
    const char *runs[3] = {"whole", "two_slices", "four_slices"};
    const int slices[3] = {1, 2, 4};
    for (int k = 0; k < 3; k++) {
        small_config(&cfg, runs[k], slices[k], 0);
        CHECK_OK(bf_train(&cfg, &opt, &res));
        CHECK(res.steps_done == 4, "%s: 4 steps (got %ld)", runs[k], res.steps_done);
    }
    small_config(&cfg, "whole_longer", 1, 0); /* the scale of an epoch's updates */
    cfg.run.epochs = 2;
    CHECK_OK(bf_train(&cfg, &opt, &res));
    const double moved = weights_diff("whole", "whole_longer"), two = weights_diff("whole", "two_slices"),
                 four = weights_diff("whole", "four_slices");
    printf("micro_batches: a second epoch moves the weights by up to %.3g; after the first, 2 slices differ from the "
           "whole batch by %.3g, 4 slices by %.3g\n", moved, two, four);
    CHECK(moved > 1e-3, "the whole-batch run trains (a second epoch moved the weights by %.3g)", moved);
    CHECK(two < 1e-5 && four < 1e-5, "micro_batches = 2 and 4 update as the whole batch does (largest difference %.3g "
          "and %.3g, the weights moved %.3g)", two, four, moved);
}

static void test_batchnorm_slices(FILE *quiet) {
    bf_train_options opt = {.quiet = 1, .log = quiet};
    bf_train_result res;
    bf_config cfg;
    small_config(&cfg, "batchnorm_slices", 4, 1);
    CHECK_OK(bf_train(&cfg, &opt, &res));
    char file[BF_PATH_MAX];
    weights_path("batchnorm_slices", file);
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(file, &f));
    int tracked = 0, found = 0;
    for (int i = 0; f && i < bf_safetensors_count(f); i++) {
        const bf_st_tensor *t = bf_safetensors_at(f, i);
        if (!strstr(t->name, "num_batches_tracked") || t->nbytes != sizeof(int64_t)) continue;
        int64_t v;
        memcpy(&v, t->data, sizeof v);
        found++;
        tracked += v == 3 * 4 + 3; /* three batches of four slices of 8, and 24 images in three */
    }
    CHECK(found >= 2 && tracked == found, "batch-norm with 4 slices: num_batches_tracked = 15 in %d of %d layers",
          tracked, found);
    bf_safetensors_close(f);
    /* the network is planned for the slice: what a whole batch of 8 plans */
    bf_model *sliced = NULL, *eight = NULL;
    bf_dataset *d = NULL;
    CHECK_OK(bf_run_open_dataset(&cfg, BF_SPLIT_TRAIN, &d));
    if (d) CHECK_OK(bf_run_build_model(&cfg, NULL, d, 1, &sliced));
    cfg.data.batch_size = 8;
    cfg.data.micro_batches = 1;
    if (d) CHECK_OK(bf_run_build_model(&cfg, NULL, d, 1, &eight));
    if (sliced && eight)
        CHECK(sliced->input_shape.n == 8 && sliced->arena_bytes == eight->arena_bytes,
              "batch 32 in 4 slices plans the network for 8 images (%d, %zu bytes against %zu)", sliced->input_shape.n,
              sliced->arena_bytes, eight->arena_bytes);
    bf_model_destroy(sliced);
    bf_model_destroy(eight);
    bf_dataset_free(d);
}

static void test_resume(FILE *quiet) {
    bf_train_options opt = {.quiet = 1, .log = quiet};
    bf_train_result res;
    bf_config cfg;
    small_config(&cfg, "straight", 4, 1);
    cfg.run.epochs = 2;
    CHECK_OK(bf_train(&cfg, &opt, &res));
    small_config(&cfg, "stopped", 4, 1);
    CHECK_OK(bf_train(&cfg, &opt, &res));
    cfg.run.epochs = 2;
    char dir[BF_PATH_MAX + 300];
    snprintf(dir, sizeof dir, "%s/stopped", root);
    bf_train_options resume = opt;
    resume.resume = dir;
    CHECK_OK(bf_train(&cfg, &resume, &res));
    const double diff = weights_diff("straight", "stopped");
    CHECK(diff == 0, "micro_batches = 4 with batch-norm: resumed after epoch 1, the weights equal the straight run's "
          "bit for bit (largest difference %.3g)", diff);
}

/* The lines of step `step` in a run's spikes.jsonl (free them; NULL when it has none). */
static char *raster_lines(const char *run, long step) {
    char path[BF_PATH_MAX + 300], prefix[64];
    snprintf(path, sizeof path, "%s/%s/spikes.jsonl", root, run);
    snprintf(prefix, sizeof prefix, "{\"step\":%ld,", step);
    size_t n = 0;
    char *text = bf_test_read_file(path, &n), *kept = text ? calloc(n + 1, 1) : NULL;
    size_t used = 0;
    for (char *line = text, *end; kept && line && *line; line = end ? end + 1 : NULL) {
        end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) + 1 : strlen(line);
        if (!strncmp(line, prefix, strlen(prefix))) memcpy(kept + used, line, len), used += len;
    }
    free(text);
    if (kept && !used) free(kept), kept = NULL;
    return kept;
}

/* The raster of a log interval's step is its batch's first image's: with 2 slices, the first slice's
 * (after the step the layers hold the last slice's outputs). Compared at step 1, where the two runs
 * have the same weights; LIF spikes are 0 or 1, so rounding does not blur them. */
static void test_raster(FILE *quiet) {
    bf_train_options opt = {.quiet = 1, .log = quiet};
    bf_train_result res;
    bf_config cfg;
    const char *runs[2] = {"raster_whole", "raster_two_slices"};
    char *lines[2];
    for (int k = 0; k < 2; k++) {
        small_config(&cfg, runs[k], k ? 2 : 1, 0);
        cfg.data.procedural_train = 64;
        cfg.run.log_interval = 1;
        cfg.model.spiking.neuron = BF_NEURON_LIF;
        cfg.model.spiking.time_steps = 3;
        cfg.model.spiking.threshold = 0.3f; /* spikes in every layer at this small scale */
        cfg.model.spiking.raster_neurons = 24;
        CHECK_OK(bf_train(&cfg, &opt, &res));
        lines[k] = raster_lines(runs[k], 1);
    }
    CHECK(lines[0] && strstr(lines[0], ",1,") && strstr(lines[0], ",0,"), "the whole batch's step-1 raster has "
          "spikes and silences: %s", lines[0] ? lines[0] : "(none)");
    CHECK(lines[0] && lines[1] && !strcmp(lines[0], lines[1]), "micro_batches = 2 records the raster of the batch's "
          "first image as the whole batch does:\nwhole:\n%s2 slices:\n%s", lines[0] ? lines[0] : "(none)\n",
          lines[1] ? lines[1] : "(none)\n");
    free(lines[0]);
    free(lines[1]);
}

static void test_refused(void) {
    bf_config cfg;
    small_config(&cfg, "refused", 3, 0);
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "micro_batches = 3 must divide") &&
              strstr(bf_last_error(), "batch_size = 32"),
          "a count that does not divide batch_size is refused: %s", bf_last_error());
    small_config(&cfg, "refused", 2, 0);
    cfg.butd.network = 2; /* simple */
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "micro_batches = 2 applies to [model]"),
          "a BU-TD network refuses micro_batches: %s", bf_last_error());
    small_config(&cfg, "accepted", 4, 0);
    CHECK_OK(bf_config_validate(&cfg));
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/bioflex_micro_batches_XXXXXX");
    if (!mkdtemp(root)) {
        CHECK(0, "mkdtemp");
        return bf_test_finish();
    }
    FILE *quiet = fopen("/dev/null", "w");
    test_same_update(quiet);
    test_batchnorm_slices(quiet);
    test_resume(quiet);
    test_raster(quiet);
    test_refused();
    if (quiet) fclose(quiet);
    bf_test_remove_dir_if_passed(root);
    return bf_test_finish();
}
