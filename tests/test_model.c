/* test_model.c - the model zoo and the layer graph:
 *   - parameter counts and state_dict names of VGG-6/11/16 and ResNet-18/50 against torchvision
 *     and the FlexNet spec (VGG-16-BN, K=100, 224x224: 134,678,692);
 *   - the memory plan of the zoo's networks: no gradient shares a byte with a live activation or
 *     another live gradient (check_memory_plan);
 *   - a finite-difference check of a whole residual network's parameter gradients, which tests
 *     the backward plumbing (gradients placed over dead activations, accumulation where a tensor
 *     has two consumers, in-place ReLU) on top of the per-op checks of test_ops_grad;
 *   - dropout masks keyed by the sample's place (sample_offset): the same again at the same
 *     offset, other masks at another (test_sample_draws checks what they are). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "layers.h"
#include "testutil.h"

static bf_model *plan(bf_arch arch, int classes, int c, int hw, int batchnorm) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = arch;
    cfg.model.batchnorm = batchnorm;
    bf_model *m = NULL;
    bf_status s = bf_model_build(NULL, &cfg.model, (bf_shape){2, c, hw, hw}, classes, 1, &m);
    CHECK(s == BF_OK, "planning %s: %s", bf_arch_name(arch), bf_last_error());
    return m;
}

static int has_param(const bf_model *m, const char *name, int64_t d0) {
    for (int i = 0; i < m->num_params; i++)
        if (!strcmp(m->params[i].name, name)) return m->params[i].shape[0] == d0;
    for (int i = 0; i < m->num_buffers; i++)
        if (!strcmp(m->buffers[i].name, name)) return m->buffers[i].shape[0] == d0;
    return 0;
}

static void test_parameter_counts(void) {
    struct { bf_arch arch; int classes, c, hw; size_t params; } cases[] = {
        {BF_ARCH_VGG16, 100, 3, 224, 134678692},   /* flexnet.md 2.1 */
        {BF_ARCH_VGG16, 1000, 3, 224, 138365992},  /* flexnet.md 2.1, torchvision vgg16_bn */
        {BF_ARCH_VGG11, 1000, 3, 224, 132868840},  /* torchvision vgg11_bn */
        /* VGG-6, FlexNet's first two blocks (flexnet.md 2.1), worked out by hand: convs 1,792 + 36,928
         * + 73,856 + 147,584, BN 768, then the classifier. 32x32: flatten 128*8*8 = 8192 > 4096, so
         * 8192-4096-4096-10; 28x28 digits: flatten 6272 -> 4096-4096-10 (conv1 640 with one channel);
         * 16x16: flatten 2048 <= 4096, the hidden width shrinks to 2048 */
        {BF_ARCH_VGG6, 10, 3, 32, 260160 + 768 + 8192 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10},
        {BF_ARCH_VGG6, 10, 1, 28, 259008 + 768 + 6272 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10},
        {BF_ARCH_VGG6, 10, 3, 16, 260160 + 768 + 2048 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10},
        {BF_ARCH_RESNET18, 1000, 3, 224, 11689512},/* torchvision resnet18 */
        {BF_ARCH_RESNET50, 1000, 3, 224, 25557032},/* torchvision resnet50 */
        /* PlasticFlex VGG-11 on CIFAR-10 (plasticflex.md section 4: about 13.25 M, fc1 0.525 M) */
        {BF_ARCH_PF_VGG11, 10, 3, 32, 13253834},
        /* PlasticFlex's SimpleFlexNet (plasticflex.md section 4) on CIFAR-10, by hand: convs 3->16, 16->32,
         * 32->64, 64->128 (448 + 4,640 + 18,496 + 73,856), two pools to 8x8, fc1 8192->128, fc2, fc3 */
        {BF_ARCH_PF_SIMPLE_FLEX, 10, 3, 32, 97440 + 8192 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10},
        /* ... and SimpleConvNet: convs to 32, 64, 128, 256 (896 + 18,496 + 73,856 + 295,168), four pools
         * to 2x2, fc1 1024->128, fc2 128->10 */
        {BF_ARCH_PF_SIMPLE_CONV, 10, 3, 32, 388416 + 1024 * 128 + 128 + 128 * 10 + 10},
        /* CIFAR-10 VGG-16: flatten 512 <= 4096, so the classifier is 512-512-10 (flexnet.md 2.1) */
        {BF_ARCH_VGG16, 10, 3, 32, 14714688 + 8448 + 512 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10},
        /* the CIFAR ResNets (6n + 2), by hand for n = 3: stem 432 + 32; stage 1: 3 x (2 x 2,304 + 64);
         * stage 2: 4,608 + 9,216 + 128 + the projection 512 + 64, then 2 x (2 x 9,216 + 128); stage 3:
         * 18,432 + 36,864 + 256 + 2,048 + 128, then 2 x (2 x 36,864 + 256); fc 650. He et al.'s
         * option A (no projection weights) has 269,722 of them: 2,752 fewer */
        {BF_ARCH_RESNET20, 10, 3, 32, 464 + 14016 + 51648 + 205696 + 650},
        {BF_ARCH_RESNET56, 10, 3, 32, 855770},  /* the same sums with n = 9 */
        {BF_ARCH_RESNET110, 100, 3, 32, 1730714 + 90 * 65},  /* n = 18, with a 100-way fc: 90 more outputs of 64 + 1 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_model *m = plan(cases[i].arch, cases[i].classes, cases[i].c, cases[i].hw, 1);
        if (!m) continue;
        CHECK(m->num_param_floats == cases[i].params, "%s K=%d %dx%d: %zu parameters, expected %zu",
              bf_arch_name(cases[i].arch), cases[i].classes, cases[i].hw, cases[i].hw, m->num_param_floats,
              cases[i].params);
        bf_model_destroy(m);
    }
    bf_model *vgg = plan(BF_ARCH_VGG16, 100, 3, 224, 1);
    if (vgg) {
        CHECK(has_param(vgg, "features.0.weight", 64) && has_param(vgg, "features.0.bias", 64) &&
                  has_param(vgg, "features.1.weight", 64) && has_param(vgg, "features.1.running_var", 64) &&
                  has_param(vgg, "features.40.weight", 512) && has_param(vgg, "classifier.0.weight", 4096) &&
                  has_param(vgg, "classifier.3.weight", 4096) && has_param(vgg, "classifier.6.bias", 100),
              "VGG-16 state_dict names follow torchvision's vgg16_bn");
        bf_shape s = bf_model_shape_of(vgg, vgg->num_layers - 1);
        /* a chain: at most two gradients live at once (dout and din of conv1_2, 64x224x224 each), and
         * all but the first few (the classifier and conv5, 1.1 MB at batch 2) lie over dead activations */
        const size_t largest = 2 * 64 * 224 * 224 * sizeof(float);
        CHECK(s.c == 100 && vgg->grad_live_bytes == 2 * largest && vgg->grad_bytes < largest / 10,
              "VGG-16 logits %d; gradients: %zu bytes live at most (expected %zu), %zu beyond the activations (expected "
              "under %zu)", s.c, vgg->grad_live_bytes, 2 * largest, vgg->grad_bytes, largest / 10);
        CHECK(vgg->grad_scratch_floats == 0,
              "a chain needs no accumulation scratch (%zu floats planned)", vgg->grad_scratch_floats);
        bf_model_destroy(vgg);
    }
    bf_model *r50 = plan(BF_ARCH_RESNET50, 1000, 3, 224, 1);
    if (r50) {
        CHECK(has_param(r50, "conv1.weight", 64) && has_param(r50, "bn1.running_mean", 64) &&
                  has_param(r50, "layer1.0.downsample.0.weight", 256) && has_param(r50, "layer4.2.conv3.weight", 2048) &&
                  has_param(r50, "layer4.2.bn3.bias", 2048) && has_param(r50, "fc.weight", 1000),
              "ResNet-50 state_dict names follow torchvision");
        CHECK(r50->grad_scratch_floats == 2 * 256 * 56 * 56, /* batch 2 */
              "ResNet-50's accumulation scratch holds its largest shared output, a layer1 block's 256x56x56 (got %zu)",
              r50->grad_scratch_floats);
        bf_model_destroy(r50);
    }
}

/* [lo, hi) of a buffer of n elements of `size` bytes at p, as integers (NULL: empty). */
typedef struct span { uintptr_t lo, hi; const char *what; int layer; } span;
static span span_of(const void *p, size_t n, size_t size, const char *what, int layer) {
    uintptr_t lo = (uintptr_t)p;
    return (span){lo, p ? lo + n * size : lo, what, layer};
}
static int overlap(span a, span b) { return a.lo < b.hi && b.lo < a.hi && a.lo < a.hi && b.lo < b.hi; }

/* The buffers an activation of layer i occupies while it is kept: its output (unless it aliases
 * its input: an in-place ReLU, or lives until its consumer's forward alone: a batch-norm whose
 * neuron recomputes its charge), or with packed spikes their bits; a max-pool's argmax; a LIF/IF
 * layer's charge (unless it overwrites the input's output, which is then counted as that). */
static int kept_spans(const bf_model *m, int i, span *out) {
    const bf_layer *l = &m->layers[i];
    const size_t count = bf_shape_count(l->out_shape);
    int n = 0;
    if (l->spike_bits) out[n++] = span_of(l->spike_bits, (count + 31) / 32, sizeof(uint32_t), "spike bits", i);
    else if (!l->in_place && !l->out_forward_only) out[n++] = span_of(l->out, count, sizeof(float), "output", i);
    if (l->argmax) out[n++] = span_of(l->argmax, count, sizeof(int32_t), "argmax", i);
    if (l->neuron_charge && !l->charge_in_place) out[n++] = span_of(l->neuron_charge, count, sizeof(float), "charge", i);
    return n;
}

static int report_overlaps(const bf_model *m, const span *live, int n, int first_checked, const char *what,
                           const char *pass, int t) {
    for (int a = 0; a < first_checked; a++)
        for (int c = 0; c < n; c++)
            if (c != a && overlap(live[a], live[c])) {
                CHECK(0, "%s: during the %s of %s, the %s of %s overlaps the %s of %s", what, pass, m->layers[t].name,
                      live[a].what, m->layers[live[a].layer].name, live[c].what, m->layers[live[c].layer].name);
                return 1;
            }
    return 0;
}

/* Replays both passes over a model allocated by bf_model_finalize and checks that no two buffers
 * live at the same time share a byte, the workspace hint of the layer's pass included. Forward of layer t: what layers <= t keep, and the float
 * spikes of packed layers whose consumers have not all run. Backward of t: every gradient (and
 * flex backward scratch, and spikes restored from bits, live from their first reader's backward
 * on) against each other and against what that backward or a later one may read: what layers
 * <= t keep, and the logits. A wrong plan fails here, on the CPU, before it corrupts a step. */
static void check_memory_plan(const bf_model *m, const char *what) {
    const int L = m->num_layers;
    int *last_consumer = malloc((size_t)L * sizeof(int));
    span *live = malloc((6 * (size_t)L + 4) * sizeof(span));
    if (!last_consumer || !live) exit(1);
    for (int i = 0; i < L; i++) last_consumer[i] = -1;
    for (int t = 0; t < L; t++)
        for (int j = 0; j < m->layers[t].num_inputs; j++)
            if (m->layers[t].input[j] >= 0) last_consumer[m->layers[t].input[j]] = t;
    int bad = 0;
    for (int t = 0; t < L && !bad; t++) {
        int n = 0;
        for (int i = 0; i <= t; i++) {
            n += kept_spans(m, i, live + n);
            if ((m->layers[i].spike_bits || m->layers[i].out_forward_only) && last_consumer[i] >= t)
                live[n++] = span_of(m->layers[i].out, bf_shape_count(m->layers[i].out_shape), sizeof(float),
                                    m->layers[i].spike_bits ? "float spikes" : "forward-only output", i);
        }
        live[n++] = span_of(m->layers[t].fwd_scratch, bf_flex_forward_scratch_floats(m, t), sizeof(float),
                            "flex forward scratch", t);
        live[n++] = span_of(m->layers[t].ws_free[0], m->layers[t].ws_free_bytes[0], 1, "workspace hint", t);
        bad = report_overlaps(m, live, n, n, what, "forward", t);
    }
    for (int i = 0; i + 1 < L; i++)
        if (m->layers[i].relu_fused)
            CHECK(m->layers[i].dout == m->layers[i + 1].dout && m->layers[i + 1].relu_joined,
                  "%s: %s's gradient is its fused ReLU's", what, m->layers[i].name);
    for (int i = 0; i + 1 < L; i++)
        if (m->layers[i].flex_applies_bn)
            CHECK(m->layers[i].dout == m->layers[i + 1].dout && m->layers[i + 1].bn_in_flex &&
                      !m->layers[i + 1].bn_runs_neuron,
                  "%s: %s's gradient is its batch-norm's", what, m->layers[i].name);
    for (int i = 0; i + 1 < L; i++)
        if (m->layers[i].bn_runs_neuron)
            CHECK(m->layers[i].dout == m->layers[i + 1].dout && m->layers[i + 1].neuron_in_bn &&
                      m->layers[i + 1].input[0] == i,
                  "%s: %s's gradient is its neuron's", what, m->layers[i].name);
    for (int t = L - 1; t >= 0 && !bad; t--) {
        int n_grad = 0, n = 0;
        for (int i = 0; i < L - 1; i++) { /* gradients live while layer t's backward runs */
            /* a fused batch-norm's (or add's) gradient is its ReLU's or neuron's, live down to that layer's
             * backward, or down to the flex layer's before it that applies its dx */
            int from = m->layers[i].relu_joined || m->layers[i].neuron_in_bn ? m->layers[i].input[0] : i;
            if (m->layers[from].bn_in_flex) from = m->layers[from].input[0];
            if (from <= t && last_consumer[i] >= t && m->layers[i].num_consumers > 0 && !m->layers[i].relu_fused &&
                !m->layers[i].bn_runs_neuron && !m->layers[i].flex_applies_bn)
                live[n_grad++] = span_of(m->layers[i].dout, bf_shape_count(m->layers[i].out_shape), sizeof(float), "dout", i);
        }
        if (m->layers[t].bwd_scratch)
            live[n_grad++] = span_of(m->layers[t].bwd_scratch, bf_flex_backward_scratch_floats(m, t), sizeof(float),
                                     "flex scratch", t);
        for (int i = 0; i < t; i++) /* restored from their first reader's backward on (conservatively) */
            if (m->layers[i].spikes_unpacked && m->layers[i].unpack_before >= t)
                live[n_grad++] = span_of(m->layers[i].spikes_unpacked, bf_shape_count(m->layers[i].out_shape),
                                         sizeof(float), "restored spikes", i);
        live[n_grad++] = span_of(m->layers[t].ws_free[1], m->layers[t].ws_free_bytes[1], 1, "workspace hint", t);
        n = n_grad;
        for (int i = 0; i < L; i++) /* activations still to be read */
            if (i <= t || i == L - 1) n += kept_spans(m, i, live + n);
        bad = report_overlaps(m, live, n, n_grad, what, "backward", t);
    }
    free(last_consumer);
    free(live);
}

/* Sum of per-sample cross-entropy losses of the current parameters, in double. */
static double model_loss(bf_model *m, const float *x, const int32_t *labels, float *losses_dev) {
    const float *logits = NULL;
    bf_backend *b = m->backend;
    int n = m->batch;
    if (bf_model_forward(m, x, &logits) != BF_OK) return NAN;
    b->ops->softmax_xent(b, n, m->num_classes, logits, labels, 0.1f, 1.0f / n, losses_dev, NULL);
    float host[16];
    bf_to_host(b, host, losses_dev, (size_t)n * sizeof(float));
    double sum = 0;
    for (int i = 0; i < n; i++) sum += host[i];
    return sum / n;
}

static void test_residual_network_gradients(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return;
    enum { N = 4, C = 3, H = 8, K = 5 };
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, (bf_shape){N, C, H, H}, 7, &m));
    int x = bf_model_add_conv(m, "stem", BF_MODEL_INPUT, 6, 3, 1, 1, 1, 1, BF_INIT_UNIFORM_FAN_IN);
    x = bf_model_add_batchnorm(m, "stem_bn", x, 1e-5f, 0.1f);
    int trunk = bf_model_add_relu(m, "stem_relu", x); /* two consumers: the branch and the shortcut */
    int y = bf_model_add_conv(m, "branch.conv", trunk, 6, 3, 1, 1, 2, 0, BF_INIT_UNIFORM_FAN_IN);
    y = bf_model_add_batchnorm(m, "branch.bn", y, 1e-5f, 0.1f);
    y = bf_model_add_add(m, "add", y, trunk);
    /* max-pool before the ReLU (the same function): after a ReLU, windows of exact zeros tie, a
     * kink at the very point where the gradient is checked */
    y = bf_model_add_maxpool(m, "maxpool", y, 2, 2, 0);
    int p = bf_model_add_relu(m, "relu", y);
    int a = bf_model_add_avgpool(m, "avgpool", p, 3, 1, 1);
    a = bf_model_add_global_avgpool(m, "gap", a);
    a = bf_model_add_flatten(m, "flatten", a);
    a = bf_model_add_linear(m, "fc1", a, 10, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    a = bf_model_add_dropout(m, "drop", a, 0.3f);
    bf_model_add_linear(m, "fc2", a, K, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    CHECK_OK(bf_model_finalize(m));
    if (bf_model_build_status(m) != BF_OK || !m->param_data) return;
    CHECK(m->layers[2].in_place == 1 && m->layers[7].in_place == 1,
          "a ReLU whose input has one consumer runs in place (%d, %d)", m->layers[2].in_place, m->layers[7].in_place);
    check_memory_plan(m, "the residual network");

    float xh[N * C * H * H];
    bf_test_fill_uniform(xh, N * C * H * H, -1, 1, 3);
    int32_t lh[N] = {0, 3, 1, 4};
    float *xd = bf_test_upload(b, xh, N * C * H * H);
    int32_t *ld = NULL;
    float *losses = bf_test_upload(b, NULL, N), *dlogits = bf_test_upload(b, NULL, N * K);
    bf_alloc(b, sizeof lh, (void **)&ld);
    bf_to_device(b, ld, lh, sizeof lh);

    m->step = 6; /* fixes the dropout mask (one whose FD check stays clear of the ReLU kinks) */
    const float *logits = NULL;
    CHECK_OK(bf_model_forward(m, xd, &logits));
    CHECK_OK(b->ops->softmax_xent(b, N, K, logits, ld, 0.1f, 1.0f / N, losses, dlogits));
    CHECK_OK(bf_model_backward(m, dlogits));
    float *grads = bf_test_download(b, m->grad_data, m->num_param_floats);
    float *params = m->param_data; /* CPU backend: host memory */

    /* Central differences, and the one-sided differences on either side: where those two disagree
     * a ReLU or a max-pool switched inside the step (Caffe's "kink"), and the element is skipped. */
    int checked = 0, bad = 0, kinks = 0;
    double l0 = model_loss(m, xd, ld, losses);
    for (size_t i = 0; i < m->num_param_floats; i += 7) {
        float saved = params[i];
        const float h = 1e-3f;
        params[i] = saved + h;
        double lp = model_loss(m, xd, ld, losses);
        params[i] = saved - h;
        double lm = model_loss(m, xd, ld, losses);
        params[i] = saved;
        double numeric = (lp - lm) / (2 * h), forward = (lp - l0) / h, backward = (l0 - lm) / h;
        double analytic = grads[i], tol = 1e-3 + 2e-2 * fabs(analytic);
        if (fabs(forward - backward) > 2 * tol) {
            kinks++;
            continue;
        }
        checked++;
        if (fabs(numeric - analytic) > tol && bad++ < 5)
            fprintf(stderr, "param %zu: numeric %.6g analytic %.6g\n", i, numeric, analytic);
    }
    CHECK(checked > 50 && kinks < checked / 10, "residual network: %d parameters checked, %d skipped at kinks", checked, kinks);
    CHECK(bad == 0, "residual network: %d of %d parameter gradients disagree with finite differences", bad, checked);

    /* Dropout masks are keyed by the samples' place (a data-parallel rank's slice of the global batch). */
    float rank0[N * K], rank1[N * K], again[N * K];
    CHECK_OK(bf_model_forward(m, xd, &logits));
    memcpy(rank0, logits, sizeof rank0);
    m->sample_offset = N;
    CHECK_OK(bf_model_forward(m, xd, &logits));
    memcpy(rank1, logits, sizeof rank1);
    m->sample_offset = 0;
    CHECK_OK(bf_model_forward(m, xd, &logits));
    memcpy(again, logits, sizeof again);
    CHECK(memcmp(rank0, again, sizeof rank0) == 0, "the dropout mask repeats at the same sample offset");
    CHECK(memcmp(rank0, rank1, sizeof rank0) != 0, "the next slice of samples draws a dropout mask of its own");
    free(grads);
    bf_free(b, xd);
    bf_free(b, ld);
    bf_free(b, losses);
    bf_free(b, dlogits);
    bf_model_destroy(m);
    bf_backend_destroy(b);
}

/* [model] linear_init: torchvision's N(0, 0.01) with zero biases, or nn.Linear's own
 * U(+-1/sqrt(fan_in)) for weights and biases (FlexNet's reference keeps it). */
static void test_linear_init(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return;
    for (int pytorch = 0; pytorch <= 1; pytorch++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        cfg.model.arch = BF_ARCH_VGG6;
        cfg.model.linear_init_pytorch = pytorch;
        bf_model *m = NULL;
        CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){2, 3, 16, 16}, 10, 3, &m)); /* flatten 128*4*4 = 2048 */
        if (!m) continue;
        float *p = bf_test_download(b, m->param_data, m->num_param_floats);
        int wi = -1, bi = -1;
        for (int i = 0; i < m->num_params; i++) {
            if (!strcmp(m->params[i].name, "classifier.0.weight")) wi = i;
            if (!strcmp(m->params[i].name, "classifier.0.bias")) bi = i;
        }
        CHECK(p && wi >= 0 && bi >= 0, "classifier.0 weight and bias");
        if (p && wi >= 0 && bi >= 0) {
            const bf_param *w = &m->params[wi], *bias = &m->params[bi];
            double sum2 = 0, max_w = 0, max_b = 0, bound = 1.0 / sqrt((double)w->shape[1]);
            for (size_t i = 0; i < w->count; i++) {
                sum2 += (double)p[w->offset + i] * p[w->offset + i];
                max_w = fmax(max_w, fabs(p[w->offset + i]));
            }
            for (size_t i = 0; i < bias->count; i++) max_b = fmax(max_b, fabs(p[bias->offset + i]));
            double std = sqrt(sum2 / w->count);
            if (pytorch)
                CHECK(max_w <= bound && max_w > 0.99 * bound && max_b <= bound && max_b > 0.5 * bound &&
                          fabs(std - bound / sqrt(3.0)) < 0.02 * bound,
                      "pytorch_default: |w| <= 1/sqrt(2048) = %.4f (max %.4f, std %.5f), biases U too (max %.4f)", bound,
                      max_w, std, max_b);
            else
                CHECK(fabs(std - 0.01) < 0.0005 && max_b == 0, "normal: std %.5f (want 0.01), biases 0 (max %g)", std, max_b);
        }
        free(p);
        bf_model_destroy(m);
    }
    bf_backend_destroy(b);
}

/* Which layers the spiking rules applied to: every LIF/IF layer after a batch-norm keeps no charge
 * (recompute: its batch-norm's output lives in the forward-only region) or writes it over the
 * batch-norm's output; spikes of LIF, IF and STEP are packed unless rasters read them; CLAMP01's
 * outputs (not 0 or 1) never are. */
static void check_spiking_rules(const bf_model *m, const char *what, int raster, int recompute) {
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind != BF_LAYER_NEURON) continue;
        const int stateful = l->neuron.kind == BF_NEURON_LIF || l->neuron.kind == BF_NEURON_IF;
        const int after_bn = l->input[0] >= 0 && m->layers[l->input[0]].kind == BF_LAYER_BATCHNORM;
        if (stateful && after_bn && recompute)
            CHECK(l->charge_recomputed && !l->neuron_charge && !l->charge_in_place && m->layers[l->input[0]].out_forward_only,
                  "%s: %s keeps no charge, and its batch-norm's output lives until its forward alone", what, l->name);
        else if (stateful && after_bn)
            CHECK(l->charge_in_place && l->neuron_charge == m->layers[l->input[0]].out && !l->charge_recomputed,
                  "%s: the charge of %s overwrites its batch-norm's output", what, l->name);
        const int packable = l->neuron.kind != BF_NEURON_CLAMP01 && !raster;
        CHECK(packable == (l->spike_bits != NULL), "%s: %s's spikes %s packed", what, l->name,
              packable ? "are" : "are not");
    }
}

/* In a VGG chain the outputs above a conv are not written yet during its forward: its workspace
 * hint holds at least the next layer's output (which the overlap check shows is really free). */
static void check_vgg_hints(const bf_model *m, const char *what) {
    for (int t = 0; t + 2 < m->num_layers; t++) {
        const bf_layer *l = &m->layers[t], *next = &m->layers[t + 1];
        if ((l->kind != BF_LAYER_CONV && l->kind != BF_LAYER_FLEX) || next->in_place) continue;
        const size_t need = bf_shape_count(next->out_shape) * sizeof(float);
        CHECK(l->ws_free_bytes[0] >= need && l->ws_free[0] != NULL,
              "%s: the forward of %s hints %zu bytes of workspace, at least %s's output (%zu) expected", what, l->name,
              l->ws_free_bytes[0], next->name, need);
    }
}

/* The memory plan of the zoo's networks, allocated on the CPU at small sizes: chains, residual
 * blocks, flex layers (the max joint's backward scratch) and spiking layers over T steps. */
static void test_memory_plans(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return;
    struct { const char *what; bf_arch arch; int c, hw, flex, neuron, raster, recompute, scatter, v1, mask, conv_again; } cases[] = {
        {"CNN", BF_ARCH_CNN, 1, 28, 0, -1, 0, 1, 1},
        {"VGG-6", BF_ARCH_VGG6, 1, 28, 0, -1, 0, 1, 1},
        {"VGG-11", BF_ARCH_VGG11, 3, 32, 0, -1, 0, 1, 1},
        {"VGG-16", BF_ARCH_VGG16, 3, 32, 0, -1, 0, 1, 1},
        {"flex VGG-16, route and scatter apart", BF_ARCH_VGG16, 3, 32, 1, -1, 0, 1, 0},
        {"PlasticFlex VGG-16, LIF", BF_ARCH_PF_VGG16, 3, 32, 0, BF_NEURON_LIF, 0, 1, 1},
        {"ResNet-18", BF_ARCH_RESNET18, 3, 32, 0, -1, 0, 1, 1},
        {"ResNet-50", BF_ARCH_RESNET50, 3, 32, 0, -1, 0, 1, 1},
        {"flex VGG-16", BF_ARCH_VGG16, 3, 32, 1, -1, 0, 1, 1},
        {"flex ResNet-50 (FlexResNet)", BF_ARCH_RESNET50, 3, 32, 1, -1, 0, 1, 1},
        /* the mask joint's forward and backward scratch, with batch-norm on the logits, C kept or computed again */
        {"flex VGG-16, mask joint", BF_ARCH_VGG16, 3, 32, 1, -1, 0, 1, 1, 0, 1, 0},
        {"flex VGG-16, mask joint, C computed again", BF_ARCH_VGG16, 3, 32, 1, -1, 0, 1, 1, 0, 1, 1},
        {"PlasticFlex VGG-6, flex mask, LIF", BF_ARCH_PF_VGG6, 1, 28, 1, BF_NEURON_LIF, 0, 1, 1, 0, 1, 0},
        {"PlasticFlex VGG-11, flex mask, LIF, C computed again", BF_ARCH_PF_VGG11, 3, 32, 1, BF_NEURON_LIF, 0, 1, 1, 0, 1, 1},
        {"PlasticFlex VGG-6, flex, LIF", BF_ARCH_PF_VGG6, 1, 28, 1, BF_NEURON_LIF, 0, 1, 1},
        {"PlasticFlex VGG-6, flex, LIF, charge kept", BF_ARCH_PF_VGG6, 1, 28, 1, BF_NEURON_LIF, 0, 0, 1},
        {"PlasticFlex VGG-11, LIF, spike rasters", BF_ARCH_PF_VGG11, 3, 32, 0, BF_NEURON_LIF, 4, 1, 1},
        {"PlasticFlex VGG-11, LIF", BF_ARCH_PF_VGG11, 3, 32, 0, BF_NEURON_LIF, 0, 1, 1},
        {"PlasticFlex VGG-11, LIF, charge kept", BF_ARCH_PF_VGG11, 3, 32, 0, BF_NEURON_LIF, 0, 0, 1},
        {"PlasticFlex VGG-6, step", BF_ARCH_PF_VGG6, 1, 28, 0, BF_NEURON_STEP, 0, 1, 1},
        {"PlasticFlex VGG-6, clamp01", BF_ARCH_PF_VGG6, 1, 28, 0, BF_NEURON_CLAMP01, 0, 1, 1},
        {"PlasticFlex SimpleFlexNet, flex, LIF", BF_ARCH_PF_SIMPLE_FLEX, 1, 28, 1, BF_NEURON_LIF, 0, 1, 1},
        {"PlasticFlex SimpleConvNet", BF_ARCH_PF_SIMPLE_CONV, 3, 32, 0, -1, 0, 1, 1},
        /* every V1 layer: DoG, locally connected, divisive normalisation, polar transform */
        {"V1 ResNet-50, composite a", BF_ARCH_RESNET50, 3, 64, 0, -1, 0, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        cfg.model.arch = cases[i].arch;
        cfg.model.flex = cases[i].flex;
        cfg.model.spiking.neuron = cases[i].neuron;
        cfg.model.spiking.time_steps = 2;
        cfg.model.spiking.raster_neurons = cases[i].raster;
        cfg.model.spiking.recompute_charge = cases[i].recompute;
        cfg.model.fuse_flex_scatter = cases[i].scatter;
        cfg.model.center_surround = cfg.model.local_rf = cfg.model.cortical_magnification = cases[i].v1;
        cfg.model.divisive_norm = cases[i].v1;
        if (cases[i].mask) cfg.model.flex_joint = BF_FLEX_JOINT_MASK, cfg.model.flex_logits_bn = 1;
        cfg.model.flex_recompute_conv = cases[i].conv_again;
        bf_model *m = NULL;
        CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){2, cases[i].c, cases[i].hw, cases[i].hw}, 10, 1, &m));
        if (!m) continue;
        check_memory_plan(m, cases[i].what);
        int kept = 1;
        for (int l = 0; l < m->num_layers; l++) /* with rasters, no gradient overwrites a neuron output */
            if (cases[i].raster && m->layers[l].kind == BF_LAYER_NEURON)
                for (int g = 0; g < m->num_layers - 1; g++)
                    if (m->layers[g].dout && overlap(span_of(m->layers[l].out, bf_shape_count(m->layers[l].out_shape), 4, "", l),
                                                     span_of(m->layers[g].dout, bf_shape_count(m->layers[g].out_shape), 4, "", g)))
                        kept = 0;
        CHECK(kept, "%s: a gradient lies over a neuron output that the spike raster reads after the step", cases[i].what);
        check_spiking_rules(m, cases[i].what, cases[i].raster, cases[i].recompute);
        if (cases[i].neuron < 0 && cases[i].arch != BF_ARCH_RESNET18 && cases[i].arch != BF_ARCH_RESNET50)
            check_vgg_hints(m, cases[i].what);
        bf_model_destroy(m);
    }
    bf_backend_destroy(b);
}

/* PlasticFlex VGG-11 at T = 8, batch 256 (the memory benchmark), planned without memory:
 * charge in place and packed spikes take over a quarter of the plan; the recomputed charge (no
 * charge, batch-norm outputs forward-only) another quarter, to under 2 GiB, where the issue's
 * target for the whole run is 3.0 GiB (half of PyTorch's 6.0); the neuron's backward run inside its
 * batch-norm's ([spiking] fuse_bn_backward) plans no more. */
static void test_spiking_memory_saving(void) {
    size_t arena[4], grad_live[4];
    for (int k = 0; k < 4; k++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        cfg.model.arch = BF_ARCH_PF_VGG11;
        cfg.model.spiking.neuron = BF_NEURON_LIF;
        cfg.model.spiking.time_steps = 8;
        cfg.model.spiking.pack_spikes = k >= 1;
        cfg.model.spiking.recompute_charge = k >= 2;
        cfg.model.spiking.fuse_bn_backward = k == 3;
        bf_model *m = NULL;
        CHECK_OK(bf_model_build(NULL, &cfg.model, (bf_shape){256, 3, 32, 32}, 10, 1, &m));
        arena[k] = m ? m->arena_bytes : 0;
        grad_live[k] = m ? m->grad_live_bytes : 0;
        if (m && k >= 2) check_memory_plan(m, k == 3 ? "PlasticFlex VGG-11, T = 8, fused neuron and batch-norm backward"
                                                     : "PlasticFlex VGG-11, T = 8, neuron and batch-norm backward apart");
        bf_model_destroy(m);
    }
    const double mib = 1048576.0;
    CHECK(arena[1] < arena[0] * 0.75 && arena[1] > 0,
          "PlasticFlex VGG-11, T = 8, batch 256: %.1f MiB planned with packed spikes, %.1f MiB without", arena[1] / mib,
          arena[0] / mib);
    CHECK(arena[2] < arena[1] * 0.75 && arena[2] > 0 && arena[2] < 2048 * mib,
          "PlasticFlex VGG-11, T = 8, batch 256: %.1f MiB planned with the charge recomputed, %.1f MiB with it kept",
          arena[2] / mib, arena[1] / mib);
    /* the fused backward stores no gradient of the neuron's: the pair's two gradients are one buffer,
     * but at most two T-step gradients are live at once either way (the neuron's and the conv's
     * during the batch-norm's backward, or the neuron's and the batch-norm's during the neuron's),
     * so the plan is no larger, and no smaller */
    CHECK(grad_live[3] <= grad_live[2] && arena[3] <= arena[2] && arena[3] > 0,
          "PlasticFlex VGG-11, T = 8, batch 256: the neuron's backward inside its batch-norm's: %.1f MiB planned, "
          "%.1f MiB of gradients live at once; apart: %.1f and %.1f MiB", arena[3] / mib, grad_live[3] / mib,
          arena[2] / mib, grad_live[2] / mib);
}

int main(void) {
    test_parameter_counts();
    test_memory_plans();
    test_spiking_memory_saving();
    test_linear_init();
    test_residual_network_gradients();
    return bf_test_finish();
}
