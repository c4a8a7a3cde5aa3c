/* test_polar_map.c - the V1-constrained ResNet-50's polar transform (polar_map.h, spec
 * v1-constrained.md section 5):
 *   - the masks against the spec's per-ring table (section 5.3): pixels per ring, non-empty wedges
 *     before the resampling (the distinct weight profiles of the ring's pixels), counts' min/max and
 *     the ring's total weight; 40 all-zero masks, total weight 1131 covering all 1024 pixels;
 *   - the fp16 masks and counts bit-equal to PyTorch's, and the operator applied to a random input
 *     against PyTorch's forward for the 6 variants (polar_padding angle, both or circular, antialias
 *     or not), from tests/fixtures/polar_transform.safetensors (bench/make_polar_fixture.py);
 *   - the layer itself (layer_v1.c: the operator uploaded at finalize, one GEMM forward, the
 *     transposed GEMM backward) in a one-layer model over channel 0 of the fixture's input, for each
 *     of the 6 variants: its forward against PyTorch's, its input gradient of the fixture's upstream
 *     gradient against PyTorch's autograd through the resize, the padding and the mask sum, and
 *     against central differences of the model's own forward (bf_test_logits_dot_slope) at the
 *     pixels the padding reaches (the wedges next to angle 0, the centre, the outer rings) and a
 *     spread of others;
 *   - a constant map: every output in the rows fed by the full rings within fp16 rounding of the
 *     constant, the outputs fed only by empty wedges exactly 0 (the reference's list, per variant),
 *     no entry negative and no output above the constant;
 *   - bad options refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "parity_util.h"
#include "polar_map.h"
#include "testutil.h"

#ifndef BIOFLEX_SOURCE_DIR
#define BIOFLEX_SOURCE_DIR "."
#endif

enum { PIXELS = 1024, MASKS = BF_POLAR_RINGS * BF_POLAR_WEDGES, OUTPUTS = 256 };

/* Section 5.3's table: ring, pixels, non-empty wedges M, counts' min and max, total weight. */
static const struct {
    const char *ring;
    int pixels, nonempty;
    double count_min, count_max, total;
} RING_TABLE[BF_POLAR_RINGS] = {
    {"[0,1)", 1, 1, 1, 1, 30},       {"[1,2)", 8, 8, 1, 1, 30},       {"[2,3)", 16, 16, 1, 1, 30},
    {"[3,4)", 20, 20, 1, 1, 30},     {"[4,5)", 24, 24, 1, 1, 30},     {"[5,6)", 40, 30, 1, 2, 40},
    {"[6,7)", 36, 30, 1, 2, 36},     {"[7,8)", 48, 30, 1, 2, 48},     {"[8,9)", 56, 30, 1, 3, 56},
    {"[9,10)", 56, 30, 1, 3, 56},    {"[10,11)", 68, 30, 2, 3, 68},   {"[11,12)", 64, 30, 2, 3, 64},
    {"[12,13)", 80, 30, 2, 3, 80},   {"[13,14)", 92, 30, 2, 4, 92},   {"[14,16)", 184, 30, 5, 7, 184},
    {"[16,18)", 134, 25, 1, 7.833, 160}, {"[18,20)", 68, 14, 1, 8, 68}, {"[20,23)", 29, 6, 1, 9, 29},
};

/* The pixels a ring's 30 masks weigh, and how many distinct weight profiles (the 30 weights of a
 * pixel) they have: pixels of one source wedge share a profile, so that is M. */
static void ring_pixels(const float *masks, int ring, int *pixels, int *profiles) {
    const float *block = masks + (size_t)ring * BF_POLAR_WEDGES * PIXELS;
    int seen[PIXELS], n = 0, distinct = 0;
    for (int p = 0; p < PIXELS; p++) {
        int used = 0;
        for (int w = 0; w < BF_POLAR_WEDGES && !used; w++) used = block[w * PIXELS + p] != 0;
        if (!used) continue;
        int same = 0;
        for (int i = 0; i < n && !same; i++) {
            same = 1;
            for (int w = 0; w < BF_POLAR_WEDGES && same; w++) same = block[w * PIXELS + p] == block[w * PIXELS + seen[i]];
        }
        distinct += !same;
        seen[n++] = p;
    }
    *pixels = n, *profiles = distinct;
}

static void check_table(const float *masks, const float *counts) {
    int zero_masks = 0, covered = 0;
    double total = 0;
    for (int ring = 0; ring < BF_POLAR_RINGS; ring++) {
        int pixels, profiles;
        ring_pixels(masks, ring, &pixels, &profiles);
        double lo = INFINITY, hi = 0, sum = 0;
        for (int w = 0; w < BF_POLAR_WEDGES; w++) {
            const int m = ring * BF_POLAR_WEDGES + w;
            double s = 0;
            for (int p = 0; p < PIXELS; p++) s += masks[(size_t)m * PIXELS + p];
            zero_masks += s == 0;
            sum += s;
            lo = fmin(lo, counts[m]), hi = fmax(hi, counts[m]);
        }
        CHECK(pixels == RING_TABLE[ring].pixels && profiles == RING_TABLE[ring].nonempty,
              "ring %s: %d pixels, %d non-empty wedges (the table: %d, %d)", RING_TABLE[ring].ring, pixels, profiles,
              RING_TABLE[ring].pixels, RING_TABLE[ring].nonempty);
        /* the table's counts and sums are before the fp16 rounding: 7.833 is 7.83203125 in fp16, and
         * the ring's 30 masks sum to within 30 half-ulps of the exact total */
        CHECK_CLOSE(lo, RING_TABLE[ring].count_min, 1e-3, 0, RING_TABLE[ring].ring);
        CHECK_CLOSE(hi, RING_TABLE[ring].count_max, 2e-3, 0, RING_TABLE[ring].ring);
        CHECK_CLOSE(sum, RING_TABLE[ring].total, 0.02, 0, RING_TABLE[ring].ring);
        total += sum;
    }
    for (int p = 0; p < PIXELS; p++) {
        int used = 0;
        for (int m = 0; m < MASKS && !used; m++) used = masks[(size_t)m * PIXELS + p] != 0;
        covered += used;
    }
    CHECK(zero_masks == 40, "40 all-zero masks (16 + 24 in the two outer rings): %d", zero_masks);
    CHECK(covered == PIXELS, "every pixel weighed by some mask: %d of %d", covered, PIXELS);
    CHECK_CLOSE(total, 1131, 0.1, 0, "the masks' total weight");
}

static const struct {
    const char *name; /* out.<name> in the fixture */
    bf_polar_options options;
    int last_full_row; /* the last output row fed only by rings without empty wedges */
    int zeros;         /* outputs fed only by empty wedges, as row * 16 + col, in the reference */
    int zero_at[14];
} VARIANTS[6] = {
    {"angle", {.padding = 0, .antialias = 0}, 13, 7, {240, 244, 247, 248, 251, 252, 255}},
    {"angle_aa", {.padding = 0, .antialias = 1}, 13, 3, {240, 251, 255}},
    {"both", {.padding = 1, .antialias = 0}, 12, 14,
     {224, 228, 231, 232, 235, 236, 239, 240, 244, 247, 248, 251, 252, 255}},
    {"both_aa", {.padding = 1, .antialias = 1}, 12, 6, {224, 235, 239, 240, 251, 255}},
    /* the wedges wrapped around (F.pad mode "circular"): bioflex's polar_padding = circular */
    {"circular", {.padding = 2, .antialias = 0}, 13, 7, {240, 244, 247, 248, 251, 252, 255}},
    {"circular_aa", {.padding = 2, .antialias = 1}, 13, 3, {240, 251, 255}},
};

/* A constant map of 1 through the operator: what section 5.3's masks make of it. */
static void check_constant(const float *op, int v) {
    int negative = 0, zeros = 0, listed = 0, zero_rows = 0;
    double worst_full = 0, highest = 0;
    for (int o = 0; o < OUTPUTS; o++) {
        double out = 0;
        int all_zero = 1;
        for (int p = 0; p < PIXELS; p++) {
            const float w = op[(size_t)o * PIXELS + p];
            out += w, negative += w < 0, all_zero &= w == 0;
        }
        zero_rows += all_zero;
        highest = fmax(highest, out);
        if (o / BF_POLAR_OUT_SIZE <= VARIANTS[v].last_full_row) worst_full = fmax(worst_full, fabs(out - 1));
        if (out == 0) {
            zeros++;
            for (int i = 0; i < VARIANTS[v].zeros; i++) listed += VARIANTS[v].zero_at[i] == o;
        }
    }
    printf("%-8s constant 1: rows 0..%d within %.2g of 1, %d outputs 0, largest %.7g\n", VARIANTS[v].name,
           VARIANTS[v].last_full_row, worst_full, zeros, highest);
    CHECK(negative == 0, "%s: %d negative operator entries", VARIANTS[v].name, negative);
    /* fp16 masks summed against an fp16 count of the unrounded sum: 1 within a few 1e-4, not exactly */
    CHECK(worst_full <= 5e-4, "%s: a constant map stays constant in rows 0..%d: off by %g", VARIANTS[v].name,
          VARIANTS[v].last_full_row, worst_full);
    CHECK(highest <= 1 + 5e-4, "%s: no output above the constant: %.7g", VARIANTS[v].name, highest);
    CHECK(zeros == VARIANTS[v].zeros && listed == zeros && zero_rows == zeros,
          "%s: the outputs fed only by empty wedges are 0: %d (the reference's %d, %d of them listed), %d all-zero "
          "operator rows", VARIANTS[v].name, zeros, VARIANTS[v].zeros, listed, zero_rows);
}

/* The fixture's sparse fp16 masks as dense ones; 0 when the fixture is unusable (CHECKed). */
static int fixture_masks(const bf_st_file *f, float *masks) {
    const bf_st_tensor *index = bf_safetensors_find(f, "mask.index"), *value = bf_safetensors_find(f, "mask.value");
    const int ok = index && value && index->dtype == BF_DTYPE_I32 && index->ndim == 2 && index->shape[1] == 2 &&
                   value->dtype == BF_DTYPE_F32 && value->ndim == 1 && value->shape[0] == index->shape[0];
    CHECK(ok, "the fixture's mask.index (K, 2) I32 and mask.value (K) F32");
    if (!ok) return 0;
    const int64_t k = index->shape[0];
    int32_t *at = bf_test_calloc((size_t)k * 2 * sizeof *at);
    float *v = bf_test_calloc((size_t)k * sizeof *v);
    memcpy(at, index->data, (size_t)k * 2 * sizeof *at);
    memcpy(v, value->data, (size_t)k * sizeof *v);
    int bad = 0;
    memset(masks, 0, (size_t)MASKS * PIXELS * sizeof *masks);
    for (int64_t i = 0; i < k; i++) {
        if (at[2 * i] < 0 || at[2 * i] >= MASKS || at[2 * i + 1] < 0 || at[2 * i + 1] >= PIXELS) {
            bad++;
            continue;
        }
        masks[(size_t)at[2 * i] * PIXELS + at[2 * i + 1]] = v[i];
    }
    free(at), free(v);
    CHECK(bad == 0, "the fixture's mask indices in range: %d outside", bad);
    return bad == 0;
}

static void check_fixture(const bf_st_file *f, const float *masks, const float *counts) {
    float *expected = bf_test_calloc((size_t)MASKS * PIXELS * sizeof *expected), reference_counts[MASKS];
    if (fixture_masks(f, expected)) {
        int differ = 0, first = -1;
        for (size_t i = 0; i < (size_t)MASKS * PIXELS; i++)
            if (masks[i] != expected[i] && differ++ == 0) first = (int)i;
        CHECK(differ == 0, "the fp16 masks equal PyTorch's: %d entries differ, the first mask %d pixel %d (%g vs %g)",
              differ, first / PIXELS, first % PIXELS, first < 0 ? 0 : masks[first], first < 0 ? 0 : expected[first]);
    }
    free(expected);
    CHECK_OK(bf_safetensors_copy_out(f, "counts", BF_DTYPE_F32, 1, (const int64_t[]){MASKS}, reference_counts));
    int counts_differ = 0;
    for (int m = 0; m < MASKS; m++) counts_differ += counts[m] != reference_counts[m];
    CHECK(counts_differ == 0, "the fp16 counts equal PyTorch's: %d differ", counts_differ);

    enum { MAPS = 2 * 3 };
    float input[MAPS * PIXELS], reference[MAPS * OUTPUTS], out[MAPS * OUTPUTS];
    float *op = bf_test_calloc((size_t)OUTPUTS * PIXELS * sizeof *op);
    CHECK_OK(bf_safetensors_copy_out(f, "input", BF_DTYPE_F32, 4, (const int64_t[]){2, 3, 32, 32}, input));
    for (int v = 0; v < 6; v++) {
        char name[32];
        snprintf(name, sizeof name, "out.%s", VARIANTS[v].name);
        CHECK_OK(bf_safetensors_copy_out(f, name, BF_DTYPE_F32, 4, (const int64_t[]){2, 3, 16, 16}, reference));
        CHECK_OK(bf_polar_operator(&VARIANTS[v].options, op));
        for (int map = 0; map < MAPS; map++)
            for (int o = 0; o < OUTPUTS; o++) {
                double acc = 0;
                for (int p = 0; p < PIXELS; p++) acc += (double)op[(size_t)o * PIXELS + p] * input[map * PIXELS + p];
                out[map * OUTPUTS + o] = (float)acc;
            }
        size_t worst = 0;
        /* PyTorch sums 1024 float32 products per bin; 1e-5 relative covers that */
        const double violation = bf_test_max_violation(out, reference, MAPS * OUTPUTS, 1e-6, 1e-5, &worst);
        printf("%-8s vs PyTorch: largest violation %.3g (output %zu: %.8g vs %.8g)\n", VARIANTS[v].name, violation,
               worst, out[worst], reference[worst]);
        CHECK(violation <= 1, "%s: the operator reproduces PyTorch's forward: violation %g", name, violation);
    }
    free(op);
}

/* The layer's model: one polar transform of VARIANTS[*variant] (bf_parity_build_one_layer's callback). */
static int add_polar_variant(bf_model *m, int input, const char *variant) {
    for (int v = 0; v < 6; v++)
        if (!strcmp(VARIANTS[v].name, variant))
            return bf_model_add_polar(m, "lpp", input, VARIANTS[v].options.padding, VARIANTS[v].options.antialias);
    CHECK(0, "no variant %s", variant);
    return -1;
}

/* The pixels the central differences move: rows 12..20 right of the centre column (the wedges next to
 * angle 0 and 2 pi that the angle padding joins or mirrors, and rings 0..4 that the radial padding of
 * "both" reflects), the corner pixels of rings 16..17 (the outer rows "both" mirrors), and every 37th
 * other pixel; in both samples. Returns their count. */
enum { FD_MAX = 2 * PIXELS };
static int fd_pixels(int *at) {
    int n = 0;
    for (int p = 0; p < PIXELS; p++) {
        const int row = p / 32, col = p % 32, dx = col - 16, dy = 16 - row, r2 = dx * dx + dy * dy;
        const int near_zero_angle = row >= 12 && row <= 20 && col >= 16, outer = r2 >= 16 * 16 && r2 < 18 * 18;
        if (near_zero_angle || (outer && (row < 4 || row > 28)) || p % 37 == 5) at[n++] = p, at[n++] = PIXELS + p;
    }
    return n;
}

/* The layer in a model over channel 0 of the fixture's input ([2, 1, 32, 32]): forward against
 * out.<variant>'s channel 0, backward of grad.dy against grad.<variant> (PyTorch's autograd), and the
 * backward against central differences of the forward. */
static void check_layer(bf_parity *px) {
    enum { N = 2, C = 3 };
    const bf_shape in = {N, 1, BF_POLAR_IN_SIZE, BF_POLAR_IN_SIZE};
    float input[N * C * PIXELS], x[N * PIXELS], dy[N * OUTPUTS], reference[N * C * OUTPUTS], expected[N * OUTPUTS];
    float dx[N * PIXELS];
    CHECK_OK(bf_safetensors_copy_out(px->fixture, "input", BF_DTYPE_F32, 4, (const int64_t[]){N, C, 32, 32}, input));
    CHECK_OK(bf_safetensors_copy_out(px->fixture, "grad.dy", BF_DTYPE_F32, 4, (const int64_t[]){N, 1, 16, 16}, dy));
    for (int n = 0; n < N; n++) memcpy(x + n * PIXELS, input + n * C * PIXELS, PIXELS * sizeof *x); /* channel 0 */
    int at[FD_MAX];
    const int fd_count = fd_pixels(at);
    for (int v = 0; v < 6; v++) {
        const char *name = VARIANTS[v].name;
        char tensor[32];
        printf("%s (layer, [2, 1, 32, 32]):\n", name);
        bf_model *m = bf_parity_build_one_layer(px->backend, in, add_polar_variant, name);
        if (!m) continue;
        /* the forward: as the operator's above, 1024 float32 products per output on either side */
        snprintf(tensor, sizeof tensor, "out.%s", name);
        CHECK_OK(bf_safetensors_copy_out(px->fixture, tensor, BF_DTYPE_F32, 4, (const int64_t[]){N, C, 16, 16},
                                         reference));
        for (int n = 0; n < N; n++) memcpy(expected + n * OUTPUTS, reference + n * C * OUTPUTS, OUTPUTS * sizeof *expected);
        const float *y = NULL;
        CHECK_OK(bf_model_forward(m, x, &y));
        if (y) {
            size_t worst = 0;
            const double violation = bf_test_max_violation(y, expected, N * OUTPUTS, 1e-6, 1e-5, &worst);
            printf("  y        out.%-12s violation %.3g (output %zu: %.8g vs %.8g)\n", name, violation, worst, y[worst],
                   expected[worst]);
            CHECK(violation <= 1, "%s: the layer's forward reproduces PyTorch's: violation %g", name, violation);
        }
        /* the backward against autograd (px's tolerance) */
        CHECK_OK(bf_model_backward(m, dy));
        memcpy(dx, m->dinput, sizeof dx);
        snprintf(tensor, sizeof tensor, "grad.%s", name);
        bf_parity_compare(px, "dx", tensor, dx, N * PIXELS);
        /* central differences: the map is linear, so the step can be large (0.25, exact in float) and
         * the difference quotient is off only by the rounding of the few outputs the pixel feeds (the
         * others are recomputed bit-identically): some 1e-7 of sum |dy| over them, / 0.5 */
        double worst = 0;
        int worst_at = 0;
        for (int k = 0; k < fd_count; k++) {
            const int i = at[k];
            const double numeric = bf_test_logits_dot_slope(m, x, dy, N * OUTPUTS, &x[i], 0.25f);
            const double e = fabs(numeric - dx[i]) / (1e-5 + 1e-4 * fabs(numeric));
            if (e > worst) worst = e, worst_at = i;
        }
        printf("  central differences at %d pixels: largest violation %.3g (pixel %d of sample %d: analytic %.8g)\n",
               fd_count, worst, worst_at % PIXELS, worst_at / PIXELS, dx[worst_at]);
        CHECK(worst <= 1, "%s: the layer's input gradient differs from central differences (violation %g at %d)", name,
              worst, worst_at);
        bf_model_destroy(m);
    }
}

int main(void) {
    float *masks = bf_test_calloc((size_t)MASKS * PIXELS * sizeof *masks), counts[MASKS];
    bf_polar_masks(masks, counts);
    check_table(masks, counts);
    /* float32 rounding of both sides' sums (a pixel's gradient gathers a few dozen products; the
     * fixture's float32 autograd is within 4.5e-7 of float64's, |dx| up to 6.7): 2e-6 + 1e-5 relative */
    bf_parity px = {.atol = 2e-6, .rtol = 1e-5, .name_width = 16};
    if (bf_parity_open(&px, BIOFLEX_SOURCE_DIR "/tests/fixtures/polar_transform.safetensors",
                       "bench/make_polar_fixture.py", 1)) {
        check_fixture(px.fixture, masks, counts);
        check_layer(&px);
    }
    bf_parity_close(&px);
    free(masks);

    float *op = bf_test_calloc((size_t)OUTPUTS * PIXELS * sizeof *op);
    for (int v = 0; v < 6; v++) {
        CHECK_OK(bf_polar_operator(&VARIANTS[v].options, op));
        check_constant(op, v);
    }
    CHECK(bf_polar_operator(&(bf_polar_options){.padding = 3}, op) == BF_ERR_ARG, "padding 3 refused");
    CHECK(bf_polar_operator(&(bf_polar_options){.antialias = -1}, op) == BF_ERR_ARG, "antialias -1 refused");
    CHECK(bf_polar_operator(NULL, op) == BF_ERR_ARG, "no options refused");
    CHECK(bf_polar_operator(&(bf_polar_options){0}, NULL) == BF_ERR_ARG, "no output refused");
    free(op);
    return bf_test_finish();
}
