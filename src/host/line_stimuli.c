/* line_stimuli.c - the Net Fragments straight-line stimuli (include/bioflex/fragments_data.h;
 * ../shared/specs/netfragments.md 1.1-1.5, 5.1, 7a): CPython's random module, PIL's 1-px line,
 * the evaluation sequence and the line interrupts. Everything here must match Python bit for bit:
 * the reference's checkpoint is only reproduced by replaying its exact line sequence. */
#include "bioflex/fragments_data.h"

#include <string.h>

/* ------------------------------------------------------------------ CPython's random.Random */

enum { MT_N = 624, MT_M = 397 };

/* MT19937's init_genrand: the state before init_by_array mixes in the key. */
static void mt_init_genrand(bf_py_random *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->index = MT_N;
}

/* MT19937's init_by_array, which CPython's seed(int) calls with the int's 32-bit words. */
static void mt_init_by_array(bf_py_random *r, const uint32_t *key, int key_length) {
    mt_init_genrand(r, 19650218u);
    int i = 1, j = 0;
    for (int k = MT_N > key_length ? MT_N : key_length; k > 0; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++;
        j++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
        if (j >= key_length) j = 0;
    }
    for (int k = MT_N - 1; k > 0; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) {
            r->mt[0] = r->mt[MT_N - 1];
            i = 1;
        }
    }
    r->mt[0] = 0x80000000u; /* MSB is 1, assuring a non-zero initial array */
    r->index = MT_N;
}

/* The next 32-bit output (genrand_uint32): regenerates all 624 words when they are used up. */
static uint32_t mt_next(bf_py_random *r) {
    if (r->index >= MT_N) {
        for (int k = 0; k < MT_N; k++) {
            uint32_t y = (r->mt[k] & 0x80000000u) | (r->mt[(k + 1) % MT_N] & 0x7fffffffu);
            r->mt[k] = r->mt[(k + MT_M) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->index = 0;
    }
    uint32_t y = r->mt[r->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

void bf_py_random_seed(bf_py_random *r, uint64_t seed) {
    /* CPython takes the absolute value's 32-bit words, least significant first, dropping leading
     * zero words but keeping at least one (seed 0 is the key [0]). */
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    mt_init_by_array(r, key, key[1] ? 2 : 1);
}

void bf_torch_manual_seed(bf_py_random *r, uint64_t seed) { mt_init_genrand(r, (uint32_t)seed); }

void bf_torch_randperm(bf_py_random *r, int n, int *out) {
    for (int i = 0; i < n; i++) out[i] = i;
    for (int i = 0; i < n - 1; i++) {
        const int z = (int)(mt_next(r) % (uint32_t)(n - i)), saved = out[i];
        out[i] = out[z + i], out[z + i] = saved;
    }
}

double bf_py_random_random(bf_py_random *r) {
    uint32_t a = mt_next(r) >> 5, b = mt_next(r) >> 6; /* 27 + 26 = 53 bits, a first */
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

/* getrandbits(k) for 1 <= k <= 64: the top k bits of one output for k <= 32; beyond, CPython fills
 * the 32-bit words least significant first, the last one keeping only its top k mod 32 bits. */
static uint64_t py_getrandbits(bf_py_random *r, int k) {
    if (k <= 32) return mt_next(r) >> (32 - k);
    uint64_t low = mt_next(r);
    return low | ((uint64_t)(mt_next(r) >> (64 - k)) << 32);
}

int bf_py_random_randint(bf_py_random *r, int a, int b) {
    if (a > b) return a;
    /* _randbelow(n): k = n.bit_length() (not that of n - 1: n may be 1, which then still draws),
     * then getrandbits(k) until it is below n; n <= 2^32 keeps k <= 33. */
    uint64_t n = (uint64_t)((int64_t)b - (int64_t)a + 1);
    int k = 0;
    while ((n >> k) != 0) k++;
    uint64_t v;
    do {
        v = py_getrandbits(r, k);
    } while (v >= n);
    return (int)((int64_t)a + (int64_t)v);
}

/* ------------------------------------------------------------------ the lines */

bf_line bf_line_random(bf_py_random *r) {
    const int lo = 2, hi = BF_LINE_SIZE - 2; /* endpoints on [2, 30]^2, mirrored through (16, 16) */
    bf_line l;
    if (bf_py_random_random(r) < 0.5) {
        l.x1 = lo;
        l.x2 = hi;
        l.y1 = bf_py_random_randint(r, lo, hi);
        l.y2 = BF_LINE_SIZE - l.y1;
    } else {
        l.y1 = lo;
        l.y2 = hi;
        l.x1 = bf_py_random_randint(r, lo, hi);
        l.x2 = BF_LINE_SIZE - l.x1;
    }
    return l;
}

int bf_line_eval_count(void) {
    return 60;
}

/* One counter-clockwise step (on screen) along the perimeter of [2, 30]^2, as the reference's
 * rotate_point_square: down the left edge, right along the bottom, up the right edge, left along
 * the top. */
static void perimeter_step(int *x, int *y) {
    const int lo = 2, hi = BF_LINE_SIZE - 2;
    if (*x == lo) {
        if (*y < hi) ++*y;
        else ++*x;
    } else if (*x < hi) {
        if (*y == lo) --*x;
        else ++*x;
    } else {
        if (*y > lo) --*y;
        else --*x;
    }
}

bf_line bf_line_eval(int i) {
    bf_line l = {2, BF_LINE_SIZE / 2, BF_LINE_SIZE - 2, BF_LINE_SIZE / 2};
    const int perimeter = 4 * (BF_LINE_SIZE - 4);
    for (int s = 0; s < (i % perimeter); s++) {
        perimeter_step(&l.x1, &l.y1);
        perimeter_step(&l.x2, &l.y2);
    }
    return l;
}

static void set_pixel(float *img, int x, int y) {
    if (x >= 0 && x < BF_LINE_SIZE && y >= 0 && y < BF_LINE_SIZE) img[y * BF_LINE_SIZE + x] = 1.0f;
}

void bf_line_draw(bf_line l, float *img) {
    memset(img, 0, sizeof(float) * BF_LINE_SIZE * BF_LINE_SIZE);
    /* Pillow's line8: Bresenham from (x1, y1) along the major axis (x when |dx| > |dy|; an exact
     * diagonal comes out the same either way), the minor coordinate stepping when the error term is
     * >= 0, which decides the ties of lines through pixel midpoints (> 0 would shift them); it sets
     * the pixels before (x2, y2), and draw_lines then adds (x2, y2) itself. Drawn from the other end,
     * a line can differ, so the direction matters. */
    int dx = l.x2 - l.x1, dy = l.y2 - l.y1;
    int sx = dx < 0 ? -1 : 1, sy = dy < 0 ? -1 : 1;
    dx *= sx;
    dy *= sy;
    int x = l.x1, y = l.y1;
    if (dx > dy) {
        int e = 2 * dy - dx;
        for (int i = 0; i < dx; i++) {
            set_pixel(img, x, y);
            if (e >= 0) {
                y += sy;
                e -= 2 * dx;
            }
            e += 2 * dy;
            x += sx;
        }
    } else {
        int e = 2 * dx - dy;
        for (int i = 0; i < dy; i++) {
            set_pixel(img, x, y);
            if (e >= 0) {
                x += sx;
                e -= 2 * dy;
            }
            e += 2 * dx;
            y += sy;
        }
    }
    set_pixel(img, l.x2, l.y2);
}

/* Python's a // 2 (floor, also for negative a). */
static int floor_half(int a) {
    return a >= 0 ? a / 2 : -((-a + 1) / 2);
}

void bf_line_interrupt(bf_line l, int k, float *img) {
    if (k <= 0) return;
    enum { MAXPIX = BF_LINE_SIZE * BF_LINE_SIZE };
    int pix[MAXPIX]; /* row-major flat indices of the line pixels: numpy's argwhere order */
    int count = 0;
    for (int p = 0; p < MAXPIX; p++)
        if (img[p] > 0.5f) pix[count++] = p;
    int cx = floor_half(l.x1 + l.x2), cy = floor_half(l.y1 + l.y2);
    int best = 0, best_d = -1;
    for (int i = 0; i < count; i++) {
        int row = pix[i] / BF_LINE_SIZE, col = pix[i] % BF_LINE_SIZE;
        int d = (row > cy ? row - cy : cy - row) + (col > cx ? col - cx : cx - col);
        if (best_d < 0 || d < best_d) { /* strict: the first of equally near pixels, as argmin */
            best = i;
            best_d = d;
        }
    }
    int n = k < count - 2 ? k : count - 2;
    if (n <= 0) return;
    int lower = best - n / 2;
    for (int i = lower; i < lower + n; i++) {
        int j = i < 0 ? i + count : i;
        if (j >= 0 && j < count) img[pix[j]] = 0.0f;
    }
}
