/* conv_graph.cu - convolutions through cuDNN's graph (backend) API (conv_graph.h; chosen with
 * [run] conv_api = graph).
 *
 * Why: conv.cu's legacy calls (cudnnFind*AlgorithmEx, cudnnConvolution*) reach the engines that
 * cuDNN maps to the legacy algorithm numbers; PyTorch 2.x goes through the graph API and times
 * whatever engines the heuristics offer. On an H200 our VGG-16 step was at 0.96x PyTorch in fp32 but
 * 0.71x in TF32, where only the convolutions and GEMMs change, so this path exists to measure the
 * difference (bench/vgg16_side_by_side.sh runs both).
 *
 * A plan is built the way the cuDNN documentation's backend examples build one: tensor descriptors
 * (packed NCHW, uids 1..3 for the operands a, b, out), a convolution descriptor (cross-correlation,
 * float compute, symmetric padding, no dilation; groups follow from the weight's shape), one
 * convolution operation, an operation graph on the backend's handle, heuristics in mode A then
 * FALLBACK, and one execution plan per usable engine configuration; the plans not chosen are
 * destroyed before returning. A plan keeps the variant pack (operand and workspace pointers) of its
 * last call and makes a new one only when a pointer changes (a training step repeats its pointers). */
#include <stdlib.h>
#include <string.h>

#include "conv_graph.h"

/* MAX_PLANS: the plans timed per shape and direction, the heuristics' first usable ones (each costs
 * a warm-up and TIMED_RUNS runs of the convolution during the first training step). */
enum { UID_A = 1, UID_B = 2, UID_OUT = 3, MAX_CONFIGS = 32, MAX_PLANS = 10, TIMED_RUNS = 2 };

/* Every descriptor a plan's construction creates (tensors, convolution, operation, graph, the two
 * heuristics and their engine configurations, at most MAX_CONFIGS each), so one call destroys them
 * all. The chosen plan keeps its set alive: the documentation does not promise that a finalised
 * plan owns what it was made from. The candidate plans and the engines read for their notes are
 * not in it. */
struct descriptor_set {
    cudnnBackendDescriptor_t d[16 + 2 * MAX_CONFIGS];
    int count;
};

struct bf_conv_plan {
    cudnnBackendDescriptor_t plan;
    size_t workspace;
    int64_t alignment; /* bytes: the operands' alignment when the plan was made (16 at most) */
    descriptor_set made_from;
    /* the variant pack of the last call and what it holds: a training step passes the same arena
     * pointers every time, so the pack is made once rather than on every call */
    cudnnBackendDescriptor_t pack;
    void *pack_ptrs[3], *pack_ws;
};

namespace {

static cudnnStatus_t create(descriptor_set *set, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out) {
    *out = NULL;
    if (set->count == (int)(sizeof set->d / sizeof set->d[0])) return CUDNN_STATUS_BAD_PARAM; /* the set is full */
    cudnnStatus_t st = cudnnBackendCreateDescriptor(type, out);
    if (st == CUDNN_STATUS_SUCCESS) set->d[set->count++] = *out;
    return st;
}

static void destroy_all(descriptor_set *set) {
    for (int i = 0; i < set->count; i++) cudnnBackendDestroyDescriptor(set->d[i]);
    set->count = 0;
}

static void destroy_plans(cudnnBackendDescriptor_t *plans, int count, int keep) {
    for (int i = 0; i < count; i++)
        if (i != keep) cudnnBackendDestroyDescriptor(plans[i]);
}

#define TRY_CUDNN(call)                                         \
    do {                                                        \
        cudnnStatus_t try_s_ = (call);                          \
        if (try_s_ != CUDNN_STATUS_SUCCESS) return try_s_;      \
    } while (0)

static cudnnStatus_t make_tensor(descriptor_set *set, int64_t uid, const int64_t dims[4], int64_t alignment,
                                 cudnnBackendDescriptor_t *t) {
    const int64_t strides[4] = {dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
    const cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
    TRY_CUDNN(create(set, CUDNN_BACKEND_TENSOR_DESCRIPTOR, t));
    TRY_CUDNN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype));
    TRY_CUDNN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    TRY_CUDNN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    TRY_CUDNN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    TRY_CUDNN(cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment));
    return cudnnBackendFinalize(*t);
}

static cudnnStatus_t make_conv_desc(descriptor_set *set, const bf_conv2d_shape *s, cudnnBackendDescriptor_t *c) {
    const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t dims = 2, dilation[2] = {1, 1}, stride[2] = {s->stride, s->stride}, pad[2] = {s->pad, s->pad};
    TRY_CUDNN(create(set, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, c));
    TRY_CUDNN(cudnnBackendSetAttribute(*c, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &compute));
    TRY_CUDNN(cudnnBackendSetAttribute(*c, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
    TRY_CUDNN(cudnnBackendSetAttribute(*c, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &dims));
    TRY_CUDNN(cudnnBackendSetAttribute(*c, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dilation));
    TRY_CUDNN(cudnnBackendSetAttribute(*c, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride));
    TRY_CUDNN(cudnnBackendSetAttribute(*c, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
    TRY_CUDNN(cudnnBackendSetAttribute(*c, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad));
    return cudnnBackendFinalize(*c);
}

/* The convolution operation of direction dir over tensors x, w, y (the forward's names). */
static cudnnStatus_t make_operation(descriptor_set *set, int dir, cudnnBackendDescriptor_t x,
                                    cudnnBackendDescriptor_t w, cudnnBackendDescriptor_t y,
                                    cudnnBackendDescriptor_t conv, cudnnBackendDescriptor_t *op) {
    static const cudnnBackendDescriptorType_t types[3] = {
        CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
        CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR};
    /* per direction: x, w, y, conv, alpha, beta attributes */
    static const cudnnBackendAttributeName_t names[3][6] = {
        {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
        {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA}};
    const float alpha = 1.0f, beta = 0.0f; /* out is overwritten */
    TRY_CUDNN(create(set, types[dir], op));
    TRY_CUDNN(cudnnBackendSetAttribute(*op, names[dir][0], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    TRY_CUDNN(cudnnBackendSetAttribute(*op, names[dir][1], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w));
    TRY_CUDNN(cudnnBackendSetAttribute(*op, names[dir][2], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    TRY_CUDNN(cudnnBackendSetAttribute(*op, names[dir][3], CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    TRY_CUDNN(cudnnBackendSetAttribute(*op, names[dir][4], CUDNN_TYPE_FLOAT, 1, &alpha));
    TRY_CUDNN(cudnnBackendSetAttribute(*op, names[dir][5], CUDNN_TYPE_FLOAT, 1, &beta));
    return cudnnBackendFinalize(*op);
}

/* Whether an engine configuration may run under the backend's rules, from its engine's numerical
 * and behaviour notes (the engine descriptor is a copy, destroyed here, as cudnn-frontend does). */
static bool engine_notes_allow(cudnnBackendDescriptor_t engine, bool tf32, bool deterministic) {
    int64_t got = 0;
    cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &got, notes) != CUDNN_STATUS_SUCCESS)
        return false;
    for (int64_t i = 0; i < got; i++) {
        /* never inputs converted below fp32 (PyTorch refuses them too; TF32 is not such a
         * conversion); and fp32 means fp32: no tensor-core engine at all, which for float data is TF32 */
        if (notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) return false;
        if (!tf32 && notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE) return false;
        if (deterministic && notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return false;
    }
    cudnnBackendBehaviorNote_t behaviour[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    if (cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                 CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &got, behaviour) != CUDNN_STATUS_SUCCESS)
        return false;
    for (int64_t i = 0; i < got; i++) /* NVRTC at plan time: seconds per engine, and a library we don't link */
        if (behaviour[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION) return false;
    return true;
}

static bool config_allowed(cudnnBackendDescriptor_t cfg, bool tf32, bool deterministic) {
    cudnnBackendDescriptor_t engine;
    int64_t got = 0;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) != CUDNN_STATUS_SUCCESS) return false;
    const bool allowed = cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                                  &got, &engine) == CUDNN_STATUS_SUCCESS &&
                         got == 1 && engine_notes_allow(engine, tf32, deterministic);
    cudnnBackendDestroyDescriptor(engine);
    return allowed;
}

/* The heuristics' engine configurations of one mode that the rules allow (config_allowed), in the
 * heuristics' order, appended to cfgs (at most MAX_CONFIGS in all; each mode's list is read whole,
 * at most MAX_CONFIGS of it, and filtered before the cap counts). */
static void heuristic_configs(descriptor_set *set, cudnnBackendDescriptor_t graph, cudnnBackendHeurMode_t mode,
                              bool tf32, bool deterministic, cudnnBackendDescriptor_t *cfgs, int *count) {
    cudnnBackendDescriptor_t heur;
    int64_t available = 0;
    if (create(set, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                 &graph) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &available,
                                 NULL) != CUDNN_STATUS_SUCCESS)
        return;
    const int64_t want = available < MAX_CONFIGS ? available : MAX_CONFIGS;
    if (want <= 0) return;
    cudnnBackendDescriptor_t fresh[MAX_CONFIGS];
    for (int64_t i = 0; i < want; i++)
        if (create(set, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &fresh[i]) != CUDNN_STATUS_SUCCESS) return;
    int64_t got = 0;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, want, &got,
                                 fresh) != CUDNN_STATUS_SUCCESS)
        return;
    for (int64_t i = 0; i < got && i < want && *count < MAX_CONFIGS; i++)
        if (config_allowed(fresh[i], tf32, deterministic)) cfgs[(*count)++] = fresh[i];
}

/* A finalised variant pack: the operands a, b, out (uids 1..3) and the workspace. */
static cudnnStatus_t make_pack(void *const ptrs[3], void *ws, cudnnBackendDescriptor_t *pack) {
    const int64_t uids[3] = {UID_A, UID_B, UID_OUT};
    TRY_CUDNN(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, pack));
    cudnnStatus_t st = cudnnBackendSetAttribute(*pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(*pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(*pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(*pack);
    if (st != CUDNN_STATUS_SUCCESS) {
        cudnnBackendDestroyDescriptor(*pack);
        *pack = NULL;
    }
    return st;
}

/* One run with a pack made for it (the trials: each candidate plan runs a few times). */
static cudnnStatus_t run_plan(bf_cuda_impl *im, cudnnBackendDescriptor_t plan, const void *a, const void *b,
                              void *out) {
    void *const ptrs[3] = {(void *)a, (void *)b, out};
    cudnnBackendDescriptor_t pack;
    TRY_CUDNN(make_pack(ptrs, im->ws, &pack));
    const cudnnStatus_t st = cudnnBackendExecute(im->cudnn, plan, pack);
    cudnnBackendDestroyDescriptor(pack);
    return st;
}

/* The largest power of two <= 16 that divides every pointer. */
static int64_t alignment_of(const void *a, const void *b, const void *out) {
    const uintptr_t bits = (uintptr_t)a | (uintptr_t)b | (uintptr_t)out;
    int64_t al = 16;
    while (al > 1 && bits % (uintptr_t)al != 0) al /= 2;
    return al;
}

/* Mean ms of TIMED_RUNS runs after one warm-up; < 0 when the plan fails to run. */
static float time_plan(bf_cuda_impl *im, cudnnBackendDescriptor_t plan, const void *a, const void *b, void *out,
                       cudaEvent_t start, cudaEvent_t stop) {
    if (run_plan(im, plan, a, b, out) != CUDNN_STATUS_SUCCESS) return -1.0f;
    cudaEventRecord(start, im->stream);
    for (int r = 0; r < TIMED_RUNS; r++)
        if (run_plan(im, plan, a, b, out) != CUDNN_STATUS_SUCCESS) return -1.0f;
    cudaEventRecord(stop, im->stream);
    float ms = -1.0f;
    if (cudaEventSynchronize(stop) != cudaSuccess || cudaEventElapsedTime(&ms, start, stop) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1.0f;
    }
    return ms / TIMED_RUNS;
}

}  // namespace

bf_status bf_conv_graph_plan(bf_cuda_impl *im, const bf_conv2d_shape *s, int dir, const void *a, const void *b,
                             void *out, size_t ws_limit, bf_conv_plan **plan_out, size_t *workspace) {
    *plan_out = NULL;
    *workspace = 0;
    if (dir < 0 || dir > 2) return bf_error(BF_ERR_ARG, "conv graph: unknown direction %d", dir);
    const int64_t x_dims[4] = {s->n, s->c_in, s->h_in, s->w_in};
    const int64_t w_dims[4] = {s->c_out, s->c_in / s->groups, s->k_h, s->k_w};
    const int64_t y_dims[4] = {s->n, s->c_out, s->h_out, s->w_out};
    /* uids by direction: the operands (a, b, out) are (x, w, y), (dy, w, dx), (x, dy, dw) */
    static const int64_t x_uid[3] = {UID_A, UID_OUT, UID_A}, w_uid[3] = {UID_B, UID_B, UID_OUT},
                         y_uid[3] = {UID_OUT, UID_A, UID_B};
    const int64_t alignment = alignment_of(a, b, out);
    const bool tf32 = im->precision != BF_PRECISION_FP32 /* tf32 and tf32_conv */, deterministic = im->deterministic != 0;

    descriptor_set set;
    set.count = 0;
    cudnnBackendDescriptor_t x, w, y, conv, op, graph, cfgs[MAX_CONFIGS];
    int num_cfgs = 0;
    cudnnHandle_t handle = im->cudnn;
    if (make_tensor(&set, x_uid[dir], x_dims, alignment, &x) != CUDNN_STATUS_SUCCESS ||
        make_tensor(&set, w_uid[dir], w_dims, alignment, &w) != CUDNN_STATUS_SUCCESS ||
        make_tensor(&set, y_uid[dir], y_dims, alignment, &y) != CUDNN_STATUS_SUCCESS ||
        make_conv_desc(&set, s, &conv) != CUDNN_STATUS_SUCCESS ||
        make_operation(&set, dir, x, w, y, conv, &op) != CUDNN_STATUS_SUCCESS ||
        create(&set, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph) != CUDNN_STATUS_SUCCESS ||
        cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) !=
            CUDNN_STATUS_SUCCESS ||
        cudnnBackendFinalize(graph) != CUDNN_STATUS_SUCCESS) {
        destroy_all(&set);
        return BF_OK; /* no graph for this shape: conv.cu keeps its legacy algorithm */
    }
    heuristic_configs(&set, graph, CUDNN_HEUR_MODE_A, tf32, deterministic, cfgs, &num_cfgs);
    heuristic_configs(&set, graph, CUDNN_HEUR_MODE_FALLBACK, tf32, deterministic, cfgs, &num_cfgs);

    /* finalise a plan for the first MAX_PLANS allowed configurations that fit the workspace limit */
    cudnnBackendDescriptor_t plans[MAX_PLANS];
    size_t plan_ws[MAX_PLANS], most_ws = 0;
    int num_plans = 0;
    for (int i = 0; i < num_cfgs && num_plans < MAX_PLANS; i++) {
        cudnnBackendDescriptor_t p;
        int64_t ws = 0, got = 0;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p) != CUDNN_STATUS_SUCCESS) break;
        if (cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) !=
                CUDNN_STATUS_SUCCESS ||
            cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                     &cfgs[i]) != CUDNN_STATUS_SUCCESS ||
            cudnnBackendFinalize(p) != CUDNN_STATUS_SUCCESS ||
            cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &got, &ws) !=
                CUDNN_STATUS_SUCCESS ||
            ws < 0 || (size_t)ws > ws_limit) {
            cudnnBackendDestroyDescriptor(p);
            continue;
        }
        plans[num_plans] = p;
        plan_ws[num_plans++] = (size_t)ws;
        if ((size_t)ws > most_ws) most_ws = (size_t)ws;
    }
    (void)cudaGetLastError();

    int best = -1;
    if (num_plans > 0 && most_ws > im->ws_bytes && bf_cuda_workspace_resize(im, most_ws) != BF_OK) {
        /* no room to try them all: back to what the algorithms chosen so far need, and only the
         * plans that fit it are candidates (none: conv.cu keeps its legacy algorithm) */
        if (bf_cuda_workspace_resize(im, im->ws_needed) != BF_OK) {
            destroy_plans(plans, num_plans, -1);
            destroy_all(&set);
            return bf_error(BF_ERR_OOM, "conv graph: cannot restore the %zu-byte cuDNN workspace", im->ws_needed);
        }
        int kept = 0;
        for (int i = 0; i < num_plans; i++) {
            if (plan_ws[i] <= im->ws_bytes) {
                plans[kept] = plans[i];
                plan_ws[kept++] = plan_ws[i];
            } else {
                cudnnBackendDestroyDescriptor(plans[i]);
            }
        }
        num_plans = kept;
    }
    if (deterministic) { /* the first in heuristic order that runs: no timing noise */
        for (int i = 0; i < num_plans && best < 0; i++)
            if (run_plan(im, plans[i], a, b, out) == CUDNN_STATUS_SUCCESS) best = i;
        (void)cudaGetLastError();
    } else if (num_plans > 0) {
        cudaEvent_t start, stop;
        if (cudaEventCreate(&start) != cudaSuccess) {
            destroy_plans(plans, num_plans, -1);
            destroy_all(&set);
            return bf_error(BF_ERR_DEVICE, "conv graph: cudaEventCreate failed");
        }
        if (cudaEventCreate(&stop) != cudaSuccess) {
            cudaEventDestroy(start);
            destroy_plans(plans, num_plans, -1);
            destroy_all(&set);
            return bf_error(BF_ERR_DEVICE, "conv graph: cudaEventCreate failed");
        }
        float best_ms = 0.0f;
        for (int i = 0; i < num_plans; i++) {
            const float ms = time_plan(im, plans[i], a, b, out, start, stop);
            if (ms >= 0.0f && (best < 0 || ms < best_ms)) best = i, best_ms = ms;
        }
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
        (void)cudaGetLastError();
    }
    bf_conv_plan *plan = best < 0 ? NULL : (bf_conv_plan *)calloc(1, sizeof *plan);
    destroy_plans(plans, num_plans, plan ? best : -1);
    if (!plan) {
        destroy_all(&set);
        return best < 0 ? BF_OK : bf_error(BF_ERR_OOM, "conv graph: out of host memory");
    }
    plan->plan = plans[best];
    plan->workspace = plan_ws[best];
    plan->alignment = alignment;
    plan->made_from = set; /* kept alive with the plan */
    *plan_out = plan;
    *workspace = plan->workspace;
    return BF_OK;
}

int bf_conv_graph_fits(const bf_conv_plan *plan, const void *a, const void *b, const void *out) {
    return plan && alignment_of(a, b, out) >= plan->alignment;
}

bf_status bf_conv_graph_run(bf_cuda_impl *im, bf_conv_plan *plan, const void *a, const void *b, void *out) {
    if (im->ws_bytes < plan->workspace)
        return bf_error(BF_ERR_DEVICE, "conv graph: workspace %zu bytes, the plan needs %zu", im->ws_bytes,
                        plan->workspace);
    void *const ptrs[3] = {(void *)a, (void *)b, out};
    if (!plan->pack || memcmp(ptrs, plan->pack_ptrs, sizeof ptrs) != 0 || plan->pack_ws != im->ws) {
        if (plan->pack) cudnnBackendDestroyDescriptor(plan->pack);
        plan->pack = NULL;
        BF_CUDNN_CHECK(make_pack(ptrs, im->ws, &plan->pack));
        memcpy(plan->pack_ptrs, ptrs, sizeof ptrs);
        plan->pack_ws = im->ws;
    }
    BF_CUDNN_CHECK(cudnnBackendExecute(im->cudnn, plan->plan, plan->pack));
    return BF_OK;
}

void bf_conv_graph_free(bf_conv_plan *plan) {
    if (!plan) return;
    if (plan->pack) cudnnBackendDestroyDescriptor(plan->pack);
    cudnnBackendDestroyDescriptor(plan->plan);
    destroy_all(&plan->made_from);
    free(plan);
}
