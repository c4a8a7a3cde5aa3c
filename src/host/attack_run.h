/* attack_run.h - one bf_attack call's state, shared by attack.c (the driver and the gradient
 * attacks), attack_spsa.c, attack_jsma.c, attack_onepixel.c and attack_apgd.c (internal). */
#ifndef BIOFLEX_ATTACK_RUN_H
#define BIOFLEX_ATTACK_RUN_H

#include "bioflex/analysis.h"
#include "bioflex/train.h"

/* The gradient passes' step counters: above training's and evaluation's (BF_EVAL_STEP), so that
 * their random draws are their own; EOT pass k (SPSA's forward k) takes this + k. */
#define ATTACK_GRADIENT_STEP (UINT64_C(3) << 40)

typedef struct attack_run {
    bf_model *m;
    bf_backend *b;
    const bf_attack_options *o;
    bf_image_format format;
    size_t per_image;          /* c*h*w */
    int n;                     /* the current batch */
    uint64_t position;         /* its first sample's place in the split */
    float vmin, vmax;          /* reference domain: the batch's range */
    /* backend memory, at the model's largest batch */
    float *a0, *x, *grad, *dir, *scored, *dlogits, *losses, *c1, *c5, *sums;
    int32_t *labels;
    /* host memory, at the model's largest batch */
    float *host;               /* images: draws, the reference's scaling */
    float *host_a0;            /* the clean images (Jitter, SPSA) */
    float *host_logits;        /* logits, or their gradient */
    int32_t *host_labels;
} attack_run;

static inline size_t attack_batch_floats(const attack_run *r) { return (size_t)r->n * r->per_image; }

/* What one unit of the model's input is in the attack's [0, 1] space, for element i of an image
 * (channel ch = i / plane): std[ch] in the pixels domain, 1 in the reference's x01. */
float attack_pixel_scale(const attack_run *r, int ch);
static inline int attack_channel(const attack_run *r, size_t i) {
    return (int)((i / ((size_t)r->format.h * r->format.w)) % (size_t)r->format.c);
}

/* The box of a step of `step` and a ball of `radius` (in [0, 1] units); clamp: keep to the range. */
bf_attack_box attack_box(const attack_run *r, float step, float radius, int clamp);

/* Grid point e's seed of a random stream: index 0 is the random start's and the noise's. */
uint64_t attack_seed(const attack_run *r, int e, uint64_t index);

/* r->grad = the summed cross-entropy's gradient with respect to x (r->n images), summed over the
 * EOT passes; the last pass's logits and per-image losses into host_logits and host_losses
 * (nullable). */
bf_status attack_input_gradient(attack_run *r, const float *x, float *host_logits, float *host_losses);

/* r->x = SPSA's (JSMA's, OnePixel's, APGD's) attacked images at epsilon eps (grid point e), from r->a0. */
bf_status attack_spsa(attack_run *r, int e, float eps);
bf_status attack_jsma(attack_run *r, int e, float eps);
bf_status attack_onepixel(attack_run *r, int e, float eps);
bf_status attack_apgd(attack_run *r, int e, float eps);

#endif
