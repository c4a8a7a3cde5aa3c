/* test_polar_map.c - the V1-constrained ResNet-50's polar transform (polar_map.h, spec
 * v1-constrained.md section 5):
 *   - the masks against the spec's per-ring table (section 5.3): pixels per ring, non-empty wedges
 *     before the resampling (the distinct weight profiles of the ring's pixels), counts' min/max and
 *     the ring's total weight; 40 all-zero masks, total weight 1131 covering all 1024 pixels;
 *   - the fp16 masks and counts bit-equal to PyTorch's, and the operator applied to a random input
 *     against PyTorch's forward for the 4 variants (angle or both axes padded, antialias or not),
 *     from tests/fixtures/polar_transform.safetensors (bench/make_polar_fixture.py);
 *   - a constant map: every output in the rows fed by the full rings within fp16 rounding of the
 *     constant, the outputs fed only by empty wedges exactly 0 (the reference's list, per variant),
 *     no entry negative and no output above the constant;
 *   - bad options refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/safetensors.h"
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

static void check_fixture(const float *masks, const float *counts) {
    const char *path = BIOFLEX_SOURCE_DIR "/tests/fixtures/polar_transform.safetensors";
    bf_st_file *f = NULL;
    const bf_status s = bf_safetensors_read(path, &f);
    CHECK(s == BF_OK, "reading the fixture: %s (regenerate it with /usr/bin/python3 bench/make_polar_fixture.py)",
          bf_last_error());
    if (s != BF_OK) return;
    const char *version = bf_safetensors_meta(f, "torch_version");
    printf("fixture %s (torch %s)\n", path, version ? version : "?");

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
    bf_safetensors_close(f);
}

int main(void) {
    float *masks = bf_test_calloc((size_t)MASKS * PIXELS * sizeof *masks), counts[MASKS];
    bf_polar_masks(masks, counts);
    check_table(masks, counts);
    check_fixture(masks, counts);
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
