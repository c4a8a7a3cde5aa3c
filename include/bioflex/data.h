/* data.h - datasets and the batch loader.
 *
 * A dataset is held in memory as uint8 pixels (IDX, CIFAR-10), generated on demand
 * (procedural), or kept as JPEG file paths decoded by the loader's workers (image.h). The loader turns it into batches on the host: worker threads fill a ring of
 * `prefetch` batches ahead of the training step, either normalised floats (NCHW) or, for 3-channel
 * image datasets that ask for it (bf_loader_options.u8_hwc), raw uint8 NHWC pixels that the device
 * normalises itself (image_u8_to_float; batch_upload.h) - 4x less host memory and copy volume. Which samples form a batch and how each is
 * augmented are pure functions of (seed, epoch, position) (see hash.h), never of thread timing,
 * so runs repeat exactly and a resumed run sees the same data order. */
#ifndef BIOFLEX_DATA_H
#define BIOFLEX_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "bioflex/config.h"
#include "bioflex/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bf_split { BF_SPLIT_TRAIN = 0, BF_SPLIT_TEST = 1 } bf_split;

/* File-backed (JPEG) datasets: paths and transform, see image.h. */
typedef struct bf_image_files bf_image_files;

typedef struct bf_dataset {
    char name[64];
    int num_samples;
    int c, h, w;
    int num_classes;
    float mean[3], std[3];       /* per-channel statistics of the training split, pixel scale [0, 1] */
    uint8_t *pixels;             /* num_samples * c*h*w, CHW per sample; NULL for procedural */
    int32_t *labels;             /* num_samples */
    uint64_t procedural_seed;    /* procedural: content is a function of (seed, split, index) */
    int split;
    /* Multi-task datasets (Multi-MNIST: 2 tasks of 10 classes; CelebA: 40 attributes of 2 classes);
     * num_tasks = 0 for an ordinary single-task dataset. The label of sample i for task k is
     * task_labels[i * num_tasks + k]; num_classes = task_classes and labels[] holds task 0's labels. */
    int num_tasks;
    int task_classes;
    int32_t *task_labels;        /* num_samples * num_tasks, NULL when num_tasks = 0 */
    bf_image_files *files;       /* JPEG datasets: decoded on demand by the loader (image.h); else NULL */
    int skipped_images;          /* datasets decoded at open (celeba): unreadable images left out, warned */
} bf_dataset;

/* Opens one split as configured (path, limits, procedural sizes). Errors name the file and the
 * check that failed (missing file, bad magic, short file, label out of range, ...). */
bf_status bf_dataset_open(const bf_data_config *cfg, long seed, bf_split split, bf_dataset **out);
void bf_dataset_free(bf_dataset *d);

/* The image shape and class count a config's dataset has, without reading any file (--dry-run,
 * and datasets that cannot be opened yet). */
void bf_dataset_shape(const bf_data_config *cfg, int *c, int *h, int *w, int *num_classes);

/* The number of tasks a config's dataset has (2 for multi_mnist and multi_fashion_mnist, 40 for
 * celeba, 0 for a single-task dataset), without reading any file. */
int bf_dataset_num_tasks(const bf_data_config *cfg);

/* Writes sample `index` as floats in [0, 1] (CHW) into out. */
void bf_dataset_sample(const bf_dataset *d, int index, float *out);

typedef struct bf_batch {
    int n;               /* samples in this batch (the last batch of an epoch may be smaller) */
    int index;           /* batch number within the epoch */
    int position;        /* the epoch position of its first sample (with data parallelism in the order of
                            the whole epoch, every rank's batches included): keys the model's draws */
    float *images;       /* n * c*h*w, normalised, host memory; NULL when the loader emits uint8 */
    uint8_t *pixels;     /* u8_hwc loaders: n * h*w*3 bytes, NHWC RGB, augmented but not normalised (the
                            input of image_u8_to_float), in memory from bf_loader_options.host_alloc;
                            else NULL */
    int32_t *labels;     /* n; for a multi-task dataset the label of sample j for task tasks[j] */
    int32_t *tasks;      /* n task indices (the BU-TD instruction); NULL for a single-task dataset */
    int skipped;         /* file datasets: images of this batch replaced because they could not be decoded */
} bf_batch;

#define BF_TASK_RANDOM (-1) /* bf_loader_options.task: a random task per sample */

/* Where a loader's ring of uint8 batches lives: the CUDA backend hands out page-locked memory
 * (cudaHostAlloc) so that copies run asynchronously on their own stream; NULL functions mean
 * malloc/free. Called only by bf_loader_create and bf_loader_destroy, on the caller's thread. */
typedef struct bf_host_allocator {
    void *(*alloc)(void *ctx, size_t bytes); /* NULL on failure */
    void (*free)(void *ctx, void *p);
    void *ctx;
} bf_host_allocator;

typedef struct bf_loader_options {
    int batch_size;
    int threads;
    int prefetch;
    int shuffle;         /* permute every epoch with (seed, epoch) */
    int drop_last;       /* drop a last incomplete batch (training) */
    int augment_flip;
    int augment_crop_pad;
    int normalize;
    float noise_std;     /* additive N(0, noise_std^2) after normalisation, from (seed, epoch, position) */
    long seed;
    int rank, world;     /* data parallelism: this rank's shard of every global batch of batch_size * world
                            positions (world 0 or 1 = the whole epoch) */
    int task;            /* multi-task datasets: -1 = a random task per sample from (seed, epoch, position)
                            (training), k >= 0 = every sample gets task k (guided evaluation); ignored for
                            single-task datasets. A zero-initialised options struct means task 0:
                            set BF_TASK_RANDOM explicitly to train on random tasks */
    int u8_hwc;          /* 1: batches of uint8 NHWC pixels (bf_batch.pixels) instead of floats; crop, flip
                            and the sample order are the float path's, normalisation is left to the device
                            (bf_loader_image_format gives mean and std). Needs bf_loader_u8_applies */
    bf_host_allocator host_alloc; /* memory of the uint8 ring (u8_hwc); zero = malloc */
} bf_loader_options;

/* Whether a dataset can be loaded as uint8 with these options: 3-channel images held as bytes (JPEG
 * files, CIFAR-10, gray_to_rgb digits) and no input noise (noise is added to normalised floats). */
int bf_loader_u8_applies(const bf_dataset *d, const bf_loader_options *opt);

/* What a loader's batches hold, for whoever turns them into the model's input. */
typedef struct bf_image_format {
    int u8_hwc;             /* batches carry pixels (uint8 NHWC RGB), else images (float NCHW) */
    int c, h, w;
    float mean[3], std[3];  /* the normalisation still to apply to u8 batches: the dataset's statistics,
                               or 0 and 1 when the loader was created without normalize */
} bf_image_format;

typedef struct bf_loader bf_loader;

bf_status bf_loader_create(const bf_dataset *d, const bf_loader_options *opt, bf_loader **out);
/* Whether the epochs started from now on are shuffled; returns the previous setting. */
int bf_loader_set_shuffle(bf_loader *l, int shuffle);
/* The options a config gives a split: training batches shuffled and augmented, test batches in
 * order (shuffled only for [run] val_batches), noise on the splits noise_splits names; one rank,
 * task 0. Callers adjust what is theirs (data-parallel rank, random tasks). */
bf_loader_options bf_loader_options_from_config(const bf_config *cfg, bf_split split);
void bf_loader_destroy(bf_loader *l);
bf_image_format bf_loader_image_format(const bf_loader *l);
/* Batches per epoch. */
int bf_loader_num_batches(const bf_loader *l);
/* Starts an epoch at batch `first_batch` (non-zero when resuming inside an epoch). Any batches
 * of a previous epoch not yet consumed are discarded. */
bf_status bf_loader_start_epoch(bf_loader *l, int epoch, int first_batch);
/* Blocks until the next batch of the epoch is ready; *out is NULL after the last batch.
 * The batch stays valid until bf_loader_release. wait_ms (nullable) returns the time blocked. */
bf_status bf_loader_next(bf_loader *l, bf_batch **out, double *wait_ms);
void bf_loader_release(bf_loader *l, bf_batch *b);
/* Images of a file-backed dataset skipped as undecodable (each replaced by another sample) in the
 * batches bf_loader_next has handed out since the loader was created: the same in every run over
 * the same files, however far the workers read ahead. */
long bf_loader_skipped_images(const bf_loader *l);

#ifdef __cplusplus
}
#endif
#endif
