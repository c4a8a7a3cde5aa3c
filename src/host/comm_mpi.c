/* comm_mpi.c - the MPI communicator: one rank per process, host buffers (the CPU backend's
 * memory), started by mpirun or srun.
 *
 * Every collective is the non-blocking MPI call (MPI_Iallreduce, MPI_Ibcast, MPI_Ibarrier) polled
 * with MPI_Test against a deadline of [run] collective_timeout seconds: blocking MPI calls wait
 * forever for a rank that hangs, and with some launchers for one that died. On a timeout the rank
 * reports which collective stalled, and bf_comm_destroy(c, failed = 1) aborts the whole job.
 *
 * A failed MPI call is reported with the call, file and line and MPI's error text (MPI_TRY), as
 * comm_nccl.c reports CUDA and NCCL errors. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bioflex/comm.h"

#ifndef BIOFLEX_HAVE_MPI

int bf_comm_mpi_built(void) { return 0; }
bf_status bf_comm_create_mpi(double timeout_s, bf_comm **out) {
    *out = NULL;
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without MPI (configure with -DBIOFLEX_MPI=ON after "
                    "installing libopenmpi-dev)");
}

#else

#include <mpi.h>

int bf_comm_mpi_built(void) { return 1; }

typedef struct mpi_state {
    MPI_Comm world;
    int initialised_here; /* we called MPI_Init, so we call MPI_Finalize */
} mpi_state;

/* MPI counts are int: big buffers go in pieces of at most this many elements. */
#define MPI_CHUNK (1 << 28)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* "MPI <what>: <call> failed at <file>:<line>: <MPI's error text>" */
static bf_status mpi_fail(int err, const char *what, const char *call, const char *file, int line) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error code %d", err);
    return bf_error(BF_ERR_DEVICE, "MPI %s: %s failed at %s:%d: %s", what, call, file, line, text);
}
#define MPI_TRY(what, call)                                                                                   \
    do {                                                                                                      \
        int mpi_e_ = (call);                                                                                  \
        if (mpi_e_ != MPI_SUCCESS) return mpi_fail(mpi_e_, (what), #call, __FILE__, __LINE__);               \
    } while (0)

/* Polls one request until done or the deadline. The first polls spin (a collective between
 * healthy ranks ends in microseconds to milliseconds); later ones sleep briefly so a long wait
 * does not steal a core from the loader threads. */
static bf_status wait_request(bf_comm *c, MPI_Request *req, const char *what, size_t n) {
    double deadline = now_s() + c->timeout_s;
    struct timespec nap = {0, 50 * 1000};
    for (long polls = 0;; polls++) {
        int done = 0;
        MPI_TRY(what, MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done) return BF_OK;
        if (polls > 2000) {
            if (now_s() > deadline)
                return bf_error(BF_ERR_DEVICE, "%s of %zu elements did not complete within %.0f s "
                                "([run] collective_timeout): another rank has died or hangs", what,
                                n, c->timeout_s);
            nanosleep(&nap, NULL);
        }
    }
}

static bf_status mpi_allreduce(bf_comm *c, void *buf, size_t n, MPI_Datatype type, size_t elem, const char *what) {
    mpi_state *s = c->state;
    for (size_t off = 0; off < n; off += MPI_CHUNK) {
        int count = (int)(n - off < MPI_CHUNK ? n - off : MPI_CHUNK);
        MPI_Request req;
        MPI_TRY(what, MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + off * elem, count, type, MPI_SUM, s->world, &req));
        BF_TRY(wait_request(c, &req, what, n));
    }
    return BF_OK;
}

static bf_status mpi_allreduce_float(bf_comm *c, float *buf, size_t n, bf_reduce_op op) {
    BF_TRY(mpi_allreduce(c, buf, n, MPI_FLOAT, sizeof(float), "all-reduce (float)"));
    if (op == BF_REDUCE_AVG) {
        float inv = 1.0f / (float)c->world;
        for (size_t i = 0; i < n; i++) buf[i] *= inv;
    }
    return BF_OK;
}

static bf_status mpi_allreduce_double(bf_comm *c, double *buf, size_t n) {
    return mpi_allreduce(c, buf, n, MPI_DOUBLE, sizeof(double), "all-reduce (double)");
}

static bf_status mpi_broadcast(bf_comm *c, void *buf, size_t bytes, int root) {
    mpi_state *s = c->state;
    for (size_t off = 0; off < bytes; off += MPI_CHUNK) {
        int count = (int)(bytes - off < MPI_CHUNK ? bytes - off : MPI_CHUNK);
        MPI_Request req;
        MPI_TRY("broadcast", MPI_Ibcast((char *)buf + off, count, MPI_BYTE, root, s->world, &req));
        BF_TRY(wait_request(c, &req, "broadcast", bytes));
    }
    return BF_OK;
}

static bf_status mpi_barrier(bf_comm *c) {
    mpi_state *s = c->state;
    MPI_Request req;
    MPI_TRY("barrier", MPI_Ibarrier(s->world, &req));
    return wait_request(c, &req, "barrier", 0);
}

static void mpi_destroy(bf_comm *c, int failed) {
    mpi_state *s = c->state;
    if (!s) return;
    if (failed && c->world > 1) {
        /* The other ranks may be dead or blocked in a collective: MPI_Finalize would wait for them.
         * Say why first, since MPI_Abort ends this process before the caller can print. */
        fprintf(stderr, "rank %d of %d: error: %s\nrank %d: aborting the MPI job\n", c->rank, c->world,
                bf_last_error(), c->rank);
        fflush(stderr);
        MPI_Abort(s->world, 1);
    }
    MPI_Comm_free(&s->world);
    if (s->initialised_here) MPI_Finalize();
    free(s);
}

static const bf_comm_impl mpi_impl = {mpi_allreduce_float, mpi_allreduce_double, mpi_broadcast, mpi_barrier,
                                      mpi_destroy};

/* This rank's place on its node. */
static bf_status mpi_node_place(bf_comm *c, MPI_Comm node) {
    MPI_TRY("setup", MPI_Comm_rank(node, &c->local_rank));
    MPI_TRY("setup", MPI_Comm_size(node, &c->local_world));
    return BF_OK;
}

/* A duplicate of MPI_COMM_WORLD keeps our traffic apart from any other MPI user; errors on it come
 * back as codes (the calls before MPI_Comm_set_errhandler abort the job on an error, MPI's default). */
static bf_status mpi_setup(bf_comm *c, mpi_state *s) {
    MPI_TRY("setup", MPI_Comm_dup(MPI_COMM_WORLD, &s->world));
    MPI_TRY("setup", MPI_Comm_set_errhandler(s->world, MPI_ERRORS_RETURN));
    MPI_TRY("setup", MPI_Comm_rank(s->world, &c->rank));
    MPI_TRY("setup", MPI_Comm_size(s->world, &c->world));
    MPI_Comm node;
    MPI_TRY("setup", MPI_Comm_split_type(s->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    bf_status st = mpi_node_place(c, node);
    MPI_Comm_free(&node);
    return st;
}

bf_status bf_comm_create_mpi(double timeout_s, bf_comm **out) {
    *out = NULL;
    int initialised = 0, provided = 0;
    MPI_Initialized(&initialised);
    /* Only the training thread calls MPI; loader threads never do. MPI_Error_string may not be
     * called before a successful MPI_Init (MPI 3), so the code is reported as a number. */
    if (!initialised) {
        int err = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (err != MPI_SUCCESS)
            return bf_error(BF_ERR_DEVICE, "MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) failed at "
                            "%s:%d: MPI error code %d (is this process started by mpirun or srun?)", __FILE__,
                            __LINE__, err);
    }
    bf_comm *c = calloc(1, sizeof *c);
    mpi_state *s = calloc(1, sizeof *s);
    if (!c || !s) {
        free(c);
        free(s);
        return bf_error(BF_ERR_OOM, "MPI communicator: out of memory");
    }
    s->initialised_here = !initialised;
    bf_status st = mpi_setup(c, s);
    if (st != BF_OK) {
        /* Neither MPI_Comm_free nor MPI_Finalize (collectives: they could wait for the other ranks).
         * A process that exits without MPI_Finalize makes mpirun end the whole job. */
        free(c);
        free(s);
        return st;
    }
    /* srun without an MPI plugin (or an MPI that cannot read this launcher's environment) starts
     * every task as a world of its own: each would train alone on all the data and write the same
     * checkpoints. Each process can see that, and finalise, since it has no peers to wait for. */
    int launched = bf_comm_launcher_world();
    if (c->world != launched) {
        int world = c->world;
        free(c);
        free(s);
        if (world == 1 && !initialised) MPI_Finalize();
        return bf_error(BF_ERR_CONFIG, "the launcher started %d ranks (its environment: OMPI_COMM_WORLD_SIZE, "
                        "PMI_SIZE, PMIX_SIZE or SLURM_NTASKS), but MPI sees a world of %d: the ranks cannot reach "
                        "each other. Under Slurm start them with an MPI plugin (srun --mpi=pmix, `srun --mpi=list` "
                        "shows those there are) or with mpirun; or give [run] rendezvous a shared file for --gpus",
                        launched, world);
    }
    c->kind = BF_COMM_MPI;
    c->timeout_s = timeout_s;
    c->device = -1;
    c->impl = &mpi_impl;
    c->state = s;
    *out = c;
    return BF_OK;
}

#endif
