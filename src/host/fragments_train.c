/* fragments_train.c - Net Fragments runs ([fragments] network = lateral; ../shared/specs/netfragments.md
 * sections 4 and 5): the training loop over straight lines and the robustness evaluation.
 *
 * Training (4.1) learns S2's lateral weights by the Hebbian rule alone, one line at a time: the line
 * sequence is Python's random seeded with line_seed, drawn as the reference drew it (valid_lines
 * validation lines first, then per epoch train_lines training lines and valid_lines validation
 * lines), so the run replays the reference's exactly. The validation lines only advance that
 * sequence (the reference drew them for its plots). After each epoch one line of weight statistics
 * goes to metrics.jsonl and the weights to a checkpoint when [run] checkpoint_every says so; a
 * resumed run draws the lines of the epochs it has done again to reach the same place in the
 * sequence.
 *
 * Evaluation (5) runs the 60 lines of the rotating sequence without learning: a baseline of clean
 * lines, then each feature-noise level (a fraction of the 4096 S1 units flipped, 5.4's noise
 * reduction, recall, precision and accuracy against the baseline) and each line interrupt (the gap
 * of k pixels of 1.4, and the fraction of the baseline's units in the gap that S2 fills in), every
 * metric on the last time step's S2 state merged over the alternatives. One JSON line per setting
 * goes to fragments_results.jsonl in the run (a checkpoint's evaluation: in the checkpoint's run).
 * The reference drew its noise masks with torch.randperm; bioflex draws them with its counter RNG
 * (hash.h) unless [fragments] noise_masks = torch, so the noise metrics agree statistically and the
 * interrupt metrics, which draw nothing, exactly. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/checkpoint.h"
#include "bioflex/fragments_data.h"
#include "bioflex/fragments_run.h"
#include "bioflex/hash.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "fsutil.h"

enum { PIXELS = BF_FRAG_SIZE * BF_FRAG_SIZE, S1_UNITS = BF_FRAG_S1 * PIXELS, S2_UNITS = BF_FRAG_CELLS * PIXELS };
#define WEIGHT_FLOATS ((size_t)BF_FRAG_CELLS * BF_FRAG_INPUTS * BF_FRAG_K * BF_FRAG_K)
#define WEIGHT_NAME "model.s2.W_lateral" /* the reference checkpoint's name, shape [40, 5324, 1, 1] */
/* The most epochs a resumed checkpoint may have done: the resume replays every line drawn up to it */
#define MAX_RESUME_EPOCH 1000000

/* gamma_t = a + b t as the reference's YAML lists hold it: the decimal value, rounded to a float
 * once (1.2 + 3 x 0.2 is the float nearest 1.8, not the sum of the floats nearest 1.2 and 0.6). */
static float power_at(const bf_fragments_config *c, int t) {
    char text[32];
    snprintf(text, sizeof text, "%.7g", c->power_start);
    double a = strtod(text, NULL);
    snprintf(text, sizeof text, "%.7g", c->power_step);
    double g = a + t * strtod(text, NULL);
    return (float)(round(g * 1e9) / 1e9);
}

bf_status bf_fragments_options_of(const bf_config *cfg, bf_fragments_options *o) {
    const bf_fragments_config *c = &cfg->fragments;
    memset(o, 0, sizeof *o);
    o->larger_kernels = c->s1_kernels;
    o->s1_activation = (bf_frag_s1_activation)c->s1_activation;
    o->T = c->time_steps;
    o->theta = c->bernoulli ? -1.0f : c->act_threshold;
    for (int t = 0; t < c->time_steps && t < BF_FRAG_MAX_T; t++) o->gamma[t] = power_at(c, t);
    o->support_factor = c->support_factor;
    o->lr = c->hebbian_lr;
    o->neg_corr = c->neg_corr;
    o->hebb_binarised = c->hebbian_input == 1;
    o->seed = (uint64_t)cfg->run.seed;
    return BF_OK;
}

/* One line through S1 and S2: its image (interrupted by k pixels when k > 0), S1 (with `flips` of its
 * units flipped when flips > 0: the first flips of `order` (a permutation of the units) or, when it
 * is NULL, chosen by `noise_seed`; the flipped units marked in `flipped`), and the T states z. */
static bf_status run_line(bf_fragments *f, bf_line line, int k, int flips, uint64_t noise_seed, const int *order,
                          uint64_t sample, float *img, float *s1, unsigned char *flipped, float *z) {
    memset(img, 0, PIXELS * sizeof *img);
    bf_line_draw(line, img);
    if (k > 0) bf_line_interrupt(line, k, img);
    bf_fragments_s1(f, img, sample, s1);
    if (flipped) memset(flipped, 0, S1_UNITS);
    for (int i = 0; order && i < flips; i++) { /* the reference's: torch.randperm(4096)[:flips] */
        s1[order[i]] = 1.0f - s1[order[i]];
        if (flipped) flipped[order[i]] = 1;
    }
    if (flips > 0 && !order) { /* exactly `flips` distinct units, uniformly: a partial Fisher-Yates shuffle */
        int order[S1_UNITS];
        for (int i = 0; i < S1_UNITS; i++) order[i] = i;
        for (int i = 0; i < flips; i++) {
            int j = i + (int)(bf_uniform(noise_seed, (uint64_t)i) * (S1_UNITS - i));
            if (j >= S1_UNITS) j = S1_UNITS - 1;
            int u = order[j];
            order[j] = order[i], order[i] = u;
            s1[u] = 1.0f - s1[u];
            if (flipped) flipped[u] = 1;
        }
    }
    return bf_fragments_run(f, s1, sample, z, NULL);
}

/* ---- training ---- */

typedef struct weight_stats {
    int nonzero, high, low;  /* entries > 0, >= 0.9, <= 0.1 */
    double sum, mean, std, min, max;
} weight_stats;

static weight_stats stats_of(const float *w) {
    weight_stats s = {.min = INFINITY, .max = -INFINITY};
    double sq = 0;
    for (size_t i = 0; i < WEIGHT_FLOATS; i++) {
        s.nonzero += w[i] > 0, s.high += w[i] >= 0.9f, s.low += w[i] <= 0.1f;
        s.sum += w[i], sq += (double)w[i] * w[i];
        s.min = fmin(s.min, w[i]), s.max = fmax(s.max, w[i]);
    }
    s.mean = s.sum / WEIGHT_FLOATS;
    s.std = sqrt(fmax(sq / WEIGHT_FLOATS - s.mean * s.mean, 0));
    return s;
}

/* One of an epoch's support statistics averaged over its steps (side 1 active, 0 inactive cells);
 * NaN when no step had such cells. */
static double support_average(const bf_fragments_support *s, int side, const double *sums) {
    return s->sides[side] > 0 ? sums[side] / (double)s->sides[side] : NAN;
}

/* The reference's S2 monitor, averaged per epoch (its S2/avg|std|min|max_support_active|inactive and
 * S2/norm_factor), and lambda, the line plot_support.py draws with them. NaN (no such cell in any
 * step) is written as null. */
static void add_support_metrics(cJSON *o, const bf_fragments_support *s, double lambda) {
    static const char *const sides[2] = {"inactive", "active"};
    for (int side = 0; side < 2; side++) {
        const double *sums[4] = {s->mean, s->std, s->min, s->max};
        static const char *const what[4] = {"avg", "std", "min", "max"};
        for (int k = 0; k < 4; k++) {
            char key[48];
            snprintf(key, sizeof key, "%s_support_%s", what[k], sides[side]);
            const double v = support_average(s, side, sums[k]);
            if (isnan(v)) cJSON_AddNullToObject(o, key);
            else cJSON_AddNumberToObject(o, key, v);
        }
    }
    if (s->steps > 0) cJSON_AddNumberToObject(o, "norm_factor", s->norm_factor / (double)s->steps);
    else cJSON_AddNullToObject(o, "norm_factor");
    char decimal[32]; /* lambda as the config's decimals give it (14.3), not its float's 17 digits */
    snprintf(decimal, sizeof decimal, "%.7g", lambda);
    cJSON_AddNumberToObject(o, "support_lambda", strtod(decimal, NULL));
}

static bf_status append_json_line(const char *path, cJSON *o) {
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return bf_error(BF_ERR_OOM, "%s: out of memory for a JSON line", path);
    FILE *fp = fopen(path, "a");
    bf_status s = fp ? BF_OK : bf_error(BF_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (fp) {
        fprintf(fp, "%s\n", text);
        if (fclose(fp) != 0) s = bf_error(BF_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    }
    cJSON_free(text);
    return s;
}

/* checkpoints/epoch_NNNN/model.safetensors (the weights as the reference names and shapes them,
 * the epoch and the config's description in its metadata; written to a temporary name and renamed),
 * then checkpoints/latest, as the engine's checkpoints are laid out (bf_checkpoint_resolve reads
 * both). */
static bf_status save_checkpoint(const bf_config *cfg, const float *w, int epoch) {
    char dir[BF_PATH_MAX + 64], path[BF_PATH_MAX + 96];
    snprintf(dir, sizeof dir, "%s/checkpoints/epoch_%04d", cfg->run.dir, epoch);
    BF_TRY(bf_mkdir_p(dir));
    bf_st_tensor t = {.dtype = BF_DTYPE_F32, .ndim = 4, .shape = {BF_FRAG_CELLS, BF_FRAG_INPUTS * BF_FRAG_K * BF_FRAG_K, 1, 1},
                      .data = w, .nbytes = WEIGHT_FLOATS * sizeof(float)};
    snprintf(t.name, sizeof t.name, WEIGHT_NAME);
    bf_st_meta meta[3];
    snprintf(meta[0].key, sizeof meta[0].key, "epoch");
    snprintf(meta[0].value, sizeof meta[0].value, "%d", epoch);
    snprintf(meta[1].key, sizeof meta[1].key, "model");
    snprintf(meta[1].value, sizeof meta[1].value, "bioflex net fragments");
    snprintf(meta[2].key, sizeof meta[2].key, "network");
    bf_config_describe_network(cfg, meta[2].value, sizeof meta[2].value);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    BF_TRY(bf_safetensors_write(path, &t, 1, meta, 3));
    char line[32];
    snprintf(line, sizeof line, "epoch_%04d\n", epoch);
    snprintf(path, sizeof path, "%s/checkpoints/latest", cfg->run.dir);
    return bf_write_file_atomic(path, line, strlen(line));
}

/* The weights (and the epoch they were saved after) of a checkpoint, run directory or weights file. */
static bf_status load_checkpoint(const char *given, float *w, int *epoch) {
    char file[BF_PATH_MAX];
    BF_TRY(bf_checkpoint_weights_file(given, file));
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(file, &f));
    const int64_t shape[4] = {BF_FRAG_CELLS, BF_FRAG_INPUTS * BF_FRAG_K * BF_FRAG_K, 1, 1};
    bf_status s = bf_safetensors_copy_out(f, WEIGHT_NAME, BF_DTYPE_F32, 4, shape, w);
    /* absent (the reference's own checkpoint): 0. Parsed whole, not with atoi: a negative or huge
     * epoch would replay billions of lines (or overflow) before the first one of the resumed run. */
    const char *e = bf_safetensors_meta(f, "epoch");
    char *end = NULL;
    errno = 0;
    long v = e ? strtol(e, &end, 10) : 0;
    if (s == BF_OK && e && (errno || end == e || *end || v < 0 || v > MAX_RESUME_EPOCH))
        s = bf_error(BF_ERR_CHECKPOINT, "%s: metadata \"epoch\" = \"%s\" is not an epoch count (0..%d)", file, e,
                     MAX_RESUME_EPOCH);
    if (epoch) *epoch = s == BF_OK ? (int)v : 0;
    bf_safetensors_close(f);
    return s;
}

bf_status bf_fragments_train(const bf_config *cfg, const bf_train_options *opt, bf_train_result *result) {
    const bf_fragments_config *c = &cfg->fragments;
    FILE *text = opt && opt->log ? opt->log : stdout;
    memset(result, 0, sizeof *result);
    BF_TRY(bf_mkdir_p(cfg->run.dir));
    bf_fragments_options fo;
    BF_TRY(bf_fragments_options_of(cfg, &fo));
    bf_fragments *f = NULL;
    BF_TRY(bf_fragments_create(&fo, &f));
    float *w = bf_fragments_weights(f);
    int start = 0;
    bf_status s = BF_OK;
    if (opt && opt->resume) {
        s = load_checkpoint(opt->resume, w, &start);
        if (s == BF_OK) fprintf(text, "resumed from %s after epoch %d\n", opt->resume, start);
    }
    float *img = malloc(PIXELS * sizeof *img), *s1 = malloc(S1_UNITS * sizeof *s1);
    float *z = malloc((size_t)c->time_steps * S2_UNITS * sizeof *z);
    if (s == BF_OK && (!img || !s1 || !z)) s = bf_error(BF_ERR_OOM, "net fragments: out of host memory");
    bf_py_random lines;
    bf_py_random_seed(&lines, (uint64_t)c->line_seed);
    /* the sequence up to where this run starts: the first validation lines, then whole epochs */
    /* (in long long: epochs x lines may pass INT_MAX; none to replay when no epoch is left to train) */
    const long long replay = start < cfg->run.epochs ? c->valid_lines + (long long)start * (c->train_lines + c->valid_lines) : 0;
    for (long long i = 0; i < replay; i++) (void)bf_line_random(&lines);
    if (s == BF_OK && opt && opt->started) opt->started(opt->started_user);
    char metrics[BF_PATH_MAX + 32];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", cfg->run.dir);
    if (s == BF_OK) { /* where this run begins to append (metrics.h's bf_metrics_start) */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "start");
        cJSON_AddBoolToObject(o, "resumed", opt && opt->resume);
        cJSON_AddNumberToObject(o, "epoch", start);
        s = append_json_line(metrics, o);
    }
    if (s == BF_OK && !(opt && opt->quiet))
        fprintf(text, "net fragments: %d lines an epoch, T = %d, theta %s, gamma %g + %g t, lambda %g, eta %g\n",
                c->train_lines, c->time_steps, c->bernoulli ? "bernoulli" : "fixed", c->power_start, c->power_step,
                c->support_factor * BF_FRAG_K, c->hebbian_lr);
    for (int epoch = start; epoch < cfg->run.epochs && s == BF_OK; epoch++) {
        bf_fragments_support support = {0}; /* the epoch's training steps (the reference's S2 monitor) */
        bf_fragments_track_support(f, &support);
        for (int i = 0; i < c->train_lines && s == BF_OK; i++) {
            uint64_t sample = (uint64_t)epoch * (uint64_t)c->train_lines + (uint64_t)i;
            s = run_line(f, bf_line_random(&lines), 0, 0, 0, NULL, sample, img, s1, NULL, z);
            if (s == BF_OK) s = bf_fragments_hebbian(f, s1, z);
            result->steps_done++;
        }
        bf_fragments_track_support(f, NULL);
        for (int i = 0; i < c->valid_lines; i++) (void)bf_line_random(&lines);
        if (s != BF_OK) break;
        weight_stats ws = stats_of(w);
        if (!opt || !opt->quiet)
            fprintf(text, "epoch %d/%d  weights: %d nonzero, sum %.2f, %d >= 0.9, max %.3f; support: active %.3g, "
                    "inactive %.3g (lambda %.3g)\n", epoch + 1, cfg->run.epochs, ws.nonzero, ws.sum, ws.high, ws.max,
                    support_average(&support, 1, support.mean), support_average(&support, 0, support.mean),
                    c->support_factor * BF_FRAG_K);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "fragments_epoch");
        cJSON_AddNumberToObject(o, "epoch", epoch + 1);
        cJSON_AddNumberToObject(o, "weight_nonzero", ws.nonzero);
        cJSON_AddNumberToObject(o, "weight_sum", ws.sum);
        cJSON_AddNumberToObject(o, "weight_mean", ws.mean);
        cJSON_AddNumberToObject(o, "weight_std", ws.std);
        cJSON_AddNumberToObject(o, "weight_min", ws.min);
        cJSON_AddNumberToObject(o, "weight_max", ws.max);
        cJSON_AddNumberToObject(o, "weight_frac_ge_0.9", (double)ws.high / WEIGHT_FLOATS);
        cJSON_AddNumberToObject(o, "weight_frac_le_0.1", (double)ws.low / WEIGHT_FLOATS);
        add_support_metrics(o, &support, c->support_factor * BF_FRAG_K);
        s = append_json_line(metrics, o);
        const int last = epoch + 1 == cfg->run.epochs;
        const int due = last || (cfg->run.checkpoint_every > 0 && (epoch + 1) % cfg->run.checkpoint_every == 0);
        if (s == BF_OK && due) s = save_checkpoint(cfg, w, epoch + 1);
        result->epochs_done = epoch + 1;
        /* A stop request (SIGTERM, SIGINT, SIGUSR1, SIGHUP): this loop never looked, so a stopped run
         * trained on to its last epoch (or was killed by the launcher's grace period). Looked at
         * between epochs, since a checkpoint holds whole epochs (a resume replays the line sequence
         * by epochs); the evaluation is the resumed run's. The run's last epoch just finishes it. */
        if (s == BF_OK && !last && opt && opt->stop && *opt->stop) {
            if (!due) s = save_checkpoint(cfg, w, epoch + 1);
            if (s == BF_OK) {
                snprintf(result->checkpoint, sizeof result->checkpoint, "%s/checkpoints/epoch_%04d", cfg->run.dir,
                         epoch + 1);
                fprintf(text, "stopped on request after epoch %d of %d; continue with --resume %s\n", epoch + 1,
                        cfg->run.epochs, cfg->run.dir);
                result->interrupted = 1;
            }
            break;
        }
    }
    if (s == BF_OK && start >= cfg->run.epochs) result->epochs_done = start;
    free(img), free(s1), free(z);
    if (s == BF_OK && !result->interrupted) { /* the robustness evaluation of the trained weights */
        bf_fragments_result fr;
        s = bf_fragments_evaluate(cfg, f, text, &fr);
        result->final_eval.samples = c->eval_lines;
        result->final_eval.top1 = fr.interrupt_recon[0];
    }
    bf_fragments_destroy(f);
    return s;
}

/* ---- evaluation ---- */

typedef struct line_scores {
    double noise_reduction, accuracy, recall, precision, line_recon;
} line_scores;

/* 5.4 for one line: L and base the merged final states [4][32][32]; flipped the noisy S1 units and
 * noisy their noisy values (NULL: no noise); img and base_img the images (line_recon's gap). A metric
 * with nothing to score is NaN, except the line reconstruction under [fragments] metrics =
 * reference, which scores an empty gap 0 as the reference did. */
static line_scores score_line(const float *L, const float *base, const unsigned char *flipped, const float *noisy,
                              const float *img, const float *base_img, int reference) {
    line_scores r = {0};
    int both = 0, in_l = 0, in_base = 0, differ = 0, flips = 0, corrected = 0, gap = 0, gap_filled = 0;
    for (int u = 0; u < S1_UNITS; u++) {
        int l = L[u] > 0.5f, b = base[u] > 0.5f;
        both += l && b, in_l += l, in_base += b, differ += l != b;
        if (flipped && flipped[u]) flips++, corrected += l != (noisy[u] > 0.5f);
        int p = u % PIXELS;
        if (img[p] != base_img[p] && b) gap++, gap_filled += l;
    }
    r.accuracy = 1.0 - (double)differ / S1_UNITS;
    r.recall = in_base ? (double)both / in_base : NAN;
    r.precision = in_l ? (double)both / in_l : NAN;
    r.noise_reduction = flips ? (double)corrected / flips : NAN;
    r.line_recon = gap ? (double)gap_filled / gap : reference ? 0.0 : NAN;
    return r;
}

static void add_number(cJSON *o, const char *key, double v) {
    if (isnan(v)) cJSON_AddNullToObject(o, key);
    else cJSON_AddNumberToObject(o, key, v);
}

bf_status bf_fragments_evaluate(const bf_config *cfg, bf_fragments *f, FILE *text, bf_fragments_result *out) {
    const bf_fragments_config *c = &cfg->fragments;
    const int n = c->eval_lines, T = c->time_steps;
    memset(out, 0, sizeof *out);
    float *base = malloc((size_t)n * S1_UNITS * sizeof *base), *base_img = malloc((size_t)n * PIXELS * sizeof *base_img);
    float *img = malloc(PIXELS * sizeof *img), *s1 = malloc(S1_UNITS * sizeof *s1), *L = malloc(S1_UNITS * sizeof *L);
    float *z = malloc((size_t)T * S2_UNITS * sizeof *z);
    unsigned char *flipped = malloc(S1_UNITS);
    bf_status s = base && base_img && img && s1 && L && z && flipped ? BF_OK
                                                                     : bf_error(BF_ERR_OOM, "net fragments: out of host memory");
    const float *final = z + (size_t)(T - 1) * S2_UNITS;
    for (int i = 0; i < n && s == BF_OK; i++) { /* the clean baseline */
        s = run_line(f, bf_line_eval(i), 0, 0, 0, NULL, (uint64_t)i, base_img + (size_t)i * PIXELS, s1, NULL, z);
        bf_fragments_merge(final, base + (size_t)i * S1_UNITS);
    }
    char results[BF_PATH_MAX + 32];
    snprintf(results, sizeof results, "%s/fragments_results.jsonl", cfg->run.dir);
    const int noise_levels = (int)floor(c->eval_noise_max / c->eval_noise_step + 1e-6) + 1;
    if (s == BF_OK && text)
        fprintf(text, "net fragments evaluation (%d lines, theta %s, gamma %g + %g t, metrics %s):\n%-14s %9s %9s %9s %9s %9s%s\n",
                n, c->bernoulli ? "bernoulli" : "fixed", c->power_start, c->power_step,
                c->metrics ? "as the reference's" : "over the lines with something to score", "setting", "noise_red",
                "line_rec", "recall", "precision", "accuracy", c->metrics ? "" : "   lines with nothing to score, columns 1-4");
    for (int setting = 0; setting < noise_levels + c->eval_interrupt_max && s == BF_OK; setting++) {
        const int noisy = setting < noise_levels, k = noisy ? 0 : setting - noise_levels + 1;
        const double p = noisy ? setting * (double)c->eval_noise_step : 0;
        const int flips = (int)(p * S1_UNITS); /* int(noise * 4 * 32 * 32), as the reference */
        double sum[5] = {0};
        int counted[5] = {0}, skipped[5] = {0};
        /* noise_masks = torch: each setting was its own run after seed_everything(seed), one
         * torch.randperm(4096) per line on the CPU generator (spec 7a) */
        bf_py_random torch_rng;
        int order[S1_UNITS];
        bf_torch_manual_seed(&torch_rng, (uint64_t)cfg->run.seed);
        for (int i = 0; i < n && s == BF_OK; i++) {
            uint64_t noise_seed = bf_seed_derive((uint64_t)cfg->run.seed, BF_STREAM_FRAGMENTS_NOISE,
                                                 (uint64_t)setting << 20 | (uint64_t)i);
            if (c->noise_masks == 1 && flips > 0) bf_torch_randperm(&torch_rng, S1_UNITS, order);
            s = run_line(f, bf_line_eval(i), k, flips, noise_seed, c->noise_masks == 1 ? order : NULL, (uint64_t)i, img,
                         s1, flipped, z);
            bf_fragments_merge(final, L);
            line_scores r = score_line(L, base + (size_t)i * S1_UNITS, flipped, s1, img, base_img + (size_t)i * PIXELS,
                                       c->metrics == 1);
            const double v[5] = {r.noise_reduction, r.line_recon, r.recall, r.precision, r.accuracy};
            for (int m = 0; m < 5; m++) {
                if (isnan(v[m]) && c->metrics == 0) skipped[m]++; /* nothing to score on this line */
                else sum[m] += v[m], counted[m]++; /* reference: a NaN makes the mean NaN */
            }
        }
        double mean[5];
        for (int m = 0; m < 5; m++) mean[m] = counted[m] ? sum[m] / counted[m] : NAN;
        if (!noisy && k - 1 < BF_FRAG_MAX_INTERRUPT) out->interrupt_recon[k - 1] = mean[1], out->interrupt_skipped[k - 1] = skipped[1];
        if (noisy && setting < BF_FRAG_MAX_NOISE_LEVELS) {
            out->noise_reduction[setting] = mean[0], out->noise_recall[setting] = mean[2];
            out->noise_precision[setting] = mean[3], out->noise_levels = setting + 1;
        }
        char name[32];
        if (noisy) snprintf(name, sizeof name, "noise %.2f", p);
        else snprintf(name, sizeof name, "interrupt %d", k);
        if (text && c->metrics == 0)
            fprintf(text, "%-14s %9.4f %9.4f %9.4f %9.4f %9.4f   %d %d %d %d\n", name, mean[0], mean[1], mean[2], mean[3],
                    mean[4], skipped[0], skipped[1], skipped[2], skipped[3]);
        else if (text)
            fprintf(text, "%-14s %9.4f %9.4f %9.4f %9.4f %9.4f\n", name, mean[0], mean[1], mean[2], mean[3], mean[4]);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "act_threshold", c->bernoulli ? -1 : c->act_threshold);
        cJSON_AddNumberToObject(o, "power_start", c->power_start);
        cJSON_AddNumberToObject(o, "power_step", c->power_step);
        cJSON_AddNumberToObject(o, "noise", p);
        cJSON_AddNumberToObject(o, "line_interrupt", k);
        cJSON_AddNumberToObject(o, "lines", n);
        add_number(o, "noise_reduction", mean[0]);
        add_number(o, "avg_line_recon_accuracy", mean[1]);
        add_number(o, "recon_recall", mean[2]);
        add_number(o, "recon_precision", mean[3]);
        add_number(o, "recon_accuracy", mean[4]);
        if (c->metrics == 0) { /* the lines each mean left out, having nothing to score */
            cJSON_AddNumberToObject(o, "skipped_noise_reduction", skipped[0]);
            cJSON_AddNumberToObject(o, "skipped_avg_line_recon_accuracy", skipped[1]);
            cJSON_AddNumberToObject(o, "skipped_recon_recall", skipped[2]);
            cJSON_AddNumberToObject(o, "skipped_recon_precision", skipped[3]);
        }
        cJSON_AddStringToObject(o, "metrics", c->metrics ? "reference" : "scored");
        s = append_json_line(results, o);
    }
    free(base), free(base_img), free(img), free(s1), free(L), free(z), free(flipped);
    return s;
}

/* Where the evaluation of a checkpoint writes: the run directory it belongs to (RUN of
 * RUN/checkpoints/epoch_NNNN/model.safetensors), else the directory of its weights file (a
 * converted checkpoint, a weights file in no run). */
static bf_status results_dir_of(const char *checkpoint, char *dir) {
    char file[BF_PATH_MAX];
    BF_TRY(bf_checkpoint_weights_file(checkpoint, file));
    char *slash = strrchr(file, '/');
    if (!slash) {
        snprintf(dir, BF_PATH_MAX, ".");
        return BF_OK;
    }
    *slash = '\0'; /* file: the weights' directory */
    char *up = strrchr(file, '/');
    if (up) {
        *up = '\0'; /* file: its parent */
        char *top = strrchr(file, '/');
        if (strcmp(top ? top + 1 : file, "checkpoints") == 0) { /* RUN/checkpoints/NAME: RUN */
            if (top) *top = '\0';
            snprintf(dir, BF_PATH_MAX, "%s", !top ? "." : file[0] ? file : "/");
            return BF_OK;
        }
        *up = '/';
    }
    snprintf(dir, BF_PATH_MAX, "%s", file);
    return BF_OK;
}

bf_status bf_fragments_evaluate_checkpoint(const bf_config *cfg, const char *checkpoint, FILE *text,
                                           bf_fragments_result *out, char *results_dir) {
    bf_fragments_options fo;
    BF_TRY(bf_fragments_options_of(cfg, &fo));
    bf_config *at = malloc(sizeof *at); /* cfg with [run] dir where the results go */
    if (!at) return bf_error(BF_ERR_OOM, "net fragments: out of host memory");
    *at = *cfg;
    bf_status s = results_dir_of(checkpoint, at->run.dir);
    bf_fragments *f = NULL;
    if (s == BF_OK) s = bf_fragments_create(&fo, &f);
    if (s == BF_OK) s = load_checkpoint(checkpoint, bf_fragments_weights(f), NULL);
    if (s == BF_OK) s = bf_fragments_evaluate(at, f, text, out);
    if (s == BF_OK && results_dir) snprintf(results_dir, BF_PATH_MAX, "%s", at->run.dir);
    bf_fragments_destroy(f);
    free(at);
    return s;
}
