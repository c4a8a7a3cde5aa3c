/* test_neuron_ops_cuda.c - the spiking-neuron ops of the CUDA backend against the CPU reference, for
 * every kind, reset mode, surrogate, detach_reset and through_time setting, T in {1, 4, 16}, and a
 * small and a large n (8*64*32*32, many blocks and a grid-stride loop).
 *
 * neuron.cu evaluates the same float expressions as neuron_cpu.c (explicit __f*_rn, no FMA), the
 * surrogates included (surrogate.h, one source for both), so spikes, charges and the spike
 * statistics must be bit-identical, and the gradients are compared with a tight tolerance. Outputs start as garbage, so an op that leaves part of
 * its output unwritten fails; the GPU statistics are computed twice and must repeat bit for bit.
 *
 * The spikes-as-bits ops (spikes_pack, spikes_unpack): words bit-identical to the CPU's, spikes
 * restored exactly; the LIF forward with the charge written over x (as the memory plan runs it).
 *
 * The rate coding op (spike_encode_rate) draws from the counter-based bf_draw_uniform (each step its own counters) on
 * both backends, so its spikes must be bit-identical too: T in {1, 3, 4, 16}, n not a multiple of
 * the block size, and a large [T, n] for the grid-stride loop (tests/test_spike_encode.c checks
 * the CPU op against its contract).
 * Skipped (exit 77) without a CUDA build or device. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;

/* atol < 0: bit-identical (a zero's sign aside); otherwise bf_test_max_violation <= 1. */
static void compare(const char *what, pair p, double atol, double rtol) {
    float *a, *b;
    if (pair_download(what, p, &a, &b)) {
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < p.n; i++)
            if (!(a[i] == b[i] || (a[i] != a[i] && b[i] != b[i])) && bad++ == 0) first = i;
        if (atol < 0) {
            CHECK(bad == 0, "%s: %zu of %zu differ, first %zu: cpu %.9g cuda %.9g", what, bad, p.n, first, a[first],
                  b[first]);
        } else {
            size_t worst = 0;
            double v = bf_test_max_violation(a, b, p.n, atol, rtol, &worst);
            if (v > 1.0 || bad > 0)
                printf("  %-60s %zu of %zu not identical, max violation %.3g\n", what, bad, p.n, v);
            CHECK(v <= 1.0, "%s: element %zu cpu %.9g cuda %.9g (violation %.3g)", what, worst, a[worst], b[worst], v);
        }
    }
    free(a);
    free(b);
}

#define EXACT -1.0, 0.0
#define TIGHT 1e-6, 1e-5

static const char *kind_name[] = {"lif", "if", "clamp01", "step"};
static const char *reset_name[] = {"hard", "soft", "none"};
static const char *surr_name[] = {"sigmoid", "arctan", "rect", "triangle", "tanh"};

/* One (kind, reset, T, n): the forward pass, then the backward pass for every surrogate, detach and
 * through_time setting. */
static void test_case(bf_neuron_kind kind, bf_reset_mode reset, int T, size_t n) {
    const size_t total = (size_t)T * n;
    const int stateful = kind == BF_NEURON_LIF || kind == BF_NEURON_IF;
    char what[160];
    float *h = malloc(total * sizeof(float) + 16);
    if (!h) exit(1);
    /* inputs around the threshold 1 (and STEP's 0, CLAMP01's 0 and 1), with exact hits */
    bf_test_fill_uniform(h, total, kind == BF_NEURON_STEP ? -1.0f : -0.5f, 1.5f, pair_next_seed());
    for (size_t i = 0; i < total; i += 13) h[i] = kind == BF_NEURON_STEP ? 0.0f : 1.0f;
    for (size_t i = 5; i < total; i += 17) h[i] = 0.0f;
    pair x = pair_from(h, total), y = pair_out(total), q = pair_out(total), y2 = pair_out(total),
         q2 = pair_out(total), dy = pair_rand(total, -1, 1), dx = pair_out(total);
    free(h);
    const float init[2] = {7.0f, 3.0f};
    pair st = pair_from(init, 2), st2 = pair_from(init, 2);

    bf_neuron_params p = {.kind = kind, .T = T, .decay = 0.9f, .threshold = 1.0f, .reset = reset,
                          .alpha = 4.0f, .width = 1.0f, .height = 0.3f};
    CHECK_OK(cpu->ops->neuron_forward(cpu, &p, n, x.c, y.c, stateful ? q.c : NULL, st.c));
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, n, x.g, y.g, stateful ? q.g : NULL, st.g));
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, n, x.g, y2.g, stateful ? q2.g : NULL, st2.g));
    snprintf(what, sizeof what, "forward %s/%s T=%d n=%zu", kind_name[kind], reset_name[reset], T, n);
    compare(what, y, EXACT);
    if (stateful) compare(what, q, EXACT);
    if (kind == BF_NEURON_CLAMP01) {
        compare(what, st, 1e-3, 1e-6); /* a sum of fractions, added in different orders */
    } else {
        compare(what, st, EXACT);
    }
    check_repeats(what, st.g, st2.g, 2);
    check_repeats(what, y.g, y2.g, total);
    /* without statistics (the other launch path); y2 and q2 already hold the results: garbage first */
    CHECK_OK(gpu->ops->fill(gpu, y2.g, 1e3f, total));
    CHECK_OK(gpu->ops->fill(gpu, q2.g, 1e3f, total));
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, n, x.g, y2.g, stateful ? q2.g : NULL, NULL));
    check_repeats(what, y.g, y2.g, total);
    if (stateful) check_repeats(what, q.g, q2.g, total);
    if (stateful) { /* the charge over x itself, as the memory plan passes it (ops.h) */
        CHECK_OK(gpu->ops->copy(gpu, q2.g, x.g, total * sizeof(float)));
        CHECK_OK(gpu->ops->neuron_forward(gpu, &p, n, q2.g, y2.g, q2.g, NULL));
        snprintf(what, sizeof what, "forward %s/%s T=%d n=%zu, charge over x", kind_name[kind], reset_name[reset], T, n);
        check_repeats(what, y.g, y2.g, total);
        check_repeats(what, q.g, q2.g, total);
    }

    for (int surr = 0; surr < 5; surr++)
        for (int detach = 0; detach < 2; detach++)
            for (int through = 0; through < 2; through++) {
                if (kind == BF_NEURON_CLAMP01 && surr > 0) continue; /* no surrogate */
                if (!stateful && (detach || !through)) continue;  /* no state */
                p.surrogate = surr;
                p.detach_reset = detach;
                p.through_time = through;
                CHECK_OK(cpu->ops->neuron_backward(cpu, &p, n, x.c, y.c, stateful ? q.c : NULL, dy.c, dx.c));
                CHECK_OK(gpu->ops->neuron_backward(gpu, &p, n, x.g, y.g, stateful ? q.g : NULL, dy.g, dx.g));
                snprintf(what, sizeof what, "backward %s/%s %s detach=%d through=%d T=%d n=%zu", kind_name[kind],
                         reset_name[reset], surr_name[surr], detach, through, T, n);
                compare(what, dx, TIGHT);
            }
    pair *all[] = {&x, &y, &q, &y2, &q2, &dy, &dx, &st, &st2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* Rate coding: inputs in [-0.5, 1.5) (clamped) with exact 0 and 1; the GPU runs twice. */
static void test_encode_rate(int T, size_t n, uint64_t seed) {
    const size_t total = (size_t)T * n;
    char what[96];
    float *h = malloc(n * sizeof(float) + 16);
    if (!h) exit(1);
    bf_test_fill_uniform(h, n, -0.5f, 1.5f, pair_next_seed());
    for (size_t i = 0; i < n; i += 7) h[i] = 1.0f;
    for (size_t i = 3; i < n; i += 11) h[i] = 0.0f;
    pair x = pair_from(h, n), y = pair_out(total), y2 = pair_out(total);
    free(h);
    bf_draws draws = bf_draws_of(seed);
    draws.first = seed % 4096; /* a batch at a sample offset */
    CHECK_OK(cpu->ops->spike_encode_rate(cpu, x.c, y.c, n, T, draws));
    CHECK_OK(gpu->ops->spike_encode_rate(gpu, x.g, y.g, n, T, draws));
    CHECK_OK(gpu->ops->spike_encode_rate(gpu, x.g, y2.g, n, T, draws));
    snprintf(what, sizeof what, "spike_encode_rate T=%d n=%zu seed=%llx", T, n, (unsigned long long)seed);
    compare(what, y, EXACT);
    check_repeats(what, y.g, y2.g, total);
    pair_free(&x);
    pair_free(&y);
    pair_free(&y2);
}

/* Spikes as bits (spikes_pack, spikes_unpack): n not a multiple of 32 (a partial last word) and
 * a large n for the grid-stride loops; the words must be bit-identical to the CPU's, and unpacking
 * either side's words must give back the spikes exactly. */
static void test_pack(size_t n) {
    char what[64];
    const size_t words = (n + 31) / 32;
    float *h = malloc(n * sizeof(float) + 16);
    if (!h) exit(1);
    bf_test_fill_uniform(h, n, 0.0f, 1.0f, pair_next_seed());
    for (size_t i = 0; i < n; i++) h[i] = h[i] < 0.3f ? 1.0f : 0.0f;
    pair y = pair_from(h, n), bits = pair_out(words + 1), back = pair_out(n);
    CHECK_OK(cpu->ops->spikes_pack(cpu, y.c, (uint32_t *)bits.c, n));
    CHECK_OK(gpu->ops->spikes_pack(gpu, y.g, (uint32_t *)bits.g, n));
    float *wc = NULL, *wg = NULL;
    snprintf(what, sizeof what, "spikes_pack n=%zu", n);
    if (pair_download(what, bits, &wc, &wg))
        CHECK(!memcmp(wc, wg, words * sizeof(uint32_t)), "%s: the words equal the CPU's", what);
    free(wc);
    free(wg);
    CHECK_OK(cpu->ops->spikes_unpack(cpu, (const uint32_t *)bits.c, back.c, n));
    CHECK_OK(gpu->ops->spikes_unpack(gpu, (const uint32_t *)bits.g, back.g, n));
    snprintf(what, sizeof what, "spikes_unpack n=%zu", n);
    compare(what, back, EXACT);
    pair_compare_exact(what, (pair){.c = y.c, .g = back.g, .n = n}); /* the spikes themselves */
    free(h);
    pair_free(&y);
    pair_free(&bits);
    pair_free(&back);
}

/* Argument errors and n = 0 as on the CPU. */
static void test_arguments(void) {
    pair x = pair_rand(8, 0, 1), y = pair_out(8);
    bf_neuron_params p = {.kind = BF_NEURON_LIF, .T = 2, .decay = 0.5f, .threshold = 1.0f, .alpha = 4.0f};
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, 4, x.g, y.g, NULL, NULL)); /* keeps no charge: test_neuron_bn_ops_cuda */
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, 0, NULL, NULL, NULL, NULL));
    p.T = 0;
    CHECK(gpu->ops->neuron_forward(gpu, &p, 4, x.g, y.g, y.g, NULL) == BF_ERR_ARG, "T = 0 accepted");
    p.T = 2;
    p.surrogate = (bf_surrogate)9;
    CHECK(gpu->ops->neuron_backward(gpu, &p, 4, x.g, y.g, y.g, x.g, y.g) == BF_ERR_ARG, "surrogate 9 accepted");
    p.surrogate = BF_SURROGATE_SIGMOID;
    p.alpha = 0.0f;
    CHECK(gpu->ops->neuron_forward(gpu, &p, 4, x.g, y.g, y.g, NULL) == BF_ERR_ARG, "sigmoid with alpha = 0 accepted");
    p.alpha = 4.0f;
    p.kind = BF_NEURON_STEP;
    CHECK(gpu->ops->neuron_backward(gpu, &p, 4, NULL, y.g, NULL, x.g, y.g) == BF_ERR_ARG, "STEP without x accepted");
    CHECK(gpu->ops->spike_encode_rate(gpu, x.g, y.g, 4, 0, bf_draws_of(1)) == BF_ERR_ARG, "spike_encode_rate: T = 0 accepted");
    CHECK(gpu->ops->spike_encode_rate(gpu, NULL, y.g, 4, 2, bf_draws_of(1)) == BF_ERR_ARG, "spike_encode_rate: NULL x accepted");
    CHECK_OK(gpu->ops->spike_encode_rate(gpu, x.g, y.g, 0, 2, bf_draws_of(1)));
    pair_free(&x);
    pair_free(&y);
}

int main(void) {
    if (!pair_open(&cpu, &gpu, 9100)) return bf_test_finish();

    const int Ts[] = {1, 4, 16};
    const size_t ns[] = {1000, (size_t)8 * 64 * 32 * 32};
    for (size_t b = 0; b < 2; b++)
        for (size_t a = 0; a < 3; a++)
            for (int kind = 0; kind < 4; kind++)
                for (int reset = 0; reset < 3; reset++) {
                    if (kind >= BF_NEURON_CLAMP01 && reset > 0) continue;
                    test_case(kind, reset, Ts[a], ns[b]);
                }
    /* enough elements for the 16-byte-vector kernels (vector_width: n/4 threads fill the GPU) */
    for (int kind = 0; kind < 4; kind++)
        for (int reset = 0; reset < 3; reset++)
            if (kind < BF_NEURON_CLAMP01 || reset == 0) test_case(kind, reset, 4, (size_t)32 * 64 * 32 * 32);
    test_encode_rate(1, 1000, 11);
    test_encode_rate(4, 1000, 12);
    test_encode_rate(3, 4099, 0x9E3779B97F4A7C15ull); /* a seed with the high bits set */
    test_encode_rate(16, (size_t)8 * 64 * 32 * 32, 13); /* more elements than threads: the grid-stride loop */
    test_pack(1);
    test_pack(1000);
    test_pack((size_t)16 * 64 * 32 * 32 * 8 + 7); /* more words than the grid's warps, a partial last word */
    test_arguments();
    CHECK_OK(gpu->ops->synchronize(gpu));

    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
