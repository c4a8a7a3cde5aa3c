/* test_line_stimuli.c - the Net Fragments straight-line stimuli (line_stimuli.c, fragments_data.h;
 * ../shared/specs/netfragments.md 1.1-1.5, 5.1, 7a), exactly equal to CPython and PIL 9.4
 * (tests/fixtures/line_stimuli.safetensors, written by bench/make_line_fixture.py):
 *   - bf_py_random against CPython's random.Random: 8 random() and 16 randint(2, 30) after seeds 1,
 *     12345 and 2^32 + 5 (a two-word key), and randint over widths 1 to 2^32 (getrandbits of 1 to
 *     33 bits, with rejections);
 *   - the first 1000 training lines after random.seed(1), the draw order of the reference's run;
 *   - the images of all 58 lines spec 1.2 can draw (PIL's Bresenham ties on both branches), the 60
 *     evaluation lines and their images, and the interrupts k = 1..7 of each (spec 1.4 as written);
 *   - 200 more lines of every direction and length, some clipped, each with an interrupt (where the
 *     reference's code does not raise), 50 of them with a tie for the pixel nearest the centre;
 *   - properties: training lines have endpoints on [2,30]^2, mirrored through (16,16), whose pixel
 *     their image always holds; 29 pixels of 0/1; 56 distinct training images; the evaluation
 *     sequence's lines 0 and 58 as spec 5.1 gives them; an interrupt blanks min(k, pixels - 2)
 *     pixels, k = 0 none;
 *   - bf_torch_randperm after bf_torch_manual_seed(1): two consecutive torch.randperm(4096) as
 *     PyTorch 1.13 draws them, and a permutation each. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/fragments_data.h"
#include "bioflex/safetensors.h"
#include "testutil.h"

#define FIXTURE BIOFLEX_SOURCE_DIR "/tests/fixtures/line_stimuli.safetensors"
#define PIXELS (BF_LINE_SIZE * BF_LINE_SIZE)

enum { TRAIN_DRAWS = 1000, ALL_LINES = 58, EVAL = 60, RANGES = 12, EXTRA = 200 };

static const uint64_t SEEDS[3] = {1, 12345, 4294967301ull};

/* Unpacks the fixture's images: word r of an image holds row r, bit c column c. */
static void unpack(const int32_t *words, float *img) {
    for (int r = 0; r < BF_LINE_SIZE; r++)
        for (int c = 0; c < BF_LINE_SIZE; c++) img[r * BF_LINE_SIZE + c] = ((uint32_t)words[r] >> c) & 1u ? 1.0f : 0.0f;
}

static int count_pixels(const float *img) {
    int n = 0;
    for (int p = 0; p < PIXELS; p++) n += img[p] != 0.0f;
    return n;
}

static int only_zero_one(const float *img) {
    for (int p = 0; p < PIXELS; p++)
        if (img[p] != 0.0f && img[p] != 1.0f) return 0;
    return 1;
}

static int same_line(bf_line a, const int32_t *b) {
    return a.x1 == b[0] && a.y1 == b[1] && a.x2 == b[2] && a.y2 == b[3];
}

/* How many pixels of img differ from the packed expected image; *first gets the first one. */
static int image_diff(const float *img, const int32_t *expected_words, int *first) {
    float expected[PIXELS];
    unpack(expected_words, expected);
    int differ = 0;
    *first = -1;
    for (int p = 0; p < PIXELS; p++)
        if (img[p] != expected[p] && differ++ == 0) *first = p;
    return differ;
}

static void test_random(const bf_st_file *f) {
    int32_t ranges[RANGES][2];
    CHECK_OK(bf_safetensors_copy_out(f, "random.randint_ranges", BF_DTYPE_I32, 2, (const int64_t[]){RANGES, 2}, ranges));
    for (int s = 0; s < 3; s++) {
        char name[64];
        int64_t mantissa[8];
        int32_t ints[16], wide[RANGES];
        snprintf(name, sizeof name, "random.seed%llu.random", (unsigned long long)SEEDS[s]);
        CHECK_OK(bf_safetensors_copy_out(f, name, BF_DTYPE_I64, 1, (const int64_t[]){8}, mantissa));
        snprintf(name, sizeof name, "random.seed%llu.randint", (unsigned long long)SEEDS[s]);
        CHECK_OK(bf_safetensors_copy_out(f, name, BF_DTYPE_I32, 1, (const int64_t[]){16}, ints));
        snprintf(name, sizeof name, "random.seed%llu.randint_wide", (unsigned long long)SEEDS[s]);
        CHECK_OK(bf_safetensors_copy_out(f, name, BF_DTYPE_I32, 1, (const int64_t[]){RANGES}, wide));

        bf_py_random r;
        bf_py_random_seed(&r, SEEDS[s]);
        for (int i = 0; i < 8; i++) {
            const double v = bf_py_random_random(&r);
            CHECK(v == (double)mantissa[i] / 9007199254740992.0, "seed %llu: random() #%d = %.17g, Python %.17g",
                  (unsigned long long)SEEDS[s], i, v, (double)mantissa[i] / 9007199254740992.0);
        }
        bf_py_random_seed(&r, SEEDS[s]);
        for (int i = 0; i < 16; i++) {
            const int v = bf_py_random_randint(&r, 2, 30);
            CHECK(v == ints[i], "seed %llu: randint(2, 30) #%d = %d, Python %d", (unsigned long long)SEEDS[s], i, v,
                  ints[i]);
        }
        bf_py_random_seed(&r, SEEDS[s]);
        for (int i = 0; i < RANGES; i++) {
            const int v = bf_py_random_randint(&r, ranges[i][0], ranges[i][1]);
            CHECK(v == wide[i], "seed %llu: randint(%d, %d) = %d, Python %d", (unsigned long long)SEEDS[s],
                  ranges[i][0], ranges[i][1], v, wide[i]);
        }
    }
}

/* The first 1000 training lines after random.seed(1), and every line they could be. */
static void test_training_lines(const bf_st_file *f) {
    int32_t(*train)[4] = bf_test_calloc(sizeof(int32_t[TRAIN_DRAWS][4]));
    int32_t all[ALL_LINES][4], all_images[ALL_LINES][BF_LINE_SIZE];
    CHECK_OK(bf_safetensors_copy_out(f, "train.lines", BF_DTYPE_I32, 2, (const int64_t[]){TRAIN_DRAWS, 4}, train));
    CHECK_OK(bf_safetensors_copy_out(f, "train.all_lines", BF_DTYPE_I32, 2, (const int64_t[]){ALL_LINES, 4}, all));
    CHECK_OK(bf_safetensors_copy_out(f, "train.all_images", BF_DTYPE_I32, 2, (const int64_t[]){ALL_LINES, BF_LINE_SIZE},
                                     all_images));

    bf_py_random r;
    bf_py_random_seed(&r, 1);
    int differ = 0, first = -1, outside = 0, branch[2] = {0, 0};
    for (int i = 0; i < TRAIN_DRAWS; i++) {
        const bf_line l = bf_line_random(&r);
        if (!same_line(l, train[i]) && differ++ == 0) first = i;
        int known = 0;
        for (int j = 0; j < ALL_LINES; j++) known |= same_line(l, all[j]);
        outside += !known;
        branch[l.y1 == 2 && l.y2 == 30 && !(l.x1 == 2 && l.x2 == 30)]++;
    }
    CHECK(differ == 0, "the first %d training lines equal Python's: %d differ, the first #%d", TRAIN_DRAWS, differ,
          first);
    CHECK(outside == 0, "every training line is one of spec 1.2's %d: %d are not", ALL_LINES, outside);
    CHECK(branch[0] > 400 && branch[1] > 400, "both branches of 1.2 drawn: %d and %d", branch[0], branch[1]);
    free(train);

    /* Our own enumeration of 1.2's lines (y1 = 2..30, then x1 = 2..30) is the fixture's. */
    float img[PIXELS], images[ALL_LINES][PIXELS];
    for (int j = 0; j < ALL_LINES; j++) {
        const int v = 2 + j % 29;
        const bf_line l = j < 29 ? (bf_line){2, v, 30, 32 - v} : (bf_line){v, 2, 32 - v, 30};
        CHECK(same_line(l, all[j]), "line %d of 1.2: (%d,%d)-(%d,%d) vs the fixture's (%d,%d)-(%d,%d)", j, l.x1,
              l.y1, l.x2, l.y2, all[j][0], all[j][1], all[j][2], all[j][3]);
        bf_line_draw(l, images[j]);
        const int d = image_diff(images[j], all_images[j], &first);
        CHECK(d == 0, "training line (%d,%d)-(%d,%d) drawn as PIL does: %d pixels differ, the first row %d col %d",
              l.x1, l.y1, l.x2, l.y2, d, first / BF_LINE_SIZE, first % BF_LINE_SIZE);
        CHECK(only_zero_one(images[j]) && count_pixels(images[j]) == 29, "line %d: 29 pixels of 0/1, %d", j,
              count_pixels(images[j]));
        CHECK(images[j][16 * BF_LINE_SIZE + 16] == 1.0f, "line %d passes through the centre pixel (16,16)", j);
        CHECK(l.x1 >= 2 && l.x1 <= 30 && l.y1 >= 2 && l.y1 <= 30 && l.x2 == 32 - l.x1 && l.y2 == 32 - l.y1,
              "line %d: endpoints on [2,30]^2, mirrored through (16,16)", j);
        CHECK(images[j][l.y1 * BF_LINE_SIZE + l.x1] == 1.0f && images[j][l.y2 * BF_LINE_SIZE + l.x2] == 1.0f,
              "line %d includes both endpoints", j);
    }
    int distinct = 0;
    for (int j = 0; j < ALL_LINES; j++) {
        int seen = 0;
        for (int i = 0; i < j && !seen; i++) seen = memcmp(images[i], images[j], sizeof img) == 0;
        distinct += !seen;
    }
    CHECK(distinct == 56, "the training lines have 56 distinct images (spec 1.2: the diagonals twice): %d", distinct);
}

static void test_eval_lines(const bf_st_file *f) {
    int32_t lines[EVAL][4], images[EVAL][BF_LINE_SIZE];
    int32_t(*cut)[EVAL][BF_LINE_SIZE] = bf_test_calloc(sizeof(int32_t[7][EVAL][BF_LINE_SIZE]));
    CHECK_OK(bf_safetensors_copy_out(f, "eval.lines", BF_DTYPE_I32, 2, (const int64_t[]){EVAL, 4}, lines));
    CHECK_OK(bf_safetensors_copy_out(f, "eval.images", BF_DTYPE_I32, 2, (const int64_t[]){EVAL, BF_LINE_SIZE}, images));
    CHECK_OK(bf_safetensors_copy_out(f, "eval.interrupt", BF_DTYPE_I32, 3, (const int64_t[]){7, EVAL, BF_LINE_SIZE},
                                     cut));

    CHECK(bf_line_eval_count() == EVAL, "60 evaluation lines: %d", bf_line_eval_count());
    const bf_line l0 = bf_line_eval(0), l58 = bf_line_eval(58);
    CHECK(l0.x1 == 2 && l0.y1 == 16 && l0.x2 == 30 && l0.y2 == 16, "evaluation line 0 is (2,16)-(30,16)");
    CHECK(l58.x1 == 30 && l58.y1 == 14 && l58.x2 == 2 && l58.y2 == 18, "evaluation line 58 is (30,14)-(2,18): (%d,%d)-(%d,%d)",
          l58.x1, l58.y1, l58.x2, l58.y2);
    const bf_line l112 = bf_line_eval(112);
    CHECK(memcmp(&l0, &l112, sizeof l0) == 0, "the perimeter has 112 steps");

    for (int i = 0; i < EVAL; i++) {
        const bf_line l = bf_line_eval(i);
        CHECK(same_line(l, lines[i]), "evaluation line %d: (%d,%d)-(%d,%d) vs Python's (%d,%d)-(%d,%d)", i, l.x1, l.y1,
              l.x2, l.y2, lines[i][0], lines[i][1], lines[i][2], lines[i][3]);
        CHECK(l.x2 == 32 - l.x1 && l.y2 == 32 - l.y1, "evaluation line %d mirrored through (16,16)", i);
        float img[PIXELS], drawn[PIXELS];
        bf_line_draw(l, drawn);
        int first;
        const int d = image_diff(drawn, images[i], &first);
        CHECK(d == 0, "evaluation line %d drawn as PIL does: %d pixels differ, the first row %d col %d", i, d,
              first / BF_LINE_SIZE, first % BF_LINE_SIZE);
        const int pixels = count_pixels(drawn);
        CHECK(only_zero_one(drawn) && pixels == 29, "evaluation line %d: 29 pixels of 0/1, %d", i, pixels);
        memcpy(img, drawn, sizeof img);
        bf_line_interrupt(l, 0, img);
        CHECK(memcmp(img, drawn, sizeof img) == 0, "evaluation line %d: interrupt k = 0 changes nothing", i);
        for (int k = 1; k <= 7; k++) {
            memcpy(img, drawn, sizeof img);
            bf_line_interrupt(l, k, img);
            const int dk = image_diff(img, cut[k - 1][i], &first);
            CHECK(dk == 0, "evaluation line %d interrupted by %d as spec 1.4: %d pixels differ, the first row %d col %d",
                  i, k, dk, first / BF_LINE_SIZE, first % BF_LINE_SIZE);
            const int blanked = pixels - count_pixels(img), expected = k < pixels - 2 ? k : pixels - 2;
            int only_line = 1;
            for (int p = 0; p < PIXELS; p++) only_line &= img[p] <= drawn[p];
            CHECK(blanked == expected && only_line, "evaluation line %d, k = %d: %d line pixels blanked, expected %d",
                  i, k, blanked, expected);
        }
    }
    free(cut);
}

/* Lines of every direction, length and clipping, and interrupts whose nearest pixel ties. */
static void test_extra_lines(const bf_st_file *f) {
    int32_t lines[EXTRA][4], ks[EXTRA], images[EXTRA][BF_LINE_SIZE], cut[EXTRA][BF_LINE_SIZE], valid[EXTRA];
    CHECK_OK(bf_safetensors_copy_out(f, "extra.lines", BF_DTYPE_I32, 2, (const int64_t[]){EXTRA, 4}, lines));
    CHECK_OK(bf_safetensors_copy_out(f, "extra.k", BF_DTYPE_I32, 1, (const int64_t[]){EXTRA}, ks));
    CHECK_OK(bf_safetensors_copy_out(f, "extra.images", BF_DTYPE_I32, 2, (const int64_t[]){EXTRA, BF_LINE_SIZE}, images));
    CHECK_OK(bf_safetensors_copy_out(f, "extra.interrupt", BF_DTYPE_I32, 2, (const int64_t[]){EXTRA, BF_LINE_SIZE}, cut));
    CHECK_OK(bf_safetensors_copy_out(f, "extra.interrupt_valid", BF_DTYPE_I32, 1, (const int64_t[]){EXTRA}, valid));
    int checked = 0;
    for (int i = 0; i < EXTRA; i++) {
        const bf_line l = {lines[i][0], lines[i][1], lines[i][2], lines[i][3]};
        float img[PIXELS];
        int first;
        bf_line_draw(l, img);
        const int d = image_diff(img, images[i], &first);
        CHECK(d == 0, "line (%d,%d)-(%d,%d) drawn as PIL does: %d pixels differ, the first row %d col %d", l.x1, l.y1,
              l.x2, l.y2, d, first / BF_LINE_SIZE, first % BF_LINE_SIZE);
        if (!valid[i]) continue; /* the reference raises there */
        checked++;
        bf_line_interrupt(l, ks[i], img);
        const int dk = image_diff(img, cut[i], &first);
        CHECK(dk == 0, "line (%d,%d)-(%d,%d) interrupted by %d as spec 1.4: %d pixels differ, the first row %d col %d",
              l.x1, l.y1, l.x2, l.y2, ks[i], dk, first / BF_LINE_SIZE, first % BF_LINE_SIZE);
    }
    CHECK(checked > EXTRA * 9 / 10, "most extra interrupts are the reference's: %d of %d", checked, EXTRA);
}

/* torch.manual_seed(1); torch.randperm(4096)[:12] twice (/usr/bin/python3, torch 1.13.0): the
 * reference's noise masks (spec 1.5, 7a). */
static void test_torch_randperm(void) {
    static const int first[12] = {1061, 1635, 3924, 4082, 227, 1726, 3027, 1041, 3487, 1567, 12, 3320};
    static const int second[12] = {2114, 90, 4007, 862, 6, 1648, 3794, 2186, 1365, 4048, 3797, 1364};
    bf_py_random r;
    bf_torch_manual_seed(&r, 1);
    int perm[2][4096], seen[4096];
    bf_torch_randperm(&r, 4096, perm[0]);
    bf_torch_randperm(&r, 4096, perm[1]);
    int same = 0, permutation = 1;
    for (int i = 0; i < 12; i++) same += perm[0][i] == first[i] && perm[1][i] == second[i];
    for (int k = 0; k < 2; k++) {
        memset(seen, 0, sizeof seen);
        for (int i = 0; i < 4096; i++) permutation &= perm[k][i] >= 0 && perm[k][i] < 4096 && !seen[perm[k][i]]++;
    }
    CHECK(same == 12, "torch.randperm(4096) after manual_seed(1): %d of 12 leading entries of both draws as PyTorch's",
          same);
    CHECK(permutation, "each draw is a permutation of 0..4095");
}

int main(void) {
    test_torch_randperm();
    bf_st_file *f = NULL;
    const bf_status s = bf_safetensors_read(FIXTURE, &f);
    CHECK(s == BF_OK, "reading the fixture: %s (regenerate it with /usr/bin/python3 bench/make_line_fixture.py)",
          bf_last_error());
    if (s != BF_OK) return bf_test_finish();
    const char *pil = bf_safetensors_meta(f, "pil_version");
    printf("fixture %s (PIL %s)\n", FIXTURE, pil ? pil : "?");
    test_random(f);
    test_training_lines(f);
    test_eval_lines(f);
    test_extra_lines(f);
    bf_safetensors_close(f);
    return bf_test_finish();
}
