/* comm_nccl.c - the NCCL communicator: one rank per GPU, device buffers, collectives on the
 * communicator's own CUDA stream (so gradient all-reduces overlap the backward pass that runs on
 * the compute stream).
 *
 * The communicators of the GPUs of one process are made in one ncclGroupStart/End around one
 * ncclCommInitRank per GPU: ncclCommInitRank waits for every rank of the world, so a process that
 * owns several GPUs must not call them one after the other. Across nodes the 128-byte unique id of
 * rank 0 reaches the others by MPI or a rendezvous file (bf_comm_rendezvous_file).
 *
 * Timeouts: a blocking wait on a stream never returns when a peer died. We poll cudaStreamQuery
 * and ncclCommGetAsyncError until a deadline, and abort the communicator (ncclCommAbort) when it
 * passes, which releases the kernels stuck in the collective. A rank of this process that fails
 * says so to its group (bf_comm_nccl_fail), and the others stop at their next poll rather than at
 * the deadline: NCCL tells no peer when one rank of a node goes away.
 *
 * A failed CUDA or NCCL call is reported with the call, file and line and the library's error text
 * (CUDA_TRY, NCCL_TRY; CUDA_CHECK and NCCL_CHECK where a failure must clean up first). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/comm.h"

#ifndef BIOFLEX_HAVE_CUDA
/* Without the CUDA backend there is no stream to order (the CUDA build has src/kernels/stream_handoff.cu). */
bf_status bf_cuda_stream_handoff(bf_backend_ref b, void *other_stream, int to_other) {
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without the CUDA backend");
}
#endif

#ifndef BIOFLEX_HAVE_NCCL

int bf_comm_nccl_built(void) { return 0; }
bf_status bf_comm_create_nccl_group(int count, const int *devices, int first_rank, int world, const void *unique_id,
                                    double timeout_s, bf_comm **out) {
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without NCCL (it needs the CUDA backend and nccl.h, "
                    "e.g. /usr/local/cuda/include/nccl.h, and is left out with -DBIOFLEX_NCCL=OFF): multi-GPU "
                    "training is not available");
}
bf_status bf_comm_nccl_unique_id(void *id_out) {
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without NCCL");
}
void *bf_comm_nccl_stream(bf_comm *c) { return NULL; }
bf_status bf_comm_nccl_allreduce_async(bf_comm *c, float *buf, size_t n, bf_reduce_op op) {
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without NCCL");
}
bf_status bf_comm_nccl_allreduce_double_async(bf_comm *c, double *buf, size_t n) {
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without NCCL");
}
bf_status bf_comm_nccl_wait(bf_comm *c, const char *what) { return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without NCCL"); }
void bf_comm_nccl_fail(bf_comm *c, const char *why) { (void)c, (void)why; }

#else

#include <cuda_runtime.h>
#include <nccl.h>

int bf_comm_nccl_built(void) { return 1; }

/* The communicators made together for the GPUs of this process: the first of them to fail leaves
 * its rank and error here for the others (bf_comm_nccl_fail). */
typedef struct nccl_group {
    pthread_mutex_t lock;
    atomic_int failed_rank; /* -1: none has failed */
    char reason[512];       /* its error (under lock) */
    int refs;               /* communicators not yet destroyed (under lock) */
} nccl_group;

static void group_release(nccl_group *g) {
    pthread_mutex_lock(&g->lock);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->lock);
    if (last) {
        pthread_mutex_destroy(&g->lock);
        free(g);
    }
}

typedef struct nccl_state {
    ncclComm_t comm;
    cudaStream_t stream;
    int device;
    double *scratch; /* device: host-buffer collectives (counts) and the barrier pass through it */
    size_t scratch_doubles;
    int aborted;
    char abort_reason[512]; /* the error that aborted it, reported again by every later call */
    nccl_group *group;
} nccl_state;

#define NCCL_TRY(call)                                                                                        \
    do {                                                                                                      \
        ncclResult_t r_ = (call);                                                                             \
        if (r_ != ncclSuccess)                                                                                \
            return bf_error(BF_ERR_DEVICE, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,               \
                            ncclGetErrorString(r_));                                                          \
    } while (0)
#define CUDA_TRY(call)                                                                                        \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess)                                                                                \
            return bf_error(BF_ERR_DEVICE, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,               \
                            cudaGetErrorString(e_));                                                          \
    } while (0)
/* The same reports into st, after a context: "<what>: <call> failed at <file>:<line>: <text>". */
#define NCCL_CHECK(st, what, call)                                                                            \
    do {                                                                                                      \
        ncclResult_t r_ = (call);                                                                             \
        if (r_ != ncclSuccess)                                                                                \
            (st) = bf_error(BF_ERR_DEVICE, "%s: %s failed at %s:%d: %s", (what), #call, __FILE__, __LINE__,   \
                            ncclGetErrorString(r_));                                                          \
    } while (0)
#define CUDA_CHECK(st, what, call)                                                                            \
    do {                                                                                                      \
        cudaError_t e_ = (call);                                                                              \
        if (e_ != cudaSuccess)                                                                                \
            (st) = bf_error(BF_ERR_DEVICE, "%s: %s failed at %s:%d: %s", (what), #call, __FILE__, __LINE__,   \
                            cudaGetErrorString(e_));                                                          \
    } while (0)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Aborts the communicator (which releases the kernels stuck in its collectives) for the error just
 * reported, and keeps that error's text. */
static bf_status abort_for(nccl_state *s, bf_status st) {
    ncclCommAbort(s->comm);
    s->aborted = 1;
    snprintf(s->abort_reason, sizeof s->abort_reason, "%s", bf_last_error());
    return st;
}

/* After an abort the handle must not be used again, yet the run still calls here as it tears down
 * (the backend's driver fence before each free): every call repeats the error that aborted it, so
 * the message the run ends with is that one, not this one. */
static bf_status refuse_if_aborted(const nccl_state *s) {
    return s->aborted ? bf_error(BF_ERR_DEVICE, "%s", s->abort_reason) : BF_OK;
}

/* When another rank of this process has failed: an error naming it and its error, the communicator
 * aborted for it (what this rank was doing cannot complete without that rank). */
static bf_status stop_if_peer_failed(bf_comm *c, const char *what) {
    nccl_state *s = c->state;
    nccl_group *g = s->group;
    const int failed = atomic_load(&g->failed_rank);
    if (failed < 0 || failed == c->rank) return BF_OK;
    char reason[sizeof g->reason];
    pthread_mutex_lock(&g->lock);
    snprintf(reason, sizeof reason, "%s", g->reason);
    pthread_mutex_unlock(&g->lock);
    return abort_for(s, bf_error(BF_ERR_DEVICE, "rank %d: %s stopped: rank %d of this process failed (%s)", c->rank,
                                 what, failed, reason));
}

/* Checks before a collective is enqueued. */
static bf_status ready_to_launch(bf_comm *c, const char *what) {
    BF_TRY(refuse_if_aborted(c->state));
    return stop_if_peer_failed(c, what);
}

/* A collective call that failed: a peer's failure is the cause when there was one (the emulated
 * NCCL releases the ranks waiting in a call when a peer aborts), else the library's error. */
#define NCCL_LAUNCH(c, what, call)                                                                            \
    do {                                                                                                      \
        ncclResult_t r_ = (call);                                                                             \
        if (r_ != ncclSuccess) {                                                                              \
            BF_TRY(stop_if_peer_failed((c), (what)));                                                         \
            return bf_error(BF_ERR_DEVICE, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,               \
                            ncclGetErrorString(r_));                                                          \
        }                                                                                                     \
    } while (0)

void bf_comm_nccl_fail(bf_comm *c, const char *why) {
    if (!c || c->kind != BF_COMM_NCCL) return;
    nccl_state *s = c->state;
    nccl_group *g = s->group;
    pthread_mutex_lock(&g->lock);
    if (atomic_load(&g->failed_rank) < 0) { /* the first failure is the cause the others name */
        snprintf(g->reason, sizeof g->reason, "%s", why);
        atomic_store(&g->failed_rank, c->rank);
    }
    pthread_mutex_unlock(&g->lock);
    if (!s->aborted) {
        cudaSetDevice(s->device);
        ncclCommAbort(s->comm);
        s->aborted = 1;
        snprintf(s->abort_reason, sizeof s->abort_reason, "rank %d failed: %s", c->rank, why);
    }
}

/* Waits for the communicator's stream; a peer error or the deadline aborts the communicator. */
static bf_status wait_stream(bf_comm *c, const char *what) {
    nccl_state *s = c->state;
    BF_TRY(refuse_if_aborted(s));
    double deadline = now_s() + c->timeout_s;
    struct timespec nap = {0, 20 * 1000};
    for (;;) {
        cudaError_t q = cudaStreamQuery(s->stream);
        if (q == cudaSuccess) return BF_OK;
        if (q != cudaErrorNotReady)
            return bf_error(BF_ERR_DEVICE, "rank %d: %s: cudaStreamQuery(s->stream) failed at %s:%d: %s", c->rank, what,
                            __FILE__, __LINE__, cudaGetErrorString(q));
        BF_TRY(stop_if_peer_failed(c, what));
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(s->comm, &async);
        if (async != ncclSuccess && async != ncclInProgress)
            return abort_for(s, bf_error(BF_ERR_DEVICE, "rank %d: %s: NCCL reported %s (ncclCommGetAsyncError at %s:%d; "
                                         "another rank failed)", c->rank, what, ncclGetErrorString(async), __FILE__,
                                         __LINE__));
        if (now_s() > deadline)
            return abort_for(s, bf_error(BF_ERR_DEVICE, "rank %d of %d: %s did not complete within %.0f s ([run] "
                                         "collective_timeout): another rank has died or hangs", c->rank, c->world,
                                         what, c->timeout_s));
        nanosleep(&nap, NULL);
    }
}

static bf_status nccl_allreduce_float(bf_comm *c, float *buf, size_t n, bf_reduce_op op) {
    nccl_state *s = c->state;
    BF_TRY(ready_to_launch(c, "NCCL all-reduce"));
    CUDA_TRY(cudaSetDevice(s->device));
    NCCL_LAUNCH(c, "NCCL all-reduce",
                ncclAllReduce(buf, buf, n, ncclFloat, op == BF_REDUCE_AVG ? ncclAvg : ncclSum, s->comm, s->stream));
    return wait_stream(c, "NCCL all-reduce");
}

bf_status bf_comm_nccl_allreduce_async(bf_comm *c, float *buf, size_t n, bf_reduce_op op) {
    if (!c || c->kind != BF_COMM_NCCL) return bf_error(BF_ERR_ARG, "bf_comm_nccl_allreduce_async: not an NCCL communicator");
    nccl_state *s = c->state;
    BF_TRY(ready_to_launch(c, "NCCL gradient all-reduce"));
    CUDA_TRY(cudaSetDevice(s->device));
    NCCL_LAUNCH(c, "NCCL gradient all-reduce",
                ncclAllReduce(buf, buf, n, ncclFloat, op == BF_REDUCE_AVG ? ncclAvg : ncclSum, s->comm, s->stream));
    return BF_OK;
}

bf_status bf_comm_nccl_allreduce_double_async(bf_comm *c, double *buf, size_t n) {
    if (!c || c->kind != BF_COMM_NCCL)
        return bf_error(BF_ERR_ARG, "bf_comm_nccl_allreduce_double_async: not an NCCL communicator");
    nccl_state *s = c->state;
    BF_TRY(ready_to_launch(c, "NCCL all-reduce of batch-norm sums"));
    CUDA_TRY(cudaSetDevice(s->device));
    NCCL_LAUNCH(c, "NCCL all-reduce of batch-norm sums", ncclAllReduce(buf, buf, n, ncclDouble, ncclSum, s->comm, s->stream));
    return BF_OK;
}

bf_status bf_comm_nccl_wait(bf_comm *c, const char *what) {
    if (!c || c->kind != BF_COMM_NCCL) return BF_OK;
    return wait_stream(c, what);
}

/* The host-buffer collectives below allocate and copy through pageable memory, which may block
 * inside the driver: they first wait for this rank's collectives in flight (bf_cuda_set_driver_fence
 * in ops.h says why). */
static bf_status ensure_scratch(nccl_state *s, size_t n) {
    if (s->scratch_doubles >= n) return BF_OK;
    if (s->scratch) cudaFree(s->scratch);
    s->scratch = NULL;
    s->scratch_doubles = 0;
    CUDA_TRY(cudaMalloc((void **)&s->scratch, n * sizeof(double)));
    s->scratch_doubles = n;
    return BF_OK;
}

/* Host doubles (evaluation counts): through device scratch memory. */
static bf_status nccl_allreduce_double(bf_comm *c, double *buf, size_t n) {
    nccl_state *s = c->state;
    CUDA_TRY(cudaSetDevice(s->device));
    BF_TRY(wait_stream(c, "NCCL collectives before an all-reduce of counts"));
    BF_TRY(ensure_scratch(s, n));
    CUDA_TRY(cudaMemcpyAsync(s->scratch, buf, n * sizeof(double), cudaMemcpyHostToDevice, s->stream));
    NCCL_LAUNCH(c, "NCCL all-reduce (counts)", ncclAllReduce(s->scratch, s->scratch, n, ncclDouble, ncclSum, s->comm, s->stream));
    BF_TRY(wait_stream(c, "NCCL all-reduce (counts)"));
    CUDA_TRY(cudaMemcpy(buf, s->scratch, n * sizeof(double), cudaMemcpyDeviceToHost));
    return BF_OK;
}

/* Device buffers (parameters) or, for small host values (config hash), through scratch. */
static bf_status nccl_broadcast(bf_comm *c, void *buf, size_t bytes, int root) {
    nccl_state *s = c->state;
    BF_TRY(ready_to_launch(c, "NCCL broadcast"));
    CUDA_TRY(cudaSetDevice(s->device));
    struct cudaPointerAttributes attr;
    int on_device = cudaPointerGetAttributes(&attr, buf) == cudaSuccess && attr.type == cudaMemoryTypeDevice;
    cudaGetLastError(); /* a host pointer may leave an error behind */
    if (on_device) {
        NCCL_LAUNCH(c, "NCCL broadcast", ncclBroadcast(buf, buf, bytes, ncclChar, root, s->comm, s->stream));
        return wait_stream(c, "NCCL broadcast");
    }
    BF_TRY(wait_stream(c, "NCCL collectives before a broadcast of host values"));
    BF_TRY(ensure_scratch(s, (bytes + sizeof(double) - 1) / sizeof(double)));
    CUDA_TRY(cudaMemcpyAsync(s->scratch, buf, bytes, cudaMemcpyHostToDevice, s->stream));
    NCCL_LAUNCH(c, "NCCL broadcast", ncclBroadcast(s->scratch, s->scratch, bytes, ncclChar, root, s->comm, s->stream));
    BF_TRY(wait_stream(c, "NCCL broadcast"));
    CUDA_TRY(cudaMemcpy(buf, s->scratch, bytes, cudaMemcpyDeviceToHost));
    return BF_OK;
}

static bf_status nccl_barrier(bf_comm *c) {
    double one = 1;
    return nccl_allreduce_double(c, &one, 1);
}

static void nccl_destroy(bf_comm *c, int failed) {
    nccl_state *s = c->state;
    if (!s) return;
    cudaSetDevice(s->device);
    if (!s->aborted) {
        if (failed) ncclCommAbort(s->comm);
        else ncclCommDestroy(s->comm);
    }
    if (s->scratch) cudaFree(s->scratch);
    cudaStreamDestroy(s->stream);
    group_release(s->group);
    free(s);
}

static const bf_comm_impl nccl_impl = {nccl_allreduce_float, nccl_allreduce_double, nccl_broadcast, nccl_barrier,
                                       nccl_destroy};

bf_status bf_comm_nccl_unique_id(void *id_out) {
    ncclUniqueId id;
    NCCL_TRY(ncclGetUniqueId(&id));
    memcpy(id_out, &id, sizeof id);
    return BF_OK;
}

void *bf_comm_nccl_stream(bf_comm *c) {
    return c && c->kind == BF_COMM_NCCL ? (void *)((nccl_state *)c->state)->stream : NULL;
}

bf_status bf_comm_create_nccl_group(int count, const int *devices, int first_rank, int world, const void *unique_id,
                                    double timeout_s, bf_comm **out) {
    _Static_assert(sizeof(ncclUniqueId) == 128, "the unique id is exchanged as 128 bytes");
    int visible = 0;
    char why[256] = ""; /* why this process sees no GPU, for the message below */
    cudaError_t count_e = cudaGetDeviceCount(&visible);
    if (count_e != cudaSuccess) {
        visible = 0;
        snprintf(why, sizeof why, "; cudaGetDeviceCount(&visible) failed at %s:%d: %s", __FILE__, __LINE__,
                 cudaGetErrorString(count_e));
    }
    if (count < 1 || first_rank < 0 || first_rank + count > world)
        return bf_error(BF_ERR_ARG, "NCCL: %d GPUs from rank %d do not fit a world of %d ranks", count, first_rank, world);
    for (int i = 0; i < count; i++)
        if (devices[i] < 0 || devices[i] >= visible)
            return bf_error(BF_ERR_CONFIG, "[run] gpus = %d needs GPU %d but this process sees %d GPU(s) "
                            "(CUDA_VISIBLE_DEVICES=%s%s)", count, devices[i], visible,
                            getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "unset", why);
    ncclUniqueId id;
    if (unique_id) memcpy(&id, unique_id, sizeof id);
    else if (world == count) NCCL_TRY(ncclGetUniqueId(&id));
    else return bf_error(BF_ERR_ARG, "NCCL: a world of %d ranks over several processes needs rank 0's unique id", world);
    for (int i = 0; i < count; i++) out[i] = NULL;
    nccl_state *states = calloc((size_t)count, sizeof *states);
    nccl_group *group = calloc(1, sizeof *group);
    if (!states || !group) {
        free(states);
        free(group);
        return bf_error(BF_ERR_OOM, "NCCL: out of memory");
    }
    pthread_mutex_init(&group->lock, NULL);
    atomic_init(&group->failed_rank, -1);
    group->refs = count; /* each state holds it, made into a communicator or not */
    bf_status st = BF_OK;
    char what[128];
    for (int i = 0; i < count; i++) states[i].group = group;
    for (int i = 0; i < count && st == BF_OK; i++) {
        states[i].device = devices[i];
        snprintf(what, sizeof what, "NCCL: cannot create a stream on GPU %d", devices[i]);
        CUDA_CHECK(st, what, cudaSetDevice(devices[i]));
        if (st == BF_OK) CUDA_CHECK(st, what, cudaStreamCreateWithFlags(&states[i].stream, cudaStreamNonBlocking));
    }
    if (st == BF_OK) {
        snprintf(what, sizeof what, "ncclCommInitRank (%d GPUs, ranks %d..%d of %d)", count, first_rank,
                 first_rank + count - 1, world);
        NCCL_CHECK(st, what, ncclGroupStart());
        if (st == BF_OK) {
            for (int i = 0; i < count && st == BF_OK; i++) {
                CUDA_CHECK(st, what, cudaSetDevice(devices[i]));
                if (st == BF_OK) NCCL_CHECK(st, what, ncclCommInitRank(&states[i].comm, world, id, first_rank + i));
            }
            /* the group is closed whatever happened; the first failure is the one reported */
            if (st == BF_OK) NCCL_CHECK(st, what, ncclGroupEnd());
            else ncclGroupEnd();
        }
    }
    for (int i = 0; i < count && st == BF_OK; i++) {
        bf_comm *c = calloc(1, sizeof *c);
        nccl_state *s = malloc(sizeof *s);
        if (!c || !s) {
            free(c);
            free(s);
            st = bf_error(BF_ERR_OOM, "NCCL: out of memory");
            break;
        }
        *s = states[i];
        c->kind = BF_COMM_NCCL;
        c->rank = first_rank + i;
        c->world = world;
        c->local_rank = i;
        c->local_world = count;
        c->timeout_s = timeout_s;
        c->device = devices[i];
        c->impl = &nccl_impl;
        c->state = s;
        out[i] = c;
    }
    if (st != BF_OK) {
        for (int i = 0; i < count; i++) {
            if (out[i]) {
                bf_comm_destroy(out[i], 1);
                out[i] = NULL;
            } else {
                if (states[i].comm) ncclCommAbort(states[i].comm);
                if (states[i].stream) cudaStreamDestroy(states[i].stream);
                group_release(group);
            }
        }
    }
    free(states);
    return st;
}

#endif
