/* fingerprint.c: what the journal keeps of the model files, to see on
 * --resume that they are the ones the run started with (journal.h). */
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
    int fd = -1;
    if (access(path, F_OK) != 0 && errno == ENOENT && !is_shard) return FS_OK;
    fs_status orc = fs_open_regular(ctx, path, O_RDONLY, &fd, NULL);
    if (orc != FS_OK) return orc;
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
    /* identity and times: a file written in place (its middle included) gets a
     * new mtime and ctime; one copied or moved to another disk a new inode */
    json_t *id = json_pack("{s:I, s:I, s:I, s:I}", "dev", (json_int_t)sb.st_dev, "ino", (json_int_t)sb.st_ino,
                           "mtime_ns", (json_int_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec,
                           "ctime_ns", (json_int_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec);
    if (!id || json_array_append_new(files, json_pack("{s:s, s:I, s:s, s:s, s:o}", "name", name, "size",
                                                      (json_int_t)size, "head_xxh3", h1, "tail_xxh3", h2, "id", id)))
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

fs_status fs_fingerprint_check(fs_ctx *ctx, const char *dir, const void *recorded, const void *now, char *touched,
                               size_t touched_n)
{
    const json_t *rec = recorded, *cur = now;
    size_t i;
    json_t *f;
    static const char hint[] = "the output would mix two models: start the run again without --resume";
    touched[0] = '\0';
    json_array_foreach(rec, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *g = name ? find_file(cur, name) : NULL;
        if (!name) return fs_ctx_err(ctx, FS_ERR_FORMAT, "journal: model file %zu has no name", i);
        if (!g) return fs_ctx_err(ctx, FS_ERR_USAGE, "model file %s/%s is gone since the run started; %s", dir, name, hint);
        json_t *a = json_object_get(f, "id"), *b = json_object_get(g, "id");
        if (touched[0]) continue;
        if (!json_equal(json_object_get(f, "size"), json_object_get(g, "size")))
            snprintf(touched, touched_n, "%s/%s changed since the run started (%lld bytes then, %lld now)", dir, name,
                     (long long)json_integer_value(json_object_get(f, "size")),
                     (long long)json_integer_value(json_object_get(g, "size")));
        else if (!json_equal(json_object_get(f, "head_xxh3"), json_object_get(g, "head_xxh3")) ||
                 !json_equal(json_object_get(f, "tail_xxh3"), json_object_get(g, "tail_xxh3")))
            snprintf(touched, touched_n, "%s/%s changed since the run started (its %s checksum differs)", dir, name,
                     json_equal(json_object_get(f, "head_xxh3"), json_object_get(g, "head_xxh3")) ? "tail" : "header");
        else if (!json_equal(a, b))
            snprintf(touched, touched_n, "%s/%s %s", dir, name,
                     !json_equal(json_object_get(a, "ino"), json_object_get(b, "ino")) ||
                             !json_equal(json_object_get(a, "dev"), json_object_get(b, "dev"))
                         ? "is another file now (copied or moved to another disk?)"
                     : !json_equal(json_object_get(a, "mtime_ns"), json_object_get(b, "mtime_ns"))
                         ? "was written since the run started (its modification time differs)"
                         : "was changed since the run started (its status-change time differs)");
    }
    json_array_foreach(cur, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (name && !find_file(rec, name))
            return fs_ctx_err(ctx, FS_ERR_USAGE, "model file %s/%s is new since the run started; %s", dir, name, hint);
    }
    return FS_OK;
}

/* ---- what the run read ----------------------------------------------------- */

/* Adds tensor `name` (when the checkpoint holds it) to st: its name and the
 * XXH3-64 of its bytes, from the read log or, from_disk (or never read),
 * from its shard. */
static fs_status add_tensor(fs_ctx *ctx, const fs_ckpt *c, const char *name, int from_disk, XXH3_state_t *st,
                            uint64_t *bytes)
{
    const fs_ckpt_entry *e = fs_ckpt_find(c, name);
    if (!e) return FS_OK;
    const size_t i = (size_t)(e - c->entries);
    uint64_t h = 0, got = 0;
    if (!from_disk && c->read_xxh && __atomic_load_n(&c->read_seen[i], __ATOMIC_ACQUIRE)) {
        h = c->read_xxh[i];
    } else {
        const fs_st_file *sf = c->shards[e->shard];
        fs_status rc = fs_fd_xxh3(ctx, sf->fd, sf->path, e->t->offset, e->t->nbytes, &h, &got);
        if (rc == FS_OK && got != e->t->nbytes)
            rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s: tensor '%s' is cut short", sf->path, name);
        if (rc != FS_OK) return rc;
        *bytes += e->t->nbytes;
    }
    uint8_t le[8];
    for (int k = 0; k < 8; k++) le[k] = (uint8_t)(h >> (8 * k));
    XXH3_64bits_update(st, name, strlen(name) + 1);
    XXH3_64bits_update(st, le, 8);
    return FS_OK;
}

fs_status fs_read_xxh3(fs_ctx *ctx, const fs_ckpt *c, const fs_model *m, int l, int from_disk, uint64_t *sum,
                       uint64_t *disk_bytes)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) return fs_ctx_err(ctx, FS_ERR_NOMEM, "checksum");
    XXH3_64bits_reset(st);
    char name[1200];
    fs_status rc = FS_OK;
    uint64_t bytes = 0;
    if (l < 0) {                                   /* outside the layers */
        for (int i = 0; rc == FS_OK && i < m->nglobal; i++) rc = add_tensor(ctx, c, m->global[i].name, from_disk, st, &bytes);
    } else if (m->layers[l].mtp) {                 /* copied whole: every tensor of the layer */
        char pre[64];
        snprintf(pre, sizeof pre, "model.layers.%d.", l);
        for (size_t k = 0; rc == FS_OK && k < c->ntensors; k++)
            if (!strncmp(c->entries[k].t->name, pre, strlen(pre)))
                rc = add_tensor(ctx, c, c->entries[k].t->name, from_disk, st, &bytes);
    } else {                                       /* the description's tensors, in its order */
        const fs_mlayer *L = &m->layers[l];
        for (int i = 0; rc == FS_OK && i < L->nlin; i++) {
            snprintf(name, sizeof name, "%s.weight", L->lin[i].name);
            rc = add_tensor(ctx, c, name, from_disk, st, &bytes);
            snprintf(name, sizeof name, "%s.weight_scale_inv", L->lin[i].name);
            if (rc == FS_OK) rc = add_tensor(ctx, c, name, from_disk, st, &bytes);
            snprintf(name, sizeof name, "%s.bias", L->lin[i].name);
            if (rc == FS_OK && L->lin[i].bias) rc = add_tensor(ctx, c, name, from_disk, st, &bytes);
        }
        for (int i = 0; rc == FS_OK && i < L->nother; i++) rc = add_tensor(ctx, c, L->other[i].name, from_disk, st, &bytes);
    }
    *sum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (disk_bytes) *disk_bytes += bytes;
    return rc;
}
