/* tokens.c: loading and validating token files (tokens.h). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/formats/tokens.h"

void fs_tokens_free(fs_tokens *t)
{
    free(t->ids);
    free(t->start);
    memset(t, 0, sizeof *t);
}

static int push(fs_tokens *t, size_t *cap, uint32_t id)
{
    if (t->n == *cap) {
        size_t c = *cap ? 2 * *cap : 4096;
        uint32_t *p = realloc(t->ids, sizeof *p * c);
        if (!p) return -1;
        t->ids = p;
        *cap = c;
    }
    t->ids[t->n++] = id;
    return 0;
}

static int push_seq(fs_tokens *t, size_t *cap)
{
    if (t->nseq + 1 >= *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        size_t *p = realloc(t->start, sizeof *p * c);
        if (!p) return -1;
        t->start = p;
        *cap = c;
    }
    t->start[++t->nseq] = t->n;
    return 0;
}

static fs_status load_jsonl(fs_ctx *ctx, const char *path, FILE *f, fs_tokens *t)
{
    size_t cap = 0, scap = 0, lcap = 0;
    char *line = NULL;
    ssize_t len;
    long lineno = 0;
    fs_status rc = FS_OK;
    if (push_seq(t, &scap) != 0) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    t->nseq = 0;
    t->start[0] = 0;
    while (rc == FS_OK && (len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r' || line[k] == '\n')) k++;
        if (k == (size_t)len) continue;                          /* blank line */
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &je);
        json_t *arr = j && json_is_object(j) ? json_object_get(j, "input_ids") : j;
        if (!arr || !json_is_array(arr)) {
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: line %ld: not an array of token ids nor {\"input_ids\": [...]}%s%s",
                            path, lineno, j ? "" : ": ", j ? "" : je.text);
        }
        for (size_t i = 0; rc == FS_OK && i < json_array_size(arr); i++) {
            json_t *v = json_array_get(arr, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0xffffffffll)
                rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: line %ld: element %zu is not a token id", path, lineno, i);
            else if (push(t, &cap, (uint32_t)json_integer_value(v)) != 0)
                rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
        }
        json_decref(j);
        if (rc == FS_OK && push_seq(t, &scap) != 0) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    }
    free(line);
    if (rc == FS_OK && ferror(f)) rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: read error", path);
    return rc;
}

fs_status fs_tokens_load(fs_ctx *ctx, const char *path, fs_tokens *t)
{
    memset(t, 0, sizeof *t);
    int fd = -1;
    uint64_t size = 0;
    /* a named pipe or device is refused here (never waited on); the size comes
     * from fstat, so a file over the cap is refused before a byte is read */
    fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, &size);
    if (rc != FS_OK) return rc;
    if (size > FS_TOKENS_MAX_FILE) {
        close(fd);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %llu bytes, more than a token file may hold (%llu, 16 GB)", path,
                          (unsigned long long)size, (unsigned long long)FS_TOKENS_MAX_FILE);
    }
    size_t plen = strlen(path);
    if (plen >= 4 && !strcmp(path + plen - 4, ".u32")) {
        if (size % 4 != 0)
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %llu bytes is not a whole number of uint32 ids (trailing %d bytes at offset %llu)",
                            path, (unsigned long long)size, (int)(size % 4), (unsigned long long)(size - size % 4));
        t->n = (size_t)(size / 4);
        if (rc == FS_OK) {
            t->ids = malloc(t->n ? t->n * 4 : 4);
            t->start = malloc(2 * sizeof(size_t));
            if (!t->ids || !t->start) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %llu bytes of token ids", path, (unsigned long long)size);
        }
        if (rc == FS_OK) rc = fs_pread_full(ctx, fd, path, t->ids, size, 0);
        if (rc == FS_OK) {
            for (size_t i = 0; i < t->n; i++) {            /* little-endian on any host */
                uint8_t *b = (uint8_t *)&t->ids[i];
                t->ids[i] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            }
            t->nseq = 1;
            t->start[0] = 0;
            t->start[1] = t->n;
        }
        close(fd);
    } else {
        FILE *f = fdopen(fd, "rb");
        if (!f) {
            rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %s", path, strerror(errno));
            close(fd);
        } else {
            rc = load_jsonl(ctx, path, f, t);
            fclose(f);
        }
    }
    if (rc == FS_OK && t->n == 0) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no tokens", path);
    if (rc != FS_OK) fs_tokens_free(t);
    return rc;
}

fs_status fs_tokens_check_vocab(fs_ctx *ctx, const fs_tokens *t, const char *path, int64_t vocab)
{
    for (size_t s = 0; s < t->nseq; s++)
        for (size_t i = t->start[s]; i < t->start[s + 1]; i++)
            if ((int64_t)t->ids[i] >= vocab) {
                if (t->nseq == 1 && strlen(path) >= 4 && !strcmp(path + strlen(path) - 4, ".u32"))
                    return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: token id %u at byte offset %zu is outside the vocabulary (%lld)",
                                      path, t->ids[i], i * 4, (long long)vocab);
                return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: sequence %zu (line of the %zu-th sequence), position %zu: token id %u is outside the vocabulary (%lld)",
                                  path, s + 1, s + 1, i - t->start[s], t->ids[i], (long long)vocab);
            }
    return FS_OK;
}

size_t fs_tokens_windows(const fs_tokens *t, size_t L, size_t *starts)
{
    size_t k = 0;
    if (L == 0) return 0;
    for (size_t s = 0; s < t->nseq; s++)
        for (size_t p = t->start[s]; p + L <= t->start[s + 1]; p += L) {
            if (starts) starts[k] = p;
            k++;
        }
    return k;
}
