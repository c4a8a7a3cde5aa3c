/* conv_cpu.c - 2-D convolution (cross-correlation, PyTorch layout) on the CPU by im2col + sgemm.
 *
 * For one group, im2col unrolls the input of a tile of images into a column matrix
 * col[k_g, images * hw_out] with k_g = c_in/groups * k_h * k_w (image i in columns
 * [i * hw_out, (i + 1) * hw_out)), so that the convolution is one GEMM:
 *     forward:          y_g[c_out_g, cols] = w_g[c_out_g, k_g] * col
 *     backward data:    col = w_g^T * dy_g, then col2im scatters col back onto dx
 *     backward filter:  dw_g += dy_g * col^T, summed over the images
 * Tiles: OpenBLAS runs a GEMM with a few dozen columns at a third to a half of its speed with
 * hundreds (one core: 28 GFLOP/s at 4 columns, 49 at 16, 92 at 256), and the deep layers of a
 * CIFAR or MNIST network have 1-49 positions per image. So a tile holds enough images for about
 * 256 columns (one image where hw_out >= 256), chosen from the shape alone (conv_geometry_init),
 * never from the thread count, so that the results stay the same with any number of threads. y
 * and dy are [n, c_out, hw] (an image's channels apart), so a tile of several images goes through
 * a [c_out_g, cols] buffer of the thread. For one image, a 1x1 convolution with stride 1 and no
 * padding needs no unrolling: x itself is the column matrix. A batch with fewer than two tiles'
 * worth of columns in all (the last stages of a ResNet-18 on 32x32 images: 1-4 positions per
 * image) is one tile, its GEMM's output sliced for the threads (the *_whole_batch functions).
 *
 * Forward and backward data run one tile per thread (OpenBLAS single-threaded inside), each
 * thread with its own buffers in the backend's scratch memory. Backward filter sums over images,
 * so to stay deterministic each thread accumulates a fixed block of images (tile by tile) into its
 * own partial dw and the partials are added in block order. */
#include <omp.h>
#include <string.h>

#include <cblas.h>

#include "cpu_backend.h"

/* The column count a tile aims at: OpenBLAS is within 5 % of its peak from about 256 on. */
#define CONV_TILE_COLUMNS 256

/* Sizes of one group's GEMMs, derived once per call from the shape. */
typedef struct conv_geometry {
    int cin_g, cout_g; /* channels per group */
    int k_g;           /* rows of the column matrix: cin_g * k_h * k_w */
    int hw_in, hw_out;
    int whole_batch;   /* n * hw_out < 2 * CONV_TILE_COLUMNS: the whole batch in one GEMM, its output sliced */
    int images;        /* images per tile: the GEMMs' columns are images * hw_out */
    int tiles;         /* ceil(n / images); the last tile may hold fewer images */
    int pointwise;     /* 1x1, stride 1, pad 0: one image's input is its own column matrix */
    size_t col_floats; /* one thread's column buffer for a tile, rounded to cache lines */
    size_t tile_floats; /* one thread's [cout_g, cols] buffer for y or dy (tiles of several images) */
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
    /* Enough images for CONV_TILE_COLUMNS columns, but no more than keeps BF_CPU_GRAD_BLOCKS tiles
     * (the backward filter's blocks, and work for as many threads). */
    int images = (CONV_TILE_COLUMNS + g->hw_out - 1) / g->hw_out, per_block = s->n / BF_CPU_GRAD_BLOCKS;
    if (images > per_block) images = per_block;
    g->images = images < 1 ? 1 : images;
    g->tiles = (s->n + g->images - 1) / g->images;
    g->whole_batch = (long)s->n * g->hw_out < 2 * CONV_TILE_COLUMNS;
    g->pointwise = s->k_h == 1 && s->k_w == 1 && s->stride == 1 && s->pad == 0;
    const size_t cols = (size_t)g->images * g->hw_out;
    g->col_floats = g->pointwise && g->images == 1 ? 0 : bf_cpu_round_floats((size_t)g->k_g * cols);
    g->tile_floats = g->images == 1 ? 0 : bf_cpu_round_floats((size_t)g->cout_g * cols);
    return BF_OK;
}

/* Tile `tile`'s first image and image count. */
static int tile_images(const bf_conv2d_shape *s, const conv_geometry *g, int tile, int *first) {
    *first = tile * g->images;
    return s->n - *first < g->images ? s->n - *first : g->images;
}

/* Copies `rows` rows of `len` floats from a matrix with row stride src_ld to one with dst_ld:
 * one image's [channels, hw] block into a tile's [channels, cols] buffer at its columns, or back. */
static void copy_rows(int rows, int len, const float *src, size_t src_ld, float *dst, size_t dst_ld) {
    for (int r = 0; r < rows; r++) memcpy(dst + (size_t)r * dst_ld, src + (size_t)r * src_ld, sizeof(float) * len);
}

/* Unrolls cin_g channels of one image (x) into its hw_out columns of col (rows ld floats apart);
 * padding reads as zero. Row (c, ki, kj) of col holds, for every output position, the input under
 * kernel tap (ki, kj). The taps are the outer loops and the channels the inner one, so that the
 * clipped ranges (bf_cpu_valid_outputs: two divisions) are found once per tap, not per channel:
 * at 4x4 and 2x2 they cost more than the copies. */
static void im2col(const bf_conv2d_shape *s, int channels, const float *x, float *col, size_t ld) {
    const int stride = s->stride, w_in = s->w_in, w_out = s->w_out;
    for (int ki = 0; ki < s->k_h; ki++) {
        int oh_lo, oh_hi; /* the output rows whose input row under tap ki lies inside the image */
        bf_cpu_valid_outputs(s->h_in, s->h_out, stride, s->pad, ki, &oh_lo, &oh_hi);
        for (int kj = 0; kj < s->k_w; kj++) {
            int ow_lo, ow_hi;
            bf_cpu_valid_outputs(w_in, w_out, stride, s->pad, kj, &ow_lo, &ow_hi);
            const int offset = kj - s->pad; /* input column = ow*stride + offset */
            for (int c = 0; c < channels; c++) {
                float *row = col + ((size_t)(c * s->k_h + ki) * s->k_w + kj) * ld;
                const float *plane = x + (size_t)c * s->h_in * w_in;
                if (oh_lo > 0) memset(row, 0, sizeof(float) * (size_t)oh_lo * w_out);
                for (int oh = oh_lo; oh < oh_hi; oh++) {
                    float *dst = row + (size_t)oh * w_out;
                    const float *src = plane + (size_t)(oh * stride - s->pad + ki) * w_in;
                    for (int ow = 0; ow < ow_lo; ow++) dst[ow] = 0.0f;
                    if (stride == 1) /* a loop, not memcpy: rows of 2-8 floats are shorter than a call */
                        for (int ow = ow_lo; ow < ow_hi; ow++) dst[ow] = src[ow + offset];
                    else
                        for (int ow = ow_lo; ow < ow_hi; ow++) dst[ow] = src[ow * stride + offset];
                    for (int ow = ow_hi; ow < w_out; ow++) dst[ow] = 0.0f;
                }
                if (oh_hi < s->h_out)
                    memset(row + (size_t)oh_hi * w_out, 0, sizeof(float) * (size_t)(s->h_out - oh_hi) * w_out);
            }
        }
    }
}

/* The adjoint of im2col: adds every entry of one image's columns of col (rows ld floats apart)
 * onto the input position it was read from. dx (cin_g channels of one image) must be zeroed
 * first; entries from padding are dropped. The channel loop is inside the taps' as in im2col; an
 * input element still gets its taps' entries in (ki, kj) order, so the sums are the same. */
static void col2im(const bf_conv2d_shape *s, int channels, const float *col, size_t ld, float *dx) {
    const int stride = s->stride, w_in = s->w_in, w_out = s->w_out;
    for (int ki = 0; ki < s->k_h; ki++) {
        int oh_lo, oh_hi;
        bf_cpu_valid_outputs(s->h_in, s->h_out, stride, s->pad, ki, &oh_lo, &oh_hi);
        for (int kj = 0; kj < s->k_w; kj++) {
            int ow_lo, ow_hi;
            bf_cpu_valid_outputs(w_in, w_out, stride, s->pad, kj, &ow_lo, &ow_hi);
            const int offset = kj - s->pad; /* input column = ow*stride + offset */
            for (int c = 0; c < channels; c++) {
                const float *row = col + ((size_t)(c * s->k_h + ki) * s->k_w + kj) * ld;
                float *plane = dx + (size_t)c * s->h_in * w_in;
                for (int oh = oh_lo; oh < oh_hi; oh++) {
                    const float *src = row + (size_t)oh * w_out;
                    float *dst = plane + (size_t)(oh * stride - s->pad + ki) * w_in;
                    if (stride == 1) { /* unit stride: a loop the compiler vectorises; the same sums */
                        float *d = dst + offset;
                        for (int ow = ow_lo; ow < ow_hi; ow++) d[ow] += src[ow];
                    } else {
                        for (int ow = ow_lo; ow < ow_hi; ow++) dst[ow * stride + offset] += src[ow];
                    }
                }
            }
        }
    }
}

/* Scratch for `threads` threads: each one's column buffer, tile buffer and `extra` floats. */
static size_t thread_floats(const conv_geometry *g, size_t extra) { return g->col_floats + g->tile_floats + extra; }

/* ---- the whole batch in one GEMM per group ---- */

/* Every image's columns side by side, cin_g channels of group grp from x [n, c_in, hw_in]. */
static void im2col_batch(const bf_backend *b, const bf_conv2d_shape *s, const conv_geometry *g, int grp,
                         const float *x, float *col) {
    const size_t cols = (size_t)s->n * g->hw_out;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int i = 0; i < s->n; i++)
        im2col(s, g->cin_g, x + ((size_t)i * s->c_in + (size_t)grp * g->cin_g) * g->hw_in, col + (size_t)i * g->hw_out,
               cols);
}

/* Group grp's cout_g channels of every image of a [n, c_out, hw_out] tensor side by side in a
 * [cout_g, n * hw_out] matrix (to_side: from the tensor to the matrix), or back. */
static void side_by_side(const bf_backend *b, const bf_conv2d_shape *s, const conv_geometry *g, int grp,
                         const float *from, float *to, int to_side) {
    const size_t cols = (size_t)s->n * g->hw_out;
#pragma omp parallel for num_threads(bf_cpu_threads(b)) schedule(static)
    for (int i = 0; i < s->n; i++) {
        const size_t image = ((size_t)i * s->c_out + (size_t)grp * g->cout_g) * g->hw_out, at = (size_t)i * g->hw_out;
        if (to_side) copy_rows(g->cout_g, g->hw_out, from + image, (size_t)g->hw_out, to + at, cols);
        else copy_rows(g->cout_g, g->hw_out, from + at, cols, to + image, (size_t)g->hw_out);
    }
}

/* A whole batch's buffers in the backend's scratch: col [k_g, cols], side [cout_g, cols] (y or dy
 * side by side) and `extra` floats after them (*extra_at). */
static bf_status whole_batch_buffers(bf_backend *b, const bf_conv2d_shape *s, const conv_geometry *g, size_t extra,
                                     float **col, float **side, float **extra_at) {
    const size_t cols = (size_t)s->n * g->hw_out, col_floats = bf_cpu_round_floats((size_t)g->k_g * cols);
    const size_t side_floats = bf_cpu_round_floats((size_t)g->cout_g * cols);
    void *scratch = NULL;
    BF_TRY(bf_cpu_scratch(b, sizeof(float) * (col_floats + side_floats + extra), &scratch));
    *col = scratch;
    *side = *col + col_floats;
    if (extra_at) *extra_at = *side + side_floats;
    return BF_OK;
}

static bf_status forward_whole_batch(bf_backend *b, const bf_conv2d_shape *s, const conv_geometry *g, const float *x,
                                     const float *w, const float *bias, float *y) {
    const size_t cols = (size_t)s->n * g->hw_out;
    float *col, *out;
    BF_TRY(whole_batch_buffers(b, s, g, 0, &col, &out, NULL));
    for (int grp = 0; grp < s->groups; grp++) {
        im2col_batch(b, s, g, grp, x, col);
        if (bias) /* out starts as the bias and the GEMM adds onto it, as in the tiles */
            for (int o = 0; o < g->cout_g; o++)
                for (size_t i = 0; i < cols; i++) out[(size_t)o * cols + i] = bias[grp * g->cout_g + o];
        const float *w_g = w + (size_t)grp * g->cout_g * g->k_g;
        bf_cpu_parallel_sgemm(b, CblasNoTrans, CblasNoTrans, g->cout_g, (int)cols, g->k_g, w_g, g->k_g, col, (int)cols,
                              bias ? 1.0f : 0.0f, out, (int)cols);
        side_by_side(b, s, g, grp, out, y, 0);
    }
    return BF_OK;
}

/* backward_data's contract (add: dx += the result, one rounding per element). */
static bf_status backward_data_whole_batch(bf_backend *b, const bf_conv2d_shape *s, const conv_geometry *g,
                                           const float *dy, const float *w, float *dx, int add) {
    const size_t cols = (size_t)s->n * g->hw_out;
    const size_t sum_floats = add ? bf_cpu_round_floats((size_t)g->cin_g * g->hw_in) : 0;
    const int threads = bf_cpu_threads(b);
    float *col, *dy_side, *sums; /* sums: a result per thread to add onto dx */
    BF_TRY(whole_batch_buffers(b, s, g, sum_floats * threads, &col, &dy_side, &sums));
    for (int grp = 0; grp < s->groups; grp++) {
        side_by_side(b, s, g, grp, dy, dy_side, 1);
        const float *w_g = w + (size_t)grp * g->cout_g * g->k_g;
        bf_cpu_parallel_sgemm(b, CblasTrans, CblasNoTrans, g->k_g, (int)cols, g->cout_g, w_g, g->k_g, dy_side, (int)cols,
                              0.0f, col, (int)cols);
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int i = 0; i < s->n; i++) {
            float *dx_g = dx + ((size_t)i * s->c_in + (size_t)grp * g->cin_g) * g->hw_in;
            float *result = add ? sums + sum_floats * omp_get_thread_num() : dx_g;
            memset(result, 0, sizeof(float) * g->cin_g * g->hw_in);
            col2im(s, g->cin_g, col + (size_t)i * g->hw_out, cols, result);
            if (add)
                for (size_t j = 0; j < (size_t)g->cin_g * g->hw_in; j++) dx_g[j] += result[j];
        }
    }
    return BF_OK;
}

bf_status bf_cpu_conv2d_forward(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                const float *w, const float *bias, float *y) {
    conv_geometry g;
    BF_TRY(conv_geometry_init(s, &g));
    int done;
    BF_TRY(bf_cpu_onednn_conv_forward(b, s, x, w, bias, y, &done));
    if (done) return BF_OK;
    if (g.whole_batch) return forward_whole_batch(b, s, &g, x, w, bias, y);
    int threads = bf_cpu_threads(b);
    const size_t per_thread = thread_floats(&g, 0);
    void *scratch = NULL;
    if (per_thread) BF_TRY(bf_cpu_scratch(b, sizeof(float) * per_thread * threads, &scratch));

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int tile = 0; tile < g.tiles; tile++) {
        float *col = per_thread ? (float *)scratch + per_thread * omp_get_thread_num() : NULL;
        float *out = col ? col + g.col_floats : NULL;
        int first, count = tile_images(s, &g, tile, &first);
        const size_t cols = (size_t)count * g.hw_out;
        for (int grp = 0; grp < s->groups; grp++) {
            const float *x_g = x + ((size_t)first * s->c_in + (size_t)grp * g.cin_g) * g.hw_in;
            float *y_g = y + ((size_t)first * s->c_out + (size_t)grp * g.cout_g) * g.hw_out;
            const float *w_g = w + (size_t)grp * g.cout_g * g.k_g;
            if (g.col_floats)
                for (int i = 0; i < count; i++)
                    im2col(s, g.cin_g, x_g + (size_t)i * s->c_in * g.hw_in, col + (size_t)i * g.hw_out, cols);
            float *target = count == 1 ? y_g : out; /* [cout_g, cols] */
            /* With a bias, y starts as the bias and the GEMM adds onto it (beta = 1). */
            float beta = 0.0f;
            if (bias) {
                for (int o = 0; o < g.cout_g; o++) {
                    float value = bias[grp * g.cout_g + o], *row = target + (size_t)o * cols;
                    for (size_t i = 0; i < cols; i++) row[i] = value;
                }
                beta = 1.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.cout_g, (int)cols, g.k_g, 1.0f, w_g, g.k_g,
                        g.col_floats ? col : x_g, (int)cols, beta, target, (int)cols);
            if (count > 1)
                for (int i = 0; i < count; i++)
                    copy_rows(g.cout_g, g.hw_out, out + (size_t)i * g.hw_out, cols,
                              y_g + (size_t)i * s->c_out * g.hw_out, (size_t)g.hw_out);
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
    int done;
    BF_TRY(bf_cpu_onednn_conv_backward_data(b, s, dy, w, dx, add, &done));
    if (done) return BF_OK;
    if (g.whole_batch) return backward_data_whole_batch(b, s, &g, dy, w, dx, add);
    int threads = bf_cpu_threads(b);
    const size_t sum_floats = add ? bf_cpu_round_floats((size_t)g.cin_g * g.hw_in) : 0;
    const size_t per_thread = thread_floats(&g, sum_floats);
    void *scratch = NULL;
    if (per_thread) BF_TRY(bf_cpu_scratch(b, sizeof(float) * per_thread * threads, &scratch));

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int tile = 0; tile < g.tiles; tile++) {
        float *col = per_thread ? (float *)scratch + per_thread * omp_get_thread_num() : NULL;
        float *dy_tile = col ? col + g.col_floats : NULL, *sum = col ? dy_tile + g.tile_floats : NULL;
        int first, count = tile_images(s, &g, tile, &first);
        const size_t cols = (size_t)count * g.hw_out;
        for (int grp = 0; grp < s->groups; grp++) {
            const float *dy_g = dy + ((size_t)first * s->c_out + (size_t)grp * g.cout_g) * g.hw_out;
            const float *w_g = w + (size_t)grp * g.cout_g * g.k_g;
            if (count > 1) /* dy of the tile's images side by side: [cout_g, cols] */
                for (int i = 0; i < count; i++)
                    copy_rows(g.cout_g, g.hw_out, dy_g + (size_t)i * s->c_out * g.hw_out, (size_t)g.hw_out,
                              dy_tile + (size_t)i * g.hw_out, cols);
            float *dx_first = dx + ((size_t)first * s->c_in + (size_t)grp * g.cin_g) * g.hw_in;
            /* col = w_g^T * dy; for one pointwise image col is the result itself. */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.k_g, (int)cols, g.cout_g, 1.0f, w_g, g.k_g,
                        count > 1 ? dy_tile : dy_g, (int)cols, 0.0f, g.col_floats ? col : add ? sum : dx_first,
                        (int)cols);
            for (int i = 0; i < count; i++) {
                float *dx_g = dx_first + (size_t)i * s->c_in * g.hw_in, *result = add ? sum : dx_g;
                if (g.col_floats) {
                    memset(result, 0, sizeof(float) * g.cin_g * g.hw_in);
                    col2im(s, g.cin_g, col + (size_t)i * g.hw_out, cols, result);
                }
                if (add)
                    for (size_t j = 0; j < (size_t)g.cin_g * g.hw_in; j++) dx_g[j] += sum[j];
            }
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

/* The weight gradient of a whole batch (g->whole_batch) in one GEMM per group over all its columns.
 * Cut by images instead, each block's GEMM had a few columns of reduction, wrote a whole partial dw
 * and had it added (a ResNet-18 at 32x32, batch 64: half the CPU step). */
static bf_status backward_filter_whole_batch(bf_backend *b, const bf_conv2d_shape *s, const conv_geometry *g,
                                             const float *x, const float *dy, float *dw) {
    const size_t cols = (size_t)s->n * g->hw_out;
    float *col, *dy_side;
    BF_TRY(whole_batch_buffers(b, s, g, 0, &col, &dy_side, NULL));
    for (int grp = 0; grp < s->groups; grp++) {
        im2col_batch(b, s, g, grp, x, col);
        side_by_side(b, s, g, grp, dy, dy_side, 1);
        bf_cpu_parallel_sgemm(b, CblasNoTrans, CblasTrans, g->cout_g, g->k_g, (int)cols, dy_side, (int)cols, col,
                              (int)cols, 0.0f, dw + (size_t)grp * g->cout_g * g->k_g, g->k_g);
    }
    return BF_OK;
}

bf_status bf_cpu_conv2d_backward_filter(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                        const float *dy, float *dw, float *dbias) {
    conv_geometry g;
    BF_TRY(conv_geometry_init(s, &g));
    /* oneDNN's kernels where they take it (conv_onednn_cpu.c), else a batch too small for two
     * blocks in one GEMM */
    int done;
    BF_TRY(bf_cpu_onednn_conv_backward_filter(b, s, x, dy, dw, &done));
    if (done || g.whole_batch) {
        if (!done) BF_TRY(backward_filter_whole_batch(b, s, &g, x, dy, dw));
        if (dbias) bf_cpu_channel_sum(b, s->n, s->c_out, (size_t)g.hw_out, dy, dbias);
        return BF_OK;
    }
    /* The batch is cut into `blocks` contiguous blocks of images, as many as BF_CPU_GRAD_BLOCKS
     * allows with CONV_TILE_COLUMNS columns or more each, whatever the thread count (cpu_backend.h:
     * the same bits with any thread count), each taken a tile of at most g.images images at a time.
     * Block 0 accumulates straight into dw, block t > 0 into partial t-1; each thread has its own
     * column and tile buffers. */
    const long column_blocks = (long)s->n * g.hw_out / CONV_TILE_COLUMNS; /* >= 2: not a whole batch */
    int blocks = column_blocks < BF_CPU_GRAD_BLOCKS ? (int)column_blocks : BF_CPU_GRAD_BLOCKS;
    if (blocks > s->n) blocks = s->n;
    int threads = bf_cpu_threads(b) < blocks ? bf_cpu_threads(b) : blocks;
    size_t w_floats = (size_t)s->c_out * g.k_g, partial_floats = bf_cpu_round_floats(w_floats);
    const size_t per_thread = thread_floats(&g, 0);
    void *scratch = NULL;
    BF_TRY(bf_cpu_scratch(b, sizeof(float) * (per_thread * threads + partial_floats * (blocks - 1)), &scratch));
    float *cols_buf = scratch, *partials = cols_buf + per_thread * threads;

#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < blocks; t++) {
        float *acc = t == 0 ? dw : partials + partial_floats * (t - 1);
        float *col = cols_buf + per_thread * omp_get_thread_num(), *dy_tile = col + g.col_floats;
        int begin = (int)((long)s->n * t / blocks), end = (int)((long)s->n * (t + 1) / blocks);
        for (int first = begin; first < end; first += g.images) {
            const int count = end - first < g.images ? end - first : g.images;
            const size_t cols = (size_t)count * g.hw_out;
            for (int grp = 0; grp < s->groups; grp++) {
                const float *x_g = x + ((size_t)first * s->c_in + (size_t)grp * g.cin_g) * g.hw_in;
                const float *dy_g = dy + ((size_t)first * s->c_out + (size_t)grp * g.cout_g) * g.hw_out;
                for (int i = 0; i < count; i++) {
                    if (g.col_floats)
                        im2col(s, g.cin_g, x_g + (size_t)i * s->c_in * g.hw_in, col + (size_t)i * g.hw_out, cols);
                    if (count > 1)
                        copy_rows(g.cout_g, g.hw_out, dy_g + (size_t)i * s->c_out * g.hw_out, (size_t)g.hw_out,
                                  dy_tile + (size_t)i * g.hw_out, cols);
                }
                /* acc_g (=|+=) dy * col^T over the tile's columns: the block's first tile overwrites. */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.cout_g, g.k_g, (int)cols, 1.0f,
                            count > 1 ? dy_tile : dy_g, (int)cols, g.col_floats ? col : x_g, (int)cols,
                            first == begin ? 0.0f : 1.0f, acc + (size_t)grp * g.cout_g * g.k_g, g.k_g);
            }
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
