/* differential_evolution.c - the best1bin differential evolution of differential_evolution.h. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "differential_evolution.h"

/* The solver's stream of draws: uniform doubles with 53 random bits, one counter after another. */
typedef struct de_rng {
    uint64_t seed, counter;
} de_rng;

static double uniform(de_rng *g) { return (double)(bf_hash2(g->seed, g->counter++) >> 11) * 0x1.0p-53; }

static int below(de_rng *g, int n) { /* uniform in 0 .. n - 1 */
    const int i = (int)(uniform(g) * n);
    return i < n ? i : n - 1;
}

typedef struct de_state {
    const bf_de_options *o;
    double *members, *trials; /* members x parameters each */
    double *energy, *trial_energy;
    int *flag, *trial_flag;
} de_state;

static double *member(const de_state *s, double *rows, int i) { return rows + (size_t)i * s->o->parameters; }

/* Trial c from member c: b' = best + F (r0 - r1), crossed over, redrawn where outside [0, 1]. */
static void mutate(de_state *s, de_rng *g, int c, double F) {
    const int P = s->o->parameters, M = s->o->members;
    int r0 = below(g, M - 1), r1 = below(g, M - 2);
    r0 += r0 >= c; /* a member other than c */
    r1 += r1 >= (c < r0 ? c : r0), r1 += r1 >= (c < r0 ? r0 : c); /* other than c and r0 */
    const double *best = member(s, s->members, 0), *a = member(s, s->members, r0), *b = member(s, s->members, r1);
    double *trial = member(s, s->trials, c);
    memcpy(trial, member(s, s->members, c), (size_t)P * sizeof *trial);
    const int fill = below(g, P);
    for (int j = 0; j < P; j++)
        if (j == fill || uniform(g) < s->o->recombination) trial[j] = best[j] + F * (a[j] - b[j]);
    for (int j = 0; j < P; j++)
        if (trial[j] < 0 || trial[j] > 1) trial[j] = uniform(g);
}

static void swap_into_best(de_state *s, int i) {
    const int P = s->o->parameters;
    for (int j = 0; j < P; j++) {
        const double t = s->members[j];
        s->members[j] = member(s, s->members, i)[j];
        member(s, s->members, i)[j] = t;
    }
    const double e = s->energy[0];
    const int f = s->flag[0];
    s->energy[0] = s->energy[i], s->energy[i] = e;
    s->flag[0] = s->flag[i], s->flag[i] = f;
}

static void take_trial(de_state *s, int into, int c) {
    memcpy(member(s, s->members, into), member(s, s->trials, c), (size_t)s->o->parameters * sizeof(double));
    s->energy[into] = s->trial_energy[c];
    s->flag[into] = s->trial_flag[c];
}

bf_status bf_differential_evolution(const bf_de_options *o, bf_de_score score, void *context, double *best,
                                    double *energy) {
    if (o->parameters < 1 || o->members < 3 || o->generations < 0 || !(o->mutation_lo <= o->mutation_hi))
        return bf_error(BF_ERR_ARG, "differential evolution: %d parameters, %d members (3 or more), %d generations, "
                        "mutation [%g, %g)", o->parameters, o->members, o->generations, o->mutation_lo, o->mutation_hi);
    const size_t P = (size_t)o->parameters, M = (size_t)o->members;
    de_state s = {.o = o, .members = malloc(2 * M * P * sizeof(double)), .energy = malloc(2 * M * sizeof(double)),
                  .flag = malloc(2 * M * sizeof(int))};
    if (!s.members || !s.energy || !s.flag) {
        free(s.members), free(s.energy), free(s.flag);
        return bf_error(BF_ERR_OOM, "differential evolution: out of host memory");
    }
    s.trials = s.members + M * P, s.trial_energy = s.energy + M, s.trial_flag = s.flag + M;
    de_rng g = {.seed = o->seed};
    for (size_t i = 0; i < M * P; i++) s.members[i] = uniform(&g);
    bf_status st = score(context, s.members, (int)M, s.energy, s.flag);
    if (st == BF_OK) {
        size_t lowest = 0;
        for (size_t i = 1; i < M; i++) lowest = s.energy[i] < s.energy[lowest] ? i : lowest;
        swap_into_best(&s, (int)lowest);
    }
    for (int generation = 0; st == BF_OK && generation < o->generations; generation++) {
        const double F = o->mutation_lo + uniform(&g) * (o->mutation_hi - o->mutation_lo);
        for (int c = 0; c < (int)M; c++) mutate(&s, &g, c, F);
        st = score(context, s.trials, (int)M, s.trial_energy, s.trial_flag);
        for (int c = 0; st == BF_OK && c < (int)M; c++)
            if (s.trial_energy[c] < s.energy[c]) {
                take_trial(&s, c, c);
                if (s.trial_energy[c] < s.energy[0]) take_trial(&s, 0, c);
            }
        if (s.flag[0]) break;
    }
    if (st == BF_OK) {
        memcpy(best, s.members, P * sizeof *best);
        if (energy) *energy = s.energy[0];
    }
    free(s.members), free(s.energy), free(s.flag);
    return st;
}
