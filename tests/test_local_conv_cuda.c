/* test_local_conv_cuda.c - the locally connected layer's ops on CUDA (local_conv.cu) against the CPU
 * reference (local_conv_cpu.c) on the same inputs (skipped, exit 77, without a GPU): forward, backward
 * data and backward filter at the spec's layer (n 4, 64 -> 64, 16x16, k 3 stride 1 pad 1) and at an
 * odd one (n 3, 2 -> 3, 7x5, k 3 stride 2 pad 0), each written over garbage; a second GPU run gives
 * the same bits; and on inputs in eighths, whose sums are exact in any order, both backends give
 * the same bits (the layouts, the zero padding and the col2im's windows, exactly). */
#include <stdlib.h>

#include "cuda_pair.h"
#include "testutil.h"

static void check_shape(bf_backend *cpu, bf_backend *gpu, int n, int c_in, int h, int w, int c_out, int k, int stride,
                        int pad) {
    bf_local_shape s = {.n = n, .c_in = c_in, .h_in = h, .w_in = w, .c_out = c_out, .k = k, .stride = stride, .pad = pad};
    CHECK_OK(bf_local_shape_init(&s));
    const size_t nx = (size_t)n * c_in * h * w, ny = (size_t)n * c_out * s.h_out * s.w_out;
    const size_t nw = (size_t)c_out * c_in * s.h_out * s.w_out * k * k;
    printf("n %d, %d -> %d, %dx%d -> %dx%d, k %d stride %d pad %d (%zu weights)\n", n, c_in, c_out, h, w, s.h_out,
           s.w_out, k, stride, pad, nw);
    pair x = pair_rand(nx, -1, 1), wt = pair_rand(nw, -1, 1), dy = pair_rand(ny, -1, 1);
    pair y = pair_out(ny), dx = pair_out(nx), dw = pair_out(nw);
    CHECK_OK(cpu->ops->local_forward(cpu, &s, x.c, wt.c, y.c));
    CHECK_OK(gpu->ops->local_forward(gpu, &s, x.g, wt.g, y.g));
    pair_compare("local_forward y", y, 2e-5, 1e-4);
    CHECK_OK(cpu->ops->local_backward_data(cpu, &s, dy.c, wt.c, dx.c));
    CHECK_OK(gpu->ops->local_backward_data(gpu, &s, dy.g, wt.g, dx.g));
    pair_compare("local_backward_data dx", dx, 2e-5, 1e-4);
    CHECK_OK(cpu->ops->local_backward_filter(cpu, &s, x.c, dy.c, dw.c));
    CHECK_OK(gpu->ops->local_backward_filter(gpu, &s, x.g, dy.g, dw.g));
    pair_compare("local_backward_filter dw", dw, 2e-5, 1e-4);

    /* again on the GPU, into other garbage: the same bits */
    pair y2 = pair_out(ny), dx2 = pair_out(nx), dw2 = pair_out(nw);
    CHECK_OK(gpu->ops->local_forward(gpu, &s, x.g, wt.g, y2.g));
    CHECK_OK(gpu->ops->local_backward_data(gpu, &s, dy.g, wt.g, dx2.g));
    CHECK_OK(gpu->ops->local_backward_filter(gpu, &s, x.g, dy.g, dw2.g));
    check_repeats("local_forward", y.g, y2.g, ny);
    check_repeats("local_backward_data", dx.g, dx2.g, nx);
    check_repeats("local_backward_filter", dw.g, dw2.g, nw);
    printf("  two GPU runs bit-identical (checked)\n");
    pair_free(&x), pair_free(&wt), pair_free(&dy), pair_free(&y), pair_free(&dx), pair_free(&dw);
    pair_free(&y2), pair_free(&dx2), pair_free(&dw2);

    /* eighths: every product a multiple of 1/64 and every sum exact, so the order does not matter */
    float *hx = bf_test_eighths(nx, -2, 32, (unsigned)pair_next_seed());
    float *hw = bf_test_eighths(nw, -2, 32, (unsigned)pair_next_seed());
    float *hdy = bf_test_eighths(ny, -2, 32, (unsigned)pair_next_seed());
    if (hx && hw && hdy) {
        pair ex = pair_from(hx, nx), ew = pair_from(hw, nw), edy = pair_from(hdy, ny);
        pair ey = pair_out(ny), edx = pair_out(nx), edw = pair_out(nw);
        CHECK_OK(cpu->ops->local_forward(cpu, &s, ex.c, ew.c, ey.c));
        CHECK_OK(gpu->ops->local_forward(gpu, &s, ex.g, ew.g, ey.g));
        CHECK_OK(cpu->ops->local_backward_data(cpu, &s, edy.c, ew.c, edx.c));
        CHECK_OK(gpu->ops->local_backward_data(gpu, &s, edy.g, ew.g, edx.g));
        CHECK_OK(cpu->ops->local_backward_filter(cpu, &s, ex.c, edy.c, edw.c));
        CHECK_OK(gpu->ops->local_backward_filter(gpu, &s, ex.g, edy.g, edw.g));
        pair_compare_exact("eighths: y", ey);
        pair_compare_exact("eighths: dx", edx);
        pair_compare_exact("eighths: dw", edw);
        pair_free(&ex), pair_free(&ew), pair_free(&edy), pair_free(&ey), pair_free(&edx), pair_free(&edw);
    }
    free(hx), free(hw), free(hdy);
}

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 3003)) return bf_test_finish();
    check_shape(cpu, gpu, 4, 64, 16, 16, 64, 3, 1, 1); /* the composite's layer1.2.conv2 */
    check_shape(cpu, gpu, 3, 2, 7, 5, 3, 3, 2, 0);     /* odd, strided, unpadded; the scratch reused */
    /* argument errors on the GPU too */
    bf_local_shape bad = {.n = 1, .c_in = 1, .h_in = 4, .w_in = 4, .c_out = 1, .k = 3, .stride = 1, .pad = 0};
    CHECK_OK(bf_local_shape_init(&bad));
    pair t = pair_rand(64, -1, 1);
    CHECK(gpu->ops->local_forward(gpu, &bad, NULL, t.g, t.g) == BF_ERR_ARG, "GPU forward with NULL x is BF_ERR_ARG");
    bad.w_out = 3;
    CHECK(gpu->ops->local_backward_filter(gpu, &bad, t.g, t.g, t.g) == BF_ERR_ARG,
          "GPU backward filter with a wrong output size is BF_ERR_ARG");
    pair_free(&t);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    return bf_test_finish();
}
