/* test_image_ops_cuda.c - image_u8_to_float and attack_step on CUDA against the CPU backend: the
 * same inputs, the same bits out (both evaluate the same float expressions without FMA
 * contraction), on odd shapes so partial blocks are covered. Skipped (exit 77) without a CUDA build
 * or device. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "cuda_pair.h"
#include "testutil.h"

/* A sign step and a raw step (with an infinite ball on one channel) over 3 channels. */
static void test_attack_step(bf_backend *cpu, bf_backend *gpu) {
    const size_t plane = 37 * 29, n = 5 * 3 * plane;
    const bf_attack_box box = {.c = 3, .step = {0.031f, 0.043f, 0.027f}, .radius = {0.062f, INFINITY, 0.054f},
                               .lo = {-2.1f, -2.0f, -1.8f}, .hi = {2.2f, 2.4f, 2.6f}};
    float *x0 = malloc(n * sizeof(float)), *d = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    bf_test_fill_uniform(x0, n, -2.5f, 2.5f, 1);
    bf_test_fill_uniform(d, n, -1.0f, 1.0f, 2);
    for (size_t i = 0; i < n; i += 7) d[i] = 0.0f;
    float *dx0 = bf_test_upload(gpu, x0, n), *dd = bf_test_upload(gpu, d, n), *dx = bf_test_upload(gpu, x0, n);
    memcpy(want, x0, n * sizeof(float));
    for (int use_sign = 1; use_sign >= 0; use_sign--) {
        CHECK_OK(cpu->ops->attack_step(cpu, &box, n, plane, x0, d, use_sign, want));
        CHECK_OK(gpu->ops->attack_step(gpu, &box, n, plane, dx0, dd, use_sign, dx));
        float *got = bf_test_download(gpu, dx, n);
        size_t bad = 0;
        for (size_t i = 0; got && i < n; i++) bad += memcmp(&want[i], &got[i], sizeof(float)) != 0;
        CHECK(got && bad == 0, "attack_step (use_sign %d): %zu of %zu elements differ between CUDA and CPU", use_sign,
              bad, n);
        free(got);
    }
    bf_free(gpu, dx0), bf_free(gpu, dd), bf_free(gpu, dx);
    free(x0), free(d), free(want);
}

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
    test_attack_step(cpu, gpu);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
