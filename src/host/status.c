/* status.c - per-thread error messages (see status.h). */
#include "bioflex/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char error_message[2048];

bf_status bf_error(bf_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return status;
}

bf_status bf_error_context(bf_status status, const char *fmt, ...) {
    char prefix[1024], old[sizeof error_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, error_message, sizeof old);
    snprintf(error_message, sizeof error_message, "%s: %s", prefix, old);
    return status;
}

const char *bf_last_error(void) { return error_message; }

const char *bf_status_name(bf_status status) {
    switch (status) {
    case BF_OK: return "ok";
    case BF_ERR_ARG: return "invalid argument";
    case BF_ERR_CONFIG: return "config error";
    case BF_ERR_IO: return "i/o error";
    case BF_ERR_FORMAT: return "format error";
    case BF_ERR_CHECKPOINT: return "checkpoint error";
    case BF_ERR_OOM: return "out of memory";
    case BF_ERR_DEVICE: return "device error";
    case BF_ERR_UNAVAILABLE: return "unavailable";
    case BF_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
