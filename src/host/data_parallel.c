/* data_parallel.c - the training run as one of several data-parallel ranks (see data_parallel.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/hash.h"
#include "data_parallel.h"

/* The resolved config as bf_config_print writes it (*text: malloc'ed): equal text, equal runs. */
static bf_status config_text(const bf_config *cfg, char **text) {
    size_t len = 0;
    *text = NULL;
    FILE *f = open_memstream(text, &len);
    if (!f) return bf_error(BF_ERR_OOM, "data parallel: cannot print the config (out of memory)");
    bf_config_print(cfg, f);
    fclose(f);
    return BF_OK;
}

/* Marks a failure that every rank reaches at the same point with the same verdict. */
static bf_status together(bf_data_parallel *dp, bf_status s) {
    if (s != BF_OK) dp->failed_together = 1;
    return s;
}

bf_status bf_dp_start(bf_data_parallel *dp, const bf_config *cfg, bf_comm *comm, const bf_config **run_cfg) {
    memset(dp, 0, sizeof *dp);
    *run_cfg = cfg;
    dp->bucket_mib = cfg->run.bucket_mib;
    dp->comm = comm;
    if (!comm) {
        BF_TRY(bf_comm_create_world(cfg->run.collective_timeout, &dp->comm));
        dp->owns_comm = 1;
    }
    dp->rank = dp->comm->rank;
    dp->world = dp->comm->world;
    if (dp->world == 1) return BF_OK;
    char *text = NULL;
    BF_TRY(config_text(cfg, &text));
    bf_status same = bf_comm_check_same_text(dp->comm, text, "resolved config", "the same config file and --set "
                                             "overrides");
    free(text);
    BF_TRY(together(dp, same));
    if (cfg->data.batch_size % dp->world != 0)
        return together(dp, bf_error(BF_ERR_CONFIG, "[data] batch_size = %d is the global batch and must be divisible by the %d "
                        "data-parallel ranks (each rank trains on batch_size / ranks samples)", cfg->data.batch_size,
                        dp->world));
    dp->sync_bn = cfg->run.sync_bn;
    dp->local = *cfg;
    dp->local.data.batch_size = cfg->data.batch_size / dp->world;
    if (dp->local.data.batch_size % cfg->data.micro_batches != 0)
        return together(dp, bf_error(BF_ERR_CONFIG, "[data] micro_batches = %d must divide each rank's batch, [data] "
                        "batch_size = %d over %d data-parallel ranks = %d", cfg->data.micro_batches, cfg->data.batch_size,
                        dp->world, dp->local.data.batch_size));
    int eval = bf_data_eval_batch(&cfg->data);
    /* [run] val_batches scores that many whole evaluation batches: split unevenly, the ranks'
     * rounded-up shares would score more images than one process does */
    if (cfg->run.val_batches > 0 && eval % dp->world != 0)
        return together(dp, bf_error(BF_ERR_CONFIG, "[data] eval_batch_size = %d must be divisible by the %d data-parallel "
                        "ranks under [run] val_batches = %d (each rank scores eval_batch_size / ranks samples of each "
                        "batch)", eval, dp->world, cfg->run.val_batches));
    dp->local.data.eval_batch_size = (eval + dp->world - 1) / dp->world;
    dp->quiet_text = fopen("/dev/null", "w");
    if (!dp->quiet_text) return bf_error(BF_ERR_IO, "data parallel: cannot open /dev/null");
    *run_cfg = &dp->local;
    return BF_OK;
}

/* The backend's driver fence (ops.h): the rank's NCCL collectives in flight, waited for with [run]
 * collective_timeout. */
static bf_status wait_collectives(void *comm) {
    return bf_comm_nccl_wait(comm, "NCCL collectives in flight (waited for before a CUDA allocation, algorithm "
                             "search or host copy)");
}

bf_status bf_dp_create_backend(bf_data_parallel *dp, const bf_config *cfg, bf_backend **out) {
    int gpus = bf_cuda_device_count();
    int want_cuda = cfg->run.device == BF_DEVICE_SEL_CUDA || (cfg->run.device == BF_DEVICE_AUTO && gpus > 0);
    int device = -1; /* the configured backend, as in a single-process run */
    if (dp->comm->kind == BF_COMM_NCCL) device = dp->comm->device;
    else if (dp->world > 1 && want_cuda && gpus > 0) device = dp->comm->local_rank % gpus;
    if (device < 0) return bf_backend_from_config(cfg, out);
    BF_TRY(bf_backend_cuda_from_config(cfg, device, out));
    if (dp->comm->kind != BF_COMM_NCCL) return BF_OK;
    bf_status st = bf_cuda_set_driver_fence(*out, wait_collectives, dp->comm);
    /* created here, before any collective is in flight: it creates CUDA events */
    if (st == BF_OK) st = bf_wait_timer_create(*out, &dp->wait_timer);
    if (st != BF_OK) {
        bf_backend_destroy(*out);
        *out = NULL;
    }
    return st;
}

void bf_dp_loader_options(const bf_data_parallel *dp, bf_loader_options *o, int training) {
    o->rank = dp->rank;
    o->world = dp->world;
    if (training && dp->world > 1) o->drop_last = 1;
}

/* The shapes, sizes and labels of a split: ranks that read other files (a relative [data] path
 * from other working directories, a node-local copy that differs) hash differently. */
static uint64_t dataset_hash(uint64_t h, const bf_dataset *d) {
    for (const char *p = d->name; *p; p++) h = bf_hash2(h, (uint64_t)(unsigned char)*p);
    int64_t sizes[7] = {d->num_samples, d->c, d->h, d->w, d->num_classes, d->num_tasks, d->task_classes};
    for (int i = 0; i < 7; i++) h = bf_hash2(h, (uint64_t)sizes[i]);
    for (int i = 0; d->labels && i < d->num_samples; i++) h = bf_hash2(h, (uint64_t)(uint32_t)d->labels[i]);
    return h;
}

bf_status bf_dp_check_data(bf_data_parallel *dp, const bf_dataset *train_set, const bf_dataset *test_set,
                           FILE *text) {
    if (dp->world == 1) return BF_OK;
    /* Different data on different ranks would desynchronise the collectives (other batch counts) or,
     * worse, train on a mixture without a word. */
    BF_TRY(together(dp, bf_comm_check_same(dp->comm, dataset_hash(dataset_hash(0x64617461ull, train_set), test_set),
                                           "dataset (sample counts, image shape, classes, labels)",
                                           "the same data files ([data] path: an absolute path on a filesystem every "
                                           "node shares, or identical copies)")));
    int global = dp->local.data.batch_size * dp->world;
    if (train_set->num_samples < global)
        return together(dp, bf_error(BF_ERR_CONFIG, "too few samples per rank: dataset %s has %d training samples, "
                                     "fewer than one global batch of %d ([data] batch_size) over %d ranks; lower "
                                     "batch_size or the number of ranks", train_set->name, train_set->num_samples,
                                     global, dp->world));
    int left_out = train_set->num_samples % global;
    if (left_out && text)
        fprintf(text, "note: %d training samples are not a whole number of global batches of %d over %d ranks: every "
                "epoch leaves out the last %d of its permutation (one process would train them as a smaller last "
                "batch, so runs agree with one process only when the global batch divides the data)\n",
                train_set->num_samples, global, dp->world, left_out);
    return BF_OK;
}

/* ---- NCCL gradient buckets (grad_buckets.h) ----
 * A bucket's all-reduce is launched on the NCCL stream, which first waits for the compute stream's
 * work so far: the transfer overlaps the backward of the earlier layers. */
static bf_status launch_bucket(bf_data_parallel *dp, size_t from, size_t count) {
    bf_model *m = dp->model;
    BF_TRY(bf_cuda_stream_handoff(m->backend, bf_comm_nccl_stream(dp->comm), 1));
    BF_TRY(bf_comm_nccl_allreduce_async(dp->comm, m->grad_data + from, count, BF_REDUCE_AVG));
    return dp->wait_each_collective ? bf_comm_nccl_wait(dp->comm, "gradient all-reduce (warm-up step)") : BF_OK;
}

void bf_dp_set_warmup(bf_data_parallel *dp, int on) { dp->wait_each_collective = on; }

static bf_status on_layer_backward(void *ctx, bf_model *m, int layer) {
    (void)m;
    bf_data_parallel *dp = ctx;
    size_t from, count;
    return bf_grad_buckets_after_layer(&dp->buckets, layer, &from, &count) ? launch_bucket(dp, from, count) : BF_OK;
}

static bf_status plan_buckets(bf_data_parallel *dp, bf_model *m, int bucket_mib) {
    BF_TRY(bf_grad_buckets_plan(&dp->buckets, m, ((size_t)bucket_mib << 20) / sizeof(float)));
    dp->model = m;
    m->on_layer_backward = on_layer_backward;
    m->on_layer_backward_ctx = dp;
    return BF_OK;
}

/* Runs fn over n backend floats: in place on the CPU backend (its memory is host memory),
 * through a host copy on others (MPI moves host memory). */
static bf_status on_host(bf_data_parallel *dp, bf_backend *b, float *buf, size_t n,
                         bf_status (*fn)(bf_data_parallel *, float *, size_t)) {
    if (b->kind == BF_DEVICE_CPU) return fn(dp, buf, n);
    if (dp->comm->kind == BF_COMM_NCCL) {
        /* NCCL moves device memory on its own stream: order it after the compute stream's work,
         * and the compute stream's next work after the collective. */
        void *stream = bf_comm_nccl_stream(dp->comm);
        BF_TRY(bf_cuda_stream_handoff(b, stream, 1));
        BF_TRY(fn(dp, buf, n));
        return bf_cuda_stream_handoff(b, stream, 0);
    }
    if (dp->staging_floats < n) {
        float *p = realloc(dp->staging, n * sizeof(float));
        if (!p) return bf_error(BF_ERR_OOM, "data parallel: cannot stage %zu floats on the host", n);
        dp->staging = p;
        dp->staging_floats = n;
    }
    BF_TRY(bf_to_host(b, dp->staging, buf, n * sizeof(float)));
    BF_TRY(fn(dp, dp->staging, n));
    return bf_to_device(b, buf, dp->staging, n * sizeof(float));
}

static bf_status broadcast_floats(bf_data_parallel *dp, float *buf, size_t n) {
    return bf_comm_broadcast(dp->comm, buf, n * sizeof(float), 0);
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

/* The gradient all-reduce over MPI. It blocks the step, so all of its wall time is exposed; timed
 * here rather than around on_host so that a GPU rank's host copies, which first wait for the
 * backward pass to finish, do not count as communication. */
static bf_status average_floats(bf_data_parallel *dp, float *buf, size_t n) {
    double t0 = now_ms();
    BF_TRY(bf_comm_allreduce_float(dp->comm, buf, n, BF_REDUCE_AVG));
    dp->comm_ms += now_ms() - t0;
    dp->comm_steps++;
    return BF_OK;
}

static bf_status sum_floats(bf_data_parallel *dp, float *buf, size_t n) {
    return bf_comm_allreduce_float(dp->comm, buf, n, BF_REDUCE_SUM);
}

/* The model's sync_bn hook: sums n doubles of backend memory over the ranks.
 *   - NCCL (--gpus): an all-reduce of the device buffer on the communicator's stream, fenced by
 *     stream hand-offs like the gradient buckets, so the host never waits inside the step and the
 *     sums stay in the collective order every rank shares (the backward's buckets and BN sums);
 *   - MPI with the CPU backend: in place (backend memory is host memory);
 *   - MPI with a CUDA backend (one GPU per process): through a host copy. */
static bf_status sync_sums(void *ctx, double *sums, size_t n) {
    bf_data_parallel *dp = ctx;
    bf_backend *b = dp->sync_backend;
    if (dp->comm->kind == BF_COMM_NCCL) {
        void *stream = bf_comm_nccl_stream(dp->comm);
        BF_TRY(bf_cuda_stream_handoff(b, stream, 1));
        BF_TRY(bf_comm_nccl_allreduce_double_async(dp->comm, sums, n));
        if (dp->wait_each_collective) BF_TRY(bf_comm_nccl_wait(dp->comm, "sync_bn all-reduce (warm-up step)"));
        return bf_cuda_stream_handoff(b, stream, 0);
    }
    if (b->kind == BF_DEVICE_CPU) return bf_comm_allreduce_double(dp->comm, sums, n);
    if (dp->sync_staging_doubles < n) {
        double *p = realloc(dp->sync_staging, n * sizeof(double));
        if (!p) return bf_error(BF_ERR_OOM, "sync_bn: cannot stage %zu doubles on the host", n);
        dp->sync_staging = p;
        dp->sync_staging_doubles = n;
    }
    BF_TRY(bf_to_host(b, dp->sync_staging, sums, n * sizeof(double)));
    BF_TRY(bf_comm_allreduce_double(dp->comm, dp->sync_staging, n));
    return bf_to_device(b, sums, dp->sync_staging, n * sizeof(double));
}

void bf_dp_sync_hook(bf_data_parallel *dp, bf_backend *b, bf_status (**sums)(void *, double *, size_t), void **ctx) {
    *sums = NULL;
    *ctx = NULL;
    if (!dp->sync_bn) return;
    dp->sync_backend = b;
    *sums = sync_sums;
    *ctx = dp;
}

bf_status bf_dp_attach_model(bf_data_parallel *dp, bf_model *m) {
    if (dp->comm->kind == BF_COMM_NCCL) BF_TRY(plan_buckets(dp, m, dp->bucket_mib));
    if (dp->sync_bn) {
        dp->model = m;
        dp->sync_backend = m->backend;
        m->sync_sums = sync_sums;
        m->sync_ctx = dp;
    }
    if (dp->world == 1 && dp->comm->kind != BF_COMM_NCCL) return BF_OK;
    BF_TRY(bf_dp_broadcast_floats(dp, m->backend, m->param_data, m->num_param_floats));
    BF_TRY(bf_dp_broadcast_floats(dp, m->backend, m->buffer_data, m->num_buffer_floats));
    return bf_comm_broadcast(dp->comm, &m->num_batches_tracked, sizeof m->num_batches_tracked, 0);
}

bf_status bf_dp_agree_start(bf_data_parallel *dp, const bf_train_state *st, int resumed, bf_backend *b,
                            bf_optimizer *opt) {
    if (dp->world == 1) return BF_OK;
    /* Each rank reads --resume itself: a stale checkpoints/latest on one node, or node-local run
     * directories, would start the ranks at other positions, and their collectives would fall out
     * of step (or, worse, stay in step on a mixture of states). */
    char position[200];
    snprintf(position, sizeof position, "%s at epoch %d, step %ld, batch %d of the epoch, seed %ld, schedule from "
             "epoch %d batch %d", resumed ? "resumed" : "a fresh start", st->epoch, st->step, st->batch_in_epoch,
             st->seed, st->schedule_epoch, st->schedule_batch);
    BF_TRY(together(dp, bf_comm_check_same_text(dp->comm, position, "training position", "the same --resume "
                                                "checkpoint (every rank reads it: a run directory on a filesystem all "
                                                "nodes share, or identical copies)")));
    /* Same position, yet possibly other files: rank 0's optimiser state too, as its weights. */
    BF_TRY(bf_dp_broadcast_floats(dp, b, opt->state, bf_optimizer_state_floats(opt)));
    return bf_comm_broadcast(dp->comm, &opt->steps, sizeof opt->steps, 0);
}

bf_status bf_dp_average_gradients(bf_data_parallel *dp, bf_model *m) {
    if (dp->comm->kind == BF_COMM_NCCL) {
        /* The last bucket, then the compute stream waits for every bucket before the norm/optimiser.
         * The timing events around that wait measure what the backward did not hide. */
        size_t from, count;
        if (bf_grad_buckets_finish(&dp->buckets, &from, &count)) BF_TRY(launch_bucket(dp, from, count));
        BF_TRY(bf_wait_timer_begin(dp->wait_timer));
        BF_TRY(bf_cuda_stream_handoff(m->backend, bf_comm_nccl_stream(dp->comm), 0));
        return bf_wait_timer_end(dp->wait_timer);
    }
    if (dp->world == 1) return BF_OK;
    /* Each rank's loss is the mean over its equal-sized batch, so the mean of the ranks' gradients
     * is the gradient of the mean loss over the global batch: what one process would compute. */
    return on_host(dp, m->backend, m->grad_data, m->num_param_floats, average_floats);
}

int bf_dp_active(const bf_data_parallel *dp) { return dp->world > 1 || dp->comm->kind == BF_COMM_NCCL; }

bf_status bf_dp_interval_comm_ms(bf_data_parallel *dp, double *ms) {
    *ms = 0;
    if (dp->wait_timer) {
        int waits = 0;
        return bf_wait_timer_read(dp->wait_timer, ms, &waits);
    }
    if (dp->comm_steps > 0) *ms = dp->comm_ms / dp->comm_steps;
    dp->comm_ms = 0;
    dp->comm_steps = 0;
    return BF_OK;
}

bf_status bf_dp_broadcast_floats(bf_data_parallel *dp, bf_backend *b, float *buf, size_t n) {
    if (n == 0 || (dp->world == 1 && dp->comm->kind != BF_COMM_NCCL)) return BF_OK;
    return on_host(dp, b, buf, n, broadcast_floats);
}

bf_status bf_dp_average_floats(bf_data_parallel *dp, bf_backend *b, float *buf, size_t n) {
    if (dp->comm->kind == BF_COMM_NCCL) {
        /* enqueued between two stream hand-offs: the host goes on to the next step */
        void *stream = bf_comm_nccl_stream(dp->comm);
        BF_TRY(bf_cuda_stream_handoff(b, stream, 1));
        BF_TRY(bf_comm_nccl_allreduce_async(dp->comm, buf, n, BF_REDUCE_AVG));
        if (dp->wait_each_collective) BF_TRY(bf_comm_nccl_wait(dp->comm, "all-reduce (warm-up step)"));
        /* nothing overlaps it: the whole all-reduce is the step's exposed communication */
        BF_TRY(bf_wait_timer_begin(dp->wait_timer));
        BF_TRY(bf_cuda_stream_handoff(b, stream, 0));
        return bf_wait_timer_end(dp->wait_timer);
    }
    if (dp->world == 1) return BF_OK;
    return on_host(dp, b, buf, n, average_floats);
}

bf_status bf_dp_check_peers(bf_data_parallel *dp) {
    return dp->comm->kind == BF_COMM_NCCL ? bf_comm_nccl_wait(dp->comm, "gradient all-reduce") : BF_OK;
}

bf_status bf_dp_sum_floats(bf_data_parallel *dp, bf_backend *b, float *buf, size_t n) {
    /* With NCCL this also waits (with the timeout) for the gradient buckets of the interval, so a
     * dead peer is reported here instead of hanging the next host copy. */
    if (dp->comm->kind == BF_COMM_NCCL) BF_TRY(bf_comm_nccl_wait(dp->comm, "gradient all-reduce"));
    if (dp->world == 1 && dp->comm->kind != BF_COMM_NCCL) return BF_OK;
    return on_host(dp, b, buf, n, sum_floats);
}

bf_status bf_dp_pending_sums(bf_data_parallel *dp, bf_backend *b, const float *buf, size_t n, double *out) {
    float host[8];
    if (n > sizeof host / sizeof host[0]) return bf_error(BF_ERR_ARG, "pending sums: %zu floats, at most 8", n);
    BF_TRY(bf_dp_check_peers(dp)); /* the copy to the host would wait untimed for the all-reduce */
    BF_TRY(bf_to_host(b, host, buf, n * sizeof(float)));
    for (size_t i = 0; i < n; i++) out[i] = host[i];
    return dp->world > 1 ? bf_comm_allreduce_double(dp->comm, out, n) : BF_OK;
}

bf_status bf_dp_restore_sums(bf_data_parallel *dp, bf_backend *b, float *buf, const double *values, size_t n) {
    float host[8] = {0};
    if (n > sizeof host / sizeof host[0]) return bf_error(BF_ERR_ARG, "restored sums: %zu floats, at most 8", n);
    for (size_t i = 0; i < n && dp->rank == 0; i++) host[i] = (float)values[i];
    return bf_to_device(b, buf, host, n * sizeof(float));
}

bf_status bf_dp_reduce_eval(bf_data_parallel *dp, bf_eval_result *res, double *class_counts, int classes) {
    if (dp->world == 1) return BF_OK;
    if (class_counts) { /* the balanced top-1 of the whole split, from every rank's per-class counts */
        BF_TRY(bf_comm_allreduce_double(dp->comm, class_counts, 2 * (size_t)classes));
        res->balanced_top1 = bf_balanced_top1(class_counts, classes);
    }
    double sums[5] = {res->loss * res->samples, res->top1 * res->samples, res->top5 * res->samples, res->samples,
                      res->nonfinite_losses};
    BF_TRY(bf_comm_allreduce_double(dp->comm, sums, 5));
    /* the largest |logit| and loss of any rank: each rank's in its own slots of a summed vector */
    double *largest = calloc(2 * (size_t)dp->world, sizeof *largest);
    if (!largest) return bf_error(BF_ERR_OOM, "evaluation: out of host memory");
    largest[2 * dp->rank] = res->max_abs_logit, largest[2 * dp->rank + 1] = res->max_loss;
    bf_status s = bf_comm_allreduce_double(dp->comm, largest, 2 * (size_t)dp->world);
    for (int i = 0; s == BF_OK && i < dp->world; i++) {
        if (largest[2 * i] > res->max_abs_logit || isnan(largest[2 * i])) res->max_abs_logit = largest[2 * i];
        if (largest[2 * i + 1] > res->max_loss) res->max_loss = largest[2 * i + 1];
    }
    free(largest);
    BF_TRY(s);
    res->nonfinite_losses = (int)sums[4];
    res->samples = (int)sums[3];
    res->loss = sums[3] > 0 ? sums[0] / sums[3] : 0;
    res->top1 = sums[3] > 0 ? sums[1] / sums[3] : 0;
    res->top5 = sums[3] > 0 ? sums[2] / sums[3] : 0;
    return BF_OK;
}

bf_status bf_dp_agree_stop(bf_data_parallel *dp, int local, int *stop) {
    double requests = local ? 1.0 : 0.0;
    BF_TRY(bf_comm_allreduce_double(dp->comm, &requests, 1)); /* nothing to do for one rank */
    *stop = requests > 0;
    return BF_OK;
}

bf_status bf_dp_metrics_open(bf_data_parallel *dp, bf_metrics_log *log, const char *run_dir, int progress) {
    if (dp->rank == 0) return bf_metrics_open(log, run_dir, progress);
    /* No files: metrics lines are skipped without a jsonl file, and a raster cannot open
     * /dev/null/spikes.jsonl, so it is skipped too. */
    memset(log, 0, sizeof *log);
    snprintf(log->dir, sizeof log->dir, "/dev/null");
    return BF_OK;
}

FILE *bf_dp_text(bf_data_parallel *dp, FILE *text) { return dp->rank == 0 || !dp->quiet_text ? text : dp->quiet_text; }

int bf_dp_writes_checkpoints(const bf_data_parallel *dp) { return dp->rank == 0; }

bf_status bf_dp_checkpoint_written(bf_data_parallel *dp) { return bf_comm_barrier(dp->comm); }

void bf_dp_stop(bf_data_parallel *dp, int failed) {
    /* The model (and its hook pointing here) is already destroyed by the run. */
    dp->model = NULL;
    bf_wait_timer_destroy(dp->wait_timer); /* needs only the device, not the destroyed backend */
    dp->wait_timer = NULL;
    bf_grad_buckets_free(&dp->buckets);
    if (dp->owns_comm) bf_comm_destroy(dp->comm, failed && !dp->failed_together);
    dp->comm = NULL;
    if (dp->quiet_text) fclose(dp->quiet_text);
    dp->quiet_text = NULL;
    free(dp->staging);
    dp->staging = NULL;
    free(dp->sync_staging);
    dp->sync_staging = NULL;
}
