/* fsutil.c - directory creation, removal, atomic small-file writes and path comparison (POSIX). */
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

bf_status bf_resolve_path(const char *path, char *out, size_t cap) {
    const size_t len = strlen(path);
    if (len == 0) return bf_error(BF_ERR_ARG, "cannot resolve an empty path");
    char *prefix = malloc(len + 2);
    if (!prefix) return bf_error(BF_ERR_OOM, "out of host memory resolving %s", path);
    /* The longest leading part of path that exists (realpath succeeds on it): cut shortens it by a
     * component at a time, down to "/" or "." (the working directory), which always exist. */
    size_t cut = len;
    char *real = NULL;
    for (;;) {
        if (cut == 0) snprintf(prefix, len + 2, ".");
        else snprintf(prefix, len + 2, "%.*s", (int)cut, path);
        real = realpath(prefix, NULL);
        if (real || cut == 0) break;
        while (cut > 1 && path[cut - 1] == '/') cut--;
        while (cut > 0 && path[cut - 1] != '/') cut--;
    }
    free(prefix);
    if (!real) return bf_error(BF_ERR_IO, "cannot resolve %s: %s", path, strerror(errno));
    int n = snprintf(out, cap, "%s", real);
    free(real);
    if (n < 0 || (size_t)n >= cap) return bf_error(BF_ERR_ARG, "path too long: %s", path);
    /* The components that do not exist yet: none is a link, so "." and ".." act on the text. */
    size_t used = (size_t)n;
    for (const char *c = path + cut; *c;) {
        while (*c == '/') c++;
        const size_t k = strcspn(c, "/");
        if (k == 0) break;
        if (k == 2 && c[0] == '.' && c[1] == '.') {
            while (used > 1 && out[used - 1] != '/') used--;
            if (used > 1) used--; /* the slash before the dropped component, except the root's */
            out[used] = 0;
        } else if (!(k == 1 && c[0] == '.')) {
            const int sep = used > 1 || out[0] != '/'; /* no second slash after the root */
            if (used + (size_t)sep + k >= cap) return bf_error(BF_ERR_ARG, "path too long: %s", path);
            if (sep) out[used++] = '/';
            memcpy(out + used, c, k);
            used += k;
            out[used] = 0;
        }
        c += k;
    }
    return BF_OK;
}

int bf_path_is_within(const char *resolved_path, const char *resolved_dir) {
    const size_t n = strlen(resolved_dir);
    if (n == 1 && resolved_dir[0] == '/') return resolved_path[0] == '/';
    return strncmp(resolved_path, resolved_dir, n) == 0 && (resolved_path[n] == 0 || resolved_path[n] == '/');
}

int bf_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    const int a_exists = stat(a, &sa) == 0, b_exists = stat(b, &sb) == 0;
    if (a_exists && b_exists) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    if (a_exists != b_exists) return 0;
    char ra[BF_RESOLVED_PATH_MAX], rb[BF_RESOLVED_PATH_MAX];
    return bf_resolve_path(a, ra, sizeof ra) == BF_OK && bf_resolve_path(b, rb, sizeof rb) == BF_OK &&
           strcmp(ra, rb) == 0;
}
