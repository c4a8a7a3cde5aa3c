/* butd_task_head.c - training the task head of a guided BU-TD network ([butd] train_task_head).
 *
 * The reference never trains it: the instruction reaches the BU pass only through the GaLU gates
 * g_l = 1[h_l > 0] (h_l the instruction pass's TD activity at level l), whose derivative is 0, so
 * backprop gives the head no gradient. This option takes the gate's derivative as 1 (the
 * straight-through estimator), which gives, with a_l = r_l * g_l and r_l = ReLU(z_l) the BU
 * activity before its gate:
 *
 *   dL/dh_l (direct) = dL/da_l * r_l                          (gate_grad[l], taken in the error pass)
 *   h_l = ReLU(p_l), p_l = TD op of layer l (h_{l+1})          (the instruction pass, level 1 .. top)
 *   G_1 = gate_grad[1];  G_{l+1} = gate_grad[l+1] + TD op^T (G_l * 1[h_l > 0])
 *
 * The adjoint of a TD op (a transposed linear or conv) is the BU op without its bias. At the top
 * the task head, used transposed with ReLU after each layer, receives G_top, and its weights get
 * the gradient of the batch-mean loss. Only the task head learns from this gradient: the core
 * weights, which the instruction pass also reads (shared weights), still learn by [butd] learning
 * alone. Per level three activities are kept (r, the gate gradient, h): memory of three more
 * activations, which is why blocks and batch-norm (ResNet-18) are not covered. */
#include <stdlib.h>

#include "butd_internal.h"

bf_status bf_butd_task_head_check(const bf_butd_net *net) {
    if (!net->opt.guided) return bf_error(BF_ERR_CONFIG, "[butd] train_task_head = true needs guided = true");
    for (int i = 0; i < net->num_layers; i++) {
        const bf_butd_layer *l = &net->layers[i];
        if (l->kind == BF_BUTD_BLOCK || l->norm[0])
            return bf_error(BF_ERR_CONFIG, "[butd] train_task_head = true covers networks of plain conv and linear "
                                           "layers (network = fc | simple); layer %s is a residual block or has "
                                           "batch-norm", l->name);
    }
    return BF_OK;
}

/* Level l (1 .. top) is the output of core layer l - 1. */
static size_t level_floats(const bf_butd_net *net, int l) {
    return (size_t)net->max_batch * net->layers[l - 1].out_size;
}

bf_status bf_butd_task_head_allocate(bf_butd_net *net) {
    bf_backend *b = net->backend;
    int top = net->num_layers - 1;
    net->bu_ungated = calloc((size_t)top + 1, sizeof(float *));
    net->gate_grad = calloc((size_t)top + 1, sizeof(float *));
    net->td_instruction = calloc((size_t)top + 1, sizeof(float *));
    if (!net->bu_ungated || !net->gate_grad || !net->td_instruction)
        return bf_error(BF_ERR_OOM, "butd: out of host memory");
    for (int l = 1; l <= top; l++) {
        size_t bytes = level_floats(net, l) * sizeof(float);
        BF_TRY(bf_alloc(b, bytes, (void **)&net->bu_ungated[l]));
        BF_TRY(bf_alloc(b, bytes, (void **)&net->gate_grad[l]));
        BF_TRY(bf_alloc(b, bytes, (void **)&net->td_instruction[l]));
    }
    int widest = net->opt.task_embedding > 0 ? net->opt.task_embedding : 1;
    return bf_alloc(b, (size_t)net->max_batch * widest * sizeof(float), (void **)&net->task_hidden_grad);
}

void bf_butd_task_head_free(bf_butd_net *net) {
    bf_backend *b = net->backend;
    for (int l = 1; net->bu_ungated && l < net->num_layers; l++) {
        bf_free(b, net->bu_ungated[l]);
        bf_free(b, net->gate_grad[l]);
        bf_free(b, net->td_instruction[l]);
    }
    free(net->bu_ungated);
    free(net->gate_grad);
    free(net->td_instruction);
    bf_free(b, net->task_hidden_grad);
}

/* above_grad = the adjoint of layer l's TD op applied to below_grad: the BU op without its bias,
 * through the weight the TD op used (W, or the separate B). */
static bf_status td_adjoint(bf_butd_net *net, const bf_butd_layer *l, const float *below_grad, float *above_grad) {
    bf_backend *b = net->backend;
    int own = l->td_w >= 0;
    const float *w = net->param_data + net->params[own ? l->td_w : l->w].offset;
    if (l->kind == BF_BUTD_CONV) return b->ops->conv2d_forward(b, &l->conv, below_grad, w, NULL, above_grad);
    if (!own) return b->ops->linear_forward(b, &l->linear, below_grad, w, NULL, above_grad);
    /* B is [in, out] and the TD op was below = above * B^T: its adjoint is below_grad * B. */
    bf_linear_shape t = {.n = l->linear.n, .in = l->linear.out, .out = l->linear.in};
    return b->ops->linear_backward(b, &t, NULL, w, below_grad, above_grad, NULL, NULL);
}

bf_status bf_butd_task_head_backward(bf_butd_net *net) {
    bf_backend *b = net->backend;
    int n = net->batch, top = net->num_layers - 1;
    /* Up the instruction pass: G_l through its ReLU (in place), then into level l + 1. */
    for (int l = 1; l < top; l++) {
        const bf_butd_layer *layer = &net->layers[l];
        float *g = net->gate_grad[l];
        BF_TRY(b->ops->relu_backward(b, net->td_instruction[l], g, g, (size_t)n * layer->in_size));
        BF_TRY(td_adjoint(net, layer, g, net->scratch));
        BF_TRY(b->ops->add_inplace(b, net->gate_grad[l + 1], net->scratch, (size_t)n * layer->out_size));
    }
    float *du = net->gate_grad[top]; /* at the task head's output, through its last ReLU */
    BF_TRY(b->ops->relu_backward(b, net->td_instruction[top], du, du, (size_t)n * net->layers[top - 1].out_size));
    /* The head, used transposed: y[n, in] = ReLU(x[n, out] W), so dW = x^T dy = linear_backward's dw
     * with the roles of x and dy exchanged; the gradient at x is dy W^T, a linear forward. */
    const float *below = du;
    for (int i = 0; i < net->num_task_layers; i++) {
        const bf_butd_layer *l = &net->task_head[i];
        int last = i == net->num_task_layers - 1;
        const float *x = last ? net->task_onehot : net->task_hidden;
        float *dw = net->grad_data + net->params[net->task_param + i].offset;
        const float *w = net->task_data + l->w;
        BF_TRY(b->ops->linear_backward(b, &l->linear, below, w, x, NULL, dw, NULL));
        BF_TRY(b->ops->scale(b, dw, 1.0f / (float)n, (size_t)l->in_size * l->out_size));
        if (last) break;
        BF_TRY(b->ops->linear_forward(b, &l->linear, below, w, NULL, net->task_hidden_grad));
        BF_TRY(b->ops->relu_backward(b, net->task_hidden, net->task_hidden_grad, net->task_hidden_grad,
                                     (size_t)n * l->out_size));
        below = net->task_hidden_grad;
    }
    return BF_OK;
}
