/* lif_lab.cu - kernel lab (the llm.c dev/cuda pattern, ../shared/specs/engine-anchors.md 1.3) for
 * the fused spiking-neuron kernels (src/kernels/neuron.cu): an LIF layer over T time steps,
 * forward and backward through time, at the LIF layers of PlasticFlex's CIFAR-10 VGG-11
 * (plasticflex.md section 4; configs/plasticflex/cifar10_vgg11_snn_lif.ini):
 *
 *   c3(3->64)    64x32x32   1 layer         c3(256->512), c3(512->512)   512x4x4   2 layers
 *   c3(64->128)  128x16x16  1 layer         c3(512->512) x 2             512x2x2   2 layers
 *   c3(128->256), c3(256->256)  256x8x8  2  fc1, fc2 activations         1024      2 layers
 *
 * (the first five are also the ReLU positions of the plain VGG-11 on 32x32; the two classifier
 * neurons are PlasticFlex's D = 1024 ones). A layer sees [T, n] tensors, n = batch x features,
 * time outermost (ops.h at bf_neuron_kind). The neuron is the one of the shipped configs: LIF,
 * decay 0.95, threshold 1, HARD reset, reset not detached, trained through time (STBP), surrogate
 * TANH of height 0.3:
 *   forward   H[t] = decay*V[t-1] + X[t],  S[t] = 1[H[t] - 1 >= 0],  V[t] = H[t]*(1 - S[t]),  V[-1] = 0
 *   backward  g = 0.3*(1 - tanh(H[t] - 1)^2),  dH = dY[t]*g + dV[t]*((1 - S[t]) - H[t]*g),
 *             dX[t] = dH,  dV[t-1] = decay*dH,  dV[T-1] = 0,  for t = T-1 .. 0
 *
 * Versions (the table prints both, and the speed-up of 1 over 0):
 *   0  unfused: the per-step sequence of PyTorch eager / SpikingJelly's "torch" backend (a Python
 *      loop over t, autograd through time), written in this file (kernels named *_kernel0):
 *        forward  cudaMemset V = 0 (torch.full_like), then per step t = 0 .. T-1:
 *                   charge_kernel0  H[t] = decay*V + X[t]     (read V, X[t]; write H[t], saved)
 *                   spike_kernel0   S[t] = 1[H[t] - 1 >= 0]   (read H[t]; write S[t] = Y[t], saved)
 *                   reset_kernel0   V = H[t]*(1 - S[t])       (read H[t], S[t]; write V)
 *        backward cudaMemset dV = 0, then per step t = T-1 .. 0:
 *                   surrogate_kernel0  G = g(H[t] - 1)          (read H[t]; write G)
 *                   dh_kernel0         dX[t] = dY[t]*G + dV*((1 - S[t]) - H[t]*G)
 *                                      (read dY[t], G, H[t], S[t], dV; write dX[t])
 *                   carry_kernel0      dV = decay*dX[t]         (read dX[t]; write dV; not at t = 0)
 *      i.e. 3T kernels + 1 memset each way. Real eager code launches more (the charge is a mul and an
 *      add, the reset three ops, autograd splits dH into the surrogate path and the reset path, and
 *      x_seq[t] / torch.stack add copies), so version 0 is a generous eager baseline: it has eager's
 *      structure (one launch per op per step, every intermediate through DRAM) with the fewest
 *      kernels. Its kernels use 16-byte vector loads when n % 4 == 0 (every shape here), as
 *      PyTorch's elementwise kernels do. They use the library's float arithmetic (__f*_rn, no FMA
 *      contraction, the tanh surrogate of surrogate.h), so both versions are expected to be
 *      bit-exact with the CPU reference; only the kernel structure differs.
 *   1  the library's fused ops through the public bf_ops table, i.e. what layer_spiking.c runs:
 *      b->ops->neuron_forward (one kernel, all T steps, V in a register) and b->ops->neuron_backward
 *      (one kernel, t = T-1 .. 0, dV in a register, S recomputed from the charge). The timed
 *      forward passes stats = NULL; the row "1 +spike stats" times the forward with the spike
 *      monitor that training mode passes (two more small kernels).
 *   2  the library's batch-norm fold, what training runs for a LIF layer right after a batch-norm
 *      ([spiking] recompute_charge, the default; every conv layer of VGG-11): x is the batch-norm's
 *      INPUT with per-channel statistics, b->ops->neuron_forward_bn normalises it as it reads it
 *      and keeps no charge, b->ops->neuron_backward_bn computes the T charges again in registers.
 *      Its byte model: fwd 8*T*n (x in, y out), bwd 12*T*n (x and dy in, dx out). The row
 *      "1 + BN apply" is what it replaces: batchnorm_forward_saved (the batch-norm's output, 8*T*n
 *      bytes more) then version 1's forward, so version 2's speed-up is over that sum. The summary
 *      line takes version 2 for the conv layers and version 1 for fc1/fc2 (no batch-norm there).
 *      The row "2 + spikes_pack" is version 2's forward then the separate packing of its spikes as
 *      bits (what the memory plan keeps for the backward: y read again, 4.125*T*n bytes more); "2
 *      packing in the pass" writes the bits from the forward itself (n a multiple of 32):
 *      8.125*T*n bytes.
 *   3  the batch-norm's backward folded in too ([spiking] fuse_bn_backward, the default):
 *      b->ops->neuron_batchnorm_backward takes the batch-norm's sums from the charges and gradients
 *      computed again (pass 1: x and dy in, 8*T*n bytes) and then writes the batch-norm input's
 *      gradient (pass 3: x and dy in, dx out, 12*T*n), never storing the neuron's gradient: 20*T*n
 *      bytes. The row "2 + BN backward" is what it replaces: version 2's backward then
 *      batchnorm_backward (its sums read x and the neuron's gradient, its apply reads them again and
 *      writes dx): 32*T*n bytes.
 *
 * Byte model (the minimal traffic of the op at its contract, the same for both versions so that the
 * GB/s are comparable: every [T, n] tensor crosses DRAM exactly once, 4 bytes per float, GB = 1e9
 * bytes; the spike monitor's two floats are ignored):
 *   forward:  read x, write y and charge    12*T*n bytes
 *   backward: read charge and dy, write dx  12*T*n bytes
 *   GB/s = bytes / mean time (effective bandwidth); %peak = GB/s over the peak DRAM bandwidth.
 * For reference, version 0 actually moves (32T + 4)*n bytes forward and (40T - 4)*n backward, so
 * with both versions at the same DRAM bandwidth version 1 would be (32T+4)/(12T) (about 2.7x) faster
 * forward and (40T-4)/(12T) (about 3.3x) backward; small layers are launch-bound instead, and there
 * the gap grows with T.
 *
 * Correctness: before any timing, every version's outputs (y, charge, dx; version 1 also the spike
 * monitor; version 2 y and dx against the CPU's neuron_forward_bn and neuron_backward_bn, with
 * per-channel statistics of 64 channels that keep the firing rate in range) are compared with the CPU reference backend (bf_backend_create_cpu) on 20 samples of the
 * 64x32x32 layer (n = 1,310,720: beyond one element per thread of the library's 4096-block grid, so
 * its grid-stride loop runs; fewer samples for T > 16) at every T of the run, and on an odd
 * n = 1155 at T = 5 (the scalar kernels and partial blocks). Spikes and charges must be exact;
 * dx must satisfy |gpu - cpu| <= 1e-5*|cpu| + 1e-7 (the 1e-7 floor keeps an ulp on a dx that
 * cancels to about 0 from failing; the expected result is bit-exact, the bit-exact counts are
 * printed). x is drawn uniform in [-1, 1.5) and dy in [-1, 1), which fires 10-50% of the
 * neuron-steps (about 20%); the CPU run reports the rate and a rate outside 10-50% fails the check.
 * Outputs are poisoned (all bits set: NaN) before each run, so an unwritten element fails. Version 0
 * is checked with its vector and its scalar kernels, version 1 with and without the monitor. Any
 * mismatch prints the first elements and exits 1 before timing.
 *
 * Timing: CUDA events on the backend's stream around each forward or backward pass, mean over
 * --repeats runs after one warm-up run, with the L2 cache flushed before every run (a cudaMemset of
 * a buffer twice cudaDeviceProp.l2CacheSize, outside the timed region). Each case allocates its
 * buffers and is skipped (with a line saying so) when they exceed 40% of free device memory.
 *
 * Build and run (needs the CUDA backend: nvcc, cuDNN 9 and cuBLAS):
 *   cmake -S . -B build -DBIOFLEX_CUDA=ON && cmake --build build -j --target bench_lif_lab
 *   ./build/bench/bench_lif_lab                     # batch 256, T = 4, 8 and 16, 50 repeats
 *   ./build/bench/bench_lif_lab --T 4 --repeats 100
 *   ./build/bench/bench_lif_lab --peak-gbs 2039     # e.g. H100 PCIe; overrides the queried peak
 * Options: --batch N (default 256), --T LIST (comma-separated time steps, each 1..1024, default
 * 4,8,16), --repeats N (default 50), --peak-gbs X (default: memory clock x bus width x 2 from
 * cudaDeviceGetAttribute, or 3350, H100 SXM, when the driver reports no memory clock). Exit status 0
 * all checks passed, 1 a mismatch or CUDA error, 2 a bad command line. It uses device 0 (select
 * another with CUDA_VISIBLE_DEVICES). Batch 256 at T = 16 needs about 5.5 GB of device memory for
 * the largest layer; the CPU check about 0.5 GB of host memory.
 *
 * The file includes the backend's private header (src/kernels/cuda_backend.h) for the backend's
 * stream (on which the version-0 kernels are launched and the events recorded) and bf_block_sum. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "bioflex/hash.h"
#include "bioflex/ops.h"
#include "cuda_backend.h"
#include "lab_util.cuh"
#include "surrogate.h"

#define LAB_MAX_T 1024   /* as the config's [spiking] time_steps */
#define LAB_MAX_TLIST 16 /* values of --T */

/* ---- version 0: the unfused per-step kernels ---- */

/* The TANH surrogate g(u) = height*(1 - tanh(u)^2), evaluated as neuron.cu and neuron_cpu.c do
 * (surrogate.h: float, its own exponential), so version 0 computes the same floats as the library. */
__device__ __forceinline__ float tanh_surrogate0(float u, float height) {
    return bf_surrogate_grad(BF_SURROGATE_TANH, 0.0f, 0.0f, height, u);
}

/* Every kernel below works on one time step: `vecs` = n / V vectors of the step's n elements, and
 * the [T, n] pointers passed in already point at step t (t*n floats in). The V-float vectors
 * (lab_util.cuh's fvec) are aligned because every step starts at t*n with n % V == 0. */

/* forward (1): H[t] = decay*V + X[t] (two roundings, no FMA, as the library) */
template <int V>
__global__ void charge_kernel0(const float *__restrict__ vmem, const float *__restrict__ xt, float *__restrict__ ht,
                               size_t vecs, float decay) {
    LAB_GRID_STRIDE(k, vecs) {
        const fvec<V> v = load_f<V>(vmem + k * V), x = load_f<V>(xt + k * V);
        fvec<V> h;
#pragma unroll
        for (int e = 0; e < V; e++) h.v[e] = __fadd_rn(__fmul_rn(decay, v.v[e]), x.v[e]);
        store_f<V>(ht + k * V, h);
    }
}

/* forward (2): S[t] = 1[H[t] - threshold >= 0] (SpikingJelly's heaviside(v - v_threshold)) */
template <int V>
__global__ void spike_kernel0(const float *__restrict__ ht, float *__restrict__ st, size_t vecs, float threshold) {
    LAB_GRID_STRIDE(k, vecs) {
        const fvec<V> h = load_f<V>(ht + k * V);
        fvec<V> s;
#pragma unroll
        for (int e = 0; e < V; e++) s.v[e] = __fsub_rn(h.v[e], threshold) >= 0.0f ? 1.0f : 0.0f;
        store_f<V>(st + k * V, s);
    }
}

/* forward (3): hard reset V = H[t]*(1 - S[t]) */
template <int V>
__global__ void reset_kernel0(const float *__restrict__ ht, const float *__restrict__ st, float *__restrict__ vmem,
                              size_t vecs) {
    LAB_GRID_STRIDE(k, vecs) {
        const fvec<V> h = load_f<V>(ht + k * V), s = load_f<V>(st + k * V);
        fvec<V> v;
#pragma unroll
        for (int e = 0; e < V; e++) v.v[e] = __fmul_rn(h.v[e], __fsub_rn(1.0f, s.v[e]));
        store_f<V>(vmem + k * V, v);
    }
}

/* backward (1): G = g(H[t] - threshold) */
template <int V>
__global__ void surrogate_kernel0(const float *__restrict__ ht, float *__restrict__ g, size_t vecs, float threshold,
                                  float height) {
    LAB_GRID_STRIDE(k, vecs) {
        const fvec<V> h = load_f<V>(ht + k * V);
        fvec<V> r;
#pragma unroll
        for (int e = 0; e < V; e++) r.v[e] = tanh_surrogate0(__fsub_rn(h.v[e], threshold), height);
        store_f<V>(g + k * V, r);
    }
}

/* backward (2): dX[t] = dH = dY[t]*G + dV*((1 - S[t]) - H[t]*G), in the library's rounding order */
template <int V>
__global__ void dh_kernel0(const float *__restrict__ dyt, const float *__restrict__ g, const float *__restrict__ ht,
                           const float *__restrict__ st, const float *__restrict__ dv, float *__restrict__ dxt,
                           size_t vecs) {
    LAB_GRID_STRIDE(k, vecs) {
        const fvec<V> dy = load_f<V>(dyt + k * V), gg = load_f<V>(g + k * V), h = load_f<V>(ht + k * V),
                      s = load_f<V>(st + k * V), d = load_f<V>(dv + k * V);
        fvec<V> dh;
#pragma unroll
        for (int e = 0; e < V; e++) {
            const float dvdh = __fsub_rn(__fsub_rn(1.0f, s.v[e]), __fmul_rn(h.v[e], gg.v[e]));
            dh.v[e] = __fadd_rn(__fmul_rn(dy.v[e], gg.v[e]), __fmul_rn(d.v[e], dvdh));
        }
        store_f<V>(dxt + k * V, dh);
    }
}

/* backward (3): dV[t-1] = decay*dH[t] */
template <int V>
__global__ void carry_kernel0(const float *__restrict__ dxt, float *__restrict__ dv, size_t vecs, float decay) {
    LAB_GRID_STRIDE(k, vecs) {
        const fvec<V> dh = load_f<V>(dxt + k * V);
        fvec<V> r;
#pragma unroll
        for (int e = 0; e < V; e++) r.v[e] = __fmul_rn(decay, dh.v[e]);
        store_f<V>(dv + k * V, r);
    }
}

/* Test data: a[i] = lo + span * U[0,1) from the counter-based hash (i over the whole [T, n]). */
__global__ void init_kernel(float *__restrict__ a, size_t n, uint64_t seed, float lo, float span) {
    LAB_GRID_STRIDE(i, n) { a[i] = lo + span * bf_uniform(seed, i); }
}

/* ---- host side ---- */

typedef struct lab_shape {
    const char *name;
    int c, h;  /* activation per sample: c x h x h (h = 1 for a classifier layer) */
    int count; /* LIF layers of PlasticFlex VGG-11 with this activation size */
} lab_shape;

/* PlasticFlex VGG-11 on CIFAR-10 (32x32): 10 LIF layers, 6 distinct sizes. */
static const lab_shape k_shapes[] = {
    {"c3 3->64", 64, 32, 1},         {"c3 64->128", 128, 16, 1},    {"c3 128/256->256", 256, 8, 2},
    {"c3 256/512->512", 512, 4, 2},  {"c3 512->512 @2", 512, 2, 2}, {"fc1/fc2 act", 1024, 1, 2},
};
#define NUM_SHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))

typedef struct lab_case {
    bf_backend *b;
    cudaStream_t stream;
    bf_neuron_params p;
    size_t n;                     /* elements per step */
    size_t total;                 /* T*n */
    int vec;                      /* version 0's vector width: 4 when n % 4 == 0, else 1 */
    float *x, *y, *charge, *dy, *dx; /* [T, n] */
    float *vmem, *g, *dv;         /* version 0's per-step state [n]: membrane V, surrogate G, dL/dV */
    float *stats;                 /* the spike monitor, 2 floats */
    int channels, hw;             /* version 2: the batch-norm's channels and plane size */
    float *bn;                    /* version 2: mean, invstd, gamma, beta [channels] each */
    bf_neuron_bn_input bn_in;     /* ... as neuron_forward_bn takes them */
    float *bn_out;                /* "1 + BN apply": the batch-norm output [T, n] (the forward's x); versions
                                   * 3 and "2 + BN backward": the batch-norm input's gradient */
    float *bn_grad;               /* versions 3 and "2 + BN backward": dgamma, dbeta [channels] each */
    uint32_t *bits;               /* the packing rows: the spikes as bits, (T*n + 31) / 32 words */
} lab_case;

/* The neuron of configs/plasticflex/cifar10_vgg11_snn_lif.ini (alpha and width: the config's
 * defaults, unused by TANH). */
static bf_neuron_params lif_params(int T) {
    bf_neuron_params p;
    memset(&p, 0, sizeof p);
    p.kind = BF_NEURON_LIF;
    p.T = T;
    p.decay = 0.95f;
    p.threshold = 1.0f;
    p.reset = BF_RESET_HARD;
    p.detach_reset = 0;
    p.through_time = 1;
    p.surrogate = BF_SURROGATE_TANH;
    p.alpha = 4.0f;
    p.width = 2.0f;
    p.height = 0.3f;
    return p;
}

/* The sizes of one case (no allocation): n elements per step in planes of hw, channels channels. */
static void case_shapes(lab_case *c, size_t n, int T, int channels, int hw) {
    memset(c, 0, sizeof *c);
    c->p = lif_params(T);
    c->n = n;
    c->total = n * (size_t)T;
    c->vec = n % 4 == 0 ? 4 : 1;
    c->channels = channels;
    c->hw = hw;
}

/* Device bytes of all buffers of a case (every version), with 256-byte rounding per buffer. */
static size_t case_bytes(const lab_case *c) {
    return (6 * c->total + 3 * c->n + 2 + 6 * (size_t)c->channels) * sizeof(float) + (c->total / 32 + 1) * 4 + 13 * 256;
}

static void case_alloc(lab_case *c, bf_backend *b, cudaStream_t stream) {
    c->b = b;
    c->stream = stream;
    const size_t tb = c->total * sizeof(float), nb = c->n * sizeof(float);
    c->x = (float *)dev_alloc(b, tb);
    c->y = (float *)dev_alloc(b, tb);
    c->charge = (float *)dev_alloc(b, tb);
    c->dy = (float *)dev_alloc(b, tb);
    c->dx = (float *)dev_alloc(b, tb);
    c->vmem = (float *)dev_alloc(b, nb);
    c->g = (float *)dev_alloc(b, nb);
    c->dv = (float *)dev_alloc(b, nb);
    c->stats = (float *)dev_alloc(b, 2 * sizeof(float));
    c->bn = (float *)dev_alloc(b, 4 * (size_t)c->channels * sizeof(float));
    c->bn_out = (float *)dev_alloc(b, tb);
    c->bn_grad = (float *)dev_alloc(b, 2 * (size_t)c->channels * sizeof(float));
    c->bits = (uint32_t *)dev_alloc(b, (c->total / 32 + 1) * sizeof(uint32_t));
    const size_t k = (size_t)c->channels;
    c->bn_in = (bf_neuron_bn_input){c->channels, c->hw, c->bn, c->bn + k, c->bn + 2 * k, c->bn + 3 * k};
}

static void case_free(lab_case *c) {
    void *ptrs[] = {c->x, c->y, c->charge, c->dy, c->dx, c->vmem, c->g, c->dv, c->stats, c->bn, c->bn_out, c->bn_grad, c->bits};
    BFK(c->b->ops->synchronize(c->b));
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) bf_free(c->b, ptrs[i]);
}

static void launch_init(lab_case *c, float *a, size_t n, uint64_t seed, float lo, float span) {
    init_kernel<<<lab_blocks(n), LAB_THREADS, 0, c->stream>>>(a, n, seed, lo, span);
    LAUNCH_CHECK("init_kernel");
}

/* x uniform in [-1, 1.5) (fires about 20% of the neuron-steps), dy uniform in [-1, 1); version 2's
 * statistics: mean in [-0.1, 0.1), invstd and gamma in [0.9, 1.1), beta in [-0.1, 0.1), so the
 * normalised input stays near x's range while every channel differs. */
static void case_init(lab_case *c) {
    const size_t k = (size_t)c->channels;
    launch_init(c, c->x, c->total, 21, -1.0f, 2.5f);
    launch_init(c, c->dy, c->total, 22, -1.0f, 2.0f);
    launch_init(c, c->bn, k, 23, -0.1f, 0.2f);
    launch_init(c, c->bn + k, 2 * k, 24, 0.9f, 0.2f);
    launch_init(c, c->bn + 3 * k, k, 25, -0.1f, 0.2f);
    CK(cudaStreamSynchronize(c->stream));
    CK(cudaGetLastError());
}

/* Every output and version 0's state to all-ones bits (a float NaN), the monitor to 0. */
static void case_poison(lab_case *c) {
    const size_t tb = c->total * sizeof(float), nb = c->n * sizeof(float);
    CK(cudaMemsetAsync(c->y, 0xFF, tb, c->stream));
    CK(cudaMemsetAsync(c->charge, 0xFF, tb, c->stream));
    CK(cudaMemsetAsync(c->dx, 0xFF, tb, c->stream));
    CK(cudaMemsetAsync(c->vmem, 0xFF, nb, c->stream));
    CK(cudaMemsetAsync(c->g, 0xFF, nb, c->stream));
    CK(cudaMemsetAsync(c->dv, 0xFF, nb, c->stream));
    CK(cudaMemsetAsync(c->stats, 0, 2 * sizeof(float), c->stream));
    CK(cudaStreamSynchronize(c->stream));
}

/* ---- the passes (enqueue only) ---- */

static void v1_forward(lab_case *c) {
    BFK(c->b->ops->neuron_forward(c->b, &c->p, c->n, c->x, c->y, c->charge, NULL));
}

static void v1_forward_stats(lab_case *c) {
    BFK(c->b->ops->neuron_forward(c->b, &c->p, c->n, c->x, c->y, c->charge, c->stats));
}

static void v1_backward(lab_case *c) {
    BFK(c->b->ops->neuron_backward(c->b, &c->p, c->n, c->x, c->y, c->charge, c->dy, c->dx));
}

/* What version 2 replaces: the batch-norm output written, then version 1's forward over it. */
static void v1_bn_forward(lab_case *c) {
    const bf_bn_shape s = {.n = (int)(c->total / ((size_t)c->channels * c->hw)), .c = c->channels, .hw = c->hw,
                           .eps = 1e-5f, .momentum = 0.1f, .repeats = 0};
    const bf_neuron_bn_input *in = &c->bn_in;
    BFK(c->b->ops->batchnorm_forward_saved(c->b, &s, c->x, in->gamma, in->beta, in->mean, in->invstd, c->bn_out));
    BFK(c->b->ops->neuron_forward(c->b, &c->p, c->n, c->bn_out, c->y, c->charge, NULL));
}

static void v2_forward(lab_case *c) {
    BFK(c->b->ops->neuron_forward_bn(c->b, &c->p, &c->bn_in, c->n, c->x, c->y, NULL, NULL));
}

static void v2_forward_then_pack(lab_case *c) {
    v2_forward(c);
    BFK(c->b->ops->spikes_pack(c->b, c->y, c->bits, c->total));
}

static void v2_forward_packing(lab_case *c) {
    BFK(c->b->ops->neuron_forward_bn(c->b, &c->p, &c->bn_in, c->n, c->x, c->y, c->bits, NULL));
}

static void v2_backward(lab_case *c) {
    BFK(c->b->ops->neuron_backward_bn(c->b, &c->p, &c->bn_in, c->n, c->x, c->dy, c->dx));
}

/* What version 3 replaces: version 2's backward (the neuron's gradient into dx), then the batch-norm's. */
static void v2_bn_backward(lab_case *c) {
    const bf_bn_shape s = {.n = (int)(c->total / ((size_t)c->channels * c->hw)), .c = c->channels, .hw = c->hw,
                           .eps = 1e-5f, .momentum = 0.1f, .repeats = 0};
    const bf_neuron_bn_input *in = &c->bn_in;
    v2_backward(c);
    BFK(c->b->ops->batchnorm_backward(c->b, &s, c->x, c->dx, in->gamma, in->mean, in->invstd, c->bn_out, c->bn_grad,
                                      c->bn_grad + c->channels));
}

static void v3_backward(lab_case *c) {
    BFK(c->b->ops->neuron_batchnorm_backward(c->b, &c->p, &c->bn_in, c->n, c->x, c->dy, c->bn_out, c->bn_grad,
                                             c->bn_grad + c->channels));
}

template <int V>
static void v0_forward_t(lab_case *c) {
    const size_t n = c->n, vecs = n / V;
    const unsigned blocks = lab_blocks(vecs);
    const float decay = c->p.decay, threshold = c->p.threshold;
    CK(cudaMemsetAsync(c->vmem, 0, n * sizeof(float), c->stream)); /* V[-1] = 0 */
    for (int t = 0; t < c->p.T; t++) {
        const size_t off = (size_t)t * n;
        charge_kernel0<V><<<blocks, LAB_THREADS, 0, c->stream>>>(c->vmem, c->x + off, c->charge + off, vecs, decay);
        LAUNCH_CHECK("charge_kernel0");
        spike_kernel0<V><<<blocks, LAB_THREADS, 0, c->stream>>>(c->charge + off, c->y + off, vecs, threshold);
        LAUNCH_CHECK("spike_kernel0");
        reset_kernel0<V><<<blocks, LAB_THREADS, 0, c->stream>>>(c->charge + off, c->y + off, c->vmem, vecs);
        LAUNCH_CHECK("reset_kernel0");
    }
}

template <int V>
static void v0_backward_t(lab_case *c) {
    const size_t n = c->n, vecs = n / V;
    const unsigned blocks = lab_blocks(vecs);
    const float decay = c->p.decay, threshold = c->p.threshold, height = c->p.height;
    CK(cudaMemsetAsync(c->dv, 0, n * sizeof(float), c->stream)); /* dV[T-1] = 0 */
    for (int t = c->p.T - 1; t >= 0; t--) {
        const size_t off = (size_t)t * n;
        surrogate_kernel0<V><<<blocks, LAB_THREADS, 0, c->stream>>>(c->charge + off, c->g, vecs, threshold, height);
        LAUNCH_CHECK("surrogate_kernel0");
        dh_kernel0<V><<<blocks, LAB_THREADS, 0, c->stream>>>(c->dy + off, c->g, c->charge + off, c->y + off, c->dv,
                                                             c->dx + off, vecs);
        LAUNCH_CHECK("dh_kernel0");
        if (t > 0) { /* dV[-1] feeds nothing: V[-1] is a constant */
            carry_kernel0<V><<<blocks, LAB_THREADS, 0, c->stream>>>(c->dx + off, c->dv, vecs, decay);
            LAUNCH_CHECK("carry_kernel0");
        }
    }
}

static void v0_forward(lab_case *c) {
    if (c->vec == 4) v0_forward_t<4>(c);
    else v0_forward_t<1>(c);
}

static void v0_backward(lab_case *c) {
    if (c->vec == 4) v0_backward_t<4>(c);
    else v0_backward_t<1>(c);
}

/* ---- byte model (see the top of the file): the same for both versions ---- */

static double bytes_fwd(const lab_case *c) { return 12.0 * (double)c->total; } /* x in, y and charge out */
static double bytes_bwd(const lab_case *c) { return 12.0 * (double)c->total; } /* charge and dy in, dx out */
static double bytes_fwd2(const lab_case *c) { return 8.0 * (double)c->total; } /* version 2: x in, y out */
static double bytes_fwd2_pack(const lab_case *c) { return 8.125 * (double)c->total; } /* + bits out */
static double bytes_bwd_bn(const lab_case *c) { return 32.0 * (double)c->total; } /* "2 + BN backward" */
static double bytes_bwd3(const lab_case *c) { return 20.0 * (double)c->total; }   /* version 3: two passes */

/* ---- validation against the CPU reference ---- */

/* atol = rtol = 0: the values must be equal (a NaN never is); else |got - ref| <= atol + rtol*|ref|.
 * Prints the largest |gpu - cpu| and the largest relative difference |gpu - cpu| / |cpu|. */
static int compare(const char *what, const float *got, const float *ref, size_t n, double atol, double rtol) {
    const int exact_mode = atol == 0.0 && rtol == 0.0;
    double max_abs = 0.0, max_rel = 0.0;
    size_t exact = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t gb, rb;
        memcpy(&gb, &got[i], sizeof gb);
        memcpy(&rb, &ref[i], sizeof rb);
        if (gb == rb) {
            exact++;
            continue;
        }
        const double g = (double)got[i], r = (double)ref[i];
        double d = fabs(g - r); /* NaN when either is NaN */
        if (isnan(d)) d = INFINITY;
        const double rel = r != 0.0 ? d / fabs(r) : (d > 0.0 ? INFINITY : 0.0);
        if (d > max_abs) max_abs = d;
        if (rel > max_rel) max_rel = rel;
        const int pass = exact_mode ? got[i] == ref[i] : d <= atol + rtol * fabs(r);
        if (!pass) {
            if (bad < 5) fprintf(stderr, "      %s[%zu]: gpu %.9g cpu %.9g\n", what, i, got[i], ref[i]);
            bad++;
        }
    }
    printf("      %-7s max|gpu-cpu| %.3e  max rel %.3e  bit-exact %zu/%zu  %s\n", what, max_abs, max_rel, exact, n,
           bad ? "MISMATCH" : "ok");
    if (bad) fprintf(stderr, "error: %s: %zu of %zu elements outside tolerance\n", what, bad, n);
    return bad == 0;
}

/* One GPU tensor copied back and compared. */
static int check(lab_case *c, const char *what, const float *dev, const float *ref, size_t n, float *host, double atol,
                 double rtol) {
    BFK(bf_to_host(c->b, host, dev, n * sizeof(float)));
    return compare(what, host, ref, n, atol, rtol);
}

/* Runs every version on n elements per step over T steps and compares with the CPU backend;
 * returns 1 on pass. */
static int validate_case(bf_backend *b, cudaStream_t stream, bf_backend *cpu, const char *label, size_t n, int T,
                         int channels, int hw) {
    const double dx_atol = 1e-7, dx_rtol = 1e-5;
    lab_case c;
    case_shapes(&c, n, T, channels, hw);
    case_alloc(&c, b, stream);
    case_init(&c);

    /* the CPU reference, from the same inputs */
    const bf_ops *ref_ops = cpu->ops;
    const size_t tb = c.total * sizeof(float);
    float *x = (float *)host_alloc(cpu, tb), *y = (float *)host_alloc(cpu, tb);
    float *charge = (float *)host_alloc(cpu, tb), *dy = (float *)host_alloc(cpu, tb);
    float *dx = (float *)host_alloc(cpu, tb), *host = (float *)host_alloc(cpu, tb);
    float *stats = (float *)host_alloc(cpu, 2 * sizeof(float)); /* zero */
    BFK(bf_to_host(b, x, c.x, tb));
    BFK(bf_to_host(b, dy, c.dy, tb));
    BFK(ref_ops->neuron_forward(cpu, &c.p, n, x, y, charge, stats));
    BFK(ref_ops->neuron_backward(cpu, &c.p, n, x, y, charge, dy, dx));

    /* the firing rate, counted directly, and the monitor checked against the count */
    size_t spikes = 0, silent = 0;
    for (size_t i = 0; i < n; i++) {
        size_t s = 0;
        for (int t = 0; t < T; t++) s += y[(size_t)t * n + i] != 0.0f;
        spikes += s;
        silent += s == 0;
    }
    const double rate = (double)spikes / (double)c.total;
    printf("  %s: n=%zu T=%d, %zu neuron-steps, firing rate %.1f%%, silent elements %.1f%%\n", label, n, T, c.total,
           100.0 * rate, 100.0 * (double)silent / (double)n);
    int ok = 1;
    if (stats[0] != (float)spikes || stats[1] != (float)silent) {
        fprintf(stderr, "error: the CPU monitor says %.0f spikes and %.0f silent, the direct count %zu and %zu\n",
                stats[0], stats[1], spikes, silent);
        ok = 0;
    }
    if (!(rate >= 0.10 && rate <= 0.50)) {
        fprintf(stderr, "error: firing rate %.1f%% is outside 10-50%%: the check would not be representative\n",
                100.0 * rate);
        ok = 0;
    }

    for (int pass = 0; pass < 4; pass++) {
        const char *what;
        if (pass == 0) what = "version 1 (library, fused), no monitor";
        else if (pass == 1) what = "version 1 (library, fused), spike monitor";
        else if (pass == 2) what = c.vec == 4 ? "version 0 (unfused, 16-byte vectors)" : "version 0 (unfused)";
        else what = "version 0 (unfused, scalar kernels)";
        if (pass == 3 && c.vec == 1) continue; /* already ran scalar in pass 2 */
        const int vec_default = c.vec;
        if (pass == 3) c.vec = 1;
        case_poison(&c);
        if (pass == 0) v1_forward(&c);
        else if (pass == 1) v1_forward_stats(&c);
        else v0_forward(&c);
        if (pass < 2) v1_backward(&c);
        else v0_backward(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        c.vec = vec_default;
        printf("    %s\n", what);
        ok &= check(&c, "y", c.y, y, c.total, host, 0.0, 0.0);
        ok &= check(&c, "charge", c.charge, charge, c.total, host, 0.0, 0.0);
        ok &= check(&c, "dx", c.dx, dx, c.total, host, dx_atol, dx_rtol);
        if (pass == 1) ok &= check(&c, "stats", c.stats, stats, 2, host, 0.0, 0.0);
    }

    { /* version 2 against the CPU's own fold, from the same x, dy and statistics */
        const size_t k = (size_t)c.channels;
        float *bn = (float *)host_alloc(cpu, 4 * k * sizeof(float));
        BFK(bf_to_host(b, bn, c.bn, 4 * k * sizeof(float)));
        const bf_neuron_bn_input in = {c.channels, c.hw, bn, bn + k, bn + 2 * k, bn + 3 * k};
        BFK(ref_ops->neuron_forward_bn(cpu, &c.p, &in, n, x, y, NULL, NULL));
        BFK(ref_ops->neuron_backward_bn(cpu, &c.p, &in, n, x, dy, dx));
        case_poison(&c);
        v2_forward(&c);
        v2_backward(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    version 2 (library, batch-norm fold)\n");
        ok &= check(&c, "y", c.y, y, c.total, host, 0.0, 0.0);
        ok &= check(&c, "dx", c.dx, dx, c.total, host, dx_atol, dx_rtol);
        { /* the packing rows: the bits of the CPU's spikes_pack, exactly */
            const size_t words = (c.total + 31) / 32;
            uint32_t *want = (uint32_t *)host_alloc(cpu, words * sizeof(uint32_t));
            uint32_t *got = (uint32_t *)host_alloc(cpu, words * sizeof(uint32_t));
            BFK(ref_ops->spikes_pack(cpu, y, want, c.total));
            for (int way = 0; way < 2; way++) {
                CK(cudaMemsetAsync(c.bits, 0xA5, words * sizeof(uint32_t), stream));
                if (way == 0) v2_forward_packing(&c);
                else v2_forward_then_pack(&c);
                BFK(bf_to_host(b, got, c.bits, words * sizeof(uint32_t)));
                const int same = memcmp(got, want, words * sizeof(uint32_t)) == 0;
                printf("      bits (%s) %s\n", way == 0 ? "packing in the pass" : "spikes_pack after",
                       same ? "bit-exact" : "DIFFER");
                ok &= same;
            }
            bf_free(cpu, want);
            bf_free(cpu, got);
        }
        /* version 3 against the CPU's (neuron_backward_bn then batchnorm_backward, bit for bit): the
         * batch-norm's sums come in another order, so batch-norm's tolerance */
        float *dxin = (float *)host_alloc(cpu, tb), *grads = (float *)host_alloc(cpu, 2 * k * sizeof(float));
        BFK(ref_ops->neuron_batchnorm_backward(cpu, &c.p, &in, n, x, dy, dxin, grads, grads + k));
        case_poison(&c);
        v3_backward(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    version 3 (library, batch-norm backward folded in)\n");
        ok &= check(&c, "dx", c.bn_out, dxin, c.total, host, 1e-4, 1e-3);
        ok &= check(&c, "dgamma", c.bn_grad, grads, k, host, 1e-4, 1e-3);
        ok &= check(&c, "dbeta", c.bn_grad + k, grads + k, k, host, 1e-4, 1e-3);
        bf_free(cpu, dxin);
        bf_free(cpu, grads);
        bf_free(cpu, bn);
    }

    void *host_ptrs[] = {x, y, charge, dy, dx, host, stats};
    for (size_t k = 0; k < sizeof host_ptrs / sizeof host_ptrs[0]; k++) bf_free(cpu, host_ptrs[k]);
    case_free(&c);
    return ok;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_lif_lab [--batch N] [--T LIST] [--repeats N] [--peak-gbs X]\n"
               "  --batch N      batch size (default 256)\n"
               "  --T LIST       comma-separated time steps, each 1..%d (default 4,8,16)\n"
               "  --repeats N    timed runs per pass, after one warm-up (default 50)\n"
               "  --peak-gbs X   peak DRAM bandwidth in GB/s for %%peak (default: queried, else 3350)\n",
            LAB_MAX_T);
}

/* "4,8,16" -> Ts[], returns the count, or 0 on a malformed list. */
static int parse_tlist(const char *s, int *Ts) {
    int count = 0;
    const char *p = s;
    for (;;) {
        char *end = NULL;
        const long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > LAB_MAX_T || count >= LAB_MAX_TLIST) return 0;
        Ts[count++] = (int)v;
        if (*end == '\0') return count;
        if (*end != ',') return 0;
        p = end + 1;
    }
}

/* --T LIST (lab_option_fn); user: the lab_tlist to fill. */
typedef struct lab_tlist {
    int Ts[LAB_MAX_TLIST], count;
} lab_tlist;

static int tlist_option(const char *opt, const char *val, void *user) {
    if (strcmp(opt, "--T")) return 0;
    lab_tlist *tl = (lab_tlist *)user;
    int parsed[LAB_MAX_TLIST];
    const int count = parse_tlist(val, parsed);
    if (!count) {
        fprintf(stderr, "error: --T wants up to %d comma-separated integers in 1..%d, got %s\n", LAB_MAX_TLIST,
                LAB_MAX_T, val);
        return 2;
    }
    memcpy(tl->Ts, parsed, (size_t)count * sizeof(int));
    tl->count = count;
    return 1;
}

int main(int argc, char **argv) {
    lab_options o = {256, 50, 0.0};
    lab_tlist tl = {{4, 8, 16}, 3};
    const int parsed = lab_parse_options(argc, argv, &o, usage, tlist_option, &tl);
    if (parsed >= 0) return parsed;
    const int batch = o.batch, repeats = o.repeats, nT = tl.count;
    const int *Ts = tl.Ts;

    lab_device d;
    if (lab_device_open(&d, "LIF neuron kernel lab", &o)) return 1;
    bf_backend *b = d.b, *cpu = d.cpu;
    const cudaStream_t stream = d.stream;
    lab_timer *t = &d.timer;
    const lab_table tb = {40, 18, d.peak_gbs};
    printf("  LIF decay 0.95, threshold 1, hard reset (not detached), STBP, surrogate 0.3*tanh', fp32; "
           "%d timed runs per pass\n",
           repeats);
    printf("  byte model (versions 0 and 1): fwd 12*T*n (x in; y, charge out), bwd 12*T*n (charge, dy in; dx out);\n"
           "  version 2: fwd 8*T*n (x in, y out), bwd 12*T*n (x, dy in; dx out); \"1 + BN apply\" 20*T*n forward\n\n");

    /* ---- correctness first ---- */
    printf("validation against the CPU reference backend:\n");
    int ok = 1;
    for (int ti = 0; ti < nT; ti++) {
        const int T = Ts[ti];
        const size_t samples = T <= 16 ? 20 : (320 / (size_t)T > 0 ? 320 / (size_t)T : 1);
        char label[64];
        snprintf(label, sizeof label, "64x32x32, %zu samples", samples);
        ok &= validate_case(b, stream, cpu, label, samples * 64 * 32 * 32, T, 64, 32 * 32);
    }
    ok &= validate_case(b, stream, cpu, "odd size (scalar kernels, partial blocks)", 1155, 5, 7, 33);
    if (!lab_validated(ok)) return 1;

    /* ---- timings ---- */
    for (int ti = 0; ti < nT; ti++) {
        const int T = Ts[ti];
        printf("T = %d, batch %d (version 0: %d launches forward, %d backward; at equal bandwidth version 1 would "
               "be x%.2f forward, x%.2f backward)\n",
               T, batch, 3 * T + 1, 3 * T, (32.0 * T + 4.0) / (12.0 * T), (40.0 * T - 4.0) / (12.0 * T));
        lab_print_header(&tb, "layer (count)  activation  n");
        double sum_v0 = 0.0, sum_v1 = 0.0, sum_v0f = 0.0, sum_v1f = 0.0, sum_v0b = 0.0, sum_v1b = 0.0;
        double sum_lib = 0.0, sum_replaced = 0.0; /* version 2 on conv layers, 1 on fc; and what it replaces */
        double sum_v3 = 0.0, sum_v2bn = 0.0;      /* conv layers' backward with their batch-norm's */
        double bytes_v1 = 0.0, bytes_lib = 0.0;   /* the byte models summed as the times are */
        int skipped = 0, layers = 0;
        for (int si = 0; si < NUM_SHAPES; si++) {
            const lab_shape *sh = &k_shapes[si];
            const size_t n = (size_t)batch * (size_t)sh->c * (size_t)sh->h * (size_t)sh->h;
            char lead[96];
            if (sh->h > 1)
                snprintf(lead, sizeof lead, "%s (%d) %dx%dx%d n=%zu", sh->name, sh->count, sh->c, sh->h, sh->h, n);
            else
                snprintf(lead, sizeof lead, "%s (%d) %d n=%zu", sh->name, sh->count, sh->c, n);
            layers += sh->count;
            lab_case c;
            case_shapes(&c, n, T, sh->c, sh->h * sh->h);
            if (!lab_fits(&tb, lead, case_bytes(&c))) {
                skipped = 1;
                continue;
            }
            case_alloc(&c, b, stream);
            case_init(&c);
            /* warm-up: first launches, the library's scratch growth for the monitor (it synchronises), clocks */
            v0_forward(&c);
            v0_backward(&c);
            v1_forward_stats(&c);
            v1_forward(&c);
            v1_backward(&c);
            v1_bn_forward(&c);
            v2_forward(&c);
            v2_backward(&c);
            v2_bn_backward(&c);
            v3_backward(&c);
            v2_forward_then_pack(&c);
            v2_forward_packing(&c);
            CK(cudaStreamSynchronize(stream));
            CK(cudaGetLastError());

            const double v1bn_f = time_pass(t, &c, v1_bn_forward);
            const double v2_f = time_pass(t, &c, v2_forward), v2_b = time_pass(t, &c, v2_backward);
            const double v0_f = time_pass(t, &c, v0_forward), v0_b = time_pass(t, &c, v0_backward);
            const double v1_f = time_pass(t, &c, v1_forward), v1_b = time_pass(t, &c, v1_backward);
            const double v1s_f = time_pass(t, &c, v1_forward_stats);
            const double v2bn_b = time_pass(t, &c, v2_bn_backward), v3_b = time_pass(t, &c, v3_backward);
            const double v2p_f = time_pass(t, &c, v2_forward_then_pack), v2pp_f = time_pass(t, &c, v2_forward_packing);

            char tail[96], tail_s[64];
            snprintf(tail, sizeof tail, "x%.2f (fwd x%.2f, bwd x%.2f)", (v0_f + v0_b) / (v1_f + v1_b), v0_f / v1_f,
                     v0_b / v1_b);
            snprintf(tail_s, sizeof tail_s, "fwd x%.2f", v0_f / v1s_f);
            lab_print_row(&tb, lead, "0 unfused", v0_f, bytes_fwd(&c), v0_b, bytes_bwd(&c), "");
            lab_print_row(&tb, "", "1 fused (library)", v1_f, bytes_fwd(&c), v1_b, bytes_bwd(&c), tail);
            lab_print_row(&tb, "", "1 +spike stats", v1s_f, bytes_fwd(&c), -1.0, 0.0, tail_s);
            char tail2[96];
            snprintf(tail2, sizeof tail2, "x%.2f over 1 + BN apply (fwd x%.2f)", (v1bn_f + v1_b) / (v2_f + v2_b),
                     v1bn_f / v2_f);
            lab_print_row(&tb, "", "1 + BN apply", v1bn_f, bytes_fwd(&c) + bytes_fwd2(&c), -1.0, 0.0, "");
            lab_print_row(&tb, "", "2 batch-norm fold", v2_f, bytes_fwd2(&c), v2_b, bytes_bwd(&c), tail2);
            char tailp[64];
            snprintf(tailp, sizeof tailp, "fwd x%.2f over 2 + spikes_pack%s", v2p_f / v2pp_f,
                     c.n % 32 ? " (n % 32 != 0: packed after)" : "");
            lab_print_row(&tb, "", "2 + spikes_pack", v2p_f, bytes_fwd2(&c) + 4.125 * (double)c.total, -1.0, 0.0, "");
            lab_print_row(&tb, "", "2 packing in pass", v2pp_f, bytes_fwd2_pack(&c), -1.0, 0.0, tailp);
            char tail3[64];
            snprintf(tail3, sizeof tail3, "bwd x%.2f over 2 + BN backward", v2bn_b / v3_b);
            lab_print_row(&tb, "", "2 + BN backward", -1.0, 0.0, v2bn_b, bytes_bwd_bn(&c), "");
            lab_print_row(&tb, "", "3 BN backward fold", -1.0, 0.0, v3_b, bytes_bwd3(&c), tail3);
            const int conv = sh->h > 1;
            if (conv) {
                sum_v3 += sh->count * v3_b;
                sum_v2bn += sh->count * v2bn_b;
            }
            sum_lib += sh->count * (conv ? v2_f + v2_b : v1_f + v1_b);
            bytes_v1 += sh->count * (bytes_fwd(&c) + bytes_bwd(&c));
            bytes_lib += sh->count * (conv ? bytes_fwd2(&c) + bytes_bwd(&c) : bytes_fwd(&c) + bytes_bwd(&c));
            sum_replaced += sh->count * (conv ? v1bn_f + v1_b : v1_f + v1_b);
            sum_v0f += sh->count * v0_f;
            sum_v0b += sh->count * v0_b;
            sum_v1f += sh->count * v1_f;
            sum_v1b += sh->count * v1_b;
            sum_v0 += sh->count * (v0_f + v0_b);
            sum_v1 += sh->count * (v1_f + v1_b);
            case_free(&c);
        }
        if (skipped)
            printf("PlasticFlex VGG-11, T = %d, batch %d: some layers were skipped, no per-step total\n\n", T, batch);
        else
            printf("PlasticFlex VGG-11, T = %d, batch %d, %d LIF layers, fwd+bwd per step: version 0 %.3f ms, version 1 "
                   "%.3f ms, speed-up x%.2f (fwd x%.2f, bwd x%.2f)\n\n",
                   T, batch, layers, sum_v0, sum_v1, sum_v0 / sum_v1, sum_v0f / sum_v1f, sum_v0b / sum_v1b);
        /* issue 4's bandwidth target is over the whole step's fused LIF kernels: the layers' bytes
         * (the byte model above) over their summed times, not a mean of per-layer percentages */
        if (!skipped)
            printf("  whole step, version 1 (the fused LIF op alone): %.1f GB/s, %.1f %% of peak; the library's path "
                   "(version 2 after batch-norms): %.1f GB/s, %.1f %% of peak\n\n",
                   bytes_v1 / (sum_v1 * 1e6), 100.0 * bytes_v1 / (sum_v1 * 1e6) / tb.peak_gbs, bytes_lib / (sum_lib * 1e6),
                   100.0 * bytes_lib / (sum_lib * 1e6) / tb.peak_gbs);
        if (!skipped)
            printf("  what training runs (version 2 after the conv layers' batch-norms, version 1 on fc1/fc2): %.3f ms "
                   "per step, against %.3f ms for the batch-norm output written and version 1 (x%.2f)\n\n",
                   sum_lib, sum_replaced, sum_replaced / sum_lib);
        if (!skipped)
            printf("  the conv layers' neuron and batch-norm backward: version 3 %.3f ms per step, version 2 then "
                   "batchnorm_backward %.3f ms (x%.2f)\n\n", sum_v3, sum_v2bn, sum_v2bn / sum_v3);
    }

    lab_device_close(&d);
    return 0;
}
