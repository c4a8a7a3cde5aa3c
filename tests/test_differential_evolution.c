/* test_differential_evolution.c - the differential evolution behind the one-pixel attack
 * (differential_evolution.h), on functions whose minimum is known:
 *   - a shifted sphere in 4 dimensions: the best member ends within 1e-3 of the centre, and its
 *     energy is the function there;
 *   - the same seed gives the same search, another seed another one;
 *   - every candidate stays in [0, 1], and each generation scores the whole population at once;
 *   - a flagged best member stops the search after that generation;
 *   - with 0 generations the result is the best of the random start;
 *   - bad options are refused. */
#include <math.h>
#include <string.h>

#include "differential_evolution.h"
#include "testutil.h"

enum { P = 4, M = 20 };
static const double CENTRE[P] = {0.2, 0.7, 0.45, 0.9};

typedef struct sphere {
    int calls, scored, outside, wrong_count;
    double stop_below;  /* flag candidates with energy below this */
    double lowest_start; /* the lowest energy of the first call */
} sphere;

static bf_status score(void *context, const double *candidates, int count, double *energy, int *flag) {
    sphere *s = context;
    s->wrong_count += count != M;
    for (int i = 0; i < count; i++) {
        double sum = 0;
        for (int j = 0; j < P; j++) {
            const double v = candidates[i * P + j];
            s->outside += v < 0 || v > 1;
            sum += (v - CENTRE[j]) * (v - CENTRE[j]);
        }
        energy[i] = sum;
        flag[i] = sum < s->stop_below;
        if (s->calls == 0 && (i == 0 || sum < s->lowest_start)) s->lowest_start = sum;
    }
    s->calls++;
    s->scored += count;
    return BF_OK;
}

static bf_de_options options(uint64_t seed, int generations) {
    return (bf_de_options){.parameters = P, .members = M, .generations = generations, .mutation_lo = 0.5,
                           .mutation_hi = 1.0, .recombination = 0.7, .seed = seed};
}

int main(void) {
    double best[P], again[P], other[P], energy = -1;
    sphere s = {0}, s2 = {0}, s3 = {0};
    bf_de_options o = options(7, 200);
    CHECK_OK(bf_differential_evolution(&o, score, &s, best, &energy));
    double distance = 0, at_best = 0;
    for (int j = 0; j < P; j++) distance = fmax(distance, fabs(best[j] - CENTRE[j]));
    for (int j = 0; j < P; j++) at_best += (best[j] - CENTRE[j]) * (best[j] - CENTRE[j]);
    CHECK(distance < 1e-3, "the sphere's minimum found: largest distance %g", distance);
    CHECK(energy == at_best, "the energy is the function at the best member: %g vs %g", energy, at_best);
    CHECK(s.calls == 201 && s.scored == 201 * M && s.wrong_count == 0,
          "the start and each of 200 generations scored the whole population at once: %d calls, %d candidates", s.calls,
          s.scored);
    CHECK(s.outside == 0, "every candidate in [0, 1] (%d outside)", s.outside);

    CHECK_OK(bf_differential_evolution(&o, score, &s2, again, NULL));
    CHECK(memcmp(best, again, sizeof best) == 0, "the same seed searches the same way");
    o.seed = 8;
    o.generations = 5;
    CHECK_OK(bf_differential_evolution(&o, score, &s3, other, NULL));
    CHECK(memcmp(best, other, sizeof best) != 0, "another seed searches another way");

    sphere stop = {.stop_below = 0.05};
    o = options(7, 200);
    CHECK_OK(bf_differential_evolution(&o, score, &stop, best, &energy));
    CHECK(stop.calls < 200 && energy < 0.05, "a flagged best member stops the search: %d calls, energy %g", stop.calls,
          energy);

    sphere start = {0};
    o.generations = 0;
    CHECK_OK(bf_differential_evolution(&o, score, &start, best, &energy));
    CHECK(start.calls == 1 && energy == start.lowest_start, "0 generations: the best of the start (%g, lowest %g)", energy,
          start.lowest_start);

    o.members = 2;
    CHECK(bf_differential_evolution(&o, score, &start, best, NULL) == BF_ERR_ARG, "2 members are refused");
    o = options(7, -1);
    CHECK(bf_differential_evolution(&o, score, &start, best, NULL) == BF_ERR_ARG, "negative generations are refused");
    return bf_test_finish();
}
