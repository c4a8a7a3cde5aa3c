/* polar_map.c - the polar transform's masks and its 256 x 1024 operator (polar_map.h).
 *
 * Everything is computed in double and stored as float. Where the reference's float32 arithmetic
 * could decide something, it does not here (checked against bench/make_polar_fixture.py):
 *   - rings: the reference compares float32 sqrt(x^2 + y^2) with integer edges; comparing the
 *     integers x^2 + y^2 with squared edges gives the same bins, exactly;
 *   - wedges: the reference compares float32 angles with float32-rounded numpy.linspace edges;
 *     every pixel's angle is at least 2.2e-4 rad from every edge except the exact hits of y = 0
 *     (angle 0 and pi, also exact in double and equal to their edges), so double bins the same;
 *   - the resampled masks differ from the reference's float32 ones by < 1e-6, far from a float16
 *     rounding boundary: rounded to float16 they are bit-equal, and so are the counts. */
#include <math.h>
#include <stdlib.h>

#include "polar_map.h"

enum {
    PIXELS = BF_POLAR_IN_SIZE * BF_POLAR_IN_SIZE,
    MASKS = BF_POLAR_RINGS * BF_POLAR_WEDGES,
    CENTRE = BF_POLAR_IN_SIZE / 2,
    /* rings from this lower edge on stay as binned: they lie partly outside the inscribed circle */
    LAST_RESAMPLED_EDGE = BF_POLAR_IN_SIZE / 2,
};

static const double PI = 3.14159265358979323846;

/* Radius bin edges: 1-pixel rings in the fovea, widening in the periphery. */
static const int RING_EDGES[BF_POLAR_RINGS + 1] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 23};

/* Angle edge j as numpy.linspace(0, 2 pi, 31) computes it (j * step, the last one exactly 2 pi). */
static double angle_edge(int j) {
    return j == BF_POLAR_WEDGES ? 2 * PI : j * (2 * PI / BF_POLAR_WEDGES);
}

/* The ring and wedge of every pixel (half-open bins). x = col - 16 to the right, y = 16 - row up,
 * angle counter-clockwise from +x in [0, 2 pi). Every pixel is within 23 of the centre. */
static void bin_pixels(int ring_of[PIXELS], int wedge_of[PIXELS]) {
    for (int row = 0; row < BF_POLAR_IN_SIZE; row++)
        for (int col = 0; col < BF_POLAR_IN_SIZE; col++) {
            const int x = col - CENTRE, y = CENTRE - row, p = row * BF_POLAR_IN_SIZE + col;
            const int squared = x * x + y * y;
            int ring = 0;
            while (ring + 1 < BF_POLAR_RINGS && RING_EDGES[ring + 1] * RING_EDGES[ring + 1] <= squared) ring++;
            double angle = atan2((double)y, (double)x);
            if (y < 0) angle += 2 * PI;
            int wedge = 0;
            while (wedge + 1 < BF_POLAR_WEDGES && angle_edge(wedge + 1) <= angle) wedge++;
            ring_of[p] = ring, wedge_of[p] = wedge;
        }
}

/* v rounded to the nearest float16 (ties to even), as a float: what .half() keeps of a mask. */
static float round_to_half(double v) {
    if (v == 0 || !isfinite(v)) return (float)v;
    double r;
    if (fabs(v) < 0x1p-14) {
        r = rint(v * 0x1p24) * 0x1p-24; /* subnormal halves: a fixed quantum of 2^-24 */
    } else {
        int e;
        const double m = frexp(v, &e); /* v = m 2^e, |m| in [0.5, 1): 11 significant bits in a half */
        r = ldexp(rint(ldexp(m, 11)), e - 11);
    }
    return fabs(r) > 65504 ? (float)copysign(INFINITY, v) : (float)r;
}

void bf_polar_masks(float *masks, float *counts) {
    int ring_of[PIXELS], wedge_of[PIXELS];
    bin_pixels(ring_of, wedge_of);
    for (int ring = 0; ring < BF_POLAR_RINGS; ring++) {
        /* the ring's non-empty wedges in order: the sequence that is resampled to 30 */
        int nonempty[BF_POLAR_WEDGES], m = 0;
        for (int wedge = 0; wedge < BF_POLAR_WEDGES; wedge++) {
            int used = 0;
            for (int p = 0; p < PIXELS && !used; p++) used = ring_of[p] == ring && wedge_of[p] == wedge;
            if (used) nonempty[m++] = wedge;
        }
        const int resampled = RING_EDGES[ring] <= LAST_RESAMPLED_EDGE;
        for (int wedge = 0; wedge < BF_POLAR_WEDGES; wedge++) {
            /* mask = w0 (source wedge a) + w1 (source wedge b): PyTorch's 1-D linear interpolation,
             * align_corners=False (source (j + 0.5) m / 30 - 0.5, clamped at 0, right neighbour
             * capped at m - 1); a ring left as binned is its own wedge with weight 1 */
            int a = wedge, b = wedge;
            double w0 = 1, w1 = 0;
            if (resampled) {
                const double source = fmax((wedge + 0.5) * m / BF_POLAR_WEDGES - 0.5, 0);
                const int left = (int)source;
                w1 = source - left, w0 = 1 - w1;
                a = nonempty[left], b = nonempty[left + 1 < m ? left + 1 : m - 1];
            }
            float *mask = masks + (size_t)(ring * BF_POLAR_WEDGES + wedge) * PIXELS;
            double count = 0;
            for (int p = 0; p < PIXELS; p++) {
                double v = 0;
                if (ring_of[p] == ring) v = (wedge_of[p] == a) * w0 + (wedge_of[p] == b) * w1;
                count += v;
                mask[p] = round_to_half(v);
            }
            /* the count of the unrounded mask, rounded itself: the reference sums before .half() */
            counts[ring * BF_POLAR_WEDGES + wedge] = round_to_half(count == 0 ? 1 : count);
        }
    }
}

/* The 1-D resize weights of torch's upsample_bilinear2d (antialias 0) or _upsample_bilinear2d_aa
 * (antialias 1) along one axis, align_corners=False: w[o * n_in + i] for output o, input i. */
static void resize_weights(int n_in, int n_out, int antialias, double *w) {
    const double scale = (double)n_in / n_out;
    for (int i = 0; i < n_out * n_in; i++) w[i] = 0;
    for (int o = 0; o < n_out; o++) {
        double *row = w + (size_t)o * n_in;
        if (!antialias) { /* the two nearest inputs around the source position */
            const double source = fmax(scale * (o + 0.5) - 0.5, 0);
            const int left = (int)source, right = left + 1 < n_in ? left + 1 : n_in - 1;
            const double t = source - left;
            row[left] += 1 - t, row[right] += t;
            continue;
        }
        /* a triangle filter stretched by the scale when shrinking (support = scale, else 1), over
         * the inputs whose centres fall within the support, normalised to sum 1 */
        const double support = scale >= 1 ? scale : 1, inverse = scale >= 1 ? 1 / scale : 1;
        const double centre = scale * (o + 0.5);
        int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > n_in) hi = n_in;
        double total = 0;
        for (int i = lo; i < hi; i++) {
            const double d = fabs((i - centre + 0.5) * inverse);
            row[i] = d < 1 ? 1 - d : 0;
            total += row[i];
        }
        if (total != 0)
            for (int i = lo; i < hi; i++) row[i] /= total;
    }
}

/* Index i of a reflect-padded axis (pad 1) in the unpadded axis of n: -1 -> 1, n -> n - 2. */
static int reflect(int i, int n) { return i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i; }

/* Index i of a circularly padded axis (pad 1): -1 -> n - 1, n -> 0. */
static int wrap(int i, int n) { return i < 0 ? i + n : i >= n ? i - n : i; }

bf_status bf_polar_operator(const bf_polar_options *opt, float *op) {
    if (!opt || !op || opt->padding < 0 || opt->padding > 2 || (opt->antialias != 0 && opt->antialias != 1))
        return bf_error(BF_ERR_ARG, "polar operator: options %s (padding 0, 1 or 2, antialias 0 or 1), output %s",
                        opt ? "given" : "missing", op ? "given" : "missing");
    const int pad_rings = opt->padding == 1;
    enum { WIDTH = BF_POLAR_WEDGES + 2, MAX_HEIGHT = BF_POLAR_RINGS + 2 };
    const int height = BF_POLAR_RINGS + 2 * pad_rings; /* the padded polar map's rows */
    float *masks = malloc((size_t)MASKS * PIXELS * sizeof *masks);
    if (!masks) return bf_error(BF_ERR_OOM, "polar operator: out of host memory for the masks");
    float counts[MASKS];
    bf_polar_masks(masks, counts);
    double row_w[BF_POLAR_OUT_SIZE * MAX_HEIGHT], col_w[BF_POLAR_OUT_SIZE * WIDTH], acc[PIXELS];
    resize_weights(height, BF_POLAR_OUT_SIZE, opt->antialias, row_w);
    resize_weights(WIDTH, BF_POLAR_OUT_SIZE, opt->antialias, col_w);
    for (int out_row = 0; out_row < BF_POLAR_OUT_SIZE; out_row++)
        for (int out_col = 0; out_col < BF_POLAR_OUT_SIZE; out_col++) {
            for (int p = 0; p < PIXELS; p++) acc[p] = 0;
            for (int k = 0; k < height; k++) {
                const double wr = row_w[out_row * height + k];
                if (wr == 0) continue;
                const int ring = pad_rings ? reflect(k - 1, BF_POLAR_RINGS) : k;
                for (int l = 0; l < WIDTH; l++) {
                    const double wc = col_w[out_col * WIDTH + l];
                    if (wc == 0) continue;
                    const int wedge = opt->padding == 2 ? wrap(l - 1, BF_POLAR_WEDGES) : reflect(l - 1, BF_POLAR_WEDGES);
                    const int bin = ring * BF_POLAR_WEDGES + wedge;
                    /* pooled = sum(x * mask) / count: pixel p's share of this bin is mask[p] / count */
                    const double w = wr * wc / counts[bin];
                    const float *mask = masks + (size_t)bin * PIXELS;
                    for (int p = 0; p < PIXELS; p++) acc[p] += w * mask[p];
                }
            }
            float *row = op + (size_t)(out_row * BF_POLAR_OUT_SIZE + out_col) * PIXELS;
            for (int p = 0; p < PIXELS; p++) row[p] = (float)acc[p];
        }
    free(masks);
    return BF_OK;
}
