/* local_conv.cu - the locally connected 2-D layer on the GPU (contract in ops.h, bf_local_shape;
 * ../shared/specs/v1-constrained.md 3 and 9; local_conv_cpu.c is the CPU twin, and
 * tests/test_local_conv_cuda.c compares them).
 *
 * As on the CPU, one GEMM per output position pos (P = h_out * w_out, K = c_in * k * k), here all P
 * in one cublasSgemmStridedBatched on buffers that custom kernels lay out position-major in the
 * backend's scratch:
 *     patches [P][n][K]      each image's zero-padded window at pos, column c*k*k + a*k + b
 *     weights [P][c_out][K]  gathered from the reference's w[c_out, c_in, h_out, w_out, k*k]
 *     slices  [P][n][c_out]  y or dy at pos (a tiled transpose of y, dy as [n*c_out][P])
 * cuBLAS is column-major: a row-major [r][c] matrix is the column-major [c][r] one, so each product
 * is taken transposed on the same memory:
 *     forward          y_pos^T [c_out, n]   = W_pos (op T of [K, c_out]) * patches_pos^T [K, n]
 *     backward data    dpatch^T [K, n]      = W_pos^T [K, c_out] * dy_pos^T [c_out, n]
 *     backward filter  dW_pos^T [K, c_out]  = patches_pos^T [K, n] * dy_pos (op T of [c_out, n])
 * then y is transposed back, dW scattered to the reference's layout, and dx gathered from the
 * dpatches: each dx element sums the entries of the windows that read it, in ascending position
 * order (the CPU's col2im order), so there are no atomics and every run gives the same bits.
 * The GEMMs follow the handle's math mode (backend_cuda.cu: TF32 under precision tf32, fp32
 * otherwise), as linear.cu's do. Scratch: P * (n*K + c_out*K + n*c_out) floats for each op (the
 * spec's layer at batch 256: 206 MB), grown once and reused. */
#include <limits.h>

#include "cuda_backend.h"
#include "require.h"

namespace {

/* One call's sizes: the shape's, and P, k*k and K. */
struct lc_dims {
    int n, c_in, h_in, w_in, c_out, k, stride, pad, h_out, w_out;
    int P, kk, K;
};

/* patches[pos][i][c*kk + a*k + b] = x_pad[i][c][oi*stride + a][oj*stride + b], pos = oi*w_out + oj. */
__global__ void k_lc_patches(lc_dims d, const float *__restrict__ x, float *__restrict__ pat, size_t total) {
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int col = (int)(idx % (size_t)d.K);
        const size_t row = idx / (size_t)d.K;
        const int i = (int)(row % (size_t)d.n), pos = (int)(row / (size_t)d.n);
        const int c = col / d.kk, t = col % d.kk;
        const int ih = (pos / d.w_out) * d.stride - d.pad + t / d.k, iw = (pos % d.w_out) * d.stride - d.pad + t % d.k;
        pat[idx] = ih >= 0 && ih < d.h_in && iw >= 0 && iw < d.w_in
                       ? x[(((size_t)i * d.c_in + c) * d.h_in + ih) * d.w_in + iw]
                       : 0.0f;
    }
}

/* wl[pos][o][c*kk + t] = w[o][c][pos][t]. */
__global__ void k_lc_weights(lc_dims d, const float *__restrict__ w, float *__restrict__ wl, size_t total) {
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int col = (int)(idx % (size_t)d.K);
        const size_t row = idx / (size_t)d.K;
        const int o = (int)(row % (size_t)d.c_out), pos = (int)(row / (size_t)d.c_out);
        const int c = col / d.kk, t = col % d.kk;
        wl[idx] = w[(((size_t)o * d.c_in + c) * d.P + pos) * d.kk + t];
    }
}

/* dw[o][c][pos][t] = dwl[pos][o][c*kk + t], one thread per dw element (coalesced writes). */
__global__ void k_lc_weights_back(lc_dims d, const float *__restrict__ dwl, float *__restrict__ dw, size_t total) {
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int t = (int)(idx % (size_t)d.kk);
        size_t r = idx / (size_t)d.kk;
        const int pos = (int)(r % (size_t)d.P);
        r /= (size_t)d.P;
        const int c = (int)(r % (size_t)d.c_in), o = (int)(r / (size_t)d.c_in);
        dw[idx] = dwl[((size_t)pos * d.c_out + o) * d.K + (size_t)c * d.kk + t];
    }
}

/* out[c][r] = in[r][c] for in [rows][cols], by 32 x 32 tiles through shared memory (blocks of
 * 32 x 8 threads; grid.x covers the columns, grid.y strides over the rows). */
__global__ void k_lc_transpose(const float *__restrict__ in, float *__restrict__ out, int rows, int cols) {
    __shared__ float tile[32][33];
    const int c0 = blockIdx.x * 32;
    for (int r0 = blockIdx.y * 32; r0 < rows; r0 += gridDim.y * 32) {
        for (int j = threadIdx.y; j < 32; j += 8) {
            const int r = r0 + j, c = c0 + threadIdx.x;
            if (r < rows && c < cols) tile[j][threadIdx.x] = in[(size_t)r * cols + c];
        }
        __syncthreads();
        for (int j = threadIdx.y; j < 32; j += 8) {
            const int c = c0 + j, r = r0 + threadIdx.x;
            if (r < rows && c < cols) out[(size_t)c * rows + r] = tile[threadIdx.x][j];
        }
        __syncthreads(); /* the tile is read before the next rows overwrite it */
    }
}

/* dx[i][c][ih][iw] = sum of dpat[pos][i][c*kk + a*k + b] over the windows (pos, a, b) that read
 * (ih, iw): a and b from k-1 down to 0, which visits the positions in ascending order. */
__global__ void k_lc_col2im(lc_dims d, const float *__restrict__ dpat, float *__restrict__ dx, size_t total) {
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
        const int iw = (int)(idx % (size_t)d.w_in);
        size_t r = idx / (size_t)d.w_in;
        const int ih = (int)(r % (size_t)d.h_in);
        r /= (size_t)d.h_in;
        const int c = (int)(r % (size_t)d.c_in), i = (int)(r / (size_t)d.c_in);
        const float *base = dpat + (size_t)i * d.K + (size_t)c * d.kk;
        const size_t pos_stride = (size_t)d.n * d.K;
        float sum = 0.0f;
        for (int a = d.k - 1; a >= 0; a--) {
            const int ri = ih + d.pad - a;
            if (ri < 0 || ri % d.stride) continue;
            const int oi = ri / d.stride;
            if (oi >= d.h_out) continue;
            for (int b = d.k - 1; b >= 0; b--) {
                const int rj = iw + d.pad - b;
                if (rj < 0 || rj % d.stride) continue;
                const int oj = rj / d.stride;
                if (oj >= d.w_out) continue;
                sum = __fadd_rn(sum, base[(size_t)(oi * d.w_out + oj) * pos_stride + a * d.k + b]);
            }
        }
        dx[idx] = sum;
    }
}

bf_status lc_check(const char *op, const bf_local_shape *s, lc_dims *d) {
    if (!s) return bf_error(BF_ERR_ARG, "%s: NULL shape", op);
    if (s->n <= 0 || s->c_in <= 0 || s->c_out <= 0 || s->h_in <= 0 || s->w_in <= 0)
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d c_in=%d %dx%d c_out=%d (each must be > 0)", op, s->n,
                        s->c_in, s->h_in, s->w_in, s->c_out);
    bf_local_shape t = *s;
    if (bf_local_shape_init(&t) != BF_OK) return bf_error(BF_ERR_ARG, "%s: %s", op, bf_last_error());
    if (t.h_out != s->h_out || t.w_out != s->w_out)
        return bf_error(BF_ERR_ARG, "%s: output %dx%d, but k=%d stride=%d pad=%d on %dx%d give %dx%d (initialise the "
                        "shape with bf_local_shape_init)", op, s->h_out, s->w_out, s->k, s->stride, s->pad, s->h_in,
                        s->w_in, t.h_out, t.w_out);
    const size_t K = (size_t)s->c_in * s->k * s->k;
    if (K > INT_MAX || (size_t)s->n * s->c_out > INT_MAX || (size_t)s->n * s->c_in * s->h_in * s->w_in > INT_MAX)
        return bf_error(BF_ERR_ARG, "%s: shape n=%d c_in=%d %dx%d c_out=%d k=%d too large for 32-bit GEMM sizes", op,
                        s->n, s->c_in, s->h_in, s->w_in, s->c_out, s->k);
    *d = lc_dims{s->n, s->c_in, s->h_in, s->w_in, s->c_out, s->k, s->stride, s->pad, s->h_out, s->w_out,
                 s->h_out * s->w_out, s->k * s->k, (int)K};
    return BF_OK;
}

/* The three position-major buffers of an op, carved from the backend's scratch:
 * patches [P][n][K], weights [P][c_out][K] and slices [P][n][c_out]. */
struct lc_buffers {
    float *patches, *weights, *slices;
};

size_t lc_aligned_bytes(size_t floats) { return (floats * sizeof(float) + 255) & ~(size_t)255; }

bf_status lc_scratch(bf_cuda_impl *im, const lc_dims &d, lc_buffers *out) {
    const size_t P = (size_t)d.P;
    const size_t pb = lc_aligned_bytes(P * d.n * d.K), wb = lc_aligned_bytes(P * d.c_out * d.K);
    const size_t sb = lc_aligned_bytes(P * d.n * d.c_out);
    void *scratch = NULL;
    BF_TRY(bf_cuda_scratch(im, pb + wb + sb, &scratch));
    char *p = (char *)scratch;
    out->patches = (float *)p;
    out->weights = (float *)(p + pb);
    out->slices = (float *)(p + pb + wb);
    return BF_OK;
}

bf_status lc_patches(bf_cuda_impl *im, const lc_dims &d, const float *x, float *pat) {
    const size_t total = (size_t)d.P * d.n * d.K;
    k_lc_patches<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(d, x, pat, total);
    BF_LAUNCH_CHECK("k_lc_patches");
    return BF_OK;
}

bf_status lc_weights(bf_cuda_impl *im, const lc_dims &d, const float *w, float *wl) {
    const size_t total = (size_t)d.P * d.c_out * d.K;
    k_lc_weights<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(d, w, wl, total);
    BF_LAUNCH_CHECK("k_lc_weights");
    return BF_OK;
}

bf_status lc_transpose(bf_cuda_impl *im, const float *in, float *out, int rows, int cols) {
    const size_t row_tiles = bf_cuda_div_up((size_t)rows, 32);
    const dim3 grid((unsigned)bf_cuda_div_up((size_t)cols, 32), (unsigned)(row_tiles < 65535 ? row_tiles : 65535));
    k_lc_transpose<<<grid, dim3(32, 8), 0, im->stream>>>(in, out, rows, cols);
    BF_LAUNCH_CHECK("k_lc_transpose");
    return BF_OK;
}

}  // namespace

extern "C" bf_status bf_cuda_local_forward(bf_backend *b, const bf_local_shape *s, const float *x, const float *w,
                                           float *y) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("local_forward", x, w, y);
    lc_dims d;
    BF_TRY(lc_check("local_forward", s, &d));
    lc_buffers buf;
    BF_TRY(lc_scratch(im, d, &buf));
    BF_TRY(lc_patches(im, d, x, buf.patches));
    BF_TRY(lc_weights(im, d, w, buf.weights));
    const float one = 1.0f, zero = 0.0f;
    BF_CUBLAS_CHECK(cublasSgemmStridedBatched(im->cublas, CUBLAS_OP_T, CUBLAS_OP_N, d.c_out, d.n, d.K, &one,
                                              buf.weights, d.K, (long long)d.c_out * d.K, buf.patches, d.K,
                                              (long long)d.n * d.K, &zero, buf.slices, d.c_out,
                                              (long long)d.n * d.c_out, d.P));
    return lc_transpose(im, buf.slices, y, d.P, d.n * d.c_out); /* [P][n*c_out] -> [n*c_out][P] */
}

extern "C" bf_status bf_cuda_local_backward_data(bf_backend *b, const bf_local_shape *s, const float *dy,
                                                 const float *w, float *dx) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("local_backward_data", dy, w, dx);
    lc_dims d;
    BF_TRY(lc_check("local_backward_data", s, &d));
    lc_buffers buf;
    BF_TRY(lc_scratch(im, d, &buf));
    BF_TRY(lc_weights(im, d, w, buf.weights));
    BF_TRY(lc_transpose(im, dy, buf.slices, d.n * d.c_out, d.P)); /* [n*c_out][P] -> [P][n*c_out] */
    const float one = 1.0f, zero = 0.0f;
    BF_CUBLAS_CHECK(cublasSgemmStridedBatched(im->cublas, CUBLAS_OP_N, CUBLAS_OP_N, d.K, d.n, d.c_out, &one,
                                              buf.weights, d.K, (long long)d.c_out * d.K, buf.slices, d.c_out,
                                              (long long)d.n * d.c_out, &zero, buf.patches, d.K,
                                              (long long)d.n * d.K, d.P));
    const size_t total = (size_t)d.n * d.c_in * d.h_in * d.w_in;
    k_lc_col2im<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(d, buf.patches, dx,
                                                                                              total);
    BF_LAUNCH_CHECK("k_lc_col2im");
    return BF_OK;
}

extern "C" bf_status bf_cuda_local_backward_filter(bf_backend *b, const bf_local_shape *s, const float *x,
                                                   const float *dy, float *dw) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    REQUIRE("local_backward_filter", x, dy, dw);
    lc_dims d;
    BF_TRY(lc_check("local_backward_filter", s, &d));
    lc_buffers buf;
    BF_TRY(lc_scratch(im, d, &buf));
    BF_TRY(lc_patches(im, d, x, buf.patches));
    BF_TRY(lc_transpose(im, dy, buf.slices, d.n * d.c_out, d.P));
    const float one = 1.0f, zero = 0.0f;
    BF_CUBLAS_CHECK(cublasSgemmStridedBatched(im->cublas, CUBLAS_OP_N, CUBLAS_OP_T, d.K, d.c_out, d.n, &one,
                                              buf.patches, d.K, (long long)d.n * d.K, buf.slices, d.c_out,
                                              (long long)d.n * d.c_out, &zero, buf.weights, d.K,
                                              (long long)d.c_out * d.K, d.P));
    const size_t total = (size_t)d.P * d.c_out * d.K;
    k_lc_weights_back<<<bf_cuda_grid(im, total, BF_CUDA_THREADS), BF_CUDA_THREADS, 0, im->stream>>>(d, buf.weights,
                                                                                                    dw, total);
    BF_LAUNCH_CHECK("k_lc_weights_back");
    return BF_OK;
}
