/* backend_cpu.c - the CPU reference backend: host memory, copies, the scratch buffer, and the
 * bf_ops table that gathers the ops implemented in the other *_cpu.c files. */
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cpu_backend.h"

/* Every buffer is aligned to a cache line (and to the widest SIMD register, AVX-512). */
enum { CPU_ALIGNMENT = 64 };

static void *aligned_zalloc(size_t bytes) {
    size_t rounded = (bytes + CPU_ALIGNMENT - 1) / CPU_ALIGNMENT * CPU_ALIGNMENT;
    if (rounded == 0) rounded = CPU_ALIGNMENT; /* a zero-byte request still gets a unique pointer */
    void *p = aligned_alloc(CPU_ALIGNMENT, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

static bf_status cpu_alloc(bf_backend *b, size_t bytes, void **ptr) {
    (void)b;
    *ptr = aligned_zalloc(bytes);
    if (!*ptr) return bf_error(BF_ERR_OOM, "cpu backend: cannot allocate %zu bytes of host memory", bytes);
    return BF_OK;
}

static void cpu_free(bf_backend *b, void *ptr) {
    (void)b;
    free(ptr);
}

/* Host and "device" are the same memory, so all three copies are memcpy. */
static bf_status cpu_copy(bf_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes == 0) return BF_OK;
    if (!dst || !src) return bf_error(BF_ERR_ARG, "cpu backend: copy of %zu bytes with a NULL pointer", bytes);
    memcpy(dst, src, bytes);
    return BF_OK;
}

/* Every CPU op has finished when it returns. */
static bf_status cpu_synchronize(bf_backend *b) {
    (void)b;
    return BF_OK;
}

bf_status bf_cpu_scratch(bf_backend *b, size_t bytes, void **out) {
    bf_cpu_state *st = b->impl;
    if (bytes > st->scratch_bytes || !st->scratch) {
        void *grown = aligned_zalloc(bytes);
        if (!grown) {
            *out = NULL;
            return bf_error(BF_ERR_OOM, "cpu backend: cannot allocate %zu bytes of scratch memory", bytes);
        }
        free(st->scratch);
        st->scratch = grown;
        st->scratch_bytes = bytes;
    }
    *out = st->scratch;
    return BF_OK;
}

static const bf_ops cpu_ops = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy_to_device = cpu_copy,
    .copy_to_host = cpu_copy,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,

    .fill = bf_cpu_fill,
    .scale = bf_cpu_scale,
    .add = bf_cpu_add,
    .add_inplace = bf_cpu_add_inplace,
    .axpy = bf_cpu_axpy,
    .sum_squares = bf_cpu_sum_squares,
    .accumulate_sum = bf_cpu_accumulate_sum,

    .conv2d_forward = bf_cpu_conv2d_forward,
    .conv2d_backward_data = bf_cpu_conv2d_backward_data,
    .conv2d_backward_data_add = bf_cpu_conv2d_backward_data_add,
    .conv2d_backward_filter = bf_cpu_conv2d_backward_filter,
    .conv_workspace_hint = bf_cpu_conv_workspace_hint,

    .batchnorm_forward_train = bf_cpu_batchnorm_forward_train,
    .batchnorm_forward_eval = bf_cpu_batchnorm_forward_eval,
    .batchnorm_forward_saved = bf_cpu_batchnorm_forward_saved,
    .batchnorm_backward = bf_cpu_batchnorm_backward,
    .batchnorm_relu_apply = bf_cpu_batchnorm_relu_apply,
    .batchnorm_relu_backward = bf_cpu_batchnorm_relu_backward,
    .batchnorm_backward_sums = bf_cpu_batchnorm_backward_sums,

    .relu_forward = bf_cpu_relu_forward,
    .relu_backward = bf_cpu_relu_backward,
    .add_relu_forward = bf_cpu_add_relu_forward,
    .add_relu_backward = bf_cpu_add_relu_backward,
    .leaky_relu_forward = bf_cpu_leaky_relu_forward,
    .leaky_relu_backward = bf_cpu_leaky_relu_backward,

    .maxpool_forward = bf_cpu_maxpool_forward,
    .maxpool_backward = bf_cpu_maxpool_backward,
    .avgpool_forward = bf_cpu_avgpool_forward,
    .avgpool_backward = bf_cpu_avgpool_backward,
    .global_avgpool_forward = bf_cpu_global_avgpool_forward,
    .global_avgpool_backward = bf_cpu_global_avgpool_backward,

    .linear_forward = bf_cpu_linear_forward,
    .linear_backward = bf_cpu_linear_backward,

    .dropout_forward = bf_cpu_dropout_forward,
    .dropout_backward = bf_cpu_dropout_backward,
    .spike_encode_rate = bf_cpu_spike_encode_rate,
    .fill_uniform = bf_cpu_fill_uniform,

    .softmax_xent = bf_cpu_softmax_xent,
    .topk_correct = bf_cpu_topk_correct,

    .sgd_update = bf_cpu_sgd_update,
    .adam_update = bf_cpu_adam_update,
    .clip_scale = bf_cpu_clip_scale,

    .flex_widen_forward = bf_cpu_flex_widen_forward,
    .flex_widen_backward = bf_cpu_flex_widen_backward,
    .flex_max_forward = bf_cpu_flex_max_forward,
    .flex_max_backward = bf_cpu_flex_max_backward,
    .flex_pool_max_forward = bf_cpu_flex_pool_max_forward,
    .flex_pool_max_backward = bf_cpu_flex_pool_max_backward,
    .flex_pool_max_forward_bn_stats = bf_cpu_flex_pool_max_forward_bn_stats,
    .flex_pool_scatter_add = bf_cpu_flex_pool_scatter_add,
    .flex_pool_max_backward_scatter = bf_cpu_flex_pool_max_backward_scatter,
    .flex_pool_max_backward_scatter_bn = bf_cpu_flex_pool_max_backward_scatter_bn,
    .flex_pool_max_backward_bn = bf_cpu_flex_pool_max_backward_bn,
    .flex_pool_forward = bf_cpu_flex_pool_forward,
    .flex_pool_gather = bf_cpu_flex_pool_gather,
    .flex_route_tally = bf_cpu_flex_route_tally,
    .flex_logits_forward = bf_cpu_flex_logits_forward,
    .flex_mask_forward = bf_cpu_flex_mask_forward,
    .flex_mask_backward = bf_cpu_flex_mask_backward,
    .flex_threshold_backward = bf_cpu_flex_threshold_backward,
    .flex_mask_stats = bf_cpu_flex_mask_stats,
    .flex_mask_joint_forward = bf_cpu_flex_mask_joint_forward,
    .flex_mask_joint_backward = bf_cpu_flex_mask_joint_backward,

    .neuron_forward = bf_cpu_neuron_forward,
    .neuron_backward = bf_cpu_neuron_backward,
    .neuron_forward_bn = bf_cpu_neuron_forward_bn,
    .neuron_backward_bn = bf_cpu_neuron_backward_bn,
    .neuron_batchnorm_backward = bf_cpu_neuron_batchnorm_backward,
    .spikes_pack = bf_cpu_spikes_pack,
    .spikes_unpack = bf_cpu_spikes_unpack,

    .counter_hebb_linear = bf_cpu_counter_hebb_linear,
    .counter_hebb_conv2d = bf_cpu_counter_hebb_conv2d,

    .image_u8_to_float = bf_cpu_image_u8_to_float,
    .binary_xent = bf_cpu_binary_xent,

    .batchnorm_sync_sums = bf_cpu_batchnorm_sync_sums,
    .batchnorm_sync_sqdev = bf_cpu_batchnorm_sync_sqdev,
    .batchnorm_sync_forward_apply = bf_cpu_batchnorm_sync_forward_apply,
    .batchnorm_sync_backward_sums = bf_cpu_batchnorm_sync_backward_sums,
    .batchnorm_sync_backward_apply = bf_cpu_batchnorm_sync_backward_apply,
    .mul = bf_cpu_mul,
    .task_slice_gather = bf_cpu_task_slice_gather,
    .task_slice_scatter = bf_cpu_task_slice_scatter,
    .attack_step = bf_cpu_attack_step,
    .divnorm_weights = bf_cpu_divnorm_weights,
    .divnorm_weights_backward = bf_cpu_divnorm_weights_backward,
    .divnorm_apply = bf_cpu_divnorm_apply,
    .divnorm_apply_backward = bf_cpu_divnorm_apply_backward,
    .channel_copy = bf_cpu_channel_copy,
    .dog_kernels = bf_cpu_dog_kernels,
    .dog_kernels_backward = bf_cpu_dog_kernels_backward,
    .local_forward = bf_cpu_local_forward,
    .local_backward_data = bf_cpu_local_backward_data,
    .local_backward_filter = bf_cpu_local_backward_filter,
    .cirincione_kernels = bf_cpu_cirincione_kernels,
    .cirincione_kernels_backward = bf_cpu_cirincione_kernels_backward,
    .cirincione_divide = bf_cpu_cirincione_divide,
    .cirincione_divide_backward = bf_cpu_cirincione_divide_backward,
};

#ifdef OPENBLAS_VERSION
/* A DYNAMIC_ARCH OpenBLAS picks its kernels from the CPU model when it loads. Versions that do not
 * know a recent CPU (0.3.21 on a Sapphire Rapids VM, for one) fall back to the SSE3 "Prescott"
 * kernels, which makes every convolution 3-6x slower. The choice is made before any of our code
 * runs, so the fix is an environment variable, and the best we can do is to say so. */
static void warn_if_generic_blas_kernels(void) {
#if defined(__GNUC__) && defined(__x86_64__)
    const char *core = openblas_get_corename();
    if (core && strcmp(core, "Prescott") == 0 && __builtin_cpu_supports("avx2") && !getenv("OPENBLAS_CORETYPE"))
        fprintf(stderr, "bioflex: OpenBLAS does not recognise this CPU and uses its slow generic kernels; "
                        "set OPENBLAS_CORETYPE=Haswell (AVX2) or OPENBLAS_CORETYPE=SkylakeX (AVX-512) "
                        "for 3-6x faster CPU training\n");
#endif
}
#endif

bf_status bf_backend_create_cpu(int num_threads, bf_backend **out) {
    *out = NULL;
    if (num_threads < 0) return bf_error(BF_ERR_ARG, "cpu backend: num_threads must be >= 0 (got %d)", num_threads);
    if (num_threads == 0) num_threads = omp_get_max_threads();
    if (num_threads > BF_CPU_MAX_THREADS) num_threads = BF_CPU_MAX_THREADS;

    bf_backend *b = calloc(1, sizeof *b);
    bf_cpu_state *st = calloc(1, sizeof *st);
    if (!b || !st) {
        free(b);
        free(st);
        return bf_error(BF_ERR_OOM, "cpu backend: cannot allocate the backend");
    }
    b->ops = &cpu_ops;
    b->kind = BF_DEVICE_CPU;
    b->device_index = 0;
    b->precision = BF_PRECISION_FP32;
    b->num_threads = num_threads;
    b->impl = st;
    st->conv_library = bf_cpu_have_onednn() ? BF_CPU_CONV_ONEDNN : BF_CPU_CONV_IM2COL;

#ifdef OPENBLAS_VERSION
    /* Our loops call sgemm from several OpenMP threads at once (one image each); a pthreads
     * OpenBLAS would add its own thread pool on top and oversubscribe the cores. The setting is
     * process-wide. An OpenMP OpenBLAS already runs single-threaded inside a parallel region, and
     * its set_num_threads would also change OpenMP's default for everyone, so it is left alone. */
    if (openblas_get_parallel() == OPENBLAS_THREAD) openblas_set_num_threads(1);
    static pthread_once_t warn_once = PTHREAD_ONCE_INIT; /* one warning per process, not per backend */
    pthread_once(&warn_once, warn_if_generic_blas_kernels);
#endif
    *out = b;
    return BF_OK;
}

void bf_backend_destroy(bf_backend *b) {
    if (!b) return;
    if (b->kind == BF_DEVICE_CUDA) {
        bf_backend_destroy_cuda(b);
        return;
    }
    bf_cpu_state *st = b->impl;
    if (st) {
        bf_cpu_onednn_release(st);
        free(st->scratch);
    }
    free(st);
    free(b);
}

bf_cpu_conv_library bf_cpu_conv_library_of(const bf_backend *b) {
    return b && b->kind == BF_DEVICE_CPU ? (bf_cpu_conv_library)((const bf_cpu_state *)b->impl)->conv_library
                                         : BF_CPU_CONV_IM2COL;
}

long bf_cpu_onednn_conv_calls(const bf_backend *b) {
    return b && b->kind == BF_DEVICE_CPU ? ((const bf_cpu_state *)b->impl)->onednn_calls : 0;
}

bf_status bf_cpu_set_conv_library(bf_backend *b, bf_cpu_conv_library library) {
    if (!b || b->kind != BF_DEVICE_CPU) return bf_error(BF_ERR_ARG, "cpu_conv: not a CPU backend");
    if (library != BF_CPU_CONV_IM2COL && library != BF_CPU_CONV_ONEDNN)
        return bf_error(BF_ERR_ARG, "cpu_conv: unknown library %d (im2col 0, onednn 1)", (int)library);
    if (library == BF_CPU_CONV_ONEDNN && !bf_cpu_have_onednn())
        return bf_error(BF_ERR_UNAVAILABLE, "[run] cpu_conv = onednn: bioflex was built without oneDNN "
                        "(install libdnnl-dev and configure with -DBIOFLEX_ONEDNN=AUTO or ON)");
    ((bf_cpu_state *)b->impl)->conv_library = library;
    return BF_OK;
}
