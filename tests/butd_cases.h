/* butd_cases.h - the BU-TD checks, written once against a backend: test_butd_equivalence.c runs
 * them on the CPU, test_butd_equivalence_cuda.c on a GPU. Included by exactly one test file each. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/model.h"
#include "butd_test_util.h"
#include "testutil.h"

/* Case A: an unguided conv net with stride-2 convs, shared weights, no BN: the Counter-Hebb update
 * equals the gradient of the engine's own model (bf_model backward) to 1e-5 relative. */
static void case_ch_equals_engine_backprop(bf_backend *b) {
    enum { N = 4, C = 2, H = 9, K = 5 };
    bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 1, .seed = 7};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, C, H, H, N, &opt, &net));
    bf_butd_add_conv(net, "c1", 4, 3, 2, 1, 1, 1); /* 9 -> 5 */
    bf_butd_add_conv(net, "c2", 6, 3, 2, 0, 1, 1); /* 5 -> 2 */
    bf_butd_add_linear(net, "fc", 8, 1);
    CHECK_OK(bf_butd_finalize(net, K));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 7, &m));
    int l = bf_model_add_conv(m, "c1", BF_MODEL_INPUT, 4, 3, 2, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    l = bf_model_add_relu(m, "r1", l);
    l = bf_model_add_conv(m, "c2", l, 6, 3, 2, 0, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    l = bf_model_add_relu(m, "r2", l);
    l = bf_model_add_flatten(m, "flat", l);
    l = bf_model_add_linear(m, "fc", l, 8, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    l = bf_model_add_relu(m, "r3", l);
    bf_model_add_linear(m, "head", l, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    CHECK(m->num_param_floats == net->num_param_floats, "same parameter count %zu vs %zu", m->num_param_floats,
          net->num_param_floats);
    /* Same layout (weight then bias per layer): give the engine the BU-TD weights. */
    CHECK_OK(b->ops->copy(b, m->param_data, net->param_data, net->num_param_floats * sizeof(float)));

    float xh[N * C * H * H];
    bf_test_fill_uniform(xh, sizeof xh / sizeof xh[0], -1.0f, 1.0f, 11);
    int32_t labels[N] = {0, 3, 4, 1};
    float *x = bf_test_upload(b, xh, sizeof xh / sizeof xh[0]);
    float *dl = NULL, *dl_engine = NULL;
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dl));
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dl_engine));

    const float *logits = NULL, *logits_engine = NULL;
    CHECK_OK(bf_butd_forward(net, x, &logits));
    ce_grad(b, N, K, logits, labels, 1.0f, dl); /* per sample */
    CHECK_OK(bf_butd_backward(net, dl));
    m->training = 1;
    CHECK_OK(bf_model_forward(m, x, &logits_engine));
    ce_grad(b, N, K, logits_engine, labels, 1.0f / N, dl_engine); /* the engine's mean-loss convention */
    CHECK_OK(bf_model_backward(m, dl_engine));

    float *ch = bf_test_download(b, net->grad_data, net->num_param_floats);
    float *bp = bf_test_download(b, m->grad_data, m->num_param_floats);
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        double e = rel_error(ch + q->offset, bp + q->offset, q->count);
        CHECK(e <= 1e-5, "case A: Counter-Hebb %s vs engine backprop: relative error %.3g", q->name, e);
    }
    free(ch);
    free(bp);
    bf_free(b, x);
    bf_free(b, dl);
    bf_free(b, dl_engine);
    bf_model_destroy(m);
    bf_butd_destroy(net);
}

static bf_butd_net *guided_net(bf_backend *b, int n, bf_butd_learning learning, int shared, int symmetric) {
    bf_butd_options opt = {.learning = learning, .shared_weights = shared, .symmetric_init = symmetric, .guided = 1,
                           .num_tasks = 3, .task_embedding = 6, .seed = 3};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 1, 12, 12, n, &opt, &net));
    bf_butd_add_conv(net, "core_net.0", 4, 3, 1, 0, 1, 1);  /* 12 -> 10 */
    bf_butd_add_conv(net, "core_net.1", 4, 2, 2, 0, 4, 1);  /* depthwise, stride 2: 10 -> 5 */
    bf_butd_add_conv(net, "core_net.2", 6, 3, 2, 1, 1, 1);  /* stride 2, pad 1: 5 -> 3 */
    bf_butd_add_block(net, "core_net.3", 6, 1);             /* residual block, identity shortcut */
    bf_butd_add_linear(net, "core_net.4", 10, 1);
    CHECK_OK(bf_butd_finalize(net, 5));
    return net;
}

/* Case B: a guided multi-task conv net (instruction pass, GaLU) with stride-2 and depthwise convs
 * and a residual block:
 * the Counter-Hebb update is the gradient of the batch-mean loss with the instruction masks held
 * fixed (central finite differences), and equals the backprop mode (the engine's backward ops). */
static void case_guided(bf_backend *b) {
    enum { N = 6, K = 5 };
    bf_butd_net *net = guided_net(b, N, BF_BUTD_COUNTER_HEBB, 1, 0);
    bf_butd_net *bpn = guided_net(b, N, BF_BUTD_BACKPROP, 1, 0);
    float xh[N * 144];
    bf_test_fill_uniform(xh, N * 144, -1.0f, 1.5f, 5);
    float *x = bf_test_upload(b, xh, N * 144);
    int32_t tasks[N] = {0, 1, 2, 0, 1, 2}, labels[N] = {0, 1, 2, 3, 4, 0};
    float *dl = NULL;
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dl));
    const float *logits = NULL;
    CHECK_OK(bf_butd_instruct(net, tasks));
    CHECK_OK(bf_butd_forward(net, x, &logits));
    /* the instruction must close some gates, or this would not test GaLU */
    float *a1 = bf_test_download(b, net->td[1], (size_t)N * net->layers[0].out_size);
    size_t closed = 0;
    for (size_t i = 0; i < (size_t)N * net->layers[0].out_size; i++) closed += a1[i] <= 0.0f;
    CHECK(closed > 0 && closed < (size_t)N * net->layers[0].out_size, "case B: the instruction closes %zu gates", closed);
    free(a1);
    ce_grad(b, N, K, logits, labels, 1.0f, dl);
    CHECK_OK(bf_butd_backward(net, dl));
    float *ch = bf_test_download(b, net->grad_data, net->num_param_floats);
    CHECK_OK(bf_butd_instruct(bpn, tasks));
    CHECK_OK(bf_butd_forward(bpn, x, &logits));
    ce_grad(b, N, K, logits, labels, 1.0f, dl);
    CHECK_OK(bf_butd_backward(bpn, dl));
    float *bp = bf_test_download(b, bpn->grad_data, bpn->num_param_floats);
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        double e = rel_error(ch + q->offset, bp + q->offset, q->count);
        CHECK(e <= 1e-5, "case B: Counter-Hebb %s vs backprop mode: relative error %.3g", q->name, e);
    }
    /* Finite differences: re-instruct once, then only the BU pass sees the perturbed weights. */
    CHECK_OK(bf_butd_instruct(net, tasks));
    float *w = bf_test_download(b, net->param_data, net->num_param_floats);
    int checked = 0, bad = 0;
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        for (int t = 0; t < 3; t++) {
            size_t i = q->offset + (size_t)((t * 7919u + 13u) % q->count);
            const float eps = 1e-3f; /* small: a ReLU kink within eps would spoil the difference */
            double loss[2];
            for (int side = 0; side < 2; side++) {
                float v = w[i] + (side ? -eps : eps);
                CHECK_OK(bf_to_device(b, net->param_data + i, &v, sizeof v));
                CHECK_OK(bf_butd_forward(net, x, &logits));
                loss[side] = ce_grad(b, N, K, logits, labels, 1.0f, dl);
            }
            CHECK_OK(bf_to_device(b, net->param_data + i, &w[i], sizeof w[i]));
            double fd = (loss[0] - loss[1]) / (2.0 * eps);
            checked++;
            if (fabs(fd - ch[i]) > 1e-3 + 2e-2 * fabs(fd)) {
                bad++;
                CHECK(0, "case B: finite difference of %s[%zu]: %.6g vs Counter-Hebb %.6g", q->name,
                      i - q->offset, fd, ch[i]);
            }
        }
    }
    CHECK(bad == 0 && checked > 20, "case B: %d of %d finite differences agree", checked - bad, checked);
    free(w);
    free(ch);
    free(bp);
    bf_free(b, x);
    bf_free(b, dl);
    bf_butd_destroy(net);
    bf_butd_destroy(bpn);
}

/* Case C: separate TD weights initialised symmetric: the TD weight starts as W^T, the W update
 * equals backprop's, and B gets the transposed update (so B stays W^T under Adam). */
static void case_separate_symmetric(bf_backend *b) {
    enum { N = 5, K = 5 };
    bf_butd_net *net = guided_net(b, N, BF_BUTD_COUNTER_HEBB, 0, 1);
    bf_butd_net *bpn = guided_net(b, N, BF_BUTD_BACKPROP, 0, 1);
    float *w = bf_test_download(b, net->param_data, net->num_param_floats);
    for (int i = 0; i < net->num_layers; i++) {
        const bf_butd_layer *l = &net->layers[i];
        const bf_param *pw = &net->params[l->w], *pt = &net->params[l->td_w];
        if (l->kind == BF_BUTD_BLOCK) {
            const bf_param *p2 = &net->params[l->w2], *t2 = &net->params[l->td_w2];
            CHECK(memcmp(w + t2->offset, w + p2->offset, p2->count * sizeof(float)) == 0,
                  "case C: %s conv2 back_weight starts as the weight", l->name);
        }
        int sym = 1;
        if (l->kind == BF_BUTD_LINEAR) {
            for (int r = 0; r < l->linear.out; r++)
                for (int c = 0; c < l->linear.in; c++)
                    sym &= w[pt->offset + (size_t)c * l->linear.out + r] == w[pw->offset + (size_t)r * l->linear.in + c];
        } else {
            sym = memcmp(w + pt->offset, w + pw->offset, pw->count * sizeof(float)) == 0;
        }
        CHECK(sym, "case C: %s back_weight starts as the transpose of the weight", l->name);
    }
    float xh[N * 144];
    bf_test_fill_uniform(xh, N * 144, -1.0f, 1.5f, 9);
    float *x = bf_test_upload(b, xh, N * 144);
    int32_t tasks[N] = {2, 1, 0, 0, 1}, labels[N] = {4, 1, 2, 3, 0};
    float *dl = NULL;
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dl));
    bf_butd_net *nets[2] = {net, bpn};
    float *g[2];
    for (int k = 0; k < 2; k++) {
        const float *logits = NULL;
        CHECK_OK(bf_butd_instruct(nets[k], tasks));
        CHECK_OK(bf_butd_forward(nets[k], x, &logits));
        ce_grad(b, N, K, logits, labels, 1.0f, dl);
        CHECK_OK(bf_butd_backward(nets[k], dl));
        g[k] = bf_test_download(b, nets[k]->grad_data, nets[k]->num_param_floats);
    }
    for (int i = 0; i < net->num_layers; i++) {
        const bf_butd_layer *l = &net->layers[i];
        const bf_param *pw = &net->params[l->w], *pt = &net->params[l->td_w];
        double e = rel_error(g[0] + pw->offset, g[1] + pw->offset, pw->count);
        CHECK(e <= 1e-5, "case C: %s Counter-Hebb (separate, symmetric) vs backprop: relative error %.3g", l->name, e);
        double worst = 0;
        for (size_t j = 0; j < pw->count; j++) {
            size_t tj = j;
            if (l->kind == BF_BUTD_LINEAR) {
                size_t r = j / (size_t)l->linear.in, c = j % (size_t)l->linear.in;
                tj = c * (size_t)l->linear.out + r;
            }
            double d = fabs((double)g[0][pt->offset + tj] - g[0][pw->offset + j]);
            if (d > worst) worst = d;
        }
        CHECK(worst == 0.0, "case C: %s back_weight update is the transposed weight update (max diff %.3g)", l->name, worst);
    }
    free(g[0]);
    free(g[1]);
    free(w);
    bf_free(b, x);
    bf_free(b, dl);
    bf_butd_destroy(net);
    bf_butd_destroy(bpn);
}

/* Case D: the Counter-Hebb ops against direct loops (grouped strided conv, linear with the mirror). */
static void case_ops_direct(bf_backend *b) {
    bf_linear_shape ls = {.n = 3, .in = 7, .out = 4};
    float bu[21], td[12];
    bf_test_fill_uniform(bu, 21, -1, 1, 21);
    bf_test_fill_uniform(td, 12, -1, 1, 22);
    float *dbu = bf_test_upload(b, bu, 21), *dtd = bf_test_upload(b, td, 12), *dw = NULL, *db = NULL, *dwt = NULL;
    CHECK_OK(bf_alloc(b, 28 * sizeof(float), (void **)&dw));
    CHECK_OK(bf_alloc(b, 4 * sizeof(float), (void **)&db));
    CHECK_OK(bf_alloc(b, 28 * sizeof(float), (void **)&dwt));
    CHECK_OK(b->ops->counter_hebb_linear(b, &ls, dbu, dtd, dw, db, dwt));
    float *hw = bf_test_download(b, dw, 28), *hb = bf_test_download(b, db, 4), *ht = bf_test_download(b, dwt, 28);
    for (int o = 0; o < 4; o++) {
        double sb = 0;
        for (int j = 0; j < 3; j++) sb += td[j * 4 + o] / 3.0;
        CHECK_CLOSE(hb[o], sb, 1e-6, 1e-5, "counter_hebb_linear bias");
        for (int i = 0; i < 7; i++) {
            double s = 0;
            for (int j = 0; j < 3; j++) s += (double)td[j * 4 + o] * bu[j * 7 + i] / 3.0;
            CHECK_CLOSE(hw[o * 7 + i], s, 1e-6, 1e-5, "counter_hebb_linear weight");
            CHECK(ht[i * 4 + o] == hw[o * 7 + i], "counter_hebb_linear mirror [%d,%d]", i, o);
        }
    }
    free(hw), free(hb), free(ht);
    bf_free(b, dbu), bf_free(b, dtd), bf_free(b, dw), bf_free(b, db), bf_free(b, dwt);

    bf_conv2d_shape s = {.n = 2, .c_in = 4, .h_in = 7, .w_in = 6, .c_out = 6, .k_h = 3, .k_w = 3, .stride = 2,
                         .pad = 1, .groups = 2};
    CHECK_OK(bf_conv2d_shape_init(&s));
    size_t nx = 2 * 4 * 7 * 6, ny = (size_t)2 * 6 * s.h_out * s.w_out, nw = 6 * 2 * 9;
    float *x = malloc(nx * sizeof(float)), *y = malloc(ny * sizeof(float));
    bf_test_fill_uniform(x, nx, -1, 1, 31);
    bf_test_fill_uniform(y, ny, -1, 1, 32);
    float *dx = bf_test_upload(b, x, nx), *dy = bf_test_upload(b, y, ny);
    CHECK_OK(bf_alloc(b, nw * sizeof(float), (void **)&dw));
    CHECK_OK(bf_alloc(b, 6 * sizeof(float), (void **)&db));
    CHECK_OK(bf_alloc(b, nw * sizeof(float), (void **)&dwt));
    CHECK_OK(b->ops->counter_hebb_conv2d(b, &s, dx, dy, dw, db, dwt));
    hw = bf_test_download(b, dw, nw), hb = bf_test_download(b, db, 6), ht = bf_test_download(b, dwt, nw);
    int cpg_in = 2, cpg_out = 3;
    for (int co = 0; co < 6; co++) {
        double sb = 0;
        for (int n = 0; n < 2; n++)
            for (int p = 0; p < s.h_out * s.w_out; p++) sb += y[((size_t)n * 6 + co) * s.h_out * s.w_out + p] / 2.0;
        CHECK_CLOSE(hb[co], sb, 1e-6, 1e-5, "counter_hebb_conv2d bias");
        int g = co / cpg_out;
        for (int ci = 0; ci < cpg_in; ci++)
            for (int kh = 0; kh < 3; kh++)
                for (int kw = 0; kw < 3; kw++) {
                    double acc = 0;
                    for (int n = 0; n < 2; n++)
                        for (int oh = 0; oh < s.h_out; oh++)
                            for (int ow = 0; ow < s.w_out; ow++) {
                                int ih = oh * 2 - 1 + kh, iw = ow * 2 - 1 + kw;
                                if (ih < 0 || ih >= 7 || iw < 0 || iw >= 6) continue;
                                acc += (double)y[(((size_t)n * 6 + co) * s.h_out + oh) * s.w_out + ow] *
                                       x[(((size_t)n * 4 + g * cpg_in + ci) * 7 + ih) * 6 + iw];
                            }
                    size_t wi = (((size_t)co * cpg_in + ci) * 3 + kh) * 3 + kw;
                    CHECK_CLOSE(hw[wi], acc / 2.0, 1e-5, 1e-5, "counter_hebb_conv2d weight (grouped, stride 2, pad 1)");
                    CHECK(ht[wi] == hw[wi], "counter_hebb_conv2d mirror");
                }
    }
    free(x), free(y), free(hw), free(hb), free(ht);
    bf_free(b, dx), bf_free(b, dy), bf_free(b, dw), bf_free(b, db), bf_free(b, dwt);
}

/* Case E: residual blocks (stride 2 with a 1x1 downsample, then an identity shortcut), shared
 * weights, no BN: Counter-Hebb equals the engine's backprop gradient to 1e-5 relative. */
static void case_residual_block(bf_backend *b) {
    enum { N = 3, C = 3, H = 8, K = 4 };
    bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 1, .seed = 17};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, C, H, H, N, &opt, &net));
    bf_butd_add_block(net, "layer1", 4, 2);
    bf_butd_add_block(net, "layer2", 4, 1);
    CHECK_OK(bf_butd_finalize(net, K));
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 17, &m));
    int in = BF_MODEL_INPUT;
    for (int k = 0; k < 2; k++) {
        int stride = k == 0 ? 2 : 1;
        int c1 = bf_model_add_conv(m, "conv1", in, 4, 3, stride, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
        int r1 = bf_model_add_relu(m, "relu1", c1);
        int c2 = bf_model_add_conv(m, "conv2", r1, 4, 3, 1, 1, 1, 0, BF_INIT_UNIFORM_FAN_IN);
        int sc = k == 0 ? bf_model_add_conv(m, "down", in, 4, 1, 2, 0, 1, 0, BF_INIT_UNIFORM_FAN_IN) : in;
        int sum = bf_model_add_add(m, "add", c2, sc);
        in = bf_model_add_relu(m, "relu", sum);
    }
    int f = bf_model_add_flatten(m, "flat", in);
    bf_model_add_linear(m, "head", f, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    CHECK(m->num_param_floats == net->num_param_floats, "case E: same parameter count %zu vs %zu",
          m->num_param_floats, net->num_param_floats);
    CHECK_OK(b->ops->copy(b, m->param_data, net->param_data, net->num_param_floats * sizeof(float)));
    float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1.0f, 1.0f, 41);
    int32_t labels[N] = {3, 0, 2};
    float *x = bf_test_upload(b, xh, N * C * H * H), *dl = NULL, *dle = NULL;
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dl));
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dle));
    const float *logits = NULL, *le = NULL;
    CHECK_OK(bf_butd_forward(net, x, &logits));
    ce_grad(b, N, K, logits, labels, 1.0f, dl);
    CHECK_OK(bf_butd_backward(net, dl));
    m->training = 1;
    CHECK_OK(bf_model_forward(m, x, &le));
    float *lh = bf_test_download(b, logits, N * K), *leh = bf_test_download(b, le, N * K);
    CHECK(rel_error(lh, leh, N * K) <= 1e-6, "case E: BU pass = the engine's forward (%.3g)", rel_error(lh, leh, N * K));
    ce_grad(b, N, K, le, labels, 1.0f / N, dle);
    CHECK_OK(bf_model_backward(m, dle));
    float *ch = bf_test_download(b, net->grad_data, net->num_param_floats);
    float *bp = bf_test_download(b, m->grad_data, m->num_param_floats);
    for (int p = 0; p < net->num_params; p++) {
        const bf_param *q = &net->params[p];
        double e = rel_error(ch + q->offset, bp + q->offset, q->count);
        CHECK(e <= 1e-5, "case E: Counter-Hebb %s vs engine backprop: relative error %.3g", q->name, e);
    }
    free(ch), free(bp), free(lh), free(leh);
    bf_free(b, x), bf_free(b, dl), bf_free(b, dle);
    bf_model_destroy(m);
    bf_butd_destroy(net);
}

/* Case F: noise_std > 0 (the reference's AddNoise) multiplies each weight's update by one scalar
 * (W and its separate B by different ones), not elementwise noise; a bias's update is left as it
 * is, as the reference leaves bias.grad. */
static void case_noisy_updates(bf_backend *b) {
    enum { N = 4, K = 5 };
    bf_butd_net *nets[2];
    for (int k = 0; k < 2; k++) {
        bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 0, .seed = 5,
                               .noise_std = k ? 0.3f : 0.0f};
        CHECK_OK(bf_butd_create(b, 1, 6, 6, N, &opt, &nets[k]));
        bf_butd_add_conv(nets[k], "c", 3, 3, 1, 0, 1, 1);
        bf_butd_add_linear(nets[k], "fc", 7, 1);
        CHECK_OK(bf_butd_finalize(nets[k], K));
    }
    float xh[N * 36];
    bf_test_fill_uniform(xh, N * 36, -1, 1, 51);
    float *x = bf_test_upload(b, xh, N * 36), *dl = NULL;
    int32_t labels[N] = {1, 2, 3, 4};
    CHECK_OK(bf_alloc(b, N * K * sizeof(float), (void **)&dl));
    float *g[2];
    for (int k = 0; k < 2; k++) {
        const float *logits = NULL;
        CHECK_OK(bf_butd_forward(nets[k], x, &logits));
        ce_grad(b, N, K, logits, labels, 1.0f, dl);
        CHECK_OK(bf_butd_backward(nets[k], dl));
        g[k] = bf_test_download(b, nets[k]->grad_data, nets[k]->num_param_floats);
    }
    double ratios[16];
    int nr = 0;
    for (int p = 0; p < nets[0]->num_params && nr < 16; p++) {
        const bf_param *q = &nets[0]->params[p];
        double ratio = 0, worst = 0;
        size_t big = 0;
        for (size_t j = 0; j < q->count; j++)
            if (fabs(g[0][q->offset + j]) > fabs(g[0][q->offset + big])) big = j;
        ratio = g[1][q->offset + big] / g[0][q->offset + big];
        for (size_t j = 0; j < q->count; j++) {
            double d = fabs(g[1][q->offset + j] - ratio * g[0][q->offset + j]);
            if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-5 * fabs(ratio * g[0][q->offset + big]) + 1e-7, "case F: %s noisy update = %.4f x the update",
              q->name, ratio);
        const char *dot = strrchr(q->name, '.');
        if (dot && !strcmp(dot, ".bias")) {
            CHECK(fabs(ratio - 1.0) < 1e-6, "case F: %s (a bias) keeps its update (factor %.6f)", q->name, ratio);
            continue;
        }
        CHECK(fabs(ratio - 1.0) > 1e-4 && ratio > 0, "case F: %s noise factor %.4f is not 1", q->name, ratio);
        ratios[nr++] = ratio;
    }
    CHECK(fabs(ratios[0] - ratios[1]) > 1e-6, "case F: W and B of a layer draw different factors (%.4f, %.4f)",
          ratios[0], ratios[1]);
    free(g[0]), free(g[1]);
    bf_free(b, x), bf_free(b, dl);
    bf_butd_destroy(nets[0]);
    bf_butd_destroy(nets[1]);
}

static void run_butd_cases(bf_backend *b) {
    case_noisy_updates(b);
    case_residual_block(b);
    case_ops_direct(b);
    case_ch_equals_engine_backprop(b);
    case_guided(b);
    case_separate_symmetric(b);
}
