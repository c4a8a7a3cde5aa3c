/* test_spike_encode.c - the rate coding op of the CPU backend (ops.h spike_encode_rate):
 * y[t*n + i] = 1[bf_uniform(seed, t * 2^48 + first + i) < clamp(x[i], 0, 1)] for t < T (bf_draw_uniform
 * with the op's step_elements = n: every time step its own counters, first the batch's place).
 *
 * Checked: every output is 0 or 1 and equals the contract's formula (outputs start as garbage, so
 * an element left unwritten fails); over many draws the firing frequency of each input matches its
 * clamped intensity within a binomial tolerance (0 never fires, 1 always does), across time steps
 * of one element as well as across elements, and consecutive time steps are independent (a spike
 * at t does not repeat at t + 1 more often than chance); the same seed gives the same bits, on 1
 * and 2 threads, and another seed (the next training step) other spikes; argument errors.
 * The CUDA backend is checked against this one bit for bit in test_neuron_ops_cuda.c. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/ops.h"
#include "testutil.h"

static bf_backend *cpu;

static float *buf(size_t n) { /* zero-filled backend (= host) memory */
    void *p = NULL;
    if (bf_alloc(cpu, n * sizeof(float) + 16, &p) != BF_OK) exit(1);
    return p;
}
static float *garbage(size_t n) { /* what an op that skips elements leaves */
    float *p = buf(n);
    bf_test_fill_uniform(p, n, 1e3f, 2e3f, 77);
    return p;
}
static float clamp01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

/* The op against the formula of ops.h, bit for bit, inputs in [-0.5, 1.5) with exact 0 and 1. */
static void test_formula(int T, size_t n, uint64_t seed, uint64_t offset) {
    const size_t total = (size_t)T * n;
    float *x = buf(n), *y = garbage(total);
    bf_test_fill_uniform(x, n, -0.5f, 1.5f, (unsigned long)(seed ^ n));
    for (size_t i = 0; i < n; i += 7) x[i] = 1.0f;
    for (size_t i = 3; i < n; i += 11) x[i] = 0.0f;
    bf_draws draws = bf_draws_of(seed);
    draws.first = offset;
    draws.step_elements = 12345; /* the caller's is ignored: y is [T, n] */
    CHECK_OK(cpu->ops->spike_encode_rate(cpu, x, y, n, T, draws));
    size_t bad = 0, not_binary = 0, first = 0, ones = 0;
    for (size_t i = 0; i < total; i++) {
        const uint64_t t = i / n, counter = (t << 48) + offset + i % n;
        const float want = bf_uniform(seed, counter) < clamp01(x[i % n]) ? 1.0f : 0.0f;
        if (y[i] != 0.0f && y[i] != 1.0f) not_binary++;
        if (y[i] != want && bad++ == 0) first = i;
        ones += y[i] == 1.0f;
    }
    CHECK(not_binary == 0, "T=%d n=%zu: %zu of %zu outputs are neither 0 nor 1", T, n, not_binary, total);
    CHECK(bad == 0, "T=%d n=%zu seed=%llx: %zu of %zu differ from the formula, first %zu: x %g got %g", T, n,
          (unsigned long long)seed, bad, total, first, x[first % n], y[first]);
    CHECK(total < 100 || (ones > 0 && ones < total), "T=%d n=%zu: %zu spikes of %zu", T, n, ones, total);
    bf_free(cpu, x);
    bf_free(cpu, y);
}

/* |k/m - p| within z = 5 binomial standard deviations (plus one count), exact at p = 0 and 1. */
static int binomial_ok(size_t k, size_t m, double p) {
    if (p <= 0.0) return k == 0;
    if (p >= 1.0) return k == m;
    return fabs((double)k - p * (double)m) <= 5.0 * sqrt(p * (1.0 - p) * (double)m) + 1.0;
}

/* The frequency of each element over T = 20000 steps, and over 100000 elements at one step. */
static void test_frequency(void) {
    const float levels[] = {-0.3f, 0.0f, 0.001f, 0.1f, 0.25f, 1.0f / 3.0f, 0.5f, 0.75f, 0.9f, 0.999f, 1.0f, 1.7f};
    const size_t n = sizeof levels / sizeof levels[0];
    const int T = 20000;
    float *x = buf(n), *y = garbage((size_t)T * n);
    memcpy(x, levels, sizeof levels);
    CHECK_OK(cpu->ops->spike_encode_rate(cpu, x, y, n, T, bf_draws_of(0x5EEDull)));
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        for (int t = 0; t < T; t++) k += y[(size_t)t * n + i] == 1.0f;
        const double p = clamp01(levels[i]);
        CHECK(binomial_ok(k, (size_t)T, p), "x = %g: %zu spikes in %d steps, frequency %.5f, expected %.5f", levels[i],
              k, T, (double)k / T, p);
    }
    bf_free(cpu, x);
    bf_free(cpu, y);

    /* across elements, and the independence of consecutive steps: P(spike at t and t + 1) = p^2 */
    const size_t m = 100000;
    const float ps[] = {0.3f, 0.5f, 0.05f};
    for (size_t a = 0; a < sizeof ps / sizeof ps[0]; a++) {
        float *xm = buf(m), *ym = garbage(2 * m);
        for (size_t i = 0; i < m; i++) xm[i] = ps[a];
        CHECK_OK(cpu->ops->spike_encode_rate(cpu, xm, ym, m, 2, bf_draws_of(1000 + a)));
        size_t k0 = 0, k1 = 0, both = 0;
        for (size_t i = 0; i < m; i++) {
            k0 += ym[i] == 1.0f;
            k1 += ym[m + i] == 1.0f;
            both += ym[i] == 1.0f && ym[m + i] == 1.0f;
        }
        const double p = ps[a];
        CHECK(binomial_ok(k0, m, p) && binomial_ok(k1, m, p), "x = %g: %zu and %zu spikes of %zu at steps 0 and 1",
              p, k0, k1, m);
        CHECK(binomial_ok(both, m, p * p), "x = %g: %zu of %zu spike at both steps, expected %.0f", p, both, m,
              p * p * (double)m);
        bf_free(cpu, xm);
        bf_free(cpu, ym);
    }
}

/* The same (seed, step) gives the same spikes, on 1 and 2 threads; the next step other ones. */
static void test_determinism(void) {
    bf_backend *one = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &one));
    if (!one) return;
    const int T = 3;
    const size_t n = 100003, total = (size_t)T * n; /* large enough for the parallel loop */
    float *x = buf(n), *a = garbage(total), *b = garbage(total), *c = garbage(total), *d = garbage(total);
    bf_test_fill_uniform(x, n, -0.2f, 1.2f, 5);
    const uint64_t step7 = bf_seed_derive(42, BF_STREAM_DROPOUT, 7), step8 = bf_seed_derive(42, BF_STREAM_DROPOUT, 8);
    CHECK_OK(cpu->ops->spike_encode_rate(cpu, x, a, n, T, bf_draws_of(step7)));
    CHECK_OK(cpu->ops->spike_encode_rate(cpu, x, b, n, T, bf_draws_of(step7)));
    CHECK_OK(one->ops->spike_encode_rate(one, x, c, n, T, bf_draws_of(step7)));
    CHECK_OK(cpu->ops->spike_encode_rate(cpu, x, d, n, T, bf_draws_of(step8)));
    CHECK(memcmp(a, b, total * sizeof(float)) == 0, "the same seed gave other spikes");
    CHECK(memcmp(a, c, total * sizeof(float)) == 0, "1 and %d threads differ", cpu->num_threads);
    size_t differ = 0;
    double expected = 0;
    for (size_t i = 0; i < total; i++) {
        differ += a[i] != d[i];
        const double p = clamp01(x[i % n]);
        expected += 2.0 * p * (1.0 - p); /* two independent draws disagree */
    }
    CHECK(fabs((double)differ - expected) <= 5.0 * sqrt(expected) + 1.0,
          "steps 7 and 8: %zu of %zu spikes differ, expected about %.0f", differ, total, expected);
    float *all[] = {x, a, b, c, d};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(cpu, all[i]);
    bf_backend_destroy(one);
}

static void test_arguments(void) {
    float *x = buf(4), *y = buf(8);
    CHECK(cpu->ops->spike_encode_rate(cpu, x, y, 4, 0, bf_draws_of(1)) == BF_ERR_ARG, "T = 0 accepted");
    CHECK(cpu->ops->spike_encode_rate(cpu, x, y, 4, -1, bf_draws_of(1)) == BF_ERR_ARG, "T = -1 accepted");
    CHECK(cpu->ops->spike_encode_rate(cpu, NULL, y, 4, 2, bf_draws_of(1)) == BF_ERR_ARG, "NULL x accepted");
    CHECK(cpu->ops->spike_encode_rate(cpu, x, NULL, 4, 2, bf_draws_of(1)) == BF_ERR_ARG, "NULL y accepted");
    CHECK_OK(cpu->ops->spike_encode_rate(cpu, x, y, 0, 2, bf_draws_of(1)));
    bf_free(cpu, x);
    bf_free(cpu, y);
}

int main(void) {
    CHECK_OK(bf_backend_create_cpu(2, &cpu));
    if (!cpu) return bf_test_finish();

    test_formula(1, 1, 1, 0);
    test_formula(1, 1000, 2, 0);
    test_formula(4, 37, 3, 0);
    test_formula(4, 37, 3, 37 * 5);                   /* a batch that starts at sample 5 */
    test_formula(16, 1000, 0x9E3779B97F4A7C15ull, 0); /* a seed with the high bits set */
    test_formula(3, 100003, 4, 1);                    /* the parallel loop */
    test_frequency();
    test_determinism();
    test_arguments();

    bf_backend_destroy(cpu);
    return bf_test_finish();
}
