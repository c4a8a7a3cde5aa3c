/* jpeg_throughput.c - images/s of decode + RandomResizedCrop(224) + flip, on 1 core and on all.
 *
 *   bench_jpeg_throughput DIR [seconds_per_run] [size] [threads]
 *
 * threads 0 (the default) runs 1 thread, then one per core; any other value runs just that many,
 * e.g. 1 for interleaved A/B runs of two builds on a shared machine. Besides wall-clock images/s
 * every run prints the process's CPU time per image (getrusage, user + system, all threads): on a
 * machine shared with other work that is the figure to compare.
 *
 * DIR is an imagefolder tree (e.g. from bioflex-make-jpeg-tree, or a bioflex-prep copy). Every
 * thread has its own decoder and buffers, exactly as a loader worker does, and walks the training
 * files round-robin; the figure includes reading the file, decoding the crop, the antialiased
 * resize, the flip and the conversion to float CHW. bench/jpeg_pillow.py measures Pillow doing the
 * same on the same files. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bioflex/config.h"
#include "bioflex/data.h"
#include "bioflex/hash.h"
#include "bioflex/image.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU seconds of the whole process (every thread), user + system. */
static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/* Returns images per wall-clock second; *per_cpu_s gets images per CPU-second of this process,
 * the figure that stays meaningful on a machine shared with other work. */
static double run(const bf_dataset *d, int threads, double seconds, long *skipped, double *per_cpu_s) {
    long total = 0, bad = 0;
    double t0 = now_s(), c0 = cpu_s(), elapsed = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total, bad)
    {
        bf_image_worker w;
        float *img = malloc((size_t)3 * d->w * d->h * sizeof(float));
        if (bf_image_worker_init(&w, d->w) == BF_OK && img) {
            int tid = omp_get_thread_num();
            for (long k = tid;; k += threads) {
                int i = (int)(k % d->num_samples);
                if (bf_image_load_sample(d, i, bf_hash2(12345, (uint64_t)k), &w, img) != BF_OK) bad++;
                total++;
                if ((total & 15) == 0 && now_s() - t0 > seconds) break;
            }
            bf_image_worker_free(&w);
        }
        free(img);
    }
    elapsed = now_s() - t0;
    *per_cpu_s = (double)total / (cpu_s() - c0);
    *skipped = bad;
    return (double)total / elapsed;
}

int main(int argc, char **argv) {
    const int help = argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
    if (argc < 2 || help) {
        fprintf(help ? stdout : stderr, "usage: bench_jpeg_throughput DIR [seconds_per_run] [size] [threads]\n");
        return help ? 0 : 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 5.0;
    bf_config cfg;
    bf_config_defaults(&cfg);
    char a[4200];
    snprintf(a, sizeof a, "data.path = %s", argv[1]);
    if (bf_config_set(&cfg, "data.dataset = imagefolder") != BF_OK || bf_config_set(&cfg, a) != BF_OK ||
        bf_config_set(&cfg, "data.train_transform = random_resized_crop") != BF_OK ||
        bf_config_set(&cfg, "data.augment_flip = true") != BF_OK) {
        fprintf(stderr, "%s\n", bf_last_error());
        return 1;
    }
    if (argc > 3) {
        snprintf(a, sizeof a, "data.image_size = %s", argv[3]);
        if (bf_config_set(&cfg, a) != BF_OK) return fprintf(stderr, "%s\n", bf_last_error()), 1;
    }
    bf_dataset *d = NULL;
    if (bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d) != BF_OK) {
        fprintf(stderr, "%s\n", bf_last_error());
        return 1;
    }
    int cores = omp_get_num_procs(), only = argc > 4 ? atoi(argv[4]) : 0;
    printf("%s: %d training files, RandomResizedCrop(%d) + flip, %.0f s per run\n", argv[1], d->num_samples, d->w,
           seconds);
    long skipped;
    double cpu;
    if (only <= 1) {
        double one = run(d, 1, seconds, &skipped, &cpu);
        printf("1 thread:   %8.1f images/s wall, %8.1f images per CPU-second = %.1f us CPU per image (%ld undecodable "
               "skipped)\n",
               one, cpu, 1e6 / cpu, skipped);
    }
    int threads = only > 1 ? only : only == 0 && cores > 1 ? cores : 0;
    if (threads > 1) {
        double all = run(d, threads, seconds, &skipped, &cpu);
        printf("%d threads: %8.1f images/s wall = %.1f per thread, %8.1f images per CPU-second = %.1f us CPU per image\n",
               threads, all, all / threads, cpu, 1e6 / cpu);
    }
    bf_dataset_free(d);
    return 0;
}
