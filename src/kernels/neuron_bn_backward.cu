/* neuron_bn_backward.cu - neuron_batchnorm_backward on the GPU (contract in ops.h; the CPU twin in
 * neuron_cpu.c runs neuron_backward_bn and batchnorm_backward in turn): a LIF/IF layer's backward
 * through time and the backward of the batch-norm that feeds it, without ever storing the neuron's
 * gradient dX (the batch-norm output's):
 *   1. k_neuron_bn_sums, grid (channel, chunk) as batchnorm.cu's k_channel_partial: a thread takes
 *      one element of a step, computes its T charges again from xin (k_neuron_backward_bn's
 *      arithmetic: neuron_common.cuh), walks the BPTT back and adds each step's dX and dX * xhat
 *      (xhat rounded in float, as batchnorm_backward's RED_BWD) to its double sums; a fixed block
 *      tree, then partial[channel][chunk];
 *   2. k_bn_bwd_final (bn_common.cuh): dgamma, dbeta, and the means of dX and dX * xhat;
 *   3. k_neuron_bn_dx, one thread per element (V consecutive ones): the charges and the BPTT
 *      again, and dx = bn_dx_one(xin, dX) at every step (with a shared input, of the steps' sum).
 * Each element-step costs 8 bytes read in pass 1 and 12 moved in pass 3, against 32 for the
 * stored dX (the neuron's backward writes it, the batch-norm's two passes read it and xin again):
 * on PlasticFlex's VGG-11 at T = 4, batch 256, some 1.9 GB less per training step. A shared input
 * (one step of xin read at every step) moves as many bytes either way: dy is read twice instead of
 * dX written once and read twice.
 * Charges, spikes and dX have the bits of neuron_backward_bn; the sums are taken in another order
 * than batchnorm_backward's (both deterministic: the grid depends on the sizes only), so dx,
 * dgamma and dbeta agree with the CPU to rounding. */
#include "bn_common.cuh"      /* chunks_for, k_bn_bwd_final, bn_dx_one */
#include "cuda_backend.h"
#include "neuron_check.h"
#include "neuron_common.cuh"  /* neuron_consts, lif_step, bptt_step, bn_input, channels_of, launch helpers */
#include "require.h"
#include "vector_access.cuh"  /* fvec, load_vec, store_vec */

namespace { /* kernels and helpers are private to this file */

/* Pass 1. Values m = 0 .. count-1 of channel ch are the step's elements (sample m / hw, position
 * m % hw); block (ch, chunk) takes [chunk * per_chunk, ...) of them, a thread every blockDim.x-th. */
template <int OP, int TMAX>
__global__ void k_neuron_bn_sums(const float *__restrict__ xin, bn_input bn, const float *__restrict__ dy, size_t n,
                                 neuron_consts c, unsigned count, unsigned per_chunk, double *__restrict__ partial) {
    const int ch = (int)blockIdx.x;
    const unsigned chunk = blockIdx.y, begin = chunk * per_chunk;
    const unsigned end = begin + per_chunk < count ? begin + per_chunk : count;
    const float mu = bn.mean[ch], is = bn.invstd[ch], sc = __fmul_rn(bn.gamma[ch], is), bt = bn.beta[ch];
    const unsigned hw = (unsigned)bn.hw;
    double a0 = 0.0, a1 = 0.0;
    for (unsigned m = begin + threadIdx.x; m < end; m += blockDim.x) {
        const unsigned i = m / hw, j = m - i * hw;
        const size_t e = ((size_t)i * (size_t)bn.c + (size_t)ch) * hw + j;
        float dv = 0.0f, h[TMAX][1], xr[TMAX][1];
        charges_again<OP, 1, TMAX>(c, xin, n, e, &mu, &sc, &bt, h, xr);
        float sum = 0.0f;
#pragma unroll
        for (int t = TMAX - 1; t >= 0; t--) {
            if (t >= c.T) continue;
            const float d = bptt_step<OP>(c, h[t][0], dy[(size_t)t * n + e], dv);
            if (c.shared) {
                sum = t == c.T - 1 ? d : __fadd_rn(sum, d);
                continue;
            }
            const float xhat = __fmul_rn(__fsub_rn(xr[t][0], mu), is);
            a0 += (double)d;
            a1 += (double)d * (double)xhat;
        }
        if (c.shared) {
            const float xhat = __fmul_rn(__fsub_rn(xr[0][0], mu), is);
            a0 += (double)sum;
            a1 += (double)sum * (double)xhat;
        }
    }
    a0 = bf_block_sum(a0);
    a1 = bf_block_sum(a1);
    if (threadIdx.x == 0) {
        const size_t o = ((size_t)ch * gridDim.y + chunk) * 2;
        partial[o] = a0;
        partial[o + 1] = a1;
    }
}

/* Pass 3: V consecutive elements of a step per thread, as k_neuron_backward_bn, and dx from each
 * step's dX (or the steps' sum) with the channel's means of pass 2. */
template <int OP, int V, int TMAX>
__global__ void k_neuron_bn_dx(const float *__restrict__ xin, bn_input bn, const float *__restrict__ dy,
                               const float *__restrict__ mean_dy, const float *__restrict__ mean_dy_xhat,
                               float *__restrict__ dx, size_t n, neuron_consts c) {
    GRID_STRIDE(iv, n / V) {
        const size_t i0 = iv * V;
        unsigned chs[V];
        channels_of<V>(bn, i0, chs);
        float mu[V], is[V], sc[V], bt[V], mdy[V], mdx[V], dv[V], h[TMAX][V], xr[TMAX][V];
#pragma unroll
        for (int k = 0; k < V; k++) {
            mu[k] = bn.mean[chs[k]];
            is[k] = bn.invstd[chs[k]];
            sc[k] = __fmul_rn(bn.gamma[chs[k]], is[k]);
            bt[k] = bn.beta[chs[k]];
            mdy[k] = mean_dy[chs[k]];
            mdx[k] = mean_dy_xhat[chs[k]];
            dv[k] = 0.0f;
        }
        charges_again<OP, V, TMAX>(c, xin, n, i0, mu, sc, bt, h, xr);
        fvec<V> sum;
#pragma unroll
        for (int k = 0; k < V; k++) sum.v[k] = 0.0f;
#pragma unroll
        for (int t = TMAX - 1; t >= 0; t--) {
            if (t >= c.T) continue;
            const size_t idx = (size_t)t * n + i0;
            const fvec<V> gy = load_vec<V>(dy + idx);
            fvec<V> d;
#pragma unroll
            for (int k = 0; k < V; k++) d.v[k] = bptt_step<OP>(c, h[t][k], gy.v[k], dv[k]);
            if (c.shared) {
#pragma unroll
                for (int k = 0; k < V; k++) sum.v[k] = t == c.T - 1 ? d.v[k] : __fadd_rn(sum.v[k], d.v[k]);
                continue;
            }
#pragma unroll
            for (int k = 0; k < V; k++) d.v[k] = bn_dx_one(xr[t][k], d.v[k], mu[k], is[k], sc[k], mdy[k], mdx[k]);
            store_vec<V>(dx + idx, d);
        }
        if (c.shared) {
#pragma unroll
            for (int k = 0; k < V; k++) sum.v[k] = bn_dx_one(xr[0][k], sum.v[k], mu[k], is[k], sc[k], mdy[k], mdx[k]);
            store_vec<V>(dx + i0, sum);
        }
    }
}

/* The three passes for one reset mode and TMAX (the smallest of 4, 8, 16, 32 that holds T); pass 3
 * takes 16-byte vectors (v = 4) up to TMAX 4 only: 32 floats of charges and inputs a thread. */
template <int OP, int TMAX>
bf_status run_passes(bf_cuda_impl *im, int v, const float *xin, const bn_input &bn, const float *dy, float *dx,
                     float *dgamma, float *dbeta, size_t n, const neuron_consts &c) {
    const size_t count = n / (size_t)bn.c; /* a channel's elements in one step */
    const unsigned chunks = chunks_for(count), per_chunk = (unsigned)bf_cuda_div_up(count, chunks);
    const size_t partial_doubles = (size_t)bn.c * chunks * 2;
    void *scratch;
    BF_TRY(bf_cuda_scratch(im, partial_doubles * sizeof(double) + 2 * (size_t)bn.c * sizeof(float), &scratch));
    double *partial = (double *)scratch;
    float *mean_dy = (float *)(partial + partial_doubles), *mean_dy_xhat = mean_dy + bn.c;
    k_neuron_bn_sums<OP, TMAX><<<dim3((unsigned)bn.c, chunks), BF_CUDA_THREADS, 0, im->stream>>>(
        xin, bn, dy, n, c, (unsigned)count, per_chunk, partial);
    BF_LAUNCH_CHECK("k_neuron_bn_sums");
    const double values = (double)count * (c.shared ? 1.0 : (double)c.T); /* the batch-norm's, per channel */
    k_bn_bwd_final<<<(unsigned)bf_cuda_div_up((size_t)bn.c, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        partial, chunks, bn.c, values, dgamma, dbeta, mean_dy, mean_dy_xhat);
    BF_LAUNCH_CHECK("k_bn_bwd_final");
    bool vectors = false;
    if constexpr (TMAX <= 4) vectors = v == 4; /* compiled for TMAX 4 alone */
    if constexpr (TMAX <= 4)
        if (vectors)
            k_neuron_bn_dx<OP, 4, TMAX><<<neuron_blocks(n / 4), BF_CUDA_THREADS, 0, im->stream>>>(
                xin, bn, dy, mean_dy, mean_dy_xhat, dx, n, c);
    if (!vectors)
        k_neuron_bn_dx<OP, 1, TMAX><<<neuron_blocks(n), BF_CUDA_THREADS, 0, im->stream>>>(
            xin, bn, dy, mean_dy, mean_dy_xhat, dx, n, c);
    BF_LAUNCH_CHECK("k_neuron_bn_dx");
    return BF_OK;
}

template <int OP>
bf_status dispatch_t(bf_cuda_impl *im, int v, const float *xin, const bn_input &bn, const float *dy, float *dx,
                     float *dgamma, float *dbeta, size_t n, const neuron_consts &c) {
    if (c.T <= 4) return run_passes<OP, 4>(im, v, xin, bn, dy, dx, dgamma, dbeta, n, c);
    if (c.T <= 8) return run_passes<OP, 8>(im, v, xin, bn, dy, dx, dgamma, dbeta, n, c);
    if (c.T <= 16) return run_passes<OP, 16>(im, v, xin, bn, dy, dx, dgamma, dbeta, n, c);
    return run_passes<OP, 32>(im, v, xin, bn, dy, dx, dgamma, dbeta, n, c);
}

}  // namespace

extern "C" bf_status bf_cuda_neuron_batchnorm_backward(bf_backend *b, const bf_neuron_params *p,
                                                       const bf_neuron_bn_input *in, size_t n, const float *xin,
                                                       const float *dy, float *dx, float *dgamma, float *dbeta) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(bf_neuron_check_params(p, n, "neuron_batchnorm_backward"));
    BF_TRY(bf_neuron_check_bn_input(p, in, n, "neuron_batchnorm_backward"));
    if (n == 0) return BF_OK;
    REQUIRE("neuron_batchnorm_backward", xin, dy, dx);
    if (n / (size_t)in->c > (size_t)INT32_MAX)
        return bf_error(BF_ERR_ARG, "neuron_batchnorm_backward: %zu values per channel and step is more than "
                        "supported (2^31)", n / (size_t)in->c);
    const neuron_consts c = consts_of(p);
    const bn_input bn = {in->c, in->hw, in->mean, in->invstd, in->gamma, in->beta};
    const int v = vector_width(im, n, xin, dy, dx);
    switch (op_of(p)) {
    case OP_HARD: return dispatch_t<OP_HARD>(im, v, xin, bn, dy, dx, dgamma, dbeta, n, c);
    case OP_SOFT: return dispatch_t<OP_SOFT>(im, v, xin, bn, dy, dx, dgamma, dbeta, n, c);
    default: return dispatch_t<OP_NONE>(im, v, xin, bn, dy, dx, dgamma, dbeta, n, c);
    }
}
