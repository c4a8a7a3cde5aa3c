/* counter_hebb_cpu.c - the Counter-Hebb update of BU-TD networks on the CPU (reference backend).
 *
 * Counter-Hebb changes the synapse a -> b (BU) and its mirror b' -> a' (TD) by the product of the BU
 * activity a below and the TD activity b' above (specs/butd-counterhebb.md section 2.1), averaged
 * over the batch. The result goes into the gradient buffer backprop uses, so the optimisers apply it.
 * With shared weights it equals the backprop gradient of the mean loss (tests/test_butd_equivalence.c). */
#include <string.h>

#include "cpu_backend.h"

bf_status bf_cpu_counter_hebb_linear(bf_backend *b, const bf_linear_shape *s, const float *bu, const float *td,
                                     float *dw, float *dbias, float *dw_td) {
    (void)b;
    if (!s || s->n <= 0 || s->in <= 0 || s->out <= 0)
        return bf_error(BF_ERR_ARG, "counter_hebb_linear: bad shape");
    if (!bu || !td || !dw) return bf_error(BF_ERR_ARG, "counter_hebb_linear: NULL bu, td or dw");
    const int n = s->n, in = s->in, out = s->out;
    const float inv_n = 1.0f / (float)n;
    /* dw[o, i] = (1/n) sum_j td[j, o] * bu[j, i]: one output row per iteration, summed in sample order. */
#pragma omp parallel for schedule(static)
    for (int o = 0; o < out; o++) {
        float *row = dw + (size_t)o * in;
        memset(row, 0, sizeof(float) * (size_t)in);
        for (int j = 0; j < n; j++) {
            const float t = td[(size_t)j * out + o];
            if (t == 0.0f) continue; /* gated-off counter neurons contribute nothing */
            const float *a = bu + (size_t)j * in;
            for (int i = 0; i < in; i++) row[i] += t * a[i];
        }
        for (int i = 0; i < in; i++) row[i] *= inv_n;
        if (dbias) {
            double sum = 0.0;
            for (int j = 0; j < n; j++) sum += td[(size_t)j * out + o];
            dbias[o] = (float)(sum * inv_n);
        }
    }
    if (dw_td) {
        /* The separate TD weight is stored [in, out]: its update is the transpose. */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < in; i++)
            for (int o = 0; o < out; o++) dw_td[(size_t)i * out + o] = dw[(size_t)o * in + i];
    }
    return BF_OK;
}

bf_status bf_cpu_counter_hebb_conv2d(bf_backend *b, const bf_conv2d_shape *s, const float *bu, const float *td,
                                     float *dw, float *dbias, float *dw_td) {
    if (!s || s->n <= 0) return bf_error(BF_ERR_ARG, "counter_hebb_conv2d: bad shape");
    if (!bu || !td || !dw) return bf_error(BF_ERR_ARG, "counter_hebb_conv2d: NULL bu, td or dw");
    /* Summing td(output position) x bu(receptive field) over positions and samples is exactly the
     * convolution's weight gradient with td in the place of the output gradient: reuse it. */
    BF_TRY(bf_cpu_conv2d_backward_filter(b, s, bu, td, dw, dbias));
    const size_t wn = (size_t)s->c_out * (size_t)(s->c_in / s->groups) * (size_t)s->k_h * (size_t)s->k_w;
    const float inv_n = 1.0f / (float)s->n;
    for (size_t i = 0; i < wn; i++) dw[i] *= inv_n;
    if (dbias)
        for (int c = 0; c < s->c_out; c++) dbias[c] *= inv_n;
    if (dw_td) memcpy(dw_td, dw, sizeof(float) * wn); /* conv-transpose reads W's own layout */
    return BF_OK;
}
