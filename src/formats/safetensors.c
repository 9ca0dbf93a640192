/* safetensors.c: the validated reader and the atomic writer of safetensors
 * files (format in safetensors.h).
 *
 * Reader invariants, established by fs_st_open before anything is returned:
 *  1. 8 + N <= file size and N <= FS_ST_MAX_HEADER; nothing is allocated from
 *     an unchecked length.
 *  2. Every tensor has a known dtype, 0..FS_ST_MAX_DIMS non-negative dims and
 *     prod(shape) * itemsize (overflow-checked) == end - begin.
 *  3. data_start + end <= file size, and the tensors tile the data region
 *     exactly: no overlap, no gap, nothing after the last (check_layout).
 * Writer: temp file, fsync, rename, fsync of the folder (no partial file is
 * ever visible under the final name).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "src/formats/safetensors.h"

/* ---- reading (fs_pread_full, fileio.c) ----------------------------------- */

void fs_st_close(fs_st_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->ntensors; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->nmeta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->tensors);
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f);
}

/* A JSON integer >= 0 (jansson keeps integers exact up to 2^63-1). */
static int json_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static fs_status parse_tensor(fs_ctx *ctx, fs_st_file *f, const char *name, json_t *v,
                              fs_st_tensor *t)
{
    const char *p = f->path;
    if (!json_is_object(v))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': entry is not an object", p, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': missing or non-string dtype", p, name);
    t->dtype = fs_dtype_from_name(json_string_value(jd));
    if (t->dtype == FS_DT_INVALID)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", p, name,
                          json_string_value(jd));
    if (!json_is_array(js) || json_array_size(js) > FS_ST_MAX_DIMS)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': shape must be an array of at most %d dims",
                          p, name, FS_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    uint64_t nelem = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t dim;
        if (json_u64(json_array_get(js, (size_t)d), &dim) != 0)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': dim %d is not a non-negative integer",
                              p, name, d);
        t->shape[d] = (int64_t)dim;
        if (dim != 0 && nelem > UINT64_MAX / dim)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': shape overflows", p, name);
        nelem *= dim;
    }
    size_t isz = fs_dtype_size(t->dtype);
    if (nelem > UINT64_MAX / isz)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': byte size overflows", p, name);
    t->nelem = nelem;
    t->nbytes = nelem * isz;
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || json_u64(json_array_get(jo, 0), &b) ||
        json_u64(json_array_get(jo, 1), &e))
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets must be two non-negative integers", p, name);
    if (e < b)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': data_offsets end %llu < begin %llu",
                          p, name, (unsigned long long)e, (unsigned long long)b);
    if (e - b != t->nbytes)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: tensor '%s': %s shape needs %llu bytes but data_offsets span %llu",
                          p, name, fs_dtype_name(t->dtype), (unsigned long long)t->nbytes,
                          (unsigned long long)(e - b));
    if (e > f->size - f->data_start)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: tensor '%s': data [%llu, %llu) runs past the end of the file "
                          "(%llu data bytes)", p, name, (unsigned long long)b,
                          (unsigned long long)e, (unsigned long long)(f->size - f->data_start));
    t->offset = f->data_start + b;
    t->name = strdup(name);
    if (!t->name) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: tensor name", p);
    return FS_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const fs_st_tensor *x = *(fs_st_tensor *const *)a, *y = *(fs_st_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The tensors must tile the data region exactly, as the format (and the
 * reference reader's MetadataIncompleteBuffer and InvalidOffset checks)
 * requires: sorted by offset, each begins where the one before ends, and the
 * last ends at the end of the file.  A header cut or padded by a few bytes
 * shifts every tensor's data; this is what notices it before any value is read. */
static fs_status check_layout(fs_ctx *ctx, fs_st_file *f)
{
    fs_st_tensor **v = calloc((size_t)f->ntensors + 1, sizeof *v);
    if (!v) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: tensor index", f->path);
    int n = 0;
    for (int i = 0; i < f->ntensors; i++)
        if (f->tensors[i].nbytes > 0) v[n++] = &f->tensors[i];
    qsort(v, (size_t)n, sizeof *v, cmp_offset);
    fs_status rc = FS_OK;
    uint64_t at = f->data_start;
    for (int i = 0; i < n && rc == FS_OK; i++) {
        if (v[i]->offset < at)
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", f->path,
                            v[i - 1]->name, v[i]->name);
        else if (v[i]->offset > at)
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT,
                            "%s: %llu unused bytes before tensor '%s' (the tensors must tile the "
                            "data region; is the header length right?)",
                            f->path, (unsigned long long)(v[i]->offset - at), v[i]->name);
        at = v[i]->offset + v[i]->nbytes;
    }
    if (rc == FS_OK && at != f->size)
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT,
                        "%s: %llu bytes after the last tensor (the tensors must end at the end "
                        "of the file; is the header length right, or the file truncated?)",
                        f->path, (unsigned long long)(f->size - at));
    free(v);
    return rc;
}

static fs_status parse_meta(fs_ctx *ctx, fs_st_file *f, json_t *m)
{
    if (!json_is_object(m))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: __metadata__ is not an object", f->path);
    size_t n = json_object_size(m);
    f->meta_keys = calloc(n + 1, sizeof(char *));
    f->meta_vals = calloc(n + 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_vals) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: metadata", f->path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v) {
        if (!json_is_string(v))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string",
                              f->path, k);
        f->meta_keys[f->nmeta] = strdup(k);
        f->meta_vals[f->nmeta] = strdup(json_string_value(v));
        f->nmeta++;
        if (!f->meta_keys[f->nmeta - 1] || !f->meta_vals[f->nmeta - 1])
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: metadata", f->path);
    }
    return FS_OK;
}

static fs_status parse_header(fs_ctx *ctx, fs_st_file *f, const char *buf, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: header is not valid JSON: %s (byte %d)",
                          f->path, jerr.text, jerr.position);
    fs_status rc = FS_OK;
    if (!json_is_object(root)) {
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: header is not a JSON object", f->path);
        goto out;
    }
    size_t count = json_object_size(root);
    if (count > FS_ST_MAX_TENSORS) {
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %zu header entries (at most %d)", f->path,
                        count, FS_ST_MAX_TENSORS);
        goto out;
    }
    f->tensors = calloc(count + 1, sizeof(fs_st_tensor));
    if (!f->tensors) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: tensor table", f->path); goto out; }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) rc = parse_meta(ctx, f, v);
        else if (key[0] == '\0') rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: empty tensor name", f->path);
        else if ((rc = parse_tensor(ctx, f, key, v, &f->tensors[f->ntensors])) == FS_OK) f->ntensors++;
        if (rc != FS_OK) goto out;
    }
    rc = check_layout(ctx, f);
out:
    json_decref(root);
    return rc;
}

fs_status fs_st_open(fs_ctx *ctx, const char *path, fs_st_file **out)
{
    *out = NULL;
    fs_st_file *f = calloc(1, sizeof *f);
    if (!f) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    f->fd = -1;
    f->path = strdup(path);
    if (!f->path) { free(f); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path); }
    fs_status rc = FS_OK;
    char *hdr = NULL;
    /* a named pipe, device or folder is refused here, never waited on */
    if ((rc = fs_open_regular(ctx, path, O_RDONLY, &f->fd, &f->size)) != FS_OK) goto out;
    if (f->size < 8) {
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %llu bytes, too short for a safetensors header",
                        path, (unsigned long long)f->size);
        goto out;
    }
    uint8_t lenb[8];
    if ((rc = fs_pread_full(ctx, f->fd, path, lenb, 8, 0)) != FS_OK) goto out;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | lenb[i];
    if (n < 2 || n > FS_ST_MAX_HEADER || n > f->size - 8) {
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT,
                        "%s: header length %llu is impossible (file has %llu bytes, cap %u)",
                        path, (unsigned long long)n, (unsigned long long)f->size, FS_ST_MAX_HEADER);
        goto out;
    }
    f->data_start = 8 + n;
    hdr = malloc((size_t)n);
    if (!hdr) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: header of %llu bytes", path, (unsigned long long)n); goto out; }
    if ((rc = fs_pread_full(ctx, f->fd, path, hdr, n, 8)) != FS_OK) goto out;
    rc = parse_header(ctx, f, hdr, (size_t)n);
out:
    free(hdr);
    if (rc != FS_OK) { fs_st_close(f); return rc; }
    *out = f;
    return FS_OK;
}

const fs_st_tensor *fs_st_find(const fs_st_file *f, const char *name)
{
    for (int i = 0; i < f->ntensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *fs_st_meta(const fs_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

fs_status fs_st_read(fs_ctx *ctx, const fs_st_file *f, const fs_st_tensor *t, void *dst)
{
    return fs_pread_full(ctx, f->fd, f->path, dst, t->nbytes, t->offset);
}

fs_status fs_st_read_f32(fs_ctx *ctx, const fs_st_file *f, const fs_st_tensor *t, float **out)
{
    *out = NULL;
    if (t->dtype != FS_DT_F32 && t->dtype != FS_DT_F16 && t->dtype != FS_DT_BF16 &&
        t->dtype != FS_DT_F8_E4M3)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: tensor '%s': dtype %s unsupported (F32, F16, BF16, F8_E4M3)",
                          f->path, t->name, fs_dtype_name(t->dtype));
    float *dst = fs_alloc2((size_t)t->nelem, sizeof(float));
    void *raw = t->dtype == FS_DT_F32 ? (void *)dst : malloc(t->nbytes ? (size_t)t->nbytes : 1);
    if (!dst || !raw) {
        free(dst);
        if (raw != dst) free(raw);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: tensor '%s' (%llu elements)", f->path, t->name,
                          (unsigned long long)t->nelem);
    }
    fs_status rc = fs_st_read(ctx, f, t, raw);
    if (rc == FS_OK) {
        char what[512];
        snprintf(what, sizeof what, "%s: tensor '%s'", f->path, t->name);
        rc = fs_decode_f32(ctx, what, t->dtype, raw, (size_t)t->nelem, dst);
    }
    if (raw != dst) free(raw);
    if (rc != FS_OK) { free(dst); return rc; }
    *out = dst;
    return FS_OK;
}

/* ---- writing ------------------------------------------------------------ */

typedef struct wentry {
    char *name;
    fs_dtype dt;
    int ndim;
    int64_t shape[FS_ST_MAX_DIMS];
    const void *data;        /* the bytes, or NULL when they are in a file: */
    int fd;                  /* ... this one (not owned), at */
    uint64_t foff;           /* ... this offset */
    uint64_t nbytes;
} wentry;

struct fs_st_writer {
    char *path, *tmp;
    wentry *e;
    int n, cap;
    json_t *meta;
};

fs_status fs_st_writer_new(fs_ctx *ctx, const char *path, fs_st_writer **out)
{
    fs_st_writer *w = calloc(1, sizeof *w);
    size_t len = strlen(path) + 32;
    if (w) { w->path = strdup(path); w->tmp = malloc(len); w->meta = json_object(); }
    if (!w || !w->path || !w->tmp || !w->meta) {
        fs_st_writer_abort(w);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: writer", path);
    }
    snprintf(w->tmp, len, "%s.tmp.%ld", path, (long)getpid());
    *out = w;
    return FS_OK;
}

static fs_status writer_add(fs_ctx *ctx, fs_st_writer *w, const char *name, fs_dtype dt, int ndim,
                            const int64_t *shape, const void *data, int fd, uint64_t foff);

fs_status fs_st_writer_add(fs_ctx *ctx, fs_st_writer *w, const char *name, fs_dtype dt,
                           int ndim, const int64_t *shape, const void *data)
{
    return writer_add(ctx, w, name, dt, ndim, shape, data, -1, 0);
}

fs_status fs_st_writer_add_file(fs_ctx *ctx, fs_st_writer *w, const char *name, fs_dtype dt,
                                int ndim, const int64_t *shape, int fd, uint64_t offset)
{
    return writer_add(ctx, w, name, dt, ndim, shape, NULL, fd, offset);
}

static fs_status writer_add(fs_ctx *ctx, fs_st_writer *w, const char *name, fs_dtype dt, int ndim,
                            const int64_t *shape, const void *data, int fd, uint64_t foff)
{
    if (ndim < 0 || ndim > FS_ST_MAX_DIMS)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: tensor '%s': %d dims", w->path, name, ndim);
    if (name[0] == '\0' || strcmp(name, "__metadata__") == 0)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: '%s' cannot name a tensor", w->path, name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: tensor '%s' added twice", w->path, name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        wentry *e = realloc(w->e, sizeof *e * (size_t)cap);
        if (!e) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: tensor list", w->path);
        w->e = e;
        w->cap = cap;
    }
    wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    uint64_t nb = fs_dtype_size(dt);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] && nb > UINT64_MAX / (uint64_t)shape[d]))
            return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: tensor '%s': bad shape", w->path, name);
        nb *= (uint64_t)shape[d];
        e->shape[d] = shape[d];
    }
    e->name = strdup(name);
    if (!e->name) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: tensor name", w->path);
    e->dt = dt;
    e->ndim = ndim;
    e->data = data;
    e->fd = fd;
    e->foff = foff;
    e->nbytes = nb;
    w->n++;
    return FS_OK;
}

fs_status fs_st_writer_meta(fs_ctx *ctx, fs_st_writer *w, const char *key, const char *val)
{
    if (json_object_set_new(w->meta, key, json_string(val)) != 0)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: metadata '%s' is not valid UTF-8", w->path, key);
    return FS_OK;
}

void fs_st_writer_abort(fs_st_writer *w)
{
    if (!w) return;
    if (w->tmp) unlink(w->tmp);
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    free(w->path);
    free(w->tmp);
    json_decref(w->meta);
    free(w);
}

static fs_status write_full(fs_ctx *ctx, int fd, const char *path, const void *buf, uint64_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        size_t want = n > (1u << 30) ? (1u << 30) : (size_t)n;
        int inj = fs_io_fault(ctx, "shard-write");
        ssize_t put = inj ? (errno = inj, -1) : write(fd, p, want);
        if (put < 0) {
            if (errno == EINTR) continue;
            return fs_write_errno(ctx, errno, path, n, 0);
        }
        p += put;
        n -= (uint64_t)put;
    }
    return FS_OK;
}

/* n bytes of fd_in at off to the current position of fd_out: in the kernel
 * (copy_file_range), with a pread/write fallback where it is not supported. */
static fs_status copy_range(fs_ctx *ctx, int fd_in, uint64_t off, int fd_out, const char *path,
                            uint64_t n)
{
    loff_t o = (loff_t)off;
    while (n > 0) {
        ssize_t k = copy_file_range(fd_in, &o, fd_out, NULL, n > (1u << 30) ? (1u << 30) : (size_t)n, 0);
        if (k > 0) { n -= (uint64_t)k; continue; }
        if (k < 0 && errno == EINTR) continue;
        if (k == 0 || errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL) break;
        return fs_ctx_err(ctx, FS_ERR_IO, "%s: copy: %s", path, strerror(errno));
    }
    char buf[1 << 16];
    while (n > 0) {
        size_t want = n < sizeof buf ? (size_t)n : sizeof buf;
        ssize_t got = pread(fd_in, buf, want, (off_t)o);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return fs_ctx_err(ctx, FS_ERR_IO, "%s: staged data ends early", path);
        fs_status rc = write_full(ctx, fd_out, path, buf, (uint64_t)got);
        if (rc != FS_OK) return rc;
        o += got;
        n -= (uint64_t)got;
    }
    return FS_OK;
}

static char *build_header(fs_st_writer *w, uint64_t *len)
{
    json_t *root = json_object();
    if (!root) return NULL;
    if (json_object_size(w->meta) > 0) json_object_set(root, "__metadata__", w->meta);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        wentry *e = &w->e[i];
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *t = json_pack("{s:s, s:o, s:[I,I]}", "dtype", fs_dtype_name(e->dt), "shape", shape,
                              "data_offsets", (json_int_t)off, (json_int_t)(off + e->nbytes));
        if (!t || json_object_set_new(root, e->name, t) != 0) { json_decref(root); return NULL; }
        off += e->nbytes;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!s) return NULL;
    size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
    char *h = realloc(s, padded + 1);
    if (!h) { free(s); return NULL; }
    memset(h + n, ' ', padded - n);
    h[padded] = '\0';
    *len = padded;
    return h;
}

fs_status fs_st_writer_commit(fs_ctx *ctx, fs_st_writer *w)
{
    uint64_t hlen = 0;
    char *hdr = build_header(w, &hlen);
    if (!hdr) {
        fs_status rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: header", w->path);
        fs_st_writer_abort(w);
        return rc;
    }
    fs_status rc = FS_OK;
    int fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", w->tmp, strerror(errno));
        goto out;
    }
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(hlen >> (8 * i));
    rc = write_full(ctx, fd, w->tmp, lenb, 8);
    if (rc == FS_OK) rc = write_full(ctx, fd, w->tmp, hdr, hlen);
    for (int i = 0; rc == FS_OK && i < w->n; i++, fs_crashpoint(ctx, "shard-data"))
        rc = w->e[i].fd >= 0 ? copy_range(ctx, w->e[i].fd, w->e[i].foff, fd, w->tmp, w->e[i].nbytes)
                             : write_full(ctx, fd, w->tmp, w->e[i].data, w->e[i].nbytes);
    if (rc == FS_OK && fsync(fd) != 0)
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: fsync: %s", w->tmp, strerror(errno));
    if (close(fd) != 0 && rc == FS_OK)
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: close: %s", w->tmp, strerror(errno));
    if (rc == FS_OK) fs_crashpoint(ctx, "shard-written");
    if (rc == FS_OK && rename(w->tmp, w->path) != 0)
        rc = fs_ctx_err(ctx, FS_ERR_IO, "rename %s -> %s: %s", w->tmp, w->path, strerror(errno));
    if (rc == FS_OK) rc = fs_fsync_dir_of(ctx, w->path);
out:
    free(hdr);
    fs_st_writer_abort(w);   /* unlinks the temp file if it is still there */
    return rc;
}
