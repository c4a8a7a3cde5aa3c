/* train_gpus.c - `bioflex-train --gpus N`: one host thread per GPU, each with its own CUDA backend,
 * model replica, optimiser and data shard (bf_train_rank with an NCCL communicator).
 *
 * The N communicators of this process are made in one NCCL group. Launched by mpirun/srun with
 * several processes (one per node, each driving its `gpus` local GPUs), MPI only carries rank 0's
 * NCCL unique id ([run] rendezvous: a file on a shared filesystem instead, for clusters without a
 * working MPI); process p's GPU i is rank p*gpus + i, and NCCL moves every tensor. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data_parallel.h"

typedef struct gpu_thread {
    const bf_config *cfg;
    const bf_train_options *opt;
    bf_comm *comm;
    bf_train_result result;
    bf_status status;
    char error[1024]; /* bf_last_error is per thread: copied for the caller */
    atomic_int *failures; /* shared by the threads: how many have failed so far */
    int fail_order;       /* this thread's place among them (0: the first to fail) */
    atomic_int done;      /* set when bf_train_rank has returned */
} gpu_thread;

static void *gpu_main(void *arg) {
    gpu_thread *t = arg;
    t->status = bf_train_rank(t->cfg, t->opt, t->comm, &t->result);
    if (t->status != BF_OK) {
        snprintf(t->error, sizeof t->error, "%s", bf_last_error());
        t->fail_order = atomic_fetch_add(t->failures, 1);
        bf_comm_nccl_fail(t->comm, t->error); /* the other GPUs' threads stop at their next wait */
    }
    atomic_store(&t->done, 1);
    return NULL;
}

static double monotonic_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Waits until every thread has returned. A thread that failed has told the others
 * (bf_comm_nccl_fail), which stop at their next collective wait; but one may be held in a host
 * wait that no timeout covers (an upload's event behind the last step's all-reduce). So once one
 * has failed, the others get the collective timeout plus a margin to stop on their own; after that
 * the process ends with the first failure's message instead of hanging (mpirun/srun then stop
 * the other processes, whose ranks are not told otherwise). */
static void wait_for_threads(gpu_thread *threads, const pthread_t *tids, int started, double timeout_s) {
    double first_failure = -1;
    const struct timespec pause = {.tv_sec = 0, .tv_nsec = 50 * 1000 * 1000};
    for (;;) {
        int running = 0, first = -1;
        for (int i = 0; i < started; i++) {
            if (!atomic_load(&threads[i].done)) running++;
            else if (threads[i].status != BF_OK && (first < 0 || threads[i].fail_order < threads[first].fail_order))
                first = i;
        }
        if (!running) break;
        if (first >= 0 && first_failure < 0) first_failure = monotonic_s();
        if (first >= 0 && monotonic_s() - first_failure > timeout_s + 30) {
            fprintf(stderr, "error: GPU %d (rank %d): %s\nerror: %d GPU thread(s) still waiting %.0f s after that "
                    "failure: ending the process\n", first, threads[first].comm->rank, threads[first].error, running,
                    timeout_s + 30);
            fflush(NULL);
            _exit(1);
        }
        nanosleep(&pause, NULL);
    }
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
}

/* Making the communicators blocks until every rank has joined, with no timeout of NCCL's own: a
 * process that failed before joining (an unreadable rendezvous file, a bad config) would leave the
 * others waiting forever. A watchdog thread ends the process after collective_timeout instead. */
typedef struct init_watchdog {
    pthread_mutex_t lock;
    pthread_cond_t done_signal;
    int done;
    double timeout_s;
} init_watchdog;

static void *init_watchdog_main(void *arg) {
    init_watchdog *w = arg;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    /* config.c caps collective_timeout at 1e7 s; the clamp keeps the time_t conversion defined for any caller */
    deadline.tv_sec += (time_t)(w->timeout_s < 1e7 ? w->timeout_s : 1e7) + 1;
    pthread_mutex_lock(&w->lock);
    while (!w->done && pthread_cond_timedwait(&w->done_signal, &w->lock, &deadline) == 0) {}
    int done = w->done;
    pthread_mutex_unlock(&w->lock);
    if (!done) {
        fprintf(stderr, "error: the NCCL communicators were not made within %.0f s ([run] collective_timeout): a "
                "rank did not join (see the other processes' logs); ending the process\n", w->timeout_s);
        fflush(NULL);
        _exit(1);
    }
    return NULL;
}

static bf_status create_comms_watched(const bf_config *cfg, int gpus, const int *devices, int first_rank, int world,
                                      const unsigned char id[128], bf_comm **comms) {
    init_watchdog w = {.lock = PTHREAD_MUTEX_INITIALIZER, .done_signal = PTHREAD_COND_INITIALIZER,
                       .timeout_s = cfg->run.collective_timeout};
    pthread_t watcher;
    int watching = pthread_create(&watcher, NULL, init_watchdog_main, &w) == 0;
    bf_status s = bf_comm_create_nccl_group(gpus, devices, first_rank, world, id, cfg->run.collective_timeout, comms);
    if (watching) {
        pthread_mutex_lock(&w.lock);
        w.done = 1;
        pthread_cond_signal(&w.done_signal);
        pthread_mutex_unlock(&w.lock);
        pthread_join(watcher, NULL);
    }
    return s;
}

bf_status bf_gpus_rendezvous(const char *path, const char *job, int proc_rank, int gpus, unsigned char id[128],
                             double timeout_s) {
    unsigned char message[128 + 4];
    if (proc_rank == 0) {
        memcpy(message, id, 128);
        for (int i = 0; i < 4; i++) message[128 + i] = (unsigned char)((uint32_t)gpus >> (8 * i));
    }
    BF_TRY(bf_comm_rendezvous_file(path, job, proc_rank, message, sizeof message, timeout_s));
    uint32_t first = 0;
    for (int i = 0; i < 4; i++) first |= (uint32_t)message[128 + i] << (8 * i);
    /* Process p's GPU i is rank p*gpus + i: other counts would give two processes one rank. */
    if ((int)first != gpus)
        return bf_error(BF_ERR_CONFIG, "[run] gpus = %d in process %d but %u in process 0 (rendezvous file %s): every "
                        "process must use the same --gpus", gpus, proc_rank, first, path);
    memcpy(id, message, 128);
    return BF_OK;
}

/* Rank 0's NCCL unique id for every process: made here when this process is the whole world, sent
 * by MPI when mpirun/srun started several. */
static bf_status exchange_id(const bf_config *cfg, int gpus, unsigned char id[128], bf_comm **mpi, int *procs,
                             int *proc_rank) {
    *procs = 1;
    *proc_rank = 0;
    if (bf_comm_launcher_world() <= 1) return bf_comm_nccl_unique_id(id);
    if (cfg->run.rendezvous[0]) {
        /* No MPI: the launcher's environment gives the layout, a shared file carries the id. */
        *procs = bf_comm_launcher_world();
        *proc_rank = bf_comm_launcher_rank();
        if (*proc_rank == 0) BF_TRY(bf_comm_nccl_unique_id(id));
        char job[256];
        bf_comm_launcher_job(job, sizeof job);
        return bf_gpus_rendezvous(cfg->run.rendezvous, job, *proc_rank, gpus, id, cfg->run.collective_timeout);
    }
    BF_TRY(bf_comm_create_world(cfg->run.collective_timeout, mpi));
    *procs = (*mpi)->world;
    *proc_rank = (*mpi)->rank;
    BF_TRY(bf_comm_check_same(*mpi, (uint64_t)gpus, "[run] gpus", "the same --gpus"));
    if (*proc_rank == 0) BF_TRY(bf_comm_nccl_unique_id(id));
    return bf_comm_broadcast(*mpi, id, 128, 0);
}

/* This process's place among the processes of its node (0 when it is alone there). */
static int local_process(const bf_comm *mpi) {
    if (mpi) return mpi->local_rank;
    /* started alone: a Slurm variable left in the environment (an salloc shell) says nothing */
    if (bf_comm_launcher_world() <= 1) return 0;
    static const char *names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (getenv(names[i]) && *getenv(names[i])) return atoi(getenv(names[i]));
    return 0;
}

bf_status bf_gpus_first_device(int local_process, int gpus, int visible, int *first) {
    int k = local_process;
    *first = 0;
    if (k <= 0 || visible <= gpus) return BF_OK; /* alone on the node, or it sees only its own GPUs */
    if ((long)(k + 1) * gpus <= visible) {
        *first = k * gpus;
        return BF_OK;
    }
    /* GPUs 0.. again would share the devices of process 0 of this node: two NCCL ranks on one GPU */
    return bf_error(BF_ERR_CONFIG, "[run] gpus = %d: this is process %d of its node, which would take GPUs %d to %d, but "
                    "it sees %d; start at most %d processes per node with --gpus %d, or give each process its own GPUs "
                    "(srun --gpus-per-task, or CUDA_VISIBLE_DEVICES per process)", gpus, k, k * gpus, (k + 1) * gpus - 1,
                    visible, visible / gpus, gpus);
}

bf_status bf_train_gpus(const bf_config *cfg, const bf_train_options *opt, int gpus, bf_train_result *result) {
    memset(result, 0, sizeof *result);
    if (!bf_comm_nccl_built()) {
        char what[64] = "[run] force_nccl"; /* what sends gpus = 1 here */
        if (gpus > 1) snprintf(what, sizeof what, "[run] gpus = %d", gpus);
        return bf_error(BF_ERR_UNAVAILABLE, "%s needs NCCL, and this bioflex was built without it (CUDA backend plus "
                        "nccl.h, e.g. in /usr/local/cuda); use %s", what, gpus > 1 ? "gpus = 1" : "force_nccl = false");
    }
    int visible = bf_cuda_device_count();
    if (gpus > visible) {
        const char *vis = getenv("CUDA_VISIBLE_DEVICES");
        return bf_error(BF_ERR_CONFIG, "[run] gpus = %d but this process sees %d GPU(s) (CUDA_VISIBLE_DEVICES=%s)",
                        gpus, visible, vis ? vis : "unset");
    }
    unsigned char id[128];
    bf_comm *mpi = NULL;
    int procs = 1, proc_rank = 0;
    bf_status s = exchange_id(cfg, gpus, id, &mpi, &procs, &proc_rank);
    bf_comm **comms = calloc((size_t)gpus, sizeof *comms);
    gpu_thread *threads = calloc((size_t)gpus, sizeof *threads);
    pthread_t *tids = calloc((size_t)gpus, sizeof *tids);
    int *devices = calloc((size_t)gpus, sizeof *devices);
    if (s == BF_OK && !(comms && threads && tids && devices)) s = bf_error(BF_ERR_OOM, "--gpus: out of host memory");
    int first_gpu = 0;
    if (s == BF_OK) s = bf_gpus_first_device(local_process(mpi), gpus, visible, &first_gpu);
    for (int i = 0; s == BF_OK && i < gpus; i++) devices[i] = first_gpu + i;
    if (s == BF_OK)
        s = create_comms_watched(cfg, gpus, devices, proc_rank * gpus, procs * gpus, id, comms);
    int started = 0;
    atomic_int failures = 0;
    for (int i = 0; s == BF_OK && i < gpus; i++) {
        threads[i] = (gpu_thread){.cfg = cfg, .opt = opt, .comm = comms[i], .failures = &failures};
        if (pthread_create(&tids[i], NULL, gpu_main, &threads[i]) != 0)
            s = bf_error(BF_ERR_INTERNAL, "--gpus: cannot start the thread of GPU %d", i);
        else started++;
    }
    wait_for_threads(threads, tids, started, cfg->run.collective_timeout);
    int failed = s != BF_OK, first = -1;
    for (int i = 0; i < started; i++) {
        /* Report the thread that failed first: the others usually fail later because of it (a
         * collective that timed out waiting for it), and their message would hide the cause. */
        if (threads[i].status != BF_OK && (first < 0 || threads[i].fail_order < threads[first].fail_order)) first = i;
    }
    if (first >= 0 && !failed) {
        failed = 1;
        s = bf_error(threads[first].status, "GPU %d (rank %d): %s", first, comms[first]->rank, threads[first].error);
    }
    if (started > 0 && s == BF_OK) *result = threads[0].result; /* rank 0 of this process: logs, checkpoints */
    for (int i = 0; comms && i < gpus; i++) bf_comm_destroy(comms[i], failed);
    if (mpi) bf_comm_destroy(mpi, failed);
    free(comms);
    free(threads);
    free(tids);
    free(devices);
    return s;
}
