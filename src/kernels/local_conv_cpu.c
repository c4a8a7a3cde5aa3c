/* local_conv_cpu.c - the locally connected 2-D layer on the CPU (contract in ops.h, bf_local_shape;
 * ../shared/specs/v1-constrained.md 3): a convolution whose k x k weights differ at every output
 * position. local_conv.cu is the CUDA twin.
 *
 * One GEMM per output position pos (P = h_out * w_out of them), K = c_in * k * k:
 *     forward:          y_pos[n, c_out]  = patches_pos[n, K] * W_pos[c_out, K]^T
 *     backward data:    dpatch_pos[n, K] = dy_pos[n, c_out] * W_pos, col2im'd onto dx
 *     backward filter:  dW_pos[c_out, K] = dy_pos^T * patches_pos
 * patches_pos row i is image i's zero-padded window at pos, column c*k*k + a*k + b (a the row
 * offset, b the column offset: the reference's unfold of rows then columns); W_pos is gathered from
 * the reference's layout w[c_out, c_in, h_out, w_out, k*k] (row o, column c*k*k + t is
 * w[((o*c_in + c)*P + pos)*k*k + t]) and dW_pos scattered back to it; y_pos and dy_pos are the
 * strided [n, c_out] slices of y and dy at pos.
 *
 * Threads take positions (OpenMP, static schedule; OpenBLAS single-threaded inside), each with its
 * own buffers in the backend's scratch: every position's output is written by one GEMM alone, so
 * the results do not depend on the thread count. The col2im of the backward data is the one place
 * where positions meet (an input element lies in several windows): the dpatches of a chunk of
 * positions are computed first, then each thread adds them onto whole (image, channel) planes of
 * dx, position by position in ascending order, so every dx element sums its contributions in
 * ascending position order whatever the thread count or chunk size (and in the same order as the
 * CUDA gather). */
#include <omp.h>
#include <string.h>

#include <cblas.h>

#include "cpu_backend.h"
#include "require.h"

/* The most floats a chunk of dpatches (backward data) holds: 16 MiB, or one position's. */
#define LOCAL_CHUNK_FLOATS ((size_t)1 << 22)

/* Sizes of one call, from a shape that bf_local_shape_init filled. */
typedef struct local_geometry {
    int P;    /* output positions h_out * w_out */
    int kk;   /* taps k * k */
    int K;    /* columns of a patch row: c_in * k * k */
} local_geometry;

static bf_status local_geometry_init(const char *op, const bf_local_shape *s, local_geometry *g) {
    if (!s) return bf_error(BF_ERR_ARG, "%s: NULL shape", op);
    bf_local_shape t = *s;
    if (s->n <= 0 || s->c_in <= 0 || s->c_out <= 0 || s->h_in <= 0 || s->w_in <= 0)
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d c_in=%d %dx%d c_out=%d (each must be > 0)", op, s->n,
                        s->c_in, s->h_in, s->w_in, s->c_out);
    if (bf_local_shape_init(&t) != BF_OK)
        return bf_error(BF_ERR_ARG, "%s: %s", op, bf_last_error());
    if (t.h_out != s->h_out || t.w_out != s->w_out)
        return bf_error(BF_ERR_ARG, "%s: output %dx%d, but k=%d stride=%d pad=%d on %dx%d give %dx%d (initialise the "
                        "shape with bf_local_shape_init)", op, s->h_out, s->w_out, s->k, s->stride, s->pad, s->h_in,
                        s->w_in, t.h_out, t.w_out);
    g->P = s->h_out * s->w_out;
    g->kk = s->k * s->k;
    g->K = s->c_in * g->kk;
    return BF_OK;
}

/* W_pos [c_out, K] from w [c_out, c_in, P, k*k]. */
static void gather_weights(const bf_local_shape *s, const local_geometry *g, const float *w, int pos, float *wp) {
    for (int o = 0; o < s->c_out; o++)
        for (int c = 0; c < s->c_in; c++)
            memcpy(wp + (size_t)o * g->K + (size_t)c * g->kk,
                   w + (((size_t)o * s->c_in + c) * g->P + pos) * g->kk, sizeof(float) * g->kk);
}

/* dW_pos [c_out, K] back into dw [c_out, c_in, P, k*k]. */
static void scatter_weights(const bf_local_shape *s, const local_geometry *g, const float *dwp, int pos, float *dw) {
    for (int o = 0; o < s->c_out; o++)
        for (int c = 0; c < s->c_in; c++)
            memcpy(dw + (((size_t)o * s->c_in + c) * g->P + pos) * g->kk,
                   dwp + (size_t)o * g->K + (size_t)c * g->kk, sizeof(float) * g->kk);
}

/* patches_pos [n, K]: each image's window at pos, padding as zeros, taps a*k + b. */
static void gather_patches(const bf_local_shape *s, const local_geometry *g, const float *x, int pos, float *pat) {
    const int k = s->k, row0 = (pos / s->w_out) * s->stride - s->pad, col0 = (pos % s->w_out) * s->stride - s->pad;
    for (int i = 0; i < s->n; i++)
        for (int c = 0; c < s->c_in; c++) {
            const float *plane = x + ((size_t)i * s->c_in + c) * s->h_in * s->w_in;
            float *dst = pat + (size_t)i * g->K + (size_t)c * g->kk;
            for (int a = 0; a < k; a++) {
                const int ih = row0 + a;
                if (ih < 0 || ih >= s->h_in) {
                    for (int b = 0; b < k; b++) dst[a * k + b] = 0.0f;
                    continue;
                }
                const float *src = plane + (size_t)ih * s->w_in;
                for (int b = 0; b < k; b++) {
                    const int iw = col0 + b;
                    dst[a * k + b] = iw >= 0 && iw < s->w_in ? src[iw] : 0.0f;
                }
            }
        }
}

/* The [n, c_out] slice at pos of t [n, c_out, P] into m, and back. */
static void slice_at(const bf_local_shape *s, const local_geometry *g, int pos, const float *t, float *m) {
    const size_t count = (size_t)s->n * s->c_out;
    for (size_t r = 0; r < count; r++) m[r] = t[r * g->P + pos];
}
static void unslice_at(const bf_local_shape *s, const local_geometry *g, int pos, const float *m, float *t) {
    const size_t count = (size_t)s->n * s->c_out;
    for (size_t r = 0; r < count; r++) t[r * g->P + pos] = m[r];
}

/* Scratch for `threads` threads, each with buffers of a, bb and c floats (each rounded to cache
 * lines: *per_thread floats in all), and `extra` floats after them. */
static bf_status thread_buffers(bf_backend *b, int threads, size_t a, size_t bb, size_t c, size_t extra, float **base,
                                size_t *per_thread) {
    *per_thread = bf_cpu_round_floats(a) + bf_cpu_round_floats(bb) + bf_cpu_round_floats(c);
    void *scratch = NULL;
    BF_TRY(bf_cpu_scratch(b, sizeof(float) * (*per_thread * (size_t)threads + extra), &scratch));
    *base = scratch;
    return BF_OK;
}

bf_status bf_cpu_local_forward(bf_backend *b, const bf_local_shape *s, const float *x, const float *w, float *y) {
    REQUIRE("local_forward", b, x, w, y);
    local_geometry g;
    BF_TRY(local_geometry_init("local_forward", s, &g));
    const int threads = bf_cpu_threads(b) < g.P ? bf_cpu_threads(b) : g.P;
    const size_t pat_n = (size_t)s->n * g.K, wp_n = (size_t)s->c_out * g.K, yp_n = (size_t)s->n * s->c_out;
    float *base;
    size_t per;
    BF_TRY(thread_buffers(b, threads, pat_n, wp_n, yp_n, 0, &base, &per));
#pragma omp parallel num_threads(threads)
    {
        float *pat = base + per * (size_t)omp_get_thread_num();
        float *wp = pat + bf_cpu_round_floats(pat_n), *yp = wp + bf_cpu_round_floats(wp_n);
#pragma omp for schedule(static)
        for (int pos = 0; pos < g.P; pos++) {
            gather_patches(s, &g, x, pos, pat);
            gather_weights(s, &g, w, pos, wp);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->n, s->c_out, g.K, 1.0f, pat, g.K, wp, g.K, 0.0f,
                        yp, s->c_out);
            unslice_at(s, &g, pos, yp, y);
        }
    }
    return BF_OK;
}

bf_status bf_cpu_local_backward_filter(bf_backend *b, const bf_local_shape *s, const float *x, const float *dy,
                                       float *dw) {
    REQUIRE("local_backward_filter", b, x, dy, dw);
    local_geometry g;
    BF_TRY(local_geometry_init("local_backward_filter", s, &g));
    const int threads = bf_cpu_threads(b) < g.P ? bf_cpu_threads(b) : g.P;
    const size_t pat_n = (size_t)s->n * g.K, dwp_n = (size_t)s->c_out * g.K, dyp_n = (size_t)s->n * s->c_out;
    float *base;
    size_t per;
    BF_TRY(thread_buffers(b, threads, pat_n, dwp_n, dyp_n, 0, &base, &per));
#pragma omp parallel num_threads(threads)
    {
        float *pat = base + per * (size_t)omp_get_thread_num();
        float *dwp = pat + bf_cpu_round_floats(pat_n), *dyp = dwp + bf_cpu_round_floats(dwp_n);
#pragma omp for schedule(static)
        for (int pos = 0; pos < g.P; pos++) {
            gather_patches(s, &g, x, pos, pat);
            slice_at(s, &g, pos, dy, dyp);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->c_out, g.K, s->n, 1.0f, dyp, s->c_out, pat, g.K,
                        0.0f, dwp, g.K);
            scatter_weights(s, &g, dwp, pos, dw);
        }
    }
    return BF_OK;
}

bf_status bf_cpu_local_backward_data(bf_backend *b, const bf_local_shape *s, const float *dy, const float *w,
                                     float *dx) {
    REQUIRE("local_backward_data", b, dy, w, dx);
    local_geometry g;
    BF_TRY(local_geometry_init("local_backward_data", s, &g));
    const int T = bf_cpu_threads(b);
    const size_t patch_n = (size_t)s->n * g.K, wp_n = (size_t)s->c_out * g.K, dyp_n = (size_t)s->n * s->c_out;
    const size_t patch_stride = bf_cpu_round_floats(patch_n);
    int chunk = (int)(LOCAL_CHUNK_FLOATS / patch_stride);
    if (chunk < 1) chunk = 1;
    if (chunk > g.P) chunk = g.P;
    float *base;
    size_t per;
    BF_TRY(thread_buffers(b, T, wp_n, dyp_n, 0, patch_stride * (size_t)chunk, &base, &per));
    float *dpatch = base + per * (size_t)T; /* [chunk][n, K] */
    const int planes = s->n * s->c_in, k = s->k, hw_in = s->h_in * s->w_in;
    for (int p0 = 0; p0 < g.P; p0 += chunk) {
        const int p1 = p0 + chunk < g.P ? p0 + chunk : g.P;
#pragma omp parallel num_threads(T)
        {
            float *wp = base + per * (size_t)omp_get_thread_num(), *dyp = wp + bf_cpu_round_floats(wp_n);
#pragma omp for schedule(static)
            for (int pos = p0; pos < p1; pos++) {
                gather_weights(s, &g, w, pos, wp);
                slice_at(s, &g, pos, dy, dyp);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, g.K, s->c_out, 1.0f, dyp, s->c_out, wp,
                            g.K, 0.0f, dpatch + (size_t)(pos - p0) * patch_stride, g.K);
            }
            /* col2im: each thread owns whole planes, positions added in ascending order */
#pragma omp for schedule(static)
            for (int pl = 0; pl < planes; pl++) {
                const int i = pl / s->c_in, c = pl % s->c_in;
                float *plane = dx + (size_t)pl * hw_in;
                if (p0 == 0) memset(plane, 0, sizeof(float) * (size_t)hw_in);
                for (int pos = p0; pos < p1; pos++) {
                    const float *src = dpatch + (size_t)(pos - p0) * patch_stride + (size_t)i * g.K + (size_t)c * g.kk;
                    const int row0 = (pos / s->w_out) * s->stride - s->pad, col0 = (pos % s->w_out) * s->stride - s->pad;
                    for (int a = 0; a < k; a++) {
                        const int ih = row0 + a;
                        if (ih < 0 || ih >= s->h_in) continue;
                        float *dst = plane + (size_t)ih * s->w_in;
                        for (int bb = 0; bb < k; bb++) {
                            const int iw = col0 + bb;
                            if (iw >= 0 && iw < s->w_in) dst[iw] += src[a * k + bb];
                        }
                    }
                }
            }
        }
    }
    return BF_OK;
}
