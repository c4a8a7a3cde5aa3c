/* conv.cu - 2-D convolution (cross-correlation, PyTorch weight layout) on the GPU with cuDNN's
 * convolution API (contract in ops.h; the CPU twin is conv_cpu.c).
 *
 * Algorithm cache. Every distinct (shape, precision) gets one entry, created on first use, holding
 * its cuDNN descriptors (x, y, w, convolution with the group count) and, per direction (forward,
 * backward data, backward filter), the algorithm, math type and workspace size chosen the first
 * time that direction runs. The choice benchmarks the candidates on the caller's own buffers with
 * cudnnFind*AlgorithmEx (the output buffer is overwritten by the trials, then by the real call) and
 * takes the fastest one that succeeded; if none qualifies, cuDNN's heuristics (cudnnGet*_v7) are
 * asked instead. Later calls with the same shape only look the entry up: no allocation, no search.
 *
 * Precision. fp32 sets CUDNN_FMA_MATH on the descriptor and accepts only algorithms that report
 * CUDNN_FMA_MATH, so no TF32 tensor-core kernel can be chosen (CUDNN_DEFAULT_MATH would allow TF32
 * on Ampere and later). tf32 searches with CUDNN_TENSOR_OP_MATH and runs each algorithm with the
 * math type it was benchmarked with, as cuDNN requires.
 *
 * Workspace (impl->ws). The search may use up to impl->conv_search_limit bytes ([run]
 * conv_workspace_mib, 8 GiB by default; no more than
 * about half the free device memory): the workspace grows for the search, and afterwards is
 * resized to the largest requirement of all algorithms chosen so far (impl->ws_needed), so after
 * the first training step it has its final size and is never reallocated again.
 *
 * Workspace hints (conv_workspace_hint): a model's memory plan hands each layer's pass the largest
 * block of activation memory dead during it. A call whose chosen algorithm fits there runs in it,
 * and only the calls that do not fit count in ws_needed, so the shared workspace holds just what
 * those need (on PlasticFlex's VGG-11 at T = 8 or VGG-16's early layers, the search's fastest
 * algorithms need hundreds of MiB to GiB: memory the dead activations already hold). The search
 * itself still grows the shared workspace for its trials (the first step only). The graph API
 * ignores hints: its execution plans are bound to one workspace pointer.
 *
 * Workspace slack ([run] conv_workspace_slack, conv_pick.h): when the fastest algorithm would need
 * more than the room already held (the call's hint, or ws_needed as earlier choices set it), the
 * search keeps the fastest one that fits that room if it is at most the slack (5 % by default)
 * slower, so that a few percent of one convolution's time does not cost GiB for the whole run.
 *
 * Graph API ([run] conv_api = graph, bf_cuda_set_conv_api): each direction also gets an execution
 * plan of cuDNN's graph API, timed among the engines its heuristics offer (conv_graph.cu), and runs
 * it whenever the call's pointers have the alignment it was made for; the legacy algorithm stays
 * the fallback. Its workspace counts in ws_needed like an algorithm's.
 *
 * Bias: a per-plane kernel after the convolution; dbias: the deterministic per-channel sum of
 * batchnorm.cu. Both avoid cuDNN's deprecated cudnnAddTensor / cudnnConvolutionBackwardBias. */
#include <stdlib.h>
#include <string.h>

#include "conv_graph.h"
#include "conv_pick.h"
#include "cuda_backend.h"

namespace { /* kernels and helpers are private to this file */


enum { DIR_FWD = 0, DIR_BWD_DATA = 1, DIR_BWD_FILTER = 2, DIR_COUNT = 3 };
static const char *const dir_names[DIR_COUNT] = {"forward", "backward-data", "backward-filter"};
static const int dir_algo_counts[DIR_COUNT] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};
enum { MAX_ALGOS = 16 }; /* >= every *_ALGO_COUNT above */

typedef struct conv_key {
    int n, c_in, h_in, w_in, c_out, k_h, k_w, stride, pad, groups, precision;
} conv_key;

typedef struct conv_choice {
    int found;
    int algo;
    cudnnMathType_t math;
    size_t memory;
    bf_conv_plan *plan; /* conv_api = graph: the graph API's plan, or NULL (then the algorithm runs) */
} conv_choice;

typedef struct conv_entry {
    conv_key key;
    cudnnTensorDescriptor_t x_desc, y_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    cudnnMathType_t desc_math; /* the math type currently set on conv_desc */
    conv_choice dir[DIR_COUNT];
} conv_entry;

}  // namespace

struct bf_cuda_conv_cache {
    conv_entry **entries; /* each entry allocated once, so pointers stay valid as the array grows */
    int count, cap;
    int last; /* index of the last hit: consecutive calls usually repeat a shape */
};

namespace {

/* One benchmark or heuristic result, whatever the direction. */
typedef struct perf_result {
    int algo;
    float time_ms; /* measured by cudnnFind*Ex; meaningless in heuristic results, which never use it */
    cudnnStatus_t status;
    size_t memory;
    cudnnMathType_t math;
    cudnnDeterminism_t determinism;
} perf_result;

template <typename P>
static void to_results(const P *p, int count, perf_result *out) {
    for (int i = 0; i < count; i++) {
        out[i].algo = (int)p[i].algo;
        out[i].time_ms = p[i].time;
        out[i].status = p[i].status;
        out[i].memory = p[i].memory;
        out[i].math = p[i].mathType;
        out[i].determinism = p[i].determinism;
    }
}

static cudnnMathType_t base_math(bf_precision precision) {
    return precision != BF_PRECISION_FP32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH; /* tf32 and tf32_conv */
}

/* ---- bias kernel ---- */

/* y[i, ch, :] += bias[ch], one block per (n, c) plane (grid-stride over planes). */
__global__ void k_conv_bias(float *__restrict__ y, const float *__restrict__ bias, size_t planes, int c, int hw) {
    for (size_t p = blockIdx.x; p < planes; p += gridDim.x) {
        const float bv = bias[p % (size_t)c];
        float *yp = y + p * (size_t)hw;
        for (int j = threadIdx.x; j < hw; j += blockDim.x) yp[j] += bv;
    }
}

/* ---- shape checks and the cache ---- */

static bf_status check_conv(const bf_conv2d_shape *s, const char *op) {
    if (!s) return bf_error(BF_ERR_ARG, "%s: NULL shape", op);
    if (s->n <= 0 || s->c_in <= 0 || s->h_in <= 0 || s->w_in <= 0 || s->c_out <= 0 || s->k_h <= 0 || s->k_w <= 0 ||
        s->groups <= 0 || s->stride <= 0 || s->pad < 0 || s->c_in % s->groups || s->c_out % s->groups ||
        s->h_out <= 0 || s->w_out <= 0 || s->h_out != (s->h_in + 2 * s->pad - s->k_h) / s->stride + 1 ||
        s->w_out != (s->w_in + 2 * s->pad - s->k_w) / s->stride + 1)
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d c_in=%d %dx%d c_out=%d k=%dx%d stride=%d pad=%d "
                        "groups=%d out=%dx%d (initialise it with bf_conv2d_shape_init)", op, s->n, s->c_in, s->h_in,
                        s->w_in, s->c_out, s->k_h, s->k_w, s->stride, s->pad, s->groups, s->h_out, s->w_out);
    /* cuDNN's 4-d descriptors take int dimensions and strides */
    if ((long long)s->n * s->c_in * s->h_in * s->w_in > INT32_MAX ||
        (long long)s->n * s->c_out * s->h_out * s->w_out > INT32_MAX ||
        (long long)s->c_out * (s->c_in / s->groups) * s->k_h * s->k_w > INT32_MAX)
        return bf_error(BF_ERR_ARG, "%s: tensors of more than 2^31 elements are not supported (n=%d c_in=%d %dx%d "
                        "c_out=%d)", op, s->n, s->c_in, s->h_in, s->w_in, s->c_out);
    return BF_OK;
}

static void entry_free(conv_entry *e) {
    if (!e) return;
    if (e->x_desc) (void)cudnnDestroyTensorDescriptor(e->x_desc);
    if (e->y_desc) (void)cudnnDestroyTensorDescriptor(e->y_desc);
    if (e->w_desc) (void)cudnnDestroyFilterDescriptor(e->w_desc);
    if (e->conv_desc) (void)cudnnDestroyConvolutionDescriptor(e->conv_desc);
    for (int d = 0; d < DIR_COUNT; d++) bf_conv_graph_free(e->dir[d].plan);
    free(e);
}

static bf_status set_math(conv_entry *e, cudnnMathType_t math) {
    if (e->desc_math != math) {
        BF_CUDNN_CHECK(cudnnSetConvolutionMathType(e->conv_desc, math));
        e->desc_math = math;
    }
    return BF_OK;
}

/* Creates and sets the descriptors of a new entry (freed by the caller on failure). */
static bf_status entry_init(conv_entry *e, const bf_conv2d_shape *s, bf_precision precision) {
    BF_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->x_desc));
    BF_CUDNN_CHECK(cudnnCreateTensorDescriptor(&e->y_desc));
    BF_CUDNN_CHECK(cudnnCreateFilterDescriptor(&e->w_desc));
    BF_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&e->conv_desc));
    BF_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->x_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s->n, s->c_in, s->h_in,
                                              s->w_in));
    BF_CUDNN_CHECK(cudnnSetFilter4dDescriptor(e->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s->c_out,
                                              s->c_in / s->groups, s->k_h, s->k_w));
    BF_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(e->conv_desc, s->pad, s->pad, s->stride, s->stride, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    BF_CUDNN_CHECK(cudnnSetConvolutionGroupCount(e->conv_desc, s->groups));
    BF_CUDNN_CHECK(cudnnSetConvolutionMathType(e->conv_desc, base_math(precision)));
    e->desc_math = base_math(precision);
    int on = 0, oc = 0, oh = 0, ow = 0;
    BF_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(e->conv_desc, e->x_desc, e->w_desc, &on, &oc, &oh, &ow));
    if (on != s->n || oc != s->c_out || oh != s->h_out || ow != s->w_out)
        return bf_error(BF_ERR_INTERNAL, "conv2d: cuDNN computes output %dx%dx%dx%d, the shape says %dx%dx%dx%d", on, oc,
                        oh, ow, s->n, s->c_out, s->h_out, s->w_out);
    BF_CUDNN_CHECK(cudnnSetTensor4dDescriptor(e->y_desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s->n, s->c_out, s->h_out,
                                              s->w_out));
    return BF_OK;
}

static bf_status cache_get(bf_cuda_impl *im, const bf_conv2d_shape *s, conv_entry **out) {
    conv_key key;
    memset(&key, 0, sizeof key);
    key.n = s->n;
    key.c_in = s->c_in;
    key.h_in = s->h_in;
    key.w_in = s->w_in;
    key.c_out = s->c_out;
    key.k_h = s->k_h;
    key.k_w = s->k_w;
    key.stride = s->stride;
    key.pad = s->pad;
    key.groups = s->groups;
    key.precision = (int)im->precision;

    if (!im->conv_cache) {
        im->conv_cache = (bf_cuda_conv_cache *)calloc(1, sizeof *im->conv_cache);
        if (!im->conv_cache) return bf_error(BF_ERR_OOM, "conv2d: cannot allocate the algorithm cache");
    }
    bf_cuda_conv_cache *c = im->conv_cache;
    if (c->last < c->count && memcmp(&c->entries[c->last]->key, &key, sizeof key) == 0) {
        *out = c->entries[c->last];
        return BF_OK;
    }
    for (int i = 0; i < c->count; i++)
        if (memcmp(&c->entries[i]->key, &key, sizeof key) == 0) {
            c->last = i;
            *out = c->entries[i];
            return BF_OK;
        }

    if (c->count == c->cap) {
        int cap = c->cap ? 2 * c->cap : 32;
        conv_entry **grown = (conv_entry **)realloc(c->entries, (size_t)cap * sizeof *grown);
        if (!grown) return bf_error(BF_ERR_OOM, "conv2d: cannot grow the algorithm cache to %d entries", cap);
        c->entries = grown;
        c->cap = cap;
    }
    conv_entry *e = (conv_entry *)calloc(1, sizeof *e);
    if (!e) return bf_error(BF_ERR_OOM, "conv2d: cannot allocate an algorithm cache entry");
    e->key = key;
    bf_status st = entry_init(e, s, im->precision);
    if (st != BF_OK) {
        entry_free(e);
        return st;
    }
    c->entries[c->count] = e;
    c->last = c->count;
    c->count++;
    *out = e;
    return BF_OK;
}

}  // namespace

extern "C" bf_status bf_cuda_set_deterministic(bf_backend *b, int on) {
    if (!b || b->kind != BF_DEVICE_CUDA) return BF_OK; /* the CPU backend is deterministic already */
    bf_cuda_impl *im = (bf_cuda_impl *)b->impl;
    if (im->deterministic != (on != 0)) {
        BF_CUDA_CHECK(cudaSetDevice(im->device));
        bf_cuda_conv_cache_destroy(im); /* choices made under the other rule are searched again */
        im->deterministic = on != 0;
    }
    return BF_OK;
}

extern "C" int bf_cuda_conv_graph_plan_count(const bf_backend *b) {
    if (!b || b->kind != BF_DEVICE_CUDA) return 0;
    const bf_cuda_conv_cache *c = ((const bf_cuda_impl *)b->impl)->conv_cache;
    int plans = 0;
    for (int i = 0; c && i < c->count; i++)
        for (int d = 0; d < DIR_COUNT; d++) plans += c->entries[i]->dir[d].plan != NULL;
    return plans;
}

/* The CUDA backend's state when b is one, else NULL (the CPU backend has its own convolution and no
 * workspace: the setters below are no-ops there). */
static bf_cuda_impl *cuda_impl_of(bf_backend *b) {
    return b && b->kind == BF_DEVICE_CUDA ? (bf_cuda_impl *)b->impl : NULL;
}

/* Forgets every cached algorithm choice: a setting of the search changed, so shapes are searched again. */
static bf_status forget_choices(bf_cuda_impl *im) {
    BF_CUDA_CHECK(cudaSetDevice(im->device));
    bf_cuda_conv_cache_destroy(im);
    return BF_OK;
}

extern "C" bf_status bf_cuda_set_conv_api(bf_backend *b, int graph) {
    bf_cuda_impl *im = cuda_impl_of(b);
    if (!im || im->conv_api_graph == (graph != 0)) return BF_OK;
    BF_TRY(forget_choices(im));
    im->conv_api_graph = graph != 0;
    return BF_OK;
}

extern "C" bf_status bf_cuda_set_conv_workspace_reuse(bf_backend *b, int on) {
    bf_cuda_impl *im = cuda_impl_of(b);
    if (!im) return BF_OK;
    im->ws_reuse_off = !on;
    if (!on) im->ws_hint = NULL, im->ws_hint_bytes = 0;
    return BF_OK;
}

extern "C" bf_status bf_cuda_set_conv_workspace_slack(bf_backend *b, float slack) {
    bf_cuda_impl *im = cuda_impl_of(b);
    if (!im) return BF_OK;
    if (!(slack >= 0.0f && slack <= 1.0f)) return bf_error(BF_ERR_ARG, "conv_workspace_slack %g: want 0..1", slack);
    if (im->conv_slack == slack) return BF_OK;
    BF_TRY(forget_choices(im));
    im->conv_slack = slack;
    return BF_OK;
}

extern "C" bf_status bf_cuda_set_conv_workspace_limit(bf_backend *b, size_t bytes) {
    bf_cuda_impl *im = cuda_impl_of(b);
    if (!im || im->conv_search_limit == bytes) return BF_OK;
    BF_TRY(forget_choices(im));
    im->conv_search_limit = bytes;
    return BF_OK;
}

void bf_cuda_conv_cache_destroy(bf_cuda_impl *im) {
    if (!im || !im->conv_cache) return;
    bf_cuda_conv_cache *c = im->conv_cache;
    for (int i = 0; i < c->count; i++) entry_free(c->entries[i]);
    free(c->entries);
    free(c);
    im->conv_cache = NULL;
}

namespace {

/* ---- the algorithm search ---- */

static cudnnStatus_t algo_workspace(bf_cuda_impl *im, const conv_entry *e, int dir, int algo, size_t *bytes) {
    switch (dir) {
    case DIR_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(im->cudnn, e->x_desc, e->w_desc, e->conv_desc, e->y_desc,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    case DIR_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(im->cudnn, e->w_desc, e->y_desc, e->conv_desc, e->x_desc,
                                                            (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(im->cudnn, e->x_desc, e->y_desc, e->conv_desc,
                                                              e->w_desc, (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
    }
}

/* Benchmarks every algorithm of a direction on the real buffers. Operands by direction:
 *   forward:         a = x, b = w, out = y
 *   backward data:   a = dy, b = w, out = dx
 *   backward filter: a = x, b = dy, out = dw */
static bf_status find_algos(bf_cuda_impl *im, const conv_entry *e, int dir, const void *a, const void *b, void *out,
                            perf_result *res, int *count) {
    int n = 0;
    *count = 0;
    switch (dir) {
    case DIR_FWD: {
        cudnnConvolutionFwdAlgoPerf_t p[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        BF_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(im->cudnn, e->x_desc, a, e->w_desc, b, e->conv_desc,
                                                              e->y_desc, out, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, p,
                                                              im->ws, im->ws_bytes));
        if (n > CUDNN_CONVOLUTION_FWD_ALGO_COUNT) n = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
        to_results(p, n, res);
        break;
    }
    case DIR_BWD_DATA: {
        cudnnConvolutionBwdDataAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        BF_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(im->cudnn, e->w_desc, b, e->y_desc, a, e->conv_desc,
                                                                   e->x_desc, out, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                                   &n, p, im->ws, im->ws_bytes));
        if (n > CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT) n = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
        to_results(p, n, res);
        break;
    }
    default: {
        cudnnConvolutionBwdFilterAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        BF_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
            im->cudnn, e->x_desc, a, e->y_desc, b, e->conv_desc, e->w_desc, out,
            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, p, im->ws, im->ws_bytes));
        if (n > CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT) n = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
        to_results(p, n, res);
        break;
    }
    }
    *count = n < 0 ? 0 : n;
    return BF_OK;
}

/* cuDNN's heuristic ranking (no benchmarking), the fallback when no benchmarked algorithm fits. */
static bf_status heuristic_algos(bf_cuda_impl *im, const conv_entry *e, int dir, perf_result *res, int *count) {
    int n = 0;
    *count = 0;
    switch (dir) {
    case DIR_FWD: {
        cudnnConvolutionFwdAlgoPerf_t p[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        BF_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(im->cudnn, e->x_desc, e->w_desc, e->conv_desc, e->y_desc,
                                                              CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, p));
        if (n > CUDNN_CONVOLUTION_FWD_ALGO_COUNT) n = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
        to_results(p, n, res);
        break;
    }
    case DIR_BWD_DATA: {
        cudnnConvolutionBwdDataAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        BF_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(im->cudnn, e->w_desc, e->y_desc, e->conv_desc,
                                                                   e->x_desc, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                                   &n, p));
        if (n > CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT) n = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
        to_results(p, n, res);
        break;
    }
    default: {
        cudnnConvolutionBwdFilterAlgoPerf_t p[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        BF_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(im->cudnn, e->x_desc, e->y_desc, e->conv_desc,
                                                                     e->w_desc, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                                     &n, p));
        if (n > CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT) n = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
        to_results(p, n, res);
        break;
    }
    }
    *count = n < 0 ? 0 : n;
    return BF_OK;
}

/* The first usable result (results come fastest first): it succeeded, fits in `limit` bytes of
 * workspace, is CUDNN_DETERMINISTIC when the backend is set deterministic, and, in fp32, was
 * measured without tensor cores (CUDNN_FMA_MATH). Should cuDNN report
 * no FMA result at all, an fp32 search accepts a CUDNN_DEFAULT_MATH one as second choice; it is
 * still run with CUDNN_FMA_MATH set (conv_search), so it cannot use TF32. -1 if none. */
static bool usable_result(const bf_cuda_impl *im, const perf_result *r, size_t limit, int pass) {
    if (r->status != CUDNN_STATUS_SUCCESS || r->memory > limit) return false;
    if (im->deterministic && r->determinism != CUDNN_DETERMINISTIC) return false;
    return im->precision != BF_PRECISION_FP32 || r->math == (pass == 0 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH);
}

static int pick_result(const bf_cuda_impl *im, const perf_result *res, int count, size_t limit, int *pass_out) {
    const bool fp32 = im->precision == BF_PRECISION_FP32;
    for (int pass = 0; pass < (fp32 ? 2 : 1); pass++)
        for (int i = 0; i < count; i++)
            if (usable_result(im, &res[i], limit, pass)) {
                if (pass_out) *pass_out = pass;
                return i;
            }
    return -1;
}

/* [run] conv_workspace_slack (conv_pick.h): the benchmarked pick, or an algorithm at most that much
 * slower that needs no workspace beyond the room already held: this call's hint (the dead
 * activation memory of its layer's pass, when hints apply) or the separate workspace as earlier
 * choices sized it. Only among the results of the pick's own pass (fp32: FMA math first). */
static int pick_within_room(const bf_cuda_impl *im, const perf_result *res, int count, size_t limit, int pick,
                            int pass) {
    if (pick < 0 || !(im->conv_slack > 0.0f)) return pick;
    size_t room = im->ws_needed;
    if (im->ws_hint && !im->conv_api_graph && im->ws_hint_bytes > room) room = im->ws_hint_bytes;
    bf_conv_candidate c[MAX_ALGOS];
    for (int i = 0; i < count; i++) {
        c[i].time_ms = res[i].time_ms;
        c[i].memory = res[i].memory;
        c[i].usable = i >= pick && usable_result(im, &res[i], limit, pass) && res[i].time_ms >= 0.0f;
    }
    return bf_conv_pick_within_room(c, count, room, im->conv_slack);
}

/* Whether the call may run in the hinted memory (never with the graph API, see the file comment). */
static bool hint_fits(const bf_cuda_impl *im, const conv_choice *ch) {
    return im->ws_hint && !im->conv_api_graph && ch->memory <= im->ws_hint_bytes;
}

/* Workspace the search may use: conv_search_limit, but at most about half the free memory (plus
 * the current workspace, which the resize releases first). */
static size_t search_limit(const bf_cuda_impl *im) {
    size_t limit = im->conv_search_limit, free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
        size_t avail = free_bytes / 2 + im->ws_bytes;
        if (avail < limit) limit = avail;
    } else {
        (void)cudaGetLastError();
    }
    if (limit < im->ws_needed) limit = im->ws_needed;
    return limit;
}

/* The fastest usable algorithm by cuDNN's benchmark on the real buffers, with a workspace large
 * enough for every candidate within `limit`; cuDNN's heuristics if nothing usable came out. */
static bf_status benchmark_pick(bf_cuda_impl *im, conv_entry *e, int dir, const void *a, const void *b, void *out,
                                size_t limit, perf_result *res, int *count, int *pick) {
    size_t want = im->ws_needed;
    for (int algo = 0; algo < dir_algo_counts[dir]; algo++) {
        size_t bytes = 0;
        if (algo_workspace(im, e, dir, algo, &bytes) == CUDNN_STATUS_SUCCESS && bytes <= limit && bytes > want)
            want = bytes;
    }
    (void)cudaGetLastError(); /* an unsupported algorithm's query may leave a runtime error behind */
    if (want > im->ws_bytes && bf_cuda_workspace_resize(im, want) != BF_OK) {
        /* not that much memory: search with what the cached algorithms need (smaller ones compete) */
        BF_TRY(bf_cuda_workspace_resize(im, im->ws_needed));
    }
    BF_TRY(find_algos(im, e, dir, a, b, out, res, count));
    int pass = 0;
    *pick = pick_result(im, res, *count, im->ws_bytes, &pass);
    *pick = pick_within_room(im, res, *count, im->ws_bytes, *pick, pass);
    if (*pick < 0) {
        BF_TRY(heuristic_algos(im, e, dir, res, count));
        *pick = pick_result(im, res, *count, limit, NULL);
    }
    return BF_OK;
}

/* Chooses and caches the algorithm of one direction: benchmarked (the default), or with
 * bf_cuda_set_deterministic the first deterministic one in cuDNN's heuristic order, which no
 * timing noise can change between runs or ranks. */
static bf_status conv_search(bf_cuda_impl *im, const bf_conv2d_shape *s, conv_entry *e, int dir, const void *a,
                             const void *b, void *out) {
    BF_TRY(bf_cuda_fence(im)); /* the search times candidates, allocates and synchronises inside cuDNN */
    BF_TRY(set_math(e, base_math(im->precision)));
    const size_t limit = search_limit(im);
    perf_result res[MAX_ALGOS];
    int count = 0, pick = -1;
    if (im->deterministic) {
        BF_TRY(heuristic_algos(im, e, dir, res, &count));
        pick = pick_result(im, res, count, limit, NULL);
    } else {
        BF_TRY(benchmark_pick(im, e, dir, a, b, out, limit, res, &count, &pick));
    }
    if (pick < 0)
        return bf_error(BF_ERR_DEVICE, "conv2d: cuDNN offers no %s%s %s algorithm for n=%d c_in=%d %dx%d c_out=%d "
                        "k=%dx%d stride=%d pad=%d groups=%d", im->deterministic ? "deterministic " : "",
                        im->precision == BF_PRECISION_FP32 ? "fp32" : "tf32", dir_names[dir], e->key.n, e->key.c_in, e->key.h_in, e->key.w_in, e->key.c_out, e->key.k_h,
                        e->key.k_w, e->key.stride, e->key.pad, e->key.groups);

    conv_choice *ch = &e->dir[dir];
    ch->algo = res[pick].algo;
    ch->math = im->precision == BF_PRECISION_FP32 ? CUDNN_FMA_MATH : res[pick].math;
    ch->memory = res[pick].memory;
    {
        /* The workspace is asked for again under the math the algorithm runs with (fp32: a
         * CUDNN_DEFAULT_MATH pick runs with CUDNN_FMA_MATH; tf32: the pick's own), keeping the
         * larger size: a search's figure may be another math's. */
        size_t bytes = 0;
        BF_TRY(set_math(e, ch->math));
        if (algo_workspace(im, e, dir, ch->algo, &bytes) == CUDNN_STATUS_SUCCESS && bytes > ch->memory)
            ch->memory = bytes;
        (void)cudaGetLastError();
    }
    ch->found = 1;
    if (im->conv_api_graph) { /* and the graph API's plan, within the same workspace limit */
        size_t plan_bytes = 0;
        bf_conv_graph_free(ch->plan); /* one left by a search that failed after making it */
        ch->plan = NULL;
        bf_status st = bf_conv_graph_plan(im, s, dir, a, b, out, limit, &ch->plan, &plan_bytes);
        if (st != BF_OK) {
            ch->found = 0;
            return st;
        }
        if (plan_bytes > ch->memory) ch->memory = plan_bytes;
    }

    /* 3. keep exactly the workspace the chosen algorithms need, beyond what the hint holds */
    if (!hint_fits(im, ch) && ch->memory > im->ws_needed) im->ws_needed = ch->memory;
    if (im->ws_bytes != im->ws_needed) {
        bf_status st = bf_cuda_workspace_resize(im, im->ws_needed);
        if (st != BF_OK) {
            ch->found = 0; /* search again next time rather than run without a workspace */
            return st;
        }
    }
    return BF_OK;
}

/* Looks the shape up (creating the entry and choosing the direction's algorithm on first use), and
 * readies the descriptor's math type and the call's workspace: the hint when the choice fits
 * there, else the shared one, grown to the choice when it is smaller (a layer of a cached shape
 * whose hint is smaller than the first one's, or an earlier failed resize). */
static bf_status conv_prepare(bf_cuda_impl *im, const bf_conv2d_shape *s, int dir, const void *a, const void *b,
                              void *out, conv_entry **entry, void **ws, size_t *ws_bytes) {
    conv_entry *e;
    BF_TRY(cache_get(im, s, &e));
    if (!e->dir[dir].found) BF_TRY(conv_search(im, s, e, dir, a, b, out));
    const conv_choice *ch = &e->dir[dir];
    if (hint_fits(im, ch)) {
        *ws = im->ws_hint;
        *ws_bytes = im->ws_hint_bytes;
    } else {
        if (im->ws_bytes < ch->memory) {
            if (ch->memory > im->ws_needed) im->ws_needed = ch->memory;
            BF_TRY(bf_cuda_workspace_resize(im, im->ws_needed));
        }
        *ws = im->ws;
        *ws_bytes = im->ws_bytes;
    }
    BF_TRY(set_math(e, ch->math));
    *entry = e;
    return BF_OK;
}

static unsigned plane_threads(long hw) {
    long t = (hw + 31) / 32 * 32;
    if (t > BF_CUDA_THREADS) t = BF_CUDA_THREADS;
    if (t < 32) t = 32;
    return (unsigned)t;
}

}  // namespace

/* ---- the ops ---- */

extern "C" bf_status bf_cuda_conv2d_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                            const float *w, const float *bias, float *y) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_conv(s, "conv2d_forward"));
    if (!x || !w || !y) return bf_error(BF_ERR_ARG, "conv2d_forward: NULL input, weight or output");
    conv_entry *e;
    void *ws;
    size_t ws_bytes;
    BF_TRY(conv_prepare(im, s, DIR_FWD, x, w, y, &e, &ws, &ws_bytes));
    const float one = 1.0f, zero = 0.0f;
    bf_conv_plan *plan = e->dir[DIR_FWD].plan;
    if (bf_conv_graph_fits(plan, x, w, y))
        BF_TRY(bf_conv_graph_run(im, plan, x, w, y));
    else
        BF_CUDNN_CHECK(cudnnConvolutionForward(im->cudnn, &one, e->x_desc, x, e->w_desc, w, e->conv_desc,
                                               (cudnnConvolutionFwdAlgo_t)e->dir[DIR_FWD].algo, ws, ws_bytes,
                                               &zero, e->y_desc, y));
    if (bias) {
        const size_t planes = (size_t)s->n * s->c_out;
        const int hw = s->h_out * s->w_out;
        const size_t cap = (size_t)(im->sm_count > 0 ? im->sm_count : 80) * 32;
        k_conv_bias<<<(unsigned)(planes < cap ? planes : cap), plane_threads(hw), 0, im->stream>>>(y, bias, planes,
                                                                                                   s->c_out, hw);
        BF_LAUNCH_CHECK("k_conv_bias");
    }
    return BF_OK;
}

namespace {

/* The algorithm search times its candidates on the call's own output, overwriting it (cudnnFind*Ex,
 * and the graph API's plan timing): harmless when the call overwrites dx anyway, but an add's dx
 * holds the other branch's share. So the first add of a shape keeps dx in a copy (on the device, or
 * on the host when the device has no room) and puts it back after the search. */
static bf_status prepare_keeping_output(bf_cuda_impl *im, const bf_conv2d_shape *s, const float *dy, const float *w,
                                        float *dx, conv_entry **e, void **ws, size_t *ws_bytes) {
    conv_entry *entry;
    BF_TRY(cache_get(im, s, &entry));
    if (entry->dir[DIR_BWD_DATA].found) return conv_prepare(im, s, DIR_BWD_DATA, dy, w, dx, e, ws, ws_bytes);
    const size_t bytes = (size_t)s->n * s->c_in * s->h_in * s->w_in * sizeof(float);
    void *copy = NULL, *host = NULL;
    BF_TRY(bf_cuda_fence(im));
    if (cudaMalloc(&copy, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        copy = NULL;
        if (!(host = malloc(bytes)))
            return bf_error(BF_ERR_OOM, "conv2d_backward_data_add: no memory to keep dx (%zu bytes) during the "
                                        "algorithm search", bytes);
    }
    const cudaMemcpyKind out = copy ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost;
    const cudaMemcpyKind back = copy ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
    cudaError_t ce = cudaMemcpyAsync(copy ? copy : host, dx, bytes, out, im->stream);
    if (ce == cudaSuccess && !copy) ce = cudaStreamSynchronize(im->stream);
    bf_status st = ce == cudaSuccess ? conv_prepare(im, s, DIR_BWD_DATA, dy, w, dx, e, ws, ws_bytes)
                                     : bf_error(BF_ERR_DEVICE, "conv2d_backward_data_add: keeping dx: %s",
                                                cudaGetErrorString(ce));
    if (ce == cudaSuccess) {
        ce = cudaMemcpyAsync(dx, copy ? copy : host, bytes, back, im->stream);
        if (ce == cudaSuccess) ce = cudaStreamSynchronize(im->stream);
        if (ce != cudaSuccess && st == BF_OK)
            st = bf_error(BF_ERR_DEVICE, "conv2d_backward_data_add: restoring dx: %s", cudaGetErrorString(ce));
    }
    if (copy) cudaFree(copy);
    free(host);
    return st;
}

/* beta 0: dx = the result; beta 1: dx += it (conv2d_backward_data_add). The graph API's plans are
 * built with beta 0, so an add runs the direction's algorithm, which the search chose too. */
static bf_status backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy, const float *w, float *dx,
                               float beta, const char *op) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_conv(s, op));
    if (!dy || !w || !dx) return bf_error(BF_ERR_ARG, "%s: NULL dy, weight or dx", op);
    conv_entry *e;
    void *ws;
    size_t ws_bytes;
    if (beta != 0.0f)
        BF_TRY(prepare_keeping_output(im, s, dy, w, dx, &e, &ws, &ws_bytes));
    else
        BF_TRY(conv_prepare(im, s, DIR_BWD_DATA, dy, w, dx, &e, &ws, &ws_bytes));
    const float one = 1.0f;
    bf_conv_plan *plan = e->dir[DIR_BWD_DATA].plan;
    if (beta == 0.0f && bf_conv_graph_fits(plan, dy, w, dx))
        BF_TRY(bf_conv_graph_run(im, plan, dy, w, dx));
    else
        BF_CUDNN_CHECK(cudnnConvolutionBackwardData(im->cudnn, &one, e->w_desc, w, e->y_desc, dy, e->conv_desc,
                                                    (cudnnConvolutionBwdDataAlgo_t)e->dir[DIR_BWD_DATA].algo, ws,
                                                    ws_bytes, &beta, e->x_desc, dx));
    return BF_OK;
}

}  // namespace

extern "C" bf_status bf_cuda_conv2d_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                                  const float *w, float *dx) {
    return backward_data(b, s, dy, w, dx, 0.0f, "conv2d_backward_data");
}

extern "C" bf_status bf_cuda_conv2d_backward_data_add(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                                      const float *w, float *dx) {
    return backward_data(b, s, dy, w, dx, 1.0f, "conv2d_backward_data_add");
}

extern "C" bf_status bf_cuda_conv2d_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                                    const float *dy, float *dw, float *dbias) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    BF_TRY(check_conv(s, "conv2d_backward_filter"));
    if (!x || !dy || !dw) return bf_error(BF_ERR_ARG, "conv2d_backward_filter: NULL x, dy or dw");
    conv_entry *e;
    void *ws;
    size_t ws_bytes;
    BF_TRY(conv_prepare(im, s, DIR_BWD_FILTER, x, dy, dw, &e, &ws, &ws_bytes));
    const float one = 1.0f, zero = 0.0f;
    bf_conv_plan *plan = e->dir[DIR_BWD_FILTER].plan;
    if (bf_conv_graph_fits(plan, x, dy, dw))
        BF_TRY(bf_conv_graph_run(im, plan, x, dy, dw));
    else
        BF_CUDNN_CHECK(cudnnConvolutionBackwardFilter(im->cudnn, &one, e->x_desc, x, e->y_desc, dy, e->conv_desc,
                                                      (cudnnConvolutionBwdFilterAlgo_t)e->dir[DIR_BWD_FILTER].algo,
                                                      ws, ws_bytes, &zero, e->w_desc, dw));
    if (dbias) BF_TRY(bf_cuda_channel_sum(im, s->n, s->c_out, (long)s->h_out * s->w_out, dy, dbias));
    return BF_OK;
}

extern "C" bf_status bf_cuda_conv_workspace_hint(bf_backend *b, void *p, size_t bytes) {
    bf_cuda_impl *im;
    BF_TRY(bf_cuda_enter(b, &im));
    const bool use = p && bytes && !im->ws_reuse_off;
    im->ws_hint = use ? p : NULL;
    im->ws_hint_bytes = use ? bytes : 0;
    return BF_OK;
}
