/* test_flex_mask_ops.c - the fused mask joint of the CPU backend (ops.h flex_mask_joint_forward and
 * flex_mask_joint_backward) against the op-by-op sequence it replaces, which test_flex_ops.c checks
 * against naive references and finite differences: flex_widen_forward + flex_logits_forward +
 * flex_mask_forward (+ flex_mask_stats), and flex_mask_backward (+ add_inplace of dlogits when the
 * logits are P~ - T) + flex_widen_backward. The contract says bit-identical, so every float is
 * compared by its bits, for every mask kind, both channel rules (EXPAND by block copy, by tiling and
 * narrowing; BILINEAR widening and narrowing) and both sources of the logits (computed in the op,
 * or given as a caller's batch-norm leaves them); the backward also runs without dpooled.
 *
 * The CUDA kernels (flex_mask.cu) cannot run without a GPU, and the CPU ops compute through the
 * sequence, so the kernels' own algorithm is emulated here loop for loop (one iteration per CUDA
 * thread) and must give the same bits too: the forward per output element, and the backward per
 * pooled element over its candidate output channels in ascending order, where the channel's first
 * tap writes dconv and dlogits and each tap adds its weighted share to dpooled. */
#include <stdlib.h>
#include <string.h>

#include "../src/kernels/flex_cpu.h" /* taps_of, fold_candidates, widen_at, mask_of, mask_grad */
#include "bioflex/ops.h"
#include "testutil.h"

typedef struct mask_case {
    const char *name;
    bf_flex_channel_rule channels;
    int n, c_in, c_out, hw;
} mask_case;

static const mask_case k_cases[] = {
    {"expand 3->6", BF_FLEX_CHANNELS_EXPAND, 2, 3, 6, 37},
    {"expand 4->6 (tiling)", BF_FLEX_CHANNELS_EXPAND, 2, 4, 6, 37},
    {"expand 6->4 (narrowing)", BF_FLEX_CHANNELS_EXPAND, 2, 6, 4, 37},
    {"expand 5->5", BF_FLEX_CHANNELS_EXPAND, 3, 5, 5, 20},
    {"bilinear 3->8", BF_FLEX_CHANNELS_BILINEAR, 2, 3, 8, 37},
    {"bilinear 8->3", BF_FLEX_CHANNELS_BILINEAR, 2, 8, 3, 37},
    {"bilinear 4->7", BF_FLEX_CHANNELS_BILINEAR, 1, 4, 7, 29},
};

static float *uniform(size_t n, float lo, float hi, unsigned long seed) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    if (!x) exit(1);
    bf_test_fill_uniform(x, n, lo, hi, seed);
    return x;
}

/* Garbage (NaN bits), so that an output left unwritten shows. */
static float *garbage(size_t n) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    if (!x) exit(1);
    memset(x, 0xff, (n ? n : 1) * sizeof(float));
    return x;
}

static void same_bits(const char *name, const char *what, const float *want, const float *got, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&want[i], &got[i], sizeof(float)) != 0 && bad++ == 0) first = i;
    CHECK(bad == 0, "%s: %s: %zu of %zu differ, first %zu: %.9g vs %.9g", name, what, bad, n, first,
          bad ? want[first] : 0.0f, bad ? got[first] : 0.0f);
}

/* flex_mask.cu's k_mask_joint_forward, one iteration per thread: y only (its sums are block
 * partials, compared with a tolerance by test_flex_ops_cuda.c). */
static void emulate_forward(const bf_flex_shape *s, bf_flex_mask kind, float factor, uint64_t seed, const float *P,
                            const float *T, const float *logits, const float *C, float *y) {
    const size_t hw = (size_t)s->hw, total = (size_t)s->n * s->c_out * hw;
    for (size_t e = 0; e < total; e++) {
        const size_t plane = e / hw, p = e - plane * hw, n = plane / (size_t)s->c_out;
        const int j = (int)(plane - n * (size_t)s->c_out);
        const flex_taps t = taps_of(s, j);
        const float w = widen_at(&t, P + n * s->c_in * hw, hw, p);
        const float L = logits ? logits[e] : w - T[(size_t)j * hw + p];
        const float m = mask_of(kind, factor, bf_draws_of(seed), e, L);
        y[e] = w * (1.0f - m) + C[e] * m;
    }
}

/* flex_mask.cu's k_mask_joint_backward, one iteration per pooled element (thread). */
static void emulate_backward(const bf_flex_shape *s, bf_flex_mask kind, float factor, uint64_t seed, const float *P,
                             const float *T, const float *logits, const float *C, const float *dy, float *dconv,
                             float *dlogits, float *dpooled) {
    const size_t hw = (size_t)s->hw, pooled_total = (size_t)s->n * s->c_in * hw;
    for (size_t q = 0; q < pooled_total; q++) {
        const size_t plane = q / hw, p = q - plane * hw, n = plane / (size_t)s->c_in;
        const int i = (int)(plane - n * (size_t)s->c_in);
        const float *pn = P + n * s->c_in * hw;
        int lo, hi, step;
        fold_candidates(s, i, &lo, &hi, &step);
        float acc = 0.0f;
        for (int j = lo; j < hi; j += step) {
            const flex_taps t = taps_of(s, j);
            if (t.i0 != i && t.i1 != i) continue;
            const size_t e = (n * s->c_out + (size_t)j) * hw + p;
            const float w = widen_at(&t, pn, hw, p);
            const float L = logits ? logits[e] : w - T[(size_t)j * hw + p];
            const float m = mask_of(kind, factor, bf_draws_of(seed), e, L), g = dy[e];
            const float dl = g * (C[e] - w) * mask_grad(kind, factor, L, m);
            if (t.i0 == i) {
                dconv[e] = g * m;
                dlogits[e] = dl;
            }
            float share = g * (1.0f - m);
            if (!logits) share = share + dl;
            if (t.i0 == i) acc = acc + (t.i1 < 0 ? share : t.w0 * share);
            if (t.i1 == i) acc = acc + t.w1 * share;
        }
        dpooled[q] = acc;
    }
}

typedef struct sequence_result {
    float *y, *mask, *dconv, *dlogits, *dpooled;
    float sum, routing[2];
} sequence_result;

/* The op-by-op sequence the fused ops replace. */
static sequence_result run_sequence(bf_backend *cpu, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                    uint64_t seed, const float *P, const float *T, const float *given, const float *C,
                                    const float *dy) {
    const size_t no = (size_t)s->n * s->c_out * s->hw, ni = (size_t)s->n * s->c_in * s->hw;
    sequence_result r = {garbage(no), garbage(no), garbage(no), garbage(no), garbage(ni), 1.5f, {0, 0}};
    float *widened = garbage(no), *logits = garbage(no), *dwidened = garbage(no);
    const float *L = given ? given : logits;
    CHECK_OK(cpu->ops->flex_widen_forward(cpu, s, P, widened));
    if (!given) CHECK_OK(cpu->ops->flex_logits_forward(cpu, s, widened, T, logits));
    CHECK_OK(cpu->ops->flex_mask_forward(cpu, s, kind, factor, bf_draws_of(seed), L, C, widened, r.mask, r.y, &r.sum));
    CHECK_OK(cpu->ops->flex_mask_stats(cpu, r.mask, no, r.routing));
    CHECK_OK(cpu->ops->flex_mask_backward(cpu, s, kind, factor, L, r.mask, C, widened, dy, r.dconv, r.dlogits,
                                          dwidened));
    if (!given) CHECK_OK(cpu->ops->add_inplace(cpu, dwidened, r.dlogits, no));
    CHECK_OK(cpu->ops->flex_widen_backward(cpu, s, dwidened, r.dpooled));
    free(widened);
    free(logits);
    free(dwidened);
    return r;
}

static void run_case(bf_backend *cpu, const mask_case *mc, unsigned long seed0) {
    bf_flex_shape s = {.n = mc->n, .c_in = mc->c_in, .c_out = mc->c_out, .hw = mc->hw, .channels = mc->channels};
    const size_t no = (size_t)s.n * s.c_out * s.hw, ni = (size_t)s.n * s.c_in * s.hw;
    float *P = uniform(ni, -3, 3, seed0), *T = uniform((size_t)s.c_out * s.hw, -1, 1, seed0 + 1);
    float *given_logits = uniform(no, -4, 4, seed0 + 2), *C = uniform(no, -1, 1, seed0 + 3);
    float *dy = uniform(no, -1, 1, seed0 + 4);
    float *y = garbage(no), *dconv = garbage(no), *dlogits = garbage(no), *dpooled = garbage(ni);
    float *dconv2 = garbage(no), *dlogits2 = garbage(no);
    char what[160];
    int checked = 0;
    for (int with_logits = 0; with_logits < 2; with_logits++)
        for (bf_flex_mask k = 0; k < BF_FLEX_MASK_COUNT; k++) {
            const float factor = 2.5f;
            const uint64_t seed = 11 + (uint64_t)k;
            const float *given = with_logits ? given_logits : NULL;
            snprintf(what, sizeof what, "%s, kind %d, %s", mc->name, (int)k, with_logits ? "given logits" : "P~ - T");
            sequence_result want = run_sequence(cpu, &s, k, factor, seed, P, T, given, C, dy);
            float sum = 1.5f, routing[2] = {-1, -1};
            /* the threshold is not read when the logits are given */
            CHECK_OK(cpu->ops->flex_mask_joint_forward(cpu, &s, k, factor, bf_draws_of(seed), P, with_logits ? NULL : T, given, C,
                                                       y, &sum, routing));
            same_bits(what, "y", want.y, y, no);
            same_bits(what, "conv_mask_sum", &want.sum, &sum, 1);
            same_bits(what, "routing", want.routing, routing, 2);
            CHECK_OK(cpu->ops->flex_mask_joint_backward(cpu, &s, k, factor, bf_draws_of(seed), P, with_logits ? NULL : T, given, C,
                                                        dy, dconv, dlogits, dpooled));
            same_bits(what, "dconv", want.dconv, dconv, no);
            same_bits(what, "dlogits", want.dlogits, dlogits, no);
            same_bits(what, "dpooled", want.dpooled, dpooled, ni);
            CHECK_OK(cpu->ops->flex_mask_joint_backward(cpu, &s, k, factor, bf_draws_of(seed), P, T, given, C, dy, dconv2,
                                                        dlogits2, NULL));
            same_bits(what, "dconv without dpooled", want.dconv, dconv2, no);
            same_bits(what, "dlogits without dpooled", want.dlogits, dlogits2, no);
            /* the CUDA kernels' loops */
            memset(y, 0xff, no * sizeof(float));
            memset(dconv, 0xff, no * sizeof(float));
            memset(dlogits, 0xff, no * sizeof(float));
            memset(dpooled, 0xff, ni * sizeof(float));
            emulate_forward(&s, k, factor, seed, P, T, given, C, y);
            emulate_backward(&s, k, factor, seed, P, T, given, C, dy, dconv, dlogits, dpooled);
            same_bits(what, "emulated kernel: y", want.y, y, no);
            same_bits(what, "emulated kernel: dconv", want.dconv, dconv, no);
            same_bits(what, "emulated kernel: dlogits", want.dlogits, dlogits, no);
            same_bits(what, "emulated kernel: dpooled", want.dpooled, dpooled, ni);
            free(want.y);
            free(want.mask);
            free(want.dconv);
            free(want.dlogits);
            free(want.dpooled);
            checked++;
        }
    printf("  %-26s %d cases (mask kind x source of the logits): ops and emulated kernels against the sequence\n",
           mc->name, checked);
    float *bufs[] = {P, T, given_logits, C, dy, y, dconv, dlogits, dpooled, dconv2, dlogits2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

/* What the ops refuse: neither logits nor a threshold, an unknown mask kind, a NULL tensor. */
static void test_refusals(bf_backend *cpu) {
    bf_flex_shape s = {.n = 1, .c_in = 2, .c_out = 4, .hw = 5};
    float P[10] = {0}, T[20] = {0}, C[20] = {0}, y[20], dy[20] = {0}, dconv[20], dlogits[20], dpooled[10];
    CHECK(cpu->ops->flex_mask_joint_forward(cpu, &s, BF_FLEX_MASK_SIGMOID_HARD, 1, bf_draws_of(0), P, NULL, NULL, C, y, NULL,
                                            NULL) == BF_ERR_ARG,
          "forward without logits or threshold refused");
    CHECK(strstr(bf_last_error(), "neither logits nor threshold") != NULL, "message names it: %s", bf_last_error());
    CHECK(cpu->ops->flex_mask_joint_forward(cpu, &s, BF_FLEX_MASK_COUNT, 1, bf_draws_of(0), P, T, NULL, C, y, NULL, NULL) ==
              BF_ERR_ARG,
          "an unknown mask kind refused");
    CHECK(cpu->ops->flex_mask_joint_backward(cpu, &s, BF_FLEX_MASK_SIGMOID_HARD, 1, bf_draws_of(0), P, T, NULL, C, dy, dconv,
                                             NULL, dpooled) == BF_ERR_ARG,
          "backward without dlogits refused");
    CHECK(cpu->ops->flex_mask_joint_backward(cpu, &s, BF_FLEX_MASK_SIGMOID_HARD, 1, bf_draws_of(0), P, NULL, NULL, C, dy, dconv,
                                             dlogits, dpooled) == BF_ERR_ARG,
          "backward without logits or threshold refused");
}

int main(void) {
    bf_backend *cpu = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &cpu));
    if (!cpu) return bf_test_finish();
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) run_case(cpu, &k_cases[i], 100 + 10 * i);
    test_refusals(cpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
