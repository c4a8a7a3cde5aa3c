/* config.h - the validated run configuration.
 *
 * An INI file (parsed with inih) plus `--set section.key=value` overrides become one bf_config.
 * The INI is read only in src/host/config.c; everything else sees this struct. Every key has a
 * type, a default, a range or a list of allowed values, and a one-line description in the key
 * table of config.c, which also prints the config reference (`bioflex-train --help-config`).
 * An unknown section or key, a wrong type or an out-of-range value is refused with
 * "file:line: [section] key: problem (allowed: ...)" and BF_ERR_CONFIG (exit status 2). */
#ifndef BIOFLEX_CONFIG_H
#define BIOFLEX_CONFIG_H

#include <stdio.h>

#include "bioflex/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BF_PATH_MAX 512
#define BF_LIST_MAX 64 /* entries of a list key: flex_layers can name every conv of a ResNet-50 but one */

/* [run] cpu_conv = auto: oneDNN where bioflex was built with it, else im2col (ops.h's
 * bf_cpu_conv_library holds the other two values) */
#define BF_CPU_CONV_AUTO 2

typedef enum { BF_DEVICE_AUTO = 0, BF_DEVICE_SEL_CPU = 1, BF_DEVICE_SEL_CUDA = 2 } bf_device_select;
typedef enum {
    BF_DATASET_FASHION_MNIST = 0,
    BF_DATASET_MNIST,
    BF_DATASET_CIFAR10,
    BF_DATASET_PROCEDURAL,
    BF_DATASET_IMAGENET100, /* 3 x image_size^2, 100 classes: Kaggle layout (train.X1..4, val.X, Labels.json), JPEG */
    BF_DATASET_IMAGENET,    /* 3 x image_size^2, 1000 classes: ILSVRC layout (train/<wnid>, val/<wnid>), JPEG */
    BF_DATASET_MULTI_MNIST, /* 1x28x28, 2 tasks (left, right digit) of 10 classes, generated from MNIST IDX files */
    BF_DATASET_MULTI_FASHION_MNIST, /* likewise from Fashion-MNIST */
    BF_DATASET_CELEBA,      /* 3x218x178 aligned faces, 40 binary attribute tasks */
    BF_DATASET_IMAGEFOLDER  /* JPEGs in train/CLASS/ and val/CLASS/ (the torchvision ImageFolder layout), decoded by the loader */
} bf_dataset_kind;
typedef enum {
    BF_ARCH_CNN = 0,
    BF_ARCH_VGG6,
    BF_ARCH_VGG11,
    BF_ARCH_VGG16,
    BF_ARCH_RESNET18,
    BF_ARCH_RESNET50,
    BF_ARCH_PF_VGG6,   /* PlasticFlex VGGs: learned 2x2/2 downsampling convs instead of max-pools */
    BF_ARCH_PF_VGG11,
    BF_ARCH_PF_VGG16,
    BF_ARCH_PF_SIMPLE_FLEX, /* PlasticFlex's SimpleFlexNet and SimpleConvNet (plasticflex.md section 4) */
    BF_ARCH_PF_SIMPLE_CONV,
    BF_ARCH_RESNET20,  /* the CIFAR ResNets of depth 6n + 2 (He et al. 2016, 4.2; FlexResNet's CIFAR path): */
    BF_ARCH_RESNET32,  /* a 3x3 stem of 16, three stages of n BasicBlocks (16, 32, 64 channels), */
    BF_ARCH_RESNET44,  /* global average pool, fc */
    BF_ARCH_RESNET56,
    BF_ARCH_RESNET110
} bf_arch;
/* n, the BasicBlocks per stage of a CIFAR ResNet (depth 6n + 2); 0 for any other arch */
static inline int bf_arch_cifar_blocks(bf_arch a) {
    return a == BF_ARCH_RESNET20 ? 3 : a == BF_ARCH_RESNET32 ? 5 : a == BF_ARCH_RESNET44 ? 7 : a == BF_ARCH_RESNET56 ? 9
         : a == BF_ARCH_RESNET110 ? 18 : 0;
}
/* ADAM: torch.optim.Adam (weight decay coupled: added to the gradient); ADAMW: decoupled decay */
typedef enum { BF_OPTIM_SGD = 0, BF_OPTIM_ADAMW, BF_OPTIM_ADAM } bf_optimizer_kind;
typedef enum { BF_SCHED_CONSTANT = 0, BF_SCHED_STEP, BF_SCHED_MULTISTEP, BF_SCHED_COSINE } bf_schedule_kind;
typedef enum { BF_SCHED_UNIT_EPOCH = 0, BF_SCHED_UNIT_STEP } bf_schedule_unit;
/* --resume: the schedule goes on where the checkpoint left it, or starts again there as the
 * reference codes' resumes did (a new scheduler; specs/README 9) */
typedef enum { BF_RESUME_SCHEDULE_CONTINUE = 0, BF_RESUME_SCHEDULE_RESTART } bf_resume_schedule;

typedef struct bf_run_config {
    char dir[BF_PATH_MAX];     /* run directory: metrics.jsonl, checkpoints/ */
    long seed;                 /* makes CPU runs repeat exactly */
    bf_device_select device;   /* auto | cpu | cuda */
    int gpus;                  /* data-parallel GPUs in this process */
    int epochs;
    int log_interval;          /* steps between metrics.jsonl lines and progress updates */
    int eval_every;            /* epochs between full test-set evaluations (0 = only at the end) */
    int eval_train;            /* each evaluation also scores the training split (evaluation mode, no augmentation) */
    int val_batches;           /* > 0: periodic evaluations use this many random test batches (PlasticFlex's reference) */
    int checkpoint_every;      /* epochs between checkpoints (0 = only at the end) */
    int checkpoint_every_steps;/* steps between checkpoints inside an epoch (0 = none; only the newest is kept) */
    int keep_best;             /* also keep checkpoints/best: the evaluation with the highest top-1 so far */
    int keep_checkpoints;      /* epoch checkpoints kept: the newest N (0 = all) */
    int resume_schedule;       /* bf_resume_schedule: what --resume does to the learning-rate schedule */
    int resume_optimizer;      /* bf_resume_schedule too: continue, or restart the optimiser's state empty */
    int precision;             /* bf_precision: fp32 | tf32 */
    int threads;               /* CPU backend threads (0 = all cores) */
    int cpu_conv;              /* CPU convolutions: bf_cpu_conv_library (ops.h), or BF_CPU_CONV_AUTO */
    float collective_timeout;  /* seconds a data-parallel collective may wait for the other ranks */
    int bucket_mib;            /* --gpus: MiB of gradients per NCCL all-reduce bucket */
    int sync_bn;               /* data parallelism: batch-norm statistics over every rank's batch */
    char rendezvous[BF_PATH_MAX]; /* --gpus across nodes without MPI: file on a shared filesystem for NCCL's id */
    int deterministic;         /* CUDA: deterministic cuDNN algorithms chosen by heuristics (bf_cuda_set_deterministic) */
    int conv_api;              /* CUDA: 0 legacy, 1 graph (bf_cuda_set_conv_api) */
    int conv_workspace_reuse;  /* CUDA: convolutions may run in dead activation memory (bf_cuda_set_conv_workspace_reuse) */
    int conv_workspace_mib;    /* CUDA: the cuDNN workspace limit of the algorithm search (bf_cuda_set_conv_workspace_limit) */
    float conv_workspace_slack; /* CUDA: how much slower an algorithm that fits the held workspace may be (conv_pick.h) */
    int force_nccl;            /* gpus = 1 still trains through NCCL (to measure that path's overhead) */
} bf_run_config;

typedef struct bf_data_config {
    bf_dataset_kind dataset;
    char path[BF_PATH_MAX];    /* directory with the dataset files ("" = the dataset's default) */
    int batch_size;
    int micro_batches;         /* each training step's batch runs in this many slices (gradient accumulation) */
    int eval_batch_size;       /* 0 = the slice, batch_size / micro_batches */
    int train_limit;           /* use only the first N training samples (0 = all) */
    int test_limit;            /* use only the first N test samples (0 = all) */
    int loader_threads;
    int prefetch;              /* batches prepared ahead of the training step */
    int shuffle;               /* reshuffle the training set every epoch (from the seed) */
    int augment_flip;          /* random horizontal flip of training images */
    int augment_crop_pad;      /* random crop after zero padding by this many pixels (0 = off) */
    int normalize;             /* subtract the dataset mean and divide by its std per channel */
    float input_noise_std;     /* additive Gaussian noise after normalisation, drawn anew at every access */
    int noise_splits;          /* 0 train, 1 test, 2 both (the PlasticFlex reference adds it to both) */
    int subset;                /* 0 none, 1 balanced (subset_size per class), 2 random (subset_size in all) */
    int subset_size;
    long subset_seed;          /* the subset is drawn once from this seed, for both splits */
    long multi_seed;           /* multi_mnist, multi_fashion_mnist: the partner draws (not the run seed) */
    int gray_to_rgb;           /* repeat a one-channel image into 3 channels (PlasticFlex's MNIST) */
    int cifar10_std;           /* 0 the true std, 1 the PlasticFlex reference's (0.2023, 0.1994, 0.2010) */
    int norm_stats;            /* normalize with: 0 the dataset's statistics, 1 MNIST's (0.1307, 0.3081), 2 (0.5, 0.5) */
    int procedural_classes;
    int procedural_size;       /* image side in pixels */
    int procedural_channels;
    int procedural_train;      /* number of training samples */
    int procedural_test;       /* number of test samples */
    /* JPEG datasets (imagefolder, imagenet100, imagenet), see image.h */
    char class_list[BF_PATH_MAX]; /* file of class folder names, one a line: selects and orders classes ("" = all) */
    char val_labels[BF_PATH_MAX]; /* imagenet: LOC_val_solution.csv for ILSVRC's flat val/ ("" = class folders) */
    char val_dir[BF_PATH_MAX];    /* JPEG folder datasets: the test split's class folders instead of path/val ("" = there) */
    int image_size;            /* output side in pixels */
    int train_transform;       /* bf_image_transform: squash | random_resized_crop */
    float crop_scale_min, crop_scale_max; /* random_resized_crop: area fraction range */
    float crop_ratio_min, crop_ratio_max; /* random_resized_crop: aspect ratio range */
    int val_resize;            /* 0: squash validation images; > 0: shorter side to this, then centre crop */
} bf_data_config;

/* Spiking networks (plasticflex.md sections 3, 9): neuron = none trains the ANN (ReLU). Otherwise
 * every ReLU of cnn/vgg becomes a neuron layer, the input is encoded over time_steps steps, the
 * stateless layers fold time into the batch, and the logits are the mean over time. */
typedef struct bf_spiking_config {
    int neuron;                /* -1 = none (ReLU), else bf_neuron_kind: lif | if | clamp01 | step */
    int time_steps;
    int encoding;              /* 0 direct (the same image every step), 1 rate (Bernoulli of the clamped pixel) */
    int readout;               /* 0 mean_output: the mean over T of the logits; 1 spike_count: of the spikes
                                  of a neuron layer after the last layer (each class's firing rate) */
    float decay, threshold;
    int reset;                 /* bf_reset_mode */
    int detach_reset;
    int use_stbp;              /* backprop through the membrane over time */
    int surrogate;             /* bf_surrogate */
    float alpha, width, height;
    int raster_neurons;        /* > 0: at every log interval, spikes.jsonl gets this many neurons' spikes per layer */
    int pack_spikes;           /* 1: spikes kept for the backward as bits (memory_plan.c) */
    int recompute_charge;      /* 1: LIF/IF after a batch-norm keep no charge (memory_plan.c) */
    int fuse_bn_backward;      /* 1: such a LIF/IF layer's backward and its batch-norm's run as one op
                                  (neuron_batchnorm_backward; memory_plan.c) */
    int share_direct_input;    /* 1: direct coding repeats the first neuron layer's input over the steps,
                                  not the image: the layers before it run once per image (model_zoo.c) */
} bf_spiking_config;

typedef struct bf_model_config {
    bf_arch arch;
    int num_classes;           /* 0 = the dataset's */
    float dropout;             /* classifier dropout probability */
    int channels[BF_LIST_MAX]; /* arch = cnn: channels of each conv-BN-ReLU-maxpool stage */
    int num_channels;
    int hidden;                /* arch = cnn: width of the hidden classifier layer (0 = none) */
    int batchnorm;             /* VGG/CNN: BatchNorm after every conv */
    float bn_momentum;
    float bn_eps;
    float bn_var_floor;        /* batch-norm running variances never fall below this (0 = no floor): MaxPrefResNet's
                                  hardened batch-norm */
    int conv_init_fan_in;      /* cnn, vgg: Kaiming-normal convs with fan_in (FlexNet) instead of fan_out (torchvision) */
    int linear_init_pytorch;   /* vgg: classifier Linear layers U(+-1/sqrt(fan_in)) with such biases (PyTorch's
                                  default, FlexNet's reference) instead of N(0, 0.01) and 0 (torchvision) */
    int freeze_fc1;            /* plasticflex_vgg*: fc1 kept at its random init (the reference code's untrained fc1) */
    char init_weights[BF_PATH_MAX]; /* start from these weights: a safetensors file (bioflex's or PyTorch's) or a
                                       checkpoint/run directory ("" = random initialisation) */
    char init_exclude[BF_PATH_MAX]; /* comma-separated tensor-name prefixes kept at their random init (a new head) */
    /* flexible neurons (FlexNet): cnn and vgg convs become flex layers */
    int fuse_bn_relu;          /* a batch-norm runs the in-place ReLU after it (memory_plan.c) */
    int fuse_add_relu;         /* a residual add runs the in-place ReLU after it (memory_plan.c) */
    int fold_conv_bias;        /* in training a conv read by a batch-norm alone adds no bias (memory_plan.c) */
    int fuse_flex_scatter;     /* flex max joint, EXPAND: route and scatter in one pass (layer_flex.c) */
    int fuse_flex_bn;          /* ... and the batch-norm after it applies its dx inside that pass (memory_plan.c) */
    int fuse_flex_bn_stats;    /* flex max joint: its forward sums the next batch-norm's statistics (memory_plan.c) */
    int flex_recompute_conv;   /* flex mask joint: the backward computes C again instead of keeping it (layer_flex.c) */
    int flex_kernels;          /* [run] flex_kernels (kept here: the plan depends on it): CUDA 0 fused, 1 slide
                                * (bf_cuda_set_flex_kernels) */
    int input_gradient;        /* not a key: the model's backward also gives the image's gradient
                                  (bf_model.input_gradient; bioflex-eval --attack sets it) */
    int eval_backward;         /* not a key: training steps in evaluation mode (bf_model.eval_backward;
                                  the trainer sets it for [optim] train_only_mode = eval) */
    const char *trained_only;  /* not a key: [optim] train_only as the trainer passes it (NULL or "": every
                                  parameter trains), so the backward stops below the trained layers */
    int flex;                  /* every conv becomes a flex layer */
    int fully_flex;            /* the 2x2 max-pools become flex layers too */
    int flex_layers[BF_LIST_MAX]; /* with flex: only these conv sites (0 = the first conv) become flex; empty = all */
    int num_flex_layers;
    int flex_joint;            /* bf_flex_joint: channelwise_max | mask */
    char static_routing[BF_PATH_MAX]; /* flex channel-wise max: a routing JSON (bioflex-eval --routing) fixing each
                                         site to its preferred branch, FlexNet's MaxPrefResNet ("" = learned) */
    float static_routing_threshold; /* static_routing: a site whose conv fraction exceeds this is a conv, else a pool */
    int flex_channels;         /* bf_flex_channel_rule: expand | bilinear */
    int flex_tie;              /* bf_flex_tie_rule: split | pool */
    int flex_mask;             /* bf_flex_mask */
    float flex_mask_factor;    /* sigmoid_mul multiplier */
    int flex_logits_bn;        /* batch-norm on the mask logits */
    int flex_logits;           /* bf_flex_logits: 0 threshold, 1 spatial_attention */
    int flex_attention_blocks; /* spatial_attention: its c_in -> c_in blocks */
    int threshold_mode;        /* bf_threshold_mode: learned | frozen_random */
    /* the V1-constrained ResNet (resnet18/50; ../shared/specs/v1-constrained.md) */
    int divisive_norm;         /* 0 none, 1 tuned, 2 cirincione: divisive normalisation after each layer1 block */
    int oci_distance;          /* divisive_norm = tuned: bf_oci_distance, 0 opponent (the reference's), 1 similar */
    int cortical_magnification;/* the stem's max-pool becomes the polar transform */
    int polar_padding;         /* 0 angle (the repo's), 1 both (Brain-Score's LPP_v49), 2 circular (wrapped angles) */
    int polar_antialias;       /* the polar transform's resize antialiased (torchvision >= 0.17) */
    int center_surround;       /* resnet50: DoG layers after layer1's 3x3 convs */
    int dog_amp_paper;         /* dog_amplitude: 0 code (s/pi), 1 paper (1/(pi s)) */
    int local_rf;              /* resnet50: layer1 block 2's 3x3 conv becomes a locally connected layer */
    float local_rf_dropout;    /* resnet50_local_rf (local_rf alone): Dropout2d p before that layer */
    bf_spiking_config spiking; /* the [spiking] section */
} bf_model_config;

typedef struct bf_optim_config {
    bf_optimizer_kind optimizer;
    float lr;
    float momentum;
    int nesterov;
    float weight_decay;
    float beta1, beta2, eps;
    float grad_clip_norm;      /* global-norm clipping (0 = off) */
    float label_smoothing;
    char train_only[BF_PATH_MAX]; /* comma-separated parameter-name prefixes: only these train ("" = all) */
    int train_only_mode;       /* with train_only: 0 eval (the steps run as evaluation: a true probe), 1 train */
} bf_optim_config;

typedef struct bf_schedule_config {
    bf_schedule_kind type;
    bf_schedule_unit unit;     /* epoch: lr changes at epoch boundaries; step: every step */
    int step_size;             /* step: decay every step_size units */
    float gamma;               /* step, multistep: decay factor */
    int milestones[BF_LIST_MAX];
    int num_milestones;
    float eta_min;             /* cosine: final learning rate */
    int warmup;                /* linear warm-up length in units (0 = none) */
    float warmup_start_factor; /* lr starts at lr * this factor */
} bf_schedule_config;

/* [analysis]: what bioflex-eval's analyses compute of a checkpoint (analysis.h). */
typedef struct bf_analysis_config {
    int bn_recalibrate_batches; /* bioflex-eval: training batches the running statistics are recomputed from (0: kept) */
    int surface_steps;         /* grid points along each direction */
    float surface_distance;    /* filter_normalized: the coefficients span +-this; reference: norm(theta) x this / steps per step */
    int surface_batches;       /* test batches scored per point (0 = the whole test split) */
    int surface_directions;    /* 0 filter_normalized (Li et al.), 1 reference (PlasticFlex's loss_landscapes) */
    long surface_seed;
    int surface_mode;          /* bf_analysis_mode: eval | train */
    int surface_split;         /* 0 test, 1 train */
    int gradient_batches;      /* bioflex-eval --gradient-flow: training batches averaged */
    int gradient_mode;         /* bf_analysis_mode: train | eval */
    int activation_images;     /* bioflex-eval --activations: the test split's first images */
    int routing_batches;       /* bioflex-eval --routing: test batches (0 = the whole split) */
    char routing_maps[BF_PATH_MAX]; /* ... and the per-element maps' safetensors file ("" = none) */
    char activation_layers[BF_PATH_MAX]; /* ... of the layers whose names start with these prefixes ("" = all) */
    /* bioflex-eval --hessian (bf_hessian_options) */
    int hessian_batches, hessian_top_n, hessian_max_iterations, hessian_density_iterations;
    float hessian_tolerance, hessian_step;
    long hessian_seed;
    /* bioflex-eval --input-hessian (bf_input_hessian_options) */
    int input_hessian_images, input_hessian_top_n, input_hessian_power_steps, input_hessian_lanczos_steps;
    int input_hessian_surface_points;
    float input_hessian_surface_range;
    int input_hessian_positions[BF_LIST_MAX]; /* the test split's images to take (empty: the first images) */
    int num_input_hessian_positions;
    int hessian_mode;          /* bf_analysis_mode: eval | train */
    /* bioflex-eval --attack (bf_attack_options) */
    int attack_method;         /* bf_attack_method: fgsm | pgd | gaussian_noise | spgd | jitter | spsa | jsma | onepixel | apgd */
    float attack_epsilon_max;  /* the largest epsilon, in pixel units (0 = the method's reference grid) */
    int attack_epsilons;       /* grid points from 0 to attack_epsilon_max */
    int attack_pgd_steps;
    float attack_pgd_step_fraction; /* PGD's step alpha = this x epsilon */
    int attack_random_start;   /* PGD starts at a uniform point of the epsilon ball */
    float attack_jitter_scale, attack_jitter_std;
    float attack_spsa_delta, attack_spsa_lr;
    int attack_spsa_iterations, attack_spsa_samples;
    float attack_jsma_gamma;
    int attack_onepixel_steps, attack_onepixel_popsize;
    int attack_apgd_steps, attack_apgd_restarts;
    float attack_apgd_rho;
    int attack_eot_samples;    /* gradients summed over this many forward passes (stochastic models) */
    int attack_samples;        /* the test split's first N images (0 = all) */
    int attack_domain;         /* bf_attack_domain: pixels | reference */
    long attack_seed;
} bf_analysis_config;

/* [butd]: bottom-up/top-down networks with Counter-Hebb learning (include/bioflex/butd.h). */
typedef struct bf_butd_config {
    int network;               /* 0 none (an ordinary [model] run), 1 fc, 2 simple, 3 resnet18 */
    int learning;              /* bf_butd_learning: backprop | counter_hebb */
    int shared_weights;        /* weights = shared (1) | separate (0) */
    int symmetric_init;        /* separate: B starts as W^T */
    float symmetric_init_noise; /* symmetric_init: B = W^T x (1 + this x N(0, 1)), elementwise (NoiseInit) */
    int feedback_alignment;    /* separate, counter_hebb: B is never updated (the reference's FA) */
    int td_init_legacy;        /* separate, not symmetric_init: B drawn as the older reference code did */
    int downsample_always_shared; /* separate: residual 1x1 downsample convs still share W (reference) */
    int non_linearity_fn;      /* the reference's unread key: 0 relu, its one value */
    int lateral_fn;            /* the reference's unread key: 0 galu, its one value */
    int guided;                /* instruction pass + GaLU (needs a multi-task dataset) */
    int hidden;                /* fc and simple: last_hidden_size */
    int depth;                 /* fc: hidden layers */
    int channels[BF_LIST_MAX]; /* simple: conv_channels */
    int num_channels;
    int task_embedding;        /* guided: task_embedding_size (0 = none) */
    float noise_std;           /* > 0: every update times one N(1, noise_std) scalar per layer and step */
    int batch_norm;            /* resnet18: BN after every conv, with its own TD copy */
    int ch_bn;                 /* bf_butd_ch_bn: batch_norm with counter_hebb: exact | independent (TD copy) */
    int loss;                  /* bf_butd_loss: cross_entropy | bce (one logit per sample, binary tasks) */
    int train_task_head;       /* guided: train the task head (straight-through gates) */
    int multi_decoders;        /* guided: num_classes head outputs per task */
} bf_butd_config;

/* [fragments]: Net Fragments (include/bioflex/fragments.h, ../shared/specs/netfragments.md): S1's fixed
 * orientation filters and the S2 lateral layer learned by its Hebbian rule, on straight-line images. */
typedef struct bf_fragments_config {
    int network;               /* 0 none (an ordinary run), 1 lateral */
    int train_lines;           /* lines per training epoch (300) */
    int valid_lines;           /* validation lines drawn per epoch (4: they advance the line sequence) */
    long line_seed;            /* the Python random seed the lines are drawn from (1) */
    int time_steps;            /* T (6) */
    int bernoulli;             /* act_threshold = bernoulli: S2 cells fire at random */
    float act_threshold;       /* theta (0.5) */
    float power_start, power_step; /* gamma_t = power_start + t * power_step (1.2 + 0.2 t) */
    float support_factor;      /* lambda = support_factor * 11 (1.3) */
    float hebbian_lr;          /* eta (0.2) */
    int neg_corr;              /* the rule's two negative terms (true) */
    int s1_kernels;            /* 0 small (section 2.1), 1 larger (2.2) */
    int s1_activation;         /* bf_frag_s1_activation: threshold | bernoulli | relu */
    int eval_lines;            /* evaluation lines (60, as the stored results) */
    float eval_noise_max, eval_noise_step; /* the feature-noise sweep, 0 .. max */
    int eval_interrupt_max;    /* the line-interrupt sweep, 1 .. max pixels */
    int metrics;               /* 0 scored (means over the lines with something to score), 1 reference */
    int hebbian_input;         /* 0 clipped (the reference's min(x, 1)), 1 binarised (the forward pass's > 0.5) */
    int noise_masks;           /* the evaluation's flipped S1 units: 0 bioflex's counter RNG, 1 torch.randperm's */
} bf_fragments_config;

#define BF_CONFIG_KEY_SLOTS 256 /* at least the number of keys */

typedef struct bf_config {
    char source[BF_PATH_MAX];  /* the INI file it came from */
    /* Where each key got its value, by the key table's order (config.c): 0 its default, > 0 that
     * line of source, -1 a --set override. Errors about relations between keys name these. */
    int key_line[BF_CONFIG_KEY_SLOTS];
    bf_run_config run;
    bf_data_config data;
    bf_model_config model;
    bf_optim_config optim;
    bf_schedule_config schedule;
    bf_butd_config butd;
    bf_analysis_config analysis;
    bf_fragments_config fragments;
} bf_config;

/* Fills every field with its default. */
void bf_config_defaults(bf_config *cfg);
/* Parses and validates an INI file on top of the defaults. */
bf_status bf_config_load(const char *path, bf_config *cfg);
/* Appends to the last error (bf_last_error) where each "[section] key" it names got its value:
 * "(set where: [optim] nesterov: cfg.ini:12; [optim] optimizer: --set)", or "default"; so that an
 * error about a relation between keys points at the lines to change. */
void bf_config_locate_keys(const bf_config *cfg);
/* Applies one "section.key=value" override, validated like a file line (reported as "--set"). */
bf_status bf_config_set(bf_config *cfg, const char *assignment);
/* The keys that decide what a network computes from its weights ([model] arch, flex, ...,
 * [spiking] neuron, time_steps, ..., [butd] network, ..., the input's normalisation), as
 * "model.arch=vgg16 model.channels=32,64 ... spiking.neuron=lif ...": a checkpoint records it, so
 * that a resume as another network is refused and an evaluation as another one is noted. */
void bf_config_describe_network(const bf_config *cfg, char *out, size_t cap);
/* Likewise the keys that decide how it learns but not what it computes (dropout, the tie rule,
 * the surrogate, the BU-TD learning rule, ...): a resume that changes them is noted. */
void bf_config_describe_learning(const bf_config *cfg, char *out, size_t cap);
/* The keys whose values differ between two such phrases, as "key=value ..." of saved into was and
 * of now into is (each cap bytes); keys only one of them records are not compared. Returns how
 * many differ. */
int bf_config_phrase_differences(const char *saved, const char *now, char *was, char *is, size_t cap);
/* Checks relations between keys (e.g. milestones increasing); called after all overrides. */
bf_status bf_config_validate(const bf_config *cfg);
/* Writes the resolved configuration as INI (every key, so the file can be re-loaded). */
void bf_config_print(const bf_config *cfg, FILE *out);
/* The keys whose values are not the defaults, as an INI file: what bioflex-train prints at start
 * (the run directory's config.ini, written by bf_config_print, holds every key). */
void bf_config_print_changed(const bf_config *cfg, FILE *out);
/* Writes the config reference: every section and key, type, default, allowed values, meaning (Markdown). */
void bf_config_print_reference(FILE *out);

/* Name of an enum value as written in INI files ("fashion_mnist", "vgg16", ...). */
const char *bf_dataset_name(bf_dataset_kind k);
const char *bf_arch_name(bf_arch a);

/* The images the network takes at once in training: batch_size / micro_batches (a divisor, as
 * validated); and in evaluation: eval_batch_size, by default that slice. */
int bf_data_slice(const bf_data_config *d);
int bf_data_eval_batch(const bf_data_config *d);

#ifdef __cplusplus
}
#endif
#endif
