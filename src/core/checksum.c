/* checksum.c: the checksums of files the product writes and later trusts:
 * XXH3-64 of byte ranges read in pieces, and their 16-digit hex form. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "src/core/core.h"

#define READ_PIECE (8u << 20)   /* bytes per read while checksumming */

void fs_hex64(char out[17], uint64_t v)
{
    snprintf(out, 17, "%016llx", (unsigned long long)v);
}

int fs_unhex64(const char *s, uint64_t *v)
{
    if (!s || strlen(s) != 16) return -1;
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        int d = s[i] >= '0' && s[i] <= '9' ? s[i] - '0' : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10 : -1;
        if (d < 0) return -1;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return 0;
}

fs_status fs_fd_xxh3(fs_ctx *ctx, int fd, const char *path, uint64_t off, uint64_t n, uint64_t *sum, uint64_t *got)
{
    XXH3_state_t *st = XXH3_createState();
    uint8_t *buf = malloc(READ_PIECE);
    if (!st || !buf) { XXH3_freeState(st); free(buf); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: checksum", path); }
    XXH3_64bits_reset(st);
    uint64_t done = 0;
    fs_status rc = FS_OK;
    while (done < n) {
        size_t want = n - done < READ_PIECE ? (size_t)(n - done) : READ_PIECE;
        ssize_t k = pread(fd, buf, want, (off_t)(off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: read at %llu: %s", path, (unsigned long long)(off + done), strerror(errno));
            break;
        }
        if (k == 0) break;
        XXH3_64bits_update(st, buf, (size_t)k);
        done += (uint64_t)k;
    }
    *sum = XXH3_64bits_digest(st);
    *got = done;
    XXH3_freeState(st);
    free(buf);
    return rc;
}

fs_status fs_file_xxh3(fs_ctx *ctx, const char *path, uint64_t *size, uint64_t *sum)
{
    int fd = -1;
    fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, NULL);
    if (rc != FS_OK) return rc;
    rc = fs_fd_xxh3(ctx, fd, path, 0, UINT64_MAX, sum, size);
    close(fd);
    return rc;
}

