/* task_eval.c - per-task evaluation of multi-task datasets (see task_eval.h). */
#include "task_eval.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static bf_status evaluate_one_task(const bf_dataset *data, const bf_loader_options *base, int task, int epoch,
                                   int max_batches, bf_task_predict_fn predict, void *ctx, int32_t *predictions,
                                   long *correct, long *samples, double *loss_sum) {
    bf_loader_options o = *base;
    o.task = task;
    o.shuffle = 0;
    o.drop_last = 0;
    bf_loader *loader = NULL;
    BF_TRY(bf_loader_create(data, &o, &loader));
    bf_status s = bf_loader_start_epoch(loader, epoch, 0);
    for (int batches = 0; s == BF_OK && (max_batches <= 0 || batches < max_batches); batches++) {
        bf_batch *batch = NULL;
        s = bf_loader_next(loader, &batch, NULL);
        if (s != BF_OK || !batch) break;
        s = predict(ctx, batch, predictions, loss_sum);
        for (int j = 0; s == BF_OK && j < batch->n; j++) *correct += predictions[j] == batch->labels[j];
        *samples += batch->n;
        bf_loader_release(loader, batch);
    }
    bf_loader_destroy(loader);
    return s;
}

bf_status bf_evaluate_tasks(const bf_dataset *data, const bf_loader_options *base, int epoch, int max_batches,
                            bf_task_predict_fn predict, void *ctx, bf_task_eval_result *out) {
    if (!data || !base || !predict || !out) return bf_error(BF_ERR_ARG, "bf_evaluate_tasks: NULL argument");
    if (data->num_tasks < 1 || data->num_tasks > BF_MAX_TASKS)
        return bf_error(BF_ERR_ARG, "bf_evaluate_tasks: dataset %s has %d tasks (a multi-task dataset has 1..%d)",
                        data->name, data->num_tasks, BF_MAX_TASKS);
    *out = (bf_task_eval_result){.num_tasks = data->num_tasks};
    int32_t *predictions = malloc((size_t)(base->batch_size > 0 ? base->batch_size : 1) * sizeof *predictions);
    if (!predictions) return bf_error(BF_ERR_OOM, "bf_evaluate_tasks: out of host memory");
    bf_status s = BF_OK;
    for (int k = 0; s == BF_OK && k < data->num_tasks; k++) {
        long correct = 0, samples = 0;
        double loss = 0;
        s = evaluate_one_task(data, base, k, epoch, max_batches, predict, ctx, predictions, &correct, &samples, &loss);
        if (s != BF_OK) s = bf_error_context(s, "evaluating task %d of %s", k, data->name);
        out->samples = (int)samples;
        out->task_accuracy[k] = samples ? (double)correct / (double)samples : 0;
        out->task_loss[k] = samples ? loss / (double)samples : 0;
        out->mean_accuracy += out->task_accuracy[k] / data->num_tasks;
        out->mean_loss += out->task_loss[k] / data->num_tasks;
    }
    free(predictions);
    return s;
}

void bf_metrics_eval_tasks(bf_metrics_log *log, int epoch, long step, const bf_task_eval_result *r,
                           const char *split, FILE *text) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "eval_tasks");
    cJSON_AddStringToObject(o, "split", split);
    cJSON_AddNumberToObject(o, "epoch", epoch);
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "samples", r->samples);
    cJSON_AddNumberToObject(o, "accuracy", r->mean_accuracy);
    cJSON_AddNumberToObject(o, "loss", r->mean_loss);
    cJSON *acc = cJSON_AddArrayToObject(o, "task_accuracy"), *loss = cJSON_AddArrayToObject(o, "task_loss");
    for (int k = 0; k < r->num_tasks; k++) {
        cJSON_AddItemToArray(acc, cJSON_CreateNumber(r->task_accuracy[k]));
        cJSON_AddItemToArray(loss, cJSON_CreateNumber(r->task_loss[k]));
    }
    char *line = cJSON_PrintUnformatted(o);
    if (line && log && log->jsonl) {
        fprintf(log->jsonl, "%s\n", line);
        fflush(log->jsonl);
    }
    cJSON_free(line);
    cJSON_Delete(o);
    if (log) bf_metrics_break_line(log);
    if (text) {
        fprintf(text, "eval after epoch %d: %s mean task accuracy %.2f%% over %d tasks (%d images each):", epoch, split,
                100 * r->mean_accuracy, r->num_tasks, r->samples);
        for (int k = 0; k < r->num_tasks && k < 8; k++) fprintf(text, " %.1f", 100 * r->task_accuracy[k]);
        fprintf(text, "%s\n", r->num_tasks > 8 ? " ..." : "");
        fflush(text);
    }
}
