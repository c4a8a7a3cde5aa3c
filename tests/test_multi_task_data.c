/* test_multi_task_data.c - the multi-task data side of the BU-TD networks (issue 5, point 5):
 *  - Multi-MNIST from a small generated IDX digit set: the composition against an independent
 *    reference (PIL's nearest-neighbour indices, recorded from PIL 9), partners recovered from
 *    the pixels and checked against the task labels, reproducibility from the seed;
 *  - Multi-Fashion-MNIST from the installed Fashion-MNIST (skipped parts when absent);
 *  - the loader's tasks: random tasks repeat for (seed, epoch), are balanced, labels follow the
 *    task; a fixed task gives the task_labels column;
 *  - per-task evaluation with a fake predictor of known accuracy, and its metrics.jsonl line;
 *  - CelebA from a fixture written here (JPEGs encoded with TurboJPEG, attribute and partition
 *    lists): splits, labels, pixels within JPEG tolerance, and clear errors; a directory named like
 *    an image, a JPEG of more than 500 progressive scans and a multi-GB file (unread) skipped and
 *    counted, an image count the list cannot hold refused at the list's end without allocating it;
 *  - config: the dataset names, and subset refused for a multi-task dataset. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "bioflex/config.h"
#include "bioflex/data.h"
#include "dataset_tasks.h"
#include "fsutil.h"
#include "task_eval.h"
#include "testutil.h"

static bf_data_config data_config(bf_dataset_kind kind, const char *path) {
    bf_config c;
    bf_config_defaults(&c);
    c.data.dataset = kind;
    snprintf(c.data.path, sizeof c.data.path, "%s", path);
    return c.data;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

/* Digit i of the fake set: a unique pattern (so a composition reveals which digits it holds) with
 * zeros in the overlap-free border regions irrelevant; label i % 10 rotated by `shift`. */
static uint8_t digit_pixel(int i, int p) { return (uint8_t)((i * 37 + p * 11 + (p / 28) * 5) % 251); }

static void write_digits(const char *dir, const char *prefix, int count) {
    size_t bytes = 16 + (size_t)count * 784;
    unsigned char *img = malloc(bytes), *lab = malloc(8 + (size_t)count);
    put_be32(img, 0x803), put_be32(img + 4, (uint32_t)count), put_be32(img + 8, 28), put_be32(img + 12, 28);
    for (int i = 0; i < count; i++)
        for (int p = 0; p < 784; p++) img[16 + (size_t)i * 784 + p] = digit_pixel(i, p);
    put_be32(lab, 0x801), put_be32(lab + 4, (uint32_t)count);
    for (int i = 0; i < count; i++) lab[8 + i] = (unsigned char)((i * 7 + 3) % 10);
    char path[512];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    write_file(path, img, bytes);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    write_file(path, lab, 8 + (size_t)count);
    free(img);
    free(lab);
}

/* PIL 9's Image.resize((28, 28), NEAREST) of a 36-pixel axis picks these source indices. */
static const int pil_nearest_36_to_28[28] = {0,  1,  3,  4,  5,  7,  8,  9,  10, 12, 13, 14, 16, 17,
                                             18, 19, 21, 22, 23, 25, 26, 27, 28, 30, 31, 32, 34, 35};

static void reference_compose(const uint8_t *a, const uint8_t *b, uint8_t *out) {
    uint8_t canvas[36][36] = {{0}};
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) canvas[y][x] = a[y * 28 + x];
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            uint8_t v = b[y * 28 + x];
            if (v > canvas[y + 6][x + 6]) canvas[y + 6][x + 6] = v;
        }
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) out[y * 28 + x] = canvas[pil_nearest_36_to_28[y]][pil_nearest_36_to_28[x]];
}

static void test_compose(void) {
    uint8_t a[784], b[784], got[784], want[784];
    for (int trial = 0; trial < 3; trial++) {
        for (int p = 0; p < 784; p++) a[p] = digit_pixel(trial, p), b[p] = digit_pixel(trial + 100, p);
        bf_multi_digits_compose(a, b, got);
        reference_compose(a, b, want);
        CHECK(memcmp(got, want, sizeof got) == 0, "compose trial %d equals the PIL-index reference", trial);
    }
    /* Only the left digit: the top-left corner keeps it, the bottom-right corner is empty. */
    memset(b, 0, sizeof b);
    for (int p = 0; p < 784; p++) a[p] = 200;
    bf_multi_digits_compose(a, b, got);
    CHECK(got[0] == 200 && got[27 * 28 + 27] == 0, "left digit at upper left (%u, %u)", got[0], got[27 * 28 + 27]);
}

#define MULTI_TRAIN 60
#define MULTI_TEST 25

static void test_multi_mnist_generated(const char *tmp) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/digits", tmp);
    mkdir(dir, 0700);
    write_digits(dir, "train", MULTI_TRAIN);
    write_digits(dir, "t10k", MULTI_TEST);
    bf_data_config cfg = data_config(BF_DATASET_MULTI_MNIST, dir);
    bf_dataset *tr = NULL, *te = NULL, *again = NULL, *other = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 11, BF_SPLIT_TRAIN, &tr));
    CHECK_OK(bf_dataset_open(&cfg, 11, BF_SPLIT_TEST, &te));
    /* the pairs follow [data] multi_seed, not the run seed: runs with several seeds share one dataset */
    CHECK_OK(bf_dataset_open(&cfg, 12, BF_SPLIT_TRAIN, &again));
    bf_data_config other_cfg = cfg;
    other_cfg.multi_seed = cfg.multi_seed + 1;
    CHECK_OK(bf_dataset_open(&other_cfg, 11, BF_SPLIT_TRAIN, &other));
    if (!tr || !te || !again || !other) goto done;
    CHECK(tr->num_samples == MULTI_TRAIN && te->num_samples == MULTI_TEST, "sizes %d %d", tr->num_samples, te->num_samples);
    CHECK(tr->num_tasks == 2 && tr->task_classes == 10 && tr->num_classes == 10, "2 tasks of 10 classes");
    CHECK(tr->c == 1 && tr->h == 28 && tr->w == 28, "1x28x28");
    CHECK(!strcmp(tr->name, "multi_mnist"), "name %s", tr->name);
    CHECK_CLOSE(tr->mean[0], 0.1307, 1e-6, 0, "reference mean");
    CHECK_CLOSE(tr->std[0], 0.3081, 1e-6, 0, "reference std");
    /* Every sample is compose(digit i, some digit j) with task labels (label i, label j). */
    int found_all = 1, labels_ok = 1, partners_seen = 0;
    int seen[MULTI_TRAIN] = {0};
    uint8_t a[784], b[784], want[784];
    for (int i = 0; i < tr->num_samples; i++) {
        for (int p = 0; p < 784; p++) a[p] = digit_pixel(i, p);
        int partner = -1;
        for (int j = 0; j < MULTI_TRAIN && partner < 0; j++) {
            for (int p = 0; p < 784; p++) b[p] = digit_pixel(j, p);
            reference_compose(a, b, want);
            if (!memcmp(want, tr->pixels + (size_t)i * 784, 784)) partner = j;
        }
        if (partner < 0) {
            found_all = 0;
            continue;
        }
        if (!seen[partner]++) partners_seen++;
        labels_ok &= tr->task_labels[2 * i] == (i * 7 + 3) % 10 && tr->task_labels[2 * i + 1] == (partner * 7 + 3) % 10 &&
                     tr->labels[i] == tr->task_labels[2 * i];
    }
    CHECK(found_all, "every train image is the composition of its digit and a partner");
    CHECK(labels_ok, "task labels are (left digit's label, partner's label)");
    CHECK(partners_seen > MULTI_TRAIN / 3, "partners spread over the split (%d distinct of %d)", partners_seen, MULTI_TRAIN);
    CHECK(memcmp(tr->pixels, again->pixels, (size_t)MULTI_TRAIN * 784) == 0 &&
              memcmp(tr->task_labels, again->task_labels, sizeof(int32_t) * 2 * MULTI_TRAIN) == 0,
          "same multi_seed, same data (whatever the run seed)");
    CHECK(memcmp(tr->task_labels, other->task_labels, sizeof(int32_t) * 2 * MULTI_TRAIN) != 0,
          "another multi_seed pairs differently");
    /* Limits apply to the generated samples and keep them as they were. */
    bf_dataset_free(again);
    again = NULL;
    cfg.train_limit = 10;
    CHECK_OK(bf_dataset_open(&cfg, 11, BF_SPLIT_TRAIN, &again));
    if (again)
        CHECK(again->num_samples == 10 && !memcmp(again->pixels, tr->pixels, 7840) &&
                  !memcmp(again->task_labels, tr->task_labels, 20 * sizeof(int32_t)),
              "train_limit keeps the first samples unchanged");
    /* A missing digit set names the file. */
    bf_dataset *none = NULL;
    bf_data_config missing = data_config(BF_DATASET_MULTI_FASHION_MNIST, "/nonexistent/digits");
    bf_status s = bf_dataset_open(&missing, 1, BF_SPLIT_TRAIN, &none);
    CHECK(s != BF_OK && strstr(bf_last_error(), "/nonexistent/digits/train-images-idx3-ubyte"), "missing IDX: %s",
          bf_last_error());
done:
    bf_dataset_free(tr);
    bf_dataset_free(te);
    bf_dataset_free(again);
    bf_dataset_free(other);
}

static void test_multi_fashion_mnist(void) {
    struct stat st;
    if (stat("/usr/share/datasets/fashion-mnist", &st) != 0) {
        printf("note: /usr/share/datasets/fashion-mnist absent, Multi-Fashion-MNIST part skipped\n");
        return;
    }
    bf_data_config cfg = data_config(BF_DATASET_MULTI_FASHION_MNIST, "");
    bf_dataset *tr = NULL, *te = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &tr));
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &te));
    if (tr && te) {
        CHECK(tr->num_samples == 50000 && te->num_samples == 10000, "reference split sizes: %d %d", tr->num_samples,
              te->num_samples);
        long hist[2][10] = {{0}};
        int ok = 1;
        for (int i = 0; i < te->num_samples; i++)
            for (int k = 0; k < 2; k++) {
                int32_t l = te->task_labels[2 * i + k];
                if (l < 0 || l > 9) ok = 0;
                else hist[k][l]++;
            }
        CHECK(ok, "test labels in 0..9");
        /* Fashion-MNIST's test set has 1000 per class: the left column exactly, the random partner
         * roughly (binomial, std ~30). */
        for (int c = 0; c < 10; c++) {
            CHECK(hist[0][c] == 1000, "left class %d count %ld", c, hist[0][c]);
            CHECK(hist[1][c] > 850 && hist[1][c] < 1150, "partner class %d count %ld", c, hist[1][c]);
        }
    }
    bf_dataset_free(tr);
    bf_dataset_free(te);
}

/* ---------------------------------------------------------------------------------------------
 * Loader tasks */

static bf_dataset *fake_multi_task(int n, int tasks, int classes) {
    bf_dataset *d = calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "fake_tasks");
    d->num_samples = n, d->c = 1, d->h = d->w = 2;
    d->num_tasks = tasks, d->task_classes = d->num_classes = classes;
    for (int ch = 0; ch < 3; ch++) d->mean[ch] = 0, d->std[ch] = 1;
    d->pixels = malloc((size_t)n * 4);
    d->labels = malloc((size_t)n * sizeof(int32_t));
    d->task_labels = malloc((size_t)n * tasks * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        for (int p = 0; p < 4; p++) d->pixels[i * 4 + p] = (uint8_t)(i % 256); /* the image says its index */
        for (int k = 0; k < tasks; k++) d->task_labels[i * tasks + k] = (i * 3 + k * 5) % classes;
        d->labels[i] = d->task_labels[i * tasks];
    }
    return d;
}

/* Runs one epoch and records each position's task and (index, label). */
static void run_epoch(const bf_dataset *d, bf_loader_options o, int epoch, int32_t *tasks, int *consistent) {
    bf_loader *l = NULL;
    CHECK_OK(bf_loader_create(d, &o, &l));
    if (!l) return;
    CHECK_OK(bf_loader_start_epoch(l, epoch, 0));
    int pos = 0;
    *consistent = 1;
    for (;;) {
        bf_batch *b = NULL;
        if (bf_loader_next(l, &b, NULL) != BF_OK || !b) break;
        if (!b->tasks) *consistent = 0;
        for (int j = 0; j < b->n && b->tasks; j++, pos++) {
            int index = (int)lroundf(b->images[(size_t)j * 4] * 255.0f);
            tasks[pos] = b->tasks[j];
            if (b->labels[j] != d->task_labels[index * d->num_tasks + b->tasks[j]]) *consistent = 0;
        }
        bf_loader_release(l, b);
    }
    bf_loader_destroy(l);
}

static void test_loader_tasks(void) {
    enum { N = 250, T = 5 };
    bf_dataset *d = fake_multi_task(N, T, 4);
    bf_loader_options o = {.batch_size = 16, .threads = 2, .prefetch = 3, .shuffle = 1, .seed = 9, .task = BF_TASK_RANDOM};
    int32_t a[N], b[N], c[N], e[N];
    int ok1, ok2, ok3, ok4;
    run_epoch(d, o, 3, a, &ok1);
    o.threads = 1;
    run_epoch(d, o, 3, b, &ok2);
    run_epoch(d, o, 4, c, &ok3);
    CHECK(ok1 && ok2 && ok3, "every label is the sample's label for its task");
    CHECK(memcmp(a, b, sizeof a) == 0, "random tasks repeat for (seed, epoch) whatever the threads");
    CHECK(memcmp(a, c, sizeof a) != 0, "another epoch draws other tasks");
    int count[T] = {0};
    for (int i = 0; i < N; i++) count[a[i]]++;
    for (int k = 0; k < T; k++) CHECK(count[k] > 25 && count[k] < 75, "task %d drawn %d of %d times (expect ~50)", k, count[k], N);
    o.task = 3;
    o.shuffle = 0;
    run_epoch(d, o, 0, e, &ok4);
    int all3 = 1;
    for (int i = 0; i < N; i++) all3 &= e[i] == 3;
    CHECK(ok4 && all3, "fixed task 3: every sample has task 3 and its task-3 label");
    /* Bad task and single-task datasets. */
    bf_loader *l = NULL;
    o.task = T;
    bf_status s = bf_loader_create(d, &o, &l);
    CHECK(s == BF_ERR_ARG && strstr(bf_last_error(), "allowed: -1 = random, 0..4"), "task out of range: %s", bf_last_error());
    o.task = -2;
    CHECK(bf_loader_create(d, &o, &l) == BF_ERR_ARG, "task -2 refused");
    free(d->task_labels);
    d->task_labels = NULL;
    d->num_tasks = 0;
    o.task = 7; /* ignored for a single-task dataset */
    CHECK_OK(bf_loader_create(d, &o, &l));
    if (l) {
        bf_batch *bt = NULL;
        CHECK_OK(bf_loader_start_epoch(l, 0, 0));
        CHECK_OK(bf_loader_next(l, &bt, NULL));
        CHECK(bt && bt->tasks == NULL, "single-task batches carry no tasks");
        if (bt) bf_loader_release(l, bt);
        bf_loader_destroy(l);
    }
    bf_dataset_free(d);
}

/* ---------------------------------------------------------------------------------------------
 * Per-task evaluation */

typedef struct fake_model {
    const bf_dataset *d;
    long calls;
} fake_model;

/* Right for task 0 always; for other tasks right only on even sample indices (wrong = label+1).
 * Loss: the task index per sample, so each task's mean loss is its index. */
static bf_status fake_predict(void *ctx, const bf_batch *b, int32_t *pred, double *loss_sum) {
    fake_model *m = ctx;
    m->calls++;
    for (int j = 0; j < b->n; j++) {
        int index = (int)lroundf(b->images[(size_t)j * 4] * 255.0f);
        int right = b->tasks[j] == 0 || index % 2 == 0;
        pred[j] = right ? b->labels[j] : (b->labels[j] + 1) % m->d->task_classes;
        *loss_sum += b->tasks[j];
    }
    return BF_OK;
}

static void test_evaluate_tasks(const char *tmp) {
    enum { N = 101, T = 3 };
    bf_dataset *d = fake_multi_task(N, T, 10);
    fake_model m = {.d = d};
    bf_loader_options o = {.batch_size = 8, .threads = 2, .prefetch = 2, .shuffle = 1, .drop_last = 1, .seed = 4};
    bf_task_eval_result r;
    CHECK_OK(bf_evaluate_tasks(d, &o, 0, 0, fake_predict, &m, &r));
    double even = 51.0 / 101.0;
    CHECK(r.num_tasks == T && r.samples == N, "%d tasks, %d samples (whole split: no drop_last)", r.num_tasks, r.samples);
    CHECK_CLOSE(r.task_accuracy[0], 1.0, 1e-12, 0, "task 0 accuracy");
    CHECK_CLOSE(r.task_accuracy[1], even, 1e-12, 0, "task 1 accuracy");
    CHECK_CLOSE(r.task_accuracy[2], even, 1e-12, 0, "task 2 accuracy");
    CHECK_CLOSE(r.mean_accuracy, (1.0 + 2 * even) / 3, 1e-12, 0, "mean = pooled accuracy");
    CHECK_CLOSE(r.task_loss[2], 2.0, 1e-12, 0, "task 2 mean loss");
    CHECK_CLOSE(r.mean_loss, 1.0, 1e-12, 0, "mean loss");
    CHECK(m.calls == T * 13, "13 batches per task (%ld calls)", m.calls);
    CHECK_OK(bf_evaluate_tasks(d, &o, 0, 2, fake_predict, &m, &r));
    CHECK(r.samples == 16, "max_batches 2 -> 16 samples (%d)", r.samples);

    /* The metrics line. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/run", tmp);
    bf_metrics_log log;
    CHECK_OK(bf_metrics_open(&log, dir, 0));
    CHECK_OK(bf_evaluate_tasks(d, &o, 0, 0, fake_predict, &m, &r));
    bf_metrics_eval_tasks(&log, 2, 40, &r, "test", NULL);
    bf_metrics_close(&log);
    char path[600], line[4096] = "";
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
    }
    cJSON *j = cJSON_Parse(line);
    CHECK(j != NULL, "metrics line parses: %s", line);
    if (j) {
        cJSON *acc = cJSON_GetObjectItem(j, "task_accuracy");
        CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "type")), "eval_tasks"), "type eval_tasks");
        CHECK(cJSON_GetArraySize(acc) == T, "3 task accuracies");
        CHECK_CLOSE(cJSON_GetArrayItem(acc, 1)->valuedouble, even, 1e-12, 0, "task 1 accuracy in json");
        CHECK_CLOSE(cJSON_GetObjectItem(j, "accuracy")->valuedouble, r.mean_accuracy, 1e-12, 0, "mean in json");
        CHECK(cJSON_GetObjectItem(j, "epoch")->valueint == 2 && cJSON_GetObjectItem(j, "step")->valueint == 40, "epoch, step");
        cJSON_Delete(j);
    }
    /* A single-task dataset is refused. */
    d->num_tasks = 0;
    CHECK(bf_evaluate_tasks(d, &o, 0, 0, fake_predict, &m, &r) == BF_ERR_ARG, "single-task dataset refused");
    d->num_tasks = T;
    bf_dataset_free(d);
}

/* ---------------------------------------------------------------------------------------------
 * CelebA fixture */

#define FIX_N 30
#define CW 178
#define CH 218

/* Smooth content (JPEG keeps it within a few levels), different per image and channel. */
static uint8_t fixture_pixel(int i, int y, int x, int ch) {
    double v = 128 + 90 * sin(0.03 * (x + 3 * i) + 0.9 * ch) * cos(0.025 * (y - 2 * i) + 0.4 * ch);
    return (uint8_t)lround(v);
}
static int fixture_attr(int i, int k) { return ((i * 13 + k * 7) % 5) < 2 ? 1 : -1; }
static int fixture_partition(int i) { return i % 5 == 3 ? 1 : i % 5 == 4 ? 2 : 0; } /* 18 train, 6 valid, 6 test */

static void write_celeba_fixture(const char *dir, int broken_attr_line) {
    char path[600];
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/img_align_celeba", dir);
    mkdir(path, 0700);
    tjhandle tj = tjInitCompress();
    uint8_t *rgb = malloc((size_t)CW * CH * 3);
    for (int i = 0; i < FIX_N; i++) {
        for (int y = 0; y < CH; y++)
            for (int x = 0; x < CW; x++)
                for (int ch = 0; ch < 3; ch++) rgb[((size_t)y * CW + x) * 3 + ch] = fixture_pixel(i, y, x, ch);
        unsigned char *jpeg = NULL;
        unsigned long size = 0;
        if (tjCompress2(tj, rgb, CW, 0, CH, TJPF_RGB, &jpeg, &size, TJSAMP_444, 95, TJFLAG_ACCURATEDCT) != 0) {
            fprintf(stderr, "tjCompress2: %s\n", tjGetErrorStr2(tj));
            exit(1);
        }
        snprintf(path, sizeof path, "%s/img_align_celeba/%06d.jpg", dir, i + 1);
        write_file(path, jpeg, size);
        tjFree(jpeg);
    }
    free(rgb);
    tjDestroy(tj);
    snprintf(path, sizeof path, "%s/list_attr_celeba.txt", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "%d\n", FIX_N);
    for (int k = 0; k < 40; k++) fprintf(f, "Attr_%d ", k);
    fprintf(f, "\n");
    for (int i = 0; i < FIX_N; i++) {
        fprintf(f, "%06d.jpg", i + 1);
        for (int k = 0; k < 40; k++) fprintf(f, " %2d", i + 3 == broken_attr_line && k == 17 ? 0 : fixture_attr(i, k));
        fprintf(f, "\n");
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/list_eval_partition.txt", dir);
    f = fopen(path, "w");
    for (int i = 0; i < FIX_N; i++) fprintf(f, "%06d.jpg %d\n", i + 1, fixture_partition(i));
    fclose(f);
}

/* A 178x218 grey progressive JPEG of `scans` DC scans, each coding every block's difference as 0
 * (a Huffman table of the one code "0"): valid, decodable without a warning, and as costly as its
 * scan count. tests/fixtures/jpeg_many_scans.jpg (from fuzzing) at CelebA's size. */
static void write_many_scans_jpeg(const char *path, int scans) {
    static const uint8_t sof[] = {0xFF, 0xC2, 0, 11, 8, 0, CH, 0, CW, 1, 1, 0x11, 0};
    static const uint8_t sos[] = {0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 0, 0};
    uint8_t dqt[69] = {0xFF, 0xDB, 0, 67, 0}, dht[22] = {0xFF, 0xC4, 0, 20, 0, 1}; /* one code of length 1: 0 */
    memset(dqt + 5, 1, 64);
    uint8_t data[81] = {0}; /* 23 x 28 = 644 blocks, a 0 bit each: 80 bytes and 4 bits, padded with 1s */
    data[80] = 0x0F;
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite("\xFF\xD8", 1, 2, f);
    fwrite(dqt, 1, sizeof dqt, f), fwrite(sof, 1, sizeof sof, f), fwrite(dht, 1, sizeof dht, f);
    for (int i = 0; i < scans; i++) fwrite(sos, 1, sizeof sos, f), fwrite(data, 1, sizeof data, f);
    fwrite("\xFF\xD9", 1, 2, f);
    fclose(f);
}

/* bf_dataset_open with stderr, where a skipped image is warned about, caught in *warnings (free it;
 * NULL when nothing was written). */
static bf_status open_warned(const bf_data_config *cfg, bf_split split, bf_dataset **d, const char *tmp,
                             char **warnings) {
    char log[600];
    snprintf(log, sizeof log, "%s/stderr.txt", tmp);
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) dup2(fd, 2);
    bf_status s = bf_dataset_open(cfg, 1, split, d);
    fflush(stderr);
    if (saved >= 0) dup2(saved, 2), close(saved);
    if (fd >= 0) close(fd);
    size_t n = 0;
    *warnings = bf_test_read_file(log, &n);
    return s;
}

static void check_celeba_split(const bf_dataset *d, int partition, const char *what) {
    int n = 0, labels_ok = 1;
    double worst = 0, sum = 0;
    long count = 0;
    for (int i = 0; i < FIX_N; i++) {
        if (fixture_partition(i) != partition) continue;
        for (int k = 0; k < 40; k++) labels_ok &= d->task_labels[(size_t)n * 40 + k] == (fixture_attr(i, k) > 0);
        labels_ok &= d->labels[n] == d->task_labels[(size_t)n * 40];
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < CH; y++)
                for (int x = 0; x < CW; x++) {
                    double diff = fabs((double)d->pixels[(((size_t)n * 3 + ch) * CH + y) * CW + x] - fixture_pixel(i, y, x, ch));
                    if (diff > worst) worst = diff;
                    sum += diff, count++;
                }
        n++;
    }
    CHECK(d->num_samples == n, "%s: %d samples (expected %d)", what, d->num_samples, n);
    CHECK(labels_ok, "%s: labels are the attributes mapped -1/1 -> 0/1", what);
    CHECK(worst <= 12 && sum / count < 1.5, "%s: pixels within JPEG tolerance (max %.0f, mean %.3f levels)", what, worst,
          sum / count);
}

static void test_celeba(const char *tmp) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/celeba", tmp);
    write_celeba_fixture(dir, -1);
    bf_data_config cfg = data_config(BF_DATASET_CELEBA, dir);
    bf_dataset *tr = NULL, *te = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &tr));
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &te));
    if (tr) {
        CHECK(tr->num_tasks == 40 && tr->task_classes == 2 && tr->num_classes == 2, "40 binary tasks");
        CHECK(tr->c == 3 && tr->h == 218 && tr->w == 178, "3x218x178");
        CHECK_CLOSE(tr->mean[1], 0.5, 0, 0, "mean 0.5");
        CHECK_CLOSE(tr->std[2], 0.5, 0, 0, "std 0.5");
        check_celeba_split(tr, 0, "train");
    }
    if (te) check_celeba_split(te, 2, "test");
    int c, h, w, k;
    bf_dataset_shape(&cfg, &c, &h, &w, &k);
    CHECK(c == 3 && h == 218 && w == 178 && k == 2, "bf_dataset_shape celeba %dx%dx%d, %d", c, h, w, k);
    bf_dataset_free(te);
    te = NULL;
    cfg.train_limit = 5;
    bf_dataset_free(tr);
    tr = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &tr));
    if (tr) CHECK(tr->num_samples == 5, "train_limit 5 -> %d", tr->num_samples);
    bf_dataset_free(tr);
    tr = NULL;
    cfg.train_limit = 0;

    /* Errors. A missing image (the second train image, 000002.jpg) names the file. */
    char path[700];
    snprintf(path, sizeof path, "%s/img_align_celeba/000002.jpg", dir);
    unlink(path);
    bf_status s = bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &tr);
    CHECK(s != BF_OK && strstr(bf_last_error(), "000002.jpg"), "missing image: %s", bf_last_error());
    /* A file that is not a JPEG is a bad image: left out, counted, the rest in order. */
    write_file(path, "not a jpeg", 10);
    s = bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &tr);
    CHECK(s == BF_OK && tr, "not a JPEG: skipped, the split still opens (%s)", s == BF_OK ? "ok" : bf_last_error());
    if (tr) {
        int labels_ok = 1; /* sample 1 is now the fixture's image 3 (index 2, also train) */
        for (int k = 0; k < 40; k++) labels_ok &= tr->task_labels[40 + k] == (fixture_attr(2, k) > 0);
        CHECK(tr->num_samples == 17 && tr->skipped_images == 1 && labels_ok && tr->labels[1] == tr->task_labels[40],
              "one bad image of 18: %d samples, %d skipped, labels shifted down", tr->num_samples, tr->skipped_images);
        bf_dataset_free(tr);
        tr = NULL;
    }
    /* A directory named like an image opens, and its end can lie at LONG_MAX (ext4): a bad image
     * named as not a regular file, not a read of that size. More than 500 progressive scans (seconds
     * of CPU each): a bad image as the other JPEG loaders have it (jpeg_decode.c's MAX_SCANS). A
     * 4 GiB file (sparse, so cheap to make) where a ~10 KB JPEG belongs: skipped by its size, not
     * read whole into memory first. */
    static const char *bad_kinds[3][2] = {
        {"a directory", "not a regular file"}, {"600 scans", "more than 500 scans"}, {"a 4 GiB file", "larger than an image"}};
    for (int b = 0; b < 3; b++) {
        unlink(path);
        rmdir(path);
        if (b == 0) mkdir(path, 0700);
        else if (b == 1) write_many_scans_jpeg(path, 600);
        else {
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            CHECK(fd >= 0 && ftruncate(fd, (off_t)4 << 30) == 0, "make a 4 GiB sparse %s", path);
            if (fd >= 0) close(fd);
        }
        char *warned = NULL;
        s = open_warned(&cfg, BF_SPLIT_TRAIN, &tr, tmp, &warned);
        CHECK(s == BF_OK && tr && tr->num_samples == 17 && tr->skipped_images == 1 && warned &&
                  strstr(warned, "000002.jpg") && strstr(warned, bad_kinds[b][1]),
              "000002.jpg as %s: skipped and counted, warned as \"%s\" (%s, %d samples, %d skipped; stderr: %s)",
              bad_kinds[b][0], bad_kinds[b][1], s == BF_OK ? "ok" : bf_last_error(), tr ? tr->num_samples : -1,
              tr ? tr->skipped_images : -1, warned ? warned : "");
        free(warned);
        bf_dataset_free(tr);
        tr = NULL;
    }
    /* ... and the same file with 400 scans decodes (grey: every coefficient 0, plus the level shift) */
    write_many_scans_jpeg(path, 400);
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &tr));
    CHECK(tr && tr->num_samples == 18 && tr->pixels[3 * CH * CW] == 128, "400 scans decode (%d samples, pixel %d)",
          tr ? tr->num_samples : -1, tr ? tr->pixels[3 * CH * CW] : -1);
    bf_dataset_free(tr);
    tr = NULL;

    /* An image count of 2^28 on line 1 of a 30-image list: refused when the list ends, naming the
     * file and line, without allocating the 60 GB that count of entries would take (a child whose
     * address space may grow by 1 GiB). */
    char counted[512];
    snprintf(counted, sizeof counted, "%s/celeba_count", tmp);
    write_celeba_fixture(counted, -1);
    snprintf(path, sizeof path, "%s/list_attr_celeba.txt", counted);
    size_t size = 0;
    char *list = bf_test_read_file(path, &size), *rest = list ? strchr(list, '\n') : NULL;
    FILE *lf = rest ? fopen(path, "w") : NULL;
    CHECK(lf != NULL, "rewrite %s", path);
    if (lf) {
        fprintf(lf, "268435456%s", rest);
        fclose(lf);
    }
    free(list);
    bf_data_config ccfg = data_config(BF_DATASET_CELEBA, counted);
    pid_t child = bf_test_fork_capped((size_t)1 << 30);
    if (child == 0) {
        bf_dataset *cd = NULL;
        bf_status cs = bf_dataset_open(&ccfg, 1, BF_SPLIT_TRAIN, &cd);
        int refused = cs == BF_ERR_FORMAT && strstr(bf_last_error(), "list_attr_celeba.txt:33:") &&
                      strstr(bf_last_error(), "268435456");
        if (!refused) fprintf(stderr, "child: %s: %s\n", bf_status_name(cs), bf_last_error());
        _exit(refused ? 0 : 1);
    }
    int child_status;
    CHECK(bf_test_child_passed(child, &child_status),
          "an image count of 2^28 in a 30-image list refused naming list_attr_celeba.txt:33 within 1 GiB more "
          "address space (status %d)", child_status);
    /* A malformed attribute value: file:line. */
    char bad[512];
    snprintf(bad, sizeof bad, "%s/celeba_bad", tmp);
    write_celeba_fixture(bad, 9);
    bf_data_config bcfg = data_config(BF_DATASET_CELEBA, bad);
    s = bf_dataset_open(&bcfg, 1, BF_SPLIT_TEST, &tr);
    CHECK(s == BF_ERR_FORMAT && strstr(bf_last_error(), "list_attr_celeba.txt:9:") && strstr(bf_last_error(), "attribute 18"),
          "malformed attribute: %s", bf_last_error());
    /* Lists out of step. */
    snprintf(path, sizeof path, "%s/list_eval_partition.txt", bad);
    FILE *f = fopen(path, "w");
    fprintf(f, "000001.jpg 0\n000003.jpg 0\n");
    fclose(f);
    s = bf_dataset_open(&bcfg, 1, BF_SPLIT_TEST, &tr);
    CHECK(s == BF_ERR_FORMAT && strstr(bf_last_error(), "list_eval_partition.txt:2 names 000003.jpg"), "order: %s",
          bf_last_error());
    /* A missing list names where to get CelebA. */
    bf_data_config ncfg = data_config(BF_DATASET_CELEBA, "/nonexistent/celeba");
    s = bf_dataset_open(&ncfg, 1, BF_SPLIT_TRAIN, &tr);
    CHECK(s == BF_ERR_IO && strstr(bf_last_error(), "/nonexistent/celeba/list_attr_celeba.txt"), "missing list: %s",
          bf_last_error());
    CHECK(tr == NULL, "no dataset after errors");
}

static void test_config(void) {
    bf_config c;
    bf_config_defaults(&c);
    CHECK_OK(bf_config_set(&c, "data.dataset=multi_fashion_mnist"));
    CHECK(c.data.dataset == BF_DATASET_MULTI_FASHION_MNIST, "multi_fashion_mnist parsed");
    CHECK(!strcmp(bf_dataset_name(BF_DATASET_MULTI_MNIST), "multi_mnist") && !strcmp(bf_dataset_name(BF_DATASET_CELEBA), "celeba"),
          "names");
    CHECK_OK(bf_config_validate(&c));
    CHECK_OK(bf_config_set(&c, "data.subset=balanced"));
    bf_status s = bf_config_validate(&c);
    CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "multi-task multi_fashion_mnist"), "subset refused: %s", bf_last_error());
    s = bf_config_set(&c, "data.dataset=multi_cifar");
    CHECK(s != BF_OK && strstr(bf_last_error(), "celeba"), "unknown dataset lists the allowed ones: %s", bf_last_error());
    int ch, h, w, k;
    c.data.dataset = BF_DATASET_MULTI_MNIST;
    bf_dataset_shape(&c.data, &ch, &h, &w, &k);
    CHECK(ch == 1 && h == 28 && w == 28 && k == 10, "multi_mnist shape");
    CHECK(bf_dataset_num_tasks(&c.data) == 2, "multi_mnist: 2 tasks");
    c.data.dataset = BF_DATASET_CELEBA;
    CHECK(bf_dataset_num_tasks(&c.data) == 40, "celeba: 40 tasks");
    c.data.dataset = BF_DATASET_CIFAR10;
    CHECK(bf_dataset_num_tasks(&c.data) == 0, "cifar10: single task");
}

int main(void) {
    alarm(300);
    char tmp[] = "/tmp/bioflex_test_multi_task_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_compose();
    test_multi_mnist_generated(tmp);
    test_multi_fashion_mnist();
    test_loader_tasks();
    test_evaluate_tasks(tmp);
    test_celeba(tmp);
    test_config();
    bf_remove_tree(tmp);
    return bf_test_finish();
}
