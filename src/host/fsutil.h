/* fsutil.h - internal: the few file-system operations checkpoints and logs need. */
#ifndef BIOFLEX_FSUTIL_H
#define BIOFLEX_FSUTIL_H

#include <stddef.h>
#include <stdio.h>

#include "bioflex/status.h"

/* mkdir -p */
bf_status bf_mkdir_p(const char *path);
/* rm -r (no error when absent) */
bf_status bf_remove_tree(const char *path);
/* Writes path.tmp, fsyncs it and renames it over path. */
bf_status bf_write_file_atomic(const char *path, const void *data, size_t size);
/* fsync a directory so a rename in it is durable (best effort). */
void bf_fsync_dir(const char *path);
/* The size of the open file f, -1 when it is not a regular file (or cannot be stat'ed): a
 * directory opens too, and fseek/ftell can put its end at LONG_MAX, which a reader would malloc. */
long bf_regular_file_size(FILE *f);
/* The whole file as a NUL-terminated string (*text: free it); an error naming the file when it is
 * missing, empty or unreadable. */
bf_status bf_read_file_text(const char *path, char **text);

#endif
