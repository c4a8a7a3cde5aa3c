/* analysis.h - analyses of a trained model (PlasticFlex spec section 7).
 *
 * Loss surface (section 7.3): the loss and top-1 on a 2-D plane through the trained weights theta,
 * theta + a d1 + b d2 over a grid of (a, b), for two random directions d1, d2 over every parameter
 * (buffers, such as batch-norm's running statistics, are left as they are; evaluation mode).
 *   filter_normalized (the default; Li et al. 2018, "Visualizing the loss landscape of neural nets",
 *     what the reference means to do): d ~ N(0, 1) per element; in a tensor of 2 or more dimensions
 *     each slice along dimension 0 (an output filter or row) is scaled to the norm of the same slice
 *     of theta; 1-D tensors (biases, batch-norm's gamma and beta) get 0. The grid's coefficients run
 *     evenly over [-distance, distance].
 *   reference (PlasticFlex's vendored loss_landscapes random_plane): d ~ U[0, 1); d2 minus its
 *     projection on d1 (one Gram-Schmidt step over all parameters); then each direction filter by
 *     filter as above, 1-D tensors scaled whole to their norm in theta; then each scaled to a norm of
 *     norm(theta) x distance / steps. The coefficients are the integers -steps/2 .. steps - steps/2 - 1,
 *     so the plane spans about +-distance/2 norm(theta) (the reference's serpentine walk, whose
 *     second coordinate is one step off on odd columns, is not reproduced).
 * Both draw from the seed with the counter RNG (hash.h): the same directions on every backend. */
#ifndef BIOFLEX_ANALYSIS_H
#define BIOFLEX_ANALYSIS_H

#include <stdint.h>
#include <stdio.h>

#include "bioflex/data.h"
#include "bioflex/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bf_surface_directions {
    BF_SURFACE_FILTER_NORMALIZED = 0,
    BF_SURFACE_REFERENCE = 1,
} bf_surface_directions;

typedef struct bf_loss_surface_options {
    int steps;          /* grid points along each direction (>= 2) */
    float distance;
    int batches;        /* loader batches scored per point (0 = the whole split) */
    bf_surface_directions directions;
    uint64_t seed;
} bf_loss_surface_options;

/* d1 and d2 (each m->num_param_floats host floats) for the weights theta (host floats, the model's
 * parameter layout). */
bf_status bf_loss_surface_directions(const bf_model *m, const float *theta, const bf_loss_surface_options *o,
                                     float *d1, float *d2);

/* The coefficient of grid point i (0 .. steps-1) along either direction. */
double bf_loss_surface_coefficient(const bf_loss_surface_options *o, int i);

/* Scores every grid point with bf_evaluate_batches (the loader's first o->batches batches; use an
 * unshuffled loader so that every point sees the same images) and writes one CSV line per point,
 * "alpha,beta,loss,top1", after '#' comment lines that say what was computed and a header line.
 * The model's parameters are restored exactly afterwards. *center_loss (nullable): the loss at
 * (0, 0) when the grid has that point (an odd steps), else at the point nearest to it. */
bf_status bf_loss_surface(bf_model *m, bf_loader *loader, float label_smoothing, const bf_loss_surface_options *o,
                          FILE *csv, double *center_loss);

#ifdef __cplusplus
}
#endif

#endif
