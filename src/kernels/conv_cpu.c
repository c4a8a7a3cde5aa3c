/* conv_cpu.c - 2-D convolution (cross-correlation, PyTorch layout) on the CPU by im2col + sgemm.
 *
 * For one image and one group, im2col unrolls the input into a column matrix
 * col[k_g, hw_out] with k_g = c_in/groups * k_h * k_w, so that the convolution is one GEMM:
 *     forward:          y_g[c_out_g, hw_out] = w_g[c_out_g, k_g] * col
 *     backward data:    col = w_g^T * dy_g, then col2im scatters col back onto dx
 *     backward filter:  dw_g += dy_g * col^T, summed over the images
 * A 1x1 convolution with stride 1 and no padding needs no unrolling: x itself is the column matrix.
 *
 * Forward and backward data run one image per thread (OpenBLAS single-threaded inside), each
 * thread with its own column buffer in the backend's scratch memory. Backward filter sums over
 * images, so to stay deterministic each thread accumulates a fixed block of images into its own
 * partial dw and the partials are added in block order. */
#include <omp.h>
#include <string.h>

#include <cblas.h>

#include "cpu_backend.h"

/* Sizes of one group's GEMMs, derived once per call from the shape. */
typedef struct conv_geometry {
    int cin_g, cout_g; /* channels per group */
    int k_g;           /* rows of the column matrix: cin_g * k_h * k_w */
    int hw_in, hw_out;
    int direct;        /* 1x1, stride 1, pad 0: the input is its own column matrix */
    size_t col_floats; /* one thread's column buffer, rounded to cache lines */
} conv_geometry;

static bf_status conv_geometry_init(const bf_conv2d_shape *s, conv_geometry *g) {
    if (s->n <= 0 || s->c_in <= 0 || s->c_out <= 0 || s->groups <= 0 || s->stride <= 0 ||
        s->c_in % s->groups || s->c_out % s->groups || s->h_out <= 0 || s->w_out <= 0 ||
        s->h_out != (s->h_in + 2 * s->pad - s->k_h) / s->stride + 1 ||
        s->w_out != (s->w_in + 2 * s->pad - s->k_w) / s->stride + 1)
        return bf_error(BF_ERR_ARG, "conv2d: invalid shape n=%d c_in=%d %dx%d c_out=%d k=%dx%d stride=%d pad=%d "
                        "groups=%d out=%dx%d (initialise it with bf_conv2d_shape_init)", s->n, s->c_in, s->h_in,
                        s->w_in, s->c_out, s->k_h, s->k_w, s->stride, s->pad, s->groups, s->h_out, s->w_out);
    g->cin_g = s->c_in / s->groups;
    g->cout_g = s->c_out / s->groups;
    g->k_g = g->cin_g * s->k_h * s->k_w;
    g->hw_in = s->h_in * s->w_in;
    g->hw_out = s->h_out * s->w_out;
    g->direct = s->k_h == 1 && s->k_w == 1 && s->stride == 1 && s->pad == 0;
    g->col_floats = g->direct ? 0 : bf_cpu_round_floats((size_t)g->k_g * g->hw_out);
    return BF_OK;
}

/* Unrolls cin_g channels of one image (x) into col[k_g, hw_out]; padding reads as zero. Row
 * (c, ki, kj) of col holds, for every output position, the input under kernel tap (ki, kj). */
static void im2col(const bf_conv2d_shape *s, int channels, const float *x, float *col) {
    for (int c = 0; c < channels; c++)
        for (int ki = 0; ki < s->k_h; ki++)
            for (int kj = 0; kj < s->k_w; kj++) {
                float *row = col + ((size_t)(c * s->k_h + ki) * s->k_w + kj) * s->h_out * s->w_out;
                int ow_lo, ow_hi;
                bf_cpu_valid_outputs(s->w_in, s->w_out, s->stride, s->pad, kj, &ow_lo, &ow_hi);
                for (int oh = 0; oh < s->h_out; oh++) {
                    float *dst = row + (size_t)oh * s->w_out;
                    int ih = oh * s->stride - s->pad + ki;
                    if (ih < 0 || ih >= s->h_in) {
                        memset(dst, 0, sizeof(float) * s->w_out);
                        continue;
                    }
                    const float *src = x + ((size_t)c * s->h_in + ih) * s->w_in;
                    int offset = kj - s->pad; /* input column = ow*stride + offset */
                    for (int ow = 0; ow < ow_lo; ow++) dst[ow] = 0.0f;
                    if (s->stride == 1 && ow_hi > ow_lo)
                        memcpy(dst + ow_lo, src + ow_lo + offset, sizeof(float) * (ow_hi - ow_lo));
                    else if (s->stride != 1)
                        for (int ow = ow_lo; ow < ow_hi; ow++) dst[ow] = src[ow * s->stride + offset];
                    for (int ow = ow_hi; ow < s->w_out; ow++) dst[ow] = 0.0f;
                }
            }
}

/* The adjoint of im2col: adds every entry of col onto the input position it was read from.
 * dx (cin_g channels of one image) must be zeroed first; entries from padding are dropped. */
static void col2im(const bf_conv2d_shape *s, int channels, const float *col, float *dx) {
    for (int c = 0; c < channels; c++)
        for (int ki = 0; ki < s->k_h; ki++)
            for (int kj = 0; kj < s->k_w; kj++) {
                const float *row = col + ((size_t)(c * s->k_h + ki) * s->k_w + kj) * s->h_out * s->w_out;
                int ow_lo, ow_hi;
                bf_cpu_valid_outputs(s->w_in, s->w_out, s->stride, s->pad, kj, &ow_lo, &ow_hi);
                for (int oh = 0; oh < s->h_out; oh++) {
                    int ih = oh * s->stride - s->pad + ki;
                    if (ih < 0 || ih >= s->h_in) continue;
                    const float *src = row + (size_t)oh * s->w_out;
                    float *dst = dx + ((size_t)c * s->h_in + ih) * s->w_in;
                    int offset = kj - s->pad; /* input column = ow*stride + offset */
                    if (s->stride == 1) { /* unit stride: a loop the compiler vectorises; the same sums */
                        float *d = dst + offset;
                        for (int ow = ow_lo; ow < ow_hi; ow++) d[ow] += src[ow];
                    } else {
                        for (int ow = ow_lo; ow < ow_hi; ow++) dst[ow * s->stride + offset] += src[ow];
                    }
                }
            }
}

bf_status bf_cpu_conv2d_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                const float *w, const float *bias, float *y) {
    conv_geometry g;
    BF_TRY(conv_geometry_init(s, &g));
    int threads = bf_cpu_threads(b);
    void *scratch = NULL;
    if (!g.direct) BF_TRY(bf_cpu_scratch(b, sizeof(float) * g.col_floats * threads, &scratch));

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int n = 0; n < s->n; n++) {
        float *col = g.direct ? NULL : (float *)scratch + g.col_floats * omp_get_thread_num();
        for (int grp = 0; grp < s->groups; grp++) {
            const float *x_g = x + ((size_t)n * s->c_in + (size_t)grp * g.cin_g) * g.hw_in;
            float *y_g = y + ((size_t)n * s->c_out + (size_t)grp * g.cout_g) * g.hw_out;
            const float *w_g = w + (size_t)grp * g.cout_g * g.k_g;
            if (!g.direct) im2col(s, g.cin_g, x_g, col);
            /* With a bias, y starts as the bias and the GEMM adds onto it (beta = 1). */
            float beta = 0.0f;
            if (bias) {
                for (int o = 0; o < g.cout_g; o++) {
                    float value = bias[grp * g.cout_g + o];
                    float *plane = y_g + (size_t)o * g.hw_out;
                    for (int i = 0; i < g.hw_out; i++) plane[i] = value;
                }
                beta = 1.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.cout_g, g.hw_out, g.k_g, 1.0f, w_g,
                        g.k_g, g.direct ? x_g : col, g.hw_out, beta, y_g, g.hw_out);
        }
    }
    return BF_OK;
}

/* dx = conv's backward-data of dy (add 0), or dx += it (add 1): each thread computes one image's
 * group into its own buffer then, so that every element gets one rounding, dx + result, whatever
 * the column order (cuDNN's beta = 1 blends the same way). */
static bf_status backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy, const float *w, float *dx,
                               int add) {
    conv_geometry g;
    BF_TRY(conv_geometry_init(s, &g));
    int threads = bf_cpu_threads(b);
    const size_t sum_floats = add ? bf_cpu_round_floats((size_t)g.cin_g * g.hw_in) : 0;
    void *scratch = NULL;
    if (!g.direct || add) BF_TRY(bf_cpu_scratch(b, sizeof(float) * (g.col_floats + sum_floats) * threads, &scratch));

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int n = 0; n < s->n; n++) {
        float *col = g.direct ? NULL : (float *)scratch + (g.col_floats + sum_floats) * omp_get_thread_num();
        float *sum = add ? (float *)scratch + (g.col_floats + sum_floats) * omp_get_thread_num() + g.col_floats : NULL;
        for (int grp = 0; grp < s->groups; grp++) {
            float *dx_g = dx + ((size_t)n * s->c_in + (size_t)grp * g.cin_g) * g.hw_in;
            float *out = add ? sum : dx_g;
            const float *dy_g = dy + ((size_t)n * s->c_out + (size_t)grp * g.cout_g) * g.hw_out;
            const float *w_g = w + (size_t)grp * g.cout_g * g.k_g;
            /* col = w_g^T * dy_g; in the direct case col is the result itself. */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.k_g, g.hw_out, g.cout_g, 1.0f, w_g, g.k_g,
                        dy_g, g.hw_out, 0.0f, g.direct ? out : col, g.hw_out);
            if (!g.direct) {
                memset(out, 0, sizeof(float) * g.cin_g * g.hw_in);
                col2im(s, g.cin_g, col, out);
            }
            if (add)
                for (size_t i = 0; i < (size_t)g.cin_g * g.hw_in; i++) dx_g[i] += sum[i];
        }
    }
    return BF_OK;
}

bf_status bf_cpu_conv2d_backward_data(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                      const float *w, float *dx) {
    return backward_data(b, s, dy, w, dx, 0);
}

bf_status bf_cpu_conv2d_backward_data_add(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                          const float *w, float *dx) {
    return backward_data(b, s, dy, w, dx, 1);
}

/* out[o] = sum of x [n, c, hw] over the batch and the plane of channel o, in double: a conv's bias
 * gradient (here and in the flex route, flex_pool_cpu.c, which must give the same bits). */
void bf_cpu_channel_sum(const bf_backend *b, int n, int c, size_t hw, const float *x, float *out) {
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int o = 0; o < c; o++) {
        double sum = 0;
        for (int i = 0; i < n; i++) sum += bf_cpu_lane_sum(x + ((size_t)i * c + o) * hw, hw);
        out[o] = (float)sum;
    }
}

bf_status bf_cpu_conv2d_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                        const float *dy, float *dw, float *dbias) {
    conv_geometry g;
    BF_TRY(conv_geometry_init(s, &g));
    /* The batch is cut into `blocks` contiguous blocks of images, as many as BF_CPU_GRAD_BLOCKS
     * allows whatever the thread count (cpu_backend.h: the same bits with any thread count). Block 0
     * accumulates straight into dw, block t > 0 into partial t-1; each thread has its own column
     * buffer. */
    int blocks = BF_CPU_GRAD_BLOCKS < s->n ? BF_CPU_GRAD_BLOCKS : s->n;
    int threads = bf_cpu_threads(b) < blocks ? bf_cpu_threads(b) : blocks;
    size_t w_floats = (size_t)s->c_out * g.k_g, partial_floats = bf_cpu_round_floats(w_floats);
    void *scratch = NULL;
    BF_TRY(bf_cpu_scratch(b, sizeof(float) * (g.col_floats * threads + partial_floats * (blocks - 1)), &scratch));
    float *cols = scratch, *partials = cols + g.col_floats * threads;

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < blocks; t++) {
        float *acc = t == 0 ? dw : partials + partial_floats * (t - 1);
        float *col = cols + g.col_floats * omp_get_thread_num();
        int begin = (int)((long)s->n * t / blocks), end = (int)((long)s->n * (t + 1) / blocks);
        for (int n = begin; n < end; n++)
            for (int grp = 0; grp < s->groups; grp++) {
                const float *x_g = x + ((size_t)n * s->c_in + (size_t)grp * g.cin_g) * g.hw_in;
                const float *dy_g = dy + ((size_t)n * s->c_out + (size_t)grp * g.cout_g) * g.hw_out;
                if (!g.direct) im2col(s, g.cin_g, x_g, col);
                /* acc_g (=|+=) dy_g * col^T: the first image of the block overwrites. */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.cout_g, g.k_g, g.hw_out, 1.0f, dy_g,
                            g.hw_out, g.direct ? x_g : col, g.hw_out, n == begin ? 0.0f : 1.0f,
                            acc + (size_t)grp * g.cout_g * g.k_g, g.k_g);
            }
    }
    /* dw += partials, always in block order. */
    int add_threads = w_floats >= BF_CPU_PARALLEL_MIN ? bf_cpu_threads(b) : 1;
#pragma omp parallel for num_threads(add_threads) schedule(static)
    for (size_t i = 0; i < w_floats; i++)
        for (int t = 1; t < blocks; t++) dw[i] += partials[partial_floats * (t - 1) + i];

    if (dbias) bf_cpu_channel_sum(b, s->n, s->c_out, (size_t)g.hw_out, dy, dbias);
    return BF_OK;
}

/* The CPU convolutions (im2col into their own scratch, OpenBLAS) take no workspace from outside. */
bf_status bf_cpu_conv_workspace_hint(bf_backend *b, void *p, size_t bytes) {
    (void)b;
    (void)p;
    (void)bytes;
    return BF_OK;
}
