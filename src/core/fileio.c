/* fileio.c: the durable-write helpers every writer of the project shares:
 * an fsync of a file's folder (so a rename into it survives a crash), and a
 * whole small file written atomically (temporary name, fsync, rename, fsync
 * of the folder: readers see the old file, or none, or the whole new one). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/core/core.h"

fs_status fs_lock_folder(fs_ctx *ctx, const char *dir, int *fd_out)
{
    char path[4200];
    *fd_out = -1;
    snprintf(path, sizeof path, "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int e = errno;
        struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        long pid = (e == EAGAIN || e == EACCES) && fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK
                       ? (long)who.l_pid : -1;
        close(fd);
        if (pid > 0)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "--work %s is in use by process %ld (another quantize run); "
                              "wait for it or choose another folder", dir, pid);
        return fs_ctx_err(ctx, FS_ERR_IO, "%s: cannot lock: %s", path, strerror(e));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) { /* informative only */ }
    *fd_out = fd;
    return FS_OK;
}

fs_status fs_lock_dir(fs_ctx *ctx, const char *dir, const char *what, int *fd_out)
{
    *fd_out = -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return fs_ctx_err(ctx, FS_ERR_IO, "%s %s: %s", what, dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "%s %s is in use by another forge-stream run (quantize or --resume "
                              "writing there); wait for it or choose another folder", what, dir);
        if (e != EBADF && e != EINVAL && e != ENOLCK && e != EOPNOTSUPP)
            return fs_ctx_err(ctx, FS_ERR_IO, "%s %s: cannot lock: %s", what, dir, strerror(e));
        return FS_OK;                 /* a file system without flock on folders: the work lock still holds */
    }
    *fd_out = fd;
    return FS_OK;
}

fs_status fs_fsync_dir_of(fs_ctx *ctx, const char *path)
{
    char *copy = strdup(path);
    if (!copy) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: copy of the path", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    fs_status rc = FS_OK;
    if (fd < 0 || fsync(fd) != 0)
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: fsync of its folder: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    free(copy);
    return rc;
}

fs_status fs_write_atomic_keep(fs_ctx *ctx, const char *path, const void *buf, size_t n, const char *keep)
{
    size_t len = strlen(path) + (keep ? strlen(keep) : 0) + 32;
    char *tmp = malloc(len), *ktmp = malloc(len);
    if (!tmp || !ktmp) { free(tmp); free(ktmp); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path); }
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    fs_status rc = FS_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", tmp, strerror(errno));
    for (size_t off = 0; rc == FS_OK && off < n;) {
        int inj = fs_io_fault(ctx, "atomic-write");
        ssize_t w = inj ? (errno = inj, -1) : write(fd, (const char *)buf + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) rc = fs_write_errno(ctx, w < 0 ? errno : EIO, tmp, n - off, off);
        else off += (size_t)w;
    }
    if (rc == FS_OK && fsync(fd) != 0) rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
    if (fd >= 0 && close(fd) != 0 && rc == FS_OK) rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: close: %s", tmp, strerror(errno));
    if (rc == FS_OK) fs_crashpoint(ctx, "atomic-written");
    if (rc == FS_OK && keep) {
        /* the file being replaced stays readable as keep: a hard link made under a
         * temporary name and renamed over keep, so keep is always whole */
        snprintf(ktmp, len, "%s.tmp.%ld", keep, (long)getpid());
        unlink(ktmp);
        if (link(path, ktmp) == 0) {
            if (rename(ktmp, keep) != 0) {
                rc = fs_ctx_err(ctx, FS_ERR_IO, "rename %s -> %s: %s", ktmp, keep, strerror(errno));
                unlink(ktmp);
            }
        } else if (errno != ENOENT) {
            rc = fs_ctx_err(ctx, FS_ERR_IO, "link %s -> %s: %s (the file system must allow hard links)", path, ktmp,
                            strerror(errno));
        }
    }
    if (rc == FS_OK && rename(tmp, path) != 0)
        rc = fs_ctx_err(ctx, FS_ERR_IO, "rename %s -> %s: %s", tmp, path, strerror(errno));
    if (rc != FS_OK) unlink(tmp);
    else {
        fs_crashpoint(ctx, "atomic-renamed");
        rc = fs_fsync_dir_of(ctx, path);
    }
    free(tmp);
    free(ktmp);
    return rc;
}

fs_status fs_write_atomic(fs_ctx *ctx, const char *path, const void *buf, size_t n)
{
    return fs_write_atomic_keep(ctx, path, buf, n, NULL);
}

#define MAX_IO (1u << 30)   /* bytes per pread/pwrite call */

typedef unsigned long long ull;

fs_status fs_write_errno(fs_ctx *ctx, int e, const char *path, uint64_t n, uint64_t off)
{
    const char *what = e == ENOSPC ? "no space left on device" : e == EDQUOT ? "disk quota exceeded"
                     : e == EFBIG ? "file size limit exceeded" : NULL;
    if (what)
        return fs_ctx_err(ctx, FS_ERR_NOSPACE, "%s while writing %s (%llu bytes needed at offset %llu)", what, path,
                          (ull)n, (ull)off);
    return fs_ctx_err(ctx, FS_ERR_IO, "%s: write of %llu bytes at offset %llu: %s", path, (ull)n, (ull)off,
                      e ? strerror(e) : "nothing written");
}

static const char *kind_of(mode_t m)
{
    return S_ISFIFO(m) ? "a named pipe" : S_ISDIR(m) ? "a folder" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

fs_status fs_path_status(int e)
{
    int bad_path = e == ENOENT || e == ENOTDIR || e == EACCES || e == EPERM || e == ELOOP ||
                   e == ENAMETOOLONG || e == ENXIO || e == EISDIR || e == ENODEV;
    return bad_path ? FS_ERR_USAGE : FS_ERR_IO;
}

fs_status fs_open_regular(fs_ctx *ctx, const char *path, int flags, int *fd, uint64_t *size)
{
    *fd = -1;
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer forever */
    int f = open(path, (flags & (O_RDONLY | O_WRONLY | O_RDWR)) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (f < 0) {
        int e = errno;
        return fs_ctx_err(ctx, fs_path_status(e), "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(f, &st) != 0) {
        int e = errno;
        close(f);
        return fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(f);
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: not a regular file (%s)", path, kind_of(st.st_mode));
    }
    int fl = fcntl(f, F_GETFL);
    if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(f);
        return fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", path, strerror(e));
    }
    *fd = f;
    if (size) *size = (uint64_t)st.st_size;
    return FS_OK;
}

fs_status fs_pwrite_full(fs_ctx *ctx, int fd, const char *path, const void *src, uint64_t n, uint64_t off,
                         const char *fault_point)
{
    const uint8_t *p = src;
    while (n > 0) {
        size_t want = n > MAX_IO ? MAX_IO : (size_t)n;
        int inj = fault_point ? fs_io_fault(ctx, fault_point) : 0;
        ssize_t put = inj ? (errno = inj, -1) : pwrite(fd, p, want, (off_t)off);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return fs_write_errno(ctx, put < 0 ? errno : EIO, path, n, off);
        p += put;
        n -= (uint64_t)put;
        off += (uint64_t)put;
    }
    return FS_OK;
}

fs_status fs_pread_full(fs_ctx *ctx, int fd, const char *path, void *dst, uint64_t n, uint64_t off)
{
    uint8_t *p = dst;
    while (n > 0) {
        size_t want = n > MAX_IO ? MAX_IO : (size_t)n;
        ssize_t got = pread(fd, p, want, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            return fs_ctx_err(ctx, FS_ERR_IO, "%s: read of %zu bytes at offset %llu: %s", path,
                              want, (ull)off, strerror(errno));
        if (got == 0)
            return fs_ctx_err(ctx, FS_ERR_IO, "%s: file ends at offset %llu (truncated while open?)",
                              path, (ull)off);
        p += got;
        n -= (uint64_t)got;
        off += (uint64_t)got;
    }
    return FS_OK;
}
