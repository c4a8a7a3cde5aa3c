/* batch_upload_cuda_absent.c - the CUDA part of batch_upload.h when bioflex is built without the
 * CUDA backend (the CUDA build has src/kernels/batch_upload.cu). No CUDA backend can exist then, so
 * batch_upload.c never reaches these; they only satisfy the linker and say why if they are. */
#ifndef BIOFLEX_HAVE_CUDA
#include "batch_upload.h"

static bf_status absent(void) { return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without the CUDA backend"); }

bf_status bf_cuda_uploader_create(bf_backend *b, bf_cuda_uploader **out) {
    (void)b;
    *out = NULL;
    return absent();
}

void bf_cuda_uploader_destroy(bf_cuda_uploader *u) { (void)u; }

bf_status bf_cuda_uploader_convert(bf_cuda_uploader *u, const uint8_t *host, int n, int h, int w, const float *mean,
                                   const float *std, float *dst) {
    return absent();
}

bf_status bf_cuda_uploader_wait_copied(bf_cuda_uploader *u) { return absent(); }

void *bf_cuda_host_alloc(bf_backend *b, size_t bytes) { return NULL; }
void bf_cuda_host_free(bf_backend *b, void *p) {}
#else
typedef int bf_batch_upload_cuda_absent_unused; /* ISO C wants a non-empty translation unit */
#endif
