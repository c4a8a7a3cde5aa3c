/* allreduce_bench.c - all-reduce bus bandwidth for the gradient sizes of VGG-16 and ResNet-50
 * (ImageNet, 1000 classes, batch-norm as built by the model zoo), and for a 25 MiB bucket.
 *
 *   mpirun -np N bench_allreduce [--iters K]          MPI on host buffers (the CPU path, runs anywhere)
 *   bench_allreduce --gpus N [--iters K]              NCCL, one thread per GPU, device buffers
 *
 * Prints, per size: time per all-reduce (median of K after 2 warm-ups) and the bus bandwidth
 * busbw = 2 (N-1)/N * bytes / time, the figure nccl-tests reports and the scaling model
 * (bench/scaling_model.py) takes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/comm.h"
#include "bioflex/config.h"
#include "bioflex/model.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Floats of a zoo model's parameters (= its gradient), planned without allocating. */
static size_t model_floats(bf_arch arch) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = arch;
    bf_model *m = NULL;
    if (bf_model_build(NULL, &cfg.model, (bf_shape){1, 3, 224, 224}, 1000, 1, &m) != BF_OK) {
        fprintf(stderr, "planning %s: %s\n", bf_arch_name(arch), bf_last_error());
        exit(1);
    }
    size_t n = m->num_param_floats;
    bf_model_destroy(m);
    return n;
}

typedef struct size_case {
    const char *name;
    size_t floats;
} size_case;

#define MAX_ITERS 200

/* ---- MPI on host buffers ---- */
static int run_mpi(const size_case *cases, int num_cases, int iters) {
    bf_comm *c = NULL;
    if (bf_comm_create_world(600, &c) != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return 1;
    }
    if (c->rank == 0)
        printf("MPI all-reduce, %d ranks (host buffers, float average)\n%-22s %12s %12s %12s\n", c->world, "gradient",
               "MiB", "ms", "busbw GB/s");
    for (int k = 0; k < num_cases; k++) {
        float *buf = malloc(cases[k].floats * sizeof(float));
        if (!buf) return 1;
        for (size_t i = 0; i < cases[k].floats; i++) buf[i] = 1e-3f * (float)(i % 1000);
        double t[MAX_ITERS];
        for (int it = -2; it < iters; it++) {
            bf_comm_barrier(c);
            double t0 = now_s();
            if (bf_comm_allreduce_float(c, buf, cases[k].floats, BF_REDUCE_AVG) != BF_OK) {
                fprintf(stderr, "error: %s\n", bf_last_error());
                bf_comm_destroy(c, 1);
                return 1;
            }
            if (it >= 0) t[it] = now_s() - t0;
        }
        qsort(t, (size_t)iters, sizeof t[0], cmp_double);
        double sec = t[iters / 2], bytes = cases[k].floats * 4.0;
        if (c->rank == 0)
            printf("%-22s %12.1f %12.3f %12.2f\n", cases[k].name, bytes / 1048576, 1e3 * sec,
                   2.0 * (c->world - 1) / c->world * bytes / sec / 1e9);
        free(buf);
    }
    bf_comm_destroy(c, 0);
    return 0;
}

/* ---- NCCL, one thread per GPU ---- */
typedef struct gpu_job {
    bf_comm *comm;
    const size_case *cases;
    int num_cases, iters;
    double *median_s; /* per case, written by rank 0 */
    bf_status status;
    char error[512];
} gpu_job;

static void *gpu_main(void *arg) {
    gpu_job *j = arg;
    bf_backend *b = NULL;
    j->status = bf_backend_create_cuda(j->comm->device, BF_PRECISION_FP32, &b);
    for (int k = 0; j->status == BF_OK && k < j->num_cases; k++) {
        float *buf = NULL;
        j->status = bf_alloc(b, j->cases[k].floats * sizeof(float), (void **)&buf);
        double t[MAX_ITERS];
        for (int it = -2; j->status == BF_OK && it < j->iters; it++) {
            double one = 1;
            j->status = j->comm->impl->allreduce_double(j->comm, &one, 1); /* line the ranks up */
            double t0 = now_s();
            if (j->status == BF_OK)
                j->status = bf_comm_nccl_allreduce_async(j->comm, buf, j->cases[k].floats, BF_REDUCE_AVG);
            if (j->status == BF_OK) j->status = bf_comm_nccl_wait(j->comm, "benchmark all-reduce");
            if (it >= 0) t[it] = now_s() - t0;
        }
        if (j->status == BF_OK && j->comm->rank == 0) {
            qsort(t, (size_t)j->iters, sizeof t[0], cmp_double);
            j->median_s[k] = t[j->iters / 2];
        }
        if (buf) bf_free(b, buf);
    }
    if (j->status != BF_OK) snprintf(j->error, sizeof j->error, "%s", bf_last_error());
    if (b) bf_backend_destroy(b);
    return NULL;
}

static int run_nccl(int gpus, const size_case *cases, int num_cases, int iters) {
    if (gpus > 64) gpus = 64;
    int devices[64];
    bf_comm *comms[64];
    for (int i = 0; i < gpus; i++) devices[i] = i;
    if (bf_comm_create_nccl_group(gpus, devices, 0, gpus, NULL, 600, comms) != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return 1;
    }
    double median[16] = {0};
    gpu_job jobs[64];
    pthread_t tids[64];
    for (int i = 0; i < gpus; i++) {
        jobs[i] = (gpu_job){.comm = comms[i], .cases = cases, .num_cases = num_cases, .iters = iters, .median_s = median};
        pthread_create(&tids[i], NULL, gpu_main, &jobs[i]);
    }
    int failed = 0;
    for (int i = 0; i < gpus; i++) {
        pthread_join(tids[i], NULL);
        if (jobs[i].status != BF_OK) {
            fprintf(stderr, "GPU %d: error: %s\n", i, jobs[i].error);
            failed = 1;
        }
    }
    for (int i = 0; i < gpus; i++) bf_comm_destroy(comms[i], failed);
    if (failed) return 1;
    printf("NCCL all-reduce, %d GPU(s) in one process (device buffers, float average)\n%-22s %12s %12s %12s\n", gpus,
           "gradient", "MiB", "ms", "busbw GB/s");
    for (int k = 0; k < num_cases; k++) {
        double bytes = cases[k].floats * 4.0;
        /* busbw is 0 for one GPU by definition: NCCL copies nothing. */
        printf("%-22s %12.1f %12.3f %12.2f\n", cases[k].name, bytes / 1048576, 1e3 * median[k],
               gpus > 1 ? 2.0 * (gpus - 1) / gpus * bytes / median[k] / 1e9 : 0.0);
    }
    return 0;
}

int main(int argc, char **argv) {
    int gpus = 0, iters = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gpus") && i + 1 < argc) gpus = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: [mpirun -np N] bench_allreduce [--gpus N] [--iters K]\n");
            return 2;
        }
    }
    if (iters < 1 || iters > MAX_ITERS) iters = 20;
    size_case cases[] = {{"bucket 25 MiB", (25u << 20) / 4}, {"resnet50 (25.6M)", model_floats(BF_ARCH_RESNET50)},
                         {"vgg16_bn (138.4M)", model_floats(BF_ARCH_VGG16)}};
    int num_cases = (int)(sizeof cases / sizeof cases[0]);
    if (gpus > 0) return run_nccl(gpus, cases, num_cases, iters);
    return run_mpi(cases, num_cases, iters);
}
