/* test_image_ops_cuda.c - image_u8_to_float on CUDA against the CPU backend: the same bytes in,
 * the same bits out (both evaluate the same float expression without FMA contraction), on an odd
 * shape so partial blocks are covered. Skipped (exit 77) without a CUDA build or device. */
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 1)) return bf_test_finish();
    const int n = 5, h = 37, w = 29;
    size_t count = (size_t)n * h * w * 3;
    uint8_t *src = malloc(count);
    for (size_t i = 0; i < count; i++) src[i] = (uint8_t)((i * 2654435761u) >> 13);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    float *want = malloc(count * sizeof(float)), *got = malloc(count * sizeof(float));
    CHECK_OK(cpu->ops->image_u8_to_float(cpu, src, want, n, h, w, mean, std));
    void *dsrc = NULL, *ddst = NULL;
    CHECK_OK(bf_alloc(gpu, count, &dsrc));
    CHECK_OK(bf_alloc(gpu, count * sizeof(float), &ddst));
    if (dsrc && ddst) {
        CHECK_OK(gpu->ops->copy_to_device(gpu, dsrc, src, count));
        CHECK_OK(gpu->ops->image_u8_to_float(gpu, dsrc, ddst, n, h, w, mean, std));
        CHECK_OK(gpu->ops->copy_to_host(gpu, got, ddst, count * sizeof(float)));
        size_t bad = 0;
        for (size_t i = 0; i < count; i++) bad += memcmp(&want[i], &got[i], sizeof(float)) != 0;
        CHECK(bad == 0, "image_u8_to_float: %zu of %zu elements differ between CUDA and CPU", bad, count);
    }
    gpu->ops->free(gpu, dsrc);
    gpu->ops->free(gpu, ddst);
    free(src);
    free(want);
    free(got);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
