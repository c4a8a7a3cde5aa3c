/* butd_train.c - the training run of a BU-TD network (bioflex-train with [butd] network != none).
 * Per step: (guided: instruction pass) -> BU pass -> loss -> TD error pass + update into grad_data
 * -> the engine's optimiser. The loss is softmax cross-entropy, or with [butd] loss = bce one
 * logit per sample and sigmoid BCE (the per-task binary heads of CelebA). The learning rate
 * follows [optim] and [schedule] (the configs in configs/butd/ use Adam and lr * 0.95^epoch, the
 * reference recipe); [optim] grad_clip_norm clips the update's global norm as in the main loop. The
 * test split is scored after every epoch. Checkpoints (checkpoint.h, the BU-TD weights as
 * model.safetensors) are written every checkpoint_every epochs and at the end, every
 * checkpoint_every_steps steps inside an epoch, and when a stop request (bf_train_options.stop)
 * ends the run early; --resume continues from any of them exactly: the data order and learning
 * rate depend only on (seed, epoch, batch, step).
 *
 * Data parallelism (--gpus N, mpirun; data_parallel.h): every rank trains on its shard of each
 * epoch with the per-rank batch, and grad_data is averaged over the ranks before the optimiser, so
 * the ranks stay identical; batch-norm uses each rank's own statistics, or with [run] sync_bn the
 * global batch's (BU and TD copies, as one process would). Evaluation is sharded too,
 * its counts summed over the ranks; rank 0 alone logs and writes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bioflex/butd.h"
#include "bioflex/checkpoint.h"
#include "data_parallel.h"
#include "fsutil.h"
#include "task_eval.h"

typedef struct butd_run {
    const bf_config *cfg;           /* this rank's (per-rank batch) */
    bf_data_parallel *dp;
    bf_backend *backend;
    bf_dataset *train_set, *test_set;
    bf_loader *train_loader, *test_loader;
    bf_loader *train_eval_loader;   /* [run] eval_train: the training split as evaluation reads it (NULL: off) */
    bf_butd_net *net;
    bf_optimizer *optim;
    bf_loader_options test_options; /* the base of guided per-task evaluation */
    bf_metrics_log log;             /* metrics.jsonl in run.dir: one eval line per epoch */
    float *x, *dlogits, *losses, *correct1, *correct5, *sums, *grad_sumsq, *clip;
    float *kept_td;                 /* learning = backprop with separate weights: B across a step (and
                                       ch_bn = independent: gamma and beta) */
    int keep_td, keep_bn;           /* what kept_td holds: the separate Bs, the batch-norms' gamma and beta */
    int32_t *labels;
    const atomic_int *stop; /* bf_train_options.stop */
    FILE *text;                        /* NULL: quiet */
    int evaluate_only;                 /* bioflex-eval: no metrics.jsonl */
    int stepped, monitored; /* a step, and a step that logged its update's norm, has run (bf_dp_set_warmup) */
} butd_run;

static void run_free(butd_run *r) {
    bf_backend *b = r->backend;
    if (b) {
        bf_free(b, r->x);
        bf_free(b, r->dlogits);
        bf_free(b, r->losses);
        bf_free(b, r->labels);
        bf_free(b, r->sums);
        bf_free(b, r->kept_td);
        if (r->optim) bf_optimizer_destroy(b, r->optim);
    }
    bf_butd_destroy(r->net);
    bf_loader_destroy(r->train_loader);
    bf_loader_destroy(r->test_loader);
    bf_loader_destroy(r->train_eval_loader);
    bf_dataset_free(r->train_set);
    bf_dataset_free(r->test_set);
    if (r->dp->rank == 0) bf_metrics_close(&r->log);
    if (b) bf_backend_destroy(b);
}

static bf_status open_data(butd_run *r) {
    const bf_config *cfg = r->cfg;
    BF_TRY(bf_run_open_dataset(cfg, BF_SPLIT_TRAIN, &r->train_set));
    BF_TRY(bf_run_open_dataset(cfg, BF_SPLIT_TEST, &r->test_set));
    BF_TRY(bf_dp_check_data(r->dp, r->train_set, r->test_set, r->text));
    bf_loader_options o = bf_loader_options_from_config(cfg, BF_SPLIT_TRAIN);
    bf_dp_loader_options(r->dp, &o, 1); /* this rank's shard of every epoch */
    /* guided: one random task per training sample, as the reference; unguided: task 0 */
    o.task = cfg->butd.guided ? BF_TASK_RANDOM : 0;
    BF_TRY(bf_loader_create(r->train_set, &o, &r->train_loader));
    o = bf_loader_options_from_config(cfg, BF_SPLIT_TEST);
    bf_dp_loader_options(r->dp, &o, 0); /* each rank scores its shard; the counts are summed */
    o.shuffle = 0; /* every epoch scores the whole test split */
    r->test_options = o; /* task 0: guided evaluation scores every task itself (bf_evaluate_tasks) */
    if (cfg->run.eval_train && !r->evaluate_only) /* the training images with the test split's transform */
        BF_TRY(bf_loader_create(r->train_set, &o, &r->train_eval_loader));
    return bf_loader_create(r->test_set, &o, &r->test_loader);
}

/* A separate TD weight B ("<layer>.back_weight"). */
static int is_td_weight(const bf_param *p) {
    const char *dot = strrchr(p->name, '.');
    return dot && strcmp(dot, ".back_weight") == 0;
}

/* A batch-norm's gamma or beta. */
static int is_norm_param(const bf_butd_net *net, int p) {
    for (int i = 0; i < net->num_layers; i++)
        for (int j = 0; j < 3; j++) {
            const bf_butd_norm *norm = net->layers[i].norm[j];
            if (norm && (norm->gamma == p || norm->beta == p)) return 1;
        }
    return 0;
}

/* A parameter that kept_td holds across the optimiser step. */
static int is_kept(const butd_run *r, int p) {
    return (r->keep_td && is_td_weight(&r->net->params[p])) || (r->keep_bn && is_norm_param(r->net, p));
}

static bf_status setup(butd_run *r) {
    const bf_config *cfg = r->cfg;
    /* the in-place progress line only on a terminal; a log file keeps one line per epoch */
    int progress = r->text != NULL && isatty(fileno(stderr));
    if (!r->evaluate_only) BF_TRY(bf_dp_metrics_open(r->dp, &r->log, cfg->run.dir, progress));
    BF_TRY(bf_dp_create_backend(r->dp, cfg, &r->backend));
    BF_TRY(open_data(r));
    const bf_dataset *d = r->train_set;
    int batch = cfg->data.batch_size, eval_batch = bf_data_eval_batch(&cfg->data);
    int max_batch = batch > eval_batch ? batch : eval_batch;
    int classes = 0;
    BF_TRY(bf_butd_outputs(cfg, d->name, d->num_classes, &classes));
    /* The instruction is the one-hot task of a multi-task dataset (bf_butd_build refuses a guided
     * config on a single-task dataset). An unguided net on a multi-task dataset learns task 0's labels. */
    int num_tasks = d->num_tasks;
    bf_status built = bf_butd_build(r->backend, &cfg->butd, d->c, d->h, d->w, max_batch, classes, num_tasks,
                                    cfg->run.seed, &r->net);
    if (built == BF_ERR_CONFIG) bf_config_locate_keys(cfg); /* a relation of the [butd] keys, or with the data */
    BF_TRY(built);
    /* [run] sync_bn: batch-norm (BU and the TD copies) over every rank's batch */
    bf_dp_sync_hook(r->dp, r->backend, &r->net->sync_sums, &r->net->sync_ctx);
    BF_TRY(bf_optimizer_create(r->backend, &cfg->optim, r->net->num_param_floats, &r->optim));
    bf_backend *b = r->backend;
    /* Backprop (and Counter-Hebb under feedback_alignment) gives a separate B no gradient, and
     * PyTorch's optimisers skip a parameter without one; ours steps every float, and weight decay
     * would shrink B (which the instruction and TD passes read): B is kept across each step instead. */
    const int b_fixed = cfg->butd.learning != BF_BUTD_COUNTER_HEBB || cfg->butd.feedback_alignment;
    /* Counter-Hebb with ch_bn = independent updates no batch-norm: gamma and beta likewise. */
    r->keep_td = b_fixed && !cfg->butd.shared_weights && cfg->optim.weight_decay > 0;
    r->keep_bn = r->net->opt.batch_norm && r->net->opt.learning == BF_BUTD_COUNTER_HEBB &&
                 r->net->opt.ch_bn == BF_BUTD_CH_BN_INDEPENDENT && cfg->optim.weight_decay > 0;
    size_t floats = 0;
    for (int p = 0; p < r->net->num_params; p++)
        if (is_kept(r, p)) floats += r->net->params[p].count;
    if (floats) BF_TRY(bf_alloc(b, floats * sizeof(float), (void **)&r->kept_td));
    size_t per = (size_t)d->c * d->h * d->w;
    BF_TRY(bf_alloc(b, (size_t)max_batch * per * sizeof(float), (void **)&r->x));
    BF_TRY(bf_alloc(b, (size_t)max_batch * classes * sizeof(float), (void **)&r->dlogits));
    BF_TRY(bf_alloc(b, (size_t)max_batch * 3 * sizeof(float), (void **)&r->losses));
    r->correct1 = r->losses + max_batch;
    r->correct5 = r->losses + 2 * max_batch;
    BF_TRY(bf_alloc(b, (size_t)max_batch * sizeof(int32_t), (void **)&r->labels));
    /* [0] the epoch's loss, [1..3] evaluation counts, [4] [5] the log interval's loss and correct answers,
     * [6] the update's sum of squares, [7] its clip factor */
    BF_TRY(bf_alloc(b, 8 * sizeof(float), (void **)&r->sums));
    r->grad_sumsq = r->sums + 6;
    r->clip = r->sums + 7;
    return BF_OK;
}

/* The per-sample losses of a batch's logits (and, when dlogits is not NULL, the per-sample
 * gradient at the logits: the TD error pass's input; correct: 1 per right prediction). */
static bf_status batch_loss(butd_run *r, int n, const float *logits, float *dlogits, float *correct) {
    bf_backend *b = r->backend;
    if (r->cfg->butd.loss == BF_BUTD_LOSS_BCE)
        return b->ops->binary_xent(b, n, logits, r->labels, r->losses, dlogits, correct);
    int k = r->net->num_classes;
    BF_TRY(b->ops->softmax_xent(b, n, k, logits, r->labels, dlogits ? r->cfg->optim.label_smoothing : 0.0f, 1.0f,
                                r->losses, dlogits));
    return correct ? b->ops->topk_correct(b, n, k, logits, r->labels, correct, r->correct5) : BF_OK;
}

/* Uploads a batch and runs the instruction and BU passes; leaves the logits in *logits. */
static bf_status forward_batch(butd_run *r, const bf_batch *batch, const float **logits) {
    bf_backend *b = r->backend;
    const bf_dataset *d = r->train_set;
    int n = batch->n;
    BF_TRY(bf_to_device(b, r->x, batch->images, (size_t)n * d->c * d->h * d->w * sizeof(float)));
    BF_TRY(bf_to_device(b, r->labels, batch->labels, (size_t)n * sizeof(int32_t)));
    BF_TRY(bf_butd_set_batch(r->net, n));
    if (r->net->opt.guided) BF_TRY(bf_butd_instruct(r->net, batch->tasks));
    return bf_butd_forward(r->net, r->x, logits);
}

/* Guided evaluation: the predicted class of each sample for its task (bf_evaluate_tasks). */
static bf_status predict_tasks(void *ctx, const bf_batch *batch, int32_t *predictions, double *loss_sum) {
    butd_run *r = ctx;
    bf_backend *b = r->backend;
    int k = r->net->num_classes, n = batch->n;
    const float *logits = NULL;
    BF_TRY(forward_batch(r, batch, &logits));
    BF_TRY(batch_loss(r, n, logits, NULL, NULL));
    float *host = malloc((size_t)n * (k + 1) * sizeof(float));
    if (!host) return bf_error(BF_ERR_OOM, "butd: out of memory");
    bf_status s = bf_to_host(b, host, logits, (size_t)n * k * sizeof(float));
    if (s == BF_OK) s = bf_to_host(b, host + (size_t)n * k, r->losses, (size_t)n * sizeof(float));
    for (int j = 0; s == BF_OK && j < n; j++) {
        int best = 0;
        for (int c = 1; c < k; c++)
            if (host[(size_t)j * k + c] > host[(size_t)j * k + best]) best = c;
        predictions[j] = k == 1 ? host[j] > 0.0f : best; /* one logit: class 1 when it is > 0 */
        *loss_sum += host[(size_t)n * k + j];
    }
    free(host);
    return s;
}

/* Accuracy over a whole split (the test split, or the training split's evaluation loader), its input
 * noise ([data] input_noise_std) that of `epoch` epochs done: drawn anew at every evaluation, as
 * train.c's. */
static bf_status evaluate(butd_run *r, bf_loader *loader, int epoch, double *loss, double *top1, int *samples) {
    bf_backend *b = r->backend;
    int total = 0;
    BF_TRY(b->ops->fill(b, r->sums, 0.0f, 4));
    BF_TRY(bf_loader_start_epoch(loader, epoch, 0));
    for (;;) {
        bf_batch *batch = NULL;
        BF_TRY(bf_loader_next(loader, &batch, NULL));
        if (!batch) break;
        const float *logits = NULL;
        bf_status s = forward_batch(r, batch, &logits);
        if (s == BF_OK) s = batch_loss(r, batch->n, logits, NULL, r->correct1);
        if (s == BF_OK) s = b->ops->accumulate_sum(b, r->losses, (size_t)batch->n, r->sums + 0);
        if (s == BF_OK) s = b->ops->accumulate_sum(b, r->correct1, (size_t)batch->n, r->sums + 1);
        total += batch->n;
        bf_loader_release(loader, batch);
        BF_TRY(s);
    }
    float h[2];
    BF_TRY(bf_to_host(b, h, r->sums, sizeof h));
    double sums[3] = {h[0], h[1], total}; /* every rank's shard */
    if (r->dp->world > 1) BF_TRY(bf_comm_allreduce_double(r->dp->comm, sums, 3));
    *loss = sums[2] > 0 ? sums[0] / sums[2] : 0.0;
    *top1 = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
    *samples = (int)sums[2];
    return BF_OK;
}

/* Guided evaluation over every rank's shard: per task, the correct answers and losses summed. */
static bf_status reduce_task_eval(const butd_run *r, bf_task_eval_result *te) {
    if (r->dp->world == 1) return BF_OK;
    int T = te->num_tasks;
    double sums[2 * BF_MAX_TASKS + 1];
    for (int k = 0; k < T; k++) { /* a rank whose shard is empty adds nothing (its fractions are not numbers) */
        sums[k] = te->samples ? te->task_accuracy[k] * te->samples : 0.0;
        sums[T + k] = te->samples ? te->task_loss[k] * te->samples : 0.0;
    }
    sums[2 * T] = te->samples;
    BF_TRY(bf_comm_allreduce_double(r->dp->comm, sums, (size_t)2 * T + 1));
    double n = sums[2 * T], acc = 0, loss = 0;
    for (int k = 0; k < T; k++) {
        te->task_accuracy[k] = n > 0 ? sums[k] / n : 0.0;
        te->task_loss[k] = n > 0 ? sums[T + k] / n : 0.0;
        acc += te->task_accuracy[k] / T;
        loss += te->task_loss[k] / T;
    }
    te->samples = (int)n;
    te->mean_accuracy = acc;
    te->mean_loss = loss;
    return BF_OK;
}

/* grad_data averaged over the ranks (a no-op in a plain single-process run); with NCCL without a
 * host wait, so the step's host work overlaps the collective. The next step's start waits for it
 * with the collective timeout (bf_dp_check_peers in train_epoch). */
static bf_status average_gradients(butd_run *r) {
    if (!bf_dp_active(r->dp)) return BF_OK;
    return bf_dp_average_floats(r->dp, r->backend, r->net->grad_data, r->net->num_param_floats);
}

/* With kept_td: every B (and gamma and beta with keep_bn) copied out before the optimiser step
 * (dir 0) or back after it (dir 1). */
static bf_status keep_td_weights(butd_run *r, int back) {
    bf_backend *b = r->backend;
    size_t at = 0;
    for (int p = 0; p < r->net->num_params; p++) {
        const bf_param *q = &r->net->params[p];
        if (!is_kept(r, p)) continue;
        float *w = r->net->param_data + q->offset;
        BF_TRY(b->ops->copy(b, back ? (void *)w : (void *)(r->kept_td + at), back ? (const void *)(r->kept_td + at) : w,
                            q->count * sizeof(float)));
        at += q->count;
    }
    return BF_OK;
}

/* The optimiser step on the averaged update, clipped to [optim] grad_clip_norm as the main loop
 * (train.c) does: the global norm (the same on every rank) scales it by min(1, clip / norm) on the
 * device. want_norm: the norm is logged after this step. */
static bf_status optimizer_step(butd_run *r, float lr, int want_norm) {
    bf_backend *b = r->backend;
    const bf_butd_net *net = r->net;
    float clip = r->cfg->optim.grad_clip_norm;
    const float *scale = NULL;
    if (clip > 0 || want_norm) BF_TRY(b->ops->sum_squares(b, net->grad_data, net->num_param_floats, r->grad_sumsq));
    if (clip > 0) {
        BF_TRY(b->ops->clip_scale(b, r->grad_sumsq, clip, r->clip));
        scale = r->clip;
    }
    if (r->kept_td) BF_TRY(keep_td_weights(r, 0));
    BF_TRY(bf_optimizer_step(b, r->optim, net->param_data, net->grad_data, lr, scale));
    return r->kept_td ? keep_td_weights(r, 1) : BF_OK;
}

static bf_status write_butd_model(const char *path, const void *net) { return bf_butd_save(net, path); }

static bf_checkpoint_subject checkpoint_subject(const butd_run *r) {
    return (bf_checkpoint_subject){.backend = r->backend, .num_param_floats = r->net->num_param_floats,
                                   .arch = "butd", .write_model = write_butd_model, .model = r->net};
}

/* A checkpoint of st's position, written by rank 0 while the other ranks wait for it. */
static bf_status save_checkpoint(butd_run *r, const bf_train_state *st, char *written) {
    bf_status s = bf_dp_check_peers(r->dp); /* the copy to the host would wait untimed for the all-reduce */
    bf_metrics_break_line(&r->log);
    if (s == BF_OK && bf_dp_writes_checkpoints(r->dp)) {
        bf_checkpoint_subject subject = checkpoint_subject(r);
        s = bf_checkpoint_save_subject(r->cfg, &subject, r->optim, st, written);
        if (s == BF_OK && r->text) fprintf(r->text, "checkpoint: %s\n", written);
    }
    return s == BF_OK ? bf_dp_checkpoint_written(r->dp) : s; /* no rank runs ahead of rank 0's files */
}

/* [run] keep_best: checkpoints/best at st, the evaluation's accuracy (the mean over tasks when
 * guided) in its metadata. */
static bf_status save_best(butd_run *r, const bf_train_state *st, double top1, double *best_top1) {
    *best_top1 = top1; /* the same on every rank: the counts were reduced */
    bf_train_state best = *st;
    best.eval_top1 = top1;
    char written[BF_PATH_MAX] = "";
    if (bf_dp_writes_checkpoints(r->dp)) {
        bf_checkpoint_subject subject = checkpoint_subject(r);
        BF_TRY(bf_checkpoint_save_best_subject(r->cfg, &subject, r->optim, &best, written));
        if (r->text) fprintf(r->text, "best accuracy so far (%.2f%%): %s\n", 100 * top1, written);
    }
    return bf_dp_checkpoint_written(r->dp);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* What a log interval of BU-TD training measured, summed over the ranks (a collective: every rank
 * calls it at the same steps), as one metrics.jsonl train line. */
typedef struct log_interval {
    double start, wait_ms;
    int images, steps;
    long carried; /* every rank's images a resumed run's first interval began with (bf_train_state) */
} log_interval;

static bf_status log_train(butd_run *r, int epoch, int steps_per_epoch, const bf_train_state *st, float lr,
                           log_interval *iv) {
    bf_backend *b = r->backend;
    float sums[3]; /* the interval's loss and correct answers, the last update's sum of squares */
    BF_TRY(bf_dp_sum_floats(r->dp, b, r->sums + 4, 2)); /* not the sum of squares: every rank holds the same */
    BF_TRY(bf_to_host(b, sums, r->sums + 4, sizeof sums)); /* the one synchronisation per interval */
    double dt = now_s() - iv->start, images = (double)iv->images * r->dp->world + iv->carried;
    bf_train_metrics mt = {.epoch = epoch, .epochs = r->cfg->run.epochs, .step = st->step,
                           .steps_per_epoch = steps_per_epoch, .step_in_epoch = st->batch_in_epoch,
                           .loss = sums[0] / images, .accuracy = sums[1] / images, .lr = lr, .grad_norm = sqrt(sums[2]),
                           .ms_per_step = 1e3 * dt / iv->steps, .images_per_s = (images - iv->carried) / dt,
                           .data_wait_ms = iv->wait_ms / iv->steps,
                           .eta_s = ((double)(r->cfg->run.epochs - epoch) * steps_per_epoch - st->batch_in_epoch) * dt /
                                    iv->steps}; /* in this run's steps */
    double comm_ms = 0; /* read after the synchronisation above: its timing events are complete */
    BF_TRY(bf_dp_interval_comm_ms(r->dp, &comm_ms));
    if (bf_dp_active(r->dp)) mt.comm_exposed_ms = &comm_ms;
    /* Once a stop is requested, no progress line: a launcher shutting down may stop reading it. */
    if (r->stop && *r->stop) r->log.progress = 0;
    bf_metrics_train(&r->log, &mt, NULL); /* the progress line on a terminal, else metrics.jsonl only */
    BF_TRY(bf_metrics_check_loss(&mt));
    *iv = (log_interval){.start = now_s()};
    return b->ops->fill(b, r->sums + 4, 0.0f, 2);
}

/* save_checkpoint inside an epoch, with what the interval and the epoch have summed (every rank's)
 * and not yet logged: a resume starts its sums from it (bf_train_state). */
static bf_status save_checkpoint_pending(butd_run *r, const bf_train_state *st, const log_interval *iv, long epoch_images,
                                         char *written) {
    bf_train_state at = *st;
    at.interval_images = (long)iv->images * r->dp->world + iv->carried;
    at.epoch_images = epoch_images;
    if (at.interval_images > 0 || at.epoch_images > 0) {
        double sums[6]; /* [0] the epoch's loss, [4] [5] the interval's loss and correct answers */
        BF_TRY(bf_dp_pending_sums(r->dp, r->backend, r->sums, 6, sums));
        at.epoch_loss = sums[0], at.interval_loss = sums[4], at.interval_correct = sums[5];
    }
    return save_checkpoint(r, &at, written);
}

/* Trains epoch `epoch` from batch st->batch_in_epoch on, advancing st. *stopped: a stop request
 * ended it early, after a checkpoint of the position (written to `written`). */
static bf_status train_epoch(butd_run *r, int epoch, bf_train_state *st, double *train_loss, char *written,
                             int *stopped) {
    bf_backend *b = r->backend;
    const bf_config *cfg = r->cfg;
    int steps_per_epoch = bf_loader_num_batches(r->train_loader), seen = 0;
    float lr = bf_schedule_lr(&cfg->optim, &cfg->schedule, epoch - st->schedule_epoch,
                              (long)st->batch_in_epoch - st->schedule_batch, steps_per_epoch, cfg->run.epochs);
    *stopped = 0;
    BF_TRY(b->ops->fill(b, r->sums, 0.0f, 8));
    BF_TRY(bf_loader_start_epoch(r->train_loader, epoch, st->batch_in_epoch));
    log_interval iv = {.start = now_s(), .carried = st->interval_images};
    /* A resume inside the epoch: the sums the stopped run had not logged (rank 0's start from them). */
    const long carried_epoch = st->epoch_images;
    if (st->interval_images > 0 || st->epoch_images > 0) {
        const double pending[6] = {st->epoch_loss, 0, 0, 0, st->interval_loss, st->interval_correct};
        BF_TRY(bf_dp_restore_sums(r->dp, b, r->sums, pending, 6));
    }
    st->interval_images = st->epoch_images = 0, st->interval_loss = st->interval_correct = st->epoch_loss = 0;
    for (;;) {
        bf_batch *batch = NULL;
        double waited = 0;
        BF_TRY(bf_loader_next(r->train_loader, &batch, &waited));
        if (!batch) break;
        iv.wait_ms += waited;
        /* this step ends a log interval: its update's norm is logged */
        int log_now = (st->step + 1) % cfg->run.log_interval == 0 || st->batch_in_epoch + 1 == steps_per_epoch;
        if (cfg->schedule.unit == BF_SCHED_UNIT_STEP)
            lr = bf_schedule_lr(&cfg->optim, &cfg->schedule, epoch - st->schedule_epoch,
                                (long)st->batch_in_epoch - st->schedule_batch, steps_per_epoch, cfg->run.epochs);
        const float *logits = NULL;
        /* NCCL: the previous step's all-reduce, waited for with the collective timeout, so a dead or
         * stuck peer is reported instead of hanging this step's untimed host copies behind it. */
        bf_status s = bf_dp_check_peers(r->dp);
        /* the first step, and the first that logs its update's norm, load kernels and allocate */
        bf_dp_set_warmup(r->dp, !r->stepped || (log_now && !r->monitored));
        if (s == BF_OK) s = forward_batch(r, batch, &logits);
        /* The per-sample gradient at the logits (softmax - onehot, not divided by n): the TD error input. */
        if (s == BF_OK) s = batch_loss(r, batch->n, logits, r->dlogits, r->correct1);
        if (s == BF_OK) s = b->ops->accumulate_sum(b, r->losses, (size_t)batch->n, r->sums + 0);
        if (s == BF_OK) s = b->ops->accumulate_sum(b, r->losses, (size_t)batch->n, r->sums + 4);
        if (s == BF_OK) s = b->ops->accumulate_sum(b, r->correct1, (size_t)batch->n, r->sums + 5);
        if (s == BF_OK) s = bf_butd_backward(r->net, r->dlogits);
        if (s == BF_OK) s = average_gradients(r);
        if (s == BF_OK) s = optimizer_step(r, lr, log_now);
        bf_dp_set_warmup(r->dp, 0);
        r->stepped = 1;
        r->monitored |= log_now;
        int n = batch->n;
        seen += n;
        bf_loader_release(r->train_loader, batch);
        BF_TRY(s);
        st->step++;
        st->batch_in_epoch++;
        iv.images += n;
        iv.steps++;
        int stop = 0, last_in_epoch = st->batch_in_epoch == steps_per_epoch, every = cfg->run.checkpoint_every_steps;
        if (log_now) BF_TRY(log_train(r, epoch, steps_per_epoch, st, lr, &iv));
        /* A stop request: alone looked at after every step, with several ranks at log intervals. */
        if (r->dp->world > 1 ? log_now : r->stop != NULL)
            BF_TRY(bf_dp_agree_stop(r->dp, r->stop && *r->stop, &stop));
        const long epoch_images = (long)seen * r->dp->world + carried_epoch; /* every rank's */
        if (stop && !(last_in_epoch && epoch == cfg->run.epochs - 1)) { /* the run's last step just finishes it */
            BF_TRY(save_checkpoint_pending(r, st, &iv, epoch_images, written));
            if (r->text)
                fprintf(r->text, "stopped on request after step %ld (epoch %d, batch %d of %d); continue with "
                        "--resume %s\n", st->step, epoch + 1, st->batch_in_epoch, steps_per_epoch, cfg->run.dir);
            *stopped = 1;
            return BF_OK;
        }
        /* at an epoch's end only when no epoch checkpoint follows */
        if (every > 0 && st->step % every == 0 && !(last_in_epoch && bf_epoch_checkpoint_due(cfg, epoch + 1)))
            BF_TRY(save_checkpoint_pending(r, st, &iv, epoch_images, written));
    }
    if (r->dp->world > 1) { /* the training loss of the whole epoch, every rank's shard */
        BF_TRY(bf_dp_sum_floats(r->dp, b, r->sums, 1));
        seen *= r->dp->world;
    }
    const long images = seen + carried_epoch;
    float h;
    BF_TRY(bf_to_host(b, &h, r->sums, sizeof h));
    *train_loss = images ? h / images : 0.0;
    return BF_OK;
}

/* Rank 0's weights everywhere, once they are loaded (init_weights, --resume): equal anyway when
 * the seeds and files are, but no rank may drift. */
static bf_status share_rank0_weights(butd_run *r) {
    BF_TRY(bf_dp_broadcast_floats(r->dp, r->backend, r->net->param_data, r->net->num_param_floats));
    BF_TRY(bf_dp_broadcast_floats(r->dp, r->backend, r->net->state_data, r->net->num_state_floats));
    if (r->net->task_data && r->net->task_param < 0) /* the fixed task head, in its own buffer */
        BF_TRY(bf_dp_broadcast_floats(r->dp, r->backend, r->net->task_data, r->net->num_task_floats));
    return BF_OK;
}

/* Restores weights, optimiser state and the training position from --resume (resume.c checks
 * that the position fits this run's data). */
static bf_status resume_run(butd_run *r, const char *from, bf_train_state *st, const char *data_now, FILE *text,
                            int quiet) {
    char dir[BF_PATH_MAX], path[BF_PATH_MAX + 32];
    BF_TRY(bf_checkpoint_resolve(from, dir));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    BF_TRY(bf_butd_load(r->net, path));
    bf_checkpoint_subject subject = checkpoint_subject(r);
    BF_TRY(bf_checkpoint_load_state_subject(dir, r->cfg, &subject, r->optim, st));
    return bf_resume_check(quiet ? NULL : text, dir, st, data_now, bf_loader_num_batches(r->train_loader), r->cfg);
}

/* [model] init_weights: the whole BU-TD network from a file or checkpoint (bf_butd_load checks
 * every tensor); the exclusion list of [model] networks has no BU-TD meaning yet. */
static bf_status init_weights(butd_run *r, FILE *text, int quiet) {
    if (r->cfg->model.init_exclude[0])
        return bf_error(BF_ERR_CONFIG, "[model] init_exclude = %s: BU-TD networks ([butd] network) load every tensor of "
                        "init_weights; leave init_exclude empty", r->cfg->model.init_exclude);
    char file[BF_PATH_MAX];
    BF_TRY(bf_checkpoint_weights_file(r->cfg->model.init_weights, file));
    BF_TRY(bf_butd_load(r->net, file));
    if (!quiet) fprintf(text, "initial weights from %s\n", file);
    return BF_OK;
}

/* One split scored in evaluation mode (guided: every task, into *tasks when not NULL) and logged as
 * `split` after `epoch` epochs; the unguided test score is printed by the caller, the others here. */
static bf_status score_split(butd_run *r, const bf_dataset *set, bf_loader *loader, const char *split, int epoch,
                             long step, double *loss, double *top1, int *samples, bf_task_eval_result *tasks) {
    bf_status s = BF_OK;
    FILE *text = r->evaluate_only ? NULL : r->text;
    if (r->cfg->butd.guided) {
        bf_task_eval_result te = {0};
        s = bf_evaluate_tasks(set, &r->test_options, epoch, 0, predict_tasks, r, &te);
        if (s == BF_OK) s = reduce_task_eval(r, &te);
        if (s == BF_OK) bf_metrics_eval_tasks(&r->log, epoch, step, &te, split, text);
        if (tasks) *tasks = te;
        *loss = te.mean_loss, *top1 = te.mean_accuracy, *samples = te.samples;
    } else {
        s = evaluate(r, loader, epoch, loss, top1, samples);
        if (s == BF_OK)
            bf_metrics_eval(&r->log, epoch, step, *loss, *top1, -1.0, -1.0, *samples, split, /* no top-5, no balanced */
                            loader == r->test_loader ? NULL : text);
    }
    return s;
}

/* The test split scored in evaluation mode (guided: every task, into *tasks when not NULL), logged
 * as after `epoch` epochs; with [run] eval_train the training split after it, logged as "train". */
static bf_status score_test_set(butd_run *r, int epoch, long step, double *loss, double *top1, int *samples,
                                bf_task_eval_result *tasks) {
    /* rank 0's running statistics everywhere, as its checkpoint holds them (see train.c) */
    bf_status s = r->dp->world > 1 ? bf_dp_broadcast_floats(r->dp, r->backend, r->net->state_data, r->net->num_state_floats) : BF_OK;
    if (s != BF_OK) return s;
    bf_butd_set_training(r->net, 0); /* batch-norm: running statistics */
    s = score_split(r, r->test_set, r->test_loader, "test", epoch, step, loss, top1, samples, tasks);
    if (s == BF_OK && r->train_eval_loader) {
        double train_loss, train_top1;
        int train_samples;
        s = score_split(r, r->train_set, r->train_eval_loader, "train", epoch, step, &train_loss, &train_top1,
                        &train_samples, NULL);
    }
    bf_butd_set_training(r->net, 1);
    return s;
}

bf_status bf_butd_train_rank(const bf_config *cfg, const bf_train_options *opt, bf_data_parallel *dp, FILE *text,
                             bf_train_result *result) {
    butd_run r;
    memset(&r, 0, sizeof r);
    memset(result, 0, sizeof *result);
    r.cfg = cfg;
    r.dp = dp;
    int quiet = opt && opt->quiet;
    r.stop = opt ? opt->stop : NULL;
    r.text = quiet ? NULL : text;
    bf_status s = setup(&r);
    bf_train_state st = {.epoch = 0, .step = 0, .seed = cfg->run.seed, .eval_top1 = -1};
    if (s == BF_OK && cfg->model.init_weights[0] && !(opt && opt->resume)) s = init_weights(&r, text, quiet);
    char data_now[sizeof st.data] = "";
    if (s == BF_OK)
        bf_resume_describe_data(r.train_set->name, r.train_set->num_samples, cfg->data.batch_size * dp->world,
                                &cfg->data, data_now, sizeof data_now);
    /* keep_best: a resumed run goes on from the best its directory holds, refused when that is no
     * top-1 (it would be beaten never or always); a fresh one starts over */
    double best_top1 = -1;
    if (s == BF_OK && opt && opt->resume && cfg->run.keep_best)
        s = bf_checkpoint_read_best_top1(cfg->run.dir, &best_top1);
    if (s == BF_OK && opt && opt->resume) s = resume_run(&r, opt->resume, &st, data_now, text, quiet);
    snprintf(st.data, sizeof st.data, "%s", data_now); /* what this run's checkpoints store */
    if (s == BF_OK) st.batches_per_epoch = bf_loader_num_batches(r.train_loader);
    if (s == BF_OK) s = bf_dp_agree_start(dp, &st, opt && opt->resume, r.backend, r.optim);
    if (s == BF_OK) s = share_rank0_weights(&r);
    if (s == BF_OK && opt && opt->started && dp->rank == 0) opt->started(opt->started_user);
    if (s == BF_OK) bf_metrics_start(&r.log, opt && opt->resume, st.epoch, st.step); /* rank 0's file */
    if (s == BF_OK) r.net->step = (uint64_t)st.step; /* the weight-noise draws ([butd] noise_std) go on from there */
    char written[BF_PATH_MAX] = "";
    int stopped = 0;
    if (s == BF_OK) s = bf_comm_broadcast(dp->comm, &best_top1, sizeof best_top1, 0); /* rank 0's files decide */
    static const char *learning[] = {"backprop", "counter_hebb"};
    const char *ch_bn = !cfg->butd.batch_norm || cfg->butd.learning != BF_BUTD_COUNTER_HEBB ? ""
                        : cfg->butd.ch_bn == BF_BUTD_CH_BN_INDEPENDENT ? " (ch_bn independent)" : " (ch_bn exact)";
    if (s == BF_OK && !quiet)
        fprintf(text, "butd: %d layers, %zu parameters, learning %s%s, weights %s%s\n", r.net->num_layers,
                r.net->num_param_floats, learning[cfg->butd.learning], ch_bn,
                cfg->butd.shared_weights ? "shared" : "separate", cfg->butd.guided ? ", guided" : "");
    if (s == BF_OK && !quiet) bf_schedule_warn_length(text, cfg, bf_loader_num_batches(r.train_loader));
    for (int epoch = st.epoch; s == BF_OK && epoch < cfg->run.epochs; epoch++) {
        double t0 = (double)clock(), train_loss = 0, loss = 0, top1 = 0;
        int samples = 0;
        s = train_epoch(&r, epoch, &st, &train_loss, written, &stopped);
        if (s == BF_OK && stopped) {
            snprintf(result->checkpoint, sizeof result->checkpoint, "%s", written);
            result->interrupted = 1;
            result->epochs_done = st.epoch;
            result->steps_done = st.step;
            break;
        }
        long step = st.step;
        /* [run] eval_every: the whole test split (every task of a guided network) after every
         * eval_every-th epoch and after the last (CelebA's 40 tasks make each pass long) */
        const int evaluate = epoch + 1 == cfg->run.epochs || (cfg->run.eval_every > 0 && (epoch + 1) % cfg->run.eval_every == 0);
        if (s == BF_OK && evaluate) s = score_test_set(&r, epoch + 1, step, &loss, &top1, &samples, NULL);
        if (s != BF_OK) break;
        bf_metrics_break_line(&r.log);
        if (!quiet && evaluate)
            fprintf(text, "epoch %d: train loss %.4f, test loss %.4f, test accuracy %.2f %%%s (%.1f s cpu)\n", epoch + 1,
                    train_loss, loss, 100.0 * top1, cfg->butd.guided ? " (mean over tasks)" : "",
                    ((double)clock() - t0) / CLOCKS_PER_SEC);
        else if (!quiet)
            fprintf(text, "epoch %d: train loss %.4f (%.1f s cpu)\n", epoch + 1, train_loss,
                    ((double)clock() - t0) / CLOCKS_PER_SEC);
        fflush(text);
        if (evaluate) {
            result->final_eval.loss = loss;
            result->final_eval.top1 = top1;
            result->final_eval.samples = samples;
        }
        result->epochs_done = epoch + 1;
        result->steps_done = step;
        st.epoch = epoch + 1;
        st.batch_in_epoch = 0;
        if (s == BF_OK && evaluate && cfg->run.keep_best && top1 > best_top1) s = save_best(&r, &st, top1, &best_top1);
        if (s == BF_OK && bf_epoch_checkpoint_due(cfg, epoch + 1)) s = save_checkpoint(&r, &st, written);
    }
    if (s == BF_OK && !stopped && result->epochs_done == 0) { /* resumed from the end: still report the test score */
        double loss = 0, top1 = 0;
        int samples = 0;
        s = score_test_set(&r, st.epoch, st.step, &loss, &top1, &samples, NULL);
        result->final_eval = (bf_eval_result){.loss = loss, .top1 = top1, .samples = samples};
        result->epochs_done = st.epoch;
        result->steps_done = st.step;
    }
    if (s == BF_OK && !stopped && r.net && bf_dp_writes_checkpoints(dp)) { /* the trained weights, beside the run's config */
        s = bf_mkdir_p(cfg->run.dir);
        if (s == BF_OK) {
            snprintf(result->checkpoint, sizeof result->checkpoint, "%s/butd_model.safetensors", cfg->run.dir);
            s = bf_butd_save(r.net, result->checkpoint);
        }
        if (s == BF_OK && !quiet) fprintf(text, "butd: weights written to %s\n", result->checkpoint);
    }
    run_free(&r);
    return s;
}

bf_status bf_butd_evaluate_checkpoint(const bf_config *cfg, const char *checkpoint, bf_eval_result *out,
                                      bf_task_eval_result *tasks, char *file, bf_butd_subnetworks *subnetworks) {
    memset(out, 0, sizeof *out);
    bf_comm *self = NULL;
    BF_TRY(bf_comm_create_self(&self));
    bf_data_parallel dp;
    const bf_config *run_cfg = cfg;
    bf_status s = bf_dp_start(&dp, cfg, self, &run_cfg); /* one rank: the whole test split here */
    butd_run r;
    memset(&r, 0, sizeof r);
    r.cfg = run_cfg;
    r.dp = &dp;
    r.evaluate_only = 1;
    if (s == BF_OK) s = bf_checkpoint_weights_file(checkpoint, file);
    if (s == BF_OK) s = setup(&r);
    if (s == BF_OK) s = bf_butd_load(r.net, file);
    double loss = 0, top1 = 0;
    int samples = 0;
    /* the test noise of the checkpoint's epoch, as the run's evaluation there drew it (0 for bare weights) */
    int epoch = 0;
    char dir[BF_PATH_MAX];
    if (s == BF_OK && bf_checkpoint_resolve(checkpoint, dir) == BF_OK)
        s = bf_checkpoint_epoch(dir, &epoch);
    else if (s == BF_OK && cfg->data.input_noise_std > 0 && cfg->data.noise_splits != 0) /* noise on the test split */
        fprintf(stderr, "note: %s is a weights file, not a checkpoint directory: its test noise is drawn as after 0 "
                "epochs (a checkpoint directory gives its own epoch's, as its run drew it)\n", checkpoint);
    if (s == BF_OK) s = score_test_set(&r, epoch, 0, &loss, &top1, &samples, tasks);
    if (s == BF_OK && subnetworks) s = bf_butd_subnetworks_compute(r.net, subnetworks); /* --subnetworks */
    *out = (bf_eval_result){.loss = loss, .top1 = top1, .samples = samples};
    run_free(&r);
    bf_dp_stop(&dp, s != BF_OK);
    bf_comm_destroy(self, s != BF_OK);
    return s;
}
