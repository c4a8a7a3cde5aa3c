/* wait_timer.cu - timing events around the compute stream's waits on the NCCL stream (see
 * src/host/wait_timer.h): the exposed communication of a data-parallel step, read once per log
 * interval after the host synchronisation the interval already has. */
#include <stdlib.h>

#include "cuda_backend.h"
#include "wait_timer.h"

struct bf_wait_timer {
    bf_backend *backend;
    int device;
    cudaEvent_t *begin, *end; /* pairs [0, made) exist; [0, used) hold waits not yet read */
    int made, used;
    int open;                 /* begin recorded, end not yet: the pair `used` is in flight */
};

extern "C" bf_status bf_wait_timer_create(bf_backend *b, bf_wait_timer **out) {
    *out = NULL;
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(b, &im));
    bf_wait_timer *t = (bf_wait_timer *)calloc(1, sizeof *t);
    if (t) t->begin = (cudaEvent_t *)calloc(BF_WAIT_TIMER_MAX_PAIRS, sizeof *t->begin);
    if (t) t->end = (cudaEvent_t *)calloc(BF_WAIT_TIMER_MAX_PAIRS, sizeof *t->end);
    if (!t || !t->begin || !t->end) {
        bf_wait_timer_destroy(t);
        return bf_error(BF_ERR_OOM, "wait timer: out of host memory");
    }
    t->backend = b;
    t->device = im->device;
    *out = t;
    return BF_OK;
}

/* The next free pair, made on first use (event creation is not free: it happens in the first
 * interval only). NULL when the interval already used every pair: that wait goes untimed. */
static bf_status next_pair(bf_wait_timer *t, int *index) {
    *index = -1;
    if (t->used >= BF_WAIT_TIMER_MAX_PAIRS) return BF_OK;
    if (t->used == t->made) {
        BF_CUDA_CHECK(cudaEventCreate(&t->begin[t->made])); /* with timing: the point of these */
        cudaError_t e = cudaEventCreate(&t->end[t->made]);
        if (e != cudaSuccess) cudaEventDestroy(t->begin[t->made]);
        BF_CUDA_CHECK(e);
        t->made++;
    }
    *index = t->used;
    return BF_OK;
}

extern "C" bf_status bf_wait_timer_begin(bf_wait_timer *t) {
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(t->backend, &im));
    int i = -1;
    BF_TRY(next_pair(t, &i));
    t->open = i >= 0;
    if (i >= 0) BF_CUDA_CHECK(cudaEventRecord(t->begin[i], im->stream));
    return BF_OK;
}

extern "C" bf_status bf_wait_timer_end(bf_wait_timer *t) {
    if (!t->open) return BF_OK;
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(t->backend, &im));
    BF_CUDA_CHECK(cudaEventRecord(t->end[t->used], im->stream));
    t->used++;
    t->open = 0;
    return BF_OK;
}

extern "C" bf_status bf_wait_timer_read(bf_wait_timer *t, double *mean_ms, int *waits) {
    *mean_ms = 0;
    *waits = t->used;
    if (t->used == 0) return BF_OK;
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(t->backend, &im));
    /* Already complete after the interval's synchronisation; the wait is a safeguard, not a cost. */
    BF_CUDA_CHECK(cudaEventSynchronize(t->end[t->used - 1]));
    double sum = 0;
    for (int i = 0; i < t->used; i++) {
        float ms = 0;
        BF_CUDA_CHECK(cudaEventElapsedTime(&ms, t->begin[i], t->end[i]));
        sum += ms;
    }
    *mean_ms = sum / t->used;
    t->used = 0;
    return BF_OK;
}

extern "C" void bf_wait_timer_destroy(bf_wait_timer *t) {
    if (!t) return;
    /* The backend may already be gone: only the device is needed to release the events. */
    if (t->made > 0 && cudaSetDevice(t->device) == cudaSuccess) {
        for (int i = 0; i < t->made; i++) {
            cudaEventDestroy(t->begin[i]);
            cudaEventDestroy(t->end[i]);
        }
        (void)cudaGetLastError();
    }
    free(t->begin);
    free(t->end);
    free(t);
}
