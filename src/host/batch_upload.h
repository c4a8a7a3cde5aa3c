/* batch_upload.h - turns a loader's host batch into the model's input on the backend (internal).
 *
 * Float batches (bf_batch.images) are copied as before (bf_to_device). uint8 batches
 * (bf_batch.pixels, a u8_hwc loader) are normalised and transposed to NCHW by the backend's
 * image_u8_to_float op:
 *   - CPU backend: the CPU op reads the host batch directly; nothing to copy.
 *   - CUDA backend (batch_upload.cu): the bytes go to a device staging buffer with cudaMemcpyAsync
 *     on a dedicated copy stream (from page-locked memory: bf_backend_host_allocator), the compute
 *     stream waits for that copy with an event and then converts into the model's input. The copy
 *     of batch i+1 waits (on the device, by another event) only until the conversion of batch i has
 *     read the staging buffer, so it overlaps the rest of step i.
 * The loader may refill a ring slot as soon as it is released, so a batch given to
 * bf_batch_upload must come back through bf_batch_upload_release, which waits for the copy of that
 * batch (not for the step) before handing the slot back.
 *
 * One batch is in flight per uploader: upload, then release, then the next upload. */
#ifndef BIOFLEX_BATCH_UPLOAD_H
#define BIOFLEX_BATCH_UPLOAD_H

#include "bioflex/data.h"
#include "bioflex/ops.h"

#ifdef __cplusplus
extern "C" { /* batch_upload.cu implements the CUDA part */
#endif

/* The memory a loader's uint8 ring should live in for this backend: page-locked (cudaHostAlloc)
 * on CUDA, malloc on the CPU. The backend must outlive every loader made with it. */
bf_host_allocator bf_backend_host_allocator(bf_backend *b);

typedef struct bf_batch_uploader bf_batch_uploader;

/* An uploader for one backend; device buffers are made on first use, so nothing is allocated per
 * batch once the largest batch has been seen. */
bf_status bf_batch_uploader_create(bf_backend *b, bf_batch_uploader **out);
/* Waits for any copy still in flight, then frees. NULL is fine. */
void bf_batch_uploader_destroy(bf_batch_uploader *u);

/* Writes batch b of loader l into dst (backend memory, b->n * c*h*w floats, NCHW, normalised as
 * the float path would): asynchronous on CUDA, in stream order with the ops that follow. */
bf_status bf_batch_upload(bf_batch_uploader *u, const bf_loader *l, const bf_batch *b, float *dst);
/* Gives b back to the loader (bf_loader_release) once the copy that reads it has completed. Always
 * releases b, also when waiting reports a device error (returned). */
bf_status bf_batch_upload_release(bf_batch_uploader *u, bf_loader *l, bf_batch *b);

/* A pass outside training's step (evaluation, analyses): bf_batch_upload of b into dst, the first n of
 * its labels into labels (backend memory; NULL: none), then bf_batch_upload_release, which gives b
 * back in every case. Returns the first error. Read what else b holds (its position) before. */
bf_status bf_batch_upload_once(bf_batch_uploader *u, bf_loader *l, bf_batch *b, float *dst, int32_t *labels, int n);

/* ---- the CUDA part (batch_upload.cu; batch_upload_cuda_absent.c without CUDA) ---- */

typedef struct bf_cuda_uploader bf_cuda_uploader;

bf_status bf_cuda_uploader_create(bf_backend *b, bf_cuda_uploader **out);
void bf_cuda_uploader_destroy(bf_cuda_uploader *u);
/* Enqueues: copy stream waits until the previous conversion read the staging buffer; host ->
 * staging copy of n*h*w*3 bytes; compute stream waits for the copy; image_u8_to_float(staging ->
 * dst) on the compute stream. The staging buffer grows (once) when a batch is larger. */
bf_status bf_cuda_uploader_convert(bf_cuda_uploader *u, const uint8_t *host, int n, int h, int w, const float *mean,
                                   const float *std, float *dst);
/* Blocks until the last enqueued copy has read its host buffer. */
bf_status bf_cuda_uploader_wait_copied(bf_cuda_uploader *u);
/* Page-locked host memory of the backend's device (portable across the process's contexts). */
void *bf_cuda_host_alloc(bf_backend *b, size_t bytes);
void bf_cuda_host_free(bf_backend *b, void *p);

#ifdef __cplusplus
}
#endif
#endif
