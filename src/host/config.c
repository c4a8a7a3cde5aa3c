/* config.c - the INI configuration: key table, parsing, validation, printing (see config.h).
 *
 * Everything about a key lives in one row of `key_table` below: its section and name, its type,
 * where it is stored in bf_config, its allowed values, its default (as the text one would write
 * in an INI file) and a one-line description. The parser, the defaults, the validator, the INI
 * printer and the Markdown reference are all driven by that table, so they cannot disagree.
 *
 * One value goes through one function, set_value(), whether it comes from a default, a file line
 * or a `--set` override. set_value() reports problems as "[section] key: problem (allowed: ...)";
 * the caller prepends where the text came from ("file:line" or "--set section.key=value").
 *
 * Line numbers: Debian's libinih is built without INI_HANDLER_LINENO, so the handler is not told
 * the line. We therefore give inih our own line reader (ini_parse_stream), which counts lines as
 * inih asks for them; the handler runs while inih processes the line just read, so the count is
 * the handler's line. The reader also sees section headers, which lets it reject an unknown
 * section at its own line, even when the section holds no key. */
#include "bioflex/config.h"
#include "config_keys.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <ini.h>

#include "bioflex/ops.h"

/* ------------------------------------------------------------------------------------------ */
/* The key table                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef enum key_type {
    KEY_INT,      /* int field */
    KEY_LONG,     /* long field */
    KEY_FLOAT,    /* float field */
    KEY_BOOL,     /* int field holding 0 or 1 */
    KEY_ENUM,     /* int-sized enum field; the INI text is one of the key's names */
    KEY_STRING,   /* char[BF_PATH_MAX] field */
    KEY_INT_LIST  /* int[BF_LIST_MAX] field plus an int count field */
} key_type;

/* Enum values are stored through an int pointer, which is only right if every enum is int-sized. */
_Static_assert(sizeof(bf_device_select) == sizeof(int), "enum fields are accessed as int");
_Static_assert(sizeof(bf_dataset_kind) == sizeof(int), "enum fields are accessed as int");
_Static_assert(sizeof(bf_arch) == sizeof(int), "enum fields are accessed as int");
_Static_assert(sizeof(bf_optimizer_kind) == sizeof(int), "enum fields are accessed as int");
_Static_assert(sizeof(bf_schedule_kind) == sizeof(int), "enum fields are accessed as int");
_Static_assert(sizeof(bf_schedule_unit) == sizeof(int), "enum fields are accessed as int");

typedef struct enum_name {
    const char *name;
    int value;
} enum_name; /* lists end with {NULL, 0} */

/* Range flags of numeric keys (and of list entries). A range is min..max, both inclusive,
 * unless a flag makes an end exclusive; max = INFINITY means "no upper limit". */
enum { MIN_OPEN = 1u, MAX_OPEN = 2u, INCREASING = 4u /* lists: entries strictly increasing */ };

typedef struct key_spec {
    const char *section;
    const char *key;
    key_type type;
    size_t offset;        /* of the value in bf_config */
    size_t count_offset;  /* KEY_INT_LIST: of the entry count in bf_config */
    double min, max;      /* numbers and list entries: allowed range; KEY_STRING: length range */
    unsigned flags;       /* MIN_OPEN, MAX_OPEN, INCREASING */
    int min_count;        /* KEY_INT_LIST: fewest entries */
    int max_count;        /* KEY_INT_LIST: most entries (0: BF_LIST_MAX) */
    const enum_name *names; /* KEY_ENUM: the allowed names */
    const char *def;      /* default, as INI text */
    const char *doc;      /* one line for the reference */
} key_spec;

static const enum_name device_names[] = {
    {"auto", BF_DEVICE_AUTO}, {"cpu", BF_DEVICE_SEL_CPU}, {"cuda", BF_DEVICE_SEL_CUDA}, {NULL, 0}};
static const enum_name precision_names[] = {
    {"fp32", BF_PRECISION_FP32}, {"tf32", BF_PRECISION_TF32}, {"tf32_conv", BF_PRECISION_TF32_CONV}, {NULL, 0}};
static const enum_name conv_api_names[] = {{"legacy", 0}, {"graph", 1}, {NULL, 0}};
static const enum_name flex_kernels_names[] = {{"fused", 0}, {"slide", 1}, {NULL, 0}};
static const enum_name cpu_conv_names[] = {
    {"im2col", BF_CPU_CONV_IM2COL}, {"onednn", BF_CPU_CONV_ONEDNN}, {"auto", BF_CPU_CONV_AUTO}, {NULL, 0}};
static const enum_name dataset_names[] = {
    {"fashion_mnist", BF_DATASET_FASHION_MNIST}, {"mnist", BF_DATASET_MNIST},
    {"cifar10", BF_DATASET_CIFAR10}, {"procedural", BF_DATASET_PROCEDURAL},
    {"imagenet100", BF_DATASET_IMAGENET100}, {"imagenet", BF_DATASET_IMAGENET},
    {"multi_mnist", BF_DATASET_MULTI_MNIST}, {"multi_fashion_mnist", BF_DATASET_MULTI_FASHION_MNIST},
    {"celeba", BF_DATASET_CELEBA}, {"imagefolder", BF_DATASET_IMAGEFOLDER}, {NULL, 0}};
static const enum_name train_transform_names[] = {{"squash", 0}, {"random_resized_crop", 1}, {NULL, 0}};
/* procedural_channels is a number, but only 1 (gray) and 3 (RGB) make sense: an enum says so. */
static const enum_name channel_count_names[] = {{"1", 1}, {"3", 3}, {NULL, 0}};
static const enum_name arch_names[] = {
    {"cnn", BF_ARCH_CNN}, {"vgg6", BF_ARCH_VGG6}, {"vgg11", BF_ARCH_VGG11},
    {"vgg16", BF_ARCH_VGG16}, {"resnet18", BF_ARCH_RESNET18}, {"resnet50", BF_ARCH_RESNET50},
    {"plasticflex_vgg6", BF_ARCH_PF_VGG6}, {"plasticflex_vgg11", BF_ARCH_PF_VGG11},
    {"plasticflex_vgg16", BF_ARCH_PF_VGG16}, {"plasticflex_simple_flex", BF_ARCH_PF_SIMPLE_FLEX},
    {"plasticflex_simple_conv", BF_ARCH_PF_SIMPLE_CONV}, {"resnet20", BF_ARCH_RESNET20}, {"resnet32", BF_ARCH_RESNET32},
    {"resnet44", BF_ARCH_RESNET44}, {"resnet56", BF_ARCH_RESNET56}, {"resnet110", BF_ARCH_RESNET110}, {NULL, 0}};
static const enum_name flex_joint_names[] = {{"channelwise_max", 0}, {"mask", 1}, {NULL, 0}};
static const enum_name flex_channel_names[] = {{"expand", 0}, {"bilinear", 1}, {NULL, 0}};
static const enum_name flex_tie_names[] = {{"split", 0}, {"pool", 1}, {NULL, 0}};
static const enum_name flex_mask_names[] = {
    {"sigmoid_hard", 0}, {"sigmoid_mul", 1}, {"ste_fpbp", 2}, {"ste_fpbs", 3}, {"ste_fsbp", 4}, {"ste_fsbs", 5},
    {"stochastic_fpbp", 6}, {"stochastic_fpbs", 7}, {"stochastic_fsbp", 8}, {"stochastic_fsbs", 9},
    {"stochastic_fcbp", 10}, {"stochastic_fcbs", 11}, {"stochastic_fsbs_reference", 12},
    {"stochastic_fcbs_reference", 13}, {NULL, 0}};
static const enum_name conv_init_names[] = {{"fan_out", 0}, {"fan_in", 1}, {NULL, 0}};
static const enum_name linear_init_names[] = {{"normal", 0}, {"pytorch_default", 1}, {NULL, 0}};
static const enum_name divisive_norm_names[] = {{"none", 0}, {"tuned", 1}, {"cirincione", 2}, {NULL, 0}};
static const enum_name oci_distance_names[] = {{"opponent", 0}, {"similar", 1}, {NULL, 0}};
static const enum_name polar_padding_names[] = {{"angle", 0}, {"both", 1}, {"circular", 2}, {NULL, 0}};
static const enum_name dog_amplitude_names[] = {{"code", 0}, {"paper", 1}, {NULL, 0}};
static const enum_name train_only_mode_names[] = {{"eval", 0}, {"train", 1}, {NULL, 0}};
static const enum_name fragments_network_names[] = {{"none", 0}, {"lateral", 1}, {NULL, 0}};
static const enum_name s1_kernel_names[] = {{"small", 0}, {"larger", 1}, {NULL, 0}};
static const enum_name s1_activation_names[] = {{"threshold", 0}, {"bernoulli", 1}, {"relu", 2}, {NULL, 0}};
static const enum_name fragments_metrics_names[] = {{"scored", 0}, {"reference", 1}, {NULL, 0}};
static const enum_name hebbian_input_names[] = {{"clipped", 0}, {"binarised", 1}, {NULL, 0}};
static const enum_name noise_masks_names[] = {{"bioflex", 0}, {"torch", 1}, {NULL, 0}};
static const enum_name flex_logits_names[] = {{"threshold", 0}, {"spatial_attention", 1}, {NULL, 0}}; /* bf_flex_logits */
static const enum_name threshold_mode_names[] = {
    {"learned", 0}, {"frozen_random", 1}, {"resample_each_forward", 2}, {NULL, 0}};
static const enum_name neuron_names[] = {
    {"none", -1}, {"lif", BF_NEURON_LIF}, {"if", BF_NEURON_IF}, {"clamp01", BF_NEURON_CLAMP01}, {"step", BF_NEURON_STEP}, {NULL, 0}};
static const enum_name encoding_names[] = {{"direct", 0}, {"rate", 1}, {NULL, 0}};
static const enum_name readout_names[] = {{"mean_output", 0}, {"spike_count", 1}, {NULL, 0}};
static const enum_name reset_names[] = {{"hard", BF_RESET_HARD}, {"soft", BF_RESET_SOFT}, {"none", BF_RESET_NONE}, {NULL, 0}};
static const enum_name surrogate_names[] = {
    {"sigmoid", BF_SURROGATE_SIGMOID}, {"arctan", BF_SURROGATE_ARCTAN}, {"rectangular", BF_SURROGATE_RECTANGULAR},
    {"triangle", BF_SURROGATE_TRIANGLE}, {"tanh", BF_SURROGATE_TANH}, {NULL, 0}};
static const enum_name noise_split_names[] = {{"train", 0}, {"test", 1}, {"both", 2}, {NULL, 0}};
static const enum_name subset_names[] = {{"none", 0}, {"balanced", 1}, {"random", 2}, {NULL, 0}};
static const enum_name cifar10_std_names[] = {{"true", 0}, {"reference", 1}, {NULL, 0}};
static const enum_name norm_stats_names[] = {{"dataset", 0}, {"mnist", 1}, {"half", 2}, {NULL, 0}};
static const enum_name optimizer_names[] = {
    {"sgd", BF_OPTIM_SGD}, {"adam", BF_OPTIM_ADAM}, {"adamw", BF_OPTIM_ADAMW}, {NULL, 0}};
static const enum_name schedule_names[] = {
    {"constant", BF_SCHED_CONSTANT}, {"step", BF_SCHED_STEP},
    {"multistep", BF_SCHED_MULTISTEP}, {"cosine", BF_SCHED_COSINE}, {NULL, 0}};
static const enum_name butd_network_names[] = {{"none", 0}, {"fc", 1}, {"simple", 2}, {"resnet18", 3}, {NULL, 0}};
static const enum_name surface_direction_names[] = {{"filter_normalized", 0}, {"reference", 1}, {NULL, 0}};
static const enum_name attack_method_names[] = {{"fgsm", 0}, {"pgd", 1}, {"gaussian_noise", 2}, {"spgd", 3},
                                                {"jitter", 4}, {"spsa", 5}, {"jsma", 6}, {"onepixel", 7}, {"apgd", 8}, {NULL, 0}};
static const enum_name analysis_mode_names[] = {{"train", 0}, {"eval", 1}, {NULL, 0}};
static const enum_name surface_split_names[] = {{"test", 0}, {"train", 1}, {NULL, 0}};
static const enum_name attack_domain_names[] = {{"pixels", 0}, {"reference", 1}, {NULL, 0}};
static const enum_name butd_learning_names[] = {{"backprop", 0}, {"counter_hebb", 1}, {NULL, 0}};
/* the reference configs' two keys that its code never read ("not working yet"): their one value */
static const enum_name butd_non_linearity_names[] = {{"relu", 0}, {NULL, 0}};
static const enum_name butd_lateral_names[] = {{"galu", 0}, {NULL, 0}};
static const enum_name butd_ch_bn_names[] = {{"exact", 0}, {"independent", 1}, {NULL, 0}};
static const enum_name butd_weights_names[] = {{"separate", 0}, {"shared", 1}, {NULL, 0}};
static const enum_name butd_td_init_names[] = {{"current", 0}, {"legacy", 1}, {NULL, 0}};
static const enum_name butd_loss_names[] = {{"cross_entropy", 0}, {"bce", 1}, {NULL, 0}};
static const enum_name resume_schedule_names[] = {{"continue", 0}, {"restart", 1}, {NULL, 0}};
static const enum_name unit_names[] = {
    {"epoch", BF_SCHED_UNIT_EPOCH}, {"step", BF_SCHED_UNIT_STEP}, {NULL, 0}};

/* One macro per key type keeps each row of the table on one or two lines. */
#define OFF(field) offsetof(bf_config, field)
#define NO_MAX INFINITY
#define INT_KEY(sec_, key_, field_, lo_, hi_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_INT, .offset = OFF(field_), .min = lo_, .max = hi_, .def = def_, .doc = doc_}
#define LONG_KEY(sec_, key_, field_, lo_, hi_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_LONG, .offset = OFF(field_), .min = lo_, .max = hi_, .def = def_, .doc = doc_}
#define FLOAT_KEY(sec_, key_, field_, lo_, hi_, flags_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_FLOAT, .offset = OFF(field_), .min = lo_, .max = hi_, .flags = flags_, .def = def_, .doc = doc_}
#define BOOL_KEY(sec_, key_, field_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_BOOL, .offset = OFF(field_), .def = def_, .doc = doc_}
#define ENUM_KEY(sec_, key_, field_, names_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_ENUM, .offset = OFF(field_), .names = names_, .def = def_, .doc = doc_}
#define STRING_KEY(sec_, key_, field_, min_len_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_STRING, .offset = OFF(field_), .min = min_len_, .max = BF_PATH_MAX - 1, .def = def_, .doc = doc_}
#define LIST_KEY(sec_, key_, field_, count_, lo_, hi_, flags_, min_count_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_INT_LIST, .offset = OFF(field_), .count_offset = OFF(count_), \
     .min = lo_, .max = hi_, .flags = flags_, .min_count = min_count_, .def = def_, .doc = doc_}
/* a list of exactly n entries */
#define LIST_KEY_OF(sec_, key_, field_, count_, lo_, hi_, n_, def_, doc_) \
    {.section = sec_, .key = key_, .type = KEY_INT_LIST, .offset = OFF(field_), .count_offset = OFF(count_), \
     .min = lo_, .max = hi_, .min_count = n_, .max_count = n_, .def = def_, .doc = doc_}

static const key_spec key_table[] = {
    STRING_KEY("run", "dir", run.dir, 1, "runs/default", "run directory: metrics.jsonl, checkpoints/ and the resolved config"),
    LONG_KEY("run", "seed", run.seed, 0, NO_MAX, "1", "random seed; CPU runs with the same seed repeat exactly"),
    ENUM_KEY("run", "device", run.device, device_names, "auto", "where to train (auto = CUDA when a GPU is present, else the CPU)"),
    INT_KEY("run", "gpus", run.gpus, 1, 64, "1", "data-parallel GPUs in this process"),
    INT_KEY("run", "epochs", run.epochs, 1, 100000, "10", "passes over the training set"),
    INT_KEY("run", "log_interval", run.log_interval, 1, NO_MAX, "50", "steps between metrics.jsonl lines and progress updates"),
    INT_KEY("run", "eval_every", run.eval_every, 0, NO_MAX, "1", "epochs between test-set evaluations (0 = only at the end)"),
    BOOL_KEY("run", "eval_train", run.eval_train, "false", "each evaluation also scores the training split as it scores the test split (evaluation mode: running statistics, no dropout; the test split's transform: no augmentation; val_batches batches of it, or all of it at the end), logged with split train (train_batches): the training accuracy of the model, where the logged training accuracy is each batch's in training mode during the epoch (the BU-TD reference's EvalIntermediate scored both splits); a pass over the training set per evaluation; bioflex-eval also prints the training split's score"),
    INT_KEY("run", "val_batches", run.val_batches, 0, NO_MAX, "0", "periodic evaluations score only this many test batches, drawn at random every epoch, as the PlasticFlex reference code does (0 = the whole test set); the final evaluation always scores the whole test set, in file order as bioflex-eval does (a rate-coded or stochastic model then gets the same draws)"),
    INT_KEY("run", "checkpoint_every", run.checkpoint_every, 0, NO_MAX, "1", "epochs between checkpoints (0 = only at the end)"),
    INT_KEY("run", "keep_checkpoints", run.keep_checkpoints, 0, NO_MAX, "0", "epoch checkpoints kept on disk: after writing one, only the newest N up to it stay (0 = keep all; a VGG-16 checkpoint with SGD momentum is about 1 GB)"),
    ENUM_KEY("run", "resume_schedule", run.resume_schedule, resume_schedule_names, "continue", "--resume: continue: the learning-rate schedule goes on where the checkpoint left it (an exact resume); restart: it starts again at the resume position, from its first rate over [run] epochs (warm-up, milestones and step_size counted from there), as the FlexNet and PlasticFlex reference codes' resumes did (their schedulers were not saved): reproduces a reference run trained over several jobs, resumed at the same epochs; later checkpoints keep the new start"),
    ENUM_KEY("run", "resume_optimizer", run.resume_optimizer, resume_schedule_names, "continue", "--resume: continue: the optimiser's state (momentum buffers, Adam's moments and step count) goes on from the checkpoint's (an exact resume); restart: it starts empty at the resume position, as the V1-constrained ResNet reference's resume did (it restored the weights alone; with resume_schedule = restart its runs trained over several jobs are reproduced)"),
    BOOL_KEY("run", "keep_best", run.keep_best, "false", "also keep checkpoints/best, a checkpoint of the weights whenever an evaluation (eval_every, val_batches; BU-TD: eval_every's, guided: the mean over tasks) reaches a higher top-1 than any before in the run; its top-1 is in its metadata, and a resumed run only replaces it with a better one"),
    INT_KEY("run", "checkpoint_every_steps", run.checkpoint_every_steps, 0, NO_MAX, "0", "optimiser steps between checkpoints inside an epoch, for long epochs (0 = none); only the newest of these is kept, and a run stopped by SIGINT, SIGTERM, SIGUSR1 or SIGHUP writes one too"),
    ENUM_KEY("run", "precision", run.precision, precision_names, "fp32", "fp32 everywhere; tf32: cuDNN's convolutions and cuBLAS's matrix products on TF32 tensor cores; tf32_conv: the convolutions alone, as PyTorch's defaults run them (cudnn.allow_tf32 on, matmul.allow_tf32 off: the reference codes' setting); the CPU ignores it"),
    INT_KEY("run", "threads", run.threads, 0, 1024, "0", "CPU backend threads (0 = all cores)"),
    ENUM_KEY("run", "cpu_conv", run.cpu_conv, cpu_conv_names, "auto", "CPU: what runs the convolutions: onednn (oneDNN's direct convolution kernels for every shape they take: forward and backward data on all threads, the weight gradient in slices of 16 output channels, one thread each; 1.3-1.6x faster than im2col over a CIFAR VGG-11's layers on an AVX-512 machine, bench_conv_cpu_lab), im2col (im2col + OpenBLAS's sgemm alone: the reference), or auto (onednn when bioflex was built with oneDNN, libdnnl-dev; else im2col); either gives the same bits with any [run] threads, and they differ from each other by rounding"),
    BOOL_KEY("run", "sync_bn", run.sync_bn, "false", "data parallelism: batch-norm normalises with the statistics of the global batch (summed over every rank) instead of each rank's own (batch-norm layers, a flex layer's logits batch-norm, BU-TD batch-norm and its TD copies); CPU ranks over MPI (mpirun), GPUs over NCCL (--gpus) or MPI"),
    STRING_KEY("run", "rendezvous", run.rendezvous, 0, "", "--gpus across nodes without MPI: a file on a filesystem every node shares, through which rank 0 passes NCCL's unique id (use a fresh path per job, e.g. with $SLURM_JOB_ID); ranks come from SLURM_PROCID/SLURM_NTASKS; empty = MPI"),
    ENUM_KEY("run", "conv_api", run.conv_api, conv_api_names, "legacy", "CUDA: cuDNN's legacy convolution API alone, or also a plan of its graph API per convolution (the fastest of the engines its heuristics offer, as PyTorch 2 chooses), run where the tensors' alignment allows"),
    ENUM_KEY("run", "flex_kernels", model.flex_kernels, flex_kernels_names, "fused", "CUDA: the kernels of a flex layer's fused pool-and-max (flex_pool_max_forward, flex_pool_max_backward_scatter and, under [model] fuse_flex_scatter = false, flex_pool_scatter_add): fused (a thread per pooled or output element), or slide (sliding windows: each input row loaded once, window maxima slid down the rows in registers, and the backward's route with the scatter on the same window, its dC beside dy) where they apply, EXPAND channels and the 3x3 stride-1 pad-1 window (every FlexNet flex layer); the same results bit for bit"),
    BOOL_KEY("run", "conv_workspace_reuse", run.conv_workspace_reuse, "true", "CUDA: a convolution whose algorithm's workspace fits in the activation memory dead during its layer's pass (the memory plan knows which) runs there, so the separate cuDNN workspace keeps only what the other calls need; false: every call uses the separate workspace"),
    FLOAT_KEY("run", "conv_workspace_slack", run.conv_workspace_slack, 0, 1, 0, "0.05", "CUDA: when the fastest cuDNN algorithm of a convolution would grow the separate workspace, the search keeps the fastest one at most this fraction slower that needs no workspace beyond what is already held (the activation memory dead during the layer's pass, or the separate workspace as earlier choices sized it); 0 always keeps the fastest"),
    INT_KEY("run", "conv_workspace_mib", run.conv_workspace_mib, 0, 1048576, "8192", "CUDA: the most workspace (MiB) a cuDNN convolution algorithm may need to be chosen (never more than about half the free GPU memory at the search); the workspace kept is what the chosen algorithms need (3.3 GiB for VGG-16 at batch 128 in TF32, where a 1 GiB limit ran 1.6x slower); a smaller limit trades speed for memory"),
    BOOL_KEY("run", "deterministic", run.deterministic, "false", "CUDA: convolutions use deterministic cuDNN algorithms in cuDNN's heuristic order instead of the fastest measured, so two runs with the same seed give the same weights bit for bit (slower; the CPU is always deterministic)"),
    BOOL_KEY("run", "force_nccl", run.force_nccl, "false", "gpus = 1 still trains through the NCCL data-parallel path (a one-rank communicator, gradient buckets, stream hand-offs) instead of the plain one: to measure that path's overhead (bench/dp_overhead.sh); needs a build with NCCL (under mpirun/srun, CUDA ranks take the NCCL path anyway)"),
    FLOAT_KEY("run", "collective_timeout", run.collective_timeout, 0, 1e7, MIN_OPEN, "300", "seconds (at most 1e7, about 116 days) a data-parallel all-reduce or broadcast (mpirun, --gpus) may wait for the other ranks before the run stops with an error naming the collective that did not complete (another rank died or hangs)"),
    INT_KEY("run", "bucket_mib", run.bucket_mib, 1, 4096, "25", "--gpus: gradients are all-reduced by NCCL in buckets of this many MiB, each launched as soon as the backward pass has finished its layers, so the transfers overlap the rest of the backward (PyTorch DDP's bucket_cap_mb); larger buckets mean fewer, later all-reduces"),

    ENUM_KEY("data", "dataset", data.dataset, dataset_names, "fashion_mnist", "which dataset to train on (imagefolder, imagenet100, imagenet: JPEG files decoded by the loader)"),
    STRING_KEY("data", "path", data.path, 0, "", "directory with the dataset files (empty = the dataset's default; multi_mnist and multi_fashion_mnist: the directory of the MNIST / Fashion-MNIST IDX files they are generated from; celeba: the directory holding img_align_celeba/, list_attr_celeba.txt and list_eval_partition.txt)"),
    INT_KEY("data", "batch_size", data.batch_size, 1, 65536, "128", "training images per step"),
    INT_KEY("data", "micro_batches", data.micro_batches, 1, 65536, "1", "gradient accumulation: each training step's batch runs through the network in this many equal slices whose gradients are summed before the one update: the activation memory of batch_size / micro_batches images (per rank), the update of batch_size. Batch-norm statistics are each slice's (as on that many GPUs without [run] sync_bn), the running statistics take an update per slice (as PyTorch's accumulation); dropout draws as for the whole batch. Must divide batch_size (per rank); eval_batch_size defaults to the slice, and bioflex-eval's analyses take training batches a slice at a time. Over NCCL the all-reduce runs once after the last slice"),
    INT_KEY("data", "eval_batch_size", data.eval_batch_size, 0, 65536, "0", "images per evaluation batch (0 = batch_size / micro_batches)"),
    INT_KEY("data", "train_limit", data.train_limit, 0, NO_MAX, "0", "use only the first N training samples (0 = all; JPEG folder datasets: N spread evenly over the class-sorted files, so that every class stays)"),
    INT_KEY("data", "test_limit", data.test_limit, 0, NO_MAX, "0", "use only the first N test samples (0 = all; JPEG folder datasets: N spread evenly, as train_limit)"),
    INT_KEY("data", "loader_threads", data.loader_threads, 1, 64, "2", "threads that decode and augment batches"),
    INT_KEY("data", "prefetch", data.prefetch, 1, 64, "4", "batches prepared ahead of the training step"),
    BOOL_KEY("data", "shuffle", data.shuffle, "true", "reshuffle the training set every epoch (from the seed)"),
    BOOL_KEY("data", "augment_flip", data.augment_flip, "false", "random horizontal flip of training images"),
    INT_KEY("data", "augment_crop_pad", data.augment_crop_pad, 0, 64, "0", "random crop after zero padding by this many pixels (0 = off)"),
    BOOL_KEY("data", "normalize", data.normalize, "true", "subtract the dataset mean and divide by its std per channel"),
    FLOAT_KEY("data", "input_noise_std", data.input_noise_std, 0, NO_MAX, 0, "0", "additive Gaussian noise (std, after normalisation), drawn anew for every sample of every epoch and every evaluation, as the PlasticFlex reference draws it at every access (a function of the seed, split, epoch and sample: repeatable; bioflex-eval takes the noise of its checkpoint's epoch, so it repeats the run's score there); 0.1 reproduces PlasticFlex's CIFAR-10"),
    ENUM_KEY("data", "noise_splits", data.noise_splits, noise_split_names, "both", "which splits get input_noise_std"),
    ENUM_KEY("data", "subset", data.subset, subset_names, "none", "use a subset of each split: balanced (subset_size per class) or random (subset_size samples), after the limits"),
    INT_KEY("data", "subset_size", data.subset_size, 1, NO_MAX, "100", "subset: samples per class (balanced) or in all (random)"),
    LONG_KEY("data", "subset_seed", data.subset_seed, 0, NO_MAX, "42", "subset: the seed it is drawn from (42 as the PlasticFlex reference)"),
    LONG_KEY("data", "multi_seed", data.multi_seed, 0, NO_MAX, "42", "multi_mnist, multi_fashion_mnist: the seed the partner digits are drawn from (not [run] seed, so runs with several seeds train on one dataset; the reference draws them unseeded)"),
    BOOL_KEY("data", "gray_to_rgb", data.gray_to_rgb, "false", "repeat a one-channel dataset's image into 3 channels (the PlasticFlex reference's MNIST)"),
    ENUM_KEY("data", "cifar10_std", data.cifar10_std, cifar10_std_names, "true", "cifar10 normalisation std: the true per-channel std (0.2470, 0.2435, 0.2616) or the (0.2023, 0.1994, 0.2010) of the PlasticFlex reference (and many CIFAR scripts)"),
    ENUM_KEY("data", "norm_stats", data.norm_stats, norm_stats_names, "dataset", "the mean and std normalize uses: dataset: its own mean and std (Fashion-MNIST (0.2860, 0.3530), CIFAR-10's, ImageNet's, ...); mnist: MNIST's (0.1307, 0.3081) on every channel (the BU-TD reference uses them for Fashion-MNIST too); half: mean 0.5, std 0.5 on every channel (the BU-TD reference's CIFAR-10)"),
    INT_KEY("data", "procedural_classes", data.procedural_classes, 2, 1000, "10", "dataset = procedural: number of classes"),
    INT_KEY("data", "procedural_size", data.procedural_size, 4, 512, "32", "dataset = procedural: image side in pixels"),
    ENUM_KEY("data", "procedural_channels", data.procedural_channels, channel_count_names, "3", "dataset = procedural: 1 (gray) or 3 (RGB) channels"),
    INT_KEY("data", "procedural_train", data.procedural_train, 1, 1 << 30, "5000", "dataset = procedural: number of training samples"),
    INT_KEY("data", "procedural_test", data.procedural_test, 1, 1 << 30, "1000", "dataset = procedural: number of test samples"),
    STRING_KEY("data", "val_labels", data.val_labels, 0, "", "imagenet: ILSVRC's LOC_val_solution.csv (ImageId,PredictionString, the WNID first) for the official flat val/ directory (empty = val/ has class folders)"),
    STRING_KEY("data", "val_dir", data.val_dir, 0, "", "imagefolder, imagenet100, imagenet: a directory of class folders to evaluate on instead of the dataset's val/ (val.X), e.g. one ImageNet-C corruption and severity (tools/imagenet_c.sh); the classes and their order stay the dataset's (class_list, Labels.json, or the train/ folders)"),
    STRING_KEY("data", "class_list", data.class_list, 0, "", "imagefolder, imagenet100, imagenet: a file of class folder names (WNIDs), one a line, that selects the classes and gives their label order (empty = imagenet100: Labels.json order, else sorted folder names)"),
    INT_KEY("data", "image_size", data.image_size, 8, 1024, "224", "imagefolder, imagenet100, imagenet: side of the square training and validation images"),
    ENUM_KEY("data", "train_transform", data.train_transform, train_transform_names, "squash", "imagefolder, imagenet100, imagenet: training crop: squash (whole image resized to image_size, FlexNet Exp 2/4) or random_resized_crop (torchvision); flips follow augment_flip"),
    FLOAT_KEY("data", "crop_scale_min", data.crop_scale_min, 0, 1, MIN_OPEN, "0.08", "random_resized_crop: smallest crop area as a fraction of the image"),
    FLOAT_KEY("data", "crop_scale_max", data.crop_scale_max, 0, 1, MIN_OPEN, "1", "random_resized_crop: largest crop area as a fraction of the image"),
    FLOAT_KEY("data", "crop_ratio_min", data.crop_ratio_min, 0, NO_MAX, MIN_OPEN, "0.75", "random_resized_crop: smallest aspect ratio (width / height)"),
    FLOAT_KEY("data", "crop_ratio_max", data.crop_ratio_max, 0, NO_MAX, MIN_OPEN, "1.3333333", "random_resized_crop: largest aspect ratio (width / height)"),
    INT_KEY("data", "val_resize", data.val_resize, 0, 4096, "0", "imagefolder, imagenet100, imagenet: 0 squashes validation images to image_size (FlexNet); N > 0 resizes the shorter side to N, then centre crops image_size (torchvision: 256)"),

    ENUM_KEY("model", "arch", model.arch, arch_names, "cnn", "network architecture: resnet18 and resnet50 are torchvision's (ImageNet stem: 7x7/2 conv and 3x3/2 max-pool); resnet20 ... resnet110 the CIFAR ResNets of depth 6n + 2 (a 3x3 stem of 16 channels, 3 stages of n BasicBlocks with 16, 32 and 64 channels, 1x1 conv + BN projections where the shape changes, as FlexResNet's CIFAR path; with flex every conv a flex layer)"),
    INT_KEY("model", "num_classes", model.num_classes, 0, 100000, "0", "output classes (0 = the dataset's)"),
    FLOAT_KEY("model", "dropout", model.dropout, 0, 1, MAX_OPEN, "0.5", "classifier dropout probability"),
    LIST_KEY("model", "channels", model.channels, model.num_channels, 1, 8192, 0, 1, "32,64", "arch = cnn: channels of each conv-BN-ReLU-maxpool stage"),
    INT_KEY("model", "hidden", model.hidden, 0, NO_MAX, "128", "arch = cnn: width of the hidden classifier layer (0 = none)"),
    BOOL_KEY("model", "batchnorm", model.batchnorm, "true", "cnn, vgg: BatchNorm after every conv"),
    FLOAT_KEY("model", "bn_momentum", model.bn_momentum, 0, 1, 0, "0.1", "BatchNorm running-statistics momentum (PyTorch convention)"),
    FLOAT_KEY("model", "bn_eps", model.bn_eps, 0, NO_MAX, MIN_OPEN, "1e-5", "added to the BatchNorm variance"),
    FLOAT_KEY("model", "bn_var_floor", model.bn_var_floor, 0, NO_MAX, 0, "0", "the least running variance a BatchNorm keeps: every update of the running statistics (training steps, [analysis] bn_recalibrate_batches) and every load of weights (checkpoints, init_weights) raises smaller ones to it, so that a channel near-constant in training cannot blow up evaluation (FlexNet's MaxPrefResNet's hardened BatchNorm: 1e-5, with bn_eps = 1e-4); 0: none, as PyTorch"),
    STRING_KEY("model", "init_weights", model.init_weights, 0, "", "start training from these weights instead of a random initialisation: a safetensors file with PyTorch state_dict names (a bioflex model.safetensors, or one saved from PyTorch with safetensors.torch.save_file(model.state_dict(), path)) or a checkpoint or run directory; the optimiser starts fresh; ignored by --resume. A flex mask's threshold that is not learned (threshold_mode = frozen_random, resample_each_forward) keeps the model's own draw where the file lacks it or holds it in another shape (the reference code's files), and FlexNet's inert bn_logits of a channel-wise max layer are passed over"),
    STRING_KEY("model", "init_exclude", model.init_exclude, 0, "", "init_weights: comma-separated tensor-name prefixes left at their random initialisation and not required in the file (e.g. classifier.6 for a new head with another number of classes)"),
    BOOL_KEY("model", "freeze_fc1", model.freeze_fc1, "false", "plasticflex_*: keep fc1 at its random init, never trained, as the PlasticFlex reference code does (it builds fc1 after its optimiser)"),
    ENUM_KEY("model", "conv_init", model.conv_init_fan_in, conv_init_names, "fan_out", "Kaiming-normal conv weights scaled by fan_out (torchvision) or fan_in (FlexNet's reference code, every conv and flex conv of cnn, vgg and resnet); conv biases 0, but a FlexResNet's flex convs under fan_out keep nn.Conv2d's U(+-1/sqrt(fan_in)) bias as torchvision's init does"),
    ENUM_KEY("model", "linear_init", model.linear_init_pytorch, linear_init_names, "normal", "vgg: classifier Linear weights N(0, 0.01) with biases 0 (torchvision), or pytorch_default: weights and biases U(+-1/sqrt(fan_in)) (nn.Linear's own init, kept by FlexNet's reference code); cnn and plasticflex_vgg always use the latter"),
    BOOL_KEY("model", "flex", model.flex, "false", "every conv becomes a flex layer (per element the conv or the max-pool of the input); resnet: all of them, stem and downsamples included, as FlexResNet"),
    LIST_KEY("model", "flex_layers", model.flex_layers, model.num_flex_layers, 0, 4096, INCREASING, 0, "", "flex: only these convs (counted from 0 in network order) become flex layers; empty = every conv"),
    BOOL_KEY("model", "fully_flex", model.fully_flex, "false", "cnn, vgg with flex: the 2x2 max-pools become flex layers too (every one, whatever flex_layers says; flex_layers counts convs only)"),
    ENUM_KEY("model", "flex_joint", model.flex_joint, flex_joint_names, "channelwise_max", "flex: elementwise max of the branches, or a mask from the thresholded pool"),
    STRING_KEY("model", "static_routing", model.static_routing, 0, "", "flex channelwise_max: each flex site fixed ahead of time to one branch, as FlexNet's MaxPrefResNet ablation (flexnet.md 2.2): the routing JSON of a trained flex model (bioflex-eval --routing) gives each site's conv fraction; above static_routing_threshold the site is a plain conv (with the flex conv's bias and tensor names, so the flex model's weights load), else the parameter-free pool branch, the max-pool widened to the conv's channels; every flex site must be in the file. Hardened as the reference with bn_eps = 1e-4, bn_var_floor = 1e-5 and [analysis] bn_recalibrate_batches; empty: learned per element"),
    FLOAT_KEY("model", "static_routing_threshold", model.static_routing_threshold, 0, 1, 0, "0.5", "static_routing: a site whose conv fraction exceeds this becomes a conv, else the pool branch (FlexNet's 0.5)"),
    ENUM_KEY("model", "flex_channels", model.flex_channels, flex_channel_names, "expand", "flex: widen the pool to the conv's channels by block copy/tiling (FlexNet) or linear interpolation (PlasticFlex)"),
    ENUM_KEY("model", "flex_tie", model.flex_tie, flex_tie_names, "split", "flex channelwise_max: a tie splits the gradient (torch.maximum) or gives it to the pool (older code)"),
    ENUM_KEY("model", "flex_mask", model.flex_mask, flex_mask_names, "sigmoid_hard", "flex mask: the mask function of the logits"),
    FLOAT_KEY("model", "flex_mask_factor", model.flex_mask_factor, 0, NO_MAX, MIN_OPEN, "1", "flex mask sigmoid_mul: the multiplier f in sigmoid(f*L)"),
    BOOL_KEY("model", "flex_logits_bn", model.flex_logits_bn, "false", "flex mask: batch-norm on the logits (bn_logits)"),
    ENUM_KEY("model", "flex_logits", model.flex_logits, flex_logits_names, "threshold", "flex mask: where the logits come from (the references' logits_mechanism): threshold: L = P~ - T, the widened pool against the threshold (THRESHOLD); spatial_attention: L from a small CNN of the layer's input (SpatialAttentionBlock: flex_attention_blocks x [conv3x3 c_in -> c_in, LeakyReLU(0.01), BN], then conv3x3 c_in -> c_out, LeakyReLU(0.01), BN, named LAYER.spatial_attention_block.N), then bn_logits when flex_logits_bn; it keeps H x W, so every flex layer must keep its input's size (a strided one is refused); no threshold tensor then (the references make one that nothing reads)"),
    INT_KEY("model", "flex_attention_blocks", model.flex_attention_blocks, 0, 64, "1", "flex_logits = spatial_attention: the c_in -> c_in blocks before the last (num_spatial_attention_block)"),
    ENUM_KEY("model", "threshold_mode", model.threshold_mode, threshold_mode_names, "learned", "flex mask: a learned threshold, frozen at its random start (FlexNet's GPU runs), or drawn anew at every forward (PlasticFlex's published runs, one step each; over [spiking] time_steps one draw serves all the steps of a forward)"),
    ENUM_KEY("model", "divisive_norm", model.divisive_norm, divisive_norm_names, "none", "resnet18, resnet50 (the V1-constrained ResNet, ../shared/specs/v1-constrained.md 4): a divisive normalisation after each layer1 block (its output after the residual add and ReLU, which the next block also takes as its identity). tuned (4.1): y = x / (1 + W x) over channels, W from one learned width per channel (<block>.dn.sigmas, initialised U(c/8, c/8 + 1)), the reference's OpponentChannelInhibition (resnet50_tuned_norm, composite e); cirincione (4.2): y = x / (N + |bias|), N a 3x3 conv whose c x c kernels are oriented anisotropic Gaussians generated at every step from six learned parameters per (out, in) channel pair (<block>.dn.A, rho, sigma, theta, v, w) and one learned bias (<block>.dn.bias), the reference's DivisiveNormalizationCirincione (resnet50_div_norm); none: torchvision's block"),
    BOOL_KEY("model", "cortical_magnification", model.cortical_magnification, "false", "resnet18, resnet50 on 64x64 images (v1-constrained.md 5): the stem's 3x3 max-pool becomes the reference's polar transform (layer lpp), a fixed resampling of each 32x32 map onto 16x16 (18 rings x 30 wedges, the fovea interpolated, reflect-padded, resized bilinearly) with no parameters (resnet50_cortical_magnification, composite e)"),
    ENUM_KEY("model", "oci_distance", model.oci_distance, oci_distance_names, "opponent", "divisive_norm = tuned: the channel distance its weights fall off with (v1-constrained.md 4.1, 12 Q5): opponent: as the reference codes it (OpponentChannelInhibition), each channel inhibited most by the one opposite it on the ring of channels and least by itself, what the trained models use; similar: by the ring distance, each channel inhibited most by itself and its neighbours, the 'similar-feature pool' reading of tuned normalisation (an experimental variant: no reference weights)"),
    ENUM_KEY("model", "polar_padding", model.polar_padding, polar_padding_names, "angle", "cortical_magnification: the padding of the 18 x 30 polar map before the resize: angle: the wedge axis reflect-padded (the reference repository's PolarTransform); both: both axes reflect-padded (the Brain-Score submission's LPP_v49); which one produced the paper's numbers is not known; circular: the wedge axis wrapped around (wedge -1 is wedge 29: the angles go round the circle, which neither copy of the reference does)"),
    BOOL_KEY("model", "polar_antialias", model.polar_antialias, "false", "cortical_magnification: resize with antialiasing, as torchvision >= 0.17 does by default; false: without, as torchvision <= 0.16 did (the reference pins no version)"),
    BOOL_KEY("model", "center_surround", model.center_surround, "false", "resnet50 (v1-constrained.md 2): a center-surround (difference-of-Gaussians) layer after the 3x3 conv of layer1's blocks, on the first quarter of its channels (16 of 64; the rest pass unchanged): 5x5 kernels generated at every step from two learned widths and a gain per (out, in) channel pair (<block>.conv2.dog.dog_conv.sigma1, sigma2_scale, total_scale), each tap L2-normalised over all 256 kernels, as the reference's DoGConv2DLayer. With local_rf, divisive_norm or cortical_magnification: blocks 0 and 1 as the reference's composites (conv2.conv, conv2.dog); alone: all three blocks as resnet50_center_surround (conv2.0, conv2.1, the 3x3 conv at nn.Conv2d's default init)"),
    ENUM_KEY("model", "dog_amplitude", model.dog_amp_paper, dog_amplitude_names, "code", "center_surround: the Gaussians' amplitude: code: s/pi, as the reference code runs (every kernel a blob of one sign, v1-constrained.md 2.3); paper: 1/(pi s), the textbook Gaussian (centre and surround of opposite signs)"),
    BOOL_KEY("model", "local_rf", model.local_rf, "false", "resnet50 (v1-constrained.md 3): layer1 block 2's 3x3 conv becomes a locally connected layer (layer1.2.conv2.weight [1, 64, 64, 16, 16, 9] at 64x64 images: a 3x3 kernel per output position, drawn N(0, 1), no bias); alone, as the reference's resnet50_local_rf, after a Dropout2d (local_rf_dropout), the two named layer1.2.conv2.0 and conv2.1"),
    FLOAT_KEY("model", "local_rf_dropout", model.local_rf_dropout, 0, 1, MAX_OPEN, "0.5", "local_rf without the other V1 keys (the reference's resnet50_local_rf): the probability of the Dropout2d before the locally connected layer, which drops whole channels of a sample (layer1.2.conv2.0; 0: none, the layer still named conv2.1); the composites have none"),
    BOOL_KEY("model", "flex_recompute_conv", model.flex_recompute_conv, "false", "flex mask: the backward computes each flex layer's conv output C again (one more convolution per layer and step) instead of keeping it from the forward, the same bits: the activation memory of a mask-joint network falls by one conv output per flex layer (per time step in a spiking network), less what the layer's scratch, which then holds its C, adds beyond the activations it lies over: PlasticFlex's flex VGG-16 on ImageNet-100 at batch 256 plans some 45 GiB instead of 57 (ANN), 427 GiB instead of 513 (LIF over 10 steps), its spiking flex VGG-11 on CIFAR-10 1.8 GiB instead of 2.2"),
    BOOL_KEY("model", "fuse_flex_bn_stats", model.fuse_flex_bn_stats, "true", "flex channelwise_max followed by its batch-norm: in training the flex forward also takes that batch-norm's batch statistics, adding each output element to its channel's sums as it writes it, so that the batch-norm does not read the output again for them (4 fewer bytes per element on the GPU with expand channels, under either [run] flex_kernels; the same bits on the CPU; on the GPU the same sums in another order); false lets the batch-norm take them (for comparison)"),
    BOOL_KEY("model", "fuse_flex_bn", model.fuse_flex_bn, "true", "flex channelwise_max with expand channels and fuse_flex_scatter, followed by its batch-norm: that batch-norm's backward computes its sums alone, and the flex layer's route-and-scatter (or, for a first layer, whose input needs no gradient, its route alone) computes the batch-norm's dx from its output gradient and input as it reads them, so the flex output's gradient is never stored (8 fewer bytes per element on the GPU, 12 for a first layer; the same bits on the CPU); false runs the batch-norm's whole backward first (for comparison)"),
    BOOL_KEY("model", "fuse_flex_scatter", model.fuse_flex_scatter, "true", "flex channelwise_max with expand channels: the backward routes dy and scatters the pool's share into dx in one pass, dP never stored (the conv's backward-data then adds its part; the same bits on the CPU); false runs the route, the conv's backward-data, then the scatter (for comparison)"),
    BOOL_KEY("model", "fold_conv_bias", model.fold_conv_bias, "true", "in training a convolution whose output only a batch-norm reads adds no bias: the batch-norm takes any per-channel constant out again, so the output is the same and the bias's true gradient is 0 (written as 0, where the unfolded sum over dy is rounding noise), and the batch-norm adds momentum x bias to its running mean, which keeps its meaning; one pass over the convolution's output fewer each way. Evaluation adds the bias as always. A channel-wise max flex layer's conv adds none either (training and evaluation): the joint adds it to each conv output as it reads it, the same float add, and where its backward routes and scatters in one pass (fuse_flex_scatter), or routes alone applying the next batch-norm's dx (a first layer under fuse_flex_bn), that route sums the bias gradient. false adds it in the conv and sums its gradient (PyTorch's computation)"),
    BOOL_KEY("model", "fuse_add_relu", model.fuse_add_relu, "true", "a residual block's sum runs the ReLU after it (the same bits, in training and evaluation): one pass forward (add and clamp) where there were two, and backward one pass that writes both summands' gradients from the ReLU's mask where a ReLU pass and two copies ran, and no gradient buffer between them (by the byte count 20 fewer bytes per block-output element and step; ResNet-18/50, the V1-constrained ResNets, FlexResNet and the CIFAR ResNets); false runs them as two layers (for comparison)"),
    BOOL_KEY("model", "fuse_bn_relu", model.fuse_bn_relu, "true", "in training a batch-norm runs the ReLU after it (the same bits): one pass over the activations forward (normalise and clamp) and one fewer backward (the ReLU's mask taken from the batch-norm's input), and no gradient buffer between them; false runs them as two layers (for comparison)"),

    ENUM_KEY("optim", "optimizer", optim.optimizer, optimizer_names, "sgd", "optimiser: sgd (torch.optim.SGD: weight decay added to the gradient), adam (torch.optim.Adam: weight decay added to the gradient as an L2 term before the moments, as the BU-TD reference's Adam(weight_decay=0.01)) or adamw (torch.optim.AdamW: decoupled weight decay, p *= 1 - lr x weight_decay)"),
    FLOAT_KEY("optim", "lr", optim.lr, 0, NO_MAX, MIN_OPEN, "0.1", "learning rate (the peak, after warm-up)"),
    FLOAT_KEY("optim", "momentum", optim.momentum, 0, 1, MAX_OPEN, "0.9", "sgd: momentum"),
    BOOL_KEY("optim", "nesterov", optim.nesterov, "false", "sgd: Nesterov momentum"),
    FLOAT_KEY("optim", "weight_decay", optim.weight_decay, 0, NO_MAX, 0, "0", "sgd and adam: L2 term added to the gradient (coupled); adamw: decoupled decay"),
    FLOAT_KEY("optim", "beta1", optim.beta1, 0, 1, MAX_OPEN, "0.9", "adam, adamw: decay of the first-moment average"),
    FLOAT_KEY("optim", "beta2", optim.beta2, 0, 1, MAX_OPEN, "0.999", "adam, adamw: decay of the second-moment average"),
    FLOAT_KEY("optim", "eps", optim.eps, 0, NO_MAX, MIN_OPEN, "1e-8", "adam, adamw: added to the denominator"),
    FLOAT_KEY("optim", "grad_clip_norm", optim.grad_clip_norm, 0, NO_MAX, 0, "0", "clip the global gradient norm to this (0 = off)"),
    STRING_KEY("optim", "train_only", optim.train_only, 0, "", "comma-separated parameter-name prefixes (whole name components: fc matches fc.weight, not fc2.weight): only these parameters are updated, without weight decay for the rest, and the gradient norm (grad_clip_norm, the logged grad_norm) counts only theirs; the others keep their values, and the backward stops below the lowest layer that trains and computes no parameter gradients of a layer whose parameters all stay. How the rest runs is train_only_mode. A linear probe, as the V1-constrained ResNet's Tiny-ImageNet fine-tuning (train_only = fc with init_weights and init_exclude = fc). Empty: every parameter trains"),
    ENUM_KEY("optim", "train_only_mode", optim.train_only_mode, train_only_mode_names, "eval", "with train_only: how the training steps run the network: eval: as evaluation does (batch-norm with its running statistics, which stay as they are; no dropout), PyTorch's model.eval() before training the head: a true linear probe of a fixed backbone (a trained batch-norm learns its affine through the running statistics); train: as training does (batch statistics, running statistics following the batches, dropout dropping), as the V1-constrained ResNet reference's Tiny-ImageNet fine-tuning ran (v1-constrained.md 7.2)"),
    FLOAT_KEY("optim", "label_smoothing", optim.label_smoothing, 0, 1, MAX_OPEN, "0", "label smoothing of the cross-entropy targets"),

    ENUM_KEY("schedule", "type", schedule.type, schedule_names, "constant", "learning-rate schedule after the warm-up"),
    ENUM_KEY("schedule", "unit", schedule.unit, unit_names, "epoch", "epoch: lr changes at epoch boundaries; step: every step"),
    INT_KEY("schedule", "step_size", schedule.step_size, 1, NO_MAX, "30", "type = step: multiply lr by gamma every step_size units"),
    FLOAT_KEY("schedule", "gamma", schedule.gamma, 0, 1, MIN_OPEN, "0.1", "type = step, multistep: decay factor"),
    LIST_KEY("schedule", "milestones", schedule.milestones, schedule.num_milestones, 1, NO_MAX, INCREASING, 0, "", "type = multistep: units at which lr is multiplied by gamma"),
    FLOAT_KEY("schedule", "eta_min", schedule.eta_min, 0, NO_MAX, 0, "0", "type = cosine: final learning rate"),
    INT_KEY("schedule", "warmup", schedule.warmup, 0, NO_MAX, "0", "linear warm-up length in units (0 = none)"),
    FLOAT_KEY("schedule", "warmup_start_factor", schedule.warmup_start_factor, 0, 1, MIN_OPEN, "0.1", "the warm-up starts at lr * this factor"),

    ENUM_KEY("spiking", "neuron", model.spiking.neuron, neuron_names, "none", "none: an ANN with ReLU; lif, if: spiking neurons over time_steps; clamp01, step: the reference code's stateless activations"),
    INT_KEY("spiking", "time_steps", model.spiking.time_steps, 1, 1024, "10", "time steps T (10 as the reference's forward_STBP; its stateless activations, clamp01 and step, use 1)"),
    ENUM_KEY("spiking", "encoding", model.spiking.encoding, encoding_names, "direct", "direct: the same image every step; rate: Bernoulli spikes with probability clamp(pixel, 0, 1) (needs [data] normalize = false)"),
    ENUM_KEY("spiking", "readout", model.spiking.readout, readout_names, "mean_output", "mean_output: the mean over T of the last layer's output (the logits; the reference's forward_STBP); spike_count: the last layer feeds a neuron layer of its own and the loss gets the mean over T of its spikes, each class's firing rate in [0, 1], the class that fires most wins"),
    FLOAT_KEY("spiking", "decay", model.spiking.decay, 0, 1, 0, "0.95", "lif: membrane decay per step (spiking_decay of the reference)"),
    FLOAT_KEY("spiking", "spiking_decay", model.spiking.decay, 0, 1, 0, "0.95", "alias of decay (the reference's documented key, which its code never read)"),
    FLOAT_KEY("spiking", "threshold", model.spiking.threshold, 0, NO_MAX, MIN_OPEN, "1.0", "lif, if: firing threshold (spiking_threshold of the reference)"),
    FLOAT_KEY("spiking", "spiking_threshold", model.spiking.threshold, 0, NO_MAX, MIN_OPEN, "1.0", "alias of threshold (the reference's documented key, which its code never read)"),
    ENUM_KEY("spiking", "reset", model.spiking.reset, reset_names, "hard", "lif, if: after a spike the membrane goes to zero (hard), drops by the threshold (soft), or stays (none)"),
    BOOL_KEY("spiking", "detach_reset", model.spiking.detach_reset, "false", "lif, if: no gradient through the reset's dependence on the spike"),
    BOOL_KEY("spiking", "use_stbp", model.spiking.use_stbp, "true", "lif, if: backprop through the membrane over all time steps (STBP); false trains each step on its own"),
    BOOL_KEY("spiking", "use_STBP", model.spiking.use_stbp, "true", "alias of use_stbp (the reference code's spelling; there use_STBP = true chose the step activation over clamp01, which [spiking] neuron chooses here, so it is refused with those)"),
    ENUM_KEY("spiking", "surrogate", model.spiking.surrogate, surrogate_names, "tanh", "spike derivative in the backward pass: sigmoid(alpha), arctan(alpha), rectangular(width, height), triangle(width, height), tanh(height: height*tanh')"),
    FLOAT_KEY("spiking", "alpha", model.spiking.alpha, 0, NO_MAX, MIN_OPEN, "4.0", "surrogate sigmoid, arctan: sharpness"),
    FLOAT_KEY("spiking", "width", model.spiking.width, 0, NO_MAX, MIN_OPEN, "2.0", "surrogate rectangular: height where |u| < width/2 (width is the whole support, 2 = the reference's |u| < 1); triangle: height * (1 - |u|/width), zero from |u| = width on (support 2*width); u = membrane - threshold"),
    BOOL_KEY("spiking", "pack_spikes", model.spiking.pack_spikes, "true", "lif, if, step: keep each neuron layer's spikes for the backward as bits (1/32 of the floats; the floats the next layer's forward reads live only until then, and the backward restores them exactly); false keeps the floats"),
    BOOL_KEY("spiking", "recompute_charge", model.spiking.recompute_charge, "true", "lif, if with time_steps <= 32: a neuron layer that reads a batch-norm's output alone keeps no charge (H[t]) for the backward, which computes it again from the batch-norm's input and statistics, the same bits; in training the neuron also normalises its input as it reads it, so the batch-norm output is not even written (in evaluation it lives only until the neuron's forward): T x that activation less memory, and neither a charge nor that output written or read; false keeps the charge"),
    BOOL_KEY("spiking", "fuse_bn_backward", model.spiking.fuse_bn_backward, "true", "lif, if with recompute_charge: the backward of such a neuron layer and of the batch-norm before it run as one op (neuron_batchnorm_backward), which never stores the neuron's gradient: on a GPU two passes over the batch-norm's input and the spikes' gradient instead of writing that gradient and reading it twice (12 fewer bytes per element and step; the same bits on the CPU; on a GPU the batch-norm's sums are added in another order); false runs them one after the other (for comparison)"),
    BOOL_KEY("spiking", "share_direct_input", model.spiking.share_direct_input, "true", "encoding = direct: every step sees the same image, so the layers before the first neuron layer (its conv or flex layer and batch-norm) compute the same thing at every step; they run once per image and their output is repeated over the steps where the first neuron layer reads it (T x less of their work and memory; the batch-norm's statistics are those of the T copies, its running variance's unbiased correction counting T x the values); false repeats the image first, as SpikingJelly's multi-step mode does (the same results to rounding)"),
    INT_KEY("spiking", "raster_neurons", model.spiking.raster_neurons, 0, 4096, "0", "> 0: at every log interval write the spikes of this many neurons of each neuron layer (first sample of the batch, every step) to spikes.jsonl in the run directory, for raster plots"),
    FLOAT_KEY("spiking", "height", model.spiking.height, 0, NO_MAX, MIN_OPEN, "0.3", "surrogate rectangular, triangle, tanh: peak value (0.3 as the reference)"),

    ENUM_KEY("butd", "network", butd.network, butd_network_names, "none", "none: an ordinary [model] run; fc: Flatten -> depth x (Linear -> ReLU) -> head; simple: conv5x5 -> depthwise k2 s2 -> conv5x5 -> depthwise k3 s2 -> Linear(hidden) -> head (the reference's BUTDSimpleNet); resnet18: CIFAR-style ResNet-18 without pooling or average pool (stem conv3x3 64, 4 stages of 2 basic blocks, flatten -> head), batch-norm as batch_norm says"),
    ENUM_KEY("butd", "learning", butd.learning, butd_learning_names, "counter_hebb", "counter_hebb: TD error pass + Counter-Hebb update; backprop: the engine's backward through the BU weights"),
    ENUM_KEY("butd", "weights", butd.shared_weights, butd_weights_names, "shared", "shared: the TD pass uses W itself; separate: its own weight B, given the transposed update"),
    BOOL_KEY("butd", "symmetric_init", butd.symmetric_init, "false", "weights = separate: B starts as W^T (otherwise an independent kaiming_uniform draw, as the reference)"),
    BOOL_KEY("butd", "feedback_alignment", butd.feedback_alignment, "false", "weights = separate, learning = counter_hebb: B is never updated, fixed random feedback (the reference's FA = True, the feedback-alignment baseline); false: B gets W's update transposed (the mirror synapse)"),
    FLOAT_KEY("butd", "symmetric_init_noise", butd.symmetric_init_noise, 0, NO_MAX, 0, "0", "symmetric_init = true: B starts as W^T x (1 + this x N(0, 1)), a draw per element (the reference's NoiseInit uses 0.05: a \"noisy symmetric\" start); 0 = exactly W^T"),
    ENUM_KEY("butd", "td_init", butd.td_init_legacy, butd_td_init_names, "current", "weights = separate, symmetric_init = false: how B is drawn; current: kaiming_uniform with a = 0 from B's own shape (the reference's current code); legacy: a = sqrt(5), U(+-1/sqrt(fan_in)) (its older code)"),
    BOOL_KEY("butd", "downsample_always_shared", butd.downsample_always_shared, "false", "network = resnet18, weights = separate: the residual 1x1 downsample convs still share W, as the reference code does (its weight-symmetry study); false: they get their own B like every other layer"),
    ENUM_KEY("butd", "non_linearity_fn", butd.non_linearity_fn, butd_non_linearity_names, "relu", "the reference configs' key, which its code never read (butd-counterhebb.md 5): accepted with the one nonlinearity both implement, so that a ported config loads; another value is refused rather than ignored"),
    ENUM_KEY("butd", "lateral_fn", butd.lateral_fn, butd_lateral_names, "galu", "the reference configs' key, which its code never read (butd-counterhebb.md 5): accepted with the one lateral gating both implement (GaLU, see guided), so that a ported config loads; another value is refused rather than ignored"),
    BOOL_KEY("butd", "guided", butd.guided, "false", "instruction pass (one-hot task -> fixed random task head -> TD) and GaLU-gated BU pass; needs a multi-task dataset"),
    INT_KEY("butd", "hidden", butd.hidden, 1, NO_MAX, "500", "last_hidden_size: width of the last hidden layer"),
    INT_KEY("butd", "depth", butd.depth, 1, 64, "1", "network = fc: number of hidden layers"),
    LIST_KEY_OF("butd", "conv_channels", butd.channels, butd.num_channels, 1, NO_MAX, 2, "32,32", "network = simple: channels of the two 5x5 convs"),
    INT_KEY("butd", "task_embedding", butd.task_embedding, 0, NO_MAX, "50", "guided: task_embedding_size, the task head's hidden width (0 = one layer)"),
    FLOAT_KEY("butd", "noise_std", butd.noise_std, 0, NO_MAX, 0, "0", "> 0, learning = counter_hebb: every weight update (W, and B when separate; not the bias's) is multiplied by one N(1, noise_std) scalar per tensor and step (the reference's AddNoise)"),
    BOOL_KEY("butd", "batch_norm", butd.batch_norm, "false", "network = resnet18: batch-norm after every conv, each with its own TD copy that normalises the instruction pass (the reference's celeb_a norm_layer); ch_bn says what learning = counter_hebb does at a batch-norm"),
    ENUM_KEY("butd", "ch_bn", butd.ch_bn, butd_ch_bn_names, "exact", "batch_norm = true, learning = counter_hebb: exact: the TD error pass goes back through each batch-norm's true Jacobian (the BU pass's batch statistics) and the update writes its gamma and beta gradients, so Counter-Hebb equals backprop; independent: the reference's error pass (specs README quirk 11): the batch-norm's independent TD copy (own batch statistics, gamma 1, beta 0) after each transposed op, and no update of either batch-norm (not backprop). The instruction pass uses the TD copy in both"),
    BOOL_KEY("butd", "train_task_head", butd.train_task_head, "false", "guided: train the task head (the reference keeps it a fixed random network) by backprop through the instruction pass, the GaLU gate 1[td > 0] taken as having derivative 1 (straight-through; its true derivative is 0); the core weights still learn by [butd] learning alone; network = fc | simple, no batch_norm"),
    BOOL_KEY("butd", "multi_decoders", butd.multi_decoders, "false", "guided: one decoder per task, the head having num_classes outputs for each task and the sample's task selecting its own (the reference's multi_decoders; its Counter-Hebb version hard-codes 2 tasks, here any number)"),
    ENUM_KEY("butd", "loss", butd.loss, butd_loss_names, "cross_entropy", "cross_entropy: softmax over num_classes logits; bce: one logit per sample with sigmoid binary cross-entropy, label 0 or 1, predicted 1 when the logit is > 0 (the reference's per-task binary heads, CelebA attributes)"),
    ENUM_KEY("fragments", "network", fragments.network, fragments_network_names, "none", "none: an ordinary run; lateral: Net Fragments (../shared/specs/netfragments.md): S1's four fixed 5x5 orientation filters and the S2 lateral layer (40 cells a pixel, 11x11 support, 44 inputs with its own previous state) learned by its local Hebbian rule on 32x32 straight-line images, one at a time, on the CPU; reads [run] dir, epochs and checkpoint_every and this section"),
    INT_KEY("fragments", "train_lines", fragments.train_lines, 1, NO_MAX, "300", "random lines per training epoch, each drawn fresh (spec 1.2)"),
    INT_KEY("fragments", "valid_lines", fragments.valid_lines, 0, NO_MAX, "4", "validation lines drawn before the first epoch and after each (they only advance the line sequence, as the reference's plotting pass did)"),
    LONG_KEY("fragments", "line_seed", fragments.line_seed, 0, NO_MAX, "1", "the seed of the line sequence: Python's random.seed, reproduced exactly (the reference's seed_everything(1))"),
    INT_KEY("fragments", "time_steps", fragments.time_steps, 1, 16, "6", "S2 time steps T per line (max_timesteps)"),
    BOOL_KEY("fragments", "bernoulli", fragments.bernoulli, "false", "S2 cells fire with probability r^gamma (act_threshold = bernoulli: train_v3-v5) instead of when r^gamma >= act_threshold"),
    FLOAT_KEY("fragments", "act_threshold", fragments.act_threshold, 0, NO_MAX, 0, "0.5", "theta: an S2 cell fires when its normalised support to the power gamma_t reaches it"),
    FLOAT_KEY("fragments", "power_start", fragments.power_start, 0, NO_MAX, MIN_OPEN, "1.2", "gamma_0 of the power schedule gamma_t = power_start + t * power_step (square_factor; the paper's a + bt)"),
    FLOAT_KEY("fragments", "power_step", fragments.power_step, 0, NO_MAX, 0, "0.2", "the power schedule's step b"),
    FLOAT_KEY("fragments", "support_factor", fragments.support_factor, 0, NO_MAX, MIN_OPEN, "1.3", "support above support_factor x 11 is inhibited (lambda - (s - lambda)/2)"),
    FLOAT_KEY("fragments", "hebbian_lr", fragments.hebbian_lr, 0, NO_MAX, MIN_OPEN, "0.2", "eta: the Hebbian rule adds eta x the min-max normalised co-activity"),
    ENUM_KEY("fragments", "hebbian_input", fragments.hebbian_input, hebbian_input_names, "clipped", "the S1 features the Hebbian rule learns from (spec 3.3, quirk 25): clipped: min(x, 1), an input active when x != 0, as the reference's rule; binarised: 1[x > 0.5], as its forward pass sees them (an experimental variant; only real-valued S1, s1_activation = relu, differs)"),
    BOOL_KEY("fragments", "neg_corr", fragments.neg_corr, "true", "the rule subtracts the two anti-correlation terms (every config of the reference)"),
    ENUM_KEY("fragments", "s1_kernels", fragments.s1_kernels, s1_kernel_names, "small", "S1's kernels: small (spec 2.1, integer matrices / 6) or larger (2.2, train_v4 and v5)"),
    ENUM_KEY("fragments", "s1_activation", fragments.s1_activation, s1_activation_names, "threshold", "S1's output: threshold 1[a > 0], bernoulli with probability clip(a, 0, 1), relu max(a, 0) (train_v5)"),
    INT_KEY("fragments", "eval_lines", fragments.eval_lines, 1, 112, "60", "evaluation lines, rotating through the centre (spec 5.1; the stored results used 60)"),
    FLOAT_KEY("fragments", "eval_noise_max", fragments.eval_noise_max, 0, 1, 0, "0.2", "the evaluation's feature-noise sweep: the fraction of the 4096 S1 units flipped, from 0 to this"),
    FLOAT_KEY("fragments", "eval_noise_step", fragments.eval_noise_step, 0, 1, MIN_OPEN, "0.01", "the feature-noise sweep's step"),
    INT_KEY("fragments", "eval_interrupt_max", fragments.eval_interrupt_max, 0, 31, "7", "the evaluation's line-interrupt sweep: gaps of 1 to this many pixels"),
    ENUM_KEY("fragments", "noise_masks", fragments.noise_masks, noise_masks_names, "bioflex", "which S1 units the evaluation's feature noise flips (spec 1.5): bioflex: drawn from [run] seed with bioflex's counter-based generator (the same statistics); torch: as the reference drew them, each noise setting a run of its own after seed_everything([run] seed) and one torch.randperm(4096) per line on PyTorch's CPU generator, its first int(noise x 4096) units: the stored noise rows exactly"),
    ENUM_KEY("fragments", "metrics", fragments.metrics, fragments_metrics_names, "scored", "the evaluation's means over the lines (spec 5.4): scored: each metric over the lines that have something to score (a line reconstruction over those with an erased, baseline-active unit, precision over those whose S2 output is not empty, noise reduction over those with flipped units), with the lines left out counted in fragments_results.jsonl (skipped_*) and the table; reference: over every line, a line with nothing to reconstruct scoring 0 and one NaN precision making the mean NaN (null), as the reference's AverageMeter: its stored results"),
    INT_KEY("analysis", "bn_recalibrate_batches", analysis.bn_recalibrate_batches, 0, NO_MAX, "0", "bioflex-eval: before it evaluates or analyses the checkpoint, every batch-norm's running mean and variance are recomputed as the plain average over this many training batches (the training split as training loads it, augmentation included; training-mode forwards, the k-th batch with momentum 1/k, no weight changes), PyTorch's reset_running_stats() with momentum None: FlexNet's MaxPrefResNet recalibrated so, a collapsed running variance making evaluation explode (FlexNet spec 2.2, 9 Q6); 0: the checkpoint's statistics"),
    INT_KEY("analysis", "surface_steps", analysis.surface_steps, 2, 1000, "21", "bioflex-eval --loss-surface: grid points along each of the two directions (the reference's 100)"),
    FLOAT_KEY("analysis", "surface_distance", analysis.surface_distance, 0, NO_MAX, MIN_OPEN, "1", "filter_normalized: the coefficients of both directions span [-this, this]; reference: each step is norm(theta) x this / surface_steps, so the plane spans +-this/2 norm(theta)"),
    INT_KEY("analysis", "surface_batches", analysis.surface_batches, 0, NO_MAX, "1", "test batches (eval_batch_size, in file order) whose mean loss and top-1 each grid point gets (0 = the whole test split)"),
    ENUM_KEY("analysis", "surface_directions", analysis.surface_directions, surface_direction_names, "filter_normalized", "filter_normalized: Gaussian directions, each output filter of a weight scaled to that filter's norm in theta, biases and other 1-D tensors left still (Li et al. 2018, what the reference meant); reference: PlasticFlex's loss_landscapes random_plane, U[0,1) directions, the second orthogonalised to the first, 1-D tensors scaled to their norm in theta, both then scaled to norm(theta) x distance / steps"),
    LONG_KEY("analysis", "surface_seed", analysis.surface_seed, 0, NO_MAX, "42", "seed of the two directions (the reference's 42)"),
    ENUM_KEY("analysis", "surface_mode", analysis.surface_mode, analysis_mode_names, "eval", "eval: each grid point scored as evaluation runs the model (running statistics, no dropout); train: as a training step runs it (each batch's own batch-norm statistics, dropout drawn the same at every point; the running statistics put back), as the reference did (it never called eval())"),
    ENUM_KEY("analysis", "surface_split", analysis.surface_split, surface_split_names, "test", "the split whose first surface_batches batches (in file order) score each grid point: test (eval_batch_size) or train (batch_size, augmented as training loads it, epoch 0's draws; the reference: its first training batch)"),
    INT_KEY("analysis", "gradient_batches", analysis.gradient_batches, 1, NO_MAX, "1", "bioflex-eval --gradient-flow: training batches (batch_size, shuffled and augmented as in training) whose mean loss's gradient is measured (the reference's 1)"),
    ENUM_KEY("analysis", "gradient_mode", analysis.gradient_mode, analysis_mode_names, "train", "bioflex-eval --gradient-flow: train: the model as a training step runs it (batch statistics, dropout); eval: as evaluation runs it (running statistics, no dropout), as the reference's analysis suite took it"),
    INT_KEY("analysis", "activation_images", analysis.activation_images, 1, NO_MAX, "16", "bioflex-eval --activations: the test split's first N images, in file order, whose layer outputs are written (the reference plots the first training image's)"),
    STRING_KEY("analysis", "activation_layers", analysis.activation_layers, 0, "", "bioflex-eval --activations: only the layers whose names start with one of these comma-separated prefixes (names as in --dry-run's model table: features.3,classifier); empty = every layer"),
    INT_KEY("analysis", "routing_batches", analysis.routing_batches, 0, NO_MAX, "0", "bioflex-eval --routing: test batches (eval_batch_size, in file order) whose routing through the channel-wise max flex layers is counted (0 = the whole test split, as the manuscript's validation set)"),
    STRING_KEY("analysis", "routing_maps", analysis.routing_maps, 0, "", "bioflex-eval --routing: also write each channel-wise max flex layer's per-element P(conv wins), F32 [C, H, W], into this safetensors file (empty = none)"),
    INT_KEY("analysis", "hessian_batches", analysis.hessian_batches, 1, NO_MAX, "1", "bioflex-eval --hessian: training batches (batch_size, shuffled and augmented as in training) whose mean loss's Hessian is taken (the reference: one batch of 16)"),
    ENUM_KEY("analysis", "hessian_mode", analysis.hessian_mode, analysis_mode_names, "eval", "eval: the Hessian of the loss as evaluation computes it (batch-norm's running statistics, no dropout; PyHessian's and the reference's model.eval()); train: as a training step computes it (batch statistics, which couple the batch's images; dropout drawn once and kept)"),
    INT_KEY("analysis", "hessian_top_n", analysis.hessian_top_n, 0, 64, "5", "top eigenvalues, by power iteration with deflation (PyHessian's 5)"),
    INT_KEY("analysis", "hessian_max_iterations", analysis.hessian_max_iterations, 1, 100000, "100", "the most power iterations per eigenvalue, and Hutchinson samples for the trace (PyHessian's 100)"),
    FLOAT_KEY("analysis", "hessian_tolerance", analysis.hessian_tolerance, 0, NO_MAX, MIN_OPEN, "0.001", "stop when the eigenvalue's (or the trace's running mean's) relative change is below this (PyHessian's 1e-3)"),
    FLOAT_KEY("analysis", "hessian_step", analysis.hessian_step, 0, NO_MAX, MIN_OPEN, "0.001", "Hessian-vector products are central differences of the gradient: (g(theta + step v) - g(theta - step v)) / (2 step) along unit directions v"),
    INT_KEY("analysis", "hessian_density_iterations", analysis.hessian_density_iterations, 0, 1000, "0", "Lanczos steps of the spectral density (stochastic Lanczos quadrature, PyHessian's 100; 0 = none): each keeps a vector of every parameter on the host"),
    LONG_KEY("analysis", "hessian_seed", analysis.hessian_seed, 0, NO_MAX, "42", "seed of the power iterations' starts and the Hutchinson probes (and of --input-hessian's starts)"),
    INT_KEY("analysis", "input_hessian_images", analysis.input_hessian_images, 1, 64, "4", "bioflex-eval --input-hessian: the test split's first N images, each its own Hessian (FlexNet's 4; input_hessian_positions names others)"),
    INT_KEY("analysis", "input_hessian_top_n", analysis.input_hessian_top_n, 0, 64, "2", "input Hessian: top eigenvalues by power iteration with deflation (FlexNet's 2)"),
    INT_KEY("analysis", "input_hessian_power_steps", analysis.input_hessian_power_steps, 1, 100000, "50", "input Hessian: power iterations per eigenvalue (FlexNet's 50)"),
    INT_KEY("analysis", "input_hessian_lanczos_steps", analysis.input_hessian_lanczos_steps, 1, 200, "50", "input Hessian: Lanczos steps without re-orthogonalisation, whose Ritz values are the spectrum (FlexNet's 50)"),
    INT_KEY("analysis", "input_hessian_surface_points", analysis.input_hessian_surface_points, 0, 201, "0", "input Hessian: also the loss over the plane through the image along the top two eigenvectors, this many points per side (FlexNet's 51; 0 = none)"),
    FLOAT_KEY("analysis", "input_hessian_surface_range", analysis.input_hessian_surface_range, 0, NO_MAX, MIN_OPEN, "10", "input Hessian: the surface's alpha and beta run from -range to range, in normalised input units (FlexNet's 10)"),
    LIST_KEY("analysis", "input_hessian_positions", analysis.input_hessian_positions, analysis.num_input_hessian_positions, 0, NO_MAX, 0, 0, "", "input Hessian: these test-split positions (counted from 0 in file order, in the order given) instead of the first input_hessian_images images, which is then not read; each image's results are those it gets among the first ones. FlexNet's loss-surface probes: the positions tools/plot_analysis.py --select-probes chooses from a pool of images (FlexNet 5.4 b); empty = the first images"),
    ENUM_KEY("analysis", "attack_method", analysis.attack_method, attack_method_names, "fgsm", "bioflex-eval --attack: fgsm (one step of epsilon x sign of the input gradient), pgd (L-inf projected gradient descent: attack_pgd_steps steps of attack_pgd_step_fraction x epsilon, projected on the epsilon ball and the pixel range), gaussian_noise (N(0, epsilon^2) per pixel), spgd (the reference's \"super PGD\": pgd on a grid to 0.5), jitter (torchattacks' Jitter: pgd's steps on the squared error of a scaled, noisy softmax, attack_jitter_*), spsa (gradient-free: Adam on the perturbation with SPSA estimates of the label's margin gradient, attack_spsa_*), jsma (L0: pairs of pixels raised by epsilon towards the class label + 1, chosen by the Jacobian's saliency map, attack_jsma_gamma), onepixel (L0: differential evolution over the positions and values of int(epsilon) pixels; its grid runs from 1), apgd (Auto-PGD with the cross-entropy, FlexNet's: momentum and a step halved where the loss stalls, attack_apgd_*)"),
    FLOAT_KEY("analysis", "attack_epsilon_max", analysis.attack_epsilon_max, 0, NO_MAX, 0, "0", "the largest epsilon, in pixels of [0, 1] images; 0 = the reference's grid for the method (fgsm 0.64, pgd 23/255, gaussian_noise 0.42, spgd 0.5, jitter 0.3, spsa 0.21, jsma 1.5, onepixel 42, apgd 0.01 (FlexNet's))"),
    INT_KEY("analysis", "attack_epsilons", analysis.attack_epsilons, 2, 1000, "23", "epsilons evenly from 0 to attack_epsilon_max (the reference's 23)"),
    INT_KEY("analysis", "attack_pgd_steps", analysis.attack_pgd_steps, 1, 100000, "20", "pgd, spgd, jitter: iterations (torchattacks' 20)"),
    FLOAT_KEY("analysis", "attack_pgd_step_fraction", analysis.attack_pgd_step_fraction, 0, NO_MAX, MIN_OPEN, "0.25", "pgd, spgd, jitter: each step is this x epsilon (the reference's alpha = epsilon / 4)"),
    BOOL_KEY("analysis", "attack_random_start", analysis.attack_random_start, "true", "pgd, spgd, jitter: start at a uniform point of the epsilon ball (torchattacks' default), else at the image"),
    FLOAT_KEY("analysis", "attack_jitter_scale", analysis.attack_jitter_scale, 0, NO_MAX, MIN_OPEN, "10", "jitter: the logits are scaled to this largest magnitude before the softmax (torchattacks' 10)"),
    FLOAT_KEY("analysis", "attack_jitter_std", analysis.attack_jitter_std, 0, NO_MAX, 0, "0.1", "jitter: std of the Gaussian noise added to the softmax (torchattacks' 0.1; 0 = none)"),
    FLOAT_KEY("analysis", "attack_spsa_delta", analysis.attack_spsa_delta, 0, NO_MAX, MIN_OPEN, "0.01", "spsa: the finite differences' half step, in pixels of [0, 1] images (the reference's 0.01)"),
    FLOAT_KEY("analysis", "attack_spsa_lr", analysis.attack_spsa_lr, 0, NO_MAX, MIN_OPEN, "0.01", "spsa: Adam's learning rate on the perturbation, in pixels (the reference's 0.01)"),
    INT_KEY("analysis", "attack_spsa_iterations", analysis.attack_spsa_iterations, 0, 100000, "0", "spsa: Adam steps per epsilon; 0 = the reference's int(40 x epsilon) (0 below 0.025, 8 at 0.21)"),
    INT_KEY("analysis", "attack_spsa_samples", analysis.attack_spsa_samples, 1, 1000000, "128", "spsa: draws of the random direction per gradient estimate, two forward passes each (the reference's 128)"),
    FLOAT_KEY("analysis", "attack_jsma_gamma", analysis.attack_jsma_gamma, 0, 1, MIN_OPEN, "0.1", "jsma: the largest fraction of an image's pixels raised, two per round (the reference's 0.1)"),
    INT_KEY("analysis", "attack_apgd_steps", analysis.attack_apgd_steps, 1, 100000, "100", "apgd: iterations (FlexNet's 100; torchattacks' default 10)"),
    INT_KEY("analysis", "attack_apgd_restarts", analysis.attack_apgd_restarts, 1, 1000, "1", "apgd: random starts, each for the images not fooled yet (torchattacks' 1)"),
    FLOAT_KEY("analysis", "attack_apgd_rho", analysis.attack_apgd_rho, 0, 1, 0, "0.75", "apgd: at a checkpoint the step halves where the loss rose in at most this fraction of the steps since the last (torchattacks' 0.75)"),
    INT_KEY("analysis", "attack_onepixel_steps", analysis.attack_onepixel_steps, 0, 100000, "0", "onepixel: generations of the differential evolution; 0 = PlasticFlex's int(2 x epsilon) (FlexNet's: 100)"),
    INT_KEY("analysis", "attack_onepixel_popsize", analysis.attack_onepixel_popsize, 0, 1000000, "0", "onepixel: torchattacks' popsize (the population is max(5, max(1, popsize / parameters) x parameters)); 0 = PlasticFlex's int(epsilon) (FlexNet's: 400)"),
    INT_KEY("analysis", "attack_eot_samples", analysis.attack_eot_samples, 1, 1000, "1", "input gradients summed over this many forward passes, each with its own random draws (expectation over transformation, for stochastic models: rate coding, re-drawn thresholds, stochastic masks)"),
    INT_KEY("analysis", "attack_samples", analysis.attack_samples, 0, NO_MAX, "1000", "attack the test split's first N images, in file order (0 = all; the reference draws 128 at random)"),
    ENUM_KEY("analysis", "attack_domain", analysis.attack_domain, attack_domain_names, "pixels", "pixels: epsilon is in pixels of the [0, 1] images, the attack undoes the dataset's normalisation and clamps to [0, 1] (what the reference means); reference: PlasticFlex's attack_batch, the batch min-max scaled to [0, 1] and the model queried on that during the attack, the result scaled back with the /0.99999, Gaussian noise unclamped"),
    LONG_KEY("analysis", "attack_seed", analysis.attack_seed, 0, NO_MAX, "42", "seed of the attacks' random starts, noise and SPSA's directions (the reference's 42)"),
};
#define NUM_KEYS (sizeof key_table / sizeof key_table[0])
_Static_assert(NUM_KEYS <= BF_CONFIG_KEY_SLOTS, "raise BF_CONFIG_KEY_SLOTS (config.h) to the number of keys");

typedef struct section_spec {
    const char *name;
    const char *doc;
} section_spec;

/* In the order of the key table, which is the order of printing. */
static const section_spec section_table[] = {
    {"run", "Where the run writes, how long it trains, and on which device."},
    {"data", "Dataset, batching, loading and augmentation."},
    {"model", "Architecture and its sizes."},
    {"optim", "Optimiser and regularisation."},
    {"schedule", "Learning-rate schedule and warm-up."},
    {"spiking", "Spiking neurons over time (PlasticFlex); neuron = none trains the ANN."},
    {"butd", "Bottom-up/top-down networks with Counter-Hebb learning; network = none trains [model]."},
    {"fragments", "Net Fragments: S1's fixed orientation filters and the S2 lateral layer learned by its Hebbian rule on straight lines; network = none trains [model]."},
    {"analysis", "What bioflex-eval's analyses (--loss-surface, --gradient-flow, --hessian, --input-hessian, --activations, --attack, --routing) compute of a checkpoint, and the batch-norm recalibration before any evaluation (bn_recalibrate_batches)."},
};
#define NUM_SECTIONS (sizeof section_table / sizeof section_table[0])

/* ------------------------------------------------------------------------------------------ */
/* Looking things up                                                                          */
/* ------------------------------------------------------------------------------------------ */

static int find_section(const char *name) {
    for (size_t i = 0; i < NUM_SECTIONS; i++)
        if (strcmp(section_table[i].name, name) == 0) return (int)i;
    return -1;
}

/* Index of the key in key_table, or -1. */
static int find_key(const char *section, const char *key) {
    for (size_t i = 0; i < NUM_KEYS; i++)
        if (strcmp(key_table[i].section, section) == 0 && strcmp(key_table[i].key, key) == 0)
            return (int)i;
    return -1;
}

static const char *enum_value_name(const enum_name *names, int value) {
    for (const enum_name *e = names; e->name; e++)
        if (e->value == value) return e->name;
    return NULL;
}

const char *bf_dataset_name(bf_dataset_kind k) {
    const char *name = enum_value_name(dataset_names, (int)k);
    return name ? name : "unknown";
}

const char *bf_precision_name(bf_precision p) {
    const char *name = enum_value_name(precision_names, (int)p);
    return name ? name : "unknown";
}

const char *bf_arch_name(bf_arch a) {
    const char *name = enum_value_name(arch_names, (int)a);
    return name ? name : "unknown";
}

int bf_data_slice(const bf_data_config *d) { return d->micro_batches > 1 ? d->batch_size / d->micro_batches : d->batch_size; }

int bf_data_eval_batch(const bf_data_config *d) { return d->eval_batch_size ? d->eval_batch_size : bf_data_slice(d); }

/* ------------------------------------------------------------------------------------------ */
/* Describing allowed values (for messages and the reference)                                 */
/* ------------------------------------------------------------------------------------------ */

/* The small append-only text buffer of config_keys.h: writes past the end are dropped, never
 * overflow. */
void bf_text_add(bf_text *t, const char *fmt, ...) {
    if (t->len + 1 >= t->size) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, t->size - t->len, fmt, ap);
    va_end(ap);
    if (n > 0) t->len = (size_t)n < t->size - t->len ? t->len + (size_t)n : t->size - 1;
}

bf_text bf_text_on(char *buf, size_t size) {
    buf[0] = '\0';
    return (bf_text){buf, size, 0};
}

/* "1..65536", ">= 0", "> 0", ">= 0 and < 1". */
static void add_range(bf_text *t, const key_spec *k) {
    const char *lo_op = (k->flags & MIN_OPEN) ? ">" : ">=";
    const char *hi_op = (k->flags & MAX_OPEN) ? "<" : "<=";
    if (isinf(k->max))
        bf_text_add(t, "%s %.10g", lo_op, k->min);
    else if (k->flags & (MIN_OPEN | MAX_OPEN))
        bf_text_add(t, "%s %.10g and %s %.10g", lo_op, k->min, hi_op, k->max);
    else
        bf_text_add(t, "%.10g..%.10g", k->min, k->max);
}

static void add_enum_names(bf_text *t, const enum_name *names) {
    for (const enum_name *e = names; e->name; e++) bf_text_add(t, "%s%s", e == names ? "" : ", ", e->name);
}

/* The allowed values of a key, as one phrase ("1..65536", "cnn, vgg6, ...", ...). */
static const char *describe_allowed(const key_spec *k, char *buf, size_t size) {
    bf_text t = bf_text_on(buf, size);
    switch (k->type) {
    case KEY_INT:
    case KEY_LONG:
    case KEY_FLOAT: add_range(&t, k); break;
    case KEY_BOOL: bf_text_add(&t, "true, false (or yes, no, on, off, 1, 0)"); break;
    case KEY_ENUM: add_enum_names(&t, k->names); break;
    case KEY_STRING:
        bf_text_add(&t, "%s %d characters", k->min > 0 ? "1 to" : "at most", (int)k->max);
        break;
    case KEY_INT_LIST:
        if (k->max_count && k->max_count == k->min_count)
            bf_text_add(&t, "%d comma-separated integers, each ", k->min_count);
        else
            bf_text_add(&t, "%d to %d comma-separated integers, each ", k->min_count, k->max_count ? k->max_count : BF_LIST_MAX);
        add_range(&t, k);
        if (k->flags & INCREASING) bf_text_add(&t, ", strictly increasing");
        break;
    }
    return buf;
}

static const char *type_name(key_type type) {
    switch (type) {
    case KEY_INT:
    case KEY_LONG: return "integer";
    case KEY_FLOAT: return "float";
    case KEY_BOOL: return "bool";
    case KEY_ENUM: return "enum";
    case KEY_STRING: return "string";
    case KEY_INT_LIST: return "integer list";
    }
    return "?";
}

/* Records "[section] key: <problem>" and returns BF_ERR_CONFIG. */
static bf_status key_error(const key_spec *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bf_status key_error(const key_spec *k, const char *fmt, ...) {
    char problem[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    return bf_error(BF_ERR_CONFIG, "[%s] %s: %s", k->section, k->key, problem);
}

/* "run, data, model, optim, schedule, spiking" */
static const char *section_list(char *buf, size_t size) {
    bf_text t = bf_text_on(buf, size);
    for (size_t i = 0; i < NUM_SECTIONS; i++) bf_text_add(&t, "%s%s", i ? ", " : "", section_table[i].name);
    return buf;
}

/* "arch, num_classes, dropout, ..." for one section. */
static const char *key_list(const char *section, char *buf, size_t size) {
    bf_text t = bf_text_on(buf, size);
    for (size_t i = 0; i < NUM_KEYS; i++)
        if (strcmp(key_table[i].section, section) == 0) bf_text_add(&t, "%s%s", t.len ? ", " : "", key_table[i].key);
    return buf;
}

static bf_status unknown_section_error(const char *section) {
    char allowed[256];
    return bf_error(BF_ERR_CONFIG, "unknown section [%s] (allowed: %s)", section,
                    section_list(allowed, sizeof allowed));
}

static bf_status unknown_key_error(const char *section, const char *key) {
    /* PlasticFlex's documented keys that its code never read (plasticflex.md 1, 4 and 10 Q3):
     * refused until their meaning is settled, saying why rather than only "unknown" */
    if (!strcmp(key, "conv_pool_ratio") || !strcmp(key, "mask_type"))
        return bf_error(BF_ERR_CONFIG, "[%s] %s: the PlasticFlex reference documents this key but its code never "
                        "reads it, and what it would mean is unsettled (plasticflex.md section 10, Q3); the flex "
                        "options are [model] flex_joint, flex_mask, flex_channels and threshold_mode", section, key);
    char allowed[1024];
    return bf_error(BF_ERR_CONFIG, "[%s] unknown key \"%s\" (allowed: %s)", section, key,
                    key_list(section, allowed, sizeof allowed));
}

/* ------------------------------------------------------------------------------------------ */
/* Parsing one value                                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef enum { NUM_OK, NUM_NOT_A_NUMBER, NUM_TOO_LARGE } number_result;

/* A whole decimal number filling exactly text[0..len): no fraction, exponent or trailing text. */
static number_result parse_whole(const char *s, size_t len, long long *out) {
    char buf[64];
    if (len == 0 || len >= sizeof buf) return len == 0 ? NUM_NOT_A_NUMBER : NUM_TOO_LARGE;
    memcpy(buf, s, len);
    buf[len] = '\0';
    /* strtoll would skip leading blanks and accept "0x"-less junk after the digits; require a
     * sign or digit first and nothing after the digits. */
    if (!(isdigit((unsigned char)buf[0]) || ((buf[0] == '-' || buf[0] == '+') && isdigit((unsigned char)buf[1]))))
        return NUM_NOT_A_NUMBER;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end != '\0') return NUM_NOT_A_NUMBER;
    if (errno == ERANGE) return NUM_TOO_LARGE;
    *out = v;
    return NUM_OK;
}

/* A finite decimal number with nothing after it (no "nan", "inf", "0.1x", nor strtod's hexadecimal
 * "0x1p-3": only digits, a sign, a point and an exponent's e). */
static int parse_real(const char *s, double *out) {
    if (!(isdigit((unsigned char)s[0]) || s[0] == '.' || s[0] == '-' || s[0] == '+')) return 0;
    if (s[strspn(s, "0123456789+-.eE")] != '\0') return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int in_range(const key_spec *k, double x) {
    int above = (k->flags & MIN_OPEN) ? x > k->min : x >= k->min;
    int below = isinf(k->max) ? 1 : (k->flags & MAX_OPEN) ? x < k->max : x <= k->max;
    return above && below;
}

static int ascii_equal_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

/* An integer of a KEY_INT or KEY_LONG key: whole, within the type, within the key's range. */
static bf_status parse_integer_value(const key_spec *k, const char *value, long long *out) {
    char allowed[256];
    describe_allowed(k, allowed, sizeof allowed);
    long long v = 0;
    number_result r = parse_whole(value, strlen(value), &v);
    long long type_max = k->type == KEY_INT ? INT_MAX : LONG_MAX;
    long long type_min = k->type == KEY_INT ? INT_MIN : LONG_MIN;
    if (r == NUM_NOT_A_NUMBER)
        return key_error(k, "\"%s\" is not a whole number (expected an integer %s)", value, allowed);
    if (r == NUM_TOO_LARGE || v > type_max || v < type_min)
        return key_error(k, "%s is too large (allowed: %s, at most %lld)", value, allowed, type_max);
    if (!in_range(k, (double)v)) return key_error(k, "%s is out of range (allowed: %s)", value, allowed);
    *out = v;
    return BF_OK;
}

/* The entries of a KEY_INT_LIST key ("32, 64"); "" is the empty list. */
static bf_status parse_list_value(const key_spec *k, const char *value, int *entries, int *count) {
    char allowed[256];
    describe_allowed(k, allowed, sizeof allowed);
    int n = 0;
    const char *p = value;
    while (isspace((unsigned char)*p)) p++;
    while (*p) {
        /* One entry runs to the next comma; blanks around it are ignored. */
        const char *start = p, *comma = strchr(p, ',');
        const char *stop = comma ? comma : p + strlen(p);
        const char *end = stop;
        while (end > start && isspace((unsigned char)end[-1])) end--;
        while (start < end && isspace((unsigned char)*start)) start++;
        int len = (int)(end - start);
        if (len == 0) return key_error(k, "empty entry in \"%s\" (expected %s)", value, allowed);
        if (n == BF_LIST_MAX) return key_error(k, "more than %d entries (allowed: %s)", BF_LIST_MAX, allowed);
        long long v = 0;
        number_result r = parse_whole(start, (size_t)len, &v);
        if (r == NUM_NOT_A_NUMBER)
            return key_error(k, "\"%.*s\" is not a whole number (expected %s)", len, start, allowed);
        if (r == NUM_TOO_LARGE || v > INT_MAX || v < INT_MIN || !in_range(k, (double)v))
            return key_error(k, "%.*s is out of range (allowed: %s)", len, start, allowed);
        if ((k->flags & INCREASING) && n > 0 && v <= entries[n - 1])
            return key_error(k, "%lld after %d: the entries must be strictly increasing (allowed: %s)", v,
                             entries[n - 1], allowed);
        entries[n++] = (int)v;
        if (!comma) break;
        p = comma + 1;
        if (*p == '\0' || strspn(p, " \t") == strlen(p))
            return key_error(k, "empty entry in \"%s\" (expected %s)", value, allowed);
    }
    if (n < k->min_count)
        return key_error(k, "needs at least %d entr%s (allowed: %s)", k->min_count, k->min_count == 1 ? "y" : "ies", allowed);
    if (k->max_count && n > k->max_count)
        return key_error(k, "takes at most %d entries, got %d (allowed: %s)", k->max_count, n, allowed);
    *count = n;
    return BF_OK;
}

/* Parses `value` for key `k` and stores it in cfg. The field is written only when the whole value
 * is valid; problems are recorded as "[section] key: problem (allowed: ...)". */
static bf_status set_value(bf_config *cfg, const key_spec *k, const char *value) {
    char *field = (char *)cfg + k->offset;
    char allowed[256];
    describe_allowed(k, allowed, sizeof allowed);

    switch (k->type) {
    case KEY_INT:
    case KEY_LONG: {
        long long v = 0;
        BF_TRY(parse_integer_value(k, value, &v));
        if (k->type == KEY_INT)
            *(int *)field = (int)v;
        else
            *(long *)field = (long)v;
        return BF_OK;
    }
    case KEY_FLOAT: {
        double d;
        if (!parse_real(value, &d))
            return key_error(k, "\"%s\" is not a number (expected a float %s)", value, allowed);
        /* Check the value as it will be stored: 1e-50 becomes 0 and 1e40 infinity as floats. */
        float f = (float)d;
        if (!isfinite(f))
            return key_error(k, "%s is too large for a float (at most about 3.4e38; allowed: %s)", value, allowed);
        if (!in_range(k, (double)f))
            return key_error(k, "%s is out of range (allowed: %s%s)", value, allowed,
                             f == 0 && d != 0 ? "; it is below the smallest float and reads as 0" : "");
        *(float *)field = f;
        return BF_OK;
    }
    case KEY_BOOL: {
        static const char *const truthy[] = {"true", "yes", "on", "1"};
        static const char *const falsy[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < 4; i++) {
            if (ascii_equal_nocase(value, truthy[i])) return *(int *)field = 1, BF_OK;
            if (ascii_equal_nocase(value, falsy[i])) return *(int *)field = 0, BF_OK;
        }
        return key_error(k, "\"%s\" is not a boolean (allowed: %s)", value, allowed);
    }
    case KEY_ENUM:
        for (const enum_name *e = k->names; e->name; e++)
            if (strcmp(e->name, value) == 0) return *(int *)field = e->value, BF_OK;
        return key_error(k, "\"%s\" is not allowed (allowed: %s)", value, allowed);
    case KEY_STRING: {
        size_t len = strlen(value);
        if (len < (size_t)k->min) return key_error(k, "must not be empty");
        if (len > (size_t)k->max)
            return key_error(k, "is %zu characters long (at most %d characters)", len, (int)k->max);
        /* Clear the whole array so that two equal configs are equal byte for byte. */
        memset(field, 0, BF_PATH_MAX);
        memcpy(field, value, len);
        return BF_OK;
    }
    case KEY_INT_LIST: {
        int entries[BF_LIST_MAX] = {0}, count = 0;
        BF_TRY(parse_list_value(k, value, entries, &count));
        memcpy(field, entries, sizeof entries);
        *(int *)((char *)cfg + k->count_offset) = count;
        return BF_OK;
    }
    }
    return bf_error(BF_ERR_INTERNAL, "[%s] %s: unknown key type", k->section, k->key);
}

/* ------------------------------------------------------------------------------------------ */
/* Formatting one value (for printing, and for re-checking a struct in bf_config_validate)    */
/* ------------------------------------------------------------------------------------------ */

/* Shortest "%g" text that reads back as the same float: 0.1f prints "0.1", not "0.100000001". */
static void format_float(float f, char *buf, size_t size) {
    /* a whole number as one: 300, not 3e+02 (the magnitude first: a float past long's range must
     * not be converted) */
    if (fabsf(f) < 1e7f && f == (float)(long)f) {
        snprintf(buf, size, "%ld", (long)f);
        return;
    }
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, size, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) return;
    }
}

/* The value of key k in cfg as INI text. A value no INI text could produce (an enum number
 * without a name, a bool of 2, a string without its terminator) is written so that set_value
 * rejects it, which is how bf_config_validate finds it. */
static void format_value(const bf_config *cfg, const key_spec *k, char *buf, size_t size) {
    const char *field = (const char *)cfg + k->offset;
    bf_text t = bf_text_on(buf, size);
    switch (k->type) {
    case KEY_INT: bf_text_add(&t, "%d", *(const int *)field); break;
    case KEY_LONG: bf_text_add(&t, "%ld", *(const long *)field); break;
    case KEY_FLOAT: format_float(*(const float *)field, buf, size); break;
    case KEY_BOOL: {
        int v = *(const int *)field;
        if (v == 0 || v == 1)
            bf_text_add(&t, "%s", v ? "true" : "false");
        else
            bf_text_add(&t, "%d", v);
        break;
    }
    case KEY_ENUM: {
        const char *name = enum_value_name(k->names, *(const int *)field);
        if (name)
            bf_text_add(&t, "%s", name);
        else
            bf_text_add(&t, "%d", *(const int *)field);
        break;
    }
    case KEY_STRING:
        if (memchr(field, '\0', BF_PATH_MAX))
            bf_text_add(&t, "%s", field);
        else
            bf_text_add(&t, "%.*s", BF_PATH_MAX, field); /* too long: set_value will refuse it */
        break;
    case KEY_INT_LIST: {
        const int *entries = (const int *)field;
        int count = *(const int *)((const char *)cfg + k->count_offset);
        for (int i = 0; i < count && i < BF_LIST_MAX; i++) bf_text_add(&t, "%s%d", i ? "," : "", entries[i]);
        break;
    }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults                                                                                   */
/* ------------------------------------------------------------------------------------------ */

void bf_config_defaults(bf_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NUM_KEYS; i++) {
        /* Every default is valid INI text (tests/test_config.c checks it); a failure here would
         * be a typo in key_table, which the test catches. */
        bf_status st = set_value(cfg, &key_table[i], key_table[i].def);
        (void)st;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Loading a file                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* What the inih callbacks share while one file is parsed. */
/* libinih reads lines into a buffer fixed when it was built (200 bytes in Debian's), shorter than a
 * long path (string keys allow 511 characters). read_line reads such a line whole, keeps its value
 * here and hands inih "key =" with this mark for a value, which handle_key swaps back. */
#define LONG_LINE_MAX 2048
#define LONG_VALUE_MARK "\x1e"

typedef struct load_ctx {
    FILE *file;
    const char *path;
    bf_config *cfg;
    int line;                    /* number of the line inih is processing */
    int line_indented;           /* that line starts with whitespace */
    int failed;                  /* a problem was recorded with bf_error: stop reading */
    int failed_line;
    int last_key;                /* index of the previous key handled, -1 before the first */
    int set_on_line[NUM_KEYS];   /* where each key was set in this file (0 = not yet) */
    char long_value[LONG_LINE_MAX]; /* the value of a "key = value" line longer than inih's buffer */
    int has_long_value;          /* handle_key takes long_value for LONG_VALUE_MARK */
} load_ctx;

/* Records "path:line: <the current message>" as the load's error and stops the parse. */
static void fail_here(load_ctx *ctx) {
    bf_error_context(BF_ERR_CONFIG, "%s:%d", ctx->path, ctx->line);
    ctx->failed = 1;
    ctx->failed_line = ctx->line;
}

/* A section header "[name]" on this line must name a known section. inih would only tell us the
 * section with the next key, and not at all for an empty section. */
static void check_section_header(load_ctx *ctx, const char *line) {
    const char *p = line;
    if (ctx->line == 1 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
        p += 3; /* UTF-8 byte order mark, which inih skips too */
    while (isspace((unsigned char)*p)) p++;
    if (*p != '[') return;
    const char *close = strchr(p, ']');
    if (!close) return; /* inih reports this line as malformed */
    char name[64];
    int len = (int)(close - p - 1);
    snprintf(name, sizeof name, "%.*s", len, p + 1);
    if (len >= (int)sizeof name || find_section(name) < 0) {
        unknown_section_error(name);
        fail_here(ctx);
        return;
    }
    /* inih drops whatever follows the "]": a key written there ("[run] epochs = 7") would be lost */
    const char *rest = close + 1;
    while (*rest == ' ' || *rest == '\t') rest++;
    size_t rest_len = strcspn(rest, "\r\n");
    if (rest_len > 0 && *rest != ';') {
        bf_error(BF_ERR_CONFIG, "text after the section header [%s]: \"%.*s\" (a key goes on a line of its own; a "
                 "comment starts with ';')", name, (int)(rest_len > 60 ? 60 : rest_len), rest);
        fail_here(ctx);
    }
}

/* A line longer than inih's buffer (size bytes), whose start is in buf: reads the rest. A comment
 * becomes an empty comment; a "key = value" line keeps its value (after the first '=' or ':', with
 * blanks and a " ;" comment trimmed, as inih trims) in ctx->long_value and leaves "key ="
 * LONG_VALUE_MARK in buf. 0 (with bf_error) for any other line or one over LONG_LINE_MAX. */
static int take_long_line(load_ctx *ctx, char *buf, int size) {
    char line[LONG_LINE_MAX + 2];
    size_t len = strlen(buf);
    memcpy(line, buf, len + 1);
    while (len < sizeof line - 1 && !strchr(line + len - 1, '\n') && fgets(line + len, (int)(sizeof line - len), ctx->file))
        len += strlen(line + len);
    if (len >= sizeof line - 1 && line[len - 1] != '\n') {
        bf_error(BF_ERR_CONFIG, "line is longer than %d characters", LONG_LINE_MAX);
        return 0;
    }
    const char *first = line + strspn(line, " \t");
    if (*first == ';' || *first == '#') { /* a long comment: inih gets an empty one */
        snprintf(buf, (size_t)size, ";\n");
        return 1;
    }
    size_t delim = strcspn(line, "=:");
    if (line[delim] == '\0' || *first == '[' || delim + 4 > (size_t)size) {
        bf_error(BF_ERR_CONFIG, "line is longer than %d characters and is not a \"key = value\" line", size - 2);
        return 0;
    }
    char *value = line + delim + 1;
    value += strspn(value, " \t");
    for (char *c = value; *c; c++) /* an inline comment: ';' after a blank */
        if (*c == ';' && c > value && (c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    size_t vlen = strlen(value);
    while (vlen > 0 && isspace((unsigned char)value[vlen - 1])) value[--vlen] = '\0';
    snprintf(ctx->long_value, sizeof ctx->long_value, "%s", value);
    ctx->has_long_value = 1;
    snprintf(buf, (size_t)size, "%.*s=" LONG_VALUE_MARK "\n", (int)delim, line);
    return 1;
}

/* inih's line reader (an fgets replacement) that counts lines. Returning NULL ends the parse,
 * which is how the first problem stops it. */
static char *read_line(char *buf, int size, void *stream) {
    load_ctx *ctx = stream;
    if (ctx->failed || !fgets(buf, size, ctx->file)) return NULL;
    ctx->line++;
    size_t len = strlen(buf);
    if (len > 0 && buf[len - 1] != '\n') {
        /* Either the last line of the file without a newline, or a line longer than inih's line
         * buffer, which inih would split into two lines and so spoil every later line number. */
        int next = getc(ctx->file);
        if (next != EOF) {
            ungetc(next, ctx->file);
            if (!take_long_line(ctx, buf, size)) {
                fail_here(ctx);
                return NULL;
            }
        }
    }
    ctx->line_indented = isspace((unsigned char)buf[0]) && buf[0] != '\n' && buf[0] != '\r';
    check_section_header(ctx, buf);
    return ctx->failed ? NULL : buf;
}

/* inih's handler: called with each "key = value" of the file. Returns 0 on a problem. */
static int handle_key(void *user, const char *section, const char *key, const char *value
#if INI_HANDLER_LINENO
                      , int lineno /* unused: read_line counts lines whatever the build */
#endif
) {
#if INI_HANDLER_LINENO
    (void)lineno;
#endif
    load_ctx *ctx = user;
    if (ctx->failed) return 0;
    if (section[0] == '\0') {
        char allowed[256];
        bf_error(BF_ERR_CONFIG, "key \"%s\" is outside any section (put it under one of: %s)", key,
                 section_list(allowed, sizeof allowed));
        fail_here(ctx);
        return 0;
    }
    if (find_section(section) < 0) { /* normally caught at the header by read_line */
        unknown_section_error(section);
        fail_here(ctx);
        return 0;
    }
    int i = find_key(section, key);
    if (i < 0) {
        unknown_key_error(section, key);
        fail_here(ctx);
        return 0;
    }
    const key_spec *k = &key_table[i];
    if (value && ctx->has_long_value && strcmp(value, LONG_VALUE_MARK) == 0) value = ctx->long_value;
    ctx->has_long_value = 0;
    if (!value) { /* only with a libinih built with INI_ALLOW_NO_VALUE */
        key_error(k, "missing \"= value\"");
        fail_here(ctx);
        return 0;
    }
    if (ctx->set_on_line[i]) {
        /* inih reads an indented line after a key as more of that key's value (as Python's
         * configparser does); say so rather than "set twice". */
        if (ctx->line_indented && ctx->last_key == i)
            key_error(k, "this line starts with whitespace, so it is read as a continuation of "
                         "the value on line %d; remove the indentation", ctx->set_on_line[i]);
        else
            key_error(k, "set twice (on line %d and again here)", ctx->set_on_line[i]);
        fail_here(ctx);
        return 0;
    }
    for (size_t j = 0; j < sizeof key_table / sizeof key_table[0]; j++) /* an alias (decay, spiking_decay) */
        if ((int)j != i && key_table[j].offset == k->offset && ctx->set_on_line[j]) {
            key_error(k, "set twice: line %d set it as [%s] %s, its alias", ctx->set_on_line[j], key_table[j].section,
                      key_table[j].key);
            fail_here(ctx);
            return 0;
        }
    if (set_value(ctx->cfg, k, value) != BF_OK) {
        fail_here(ctx);
        return 0;
    }
    ctx->set_on_line[i] = ctx->line;
    ctx->last_key = i;
    return 1;
}

/* Bytes the line reader would misread without a word: a NUL (fgets ends the line's text there)
 * and a carriage return not followed by a line feed (an old Mac file is one long line, most of it
 * dropped). Rewinds the file. */
static bf_status check_line_ends(FILE *file, const char *path) {
    int line = 1, c, previous = 0;
    bf_status st = BF_OK;
    while ((c = getc(file)) != EOF) { /* a CR at the very end is trailing blank */
        if (previous == '\r' && c != '\n') {
            st = bf_error(BF_ERR_CONFIG, "%s:%d: a carriage return ends this line without a line feed (old Mac line "
                          "ends: save the file with LF or CRLF line ends)", path, line);
            break;
        }
        if (c == '\0') {
            st = bf_error(BF_ERR_CONFIG, "%s:%d: a NUL byte (not a text file?)", path, line);
            break;
        }
        if (c == '\n') line++;
        previous = c;
    }
    rewind(file);
    return st;
}

bf_status bf_config_load(const char *path, bf_config *cfg) {
    if (!path || !cfg) return bf_error(BF_ERR_ARG, "bf_config_load: path and cfg must not be NULL");
    if (strlen(path) >= BF_PATH_MAX)
        return bf_error(BF_ERR_ARG, "config path is longer than %d characters: %s", BF_PATH_MAX - 1, path);
    FILE *file = fopen(path, "r");
    if (!file) return bf_error(BF_ERR_IO, "cannot open config file %s: %s", path, strerror(errno));
    struct stat info; /* a directory opens for reading on Linux, and fails only at the first read */
    if (fstat(fileno(file), &info) == 0 && S_ISDIR(info.st_mode)) {
        fclose(file);
        return bf_error(BF_ERR_IO, "config file %s is a directory (give the .ini file)", path);
    }
    bf_status ends = check_line_ends(file, path);
    if (ends != BF_OK) {
        fclose(file);
        return ends;
    }

    /* Parse into a copy, so that cfg is untouched when the file is refused. */
    bf_config parsed;
    bf_config_defaults(&parsed);
    memcpy(parsed.source, path, strlen(path) + 1);

    load_ctx ctx = {.file = file, .path = path, .cfg = &parsed, .last_key = -1};
    int first_error_line = ini_parse_stream(read_line, &ctx, handle_key, &ctx);
    int read_failed = ferror(file);
    fclose(file);

    if (first_error_line == -2) return bf_error(BF_ERR_OOM, "%s: out of memory while parsing", path);
    /* inih goes on after a malformed line, so its first error may come before ours. */
    if (first_error_line > 0 && (!ctx.failed || first_error_line < ctx.failed_line))
        return bf_error(BF_ERR_CONFIG,
                        "%s:%d: cannot parse this line (expected \"[section]\", \"key = value\" or a comment)",
                        path, first_error_line);
    if (ctx.failed) return BF_ERR_CONFIG;
    if (read_failed) return bf_error(BF_ERR_IO, "error reading config file %s: %s", path, strerror(errno));
    for (size_t i = 0; i < NUM_KEYS; i++) parsed.key_line[i] = ctx.set_on_line[i];
    *cfg = parsed;
    return BF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* --set overrides                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* Copies s[0..len) without surrounding whitespace into buf (truncating to size). */
static void copy_trimmed(char *buf, size_t size, const char *s, size_t len) {
    while (len > 0 && isspace((unsigned char)*s)) s++, len--;
    while (len > 0 && isspace((unsigned char)s[len - 1])) len--;
    if (len >= size) len = size - 1;
    memcpy(buf, s, len);
    buf[len] = '\0';
}

bf_status bf_config_set(bf_config *cfg, const char *assignment) {
    if (!cfg || !assignment) return bf_error(BF_ERR_ARG, "bf_config_set: cfg and assignment must not be NULL");
    const char *equals = strchr(assignment, '=');
    const char *dot = equals ? memchr(assignment, '.', (size_t)(equals - assignment)) : NULL;
    if (!equals || !dot)
        return bf_error(BF_ERR_CONFIG, "--set %s: expected section.key=value (for example --set optim.lr=0.01)",
                        assignment);

    char section[64], key[64], value[BF_PATH_MAX + 1];
    copy_trimmed(section, sizeof section, assignment, (size_t)(dot - assignment));
    copy_trimmed(key, sizeof key, dot + 1, (size_t)(equals - dot - 1));
    size_t value_len = strlen(equals + 1);
    if (value_len >= sizeof value)
        return bf_error(BF_ERR_CONFIG, "--set %.*s=...: the value is longer than %d characters",
                        (int)(equals - assignment), assignment, (int)sizeof value - 1);
    copy_trimmed(value, sizeof value, equals + 1, value_len);

    bf_status st;
    int i = find_key(section, key);
    if (find_section(section) < 0)
        st = unknown_section_error(section);
    else if (i < 0)
        st = unknown_key_error(section, key);
    else if (value[0] == ';' || strstr(value, " ;") || strstr(value, "\t;"))
        /* what a file line could not hold: the run's config.ini would read it back cut short */
        st = bf_error(BF_ERR_CONFIG, "[%s] %s: a value cannot start a comment (';' at its start or after a blank), as "
                      "it could not in a config file", section, key);
    else
        st = set_value(cfg, &key_table[i], value);
    if (st == BF_OK) cfg->key_line[i] = -1;
    return st == BF_OK ? BF_OK : bf_error_context(st, "--set %s", assignment);
}

/* ------------------------------------------------------------------------------------------ */
/* Validation                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* The key table as config_relations.c reads it (config_keys.h). */
int bf_config_key_count(void) { return (int)NUM_KEYS; }
const char *bf_config_key_section(int i) { return key_table[i].section; }
const char *bf_config_key_name(int i) { return key_table[i].key; }

const char *bf_config_value_text(const bf_config *cfg, const char *section, const char *key, char *buf, size_t size) {
    int i = find_key(section, key);
    if (i < 0) return NULL;
    format_value(cfg, &key_table[i], buf, size);
    return buf;
}

const char *bf_config_name_as_set(const bf_config *cfg, const char *section, const char *key) {
    int i = find_key(section, key);
    if (i < 0 || cfg->key_line[i] != 0) return key;
    for (size_t j = 0; j < NUM_KEYS; j++) /* its alias (spiking_decay for decay), where that was set */
        if (j != (size_t)i && key_table[j].offset == key_table[i].offset && cfg->key_line[j] != 0) return key_table[j].key;
    return key;
}

int bf_config_key_line(const bf_config *cfg, const char *section, const char *key) {
    int i = find_key(section, key);
    return i < 0 ? 0 : cfg->key_line[i];
}

const char *bf_config_enum_text(const char *section, const char *key, int value) {
    int i = find_key(section, key);
    return i < 0 || key_table[i].type != KEY_ENUM ? NULL : enum_value_name(key_table[i].names, value);
}

void bf_config_locate_keys(const bf_config *cfg) {
    char message[sizeof((bf_config *)0)->source + 1024], where[1024];
    snprintf(message, sizeof message, "%s", bf_last_error());
    bf_text t = bf_text_on(where, sizeof where);
    int named[BF_CONFIG_KEY_SLOTS] = {0}, count = 0;
    for (const char *p = strchr(message, '['); p; p = strchr(p + 1, '[')) {
        char section[64], key[64];
        if (sscanf(p, "[%63[a-z_0-9]] %63[A-Za-z_0-9]", section, key) != 2) continue;
        int i = find_key(section, key);
        if (i < 0 || named[i]) continue;
        named[i] = 1;
        int line = cfg->key_line[i];
        bf_text_add(&t, "%s[%s] %s: ", count++ ? "; " : "", section, key);
        if (line > 0)
            bf_text_add(&t, "%s:%d", cfg->source, line);
        else
            bf_text_add(&t, "%s", line < 0 ? "--set" : "default");
    }
    if (count) bf_error(BF_ERR_CONFIG, "%s (set where: %s)", message, where);
}

static bf_status invalid(const bf_config *cfg, bf_status st) {
    if (cfg->source[0]) return bf_error_context(st, "invalid configuration (from %s and overrides)", cfg->source);
    return bf_error_context(st, "invalid configuration");
}

/* An error about a relation between keys, with where each key it names was set. */
static bf_status invalid_relation(const bf_config *cfg, bf_status st) {
    bf_config_locate_keys(cfg);
    return invalid(cfg, st);
}

bf_status bf_config_validate(const bf_config *cfg) {
    if (!cfg) return bf_error(BF_ERR_ARG, "bf_config_validate: cfg must not be NULL");

    /* Every field must hold a value its key accepts. A struct may have been filled by code rather
     * than by the parser, so each value is written as INI text and parsed again, with the very
     * checks a file line gets. */
    bf_config scratch = *cfg;
    for (size_t i = 0; i < NUM_KEYS; i++) {
        const key_spec *k = &key_table[i];
        if (k->type == KEY_INT_LIST) {
            int count = *(const int *)((const char *)cfg + k->count_offset);
            if (count < 0 || count > BF_LIST_MAX)
                return invalid(cfg, key_error(k, "holds %d entries (allowed: 0..%d)", count, BF_LIST_MAX));
        }
        char value[BF_PATH_MAX + 64];
        format_value(cfg, k, value, sizeof value);
        bf_status st = set_value(&scratch, k, value);
        if (st != BF_OK) return invalid(cfg, st);
    }

    /* Relations between keys (config_relations.c). */
    bf_status relations = bf_config_check_relations(cfg);
    if (relations != BF_OK) return invalid_relation(cfg, relations);
    return BF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Printing                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Every key of cfg (changed_only: those whose value is not the default's) as an INI file. */
static void print_keys(const bf_config *cfg, int changed_only, FILE *out) {
    int width = 0; /* align the '=' signs */
    for (size_t i = 0; i < NUM_KEYS; i++) {
        int len = (int)strlen(key_table[i].key);
        if (len > width) width = len;
    }
    bf_config defaults;
    bf_config_defaults(&defaults);
    const char *section = NULL;
    for (size_t i = 0; i < NUM_KEYS; i++) {
        const key_spec *k = &key_table[i];
        /* an alias (use_STBP) shares its field with an earlier key: printing it too would write a
         * line that the config refuses when read back */
        int alias = 0;
        for (size_t j = 0; j < i && !alias; j++) alias = key_table[j].offset == k->offset;
        if (alias) continue;
        char value[BF_PATH_MAX + 64], default_value[BF_PATH_MAX + 64];
        format_value(cfg, k, value, sizeof value);
        format_value(&defaults, k, default_value, sizeof default_value);
        if (changed_only && strcmp(value, default_value) == 0) continue;
        if (!section /* a section's header before its first key printed */ || strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(out, "\n[%s]\n", section);
        }
        /* "key =" with nothing after it is how an empty string or list reads back. */
        fprintf(out, "%-*s =%s%s\n", width, k->key, value[0] ? " " : "", value);
    }
}

void bf_config_print(const bf_config *cfg, FILE *out) {
    fprintf(out, "# bioflex configuration%s%s\n", cfg->source[0] ? " resolved from " : "", cfg->source);
    print_keys(cfg, 0, out);
}

void bf_config_print_changed(const bf_config *cfg, FILE *out) {
    fprintf(out, "# the keys%s%s not at their defaults (the run directory's config.ini holds every key)\n",
            cfg->source[0] ? " of " : "", cfg->source);
    print_keys(cfg, 1, out);
}

void bf_config_print_reference(FILE *out) {
    fprintf(out, "# bioflex configuration reference\n\n"
                 "A run is configured by an INI file (`bioflex-train configs/quickstart.ini`) and by\n"
                 "`--set section.key=value` overrides. Keys not given keep the defaults below. Comments start\n"
                 "with `;` or `#` at the beginning of a line, or with ` ;` after a value. An unknown section\n"
                 "or key, or a value outside the allowed ones, stops the run with the file, line and key; a\n"
                 "relation between keys that does not hold, with where each of its keys was set. So does a\n"
                 "key set to other than its default where the run would not read it (another arch's,\n"
                 "schedule's, optimiser's, neuron's or dataset's key; a [butd] key without a BU-TD network):\n"
                 "it would change nothing. A section header stands on a line of its own (a comment may follow).\n"
                 "Lines may be up to 2048 characters long (a long `dir` path, say); a longer one is refused.\n");
    for (size_t s = 0; s < NUM_SECTIONS; s++) {
        fprintf(out, "\n## [%s]\n\n%s\n\n", section_table[s].name, section_table[s].doc);
        fprintf(out, "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n");
        for (size_t i = 0; i < NUM_KEYS; i++) {
            const key_spec *k = &key_table[i];
            if (strcmp(k->section, section_table[s].name) != 0) continue;
            char allowed[256];
            describe_allowed(k, allowed, sizeof allowed);
            fprintf(out, "| `%s` | %s | %s%s%s | %s | %s |\n", k->key, type_name(k->type),
                    k->def[0] ? "`" : "", k->def[0] ? k->def : "(empty)", k->def[0] ? "`" : "", allowed, k->doc);
        }
    }
}
