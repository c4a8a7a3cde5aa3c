/* attack_apgd.c - Auto-PGD (analysis.h; Croce and Hein 2020, as torchattacks 3.5.1's APGD with the
 * L-inf norm and the cross-entropy loss): PGD with momentum whose step, 2 epsilon at the start, is
 * halved per image at checkpoints where the loss stalled, the search then going back to the best
 * point so far. FlexNet's robustness comparison measured it (flexnet.md section 5.2).
 *
 * The images the model classifies correctly are attacked, apgd_restarts times from random starts
 * for those still not fooled; an image fooled at any step keeps the point that fooled it, the
 * others are scored at their clean point, as torchattacks returns them. The arithmetic runs on the
 * host in the model's input units, with the step, the ball and the range [0, 1] mapped per channel
 * (attack_pixel_scale); the gradients are the model's (attack_input_gradient). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attack_run.h"
#include "bioflex/hash.h"

typedef struct apgd_state {
    float *adv, *old, *best, *best_adv, *grad, *grad_best; /* count floats each */
    float *loss_steps;              /* steps x n: each step's losses */
    float *losses;                  /* n: the last gradient's */
    double *step_size;              /* n, in [0, 1] units */
    float *loss_best, *loss_best_last; /* n */
    int *reduced_last, *correct;    /* n: correct = not fooled yet in this run */
} apgd_state;

static void argmax_correct(const attack_run *r, const float *logits, int *correct) {
    const int K = r->m->num_classes;
    for (int i = 0; i < r->n; i++) {
        const float *z = logits + (size_t)i * K;
        int best = 0;
        for (int c = 1; c < K; c++) best = z[c] > z[best] ? c : best;
        correct[i] = best == r->host_labels[i];
    }
}

/* grad, losses and which images the model classifies correctly, at adv. */
static bf_status gradient_at(attack_run *r, apgd_state *st, int *correct) {
    const size_t count = attack_batch_floats(r);
    BF_TRY(bf_to_device(r->b, r->dir, st->adv, count * sizeof(float)));
    BF_TRY(attack_input_gradient(r, r->dir, r->host_logits, st->losses));
    BF_TRY(bf_to_host(r->b, st->grad, r->grad, count * sizeof(float)));
    argmax_correct(r, r->host_logits, correct);
    return BF_OK;
}

/* The momentum step of iteration i from adv (torchattacks' two clamped updates). */
static void momentum_step(const attack_run *r, apgd_state *st, int i, float eps, const bf_attack_box *box) {
    const double a = i > 0 ? 0.75 : 1.0;
    for (size_t j = 0; j < attack_batch_floats(r); j++) {
        const size_t image = j / r->per_image;
        const int ch = r->o->domain == BF_ATTACK_REFERENCE ? 0 : attack_channel(r, j % r->per_image);
        const float scale = attack_pixel_scale(r, ch), x0 = r->host_a0[j];
        const float lo = fmaxf(x0 - eps / scale, box->lo[ch]), hi = fminf(x0 + eps / scale, box->hi[ch]);
        const float g = st->grad[j], sign = (float)((g > 0) - (g < 0));
        const float x = st->adv[j], momentum = x - st->old[j];
        float x1 = fminf(fmaxf(x + (float)(st->step_size[image] / scale) * sign, lo), hi);
        x1 = fminf(fmaxf((float)(x + (x1 - x) * a + momentum * (1 - a)), lo), hi);
        st->old[j] = x;
        st->adv[j] = x1;
    }
}

static void copy_image(const attack_run *r, float *to, const float *from, int i) {
    memcpy(to + (size_t)i * r->per_image, from + (size_t)i * r->per_image, r->per_image * sizeof(float));
}

/* One run from a random start (restart `restart` of grid point e) for all images; correct[i] = 0
 * where an image was fooled, best_adv then holding the point. */
static bf_status single_run(attack_run *r, apgd_state *st, int e, int restart, float eps) {
    const int n = r->n, steps = r->o->apgd_steps;
    const int steps_2 = (int)(0.22 * steps) > 1 ? (int)(0.22 * steps) : 1, steps_min = (int)(0.06 * steps) > 1 ? (int)(0.06 * steps) : 1;
    const int size_decr = (int)(0.03 * steps) > 1 ? (int)(0.03 * steps) : 1;
    const bf_attack_box box = attack_box(r, 1.0f, INFINITY, 1);
    const uint64_t seed = attack_seed(r, e, 1 + (uint64_t)restart);
    for (int i = 0; i < n; i++) { /* x + epsilon t / max|t|, t uniform in (-1, 1), in the range */
        float *x = st->adv + (size_t)i * r->per_image;
        double top = 0;
        for (size_t j = 0; j < r->per_image; j++) {
            x[j] = 2.0f * bf_uniform(seed, (r->position + (uint64_t)i) * r->per_image + j) - 1.0f;
            top = fmax(top, fabs(x[j]));
        }
        for (size_t j = 0; j < r->per_image; j++) {
            const int ch = r->o->domain == BF_ATTACK_REFERENCE ? 0 : attack_channel(r, j);
            const float x0 = r->host_a0[(size_t)i * r->per_image + j];
            x[j] = fminf(fmaxf(x0 + (float)(eps * x[j] / top) / attack_pixel_scale(r, ch), box.lo[ch]), box.hi[ch]);
        }
        st->step_size[i] = 2.0 * eps;
    }
    const size_t bytes = attack_batch_floats(r) * sizeof(float);
    memcpy(st->best, st->adv, bytes), memcpy(st->best_adv, st->adv, bytes), memcpy(st->old, st->adv, bytes);
    BF_TRY(gradient_at(r, st, st->correct));
    memcpy(st->grad_best, st->grad, bytes);
    memcpy(st->loss_best, st->losses, (size_t)n * sizeof(float));
    memcpy(st->loss_best_last, st->losses, (size_t)n * sizeof(float));
    memset(st->loss_steps, 0, (size_t)steps * n * sizeof(float));
    int *pred_correct = st->reduced_last + n, k = steps_2, counter = 0;
    for (int i = 0; i < n; i++) st->reduced_last[i] = 1;
    for (int it = 0; it < steps; it++) {
        momentum_step(r, st, it, eps, &box);
        BF_TRY(gradient_at(r, st, pred_correct));
        for (int i = 0; i < n; i++) {
            if (!pred_correct[i]) st->correct[i] = 0, copy_image(r, st->best_adv, st->adv, i);
            st->loss_steps[(size_t)it * n + i] = st->losses[i];
            if (st->losses[i] > st->loss_best[i]) {
                copy_image(r, st->best, st->adv, i), copy_image(r, st->grad_best, st->grad, i);
                st->loss_best[i] = st->losses[i];
            }
        }
        if (++counter < k) continue;
        for (int i = 0; i < n; i++) { /* the checkpoint: halve where the loss rose in at most rho of the k steps */
            int rises = 0;
            for (int c = 0; c < k; c++) { /* a step before the first reads the last row, 0, as numpy's -1 does */
                const int now = it - c, before = it - c - 1 < 0 ? it - c - 1 + steps : it - c - 1;
                rises += st->loss_steps[(size_t)now * n + i] > st->loss_steps[(size_t)before * n + i];
            }
            const int oscillating = rises <= k * r->o->apgd_rho;
            const int no_improvement = !st->reduced_last[i] && st->loss_best_last[i] >= st->loss_best[i];
            st->reduced_last[i] = oscillating || no_improvement;
            st->loss_best_last[i] = st->loss_best[i];
            if (st->reduced_last[i]) {
                st->step_size[i] /= 2.0;
                copy_image(r, st->adv, st->best, i), copy_image(r, st->grad, st->grad_best, i);
            }
        }
        counter = 0;
        k = k - size_decr > steps_min ? k - size_decr : steps_min;
    }
    return BF_OK;
}

bf_status attack_apgd(attack_run *r, int e, float eps) {
    const int n = r->n;
    const size_t count = attack_batch_floats(r);
    apgd_state st = {.adv = malloc(6 * count * sizeof(float)),
                     .loss_steps = malloc(((size_t)r->o->apgd_steps + 4) * n * sizeof(float)),
                     .step_size = malloc((size_t)n * sizeof(double)), .reduced_last = malloc(4 * (size_t)n * sizeof(int))};
    float *final = malloc(count * sizeof(float));
    bf_status s = st.adv && st.loss_steps && st.step_size && st.reduced_last && final
                      ? BF_OK : bf_error(BF_ERR_OOM, "apgd: out of host memory");
    if (s == BF_OK) {
        st.old = st.adv + count, st.best = st.adv + 2 * count, st.best_adv = st.adv + 3 * count;
        st.grad = st.adv + 4 * count, st.grad_best = st.adv + 5 * count;
        st.losses = st.loss_steps + (size_t)r->o->apgd_steps * n;
        st.loss_best = st.losses + n, st.loss_best_last = st.losses + 2 * n;
        st.correct = st.reduced_last + 2 * n;
        memcpy(final, r->host_a0, count * sizeof(float));
    }
    int *still = st.reduced_last ? st.reduced_last + 3 * n : NULL; /* correct on the clean images and not fooled yet */
    if (s == BF_OK) { /* which images the model gets right: those are attacked */
        memcpy(st.adv, r->host_a0, count * sizeof(float));
        s = gradient_at(r, &st, still);
    }
    for (int restart = 0; s == BF_OK && restart < r->o->apgd_restarts; restart++) {
        int any = 0;
        for (int i = 0; i < n; i++) any |= still[i];
        if (!any) break;
        s = single_run(r, &st, e, restart, eps);
        for (int i = 0; s == BF_OK && i < n; i++)
            if (still[i] && !st.correct[i]) still[i] = 0, copy_image(r, final, st.best_adv, i);
    }
    if (s == BF_OK) s = bf_to_device(r->b, r->x, final, count * sizeof(float));
    free(st.adv), free(st.loss_steps), free(st.step_size), free(st.reduced_last), free(final);
    return s;
}
