/* lab_util.cuh - what the kernel labs (bench/flex_lab.cu, bench/lif_lab.cu; the llm.c dev/cuda
 * pattern) share: error checks that stop the lab, the version-0 kernels' vector loads and
 * grid-stride loop, the device setup (backends, stream, peak DRAM bandwidth), the timing with an
 * L2 flush before every run, the command line (--batch, --repeats, --peak-gbs, --help) and the
 * result table. Header-only: each lab is one translation unit that includes it once.
 *
 * It includes the backend's private header (src/kernels/cuda_backend.h) for the backend's stream,
 * on which the labs launch their own kernels and record the events. */
#ifndef BIOFLEX_LAB_UTIL_CUH
#define BIOFLEX_LAB_UTIL_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "bioflex/ops.h"
#include "cuda_backend.h"

/* ---- error checks: a lab fails loudly and stops ---- */

#define CK(call)                                                                                    \
    do {                                                                                            \
        cudaError_t ck_e_ = (call);                                                                 \
        if (ck_e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "error: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__,          \
                    cudaGetErrorString(ck_e_));                                                     \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

#define BFK(call)                                                                                   \
    do {                                                                                            \
        bf_status bfk_s_ = (call);                                                                  \
        if (bfk_s_ != BF_OK) {                                                                      \
            fprintf(stderr, "error: %s failed at %s:%d: %s: %s\n", #call, __FILE__, __LINE__,      \
                    bf_status_name(bfk_s_), bf_last_error());                                       \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

/* After a <<<...>>> launch: a bad configuration, or an earlier asynchronous fault. */
#define LAUNCH_CHECK(name)                                                                          \
    do {                                                                                            \
        cudaError_t lc_e_ = cudaGetLastError();                                                     \
        if (lc_e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "error: launch of %s failed at %s:%d: %s\n", name, __FILE__, __LINE__, \
                    cudaGetErrorString(lc_e_));                                                     \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

#define LAB_THREADS 256

/* ---- version 0's building blocks ---- */

/* V consecutive floats; V = 4 loads and stores 16 bytes at once. Callers guarantee V-element
 * alignment (each lab says how; cudaMalloc aligns to 256 bytes). */
template <int V>
struct fvec {
    float v[V];
};

template <int V>
__device__ __forceinline__ fvec<V> load_f(const float *p) {
    static_assert(V == 1 || V == 4, "V is 1 or 4");
    fvec<V> r;
    if constexpr (V == 4) {
        const float4 q = *reinterpret_cast<const float4 *>(p);
        r.v[0] = q.x;
        r.v[1] = q.y;
        r.v[2] = q.z;
        r.v[3] = q.w;
    } else {
        r.v[0] = *p;
    }
    return r;
}

template <int V>
__device__ __forceinline__ void store_f(float *p, const fvec<V> &r) {
    if constexpr (V == 4) {
        *reinterpret_cast<float4 *>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
    } else {
        *p = r.v[0];
    }
}

#define LAB_GRID_STRIDE(i, total) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

/* ---- host side ---- */

static int g_sm_count = 1; /* set by lab_device_open */

/* Blocks for a grid-stride loop over `items`: enough to cover them, at most 32 per SM. */
static inline unsigned lab_blocks(size_t items) {
    size_t blocks = (items + LAB_THREADS - 1) / LAB_THREADS;
    const size_t cap = (size_t)g_sm_count * 32;
    if (blocks > cap) blocks = cap;
    if (blocks < 1) blocks = 1;
    return (unsigned)blocks;
}

static inline void *dev_alloc(bf_backend *b, size_t bytes) {
    void *p = NULL;
    BFK(bf_alloc(b, bytes, &p)); /* zero-filled */
    return p;
}

static inline void *host_alloc(bf_backend *cpu, size_t bytes) {
    void *p = NULL;
    BFK(bf_alloc(cpu, bytes, &p));
    return p;
}

/* After the validation of every version: on a mismatch says so and returns 0 (the lab then exits
 * 1 before any timing). */
static inline int lab_validated(int ok) {
    if (!ok) {
        fprintf(stderr, "\nerror: VALIDATION FAILED: a version does not match the CPU reference; no timings\n");
        return 0;
    }
    printf("All results match.\n\n");
    return 1;
}

/* ---- the command line ---- */

typedef struct lab_options {
    int batch;       /* --batch N, 1..65536 (the caller's default) */
    int repeats;     /* --repeats N, 1..1000000 (the caller's default) */
    double peak_gbs; /* --peak-gbs X, 0 when not given */
} lab_options;

/* A lab's own options: returns 1 when it took opt (with its value val), 0 when it does not know
 * opt, 2 when the value is bad (after printing why). */
typedef int (*lab_option_fn)(const char *opt, const char *val, void *user);

/* The integer value of option opt in lo..hi into *out; else says so and returns 0. */
static inline int lab_int_option(const char *opt, const char *val, long lo, long hi, int *out) {
    char *end = NULL;
    const long v = strtol(val, &end, 10);
    if (end == val || *end || v < lo || v > hi) {
        fprintf(stderr, "error: %s wants an integer in %ld..%ld, got %s\n", opt, lo, hi, val);
        return 0;
    }
    *out = (int)v;
    return 1;
}

/* Parses argv into o (--help and -h print usage to stdout); extra (may be NULL) handles the lab's
 * other options. Returns -1 to go on, else the exit status: 0 after --help, 2 on a bad command line. */
static inline int lab_parse_options(int argc, char **argv, lab_options *o, void (*usage)(FILE *), lab_option_fn extra,
                                    void *user) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        const char *opt = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value\n", opt);
            usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        if (!strcmp(opt, "--batch")) {
            if (!lab_int_option(opt, val, 1, 65536, &o->batch)) return 2;
        } else if (!strcmp(opt, "--repeats")) {
            if (!lab_int_option(opt, val, 1, 1000000, &o->repeats)) return 2;
        } else if (!strcmp(opt, "--peak-gbs")) {
            char *end = NULL;
            double v = strtod(val, &end);
            if (end == val || *end || !(v > 0.0) || !(v < 1e6)) {
                fprintf(stderr, "error: --peak-gbs wants a positive number, got %s\n", val);
                return 2;
            }
            o->peak_gbs = v;
        } else {
            const int took = extra ? extra(opt, val, user) : 0;
            if (took == 2) return 2;
            if (!took) {
                fprintf(stderr, "error: unknown option %s\n", opt);
                usage(stderr);
                return 2;
            }
        }
    }
    return -1;
}

/* ---- the device and the timing ---- */

typedef struct lab_timer {
    cudaStream_t stream;
    cudaEvent_t start, stop;
    void *flush;
    size_t flush_bytes;
    int repeats;
} lab_timer;

/* Mean milliseconds of fn over t->repeats runs, each after an L2 flush outside the timed region,
 * and before that, when given, a preparation that is not timed either (prep, flush, fn). */
template <typename Case>
static double time_pass(lab_timer *t, Case *c, void (*fn)(Case *), void (*prep)(Case *) = nullptr) {
    double total = 0.0;
    for (int r = 0; r < t->repeats; r++) {
        if (prep) prep(c);
        CK(cudaMemsetAsync(t->flush, r & 0xFF, t->flush_bytes, t->stream));
        CK(cudaEventRecord(t->start, t->stream));
        fn(c);
        CK(cudaEventRecord(t->stop, t->stream));
        CK(cudaEventSynchronize(t->stop));
        float ms = 0.0f;
        CK(cudaEventElapsedTime(&ms, t->start, t->stop));
        total += ms;
    }
    CK(cudaGetLastError()); /* an asynchronous fault inside prep or fn */
    return total / t->repeats;
}

typedef struct lab_device {
    bf_backend *b;        /* the CUDA backend on device 0 */
    bf_backend *cpu;      /* the CPU reference backend */
    cudaStream_t stream;  /* b's stream */
    cudaDeviceProp prop;
    double peak_gbs;      /* for %peak */
    lab_timer timer;      /* on stream, o->repeats runs per pass, a flush buffer twice the L2 */
} lab_device;

/* Creates the backends and the timer and prints the line "<title>: <device>, SMs, L2, flush
 * buffer, peak GB/s (where from)" and the memory clock and bus width when the driver reports them.
 * The peak is --peak-gbs, else memory clock x bus width x 2, else 3350 (H100 SXM). Returns 0, or
 * 1 (after a message) without a CUDA build or device. */
static inline int lab_device_open(lab_device *d, const char *title, const lab_options *o) {
    memset(d, 0, sizeof *d);
    if (!bf_cuda_built()) {
        fprintf(stderr, "error: bioflex was built without the CUDA backend\n");
        return 1;
    }
    if (bf_cuda_device_count() < 1) {
        fprintf(stderr, "error: no CUDA device found\n");
        return 1;
    }
    BFK(bf_backend_create_cuda(0, BF_PRECISION_FP32, &d->b));
    BFK(bf_backend_create_cpu(0, &d->cpu));
    d->stream = ((const bf_cuda_impl *)d->b->impl)->stream;
    const int dev = d->b->device_index;

    cudaDeviceProp *prop = &d->prop;
    CK(cudaGetDeviceProperties(prop, dev));
    g_sm_count = prop->multiProcessorCount > 0 ? prop->multiProcessorCount : 1;
    /* CUDA 13 removed cudaDeviceProp.memoryClockRate; the attribute remains (kHz). */
    int mem_khz = 0, bus_bits = 0;
    if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        mem_khz = 0;
    }
    if (cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        bus_bits = 0;
    }
    const double queried_gbs = 2.0 * (double)mem_khz * 1e3 * ((double)bus_bits / 8.0) / 1e9;
    const char *peak_from;
    if (o->peak_gbs > 0.0) {
        d->peak_gbs = o->peak_gbs;
        peak_from = "--peak-gbs";
    } else if (queried_gbs > 0.0) {
        d->peak_gbs = queried_gbs;
        peak_from = "2 x memory clock x bus width";
    } else {
        d->peak_gbs = 3350.0;
        peak_from = "default, H100 SXM (the driver reported no memory clock)";
    }

    lab_timer *t = &d->timer;
    t->stream = d->stream;
    t->repeats = o->repeats;
    t->flush_bytes = 2 * (size_t)(prop->l2CacheSize > 0 ? prop->l2CacheSize : 64 << 20);
    CK(cudaMalloc(&t->flush, t->flush_bytes));
    CK(cudaEventCreate(&t->start));
    CK(cudaEventCreate(&t->stop));

    printf("%s: %s, %d SMs, L2 %.1f MiB (flush buffer %.1f MiB), peak %.0f GB/s (%s)\n", title, prop->name,
           prop->multiProcessorCount, prop->l2CacheSize / 1048576.0, t->flush_bytes / 1048576.0, d->peak_gbs,
           peak_from);
    if (mem_khz > 0 && bus_bits > 0)
        printf("  memory clock %.0f MHz, bus %d bits -> %.0f GB/s\n", mem_khz / 1e3, bus_bits, queried_gbs);
    return 0;
}

static inline void lab_device_close(lab_device *d) {
    CK(cudaEventDestroy(d->timer.start));
    CK(cudaEventDestroy(d->timer.stop));
    CK(cudaFree(d->timer.flush));
    bf_backend_destroy(d->cpu);
    bf_backend_destroy(d->b);
}

/* ---- the table ---- */

typedef struct lab_table {
    int lead_width, version_width; /* the first two columns */
    double peak_gbs;
} lab_table;

static inline void lab_print_header(const lab_table *tb, const char *lead_title) {
    printf("%-*s %-*s %9s %7s %6s %9s %7s %6s %9s  %s\n", tb->lead_width, lead_title, tb->version_width, "version",
           "fwd ms", "GB/s", "%peak", "bwd ms", "GB/s", "%peak", "f+b ms", "speed-up of 1 over 0");
}

/* One row; bwd_ms < 0 prints the backward columns as "-". */
static inline void lab_print_row(const lab_table *tb, const char *lead, const char *version, double fwd_ms,
                                 double fwd_bytes, double bwd_ms, double bwd_bytes, const char *tail) {
    const double fwd_gbs = fwd_bytes / (fwd_ms * 1e-3) / 1e9;
    if (fwd_ms < 0.0) { /* a backward-only row */
        const double bwd_gbs = bwd_bytes / (bwd_ms * 1e-3) / 1e9;
        printf("%-*s %-*s %9s %7s %6s %9.4f %7.0f %5.1f%% %9s  %s\n", tb->lead_width, lead, tb->version_width, version,
               "-", "-", "-", bwd_ms, bwd_gbs, 100.0 * bwd_gbs / tb->peak_gbs, "-", tail);
        return;
    }
    if (bwd_ms < 0.0) {
        printf("%-*s %-*s %9.4f %7.0f %5.1f%% %9s %7s %6s %9s  %s\n", tb->lead_width, lead, tb->version_width, version,
               fwd_ms, fwd_gbs, 100.0 * fwd_gbs / tb->peak_gbs, "-", "-", "-", "-", tail);
        return;
    }
    const double bwd_gbs = bwd_bytes / (bwd_ms * 1e-3) / 1e9;
    printf("%-*s %-*s %9.4f %7.0f %5.1f%% %9.4f %7.0f %5.1f%% %9.4f  %s\n", tb->lead_width, lead, tb->version_width,
           version, fwd_ms, fwd_gbs, 100.0 * fwd_gbs / tb->peak_gbs, bwd_ms, bwd_gbs, 100.0 * bwd_gbs / tb->peak_gbs,
           fwd_ms + bwd_ms, tail);
}

/* Whether a case's buffers (`need` bytes) fit in 40% of the free device memory; prints the row
 * "<lead> skipped: ..." when they do not. */
static inline int lab_fits(const lab_table *tb, const char *lead, size_t need) {
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b));
    if ((double)need > 0.4 * (double)free_b) {
        printf("%-*s skipped: buffers need %.2f GB, more than 40%% of the %.2f GB free\n", tb->lead_width, lead,
               need / 1e9, free_b / 1e9);
        return 0;
    }
    return 1;
}

#endif
