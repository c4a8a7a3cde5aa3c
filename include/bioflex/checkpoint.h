/* checkpoint.h - saving and restoring a training run.
 *
 * A checkpoint is a directory <run dir>/checkpoints/epoch_NNNN/ holding
 *   model.safetensors  the weights and batch-norm buffers under PyTorch state_dict names
 *                      ("features.0.weight", "features.1.running_mean", ...), loadable with
 *                      safetensors.torch.load_file and model.load_state_dict;
 *   state.safetensors  optimiser state ("optimizer.momentum" or "optimizer.exp_avg" and
 *                      "optimizer.exp_avg_sq", flat in parameter order) and, in its metadata, the
 *                      epoch, step, seed, schedule position and data order.
 * Both files carry a format version and a CRC-32 (safetensors.h). The directory is written as
 * epoch_NNNN.tmp and renamed when both files are complete, then <run dir>/checkpoints/latest is
 * replaced (write-to-temporary and rename) with its name: a crash at any point leaves the
 * previous checkpoint intact and `latest` pointing at a complete one. */
#ifndef BIOFLEX_CHECKPOINT_H
#define BIOFLEX_CHECKPOINT_H

#include "bioflex/config.h"
#include "bioflex/model.h"
#include "bioflex/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bf_train_state {
    int epoch;          /* epochs completed */
    long step;          /* optimiser steps completed */
    long seed;
    int batch_in_epoch; /* batches of epoch `epoch` already trained: > 0 for a checkpoint inside an
                           epoch ([run] checkpoint_every_steps, or a run stopped by a signal) */
    double eval_top1;   /* the evaluation's top-1 at this point, written as metadata (< 0: none) */
    int schedule_epoch, schedule_batch; /* where the learning-rate schedule starts: (0, 0), or the
                           position of a --resume under [run] resume_schedule = restart; the rate
                           is the schedule's at the position counted from there */
    char lr_schedule[256]; /* read back: the schedule the checkpoint's run had (bf_schedule_describe;
                              empty when the checkpoint predates it); writing uses the config's */
    char data[192];        /* the data the order depends on (bf_resume_describe_data), written as
                              metadata when set, read back (empty when the checkpoint predates it) */
    char network[2048];    /* read back: the network the checkpoint's run trained (bf_config_describe_network),
                              has_network = 0 when the checkpoint predates it; writing uses the config's */
    char learning[1024];   /* likewise how it learned (bf_config_describe_learning) */
    int has_network;
    int batches_per_epoch; /* the run's batches per epoch, written as metadata when set, read back
                              (0 when the checkpoint predates it): a checkpoint after an epoch's
                              last batch is at its end, whatever the next run's batch */
    /* What a checkpoint inside a log interval has trained but metrics.jsonl not yet logged, over
     * every rank: the training loss and correct answers summed over the interval_images images
     * since the last train line, and (BU-TD, which prints each epoch's training loss) the loss
     * summed over the epoch_images images of the epoch so far. A resume starts its sums from them,
     * so that its first train line and that epoch's loss average the images an uninterrupted run
     * averages. Zero where nothing is pending, and read back as zero from older checkpoints. */
    double interval_loss, interval_correct, epoch_loss;
    long interval_images, epoch_images;
    long skipped_images; /* file datasets: training images skipped as undecodable since the run began,
                            every rank's (metrics.jsonl's skipped_images goes on from it) */
} bf_train_state;

/* The training data and global batch (batch_size over all ranks) as one phrase, for
 * bf_train_state.data: "fashion_mnist, 60000 training samples in global batches of 128", with what
 * else decides which samples an epoch's batches hold where it is not the default: ", in file order"
 * ([data] shuffle = false), ", balanced subset of 100 per class from seed 42" ([data] subset). */
void bf_resume_describe_data(const char *dataset, int train_samples, int global_batch, const bf_data_config *data,
                             char *out, size_t out_size);

/* After a checkpoint in `dir` loaded into `saved`: prints where the run resumes (text nullable: say
 * nothing), refuses a checkpoint inside an epoch whose data phrase differs from data_now (the rest
 * of that epoch's order would not be the one it started) or whose position is past this run's
 * batches_per_epoch, and notes a data or schedule change at an epoch boundary.
 * Under [run] resume_schedule = restart it moves saved's schedule start to the resume position.
 * resume.c. */
bf_status bf_resume_check(FILE *text, const char *dir, bf_train_state *saved, const char *data_now,
                          int batches_per_epoch, const bf_config *cfg);

/* Writes a checkpoint for `state` under cfg->run.dir; *written (nullable, BF_PATH_MAX) gets its path.
 * At an epoch boundary it is checkpoints/epoch_NNNN (kept); inside an epoch checkpoints/step_NNNNNNNNN,
 * and only the newest of those is kept: writing any checkpoint removes the older step_ ones. */
bf_status bf_checkpoint_save(const bf_config *cfg, const bf_model *m, const bf_optimizer *opt,
                             const bf_train_state *state, char *written);

/* [run] keep_best: writes checkpoints/best (state->eval_top1 in its metadata); `latest` and the
 * other checkpoints are left as they are. */
bf_status bf_checkpoint_save_best(const bf_config *cfg, const bf_model *m, const bf_optimizer *opt,
                                  const bf_train_state *state, char *written);
/* The top-1 stored in run_dir's checkpoints/best (its state file's "eval_top1") into *top1, -1 when
 * there is none (and when it fails); an error naming the file when it cannot be read or its
 * eval_top1 is not a number in [0, 1] (a resumed keep_best run compares every evaluation with it:
 * train.c and butd_train.c refuse such a file). */
bf_status bf_checkpoint_read_best_top1(const char *run_dir, double *top1);

/* The epochs done when the checkpoint in `dir` (a checkpoint directory) was written: its state
 * file's "epoch" metadata. bioflex-eval evaluates with the test noise of that epoch, as the run's
 * own evaluation there did. */
bf_status bf_checkpoint_epoch(const char *dir, int *epoch);
/* Whether the weights of the checkpoint in `dir` are the ones its state file was written beside
 * (the check a resume makes); BF_OK for weights without a state file. bioflex-eval runs it. */
bf_status bf_checkpoint_check_weights(const char *dir);
/* The network the checkpoint in `dir` was trained as (its state file's "network" metadata,
 * bf_config_describe_network); *recorded = 0 for a checkpoint older than it. */
bf_status bf_checkpoint_network(const char *dir, char *network, size_t cap, int *recorded);

/* Whether the end of the run's epoch `epochs_done` gets a checkpoint: the last epoch and every
 * [run] checkpoint_every. */
int bf_epoch_checkpoint_due(const bf_config *cfg, int epochs_done);

/* Resolves a --resume / --checkpoint argument: a checkpoint directory, a run directory whose
 * checkpoints/latest names one, that checkpoints/ directory, or the latest file itself. */
bf_status bf_checkpoint_resolve(const char *path, char *dir_out);

/* Loads weights and buffers into m (shapes must match the built model). */
bf_status bf_checkpoint_load_model(const char *dir, bf_model *m);

/* [model] init_weights: copies the weights and buffers of `path` (a safetensors file, or a
 * checkpoint/run directory's model.safetensors) into m, by state_dict name, except the tensors
 * whose names start with one of the comma-separated prefixes of `exclude` (they keep their
 * initialisation). Every other tensor of the model must be in the file with its shape, and every
 * tensor of the file must be one of the model's (or excluded): a mismatch names the tensor. */
bf_status bf_checkpoint_init_weights(const char *path, const char *exclude, bf_model *m);
/* The weights file `path` names (BF_PATH_MAX): itself when it is a file (other than a `latest`
 * pointer), else the model.safetensors of the checkpoint it resolves to (bf_checkpoint_resolve). */
bf_status bf_checkpoint_weights_file(const char *path, char *file_out);
/* Loads optimiser state and the training position; refuses a checkpoint of another optimiser,
 * seed or parameter count with a message. */
bf_status bf_checkpoint_load_state(const char *dir, const bf_config *cfg, const bf_model *m, bf_optimizer *opt,
                                   bf_train_state *state);

/* The same for a network that is not a bf_model (a BU-TD network): what the state file needs to
 * know of it, and a function that writes its model.safetensors. */
typedef struct bf_checkpoint_subject {
    bf_backend *backend;
    size_t num_param_floats;
    const char *arch;
    bf_status (*write_model)(const char *path, const void *model);
    const void *model;
} bf_checkpoint_subject;

bf_status bf_checkpoint_save_subject(const bf_config *cfg, const bf_checkpoint_subject *subject,
                                     const bf_optimizer *opt, const bf_train_state *state, char *written);
bf_status bf_checkpoint_save_best_subject(const bf_config *cfg, const bf_checkpoint_subject *subject,
                                          const bf_optimizer *opt, const bf_train_state *state, char *written);
bf_status bf_checkpoint_load_state_subject(const char *dir, const bf_config *cfg, const bf_checkpoint_subject *subject,
                                           bf_optimizer *opt, bf_train_state *state);

#ifdef __cplusplus
}
#endif
#endif
