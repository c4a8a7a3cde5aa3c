/* safetensors.h - reading and writing safetensors files.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON (cJSON), then raw little-endian
 * tensor data. The JSON maps each tensor name to {"dtype","shape","data_offsets"} and carries a
 * "__metadata__" object of string pairs. bioflex adds to the metadata:
 *   "format": "bioflex", "format_version": "2", "checksum": CRC-32 (zlib), in hex, of the header text
 *   (its own 8 digits read as "00000000") followed by the data section. Version 1 files, whose
 *   checksum covers the data section only, are still read.
 * Writing goes to "<path>.tmp", is flushed and fsync'd, then renamed over <path>, so a crash never
 * leaves a half-written file under the final name. Reading checks the header length against the
 * file size, that every tensor's offsets lie inside the data section and match dtype x shape,
 * the format version and the checksum, and says which check failed. */
#ifndef BIOFLEX_SAFETENSORS_H
#define BIOFLEX_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "bioflex/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BF_SAFETENSORS_FORMAT_VERSION 2
#define BF_ST_MAX_DIMS 8

typedef enum bf_dtype { BF_DTYPE_F32 = 0, BF_DTYPE_I64, BF_DTYPE_I32, BF_DTYPE_U8, BF_DTYPE_F64 } bf_dtype;

size_t bf_dtype_size(bf_dtype t);
const char *bf_dtype_name(bf_dtype t); /* "F32", "I64", ... as safetensors writes them */

typedef struct bf_st_tensor {
    char name[128];
    bf_dtype dtype;
    int ndim;
    int64_t shape[BF_ST_MAX_DIMS];
    const void *data;      /* writing: host data of dtype x shape; reading: points into the file buffer */
    size_t nbytes;
} bf_st_tensor;

typedef struct bf_st_meta {
    char key[64];
    char value[2048];
} bf_st_meta;

/* Writes tensors (in the given order) and metadata atomically to path. */
bf_status bf_safetensors_write(const char *path, const bf_st_tensor *tensors, int num_tensors,
                               const bf_st_meta *meta, int num_meta);

typedef struct bf_st_file bf_st_file;

/* Reads and verifies a whole file. */
bf_status bf_safetensors_read(const char *path, bf_st_file **out);
void bf_safetensors_close(bf_st_file *f);
/* The checksum a file's header records (8 hex digits), reading the header alone: what tells two
 * files apart cheaply (a checkpoint's state file names its weights file's). Not a verification:
 * bf_safetensors_read checks the data against it. */
bf_status bf_safetensors_checksum(const char *path, char out[9]);

int bf_safetensors_count(const bf_st_file *f);
const bf_st_tensor *bf_safetensors_at(const bf_st_file *f, int i);
/* NULL when absent. */
const bf_st_tensor *bf_safetensors_find(const bf_st_file *f, const char *name);
/* NULL when absent. */
const char *bf_safetensors_meta(const bf_st_file *f, const char *key);

/* Finds `name` and checks its dtype and shape, with a message naming the file, the tensor and
 * expected vs found, then copies its data to dst (host). */
bf_status bf_safetensors_copy_out(const bf_st_file *f, const char *name, bf_dtype dtype, int ndim,
                                  const int64_t *shape, void *dst);

#ifdef __cplusplus
}
#endif
#endif
