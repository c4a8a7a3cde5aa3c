/* model.h - a network is a list of layers with explicit inputs (so residual and top-down
 * connections fit), one contiguous parameter buffer, one gradient buffer, and an activation
 * arena sized when the model is built. Layers reach the hardware only through bf_ops.
 *
 * Building: bf_model_create, then bf_model_add_* in topological order (each returns the new
 * layer's index, which later layers name as their input; BF_MODEL_INPUT is the image batch), then
 * bf_model_finalize allocates everything and initialises the weights from the seed. */
#ifndef BIOFLEX_MODEL_H
#define BIOFLEX_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bioflex/config.h"
#include "bioflex/ops.h"
#include "bioflex/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BF_MODEL_INPUT (-1)
#define BF_NAME_MAX 96

typedef enum bf_layer_kind {
    BF_LAYER_CONV = 0,
    BF_LAYER_BATCHNORM,
    BF_LAYER_RELU,
    BF_LAYER_MAXPOOL,
    BF_LAYER_AVGPOOL,
    BF_LAYER_GLOBAL_AVGPOOL,
    BF_LAYER_LINEAR,
    BF_LAYER_DROPOUT,
    BF_LAYER_FLATTEN,
    BF_LAYER_ADD,
    BF_LAYER_FLEX,          /* flexible neuron: per element the conv or the widened max-pool (layer_flex.c) */
    BF_LAYER_ENCODE,        /* spiking input: the image batch over T time steps, [N, ...] -> [T*N, ...] */
    BF_LAYER_NEURON,        /* spiking neurons over the layer's T steps (LIF, IF, clamp01, step) */
    BF_LAYER_TIME_MEAN,     /* readout: the mean over T, [T*N, ...] -> [N, ...] */
    BF_LAYER_DIVNORM,       /* tuned divisive normalisation, y = x / (1 + W x) (layer_v1.c) */
    BF_LAYER_POLAR,         /* cortical magnification: a fixed 32x32 -> 16x16 polar resampling per map (layer_v1.c) */
    BF_LAYER_DOG,           /* center-surround: a DoG conv on the first channels, the rest passed on (layer_v1.c) */
    BF_LAYER_LOCAL,         /* locally connected: a conv with unshared weights per output position (layer_local.c) */
    BF_LAYER_CIRINCIONE,    /* Cirincione divisive normalisation, y = x / (G * x + |bias|), G a generated 3x3 conv
                             * (layer_cirincione.c: G in v1_weights, its gradient in v1_dweights, G * x in v1_sums) */
    BF_LAYER_LEAKY_RELU,    /* y = x > 0 ? x : slope * x (the spatial-attention logits' activation) */
    BF_LAYER_KIND_COUNT
} bf_layer_kind;

/* How a parameter is initialised (PyTorch's schemes, drawn from the run seed on the host). */
typedef enum bf_init {
    BF_INIT_ZEROS = 0,
    BF_INIT_ONES,
    BF_INIT_KAIMING_NORMAL_FAN_OUT, /* N(0, 2/fan_out): torchvision VGG/ResNet convs */
    BF_INIT_KAIMING_NORMAL_FAN_IN,  /* N(0, 2/fan_in): FlexNet's apply_kaiming_initialization (conv bias 0) */
    BF_INIT_NORMAL_0_01,            /* N(0, 0.01^2): torchvision VGG linear layers */
    BF_INIT_UNIFORM_FAN_IN,         /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default Linear/Conv */
    BF_INIT_KAIMING_UNIFORM,        /* U(-sqrt(6/fan_in), sqrt(6/fan_in)): kaiming_uniform_(a=0), the flex threshold */
    BF_INIT_UNIFORM_PLUS_FAN_IN_8,  /* U(0, 1) + fan_in/8: the tuned divisive normalisation's widths (fan_in = channels) */
    BF_INIT_UNIFORM_PLUS_HALF_FAN_IN, /* U(0, 1) + fan_in/2: the DoG widths (fan_in = the kernel's half-size k) */
    BF_INIT_NORMAL_STD_FAN_IN,      /* N(0, fan_in^2): the DoG gain (std 2), the locally connected weights (std 1) */
    /* the Cirincione divisive normalisation's (v1-constrained.md 4.2): */
    BF_INIT_UNIFORM_0_1,            /* U(0, 1): its amplitudes A */
    BF_INIT_UNIFORM_PLUS_1,         /* U(0, 1) + 1: its widths rho and sigma, and its bias */
    BF_INIT_UNIFORM_2PI,            /* U(0, 1) * 2 pi: its orientations theta */
    BF_INIT_NORMAL_PLUS_FAN_IN      /* N(0, 1) + fan_in: its centres v and w (fan_in = K // 2, 1 for its 3x3 kernels) */
} bf_init;

/* How a flex layer joins its branches and where its threshold comes from (flexnet.md 1.4-1.6). */
typedef enum bf_flex_joint { BF_FLEX_JOINT_MAX = 0, BF_FLEX_JOINT_MASK = 1 } bf_flex_joint;
typedef enum bf_threshold_mode {
    BF_THRESHOLD_LEARNED = 0,   /* a trained parameter (the method as described) */
    BF_THRESHOLD_FROZEN_RANDOM, /* kept at its random start, as FlexNet's GPU runs had it (a buffer) */
    BF_THRESHOLD_RESAMPLE       /* drawn anew at every forward, U(+-sqrt(6/(C*H*W))), as PlasticFlex's code does */
} bf_threshold_mode;

/* Where a mask-joint flex layer's logits come from (FlexNet's and PlasticFlex's logits_mechanism). */
typedef enum bf_flex_logits {
    BF_FLEX_LOGITS_THRESHOLD = 0,     /* L = P~ - T: the widened pool against a threshold (THRESHOLD) */
    BF_FLEX_LOGITS_SPATIAL_ATTENTION  /* L = SAB(x), a small CNN of the layer's input ("SpatialAttentionBlock"):
                                       * attention_blocks x [conv3x3 c_in -> c_in, LeakyReLU(0.01), BN(c_in)],
                                       * then conv3x3 c_in -> c_out, LeakyReLU(0.01), BN(c_out); it keeps H x W,
                                       * so stride-1 same-size layers only */
} bf_flex_logits;

/* Where a channel-wise max flex site takes its output from. LEARNED: per element, the larger branch
 * (the flex layer); CONV, POOL: one branch everywhere, fixed ahead of time ([model] static_routing,
 * FlexNet's MaxPrefResNet ablation, flexnet.md 2.2). A CONV site is built as a plain conv layer; a
 * POOL site stays a flex layer without the conv (and without its parameters), its output the widened
 * max-pool. */
typedef enum bf_flex_route { BF_FLEX_ROUTE_LEARNED = 0, BF_FLEX_ROUTE_CONV, BF_FLEX_ROUTE_POOL } bf_flex_route;

/* A routing file read for [model] static_routing (static_routing.c): each site's fixed route. */
typedef struct bf_static_routing bf_static_routing;

typedef struct bf_flex_options {
    bf_flex_joint joint;
    bf_flex_channel_rule channels;
    bf_flex_tie_rule ties;
    bf_flex_mask mask;
    float mask_factor;          /* SIGMOID_MUL's multiplier */
    int logits_bn;              /* batch-norm on the logits (bn_logits) */
    bf_flex_logits logits;      /* mask joint: the threshold or a spatial-attention block */
    int attention_blocks;       /* SPATIAL_ATTENTION: its c_in -> c_in blocks (num_spatial_attention_block) */
    bf_threshold_mode threshold_mode;
    float bn_eps, bn_momentum;
    bf_flex_route route;        /* set by bf_model_add_flex from the model's static_routes: LEARNED or POOL */
} bf_flex_options;

/* A named slice of the parameter (or buffer) array, with its PyTorch state_dict name and shape. */
typedef struct bf_param {
    char name[BF_NAME_MAX];
    size_t offset, count;
    int ndim;
    int64_t shape[6];           /* up to 6: the locally connected weight keeps the reference's 6-D shape */
    bf_init init;
    int64_t fan_in, fan_out;
    int layer;
} bf_param;

typedef struct bf_layer {
    bf_layer_kind kind;
    char name[BF_NAME_MAX];     /* PyTorch module path: "features.0", "layer1.0.conv1" */
    int input[2];               /* producing layers (BF_MODEL_INPUT for the image batch) */
    int num_inputs;
    int num_consumers;
    bf_shape out_shape;         /* at the model's maximum batch size (times time_steps) */
    int time_steps;             /* T when the layer works on [T*N, ...] (between encode and time mean), else 1 */
    /* hyper-parameters */
    bf_conv2d_shape conv;
    bf_pool_shape pool;
    bf_bn_shape bn;
    bf_linear_shape linear;
    float dropout_p;
    float leaky_slope;          /* LeakyReLU's negative slope */
    int dropout_group;          /* dropout: elements sharing one draw, 1 or h*w (whole channels: Dropout2d) */
    int has_bias;
    int frozen;                 /* linear: weight and bias live in buffer slots 0 and 1, untrained */
    bf_flex_shape flex;         /* flex: branch shapes (the pool branch is `pool`, the conv `conv`) */
    bf_flex_options flex_opt;
    int flex_pool_site;         /* flex: stands in for a 2x2 max-pool ([model] fully_flex), not for a conv */
    int in_logits_block;        /* a layer of a flex layer's spatial-attention block (not one of the
                                 * network's conv sites: [model] flex_layers does not count it) */
    int flex_conv_recomputed;   /* flex, mask joint ([model] flex_recompute_conv): C is not kept for the
                                 * backward, which computes the conv again into the shared scratch */
    float *flex_conv;           /* flex, mask joint: conv branch output C [n, c_out, hw] */
    uint8_t *flex_window;       /* flex: each pooled element's argmax in its window (ops.h) */
    uint32_t *flex_winners;     /* flex, max joint: one bit per output element, conv won or tied */
    uint32_t *flex_ties;        /* flex, max joint: one bit per output element, conv and pool tied */
    float *flex_stats;          /* flex: device accumulator of conv wins (or of the mask) since the last log */
    bf_neuron_params neuron;    /* neuron: the dynamics, surrogate and T */
    int encoding;               /* encode: 0 direct, 1 rate (Bernoulli) */
    float *neuron_charge;       /* neuron, LIF/IF: H[t] saved for the backward */
    int charge_in_place;        /* neuron: the charge overwrites the input's output, which nothing reads
                                 * after this forward (the memory plan, memory_plan.c) */
    int charge_recomputed;      /* neuron: no charge kept; the backward computes it again from the input
                                 * batch-norm's input and statistics (neuron_backward_bn) */
    int neuron_in_bn;           /* neuron with its charge recomputed whose backward its input batch-norm runs
                                 * with its own ([spiking] fuse_bn_backward): no pass of its own backward,
                                 * and the pair's two gradients are one buffer, the neuron's */
    int bn_runs_neuron;         /* batch-norm that runs such a neuron's backward (neuron_batchnorm_backward) */
    int bn_in_flex;             /* batch-norm whose backward only sums ([model] fuse_flex_bn): the flex layer
                                 * before it applies its dx (flex_pool_max_backward_scatter_bn); the pair's
                                 * gradients are one buffer, the batch-norm's */
    int flex_applies_bn;        /* flex layer that applies the next batch-norm's dx so */
    int flex_dconv_apart;       /* flex layer whose backward writes dC into its scratch rather than over dy:
                                 * the sliding-window route reads dy across items (bf_cuda_flex_kernels_slide) */
    int flex_gives_bn_stats;    /* flex layer whose training forward takes the next batch-norm's statistics
                                 * ([model] fuse_flex_bn_stats: flex_pool_max_forward_bn_stats) */
    int bn_stats_in_flex;       /* batch-norm whose statistics that flex layer took: its training forward
                                 * only applies them (or, read by a neuron alone, does nothing) */
    float *bn_coef;             /* bn_in_flex: batchnorm_backward_sums's coefficients, 2c floats */
    int out_forward_only;       /* batch-norm read by such a neuron alone: its output lives from its
                                 * forward to the neuron's, in the plan's forward-only region */
    int spikes_packed;          /* neuron: y is kept as bits (below); planned by bf_model_finalize */
    uint32_t *spike_bits;       /* neuron with packed spikes ([spiking] pack_spikes): y as bits, kept for
                                 * the consumers' backward; NULL: y itself is kept */
    float *spikes_unpacked;     /* ... y restored from them before the first backward that reads it */
    int spikes_restored;        /* 1 from that restore until the next forward: inputs read spikes_unpacked */
    int unpack_before;          /* the consumer whose backward restores them (-1: none reads y) */
    float *neuron_stats;        /* neuron: device accumulators {spikes, silent elements} since the last log */
    /* The V1 layers (layer_v1.c; ../shared/specs/v1-constrained.md): a divisive normalisation's 1x1
     * conv is `conv` and its weight W [c, c], generated from its widths at every forward, v1_weights;
     * v1_sums holds S = W x from its forward to its backward, which turns it into S's gradient, and
     * v1_dweights that of W. A polar layer's `linear` is its per-map GEMM (n = batch x channels, 1024
     * in, 256 out) and v1_weights the constant operator, built by bf_polar_operator at finalize. */
    float *v1_weights, *v1_sums, *v1_dweights;
    int polar_padding, polar_antialias; /* bf_polar_options (src/host/polar_map.h) */
    bf_oci_distance oci_distance;       /* DIVNORM: its channel distance ([model] oci_distance) */
    /* A DoG layer's `conv` is its DoG conv over the first dog_channels channels (in and out); its
     * kernels [dog_channels^2, k, k] are generated into v1_weights at every forward, their taps'
     * norms into v1_sums, their gradient into v1_dweights; v1_slice holds the channels it convolves
     * (their gradient in the backward), v1_slice_out the conv's output. */
    int dog_channels, dog_amp_paper;
    float *v1_slice, *v1_slice_out;
    bf_local_shape local;       /* locally connected (layer_local.c) */
    /* parameters: indices into model->params (weight first, then bias / gamma, beta; a flex layer:
     * flex_conv.weight, flex_conv.bias, threshold, bn_logits.weight, bn_logits.bias), -1 = none */
    int param_index[7];         /* 7: the Cirincione normalisation's A, rho, sigma, theta, v, w, bias */
    int num_params;
    int buffer_index[3];        /* running mean and variance (batch-norm, bn_logits), frozen flex threshold,
                                 * frozen linear weight and bias */
    /* memory (backend) */
    float *out;                 /* output activation; aliases the input for an in-place ReLU */
    int in_place;
    int relu_fused;             /* batch-norm (the model's fuse_bn_relu) or residual add (fuse_add_relu)
                                 * whose in-place ReLU it runs itself: its output is relu(y), its
                                 * backward masks dy, its dout is the ReLU's */
    int relu_joined;            /* ReLU run by its input batch-norm or add: no pass of its own either way */
    int bias_in_bn;             /* conv with a bias whose output one batch-norm alone reads ([model]
                                 * fold_conv_bias): in training it adds no bias and writes its bias
                                 * gradient as 0 (the batch-norm takes a per-channel constant out again),
                                 * and the batch-norm adds momentum * bias to its running mean */
    int params_trained;         /* it has a parameter that trains (every one, or those [optim] train_only
                                 * names): only then does its backward compute parameter gradients */
    int needs_grad;             /* its output gradient is used: it or a layer it reads (at any depth) has
                                 * trainable parameters; else no dout, and its consumers skip that dx
                                 * (a spiking net's encode layer: the first conv's backward-data) */
    float *dout;                /* gradient of the output, placed by the memory plan */
    int32_t *argmax;            /* max-pool */
    float *save_mean, *save_invstd; /* batch-norm */
    float *bwd_scratch;         /* flex: its backward's scratch (the max joint's dC and dP; the mask joint's
                                 * P, L, dC, dP, ...: layer_flex.c), placed like a gradient */
    float *fwd_scratch;         /* flex with the mask joint: its forward's P, L, ..., placed over the outputs
                                 * of layers not yet run */
    size_t dout_at, bwd_scratch_at, fwd_scratch_at, unpack_at; /* their offsets in the arena (SIZE_MAX: none) */
    /* The largest block of the arena dead during this layer's forward ([0]) and backward ([1]):
     * its convolutions' workspace when their algorithm fits (conv_workspace_hint) */
    void *ws_free[2];
    size_t ws_free_at[2], ws_free_bytes[2];
} bf_layer;

typedef struct bf_model {
    bf_backend *backend;
    bf_shape input_shape;       /* [max_batch, c, h, w] */
    int num_classes;
    char arch[32];
    bf_layer *layers;
    int num_layers, cap_layers;
    bf_param *params;           /* trained parameters, in registration order */
    int num_params;
    size_t num_param_floats;
    bf_param *buffers;          /* batch-norm running statistics */
    int num_buffers;
    size_t num_buffer_floats;
    float *param_data;          /* backend memory: every parameter, contiguous */
    float *grad_data;           /* backend memory: every gradient, same layout */
    float *buffer_data;         /* backend memory: every running statistic */
    int64_t num_batches_tracked;/* batch-norm forward passes in training mode (state_dict buffer) */
    /* The memory plan (memory_plan.c): the activations that only this step's backward reads
     * ("transient") come first in the arena, in layer order, and every output gradient is placed
     * over those already dead when its backward writes it, or beyond them where none fits. */
    size_t transient_bytes;     /* those activations */
    size_t grad_bytes;          /* memory beyond them: gradients and flex scratch that fit over no dead
                                 * activation, and forward_only_bytes */
    size_t grad_live_bytes;     /* the most gradient memory live at once, wherever placed */
    int keep_neuron_outputs;    /* 1: neuron layers' outputs outlive the backward (spike rasters read them) */
    int pack_spikes;            /* 1 (the default): spiking layers keep their spikes for the backward as
                                 * bits; read by bf_model_finalize */
    int fold_conv_bias;         /* 1 (the default): in training, convs read by a batch-norm alone add no bias
                                 * ([model] fold_conv_bias: bias_in_bn; read by bf_model_finalize), and a
                                 * channel-wise max flex layer's joint adds its conv's and its route sums
                                 * the gradient (layer_flex.c) */
    int fuse_bn_relu;           /* 1 (the default): a batch-norm runs the in-place ReLU after it, one pass
                                 * each way (batchnorm_relu_apply/backward); read by bf_model_finalize */
    int fuse_add_relu;          /* 1 (the default): so does a residual add (add_relu_forward/backward, in
                                 * evaluation too); read by bf_model_finalize */
    int fuse_flex_bn;           /* 1 (the default): ... and the batch-norm after such a layer applies its dx in
                                 * that pass ([model] fuse_flex_bn); read by bf_model_finalize */
    int flex_kernels_slide;     /* [run] flex_kernels = slide as planned (also when the backend, set to it,
                                 * says so: bf_cuda_flex_kernels_slide); read by bf_model_finalize */
    int fuse_flex_bn_stats;     /* 1 (the default): a max-joint flex layer's forward takes the statistics of
                                 * the batch-norm after it ([model] fuse_flex_bn_stats); read by
                                 * bf_model_finalize */
    int fuse_flex_scatter;      /* 1 (the default): max-joint EXPAND flex layers route dy and scatter the
                                 * pool's share into dx in one op (flex_pool_max_backward_scatter), no
                                 * dP; read by bf_model_finalize (the backward scratch) */
    int fuse_bn_backward;       /* 1 (the default): such a LIF/IF layer's backward runs inside its batch-norm's
                                 * ([spiking] fuse_bn_backward); read by bf_model_finalize */
    int recompute_charge;       /* 1 (the default): LIF/IF layers fed by a batch-norm alone keep no
                                 * charge ([spiking] recompute_charge); read by bf_model_finalize */
    size_t forward_only_bytes;  /* the packed layers' float spikes (live only until their consumers'
                                 * forward) beyond the transient activations: part of grad_bytes */
    float *grad_scratch;        /* a backward writes here when its target already holds a gradient */
    size_t grad_scratch_floats; /* its size: the largest output with several consumers, or 0 (a chain) */
    int batch;                  /* current batch size (<= input_shape.n) */
    int training;               /* 1: batch statistics, dropout on */
    uint64_t step;              /* training step counter; dropout masks are drawn from (seed, step, layer) */
    long seed;
    uint64_t sample_offset;     /* where the batch's first sample sits: in the global batch of a data-parallel
                                 * step (rank x batch; 0 alone), in the split during an evaluation. Dropout,
                                 * stochastic-mask and rate-coding draws are keyed by the sample's place there
                                 * (bf_layer_draws), so N ranks draw what one process draws for their samples */
    const float *input;         /* the image batch of the last forward pass (read by backward) */
    size_t arena_bytes;         /* activations, gradients and scratch, as planned by bf_model_finalize */
    void *arena;                /* backend memory holding every activation and layer scratch */
    int build_failed;           /* a bf_model_add_* failed: 1 (BF_ERR_ARG), or BF_ERR_CONFIG where a config key
                                 * decides; bf_model_build_status returns it */
    double flex_samples;        /* training samples since the flex monitors were last reset */
    int flex_monitor_due;       /* 1 (the default): training forwards take the mask joint's routing
                                 * statistics for bf_model_flex_monitor; a loop that knows which steps
                                 * it logs sets it per step and spares the others the reductions */
    double spike_samples;       /* training samples since the spike monitors were last reset */
    /* Called by bf_model_backward after each layer's backward, when that layer's parameter
     * gradients are final (data parallelism starts their all-reduce there); NULL = none. */
    bf_status (*on_layer_backward)(void *ctx, struct bf_model *m, int layer);
    void *on_layer_backward_ctx;
    /* Called by bf_model_forward after each layer's forward, while its output (l->out) holds what it
     * computed (the plan may reuse that memory, or an in-place ReLU overwrite it, later); NULL = none.
     * bioflex-eval --activations reads the outputs there. */
    bf_status (*on_layer_forward)(void *ctx, struct bf_model *m, int layer);
    void *on_layer_forward_ctx;
    /* Called by a flex layer's forward with its convolution's output C [batch, c_out, h, w] (backend
     * memory) before the joint, which may overwrite it, and with on_layer_forward_ctx; NULL = none.
     * C holds the conv's bias unless fold_conv_bias left it to a channel-wise max joint (then add it).
     * bioflex-eval --activations writes it as "<layer>.flex_conv", the branch FlexNet's Brain-Score
     * probes read. */
    bf_status (*on_flex_conv)(void *ctx, struct bf_model *m, int layer, const float *conv);
    /* Synchronised batch-norm ([run] sync_bn): sums n doubles of BACKEND memory (device memory on
     * CUDA) over every data-parallel rank, in place, in the backend's stream order; NULL =
     * batch-norm uses this rank's batch alone. */
    bf_status (*sync_sums)(void *ctx, double *sums, size_t n);
    void *sync_ctx;
    /* Backend memory for those sums: 2 * (the widest batch-norm's channels) + 1 doubles, planned
     * by bf_model_finalize for every model with a batch-norm layer (NULL without one). */
    double *bn_sync_sums;
    size_t bn_sync_doubles;
    /* Input gradients (adversarial attacks, analysis.h): set input_gradient before bf_model_finalize,
     * and bf_model_backward also writes the gradient of the loss with respect to the image batch into
     * dinput (backend memory, the input's shape), in training or in evaluation mode. Such a model
     * runs no fused pair whose backward assumes training statistics (the memory plan turns them off:
     * fuse_bn_relu, fuse_flex_bn, fuse_flex_bn_stats, recompute_charge, fuse_bn_backward); in
     * evaluation mode its backward computes no parameter gradients (grad_data is left as it was)
     * unless eval_parameter_gradients is set: then it writes the gradients of the evaluation
     * forward (batch-norm's gamma and beta through the running statistics' affine map, a conv bias a
     * batch-norm takes out in training included), as PyTorch's backward after model.eval() does. */
    int input_gradient;
    int eval_parameter_gradients; /* set at any time, input_gradient models only (the Hessian's eval mode) */
    /* Training steps in evaluation mode ([optim] train_only_mode = eval, a linear probe's fixed
     * backbone): set before bf_model_finalize, and the model is planned as an input_gradient one (no
     * fused pair that reads training statistics, the evaluation batch-norm backward's zeros and
     * scratch) without the image's gradient; its steps run with training = 0 and
     * eval_parameter_gradients = 1. */
    int eval_backward;
    /* [optim] train_only's prefixes ("" = all): only layers with a parameter named so, and the layers
     * above them, get a gradient, so a probe's backward ends at its head (set before finalize). */
    char trained_only[BF_PATH_MAX];
    /* [model] static_routing while the model is built (bf_model_build sets it, and NULL after): each
     * bf_model_add_flex of a channel-wise max site takes its route from it (bf_flex_route). */
    const bf_static_routing *static_routes;
    float *dinput;
    int dinput_written;         /* during a backward: a consumer of the input has written dinput */
    float *eval_zeros;          /* input_gradient: zeros, as many as the widest batch-norm's channels */
    float *eval_scratch;        /* input_gradient: 2x as many floats, bf_batchnorm_eval_param_grads' */
} bf_model;

/* b may be NULL to plan a model without allocating memory (shapes, parameters, FLOPs only). */
bf_status bf_model_create(bf_backend *b, bf_shape input_shape, long seed, bf_model **out);
void bf_model_destroy(bf_model *m);

int bf_model_add_conv(bf_model *m, const char *name, int input, int c_out, int k, int stride, int pad,
                      int groups, int bias, bf_init weight_init);
int bf_model_add_batchnorm(bf_model *m, const char *name, int input, float eps, float momentum);
int bf_model_add_relu(bf_model *m, const char *name, int input);
int bf_model_add_leaky_relu(bf_model *m, const char *name, int input, float slope);
int bf_model_add_maxpool(bf_model *m, const char *name, int input, int k, int stride, int pad);
int bf_model_add_avgpool(bf_model *m, const char *name, int input, int k, int stride, int pad);
int bf_model_add_global_avgpool(bf_model *m, const char *name, int input);
int bf_model_add_flatten(bf_model *m, const char *name, int input);
int bf_model_add_linear(bf_model *m, const char *name, int input, int out_features, int bias,
                        bf_init weight_init, bf_init bias_init);
/* A linear layer whose weight and bias are buffers kept at their random start: never trained, still
 * saved in checkpoints (PlasticFlex's reference builds fc1 after its optimiser, so fc1 stays random). */
int bf_model_add_frozen_linear(bf_model *m, const char *name, int input, int out_features, int bias,
                               bf_init weight_init, bf_init bias_init);
int bf_model_add_dropout(bf_model *m, const char *name, int input, float p);
/* nn.Dropout2d: each sample's channels dropped whole (the V1 ResNet's resnet50_local_rf). */
int bf_model_add_dropout2d(bf_model *m, const char *name, int input, float p);
int bf_model_add_add(bf_model *m, const char *name, int input0, int input1);
/* Spiking: encode the input over T steps (encoding 0 direct, 1 rate), a neuron layer (its T is
 * the input's), and the mean over the T steps of the input. */
int bf_model_add_encode(bf_model *m, const char *name, int input, int time_steps, int encoding);
int bf_model_add_neuron(bf_model *m, const char *name, int input, const bf_neuron_params *p);
/* A LIF/IF layer over `time_steps` steps of an input of one step, the same at every step
 * (bf_neuron_params.shared_input: direct coding's first neuron layer, [spiking] share_direct_input):
 * the input is a batch-norm's output, and the layer recomputes its charge from the batch-norm's
 * input ([spiking] recompute_charge; the memory plan refuses the model otherwise). */
int bf_model_add_neuron_shared(bf_model *m, const char *name, int input, const bf_neuron_params *p, int time_steps);
int bf_model_add_time_mean(bf_model *m, const char *name, int input);

/* V1 layers (../shared/specs/v1-constrained.md). Tuned divisive normalisation (4.1): y = x / (1 + W x)
 * over channels, W from c learned widths, the parameter "<name>.sigmas" (U(32, 33) for c = 256).
 * Cortical magnification (5): each 32x32 map resampled onto 16x16 (radius x angle) by the fixed
 * operator of src/host/polar_map.c (padding: 0 the angles reflect-padded, 1 both axes as
 * Brain-Score's copy, 2 the angles wrapped around; antialias: torchvision >= 0.17's resize); no
 * parameters. */
int bf_model_add_divnorm(bf_model *m, const char *name, int input, bf_oci_distance distance);
int bf_model_add_polar(bf_model *m, const char *name, int input, int padding, int antialias);
/* Center-surround (2): a DoG conv (k x k, stride 1, padding k/2, no bias) from dog_channels to
 * dog_channels on the input's first dog_channels channels, the others passed on unchanged;
 * parameters "<name>.dog_conv.sigma1", ".sigma2_scale", ".total_scale" [dog_channels^2, 1, 1], as the
 * reference's DoGConv2DLayer; amp_paper: amplitude 1/(pi s) instead of the code's s/pi. */
int bf_model_add_dog(bf_model *m, const char *name, int input, int dog_channels, int k, int amp_paper);
/* Locally connected (3): c_out channels, k x k windows at `stride` with zero padding `pad`, a
 * weight per output position, "<name>.weight" [1, c_out, c_in, h_out, w_out, k*k] drawn N(0, 1) as
 * the reference's (no fan-in scaling); no bias. */
int bf_model_add_local(bf_model *m, const char *name, int input, int c_out, int k, int stride, int pad);
/* Cirincione divisive normalisation (4.2): y = x / (N + |bias|), N = conv2d(x, G, padding 1), G [c, c, 3, 3]
 * an oriented anisotropic Gaussian per (out, in) channel pair, generated at every forward from its
 * parameters "<name>.A", ".rho", ".sigma", ".theta", ".v", ".w" [c, c, 1, 1] and "<name>.bias" [1], as
 * the reference's DivisiveNormalizationCirincione(c, 3) (its x_coords, y_coords are generated). */
int bf_model_add_cirincione(bf_model *m, const char *name, int input);

/* A flex layer: conv (c_out, k, stride, pad, with bias) and a max-pool of the input with the same
 * window, joined per element as `opt` says. Parameters: flex_conv.weight/bias, threshold (mask
 * joint with threshold logits), bn_logits.* (logits_bn), under the layer's name as in FlexNet's
 * state_dict. With spatial-attention logits the block's layers come first, as ordinary layers named
 * "<name>.spatial_attention_block.<i>" (one nn.Sequential: conv, LeakyReLU, BN per block, the
 * bioflex reading: the specs give no module names), and the flex layer reads the last one's output
 * as its second input, the logits; returns the flex layer's index. */
int bf_model_add_flex(bf_model *m, const char *name, int input, int c_out, int k, int stride, int pad,
                      bf_init weight_init, const bf_flex_options *opt);
/* [model] static_routing (static_routing.c): reads a routing JSON of bioflex-eval --routing (its
 * channel-wise max layers' names and conv fractions); a site is CONV when its conv fraction exceeds
 * threshold, else POOL. Errors name the file and what is wrong in it. */
bf_status bf_static_routing_read(const char *path, double threshold, bf_static_routing **out);
/* The route of flex site `name` (an error naming the file when it lacks the site). */
bf_status bf_static_routing_route(const bf_static_routing *r, const char *name, bf_flex_route *route);
/* After the build: an error naming a site of the file that the model does not have (the file of
 * another network); *conv, *pool (nullable): the sites of each route. */
bf_status bf_static_routing_check(const bf_static_routing *r, const bf_model *m, int *conv, int *pool);
void bf_static_routing_free(bf_static_routing *r);
/* Whether a flex layer computes its conv (every one but a POOL site of static routing). */
static inline int bf_flex_has_conv(const bf_layer *l) { return l->flex_opt.route != BF_FLEX_ROUTE_POOL; }
/* Whether a parameter name starts with one of the comma-separated prefixes (spaces around them
 * ignored), whole name components only: "fc" matches "fc.weight", not "fc2.weight" ([model]
 * init_exclude, [optim] train_only). */
int bf_name_in_prefixes(const char *name, const char *prefixes);
/* Output shape of a layer (or of the input, for BF_MODEL_INPUT) at the maximum batch size. */
bf_shape bf_model_shape_of(const bf_model *m, int layer);
/* The first error of any bf_model_add_* (they return -1 and remember it). */
bf_status bf_model_build_status(const bf_model *m);

/* Allocates parameters, gradients, buffers and the activation arena, and initialises weights. */
bf_status bf_model_finalize(bf_model *m);

/* Sets the batch size of the next passes (<= the maximum given at creation). */
bf_status bf_model_set_batch(bf_model *m, int n);

/* Forward pass of the image batch x (backend memory, [batch, c, h, w]); *logits points to the
 * last layer's output [batch, num_classes]. */
bf_status bf_model_forward(bf_model *m, const float *x, const float **logits);
/* Backward pass from dlogits (backend memory); fills m->grad_data (overwrites), and m->dinput for a
 * model built with input_gradient. In evaluation mode (training = 0) only such a model has a
 * backward: the gradient of the evaluation forward (running statistics, no dropout) to the image. */
bf_status bf_model_backward(bf_model *m, const float *dlogits);

/* Builds the architecture named in cfg (cnn, vgg6/11/16, resnet18/50) for inputs of shape
 * [max_batch, c, h, w] and finalizes it. */
bf_status bf_model_build(bf_backend *b, const bf_model_config *cfg, bf_shape input_shape,
                         int num_classes, long seed, bf_model **out);

/* Reads and resets the flex monitors of the j-th flex layer: ratio[j], the fraction of elements
 * where the conv won (channel-wise max: over the training batches since the last call; mask:
 * mask > 0.5 in the last training batch), homogeneity[j] (mean |M - 0.5| * 2; 1 for the
 * channel-wise max) and names[j]; returns the number of flex layers (up to max). This
 * synchronises with the device: call it at log intervals. */
int bf_model_flex_monitor(bf_model *m, double *ratio, double *homogeneity, const char **names, int max);

/* Reads and resets the spike monitors of the j-th neuron layer: rate[j] the mean firing rate (spikes
 * per element and step), silent[j] the fraction of elements that never fired in their T steps,
 * names[j]; returns the number of neuron layers (up to max). Synchronises: call at log intervals. */
int bf_model_spike_monitor(bf_model *m, double *rate, double *silent, const char **names, int max);

/* Copies the spikes of the first k neurons of the first sample of the last batch of neuron layer
 * `index`, every step: out[t*k + j] for t < T (host memory, T*k floats). Synchronises. */
bf_status bf_model_spike_raster(bf_model *m, int index, int k, float *out);

/* The batch a layer's ops see: the model's current batch times the layer's time steps. */
static inline int bf_layer_batch(const bf_model *m, const bf_layer *l) { return m->batch * l->time_steps; }

/* The random draws of layer i's output in the current step (dropout, stochastic flex masks,
 * rate-coded spikes; bf_draws in hash.h): seeded by (run seed, step, the layer's name); its first
 * counter is sample_offset times the layer's elements per sample, and each of its time steps has
 * its own counters, so a sample's draws do not depend on the batch or rank that holds it. */
bf_draws bf_layer_draws(const bf_model *m, int i);
/* The seed of layer i's one draw of a `stream` (hash.h) in the current step: seeded by (run seed,
 * step, the layer's name), so that layouts with and without an encode layer draw the same. */
uint64_t bf_layer_step_seed(const bf_model *m, int i, uint64_t stream);

/* Forward FLOPs of one sample for layer i (multiply-add = 2 FLOPs). */
double bf_layer_flops(const bf_model *m, int i);
const char *bf_layer_kind_name(bf_layer_kind k);
/* Prints the model table: layer, kind, output shape, parameters, forward FLOPs, activation memory. */
void bf_model_print_table(const bf_model *m, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
