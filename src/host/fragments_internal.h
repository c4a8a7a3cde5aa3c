/* fragments_internal.h - the state bf_fragments keeps (fragments.c: S1 and the S2 dynamics;
 * fragments_hebbian.c: the learning rule). */
#ifndef BIOFLEX_FRAGMENTS_INTERNAL_H
#define BIOFLEX_FRAGMENTS_INTERNAL_H

#include <stdint.h>

#include "bioflex/fragments.h"

#define FRAG_PIX (BF_FRAG_SIZE * BF_FRAG_SIZE)                    /* 1024 */
#define FRAG_TAPS (BF_FRAG_K * BF_FRAG_K)                         /* 121 */
#define FRAG_ROW (BF_FRAG_INPUTS * FRAG_TAPS)                     /* 5324: one cell's weights */
#define FRAG_WEIGHTS (BF_FRAG_CELLS * FRAG_ROW)                   /* 212,960 */
#define FRAG_STATE (BF_FRAG_CELLS * FRAG_PIX)                     /* 40,960: one S2 state */
#define FRAG_REACH (BF_FRAG_K / 2)                                /* 5 */

/* A nonzero weight as the support's scatter reads it: input channel c at offset (dy, dx) feeds cell o. */
/* One nonzero input of the Hebbian rule's X: channel c at pixel q, x~ = clip(x, 0, 1). */
typedef struct frag_input {
    int c, qy, qx;
    double clipped;
} frag_input;

typedef struct frag_tap {
    int16_t o;
    int8_t dy, dx;
    float w;
} frag_tap;

struct bf_fragments {
    bf_fragments_options opt;
    float lambda;                     /* the inhibition's support limit, float32 as the reference */
    float w[FRAG_WEIGHTS];
    /* the sparse view of w, rebuilt by every run (the caller may have written w) */
    frag_tap taps[FRAG_WEIGHTS];
    int tap_start[BF_FRAG_INPUTS + 1];
    int nonzero[BF_FRAG_CELLS];       /* n_W of each cell */
    /* one step's support and the t = 0 match counts, [pixel][cell]; zero outside the touched pixels */
    double acc[FRAG_STATE];
    int match[FRAG_STATE];
    uint8_t touched[FRAG_PIX];
    int touched_list[FRAG_PIX], n_touched;
    uint8_t alt[BF_FRAG_S1 * FRAG_PIX]; /* the chosen alternative of each (group, pixel) */
    int active[BF_FRAG_INPUTS * FRAG_PIX];
    bf_fragments_support *support;    /* nullable: where bf_fragments_run adds its support statistics */
    uint8_t on[FRAG_STATE];           /* the support statistics' scratch: the step's active cells, [pixel][cell] */
    /* the Hebbian sums: zero outside hits */
    double pos[FRAG_WEIGHTS];
    int nonzero_count[FRAG_WEIGHTS];
    int hits[FRAG_WEIGHTS], n_hits;
    double colsum[FRAG_ROW];
    frag_input inputs[BF_FRAG_INPUTS * FRAG_PIX];
    int ys[FRAG_STATE];               /* the cells (o * 1024 + p) of y = 1 */
};

#endif
