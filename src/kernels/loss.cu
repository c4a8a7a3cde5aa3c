/* loss.cu - softmax cross-entropy with label smoothing, and top-1/top-5 hits, on the GPU (contract in
 * ops.h; the CPU twin is loss_cpu.c).
 *
 * One warp per sample: the lanes stride over the k logits, the row maximum is combined exactly and
 * the sums (in double, as on the CPU) in a fixed order, so results repeat from run to run.
 * Labels live on the device and cannot be checked without a host synchronisation, so a label
 * outside [0, k) yields a NaN loss (and NaN gradients / 0 hits) that shows up in the logged loss
 * instead of reading out of bounds. */
#include <math.h>

#include "cuda_backend.h"

namespace { /* kernels and helpers are private to this file */

#define WARPS_PER_BLOCK (BF_CUDA_THREADS / 32)

/* With target t = (1-eps)*onehot(label) + eps/k and lse = log sum_j exp(z_j):
 *     loss = lse - (1-eps) z_label - (eps/k) sum_j z_j,   dz_j = (softmax_j - t_j) * grad_scale. */
__global__ void k_softmax_xent(int n, int k, const float *__restrict__ logits, const int32_t *__restrict__ labels,
                               double eps, double off_target, double grad_scale, float *__restrict__ losses,
                               float *__restrict__ dlogits) {
    const int lane = threadIdx.x & 31;
    for (long row = (long)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5); row < n;
         row += (long)gridDim.x * WARPS_PER_BLOCK) {
        const float *z = logits + (size_t)row * k;
        const int label = labels[row];
        const bool valid = label >= 0 && label < k;

        float mx = z[lane < k ? lane : 0];
        for (int j = lane + 32; j < k; j += 32) mx = z[j] > mx ? z[j] : mx;
        for (int off = 16; off > 0; off >>= 1) {
            const float other = __shfl_xor_sync(0xffffffffu, mx, off);
            mx = other > mx ? other : mx;
        }
        double sum_exp = 0.0, sum_z = 0.0;
        for (int j = lane; j < k; j += 32) {
            sum_exp += exp((double)z[j] - mx);
            sum_z += (double)z[j];
        }
        sum_exp = __shfl_sync(0xffffffffu, bf_warp_sum(sum_exp), 0);
        sum_z = __shfl_sync(0xffffffffu, bf_warp_sum(sum_z), 0);
        const double lse = mx + log(sum_exp);

        if (losses && lane == 0)
            losses[row] = valid ? (float)(lse - (1.0 - eps) * z[label] - off_target * sum_z) : nanf("");
        if (dlogits) {
            float *d = dlogits + (size_t)row * k;
            for (int j = lane; j < k; j += 32) {
                const double target = off_target + (j == label ? 1.0 - eps : 0.0);
                d[j] = valid ? (float)((exp((double)z[j] - mx) / sum_exp - target) * grad_scale) : nanf("");
            }
        }
    }
}

/* A label is in the top m when its rank (logits strictly greater, or equal at a lower index) is
 * below m: loss_cpu.c's rule, a warp per row. */
__global__ void k_topk_correct(int n, int k, int top5, const float *__restrict__ logits,
                               const int32_t *__restrict__ labels, float *__restrict__ correct1,
                               float *__restrict__ correct5) {
    const int lane = threadIdx.x & 31;
    for (long row = (long)blockIdx.x * WARPS_PER_BLOCK + (threadIdx.x >> 5); row < n;
         row += (long)gridDim.x * WARPS_PER_BLOCK) {
        const float *z = logits + (size_t)row * k;
        const int label = labels[row];
        const bool valid = label >= 0 && label < k;
        const float own = valid ? z[label] : 0.0f;
        int rank = 0;
        for (int j = lane; j < k; j += 32) rank += z[j] > own || (z[j] == own && j < label);
        rank = bf_warp_sum(rank);
        const bool ok = valid && own == own;
        if (lane == 0) {
            if (correct1) correct1[row] = ok && rank < 1 ? 1.0f : 0.0f;
            if (correct5) correct5[row] = ok && rank < top5 ? 1.0f : 0.0f;
        }
    }
}

/* A grid-stride loop over the samples; the same double formulas as loss_cpu.c. A label outside {0, 1} gives NaN. */
__global__ void k_binary_xent(int n, const float *__restrict__ logits, const int32_t *__restrict__ labels,
                              float *__restrict__ losses, float *__restrict__ dlogits, float *__restrict__ correct) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const double y = logits[i];
        const int32_t label = labels[i];
        const double t = label == 0 || label == 1 ? (double)label : nan("");
        if (losses) losses[i] = (float)((y > 0 ? y : 0) - y * t + log1p(exp(-fabs(y))));
        if (dlogits) dlogits[i] = (float)(1.0 / (1.0 + exp(-y)) - t);
        if (correct) correct[i] = label == 0 || label == 1 ? ((y > 0) == (label == 1) ? 1.0f : 0.0f) : 0.0f;
    }
}

static unsigned row_blocks(const bf_cuda_impl *im, int n) {
    return bf_cuda_grid(im, (size_t)n, WARPS_PER_BLOCK);
}

}  // namespace

extern "C" bf_status bf_cuda_softmax_xent(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                                          float smoothing, float grad_scale, float *losses, float *dlogits) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n <= 0 || k <= 0) return bf_error(BF_ERR_ARG, "softmax_xent: invalid shape n=%d k=%d", n, k);
    if (!(smoothing >= 0.0f && smoothing <= 1.0f))
        return bf_error(BF_ERR_ARG, "softmax_xent: label smoothing must be in [0, 1] (got %g)", smoothing);
    if (!logits || !labels) return bf_error(BF_ERR_ARG, "softmax_xent: NULL logits or labels");
    const double eps = smoothing, off_target = eps / k;
    k_softmax_xent<<<row_blocks(im, n), BF_CUDA_THREADS, 0, im->stream>>>(n, k, logits, labels, eps, off_target,
                                                                         (double)grad_scale, losses, dlogits);
    BF_LAUNCH_CHECK("k_softmax_xent");
    return BF_OK;
}

extern "C" bf_status bf_cuda_topk_correct(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                                          float *correct1, float *correct5) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n <= 0 || k <= 0) return bf_error(BF_ERR_ARG, "topk_correct: invalid shape n=%d k=%d", n, k);
    if (!logits || !labels) return bf_error(BF_ERR_ARG, "topk_correct: NULL logits or labels");
    const int top5 = k < 5 ? k : 5;
    k_topk_correct<<<row_blocks(im, n), BF_CUDA_THREADS, 0, im->stream>>>(n, k, top5, logits, labels, correct1,
                                                                         correct5);
    BF_LAUNCH_CHECK("k_topk_correct");
    return BF_OK;
}

extern "C" bf_status bf_cuda_binary_xent(bf_backend *b, int n, const float *logits, const int32_t *labels,
                                         float *losses, float *dlogits, float *correct) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    if (n <= 0) return bf_error(BF_ERR_ARG, "binary_xent: invalid batch n=%d", n);
    if (!logits || !labels) return bf_error(BF_ERR_ARG, "binary_xent: NULL logits or labels");
    k_binary_xent<<<bf_cuda_grid(im, (size_t)n, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(
        n, logits, labels, losses, dlogits, correct);
    BF_LAUNCH_CHECK("k_binary_xent");
    return BF_OK;
}
