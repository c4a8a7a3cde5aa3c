/* test_v1_layers_cuda.c - the V1 layers (layer_v1.c) on CUDA against the CPU through a whole small
 * network, forward and backward (skipped, exit 77, without a GPU): a 7x7 stride-2 stem on 64x64
 * images, the polar transform (the constant operator uploaded at finalize, one GEMM each way), a
 * conv, a DoG layer on 4 of its 8 channels (generated kernels, channel copies, their backward), the
 * tuned divisive normalisation (generated W, its 1x1 conv, the division, and the widths'
 * gradient) and a linear head. Logits, the image's gradient and every parameter's gradient agree. */
#include <stdlib.h>

#include "bioflex/model.h"
#include "cuda_pair.h"
#include "testutil.h"

static bf_model *build(bf_backend *b, bf_shape in) {
    bf_model *m = NULL;
    CHECK_OK(bf_model_create(b, in, 21, &m));
    if (!m) return NULL;
    int x = bf_model_add_conv(m, "conv1", BF_MODEL_INPUT, 8, 7, 2, 3, 1, 0, BF_INIT_KAIMING_NORMAL_FAN_OUT);
    x = bf_model_add_relu(m, "relu", x);
    x = bf_model_add_polar(m, "lpp", x, 0, 0);
    x = bf_model_add_conv(m, "conv2", x, 8, 3, 1, 1, 1, 0, BF_INIT_KAIMING_NORMAL_FAN_OUT);
    x = bf_model_add_dog(m, "dog", x, 4, 3, 0);
    x = bf_model_add_relu(m, "relu2", x);
    x = bf_model_add_divnorm(m, "dn", x, BF_OCI_OPPONENT);
    x = bf_model_add_global_avgpool(m, "avgpool", x);
    x = bf_model_add_flatten(m, "flatten", x);
    bf_model_add_linear(m, "fc", x, 5, 1, BF_INIT_UNIFORM_FAN_IN, BF_INIT_UNIFORM_FAN_IN);
    return pair_finalize_model(m, in.n);
}

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 777)) return bf_test_finish();
    const bf_shape in = {3, 3, 64, 64};
    bf_model *mc = build(cpu, in), *mg = build(gpu, in);
    if (mc && mg) {
        /* narrow widths at these 8 channels, so that W and its gradient are far from uniform */
        float sig[8] = {0.7f, 1.1f, 1.6f, 0.4f, 2.0f, 1.3f, 0.9f, 2.4f};
        for (int p = 0; p < mc->num_params; p++)
            if (mc->params[p].count == 8 && mc->layers[mc->params[p].layer].kind == BF_LAYER_DIVNORM) {
                CHECK_OK(bf_to_device(cpu, mc->param_data + mc->params[p].offset, sig, sizeof sig));
                CHECK_OK(bf_to_device(gpu, mg->param_data + mg->params[p].offset, sig, sizeof sig));
            }
        const size_t nx = bf_shape_count(in), nl = (size_t)in.n * 5;
        pair x = pair_rand(nx, -1, 1), dl = pair_rand(nl, -1, 1);
        pair_compare_model_passes(mc, mg, x, dl);
        pair_free(&x), pair_free(&dl);
    }
    bf_model_destroy(mc);
    bf_model_destroy(mg);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
