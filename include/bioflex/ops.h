/* ops.h - the backend interface: one table of operations (bf_ops) implemented twice, by the CPU
 * reference backend (src/kernels/ *_cpu.c: C11, OpenMP, OpenBLAS) and by the CUDA backend
 * (src/kernels/ *.cu: cuDNN, cuBLAS, custom kernels). Layers, models, the training loop and the
 * tests call only this table, so they are written once.
 *
 * Contract shared by both backends (tests/test_ops_cuda.c checks that they agree):
 *   - Every float pointer is memory of the backend (host memory for CPU, device memory for CUDA)
 *     obtained from bf_backend_alloc; tensors are fp32, contiguous, NCHW.
 *   - Operations are asynchronous on CUDA (one stream per backend); results become visible to the
 *     host after bf_backend_copy_to_host or bf_backend_synchronize.
 *   - Backward operations OVERWRITE their outputs (dx, dw, dbias); the model adds gradients of a
 *     tensor with several consumers with add_inplace.
 *   - Weight layouts are PyTorch's: conv [c_out, c_in/groups, k_h, k_w], linear [out, in].
 *   - Outputs may not alias inputs unless the function says so.
 *   - A backend may keep scratch memory (im2col buffers, cuDNN workspace) that grows on first use
 *     of a larger shape and is then reused: a training step after the first allocates nothing.
 */
#ifndef BIOFLEX_OPS_H
#define BIOFLEX_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "bioflex/hash.h"
#include "bioflex/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bf_device_kind { BF_DEVICE_CPU = 0, BF_DEVICE_CUDA = 1 } bf_device_kind;

/* fp32: IEEE fp32 arithmetic everywhere. tf32: cuDNN and cuBLAS may use TF32 tensor cores for
 * fp32 data (the CPU backend ignores the setting). */
/* fp32 everywhere; TF32 tensor cores for cuDNN's convolutions and cuBLAS's GEMMs; or for the
 * convolutions alone (TF32_CONV: PyTorch's defaults, cudnn.allow_tf32 on and matmul.allow_tf32 off). */
typedef enum bf_precision { BF_PRECISION_FP32 = 0, BF_PRECISION_TF32 = 1, BF_PRECISION_TF32_CONV = 2 } bf_precision;
/* "fp32", "tf32" or "tf32_conv" (config.c). */
const char *bf_precision_name(bf_precision p);

typedef struct bf_conv2d_shape {
    int n, c_in, h_in, w_in;
    int c_out, k_h, k_w, stride, pad, groups;
    int h_out, w_out; /* filled by bf_conv2d_shape_init */
} bf_conv2d_shape;

typedef struct bf_pool_shape {
    int n, c, h_in, w_in;
    int k, stride, pad;
    int h_out, w_out; /* filled by bf_pool_shape_init */
} bf_pool_shape;

typedef struct bf_bn_shape {
    int n, c, hw;    /* per-channel statistics over n*hw values */
    float eps;       /* added to the variance, PyTorch default 1e-5 */
    float momentum;  /* running = (1-momentum)*running + momentum*batch, PyTorch default 0.1 */
    int repeats;     /* > 1: the batch stands for this many copies of itself (a spiking network's layers
                        before its first neuron layer, [spiking] share_direct_input): the statistics
                        are the same, and the running variance's unbiased correction counts
                        n*hw*repeats values. 0 or 1: none */
    float var_floor; /* the running variance, after each update, is at least this ([model] bn_var_floor; 0: none) */
} bf_bn_shape;

/* The copies a batch-norm's batch stands for (bf_bn_shape.repeats, at least 1). */
static inline double bf_bn_copies(const bf_bn_shape *s) { return s->repeats > 1 ? (double)s->repeats : 1.0; }

typedef struct bf_linear_shape {
    int n, in, out;
} bf_linear_shape;

/* A locally connected 2-D layer (../shared/specs/v1-constrained.md 3): a convolution whose weights
 * differ at every output position. x [n, c_in, h_in, w_in] zero-padded by pad on all sides, k x k
 * windows at stride `stride`; y [n, c_out, h_out, w_out]:
 *   y[n, o, i, j] = sum over c, a, b of w[o, c, i, j, a*k + b] * x_pad[n, c, i*stride + a, j*stride + b]
 * w in the reference's layout [c_out, c_in, h_out, w_out, k*k] (its leading 1 dropped); no bias.
 * h_out = (h_in + 2 pad - k) / stride + 1, likewise w_out (bf_local_shape_init). */
typedef struct bf_local_shape {
    int n, c_in, h_in, w_in;
    int c_out, k, stride, pad;
    int h_out, w_out; /* filled by bf_local_shape_init */
} bf_local_shape;

/* Flexible neurons (FlexNet, ../shared/specs/flexnet.md section 1): every output element is the
 * conv response C or the widened max-pool P~ of the input, per element. The pool branch is a
 * max-pool of x with the conv's kernel, stride and padding (maxpool_forward, [n, c_in, h, w] ->
 * P [n, c_in, h_out, w_out]); "widening" maps P to the conv's c_out channels:
 *   EXPAND   (FlexNet): c_out % c_in == 0: channel j copies P channel j / (c_out/c_in) (block
 *            copy); otherwise channel j copies P channel j % c_in (tiling; c_out < c_in takes the
 *            first c_out channels);
 *   BILINEAR (PlasticFlex, FlexNet's older flex_v1/v2): linear interpolation along the channel
 *            axis as F.interpolate(align_corners=False): src = max(0, (j + 0.5) * c_in / c_out - 0.5),
 *            i0 = floor(src), i1 = min(i0 + 1, c_in - 1), t = src - i0,
 *            P~_j = (1 - t) * P_i0 + t * P_i1.
 * The backward of widening (fold-back) sums each widened gradient into the P channels it came
 * from with the same weights. */
/* The tuned divisive normalisation's channel distance (divnorm_weights below; [model] oci_distance):
 * opponent inhibits a channel most by the one opposite it on the ring, as the reference codes it;
 * similar most by itself and its neighbours (v1-constrained.md 12 Q5: which was meant is unknown). */
typedef enum bf_oci_distance { BF_OCI_OPPONENT = 0, BF_OCI_SIMILAR = 1 } bf_oci_distance;

typedef enum bf_flex_channel_rule { BF_FLEX_CHANNELS_EXPAND = 0, BF_FLEX_CHANNELS_BILINEAR = 1 } bf_flex_channel_rule;
/* Ties C == P~ of the channel-wise max: SPLIT gives each branch half the gradient (torch.maximum,
 * FlexNet); POOL gives it all to the pool branch (the older stack-and-argmax code, PlasticFlex). */
typedef enum bf_flex_tie_rule { BF_FLEX_TIE_SPLIT = 0, BF_FLEX_TIE_POOL = 1 } bf_flex_tie_rule;
/* Masks of the mask joint (flexnet.md 1.5), M = mask(L) with L the logits:
 *   SIGMOID_HARD: clamp(L/6 + 1/2, 0, 1), dM/dL = 1/6 strictly inside (-3, 3), else 0;
 *   SIGMOID_MUL:  sigmoid(f*L), dM/dL = f*s*(1-s);
 *   STE_FPBP: 1[L > 0.5], identity backward;   STE_FPBS: 1[L > 0.5], backward sigmoid'(L);
 *   STE_FSBP: 1[sigmoid(L) > 0.5], identity;   STE_FSBS: 1[sigmoid(L) > 0.5], sigmoid'(L);
 *   STOCHASTIC_{FP,FS,FC}{BP,BS}: stochastic rounding of L (FP), sigmoid(L) (FS) or clamp(L,0,1) (FC):
 *            v = that value, M = floor(v) + 1[u < v - floor(v)] with u = bf_draw_uniform(draws, i);
 *            backward identity (BP) or sigmoid'(L) (BS);
 *   STOCHASTIC_{FS,FC}BS_SQUASHED: the reference code's FSBS/FCBS (plasticflex.md 2.4): the same forward,
 *            backward sigmoid'(v) at the already squashed v = sigmoid(L) or clamp(L, 0, 1). */
typedef enum bf_flex_mask {
    BF_FLEX_MASK_SIGMOID_HARD = 0,
    BF_FLEX_MASK_SIGMOID_MUL,
    BF_FLEX_MASK_STE_FPBP,
    BF_FLEX_MASK_STE_FPBS,
    BF_FLEX_MASK_STE_FSBP,
    BF_FLEX_MASK_STE_FSBS,
    BF_FLEX_MASK_STOCHASTIC_FPBP,
    BF_FLEX_MASK_STOCHASTIC_FPBS,
    BF_FLEX_MASK_STOCHASTIC_FSBP,
    BF_FLEX_MASK_STOCHASTIC_FSBS,
    BF_FLEX_MASK_STOCHASTIC_FCBP,
    BF_FLEX_MASK_STOCHASTIC_FCBS,
    BF_FLEX_MASK_STOCHASTIC_FSBS_SQUASHED,
    BF_FLEX_MASK_STOCHASTIC_FCBS_SQUASHED,
    BF_FLEX_MASK_COUNT
} bf_flex_mask;

/* Spiking neurons (plasticflex.md sections 3 and 9; SpikingJelly's multi-step neurons). A neuron
 * layer sees its input as [T, n]: T time steps of n elements (batch x features), time outermost.
 * LIF/IF, per element, from V[-1] = 0:
 *   H[t] = decay * V[t-1] + X[t]                (IF: decay is taken as 1)
 *   S[t] = 1[H[t] - threshold >= 0]              the output spike, 0 or 1
 *   V[t] = H[t] * (1 - S[t])        reset HARD (to zero)
 *        = H[t] - threshold * S[t]  reset SOFT (by subtraction)
 *        = H[t]                     reset NONE
 * Backward through time (STBP/BPTT) with the surrogate dS/dH = g(u), u = H[t] - threshold:
 *   dH[t] = dY[t] * g(u) + dV[t] * dV/dH,  dX[t] = dH[t],  dV[t-1] = decay * dH[t]   (dV[T-1] = 0)
 *   dV/dH = (1 - S) - H * g(u)   HARD   (the second term dropped when detach_reset)
 *         = 1 - threshold * g(u) SOFT   (likewise)
 *         = 1                    NONE
 * through_time = 0 drops the temporal path (dV[t-1] = 0): each step is trained on its own.
 * Stateless activations of the reference code, per element of [T, n]:
 *   CLAMP01: y = clamp(x, 0, 1), dy/dx = 1 for 0 <= x <= 1 (inclusive), else 0;
 *   STEP:    y = 1[x > 0] (threshold ignored), dy/dx = g(x).
 * Surrogates g(u):
 *   SIGMOID:     alpha * s * (1 - s), s = sigmoid(alpha * u)
 *   ARCTAN:      (alpha / 2) / (1 + (pi/2 * alpha * u)^2)
 *   RECTANGULAR: height * 1[|u| < width / 2]
 *   TRIANGLE:    height * max(0, 1 - |u| / width)
 *   TANH:        height * (1 - tanh(u)^2)   (height 0.3: the reference's 0.3*tanh') */
typedef enum bf_neuron_kind { BF_NEURON_LIF = 0, BF_NEURON_IF, BF_NEURON_CLAMP01, BF_NEURON_STEP } bf_neuron_kind;
typedef enum bf_reset_mode { BF_RESET_HARD = 0, BF_RESET_SOFT, BF_RESET_NONE } bf_reset_mode;
typedef enum bf_surrogate {
    BF_SURROGATE_SIGMOID = 0,
    BF_SURROGATE_ARCTAN,
    BF_SURROGATE_RECTANGULAR,
    BF_SURROGATE_TRIANGLE,
    BF_SURROGATE_TANH
} bf_surrogate;

typedef struct bf_neuron_params {
    bf_neuron_kind kind;
    int T;                  /* time steps */
    float decay, threshold;
    bf_reset_mode reset;
    int detach_reset;
    int through_time;       /* 1: backprop through the membrane over all T (STBP) */
    bf_surrogate surrogate;
    float alpha, width, height;
    int shared_input;       /* 1: the input is one step, [n], the same at every step (a spiking network's
                               first neuron layer under direct coding, [spiking] share_direct_input):
                               neuron_forward (charge NULL) and neuron_forward_bn read x[i] at every t,
                               and neuron_backward_bn's dx is [n] too, the sum of the steps' gradients
                               (dx[T-1] + dx[T-2] + ... + dx[0], in that order, each rounded);
                               neuron_backward refuses it */
} bf_neuron_params;

/* A LIF/IF layer's input named by the batch-norm that produced it ([spiking] recompute_charge): the
 * input is xin normalised per channel with that batch-norm's saved training statistics,
 *   X[t*n + i] = (xin[t*n + i] - mean[ch]) * (gamma[ch] * invstd[ch]) + beta[ch],  ch = (i / hw) % c,
 * each operation rounded on its own, as batchnorm_forward_train and batchnorm_forward_saved round
 * them: the very bits of the batch-norm output it stands for (n is a multiple of c * hw). */
typedef struct bf_neuron_bn_input {
    int c, hw;
    const float *mean, *invstd, *gamma, *beta; /* [c] each: save_mean, save_invstd and the parameters */
} bf_neuron_bn_input;

/* attack_step's per-channel constants (ops.h), in the units of the normalised input: an image whose
 * channel ch was normalised as (p - mean) / std takes a pixel-space step s as s / std, and the
 * pixel range [0, 1] as [-mean / std, (1 - mean) / std]. INFINITY disables a bound. */
typedef struct bf_attack_box {
    int c; /* channels, 1..3 */
    float step[3], radius[3], lo[3], hi[3];
} bf_attack_box;

/* attack_step's argument checks, the same on both backends (image_ops_cpu.c). */
bf_status bf_attack_step_check(const bf_attack_box *box, size_t n, size_t plane, const float *x0, const float *d,
                               const float *x);

/* The longest T neuron_backward_bn takes: the GPU keeps each element's T charges in registers. */
#define BF_NEURON_BN_MAX_T 32

/* A batch-norm's backward apply handed to the layer before it (batchnorm_backward_sums, then
 * flex_pool_max_backward_scatter_bn): its saved statistics and parameters, coef = {mean_dy[c],
 * mean_dy_xhat[c]} as batchnorm_backward_sums wrote them, and relu: the batch-norm runs its ReLU
 * (batchnorm_relu_backward's mask). Its dx of one element of channel ch is then
 *   g  = dy, or with relu 0 where (x - mean) * (gamma * invstd) + beta <= 0 (or NaN),
 *   dx = (gamma * invstd) * ((g - mean_dy) - ((x - mean) * invstd) * mean_dy_xhat),
 * each operation rounded on its own: the bits of batchnorm_backward's (batchnorm_relu_backward's). */
typedef struct bf_bn_grad {
    int relu;
    const float *mean, *invstd, *gamma, *beta, *coef;
} bf_bn_grad;

typedef struct bf_flex_shape {
    int n, c_in, c_out, hw;       /* P is [n, c_in, hw], C, P~, y are [n, c_out, hw] (hw = h_out*w_out) */
    bf_flex_channel_rule channels;
    bf_flex_tie_rule ties;
} bf_flex_shape;

/* Output sizes with PyTorch's floor formula; returns BF_ERR_ARG (with a message) when the
 * output would be empty or the channel counts do not divide by groups. */
bf_status bf_conv2d_shape_init(bf_conv2d_shape *s);
bf_status bf_local_shape_init(bf_local_shape *s);
bf_status bf_pool_shape_init(bf_pool_shape *s);
/* BF_OK when every size of s is positive and its rules are known; else BF_ERR_ARG naming op. */
bf_status bf_flex_shape_check(const bf_flex_shape *s, const char *op);
/* BF_OK when s is valid and ps is a valid pool over [n, c_in, h, w] whose output has the flex
 * shape's n, c_in and hw, with k*k <= 255 (the flex_pool_* ops' window bytes); else BF_ERR_ARG
 * naming op and both shapes. */
bf_status bf_flex_pool_shape_check(const bf_pool_shape *ps, const bf_flex_shape *s, const char *op);
/* BF_OK when the batch-norm shape bs (eps > 0) is over the flex output of s (valid): n, c_out, hw;
 * else BF_ERR_ARG naming op and both shapes. */
bf_status bf_flex_bn_shape_check(const bf_flex_shape *s, const bf_bn_shape *bs, const char *op);
/* The routes that apply the next batch-norm's dx (flex_pool_max_backward_scatter_bn,
 * flex_pool_max_backward_bn): bf_flex_pool_shape_check, EXPAND channels, and bn with its statistics,
 * gamma, coefficients (and beta under its ReLU) given; else BF_ERR_ARG naming op. */
bf_status bf_flex_route_bn_check(const bf_pool_shape *ps, const bf_flex_shape *s, const bf_bn_grad *bn,
                                 const char *op);

typedef struct bf_backend bf_backend;

typedef struct bf_ops {
    /* ---- memory ---- */
    bf_status (*alloc)(bf_backend *b, size_t bytes, void **ptr); /* zero-filled */
    void (*free)(bf_backend *b, void *ptr);
    /* src_host is ordinary (pageable) memory the caller may reuse or free as soon as this returns:
     * CUDA stages it before returning. Pinned memory would be read later, in stream order: copy it
     * with its own fence, as batch_upload.cu does. */
    bf_status (*copy_to_device)(bf_backend *b, void *dst, const void *src_host, size_t bytes);
    bf_status (*copy_to_host)(bf_backend *b, void *dst_host, const void *src, size_t bytes); /* waits */
    bf_status (*copy)(bf_backend *b, void *dst, const void *src, size_t bytes);           /* device to device */
    bf_status (*synchronize)(bf_backend *b);

    /* ---- elementwise and reductions ---- */
    bf_status (*fill)(bf_backend *b, float *x, float value, size_t n);
    bf_status (*scale)(bf_backend *b, float *x, float alpha, size_t n);                      /* x *= alpha */
    bf_status (*add)(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);   /* y = x0 + x1; y may alias */
    bf_status (*add_inplace)(bf_backend *b, float *y, const float *x, size_t n);            /* y += x */
    /* y += alpha * x, the product rounded before the sum (no fused multiply-add), as on the CPU */
    bf_status (*axpy)(bf_backend *b, float alpha, const float *x, float *y, size_t n);
    /* *out = sum of x[i]^2 (a device scalar), summed in a fixed order so results repeat. */
    bf_status (*sum_squares)(bf_backend *b, const float *x, size_t n, float *out);
    /* *acc += sum of x[i] (a device scalar accumulator, for losses and correct counts). */
    bf_status (*accumulate_sum)(bf_backend *b, const float *x, size_t n, float *acc);

    /* ---- convolution (cross-correlation, like PyTorch) ---- */
    bf_status (*conv2d_forward)(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                const float *w, const float *bias /* nullable */, float *y);
    bf_status (*conv2d_backward_data)(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                      const float *w, float *dx);
    /* dx += the same backward-data, for a layer whose other branch wrote its share of dx first (the
     * flex max joint: flex_pool_max_backward_scatter). The CPU adds the whole result to dx, one
     * rounding per element; CUDA blends with cuDNN's beta = 1, which an algorithm that accumulates
     * in parts may round more than once (compare CUDA with a tolerance). dx keeps its values through
     * the first call's algorithm search. */
    bf_status (*conv2d_backward_data_add)(bf_backend *b, const bf_conv2d_shape *s, const float *dy,
                                          const float *w, float *dx);
    bf_status (*conv2d_backward_filter)(bf_backend *b, const bf_conv2d_shape *s, const float *x,
                                        const float *dy, float *dw, float *dbias /* nullable */);
    /* Memory the convolutions that follow may use as their workspace (NULL, 0: none), until the
     * next hint: the memory plan hands over activation memory that is dead during a layer's pass
     * (memory_plan.c). A backend whose convolutions need no workspace ignores it (the CPU's). */
    bf_status (*conv_workspace_hint)(bf_backend *b, void *p, size_t bytes);

    /* ---- batch normalisation over (n, hw) per channel ----
     * train: normalises with the batch statistics (biased variance), stores mean and 1/sqrt(var+eps)
     * for the backward pass, and updates the running statistics with the UNBIASED variance
     * (n*hw/(n*hw-1)), as PyTorch does. eval: normalises with the running statistics. train with
     * y NULL: the statistics alone (gamma and beta may then be NULL), for a LIF/IF layer that
     * normalises its input itself (neuron_forward_bn) or an apply after (batchnorm_relu_apply). */
    bf_status (*batchnorm_forward_train)(bf_backend *b, const bf_bn_shape *s, const float *x,
                                         const float *gamma, const float *beta, float *y,
                                         float *save_mean, float *save_invstd,
                                         float *running_mean, float *running_var);
    bf_status (*batchnorm_forward_eval)(bf_backend *b, const bf_bn_shape *s, const float *x,
                                        const float *gamma, const float *beta,
                                        const float *running_mean, const float *running_var, float *y);
    /* y again as batchnorm_forward_train (or synchronised batch-norm) wrote it, from the statistics
     * it saved, bit for bit; nothing else is written: a batch-norm output computed again in the
     * backward instead of kept (the flex mask joint's logits). */
    bf_status (*batchnorm_forward_saved)(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                         const float *beta, const float *save_mean, const float *save_invstd,
                                         float *y);
    bf_status (*batchnorm_backward)(bf_backend *b, const bf_bn_shape *s, const float *x,
                                    const float *dy, const float *gamma, const float *save_mean,
                                    const float *save_invstd, float *dx, float *dgamma, float *dbeta);
    /* A batch-norm and the ReLU after it in one pass each way (the model's fused pair), from the
     * statistics batchnorm_forward_train saved (called with y NULL):
     * apply: y = relu(z), z = (x - mean) * (gamma * invstd) + beta: the bits of
     *   batchnorm_forward_saved then relu_forward;
     * backward: batchnorm_backward of dy * 1[z > 0], with z computed again from x (the mask
     *   relu_backward takes from relu's output, z > 0 exactly when relu(z) > 0): the bits of
     *   relu_backward then batchnorm_backward, dx, dgamma and dbeta. dy is the ReLU's output
     *   gradient; dx may not alias it. */
    bf_status (*batchnorm_relu_apply)(bf_backend *b, const bf_bn_shape *s, const float *x, const float *gamma,
                                      const float *beta, const float *save_mean, const float *save_invstd, float *y);
    bf_status (*batchnorm_relu_backward)(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                         const float *gamma, const float *beta, const float *save_mean,
                                         const float *save_invstd, float *dx, float *dgamma, float *dbeta);
    /* The first half of batchnorm_backward (relu 0) or batchnorm_relu_backward (relu 1; beta read
     * only then): dgamma and dbeta (nullable) with those ops' bits, and coef [2c], the means their dx
     * uses (bf_bn_grad), so that the layer before the batch-norm can apply it as it reads the
     * gradient ([model] fuse_flex_bn: flex_pool_max_backward_scatter_bn). */
    bf_status (*batchnorm_backward_sums)(bf_backend *b, const bf_bn_shape *s, int relu, const float *x, const float *dy,
                                         const float *gamma, const float *beta, const float *save_mean,
                                         const float *save_invstd, float *dgamma, float *dbeta, float *coef);

    /* ---- activations: y = max(x, 0); backward uses the OUTPUT y, so y may alias x and dx may alias dy */
    bf_status (*relu_forward)(bf_backend *b, const float *x, float *y, size_t n);
    bf_status (*relu_backward)(bf_backend *b, const float *y, const float *dy, float *dx, size_t n);
    /* A residual sum and the ReLU after it as one pass each way ([model] fuse_add_relu): forward
     * y = max(x0 + x1, 0), the bits of add then relu_forward (y may alias x0 or x1); backward
     * dx0 = dx1 = relu_backward(y, dy), the gradient of both summands, written in the one pass that
     * reads y and dy (either may be NULL, not wanted, and either may alias dy). */
    bf_status (*add_relu_forward)(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);
    bf_status (*add_relu_backward)(bf_backend *b, const float *y, const float *dy, float *dx0, float *dx1, size_t n);
    /* LeakyReLU (the spatial-attention logits' activation): y = x > 0 ? x : x * slope, as PyTorch (a
     * NaN passes); backward from the OUTPUT, which is > 0 exactly when x is (slope > 0):
     * dx = y > 0 ? dy : dy * slope. y may alias x and dx dy. */
    bf_status (*leaky_relu_forward)(bf_backend *b, const float *x, float *y, size_t n, float slope);
    bf_status (*leaky_relu_backward)(bf_backend *b, const float *y, const float *dy, float *dx, size_t n, float slope);

    /* ---- pooling ----
     * max: padding counts as -infinity; argmax holds, per output, the index h*w_in+w of the chosen
     * input within its (n, c) plane, the first maximum in row-major window order on ties.
     * avg: padding counts as zero and the divisor is k*k (PyTorch count_include_pad=True).
     * backward overwrites all of dx. */
    bf_status (*maxpool_forward)(bf_backend *b, const bf_pool_shape *s, const float *x, float *y,
                                 int32_t *argmax);
    bf_status (*maxpool_backward)(bf_backend *b, const bf_pool_shape *s, const float *dy,
                                  const int32_t *argmax, float *dx);
    bf_status (*avgpool_forward)(bf_backend *b, const bf_pool_shape *s, const float *x, float *y);
    bf_status (*avgpool_backward)(bf_backend *b, const bf_pool_shape *s, const float *dy, float *dx);
    /* mean over h*w per (n, c): x [n, c, hw] -> y [n, c] */
    bf_status (*global_avgpool_forward)(bf_backend *b, int n, int c, int hw, const float *x, float *y);
    bf_status (*global_avgpool_backward)(bf_backend *b, int n, int c, int hw, const float *dy, float *dx);

    /* ---- fully connected: y[n, out] = x[n, in] * w[out, in]^T + bias ---- */
    bf_status (*linear_forward)(bf_backend *b, const bf_linear_shape *s, const float *x,
                                const float *w, const float *bias /* nullable */, float *y);
    /* dx nullable (first layer), dw nullable (a frozen weight), dbias nullable (no bias or frozen);
     * x is read only for dw: nullable when dw is (BU-TD's transposed passes need dx alone) */
    bf_status (*linear_backward)(bf_backend *b, const bf_linear_shape *s, const float *x,
                                 const float *w, const float *dy, float *dx, float *dw, float *dbias);

    /* ---- dropout (inverted): the elements of a group of `group` consecutive ones are kept together,
     * when the draw of the group's first element, bf_draw_uniform(draws, i - i % group), is >= p, and
     * scaled by 1/(1-p). group = 1 drops single elements (nn.Dropout); group = h*w whole channels of a
     * sample (nn.Dropout2d), whose draws stay those of the same samples in any batch since the
     * per-sample counters (hash.h) are multiples of h*w. The backward recomputes the mask from
     * (draws, i), so no mask is stored and the CPU and CUDA masks are identical. p = 0 copies. */
    bf_status (*dropout_forward)(bf_backend *b, const float *x, float *y, size_t n, size_t group, float p,
                                 bf_draws draws);
    bf_status (*dropout_backward)(bf_backend *b, const float *dy, float *dx, size_t n, size_t group, float p,
                                  bf_draws draws);

    /* ---- loss and metrics ----
     * Softmax cross-entropy with label smoothing eps: target = (1-eps)*onehot + eps/k.
     * losses[i] = -sum_j target_j * log softmax(logits_i)_j (per sample).
     * dlogits (nullable) = (softmax - target) * grad_scale; grad_scale is 1/batch for a mean loss. */
    bf_status (*softmax_xent)(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                              float smoothing, float grad_scale, float *losses, float *dlogits);
    /* correct1[i] = 1 if labels[i] is the arg-max, correct5[i] = 1 if it is among the min(5,k)
     * largest logits. Ties are ordered by class index, as torch.argmax does: a label is in the top m
     * when fewer than m logits are strictly greater or equal at a lower index. A NaN label logit is
     * never correct. */
    bf_status (*topk_correct)(bf_backend *b, int n, int k, const float *logits, const int32_t *labels,
                              float *correct1, float *correct5);

    /* ---- optimisers over a flat parameter buffer (PyTorch semantics) ----
     * grad_scale (nullable device scalar) multiplies every gradient first: gradient clipping.
     * SGD: g += wd*p; buf = momentum*buf + g (buf = g on the first step, when first_step != 0);
     *      update = nesterov ? g + momentum*buf : buf; p -= lr*update.
     * Adam and AdamW, one op: decoupled_decay != 0 is torch.optim.AdamW, 0 is torch.optim.Adam:
     *      AdamW: p *= 1 - lr*wd (decoupled decay);  Adam: g += wd*p (coupled L2, before the moments);
     *      then m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
     *      p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps), with t = step (1-based). No amsgrad.
     * One departure from PyTorch: buf, m and v are stored as 0 once their magnitude falls below
     * FLT_MIN (a subnormal). A parameter whose gradient stays 0 (a classifier weight on an input that is
     * always 0) has its momentum decay geometrically into the subnormal range, where x86 arithmetic is
     * 10-100 times slower (an AdamW VGG-6 on Fashion-MNIST fell from 220 to 88 images/s in its second
     * epoch, 20 M of its 43 M first moments subnormal); such a momentum moves no weight by a
     * representable amount. The update uses the stored (flushed) value. */
    bf_status (*sgd_update)(bf_backend *b, float *params, const float *grads, float *momentum_buf,
                            size_t n, float lr, float momentum, float weight_decay, int nesterov,
                            int first_step, const float *grad_scale);
    bf_status (*adam_update)(bf_backend *b, float *params, const float *grads, float *m, float *v,
                             size_t n, float lr, float beta1, float beta2, float eps,
                             float weight_decay, int decoupled_decay, long step, const float *grad_scale);
    /* *scale = min(1, max_norm / (sqrt(*sum_squares) + 1e-6)), computed on the device. */
    bf_status (*clip_scale)(bf_backend *b, const float *sum_squares, float max_norm, float *scale);

    /* ---- flexible neurons (see bf_flex_shape) ----
     * widen: pooled [n, c_in, hw] -> widened [n, c_out, hw]; backward (fold-back) overwrites dpooled. */
    bf_status (*flex_widen_forward)(bf_backend *b, const bf_flex_shape *s, const float *pooled, float *widened);
    bf_status (*flex_widen_backward)(bf_backend *b, const bf_flex_shape *s, const float *dwidened, float *dpooled);
    /* Channel-wise max joint: y = max(conv, widen(pooled)) per element, computing the widening on
     * the fly. conv_wins (nullable device scalar) += the number of elements with conv > widened
     * (strict: ties count as pool), for the conv-ratio monitor. */
    bf_status (*flex_max_forward)(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                  float *y, float *conv_wins);
    /* dconv = dy where conv > P~, dy/2 on ties under SPLIT (0 under POOL), else 0; the rest of dy
     * goes to P~ and is folded back into dpooled [n, c_in, hw]. Both overwritten. */
    bf_status (*flex_max_backward)(bf_backend *b, const bf_flex_shape *s, const float *conv, const float *pooled,
                                   const float *dy, float *dconv, float *dpooled);
    /* Fused channel-wise max (what a flex layer with the max joint runs; flexnet.md 1.2-1.4, 1.7):
     * the pool branch, widening, joint and bookkeeping in one pass each way, never storing P or P~.
     * ps is the pool branch over x [n, c_in, h_in, w_in] (ps->n == s->n, ps->c == s->c_in,
     * ps->h_out * ps->w_out == s->hw, ps->k * ps->k <= 255).
     * forward: y [n, c_out, hw] holds the conv output on entry and max(C, P~) on return (as
     *   flex_max_forward: a NaN on either side propagates), where C is that output plus bias[j] for
     *   output channel j, one float add as it is read (bias [c_out] nullable: then C is y as given;
     *   the conv's bias folded into this pass, [model] fold_conv_bias, so that the conv adds none:
     *   on the GPU the same bits as conv2d_forward adding it). window [n, c_in, hw], one byte per
     *   pooled element: its maximum's place in the k*k window, kh*k + kw (as maxpool_forward: the
     *   first maximum in row-major order, a NaN wins, padding never does); written only for the
     *   pooled channels some output channel taps, the others are left as they were. winners, one
     *   bit per element e of y (bit e%32 of word e/32, (n*c_out*hw + 31)/32 words, the last word's
     *   spare bits 0): 1 where C >= P~, the conv won or tied. ties, the same layout: 1 where
     *   C == P~ (never for a NaN). conv_wins as flex_max_forward.
     * backward: dconv [n, c_out, hw] = dy where C > P~ (winners set, ties clear), dy/2 on ties under
     *   SPLIT (0 under POOL), else 0, overwritten; under EXPAND dconv may be dy itself (each element
     *   of dy has one tap, so it is read once, before its dconv is written). The two bitmaps are
     *   all it reads besides dy, so the backward is one pass over dy and dconv. dpooled [n, c_in,
     *   hw] (nullable: then only dconv) = the fold-back of dy - dconv, as flex_max_backward,
     *   overwritten. All results are bit-identical to maxpool_forward + flex_max_forward +
     *   flex_max_backward on every backend. */
    bf_status (*flex_pool_max_forward)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                       const float *bias, float *y, uint8_t *window, uint32_t *winners, uint32_t *ties,
                                       float *conv_wins);
    bf_status (*flex_pool_max_backward)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                        const uint32_t *winners, const uint32_t *ties, const float *dy, float *dconv,
                                        float *dpooled);
    /* flex_pool_max_forward, then the training statistics of the batch-norm after the layer, over
     * the layer's output y (bs: n, c, hw equal to s's n, c_out, hw): save_mean, save_invstd,
     * running_mean and running_var as batchnorm_forward_train with y NULL writes them ([model]
     * fuse_flex_bn_stats; running_* nullable). On the GPU the flex pass adds each element it writes
     * to its channel's sums, so that the batch-norm does not read y again for them: the same double
     * terms in another order, so the statistics may differ from batchnorm_forward_train's in their
     * last bit, the same on every device (both kernel sets; BILINEAR and shapes whose sums do not fit
     * the kernel's shared memory, 47 KiB, take that second pass). On the CPU the bits of the two ops. */
    bf_status (*flex_pool_max_forward_bn_stats)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                const bf_bn_shape *bs, const float *x, const float *bias, float *y,
                                                uint8_t *window, uint32_t *winners, uint32_t *ties, float *conv_wins,
                                                float *save_mean, float *save_invstd, float *running_mean,
                                                float *running_var);
    /* dx [n, c_in, h_in, w_in] += maxpool_backward of dpooled through window (the pool branch's
     * share of the input gradient, added after the conv's backward-data wrote dx; each input
     * element sums its windows in ascending output order, as maxpool_backward, then adds). Zeros
     * of dpooled are skipped without reading their window byte, so dpooled must be 0 on pooled
     * channels no output channel taps (whose bytes forward left unwritten), as the backward makes it. */
    bf_status (*flex_pool_scatter_add)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                       const uint8_t *window, const float *dpooled, float *dx);
    /* flex_pool_max_backward and the scatter in one pass, for EXPAND (BF_ERR_ARG for BILINEAR):
     * dconv as flex_pool_max_backward (dy itself allowed), and dx [n, c_in, h_in, w_in] =
     * maxpool_backward of the pool's share through window, OVERWRITTEN: the conv's part is added
     * after, by conv2d_backward_data_add. dpooled is never stored: each window's share is taken
     * from dy and the bits where the window's byte chose an input, by that input's sum, so every
     * element of dy is read once. Bit-identical to flex_pool_max_backward, dx zeroed,
     * flex_pool_scatter_add; with conv2d_backward_data_add after it, the same dx as
     * conv2d_backward_data before flex_pool_scatter_add (one addition, which commutes), on the CPU
     * bit for bit. dbias [c_out] (nullable) = the sum of dconv per output channel, overwritten: the
     * conv's bias gradient, which conv2d_backward_filter then need not sum ([model] fold_conv_bias);
     * summed in double, as conv2d_backward_filter's (on the CPU the same bits; on the GPU the route
     * adds each block's dconv as it writes it, where a pooled channel feeds at most 2 output
     * channels, and the float result may differ from the conv's in its last bit). */
    bf_status (*flex_pool_max_backward_scatter)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                const uint8_t *window, const uint32_t *winners, const uint32_t *ties,
                                                const float *dy, float *dconv, float *dx, float *dbias);
    /* flex_pool_max_backward_scatter of dy = the dx of the batch-norm after the layer (bn), from that
     * batch-norm's output gradient dz and its input y (the flex output), computed as each element is
     * read: the flex output's gradient is never stored. dconv may be dz itself. Bit-identical to the
     * batch-norm's dx written first (batchnorm_backward or batchnorm_relu_backward), then
     * flex_pool_max_backward_scatter (dbias as there). */
    bf_status (*flex_pool_max_backward_scatter_bn)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                                   const bf_bn_grad *bn, const uint8_t *window,
                                                   const uint32_t *winners, const uint32_t *ties, const float *y,
                                                   const float *dz, float *dconv, float *dx, float *dbias);
    /* flex_pool_max_backward of dy = the dx of the batch-norm after the layer (bn), from its output
     * gradient dz and input y as each is read, without dpooled (the layer's input has no gradient: a
     * network's first flex layer, whose backward then neither stores the batch-norm's dx nor reads it
     * back), for EXPAND (BF_ERR_ARG otherwise). dconv may be dz itself. Bit-identical to the
     * batch-norm's dx written first, then flex_pool_max_backward. dbias (nullable) as
     * flex_pool_max_backward_scatter's (on the GPU summed in the pass for any number of taps). */
    bf_status (*flex_pool_max_backward_bn)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s,
                                           const bf_bn_grad *bn, const uint32_t *winners, const uint32_t *ties,
                                           const float *y, const float *dz, float *dconv, float *dbias);
    /* The pool branch alone, for the mask joint: pooled [n, c_in, hw] = maxpool(x) over ps (as
     * maxpool_forward) and window, one byte per pooled element, its maximum's place kh*k + kw, for
     * every pooled channel (ps and s as for flex_pool_max_forward). */
    bf_status (*flex_pool_forward)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                   float *pooled, uint8_t *window);
    /* pooled again from x and the window bytes flex_pool_forward wrote: the same bits. */
    bf_status (*flex_pool_gather)(bf_backend *b, const bf_pool_shape *ps, const bf_flex_shape *s, const float *x,
                                  const uint8_t *window, float *pooled);
    /* Where the conv won, strictly (winners set, ties clear), over `samples` consecutive samples of
     * per_sample elements in flex_pool_max_forward's bitmap layout (bioflex-eval --routing):
     * element_counts[j] (j < per_sample) += the samples in which it won element j; sample_counts[s] =
     * the elements of sample s it won, overwritten. Integer counts: every backend the same. */
    bf_status (*flex_route_tally)(bf_backend *b, int samples, size_t per_sample, const uint32_t *winners,
                                  const uint32_t *ties, uint32_t *element_counts, uint32_t *sample_counts);
    /* Mask joint. logits [n, c_out, hw] = widened - threshold[c_out, hw] (broadcast over n). */
    bf_status (*flex_logits_forward)(bf_backend *b, const bf_flex_shape *s, const float *widened,
                                     const float *threshold, float *logits);
    /* mask [n, c_out, hw] = mask(logits) (see bf_flex_mask; factor is SIGMOID_MUL's f; draws gives the
     * stochastic roundings); y = widened * (1 - mask) + conv * mask. conv_mask_sum (nullable device
     * scalar) += sum of the mask (the conv ratio of a soft mask). */
    bf_status (*flex_mask_forward)(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                   bf_draws draws, const float *logits, const float *conv, const float *widened,
                                   float *mask, float *y, float *conv_mask_sum);
    /* From dy: dconv = dy*M; dlogits = dy*(conv - widened)*dM/dL (the mask's backward rule);
     * dwidened = dy*(1 - M) (the caller adds dlogits' share). All overwritten. */
    bf_status (*flex_mask_backward)(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                    const float *logits, const float *mask, const float *conv, const float *widened,
                                    const float *dy, float *dconv, float *dlogits, float *dwidened);
    /* dthreshold[c_out*hw] = -sum over n of dlogits[n, c_out*hw] (fixed order, overwritten). */
    bf_status (*flex_threshold_backward)(bf_backend *b, const bf_flex_shape *s, const float *dlogits, float *dthreshold);
    /* Routing statistics of a mask of n elements (flexnet.md section 6), written to out[0..1]:
     * out[0] = the number of elements with mask > 0.5 (conv chosen), out[1] = the sum of
     * |mask - 0.5| * 2 (the "homogeneity" or binariness; 1 per element of a binary mask). */
    bf_status (*flex_mask_stats)(bf_backend *b, const float *mask, size_t n, float *out);
    /* Fused mask joint (what a flex layer with the mask joint runs; flexnet.md 1.5-1.7): from the
     * pooled P [n, c_in, hw], the widening, logits, mask and mix in one pass each way, never storing
     * P~, L or M. logits (nullable) [n, c_out, hw]: the logits to take (batch-normalised by the
     * caller) instead of L = widen(P) - threshold (threshold is then not read and may be NULL).
     * forward: y = P~ (1 - M) + C M with M = mask(L), as flex_widen_forward + flex_logits_forward +
     *   flex_mask_forward; conv_mask_sum as there; routing (nullable, two device floats) =
     *   flex_mask_stats of M, overwritten.
     * backward: M again from the same inputs and draws (the same bits); dconv = dy M and dlogits =
     *   dy (C - P~) dM/dL, as flex_mask_backward; dpooled (nullable) = the fold-back of the pool
     *   branch's share: dy (1 - M) + dlogits when logits is NULL (L = P~ - T), dy (1 - M) alone when
     *   logits is given (the caller folds back the raw logits' gradient and adds it). All
     *   overwritten. Every result is bit-identical to that op-by-op sequence on every backend. */
    bf_status (*flex_mask_joint_forward)(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                         bf_draws draws, const float *pooled, const float *threshold,
                                         const float *logits, const float *conv, float *y, float *conv_mask_sum,
                                         float *routing);
    bf_status (*flex_mask_joint_backward)(bf_backend *b, const bf_flex_shape *s, bf_flex_mask kind, float factor,
                                          bf_draws draws, const float *pooled, const float *threshold,
                                          const float *logits, const float *conv, const float *dy, float *dconv,
                                          float *dlogits, float *dpooled);

    /* ---- spiking neurons (see bf_neuron_params): x, y, charge are [T, n] ----
     * forward: y = the spikes (or the stateless activation); charge (LIF/IF: H[t], kept for the
     * backward; unused and nullable for CLAMP01/STEP). stats (nullable, 2 device scalars) +=
     * {number of spikes (sum of y), number of the n elements that stayed silent over all T}.
     * charge may be x itself (the memory plan overwrites a dead input with it): every x[t*n + i]
     * is read before charge[t*n + i] is written, and by the same thread. A NULL charge keeps
     * nothing: the backward is then neuron_backward_bn, which computes the charge again. */
    bf_status (*neuron_forward)(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x, float *y,
                                float *charge, float *stats);
    /* dx = the gradient of the loss with respect to x, from dy, back through time; overwrites dx.
     * LIF/IF read the charge (not x); CLAMP01/STEP read x; none reads y (nullable). */
    bf_status (*neuron_backward)(bf_backend *b, const bf_neuron_params *p, size_t n, const float *x,
                                 const float *y, const float *charge, const float *dy, float *dx);
    /* LIF/IF only, T <= BF_NEURON_BN_MAX_T: neuron_forward with charge NULL for an input given as
     * batch-norm's input xin and statistics (bf_neuron_bn_input): each element is normalised as it
     * is read, so the batch-norm output is never written. y and stats are bit-identical to
     * batchnorm_forward_saved + neuron_forward. bits (nullable): the spikes also as spikes_pack
     * writes them from y (the memory plan's packed spikes), in the same pass where n is a multiple
     * of 32 on the GPU (each step's row then starts a word), else by spikes_pack after it. */
    bf_status (*neuron_forward_bn)(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                   const float *xin, float *y, uint32_t *bits, float *stats);
    /* LIF/IF only, T <= BF_NEURON_BN_MAX_T: neuron_backward for an input given as batch-norm's input
     * xin and statistics (bf_neuron_bn_input), with no charge kept: each element's charges are
     * computed again from xin, over t = 0..T-1 as neuron_forward computed them, then the BPTT runs
     * as neuron_backward's. dx (the gradient with respect to the batch-norm OUTPUT X) is
     * bit-identical to batchnorm_forward_saved + neuron_forward + neuron_backward. */
    bf_status (*neuron_backward_bn)(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in, size_t n,
                                    const float *xin, const float *dy, float *dx);
    /* LIF/IF only, T <= BF_NEURON_BN_MAX_T: neuron_backward_bn and then batchnorm_backward of its
     * result over xin, in one op ([spiking] fuse_bn_backward): dx is the gradient with respect to the
     * batch-norm's INPUT xin, dgamma and dbeta (nullable) the batch-norm's parameter gradients. The
     * batch-norm is the one whose statistics *in names, over the planes of xin: T*n/(c*hw), or
     * n/(c*hw) with a shared input. The neuron's gradient (the batch-norm output's) is never stored
     * on the GPU: a first pass takes the per-channel sums from the charges computed again, a second
     * computes them again and writes dx. CPU: the bits of the two ops in turn (through the backend's
     * scratch). CUDA: the sums of the GPU's batchnorm_backward (xhat rounded in float, double sums)
     * added in another order, so dx, dgamma and dbeta agree with either to rounding (compare with a
     * tolerance), and at most 2^31 values per channel and step. dx may alias neither xin nor dy. */
    bf_status (*neuron_batchnorm_backward)(bf_backend *b, const bf_neuron_params *p, const bf_neuron_bn_input *in,
                                           size_t n, const float *xin, const float *dy, float *dx, float *dgamma,
                                           float *dbeta);
    /* Spikes kept for the backward as bits (the memory plan's pack_spikes): bit k of bits[w] is
     * y[32w + k] != 0, the unused high bits of the last word 0; unpack writes y[i] = that bit, 0.0f
     * or 1.0f, so it restores exactly spikes that were 0 or 1. */
    bf_status (*spikes_pack)(bf_backend *b, const float *y, uint32_t *bits, size_t n);
    bf_status (*spikes_unpack)(bf_backend *b, const uint32_t *bits, float *y, size_t n);
    /* Rate coding: y[t*n + i] = 1[bf_draw_uniform(draws, t*n + i) < clamp(x[i], 0, 1)] for t < T (x is [n];
     * the op sets draws.step_elements = n: each time step has its own counters). */
    bf_status (*spike_encode_rate)(bf_backend *b, const float *x, float *y, size_t n, int T, bf_draws draws);
    /* x[i] = lo + (hi - lo) * bf_uniform(seed, i): random draws on the device, identical on both backends. */
    bf_status (*fill_uniform)(bf_backend *b, float *x, size_t n, float lo, float hi, uint64_t seed);

    /* ---- Counter-Hebb updates of BU-TD networks (specs/butd-counterhebb.md section 2.1) ----
     * bu [n, in] is the BU activity below the layer, td [n, out] the TD (error-pass) activity above
     * it. Overwrites dw [out, in] = (1/n) sum_n td (x) bu and dbias (nullable) = (1/n) sum_n td;
     * dw_td (nullable) gets the mirror update of a separate TD weight stored [in, out]: dw^T. */
    bf_status (*counter_hebb_linear)(bf_backend *b, const bf_linear_shape *s, const float *bu, const float *td,
                                     float *dw, float *dbias, float *dw_td);
    /* Conv: dw = (sum over n and positions of td at the output position x the BU receptive field) / n,
     * i.e. the weight gradient given td as the output gradient, divided by n; dbias (nullable) =
     * (1/n) sum over n, h, w of td; dw_td (nullable, same layout as w) = dw. */
    bf_status (*counter_hebb_conv2d)(bf_backend *b, const bf_conv2d_shape *s, const float *bu, const float *td,
                                     float *dw, float *dbias, float *dw_td);

    /* ---- JPEG batches (image.h): uint8 NHWC RGB -> float NCHW, normalised ----
     * dst[n, c, y, x] = (src[n, y, x, c] / 255 - mean[c]) / std[c] for c < 3; mean and std are host
     * arrays of 3. The loader ships bytes (4x less to copy than floats) and the device converts. */
    bf_status (*image_u8_to_float)(bf_backend *b, const uint8_t *src, float *dst, int n, int h, int w,
                                   const float *mean, const float *std);

    /* ---- binary heads: one logit per sample, label 0 or 1 (BU-TD's per-task CelebA heads) ----
     * losses[i] = BCE-with-logits = max(y,0) - y*t + log(1 + exp(-|y|)); dlogits (nullable) =
     * sigmoid(y) - t, per sample (not divided by n); correct (nullable) = 1 when (y > 0) == t. */
    bf_status (*binary_xent)(bf_backend *b, int n, const float *logits, const int32_t *labels, float *losses,
                             float *dlogits, float *correct);

    /* ---- synchronised batch-norm ([run] sync_bn): the batch-norm ops cut at their per-channel
     * sums, so data-parallel ranks can all-reduce the sums in between and normalise with the
     * statistics of the global batch:
     *   forward:  batchnorm_sync_sums -> all-reduce stats -> batchnorm_sync_sqdev -> all-reduce sq
     *             -> batchnorm_sync_forward_apply
     *   backward: batchnorm_sync_backward_sums -> all-reduce sums -> batchnorm_sync_backward_apply
     * The sums are doubles in backend memory (stats [c+1], sq [c], backward sums [2c+1]); the last
     * slot of stats and of the backward sums holds the number of values summed (n*hw), so after
     * the all-reduce it is the global count. Variance in two passes (mean first), sums in double,
     * deterministic. With nothing between the steps (one rank) the results are those of
     * batchnorm_forward_train and batchnorm_backward. */
    /* stats[ch] = sum of channel ch's n*hw values, stats[c] = n*hw. */
    bf_status (*batchnorm_sync_sums)(bf_backend *b, const bf_bn_shape *s, const float *x, double *stats);
    /* sq[ch] = sum over channel ch of (x - mean)^2 in double, mean = stats[ch] / stats[c]
     * (stats: the all-reduced totals). */
    bf_status (*batchnorm_sync_sqdev)(bf_backend *b, const bf_bn_shape *s, const float *x, const double *stats,
                                      double *sq);
    /* With count = stats[c], mean = stats[ch]/count, var = sq[ch]/count (biased):
     * y = (x - mean) * (gamma * invstd) + beta, invstd = 1/sqrt(var + eps); save_mean, save_invstd
     * and the running statistics (all nullable, y too: then no y) as batchnorm_forward_train, the running variance
     * with the global count's unbiased var * count/(count - 1). count < 2: the CPU returns
     * BF_ERR_ARG; CUDA, which cannot read the device sums without waiting, leaves running_var. */
    bf_status (*batchnorm_sync_forward_apply)(bf_backend *b, const bf_bn_shape *s, const float *x,
                                              const double *stats, const double *sq, const float *gamma,
                                              const float *beta, float *y, float *save_mean, float *save_invstd,
                                              float *running_mean, float *running_var);
    /* sums[ch] = sum dy, sums[c+ch] = invstd * sum dy*(x - mean) (= sum dy*xhat), sums[2c] = n*hw,
     * with mean/invstd the forward's saved values; dbeta = sums[ch] and dgamma = sums[c+ch] as floats
     * (nullable): this rank's share, which the gradient average over the ranks completes. */
    bf_status (*batchnorm_sync_backward_sums)(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                              const float *save_mean, const float *save_invstd, double *sums,
                                              float *dgamma, float *dbeta);
    /* dx = gamma*invstd * (dy - sums[ch]/count - xhat * sums[c+ch]/count), count = sums[2c]
     * (the all-reduced sums): batchnorm_backward's dx over the global batch. dx may be dy itself
     * (element by element: [model] fuse_flex_bn's synchronised path writes it over the pair's one
     * gradient). */
    bf_status (*batchnorm_sync_backward_apply)(bf_backend *b, const bf_bn_shape *s, const float *x, const float *dy,
                                               const float *gamma, const float *save_mean, const float *save_invstd,
                                               const double *sums, float *dx);

    /* ---- y = x0 * x1 elementwise (y may alias either): BU-TD's straight-through task-head gradient */
    bf_status (*mul)(bf_backend *b, const float *x0, const float *x1, float *y, size_t n);

    /* ---- one head per task (BU-TD multi_decoders): full is [n, num_tasks * k], task t's k outputs
     * at columns t*k .. t*k+k-1; tasks (backend memory) in [0, num_tasks).
     * gather: out[i, j] = full[i, tasks[i]*k + j]; scatter: full = 0 except those columns = in[i, j]. */
    bf_status (*task_slice_gather)(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks,
                                   const float *full, float *out);
    bf_status (*task_slice_scatter)(bf_backend *b, int n, int k, int num_tasks, const int32_t *tasks,
                                    const float *in, float *full);

    /* ---- adversarial attacks (analysis.h): one step on a batch of normalised NCHW images, the
     * pixel-space step and bounds given per channel in the normalised units (bf_attack_box):
     *   v    = x[i] + step[ch] * (use_sign ? sign(d[i]) : d[i])       sign(0) = sign(NaN) = 0, as torch.sign
     *   v    = min(max(v, x0[i] - radius[ch]), x0[i] + radius[ch])   the L-inf ball around the clean x0
     *   x[i] = min(max(v, lo[ch]), hi[ch])                           the valid pixel range
     * with ch = (i / plane) % box->c, each operation rounded on its own (the same bits on both
     * backends). x is updated in place; x0, d and x hold n floats. */
    bf_status (*attack_step)(bf_backend *b, const bf_attack_box *box, size_t n, size_t plane, const float *x0,
                             const float *d, int use_sign, float *x);

    /* ---- tuned divisive normalisation (../shared/specs/v1-constrained.md 4.1; the reference's
     * OpponentChannelInhibition): y = x / (1 + S), S = W x summed over channels at each position (a
     * 1x1 conv with weight W[r, j], out r, in j), W generated from c learned widths sigma:
     *   D[r, j] = |((j - r) mod c) - c/2|   (c/2 minus the ring distance of the channels: largest for
     *                                       a channel and itself, 0 for the channel opposite it;
     *                                       BF_OCI_OPPONENT, as the reference codes it), or
     *   D[r, j] = min(m, c - m), m = (j - r) mod c   (the ring distance: 0 for the channel itself;
     *                                       BF_OCI_SIMILAR, the "similar-feature pool" reading, spec 12 Q5)
     *   s_j = max(sigma_j, 0.5),  g[r, j] = exp(-D[r, j]^2 / (2 s_j^2)),  W[r, j] = g[r, j] / sum_q g[q, j]
     * (the reference's 1/(2.5066 s_j) factor cancels in the column's normalisation). Each column is
     * computed in double and rounded once.
     * weights_backward: dsigma_j = 1[sigma_j >= 0.5] sum_r dw[r, j] W[r, j] (D[r, j]^2 - sum_q W[q, j] D[q, j]^2) / s_j^3
     * (PyTorch's clamp passes the gradient at the bound).
     * apply: y = x / (1 + s) over n elements; apply_backward: dx = dy / (1 + s) (dx nullable: not wanted)
     * and ds = -dy x / (1 + s)^2, the gradient reaching S (ds may alias s: each element is read before
     * it is written). */
    bf_status (*divnorm_weights)(bf_backend *b, int c, bf_oci_distance distance, const float *sigma, float *w);
    bf_status (*divnorm_weights_backward)(bf_backend *b, int c, bf_oci_distance distance, const float *sigma,
                                          const float *w, const float *dw, float *dsigma);
    bf_status (*divnorm_apply)(bf_backend *b, const float *x, const float *s, float *y, size_t n);
    bf_status (*divnorm_apply_backward)(bf_backend *b, const float *x, const float *s, const float *dy, float *dx,
                                        float *ds, size_t n);

    /* ---- copies of a block of channels: for each of n images, `count` channels of hw elements from
     * channel src_c0 of src [n, src_c, hw] to channel dst_c0 of dst [n, dst_c, hw]; the other channels
     * of dst are left as they are (the DoG layer's slice of its input, and its output's) */
    bf_status (*channel_copy)(bf_backend *b, int n, int hw, int count, const float *src, int src_c, int src_c0,
                              float *dst, int dst_c, int dst_c0);

    /* ---- center-surround (difference-of-Gaussians) kernels (v1-constrained.md 2.3, DoGConv2D): p kernels
     * of k x k taps (p = out x in channels, kernel index o*in + i) from three parameters each, with
     * d_t the squared distance of tap t to the centre and amp(s) = s/pi (the reference code, amp_paper 0)
     * or 1/(pi s) (the paper's Gaussian, amp_paper 1):
     *   s1 = max(sigma1, 0.1), r = max(sigma2_scale, 1 + 1e-4), s2 = s1 r
     *   R[p, t] = scale[p] * (amp(s1) exp(-d_t / s1) - amp(s2) exp(-d_t / max(s2, 1e-6)))
     *   w[p, t] = R[p, t] / max(norm_t, 1e-12),  norm_t = sqrt(sum over p of R[p, t]^2)
     * (the L2 norm of each tap over all p kernels, not of each kernel). norms [k*k] keeps norm_t for
     * the backward, which takes dw [p, k*k] to dsigma1, dsigma2_scale and dscale [p] (PyTorch's clamps
     * pass the gradient at their bounds). Each tap's sum is taken in double in kernel order. */
    bf_status (*dog_kernels)(bf_backend *b, int p, int k, int amp_paper, const float *sigma1, const float *sigma2_scale,
                             const float *scale, float *w, float *norms);
    bf_status (*dog_kernels_backward)(bf_backend *b, int p, int k, int amp_paper, const float *sigma1,
                                      const float *sigma2_scale, const float *scale, const float *w, const float *norms,
                                      const float *dw, float *dsigma1, float *dsigma2_scale, float *dscale);

    /* ---- locally connected 2-D layer (bf_local_shape): forward, and the backward's dx and dw, each
     * written over its output */
    bf_status (*local_forward)(bf_backend *b, const bf_local_shape *s, const float *x, const float *w, float *y);
    bf_status (*local_backward_data)(bf_backend *b, const bf_local_shape *s, const float *dy, const float *w, float *dx);
    bf_status (*local_backward_filter)(bf_backend *b, const bf_local_shape *s, const float *x, const float *dy, float *dw);

    /* ---- Cirincione divisive normalisation (v1-constrained.md 4.2; the reference's
     * DivisiveNormalizationCirincione): y = x / (N + |bias|), N = conv2d(x, G, padding k/2, no bias)
     * (the backend's conv2d in between), G [c, c, k, k] generated at every step from six parameters
     * of each of the p = c*c (out, in) pairs (index o*c + i, the conv weight's order). Tap t = i*k + j
     * (row i, column j) sits at X = j + 1, Y = i + 1 (1-based), rotated about the origin:
     *   x' = X cos theta + Y sin theta,  y' = -X sin theta + Y cos theta
     *   q = (x' - v)^2 / max(rho^2, 0.1) + (y' - w)^2 / max(sigma^2, 0.1)
     *   G[p, t] = |A / max(2 pi rho sigma, 0.1)| exp(-q / 2)
     * (0.1 as a float, as torch.clamp's bound on float tensors), each value computed in double and
     * rounded once. kernels_backward: dG [p, k*k] to dA, drho, dsigma, dtheta, dv, dw [p], written
     * over, each summed over its kernel's taps in double in tap order (one pair's sums share
     * nothing with another's), with PyTorch's conventions: abs'(0) = 0 (sgn: an A of exactly 0 gets
     * no gradient), and a clamp passes the gradient when its input equals the bound. k odd, <= 31.
     * divide: y = x / (s + |bias[0]|) over n elements, bias one float in backend memory.
     * divide_backward, with d = s + |bias[0]|: dx = dy / d (dx nullable: not wanted), ds = -dy x / d^2
     * (ds may alias s: each element is read before it is written), and dbias[0] = sgn(bias[0]) times
     * the sum of ds over the n elements (dbias nullable: not wanted), summed in double in an order
     * that depends on n alone (no floating-point atomics: the same bits run after run). */
    bf_status (*cirincione_kernels)(bf_backend *b, int p, int k, const float *A, const float *rho, const float *sigma,
                                    const float *theta, const float *v, const float *w, float *g);
    bf_status (*cirincione_kernels_backward)(bf_backend *b, int p, int k, const float *A, const float *rho,
                                             const float *sigma, const float *theta, const float *v, const float *w,
                                             const float *dg, float *dA, float *drho, float *dsigma, float *dtheta,
                                             float *dv, float *dw);
    bf_status (*cirincione_divide)(bf_backend *b, const float *x, const float *s, const float *bias, float *y, size_t n);
    bf_status (*cirincione_divide_backward)(bf_backend *b, const float *x, const float *s, const float *bias,
                                            const float *dy, float *dx, float *ds, float *dbias, size_t n);
} bf_ops;

struct bf_backend {
    const bf_ops *ops;
    bf_device_kind kind;
    int device_index;       /* CUDA device ordinal, 0 for CPU */
    bf_precision precision;
    int num_threads;        /* CPU backend: OpenMP threads */
    void *impl;             /* backend-private state (handles, streams, workspaces, algorithm cache) */
};

/* The CPU reference backend. num_threads 0 = OpenMP's default. */
bf_status bf_backend_create_cpu(int num_threads, bf_backend **out);
/* [run] cpu_conv: which code runs the CPU backend's convolutions. BF_CPU_CONV_IM2COL: im2col and
 * OpenBLAS's sgemm (src/kernels/conv_cpu.c), the reference. BF_CPU_CONV_ONEDNN: oneDNN's direct
 * convolution kernels (conv_onednn_cpu.c) for every shape they take, the im2col path for the rest; the
 * default when bioflex was built with oneDNN. Both give the same bits with any thread count; they
 * differ from each other by rounding. BF_ERR_ARG for a CUDA backend or an unknown value,
 * BF_ERR_UNAVAILABLE for ONEDNN in a build without it (bf_cpu_have_onednn). */
typedef enum bf_cpu_conv_library { BF_CPU_CONV_IM2COL = 0, BF_CPU_CONV_ONEDNN = 1 } bf_cpu_conv_library;
bf_status bf_cpu_set_conv_library(bf_backend *b, bf_cpu_conv_library library);
/* The library b's convolutions run with (BF_CPU_CONV_IM2COL for a CUDA backend). */
bf_cpu_conv_library bf_cpu_conv_library_of(const bf_backend *b);
/* 1 when bioflex was built with oneDNN (BIOFLEX_ONEDNN), else 0. */
int bf_cpu_have_onednn(void);
/* How many convolution calls (forward, backward data, backward filter) oneDNN has run on b (0 for a
 * CUDA backend): a shape it does not take quietly runs im2col, so the tests check this count. */
long bf_cpu_onednn_conv_calls(const bf_backend *b);
/* The CUDA backend on one device; BF_ERR_UNAVAILABLE with a message when bioflex was built
 * without CUDA or the device does not exist. */
bf_status bf_backend_create_cuda(int device_index, bf_precision precision, bf_backend **out);
void bf_backend_destroy(bf_backend *b);
/* [run] deterministic: the CUDA backend's convolutions use the first CUDNN_DETERMINISTIC algorithm
 * in cuDNN's heuristic order instead of the fastest one measured (timings vary, and some fast
 * algorithms sum with floating-point atomics), so runs with the same seed repeat bit for bit, at
 * some cost in speed. Algorithms chosen before are searched again. The CPU backend is always
 * deterministic: a no-op there (and when bioflex was built without CUDA). */
bf_status bf_cuda_set_deterministic(bf_backend *b, int on);
/* [run] conv_workspace_mib: the most cuDNN workspace a convolution algorithm may need to be chosen
 * (8 GiB by default, and never more than about half the free device memory). Some fast TF32
 * algorithms for large activations need several GiB (VGG-16 at batch 128 ran 1.6x faster with 8
 * GiB than with 1 on an H200): a smaller limit trades speed for memory. Algorithms chosen before
 * are searched again. A no-op on the CPU backend. */
bf_status bf_cuda_set_conv_workspace_limit(bf_backend *b, size_t bytes);
/* [run] conv_workspace_slack (0.05 by default, 0..1): the algorithm search keeps, instead of the
 * fastest algorithm, the fastest one at most this fraction slower that needs no workspace beyond
 * what is already held (the dead activation memory hinted for the call, or the separate workspace
 * as earlier choices sized it), when the fastest would grow the separate workspace
 * (src/kernels/conv_pick.h). 0: always the fastest. Algorithms chosen before are searched again.
 * BF_ERR_ARG outside 0..1; a no-op on the CPU backend. */
bf_status bf_cuda_set_conv_workspace_slack(bf_backend *b, float slack);
/* [run] conv_workspace_reuse (on by default): convolutions run in the dead activation memory a
 * model's plan hints (conv_workspace_hint) when their algorithm's workspace fits there, so the
 * shared workspace keeps only what the other calls need. Off: every call uses the shared one. A
 * no-op on the CPU backend. */
bf_status bf_cuda_set_conv_workspace_reuse(bf_backend *b, int on);
/* [run] conv_api = graph (graph != 0): each convolution shape and direction also gets a plan of
 * cuDNN's graph (backend) API, the fastest of the engines its heuristics offer under the same
 * precision, determinism and workspace rules, which runs instead of the legacy algorithm whenever
 * the call's tensors have the alignment it was made for (conv_graph.cu). legacy (0, the default):
 * the legacy convolution API alone. Choices made before are searched again. A no-op on the CPU. */
bf_status bf_cuda_set_conv_api(bf_backend *b, int graph);
/* With several GPUs in one process (bioflex-train --gpus N), a host thread blocked inside the CUDA
 * driver (cudaMalloc, cudaFree, a convolution algorithm search, a copy with pageable host memory)
 * may hold a lock that another GPU's thread needs to launch its part of an NCCL collective. If the
 * first thread's GPU meanwhile runs that collective, which waits for the other part, neither moves
 * again: the hang NCCL's users know from cudaFree. When a fence is set, the backend calls it before
 * each such call; data_parallel.c sets the communicator's timed wait, which polls (holding no lock)
 * until the GPU runs no collective. NULL clears it. A no-op on the CPU backend. */
bf_status bf_cuda_set_driver_fence(bf_backend *b, bf_status (*fence)(void *ctx), void *ctx);
/* [run] flex_kernels = slide (slide != 0): flex_pool_max_forward and flex_pool_scatter_add run
 * sliding-window kernels (src/kernels/flex_slide.cuh: each input row loaded once per band, window
 * maxima slid down the rows in registers, warp shuffles for the neighbours) wherever they apply:
 * EXPAND and the 3x3 stride-1 pad-1 window, every FlexNet flex layer; so do
 * flex_pool_max_backward_scatter(_bn) where dconv does not overlap dy; other calls run the fused
 * kernels. Same results, bit for bit. fused (0, the default): the fused kernels everywhere. A no-op
 * on the CPU (and when bioflex was built without CUDA). */
bf_status bf_cuda_set_flex_kernels(bf_backend *b, int slide);
/* 1 when b is a CUDA backend set to the sliding-window kernels (bf_cuda_set_flex_kernels), else 0:
 * their route with the scatter needs dconv apart from dy, which the memory plan then gives it. */
int bf_cuda_flex_kernels_slide(const bf_backend *b);
/* How many sliding-window kernels b has launched (0 for a CPU backend or without CUDA): a call
 * they do not take quietly runs the fused kernels, so the tests and the lab check this count. */
long bf_cuda_flex_slide_launches(const bf_backend *b);
/* How many graph-API plans the backend's convolution cache holds (0 for a CPU backend, without
 * CUDA, or under conv_api = legacy): for tests and diagnostics. */
int bf_cuda_conv_graph_plan_count(const bf_backend *b);
/* Brackets what a profiler attached with "ncu --profile-from-start off" records (cudaProfilerStart
 * with on != 0, cudaProfilerStop with 0): bench_train_throughput --profile brackets its timed
 * steps, for bench/kernel_profile.sh. A no-op on the CPU backend and without CUDA. */
bf_status bf_cuda_profiler(bf_backend *b, int on);
/* Number of usable CUDA devices (0 when built without CUDA or when the driver finds none). */
int bf_cuda_device_count(void);
/* 1 when the library was built with the CUDA backend. */
int bf_cuda_built(void);
/* The device a CUDA backend runs on: compute capability, multiprocessors and the maximum SM clock
 * in kHz (for the peak FLOP rate of model FLOP utilisation, bf_peak_tflops). BF_ERR_UNAVAILABLE
 * for a CPU backend or a build without CUDA. */
bf_status bf_cuda_device_shape(const bf_backend *b, int *cc_major, int *cc_minor, int *sms, int *clock_khz);
/* Device memory a CUDA backend holds through its own cudaMalloc calls: the blocks of ops->alloc
 * (as cudaMalloc'd, at least 256 bytes each), the scratch buffer and the cuDNN and cuBLAS
 * workspaces; not the CUDA context, nor what cuDNN, cuBLAS or NCCL allocate internally. *live:
 * the bytes held now; *peak: the most held at any moment since the backend was created or since
 * the last call with reset_peak != 0, which after reporting sets the peak to the live bytes (a
 * benchmark resets after its warm-up steps, whose cuDNN algorithm search uses a larger
 * workspace). Either pointer may be NULL; both read 0 for a CPU backend or without CUDA. */
void bf_cuda_memory_bytes(bf_backend *b, int reset_peak, size_t *live, size_t *peak);
/* The bytes of the separate cuDNN workspace now (part of bf_cuda_memory_bytes' count): what the
 * convolutions that did not fit in their hinted dead memory need; 0 on the CPU or without CUDA. */
size_t bf_cuda_conv_workspace_bytes(bf_backend *b);

/* Convenience wrappers that read like function calls: bf_alloc(b, bytes, &p). */
static inline bf_status bf_alloc(bf_backend *b, size_t bytes, void **p) { return b->ops->alloc(b, bytes, p); }
static inline void bf_free(bf_backend *b, void *p) { if (p) b->ops->free(b, p); }
static inline bf_status bf_to_device(bf_backend *b, void *dst, const void *src, size_t bytes) { return b->ops->copy_to_device(b, dst, src, bytes); }
static inline bf_status bf_to_host(bf_backend *b, void *dst, const void *src, size_t bytes) { return b->ops->copy_to_host(b, dst, src, bytes); }

#ifdef __cplusplus
}
#endif
#endif
