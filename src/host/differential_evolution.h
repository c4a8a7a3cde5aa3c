/* differential_evolution.h - minimisation by differential evolution (Storn and Price 1997), as the
 * variant torchattacks' OnePixel vendors (scipy's best1bin solver changed to evaluate a whole
 * generation in one call, so that a network scores its candidates as one batch) (internal).
 *
 * Parameters live in [0, 1]^parameters; the caller scales them. With `members` candidates:
 *   start:       every member uniform in [0, 1); all scored; the best swapped into place 0;
 *   generation:  F drawn uniform in [mutation_lo, mutation_hi); for each member c a trial
 *                  b' = best + F (member r0 - member r1), r0 != r1 two random members other than c,
 *                crossed with member c (each parameter from b' with probability recombination,
 *                one random parameter always), a parameter outside [0, 1] redrawn uniform; all
 *                trials scored in one call; then in member order a trial better than its member
 *                replaces it, and one better than the best (place 0) replaces the best too;
 *   stop:        after `generations` generations, or after a generation whose best member the
 *                scoring flagged (the attack's success).
 * Draws are a pure function of seed. */
#ifndef BIOFLEX_DIFFERENTIAL_EVOLUTION_H
#define BIOFLEX_DIFFERENTIAL_EVOLUTION_H

#include <stdint.h>

#include "bioflex/status.h"

/* Scores count candidates (count x parameters values, row by row): energy[i] (lower is better)
 * and flag[i] (nonzero: the candidate meets the goal). */
typedef bf_status (*bf_de_score)(void *context, const double *candidates, int count, double *energy, int *flag);

typedef struct bf_de_options {
    int parameters;
    int members;             /* at least 3 */
    int generations;         /* 0: the best of the random start */
    double mutation_lo, mutation_hi;
    double recombination;    /* crossover probability; 1: every parameter from b' */
    uint64_t seed;
} bf_de_options;

/* best (parameters values) = the best member at the end; *energy its energy (nullable). */
bf_status bf_differential_evolution(const bf_de_options *o, bf_de_score score, void *context, double *best,
                                    double *energy);

#endif
