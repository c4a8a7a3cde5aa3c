/* comm.c - the communicator front end: the one-rank "self" communicator, reading the launcher's
 * world size from the environment, the collectives' dispatch, the checks that every rank holds the
 * same value or text (the config, the data, the resumed position), and the
 * rendezvous file. MPI and NCCL live in comm_mpi.c and comm_nccl.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bioflex/comm.h"

/* ---- self: one rank ---- */
static bf_status self_allreduce_float(bf_comm *c, float *buf, size_t n, bf_reduce_op op) { return BF_OK; }
static bf_status self_allreduce_double(bf_comm *c, double *buf, size_t n) { return BF_OK; }
static bf_status self_broadcast(bf_comm *c, void *buf, size_t bytes, int root) { return BF_OK; }
static bf_status self_barrier(bf_comm *c) { return BF_OK; }
static void self_destroy(bf_comm *c, int failed) {}

static const bf_comm_impl self_impl = {self_allreduce_float, self_allreduce_double, self_broadcast, self_barrier,
                                       self_destroy};

bf_status bf_comm_create_self(bf_comm **out) {
    bf_comm *c = calloc(1, sizeof *c);
    if (!c) return bf_error(BF_ERR_OOM, "communicator: out of memory");
    c->kind = BF_COMM_SELF;
    c->world = c->local_world = 1;
    c->device = -1;
    c->impl = &self_impl;
    *out = c;
    return BF_OK;
}

/* ---- the launcher's world ---- */
static int env_int(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : 0;
}

int bf_comm_launcher_world(void) {
    /* Not MPI_LOCALNRANKS (MPICH's ranks on this node): one rank per node would read as a world of
     * one and every node would train alone. */
    static const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int n = env_int(names[i]);
        /* SLURM_NTASKS is also set inside an allocation for a plain `./bioflex-train` run on the
         * batch host: only count it when srun started this process as one of its tasks. */
        if (i == 3 && !getenv("SLURM_PROCID")) continue;
        if (n > 0) return n;
    }
    return 1;
}

int bf_comm_launcher_rank(void) {
    static const char *names[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"};
    if (bf_comm_launcher_world() <= 1) return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (getenv(names[i]) && *getenv(names[i])) return env_int(names[i]);
    return 0;
}

void bf_comm_launcher_job(char *out, size_t cap) {
    /* Slurm: the job, the step (several sruns in one job) and the restart count (a requeued job keeps
     * its id); Open MPI's mpirun: its job id. Absent variables read as empty. */
    static const char *names[] = {"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "OMPI_MCA_ess_base_jobid"};
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0] && used < cap; i++) {
        const char *v = getenv(names[i]);
        if (!v || !*v) continue;
        int n = snprintf(out + used, cap - used, "%s%s=%s", used ? " " : "", names[i], v);
        if (n > 0) used += (size_t)n;
    }
}

bf_status bf_comm_create_world(double timeout_s, bf_comm **out) {
    int world = bf_comm_launcher_world();
    if (world <= 1) return bf_comm_create_self(out);
    if (!bf_comm_mpi_built())
        return bf_error(BF_ERR_UNAVAILABLE, "this process is one of %d ranks started by mpirun/srun, but bioflex was "
                        "built without MPI, so every rank would train alone: install an MPI (tools/setup.sh installs "
                        "libopenmpi-dev) and configure with -DBIOFLEX_MPI=ON", world);
    return bf_comm_create_mpi(timeout_s, out);
}

/* ---- collectives ---- */
bf_status bf_comm_allreduce_float(bf_comm *c, float *buf, size_t n, bf_reduce_op op) {
    return c->world == 1 ? BF_OK : c->impl->allreduce_float(c, buf, n, op);
}
bf_status bf_comm_allreduce_double(bf_comm *c, double *buf, size_t n) {
    return c->world == 1 ? BF_OK : c->impl->allreduce_double(c, buf, n);
}
bf_status bf_comm_broadcast(bf_comm *c, void *buf, size_t bytes, int root) {
    return c->world == 1 ? BF_OK : c->impl->broadcast(c, buf, bytes, root);
}
bf_status bf_comm_barrier(bf_comm *c) { return c->world == 1 ? BF_OK : c->impl->barrier(c); }

bf_status bf_comm_check_same(bf_comm *c, uint64_t value, const char *what, const char *fix) {
    if (c->world == 1) return BF_OK;
    /* Rank 0's value travels to everyone; each rank adds "I differ" (its rank + 1 at slot 0, a
     * count at slot 1), so every rank learns the same verdict and stops together. */
    uint64_t root = value;
    BF_TRY(bf_comm_broadcast(c, &root, sizeof root, 0));
    int differs = root != value;
    double votes[2] = {differs ? (double)(c->rank + 1) : 0.0, differs ? 1.0 : 0.0};
    BF_TRY(bf_comm_allreduce_double(c, votes, 2));
    if (votes[1] == 0) return BF_OK;
    if (differs)
        return bf_error(BF_ERR_CONFIG, "rank %d's %s (hash %016llx) differs from rank 0's (%016llx): every rank must "
                        "use %s", c->rank, what, (unsigned long long)value, (unsigned long long)root, fix);
    return bf_error(BF_ERR_CONFIG, "%d rank(s) have a different %s from rank 0: every rank must use %s", (int)votes[1],
                    what, fix);
}

/* ---- the same text on every rank ----
 * Lines starting with '#' are comments (bf_config_print names the file it read there, which may
 * be spelt differently on each rank) and are skipped. */

/* The next compared line from *at (its start, *len bytes without the newline); NULL at the end. */
static const char *next_line(const char **at, size_t *len) {
    for (;;) {
        const char *line = *at;
        if (!*line) return NULL;
        const char *end = strchr(line, '\n');
        *len = end ? (size_t)(end - line) : strlen(line);
        *at = end ? end + 1 : line + *len;
        if (*line != '#') return line;
    }
}

/* Line `number` (from 1, comments not counted) of text as "[section] key = value": the last
 * "[section]" header above it, then the line with its runs of blanks made one. */
static void describe_line(const char *text, int number, char *out, size_t cap) {
    const char *at = text, *line = NULL, *section = NULL;
    size_t len = 0, section_len = 0;
    for (int i = 0; i < number && (line = next_line(&at, &len)); i++)
        if (*line == '[' && i + 1 < number) section = line, section_len = len;
    if (!line) {
        snprintf(out, cap, "(nothing: its text ends before)");
        return;
    }
    size_t o = 0;
    if (section && *line != '[') o = (size_t)snprintf(out, cap, "%.*s ", (int)section_len, section);
    for (size_t i = 0; i < len && o + 1 < cap; i++)
        if (!(line[i] == ' ' && (o == 0 || out[o - 1] == ' '))) out[o++] = line[i];
    out[o < cap ? o : cap - 1] = 0;
}

/* The number (from 1) of the first compared line where a and b differ; 0 when they are equal. */
static int first_difference(const char *a, const char *b) {
    const char *la, *lb;
    size_t na = 0, nb = 0;
    for (int number = 1;; number++) {
        la = next_line(&a, &na);
        lb = next_line(&b, &nb);
        if (!la && !lb) return 0;
        if (!la || !lb || na != nb || memcmp(la, lb, na) != 0) return number;
    }
}

bf_status bf_comm_check_same_text(bf_comm *c, const char *text, const char *what, const char *fix) {
    if (c->world == 1) return BF_OK;
    uint64_t len = c->rank == 0 ? strlen(text) : 0;
    BF_TRY(bf_comm_broadcast(c, &len, sizeof len, 0));
    char *root = malloc(len + 1);
    double *votes = calloc((size_t)c->world, sizeof *votes); /* votes[r]: rank r's first differing line */
    if (!root || !votes) {
        free(root);
        free(votes);
        return bf_error(BF_ERR_OOM, "comparing the ranks' %s: out of memory", what);
    }
    if (c->rank == 0) memcpy(root, text, len);
    bf_status s = bf_comm_broadcast(c, root, len, 0);
    root[len] = 0;
    int own = first_difference(root, text);
    votes[c->rank] = own;
    if (s == BF_OK) s = bf_comm_allreduce_double(c, votes, (size_t)c->world);
    int first = -1, count = 0;
    for (int r = 0; s == BF_OK && r < c->world; r++) {
        if (votes[r] == 0) continue;
        if (first < 0) first = r;
        count++;
    }
    if (s == BF_OK && first >= 0) {
        char theirs[256], ours[256];
        if (own) {
            describe_line(root, own, ours, sizeof ours);
            describe_line(text, own, theirs, sizeof theirs);
            s = bf_error(BF_ERR_CONFIG, "rank %d's %s differs from rank 0's: rank 0 has \"%s\", rank %d has \"%s\"; "
                         "every rank must use %s", c->rank, what, ours, c->rank, theirs, fix);
        } else {
            describe_line(root, (int)votes[first], ours, sizeof ours);
            s = bf_error(BF_ERR_CONFIG, "rank %d's %s differs from rank 0's where rank 0 has \"%s\" (%d rank(s) "
                         "differ; each names its line in its own error): every rank must use %s", first, what, ours,
                         count, fix);
        }
    }
    free(root);
    free(votes);
    return s;
}

void bf_comm_destroy(bf_comm *c, int failed) {
    if (!c) return;
    c->impl->destroy(c, failed);
    free(c);
}

/* ---- rendezvous file ----
 * The file is one line "bioflex rendezvous job=<job>\n" and then the bytes. A file left by an earlier
 * job at the same path names another job: the other ranks wait on until rank 0 replaces it, instead
 * of reading an id that no rank 0 serves any more (NCCL would then hang until the timeout). */
#define RENDEZVOUS_HEADER "bioflex rendezvous job="

bf_status bf_comm_rendezvous_file(const char *path, const char *job, int rank, void *data, size_t bytes,
                                  double timeout_s) {
    if (rank == 0) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "wb");
        if (!f) return bf_error(BF_ERR_IO, "rendezvous file %s: cannot write: %s", tmp, strerror(errno));
        int bad = fprintf(f, RENDEZVOUS_HEADER "%s\n", job) < 0;
        size_t w = fwrite(data, 1, bytes, f);
        bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
        bad |= fclose(f) != 0;
        if (w != bytes || bad || rename(tmp, path) != 0) {
            remove(tmp);
            return bf_error(BF_ERR_IO, "rendezvous file %s: cannot write: %s", path, strerror(errno));
        }
        return BF_OK;
    }
    struct timespec start, now, nap = {0, 50 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    char seen[256] = ""; /* the job named by a stale file, for the message */
    for (;;) {
        FILE *f = fopen(path, "rb");
        if (f) {
            char line[256];
            int whole = fgets(line, sizeof line, f) != NULL && strchr(line, '\n') != NULL &&
                        strncmp(line, RENDEZVOUS_HEADER, strlen(RENDEZVOUS_HEADER)) == 0;
            size_t r = whole ? fread(data, 1, bytes, f) : 0;
            fclose(f);
            if (whole) {
                char *named = line + strlen(RENDEZVOUS_HEADER);
                named[strcspn(named, "\n")] = '\0';
                if (strcmp(named, job) == 0 && r == bytes) return BF_OK;
                if (strcmp(named, job) != 0) snprintf(seen, sizeof seen, "%s", named);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) * 1e-9 > timeout_s) {
            if (seen[0])
                return bf_error(BF_ERR_IO, "rendezvous file %s is left from another job (job \"%s\", this is \"%s\") and "
                                "rank 0 did not replace it within %.0f s ([run] collective_timeout); is rank 0 running, "
                                "and is the file on a filesystem every node shares?", path, seen, job, timeout_s);
            return bf_error(BF_ERR_IO, "rendezvous file %s: rank 0 did not write it within %.0f s ([run] "
                            "collective_timeout); is it on a filesystem every node shares?", path, timeout_s);
        }
        nanosleep(&nap, NULL);
    }
}
