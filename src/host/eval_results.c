/* eval_results.c - bioflex-eval --results FILE.json (eval_results.h). */
#include "eval_results.h"

#include <math.h>
#include <cjson/cJSON.h>

#include "bioflex/status.h"

/* The count of correct images behind an accuracy: the evaluation divides a count summed exactly
 * (integers in floats, far below 2^24 per batch) by the images, so rounding gives the count back. */
static double correct_count(double accuracy, int images) { return round(accuracy * images); }

static void add_model_scores(cJSON *o, const bf_eval_result *r) {
    cJSON_AddNumberToObject(o, "images", r->samples);
    cJSON_AddNumberToObject(o, "loss", r->loss);
    cJSON_AddNumberToObject(o, "top1", r->top1);
    cJSON_AddNumberToObject(o, "top5", r->top5);
    cJSON_AddNumberToObject(o, "balanced_top1", r->balanced_top1);
    cJSON_AddNumberToObject(o, "correct_top1", correct_count(r->top1, r->samples));
    cJSON_AddNumberToObject(o, "correct_top5", correct_count(r->top5, r->samples));
    cJSON_AddNumberToObject(o, "max_abs_logit", r->max_abs_logit); /* cJSON writes NaN and inf as null */
    cJSON_AddNumberToObject(o, "max_loss", r->max_loss);
    cJSON_AddNumberToObject(o, "nonfinite_losses", r->nonfinite_losses);
}

static void add_butd_scores(cJSON *o, const bf_eval_result *r, const bf_task_eval_result *tasks) {
    cJSON_AddNumberToObject(o, "images", r->samples);
    cJSON_AddNumberToObject(o, "loss", r->loss);
    cJSON_AddNumberToObject(o, "accuracy", r->top1);
    if (!tasks) { /* one task: the accuracy is a count over the images */
        cJSON_AddNumberToObject(o, "correct", correct_count(r->top1, r->samples));
        return;
    }
    cJSON *list = cJSON_AddArrayToObject(o, "tasks"); /* the accuracy above is their mean */
    for (int k = 0; list && k < tasks->num_tasks; k++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "accuracy", tasks->task_accuracy[k]);
        cJSON_AddNumberToObject(t, "loss", tasks->task_loss[k]);
        cJSON_AddItemToArray(list, t);
    }
    cJSON_AddNumberToObject(o, "images_per_task", tasks->samples);
}

bf_status bf_eval_results_write(FILE *f, const bf_eval_results *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return bf_error(BF_ERR_OOM, "--results: out of host memory");
    cJSON_AddStringToObject(o, "checkpoint", r->checkpoint);
    cJSON *test = cJSON_AddObjectToObject(o, "test");
    if (test && r->butd) add_butd_scores(test, r->test, r->tasks);
    else if (test) add_model_scores(test, r->test);
    if (r->train) {
        cJSON *train = cJSON_AddObjectToObject(o, "train");
        if (train) add_model_scores(train, r->train);
    }
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return bf_error(BF_ERR_OOM, "--results: out of host memory");
    const int failed = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    cJSON_free(text);
    return failed ? bf_error(BF_ERR_IO, "--results: write failed") : BF_OK;
}
