/* test_sync_bn.c - synchronised batch-norm's ops (ops.h batchnorm_sync_*) on the CPU backend, and
 * sync_bn.c through a model:
 *   - each op against a direct double-precision computation, on data whose mean is large next to
 *     its spread (where a one-pass variance would lose digits);
 *   - two "ranks" (the batch cut in two, the sums added by hand as the all-reduce would) give plain
 *     batch-norm's results over the whole batch: output, saved and running statistics, dx, and the
 *     two ranks' dgamma/dbeta adding up to the whole batch's;
 *   - with one rank the ops chain to exactly batchnorm_forward_train / batchnorm_backward;
 *   - a model with a sync_sums hook that does nothing (one rank) trains bit for bit as without it,
 *     calling the hook three times per batch-norm layer and step (two forward, one backward), also
 *     with a flex layer whose mask joint batch-normalises its logits, and with a LIF layer whose
 *     backward its batch-norm runs (synchronised: the neuron's gradient first, then the sums), and
 *     with a channel-wise max flex layer that applies its batch-norm's dx;
 *   - bad arguments are refused with a message. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/ops.h"
#include "testutil.h"

enum { N = 4, C = 5, HW = 13 };
#define COUNT ((size_t)N * C * HW)

static float *plane(float *base, int i, int ch) { return base + ((size_t)i * C + ch) * HW; }

/* Bitwise equality of two float arrays, reported with the first differing element. */
static void check_same(const float *a, const float *b, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            CHECK(0, "%s[%zu]: %.9g vs %.9g (expected the same bits)", what, i, a[i], b[i]);
            return;
        }
    CHECK(1, "%s", what);
}

static void check_close(const float *got, const float *want, size_t n, double atol, double rtol, const char *what) {
    size_t at = 0;
    double v = bf_test_max_violation(got, want, n, atol, rtol, &at);
    CHECK(v <= 1.0, "%s[%zu]: %.9g vs %.9g", what, at, got[at], want[at]);
}

/* Each op against sums and formulas evaluated here in double. */
static void test_ops_against_double(bf_backend *b) {
    const bf_bn_shape s = {N, C, HW, 1e-5f, 0.1f};
    float x[COUNT], dy[COUNT], y[COUNT], dx[COUNT], gamma[C], beta[C];
    float save_mean[C], save_invstd[C], rm[C], rv[C], dgamma[C], dbeta[C];
    bf_test_fill_uniform(x, COUNT, -1, 1, 11);
    for (int ch = 0; ch < C; ch++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) plane(x, i, ch)[j] += 100.0f * (ch + 1); /* mean >> spread */
    bf_test_fill_uniform(dy, COUNT, -1, 1, 12);
    bf_test_fill_uniform(gamma, C, 0.5f, 1.5f, 13);
    bf_test_fill_uniform(beta, C, -0.5f, 0.5f, 14);
    for (int ch = 0; ch < C; ch++) rm[ch] = 0.25f, rv[ch] = 2.0f;
    double stats[C + 1], sq[C], sums[2 * C + 1];

    CHECK_OK(b->ops->batchnorm_sync_sums(b, &s, x, stats));
    CHECK_OK(b->ops->batchnorm_sync_sqdev(b, &s, x, stats, sq));
    CHECK_OK(b->ops->batchnorm_sync_forward_apply(b, &s, x, stats, sq, gamma, beta, y, save_mean, save_invstd, rm, rv));
    CHECK_OK(b->ops->batchnorm_sync_backward_sums(b, &s, x, dy, save_mean, save_invstd, sums, dgamma, dbeta));
    CHECK_OK(b->ops->batchnorm_sync_backward_apply(b, &s, x, dy, gamma, save_mean, save_invstd, sums, dx));

    const double count = (double)N * HW;
    CHECK(stats[C] == count, "stats[c] holds the count: %g vs %g", stats[C], count);
    CHECK(sums[2 * C] == count, "backward sums[2c] holds the count: %g vs %g", sums[2 * C], count);
    float want_y[COUNT], want_dx[COUNT];
    for (int ch = 0; ch < C; ch++) {
        double sum = 0, dev = 0, sdy = 0, sdyx = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) sum += plane(x, i, ch)[j];
        const double mean = sum / count;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) dev += (plane(x, i, ch)[j] - mean) * (plane(x, i, ch)[j] - mean);
        const double var = dev / count, invstd = 1.0 / sqrt(var + 1e-5);
        CHECK_CLOSE(stats[ch], sum, 0, 1e-12, "sum of x");
        CHECK_CLOSE(sq[ch], dev, 0, 1e-10, "sum of squared deviations");
        CHECK_CLOSE(save_mean[ch], mean, 0, 1e-7, "saved mean");
        CHECK_CLOSE(save_invstd[ch], invstd, 0, 1e-6, "saved invstd");
        CHECK_CLOSE(rm[ch], 0.9 * 0.25 + 0.1 * mean, 0, 1e-6, "running mean");
        CHECK_CLOSE(rv[ch], 0.9 * 2.0 + 0.1 * var * count / (count - 1), 0, 1e-6, "running variance (unbiased)");
        /* the backward works from the forward's saved (float) mean and invstd, as batchnorm_backward */
        const double bmean = save_mean[ch], binvstd = save_invstd[ch];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) {
                const double xhat = (plane(x, i, ch)[j] - mean) * invstd;
                plane(want_y, i, ch)[j] = (float)(gamma[ch] * xhat + beta[ch]);
                sdy += plane(dy, i, ch)[j];
                sdyx += plane(dy, i, ch)[j] * (plane(x, i, ch)[j] - bmean) * binvstd;
            }
        CHECK_CLOSE(sums[ch], sdy, 1e-12, 1e-10, "sum dy");
        CHECK_CLOSE(sums[C + ch], sdyx, 1e-9, 1e-5, "sum dy*xhat");
        CHECK_CLOSE(dbeta[ch], sdy, 1e-6, 1e-6, "dbeta");
        CHECK_CLOSE(dgamma[ch], sdyx, 1e-5, 1e-5, "dgamma");
        for (int i = 0; i < N; i++)
            for (int j = 0; j < HW; j++) {
                const double xhat = (plane(x, i, ch)[j] - bmean) * binvstd;
                plane(want_dx, i, ch)[j] =
                    (float)(gamma[ch] * binvstd * (plane(dy, i, ch)[j] - sdy / count - xhat * sdyx / count));
            }
    }
    check_close(y, want_y, COUNT, 1e-4, 1e-4, "forward output");
    check_close(dx, want_dx, COUNT, 1e-4, 1e-3, "dx");
}

/* Runs the sync ops over `ranks` equal slices of the batch, with the all-reduce done by hand. */
static void sync_over_ranks(bf_backend *b, int ranks, float *x, float *dy, const float *gamma, const float *beta,
                            float *y, float *save_mean, float *save_invstd, float *rm, float *rv, float *dx,
                            float *dgamma, float *dbeta) {
    const bf_bn_shape s = {N / ranks, C, HW, 1e-5f, 0.1f};
    const size_t slice = (size_t)(N / ranks) * C * HW;
    double stats[4][C + 1], sq[4][C], sums[4][2 * C + 1], total[2 * C + 1];
    float rm_r[C], rv_r[C], dg[C], db[C];
    for (int r = 0; r < ranks; r++) CHECK_OK(b->ops->batchnorm_sync_sums(b, &s, x + r * slice, stats[r]));
    for (int k = 0; k <= C; k++) {
        total[k] = 0;
        for (int r = 0; r < ranks; r++) total[k] += stats[r][k];
    }
    for (int r = 0; r < ranks; r++) memcpy(stats[r], total, (C + 1) * sizeof(double));
    for (int r = 0; r < ranks; r++) CHECK_OK(b->ops->batchnorm_sync_sqdev(b, &s, x + r * slice, stats[r], sq[r]));
    for (int k = 0; k < C; k++) {
        total[k] = 0;
        for (int r = 0; r < ranks; r++) total[k] += sq[r][k];
    }
    for (int r = 0; r < ranks; r++) memcpy(sq[r], total, C * sizeof(double));
    for (int r = 0; r < ranks; r++) {
        /* every rank updates its own copy of the running statistics; they must agree */
        memcpy(rm_r, rm, sizeof rm_r);
        memcpy(rv_r, rv, sizeof rv_r);
        CHECK_OK(b->ops->batchnorm_sync_forward_apply(b, &s, x + r * slice, stats[r], sq[r], gamma, beta,
                                                      y + r * slice, save_mean, save_invstd, rm_r, rv_r));
    }
    memcpy(rm, rm_r, sizeof rm_r);
    memcpy(rv, rv_r, sizeof rv_r);
    memset(dgamma, 0, C * sizeof(float));
    memset(dbeta, 0, C * sizeof(float));
    for (int r = 0; r < ranks; r++) {
        CHECK_OK(b->ops->batchnorm_sync_backward_sums(b, &s, x + r * slice, dy + r * slice, save_mean, save_invstd,
                                                      sums[r], dg, db));
        for (int ch = 0; ch < C; ch++) dgamma[ch] += dg[ch], dbeta[ch] += db[ch]; /* the gradient all-reduce */
    }
    for (int k = 0; k <= 2 * C; k++) {
        total[k] = 0;
        for (int r = 0; r < ranks; r++) total[k] += sums[r][k];
    }
    for (int r = 0; r < ranks; r++)
        CHECK_OK(b->ops->batchnorm_sync_backward_apply(b, &s, x + r * slice, dy + r * slice, gamma, save_mean,
                                                       save_invstd, total, dx + r * slice));
}

/* 1 and 2 ranks against plain batch-norm over the whole batch. */
static void test_ranks_match_plain(bf_backend *b) {
    const bf_bn_shape s = {N, C, HW, 1e-5f, 0.1f};
    float x[COUNT], dy[COUNT], gamma[C], beta[C];
    bf_test_fill_uniform(x, COUNT, -2, 3, 21);
    bf_test_fill_uniform(dy, COUNT, -1, 1, 22);
    bf_test_fill_uniform(gamma, C, 0.5f, 1.5f, 23);
    bf_test_fill_uniform(beta, C, -0.5f, 0.5f, 24);
    float y[COUNT], mean[C], invstd[C], rm[C], rv[C], dx[COUNT], dgamma[C], dbeta[C];
    for (int ch = 0; ch < C; ch++) rm[ch] = 0.1f * ch, rv[ch] = 1.0f + ch;
    CHECK_OK(b->ops->batchnorm_forward_train(b, &s, x, gamma, beta, y, mean, invstd, rm, rv));
    CHECK_OK(b->ops->batchnorm_backward(b, &s, x, dy, gamma, mean, invstd, dx, dgamma, dbeta));

    for (int ranks = 1; ranks <= 2; ranks++) {
        float sy[COUNT], smean[C], sinv[C], srm[C], srv[C], sdx[COUNT], sdg[C], sdb[C];
        for (int ch = 0; ch < C; ch++) srm[ch] = 0.1f * ch, srv[ch] = 1.0f + ch;
        sync_over_ranks(b, ranks, x, dy, gamma, beta, sy, smean, sinv, srm, srv, sdx, sdg, sdb);
        if (ranks == 1) { /* the same sums in the same order: the same bits */
            check_same(sy, y, COUNT, "1 rank: output");
            check_same(smean, mean, C, "1 rank: saved mean");
            check_same(sinv, invstd, C, "1 rank: saved invstd");
            check_same(srm, rm, C, "1 rank: running mean");
            check_same(srv, rv, C, "1 rank: running variance");
            check_same(sdx, dx, COUNT, "1 rank: dx");
            check_same(sdg, dgamma, C, "1 rank: dgamma");
            check_same(sdb, dbeta, C, "1 rank: dbeta");
        } else { /* sums split in two: equal to rounding */
            check_close(sy, y, COUNT, 1e-6, 1e-6, "2 ranks: output");
            check_close(smean, mean, C, 1e-7, 1e-6, "2 ranks: saved mean");
            check_close(sinv, invstd, C, 0, 1e-6, "2 ranks: saved invstd");
            check_close(srm, rm, C, 1e-7, 1e-6, "2 ranks: running mean");
            check_close(srv, rv, C, 0, 1e-6, "2 ranks: running variance");
            check_close(sdx, dx, COUNT, 1e-6, 1e-5, "2 ranks: dx");
            check_close(sdg, dgamma, C, 1e-6, 1e-5, "2 ranks: dgamma (sum of the ranks')");
            check_close(sdb, dbeta, C, 1e-6, 1e-5, "2 ranks: dbeta (sum of the ranks')");
        }
    }
}

static void test_refusals(bf_backend *b) {
    bf_bn_shape bad = {0, C, HW, 1e-5f, 0.1f}, one = {1, 1, 1, 1e-5f, 0.1f};
    float x[COUNT] = {0}, y[COUNT], g[C] = {1, 1, 1, 1, 1}, be[C] = {0};
    double stats[2 * C + 1] = {0}, sq[C] = {0};
    CHECK(b->ops->batchnorm_sync_sums(b, &bad, x, stats) == BF_ERR_ARG, "n = 0 is refused");
    CHECK(strstr(bf_last_error(), "batchnorm_sync_sums") != NULL, "the message names the op: %s", bf_last_error());
    CHECK_OK(b->ops->batchnorm_sync_sums(b, &one, x, stats));
    CHECK(b->ops->batchnorm_sync_forward_apply(b, &one, x, stats, sq, g, be, y, NULL, NULL, NULL, NULL) == BF_ERR_ARG,
          "one value per channel over all ranks is refused");
    CHECK(strstr(bf_last_error(), "more than one value") != NULL, "message: %s", bf_last_error());
    CHECK(b->ops->batchnorm_sync_sqdev(b, &one, x, NULL, sq) == BF_ERR_ARG, "NULL stats are refused");
}

/* ---- through a model: a hook that sums over one rank changes nothing ---- */
static int hook_calls;
static bf_status one_rank_sums(void *ctx, double *sums, size_t n) {
    (void)ctx, (void)sums, (void)n;
    hook_calls++;
    return BF_OK;
}

/* With flex_bn = 1, conv2 is a flex layer whose mask joint batch-normalises its logits: a third
 * batch-norm that sync_bn must reach. With flex_bn = 3 it is a channel-wise max flex layer that
 * applies bn2's dx ([model] fuse_flex_bn): synchronised, bn2's whole backward writes over the
 * pair's one gradient first. With flex_bn = 2, relu1 is a LIF layer over 3 steps whose
 * charge is recomputed from bn1 and whose backward bn1 runs ([spiking] fuse_bn_backward): synchronised,
 * the two backwards in turn (bf_spiking_bn_backward). */
static bf_model *small_model(bf_backend *b, int flex_bn) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, 3, 8, 8}, 5, &m));
    if (!m) return NULL;
    const int T = flex_bn == 2 ? 3 : 1;
    int x = T > 1 ? bf_model_add_encode(m, "encode", BF_MODEL_INPUT, T, 0) : BF_MODEL_INPUT;
    x = bf_model_add_conv(m, "conv1", x, 6, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_batchnorm(m, "bn1", x, 1e-5f, 0.1f);
    const bf_neuron_params lif = {.kind = BF_NEURON_LIF, .T = T, .decay = 0.8f, .threshold = 0.2f,
                                  .reset = BF_RESET_HARD, .surrogate = BF_SURROGATE_SIGMOID, .alpha = 4.0f,
                                  .through_time = 1};
    x = T > 1 ? bf_model_add_neuron(m, "lif1", x, &lif) : bf_model_add_relu(m, "relu1", x);
    const bf_flex_options opt = {.joint = BF_FLEX_JOINT_MASK, .channels = BF_FLEX_CHANNELS_EXPAND,
                                 .ties = BF_FLEX_TIE_SPLIT, .mask = BF_FLEX_MASK_SIGMOID_HARD, .mask_factor = 1.0f,
                                 .logits_bn = 1, .threshold_mode = BF_THRESHOLD_LEARNED, .bn_eps = 1e-5f,
                                 .bn_momentum = 0.1f};
    const bf_flex_options max_opt = {.joint = BF_FLEX_JOINT_MAX, .channels = BF_FLEX_CHANNELS_EXPAND,
                                     .ties = BF_FLEX_TIE_SPLIT};
    if (flex_bn == 1)
        x = bf_model_add_flex(m, "conv2", x, 9, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, &opt);
    else if (flex_bn == 3)
        x = bf_model_add_flex(m, "conv2", x, 9, 3, 2, 1, BF_INIT_UNIFORM_FAN_IN, &max_opt);
    else
        x = bf_model_add_conv(m, "conv2", x, 9, 3, 2, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_batchnorm(m, "bn2", x, 1e-5f, 0.1f);
    if (flex_bn == 3) x = bf_model_add_relu(m, "relu2", x); /* run by bn2: in place, then the sync backward */
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    x = bf_model_add_linear(m, "fc", x, 4, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    if (T > 1) bf_model_add_time_mean(m, "readout", x);
    CHECK_OK(bf_model_finalize(m));
    if (T > 1)
        CHECK(m->layers[2].bn_runs_neuron && m->layers[3].neuron_in_bn, "bn1 runs lif1's backward (got %d, %d)",
              m->layers[2].bn_runs_neuron, m->layers[3].neuron_in_bn);
    if (flex_bn == 3)
        CHECK(m->layers[3].flex_applies_bn && m->layers[4].bn_in_flex, "conv2 applies bn2's dx (got %d, %d)",
              m->layers[3].flex_applies_bn, m->layers[4].bn_in_flex);
    CHECK(m->bn_sync_sums != NULL && m->bn_sync_doubles == 2 * 9 + 1,
          "the model plans 2c+1 doubles for its widest batch-norm (got %zu)", m->bn_sync_doubles);
    return m;
}

/* One step: forward, loss gradient, backward; returns the logits, gradients and buffers (free them). */
static void model_step(bf_backend *b, bf_model *m, const float *x, const int32_t *labels, float **logits_out,
                       float **grads_out, float **buffers_out) {
    const float *logits = NULL;
    float losses[N], dlogits[N * 4];
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(b->ops->softmax_xent(b, N, 4, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    CHECK_OK(bf_model_backward(m, dlogits));
    *logits_out = bf_test_download(b, logits, N * 4);
    *grads_out = bf_test_download(b, m->grad_data, m->num_param_floats);
    *buffers_out = bf_test_download(b, m->buffer_data, m->num_buffer_floats);
}

static void test_model_one_rank(bf_backend *b, int flex_bn) {
    bf_model *plain = small_model(b, flex_bn), *synced = small_model(b, flex_bn);
    if (!plain || !synced || !plain->param_data || !synced->param_data) goto done;
    float x[N * 3 * 8 * 8];
    bf_test_fill_uniform(x, N * 3 * 8 * 8, -1, 1, 31);
    const int32_t labels[N] = {0, 3, 1, 2};
    synced->sync_sums = one_rank_sums;
    for (int step = 0; step < 2; step++) { /* the second step starts from updated running statistics */
        float *lp, *gp, *bp, *ls, *gs, *bs;
        model_step(b, plain, x, labels, &lp, &gp, &bp);
        hook_calls = 0;
        model_step(b, synced, x, labels, &ls, &gs, &bs);
        CHECK(hook_calls == (flex_bn == 1 ? 9 : 6), "the hook runs 3 times per batch-norm and step (got %d for %d)",
              hook_calls, flex_bn == 1 ? 3 : 2);
        if (lp && ls) check_same(ls, lp, N * 4, "model with a one-rank sync_bn hook: logits");
        if (gp && gs) check_same(gs, gp, plain->num_param_floats, "model with a one-rank sync_bn hook: gradients");
        if (bp && bs) check_same(bs, bp, plain->num_buffer_floats, "model with a one-rank sync_bn hook: running stats");
        free(lp), free(gp), free(bp), free(ls), free(gs), free(bs);
    }
done:
    bf_model_destroy(plain);
    bf_model_destroy(synced);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    test_ops_against_double(b);
    test_ranks_match_plain(b);
    test_refusals(b);
    test_model_one_rank(b, 0);
    test_model_one_rank(b, 1);
    test_model_one_rank(b, 2);
    test_model_one_rank(b, 3);
    bf_backend_destroy(b);
    return bf_test_finish();
}
