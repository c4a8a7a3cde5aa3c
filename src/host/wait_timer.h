/* wait_timer.h - internal: how long the CUDA backend's compute stream is held by a wait on another
 * stream (the NCCL stream of data parallelism), measured without a host wait inside the step.
 *
 * Each timed wait is bracketed by two timing events recorded on the compute stream: `begin` just
 * before the wait is enqueued, `end` just after. Their difference on the GPU's clock is the time
 * the compute stream stood still: the communication the backward pass did not hide. The events are
 * read only after the host has synchronised with the compute stream anyway (the log interval's
 * metrics read), so reading them costs nothing; until then each timed wait keeps its own pair, from
 * a pool that grows to the longest interval (at most BF_WAIT_TIMER_MAX_PAIRS; waits beyond that in
 * one interval are not timed, and the mean covers the timed ones).
 *
 * The CUDA build has src/kernels/wait_timer.cu; without CUDA (src/host/wait_timer_cuda_absent.c)
 * creating a timer fails and nothing else is reached. */
#ifndef BIOFLEX_WAIT_TIMER_H
#define BIOFLEX_WAIT_TIMER_H

#include "bioflex/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BF_WAIT_TIMER_MAX_PAIRS 1024

typedef struct bf_wait_timer bf_wait_timer;

bf_status bf_wait_timer_create(bf_backend *b, bf_wait_timer **out);
/* Records `begin` on the compute stream (call just before enqueueing the wait). */
bf_status bf_wait_timer_begin(bf_wait_timer *t);
/* Records `end` on the compute stream (call just after enqueueing the wait). */
bf_status bf_wait_timer_end(bf_wait_timer *t);
/* The mean ms between begin and end over the waits timed since the last read, and how many there
 * were (*mean_ms = 0 when none); frees the pairs for reuse. Call after the host has synchronised
 * with the compute stream: it then waits for nothing. */
bf_status bf_wait_timer_read(bf_wait_timer *t, double *mean_ms, int *waits);
void bf_wait_timer_destroy(bf_wait_timer *t);

#ifdef __cplusplus
}
#endif
#endif
