/* emu_runtime.cpp - the kernel emulator's scheduler and CUDA runtime (see emu_cuda.h).
 *
 * A launch runs its blocks one after another. Each CUDA thread of a block is a coroutine with its
 * own stack (emu_switch.S); the scheduler resumes them in thread order, round after round, and a
 * thread runs until it exits or waits at a barrier:
 *   - __syncthreads: until every live thread of the block has arrived;
 *   - a warp shuffle or ballot: until every live lane of the mask has arrived; each lane leaves its
 *     value in a slot of the warp's current exchange (two alternate, so a fast lane's next shuffle
 *     cannot overwrite a value a slow lane has still to read).
 * (BF_EMU_ORDER=reverse: from the last thread to the first). A round in which no thread moves is a
 * deadlock, and a lane that exits while lanes of its mask wait for it is a bug on a GPU (the
 * shuffle is undefined): both abort the test program with a message naming the kernel.
 *
 * Device memory is host memory: each cudaMalloc gets its own pages, filled with 0xff bytes (NaN as
 * floats: what a kernel reads before anything was written shows), with the buffer's end against an
 * inaccessible page, so a kernel that runs past it faults there and then.
 *
 * Several devices (BF_EMU_DEVICES=N, default 1, for bioflex-train --gpus N with emu_nccl.cpp): each
 * host thread has its own current device and last error; launches and the block table are serialised
 * by one lock (blocks share the static __shared__ objects), and every device's memory is the same
 * host memory. Work is done when it is enqueued, so streams and events order nothing. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <map>
#include <mutex>

#include "emu_cuda.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

extern "C" void bf_emu_switch(void **save_sp, void *load_sp);
extern "C" void bf_emu_thread_entry(void);
extern "C" void bf_emu_thread_main(void);

namespace {

const size_t STACK_BYTES = 256 * 1024; /* per CUDA thread, a guard page below it */
const int MAX_THREADS = 1024;
const size_t MAX_STATIC_SMEM = 48 * 1024; /* dynamic shared memory without an opt-in attribute */

enum wait_kind { WAIT_NONE, WAIT_BLOCK, WAIT_WARP };

struct emu_thread {
    void *sp;
    char *stack; /* lowest usable byte; the guard page is below it */
    uint3 tid;
    int done;
    wait_kind waiting;
    unsigned wait_gen;
};

struct warp_state {
    unsigned live;            /* lanes not yet exited */
    unsigned waiting;         /* lanes waiting in the current exchange */
    unsigned mask;            /* that exchange's mask */
    unsigned gen;
    uint64_t slots[2][32];    /* [gen & 1][lane] */
};

struct launch_state {
    emu_thread threads[MAX_THREADS];
    warp_state warps[MAX_THREADS / 32];
    int nthreads;
    int live;                 /* threads of the block not yet exited */
    int block_arrived;
    unsigned block_gen;
    emu_thread *current;
    void *scheduler_sp;
    bf_emu_body body;
    void *closure;
    void *dynamic_smem;
    int progress;             /* something moved in this round */
    const char *kernel;       /* for messages */
};

launch_state g_launch;
char *g_stacks;               /* MAX_THREADS stacks, allocated once */
std::recursive_mutex g_lock;  /* one launch (and one change of the block table) at a time */
thread_local cudaError_t g_last_error = cudaSuccess;
thread_local const char *g_next_name = "a kernel";
thread_local int g_device;    /* cudaSetDevice's, per host thread as in CUDA */
/* BF_EMU_ORDER=reverse: each round resumes the threads from the last to the first. Threads only
 * interleave at barriers, so a read of what another thread of the block writes with no barrier
 * between sees the write in one order and not in the other: running a test both ways shows such
 * a race (ctest's emu_test_flex_ops_cuda_reverse). */
int g_reverse = -1;
/* BF_EMU_TRACE=FILE: every launch (kernel, grid, block, shared bytes), memset and copy is written
 * there, one line each: the sequence of work a step enqueues, to read for passes it need not make. */
FILE *g_trace;
int g_trace_checked;

FILE *trace_file(void) {
    if (!g_trace_checked) {
        g_trace_checked = 1;
        const char *path = getenv("BF_EMU_TRACE");
        if (path && *path) g_trace = fopen(path, "w");
    }
    return g_trace;
}

[[noreturn]] void emu_fail(const char *what) {
    fprintf(stderr, "kernel emulator: %s in %s (block %u,%u,%u, thread %u,%u,%u)\n", what, g_launch.kernel,
            blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    fflush(stderr);
    abort();
}

void ensure_stacks(void) {
    if (g_stacks) return;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t each = STACK_BYTES + page;
    void *p = mmap(NULL, each * MAX_THREADS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        perror("kernel emulator: mmap of the thread stacks");
        abort();
    }
    g_stacks = (char *)p;
    for (int i = 0; i < MAX_THREADS; i++) mprotect(g_stacks + i * each, page, PROT_NONE);
}

/* A fresh frame at the top of thread i's stack that bf_emu_switch "returns" into
 * bf_emu_thread_entry from, with the stack 16-byte aligned at its call. */
void *new_stack_frame(int i) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *top = g_stacks + (size_t)i * (STACK_BYTES + page) + page + STACK_BYTES;
    uintptr_t t = (uintptr_t)top & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(t - 72);
    for (int r = 0; r < 6; r++) sp[r] = 0; /* r15 r14 r13 r12 rbx rbp */
    sp[6] = (uint64_t)(uintptr_t)&bf_emu_thread_entry;
    sp[7] = sp[8] = 0;
    return sp;
}

inline void yield_to_scheduler(void) { bf_emu_switch(&g_launch.current->sp, g_launch.scheduler_sp); }

inline int lane_of(const emu_thread *t) { return (int)((t - g_launch.threads) & 31); }
inline warp_state &warp_of(const emu_thread *t) { return g_launch.warps[(t - g_launch.threads) >> 5]; }

void release_block_if_complete(void) {
    launch_state &L = g_launch;
    if (L.block_arrived > 0 && L.block_arrived >= L.live) {
        L.block_arrived = 0;
        L.block_gen++;
        L.progress = 1;
    }
}

void release_warp_if_complete(warp_state &w) {
    if (w.waiting && (w.waiting & w.live) == (w.mask & w.live)) {
        w.waiting = 0;
        w.gen++;
        g_launch.progress = 1;
    }
}

} // namespace

extern "C" void bf_emu_thread_main(void) {
    launch_state &L = g_launch;
    L.body(L.closure);
    emu_thread *t = L.current;
    t->done = 1;
    L.live--;
    L.progress = 1;
    warp_state &w = warp_of(t);
    const unsigned bit = 1u << lane_of(t);
    w.live &= ~bit;
    if (w.waiting && (w.mask & bit))
        emu_fail("a lane exited while other lanes of its mask wait for it in a warp shuffle or ballot");
    release_warp_if_complete(w);
    release_block_if_complete();
    bf_emu_switch(&t->sp, L.scheduler_sp);
    emu_fail("an exited thread was resumed");
}

void __syncthreads(void) {
    launch_state &L = g_launch;
    emu_thread *t = L.current;
    const unsigned gen = L.block_gen;
    L.block_arrived++;
    L.progress = 1;
    release_block_if_complete();
    t->wait_gen = gen;
    while (L.block_gen == gen) {
        t->waiting = WAIT_BLOCK;
        yield_to_scheduler();
    }
    t->waiting = WAIT_NONE;
}

/* Arrives at the warp's exchange with value; returns the slots every participating lane filled. */
static const uint64_t *warp_arrive(unsigned mask, uint64_t value) {
    launch_state &L = g_launch;
    emu_thread *t = L.current;
    warp_state &w = warp_of(t);
    const int lane = lane_of(t);
    const unsigned bit = 1u << lane;
    if (!(mask & bit)) emu_fail("a lane calls a warp shuffle, ballot or __syncwarp whose mask leaves it out");
    if (mask & ~w.live) {
        /* lanes of the mask past the end of the block (a partial last warp) never existed, which
         * is fine; one that has exited is a bug */
        const int first = (int)((t - L.threads) & ~31);
        for (int l = 0; l < 32; l++)
            if ((mask >> l & 1u) && !(w.live >> l & 1u) && first + l < L.nthreads)
                emu_fail("a warp shuffle, ballot or __syncwarp names a lane that has exited");
    }
    if (w.waiting && w.mask != mask) emu_fail("lanes of one warp wait in exchanges with different masks");
    const unsigned gen = w.gen;
    w.slots[gen & 1][lane] = value;
    w.mask = mask;
    w.waiting |= bit;
    L.progress = 1;
    release_warp_if_complete(w);
    t->wait_gen = gen;
    while (w.gen == gen) {
        t->waiting = WAIT_WARP;
        yield_to_scheduler();
    }
    t->waiting = WAIT_NONE;
    return w.slots[gen & 1];
}

uint64_t bf_emu_warp_exchange(unsigned mask, uint64_t value, int src) {
    const uint64_t *slots = warp_arrive(mask, value);
    if (src < 0 || src > 31 || !(mask >> src & 1u)) return value; /* undefined on a GPU: the lane's own */
    return slots[src];
}

unsigned __ballot_sync(unsigned mask, int predicate) {
    const uint64_t *slots = warp_arrive(mask, predicate ? 1 : 0);
    unsigned out = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1u) && slots[l]) out |= 1u << l;
    return out;
}

void __syncwarp(unsigned mask) { (void)warp_arrive(mask, 0); }

void *bf_emu_dynamic_smem(void) { return g_launch.dynamic_smem; }

void bf_emu_trace(const char *format, ...) {
    FILE *f = trace_file();
    if (!f) return;
    va_list ap;
    va_start(ap, format);
    vfprintf(f, format, ap);
    va_end(ap);
    fputc('\n', f);
}

void bf_emu_set_kernel_name(const char *name) { g_next_name = name; }

int bf_emu_check_launch(dim3 grid, dim3 block, size_t smem) {
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > MAX_THREADS || block.z > 64 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu || smem > MAX_STATIC_SMEM) {
        fprintf(stderr, "kernel emulator: bad launch of %s: grid %u,%u,%u block %u,%u,%u shared %zu bytes\n",
                g_next_name, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
        g_last_error = cudaErrorInvalidConfiguration;
        return 0;
    }
    return 1;
}

void bf_emu_run_grid(dim3 grid, dim3 block, size_t smem, bf_emu_body body, void *closure) {
    std::lock_guard<std::recursive_mutex> hold(g_lock);
    launch_state &L = g_launch;
    ensure_stacks();
    if (FILE *f = trace_file())
        fprintf(f, "kernel %s grid %u,%u,%u block %u,%u,%u smem %zu\n", g_next_name, grid.x, grid.y, grid.z, block.x,
                block.y, block.z, smem);
    if (g_reverse < 0) {
        const char *order = getenv("BF_EMU_ORDER");
        g_reverse = order && strcmp(order, "reverse") == 0;
    }
    L.kernel = g_next_name;
    L.body = body;
    L.closure = closure;
    L.nthreads = (int)(block.x * block.y * block.z);
    gridDim = grid;
    blockDim = block;
    void *dynamic = malloc(smem ? smem : 16);
    L.dynamic_smem = dynamic;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = uint3{bx, by, bz};
                memset(dynamic, 0xff, smem ? smem : 16);
                for (int i = 0; i < L.nthreads; i++) {
                    emu_thread &t = L.threads[i];
                    t.sp = new_stack_frame(i);
                    t.tid = uint3{(unsigned)i % block.x, (unsigned)i / block.x % block.y,
                                  (unsigned)i / (block.x * block.y)};
                    t.done = 0;
                    t.waiting = WAIT_NONE;
                }
                for (int wi = 0; wi < (L.nthreads + 31) / 32; wi++) {
                    warp_state &w = L.warps[wi];
                    const int lanes = L.nthreads - wi * 32 < 32 ? L.nthreads - wi * 32 : 32;
                    w.live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
                    w.waiting = w.mask = 0;
                    w.gen = 0;
                }
                L.live = L.nthreads;
                L.block_arrived = 0;
                L.block_gen = 0;
                while (L.live > 0) {
                    L.progress = 0;
                    for (int k = 0; k < L.nthreads; k++) {
                        emu_thread &t = L.threads[g_reverse ? L.nthreads - 1 - k : k];
                        if (t.done) continue;
                        if (t.waiting == WAIT_BLOCK && L.block_gen == t.wait_gen) continue;
                        if (t.waiting == WAIT_WARP && warp_of(&t).gen == t.wait_gen) continue;
                        L.current = &t;
                        threadIdx = t.tid;
                        bf_emu_switch(&L.scheduler_sp, t.sp);
                    }
                    if (!L.progress && L.live > 0) {
                        threadIdx = L.threads[0].tid;
                        emu_fail("deadlock: no thread can move (barriers that not every thread reaches?)");
                    }
                }
            }
    free(dynamic);
    L.dynamic_smem = NULL;
    g_next_name = "a kernel";
}

/* ---- the runtime API ---- */

namespace {
struct device_block {
    void *base;
    size_t mapped;
    size_t bytes;
};
std::map<void *, device_block> g_blocks;
size_t g_allocated;
/* an H100's 80 GiB, or BF_EMU_MEMORY_MIB (a device that a test's network does not fit) */
static size_t emu_total_bytes(void) {
    static size_t total;
    if (!total) {
        const char *env = getenv("BF_EMU_MEMORY_MIB");
        total = env && atol(env) > 0 ? (size_t)atol(env) << 20 : (size_t)80 << 30;
    }
    return total;
}

double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
} // namespace

struct bf_emu_stream {
    int unused;
};
struct bf_emu_event {
    double ms;
};

extern "C" {

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    default: return "unspecified launch failure";
    }
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last_error; }

static cudaError_t fail(cudaError_t e) {
    g_last_error = e;
    return e;
}

/* BF_EMU_DEVICES: how many devices the emulator shows (1 to 8, default 1). */
static int emu_device_count(void) {
    const char *env = getenv("BF_EMU_DEVICES");
    const int n = env ? atoi(env) : 1;
    return n < 1 ? 1 : n > 8 ? 8 : n;
}
static int valid_device(int device) { return device >= 0 && device < emu_device_count(); }
cudaError_t cudaGetDeviceCount(int *count) {
    *count = emu_device_count();
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (!valid_device(device)) return fail(cudaErrorInvalidDevice);
    g_device = device;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *device) {
    *device = g_device;
    return cudaSuccess;
}
/* An H100's figures: some launch shapes depend on the multiprocessor count, which BF_EMU_SMS
 * overrides (1: small shapes then reach what on 132 needs millions of elements: grid-stride loops
 * past the block caps, 16-byte vectors in the neuron kernels, taller sliding-window bands). */
static int emu_sm_count(void) {
    const char *env = getenv("BF_EMU_SMS");
    const int sms = env ? atoi(env) : 0;
    return sms > 0 ? sms : 132;
}
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    if (!valid_device(device)) return fail(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMultiProcessorCount: *value = emu_sm_count(); break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMemoryClockRate: *value = 2619000; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = 5120; break;
    default: return fail(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!valid_device(device)) return fail(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "bioflex kernel emulator (an H100's figures)");
    prop->multiProcessorCount = emu_sm_count();
    prop->l2CacheSize = 50 << 20;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    *ptr = NULL;
    if (bytes == 0) return cudaSuccess;
    std::lock_guard<std::recursive_mutex> hold(g_lock);
    if (g_allocated + bytes > emu_total_bytes()) return fail(cudaErrorMemoryAllocation);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t rounded = (bytes + 255) & ~(size_t)255; /* cudaMalloc's alignment */
    const size_t data_pages = (rounded + page - 1) / page * page;
    const size_t mapped = data_pages + page;
    char *base = (char *)mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == (char *)MAP_FAILED) return fail(cudaErrorMemoryAllocation);
    mprotect(base + data_pages, page, PROT_NONE);
    char *p = base + data_pages - rounded;
    memset(p, 0xff, rounded);
    g_blocks[p] = device_block{base, mapped, bytes};
    g_allocated += bytes;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    if (!ptr) return cudaSuccess;
    std::lock_guard<std::recursive_mutex> hold(g_lock);
    auto it = g_blocks.find(ptr);
    if (it == g_blocks.end()) return fail(cudaErrorInvalidValue);
    munmap(it->second.base, it->second.mapped);
    g_allocated -= it->second.bytes;
    g_blocks.erase(it);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags) {
    (void)flags;
    *ptr = malloc(bytes ? bytes : 1);
    return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaMallocHost(void **ptr, size_t bytes) { return cudaHostAlloc(ptr, bytes, 0); }
cudaError_t cudaFreeHost(void *ptr) {
    free(ptr);
    return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *ptr) {
    std::lock_guard<std::recursive_mutex> hold(g_lock);
    memset(attr, 0, sizeof *attr);
    auto it = g_blocks.upper_bound((void *)ptr); /* the first block past ptr; the one before may hold it */
    if (it != g_blocks.begin()) {
        --it;
        const char *p = (const char *)ptr, *start = (const char *)it->first;
        if (p >= start && p < start + it->second.bytes) {
            attr->type = cudaMemoryTypeDevice;
            attr->device = g_device;
            attr->devicePointer = (void *)ptr;
            return cudaSuccess;
        }
    }
    attr->type = cudaMemoryTypeUnregistered; /* as CUDA 11+ answers for plain host memory */
    attr->hostPointer = (void *)ptr;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    std::lock_guard<std::recursive_mutex> hold(g_lock);
    *free_bytes = emu_total_bytes() - g_allocated;
    *total_bytes = emu_total_bytes();
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (FILE *f = trace_file()) fprintf(f, "memcpy kind %d %zu bytes\n", (int)kind, bytes);
    if (bytes && (!dst || !src)) return fail(cudaErrorInvalidValue);
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    (void)stream;
    return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    if (FILE *f = trace_file()) fprintf(f, "memset %zu bytes\n", bytes);
    if (bytes && !dst) return fail(cudaErrorInvalidValue);
    if (bytes) memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream) {
    (void)stream;
    return cudaMemset(dst, value, bytes);
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    *stream = new bf_emu_stream();
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    (void)flags;
    return cudaStreamCreate(stream);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    delete stream;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    (void)stream;
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
    (void)stream;
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags) {
    (void)stream, (void)event, (void)flags;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *event) {
    *event = new bf_emu_event();
    (*event)->ms = 0;
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags) {
    (void)flags;
    return cudaEventCreate(event);
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete event;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    (void)stream;
    event->ms = now_ms();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    (void)event;
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
    (void)event;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}
cudaError_t cudaProfilerStart(void) { return cudaSuccess; }
cudaError_t cudaProfilerStop(void) { return cudaSuccess; }

} /* extern "C" */
