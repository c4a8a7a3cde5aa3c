/* task_eval.h - per-task evaluation of a multi-task dataset (Multi-MNIST, CelebA), as the BU-TD
 * reference tests guided networks: every task is scored on every test sample, and the reported
 * accuracy, pooled over all (sample, task) pairs, equals the mean of the task accuracies.
 *
 * The model is reached only through a predict callback, so any network (the BU-TD nets in
 * butd_*.c, or a fake in a test) plugs in. */
#ifndef BIOFLEX_TASK_EVAL_H
#define BIOFLEX_TASK_EVAL_H

#include "bioflex/data.h"
#include "metrics.h"

#define BF_MAX_TASKS 64

/* Predicts the class of each of batch->n samples for its task batch->tasks[j] (batch->images are
 * normalised as the loader options say), writing predictions[0..n). May add the sum of the
 * batch's per-sample losses to *loss_sum (the callee may leave it alone: the loss is then 0). */
typedef bf_status (*bf_task_predict_fn)(void *ctx, const bf_batch *batch, int32_t *predictions, double *loss_sum);

typedef struct bf_task_eval_result {
    int num_tasks;
    int samples;                          /* per task (the whole split, or max_batches' worth) */
    double task_accuracy[BF_MAX_TASKS];   /* fraction correct per task */
    double task_loss[BF_MAX_TASKS];       /* mean loss per task, from the callback's loss_sum */
    double mean_accuracy;                 /* mean over tasks = accuracy pooled over (sample, task) pairs */
    double mean_loss;
} bf_task_eval_result;

/* Scores every task k = 0..num_tasks-1 over `data` (normally the test split): for each task, a
 * loader with `base` options but task = k, shuffle off and drop_last off; max_batches > 0 stops
 * each task after that many batches (epoch selects nothing else: fixed tasks draw no randomness
 * except input noise). Errors if `data` is not a multi-task dataset. */
bf_status bf_evaluate_tasks(const bf_dataset *data, const bf_loader_options *base, int epoch, int max_batches,
                            bf_task_predict_fn predict, void *ctx, bf_task_eval_result *out);

/* Appends {"type":"eval_tasks","split":..,"epoch":..,"step":..,"samples":..,"accuracy":mean,
 * "loss":mean,"task_accuracy":[..],"task_loss":[..]} to metrics.jsonl, and a one-line summary
 * to `text` (nullable). */
void bf_metrics_eval_tasks(bf_metrics_log *log, int epoch, long step, const bf_task_eval_result *r,
                           const char *split, FILE *text);

#endif
