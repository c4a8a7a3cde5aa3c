/* flex_route.cuh - internal: the per-element expressions of the channel-wise max flex's backward
 * route, shared by flex_pool.cu's kernels and flex_slide.cuh's (private to each including file). */
#ifndef BIOFLEX_FLEX_ROUTE_CUH
#define BIOFLEX_FLEX_ROUTE_CUH

#include <stdint.h>

#include "bn_common.cuh" /* bn_apply_one, bn_dx_one */

namespace {

/* dconv of one element from its dy and bits (flex_max_backward's expressions): dy where the conv
 * won, dy * tie_share where it tied, else 0. */
__device__ __forceinline__ float routed(float gv, uint32_t win, uint32_t tie, unsigned bit, float tie_share) {
    return (win >> bit) & 1u ? ((tie >> bit) & 1u ? __fmul_rn(gv, tie_share) : gv) : 0.0f;
}

/* The batch-norm after the flex layer, for the route with BN (flex_pool_max_backward_scatter_bn):
 * bf_bn_grad as the kernels take it. */
struct bn_grad_dev {
    int relu;
    const float *mean, *invstd, *gamma, *beta, *coef;
    int c;
};

/* The batch-norm's dx of one element of channel ch from its output gradient dz and input yv:
 * batchnorm.cu's k_bn_dx<RELU> expressions (ops.h at bf_bn_grad). */
__device__ __forceinline__ float bn_grad_at(const bn_grad_dev &bn, int ch, float yv, float dz) {
    const float mu = bn.mean[ch], is = bn.invstd[ch], sc = __fmul_rn(bn.gamma[ch], is);
    const float g = bn.relu && !(bn_apply_one(yv, mu, sc, bn.beta[ch]) > 0.0f) ? 0.0f : dz;
    return bn_dx_one(yv, g, mu, is, sc, bn.coef[ch], bn.coef[bn.c + ch]);
}

}  // namespace

#endif
