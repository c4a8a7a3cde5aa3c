/* test_comm.c - the communicator front end without a launcher (comm.h):
 *   - the one-rank communicator: rank 0 of 1, collectives leave buffers as they are;
 *   - the launcher's world and rank from Open MPI / Slurm variables (SLURM_NTASKS alone, as in a
 *     batch script outside srun, does not count);
 *   - a process started as one of several ranks refuses to run alone when MPI is not built;
 *   - the rendezvous file: rank 0 writes it (atomically), another rank waits for it and reads the
 *     bytes, even when a file of another job was there first (it waits for rank 0's); a missing
 *     file, or one only another job wrote, times out with a message naming it;
 *   - the launch's name from Slurm's variables;
 *   - which GPUs each of a node's --gpus processes takes, and a layout that would share GPUs refused;
 *   - the loader's data-parallel shards: ranks together cover every position of the epoch once. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bioflex/comm.h"
#include "bioflex/data.h"
#include "data_parallel.h"
#include "testutil.h"

static void clear_launcher_env(void) {
    const char *names[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_SIZE", "PMI_RANK", "PMIX_SIZE",
                           "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_NTASKS", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unsetenv(names[i]);
}

static void test_self(void) {
    bf_comm *c = NULL;
    CHECK_OK(bf_comm_create_self(&c));
    if (!c) return;
    CHECK(c->rank == 0 && c->world == 1 && c->kind == BF_COMM_SELF, "self: rank %d of %d", c->rank, c->world);
    float x[3] = {1, 2, 3};
    double d[2] = {4, 5};
    CHECK_OK(bf_comm_allreduce_float(c, x, 3, BF_REDUCE_AVG));
    CHECK_OK(bf_comm_allreduce_double(c, d, 2));
    CHECK_OK(bf_comm_broadcast(c, x, sizeof x, 0));
    CHECK_OK(bf_comm_barrier(c));
    CHECK_OK(bf_comm_check_same(c, 42, "config", "the same config"));
    CHECK(x[0] == 1 && x[1] == 2 && x[2] == 3 && d[0] == 4 && d[1] == 5, "self collectives changed the buffers");
    bf_comm_destroy(c, 0);
}

static void test_launcher_env(void) {
    clear_launcher_env();
    CHECK(bf_comm_launcher_world() == 1 && bf_comm_launcher_rank() == 0, "alone: world %d rank %d",
          bf_comm_launcher_world(), bf_comm_launcher_rank());
    setenv("SLURM_NTASKS", "4", 1);
    CHECK(bf_comm_launcher_world() == 1, "SLURM_NTASKS without SLURM_PROCID: world %d, want 1",
          bf_comm_launcher_world());
    setenv("SLURM_PROCID", "3", 1);
    CHECK(bf_comm_launcher_world() == 4 && bf_comm_launcher_rank() == 3, "srun task: world %d rank %d",
          bf_comm_launcher_world(), bf_comm_launcher_rank());
    clear_launcher_env();
    /* MPICH's per-node count is not the world size (one rank per node would read as a world of 1):
     * ignored, the world comes from PMI_SIZE */
    setenv("MPI_LOCALNRANKS", "2", 1);
    CHECK(bf_comm_launcher_world() == 1, "MPI_LOCALNRANKS alone read as world %d", bf_comm_launcher_world());
    setenv("MPI_LOCALNRANKS", "1", 1);
    setenv("PMI_SIZE", "4", 1);
    setenv("PMI_RANK", "2", 1);
    CHECK(bf_comm_launcher_world() == 4 && bf_comm_launcher_rank() == 2, "mpiexec.hydra: world %d rank %d",
          bf_comm_launcher_world(), bf_comm_launcher_rank());
    clear_launcher_env();
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    setenv("OMPI_COMM_WORLD_RANK", "1", 1);
    CHECK(bf_comm_launcher_world() == 2 && bf_comm_launcher_rank() == 1, "mpirun: world %d rank %d",
          bf_comm_launcher_world(), bf_comm_launcher_rank());
    if (!bf_comm_mpi_built()) {
        bf_comm *c = NULL;
        CHECK(bf_comm_create_world(5, &c) == BF_ERR_UNAVAILABLE && strstr(bf_last_error(), "built without MPI"),
              "2 ranks without MPI: %s", bf_last_error());
    }
    clear_launcher_env();
}

static void test_rendezvous(void) {
    char dir[] = "/tmp/bioflex_rdv_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/id", dir);
    unsigned char id[128], got[128], old_id[128];
    for (int i = 0; i < 128; i++) id[i] = (unsigned char)(i * 7 + 3), old_id[i] = (unsigned char)(255 - i);
    /* an earlier job's file at the same path, there before this job's rank 0 writes */
    CHECK_OK(bf_comm_rendezvous_file(path, "41.0.0", 0, old_id, sizeof old_id, 5));
    pid_t child = fork();
    if (child == 0) { /* rank 0, a little late */
        struct timespec late = {0, 300 * 1000 * 1000};
        nanosleep(&late, NULL);
        _exit(bf_comm_rendezvous_file(path, "42.0.0", 0, id, sizeof id, 5) == BF_OK ? 0 : 1);
    }
    memset(got, 0, sizeof got);
    CHECK_OK(bf_comm_rendezvous_file(path, "42.0.0", 1, got, sizeof got, 10));
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rank 0 could not write the rendezvous file");
    CHECK(memcmp(id, got, sizeof id) == 0, "rank 1 read other bytes than its rank 0 wrote (the stale file's: %d)",
          memcmp(old_id, got, sizeof got) == 0);
    CHECK(bf_comm_rendezvous_file(path, "43.0.0", 1, got, sizeof got, 0.3) == BF_ERR_IO &&
              strstr(bf_last_error(), "left from another job") && strstr(bf_last_error(), "42.0.0"),
          "a file only another job wrote times out naming it: %s", bf_last_error());
    char missing[300];
    snprintf(missing, sizeof missing, "%s/never", dir);
    CHECK(bf_comm_rendezvous_file(missing, "42.0.0", 2, got, sizeof got, 0.3) == BF_ERR_IO &&
              strstr(bf_last_error(), "never") && strstr(bf_last_error(), "collective_timeout"),
          "missing rendezvous file: %s", bf_last_error());
    remove(path);

    /* --gpus over the rendezvous file: process 0's id and --gpus; a process with another --gpus is refused */
    unsigned char id1[128];
    CHECK_OK(bf_gpus_rendezvous(path, "44.0.0", 0, 4, id, 5));
    memset(id1, 0, sizeof id1);
    CHECK_OK(bf_gpus_rendezvous(path, "44.0.0", 1, 4, id1, 5));
    CHECK(memcmp(id, id1, sizeof id) == 0, "process 1 read another id than process 0 wrote");
    CHECK(bf_gpus_rendezvous(path, "44.0.0", 2, 8, id1, 5) == BF_ERR_CONFIG &&
              strstr(bf_last_error(), "[run] gpus = 8 in process 2 but 4 in process 0"),
          "--gpus 8 against process 0's 4: %s", bf_last_error());
    remove(path);

    /* the launch's name: Slurm's job, step and restart count */
    clear_launcher_env();
    unsetenv("SLURM_JOB_ID"), unsetenv("SLURM_STEP_ID"), unsetenv("SLURM_RESTART_COUNT"), unsetenv("OMPI_MCA_ess_base_jobid");
    char job[256];
    bf_comm_launcher_job(job, sizeof job);
    CHECK(job[0] == '\0', "no launcher: an empty job name (got \"%s\")", job);
    setenv("SLURM_JOB_ID", "1234", 1), setenv("SLURM_STEP_ID", "0", 1), setenv("SLURM_RESTART_COUNT", "2", 1);
    bf_comm_launcher_job(job, sizeof job);
    CHECK(strcmp(job, "SLURM_JOB_ID=1234 SLURM_STEP_ID=0 SLURM_RESTART_COUNT=2") == 0,
          "Slurm job 1234, step 0, restart 2: \"%s\"", job);
    unsetenv("SLURM_JOB_ID"), unsetenv("SLURM_STEP_ID"), unsetenv("SLURM_RESTART_COUNT");
    rmdir(dir);
}

static void test_gpu_blocks(void) {
    struct { int process, gpus, visible, first; bf_status status; } cases[] = {
        {0, 8, 8, 0, BF_OK},          /* alone on its node */
        {1, 4, 8, 4, BF_OK},          /* two processes on an 8-GPU node, 4 GPUs each */
        {3, 2, 8, 6, BF_OK},          /* four processes, 2 each */
        {1, 4, 4, 0, BF_OK},          /* each process sees only its own 4 */
        {1, 6, 8, 0, BF_ERR_CONFIG},  /* process 1 would need GPUs 6 to 11: it would share 0 to 5 */
        {2, 4, 8, 0, BF_ERR_CONFIG},  /* a third process on an 8-GPU node with --gpus 4 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int first = -1;
        bf_status s = bf_gpus_first_device(cases[i].process, cases[i].gpus, cases[i].visible, &first);
        CHECK(s == cases[i].status && (s != BF_OK || first == cases[i].first),
              "process %d, --gpus %d, %d visible: %s, first GPU %d (expected %s, %d)", cases[i].process, cases[i].gpus,
              cases[i].visible, bf_status_name(s), first, bf_status_name(cases[i].status), cases[i].first);
        if (s == BF_ERR_CONFIG)
            CHECK(strstr(bf_last_error(), "processes per node") && strstr(bf_last_error(), "--gpus-per-task"),
                  "the refusal says what to do: %s", bf_last_error());
    }
}

/* Which launches take the NCCL path (train_gpus.c) and which the plain or MPI one. */
static void test_nccl_route(void) {
    struct { int gpus, force, device, world, visible, built, nccl; const char *what; } cases[] = {
        {1, 0, BF_DEVICE_AUTO, 1, 1, 1, 0, "one process, one GPU: the plain path"},
        {4, 0, BF_DEVICE_AUTO, 1, 4, 1, 1, "--gpus 4"},
        {1, 1, BF_DEVICE_AUTO, 1, 1, 1, 1, "force_nccl"},
        {1, 0, BF_DEVICE_AUTO, 8, 1, 1, 1, "mpirun -np 8, a GPU each (device auto)"},
        {1, 0, BF_DEVICE_SEL_CUDA, 2, 8, 1, 1, "mpirun -np 2, device cuda, every GPU visible"},
        {1, 0, BF_DEVICE_AUTO, 2, 0, 1, 0, "mpirun -np 2 on CPU nodes (auto, no GPU): MPI"},
        {1, 0, BF_DEVICE_SEL_CPU, 2, 8, 1, 0, "mpirun -np 2, device cpu on a GPU node: MPI"},
        {1, 0, BF_DEVICE_SEL_CUDA, 2, 1, 0, 0, "mpirun -np 2 on GPUs, built without NCCL: MPI via the host"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        cfg.run.gpus = cases[i].gpus;
        cfg.run.force_nccl = cases[i].force;
        cfg.run.device = cases[i].device;
        int got = bf_train_uses_nccl(&cfg, cases[i].world, cases[i].visible, cases[i].built);
        CHECK(got == cases[i].nccl, "%s: NCCL path %d, want %d", cases[i].what, got, cases[i].nccl);
    }
}

/* 3 ranks x batch 4 over 30 samples: whole global batches of 12 (drop_last: 2 per rank, 24
 * positions), or (evaluation) every position once with partial / empty last batches. */
static void test_loader_shards(void) {
    bf_data_config dc;
    memset(&dc, 0, sizeof dc);
    bf_dataset d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "labels");
    d.num_samples = 30;
    d.c = d.h = d.w = 1;
    d.num_classes = 30;
    uint8_t pixels[30];
    int32_t labels[30];
    for (int i = 0; i < 30; i++) pixels[i] = (uint8_t)i, labels[i] = i;
    d.pixels = pixels;
    d.labels = labels;
    d.std[0] = 1;
    for (int drop = 1; drop >= 0; drop--) {
        int seen[30] = {0}, total = 0;
        for (int r = 0; r < 3; r++) {
            bf_loader_options o = {.batch_size = 4, .threads = 1, .prefetch = 2, .shuffle = 1, .drop_last = drop,
                                   .seed = 5, .rank = r, .world = 3};
            bf_loader *l = NULL;
            CHECK_OK(bf_loader_create(&d, &o, &l));
            if (!l) return;
            int want = drop ? 2 : (r < 2 ? 3 : 2); /* rank 2's third slice starts at 32 > 30 */
            CHECK(bf_loader_num_batches(l) == want, "drop_last %d rank %d: %d batches, want %d", drop, r,
                  bf_loader_num_batches(l), want);
            CHECK_OK(bf_loader_start_epoch(l, 1, 0));
            for (;;) {
                bf_batch *b = NULL;
                CHECK_OK(bf_loader_next(l, &b, NULL));
                if (!b) break;
                for (int k = 0; k < b->n; k++) seen[b->labels[k]]++;
                total += b->n;
                bf_loader_release(l, b);
            }
            bf_loader_destroy(l);
        }
        int twice = 0;
        for (int i = 0; i < 30; i++) twice += seen[i] > 1;
        CHECK(twice == 0, "drop_last %d: %d samples seen by two ranks", drop, twice);
        CHECK(total == (drop ? 24 : 30), "drop_last %d: %d samples over the ranks, want %d", drop, total, drop ? 24 : 30);
    }
}

int main(void) {
    test_self();
    test_launcher_env();
    test_rendezvous();
    test_gpu_blocks();
    test_nccl_route();
    test_loader_shards();
    return bf_test_finish();
}
