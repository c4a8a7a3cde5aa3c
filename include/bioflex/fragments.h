/* fragments.h - the Net Fragments model of ../shared/specs/netfragments.md on the host CPU: the fixed S1
 * orientation filters (spec 2), the S2 lateral layer's recurrent dynamics with its alternative-cell
 * selection (3.2) and its Hebbian rule (3.3), one sample at a time (batch 1, as the reference: the
 * mask and the rule's means are per sample, spec 9).
 *
 * Exactness: the reference's threshold decisions come out the same. Support sums are taken in double
 * and rounded once to float (what a float32 correlation gives up to its summation order; the sums of
 * S1 and of the Hebbian counts are exact), and every later step (inhibition, masking, the per-group
 * max, the division, powf, the min-max normalisation, W + 0.2 u, the clip) is float32 in the order
 * the reference writes it. tests/test_fragments.c compares with a PyTorch transcription. */
#ifndef BIOFLEX_FRAGMENTS_H
#define BIOFLEX_FRAGMENTS_H

#include <stdint.h>

#include "bioflex/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BF_FRAG_SIZE 32        /* image side */
#define BF_FRAG_S1 4           /* S1 orientation channels */
#define BF_FRAG_ALT 10         /* alternative cells per orientation */
#define BF_FRAG_CELLS 40       /* S2 cells per pixel */
#define BF_FRAG_INPUTS 44      /* S2 input channels: S1 and the previous S2 state */
#define BF_FRAG_K 11           /* S2 kernel side (locality 5) */
#define BF_FRAG_MAX_T 16

typedef enum { BF_FRAG_S1_THRESHOLD = 0, BF_FRAG_S1_BERNOULLI, BF_FRAG_S1_RELU } bf_frag_s1_activation;

typedef struct bf_fragments_options {
    int larger_kernels;              /* S1 section 2.2 instead of 2.1 */
    bf_frag_s1_activation s1_activation;
    int T;                           /* time steps (max_timesteps), <= BF_FRAG_MAX_T */
    float theta;                     /* act_threshold; < 0: bernoulli */
    float gamma[BF_FRAG_MAX_T];      /* the power of step t (square_factor) */
    float support_factor;            /* lambda = support_factor * 11 */
    float lr;                        /* eta, 0.2 */
    int neg_corr;                    /* 1: the three-term rule (every config), 0: the first term only */
    int hebb_binarised;              /* the rule's S1 input as the forward pass sees it (> 0.5), not
                                        min(x, 1) with x == 0 inactive (spec quirk 25; experimental) */
    uint64_t seed;                   /* the Bernoulli draws (bioflex's counter RNG, include/bioflex/hash.h) */
} bf_fragments_options;

typedef struct bf_fragments bf_fragments;   /* W [40][44][11][11] float32 plus scratch */

/* W as section 3.1's init: per cell o a 1 at the centre of its own S1 channel (o / 10) and of itself
 * (4 + o). BF_ERR_ARG for T outside 1..BF_FRAG_MAX_T or an unknown S1 activation. */
bf_status bf_fragments_create(const bf_fragments_options *opt, bf_fragments **out);
void bf_fragments_destroy(bf_fragments *f);
/* 40*44*121 floats, index ((o*44 + c)*11 + ky)*11 + kx. The caller may overwrite them (a checkpoint)
 * with values in [0, 1]; the next run reads them. */
float *bf_fragments_weights(bf_fragments *f);

/* S1 of a 32x32 image (0/1 floats): s1 [4][32][32]; draws (Bernoulli) keyed by `sample` */
void bf_fragments_s1(const bf_fragments *f, const float *img, uint64_t sample, float *s1);
/* T steps of S2 from z = 0 on s1 (which may be noisy): z [T][40][32][32] binary states after each
 * step, r (nullable) [T][40][32][32] the normalised support; draws keyed by `sample` */
bf_status bf_fragments_run(bf_fragments *f, const float *s1, uint64_t sample, float *z, float *r);
/* the Hebbian update of section 3.3 from s1 and the T states z (y = their lower median over time) */
bf_status bf_fragments_hebbian(bf_fragments *f, const float *s1, const float *z);
/* The reference's support monitor (spec 3.2, logged per forward call and averaged per epoch as
 * S2/avg|std|min|max_support_active|inactive and S2/norm_factor; plot_support.py's figure): at every
 * step of every run while it is tracked, the raw support s = W * x of all 40 x 32 x 32 cells (before
 * inhibition and the mask) is split by the cell's state after the step, and each side's mean,
 * standard deviation (unbiased, torch.std's), minimum and maximum are added here, with the mean over
 * the four groups of the step's normalisation (1e-10 + the group's largest masked, inhibited
 * support). A step without active (or inactive) cells adds nothing to that side. */
typedef struct bf_fragments_support {
    long steps;                 /* steps seen */
    long sides[2];              /* of them, those with inactive [0] and with active [1] cells */
    double mean[2], std[2], min[2], max[2]; /* the sums of each step's statistics, [0] inactive, [1] active */
    double norm_factor;         /* the sum over the steps of the mean normalisation */
} bf_fragments_support;
/* Adds the support statistics of every later bf_fragments_run to *acc (NULL: no longer). */
void bf_fragments_track_support(bf_fragments *f, bf_fragments_support *acc);
/* merge_alt_channels: [4][32][32] max over each group's 10 alternatives of one state [40][32][32] */
void bf_fragments_merge(const float *z, float *merged);

#ifdef __cplusplus
}
#endif
#endif
