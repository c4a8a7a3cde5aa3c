/* test_train_only.c - `[optim] train_only` (a linear probe: only some parameters train), on the CPU:
 *   - bf_optimizer_restrict: SGD (momentum, weight decay), AdamW and Adam restricted to two ranges update
 *     them bit for bit as the unrestricted optimiser does, and leave every other parameter and its
 *     state untouched;
 *   - the probe's step (train_only_mode = eval): the logits are the evaluation forward's bit for bit,
 *     the head's gradients dlogits^T features of that forward (a double-precision reference), and
 *     the backward stops at the head (the layers below it get no gradient);
 *   - a run with train_only = classifier.3 from a trained checkpoint (init_weights): the head moves,
 *     every other parameter is bit-identical to the checkpoint's, and the batch-norms' running
 *     statistics stay as they were (train_only_mode = eval, a true probe) or follow the training
 *     batches (train_only_mode = train, as the V1 reference's probe);
 *   - gradient clipping counts the trained gradients alone: with clipping at a norm far above the
 *     head's gradient and far below the whole network's, the head trains as without clipping;
 *   - prefixes that match no parameter are refused, naming the key. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/checkpoint.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

static void test_restricted_optimizer(bf_backend *b) {
    enum { N = 100 };
    const size_t ranges[4] = {10, 20, 50, 30};
    static const bf_optimizer_kind kinds[3] = {BF_OPTIM_SGD, BF_OPTIM_ADAMW, BF_OPTIM_ADAM};
    static const char *const names[3] = {"SGD", "AdamW", "Adam"};
    for (int kind = 0; kind < 3; kind++) {
        bf_optim_config c = {.optimizer = kinds[kind], .lr = 0.1f, .momentum = 0.9f,
                             .weight_decay = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
        bf_optimizer *all = NULL, *some = NULL;
        CHECK_OK(bf_optimizer_create(b, &c, N, &all));
        CHECK_OK(bf_optimizer_create(b, &c, N, &some));
        if (!all || !some) return;
        CHECK_OK(bf_optimizer_restrict(some, ranges, 2));
        float p_all[N], p_some[N], start[N], g[N];
        bf_test_fill_uniform(start, N, -1, 1, 1);
        memcpy(p_all, start, sizeof start), memcpy(p_some, start, sizeof start);
        for (int step = 0; step < 3; step++) {
            bf_test_fill_uniform(g, N, -1, 1, 10 + step);
            CHECK_OK(bf_optimizer_step(b, all, p_all, g, 0.1f, NULL));
            CHECK_OK(bf_optimizer_step(b, some, p_some, g, 0.1f, NULL));
        }
        int same_in = 1, untouched = 1;
        const size_t states = bf_optimizer_state_floats(some) / N;
        for (size_t i = 0; i < N; i++) {
            int in = (i >= 10 && i < 30) || (i >= 50 && i < 80);
            if (in) same_in &= p_all[i] == p_some[i] && p_all[i] != start[i];
            else {
                untouched &= p_some[i] == start[i];
                for (size_t k = 0; k < states; k++) untouched &= some->state[k * N + i] == 0.0f;
            }
        }
        CHECK(same_in, "%s restricted: the ranges updated bit for bit as by the whole update", names[kind]);
        CHECK(untouched, "%s restricted: the other parameters and their state untouched", names[kind]);
        const size_t past[2] = {90, 20};
        CHECK(bf_optimizer_restrict(some, past, 1) == BF_ERR_ARG, "a range past the parameters is refused");
        bf_optimizer_destroy(b, all);
        bf_optimizer_destroy(b, some);
    }
}

static int layer_named(const bf_model *m, const char *name) {
    for (int i = 0; i < m->num_layers; i++)
        if (!strcmp(m->layers[i].name, name)) return i;
    return -1;
}

/* One probe step's passes against a plain evaluation forward of the same weights (CPU: the model's
 * buffers are host memory). */
static void test_probe_gradient(bf_backend *b) {
    enum { N = 8, K = 4, S = 12 };
    bf_model_config plain_cfg = bf_test_cnn_config(4, 16, 0.0f), probe_cfg = plain_cfg;
    probe_cfg.trained_only = "classifier.3";
    probe_cfg.eval_backward = 1;
    bf_model *plain = NULL, *probe = NULL;
    CHECK_OK(bf_model_build(b, &plain_cfg, (bf_shape){N, 1, S, S}, K, 7, &plain));
    CHECK_OK(bf_model_build(b, &probe_cfg, (bf_shape){N, 1, S, S}, K, 7, &probe));
    const int head = probe ? layer_named(probe, "classifier.3") : -1;
    CHECK(head > 0, "the CNN has a head classifier.3");
    if (!plain || !probe || head <= 0) return;
    float x[N * S * S], dlogits[N * K], losses[N];
    int32_t labels[N];
    bf_test_fill_uniform(x, N * S * S, -1, 1, 3);
    for (int i = 0; i < N; i++) labels[i] = i % K;
    /* running statistics away from their start (0 and 1), so evaluation's normalisation shows */
    for (size_t i = 0; i < plain->num_buffer_floats; i++) plain->buffer_data[i] = probe->buffer_data[i] = 0.5f + 0.01f * (float)(i % 7);
    const float *plain_logits, *logits;
    plain->training = 0;
    CHECK_OK(bf_model_forward(plain, x, &plain_logits));
    probe->training = 0, probe->eval_parameter_gradients = 1; /* as train_step sets them */
    for (size_t i = 0; i < probe->num_param_floats; i++) probe->grad_data[i] = 7.0f; /* untouched where no gradient */
    CHECK_OK(bf_model_forward(probe, x, &logits));
    CHECK(!memcmp(logits, plain_logits, sizeof(float) * N * K), "the probe's logits are the evaluation forward's");
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    CHECK_OK(bf_model_backward(probe, dlogits));
    const bf_layer *h = &probe->layers[head];
    const float *features = probe->layers[h->input[0]].out;
    const int F = h->linear.in;
    const bf_param *w = &probe->params[h->param_index[0]], *bias = &probe->params[h->param_index[1]];
    double worst = 0;
    for (int k = 0; k < K; k++) {
        double db = 0;
        for (int n = 0; n < N; n++) db += dlogits[n * K + k];
        worst = fmax(worst, fabs(probe->grad_data[bias->offset + k] - db));
        for (int j = 0; j < F; j++) {
            double dw = 0;
            for (int n = 0; n < N; n++) dw += (double)dlogits[n * K + k] * features[n * F + j];
            worst = fmax(worst, fabs(probe->grad_data[w->offset + (size_t)k * F + j] - dw));
        }
    }
    printf("probe step: head gradient against dlogits^T features, worst difference %.3g\n", worst);
    CHECK(worst < 1e-6, "the head's gradients are dlogits^T features of the evaluation forward (worst %.3g)", worst);
    int below = 0, untouched = 1;
    for (int i = 0; i < head; i++) below += probe->layers[i].needs_grad;
    for (size_t i = 0; i < w->offset; i++) untouched &= probe->grad_data[i] == 7.0f;
    CHECK(below == 0 && untouched, "the backward stops at the head (%d layers below it with a gradient)", below);
    bf_model_destroy(plain);
    bf_model_destroy(probe);
}

/* train_only = features.0 (the first conv) in training mode: its gradients are those of the whole
 * network's backward bit for bit, and the frozen linear layers above it get none computed (their
 * gradient memory keeps what it held; the trainer zeroes it each step). */
static void test_frozen_above(bf_backend *b) {
    enum { N = 8, K = 4, S = 12 };
    bf_model_config plain_cfg = bf_test_cnn_config(4, 16, 0.0f), first_cfg = plain_cfg;
    first_cfg.trained_only = "features.0";
    bf_model *plain = NULL, *first = NULL;
    CHECK_OK(bf_model_build(b, &plain_cfg, (bf_shape){N, 1, S, S}, K, 7, &plain));
    CHECK_OK(bf_model_build(b, &first_cfg, (bf_shape){N, 1, S, S}, K, 7, &first));
    if (!plain || !first) return;
    float x[N * S * S], dlogits[N * K], losses[N];
    int32_t labels[N];
    bf_test_fill_uniform(x, N * S * S, -1, 1, 5);
    for (int i = 0; i < N; i++) labels[i] = i % K;
    bf_model *nets[2] = {plain, first};
    for (int k = 0; k < 2; k++) {
        const float *logits;
        nets[k]->training = 1;
        for (size_t i = 0; i < nets[k]->num_param_floats; i++) nets[k]->grad_data[i] = 7.0f;
        CHECK_OK(bf_model_forward(nets[k], x, &logits));
        CHECK_OK(b->ops->softmax_xent(b, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
        CHECK_OK(bf_model_backward(nets[k], dlogits));
    }
    int same = 1, untouched = 1, linear = 0, conv = 0;
    for (int i = 0; i < first->num_params; i++) {
        const bf_param *p = &first->params[i];
        const float *g = first->grad_data + p->offset, *want = plain->grad_data + p->offset;
        if (!strncmp(p->name, "features.0.", 11)) {
            same &= !memcmp(g, want, p->count * sizeof(float)) && g[0] != 7.0f, conv++;
        } else if (!strncmp(p->name, "classifier.", 11)) {
            for (size_t j = 0; j < p->count; j++) untouched &= g[j] == 7.0f;
            linear++;
        }
    }
    CHECK(conv == 2 && same, "train_only = features.0: its %d gradients are the whole backward's bit for bit", conv);
    CHECK(linear >= 4 && untouched, "train_only = features.0: the %d frozen classifier tensors above it get no "
          "gradient computed", linear);
    bf_model_destroy(plain);
    bf_model_destroy(first);
}

static char root[256];

static void probe_config(bf_config *cfg, const char *run) {
    char dir[BF_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, run);
    bf_test_procedural_run_config(cfg, dir);
}

static bf_st_file *weights_of(const char *run) {
    char dir[BF_PATH_MAX + 300], file[BF_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, run);
    bf_st_file *f = NULL;
    if (bf_checkpoint_weights_file(dir, file) == BF_OK) CHECK_OK(bf_safetensors_read(file, &f));
    CHECK(f != NULL, "%s: its weights", run);
    return f;
}

/* Tensors of b that differ from a's, counted by whether their name has the prefix. */
static void count_changed(const bf_st_file *a, const bf_st_file *b, const char *prefix, int *moved_in, int *moved_out,
                          int *stats_moved) {
    *moved_in = *moved_out = *stats_moved = 0;
    for (int i = 0; i < bf_safetensors_count(a); i++) {
        const bf_st_tensor *t = bf_safetensors_at(a, i), *u = bf_safetensors_find(b, t->name);
        if (!u || u->nbytes != t->nbytes || !memcmp(t->data, u->data, t->nbytes)) continue;
        if (strstr(t->name, "running_") || strstr(t->name, "num_batches")) ++*stats_moved;
        else if (!strncmp(t->name, prefix, strlen(prefix))) ++*moved_in;
        else ++*moved_out;
    }
}

static void test_probe_run(void) {
    FILE *quiet = fopen("/dev/null", "w");
    bf_train_options opt = {.quiet = 1, .log = quiet};
    bf_train_result res;
    bf_config cfg;
    probe_config(&cfg, "pretrained");
    CHECK_OK(bf_train(&cfg, &opt, &res));
    const char *runs[3] = {"probe", "probe_clipped", "probe_train_mode"};
    for (int k = 0; k < 3; k++) {
        probe_config(&cfg, runs[k]);
        snprintf(cfg.model.init_weights, sizeof cfg.model.init_weights, "%s/pretrained", root);
        snprintf(cfg.optim.train_only, sizeof cfg.optim.train_only, "classifier.3");
        cfg.optim.grad_clip_norm = k == 1 ? 0.5f : 0; /* the head's gradient norm stays below it, the network's not */
        cfg.optim.train_only_mode = k == 2; /* train: as the V1 reference ran its probe */
        CHECK_OK(bf_train(&cfg, &opt, &res));
    }
    bf_st_file *before = weights_of("pretrained"), *after = weights_of("probe"), *clipped = weights_of("probe_clipped");
    bf_st_file *train_mode = weights_of("probe_train_mode");
    for (int k = 0; k < 2 && before && after && train_mode; k++) {
        int in, out, stats;
        count_changed(before, k ? train_mode : after, "classifier.3.", &in, &out, &stats);
        printf("train_only = classifier.3, train_only_mode = %s: %d head tensors moved, %d others, %d running "
               "statistics\n", k ? "train" : "eval", in, out, stats);
        CHECK(in == 2 && out == 0, "only classifier.3's weight and bias move (%d of them, %d others)", in, out);
        if (k) CHECK(stats >= 4, "train mode: the batch-norms' running statistics follow the batches (%d moved)", stats);
        else CHECK(stats == 0, "eval mode: the batch-norms' running statistics stay as they were (%d moved)", stats);
    }
    if (after && clipped) {
        const bf_st_tensor *a = bf_safetensors_find(after, "classifier.3.weight"),
                           *c = bf_safetensors_find(clipped, "classifier.3.weight");
        CHECK(a && c && a->nbytes == c->nbytes && !memcmp(a->data, c->data, a->nbytes),
              "clipping at 0.5 counts the head's gradient alone: the head trains as without it");
    }
    bf_safetensors_close(before), bf_safetensors_close(after), bf_safetensors_close(clipped);
    bf_safetensors_close(train_mode);
    probe_config(&cfg, "nothing");
    snprintf(cfg.optim.train_only, sizeof cfg.optim.train_only, "head");
    CHECK(bf_train(&cfg, &opt, &res) == BF_ERR_CONFIG && strstr(bf_last_error(), "train_only = head matches no parameter"),
          "a prefix that matches nothing is refused: %s", bf_last_error());
    fclose(quiet);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (b) test_restricted_optimizer(b);
    if (b) test_probe_gradient(b);
    if (b) test_frozen_above(b);
    bf_backend_destroy(b);
    snprintf(root, sizeof root, "/tmp/bioflex_train_only_XXXXXX");
    if (!mkdtemp(root)) return 1;
    test_probe_run();
    bf_test_remove_dir_if_passed(root);
    return bf_test_finish();
}
