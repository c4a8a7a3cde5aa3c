/* cuda_pair.h - one tensor on both backends, for the tests that check a CUDA op against the CPU
 * reference (test_*_ops_cuda.c): the same inputs go to both, the outputs come back to be compared.
 *
 * pair_setup names the two backends and the first seed; pair_rand and pair_next_seed() draw
 * consecutive seeds from it, so a test's inputs are the same run after run. Allocation failures
 * end the program (exit 1). */
#ifndef BIOFLEX_CUDA_PAIR_H
#define BIOFLEX_CUDA_PAIR_H

#include <stddef.h>

#include "bioflex/ops.h"

typedef struct pair { /* one tensor on both backends */
    float *c, *g;
    size_t n;
} pair;

/* The skips (exit 77) without a CUDA build or device, then the CPU and the CUDA (FP32) backend
 * (CHECKed), and pair_setup(*cpu, *gpu, first_seed); returns 1 when both backends are there. */
int pair_open(bf_backend **cpu, bf_backend **gpu, unsigned long first_seed);
void pair_setup(bf_backend *cpu, bf_backend *gpu, unsigned long first_seed);
unsigned long pair_next_seed(void);

pair pair_from(const float *host, size_t n); /* host == NULL: zeros */
pair pair_rand(size_t n, float lo, float hi); /* uniform values in [lo, hi), the same on both backends */
pair pair_out(size_t n);                      /* garbage for outputs: large values no correct op leaves behind */
void pair_free(pair *p);

/* Downloads both sides to new host arrays (free() them), CHECKing that both came back; returns 1
 * when they did. */
int pair_download(const char *what, pair p, float **cpu_host, float **gpu_host);

/* Downloads both sides and CHECKs bf_test_max_violation(cpu, cuda, atol, rtol) <= 1, printing it. */
void pair_compare(const char *what, pair p, double atol, double rtol);
/* The same, demanding bit-identical results. */
void pair_compare_exact(const char *what, pair p);

/* One forward and backward of the same model built on both backends (training mode, input_gradient):
 * x and dlogits the same on both; compares the logits (atol 1e-5, rtol 1e-4), the image's gradient
 * and every parameter's gradient (atol 1e-6, rtol 1e-3). */
struct bf_model;
void pair_compare_model_passes(struct bf_model *cpu, struct bf_model *gpu, pair x, pair dlogits);
/* Finalizes a model built for pair_compare_model_passes (with input_gradient, CHECKed, naming the
 * backend), then sets it training at batch n; destroys it and returns NULL when that fails. */
struct bf_model *pair_finalize_model(struct bf_model *m, int n);

/* Downloads two GPU results of the same computation and demands the same bits. */
void check_repeats(const char *what, const float *first, const float *again, size_t n);

#endif
