/* flex_lab.cu - kernel lab (the llm.c dev/cuda pattern, ../shared/specs/engine-anchors.md 1.3) for
 * the flex layer's channel-wise max joint, forward and backward, WITHOUT the convolution, at the
 * FlexNet VGG-16 shapes (every flex layer is 3x3, stride 1, pad 1; EXPAND widening; SPLIT ties):
 *
 *   forward:  P, argmax = maxpool3x3(x)                    x [n, c_in, h, w], P [n, c_in, hw]
 *             P~ = widen(P)  (channel j copies P channel j/(c_out/c_in), or j % c_in when c_in
 *                             does not divide c_out; ops.h bf_flex_shape)
 *             y = max(C, P~),  conv_wins += #(C > P~)       C, y [n, c_out, hw]
 *   backward: dC = dy where C > P~, dy/2 on ties, else 0;  dP~ = dy - dC
 *             dP = fold-back(dP~) (sum over the channels j that copy P channel i)
 *             dx_pool = maxpool_backward(dP, argmax)
 *
 * C (the conv branch's output) and dy are random inputs; the conv and its two backward passes are
 * not run, nor the add of dx_pool into the conv's dx. Inputs are multiples of 1/8 (x in [-2, 2],
 * C in [-2, 4]) so that conv wins, pool wins AND exact ties all occur and the tie rule is checked.
 *
 * Versions (the table prints all three, the speed-ups of 1 over 0 and of 2 over 0 and over 1, and
 * the memory each keeps from the forward for the backward; version 2's row reads "xA over 0, xB
 * over 1 (fwd xC/xD, bwd xE/xF)": forward and backward alone, over 0 / over 1):
 *   0  unfused: the sequence PyTorch eager runs for FlexNet's Flex2D, one kernel per op, written in
 *      this file (version-0 kernels are named *_kernel0):
 *        (a) widen_kernel0: P~ materialised (FlexNet's channel_expand_view copies; it is skipped
 *            when c_in == c_out, where FlexNet uses P itself);
 *        (b) max_kernel0: y = torch.maximum(C, P~);
 *        (c) mask_kernel0: is_conv = (C > P~) as a byte tensor, and count_kernel0 (+ a one-thread
 *            finish) summing it into conv_wins: FlexNet's conv_ratio monitor;
 *        (d) split_kernel0: torch.maximum's backward from the saved C and P~: dy -> dC and dP~;
 *        (e) fold_kernel0: channel_expand's backward, dP~ -> dP (skipped when c_in == c_out: the
 *            split writes dP directly).
 *      The elementwise kernels use 16-byte vector loads when hw % 4 == 0 (all VGG shapes), as
 *      PyTorch's do, so version 0 is a fair eager baseline rather than a straw man.
 *   1  the library's fused ops through the public bf_ops table, i.e. exactly what layer_flex.c
 *      runs in training: maxpool_forward + flex_max_forward (with the conv_wins monitor);
 *      flex_max_backward + maxpool_backward.
 *   2  the library's fused pool-and-joint ops through the public bf_ops table (what a flex layer
 *      with the max joint runs once layer_flex.c uses them; ops.h flex_pool_max_forward):
 *        forward:  flex_pool_max_forward: the pool branch's window maxima are taken straight from x,
 *                  y = max(C, P~) is written IN PLACE over C (the conv writes C into y), and only
 *                  a window byte per pooled element and a winners and a ties bit per element are kept; P, P~
 *                  and argmax are never stored;
 *        backward: flex_pool_max_backward (dC and dP from dy and the two bits alone) +
 *                  flex_pool_scatter_add (dx += maxpool_backward(dP), through the window bytes).
 *      Outside the timed region: the copy of C into y before each forward (in a layer the conv
 *      writes there, so it costs nothing), and zeroing dx before each backward (scatter_add adds,
 *      in a layer onto the conv's dx; versions 0 and 1 overwrite dx_pool instead, and their add
 *      into the conv's dx is not run).
 *   The max-pool and its backward are the library's kernels in versions 0 and 1 (PyTorch eager
 *   also runs one max_pool2d_with_indices kernel each way); the "pool" row times them alone, so
 *   those versions' joint time is their time minus the pool row. Version 2 has no separate pool:
 *   compare its whole time with the others'.
 *   Pool v1 (the "pool v1 (sliding)" row, forward only, with its speed-up over the pool row's
 *   forward): a candidate for the library's 3x3 stride-1 max-pool forward, written in this file
 *   (pool_forward_kernel1): each input element is loaded from global memory once (halos aside),
 *   coalesced (float4 when w % 4 == 0), the 3-wide row maxima come from warp shuffles and slide
 *   down the rows in registers; same outputs (P and argmax) and byte count as the library's.
 *   3  sliding-window fused forward (the "3 sliding fused" row, forward only, with its speed-up
 *      over version 2's forward): the library's flex_pool_max_forward under [run] flex_kernels =
 *      slide (src/kernels/flex_slide.cuh), for EXPAND and the 3x3 stride-1 window, built on pool v1's sliding
 *      window: each window maximum is made once in registers, then for every output channel that
 *      copies its pooled channel C is read and y written coalesced (float4), and the winners bits
 *      are gathered by warp shuffles into whole words with plain stores (atomicOr only for words
 *      straddling rows, strips or planes; the bitmap is zeroed first unless w % 32 == 0). Same four
 *      outputs as version 2, bit for bit, and the same preparation (y starts as C); its backward
 *      would be version 2's. A shape it does not support (not EXPAND, not 3x3/s1/p1) prints a
 *      "skipped" row with the reason.
 *   4  the backward with the scatter (the "4 route+scatter" row, backward only, on version 2's forward
 *      outputs): flex_pool_max_backward_scatter, what a flex layer runs under [model]
 *      fuse_flex_scatter (the default): one thread per input element takes each window's share from
 *      dy and the bits where the window's byte chose it, writing dconv, and overwrites dx with the
 *      sum; dP is never stored and dx never read (in a layer the conv's backward-data then adds onto
 *      dx with cuDNN's beta = 1, a read of dx that is the conv's, outside the lab). Checked bit for
 *      bit against the CPU's dconv and dx_pool; its totals are given with version 2's forward (and
 *      version 3's).
 *   4 with the next batch-norm (rows "4 + BN backward" and "4 BN applied", backward only, on version
 *      2's forward outputs, the batch-norm and its ReLU of FlexNet's VGG-16 after every flex layer,
 *      y its input and dy its output gradient): batchnorm_relu_backward writing its dx and then
 *      version 4 on it (20*Nc bytes more than version 4), against [model] fuse_flex_bn (the
 *      default): batchnorm_backward_sums, then flex_pool_max_backward_scatter_bn computing the
 *      batch-norm's dx from dy and y as it routes (12*Nc more: the sums read y and dy, the route
 *      reads y too). Checked bit for bit against each other (the same sums on the GPU).
 *   4 with the batch-norm and the conv's bias gradient (rows "4 BN + dbias after" and "4 BN + dbias
 *      in route"): "4 BN applied" then the conv's channel sum over dconv (what conv2d_backward_filter
 *      runs for dbias: 4*Nc bytes more), against the route summing it per block as it writes dconv
 *      ([model] fold_conv_bias). Checked against each other to 1e-6 (two orders of double sums).
 *   the route alone (row "route alone BN+dbias", backward only): the batch-norm's sums, then
 *      flex_pool_max_backward_bn applying its dx and summing the bias gradient, without a scatter:
 *      what the network runs at conv1_1, whose input (the image) needs no gradient; the step's
 *      total with it in place of version 4 there is printed at the end.
 *   2 with the next batch-norm's statistics (rows "2 + BN stats" and "2 stats in pass", forward only,
 *      from C as version 2): version 2's forward then batchnorm_forward_train's statistics alone (a
 *      pass over y: 4*Nc bytes more), against [model] fuse_flex_bn_stats (the default):
 *      flex_pool_max_forward_bn_stats adding each y to its channel's sums as it writes it (version
 *      2's bytes, the partial sums aside). y checked bit for bit, the statistics to 1e-6. The same
 *      for version 3 (rows "3 + BN stats" and "3 stats in pass": the sliding-window forward's sums).
 *      A total
 *      line then puts the batch-norm's statistics and backward on both sides: version 0 plus the
 *      batch-norm's own two passes (timed alone) against the library's default, these two rows'
 *      fused forward and "4 BN applied".
 *   4 on the sliding window (rows "4 slide" and "4 slide BN applied", backward only): the same two
 *      calls under [run] flex_kernels = slide (flex_slide.cuh's k_slide_route_scatter: the route
 *      computed per output row as the scatter's window slides, dconv apart from dy), checked bit for
 *      bit against the CPU and version 4; the byte model of version 4 (the halo rows' dy again aside).
 *   Scatter (the "scatter (library)" and "scatter v1 (slide)" rows, backward only): the backward's
 *      last step alone, dx += maxpool_backward(dP) through the window bytes, the library's
 *      flex_pool_scatter_add (one thread per input gathering from its 9 windows) against scatter v1
 *      (the same call under flex_kernels = slide, src/kernels/flex_slide.cuh: a sliding window, each
 *      dP and byte loaded once, neighbours by shuffles, dx read and written once), validated bit for bit against the CPU's dx_pool first. Byte model:
 *      read window and dP, read and write dx: 1Np + 4Np + 8X.
 *
 * Byte model (what each step must minimally move: every tensor it reads or writes crosses DRAM
 * once, nothing is reused across kernels; 4 bytes per float and int32, 1 per is_conv or window
 * byte, 1/8 per winners bit;
 * X = n*c_in*h*w input elements, Np = n*c_in*hw pooled elements, Nc = n*c_out*hw branch elements;
 * GB = 1e9 bytes; the one-float monitors are ignored):
 *   pool fwd:    read x, write P and argmax                           4X + 8Np   (also pool v1)
 *   pool bwd:    read dP and argmax, write dx_pool                     8Np + 4X
 *   version 1 fwd = pool fwd + flex_max_forward (read C and P, write y)        + 8Nc + 4Np
 *   version 1 bwd = flex_max_backward (read C, P, dy; write dC, dP) + pool bwd + 12Nc + 8Np
 *     (counted at the op's contract, not at its current two-kernel implementation, which re-reads
 *      dy and dC in the fold-back: its %peak is therefore measured against the ideal fused op.)
 *   version 0 fwd = pool fwd + (a) read P, write P~ [4Np + 4Nc, only when c_in != c_out]
 *                   + (b) read C, P~, write y [12Nc] + (c) read C, P~, write is_conv [9Nc]
 *                   + sum of is_conv [1Nc]
 *   version 0 bwd = (d) read C, P~, dy, write dC, dP~ [20Nc]
 *                   + (e) read dP~, write dP [4Nc + 4Np, only when c_in != c_out] + pool bwd
 *   version 2 fwd = read x once [4X] + read C and write y [8Nc] + write window [1Np]
 *                   + write winners and ties [Nc/4: ties zeroed, then ORed in where rare
 *                   ties occur]                                                   (also version 3)
 *   version 2 bwd = route: read winners and ties [Nc/4] and dy [4Nc]; write dC [4Nc] and dP [4Np]
 *                   + scatter: read window [1Np] and dP [4Np], read and write dx [8X]
 *   version 4 bwd = read winners and ties [Nc/4], dy [4Nc] and window [1Np]; write dC [4Nc] and dx [4X]
 *     (x is counted once although neighbouring windows overlap: they come from L1/L2.)
 *   GB/s = bytes / mean time; %peak = GB/s over the device's peak DRAM bandwidth.
 *
 * Memory kept from the forward for the backward (besides y, the next layer's input, and x, the
 * conv's; argmax counted at 4 bytes, a float's size):
 *   version 0: C, P~ and argmax [8Nc + 4Np] (P itself instead of P~ when c_in == c_out: 4Nc + 8Np);
 *   version 1: C, P and argmax [4Nc + 8Np];
 *   version 2: the window bytes, the winners and the ties bits [1Np + Nc/4] (C is y's buffer,
 *              overwritten);
 *   version 3: the same as version 2 (its outputs are version 2's).
 *
 * Correctness: before any timing, every version's outputs (P, y, conv_wins, dC, dP, dx_pool; no P
 * in version 2, which does not store it) are compared with the CPU reference backend
 * (bf_backend_create_cpu: maxpool_forward, flex_max_forward, flex_max_backward, maxpool_backward)
 * on the batch-32 3->64 @224x224, 64->128 @112x112 and 512->512 @14x14 shapes; version 0 is
 * checked with its vector and its scalar kernels. Version 2's window bytes are also checked against
 * the CPU's argmax (as kh*k + kw) and its winners bits against C >= P~. Pool v1's P and argmax are
 * checked on the same shapes (argmax bit for bit), and, bit for bit in y and argmax, on small and
 * odd shapes whose inputs are full of ties, -0/+0, -inf and NaNs (validate_pool_v1_edges). Version
 * 3's y, conv_wins, window and winners are checked on the same shapes against the CPU as version 2's
 * are, bit for bit against version 2's four outputs, and through the library's backward run on them
 * (dconv, dpooled, dx_pool against the CPU); and bit for bit against the CPU backend's
 * flex_pool_max_forward on small, odd and tiling shapes (5->13, 8->3 with untapped channels) whose x
 * and C are full of ties, -0/+0, -inf and NaNs (validate_v3_edges). Outputs
 * are poisoned (all bits set: NaN) before each run, so an unwritten element fails. The program
 * prints the largest |gpu - cpu| and the largest violation |gpu - cpu| / (1e-6 + 1e-5|cpu|) per
 * tensor (<= 1 passes; every version is expected to be bit-exact) and exits 1 on a mismatch.
 *
 * Timing: CUDA events on the backend's stream around each forward or backward pass, mean over
 * --repeats runs after one warm-up run, with the L2 cache flushed before every run (a cudaMemset of
 * a buffer twice cudaDeviceProp.l2CacheSize, outside the timed region; version 2's preparation,
 * the copy of C into y or the zeroing of dx, runs before the flush, also untimed). Each case
 * allocates its buffers and is skipped (with a line saying so) when they exceed 40% of free device
 * memory.
 *
 * Build and run (needs the CUDA backend: nvcc, cuDNN 9 and cuBLAS):
 *   cmake -S . -B build -DBIOFLEX_CUDA=ON && cmake --build build -j --target bench_flex_lab
 *   ./build/bench/bench_flex_lab                  # batch 32 and 128, 50 repeats
 *   ./build/bench/bench_flex_lab --batch 128 --repeats 100
 *   ./build/bench/bench_flex_lab --peak-gbs 2039  # e.g. H100 PCIe; overrides the queried peak
 * Options: --batch N (default: both 32 and 128), --repeats N (default 50), --peak-gbs X (default:
 * memory clock x bus width x 2 from cudaDeviceGetAttribute, or 3350, H100 SXM, when the driver
 * reports no memory clock). Exit status 0 all checks passed, 1 a mismatch or CUDA error, 2 a bad
 * command line. It uses device 0 (select another with CUDA_VISIBLE_DEVICES). The batch-128
 * 64->64 @224x224 case needs about 16 GB of device memory, the CPU check about 2.5 GB of host memory.
 *
 * The file includes the backend's private header (src/kernels/cuda_backend.h) for one thing only:
 * the backend's stream, on which the version-0 kernels are launched and the events recorded. */
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

/* ---- version 0: the unfused kernels ---- */

/* EXPAND widening: output channel j copies P channel j / ratio (ratio = c_out / c_in when c_in
 * divides c_out) or j % c_in (ratio = 0: tiling, FlexNet's channel_repeat). */
struct lab_geo {
    int c_in, c_out, hw, ratio;
};

__device__ __forceinline__ int src_channel(const lab_geo &g, int j) { return g.ratio ? j / g.ratio : j % g.c_in; }

/* V consecutive bytes (lab_util.cuh has the floats); V = 4 loads and stores 4 bytes at once. Callers
 * guarantee V-element alignment: every offset is a multiple of V (hw % V == 0, cudaMalloc aligns to 256). */
template <int V>
struct bvec {
    uint8_t v[V];
};

template <int V>
__device__ __forceinline__ bvec<V> load_b(const uint8_t *p) {
    bvec<V> r;
    if constexpr (V == 4) {
        const uchar4 q = *reinterpret_cast<const uchar4 *>(p);
        r.v[0] = q.x;
        r.v[1] = q.y;
        r.v[2] = q.z;
        r.v[3] = q.w;
    } else {
        r.v[0] = *p;
    }
    return r;
}

template <int V>
__device__ __forceinline__ void store_b(uint8_t *p, const bvec<V> &r) {
    if constexpr (V == 4) {
        *reinterpret_cast<uchar4 *>(p) = make_uchar4(r.v[0], r.v[1], r.v[2], r.v[3]);
    } else {
        *p = r.v[0];
    }
}

/* (a) P~ [n, c_out, hw] = widen(P [n, c_in, hw]); `vecs` = n*c_out*hw / V. */
template <int V>
__global__ void widen_kernel0(const float *__restrict__ pooled, float *__restrict__ widened, size_t vecs, lab_geo g) {
    const size_t hw = (size_t)g.hw;
    LAB_GRID_STRIDE(v, vecs) {
        const size_t idx = v * V, plane = idx / hw, p = idx - plane * hw; /* V | hw: one plane */
        const size_t n = plane / (size_t)g.c_out;
        const int j = (int)(plane - n * (size_t)g.c_out);
        const size_t src = (n * (size_t)g.c_in + (size_t)src_channel(g, j)) * hw + p;
        store_f<V>(widened + idx, load_f<V>(pooled + src));
    }
}

/* (b) y = torch.maximum(C, P~): a NaN on either side propagates. */
template <int V>
__global__ void max_kernel0(const float *__restrict__ conv, const float *__restrict__ widened, float *__restrict__ y,
                            size_t vecs) {
    LAB_GRID_STRIDE(v, vecs) {
        const fvec<V> c = load_f<V>(conv + v * V), w = load_f<V>(widened + v * V);
        fvec<V> o;
#pragma unroll
        for (int k = 0; k < V; k++) o.v[k] = c.v[k] > w.v[k] || c.v[k] != c.v[k] ? c.v[k] : w.v[k];
        store_f<V>(y + v * V, o);
    }
}

/* (c) is_conv = (C > P~), strict: a tie counts as pool. */
template <int V>
__global__ void mask_kernel0(const float *__restrict__ conv, const float *__restrict__ widened,
                             uint8_t *__restrict__ is_conv, size_t vecs) {
    LAB_GRID_STRIDE(v, vecs) {
        const fvec<V> c = load_f<V>(conv + v * V), w = load_f<V>(widened + v * V);
        bvec<V> m;
#pragma unroll
        for (int k = 0; k < V; k++) m.v[k] = c.v[k] > w.v[k] ? 1 : 0;
        store_b<V>(is_conv + v * V, m);
    }
}

/* (c) sum of is_conv: per-block integer sums added atomically (integers: exact in any order). */
template <int V>
__global__ void count_kernel0(const uint8_t *__restrict__ is_conv, size_t vecs, unsigned long long *__restrict__ counter) {
    unsigned long long local = 0;
    LAB_GRID_STRIDE(v, vecs) {
        const bvec<V> m = load_b<V>(is_conv + v * V);
#pragma unroll
        for (int k = 0; k < V; k++) local += m.v[k];
    }
    local = bf_block_sum(local); /* every thread of the block calls it */
    if (threadIdx.x == 0 && local) atomicAdd(counter, local);
}

/* conv_wins += the count (rounded as the library does), and the counter is reset for the next pass. */
__global__ void count_finish_kernel0(unsigned long long *counter, float *conv_wins) {
    *conv_wins = (float)((double)*conv_wins + (double)*counter);
    *counter = 0;
}

/* (d) torch.maximum's backward: dC = dy where C > P~, dy*conv_tie on ties, else 0; dP~ = dy where
 * P~ wins, dy*pool_tie on ties, 0 where C wins (conv_tie + pool_tie = 1; SPLIT: 0.5 each). */
template <int V>
__global__ void split_kernel0(const float *__restrict__ conv, const float *__restrict__ widened,
                              const float *__restrict__ dy, float *__restrict__ dconv, float *__restrict__ dwidened,
                              size_t vecs, float conv_tie, float pool_tie) {
    LAB_GRID_STRIDE(v, vecs) {
        const fvec<V> c = load_f<V>(conv + v * V), w = load_f<V>(widened + v * V), g = load_f<V>(dy + v * V);
        fvec<V> dc, dw;
#pragma unroll
        for (int k = 0; k < V; k++) {
            const bool conv_wins = c.v[k] > w.v[k], tie = c.v[k] == w.v[k];
            dc.v[k] = conv_wins ? g.v[k] : tie ? __fmul_rn(g.v[k], conv_tie) : 0.0f;
            dw.v[k] = conv_wins ? 0.0f : tie ? __fmul_rn(g.v[k], pool_tie) : g.v[k];
        }
        store_f<V>(dconv + v * V, dc);
        store_f<V>(dwidened + v * V, dw);
    }
}

/* (e) dP [n, c_in, hw] = sum over the output channels j that copy P channel i, ascending j (the
 * CPU reference's order), of dP~ [n, j, hw]; `vecs` = n*c_in*hw / V. */
template <int V>
__global__ void fold_kernel0(const float *__restrict__ dwidened, float *__restrict__ dpooled, size_t vecs, lab_geo g) {
    const size_t hw = (size_t)g.hw;
    LAB_GRID_STRIDE(v, vecs) {
        const size_t idx = v * V, plane = idx / hw, p = idx - plane * hw;
        const size_t n = plane / (size_t)g.c_in;
        const int i = (int)(plane - n * (size_t)g.c_in);
        int lo, hi, step;
        if (g.ratio) {
            lo = i * g.ratio;
            hi = lo + g.ratio;
            step = 1;
        } else { /* tiling: j = i, i + c_in, ... (none when i >= c_out) */
            lo = i;
            hi = g.c_out;
            step = g.c_in;
        }
        const float *base = dwidened + n * (size_t)g.c_out * hw + p;
        fvec<V> acc;
#pragma unroll
        for (int k = 0; k < V; k++) acc.v[k] = 0.0f;
        for (int j = lo; j < hi; j += step) {
            const fvec<V> d = load_f<V>(base + (size_t)j * hw);
#pragma unroll
            for (int k = 0; k < V; k++) acc.v[k] = __fadd_rn(acc.v[k], d.v[k]);
        }
        store_f<V>(dpooled + idx, acc);
    }
}

/* ---- pool v1: the 3x3 stride-1 pad-1 max-pool forward as a sliding window ----
 *
 * The library's k_maxpool_forward gives each output its own thread and 9 bounds-checked loads
 * (window_max); on the H200 it stays near a quarter of DRAM bandwidth, which points at instructions
 * and L1 traffic, not DRAM, as its limit. This version loads each input element from global memory
 * once per band it lies in (a band's two halo rows are its neighbours' rows too: L1/L2 hits):
 *   - a GROUP of G lanes (G a power of two, 1..32) takes one ITEM: a band of `rows` output rows of
 *     one (n, c) plane and one column strip of 32*V columns (the whole row when it fits, so a
 *     narrow plane's warp holds several groups instead of idle lanes); lane l of the group owns the
 *     V columns c0 = (strip*G + l)*V .. c0+V-1 (V = 4, a float4, when w % 4 == 0, else 1);
 *   - the group walks down its band's input rows (one halo row above and below): each row is one
 *     coalesced load per lane, loaded two rows ahead; the columns left and right of a lane's V
 *     come from its neighbours by __shfl_up_sync / __shfl_down_sync (within the group: width G),
 *     and only at a strip's edge from global memory (rows wider than 32*V: an L1/L2 hit);
 *   - separable maximum: each row's 3-wide maxima are kept for the last three rows in registers,
 *     and output row oh is the maximum over rows oh-1, oh, oh+1 of those.
 * Bit-identical to window_max (y and argmax): its rule (the first in-bounds element initialises; v
 * replaces when v > best, or when v is NaN and best is not) picks the first NaN in scan order if
 * there is one, else the first maximum. Taken along kw within each row, then along kh over the
 * rows' winners, it picks the same element: the first row holding a NaN holds the window's first
 * NaN, and without NaNs the first row reaching the maximum holds its first occurrence (-0 and +0
 * compare equal, so the earlier one stays, as in the row-major scan). Padding rows and columns are
 * skipped, never -infinity, so a window of NaN-free -infinities still reports an in-bounds place.
 * The loop count is the same for every lane (rows + 2) so that the shuffles see the whole warp;
 * lanes without work (past the row's end, past the last item) load and store nothing. */
struct slide_geo {
    int h, w;       /* the plane; 3x3, stride 1, pad 1 keeps its size */
    int log2_group; /* G = 1 << log2_group lanes per item */
    int strips;     /* column strips per row: 1 when the row fits in G lanes (then G < 32 is allowed) */
    int bands;      /* row bands per plane */
    int rows;       /* output rows per band; the last band may have fewer */
    size_t items;   /* planes * bands * strips */
};

/* window_max's replacement rule, v > best || (v != v && best == best), in two comparisons: once best
 * is a NaN nothing replaces it; otherwise v replaces it unless v <= best (false for a NaN v). */
__device__ __forceinline__ bool pool_better(float v, float best) { return best == best && !(v <= best); }

/* One input row as a lane sees it: its V columns and, at a strip's edges, the column beyond. */
template <int V>
struct slide_row {
    fvec<V> v;
    float left, right;
};

/* Input row ih (zeros where nothing is loaded: a row outside the band or plane, a lane past the row). */
template <int V>
__device__ __forceinline__ slide_row<V> slide_load(const float *__restrict__ xp, int ih, int w, bool row_ok,
                                                   bool cols, bool edge_l, bool edge_r, int c0) {
    slide_row<V> r;
#pragma unroll
    for (int j = 0; j < V; j++) r.v.v[j] = 0.0f;
    r.left = r.right = 0.0f;
    if (row_ok) {
        const float *row = xp + ih * w + c0; /* ih*w: h*w <= INT32_MAX (the library's argmax limit) */
        if (cols) r.v = load_f<V>(row);
        if (edge_l) r.left = row[-1];
        if (edge_r) r.right = row[V];
    }
    return r;
}

template <int V>
__global__ void __launch_bounds__(LAB_THREADS) pool_forward_kernel1(const float *__restrict__ x,
                                                                    float *__restrict__ y,
                                                                    int32_t *__restrict__ argmax, slide_geo g) {
    const unsigned full = 0xffffffffu;
    const int lane = (int)(threadIdx.x & 31), G = 1 << g.log2_group, gl = lane & (G - 1);
    const size_t warp = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const size_t item = (warp << (5 - g.log2_group)) + (size_t)(lane >> g.log2_group);
    const bool live = item < g.items;
    const size_t it = live ? item : 0;
    const int strip = (int)(it % (size_t)g.strips);
    const size_t rest = it / (size_t)g.strips;
    const int band = (int)(rest % (size_t)g.bands);
    const size_t plane = rest / (size_t)g.bands;
    const int h = g.h, w = g.w;
    const int c0 = (strip * G + gl) * V;
    const int r0 = band * g.rows, r1 = min(r0 + g.rows, h); /* output rows [r0, r1); input rows r0-1 .. r1 */
    const bool cols = live && c0 < w;
    const bool edge_l = cols && gl == 0 && c0 > 0;     /* column c0-1 is in the strip to the left */
    const bool edge_r = cols && gl == G - 1 && c0 + V < w; /* column c0+V is in the strip to the right */
    const float *xp = x + plane * (size_t)h * (size_t)w;
    float *yp = y + plane * (size_t)h * (size_t)w;
    int32_t *ap = argmax + plane * (size_t)h * (size_t)w;

    /* the 3-wide row maxima of input rows oh-1 (a), oh (b) and oh+1 (c): values, and their offsets
     * in the plane (ih*w + iw, the argmax's form) */
    float va[V], vb[V], vc[V];
    int ca[V], cb[V], cc[V];
#pragma unroll
    for (int j = 0; j < V; j++) {
        va[j] = vb[j] = vc[j] = 0.0f;
        ca[j] = cb[j] = cc[j] = 0;
    }
    const int steps = g.rows + 2; /* the same in every lane: the shuffles need the whole warp */
    int ih = r0 - 1;
    /* rows are loaded two ahead of their use (ih <= r1 ends the band: at most steps rows) */
    slide_row<V> cur = slide_load<V>(xp, ih, w, live && ih >= 0 && ih <= r1 && ih < h, cols, edge_l, edge_r, c0);
    slide_row<V> nxt = slide_load<V>(xp, ih + 1, w, live && ih + 1 <= r1 && ih + 1 < h, cols, edge_l, edge_r, c0);
#pragma unroll 1
    for (int t = 0; t < steps; t++, ih++) {
        /* row ih+2's loads first, so that two rows are in flight during this row's work */
        const int in = ih + 2;
        const slide_row<V> far = slide_load<V>(xp, in, w, live && in <= r1 && in < h, cols, edge_l, edge_r, c0);
        float left = __shfl_up_sync(full, cur.v.v[V - 1], 1, G);
        float right = __shfl_down_sync(full, cur.v.v[0], 1, G);
        if (edge_l) left = cur.left;
        if (edge_r) right = cur.right;
        const int base = (ih < h ? ih : h - 1) * w; /* clamped: past the plane's end, ih*w could overflow */
#pragma unroll
        for (int j = 0; j < V; j++) {
            va[j] = vb[j];
            ca[j] = cb[j];
            vb[j] = vc[j];
            cb[j] = cc[j];
            /* row ih's window around column ow, in kw order over the in-bounds columns */
            const int ow = c0 + j;
            const float lv = j == 0 ? left : cur.v.v[j > 0 ? j - 1 : 0], mv = cur.v.v[j];
            const float rv = j == V - 1 ? right : cur.v.v[j < V - 1 ? j + 1 : 0];
            float best = mv;
            int at = ow;
            if (ow > 0) {
                best = lv;
                at = ow - 1;
                if (pool_better(mv, best)) {
                    best = mv;
                    at = ow;
                }
            }
            if (ow + 1 < w && pool_better(rv, best)) {
                best = rv;
                at = ow + 1;
            }
            vc[j] = best;
            cc[j] = base + at;
        }
        const int oh = ih - 1; /* rows oh-1, oh, oh+1 are now in a, b, c */
        if (cols && oh >= r0 && oh < r1) {
            fvec<V> out;
            int32_t where[V];
#pragma unroll
            for (int j = 0; j < V; j++) { /* in kh order over the in-bounds rows */
                float best = vb[j];
                int at = cb[j];
                if (oh > 0) {
                    best = va[j];
                    at = ca[j];
                    if (pool_better(vb[j], best)) {
                        best = vb[j];
                        at = cb[j];
                    }
                }
                if (oh + 1 < h && pool_better(vc[j], best)) {
                    best = vc[j];
                    at = cc[j];
                }
                out.v[j] = best;
                where[j] = at;
            }
            store_f<V>(yp + oh * w + c0, out);
            if constexpr (V == 4) {
                *reinterpret_cast<int4 *>(ap + oh * w + c0) = make_int4(where[0], where[1], where[2], where[3]);
            } else {
                ap[oh * w + c0] = where[0];
            }
        }
        cur = nxt;
        nxt = far;
    }
}

/* Test data: levels > 0: lo + step * (hash % levels) (exact multiples of step); else lo + step * U[0,1). */
__global__ void init_kernel(float *__restrict__ a, size_t n, uint64_t seed, float lo, float step, unsigned levels) {
    LAB_GRID_STRIDE(i, n) {
        a[i] = levels ? lo + step * (float)(unsigned)(bf_hash2(seed, i) % levels) : lo + step * bf_uniform(seed, i);
    }
}

/* ---- host side ---- */

typedef struct lab_shape {
    const char *name;
    int c_in, c_out, h; /* square h x h input and output */
    int count;          /* layers of VGG-16 with this shape */
} lab_shape;

/* FlexNet VGG-16 at a 224x224 input: the 13 conv layers, 9 distinct shapes. */
static const lab_shape k_shapes[] = {
    {"conv1_1", 3, 64, 224, 1},      {"conv1_2", 64, 64, 224, 1},    {"conv2_1", 64, 128, 112, 1},
    {"conv2_2", 128, 128, 112, 1},   {"conv3_1", 128, 256, 56, 1},   {"conv3_2-3", 256, 256, 56, 2},
    {"conv4_1", 256, 512, 28, 1},    {"conv4_2-3", 512, 512, 28, 2}, {"conv5_1-3", 512, 512, 14, 3},
};
#define NUM_SHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))

typedef struct lab_case {
    bf_backend *b;
    cudaStream_t stream;
    bf_pool_shape ps;
    bf_flex_shape fs;
    lab_geo g;
    int vec;                  /* version 0's vector width: 4 when hw % 4 == 0, else 1 */
    size_t nx, np, nc;        /* elements of x, P, C */
    size_t words;             /* version 2's winners words, (nc + 31) / 32 */
    float *x, *P, *C, *y, *dy, *dconv, *dP, *dx, *wins;
    float *Pw, *dPw;          /* version 0's P~ and dP~; NULL when c_in == c_out (identity) */
    int32_t *argmax;
    uint8_t *is_conv;
    unsigned long long *counter;
    uint8_t *window;          /* version 2: one byte per pooled element */
    uint32_t *winners;        /* version 2: one bit per element of y, C >= P~ */
    uint32_t *ties;           /* version 2: one bit per element of y, C == P~ */
    float *bn;                /* the "BN" rows: mean, invstd, gamma, beta [c_out] each, coef [2 c_out] */
    float *bn_dy;             /* ... the batch-norm's dx written ("4 + BN backward") [Nc] */
    float *bn_grad;           /* ... its dgamma, dbeta [c_out] each */
    float *dbias;             /* the "dbias" rows: the conv's bias gradient [c_out] */
} lab_case;

/* The shapes of one case (no allocation). */
static void case_shapes(lab_case *c, const lab_shape *sh, int n) {
    memset(c, 0, sizeof *c);
    c->ps.n = n;
    c->ps.c = sh->c_in;
    c->ps.h_in = c->ps.w_in = sh->h;
    c->ps.k = 3;
    c->ps.stride = 1;
    c->ps.pad = 1;
    BFK(bf_pool_shape_init(&c->ps));
    c->fs.n = n;
    c->fs.c_in = sh->c_in;
    c->fs.c_out = sh->c_out;
    c->fs.hw = c->ps.h_out * c->ps.w_out;
    c->fs.channels = BF_FLEX_CHANNELS_EXPAND;
    c->fs.ties = BF_FLEX_TIE_SPLIT;
    c->g.c_in = sh->c_in;
    c->g.c_out = sh->c_out;
    c->g.hw = c->fs.hw;
    c->g.ratio = sh->c_out % sh->c_in == 0 ? sh->c_out / sh->c_in : 0;
    c->vec = c->fs.hw % 4 == 0 ? 4 : 1;
    c->nx = (size_t)n * sh->c_in * sh->h * sh->h;
    c->np = (size_t)n * sh->c_in * c->fs.hw;
    c->nc = (size_t)n * sh->c_out * c->fs.hw;
    c->words = (c->nc + 31) / 32;
}

static int case_widens(const lab_case *c) { return c->fs.c_in != c->fs.c_out; }

/* Device bytes of all buffers of a case (all versions). */
static size_t case_bytes(const lab_case *c) {
    size_t floats = 2 * c->nx + 2 * c->np + 5 * c->nc + (case_widens(c) ? 2 * c->nc : 0) + 1 + 8 * (size_t)c->fs.c_out;
    return floats * sizeof(float) + c->np * sizeof(int32_t) + c->nc + sizeof(unsigned long long) + c->np +
           c->words * sizeof(uint32_t) + 21 * 256;
}

static void case_alloc(lab_case *c, bf_backend *b, cudaStream_t stream) {
    c->b = b;
    c->stream = stream;
    c->x = (float *)dev_alloc(b, c->nx * sizeof(float));
    c->dx = (float *)dev_alloc(b, c->nx * sizeof(float));
    c->P = (float *)dev_alloc(b, c->np * sizeof(float));
    c->dP = (float *)dev_alloc(b, c->np * sizeof(float));
    c->argmax = (int32_t *)dev_alloc(b, c->np * sizeof(int32_t));
    c->C = (float *)dev_alloc(b, c->nc * sizeof(float));
    c->y = (float *)dev_alloc(b, c->nc * sizeof(float));
    c->dy = (float *)dev_alloc(b, c->nc * sizeof(float));
    c->dconv = (float *)dev_alloc(b, c->nc * sizeof(float));
    c->is_conv = (uint8_t *)dev_alloc(b, c->nc);
    c->wins = (float *)dev_alloc(b, sizeof(float));
    c->counter = (unsigned long long *)dev_alloc(b, sizeof(unsigned long long));
    c->window = (uint8_t *)dev_alloc(b, c->np);
    c->winners = (uint32_t *)dev_alloc(b, c->words * sizeof(uint32_t));
    c->ties = (uint32_t *)dev_alloc(b, c->words * sizeof(uint32_t));
    c->bn = (float *)dev_alloc(b, 6 * (size_t)c->fs.c_out * sizeof(float));
    c->bn_dy = (float *)dev_alloc(b, c->nc * sizeof(float));
    c->bn_grad = (float *)dev_alloc(b, 2 * (size_t)c->fs.c_out * sizeof(float));
    c->dbias = (float *)dev_alloc(b, (size_t)c->fs.c_out * sizeof(float));
    if (case_widens(c)) {
        c->Pw = (float *)dev_alloc(b, c->nc * sizeof(float));
        c->dPw = (float *)dev_alloc(b, c->nc * sizeof(float));
    }
}

static void case_free(lab_case *c) {
    void *ptrs[] = {c->x,     c->dx,      c->P,    c->dP,      c->argmax, c->C,   c->y,      c->dy,
                    c->dconv, c->is_conv, c->wins, c->counter, c->Pw,     c->dPw, c->window, c->winners,
                    c->ties,  c->bn,      c->bn_dy, c->bn_grad, c->dbias};
    BFK(c->b->ops->synchronize(c->b));
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) bf_free(c->b, ptrs[i]);
}

static void launch_init(lab_case *c, float *a, size_t n, uint64_t seed, float lo, float step, unsigned levels) {
    init_kernel<<<lab_blocks(n), LAB_THREADS, 0, c->stream>>>(a, n, seed, lo, step, levels);
    LAUNCH_CHECK("init_kernel");
}

/* x: multiples of 1/8 in [-2, 2]; C: multiples of 1/8 in [-2, 4] (so conv wins often, and ties
 * occur); dy: uniform in [-1, 1). */
static void case_init(lab_case *c) {
    launch_init(c, c->x, c->nx, 11, -2.0f, 0.125f, 33);
    launch_init(c, c->C, c->nc, 12, -2.0f, 0.125f, 49);
    launch_init(c, c->dy, c->nc, 13, -1.0f, 2.0f, 0);
    const size_t k = (size_t)c->fs.c_out; /* the batch-norm after the layer: its statistics and parameters */
    launch_init(c, c->bn, k, 14, -0.25f, 0.5f, 0);
    launch_init(c, c->bn + k, k, 15, 0.5f, 1.5f, 0);
    launch_init(c, c->bn + 2 * k, k, 16, -1.0f, 2.5f, 0);
    launch_init(c, c->bn + 3 * k, k, 17, -0.5f, 1.0f, 0);
    CK(cudaStreamSynchronize(c->stream));
}

/* Every output to all-ones bits (a float NaN, argmax -1, window 255), the monitor to 0. */
static void case_poison(lab_case *c) {
    CK(cudaMemsetAsync(c->P, 0xFF, c->np * sizeof(float), c->stream));
    CK(cudaMemsetAsync(c->argmax, 0xFF, c->np * sizeof(int32_t), c->stream));
    CK(cudaMemsetAsync(c->dP, 0xFF, c->np * sizeof(float), c->stream));
    CK(cudaMemsetAsync(c->dx, 0xFF, c->nx * sizeof(float), c->stream));
    CK(cudaMemsetAsync(c->y, 0xFF, c->nc * sizeof(float), c->stream));
    CK(cudaMemsetAsync(c->dconv, 0xFF, c->nc * sizeof(float), c->stream));
    CK(cudaMemsetAsync(c->is_conv, 0xFF, c->nc, c->stream));
    CK(cudaMemsetAsync(c->window, 0xFF, c->np, c->stream));
    CK(cudaMemsetAsync(c->winners, 0xFF, c->words * sizeof(uint32_t), c->stream));
    CK(cudaMemsetAsync(c->ties, 0xFF, c->words * sizeof(uint32_t), c->stream));
    if (c->Pw) CK(cudaMemsetAsync(c->Pw, 0xFF, c->nc * sizeof(float), c->stream));
    if (c->dPw) CK(cudaMemsetAsync(c->dPw, 0xFF, c->nc * sizeof(float), c->stream));
    CK(cudaMemsetAsync(c->wins, 0, sizeof(float), c->stream));
    CK(cudaStreamSynchronize(c->stream));
}

/* ---- the passes (enqueue only) ---- */


static void pool_forward(lab_case *c) { BFK(c->b->ops->maxpool_forward(c->b, &c->ps, c->x, c->P, c->argmax)); }
static void pool_backward(lab_case *c) { BFK(c->b->ops->maxpool_backward(c->b, &c->ps, c->dP, c->argmax, c->dx)); }

/* Pool v1's launch for an n x c x h x w input (3x3, stride 1, pad 1): V = 4 when w % 4 == 0 (rows
 * then start 16-byte aligned), else 1; a row of L = ceil(w / V) lane-columns takes the smallest
 * power-of-two group >= L, or strips of 32 lanes when L > 32. Bands of at most 32 rows (each band
 * re-reads 2 halo rows, mostly from L2: its neighbour band is the next group or warp), halved down
 * to 4 while there are fewer than 32 warps per SM to hide DRAM latency (e.g. conv1_1's 3 channels). */
static slide_geo slide_geo_of(int planes, int h, int w, int *vec, unsigned *blocks) {
    slide_geo g;
    const int V = w % 4 == 0 ? 4 : 1, L = (w + V - 1) / V;
    g.h = h;
    g.w = w;
    g.log2_group = 0;
    while ((1 << g.log2_group) < L && g.log2_group < 5) g.log2_group++;
    g.strips = L > 32 ? (L + 31) / 32 : 1;
    const size_t groups_per_warp = (size_t)32 >> g.log2_group, warps_per_block = LAB_THREADS / 32;
    int rows = h < 32 ? h : 32;
    for (;;) {
        g.rows = rows;
        g.bands = (h + rows - 1) / rows;
        g.items = (size_t)planes * g.bands * g.strips;
        const size_t warps = (g.items + groups_per_warp - 1) / groups_per_warp;
        if (rows <= 4 || warps >= (size_t)32 * g_sm_count) break;
        rows = (rows + 1) / 2;
    }
    const size_t warps = (g.items + groups_per_warp - 1) / groups_per_warp;
    *vec = V;
    *blocks = (unsigned)((warps + warps_per_block - 1) / warps_per_block);
    return g;
}

/* Pool v1 (the sliding window above): y and argmax of x, as the library's maxpool_forward. */
static void launch_pool_v1(cudaStream_t stream, const bf_pool_shape *s, const float *x, float *y, int32_t *argmax) {
    if (s->k != 3 || s->stride != 1 || s->pad != 1) {
        fprintf(stderr, "error: pool v1 is the 3x3 stride-1 pad-1 window only\n");
        exit(1);
    }
    int vec;
    unsigned blocks;
    const slide_geo g = slide_geo_of(s->n * s->c, s->h_in, s->w_in, &vec, &blocks);
    if (vec == 4) pool_forward_kernel1<4><<<blocks, LAB_THREADS, 0, stream>>>(x, y, argmax, g);
    else pool_forward_kernel1<1><<<blocks, LAB_THREADS, 0, stream>>>(x, y, argmax, g);
    LAUNCH_CHECK("pool_forward_kernel1");
}

static void pool_forward_v1(lab_case *c) { launch_pool_v1(c->stream, &c->ps, c->x, c->P, c->argmax); }

static void v1_forward(lab_case *c) {
    pool_forward(c);
    BFK(c->b->ops->flex_max_forward(c->b, &c->fs, c->C, c->P, c->y, c->wins));
}

static void v1_backward(lab_case *c) {
    BFK(c->b->ops->flex_max_backward(c->b, &c->fs, c->C, c->P, c->dy, c->dconv, c->dP));
    pool_backward(c);
}

template <int V>
static void v0_forward_t(lab_case *c) {
    pool_forward(c);
    const size_t vecs = c->nc / V;
    const float *widened = c->P;
    if (case_widens(c)) {
        widen_kernel0<V><<<lab_blocks(vecs), LAB_THREADS, 0, c->stream>>>(c->P, c->Pw, vecs, c->g);
        LAUNCH_CHECK("widen_kernel0");
        widened = c->Pw;
    }
    max_kernel0<V><<<lab_blocks(vecs), LAB_THREADS, 0, c->stream>>>(c->C, widened, c->y, vecs);
    LAUNCH_CHECK("max_kernel0");
    mask_kernel0<V><<<lab_blocks(vecs), LAB_THREADS, 0, c->stream>>>(c->C, widened, c->is_conv, vecs);
    LAUNCH_CHECK("mask_kernel0");
    count_kernel0<V><<<lab_blocks(vecs), LAB_THREADS, 0, c->stream>>>(c->is_conv, vecs, c->counter);
    LAUNCH_CHECK("count_kernel0");
    count_finish_kernel0<<<1, 1, 0, c->stream>>>(c->counter, c->wins);
    LAUNCH_CHECK("count_finish_kernel0");
}

template <int V>
static void v0_backward_t(lab_case *c) {
    const size_t vecs = c->nc / V;
    const float conv_tie = c->fs.ties == BF_FLEX_TIE_SPLIT ? 0.5f : 0.0f, pool_tie = 1.0f - conv_tie;
    const float *widened = case_widens(c) ? c->Pw : c->P;   /* saved by the forward */
    float *dwidened = case_widens(c) ? c->dPw : c->dP;      /* identity widening: dP~ is dP */
    split_kernel0<V><<<lab_blocks(vecs), LAB_THREADS, 0, c->stream>>>(c->C, widened, c->dy, c->dconv, dwidened, vecs,
                                                                      conv_tie, pool_tie);
    LAUNCH_CHECK("split_kernel0");
    if (case_widens(c)) {
        const size_t in_vecs = c->np / V;
        fold_kernel0<V><<<lab_blocks(in_vecs), LAB_THREADS, 0, c->stream>>>(c->dPw, c->dP, in_vecs, c->g);
        LAUNCH_CHECK("fold_kernel0");
    }
    pool_backward(c);
}

/* Version 2. Its preparations are enqueued outside the timed region (time_pass with a preparation): y starts as
 * C (in a layer the conv writes C there), and dx as zero (scatter_add adds onto the conv's dx). */
static void v2_prepare_forward(lab_case *c) {
    CK(cudaMemcpyAsync(c->y, c->C, c->nc * sizeof(float), cudaMemcpyDeviceToDevice, c->stream));
}

static void v2_prepare_backward(lab_case *c) { CK(cudaMemsetAsync(c->dx, 0, c->nx * sizeof(float), c->stream)); }

static void v2_forward(lab_case *c) {
    BFK(c->b->ops->flex_pool_max_forward(c->b, &c->ps, &c->fs, c->x, NULL, c->y, c->window, c->winners, c->ties, c->wins));
}

/* Needs window, winners and ties as version 2's forward left them. */
static void v2_backward(lab_case *c) {
    BFK(c->b->ops->flex_pool_max_backward(c->b, &c->ps, &c->fs, c->winners, c->ties, c->dy, c->dconv, c->dP));
    BFK(c->b->ops->flex_pool_scatter_add(c->b, &c->ps, &c->fs, c->window, c->dP, c->dx));
}

/* Version 4 (backward only): the library's flex_pool_max_backward_scatter, what a flex layer runs under
 * [model] fuse_flex_scatter (the default): dconv and dx = maxpool_backward(dP) in one pass, dP
 * never stored, dx overwritten (the conv's backward-data then adds onto it, with cuDNN's beta = 1:
 * that read of dx is the conv's, outside the lab). Needs window, winners and ties as version 2's
 * (or 3's) forward left them. */
static void v4_backward(lab_case *c) {
    BFK(c->b->ops->flex_pool_max_backward_scatter(c->b, &c->ps, &c->fs, c->window, c->winners, c->ties, c->dy,
                                                  c->dconv, c->dx, NULL));
}

/* The "BN" rows: the batch-norm (and ReLU) after the flex layer, over its output y with output
 * gradient dy. Apart: its whole backward writes its dx, which version 4 routes. Applied ([model]
 * fuse_flex_bn): its sums alone, then version 4 computing its dx from dy and y as it reads them. */
static bf_bn_shape bn_shape_of(const lab_case *c) {
    bf_bn_shape s = {.n = c->fs.n, .c = c->fs.c_out, .hw = c->fs.hw, .eps = 1e-5f, .momentum = 0.1f, .repeats = 0};
    return s;
}

static void v4_bn_apart(lab_case *c) {
    const bf_bn_shape bs = bn_shape_of(c);
    const size_t k = (size_t)c->fs.c_out;
    BFK(c->b->ops->batchnorm_relu_backward(c->b, &bs, c->y, c->dy, c->bn + 2 * k, c->bn + 3 * k, c->bn, c->bn + k,
                                           c->bn_dy, c->bn_grad, c->bn_grad + k));
    BFK(c->b->ops->flex_pool_max_backward_scatter(c->b, &c->ps, &c->fs, c->window, c->winners, c->ties, c->bn_dy,
                                                  c->dconv, c->dx, NULL));
}

/* dbias: NULL, or the conv's bias gradient summed by the route (the "dbias" rows below) */
static void v4_bn_applied_to(lab_case *c, float *dbias) {
    const bf_bn_shape bs = bn_shape_of(c);
    const size_t k = (size_t)c->fs.c_out;
    BFK(c->b->ops->batchnorm_backward_sums(c->b, &bs, 1, c->y, c->dy, c->bn + 2 * k, c->bn + 3 * k, c->bn, c->bn + k,
                                           c->bn_grad, c->bn_grad + k, c->bn + 4 * k));
    const bf_bn_grad g = {1, c->bn, c->bn + k, c->bn + 2 * k, c->bn + 3 * k, c->bn + 4 * k};
    BFK(c->b->ops->flex_pool_max_backward_scatter_bn(c->b, &c->ps, &c->fs, &g, c->window, c->winners, c->ties, c->y,
                                                     c->dy, c->dconv, c->dx, dbias));
}
static void v4_bn_applied(lab_case *c) { v4_bn_applied_to(c, NULL); }

/* The "dbias" rows: version 4 with the batch-norm applied and the conv's bias gradient ([model]
 * fold_conv_bias), summed by the route as it writes dconv, against the conv's channel sum over dconv
 * after it (what conv2d_backward_filter runs: a read of dconv more). */
static void v4_bn_dbias_in_route(lab_case *c) { v4_bn_applied_to(c, c->dbias); }
/* The route alone with the batch-norm's dx and the bias gradient (row "route alone BN+dbias"): what
 * a network's first flex layer runs, whose input needs no gradient (flex_pool_max_backward_bn). */
static void route_alone_bn_dbias(lab_case *c) {
    const bf_bn_shape bs = bn_shape_of(c);
    const size_t k = (size_t)c->fs.c_out;
    BFK(c->b->ops->batchnorm_backward_sums(c->b, &bs, 1, c->y, c->dy, c->bn + 2 * k, c->bn + 3 * k, c->bn, c->bn + k,
                                           c->bn_grad, c->bn_grad + k, c->bn + 4 * k));
    const bf_bn_grad g = {1, c->bn, c->bn + k, c->bn + 2 * k, c->bn + 3 * k, c->bn + 4 * k};
    BFK(c->b->ops->flex_pool_max_backward_bn(c->b, &c->ps, &c->fs, &g, c->winners, c->ties, c->y, c->dy, c->dconv,
                                             c->dbias));
}
static void v4_bn_dbias_after(lab_case *c) {
    v4_bn_applied(c);
    BFK(bf_cuda_channel_sum((bf_cuda_impl *)c->b->impl, c->fs.n, c->fs.c_out, c->fs.hw, c->dconv, c->dbias));
}

/* Version 4 on the sliding window (rows "4 slide" and "4 slide BN applied", backward only): the same
 * calls under [run] flex_kernels = slide, whose route with the scatter (flex_slide.cuh,
 * k_slide_route_scatter) takes them since dconv is apart from dy here. */
static void v4_slide(lab_case *c) {
    BFK(bf_cuda_set_flex_kernels(c->b, 1));
    v4_backward(c);
    BFK(bf_cuda_set_flex_kernels(c->b, 0));
}
static void v4_bn_slide(lab_case *c) {
    BFK(bf_cuda_set_flex_kernels(c->b, 1));
    v4_bn_applied(c);
    BFK(bf_cuda_set_flex_kernels(c->b, 0));
}

/* The batch-norm's own passes alone (its statistics over y; its backward with the ReLU), for the
 * unfused total with the batch-norm: version 0 does not fuse them either. The saved mean and invstd
 * go to bn_grad (no running statistics). */
static void bn_stats_alone(lab_case *c) {
    const bf_bn_shape bs = bn_shape_of(c);
    BFK(c->b->ops->batchnorm_forward_train(c->b, &bs, c->y, NULL, NULL, NULL, c->bn_grad, c->bn_grad + c->fs.c_out,
                                           NULL, NULL));
}

/* The "BN stats" rows (forward only, from C as version 2): version 2's forward, then the next
 * batch-norm's statistics over y (a pass over y), against [model] fuse_flex_bn_stats (the default):
 * flex_pool_max_forward_bn_stats, the sums taken as y is written. */
static void v2_bn_stats_apart(lab_case *c) {
    v2_forward(c);
    bn_stats_alone(c);
}

static void bn_backward_alone(lab_case *c) {
    const bf_bn_shape bs = bn_shape_of(c);
    const size_t k = (size_t)c->fs.c_out;
    BFK(c->b->ops->batchnorm_relu_backward(c->b, &bs, c->y, c->dy, c->bn + 2 * k, c->bn + 3 * k, c->bn, c->bn + k,
                                           c->bn_dy, c->bn_grad, c->bn_grad + k));
}

static void v2_bn_stats_fused(lab_case *c) {
    const bf_bn_shape bs = bn_shape_of(c);
    BFK(c->b->ops->flex_pool_max_forward_bn_stats(c->b, &c->ps, &c->fs, &bs, c->x, NULL, c->y, c->window, c->winners,
                                                  c->ties, c->wins, c->bn_grad, c->bn_grad + c->fs.c_out, NULL, NULL));
}

/* Version 3 and scatter v1 are the library's `[run] flex_kernels = slide` kernels
 * (src/kernels/flex_slide.cuh: a fused forward on pool v1's sliding window, and the backward's pool
 * scatter the same way), run through the ops table with the backend switched to them for the call.
 * They apply to EXPAND and the 3x3/1/1 window (every lab shape; elsewhere the library would quietly
 * run version 2's kernels, so the lab skips such shapes itself). */
static const char *slide_why_not(const bf_pool_shape *ps, const bf_flex_shape *fs) {
    if (fs->channels != BF_FLEX_CHANNELS_EXPAND) return "channels rule is not EXPAND";
    if (ps->k != 3 || ps->stride != 1 || ps->pad != 1) return "pool is not 3x3 stride 1 pad 1";
    return NULL;
}

/* The backward's last step alone, dx += maxpool_backward(dP) through the window bytes: the library's
 * flex_pool_scatter_add with either kernel set (prepared by v2_prepare_backward, dx = 0). */
static void scatter_library(lab_case *c) {
    BFK(c->b->ops->flex_pool_scatter_add(c->b, &c->ps, &c->fs, c->window, c->dP, c->dx));
}
static void scatter_v1(lab_case *c) {
    BFK(bf_cuda_set_flex_kernels(c->b, 1));
    scatter_library(c);
    BFK(bf_cuda_set_flex_kernels(c->b, 0));
}
static const char *scatter_v1_why_not(const lab_case *c) { return slide_why_not(&c->ps, &c->fs); }
static double bytes_scatter(const lab_case *c) { return 1.0 * c->np + 4.0 * c->np + 8.0 * c->nx; }

/* Version 3: flex_pool_max_forward with the slide kernels; the same preparation as version 2 (y
 * starts as C). */
static const char *v3_why_not(const lab_case *c) { return slide_why_not(&c->ps, &c->fs); }

static void v3_forward(lab_case *c) {
    BFK(bf_cuda_set_flex_kernels(c->b, 1));
    BFK(c->b->ops->flex_pool_max_forward(c->b, &c->ps, &c->fs, c->x, NULL, c->y, c->window, c->winners, c->ties, c->wins));
    BFK(bf_cuda_set_flex_kernels(c->b, 0));
}

/* Version 3 with the next batch-norm's statistics, apart or in its pass (the "3 + BN stats" and "3
 * stats in pass" rows, as version 2's). */
static void v3_bn_stats_apart(lab_case *c) {
    v3_forward(c);
    bn_stats_alone(c);
}

static void v3_bn_stats_fused(lab_case *c) {
    BFK(bf_cuda_set_flex_kernels(c->b, 1));
    v2_bn_stats_fused(c);
    BFK(bf_cuda_set_flex_kernels(c->b, 0));
}

static void v0_forward(lab_case *c) {
    if (c->vec == 4) v0_forward_t<4>(c);
    else v0_forward_t<1>(c);
}

static void v0_backward(lab_case *c) {
    if (c->vec == 4) v0_backward_t<4>(c);
    else v0_backward_t<1>(c);
}

/* ---- byte model (see the top of the file) ---- */

static double bytes_pool_fwd(const lab_case *c) { return 4.0 * c->nx + 8.0 * c->np; }
static double bytes_pool_bwd(const lab_case *c) { return 8.0 * c->np + 4.0 * c->nx; }
static double bytes_v1_fwd(const lab_case *c) { return bytes_pool_fwd(c) + 8.0 * c->nc + 4.0 * c->np; }
static double bytes_v1_bwd(const lab_case *c) { return 12.0 * c->nc + 8.0 * c->np + bytes_pool_bwd(c); }
static double bytes_v0_fwd(const lab_case *c) {
    return bytes_pool_fwd(c) + (case_widens(c) ? 4.0 * c->np + 4.0 * c->nc : 0.0) + 12.0 * c->nc + 9.0 * c->nc +
           1.0 * c->nc;
}
static double bytes_v0_bwd(const lab_case *c) {
    return 20.0 * c->nc + (case_widens(c) ? 4.0 * c->nc + 4.0 * c->np : 0.0) + bytes_pool_bwd(c);
}
static double bytes_v2_fwd(const lab_case *c) { return 4.0 * c->nx + 8.0 * c->nc + 1.0 * c->np + c->nc / 4.0; }
static double bytes_v2_bn_stats_apart(const lab_case *c) { return bytes_v2_fwd(c) + 4.0 * c->nc; }
/* route and scatter in one pass: winners, ties, dy, window; dC, dx written once */
static double bytes_v4_bwd(const lab_case *c) { return c->nc / 4.0 + 8.0 * c->nc + 1.0 * c->np + 4.0 * c->nx; }
static double bytes_v4_bn_apart(const lab_case *c) { return bytes_v4_bwd(c) + 20.0 * c->nc; }
static double bytes_v4_bn_applied(const lab_case *c) { return bytes_v4_bwd(c) + 12.0 * c->nc; }
static double bytes_v4_bn_dbias_after(const lab_case *c) { return bytes_v4_bn_applied(c) + 4.0 * c->nc; }
/* the sums (y, dy) and the route (winners, ties, dy, y; dC) */
static double bytes_route_alone_bn(const lab_case *c) { return 8.0 * c->nc + c->nc / 4.0 + 12.0 * c->nc; }
static double bytes_v2_bwd(const lab_case *c) {
    /* route: winners, ties, dy; dC, dP. scatter: window, dP; dx both ways */
    const double route = c->nc / 4.0 + 4.0 * c->nc + 4.0 * c->nc + 4.0 * c->np;
    const double scatter = 1.0 * c->np + 4.0 * c->np + 8.0 * c->nx;
    return route + scatter;
}

/* Bytes kept from the forward for the backward (see the top of the file). */
static double kept_v0(const lab_case *c) {
    return 4.0 * c->nc + (case_widens(c) ? 4.0 * c->nc : 4.0 * c->np) + 4.0 * c->np;
}
static double kept_v1(const lab_case *c) { return 4.0 * c->nc + 8.0 * c->np; }
static double kept_v2(const lab_case *c) { return 1.0 * c->np + 8.0 * c->words; }

/* ---- validation against the CPU reference ---- */

/* |got - ref| <= atol + rtol*|ref| passes; every version is expected to be bit-exact. */
static int compare(const char *what, const float *got, const float *ref, size_t n) {
    const double atol = 1e-6, rtol = 1e-5;
    double max_abs = 0.0, max_viol = 0.0;
    size_t exact = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t gb, rb;
        memcpy(&gb, &got[i], sizeof gb);
        memcpy(&rb, &ref[i], sizeof rb);
        if (gb == rb) {
            exact++;
            continue;
        }
        double d, viol;
        if (isnan(ref[i])) {
            d = viol = isnan(got[i]) ? 0.0 : INFINITY;
        } else if (isinf(ref[i])) {
            d = viol = got[i] == ref[i] ? 0.0 : INFINITY;
        } else {
            d = fabs((double)got[i] - (double)ref[i]); /* NaN when got is NaN */
            viol = d / (atol + rtol * fabs((double)ref[i]));
            if (isnan(d)) d = viol = INFINITY;
        }
        if (d > max_abs) max_abs = d;
        if (viol > max_viol) max_viol = viol;
        if (!(viol <= 1.0)) {
            if (bad < 5) fprintf(stderr, "      %s[%zu]: gpu %.9g cpu %.9g\n", what, i, got[i], ref[i]);
            bad++;
        }
    }
    printf("      %-8s max|gpu-cpu| %.3e  max violation %.3e  bit-exact %zu/%zu  %s\n", what, max_abs, max_viol,
           exact, n, bad ? "MISMATCH" : "ok");
    if (bad) fprintf(stderr, "error: %s: %zu of %zu elements outside tolerance\n", what, bad, n);
    return bad == 0;
}

/* One GPU tensor copied back and compared. */
static int check(lab_case *c, const char *what, const float *dev, const float *ref, size_t n, float *host) {
    BFK(bf_to_host(c->b, host, dev, n * sizeof(float)));
    return compare(what, host, ref, n);
}

/* A GPU tensor of 32-bit words (floats or int32) copied back and compared bit for bit: pool v1's
 * argmax, and its y where NaN payloads must match too (compare() lets any NaN pass for a NaN). */
static int check_bits(bf_backend *b, const char *what, const void *dev, const void *ref, size_t n, void *host) {
    BFK(bf_to_host(b, host, dev, n * sizeof(uint32_t)));
    const uint32_t *got = (const uint32_t *)host, *want = (const uint32_t *)ref;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            if (bad < 5) fprintf(stderr, "      %s[%zu]: gpu 0x%08x cpu 0x%08x\n", what, i, got[i], want[i]);
            bad++;
        }
    printf("      %-8s bit-exact %zu/%zu  %s\n", what, n - bad, n, bad ? "MISMATCH" : "ok");
    if (bad) fprintf(stderr, "error: %s: %zu of %zu words differ\n", what, bad, n);
    return bad == 0;
}

/* Whether a call under flex_kernels = slide launched a sliding-window kernel (else the fused
 * kernels ran quietly, and its row would time them). */
static int slid(bf_backend *b, long before, const char *what) {
    const long ran = bf_cuda_flex_slide_launches(b) - before;
    if (ran <= 0) fprintf(stderr, "error: %s ran the fused kernels, not the sliding-window ones\n", what);
    return ran > 0;
}

/* Bytes compared bit for bit (version 3's window and winners against version 2's, both on the host). */
static int same_bytes(const char *what, const void *got, const void *want, size_t n) {
    const uint8_t *g = (const uint8_t *)got, *r = (const uint8_t *)want;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (g[i] != r[i]) {
            if (bad < 5) fprintf(stderr, "      %s byte %zu: 0x%02x, want 0x%02x\n", what, i, g[i], r[i]);
            bad++;
        }
    printf("      %-8s bit-exact %zu/%zu bytes  %s\n", what, n - bad, n, bad ? "MISMATCH" : "ok");
    if (bad) fprintf(stderr, "error: %s: %zu of %zu bytes differ\n", what, bad, n);
    return bad == 0;
}

/* Version 2's window bytes against the CPU's argmax (plane index ih*w_in + iw, as kh*k + kw within the
 * window) and its winners bits against C >= P~ (the last word's spare bits 0); returns 1 on pass. */
static int check_window_winners(lab_case *c, const float *P, const int32_t *argmax, const float *C) {
    uint8_t *window = (uint8_t *)malloc(c->np + 16);
    uint32_t *winners = (uint32_t *)malloc(c->words * sizeof(uint32_t) + 16);
    if (!window || !winners) {
        fprintf(stderr, "error: out of host memory\n");
        exit(1);
    }
    BFK(bf_to_host(c->b, window, c->window, c->np));
    BFK(bf_to_host(c->b, winners, c->winners, c->words * sizeof(uint32_t)));
    const bf_pool_shape *ps = &c->ps;
    const size_t hw = (size_t)c->fs.hw;
    size_t bad_window = 0, bad_bits = 0;
    for (size_t q = 0; q < c->np / hw; q++)
        for (size_t p = 0; p < hw; p++) {
            const int oh = (int)(p / ps->w_out), ow = (int)(p % ps->w_out), a = argmax[q * hw + p];
            const int kh = a / ps->w_in - (oh * ps->stride - ps->pad), kw = a % ps->w_in - (ow * ps->stride - ps->pad);
            if (window[q * hw + p] != kh * ps->k + kw) {
                if (bad_window < 5)
                    fprintf(stderr, "      window[%zu]: gpu %d, cpu argmax %d = place %d\n", q * hw + p,
                            window[q * hw + p], a, kh * ps->k + kw);
                bad_window++;
            }
        }
    for (size_t e = 0; e < c->words * 32; e++) {
        int want = 0;
        if (e < c->nc) {
            const size_t q = e / hw, p = e - q * hw, sample = q / (size_t)c->fs.c_out;
            const int j = (int)(q - sample * (size_t)c->fs.c_out), i = c->g.ratio ? j / c->g.ratio : j % c->fs.c_in;
            want = C[e] >= P[(sample * (size_t)c->fs.c_in + (size_t)i) * hw + p];
        }
        if ((int)((winners[e / 32] >> (e % 32)) & 1u) != want) {
            if (bad_bits < 5) fprintf(stderr, "      winners bit %zu: gpu %d, C >= P~ %d\n", e, !want, want);
            bad_bits++;
        }
    }
    printf("      %-8s equal to the CPU argmax %zu/%zu  %s\n", "window", c->np - bad_window, c->np,
           bad_window ? "MISMATCH" : "ok");
    printf("      %-8s equal to C >= P~ %zu/%zu  %s\n", "winners", c->words * 32 - bad_bits, c->words * 32,
           bad_bits ? "MISMATCH" : "ok");
    if (bad_window) fprintf(stderr, "error: window: %zu of %zu bytes differ\n", bad_window, c->np);
    if (bad_bits) fprintf(stderr, "error: winners: %zu of %zu bits differ\n", bad_bits, c->words * 32);
    free(window);
    free(winners);
    return bad_window == 0 && bad_bits == 0;
}

/* Runs every version on one shape at batch n and compares with the CPU backend; returns 1 on pass. */
static int validate_shape(bf_backend *b, cudaStream_t stream, bf_backend *cpu, const lab_shape *sh, int n) {
    lab_case c;
    case_shapes(&c, sh, n);
    case_alloc(&c, b, stream);
    case_init(&c);

    /* the CPU reference, from the same inputs */
    const bf_ops *ref_ops = cpu->ops;
    float *x = (float *)host_alloc(cpu, c.nx * sizeof(float)), *dx = (float *)host_alloc(cpu, c.nx * sizeof(float));
    float *P = (float *)host_alloc(cpu, c.np * sizeof(float)), *dP = (float *)host_alloc(cpu, c.np * sizeof(float));
    int32_t *argmax = (int32_t *)host_alloc(cpu, c.np * sizeof(int32_t));
    float *C = (float *)host_alloc(cpu, c.nc * sizeof(float)), *y = (float *)host_alloc(cpu, c.nc * sizeof(float));
    float *dy = (float *)host_alloc(cpu, c.nc * sizeof(float)), *dconv = (float *)host_alloc(cpu, c.nc * sizeof(float));
    float *wins = (float *)host_alloc(cpu, sizeof(float)); /* zero */
    size_t host_floats = c.nc > c.nx ? c.nc : c.nx;
    if (c.np > host_floats) host_floats = c.np;
    float *host = (float *)host_alloc(cpu, host_floats * sizeof(float));
    BFK(bf_to_host(b, x, c.x, c.nx * sizeof(float)));
    BFK(bf_to_host(b, C, c.C, c.nc * sizeof(float)));
    BFK(bf_to_host(b, dy, c.dy, c.nc * sizeof(float)));
    BFK(ref_ops->maxpool_forward(cpu, &c.ps, x, P, argmax));
    BFK(ref_ops->flex_max_forward(cpu, &c.fs, C, P, y, wins));
    BFK(ref_ops->flex_max_backward(cpu, &c.fs, C, P, dy, dconv, dP));
    BFK(ref_ops->maxpool_backward(cpu, &c.ps, dP, argmax, dx));

    /* how often each branch wins, so that the tie rule is known to be exercised */
    size_t conv_wins = 0, ties = 0;
    const size_t hw = (size_t)c.fs.hw;
    for (size_t q = 0; q < (size_t)n * c.fs.c_out; q++) {
        const size_t sample = q / (size_t)c.fs.c_out;
        const int j = (int)(q - sample * (size_t)c.fs.c_out);
        const int i = c.g.ratio ? j / c.g.ratio : j % c.fs.c_in;
        const float *pq = P + (sample * (size_t)c.fs.c_in + (size_t)i) * hw, *cq = C + q * hw;
        for (size_t p = 0; p < hw; p++) {
            conv_wins += cq[p] > pq[p];
            ties += cq[p] == pq[p];
        }
    }
    printf("  %s %d->%d @%dx%d, n=%d: %zu elements, conv wins %.1f%%, ties %.2f%%, pool wins %.1f%%\n", sh->name,
           sh->c_in, sh->c_out, sh->h, sh->h, n, c.nc, 100.0 * conv_wins / c.nc, 100.0 * ties / c.nc,
           100.0 * (c.nc - conv_wins - ties) / c.nc);
    if (ties == 0) printf("    (no ties: the tie rule is not exercised on this shape)\n");
    if ((float)conv_wins != *wins) {
        fprintf(stderr, "error: the CPU reference counted %.0f conv wins, the direct count is %zu\n", *wins, conv_wins);
        exit(1);
    }

    int ok = 1;
    const int vec_default = c.vec;
    for (int pass = 0; pass < 4; pass++) {
        const char *label;
        if (pass == 0) label = "version 2 (library, fused pool and joint)";
        else if (pass == 1) label = "version 1 (library, fused)";
        else if (pass == 2) label = vec_default == 4 ? "version 0 (unfused, 16-byte vectors)" : "version 0 (unfused)";
        else label = "version 0 (unfused, scalar kernels)";
        if (pass == 3 && vec_default == 1) continue; /* already ran scalar in pass 2 */
        c.vec = pass == 3 ? 1 : vec_default;
        case_poison(&c);
        if (pass == 0) {
            v2_prepare_forward(&c);
            v2_forward(&c);
            v2_prepare_backward(&c);
            v2_backward(&c);
        } else if (pass == 1) {
            v1_forward(&c);
            v1_backward(&c);
        } else {
            v0_forward(&c);
            v0_backward(&c);
        }
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    %s\n", label);
        if (pass == 0) ok &= check_window_winners(&c, P, argmax, C); /* P is not stored */
        else ok &= check(&c, "P", c.P, P, c.np, host);
        ok &= check(&c, "y", c.y, y, c.nc, host);
        ok &= check(&c, "conv_wins", c.wins, wins, 1, host);
        ok &= check(&c, "dconv", c.dconv, dconv, c.nc, host);
        ok &= check(&c, "dpooled", c.dP, dP, c.np, host);
        ok &= check(&c, "dx_pool", c.dx, dx, c.nx, host);
    }
    c.vec = vec_default;

    /* version 3 (forward only): against the CPU as version 2 is checked, then bit for bit against
     * version 2's four outputs, and the library's backward run on its outputs */
    const char *why3 = v3_why_not(&c);
    if (why3) {
        printf("    version 3 (library, flex_kernels = slide): skipped: %s\n", why3);
    } else {
        uint8_t *win2 = (uint8_t *)malloc(c.np + 16), *bits2 = (uint8_t *)malloc(c.words * sizeof(uint32_t) + 16);
        uint8_t *ties2 = (uint8_t *)malloc(c.words * sizeof(uint32_t) + 16);
        uint8_t *got = (uint8_t *)malloc((c.np > c.words * 4 ? c.np : c.words * 4) + 16);
        float *y2 = (float *)malloc(c.nc * sizeof(float) + 16), wins2 = 0.0f, wins3 = 0.0f;
        if (!win2 || !bits2 || !ties2 || !got || !y2) {
            fprintf(stderr, "error: out of host memory\n");
            exit(1);
        }
        case_poison(&c);
        v2_prepare_forward(&c);
        v2_forward(&c);
        CK(cudaStreamSynchronize(stream));
        BFK(bf_to_host(b, y2, c.y, c.nc * sizeof(float)));
        BFK(bf_to_host(b, win2, c.window, c.np));
        BFK(bf_to_host(b, bits2, c.winners, c.words * sizeof(uint32_t)));
        BFK(bf_to_host(b, ties2, c.ties, c.words * sizeof(uint32_t)));
        BFK(bf_to_host(b, &wins2, c.wins, sizeof(float)));
        case_poison(&c);
        v2_prepare_forward(&c);
        v3_forward(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    version 3 (library, flex_kernels = slide)\n");
        ok &= check_window_winners(&c, P, argmax, C);
        ok &= check(&c, "y", c.y, y, c.nc, host);
        ok &= check(&c, "conv_wins", c.wins, wins, 1, host);
        printf("      against version 2:\n");
        ok &= check_bits(b, "y", c.y, y2, c.nc, host);
        BFK(bf_to_host(b, got, c.window, c.np));
        ok &= same_bytes("window", got, win2, c.np);
        BFK(bf_to_host(b, got, c.winners, c.words * sizeof(uint32_t)));
        ok &= same_bytes("winners", got, bits2, c.words * sizeof(uint32_t));
        BFK(bf_to_host(b, got, c.ties, c.words * sizeof(uint32_t)));
        ok &= same_bytes("ties", got, ties2, c.words * sizeof(uint32_t));
        BFK(bf_to_host(b, &wins3, c.wins, sizeof(float)));
        printf("      %-8s %.0f, version 2 %.0f  %s\n", "conv_wins", wins3, wins2, wins3 == wins2 ? "ok" : "MISMATCH");
        if (wins3 != wins2) {
            fprintf(stderr, "error: conv_wins: version 3 %.0f, version 2 %.0f\n", wins3, wins2);
            ok = 0;
        }
        printf("      the library's backward on version 3's outputs:\n");
        v2_prepare_backward(&c);
        v2_backward(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        ok &= check(&c, "dconv", c.dconv, dconv, c.nc, host);
        ok &= check(&c, "dpooled", c.dP, dP, c.np, host);
        ok &= check(&c, "dx_pool", c.dx, dx, c.nx, host);
        free(win2);
        free(bits2);
        free(ties2);
        free(got);
        free(y2);
    }

    /* pool v1 against the CPU's maxpool_forward: P and argmax, bit for bit */
    case_poison(&c);
    pool_forward_v1(&c);
    CK(cudaStreamSynchronize(stream));
    CK(cudaGetLastError());
    printf("    pool v1 (sliding window)\n");
    ok &= check(&c, "P", c.P, P, c.np, host);
    ok &= check_bits(b, "argmax", c.argmax, argmax, c.np, host);

    /* scatter v1 on version 2's window bytes and dP: dx from zero, bit for bit the CPU's dx_pool */
    if (!scatter_v1_why_not(&c)) {
        case_poison(&c);
        v2_prepare_forward(&c);
        v2_forward(&c);
        v2_prepare_backward(&c);
        v2_backward(&c);
        v2_prepare_backward(&c);
        scatter_v1(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    scatter v1 (sliding window) on version 2's window bytes and dP\n");
        ok &= check_bits(b, "dx_pool", c.dx, dx, c.nx, host);
    }

    /* version 4 on version 2's forward outputs: dconv and dx (overwritten, poisoned first) bit for
     * bit the CPU's dconv and dx_pool */
    case_poison(&c);
    v2_prepare_forward(&c);
    v2_forward(&c);
    v4_backward(&c);
    CK(cudaStreamSynchronize(stream));
    CK(cudaGetLastError());
    printf("    version 4 (library backward with the scatter) on version 2's forward outputs\n");
    ok &= check_bits(b, "dconv", c.dconv, dconv, c.nc, host);
    ok &= check_bits(b, "dx_pool", c.dx, dx, c.nx, host);
    if (!slide_why_not(&c.ps, &c.fs)) { /* the same on the sliding window */
        CK(cudaMemsetAsync(c.dconv, 0xFF, c.nc * sizeof(float), stream));
        CK(cudaMemsetAsync(c.dx, 0xFF, c.nx * sizeof(float), stream));
        const long before = bf_cuda_flex_slide_launches(b);
        v4_slide(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    version 4 on the sliding window (flex_kernels = slide)\n");
        ok &= slid(b, before, "version 4 on the sliding window");
        ok &= check_bits(b, "dconv", c.dconv, dconv, c.nc, host);
        ok &= check_bits(b, "dx_pool", c.dx, dx, c.nx, host);
    }

    /* version 4 with the batch-norm applied in its route against the batch-norm's whole backward
     * then version 4: dconv and dx bit for bit (the same sums, the same per-element expressions) */
    {
        v4_bn_apart(&c);
        float *dconv_apart = (float *)host_alloc(cpu, c.nc * sizeof(float));
        float *dx_apart = (float *)host_alloc(cpu, c.nx * sizeof(float));
        BFK(bf_to_host(b, dconv_apart, c.dconv, c.nc * sizeof(float)));
        BFK(bf_to_host(b, dx_apart, c.dx, c.nx * sizeof(float)));
        CK(cudaMemsetAsync(c.dconv, 0xFF, c.nc * sizeof(float), stream));
        CK(cudaMemsetAsync(c.dx, 0xFF, c.nx * sizeof(float), stream));
        v4_bn_applied(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    version 4 with the batch-norm's dx applied in the route, against the batch-norm's whole backward first\n");
        ok &= check_bits(b, "dconv", c.dconv, dconv_apart, c.nc, host);
        ok &= check_bits(b, "dx_pool", c.dx, dx_apart, c.nx, host);
        if (!slide_why_not(&c.ps, &c.fs)) {
            CK(cudaMemsetAsync(c.dconv, 0xFF, c.nc * sizeof(float), stream));
            CK(cudaMemsetAsync(c.dx, 0xFF, c.nx * sizeof(float), stream));
            const long before = bf_cuda_flex_slide_launches(b);
            v4_bn_slide(&c);
            CK(cudaStreamSynchronize(stream));
            CK(cudaGetLastError());
            printf("    the same on the sliding window (flex_kernels = slide)\n");
            ok &= slid(b, before, "version 4 with the batch-norm on the sliding window");
            ok &= check_bits(b, "dconv", c.dconv, dconv_apart, c.nc, host);
            ok &= check_bits(b, "dx_pool", c.dx, dx_apart, c.nx, host);
        }
        /* the bias gradient summed in the route against the channel sum after it: to 1e-6 (the same
         * floats added in double in two orders, each rounded once) */
        v4_bn_dbias_after(&c);
        const size_t k = (size_t)c.fs.c_out;
        float *dbias_after = (float *)host_alloc(cpu, k * sizeof(float)), *dbias_route = (float *)host_alloc(cpu, k * sizeof(float));
        BFK(bf_to_host(b, dbias_after, c.dbias, k * sizeof(float)));
        CK(cudaMemsetAsync(c.dbias, 0xFF, k * sizeof(float), stream));
        v4_bn_dbias_in_route(&c);
        BFK(bf_to_host(b, dbias_route, c.dbias, k * sizeof(float)));
        double worst = 0.0;
        for (size_t j = 0; j < k; j++) {
            const double d = fabs((double)dbias_route[j] - dbias_after[j]) / (1e-6 + fabs((double)dbias_after[j]));
            worst = d > worst || d != d ? d : worst;
        }
        printf("    the bias gradient summed in the route against the channel sum after it: %.3g relative\n", worst);
        if (!(worst <= 1e-6)) {
            printf("    MISMATCH: the bias gradients differ by %.3g relative\n", worst);
            ok = 0;
        }
        bf_free(cpu, dbias_after);
        bf_free(cpu, dbias_route);
        bf_free(cpu, dconv_apart);
        bf_free(cpu, dx_apart);
    }

    /* version 2 with the batch-norm's statistics taken in its pass, against version 2 then the
     * batch-norm's own pass: y bit for bit, the statistics to the rounding of their double sums */
    {
        const size_t k = (size_t)c.fs.c_out;
        float *y_apart = (float *)host_alloc(cpu, c.nc * sizeof(float));
        float *st_apart = (float *)host_alloc(cpu, 2 * k * sizeof(float)), *st = (float *)host_alloc(cpu, 2 * k * sizeof(float));
        v2_prepare_forward(&c);
        v2_bn_stats_apart(&c);
        BFK(bf_to_host(b, y_apart, c.y, c.nc * sizeof(float)));
        BFK(bf_to_host(b, st_apart, c.bn_grad, 2 * k * sizeof(float)));
        v2_prepare_forward(&c);
        CK(cudaMemsetAsync(c.bn_grad, 0xFF, 2 * k * sizeof(float), stream));
        v2_bn_stats_fused(&c);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        BFK(bf_to_host(b, st, c.bn_grad, 2 * k * sizeof(float)));
        printf("    version 2 with the batch-norm's statistics in its pass, against version 2 then the batch-norm's pass\n");
        ok &= check_bits(b, "y", c.y, y_apart, c.nc, host);
        double worst = 0.0;
        for (size_t i = 0; i < 2 * k; i++) {
            const double d = fabs((double)st[i] - st_apart[i]) / (1e-6 + fabs((double)st_apart[i]));
            worst = d > worst || d != d ? d : worst;
        }
        printf("      %-8s mean and invstd within %.2g (relative)  %s\n", "stats", worst, worst <= 1e-6 ? "ok" : "MISMATCH");
        if (!(worst <= 1e-6)) fprintf(stderr, "error: statistics in the flex pass differ by %.3g\n", worst);
        ok &= worst <= 1e-6;
        if (!v3_why_not(&c)) { /* the same on the sliding window */
            v2_prepare_forward(&c);
            CK(cudaMemsetAsync(c.bn_grad, 0xFF, 2 * k * sizeof(float), stream));
            const long before = bf_cuda_flex_slide_launches(b);
            v3_bn_stats_fused(&c);
            CK(cudaStreamSynchronize(stream));
            CK(cudaGetLastError());
            ok &= slid(b, before, "version 3 with the statistics");
            BFK(bf_to_host(b, st, c.bn_grad, 2 * k * sizeof(float)));
            printf("    version 3 with the statistics in its pass, against version 2 then the batch-norm's pass\n");
            ok &= check_bits(b, "y", c.y, y_apart, c.nc, host);
            double worst3 = 0.0;
            for (size_t i = 0; i < 2 * k; i++) {
                const double d = fabs((double)st[i] - st_apart[i]) / (1e-6 + fabs((double)st_apart[i]));
                worst3 = d > worst3 || d != d ? d : worst3;
            }
            printf("      %-8s mean and invstd within %.2g (relative)  %s\n", "stats", worst3,
                   worst3 <= 1e-6 ? "ok" : "MISMATCH");
            if (!(worst3 <= 1e-6)) fprintf(stderr, "error: statistics in the sliding pass differ by %.3g\n", worst3);
            ok &= worst3 <= 1e-6;
        }
        bf_free(cpu, y_apart);
        bf_free(cpu, st_apart);
        bf_free(cpu, st);
    }

    void *host_ptrs[] = {x, dx, P, dP, argmax, C, y, dy, dconv, wins, host};
    for (size_t k = 0; k < sizeof host_ptrs / sizeof host_ptrs[0]; k++) bf_free(cpu, host_ptrs[k]);
    case_free(&c);
    return ok;
}

/* Pool v1 on shapes the VGG ones miss (1x1, odd and narrow widths, several column strips, float4
 * rows of one lane, more than 65535 planes) and on inputs made for the tie and NaN rule: values
 * from {-0, +0, 1, 2, -inf}, so most windows tie, and 3% NaNs, each with its own payload, so that
 * y and argmax both show which NaN won. Compared bit for bit with the CPU's maxpool_forward. */
static int validate_pool_v1_edges(bf_backend *b, cudaStream_t stream, bf_backend *cpu) {
    static const int shapes[][4] = {/* n, c, h, w */
                                    {1, 1, 1, 1},    {1, 3, 2, 3},   {2, 5, 7, 7},    {1, 7, 14, 14},
                                    {3, 2, 13, 17},  {1, 2, 224, 224}, {1, 1, 5, 300}, {1, 1, 9, 301},
                                    {2, 1, 3, 129},  {1, 3, 40, 4},  {1, 2, 1, 260},  {64, 1100, 3, 3}};
    int ok = 1;
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        bf_pool_shape ps;
        memset(&ps, 0, sizeof ps);
        ps.n = shapes[si][0];
        ps.c = shapes[si][1];
        ps.h_in = shapes[si][2];
        ps.w_in = shapes[si][3];
        ps.k = 3;
        ps.stride = 1;
        ps.pad = 1;
        BFK(bf_pool_shape_init(&ps));
        const size_t nx = (size_t)ps.n * ps.c * ps.h_in * ps.w_in, np = (size_t)ps.n * ps.c * ps.h_out * ps.w_out;
        uint32_t *x = (uint32_t *)host_alloc(cpu, nx * sizeof(uint32_t));
        float *y = (float *)host_alloc(cpu, np * sizeof(float));
        int32_t *argmax = (int32_t *)host_alloc(cpu, np * sizeof(int32_t));
        void *host = host_alloc(cpu, np * sizeof(uint32_t));
        static const uint32_t levels[5] = {0x80000000u, 0x00000000u, 0x3f800000u, 0x40000000u, 0xff800000u};
        size_t nans = 0;
        for (size_t i = 0; i < nx; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            const unsigned r = (unsigned)(state >> 33);
            x[i] = r % 100 < 3 ? 0x7fc00000u | (uint32_t)(i & 0x3fffff) : levels[(r >> 8) % 5];
            nans += r % 100 < 3;
        }
        float *dx = (float *)dev_alloc(b, nx * sizeof(float)), *dy = (float *)dev_alloc(b, np * sizeof(float));
        int32_t *da = (int32_t *)dev_alloc(b, np * sizeof(int32_t));
        BFK(bf_to_device(b, dx, x, nx * sizeof(float)));
        CK(cudaMemsetAsync(dy, 0xFF, np * sizeof(float), stream));
        CK(cudaMemsetAsync(da, 0xFF, np * sizeof(int32_t), stream));
        BFK(cpu->ops->maxpool_forward(cpu, &ps, (const float *)x, y, argmax));
        launch_pool_v1(stream, &ps, dx, dy, da);
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        printf("    n=%d c=%d %dx%d (%zu NaNs)\n", ps.n, ps.c, ps.h_in, ps.w_in, nans);
        ok &= check_bits(b, "y", dy, y, np, host);
        ok &= check_bits(b, "argmax", da, argmax, np, host);
        BFK(b->ops->synchronize(b));
        bf_free(b, dx);
        bf_free(b, dy);
        bf_free(b, da);
        void *host_ptrs[] = {x, y, argmax, host};
        for (size_t k = 0; k < sizeof host_ptrs / sizeof host_ptrs[0]; k++) bf_free(cpu, host_ptrs[k]);
    }
    return ok;
}

/* Version 3 on shapes and channel counts the VGG ones miss (1x1, odd widths, planes and rows that
 * straddle bitmap words, several column strips, tiling with c_in not dividing c_out, c_in > c_out
 * with untapped channels) on inputs made for the tie and NaN rules: x from {-0, +0, 1, 2, -inf} with
 * 3% NaNs (own payloads), C from {-0, +0, 1, 2, -inf} with 3% NaNs too, so that pool and conv tie
 * often. Compared bit for bit with the CPU backend's flex_pool_max_forward: y, window (both poisoned
 * first, so that the untapped channels' bytes must stay as they were), winners and conv_wins. */
static int validate_v3_edges(bf_backend *b, cudaStream_t stream, bf_backend *cpu) {
    static const int shapes[][5] = {/* n, c_in, c_out, h, w */
                                    {1, 1, 1, 1, 1},     {2, 3, 64, 7, 7},    {3, 5, 13, 13, 17}, {2, 8, 3, 14, 14},
                                    {1, 64, 128, 14, 14}, {1, 3, 64, 56, 56}, {2, 64, 64, 13, 17}, {1, 2, 4, 5, 300},
                                    {1, 4, 7, 9, 301},   {2, 2, 2, 3, 129},   {1, 3, 6, 40, 4},   {1, 2, 3, 1, 260},
                                    {2, 4, 4, 28, 28},   {1, 2, 4, 112, 112}, {1, 3, 5, 32, 64},  {1, 2, 2, 224, 224},
                                    {5, 7, 7, 2, 3}};
    int ok = 1;
    uint64_t state = 0x2545F4914F6CDD1Dull;
    static const uint32_t levels[5] = {0x80000000u, 0x00000000u, 0x3f800000u, 0x40000000u, 0xff800000u};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        bf_pool_shape ps;
        memset(&ps, 0, sizeof ps);
        ps.n = shapes[si][0];
        ps.c = shapes[si][1];
        ps.h_in = shapes[si][3];
        ps.w_in = shapes[si][4];
        ps.k = 3;
        ps.stride = 1;
        ps.pad = 1;
        BFK(bf_pool_shape_init(&ps));
        bf_flex_shape fs;
        memset(&fs, 0, sizeof fs);
        fs.n = ps.n;
        fs.c_in = ps.c;
        fs.c_out = shapes[si][2];
        fs.hw = ps.h_out * ps.w_out;
        fs.channels = BF_FLEX_CHANNELS_EXPAND;
        fs.ties = BF_FLEX_TIE_SPLIT;
        const char *why = slide_why_not(&ps, &fs);
        printf("    n=%d %d->%d %dx%d", ps.n, fs.c_in, fs.c_out, ps.h_in, ps.w_in);
        if (why) {
            printf(": skipped: %s\n", why);
            continue;
        }
        const size_t nx = (size_t)ps.n * ps.c * ps.h_in * ps.w_in, np = (size_t)fs.n * fs.c_in * fs.hw;
        const size_t nc = (size_t)fs.n * fs.c_out * fs.hw, words = (nc + 31) / 32;
        uint32_t *x = (uint32_t *)host_alloc(cpu, nx * sizeof(uint32_t));
        uint32_t *y = (uint32_t *)host_alloc(cpu, nc * sizeof(uint32_t));
        uint8_t *window = (uint8_t *)host_alloc(cpu, np);
        uint32_t *winners = (uint32_t *)host_alloc(cpu, words * sizeof(uint32_t));
        uint32_t *ties = (uint32_t *)host_alloc(cpu, words * sizeof(uint32_t));
        void *host = host_alloc(cpu, (nc > np ? nc : np) * sizeof(uint32_t) + 16);
        float *wins = (float *)host_alloc(cpu, sizeof(float));
        size_t nans = 0;
        for (size_t i = 0; i < nx + nc; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            const unsigned r = (unsigned)(state >> 33);
            const uint32_t v = r % 100 < 3 ? 0x7fc00000u | (uint32_t)(i & 0x3fffff) : levels[(r >> 8) % 5];
            nans += r % 100 < 3;
            if (i < nx) x[i] = v;
            else y[i - nx] = v;
        }
        memset(window, 0xFF, np);
        float *dx = (float *)dev_alloc(b, nx * sizeof(float)), *dy = (float *)dev_alloc(b, nc * sizeof(float));
        float *dwins = (float *)dev_alloc(b, sizeof(float)); /* zero, as wins */
        uint8_t *dwin = (uint8_t *)dev_alloc(b, np);
        uint32_t *dbits = (uint32_t *)dev_alloc(b, words * sizeof(uint32_t));
        uint32_t *dties = (uint32_t *)dev_alloc(b, words * sizeof(uint32_t));
        BFK(bf_to_device(b, dx, x, nx * sizeof(float)));
        BFK(bf_to_device(b, dy, y, nc * sizeof(float))); /* y starts as C */
        CK(cudaMemsetAsync(dwin, 0xFF, np, stream));
        CK(cudaMemsetAsync(dbits, 0xFF, words * sizeof(uint32_t), stream));
        CK(cudaMemsetAsync(dties, 0xFF, words * sizeof(uint32_t), stream));
        BFK(bf_cuda_set_flex_kernels(b, 1));
        BFK(b->ops->flex_pool_max_forward(b, &ps, &fs, dx, NULL, dy, dwin, dbits, dties, dwins));
        BFK(bf_cuda_set_flex_kernels(b, 0));
        CK(cudaStreamSynchronize(stream));
        CK(cudaGetLastError());
        BFK(cpu->ops->flex_pool_max_forward(cpu, &ps, &fs, (const float *)x, NULL, (float *)y, window, winners, ties,
                                            wins));
        printf(" (%zu NaNs, %.0f conv wins)\n", nans, *wins);
        ok &= check_bits(b, "y", dy, y, nc, host);
        BFK(bf_to_host(b, host, dwin, np));
        ok &= same_bytes("window", host, window, np);
        ok &= check_bits(b, "winners", dbits, winners, words, host);
        ok &= check_bits(b, "ties", dties, ties, words, host);
        ok &= check_bits(b, "wins", dwins, wins, 1, host);
        BFK(b->ops->synchronize(b));
        void *dev_ptrs[] = {dx, dy, dwins, dwin, dbits, dties};
        for (size_t k = 0; k < sizeof dev_ptrs / sizeof dev_ptrs[0]; k++) bf_free(b, dev_ptrs[k]);
        void *host_ptrs[] = {x, y, window, winners, ties, host, wins};
        for (size_t k = 0; k < sizeof host_ptrs / sizeof host_ptrs[0]; k++) bf_free(cpu, host_ptrs[k]);
    }
    return ok;
}

/* lab_print_header with this lab's last column (three versions, and the memory each keeps). */
static void print_header(const lab_table *tb) {
    printf("%-*s %-*s %9s %7s %6s %9s %7s %6s %9s  %s\n", tb->lead_width, "layer (count)  c_in->c_out @hw  n",
           tb->version_width, "version", "fwd ms", "GB/s", "%peak", "bwd ms", "GB/s", "%peak", "f+b ms",
           "speed-up (f+b; fwd, bwd); memory kept fwd->bwd");
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_flex_lab [--batch N] [--repeats N] [--peak-gbs X]\n"
               "  --batch N      batch size (default: 32 and 128)\n"
               "  --repeats N    timed runs per pass, after one warm-up (default 50)\n"
               "  --peak-gbs X   peak DRAM bandwidth in GB/s for %%peak (default: queried, else 3350)\n");
}

int main(int argc, char **argv) {
    lab_options o = {0, 50, 0.0}; /* batch 0: both 32 and 128 */
    const int parsed = lab_parse_options(argc, argv, &o, usage, NULL, NULL);
    if (parsed >= 0) return parsed;
    const int batch = o.batch, repeats = o.repeats;

    lab_device d;
    if (lab_device_open(&d, "flex joint kernel lab", &o)) return 1;
    bf_backend *b = d.b, *cpu = d.cpu;
    const cudaStream_t stream = d.stream;
    lab_timer *t = &d.timer;
    const lab_table tb = {34, 18, d.peak_gbs};
    printf("  channels EXPAND, ties SPLIT, maxpool 3x3 stride 1 pad 1, fp32; %d timed runs per pass\n\n", repeats);

    /* ---- correctness first ---- */
    printf("validation against the CPU reference backend (batch 32):\n");
    int ok = 1;
    ok &= validate_shape(b, stream, cpu, &k_shapes[0], 32); /* 3 -> 64 @224: tiling */
    ok &= validate_shape(b, stream, cpu, &k_shapes[2], 32); /* 64 -> 128 @112: block copy */
    ok &= validate_shape(b, stream, cpu, &k_shapes[8], 32); /* 512 -> 512 @14: identity, hw % 32 != 0 */
    printf("  pool v1 (sliding window) on edge shapes, ties, -0/+0, -inf and NaNs:\n");
    ok &= validate_pool_v1_edges(b, stream, cpu);
    printf("  version 3 (sliding-window fused forward) on edge shapes and channel counts, ties, -0/+0, -inf, NaNs:\n");
    ok &= validate_v3_edges(b, stream, cpu);
    if (!lab_validated(ok)) return 1;

    /* ---- timings ---- */
    const int batches_default[] = {32, 128};
    const int nb = batch ? 1 : 2;
    print_header(&tb);
    for (int bi = 0; bi < nb; bi++) {
        const int n = batch ? batch : batches_default[bi];
        double sum_pool = 0.0, sum_v0 = 0.0, sum_v1 = 0.0, sum_v2 = 0.0;
        double sum_pool_f = 0.0, sum_pool1_f = 0.0; /* the pool forward alone: library, pool v1 */
        double sum_v2_f = 0.0, sum_v3_f = 0.0;      /* the fused forward alone: version 2, version 3 */
        double sum_v4_b = 0.0;                      /* version 4's backward (route and scatter in one pass) */
        double bytes_fused = 0.0; /* the byte model of a fused step (2's or 3's forward, 4's backward) */
        double sum_v4bn_apart = 0.0, sum_v4bn = 0.0; /* with the next batch-norm's backward, apart or applied */
        double sum_v4db_after = 0.0, sum_v4db = 0.0;  /* and the conv's bias gradient, after or in the route */
        double first_route_alone = 0.0, first_v4db = 0.0; /* conv1_1: the route alone, and version 4's */
        double sum_v2st_apart = 0.0, sum_v2st = 0.0; /* version 2's forward with that batch-norm's statistics */
        double sum_v3st_apart = 0.0, sum_v3st = 0.0; /* version 3's */
        double sum_bn_alone = 0.0; /* the batch-norm's statistics and backward passes alone */
        double sum_v4s = 0.0, sum_v4bns = 0.0; /* version 4 on the sliding window, without and with the batch-norm */
        int v4s_skipped = 0;
        int v3_skipped = 0, scatter_skipped = 0;
        double sum_sc_lib = 0.0, sum_sc_v1 = 0.0; /* the backward's scatter alone: library, scatter v1 */
        double kept0 = 0.0, kept1 = 0.0, kept2 = 0.0;
        int skipped = 0;
        for (int si = 0; si < NUM_SHAPES; si++) {
            const lab_shape *sh = &k_shapes[si];
            char lead[96];
            snprintf(lead, sizeof lead, "%s (%d) %d->%d @%d n=%d", sh->name, sh->count, sh->c_in, sh->c_out, sh->h, n);
            lab_case c;
            case_shapes(&c, sh, n);
            if (!lab_fits(&tb, lead, case_bytes(&c))) {
                skipped = 1;
                continue;
            }
            case_alloc(&c, b, stream);
            case_init(&c);
            /* warm-up: first launches, the library's scratch growth (it synchronises), clocks; version
             * 2's forward before its backward, which reads its window and winners */
            pool_forward(&c);
            pool_backward(&c);
            pool_forward_v1(&c);
            v1_forward(&c);
            v1_backward(&c);
            v0_forward(&c);
            v0_backward(&c);
            v2_prepare_forward(&c);
            v2_forward(&c);
            v2_prepare_backward(&c);
            v2_backward(&c);
            const char *why3 = v3_why_not(&c);
            if (!why3) {
                v2_prepare_forward(&c);
                v3_forward(&c);
            }
            CK(cudaStreamSynchronize(stream));
            CK(cudaGetLastError());

            const double pool_f = time_pass(t, &c, pool_forward), pool_b = time_pass(t, &c, pool_backward);
            const double pool1_f = time_pass(t, &c, pool_forward_v1);
            const double v0_f = time_pass(t, &c, v0_forward), v0_b = time_pass(t, &c, v0_backward);
            const double v1_f = time_pass(t, &c, v1_forward), v1_b = time_pass(t, &c, v1_backward);
            /* the forward first: the backward times read the window, winners and y it left */
            const double v2_f = time_pass(t, &c, v2_forward, v2_prepare_forward);
            const double v2_b = time_pass(t, &c, v2_backward, v2_prepare_backward);
            /* version 3 last: its outputs are version 2's bit for bit, but nothing timed after it reads them */
            const double v3_f = why3 ? -1.0 : time_pass(t, &c, v3_forward, v2_prepare_forward);
            /* the scatter alone, on the window bytes and dP the passes above left (version 2's, or
             * version 3's: the same bits) */
            const char *why_s = scatter_v1_why_not(&c);
            const double sc_lib = time_pass(t, &c, scatter_library, v2_prepare_backward);
            const double sc_v1 = why_s ? -1.0 : time_pass(t, &c, scatter_v1, v2_prepare_backward);
            const double v4_b = time_pass(t, &c, v4_backward);
            const double v4bn_apart = time_pass(t, &c, v4_bn_apart), v4bn = time_pass(t, &c, v4_bn_applied);
            const double v4db_after = time_pass(t, &c, v4_bn_dbias_after), v4db = time_pass(t, &c, v4_bn_dbias_in_route);
            const double alone = time_pass(t, &c, route_alone_bn_dbias);
            /* last: they rewrite y, window and bits (the same bits as version 2's) */
            const double v2st_apart = time_pass(t, &c, v2_bn_stats_apart, v2_prepare_forward);
            const double v2st = time_pass(t, &c, v2_bn_stats_fused, v2_prepare_forward);
            const double bn_alone = time_pass(t, &c, bn_stats_alone) + time_pass(t, &c, bn_backward_alone);
            const double v3st_apart = why3 ? -1.0 : time_pass(t, &c, v3_bn_stats_apart, v2_prepare_forward);
            const double v3st = why3 ? -1.0 : time_pass(t, &c, v3_bn_stats_fused, v2_prepare_forward);
            const char *why4s = slide_why_not(&c.ps, &c.fs);
            const double v4s = why4s ? -1.0 : time_pass(t, &c, v4_slide), v4bns = why4s ? -1.0 : time_pass(t, &c, v4_bn_slide);

            char tail0[64], tail1[160], tail2[192], tail_pool1[64];
            snprintf(tail_pool1, sizeof tail_pool1, "fwd x%.2f over the library's pool", pool_f / pool1_f);
            snprintf(tail0, sizeof tail0, "kept %.1f MB", kept_v0(&c) / 1e6);
            snprintf(tail1, sizeof tail1, "x%.2f over 0 (fwd x%.2f, bwd x%.2f); kept %.1f MB",
                     (v0_f + v0_b) / (v1_f + v1_b), v0_f / v1_f, v0_b / v1_b, kept_v1(&c) / 1e6);
            snprintf(tail2, sizeof tail2,
                     "x%.2f over 0, x%.2f over 1 (fwd x%.2f/x%.2f, bwd x%.2f/x%.2f); kept %.1f MB",
                     (v0_f + v0_b) / (v2_f + v2_b), (v1_f + v1_b) / (v2_f + v2_b), v0_f / v2_f, v1_f / v2_f,
                     v0_b / v2_b, v1_b / v2_b, kept_v2(&c) / 1e6);
            lab_print_row(&tb, lead, "pool (in 0 and 1)", pool_f, bytes_pool_fwd(&c), pool_b, bytes_pool_bwd(&c), "");
            lab_print_row(&tb, "", "pool v1 (sliding)", pool1_f, bytes_pool_fwd(&c), -1.0, 0.0, tail_pool1);
            lab_print_row(&tb, "", "0 unfused", v0_f, bytes_v0_fwd(&c), v0_b, bytes_v0_bwd(&c), tail0);
            lab_print_row(&tb, "", "1 fused (library)", v1_f, bytes_v1_fwd(&c), v1_b, bytes_v1_bwd(&c), tail1);
            lab_print_row(&tb, "", "2 fused pool+joint", v2_f, bytes_v2_fwd(&c), v2_b, bytes_v2_bwd(&c), tail2);
            if (why3) {
                printf("%-*s %-*s skipped: %s\n", tb.lead_width, "", tb.version_width, "3 sliding fused", why3);
                v3_skipped = 1;
            } else {
                char tail3[64];
                snprintf(tail3, sizeof tail3, "fwd x%.2f over version 2's forward", v2_f / v3_f);
                lab_print_row(&tb, "", "3 sliding fused", v3_f, bytes_v2_fwd(&c), -1.0, 0.0, tail3);
                sum_v3_f += sh->count * v3_f;
            }
            char tail4[160];
            snprintf(tail4, sizeof tail4, "bwd x%.2f over version 2's; with 2's forward x%.2f over 0", v2_b / v4_b,
                     (v0_f + v0_b) / (v2_f + v4_b));
            lab_print_row(&tb, "", "4 route+scatter", -1.0, 0.0, v4_b, bytes_v4_bwd(&c), tail4);
            sum_v4_b += sh->count * v4_b;
            bytes_fused += sh->count * (bytes_v2_fwd(&c) + bytes_v4_bwd(&c));
            char tail_bn[64];
            snprintf(tail_bn, sizeof tail_bn, "bwd x%.2f over 4 + BN backward", v4bn_apart / v4bn);
            lab_print_row(&tb, "", "4 + BN backward", -1.0, 0.0, v4bn_apart, bytes_v4_bn_apart(&c), "");
            lab_print_row(&tb, "", "4 BN applied", -1.0, 0.0, v4bn, bytes_v4_bn_applied(&c), tail_bn);
            char tail_db[64];
            snprintf(tail_db, sizeof tail_db, "bwd x%.2f over 4 BN + dbias after", v4db_after / v4db);
            lab_print_row(&tb, "", "4 BN + dbias after", -1.0, 0.0, v4db_after, bytes_v4_bn_dbias_after(&c), "");
            lab_print_row(&tb, "", "4 BN + dbias in route", -1.0, 0.0, v4db, bytes_v4_bn_applied(&c), tail_db);
            lab_print_row(&tb, "", "route alone BN+dbias", -1.0, 0.0, alone, bytes_route_alone_bn(&c),
                          "no input gradient (a first layer)");
            if (si == 0) first_route_alone = alone, first_v4db = v4db; /* conv1_1 */
            sum_v4db_after += sh->count * v4db_after;
            sum_v4db += sh->count * v4db;
            if (why4s) {
                printf("%-*s %-*s skipped: %s\n", tb.lead_width, "", tb.version_width, "4 slide", why4s);
                v4s_skipped = 1;
            } else {
                char tail_s4[64], tail_s4bn[64];
                snprintf(tail_s4, sizeof tail_s4, "bwd x%.2f over 4", v4_b / v4s);
                snprintf(tail_s4bn, sizeof tail_s4bn, "bwd x%.2f over 4 BN applied", v4bn / v4bns);
                lab_print_row(&tb, "", "4 slide", -1.0, 0.0, v4s, bytes_v4_bwd(&c), tail_s4);
                lab_print_row(&tb, "", "4 slide BN applied", -1.0, 0.0, v4bns, bytes_v4_bn_applied(&c), tail_s4bn);
                sum_v4s += sh->count * v4s;
                sum_v4bns += sh->count * v4bns;
            }
            sum_v4bn_apart += sh->count * v4bn_apart;
            sum_v4bn += sh->count * v4bn;
            char tail_st[64];
            snprintf(tail_st, sizeof tail_st, "fwd x%.2f over 2 + BN stats", v2st_apart / v2st);
            lab_print_row(&tb, "", "2 + BN stats", v2st_apart, bytes_v2_bn_stats_apart(&c), -1.0, 0.0, "");
            lab_print_row(&tb, "", "2 stats in pass", v2st, bytes_v2_fwd(&c), -1.0, 0.0, tail_st);
            sum_v2st_apart += sh->count * v2st_apart;
            sum_v2st += sh->count * v2st;
            if (!why3) {
                char tail_st3[64];
                snprintf(tail_st3, sizeof tail_st3, "fwd x%.2f over 3 + BN stats", v3st_apart / v3st);
                lab_print_row(&tb, "", "3 + BN stats", v3st_apart, bytes_v2_bn_stats_apart(&c), -1.0, 0.0, "");
                lab_print_row(&tb, "", "3 stats in pass", v3st, bytes_v2_fwd(&c), -1.0, 0.0, tail_st3);
                sum_v3st_apart += sh->count * v3st_apart;
                sum_v3st += sh->count * v3st;
            }
            sum_bn_alone += sh->count * bn_alone;
            lab_print_row(&tb, "", "scatter (library)", -1.0, 0.0, sc_lib, bytes_scatter(&c), "the backward's dx += scatter(dP)");
            if (why_s) {
                printf("%-*s %-*s skipped: %s\n", tb.lead_width, "", tb.version_width, "scatter v1", why_s);
                scatter_skipped = 1;
            } else {
                char tail_s[64];
                snprintf(tail_s, sizeof tail_s, "x%.2f over the library's scatter", sc_lib / sc_v1);
                lab_print_row(&tb, "", "scatter v1 (slide)", -1.0, 0.0, sc_v1, bytes_scatter(&c), tail_s);
                sum_sc_v1 += sh->count * sc_v1;
            }
            sum_sc_lib += sh->count * sc_lib;
            sum_v2_f += sh->count * v2_f;
            sum_pool += sh->count * (pool_f + pool_b);
            sum_pool_f += sh->count * pool_f;
            sum_pool1_f += sh->count * pool1_f;
            sum_v0 += sh->count * (v0_f + v0_b);
            sum_v1 += sh->count * (v1_f + v1_b);
            sum_v2 += sh->count * (v2_f + v2_b);
            kept0 += sh->count * kept_v0(&c);
            kept1 += sh->count * kept_v1(&c);
            kept2 += sh->count * kept_v2(&c);
            case_free(&c);
        }
        if (skipped) {
            printf("VGG-16 batch %d: some shapes were skipped, no per-step total\n\n", n);
            continue;
        }
        printf("VGG-16 batch %d, 13 flex layers, fwd+bwd per step (pool and joint, no conv): version 0 %.3f ms, "
               "version 1 %.3f ms, speed-up x%.2f (pool alone %.3f ms; joint alone x%.2f)\n",
               n, sum_v0, sum_v1, sum_v0 / sum_v1, sum_pool,
               sum_v1 > sum_pool ? (sum_v0 - sum_pool) / (sum_v1 - sum_pool) : 0.0);
        printf("  version 2 %.3f ms: x%.2f over version 0, x%.2f over version 1\n", sum_v2, sum_v0 / sum_v2,
               sum_v1 / sum_v2);
        printf("  pool forward alone: library %.3f ms, pool v1 (sliding window) %.3f ms, x%.2f\n", sum_pool_f,
               sum_pool1_f, sum_pool_f / sum_pool1_f);
        if (v3_skipped)
            printf("  fused forward alone: version 2 %.3f ms; version 3 skipped on some shapes, no total\n", sum_v2_f);
        else
            printf("  fused forward alone: version 2 %.3f ms, version 3 (sliding window) %.3f ms, x%.2f; "
                   "with version 2's backward, fwd+bwd %.3f ms\n",
                   sum_v2_f, sum_v3_f, sum_v2_f / sum_v3_f, sum_v2 - sum_v2_f + sum_v3_f);
        printf("  version 4's backward (route and scatter in one pass, the default) %.3f ms against version 2's %.3f ms: "
               "with version 2's forward %.3f ms, x%.2f over version 0\n",
               sum_v4_b, sum_v2 - sum_v2_f, sum_v2_f + sum_v4_b, sum_v0 / (sum_v2_f + sum_v4_b));
        if (!v3_skipped)
            printf("  version 3's forward + version 4's backward %.3f ms, x%.2f over version 0\n", sum_v3_f + sum_v4_b,
                   sum_v0 / (sum_v3_f + sum_v4_b));
        /* issue 3's two targets in one line: the fused step's speed-up over the unfused sequence and
         * its effective bandwidth, the layers' modelled bytes over their summed times */
        {
            const double fused_ms = sum_v2_f + sum_v4_b;
            const double gbs = bytes_fused / (fused_ms * 1e6);
            printf("  fused step (version 2's forward, version 4's backward, the default kernels): x%.2f over version 0, "
                   "%.1f GB/s, %.1f %% of peak\n", sum_v0 / fused_ms, gbs, 100.0 * gbs / tb.peak_gbs);
            if (!v3_skipped && !v4s_skipped) {
                const double slide_ms = sum_v3_f + sum_v4s, gbs_s = bytes_fused / (slide_ms * 1e6);
                printf("  fused step on the sliding window (version 3's forward, version 4 slide, flex_kernels = slide): "
                       "x%.2f over version 0, %.1f GB/s, %.1f %% of peak\n", sum_v0 / slide_ms, gbs_s,
                       100.0 * gbs_s / tb.peak_gbs);
            }
        }
        printf("  with the batch-norm + ReLU after each layer: its backward then version 4 %.3f ms, its sums and "
               "version 4 applying its dx (fuse_flex_bn) %.3f ms, x%.2f\n", sum_v4bn_apart, sum_v4bn,
               sum_v4bn_apart / sum_v4bn);
        printf("  and the conv's bias gradient ([model] fold_conv_bias): its channel sum after version 4 %.3f ms, "
               "summed in version 4's pass %.3f ms, x%.2f\n", sum_v4db_after, sum_v4db, sum_v4db_after / sum_v4db);
        printf("  the network's step runs conv1_1 (no input gradient) as the route alone: %.3f ms there against "
               "version 4's %.3f ms; with the bias gradient in the route, per step %.3f ms\n", first_route_alone,
               first_v4db, sum_v4db - first_v4db + first_route_alone);
        printf("  version 2's forward then the batch-norm's statistics %.3f ms, the statistics in its pass "
               "(fuse_flex_bn_stats) %.3f ms, x%.2f\n", sum_v2st_apart, sum_v2st, sum_v2st_apart / sum_v2st);
        if (!v3_skipped)
            printf("  version 3's forward then the batch-norm's statistics %.3f ms, in its pass %.3f ms, x%.2f; with "
                   "version 4 on the sliding window applying the batch-norm's dx %.3f ms\n", sum_v3st_apart, sum_v3st,
                   sum_v3st_apart / sum_v3st, sum_v3st + sum_v4bns);
        if (!v4s_skipped)
            printf("  version 4 on the sliding window %.3f ms (x%.2f over version 4), with the batch-norm applied %.3f ms "
                   "(x%.2f); version 3's forward + its backward %.3f ms, x%.2f over version 0\n",
                   sum_v4s, sum_v4_b / sum_v4s, sum_v4bns, sum_v4bn / sum_v4bns, sum_v3_f + sum_v4s,
                   sum_v0 / (sum_v3_f + sum_v4s));
        printf("  with the batch-norm + ReLU's statistics and backward on both sides (its apply is the same): version 0 "
               "and the batch-norm's own passes %.3f ms, the library's default (statistics in version 2's pass, version "
               "4 applying its dx) %.3f ms, x%.2f\n", sum_v0 + sum_bn_alone, sum_v2st + sum_v4bn,
               (sum_v0 + sum_bn_alone) / (sum_v2st + sum_v4bn));
        if (scatter_skipped)
            printf("  backward's scatter alone: library %.3f ms; scatter v1 skipped on some shapes\n", sum_sc_lib);
        else
            printf("  backward's scatter alone: library %.3f ms, scatter v1 (sliding window) %.3f ms, x%.2f\n",
                   sum_sc_lib, sum_sc_v1, sum_sc_lib / sum_sc_v1);
        printf("  memory kept from forward to backward: version 0 %.2f GB, version 1 %.2f GB, version 2 %.2f GB "
               "(x%.1f less than version 1)\n\n",
               kept0 / 1e9, kept1 / 1e9, kept2 / 1e9, kept1 / kept2);
    }

    lab_device_close(&d);
    return 0;
}
