/* journal.c: reading, checking and writing the run journal (journal.h):
 * sealed with its checksum (sealed.c), the previous commit's journal kept
 * beside it as journal.prev.json, every key checked on reading. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/pipeline/journal.h"

fs_status fs_journal_write(fs_ctx *ctx, const char *work, const void *root)
{
    char path[4200], keep[4200];
    snprintf(path, sizeof path, "%s/%s", work, FS_JOURNAL_NAME);
    snprintf(keep, sizeof keep, "%s/%s", work, FS_JOURNAL_PREV);
    return fs_sealed_write(ctx, path, root, keep);
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

/* Every key the journal must hold, with its type (the journal is outside
 * data once written: a resume trusts nothing unchecked). */
static fs_status check_keys(fs_ctx *ctx, const char *path, json_t *j)
{
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
    else if (json_object_get(j, "device") && !json_is_string(json_object_get(j, "device")))
        rc = bad(ctx, path, "device", "is not a string");
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
    return rc;
}

/* A journal written by another version, before journals were sealed: say so
 * rather than "damaged". */
static fs_status other_version(fs_ctx *ctx, const char *path)
{
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    const char *fmt = json_string_value(json_object_get(j, "format"));
    json_t *v = json_object_get(j, "version");
    fs_status rc = FS_OK;
    /* (a sealed journal whose version digit was damaged has its checksum key: damaged, not another version) */
    if (fmt && !strcmp(fmt, FS_JOURNAL_FORMAT) && json_is_integer(v) && json_integer_value(v) != FS_JOURNAL_VERSION &&
        !json_object_get(j, "checksum"))
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: journal version %lld; this forge-stream reads version %d: finish "
                        "the run with the forge-stream that started it", path, (long long)json_integer_value(v),
                        FS_JOURNAL_VERSION);
    json_decref(j);
    return rc;
}

/* One journal file: its seal, its version, every key. */
static fs_status read_one(fs_ctx *ctx, const char *path, json_t **out)
{
    json_t *j = NULL;
    fs_status rc = fs_sealed_read(ctx, path, (void **)&j);
    if (rc == FS_ERR_CORRUPT) {
        char msg[sizeof ctx->errmsg];
        memcpy(msg, ctx->errmsg, sizeof msg);
        fs_ctx_clear(ctx);
        if (other_version(ctx, path) == FS_OK) rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s", msg);
        else rc = FS_ERR_FORMAT;
    }
    if (rc == FS_OK) rc = check_keys(ctx, path, j);
    if (rc != FS_OK) { json_decref(j); return rc; }
    *out = j;
    return FS_OK;
}

fs_status fs_journal_read(fs_ctx *ctx, const char *work, void **root, int *from_prev)
{
    char path[4200], prev[4200], dam[4200];
    *root = NULL;
    *from_prev = 0;
    snprintf(path, sizeof path, "%s/%s", work, FS_JOURNAL_NAME);
    snprintf(prev, sizeof prev, "%s/%s", work, FS_JOURNAL_PREV);
    if (access(path, F_OK) != 0)
        return fs_ctx_err(ctx, errno == ENOENT ? FS_ERR_USAGE : FS_ERR_IO, "%s: %s%s", path, strerror(errno),
                          errno == ENOENT ? " (no quantize run was started with this --work folder)" : "");
    json_t *j = NULL;
    fs_status rc = read_one(ctx, path, &j);
    if (rc != FS_ERR_CORRUPT) {
        *root = j;
        return rc;
    }
    /* damaged: the journal of the commit before, kept whole beside it */
    char msg[sizeof ctx->errmsg];
    memcpy(msg, ctx->errmsg, sizeof msg);
    fs_ctx_clear(ctx);
    if (access(prev, F_OK) != 0 || (rc = read_one(ctx, prev, &j)) != FS_OK) {
        char msg2[sizeof ctx->errmsg];
        snprintf(msg2, sizeof msg2, "%s", ctx->err ? ctx->errmsg : "no journal.prev.json");
        fs_ctx_clear(ctx);
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s; the journal before it: %s", msg, msg2);
    }
    fprintf(stderr, "forge-stream: warning: %s: going back to the journal of the commit before it (%s)\n", msg,
            FS_JOURNAL_PREV);
    /* the damaged one is set aside, so the next commit keeps the good one as prev */
    snprintf(dam, sizeof dam, "%s/%s", work, FS_JOURNAL_DAMAGED);
    if (rename(path, dam) != 0) {
        json_decref(j);
        return fs_ctx_err(ctx, FS_ERR_IO, "rename %s -> %s: %s", path, dam, strerror(errno));
    }
    *root = j;
    *from_prev = 1;
    return FS_OK;
}
