/* shape.c - output sizes of convolutions and pools (PyTorch's floor formula), and the fit of a
 * flex layer's pool branch to its flex shape. */
#include "bioflex/ops.h"

bf_status bf_conv2d_shape_init(bf_conv2d_shape *s) {
    if (s->groups <= 0) s->groups = 1;
    if (s->stride <= 0) return bf_error(BF_ERR_ARG, "conv2d: stride must be >= 1 (got %d)", s->stride);
    if (s->c_in % s->groups || s->c_out % s->groups)
        return bf_error(BF_ERR_ARG, "conv2d: channels %d -> %d do not divide by groups %d", s->c_in, s->c_out, s->groups);
    s->h_out = (s->h_in + 2 * s->pad - s->k_h) / s->stride + 1;
    s->w_out = (s->w_in + 2 * s->pad - s->k_w) / s->stride + 1;
    if (s->h_in + 2 * s->pad < s->k_h || s->w_in + 2 * s->pad < s->k_w || s->h_out <= 0 || s->w_out <= 0)
        return bf_error(BF_ERR_ARG, "conv2d: kernel %dx%d (pad %d) does not fit input %dx%d",
                        s->k_h, s->k_w, s->pad, s->h_in, s->w_in);
    return BF_OK;
}

bf_status bf_local_shape_init(bf_local_shape *s) {
    if (s->stride <= 0 || s->k <= 0 || s->pad < 0)
        return bf_error(BF_ERR_ARG, "locally connected: kernel %d, stride %d, pad %d (kernel and stride >= 1, pad >= 0)",
                        s->k, s->stride, s->pad);
    s->h_out = (s->h_in + 2 * s->pad - s->k) / s->stride + 1;
    s->w_out = (s->w_in + 2 * s->pad - s->k) / s->stride + 1;
    if (s->h_in + 2 * s->pad < s->k || s->w_in + 2 * s->pad < s->k || s->h_out <= 0 || s->w_out <= 0)
        return bf_error(BF_ERR_ARG, "locally connected: kernel %dx%d (pad %d) does not fit input %dx%d", s->k, s->k,
                        s->pad, s->h_in, s->w_in);
    return BF_OK;
}

bf_status bf_pool_shape_init(bf_pool_shape *s) {
    if (s->stride <= 0) return bf_error(BF_ERR_ARG, "pool: stride must be >= 1 (got %d)", s->stride);
    if (s->pad * 2 > s->k)
        return bf_error(BF_ERR_ARG, "pool: padding %d exceeds half the kernel %d", s->pad, s->k);
    s->h_out = (s->h_in + 2 * s->pad - s->k) / s->stride + 1;
    s->w_out = (s->w_in + 2 * s->pad - s->k) / s->stride + 1;
    if (s->h_in + 2 * s->pad < s->k || s->w_in + 2 * s->pad < s->k || s->h_out <= 0 || s->w_out <= 0)
        return bf_error(BF_ERR_ARG, "pool: kernel %d (pad %d) does not fit input %dx%d", s->k, s->pad, s->h_in, s->w_in);
    return BF_OK;
}

bf_status bf_flex_pool_shape_check(const bf_pool_shape *ps, const bf_flex_shape *s, const char *op) {
    BF_TRY(bf_flex_shape_check(s, op));
    if (!ps) return bf_error(BF_ERR_ARG, "%s: NULL pool shape", op);
    bf_pool_shape expect = *ps;
    if (ps->k <= 0 || ps->k * ps->k > 255 || bf_pool_shape_init(&expect) != BF_OK || expect.h_out != ps->h_out ||
        expect.w_out != ps->w_out || ps->n != s->n || ps->c != s->c_in || (long)ps->h_out * ps->w_out != s->hw)
        return bf_error(BF_ERR_ARG,
                        "%s: pool shape n=%d c=%d %dx%d k=%d stride=%d pad=%d -> %dx%d does not fit the flex shape "
                        "n=%d c_in=%d hw=%d (or k*k > 255, or pad > k/2)",
                        op, ps->n, ps->c, ps->h_in, ps->w_in, ps->k, ps->stride, ps->pad, ps->h_out, ps->w_out, s->n,
                        s->c_in, s->hw);
    return BF_OK;
}

bf_status bf_flex_bn_shape_check(const bf_flex_shape *s, const bf_bn_shape *bs, const char *op) {
    if (!bs) return bf_error(BF_ERR_ARG, "%s: NULL batch-norm shape", op);
    if (bs->n != s->n || bs->c != s->c_out || bs->hw != s->hw || !(bs->eps > 0.0f))
        return bf_error(BF_ERR_ARG,
                        "%s: batch-norm shape n=%d c=%d hw=%d eps=%g does not fit the flex output n=%d c_out=%d hw=%d",
                        op, bs->n, bs->c, bs->hw, bs->eps, s->n, s->c_out, s->hw);
    return BF_OK;
}

bf_status bf_flex_route_bn_check(const bf_pool_shape *ps, const bf_flex_shape *s, const bf_bn_grad *bn,
                                 const char *op) {
    BF_TRY(bf_flex_pool_shape_check(ps, s, op));
    if (s->channels != BF_FLEX_CHANNELS_EXPAND) return bf_error(BF_ERR_ARG, "%s: EXPAND channels only", op);
    if (!bn || !bn->mean || !bn->invstd || !bn->gamma || !bn->coef || (bn->relu && !bn->beta))
        return bf_error(BF_ERR_ARG, "%s: NULL batch-norm statistics or coefficients", op);
    return BF_OK;
}

bf_status bf_flex_shape_check(const bf_flex_shape *s, const char *op) {
    if (!s) return bf_error(BF_ERR_ARG, "%s: NULL shape", op);
    if (s->n <= 0 || s->c_in <= 0 || s->c_out <= 0 || s->hw <= 0 ||
        (s->channels != BF_FLEX_CHANNELS_EXPAND && s->channels != BF_FLEX_CHANNELS_BILINEAR) ||
        (s->ties != BF_FLEX_TIE_SPLIT && s->ties != BF_FLEX_TIE_POOL))
        return bf_error(BF_ERR_ARG, "%s: invalid shape n=%d c_in=%d c_out=%d hw=%d channels=%d ties=%d", op, s->n,
                        s->c_in, s->c_out, s->hw, (int)s->channels, (int)s->ties);
    return BF_OK;
}
