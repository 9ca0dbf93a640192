/* documents.c: a text file's documents tokenized into one sequence
 * (tokenizer.h, spec §16.3): BOS before each when the tokenizer config says
 * so, EOS between two. */
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/tokenizer/tok-impl.h"

static fs_status add_doc(fs_ctx *ctx, fs_tok *t, const char *s, size_t n, size_t *ndocs, fs_ids *ids)
{
    if (*ndocs > 0 && t->eos >= 0) {
        if (ids->n == ids->cap && (ids->cap = ids->cap ? 2 * ids->cap : 1024, !(ids->v = realloc(ids->v, ids->cap * 4))))
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
        ids->v[ids->n++] = (uint32_t)t->eos;
    }
    if (t->add_bos && t->bos >= 0) {
        if (ids->n == ids->cap && (ids->cap = ids->cap ? 2 * ids->cap : 1024, !(ids->v = realloc(ids->v, ids->cap * 4))))
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
        ids->v[ids->n++] = (uint32_t)t->bos;
    }
    (*ndocs)++;
    return fs_tok_encode(ctx, t, s, n, ids);
}

static fs_status jsonl(fs_ctx *ctx, fs_tok *t, const char *path, const char *field, const char *buf, size_t size,
                       size_t *ndocs, fs_ids *ids)
{
    size_t at = 0;
    long line = 0;
    fs_status rc = FS_OK;
    while (rc == FS_OK && at < size) {
        const char *nl = memchr(buf + at, '\n', size - at);
        size_t end = nl ? (size_t)(nl - buf) : size;
        line++;
        size_t k = at;
        while (k < end && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r')) k++;
        if (k < end) {
            json_error_t je;
            json_t *j = json_loadb(buf + at, end - at, JSON_ALLOW_NUL, &je);
            const json_t *v = json_is_object(j) ? json_object_get(j, field) : NULL;
            if (!j) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: line %ld: not JSON: %s", path, line, je.text);
            else if (!json_is_object(j)) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: line %ld: not a JSON object", path, line);
            else if (!json_is_string(v))
                rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: line %ld: field \"%s\" is %s", path, line, field,
                                v ? "not a string" : "missing");
            else rc = add_doc(ctx, t, json_string_value(v), json_string_length(v), ndocs, ids);
            json_decref(j);
        }
        at = end + 1;
    }
    return rc;
}

fs_status fs_tok_documents(fs_ctx *ctx, fs_tok *t, const char *path, const char *jsonl_field, fs_tokens *out)
{
    memset(out, 0, sizeof *out);
    int fd = -1;
    uint64_t size = 0;
    fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, &size);
    if (rc != FS_OK) return rc;
    if (size > FS_TOKENS_MAX_FILE) {
        close(fd);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %llu bytes, more than a text file may hold (%llu, 16 GB)", path,
                          (unsigned long long)size, (unsigned long long)FS_TOKENS_MAX_FILE);
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) { close(fd); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %llu bytes", path, (unsigned long long)size); }
    rc = fs_pread_full(ctx, fd, path, buf, size, 0);
    close(fd);
    fs_ids ids = {0};
    size_t ndocs = 0;
    if (rc == FS_OK && jsonl_field) rc = jsonl(ctx, t, path, jsonl_field, buf, size, &ndocs, &ids);
    else if (rc == FS_OK) rc = add_doc(ctx, t, buf, size, &ndocs, &ids);
    free(buf);
    if (rc == FS_OK && ids.n == 0) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no tokens (%zu documents)", path, ndocs);
    if (rc == FS_OK && !(out->start = malloc(2 * sizeof *out->start))) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    if (rc != FS_OK) { fs_ids_free(&ids); free(out->start); out->start = NULL; return rc; }
    out->ids = ids.v;
    out->n = ids.n;
    out->nseq = 1;
    out->start[0] = 0;
    out->start[1] = ids.n;
    return FS_OK;
}
