/* outstate.c: the output writer's state as the run journal records it, and
 * its restoration on --resume (see outckpt.h).
 *
 * The state at a layer commit: the sealed shards (.shard-N.partial, each
 * with its size and XXH3-64 of the whole file), the staging file of the
 * shard being gathered (.shard-N.data: its committed length and each pending
 * tensor's name, dtype, shape, extent and XXH3-64), and every tensor already
 * sealed with its shard.  Restoring it verifies every byte the state names
 * and cuts the staging file back to its committed length, so the writer
 * continues exactly as the uninterrupted run did. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/formats/outckpt-impl.h"

static fs_status file_sum(fs_ctx *ctx, const char *path, uint64_t *size, uint64_t *sum)
{
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: missing (the journal recorded it as written)", path);
    return fs_file_xxh3(ctx, path, size, sum);
}

void fs_out_journal(fs_outckpt *o)
{
    o->journaled = 1;
    if (o->kept_lo < 1) o->kept_lo = o->nshards + 1;
}

fs_status fs_out_state(fs_ctx *ctx, fs_outckpt *o, void **state)
{
    *state = NULL;
    char path[4200], hx[17];
    if (o->data_fd >= 0 && fsync(o->data_fd) != 0) {
        fs_out_staging_path(o, o->nshards + 1, path, sizeof path);
        return fs_ctx_err(ctx, FS_ERR_IO, "%s: fsync: %s", path, strerror(errno));
    }
    if (o->nsum < o->nshards) {                       /* shards sealed since the last state */
        uint64_t *sz = realloc(o->shard_size, sizeof *sz * (size_t)o->nshards);
        if (sz) o->shard_size = sz;
        uint64_t *sx = realloc(o->shard_xxh, sizeof *sx * (size_t)o->nshards);
        if (sx) o->shard_xxh = sx;
        if (!sz || !sx) return fs_ctx_err(ctx, FS_ERR_NOMEM, "shard checksums");
        for (; o->nsum < o->nshards; o->nsum++) {
            fs_out_partial_path(o, o->nsum + 1, path, sizeof path);
            fs_status rc = file_sum(ctx, path, &o->shard_size[o->nsum], &o->shard_xxh[o->nsum]);
            if (rc != FS_OK) return rc;
        }
    }
    json_t *st = json_object(), *shards = json_array(), *pj = json_array(), *done = json_array();
    int bad = !st || !shards || !pj || !done;
    for (int s = 0; !bad && s < o->nshards; s++) {
        fs_hex64(hx, o->shard_xxh[s]);
        bad |= json_array_append_new(shards, json_pack("{s:I, s:s}", "size", (json_int_t)o->shard_size[s], "xxh3", hx));
    }
    for (int i = 0; !bad && i < o->np; i++) {
        const pend *t = &o->p[i];
        json_t *shape = json_array();
        for (int d = 0; shape && d < t->ndim; d++) bad |= json_array_append_new(shape, json_integer(t->shape[d]));
        fs_hex64(hx, t->xxh);
        bad |= !shape || json_array_append_new(pj, json_pack("[s, s, o, I, I, s, s?]", t->name, fs_dtype_name(t->dt), shape,
                                                               (json_int_t)t->off, (json_int_t)t->nbytes, hx, t->in_features));
    }
    for (size_t i = 0; !bad && i < o->nt; i++)
        bad |= json_array_append_new(done, json_pack("[s, i]", o->tname[i], o->tshard[i]));
    if (!bad)
        bad = json_object_set_new(st, "nshards", json_integer(o->nshards)) ||
              json_object_set(st, "shards", shards) ||
              json_object_set_new(st, "total_bytes", json_integer((json_int_t)o->total_bytes)) ||
              json_object_set_new(st, "staging", json_pack("{s:I, s:O}", "bytes", (json_int_t)o->cur_bytes, "tensors", pj)) ||
              json_object_set(st, "tensors", done);
    json_decref(shards);
    json_decref(pj);
    json_decref(done);
    if (bad) { json_decref(st); return fs_ctx_err(ctx, FS_ERR_NOMEM, "output state"); }
    *state = st;
    return FS_OK;
}

void fs_out_release(fs_outckpt *o, int keep)
{
    char path[4200];
    for (int s = o->kept_lo; s >= 1 && s <= o->nshards; s++) {
        if (s == keep) continue;
        fs_out_staging_path(o, s, path, sizeof path);
        unlink(path);
    }
    o->kept_lo = keep >= o->kept_lo && keep <= o->nshards ? keep : o->nshards + 1;
}

/* ---- resume ------------------------------------------------------------- */

static fs_status bad_state(fs_ctx *ctx, const char *what)
{
    return fs_ctx_err(ctx, FS_ERR_FORMAT, "journal: output state: %s", what);
}

static fs_status get_u64(fs_ctx *ctx, json_t *v, const char *what, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return bad_state(ctx, what);
    *out = (uint64_t)json_integer_value(v);
    return FS_OK;
}

/* Sealed shard s (1-based) is at its partial name; a run killed while
 * finishing may have renamed it to its final one: put it back. */
static fs_status find_sealed(fs_ctx *ctx, fs_outckpt *o, int s, int final_n, char *path, size_t n)
{
    struct stat sb;
    fs_out_partial_path(o, s, path, n);
    if (stat(path, &sb) == 0) return FS_OK;
    if (final_n > 0) {
        char fin[4400];
        if (final_n == 1) snprintf(fin, sizeof fin, "%s/model.safetensors", o->dir);
        else snprintf(fin, sizeof fin, "%s/model-%05d-of-%05d.safetensors", o->dir, s, final_n);
        if (stat(fin, &sb) == 0) {
            if (rename(fin, path) != 0) return fs_ctx_err(ctx, FS_ERR_IO, "rename %s -> %s: %s", fin, path, strerror(errno));
            return FS_OK;
        }
    }
    return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: missing (the journal recorded it as written)", path);
}

/* Removes what the state does not name: uncommitted partials and staging
 * files (but keep_shard's), temporary files, final shards and the index of
 * an unfinished run. */
static void sweep(const fs_outckpt *o, int keep_shard)
{
    DIR *d = opendir(o->dir);
    struct dirent *e;
    char path[4400];
    while (d && (e = readdir(d))) {
        const char *n = e->d_name;
        int k = 0, keep = 0;
        char tail[32] = "";
        if (!fs_out_is_ckpt_file(n)) continue;
        if (sscanf(n, ".shard-%d.%31s", &k, tail) == 2) {
            keep = (!strcmp(tail, "partial") && k >= 1 && k <= o->nshards) ||
                   (!strcmp(tail, "data") && ((k == o->nshards + 1 && o->data_fd >= 0) || k == keep_shard));
        } else if (!strstr(n, ".tmp.") && (!strcmp(n, "config.json") || strncmp(n, "model", 5) != 0)) {
            keep = 1;                                   /* config and tokenizer: rewritten at the end */
        }
        if (keep) continue;
        snprintf(path, sizeof path, "%s/%s", o->dir, n);
        unlink(path);
    }
    if (d) closedir(d);
}

fs_status fs_out_resume(fs_ctx *ctx, const char *dir, uint64_t max_shard, fs_format fmt,
                        const fs_quant_opts *q, const void *state, int keep, fs_outckpt **out)
{
    *out = NULL;
    json_t *st = (json_t *)state;
    fs_outckpt *o = calloc(1, sizeof *o);
    if (!o || !(o->dir = strdup(dir))) { free(o); return fs_ctx_err(ctx, FS_ERR_NOMEM, "output writer"); }
    o->max_shard = max_shard ? max_shard : FS_DEFAULT_MAX_SHARD;
    o->data_fd = -1;
    o->fmt = fmt;
    o->q = *q;
    o->journaled = 1;
    fs_status rc = FS_OK;
    char path[4200], msg[160];
    uint64_t v = 0;
    json_t *shards = json_object_get(st, "shards"), *staging = json_object_get(st, "staging");
    json_t *pendj = json_object_get(staging, "tensors"), *done = json_object_get(st, "tensors");
    if (!json_is_object(st) || !json_is_array(shards) || !json_is_object(staging) || !json_is_array(pendj) ||
        !json_is_array(done)) { rc = bad_state(ctx, "missing shards, staging or tensors"); goto fail; }
    if ((rc = get_u64(ctx, json_object_get(st, "nshards"), "nshards", &v)) != FS_OK) goto fail;
    if (v != json_array_size(shards) || v > 99999) { rc = bad_state(ctx, "nshards does not match the shard list"); goto fail; }
    o->nshards = (int)v;
    if ((rc = get_u64(ctx, json_object_get(st, "total_bytes"), "total_bytes", &o->total_bytes)) != FS_OK) goto fail;
    if ((rc = get_u64(ctx, json_object_get(staging, "bytes"), "staging bytes", &o->cur_bytes)) != FS_OK) goto fail;
    /* pending tensors */
    size_t np = json_array_size(pendj);
    if (np > (1u << 24)) { rc = bad_state(ctx, "too many pending tensors"); goto fail; }
    o->p = calloc(np ? np : 1, sizeof *o->p);
    o->cap = (int)(np ? np : 1);
    if (!o->p) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "pending tensors"); goto fail; }
    for (size_t i = 0; i < np; i++) {
        json_t *t = json_array_get(pendj, i), *shape = json_array_get(t, 2), *inf = json_array_get(t, 6);
        pend *p = &o->p[i];
        const char *name = json_string_value(json_array_get(t, 0));
        p->dt = fs_dtype_from_name(json_string_value(json_array_get(t, 1)) ? json_string_value(json_array_get(t, 1)) : "");
        if (!json_is_array(t) || !name || !p->dt || !json_is_array(shape) || json_array_size(shape) > FS_ST_MAX_DIMS ||
            get_u64(ctx, json_array_get(t, 3), "offset", &p->off) || get_u64(ctx, json_array_get(t, 4), "bytes", &p->nbytes) ||
            fs_unhex64(json_string_value(json_array_get(t, 5)), &p->xxh) || (inf && !json_is_null(inf) && !json_is_string(inf))) {
            snprintf(msg, sizeof msg, "pending tensor %zu is malformed", i);
            rc = ctx->err ? ctx->err : bad_state(ctx, msg);
            goto fail;
        }
        p->ndim = (int)json_array_size(shape);
        for (int d = 0; d < p->ndim; d++) {
            json_t *x = json_array_get(shape, (size_t)d);
            if (!json_is_integer(x) || json_integer_value(x) < 0) { rc = bad_state(ctx, "bad shape"); goto fail; }
            p->shape[d] = json_integer_value(x);
        }
        p->name = strdup(name);
        p->in_features = json_is_string(inf) ? strdup(json_string_value(inf)) : NULL;
        o->np++;
        if (!p->name || (json_is_string(inf) && !p->in_features)) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "pending tensors"); goto fail; }
        if (p->off > o->cur_bytes || p->nbytes > o->cur_bytes - p->off) { rc = bad_state(ctx, "a tensor lies past the staging bytes"); goto fail; }
    }
    /* tensors already sealed */
    size_t nt = json_array_size(done);
    o->tname = calloc(nt ? nt : 1, sizeof *o->tname);
    o->tshard = calloc(nt ? nt : 1, sizeof *o->tshard);
    o->tcap = nt ? nt : 1;
    if (!o->tname || !o->tshard) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "tensor list"); goto fail; }
    for (size_t i = 0; i < nt; i++) {
        json_t *t = json_array_get(done, i);
        const char *name = json_string_value(json_array_get(t, 0));
        json_t *sh = json_array_get(t, 1);
        if (!name || !json_is_integer(sh) || json_integer_value(sh) < 1 || json_integer_value(sh) > o->nshards) {
            rc = bad_state(ctx, "a sealed tensor entry is malformed");
            goto fail;
        }
        if (!(o->tname[i] = strdup(name))) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "tensor list"); goto fail; }
        o->tshard[i] = (int)json_integer_value(sh);
        o->nt++;
    }
    /* the sealed shards: every byte checked */
    o->shard_size = calloc((size_t)(o->nshards ? o->nshards : 1), sizeof *o->shard_size);
    o->shard_xxh = calloc((size_t)(o->nshards ? o->nshards : 1), sizeof *o->shard_xxh);
    if (!o->shard_size || !o->shard_xxh) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "shard checksums"); goto fail; }
    for (int s = 0; s < o->nshards; s++) {
        json_t *e = json_array_get(shards, (size_t)s);
        if ((rc = get_u64(ctx, json_object_get(e, "size"), "shard size", &o->shard_size[s])) != FS_OK) goto fail;
        if (fs_unhex64(json_string_value(json_object_get(e, "xxh3")), &o->shard_xxh[s])) { rc = bad_state(ctx, "shard checksum"); goto fail; }
        uint64_t size = 0, sum = 0;
        if ((rc = find_sealed(ctx, o, s + 1, o->np == 0 ? o->nshards : 0, path, sizeof path)) != FS_OK) goto fail;
        if ((rc = file_sum(ctx, path, &size, &sum)) != FS_OK) goto fail;
        if (size != o->shard_size[s] || sum != o->shard_xxh[s]) {
            rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: %s does not match the journal (%llu bytes, xxh3 %016llx recorded; "
                            "%llu bytes, %016llx found)", path, size != o->shard_size[s] ? "size" : "checksum",
                            (unsigned long long)o->shard_size[s], (unsigned long long)o->shard_xxh[s],
                            (unsigned long long)size, (unsigned long long)sum);
            goto fail;
        }
    }
    o->nsum = o->nshards;
    o->kept_lo = keep >= 1 && keep <= o->nshards ? keep : o->nshards + 1;
    /* the staging file: each pending tensor checked, the rest cut off */
    if (o->cur_bytes > 0 || o->np > 0) {
        fs_out_staging_path(o, o->nshards + 1, path, sizeof path);
        o->data_fd = open(path, O_RDWR | O_CLOEXEC);
        struct stat sb;
        if (o->data_fd < 0 || fstat(o->data_fd, &sb) != 0) {
            rc = fs_ctx_err(ctx, errno == ENOENT ? FS_ERR_CORRUPT : FS_ERR_IO, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if ((uint64_t)sb.st_size < o->cur_bytes) {
            rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: %llu bytes, the journal recorded %llu", path,
                            (unsigned long long)sb.st_size, (unsigned long long)o->cur_bytes);
            goto fail;
        }
        for (int i = 0; i < o->np; i++) {
            uint64_t sum = 0, got = 0;
            if ((rc = fs_fd_xxh3(ctx, o->data_fd, path, o->p[i].off, o->p[i].nbytes, &sum, &got)) != FS_OK) goto fail;
            if (got != o->p[i].nbytes || sum != o->p[i].xxh) {
                rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: tensor '%s' does not match its checksum in the journal", path,
                                o->p[i].name);
                goto fail;
            }
        }
        if (ftruncate(o->data_fd, (off_t)o->cur_bytes) != 0 || fsync(o->data_fd) != 0) {
            rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: truncate to %llu bytes: %s", path, (unsigned long long)o->cur_bytes,
                            strerror(errno));
            goto fail;
        }
    }
    sweep(o, keep);
    snprintf(path, sizeof path, "%s/.", o->dir);
    if ((rc = fs_fsync_dir_of(ctx, path)) != FS_OK) goto fail;
    *out = o;
    return FS_OK;
fail:
    fs_out_detach(o);
    return rc;
}
