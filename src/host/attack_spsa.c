/* attack_spsa.c - the SPSA attack (analysis.h; torchattacks 3.5.1's SPSA, after advertorch): a
 * gradient-free L-inf attack that estimates the gradient of the label's margin from forward passes
 * at x + delta v and x - delta v for random v in {-1, 1}^pixels, and takes Adam steps on the
 * perturbation with that estimate.
 *
 * Everything but the forwards runs on the host, in the attack's [0, 1] units: the perturbation d,
 * Adam's moments and the estimate. The point the model sees is a0 + d / scale (attack_pixel_scale),
 * clamped to the pixel range. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attack_loss.h"
#include "attack_run.h"
#include "bioflex/hash.h"

typedef struct spsa_state {
    float *x;      /* the current point, in the model's input units */
    float *probe;  /* x + or - delta v */
    double *d;     /* the perturbation, in [0, 1] units */
    double *m, *v; /* Adam's moments of d */
    double *grad;  /* the estimate */
    double *plus;  /* f(x + delta v) per image */
    uint64_t forwards;
} spsa_state;

/* f of every image at r->probe's host copy: the label's logit minus the best other's. */
static bf_status margins(attack_run *r, spsa_state *st, double *f) {
    bf_model *m = r->m;
    const int K = m->num_classes;
    const float *logits = NULL;
    BF_TRY(bf_to_device(r->b, r->dir, st->probe, attack_batch_floats(r) * sizeof(float)));
    m->step = ATTACK_GRADIENT_STEP + st->forwards++; /* a stochastic model draws afresh each time */
    m->sample_offset = r->position;
    BF_TRY(bf_model_forward(m, r->dir, &logits));
    BF_TRY(bf_to_host(r->b, r->host_logits, logits, (size_t)r->n * K * sizeof(float)));
    for (int i = 0; i < r->n; i++) f[i] = bf_margin_loss(r->host_logits + (size_t)i * K, K, r->host_labels[i]);
    return BF_OK;
}

/* v_j in {-1, 1} for element j of the batch: one bit of a hash of the element's place in the split,
 * so any batching draws the same. */
static inline int draw_sign(uint64_t seed, uint64_t element) {
    return (bf_hash2(seed, element >> 6) >> (element & 63)) & 1 ? 1 : -1;
}

/* st->grad = the mean over spsa_samples draws of (f(x + delta v) - f(x - delta v)) v / (2 delta). */
static bf_status estimate_gradient(attack_run *r, spsa_state *st, int e, int iteration) {
    const bf_attack_options *o = r->o;
    const size_t count = attack_batch_floats(r), first = r->position * r->per_image;
    double *minus = st->plus + r->n;
    memset(st->grad, 0, count * sizeof *st->grad);
    for (int k = 0; k < o->spsa_samples; k++) {
        const uint64_t seed = attack_seed(r, e, 1 + (uint64_t)iteration * (uint64_t)o->spsa_samples + (uint64_t)k);
        for (int side = 0; side < 2; side++) {
            const double sign = side ? -1.0 : 1.0;
            for (size_t i = 0; i < count; i++) {
                const float scale = attack_pixel_scale(r, attack_channel(r, i % r->per_image));
                st->probe[i] = (float)(st->x[i] + sign * o->spsa_delta * draw_sign(seed, first + i) / scale);
            }
            BF_TRY(margins(r, st, side ? minus : st->plus));
        }
        for (size_t i = 0; i < count; i++) {
            const double df = st->plus[i / r->per_image] - minus[i / r->per_image];
            st->grad[i] += df * draw_sign(seed, first + i) / (2.0 * o->spsa_delta); /* df / (2 delta v), v = +-1 */
        }
    }
    for (size_t i = 0; i < count; i++) st->grad[i] /= o->spsa_samples;
    return BF_OK;
}

/* One step of torch.optim.Adam (betas 0.9 and 0.999, eps 1e-8) on d, then d clamped to the ball
 * and x = a0 + d / scale clamped to the pixel range, d following x (torchattacks' linf_clamp_). */
static void adam_step(attack_run *r, spsa_state *st, int t, float eps) {
    const double lr = r->o->spsa_lr, b1 = 0.9, b2 = 0.999;
    const double step_size = lr / (1.0 - pow(b1, t)), root_correction2 = sqrt(1.0 - pow(b2, t));
    const bf_attack_box box = attack_box(r, 1.0f, eps, 1);
    for (size_t i = 0; i < attack_batch_floats(r); i++) {
        const int ch = r->o->domain == BF_ATTACK_REFERENCE ? 0 : attack_channel(r, i % r->per_image);
        const double scale = attack_pixel_scale(r, ch), g = st->grad[i];
        st->m[i] = b1 * st->m[i] + (1 - b1) * g;
        st->v[i] = b2 * st->v[i] + (1 - b2) * g * g;
        st->d[i] -= step_size * st->m[i] / (sqrt(st->v[i]) / root_correction2 + 1e-8);
        const double ball = fmin(fmax(st->d[i], -(double)eps), (double)eps);
        const double x = fmin(fmax(r->host_a0[i] + ball / scale, (double)box.lo[ch]), (double)box.hi[ch]);
        st->x[i] = (float)x;
        st->d[i] = (st->x[i] - (double)r->host_a0[i]) * scale;
    }
}

bf_status attack_spsa(attack_run *r, int e, float eps) {
    const int iterations = r->o->spsa_iterations > 0 ? r->o->spsa_iterations : (int)(40.0 * (double)eps);
    if (iterations == 0) return BF_OK; /* r->x is a0 */
    const size_t count = attack_batch_floats(r);
    spsa_state st = {.x = malloc(2 * count * sizeof(float)), .d = calloc(4 * count + 2 * (size_t)r->n, sizeof(double))};
    if (!st.x || !st.d) {
        free(st.x), free(st.d);
        return bf_error(BF_ERR_OOM, "spsa: out of host memory");
    }
    st.probe = st.x + count;
    st.m = st.d + count, st.v = st.d + 2 * count, st.grad = st.d + 3 * count, st.plus = st.d + 4 * count;
    memcpy(st.x, r->host_a0, count * sizeof(float));
    bf_status s = BF_OK;
    for (int t = 1; s == BF_OK && t <= iterations; t++) {
        s = estimate_gradient(r, &st, e, t);
        if (s == BF_OK) adam_step(r, &st, t, eps);
    }
    if (s == BF_OK) s = bf_to_device(r->b, r->x, st.x, count * sizeof(float));
    free(st.x), free(st.d);
    return s;
}
