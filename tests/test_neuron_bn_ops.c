/* test_neuron_bn_ops.c - the recomputed charge of the CPU backend ([spiking] recompute_charge):
 *   - neuron_forward_bn, which normalises batch-norm's input as it reads it, gives the spikes and
 *     statistics of batchnorm_forward_saved + neuron_forward, bit for bit; batchnorm_forward_train
 *     (and the synchronised apply) without an output gives the statistics it gives with one;
 *   - neuron_backward_bn, which computes each element's charges again from batch-norm's input and
 *     statistics, gives the very bits of the op sequence it replaces: batchnorm_forward_saved, then
 *     neuron_forward keeping the charge, then neuron_backward; for LIF and IF, every reset mode,
 *     surrogate, detach_reset and through_time setting, T from 1 to BF_NEURON_BN_MAX_T, and channel
 *     planes of 1, 3 and 16 elements (a tile of 64 elements spans several channels, or part of one);
 *   - with one and two threads alike;
 *   - neuron_forward with no charge to keep: the same spikes and statistics as with one;
 *   - a shared input (one step read at every step): the spikes of the step repeated T times, and
 *     the steps' gradients summed, bit for bit;
 *   - neuron_forward_bn's bits: spikes_pack's of its spikes, and the GPU's packing in the same pass
 *     emulated loop for loop;
 *   - neuron_batchnorm_backward: the bits of neuron_backward_bn then batchnorm_backward; and its
 *     CUDA kernels' index walks emulated loop for loop (every element once per pass, the results);
 *   - its argument checks (T above the limit, a stateless neuron, elements that are not whole
 *     samples, missing statistics; a shared input's charge, and neuron_backward of one).
 * tests/test_neuron_bn_ops_cuda.c holds the CUDA kernels to the same results. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h" /* bf_uniform */
#include "bioflex/ops.h"
#include "testutil.h"

static const char *reset_name[] = {"hard", "soft", "none"};
static const char *surr_name[] = {"sigmoid", "arctan", "rect", "triangle", "tanh"};

/* One shape and neuron: the batch-norm input and statistics are drawn so that the normalised input
 * lies around the threshold 1 (spikes and silences, resets of every kind). */
static void test_case(bf_backend *b, bf_backend *b2, bf_neuron_kind kind, bf_reset_mode reset, int T, int samples,
                      int c, int hw, unsigned long seed) {
    const size_t n = (size_t)samples * c * hw, total = (size_t)T * n;
    float *xin = bf_test_uniform(b, total, -2.0f, 2.0f, seed), *dy = bf_test_uniform(b, total, -1.0f, 1.0f, seed + 1);
    float *mean = bf_test_uniform(b, (size_t)c, -0.5f, 0.5f, seed + 2);
    float *invstd = bf_test_uniform(b, (size_t)c, 0.5f, 2.0f, seed + 3);
    float *gamma = bf_test_uniform(b, (size_t)c, -1.0f, 1.5f, seed + 4);
    float *beta = bf_test_uniform(b, (size_t)c, 0.0f, 1.0f, seed + 5);
    float *x = bf_test_alloc(b, total), *y = bf_test_alloc(b, total), *y2 = bf_test_alloc(b, total);
    float *charge = bf_test_alloc(b, total), *dx_ref = bf_test_alloc(b, total), *dx = bf_test_alloc(b, total);
    float *dx2 = bf_test_alloc(b, total);
    float stats[2] = {0, 0}, stats2[2] = {0, 0};
    const bf_bn_shape bs = {.n = T * samples, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    const bf_neuron_bn_input in = {c, hw, mean, invstd, gamma, beta};
    bf_neuron_params p = {.kind = kind, .T = T, .decay = 0.8f, .threshold = 1.0f, .reset = reset,
                          .alpha = 4.0f, .width = 1.0f, .height = 0.3f};
    char what[192];
    snprintf(what, sizeof what, "%s/%s T=%d [%d, %d, %d]", kind == BF_NEURON_LIF ? "lif" : "if", reset_name[reset], T,
             samples, c, hw);

    CHECK_OK(b->ops->batchnorm_forward_saved(b, &bs, xin, gamma, beta, mean, invstd, x));
    CHECK_OK(b->ops->neuron_forward(b, &p, n, x, y, charge, stats));
    CHECK_OK(b->ops->neuron_forward(b, &p, n, x, y2, NULL, stats2)); /* keeps no charge */
    CHECK(memcmp(y, y2, total * sizeof(float)) == 0 && memcmp(stats, stats2, sizeof stats) == 0,
          "%s: the forward without a charge to keep gives other spikes or statistics", what);
    CHECK(stats[0] > 0 && stats[0] < (float)total, "%s: %g spikes of %zu steps (want some, not all)", what,
          (double)stats[0], total);
    float stats3[2] = {0, 0};
    bf_test_fill_uniform(y2, total, 1e3f, 2e3f, seed + 7);
    const size_t words = (total + 31) / 32;
    uint32_t *bits = calloc(words, sizeof(uint32_t)), *bits_ref = calloc(words, sizeof(uint32_t));
    if (!bits || !bits_ref) exit(1);
    memset(bits, 0xA5, words * sizeof(uint32_t)); /* garbage: every word must be written */
    CHECK_OK(b->ops->neuron_forward_bn(b, &p, &in, n, xin, y2, bits, stats3));
    CHECK(memcmp(y, y2, total * sizeof(float)) == 0 && memcmp(stats, stats3, sizeof stats) == 0,
          "%s: the forward from the batch-norm input gives other spikes or statistics", what);
    CHECK_OK(b->ops->spikes_pack(b, y, bits_ref, total));
    CHECK(memcmp(bits, bits_ref, words * sizeof(uint32_t)) == 0, "%s: the forward's bits are not spikes_pack's", what);
    free(bits);
    free(bits_ref);
    if (b2) {
        float stats4[2] = {0, 0};
        CHECK_OK(b2->ops->neuron_forward_bn(b2, &p, &in, n, xin, y2, NULL, stats4));
        CHECK(memcmp(y, y2, total * sizeof(float)) == 0 && memcmp(stats, stats4, sizeof stats) == 0,
              "%s: two threads give other spikes or statistics than one", what);
    }

    for (int surr = 0; surr < 5; surr++)
        for (int detach = 0; detach < 2; detach++)
            for (int through = 0; through < 2; through++) {
                p.surrogate = (bf_surrogate)surr;
                p.detach_reset = detach;
                p.through_time = through;
                CHECK_OK(b->ops->neuron_backward(b, &p, n, x, NULL, charge, dy, dx_ref));
                bf_test_fill_uniform(dx, total, 1e3f, 2e3f, seed + 6); /* garbage: every element must be written */
                CHECK_OK(b->ops->neuron_backward_bn(b, &p, &in, n, xin, dy, dx));
                size_t differ = 0, first = 0;
                for (size_t i = 0; i < total; i++)
                    if (memcmp(&dx[i], &dx_ref[i], sizeof(float)) != 0 && differ++ == 0) first = i;
                CHECK(differ == 0, "%s %s detach=%d through=%d: %zu of %zu gradients differ from the kept charge's, "
                                   "first %zu: %.9g vs %.9g",
                      what, surr_name[surr], detach, through, differ, total, first, (double)dx[first],
                      (double)dx_ref[first]);
                if (b2) {
                    CHECK_OK(b2->ops->neuron_backward_bn(b2, &p, &in, n, xin, dy, dx2));
                    CHECK(memcmp(dx, dx2, total * sizeof(float)) == 0, "%s %s: two threads give other bits than one",
                          what, surr_name[surr]);
                }
            }
    float *all[] = {xin, dy, mean, invstd, gamma, beta, x, y, y2, charge, dx_ref, dx, dx2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

/* A shared input (bf_neuron_params.shared_input): one step of batch-norm input read at every step.
 * Against the same step repeated T times and run unshared: neuron_forward_bn's and neuron_forward's
 * spikes and statistics bit for bit, and neuron_backward_bn's dx the steps' gradients summed from
 * T-1 down to 0, bit for bit; with one and two threads; and the calls a shared input refuses. */
static void test_shared_input(bf_backend *b, bf_backend *b2, bf_neuron_kind kind, bf_reset_mode reset, int T,
                              int samples, int c, int hw, unsigned long seed) {
    const size_t n = (size_t)samples * c * hw, total = (size_t)T * n;
    float *xin = bf_test_uniform(b, n, -2.0f, 2.0f, seed), *dy = bf_test_uniform(b, total, -1.0f, 1.0f, seed + 1);
    float *mean = bf_test_uniform(b, (size_t)c, -0.5f, 0.5f, seed + 2);
    float *invstd = bf_test_uniform(b, (size_t)c, 0.5f, 2.0f, seed + 3);
    float *gamma = bf_test_uniform(b, (size_t)c, -1.0f, 1.5f, seed + 4);
    float *beta = bf_test_uniform(b, (size_t)c, 0.0f, 1.0f, seed + 5);
    float *xrep = bf_test_alloc(b, total), *x1 = bf_test_alloc(b, n), *xrep_bn = bf_test_alloc(b, total);
    float *y_ref = bf_test_alloc(b, total), *y = bf_test_alloc(b, total), *dx_steps = bf_test_alloc(b, total);
    float *want = bf_test_alloc(b, n), *dx = bf_test_alloc(b, n);
    for (int t = 0; t < T; t++) memcpy(xrep + (size_t)t * n, xin, n * sizeof(float));
    const bf_neuron_bn_input in = {c, hw, mean, invstd, gamma, beta};
    const bf_bn_shape one_step = {.n = samples, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    CHECK_OK(b->ops->batchnorm_forward_saved(b, &one_step, xin, gamma, beta, mean, invstd, x1));
    for (int t = 0; t < T; t++) memcpy(xrep_bn + (size_t)t * n, x1, n * sizeof(float));
    bf_neuron_params p = {.kind = kind, .T = T, .decay = 0.8f, .threshold = 1.0f, .reset = reset,
                          .alpha = 4.0f, .width = 1.0f, .height = 0.3f};
    bf_neuron_params shared = p;
    shared.shared_input = 1;
    char what[192];
    snprintf(what, sizeof what, "shared input, %s/%s T=%d [%d, %d, %d]", kind == BF_NEURON_LIF ? "lif" : "if",
             reset_name[reset], T, samples, c, hw);

    float stats_ref[2] = {0, 0}, stats[2] = {0, 0}, stats_plain[2] = {0, 0};
    CHECK_OK(b->ops->neuron_forward_bn(b, &p, &in, n, xrep, y_ref, NULL, stats_ref));
    bf_test_fill_uniform(y, total, 1e3f, 2e3f, seed + 6);
    CHECK_OK(b->ops->neuron_forward_bn(b, &shared, &in, n, xin, y, NULL, stats));
    CHECK(memcmp(y, y_ref, total * sizeof(float)) == 0 && memcmp(stats, stats_ref, sizeof stats) == 0,
          "%s: neuron_forward_bn gives other spikes or statistics than over the repeated input", what);
    CHECK(stats_ref[0] > 0 && stats_ref[0] < (float)total, "%s: %g spikes of %zu (want some, not all)", what,
          (double)stats_ref[0], total);
    bf_test_fill_uniform(y, total, 1e3f, 2e3f, seed + 7);
    CHECK_OK(b->ops->neuron_forward(b, &shared, n, x1, y, NULL, stats_plain));
    CHECK(memcmp(y, y_ref, total * sizeof(float)) == 0 && memcmp(stats_plain, stats_ref, sizeof stats) == 0,
          "%s: neuron_forward gives other spikes or statistics than over the repeated input", what);
    if (b2) {
        float stats2[2] = {0, 0};
        CHECK_OK(b2->ops->neuron_forward_bn(b2, &shared, &in, n, xin, y, NULL, stats2));
        CHECK(memcmp(y, y_ref, total * sizeof(float)) == 0 && memcmp(stats2, stats_ref, sizeof stats) == 0,
              "%s: two threads give other spikes or statistics", what);
    }

    for (int surr = 0; surr < 5; surr++)
        for (int detach = 0; detach < 2; detach++)
            for (int through = 0; through < 2; through++) {
                p.surrogate = shared.surrogate = (bf_surrogate)surr;
                p.detach_reset = shared.detach_reset = detach;
                p.through_time = shared.through_time = through;
                CHECK_OK(b->ops->neuron_backward_bn(b, &p, &in, n, xrep, dy, dx_steps));
                for (size_t i = 0; i < n; i++) { /* the steps' gradients as they come, T-1 first */
                    float acc = dx_steps[(size_t)(T - 1) * n + i];
                    for (int t = T - 2; t >= 0; t--) acc = acc + dx_steps[(size_t)t * n + i];
                    want[i] = acc;
                }
                bf_test_fill_uniform(dx, n, 1e3f, 2e3f, seed + 8); /* garbage: every element must be written */
                CHECK_OK(b->ops->neuron_backward_bn(b, &shared, &in, n, xin, dy, dx));
                size_t differ = 0, first = 0;
                for (size_t i = 0; i < n; i++)
                    if (memcmp(&dx[i], &want[i], sizeof(float)) != 0 && differ++ == 0) first = i;
                CHECK(differ == 0, "%s %s detach=%d through=%d: %zu of %zu summed gradients differ, first %zu: %.9g "
                                   "vs %.9g", what, surr_name[surr], detach, through, differ, n, first,
                      (double)dx[first], (double)want[first]);
                if (b2) {
                    bf_test_fill_uniform(dx, n, 1e3f, 2e3f, seed + 9);
                    CHECK_OK(b2->ops->neuron_backward_bn(b2, &shared, &in, n, xin, dy, dx));
                    CHECK(memcmp(dx, want, n * sizeof(float)) == 0, "%s %s: two threads give other bits", what,
                          surr_name[surr]);
                }
            }
    float charge[1];
    CHECK(b->ops->neuron_forward(b, &shared, n, x1, y, charge, NULL) == BF_ERR_ARG && strstr(bf_last_error(), "charge"),
          "%s: a charge to keep for a shared input is refused: %s", what, bf_last_error());
    CHECK(b->ops->neuron_backward(b, &shared, n, x1, NULL, xrep_bn, dy, dx_steps) == BF_ERR_ARG &&
              strstr(bf_last_error(), "neuron_backward_bn"),
          "%s: neuron_backward refuses a shared input, naming neuron_backward_bn: %s", what, bf_last_error());
    float *all[] = {xin, dy, mean, invstd, gamma, beta, xrep, x1, xrep_bn, y_ref, y, dx_steps, want, dx};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

/* neuron_batchnorm_backward against its definition: neuron_backward_bn into a buffer, then
 * batchnorm_backward over the batch-norm input's planes (T steps, or one with a shared input): dx,
 * dgamma and dbeta bit for bit, every element written; with NULL dgamma and dbeta the same dx. */
static void test_fused_backward(bf_backend *b, bf_reset_mode reset, int T, int samples, int c, int hw, int shared,
                                unsigned long seed) {
    const size_t n = (size_t)samples * c * hw, total = (size_t)T * n, in_n = shared ? n : total;
    float *xin = bf_test_uniform(b, in_n, -2.0f, 2.0f, seed), *dy = bf_test_uniform(b, total, -1.0f, 1.0f, seed + 1);
    float *mean = bf_test_uniform(b, (size_t)c, -0.5f, 0.5f, seed + 2);
    float *invstd = bf_test_uniform(b, (size_t)c, 0.5f, 2.0f, seed + 3);
    float *gamma = bf_test_uniform(b, (size_t)c, -1.0f, 1.5f, seed + 4);
    float *beta = bf_test_uniform(b, (size_t)c, 0.0f, 1.0f, seed + 5);
    float *dneuron = bf_test_alloc(b, in_n), *dx_ref = bf_test_alloc(b, in_n), *dx = bf_test_alloc(b, in_n);
    float *g_ref = bf_test_alloc(b, 2 * (size_t)c), *g = bf_test_alloc(b, 2 * (size_t)c);
    const bf_neuron_bn_input in = {c, hw, mean, invstd, gamma, beta};
    const bf_bn_shape bs = {.n = (shared ? 1 : T) * samples, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    const bf_neuron_params p = {.kind = BF_NEURON_LIF, .T = T, .decay = 0.8f, .threshold = 1.0f, .reset = reset,
                                .surrogate = BF_SURROGATE_SIGMOID, .alpha = 4.0f, .through_time = 1,
                                .shared_input = shared};
    char what[160];
    snprintf(what, sizeof what, "neuron_batchnorm_backward %s%s T=%d [%d, %d, %d]", shared ? "shared input, " : "",
             reset_name[reset], T, samples, c, hw);
    CHECK_OK(b->ops->neuron_backward_bn(b, &p, &in, n, xin, dy, dneuron));
    CHECK_OK(b->ops->batchnorm_backward(b, &bs, xin, dneuron, gamma, mean, invstd, dx_ref, g_ref, g_ref + c));
    bf_test_fill_uniform(dx, in_n, 1e3f, 2e3f, seed + 6); /* garbage: every element must be written */
    bf_test_fill_uniform(g, 2 * (size_t)c, 1e3f, 2e3f, seed + 7);
    CHECK_OK(b->ops->neuron_batchnorm_backward(b, &p, &in, n, xin, dy, dx, g, g + c));
    CHECK(memcmp(dx, dx_ref, in_n * sizeof(float)) == 0 && memcmp(g, g_ref, 2 * (size_t)c * sizeof(float)) == 0,
          "%s: other bits than neuron_backward_bn then batchnorm_backward", what);
    double spread = 0;
    for (size_t i = 0; i < in_n; i++) spread += dx_ref[i] * dx_ref[i];
    CHECK(spread > 0, "%s: a gradient of zeros tests nothing", what);
    bf_test_fill_uniform(dx, in_n, 1e3f, 2e3f, seed + 8);
    CHECK_OK(b->ops->neuron_batchnorm_backward(b, &p, &in, n, xin, dy, dx, NULL, NULL));
    CHECK(memcmp(dx, dx_ref, in_n * sizeof(float)) == 0, "%s: without dgamma and dbeta, another dx", what);
    CHECK(b->ops->neuron_batchnorm_backward(b, &p, &in, n, xin, dy, NULL, g, g + c) == BF_ERR_ARG,
          "%s: a NULL dx accepted", what);
    float *all[] = {xin, dy, mean, invstd, gamma, beta, dneuron, dx_ref, dx, g_ref, g};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

/* ---- neuron_bn_backward.cu's kernels, emulated loop for loop (a change there belongs here too) ----
 * The GPU's results wait for a GPU; their index walks are checked here: pass 1 (k_neuron_bn_sums)
 * visits every element of a step once, over grid (channel, chunk) and 256 threads a block, pass 3
 * (k_neuron_bn_dx) every element once at 1 or 4 a thread, with channels_of's walk, and from the
 * CPU's neuron gradients (the kernels' charges and BPTT are bit-identical to them:
 * test_neuron_bn_ops_cuda) the emulated dx, dgamma and dbeta match the CPU op's to rounding. */
enum { EMU_THREADS = 256, EMU_CHUNK_TARGET = 8192, EMU_CHUNK_MAX = 128 }; /* cuda_backend.h, bn_common.cuh */

static unsigned emu_chunks_for(size_t m) {
    size_t k = (m + EMU_CHUNK_TARGET - 1) / EMU_CHUNK_TARGET;
    return (unsigned)(k > EMU_CHUNK_MAX ? EMU_CHUNK_MAX : k < 1 ? 1 : k);
}

/* neuron_common.cuh's channels_of */
static void emu_channels_of(int c, int hw, size_t i0, int v, unsigned *chs) {
    const size_t plane = i0 / (size_t)hw;
    unsigned at = (unsigned)(i0 - plane * (size_t)hw), ch = (unsigned)(plane % (size_t)c);
    for (int k = 0; k < v; k++) {
        chs[k] = ch;
        if (++at == (unsigned)hw) {
            at = 0;
            if (++ch == (unsigned)c) ch = 0;
        }
    }
}

/* dneuron: neuron_backward_bn's gradient (T steps, or one summed step with a shared input). */
static void emu_fused_backward(const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n, int v,
                               const float *xin, const float *dneuron, float *dx, float *dgamma, float *dbeta,
                               unsigned char *visits1, unsigned char *visits3) {
    const int c = in->c, steps = p->shared_input ? 1 : p->T;
    float mean_dy[64], mean_dy_xhat[64]; /* k_bn_bwd_final's; the emulated shapes have few channels */
    if (c > 64) exit(1);
    const unsigned hw = (unsigned)in->hw, count = (unsigned)(n / (size_t)c);
    const unsigned chunks = emu_chunks_for(count), per_chunk = (count + chunks - 1) / chunks;
    for (int ch = 0; ch < c; ch++) { /* pass 1 and k_bn_bwd_final */
        const float mu = in->mean[ch], is = in->invstd[ch];
        double s0 = 0, s1 = 0;
        for (unsigned chunk = 0; chunk < chunks; chunk++) {
            const unsigned begin = chunk * per_chunk, end = begin + per_chunk < count ? begin + per_chunk : count;
            for (unsigned tid = 0; tid < EMU_THREADS; tid++)
                for (unsigned m = begin + tid; m < end; m += EMU_THREADS) {
                    const unsigned i = m / hw, j = m - i * hw;
                    const size_t e = ((size_t)i * (size_t)c + (size_t)ch) * hw + j;
                    visits1[e]++;
                    for (int t = 0; t < steps; t++) {
                        const float d = dneuron[(size_t)t * n + e], xhat = (xin[(size_t)t * n + e] - mu) * is;
                        s0 += (double)d;
                        s1 += (double)d * (double)xhat;
                    }
                }
        }
        const double values = (double)count * steps;
        dbeta[ch] = (float)s0;
        dgamma[ch] = (float)s1;
        mean_dy[ch] = (float)(s0 / values);
        mean_dy_xhat[ch] = (float)(s1 / values);
    }
    for (size_t iv = 0; iv < n / (size_t)v; iv++) { /* pass 3: the means again per element's channel */
        unsigned chs[4];
        emu_channels_of(c, (int)hw, iv * (size_t)v, v, chs);
        for (int k = 0; k < v; k++) {
            const size_t e = iv * (size_t)v + (size_t)k;
            const unsigned ch = chs[k];
            visits3[e]++;
            const float mu = in->mean[ch], is = in->invstd[ch], sc = in->gamma[ch] * is;
            const float mdy = mean_dy[ch], mdx = mean_dy_xhat[ch];
            for (int t = 0; t < steps; t++) { /* bn_common.cuh's bn_dx_one */
                const float xv = xin[(size_t)t * n + e], xhat = (xv - mu) * is;
                dx[(size_t)t * n + e] = sc * ((dneuron[(size_t)t * n + e] - mdy) - xhat * mdx);
            }
        }
    }
}

static void test_fused_backward_emulated(int T, int samples, int c, int hw, int shared, int v, unsigned long seed) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return;
    const size_t n = (size_t)samples * c * hw, total = (size_t)T * n, in_n = shared ? n : total;
    float *xin = bf_test_uniform(b, in_n, -2.0f, 2.0f, seed), *dy = bf_test_uniform(b, total, -1.0f, 1.0f, seed + 1);
    float *mean = bf_test_uniform(b, (size_t)c, -0.5f, 0.5f, seed + 2);
    float *invstd = bf_test_uniform(b, (size_t)c, 0.5f, 2.0f, seed + 3);
    float *gamma = bf_test_uniform(b, (size_t)c, -1.0f, 1.5f, seed + 4);
    float *beta = bf_test_uniform(b, (size_t)c, 0.0f, 1.0f, seed + 5);
    float *dneuron = bf_test_alloc(b, in_n), *dx_ref = bf_test_alloc(b, in_n), *dx = bf_test_alloc(b, in_n);
    float *g_ref = bf_test_alloc(b, 2 * (size_t)c), *g = bf_test_alloc(b, 2 * (size_t)c);
    unsigned char *visits = calloc(2 * n, 1);
    const bf_neuron_bn_input in = {c, hw, mean, invstd, gamma, beta};
    const bf_neuron_params p = {.kind = BF_NEURON_LIF, .T = T, .decay = 0.8f, .threshold = 1.0f,
                                .reset = BF_RESET_SOFT, .surrogate = BF_SURROGATE_TANH, .height = 0.3f,
                                .through_time = 1, .shared_input = shared};
    if (!visits) exit(1);
    CHECK(n % (size_t)v == 0, "V=%d divides n=%zu (vector_width's condition)", v, n);
    CHECK_OK(b->ops->neuron_batchnorm_backward(b, &p, &in, n, xin, dy, dx_ref, g_ref, g_ref + c));
    CHECK_OK(b->ops->neuron_backward_bn(b, &p, &in, n, xin, dy, dneuron));
    emu_fused_backward(&p, &in, n, v, xin, dneuron, dx, g, g + c, visits, visits + n);
    size_t once1 = 0, once3 = 0;
    for (size_t e = 0; e < n; e++) once1 += visits[e] == 1, once3 += visits[n + e] == 1;
    char what[160];
    snprintf(what, sizeof what, "emulated fused backward T=%d [%d, %d, %d]%s V=%d (%u chunks)", T, samples, c, hw,
             shared ? " shared" : "", v, emu_chunks_for(n / (size_t)c));
    CHECK(once1 == n && once3 == n, "%s: %zu and %zu of %zu elements visited once by passes 1 and 3", what, once1,
          once3, n);
    CHECK(bf_test_max_violation(dx_ref, dx, in_n, 1e-5, 1e-4, NULL) <= 1.0 &&
              bf_test_max_violation(g_ref, g, 2 * (size_t)c, 1e-5, 1e-4, NULL) <= 1.0,
          "%s: dx, dgamma or dbeta differ from the CPU op's beyond rounding", what);
    free(visits);
    float *all[] = {xin, dy, mean, invstd, gamma, beta, dneuron, dx_ref, dx, g_ref, g};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
    bf_backend_destroy(b);
}

/* k_neuron_forward's PACK path (neuron.cu) emulated: n a multiple of 32 (the op's condition), warps
 * of 32 lanes walking items of V elements whole (the last warp partly past the end), a ballot per
 * step (V = 1) or each lane's V bits shifted by V * (lane % 8) and ORed over its 8-lane group (V =
 * 4), stored by lane 0 or each group's first lane at word (t*n + first element) / 32: every word
 * written once, equal to spikes_pack's. */
static void test_packed_forward_emulated(size_t n, int T, int v) {
    const size_t total = n * (size_t)T, words = total / 32, items = n / (size_t)v;
    float *y = malloc(total * sizeof(float));
    uint32_t *bits = calloc(words, sizeof(uint32_t)), *want = calloc(words, sizeof(uint32_t));
    unsigned char *writes = calloc(words, 1);
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!y || !bits || !want || !writes || !b) exit(1);
    for (size_t i = 0; i < total; i++) y[i] = bf_uniform(77, i) < 0.3 ? 1.0f : 0.0f;
    CHECK_OK(b->ops->spikes_pack(b, y, want, total));
    for (int t = 0; t < T; t++)
        for (size_t base = 0; base < items; base += 32) {
            uint32_t lanes[32];
            for (unsigned lane = 0; lane < 32; lane++) { /* each lane's nibble, 0 past the end */
                const size_t iv = base + lane;
                uint32_t nibble = 0;
                for (int k = 0; k < v && iv < items; k++)
                    nibble |= (y[(size_t)t * n + iv * (size_t)v + (size_t)k] != 0.0f ? 1u : 0u) << k;
                lanes[lane] = nibble;
            }
            if (v == 1) {
                uint32_t word = 0;
                for (unsigned lane = 0; lane < 32; lane++) word |= (lanes[lane] != 0 ? 1u : 0u) << lane;
                bits[((size_t)t * n + base) >> 5] = word, writes[((size_t)t * n + base) >> 5]++;
                continue;
            }
            for (unsigned lane = 0; lane < 32; lane += 8) { /* the group's first lane, after the shuffles */
                uint32_t word = 0;
                for (unsigned l = lane; l < lane + 8; l++) word |= lanes[l] << ((unsigned)v * (l & 7u));
                const size_t iv = base + lane;
                if (iv < items) bits[((size_t)t * n + iv * (size_t)v) >> 5] = word, writes[((size_t)t * n + iv * (size_t)v) >> 5]++;
            }
        }
    size_t once = 0;
    for (size_t w = 0; w < words; w++) once += writes[w] == 1;
    CHECK(once == words && memcmp(bits, want, words * sizeof(uint32_t)) == 0,
          "emulated packed forward n=%zu T=%d V=%d: %zu of %zu words written once, bits %s spikes_pack's", n, T, v,
          once, words, memcmp(bits, want, words * sizeof(uint32_t)) ? "differ from" : "equal");
    free(y), free(bits), free(want), free(writes);
    bf_backend_destroy(b);
}

/* Batch-norm's training forward without an output: the saved and running statistics of the one
 * with it, bit for bit, through batchnorm_forward_train and through the synchronised ops. */
static void test_statistics_alone(bf_backend *b) {
    enum { N = 6, C = 5, HW = 9 };
    const bf_bn_shape s = {.n = N, .c = C, .hw = HW, .eps = 1e-5f, .momentum = 0.1f};
    float *x = bf_test_uniform(b, N * C * HW, -1.0f, 3.0f, 31), *gamma = bf_test_uniform(b, C, 0.5f, 1.5f, 32);
    float *beta = bf_test_uniform(b, C, -0.5f, 0.5f, 33), *y = bf_test_alloc(b, N * C * HW);
    float stats[2][4][C];
    for (int with_y = 0; with_y < 2; with_y++) {
        float *running = stats[with_y][2], *running_var = stats[with_y][3];
        for (int ch = 0; ch < C; ch++) running[ch] = 0.25f, running_var[ch] = 2.0f;
        CHECK_OK(b->ops->batchnorm_forward_train(b, &s, x, gamma, beta, with_y ? y : NULL, stats[with_y][0],
                                                 stats[with_y][1], running, running_var));
    }
    CHECK(memcmp(stats[0], stats[1], sizeof stats[0]) == 0, "batchnorm_forward_train without y: other statistics");
    double sums[2 * C + 1], sq[C];
    float sync[2][4][C];
    CHECK_OK(b->ops->batchnorm_sync_sums(b, &s, x, sums));
    CHECK_OK(b->ops->batchnorm_sync_sqdev(b, &s, x, sums, sq));
    for (int with_y = 0; with_y < 2; with_y++) {
        for (int ch = 0; ch < C; ch++) sync[with_y][2][ch] = 0.25f, sync[with_y][3][ch] = 2.0f;
        CHECK_OK(b->ops->batchnorm_sync_forward_apply(b, &s, x, sums, sq, gamma, beta, with_y ? y : NULL, sync[with_y][0],
                                                      sync[with_y][1], sync[with_y][2], sync[with_y][3]));
    }
    CHECK(memcmp(sync[0], sync[1], sizeof sync[0]) == 0 && memcmp(sync[0], stats[0], sizeof sync[0]) == 0,
          "batchnorm_sync_forward_apply without y: other statistics");
    float *all[] = {x, gamma, beta, y};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bf_free(b, all[i]);
}

static void test_arguments(bf_backend *b) {
    float *v = bf_test_alloc(b, 64);
    const bf_neuron_bn_input in = {2, 4, v, v, v, v};
    bf_neuron_params p = {.kind = BF_NEURON_LIF, .T = 2, .decay = 0.5f, .threshold = 1.0f, .alpha = 4.0f};
    CHECK_OK(b->ops->neuron_backward_bn(b, &p, &in, 8, v, v, v));
    p.T = BF_NEURON_BN_MAX_T + 1;
    CHECK(b->ops->neuron_backward_bn(b, &p, &in, 0, v, v, v) == BF_ERR_ARG, "T above BF_NEURON_BN_MAX_T accepted");
    p.T = 2;
    CHECK(b->ops->neuron_backward_bn(b, &p, &in, 12, v, v, v) == BF_ERR_ARG, "12 elements of [2, 4] samples accepted");
    CHECK(b->ops->neuron_backward_bn(b, &p, NULL, 8, v, v, v) == BF_ERR_ARG, "no batch-norm input accepted");
    bf_neuron_bn_input missing = in;
    missing.invstd = NULL;
    CHECK(b->ops->neuron_backward_bn(b, &p, &missing, 8, v, v, v) == BF_ERR_ARG, "NULL invstd accepted");
    CHECK(b->ops->neuron_backward_bn(b, &p, &in, 8, NULL, v, v) == BF_ERR_ARG, "NULL xin accepted");
    CHECK(b->ops->neuron_forward_bn(b, &p, &in, 12, v, v, NULL, NULL) == BF_ERR_ARG, "forward: partial samples accepted");
    p.kind = BF_NEURON_CLAMP01;
    CHECK(b->ops->neuron_backward_bn(b, &p, &in, 8, v, v, v) == BF_ERR_ARG, "CLAMP01 accepted (it has no charge)");
    CHECK(b->ops->neuron_forward_bn(b, &p, &in, 8, v, v, NULL, NULL) == BF_ERR_ARG, "forward: CLAMP01 accepted");
    bf_free(b, v);
}

int main(void) {
    bf_backend *one = NULL, *two = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &one));
    CHECK_OK(bf_backend_create_cpu(2, &two));
    if (!one || !two) return bf_test_finish();
    const int Ts[] = {1, 3, 8, BF_NEURON_BN_MAX_T};
    struct { int samples, c, hw; } shapes[] = {{3, 5, 1}, {2, 4, 3}, {2, 3, 16}};
    unsigned long seed = 700;
    for (int kind = BF_NEURON_LIF; kind <= BF_NEURON_IF; kind++)
        for (int reset = 0; reset < 3; reset++)
            for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++)
                for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++, seed += 10)
                    test_case(one, NULL, (bf_neuron_kind)kind, (bf_reset_mode)reset, Ts[t], shapes[s].samples,
                              shapes[s].c, shapes[s].hw, seed);
    /* enough elements for two threads' blocks and several tiles each, one tile spanning channels */
    test_case(one, two, BF_NEURON_LIF, BF_RESET_HARD, 4, 16, 8, 36, 9001);
    test_case(one, two, BF_NEURON_IF, BF_RESET_SOFT, 8, 8, 64, 16, 9011);
    for (int reset = 0; reset < 3; reset++)
        for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++, seed += 10)
            test_shared_input(one, NULL, reset == 2 ? BF_NEURON_IF : BF_NEURON_LIF, (bf_reset_mode)reset, Ts[t], 3, 4,
                              5, seed);
    test_shared_input(one, two, BF_NEURON_LIF, BF_RESET_SOFT, 4, 16, 8, 36, 9021);
    for (int reset = 0; reset < 3; reset++)
        for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++, seed += 10) {
            test_fused_backward(one, (bf_reset_mode)reset, Ts[t], 3, 4, 5, 0, seed);
            test_fused_backward(two, (bf_reset_mode)reset, Ts[t], 4, 3, 16, 1, seed + 5);
        }
    test_fused_backward_emulated(4, 3, 5, 7, 0, 1, 9100);     /* planes of 7: threads cross channels' planes */
    test_fused_backward_emulated(4, 16, 6, 8, 0, 4, 9110);    /* 16-byte vectors within a plane */
    test_fused_backward_emulated(4, 4, 5, 7, 0, 4, 9120);     /* vectors spanning two channels */
    test_fused_backward_emulated(3, 40, 3, 256, 0, 1, 9130);  /* 10240 values a channel: 2 chunks */
    test_fused_backward_emulated(8, 12, 4, 9, 1, 4, 9140);    /* a shared input */
    test_packed_forward_emulated(160, 3, 4); /* 40 items of 4: the last warp has 8 lanes */
    test_packed_forward_emulated(160, 3, 1);
    test_packed_forward_emulated(4096, 2, 4);
    test_packed_forward_emulated(96, 5, 1); /* 96 items: the last warp is whole */
    test_statistics_alone(one);
    test_arguments(one);
    bf_backend_destroy(one);
    bf_backend_destroy(two);
    return bf_test_finish();
}
