/* attack_loss.h - the per-image losses of the attacks that do not use cross-entropy (internal; the
 * attacks are in analysis.h). Both work on one image's K logits on the host: a batch's logits are
 * a few kilobytes, and these run once per forward of an analysis, not per training step.
 *
 * Jitter (torchattacks 3.5.1's Jitter, untargeted; Schwinn et al. 2021):
 *     N = max_k |z_k|,  p = softmax(scale * z / N),  h = p + std * noise,
 *     cost = (1/K) sum_k (h_k - [k == label])^2
 *   dz = d cost / d z, through the softmax and through N (PyTorch's infinity norm: its gradient
 *   sign(z_j) shared evenly by the j where |z_j| = N). noise (K draws of N(0, 1)) may be NULL for
 *   std = 0. A zero N, where torchattacks divides 0 by 0, is taken as scale * z / N = 0: a uniform p
 *   whose gradient is 0.
 *
 * The SPSA attack's loss (torchattacks' SPSA, after advertorch; untargeted, negated MarginalLoss):
 *     f = z_label - max_{k != label} z_k
 *   which SPSA lowers: the label's margin over the best other class. */
#ifndef BIOFLEX_ATTACK_LOSS_H
#define BIOFLEX_ATTACK_LOSS_H

#include <stddef.h>

/* Returns the cost; dz (K floats, nullable) receives its gradient. */
double bf_jitter_cost(const float *z, int K, int label, float scale, float std, const double *noise, double *dz);

/* For an image already misclassified, torchattacks' Jitter divides the cost c by its perturbation's
 * norm r = max_j |x_j - a0_j| s_j, in the attack's [0, 1] units: s_j = channel_scale[(j / plane) %
 * channels] turns the model's input units into those. */
double bf_perturbation_norm(const float *x, const float *a0, size_t count, size_t plane, const float *channel_scale,
                            int channels);

/* Adds c / r's gradient through r to g (count floats): -c / r^2 dr/dx, where dr/dx_j = sign(x_j -
 * a0_j) s_j, shared evenly by the j at which r is reached (PyTorch's infinity norm). g holding
 * (dc/dx) / r, it becomes the gradient of c / r. */
void bf_perturbation_norm_gradient(const float *x, const float *a0, size_t count, size_t plane,
                                   const float *channel_scale, int channels, double c, double r, float *g);

double bf_margin_loss(const float *z, int K, int label);

#endif
