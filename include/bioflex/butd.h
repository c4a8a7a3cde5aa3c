/* butd.h - bottom-up / top-down (BU-TD) networks with Counter-Hebb learning
 * (Abel & Ullman, NeurIPS 2024; ../shared/specs/butd-counterhebb.md).
 *
 * A BU-TD network is a chain of levels 0..L (level 0 = the image). Layer i (Linear or Conv2d) maps
 * level i to level i+1; every core layer applies ReLU, and the last layer is the linear prediction
 * head. The TD network mirrors it: every level has a counter activity td[l], reached from td[l+1]
 * by the transposed op (x * W for Linear, conv-transpose = conv backward-data for Conv2d) with the
 * same weight W (shared) or its own weight B (separate: Linear B is [in, out], Conv B has W's layout).
 * A Linear layer after a conv reads the NCHW activity as a flat vector (PyTorch's Flatten).
 *
 * One training step runs three passes:
 *   1. bf_butd_instruct (guided nets only): one-hot task -> fixed random ReLU task head -> down the
 *      core with the TD op + ReLU, storing td[l] for every core output level;
 *   2. bf_butd_forward: BU pass, a = ReLU(z) * 1[td > 0] (GaLU) when guided;
 *   3. bf_butd_backward: the TD error pass from the per-sample loss gradient at the logits, with the
 *      bias blocked and GaLU against the BU activity (1[a > 0]), then the update of every layer
 *      written into grad_data: Counter-Hebb (TD activity above x BU activity below, batch mean) or
 *      backprop (the engine's backward ops, always through W).
 * Parameters and gradients are one contiguous buffer each, in the layout of bf_param, so the
 * engine's optimisers and checkpoints apply unchanged. The task head is not trained (as in the
 * reference): its weights live in a separate buffer; opt.train_task_head trains it (its weights
 * then join the parameters, see butd_task_head.c). */
#ifndef BIOFLEX_BUTD_H
#define BIOFLEX_BUTD_H

#include <stdint.h>
#include <stdio.h>

#include "bioflex/config.h"
#include "bioflex/model.h"
#include "bioflex/ops.h"
#include "bioflex/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bf_butd_learning { BF_BUTD_BACKPROP = 0, BF_BUTD_COUNTER_HEBB = 1 } bf_butd_learning;
/* The loss at the logits: softmax cross-entropy, or one logit per sample with sigmoid BCE. */
typedef enum bf_butd_loss { BF_BUTD_LOSS_CROSS_ENTROPY = 0, BF_BUTD_LOSS_BCE = 1 } bf_butd_loss;
/* BLOCK: a residual basic block, mirrored (spec section 1.4): BU u = ReLU(conv1 x) (GaLU), s = conv2 u
 * + id(x) (id = x, or a 1x1 strided conv when the shape changes), a = ReLU(s) (GaLU); TD: the sum
 * splits, conv2^T then conv1^T on one path and id^T on the other. Convs are bias-free. With separate
 * weights the 1x1 downsample has its own B like every other conv, unless downsample_always_shared
 * (the reference builds it shared: its weight-symmetry study). */
typedef enum bf_butd_layer_kind { BF_BUTD_LINEAR = 0, BF_BUTD_CONV = 1, BF_BUTD_BLOCK = 2 } bf_butd_layer_kind;
/* Counter-Hebb with batch-norm ([butd] ch_bn; spec section 1.4, README quirk 11). EXACT: the error
 * pass goes back through each BU batch-norm's true Jacobian (the batch statistics of the BU pass)
 * and the update writes gamma's and beta's gradients, so Counter-Hebb = backprop. INDEPENDENT: the
 * reference's TD batch-norm (the TD copy, own batch statistics, gamma 1 and beta 0) after each
 * transposed op of the error pass, as in the instruction pass, and no update of either batch-norm. */
typedef enum bf_butd_ch_bn { BF_BUTD_CH_BN_EXACT = 0, BF_BUTD_CH_BN_INDEPENDENT = 1 } bf_butd_ch_bn;

typedef struct bf_butd_options {
    bf_butd_learning learning;
    int shared_weights;      /* 1: the TD op uses W itself; 0: a separate weight B */
    int symmetric_init;      /* separate weights: B starts as W^T instead of an independent draw */
    float symmetric_init_noise; /* symmetric_init: each element of B times (1 + this x N(0, 1)) */
    int feedback_alignment;  /* separate weights, Counter-Hebb: B gets no update (fixed random feedback) */
    int td_init_legacy;      /* independent B: U(+-1/sqrt(fan_in)) (the reference's older a = sqrt 5)
                                instead of U(+-sqrt(6/fan_in)) (its current a = 0) */
    int downsample_always_shared; /* separate weights: residual 1x1 downsamples still use W (no B) */
    int guided;              /* run the instruction pass and gate the BU pass with it */
    int num_tasks;           /* guided: length of the one-hot instruction */
    int task_embedding;      /* guided: hidden width of the task head (0 = one layer) */
    float noise_std;         /* > 0: every update is multiplied by one N(1, noise_std) scalar per layer and step */
    int batch_norm;          /* convs and blocks added from now on get batch-norm with a TD copy */
    int ch_bn;               /* bf_butd_ch_bn: batch_norm with learning = counter_hebb (EXACT or INDEPENDENT) */
    int train_task_head;     /* guided: the task head is trained (straight-through gates, butd_task_head.c) */
    int multi_decoders;      /* guided: the head has num_classes outputs per task; the sample's task picks its own */
    long seed;
} bf_butd_options;

/* Batch-norm after one conv, as the reference's BUTDBatchNorm2d (spec section 1.4): the BU pass
 * normalises the conv output z (gamma and beta trained, running statistics in state_data); the TD
 * direction has its own, independent batch-norm over the channels of the transposed op's output,
 * applied in the instruction pass. Its affine parameters stay at (1, 0): the reference trains these
 * networks with backprop, and the instruction pass carries no gradient. The error pass is exact
 * backprop through the BU batch-norm (backprop, and Counter-Hebb with ch_bn = EXACT), or with
 * Counter-Hebb and ch_bn = INDEPENDENT the TD copy after each transposed op, as the reference's
 * error pass (not the batch-norm Jacobian: not backprop). */
typedef struct bf_butd_norm {
    char name[BF_NAME_MAX];
    bf_bn_shape bu, td;      /* BU: the conv's output; TD: the transposed op's output (at the maximum batch) */
    int gamma, beta;         /* parameter indices */
    size_t state;            /* offset in state_data: running mean, var [bu.c each], TD running mean, var [td.c each] */
    float *z;                /* the conv output the last BU pass normalised (the backward reads it) */
    float *save;             /* [2 bu.c]: its batch mean and 1/sqrt(var + eps) */
    float *td_save;          /* [2 td.c]: the TD copy's (written by the op, read by nothing) */
} bf_butd_norm;

typedef struct bf_butd_layer {
    bf_butd_layer_kind kind;
    char name[BF_NAME_MAX];
    bf_conv2d_shape conv;    /* at the maximum batch */
    bf_linear_shape linear;  /* at the maximum batch */
    int relu;                /* core layers 1 (ReLU, GaLU when guided); the prediction head 0 */
    int in_size, out_size;   /* floats per sample */
    int out_c, out_h, out_w;
    int w, bias, td_w;       /* indices into params (-1 = none); a block's conv1 */
    /* residual block: conv1 is `conv` */
    bf_conv2d_shape conv2, down;
    int has_down;
    int w2, td_w2;           /* conv2 weight, its separate TD weight */
    int wd, td_wd;           /* the downsample weight, its separate TD weight (none: downsample_always_shared) */
    float *u, *td_u;         /* BU activity after conv1 (+ReLU, GaLU) and its TD counter */
    bf_butd_norm *norm[3];   /* batch-norm after conv (or a block's conv1), conv2, the downsample; NULL = none */
} bf_butd_layer;

typedef struct bf_butd_net {
    bf_backend *backend;
    bf_butd_options opt;
    int in_c, in_h, in_w;
    int max_batch, batch;
    int num_classes;
    bf_butd_layer *layers;   /* core layers then the head (the last) */
    int num_layers, cap_layers;
    int has_head;
    bf_butd_layer task_head[2]; /* BU direction: core output -> [embedding ->] tasks; used transposed */
    int num_task_layers;
    bf_param *params;        /* trained parameters: W, bias, B per layer */
    int num_params;
    size_t num_param_floats;
    float *param_data, *grad_data;
    float *task_data;        /* the task head weights: own buffer (fixed), or inside param_data (trained) */
    int task_param;          /* train_task_head: index of task_head.0.weight in params; -1 = fixed */
    float **bu_ungated;      /* train_task_head: per level, the BU activity before its gate (ReLU(z)) */
    float **gate_grad;       /* train_task_head: per level, the loss gradient at the gate's TD input */
    float **td_instruction;  /* train_task_head: per level, the instruction pass's TD activity */
    float *task_hidden_grad; /* train_task_head: [max_batch, task_embedding] */
    int32_t *task_ids;       /* multi_decoders: the batch's tasks in backend memory [max_batch] */
    float *logits;           /* multi_decoders: the tasks' slices of the head output [max_batch, num_classes] */
    size_t num_task_floats;
    float **act;             /* act[l], l = 1..L: BU activity at level l; act[0] is the input */
    float **td;              /* td[l]: TD activity at level l (instruction, then error) */
    float *task_onehot;      /* [max_batch, num_tasks] */
    float *task_onehot_host; /* its host staging, allocated once: a training step allocates nothing */
    float *task_hidden;      /* [max_batch, task_embedding] */
    float *scratch;          /* [max_batch, largest level] */
    float *scratch2;         /* the same size, only with batch-norm */
    int training;            /* 1: batch-norm uses and updates batch statistics; 0: running statistics */
    float *state_data;       /* batch-norm running statistics (saved with the weights) */
    size_t num_state_floats;
    float *norm_ones, *norm_zeros; /* the TD copies' fixed gamma and beta, [widest channel count] */
    /* [run] sync_bn over data-parallel ranks (set by the training run; NULL: each rank's own
     * statistics): the hook that sums backend doubles over the ranks, and its buffer. */
    bf_status (*sync_sums)(void *ctx, double *sums, size_t n);
    void *sync_ctx;
    double *bn_sync_sums;
    size_t bn_sync_doubles;
    uint64_t step;           /* updates so far (noise draws) */
    bf_status build_failed;  /* BF_OK, or why a bf_butd_add_* failed (its message is the last error) */
} bf_butd_net;

/* The input is [max_batch, c, h, w]. b == NULL plans the network (shapes and parameter counts)
 * without allocating anything: --dry-run. */
bf_status bf_butd_create(bf_backend *b, int c, int h, int w, int max_batch, const bf_butd_options *opt,
                         bf_butd_net **out);
void bf_butd_destroy(bf_butd_net *net);
/* Writes every trained parameter (and the fixed task head) to a safetensors file, under names
 * patterned on the reference's modules (core_net.i.weight, .bias, .back_weight, head.*,
 * task_head.i.weight), not its exact state_dict keys (README, BU-TD). */
bf_status bf_butd_save(const bf_butd_net *net, const char *path);
/* Reads such a file back into a network of the same shape (--resume); every tensor is checked by
 * name, dtype and shape, with a message naming the file and the tensor. */
bf_status bf_butd_load(bf_butd_net *net, const char *path);
/* Batch-norm running statistics as tensors (saved with the weights), 4 per norm:
 * <name>.running_mean, .running_var, .back_running_mean, .back_running_var; entry k
 * (0 <= k < bf_butd_norm_state_count) lies at state_data + *offset. */
int bf_butd_norm_state_count(const bf_butd_net *net);
void bf_butd_norm_state_entry(const bf_butd_net *net, int k, char *name, size_t name_size, size_t *offset,
                              int64_t *count);

/* Prints the layer table (name, kind, output shape, parameters) and "total: N parameters". */
void bf_butd_print_table(const bf_butd_net *net, FILE *out);
/* Core layers, bottom to top (ReLU, and GaLU when guided). Return the layer index or -1. */
int bf_butd_add_conv(bf_butd_net *net, const char *name, int c_out, int k, int stride, int pad, int groups, int bias);
int bf_butd_add_linear(bf_butd_net *net, const char *name, int out_features, int bias);
/* A residual basic block (batch-norm after each conv when opt.batch_norm): 3x3 convs (stride on the first), 1x1 downsample when
 * the stride or the channel count changes. */
int bf_butd_add_block(bf_butd_net *net, const char *name, int c_out, int stride);
/* Batch-norm for evaluation (0: running statistics) or training (1, the default). */
void bf_butd_set_training(bf_butd_net *net, int training);
/* The prediction head (plain linear), then allocation and initialisation from opt.seed: BU weights
 * and biases U(+-1/sqrt(fan_in)) (PyTorch's default), separate B kaiming_uniform(a=0) with fan_in
 * from B's own shape (a = sqrt 5 with td_init_legacy; W^T with symmetric_init), the task head
 * PyTorch's default. */
bf_status bf_butd_finalize(bf_butd_net *net, int num_classes);

bf_status bf_butd_set_batch(bf_butd_net *net, int n);
/* Pass 1: tasks (host memory, batch entries in [0, num_tasks)). */
bf_status bf_butd_instruct(bf_butd_net *net, const int32_t *tasks);
/* Pass 2: x is backend memory [batch, c, h, w]; *logits is [batch, num_classes]. */
bf_status bf_butd_forward(bf_butd_net *net, const float *x, const float **logits);
/* Pass 3 and the update: dlogits (backend memory) is the PER-SAMPLE loss gradient at the logits
 * (softmax - onehot for cross-entropy, not divided by the batch). Overwrites grad_data with the
 * gradient of the batch-mean loss (backprop) or the Counter-Hebb update. */
bf_status bf_butd_backward(bf_butd_net *net, const float *dlogits);

/* The prediction head's width for a dataset with `classes` classes (per task): [model]
 * num_classes or the dataset's, and 1 with [butd] loss = bce, which needs binary labels. */
bf_status bf_butd_outputs(const bf_config *cfg, const char *dataset, int classes, int *outputs);
/* Builds the network [butd] describes (fc, simple) for inputs c x h x w. */
bf_status bf_butd_build(bf_backend *b, const bf_butd_config *cfg, int c, int h, int w, int max_batch,
                        int num_classes, int num_tasks, long seed, bf_butd_net **out);

/* Sub-network analysis (spec section 3: the reference's Analyze hook records each task's TD
 * instruction activities per layer, results.py plots the fraction of active units and the binary
 * cosine similarity of two tasks' masks). A task's mask at a gated level is 1[td > 0] after the
 * instruction pass: exactly the GaLU gates it opens in the BU pass. The instruction pass reads no
 * image (one-hot task -> task head -> TD ops, ReLU, TD batch-norm copies), so in evaluation mode
 * (running statistics) the mask is a function of the task alone: one instruction of one sample per
 * task gives it, and no data is read. Levels, bottom to top: every core layer's output (the layer's
 * name) and, before a residual block's, its inner level after conv1 ("<block>.conv1"); the
 * prediction head is never gated. */
typedef struct bf_butd_subnetwork_level {
    char name[BF_NAME_MAX];
    int units;           /* per sample (C x H x W for a conv level) */
    uint8_t *masks;      /* [num_tasks][units]: 1 where the task's instruction activity is > 0 (NULL: whole) */
    int *active;         /* [num_tasks]: |mask| */
    double *fraction;    /* [num_tasks]: |mask| / units */
    int *common;         /* [num_tasks][num_tasks]: |mask_a AND mask_b| */
    double *cosine;      /* [num_tasks][num_tasks]: binary cosine |a AND b| / sqrt(|a| |b|); 0 when a mask is empty */
    double *jaccard;     /* [num_tasks][num_tasks]: |a AND b| / |a OR b|; 0 when both are empty */
} bf_butd_subnetwork_level;

typedef struct bf_butd_subnetworks {
    int num_tasks, num_levels;
    bf_butd_subnetwork_level *levels;
    bf_butd_subnetwork_level whole; /* every level's units together (no masks) */
} bf_butd_subnetworks;

/* The binary cosine |a AND b| / sqrt(|a| |b|) (0 when either mask is empty) and the Jaccard index
 * |a AND b| / |a OR b| (0 when both are empty) of two 0/1 masks of n units. */
void bf_butd_mask_overlap(const uint8_t *a, const uint8_t *b, size_t n, double *cosine, double *jaccard);
/* Every task's masks and their overlaps (guided nets only; BF_ERR_CONFIG otherwise). Runs the
 * instruction pass at batch 1 in evaluation mode; the net's batch and mode are restored. */
bf_status bf_butd_subnetworks_compute(bf_butd_net *net, bf_butd_subnetworks *out);
void bf_butd_subnetworks_free(bf_butd_subnetworks *r);
/* As JSON (bioflex-eval --subnetworks): per level name, units, each task's active units and
 * fraction, and every pair of tasks' common units, cosine and Jaccard index; the same for the
 * whole network. */
bf_status bf_butd_subnetworks_write_json(const bf_butd_subnetworks *r, FILE *f);
/* One line per level (and one for the whole network): the tasks' active fractions and the pairs'
 * cosines and Jaccard indices (both values for 2 tasks, else min / mean / max). */
void bf_butd_subnetworks_print(const bf_butd_subnetworks *r, FILE *out);

/* bioflex-train trains a config with [butd] network != none through bf_train: Adam(W) with the
 * configured schedule, the three passes per step, evaluation on the test split every epoch, and
 * data parallelism (--gpus N, mpirun) by averaging grad_data over the ranks (butd_train.c). */

#ifdef __cplusplus
}
#endif
#endif
