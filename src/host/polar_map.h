/* polar_map.h - the V1-constrained ResNet-50's "cortical magnification" (spec v1-constrained.md
 * section 5): a fixed linear map of each 32x32 channel map to a 16x16 (radius x angle) map, built
 * on the host as one 256 x 1024 matrix, so that the layer is one GEMM forward and its transpose
 * backward (internal).
 *
 * The reference (PolarTransform, and Brain-Score's LPP_v49) computes, per image and channel:
 *   pixels binned by radius (18 rings, edges 0..12, 13, 14, 16, 18, 20, 23 around the centre row 16,
 *     col 16) and angle (30 wedges of 12 degrees, counter-clockwise from +x, up positive), bins
 *     half-open: 540 masks, ring-major;
 *   in each ring with lower edge <= 16 the non-empty masks resampled to 30 along the wedges (linear,
 *     align_corners=False), so that empty foveal wedges borrow their neighbours' pixels;
 *   counts = mask sums (0 -> 1); masks and counts rounded to float16 (the reference's buffers);
 *   pooled[ring][wedge] = sum(x * mask) / count, reflect-padded by 1 along the wedges (and along the
 *     rings too in LPP_v49), resized to 16x16 by torchvision's bilinear Resize (antialias or not
 *     depending on the torchvision version; the reference pins none).
 * The wedges go round the circle, so the intended padding wraps them around (circular: wedge -1 is
 * wedge 29), which neither copy of the reference does (spec quirk 17). */
#ifndef BIOFLEX_POLAR_MAP_H
#define BIOFLEX_POLAR_MAP_H

#include "bioflex/status.h"

#define BF_POLAR_IN_SIZE 32  /* input map side */
#define BF_POLAR_OUT_SIZE 16 /* output map side */
#define BF_POLAR_RINGS 18
#define BF_POLAR_WEDGES 30

typedef struct bf_polar_options {
    int padding;   /* 0 angle: reflect-pad the angle axis only (the repo's PolarTransform, the default); 1 both:
                    * both axes (Brain-Score's LPP_v49); 2 circular: the angle axis wrapped around */
    int antialias; /* 0: bilinear resize without antialias (torchvision <= 0.16 on tensors, the default); 1: torchvision >= 0.17's antialiased resize */
} bf_polar_options;

/* The 540 pooling masks (ring-major, then wedge; 1024 floats each, pixel row*32+col) after the
 * wedge interpolation of section 5.3, and their counts (zeros replaced by 1), both rounded to fp16 as
 * the reference's buffers are. masks: 540*1024 floats, counts: 540 floats. */
void bf_polar_masks(float *masks, float *counts);

/* The whole transform as one matrix: op[o * 1024 + i], o = out_row*16+out_col, i = in_row*32+in_col,
 * so that out = op · in per (image, channel). op: 256*1024 floats. */
bf_status bf_polar_operator(const bf_polar_options *opt, float *op);

#endif
