/* test_fragments_replay.c - a Net Fragments run end to end on the CPU against the reference's own
 * numbers (../shared/specs/netfragments.md 7 and 7a), through bf_train and bioflex's config:
 *   - the net-fragments config trained from Python's random.seed(1) replays the reference's run: the
 *     spec's nonzero count and sum of the weights after epochs 1, 2, 3, 5, 10, 20, 30 and 40, and at
 *     epoch 47 the shipped checkpoint's (2,529 nonzero, sum 848.45), which epoch 48 keeps;
 *   - the evaluation of those weights on 60 lines at theta 0.5, gamma 1.2 + 0.2 t reproduces the
 *     stored line-interrupt results (the fraction of the gap's baseline units filled in, gaps of 1 to
 *     7 pixels: .594 .629 .625 .430 .282 .172 .058), which draw no random numbers, and with the
 *     reference's torch.randperm masks (noise_masks = torch) the stored feature-noise rows; with
 *     bioflex's own masks those rows to within sampling error;
 *   - resuming from the epoch-40 checkpoint ends at the same weights as the run through. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/checkpoint.h"
#include "bioflex/fragments_run.h"
#include "bioflex/safetensors.h"
#include "testutil.h"

static char root[256];

/* The stored results' feature-noise rows (spec 6, theta 0.5, gamma 1.2 + 0.2 t): noise reduction,
 * recall and precision at 1, 5, 10 and 20 % of the S1 units flipped. */
static const struct { int level; double reduction, recall, precision; } stored_noise[] = {
    {1, .978, .904, .914}, {5, .973, .675, .705}, {10, .972, .491, .501}, {20, .962, .352, .226}};

static void fragments_config(bf_config *cfg, const char *run, int epochs) {
    bf_config_defaults(cfg);
    snprintf(cfg->run.dir, sizeof cfg->run.dir, "%s/%s", root, run);
    cfg->run.epochs = epochs;
    cfg->run.checkpoint_every = 10;
    cfg->fragments.network = 1;
    cfg->fragments.eval_noise_step = 0.01f;
    cfg->fragments.eval_noise_max = 0.2f;
}

/* The value of `key` in the metrics.jsonl line of epoch `epoch` (NAN when missing). */
static double epoch_value(const char *metrics, int epoch, const char *key) {
    char tag[48], pattern[64];
    snprintf(tag, sizeof tag, "\"epoch\":%d,", epoch);
    const char *line = strstr(metrics, tag);
    if (!line) return NAN;
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *end = strchr(line, '\n'), *at = strstr(line, pattern);
    return at && (!end || at < end) ? strtod(at + strlen(pattern), NULL) : NAN;
}

static float *weights_of(const char *dir) {
    char file[BF_PATH_MAX];
    bf_st_file *f = NULL;
    float *w = NULL;
    if (bf_checkpoint_weights_file(dir, file) == BF_OK && bf_safetensors_read(file, &f) == BF_OK) {
        const bf_st_tensor *t = bf_safetensors_find(f, "model.s2.W_lateral");
        if (t && (w = malloc(t->nbytes))) memcpy(w, t->data, t->nbytes);
    }
    bf_safetensors_close(f);
    CHECK(w != NULL, "the weights of %s", dir);
    return w;
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/bioflex_fragments_XXXXXX");
    if (!mkdtemp(root)) return 1;
    FILE *quiet = fopen("/dev/null", "w");
    bf_train_options opt = {.quiet = 1, .log = quiet};
    bf_train_result res;
    bf_config cfg;
    fragments_config(&cfg, "replay", 48);
    CHECK_OK(bf_train(&cfg, &opt, &res));

    char path[BF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.run.dir);
    size_t n = 0;
    char *metrics = bf_test_read_file(path, &n);
    CHECK(metrics != NULL, "%s", path);
    /* spec 7a's table */
    const struct { int epoch, nonzero; double sum; } replay[] = {
        {1, 1612, 332.64}, {2, 1938, 499.38}, {3, 2071, 594.53}, {5, 2250, 669.90}, {10, 2485, 782.73},
        {20, 2504, 827.89}, {30, 2527, 842.12}, {40, 2529, 847.81}, {47, 2529, 848.45}, {48, 2529, 848.45}};
    for (size_t i = 0; metrics && i < sizeof replay / sizeof replay[0]; i++) {
        double nz = epoch_value(metrics, replay[i].epoch, "weight_nonzero"), sum = epoch_value(metrics, replay[i].epoch, "weight_sum");
        printf("epoch %2d: %5.0f nonzero weights (reference %d), sum %.4f (%.2f)\n", replay[i].epoch, nz,
               replay[i].nonzero, sum, replay[i].sum);
        CHECK(nz == replay[i].nonzero && fabs(sum - replay[i].sum) < 0.005, "epoch %d: %g nonzero, sum %g; the reference's "
              "%d, %.2f", replay[i].epoch, nz, sum, replay[i].nonzero, replay[i].sum);
    }
    /* the support monitor (test_fragments checks its values step by step): each epoch's averages in
     * order (min <= avg <= max on both sides), lambda 14.3, and the support of active cells growing
     * as the fragments are learned (the reference's "support strength per epoch") */
    int ordered = 0;
    for (int e = 1; metrics && e <= 48; e++) {
        const double lo = epoch_value(metrics, e, "min_support_active"), mid = epoch_value(metrics, e, "avg_support_active");
        const double hi = epoch_value(metrics, e, "max_support_active"), in = epoch_value(metrics, e, "avg_support_inactive");
        ordered += lo <= mid && mid <= hi && in >= 0 && in < mid && epoch_value(metrics, e, "support_lambda") == 14.3;
    }
    const double first = metrics ? epoch_value(metrics, 1, "avg_support_active") : NAN;
    const double last = metrics ? epoch_value(metrics, 48, "avg_support_active") : NAN;
    printf("support of active cells: %.3f after epoch 1, %.3f after 48 (lambda 14.3); inactive %.4f, %.4f\n", first, last,
           metrics ? epoch_value(metrics, 1, "avg_support_inactive") : NAN,
           metrics ? epoch_value(metrics, 48, "avg_support_inactive") : NAN);
    CHECK(ordered == 48 && last > first, "support monitor: %d of 48 epochs in order, active support %.3f -> %.3f",
          ordered, first, last);
    free(metrics);

    /* the stored interrupt results at the checkpoint's theta and gamma (spec 6), 60 lines, with the
     * reference's means (a line with nothing erased scores 0) */
    const double stored[7] = {.594, .629, .625, .430, .282, .172, .058};
    bf_fragments_result fr, scored;
    fragments_config(&cfg, "replay", 48);
    cfg.fragments.metrics = 1, cfg.fragments.noise_masks = 1; /* the reference's means and masks */
    char results_dir[BF_PATH_MAX], epoch_48[BF_PATH_MAX + 64];
    CHECK_OK(bf_fragments_evaluate_checkpoint(&cfg, cfg.run.dir, NULL, &fr, results_dir));
    CHECK(!strcmp(results_dir, cfg.run.dir), "the run's evaluation writes in the run: %s", results_dir);
    cfg.fragments.metrics = 0, cfg.fragments.noise_masks = 0; /* the defaults: scored means, bioflex's masks */
    /* a checkpoint of the run, with [run] dir elsewhere: its results still go to the run */
    snprintf(epoch_48, sizeof epoch_48, "%s/checkpoints/epoch_0048", cfg.run.dir);
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/elsewhere", root);
    CHECK_OK(bf_fragments_evaluate_checkpoint(&cfg, epoch_48, NULL, &scored, results_dir));
    snprintf(path, sizeof path, "%s/replay", root);
    CHECK(!strcmp(results_dir, path) && access(cfg.run.dir, F_OK) != 0,
          "a checkpoint's evaluation writes in its run (%s), not in [run] dir", results_dir);
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s", path);
    for (int k = 0; k < 7; k++) {
        const int kept = 60 - scored.interrupt_skipped[k];
        printf("gap of %d px: line reconstruction %.4f (stored %.3f); over the %d lines with an erased unit %.4f\n",
               k + 1, fr.interrupt_recon[k], stored[k], kept, scored.interrupt_recon[k]);
        CHECK(fabs(fr.interrupt_recon[k] - stored[k]) < 0.0006, "gap %d: %.4f, stored %.3f", k + 1, fr.interrupt_recon[k],
              stored[k]);
        /* the same sum, the lines scored 0 for want of an erased unit left out of the count */
        CHECK(kept > 0 && fabs(scored.interrupt_recon[k] * kept - fr.interrupt_recon[k] * 60) < 1e-9,
              "gap %d: scored mean %.6f over %d lines is the reference's sum %.6f over them", k + 1,
              scored.interrupt_recon[k], kept, fr.interrupt_recon[k] * 60);
    }

    /* with torch.randperm's masks the stored rows (3 decimals); with bioflex's own RNG the same
     * statistics, other masks, so the rows agree to sampling error over 60 lines */
    CHECK(fr.noise_levels == 21 && scored.noise_levels == 21, "21 noise levels, 0 to 0.2 (%d)", fr.noise_levels);
    for (size_t i = 0; i < sizeof stored_noise / sizeof stored_noise[0] && fr.noise_levels == 21; i++) {
        int l = stored_noise[i].level;
        printf("noise %.2f: torch's masks: reduction %.4f (stored %.3f), recall %.4f (%.3f), precision %.4f (%.3f); "
               "bioflex's: %.3f %.3f %.3f\n", l / 100.0, fr.noise_reduction[l], stored_noise[i].reduction,
               fr.noise_recall[l], stored_noise[i].recall, fr.noise_precision[l], stored_noise[i].precision,
               scored.noise_reduction[l], scored.noise_recall[l], scored.noise_precision[l]);
        CHECK(fabs(fr.noise_reduction[l] - stored_noise[i].reduction) < 0.0006 &&
                  fabs(fr.noise_recall[l] - stored_noise[i].recall) < 0.0006 &&
                  fabs(fr.noise_precision[l] - stored_noise[i].precision) < 0.0006,
              "noise %d %%, torch's masks: the stored row", l);
        CHECK(fabs(scored.noise_reduction[l] - stored_noise[i].reduction) < 0.01 &&
                  fabs(scored.noise_recall[l] - stored_noise[i].recall) < 0.06 &&
                  fabs(scored.noise_precision[l] - stored_noise[i].precision) < 0.04,
              "noise %d %%, bioflex's masks: within sampling error of the stored row", l);
    }

    /* resume after epoch 40: the line sequence drawn again to its place, the same weights at 48 */
    char from[BF_PATH_MAX + 64];
    snprintf(from, sizeof from, "%s/checkpoints/epoch_0040", cfg.run.dir);
    fragments_config(&cfg, "resumed", 48);
    opt.resume = from;
    CHECK_OK(bf_train(&cfg, &opt, &res));
    snprintf(path, sizeof path, "%s/replay", root);
    float *through = weights_of(path);
    float *resumed = weights_of(cfg.run.dir);
    CHECK(through && resumed && !memcmp(through, resumed, sizeof(float) * 40 * 44 * 121),
          "resumed after epoch 40, the weights at epoch 48 are the run's through");
    free(through), free(resumed);
    fclose(quiet);
    bf_test_remove_dir_if_passed(root);
    return bf_test_finish();
}
