/* fragments_run.h - Net Fragments runs (src/host/fragments_train.c; ../shared/specs/netfragments.md 4
 * and 5): training S2's lateral weights by the Hebbian rule over straight lines, and the robustness
 * evaluation, from a [fragments] network = lateral config. bioflex-train and bioflex-eval call them. */
#ifndef BIOFLEX_FRAGMENTS_RUN_H
#define BIOFLEX_FRAGMENTS_RUN_H

#include <stdio.h>

#include "bioflex/config.h"
#include "bioflex/fragments.h"
#include "bioflex/train.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BF_FRAG_MAX_INTERRUPT 31
#define BF_FRAG_MAX_NOISE_LEVELS 101

/* The sweep's means over the lines (NaN where a line had nothing to score, as the reference's). */
typedef struct bf_fragments_result {
    double interrupt_recon[BF_FRAG_MAX_INTERRUPT]; /* avg_line_recon_accuracy at gaps of 1, 2, ... pixels */
    int interrupt_skipped[BF_FRAG_MAX_INTERRUPT];  /* the lines it left out (metrics = scored: nothing erased) */
    int noise_levels;                              /* the feature-noise levels 0, step, 2 step, ... */
    double noise_reduction[BF_FRAG_MAX_NOISE_LEVELS], noise_recall[BF_FRAG_MAX_NOISE_LEVELS],
        noise_precision[BF_FRAG_MAX_NOISE_LEVELS];
} bf_fragments_result;

/* The model's options from [fragments] (gamma_t = power_start + t power_step, rounded to a float once). */
bf_status bf_fragments_options_of(const bf_config *cfg, bf_fragments_options *o);
/* Trains for [run] epochs (resuming from opt->resume), writes metrics.jsonl and checkpoints, then
 * evaluates. result->final_eval.top1 holds the line reconstruction at a 1-pixel gap. */
bf_status bf_fragments_train(const bf_config *cfg, const bf_train_options *opt, bf_train_result *result);
/* The evaluation sweep of section 5 with f's weights: one JSON line per setting appended to
 * <run.dir>/fragments_results.jsonl, a table to text (nullable). */
bf_status bf_fragments_evaluate(const bf_config *cfg, bf_fragments *f, FILE *text, bf_fragments_result *out);
/* The same with the weights of a checkpoint, run directory or weights file; its results are appended
 * to fragments_results.jsonl in the run the checkpoint belongs to (RUN of RUN/checkpoints/NAME), or
 * beside a weights file in no run, whatever cfg's [run] dir says. *results_dir (nullable,
 * BF_PATH_MAX): that directory. */
bf_status bf_fragments_evaluate_checkpoint(const bf_config *cfg, const char *checkpoint, FILE *text,
                                           bf_fragments_result *out, char *results_dir);

#ifdef __cplusplus
}
#endif
#endif
