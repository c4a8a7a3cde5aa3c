/* train.h - optimisers, learning-rate schedules, evaluation and the training loop. */
#ifndef BIOFLEX_TRAIN_H
#define BIOFLEX_TRAIN_H

#include <stdatomic.h>
#include <stdio.h>

#include "bioflex/config.h"
#include "bioflex/data.h"
#include "bioflex/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- learning-rate schedule ----
 * t counts epochs (unit = epoch: the rate changes at epoch boundaries) or steps (unit = step: t =
 * epoch * steps_per_epoch + step_in_epoch, the position in this run's steps, so that a run resumed
 * at an epoch boundary with another global batch still ends its schedule at its last step); T is
 * the run's length in that unit. During warm-up (t < warmup) the rate rises linearly from
 * lr*warmup_start_factor to lr. After it: constant; step: lr*gamma^floor(t/step_size);
 * multistep: lr*gamma^(number of milestones <= t); cosine: eta_min + (lr-eta_min)(1+cos(pi*u/U))/2
 * with u = t-warmup, U = T-warmup. step_size and milestones count from the start of the run. */
float bf_schedule_lr(const bf_optim_config *opt, const bf_schedule_config *sched, int epoch, long step_in_epoch,
                     int steps_per_epoch, int total_epochs);

/* The schedule as one phrase ("cosine per step from lr 0.002 to 0 over 4 epochs"), naming only what
 * decides the rate: a checkpoint stores it, so that a resumed run can tell that it changed. */
void bf_schedule_describe(const bf_optim_config *opt, const bf_schedule_config *sched, int total_epochs, char *out,
                          size_t out_size);

/* After --resume: the rate is a function of the position and of this run's config, so a run
 * resumed with another [run] epochs, [optim] lr or [schedule] (most often one extended to more
 * epochs) continues on another curve, and the rate can jump. When `saved` (the checkpoint's
 * phrase; empty for checkpoints older than it) differs from this run's, says so on `text`. */
void bf_schedule_note_resume(FILE *text, const char *checkpoint, const char *saved, const bf_config *cfg, int epoch,
                             long step_in_epoch, int steps_per_epoch);

/* At the start of a run: warns on `text` of every schedule point the run never reaches (a warm-up
 * as long as the run, multistep milestones at or past its end, a step decay whose first step lies
 * past it), each naming the key, its value and the run's length in the schedule's unit. Returns the
 * number of warnings. */
int bf_schedule_warn_length(FILE *text, const bf_config *cfg, int steps_per_epoch);

/* ---- optimiser: state in one backend buffer, parallel to the parameter buffer ---- */
typedef struct bf_optimizer {
    bf_optimizer_kind kind;
    bf_optim_config cfg;
    size_t n;
    float *state;      /* SGD: momentum [n]; Adam, AdamW: m [n] then v [n] */
    long steps;        /* updates applied so far */
    size_t *ranges;    /* [optim] train_only: the updated float ranges, offset and count each (NULL: all) */
    int num_ranges;
} bf_optimizer;

bf_status bf_optimizer_create(bf_backend *b, const bf_optim_config *cfg, size_t num_params, bf_optimizer **out);
void bf_optimizer_destroy(bf_backend *b, bf_optimizer *o);
/* Floats of state (n for SGD, 2n for Adam and AdamW). */
size_t bf_optimizer_state_floats(const bf_optimizer *o);
/* Restricts the updates to num_ranges float ranges of the parameter buffer, ranges[2k] the offset and
 * ranges[2k + 1] the count of range k (copied; 0 ranges: every parameter again). The other
 * parameters and their optimiser state are left as they are. */
bf_status bf_optimizer_restrict(bf_optimizer *o, const size_t *ranges, int num_ranges);
/* One update of params from grads, with gradients multiplied by *grad_scale (device, nullable). */
bf_status bf_optimizer_step(bf_backend *b, bf_optimizer *o, float *params, const float *grads, float lr,
                            const float *grad_scale);

/* ---- evaluation ---- */
/* The step counter of evaluation passes (evaluate.c): far above any training step, so that their
 * random draws are none of training's. */
#define BF_EVAL_STEP (UINT64_C(1) << 40)

typedef struct bf_eval_result {
    double loss, top1, top5; /* mean loss, accuracies in [0, 1] */
    double balanced_top1;    /* the mean over the classes present of each class's top-1 (its recall):
                              * sklearn's balanced accuracy, PlasticFlex's headline metric */
    int samples;
    /* numerical health (FlexNet spec 9 Q6: a flex network's evaluation loss overflowed on a few
     * images with huge logits while its top-1 stayed sane): the largest |logit| and per-sample loss,
     * and the samples whose loss is not finite */
    double max_abs_logit, max_loss;
    int nonfinite_losses;
} bf_eval_result;

/* Runs the model in eval mode over every batch of the loader's epoch 0. */
bf_status bf_evaluate(bf_model *m, bf_loader *loader, float label_smoothing, bf_eval_result *out);
/* The same over the first max_batches batches (0 = all) of the loader's `epoch`: with a shuffling
 * loader, a random subset of the split that changes every epoch. */
bf_status bf_evaluate_batches(bf_model *m, bf_loader *loader, float label_smoothing, int epoch, int max_batches,
                              bf_eval_result *out);
/* bf_evaluate_batches that also gives the per-class counts behind balanced_top1: class_counts (2 x
 * num_classes doubles) = each class's correct top-1, then each class's samples (data parallelism
 * sums them over the ranks, then bf_balanced_top1). */
bf_status bf_evaluate_batches_by_class(bf_model *m, bf_loader *loader, float label_smoothing, int epoch, int max_batches,
                                       double *class_counts, bf_eval_result *out);
/* The mean over the classes with samples of correct / samples, from such counts. */
double bf_balanced_top1(const double *class_counts, int classes);
/* bf_evaluate_batches with the forward in training mode: batch-norm over each batch's own statistics,
 * dropout drawn (keyed as evaluation's draws are, so every call draws the same). With put_back the
 * buffers (running statistics) and the batch and sample counts the passes move are put back; without,
 * that is the caller's (a loop of calls saves them once: the buffers hold a frozen fc1 too); the flex
 * layers' conv ratios count these batches either way. (PlasticFlex's loss surface was scored so: its
 * reference never put the model in eval().) */
bf_status bf_evaluate_batches_training_mode(bf_model *m, bf_loader *loader, float label_smoothing, int epoch,
                                            int max_batches, int put_back, bf_eval_result *out);

/* The batch-norms' running statistics recomputed as the plain average of the statistics of the
 * loader's first `batches` batches of epoch 0 (the k-th with momentum 1/k; training-mode forwards,
 * no weight changes; src/host/bn_recalibrate.c): PyTorch's reset_running_stats() and momentum None.
 * *used gets the batches run (fewer when the split is shorter). */
bf_status bf_model_recalibrate_bn(bf_model *m, bf_loader *loader, int batches, int *used);

/* ---- the training run (bioflex-train) ---- */
typedef struct bf_train_options {
    const char *resume;  /* checkpoint or run directory to resume from (NULL = fresh start) */
    int quiet;           /* no progress line (tests) */
    FILE *log;           /* human-readable log (stdout when NULL) */
    int float_batches;   /* 1: JPEG datasets also load as normalised floats on the host instead of uint8
                            batches normalised by the backend (the results are the same bits; tests) */
    /* Nullable; becomes non-zero (bioflex-train: on SIGINT, SIGTERM or SIGUSR1) to ask the run to stop early:
     * it finishes the step, writes a checkpoint of that position and returns with
     * result->interrupted set. Alone the run looks after every step; with several ranks every rank
     * must stop at the same step, so they agree at log intervals. An atomic, not a volatile
     * sig_atomic_t: the signal lands in any thread (MPI's, NCCL's, a loader's), and only a lock-free
     * atomic is both safe to write in a handler and seen by another thread. */
    const atomic_int *stop;
    /* Nullable; called once, on rank 0, when the run is set up and any --resume has loaded and
     * passed its checks, before the first step: bioflex-train writes the run directory's
     * config.ini there, so that a refused resume leaves the one of the run it refused to continue. */
    void (*started)(void *user);
    void *started_user;
} bf_train_options;

typedef struct bf_train_result {
    bf_eval_result final_eval;
    int epochs_done;
    long steps_done;
    char checkpoint[BF_PATH_MAX]; /* the last checkpoint written */
    int interrupted;              /* stopped early by opt->stop; resume from `checkpoint` */
} bf_train_result;

/* Creates the backend the config asks for (run.device, run.precision, run.threads, run.cpu_conv,
 * run.deterministic). */
bf_status bf_backend_from_config(const bf_config *cfg, bf_backend **out);
/* The CPU backend with the config's threads and convolution library ([run] cpu_conv). */
bf_status bf_backend_cpu_from_config(const bf_config *cfg, bf_backend **out);
/* The CUDA backend on one device, with the config's precision and determinism. */
bf_status bf_backend_cuda_from_config(const bf_config *cfg, int device, bf_backend **out);

/* bf_dataset_open for one split of cfg's data; a config error found only when the data is read
 * (a subset larger than the split, more classes in the files than [model] num_classes allows)
 * names where its keys were set, as bf_config_validate's errors do. */
bf_status bf_run_open_dataset(const bf_config *cfg, bf_split split, bf_dataset **out);

/* Builds the configured architecture for a dataset's image shape, at the larger of the training
 * and evaluation batch sizes. A NULL backend plans the model without allocating (--dry-run).
 * for_training: the model the training steps run, planned for [optim] train_only (its backward
 * ending at the trained layers, in evaluation mode under train_only_mode = eval); 0: for
 * evaluations and analyses, every parameter's gradient available. */
bf_status bf_run_build_model(const bf_config *cfg, bf_backend *b, const bf_dataset *train_set, int for_training,
                             bf_model **out);

bf_status bf_train(const bf_config *cfg, const bf_train_options *opt, bf_train_result *result);

#ifdef __cplusplus
}
#endif
#endif
