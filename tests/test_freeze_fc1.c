/* test_freeze_fc1.c - `[model] freeze_fc1` (PlasticFlex's reference never trains fc1), on the CPU:
 *   - fc1's weight and bias become buffers: the trained parameter count drops by exactly fc1's size,
 *     and the checkpoint names (fc1.weight, fc1.bias) stay;
 *   - the gradients of every trained parameter equal those of the same network with fc1 trainable
 *     and the same weights (the frozen layer still passes dx down);
 *   - SGD steps leave fc1 bit-identical while fc2 moves;
 *   - the option is refused for architectures without a PlasticFlex fc1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { N = 4, K = 10 };

static int find_named(const bf_param *p, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (!strcmp(p[i].name, name)) return i;
    return -1;
}

static bf_model *build(bf_backend *b, int freeze) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_PF_VGG6;
    cfg.model.dropout = 0; /* both networks must see the same function */
    cfg.model.freeze_fc1 = freeze;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &cfg.model, (bf_shape){N, 1, 28, 28}, K, 7, &m));
    return m;
}

/* forward + backward of a fixed batch; returns the host copy of the gradients */
static float *gradients(bf_model *m, const float *x, const int32_t *labels) {
    const float *logits = NULL;
    float losses[N], dlogits[N * K];
    CHECK_OK(bf_model_forward(m, x, &logits));
    CHECK_OK(m->backend->ops->softmax_xent(m->backend, N, K, logits, labels, 0.0f, 1.0f / N, losses, dlogits));
    CHECK_OK(bf_model_backward(m, dlogits));
    return bf_test_download(m->backend, m->grad_data, m->num_param_floats);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *trained = build(b, 0), *frozen = build(b, 1);
    if (!trained || !frozen) return bf_test_finish();

    int w1 = find_named(trained->params, trained->num_params, "fc1.weight");
    int b1 = find_named(trained->params, trained->num_params, "fc1.bias");
    int fw1 = find_named(frozen->buffers, frozen->num_buffers, "fc1.weight");
    int fb1 = find_named(frozen->buffers, frozen->num_buffers, "fc1.bias");
    CHECK(w1 >= 0 && b1 >= 0 && fw1 >= 0 && fb1 >= 0 &&
              find_named(frozen->params, frozen->num_params, "fc1.weight") < 0,
          "freeze_fc1: fc1.weight and fc1.bias are buffers, not parameters");
    if (w1 < 0 || b1 < 0 || fw1 < 0 || fb1 < 0) return bf_test_finish();
    size_t fc1_size = trained->params[w1].count + trained->params[b1].count;
    CHECK(frozen->num_param_floats + fc1_size == trained->num_param_floats,
          "trained parameters: %zu frozen + %zu fc1 == %zu", frozen->num_param_floats, fc1_size,
          trained->num_param_floats);

    /* give the frozen network the trainable one's weights, parameter by parameter and fc1 into its buffers */
    for (int i = 0; i < frozen->num_params; i++) {
        int j = find_named(trained->params, trained->num_params, frozen->params[i].name);
        CHECK(j >= 0, "%s exists in both networks", frozen->params[i].name);
        if (j >= 0)
            memcpy(frozen->param_data + frozen->params[i].offset, trained->param_data + trained->params[j].offset,
                   frozen->params[i].count * sizeof(float));
    }
    memcpy(frozen->buffer_data + frozen->buffers[fw1].offset, trained->param_data + trained->params[w1].offset,
           trained->params[w1].count * sizeof(float));
    memcpy(frozen->buffer_data + frozen->buffers[fb1].offset, trained->param_data + trained->params[b1].offset,
           trained->params[b1].count * sizeof(float));

    static float x[N * 28 * 28];
    bf_test_fill_uniform(x, N * 28 * 28, -1, 1, 3);
    int32_t labels[N] = {1, 7, 3, 9};
    float *g_trained = gradients(trained, x, labels), *g_frozen = gradients(frozen, x, labels);
    int same = 1, nonzero = 0;
    for (int i = 0; i < frozen->num_params; i++) {
        int j = find_named(trained->params, trained->num_params, frozen->params[i].name);
        if (j < 0) continue;
        const float *a = g_frozen + frozen->params[i].offset, *c = g_trained + trained->params[j].offset;
        same &= bf_test_max_violation(a, c, frozen->params[i].count, 1e-7, 1e-6, NULL) <= 1.0;
        if (!strcmp(frozen->params[i].name, "features.0.weight"))
            for (size_t e = 0; e < frozen->params[i].count; e++) nonzero += a[e] != 0;
    }
    CHECK(same, "every trained parameter's gradient equals the unfrozen network's");
    CHECK(nonzero > 0, "the first conv still gets a gradient through the frozen fc1 (%d non-zero)", nonzero);
    free(g_trained);
    free(g_frozen);

    /* three SGD steps with weight decay: fc1 bit-identical, fc2 moved */
    bf_optim_config oc = {.optimizer = BF_OPTIM_SGD, .lr = 0.1f, .momentum = 0.9f, .weight_decay = 1e-2f};
    bf_optimizer *opt = NULL;
    CHECK_OK(bf_optimizer_create(b, &oc, frozen->num_param_floats, &opt));
    size_t n1 = frozen->buffers[fw1].count;
    float *fc1_before = malloc(n1 * sizeof(float));
    memcpy(fc1_before, frozen->buffer_data + frozen->buffers[fw1].offset, n1 * sizeof(float));
    int w2 = find_named(frozen->params, frozen->num_params, "fc2.weight");
    float fc2_before = frozen->param_data[frozen->params[w2].offset];
    for (int step = 0; step < 3 && opt; step++) {
        free(gradients(frozen, x, labels));
        CHECK_OK(bf_optimizer_step(b, opt, frozen->param_data, frozen->grad_data, 0.1f, NULL));
    }
    CHECK(!memcmp(fc1_before, frozen->buffer_data + frozen->buffers[fw1].offset, n1 * sizeof(float)),
          "fc1.weight unchanged after 3 SGD steps with weight decay");
    CHECK(frozen->param_data[frozen->params[w2].offset] != fc2_before, "fc2.weight trained");
    free(fc1_before);
    bf_optimizer_destroy(b, opt);

    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.model.arch = BF_ARCH_VGG11;
    cfg.model.freeze_fc1 = 1;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "freeze_fc1"),
          "freeze_fc1 with vgg11 is refused: %s", bf_last_error());

    bf_model_destroy(trained);
    bf_model_destroy(frozen);
    bf_backend_destroy(b);
    return bf_test_finish();
}
