/* attack_jsma.c - the Jacobian saliency map attack (analysis.h; torchattacks 3.5.1's JSMA, after
 * Papernot et al. 2016), an L0 attack: towards the target class (label + 1) mod K, it raises two
 * pixels at a time by theta = epsilon, the pair chosen from the logits' Jacobian, until the model
 * predicts the target, ceil(gamma x pixels / 2) pairs were raised, or no pixel is left below 0.99.
 *
 * The batch moves in lockstep: each round takes the Jacobian of every image (K backward passes,
 * one per class, each after its own forward: the backward may reuse the forward's memory), then
 * picks and raises each unfinished image's pair on the host. The Jacobian is taken in the attack's
 * [0, 1] units (the model's input gradient divided by attack_pixel_scale), as torchattacks takes
 * it on its [0, 1] images. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attack_run.h"

typedef struct jsma_state {
    float *x;          /* the images, in the model's input units */
    float *jacobian;   /* [n][K][pixels], in [0, 1] units */
    unsigned char *searchable; /* [n][pixels]: not yet raised, and below 0.99 at the start */
    int *rounds;       /* pairs raised per image */
    int *done;         /* an image that reached the target, its budget, or no admissible pair */
} jsma_state;

/* The pair (p < q) of searchable pixels with the largest alpha |beta|, alpha = t_p + t_q > 0 and
 * beta = o_p + o_q < 0, t the target's row of the Jacobian and o the sum of the other rows;
 * among equal saliencies the first in row-major order, as torch.argmax. 0 when none is admissible:
 * torchattacks then raises pixel 0 twice (its argmax of an all-zero map); this image stops instead. */
static int best_pair(const float *t, const float *o, const unsigned char *searchable, size_t pixels, size_t *p_out,
                     size_t *q_out) {
    float best = 0;
    int found = 0;
    for (size_t p = 0; p < pixels; p++) {
        if (!searchable[p]) continue;
        for (size_t q = p + 1; q < pixels; q++) {
            if (!searchable[q]) continue;
            const float alpha = t[p] + t[q], beta = o[p] + o[q];
            if (!(alpha > 0.0f && beta < 0.0f)) continue;
            const float saliency = alpha * fabsf(beta);
            if (!found || saliency > best) best = saliency, *p_out = p, *q_out = q, found = 1;
        }
    }
    return found;
}

/* The model's prediction for every image at st->x (st->x also into r->dir, the model's input). */
static bf_status predict(attack_run *r, jsma_state *st, int *predicted) {
    bf_model *m = r->m;
    const int K = m->num_classes;
    const float *logits = NULL;
    BF_TRY(bf_to_device(r->b, r->dir, st->x, attack_batch_floats(r) * sizeof(float)));
    m->step = ATTACK_GRADIENT_STEP;
    m->sample_offset = r->position;
    BF_TRY(bf_model_forward(m, r->dir, &logits));
    BF_TRY(bf_to_host(r->b, r->host_logits, logits, (size_t)r->n * K * sizeof(float)));
    for (int i = 0; i < r->n; i++) {
        const float *z = r->host_logits + (size_t)i * K;
        predicted[i] = 0;
        for (int c = 1; c < K; c++) predicted[i] = z[c] > z[predicted[i]] ? c : predicted[i];
    }
    return BF_OK;
}

/* st->jacobian of every image at r->dir: row k is the input gradient of logit k, one forward and
 * backward per class. */
static bf_status take_jacobian(attack_run *r, jsma_state *st) {
    bf_model *m = r->m;
    const int n = r->n, K = m->num_classes;
    const size_t count = attack_batch_floats(r);
    float *onehot = calloc((size_t)n * K, sizeof *onehot), *dinput = malloc(count * sizeof *dinput);
    bf_status s = onehot && dinput ? BF_OK : bf_error(BF_ERR_OOM, "jsma: out of host memory");
    for (int k = 0; s == BF_OK && k < K; k++) {
        const float *logits = NULL;
        m->step = ATTACK_GRADIENT_STEP;
        m->sample_offset = r->position;
        s = bf_model_forward(m, r->dir, &logits);
        for (int i = 0; i < n; i++) onehot[(size_t)i * K + (k == 0 ? 0 : k - 1)] = 0, onehot[(size_t)i * K + k] = 1;
        if (s == BF_OK) s = bf_to_device(r->b, r->dlogits, onehot, (size_t)n * K * sizeof(float));
        if (s == BF_OK) s = bf_model_backward(m, r->dlogits);
        if (s == BF_OK) s = bf_to_host(r->b, dinput, m->dinput, count * sizeof(float));
        for (size_t j = 0; s == BF_OK && j < count; j++) {
            const size_t i = j / r->per_image, pixel = j % r->per_image;
            st->jacobian[(i * K + (size_t)k) * r->per_image + pixel] =
                dinput[j] / attack_pixel_scale(r, attack_channel(r, pixel));
        }
    }
    free(onehot), free(dinput);
    return s;
}

/* One round for image i: its pair raised by theta (in [0, 1] units) and clamped to the range. */
static void raise_pair(attack_run *r, jsma_state *st, int i, int target, float theta, const bf_attack_box *box) {
    const int K = r->m->num_classes;
    const size_t P = r->per_image;
    const float *rows = st->jacobian + (size_t)i * K * P;
    float *t = malloc(2 * P * sizeof *t), *o = t ? t + P : NULL;
    size_t p = 0, q = 0;
    if (!t) { st->done[i] = 1; return; }
    for (size_t j = 0; j < P; j++) { /* torch.sum over the classes, then minus the target's row */
        float all = 0;
        for (int k = 0; k < K; k++) all += rows[(size_t)k * P + j];
        t[j] = rows[(size_t)target * P + j];
        o[j] = all - t[j];
    }
    if (best_pair(t, o, st->searchable + (size_t)i * P, P, &p, &q)) {
        const size_t pair[2] = {p, q};
        for (int side = 0; side < 2; side++) {
            const size_t at = (size_t)i * P + pair[side];
            const int ch = r->o->domain == BF_ATTACK_REFERENCE ? 0 : attack_channel(r, pair[side]);
            const float raised = st->x[at] + theta / attack_pixel_scale(r, ch);
            st->x[at] = fminf(fmaxf(raised, box->lo[ch]), box->hi[ch]);
            st->searchable[at] = 0;
        }
        st->rounds[i]++;
    } else {
        st->done[i] = 1;
    }
    free(t);
}

bf_status attack_jsma(attack_run *r, int e, float eps) {
    (void)e;
    const int n = r->n, K = r->m->num_classes;
    const size_t count = attack_batch_floats(r), P = r->per_image;
    const int budget = (int)ceil((double)P * r->o->jsma_gamma / 2.0);
    const bf_attack_box box = attack_box(r, 1.0f, INFINITY, 1);
    jsma_state st = {.x = malloc(count * sizeof(float)), .jacobian = malloc(count * K * sizeof(float)),
                     .searchable = malloc(count), .rounds = calloc((size_t)n, sizeof(int)),
                     .done = calloc((size_t)n, sizeof(int))};
    int *predicted = malloc((size_t)n * sizeof *predicted);
    bf_status s = st.x && st.jacobian && st.searchable && st.rounds && st.done && predicted
                      ? BF_OK : bf_error(BF_ERR_OOM, "jsma: out of host memory");
    if (s == BF_OK) {
        memcpy(st.x, r->host_a0, count * sizeof(float));
        for (size_t j = 0; j < count; j++) { /* the pixel's value in [0, 1] units */
            const int ch = r->o->domain == BF_ATTACK_REFERENCE ? 0 : attack_channel(r, j % P);
            st.searchable[j] = (st.x[j] - box.lo[ch]) * attack_pixel_scale(r, ch) < 0.99f;
        }
    }
    while (s == BF_OK) {
        s = predict(r, &st, predicted);
        int active = 0;
        for (int i = 0; s == BF_OK && i < n; i++) {
            st.done[i] |= st.rounds[i] >= budget || predicted[i] == (r->host_labels[i] + 1) % K;
            active += !st.done[i];
        }
        if (s != BF_OK || !active) break;
        s = take_jacobian(r, &st);
        for (int i = 0; s == BF_OK && i < n; i++)
            if (!st.done[i]) raise_pair(r, &st, i, (r->host_labels[i] + 1) % K, eps, &box);
    }
    if (s == BF_OK) s = bf_to_device(r->b, r->x, st.x, count * sizeof(float));
    free(st.x), free(st.jacobian), free(st.searchable), free(st.rounds), free(st.done), free(predicted);
    return s;
}
