/* loader.c - the batch loader: worker threads prepare batches ahead of the training step, as
 * normalised floats or (u8_hwc) as raw NHWC bytes that the device converts (batch_upload.h).
 *
 * Determinism first. What a batch contains is a pure function of (seed, epoch, batch index):
 *  - the epoch's order is a Fisher-Yates shuffle driven by bf_seed_derive(seed, SHUFFLE, epoch),
 *  - the sample at position p of epoch e is augmented with bf_seed_derive(seed, AUGMENT, e:p).
 * Thread timing only decides *when* a batch is ready, never *what* it holds, so 1 thread and 8
 * threads give bit-identical batches and a run resumed at batch k sees batches k, k+1, ... of
 * the same epoch.
 *
 * Concurrency, in one paragraph. A ring of `prefetch` slots each holds one batch buffer. One mutex
 * guards all bookkeeping. Workers claim batch numbers strictly in order (next_assign++) into any
 * FREE slot, fill it without the lock, and mark it READY. The consumer (one thread) waits for the
 * slot holding batch next_consume, so batches come out in order whichever worker finished first;
 * it marks the slot HELD until bf_loader_release makes it FREE again. Because batch numbers are
 * handed out in order, the batch the consumer waits for is always already in a slot or the next
 * to be claimed - no deadlock as long as the consumer does not hold every slot (reported as an
 * error instead of hanging). Starting an epoch bumps a generation number: work of the old epoch
 * that is still being filled is thrown away when it finishes, and its READY slots are freed.
 * Waiting uses two condition variables: `work_available` for workers, `batch_done` for the
 * consumer. Nothing spins.
 *
 * Memory: every slot's buffers are allocated once by bf_loader_create (the uint8 ring from the
 * caller's allocator, page-locked on CUDA); filling a batch allocates nothing. */
#include "bioflex/data.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bioflex/hash.h"
#include "bioflex/image.h"

/* Bounds on the options: more threads than this would only contend for the lock. */
#define LOADER_MAX_THREADS 64

typedef enum slot_state {
    SLOT_FREE,    /* available to a worker */
    SLOT_FILLING, /* a worker writes it (without holding the lock) */
    SLOT_READY,   /* filled, waiting for the consumer */
    SLOT_HELD     /* returned by bf_loader_next, not yet released */
} slot_state;

typedef struct loader_slot {
    bf_batch batch;
    slot_state state;
    uint64_t generation; /* the epoch start this slot's content belongs to */
    bf_status status;    /* outcome of filling, reported by bf_loader_next */
    char error[256];     /* the worker's message when status != BF_OK (messages are per thread) */
} loader_slot;

typedef struct loader_worker {
    bf_loader *loader;
    float *scratch; /* one sample before augmentation */
    bf_image_worker image; /* JPEG datasets: this thread's decoder and buffers */
} loader_worker;

struct bf_loader {
    const bf_dataset *data;
    bf_loader_options opt;
    size_t sample_floats; /* c*h*w */
    int num_batches;
    int *order;           /* position in the epoch -> sample index */
    atomic_long warned;   /* JPEG datasets: undecodable images met by any worker (the first are named) */
    long skipped;         /* those in the batches handed out (guarded by mutex): prefetching ahead
                             does not change the count, so it is the same in every run */

    loader_slot *slots;
    int num_slots;
    pthread_t *threads;
    loader_worker *workers;
    int num_threads;

    pthread_mutex_t mutex;
    pthread_cond_t work_available; /* a slot was freed, an epoch started, or shutdown */
    pthread_cond_t batch_done;     /* a worker finished a batch */

    /* Everything below is guarded by mutex. */
    uint64_t generation; /* bumped by every bf_loader_start_epoch */
    int started;         /* an epoch has been started */
    int epoch;
    int next_assign;     /* the next batch number a worker claims */
    int next_consume;    /* the next batch number bf_loader_next returns */
    int end_batch;       /* batches numbered below this belong to the epoch (0 while restarting) */
    int busy;            /* workers filling a slot */
    int shutting_down;
};

/* ---------------------------------------------------------------------------------------------
 * Filling one batch (runs without the lock) */

/* The augmentation counter of position p in epoch e: both fit in 32 bits, so the pair is unique. */
static uint64_t augment_key(int epoch, int position) {
    return ((uint64_t)(uint32_t)epoch << 32) | (uint32_t)position;
}

/* The crop and flip of the sample at (epoch, position): offset (dx, dy) of the crop window inside the
 * image padded by `pad`, 0..2*pad, so the source pixel of output (y, x) is (y + dy - pad, x + dx -
 * pad) with x mirrored first when flipped. Shared by the float and the uint8 paths. */
static void augment_plan(const bf_loader *l, int epoch, int position, int *flip, int *dx, int *dy) {
    int pad = l->opt.augment_crop_pad;
    uint64_t s = bf_seed_derive((uint64_t)l->opt.seed, BF_STREAM_AUGMENT, augment_key(epoch, position));
    *flip = l->opt.augment_flip && bf_uniform(s, 0) < 0.5f;
    *dx = *dy = 0;
    if (pad > 0) {
        *dx = (int)((double)bf_uniform(s, 1) * (2 * pad + 1));
        *dy = (int)((double)bf_uniform(s, 2) * (2 * pad + 1));
        if (*dx > 2 * pad) *dx = 2 * pad;
        if (*dy > 2 * pad) *dy = 2 * pad;
    }
}

/* Random crop after zero padding, then random horizontal flip, as torchvision's RandomCrop(pad)
 * + RandomHorizontalFlip do. Padding is 0 in pixel space [0, 1] (before normalisation). */
static void augment_sample(const bf_loader *l, int epoch, int position, const float *src, float *dst) {
    const bf_dataset *d = l->data;
    int c = d->c, h = d->h, w = d->w, pad = l->opt.augment_crop_pad, flip, dx, dy;
    augment_plan(l, epoch, position, &flip, &dx, &dy);
    for (int ch = 0; ch < c; ch++) {
        const float *in = src + (size_t)ch * h * w;
        float *out = dst + (size_t)ch * h * w;
        for (int y = 0; y < h; y++) {
            int sy = y + dy - pad;
            for (int x = 0; x < w; x++) {
                int xc = flip ? w - 1 - x : x; /* flip the cropped image */
                int sx = xc + dx - pad;
                out[y * w + x] = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? in[sy * w + sx] : 0.0f;
            }
        }
    }
}

/* The uint8 twin of augment_sample for stored 3-channel datasets: CHW bytes in, the same crop and
 * flip out as HWC bytes (padding is byte 0, i.e. 0.0 before normalisation). Without augmentation
 * the plan is the identity, so this also serves as the plain CHW -> HWC copy. */
static void augment_sample_u8(const bf_loader *l, int epoch, int position, const uint8_t *src, uint8_t *dst) {
    const bf_dataset *d = l->data;
    int h = d->h, w = d->w, pad = l->opt.augment_crop_pad, flip = 0, dx = 0, dy = 0;
    if (l->opt.augment_flip || pad > 0) augment_plan(l, epoch, position, &flip, &dx, &dy);
    size_t plane = (size_t)h * w;
    for (int y = 0; y < h; y++) {
        int sy = y + dy - pad;
        for (int x = 0; x < w; x++) {
            int sx = (flip ? w - 1 - x : x) + dx - pad;
            int inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
            uint8_t *out = dst + 3 * ((size_t)y * w + x);
            for (int ch = 0; ch < 3; ch++) out[ch] = inside ? src[ch * plane + (size_t)sy * w + sx] : 0;
        }
    }
}

/* Additive Gaussian noise (Box-Muller on counter-based uniforms), a function of (seed, split,
 * epoch, sample index): drawn anew for every sample in every epoch, as the PlasticFlex reference
 * does, yet repeatable; keyed by the sample rather than its position, so that a split read in
 * another order (a test loader shuffled for [run] val_batches, bioflex-eval's unshuffled one) gives
 * each sample the same noise in the same epoch; and by the split, so that training sample i and
 * test sample i do not share it. */
static void add_noise(const bf_loader *l, int epoch, int index, float *img) {
    const uint64_t split_seed = bf_seed_derive((uint64_t)l->opt.seed, BF_STREAM_NOISE, 0x53504c5400000000ull |
                                               (uint32_t)l->data->split); /* "SPLT" */
    uint64_t seed = bf_seed_derive(split_seed, BF_STREAM_NOISE, ((uint64_t)epoch << 32) | (uint32_t)index);
    for (size_t i = 0; i < l->sample_floats; i++) img[i] += l->opt.noise_std * (float)bf_normal(seed, i);
}

/* The epoch position of a batch's first sample. With data parallelism, rank r of w takes the r-th
 * slice of batch_size positions of every global batch of batch_size * w, so the ranks together see
 * the global batches one process would, with the same augmentation (keyed by position). */
static int batch_first_position(const bf_loader *l, int index) {
    int world = l->opt.world > 1 ? l->opt.world : 1;
    return (index * world + (world > 1 ? l->opt.rank : 0)) * l->opt.batch_size;
}

/* Multi-task datasets: the task (instruction) of the sample at `position` of `epoch`. Random tasks
 * are keyed by position like augmentation, so they repeat exactly for a (seed, epoch) and do not
 * depend on which sample the shuffle put there. */
static int sample_task(const bf_loader *l, int epoch, int position) {
    if (l->opt.task >= 0) return l->opt.task;
    uint64_t s = bf_seed_derive((uint64_t)l->opt.seed, BF_STREAM_TASK, (uint64_t)epoch);
    int t = (int)(bf_uniform(s, (uint64_t)position) * (float)l->data->num_tasks);
    return t < l->data->num_tasks ? t : l->data->num_tasks - 1;
}

/* How many bad images are named on stderr; the rest are only counted. */
#define LOADER_WARN_SKIPS 10
#define LOADER_REPLACE_TRIES 32

/* JPEG datasets: decodes and transforms the sample at `position` into img (floats in [0, 1], CHW) or,
 * when img is NULL, into px (bytes, HWC). A file that cannot be decoded is skipped, counted and
 * replaced by another sample chosen from (seed, epoch, position, try), so the batch keeps its shape
 * and the replacement repeats exactly - on both paths; *index and the label follow it. */
static bf_status load_file_sample(bf_loader *l, loader_worker *w, int epoch, int position, int *index, float *img,
                                  uint8_t *px, int *skipped) {
    const bf_dataset *d = l->data;
    uint64_t key = augment_key(epoch, position);
    uint64_t seed = bf_seed_derive((uint64_t)l->opt.seed, BF_STREAM_AUGMENT, key);
    for (int attempt = 0; attempt < LOADER_REPLACE_TRIES; attempt++) {
        bf_status st = img ? bf_image_load_sample(d, *index, seed, &w->image, img)
                           : bf_image_load_sample_u8(d, *index, seed, &w->image, px);
        if (st == BF_OK) return BF_OK;
        if (st != BF_ERR_FORMAT && st != BF_ERR_IO) return st;
        ++*skipped;
        long count = atomic_fetch_add(&l->warned, 1) + 1;
        if (count <= LOADER_WARN_SKIPS)
            fprintf(stderr, "warning: skipping image (%s)%s\n", bf_last_error(),
                    count == LOADER_WARN_SKIPS ? "; further skips are only counted (skipped_images in metrics.jsonl)" : "");
        uint64_t pick = bf_hash2(bf_seed_derive((uint64_t)l->opt.seed, BF_STREAM_AUGMENT, key), 0x5EEDull + (uint64_t)attempt);
        *index = (int)(pick % (uint64_t)d->num_samples);
    }
    return bf_error(BF_ERR_FORMAT, "loader: %d images in a row around position %d could not be decoded; is the "
                                   "dataset readable?", LOADER_REPLACE_TRIES, position);
}

long bf_loader_skipped_images(const bf_loader *l) {
    if (!l) return 0;
    pthread_mutex_lock(&((bf_loader *)l)->mutex);
    long n = l->skipped;
    pthread_mutex_unlock(&((bf_loader *)l)->mutex);
    return n;
}

/* The label (and, for a multi-task dataset, the task) of batch entry k, sample `index`. */
static void set_label(const bf_loader *l, bf_batch *b, int k, int epoch, int position, int index) {
    const bf_dataset *d = l->data;
    if (d->num_tasks > 0) {
        int task = sample_task(l, epoch, position);
        b->tasks[k] = task;
        b->labels[k] = d->task_labels[(size_t)index * d->num_tasks + task];
    } else {
        b->labels[k] = d->labels[index];
    }
}

static bf_status fill_batch(bf_loader *l, int epoch, bf_batch *b, loader_worker *w) {
    float *scratch = w->scratch;
    const bf_dataset *d = l->data;
    int bs = l->opt.batch_size;
    int first = batch_first_position(l, b->index);
    int n = d->num_samples - first < bs ? d->num_samples - first : bs;
    if (n <= 0) return bf_error(BF_ERR_INTERNAL, "loader: batch %d is past the end of the epoch", b->index);
    b->position = first;
    int augment = l->opt.augment_flip || l->opt.augment_crop_pad > 0;
    size_t plane = (size_t)d->h * d->w;
    b->n = n;
    b->skipped = 0;
    for (int k = 0; k < n; k++) {
        int position = first + k;
        int index = l->order[position];
        if (l->opt.u8_hwc) {
            /* Bytes for the device to normalise: the same decode, crop and flip as below. */
            uint8_t *px = b->pixels + (size_t)k * l->sample_floats;
            if (d->files) BF_TRY(load_file_sample(l, w, epoch, position, &index, NULL, px, &b->skipped));
            else augment_sample_u8(l, epoch, position, d->pixels + (size_t)index * l->sample_floats, px);
            set_label(l, b, k, epoch, position, index);
            continue;
        }
        float *img = b->images + (size_t)k * l->sample_floats;
        if (d->files) BF_TRY(load_file_sample(l, w, epoch, position, &index, img, NULL, &b->skipped));
        set_label(l, b, k, epoch, position, index);
        if (d->files) {
            /* decoded, cropped and flipped above */
        } else if (augment) {
            bf_dataset_sample(d, index, scratch);
            augment_sample(l, epoch, position, scratch, img);
        } else {
            bf_dataset_sample(d, index, img);
        }
        if (l->opt.normalize) {
            for (int ch = 0; ch < d->c; ch++) {
                float mean = d->mean[ch], inv_std = 1.0f / d->std[ch];
                float *p = img + ch * plane;
                for (size_t i = 0; i < plane; i++) p[i] = (p[i] - mean) * inv_std;
            }
        }
        if (l->opt.noise_std > 0) add_noise(l, epoch, index, img);
    }
    return BF_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Worker threads */

/* Under the lock: gives the calling worker the next batch number and a free slot, or NULL when
 * there is nothing to do (epoch fully claimed, or every slot in use). */
static loader_slot *claim_work(bf_loader *l) {
    if (l->next_assign >= l->end_batch) return NULL;
    for (int i = 0; i < l->num_slots; i++) {
        loader_slot *s = &l->slots[i];
        if (s->state != SLOT_FREE) continue;
        s->state = SLOT_FILLING;
        s->generation = l->generation;
        s->batch.index = l->next_assign++;
        return s;
    }
    return NULL;
}

static void *worker_main(void *arg) {
    loader_worker *self = arg;
    bf_loader *l = self->loader;
    pthread_mutex_lock(&l->mutex);
    while (!l->shutting_down) {
        loader_slot *slot = claim_work(l);
        if (!slot) {
            pthread_cond_wait(&l->work_available, &l->mutex);
            continue;
        }
        /* Read what the fill needs while holding the lock; the order array is only rewritten by
         * bf_loader_start_epoch after every busy worker has finished. */
        uint64_t generation = slot->generation;
        int epoch = l->epoch;
        l->busy++;
        pthread_mutex_unlock(&l->mutex);

        bf_status st = fill_batch(l, epoch, &slot->batch, self);
        const char *message = st == BF_OK ? "" : bf_last_error();

        pthread_mutex_lock(&l->mutex);
        l->busy--;
        if (generation == l->generation) {
            slot->state = SLOT_READY;
            slot->status = st;
            snprintf(slot->error, sizeof slot->error, "%s", message);
        } else {
            slot->state = SLOT_FREE; /* an epoch restart made this batch obsolete */
            pthread_cond_broadcast(&l->work_available);
        }
        /* Wakes the consumer, and bf_loader_start_epoch waiting for busy == 0. */
        pthread_cond_broadcast(&l->batch_done);
    }
    pthread_mutex_unlock(&l->mutex);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Life cycle */

/* The uint8 ring's memory comes from the caller's allocator (page-locked on CUDA), or malloc. */
static void *ring_alloc(const bf_loader *l, size_t bytes) {
    const bf_host_allocator *a = &l->opt.host_alloc;
    return a->alloc ? a->alloc(a->ctx, bytes) : malloc(bytes);
}

static void ring_free(const bf_loader *l, void *p) {
    const bf_host_allocator *a = &l->opt.host_alloc;
    if (!p) return;
    if (a->alloc) {
        if (a->free) a->free(a->ctx, p);
    } else {
        free(p);
    }
}

static void free_loader_memory(bf_loader *l) {
    if (l->slots) {
        for (int i = 0; i < l->num_slots; i++) {
            ring_free(l, l->slots[i].batch.pixels);
            free(l->slots[i].batch.images);
            free(l->slots[i].batch.labels);
            free(l->slots[i].batch.tasks);
        }
    }
    if (l->workers) {
        for (int i = 0; i < l->num_threads; i++) {
            free(l->workers[i].scratch);
            bf_image_worker_free(&l->workers[i].image);
        }
    }
    free(l->slots);
    free(l->workers);
    free(l->threads);
    free(l->order);
    free(l);
}

/* Stops and joins the first `started` threads, then frees everything. */
static void shutdown_loader(bf_loader *l, int started) {
    pthread_mutex_lock(&l->mutex);
    l->shutting_down = 1;
    pthread_cond_broadcast(&l->work_available);
    pthread_mutex_unlock(&l->mutex);
    for (int i = 0; i < started; i++) pthread_join(l->threads[i], NULL);
    pthread_cond_destroy(&l->batch_done);
    pthread_cond_destroy(&l->work_available);
    pthread_mutex_destroy(&l->mutex);
    free_loader_memory(l);
}

bf_loader_options bf_loader_options_from_config(const bf_config *cfg, bf_split split) {
    const bf_data_config *d = &cfg->data;
    int train = split == BF_SPLIT_TRAIN;
    int noisy = train ? d->noise_splits != 1 : d->noise_splits != 0;
    return (bf_loader_options){
        .batch_size = train ? d->batch_size : bf_data_eval_batch(d),
        .threads = d->loader_threads,
        .prefetch = d->prefetch,
        .shuffle = train ? d->shuffle : cfg->run.val_batches > 0, /* a full test pass is the same in any order */
        .augment_flip = train && d->augment_flip,
        .augment_crop_pad = train ? d->augment_crop_pad : 0,
        .normalize = d->normalize,
        .noise_std = noisy ? d->input_noise_std : 0.0f,
        .seed = cfg->run.seed,
    };
}

bf_status bf_loader_create(const bf_dataset *d, const bf_loader_options *opt, bf_loader **out) {
    if (!d || !opt || !out) return bf_error(BF_ERR_ARG, "bf_loader_create: NULL argument");
    *out = NULL;
    if (d->num_samples < 1) return bf_error(BF_ERR_ARG, "bf_loader_create: dataset %s is empty", d->name);
    if (d->c < 1 || d->c > 3 || d->h < 1 || d->w < 1)
        return bf_error(BF_ERR_ARG, "bf_loader_create: dataset %s has shape %dx%dx%d (channels must be 1..3)",
                        d->name, d->c, d->h, d->w);
    if (opt->batch_size < 1) return bf_error(BF_ERR_ARG, "bf_loader_create: batch_size %d < 1", opt->batch_size);
    if (opt->world > 1 && (opt->rank < 0 || opt->rank >= opt->world))
        return bf_error(BF_ERR_ARG, "bf_loader_create: rank %d outside 0..%d", opt->rank, opt->world - 1);
    if (opt->augment_crop_pad < 0)
        return bf_error(BF_ERR_ARG, "bf_loader_create: augment_crop_pad %d < 0", opt->augment_crop_pad);
    if (d->num_tasks > 0 && (opt->task < BF_TASK_RANDOM || opt->task >= d->num_tasks || !d->task_labels))
        return bf_error(BF_ERR_ARG, "bf_loader_create: task %d for dataset %s (allowed: -1 = random, 0..%d)",
                        opt->task, d->name, d->num_tasks - 1);
    if (opt->u8_hwc && !bf_loader_u8_applies(d, opt))
        return bf_error(BF_ERR_ARG, "bf_loader_create: dataset %s cannot be loaded as uint8 batches (needs 3 channels "
                        "of stored or JPEG pixels and no input noise)", d->name);
    if (opt->normalize) {
        for (int ch = 0; ch < d->c; ch++)
            if (!(d->std[ch] > 0.0f))
                return bf_error(BF_ERR_ARG, "bf_loader_create: dataset %s has std %g in channel %d",
                                d->name, d->std[ch], ch);
    }

    bf_loader *l = calloc(1, sizeof *l);
    if (!l) return bf_error(BF_ERR_OOM, "bf_loader_create: out of memory");
    l->data = d;
    l->opt = *opt;
    /* At least one worker and one slot; more slots than batches would never be used. */
    l->num_threads = opt->threads < 1 ? 1 : opt->threads > LOADER_MAX_THREADS ? LOADER_MAX_THREADS : opt->threads;
    l->sample_floats = (size_t)d->c * d->h * d->w;
    l->num_batches = opt->drop_last ? d->num_samples / opt->batch_size
                                    : (d->num_samples + opt->batch_size - 1) / opt->batch_size;
    if (opt->world > 1) {
        /* Data parallelism: whole global batches, or (not drop_last) the batches in which this
         * rank's slice still holds samples. */
        long global = (long)opt->batch_size * opt->world, offset = (long)opt->rank * opt->batch_size;
        l->num_batches = opt->drop_last ? (int)(d->num_samples / global)
                                        : d->num_samples > offset ? (int)((d->num_samples - offset + global - 1) / global) : 0;
    }
    l->num_slots = opt->prefetch < 1 ? 1 : opt->prefetch;
    if (l->num_batches > 0 && l->num_slots > l->num_batches) l->num_slots = l->num_batches;

    l->order = malloc((size_t)d->num_samples * sizeof *l->order);
    l->slots = calloc((size_t)l->num_slots, sizeof *l->slots);
    l->threads = calloc((size_t)l->num_threads, sizeof *l->threads);
    l->workers = calloc((size_t)l->num_threads, sizeof *l->workers);
    int ok = l->order && l->slots && l->threads && l->workers;
    for (int i = 0; ok && i < l->num_slots; i++) {
        bf_batch *b = &l->slots[i].batch;
        if (opt->u8_hwc) b->pixels = ring_alloc(l, (size_t)opt->batch_size * l->sample_floats);
        else b->images = malloc((size_t)opt->batch_size * l->sample_floats * sizeof(float));
        b->labels = malloc((size_t)opt->batch_size * sizeof(int32_t));
        ok = (b->images || b->pixels) && b->labels;
        if (ok && d->num_tasks > 0) {
            l->slots[i].batch.tasks = malloc((size_t)opt->batch_size * sizeof(int32_t));
            ok = l->slots[i].batch.tasks != NULL;
        }
    }
    bf_status worker_status = BF_OK; /* a JPEG decoder that would not start says why itself */
    for (int i = 0; ok && i < l->num_threads; i++) {
        l->workers[i].loader = l;
        l->workers[i].scratch = malloc(l->sample_floats * sizeof(float));
        ok = l->workers[i].scratch != NULL;
        if (ok && d->files) worker_status = bf_image_worker_init(&l->workers[i].image, d->w), ok = worker_status == BF_OK;
    }
    if (!ok) {
        free_loader_memory(l);
        if (worker_status != BF_OK) return bf_error_context(worker_status, "bf_loader_create: loader thread's decoder");
        return bf_error(BF_ERR_OOM, "bf_loader_create: cannot allocate %d batches of %d samples",
                        opt->prefetch, opt->batch_size);
    }

    pthread_mutex_init(&l->mutex, NULL);
    pthread_cond_init(&l->work_available, NULL);
    pthread_cond_init(&l->batch_done, NULL);
    for (int i = 0; i < l->num_threads; i++) {
        int err = pthread_create(&l->threads[i], NULL, worker_main, &l->workers[i]);
        if (err != 0) {
            shutdown_loader(l, i);
            return bf_error(BF_ERR_INTERNAL, "bf_loader_create: cannot start loader thread %d: %s", i,
                            strerror(err));
        }
    }
    *out = l;
    return BF_OK;
}

int bf_loader_u8_applies(const bf_dataset *d, const bf_loader_options *opt) {
    return d && opt && d->c == 3 && (d->files || d->pixels) && !(opt->noise_std > 0);
}

bf_image_format bf_loader_image_format(const bf_loader *l) {
    const bf_dataset *d = l->data;
    bf_image_format f = {.u8_hwc = l->opt.u8_hwc, .c = d->c, .h = d->h, .w = d->w};
    for (int ch = 0; ch < 3; ch++) {
        f.mean[ch] = l->opt.normalize ? d->mean[ch] : 0.0f;
        f.std[ch] = l->opt.normalize ? d->std[ch] : 1.0f;
    }
    return f;
}

void bf_loader_destroy(bf_loader *l) {
    if (!l) return;
    /* Workers finish the batch they are filling (at most one each) and exit. */
    shutdown_loader(l, l->num_threads);
}

int bf_loader_num_batches(const bf_loader *l) { return l->num_batches; }

/* ---------------------------------------------------------------------------------------------
 * Epochs and batches */

/* The epoch's order: identity, or a Fisher-Yates shuffle driven by (seed, epoch). The product is
 * taken in double: u * (i + 1) in float can round up to i + 1 for large i. */
static void build_order(bf_loader *l, int epoch) {
    int n = l->data->num_samples;
    for (int i = 0; i < n; i++) l->order[i] = i;
    if (!l->opt.shuffle) return;
    uint64_t s = bf_seed_derive((uint64_t)l->opt.seed, BF_STREAM_SHUFFLE, (uint64_t)(uint32_t)epoch);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)((double)bf_uniform(s, (uint64_t)i) * (double)(i + 1));
        if (j > i) j = i;
        int t = l->order[i];
        l->order[i] = l->order[j];
        l->order[j] = t;
    }
}

int bf_loader_set_shuffle(bf_loader *l, int shuffle) {
    pthread_mutex_lock(&l->mutex); /* build_order reads it, under the lock */
    int was = l->opt.shuffle;
    l->opt.shuffle = shuffle;
    pthread_mutex_unlock(&l->mutex);
    return was;
}

bf_status bf_loader_start_epoch(bf_loader *l, int epoch, int first_batch) {
    if (!l) return bf_error(BF_ERR_ARG, "bf_loader_start_epoch: NULL loader");
    if (epoch < 0) return bf_error(BF_ERR_ARG, "bf_loader_start_epoch: epoch %d < 0", epoch);
    if (first_batch < 0 || first_batch > l->num_batches)
        return bf_error(BF_ERR_ARG, "bf_loader_start_epoch: first_batch %d outside 0..%d", first_batch,
                        l->num_batches);
    pthread_mutex_lock(&l->mutex);
    /* Stop claims, invalidate work in flight, and wait for the workers filling old batches: they
     * read the order array, which is about to change. */
    l->generation++;
    l->end_batch = 0;
    l->next_assign = 0;
    while (l->busy > 0) pthread_cond_wait(&l->batch_done, &l->mutex);
    for (int i = 0; i < l->num_slots; i++) {
        if (l->slots[i].state == SLOT_READY) l->slots[i].state = SLOT_FREE;
        /* HELD slots stay with the consumer until it releases them. */
    }
    build_order(l, epoch);
    l->epoch = epoch;
    l->started = 1;
    l->next_assign = first_batch;
    l->next_consume = first_batch;
    l->end_batch = l->num_batches;
    pthread_cond_broadcast(&l->work_available);
    pthread_mutex_unlock(&l->mutex);
    return BF_OK;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* Under the lock: the READY slot holding batch `index` of the current epoch, or NULL. */
static loader_slot *find_ready(bf_loader *l, int index) {
    for (int i = 0; i < l->num_slots; i++) {
        loader_slot *s = &l->slots[i];
        if (s->state == SLOT_READY && s->generation == l->generation && s->batch.index == index) return s;
    }
    return NULL;
}

static int all_slots_held(const bf_loader *l) {
    for (int i = 0; i < l->num_slots; i++)
        if (l->slots[i].state != SLOT_HELD) return 0;
    return 1;
}

bf_status bf_loader_next(bf_loader *l, bf_batch **out, double *wait_ms) {
    if (wait_ms) *wait_ms = 0.0;
    if (!l || !out) return bf_error(BF_ERR_ARG, "bf_loader_next: NULL argument");
    *out = NULL;
    pthread_mutex_lock(&l->mutex);
    if (!l->started) {
        pthread_mutex_unlock(&l->mutex);
        return bf_error(BF_ERR_ARG, "bf_loader_next: no epoch started (call bf_loader_start_epoch first)");
    }
    if (l->next_consume >= l->end_batch) { /* the epoch is over */
        pthread_mutex_unlock(&l->mutex);
        return BF_OK;
    }
    double t0 = now_ms();
    loader_slot *slot;
    while (!(slot = find_ready(l, l->next_consume))) {
        if (all_slots_held(l)) {
            pthread_mutex_unlock(&l->mutex);
            return bf_error(BF_ERR_ARG, "bf_loader_next: all %d batch slots are held; release batches "
                                        "(bf_loader_release) before asking for more",
                            l->num_slots);
        }
        pthread_cond_wait(&l->batch_done, &l->mutex);
    }
    if (wait_ms) *wait_ms = now_ms() - t0;
    l->next_consume++;
    if (slot->status != BF_OK) {
        /* Give the slot back so that the next call can continue with the following batch. */
        bf_status st = slot->status;
        int index = slot->batch.index;
        char message[sizeof slot->error];
        memcpy(message, slot->error, sizeof message);
        slot->state = SLOT_FREE;
        pthread_cond_broadcast(&l->work_available);
        pthread_mutex_unlock(&l->mutex);
        return bf_error(st, "loader batch %d: %s", index, message);
    }
    slot->state = SLOT_HELD;
    l->skipped += slot->batch.skipped;
    pthread_mutex_unlock(&l->mutex);
    *out = &slot->batch;
    return BF_OK;
}

void bf_loader_release(bf_loader *l, bf_batch *b) {
    if (!l || !b) return;
    pthread_mutex_lock(&l->mutex);
    for (int i = 0; i < l->num_slots; i++) {
        loader_slot *s = &l->slots[i];
        if (&s->batch == b && s->state == SLOT_HELD) {
            s->state = SLOT_FREE;
            pthread_cond_broadcast(&l->work_available);
            break;
        }
    }
    pthread_mutex_unlock(&l->mutex);
}
