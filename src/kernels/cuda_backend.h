/* cuda_backend.h - internals shared by the CUDA backend's files (src/kernels/ *.cu).
 *
 * Each .cu file implements one family of the bf_ops table (ops.h) and exports its functions under
 * the bf_cuda_ prefix; backend_cuda.cu collects them into the table and owns creation/teardown.
 * Nothing here is public, and this header is only ever compiled by nvcc.
 *
 * Conventions of every op:
 *   - it starts with bf_cuda_enter(), which makes the backend's device current for the calling host
 *     thread (one host thread per GPU may drive several backends) and drops a stale, non-sticky
 *     error left behind by an earlier runtime call, so a launch check reports only its own launch;
 *   - it enqueues work on impl->stream only and never synchronises the device;
 *   - every CUDA, cuDNN and cuBLAS call is checked with BF_CUDA_CHECK / BF_CUDNN_CHECK /
 *     BF_CUBLAS_CHECK, every kernel launch with BF_LAUNCH_CHECK, and failures are reported as
 *     BF_ERR_DEVICE "<call> failed at file:line: <error string>";
 *   - reductions are deterministic: fixed launch shapes that depend on the problem size only, fixed
 *     block-tree orders, partial sums combined in index order, no floating-point atomics.
 */
#ifndef BIOFLEX_CUDA_BACKEND_H
#define BIOFLEX_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "bioflex/ops.h"

/* ---- error checks ---- */

/* A failed runtime call also sets the runtime's "last error"; it is read back (and so cleared) here,
 * so that the next kernel-launch check does not report it a second time. */
#define BF_CUDA_CHECK(call)                                                                     \
    do {                                                                                        \
        cudaError_t bf_cuda_e_ = (call);                                                        \
        if (bf_cuda_e_ != cudaSuccess) {                                                        \
            (void)cudaGetLastError();                                                           \
            return bf_error(BF_ERR_DEVICE, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                            cudaGetErrorString(bf_cuda_e_));                                    \
        }                                                                                       \
    } while (0)

#define BF_CUDNN_CHECK(call)                                                                    \
    do {                                                                                        \
        cudnnStatus_t bf_cudnn_s_ = (call);                                                     \
        if (bf_cudnn_s_ != CUDNN_STATUS_SUCCESS) {                                              \
            (void)cudaGetLastError();                                                           \
            return bf_error(BF_ERR_DEVICE, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                            cudnnGetErrorString(bf_cudnn_s_));                                  \
        }                                                                                       \
    } while (0)

#define BF_CUBLAS_CHECK(call)                                                                   \
    do {                                                                                        \
        cublasStatus_t bf_cublas_s_ = (call);                                                   \
        if (bf_cublas_s_ != CUBLAS_STATUS_SUCCESS) {                                            \
            (void)cudaGetLastError();                                                           \
            return bf_error(BF_ERR_DEVICE, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__, \
                            cublasGetStatusString(bf_cublas_s_));                               \
        }                                                                                       \
    } while (0)

/* After a <<<...>>> launch: reports a bad launch configuration or an earlier asynchronous fault. */
#define BF_LAUNCH_CHECK(kernel_name)                                                             \
    do {                                                                                         \
        cudaError_t bf_launch_e_ = cudaGetLastError();                                           \
        if (bf_launch_e_ != cudaSuccess)                                                         \
            return bf_error(BF_ERR_DEVICE, "launch of %s failed at %s:%d: %s", kernel_name,      \
                            __FILE__, __LINE__, cudaGetErrorString(bf_launch_e_));               \
    } while (0)

/* ---- backend-private state behind bf_backend.impl ---- */

struct bf_cuda_conv_cache; /* conv.cu: descriptors and chosen algorithms per convolution shape */

/* One live block of ops->alloc and its size (cudaMalloc'd bytes), so that free can account for it. */
typedef struct bf_cuda_block {
    void *ptr;
    size_t bytes;
} bf_cuda_block;

typedef struct bf_cuda_impl {
    int device;               /* CUDA ordinal */
    int sm_count;             /* multiprocessors, for grid-stride launch caps */
    bf_precision precision;
    int deterministic;        /* bf_cuda_set_deterministic: cuDNN algorithms by heuristics, deterministic only */
    size_t conv_search_limit; /* bf_cuda_set_conv_workspace_limit: the most workspace a convolution may use */
    float conv_slack;         /* bf_cuda_set_conv_workspace_slack: how much slower an algorithm that needs no more
                               * workspace than is held may be than the fastest (conv_pick.h) */
    int conv_api_graph;       /* bf_cuda_set_conv_api: also plan each convolution with cuDNN's graph API */
    int flex_slide;           /* bf_cuda_set_flex_kernels: flex_pool.cu's sliding-window kernels (flex_slide.cuh) */
    long flex_slide_launches; /* how many of those kernels ran (bf_cuda_flex_slide_launches) */
    cudaStream_t stream;      /* every op of this backend runs on it, in order */
    cudnnHandle_t cudnn;      /* bound to stream */
    cublasHandle_t cublas;    /* bound to stream, with its own workspace below */
    void *cublas_ws;
    size_t cublas_ws_bytes;
    void *ws;                 /* cuDNN workspace: grows when a convolution needs more */
    size_t ws_bytes;
    size_t ws_needed;         /* the largest workspace a call that could not use its hint needed */
    void *ws_hint;            /* conv_workspace_hint: dead activation memory the next convolutions may use */
    size_t ws_hint_bytes;
    int ws_reuse_off;         /* [run] conv_workspace_reuse = false: hints are ignored */
    void *scratch;            /* partial sums of reductions: grows, never shrinks */
    size_t scratch_bytes;
    struct bf_cuda_conv_cache *conv_cache;
    /* Accounting of this backend's own cudaMalloc'd memory (bf_cuda_memory_bytes in ops.h): the
     * ops->alloc blocks, scratch, and the cuDNN and cuBLAS workspaces, now and at its highest. */
    size_t live_bytes, peak_bytes;
    bf_cuda_block *blocks;    /* the live ops->alloc blocks (unordered) */
    int num_blocks, cap_blocks;
    /* bf_cuda_set_driver_fence (ops.h): waited for before every call that may block inside the
     * driver (bf_cuda_fence below); NULL when the backend's GPU runs no NCCL collectives */
    bf_status (*fence)(void *ctx);
    void *fence_ctx;
} bf_cuda_impl;

/* Makes the backend's device current for this host thread and clears a stale runtime error. */
static inline bf_status bf_cuda_enter(bf_backend *b, bf_cuda_impl **out) {
    if (!b || !b->impl || b->kind != BF_DEVICE_CUDA)
        return bf_error(BF_ERR_ARG, "cuda backend: called with a backend that is not a CUDA backend");
    bf_cuda_impl *im = (bf_cuda_impl *)b->impl;
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != im->device)
        BF_CUDA_CHECK(cudaSetDevice(im->device));
    (void)cudaGetLastError();
    *out = im;
    return BF_OK;
}

/* Before a call that may block inside the CUDA driver while holding its process-wide locks
 * (cudaMalloc, cudaFree, a convolution algorithm search, a copy with pageable host memory): waits
 * until the backend's GPU runs no NCCL collective (bf_cuda_set_driver_fence in ops.h says why).
 * Steady-state training steps never come here between their collectives. */
static inline bf_status bf_cuda_fence(bf_cuda_impl *im) { return im->fence ? im->fence(im->fence_ctx) : BF_OK; }

/* Scratch device memory of at least `bytes` (256-byte aligned, contents undefined), valid until the
 * next call. Ops on one backend run in stream order, so one op may reuse what another left; growing
 * waits for the stream first because queued kernels may still read the old buffer. */
bf_status bf_cuda_scratch(bf_cuda_impl *im, size_t bytes, void **out);

/* Resizes the cuDNN workspace to exactly `bytes` (waits for the stream first). On failure the
 * workspace is left empty (ws = NULL, ws_bytes = 0) and BF_ERR_OOM is returned. */
bf_status bf_cuda_workspace_resize(bf_cuda_impl *im, size_t bytes);

/* conv.cu: releases the convolution descriptor/algorithm cache (called by the destructor). */
void bf_cuda_conv_cache_destroy(bf_cuda_impl *im);

/* ---- launch helpers ---- */

#define BF_CUDA_THREADS 256

/* Blocks for a grid-stride loop over n items: enough to cover n, capped at 32 blocks per SM
 * (each thread then loops). n must be > 0. */
static inline unsigned bf_cuda_grid(const bf_cuda_impl *im, size_t n, unsigned threads) {
    size_t blocks = (n + threads - 1) / threads;
    size_t cap = (size_t)(im->sm_count > 0 ? im->sm_count : 80) * 32;
    if (blocks > cap) blocks = cap;
    if (blocks < 1) blocks = 1;
    return (unsigned)blocks;
}

static inline int bf_cuda_min_i(int a, int b) { return a < b ? a : b; }
static inline size_t bf_cuda_div_up(size_t a, size_t b) { return (a + b - 1) / b; }

/* ---- device helpers ---- */

#ifdef __CUDACC__
/* Sum over a warp in a fixed butterfly order; the total is valid in lane 0. */
template <typename T>
__device__ __forceinline__ T bf_warp_sum(T v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

/* Sum over a block (blockDim.x a multiple of 32, at most 1024) in a fixed order; the total is
 * valid in thread 0. Every thread of the block must call it. Safe to call repeatedly. */
template <typename T>
__device__ __forceinline__ T bf_block_sum(T v) {
    __shared__ T bf_block_sum_shared[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = bf_warp_sum(v);
    __syncthreads(); /* an earlier call's readers are done with the shared slots */
    if (lane == 0) bf_block_sum_shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int warps = (int)(blockDim.x >> 5);
        v = lane < warps ? bf_block_sum_shared[lane] : T(0);
        v = bf_warp_sum(v);
    }
    return v;
}
#endif

/* ---- the op implementations (one family per .cu file) ---- */

#ifdef __cplusplus
extern "C" {
#endif

/* Defined by backend_cuda.cu; called by bf_backend_destroy for a CUDA backend. Frees b itself. */
void bf_backend_destroy_cuda(bf_backend *b);

/* elementwise.cu */
bf_status bf_cuda_fill(bf_backend *b, float *x, float value, size_t n);
bf_status bf_cuda_scale(bf_backend *b, float *x, float alpha, size_t n);
bf_status bf_cuda_add(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);
bf_status bf_cuda_mul(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);
bf_status bf_cuda_task_slice_gather(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks, const float *full,
                                    float *out);
bf_status bf_cuda_task_slice_scatter(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks, const float *in,
                                     float *full);
bf_status bf_cuda_add_inplace(bf_backend *b, float *y, const float *x, size_t n);
bf_status bf_cuda_axpy(bf_backend *b, float alpha, const float *x, float *y, size_t n);
bf_status bf_cuda_sum_squares(bf_backend *b, const float *x, size_t n, float *out);
bf_status bf_cuda_accumulate_sum(bf_backend *b, const float *x, size_t n, float *acc);
bf_status bf_cuda_relu_forward(bf_backend *b, const float *x, float *y, size_t n);
bf_status bf_cuda_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n);
bf_status bf_cuda_add_relu_forward(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);
bf_status bf_cuda_add_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx0, float *dx1, size_t n);
bf_status bf_cuda_leaky_relu_forward(bf_backend *b, const float *x, float *y, size_t n, float slope);
bf_status bf_cuda_leaky_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n, float slope);
bf_status bf_cuda_dropout_forward(bf_backend *b, const float *x, float *y, size_t n, size_t group, float p,
                                  bf_draws draws);
bf_status bf_cuda_fill_uniform(bf_backend *b, float *x, size_t n, float lo, float hi, uint64_t seed);
bf_status bf_cuda_spike_encode_rate(bf_backend *b, const float *x, float *y, size_t n, int T, bf_draws draws);
bf_status bf_cuda_dropout_backward(bf_backend *b, const float *dy, float *dx, size_t n, size_t group, float p,
                                   bf_draws draws);

/* conv.cu */
bf_status bf_cuda_conv2d_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                 const float *w, const float *bias, float *y);
bf_status bf_cuda_conv2d_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                       const float *w, float *dx);
bf_status bf_cuda_conv2d_backward_data_add(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                           const float *w, float *dx);
bf_status bf_cuda_conv2d_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                         const float *dy, float *dw, float *dbias);
bf_status bf_cuda_conv_workspace_hint(bf_backend *b, void *p, size_t bytes);

/* batchnorm.cu */
bf_status bf_cuda_batchnorm_forward_train(bf_backend *b, const bf_bn_shape *s, const float *x,
                                          const float *gamma, const float *beta, float *y,
                                          float *save_mean, float *save_invstd,
                                          float *running_mean, float *running_var);
bf_status bf_cuda_batchnorm_forward_eval(bf_backend *b, const bf_bn_shape *s, const float *x,
                                         const float *gamma, const float *beta,
                                         const float *running_mean, const float *running_var, float *y);
bf_status bf_cuda_batchnorm_forward_saved(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                          const float *beta, const float *save_mean, const float *save_invstd, float *y);
bf_status bf_cuda_batchnorm_backward(bf_backend *b, const bf_bn_shape *s, const float *x,
                                     const float *dy, const float *gamma, const float *save_mean,
                                     const float *save_invstd, float *dx, float *dgamma, float *dbeta);
bf_status bf_cuda_batchnorm_relu_apply(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                       const float *beta, const float *save_mean, const float *save_invstd, float *y);
bf_status bf_cuda_batchnorm_backward_sums(bf_backend *b, const bf_bn_shape *s, int relu, const float *x,
                                          const float *dy, const float *gamma, const float *beta,
                                          const float *save_mean, const float *save_invstd, float *dgamma,
                                          float *dbeta, float *coef);
bf_status bf_cuda_batchnorm_relu_backward(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                          const float *gamma, const float *beta, const float *save_mean,
                                          const float *save_invstd, float *dx, float *dgamma, float *dbeta);
/* Per-channel sum of a [n, c, hw] tensor (conv dbias), deterministic. */
bf_status bf_cuda_channel_sum(bf_cuda_impl *im, int n, int c, long hw, const float *x, float *out);
/* Synchronised batch-norm's steps (contracts in ops.h). */
bf_status bf_cuda_batchnorm_sync_sums(bf_backend *b, const bf_bn_shape *s, const float *x, double *stats);
bf_status bf_cuda_batchnorm_sync_sqdev(bf_backend *b, const bf_bn_shape *s, const float *x, const double *stats,
                                       double *sq);
bf_status bf_cuda_batchnorm_sync_forward_apply(bf_backend *b, const bf_bn_shape *s, const float *x,
                                               const double *stats, const double *sq, const float *gamma,
                                               const float *beta, float *y, float *save_mean, float *save_invstd,
                                               float *running_mean, float *running_var);
bf_status bf_cuda_batchnorm_sync_backward_sums(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                               const float *save_mean, const float *save_invstd, double *sums,
                                               float *dgamma, float *dbeta);
bf_status bf_cuda_batchnorm_sync_backward_apply(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                                const float *gamma, const float *save_mean, const float *save_invstd,
                                                const double *sums, float *dx);

/* pool.cu */
bf_status bf_cuda_maxpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y,
                                  int32_t *argmax);
bf_status bf_cuda_maxpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy,
                                   const int32_t *argmax, float *dx);
bf_status bf_cuda_avgpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y);
bf_status bf_cuda_avgpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy, float *dx);
bf_status bf_cuda_global_avgpool_forward(bf_backend *b, int n, int c, int hw, const float *x, float *y);
bf_status bf_cuda_global_avgpool_backward(bf_backend *b, int n, int c, int hw, const float *dy, float *dx);

/* counter_hebb.cu */
bf_status bf_cuda_counter_hebb_linear(bf_backend *b, const bf_linear_shape *s, const float *bu, const float *td,
                                      float *dw, float *dbias, float *dw_td);
bf_status bf_cuda_counter_hebb_conv2d(bf_backend *b, const bf_conv2d_shape *s, const float *bu, const float *td,
                                      float *dw, float *dbias, float *dw_td);
/* linear.cu */
bf_status bf_cuda_linear_forward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                 const float *w, const float *bias, float *y);
bf_status bf_cuda_linear_backward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                  const float *w, const float *dy, float *dx, float *dw, float *dbias);

/* loss.cu */
bf_status bf_cuda_binary_xent(bf_backend *b, int n, const float *logits, const int32_t *labels, float *losses,
                              float *dlogits, float *correct);
bf_status bf_cuda_softmax_xent(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                               float smoothing, float grad_scale, float *losses, float *dlogits);
bf_status bf_cuda_topk_correct(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                               float *correct1, float *correct5);

/* optim.cu */
bf_status bf_cuda_sgd_update(bf_backend *b, float *params, const float *grads, float *momentum_buf,
                             size_t n, float lr, float momentum, float weight_decay, int nesterov,
                             int first_step, const float *grad_scale);
bf_status bf_cuda_adam_update(bf_backend *b, float *params, const float *grads, float *m, float *v,
                              size_t n, float lr, float beta1, float beta2, float eps,
                              float weight_decay, int decoupled_decay, long step, const float *grad_scale);
bf_status bf_cuda_clip_scale(bf_backend *b, const float *sum_squares, float max_norm, float *scale);

/* flex.cu */
bf_status bf_cuda_flex_widen_forward(bf_backend *b, const bf_flex_shape *s, const float *pooled, float *widened);
bf_status bf_cuda_flex_widen_backward(bf_backend *b, const bf_flex_shape *s, const float *dwidened, float *dpooled);
bf_status bf_cuda_flex_max_forward(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                   float *y, float *conv_wins);
bf_status bf_cuda_flex_max_backward(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                    const float *dy, float *dconv, float *dpooled);
bf_status bf_cuda_flex_logits_forward(bf_backend *b, const bf_flex_shape *s, const float *widened,
                                      const float *threshold, float *logits);
bf_status bf_cuda_flex_mask_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                    bf_draws draws, const float *logits, const float *conv, const float *widened,
                                    float *mask, float *y, float *conv_mask_sum);
bf_status bf_cuda_flex_mask_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                     const float *logits, const float *mask, const float *conv, const float *widened,
                                     const float *dy, float *dconv, float *dlogits, float *dwidened);
bf_status bf_cuda_flex_threshold_backward(bf_backend *b, const bf_flex_shape *s, const float *dlogits,
                                          float *dthreshold);
bf_status bf_cuda_flex_mask_stats(bf_backend *b, const float *mask, size_t n, float *out);

/* flex_mask.cu */
bf_status bf_cuda_flex_mask_joint_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                          bf_draws draws, const float *pooled, const float *threshold,
                                          const float *logits, const float *conv, float *y, float *conv_mask_sum,
                                          float *routing);
bf_status bf_cuda_flex_mask_joint_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                           bf_draws draws, const float *pooled, const float *threshold,
                                           const float *logits, const float *conv, const float *dy, float *dconv,
                                           float *dlogits, float *dpooled);

/* flex_pool.cu */
bf_status bf_cuda_flex_pool_max_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                        const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                        float *conv_wins);
bf_status bf_cuda_flex_pool_max_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                        const uint32_t *winners, const uint32_t *ties, const float *dy, float *dconv,
                                        float *dpooled);
bf_status bf_cuda_flex_pool_max_forward_bn_stats(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                 const bf_bn_shape *bs, const float *x, const float *bias, float *y,
                                                 uint8_t *window, uint32_t *winners, uint32_t *ties, float *conv_wins,
                                                 float *save_mean, float *save_invstd, float *running_mean,
                                                 float *running_var);
bf_status bf_cuda_flex_pool_scatter_add(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                        const uint8_t *window, const float *dpooled, float *dx);
bf_status bf_cuda_flex_pool_max_backward_scatter_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                    const bf_bn_grad *bn, const uint8_t *window,
                                                    const uint32_t *winners, const uint32_t *ties, const float *y,
                                                    const float *dz, float *dconv, float *dx, float *dbias);
bf_status bf_cuda_flex_pool_max_backward_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                            const bf_bn_grad *bn, const uint32_t *winners, const uint32_t *ties,
                                            const float *y, const float *dz, float *dconv, float *dbias);
bf_status bf_cuda_flex_pool_max_backward_scatter(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                 const uint8_t *window, const uint32_t *winners, const uint32_t *ties,
                                                 const float *dy, float *dconv, float *dx, float *dbias);
bf_status bf_cuda_flex_pool_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                    float *pooled, uint8_t *window);
bf_status bf_cuda_flex_pool_gather(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                   const uint8_t *window, float *pooled);
bf_status bf_cuda_flex_route_tally(bf_backend *b, int samples, size_t per_sample, const uint32_t *winners,
                                   const uint32_t *ties, uint32_t *element_counts, uint32_t *sample_counts);

/* neuron.cu */
bf_status bf_cuda_neuron_forward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x, float *y,
                                 float *charge, float *stats);
bf_status bf_cuda_neuron_backward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x, const float *y,
                                  const float *charge, const float *dy, float *dx);
bf_status bf_cuda_neuron_forward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                    const float *xin, float *y, uint32_t *bits, float *stats);
bf_status bf_cuda_neuron_backward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                     const float *xin, const float *dy, float *dx);
bf_status bf_cuda_neuron_batchnorm_backward(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in,
                                            size_t n, const float *xin, const float *dy, float *dx, float *dgamma,
                                            float *dbeta);
bf_status bf_cuda_spikes_pack(bf_backend *b, const float *y, uint32_t *bits, size_t n);
bf_status bf_cuda_spikes_unpack(bf_backend *b, const uint32_t *bits, float *y, size_t n);

/* image_ops.cu */
bf_status bf_cuda_image_u8_to_float(bf_backend *b, const uint8_t *src, float *dst, int n, int h, int w,
                                    const float *mean, const float *std);
bf_status bf_cuda_attack_step(bf_backend *b, const bf_attack_box *box, size_t n, size_t plane, const float *x0,
                              const float *d, int use_sign, float *x);

/* divnorm.cu */
bf_status bf_cuda_divnorm_weights(bf_backend *b, int c, bf_oci_distance distance, const float *sigma, float *w);
bf_status bf_cuda_divnorm_weights_backward(bf_backend *b, int c, bf_oci_distance distance, const float *sigma, const float *w, const float *dw,
                                           float *dsigma);
bf_status bf_cuda_divnorm_apply(bf_backend *b, const float *x, const float *s, float *y, size_t n);
bf_status bf_cuda_divnorm_apply_backward(bf_backend *b, const float *x, const float *s, const float *dy, float *dx,
                                         float *ds, size_t n);

/* dog.cu */
bf_status bf_cuda_channel_copy(bf_backend *b, int n, int hw, int count, const float *src, int src_c, int src_c0,
                              float *dst, int dst_c, int dst_c0);
bf_status bf_cuda_dog_kernels(bf_backend *b, int p, int k, int amp_paper, const float *sigma1, const float *sigma2_scale,
                              const float *scale, float *w, float *norms);
bf_status bf_cuda_dog_kernels_backward(bf_backend *b, int p, int k, int amp_paper, const float *sigma1,
                                       const float *sigma2_scale, const float *scale, const float *w, const float *norms,
                                       const float *dw, float *dsigma1, float *dsigma2_scale, float *dscale);

/* local_conv.cu */
bf_status bf_cuda_local_forward(bf_backend *b, const bf_local_shape *s, const float *x, const float *w, float *y);
bf_status bf_cuda_local_backward_data(bf_backend *b, const bf_local_shape *s, const float *dy, const float *w, float *dx);
bf_status bf_cuda_local_backward_filter(bf_backend *b, const bf_local_shape *s, const float *x, const float *dy, float *dw);

/* cirincione.cu */
bf_status bf_cuda_cirincione_kernels(bf_backend *b, int p, int k, const float *A, const float *rho, const float *sigma,
                                     const float *theta, const float *v, const float *w, float *g);
bf_status bf_cuda_cirincione_kernels_backward(bf_backend *b, int p, int k, const float *A, const float *rho,
                                              const float *sigma, const float *theta, const float *v, const float *w,
                                              const float *dg, float *dA, float *drho, float *dsigma, float *dtheta,
                                              float *dv, float *dw);
bf_status bf_cuda_cirincione_divide(bf_backend *b, const float *x, const float *s, const float *bias, float *y,
                                    size_t n);
bf_status bf_cuda_cirincione_divide_backward(bf_backend *b, const float *x, const float *s, const float *bias,
                                             const float *dy, float *dx, float *ds, float *dbias, size_t n);

#ifdef __cplusplus
}
#endif

#endif
