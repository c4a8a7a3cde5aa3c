/* butd_chbn_cases.h - Counter-Hebb with batch-norm ([butd] ch_bn; spec section 1.4, README quirk
 * 11), written once against a backend: test_butd_chbn.c runs the checks on the CPU,
 * test_butd_chbn_cuda.c on a GPU (and the kernel emulator). Included by exactly one test file each.
 *   exact: on a small ResNet-18-style net (stem conv + BN, an identity block, a stride-2 block with
 *     a 1x1 downsample, every conv with BN) the Counter-Hebb update equals the engine's own backprop
 *     (bf_model with batch-norm layers) for every weight and every gamma and beta, unguided; guided
 *     it equals the BU-TD backprop mode (itself checked against PyTorch: test_butd_parity_bn.c) and
 *     central finite differences; with separate symmetric weights likewise, B getting W's update.
 *   independent: the error pass applies the TD copy after the transposed op (checked against a
 *     host computation), gamma and beta get no update, the head's update is backprop's and the
 *     weights below differ from it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/model.h"
#include "butd_test_util.h"
#include "testutil.h"

enum { CB_C = 3, CB_H = 8, CB_W = 7, CB_K = 5, CB_T = 3 };

static int cb_is_norm_param(const bf_butd_net *net, int p) {
    for (int i = 0; i < net->num_layers; i++)
        for (int j = 0; j < 3; j++)
            if (net->layers[i].norm[j] && (net->layers[i].norm[j]->gamma == p || net->layers[i].norm[j]->beta == p))
                return 1;
    return 0;
}

/* The small ResNet: conv1 (+bn1) -> layer1.0 (identity) -> layer2.0 (stride 2, downsample) -> head. */
static bf_butd_net *cb_resnet(bf_backend *b, int n, bf_butd_learning learning, int ch_bn, int shared, int symmetric,
                              int guided) {
    bf_butd_options opt = {.learning = learning, .shared_weights = shared, .symmetric_init = symmetric,
                           .guided = guided, .num_tasks = guided ? CB_T : 0, .task_embedding = guided ? 5 : 0,
                           .batch_norm = 1, .ch_bn = ch_bn, .seed = 23};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, CB_C, CB_H, CB_W, n, &opt, &net));
    if (!net) return NULL;
    bf_butd_add_conv(net, "conv1", 4, 3, 1, 1, 1, 0);
    bf_butd_add_block(net, "layer1.0", 4, 1);
    bf_butd_add_block(net, "layer2.0", 6, 2);
    CHECK_OK(bf_butd_finalize(net, CB_K));
    return net;
}

/* One step's update (instruction when guided, BU, error pass) into a host copy of grad_data. */
static float *cb_update(bf_backend *b, bf_butd_net *net, const float *x, const int32_t *tasks, const int32_t *labels,
                        int n) {
    float *dl = NULL;
    const float *logits = NULL;
    CHECK_OK(bf_alloc(b, (size_t)n * CB_K * sizeof(float), (void **)&dl));
    if (net->opt.guided) CHECK_OK(bf_butd_instruct(net, tasks));
    CHECK_OK(bf_butd_forward(net, x, &logits));
    ce_grad(b, n, CB_K, logits, labels, 1.0f, dl);
    CHECK_OK(bf_butd_backward(net, dl));
    bf_free(b, dl);
    return bf_test_download(b, net->grad_data, net->num_param_floats);
}

/* exact, unguided: Counter-Hebb = the engine's backprop through the same ResNet with batch-norm. */
static void cb_exact_vs_engine(bf_backend *b) {
    enum { N = 5 };
    bf_butd_net *net = cb_resnet(b, N, BF_BUTD_COUNTER_HEBB, BF_BUTD_CH_BN_EXACT, 1, 0, 0);
    if (!net) return;
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, CB_C, CB_H, CB_W}, 23, &m));
    int l = bf_model_add_conv(m, "conv1", BF_MODEL_INPUT, 4, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
    l = bf_model_add_batchnorm(m, "bn1", l, 1e-5f, 0.1f);
    int in = bf_model_add_relu(m, "relu", l);
    static const char *blocks[2] = {"layer1.0", "layer2.0"};
    static const int widths[2] = {4, 6}, strides[2] = {1, 2};
    for (int k = 0; k < 2; k++) {
        char name[64];
#define CB_NAME(what) (snprintf(name, sizeof name, "%s.%s", blocks[k], what), name)
        int c1 = bf_model_add_conv(m, CB_NAME("conv1"), in, widths[k], 3, strides[k], 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
        c1 = bf_model_add_batchnorm(m, CB_NAME("bn1"), c1, 1e-5f, 0.1f);
        int r1 = bf_model_add_relu(m, CB_NAME("relu1"), c1);
        int c2 = bf_model_add_conv(m, CB_NAME("conv2"), r1, widths[k], 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
        c2 = bf_model_add_batchnorm(m, CB_NAME("bn2"), c2, 1e-5f, 0.1f);
        int sc = in;
        if (k == 1) {
            sc = bf_model_add_conv(m, CB_NAME("downsample"), in, widths[k], 1, 2, 0, 1, 0, BF_INIT_UNIFORM_FAN_IN);
            sc = bf_model_add_batchnorm(m, CB_NAME("downsample.bn"), sc, 1e-5f, 0.1f);
        }
        int sum = bf_model_add_add(m, CB_NAME("add"), c2, sc);
        in = bf_model_add_relu(m, CB_NAME("relu"), sum);
#undef CB_NAME
    }
    int f = bf_model_add_flatten(m, "flat", in);
    bf_model_add_linear(m, "head", f, CB_K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    CHECK(m->num_param_floats == net->num_param_floats, "exact: same parameter count %zu vs %zu", m->num_param_floats,
          net->num_param_floats);
    /* The engine gets the BU-TD parameters, matched by name. */
    int matched = 0;
    int *match = malloc((size_t)net->num_params * sizeof(int));
    for (int p = 0; p < net->num_params; p++) {
        match[p] = -1;
        for (int q = 0; q < m->num_params; q++)
            if (strcmp(net->params[p].name, m->params[q].name) == 0 && net->params[p].count == m->params[q].count)
                match[p] = q;
        CHECK(match[p] >= 0, "exact: the engine has a parameter %s", net->params[p].name);
        if (match[p] < 0) continue;
        matched++;
        CHECK_OK(b->ops->copy(b, m->param_data + m->params[match[p]].offset, net->param_data + net->params[p].offset,
                              net->params[p].count * sizeof(float)));
    }
    float xh[N * CB_C * CB_H * CB_W];
    bf_test_fill_uniform(xh, sizeof xh / sizeof xh[0], -1.0f, 1.5f, 61);
    int32_t labels[N] = {0, 3, 4, 1, 2};
    float *x = bf_test_upload(b, xh, sizeof xh / sizeof xh[0]);
    float *ch = cb_update(b, net, x, NULL, labels, N);
    float *dle = NULL;
    const float *le = NULL;
    CHECK_OK(bf_alloc(b, N * CB_K * sizeof(float), (void **)&dle));
    m->training = 1;
    CHECK_OK(bf_model_forward(m, x, &le));
    ce_grad(b, N, CB_K, le, labels, 1.0f / N, dle); /* the engine's mean-loss convention */
    CHECK_OK(bf_model_backward(m, dle));
    float *bp = bf_test_download(b, m->grad_data, m->num_param_floats);
    int norms = 0;
    double worst = 0;
    for (int p = 0; p < net->num_params; p++) {
        if (match[p] < 0) continue;
        const bf_param *q = &net->params[p];
        double e = rel_error(ch + q->offset, bp + m->params[match[p]].offset, q->count);
        if (e > worst) worst = e;
        norms += cb_is_norm_param(net, p);
        CHECK(e <= 1e-5, "exact: Counter-Hebb %s vs engine backprop: relative error %.3g", q->name, e);
    }
    CHECK(matched == net->num_params && norms == 12, "exact: %d of %d parameters compared, %d of them gamma or beta",
          matched, net->num_params, norms);
    printf("ch_bn = exact, unguided: Counter-Hebb vs engine backprop, %d tensors (%d gamma/beta): worst relative "
           "error %.3g\n", matched, norms, worst);
    free(match), free(ch), free(bp);
    bf_free(b, x), bf_free(b, dle);
    bf_model_destroy(m);
    bf_butd_destroy(net);
}

/* exact, guided (and separate symmetric weights): Counter-Hebb = the BU-TD backprop mode, and
 * central finite differences of the batch-mean loss with the instruction held fixed. */
static void cb_exact_guided(bf_backend *b, int shared) {
    enum { N = 6 };
    const char *what = shared ? "guided, shared" : "guided, separate symmetric";
    bf_butd_net *net = cb_resnet(b, N, BF_BUTD_COUNTER_HEBB, BF_BUTD_CH_BN_EXACT, shared, !shared, 1);
    bf_butd_net *bpn = cb_resnet(b, N, BF_BUTD_BACKPROP, BF_BUTD_CH_BN_EXACT, shared, !shared, 1);
    if (!net || !bpn) return;
    float xh[N * CB_C * CB_H * CB_W];
    bf_test_fill_uniform(xh, sizeof xh / sizeof xh[0], -1.0f, 1.5f, 62);
    float *x = bf_test_upload(b, xh, sizeof xh / sizeof xh[0]);
    int32_t tasks[N] = {0, 1, 2, 0, 1, 2}, labels[N] = {0, 1, 2, 3, 4, 0};
    float *ch = cb_update(b, net, x, tasks, labels, N);
    float *bp = cb_update(b, bpn, x, tasks, labels, N);
    /* the instruction must close some gates, or this would not test GaLU */
    float *a1 = bf_test_download(b, net->act[1], (size_t)N * net->layers[0].out_size);
    size_t closed = 0, count = (size_t)N * net->layers[0].out_size;
    for (size_t i = 0; i < count; i++) closed += a1[i] <= 0.0f;
    CHECK(closed > 0 && closed < count, "%s: %zu of %zu stem units off", what, closed, count);
    free(a1);
    double worst = 0;
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        if (strstr(q->name, "back_weight")) continue; /* B: checked against W's update below */
        double e = rel_error(ch + q->offset, bp + q->offset, q->count);
        if (e > worst) worst = e;
        CHECK(e <= 1e-5, "%s: Counter-Hebb %s vs backprop mode: relative error %.3g", what, q->name, e);
    }
    printf("ch_bn = exact, %s: Counter-Hebb vs backprop mode: worst relative error %.3g\n", what, worst);
    if (!shared) /* the mirror: every conv's B gets W's update (same layout); the head's is transposed */
        for (int i = 0; i < net->num_layers; i++) {
            const bf_butd_layer *l = &net->layers[i];
            int pairs[3][2] = {{l->w, l->td_w}, {l->w2, l->td_w2}, {l->wd, l->td_wd}};
            for (int k = 0; k < 3 && l->kind != BF_BUTD_LINEAR; k++) {
                if (pairs[k][0] < 0 || pairs[k][1] < 0) continue;
                const bf_param *pw = &net->params[pairs[k][0]], *pt = &net->params[pairs[k][1]];
                CHECK(memcmp(ch + pw->offset, ch + pt->offset, pw->count * sizeof(float)) == 0,
                      "%s: %s gets the weight's update", what, pt->name);
            }
        }
    /* Finite differences of the batch-mean loss (batch statistics included): the gates stay those
     * of one instruction pass, as in the update. */
    if (shared) {
        CHECK_OK(bf_butd_instruct(net, tasks));
        float *w = bf_test_download(b, net->param_data, net->num_param_floats);
        float *dl = NULL;
        const float *logits = NULL;
        CHECK_OK(bf_alloc(b, N * CB_K * sizeof(float), (void **)&dl));
        int checked = 0, bad = 0;
        for (int p = 0; p < net->num_params; p++) {
            const bf_param *q = &net->params[p];
            for (int t = 0; t < 2; t++) {
                size_t i = q->offset + (size_t)((t * 7919u + 5u) % q->count);
                const float eps = 1e-3f;
                double loss[2];
                for (int side = 0; side < 2; side++) {
                    float v = w[i] + (side ? -eps : eps);
                    CHECK_OK(bf_to_device(b, net->param_data + i, &v, sizeof v));
                    CHECK_OK(bf_butd_forward(net, x, &logits));
                    loss[side] = ce_grad(b, N, CB_K, logits, labels, 1.0f, dl);
                }
                CHECK_OK(bf_to_device(b, net->param_data + i, &w[i], sizeof w[i]));
                double fd = (loss[0] - loss[1]) / (2.0 * eps);
                checked++;
                if (fabs(fd - ch[i]) > 2e-3 + 3e-2 * fabs(fd)) {
                    bad++;
                    CHECK(0, "%s: finite difference of %s[%zu]: %.6g vs Counter-Hebb %.6g", what, q->name,
                          i - q->offset, fd, ch[i]);
                }
            }
        }
        CHECK(bad == 0 && checked >= 2 * net->num_params, "%s: %d of %d finite differences agree", what,
              checked - bad, checked);
        printf("ch_bn = exact, %s: %d of %d finite differences agree (gamma and beta included)\n", what, checked - bad,
               checked);
        free(w);
        bf_free(b, dl);
    }
    free(ch), free(bp);
    bf_free(b, x);
    bf_butd_destroy(net);
    bf_butd_destroy(bpn);
}

/* independent: the reference's error pass. On a plain conv chain (c1 + BN, c2 + BN, head) the
 * TD activity below c2 is GaLU(BN_td(c2^T td[2]), a1), the TD copy normalising with the error
 * signal's own batch statistics (gamma 1, beta 0); on the ResNet gamma and beta get no update,
 * the head's update is backprop's and the weights below differ from backprop's. */
static void cb_independent(bf_backend *b) {
    enum { N = 6, CH1 = 3, CH2 = 4 };
    {
        bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 1, .batch_norm = 1,
                               .ch_bn = BF_BUTD_CH_BN_INDEPENDENT, .seed = 29};
        bf_butd_net *net = NULL;
        CHECK_OK(bf_butd_create(b, CB_C, CB_H, CB_W, N, &opt, &net));
        if (!net) return;
        bf_butd_add_conv(net, "c1", CH1, 3, 1, 1, 1, 1);
        bf_butd_add_conv(net, "c2", CH2, 3, 2, 1, 1, 1);
        CHECK_OK(bf_butd_finalize(net, CB_K));
        float xh[N * CB_C * CB_H * CB_W];
        bf_test_fill_uniform(xh, sizeof xh / sizeof xh[0], -1.0f, 1.5f, 63);
        float *x = bf_test_upload(b, xh, sizeof xh / sizeof xh[0]);
        int32_t labels[N] = {1, 2, 3, 4, 0, 1};
        float *g = cb_update(b, net, x, NULL, labels, N);
        const bf_butd_layer *l2 = &net->layers[1];
        size_t n1 = (size_t)N * l2->in_size;
        float *below = NULL;
        CHECK_OK(bf_alloc(b, n1 * sizeof(float), (void **)&below));
        CHECK_OK(b->ops->conv2d_backward_data(b, &l2->conv, net->td[2], net->param_data + net->params[l2->w].offset,
                                              below));
        float *t = bf_test_download(b, below, n1), *a1 = bf_test_download(b, net->act[1], n1);
        float *td1 = bf_test_download(b, net->td[1], n1);
        int hw = l2->conv.h_in * l2->conv.w_in;
        double worst = 0, spread = 0;
        for (int c = 0; c < CH1; c++) {
            double mean = 0, var = 0;
            for (int j = 0; j < N; j++)
                for (int p = 0; p < hw; p++) mean += t[((size_t)j * CH1 + c) * hw + p];
            mean /= (double)N * hw;
            for (int j = 0; j < N; j++)
                for (int p = 0; p < hw; p++) {
                    double d = t[((size_t)j * CH1 + c) * hw + p] - mean;
                    var += d * d;
                }
            var /= (double)N * hw; /* biased, as BatchNorm2d normalises */
            for (int j = 0; j < N; j++)
                for (int p = 0; p < hw; p++) {
                    size_t i = ((size_t)j * CH1 + c) * hw + p;
                    double want = a1[i] > 0 ? (t[i] - mean) / sqrt(var + 1e-5) : 0.0;
                    if (fabs(want) > spread) spread = fabs(want);
                    if (fabs(td1[i] - want) > worst) worst = fabs(td1[i] - want);
                }
        }
        CHECK(worst <= 1e-4 * (1 + spread) && spread > 0.5, "independent: TD activity below c2 = GaLU(BN_td(c2^T "
              "td), a1): max difference %.3g (values up to %.3g)", worst, spread);
        printf("ch_bn = independent, plain convs: the error pass's TD batch-norm against the host: max difference "
               "%.3g\n", worst);
        for (int p = 0; p < net->num_params; p++)
            if (cb_is_norm_param(net, p))
                for (size_t i = 0; i < net->params[p].count; i++)
                    CHECK(g[net->params[p].offset + i] == 0.0f, "independent: %s gets no update", net->params[p].name);
        free(t), free(a1), free(td1), free(g);
        bf_free(b, below), bf_free(b, x);
        bf_butd_destroy(net);
    }
    for (int guided = 0; guided < 2; guided++) {
        const char *what = guided ? "guided" : "unguided";
        bf_butd_net *net = cb_resnet(b, N, BF_BUTD_COUNTER_HEBB, BF_BUTD_CH_BN_INDEPENDENT, 1, 0, guided);
        bf_butd_net *bpn = cb_resnet(b, N, BF_BUTD_BACKPROP, BF_BUTD_CH_BN_EXACT, 1, 0, guided);
        if (!net || !bpn) return;
        float xh[N * CB_C * CB_H * CB_W];
        bf_test_fill_uniform(xh, sizeof xh / sizeof xh[0], -1.0f, 1.5f, 64);
        float *x = bf_test_upload(b, xh, sizeof xh / sizeof xh[0]);
        int32_t tasks[N] = {2, 1, 0, 0, 1, 2}, labels[N] = {4, 1, 2, 3, 0, 1};
        float *before = bf_test_download(b, net->param_data, net->num_param_floats);
        float *ch = cb_update(b, net, x, tasks, labels, N);
        float *bp = cb_update(b, bpn, x, tasks, labels, N);
        int finite = 1, differ = 0, zero = 1;
        for (size_t i = 0; i < net->num_param_floats; i++) finite &= isfinite(ch[i]) != 0;
        CHECK(finite, "independent, %s: the update is finite", what);
        for (int p = 0; p < net->num_params; p++) {
            const bf_param *q = &net->params[p];
            double e = rel_error(ch + q->offset, bp + q->offset, q->count);
            if (cb_is_norm_param(net, p)) {
                for (size_t i = 0; i < q->count; i++) zero &= ch[q->offset + i] == 0.0f;
            } else if (strncmp(q->name, "head.", 5) == 0) {
                CHECK(e <= 1e-6, "independent, %s: %s (no batch-norm above) = backprop: %.3g", what, q->name, e);
            } else {
                differ += e > 1e-2;
            }
        }
        CHECK(zero, "independent, %s: every gamma and beta gets a zero update", what);
        CHECK(differ >= 5, "independent, %s: %d of the 6 conv weights' updates differ from backprop by > 1%%", what,
              differ);
        printf("ch_bn = independent, %s: gamma/beta updates zero, %d of 6 conv weights differ from backprop\n", what,
               differ);
        /* an SGD step from this update leaves gamma and beta as they were */
        CHECK_OK(b->ops->axpy(b, -0.1f, net->grad_data, net->param_data, net->num_param_floats));
        float *after = bf_test_download(b, net->param_data, net->num_param_floats);
        for (int p = 0; p < net->num_params; p++)
            if (cb_is_norm_param(net, p))
                CHECK(memcmp(after + net->params[p].offset, before + net->params[p].offset,
                             net->params[p].count * sizeof(float)) == 0,
                      "independent, %s: %s unchanged by a step", what, net->params[p].name);
        free(before), free(after), free(ch), free(bp);
        bf_free(b, x);
        bf_butd_destroy(net);
        bf_butd_destroy(bpn);
    }
}

/* ch_bn = independent needs batch-norm and Counter-Hebb. */
static void cb_refusals(bf_backend *b) {
    bf_butd_options opt = {.learning = BF_BUTD_BACKPROP, .shared_weights = 1, .batch_norm = 1,
                           .ch_bn = BF_BUTD_CH_BN_INDEPENDENT, .seed = 1};
    bf_butd_net *net = NULL;
    bf_status s = bf_butd_create(b, CB_C, CB_H, CB_W, 2, &opt, &net);
    CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "ch_bn = independent"), "independent with backprop refused: %s",
          bf_last_error());
    bf_butd_destroy(net);
    net = NULL;
    opt.learning = BF_BUTD_COUNTER_HEBB, opt.batch_norm = 0;
    s = bf_butd_create(b, CB_C, CB_H, CB_W, 2, &opt, &net);
    CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "batch_norm = true"), "independent without batch-norm refused: %s",
          bf_last_error());
    bf_butd_destroy(net);
}

static void run_chbn_cases(bf_backend *b) {
    cb_exact_vs_engine(b);
    cb_exact_guided(b, 1);
    cb_exact_guided(b, 0);
    cb_independent(b);
    cb_refusals(b);
}
