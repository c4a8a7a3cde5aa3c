/* backend_cuda_absent.c - stands in for the CUDA backend when bioflex is built without it
 * (-DBIOFLEX_CUDA=OFF, or nvcc/cuDNN/cuBLAS not found). */
#include "bioflex/ops.h"
#include "cpu_backend.h" /* declares bf_backend_destroy_cuda */

bf_status bf_backend_create_cuda(int device_index, bf_precision precision, bf_backend **out) {
    (void)device_index;
    (void)precision;
    *out = 0;
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without the CUDA backend "
                                        "(reconfigure with -DBIOFLEX_CUDA=ON on a machine with nvcc, cuDNN 9 and cuBLAS)");
}

int bf_cuda_device_count(void) { return 0; }

bf_status bf_cuda_set_deterministic(bf_backend *b, int on) {
    (void)b, (void)on;
    return BF_OK;
}
int bf_cuda_conv_graph_plan_count(const bf_backend *b) {
    (void)b;
    return 0;
}
bf_status bf_cuda_set_conv_api(bf_backend *b, int graph) {
    (void)b, (void)graph;
    return BF_OK;
}
bf_status bf_cuda_set_driver_fence(bf_backend *b, bf_status (*fence)(void *ctx), void *ctx) {
    (void)b, (void)fence, (void)ctx;
    return BF_OK;
}
bf_status bf_cuda_set_flex_kernels(bf_backend *b, int slide) {
    (void)b, (void)slide;
    return BF_OK;
}
int bf_cuda_flex_kernels_slide(const bf_backend *b) {
    (void)b;
    return 0;
}
long bf_cuda_flex_slide_launches(const bf_backend *b) {
    (void)b;
    return 0;
}
bf_status bf_cuda_set_conv_workspace_limit(bf_backend *b, size_t bytes) {
    (void)b, (void)bytes;
    return BF_OK;
}
bf_status bf_cuda_set_conv_workspace_slack(bf_backend *b, float slack) {
    (void)b, (void)slack;
    return BF_OK;
}
bf_status bf_cuda_set_conv_workspace_reuse(bf_backend *b, int on) {
    (void)b, (void)on;
    return BF_OK;
}
bf_status bf_cuda_profiler(bf_backend *b, int on) {
    (void)b, (void)on;
    return BF_OK;
}
int bf_cuda_built(void) { return 0; }

bf_status bf_cuda_device_shape(const bf_backend *b, int *cc_major, int *cc_minor, int *sms, int *clock_khz) {
    (void)b, (void)cc_major, (void)cc_minor, (void)sms, (void)clock_khz;
    return bf_error(BF_ERR_UNAVAILABLE, "bioflex was built without the CUDA backend");
}

size_t bf_cuda_conv_workspace_bytes(bf_backend *b) {
    (void)b;
    return 0;
}

void bf_cuda_memory_bytes(bf_backend *b, int reset_peak, size_t *live, size_t *peak) {
    (void)b;
    (void)reset_peak;
    if (live) *live = 0;
    if (peak) *peak = 0;
}

/* No CUDA backend can have been created, so there is nothing to release. */
void bf_backend_destroy_cuda(bf_backend *b) { (void)b; }
