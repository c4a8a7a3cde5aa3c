/* neuron_check.h - internal: the argument checks of the neuron ops, one source for neuron_cpu.c and
 * neuron.cu, so both backends refuse the same calls with the same messages. */
#ifndef BIOFLEX_NEURON_CHECK_H
#define BIOFLEX_NEURON_CHECK_H

#include <stdint.h>

#include "bioflex/ops.h"

static inline bf_status bf_neuron_check_params(const bf_neuron_params *p, size_t n, const char *op) {
    if (!p) return bf_error(BF_ERR_ARG, "%s: NULL neuron parameters", op);
    if ((int)p->kind < (int)BF_NEURON_LIF || (int)p->kind > (int)BF_NEURON_STEP)
        return bf_error(BF_ERR_ARG, "%s: unknown neuron kind %d", op, (int)p->kind);
    if (p->T < 1) return bf_error(BF_ERR_ARG, "%s: T must be >= 1 (got %d)", op, p->T);
    if ((int)p->reset < (int)BF_RESET_HARD || (int)p->reset > (int)BF_RESET_NONE)
        return bf_error(BF_ERR_ARG, "%s: unknown reset mode %d", op, (int)p->reset);
    if ((int)p->surrogate < (int)BF_SURROGATE_SIGMOID || (int)p->surrogate > (int)BF_SURROGATE_TANH)
        return bf_error(BF_ERR_ARG, "%s: unknown surrogate %d", op, (int)p->surrogate);
    if (p->kind != BF_NEURON_CLAMP01 &&
        (p->surrogate == BF_SURROGATE_RECTANGULAR || p->surrogate == BF_SURROGATE_TRIANGLE) && !(p->width > 0.0f))
        return bf_error(BF_ERR_ARG, "%s: the surrogate's width must be > 0 (got %g)", op, (double)p->width);
    if (p->kind != BF_NEURON_CLAMP01 && (p->surrogate == BF_SURROGATE_SIGMOID || p->surrogate == BF_SURROGATE_ARCTAN) &&
        !(p->alpha > 0.0f)) /* surrogate.h's exponential takes arguments <= 0 only */
        return bf_error(BF_ERR_ARG, "%s: the surrogate's alpha must be > 0 (got %g)", op, (double)p->alpha);
    if (n > SIZE_MAX / sizeof(float) / (size_t)p->T)
        return bf_error(BF_ERR_ARG, "%s: T=%d x n=%zu elements overflow", op, p->T, n);
    return BF_OK;
}

/* A shared input (bf_neuron_params.shared_input) keeps no charge and comes back through
 * neuron_backward_bn only: each step's charge differs, and [n] has room for one step. */
static inline bf_status bf_neuron_check_shared(const bf_neuron_params *p, const float *charge, const char *op) {
    if (p->shared_input && charge)
        return bf_error(BF_ERR_ARG, "%s: a shared input keeps no charge (charge must be NULL; the backward is "
                        "neuron_backward_bn)", op);
    return BF_OK;
}

/* neuron_backward_bn's own conditions (ops.h): a LIF/IF of at most BF_NEURON_BN_MAX_T steps, and a
 * batch-norm input whose channels tile the n elements of a step. */
static inline bf_status bf_neuron_check_bn_input(const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                                 const char *op) {
    if (p->kind != BF_NEURON_LIF && p->kind != BF_NEURON_IF)
        return bf_error(BF_ERR_ARG, "%s: LIF or IF neurons only (got kind %d)", op, (int)p->kind);
    if (p->T > BF_NEURON_BN_MAX_T) return bf_error(BF_ERR_ARG, "%s: T=%d above %d", op, p->T, BF_NEURON_BN_MAX_T);
    if (!in || in->c < 1 || in->hw < 1 || n % ((size_t)in->c * (size_t)in->hw) != 0)
        return bf_error(BF_ERR_ARG, "%s: %zu elements per step are not whole [c=%d, hw=%d] samples", op, n,
                        in ? in->c : 0, in ? in->hw : 0);
    if (!in->mean || !in->invstd || !in->gamma || !in->beta)
        return bf_error(BF_ERR_ARG, "%s: NULL batch-norm statistics or parameters", op);
    return BF_OK;
}

/* The batch-norm behind a bf_neuron_bn_input, as batchnorm_backward takes it (neuron_batchnorm_backward):
 * its planes are those of xin, T steps of n elements or one with a shared input. Its backward reads
 * no eps or momentum; eps is PyTorch's default only so that the shape passes batch-norm's check. */
static inline bf_bn_shape bf_neuron_bn_shape(const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n) {
    const size_t steps = p->shared_input ? 1 : (size_t)p->T;
    bf_bn_shape s = {(int)(steps * n / ((size_t)in->c * (size_t)in->hw)), in->c, in->hw, 1e-5f, 0.1f, 0, 0.0f};
    return s;
}

#endif
