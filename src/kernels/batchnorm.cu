/* batchnorm.cu - batch normalisation over (n, hw) per channel on the GPU, and the per-channel sum
 * used for convolution bias gradients (contracts in ops.h; the CPU twin is batchnorm_cpu.c).
 *
 * Custom kernels rather than cuDNN's (deprecated in cuDNN 9) batch-norm calls. Per-channel sums are
 * deterministic and taken in double:
 *   1. k_channel_partial: grid (c, chunks); block (ch, k) sums chunk k of the ch's n*hw values
 *      (a fixed strided subset per thread, then a fixed block tree) into partial[ch][k];
 *   2. a finalisation kernel, one thread per channel, adds partial[ch][0..chunks) in order and
 *      derives the per-channel coefficients;
 *   3. an apply kernel, one block per (n, c) plane, writes y or dx.
 * The chunk count depends on n*hw only (never on the device), so results repeat everywhere.
 * The batch variance is E[x^2] - E[x]^2 from double sums of float data, whose cancellation error
 * (~1e-16 * mean^2/var) is far below fp32 resolution for any activation; it saves a pass over x.
 * Synchronised batch-norm (batchnorm_sync_*) instead keeps the CPU's two passes (mean, then squared
 * deviations from the global mean): its sums cross ranks, and its CPU twin is batchnorm_sync_cpu.c. */
#include <math.h>

#include "bn_common.cuh" /* chunks_for, bn_apply_one, sum_chunks, k_bn_bwd_final, bn_dx_one */
#include "cuda_backend.h"

namespace { /* kernels and helpers are private to this file */

enum { RED_SUM = 0, RED_STATS = 1, RED_BWD = 2, RED_SQDEV = 3, RED_SYNC_BWD = 4, RED_BWD_RELU = 5 };

/* Threads per block for a per-plane kernel: the plane size rounded up to warps, 32..256. */
static unsigned plane_threads(long hw) {
    long t = (hw + 31) / 32 * 32;
    if (t > BF_CUDA_THREADS) t = BF_CUDA_THREADS;
    if (t < 32) t = 32;
    return (unsigned)t;
}

/* Per (channel, chunk) partial sums over the values of channel ch of a [n, c, hw] tensor:
 *   RED_SUM:   a0 = sum x
 *   RED_STATS: a0 = sum x, a1 = sum x^2
 *   RED_BWD:   a0 = sum dy, a1 = sum dy * xhat with xhat = (x - mean[ch]) * invstd[ch] (in float)
 *   RED_SQDEV: a0 = sum (x - m)^2 in double, m = stats[ch] / stats[c] (synchronised batch-norm)
 *   RED_SYNC_BWD: a0 = sum dy, a1 = sum dy * (x - mean[ch]) in double (as batchnorm_sync_cpu.c)
 *   RED_BWD_RELU: RED_BWD's sums of g = dy * 1[z > 0], z = (x - mean) * (gamma * invstd) + beta the
 *             batch-norm output (relu_backward's mask; batchnorm_relu_backward)
 * partial[(ch*chunks + k)*2 + {0,1}]. Value m of a channel (0 <= m < count = n*hw) is sample m/hw,
 * position m%hw; each thread walks its values without dividing in the loop. */
template <int MODE>
__global__ void k_channel_partial(const float *__restrict__ x, const float *__restrict__ dy,
                                  const float *__restrict__ mean, const float *__restrict__ invstd,
                                  const double *__restrict__ stats, const float *__restrict__ gamma,
                                  const float *__restrict__ beta, int c, unsigned hw, unsigned count,
                                  unsigned per_chunk, double *__restrict__ partial) {
    const int ch = blockIdx.x;
    const unsigned chunk = blockIdx.y, chunks = gridDim.y;
    const unsigned begin = chunk * per_chunk;
    const unsigned end = begin + per_chunk < count ? begin + per_chunk : count;
    float mu = 0.0f, is = 0.0f, sc = 0.0f, bt = 0.0f;
    if (MODE == RED_BWD || MODE == RED_SYNC_BWD || MODE == RED_BWD_RELU) mu = mean[ch];
    if (MODE == RED_BWD || MODE == RED_BWD_RELU) is = invstd[ch];
    if (MODE == RED_BWD_RELU) sc = __fmul_rn(gamma[ch], is), bt = beta[ch];
    const double dmean = MODE == RED_SQDEV ? stats[ch] / stats[c] : (double)mu;
    double a0 = 0.0, a1 = 0.0;
    unsigned m = begin + threadIdx.x;
    if (m < end) {
        unsigned i = m / hw, j = m - i * hw;
        const unsigned q = blockDim.x / hw, r = blockDim.x - q * hw;
        for (; m < end; m += blockDim.x) {
            const size_t idx = ((size_t)i * c + ch) * hw + j;
            if (MODE == RED_SUM) {
                a0 += (double)x[idx];
            } else if (MODE == RED_STATS) {
                const double v = (double)x[idx];
                a0 += v;
                a1 += v * v;
            } else if (MODE == RED_SQDEV) {
                const double d = (double)x[idx] - dmean;
                a0 += d * d;
            } else if (MODE == RED_SYNC_BWD) {
                const double g = (double)dy[idx];
                a0 += g;
                a1 += g * ((double)x[idx] - dmean);
            } else { /* RED_BWD, RED_BWD_RELU */
                const float xv = x[idx], d = dy[idx];
                const float g = MODE == RED_BWD_RELU ? (bn_apply_one(xv, mu, sc, bt) > 0.0f ? d : 0.0f) : d;
                const float xhat = __fmul_rn(__fsub_rn(xv, mu), is);
                a0 += (double)g;
                a1 += (double)g * (double)xhat;
            }
            j += r;
            i += q;
            if (j >= hw) {
                j -= hw;
                i++;
            }
        }
    }
    a0 = bf_block_sum(a0);
    if (MODE != RED_SUM && MODE != RED_SQDEV) a1 = bf_block_sum(a1);
    if (threadIdx.x == 0) {
        const size_t o = ((size_t)ch * chunks + chunk) * 2;
        partial[o] = a0;
        partial[o + 1] = a1;
    }
}

__global__ void k_channel_sum_final(const double *__restrict__ partial, unsigned chunks, int c, float *__restrict__ out) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s0, s1;
    sum_chunks(partial, ch, chunks, &s0, &s1);
    out[ch] = (float)s0;
}

__global__ void k_bn_eval_coef(const float *__restrict__ gamma, const float *__restrict__ running_var, float eps,
                               int c, float *__restrict__ scale_out) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const float invstd = (float)(1.0 / sqrt((double)running_var[ch] + (double)eps));
    scale_out[ch] = __fmul_rn(gamma[ch], invstd);
}

/* scale = gamma * the saved invstd, as k_bn_stats_final and k_sync_forward_coef computed it. */
__global__ void k_bn_saved_coef(const float *__restrict__ gamma, const float *__restrict__ save_invstd, int c,
                                float *__restrict__ scale_out) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    scale_out[ch] = __fmul_rn(gamma[ch], save_invstd[ch]);
}

/* The apply and dx kernels walk a [n, c, hw] tensor one way or the other (bn_launch picks):
 *   hw >= SMALL_PLANE: one block per (n, c) plane, grid-stride over planes, no division per element;
 *   smaller planes (a batch-norm after a linear layer has hw = 1) would leave most of such a block
 *   idle: a flat grid-stride loop over the elements instead, the channel from the element index. */
enum { SMALL_PLANE = 32 };

/* relu_forward's x < 0 ? 0 : x (a NaN passes), when RELU (batchnorm_relu_apply). */
template <bool RELU>
__device__ __forceinline__ float relu_if(float v) {
    return RELU && v < 0.0f ? 0.0f : v;
}

template <bool RELU>
__global__ void k_bn_apply(const float *__restrict__ x, float *__restrict__ y, const float *__restrict__ mean,
                           const float *__restrict__ scale, const float *__restrict__ beta, size_t planes, int c,
                           int hw) {
    if (hw < SMALL_PLANE) {
        const size_t total = planes * (size_t)hw;
        for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
            const int ch = (int)((i / (size_t)hw) % (size_t)c);
            y[i] = relu_if<RELU>(bn_apply_one(x[i], mean[ch], scale[ch], beta[ch]));
        }
        return;
    }
    for (size_t p = blockIdx.x; p < planes; p += gridDim.x) {
        const int ch = (int)(p % (size_t)c);
        const float mu = mean[ch], sc = scale[ch], bt = beta[ch];
        const float *xp = x + p * (size_t)hw;
        float *yp = y + p * (size_t)hw;
        for (int j = threadIdx.x; j < hw; j += blockDim.x) yp[j] = relu_if<RELU>(bn_apply_one(xp[j], mu, sc, bt));
    }
}

/* dx from dy, or with RELU from dy * 1[z > 0], z the batch-norm output computed again from x (beta
 * read only then). dy and dx are not __restrict__: synchronised batch-norm may write dx over dy
 * (ops.h at batchnorm_sync_backward_apply); each element's dy is read before its dx is stored. */
template <bool RELU>
__global__ void k_bn_dx(const float *__restrict__ x, const float *dy, const float *__restrict__ gamma,
                        const float *__restrict__ beta, const float *__restrict__ mean, const float *__restrict__ invstd,
                        const float *__restrict__ mean_dy, const float *__restrict__ mean_dy_xhat,
                        float *dx, size_t planes, int c, int hw) {
    if (hw < SMALL_PLANE) {
        const size_t total = planes * (size_t)hw;
        for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
            const int ch = (int)((i / (size_t)hw) % (size_t)c);
            const float is = invstd[ch], mu = mean[ch], sc = __fmul_rn(gamma[ch], is), xv = x[i];
            const float g = RELU && !(bn_apply_one(xv, mu, sc, beta[ch]) > 0.0f) ? 0.0f : dy[i];
            dx[i] = bn_dx_one(xv, g, mu, is, sc, mean_dy[ch], mean_dy_xhat[ch]);
        }
        return;
    }
    for (size_t p = blockIdx.x; p < planes; p += gridDim.x) {
        const int ch = (int)(p % (size_t)c);
        const float mu = mean[ch], is = invstd[ch], mdy = mean_dy[ch], mdx = mean_dy_xhat[ch];
        const float sc = __fmul_rn(gamma[ch], is), bt = RELU ? beta[ch] : 0.0f;
        const float *xp = x + p * (size_t)hw, *dyp = dy + p * (size_t)hw;
        float *dxp = dx + p * (size_t)hw;
        for (int j = threadIdx.x; j < hw; j += blockDim.x) {
            const float xv = xp[j], g = RELU && !(bn_apply_one(xv, mu, sc, bt) > 0.0f) ? 0.0f : dyp[j];
            dxp[j] = bn_dx_one(xv, g, mu, is, sc, mdy, mdx);
        }
    }
}

/* ---- synchronised batch-norm: per-channel steps around the all-reduce (batchnorm_sync_cpu.c's twin) ----
 * Rounded intrinsics where the CPU rounds each operation, so equal sums give equal bits. */

/* stats[ch] = the channel's sum (ch < c), stats[c] = this rank's count; c + 1 threads. */
__global__ void k_sync_sums_final(const double *__restrict__ partial, unsigned chunks, int c, double count,
                                  double *__restrict__ stats) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch > c) return;
    if (ch == c) {
        stats[c] = count;
        return;
    }
    double s0, s1;
    sum_chunks(partial, ch, chunks, &s0, &s1);
    stats[ch] = s0;
}

__global__ void k_sync_sqdev_final(const double *__restrict__ partial, unsigned chunks, int c, double *__restrict__ sq) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s0, s1;
    sum_chunks(partial, ch, chunks, &s0, &s1);
    sq[ch] = s0;
}

/* The global batch's statistics from the all-reduced sums: apply coefficients, saved values and
 * the running statistics (count >= 2 always holds under data parallelism: 2+ ranks of 1+ samples).
 * copies: bf_bn_copies, the copies of the batch the running variance's correction counts. */
__global__ void k_sync_forward_coef(const double *__restrict__ stats, const double *__restrict__ sq, int c, float eps,
                                    float momentum, float var_floor, double copies, const float *__restrict__ gamma, float *__restrict__ mean_out,
                                    float *__restrict__ scale_out, float *__restrict__ save_mean,
                                    float *__restrict__ save_invstd, float *__restrict__ running_mean,
                                    float *__restrict__ running_var) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const double count = stats[c];
    const double mean = stats[ch] / count;
    const double var = sq[ch] / count; /* biased: what the batch is normalised with */
    const float invstd = (float)(1.0 / sqrt(__dadd_rn(var, (double)eps)));
    const double mom = (double)momentum, keep = 1.0 - mom;
    mean_out[ch] = (float)mean;
    scale_out[ch] = __fmul_rn(gamma[ch], invstd);
    if (save_mean) save_mean[ch] = (float)mean;
    if (save_invstd) save_invstd[ch] = invstd;
    if (running_mean) running_mean[ch] = (float)__dadd_rn(__dmul_rn(keep, (double)running_mean[ch]), __dmul_rn(mom, mean));
    const double values = __dmul_rn(count, copies);
    if (running_var && values >= 2.0) { /* the CPU refuses fewer than 2; the device cannot report it */
        const float updated = (float)__dadd_rn(__dmul_rn(keep, (double)running_var[ch]),
                                               __dmul_rn(__dmul_rn(mom, var), values / (values - 1.0)));
        running_var[ch] = updated < var_floor ? var_floor : updated; /* [model] bn_var_floor; NaN stays NaN */
    }
}

/* sums[ch] = sum dy, sums[c+ch] = invstd * sum dy (x - mean), sums[2c] = count; this rank's dgamma/dbeta. */
__global__ void k_sync_backward_final(const double *__restrict__ partial, unsigned chunks, int c, double count,
                                      const float *__restrict__ invstd, double *__restrict__ sums,
                                      float *__restrict__ dgamma, float *__restrict__ dbeta) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s0, s1;
    sum_chunks(partial, ch, chunks, &s0, &s1);
    const double dy_xhat = __dmul_rn(s1, (double)invstd[ch]);
    sums[ch] = s0;
    sums[c + ch] = dy_xhat;
    if (ch == 0) sums[2 * c] = count;
    if (dbeta) dbeta[ch] = (float)s0;
    if (dgamma) dgamma[ch] = (float)dy_xhat;
}

__global__ void k_sync_backward_coef(const double *__restrict__ sums, int c, float *__restrict__ mean_dy,
                                     float *__restrict__ mean_dy_xhat) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    const double count = sums[2 * c];
    mean_dy[ch] = (float)(sums[ch] / count);
    mean_dy_xhat[ch] = (float)(sums[c + ch] / count);
}

/* ---- host side ---- */

static bf_status check_bn(const bf_bn_shape *s, const char *op) {
    if (!s) return bf_error(BF_ERR_ARG, "%s: NULL shape", op);
    if (s->n <= 0 || s->c <= 0 || s->hw <= 0 || !(s->eps > 0.0f))
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d c=%d hw=%d eps=%g", op, s->n, s->c, s->hw, s->eps);
    if ((size_t)s->n * (size_t)s->hw > (size_t)INT32_MAX)
        return bf_error(BF_ERR_ARG, "%s: %d x %d values per channel is more than supported (2^31)", op, s->n, s->hw);
    return BF_OK;
}

/* Launches the partial sums of one channel reduction; returns the partial buffer (in scratch, at
 * offset 0) and the chunk count. `extra_floats` more floats are reserved after the partials. */
template <int MODE>
static bf_status channel_partials(bf_cuda_impl *im, int n, int c, long hw, const float *x, const float *dy,
                                  const float *mean, const float *invstd, size_t extra_floats, double **partial_out,
                                  float **extra_out, unsigned *chunks_out, const double *stats = NULL,
                                  const float *gamma = NULL, const float *beta = NULL) {
    const size_t count = (size_t)n * (size_t)hw;
    const unsigned chunks = chunks_for(count);
    const unsigned per_chunk = (unsigned)bf_cuda_div_up(count, chunks);
    const size_t partial_doubles = (size_t)c * chunks * 2;
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, partial_doubles * sizeof(double) + extra_floats * sizeof(float), &scratch));
    double *partial = (double *)scratch;
    dim3 grid((unsigned)c, chunks);
    k_channel_partial<MODE><<<grid, BF_CUDA_THREADS, 0, im->stream>>>(x, dy, mean, invstd, stats, gamma, beta, c,
                                                                      (unsigned)hw, (unsigned)count, per_chunk, partial);
    BF_LAUNCH_CHECK("k_channel_partial");
    *partial_out = partial;
    if (extra_out) *extra_out = (float *)(partial + partial_doubles);
    *chunks_out = chunks;
    return BF_OK;
}

static unsigned plane_grid(const bf_cuda_impl *im, size_t planes) {
    size_t cap = (size_t)(im->sm_count > 0 ? im->sm_count : 80) * 32;
    return (unsigned)(planes < cap ? planes : cap);
}

/* Launch shape of k_bn_apply / k_bn_dx: a block per plane, or for small planes a flat grid. */
static dim3 bn_grid(const bf_cuda_impl *im, size_t planes, int hw) {
    return hw < SMALL_PLANE ? dim3(bf_cuda_grid(im, planes * (size_t)hw, BF_CUDA_THREADS)) : dim3(plane_grid(im, planes));
}
static dim3 bn_threads(int hw) { return dim3(hw < SMALL_PLANE ? BF_CUDA_THREADS : plane_threads(hw)); }

}  // namespace

extern "C" bf_status bf_cuda_channel_sum(bf_cuda_impl *im, int n, int c, long hw, const float *x, float *out) {
    if (n <= 0 || c <= 0 || hw <= 0 || (size_t)n * (size_t)hw > (size_t)INT32_MAX)
        return bf_error(BF_ERR_ARG, "channel sum: invalid shape n=%d c=%d hw=%ld", n, c, hw);
    double *partial;
    unsigned chunks;
    BF_TRY(channel_partials<RED_SUM>(im, n, c, hw, x, NULL, NULL, NULL, 0, &partial, NULL, &chunks));
    k_channel_sum_final<<<(unsigned)bf_cuda_div_up((size_t)c, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, c, out);
    BF_LAUNCH_CHECK("k_channel_sum_final");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_forward_train(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                     const float *gamma, const float *beta, float *y,
                                                     float *save_mean, float *save_invstd,
                                                     float *running_mean, float *running_var) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_forward_train"));
    if (!x || (y && (!gamma || !beta))) return bf_error(BF_ERR_ARG, "batchnorm_forward_train: NULL input");
    const double count = (double)s->n * s->hw, copies = count * bf_bn_copies(s);
    /* PyTorch refuses to train with one value per channel: the unbiased variance is undefined. */
    if (copies < 2)
        return bf_error(BF_ERR_ARG, "batchnorm: training needs more than one value per channel (n=%d hw=%d)",
                        s->n, s->hw);
    double *partial;
    float *coef; /* mean[c], scale[c] */
    unsigned chunks;
    BF_TRY(channel_partials<RED_STATS>(im, s->n, s->c, s->hw, x, NULL, NULL, NULL, 2 * (size_t)s->c, &partial,
                                       &coef, &chunks));
    float *mean = coef, *scale = coef + s->c;
    k_bn_stats_final<<<(unsigned)bf_cuda_div_up((size_t)s->c, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, s->c, count, copies / (copies - 1.0), s->eps, s->momentum, s->var_floor, gamma, mean,
        gamma ? scale : NULL,
        save_mean, save_invstd, running_mean, running_var);
    BF_LAUNCH_CHECK("k_bn_stats_final");
    if (!y) return BF_OK; /* the statistics alone (ops.h) */
    const size_t planes = (size_t)s->n * s->c;
    k_bn_apply<false><<<bn_grid(im, planes, s->hw), bn_threads(s->hw), 0, im->stream>>>(x, y, mean, scale, beta, planes,
                                                                                 s->c, s->hw);
    BF_LAUNCH_CHECK("k_bn_apply");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_forward_eval(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                    const float *gamma, const float *beta,
                                                    const float *running_mean, const float *running_var, float *y) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_forward_eval"));
    if (!x || !gamma || !beta || !running_mean || !running_var || !y)
        return bf_error(BF_ERR_ARG, "batchnorm_forward_eval: NULL input or output");
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, (size_t)s->c * sizeof(float), &scratch));
    float *scale = (float *)scratch;
    k_bn_eval_coef<<<(unsigned)bf_cuda_div_up((size_t)s->c, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        gamma, running_var, s->eps, s->c, scale);
    BF_LAUNCH_CHECK("k_bn_eval_coef");
    const size_t planes = (size_t)s->n * s->c;
    k_bn_apply<false><<<bn_grid(im, planes, s->hw), bn_threads(s->hw), 0, im->stream>>>(x, y, running_mean, scale, beta,
                                                                                 planes, s->c, s->hw);
    BF_LAUNCH_CHECK("k_bn_apply");
    return BF_OK;
}

/* batchnorm_backward, or with RELU batchnorm_relu_backward (the mask applied to dy as it is read,
 * in both passes): per-channel partial sums, their means, then dx. */
template <int RED, bool RELU>
static bf_status bn_backward(bf_backend *b, const bf_bn_shape *s, const char *op, const float *x, const float *dy,
                             const float *gamma, const float *beta, const float *save_mean, const float *save_invstd,
                             float *dx, float *dgamma, float *dbeta) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, op));
    if (!x || !dy || !gamma || (RELU && !beta) || !save_mean || !save_invstd || !dx)
        return bf_error(BF_ERR_ARG, "%s: NULL input or output", op);
    const double count = (double)s->n * s->hw;
    double *partial;
    float *coef; /* mean_dy[c], mean_dy_xhat[c] */
    unsigned chunks;
    BF_TRY(channel_partials<RED>(im, s->n, s->c, s->hw, x, dy, save_mean, save_invstd, 2 * (size_t)s->c, &partial,
                                 &coef, &chunks, NULL, gamma, beta));
    float *mean_dy = coef, *mean_dy_xhat = coef + s->c;
    k_bn_bwd_final<<<(unsigned)bf_cuda_div_up((size_t)s->c, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, s->c, count, dgamma, dbeta, mean_dy, mean_dy_xhat);
    BF_LAUNCH_CHECK("k_bn_bwd_final");
    const size_t planes = (size_t)s->n * s->c;
    k_bn_dx<RELU><<<bn_grid(im, planes, s->hw), bn_threads(s->hw), 0, im->stream>>>(
        x, dy, gamma, beta, save_mean, save_invstd, mean_dy, mean_dy_xhat, dx, planes, s->c, s->hw);
    BF_LAUNCH_CHECK("k_bn_dx");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_backward(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                const float *dy, const float *gamma, const float *save_mean,
                                                const float *save_invstd, float *dx, float *dgamma, float *dbeta) {
    return bn_backward<RED_BWD, false>(b, s, "batchnorm_backward", x, dy, gamma, NULL, save_mean, save_invstd, dx,
                                       dgamma, dbeta);
}

extern "C" bf_status bf_cuda_batchnorm_backward_sums(bf_backend *b, const bf_bn_shape *s, int relu, const float *x,
                                                     const float *dy, const float *gamma, const float *beta,
                                                     const float *save_mean, const float *save_invstd, float *dgamma,
                                                     float *dbeta, float *coef) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_backward_sums"));
    if (!x || !dy || !gamma || (relu && !beta) || !save_mean || !save_invstd || !coef)
        return bf_error(BF_ERR_ARG, "batchnorm_backward_sums: NULL input or output");
    double *partial;
    unsigned chunks;
    if (relu)
        BF_TRY(channel_partials<RED_BWD_RELU>(im, s->n, s->c, s->hw, x, dy, save_mean, save_invstd, 0, &partial, NULL,
                                              &chunks, NULL, gamma, beta));
    else
        BF_TRY(channel_partials<RED_BWD>(im, s->n, s->c, s->hw, x, dy, save_mean, save_invstd, 0, &partial, NULL,
                                         &chunks, NULL, gamma, beta));
    k_bn_bwd_final<<<(unsigned)bf_cuda_div_up((size_t)s->c, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, s->c, (double)s->n * s->hw, dgamma, dbeta, coef, coef + s->c);
    BF_LAUNCH_CHECK("k_bn_bwd_final");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_relu_backward(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                                     const float *gamma, const float *beta, const float *save_mean,
                                                     const float *save_invstd, float *dx, float *dgamma, float *dbeta) {
    return bn_backward<RED_BWD_RELU, true>(b, s, "batchnorm_relu_backward", x, dy, gamma, beta, save_mean, save_invstd,
                                           dx, dgamma, dbeta);
}

/* y = (x - mean) * (gamma * invstd) + beta from the saved statistics, with RELU then relu'd. */
template <bool RELU>
static bf_status bn_apply_saved(bf_backend *b, const bf_bn_shape *s, const char *op, const float *x, const float *gamma,
                                const float *beta, const float *save_mean, const float *save_invstd, float *y) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, op));
    if (!x || !gamma || !beta || !save_mean || !save_invstd || !y) return bf_error(BF_ERR_ARG, "%s: NULL input or output", op);
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, (size_t)s->c * sizeof(float), &scratch));
    float *scale = (float *)scratch;
    k_bn_saved_coef<<<(unsigned)bf_cuda_div_up((size_t)s->c, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        gamma, save_invstd, s->c, scale);
    BF_LAUNCH_CHECK("k_bn_saved_coef");
    const size_t planes = (size_t)s->n * s->c;
    k_bn_apply<RELU><<<bn_grid(im, planes, s->hw), bn_threads(s->hw), 0, im->stream>>>(x, y, save_mean, scale, beta,
                                                                                       planes, s->c, s->hw);
    BF_LAUNCH_CHECK("k_bn_apply");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_forward_saved(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                     const float *gamma, const float *beta, const float *save_mean,
                                                     const float *save_invstd, float *y) {
    return bn_apply_saved<false>(b, s, "batchnorm_forward_saved", x, gamma, beta, save_mean, save_invstd, y);
}

extern "C" bf_status bf_cuda_batchnorm_relu_apply(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                  const float *gamma, const float *beta, const float *save_mean,
                                                  const float *save_invstd, float *y) {
    return bn_apply_saved<true>(b, s, "batchnorm_relu_apply", x, gamma, beta, save_mean, save_invstd, y);
}

/* ---- synchronised batch-norm (contracts in ops.h) ---- */

static unsigned channel_blocks(size_t threads) { return (unsigned)bf_cuda_div_up(threads, BF_CUDA_THREADS); }

extern "C" bf_status bf_cuda_batchnorm_sync_sums(bf_backend *b, const bf_bn_shape *s, const float *x, double *stats) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_sync_sums"));
    if (!x || !stats) return bf_error(BF_ERR_ARG, "batchnorm_sync_sums: NULL input or output");
    double *partial;
    unsigned chunks;
    BF_TRY(channel_partials<RED_SUM>(im, s->n, s->c, s->hw, x, NULL, NULL, NULL, 0, &partial, NULL, &chunks));
    k_sync_sums_final<<<channel_blocks((size_t)s->c + 1), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, s->c, (double)s->n * s->hw, stats);
    BF_LAUNCH_CHECK("k_sync_sums_final");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_sync_sqdev(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                  const double *stats, double *sq) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_sync_sqdev"));
    if (!x || !stats || !sq) return bf_error(BF_ERR_ARG, "batchnorm_sync_sqdev: NULL input or output");
    double *partial;
    unsigned chunks;
    BF_TRY(channel_partials<RED_SQDEV>(im, s->n, s->c, s->hw, x, NULL, NULL, NULL, 0, &partial, NULL, &chunks, stats));
    k_sync_sqdev_final<<<channel_blocks((size_t)s->c), BF_CUDA_THREADS, 0, im->stream>>>(partial, chunks, s->c, sq);
    BF_LAUNCH_CHECK("k_sync_sqdev_final");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_sync_forward_apply(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                          const double *stats, const double *sq, const float *gamma,
                                                          const float *beta, float *y, float *save_mean,
                                                          float *save_invstd, float *running_mean,
                                                          float *running_var) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_sync_forward_apply"));
    if (!x || !stats || !sq || !gamma || !beta)
        return bf_error(BF_ERR_ARG, "batchnorm_sync_forward_apply: NULL input");
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, 2 * (size_t)s->c * sizeof(float), &scratch));
    float *mean = (float *)scratch, *scale = mean + s->c;
    k_sync_forward_coef<<<channel_blocks((size_t)s->c), BF_CUDA_THREADS, 0, im->stream>>>(
        stats, sq, s->c, s->eps, s->momentum, s->var_floor, bf_bn_copies(s), gamma, mean, scale, save_mean, save_invstd, running_mean,
        running_var);
    BF_LAUNCH_CHECK("k_sync_forward_coef");
    if (!y) return BF_OK; /* the statistics alone (ops.h) */
    const size_t planes = (size_t)s->n * s->c;
    k_bn_apply<false><<<bn_grid(im, planes, s->hw), bn_threads(s->hw), 0, im->stream>>>(x, y, mean, scale, beta, planes,
                                                                                 s->c, s->hw);
    BF_LAUNCH_CHECK("k_bn_apply");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_sync_backward_sums(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                          const float *dy, const float *save_mean,
                                                          const float *save_invstd, double *sums, float *dgamma,
                                                          float *dbeta) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_sync_backward_sums"));
    if (!x || !dy || !save_mean || !save_invstd || !sums)
        return bf_error(BF_ERR_ARG, "batchnorm_sync_backward_sums: NULL input or output");
    double *partial;
    unsigned chunks;
    BF_TRY(channel_partials<RED_SYNC_BWD>(im, s->n, s->c, s->hw, x, dy, save_mean, NULL, 0, &partial, NULL, &chunks));
    k_sync_backward_final<<<channel_blocks((size_t)s->c), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, s->c, (double)s->n * s->hw, save_invstd, sums, dgamma, dbeta);
    BF_LAUNCH_CHECK("k_sync_backward_final");
    return BF_OK;
}

extern "C" bf_status bf_cuda_batchnorm_sync_backward_apply(bf_backend *b, const bf_bn_shape *s, const float *x,
                                                           const float *dy, const float *gamma,
                                                           const float *save_mean, const float *save_invstd,
                                                           const double *sums, float *dx) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_bn(s, "batchnorm_sync_backward_apply"));
    if (!x || !dy || !gamma || !save_mean || !save_invstd || !sums || !dx)
        return bf_error(BF_ERR_ARG, "batchnorm_sync_backward_apply: NULL input or output");
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, 2 * (size_t)s->c * sizeof(float), &scratch));
    float *mean_dy = (float *)scratch, *mean_dy_xhat = mean_dy + s->c;
    k_sync_backward_coef<<<channel_blocks((size_t)s->c), BF_CUDA_THREADS, 0, im->stream>>>(sums, s->c, mean_dy,
                                                                                          mean_dy_xhat);
    BF_LAUNCH_CHECK("k_sync_backward_coef");
    const size_t planes = (size_t)s->n * s->c;
    k_bn_dx<false><<<bn_grid(im, planes, s->hw), bn_threads(s->hw), 0, im->stream>>>(
        x, dy, gamma, NULL, save_mean, save_invstd, mean_dy, mean_dy_xhat, dx, planes, s->c, s->hw);
    BF_LAUNCH_CHECK("k_bn_dx");
    return BF_OK;
}
