/* conv_pick.h - internal: which of cuDNN's benchmarked convolution algorithms to keep, when the
 * fastest would grow the separate workspace ([run] conv_workspace_slack).
 *
 * The fastest algorithm of a shape may need a workspace of hundreds of MiB to GiB, held for the
 * whole run in the separate cuDNN workspace unless it fits in the activation memory dead during its
 * layer's pass (conv.cu's workspace hints). Another algorithm is often within a few percent of it
 * and needs far less. So the search keeps the fastest algorithm that fits in the room already held
 * (the hint, or the separate workspace as large as earlier choices made it) if it is at most `slack`
 * (a fraction) slower than the fastest; otherwise the fastest. Plain C, so that the CPU tests check
 * the rule (tests/test_conv_pick.c); conv.cu fills the candidates from cuDNN's results. */
#ifndef BIOFLEX_CONV_PICK_H
#define BIOFLEX_CONV_PICK_H

#include <stddef.h>

typedef struct bf_conv_candidate {
    float time_ms;  /* cuDNN's measured time */
    size_t memory;  /* the workspace it needs */
    int usable;     /* it ran, and the precision, determinism and the search limit allow it */
} bf_conv_candidate;

/* The index to run: among the usable candidates (in cuDNN's order, fastest first), `fastest` (the
 * first usable one) unless its memory exceeds room and a usable candidate with memory <= room takes
 * at most (1 + slack) times its time, in which case the fastest such. -1 if none is usable. */
static inline int bf_conv_pick_within_room(const bf_conv_candidate *c, int count, size_t room, float slack) {
    int fastest = -1;
    for (int i = 0; i < count && fastest < 0; i++)
        if (c[i].usable) fastest = i;
    if (fastest < 0 || c[fastest].memory <= room || !(slack > 0.0f)) return fastest;
    const double budget = (double)c[fastest].time_ms * (1.0 + (double)slack);
    int best = fastest;
    for (int i = 0; i < count; i++) {
        if (!c[i].usable || c[i].memory > room || !((double)c[i].time_ms <= budget)) continue;
        if (best == fastest || c[i].time_ms < c[best].time_ms) best = i;
    }
    return best;
}

#endif
