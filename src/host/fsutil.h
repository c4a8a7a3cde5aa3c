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
/* Room for a resolved path (bf_resolve_path): Linux's PATH_MAX. */
#define BF_RESOLVED_PATH_MAX 4096

/* path as an absolute path free of symbolic links, "." and "..", into out (cap bytes), also for a
 * path that does not exist yet (an output to be written): the realpath of its nearest existing
 * ancestor, then the rest as given. What tells whether two spellings (a link, "./", "a/../") name
 * the same place before anything is written there. */
bf_status bf_resolve_path(const char *path, char *out, size_t cap);
/* Whether the resolved path resolved_path is resolved_dir or lies below it (both from
 * bf_resolve_path): "/a/bc" is not inside "/a/b". */
int bf_path_is_within(const char *resolved_path, const char *resolved_dir);
/* Whether a and b name the same file: the same device and inode where both exist (hard links
 * included), else the same resolved path (bf_resolve_path). */
int bf_same_file(const char *a, const char *b);

#endif
