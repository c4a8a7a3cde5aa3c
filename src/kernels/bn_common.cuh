/* bn_common.cuh - internal: what batchnorm.cu and neuron_bn_backward.cu share: the chunking of a
 * channel's values for the per-channel sums, the chunks' partials added in order, the backward's
 * per-channel coefficients, and the per-element expressions (rounded as batchnorm_cpu.c rounds
 * them). Private to each including file. */
#ifndef BIOFLEX_BN_COMMON_CUH
#define BIOFLEX_BN_COMMON_CUH

#include "cuda_backend.h"

namespace {

enum { CHUNK_TARGET = 8192, CHUNK_MAX = 128 };

/* Chunks per channel for m values per channel: about CHUNK_TARGET values each, at most CHUNK_MAX. */
static unsigned chunks_for(size_t m) {
    size_t k = bf_cuda_div_up(m, CHUNK_TARGET);
    if (k > CHUNK_MAX) k = CHUNK_MAX;
    if (k < 1) k = 1;
    return (unsigned)k;
}

/* y = (x - mean[ch]) * scale[ch] + beta[ch]. Rounded operations (no FMA contraction) give the
 * CPU's result bit for bit from equal inputs. */
__device__ __forceinline__ float bn_apply_one(float x, float mu, float sc, float bt) {
    return __fadd_rn(__fmul_rn(__fsub_rn(x, mu), sc), bt);
}

__device__ __forceinline__ void sum_chunks(const double *partial, int ch, unsigned chunks, double *s0, double *s1) {
    double a0 = 0.0, a1 = 0.0;
    const double *p = partial + (size_t)ch * chunks * 2;
    for (unsigned k = 0; k < chunks; k++) {
        a0 += p[2 * k];
        a1 += p[2 * k + 1];
    }
    *s0 = a0;
    *s1 = a1;
}

/* Batch statistics from the partials of k_channel_partial<RED_STATS> (or flex_pool.cu's forward),
 * running-statistics update, and the apply coefficients mean_out/scale_out (nullable, with gamma:
 * the statistics alone). unbias: the running variance's correction, copies / (copies - 1)
 * (bf_bn_copies); var_floor: the least running variance kept (bf_bn_shape). */
__global__ void k_bn_stats_final(const double *__restrict__ partial, unsigned chunks, int c, double count,
                                 double unbias, float eps, float momentum, float var_floor, const float *__restrict__ gamma,
                                 float *__restrict__ mean_out, float *__restrict__ scale_out,
                                 float *__restrict__ save_mean, float *__restrict__ save_invstd,
                                 float *__restrict__ running_mean, float *__restrict__ running_var) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s0, s1;
    sum_chunks(partial, ch, chunks, &s0, &s1);
    const double mean = s0 / count;
    double var = s1 / count - mean * mean; /* biased: what the batch is normalised with */
    if (var < 0.0) var = 0.0;
    const float invstd = (float)(1.0 / sqrt(var + (double)eps));
    const double mom = (double)momentum;
    if (mean_out) mean_out[ch] = (float)mean;
    if (scale_out) scale_out[ch] = __fmul_rn(gamma[ch], invstd);
    if (save_mean) save_mean[ch] = (float)mean;
    if (save_invstd) save_invstd[ch] = invstd;
    if (running_mean) running_mean[ch] = (float)((1.0 - mom) * running_mean[ch] + mom * mean);
    if (running_var) { /* raised to the floor ([model] bn_var_floor); NaN stays NaN */
        const float updated = (float)((1.0 - mom) * running_var[ch] + mom * var * unbias);
        running_var[ch] = updated < var_floor ? var_floor : updated;
    }
}

/* dgamma, dbeta (nullable) and the per-channel means of dy and dy * xhat from the partials of
 * k_channel_partial<RED_BWD> (or its twins); count: the values per channel. */
__global__ void k_bn_bwd_final(const double *__restrict__ partial, unsigned chunks, int c, double count,
                               float *__restrict__ dgamma, float *__restrict__ dbeta,
                               float *__restrict__ mean_dy, float *__restrict__ mean_dy_xhat) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double s0, s1;
    sum_chunks(partial, ch, chunks, &s0, &s1);
    if (dbeta) dbeta[ch] = (float)s0;
    if (dgamma) dgamma[ch] = (float)s1;
    mean_dy[ch] = (float)(s0 / count);
    mean_dy_xhat[ch] = (float)(s1 / count);
}

/* dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)), as batchnorm_cpu.c evaluates it. */
__device__ __forceinline__ float bn_dx_one(float x, float dy, float mu, float is, float sc, float mdy, float mdx) {
    const float xhat = __fmul_rn(__fsub_rn(x, mu), is);
    return __fmul_rn(sc, __fsub_rn(__fsub_rn(dy, mdy), __fmul_rn(xhat, mdx)));
}

}  // namespace

#endif
