/* butd_task_head.h - training the BU-TD task head ([butd] train_task_head, butd_task_head.c).
 * Private to src/host/butd_*.c. */
#ifndef BIOFLEX_BUTD_TASK_HEAD_H
#define BIOFLEX_BUTD_TASK_HEAD_H

#include "bioflex/butd.h"

/* The network it applies to: guided, plain conv and linear layers (no block, no batch-norm). */
bf_status bf_butd_task_head_check(const bf_butd_net *net);
/* The per-level buffers the straight-through gradient needs. */
bf_status bf_butd_task_head_allocate(bf_butd_net *net);
void bf_butd_task_head_free(bf_butd_net *net);
/* After the error pass: the gradient of the batch-mean loss for the task head's weights, into
 * grad_data (their place in the parameters). */
bf_status bf_butd_task_head_backward(bf_butd_net *net);

#endif
