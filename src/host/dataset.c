/* dataset.c - opening one split of a dataset (see data.h).
 *
 * Three sources, one result: a bf_dataset with labels in memory and pixels either in memory as
 * uint8 CHW (IDX and CIFAR-10 files) or computed on demand (procedural data, pixels == NULL).
 *
 *  - IDX (MNIST, Fashion-MNIST): train-images-idx3-ubyte / train-labels-idx1-ubyte and the t10k-
 *    pair, plain or gzip-compressed (inflated with zlib, every member's CRC-32 and length checked).
 *  - CIFAR-10 binary: data_batch_1..5.bin (train) and test_batch.bin, records of 1 label byte
 *    followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major), which is CHW.
 *  - procedural: oriented sinusoidal gratings, a pure function of (seed, split, index), for tests
 *    and for smoke runs on machines without any dataset.
 *
 * Every failure names the file and the check that failed, because "format error" alone sends the
 * user hunting; a missing file also says where the dataset can be obtained. */
#include "bioflex/data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "bioflex/hash.h"
#include "bioflex/image.h"
#include "dataset_tasks.h"

#define PI_F 3.14159265358979f

/* ---------------------------------------------------------------------------------------------
 * Small helpers */

static bf_dataset *dataset_new(const char *name) {
    bf_dataset *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    snprintf(d->name, sizeof d->name, "%s", name);
    /* Unused channels get an identity normalisation, so a caller that loops to 3 is harmless. */
    for (int ch = 0; ch < 3; ch++) {
        d->mean[ch] = 0.0f;
        d->std[ch] = 1.0f;
    }
    return d;
}

void bf_dataset_free(bf_dataset *d) {
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    free(d->task_labels);
    bf_image_files_free(d->files);
    free(d);
}

/* The number of samples to keep: the first `limit` (0 or negative = all, more than there are =
 * all). */
static int apply_limit(int count, int limit) { return (limit > 0 && limit < count) ? limit : count; }

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static uint32_t read_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* ---------------------------------------------------------------------------------------------
 * IDX files (MNIST, Fashion-MNIST)
 *
 * An IDX file is a big-endian header - magic 0x000008TT0D where TT = 08 (unsigned byte) and D is
 * the number of dimensions - followed by D 32-bit sizes and the data. Images have D = 3
 * (count, rows, cols), labels D = 1 (count). */

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_IMAGE_SIDE 28u /* MNIST's and Fashion-MNIST's images, which the dataset kinds promise */

typedef struct idx_file {
    char path[BF_PATH_MAX + 64]; /* the file actually read (with or without .gz) */
    uint32_t dims[3];
    int rank;
    uint8_t *data;               /* product(dims) bytes */
} idx_file;

/* The bytes of an IDX file, plain or gzip-compressed (told by the gzip magic 1f 8b, as gzopen
 * does). A gzip file is inflated here rather than through gzread: inflate checks each member's
 * CRC-32 and length trailer when it reaches the member's end, and a file that ends before that end
 * is seen as such, whereas gzread reports a stream cut inside its trailer only for some read sizes
 * (a 200 KB file cut by 1 to 8 bytes read back as whole, unchecked, with zlib 1.2.13). */
typedef struct idx_stream {
    FILE *file;
    const char *path;
    int gzip;           /* 1: inflated member by member; 0: the bytes as they are */
    int member_ended;   /* gzip: the current member's trailer was read and matched its data */
    int later_member;   /* gzip: the current member is not the file's first */
    z_stream inflater;
    unsigned char input[1 << 16];
} idx_stream;

static bf_status idx_stream_open(idx_stream *s, const char *path) {
    memset(s, 0, sizeof *s);
    s->path = path;
    s->file = fopen(path, "rb");
    if (!s->file) return bf_error(BF_ERR_IO, "%s: cannot be opened: %s", path, strerror(errno));
    size_t got = fread(s->input, 1, 2, s->file);
    if (got == 2 && s->input[0] == 0x1f && s->input[1] == 0x8b) {
        s->gzip = 1;
        s->inflater.next_in = s->input;
        s->inflater.avail_in = 2;
        /* 16 + MAX_WBITS: a gzip wrapper, whose CRC-32 and length inflate verifies itself */
        if (inflateInit2(&s->inflater, 16 + MAX_WBITS) != Z_OK) {
            fclose(s->file);
            s->file = NULL;
            return bf_error(BF_ERR_OOM, "%s: cannot start decompressing (out of memory)", path);
        }
    } else if (fseek(s->file, 0, SEEK_SET) != 0) {
        bf_status st = bf_error(BF_ERR_IO, "%s: cannot rewind: %s", path, strerror(errno));
        fclose(s->file);
        s->file = NULL;
        return st;
    }
    return BF_OK;
}

static void idx_stream_close(idx_stream *s) {
    if (s->gzip) inflateEnd(&s->inflater);
    if (s->file) fclose(s->file);
    s->file = NULL;
}

/* Reads up to `want` bytes into buf; *got is less than asked only at the true end of the data: the
 * end of a plain file, or the end of a gzip file's last member after its trailer matched. A gzip
 * file that ends inside a member (its trailer included), or whose data or trailer is corrupt, is an
 * error naming the file. Further members (concatenated gzip) are read on, as gzip(1) does. */
static bf_status idx_stream_read(idx_stream *s, void *buf, size_t want, size_t *got) {
    unsigned char *out = buf;
    *got = 0;
    if (!s->gzip) {
        *got = fread(out, 1, want, s->file);
        if (*got < want && ferror(s->file)) return bf_error(BF_ERR_IO, "%s: read error: %s", s->path, strerror(errno));
        return BF_OK;
    }
    z_stream *z = &s->inflater;
    while (*got < want) {
        if (z->avail_in == 0) {
            size_t n = fread(s->input, 1, sizeof s->input, s->file);
            if (n == 0 && ferror(s->file)) return bf_error(BF_ERR_IO, "%s: read error: %s", s->path, strerror(errno));
            z->next_in = s->input;
            z->avail_in = (uInt)n;
        }
        if (s->member_ended) {
            if (z->avail_in == 0) break; /* the file's end, right after a whole member */
            inflateReset(z);             /* another member follows */
            s->member_ended = 0;
            s->later_member = 1;
        }
        size_t chunk = want - *got;
        if (chunk > (1u << 30)) chunk = 1u << 30; /* avail_out is an unsigned int */
        z->next_out = out + *got;
        z->avail_out = (uInt)chunk;
        int rc = inflate(z, Z_NO_FLUSH);
        *got += chunk - z->avail_out;
        if (rc == Z_STREAM_END) s->member_ended = 1;
        else if (rc == Z_BUF_ERROR && z->avail_in == 0 && feof(s->file))
            return bf_error(BF_ERR_FORMAT,
                            "%s: truncated gzip stream: the file ends before the end of its compressed data "
                            "and its 8-byte CRC-32 and length trailer; download it again", s->path);
        else if (rc != Z_OK && rc != Z_BUF_ERROR && s->later_member && z->total_out == 0)
            return bf_error(BF_ERR_FORMAT, "%s: corrupt gzip file: the bytes after the end of its gzip stream are "
                            "not another gzip member (%s)", s->path, z->msg ? z->msg : "invalid data");
        else if (rc != Z_OK && rc != Z_BUF_ERROR)
            return bf_error(BF_ERR_FORMAT, "%s: corrupt gzip stream, cannot decompress: %s", s->path,
                            z->msg ? z->msg : "invalid data");
    }
    return BF_OK;
}

/* Finds dir/name, or dir/name.gz when the plain file is absent. A path that exists but is no
 * regular file (a directory, a link loop, a file without read access) is reported as what it is:
 * "cannot find" would send the user downloading what is there. */
static bf_status idx_locate(const char *dir, const char *name, const char *dataset_label, const char *where_to_get,
                            char *path, size_t path_cap) {
    char candidates[2][BF_PATH_MAX + 64];
    snprintf(candidates[0], sizeof candidates[0], "%s/%s", dir, name);
    snprintf(candidates[1], sizeof candidates[1], "%s/%s.gz", dir, name);
    for (int i = 0; i < 2; i++)
        if (file_exists(candidates[i])) {
            snprintf(path, path_cap, "%s", candidates[i]);
            return BF_OK;
        }
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (stat(candidates[i], &st) == 0) {
            if (S_ISDIR(st.st_mode))
                return bf_error(BF_ERR_IO, "%s: %s is a directory, not an IDX file (expected the file %s/%s or %s/%s.gz)",
                                dataset_label, candidates[i], dir, name, dir, name);
            return bf_error(BF_ERR_IO, "%s: %s is not a regular file (expected the IDX file %s/%s or %s/%s.gz)",
                            dataset_label, candidates[i], dir, name, dir, name);
        }
        if (errno != ENOENT)
            return bf_error(BF_ERR_IO, "%s: %s cannot be opened: %s", dataset_label, candidates[i], strerror(errno));
    }
    return bf_error(BF_ERR_IO,
                    "%s: cannot find %s/%s or %s/%s.gz; download %s from %s into %s "
                    "or set data.path",
                    dataset_label, dir, name, dir, name, dataset_label, where_to_get, dir);
}

/* Reads a whole IDX file of unsigned bytes with `rank` dimensions and validates it: magic,
 * non-zero sizes, images of IDX_IMAGE_SIDE x IDX_IMAGE_SIDE pixels (the dataset kinds' shape, which
 * sizes the model: a split of another size would be read past by the batch upload), exactly as many
 * data bytes as the header promises (a short file or trailing bytes both mean the file is not what
 * its header says), and for gzip the CRC-32 and length of every member. */
static bf_status idx_read(const char *dir, const char *name, uint32_t magic, int rank,
                          const char *dataset_label, const char *where_to_get, idx_file *out) {
    memset(out, 0, sizeof *out);
    out->rank = rank;
    BF_TRY(idx_locate(dir, name, dataset_label, where_to_get, out->path, sizeof out->path));
    idx_stream *f = malloc(sizeof *f);
    if (!f) return bf_error(BF_ERR_OOM, "%s: cannot allocate a read buffer", out->path);
    bf_status st = idx_stream_open(f, out->path);
    if (st != BF_OK) {
        free(f);
        return st;
    }

    size_t header_bytes = 4 + 4 * (size_t)rank;
    unsigned char header[16];
    size_t got = 0;
    st = idx_stream_read(f, header, header_bytes, &got);
    if (st != BF_OK) goto done;
    if (got < header_bytes) {
        st = bf_error(BF_ERR_FORMAT, "%s: truncated: expected a %zu-byte IDX header, file has %zu bytes",
                      out->path, header_bytes, got);
        goto done;
    }
    uint32_t file_magic = read_be32(header);
    if (file_magic != magic) {
        st = bf_error(BF_ERR_FORMAT,
                      "%s: bad magic number 0x%08x (expected 0x%08x, an IDX file of %s); "
                      "is this the right file?",
                      out->path, file_magic, magic, rank == 3 ? "images" : "labels");
        goto done;
    }
    /* Sizes: every dimension positive, and the total small enough to hold (a corrupt header could
     * claim terabytes; refuse it before trying to allocate). */
    size_t total = 1;
    for (int i = 0; i < rank; i++) {
        out->dims[i] = read_be32(header + 4 + 4 * i);
        if (out->dims[i] == 0 || out->dims[i] > (1u << 30)) {
            st = bf_error(BF_ERR_FORMAT, "%s: dimension %d of the header is %u (expected 1..2^30)",
                          out->path, i, out->dims[i]);
            goto done;
        }
        total *= out->dims[i];
        if (total > ((size_t)1 << 34)) {
            st = bf_error(BF_ERR_FORMAT, "%s: header claims more than 16 GiB of data", out->path);
            goto done;
        }
    }
    if (rank == 3 && (out->dims[1] != IDX_IMAGE_SIDE || out->dims[2] != IDX_IMAGE_SIDE)) {
        st = bf_error(BF_ERR_FORMAT, "%s: images are %ux%u (rows x columns); %s images must be %ux%u",
                      out->path, out->dims[1], out->dims[2], dataset_label, IDX_IMAGE_SIDE, IDX_IMAGE_SIDE);
        goto done;
    }
    /* An uncompressed file shows its size: one shorter than its header says is refused before
     * the header's size is allocated (a corrupt header can ask for gigabytes). */
    struct stat file_stat;
    if (!f->gzip && stat(out->path, &file_stat) == 0 && (uint64_t)file_stat.st_size < header_bytes + total) {
        st = bf_error(BF_ERR_FORMAT, "%s: truncated: header promises %zu bytes (%zu header + %zu data), file has %zu",
                      out->path, header_bytes + total, header_bytes, total, (size_t)file_stat.st_size);
        goto done;
    }
    /* A gzip stream shows its length only as it is decompressed: the data is read into a buffer
     * that doubles as it fills, up to the header's size, so a corrupt header costs at most twice
     * what the file holds (the header's size is allocated only when that much data arrives). */
    size_t have = 0, cap = 0;
    for (;;) {
        if (have == cap) {
            if (cap == total) break;
            size_t grown = cap ? 2 * cap : (size_t)1 << 20;
            if (grown > total) grown = total;
            uint8_t *p = realloc(out->data, grown);
            if (!p) {
                st = bf_error(BF_ERR_OOM, "%s: cannot allocate %zu bytes", out->path, grown);
                goto done;
            }
            out->data = p, cap = grown;
        }
        st = idx_stream_read(f, out->data + have, cap - have, &got);
        if (st != BF_OK) goto done;
        have += got;
        if (have < cap) break; /* the end of the data */
    }
    if (have < total) {
        char dims[48];
        if (rank == 3) snprintf(dims, sizeof dims, "%u x %u x %u", out->dims[0], out->dims[1], out->dims[2]);
        else snprintf(dims, sizeof dims, "%u", out->dims[0]);
        st = bf_error(BF_ERR_FORMAT,
                      "%s: truncated: header promises %zu bytes (%zu header + %zu data: dimensions %s), file has %zu%s",
                      out->path, header_bytes + total, header_bytes, total, dims, header_bytes + have,
                      f->gzip ? " after decompression" : "");
        goto done;
    }
    /* One byte more must be the end: this read also takes a gzip stream to its end, where its
     * trailer is checked (a stream cut inside it is an error here). */
    unsigned char extra[4096];
    st = idx_stream_read(f, extra, 1, &got);
    const int longer = st == BF_OK && got != 0;
    /* More data in a gzip file may be a corrupt stream that decodes to more bytes: read on to its
     * trailer (up to 1 GiB) so that a corrupt file is called corrupt, not a wrong header. */
    for (size_t drained = got; longer && st == BF_OK && f->gzip && got != 0 && drained < ((size_t)1 << 30);
         drained += got)
        st = idx_stream_read(f, extra, sizeof extra, &got);
    if (st == BF_OK && longer)
        st = bf_error(BF_ERR_FORMAT,
                      "%s: longer than its header says (%zu bytes expected); the header may be corrupt",
                      out->path, header_bytes + total);

done:
    idx_stream_close(f);
    free(f);
    if (st != BF_OK) {
        free(out->data);
        out->data = NULL;
    }
    return st;
}

static bf_status open_idx(const bf_data_config *cfg, bf_split split, bf_dataset **out) {
    int fashion = cfg->dataset == BF_DATASET_FASHION_MNIST;
    const char *label = fashion ? "Fashion-MNIST" : "MNIST";
    const char *where = fashion ? "https://github.com/zalandoresearch/fashion-mnist"
                                : "https://ossci-datasets.s3.amazonaws.com/mnist/";
    const char *dir = cfg->path[0] ? cfg->path
                    : fashion      ? "/usr/share/datasets/fashion-mnist"
                                   : "/usr/share/datasets/mnist";
    const char *prefix = split == BF_SPLIT_TRAIN ? "train" : "t10k";
    char images_name[64], labels_name[64];
    snprintf(images_name, sizeof images_name, "%s-images-idx3-ubyte", prefix);
    snprintf(labels_name, sizeof labels_name, "%s-labels-idx1-ubyte", prefix);

    idx_file images, labels;
    BF_TRY(idx_read(dir, images_name, IDX_MAGIC_IMAGES, 3, label, where, &images));
    bf_status st = idx_read(dir, labels_name, IDX_MAGIC_LABELS, 1, label, where, &labels);
    if (st != BF_OK) {
        free(images.data);
        return st;
    }

    bf_dataset *d = NULL;
    if (images.dims[0] != labels.dims[0]) {
        st = bf_error(BF_ERR_FORMAT, "%s has %u images but %s has %u labels", images.path,
                      images.dims[0], labels.path, labels.dims[0]);
        goto fail;
    }
    for (uint32_t i = 0; i < labels.dims[0]; i++) {
        if (labels.data[i] >= 10) {
            st = bf_error(BF_ERR_FORMAT, "%s: label %u of sample %u is out of range (expected 0..9)",
                          labels.path, labels.data[i], i);
            goto fail;
        }
    }
    if (images.dims[0] > (uint32_t)(1u << 30)) {
        st = bf_error(BF_ERR_FORMAT, "%s: too many images (%u)", images.path, images.dims[0]);
        goto fail;
    }

    d = dataset_new(fashion ? "fashion_mnist" : "mnist");
    if (!d) {
        st = bf_error(BF_ERR_OOM, "cannot allocate the dataset");
        goto fail;
    }
    d->split = split;
    d->c = 1;
    d->h = (int)images.dims[1];
    d->w = (int)images.dims[2];
    d->num_classes = 10;
    d->num_samples = apply_limit((int)images.dims[0], split == BF_SPLIT_TRAIN ? cfg->train_limit : cfg->test_limit);
    /* The published statistics of the full training set, so that every split and every limit is
     * normalised the same way (as torchvision users do). */
    d->mean[0] = fashion ? 0.2860f : 0.1307f;
    d->std[0] = fashion ? 0.3530f : 0.3081f;

    d->labels = malloc((size_t)d->num_samples * sizeof *d->labels);
    if (!d->labels) {
        st = bf_error(BF_ERR_OOM, "cannot allocate %d labels", d->num_samples);
        goto fail;
    }
    for (int i = 0; i < d->num_samples; i++) d->labels[i] = labels.data[i];
    free(labels.data);
    labels.data = NULL;

    /* Give back the memory of the images past the limit (if the shrink fails, the larger buffer
     * serves just as well). */
    size_t keep = (size_t)d->num_samples * (size_t)d->h * (size_t)d->w;
    uint8_t *shrunk = realloc(images.data, keep);
    d->pixels = shrunk ? shrunk : images.data;
    images.data = NULL;
    *out = d;
    return BF_OK;

fail:
    free(images.data);
    free(labels.data);
    bf_dataset_free(d);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * CIFAR-10 binary version */

#define CIFAR_PIXELS 3072
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_TRAIN_FILES 5

static bf_status open_cifar10(const bf_data_config *cfg, bf_split split, bf_dataset **out) {
    const char *base = cfg->path[0] ? cfg->path : "/usr/share/datasets/cifar-10";
    /* Accept both the directory holding the .bin files and its parent, where the official
     * archive extracts to cifar-10-batches-bin/. */
    char subdir[BF_PATH_MAX + 64];
    snprintf(subdir, sizeof subdir, "%s/cifar-10-batches-bin", base);
    struct stat st_dir;
    const char *dir = (stat(subdir, &st_dir) == 0 && S_ISDIR(st_dir.st_mode)) ? subdir : base;

    /* The files of this split, and their record counts from their sizes (checked before any is
     * read, so a bad or missing later batch is reported before seconds of reading). */
    char paths[CIFAR_TRAIN_FILES][BF_PATH_MAX + 128];
    long records[CIFAR_TRAIN_FILES];
    int nfiles = split == BF_SPLIT_TRAIN ? CIFAR_TRAIN_FILES : 1;
    long total = 0;
    for (int i = 0; i < nfiles; i++) {
        if (split == BF_SPLIT_TRAIN)
            snprintf(paths[i], sizeof paths[i], "%s/data_batch_%d.bin", dir, i + 1);
        else
            snprintf(paths[i], sizeof paths[i], "%s/test_batch.bin", dir);
        struct stat st;
        if (stat(paths[i], &st) != 0 || !S_ISREG(st.st_mode))
            return bf_error(BF_ERR_IO,
                            "CIFAR-10: cannot find %s; download the binary version "
                            "(cifar-10-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html, "
                            "extract it into %s or set data.path",
                            paths[i], base);
        if (st.st_size == 0 || st.st_size % CIFAR_RECORD != 0)
            return bf_error(BF_ERR_FORMAT,
                            "%s: size %lld is not a positive multiple of the %d-byte CIFAR-10 record "
                            "(1 label byte + 3072 pixel bytes); the file is truncated or not CIFAR-10 binary",
                            paths[i], (long long)st.st_size, CIFAR_RECORD);
        records[i] = (long)(st.st_size / CIFAR_RECORD);
        total += records[i];
        if (total > (1L << 30)) return bf_error(BF_ERR_FORMAT, "%s: too many records", paths[i]);
    }

    int limit = split == BF_SPLIT_TRAIN ? cfg->train_limit : cfg->test_limit;
    int n = apply_limit((int)total, limit);
    bf_dataset *d = dataset_new("cifar10");
    if (!d) return bf_error(BF_ERR_OOM, "cannot allocate the dataset");
    d->split = split;
    d->c = 3;
    d->h = d->w = 32;
    d->num_classes = 10;
    d->num_samples = n;
    static const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.2470f, 0.2435f, 0.2616f};
    memcpy(d->mean, mean, sizeof mean);
    memcpy(d->std, std, sizeof std);
    d->pixels = malloc((size_t)n * CIFAR_PIXELS);
    d->labels = malloc((size_t)n * sizeof *d->labels);
    if (!d->pixels || !d->labels) {
        bf_dataset_free(d);
        return bf_error(BF_ERR_OOM, "cannot allocate %d CIFAR-10 images", n);
    }

    /* Read record by record until `n` samples are in memory; a limit leaves later files unread. */
    int filled = 0;
    unsigned char record[CIFAR_RECORD];
    for (int i = 0; i < nfiles && filled < n; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) {
            bf_status s = bf_error(BF_ERR_IO, "cannot open %s: %s", paths[i], strerror(errno));
            bf_dataset_free(d);
            return s;
        }
        for (long r = 0; r < records[i] && filled < n; r++) {
            if (fread(record, 1, CIFAR_RECORD, f) != CIFAR_RECORD) {
                fclose(f);
                bf_dataset_free(d);
                return bf_error(BF_ERR_IO, "%s: read error at record %ld", paths[i], r);
            }
            if (record[0] >= 10) {
                fclose(f);
                bf_dataset_free(d);
                return bf_error(BF_ERR_FORMAT, "%s: label %u of record %ld is out of range (expected 0..9)",
                                paths[i], record[0], r);
            }
            d->labels[filled] = record[0];
            memcpy(d->pixels + (size_t)filled * CIFAR_PIXELS, record + 1, CIFAR_PIXELS);
            filled++;
        }
        fclose(f);
    }
    *out = d;
    return BF_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Procedural data
 *
 * Class k is a sinusoidal grating at orientation pi*k/K (plus jitter of +-15% of the spacing
 * between classes) and at one of three spatial frequencies (k mod 3), with a random phase, a
 * random contrast, a random gain per channel and uniform pixel noise. A classifier has to find
 * orientation and frequency regardless of phase - a small but real vision problem that a CNN
 * learns in a few epochs and a linear model on raw pixels does not solve.
 *
 * Counters for the bf_seed_derive(seed, BF_STREAM_DATA, key) streams: the key of a sample's image
 * is split * 2^32 + index; the key of a label block is (2 + split) * 2^32 + block. */

/* Statistics are estimated on at most this many training samples: plenty for a per-channel mean,
 * and it keeps opening a large procedural set cheap. */
#define PROCEDURAL_STATS_SAMPLES 4096
#define PROCEDURAL_MAX_CLASSES 1024

/* Labels come in blocks of K consecutive indices; each block holds every class exactly once, in
 * an order shuffled per block. The classes are thus balanced for any limit, and a sample's label
 * depends only on (seed, split, index). */
static int procedural_label(uint64_t seed, int split, int index, int num_classes) {
    int block = index / num_classes, slot = index % num_classes;
    uint64_t s = bf_seed_derive(seed, BF_STREAM_DATA, ((uint64_t)(2 + split) << 32) + (uint64_t)block);
    /* Fisher-Yates on the identity, stopping once position `slot` is final (positions are fixed
     * from the end down). Class counts are small (config allows up to 1000), so a stack array
     * suffices. */
    int perm[PROCEDURAL_MAX_CLASSES];
    for (int i = 0; i < num_classes; i++) perm[i] = i;
    for (int i = num_classes - 1; i >= slot && i > 0; i--) {
        int j = (int)((double)bf_uniform(s, (uint64_t)i) * (i + 1));
        if (j > i) j = i;
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return perm[slot];
}

static void procedural_render(uint64_t seed, int split, int index, int label, int num_classes,
                              int c, int h, int w, float *out) {
    uint64_t s = bf_seed_derive(seed, BF_STREAM_DATA, ((uint64_t)split << 32) + (uint64_t)index);
    float theta = PI_F * ((float)label + 0.3f * (bf_uniform(s, 0) - 0.5f)) / (float)num_classes;
    /* Cycles per pixel, below 0.25 so that even the highest frequency is far from aliasing. */
    float freq = (0.08f + 0.05f * (float)(label % 3)) * (1.0f + 0.2f * (bf_uniform(s, 1) - 0.5f));
    float phase = 2.0f * PI_F * bf_uniform(s, 2);
    float contrast = 0.25f + 0.5f * bf_uniform(s, 3);
    float kx = 2.0f * PI_F * freq * cosf(theta), ky = 2.0f * PI_F * freq * sinf(theta);
    float cx = 0.5f * (float)(w - 1), cy = 0.5f * (float)(h - 1);
    for (int ch = 0; ch < c; ch++) {
        float gain = 0.7f + 0.3f * bf_uniform(s, 4 + (uint64_t)ch);
        float amplitude = 0.5f * contrast * gain;
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                size_t i = ((size_t)ch * h + y) * w + x;
                float noise = 0.3f * (bf_uniform(s, 16 + i) - 0.5f);
                float v = 0.5f + amplitude * sinf(kx * ((float)x - cx) + ky * ((float)y - cy) + phase) + noise;
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                /* Quantise to 8 bits like the file-backed datasets, so all data looks alike. */
                out[i] = roundf(v * 255.0f) / 255.0f;
            }
        }
    }
}

static bf_status open_procedural(const bf_data_config *cfg, long seed, bf_split split, bf_dataset **out) {
    int c = cfg->procedural_channels, size = cfg->procedural_size, k = cfg->procedural_classes;
    int count = split == BF_SPLIT_TRAIN ? cfg->procedural_train : cfg->procedural_test;
    if (c < 1 || c > 3)
        return bf_error(BF_ERR_CONFIG, "[data] procedural_channels = %d (allowed: 1..3)", c);
    if (size < 2 || size > 1024)
        return bf_error(BF_ERR_CONFIG, "[data] procedural_size = %d (allowed: 2..1024)", size);
    if (k < 2 || k > PROCEDURAL_MAX_CLASSES)
        return bf_error(BF_ERR_CONFIG, "[data] procedural_classes = %d (allowed: 2..%d)", k,
                        PROCEDURAL_MAX_CLASSES);
    if (count < 1 || count > (1 << 30))
        return bf_error(BF_ERR_CONFIG, "[data] procedural_%s = %d (allowed: 1..2^30)",
                        split == BF_SPLIT_TRAIN ? "train" : "test", count);

    bf_dataset *d = dataset_new("procedural");
    if (!d) return bf_error(BF_ERR_OOM, "cannot allocate the dataset");
    d->split = split;
    d->c = c;
    d->h = d->w = size;
    d->num_classes = k;
    d->procedural_seed = (uint64_t)seed;
    d->num_samples = apply_limit(count, split == BF_SPLIT_TRAIN ? cfg->train_limit : cfg->test_limit);
    d->labels = malloc((size_t)d->num_samples * sizeof *d->labels);
    size_t per_sample = (size_t)c * size * size;
    float *image = malloc(per_sample * sizeof *image);
    if (!d->labels || !image) {
        free(image);
        bf_dataset_free(d);
        return bf_error(BF_ERR_OOM, "cannot allocate %d procedural labels", d->num_samples);
    }
    for (int i = 0; i < d->num_samples; i++) d->labels[i] = procedural_label(d->procedural_seed, split, i, k);

    /* Per-channel mean and std of the training split (also when opening the test split, so both
     * are normalised alike), over its first samples regardless of train_limit. */
    int nstats = cfg->procedural_train < PROCEDURAL_STATS_SAMPLES ? cfg->procedural_train : PROCEDURAL_STATS_SAMPLES;
    if (nstats < 1) nstats = 1;
    double sum[3] = {0, 0, 0}, sumsq[3] = {0, 0, 0};
    size_t plane = (size_t)size * size;
    for (int i = 0; i < nstats; i++) {
        int label = procedural_label(d->procedural_seed, BF_SPLIT_TRAIN, i, k);
        procedural_render(d->procedural_seed, BF_SPLIT_TRAIN, i, label, k, c, size, size, image);
        for (int ch = 0; ch < c; ch++) {
            for (size_t p = 0; p < plane; p++) {
                double v = image[ch * plane + p];
                sum[ch] += v;
                sumsq[ch] += v * v;
            }
        }
    }
    free(image);
    double n = (double)nstats * (double)plane;
    for (int ch = 0; ch < c; ch++) {
        double mean = sum[ch] / n, var = sumsq[ch] / n - mean * mean;
        d->mean[ch] = (float)mean;
        d->std[ch] = (float)sqrt(var > 1e-12 ? var : 1e-12);
    }
    *out = d;
    return BF_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Public entry points */

/* Marks `want` of the n candidates in cand[] as chosen (a partial Fisher-Yates shuffle driven by
 * the seed), leaving the chosen ones in cand[0..want). */
static void choose(int32_t *cand, int n, int want, uint64_t seed) {
    for (int i = 0; i < want; i++) {
        int j = i + (int)(bf_uniform(seed, (uint64_t)i) * (double)(n - i));
        if (j >= n) j = n - 1;
        int32_t t = cand[i];
        cand[i] = cand[j];
        cand[j] = t;
    }
}

static int compare_index(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Keeps a subset of a split (plasticflex.md 5.2): subset_size per class (balanced) or in all
 * (random), drawn from subset_seed, in their original order. It works on any single-task split
 * whose samples are held per index: the pixels of a stored dataset or the file list of a JPEG one
 * (dataset_imagefolder.c), each compacted along with the labels. The split arrives already cut to
 * its train_limit / test_limit, so the subset is drawn from what the limit kept. */
static bf_status apply_subset(const bf_data_config *cfg, bf_split split, bf_dataset *d) {
    if ((!d->pixels && !d->files) || d->num_tasks > 0)
        return bf_error(BF_ERR_CONFIG, "[data] subset needs a stored single-task dataset (fashion_mnist, mnist, cifar10, "
                        "imagefolder, imagenet100, imagenet), not %s", d->name);
    int n = d->num_samples, want = cfg->subset == 1 ? cfg->subset_size * d->num_classes : cfg->subset_size;
    if (want > n)
        return bf_error(BF_ERR_CONFIG, "[data] subset_size = %d asks for %d samples, the %s split of %s has %d", cfg->subset_size,
                        want, split == BF_SPLIT_TRAIN ? "train" : "test", d->name, n);
    int32_t *keep = malloc((size_t)n * sizeof *keep), *cand = malloc((size_t)n * sizeof *cand);
    if (!keep || !cand) {
        free(keep);
        free(cand);
        return bf_error(BF_ERR_OOM, "subset: out of host memory");
    }
    int kept = 0;
    bf_status s = BF_OK;
    uint64_t seed = bf_seed_derive((uint64_t)cfg->subset_seed, BF_STREAM_SUBSET, (uint64_t)split);
    if (cfg->subset == 2) {
        for (int i = 0; i < n; i++) cand[i] = i;
        choose(cand, n, want, seed);
        memcpy(keep, cand, (size_t)want * sizeof *keep);
        kept = want;
    } else {
        for (int c = 0; c < d->num_classes && s == BF_OK; c++) {
            int count = 0;
            for (int i = 0; i < n; i++)
                if (d->labels[i] == c) cand[count++] = i;
            if (count < cfg->subset_size) {
                s = bf_error(BF_ERR_CONFIG, "[data] subset = balanced: class %d has %d samples, subset_size = %d", c, count,
                             cfg->subset_size);
                break;
            }
            choose(cand, count, cfg->subset_size, bf_seed_derive(seed, BF_STREAM_SUBSET, (uint64_t)c));
            memcpy(keep + kept, cand, (size_t)cfg->subset_size * sizeof *keep);
            kept += cfg->subset_size;
        }
    }
    if (s == BF_OK) {
        qsort(keep, (size_t)kept, sizeof *keep, compare_index);
        size_t sample = (size_t)d->c * d->h * d->w;
        for (int i = 0; i < kept; i++) { /* ascending, so compaction in place never overwrites a kept sample */
            if (d->pixels) memmove(d->pixels + (size_t)i * sample, d->pixels + (size_t)keep[i] * sample, sample);
            if (d->files) d->files->paths[i] = d->files->paths[keep[i]]; /* pointers into path_storage */
            d->labels[i] = d->labels[keep[i]];
        }
        d->num_samples = kept;
    }
    free(keep);
    free(cand);
    return s;
}

static bf_status open_split(const bf_data_config *cfg, long seed, bf_split split, bf_dataset **out);

/* The reference codes' input conventions, as options: PlasticFlex's (plasticflex.md section 5)
 * MNIST repeated into 3 channels and CIFAR-10 divided by the widely copied (0.2023, 0.1994,
 * 0.2010), which is not CIFAR-10's std; BU-TD's (butd-counterhebb.md section 3) MNIST statistics for
 * Fashion-MNIST and 0.5 for CIFAR-10 ([data] norm_stats). */
static bf_status apply_reference_inputs(const bf_data_config *cfg, bf_dataset *d) {
    if (cfg->cifar10_std == 1 && cfg->dataset == BF_DATASET_CIFAR10) {
        static const float reference_std[3] = {0.2023f, 0.1994f, 0.2010f};
        memcpy(d->std, reference_std, sizeof reference_std);
    }
    if (cfg->norm_stats != 0) /* the BU-TD reference's conventions: MNIST's statistics, or 0.5 */
        for (int ch = 0; ch < 3; ch++) {
            d->mean[ch] = cfg->norm_stats == 1 ? 0.1307f : 0.5f;
            d->std[ch] = cfg->norm_stats == 1 ? 0.3081f : 0.5f;
        }
    if (!cfg->gray_to_rgb || d->c != 1) return BF_OK;
    if (!d->pixels)
        return bf_error(BF_ERR_CONFIG, "[data] gray_to_rgb needs a stored dataset (fashion_mnist, mnist), not %s", d->name);
    size_t plane = (size_t)d->h * d->w;
    uint8_t *rgb = malloc((size_t)d->num_samples * 3 * plane);
    if (!rgb) return bf_error(BF_ERR_OOM, "gray_to_rgb: out of host memory for %d images", d->num_samples);
    for (int i = 0; i < d->num_samples; i++)
        for (int ch = 0; ch < 3; ch++) memcpy(rgb + ((size_t)i * 3 + ch) * plane, d->pixels + (size_t)i * plane, plane);
    free(d->pixels);
    d->pixels = rgb;
    d->c = 3;
    for (int ch = 1; ch < 3; ch++) d->mean[ch] = d->mean[0], d->std[ch] = d->std[0];
    return BF_OK;
}

static void dataset_kind_shape(const bf_data_config *cfg, int *c, int *h, int *w, int *num_classes);

/* The model is sized from bf_dataset_shape (the kind's shape) and the batch upload copies that
 * many bytes a sample, so every split must have exactly the kind's shape - which also makes the
 * test split's the training split's. The readers check their files; this states it for all kinds. */
static bf_status check_split_shape(const bf_data_config *cfg, bf_split split, const bf_dataset *d) {
    int c = 0, h = 0, w = 0;
    dataset_kind_shape(cfg, &c, &h, &w, NULL);
    if (d->c == c && d->h == h && d->w == w) return BF_OK;
    return bf_error(BF_ERR_FORMAT, "%s: the %s split's images are %dx%dx%d, dataset = %s has %dx%dx%d images", d->name,
                    split == BF_SPLIT_TRAIN ? "train" : "test", d->c, d->h, d->w, bf_dataset_name(cfg->dataset), c, h, w);
}

bf_status bf_dataset_open(const bf_data_config *cfg, long seed, bf_split split, bf_dataset **out) {
    BF_TRY(open_split(cfg, seed, split, out));
    bf_status s = check_split_shape(cfg, split, *out);
    if (s == BF_OK && cfg->subset) s = apply_subset(cfg, split, *out);
    if (s == BF_OK) s = apply_reference_inputs(cfg, *out);
    if (s != BF_OK) {
        bf_dataset_free(*out);
        *out = NULL;
    }
    return s;
}

static bf_status open_split(const bf_data_config *cfg, long seed, bf_split split, bf_dataset **out) {
    if (!cfg || !out) return bf_error(BF_ERR_ARG, "bf_dataset_open: NULL argument");
    *out = NULL;
    if (split != BF_SPLIT_TRAIN && split != BF_SPLIT_TEST)
        return bf_error(BF_ERR_ARG, "bf_dataset_open: unknown split %d", (int)split);
    switch (cfg->dataset) {
    case BF_DATASET_FASHION_MNIST:
    case BF_DATASET_MNIST: return open_idx(cfg, split, out);
    case BF_DATASET_CIFAR10: return open_cifar10(cfg, split, out);
    case BF_DATASET_PROCEDURAL: return open_procedural(cfg, seed, split, out);
    case BF_DATASET_MULTI_MNIST:
    case BF_DATASET_MULTI_FASHION_MNIST: return bf_multi_digits_open(cfg, cfg->multi_seed, split, out);
    case BF_DATASET_CELEBA: return bf_celeba_open(cfg, split, out);
    case BF_DATASET_IMAGENET100:
    case BF_DATASET_IMAGENET:
    case BF_DATASET_IMAGEFOLDER: return bf_dataset_open_images(cfg, split, out); /* dataset_imagefolder.c */
    }
    return bf_error(BF_ERR_ARG, "bf_dataset_open: unknown dataset kind %d", (int)cfg->dataset);
}

void bf_dataset_shape(const bf_data_config *cfg, int *c, int *h, int *w, int *num_classes) {
    dataset_kind_shape(cfg, c, h, w, num_classes);
    if (cfg->gray_to_rgb && *c == 1) *c = 3;
}

int bf_dataset_num_tasks(const bf_data_config *cfg) {
    switch (cfg->dataset) {
    case BF_DATASET_MULTI_MNIST:
    case BF_DATASET_MULTI_FASHION_MNIST: return 2;
    case BF_DATASET_CELEBA: return 40;
    default: return 0;
    }
}

static void dataset_kind_shape(const bf_data_config *cfg, int *c, int *h, int *w, int *num_classes) {
    int classes = 0;
    switch (cfg->dataset) {
    case BF_DATASET_FASHION_MNIST:
    case BF_DATASET_MNIST: *c = 1, *h = *w = 28, classes = 10; break;
    case BF_DATASET_CIFAR10: *c = 3, *h = *w = 32, classes = 10; break;
    case BF_DATASET_PROCEDURAL:
        *c = cfg->procedural_channels, *h = *w = cfg->procedural_size, classes = cfg->procedural_classes;
        break;
    case BF_DATASET_IMAGENET100: *c = 3, *h = *w = cfg->image_size, classes = 100; break;
    case BF_DATASET_IMAGENET: *c = 3, *h = *w = cfg->image_size, classes = 1000; break;
    case BF_DATASET_IMAGEFOLDER: /* the class folders (or class_list lines) are counted, when asked for */
        *c = 3, *h = *w = cfg->image_size, classes = num_classes ? bf_image_class_count(cfg) : 0; break;
    case BF_DATASET_MULTI_MNIST:
    case BF_DATASET_MULTI_FASHION_MNIST: *c = 1, *h = *w = 28, classes = 10; break; /* per task (2 tasks) */
    case BF_DATASET_CELEBA: *c = 3, *h = 218, *w = 178, classes = 2; break;          /* per task (40 tasks) */
    default: *c = *h = *w = 0; break;
    }
    if (num_classes) *num_classes = classes;
}

void bf_dataset_sample(const bf_dataset *d, int index, float *out) {
    size_t n = (size_t)d->c * d->h * d->w;
    if (d->pixels) {
        const uint8_t *src = d->pixels + (size_t)index * n;
        for (size_t i = 0; i < n; i++) out[i] = (float)src[i] / 255.0f;
    } else {
        procedural_render(d->procedural_seed, d->split, index, d->labels[index], d->num_classes,
                          d->c, d->h, d->w, out);
    }
}
