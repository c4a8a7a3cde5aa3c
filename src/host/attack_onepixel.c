/* attack_onepixel.c - the one-pixel attack (analysis.h; torchattacks 3.5.1's OnePixel, after Su et
 * al. 2019), an L0 attack: for each image, differential evolution (differential_evolution.h, with
 * torchattacks' settings: mutation in [0.5, 1), recombination 1, a random start, no polishing)
 * searches the positions and values of `pixels` pixels that minimise the model's softmax
 * probability of the label, and stops early once the best candidate is misclassified.
 *
 * At epsilon e (the reference's grid runs from 1 to 42): pixels = max(1, int e), generations =
 * onepixel_steps (0: int(2 e)), and a population of max(5, max(1, int(popsize / P)) x P), popsize =
 * onepixel_popsize (0: int(e)), with P = (2 + channels) x pixels parameters (row, column, and a value
 * in [0, 1] per channel for each pixel). Each image is searched on its own, its candidates scored in
 * batches of the model's size. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attack_run.h"
#include "differential_evolution.h"

typedef struct onepixel_search {
    attack_run *r;
    int image;          /* within the batch */
    int pixels;
    bf_attack_box box;  /* the pixel range in the model's input units */
    float *images;      /* the model's batch of candidates, on the host */
} onepixel_search;

/* Candidate k's image: the clean one with its pixels set (a later pixel over an earlier one). */
static void candidate_image(const onepixel_search *s, const double *parameters, float *image) {
    const attack_run *r = s->r;
    const int C = r->format.c, H = r->format.h, W = r->format.w;
    memcpy(image, r->host_a0 + (size_t)s->image * r->per_image, r->per_image * sizeof(float));
    for (int k = 0; k < s->pixels; k++) {
        const double *p = parameters + (size_t)k * (2 + C);
        const int row = (int)(p[0] * H) < H ? (int)(p[0] * H) : H - 1, col = (int)(p[1] * W) < W ? (int)(p[1] * W) : W - 1;
        for (int ch = 0; ch < C; ch++) {
            const int box_ch = r->o->domain == BF_ATTACK_REFERENCE ? 0 : ch;
            image[((size_t)ch * H + row) * W + col] = s->box.lo[box_ch] + (float)p[2 + ch] / attack_pixel_scale(r, ch);
        }
    }
}

/* energy = the softmax probability of the label, flag = misclassified; in batches of the model's. */
static bf_status score(void *context, const double *candidates, int count, double *energy, int *flag) {
    onepixel_search *s = context;
    attack_run *r = s->r;
    bf_model *m = r->m;
    const int K = m->num_classes, max_batch = m->input_shape.n, label = r->host_labels[s->image];
    const size_t parameters = (size_t)s->pixels * (2 + r->format.c);
    for (int first = 0; first < count; first += max_batch) {
        const int n = count - first < max_batch ? count - first : max_batch;
        const float *logits = NULL;
        for (int i = 0; i < n; i++) candidate_image(s, candidates + (size_t)(first + i) * parameters, s->images + (size_t)i * r->per_image);
        BF_TRY(bf_model_set_batch(m, n));
        BF_TRY(bf_to_device(r->b, r->dir, s->images, (size_t)n * r->per_image * sizeof(float)));
        m->step = ATTACK_GRADIENT_STEP;
        m->sample_offset = r->position + (uint64_t)s->image;
        BF_TRY(bf_model_forward(m, r->dir, &logits));
        BF_TRY(bf_to_host(r->b, r->host_logits, logits, (size_t)n * K * sizeof(float)));
        for (int i = 0; i < n; i++) {
            const float *z = r->host_logits + (size_t)i * K;
            double top = z[0], total = 0;
            int best = 0;
            for (int c = 1; c < K; c++) top = fmax(top, z[c]), best = z[c] > z[best] ? c : best;
            for (int c = 0; c < K; c++) total += exp((double)z[c] - top);
            energy[first + i] = exp((double)z[label] - top) / total;
            flag[first + i] = best != label;
        }
    }
    return BF_OK;
}

bf_status attack_onepixel(attack_run *r, int e, float eps) {
    const int C = r->format.c, pixels = (int)eps > 1 ? (int)eps : 1, parameters = (2 + C) * pixels;
    const int popsize = r->o->onepixel_popsize > 0 ? r->o->onepixel_popsize : (int)eps;
    const int popmul = popsize / parameters > 1 ? popsize / parameters : 1;
    const bf_de_options de = {.parameters = parameters, .members = popmul * parameters > 5 ? popmul * parameters : 5,
                              .generations = r->o->onepixel_steps > 0 ? r->o->onepixel_steps : (int)(2.0 * (double)eps),
                              .mutation_lo = 0.5, .mutation_hi = 1.0, .recombination = 1.0};
    onepixel_search s = {.r = r, .pixels = pixels, .box = attack_box(r, 1.0f, INFINITY, 1),
                         .images = malloc((size_t)r->m->input_shape.n * r->per_image * sizeof(float))};
    float *adversarial = malloc(attack_batch_floats(r) * sizeof(float));
    double *best = malloc((size_t)parameters * sizeof *best);
    bf_status st = s.images && adversarial && best ? BF_OK : bf_error(BF_ERR_OOM, "onepixel: out of host memory");
    const int n = r->n;
    for (int i = 0; st == BF_OK && i < n; i++) {
        bf_de_options o = de;
        o.seed = attack_seed(r, e, 1 + r->position + (uint64_t)i); /* the image's own: any batching searches alike */
        s.image = i;
        st = bf_differential_evolution(&o, score, &s, best, NULL);
        if (st == BF_OK) candidate_image(&s, best, adversarial + (size_t)i * r->per_image);
    }
    bf_status restored = bf_model_set_batch(r->m, n);
    if (st == BF_OK) st = restored;
    if (st == BF_OK) st = bf_to_device(r->b, r->x, adversarial, attack_batch_floats(r) * sizeof(float));
    free(s.images), free(adversarial), free(best);
    return st;
}
