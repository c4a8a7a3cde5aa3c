/* test_image_ops.c - image_u8_to_float on the CPU backend: uint8 NHWC -> normalised float NCHW,
 * every element against the formula evaluated in double, plus the argument checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "testutil.h"

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(2, &b));
    if (!b) return bf_test_finish();
    const int n = 3, h = 5, w = 7;
    size_t count = (size_t)n * h * w * 3;
    uint8_t *src = malloc(count);
    float *dst = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) src[i] = (uint8_t)((i * 37 + 11) % 256);
    for (size_t i = 0; i < count; i++) dst[i] = 1e30f; /* garbage an op that skips an element leaves */
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    /* CPU backend memory is host memory, so the buffers are used directly. */
    CHECK_OK(b->ops->image_u8_to_float(b, src, dst, n, h, w, mean, std));
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    double want = (src[(((size_t)i * h + y) * w + x) * 3 + c] / 255.0 - mean[c]) / std[c];
                    double got = dst[(((size_t)i * 3 + c) * h + y) * w + x];
                    if (fabs(want - got) > worst) worst = fabs(want - got);
                }
    CHECK(worst < 1e-5, "image_u8_to_float: worst error %.3g against the double formula", worst);
    const float bad_std[3] = {0.2f, 0.0f, 0.2f};
    CHECK(b->ops->image_u8_to_float(b, src, dst, n, h, w, mean, bad_std) == BF_ERR_ARG, "std 0 is refused");
    CHECK(b->ops->image_u8_to_float(b, src, dst, n, 0, w, mean, std) == BF_ERR_ARG, "h 0 is refused");
    free(src);
    free(dst);
    bf_backend_destroy(b);
    return bf_test_finish();
}
