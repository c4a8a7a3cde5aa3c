/* batch_upload.cu - the CUDA part of batch_upload.h: uint8 batches copied on their own stream into a
 * device staging buffer, then normalised into the model's input on the compute stream.
 *
 * Two events order the two streams without any host wait (as stream_handoff.cu does for NCCL):
 *   copied   - recorded on the copy stream after the host -> staging copy; the compute stream waits
 *              for it before converting, and the host waits for it before the loader may refill the
 *              pinned slot (bf_cuda_uploader_wait_copied);
 *   consumed - recorded on the compute stream after the conversion has read the staging buffer; the
 *              copy stream waits for it before overwriting the buffer with the next batch.
 * One staging buffer is enough: the next copy can start as soon as the conversion at the beginning
 * of the current step is done, and then overlaps the rest of that step. */
#include <stdlib.h>

#include "batch_upload.h"
#include "cuda_backend.h"

struct bf_cuda_uploader {
    bf_backend *backend;
    cudaStream_t copy;
    cudaEvent_t copied, consumed;
    uint8_t *staging;
    size_t staging_bytes;
};

extern "C" bf_status bf_cuda_uploader_create(bf_backend *b, bf_cuda_uploader **out) {
    *out = NULL;
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(b, &im));
    bf_cuda_uploader *u = (bf_cuda_uploader *)calloc(1, sizeof *u);
    if (!u) return bf_error(BF_ERR_OOM, "batch upload: out of host memory");
    u->backend = b;
    /* Non-blocking: the copy stream must not synchronise with the legacy default stream. */
    cudaError_t e = cudaStreamCreateWithFlags(&u->copy, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&u->copied, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&u->consumed, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        bf_cuda_uploader_destroy(u);
        (void)cudaGetLastError();
        return bf_error(BF_ERR_DEVICE, "batch upload: cannot create the copy stream and events: %s", cudaGetErrorString(e));
    }
    *out = u;
    return BF_OK;
}

extern "C" void bf_cuda_uploader_destroy(bf_cuda_uploader *u) {
    if (!u) return;
    bf_cuda_impl *im = NULL;
    if (bf_cuda_enter(u->backend, &im) == BF_OK) {
        if (u->copy) cudaStreamSynchronize(u->copy); /* no copy may still read a host slot */
        if (u->staging) cudaFree(u->staging);        /* waits for the conversions that read it */
        if (u->copied) cudaEventDestroy(u->copied);
        if (u->consumed) cudaEventDestroy(u->consumed);
        if (u->copy) cudaStreamDestroy(u->copy);
        (void)cudaGetLastError();
    }
    free(u);
}

extern "C" bf_status bf_cuda_uploader_convert(bf_cuda_uploader *u, const uint8_t *host, int n, int h, int w,
                                              const float *mean, const float *std, float *dst) {
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(u->backend, &im));
    if (n < 0 || h < 1 || w < 1) return bf_error(BF_ERR_ARG, "batch upload: shape %dx%dx%d", n, h, w);
    size_t bytes = (size_t)n * h * w * 3;
    if (bytes == 0) return BF_OK;
    if (bytes > u->staging_bytes) {
        /* First batch (or a larger one): cudaFree waits for the device, so no queued conversion still
         * reads the old buffer. Steady state never comes here. */
        BF_TRY(bf_cuda_fence(im));
        if (u->staging) BF_CUDA_CHECK(cudaFree(u->staging));
        u->staging = NULL;
        u->staging_bytes = 0;
        BF_CUDA_CHECK(cudaMalloc((void **)&u->staging, bytes));
        u->staging_bytes = bytes;
    }
    BF_CUDA_CHECK(cudaStreamWaitEvent(u->copy, u->consumed, 0)); /* a no-op before the first record */
    BF_CUDA_CHECK(cudaMemcpyAsync(u->staging, host, bytes, cudaMemcpyHostToDevice, u->copy));
    BF_CUDA_CHECK(cudaEventRecord(u->copied, u->copy));
    BF_CUDA_CHECK(cudaStreamWaitEvent(im->stream, u->copied, 0));
    BF_TRY(u->backend->ops->image_u8_to_float(u->backend, u->staging, dst, n, h, w, mean, std));
    BF_CUDA_CHECK(cudaEventRecord(u->consumed, im->stream));
    return BF_OK;
}

extern "C" bf_status bf_cuda_uploader_wait_copied(bf_cuda_uploader *u) {
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(u->backend, &im));
    BF_CUDA_CHECK(cudaEventSynchronize(u->copied));
    return BF_OK;
}

extern "C" void *bf_cuda_host_alloc(bf_backend *b, size_t bytes) {
    bf_cuda_impl *im = NULL;
    if (bf_cuda_enter(b, &im) != BF_OK) return NULL;
    void *p = NULL;
    /* Portable: pinned for every device's context, as --gpus threads each own one backend. */
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return p;
}

extern "C" void bf_cuda_host_free(bf_backend *b, void *p) {
    bf_cuda_impl *im = NULL;
    if (!p || bf_cuda_enter(b, &im) != BF_OK) return;
    if (cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
}
