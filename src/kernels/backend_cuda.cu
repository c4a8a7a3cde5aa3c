/* backend_cuda.cu - the CUDA backend: creation and teardown (device, stream, cuDNN and cuBLAS
 * handles), device memory, copies, the scratch and workspace buffers, and the bf_ops table that
 * gathers the ops implemented in the other .cu files of src/kernels/. */
#include <stdlib.h>
#include <string.h>

#include <cuda_profiler_api.h>

#include "cuda_backend.h"

/* cuBLAS workspace: NVIDIA recommends 32 MiB on Hopper and 4 MiB before; we give it 32 MiB on every
 * device so that no GEMM ever falls back to a smaller algorithm or allocates on its own. */
enum { CUBLAS_WORKSPACE_BYTES = 32 << 20 };

/* ---- memory ---- */

/* Accounting (bf_cuda_memory_bytes): every cudaMalloc/cudaFree of this file moves live_bytes, and
 * peak_bytes keeps its highest value. */
static void account(bf_cuda_impl *im, size_t added, size_t released) {
    im->live_bytes = im->live_bytes + added - released;
    if (im->live_bytes > im->peak_bytes) im->peak_bytes = im->live_bytes;
}

/* Records a new ops->alloc block; 0 when the table cannot grow. */
static int block_add(bf_cuda_impl *im, void *ptr, size_t bytes) {
    if (im->num_blocks == im->cap_blocks) {
        int cap = im->cap_blocks ? 2 * im->cap_blocks : 256;
        bf_cuda_block *grown = (bf_cuda_block *)realloc(im->blocks, (size_t)cap * sizeof *grown);
        if (!grown) return 0;
        im->blocks = grown;
        im->cap_blocks = cap;
    }
    im->blocks[im->num_blocks++] = bf_cuda_block{ptr, bytes};
    account(im, bytes, 0);
    return 1;
}

/* Forgets a block being freed (searching from the newest: buffers are mostly freed in reverse). */
static void block_remove(bf_cuda_impl *im, void *ptr) {
    for (int i = im->num_blocks - 1; i >= 0; i--) {
        if (im->blocks[i].ptr != ptr) continue;
        account(im, 0, im->blocks[i].bytes);
        im->blocks[i] = im->blocks[--im->num_blocks];
        return;
    }
}

static bf_status cuda_alloc(bf_backend *b, size_t bytes, void **ptr) {
    bf_cuda_impl *im;
    if (!ptr) return bf_error(BF_ERR_ARG, "cuda backend: alloc without an output pointer");
    *ptr = NULL;
    BF_TRY(bf_cuda_enter(b, &im));
    size_t rounded = bytes < 256 ? 256 : bytes; /* a zero-byte request still gets a unique pointer */
    BF_TRY(bf_cuda_fence(im));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return bf_error(BF_ERR_OOM, "cudaMalloc(%zu bytes) on device %d failed at %s:%d: %s", rounded,
                        im->device, __FILE__, __LINE__, cudaGetErrorString(e));
    }
    /* zero-fill on the backend's stream and wait, so the memory reads as zeros from any stream */
    e = cudaMemsetAsync(p, 0, rounded, im->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(im->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cudaFree(p);
        return bf_error(BF_ERR_DEVICE, "zero-filling %zu bytes failed at %s:%d: %s", rounded, __FILE__,
                        __LINE__, cudaGetErrorString(e));
    }
    if (!block_add(im, p, rounded)) {
        cudaFree(p);
        return bf_error(BF_ERR_OOM, "cuda backend: cannot grow the table of allocated blocks");
    }
    *ptr = p;
    return BF_OK;
}

/* cudaFree waits for the device, so memory still used by queued kernels is not released early.
 * A fence that failed (a peer died) has aborted the communicator, which releases its kernels. */
static void cuda_free(bf_backend *b, void *ptr) {
    bf_cuda_impl *im;
    if (!ptr) return;
    if (bf_cuda_enter(b, &im) != BF_OK) return;
    (void)bf_cuda_fence(im);
    block_remove(im, ptr);
    if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError(); /* nothing to report from a void op */
}

static bf_status cuda_copy_to_device(bf_backend *b, void *dst, const void *src_host, size_t bytes) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (bytes == 0) return BF_OK;
    if (!dst || !src_host)
        return bf_error(BF_ERR_ARG, "cuda backend: copy_to_device of %zu bytes with a NULL pointer", bytes);
    BF_TRY(bf_cuda_fence(im)); /* from pageable memory the copy first waits for the stream */
    BF_CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, im->stream));
    /* The source may be pageable memory the caller reuses as soon as we return: with pageable memory
     * cudaMemcpyAsync has staged the data before returning, and with pinned memory the caller owns
     * the ordering (as with every async CUDA API). */
    return BF_OK;
}

static bf_status cuda_copy_to_host(bf_backend *b, void *dst_host, const void *src, size_t bytes) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (bytes == 0) return BF_OK;
    if (!dst_host || !src)
        return bf_error(BF_ERR_ARG, "cuda backend: copy_to_host of %zu bytes with a NULL pointer", bytes);
    BF_TRY(bf_cuda_fence(im));
    BF_CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, im->stream));
    BF_CUDA_CHECK(cudaStreamSynchronize(im->stream));
    return BF_OK;
}

static bf_status cuda_copy(bf_backend *b, void *dst, const void *src, size_t bytes) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (bytes == 0 || dst == src) return BF_OK;
    if (!dst || !src) return bf_error(BF_ERR_ARG, "cuda backend: copy of %zu bytes with a NULL pointer", bytes);
    BF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, im->stream));
    return BF_OK;
}

static bf_status cuda_synchronize(bf_backend *b) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_CUDA_CHECK(cudaStreamSynchronize(im->stream));
    return BF_OK;
}

/* ---- scratch and workspace ---- */

bf_status bf_cuda_scratch(bf_cuda_impl *im, size_t bytes, void **out) {
    *out = NULL;
    if (bytes == 0) bytes = 256;
    if (bytes > im->scratch_bytes) {
        size_t grown = bytes + bytes / 4; /* a little headroom against a sequence of small growths */
        grown = (grown + 255) & ~(size_t)255;
        BF_TRY(bf_cuda_fence(im));
        BF_CUDA_CHECK(cudaStreamSynchronize(im->stream));
        if (im->scratch) BF_CUDA_CHECK(cudaFree(im->scratch));
        account(im, 0, im->scratch_bytes);
        im->scratch = NULL;
        im->scratch_bytes = 0;
        void *p = NULL;
        cudaError_t e = cudaMalloc(&p, grown);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return bf_error(BF_ERR_OOM, "cudaMalloc(%zu bytes) of scratch memory failed at %s:%d: %s", grown,
                            __FILE__, __LINE__, cudaGetErrorString(e));
        }
        im->scratch = p;
        im->scratch_bytes = grown;
        account(im, grown, 0);
    }
    *out = im->scratch;
    return BF_OK;
}

bf_status bf_cuda_workspace_resize(bf_cuda_impl *im, size_t bytes) {
    if (bytes == im->ws_bytes && (bytes == 0 || im->ws)) return BF_OK;
    BF_TRY(bf_cuda_fence(im));
    BF_CUDA_CHECK(cudaStreamSynchronize(im->stream));
    if (im->ws) BF_CUDA_CHECK(cudaFree(im->ws));
    account(im, 0, im->ws_bytes);
    im->ws = NULL;
    im->ws_bytes = 0;
    if (bytes == 0) return BF_OK;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return bf_error(BF_ERR_OOM, "cudaMalloc(%zu bytes) of cuDNN workspace failed at %s:%d: %s", bytes,
                        __FILE__, __LINE__, cudaGetErrorString(e));
    }
    im->ws = p;
    im->ws_bytes = bytes;
    account(im, bytes, 0);
    return BF_OK;
}

/* ---- the table ---- */

static const bf_ops cuda_ops = {
    /* .alloc = */ cuda_alloc,
    /* .free = */ cuda_free,
    /* .copy_to_device = */ cuda_copy_to_device,
    /* .copy_to_host = */ cuda_copy_to_host,
    /* .copy = */ cuda_copy,
    /* .synchronize = */ cuda_synchronize,

    /* .fill = */ bf_cuda_fill,
    /* .scale = */ bf_cuda_scale,
    /* .add = */ bf_cuda_add,
    /* .add_inplace = */ bf_cuda_add_inplace,
    /* .axpy = */ bf_cuda_axpy,
    /* .sum_squares = */ bf_cuda_sum_squares,
    /* .accumulate_sum = */ bf_cuda_accumulate_sum,

    /* .conv2d_forward = */ bf_cuda_conv2d_forward,
    /* .conv2d_backward_data = */ bf_cuda_conv2d_backward_data,
    /* .conv2d_backward_data_add = */ bf_cuda_conv2d_backward_data_add,
    /* .conv2d_backward_filter = */ bf_cuda_conv2d_backward_filter,
    /* .conv_workspace_hint = */ bf_cuda_conv_workspace_hint,

    /* .batchnorm_forward_train = */ bf_cuda_batchnorm_forward_train,
    /* .batchnorm_forward_eval = */ bf_cuda_batchnorm_forward_eval,
    /* .batchnorm_forward_saved = */ bf_cuda_batchnorm_forward_saved,
    /* .batchnorm_backward = */ bf_cuda_batchnorm_backward,
    /* .batchnorm_relu_apply = */ bf_cuda_batchnorm_relu_apply,
    /* .batchnorm_relu_backward = */ bf_cuda_batchnorm_relu_backward,
    /* .batchnorm_backward_sums = */ bf_cuda_batchnorm_backward_sums,

    /* .relu_forward = */ bf_cuda_relu_forward,
    /* .relu_backward = */ bf_cuda_relu_backward,
    /* .add_relu_forward = */ bf_cuda_add_relu_forward,
    /* .add_relu_backward = */ bf_cuda_add_relu_backward,
    /* .leaky_relu_forward = */ bf_cuda_leaky_relu_forward,
    /* .leaky_relu_backward = */ bf_cuda_leaky_relu_backward,

    /* .maxpool_forward = */ bf_cuda_maxpool_forward,
    /* .maxpool_backward = */ bf_cuda_maxpool_backward,
    /* .avgpool_forward = */ bf_cuda_avgpool_forward,
    /* .avgpool_backward = */ bf_cuda_avgpool_backward,
    /* .global_avgpool_forward = */ bf_cuda_global_avgpool_forward,
    /* .global_avgpool_backward = */ bf_cuda_global_avgpool_backward,

    /* .linear_forward = */ bf_cuda_linear_forward,
    /* .linear_backward = */ bf_cuda_linear_backward,

    /* .dropout_forward = */ bf_cuda_dropout_forward,
    /* .dropout_backward = */ bf_cuda_dropout_backward,

    /* .softmax_xent = */ bf_cuda_softmax_xent,
    /* .topk_correct = */ bf_cuda_topk_correct,

    /* .sgd_update = */ bf_cuda_sgd_update,
    /* .adam_update = */ bf_cuda_adam_update,
    /* .clip_scale = */ bf_cuda_clip_scale,

    /* .flex_widen_forward = */ bf_cuda_flex_widen_forward,
    /* .flex_widen_backward = */ bf_cuda_flex_widen_backward,
    /* .flex_max_forward = */ bf_cuda_flex_max_forward,
    /* .flex_max_backward = */ bf_cuda_flex_max_backward,
    /* .flex_pool_max_forward = */ bf_cuda_flex_pool_max_forward,
    /* .flex_pool_max_backward = */ bf_cuda_flex_pool_max_backward,
    /* .flex_pool_max_forward_bn_stats = */ bf_cuda_flex_pool_max_forward_bn_stats,
    /* .flex_pool_scatter_add = */ bf_cuda_flex_pool_scatter_add,
    /* .flex_pool_max_backward_scatter = */ bf_cuda_flex_pool_max_backward_scatter,
    /* .flex_pool_max_backward_scatter_bn = */ bf_cuda_flex_pool_max_backward_scatter_bn,
    /* .flex_pool_max_backward_bn = */ bf_cuda_flex_pool_max_backward_bn,
    /* .flex_pool_forward = */ bf_cuda_flex_pool_forward,
    /* .flex_pool_gather = */ bf_cuda_flex_pool_gather,
    /* .flex_route_tally = */ bf_cuda_flex_route_tally,
    /* .flex_logits_forward = */ bf_cuda_flex_logits_forward,
    /* .flex_mask_forward = */ bf_cuda_flex_mask_forward,
    /* .flex_mask_backward = */ bf_cuda_flex_mask_backward,
    /* .flex_threshold_backward = */ bf_cuda_flex_threshold_backward,
    /* .flex_mask_stats = */ bf_cuda_flex_mask_stats,
    /* .flex_mask_joint_forward = */ bf_cuda_flex_mask_joint_forward,
    /* .flex_mask_joint_backward = */ bf_cuda_flex_mask_joint_backward,

    /* .neuron_forward = */ bf_cuda_neuron_forward,
    /* .neuron_backward = */ bf_cuda_neuron_backward,
    /* .neuron_forward_bn = */ bf_cuda_neuron_forward_bn,
    /* .neuron_backward_bn = */ bf_cuda_neuron_backward_bn,
    /* .neuron_batchnorm_backward = */ bf_cuda_neuron_batchnorm_backward,
    /* .spikes_pack = */ bf_cuda_spikes_pack,
    /* .spikes_unpack = */ bf_cuda_spikes_unpack,
    /* .spike_encode_rate = */ bf_cuda_spike_encode_rate,
    /* .fill_uniform = */ bf_cuda_fill_uniform,

    /* .counter_hebb_linear = */ bf_cuda_counter_hebb_linear,
    /* .counter_hebb_conv2d = */ bf_cuda_counter_hebb_conv2d,

    /* .image_u8_to_float = */ bf_cuda_image_u8_to_float,
    /* .binary_xent = */ bf_cuda_binary_xent,

    /* .batchnorm_sync_sums = */ bf_cuda_batchnorm_sync_sums,
    /* .batchnorm_sync_sqdev = */ bf_cuda_batchnorm_sync_sqdev,
    /* .batchnorm_sync_forward_apply = */ bf_cuda_batchnorm_sync_forward_apply,
    /* .batchnorm_sync_backward_sums = */ bf_cuda_batchnorm_sync_backward_sums,
    /* .batchnorm_sync_backward_apply = */ bf_cuda_batchnorm_sync_backward_apply,
    /* .mul = */ bf_cuda_mul,
    /* .task_slice_gather = */ bf_cuda_task_slice_gather,
    /* .task_slice_scatter = */ bf_cuda_task_slice_scatter,
    /* .attack_step = */ bf_cuda_attack_step,
    /* .divnorm_weights = */ bf_cuda_divnorm_weights,
    /* .divnorm_weights_backward = */ bf_cuda_divnorm_weights_backward,
    /* .divnorm_apply = */ bf_cuda_divnorm_apply,
    /* .divnorm_apply_backward = */ bf_cuda_divnorm_apply_backward,
    /* .channel_copy = */ bf_cuda_channel_copy,
    /* .dog_kernels = */ bf_cuda_dog_kernels,
    /* .dog_kernels_backward = */ bf_cuda_dog_kernels_backward,
    /* .local_forward = */ bf_cuda_local_forward,
    /* .local_backward_data = */ bf_cuda_local_backward_data,
    /* .local_backward_filter = */ bf_cuda_local_backward_filter,
    /* .cirincione_kernels = */ bf_cuda_cirincione_kernels,
    /* .cirincione_kernels_backward = */ bf_cuda_cirincione_kernels_backward,
    /* .cirincione_divide = */ bf_cuda_cirincione_divide,
    /* .cirincione_divide_backward = */ bf_cuda_cirincione_divide_backward,
};
/* The table is filled by position (C++17 has no designated initialisers): a member added to bf_ops
 * must be added above in the same place. */
static_assert(sizeof(bf_ops) == 103 * sizeof(void (*)(void)), "bf_ops changed: update cuda_ops");

/* ---- creation and teardown ---- */

/* Releases everything in im that exists (any subset, for a half-finished creation). */
static void impl_release(bf_cuda_impl *im) {
    if (!im) return;
    if (im->stream) (void)cudaStreamSynchronize(im->stream);
    bf_cuda_conv_cache_destroy(im);
    if (im->cudnn) (void)cudnnDestroy(im->cudnn);
    if (im->cublas) (void)cublasDestroy(im->cublas);
    if (im->cublas_ws) (void)cudaFree(im->cublas_ws);
    if (im->ws) (void)cudaFree(im->ws);
    if (im->scratch) (void)cudaFree(im->scratch);
    if (im->stream) (void)cudaStreamDestroy(im->stream);
    (void)cudaGetLastError();
    free(im->blocks); /* the table only: blocks still allocated belong to their owners */
    free(im);
}

/* Everything that can fail in creation; on failure the caller releases the half-built impl. */
static bf_status impl_init(bf_cuda_impl *im, int device_index, bf_precision precision) {
    im->device = device_index;
    im->precision = precision;
    im->conv_search_limit = (size_t)8 << 30; /* [run] conv_workspace_mib's default */
    im->conv_slack = 0.05f;                  /* [run] conv_workspace_slack's default */
    im->flex_slide = 0;                      /* [run] flex_kernels = fused */
    BF_CUDA_CHECK(cudaSetDevice(device_index));
    BF_CUDA_CHECK(cudaDeviceGetAttribute(&im->sm_count, cudaDevAttrMultiProcessorCount, device_index));
    BF_CUDA_CHECK(cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking));

    BF_CUDNN_CHECK(cudnnCreate(&im->cudnn));
    BF_CUDNN_CHECK(cudnnSetStream(im->cudnn, im->stream));

    BF_CUBLAS_CHECK(cublasCreate(&im->cublas));
    BF_CUBLAS_CHECK(cublasSetStream(im->cublas, im->stream));
    BF_CUBLAS_CHECK(cublasSetPointerMode(im->cublas, CUBLAS_POINTER_MODE_HOST));
    /* fp32: no TF32 (CUBLAS_DEFAULT_MATH keeps fp32 GEMMs in fp32); tf32: tensor cores allowed */
    BF_CUBLAS_CHECK(cublasSetMathMode(im->cublas, precision == BF_PRECISION_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                                 : CUBLAS_DEFAULT_MATH));
    cudaError_t e = cudaMalloc(&im->cublas_ws, CUBLAS_WORKSPACE_BYTES);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        im->cublas_ws = NULL;
        return bf_error(BF_ERR_OOM, "cudaMalloc(%d bytes) of cuBLAS workspace failed at %s:%d: %s",
                        (int)CUBLAS_WORKSPACE_BYTES, __FILE__, __LINE__, cudaGetErrorString(e));
    }
    im->cublas_ws_bytes = CUBLAS_WORKSPACE_BYTES;
    account(im, CUBLAS_WORKSPACE_BYTES, 0);
    /* cublasSetStream resets the workspace to the default pool, so the order matters here */
    BF_CUBLAS_CHECK(cublasSetWorkspace(im->cublas, im->cublas_ws, im->cublas_ws_bytes));
    return BF_OK;
}

extern "C" bf_status bf_backend_create_cuda(int device_index, bf_precision precision, bf_backend **out) {
    if (!out) return bf_error(BF_ERR_ARG, "cuda backend: create without an output pointer");
    *out = NULL;
    if (precision != BF_PRECISION_FP32 && precision != BF_PRECISION_TF32 && precision != BF_PRECISION_TF32_CONV)
        return bf_error(BF_ERR_ARG, "cuda backend: unknown precision %d (allowed: fp32, tf32, tf32_conv)", (int)precision);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return bf_error(BF_ERR_UNAVAILABLE, "cuda backend: no usable CUDA device (cudaGetDeviceCount: %s)",
                        cudaGetErrorString(e));
    }
    if (device_index < 0 || device_index >= count)
        return bf_error(BF_ERR_UNAVAILABLE, "cuda backend: device %d does not exist (%d CUDA device%s found)",
                        device_index, count, count == 1 ? "" : "s");

    bf_backend *b = (bf_backend *)calloc(1, sizeof *b);
    bf_cuda_impl *im = (bf_cuda_impl *)calloc(1, sizeof *im);
    if (!b || !im) {
        free(b);
        free(im);
        return bf_error(BF_ERR_OOM, "cuda backend: cannot allocate the backend");
    }
    bf_status st = impl_init(im, device_index, precision);
    if (st != BF_OK) {
        impl_release(im);
        free(b);
        return bf_error_context(st, "creating the CUDA backend on device %d", device_index);
    }
    b->ops = &cuda_ops;
    b->kind = BF_DEVICE_CUDA;
    b->device_index = device_index;
    b->precision = precision;
    b->num_threads = 0;
    b->impl = im;
    *out = b;
    return BF_OK;
}

extern "C" void bf_backend_destroy_cuda(bf_backend *b) {
    if (!b) return;
    bf_cuda_impl *im = (bf_cuda_impl *)b->impl;
    if (im) {
        int current = -1;
        if (cudaGetDevice(&current) != cudaSuccess || current != im->device) (void)cudaSetDevice(im->device);
        impl_release(im);
    }
    b->impl = NULL;
    free(b);
}

extern "C" int bf_cuda_device_count(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return count;
}

extern "C" int bf_cuda_built(void) { return 1; }

extern "C" bf_status bf_cuda_device_shape(const bf_backend *b, int *cc_major, int *cc_minor, int *sms, int *clock_khz) {
    if (!b || b->kind != BF_DEVICE_CUDA) return bf_error(BF_ERR_UNAVAILABLE, "bf_cuda_device_shape: not a CUDA backend");
    const int d = b->device_index;
    /* attributes, not cudaDeviceProp: CUDA 13 dropped its clockRate field */
    if (cudaDeviceGetAttribute(cc_major, cudaDevAttrComputeCapabilityMajor, d) != cudaSuccess ||
        cudaDeviceGetAttribute(cc_minor, cudaDevAttrComputeCapabilityMinor, d) != cudaSuccess ||
        cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, d) != cudaSuccess ||
        cudaDeviceGetAttribute(clock_khz, cudaDevAttrClockRate, d) != cudaSuccess) {
        cudaError_t e = cudaGetLastError();
        return bf_error(BF_ERR_DEVICE, "cudaDeviceGetAttribute failed for device %d at %s:%d: %s", d, __FILE__, __LINE__,
                        cudaGetErrorString(e));
    }
    return BF_OK;
}

extern "C" bf_status bf_cuda_profiler(bf_backend *b, int on) {
    if (!b || b->kind != BF_DEVICE_CUDA) return BF_OK;
    bf_cuda_impl *im = (bf_cuda_impl *)b->impl;
    BF_CUDA_CHECK(cudaSetDevice(im->device));
    BF_CUDA_CHECK(on ? cudaProfilerStart() : cudaProfilerStop());
    return BF_OK;
}

extern "C" bf_status bf_cuda_set_driver_fence(bf_backend *b, bf_status (*fence)(void *ctx), void *ctx) {
    if (!b || b->kind != BF_DEVICE_CUDA) return BF_OK;
    bf_cuda_impl *im = (bf_cuda_impl *)b->impl;
    im->fence = fence;
    im->fence_ctx = fence ? ctx : NULL;
    return BF_OK;
}

extern "C" size_t bf_cuda_conv_workspace_bytes(bf_backend *b) {
    return b && b->kind == BF_DEVICE_CUDA ? ((bf_cuda_impl *)b->impl)->ws_bytes : 0;
}

extern "C" void bf_cuda_memory_bytes(bf_backend *b, int reset_peak, size_t *live, size_t *peak) {
    bf_cuda_impl *im = b && b->kind == BF_DEVICE_CUDA ? (bf_cuda_impl *)b->impl : NULL;
    if (live) *live = im ? im->live_bytes : 0;
    if (peak) *peak = im ? im->peak_bytes : 0;
    if (im && reset_peak) im->peak_bytes = im->live_bytes;
}
