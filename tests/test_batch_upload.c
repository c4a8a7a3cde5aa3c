/* test_batch_upload.c - uint8 batches (a u8_hwc loader + the batch uploader on the CPU backend)
 * against the float path they replace.
 *
 *  - JPEG (imagefolder) tree with RandomResizedCrop, flips and the undecodable edge-case files:
 *    every uploaded batch is bit-identical to the float loader's (1 and 2 threads, two epochs,
 *    normalised and not), the labels and the skip count are the same, a resumed epoch repeats, and
 *    the ring comes from the caller's allocator, once per slot, nothing per batch;
 *  - a stored 3-channel dataset (CIFAR-like bytes, crop padding and flips): equal to 1e-6 (the float
 *    path divides by 255, the op multiplies by 1/255, which can differ in the last bit);
 *  - refusals: one channel, input noise;
 *  - bioflex-train's loop (bf_train) on a JPEG tree: uint8 and float batches give the same metrics
 *    and bit-identical weights. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch_upload.h"
#include "bioflex/data.h"
#include "bioflex/image.h"
#include "bioflex/train.h"
#include "fsutil.h"
#include "testutil.h"
#include "upload_cases.h"

/* A host allocator that counts, to see the ring allocated once per slot. */
typedef struct counting {
    int allocs, frees;
    size_t bytes;
} counting;

static void *count_alloc(void *ctx, size_t bytes) {
    counting *c = ctx;
    c->allocs++;
    c->bytes += bytes;
    return malloc(bytes);
}

static void count_free(void *ctx, void *p) {
    ((counting *)ctx)->frees++;
    free(p);
}

/* Runs one epoch through a float loader and a uint8 loader (+ uploader) side by side and compares
 * every batch; returns the largest absolute difference (0 = bit-identical, -1 = a structural
 * mismatch already reported). */
static double compare_epoch(bf_backend *cpu, bf_loader *fl, bf_loader *ul, int epoch, int first, long *skips) {
    bf_batch_uploader *up = NULL;
    CHECK_OK(bf_batch_uploader_create(cpu, &up));
    CHECK_OK(bf_loader_start_epoch(fl, epoch, first));
    CHECK_OK(bf_loader_start_epoch(ul, epoch, first));
    bf_image_format f = bf_loader_image_format(fl);
    size_t floats = (size_t)f.c * f.h * f.w;
    float *got = malloc(8 * floats * sizeof(float));
    double worst = 0;
    for (;;) {
        bf_batch *a = NULL, *b = NULL;
        CHECK_OK(bf_loader_next(fl, &a, NULL));
        CHECK_OK(bf_loader_next(ul, &b, NULL));
        if (!a || !b) {
            CHECK(!a && !b, "both loaders end the epoch together");
            break;
        }
        CHECK(a->n == b->n && a->index == b->index && b->pixels && !b->images,
              "batch %d: n %d vs %d, uint8 batch has pixels only", a->index, a->n, b->n);
        CHECK(memcmp(a->labels, b->labels, (size_t)a->n * sizeof(int32_t)) == 0, "batch %d: labels differ", a->index);
        CHECK_OK(bf_batch_upload(up, ul, b, got));
        for (size_t i = 0; i < (size_t)a->n * floats; i++) {
            double d = fabs((double)a->images[i] - got[i]);
            if (d > worst) worst = d;
        }
        bf_loader_release(fl, a);
        CHECK_OK(bf_batch_upload_release(up, ul, b));
    }
    free(got);
    bf_batch_uploader_destroy(up);
    if (skips) {
        skips[0] = bf_loader_skipped_images(fl);
        skips[1] = bf_loader_skipped_images(ul);
    }
    return worst;
}

static void test_jpeg(bf_backend *cpu) {
    bf_config cfg;
    jpeg_config(&cfg, 24, 28);
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d));
    if (!d) return;
    for (int normalize = 1; normalize >= 0; normalize--) {
        for (int threads = 1; threads <= 2; threads++) {
            bf_loader_options o = {.batch_size = 5, .threads = threads, .prefetch = 3, .shuffle = 1,
                                   .normalize = normalize, .seed = 11};
            counting count = {0};
            bf_loader_options u = o;
            u.u8_hwc = 1;
            u.host_alloc = (bf_host_allocator){count_alloc, count_free, &count};
            CHECK(bf_loader_u8_applies(d, &u), "a JPEG dataset can load as uint8");
            bf_loader *fl = NULL, *ul = NULL;
            CHECK_OK(bf_loader_create(d, &o, &fl));
            CHECK_OK(bf_loader_create(d, &u, &ul));
            if (!fl || !ul) break;
            CHECK(count.allocs == 3 && count.bytes == 3 * (size_t)5 * 24 * 24 * 3,
                  "the uint8 ring: %d allocations of %zu bytes in all (expected 3 slots of 5x24x24x3)", count.allocs,
                  count.bytes);
            bf_image_format f = bf_loader_image_format(ul);
            CHECK(f.u8_hwc && f.c == 3 && f.h == 24 && (normalize ? f.std[1] == d->std[1] : f.std[1] == 1.0f),
                  "image format of the uint8 loader");
            for (int epoch = 0; epoch < 2; epoch++) {
                long skips[2];
                double worst = compare_epoch(cpu, fl, ul, epoch, 0, skips);
                CHECK(worst == 0, "JPEG, normalize %d, %d threads, epoch %d: uint8 path differs from floats by %g",
                      normalize, threads, epoch, worst);
                CHECK(skips[0] == skips[1] && skips[1] >= BF_SYNTH_BAD_FILES * (epoch + 1),
                      "skipped images: float %ld, uint8 %ld (expected equal, >= %d)", skips[0], skips[1],
                      BF_SYNTH_BAD_FILES * (epoch + 1));
            }
            /* Resuming inside an epoch: batches 2.. are the same. */
            CHECK(compare_epoch(cpu, fl, ul, 1, 2, NULL) == 0, "resumed epoch 1 at batch 2 differs");
            CHECK(count.allocs == 3, "no ring allocation after creation (%d)", count.allocs);
            bf_loader_destroy(fl);
            bf_loader_destroy(ul);
            CHECK(count.frees == 3, "the ring is given back to its allocator (%d frees)", count.frees);
        }
    }
    /* Same seed, same uint8 bytes whatever the thread count (determinism of the ring itself). */
    bf_loader_options u = {.batch_size = 4, .threads = 1, .prefetch = 2, .shuffle = 1, .seed = 4, .u8_hwc = 1};
    bf_loader *l1 = NULL, *l2 = NULL;
    CHECK_OK(bf_loader_create(d, &u, &l1));
    u.threads = 3;
    CHECK_OK(bf_loader_create(d, &u, &l2));
    if (l1 && l2) {
        CHECK_OK(bf_loader_start_epoch(l1, 3, 0));
        CHECK_OK(bf_loader_start_epoch(l2, 3, 0));
        bf_batch *a, *b;
        int same = 1, batches = 0;
        while (bf_loader_next(l1, &a, NULL) == BF_OK && a && bf_loader_next(l2, &b, NULL) == BF_OK && b) {
            same &= a->n == b->n && memcmp(a->pixels, b->pixels, (size_t)a->n * 24 * 24 * 3) == 0;
            batches++;
            bf_loader_release(l1, a);
            bf_loader_release(l2, b);
        }
        CHECK(same && batches == (d->num_samples + 3) / 4, "uint8 batches with 1 and 3 threads: same %d, %d batches",
              same, batches);
    }
    bf_loader_destroy(l1);
    bf_loader_destroy(l2);
    bf_dataset_free(d);
}

/* A stored dataset of bytes (CIFAR-10's CHW layout), made in memory. */
static bf_dataset *stored_dataset(int c) {
    bf_dataset *d = calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "stored%d", c);
    d->num_samples = 23;
    d->c = c;
    d->h = 9;
    d->w = 7;
    d->num_classes = 4;
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    memcpy(d->mean, mean, sizeof mean);
    memcpy(d->std, std, sizeof std);
    size_t bytes = (size_t)d->num_samples * c * d->h * d->w;
    d->pixels = malloc(bytes);
    d->labels = malloc((size_t)d->num_samples * sizeof *d->labels);
    for (size_t i = 0; i < bytes; i++) d->pixels[i] = (uint8_t)((i * 2654435761u) >> 11); /* every value 0..255 */
    for (int i = 0; i < d->num_samples; i++) d->labels[i] = i % 4;
    return d;
}

static void test_stored(bf_backend *cpu) {
    bf_dataset *d = stored_dataset(3);
    bf_loader_options o = {.batch_size = 4, .threads = 2, .prefetch = 2, .shuffle = 1, .augment_flip = 1,
                           .augment_crop_pad = 2, .normalize = 1, .seed = 9};
    bf_loader_options u = o;
    u.u8_hwc = 1;
    bf_loader *fl = NULL, *ul = NULL;
    CHECK_OK(bf_loader_create(d, &o, &fl));
    CHECK_OK(bf_loader_create(d, &u, &ul));
    if (fl && ul) {
        for (int epoch = 0; epoch < 2; epoch++) {
            double worst = compare_epoch(cpu, fl, ul, epoch, 0, NULL);
            CHECK(worst <= 1e-6, "stored 3-channel data, crop pad 2 + flip, epoch %d: uint8 path within 1e-6 of "
                  "floats (worst %g)", epoch, worst);
        }
    }
    bf_loader_destroy(fl);
    bf_loader_destroy(ul);

    /* Refusals: one channel (the op is RGB), and input noise (added to normalised floats). */
    u.noise_std = 0.1f;
    bf_status st = bf_loader_create(d, &u, &ul);
    CHECK(st == BF_ERR_ARG && strstr(bf_last_error(), "uint8"), "uint8 with input noise refused: %s", bf_last_error());
    bf_dataset_free(d);
    d = stored_dataset(1);
    u.noise_std = 0;
    CHECK(!bf_loader_u8_applies(d, &u), "a one-channel dataset does not load as uint8");
    st = bf_loader_create(d, &u, &ul);
    CHECK(st == BF_ERR_ARG && strstr(bf_last_error(), "uint8"), "uint8 with one channel refused: %s", bf_last_error());
    bf_dataset_free(d);
}

/* metrics.jsonl without its "start" lines (a resumed run adds one per start) and the fields that
 * measure time. */
static void strip_timing(char *text) {
    for (char *p; (p = strstr(text, "{\"type\":\"start\"")) != NULL;) {
        char *end = strchr(p, '\n');
        end = end ? end + 1 : p + strlen(p);
        memmove(p, end, strlen(end) + 1);
    }
    static const char *keys[] = {"\"ms_per_step\":", "\"images_per_s\":", "\"data_wait_ms\":", "\"model_tflops\":"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        char *p;
        while ((p = strstr(text, keys[k])) != NULL) {
            char *end = p + strlen(keys[k]);
            while (*end && *end != ',' && *end != '}') end++;
            if (*end == ',') end++;
            memmove(p, end, strlen(end) + 1);
        }
    }
}

/* Runs 0 and 1 train with uint8 and float batches; run 2 as run 0, stopped after every step and
 * resumed each time. */
static void test_train(void) {
    bf_train_result res[3];
    char *metrics[3] = {NULL, NULL, NULL}, *weights[3] = {NULL, NULL, NULL};
    size_t weight_bytes[3] = {0, 0, 0}, n;
    double skipped[3] = {-1, -1, -1};
    int runs_of_stepped = 0;
    for (int run = 0; run < 3; run++) {
        bf_config cfg;
        jpeg_config(&cfg, 24, 28);
        set(&cfg, "data.batch_size = 8");
        set(&cfg, "data.loader_threads = 2");
        set(&cfg, "model.arch = cnn");
        set(&cfg, "model.channels = 4,8");
        set(&cfg, "model.hidden = 16");
        set(&cfg, "run.device = cpu");
        set(&cfg, "run.threads = 1");
        set(&cfg, "run.epochs = 2");
        set(&cfg, "run.log_interval = 1");
        set(&cfg, "optim.optimizer = sgd");
        set(&cfg, "optim.lr = 0.05");
        snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run%d", root, run);
        FILE *log = fopen("/dev/null", "w");
        atomic_int stop = 1; /* run 2: the request stays set, so every run trains one step and stops */
        bf_train_options opt = {.quiet = 1, .log = log, .float_batches = run == 1, .stop = run == 2 ? &stop : NULL};
        do {
            CHECK_OK(bf_train(&cfg, &opt, &res[run]));
            opt.resume = cfg.run.dir;
            runs_of_stepped += run == 2;
        } while (run == 2 && res[run].interrupted && runs_of_stepped < 20);
        fclose(log);
        char path[BF_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.run.dir);
        skipped[run] = bf_test_last_json_number(path, "skipped_images");
        metrics[run] = bf_test_read_file(path, &n);
        if (metrics[run]) strip_timing(metrics[run]);
        snprintf(path, sizeof path, "%s/checkpoints/epoch_0002/model.safetensors", cfg.run.dir);
        weights[run] = bf_test_read_file(path, &weight_bytes[run]);
    }
    CHECK(res[0].final_eval.samples == res[1].final_eval.samples && res[0].final_eval.loss == res[1].final_eval.loss &&
              res[0].final_eval.top1 == res[1].final_eval.top1,
          "bf_train: uint8 and float batches give the same final evaluation (loss %.9g vs %.9g)", res[0].final_eval.loss,
          res[1].final_eval.loss);
    CHECK(metrics[0] && metrics[1] && strstr(metrics[0], "\"loss\"") && !strcmp(metrics[0], metrics[1]),
          "bf_train: metrics.jsonl (losses, accuracies, grad norms, evaluations, skipped images) identical with uint8 "
          "and float batches");
    /* The 4 undecodable files of the tree, met once an epoch (and again where a replacement drawn
     * is one): counted in the batches trained on, not as far as the workers read ahead. */
    CHECK(skipped[0] >= 8 && skipped[0] == skipped[1] && skipped[0] == skipped[2],
          "skipped_images after 2 epochs: %g uint8, %g float, %g stopped after every step (want equal, >= 8)", skipped[0],
          skipped[1], skipped[2]);
    CHECK(runs_of_stepped == 6 && metrics[2] && !strcmp(metrics[0], metrics[2]),
          "bf_train stopped after each of 6 steps and resumed: metrics.jsonl identical (%d runs)", runs_of_stepped);
    CHECK(weights[0] && weights[1] && weight_bytes[0] == weight_bytes[1] && weight_bytes[0] > 0 &&
              memcmp(weights[0], weights[1], weight_bytes[0]) == 0,
          "bf_train: final weights bit-identical with uint8 and float batches");
    for (int i = 0; i < 3; i++) {
        free(metrics[i]);
        free(weights[i]);
    }
}

int main(void) {
    make_tree("upload", 5, 60, 45, 5);
    bf_backend *cpu = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &cpu));
    if (cpu) {
        test_jpeg(cpu);
        test_stored(cpu);
        bf_backend_destroy(cpu);
    }
    test_train();
    bf_remove_tree(root);
    return bf_test_finish();
}
