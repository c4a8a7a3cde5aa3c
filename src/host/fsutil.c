/* fsutil.c - directory creation, removal and atomic small-file writes (POSIX). */
#define _XOPEN_SOURCE 700
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bf_status bf_mkdir_p(const char *path) {
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return bf_error(BF_ERR_IO, "path too long: %s", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char saved = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return bf_error(BF_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
            *p = saved;
            if (!saved) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return bf_error(BF_ERR_IO, "%s exists and is not a directory", path);
    return BF_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

bf_status bf_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return BF_OK;
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return bf_error(BF_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    return BF_OK;
}

bf_status bf_write_file_atomic(const char *path, const void *data, size_t size) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return bf_error(BF_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    ssize_t w = write(fd, data, size);
    int ok = w == (ssize_t)size && fsync(fd) == 0;
    int err = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) err = errno;
        unlink(tmp);
        return bf_error(BF_ERR_IO, "cannot write %s: %s", path, strerror(err));
    }
    return BF_OK;
}

void bf_fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fsync(fd);
    close(fd);
}

long bf_regular_file_size(FILE *f) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > LONG_MAX) return -1;
    return (long)st.st_size;
}

bf_status bf_read_file_text(const char *path, char **text) {
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return bf_error(BF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    long size = bf_regular_file_size(f);
    if (size < 0) {
        fclose(f);
        return bf_error(BF_ERR_IO, "%s: cannot read: not a regular file", path);
    }
    char *buf = size > 0 ? malloc((size_t)size + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        fclose(f);
        return bf_error(BF_ERR_IO, "%s: cannot read%s", path, size == 0 ? " (empty file)" : "");
    }
    fclose(f);
    buf[size] = '\0';
    *text = buf;
    return BF_OK;
}
