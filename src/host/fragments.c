/* fragments.c - S1 and the S2 dynamics of the Net Fragments model (fragments.h;
 * ../shared/specs/netfragments.md sections 2, 3.1, 3.2). The inputs are binary and sparse (a line
 * has about 100 active S1 units) and so is W, so the support is a scatter of every active input
 * through its channel's nonzero weights, not a dense 44 -> 40 11x11 correlation (218 MMAC a step). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "fragments_internal.h"

/* Spec 2.1: integer kernels / 6, channels |, /, -, \. */
static const signed char s1_small[BF_FRAG_S1][25] = {
    {0, -1, 0, -1, 0, 0, -1, 2, -1, 0, 0, -1, 2, -1, 0, 0, -1, 2, -1, 0, 0, -1, 0, -1, 0},
    {0, 0, -1, -1, 0, 0, -1, 0, 2, -1, -1, 0, 2, 0, -1, -1, 2, 0, -1, 0, 0, -1, -1, 0, 0},
    {0, 0, 0, 0, 0, -1, -1, -1, -1, -1, 0, 2, 2, 2, 0, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0},
    {0, -1, -1, 0, 0, -1, 2, 0, -1, 0, -1, 0, 2, 0, -1, 0, -1, 0, 2, -1, 0, 0, -1, -1, 0}};
/* Spec 2.2, the set in effect, in halves (-1 is n = -0.5). */
static const signed char s1_large[BF_FRAG_S1][25] = {
    {-1, -1, 0, -1, -1, 0, -1, 2, -1, 0, -1, -1, 4, -1, -1, 0, -1, 2, -1, 0, -1, -1, 0, -1, -1},
    {-1, 0, -1, -1, 0, 0, -1, -1, 2, -1, -1, -1, 4, -1, -1, -1, 2, -1, -1, 0, 0, -1, -1, 0, -1},
    {-1, 0, -1, 0, -1, -1, -1, -1, -1, -1, 0, 2, 4, 2, 0, -1, -1, -1, -1, -1, -1, 0, -1, 0, -1},
    {0, -1, -1, 0, -1, -1, 2, -1, -1, 0, -1, -1, 4, -1, -1, 0, -1, -1, 2, -1, -1, 0, -1, -1, 0}};

/* The double nearest the shortest decimal that reads back as x: what a config's "1.3" was before it
 * became a float. lambda = 1.3 * 11 is 14.3f in the reference (Python double, then float32), while
 * 1.3f * 11 rounds to the float below it, and a support of exactly 14.3f would be inhibited. */
static double decimal_of(float x) {
    char text[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, (double)x);
        if ((float)strtod(text, NULL) == x) break;
    }
    return strtod(text, NULL);
}

bf_status bf_fragments_create(const bf_fragments_options *opt, bf_fragments **out) {
    *out = NULL;
    if (!opt) return bf_error(BF_ERR_ARG, "bf_fragments_create: no options");
    if (opt->T < 1 || opt->T > BF_FRAG_MAX_T)
        return bf_error(BF_ERR_ARG, "bf_fragments_create: T = %d, expected 1..%d", opt->T, BF_FRAG_MAX_T);
    if (opt->s1_activation < BF_FRAG_S1_THRESHOLD || opt->s1_activation > BF_FRAG_S1_RELU)
        return bf_error(BF_ERR_ARG, "bf_fragments_create: unknown S1 activation %d", (int)opt->s1_activation);
    bf_fragments *f = calloc(1, sizeof *f);
    if (!f) return bf_error(BF_ERR_OOM, "bf_fragments_create: %zu bytes", sizeof *f);
    f->opt = *opt;
    f->lambda = (float)(decimal_of(opt->support_factor) * BF_FRAG_K);
    for (int o = 0; o < BF_FRAG_CELLS; o++) { /* spec 3.1, the A > 1 branch */
        const int centre = FRAG_REACH * BF_FRAG_K + FRAG_REACH;
        f->w[o * FRAG_ROW + (o / BF_FRAG_ALT) * FRAG_TAPS + centre] = 1.0f;
        f->w[o * FRAG_ROW + (BF_FRAG_S1 + o) * FRAG_TAPS + centre] = 1.0f;
    }
    *out = f;
    return BF_OK;
}

void bf_fragments_destroy(bf_fragments *f) { free(f); }

float *bf_fragments_weights(bf_fragments *f) { return f->w; }

void bf_fragments_s1(const bf_fragments *f, const float *img, uint64_t sample, float *s1) {
    const uint64_t seed = bf_seed_derive(f->opt.seed, BF_STREAM_FRAGMENTS_S1, sample);
    const int S = BF_FRAG_SIZE;
    for (int c = 0; c < BF_FRAG_S1; c++) {
        float k[25];
        for (int i = 0; i < 25; i++) /* float32 kernels as the reference's tensors: k / 6, or halves */
            k[i] = f->opt.larger_kernels ? 0.5f * s1_large[c][i] : (float)s1_small[c][i] / 6.0f;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                /* in double, exact for 0/1 images: an exactly cancelling window is 0, never a float32
                 * rounding residue whose sign would depend on the summation order */
                double sum = 0;
                for (int ky = 0; ky < 5; ky++)
                    for (int kx = 0; kx < 5; kx++) {
                        const int iy = y + ky - 2, ix = x + kx - 2;
                        if (iy >= 0 && iy < S && ix >= 0 && ix < S) sum += (double)k[ky * 5 + kx] * img[iy * S + ix];
                    }
                const float a = (float)sum;
                const int i = (c * S + y) * S + x;
                if (f->opt.s1_activation == BF_FRAG_S1_THRESHOLD) s1[i] = a > 0 ? 1.0f : 0.0f;
                else if (f->opt.s1_activation == BF_FRAG_S1_RELU) s1[i] = a > 0 ? a : 0.0f;
                else s1[i] = bf_uniform(seed, (uint64_t)i) < fminf(fmaxf(a, 0.0f), 1.0f) ? 1.0f : 0.0f;
            }
    }
}

/* The sparse view of W, grouped by input channel, and each cell's count of nonzero weights. */
static void build_taps(bf_fragments *f) {
    int n = 0;
    memset(f->nonzero, 0, sizeof f->nonzero);
    for (int c = 0; c < BF_FRAG_INPUTS; c++) {
        f->tap_start[c] = n;
        for (int o = 0; o < BF_FRAG_CELLS; o++) {
            const float *w = f->w + o * FRAG_ROW + c * FRAG_TAPS;
            for (int k = 0; k < FRAG_TAPS; k++)
                if (w[k] > 0) {
                    f->taps[n++] = (frag_tap){(int16_t)o, (int8_t)(k / BF_FRAG_K - FRAG_REACH),
                                              (int8_t)(k % BF_FRAG_K - FRAG_REACH), w[k]};
                    f->nonzero[o]++;
                }
        }
    }
    f->tap_start[BF_FRAG_INPUTS] = n;
}

/* s[o, p] = sum over active inputs (c, q) and taps with q = p + (dy, dx) of W[o, c, dy, dx], summed in
 * double (order-free; rounded to float where it is read); at t = 0 also the match counts m of 3.2. */
static void scatter_support(bf_fragments *f, int n_active, int count_matches) {
    const int S = BF_FRAG_SIZE;
    for (int i = 0; i < f->n_touched; i++) { /* back to zero where the last step wrote */
        const int p = f->touched_list[i];
        memset(f->acc + p * BF_FRAG_CELLS, 0, BF_FRAG_CELLS * sizeof *f->acc);
        memset(f->match + p * BF_FRAG_CELLS, 0, BF_FRAG_CELLS * sizeof *f->match);
        f->touched[p] = 0;
    }
    f->n_touched = 0;
    for (int a = 0; a < n_active; a++) {
        const int c = f->active[a] / FRAG_PIX, qy = f->active[a] % FRAG_PIX / S, qx = f->active[a] % S;
        for (int t = f->tap_start[c]; t < f->tap_start[c + 1]; t++) {
            const frag_tap *tap = &f->taps[t];
            const int py = qy - tap->dy, px = qx - tap->dx;
            if (py < 0 || py >= S || px < 0 || px >= S) continue;
            const int p = py * S + px;
            f->acc[p * BF_FRAG_CELLS + tap->o] += tap->w;
            f->match[p * BF_FRAG_CELLS + tap->o] += count_matches;
            if (!f->touched[p]) f->touched[p] = 1, f->touched_list[f->n_touched++] = p;
        }
    }
}

/* select_alternatives (3.2) at t = 0: per group and pixel the alternative with the largest
 * 3m - n_W - n_X (n_X is the same for all of them), the lowest index on ties as torch.argmax. Where no
 * input reaches, m = 0 and the cell with the fewest nonzero weights wins. */
static void select_alternatives(bf_fragments *f) {
    for (int g = 0; g < BF_FRAG_S1; g++) {
        int fewest = 0;
        for (int a = 1; a < BF_FRAG_ALT; a++)
            if (f->nonzero[g * BF_FRAG_ALT + a] < f->nonzero[g * BF_FRAG_ALT + fewest]) fewest = a;
        memset(f->alt + g * FRAG_PIX, fewest, FRAG_PIX);
        for (int i = 0; i < f->n_touched; i++) {
            const int p = f->touched_list[i];
            int best = 0, best_score = 0;
            for (int a = 0; a < BF_FRAG_ALT; a++) {
                const int o = g * BF_FRAG_ALT + a, score = 3 * f->match[p * BF_FRAG_CELLS + o] - f->nonzero[o];
                if (a == 0 || score > best_score) best = a, best_score = score;
            }
            f->alt[g * FRAG_PIX + p] = (uint8_t)best;
        }
    }
}

/* torch.pow(float tensor, exponent) on the CPU: its special cases, else the float pow. */
static float torch_pow(float x, float e) {
    if (e == 2.0f) return x * x;
    if (e == 3.0f) return x * x * x;
    if (e == 0.5f) return sqrtf(x);
    if (e == -0.5f) return 1.0f / sqrtf(x);
    if (e == -1.0f) return 1.0f / x;
    if (e == -2.0f) return 1.0f / (x * x);
    return powf(x, e);
}

/* One cell's state from its normalised support r at step t: r^gamma >= theta (a negative r to a
 * non-integer power is NaN and stays off), or Bernoulli(clip(clip(r, 0, 1)^gamma, 0, 1)). */
static float cell_state(const bf_fragments_options *o, float r, int t, uint64_t seed, uint64_t draw) {
    if (o->theta >= 0) return torch_pow(r, o->gamma[t]) >= o->theta ? 1.0f : 0.0f;
    const float p = fminf(fmaxf(torch_pow(fminf(fmaxf(r, 0.0f), 1.0f), o->gamma[t]), 0.0f), 1.0f);
    return bf_uniform(seed, draw) < p ? 1.0f : 0.0f;
}

void bf_fragments_track_support(bf_fragments *f, bf_fragments_support *acc) { f->support = acc; }

/* One step's support statistics into f->support: s of every cell split by its new state zt. The
 * cells of untouched pixels have s = 0 and the state of r = 0 (z_zero), so they are counted at once.
 * With z_zero = 0 the active cells are the step's list (f->active from first_s2 to n_active), marked
 * in the support's layout so that the pass over it reads memory in order. */
static void add_support_statistics(bf_fragments *f, const float *zt, float z_zero, const float *denom, int first_s2,
                                   int n_active) {
    const int listed = z_zero == 0;
    for (int a = first_s2; listed && a < n_active; a++) {
        const int i = f->active[a] - BF_FRAG_S1 * FRAG_PIX;
        f->on[i % FRAG_PIX * BF_FRAG_CELLS + i / FRAG_PIX] = 1;
    }
    /* over the touched pixels' cells, without branches: all of them, and the active ones (a = 1);
     * the inactive side's count and sums are the differences */
    double all = 0, sum_all = 0, sq_all = 0, n1 = 0, sum1 = 0, sq1 = 0;
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    for (int i = 0; i < f->n_touched; i++) {
        const int p = f->touched_list[i];
        uint8_t on[BF_FRAG_CELLS];
        for (int o = 0; o < BF_FRAG_CELLS; o++)
            on[o] = listed ? f->on[p * BF_FRAG_CELLS + o] : zt[o * FRAG_PIX + p] > 0.5f;
        double lo0 = lo[0], hi0 = hi[0], lo1 = lo[1], hi1 = hi[1];
        for (int o = 0; o < BF_FRAG_CELLS; o++) {
            const double s = (float)f->acc[p * BF_FRAG_CELLS + o], a = on[o]; /* the float the reference's conv gives */
            sum_all += s, sq_all += s * s, n1 += a, sum1 += a * s, sq1 += a * s * s;
            const double s1 = on[o] ? s : INFINITY, s0 = on[o] ? INFINITY : s;
            const double t1 = on[o] ? s : -INFINITY, t0 = on[o] ? -INFINITY : s;
            lo1 = s1 < lo1 ? s1 : lo1, lo0 = s0 < lo0 ? s0 : lo0, hi1 = t1 > hi1 ? t1 : hi1, hi0 = t0 > hi0 ? t0 : hi0;
        }
        all += BF_FRAG_CELLS;
        lo[0] = lo0, hi[0] = hi0, lo[1] = lo1, hi[1] = hi1;
    }
    double n[2] = {all - n1, n1}, sum[2] = {sum_all - sum1, sum1}, sq[2] = {sq_all - sq1, sq1};
    const int zero_side = z_zero > 0.5f; /* the untouched pixels' cells: s = 0 */
    const double zeros = (double)(FRAG_PIX - f->n_touched) * BF_FRAG_CELLS;
    if (zeros > 0) n[zero_side] += zeros, lo[zero_side] = fmin(lo[zero_side], 0), hi[zero_side] = fmax(hi[zero_side], 0);
    for (int a = first_s2; listed && a < n_active; a++) {
        const int i = f->active[a] - BF_FRAG_S1 * FRAG_PIX;
        f->on[i % FRAG_PIX * BF_FRAG_CELLS + i / FRAG_PIX] = 0;
    }
    bf_fragments_support *acc = f->support;
    acc->steps++;
    for (int side = 0; side < 2; side++) {
        if (n[side] == 0) continue;
        const double mean = sum[side] / n[side];
        acc->sides[side]++;
        acc->mean[side] += mean;
        acc->std[side] += n[side] > 1 ? sqrt(fmax(sq[side] - n[side] * mean * mean, 0) / (n[side] - 1)) : NAN;
        acc->min[side] += lo[side], acc->max[side] += hi[side];
    }
    double norm = 0;
    for (int g = 0; g < BF_FRAG_S1; g++) norm += denom[g] / BF_FRAG_S1;
    acc->norm_factor += norm;
}

bf_status bf_fragments_run(bf_fragments *f, const float *s1, uint64_t sample, float *z, float *r) {
    if (!f || !s1 || !z) return bf_error(BF_ERR_ARG, "bf_fragments_run: NULL argument");
    const bf_fragments_options *o = &f->opt;
    const uint64_t seed = bf_seed_derive(o->seed, BF_STREAM_FRAGMENTS_S2, sample);
    const float lambda = f->lambda;
    build_taps(f);
    int n_s1 = 0; /* x = bin(concat(f, z)), bin(v) = 1[v > 0.5]: the S1 part is fixed */
    for (int i = 0; i < BF_FRAG_S1 * FRAG_PIX; i++)
        if (s1[i] > 0.5f) f->active[n_s1++] = i;
    int n_active = n_s1;
    for (int t = 0; t < o->T; t++) {
        scatter_support(f, n_active, t == 0);
        if (t == 0) select_alternatives(f);
        /* inhibition, then the mask, then the per-group max (masked cells count as 0) */
        float selected[BF_FRAG_S1][FRAG_PIX], group_max[BF_FRAG_S1] = {0, 0, 0, 0}, denom[BF_FRAG_S1];
        for (int i = 0; i < f->n_touched; i++) {
            const int p = f->touched_list[i];
            for (int g = 0; g < BF_FRAG_S1; g++) {
                const int cell = g * BF_FRAG_ALT + f->alt[g * FRAG_PIX + p];
                const float s = (float)f->acc[p * BF_FRAG_CELLS + cell];
                const float inhibited = s < lambda ? s : lambda - 0.5f * (s - lambda);
                selected[g][p] = inhibited;
                if (inhibited > group_max[g]) group_max[g] = inhibited;
            }
        }
        for (int g = 0; g < BF_FRAG_S1; g++) denom[g] = 1e-10f + group_max[g];
        /* every unreached or masked cell has r = 0 and so the same state */
        float *zt = z + (size_t)t * FRAG_STATE, *rt = r ? r + (size_t)t * FRAG_STATE : NULL;
        const float z_zero = cell_state(o, 0.0f, t, seed, 0);
        for (int i = 0; i < FRAG_STATE; i++) zt[i] = z_zero;
        if (rt) memset(rt, 0, FRAG_STATE * sizeof *rt);
        n_active = n_s1; /* the next step's input: S1 and this state */
        for (int i = 0; i < f->n_touched; i++) {
            const int p = f->touched_list[i];
            for (int g = 0; g < BF_FRAG_S1; g++) {
                const int cell = g * BF_FRAG_ALT + f->alt[g * FRAG_PIX + p];
                const float rr = selected[g][p] / denom[g];
                if (rt) rt[cell * FRAG_PIX + p] = rr;
                zt[cell * FRAG_PIX + p] = cell_state(o, rr, t, seed, (uint64_t)t * FRAG_STATE + cell * FRAG_PIX + p);
                if (zt[cell * FRAG_PIX + p] > 0.5f && z_zero == 0) f->active[n_active++] = BF_FRAG_S1 * FRAG_PIX + cell * FRAG_PIX + p;
            }
        }
        if (z_zero != 0) /* theta <= 0 (or gamma <= 0): the cells nothing reaches are on too */
            for (int i = 0; i < FRAG_STATE; i++)
                if (zt[i] > 0.5f) f->active[n_active++] = BF_FRAG_S1 * FRAG_PIX + i;
        if (f->support) add_support_statistics(f, zt, z_zero, denom, n_s1, n_active);
    }
    return BF_OK;
}

void bf_fragments_merge(const float *z, float *merged) {
    for (int g = 0; g < BF_FRAG_S1; g++)
        for (int p = 0; p < FRAG_PIX; p++) {
            float m = z[g * BF_FRAG_ALT * FRAG_PIX + p];
            for (int a = 1; a < BF_FRAG_ALT; a++) m = fmaxf(m, z[(g * BF_FRAG_ALT + a) * FRAG_PIX + p]);
            merged[g * FRAG_PIX + p] = m;
        }
}
