/* test_batch_upload_cuda.c - uint8 batches uploaded on CUDA (pinned ring, copy stream, events,
 * image_u8_to_float on the compute stream) against the CPU float path, bit for bit.
 *
 *  - a whole epoch of a JPEG tree is uploaded batch after batch into separate regions of one device
 *    buffer with no host synchronisation between batches, while the compute stream is kept busy
 *    before every conversion: a copy that overwrote the staging buffer before the previous
 *    conversion read it, or a loader slot refilled before its copy completed, shows up as wrong
 *    pixels. Everything is downloaded at the end and compared with the float loader's batches;
 *  - bf_train on the CUDA backend: uint8 and float batches give the same metrics and weights.
 * Skipped (exit 77) without a CUDA build or device. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch_upload.h"
#include "bioflex/data.h"
#include "bioflex/image.h"
#include "bioflex/train.h"
#include "cuda_pair.h"
#include "fsutil.h"
#include "testutil.h"
#include "upload_cases.h"

static void test_epoch(bf_backend *gpu) {
    bf_config cfg;
    jpeg_config(&cfg, 40, 0);
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, 1, BF_SPLIT_TRAIN, &d));
    if (!d) return;
    bf_loader_options o = {.batch_size = 6, .threads = 2, .prefetch = 2, .shuffle = 1, .normalize = 1, .seed = 21};
    bf_loader_options u = o;
    u.u8_hwc = 1;
    u.host_alloc = bf_backend_host_allocator(gpu); /* page-locked */
    bf_loader *fl = NULL, *ul = NULL;
    bf_batch_uploader *up = NULL;
    CHECK_OK(bf_loader_create(d, &o, &fl));
    CHECK_OK(bf_loader_create(d, &u, &ul));
    CHECK_OK(bf_batch_uploader_create(gpu, &up));
    size_t floats = (size_t)3 * 40 * 40, total = (size_t)d->num_samples * floats;
    size_t busy_n = (size_t)32 << 20; /* 128 MiB of fills before each conversion keep the compute stream behind */
    float *dall = NULL, *busy = NULL;
    CHECK_OK(bf_alloc(gpu, total * sizeof(float), (void **)&dall));
    CHECK_OK(bf_alloc(gpu, busy_n * sizeof(float), (void **)&busy));
    float *want = malloc(total * sizeof(float)), *got = malloc(total * sizeof(float));
    for (int epoch = 0; fl && ul && up && dall && busy && epoch < 2; epoch++) {
        CHECK_OK(bf_loader_start_epoch(fl, epoch, 0));
        CHECK_OK(bf_loader_start_epoch(ul, epoch, 0));
        size_t at = 0;
        bf_batch *a = NULL, *b = NULL;
        while (bf_loader_next(fl, &a, NULL) == BF_OK && a) {
            memcpy(want + at, a->images, (size_t)a->n * floats * sizeof(float));
            bf_loader_release(fl, a);
            CHECK_OK(bf_loader_next(ul, &b, NULL));
            if (!b) break;
            for (int k = 0; k < 4; k++) CHECK_OK(gpu->ops->fill(gpu, busy, (float)k, busy_n));
            CHECK_OK(bf_batch_upload(up, ul, b, dall + at));
            at += (size_t)b->n * floats;
            CHECK_OK(bf_batch_upload_release(up, ul, b));
        }
        CHECK(at == total, "epoch %d: %zu of %zu floats uploaded", epoch, at, total);
        CHECK_OK(gpu->ops->copy_to_host(gpu, got, dall, total * sizeof(float)));
        size_t bad = 0;
        for (size_t i = 0; i < total; i++) bad += memcmp(&want[i], &got[i], sizeof(float)) != 0;
        CHECK(bad == 0, "epoch %d: %zu of %zu uploaded floats differ from the CPU float path", epoch, bad, total);
        CHECK(bf_loader_skipped_images(fl) == bf_loader_skipped_images(ul), "skip counts %ld and %ld",
              bf_loader_skipped_images(fl), bf_loader_skipped_images(ul));
    }
    /* Misuse is refused rather than racing: a second upload before the release. */
    if (ul && up && dall) {
        bf_batch *b = NULL;
        CHECK_OK(bf_loader_start_epoch(ul, 0, 0));
        CHECK_OK(bf_loader_next(ul, &b, NULL));
        if (b) {
            CHECK_OK(bf_batch_upload(up, ul, b, dall));
            CHECK(bf_batch_upload(up, ul, b, dall) == BF_ERR_ARG, "a second upload in flight is refused");
            CHECK_OK(bf_batch_upload_release(up, ul, b));
        }
    }
    free(want);
    free(got);
    bf_free(gpu, dall);
    bf_free(gpu, busy);
    bf_batch_uploader_destroy(up);
    bf_loader_destroy(fl);
    bf_loader_destroy(ul);
    bf_dataset_free(d);
}

static void test_train(void) {
    bf_train_result res[2];
    char *weights[2] = {NULL, NULL};
    size_t bytes[2] = {0, 0};
    for (int run = 0; run < 2; run++) {
        bf_config cfg;
        jpeg_config(&cfg, 40, 0);
        set(&cfg, "data.batch_size = 8");
        set(&cfg, "model.arch = cnn");
        set(&cfg, "model.channels = 4,8");
        set(&cfg, "model.hidden = 16");
        set(&cfg, "run.device = cuda");
        /* the bit-for-bit comparison below needs the same convolution algorithms in both runs and
         * none that sums with atomics: the default picks the fastest by timing (README) */
        set(&cfg, "run.deterministic = true");
        set(&cfg, "run.epochs = 2");
        set(&cfg, "optim.optimizer = sgd");
        set(&cfg, "optim.lr = 0.05");
        snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run%d", root, run);
        FILE *log = fopen("/dev/null", "w");
        bf_train_options opt = {.quiet = 1, .log = log, .float_batches = run};
        CHECK_OK(bf_train(&cfg, &opt, &res[run]));
        fclose(log);
        char path[BF_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/checkpoints/epoch_0002/model.safetensors", cfg.run.dir);
        weights[run] = bf_test_read_file(path, &bytes[run]);
    }
    CHECK(res[0].final_eval.loss == res[1].final_eval.loss && res[0].final_eval.top1 == res[1].final_eval.top1,
          "CUDA bf_train: the same final evaluation with uint8 and float batches (loss %.9g vs %.9g)",
          res[0].final_eval.loss, res[1].final_eval.loss);
    CHECK(weights[0] && weights[1] && bytes[0] == bytes[1] && memcmp(weights[0], weights[1], bytes[0]) == 0,
          "CUDA bf_train: bit-identical weights with uint8 and float batches");
    free(weights[0]);
    free(weights[1]);
}

int main(void) {
    bf_backend *cpu = NULL, *gpu = NULL;
    if (!pair_open(&cpu, &gpu, 1)) return bf_test_finish();
    make_tree("upload_cuda", 8, 80, 60, 6);
    test_epoch(gpu);
    bf_backend_destroy(gpu);
    bf_backend_destroy(cpu);
    test_train();
    bf_remove_tree(root);
    return bf_test_finish();
}
