/* comm.h - the communicator of data-parallel training: which rank this is, how many there are,
 * and the few collectives data parallelism needs (broadcast of the weights from rank 0, all-reduce
 * of gradients and evaluation counts, barrier).
 *
 * Three implementations sit behind one struct:
 *   - self: one rank, every collective is a no-op (the plain single-process run);
 *   - MPI (comm_mpi.c, built when CMake finds MPI): one rank per process, host buffers, used by the
 *     CPU backend under `mpirun -np N` / `srun`;
 *   - NCCL (comm_nccl.c, built with CUDA when nccl.h is found): one rank per GPU, device buffers on
 *     the communicator's own stream.
 * Every collective waits at most `timeout_s` for the other ranks: a rank that died or hangs makes
 * the others fail with a message naming the collective, never wait forever. */
#ifndef BIOFLEX_COMM_H
#define BIOFLEX_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "bioflex/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bf_comm_kind { BF_COMM_SELF = 0, BF_COMM_MPI = 1, BF_COMM_NCCL = 2 } bf_comm_kind;
typedef enum bf_reduce_op { BF_REDUCE_SUM = 0, BF_REDUCE_AVG = 1 } bf_reduce_op;

typedef struct bf_comm bf_comm;
typedef struct bf_backend *bf_backend_ref; /* ops.h's bf_backend, without including ops.h here */

/* The operations each implementation provides; buffers are host memory for self/MPI and device
 * memory of the communicator's GPU for NCCL. */
typedef struct bf_comm_impl {
    bf_status (*allreduce_float)(bf_comm *c, float *buf, size_t n, bf_reduce_op op);
    bf_status (*allreduce_double)(bf_comm *c, double *buf, size_t n); /* sum; host memory for every kind */
    bf_status (*broadcast)(bf_comm *c, void *buf, size_t bytes, int root);
    bf_status (*barrier)(bf_comm *c);
    void (*destroy)(bf_comm *c, int failed);
} bf_comm_impl;

struct bf_comm {
    bf_comm_kind kind;
    int rank, world;     /* this rank and the number of ranks */
    int local_rank;      /* rank among the ranks of this node (selects the GPU) */
    int local_world;     /* ranks on this node */
    double timeout_s;    /* longest wait of one collective */
    int device;          /* NCCL: the CUDA device of this rank; -1 otherwise */
    const bf_comm_impl *impl;
    void *state;         /* the implementation's own data */
};

/* One rank: collectives return at once. */
bf_status bf_comm_create_self(bf_comm **out);

/* The world the launcher started, read from its environment (Open MPI OMPI_COMM_WORLD_*, MPICH/
 * Intel PMI_*, Slurm SLURM_PROCID/SLURM_NTASKS): 1 when the process was started on its own. */
int bf_comm_launcher_world(void);
/* This process's rank among them (0 when started alone), before MPI is initialised. */
int bf_comm_launcher_rank(void);
/* This launch's name, the same in every rank and new for every launch: Slurm's job, step and restart
 * count and Open MPI's job id as "NAME=value" pairs ("SLURM_JOB_ID=1234 SLURM_STEP_ID=0"); empty
 * when none of those variables is set. */
void bf_comm_launcher_job(char *out, size_t cap);

/* The MPI world (MPI_Init when not yet initialised). BF_ERR_UNAVAILABLE when bioflex was built
 * without MPI. */
bf_status bf_comm_create_mpi(double timeout_s, bf_comm **out);
int bf_comm_mpi_built(void);

/* self when the process was launched alone, MPI when a launcher started several ranks; an error
 * when several ranks were started but MPI is not built in (they would each train alone). */
bf_status bf_comm_create_world(double timeout_s, bf_comm **out);

/* Collectives; every rank must call them in the same order with the same sizes. */
bf_status bf_comm_allreduce_float(bf_comm *c, float *buf, size_t n, bf_reduce_op op);
bf_status bf_comm_allreduce_double(bf_comm *c, double *buf, size_t n);
bf_status bf_comm_broadcast(bf_comm *c, void *buf, size_t bytes, int root);
bf_status bf_comm_barrier(bf_comm *c);

/* Checks that every rank holds the same 64-bit value (a hash of the resolved config, of the data):
 * on a mismatch every rank returns BF_ERR_CONFIG naming `what`, the first rank that differs and
 * `fix` (what every rank must share, e.g. "the same config file and --set overrides"). */
bf_status bf_comm_check_same(bf_comm *c, uint64_t value, const char *what, const char *fix);

/* Checks that every rank holds the same text (the resolved config as bf_config_print writes it, a
 * resumed training position), line by line, skipping lines that start with '#'. On a mismatch every
 * rank returns BF_ERR_CONFIG: a rank that differs names its first differing line and rank 0's, as
 * "[section] key = value" when the text has INI sections; the others name the first such rank and
 * rank 0's line there. */
bf_status bf_comm_check_same_text(bf_comm *c, const char *text, const char *what, const char *fix);

/* Releases the communicator. failed != 0 after an error: MPI aborts the job instead of waiting in
 * MPI_Finalize for ranks that may be dead; NCCL aborts its communicator. */
void bf_comm_destroy(bf_comm *c, int failed);

/* ---- NCCL: one communicator per GPU ---- */
int bf_comm_nccl_built(void);
/* `count` communicators for the GPUs `devices[0..count)` of this process, made in one NCCL group:
 * ranks first_rank .. first_rank+count-1 of a world of `world` ranks. unique_id (128 bytes, from
 * bf_comm_nccl_unique_id on rank 0, spread by MPI or a rendezvous file) may be NULL when this
 * process holds the whole world. */
bf_status bf_comm_create_nccl_group(int count, const int *devices, int first_rank, int world,
                                    const void *unique_id, double timeout_s, bf_comm **out);
bf_status bf_comm_nccl_unique_id(void *id_out /* 128 bytes */);
/* The CUDA stream (cudaStream_t) NCCL collectives of this communicator run on. */
void *bf_comm_nccl_stream(bf_comm *c);
/* Enqueues an all-reduce of device floats on the communicator's stream and returns at once (the
 * gradient buckets of the backward pass); the caller orders streams (bf_cuda_stream_handoff). */
bf_status bf_comm_nccl_allreduce_async(bf_comm *c, float *buf, size_t n, bf_reduce_op op);
/* The same for device doubles, summed: synchronised batch-norm's per-channel sums, which stay on
 * the device so a training step needs no host synchronisation. */
bf_status bf_comm_nccl_allreduce_double_async(bf_comm *c, double *buf, size_t n);
/* Waits, with the timeout, until everything enqueued on the communicator's stream is done. */
bf_status bf_comm_nccl_wait(bf_comm *c, const char *what);
/* This rank has failed (why: its error): aborts its communicator and tells the other communicators
 * of its group (the GPUs of this process), whose next wait, launch or released collective then
 * stops with an error naming this rank and why, instead of waiting for it until the collective
 * timeout. The first failure of a group is the one they name. Call from the rank's own thread. */
void bf_comm_nccl_fail(bf_comm *c, const char *why);

/* CUDA backend stream ordering (src/kernels/stream_handoff.cu): to_other = 1 makes `other_stream`
 * wait for the work enqueued so far on the backend's stream; 0 the reverse. No host wait. */
bf_status bf_cuda_stream_handoff(bf_backend_ref b, void *other_stream, int to_other);

/* ---- rendezvous file: how ranks without MPI share the NCCL unique id ----
 * Rank 0 writes `bytes` to path, headed by the job's name (write to a temporary name, then rename);
 * the others poll for the file until timeout_s and read it once it names their job: a file another
 * job left at the path is waited out, not read. job: bf_comm_launcher_job's text. */
bf_status bf_comm_rendezvous_file(const char *path, const char *job, int rank, void *data, size_t bytes,
                                  double timeout_s);

#ifdef __cplusplus
}
#endif
#endif
