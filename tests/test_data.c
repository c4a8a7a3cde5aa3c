/* test_data.c - datasets (IDX, CIFAR-10 binary, procedural) and the batch loader.
 *
 * File formats are tested on small files written to a fresh directory under /tmp, so every check
 * but the real Fashion-MNIST one runs anywhere. The loader is tested on a synthetic in-memory
 * dataset whose label is the sample index and whose pixels are a known function of
 * (index, channel, y, x), so every output can be traced back to its sample. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "bioflex/data.h"
#include "fsutil.h"
#include "testutil.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* ---------------------------------------------------------------------------------------------
 * File helpers */

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Writes `n` bytes to path, gzip-compressed when gz is set. */
static void write_bytes(const char *path, const void *data, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        CHECK(f != NULL, "cannot create %s", path);
        if (!f) return;
        CHECK(n == 0 || gzwrite(f, data, (unsigned)n) == (int)n, "gzwrite %s", path);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL, "cannot create %s", path);
        if (!f) return;
        CHECK(fwrite(data, 1, n, f) == n, "fwrite %s", path);
        fclose(f);
    }
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static bf_data_config base_config(bf_dataset_kind kind, const char *path) {
    bf_data_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.dataset = kind;
    snprintf(cfg.path, sizeof cfg.path, "%s", path ? path : "");
    cfg.procedural_classes = 10;
    cfg.procedural_size = 16;
    cfg.procedural_channels = 3;
    cfg.procedural_train = 500;
    cfg.procedural_test = 200;
    return cfg;
}

/* Opens and expects failure with `want`; the message must mention `needle`. */
static void expect_open_error(const bf_data_config *cfg, bf_split split, bf_status want, const char *needle,
                              const char *what) {
    bf_dataset *d = NULL;
    bf_status st = bf_dataset_open(cfg, 1, split, &d);
    CHECK(st == want, "%s: expected %s, got %s (%s)", what, bf_status_name(want), bf_status_name(st),
          bf_last_error());
    CHECK(d == NULL, "%s: no dataset on failure", what);
    CHECK(strstr(bf_last_error(), needle) != NULL, "%s: message '%s' should mention '%s'", what,
          bf_last_error(), needle);
    bf_dataset_free(d);
}

/* ---------------------------------------------------------------------------------------------
 * Real Fashion-MNIST */

static void test_fashion_mnist(void) {
    if (!file_exists(FASHION_DIR "/train-images-idx3-ubyte.gz")) {
        printf("note: %s not found, real Fashion-MNIST checks skipped\n", FASHION_DIR);
        return;
    }
    bf_data_config cfg = base_config(BF_DATASET_FASHION_MNIST, "");
    bf_dataset *train = NULL, *test = NULL, *small = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &train));
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &test));
    if (!train || !test) goto done;

    CHECK(train->num_samples == 60000, "train samples %d", train->num_samples);
    CHECK(test->num_samples == 10000, "test samples %d", test->num_samples);
    CHECK(train->c == 1 && train->h == 28 && train->w == 28, "shape %dx%dx%d", train->c, train->h, train->w);
    CHECK(train->num_classes == 10, "classes %d", train->num_classes);
    CHECK(strcmp(train->name, "fashion_mnist") == 0, "name %s", train->name);
    CHECK(train->labels[0] == 9, "first train label %d (an ankle boot)", train->labels[0]);
    CHECK(test->labels[0] == 9, "first test label %d", test->labels[0]);
    CHECK_CLOSE(train->mean[0], 0.2860, 1e-6, 0, "published mean");
    CHECK_CLOSE(test->std[0], 0.3530, 1e-6, 0, "test split uses the training std");

    int max_pixel = 0, min_pixel = 255;
    for (int i = 0; i < 28 * 28; i++) {
        if (train->pixels[i] > max_pixel) max_pixel = train->pixels[i];
        if (train->pixels[i] < min_pixel) min_pixel = train->pixels[i];
    }
    CHECK(max_pixel > 0 && min_pixel == 0, "image 0 pixel range %d..%d", min_pixel, max_pixel);

    /* Fashion-MNIST is balanced: 6000 training images per class. */
    int counts[10] = {0};
    for (int i = 0; i < train->num_samples; i++) counts[train->labels[i]]++;
    int balanced = 1;
    for (int k = 0; k < 10; k++) balanced &= counts[k] == 6000;
    CHECK(balanced, "6000 images per class (class 0 has %d)", counts[0]);

    /* bf_dataset_sample is the pixels scaled to [0, 1]. */
    float img[28 * 28];
    bf_dataset_sample(train, 123, img);
    int same = 1;
    for (int i = 0; i < 28 * 28; i++) same &= img[i] == (float)train->pixels[123 * 784 + i] / 255.0f;
    CHECK(same, "bf_dataset_sample == pixels / 255");

    /* The mean over the whole training set agrees with the published value. */
    double sum = 0;
    for (size_t i = 0; i < (size_t)60000 * 784; i++) sum += train->pixels[i];
    CHECK_CLOSE(sum / (60000.0 * 784 * 255), 0.2860, 1e-3, 0, "measured mean of the training set");

    cfg.test_limit = 100;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &small));
    if (small) {
        CHECK(small->num_samples == 100, "test_limit 100 -> %d", small->num_samples);
        CHECK(memcmp(small->pixels, test->pixels, 100 * 784) == 0, "limited pixels are the first ones");
        CHECK(memcmp(small->labels, test->labels, 100 * sizeof(int32_t)) == 0, "limited labels");
        bf_dataset_free(small);
        small = NULL;
    }
    cfg.test_limit = 1000000;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &small));
    if (small) CHECK(small->num_samples == 10000, "a limit above the count keeps all (%d)", small->num_samples);

done:
    bf_dataset_free(small);
    bf_dataset_free(train);
    bf_dataset_free(test);
}

/* ---------------------------------------------------------------------------------------------
 * IDX files written here */

#define IDX_N 37

static uint8_t idx_pixel(int i, int p) { return (uint8_t)((i * 31 + p * 7) % 256); }

/* Writes an IDX image/label pair. image_count/label_count are what the headers claim;
 * images_written how many images' bytes actually follow (fewer = truncated file). */
static void write_idx_pair(const char *dir, const char *prefix, int gz, uint32_t image_magic, int image_count,
                           int images_written, int label_count, int bad_label_at) {
    char path[512];
    size_t bytes = 16 + (size_t)images_written * 784;
    unsigned char *buf = malloc(bytes);
    put_be32(buf, image_magic);
    put_be32(buf + 4, (uint32_t)image_count);
    put_be32(buf + 8, 28);
    put_be32(buf + 12, 28);
    for (int i = 0; i < images_written; i++)
        for (int p = 0; p < 784; p++) buf[16 + i * 784 + p] = idx_pixel(i, p);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(path, buf, bytes, gz);
    free(buf);

    unsigned char *lab = malloc(8 + (size_t)label_count);
    put_be32(lab, 0x00000801);
    put_be32(lab + 4, (uint32_t)label_count);
    for (int i = 0; i < label_count; i++) lab[8 + i] = (unsigned char)(i == bad_label_at ? 10 : i % 10);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(path, lab, 8 + (size_t)label_count, gz);
    free(lab);
}

static void check_idx_content(const bf_dataset *d, const char *what) {
    CHECK(d->num_samples == IDX_N, "%s: %d samples", what, d->num_samples);
    CHECK(d->c == 1 && d->h == 28 && d->w == 28, "%s: shape", what);
    int pixels_ok = 1, labels_ok = 1;
    for (int i = 0; i < IDX_N; i++) {
        labels_ok &= d->labels[i] == i % 10;
        for (int p = 0; p < 784; p++) pixels_ok &= d->pixels[i * 784 + p] == idx_pixel(i, p);
    }
    CHECK(pixels_ok, "%s: pixels read back as written", what);
    CHECK(labels_ok, "%s: labels read back as written", what);
}

static void test_idx_files(const char *tmp) {
    char plain[512], gz[512], bad[512];
    snprintf(plain, sizeof plain, "%s/idx_plain", tmp);
    snprintf(gz, sizeof gz, "%s/idx_gz", tmp);
    snprintf(bad, sizeof bad, "%s/idx_bad", tmp);
    mkdir(plain, 0755);
    mkdir(gz, 0755);
    mkdir(bad, 0755);
    write_idx_pair(plain, "train", 0, 0x00000803, IDX_N, IDX_N, IDX_N, -1);
    write_idx_pair(gz, "train", 1, 0x00000803, IDX_N, IDX_N, IDX_N, -1);

    bf_data_config cfg = base_config(BF_DATASET_MNIST, plain);
    bf_dataset *a = NULL, *b = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &a));
    if (a) {
        check_idx_content(a, "plain IDX");
        CHECK(strcmp(a->name, "mnist") == 0, "name %s", a->name);
        CHECK_CLOSE(a->mean[0], 0.1307, 1e-6, 0, "MNIST published mean");
    }
    cfg = base_config(BF_DATASET_MNIST, gz);
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &b));
    if (b) check_idx_content(b, "gzip IDX");
    bf_dataset_free(b);

    /* gray_to_rgb (the PlasticFlex reference's MNIST): three identical planes, statistics repeated */
    cfg = base_config(BF_DATASET_MNIST, plain);
    cfg.gray_to_rgb = 1;
    b = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &b));
    int c = 0, h = 0, w = 0, k = 0;
    bf_dataset_shape(&cfg, &c, &h, &w, &k);
    CHECK(c == 3 && h == 28 && k == 10, "gray_to_rgb: bf_dataset_shape says 3x%dx%d (c = %d)", h, w, c);
    if (a && b) {
        int same = b->c == 3 && b->num_samples == a->num_samples;
        for (int i = 0; same && i < a->num_samples; i++)
            for (int ch = 0; ch < 3; ch++)
                same &= !memcmp(b->pixels + ((size_t)i * 3 + ch) * 784, a->pixels + (size_t)i * 784, 784);
        CHECK(same, "gray_to_rgb: every image is its gray plane three times");
        CHECK(b->mean[2] == a->mean[0] && b->std[1] == a->std[0], "gray_to_rgb: mean and std repeated per channel");
    }
    bf_dataset_free(a);
    bf_dataset_free(b);

    /* The test split is missing in these directories: an I/O error naming the file. */
    cfg = base_config(BF_DATASET_MNIST, plain);
    expect_open_error(&cfg, BF_SPLIT_TEST, BF_ERR_IO, "t10k-images-idx3-ubyte", "missing test split");

    cfg = base_config(BF_DATASET_FASHION_MNIST, bad);
    /* Truncated: the header promises 37 images, 20 follow. */
    write_idx_pair(bad, "train", 0, 0x00000803, IDX_N, 20, IDX_N, -1);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "train-images-idx3-ubyte", "truncated IDX");
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "truncated", "truncated IDX says so");
    char expected_size[64];
    snprintf(expected_size, sizeof expected_size, "%d", 16 + IDX_N * 784);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, expected_size, "truncated IDX gives the expected size");
    snprintf(expected_size, sizeof expected_size, "%d", 16 + 20 * 784);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, expected_size, "truncated IDX gives the actual size");
    bf_remove_tree(bad);
    mkdir(bad, 0755);

    /* A plain file whose header claims 8 GiB (10,956,550 images of 28 x 28) in 16 bytes is refused
     * from its size before that is allocated: in a child process whose address space is capped at
     * 1 GiB, the open must give the truncation error, not an out-of-memory one. */
    unsigned char huge[16];
    put_be32(huge, 0x00000803);
    put_be32(huge + 4, 10956550);
    put_be32(huge + 8, 28);
    put_be32(huge + 12, 28);
    char huge_path[600];
    snprintf(huge_path, sizeof huge_path, "%s/train-images-idx3-ubyte", bad);
    write_bytes(huge_path, huge, sizeof huge, 0);
    pid_t child = bf_test_fork_capped((size_t)1 << 30);
    if (child == 0) {
        bf_dataset *h = NULL;
        bf_status hs = bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &h);
        int refused = hs == BF_ERR_FORMAT && strstr(bf_last_error(), "truncated: header promises 8589935216 bytes");
        if (!refused) fprintf(stderr, "child: %s\n", bf_last_error());
        _exit(refused ? 0 : 1);
    }
    int child_status;
    CHECK(bf_test_child_passed(child, &child_status),
          "an 8 GiB header in a 16-byte file is refused as truncated within 1 GiB more address space (status %d)",
          child_status);
    bf_remove_tree(bad);
    mkdir(bad, 0755);

    /* Truncated and compressed. */
    write_idx_pair(bad, "train", 1, 0x00000803, IDX_N, 20, IDX_N, -1);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "train-images-idx3-ubyte.gz", "truncated gzip IDX");
    bf_remove_tree(bad);
    mkdir(bad, 0755);

    /* The same 8 GiB header gzip-compressed, its 20 images following: a gzip stream tells its length
     * only as it is decompressed, so the data must be read into memory that grows with it, never
     * the header's size (an out-of-memory error under the same cap before, or 8 GiB taken where
     * memory allows); refused as truncated, naming the file and the header's dimensions. */
    size_t short_bytes = 16 + (size_t)20 * 784;
    unsigned char *short_data = calloc(1, short_bytes);
    memcpy(short_data, huge, sizeof huge);
    snprintf(huge_path, sizeof huge_path, "%s/train-images-idx3-ubyte.gz", bad);
    write_bytes(huge_path, short_data, short_bytes, 1);
    free(short_data);
    child = bf_test_fork_capped((size_t)1 << 30);
    if (child == 0) {
        bf_dataset *h = NULL;
        bf_status hs = bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &h);
        int refused = hs == BF_ERR_FORMAT && strstr(bf_last_error(), "train-images-idx3-ubyte.gz") &&
                      strstr(bf_last_error(), "truncated: header promises 8589935216 bytes") &&
                      strstr(bf_last_error(), "dimensions 10956550 x 28 x 28") &&
                      strstr(bf_last_error(), "has 15696 after decompression");
        if (!refused) fprintf(stderr, "child: %s: %s\n", bf_status_name(hs), bf_last_error());
        _exit(refused ? 0 : 1);
    }
    CHECK(bf_test_child_passed(child, &child_status),
          "an 8 GiB header in a gzip IDX of 15696 bytes is refused as truncated within 1 GiB more address space "
          "(status %d)", child_status);
    bf_remove_tree(bad);
    mkdir(bad, 0755);

    /* Whole data but the gzip trailer (CRC and length) cut short: zlib ends it as an end of file. */
    write_idx_pair(bad, "train", 1, 0x00000803, IDX_N, IDX_N, IDX_N, -1);
    char cut[600];
    snprintf(cut, sizeof cut, "%s/train-images-idx3-ubyte.gz", bad);
    struct stat cut_st;
    CHECK(stat(cut, &cut_st) == 0 && truncate(cut, cut_st.st_size - 4) == 0, "cut the gzip trailer of %s", cut);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "truncated gzip stream", "gzip IDX without its trailer");
    bf_remove_tree(bad);
    mkdir(bad, 0755);

    /* Wrong magic (0x804: a 4-dimensional file). */
    write_idx_pair(bad, "train", 0, 0x00000804, IDX_N, IDX_N, IDX_N, -1);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "train-images-idx3-ubyte", "wrong magic");
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "magic", "wrong magic says so");

    /* Counts disagree; a label out of range. */
    write_idx_pair(bad, "train", 0, 0x00000803, IDX_N, IDX_N, IDX_N - 1, -1);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "labels", "image and label counts differ");
    write_idx_pair(bad, "train", 0, 0x00000803, IDX_N, IDX_N, IDX_N, 5);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "train-labels-idx1-ubyte", "label 10");

    /* A directory without the files. */
    char empty[512];
    snprintf(empty, sizeof empty, "%s/idx_empty", tmp);
    mkdir(empty, 0755);
    cfg = base_config(BF_DATASET_FASHION_MNIST, empty);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_IO, "train-images-idx3-ubyte", "missing files");
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_IO, "fashion-mnist", "missing files says where to get them");
}

/* Writes a plain IDX pair of `count` images of rows x cols (pixels idx_pixel, labels i % 10). */
static void write_idx_sized(const char *dir, const char *prefix, int count, int rows, int cols) {
    char path[512];
    size_t plane = (size_t)rows * cols, bytes = 16 + (size_t)count * plane;
    unsigned char *buf = malloc(bytes);
    put_be32(buf, 0x00000803);
    put_be32(buf + 4, (uint32_t)count);
    put_be32(buf + 8, (uint32_t)rows);
    put_be32(buf + 12, (uint32_t)cols);
    for (int i = 0; i < count; i++)
        for (size_t p = 0; p < plane; p++) buf[16 + i * plane + p] = idx_pixel(i, (int)p);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    write_bytes(path, buf, bytes, 0);
    free(buf);
    unsigned char lab[8 + 256];
    put_be32(lab, 0x00000801);
    put_be32(lab + 4, (uint32_t)count);
    for (int i = 0; i < count && i < 256; i++) lab[8 + i] = (unsigned char)(i % 10);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    write_bytes(path, lab, 8 + (size_t)count, 0);
}

/* Opens one split and expects BF_ERR_FORMAT with a message holding all of the NULL-ended needles. */
static void expect_open_error_all(const bf_data_config *cfg, bf_split split, bf_status want, const char *what, ...) {
    bf_dataset *d = NULL;
    bf_status st = bf_dataset_open(cfg, 1, split, &d);
    int all = 1;
    va_list ap;
    va_start(ap, what);
    for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *))
        all &= strstr(bf_last_error(), needle) != NULL;
    va_end(ap);
    CHECK(st == want && d == NULL && all, "%s: expected %s with the named details, got %s: %s", what,
          bf_status_name(want), bf_status_name(st), st == BF_OK ? "(opened)" : bf_last_error());
    bf_dataset_free(d);
}

/* IDX images of another size than MNIST's 28x28 (which the dataset kinds promise and the model is
 * sized for) are refused at open, naming the file and both sizes; a test split of another size than
 * the training split's is thereby refused too (its evaluation upload read past the test images). */
static void test_idx_image_size(const char *tmp) {
    char dir[512], path[600], size[32];
    snprintf(dir, sizeof dir, "%s/idx_size", tmp);
    mkdir(dir, 0755);
    const int sizes[3][2] = {{32, 32}, {20, 20}, {28, 30}};
    bf_data_config cfg = base_config(BF_DATASET_MNIST, dir);
    for (int s = 0; s < 3; s++) {
        write_idx_sized(dir, "train", 16, sizes[s][0], sizes[s][1]);
        snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", dir);
        snprintf(size, sizeof size, "images are %dx%d", sizes[s][0], sizes[s][1]);
        expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, size, path, size, "MNIST images must be 28x28",
                              (const char *)NULL);
    }
    /* train 28x28 (opens), t10k 32x32 (refused, naming the t10k file) */
    write_idx_sized(dir, "train", 16, 28, 28);
    write_idx_sized(dir, "t10k", 8, 32, 32);
    bf_dataset *train = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &train));
    CHECK(train && train->h == 28 && train->w == 28 && train->num_samples == 16, "28x28 training split opens");
    bf_dataset_free(train);
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte", dir);
    expect_open_error_all(&cfg, BF_SPLIT_TEST, BF_ERR_FORMAT, "t10k 32x32 beside train 28x28", path,
                          "images are 32x32", "must be 28x28", (const char *)NULL);
    cfg.dataset = BF_DATASET_FASHION_MNIST;
    expect_open_error_all(&cfg, BF_SPLIT_TEST, BF_ERR_FORMAT, "fashion_mnist: t10k 32x32", path, "images are 32x32",
                          "Fashion-MNIST images must be 28x28", (const char *)NULL);
    /* Multi-MNIST is generated from the same files: refused the same way, naming the file. */
    cfg.dataset = BF_DATASET_MULTI_MNIST;
    expect_open_error_all(&cfg, BF_SPLIT_TEST, BF_ERR_FORMAT, "multi_mnist: t10k 32x32", path, "images are 32x32",
                          (const char *)NULL);
    bf_remove_tree(dir);
}

/* Reads a whole file into a malloc'd buffer; *n its size. */
static unsigned char *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)size + 1);
    if (buf) *n = fread(buf, 1, (size_t)size, f);
    fclose(f);
    return buf;
}

/* gzip IDX files are checked to their end: a stream cut inside its 8-byte CRC-32 / length trailer
 * (zlib's gzread passed these as whole for files of this size), a flipped byte in the compressed
 * data or in the trailer, and bytes after the stream are refused naming the file; a concatenated
 * (multi-member) gzip file reads as its members' bytes one after the other. */
static void test_idx_gzip_integrity(const char *tmp) {
    char dir[512], images[600];
    snprintf(dir, sizeof dir, "%s/idx_gzip", tmp);
    mkdir(dir, 0755);
    snprintf(images, sizeof images, "%s/train-images-idx3-ubyte.gz", dir);
    const int n = 256; /* 200 KB of pixels: gzread reads it straight into the caller's buffer */
    write_idx_pair(dir, "train", 1, 0x00000803, n, n, n, -1);
    size_t whole_size = 0;
    unsigned char *whole = read_whole(images, &whole_size);
    CHECK(whole && whole_size > 100, "read back %s", images);
    if (!whole) return;
    bf_data_config cfg = base_config(BF_DATASET_MNIST, dir);
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &d));
    CHECK(d && d->num_samples == n, "the whole gzip file opens");
    bf_dataset_free(d);

    const int cuts[6] = {1, 2, 4, 5, 7, 8};
    for (int i = 0; i < 6; i++) {
        char what[64];
        snprintf(what, sizeof what, "gzip IDX cut by %d bytes", cuts[i]);
        write_bytes(images, whole, whole_size - (size_t)cuts[i], 0);
        expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, what, images, "truncated gzip stream",
                              "CRC-32 and length trailer", (const char *)NULL);
    }
    /* A flipped bit in the middle of the compressed data: whatever inflate makes of it (an invalid
     * code, or data whose CRC-32 does not match), the file is refused as corrupt. */
    unsigned char *changed = malloc(whole_size + 4);
    memcpy(changed, whole, whole_size);
    changed[whole_size / 2] ^= 0x10;
    write_bytes(images, changed, whole_size, 0);
    expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "gzip IDX with a flipped byte in its data", images,
                          "corrupt gzip stream, cannot decompress", (const char *)NULL);
    /* A flipped CRC-32 byte, a flipped length byte: the data is whole, its trailer does not match. */
    memcpy(changed, whole, whole_size);
    changed[whole_size - 6] ^= 0x01;
    write_bytes(images, changed, whole_size, 0);
    expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "gzip IDX with a wrong CRC-32", images,
                          "corrupt gzip stream, cannot decompress: incorrect data check", (const char *)NULL);
    memcpy(changed, whole, whole_size);
    changed[whole_size - 2] ^= 0x01;
    write_bytes(images, changed, whole_size, 0);
    expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "gzip IDX with a wrong length", images,
                          "corrupt gzip stream, cannot decompress: incorrect length check", (const char *)NULL);
    /* Four bytes of something else after the stream. */
    memcpy(changed, whole, whole_size);
    memcpy(changed + whole_size, "junk", 4);
    write_bytes(images, changed, whole_size + 4, 0);
    expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "gzip IDX with bytes after its stream", images,
                          "not another gzip member", (const char *)NULL);
    free(changed);
    free(whole);
    /* A whole gzip stream holding one image more than its header counts. */
    write_idx_pair(dir, "train", 1, 0x00000803, n - 1, n, n, -1);
    expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "gzip IDX longer than its header", images,
                          "longer than its header says (199936 bytes expected)", (const char *)NULL);

    /* Two members, the header in one and the images in the other (cat a.gz b.gz): read as one. */
    char part[600];
    size_t bytes = 16 + (size_t)n * 784, size_a = 0, size_b = 0;
    unsigned char *raw = malloc(bytes);
    put_be32(raw, 0x00000803);
    put_be32(raw + 4, (uint32_t)n);
    put_be32(raw + 8, 28);
    put_be32(raw + 12, 28);
    for (int i = 0; i < n; i++)
        for (int p = 0; p < 784; p++) raw[16 + (size_t)i * 784 + p] = idx_pixel(i, p);
    snprintf(part, sizeof part, "%s/part.gz", dir);
    write_bytes(part, raw, 16, 1);
    unsigned char *a = read_whole(part, &size_a);
    write_bytes(part, raw + 16, bytes - 16, 1);
    unsigned char *b = read_whole(part, &size_b);
    unsigned char *joined = malloc(size_a + size_b + 1);
    if (a && b && joined) {
        memcpy(joined, a, size_a);
        memcpy(joined + size_a, b, size_b);
        write_bytes(images, joined, size_a + size_b, 0);
        d = NULL;
        CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &d));
        CHECK(d && d->num_samples == n && memcmp(d->pixels, raw + 16, bytes - 16) == 0,
              "a two-member gzip IDX reads as its members' bytes");
        bf_dataset_free(d);
    }
    free(joined);
    free(a);
    free(b);
    free(raw);
    bf_remove_tree(dir);
}

/* A directory or a symlink loop where an IDX file should be is reported as what it is, not as a
 * file to download. */
static void test_idx_not_a_file(const char *tmp) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/idx_notfile", tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", dir);
    mkdir(path, 0755);
    bf_data_config cfg = base_config(BF_DATASET_FASHION_MNIST, dir);
    expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_IO, "a directory at the IDX path", path, "is a directory",
                          (const char *)NULL);
    CHECK(!strstr(bf_last_error(), "download"), "a directory is not reported as missing: %s", bf_last_error());
    rmdir(path);
    CHECK(symlink("train-images-idx3-ubyte", path) == 0, "self-link %s", path); /* a loop */
    expect_open_error_all(&cfg, BF_SPLIT_TRAIN, BF_ERR_IO, "a symlink loop at the IDX path", path,
                          "cannot be opened: Too many levels of symbolic links", (const char *)NULL);
    CHECK(!strstr(bf_last_error(), "download"), "a link loop is not reported as missing: %s", bf_last_error());
    bf_remove_tree(dir);
}

/* ---------------------------------------------------------------------------------------------
 * CIFAR-10 binary files written here */

#define CIFAR_REC 3073

static uint8_t cifar_pixel(int file, int r, int p) { return (uint8_t)((file * 50 + r * 13 + p) % 256); }
static int cifar_label(int file, int r) { return (file + r) % 10; }

/* File 0..4 = data_batch_1..5.bin, file 5 = test_batch.bin. */
static void write_cifar_file(const char *dir, int file, int records, size_t extra_bytes) {
    char path[512];
    if (file < 5)
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, file + 1);
    else
        snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    size_t bytes = (size_t)records * CIFAR_REC + extra_bytes;
    unsigned char *buf = calloc(1, bytes);
    for (int r = 0; r < records; r++) {
        buf[r * CIFAR_REC] = (unsigned char)cifar_label(file, r);
        for (int p = 0; p < 3072; p++) buf[r * CIFAR_REC + 1 + p] = cifar_pixel(file, r, p);
    }
    write_bytes(path, buf, bytes, 0);
    free(buf);
}

static void test_cifar10(const char *tmp) {
    char root[256], dir[512];
    snprintf(root, sizeof root, "%s/cifar", tmp);
    snprintf(dir, sizeof dir, "%s/cifar-10-batches-bin", root);
    mkdir(root, 0755);
    mkdir(dir, 0755);
    for (int f = 0; f < 5; f++) write_cifar_file(dir, f, 3, 0);
    write_cifar_file(dir, 5, 4, 0);

    /* data.path may name the parent of cifar-10-batches-bin/ or the directory itself. */
    const char *paths[2] = {root, dir};
    for (int which = 0; which < 2; which++) {
        bf_data_config cfg = base_config(BF_DATASET_CIFAR10, paths[which]);
        bf_dataset *train = NULL, *test = NULL;
        CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &train));
        CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &test));
        if (train) {
            CHECK(train->num_samples == 15, "CIFAR train samples %d", train->num_samples);
            CHECK(train->c == 3 && train->h == 32 && train->w == 32 && train->num_classes == 10, "CIFAR shape");
            CHECK_CLOSE(train->mean[2], 0.4465, 1e-6, 0, "CIFAR published mean, blue");
            CHECK_CLOSE(train->std[1], 0.2435, 1e-6, 0, "CIFAR published std, green");
            int ok = 1;
            for (int i = 0; i < 15; i++) {
                int f = i / 3, r = i % 3;
                ok &= train->labels[i] == cifar_label(f, r);
                for (int p = 0; p < 3072; p++) ok &= train->pixels[(size_t)i * 3072 + p] == cifar_pixel(f, r, p);
            }
            CHECK(ok, "CIFAR training records read back in file order (path %d)", which);
        }
        if (test) {
            CHECK(test->num_samples == 4, "CIFAR test samples %d", test->num_samples);
            int ok = 1;
            for (int r = 0; r < 4; r++) {
                ok &= test->labels[r] == cifar_label(5, r);
                ok &= test->pixels[(size_t)r * 3072 + 3071] == cifar_pixel(5, r, 3071);
            }
            CHECK(ok, "CIFAR test records");
        }
        bf_dataset_free(train);
        bf_dataset_free(test);
    }

    /* A limit that ends inside the third file. */
    bf_data_config cfg = base_config(BF_DATASET_CIFAR10, root);
    cfg.train_limit = 7;
    bf_dataset *lim = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &lim));
    if (lim) {
        CHECK(lim->num_samples == 7, "CIFAR train_limit 7 -> %d", lim->num_samples);
        CHECK(lim->labels[6] == cifar_label(2, 0) && lim->pixels[6 * 3072 + 10] == cifar_pixel(2, 0, 10),
              "7th sample is the first record of data_batch_3.bin");
    }
    bf_dataset_free(lim);
    cfg.train_limit = 0;

    /* cifar10_std = reference: the PlasticFlex reference's std, the usual mean */
    cfg.cifar10_std = 1;
    lim = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &lim));
    if (lim)
        CHECK(lim->std[0] == 0.2023f && lim->std[1] == 0.1994f && lim->std[2] == 0.2010f && lim->mean[0] == 0.4914f,
              "cifar10_std = reference: std (%g, %g, %g)", lim->std[0], lim->std[1], lim->std[2]);
    bf_dataset_free(lim);
    cfg.cifar10_std = 0;
    /* norm_stats: the BU-TD reference's 0.5 everywhere, or MNIST's statistics on every channel */
    for (int stats = 1; stats <= 2; stats++) {
        cfg.norm_stats = stats;
        lim = NULL;
        CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &lim));
        float mean = stats == 1 ? 0.1307f : 0.5f, std = stats == 1 ? 0.3081f : 0.5f;
        if (lim)
            CHECK(lim->mean[0] == mean && lim->mean[2] == mean && lim->std[0] == std && lim->std[1] == std &&
                      lim->std[2] == std,
                  "norm_stats = %s: mean (%g, %g, %g), std (%g, %g, %g)", stats == 1 ? "mnist" : "half", lim->mean[0],
                  lim->mean[1], lim->mean[2], lim->std[0], lim->std[1], lim->std[2]);
        bf_dataset_free(lim);
    }
    cfg.norm_stats = 0;

    /* A file whose size is not a multiple of the record size. */
    write_cifar_file(dir, 2, 3, 5);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_FORMAT, "data_batch_3.bin", "CIFAR bad size");
    write_cifar_file(dir, 2, 3, 0);

    /* A missing batch file says which one and where to get it. */
    char path[600];
    snprintf(path, sizeof path, "%s/data_batch_5.bin", dir);
    unlink(path);
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_IO, "data_batch_5.bin", "CIFAR missing file");
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_IO, "cs.toronto.edu", "CIFAR missing file: where to get it");
}

/* ---------------------------------------------------------------------------------------------
 * Procedural data */

static int samples_equal(const bf_dataset *a, const bf_dataset *b, int index) {
    size_t n = (size_t)a->c * a->h * a->w;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    bf_dataset_sample(a, index, x);
    bf_dataset_sample(b, index, y);
    int eq = memcmp(x, y, n * sizeof *x) == 0;
    free(x);
    free(y);
    return eq;
}

static void test_procedural(void) {
    bf_data_config cfg = base_config(BF_DATASET_PROCEDURAL, "");
    bf_dataset *a = NULL, *b = NULL, *other = NULL, *test = NULL, *lim = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 7, BF_SPLIT_TRAIN, &a));
    CHECK_OK(bf_dataset_open(&cfg, 7, BF_SPLIT_TRAIN, &b));
    CHECK_OK(bf_dataset_open(&cfg, 8, BF_SPLIT_TRAIN, &other));
    CHECK_OK(bf_dataset_open(&cfg, 7, BF_SPLIT_TEST, &test));
    cfg.train_limit = 123;
    CHECK_OK(bf_dataset_open(&cfg, 7, BF_SPLIT_TRAIN, &lim));
    if (!a || !b || !other || !test || !lim) goto done;

    CHECK(a->num_samples == 500 && test->num_samples == 200, "procedural sizes %d/%d", a->num_samples,
          test->num_samples);
    CHECK(a->c == 3 && a->h == 16 && a->w == 16 && a->num_classes == 10, "procedural shape");

    int all_equal = 1;
    for (int i = 0; i < a->num_samples; i++) all_equal &= a->labels[i] == b->labels[i] && samples_equal(a, b, i);
    CHECK(all_equal, "same seed -> same labels and pixels");
    int differs = 0;
    for (int i = 0; i < 20; i++) differs += !samples_equal(a, other, i) || a->labels[i] != other->labels[i];
    CHECK(differs == 20, "different seed -> different samples (%d of 20 differ)", differs);
    CHECK(!samples_equal(a, test, 0), "train and test splits differ");

    int counts[10] = {0}, in_range = 1;
    for (int i = 0; i < a->num_samples; i++) {
        int k = a->labels[i];
        in_range &= k >= 0 && k < 10;
        if (k >= 0 && k < 10) counts[k]++;
    }
    CHECK(in_range, "labels in 0..9");
    int balanced = 1;
    for (int k = 0; k < 10; k++) balanced &= counts[k] >= 40 && counts[k] <= 60;
    CHECK(balanced, "classes roughly balanced (class 0: %d of 500)", counts[0]);

    /* Pixels in [0, 1], with spread; statistics plausible and shared by both splits. */
    float img[3 * 16 * 16];
    float lo = 1, hi = 0;
    for (int i = 0; i < 50; i++) {
        bf_dataset_sample(a, i, img);
        for (int p = 0; p < 3 * 16 * 16; p++) {
            if (img[p] < lo) lo = img[p];
            if (img[p] > hi) hi = img[p];
        }
    }
    CHECK(lo >= 0.0f && hi <= 1.0f && hi - lo > 0.5f, "pixel range %g..%g", lo, hi);
    for (int ch = 0; ch < 3; ch++) {
        CHECK(a->mean[ch] > 0.3f && a->mean[ch] < 0.7f, "mean[%d] = %g", ch, a->mean[ch]);
        CHECK(a->std[ch] > 0.05f && a->std[ch] < 0.5f, "std[%d] = %g", ch, a->std[ch]);
        CHECK(a->mean[ch] == test->mean[ch] && a->std[ch] == test->std[ch], "test split uses training stats");
    }

    /* Two samples of one class are not copies of each other (random phase, contrast, noise). */
    int j = 1;
    while (j < a->num_samples && a->labels[j] != a->labels[0]) j++;
    if (j < a->num_samples) {
        float x[3 * 16 * 16];
        bf_dataset_sample(a, 0, img);
        bf_dataset_sample(a, j, x);
        CHECK(memcmp(img, x, sizeof img) != 0, "samples 0 and %d of class %d differ", j, a->labels[0]);
    }

    CHECK(lim->num_samples == 123, "train_limit 123 -> %d", lim->num_samples);
    CHECK(lim->labels[122] == a->labels[122] && samples_equal(lim, a, 122), "limited set is a prefix");

    /* The largest class count the config allows: labels come in blocks holding every class once. */
    bf_data_config many = base_config(BF_DATASET_PROCEDURAL, "");
    many.procedural_classes = 1000;
    many.procedural_train = 2000;
    many.procedural_size = 4;
    bf_dataset *m = NULL;
    CHECK_OK(bf_dataset_open(&many, 7, BF_SPLIT_TRAIN, &m));
    if (m) {
        int *per_class = calloc(1000, sizeof *per_class), exact = 1;
        for (int i = 0; i < m->num_samples; i++) per_class[m->labels[i]]++;
        for (int k = 0; k < 1000; k++) exact &= per_class[k] == 2;
        CHECK(exact, "1000 classes, 2000 samples: every class twice");
        free(per_class);
        bf_dataset_free(m);
    }

    cfg.procedural_channels = 4;
    expect_open_error(&cfg, BF_SPLIT_TRAIN, BF_ERR_CONFIG, "procedural_channels", "4 channels refused");

done:
    bf_dataset_free(a);
    bf_dataset_free(b);
    bf_dataset_free(other);
    bf_dataset_free(test);
    bf_dataset_free(lim);
}

/* ---------------------------------------------------------------------------------------------
 * Loader */

/* Pixel (channel, y, x) of synthetic sample `id`, in 1..250 so that zero padding is recognisable. */
static int synth_value(int id, int ch, int y, int x) { return 1 + (id * 3 + ch * 17 + y * 5 + x * 11) % 250; }

/* A dataset built in memory: label = index, so outputs can be traced back to samples. */
static bf_dataset *make_synth(int n, int c, int h, int w) {
    bf_dataset *d = calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic");
    d->num_samples = n;
    d->c = c;
    d->h = h;
    d->w = w;
    d->num_classes = n;
    d->pixels = malloc((size_t)n * c * h * w);
    d->labels = malloc((size_t)n * sizeof *d->labels);
    for (int i = 0; i < n; i++) {
        d->labels[i] = i;
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    d->pixels[(((size_t)i * c + ch) * h + y) * w + x] = (uint8_t)synth_value(i, ch, y, x);
    }
    for (int ch = 0; ch < 3; ch++) {
        d->mean[ch] = 0.5f - 0.1f * (float)ch;
        d->std[ch] = 0.25f + 0.05f * (float)ch;
    }
    return d;
}

static bf_loader_options plain_options(int batch_size, int threads) {
    bf_loader_options o;
    memset(&o, 0, sizeof o);
    o.batch_size = batch_size;
    o.threads = threads;
    o.prefetch = 3;
    o.seed = 42;
    return o;
}

/* One epoch's output, copied out of the loader. */
typedef struct epoch_data {
    int batches, samples;
    int sizes[256];
    float *images;
    int32_t *labels;
} epoch_data;

static void epoch_free(epoch_data *e) {
    free(e->images);
    free(e->labels);
    memset(e, 0, sizeof *e);
}

/* Runs batches first_batch.. of `epoch` and copies them out; checks that they come in order. */
static epoch_data run_epoch(bf_loader *l, const bf_dataset *d, int epoch, int first_batch) {
    epoch_data e;
    memset(&e, 0, sizeof e);
    size_t sf = (size_t)d->c * d->h * d->w;
    e.images = malloc((size_t)d->num_samples * sf * sizeof(float));
    e.labels = malloc((size_t)d->num_samples * sizeof(int32_t));
    CHECK_OK(bf_loader_start_epoch(l, epoch, first_batch));
    int in_order = 1;
    for (;;) {
        bf_batch *b = NULL;
        double wait = -1;
        bf_status st = bf_loader_next(l, &b, &wait);
        if (st != BF_OK) {
            CHECK(0, "bf_loader_next: %s", bf_last_error());
            break;
        }
        if (!b) break;
        CHECK(wait >= 0, "wait_ms %g >= 0", wait);
        in_order &= b->index == first_batch + e.batches;
        if (e.batches < 256) e.sizes[e.batches] = b->n;
        memcpy(e.images + (size_t)e.samples * sf, b->images, (size_t)b->n * sf * sizeof(float));
        memcpy(e.labels + e.samples, b->labels, (size_t)b->n * sizeof(int32_t));
        e.samples += b->n;
        e.batches++;
        bf_loader_release(l, b);
    }
    CHECK(in_order, "batches come in order from %d", first_batch);
    return e;
}

static void test_loader_coverage(void) {
    bf_dataset *d = make_synth(103, 1, 4, 4);
    for (int shuffle = 0; shuffle <= 1; shuffle++) {
        for (int drop_last = 0; drop_last <= 1; drop_last++) {
            bf_loader_options o = plain_options(10, 2);
            o.shuffle = shuffle;
            o.drop_last = drop_last;
            bf_loader *l = NULL;
            CHECK_OK(bf_loader_create(d, &o, &l));
            if (!l) continue;
            int want_batches = drop_last ? 10 : 11;
            CHECK(bf_loader_num_batches(l) == want_batches, "num_batches %d", bf_loader_num_batches(l));
            for (int epoch = 0; epoch < 2; epoch++) {
                epoch_data e = run_epoch(l, d, epoch, 0);
                CHECK(e.batches == want_batches, "shuffle %d drop_last %d: %d batches", shuffle, drop_last, e.batches);
                CHECK(e.samples == (drop_last ? 100 : 103), "%d samples", e.samples);
                CHECK(drop_last || e.sizes[10] == 3, "last batch holds the remaining 3 (%d)", e.sizes[10]);
                int seen[103] = {0}, consistent = 1, identity = 1;
                for (int i = 0; i < e.samples; i++) {
                    int id = e.labels[i];
                    if (id < 0 || id >= 103) {
                        consistent = 0;
                        continue;
                    }
                    seen[id]++;
                    identity &= id == i;
                    /* The image belongs to the label: pixel (0,0,1) of sample id. */
                    consistent &= e.images[(size_t)i * 16 + 1] == (float)synth_value(id, 0, 0, 1) / 255.0f;
                }
                int once = 1;
                for (int i = 0; i < 103; i++) once &= drop_last ? seen[i] <= 1 : seen[i] == 1;
                CHECK(once, "shuffle %d drop_last %d epoch %d: every sample exactly once", shuffle, drop_last, epoch);
                CHECK(consistent, "images match their labels");
                CHECK(shuffle ? !identity : identity, "shuffle %d: identity order %d", shuffle, identity);
                epoch_free(&e);
            }
            /* After the end, next keeps answering NULL. */
            bf_batch *b = (bf_batch *)1;
            CHECK_OK(bf_loader_next(l, &b, NULL));
            CHECK(b == NULL, "NULL after the epoch");
            bf_loader_destroy(l);
        }
    }
    bf_dataset_free(d);
}

static void test_loader_shuffle_and_determinism(void) {
    bf_dataset *d = make_synth(103, 3, 6, 6);
    bf_loader_options o = plain_options(8, 1);
    o.shuffle = 1;
    o.augment_flip = 1;
    o.augment_crop_pad = 2;
    o.normalize = 1;
    bf_loader *one = NULL, *four = NULL;
    CHECK_OK(bf_loader_create(d, &o, &one));
    o.threads = 4;
    o.prefetch = 5;
    CHECK_OK(bf_loader_create(d, &o, &four));
    if (!one || !four) goto done;
    size_t floats = (size_t)103 * 3 * 36;

    epoch_data e0 = run_epoch(one, d, 0, 0);
    epoch_data e1 = run_epoch(one, d, 1, 0);
    CHECK(memcmp(e0.labels, e1.labels, 103 * sizeof(int32_t)) != 0, "epochs 0 and 1 have different orders");

    /* 1 thread and 4 threads: bit-identical batches, for two epochs. */
    epoch_data f0 = run_epoch(four, d, 0, 0);
    epoch_data f1 = run_epoch(four, d, 1, 0);
    CHECK(memcmp(e0.labels, f0.labels, 103 * sizeof(int32_t)) == 0, "epoch 0 order, 1 vs 4 threads");
    CHECK(memcmp(e0.images, f0.images, floats * sizeof(float)) == 0, "epoch 0 images, 1 vs 4 threads");
    CHECK(memcmp(e1.labels, f1.labels, 103 * sizeof(int32_t)) == 0, "epoch 1 order, 1 vs 4 threads");
    CHECK(memcmp(e1.images, f1.images, floats * sizeof(float)) == 0, "epoch 1 images, 1 vs 4 threads");

    /* Resuming at batch k gives batches k.. of the full epoch, also when the previous epoch was
     * abandoned half-way with batches pending. */
    CHECK_OK(bf_loader_start_epoch(four, 0, 0));
    bf_batch *b = NULL;
    CHECK_OK(bf_loader_next(four, &b, NULL));
    if (b) bf_loader_release(four, b);
    int k = 5;
    epoch_data r = run_epoch(four, d, 1, k);
    CHECK(r.batches == 13 - k, "resumed epoch has %d batches", r.batches);
    CHECK(r.samples == 103 - k * 8, "resumed epoch has %d samples", r.samples);
    size_t off = (size_t)k * 8;
    CHECK(memcmp(r.labels, e1.labels + off, (size_t)r.samples * sizeof(int32_t)) == 0, "resumed labels");
    CHECK(memcmp(r.images, e1.images + off * 3 * 36, (size_t)r.samples * 3 * 36 * sizeof(float)) == 0,
          "resumed images");
    epoch_free(&r);

    /* Starting at the end: nothing left. */
    r = run_epoch(four, d, 1, bf_loader_num_batches(four));
    CHECK(r.batches == 0, "first_batch == num_batches gives no batch");
    epoch_free(&r);
    CHECK(bf_loader_start_epoch(four, 1, 14) == BF_ERR_ARG, "first_batch past the end refused");

    epoch_free(&e0);
    epoch_free(&e1);
    epoch_free(&f0);
    epoch_free(&f1);
done:
    bf_loader_destroy(one);
    bf_loader_destroy(four);
    bf_dataset_free(d);
}

static void test_loader_normalize(void) {
    bf_dataset *d = make_synth(20, 3, 4, 4);
    bf_loader_options o = plain_options(4, 2);
    o.normalize = 1;
    bf_loader *l = NULL;
    CHECK_OK(bf_loader_create(d, &o, &l));
    if (l) {
        epoch_data e = run_epoch(l, d, 0, 0);
        /* Sample 5, channel 2, y 1, x 3. */
        float expect = ((float)synth_value(5, 2, 1, 3) / 255.0f - d->mean[2]) / d->std[2];
        CHECK_CLOSE(e.images[5 * 48 + 2 * 16 + 1 * 4 + 3], expect, 1e-6, 1e-6, "normalised pixel");
        expect = ((float)synth_value(0, 0, 0, 0) / 255.0f - 0.5f) / 0.25f;
        CHECK_CLOSE(e.images[0], expect, 1e-6, 1e-6, "normalised pixel, channel 0");
        epoch_free(&e);
    }
    bf_loader_destroy(l);
    bf_dataset_free(d);
}

/* Whether `out` is sample `id` shifted by (sy, sx) - out(y, x) = in(y + sy, x + sx), zero outside
 * - and mirrored when flip is set. */
static int is_augmented(const float *out, int id, int c, int h, int w, int flip, int sy, int sx) {
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int xc = flip ? w - 1 - x : x;
                int iy = y + sy, ix = xc + sx;
                float want = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? (float)synth_value(id, ch, iy, ix) / 255.0f : 0.0f;
                if (out[(ch * h + y) * w + x] != want) return 0;
            }
    return 1;
}

static void test_loader_augment(void) {
    const int n = 64, c = 2, h = 5, w = 5, pad = 2;
    bf_dataset *d = make_synth(n, c, h, w);
    for (int mode = 0; mode < 3; mode++) { /* flip only, crop only, both */
        bf_loader_options o = plain_options(16, 2);
        o.shuffle = 1;
        o.augment_flip = mode != 1;
        o.augment_crop_pad = mode != 0 ? pad : 0;
        bf_loader *l = NULL;
        CHECK_OK(bf_loader_create(d, &o, &l));
        if (!l) continue;
        epoch_data e = run_epoch(l, d, 3, 0);
        int seen[64] = {0}, explained = 1, flipped = 0, shifted = 0;
        for (int i = 0; i < e.samples; i++) {
            int id = e.labels[i];
            seen[id]++;
            const float *img = e.images + (size_t)i * c * h * w;
            int found = 0;
            for (int flip = 0; flip <= o.augment_flip && !found; flip++)
                for (int sy = -o.augment_crop_pad; sy <= o.augment_crop_pad && !found; sy++)
                    for (int sx = -o.augment_crop_pad; sx <= o.augment_crop_pad && !found; sx++)
                        if (is_augmented(img, id, c, h, w, flip, sy, sx)) {
                            found = 1;
                            flipped += flip;
                            shifted += sy != 0 || sx != 0;
                        }
            explained &= found;
        }
        int once = 1;
        for (int i = 0; i < n; i++) once &= seen[i] == 1;
        CHECK(once, "augment mode %d: every label exactly once", mode);
        CHECK(explained, "augment mode %d: every image is a flip/crop of its sample", mode);
        if (o.augment_flip) CHECK(flipped > 8 && flipped < 56, "mode %d: %d of 64 flipped", mode, flipped);
        if (o.augment_crop_pad) CHECK(shifted > 32, "mode %d: %d of 64 shifted", mode, shifted);
        epoch_free(&e);
        bf_loader_destroy(l);
    }
    bf_dataset_free(d);
}

/* The loader on procedural data (pixels generated on demand, when the dataset does so). */
static void test_loader_procedural(void) {
    bf_data_config cfg = base_config(BF_DATASET_PROCEDURAL, "");
    bf_dataset *d = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 3, BF_SPLIT_TRAIN, &d));
    if (!d) return;
    bf_loader_options o = plain_options(32, 2);
    o.shuffle = 1;
    o.normalize = 1;
    o.augment_flip = 1;
    bf_loader *l = NULL;
    CHECK_OK(bf_loader_create(d, &o, &l));
    if (l) {
        epoch_data e = run_epoch(l, d, 0, 0);
        CHECK(e.samples == 500, "procedural epoch of %d samples", e.samples);
        int counts[10] = {0}, expected[10] = {0}, ok = 1;
        for (int i = 0; i < 500; i++) {
            counts[e.labels[i]]++;
            expected[d->labels[i]]++;
        }
        for (int k = 0; k < 10; k++) ok &= counts[k] == expected[k];
        CHECK(ok, "procedural label multiset preserved");
        double sum = 0;
        for (size_t i = 0; i < (size_t)500 * 3 * 256; i++) sum += e.images[i];
        CHECK(sum / (500.0 * 3 * 256) > -0.2 && sum / (500.0 * 3 * 256) < 0.2, "normalised mean %g near 0",
              sum / (500.0 * 3 * 256));
        epoch_free(&e);
    }
    bf_loader_destroy(l);
    bf_dataset_free(d);
}

static void test_loader_misuse_and_teardown(void) {
    bf_dataset *d = make_synth(200, 3, 8, 8);
    bf_loader_options o = plain_options(4, 2);
    o.prefetch = 1;
    bf_loader *l = NULL;
    bf_batch *b = NULL, *b2 = NULL;

    /* next before any epoch; holding every slot - errors, not hangs. */
    CHECK_OK(bf_loader_create(d, &o, &l));
    if (l) {
        CHECK(bf_loader_next(l, &b, NULL) == BF_ERR_ARG, "next before start_epoch refused");
        CHECK_OK(bf_loader_start_epoch(l, 0, 0));
        CHECK_OK(bf_loader_next(l, &b, NULL));
        CHECK(bf_loader_next(l, &b2, NULL) == BF_ERR_ARG && b2 == NULL, "next with every slot held refused");
        bf_loader_release(l, b);
        CHECK_OK(bf_loader_next(l, &b2, NULL));
        CHECK(b2 && b2->index == 1, "after release the loader continues with batch 1");
        bf_loader_release(l, b2);
        bf_loader_destroy(l);
    }

    /* Destroy mid-epoch: with a batch held, with batches pending, and never started. */
    o.prefetch = 4;
    o.threads = 3;
    for (int variant = 0; variant < 3; variant++) {
        l = NULL;
        CHECK_OK(bf_loader_create(d, &o, &l));
        if (!l) continue;
        if (variant < 2) CHECK_OK(bf_loader_start_epoch(l, 0, 0));
        if (variant == 0) CHECK_OK(bf_loader_next(l, &b, NULL));
        bf_loader_destroy(l);
        CHECK(1, "destroy variant %d returned", variant);
    }

    /* Bad options. */
    o.batch_size = 0;
    CHECK(bf_loader_create(d, &o, &l) == BF_ERR_ARG, "batch_size 0 refused");
    bf_dataset_free(d);
}

/* The whole epoch `epoch` of a loader over d in one batch (d->num_samples images, malloc'd). */
static float *whole_epoch(bf_dataset *d, const bf_loader_options *o, int epoch) {
    bf_loader *l = NULL;
    bf_batch *batch = NULL;
    float *out = NULL;
    size_t n = (size_t)d->num_samples * d->c * d->h * d->w;
    if (bf_loader_create(d, o, &l) == BF_OK && bf_loader_start_epoch(l, epoch, 0) == BF_OK &&
        bf_loader_next(l, &batch, NULL) == BF_OK && batch && batch->n == d->num_samples && (out = malloc(n * sizeof *out)))
        memcpy(out, batch->images, n * sizeof *out);
    if (batch) bf_loader_release(l, batch);
    bf_loader_destroy(l);
    return out;
}

/* The noise is the sample's, not its position's: a shuffled split (a test loader under [run]
 * val_batches) gives every sample the noise the unshuffled one (bioflex-eval's) gives it. Samples
 * are matched by their clean images. */
static void check_noise_follows_samples(bf_dataset *d) {
    bf_loader_options o = {.batch_size = d->num_samples, .threads = 2, .prefetch = 1, .normalize = 1, .seed = 7};
    const size_t floats = (size_t)d->c * d->h * d->w;
    float *clean = whole_epoch(d, &o, 0), *clean_shuffled, *noisy, *noisy_shuffled;
    o.shuffle = 1;
    clean_shuffled = whole_epoch(d, &o, 0);
    o.noise_std = 0.1f;
    noisy_shuffled = whole_epoch(d, &o, 0);
    o.shuffle = 0;
    noisy = whole_epoch(d, &o, 0);
    int matched = 0, same_noise = 0, moved = 0;
    for (int j = 0; clean && clean_shuffled && noisy && noisy_shuffled && j < d->num_samples; j++) {
        for (int k = 0; k < d->num_samples; k++) {
            if (memcmp(clean_shuffled + j * floats, clean + k * floats, floats * sizeof(float)) != 0) continue;
            matched++;
            moved += j != k;
            same_noise += memcmp(noisy_shuffled + j * floats, noisy + k * floats, floats * sizeof(float)) == 0;
            break;
        }
    }
    CHECK(matched == d->num_samples && moved > d->num_samples / 2 && same_noise == matched,
          "shuffled or not, each sample gets its own noise (%d of %d matched, %d moved, %d with the same noise)",
          matched, d->num_samples, moved, same_noise);
    free(clean);
    free(clean_shuffled);
    free(noisy);
    free(noisy_shuffled);
}

/* PlasticFlex's subsets (balanced per class, random) and per-access Gaussian input noise. */
static void test_subsets_and_noise(void) {
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("note: Fashion-MNIST not installed, subset checks skipped\n");
        return;
    }
    bf_data_config cfg = base_config(BF_DATASET_FASHION_MNIST, "");
    cfg.subset = 1;
    cfg.subset_size = 100;
    cfg.subset_seed = 42;
    bf_dataset *a = NULL, *b = NULL, *t = NULL;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &a));
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &b));
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TEST, &t));
    if (a && b && t) {
        int per_class[10] = {0};
        for (int i = 0; i < a->num_samples; i++) per_class[a->labels[i]]++;
        int balanced = a->num_samples == 1000;
        for (int c = 0; c < 10; c++) balanced &= per_class[c] == 100;
        CHECK(balanced, "balanced subset: 100 per class, 1000 in all (got %d)", a->num_samples);
        CHECK(t->num_samples == 1000, "the test split is subset the same way (%d)", t->num_samples);
        CHECK(memcmp(a->pixels, b->pixels, (size_t)a->num_samples * 784) == 0 &&
                  memcmp(a->labels, b->labels, (size_t)a->num_samples * sizeof(int32_t)) == 0,
              "the same subset_seed gives the same subset");
    }
    bf_dataset_free(a);
    bf_dataset_free(b);
    bf_dataset_free(t);
    cfg.subset = 2;
    cfg.subset_size = 500;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &a));
    if (a) CHECK(a->num_samples == 500, "random subset of 500 (got %d)", a->num_samples);
    cfg.subset_seed = 43;
    CHECK_OK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &b));
    if (a && b) CHECK(memcmp(a->labels, b->labels, 500 * sizeof(int32_t)) != 0, "another subset_seed, another subset");
    bf_dataset_free(b);
    cfg.subset_size = 70000;
    CHECK(bf_dataset_open(&cfg, 1, BF_SPLIT_TRAIN, &b) == BF_ERR_CONFIG && strstr(bf_last_error(), "subset_size"),
          "a subset larger than the split is refused: %s", bf_last_error());

    /* noise: mean ~0, std ~0.1 around the clean batch; the same (epoch, position) repeats, another epoch differs */
    if (a) {
        bf_loader_options o = {.batch_size = 100, .threads = 2, .prefetch = 2, .normalize = 1, .seed = 7};
        bf_loader *clean = NULL, *noisy = NULL;
        CHECK_OK(bf_loader_create(a, &o, &clean));
        o.noise_std = 0.1f;
        CHECK_OK(bf_loader_create(a, &o, &noisy));
        bf_batch *bc = NULL, *bn = NULL;
        CHECK_OK(bf_loader_start_epoch(clean, 0, 0));
        CHECK_OK(bf_loader_start_epoch(noisy, 0, 0));
        CHECK_OK(bf_loader_next(clean, &bc, NULL));
        CHECK_OK(bf_loader_next(noisy, &bn, NULL));
        double sum = 0, sq = 0;
        size_t n = 100 * 784;
        float *first = malloc(n * sizeof(float));
        for (size_t i = 0; bc && bn && i < n; i++) {
            double d = bn->images[i] - bc->images[i];
            sum += d;
            sq += d * d;
            first[i] = bn->images[i];
        }
        double mean = sum / n, sd = sqrt(sq / n - mean * mean);
        CHECK(fabs(mean) < 0.002 && fabs(sd - 0.1) < 0.002, "noise mean %.5f, std %.5f", mean, sd);
        bf_loader_release(clean, bc);
        bf_loader_release(noisy, bn);
        CHECK_OK(bf_loader_start_epoch(noisy, 0, 0));
        CHECK_OK(bf_loader_next(noisy, &bn, NULL));
        CHECK(bn && memcmp(bn->images, first, n * sizeof(float)) == 0, "the noise of (epoch, position) repeats");
        bf_loader_release(noisy, bn);
        CHECK_OK(bf_loader_start_epoch(noisy, 1, 0));
        CHECK_OK(bf_loader_next(noisy, &bn, NULL));
        int same_batch_other_noise = 1;
        for (size_t i = 0; bn && i < n; i++) same_batch_other_noise &= bn->images[i] == first[i];
        CHECK(!same_batch_other_noise, "epoch 1 draws new noise");
        bf_loader_release(noisy, bn);
        free(first);
        bf_loader_destroy(clean);
        bf_loader_destroy(noisy);
        check_noise_follows_samples(a);
    }
    bf_dataset_free(a);
}

/* [data] noise_splits picks the splits whose loaders add input_noise_std: the options that
 * bf_train and bioflex-eval build from a config. */
static void test_noise_splits(void) {
    const char *splits[] = {"train", "test", "both"};
    const float train_std[] = {0.2f, 0.0f, 0.2f}, test_std[] = {0.0f, 0.2f, 0.2f};
    for (int i = 0; i < 3; i++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        char set[64];
        snprintf(set, sizeof set, "data.noise_splits=%s", splits[i]);
        CHECK_OK(bf_config_set(&cfg, set));
        CHECK_OK(bf_config_set(&cfg, "data.input_noise_std=0.2"));
        bf_loader_options train = bf_loader_options_from_config(&cfg, BF_SPLIT_TRAIN);
        bf_loader_options test = bf_loader_options_from_config(&cfg, BF_SPLIT_TEST);
        CHECK(train.noise_std == train_std[i] && test.noise_std == test_std[i],
              "noise_splits = %s: training noise %g, test noise %g", splits[i], train.noise_std, test.noise_std);
    }
}

int main(void) {
    /* A hang in the loader must fail the test, not stall ctest until its timeout. */
    alarm(120);
    char tmp[] = "/tmp/bioflex_test_data_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_fashion_mnist();
    test_idx_files(tmp);
    test_idx_image_size(tmp);
    test_idx_gzip_integrity(tmp);
    test_idx_not_a_file(tmp);
    test_cifar10(tmp);
    test_procedural();
    test_loader_coverage();
    test_loader_shuffle_and_determinism();
    test_loader_normalize();
    test_loader_augment();
    test_loader_procedural();
    test_loader_misuse_and_teardown();
    test_subsets_and_noise();
    test_noise_splits();
    bf_remove_tree(tmp);
    return bf_test_finish();
}
