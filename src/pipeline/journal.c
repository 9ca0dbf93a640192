/* journal.c: reading, checking and writing the run journal, and the
 * fingerprints it keeps of the model and calibration files (journal.h). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "src/pipeline/journal.h"

#define TAIL_BYTES (64u << 10)
#define HEAD_MAX (100u << 20)       /* a safetensors header, as ckpt.c caps it */
#define JOURNAL_MAX (1u << 30)

/* XXH3-64 of bytes [off, off + n) of fd, all of which must be there. */
static fs_status range_xxh3(fs_ctx *ctx, int fd, const char *path, uint64_t off, uint64_t n, uint64_t *sum)
{
    uint64_t got = 0;
    fs_status rc = fs_fd_xxh3(ctx, fd, path, off, n, sum, &got);
    if (rc == FS_OK && got != n)
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: read at %llu: unexpected end of file", path, (unsigned long long)(off + got));
    return rc;
}

static fs_status fingerprint_file(fs_ctx *ctx, const char *dir, const char *name, int is_shard, json_t *files)
{
    char path[4400], h1[17], h2[17];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT && !is_shard ? FS_OK : fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    fs_status rc = FS_OK;
    uint64_t head = 0, tail = 0, size = 0, hn = 0;
    if (fstat(fd, &sb) != 0) rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", path, strerror(errno));
    else size = (uint64_t)sb.st_size;
    if (rc == FS_OK && is_shard && size >= 8) {       /* the 8-byte length and the JSON header */
        uint8_t len[8];
        if (pread(fd, len, 8, 0) != 8) rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: cannot read its header", path);
        for (int i = 7; rc == FS_OK && i >= 0; i--) hn = hn << 8 | len[i];
        hn = hn > HEAD_MAX || hn > size - 8 ? size : hn + 8;
    } else {
        hn = size < HEAD_MAX ? size : HEAD_MAX;
    }
    if (rc == FS_OK) rc = range_xxh3(ctx, fd, path, 0, hn, &head);
    if (rc == FS_OK) rc = range_xxh3(ctx, fd, path, size > TAIL_BYTES ? size - TAIL_BYTES : 0,
                                     size > TAIL_BYTES ? TAIL_BYTES : size, &tail);
    close(fd);
    if (rc != FS_OK) return rc;
    fs_hex64(h1, head);
    fs_hex64(h2, tail);
    if (json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s}", "name", name, "size", (json_int_t)size,
                                               "head_xxh3", h1, "tail_xxh3", h2)))
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "fingerprint");
    return FS_OK;
}

fs_status fs_fingerprint_model(fs_ctx *ctx, const fs_ckpt *c, void **files)
{
    json_t *a = json_array();
    if (!a) return fs_ctx_err(ctx, FS_ERR_NOMEM, "fingerprint");
    fs_status rc = fingerprint_file(ctx, c->dir, "config.json", 0, a);
    if (rc == FS_OK) rc = fingerprint_file(ctx, c->dir, "model.safetensors.index.json", 0, a);
    for (int i = 0; rc == FS_OK && i < c->nshards; i++) rc = fingerprint_file(ctx, c->dir, c->shard_names[i], 1, a);
    if (rc != FS_OK) { json_decref(a); return rc; }
    *files = a;
    return FS_OK;
}

static json_t *find_file(const json_t *files, const char *name)
{
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f) {
        const char *n = json_string_value(json_object_get(f, "name"));
        if (n && !strcmp(n, name)) return f;
    }
    return NULL;
}

fs_status fs_fingerprint_check(fs_ctx *ctx, const char *dir, const void *recorded, const void *now)
{
    const json_t *rec = recorded, *cur = now;
    size_t i;
    json_t *f;
    static const char hint[] = "the output would mix two models: start the run again without --resume";
    json_array_foreach(rec, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *g = name ? find_file(cur, name) : NULL;
        if (!name) return fs_ctx_err(ctx, FS_ERR_FORMAT, "journal: model file %zu has no name", i);
        if (!g) return fs_ctx_err(ctx, FS_ERR_USAGE, "model file %s/%s is gone since the run started; %s", dir, name, hint);
        if (!json_equal(json_object_get(f, "size"), json_object_get(g, "size")))
            return fs_ctx_err(ctx, FS_ERR_USAGE, "model file %s/%s changed since the run started (%lld bytes then, "
                              "%lld now); %s", dir, name, (long long)json_integer_value(json_object_get(f, "size")),
                              (long long)json_integer_value(json_object_get(g, "size")), hint);
        if (!json_equal(json_object_get(f, "head_xxh3"), json_object_get(g, "head_xxh3")) ||
            !json_equal(json_object_get(f, "tail_xxh3"), json_object_get(g, "tail_xxh3")))
            return fs_ctx_err(ctx, FS_ERR_USAGE, "model file %s/%s changed since the run started (its %s checksum "
                              "differs); %s", dir, name,
                              json_equal(json_object_get(f, "head_xxh3"), json_object_get(g, "head_xxh3")) ? "tail" : "header",
                              hint);
    }
    json_array_foreach(cur, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (name && !find_file(rec, name))
            return fs_ctx_err(ctx, FS_ERR_USAGE, "model file %s/%s is new since the run started; %s", dir, name, hint);
    }
    return FS_OK;
}

fs_status fs_journal_write(fs_ctx *ctx, const char *work, const void *root)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", work, FS_JOURNAL_NAME);
    char *text = json_dumps((const json_t *)root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    fs_status rc = fs_write_atomic(ctx, path, text, strlen(text));
    free(text);
    return rc;
}

static fs_status bad(fs_ctx *ctx, const char *path, const char *key, const char *what)
{
    return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: '%s' %s (not a journal this version can resume from)", path, key, what);
}

static int is_hex16(const json_t *v)
{
    uint64_t x;
    return fs_unhex64(json_string_value(v), &x) == 0;
}

fs_status fs_journal_read(fs_ctx *ctx, const char *work, void **root)
{
    char path[4200];
    *root = NULL;
    snprintf(path, sizeof path, "%s/%s", work, FS_JOURNAL_NAME);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return fs_ctx_err(ctx, errno == ENOENT ? FS_ERR_USAGE : FS_ERR_IO, "%s: %s%s", path, strerror(errno),
                          errno == ENOENT ? " (no quantize run was started with this --work folder)" : "");
    if (!S_ISREG(sb.st_mode) || sb.st_size > JOURNAL_MAX)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: not a regular file under 1 GiB", path);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    fs_status rc = FS_OK;
    const char *fmt = json_string_value(json_object_get(j, "format"));
    json_t *v = json_object_get(j, "version"), *model = json_object_get(j, "model"), *calib = json_object_get(j, "calib");
    json_t *act = json_object_get(j, "act"), *argv = json_object_get(j, "argv");
    size_t i;
    json_t *e;
    if (!json_is_object(j)) rc = bad(ctx, path, "(top)", "is not an object");
    else if (!fmt || strcmp(fmt, FS_JOURNAL_FORMAT)) rc = bad(ctx, path, "format", "is not \"" FS_JOURNAL_FORMAT "\"");
    else if (!json_is_integer(v)) rc = bad(ctx, path, "version", "is not an integer");
    else if (json_integer_value(v) != FS_JOURNAL_VERSION)
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: journal version %lld; this forge-stream reads version %d", path,
                        (long long)json_integer_value(v), FS_JOURNAL_VERSION);
    else if (!json_is_array(argv)) rc = bad(ctx, path, "argv", "is not an array");
    else if (!json_is_object(json_object_get(j, "config"))) rc = bad(ctx, path, "config", "is not an object");
    else if (!json_is_string(json_object_get(j, "backend"))) rc = bad(ctx, path, "backend", "is not a string");
    else if (!json_is_object(model) || !json_is_string(json_object_get(model, "dir")) ||
             !json_is_array(json_object_get(model, "files")))
        rc = bad(ctx, path, "model", "is not {dir, files}");
    else if (!json_is_null(calib) &&
             (!json_is_object(calib) || !json_is_string(json_object_get(calib, "path")) ||
              !json_is_integer(json_object_get(calib, "size")) || !is_hex16(json_object_get(calib, "xxh3")) ||
              !is_hex16(json_object_get(calib, "ids_xxh3"))))
        rc = bad(ctx, path, "calib", "is not null or {path, size, xxh3, ids_xxh3}");
    else if (!json_is_integer(json_object_get(j, "layers_done")) || json_integer_value(json_object_get(j, "layers_done")) < 0 ||
             json_integer_value(json_object_get(j, "layers_done")) > 100000)
        rc = bad(ctx, path, "layers_done", "is not a layer count");
    else if (!json_is_boolean(json_object_get(j, "sealed"))) rc = bad(ctx, path, "sealed", "is not true or false");
    else if (!json_is_null(act) && !(json_is_object(act) && json_is_string(json_object_get(act, "file")) &&
                                     json_is_integer(json_object_get(act, "rows")) &&
                                     json_is_integer(json_object_get(act, "row_bytes")) &&
                                     is_hex16(json_object_get(act, "checksum"))))
        rc = bad(ctx, path, "act", "is not null or {file, rows, row_bytes, checksum}");
    else if (json_is_object(act) && (strchr(json_string_value(json_object_get(act, "file")), '/') ||
                                     json_string_value(json_object_get(act, "file"))[0] == '.'))
        rc = bad(ctx, path, "act.file", "is not a plain file name");
    else if (!json_is_object(json_object_get(j, "output"))) rc = bad(ctx, path, "output", "is not an object");
    else if (!json_is_array(json_object_get(j, "moe"))) rc = bad(ctx, path, "moe", "is not an array");
    else if (!json_is_array(json_object_get(j, "layers"))) rc = bad(ctx, path, "layers", "is not an array");
    json_t *prev = json_object_get(j, "prev"), *pa = json_object_get(prev, "act");
    if (rc == FS_OK && prev &&
        !(json_is_object(prev) && json_is_integer(json_object_get(prev, "layers_done")) &&
          json_is_object(json_object_get(prev, "output")) && json_is_array(json_object_get(prev, "moe")) &&
          (json_is_null(pa) || (json_is_object(pa) && json_is_string(json_object_get(pa, "file")) &&
                                !strchr(json_string_value(json_object_get(pa, "file")), '/') &&
                                json_string_value(json_object_get(pa, "file"))[0] != '.' &&
                                json_is_integer(json_object_get(pa, "rows")) &&
                                json_is_integer(json_object_get(pa, "row_bytes")) &&
                                is_hex16(json_object_get(pa, "checksum"))))))
        rc = bad(ctx, path, "prev", "is not {layers_done, act, output, moe}");
    json_array_foreach(argv, i, e)
        if (rc == FS_OK && !json_is_string(e)) rc = bad(ctx, path, "argv", "holds a non-string");
    if (rc != FS_OK) { json_decref(j); return rc; }
    *root = j;
    return FS_OK;
}
