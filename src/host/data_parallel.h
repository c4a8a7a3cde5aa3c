/* data_parallel.h - internal: what the training run does differently when it is one of several
 * data-parallel ranks (mpirun/srun with the MPI communicator). With one rank every function here
 * is a no-op, so the single-process run is unchanged.
 *
 *   start: the communicator, a check that every rank resolved the same config, the per-rank
 *          batch (global [data] batch_size / world) and the data shard of this rank;
 *   model: parameters and buffers broadcast from rank 0 (they are equal anyway when the seeds are,
 *          but a resumed or hand-edited rank must not drift);
 *   step:  gradients averaged over the ranks after the backward pass, before the gradient norm,
 *          clipping and the optimiser, which then run identically on every rank; with [run]
 *          sync_bn, batch-norm's per-channel sums all-reduced inside the passes (sync_bn.c);
 *   logs:  the loss/accuracy sums of an interval and the evaluation counts summed over the ranks;
 *          rank 0 alone writes metrics.jsonl, the text log and checkpoints; the exposed
 *          communication per step (comm_exposed_ms) is rank 0's own. */
#ifndef BIOFLEX_DATA_PARALLEL_H
#define BIOFLEX_DATA_PARALLEL_H

#include <stdio.h>

#include "bioflex/comm.h"
#include "bioflex/checkpoint.h"
#include "bioflex/config.h"
#include "bioflex/data.h"
#include "bioflex/model.h"
#include "bioflex/train.h"
#include "grad_buckets.h"
#include "metrics.h"
#include "wait_timer.h"

typedef struct bf_data_parallel {
    bf_comm *comm;
    int owns_comm;    /* 0: the --gpus driver made the communicator and releases it */
    int failed_together; /* a start-up check failed on every rank at once (its verdict is shared): the
                            ranks leave MPI normally and exit with the error's status (2 for a config
                            error) instead of MPI_Abort's 1 */
    int sync_bn;      /* [run] sync_bn with more than one rank */
    int rank, world;
    bf_config local;  /* the config with this rank's batch sizes: what the run builds from */
    FILE *quiet_text; /* /dev/null: the text log of ranks other than 0 */
    float *staging;   /* host copy of device buffers for MPI when the backend is not the CPU */
    size_t staging_floats;
    double *sync_staging; /* host copy of sync_bn's sums for MPI when the backend is not the CPU */
    size_t sync_staging_doubles;
    /* NCCL gradient buckets, launched from the backward pass (on_layer_backward) */
    bf_model *model;
    bf_backend *sync_backend; /* the sync_bn hook's backend (the model's, or a BU-TD network's) */
    bf_grad_buckets buckets;
    int bucket_mib;       /* [run] bucket_mib */
    /* Exposed communication: the part of the gradient all-reduce the step waits for.
     *   NCCL: GPU time the compute stream is held by its wait for the buckets (wait_timer.h);
     *   MPI:  host wall time inside the blocking gradient all-reduce. */
    bf_wait_timer *wait_timer;
    double comm_ms;       /* MPI: summed over the steps of the current log interval */
    int comm_steps;
    /* bf_dp_set_warmup: NCCL collectives are waited for as soon as they are launched */
    int wait_each_collective;
} bf_data_parallel;

/* One rank of a training run. comm NULL: join the launcher's world (mpirun/srun) or run alone;
 * otherwise the rank of that communicator (one GPU thread of --gpus; not released here). */
bf_status bf_train_rank(const bf_config *cfg, const bf_train_options *opt, bf_comm *comm, bf_train_result *result);
/* Whether bf_train goes through bf_train_gpus (NCCL) rather than one rank of the plain or MPI
 * path: --gpus > 1, [run] force_nccl, or several processes started by mpirun/srun (launcher_world)
 * on the CUDA backend ([run] device = cuda, or auto with a visible GPU) of a build with NCCL: one
 * process per GPU then uses NCCL for every tensor, MPI only for the unique id. */
int bf_train_uses_nccl(const bf_config *cfg, int launcher_world, int visible_gpus, int nccl_built);
/* --gpus N: one host thread per GPU, NCCL communicators made in one group (train_gpus.c). With
 * mpirun/srun, each process drives `gpus` GPUs and MPI carries NCCL's unique id. */
bf_status bf_train_gpus(const bf_config *cfg, const bf_train_options *opt, int gpus, bf_train_result *result);
/* The first of this process's `gpus` GPUs, local_process being its place among its node's processes
 * and `visible` the GPUs it sees: with several --gpus processes on a node that all see every GPU,
 * process k takes GPUs k*gpus .. k*gpus+gpus-1; when each sees only its own (srun --gpus-per-task,
 * CUDA_VISIBLE_DEVICES per process), or it is alone, GPU 0 onwards. A process whose block would lie
 * past the visible GPUs is refused (a config error) rather than sharing process 0's. */
bf_status bf_gpus_first_device(int local_process, int gpus, int visible, int *first);

/* The rendezvous file's exchange for --gpus without MPI: process 0 writes its NCCL unique id (id,
 * 128 bytes) and its --gpus to path; the others read them into id, and a process whose gpus differs
 * from process 0's is refused (a config error) rather than left to hang in NCCL's start-up. */
bf_status bf_gpus_rendezvous(const char *path, const char *job, int proc_rank, int gpus, unsigned char id[128],
                             double timeout_s);

/* The BU-TD training run of one rank (butd_train.c): bf_train_rank calls it for a config with
 * [butd] network != none. text is the rank's text log (bf_dp_text). */
bf_status bf_butd_train_rank(const bf_config *cfg, const bf_train_options *opt, bf_data_parallel *dp, FILE *text,
                             bf_train_result *result);
/* bioflex-eval for a BU-TD config (butd_train.c): the network in `checkpoint` (a weights file, or a
 * checkpoint or run directory) scored on the test split as training scores it; guided networks
 * score every task (*tasks, nullable, gets each one's accuracy; out->top1 is their mean). Writes
 * nothing to the run directory. *file (BF_PATH_MAX) gets the weights file read. subnetworks
 * (nullable, guided networks): also each task's instruction masks and their overlaps
 * (bf_butd_subnetworks_compute; the caller frees them). */
struct bf_task_eval_result;
struct bf_butd_subnetworks;
bf_status bf_butd_evaluate_checkpoint(const bf_config *cfg, const char *checkpoint, bf_eval_result *out,
                                      struct bf_task_eval_result *tasks, char *file,
                                      struct bf_butd_subnetworks *subnetworks);

/* Joins the launcher's world and derives this rank's config. *run_cfg points at the config the
 * run must use (cfg itself with one rank). */
bf_status bf_dp_start(bf_data_parallel *dp, const bf_config *cfg, bf_comm *comm, const bf_config **run_cfg);
/* The backend of this rank: the configured one, on the rank's GPU with NCCL, on GPU
 * local_rank % visible GPUs for MPI ranks that use CUDA. With NCCL, the backend waits for the
 * collectives in flight before it allocates, searches or copies through pageable memory
 * (bf_cuda_set_driver_fence in ops.h). */
bf_status bf_dp_create_backend(bf_data_parallel *dp, const bf_config *cfg, bf_backend **out);
/* Loader options of this rank: its shard of every epoch; a partial last global batch is dropped
 * in training (every rank must take the same number of steps). */
void bf_dp_loader_options(const bf_data_parallel *dp, bf_loader_options *o, int training);
/* Errors when the ranks opened different data (a hash of both splits' sizes, shapes and labels) or
 * when the training split gives a rank no full batch; notes on text (nullable) the samples each
 * epoch leaves out when the global batch does not divide the training split. */
bf_status bf_dp_check_data(bf_data_parallel *dp, const bf_dataset *train_set, const bf_dataset *test_set,
                           FILE *text);
/* After --resume (or at a fresh start): errors unless every rank starts at the same position
 * (epoch, step, batch in the epoch, seed; resumed or not), naming the ranks' positions; then rank
 * 0's optimiser state to every rank. */
bf_status bf_dp_agree_start(bf_data_parallel *dp, const bf_train_state *st, int resumed, bf_backend *b,
                            bf_optimizer *opt);
/* Rank 0's parameters and buffers to every rank; with NCCL also plans the gradient buckets and
 * hooks the backward pass so each bucket's all-reduce starts as soon as its gradients are final. */
bf_status bf_dp_attach_model(bf_data_parallel *dp, bf_model *m);
/* The sync_bn hook for a network that is not a bf_model (a BU-TD network's batch-norms): *sums
 * and *ctx are NULL unless [run] sync_bn applies (several ranks). */
void bf_dp_sync_hook(bf_data_parallel *dp, bf_backend *b, bf_status (**sums)(void *, double *, size_t), void **ctx);
/* A step that may run kernels, allocations or algorithm searches for the first time (the run's
 * first step; the first one that gathers the log's monitors) sets on != 0 before it and 0 after:
 * NCCL collectives are then waited for right after their launch. The driver may block such a
 * thread in a lock another GPU's thread needs to launch its part of a collective (lazy kernel
 * loading, cuBLAS's first calls, cuDNN internals: what bf_cuda_set_driver_fence cannot reach), so
 * no collective of this rank may be in flight meanwhile. Costs the overlap of those steps only. */
void bf_dp_set_warmup(bf_data_parallel *dp, int on);
/* Gradients (m->grad_data) averaged over the ranks. */
bf_status bf_dp_average_gradients(bf_data_parallel *dp, bf_model *m);
/* Whether gradients are all-reduced in this run: several ranks, or the NCCL path with one
 * ([run] force_nccl); the plain single-process run is not. */
int bf_dp_active(const bf_data_parallel *dp);
/* The mean exposed communication per step, in ms, over the steps since the last call (0 when none
 * was timed). Call once per log interval, after the interval's host synchronisation (the read of
 * the loss sums): the NCCL timing events are complete then. */
bf_status bf_dp_interval_comm_ms(bf_data_parallel *dp, double *ms);
/* Rank 0's n backend floats to every rank (a network that is not a bf_model: BU-TD's). */
bf_status bf_dp_broadcast_floats(bf_data_parallel *dp, bf_backend *b, float *buf, size_t n);
/* n backend floats averaged over the ranks, in place (a BU-TD network's gradients). With NCCL the
 * all-reduce is enqueued on the communicator's stream between the compute stream's work before and
 * after it: no host wait. Timed as the step's exposed communication (bf_dp_interval_comm_ms). */
bf_status bf_dp_average_floats(bf_data_parallel *dp, bf_backend *b, float *buf, size_t n);
/* With NCCL: waits, with the collective timeout, for the collectives enqueued so far, so a dead
 * peer is reported instead of hanging the next host wait. Once per log interval of a loop that
 * otherwise never waits on the communicator. */
bf_status bf_dp_check_peers(bf_data_parallel *dp);
/* Sums n backend floats over the ranks, in place. */
bf_status bf_dp_sum_floats(bf_data_parallel *dp, bf_backend *b, float *buf, size_t n);
/* For a checkpoint inside a log interval (bf_train_state's pending sums): n backend floats summed
 * over the ranks into the host doubles `out`, the backend buffer left as it is (each rank goes on
 * adding to its own). A collective: every rank calls it at the same step. */
bf_status bf_dp_pending_sums(bf_data_parallel *dp, bf_backend *b, const float *buf, size_t n, double *out);
/* After a resume: rank 0's n backend floats start from the checkpoint's sums `values`, the other
 * ranks' stay 0, so that the next log line's sum over the ranks counts them once. */
bf_status bf_dp_restore_sums(bf_data_parallel *dp, bf_backend *b, float *buf, const double *values, size_t n);
/* The evaluation of every rank's shard combined into the whole split's. */
bf_status bf_dp_reduce_eval(bf_data_parallel *dp, bf_eval_result *res, double *class_counts, int classes);
/* *stop = whether any rank asked to stop (local: this rank's request). A collective when there are
 * several ranks: every rank calls it at the same step. */
bf_status bf_dp_agree_stop(bf_data_parallel *dp, int local, int *stop);
/* Metrics files on rank 0; nothing is written by the others. */
bf_status bf_dp_metrics_open(bf_data_parallel *dp, bf_metrics_log *log, const char *run_dir, int progress);
/* The text log of this rank (the given one on rank 0, /dev/null elsewhere). */
FILE *bf_dp_text(bf_data_parallel *dp, FILE *text);
/* Whether this rank writes checkpoints. */
int bf_dp_writes_checkpoints(const bf_data_parallel *dp);
/* Waits until rank 0 has written a checkpoint, so no rank runs ahead and reads a half-written one. */
bf_status bf_dp_checkpoint_written(bf_data_parallel *dp);
/* Leaves the world; failed != 0 aborts the job so the other ranks do not wait for this one. */
void bf_dp_stop(bf_data_parallel *dp, int failed);

#endif
