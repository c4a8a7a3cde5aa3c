/* eval_results.h - internal: bioflex-eval --results FILE.json, the scores it prints as JSON, for the
 * scripts that gather many evaluations (an ImageNet-C sweep, a table over seeds), which would
 * otherwise read two-decimal percentages off the text. */
#ifndef BIOFLEX_EVAL_RESULTS_H
#define BIOFLEX_EVAL_RESULTS_H

#include <stdio.h>

#include "bioflex/train.h"
#include "task_eval.h"

typedef struct bf_eval_results {
    const char *checkpoint;            /* the checkpoint directory scored */
    const bf_eval_result *test;        /* the test split */
    const bf_eval_result *train;       /* [run] eval_train: the training split (NULL: not scored) */
    int butd;                          /* a BU-TD network: one accuracy (test->top1), no top-5 */
    const bf_task_eval_result *tasks;  /* a guided BU-TD network's tasks (NULL: ungated) */
} bf_eval_results;

/* Writes {"checkpoint": DIR, "test": SCORES[, "train": SCORES]} to f. SCORES of a [model] network:
 * {"images", "loss", "top1", "top5", "balanced_top1", "correct_top1", "correct_top5",
 * "max_abs_logit", "max_loss", "nonfinite_losses"}, accuracies as fractions and the counts of
 * correct images they are; of a BU-TD network: {"images", "loss", "accuracy"[, "correct"]
 * [, "tasks": [{"accuracy", "loss"}...], "images_per_task"]}. A number that is not finite is null. */
bf_status bf_eval_results_write(FILE *f, const bf_eval_results *r);

#endif
