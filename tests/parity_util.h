/* parity_util.h - what the PyTorch-parity tests (test_pytorch_parity*.c) share: a fixture written
 * by a bench/make_*parity_fixture.py script with PyTorch, a model on the CPU backend, and the
 * comparisons between them (llm.c style: PyTorch computes, C compares).
 *
 * Fixture names: a test's tensors may all sit under one prefix ("" or "<variant>."): "<prefix>input",
 * "<prefix>labels", the initial state_dict "<prefix><name>", step A's "<prefix>expected.logits",
 * "<prefix>expected.loss", "<prefix>grad.<param>", "<prefix>stats1.<buffer>", and the state after
 * two steps "<prefix><after><name>". num_batches_tracked (one counter in bioflex) is the fixture's
 * "<bn>.num_batches_tracked" of each batch-norm whose running_mean is a bioflex buffer.
 *
 * Each comparison prints its largest violation |a-b| / (atol + rtol*max(|a|,|b|)) and CHECKs that
 * it is <= 1. */
#ifndef BIOFLEX_PARITY_UTIL_H
#define BIOFLEX_PARITY_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"

typedef struct bf_parity {
    bf_backend *backend;  /* the CPU backend (bf_parity_open) */
    bf_st_file *fixture;  /* (bf_parity_open) */
    double atol, rtol;    /* the tolerance of every comparison */
    int name_width;       /* the column of the tensor names in the printed lines */
} bf_parity;

/* Reads the fixture (CHECKed; the message names `script`, which regenerates it), prints its path
 * and torch version and creates the CPU backend with `threads`. Returns 1 when both are there. */
int bf_parity_open(bf_parity *px, const char *path, const char *script, int threads);
void bf_parity_close(bf_parity *px);

/* Compares n host floats with the fixture tensor `name` (F32, numel n), printing the figures. */
void bf_parity_compare(const bf_parity *px, const char *what, const char *name, const float *actual, size_t n);

/* The fixture name of the num_batches_tracked entry of the batch-norm whose running_mean is
 * `buffer` ("bn.running_mean" -> "<prefix>bn.num_batches_tracked"); 0 when buffer is no running_mean. */
int bf_parity_tracked_name(const char *buffer, const char *prefix, char *out, size_t cap);

/* The names both ways: every state_dict entry of the fixture under prefix (entries starting with
 * one of `derived` left out) is a bioflex parameter or buffer or num_batches_tracked, and their
 * count is bioflex's. check_shapes: also checks that every bioflex parameter and buffer is a
 * fixture tensor "<prefix>name" of its shape, and every num_batches_tracked an I64 scalar (else
 * bf_parity_load_initial's copies check the shapes). The summary line is indented under a
 * variant's heading when prefix is not "". */
void bf_parity_check_names(const bf_parity *px, const bf_model *m, const char *prefix, const char *const *derived,
                           size_t num_derived, int check_shapes);

/* Loads the fixture's initial state_dict "<prefix>name" into the model: every parameter and
 * buffer by name, with bf_safetensors_copy_out checking dtype and shape, and num_batches_tracked
 * (one counter in bioflex: every batch-norm of the fixture must agree). */
void bf_parity_load_initial(const bf_parity *px, bf_model *m, const char *prefix);

/* Replaces the ordinary comparison of one parameter or buffer in bf_parity_compare_state: called
 * with the tensor's index, its fixture name and the host copy of all parameters (buffers); returns
 * 1 when it has checked the tensor itself, 0 for the ordinary comparison. */
typedef int (*bf_parity_tensor_hook)(void *user, const bf_model *m, int index, const char *what, const char *name,
                                     const float *host);
typedef struct bf_parity_hooks {
    bf_parity_tensor_hook param, buffer; /* either may be NULL */
    void *user;
} bf_parity_hooks;

/* Compares every buffer (running statistics) and num_batches_tracked with "<prefix><name>", and
 * every parameter too when with_params; hooks (may be NULL) replace single comparisons. */
void bf_parity_compare_state(const bf_parity *px, bf_model *m, const char *what, const char *prefix,
                             int with_params, const bf_parity_hooks *hooks);

/* The fixture's batch on the backend, with the loss's buffers. */
typedef struct bf_parity_batch {
    int n, k;           /* samples, classes */
    float smoothing;    /* the cross-entropy's label smoothing */
    float *x;           /* device [n, c, h, w] */
    int32_t *labels;    /* device [n] */
    float *losses;      /* device [n] */
    float *dlogits;     /* device [n, k] */
} bf_parity_batch;

/* Reads "<prefix>input" ([input]) and "<prefix>labels" ([input.n], I32). */
void bf_parity_batch_load(const bf_parity *px, bf_parity_batch *bt, const char *prefix, bf_shape input, int k,
                          float smoothing);
void bf_parity_batch_free(const bf_parity *px, bf_parity_batch *bt);

/* One forward + loss (mean cross-entropy) + backward in train mode (as PyTorch's loss.backward());
 * returns the mean loss and, when logits_out is given, a host copy of the logits (free() it). */
double bf_parity_forward_backward(const bf_parity *px, bf_model *m, const bf_parity_batch *bt, float **logits_out);

/* SGD from the config defaults with these settings and no gradient clipping. */
bf_optim_config bf_parity_sgd(float lr, float momentum, int nesterov, float weight_decay);

/* Two optimiser steps from the fixture's initial state, as the scripts record them. */
typedef struct bf_parity_steps {
    const char *prefix;          /* of every fixture name: "" or "<variant>." */
    const bf_optim_config *oc;   /* the optimiser */
    int check_first;             /* step A: logits, loss and gradients against expected.* and grad.* */
    const char *loss_what;       /* the loss check's message */
    int check_stats1;            /* step A: every buffer against stats1.* after its forward pass */
    const char *what;            /* the label of the final comparison ("sgd") */
    const char *after;           /* the state after step B: "<prefix><after>name" ("after2.") */
    /* optional (NULL: none), each called with user: */
    void (*after_loss)(void *user, bf_model *m);                      /* more checks after step A's loss */
    void (*after_grads)(void *user, bf_model *m, const float *grads); /* more checks of step A's gradients */
    void (*after_step)(void *user, bf_model *m, int step);            /* after each optimiser step (0: A) */
    const bf_parity_hooks *final;                                     /* for the final comparison */
    void *user;
} bf_parity_steps;

/* Loads the initial state, then step A: forward + backward (the checks of s), optimiser step;
 * step B: forward + backward + step; then compares every parameter, buffer and num_batches_tracked
 * with "<prefix><after>name". */
void bf_parity_two_steps(const bf_parity *px, bf_model *m, const bf_parity_batch *bt, const bf_parity_steps *s);

/* Spiking fixtures (bench/make_spiking_parity_fixture.py and the scripts that import its neurons).
 * The neuron parameters and T as one line, the format of that script's params_string, which a
 * fixture keeps as "params.<variant>" for the test to require its own line equal:
 * "kind=lif T=4 encoding=direct decay=0.95 threshold=1 reset=hard detach_reset=0 through_time=1
 * surrogate=tanh alpha=0 width=0 height=0.3" (floats "%g"; encoding 0 direct, 1 rate). */
void bf_parity_neuron_line(const bf_neuron_params *p, int T, int encoding, char *out, size_t cap);

/* The spike monitor after a first forward pass (bf_model_spike_monitor, which it resets) against
 * "<prefix>fired.<layer>" = [sum of the layer's outputs over all T steps, elements silent at every
 * step] of each of the model's `layers` neuron layers, n samples: the counts exactly for LIF/IF/step
 * (integers far below 2^24; a difference is a spike flipped), clamp01's output sum within the
 * tolerances (bioflex sums in double, PyTorch in fp32). */
void bf_parity_compare_fired(const bf_parity *px, bf_model *m, const char *prefix, int n, int T, int layers);

/* A one-layer model checked against a fixture variant (the V1 layers' tests): the model over the
 * 4-D "<variant>.input", its layer added by add(m, BF_MODEL_INPUT, variant), with the image's
 * gradient, in training mode; its parameters set from "<variant>.<last part of each parameter's
 * name>"; one forward and one backward of "<variant>.dy"; y, dx and each parameter's gradient
 * compared with "<variant>.y", ".dx" and ".d<name>". Returns the model for the caller's own checks
 * (bf_model_destroy it), or NULL when it could not be built. */
bf_model *bf_parity_one_layer(const bf_parity *px, const char *variant,
                              int (*add)(bf_model *m, int input, const char *variant));
/* That model alone, over an input of shape `in` on backend b (NULL when it could not be built). */
bf_model *bf_parity_build_one_layer(bf_backend *b, bf_shape in, int (*add)(bf_model *m, int input, const char *variant),
                                    const char *variant);

#endif
