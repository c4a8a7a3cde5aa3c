/* test_val_batches.c - `[run] val_batches` (PlasticFlex's reference scores one random test batch per
 * epoch), on the CPU with procedural data:
 *   - bf_evaluate_batches over 1 batch of a shuffling loader scores batch_size images, the same ones
 *     for the same epoch and different ones at different epochs; 0 batches = the whole split;
 *   - the balanced top-1 (the mean of the per-class recalls) is the one counted here by hand from
 *     each image's prediction, and bf_evaluate_batches_by_class's counts add up to the top-1;
 *   - a training run logs the periodic evaluations as "test_batches" with val_batches * batch
 *     images and the final one as "test" over the whole test set, with its balanced top-1;
 *   - the health figures: the largest |logit| and per-sample loss counted here by hand, no
 *     non-finite loss;
 *   - [run] eval_train: the run also logs "train", the training split scored as bf_evaluate scores
 *     it with the checkpoint's weights and the test split's loader options (to the last bit); with
 *     flex layers its eval_health lines give the smallest running variance of the batch-norm after
 *     each flex layer, the checkpoint's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/checkpoint.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

static void set_procedural(bf_config *cfg) {
    bf_config_defaults(cfg);
    cfg->run.device = BF_DEVICE_SEL_CPU;
    cfg->run.threads = 1;
    cfg->run.epochs = 2;
    cfg->run.eval_every = 1;
    cfg->run.checkpoint_every = 0;
    cfg->run.val_batches = 1;
    cfg->data.dataset = BF_DATASET_PROCEDURAL;
    cfg->data.procedural_train = 64;
    cfg->data.procedural_test = 40;
    cfg->data.procedural_size = 8;
    cfg->data.batch_size = 16;
    cfg->data.eval_batch_size = 8;
    cfg->model.arch = BF_ARCH_CNN;
    cfg->model.channels[0] = 4;
    cfg->model.num_channels = 1;
    cfg->model.hidden = 0;
}

/* The labels of the first test batch a shuffling loader gives at `epoch`. */
static void first_labels(bf_loader *l, int epoch, int32_t *out, int n) {
    bf_batch *b = NULL;
    CHECK_OK(bf_loader_start_epoch(l, epoch, 0));
    CHECK_OK(bf_loader_next(l, &b, NULL));
    if (!b) return;
    memcpy(out, b->labels, (size_t)n * sizeof(int32_t));
    bf_loader_release(l, b);
}

static void test_evaluate_batches(void) {
    bf_config cfg;
    set_procedural(&cfg);
    bf_dataset *test = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, cfg.run.seed, BF_SPLIT_TEST, &test));
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *m = NULL;
    CHECK_OK(bf_run_build_model(&cfg, b, test, 0, &m));
    if (!test || !m) return;
    bf_loader_options o = {.batch_size = 8, .threads = 1, .prefetch = 2, .shuffle = 1, .normalize = 1, .seed = 5};
    bf_loader *shuffled = NULL;
    CHECK_OK(bf_loader_create(test, &o, &shuffled));
    bf_eval_result one, other;
    CHECK_OK(bf_evaluate_batches(m, shuffled, 0.0f, 3, 1, &one));
    CHECK(one.samples == 8, "one batch of 8 scored, got %d", one.samples);
    CHECK_OK(bf_evaluate_batches(m, shuffled, 0.0f, 3, 1, &other));
    CHECK(one.loss == other.loss && one.top1 == other.top1, "the same epoch scores the same batch");

    /* epochs 3 and 4 draw different batches */
    int32_t a[8], c[8];
    first_labels(shuffled, 3, a, 8);
    first_labels(shuffled, 4, c, 8);
    CHECK(memcmp(a, c, sizeof a) != 0, "epochs 3 and 4 start with different test batches");

    /* the whole split: 40 samples whatever the batch limit says when it is 0 */
    bf_eval_result full;
    CHECK_OK(bf_evaluate_batches(m, shuffled, 0.0f, 3, 0, &full));
    CHECK(full.samples == 40, "max_batches = 0 scores all 40 test images, got %d", full.samples);

    /* the balanced top-1 by hand: every image's prediction, per class */
    const int K = m->num_classes;
    double by_hand[2 * 64] = {0}, counts[2 * 64] = {0};
    bf_eval_result again;
    CHECK_OK(bf_evaluate_batches_by_class(m, shuffled, 0.0f, 3, 0, counts, &again));
    const int was_shuffled = bf_loader_set_shuffle(shuffled, 0);
    CHECK_OK(bf_loader_start_epoch(shuffled, 3, 0));
    m->training = 0;
    bf_batch *batch = NULL;
    float *x = bf_test_alloc(b, (size_t)8 * 3 * 8 * 8), z[8 * 64];
    double largest_logit = 0, largest_loss = 0;
    while (K <= 64 && bf_loader_next(shuffled, &batch, NULL) == BF_OK && batch) {
        const float *logits = NULL;
        const int n = batch->n;
        int32_t labels[8];
        memcpy(labels, batch->labels, (size_t)n * sizeof *labels);
        CHECK_OK(bf_to_device(b, x, batch->images, (size_t)n * 3 * 8 * 8 * sizeof(float)));
        m->step = BF_EVAL_STEP, m->sample_offset = (uint64_t)batch->position;
        bf_loader_release(shuffled, batch);
        CHECK_OK(bf_model_set_batch(m, n));
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(bf_to_host(b, z, logits, (size_t)n * K * sizeof(float)));
        for (int i = 0; i < n; i++) {
            int best = 0;
            double sum = 0;
            for (int c = 1; c < K; c++) best = z[i * K + c] > z[i * K + best] ? c : best;
            for (int c = 0; c < K; c++) sum += exp((double)z[i * K + c] - z[i * K + best]), largest_logit = fmax(largest_logit, fabs(z[i * K + c]));
            largest_loss = fmax(largest_loss, log(sum) + z[i * K + best] - z[i * K + labels[i]]);
            by_hand[labels[i]] += best == labels[i], by_hand[K + labels[i]]++;
        }
    }
    bf_loader_set_shuffle(shuffled, was_shuffled);
    double recall = 0, correct = 0, total = 0;
    int present = 0;
    for (int c = 0; c < K; c++) {
        if (by_hand[K + c] > 0) recall += by_hand[c] / by_hand[K + c], present++;
        correct += counts[c], total += counts[K + c];
    }
    CHECK(present > 1 && fabs(full.balanced_top1 - recall / present) < 1e-12,
          "the balanced top-1 %g is the mean of %d per-class recalls counted by hand (%g)", full.balanced_top1, present,
          recall / present);
    CHECK(memcmp(counts, by_hand, sizeof counts) == 0 && total == 40 && correct / 40 == full.top1, /* the count over the images, in double */
          "the per-class counts are the ones by hand and add up to the top-1 (%g of %g; top-1 %g)", correct, total,
          full.top1);
    CHECK(full.max_abs_logit == largest_logit && fabs(full.max_loss - largest_loss) < 1e-5 && full.nonfinite_losses == 0,
          "health: largest |logit| %.9g (by hand %.9g), largest loss %.7g (%.7g), %d non-finite", full.max_abs_logit,
          largest_logit, full.max_loss, largest_loss, full.nonfinite_losses);
    bf_free(b, x);
    bf_loader_destroy(shuffled);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    bf_dataset_free(test);
}

static void test_training_log(void) {
    char dir[] = "/tmp/bioflex_valb_XXXXXX";
    if (!mkdtemp(dir)) return;
    bf_config cfg;
    set_procedural(&cfg);
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run", dir);
    bf_train_options opt = {.quiet = 1, .log = stdout};
    bf_train_result r;
    CHECK_OK(bf_train(&cfg, &opt, &r));
    CHECK(r.final_eval.samples == 40, "the final evaluation scores the whole test set (40), got %d",
          r.final_eval.samples);

    char path[BF_PATH_MAX + 32], line[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.run.dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "%s exists", path);
    int partial = 0, final = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"split\"")) continue;
        if (strstr(line, "\"split\":\"test_batches\"")) partial += strstr(line, "\"samples\":8") != NULL;
        if (strstr(line, "\"split\":\"test\""))
            final += strstr(line, "\"samples\":40") != NULL && strstr(line, "\"balanced_top1\":") != NULL;
    }
    if (f) fclose(f);
    CHECK(partial == 1, "epoch 1: one \"test_batches\" evaluation of 8 images (found %d)", partial);
    CHECK(final == 1, "epoch 2 (the last): one \"test\" evaluation of 40 images (found %d)", final);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* The number after "key": in a JSON line (NAN when absent). */
static double json_number(const char *line, const char *key) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\":", key);
    const char *at = strstr(line, quoted);
    return at ? strtod(at + strlen(quoted), NULL) : NAN;
}

static void test_train_split(void) {
    char dir[] = "/tmp/bioflex_evtrain_XXXXXX";
    if (!mkdtemp(dir)) return;
    bf_config cfg;
    set_procedural(&cfg);
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run", dir);
    cfg.run.epochs = 1, cfg.run.val_batches = 0, cfg.run.checkpoint_every = 1, cfg.run.eval_train = 1;
    cfg.data.augment_flip = 1; /* the training loader flips; the scored training split must not */
    cfg.model.flex = 1;        /* features.0 a flex layer, features.1 its batch-norm */
    bf_train_options opt = {.quiet = 1, .log = stdout};
    bf_train_result r;
    CHECK_OK(bf_train(&cfg, &opt, &r));
    char path[BF_PATH_MAX + 32], line[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.run.dir);
    FILE *f = fopen(path, "r");
    double logged_loss = NAN, logged_top1 = NAN, logged_samples = NAN, logged_min_var = NAN;
    int health = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strstr(line, "\"split\":\"train\"") && strstr(line, "\"type\":\"eval\""))
            logged_loss = json_number(line, "loss"), logged_top1 = json_number(line, "top1"),
            logged_samples = json_number(line, "samples");
        if (strstr(line, "\"type\":\"eval_health\"")) health++, logged_min_var = json_number(line, "features.0");
    }
    if (f) fclose(f);
    bf_st_file *weights = NULL;
    char file[BF_PATH_MAX];
    CHECK_OK(bf_checkpoint_weights_file(r.checkpoint, file));
    CHECK_OK(bf_safetensors_read(file, &weights));
    const bf_st_tensor *var = weights ? bf_safetensors_find(weights, "features.1.running_var") : NULL;
    double saved_min_var = INFINITY;
    for (size_t c = 0; var && c < var->nbytes / sizeof(float); c++) saved_min_var = fmin(saved_min_var, ((const float *)var->data)[c]);
    CHECK(health == 2 && fabs(logged_min_var - saved_min_var) <= 1e-12 * saved_min_var, "eval_health for test and train (%d lines); the smallest "
          "running variance after the flex layer %.17g, the checkpoint's %.17g", health, logged_min_var, saved_min_var);
    if (weights) bf_safetensors_close(weights);

    bf_dataset *train = NULL;
    bf_backend *b = NULL;
    bf_model *m = NULL;
    bf_loader *loader = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, cfg.run.seed, BF_SPLIT_TRAIN, &train));
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (train && b) CHECK_OK(bf_run_build_model(&cfg, b, train, 0, &m));
    if (m) CHECK_OK(bf_checkpoint_load_model(r.checkpoint, m));
    bf_loader_options o = bf_loader_options_from_config(&cfg, BF_SPLIT_TEST);
    if (train) CHECK_OK(bf_loader_create(train, &o, &loader));
    bf_eval_result res = {0};
    if (m && loader) CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 1, 0, &res));
    printf("eval_train: logged train loss %.9g top-1 %.6g over %g images; by hand %.9g %.6g over %d\n", logged_loss,
           logged_top1, logged_samples, res.loss, res.top1, res.samples);
    CHECK(logged_samples == 64 && res.samples == 64, "the training split's 64 images scored (%g logged)", logged_samples);
    CHECK(fabs(logged_loss - res.loss) < 1e-12 && fabs(logged_top1 - res.top1) < 1e-12,
          "the logged train score is the checkpoint's, evaluated over the training split without augmentation");
    bf_loader_destroy(loader);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    bf_dataset_free(train);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
    test_evaluate_batches();
    test_training_log();
    test_train_split();
    return bf_test_finish();
}
