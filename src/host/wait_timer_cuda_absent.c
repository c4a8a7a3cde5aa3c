/* wait_timer_cuda_absent.c - wait_timer.h when bioflex is built without the CUDA backend (the CUDA
 * build has src/kernels/wait_timer.cu). Only NCCL data parallelism times stream waits, and NCCL
 * needs CUDA, so these are never reached; they satisfy the linker and say why if they are. */
#ifndef BIOFLEX_HAVE_CUDA
#include "wait_timer.h"

static bf_status absent(void) { return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without the CUDA backend"); }

bf_status bf_wait_timer_create(bf_backend *b, bf_wait_timer **out) {
    (void)b;
    *out = NULL;
    return absent();
}
bf_status bf_wait_timer_begin(bf_wait_timer *t) { return absent(); }
bf_status bf_wait_timer_end(bf_wait_timer *t) { return absent(); }
bf_status bf_wait_timer_read(bf_wait_timer *t, double *mean_ms, int *waits) {
    *mean_ms = 0;
    *waits = 0;
    return absent();
}
void bf_wait_timer_destroy(bf_wait_timer *t) { (void)t; }
#else
typedef int bf_wait_timer_cuda_absent_unused; /* ISO C wants a non-empty translation unit */
#endif
