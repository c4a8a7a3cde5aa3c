/* test_neuron_bn_ops_cuda.c - the recomputed charge on the GPU ([spiking] recompute_charge):
 * the forward from batch-norm's input (neuron_forward_bn: spikes and statistics bit-identical to the
 * CPU's and to the GPU's batchnorm_forward_saved + neuron_forward; batchnorm_forward_train without an
 * output gives the statistics it gives with one), and k_neuron_backward_bn (neuron.cu), which computes each element's T charges again in registers
 * from batch-norm's input and statistics, against
 *   - the CPU's neuron_backward_bn (tests/test_neuron_bn_ops.c holds that one to the op sequence it
 *     replaces), with the tolerance test_neuron_ops_cuda gives the BPTT gradients;
 *   - the GPU's own op sequence, batchnorm_forward_saved + neuron_forward keeping the charge +
 *     neuron_backward: the same bits;
 * for LIF and IF, every reset mode and surrogate, with and without detach_reset and through_time,
 * T in {1, 4, 8, 10, 16, 32} (every register bucket, 4, 8, 16 and 32, of the kernel), channel
 * planes of 7 and 1024 elements, and a tensor large enough for the 16-byte-vector kernels
 * (T <= 8). The forward that keeps no charge must give the spikes and statistics of the one that
 * does. A shared input (one step read at every step, its dx the steps' sum) against the CPU and
 * against the GPU's own steps over the repeated input. The forward's spikes packed as bits in the
 * same pass (n a multiple of 32) or after it: spikes_pack's bits. neuron_batchnorm_backward, which never stores the
 * neuron's gradient, against the CPU's and the GPU's own two ops, to batch-norm's tolerance. `--small` keeps the 7-element planes alone (tools/gpu_verify.sh runs it so under
 * compute-sanitizer's memcheck). Skipped (exit 77) without a CUDA build or device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;

static const char *reset_name[] = {"hard", "soft", "none"};
static const char *surr_name[] = {"sigmoid", "arctan", "rect", "triangle", "tanh"};

/* neuron_forward_bn with its spikes packed (in the same pass where n % 32 == 0, else by spikes_pack
 * after it): the bits of the CPU's, which are spikes_pack's (test_neuron_bn_ops), and the spikes and
 * statistics of the GPU's forward without them (y_ref, stats_ref). */
static void check_packed_forward(const char *what, const bf_neuron_params *p, const bf_neuron_bn_input *in_c,
                                 const bf_neuron_bn_input *in_g, size_t n, pair xin, const float *y_ref,
                                 const float *stats_ref) {
    const size_t total = n * (size_t)p->T, words = (total + 31) / 32;
    const float zero[2] = {0, 0};
    pair y = pair_out(total), st = pair_from(zero, 2), bits = pair_out(words); /* bits: words in float storage */
    CHECK_OK(cpu->ops->neuron_forward_bn(cpu, p, in_c, n, xin.c, y.c, (uint32_t *)bits.c, st.c));
    CHECK_OK(gpu->ops->neuron_forward_bn(gpu, p, in_g, n, xin.g, y.g, (uint32_t *)bits.g, st.g));
    char packed[224];
    snprintf(packed, sizeof packed, "%s, spikes packed %s", what, n % 32 == 0 ? "in the pass" : "after it");
    pair_compare_exact(packed, bits);
    check_repeats(packed, y_ref, y.g, total);
    check_repeats(packed, stats_ref, st.g, 2);
    pair_free(&y);
    pair_free(&st);
    pair_free(&bits);
}

static void test_case(bf_neuron_kind kind, bf_reset_mode reset, int T, int samples, int c, int hw, int all_surrogates) {
    const size_t n = (size_t)samples * c * hw, total = (size_t)T * n;
    pair xin = pair_rand(total, -2.0f, 2.0f), dy = pair_rand(total, -1.0f, 1.0f);
    pair mean = pair_rand((size_t)c, -0.5f, 0.5f), invstd = pair_rand((size_t)c, 0.5f, 2.0f);
    pair gamma = pair_rand((size_t)c, -1.0f, 1.5f), beta = pair_rand((size_t)c, 0.0f, 1.0f);
    pair x = pair_out(total), y = pair_out(total), y2 = pair_out(total), charge = pair_out(total);
    pair dx = pair_out(total), dx_seq = pair_out(total);
    const float zero[2] = {0, 0};
    pair st = pair_from(zero, 2), st2 = pair_from(zero, 2);
    const bf_bn_shape bs = {.n = T * samples, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    const bf_neuron_bn_input in_c = {c, hw, mean.c, invstd.c, gamma.c, beta.c};
    const bf_neuron_bn_input in_g = {c, hw, mean.g, invstd.g, gamma.g, beta.g};
    bf_neuron_params p = {.kind = kind, .T = T, .decay = 0.8f, .threshold = 1.0f, .reset = reset,
                          .alpha = 4.0f, .width = 1.0f, .height = 0.3f};
    char what[192];
    snprintf(what, sizeof what, "%s/%s T=%d [%d, %d, %d]", kind == BF_NEURON_LIF ? "lif" : "if", reset_name[reset], T,
             samples, c, hw);

    CHECK_OK(gpu->ops->batchnorm_forward_saved(gpu, &bs, xin.g, gamma.g, beta.g, mean.g, invstd.g, x.g));
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, n, x.g, y.g, charge.g, st.g));
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, n, x.g, y2.g, NULL, st2.g));
    check_repeats(what, y.g, y2.g, total); /* no charge kept: the same spikes */
    check_repeats(what, st.g, st2.g, 2);
    pair y3 = pair_out(total), st3 = pair_from(zero, 2);
    CHECK_OK(cpu->ops->neuron_forward_bn(cpu, &p, &in_c, n, xin.c, y3.c, NULL, st3.c));
    CHECK_OK(gpu->ops->neuron_forward_bn(gpu, &p, &in_g, n, xin.g, y3.g, NULL, st3.g));
    pair_compare_exact(what, y3);
    pair_compare_exact(what, st3);
    check_repeats(what, y.g, y3.g, total); /* the batch-norm output never written: the same spikes */
    check_repeats(what, st.g, st3.g, 2);
    pair_free(&y3);
    pair_free(&st3);
    check_packed_forward(what, &p, &in_c, &in_g, n, xin, y.g, st.g);

    for (int surr = 0; surr < 5; surr++)
        for (int detach = 0; detach < 2; detach++)
            for (int through = 0; through < 2; through++) {
                if (!all_surrogates && (surr != BF_SURROGATE_TANH || detach)) continue;
                p.surrogate = (bf_surrogate)surr;
                p.detach_reset = detach;
                p.through_time = through;
                snprintf(what, sizeof what, "%s/%s %s detach=%d through=%d T=%d [%d, %d, %d]",
                         kind == BF_NEURON_LIF ? "lif" : "if", reset_name[reset], surr_name[surr], detach, through, T,
                         samples, c, hw);
                CHECK_OK(cpu->ops->neuron_backward_bn(cpu, &p, &in_c, n, xin.c, dy.c, dx.c));
                CHECK_OK(gpu->ops->fill(gpu, dx.g, 1e3f, total)); /* garbage: every element must be written */
                CHECK_OK(gpu->ops->neuron_backward_bn(gpu, &p, &in_g, n, xin.g, dy.g, dx.g));
                pair_compare(what, dx, 1e-6, 1e-5);
                CHECK_OK(gpu->ops->neuron_backward(gpu, &p, n, x.g, NULL, charge.g, dy.g, dx_seq.g));
                check_repeats(what, dx_seq.g, dx.g, total);
            }
    pair *all[] = {&xin, &dy, &mean, &invstd, &gamma, &beta, &x, &y, &y2, &charge, &dx, &dx_seq, &st, &st2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* A shared input (bf_neuron_params.shared_input: one step of batch-norm input read at every step):
 * neuron_forward_bn's and neuron_forward's spikes and statistics, and neuron_backward_bn's summed dx,
 * against the CPU's (tests/test_neuron_bn_ops.c holds those to the step repeated T times): spikes
 * bit for bit, dx to the BPTT tolerance; and the GPU's summed dx against the GPU's own T steps of
 * the repeated input summed from T-1 down, bit for bit. */
static void test_shared_case(bf_reset_mode reset, int T, int samples, int c, int hw) {
    const size_t n = (size_t)samples * c * hw, total = (size_t)T * n;
    pair xin = pair_rand(n, -2.0f, 2.0f), dy = pair_rand(total, -1.0f, 1.0f);
    pair mean = pair_rand((size_t)c, -0.5f, 0.5f), invstd = pair_rand((size_t)c, 0.5f, 2.0f);
    pair gamma = pair_rand((size_t)c, -1.0f, 1.5f), beta = pair_rand((size_t)c, 0.0f, 1.0f);
    pair y = pair_out(total), x1 = pair_out(n), dx = pair_out(n), xrep = pair_out(total), dx_steps = pair_out(total);
    const float zero[2] = {0, 0};
    pair st = pair_from(zero, 2), st_plain = pair_from(zero, 2);
    const bf_bn_shape one_step = {.n = samples, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    const bf_neuron_bn_input in_c = {c, hw, mean.c, invstd.c, gamma.c, beta.c};
    const bf_neuron_bn_input in_g = {c, hw, mean.g, invstd.g, gamma.g, beta.g};
    bf_neuron_params p = {.kind = BF_NEURON_LIF, .T = T, .decay = 0.8f, .threshold = 1.0f, .reset = reset,
                          .alpha = 4.0f, .width = 1.0f, .height = 0.3f, .surrogate = BF_SURROGATE_SIGMOID,
                          .through_time = 1, .shared_input = 1};
    char what[160];
    snprintf(what, sizeof what, "shared input, lif/%s T=%d [%d, %d, %d]", reset_name[reset], T, samples, c, hw);
    CHECK_OK(cpu->ops->neuron_forward_bn(cpu, &p, &in_c, n, xin.c, y.c, NULL, st.c));
    CHECK_OK(gpu->ops->neuron_forward_bn(gpu, &p, &in_g, n, xin.g, y.g, NULL, st.g));
    pair_compare_exact(what, y);
    pair_compare_exact(what, st);
    CHECK_OK(gpu->ops->batchnorm_forward_saved(gpu, &one_step, xin.g, gamma.g, beta.g, mean.g, invstd.g, x1.g));
    CHECK_OK(gpu->ops->fill(gpu, xrep.g, 1e3f, total)); /* the spikes again, from the plain forward */
    CHECK_OK(gpu->ops->neuron_forward(gpu, &p, n, x1.g, xrep.g, NULL, st_plain.g));
    check_repeats(what, y.g, xrep.g, total);
    check_repeats(what, st.g, st_plain.g, 2);
    check_packed_forward(what, &p, &in_c, &in_g, n, xin, y.g, st.g);

    CHECK_OK(cpu->ops->neuron_backward_bn(cpu, &p, &in_c, n, xin.c, dy.c, dx.c));
    CHECK_OK(gpu->ops->fill(gpu, dx.g, 1e3f, n)); /* garbage: every element must be written */
    CHECK_OK(gpu->ops->neuron_backward_bn(gpu, &p, &in_g, n, xin.g, dy.g, dx.g));
    pair_compare(what, dx, 1e-6, 1e-5);
    /* the GPU's own steps over the repeated input, summed from the last step down */
    for (int t = 0; t < T; t++) CHECK_OK(gpu->ops->copy(gpu, xrep.g + (size_t)t * n, xin.g, n * sizeof(float)));
    bf_neuron_params unshared = p;
    unshared.shared_input = 0;
    CHECK_OK(gpu->ops->neuron_backward_bn(gpu, &unshared, &in_g, n, xrep.g, dy.g, dx_steps.g));
    float *sum = bf_test_upload(gpu, NULL, n);
    CHECK_OK(gpu->ops->copy(gpu, sum, dx_steps.g + (size_t)(T - 1) * n, n * sizeof(float)));
    for (int t = T - 2; t >= 0; t--) CHECK_OK(gpu->ops->add_inplace(gpu, sum, dx_steps.g + (size_t)t * n, n));
    check_repeats(what, sum, dx.g, n);
    bf_free(gpu, sum);
    pair *all[] = {&xin, &dy, &mean, &invstd, &gamma, &beta, &y, &x1, &dx, &xrep, &dx_steps, &st, &st_plain};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* neuron_batchnorm_backward (neuron_bn_backward.cu: the neuron's gradient never stored) against the
 * CPU's (the bits of neuron_backward_bn then batchnorm_backward) and against the GPU's own two ops in
 * turn: dx, dgamma and dbeta to batch-norm's reduction tolerance, as the sums come in another order. */
static void test_fused_case(bf_reset_mode reset, int T, int samples, int c, int hw, int shared) {
    const size_t n = (size_t)samples * c * hw, total = (size_t)T * n, in_n = shared ? n : total;
    pair xin = pair_rand(in_n, -2.0f, 2.0f), dy = pair_rand(total, -1.0f, 1.0f);
    pair mean = pair_rand((size_t)c, -0.5f, 0.5f), invstd = pair_rand((size_t)c, 0.5f, 2.0f);
    pair gamma = pair_rand((size_t)c, -1.0f, 1.5f), beta = pair_rand((size_t)c, 0.0f, 1.0f);
    pair dx = pair_out(in_n), dgamma = pair_out((size_t)c), dbeta = pair_out((size_t)c);
    pair seq_dx = pair_out(in_n), seq_dgamma = pair_out((size_t)c), seq_dbeta = pair_out((size_t)c);
    const bf_neuron_bn_input in_c = {c, hw, mean.c, invstd.c, gamma.c, beta.c};
    const bf_neuron_bn_input in_g = {c, hw, mean.g, invstd.g, gamma.g, beta.g};
    const bf_bn_shape bs = {.n = (shared ? 1 : T) * samples, .c = c, .hw = hw, .eps = 1e-5f, .momentum = 0.1f};
    const bf_neuron_params p = {.kind = BF_NEURON_LIF, .T = T, .decay = 0.8f, .threshold = 1.0f, .reset = reset,
                                .alpha = 4.0f, .surrogate = BF_SURROGATE_SIGMOID, .through_time = 1,
                                .shared_input = shared};
    char what[160];
    snprintf(what, sizeof what, "fused bn backward %slif/%s T=%d [%d, %d, %d]", shared ? "shared, " : "",
             reset_name[reset], T, samples, c, hw);
    CHECK_OK(cpu->ops->neuron_batchnorm_backward(cpu, &p, &in_c, n, xin.c, dy.c, dx.c, dgamma.c, dbeta.c));
    CHECK_OK(gpu->ops->neuron_batchnorm_backward(gpu, &p, &in_g, n, xin.g, dy.g, dx.g, dgamma.g, dbeta.g));
    pair_compare(what, dx, 1e-4, 1e-3);
    pair_compare(what, dgamma, 1e-4, 1e-3);
    pair_compare(what, dbeta, 1e-4, 1e-3);
    /* the GPU's two ops in turn, their results brought to the host side of a pair */
    float *dneuron = bf_test_upload(gpu, NULL, in_n);
    CHECK_OK(gpu->ops->neuron_backward_bn(gpu, &p, &in_g, n, xin.g, dy.g, dneuron));
    CHECK_OK(gpu->ops->batchnorm_backward(gpu, &bs, xin.g, dneuron, gamma.g, mean.g, invstd.g, seq_dx.g, seq_dgamma.g,
                                          seq_dbeta.g));
    pair *seq[] = {&seq_dx, &seq_dgamma, &seq_dbeta}, *fused[] = {&dx, &dgamma, &dbeta};
    for (int k = 0; k < 3; k++) {
        CHECK_OK(bf_to_host(gpu, seq[k]->c, seq[k]->g, seq[k]->n * sizeof(float)));
        CHECK_OK(gpu->ops->copy(gpu, seq[k]->g, fused[k]->g, seq[k]->n * sizeof(float)));
    }
    char again[200];
    snprintf(again, sizeof again, "%s vs the GPU's two ops", what);
    pair_compare(again, seq_dx, 1e-4, 1e-3);
    pair_compare(again, seq_dgamma, 1e-4, 1e-3);
    pair_compare(again, seq_dbeta, 1e-4, 1e-3);
    bf_free(gpu, dneuron);
    pair *all[] = {&xin, &dy, &mean, &invstd, &gamma, &beta, &dx, &dgamma, &dbeta, &seq_dx, &seq_dgamma, &seq_dbeta};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
}

/* Batch-norm's training forward without an output on the GPU: the statistics of the one with it. */
static void test_statistics_alone(void) {
    enum { N = 16, C = 24, HW = 49 };
    const bf_bn_shape s = {.n = N, .c = C, .hw = HW, .eps = 1e-5f, .momentum = 0.1f};
    pair x = pair_rand(N * C * HW, -1.0f, 3.0f), gamma = pair_rand(C, 0.5f, 1.5f), beta = pair_rand(C, -0.5f, 0.5f);
    pair y = pair_out(N * C * HW), stats[2][4];
    float start[C];
    for (int ch = 0; ch < C; ch++) start[ch] = 0.25f + 0.125f * (float)ch; /* the running statistics' start */
    for (int with_y = 0; with_y < 2; with_y++) {
        for (int k = 0; k < 4; k++) stats[with_y][k] = pair_from(start, C);
        CHECK_OK(gpu->ops->batchnorm_forward_train(gpu, &s, x.g, gamma.g, beta.g, with_y ? y.g : NULL, stats[with_y][0].g,
                                                   stats[with_y][1].g, stats[with_y][2].g, stats[with_y][3].g));
    }
    for (int k = 0; k < 4; k++) check_repeats("batchnorm_forward_train without y", stats[1][k].g, stats[0][k].g, C);
    pair *all[] = {&x, &gamma, &beta, &y};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pair_free(all[i]);
    for (int w = 0; w < 2; w++)
        for (int k = 0; k < 4; k++) pair_free(&stats[w][k]);
}

static void test_arguments(void) {
    pair v = pair_rand(64, 0.5f, 1.0f);
    const bf_neuron_bn_input in = {2, 4, v.g, v.g, v.g, v.g};
    bf_neuron_params p = {.kind = BF_NEURON_LIF, .T = BF_NEURON_BN_MAX_T + 1, .decay = 0.5f, .threshold = 1.0f,
                          .alpha = 4.0f};
    CHECK(gpu->ops->neuron_backward_bn(gpu, &p, &in, 8, v.g, v.g, v.g) == BF_ERR_ARG, "T above the limit accepted");
    p.T = 2;
    CHECK(gpu->ops->neuron_backward_bn(gpu, &p, &in, 12, v.g, v.g, v.g) == BF_ERR_ARG, "partial samples accepted");
    p.kind = BF_NEURON_STEP;
    CHECK(gpu->ops->neuron_backward_bn(gpu, &p, &in, 8, v.g, v.g, v.g) == BF_ERR_ARG, "STEP accepted");
    pair_free(&v);
}

int main(int argc, char **argv) {
    const int small = argc > 1 && !strcmp(argv[1], "--small");
    if (!pair_open(&cpu, &gpu, 9300)) return bf_test_finish();
    const int Ts[] = {1, 4, 8, 10, 16, 32};
    for (int kind = BF_NEURON_LIF; kind <= BF_NEURON_IF; kind++)
        for (int reset = 0; reset < 3; reset++)
            for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++) {
                test_case((bf_neuron_kind)kind, (bf_reset_mode)reset, Ts[t], 3, 5, 7, 1);
                if (!small) test_case((bf_neuron_kind)kind, (bf_reset_mode)reset, Ts[t], 4, 64, 1024, 0); /* grid-stride */
            }
    /* n / 4 above the resident threads of an H100 or H200: the 16-byte-vector kernels */
    for (int reset = 0; reset < 3 && !small; reset++) {
        test_case(BF_NEURON_LIF, (bf_reset_mode)reset, 4, 32, 64, 1024, 1);
        test_case(BF_NEURON_LIF, (bf_reset_mode)reset, 8, 32, 64, 1024, 0);
    }
    for (int reset = 0; reset < 3; reset++) { /* a shared input: planes of 7; every register bucket */
        test_shared_case((bf_reset_mode)reset, 4, 3, 5, 7);
        if (!small) test_shared_case((bf_reset_mode)reset, 8, 32, 64, 1024); /* the 16-byte-vector kernels */
    }
    if (!small) {
        test_shared_case(BF_RESET_SOFT, 16, 3, 5, 7);
        test_shared_case(BF_RESET_HARD, 32, 3, 5, 7);
    }
    /* the vector kernels on planes of 7: a vector's 4 elements span two channels */
    if (!small) test_case(BF_NEURON_LIF, BF_RESET_SOFT, 4, 32000, 5, 7, 0);
    for (int reset = 0; reset < 3; reset++) { /* the fused batch-norm backward: every register bucket */
        test_fused_case((bf_reset_mode)reset, 4, 3, 5, 7, 0);
        test_fused_case((bf_reset_mode)reset, 4, 3, 5, 7, 1);
        if (small) continue;
        test_fused_case((bf_reset_mode)reset, 4, 32, 64, 1024, 0); /* the 16-byte-vector pass */
        test_fused_case((bf_reset_mode)reset, 8, 16, 64, 256, reset == 1);
        test_fused_case((bf_reset_mode)reset, 16, 3, 5, 7, 0);
        test_fused_case((bf_reset_mode)reset, 32, 2, 3, 4, reset == 2);
        test_fused_case((bf_reset_mode)reset, 4, 4096, 8, 4, 0); /* 2x2 planes: two chunks a channel */
    }
    test_statistics_alone();
    test_arguments();
    CHECK_OK(gpu->ops->synchronize(gpu));
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
