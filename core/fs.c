// File-system helpers: whole-file read, atomic write of one buffer or of several parts (temporary name,
// fsync, rename, fsync the directory), mkdir -p, path joins. Every failure names the path and the system's reason.
#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

gt_status fs_read_file(const char *path, char **data, size_t *len, gt_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return gt_fail(err, errno == ENOENT ? GT_ENOTFOUND : GT_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap + 1);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = xrealloc(buf, (cap *= 2) + 1);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return gt_fail(err, GT_EIO, "%s: read failed", path);
    }
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return GT_OK;
}

gt_status fs_fsync_dir(const char *dir, gt_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return gt_fail(err, GT_EIO, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && errno != EINVAL) return gt_fail(err, GT_EIO, "%s: fsync failed: %s", dir, strerror(errno));
    return GT_OK;
}

gt_status fs_write_atomic_parts(const char *path, const fs_part *parts, int n, gt_error *err) {
    char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        gt_status st = gt_fail(err, GT_EIO, "%s: cannot create: %s (is the directory writable?)", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    for (int i = 0; i < n; i++) {
        const uint8_t *p = parts[i].data;
        size_t left = parts[i].len;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                gt_fail(err, GT_EIO, "%s: write failed: %s (disk full?); the previous %s is unchanged", tmp,
                        w < 0 ? strerror(errno) : "no progress", path);
                close(fd);
                unlink(tmp);
                free(tmp);
                return GT_EIO;
            }
            p += w;
            left -= (size_t)w;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        gt_fail(err, GT_EIO, "%s: fsync failed: %s; the previous %s is unchanged", tmp, strerror(errno), path);
        unlink(tmp);
        free(tmp);
        return GT_EIO;
    }
    if (rename(tmp, path) != 0) {
        gt_fail(err, GT_EIO, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return GT_EIO;
    }
    free(tmp);
    char *dcopy = xstrdup(path);
    gt_status st = fs_fsync_dir(dirname(dcopy), err);
    free(dcopy);
    return st;
}

gt_status fs_write_atomic(const char *path, const void *data, size_t len, gt_error *err) {
    fs_part part = {data, len};
    return fs_write_atomic_parts(path, &part, 1, err);
}

gt_status fs_mkdirs(const char *path, gt_error *err) {
    char *p = xstrdup(path);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                gt_status st = gt_fail(err, GT_EIO, "%s: cannot create directory: %s", p, strerror(errno));
                free(p);
                return st;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    if (!fs_is_dir(path)) return gt_fail(err, GT_EIO, "%s: exists and is not a directory", path);
    return GT_OK;
}

int fs_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

int fs_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

char *fs_join(const char *a, const char *b) {
    size_t la = strlen(a);
    return xasprintf("%s%s%s", a, (la && a[la - 1] == '/') ? "" : "/", b);
}
