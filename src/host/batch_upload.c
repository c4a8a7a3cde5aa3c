/* batch_upload.c - a loader batch into the model's input, on either backend (see batch_upload.h). */
#include "batch_upload.h"

#include <stdlib.h>

struct bf_batch_uploader {
    bf_backend *backend;
    bf_cuda_uploader *cuda;   /* CUDA backend: copy stream, events, staging buffer; NULL on the CPU */
    const bf_batch *in_flight; /* uploaded on CUDA; its host memory may still be read by the copy */
};

static void *host_alloc_cuda(void *ctx, size_t bytes) { return bf_cuda_host_alloc(ctx, bytes); }
static void host_free_cuda(void *ctx, void *p) { bf_cuda_host_free(ctx, p); }

bf_host_allocator bf_backend_host_allocator(bf_backend *b) {
    if (b && b->kind == BF_DEVICE_CUDA) return (bf_host_allocator){host_alloc_cuda, host_free_cuda, b};
    return (bf_host_allocator){0}; /* the loader's malloc */
}

bf_status bf_batch_uploader_create(bf_backend *b, bf_batch_uploader **out) {
    *out = NULL;
    if (!b) return bf_error(BF_ERR_ARG, "bf_batch_uploader_create: NULL backend");
    bf_batch_uploader *u = calloc(1, sizeof *u);
    if (!u) return bf_error(BF_ERR_OOM, "bf_batch_uploader_create: out of memory");
    u->backend = b;
    if (b->kind == BF_DEVICE_CUDA) {
        bf_status s = bf_cuda_uploader_create(b, &u->cuda);
        if (s != BF_OK) {
            free(u);
            return s;
        }
    }
    *out = u;
    return BF_OK;
}

void bf_batch_uploader_destroy(bf_batch_uploader *u) {
    if (!u) return;
    bf_cuda_uploader_destroy(u->cuda);
    free(u);
}

bf_status bf_batch_upload(bf_batch_uploader *u, const bf_loader *l, const bf_batch *b, float *dst) {
    if (!u || !l || !b || !dst) return bf_error(BF_ERR_ARG, "bf_batch_upload: NULL argument");
    if (u->in_flight)
        return bf_error(BF_ERR_ARG, "bf_batch_upload: batch %d is still in flight (bf_batch_upload_release it first)",
                        u->in_flight->index);
    bf_image_format f = bf_loader_image_format(l);
    if (!f.u8_hwc) return bf_to_device(u->backend, dst, b->images, (size_t)b->n * f.c * f.h * f.w * sizeof(float));
    if (!b->pixels) return bf_error(BF_ERR_ARG, "bf_batch_upload: a uint8 loader's batch without pixels");
    if (!u->cuda) return u->backend->ops->image_u8_to_float(u->backend, b->pixels, dst, b->n, f.h, f.w, f.mean, f.std);
    /* In flight before the call: a failure after the copy was enqueued must still make
     * bf_batch_upload_release wait for it before the loader refills the slot. */
    u->in_flight = b;
    return bf_cuda_uploader_convert(u->cuda, b->pixels, b->n, f.h, f.w, f.mean, f.std, dst);
}

bf_status bf_batch_upload_release(bf_batch_uploader *u, bf_loader *l, bf_batch *b) {
    bf_status s = BF_OK;
    if (u && b && u->in_flight == b) {
        /* The copy was enqueued at the start of this step and only waited for the previous batch's
         * conversion, so this wait is short; the step itself keeps running on the device. */
        s = bf_cuda_uploader_wait_copied(u->cuda);
        u->in_flight = NULL;
    }
    bf_loader_release(l, b);
    return s;
}

bf_status bf_batch_upload_once(bf_batch_uploader *u, bf_loader *l, bf_batch *b, float *dst, int32_t *labels, int n) {
    bf_status s = bf_batch_upload(u, l, b, dst);
    if (s == BF_OK && labels) s = bf_to_device(u->backend, labels, b->labels, (size_t)n * sizeof(int32_t));
    bf_status released = bf_batch_upload_release(u, l, b);
    return s != BF_OK ? s : released;
}
