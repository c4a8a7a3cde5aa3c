/* cpu_backend.h - internals shared by the CPU reference backend's files (src/kernels/ *_cpu.c).
 *
 * Each *_cpu.c file implements one family of the bf_ops table (ops.h) and exports its functions
 * under the bf_cpu_ prefix; backend_cpu.c collects them into the table. Nothing here is public.
 *
 * Threading: every parallel loop uses OpenMP with `num_threads(bf_cpu_threads(b))` and a static
 * schedule, and every reduction is summed in an order fixed by the data size and the thread count,
 * so two runs with the same inputs and thread count give bit-identical results (the schedule only
 * decides which thread computes what, never how it is summed). OpenBLAS runs single-threaded
 * (see bf_backend_create_cpu) because the GEMMs are issued from inside our own parallel loops
 * (one image per thread), which parallelises better than splitting each small GEMM and avoids
 * oversubscribing the cores. oneDNN's convolutions (conv_onednn_cpu.c), where built, share
 * OpenMP's threads: the backend's count is set for each of its calls. */
#ifndef BIOFLEX_CPU_BACKEND_H
#define BIOFLEX_CPU_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include <cblas.h>

#include "bioflex/ops.h"

/* Loops shorter than this run on one thread: forking a team costs more than it saves. */
#define BF_CPU_PARALLEL_MIN 32768

/* Upper bound on OpenMP threads, so per-thread partial sums fit in a stack array. */
#define BF_CPU_MAX_THREADS 256

/* Reductions are cut into blocks whose number depends on the problem only, never on the thread
 * count, and the blocks' partial results are added in block order: a CPU run gives the same bits
 * with any [run] threads, on any machine. The weight gradient of a convolution sums its batch in
 * at most BF_CPU_GRAD_BLOCKS blocks of images (each with a partial dW: memory for parallelism). */
#define BF_CPU_GRAD_BLOCKS 16

/* Backend-private state behind bf_backend.impl. */
typedef struct bf_cpu_state {
    void *scratch;        /* im2col columns and per-thread partial sums; grows, never shrinks */
    size_t scratch_bytes;
    int conv_library;     /* BF_CPU_CONV_* (bf_cpu_set_conv_library) */
    void *onednn;         /* conv_onednn_cpu.c's engine, streams and primitive cache (NULL until used) */
    long onednn_calls;    /* convolution calls oneDNN ran (bf_cpu_onednn_conv_calls) */
} bf_cpu_state;

/* ---- conv_onednn_cpu.c: the convolutions through oneDNN where the build has it ----
 * Each computes the op and sets *done = 1, or computes nothing and sets *done = 0 when the im2col
 * path (conv_cpu.c) must: oneDNN absent or turned off, or no optimised oneDNN kernel for the shape.
 * backward_filter leaves the bias gradient to its caller. */
bf_status bf_cpu_onednn_conv_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x, const float *w,
                                     const float *bias, float *y, int *done);
bf_status bf_cpu_onednn_conv_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy, const float *w,
                                           float *dx, int add, int *done);
bf_status bf_cpu_onednn_conv_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                             const float *dy, float *dw, int *done);
void bf_cpu_onednn_release(bf_cpu_state *st);

/* The backend's OpenMP thread count, kept within [1, BF_CPU_MAX_THREADS] even if a caller
 * changed the public field after creation. */
static inline int bf_cpu_threads(const bf_backend *b) {
    int t = b->num_threads;
    return t < 1 ? 1 : t > BF_CPU_MAX_THREADS ? BF_CPU_MAX_THREADS : t;
}

/* Returns scratch memory of at least `bytes` (64-byte aligned, contents undefined). It is
 * reallocated only when a larger size is asked for, so a training step after the first
 * allocates nothing. The pointer stays valid until the next call. Like a CUDA stream, a backend
 * serves one host thread at a time, so ops never compete for the scratch buffer. */
bf_status bf_cpu_scratch(bf_backend *b, size_t bytes, void **out);

/* Rounds a float count up to a whole number of 64-byte cache lines, so that per-thread slices
 * carved from one scratch buffer do not share a cache line. */
static inline size_t bf_cpu_round_floats(size_t n) { return (n + 15) & ~(size_t)15; }

/* Output positions o in [*lo, *hi) of a sliding window (size out_size) whose input position
 * o*stride - pad + k lies inside [0, size): the unclipped part of a row for kernel tap k. */
static inline void bf_cpu_valid_outputs(int size, int out_size, int stride, int pad, int k, int *lo, int *hi) {
    int first = pad - k;           /* need o*stride >= first */
    int last = size - 1 + pad - k; /* need o*stride <= last */
    int l = first <= 0 ? 0 : (first + stride - 1) / stride;
    int h = last < 0 ? 0 : last / stride + 1;
    if (h > out_size) h = out_size;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* Sums in double with BF_CPU_LANES interleaved partial sums, added in lane order at the end.
 * A plain `double sum; sum += x[i]` is one serial chain of dependent additions that the compiler
 * may not reorder; independent lanes let it vectorise while the order stays fixed. */
#define BF_CPU_LANES 8

/* sum of x[i] */
static inline double bf_cpu_lane_sum(const float *x, size_t n) {
    double lane[BF_CPU_LANES] = {0};
    size_t i = 0;
    for (; i + BF_CPU_LANES <= n; i += BF_CPU_LANES)
        for (int l = 0; l < BF_CPU_LANES; l++) lane[l] += x[i + l];
    double sum = 0;
    for (; i < n; i++) sum += x[i];
    for (int l = 0; l < BF_CPU_LANES; l++) sum += lane[l];
    return sum;
}

/* sum of (x[i] - shift) * (y[i] - shift_y); with y == x and equal shifts, a sum of squares */
static inline double bf_cpu_lane_dot(const float *x, double shift, const float *y, double shift_y, size_t n) {
    double lane[BF_CPU_LANES] = {0};
    size_t i = 0;
    for (; i + BF_CPU_LANES <= n; i += BF_CPU_LANES)
        for (int l = 0; l < BF_CPU_LANES; l++) lane[l] += (x[i + l] - shift) * (y[i + l] - shift_y);
    double sum = 0;
    for (; i < n; i++) sum += (x[i] - shift) * (y[i] - shift_y);
    for (int l = 0; l < BF_CPU_LANES; l++) sum += lane[l];
    return sum;
}

/* Sum of x[i] (or of x[i]^2 when `squares`), accumulated in double over fixed per-thread blocks
 * that are combined in thread order. */
double bf_cpu_sum(const bf_backend *b, const float *x, size_t n, int squares);

/* ---- linear_cpu.c ---- */
/* C[M, N] = op(A) * op(B) + beta * C with the rows of C cut into slices, or its columns when they
 * are the longer side, one sgemm per slice, the slices over the threads (OpenBLAS runs
 * single-threaded in this backend: backend_cpu.c). The slices depend on the shape only, never on
 * the thread count: OpenBLAS may take another code path for another slice size (its small-matrix
 * kernels), and a CPU run must give the same bits with any [run] threads. No sum is split. */
void bf_cpu_parallel_sgemm(const bf_backend *b, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K,
                           const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Provided by the CUDA backend (or by backend_cuda_absent.c): releases a CUDA backend. */
void bf_backend_destroy_cuda(bf_backend *b);

/* ---- elementwise_cpu.c ---- */
bf_status bf_cpu_fill(bf_backend *b, float *x, float value, size_t n);
bf_status bf_cpu_scale(bf_backend *b, float *x, float alpha, size_t n);
bf_status bf_cpu_add(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);
bf_status bf_cpu_mul(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);
bf_status bf_cpu_task_slice_gather(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks, const float *full,
                                   float *out);
bf_status bf_cpu_task_slice_scatter(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks, const float *in,
                                    float *full);
bf_status bf_cpu_add_inplace(bf_backend *b, float *y, const float *x, size_t n);
bf_status bf_cpu_axpy(bf_backend *b, float alpha, const float *x, float *y, size_t n);
bf_status bf_cpu_sum_squares(bf_backend *b, const float *x, size_t n, float *out);
bf_status bf_cpu_accumulate_sum(bf_backend *b, const float *x, size_t n, float *acc);
bf_status bf_cpu_relu_forward(bf_backend *b, const float *x, float *y, size_t n);
bf_status bf_cpu_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n);
bf_status bf_cpu_add_relu_forward(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);
bf_status bf_cpu_add_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx0, float *dx1, size_t n);
bf_status bf_cpu_leaky_relu_forward(bf_backend *b, const float *x, float *y, size_t n, float slope);
bf_status bf_cpu_leaky_relu_backward(bf_backend *b, const float *y, const float *dy, float *dx, size_t n, float slope);
bf_status bf_cpu_fill_uniform(bf_backend *b, float *x, size_t n, float lo, float hi, uint64_t seed);
bf_status bf_cpu_spike_encode_rate(bf_backend *b, const float *x, float *y, size_t n, int T, bf_draws draws);
bf_status bf_cpu_dropout_forward(bf_backend *b, const float *x, float *y, size_t n, size_t group, float p,
                                 bf_draws draws);
bf_status bf_cpu_dropout_backward(bf_backend *b, const float *dy, float *dx, size_t n, size_t group, float p,
                                  bf_draws draws);

/* ---- conv_cpu.c ---- */
bf_status bf_cpu_conv2d_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                const float *w, const float *bias, float *y);
bf_status bf_cpu_conv2d_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                      const float *w, float *dx);
bf_status bf_cpu_conv2d_backward_data_add(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                          const float *w, float *dx);
bf_status bf_cpu_conv2d_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                        const float *dy, float *dw, float *dbias);
bf_status bf_cpu_conv_workspace_hint(bf_backend *b, void *p, size_t bytes);
/* out[o] = the sum of x [n, c, hw] over channel o's planes, in double (a conv's bias gradient) */
void bf_cpu_channel_sum(const bf_backend *b, int n, int c, size_t hw, const float *x, float *out);

/* ---- batchnorm_cpu.c ---- */
bf_status bf_cpu_batchnorm_forward_train(bf_backend *b, const bf_bn_shape *s, const float *x,
                                         const float *gamma, const float *beta, float *y,
                                         float *save_mean, float *save_invstd,
                                         float *running_mean, float *running_var);
bf_status bf_cpu_batchnorm_forward_eval(bf_backend *b, const bf_bn_shape *s, const float *x,
                                        const float *gamma, const float *beta,
                                        const float *running_mean, const float *running_var, float *y);
bf_status bf_cpu_batchnorm_forward_saved(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                         const float *beta, const float *save_mean, const float *save_invstd, float *y);
bf_status bf_cpu_batchnorm_backward(bf_backend *b, const bf_bn_shape *s, const float *x,
                                    const float *dy, const float *gamma, const float *save_mean,
                                    const float *save_invstd, float *dx, float *dgamma, float *dbeta);

/* batchnorm_cpu.c: dx of one channel from the means of dy and dy*xhat (shared with the sync ops). */
bf_status bf_cpu_batchnorm_relu_apply(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                      const float *beta, const float *save_mean, const float *save_invstd, float *y);
bf_status bf_cpu_batchnorm_relu_backward(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                         const float *gamma, const float *beta, const float *save_mean,
                                         const float *save_invstd, float *dx, float *dgamma, float *dbeta);
bf_status bf_cpu_batchnorm_backward_sums(bf_backend *b, const bf_bn_shape *s, int relu, const float *x,
                                         const float *dy, const float *gamma, const float *beta,
                                         const float *save_mean, const float *save_invstd, float *dgamma,
                                         float *dbeta, float *coef);
/* dx of a batch-norm from its coefficients (bf_bn_grad) over x [s->n, s->c, s->hw]; dx may be dy. */
void bf_cpu_bn_dx_from_coef(const bf_bn_shape *s, const bf_bn_grad *bn, const float *x, const float *dy, float *dx,
                            int threads);
void bf_cpu_bn_dx_channel(const bf_bn_shape *s, const float *x, const float *dy, const float *gamma, int ch, float mean,
                          float invstd, float mean_dy, float mean_dy_xhat, float *dx);
/* ---- batchnorm_sync_cpu.c ---- */
bf_status bf_cpu_batchnorm_sync_sums(bf_backend *b, const bf_bn_shape *s, const float *x, double *stats);
bf_status bf_cpu_batchnorm_sync_sqdev(bf_backend *b, const bf_bn_shape *s, const float *x, const double *stats,
                                      double *sq);
bf_status bf_cpu_batchnorm_sync_forward_apply(bf_backend *b, const bf_bn_shape *s, const float *x,
                                              const double *stats, const double *sq, const float *gamma,
                                              const float *beta, float *y, float *save_mean, float *save_invstd,
                                              float *running_mean, float *running_var);
bf_status bf_cpu_batchnorm_sync_backward_sums(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                              const float *save_mean, const float *save_invstd, double *sums,
                                              float *dgamma, float *dbeta);
bf_status bf_cpu_batchnorm_sync_backward_apply(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                               const float *gamma, const float *save_mean, const float *save_invstd,
                                               const double *sums, float *dx);

/* ---- pool_cpu.c ---- */
bf_status bf_cpu_maxpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y,
                                 int32_t *argmax);
bf_status bf_cpu_maxpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy,
                                  const int32_t *argmax, float *dx);
bf_status bf_cpu_avgpool_forward(bf_backend *b, const bf_pool_shape *s, const float *x, float *y);
bf_status bf_cpu_avgpool_backward(bf_backend *b, const bf_pool_shape *s, const float *dy, float *dx);
bf_status bf_cpu_global_avgpool_forward(bf_backend *b, int n, int c, int hw, const float *x, float *y);
bf_status bf_cpu_global_avgpool_backward(bf_backend *b, int n, int c, int hw, const float *dy, float *dx);

/* ---- counter_hebb_cpu.c ---- */
bf_status bf_cpu_counter_hebb_linear(bf_backend *b, const bf_linear_shape *s, const float *bu, const float *td,
                                     float *dw, float *dbias, float *dw_td);
bf_status bf_cpu_counter_hebb_conv2d(bf_backend *b, const bf_conv2d_shape *s, const float *bu, const float *td,
                                     float *dw, float *dbias, float *dw_td);

/* ---- linear_cpu.c ---- */
bf_status bf_cpu_linear_forward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                const float *w, const float *bias, float *y);
bf_status bf_cpu_linear_backward(bf_backend *b, const bf_linear_shape *s, const float *x,
                                 const float *w, const float *dy, float *dx, float *dw, float *dbias);

/* ---- loss_cpu.c ---- */
bf_status bf_cpu_binary_xent(bf_backend *b, int n, const float *logits, const int32_t *labels, float *losses,
                             float *dlogits, float *correct);
bf_status bf_cpu_softmax_xent(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                              float smoothing, float grad_scale, float *losses, float *dlogits);
bf_status bf_cpu_topk_correct(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                              float *correct1, float *correct5);

/* ---- optim_cpu.c ---- */
bf_status bf_cpu_sgd_update(bf_backend *b, float *params, const float *grads, float *momentum_buf,
                            size_t n, float lr, float momentum, float weight_decay, int nesterov,
                            int first_step, const float *grad_scale);
bf_status bf_cpu_adam_update(bf_backend *b, float *params, const float *grads, float *m, float *v,
                             size_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, int decoupled_decay, long step, const float *grad_scale);
bf_status bf_cpu_clip_scale(bf_backend *b, const float *sum_squares, float max_norm, float *scale);

/* ---- flex_cpu.c ---- */
bf_status bf_cpu_flex_widen_forward(bf_backend *b, const bf_flex_shape *s, const float *pooled, float *widened);
bf_status bf_cpu_flex_widen_backward(bf_backend *b, const bf_flex_shape *s, const float *dwidened, float *dpooled);
bf_status bf_cpu_flex_max_forward(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                  float *y, float *conv_wins);
bf_status bf_cpu_flex_max_backward(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                   const float *dy, float *dconv, float *dpooled);
bf_status bf_cpu_flex_logits_forward(bf_backend *b, const bf_flex_shape *s, const float *widened,
                                     const float *threshold, float *logits);
bf_status bf_cpu_flex_mask_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                   bf_draws draws, const float *logits, const float *conv, const float *widened,
                                   float *mask, float *y, float *conv_mask_sum);
bf_status bf_cpu_flex_mask_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                    const float *logits, const float *mask, const float *conv, const float *widened,
                                    const float *dy, float *dconv, float *dlogits, float *dwidened);
bf_status bf_cpu_flex_threshold_backward(bf_backend *b, const bf_flex_shape *s, const float *dlogits,
                                         float *dthreshold);
bf_status bf_cpu_flex_mask_stats(bf_backend *b, const float *mask, size_t n, float *out);

/* ---- flex_mask_cpu.c ---- */
bf_status bf_cpu_flex_mask_joint_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                         bf_draws draws, const float *pooled, const float *threshold,
                                         const float *logits, const float *conv, float *y, float *conv_mask_sum,
                                         float *routing);
bf_status bf_cpu_flex_mask_joint_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                          bf_draws draws, const float *pooled, const float *threshold,
                                          const float *logits, const float *conv, const float *dy, float *dconv,
                                          float *dlogits, float *dpooled);

/* ---- flex_pool_cpu.c ---- */
bf_status bf_cpu_flex_pool_max_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                       const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                       float *conv_wins);
bf_status bf_cpu_flex_pool_max_backward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                        const uint32_t *winners, const uint32_t *ties, const float *dy, float *dconv,
                                        float *dpooled);
bf_status bf_cpu_flex_pool_max_forward_bn_stats(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                const bf_bn_shape *bs, const float *x, const float *bias, float *y,
                                                uint8_t *window, uint32_t *winners, uint32_t *ties, float *conv_wins,
                                                float *save_mean, float *save_invstd, float *running_mean,
                                                float *running_var);
bf_status bf_cpu_flex_pool_scatter_add(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                       const uint8_t *window, const float *dpooled, float *dx);
bf_status bf_cpu_flex_pool_max_backward_scatter(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                const uint8_t *window, const uint32_t *winners, const uint32_t *ties,
                                                const float *dy, float *dconv, float *dx, float *dbias);
bf_status bf_cpu_flex_pool_max_backward_scatter_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                   const bf_bn_grad *bn, const uint8_t *window,
                                                   const uint32_t *winners, const uint32_t *ties, const float *y,
                                                   const float *dz, float *dconv, float *dx, float *dbias);
bf_status bf_cpu_flex_pool_max_backward_bn(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                           const bf_bn_grad *bn, const uint32_t *winners, const uint32_t *ties,
                                           const float *y, const float *dz, float *dconv, float *dbias);
bf_status bf_cpu_flex_pool_forward(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                   float *pooled, uint8_t *window);
bf_status bf_cpu_flex_pool_gather(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                  const uint8_t *window, float *pooled);
bf_status bf_cpu_flex_route_tally(bf_backend *b, int samples, size_t per_sample, const uint32_t *winners,
                                  const uint32_t *ties, uint32_t *element_counts, uint32_t *sample_counts);

/* ---- neuron_cpu.c ---- */
bf_status bf_cpu_neuron_forward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x, float *y,
                                float *charge, float *stats);
bf_status bf_cpu_neuron_backward(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x, const float *y,
                                 const float *charge, const float *dy, float *dx);
bf_status bf_cpu_neuron_forward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                   const float *xin, float *y, uint32_t *bits, float *stats);
bf_status bf_cpu_neuron_backward_bn(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                    const float *xin, const float *dy, float *dx);
bf_status bf_cpu_neuron_batchnorm_backward(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in,
                                           size_t n, const float *xin, const float *dy, float *dx, float *dgamma,
                                           float *dbeta);
bf_status bf_cpu_spikes_pack(bf_backend *b, const float *y, uint32_t *bits, size_t n);
bf_status bf_cpu_spikes_unpack(bf_backend *b, const uint32_t *bits, float *y, size_t n);

/* ---- image_ops_cpu.c ---- */
bf_status bf_cpu_image_u8_to_float(bf_backend *b, const uint8_t *src, float *dst, int n, int h, int w, const float *mean,
                                   const float *std);
bf_status bf_cpu_attack_step(bf_backend *b, const bf_attack_box *box, size_t n, size_t plane, const float *x0,
                             const float *d, int use_sign, float *x);

/* ---- divnorm_cpu.c ---- */
bf_status bf_cpu_divnorm_weights(bf_backend *b, int c, bf_oci_distance distance, const float *sigma, float *w);
bf_status bf_cpu_divnorm_weights_backward(bf_backend *b, int c, bf_oci_distance distance, const float *sigma, const float *w, const float *dw,
                                          float *dsigma);
bf_status bf_cpu_divnorm_apply(bf_backend *b, const float *x, const float *s, float *y, size_t n);
bf_status bf_cpu_divnorm_apply_backward(bf_backend *b, const float *x, const float *s, const float *dy, float *dx,
                                        float *ds, size_t n);

/* ---- dog_cpu.c ---- */
bf_status bf_cpu_channel_copy(bf_backend *b, int n, int hw, int count, const float *src, int src_c, int src_c0,
                             float *dst, int dst_c, int dst_c0);
bf_status bf_cpu_dog_kernels(bf_backend *b, int p, int k, int amp_paper, const float *sigma1, const float *sigma2_scale,
                             const float *scale, float *w, float *norms);
bf_status bf_cpu_dog_kernels_backward(bf_backend *b, int p, int k, int amp_paper, const float *sigma1,
                                      const float *sigma2_scale, const float *scale, const float *w, const float *norms,
                                      const float *dw, float *dsigma1, float *dsigma2_scale, float *dscale);

/* ---- local_conv_cpu.c ---- */
bf_status bf_cpu_local_forward(bf_backend *b, const bf_local_shape *s, const float *x, const float *w, float *y);
bf_status bf_cpu_local_backward_data(bf_backend *b, const bf_local_shape *s, const float *dy, const float *w, float *dx);
bf_status bf_cpu_local_backward_filter(bf_backend *b, const bf_local_shape *s, const float *x, const float *dy, float *dw);

/* ---- cirincione_cpu.c ---- */
bf_status bf_cpu_cirincione_kernels(bf_backend *b, int p, int k, const float *A, const float *rho, const float *sigma,
                                    const float *theta, const float *v, const float *w, float *g);
bf_status bf_cpu_cirincione_kernels_backward(bf_backend *b, int p, int k, const float *A, const float *rho,
                                             const float *sigma, const float *theta, const float *v, const float *w,
                                             const float *dg, float *dA, float *drho, float *dsigma, float *dtheta,
                                             float *dv, float *dw);
bf_status bf_cpu_cirincione_divide(bf_backend *b, const float *x, const float *s, const float *bias, float *y,
                                   size_t n);
bf_status bf_cpu_cirincione_divide_backward(bf_backend *b, const float *x, const float *s, const float *bias,
                                            const float *dy, float *dx, float *ds, float *dbias, size_t n);

#endif
