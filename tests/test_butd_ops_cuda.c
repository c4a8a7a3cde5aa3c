/* test_butd_ops_cuda.c - the BU-TD ops on CUDA against the CPU reference, on the same inputs: the
 * Counter-Hebb ops (bf_ops.counter_hebb_linear / counter_hebb_conv2d: the update, the bias and the
 * mirror update of a separate TD weight), binary_xent (the per-task binary heads' loss), mul and the
 * multi_decoders slice ops
 * (skipped, exit 77, without a GPU). */
#include <stdlib.h>

#include "cuda_pair.h"
#include "testutil.h"

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 4242)) return bf_test_finish();
    /* Linear: a batch of 37 (odd sizes catch layout mistakes), 129 -> 65, gated TD activity (zeros). */
    bf_linear_shape ls = {.n = 37, .in = 129, .out = 65};
    pair bu = pair_rand((size_t)ls.n * ls.in, 0, 2), td = pair_rand((size_t)ls.n * ls.out, -1, 1);
    pair dw = pair_out((size_t)ls.out * ls.in), db = pair_out((size_t)ls.out), dt = pair_out((size_t)ls.out * ls.in);
    CHECK_OK(cpu->ops->counter_hebb_linear(cpu, &ls, bu.c, td.c, dw.c, db.c, dt.c));
    CHECK_OK(gpu->ops->counter_hebb_linear(gpu, &ls, bu.g, td.g, dw.g, db.g, dt.g));
    pair_compare("counter_hebb_linear dw", dw, 1e-6, 1e-5);
    pair_compare("counter_hebb_linear dbias", db, 1e-6, 1e-5);
    pair_compare("counter_hebb_linear dw_td (transpose)", dt, 1e-6, 1e-5);
    pair_free(&bu), pair_free(&td), pair_free(&dw), pair_free(&db), pair_free(&dt);

    /* Conv: stride 2, pad 1, groups 2 (and a depthwise one), as the BU-TD SimpleNet uses. */
    bf_conv2d_shape shapes[2] = {
        {.n = 5, .c_in = 6, .h_in = 13, .w_in = 11, .c_out = 8, .k_h = 3, .k_w = 3, .stride = 2, .pad = 1, .groups = 2},
        {.n = 4, .c_in = 8, .h_in = 10, .w_in = 10, .c_out = 8, .k_h = 2, .k_w = 2, .stride = 2, .pad = 0, .groups = 8}};
    for (int k = 0; k < 2; k++) {
        bf_conv2d_shape s = shapes[k];
        CHECK_OK(bf_conv2d_shape_init(&s));
        size_t nx = (size_t)s.n * s.c_in * s.h_in * s.w_in, ny = (size_t)s.n * s.c_out * s.h_out * s.w_out;
        size_t nw = (size_t)s.c_out * (s.c_in / s.groups) * s.k_h * s.k_w;
        pair x = pair_rand(nx, 0, 2), y = pair_rand(ny, -1, 1), w = pair_out(nw), b = pair_out((size_t)s.c_out),
             t = pair_out(nw);
        CHECK_OK(cpu->ops->counter_hebb_conv2d(cpu, &s, x.c, y.c, w.c, b.c, t.c));
        CHECK_OK(gpu->ops->counter_hebb_conv2d(gpu, &s, x.g, y.g, w.g, b.g, t.g));
        pair_compare(k ? "counter_hebb_conv2d dw (depthwise)" : "counter_hebb_conv2d dw (grouped, stride 2)", w, 1e-5, 1e-4);
        pair_compare("counter_hebb_conv2d dbias", b, 1e-6, 1e-5);
        pair_compare("counter_hebb_conv2d dw_td (copy)", t, 1e-5, 1e-4);
        pair_free(&x), pair_free(&y), pair_free(&w), pair_free(&b), pair_free(&t);
    }
    /* binary_xent: 1000 logits over a wide range (large |y| checks the overflow-free form). */
    enum { NB = 1000 };
    int32_t labels[NB];
    for (int i = 0; i < NB; i++) labels[i] = (i * 7 + i / 3) % 2;
    int32_t *lc = NULL, *lg = NULL;
    CHECK_OK(bf_alloc(cpu, sizeof labels, (void **)&lc));
    CHECK_OK(bf_alloc(gpu, sizeof labels, (void **)&lg));
    CHECK_OK(bf_to_device(cpu, lc, labels, sizeof labels));
    CHECK_OK(bf_to_device(gpu, lg, labels, sizeof labels));
    pair y = pair_rand(NB, -40, 40), loss = pair_out(NB), dy = pair_out(NB), hit = pair_out(NB);
    CHECK_OK(cpu->ops->binary_xent(cpu, NB, y.c, lc, loss.c, dy.c, hit.c));
    CHECK_OK(gpu->ops->binary_xent(gpu, NB, y.g, lg, loss.g, dy.g, hit.g));
    pair_compare("binary_xent loss", loss, 1e-6, 1e-6);
    pair_compare("binary_xent dlogits", dy, 1e-6, 1e-6);
    pair_compare("binary_xent correct", hit, 0, 0);
    pair_free(&y), pair_free(&loss), pair_free(&dy), pair_free(&hit);

    /* mul: the trained task head's straight-through factor (butd_passes.c). */
    pair m0 = pair_rand(4099, -2, 2), m1 = pair_rand(4099, 0, 3), prod = pair_out(4099);
    CHECK_OK(cpu->ops->mul(cpu, m0.c, m1.c, prod.c, 4099));
    CHECK_OK(gpu->ops->mul(gpu, m0.g, m1.g, prod.g, 4099));
    pair_compare("mul", prod, 0, 0);
    pair_free(&m0), pair_free(&m1), pair_free(&prod);

    /* task_slice_gather / scatter: multi_decoders' per-task heads, 37 samples, 4 tasks of 5. */
    enum { NS = 37, KS = 5, TS = 4 };
    int32_t task_of[NS];
    for (int i = 0; i < NS; i++) task_of[i] = (i * 3 + 1) % TS;
    int32_t *tc = NULL, *tg = NULL;
    CHECK_OK(bf_alloc(cpu, sizeof task_of, (void **)&tc));
    CHECK_OK(bf_alloc(gpu, sizeof task_of, (void **)&tg));
    CHECK_OK(bf_to_device(cpu, tc, task_of, sizeof task_of));
    CHECK_OK(bf_to_device(gpu, tg, task_of, sizeof task_of));
    pair full = pair_rand(NS * TS * KS, -1, 1), slice = pair_out(NS * KS), back = pair_out(NS * TS * KS);
    CHECK_OK(cpu->ops->task_slice_gather(cpu, NS, KS, TS, tc, full.c, slice.c));
    CHECK_OK(gpu->ops->task_slice_gather(gpu, NS, KS, TS, tg, full.g, slice.g));
    pair_compare_exact("task_slice_gather", slice);
    CHECK_OK(cpu->ops->task_slice_scatter(cpu, NS, KS, TS, tc, slice.c, back.c));
    CHECK_OK(gpu->ops->task_slice_scatter(gpu, NS, KS, TS, tg, slice.g, back.g));
    pair_compare_exact("task_slice_scatter", back);
    pair_free(&full), pair_free(&slice), pair_free(&back);
    bf_free(cpu, tc), bf_free(gpu, tg);
    bf_free(cpu, lc), bf_free(gpu, lg);
    bf_backend_destroy(cpu);
    bf_backend_destroy(gpu);
    return bf_test_finish();
}
