/* fragments_hebbian.c - the Hebbian rule of the Net Fragments model (fragments.h;
 * ../shared/specs/netfragments.md 3.3 and 7). With y the lower median over time of the states,
 * X = concat(s1, y) (not binarised), x~ = clip(x, 0, 1) and the sums over the 1024 positions of the
 * zero-padded 11x11 patches,
 *     pos = Y X~^T,  negA = rowsum(Y) - Y 1[P != 0]^T,  negB = colsum(X~) - pos,
 *     u = relu((pos - negA - negB) / N),  u = (u - min u) / (max u - min u + 1e-10),  W = clip(W + lr u, 0, 1)
 * with min and max over all 40 x 5324 entries. pos and the counts only have entries where an active
 * y pixel meets a nonzero input in its window; every other entry has u <= 0, i.e. 0 after the ReLU.
 * The sums are exact (double; integer or half-integer counts for the configs' inputs) and what
 * follows is float32 in the reference's order. With hebb_binarised the S1 inputs are the forward
 * pass's instead, 1[x > 0.5] (real-valued S1 alone differs: its responses in (0, 0.5] take part in the
 * reference's learning though the forward pass counts them inactive). */
#include <math.h>
#include <string.h>

#include "fragments_internal.h"

bf_status bf_fragments_hebbian(bf_fragments *f, const float *s1, const float *z) {
    if (!f || !s1 || !z) return bf_error(BF_ERR_ARG, "bf_fragments_hebbian: NULL argument");
    const int S = BF_FRAG_SIZE, T = f->opt.T;
    frag_input *inputs = f->inputs;
    int *ys = f->ys;
    int n_inputs = 0, n_y = 0, y_count[BF_FRAG_CELLS] = {0};
    for (int i = 0; i < BF_FRAG_S1 * FRAG_PIX; i++) {
        const int active = f->opt.hebb_binarised ? s1[i] > 0.5f : s1[i] != 0;
        const double x = f->opt.hebb_binarised ? 1.0 : fmin(fmax(s1[i], 0.0), 1.0);
        if (active) inputs[n_inputs++] = (frag_input){i / FRAG_PIX, i % FRAG_PIX / S, i % S, x};
    }
    for (int i = 0; i < FRAG_STATE; i++) {
        int on = 0; /* torch.median's lower median of binary values: on in more than T / 2 steps */
        for (int t = 0; t < T; t++) on += z[(size_t)t * FRAG_STATE + i] > 0.5f;
        if (2 * on > T) {
            ys[n_y++] = i;
            y_count[i / FRAG_PIX]++;
            inputs[n_inputs++] = (frag_input){BF_FRAG_S1 + i / FRAG_PIX, i % FRAG_PIX / S, i % S, 1.0};
        }
    }
    /* colsum(X~) of every (channel, offset): the inputs whose offset pixel p = q - d lies inside */
    memset(f->colsum, 0, sizeof f->colsum);
    for (int j = 0; j < n_inputs; j++) {
        const frag_input *in = &inputs[j];
        for (int ky = 0; ky < BF_FRAG_K; ky++) {
            const int py = in->qy - (ky - FRAG_REACH);
            if (py < 0 || py >= S) continue;
            for (int kx = 0; kx < BF_FRAG_K; kx++) {
                const int px = in->qx - (kx - FRAG_REACH);
                if (px >= 0 && px < S) f->colsum[in->c * FRAG_TAPS + ky * BF_FRAG_K + kx] += in->clipped;
            }
        }
    }
    /* pos and y 1[P != 0] per entry, over the (active y, nonzero input) pairs within reach */
    f->n_hits = 0;
    for (int k = 0; k < n_y; k++) {
        const int o = ys[k] / FRAG_PIX, py = ys[k] % FRAG_PIX / S, px = ys[k] % S;
        for (int j = 0; j < n_inputs; j++) {
            const int dy = inputs[j].qy - py, dx = inputs[j].qx - px;
            if (dy < -FRAG_REACH || dy > FRAG_REACH || dx < -FRAG_REACH || dx > FRAG_REACH) continue;
            const int e = o * FRAG_ROW + inputs[j].c * FRAG_TAPS + (dy + FRAG_REACH) * BF_FRAG_K + dx + FRAG_REACH;
            if (!f->nonzero_count[e]) f->hits[f->n_hits++] = e;
            f->nonzero_count[e]++;
            f->pos[e] += inputs[j].clipped;
        }
    }
    /* u of the hits (in place of pos) and the global max and min after the ReLU */
    float u_max = 0, u_min = 0;
    for (int h = 0; h < f->n_hits; h++) {
        const int e = f->hits[h], o = e / FRAG_ROW;
        const double pos = f->pos[e];
        const double sum = f->opt.neg_corr ? pos - (y_count[o] - f->nonzero_count[e]) - (f->colsum[e % FRAG_ROW] - pos) : pos;
        float u = (float)sum / (float)FRAG_PIX; /* torch.mean: the float32 sum over N, then / N */
        u = u > 0 ? u : 0.0f;
        f->pos[e] = u;
        if (u > u_max) u_max = u;
        if (h == 0 || u < u_min) u_min = u;
    }
    if (f->n_hits < FRAG_WEIGHTS) u_min = 0; /* an entry no pair reached has u <= 0 */
    const float denom = (u_max - u_min) + 1e-10f, lr = f->opt.lr;
    for (int h = 0; h < f->n_hits; h++) {
        const int e = f->hits[h];
        const float u = ((float)f->pos[e] - u_min) / denom;
        if (u != 0) f->w[e] = fminf(fmaxf(f->w[e] + lr * u, 0.0f), 1.0f);
        f->pos[e] = 0, f->nonzero_count[e] = 0;
    }
    f->n_hits = 0;
    return BF_OK;
}
