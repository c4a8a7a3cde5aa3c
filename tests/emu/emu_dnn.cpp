/* emu_dnn.cpp - the kernel emulator's cuDNN and cuBLAS: a stand-in for the calls bioflex makes
 * (include/cudnn.h, include/cublas_v2.h) as plain CPU loops, written for clarity, not speed (they
 * only keep bounds tests out of the inner loops, for the tests' small VGG-like shapes); no threads.
 *
 * Device memory in the emulator is host memory (emu_cuda.h), so "device" pointers are read and
 * written directly, and streams are ignored: everything runs synchronously. Every convolution
 * algorithm is the same direct loop: workspaces are 0 bytes, and an algorithm search
 * (cudnnFind*Ex, cudnnGet*_v7) reports one result, algorithm 0, with the descriptor's math type.
 * Sums are accumulated in double and stored as float: the tests compare against the CPU backend
 * with tolerances, so only accuracy matters, not cuDNN's summation order (nor TF32 rounding, which
 * the emulator never applies). Only NCHW float tensors and filters are supported. */
#include "cudnn.h"
#include "cublas_v2.h"

#include <stdlib.h>
#include <string.h>

struct bf_emu_cudnn { cudaStream_t stream; };
struct bf_emu_tensor_desc { int n, c, h, w; };
struct bf_emu_filter_desc { int k, c, h, w; };
struct bf_emu_conv_desc {
    int pad_h, pad_w, u, v, dil_h, dil_w, groups;
    cudnnConvolutionMode_t mode;
    cudnnMathType_t math;
};
struct bf_emu_cublas {
    cudaStream_t stream;
    void *workspace;
    size_t workspace_bytes;
    cublasMath_t math;
    cublasPointerMode_t pointer_mode;
};

/* ---- convolution ---- */

namespace {
/* One convolution's sizes: input n x c x h x w, filter k x cg x kh x kw (cg = c / groups input
 * channels per group; kg = k / groups output channels per group), output n x k x oh x ow. */
struct geom {
    int n, c, h, w, k, cg, kg, kh, kw, oh, ow, pad_h, pad_w, u, v, dil_h, dil_w, flip;
};
enum { FWD, BWD_DATA, BWD_FILTER };
}  // namespace

static bool out_dim(int in, int pad, int k, int dil, int stride, int *out) {
    const long long num = (long long)in + 2LL * pad - (long long)dil * (k - 1) - 1;
    if (num < 0) return false;
    *out = (int)(num / stride + 1);
    return true;
}

/* Fills g from the descriptors and checks that they agree; y may be NULL (only the size is computed). */
static cudnnStatus_t make_geom(const bf_emu_tensor_desc *x, const bf_emu_filter_desc *w, const bf_emu_conv_desc *cd,
                               const bf_emu_tensor_desc *y, geom *g) {
    if (!x || !w || !cd || x->n <= 0 || x->c <= 0 || x->h <= 0 || x->w <= 0 || w->k <= 0 || w->c <= 0 || w->h <= 0 ||
        w->w <= 0 || cd->groups <= 0 || x->c != w->c * cd->groups || w->k % cd->groups)
        return CUDNN_STATUS_BAD_PARAM;
    *g = geom{x->n, x->c, x->h, x->w, w->k, w->c, w->k / cd->groups, w->h, w->w, 0, 0, cd->pad_h, cd->pad_w, cd->u,
              cd->v, cd->dil_h, cd->dil_w, cd->mode == CUDNN_CONVOLUTION};
    if (!out_dim(g->h, g->pad_h, g->kh, g->dil_h, g->u, &g->oh) ||
        !out_dim(g->w, g->pad_w, g->kw, g->dil_w, g->v, &g->ow) ||
        (y && (y->n != g->n || y->c != g->k || y->h != g->oh || y->w != g->ow)))
        return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

/* The output positions o in [0, out) whose input position o * stride + off is in [0, size): [*lo, *hi). */
static void valid_range(int size, int out, int stride, int off, int *lo, int *hi) {
    const int a = off < 0 ? (-off + stride - 1) / stride : 0;
    int b = size - 1 - off < 0 ? 0 : (size - 1 - off) / stride + 1;
    if (b > out) b = out;
    *lo = a < b ? a : b, *hi = b;
}

/* out = alpha acc + beta out; out is not read when beta is 0 (it may hold NaN). */
static void store(float *out, const double *acc, size_t count, double alpha, double beta) {
    for (size_t i = 0; i < count; i++) out[i] = (float)(beta == 0.0 ? alpha * acc[i] : alpha * acc[i] + beta * out[i]);
}

/* One direction, summed into a double copy of its output, then stored with alpha and beta:
 *   FWD:        y = corr(x, w)      (a = x,  b = w,  out = y)
 *   BWD_DATA:   dx = corr^T(dy, w)  (a = dy, b = w,  out = dx), FWD's adjoint in x
 *   BWD_FILTER: dw = corr(x, dy)    (a = x,  b = dy, out = dw), FWD's adjoint in w
 * Kernel offset (r, s) pairs output (oh, ow) with input (oh * u + r * dil_h - pad_h,
 * ow * v + s * dil_w - pad_w) through filter tap (r, s), mirrored for CUDNN_CONVOLUTION. */
static cudnnStatus_t conv_run(const geom *g, int dir, const float *a, const float *b, double alpha, double beta,
                              float *out) {
    const size_t hw = (size_t)g->h * g->w, ohw = (size_t)g->oh * g->ow, taps = (size_t)g->kh * g->kw;
    const size_t count = dir == FWD ? (size_t)g->n * g->k * ohw
                       : dir == BWD_DATA ? (size_t)g->n * g->c * hw : (size_t)g->k * g->cg * taps;
    double *acc = (double *)calloc(count, sizeof(double));
    if (!acc) return CUDNN_STATUS_ALLOC_FAILED;
    for (int n = 0; n < g->n; n++)
        for (int oc = 0; oc < g->k; oc++)
            for (int icl = 0; icl < g->cg; icl++) {
                /* the x and y planes and the filter this (image, output channel, input channel) couples */
                const size_t xo = ((size_t)n * g->c + (size_t)(oc / g->kg) * g->cg + icl) * hw;
                const size_t yo = ((size_t)n * g->k + oc) * ohw, wo = ((size_t)oc * g->cg + icl) * taps;
                const float *x = dir == BWD_DATA ? NULL : a + xo;
                const float *dy = dir == FWD ? NULL : (dir == BWD_DATA ? a : b) + yo;
                const float *w = dir == BWD_FILTER ? NULL : b + wo;
                double *ac = acc + (dir == FWD ? yo : dir == BWD_DATA ? xo : wo);
                for (int r = 0; r < g->kh; r++)
                    for (int s = 0; s < g->kw; s++) {
                        const size_t t = g->flip ? taps - 1 - ((size_t)r * g->kw + s) : (size_t)r * g->kw + s;
                        const int off_h = r * g->dil_h - g->pad_h, off_w = s * g->dil_w - g->pad_w, v = g->v;
                        int h0, h1, w0, w1;
                        valid_range(g->h, g->oh, g->u, off_h, &h0, &h1);
                        valid_range(g->w, g->ow, v, off_w, &w0, &w1);
                        const double wv = w ? w[t] : 0.0;
                        double sum = 0.0;
                        for (int oh = h0; oh < h1; oh++) {
                            const ptrdiff_t in = (ptrdiff_t)(oh * g->u + off_h) * g->w + off_w; /* + ow * v */
                            const size_t o = (size_t)oh * g->ow;                                /* + ow */
                            if (dir == FWD)
                                for (int ow = w0; ow < w1; ow++) ac[o + ow] += wv * x[in + (ptrdiff_t)ow * v];
                            else if (dir == BWD_DATA)
                                for (int ow = w0; ow < w1; ow++) ac[in + (ptrdiff_t)ow * v] += wv * dy[o + ow];
                            else
                                for (int ow = w0; ow < w1; ow++) sum += (double)x[in + (ptrdiff_t)ow * v] * dy[o + ow];
                        }
                        if (dir == BWD_FILTER) ac[t] += sum;
                    }
            }
    store(out, acc, count, alpha, beta);
    free(acc);
    return CUDNN_STATUS_SUCCESS;
}

/* An algorithm search: with `run` (Find*Ex) it writes the real output, as cuDNN's trials do; then
 * one result: algorithm 0, no workspace, deterministic, the descriptor's math type. */
template <typename Perf>
static cudnnStatus_t search(cudnnHandle_t h, const bf_emu_tensor_desc *xd, const bf_emu_filter_desc *wd,
                            const bf_emu_conv_desc *cd, const bf_emu_tensor_desc *yd, int dir, const void *a,
                            const void *b, void *out, int requested, int *returned, Perf *perf, bool run) {
    geom g;
    if (!h || !returned || !perf || requested < 1 || (run && (!a || !b || !out))) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t st = make_geom(xd, wd, cd, yd, &g);
    if (st == CUDNN_STATUS_SUCCESS && run)
        st = conv_run(&g, dir, (const float *)a, (const float *)b, 1.0, 0.0, (float *)out);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    memset(perf, 0, sizeof *perf); /* algorithm 0, no workspace */
    perf->status = CUDNN_STATUS_SUCCESS, perf->time = 1.0f;
    perf->determinism = CUDNN_DETERMINISTIC, perf->mathType = cd->math;
    *returned = 1;
    return CUDNN_STATUS_SUCCESS;
}

/* A computation (alpha and beta point to host floats): every algorithm number is the same loop. */
static cudnnStatus_t compute(cudnnHandle_t h, const void *alpha, const void *beta, const bf_emu_tensor_desc *xd,
                             const bf_emu_filter_desc *wd, const bf_emu_conv_desc *cd, const bf_emu_tensor_desc *yd,
                             int dir, const void *a, const void *b, void *out, int algo, int algo_count) {
    geom g;
    if (!h || !alpha || !beta || !a || !b || !out || algo < 0 || algo >= algo_count) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t st = make_geom(xd, wd, cd, yd, &g);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    static const char *const names[] = {"forward", "backward data", "backward filter"};
    bf_emu_trace("cudnn %s n %d c %d %dx%d -> k %d %dx%d, %dx%d filter", names[dir], g.n, g.c, g.h, g.w, g.k, g.oh,
                 g.ow, g.kh, g.kw);
    return conv_run(&g, dir, (const float *)a, (const float *)b, *(const float *)alpha, *(const float *)beta,
                    (float *)out);
}

/* A workspace query: 0 bytes for every algorithm of a valid problem. */
static cudnnStatus_t workspace(cudnnHandle_t h, const bf_emu_tensor_desc *xd, const bf_emu_filter_desc *wd,
                               const bf_emu_conv_desc *cd, const bf_emu_tensor_desc *yd, int algo, int algo_count,
                               size_t *bytes) {
    geom g;
    if (!h || !bytes || algo < 0 || algo >= algo_count) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t st = make_geom(xd, wd, cd, yd, &g);
    if (st == CUDNN_STATUS_SUCCESS) *bytes = 0;
    return st;
}

template <typename T>
static cudnnStatus_t create(T **out, const T &init) {
    if (!out) return CUDNN_STATUS_BAD_PARAM;
    if (!(*out = (T *)malloc(sizeof(T)))) return CUDNN_STATUS_ALLOC_FAILED;
    **out = init;
    return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t destroy(void *p) {
    free(p);
    return CUDNN_STATUS_SUCCESS;
}

#define NAME(s) \
    case s: return #s;

extern "C" {

/* ---- cuDNN ---- */

const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
        NAME(CUDNN_STATUS_SUCCESS) NAME(CUDNN_STATUS_NOT_INITIALIZED) NAME(CUDNN_STATUS_BAD_PARAM)
        NAME(CUDNN_STATUS_NOT_SUPPORTED) NAME(CUDNN_STATUS_INTERNAL_ERROR) NAME(CUDNN_STATUS_ALLOC_FAILED)
    }
    return "CUDNN_UNKNOWN_STATUS";
}
size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) { return create(handle, bf_emu_cudnn{NULL}); }
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) { return handle ? destroy(handle) : CUDNN_STATUS_BAD_PARAM; }
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM;
    handle->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *desc) { return create(desc, bf_emu_tensor_desc{}); }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t desc) { return destroy(desc); }
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t desc, cudnnTensorFormat_t format, cudnnDataType_t type,
                                         int n, int c, int h, int w) {
    if (!desc || n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    *desc = bf_emu_tensor_desc{n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *desc) { return create(desc, bf_emu_filter_desc{}); }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t desc) { return destroy(desc); }
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t desc, cudnnDataType_t type, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
    if (!desc || k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    *desc = bf_emu_filter_desc{k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *desc) {
    return create(desc, bf_emu_conv_desc{0, 0, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DEFAULT_MATH});
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t desc) { return destroy(desc); }
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t desc, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute_type) {
    if (!desc || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0 ||
        (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION))
        return CUDNN_STATUS_BAD_PARAM;
    if (compute_type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    desc->pad_h = pad_h, desc->pad_w = pad_w, desc->u = u, desc->v = v;
    desc->dil_h = dilation_h, desc->dil_w = dilation_w, desc->mode = mode;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t desc, int groups) {
    if (!desc || groups <= 0) return CUDNN_STATUS_BAD_PARAM;
    desc->groups = groups;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t desc, cudnnMathType_t math) {
    if (!desc || math < CUDNN_DEFAULT_MATH || math > CUDNN_FMA_MATH) return CUDNN_STATUS_BAD_PARAM;
    desc->math = math;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t conv,
                                                    const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
                                                    int *n, int *c, int *h, int *w_out) {
    geom g;
    if (!n || !c || !h || !w_out) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t st = make_geom(x, w, conv, NULL, &g);
    if (st == CUDNN_STATUS_SUCCESS) *n = g.n, *c = g.k, *h = g.oh, *w_out = g.ow;
    return st;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
        const cudnnFilterDescriptor_t w, const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y,
        cudnnConvolutionFwdAlgo_t algo, size_t *bytes) {
    return workspace(handle, x, w, conv, y, algo, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t handle, const cudnnFilterDescriptor_t w,
        const cudnnTensorDescriptor_t dy, const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx,
        cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    return workspace(handle, dx, w, conv, dy, algo, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
        const cudnnTensorDescriptor_t dy, const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
        cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    return workspace(handle, x, dw, conv, dy, algo, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, bytes);
}

/* the searches' workspace arguments are unused (no algorithm needs one) */
cudnnStatus_t cudnnFindConvolutionForwardAlgorithmEx(cudnnHandle_t handle, const cudnnTensorDescriptor_t xd,
        const void *x, const cudnnFilterDescriptor_t wd, const void *w, const cudnnConvolutionDescriptor_t conv,
        const cudnnTensorDescriptor_t yd, void *y, const int requested, int *returned,
        cudnnConvolutionFwdAlgoPerf_t *perf, void *, size_t) {
    return search(handle, xd, wd, conv, yd, FWD, x, w, y, requested, returned, perf, true);
}
cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithmEx(cudnnHandle_t handle, const cudnnFilterDescriptor_t wd,
        const void *w, const cudnnTensorDescriptor_t dyd, const void *dy, const cudnnConvolutionDescriptor_t conv,
        const cudnnTensorDescriptor_t dxd, void *dx, const int requested, int *returned,
        cudnnConvolutionBwdDataAlgoPerf_t *perf, void *, size_t) {
    return search(handle, dxd, wd, conv, dyd, BWD_DATA, dy, w, dx, requested, returned, perf, true);
}
cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnnHandle_t handle, const cudnnTensorDescriptor_t xd,
        const void *x, const cudnnTensorDescriptor_t dyd, const void *dy, const cudnnConvolutionDescriptor_t conv,
        const cudnnFilterDescriptor_t dwd, void *dw, const int requested, int *returned,
        cudnnConvolutionBwdFilterAlgoPerf_t *perf, void *, size_t) {
    return search(handle, xd, dwd, conv, dyd, BWD_FILTER, x, dy, dw, requested, returned, perf, true);
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
        const cudnnFilterDescriptor_t w, const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y,
        const int requested, int *returned, cudnnConvolutionFwdAlgoPerf_t *perf) {
    return search(handle, x, w, conv, y, FWD, NULL, NULL, NULL, requested, returned, perf, false);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t handle, const cudnnFilterDescriptor_t w,
        const cudnnTensorDescriptor_t dy, const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx,
        const int requested, int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return search(handle, dx, w, conv, dy, BWD_DATA, NULL, NULL, NULL, requested, returned, perf, false);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t x,
        const cudnnTensorDescriptor_t dy, const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
        const int requested, int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return search(handle, x, dw, conv, dy, BWD_FILTER, NULL, NULL, NULL, requested, returned, perf, false);
}

/* the computations' workspace arguments are unused too */
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xd,
        const void *x, const cudnnFilterDescriptor_t wd, const void *w, const cudnnConvolutionDescriptor_t conv,
        cudnnConvolutionFwdAlgo_t algo, void *, size_t, const void *beta, const cudnnTensorDescriptor_t yd, void *y) {
    return compute(handle, alpha, beta, xd, wd, conv, yd, FWD, x, w, y, algo, CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
}
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha, const cudnnFilterDescriptor_t wd,
        const void *w, const cudnnTensorDescriptor_t dyd, const void *dy, const cudnnConvolutionDescriptor_t conv,
        cudnnConvolutionBwdDataAlgo_t algo, void *, size_t, const void *beta, const cudnnTensorDescriptor_t dxd,
        void *dx) {
    return compute(handle, alpha, beta, dxd, wd, conv, dyd, BWD_DATA, dy, w, dx, algo,
                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
}
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xd,
        const void *x, const cudnnTensorDescriptor_t dyd, const void *dy, const cudnnConvolutionDescriptor_t conv,
        cudnnConvolutionBwdFilterAlgo_t algo, void *, size_t, const void *beta, const cudnnFilterDescriptor_t dwd,
        void *dw) {
    return compute(handle, alpha, beta, xd, dwd, conv, dyd, BWD_FILTER, x, dy, dw, algo,
                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
}

/* ---- cuBLAS: the handle's settings are stored only (every math mode computes in full precision
 * here, and alpha and beta are readable in either pointer mode) ---- */

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = (bf_emu_cublas *)calloc(1, sizeof(bf_emu_cublas)); /* host pointer mode, default math */
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    handle->workspace = NULL, handle->workspace_bytes = 0; /* as cuBLAS's: back to the default workspace */
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->workspace = workspace, handle->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
        NAME(CUBLAS_STATUS_SUCCESS) NAME(CUBLAS_STATUS_NOT_INITIALIZED) NAME(CUBLAS_STATUS_INVALID_VALUE)
        NAME(CUBLAS_STATUS_NOT_SUPPORTED)
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

/* Column-major C (m x n) = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n; OP_C is OP_T for
 * real data. C is not read when beta is 0, nor A and B when alpha is 0. */
cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                           const float *beta, float *C, int ldc) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool ops_ok = (transa == CUBLAS_OP_N || transa == CUBLAS_OP_T || transa == CUBLAS_OP_C) &&
                        (transb == CUBLAS_OP_N || transb == CUBLAS_OP_T || transb == CUBLAS_OP_C);
    const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    const int a_rows = ta ? k : m, b_rows = tb ? n : k; /* rows of A and B as stored */
    if (!ops_ok || m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    bf_emu_trace("cublas sgemm %c%c m %d n %d k %d", ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k);
    const double al = *alpha, be = *beta;
    enum { BLOCK = 256 };
    double acc[BLOCK];
    for (int j = 0; j < n; j++) {
        const float *bj = tb ? B + j : B + (size_t)j * ldb; /* column j of op(B): element l at bj[l * bstep] */
        const ptrdiff_t bstep = tb ? ldb : 1;
        for (int i0 = 0; i0 < m; i0 += BLOCK) {
            const int ib = m - i0 < BLOCK ? m - i0 : BLOCK;
            for (int i = 0; i < ib; i++) acc[i] = 0.0;
            if (al != 0.0 && !ta) { /* axpy form: the columns of A are contiguous */
                for (int l = 0; l < k; l++) {
                    const double bv = bj[l * bstep];
                    const float *a_col = A + (size_t)l * lda + i0;
                    for (int i = 0; i < ib; i++) acc[i] += a_col[i] * bv;
                }
            } else if (al != 0.0) { /* dot form: the rows of op(A) are columns of A */
                for (int i = 0; i < ib; i++) {
                    const float *a_row = A + (size_t)(i0 + i) * lda;
                    for (int l = 0; l < k; l++) acc[i] += (double)a_row[l] * bj[l * bstep];
                }
            }
            store(C + (size_t)j * ldc + i0, acc, (size_t)ib, al, be);
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* batchCount independent cublasSgemm's, matrix b of A, B and C at b * strideA, strideB, strideC
 * floats (local_conv.cu, which declares it while include/cublas_v2.h does not). */
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float *alpha, const float *A, int lda,
                                         long long int strideA, const float *B, int ldb, long long int strideB,
                                         const float *beta, float *C, int ldc, long long int strideC, int batchCount) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (batchCount < 0) return CUBLAS_STATUS_INVALID_VALUE;
    bf_emu_trace("cublas sgemm strided batched x%d", batchCount);
    for (int b = 0; b < batchCount; b++) {
        cublasStatus_t st = cublasSgemm(handle, transa, transb, m, n, k, alpha, A + b * strideA, lda, B + b * strideB,
                                        ldb, beta, C + b * strideC, ldc);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

} /* extern "C" */
