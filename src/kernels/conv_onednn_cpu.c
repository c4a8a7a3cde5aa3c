/* conv_onednn_cpu.c - the CPU backend's convolutions through oneDNN, where the build found it.
 *
 * Why: OpenBLAS's sgemm behind the im2col path (conv_cpu.c) reaches about 100 GFLOP/s per core on
 * an AVX-512 machine where oneDNN's direct convolution kernels (its blocked layouts, no column
 * matrix) reach 110-160: a CIFAR VGG-11's 3x3 layers at batch 64 ran 1.3-2.5x faster forward and
 * backward data on 2 cores (bench/conv_cpu_lab.c). oneDNN is to the CPU what cuDNN is to the GPU,
 * and PyTorch's CPU convolutions are oneDNN's.
 *
 * Layouts: bioflex's tensors stay NCHW. Each call reorders its inputs into the layouts oneDNN's
 * kernel wants (nChw16c-like, chosen by oneDNN from `any`), runs the kernel, and reorders the result
 * back: a pass over each tensor, small against the convolution. The primitives (kernel and
 * reorders) are made once per shape and pass and kept (like the CUDA backend's algorithm cache);
 * memory objects are made per call (cheap), so that several threads can run one primitive at once.
 *
 * Bits: the results must not depend on the thread count (cpu_backend.h). oneDNN's forward and
 * backward-data kernels give each output element one thread's sum over the input channels, so
 * they run on all the backend's threads and give the same bits with any count
 * (test_conv_onednn checks it). Its backward-weights kernels cut the batch between threads and
 * add their partials, which changes the bits with the thread count; so the weight gradient is
 * taken in slices of output channels, each slice's kernel on one thread over the whole batch
 * (backward_filter below). The bias gradient stays bf_cpu_channel_sum's (the flex route's bias
 * gradient must give the same bits), and the forward adds the bias itself (see there).
 *
 * Only oneDNN's optimised (jit or brgemm) kernels are used: a shape for which oneDNN offers only
 * its reference or gemm-based implementations goes to the im2col path, which is faster than those.
 * Every function here returns *done = 0 and computes nothing when it does not take the call. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"

#ifndef BIOFLEX_HAVE_ONEDNN

int bf_cpu_have_onednn(void) { return 0; }
bf_status bf_cpu_onednn_conv_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x, const float *w,
                                     const float *bias, float *y, int *done) {
    (void)b, (void)s, (void)x, (void)w, (void)bias, (void)y;
    *done = 0;
    return BF_OK;
}
bf_status bf_cpu_onednn_conv_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy, const float *w,
                                           float *dx, int add, int *done) {
    (void)b, (void)s, (void)dy, (void)w, (void)dx, (void)add;
    *done = 0;
    return BF_OK;
}
bf_status bf_cpu_onednn_conv_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                             const float *dy, float *dw, int *done) {
    (void)b, (void)s, (void)x, (void)dy, (void)dw;
    *done = 0;
    return BF_OK;
}
void bf_cpu_onednn_release(bf_cpu_state *st) { (void)st; }

#else

#include <oneapi/dnnl/dnnl.h>

int bf_cpu_have_onednn(void) { return 1; }

typedef enum onednn_pass { PASS_FORWARD, PASS_BACKWARD_DATA, PASS_BACKWARD_FILTER } onednn_pass;

/* One tensor of a primitive: its description in bioflex's memory (NCHW, OIHW), the layout the
 * kernel wants, and the reorder between them (NULL when the kernel takes bioflex's layout as it is). */
typedef struct onednn_tensor {
    dnnl_memory_desc_t plain, kernel;
    dnnl_primitive_t reorder;
    size_t kernel_bytes; /* 0 without a reorder */
} onednn_tensor;

/* The primitives of one shape, pass and thread count. */
typedef struct onednn_conv {
    bf_conv2d_shape shape;
    onednn_pass pass;
    int threads;
    int y_channels; /* the channels of the tensor y (or dy) is the first of: its NCHW strides */
    int usable;     /* 0: oneDNN offers no optimised kernel for it (the im2col path takes it) */
    dnnl_primitive_t conv;
    onednn_tensor in, weights, out; /* forward: x, w, y; backward data: dy, w, dx; filter: x, dy, dw */
    struct onednn_conv *next;
} onednn_conv;

/* The engine, a stream per thread that runs primitives (a stream serves one thread, and the weight
 * gradient's slices run at once) and the primitive cache. */
typedef struct onednn_state {
    dnnl_engine_t engine;
    dnnl_stream_t streams[BF_CPU_MAX_THREADS];
    onednn_conv *cache;
} onednn_state;

#define DNNL_TRY(call, what)                                                                             \
    do {                                                                                                 \
        dnnl_status_t status_ = (call);                                                                  \
        if (status_ != dnnl_success)                                                                     \
            return bf_error(BF_ERR_DEVICE, "oneDNN: %s failed (status %d)", what, (int)status_);         \
    } while (0)

/* oneDNN with OpenMP takes its thread count from omp_get_max_threads() when a primitive is made
 * and run: the calling thread's setting is changed for the call and put back after it. */
typedef struct thread_setting {
    int saved;
} thread_setting;
static thread_setting threads_for_onednn(int threads) {
    thread_setting t = {omp_get_max_threads()};
    omp_set_num_threads(threads);
    return t;
}
static void threads_restore(thread_setting t) { omp_set_num_threads(t.saved); }

static bf_status state_of(bf_backend *b, onednn_state **out) {
    bf_cpu_state *st = b->impl;
    if (!st->onednn) {
        onednn_state *o = calloc(1, sizeof *o);
        if (!o) return bf_error(BF_ERR_OOM, "oneDNN: cannot allocate its state");
        if (dnnl_engine_create(&o->engine, dnnl_cpu, 0) != dnnl_success) {
            free(o);
            return bf_error(BF_ERR_DEVICE, "oneDNN: cannot create its CPU engine");
        }
        st->onednn = o;
    }
    *out = st->onednn;
    return BF_OK;
}

/* Streams 0 .. count-1, made where missing (before a parallel loop uses them). */
static bf_status streams_for(onednn_state *o, int count) {
    for (int i = 0; i < count; i++)
        if (!o->streams[i]) DNNL_TRY(dnnl_stream_create(&o->streams[i], o->engine, dnnl_stream_default_flags), "a stream");
    return BF_OK;
}

static void conv_release(onednn_conv *c) {
    if (c->conv) dnnl_primitive_destroy(c->conv);
    onednn_tensor *tensors[3] = {&c->in, &c->weights, &c->out};
    for (int i = 0; i < 3; i++)
        if (tensors[i]->reorder) dnnl_primitive_destroy(tensors[i]->reorder);
    free(c);
}

void bf_cpu_onednn_release(bf_cpu_state *st) {
    onednn_state *o = st->onednn;
    if (!o) return;
    for (onednn_conv *c = o->cache, *next; c; c = next) {
        next = c->next;
        conv_release(c);
    }
    for (int i = 0; i < BF_CPU_MAX_THREADS; i++)
        if (o->streams[i]) dnnl_stream_destroy(o->streams[i]);
    dnnl_engine_destroy(o->engine);
    free(o);
    st->onednn = NULL;
}

/* The descriptions of x [n, c_in, h, w], w [c_out, c_in/g, kh, kw] (grouped: [g, c_out/g, ...])
 * and y [n, c_out, h_out, w_out] in bioflex's layout (y: the first c_out channels of a tensor of
 * y_channels), or as `any` for the kernel to choose. */
static bf_status shape_mds(const bf_conv2d_shape *s, int y_channels, int any, dnnl_memory_desc_t *x,
                           dnnl_memory_desc_t *w, dnnl_memory_desc_t *y) {
    const dnnl_dims_t xd = {s->n, s->c_in, s->h_in, s->w_in}, yd = {s->n, s->c_out, s->h_out, s->w_out};
    const dnnl_dims_t wd = {s->c_out, s->c_in, s->k_h, s->k_w};
    const dnnl_dims_t gwd = {s->groups, s->c_out / s->groups, s->c_in / s->groups, s->k_h, s->k_w};
    const dnnl_dim_t hw = (dnnl_dim_t)s->h_out * s->w_out;
    const dnnl_dims_t y_strides = {y_channels * hw, hw, s->w_out, 1};
    const dnnl_format_tag_t x_tag = any ? dnnl_format_tag_any : dnnl_nchw;
    const dnnl_format_tag_t w_tag = any ? dnnl_format_tag_any : s->groups == 1 ? dnnl_oihw : dnnl_goihw;
    DNNL_TRY(dnnl_memory_desc_init_by_tag(x, 4, xd, dnnl_f32, x_tag), "x's desc");
    if (any) DNNL_TRY(dnnl_memory_desc_init_by_tag(y, 4, yd, dnnl_f32, dnnl_format_tag_any), "y's desc");
    else DNNL_TRY(dnnl_memory_desc_init_by_strides(y, 4, yd, dnnl_f32, y_strides), "y's desc");
    if (s->groups == 1) DNNL_TRY(dnnl_memory_desc_init_by_tag(w, 4, wd, dnnl_f32, w_tag), "w's desc");
    else DNNL_TRY(dnnl_memory_desc_init_by_tag(w, 5, gwd, dnnl_f32, w_tag), "w's desc");
    return BF_OK;
}

/* The tensor between bioflex's layout (plain) and the kernel's (kernel): to_kernel says which way
 * its reorder runs. */
static bf_status tensor_init(onednn_state *o, const dnnl_memory_desc_t *plain, const dnnl_memory_desc_t *kernel,
                             int to_kernel, onednn_tensor *t) {
    t->plain = *plain;
    t->kernel = *kernel;
    if (dnnl_memory_desc_equal(plain, kernel)) return BF_OK;
    t->kernel_bytes = dnnl_memory_desc_get_size(kernel);
    dnnl_primitive_desc_t rpd;
    if (to_kernel) DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, plain, o->engine, kernel, o->engine, NULL), "a reorder");
    else DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, kernel, o->engine, plain, o->engine, NULL), "a reorder");
    dnnl_status_t made = dnnl_primitive_create(&t->reorder, rpd);
    dnnl_primitive_desc_destroy(rpd);
    DNNL_TRY(made, "a reorder primitive");
    return BF_OK;
}

/* Whether the primitive description is one of oneDNN's optimised kernels (not "ref:" nor "gemm:"). */
static int optimised(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) return 0;
    return strncmp(impl, "jit", 3) == 0 || strncmp(impl, "brg", 3) == 0;
}

/* The pass's primitive description, or NULL where oneDNN cannot describe the convolution. */
static dnnl_primitive_desc_t pass_pd(onednn_state *o, const onednn_conv *c, const dnnl_memory_desc_t *xa,
                                     const dnnl_memory_desc_t *wa, const dnnl_memory_desc_t *ya) {
    const bf_conv2d_shape *s = &c->shape;
    const dnnl_dims_t strides = {s->stride, s->stride}, pad_l = {s->pad, s->pad};
    /* the right padding that gives bioflex's (PyTorch's) output size, whatever the rounding */
    const dnnl_dims_t pad_r = {(s->h_out - 1) * s->stride + s->k_h - s->h_in - s->pad,
                               (s->w_out - 1) * s->stride + s->k_w - s->w_in - s->pad};
    if (pad_r[0] < 0 || pad_r[1] < 0) return NULL;
    dnnl_convolution_desc_t fd, bd;
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    if (dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, xa, wa, NULL, ya,
                                           strides, pad_l, pad_r) != dnnl_success ||
        dnnl_primitive_desc_create(&fpd, &fd, NULL, o->engine, NULL) != dnnl_success)
        return NULL;
    if (c->pass == PASS_FORWARD) return fpd;
    dnnl_status_t made = c->pass == PASS_BACKWARD_DATA
        ? dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, xa, wa, ya, strides, pad_l, pad_r)
        : dnnl_convolution_backward_weights_desc_init(&bd, dnnl_convolution_direct, xa, wa, NULL, ya, strides, pad_l,
                                                      pad_r);
    if (made == dnnl_success) made = dnnl_primitive_desc_create(&pd, &bd, NULL, o->engine, fpd); /* fpd: the hint */
    dnnl_primitive_desc_destroy(fpd);
    return made == dnnl_success ? pd : NULL;
}

/* Makes c's primitives; c->usable = 0 when oneDNN has no optimised kernel for the shape. */
static bf_status conv_init(onednn_state *o, onednn_conv *c) {
    dnnl_memory_desc_t x, w, y, xa, wa, ya;
    BF_TRY(shape_mds(&c->shape, c->y_channels, 0, &x, &w, &y));
    BF_TRY(shape_mds(&c->shape, c->y_channels, 1, &xa, &wa, &ya));
    dnnl_primitive_desc_t pd = pass_pd(o, c, &xa, &wa, &ya);
    if (!pd) return BF_OK;
    bf_status st = BF_OK;
    if (optimised(pd)) {
#define MD(what) dnnl_primitive_desc_query_md(pd, what, 0)
        if (c->pass == PASS_FORWARD) {
            st = tensor_init(o, &x, MD(dnnl_query_src_md), 1, &c->in);
            if (st == BF_OK) st = tensor_init(o, &w, MD(dnnl_query_weights_md), 1, &c->weights);
            if (st == BF_OK) st = tensor_init(o, &y, MD(dnnl_query_dst_md), 0, &c->out);
        } else if (c->pass == PASS_BACKWARD_DATA) {
            st = tensor_init(o, &y, MD(dnnl_query_diff_dst_md), 1, &c->in);
            if (st == BF_OK) st = tensor_init(o, &w, MD(dnnl_query_weights_md), 1, &c->weights);
            if (st == BF_OK) st = tensor_init(o, &x, MD(dnnl_query_diff_src_md), 0, &c->out);
        } else { /* dy rides in the weights' slot */
            st = tensor_init(o, &x, MD(dnnl_query_src_md), 1, &c->in);
            if (st == BF_OK) st = tensor_init(o, &y, MD(dnnl_query_diff_dst_md), 1, &c->weights);
            if (st == BF_OK) st = tensor_init(o, &w, MD(dnnl_query_diff_weights_md), 0, &c->out);
        }
#undef MD
        if (st == BF_OK && dnnl_primitive_create(&c->conv, pd) != dnnl_success)
            st = bf_error(BF_ERR_DEVICE, "oneDNN: the convolution's primitive failed");
        c->usable = st == BF_OK;
    }
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* The cached primitives of (shape, pass, threads, y_channels), made on first use with `threads`
 * threads. */
static bf_status conv_of(bf_backend *b, const bf_conv2d_shape *s, onednn_pass pass, int threads, int y_channels,
                         onednn_conv **out) {
    onednn_state *o = NULL;
    BF_TRY(state_of(b, &o));
    for (onednn_conv *c = o->cache; c; c = c->next)
        if (c->pass == pass && c->threads == threads && c->y_channels == y_channels &&
            memcmp(&c->shape, s, sizeof *s) == 0) {
            *out = c;
            return BF_OK;
        }
    onednn_conv *c = calloc(1, sizeof *c);
    if (!c) return bf_error(BF_ERR_OOM, "oneDNN: cannot allocate a primitive cache entry");
    c->shape = *s;
    c->pass = pass;
    c->threads = threads;
    c->y_channels = y_channels;
    thread_setting t = threads_for_onednn(threads);
    bf_status st = conv_init(o, c);
    threads_restore(t);
    if (st != BF_OK) {
        conv_release(c);
        return st;
    }
    c->next = o->cache;
    o->cache = c;
    *out = c;
    return BF_OK;
}

static size_t round_bytes(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

static size_t scratch_of(const onednn_conv *c) {
    return round_bytes(c->in.kernel_bytes) + round_bytes(c->weights.kernel_bytes) + round_bytes(c->out.kernel_bytes);
}

/* One call's memory of a tensor: bioflex's (at plain) and, with a reorder, the kernel's layout at
 * *scratch (advanced past it). */
typedef struct bound_tensor {
    dnnl_memory_t plain, kernel; /* kernel == plain without a reorder */
} bound_tensor;

static bf_status tensor_bind(onednn_state *o, const onednn_tensor *t, const void *plain, char **scratch,
                             bound_tensor *out) {
    out->plain = out->kernel = NULL;
    DNNL_TRY(dnnl_memory_create(&out->plain, &t->plain, o->engine, (void *)plain), "a tensor's memory");
    out->kernel = out->plain;
    if (!t->reorder) return BF_OK;
    if (dnnl_memory_create(&out->kernel, &t->kernel, o->engine, *scratch) != dnnl_success) {
        out->kernel = NULL;
        return bf_error(BF_ERR_DEVICE, "oneDNN: a tensor's memory failed");
    }
    *scratch += round_bytes(t->kernel_bytes);
    return BF_OK;
}

static void tensor_unbind(bound_tensor *m) {
    if (m->kernel && m->kernel != m->plain) dnnl_memory_destroy(m->kernel);
    if (m->plain) dnnl_memory_destroy(m->plain);
}

static bf_status reorder_run(dnnl_stream_t stream, const onednn_tensor *t, const bound_tensor *m, int to_kernel) {
    if (!t->reorder) return BF_OK;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, to_kernel ? m->plain : m->kernel},
                               {DNNL_ARG_TO, to_kernel ? m->kernel : m->plain}};
    DNNL_TRY(dnnl_primitive_execute(t->reorder, stream, 2, args), "a reorder");
    return BF_OK;
}

/* Runs c on bioflex's tensors (in, weights: read; out: written) on stream `stream`, through the
 * kernel's layouts in scratch, with `threads` threads. */
static bf_status conv_run(onednn_state *o, int stream, const onednn_conv *c, const void *in, const void *weights,
                          void *out, char *scratch, int threads) {
    bound_tensor mi = {0}, mw = {0}, mo = {0};
    bf_status st = tensor_bind(o, &c->in, in, &scratch, &mi);
    if (st == BF_OK) st = tensor_bind(o, &c->weights, weights, &scratch, &mw);
    if (st == BF_OK) st = tensor_bind(o, &c->out, out, &scratch, &mo);
    int in_arg = DNNL_ARG_SRC, w_arg = DNNL_ARG_WEIGHTS, out_arg = DNNL_ARG_DST;
    if (c->pass == PASS_BACKWARD_DATA) in_arg = DNNL_ARG_DIFF_DST, out_arg = DNNL_ARG_DIFF_SRC;
    if (c->pass == PASS_BACKWARD_FILTER) w_arg = DNNL_ARG_DIFF_DST, out_arg = DNNL_ARG_DIFF_WEIGHTS;
    dnnl_exec_arg_t args[3] = {{in_arg, mi.kernel}, {w_arg, mw.kernel}, {out_arg, mo.kernel}};
    dnnl_stream_t s = o->streams[stream];
    thread_setting t = threads_for_onednn(threads);
    if (st == BF_OK) st = reorder_run(s, &c->in, &mi, 1);
    if (st == BF_OK) st = reorder_run(s, &c->weights, &mw, 1);
    if (st == BF_OK && dnnl_primitive_execute(c->conv, s, 3, args) != dnnl_success)
        st = bf_error(BF_ERR_DEVICE, "oneDNN: the convolution failed");
    if (st == BF_OK) st = reorder_run(s, &c->out, &mo, 0);
    if (st == BF_OK && dnnl_stream_wait(s) != dnnl_success)
        st = bf_error(BF_ERR_DEVICE, "oneDNN: waiting for the stream failed");
    threads_restore(t);
    tensor_unbind(&mi), tensor_unbind(&mw), tensor_unbind(&mo);
    return st;
}

/* The scratch for the kernel's layouts (bytes), or NULL when it cannot be had: the blocked copies
 * of a large layer's input and output can be a GiB (VGG-16 at 224x224, batch 32), and the im2col
 * path, which needs a few column buffers, then takes the call instead of the run stopping. */
static int scratch_for(bf_backend *b, size_t bytes, void **out) {
    *out = NULL;
    return bytes == 0 || bf_cpu_scratch(b, bytes, out) == BF_OK;
}

static int enabled(const bf_backend *b) { return ((const bf_cpu_state *)b->impl)->conv_library == BF_CPU_CONV_ONEDNN; }

static void count_call(bf_backend *b) { ((bf_cpu_state *)b->impl)->onednn_calls++; }

bf_status bf_cpu_onednn_conv_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x, const float *w,
                                     const float *bias, float *y, int *done) {
    *done = 0;
    if (!enabled(b)) return BF_OK;
    const int threads = bf_cpu_threads(b);
    onednn_conv *c;
    BF_TRY(conv_of(b, s, PASS_FORWARD, threads, s->c_out, &c));
    if (!c->usable) return BF_OK;
    onednn_state *o = ((bf_cpu_state *)b->impl)->onednn;
    BF_TRY(streams_for(o, 1));
    void *scratch;
    if (!scratch_for(b, scratch_of(c), &scratch)) return BF_OK;
    BF_TRY(conv_run(o, 0, c, x, w, y, scratch, threads));
    /* The bias after the sum, one rounding per element: what a flex joint given the bias computes
     * from the conv's output ([model] fold_conv_bias), bit for bit. oneDNN's own bias joins its
     * sums at another point, which differs in the last bit. */
    if (bias) {
        const size_t planes = (size_t)s->n * s->c_out, hw = (size_t)s->h_out * s->w_out;
#pragma omp parallel for num_threads(planes * hw >= BF_CPU_PARALLEL_MIN ? threads : 1) schedule(static)
        for (size_t p = 0; p < planes; p++) {
            float *plane = y + p * hw, value = bias[p % (size_t)s->c_out];
            for (size_t i = 0; i < hw; i++) plane[i] += value;
        }
    }
    *done = 1;
    count_call(b);
    return BF_OK;
}

bf_status bf_cpu_onednn_conv_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy, const float *w,
                                           float *dx, int add, int *done) {
    *done = 0;
    /* Fewer than 16 input channels per group (an RGB image's gradient): oneDNN's backward-data
     * kernels, made for blocks of 16 channels, ran up to 3x slower than im2col there. */
    if (!enabled(b) || s->c_in / s->groups < 16) return BF_OK;
    const int threads = bf_cpu_threads(b);
    onednn_conv *c;
    BF_TRY(conv_of(b, s, PASS_BACKWARD_DATA, threads, s->c_out, &c));
    if (!c->usable) return BF_OK;
    onednn_state *o = ((bf_cpu_state *)b->impl)->onednn;
    BF_TRY(streams_for(o, 1));
    /* dx += result: the result into scratch first, then one rounding per element, as the im2col
     * path adds it */
    const size_t dx_floats = (size_t)s->n * s->c_in * s->h_in * s->w_in;
    const size_t sum_bytes = add ? sizeof(float) * bf_cpu_round_floats(dx_floats) : 0;
    void *scratch;
    if (!scratch_for(b, scratch_of(c) + sum_bytes, &scratch)) return BF_OK;
    float *result = add ? (float *)scratch : dx;
    BF_TRY(conv_run(o, 0, c, dy, w, result, (char *)scratch + sum_bytes, threads));
    if (add) {
#pragma omp parallel for num_threads(dx_floats >= BF_CPU_PARALLEL_MIN ? threads : 1) schedule(static)
        for (size_t i = 0; i < dx_floats; i++) dx[i] += result[i];
    }
    *done = 1;
    count_call(b);
    return BF_OK;
}

/* The weight gradient in slices of FILTER_SLICE output channels: each slice's kernel runs on one
 * thread over the whole batch and writes its own rows of dw (no partial sums to add), so the
 * thread count only decides which thread takes which slice. Slices of 16 ran at 110-120 GFLOP/s
 * per core, where im2col's blocks of images ran at about 75 (bench/conv_cpu_lab.c). */
#define FILTER_SLICE 16

bf_status bf_cpu_onednn_conv_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                             const float *dy, float *dw, int *done) {
    *done = 0;
    if (!enabled(b) || s->groups != 1) return BF_OK;
    /* the slices' primitives: FILTER_SLICE channels, and the last slice's remainder; dy [n, c_out,
     * hw] is read in place, a slice's channels strided by the whole tensor's */
    const int slices = (s->c_out + FILTER_SLICE - 1) / FILTER_SLICE, last = s->c_out - (slices - 1) * FILTER_SLICE;
    onednn_conv *full, *rest;
    bf_conv2d_shape part = *s;
    part.c_out = s->c_out < FILTER_SLICE ? s->c_out : FILTER_SLICE;
    BF_TRY(conv_of(b, &part, PASS_BACKWARD_FILTER, 1, s->c_out, &full));
    part.c_out = last;
    BF_TRY(conv_of(b, &part, PASS_BACKWARD_FILTER, 1, s->c_out, &rest));
    /* x goes into the kernel's layout once for every slice, which both sizes must share */
    if (!full->usable || !rest->usable || !dnnl_memory_desc_equal(&full->in.kernel, &rest->in.kernel)) return BF_OK;
    onednn_state *o = ((bf_cpu_state *)b->impl)->onednn;
    const int threads = bf_cpu_threads(b) < slices ? bf_cpu_threads(b) : slices;
    BF_TRY(streams_for(o, bf_cpu_threads(b)));
    const size_t x_bytes = round_bytes(full->in.kernel_bytes);
    const size_t per_thread = round_bytes(full->weights.kernel_bytes) + round_bytes(full->out.kernel_bytes);
    void *scratch;
    if (!scratch_for(b, x_bytes + per_thread * threads, &scratch)) return BF_OK;
    const void *x_kernel = x;
    if (full->in.reorder) { /* x into the kernel's layout, on all the threads (a copy: the same bits) */
        bound_tensor mx = {0};
        char *at = scratch;
        bf_status st = tensor_bind(o, &full->in, x, &at, &mx);
        thread_setting t = threads_for_onednn(bf_cpu_threads(b));
        if (st == BF_OK) st = reorder_run(o->streams[0], &full->in, &mx, 1);
        if (st == BF_OK && dnnl_stream_wait(o->streams[0]) != dnnl_success)
            st = bf_error(BF_ERR_DEVICE, "oneDNN: waiting for the stream failed");
        threads_restore(t);
        tensor_unbind(&mx);
        BF_TRY(st);
        x_kernel = scratch;
    }
    const size_t hw = (size_t)s->h_out * s->w_out, w_row = (size_t)s->c_in * s->k_h * s->k_w;
    bf_status failed = BF_OK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int k = 0; k < slices; k++) {
        const int thread = omp_get_thread_num(), first = k * FILTER_SLICE;
        /* the slice's primitives, less x's reorder: x is already in the kernel's layout */
        onednn_conv slice = k == slices - 1 ? *rest : *full;
        slice.in.reorder = NULL;
        slice.in.plain = slice.in.kernel;
        char *mine = (char *)scratch + x_bytes + per_thread * thread;
        bf_status st = conv_run(o, thread, &slice, x_kernel, dy + (size_t)first * hw, dw + (size_t)first * w_row,
                                mine, 1);
        if (st != BF_OK)
#pragma omp critical(bf_onednn_failure)
            failed = st;
    }
    BF_TRY(failed);
    *done = 1;
    count_call(b);
    return BF_OK;
}

#endif /* BIOFLEX_HAVE_ONEDNN */
