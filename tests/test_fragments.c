/* test_fragments.c - the Net Fragments model on the CPU (fragments.c, fragments_hebbian.c;
 * ../shared/specs/netfragments.md 2, 3, 7):
 *   - against PyTorch (tests/fixtures/fragments.safetensors, bench/make_fragments_fixture.py): one
 *     training epoch of the net-fragments config replayed from the initial W (spec 7a's 300 lines):
 *     W's nonzero count after every sample exactly and its sum, and for the recorded samples S1, every
 *     step's state z and W after the update exactly, r to a few float32 ulps (the support's summation
 *     order is not PyTorch's); after the epoch spec 7a's 1612 nonzero weights and sum 332.64;
 *   - the larger kernels with the real-valued ('None') S1, three samples: S1, z and W exactly;
 *   - properties along the replay: at most one alternative active per (group, pixel), r <= 1, W in
 *     [0, 1] and never decreasing; the initial W; argmax ties to the lowest alternative; Bernoulli S1
 *     and S2 binary and repeatable per (seed, sample); merge; the options' checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/fragments.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/fragments.safetensors"
#define PIX (BF_FRAG_SIZE * BF_FRAG_SIZE)
#define STATE (BF_FRAG_CELLS * PIX)
#define NW (BF_FRAG_CELLS * BF_FRAG_INPUTS * BF_FRAG_K * BF_FRAG_K)

static bf_fragments_options net_fragments_options(void) {
    bf_fragments_options o = {0};
    o.s1_activation = BF_FRAG_S1_THRESHOLD;
    o.T = 6;
    o.theta = 0.5f;
    const float gammas[6] = {1.2f, 1.4f, 1.6f, 1.8f, 2.0f, 2.2f}; /* the config's decimals, not 1.2f + 0.2f t */
    memcpy(o.gamma, gammas, sizeof gammas);
    o.support_factor = 1.3f;
    o.lr = 0.2f;
    o.neg_corr = 1;
    o.seed = 7;
    return o;
}

static const bf_st_tensor *get(const bf_st_file *fx, const char *name, bf_dtype dtype) {
    const bf_st_tensor *t = bf_safetensors_find(fx, name);
    CHECK(t && t->dtype == dtype, "fixture tensor %s (%s)", name, bf_dtype_name(dtype));
    return t && t->dtype == dtype ? t : NULL;
}

static size_t count_of(const bf_st_tensor *t) { return t->nbytes / bf_dtype_size(t->dtype); }

/* A 0/1 array of n from the fixture's list of ones. */
static void dense_ones(const bf_st_tensor *t, float *out, size_t n) {
    memset(out, 0, n * sizeof *out);
    const int32_t *idx = t->data;
    for (size_t i = 0; i < count_of(t); i++)
        if ((size_t)idx[i] < n) out[idx[i]] = 1;
}

/* Exact equality of a 0/1 array with the fixture's ones; the number of differing entries. */
static size_t ones_differ(const bf_st_tensor *t, const float *x, size_t n) {
    float *want = malloc(n * sizeof *want);
    dense_ones(t, want, n);
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += want[i] != x[i];
    free(want);
    return d;
}

/* x against the fixture's sparse <prefix>_idx / _val: the entries whose zero-ness differs, and the
 * largest difference of the others in units of float32 ulps (0 when bit-exact). */
static void sparse_compare(const bf_st_file *fx, const char *prefix, const float *x, size_t n, size_t *pattern,
                           double *ulps) {
    char name[96];
    snprintf(name, sizeof name, "%s_idx", prefix);
    const bf_st_tensor *ti = get(fx, name, BF_DTYPE_I32);
    snprintf(name, sizeof name, "%s_val", prefix);
    const bf_st_tensor *tv = get(fx, name, BF_DTYPE_F32);
    *pattern = n, *ulps = INFINITY;
    if (!ti || !tv) return;
    float *want = calloc(n, sizeof *want);
    const int32_t *idx = ti->data;
    const float *val = tv->data;
    for (size_t i = 0; i < count_of(ti); i++) want[idx[i]] = val[i];
    *pattern = 0, *ulps = 0;
    for (size_t i = 0; i < n; i++) {
        if ((want[i] != 0) != (x[i] != 0)) {
            (*pattern)++;
            continue;
        }
        const double d = fabs((double)want[i] - x[i]) / (nextafterf(fabsf(want[i]), INFINITY) - fabsf(want[i]) + 1e-45);
        if (d > *ulps) *ulps = d;
    }
    free(want);
}

/* The properties every run and update keeps: binary z, at most one alternative per (group, pixel)
 * and step, r <= 1. */
static void check_states(const float *z, const float *r, int T, const char *what) {
    size_t not_binary = 0, two_alternatives = 0, r_above = 0;
    for (int t = 0; t < T; t++)
        for (int g = 0; g < BF_FRAG_S1; g++)
            for (int p = 0; p < PIX; p++) {
                int on = 0;
                for (int a = 0; a < BF_FRAG_ALT; a++) {
                    const size_t i = (size_t)t * STATE + (size_t)(g * BF_FRAG_ALT + a) * PIX + p;
                    not_binary += z[i] != 0 && z[i] != 1;
                    on += z[i] == 1;
                    if (r) r_above += r[i] > 1;
                }
                two_alternatives += on > 1;
            }
    CHECK(not_binary == 0 && two_alternatives == 0 && r_above == 0,
          "%s: %zu non-binary states, %zu (group, pixel, step) with several alternatives on, %zu r > 1", what,
          not_binary, two_alternatives, r_above);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Spec 7a's first epoch, sample by sample against the fixture. */
static void test_epoch(const bf_st_file *fx) {
    const bf_st_tensor *pixels = get(fx, "thr.pixels", BF_DTYPE_I32), *starts = get(fx, "thr.pixel_start", BF_DTYPE_I32);
    const bf_st_tensor *nnz = get(fx, "thr.nnz", BF_DTYPE_I32), *wsum = get(fx, "thr.wsum", BF_DTYPE_F32);
    const char *record = bf_safetensors_meta(fx, "record");
    if (!pixels || !starts || !nnz || !wsum || !record) return;
    const int samples = (int)count_of(nnz);
    bf_fragments_options opt = net_fragments_options();
    bf_fragments *f = NULL;
    CHECK_OK(bf_fragments_create(&opt, &f));
    if (!f) return;
    const float *w = bf_fragments_weights(f);
    float img[PIX], s1[BF_FRAG_S1 * PIX], *z = malloc(sizeof(float) * 6 * STATE), *r = malloc(sizeof(float) * 6 * STATE);
    float *previous = malloc(sizeof(float) * NW);
    int nnz_wrong = 0, first_wrong = -1, decreased = 0, outside = 0, recorded = 0;
    double sum_err = 0, r_ulps = 0, seconds = 0;
    for (int i = 0; i < samples; i++) {
        memset(img, 0, sizeof img);
        const int32_t *lit = (const int32_t *)pixels->data + ((const int32_t *)starts->data)[i];
        for (int k = ((const int32_t *)starts->data)[i]; k < ((const int32_t *)starts->data)[i + 1]; k++) img[*lit++] = 1;
        memcpy(previous, w, sizeof(float) * NW);
        const double t0 = now();
        bf_fragments_s1(f, img, (uint64_t)i, s1);
        CHECK_OK(bf_fragments_run(f, s1, (uint64_t)i, z, r));
        CHECK_OK(bf_fragments_hebbian(f, s1, z));
        seconds += now() - t0;
        int count = 0;
        double sum = 0;
        for (int k = 0; k < NW; k++) {
            count += w[k] != 0, sum += w[k];
            decreased += w[k] < previous[k], outside += !(w[k] >= 0 && w[k] <= 1);
        }
        if (count != ((const int32_t *)nnz->data)[i] && nnz_wrong++ == 0) first_wrong = i;
        const double e = fabs(sum - ((const float *)wsum->data)[i]) / sum;
        if (e > sum_err) sum_err = e;
        char key[32], name[64];
        snprintf(key, sizeof key, ",%d,", i);
        char list[512];
        snprintf(list, sizeof list, ",%s,", record);
        if (i < 3 || strstr(list, key)) check_states(z, r, 6, "thr replay");
        if (!strstr(list, key)) continue;
        recorded++;
        snprintf(name, sizeof name, "thr.s%d.s1", i);
        const bf_st_tensor *t = get(fx, name, BF_DTYPE_I32);
        if (t) CHECK(ones_differ(t, s1, BF_FRAG_S1 * PIX) == 0, "sample %d: S1 differs in %zu units", i, ones_differ(t, s1, BF_FRAG_S1 * PIX));
        snprintf(name, sizeof name, "thr.s%d.z", i);
        if ((t = get(fx, name, BF_DTYPE_I32)))
            CHECK(ones_differ(t, z, 6 * (size_t)STATE) == 0, "sample %d: z differs in %zu states", i, ones_differ(t, z, 6 * (size_t)STATE));
        size_t pattern;
        double ulps;
        snprintf(name, sizeof name, "thr.s%d.r", i);
        sparse_compare(fx, name, r, 6 * (size_t)STATE, &pattern, &ulps);
        CHECK(pattern == 0 && ulps <= 4, "sample %d: r: %zu entries zero on one side only, %.1f ulps apart", i, pattern, ulps);
        if (ulps > r_ulps) r_ulps = ulps;
        snprintf(name, sizeof name, "thr.s%d.w", i);
        sparse_compare(fx, name, w, NW, &pattern, &ulps);
        CHECK(pattern == 0 && ulps == 0, "sample %d: W: %zu entries zero on one side only, %.1f ulps apart", i, pattern, ulps);
    }
    CHECK(nnz_wrong == 0, "W's nonzero count differs from PyTorch's after %d of %d samples, first after sample %d", nnz_wrong,
          samples, first_wrong);
    CHECK(sum_err < 1e-6, "W's sum: relative difference up to %.3g", sum_err);
    CHECK(decreased == 0 && outside == 0, "W: %d decreases, %d entries outside [0, 1]", decreased, outside);
    CHECK(recorded >= 5, "%d recorded samples compared", recorded);
    int count = 0;
    double sum = 0;
    for (int k = 0; k < NW; k++) count += w[k] != 0, sum += w[k];
    CHECK(samples != 300 || (count == 1612 && fabs(sum - 332.64) < 0.005),
          "after the epoch: %d nonzero weights, sum %.4f (spec 7a: 1612, 332.64)", count, sum);
    printf("epoch of %d samples (S1, run with r, Hebbian): %.3f s; %d nonzero weights, sum %.4f; r within %.1f ulps\n",
           samples, seconds, count, sum, r_ulps);
    free(z), free(r), free(previous);
    bf_fragments_destroy(f);
}

/* Evaluation without learning on noisy S1 (spec 1.5, 5.2): spec 5.1's lines with feature noise 0.01, 0.05
 * and 0.2 (torch.randperm masks; the noisy S1 stored), for the fixture's noisy_sets: W after the epoch
 * (thr.s299.w) at theta 0.5, gamma 1.2 ... 2.2, and the converged W (noisy.wc, spec 7a's checkpoint) at
 * that setting and at theta 0.3, gamma 0.6 ... 1.6. Every z exactly, r to a few ulps where stored. The
 * inputs are not line-like: S1 units on anywhere (borders and corners included), several channels at a
 * pixel, line units turned off. */
static void test_noisy(const bf_st_file *fx) {
    const char *lines = bf_safetensors_meta(fx, "noisy_lines"), *sets = bf_safetensors_meta(fx, "noisy_sets");
    CHECK(lines && sets, "fixture metadata noisy_lines, noisy_sets");
    if (!lines || !sets) return;
    float s1[BF_FRAG_S1 * PIX], *z = malloc(sizeof(float) * 6 * STATE), *r = malloc(sizeof(float) * 6 * STATE);
    float *want = malloc(sizeof(float) * 6 * STATE);
    int runs = 0, wrong = 0, with_r = 0, set_count = 0;
    size_t s1_on = 0;
    double r_ulps = 0;
    for (const char *c = sets; *c; set_count++) { /* "<weights> <theta> <gamma,...>;..." */
        char which[16] = "";
        int used = 0;
        bf_fragments_options opt = net_fragments_options();
        if (sscanf(c, "%15s %f %n", which, &opt.theta, &used) != 2) break;
        c += used;
        for (int t = 0; t < 6; t++) opt.gamma[t] = strtof(c, (char **)&c), c += *c == ',';
        c += *c == ';';
        const char *prefix = !strcmp(which, "epoch1") ? "thr.s299.w" : "noisy.wc";
        char name[64];
        snprintf(name, sizeof name, "%s_idx", prefix);
        if (!bf_safetensors_find(fx, name)) continue; /* the converged W: written with --converged only */
        const bf_st_tensor *wi = get(fx, name, BF_DTYPE_I32);
        snprintf(name, sizeof name, "%s_val", prefix);
        const bf_st_tensor *wv = get(fx, name, BF_DTYPE_F32);
        bf_fragments *f = NULL;
        CHECK_OK(bf_fragments_create(&opt, &f));
        if (!f || !wi || !wv) break;
        float *w = bf_fragments_weights(f);
        memset(w, 0, sizeof(float) * NW);
        for (size_t k = 0; k < count_of(wi); k++) w[((const int32_t *)wi->data)[k]] = ((const float *)wv->data)[k];
        for (int level = 0; level < 3; level++)
            for (const char *l = lines; *l;) {
                const int line = (int)strtol(l, (char **)&l, 10);
                l += *l == ',';
                snprintf(name, sizeof name, "noisy.%d.%d.%d.s1", set_count, level, line);
                if (!bf_safetensors_find(fx, name)) continue; /* not every line at every level */
                const bf_st_tensor *ts = get(fx, name, BF_DTYPE_I32);
                snprintf(name, sizeof name, "noisy.%d.%d.%d.z", set_count, level, line);
                const bf_st_tensor *tz = get(fx, name, BF_DTYPE_I32);
                if (!ts || !tz) continue;
                dense_ones(ts, s1, BF_FRAG_S1 * PIX);
                s1_on += count_of(ts);
                CHECK_OK(bf_fragments_run(f, s1, (uint64_t)line, z, r));
                check_states(z, r, 6, "noisy");
                runs++;
                dense_ones(tz, want, 6 * (size_t)STATE);
                size_t d = 0;
                for (size_t i = 0; i < 6 * (size_t)STATE; i++) {
                    if (want[i] == z[i]) continue;
                    if (d++ < 4) {
                        const int t = (int)(i / STATE), o = (int)(i % STATE / PIX), p = (int)(i % PIX);
                        printf("  noisy %d.%d.%d: step %d cell %d (group %d alt %d) pixel (%d, %d): PyTorch %g, bioflex %g (r %.9g)\n",
                               set_count, level, line, t, o, o / BF_FRAG_ALT, o % BF_FRAG_ALT, p / BF_FRAG_SIZE,
                               p % BF_FRAG_SIZE, want[i], z[i], r[i]);
                    }
                }
                wrong += d != 0;
                CHECK(d == 0, "noisy set %d level %d line %d: z differs in %zu states", set_count, level, line, d);
                snprintf(name, sizeof name, "noisy.%d.%d.%d.r_idx", set_count, level, line);
                if (!bf_safetensors_find(fx, name)) continue;
                snprintf(name, sizeof name, "noisy.%d.%d.%d.r", set_count, level, line);
                size_t pattern;
                double ulps;
                sparse_compare(fx, name, r, 6 * (size_t)STATE, &pattern, &ulps);
                /* more inputs per support than on a clean line: a little more room for the summation order */
                CHECK(pattern == 0 && ulps <= 8, "noisy %d.%d.%d: r: %zu entries zero on one side only, %.1f ulps apart",
                      set_count, level, line, pattern, ulps);
                if (ulps > r_ulps) r_ulps = ulps;
                with_r++;
            }
        bf_fragments_destroy(f);
    }
    CHECK(runs >= 13, "%d noisy runs compared", runs);
    printf("noisy evaluation: %d runs in %d sets (%zu S1 units on in all), %d with z differing; r compared in %d, "
           "within %.1f ulps\n", runs, set_count, s1_on, wrong, with_r, r_ulps);
    free(z), free(r), free(want);
}

/* The larger kernels with S1 = max(a, 0), real-valued (spec 2.2, 2.3 'None'; v5 without its Bernoulli S2). */
static void test_v5(const bf_st_file *fx) {
    bf_fragments_options opt = net_fragments_options();
    opt.larger_kernels = 1, opt.s1_activation = BF_FRAG_S1_RELU;
    const float gammas[6] = {1.0f, 1.2f, 1.4f, 1.6f, 1.8f, 2.0f};
    memcpy(opt.gamma, gammas, sizeof gammas);
    bf_fragments *f = NULL;
    CHECK_OK(bf_fragments_create(&opt, &f));
    if (!f) return;
    float s1[BF_FRAG_S1 * PIX], *z = malloc(sizeof(float) * 6 * STATE);
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "v5.s%d.image", i);
        const bf_st_tensor *img = get(fx, name, BF_DTYPE_F32);
        snprintf(name, sizeof name, "v5.s%d.s1", i);
        const bf_st_tensor *want = get(fx, name, BF_DTYPE_F32);
        if (!img || !want) break;
        bf_fragments_s1(f, img->data, (uint64_t)i, s1);
        int s1_diff = 0, real = 0;
        for (int k = 0; k < BF_FRAG_S1 * PIX; k++) s1_diff += s1[k] != ((const float *)want->data)[k], real += s1[k] > 1;
        CHECK(s1_diff == 0 && real > 0, "v5 sample %d: S1 differs in %d units (%d above 1)", i, s1_diff, real);
        CHECK_OK(bf_fragments_run(f, s1, (uint64_t)i, z, NULL));
        CHECK_OK(bf_fragments_hebbian(f, s1, z));
        check_states(z, NULL, 6, "v5");
        snprintf(name, sizeof name, "v5.s%d.z", i);
        const bf_st_tensor *t = get(fx, name, BF_DTYPE_I32);
        if (t) CHECK(ones_differ(t, z, 6 * (size_t)STATE) == 0, "v5 sample %d: z differs in %zu states", i, ones_differ(t, z, 6 * (size_t)STATE));
        size_t pattern;
        double ulps;
        snprintf(name, sizeof name, "v5.s%d.w", i);
        sparse_compare(fx, name, bf_fragments_weights(f), NW, &pattern, &ulps);
        CHECK(pattern == 0 && ulps == 0, "v5 sample %d: W: %zu entries zero on one side only, %.1f ulps apart", i, pattern, ulps);
    }
    free(z);
    bf_fragments_destroy(f);
}

/* hebbian_input = binarised: the rule learns from 1[x > 0.5] of real-valued S1, the same update
 * as the reference's rule given S1 binarised so (whose values are 0 and 1, where both agree). */
static void test_binarised_hebbian(const bf_st_file *fx) {
    bf_fragments_options opt = net_fragments_options();
    opt.larger_kernels = 1, opt.s1_activation = BF_FRAG_S1_RELU;
    bf_fragments *real = NULL, *binarised = NULL, *clipped = NULL;
    CHECK_OK(bf_fragments_create(&opt, &real));
    CHECK_OK(bf_fragments_create(&opt, &clipped));
    opt.hebb_binarised = 1;
    CHECK_OK(bf_fragments_create(&opt, &binarised));
    const bf_st_tensor *img = get(fx, "v5.s0.image", BF_DTYPE_F32);
    if (!real || !binarised || !clipped || !img) return;
    float s1[BF_FRAG_S1 * PIX], s1_bin[BF_FRAG_S1 * PIX], *z = malloc(sizeof(float) * 6 * STATE);
    bf_fragments_s1(real, img->data, 0, s1);
    int weak = 0;
    for (int k = 0; k < BF_FRAG_S1 * PIX; k++) s1_bin[k] = s1[k] > 0.5f, weak += s1[k] > 0 && s1[k] <= 0.5f;
    CHECK_OK(bf_fragments_run(binarised, s1, 0, z, NULL));
    CHECK_OK(bf_fragments_hebbian(binarised, s1, z));
    CHECK_OK(bf_fragments_hebbian(clipped, s1_bin, z));
    CHECK_OK(bf_fragments_hebbian(real, s1, z));
    const float *wb = bf_fragments_weights(binarised), *wc = bf_fragments_weights(clipped), *wr = bf_fragments_weights(real);
    size_t same = 0, differ = 0;
    for (size_t e = 0; e < NW; e++) same += wb[e] == wc[e], differ += wb[e] != wr[e];
    printf("binarised Hebbian input: %d weak S1 responses in (0, 0.5]; %zu weights differ from the reference rule's\n",
           weak, differ);
    CHECK(same == NW, "binarised: the reference rule's update of S1 binarised at 0.5 (%zu of %d weights)", same, (int)NW);
    CHECK(weak > 0 && differ > 0, "real-valued S1 learns otherwise binarised (%d weak responses, %zu weights)", weak,
          differ);
    free(z);
    bf_fragments_destroy(real), bf_fragments_destroy(binarised), bf_fragments_destroy(clipped);
}

static void test_initial_weights(void) {
    bf_fragments_options opt = net_fragments_options();
    bf_fragments *f = NULL;
    CHECK_OK(bf_fragments_create(&opt, &f));
    if (!f) return;
    const float *w = bf_fragments_weights(f);
    int wrong = 0;
    for (int o = 0; o < BF_FRAG_CELLS; o++) {
        int ones = 0, others = 0;
        for (int c = 0; c < BF_FRAG_INPUTS; c++)
            for (int k = 0; k < 121; k++) {
                const float v = w[(o * BF_FRAG_INPUTS + c) * 121 + k];
                const int expected = k == 60 && (c == o / BF_FRAG_ALT || c == BF_FRAG_S1 + o);
                ones += expected && v == 1, others += !expected && v != 0;
            }
        wrong += ones != 2 || others != 0;
    }
    CHECK(wrong == 0, "initial W: %d cells without exactly their two centre ones", wrong);
    bf_fragments_destroy(f);
    opt.T = 0;
    CHECK(bf_fragments_create(&opt, &f) == BF_ERR_ARG && !f, "T = 0 refused");
    opt.T = BF_FRAG_MAX_T + 1;
    CHECK(bf_fragments_create(&opt, &f) == BF_ERR_ARG && !f, "T above BF_FRAG_MAX_T refused");
}

/* A horizontal line at row 16, columns 4..27: S1's horizontal channel at the middle is on. */
static void horizontal_line(const bf_fragments *f, float *s1) {
    float img[PIX] = {0};
    for (int x = 4; x < 28; x++) img[16 * BF_FRAG_SIZE + x] = 1;
    bf_fragments_s1(f, img, 0, s1);
}

/* Alternatives 5 and 7 of the horizontal group get the same extra weight from the S1 unit right of
 * the pixel: both score 3 * 2 - 3 against 3 * 1 - 2 of the others, a tie that the lowest index wins. */
static void test_ties(void) {
    bf_fragments_options opt = net_fragments_options();
    bf_fragments *f = NULL;
    CHECK_OK(bf_fragments_create(&opt, &f));
    if (!f) return;
    float *w = bf_fragments_weights(f), s1[BF_FRAG_S1 * PIX], *z = malloc(sizeof(float) * 6 * STATE);
    for (int a = 5; a <= 7; a += 2) w[((20 + a) * BF_FRAG_INPUTS + 2) * 121 + 5 * 11 + 6] = 0.5f;
    horizontal_line(f, s1);
    CHECK(s1[(2 * BF_FRAG_SIZE + 16) * BF_FRAG_SIZE + 15] == 1, "S1: horizontal unit on the line");
    CHECK_OK(bf_fragments_run(f, s1, 0, z, NULL));
    const int p = 16 * BF_FRAG_SIZE + 15;
    CHECK(z[25 * PIX + p] == 1 && z[27 * PIX + p] == 0 && z[20 * PIX + p] == 0,
          "tie of alternatives 5 and 7: 5 on (%g), 7 off (%g), 0 off (%g)", z[25 * PIX + p], z[27 * PIX + p], z[20 * PIX + p]);
    /* with the initial W every alternative ties everywhere: only alternative 0 of each group is ever on */
    bf_fragments_destroy(f);
    CHECK_OK(bf_fragments_create(&opt, &f));
    horizontal_line(f, s1);
    CHECK_OK(bf_fragments_run(f, s1, 0, z, NULL));
    int on = 0, other = 0;
    for (int t = 0; t < 6; t++)
        for (int o = 0; o < BF_FRAG_CELLS; o++)
            for (int q = 0; q < PIX; q++) {
                const float v = z[(size_t)t * STATE + o * PIX + q];
                on += v == 1, other += v == 1 && o % BF_FRAG_ALT != 0;
            }
    CHECK(on > 0 && other == 0, "initial W: %d states on, %d of them not alternative 0", on, other);
    float merged[BF_FRAG_S1 * PIX];
    bf_fragments_merge(z + 5 * STATE, merged);
    int merge_wrong = 0;
    for (int g = 0; g < BF_FRAG_S1; g++)
        for (int q = 0; q < PIX; q++) merge_wrong += merged[g * PIX + q] != z[5 * STATE + (g * BF_FRAG_ALT) * PIX + q];
    CHECK(merge_wrong == 0, "merge: %d units differ from alternative 0's state", merge_wrong);
    free(z);
    bf_fragments_destroy(f);
}

/* lambda = 1.3 * 11 is 14.3f as in the reference (a Python double, then float32), not 1.3f * 11 = the
 * float below it, L'. Two cells of the horizontal group, each with 15 taps in a row-and-a-bit of its
 * window, on S1 units placed exactly there: cell 20 sums to 14.3f at p0 (14 ones and 0.3f), cell 21 to
 * L' at p1 (14 ones and 0.2999992f). With 14.3f, L' < lambda is not inhibited and r(p1) = L' / 14.3f;
 * with L', it would be inhibited to L', be the group's max and give r(p1) = 1. */
static void test_inhibition_limit(void) {
    bf_fragments_options opt = net_fragments_options();
    bf_fragments *f = NULL;
    CHECK_OK(bf_fragments_create(&opt, &f));
    if (!f) return;
    float *w = bf_fragments_weights(f), s1[BF_FRAG_S1 * PIX] = {0};
    float *z = malloc(sizeof(float) * 6 * STATE), *r = malloc(sizeof(float) * 6 * STATE);
    const float below = nextafterf(14.3f, 0);
    const int cells[2] = {20, 21}, py[2] = {8, 24}, px[2] = {8, 24}, rows[2][2] = {{0, 1}, {10, 9}};
    const float last[2] = {0.3f, 0.2999992f};
    CHECK((float)(14.0 + (double)last[0]) == 14.3f && (float)(14.0 + (double)last[1]) == below, "the sums' floats");
    for (int i = 0; i < 2; i++) {
        int n = 0;
        for (int k = 0; k < 15; k++) {
            const int ky = k < 11 ? rows[i][0] : rows[i][1], kx = k < 11 ? k : k - 11;
            w[((cells[i] * BF_FRAG_INPUTS + 2) * BF_FRAG_K + ky) * BF_FRAG_K + kx] = ++n < 15 ? 1.0f : last[i];
            s1[(2 * BF_FRAG_SIZE + py[i] + ky - 5) * BF_FRAG_SIZE + px[i] + kx - 5] = 1;
        }
    }
    CHECK_OK(bf_fragments_run(f, s1, 0, z, r));
    const int p0 = py[0] * BF_FRAG_SIZE + px[0], p1 = py[1] * BF_FRAG_SIZE + px[1];
    CHECK(r[20 * PIX + p0] == 1.0f, "r at the support 14.3f: %.9g, expected 1", r[20 * PIX + p0]);
    CHECK(r[21 * PIX + p1] == below / (1e-10f + 14.3f), "r at the support just below lambda: %.9g, expected %.9g",
          r[21 * PIX + p1], below / (1e-10f + 14.3f));
    free(z), free(r);
    bf_fragments_destroy(f);
}

/* Bernoulli S1 and S2 (theta < 0): 0/1, the same for the same seed and sample, not for another sample. */
static void test_bernoulli(void) {
    bf_fragments_options opt = net_fragments_options();
    opt.theta = -1, opt.s1_activation = BF_FRAG_S1_BERNOULLI, opt.seed = 11;
    bf_fragments *f = NULL, *g = NULL;
    CHECK_OK(bf_fragments_create(&opt, &f));
    CHECK_OK(bf_fragments_create(&opt, &g));
    if (!f || !g) return;
    float img[PIX] = {0}, s1[BF_FRAG_S1 * PIX], s1b[BF_FRAG_S1 * PIX];
    for (int k = 2; k < 31; k++) img[k * BF_FRAG_SIZE + 31 - k] = 1; /* a "/" diagonal */
    float *z = malloc(sizeof(float) * 6 * STATE), *zb = malloc(sizeof(float) * 6 * STATE), *r = malloc(sizeof(float) * 6 * STATE);
    /* train a few samples so that supports are fractional and the draws matter */
    for (int i = 0; i < 20; i++) {
        bf_fragments_s1(f, img, (uint64_t)i, s1);
        CHECK_OK(bf_fragments_run(f, s1, (uint64_t)i, z, r));
        CHECK_OK(bf_fragments_hebbian(f, s1, z));
        check_states(z, r, 6, "bernoulli");
    }
    memcpy(bf_fragments_weights(g), bf_fragments_weights(f), sizeof(float) * NW);
    bf_fragments_s1(f, img, 99, s1);
    bf_fragments_s1(g, img, 99, s1b);
    CHECK(!memcmp(s1, s1b, sizeof s1), "Bernoulli S1 repeats for the same sample");
    int s1_binary = 1;
    for (int k = 0; k < BF_FRAG_S1 * PIX; k++) s1_binary &= s1[k] == 0 || s1[k] == 1;
    CHECK(s1_binary, "Bernoulli S1 is 0/1");
    CHECK_OK(bf_fragments_run(f, s1, 99, z, r));
    CHECK_OK(bf_fragments_run(g, s1, 99, zb, NULL));
    CHECK(!memcmp(z, zb, sizeof(float) * 6 * STATE), "Bernoulli S2 repeats for the same seed and sample");
    check_states(z, r, 6, "bernoulli");
    int fractional = 0;
    for (size_t k = 0; k < 6 * (size_t)STATE; k++) fractional += r[k] > 0 && r[k] < 1;
    CHECK(fractional > 0, "Bernoulli: %d fractional firing probabilities drawn", fractional);
    int differ = 0;
    for (int s = 100; s < 110 && !differ; s++) {
        CHECK_OK(bf_fragments_run(g, s1, (uint64_t)s, zb, NULL));
        differ = memcmp(z, zb, sizeof(float) * 6 * STATE) != 0;
    }
    CHECK(differ, "Bernoulli S2 differs for other samples");
    free(z), free(zb), free(r);
    bf_fragments_destroy(f);
    bf_fragments_destroy(g);
}

/* The support monitor (bf_fragments_track_support) against the support computed here, step by step,
 * as the spec's s = W * x with zero padding from S1 and the run's own states (x = bin(concat(S1,
 * z^t)), z^0 = 0): a random sparse W, a horizontal line with ten S1 units flipped, two runs
 * accumulated. Each step's s of the 40,960 cells is split by the cell's state after the step; the
 * sums of the steps' means, unbiased standard deviations, minima and maxima per side must agree,
 * and the normalisation: per group 1e-10 + the inhibited support of a cell whose r is 1 (the
 * group's largest), or 1e-10 where the group has no support. */
static void test_support_statistics(void) {
    bf_fragments_options opt = net_fragments_options();
    bf_fragments *f = NULL;
    CHECK_OK(bf_fragments_create(&opt, &f));
    if (!f) return;
    float *w = bf_fragments_weights(f), s1[BF_FRAG_S1 * PIX];
    for (int k = 0; k < NW; k++)
        if (bf_uniform(5, (uint64_t)k) < 0.03) w[k] = (float)bf_uniform(6, (uint64_t)k);
    float *z = malloc(sizeof(float) * 6 * STATE), *r = malloc(sizeof(float) * 6 * STATE);
    double *s = malloc(sizeof(double) * STATE);
    bf_fragments_support got = {0}, want = {0};
    bf_fragments_track_support(f, &got);
    const float lambda = 14.3f;
    for (int run = 0; run < 2; run++) {
        horizontal_line(f, s1);
        for (int i = 0; i < 10; i++) {
            const int u = (int)(bf_uniform(9, (uint64_t)(run * 10 + i)) * BF_FRAG_S1 * PIX);
            s1[u] = 1 - s1[u];
        }
        CHECK_OK(bf_fragments_run(f, s1, (uint64_t)run, z, r));
        for (int t = 0; t < 6; t++) {
            memset(s, 0, sizeof(double) * STATE);
            for (int c = 0; c < BF_FRAG_INPUTS; c++) /* scatter every active input through W */
                for (int q = 0; q < PIX; q++) {
                    const float x = c < BF_FRAG_S1 ? s1[c * PIX + q] : t > 0 ? z[(size_t)(t - 1) * STATE + (c - BF_FRAG_S1) * PIX + q] : 0;
                    if (!(x > 0.5f)) continue;
                    const int qy = q / BF_FRAG_SIZE, qx = q % BF_FRAG_SIZE;
                    for (int o = 0; o < BF_FRAG_CELLS; o++)
                        for (int ky = 0; ky < BF_FRAG_K; ky++)
                            for (int kx = 0; kx < BF_FRAG_K; kx++) {
                                const int py = qy - (ky - 5), px = qx - (kx - 5);
                                if (py < 0 || py >= BF_FRAG_SIZE || px < 0 || px >= BF_FRAG_SIZE) continue;
                                s[o * PIX + py * BF_FRAG_SIZE + px] += w[((o * BF_FRAG_INPUTS + c) * BF_FRAG_K + ky) * BF_FRAG_K + kx];
                            }
                }
            double n[2] = {0, 0}, sum[2] = {0, 0}, lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
            const float *zt = z + (size_t)t * STATE, *rt = r + (size_t)t * STATE;
            for (int i = 0; i < STATE; i++) {
                const double v = (float)s[i];
                const int side = zt[i] > 0.5f;
                n[side]++, sum[side] += v, lo[side] = fmin(lo[side], v), hi[side] = fmax(hi[side], v);
            }
            want.steps++;
            for (int side = 0; side < 2; side++) {
                if (n[side] == 0) continue;
                const double mean = sum[side] / n[side];
                double dev = 0;
                for (int i = 0; i < STATE; i++)
                    if ((zt[i] > 0.5f) == side) dev += pow((float)s[i] - mean, 2);
                want.sides[side]++, want.mean[side] += mean, want.std[side] += sqrt(dev / (n[side] - 1));
                want.min[side] += lo[side], want.max[side] += hi[side];
            }
            for (int g = 0; g < BF_FRAG_S1; g++) {
                float denom = 1e-10f;
                for (int i = g * BF_FRAG_ALT * PIX; i < (g + 1) * BF_FRAG_ALT * PIX; i++)
                    if (rt[i] == 1.0f) {
                        const float v = (float)s[i];
                        denom = 1e-10f + (v < lambda ? v : lambda - 0.5f * (v - lambda));
                        break;
                    }
                want.norm_factor += denom / BF_FRAG_S1;
            }
        }
    }
    bf_fragments_track_support(f, NULL);
    CHECK_OK(bf_fragments_run(f, s1, 9, z, r)); /* no longer tracked */
    double worst = 0;
    for (int side = 0; side < 2; side++) {
        const double pairs[4][2] = {{got.mean[side], want.mean[side]}, {got.std[side], want.std[side]},
                                    {got.min[side], want.min[side]}, {got.max[side], want.max[side]}};
        for (int k = 0; k < 4; k++) worst = fmax(worst, fabs(pairs[k][0] - pairs[k][1]) / (1e-12 + fabs(pairs[k][1])));
    }
    worst = fmax(worst, fabs(got.norm_factor - want.norm_factor) / want.norm_factor);
    printf("support monitor over %ld steps: active mean %.4g, max %.4g; inactive mean %.4g; norm %.4g; worst relative "
           "difference %.3g\n", got.steps, got.mean[1] / fmax(got.sides[1], 1), got.max[1] / fmax(got.sides[1], 1),
           got.mean[0] / fmax(got.sides[0], 1), got.norm_factor / fmax(got.steps, 1), worst);
    CHECK(got.steps == 12 && got.sides[0] == want.sides[0] && got.sides[1] == want.sides[1] && want.sides[1] >= 6,
          "support monitor: %ld steps (want 12), %ld / %ld with inactive cells, %ld / %ld with active ones", got.steps,
          got.sides[0], want.sides[0], got.sides[1], want.sides[1]);
    CHECK(worst < 1e-9, "support monitor against the support computed here: worst relative difference %.3g", worst);
    free(z), free(r), free(s);
    bf_fragments_destroy(f);
}

/* A resumed weights file whose "epoch" metadata is no epoch count (negative, not a number, past
 * INT_MAX) is refused naming the file and the key: atoi took "-3" as 3 epochs to train again from
 * epoch -3, "abc" as 0, and a huge one replayed the line sequence for billions of lines. */
static void test_resume_bad_epoch(void) {
    char dir[] = "/tmp/bioflex_test_fragments_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    float *w = bf_test_calloc(NW * sizeof(float));
    const char *bad[] = {"-3", "abc", "99999999999"};
    for (int i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/weights_%d.safetensors", dir, i);
        bf_st_tensor t = {.name = "model.s2.W_lateral", .dtype = BF_DTYPE_F32, .ndim = 4,
                          .shape = {BF_FRAG_CELLS, BF_FRAG_INPUTS * BF_FRAG_K * BF_FRAG_K, 1, 1}, .data = w,
                          .nbytes = NW * sizeof(float)};
        bf_st_meta meta = {.key = "epoch"};
        snprintf(meta.value, sizeof meta.value, "%s", bad[i]);
        CHECK_OK(bf_safetensors_write(path, &t, 1, &meta, 1));
        bf_config cfg;
        bf_config_defaults(&cfg);
        snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run_%d", dir, i);
        cfg.run.epochs = 1;
        cfg.fragments.network = 1;
        cfg.fragments.train_lines = 1;
        cfg.fragments.eval_lines = 1;
        FILE *quiet = fopen("/dev/null", "w");
        bf_train_options o = {.resume = path, .quiet = 1, .log = quiet};
        bf_train_result r;
        bf_status s = bf_train(&cfg, &o, &r);
        fclose(quiet);
        CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), path) && strstr(bf_last_error(), "\"epoch\""),
              "a resume from epoch \"%s\" refused naming the file and the key (got %s: %s)", bad[i],
              bf_status_name(s), bf_last_error());
    }
    free(w);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "%s", cmd);
}

int main(void) {
    test_resume_bad_epoch();
    test_support_statistics();
    test_initial_weights();
    test_ties();
    test_inhibition_limit();
    test_bernoulli();
    bf_st_file *fx = NULL;
    CHECK_OK(bf_safetensors_read(FIXTURE, &fx));
    if (fx) {
        test_v5(fx);
        test_binarised_hebbian(fx);
        test_epoch(fx);
        test_noisy(fx);
        bf_safetensors_close(fx);
    }
    return bf_test_finish();
}
