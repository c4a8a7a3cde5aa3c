/* emu_cuda.h - the kernel emulator's CUDA: enough of the language and runtime for bioflex's .cu
 * files to compile with the host C++ compiler and run on the CPU, thread by thread.
 *
 * Why: the CUDA tests are skipped on a machine without a GPU, and bioflex's kernels (warp shuffles,
 * shared-memory partial sums, grid-stride loops, bit-packed winners) are easy to get wrong in their
 * indexing. Here each CUDA thread of a block is a coroutine on one host thread (emu_runtime.cpp):
 * it runs until it reaches a barrier (__syncthreads, a warp shuffle or ballot), and the scheduler
 * resumes the others until all of them have arrived. Blocks run one after another, so `static`
 * stands for __shared__. The same test programs as on a GPU then compare the kernels' results with
 * the CPU backend (ctest label `emu`).
 *
 * What it does not check: speed, the GPU's memory model and real concurrency (threads interleave
 * only at barriers, in a fixed order: a missing __syncthreads between a write and another
 * thread's read of shared memory can go unnoticed), floating-point contraction (nvcc fuses a * b + c
 * into an FMA where the source does not forbid it; the host compiler here does not), and the
 * GPU's math library (expf, tanhf, ... are the host's). cuDNN and cuBLAS are replaced by plain
 * loops (emu_dnn.cpp).
 *
 * tests/emu/rewrite.py turns `kernel<<<grid, block, smem, stream>>>(args)` into
 * `bf_emu_launch(grid, block, smem, stream).run(kernel)(args)` and `extern __shared__ T name[];`
 * into a pointer to the launch's dynamic shared memory before the compiler sees the source. */
#ifndef BIOFLEX_EMU_CUDA_H
#define BIOFLEX_EMU_CUDA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
#include <tuple>
#include <utility>
#endif

/* ---- the language ---- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
/* blocks run one at a time: one static object per __shared__ declaration is the block's */
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

typedef struct uint3 {
    unsigned x, y, z;
} uint3;

#ifdef __cplusplus
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
#endif

struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(8))) int2 {
    int x, y;
};
struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
};
struct __attribute__((aligned(4))) uchar4 {
    unsigned char x, y, z, w;
};
typedef struct float2 float2;
typedef struct float4 float4;
typedef struct int2 int2;
typedef struct int4 int4;
typedef struct uchar4 uchar4;

#ifdef __cplusplus
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int2 make_int2(int x, int y) { return int2{x, y}; }
static inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
static inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) {
    return uchar4{x, y, z, w};
}

/* The current thread's coordinates: set by the scheduler before it resumes a thread. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

/* Rounding intrinsics: the emulator is compiled with -ffp-contract=off, so these are plain. */
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }

/* ---- barriers and warp exchange (emu_runtime.cpp) ---- */

void __syncthreads(void);
void __syncwarp(unsigned mask = 0xffffffffu);
/* Each lane of `mask` offers `value`; returns what lane `src` offered (its own value when src is
 * not a participating lane). A barrier over the warp's participating lanes. */
uint64_t bf_emu_warp_exchange(unsigned mask, uint64_t value, int src);
unsigned __ballot_sync(unsigned mask, int predicate);
/* The launch's dynamic shared memory (rewrite.py's replacement of `extern __shared__`). */
void *bf_emu_dynamic_smem(void);

template <typename T>
static inline T bf_emu_shfl_from(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = bf_emu_warp_exchange(mask, bits, src);
    T out;
    memcpy(&out, &bits, sizeof out);
    return out;
}
static inline int bf_emu_lane(void) { return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31; }
template <typename T>
static inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    const int lane = bf_emu_lane(), base = lane & ~(width - 1);
    return bf_emu_shfl_from(mask, v, base + (src_lane & (width - 1)));
}
template <typename T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = bf_emu_lane(), base = lane & ~(width - 1);
    const int src = lane + (int)delta;
    return bf_emu_shfl_from(mask, v, src < base + width ? src : lane);
}
template <typename T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = bf_emu_lane(), base = lane & ~(width - 1);
    const int src = lane - (int)delta;
    return bf_emu_shfl_from(mask, v, src >= base ? src : lane);
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = bf_emu_lane(), base = lane & ~(width - 1);
    const int src = lane ^ lane_mask;
    return bf_emu_shfl_from(mask, v, src >= base && src < base + width ? src : lane);
}

/* One host thread runs every CUDA thread: plain read-modify-writes are atomic. */
template <typename T>
static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T>
static inline T atomicOr(T *p, T v) {
    T old = *p;
    *p = old | v;
    return old;
}

#endif /* __cplusplus */

/* ---- the runtime API ---- */

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevice = 101,
    cudaErrorNotReady = 600,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrClockRate = 13,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMemoryClockRate = 36,
    cudaDevAttrGlobalMemoryBusWidth = 37
} cudaDeviceAttr;

/* The fields bioflex's kernel labs read. */
typedef struct cudaDeviceProp {
    char name[256];
    int multiProcessorCount;
    int l2CacheSize;
} cudaDeviceProp;

/* cudaPointerGetAttributes: device memory is what cudaMalloc gave (anywhere inside a block) */
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2 };
struct cudaPointerAttributes {
    enum cudaMemoryType type;
    int device;
    void *devicePointer;
    void *hostPointer;
};

typedef struct bf_emu_stream *cudaStream_t;
typedef struct bf_emu_event *cudaEvent_t;

#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocPortable 0x01

#ifdef __cplusplus
extern "C" {
#endif
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaMalloc(void **ptr, size_t bytes);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned flags);
cudaError_t cudaMallocHost(void **ptr, size_t bytes);
cudaError_t cudaFreeHost(void *ptr);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaMemset(void *dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *attr, const void *ptr);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaProfilerStart(void);
cudaError_t cudaProfilerStop(void);
#ifdef __cplusplus
}

/* ---- kernel launches ---- */

/* Runs `threads` coroutines of `body` for every block of `grid` (emu_runtime.cpp). */
typedef void (*bf_emu_body)(void *closure);
void bf_emu_run_grid(dim3 grid, dim3 block, size_t smem, bf_emu_body body, void *closure);
/* The next launch's kernel, for the emulator's messages (rewrite.py names each launch). */
void bf_emu_set_kernel_name(const char *name);
/* A line in the BF_EMU_TRACE file, when one is set (emu_runtime.cpp). */
void bf_emu_trace(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* Records a launch error for the next cudaGetLastError (bad configuration). */
int bf_emu_check_launch(dim3 grid, dim3 block, size_t smem);

struct bf_emu_launch {
    dim3 grid, block;
    size_t smem;
    bf_emu_launch(dim3 g, dim3 b, size_t s = 0, cudaStream_t stream = 0) : grid(g), block(b), smem(s) {
        (void)stream;
    }
    bf_emu_launch &named(const char *name) {
        bf_emu_set_kernel_name(name);
        return *this;
    }
    /* run(kernel)(args): the call converts the arguments to the kernel's parameter types (a NULL
     * argument becomes a null pointer there), and they are copied once, as a launch copies them. */
    template <typename... P>
    struct invoker;
    template <typename... P>
    invoker<P...> run(void (*kernel)(P...)) const {
        return invoker<P...>{*this, kernel};
    }
};

template <typename... P>
struct bf_emu_launch::invoker {
    bf_emu_launch config;
    void (*kernel)(P...);
    void operator()(P... params) const {
        if (!bf_emu_check_launch(config.grid, config.block, config.smem)) return;
        struct closure {
            void (*kernel)(P...);
            std::tuple<typename std::decay<P>::type...> params;
        } c{kernel, std::tuple<typename std::decay<P>::type...>(params...)};
        bf_emu_run_grid(config.grid, config.block, config.smem, [](void *p) {
            closure *cl = (closure *)p;
            std::apply(cl->kernel, cl->params);
        }, &c);
    }
};
#endif

#endif
