/* test_image_ops.c - the image ops on the CPU backend:
 *   - image_u8_to_float: uint8 NHWC -> normalised float NCHW, every element against the formula
 *     evaluated in double, plus the argument checks;
 *   - attack_step: a sign step, a raw step, the L-inf ball and the pixel box per channel, against
 *     values worked out by hand, plus the argument checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/ops.h"
#include "testutil.h"

/* Two images of 2 channels of 2 pixels; channel 1 has its own step, ball and box. */
static void test_attack_step(bf_backend *b) {
    const bf_attack_box box = {.c = 2, .step = {0.5f, 0.25f}, .radius = {1.0f, 0.375f}, .lo = {-1.0f, 0.0f},
                               .hi = {2.0f, 1.0f}};
    const float x0[8] = {0.0f, 1.0f, 0.5f, 0.5f, /* image 2 */ 1.75f, -1.0f, 0.0f, 0.875f};
    const float d[8] = {3.0f, -0.25f, 0.0f, -2.0f, 1.0f, -7.0f, 1.0f, 1.0f};
    float x[8];
    memcpy(x, x0, sizeof x);
    CHECK_OK(b->ops->attack_step(b, &box, 8, 2, x0, d, 1, x));
    /* +-0.5 on channel 0 (1.75 + 0.5 clamped to the box's 2; -1 - 0.5 to -1), +-0.25 on channel 1
     * (sign(0) = 0; 0.875 + 0.25 clamped to the box's 1) */
    const float want_sign[8] = {0.5f, 0.5f, 0.5f, 0.25f, 2.0f, -1.0f, 0.25f, 1.0f};
    CHECK(memcmp(x, want_sign, sizeof x) == 0, "attack_step with sign: %g %g %g %g %g %g %g %g", x[0], x[1], x[2], x[3],
          x[4], x[5], x[6], x[7]);
    CHECK_OK(b->ops->attack_step(b, &box, 8, 2, x0, d, 1, x)); /* again: the ball stops channel 1 at 0.375 */
    const float want_twice[8] = {1.0f, 0.0f, 0.5f, 0.125f, 2.0f, -1.0f, 0.375f, 1.0f};
    CHECK(memcmp(x, want_twice, sizeof x) == 0, "attack_step twice stays in the ball: %g %g %g %g %g %g %g %g", x[0], x[1],
          x[2], x[3], x[4], x[5], x[6], x[7]);
    memcpy(x, x0, sizeof x);
    CHECK_OK(b->ops->attack_step(b, &box, 8, 2, x0, d, 0, x)); /* raw: step * d, then ball and box */
    const float want_raw[8] = {1.0f, 0.875f, 0.5f, 0.125f, 2.0f, -1.0f, 0.25f, 1.0f};
    CHECK(memcmp(x, want_raw, sizeof x) == 0, "attack_step without sign: %g %g %g %g %g %g %g %g", x[0], x[1], x[2], x[3],
          x[4], x[5], x[6], x[7]);
    bf_attack_box four = box;
    four.c = 4;
    CHECK(b->ops->attack_step(b, &four, 8, 2, x0, d, 1, x) == BF_ERR_ARG, "4 channels are refused");
    CHECK(b->ops->attack_step(b, &box, 6, 2, x0, d, 1, x) == BF_ERR_ARG, "a partial image is refused");
}

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
    test_attack_step(b);
    free(src);
    free(dst);
    bf_backend_destroy(b);
    return bf_test_finish();
}
