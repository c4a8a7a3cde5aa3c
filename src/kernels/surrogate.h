/* surrogate.h - internal: the spiking neurons' surrogate gradients g(u) = dS/dH at u = H - threshold
 * (see bf_surrogate in ops.h), one source for neuron_cpu.c and neuron.cu, so both backends give the
 * same bits by construction.
 *
 * Everything is float arithmetic with each operation rounded on its own (the __f*_rn intrinsics on
 * the GPU, where nvcc would otherwise contract a*b+c into an FMA; plain operators in C, whose x86-64
 * baseline has no FMA to contract into). The smooth surrogates need one exponential, which is
 * written out here rather than taken from libm or CUDA's expf, whose last bits differ:
 *   sigmoid(alpha):  alpha * s(1 - s), s = 1/(1 + e^-(alpha u)); with z = e^-|alpha u| this is
 *                    alpha * z / (1 + z)^2 (s(1 - s) is even in u, and z <= 1 cannot overflow)
 *   tanh:            height * (1 - tanh(u)^2) = height * 4z / (1 + z)^2 with z = e^-2|u|
 *   arctan(alpha):   (alpha/2) / (1 + (pi/2 alpha u)^2)
 * Until 2026-12 these three were computed in double and rounded once; the double tanh and exp made
 * the GPU's BPTT backward compute-bound (38 % of an H200's bandwidth against 70 % forward). The
 * float forms agree with the double ones to a few ulps. */
#ifndef BIOFLEX_SURROGATE_H
#define BIOFLEX_SURROGATE_H

#include <stdint.h>
#include <string.h>

#include "bioflex/ops.h"

#ifdef __CUDACC__
#define BF_SURR_FN __device__ __forceinline__
#define BF_SURR_MUL(a, b) __fmul_rn((a), (b))
#define BF_SURR_ADD(a, b) __fadd_rn((a), (b))
#define BF_SURR_SUB(a, b) __fsub_rn((a), (b))
#define BF_SURR_DIV(a, b) __fdiv_rn((a), (b))
#else
#define BF_SURR_FN static inline
#define BF_SURR_MUL(a, b) ((a) * (b))
#define BF_SURR_ADD(a, b) ((a) + (b))
#define BF_SURR_SUB(a, b) ((a) - (b))
#define BF_SURR_DIV(a, b) ((a) / (b))
#endif

/* e^x for x <= 0, to within about 2 ulps; 0 below -80 (where e^x < 2e-35: never a subnormal, whose
 * rounding the two backends might treat differently); a NaN propagates. x = k ln2 + r with k the
 * integer nearest x / ln2 and ln2 split in two (its high part has 16 bits, so k * hi is exact),
 * |r| <= ln2/2; e^r by its Taylor series to r^7 (truncation error < 5e-9 relative); then scaled by
 * 2^k, built from its bits. Branch-free (every value computed, then selected) and without rintf
 * (k by adding and subtracting 1.5 * 2^23, which rounds to the nearest integer, ties to even, for
 * |x / ln2| < 2^22), so that the CPU's loops over it vectorise on plain SSE2. */
BF_SURR_FN float bf_surrogate_exp_neg(float x) {
    const float xc = x > -80.0f ? x : -80.0f; /* also a NaN's stand-in */
    const float k = BF_SURR_SUB(BF_SURR_ADD(BF_SURR_MUL(xc, 1.44269502f), 12582912.0f), 12582912.0f);
    const float r = BF_SURR_SUB(BF_SURR_SUB(xc, BF_SURR_MUL(k, 0.693145751953125f)), BF_SURR_MUL(k, 1.42860677e-06f));
    float p = 1.98412698e-4f; /* 1/7!, then 1/6!, ... as literals: no compiler's constant folding */
    p = BF_SURR_ADD(BF_SURR_MUL(p, r), 1.38888889e-3f);
    p = BF_SURR_ADD(BF_SURR_MUL(p, r), 8.33333333e-3f);
    p = BF_SURR_ADD(BF_SURR_MUL(p, r), 4.16666667e-2f);
    p = BF_SURR_ADD(BF_SURR_MUL(p, r), 0.166666667f);
    p = BF_SURR_ADD(BF_SURR_MUL(p, r), 0.5f);
    p = BF_SURR_ADD(BF_SURR_MUL(p, r), 1.0f);
    p = BF_SURR_ADD(BF_SURR_MUL(p, r), 1.0f);
    const uint32_t bits = (uint32_t)((int32_t)k + 127) << 23; /* 2^k, -116 <= k <= 0 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    const float e = BF_SURR_MUL(p, scale);
    return x != x ? x : x > -80.0f ? e : 0.0f;
}

/* z / (1 + z)^2 for z in [0, 1]: s(1 - s) of the logistic s at the z = e^-|v| above. */
BF_SURR_FN float bf_surrogate_bell(float z) {
    const float t = BF_SURR_ADD(1.0f, z);
    return BF_SURR_DIV(z, BF_SURR_MUL(t, t));
}

/* g(u) of surrogate kind (bf_surrogate) with its parameters. */
BF_SURR_FN float bf_surrogate_grad(bf_surrogate kind, float alpha, float width, float height, float u) {
    const float au = u < 0.0f ? -u : u;
    switch (kind) {
    case BF_SURROGATE_SIGMOID: {
        const float v = BF_SURR_MUL(alpha, au);
        return BF_SURR_MUL(alpha, bf_surrogate_bell(bf_surrogate_exp_neg(-v)));
    }
    case BF_SURROGATE_ARCTAN: {
        const float k = BF_SURR_MUL(BF_SURR_MUL(1.57079637f, alpha), u);
        return BF_SURR_DIV(BF_SURR_MUL(alpha, 0.5f), BF_SURR_ADD(1.0f, BF_SURR_MUL(k, k)));
    }
    case BF_SURROGATE_RECTANGULAR: return au < BF_SURR_MUL(width, 0.5f) ? height : 0.0f;
    case BF_SURROGATE_TRIANGLE: {
        const float r = BF_SURR_SUB(1.0f, BF_SURR_DIV(au, width));
        return r > 0.0f ? BF_SURR_MUL(height, r) : 0.0f;
    }
    case BF_SURROGATE_TANH: {
        const float z = bf_surrogate_exp_neg(-BF_SURR_ADD(au, au));
        return BF_SURR_MUL(height, BF_SURR_MUL(4.0f, bf_surrogate_bell(z)));
    }
    }
    return 0.0f;
}

#endif
