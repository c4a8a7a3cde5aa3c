/* fragments_data.h - the straight-line stimuli of the Net Fragments reference (Sager et al.;
 * ../shared/specs/netfragments.md 1.1-1.5, 5.1, 7a).
 *
 * The reference draws its training lines with CPython's `random` module and rasterises them with
 * PIL. Its shipped checkpoint is reproduced bit for bit only by replaying the very same line
 * sequence (spec 7a), so both are reproduced exactly here rather than approximated:
 *   - bf_py_random is CPython's random.Random (MT19937 with CPython's seeding and its random() and
 *     randint() on top), enough of it for the calls the reference makes;
 *   - bf_line_draw is PIL's ImageDraw.line(width=1) on an "L" image (Pillow 9.4's Bresenham, both
 *     endpoints included).
 * tests/test_line_stimuli.c checks both against Python and PIL (tests/fixtures/line_stimuli.safetensors,
 * written by bench/make_line_fixture.py). */
#ifndef BIOFLEX_FRAGMENTS_DATA_H
#define BIOFLEX_FRAGMENTS_DATA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The image side (spec 1.1): 32 x 32, one channel. */
#define BF_LINE_SIZE 32

/* CPython's random.Random (MT19937): seeded as random.seed(n) for a non-negative int n
 * (init_by_array with n's 32-bit words, least significant first; n = 0 is the one word 0),
 * random() (53 bits from two outputs: (a>>5, b>>6)), randint(a, b) (a + _randbelow(b-a+1) by
 * getrandbits(k) rejection, k = bit length of b-a+1). `index` is CPython's position in mt (624:
 * regenerate before the next output). */
typedef struct bf_py_random {
    uint32_t mt[624];
    int index;
} bf_py_random;

void bf_py_random_seed(bf_py_random *r, uint64_t seed);
/* PyTorch's CPU generator, the same MT19937 seeded otherwise: torch.manual_seed(seed) (init_genrand
 * with the seed's low 32 bits), and torch.randperm(n) for n < 2^32 / 20 (the identity, then for i =
 * 0 .. n-2 a swap of i with i + random() % (n - i), one 32-bit output each): out gets the permutation.
 * The reference drew Net Fragments' feature-noise masks so (spec 1.5, 7a). */
void bf_torch_manual_seed(bf_py_random *r, uint64_t seed);
void bf_torch_randperm(bf_py_random *r, int n, int *out);
/* random.random(): a double in [0, 1), a multiple of 2^-53. */
double bf_py_random_random(bf_py_random *r);
/* random.randint(a, b) for a <= b: uniform on [a, b], both included. a > b (ValueError in Python)
 * returns a and draws nothing. */
int bf_py_random_randint(bf_py_random *r, int a, int b);

/* A line from (x1, y1) to (x2, y2), drawn in that direction; x = column, y = row. */
typedef struct bf_line {
    int x1, y1, x2, y2;
} bf_line;

/* One training line (spec 1.2, `_get_random_line_coords`): random() first; below 0.5,
 * (2, y1)-(30, 32-y1), else (x1, 2)-(32-x1, 30), with y1 or x1 = randint(2, 30). Every line passes
 * through the centre; the draws give at most 56 distinct images. */
bf_line bf_line_random(bf_py_random *r);

/* The number of evaluation lines the stored results used: 60 (spec 7; the CLI default 59 of 5.1
 * is the first 59 of them). */
int bf_line_eval_count(void);
/* Evaluation line i >= 0 (spec 5.1, `get_datapoints`): line 0 is (2,16)-(30,16); each further line
 * moves both endpoints one pixel counter-clockwise (on screen, y down) along the perimeter of
 * [2,30]^2, p2 = (32,32) - p1. Defined for any i >= 0 (the perimeter has 112 steps). */
bf_line bf_line_eval(int i);

/* Sets img (BF_LINE_SIZE^2 floats, row-major) to the line as PIL draws it with
 * ImageDraw.line(width=1, fill=255) on a zeroed "L" image, then ToTensor: 1 on the line, 0 elsewhere.
 * Pixels outside the image are dropped, as PIL clips them. */
void bf_line_draw(bf_line l, float *img);

/* Spec 1.4 (`n_black_pixels` = k) on an image bf_line_draw made of l: lists the line pixels
 * (> 0.5) in row-major order, finds the first one nearest (L1) to ((x1+x2)//2, (y1+y2)//2) at list
 * index i*, and sets the n = min(k, count - 2) pixels at list indices i* - n//2 ... i* - n//2 + n - 1
 * to 0. k <= 0 (or n <= 0) changes nothing. As numpy does in the reference, a negative list index
 * counts from the end; one past the end (never the case for lines through the centre) is skipped. */
void bf_line_interrupt(bf_line l, int k, float *img);

#ifdef __cplusplus
}
#endif
#endif
