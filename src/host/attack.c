/* attack.c - adversarial attacks on a trained model: FGSM, L-inf PGD (and SPGD), Jitter and
 * Gaussian noise over a grid of epsilons (analysis.h says what each computes, PlasticFlex spec
 * section 6); SPSA is in attack_spsa.c, JSMA in attack_jsma.c, OnePixel in attack_onepixel.c, APGD
 * in attack_apgd.c.
 *
 * Per batch of the loader: the clean images a0 in the attack's space (the model's normalised input,
 * or the reference's min-max scaled x01), then for each epsilon the attacked images x, built by the
 * backend's attack_step from input gradients (a model built with input_gradient), and the model's
 * top-1 and top-5 on them, summed on the device. The pixel range and the epsilon ball are mapped
 * into the attack's space per channel (bf_attack_box), so attack_step never leaves it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attack_loss.h"
#include "attack_run.h"
#include "batch_upload.h"
#include "bioflex/hash.h"

float bf_attack_preset_epsilon_max(bf_attack_method method) {
    switch (method) { /* the reference's grids (spec section 6) */
    case BF_ATTACK_FGSM: return 0.64f;
    case BF_ATTACK_PGD: return 23.0f / 255.0f;
    case BF_ATTACK_GAUSSIAN_NOISE: return 0.42f;
    case BF_ATTACK_SPGD: return 0.5f;
    case BF_ATTACK_JITTER: return 0.3f;
    case BF_ATTACK_SPSA: return 0.21f;
    case BF_ATTACK_JSMA: return 1.5f;
    case BF_ATTACK_ONEPIXEL: return 42.0f;
    case BF_ATTACK_APGD: return 0.01f; /* FlexNet's (flexnet.md section 5.2) */
    }
    return 0;
}

const char *bf_attack_method_name(bf_attack_method method) {
    static const char *names[] = {"fgsm", "pgd", "gaussian_noise", "spgd", "jitter", "spsa", "jsma", "onepixel", "apgd"};
    return method >= 0 && method <= BF_ATTACK_APGD ? names[method] : "?";
}

float bf_attack_epsilon_min(bf_attack_method method) {
    return method == BF_ATTACK_ONEPIXEL ? 1.0f : 0.0f; /* a count of pixels, at least one */
}

/* In the pixels domain, channel ch was normalised as (p - mean) / std. */
float attack_pixel_scale(const attack_run *r, int ch) {
    return r->o->domain == BF_ATTACK_REFERENCE ? 1.0f : r->format.std[ch];
}

bf_attack_box attack_box(const attack_run *r, float step, float radius, int clamp) {
    bf_attack_box box = {.c = r->o->domain == BF_ATTACK_REFERENCE ? 1 : r->format.c};
    for (int ch = 0; ch < box.c; ch++) {
        const float std = r->o->domain == BF_ATTACK_REFERENCE ? 1.0f : r->format.std[ch];
        const float mean = r->o->domain == BF_ATTACK_REFERENCE ? 0.0f : r->format.mean[ch];
        box.step[ch] = step / std;
        box.radius[ch] = radius / std;
        box.lo[ch] = clamp ? (0.0f - mean) / std : -INFINITY;
        box.hi[ch] = clamp ? (1.0f - mean) / std : INFINITY;
    }
    return box;
}

uint64_t attack_seed(const attack_run *r, int e, uint64_t index) {
    const uint64_t seed = bf_seed_derive(r->o->seed, BF_STREAM_ATTACK, (uint64_t)e);
    return index == 0 ? seed : bf_seed_derive(seed, BF_STREAM_ATTACK, index);
}

/* grad = the summed cross-entropy's gradient with respect to x, summed over the EOT passes. */
bf_status attack_input_gradient(attack_run *r, const float *x, float *host_logits, float *host_losses) {
    bf_model *m = r->m;
    const bf_ops *ops = r->b->ops;
    for (int k = 0; k < r->o->eot_samples; k++) {
        const float *logits = NULL;
        m->step = ATTACK_GRADIENT_STEP + (uint64_t)k;
        m->sample_offset = r->position;
        BF_TRY(bf_model_forward(m, x, &logits));
        BF_TRY(ops->softmax_xent(r->b, r->n, m->num_classes, logits, r->labels, 0.0f, 1.0f, r->losses, r->dlogits));
        if (host_logits && k == r->o->eot_samples - 1) /* the last pass's, before the backward reuses memory */
            BF_TRY(bf_to_host(r->b, host_logits, logits, (size_t)r->n * m->num_classes * sizeof(float)));
        if (host_losses && k == r->o->eot_samples - 1)
            BF_TRY(bf_to_host(r->b, host_losses, r->losses, (size_t)r->n * sizeof(float)));
        BF_TRY(bf_model_backward(m, r->dlogits));
        if (k == 0) BF_TRY(ops->copy(r->b, r->grad, m->dinput, attack_batch_floats(r) * sizeof(float)));
        else BF_TRY(ops->add_inplace(r->b, r->grad, m->dinput, attack_batch_floats(r)));
    }
    return BF_OK;
}

/* grad = Jitter's input gradient at r->x for step `step` of grid point e (analysis.h, attack_loss.h),
 * summed over the EOT passes. Image i's cost c_i is divided by its perturbation's norm r_i when the
 * model misclassifies it and r_i > 0, so its gradient is dc_i / r_i - c_i / r_i^2 dr_i, dr_i being
 * the norm's gradient: sign(x - a0) x scale, shared evenly by the elements where |x - a0| x scale
 * = r_i (PyTorch's infinity norm). torchattacks' mean over the batch, a positive factor, is left out:
 * the attack steps along the gradient's sign. */
static bf_status jitter_gradient(attack_run *r, int e, int step) {
    bf_model *m = r->m;
    const int n = r->n, K = m->num_classes;
    const size_t count = attack_batch_floats(r), plane = (size_t)r->format.h * r->format.w;
    float channel_scale[3];
    for (int ch = 0; ch < r->format.c; ch++) channel_scale[ch] = attack_pixel_scale(r, ch);
    float *x = r->host, *sum = calloc(2 * count, sizeof *sum), *g = sum ? sum + count : NULL;
    double *r_norm = malloc((size_t)n * sizeof *r_norm), *cost = malloc((size_t)n * sizeof *cost),
           *noise = malloc(2 * (size_t)K * sizeof *noise), *dz = noise ? noise + K : NULL;
    bf_status s = r_norm && cost && noise && sum ? BF_OK : bf_error(BF_ERR_OOM, "jitter: out of host memory");
    if (s == BF_OK) s = bf_to_host(r->b, x, r->x, count * sizeof(float));
    for (int i = 0; s == BF_OK && i < n; i++)
        r_norm[i] = bf_perturbation_norm(x + (size_t)i * r->per_image, r->host_a0 + (size_t)i * r->per_image,
                                         r->per_image, plane, channel_scale, r->format.c);
    for (int k = 0; s == BF_OK && k < r->o->eot_samples; k++) {
        const float *logits = NULL;
        const uint64_t seed = attack_seed(r, e, 1 + (uint64_t)step * (uint64_t)r->o->eot_samples + (uint64_t)k);
        m->step = ATTACK_GRADIENT_STEP + (uint64_t)k;
        m->sample_offset = r->position;
        s = bf_model_forward(m, r->x, &logits);
        if (s == BF_OK) s = bf_to_host(r->b, r->host_logits, logits, (size_t)n * K * sizeof(float));
        for (int i = 0; s == BF_OK && i < n; i++) {
            float *z = r->host_logits + (size_t)i * K;
            int best = 0;
            for (int c = 1; c < K; c++) best = z[c] > z[best] ? c : best;
            for (int c = 0; c < K; c++) noise[c] = bf_normal(seed, (r->position + (uint64_t)i) * (uint64_t)K + (uint64_t)c);
            cost[i] = bf_jitter_cost(z, K, r->host_labels[i], r->o->jitter_scale, r->o->jitter_std, noise, dz);
            const int divided = best != r->host_labels[i] && r_norm[i] > 0;
            if (!divided) cost[i] = 0; /* no quotient: no term through the norm */
            for (int c = 0; c < K; c++) z[c] = (float)(divided ? dz[c] / r_norm[i] : dz[c]); /* dlogits, in place */
        }
        if (s == BF_OK) s = bf_to_device(r->b, r->dlogits, r->host_logits, (size_t)n * K * sizeof(float));
        if (s == BF_OK) s = bf_model_backward(m, r->dlogits);
        if (s == BF_OK) s = bf_to_host(r->b, g, m->dinput, count * sizeof(float));
        for (int i = 0; s == BF_OK && i < n; i++) {
            const size_t at = (size_t)i * r->per_image;
            if (cost[i] != 0)
                bf_perturbation_norm_gradient(x + at, r->host_a0 + at, r->per_image, plane, channel_scale, r->format.c,
                                              cost[i], r_norm[i], g + at);
        }
        for (size_t j = 0; s == BF_OK && j < count; j++) sum[j] += g[j];
    }
    if (s == BF_OK) s = bf_to_device(r->b, r->grad, sum, count * sizeof(float));
    free(r_norm), free(cost), free(noise), free(sum);
    return s;
}

/* dir = one draw per pixel of the batch's images, keyed by the sample's place in the split:
 * U(-1, 1) (uniform) or N(0, 1). */
static bf_status draw_direction(attack_run *r, int e, int uniform) {
    const uint64_t seed = attack_seed(r, e, 0);
    const uint64_t first = r->position * r->per_image;
    for (size_t i = 0; i < attack_batch_floats(r); i++)
        r->host[i] = uniform ? 2.0f * bf_uniform(seed, first + i) - 1.0f : (float)bf_normal(seed, first + i);
    return bf_to_device(r->b, r->dir, r->host, attack_batch_floats(r) * sizeof(float));
}

/* x = the attacked images at epsilon eps (grid point e), from a0. */
static bf_status attack_at(attack_run *r, int e, float eps) {
    const bf_ops *ops = r->b->ops;
    const size_t count = attack_batch_floats(r), plane = (size_t)r->format.h * r->format.w;
    const size_t box_plane = r->o->domain == BF_ATTACK_REFERENCE ? r->per_image : plane;
    BF_TRY(ops->copy(r->b, r->x, r->a0, count * sizeof(float)));
    if (eps == 0) return BF_OK;
    switch (r->o->method) {
    case BF_ATTACK_FGSM: {
        const bf_attack_box box = attack_box(r, eps, eps, 1);
        BF_TRY(attack_input_gradient(r, r->x, NULL, NULL));
        return ops->attack_step(r->b, &box, count, box_plane, r->a0, r->grad, 1, r->x);
    }
    case BF_ATTACK_PGD:
    case BF_ATTACK_SPGD:
    case BF_ATTACK_JITTER: {
        if (r->o->random_start) {
            const bf_attack_box start = attack_box(r, eps, eps, 1);
            BF_TRY(draw_direction(r, e, 1));
            BF_TRY(ops->attack_step(r->b, &start, count, box_plane, r->a0, r->dir, 0, r->x));
        }
        const bf_attack_box box = attack_box(r, r->o->pgd_step_fraction * eps, eps, 1);
        for (int k = 0; k < r->o->pgd_steps; k++) {
            BF_TRY(r->o->method == BF_ATTACK_JITTER ? jitter_gradient(r, e, k) : attack_input_gradient(r, r->x, NULL, NULL));
            BF_TRY(ops->attack_step(r->b, &box, count, box_plane, r->a0, r->grad, 1, r->x));
        }
        return BF_OK;
    }
    case BF_ATTACK_GAUSSIAN_NOISE: { /* the reference adds its noise unclamped */
        const bf_attack_box box = attack_box(r, eps, INFINITY, r->o->domain != BF_ATTACK_REFERENCE);
        BF_TRY(draw_direction(r, e, 0));
        return ops->attack_step(r->b, &box, count, box_plane, r->a0, r->dir, 0, r->x);
    }
    case BF_ATTACK_SPSA: return attack_spsa(r, e, eps);
    case BF_ATTACK_JSMA: return attack_jsma(r, e, eps);
    case BF_ATTACK_ONEPIXEL: return attack_onepixel(r, e, eps);
    case BF_ATTACK_APGD: return attack_apgd(r, e, eps);
    }
    return bf_error(BF_ERR_ARG, "attack: unknown method %d", (int)r->o->method);
}

/* The reference domain's clean point: x01 = (x - min) / (max - min) over the whole batch, in float
 * as PyTorch computes it. */
static bf_status reference_scale(attack_run *r, const float *x) {
    const size_t count = attack_batch_floats(r);
    BF_TRY(bf_to_host(r->b, r->host, x, count * sizeof(float)));
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < count; i++) lo = fminf(lo, r->host[i]), hi = fmaxf(hi, r->host[i]);
    if (!(hi > lo)) return bf_error(BF_ERR_ARG, "attack: attack_domain = reference needs a batch whose values differ "
                                    "(all are %g)", lo);
    r->vmin = lo, r->vmax = hi;
    for (size_t i = 0; i < count; i++) r->host[i] = (r->host[i] - lo) / (hi - lo);
    return bf_to_device(r->b, r->a0, r->host, count * sizeof(float));
}

/* The model's top-1 and top-5 on x (the reference domain: on x scaled back), added to grid point e's
 * sums. Drawn as bf_evaluate draws. */
static bf_status score(attack_run *r, int e) {
    bf_model *m = r->m;
    const bf_ops *ops = r->b->ops;
    const float *in = r->x;
    if (r->o->domain == BF_ATTACK_REFERENCE) { /* x01_adv / 0.99999 x (max - min) + min (attacks.py) */
        const size_t count = attack_batch_floats(r);
        BF_TRY(bf_to_host(r->b, r->host, r->x, count * sizeof(float)));
        for (size_t i = 0; i < count; i++) r->host[i] = r->host[i] / 0.99999f * (r->vmax - r->vmin) + r->vmin;
        BF_TRY(bf_to_device(r->b, r->scored, r->host, count * sizeof(float)));
        in = r->scored;
    }
    const float *logits = NULL;
    m->step = BF_EVAL_STEP;
    m->sample_offset = r->position;
    BF_TRY(bf_model_forward(m, in, &logits));
    BF_TRY(ops->topk_correct(r->b, r->n, m->num_classes, logits, r->labels, r->c1, r->c5));
    BF_TRY(ops->accumulate_sum(r->b, r->c1, (size_t)r->n, r->sums + 2 * e));
    return ops->accumulate_sum(r->b, r->c5, (size_t)r->n, r->sums + 2 * e + 1);
}

static bf_status check_options(const bf_model *m, const bf_attack_options *o, const bf_image_format *f) {
    if (!m->input_gradient) return bf_error(BF_ERR_ARG, "attack: the model was not built with input_gradient");
    if (o->epsilons < 2 || o->epsilons > BF_ATTACK_MAX_EPSILONS)
        return bf_error(BF_ERR_ARG, "attack: %d epsilons (2 to %d)", o->epsilons, BF_ATTACK_MAX_EPSILONS);
    if (!(o->epsilon_max >= 0) || o->pgd_steps < 1 || !(o->pgd_step_fraction > 0) || o->eot_samples < 1 || o->samples < 0)
        return bf_error(BF_ERR_ARG, "attack: epsilon_max %g, pgd_steps %d, pgd_step_fraction %g, eot_samples %d, "
                        "samples %d", o->epsilon_max, o->pgd_steps, o->pgd_step_fraction, o->eot_samples, o->samples);
    if (o->method < BF_ATTACK_FGSM || o->method > BF_ATTACK_APGD) return bf_error(BF_ERR_ARG, "attack: unknown method %d", (int)o->method);
    if (o->method == BF_ATTACK_JITTER && !(o->jitter_scale > 0 && o->jitter_std >= 0))
        return bf_error(BF_ERR_ARG, "attack: jitter_scale %g (> 0), jitter_std %g (>= 0)", o->jitter_scale, o->jitter_std);
    if (o->method == BF_ATTACK_SPSA && !(o->spsa_delta > 0 && o->spsa_lr > 0 && o->spsa_iterations >= 0 && o->spsa_samples >= 1))
        return bf_error(BF_ERR_ARG, "attack: spsa_delta %g (> 0), spsa_lr %g (> 0), spsa_iterations %d (>= 0), spsa_samples %d (>= 1)",
                        o->spsa_delta, o->spsa_lr, o->spsa_iterations, o->spsa_samples);
    if (o->method == BF_ATTACK_APGD && !(o->apgd_steps >= 1 && o->apgd_restarts >= 1 && o->apgd_rho >= 0 && o->apgd_rho <= 1))
        return bf_error(BF_ERR_ARG, "attack: apgd_steps %d (>= 1), apgd_restarts %d (>= 1), apgd_rho %g (in [0, 1])", o->apgd_steps,
                        o->apgd_restarts, o->apgd_rho);
    if (o->method == BF_ATTACK_ONEPIXEL && (o->onepixel_steps < 0 || o->onepixel_popsize < 0))
        return bf_error(BF_ERR_ARG, "attack: onepixel_steps %d, onepixel_popsize %d (>= 0)", o->onepixel_steps, o->onepixel_popsize);
    if (o->method == BF_ATTACK_JSMA && !(o->jsma_gamma > 0 && o->jsma_gamma <= 1))
        return bf_error(BF_ERR_ARG, "attack: jsma_gamma %g (in (0, 1])", o->jsma_gamma);
    if (f->c < 1 || f->c > 3) return bf_error(BF_ERR_ARG, "attack: images of %d channels (1 to 3)", f->c);
    return BF_OK;
}

static bf_status alloc_run(attack_run *r) {
    const int max_n = r->m->input_shape.n, k = r->m->num_classes;
    const size_t images = (size_t)max_n * r->per_image * sizeof(float);
    float **image_buffers[] = {&r->a0, &r->x, &r->grad, &r->dir, &r->scored};
    for (size_t i = 0; i < sizeof image_buffers / sizeof image_buffers[0]; i++)
        BF_TRY(bf_alloc(r->b, images, (void **)image_buffers[i]));
    BF_TRY(bf_alloc(r->b, (size_t)max_n * k * sizeof(float), (void **)&r->dlogits));
    BF_TRY(bf_alloc(r->b, (size_t)max_n * 3 * sizeof(float), (void **)&r->losses));
    r->c1 = r->losses + max_n;
    r->c5 = r->losses + 2 * max_n;
    BF_TRY(bf_alloc(r->b, 2 * (size_t)r->o->epsilons * sizeof(float), (void **)&r->sums));
    BF_TRY(r->b->ops->fill(r->b, r->sums, 0.0f, 2 * (size_t)r->o->epsilons));
    BF_TRY(bf_alloc(r->b, (size_t)max_n * sizeof(int32_t), (void **)&r->labels));
    r->host = malloc(images);
    r->host_a0 = malloc(images);
    r->host_logits = malloc((size_t)max_n * k * sizeof(float));
    r->host_labels = malloc((size_t)max_n * sizeof(int32_t));
    return r->host && r->host_a0 && r->host_logits && r->host_labels ? BF_OK
                                                                     : bf_error(BF_ERR_OOM, "attack: out of host memory");
}

static void free_run(attack_run *r) {
    float *buffers[] = {r->a0, r->x, r->grad, r->dir, r->scored, r->dlogits, r->losses, r->sums};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) bf_free(r->b, buffers[i]);
    bf_free(r->b, r->labels);
    free(r->host), free(r->host_a0), free(r->host_logits), free(r->host_labels);
}

/* One batch: its clean point, then every epsilon's attack and score. */
static bf_status attack_batch(attack_run *r, const float *x0, const float *grid) {
    if (r->o->domain == BF_ATTACK_REFERENCE) BF_TRY(reference_scale(r, x0));
    else BF_TRY(r->b->ops->copy(r->b, r->a0, x0, attack_batch_floats(r) * sizeof(float)));
    if (r->o->method >= BF_ATTACK_JITTER) { /* jitter, spsa, jsma, onepixel and apgd work on the host too */
        BF_TRY(bf_to_host(r->b, r->host_a0, r->a0, attack_batch_floats(r) * sizeof(float)));
        BF_TRY(bf_to_host(r->b, r->host_labels, r->labels, (size_t)r->n * sizeof(int32_t)));
    }
    for (int e = 0; e < r->o->epsilons; e++) {
        BF_TRY(attack_at(r, e, grid[e]));
        BF_TRY(score(r, e));
    }
    return BF_OK;
}

static void summarise(const bf_attack_options *o, float eps_min, float eps_max, const float *grid, const float *sums, int samples,
                      bf_attack_result *out) {
    out->samples = samples;
    out->epsilons = o->epsilons;
    out->auc = out->auc_reference = 0;
    for (int e = 0; e < o->epsilons; e++) {
        out->epsilon[e] = grid[e];
        out->top1[e] = samples ? (double)sums[2 * e] / samples : 0; /* counts: exact in float below 2^24 */
        out->top5[e] = samples ? (double)sums[2 * e + 1] / samples : 0;
        if (e > 0) { /* trapezoids: of the true spacing, and of the reference's epsilon_max / epsilons */
            const double mid = 0.5 * (out->top1[e - 1] + out->top1[e]);
            out->auc += mid * (eps_max - eps_min) / (o->epsilons - 1);
            out->auc_reference += mid * eps_max / o->epsilons;
        }
    }
    out->auc_normalized = eps_max > eps_min ? out->auc / (eps_max - eps_min) : out->top1[0];
}

bf_status bf_attack(bf_model *m, bf_loader *loader, const bf_attack_options *o, bf_attack_result *out) {
    attack_run r = {.m = m, .b = m->backend, .o = o, .format = bf_loader_image_format(loader)};
    BF_TRY(check_options(m, o, &r.format));
    r.per_image = bf_shape_per_sample(m->input_shape);
    const float eps_max = o->epsilon_max > 0 ? o->epsilon_max : bf_attack_preset_epsilon_max(o->method);
    const float eps_min = bf_attack_epsilon_min(o->method);
    if (!(eps_max >= eps_min))
        return bf_error(BF_ERR_ARG, "%s attack: epsilon_max %g is below the grid's start %g", bf_attack_method_name(o->method),
                        eps_max, eps_min);
    float grid[BF_ATTACK_MAX_EPSILONS];
    for (int e = 0; e < o->epsilons; e++) grid[e] = eps_min + (eps_max - eps_min) * (float)e / (float)(o->epsilons - 1);
    float *x0 = NULL;
    bf_batch_uploader *upload = NULL;
    const int was_training = m->training;
    const uint64_t step = m->step, offset = m->sample_offset;
    m->training = 0;
    bf_status s = alloc_run(&r);
    if (s == BF_OK) s = bf_alloc(r.b, (size_t)m->input_shape.n * r.per_image * sizeof(float), (void **)&x0);
    if (s == BF_OK) s = bf_batch_uploader_create(r.b, &upload);
    const int shuffled = bf_loader_set_shuffle(loader, 0);
    if (s == BF_OK) s = bf_loader_start_epoch(loader, o->epoch, 0);
    int samples = 0;
    while (s == BF_OK && (o->samples == 0 || samples < o->samples)) {
        bf_batch *batch = NULL;
        s = bf_loader_next(loader, &batch, NULL);
        if (s != BF_OK || !batch) break;
        r.n = batch->n;
        if (o->samples && samples + r.n > o->samples) r.n = o->samples - samples; /* the first samples only */
        r.position = (uint64_t)batch->position;
        if (batch->n > m->input_shape.n) {
            bf_loader_release(loader, batch);
            s = bf_error(BF_ERR_ARG, "attack: batch of %d exceeds the model's %d", batch->n, m->input_shape.n);
            break;
        }
        s = bf_batch_upload_once(upload, loader, batch, x0, r.labels, r.n);
        if (s == BF_OK) s = bf_model_set_batch(m, r.n);
        if (s == BF_OK) s = attack_batch(&r, x0, grid);
        samples += r.n;
    }
    float *sums = malloc(2 * (size_t)o->epsilons * sizeof(float));
    if (s == BF_OK && !sums) s = bf_error(BF_ERR_OOM, "attack: out of host memory");
    if (s == BF_OK) s = bf_to_host(r.b, sums, r.sums, 2 * (size_t)o->epsilons * sizeof(float));
    if (s == BF_OK) summarise(o, eps_min, eps_max, grid, sums, samples, out);
    free(sums);
    bf_loader_set_shuffle(loader, shuffled);
    m->training = was_training;
    m->step = step;
    m->sample_offset = offset;
    bf_model_set_batch(m, m->input_shape.n);
    bf_batch_uploader_destroy(upload);
    bf_free(r.b, x0);
    free_run(&r);
    return s == BF_OK ? BF_OK : bf_error_context(s, "%s attack", bf_attack_method_name(o->method));
}

static void write_list(FILE *f, const char *key, const double *v, int n) {
    fprintf(f, "  \"%s\": [", key);
    for (int i = 0; i < n; i++) fprintf(f, "%s%.9g", i ? ", " : "", v[i]);
    fprintf(f, "],\n");
}

bf_status bf_attack_write_json(const bf_attack_options *o, const bf_attack_result *r, FILE *f) {
    fprintf(f, "{\n  \"method\": \"%s\",\n  \"domain\": \"%s\",\n  \"samples\": %d,\n", bf_attack_method_name(o->method),
            o->domain == BF_ATTACK_REFERENCE ? "reference" : "pixels", r->samples);
    if (o->method == BF_ATTACK_PGD || o->method == BF_ATTACK_SPGD || o->method == BF_ATTACK_JITTER)
        fprintf(f, "  \"pgd_steps\": %d,\n  \"pgd_step_fraction\": %.9g,\n  \"random_start\": %s,\n", o->pgd_steps,
                o->pgd_step_fraction, o->random_start ? "true" : "false");
    if (o->method == BF_ATTACK_JITTER)
        fprintf(f, "  \"jitter_scale\": %.9g,\n  \"jitter_std\": %.9g,\n", o->jitter_scale, o->jitter_std);
    if (o->method == BF_ATTACK_SPSA)
        fprintf(f, "  \"spsa_delta\": %.9g,\n  \"spsa_lr\": %.9g,\n  \"spsa_iterations\": %d,\n  \"spsa_samples\": %d,\n",
                o->spsa_delta, o->spsa_lr, o->spsa_iterations, o->spsa_samples);
    if (o->method == BF_ATTACK_JSMA) fprintf(f, "  \"jsma_gamma\": %.9g,\n", o->jsma_gamma);
    if (o->method == BF_ATTACK_ONEPIXEL)
        fprintf(f, "  \"onepixel_steps\": %d,\n  \"onepixel_popsize\": %d,\n", o->onepixel_steps, o->onepixel_popsize);
    if (o->method == BF_ATTACK_APGD)
        fprintf(f, "  \"apgd_steps\": %d,\n  \"apgd_restarts\": %d,\n  \"apgd_rho\": %.9g,\n", o->apgd_steps, o->apgd_restarts,
                o->apgd_rho);
    fprintf(f, "  \"eot_samples\": %d,\n  \"seed\": %llu,\n", o->eot_samples, (unsigned long long)o->seed);
    write_list(f, "epsilons", r->epsilon, r->epsilons);
    write_list(f, "top1", r->top1, r->epsilons);
    write_list(f, "top5", r->top5, r->epsilons);
    fprintf(f, "  \"auc\": %.9g,\n  \"auc_normalized\": %.9g,\n  \"auc_reference\": %.9g\n}\n", r->auc, r->auc_normalized,
            r->auc_reference);
    return ferror(f) ? bf_error(BF_ERR_IO, "attack: writing the results failed") : BF_OK;
}
