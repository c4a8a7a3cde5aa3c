/* test_spiking_model.c - spiking networks as models (layer_spiking.c), on the CPU backend:
 *   - time folding: encode makes [T*N, ...], stateless layers and batch-norm run on T*N samples,
 *     the readout averages the T logits; the logits of a direct-coded network equal the mean over
 *     T of the per-step logits computed by hand from its layer outputs;
 *   - finite-difference gradients through encode -> conv -> BN -> neuron -> ... -> time mean with
 *     the differentiable clamp01 neuron over T = 3 steps (the plumbing of the time dimension; the
 *     LIF backward itself is checked against a naive BPTT in test_neuron_ops);
 *   - packed spikes ([spiking] pack_spikes, memory_plan.c) and the recomputed charge ([spiking]
 *     recompute_charge) change nothing: PlasticFlex VGG-6 with flex layers (which read their
 *     spiking input in the backward) gives bit-identical gradients over two steps with and without
 *     each (and with the neuron's backward inside its batch-norm's, [spiking] fuse_bn_backward), and
 *     the plan packs, restores and recomputes what it should; a LIF as the logits or on a branch
 *     nothing reads keeps its backward apart (no gradient to share);
 *   - [spiking] share_direct_input: where the steps begin (no encode layer when the first LIF reads
 *     its batch-norm's one step itself; an encode layer before the first neuron otherwise; at the
 *     input when not shared or rate-coded), and PlasticFlex VGG-6's gradients and running variance
 *     equal the image-repeated network's to rounding;
 *   - [spiking] readout = spike_count: a neuron layer after the logits, whose firing rates equal the
 *     LIF worked out by hand on the per-step logits of the mean_output network of the same seed;
 *   - rate coding in evaluation (evaluate.c): every batch draws its own input spikes, an evaluation
 *     repeats exactly, and the training step counter is left as it was;
 *   - a LIF network learns: procedural data, 3 epochs, test accuracy far above chance, with either
 *     readout (spike_count's loss above the floor that rates in [0, 1] impose). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { N = 3, C = 2, H = 6, K = 4, T = 3 };

static double loss_of(bf_model *m, const float *x, const int32_t *labels, float *losses) {
    const float *logits = NULL;
    if (bf_model_forward(m, x, &logits) != BF_OK) return NAN;
    m->backend->ops->softmax_xent(m->backend, N, K, logits, labels, 0.0f, 1.0f / N, losses, NULL);
    double s = 0;
    for (int i = 0; i < N; i++) s += losses[i];
    return s / N;
}

/* The small time-folded network of these tests, finalised on b: encode -> [conv ->] BN -> clamp01
 * neuron -> global average pool -> flatten -> fc -> time mean; *fc_index: the fc layer. */
static bf_model *folded_network(bf_backend *b, long seed, int with_conv, int *fc_index) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, seed, &m));
    if (!m) return NULL;
    bf_neuron_params clamp = {.kind = BF_NEURON_CLAMP01};
    int x = bf_model_add_encode(m, "encode", BF_MODEL_INPUT, T, 0);
    if (with_conv) x = bf_model_add_conv(m, "conv", x, 4, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_batchnorm(m, "bn", x, 1e-5f, 0.1f);
    x = bf_model_add_neuron(m, "act", x, &clamp);
    x = bf_model_add_global_avgpool(m, "gap", x);
    x = bf_model_add_flatten(m, "flatten", x);
    *fc_index = bf_model_add_linear(m, "fc", x, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    bf_model_add_time_mean(m, "readout", *fc_index);
    CHECK_OK(bf_model_finalize(m));
    return m;
}

static void test_time_folding_gradients(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    int fc = -1;
    bf_model *m = folded_network(b, 5, 1, &fc);
    if (!m || !m->param_data) return;
    CHECK(m->layers[1].out_shape.n == N * T && m->layers[1].time_steps == T && m->layers[7].time_steps == 1 &&
              m->layers[7].out_shape.n == N,
          "encode folds T into the batch and the readout unfolds it");
    CHECK(!m->layers[0].needs_grad && !m->layers[0].dout && m->layers[1].needs_grad,
          "encode needs no gradient (the conv after it skips its backward-data), the conv does");

    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1.5f, 1.5f, 9);
    int32_t labels[N] = {1, 0, 3};
    float losses[N], dlogits[N * K];
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, xh, &logits));
    /* the readout is the mean over the T per-step logits of fc (time outermost) */
    double worst = 0;
    for (int i = 0; i < N * K; i++) {
        double mean = 0;
        for (int t = 0; t < T; t++) mean += m->layers[fc].out[(size_t)t * N * K + i] / T;
        worst = fmax(worst, fabs(mean - logits[i]));
    }
    CHECK(worst < 1e-6, "readout = mean over time of the logits (max diff %.3g)", worst);
    /* direct coding with a stateless neuron and batch statistics over all T*N: every step is alike */
    CHECK(memcmp(m->layers[fc].out, m->layers[fc].out + N * K, N * K * sizeof(float)) == 0,
          "direct coding: identical steps through stateless layers");

    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    CHECK_OK(bf_model_backward(m, dlogits));
    float *grads = bf_test_download(b, m->grad_data, m->num_param_floats);
    double l0 = loss_of(m, xh, labels, losses);
    int checked = 0, bad = 0, kinks = 0;
    for (size_t i = 0; i < m->num_param_floats; i++) {
        float saved = m->param_data[i];
        const float h = 1e-3f;
        m->param_data[i] = saved + h;
        double lp = loss_of(m, xh, labels, losses);
        m->param_data[i] = saved - h;
        double lm = loss_of(m, xh, labels, losses);
        m->param_data[i] = saved;
        double numeric = (lp - lm) / (2 * h), fwd = (lp - l0) / h, bwd = (l0 - lm) / h;
        double tol = 1e-3 + 2e-2 * fabs(grads[i]);
        if (fabs(fwd - bwd) > 2 * tol) { /* the clamp's corners */
            kinks++;
            continue;
        }
        checked++;
        if (fabs(numeric - grads[i]) > tol && bad++ < 5)
            fprintf(stderr, "param %zu (%s...): numeric %.6g analytic %.6g\n", i, m->params[0].name, numeric, grads[i]);
    }
    CHECK(checked >= (int)m->num_param_floats - 4 && bad == 0, "time-folded network: %d of %d gradients disagree (%d kinks)",
          bad, checked, kinks);
    free(grads);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* A batch-norm right after the encode layer, which needs no gradient: its dx goes to the
 * accumulation scratch, which must hold it, and its parameters' gradients match finite
 * differences as anywhere else. */
static void test_batchnorm_after_encode(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    int fc = -1;
    bf_model *m = folded_network(b, 6, 0, &fc);
    if (!m || !m->param_data) return;
    CHECK(m->grad_scratch_floats >= bf_shape_count(m->layers[1].out_shape) && !m->layers[0].dout,
          "the batch-norm's unused dx fits the scratch (%zu floats)", m->grad_scratch_floats);
    static float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1.5f, 1.5f, 19);
    int32_t labels[N] = {2, 0, 1};
    float losses[N], dlogits[N * K];
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, xh, &logits));
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    CHECK_OK(b->ops->fill(b, m->grad_data, 0.0f, m->num_param_floats));
    CHECK_OK(bf_model_backward(m, dlogits));
    const size_t gamma = m->params[m->layers[1].param_index[0]].offset;
    const double analytic = m->grad_data[gamma];
    const float saved = m->param_data[gamma], h = 1e-3f;
    m->param_data[gamma] = saved + h;
    const double lp = loss_of(m, xh, labels, losses);
    m->param_data[gamma] = saved - h;
    const double lm = loss_of(m, xh, labels, losses);
    m->param_data[gamma] = saved;
    const double numeric = (lp - lm) / (2 * h);
    CHECK(fabs(numeric - analytic) < 1e-3 + 2e-2 * fabs(analytic) && analytic != 0.0,
          "bn.weight[0] after encode: numeric %.6g analytic %.6g", numeric, analytic);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* Parameter gradients of two forward-backward steps (different inputs, no update between) of
 * PlasticFlex VGG-6 with flex layers and LIF neurons, into grads[2][count]; with share = 0 the image
 * is repeated first ([spiking] share_direct_input = false); running_var (nullable): the first
 * batch-norm's 64 running variances after the steps. */
static size_t vgg6_gradients_of(int pack, int recompute, int fuse, int share, float **grads, float *running_var) {
    enum { B = 2, S = 28 };
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return 0;
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_PF_VGG6;
    cfg.model.flex = 1;
    cfg.model.spiking.neuron = BF_NEURON_LIF;
    cfg.model.spiking.time_steps = 3;
    cfg.model.spiking.decay = 0.9f;
    cfg.model.spiking.threshold = 0.3f; /* spikes in every layer at this small scale */
    cfg.model.spiking.pack_spikes = pack;
    cfg.model.spiking.recompute_charge = recompute;
    cfg.model.spiking.fuse_bn_backward = fuse;
    cfg.model.spiking.share_direct_input = share;
    if (running_var) cfg.model.bn_momentum = 1.0f; /* the running variance is the last batch's, unbiased */
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){B, 1, S, S}, 10, 1, &m));
    if (!m) {
        bf_backend_destroy(b);
        return 0;
    }
    int packed = 0;
    for (int i = 0; i < m->num_layers; i++) packed += m->layers[i].spike_bits != NULL;
    CHECK(pack ? packed >= 3 : packed == 0, "pack_spikes = %d: %d neuron layers keep bits", pack, packed);
    int recomputed = 0;
    for (int i = 0; i < m->num_layers; i++) recomputed += m->layers[i].charge_recomputed && !m->layers[i].neuron_charge;
    CHECK(recompute ? recomputed >= 3 : recomputed == 0, "recompute_charge = %d: %d neuron layers keep no charge",
          recompute, recomputed);
    int fused = 0;
    for (int i = 0; i < m->num_layers; i++) fused += m->layers[i].bn_runs_neuron;
    CHECK(recompute && fuse ? fused >= 3 : fused == 0, "fuse_bn_backward = %d: %d batch-norms run their neuron's "
          "backward", fuse, fused);
    float x[B * S * S], losses[B], *dlogits = NULL;
    int32_t labels[B] = {3, 7};
    CHECK_OK(bf_alloc(b, (size_t)B * 10 * sizeof(float), (void **)&dlogits));
    size_t count = m->num_param_floats;
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < B * S * S; i++) x[i] = 2.0f * bf_uniform(11 + step, (uint64_t)i);
        const float *logits = NULL;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(b->ops->softmax_xent(b, B, 10, logits, labels, 0.0f, 1.0f / B, losses, dlogits));
        CHECK_OK(b->ops->fill(b, m->grad_data, 0.0f, count));
        CHECK_OK(bf_model_backward(m, dlogits));
        grads[step] = malloc(count * sizeof(float));
        if (grads[step]) memcpy(grads[step], m->grad_data, count * sizeof(float));
        for (int i = 0; i < m->num_layers; i++) /* the consumers' backward ran on the restored copies */
            if (m->layers[i].spikes_unpacked)
                CHECK(m->layers[i].spikes_restored, "%s's spikes were restored for the backward", m->layers[i].name);
    }
    if (running_var) { /* features.1, the first batch-norm: its running variance is the second buffer */
        const bf_layer *bn = &m->layers[m->layers[0].kind == BF_LAYER_ENCODE ? 2 : 1];
        CHECK(bn->kind == BF_LAYER_BATCHNORM && bn->bn.c == 64, "the first batch-norm is where expected");
        memcpy(running_var, m->buffer_data + m->buffers[bn->buffer_index[1]].offset, 64 * sizeof(float));
    }
    bf_free(b, dlogits);
    bf_model_destroy(m);
    bf_backend_destroy(b);
    return count;
}

static size_t vgg6_gradients(int pack, int recompute, int fuse, float **grads) {
    return vgg6_gradients_of(pack, recompute, fuse, 1, grads, NULL);
}

/* Against the plan that keeps every float spike and charge: packed spikes, the recomputed charge,
 * both, and with them the neuron's backward inside its batch-norm's (the default). */
static void test_memory_rules_change_nothing(void) {
    float *plain[2] = {NULL, NULL};
    const size_t n = vgg6_gradients(0, 0, 0, plain);
    const struct { int pack, recompute, fuse; const char *what; } rules[] = {
        {1, 0, 0, "packed spikes"},
        {0, 1, 0, "the recomputed charge"},
        {1, 1, 0, "packed spikes and the recomputed charge"},
        {1, 1, 1, "packed spikes, the recomputed charge, the neuron's backward inside its batch-norm's"}};
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        float *other[2] = {NULL, NULL};
        const size_t n_other = vgg6_gradients(rules[r].pack, rules[r].recompute, rules[r].fuse, other);
        CHECK(n == n_other && n > 0, "%s: the same parameters (%zu, %zu)", rules[r].what, n, n_other);
        for (int step = 0; step < 2; step++) {
            if (!plain[step] || !other[step] || n != n_other) continue;
            double norm = 0;
            for (size_t i = 0; i < n; i++) norm += fabs(plain[step][i]);
            CHECK(norm > 0, "step %d: the gradients are not all zero", step);
            CHECK(!memcmp(plain[step], other[step], n * sizeof(float)),
                  "step %d: the gradients with %s equal those without, bit for bit", step, rules[r].what);
        }
        free(other[0]);
        free(other[1]);
    }
    free(plain[0]);
    free(plain[1]);
}

/* A LIF layer after a batch-norm that has no gradient of its own to share keeps its backward apart
 * ([spiking] fuse_bn_backward): as the logits (the caller owns their gradient), and on a branch no
 * layer reads; the model finalizes either way, and the joined pair of an ordinary chain is flagged. */
static void test_fused_backward_sites(void) {
    const bf_neuron_params lif = {.kind = BF_NEURON_LIF, .T = 2, .decay = 0.9f, .threshold = 0.5f,
                                  .reset = BF_RESET_HARD, .surrogate = BF_SURROGATE_SIGMOID, .alpha = 4.0f,
                                  .through_time = 1};
    for (int site = 0; site < 3; site++) { /* 0: logits, 1: a branch nothing reads, 2: a chain */
        bf_model *m = NULL;
        CHECK_OK(bf_model_create(NULL, (bf_shape){2, 1, 6, 6}, 4, &m));
        if (!m) continue;
        int x = bf_model_add_encode(m, "encode", BF_MODEL_INPUT, 2, 0);
        const int conv = bf_model_add_conv(m, "conv", x, 3, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
        const int bn = bf_model_add_batchnorm(m, "bn", conv, 1e-5f, 0.1f);
        const int neuron = bf_model_add_neuron(m, "lif", bn, &lif);
        if (site > 0) {
            x = bf_model_add_flatten(m, "flatten", site == 1 ? conv : neuron);
            x = bf_model_add_linear(m, "fc", x, 4, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
            bf_model_add_time_mean(m, "readout", x);
        }
        CHECK_OK(bf_model_finalize(m));
        CHECK(m->layers[bn].bn_runs_neuron == (site == 2) && m->layers[neuron].neuron_in_bn == (site == 2),
              "site %d: the batch-norm runs the neuron's backward: %d, %d (want %d)", site,
              m->layers[bn].bn_runs_neuron, m->layers[neuron].neuron_in_bn, site == 2);
        bf_model_destroy(m);
    }
}

/* [spiking] share_direct_input: where the steps begin (model_zoo.c), and that it changes only
 * rounding: PlasticFlex VGG-6's gradients over two steps and its first batch-norm's running
 * variance (the unbiased correction counting T x the values) against the network that repeats the
 * image first. */
static void test_shared_direct_input(void) {
    struct { int share, recompute, encoding, neuron; int encode_at, shared_neuron; const char *what; } layouts[] = {
        {1, 1, 0, BF_NEURON_LIF, -1, 2, "shared, the first LIF reading its batch-norm's step"},
        {1, 0, 0, BF_NEURON_LIF, 2, -1, "shared, the charge kept: an encode layer before the first LIF"},
        {1, 1, 0, BF_NEURON_STEP, 2, -1, "shared, a stateless neuron: an encode layer before it"},
        {0, 1, 0, BF_NEURON_LIF, 0, -1, "not shared: the image repeated first"},
        {1, 1, 1, BF_NEURON_LIF, 0, -1, "rate coding: the input drawn at every step"},
    };
    for (size_t k = 0; k < sizeof layouts / sizeof layouts[0]; k++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        cfg.model.arch = BF_ARCH_PF_VGG6;
        cfg.model.spiking.neuron = layouts[k].neuron;
        cfg.model.spiking.time_steps = 4;
        cfg.model.spiking.encoding = layouts[k].encoding;
        cfg.model.spiking.share_direct_input = layouts[k].share;
        cfg.model.spiking.recompute_charge = layouts[k].recompute;
        bf_model *m = NULL;
        CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){8, 1, 28, 28}, 10, 1, &m));
        if (!m) continue;
        int encode_at = -1, shared_neuron = -1, encodes = 0;
        for (int i = 0; i < m->num_layers; i++) {
            encodes += m->layers[i].kind == BF_LAYER_ENCODE;
            if (m->layers[i].kind == BF_LAYER_ENCODE) encode_at = i;
            if (m->layers[i].kind == BF_LAYER_NEURON && m->layers[i].neuron.shared_input) shared_neuron = i;
        }
        const bf_layer *bn = &m->layers[encode_at == 0 ? 2 : 1];
        const int want_repeats = layouts[k].encode_at == 0 ? 0 : 4;
        CHECK(encode_at == layouts[k].encode_at && encodes <= 1 && shared_neuron == layouts[k].shared_neuron &&
                  bn->kind == BF_LAYER_BATCHNORM && bn->bn.repeats == want_repeats,
              "%s: encode at %d (%d of them), shared neuron %d, batch-norm repeats %d", layouts[k].what, encode_at,
              encodes, shared_neuron, bn->bn.repeats);
        if (shared_neuron >= 0)
            CHECK(m->layers[shared_neuron].charge_recomputed && bf_layer_batch(m, &m->layers[0]) == 8 &&
                      bf_layer_batch(m, &m->layers[shared_neuron]) == 32,
                  "%s: the conv runs on the 8 images, the neuron over 4 steps of them, its charge recomputed",
                  layouts[k].what);
        bf_model_destroy(m);
    }

    float *shared[2] = {NULL, NULL}, *repeated[2] = {NULL, NULL}, var_shared[64], var_repeated[64];
    const size_t n = vgg6_gradients_of(1, 1, 1, 1, shared, var_shared);
    const size_t n2 = vgg6_gradients_of(1, 1, 1, 0, repeated, var_repeated);
    CHECK(n == n2 && n > 0, "the same parameters shared and repeated (%zu, %zu)", n, n2);
    for (int step = 0; step < 2 && n == n2; step++) {
        if (!shared[step] || !repeated[step]) continue;
        double worst = 0, largest = 0;
        size_t at = 0;
        for (size_t i = 0; i < n; i++) largest = fmax(largest, fabs(repeated[step][i]));
        for (size_t i = 0; i < n; i++) {
            const double d = fabs(shared[step][i] - repeated[step][i]) / (1e-6 + 1e-4 * largest);
            if (d > worst) worst = d, at = i;
        }
        CHECK(largest > 0 && worst <= 1.0, "step %d: the gradients shared and repeated agree to 1e-4 of the largest "
              "(%.3g): worst [%zu] %.9g vs %.9g", step, largest, at, (double)shared[step][at], (double)repeated[step][at]);
    }
    double worst_var = 0;
    for (int c = 0; c < 64; c++) worst_var = fmax(worst_var, fabs(var_shared[c] - var_repeated[c]) / fabs(var_repeated[c]));
    CHECK(worst_var < 1e-5, "the first batch-norm's running variance shared and repeated: relative difference %.3g",
          worst_var);
    for (int step = 0; step < 2; step++) free(shared[step]), free(repeated[step]);
}

static void test_lif_network_learns(int spike_count) {
    char dir[] = "/tmp/bioflex_spiking_XXXXXX";
    if (!mkdtemp(dir)) return;
    bf_config cfg;
    bf_config_defaults(&cfg);
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run", dir);
    cfg.run.device = BF_DEVICE_SEL_CPU;
    cfg.run.epochs = 3;
    cfg.run.log_interval = 10;
    cfg.data.dataset = BF_DATASET_PROCEDURAL;
    cfg.data.procedural_train = 1200;
    cfg.data.procedural_test = 300;
    cfg.data.procedural_size = 16;
    cfg.data.procedural_channels = 1;
    cfg.data.procedural_classes = 4;
    cfg.data.batch_size = 32;
    cfg.model.arch = BF_ARCH_CNN;
    cfg.model.channels[0] = 8;
    cfg.model.channels[1] = 16;
    cfg.model.num_channels = 2;
    cfg.model.hidden = 32;
    cfg.model.dropout = 0;
    cfg.model.spiking.neuron = BF_NEURON_LIF;
    cfg.model.spiking.time_steps = 4;
    cfg.model.spiking.readout = spike_count;
    cfg.optim.optimizer = BF_OPTIM_ADAMW;
    cfg.optim.lr = 0.003f;
    FILE *quiet = fopen("/dev/null", "w");
    bf_train_options opt = {.quiet = 1, .log = quiet};
    bf_train_result r;
    CHECK_OK(bf_train(&cfg, &opt, &r));
    fclose(quiet);
    printf("LIF CNN (T = 4, readout %s) on 4-class procedural gratings: test top-1 %.1f%% (chance 25%%), loss %.4f\n",
           spike_count ? "spike_count" : "mean_output", 100 * r.final_eval.top1, r.final_eval.loss);
    CHECK(r.final_eval.top1 >= 0.6, "a LIF network trained through time learns: %.3f >= 0.6", r.final_eval.top1);
    /* rates in [0, 1] as logits: the cross-entropy cannot fall below log(1 + 3/e) with 4 classes */
    if (spike_count)
        CHECK(r.final_eval.loss >= log(1 + 3 / exp(1.0)) - 1e-4, "spike_count: the loss sees firing rates (%.4f >= %.4f)",
              r.final_eval.loss, log(1 + 3 / exp(1.0)));
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* A one-conv LIF CNN (4 channels, hidden 8, no dropout) over T steps, the other keys at their defaults. */
static bf_model_config tiny_lif_cnn(int time_steps) {
    bf_model_config mc = bf_test_cnn_config(4, 8, 0);
    mc.spiking.neuron = BF_NEURON_LIF;
    mc.spiking.time_steps = time_steps;
    return mc;
}

/* [spiking] readout = spike_count: the logits feed a neuron layer and the readout is its firing rate.
 * Built from one seed with either readout, the two networks share every parameter, so the rates must
 * be the LIF of the mean_output network's per-step logits, worked out here by hand; and a network
 * trained on its rates learns, with a loss above the floor that rates in [0, 1] impose. */
static void test_spike_count_readout(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model_config mc = tiny_lif_cnn(5);
    mc.spiking.decay = 0.9f;
    mc.spiking.threshold = 0.5f;
    mc.spiking.pack_spikes = 0;
    enum { B = 6, S = 8, CLASSES = 3, STEPS = 5 };
    bf_model *mean = NULL, *count = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, CLASSES, 11, &mean));
    mc.spiking.readout = 1;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){B, 1, S, S}, CLASSES, 11, &count));
    if (!mean || !count) return;
    int last = count->num_layers - 1;
    CHECK(count->num_layers == mean->num_layers + 1 && count->layers[last].kind == BF_LAYER_TIME_MEAN &&
              count->layers[last - 1].kind == BF_LAYER_NEURON && strcmp(count->layers[last - 1].name, "readout_neuron") == 0,
          "spike_count puts a neuron layer between the last linear layer and the readout");
    CHECK(count->num_param_floats == mean->num_param_floats &&
              memcmp(count->param_data, mean->param_data, mean->num_param_floats * sizeof(float)) == 0,
          "the readout neuron adds no parameters and the same seed draws the same weights");

    static float x[B * S * S];
    bf_test_fill_uniform(x, B * S * S, -2.0f, 2.0f, 5);
    const float *mean_out = NULL, *rates = NULL;
    CHECK_OK(bf_model_forward(mean, x, &mean_out));
    CHECK_OK(bf_model_forward(count, x, &rates));
    const float *per_step = mean->layers[mean->num_layers - 2].out; /* the last linear layer, [T*B, CLASSES] */
    int compared = 0, wrong = 0, fired_some = 0;
    for (int i = 0; i < B * CLASSES; i++) {
        float v = 0, spikes = 0;
        int near = 0;
        for (int t = 0; t < STEPS; t++) {
            float h = mc.spiking.decay * v;
            h += per_step[(size_t)t * B * CLASSES + i];
            near |= fabsf(h - mc.spiking.threshold) < 1e-4f;
            int fired = h >= mc.spiking.threshold;
            spikes += fired;
            v = fired ? 0.0f : h; /* hard reset */
        }
        if (near) continue;
        compared++;
        wrong += rates[i] != spikes / STEPS;
        fired_some += spikes > 0 && spikes < STEPS;
    }
    CHECK(fired_some >= 3, "the test needs outputs that fire at some steps and not at others (%d)", fired_some);
    CHECK(compared >= B * CLASSES - 2 && wrong == 0, "the readout is the LIF firing rate of the per-step logits "
          "(%d of %d differ)", wrong, compared);
    bf_model_destroy(mean);
    bf_model_destroy(count);
    bf_backend_destroy(b);
}

/* A test split of 2 * E_B copies of one image: two batches that hold the same samples. Direct coding
 * gives both the same loss, so the two-batch mean equals the one-batch loss exactly; rate coding draws
 * new spikes for the second batch, so it may not (the first-batch draws would repeat if the draws
 * were keyed by the place in the batch rather than in the split). The whole split, read in batches
 * of loader_batch, scores the same whatever that batch size (*whole). */
enum { E_B = 8, E_S = 8, E_CLASSES = 3 };

static void eval_losses(int encoding, int loader_batch, double *one_batch, double *two_batches, double *again,
                        double *whole) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_config cfg;
    bf_config_defaults(&cfg);
    bf_model_config mc = tiny_lif_cnn(4);
    mc.spiking.threshold = 0.3f;
    mc.spiking.encoding = encoding;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){E_B, 1, E_S, E_S}, E_CLASSES, 3, &m));
    static uint8_t pixels[2 * E_B * E_S * E_S];
    static int32_t labels[2 * E_B];
    for (int i = 0; i < 2 * E_B; i++) {
        labels[i] = 1;
        for (int p = 0; p < E_S * E_S; p++) pixels[i * E_S * E_S + p] = (uint8_t)((p * 37) % 256);
    }
    bf_dataset d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "one image");
    d.num_samples = 2 * E_B, d.c = 1, d.h = d.w = E_S, d.num_classes = E_CLASSES;
    d.mean[0] = 0.0f, d.std[0] = 1.0f;
    d.pixels = pixels, d.labels = labels, d.split = BF_SPLIT_TEST;
    cfg.data.batch_size = loader_batch;
    cfg.data.normalize = 0;
    bf_loader_options lo = bf_loader_options_from_config(&cfg, BF_SPLIT_TEST);
    bf_loader *loader = NULL;
    CHECK_OK(bf_loader_create(&d, &lo, &loader));
    if (!m || !loader) return;
    m->step = 17; /* as if training were at step 17 */
    bf_eval_result r1, r2, r3, all;
    CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 0, 1, &r1));
    CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 0, 2, &r2));
    CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 0, 2, &r3));
    CHECK_OK(bf_evaluate_batches(m, loader, 0.0f, 0, 0, &all));
    CHECK(r1.samples == loader_batch && r2.samples == 2 * loader_batch && all.samples == 2 * E_B,
          "the evaluations see 1 and 2 batches and the split (%d, %d, %d samples)", r1.samples, r2.samples, all.samples);
    CHECK(m->step == 17 && m->training, "an evaluation leaves the step counter and the training mode as they were");
    *one_batch = r1.loss, *two_batches = r2.loss, *again = r3.loss, *whole = all.loss;
    bf_loader_destroy(loader);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

static void test_rate_coding_in_evaluation(void) {
    double direct1, direct2, direct3, rate1, rate2, rate3, whole, whole5, unused;
    eval_losses(0, E_B, &direct1, &direct2, &direct3, &unused);
    eval_losses(1, E_B, &rate1, &rate2, &rate3, &whole);
    eval_losses(1, 5, &unused, &unused, &unused, &whole5);
    CHECK(fabs(direct1 - direct2) < 1e-6, "direct coding: two equal batches have one loss (%.7f, %.7f)", direct1, direct2);
    CHECK(fabs(rate1 - rate2) > 1e-5, "rate coding: the second batch draws new spikes, so the mean over two equal "
          "batches is not the first batch's loss (%.7f, %.7f)", rate1, rate2);
    CHECK(rate2 == rate3, "rate coding: an evaluation repeats exactly (%.7f, %.7f)", rate2, rate3);
    CHECK(fabs(whole - whole5) < 1e-6, "rate coding: the split scores the same in batches of %d and of 5 (%.7f, %.7f)",
          E_B, whole, whole5);
}

/* A flex threshold redrawn at every forward ([model] threshold_mode = resample_each_forward) is keyed
 * by the layer's name: PlasticFlex VGG-6 with mask-joint flex layers, its first one run once per image
 * (share_direct_input) or the image repeated first, scores the same batch the same in evaluation. */
static void test_resampled_threshold_layouts(void) {
    enum { B = 2, S = 28, K = 10 };
    float logits[2][B * K], x[B * S * S];
    bf_test_fill_uniform(x, B * S * S, 0.0f, 1.0f, 4);
    int first_runs_once[2] = {0, 0};
    for (int share = 0; share < 2; share++) {
        bf_backend *b = NULL;
        CHECK_OK(bf_backend_create_cpu(1, &b));
        bf_config cfg;
        bf_config_defaults(&cfg);
        cfg.model.arch = BF_ARCH_PF_VGG6;
        cfg.model.flex = 1;
        cfg.model.flex_joint = BF_FLEX_JOINT_MASK;
        cfg.model.threshold_mode = BF_THRESHOLD_RESAMPLE;
        cfg.model.spiking.neuron = BF_NEURON_LIF;
        cfg.model.spiking.time_steps = 3;
        cfg.model.spiking.threshold = 0.3f;
        cfg.model.spiking.share_direct_input = share;
        bf_model *m = NULL;
        if (b) CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){B, 1, S, S}, K, 1, &m));
        if (!m) return;
        first_runs_once[share] = m->layers[0].kind == BF_LAYER_FLEX && bf_layer_batch(m, &m->layers[0]) == B;
        float *dx = bf_test_upload(b, x, B * S * S);
        const float *out = NULL;
        m->training = 0;
        m->step = 3;
        CHECK_OK(bf_model_forward(m, dx, &out));
        CHECK_OK(bf_to_host(b, logits[share], out, sizeof logits[share]));
        bf_free(b, dx);
        bf_model_destroy(m);
        bf_backend_destroy(b);
    }
    double worst = 0, largest = 0;
    for (int i = 0; i < B * K; i++) largest = fmax(largest, fabs(logits[0][i]));
    for (int i = 0; i < B * K; i++) worst = fmax(worst, fabs(logits[0][i] - logits[1][i]));
    CHECK(first_runs_once[1] && !first_runs_once[0] && largest > 0 && worst <= 1e-4 * largest,
          "resampled thresholds: the first flex layer shared (%d) or not (%d) gives the same logits (worst %g of %g)",
          first_runs_once[1], first_runs_once[0], worst, largest);
}

int main(void) {
    test_resampled_threshold_layouts();
    test_rate_coding_in_evaluation();
    test_time_folding_gradients();
    test_memory_rules_change_nothing();
    test_shared_direct_input();
    test_fused_backward_sites();
    test_batchnorm_after_encode();
    test_spike_count_readout();
    test_lif_network_learns(0);
    test_lif_network_learns(1);
    return bf_test_finish();
}
