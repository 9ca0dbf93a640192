/* sealed.c: JSON files the product writes and later trusts (the journal,
 * the saved flags), sealed with their own checksum.
 *
 * Format: one JSON object whose last key is "checksum": 16 hex digits, the
 * XXH3-64 of the file's text as it would be without that key, i.e. of the
 * bytes before ',"checksum":"' followed by '}'.  The file ends right after
 * the closing '}' of the object.  A file that does not end that way, or whose
 * digits do not match, is damaged: nothing in it is trusted. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "src/pipeline/journal.h"

#define SEAL_KEY ",\"checksum\":\""
#define SEAL_TAIL_BYTES (sizeof SEAL_KEY - 1 + 16 + 2)   /* the key, 16 digits, "} */
#define SEALED_MAX (1u << 30)

fs_status fs_sealed_write(fs_ctx *ctx, const char *path, const void *root, const char *keep)
{
    json_t *copy = json_copy((json_t *)root);
    if (!copy) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    json_object_del(copy, "checksum");
    char *text = json_dumps(copy, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(copy);
    size_t n = text ? strlen(text) : 0;
    if (!text || n < 2 || text[n - 1] != '}') { free(text); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path); }
    char hx[17];
    fs_hex64(hx, XXH3_64bits(text, n));
    /* "{...}" -> "{...,"checksum":"<hex>"}" ("{}" never happens: the files have keys) */
    char *out = malloc(n + SEAL_TAIL_BYTES + 1);
    if (!out) { free(text); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path); }
    memcpy(out, text, n - 1);
    size_t k = (size_t)sprintf(out + n - 1, "%s%s\"}", SEAL_KEY, hx) + n - 1;
    free(text);
    fs_status rc = fs_write_atomic_keep(ctx, path, out, k, keep);
    free(out);
    return rc;
}

fs_status fs_sealed_read(fs_ctx *ctx, const char *path, void **root)
{
    *root = NULL;
    int fd = -1;
    uint64_t size = 0;
    fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, &size);
    if (rc != FS_OK) return rc;
    if (size > SEALED_MAX) {
        close(fd);
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: %llu bytes, more than any file this forge-stream writes", path,
                          (unsigned long long)size);
    }
    char *text = malloc((size_t)size + 1);
    if (!text) { close(fd); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path); }
    rc = fs_pread_full(ctx, fd, path, text, size, 0);
    close(fd);
    if (rc != FS_OK) { free(text); return rc; }
    text[size] = '\0';
    size_t n = (size_t)size;
    const char *key = n >= SEAL_TAIL_BYTES + 2 ? text + n - SEAL_TAIL_BYTES : NULL;
    uint64_t want = 0;
    char hx[17] = "";
    if (key) memcpy(hx, key + sizeof SEAL_KEY - 1, 16);
    if (!key || memcmp(key, SEAL_KEY, sizeof SEAL_KEY - 1) != 0 || strcmp(text + n - 2, "\"}") != 0 ||
        fs_unhex64(hx, &want) != 0) {
        free(text);
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: damaged (it does not end with its checksum: cut short, edited "
                          "or not written by this forge-stream)", path);
    }
    /* the text it was sealed from: everything before the key, then '}' */
    size_t body = (size_t)(key - text);
    text[body] = '}';
    uint64_t got = XXH3_64bits(text, body + 1);
    if (got != want) {
        free(text);
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: damaged (its checksum %016llx does not match its text, "
                          "%016llx)", path, (unsigned long long)want, (unsigned long long)got);
    }
    json_error_t je;
    json_t *j = json_loadb(text, body + 1, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: line %d: %s", path, je.line, j ? "not an object" : je.text);
    }
    *root = j;
    return FS_OK;
}
