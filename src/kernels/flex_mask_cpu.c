/* flex_mask_cpu.c - the fused mask joint on the CPU (contract in ops.h at flex_mask_joint_forward;
 * the CUDA twin is flex_mask.cu).
 *
 * As for the channel-wise max (flex_pool_cpu.c), fusing the passes gains a CPU nothing: these ops
 * keep the fused contract (the layer stores neither P~, L nor M) but compute through the CPU
 * backend's own op-by-op sequence, with P~, L and M in backend scratch for one call:
 *   forward:  flex_widen_forward -> [flex_logits_forward] -> flex_mask_forward [-> flex_mask_stats]
 *   backward: the forward's M again (the same ops, inputs and draws: the same bits), then
 *             flex_mask_backward -> [+ dlogits when the logits are P~ - T] -> flex_widen_backward.
 * None of those ops takes scratch of its own, so the buffers carved here stay intact. The results are
 * the sequence's by construction, which is what the CUDA kernels are held to. */
#include "flex_cpu.h"

/* Carves floats (rounded to 64 bytes) off a scratch cursor. */
static float *carve_floats(char **cursor, size_t floats) {
    float *p = (float *)*cursor;
    *cursor += (floats * sizeof(float) + 63) & ~(size_t)63;
    return p;
}

static size_t scratch_bytes(size_t buffers, size_t floats) { return buffers * (64 + floats * sizeof(float)); }

/* widened = widen(pooled); *L = logits when given, else widened - threshold in logits_out. */
static bf_status logits_of(bf_backend *b, const bf_flex_shape *s, const float *pooled, const float *threshold,
                           const float *logits, float *widened, float *logits_out, const float **L) {
    BF_TRY(bf_cpu_flex_widen_forward(b, s, pooled, widened));
    if (logits) {
        *L = logits;
        return BF_OK;
    }
    BF_TRY(bf_cpu_flex_logits_forward(b, s, widened, threshold, logits_out));
    *L = logits_out;
    return BF_OK;
}

bf_status bf_cpu_flex_mask_joint_forward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                         bf_draws draws, const float *pooled, const float *threshold,
                                         const float *logits, const float *conv, float *y, float *conv_mask_sum,
                                         float *routing) {
    BF_TRY(bf_flex_shape_check(s, "flex_mask_joint_forward"));
    BF_TRY(check_kind(kind, "flex_mask_joint_forward"));
    REQUIRE("flex_mask_joint_forward", pooled, conv, y);
    if (!logits && !threshold) return bf_error(BF_ERR_ARG, "flex_mask_joint_forward: neither logits nor threshold");
    const size_t total = (size_t)s->n * s->c_out * s->hw;
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, scratch_bytes(3, total), &scratch));
    char *cursor = scratch;
    float *widened = carve_floats(&cursor, total), *logits_raw = carve_floats(&cursor, total);
    float *mask = carve_floats(&cursor, total);
    const float *L;
    BF_TRY(logits_of(b, s, pooled, threshold, logits, widened, logits_raw, &L));
    BF_TRY(bf_cpu_flex_mask_forward(b, s, kind, factor, draws, L, conv, widened, mask, y, conv_mask_sum));
    return routing ? bf_cpu_flex_mask_stats(b, mask, total, routing) : BF_OK;
}

bf_status bf_cpu_flex_mask_joint_backward(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                          bf_draws draws, const float *pooled, const float *threshold,
                                          const float *logits, const float *conv, const float *dy, float *dconv,
                                          float *dlogits, float *dpooled) {
    BF_TRY(bf_flex_shape_check(s, "flex_mask_joint_backward"));
    BF_TRY(check_kind(kind, "flex_mask_joint_backward"));
    REQUIRE("flex_mask_joint_backward", pooled, conv, dy, dconv, dlogits);
    if (!logits && !threshold) return bf_error(BF_ERR_ARG, "flex_mask_joint_backward: neither logits nor threshold");
    const size_t total = (size_t)s->n * s->c_out * s->hw;
    void *scratch;
    BF_TRY(bf_cpu_scratch(b, scratch_bytes(4, total), &scratch));
    char *cursor = scratch;
    float *widened = carve_floats(&cursor, total), *logits_raw = carve_floats(&cursor, total);
    float *mask = carve_floats(&cursor, total), *share = carve_floats(&cursor, total);
    const float *L;
    BF_TRY(logits_of(b, s, pooled, threshold, logits, widened, logits_raw, &L));
    /* the forward's y goes to share, which the backward overwrites next */
    BF_TRY(bf_cpu_flex_mask_forward(b, s, kind, factor, draws, L, conv, widened, mask, share, NULL));
    BF_TRY(bf_cpu_flex_mask_backward(b, s, kind, factor, L, mask, conv, widened, dy, dconv, dlogits, share));
    if (!dpooled) return BF_OK;
    if (!logits) BF_TRY(bf_cpu_add_inplace(b, share, dlogits, total)); /* L = P~ - T: dL reaches P~ too */
    return bf_cpu_flex_widen_backward(b, s, share, dpooled);
}
