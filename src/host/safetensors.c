/* safetensors.c - reading and writing safetensors files (see safetensors.h).
 *
 * File layout, as the Python `safetensors` package and PyTorch write it:
 *
 *   [8 bytes]  N, the header length, unsigned 64-bit little-endian
 *   [N bytes]  a JSON object, padded with spaces so that the data section starts 8-byte aligned:
 *                { "__metadata__": { "key": "value", ... },
 *                  "features.0.weight": { "dtype": "F32", "shape": [64, 3, 3, 3],
 *                                         "data_offsets": [begin, end] }, ... }
 *   [rest]     the data section: raw little-endian tensor bytes; each tensor's data_offsets are
 *              relative to the start of this section.
 *
 * The JSON is built and parsed with cJSON, never by hand. The writer puts the tensors one after
 * the other, in the order the caller gives them, and adds three metadata pairs of its own (format,
 * format_version, checksum). The reader loads the whole file into one buffer and checks it step by
 * step, so that a corrupt or truncated checkpoint is refused with a message that says which check
 * failed, never loaded as garbage:
 *   1. the file holds the 8-byte header length     5. each tensor entry has dtype, shape, offsets
 *   2. the header fits in the file                 6. the dtype is one bioflex reads
 *   3. the header is JSON                          7. the offsets lie in the data section and
 *   4. the metadata is string pairs, and the          match dtype x shape
 *      format version is one this code reads       8. header and data match the checksum
 *
 * The checksum (format version 2) is the CRC-32 of the header text, with the checksum's own 8 hex
 * digits read as "00000000", followed by the data section: an edited metadata value (a checkpoint's
 * step, say) or tensor entry is caught as surely as a flipped data byte. Files of format version 1
 * (bioflex before 2026-12) checksum the data section only and are still read. */
#include "bioflex/safetensors.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zlib.h>

/* Tensor bytes are written and read as they lie in host memory, and safetensors is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bioflex safetensors I/O assumes a little-endian host"
#endif

/* The three metadata keys that the writer owns; a caller may not set them. */
#define KEY_FORMAT "format"
#define KEY_FORMAT_VERSION "format_version"
#define KEY_CHECKSUM "checksum"
#define FORMAT_NAME "bioflex"
#define METADATA_KEY "__metadata__"
#define CHECKSUM_PLACEHOLDER "00000000"
#define DATA_ONLY_CHECKSUM_VERSION "1" /* the format version whose checksum covers the data section only */

/* cJSON keeps numbers as doubles. Integers up to 2^53 are exact in a double, and cJSON prints
 * integers below 10^15 without an exponent (which Rust's and Python's safetensors require); both
 * limits are far beyond any real tensor, so sizes above them are refused instead of mangled. */
#define MAX_WRITE_INT 1000000000000000.0 /* 10^15 */
#define MAX_READ_INT 9007199254740992.0  /* 2^53 */

/* ------------------------------------------------------------------------------------------- */
/* dtypes                                                                                       */

typedef struct dtype_info {
    bf_dtype dtype;
    const char *name; /* as safetensors spells it */
    size_t size;      /* bytes per element */
} dtype_info;

static const dtype_info DTYPES[] = {
    {BF_DTYPE_F32, "F32", 4}, {BF_DTYPE_I64, "I64", 8}, {BF_DTYPE_I32, "I32", 4},
    {BF_DTYPE_U8, "U8", 1},   {BF_DTYPE_F64, "F64", 8},
};
#define NUM_DTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

size_t bf_dtype_size(bf_dtype t) {
    for (int i = 0; i < NUM_DTYPES; i++)
        if (DTYPES[i].dtype == t) return DTYPES[i].size;
    return 0;
}

const char *bf_dtype_name(bf_dtype t) {
    for (int i = 0; i < NUM_DTYPES; i++)
        if (DTYPES[i].dtype == t) return DTYPES[i].name;
    return "unknown";
}

/* Returns 1 and sets *out when `name` is a dtype bioflex reads. */
static int dtype_from_name(const char *name, bf_dtype *out) {
    for (int i = 0; i < NUM_DTYPES; i++) {
        if (strcmp(DTYPES[i].name, name) == 0) {
            *out = DTYPES[i].dtype;
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* small helpers                                                                                */

/* Writes a shape as "[64,3,3,3]" ("[]" for a scalar) into buf, for messages. */
static const char *format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, d ? "," : "", shape[d]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
    return buf;
}

/* dtype size x product(shape) in bytes; 0 with *overflow set when it does not fit in 64 bits. */
static uint64_t tensor_bytes(bf_dtype dtype, int ndim, const int64_t *shape, int *overflow) {
    uint64_t bytes = bf_dtype_size(dtype);
    *overflow = 0;
    for (int d = 0; d < ndim; d++) {
        uint64_t dim = (uint64_t)shape[d];
        if (dim != 0 && bytes > UINT64_MAX / dim) {
            *overflow = 1;
            return 0;
        }
        bytes *= dim;
    }
    return bytes;
}

/* zlib's crc32 takes an unsigned int length, so large tensors are fed in 1 GiB pieces. */
static uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n > 0) {
        size_t piece = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        crc = (uint32_t)crc32(crc, p, (uInt)piece);
        p += piece;
        n -= piece;
    }
    return crc;
}

/* Where the checksum's 8 hex digits lie in a header text: just after the first `"checksum":"`. The
 * writer prints "__metadata__" first and the checksum as its third key, so the first occurrence is
 * the checksum's own (the two keys before it have fixed values). NULL when the text has none. */
static char *checksum_digits(char *text, size_t len) {
    static const char key[] = "\"" KEY_CHECKSUM "\":\"";
    size_t key_len = sizeof key - 1;
    for (size_t i = 0; i + key_len + 8 <= len; i++)
        if (memcmp(text + i, key, key_len) == 0) return text + i + key_len;
    return NULL;
}

/* ------------------------------------------------------------------------------------------- */
/* writing                                                                                      */

/* Checks one tensor the caller wants written: a usable name, a known dtype, and data whose size
 * matches dtype x shape, so the file can never describe bytes it does not contain. */
static bf_status check_tensor_for_write(const char *path, const bf_st_tensor *t, int index) {
    if (memchr(t->name, '\0', sizeof t->name) == NULL || t->name[0] == '\0')
        return bf_error(BF_ERR_ARG, "%s: tensor %d has an empty or unterminated name", path, index);
    if (strcmp(t->name, METADATA_KEY) == 0)
        return bf_error(BF_ERR_ARG, "%s: tensor %d may not be named %s (reserved by safetensors)", path,
                        index, METADATA_KEY);
    if (bf_dtype_size(t->dtype) == 0)
        return bf_error(BF_ERR_ARG, "%s: tensor %s has an unknown dtype (%d)", path, t->name, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > BF_ST_MAX_DIMS)
        return bf_error(BF_ERR_ARG, "%s: tensor %s has %d dimensions, allowed 0..%d", path, t->name, t->ndim,
                        BF_ST_MAX_DIMS);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0 || (double)t->shape[d] >= MAX_WRITE_INT)
            return bf_error(BF_ERR_ARG, "%s: tensor %s has invalid size %" PRId64 " in dimension %d", path,
                            t->name, t->shape[d], d);
    char shape[160];
    int overflow;
    uint64_t expected = tensor_bytes(t->dtype, t->ndim, t->shape, &overflow);
    if (overflow)
        return bf_error(BF_ERR_ARG, "%s: tensor %s has shape %s, whose size does not fit in 64 bits", path, t->name,
                        format_shape(shape, sizeof shape, t->ndim, t->shape));
    if (expected != (uint64_t)t->nbytes)
        return bf_error(BF_ERR_ARG, "%s: tensor %s has %zu bytes of data, but dtype %s x shape %s needs %" PRIu64,
                        path, t->name, t->nbytes, bf_dtype_name(t->dtype),
                        format_shape(shape, sizeof shape, t->ndim, t->shape), expected);
    if (t->nbytes > 0 && t->data == NULL)
        return bf_error(BF_ERR_ARG, "%s: tensor %s has no data pointer", path, t->name);
    return BF_OK;
}

static int is_reserved_meta_key(const char *key) {
    return strcmp(key, KEY_FORMAT) == 0 || strcmp(key, KEY_FORMAT_VERSION) == 0 ||
           strcmp(key, KEY_CHECKSUM) == 0;
}

/* Builds the header object, with CHECKSUM_PLACEHOLDER as the checksum. Returns NULL only when cJSON
 * runs out of memory. */
static cJSON *build_header(const bf_st_tensor *tensors, int num_tensors, const bf_st_meta *meta, int num_meta) {
    cJSON *root = cJSON_CreateObject();
    cJSON *metadata = cJSON_AddObjectToObject(root, METADATA_KEY);
    char version[16];
    snprintf(version, sizeof version, "%d", BF_SAFETENSORS_FORMAT_VERSION);
    int ok = metadata != NULL && cJSON_AddStringToObject(metadata, KEY_FORMAT, FORMAT_NAME) != NULL &&
             cJSON_AddStringToObject(metadata, KEY_FORMAT_VERSION, version) != NULL &&
             cJSON_AddStringToObject(metadata, KEY_CHECKSUM, CHECKSUM_PLACEHOLDER) != NULL;
    for (int i = 0; ok && i < num_meta; i++)
        ok = cJSON_AddStringToObject(metadata, meta[i].key, meta[i].value) != NULL;

    uint64_t offset = 0;
    for (int i = 0; ok && i < num_tensors; i++) {
        const bf_st_tensor *t = &tensors[i];
        cJSON *entry = cJSON_AddObjectToObject(root, t->name);
        cJSON *shape = entry ? cJSON_AddArrayToObject(entry, "shape") : NULL;
        cJSON *offsets = shape ? cJSON_AddArrayToObject(entry, "data_offsets") : NULL;
        ok = offsets != NULL && cJSON_AddStringToObject(entry, "dtype", bf_dtype_name(t->dtype)) != NULL;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        ok = ok && cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset)) &&
             cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)(offset + t->nbytes)));
        offset += t->nbytes;
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Prints the header and pads it with spaces to a multiple of 8 bytes, so that the data section
 * (which starts after the 8-byte length and the header) is 8-byte aligned, as the Python package
 * does. Returns a malloc'd buffer (not NUL-terminated) and its length, or NULL on out of memory. */
static char *header_text(const cJSON *root, size_t *len_out) {
    char *json = cJSON_PrintUnformatted(root);
    if (json == NULL) return NULL;
    size_t len = strlen(json);
    size_t padded = (len + 7) / 8 * 8;
    char *text = malloc(padded);
    if (text != NULL) {
        memcpy(text, json, len);
        memset(text + len, ' ', padded - len);
        *len_out = padded;
    }
    cJSON_free(json);
    return text;
}

/* fwrite that treats a short write as an error (errno tells why). */
static int write_bytes(FILE *fp, const void *data, size_t n) {
    if (n == 0) return 1;
    return fwrite(data, 1, n, fp) == n;
}

/* fsync of the directory holding `path`, so that the rename itself survives a crash. Best effort:
 * some file systems refuse fsync on directories, and the file's own data is already safe. */
static void fsync_directory(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (dir == NULL) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

bf_status bf_safetensors_write(const char *path, const bf_st_tensor *tensors, int num_tensors,
                               const bf_st_meta *meta, int num_meta) {
    if (path == NULL || num_tensors < 0 || num_meta < 0 || (num_tensors > 0 && tensors == NULL) ||
        (num_meta > 0 && meta == NULL))
        return bf_error(BF_ERR_ARG, "safetensors write: invalid arguments (path %s, %d tensors, %d metadata pairs)",
                        path ? path : "NULL", num_tensors, num_meta);

    /* Check everything before touching the disk, and checksum the data section on the way: the
     * checksum goes into the header, which is written before the data. */
    uint32_t data_checksum = (uint32_t)crc32(0L, Z_NULL, 0);
    uint64_t data_bytes = 0;
    for (int i = 0; i < num_tensors; i++) {
        BF_TRY(check_tensor_for_write(path, &tensors[i], i));
        for (int j = 0; j < i; j++)
            if (strcmp(tensors[i].name, tensors[j].name) == 0)
                return bf_error(BF_ERR_ARG, "%s: tensor name %s appears twice", path, tensors[i].name);
        data_checksum = crc32_update(data_checksum, tensors[i].data, tensors[i].nbytes);
        data_bytes += tensors[i].nbytes;
    }
    if ((double)data_bytes >= MAX_WRITE_INT)
        return bf_error(BF_ERR_ARG, "%s: %" PRIu64 " bytes of tensor data is more than safetensors can describe",
                        path, data_bytes);
    for (int i = 0; i < num_meta; i++) {
        const bf_st_meta *m = &meta[i];
        if (memchr(m->key, '\0', sizeof m->key) == NULL || memchr(m->value, '\0', sizeof m->value) == NULL)
            return bf_error(BF_ERR_ARG, "%s: metadata pair %d has an unterminated key or value", path, i);
        if (is_reserved_meta_key(m->key))
            return bf_error(BF_ERR_ARG, "%s: metadata key \"%s\" is set by bioflex itself and may not be given",
                            path, m->key);
        for (int j = 0; j < i; j++)
            if (strcmp(m->key, meta[j].key) == 0)
                return bf_error(BF_ERR_ARG, "%s: metadata key \"%s\" appears twice", path, m->key);
    }

    /* The header is printed with a placeholder checksum, which the CRC of that text followed by the
     * data (zlib combines the two CRCs) then replaces in place: same length, same layout. */
    cJSON *root = build_header(tensors, num_tensors, meta, num_meta);
    size_t header_len = 0;
    char *header = root ? header_text(root, &header_len) : NULL;
    cJSON_Delete(root);
    if (header == NULL) return bf_error(BF_ERR_OOM, "%s: out of memory building the safetensors header", path);
    char *digits = checksum_digits(header, header_len);
    uint32_t checksum = crc32_update((uint32_t)crc32(0L, Z_NULL, 0), header, header_len);
    checksum = (uint32_t)crc32_combine(checksum, data_checksum, (z_off_t)data_bytes);
    char checksum_hex[9];
    snprintf(checksum_hex, sizeof checksum_hex, "%08" PRIx32, checksum);
    memcpy(digits, checksum_hex, 8);

    unsigned char len_bytes[8];
    for (int b = 0; b < 8; b++) len_bytes[b] = (unsigned char)((uint64_t)header_len >> (8 * b));

    /* Write everything to <path>.tmp and rename it into place only once it is complete and on
     * disk: a crash or a full disk then leaves the previous file intact, never a half-written one. */
    size_t tmp_cap = strlen(path) + sizeof ".tmp";
    char *tmp = malloc(tmp_cap);
    if (tmp == NULL) {
        free(header);
        return bf_error(BF_ERR_OOM, "%s: out of memory", path);
    }
    snprintf(tmp, tmp_cap, "%s.tmp", path);

    const char *step = "create";
    errno = 0;
    FILE *fp = fopen(tmp, "wb");
    int ok = fp != NULL;
    if (ok) {
        step = "write";
        ok = write_bytes(fp, len_bytes, sizeof len_bytes) && write_bytes(fp, header, header_len);
        for (int i = 0; ok && i < num_tensors; i++) ok = write_bytes(fp, tensors[i].data, tensors[i].nbytes);
    }
    if (ok) {
        step = "flush";
        ok = fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    }
    if (ok) {
        step = "close";
        ok = fclose(fp) == 0;
        fp = NULL; /* closed, even when fclose failed */
    }
    if (ok) {
        step = "rename";
        ok = rename(tmp, path) == 0;
    }
    int saved_errno = errno;
    free(header);
    if (!ok) {
        if (fp != NULL) fclose(fp);
        remove(tmp);
        /* A short fwrite does not always set errno; say "short write" rather than "Success". */
        bf_status s = bf_error(BF_ERR_IO, "cannot write %s: %s of %s failed: %s", path, step, tmp,
                               saved_errno ? strerror(saved_errno) : "short write");
        free(tmp);
        return s;
    }
    free(tmp);
    fsync_directory(path);
    return BF_OK;
}

/* ------------------------------------------------------------------------------------------- */
/* reading                                                                                      */

struct bf_st_file {
    char *path;             /* for messages */
    unsigned char *buffer;  /* the whole file (plus a few bytes of alignment padding in front) */
    cJSON *header;          /* parsed header, kept for metadata look-ups */
    const cJSON *metadata;  /* the "__metadata__" object inside header, or NULL */
    bf_st_tensor *tensors;  /* in header order; data points into buffer */
    int count;
};

void bf_safetensors_close(bf_st_file *f) {
    if (f == NULL) return;
    cJSON_Delete(f->header);
    free(f->tensors);
    free(f->buffer);
    free(f->path);
    free(f);
}

/* Loads the file into f->buffer so that the data section starts 8-byte aligned in memory, even if
 * the writer did not pad its header. Returns the file size in *size and the header length in
 * *header_len; the 8-byte length field starts at *file_start. Checks 1 and 2 happen here. */
static bf_status load_file(bf_st_file *f, unsigned char **file_start, uint64_t *size, uint64_t *header_len) {
    const char *path = f->path;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) return bf_error(BF_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        int e = errno;
        fclose(fp);
        return bf_error(BF_ERR_IO, "cannot read %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(fp);
        return bf_error(BF_ERR_IO, "cannot read %s: not a regular file", path);
    }
    *size = (uint64_t)st.st_size;

    /* Check 1: the 8-byte header length must be there. */
    if (*size < 8) {
        fclose(fp);
        return bf_error(BF_ERR_CHECKPOINT,
                        "%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length "
                        "(truncated, or not a safetensors file)", path, *size);
    }
    unsigned char len_bytes[8];
    if (fread(len_bytes, 1, 8, fp) != 8) {
        int e = ferror(fp) ? errno : 0;
        fclose(fp);
        return bf_error(BF_ERR_IO, "cannot read %s: %s", path, e ? strerror(e) : "file shrank while reading");
    }
    *header_len = 0;
    for (int b = 7; b >= 0; b--) *header_len = (*header_len << 8) | len_bytes[b];

    /* Check 2: the header must fit in the file. */
    if (*header_len > *size - 8) {
        fclose(fp);
        return bf_error(BF_ERR_CHECKPOINT,
                        "%s: header length says %" PRIu64 " bytes but only %" PRIu64 " bytes follow it "
                        "(truncated, or not a safetensors file)", path, *header_len, *size - 8);
    }
    if (*size > (uint64_t)SIZE_MAX - 8) {
        fclose(fp);
        return bf_error(BF_ERR_OOM, "%s: file of %" PRIu64 " bytes does not fit in memory", path, *size);
    }

    /* malloc returns memory aligned for any type (8 bytes at least); shift the file by `pad` bytes so the data section,
     * at 8 + header_len, lands 8-byte aligned and tensors can be read in place. */
    size_t pad = (size_t)((8 - (8 + *header_len) % 8) % 8);
    f->buffer = malloc((size_t)*size + pad);
    if (f->buffer == NULL) {
        fclose(fp);
        return bf_error(BF_ERR_OOM, "%s: cannot allocate %" PRIu64 " bytes to read the file", path, *size);
    }
    *file_start = f->buffer + pad;
    memcpy(*file_start, len_bytes, 8);
    size_t rest = (size_t)*size - 8;
    size_t got = fread(*file_start + 8, 1, rest, fp); /* one read, however big the file */
    int read_errno = errno;
    int failed = ferror(fp);
    fclose(fp);
    if (got != rest)
        return bf_error(BF_ERR_IO, "cannot read %s: got %zu of %zu bytes: %s", path, got, rest,
                        failed ? strerror(read_errno) : "file shrank while reading");
    return BF_OK;
}

/* A JSON number that is a non-negative integer exactly representable as a double. */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= MAX_READ_INT) || v != (double)(uint64_t)v) return 0;
    *out = (uint64_t)v;
    return 1;
}

/* Check 4 for "__metadata__": an object whose values are all strings. */
static bf_status check_metadata(const char *path, const cJSON *metadata) {
    if (!cJSON_IsObject(metadata))
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: %s is not a JSON object", path, METADATA_KEY);
    for (const cJSON *m = metadata->child; m != NULL; m = m->next)
        if (!cJSON_IsString(m))
            return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: metadata value of \"%s\" is not a string", path,
                            m->string);
    return BF_OK;
}

/* Checks 5 to 7 for one tensor entry of the header, and fills *t. `data` is the data section,
 * `data_size` its length. */
static bf_status parse_tensor(const char *path, const cJSON *entry, const unsigned char *data, uint64_t data_size,
                              bf_st_tensor *t) {
    const char *name = entry->string;

    /* Check 5: the fields are there and well-formed. */
    if (strlen(name) >= sizeof t->name)
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor name %.60s... is longer than %zu characters",
                        path, name, sizeof t->name - 1);
    if (!cJSON_IsObject(entry))
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: entry %s is not a JSON object", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype))
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor %s has no \"dtype\" string", path, name);
    if (!cJSON_IsArray(shape))
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor %s has no \"shape\" array", path, name);
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor %s has no \"data_offsets\" [begin, end]",
                        path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > BF_ST_MAX_DIMS)
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor %s has %d dimensions, bioflex reads at most %d",
                        path, name, ndim, BF_ST_MAX_DIMS);
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        uint64_t dim;
        if (!json_uint(cJSON_GetArrayItem(shape, d), &dim))
            return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor %s: shape[%d] is not a non-negative integer",
                            path, name, d);
        t->shape[d] = (int64_t)dim;
    }
    uint64_t begin, end;
    if (!json_uint(cJSON_GetArrayItem(offsets, 0), &begin) || !json_uint(cJSON_GetArrayItem(offsets, 1), &end))
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor %s: data_offsets are not non-negative integers",
                        path, name);

    /* Check 6: a dtype bioflex knows. */
    if (!dtype_from_name(dtype->valuestring, &t->dtype))
        return bf_error(BF_ERR_CHECKPOINT, "%s: tensor %s has dtype %s, which bioflex does not read (F32, I64, I32, U8, F64)",
                        path, name, dtype->valuestring);

    /* Check 7: the bytes lie inside the data section and are exactly dtype x shape. */
    if (begin > end || end > data_size)
        return bf_error(BF_ERR_CHECKPOINT,
                        "%s: tensor %s has data_offsets [%" PRIu64 ",%" PRIu64 "] outside the data section of %" PRIu64
                        " bytes (truncated or corrupt file)", path, name, begin, end, data_size);
    char shape_text[160];
    int overflow;
    uint64_t expected = tensor_bytes(t->dtype, ndim, t->shape, &overflow);
    if (overflow)
        return bf_error(BF_ERR_CHECKPOINT, "%s: tensor %s has shape %s, whose size does not fit in 64 bits (corrupt "
                        "header)", path, name, format_shape(shape_text, sizeof shape_text, ndim, t->shape));
    if (expected != end - begin)
        return bf_error(BF_ERR_CHECKPOINT,
                        "%s: tensor %s has data_offsets [%" PRIu64 ",%" PRIu64 "] (%" PRIu64 " bytes), but dtype %s x "
                        "shape %s needs %" PRIu64 " bytes", path, name, begin, end, end - begin,
                        dtype->valuestring, format_shape(shape_text, sizeof shape_text, ndim, t->shape), expected);
    t->data = data + begin;
    t->nbytes = (size_t)(end - begin);
    return BF_OK;
}

typedef struct byte_span {
    uint64_t begin, end;
} byte_span;

static int compare_spans(const void *a, const void *b) {
    const byte_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static bf_status check_tiling(const char *path, const bf_st_file *f, const unsigned char *data, uint64_t data_size) {
    byte_span *spans = malloc((f->count ? (size_t)f->count : 1) * sizeof *spans);
    if (spans == NULL) return bf_error(BF_ERR_OOM, "%s: out of memory", path);
    for (int i = 0; i < f->count; i++) {
        spans[i].begin = (uint64_t)((const unsigned char *)f->tensors[i].data - data);
        spans[i].end = spans[i].begin + f->tensors[i].nbytes;
    }
    qsort(spans, (size_t)f->count, sizeof *spans, compare_spans);
    uint64_t at = 0;
    bf_status st = BF_OK;
    for (int i = 0; i < f->count && st == BF_OK; i++) {
        if (spans[i].begin != at)
            st = bf_error(BF_ERR_CHECKPOINT, "%s: tensor data %s at byte %" PRIu64 " where the previous ends at %" PRIu64
                          " (the tensors must tile the data section: the file is damaged)", path,
                          spans[i].begin < at ? "overlaps" : "leaves a hole", spans[i].begin, at);
        at = spans[i].end;
    }
    if (st == BF_OK && at != data_size)
        st = bf_error(BF_ERR_CHECKPOINT, "%s: %" PRIu64 " bytes after the last tensor's data (the file is damaged)", path,
                      data_size - at);
    free(spans);
    return st;
}

/* Checks 3 to 8 on a loaded file. */
static bf_status parse_and_check(bf_st_file *f, const unsigned char *file, uint64_t size, uint64_t header_len) {
    const char *path = f->path;
    const char *header = (const char *)file + 8;
    const unsigned char *data = file + 8 + header_len;
    uint64_t data_size = size - 8 - header_len;

    /* Check 3: the header is JSON, followed by nothing but padding. */
    const char *parse_end = NULL;
    f->header = cJSON_ParseWithLengthOpts(header, (size_t)header_len, &parse_end, 0);
    if (f->header == NULL)
        return bf_error(BF_ERR_CHECKPOINT, "%s: header is not valid JSON (error near byte %td of %" PRIu64 ")", path,
                        parse_end ? parse_end - header : (ptrdiff_t)0, header_len);
    for (const char *p = parse_end; p < header + header_len; p++)
        if (!isspace((unsigned char)*p))
            return bf_error(BF_ERR_CHECKPOINT, "%s: header has stray bytes after the JSON object (at byte %td)", path,
                            p - header);

    if (!cJSON_IsObject(f->header))
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: not a JSON object", path);

    /* Check 4: the metadata, and with it the format version, come before the tensor entries: a
     * file from a newer bioflex may describe its tensors in ways this code does not understand, and
     * "format version 2" is then the message that helps, not a complaint about some field. */
    const cJSON *metadata = cJSON_GetObjectItemCaseSensitive(f->header, METADATA_KEY);
    if (metadata != NULL) {
        BF_TRY(check_metadata(path, metadata));
        f->metadata = metadata;
    }
    /* A plain safetensors file, as PyTorch or the Python package writes it, has no bioflex metadata:
     * it is accepted as it is, with no version to check and no checksum to verify. A bioflex file
     * must carry both, so that one whose metadata was stripped or damaged is not trusted. */
    const char *format = bf_safetensors_meta(f, KEY_FORMAT);
    const char *version = bf_safetensors_meta(f, KEY_FORMAT_VERSION);
    const char *checksum = bf_safetensors_meta(f, KEY_CHECKSUM);
    if (format != NULL && strcmp(format, FORMAT_NAME) == 0 && (version == NULL || checksum == NULL))
        return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: a bioflex file must have metadata \"%s\" and \"%s\"",
                        path, KEY_FORMAT_VERSION, KEY_CHECKSUM);
    char own_version[16];
    snprintf(own_version, sizeof own_version, "%d", BF_SAFETENSORS_FORMAT_VERSION);
    int data_only = version != NULL && strcmp(version, DATA_ONLY_CHECKSUM_VERSION) == 0;
    if (version != NULL && strcmp(version, own_version) != 0 && !data_only)
        return bf_error(BF_ERR_CHECKPOINT, "%s: format version %s, this bioflex reads %s and %s", path, version,
                        DATA_ONLY_CHECKSUM_VERSION, own_version);

    /* Checks 5 to 7, tensor entry by tensor entry. */
    int entries = cJSON_GetArraySize(f->header);
    f->tensors = calloc(entries > 0 ? (size_t)entries : 1, sizeof *f->tensors);
    if (f->tensors == NULL) return bf_error(BF_ERR_OOM, "%s: out of memory", path);
    for (const cJSON *entry = f->header->child; entry != NULL; entry = entry->next) {
        if (strcmp(entry->string, METADATA_KEY) == 0) {
            if (entry != metadata)
                return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: %s appears twice", path, METADATA_KEY);
            continue;
        }
        bf_st_tensor *t = &f->tensors[f->count];
        BF_TRY(parse_tensor(path, entry, data, data_size, t));
        if (bf_safetensors_find(f, t->name) != NULL)
            return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: tensor %s appears twice", path, t->name);
        f->count++;
    }

    /* The tensors tile the data section, as the format requires (the safetensors library refuses
     * anything else): two tensors on the same bytes, a hole or trailing bytes mean a damaged file. */
    BF_TRY(check_tiling(path, f, data, data_size));

    /* Check 8: the data section is what was written. */
    if (checksum != NULL) {
        int hex_ok = strlen(checksum) == 8;
        for (int i = 0; hex_ok && i < 8; i++) hex_ok = isxdigit((unsigned char)checksum[i]);
        if (!hex_ok)
            return bf_error(BF_ERR_CHECKPOINT, "%s: invalid header: checksum \"%s\" is not 8 hex digits", path,
                            checksum);
        uint32_t stored = (uint32_t)strtoul(checksum, NULL, 16);
        uint32_t actual = (uint32_t)crc32(0L, Z_NULL, 0);
        if (!data_only) { /* the header text as written: its checksum digits as the placeholder */
            char *text = malloc(header_len ? (size_t)header_len : 1);
            if (text == NULL) return bf_error(BF_ERR_OOM, "%s: out of memory", path);
            memcpy(text, header, (size_t)header_len);
            char *digits = checksum_digits(text, (size_t)header_len);
            if (digits != NULL) memcpy(digits, CHECKSUM_PLACEHOLDER, 8);
            actual = crc32_update(actual, text, (size_t)header_len);
            free(text);
        }
        actual = crc32_update(actual, data, (size_t)data_size);
        if (stored != actual)
            return bf_error(BF_ERR_CHECKPOINT, "%s: checksum mismatch: file says %s, computed %08" PRIx32
                            " over %s — the file is corrupt or was edited", path, checksum, actual,
                            data_only ? "the data" : "the header and data");
    }
    return BF_OK;
}

bf_status bf_safetensors_checksum(const char *path, char out[9]) {
    out[0] = 0;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) return bf_error(BF_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    unsigned char len_bytes[8];
    uint64_t header_len = 0;
    int ok = fread(len_bytes, 1, 8, fp) == 8;
    for (int b = 7; ok && b >= 0; b--) header_len = (header_len << 8) | len_bytes[b];
    ok = ok && header_len > 0 && header_len <= 100u * 1024 * 1024; /* a header, not a whole file */
    char *header = ok ? malloc((size_t)header_len + 1) : NULL;
    ok = header != NULL && fread(header, 1, (size_t)header_len, fp) == header_len;
    fclose(fp);
    cJSON *root = NULL;
    if (ok) {
        header[header_len] = 0;
        root = cJSON_Parse(header);
    }
    free(header);
    const cJSON *meta = root ? cJSON_GetObjectItemCaseSensitive(root, "__metadata__") : NULL;
    const cJSON *sum = meta ? cJSON_GetObjectItemCaseSensitive(meta, "checksum") : NULL;
    bf_status s = BF_OK;
    if (cJSON_IsString(sum) && strlen(sum->valuestring) == 8)
        memcpy(out, sum->valuestring, 9);
    else
        s = bf_error(BF_ERR_CHECKPOINT, "%s: no readable header with a checksum (truncated, or not a bioflex "
                     "safetensors file)", path);
    cJSON_Delete(root);
    return s;
}

bf_status bf_safetensors_read(const char *path, bf_st_file **out) {
    if (out != NULL) *out = NULL;
    if (path == NULL || out == NULL) return bf_error(BF_ERR_ARG, "safetensors read: NULL path or output");
    bf_st_file *f = calloc(1, sizeof *f);
    if (f == NULL || (f->path = strdup(path)) == NULL) {
        free(f);
        return bf_error(BF_ERR_OOM, "%s: out of memory", path);
    }
    unsigned char *file = NULL;
    uint64_t size = 0, header_len = 0;
    bf_status s = load_file(f, &file, &size, &header_len);
    if (s == BF_OK) s = parse_and_check(f, file, size, header_len);
    if (s != BF_OK) {
        bf_safetensors_close(f);
        return s;
    }
    *out = f;
    return BF_OK;
}

int bf_safetensors_count(const bf_st_file *f) { return f ? f->count : 0; }

const bf_st_tensor *bf_safetensors_at(const bf_st_file *f, int i) {
    return f != NULL && i >= 0 && i < f->count ? &f->tensors[i] : NULL;
}

const bf_st_tensor *bf_safetensors_find(const bf_st_file *f, const char *name) {
    if (f == NULL || name == NULL) return NULL;
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *bf_safetensors_meta(const bf_st_file *f, const char *key) {
    if (f == NULL || f->metadata == NULL || key == NULL) return NULL;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(f->metadata, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

bf_status bf_safetensors_copy_out(const bf_st_file *f, const char *name, bf_dtype dtype, int ndim,
                                  const int64_t *shape, void *dst) {
    if (f == NULL || name == NULL || ndim < 0 || ndim > BF_ST_MAX_DIMS || (ndim > 0 && shape == NULL))
        return bf_error(BF_ERR_ARG, "safetensors copy_out: invalid arguments (tensor %s, ndim %d)",
                        name ? name : "NULL", ndim);
    const bf_st_tensor *t = bf_safetensors_find(f, name);
    if (t == NULL) {
        /* Naming a few of the tensors that are there usually shows the mismatch at a glance
         * (a prefix such as "module." or a renamed layer). */
        char some[256] = "";
        size_t used = 0;
        for (int i = 0; i < f->count && i < 4 && used < sizeof some; i++)
            used += (size_t)snprintf(some + used, sizeof some - used, "%s%s", i ? ", " : "", f->tensors[i].name);
        return bf_error(BF_ERR_CHECKPOINT, "%s: no tensor named %s (the file has %d tensors%s%s%s)", f->path, name,
                        f->count, f->count ? ": " : "", some, f->count > 4 ? ", ..." : "");
    }
    if (t->dtype != dtype)
        return bf_error(BF_ERR_CHECKPOINT, "%s: tensor %s has dtype %s, expected %s", f->path, name,
                        bf_dtype_name(t->dtype), bf_dtype_name(dtype));
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char found[160], expected[160];
        return bf_error(BF_ERR_CHECKPOINT, "%s: tensor %s has shape %s, expected %s", f->path, name,
                        format_shape(found, sizeof found, t->ndim, t->shape),
                        format_shape(expected, sizeof expected, ndim, shape));
    }
    if (t->nbytes > 0) {
        if (dst == NULL) return bf_error(BF_ERR_ARG, "safetensors copy_out: NULL destination for tensor %s", name);
        memcpy(dst, t->data, t->nbytes); /* memcpy: the source need not be aligned for the dtype */
    }
    return BF_OK;
}
