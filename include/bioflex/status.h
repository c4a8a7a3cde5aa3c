/* status.h - error reporting used by every fallible bioflex function.
 *
 * A function that can fail returns a bf_status. On failure it also records a human-readable
 * message (what failed, where, and what was expected) with bf_error(); the caller that finally
 * reports the problem reads it with bf_last_error(). The message is per thread, like errno, so
 * loader threads and GPU threads do not overwrite each other's messages. */
#ifndef BIOFLEX_STATUS_H
#define BIOFLEX_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bf_status {
    BF_OK = 0,
    BF_ERR_ARG,         /* a caller passed an invalid argument (shape mismatch, NULL, ...) */
    BF_ERR_CONFIG,      /* a config file or --set override is invalid (exit status 2) */
    BF_ERR_IO,          /* a file could not be read or written */
    BF_ERR_FORMAT,      /* a file was read but its content is malformed, truncated or corrupt */
    BF_ERR_CHECKPOINT,  /* a checkpoint failed a check (version, checksum, shape, dtype) */
    BF_ERR_OOM,         /* host or device memory allocation failed */
    BF_ERR_DEVICE,      /* a CUDA, cuDNN, cuBLAS, NCCL or oneDNN call failed */
    BF_ERR_UNAVAILABLE, /* a feature is not built in or no device is present */
    BF_ERR_INTERNAL     /* a bug: an invariant did not hold */
} bf_status;

/* Records a printf-style message for the current thread and returns `status`, so that
 * `return bf_error(BF_ERR_IO, "cannot open %s: %s", path, strerror(errno));` reads naturally. */
bf_status bf_error(bf_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prepends context to the current thread's message ("loading checkpoint x: <old message>")
 * and returns `status` unchanged. */
bf_status bf_error_context(bf_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The last message recorded on this thread ("" if none). */
const char *bf_last_error(void);

/* A short name for a status ("io error", ...). */
const char *bf_status_name(bf_status status);

/* Propagates a failing status to the caller. */
#define BF_TRY(expr)                         \
    do {                                     \
        bf_status bf_try_status_ = (expr);   \
        if (bf_try_status_ != BF_OK) return bf_try_status_; \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
