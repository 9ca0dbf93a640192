/* outckpt.c: the quantized checkpoint folder writer (see outckpt.h).
 *
 * States: OPEN (each tensor's bytes are appended to .shard-NNNNN.data as it
 * comes and only its description stays in `pend`; a full shard is written to
 * .shard-NNNNN.partial, the bytes copied in the kernel from the staging file)
 * -> fs_out_finish (config and tokenizer files, shard renames, index last) ->
 * freed; or fs_out_abort from OPEN (partials and staging removed).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "src/formats/outckpt-impl.h"
#include "src/formats/pack.h"
#include "src/quant/quant-math.h"


/* A file this writer produces (or its temporary / partial form): what
 * --overwrite may remove.  Anything else in the folder is left alone. */
int fs_out_is_ckpt_file(const char *n)
{
    char base[512];
    size_t l = strlen(n);
    if (l >= sizeof base) return 0;
    memcpy(base, n, l + 1);
    char *tmp = strstr(base, ".tmp.");              /* NAME.tmp.PID: judge NAME */
    if (tmp) *tmp = '\0';
    l = strlen(base);
    if (!strncmp(base, ".shard-", 7) && l > 8 && !strcmp(base + l - 8, ".partial")) return 1;
    if (!strncmp(base, ".shard-", 7) && l > 5 && !strcmp(base + l - 5, ".data")) return 1;
    if (!strncmp(base, "model", 5) && l > 12 && !strcmp(base + l - 12, ".safetensors")) return 1;
    if (!strcmp(base, "model.safetensors.index.json") || !strcmp(base, "config.json")) return 1;
    for (int i = 0; fs_ckpt_side_files[i]; i++)
        if (!strcmp(base, fs_ckpt_side_files[i])) return 1;
    return 0;
}

void fs_out_partial_path(const fs_outckpt *o, int shard, char *buf, size_t n)
{
    snprintf(buf, n, "%s/.shard-%05d.partial", o->dir, shard);
}

void fs_out_staging_path(const fs_outckpt *o, int shard, char *buf, size_t n)
{
    snprintf(buf, n, "%s/.shard-%05d.data", o->dir, shard);
}

static void free_state(fs_outckpt *o);

void fs_out_abort(fs_outckpt *o)
{
    if (!o) return;
    char path[4200];
    for (int s = 1; s <= o->nshards; s++) {
        fs_out_partial_path(o, s, path, sizeof path);
        unlink(path);
    }
    for (int s = o->kept_lo; o->journaled && s >= 1 && s <= o->nshards; s++) {
        fs_out_staging_path(o, s, path, sizeof path);
        unlink(path);
    }
    if (o->data_fd >= 0) {
        close(o->data_fd);
        o->data_fd = -1;
        fs_out_staging_path(o, o->nshards + 1, path, sizeof path);
        unlink(path);
    }
    free_state(o);
}

void fs_out_detach(fs_outckpt *o)
{
    if (!o) return;
    if (o->data_fd >= 0) close(o->data_fd);
    o->data_fd = -1;
    free_state(o);
}

static void free_state(fs_outckpt *o)
{
    for (int i = 0; i < o->np; i++) { free(o->p[i].name); free(o->p[i].in_features); }
    for (size_t i = 0; i < o->nt; i++) free(o->tname[i]);
    free(o->p);
    free(o->tname);
    free(o->tshard);
    free(o->shard_size);
    free(o->shard_xxh);
    free(o->dir);
    free(o);
}

fs_status fs_out_check(fs_ctx *ctx, const char *dir, int overwrite)
{
    if (strlen(dir) > 4000) return fs_ctx_err(ctx, FS_ERR_USAGE, "--out: path too long");
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return FS_OK;
        if (errno == ENOTDIR) return fs_ctx_err(ctx, FS_ERR_USAGE, "--out %s: not a folder", dir);
        return fs_ctx_err(ctx, FS_ERR_IO, "--out %s: %s", dir, strerror(errno));
    }
    struct dirent *e;
    int nonempty = 0;
    /* .forge-work: the default work folder of a run killed before its first
     * commit (one with a journal is refused earlier, pointing to --resume) */
    while ((e = readdir(d)) && !nonempty)
        nonempty = strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, ".forge-work");
    closedir(d);
    if (nonempty && !overwrite)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--out %s: the folder is not empty (use --overwrite to replace a checkpoint there)", dir);
    return FS_OK;
}

fs_status fs_out_open(fs_ctx *ctx, const char *dir, int overwrite, uint64_t max_shard,
                      fs_format fmt, const fs_quant_opts *q, fs_outckpt **out)
{
    *out = NULL;
    fs_status rc = fs_out_check(ctx, dir, overwrite);
    if (rc != FS_OK) return rc;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4400];
        while (overwrite && (e = readdir(d)))
            if (fs_out_is_ckpt_file(e->d_name)) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                if (unlink(path) != 0 && errno != ENOENT) {
                    closedir(d);
                    return fs_ctx_err(ctx, FS_ERR_IO, "--overwrite: cannot remove %s: %s", path, strerror(errno));
                }
            }
        closedir(d);
    } else if (errno == ENOENT) {
        if (mkdir(dir, 0755) != 0)
            return fs_ctx_err(ctx, FS_ERR_IO, "--out %s: cannot create: %s", dir, strerror(errno));
    } else {
        return fs_ctx_err(ctx, FS_ERR_IO, "--out %s: %s", dir, strerror(errno));
    }
    fs_outckpt *o = calloc(1, sizeof *o);
    if (!o || !(o->dir = strdup(dir))) {
        free(o);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "output writer");
    }
    o->max_shard = max_shard ? max_shard : FS_DEFAULT_MAX_SHARD;
    o->data_fd = -1;
    o->fmt = fmt;
    o->q = *q;
    *out = o;
    return FS_OK;
}

fs_status fs_out_seal(fs_ctx *ctx, fs_outckpt *o)
{
    if (o->np == 0) return FS_OK;
    char path[4200], key[1100], val[32];
    fs_out_partial_path(o, o->nshards + 1, path, sizeof path);
    fs_st_writer *w = NULL;
    fs_status rc = fs_st_writer_new(ctx, path, &w);
    if (rc != FS_OK) return rc;
    rc = fs_st_writer_meta(ctx, w, "format", "pt");
    for (int i = 0; rc == FS_OK && i < o->np; i++) {
        pend *t = &o->p[i];
        rc = fs_st_writer_add_file(ctx, w, t->name, t->dt, t->ndim, t->shape, o->data_fd, t->off);
        snprintf(key, sizeof key, "xxh3:%s", t->name);
        snprintf(val, sizeof val, "%016llx", (unsigned long long)t->xxh);
        if (rc == FS_OK) rc = fs_st_writer_meta(ctx, w, key, val);
        if (rc == FS_OK && t->in_features) {
            snprintf(key, sizeof key, "in_features:%s", t->name);
            rc = fs_st_writer_meta(ctx, w, key, t->in_features);
        }
    }
    if (rc != FS_OK) { fs_st_writer_abort(w); return rc; }
    if ((rc = fs_st_writer_commit(ctx, w)) != FS_OK) return rc;
    close(o->data_fd);
    o->data_fd = -1;
    fs_out_staging_path(o, o->nshards + 1, path, sizeof path);
    if (!o->journaled) unlink(path);   /* else kept until the journal has the seal */
    o->nshards++;
    for (int i = 0; i < o->np; i++) {
        if (o->nt == o->tcap) {
            size_t cap = o->tcap ? 2 * o->tcap : 256;
            char **tn = realloc(o->tname, sizeof *tn * cap);
            if (tn) o->tname = tn;
            int *ts = realloc(o->tshard, sizeof *ts * cap);
            if (ts) o->tshard = ts;
            if (!tn || !ts) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tensor list");
            o->tcap = cap;
        }
        o->tname[o->nt] = o->p[i].name;
        o->tshard[o->nt++] = o->nshards;
        free(o->p[i].in_features);
    }
    o->np = 0;
    o->cur_bytes = 0;
    return FS_OK;
}

static fs_status add(fs_ctx *ctx, fs_outckpt *o, const char *name, fs_dtype dt, int ndim,
                     const int64_t *shape, void *data, const char *in_features)
{
    uint64_t nb = fs_dtype_size(dt);
    for (int i = 0; i < ndim; i++) nb *= (uint64_t)shape[i];
    if (o->cur_bytes > 0 && o->cur_bytes + nb > o->max_shard) {
        fs_status rc = fs_out_seal(ctx, o);
        if (rc != FS_OK) { free(data); return rc; }
    }
    if (o->np == o->cap) {
        int cap = o->cap ? 2 * o->cap : 64;
        pend *p = realloc(o->p, sizeof *p * (size_t)cap);
        if (!p) { free(data); return fs_ctx_err(ctx, FS_ERR_NOMEM, "pending tensors"); }
        o->p = p;
        o->cap = cap;
    }
    char path[4200];
    if (o->data_fd < 0) {
        fs_out_staging_path(o, o->nshards + 1, path, sizeof path);
        o->data_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (o->data_fd < 0) {
            free(data);
            return fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", path, strerror(errno));
        }
    }
    pend *t = &o->p[o->np];
    memset(t, 0, sizeof *t);
    t->off = o->cur_bytes;
    for (uint64_t done = 0; done < nb;) {              /* staged now: memory stays flat */
        uint64_t want = nb - done > (1u << 30) ? (1u << 30) : nb - done;
        if (done == 0 && nb > 1) want = nb / 2;         /* two halves: a crash point between */
        else if (done > 0 && done == nb / 2) fs_crashpoint(ctx, "tensor-write");
        int inj = fs_io_fault(ctx, "tensor-write");
        ssize_t k = inj ? (errno = inj, -1) : pwrite(o->data_fd, (const uint8_t *)data + done, (size_t)want, (off_t)(t->off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = errno;
            free(data);
            fs_out_staging_path(o, o->nshards + 1, path, sizeof path);
            return fs_write_errno(ctx, k < 0 ? e : EIO, path, nb - done, t->off + done);
        }
        done += (uint64_t)k;
    }
    t->xxh = XXH3_64bits(data, (size_t)nb);
    free(data);
    t->name = strdup(name);
    t->in_features = in_features ? strdup(in_features) : NULL;
    if (!t->name || (in_features && !t->in_features)) {
        free(t->name); free(t->in_features);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "tensor name");
    }
    t->dt = dt;
    t->ndim = ndim;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    t->nbytes = nb;
    o->np++;
    o->cur_bytes += nb;
    o->total_bytes += nb;
    return FS_OK;
}

fs_status fs_out_add(fs_ctx *ctx, fs_outckpt *o, const char *name, fs_dtype dt, int ndim,
                     const int64_t *shape, void *data)
{
    return add(ctx, o, name, dt, ndim, shape, data, NULL);
}

static fs_status add_forge(fs_ctx *ctx, fs_outckpt *o, const char *base, const fs_layer_result *r)
{
    const int64_t out = r->rows, in = r->cols, ng = r->ngroups;
    const int64_t rb = fs_forge_row_bytes(o->q.bits, in);
    char name[1100], inf[32];
    uint8_t *packed = fs_alloc2((size_t)out, (size_t)rb);
    uint8_t *qm = fs_alloc2((size_t)(out * ng), 4);
    if (!packed || !qm) { free(packed); free(qm); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: packing", base); }
    fs_forge_pack(r->qweight, out, in, o->q.bits, packed);
    memcpy(qm, r->qmeta, (size_t)(out * ng) * 4);
    int64_t s2[2] = {out, rb}, s3[3] = {out, ng, 4}, s1[1] = {in};
    snprintf(inf, sizeof inf, "%lld", (long long)in);
    snprintf(name, sizeof name, "%s.qweight", base);
    fs_status rc = add(ctx, o, name, FS_DT_U8, 2, s2, packed, inf);
    snprintf(name, sizeof name, "%s.qmeta", base);
    if (rc == FS_OK) rc = add(ctx, o, name, FS_DT_U8, 3, s3, qm, NULL);
    else free(qm);
    if (rc == FS_OK && r->perm && !o->q.static_groups) {       /* dynamic act-order */
        int32_t *g = fs_alloc2((size_t)in, sizeof(int32_t));
        if (!g) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: g_idx", base);
        fs_group_index(in, fs_group_width(in, o->q.group_size), r->perm, 0, g);
        snprintf(name, sizeof name, "%s.g_idx", base);
        rc = add(ctx, o, name, FS_DT_I32, 1, s1, g, NULL);
    }
    return rc;
}

static fs_status add_gptq(fs_ctx *ctx, fs_outckpt *o, const char *base, const fs_layer_result *r)
{
    const int64_t out = r->rows, in = r->cols, ng = r->ngroups;
    const int bits = o->q.bits;
    const int64_t qr = fs_gptq_qweight_rows(bits, in), zc = fs_gptq_qzeros_cols(bits, out);
    char name[1100];
    uint32_t *qw = fs_alloc2((size_t)qr * (size_t)out, 4), *qz = fs_alloc2((size_t)ng * (size_t)zc, 4);
    uint16_t *sc = fs_alloc2((size_t)ng * (size_t)out, 2);
    uint8_t *zeros = fs_alloc2((size_t)ng * (size_t)out, 1);
    int32_t *g = fs_alloc2((size_t)in, sizeof(int32_t));
    fs_status rc = FS_OK;
    if (!qw || !qz || !sc || !zeros || !g) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: packing", base);
        goto fail;
    }
    for (int64_t row = 0; row < out; row++)
        for (int64_t k = 0; k < ng; k++) {
            const uint8_t *m = r->qmeta + (row * ng + k) * 4;
            int16_t code = (int16_t)(uint16_t)(m[0] | m[1] << 8);
            if (m[2] < 1) {
                rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s: zero point 0 cannot be stored in the gptq format "
                                "(the layer was not quantized in gptq mode)", base);
                goto fail;
            }
            zeros[k * out + row] = m[2];
            sc[k * out + row] = fs_f32_to_f16(fs_qm_f16_round(fs_q88_decode(code)));
        }
    fs_gptq_pack_qweight(r->qweight, out, in, bits, qw);
    fs_gptq_pack_qzeros(zeros, ng, out, bits, qz);
    fs_group_index(in, fs_group_width(in, o->q.group_size), r->perm, o->q.static_groups, g);
    free(zeros);
    zeros = NULL;
    int64_t sq[2] = {qr, out}, sz[2] = {ng, zc}, ss[2] = {ng, out}, sg[1] = {in};
    snprintf(name, sizeof name, "%s.qweight", base);
    rc = add(ctx, o, name, FS_DT_I32, 2, sq, qw, NULL);
    qw = NULL;
    snprintf(name, sizeof name, "%s.qzeros", base);
    if (rc == FS_OK) { rc = add(ctx, o, name, FS_DT_I32, 2, sz, qz, NULL); qz = NULL; }
    snprintf(name, sizeof name, "%s.scales", base);
    if (rc == FS_OK) { rc = add(ctx, o, name, FS_DT_F16, 2, ss, sc, NULL); sc = NULL; }
    snprintf(name, sizeof name, "%s.g_idx", base);
    if (rc == FS_OK) { rc = add(ctx, o, name, FS_DT_I32, 1, sg, g, NULL); g = NULL; }
fail:
    free(qw); free(qz); free(sc); free(zeros); free(g);
    return rc;
}

/* compressed-tensors pack-quantized (pack.h): the scale is the solver's Q8.8
 * scale as F32 (exact: the library's decompression in F32 gives the solver's
 * dequant bit for bit), the zero point only when asymmetric. */
static fs_status add_ct(fs_ctx *ctx, fs_outckpt *o, const char *base, const fs_layer_result *r)
{
    const int64_t out = r->rows, in = r->cols, ng = r->ngroups;
    const int bits = o->q.bits, sym = o->q.sym;
    const int64_t nw = fs_ct_words(bits, in), zw = fs_ct_words(bits, out);
    char name[1100];
    uint32_t *pk = fs_alloc2((size_t)nw * (size_t)out, 4), *zp = sym ? NULL : fs_alloc2((size_t)zw * (size_t)ng, 4);
    float *sc = fs_alloc2((size_t)ng * (size_t)out, sizeof(float));
    uint8_t *zeros = fs_alloc2((size_t)ng * (size_t)out, 1);
    int64_t *shp = fs_alloc2(2, sizeof(int64_t));
    int32_t *g = fs_out_dynamic_groups(&o->q) ? fs_alloc2((size_t)in, sizeof(int32_t)) : NULL;
    fs_status rc = FS_OK;
    if (!pk || (!sym && !zp) || !sc || !zeros || !shp || (fs_out_dynamic_groups(&o->q) && !g)) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: packing", base);
        goto fail;
    }
    for (int64_t row = 0; row < out; row++)
        for (int64_t k = 0; k < ng; k++) {
            const uint8_t *m = r->qmeta + (row * ng + k) * 4;
            int16_t code = (int16_t)(uint16_t)(m[0] | m[1] << 8);
            if (sym && m[2] != (1u << (bits - 1))) {
                rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s: a symmetric group has zero %d, not %d: compressed-tensors "
                                "cannot store it", base, m[2], 1 << (bits - 1));
                goto fail;
            }
            zeros[row * ng + k] = m[2];
            sc[row * ng + k] = fs_q88_decode(code);
        }
    fs_ct_pack_weight(r->qweight, out, in, bits, pk);
    if (zp) fs_ct_pack_zeros(zeros, out, ng, bits, zp);
    if (g) fs_group_index(in, fs_group_width(in, o->q.group_size), r->perm, 0, g);
    shp[0] = out;
    shp[1] = in;
    int64_t sp[2] = {out, nw}, ss[2] = {out, ng}, sz[2] = {zw, ng}, s2[1] = {2}, sg[1] = {in};
    snprintf(name, sizeof name, "%s.weight_packed", base);
    rc = add(ctx, o, name, FS_DT_I32, 2, sp, pk, NULL);
    pk = NULL;
    snprintf(name, sizeof name, "%s.weight_scale", base);
    if (rc == FS_OK) { rc = add(ctx, o, name, FS_DT_F32, 2, ss, sc, NULL); sc = NULL; }
    snprintf(name, sizeof name, "%s.weight_shape", base);
    if (rc == FS_OK) { rc = add(ctx, o, name, FS_DT_I64, 1, s2, shp, NULL); shp = NULL; }
    snprintf(name, sizeof name, "%s.weight_zero_point", base);
    if (rc == FS_OK && zp) { rc = add(ctx, o, name, FS_DT_I32, 2, sz, zp, NULL); zp = NULL; }
    snprintf(name, sizeof name, "%s.weight_g_idx", base);
    if (rc == FS_OK && g) { rc = add(ctx, o, name, FS_DT_I32, 1, sg, g, NULL); g = NULL; }
fail:
    free(pk); free(zp); free(sc); free(zeros); free(shp); free(g);
    return rc;
}

fs_status fs_out_add_linear(fs_ctx *ctx, fs_outckpt *o, const char *base, const fs_layer_result *r)
{
    if (o->fmt == FS_FMT_CT) return add_ct(ctx, o, base, r);
    return o->fmt == FS_FMT_GPTQ ? add_gptq(ctx, o, base, r) : add_forge(ctx, o, base, r);
}

fs_status fs_out_read_copy(fs_ctx *ctx, const fs_ckpt *src, const char *name, fs_dtype *dt,
                           int *ndim, int64_t *shape, void **data)
{
    *data = NULL;
    const fs_ckpt_entry *e = fs_ckpt_find(src, name);
    if (!e) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no tensor '%s' to copy", src->dir, name);
    const fs_st_tensor *t = e->t;
    *ndim = t->ndim;
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    if (t->dtype == FS_DT_F8_E4M3) {                 /* dequantized, stored as BF16 */
        float *f = NULL;
        fs_status rc = fs_ckpt_read_f32(ctx, src, name, &f);
        if (rc != FS_OK) return rc;
        uint16_t *b = fs_alloc2((size_t)t->nelem, 2);
        if (!b) { free(f); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", name); }
        for (uint64_t i = 0; i < t->nelem; i++) b[i] = fs_f32_to_bf16(f[i]);
        free(f);
        *dt = FS_DT_BF16;
        *data = b;
        return FS_OK;
    }
    void *buf = malloc(t->nbytes ? (size_t)t->nbytes : 1);
    if (!buf) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", name);
    fs_status rc = fs_ckpt_read_raw(ctx, src, e, buf);
    if (rc != FS_OK) { free(buf); return rc; }
    *dt = t->dtype;
    *data = buf;
    return FS_OK;
}

fs_status fs_out_copy(fs_ctx *ctx, fs_outckpt *o, const fs_ckpt *src, const char *name)
{
    fs_dtype dt = FS_DT_INVALID;
    int ndim = 0;
    int64_t shape[FS_ST_MAX_DIMS];
    void *data = NULL;
    fs_status rc = fs_out_read_copy(ctx, src, name, &dt, &ndim, shape, &data);
    return rc == FS_OK ? add(ctx, o, name, dt, ndim, shape, data, NULL) : rc;
}

/* text -> dir/name, atomically (fs_write_atomic). */
static fs_status write_file(fs_ctx *ctx, const char *dir, const char *name, const char *text, size_t n)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return fs_write_atomic(ctx, path, text, n);
}

/* src_dir/name (optional: absent is fine) -> dir/name.  fs_ckpt_open has
 * refused a side file that is not a regular file or is too big; this opens
 * it the same way (never blocking on a pipe put there since). */
static fs_status copy_file(fs_ctx *ctx, const char *src_dir, const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", src_dir, name);
    struct stat lst;
    if (lstat(path, &lst) != 0) return FS_OK;           /* optional files */
    int fd = -1;
    uint64_t size = 0;
    fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, &size);
    if (rc != FS_OK) return rc;
    if (size > FS_CKPT_MAX_SIDE) {
        close(fd);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: not a regular file under 256 MB", path);
    }
    char *buf = malloc((size_t)size + 1);
    rc = buf ? fs_pread_full(ctx, fd, path, buf, size, 0) : fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    close(fd);
    if (rc == FS_OK) rc = write_file(ctx, dir, name, buf, (size_t)size);
    free(buf);
    return rc;
}

const char *fs_format_name(fs_format f)
{
    return f == FS_FMT_GPTQ ? "gptq" : f == FS_FMT_CT ? "compressed-tensors" : "forge";
}

int fs_format_parse(const char *name, fs_format *f)
{
    if (!strcmp(name, "forge")) *f = FS_FMT_FORGE;
    else if (!strcmp(name, "gptq")) *f = FS_FMT_GPTQ;
    else if (!strcmp(name, "compressed-tensors")) *f = FS_FMT_CT;
    else return -1;
    return 0;
}

int fs_out_act_order_done(const fs_quant_opts *q)
{
    return q->act_order && !q->rtn;
}

int fs_out_dynamic_groups(const fs_quant_opts *q)
{
    return fs_out_act_order_done(q) && !q->static_groups && q->group_size != -1;
}

/* compressed-tensors' quantization_config (its QuantizationConfig and
 * QuantizationArgs fields, format pack-quantized): one scheme for every
 * Linear that is not in `ignore` (the caller's extra gives the list; the
 * default ignores lm_head only).  actorder: "group" = dynamic groups with
 * weight_g_idx, "weight" = act-order with static groups (no g_idx). */
static json_t *ct_config(const fs_quant_opts *q)
{
    json_t *w = json_pack("{s:i, s:s, s:b, s:s, s:o, s:o, s:b}", "num_bits", q->bits, "type", "int",
                          "symmetric", q->sym, "strategy", q->group_size == -1 ? "channel" : "group",
                          "group_size", q->group_size == -1 ? json_null() : json_integer((json_int_t)q->group_size),
                          "actorder", fs_out_dynamic_groups(q) ? json_string("group")
                                      : fs_out_act_order_done(q) ? json_string("weight") : json_null(),
                          "dynamic", 0);
    json_t *g = json_pack("{s:[s], s:o, s:n, s:n}", "targets", "Linear", "weights", w, "input_activations",
                          "output_activations");
    return json_pack("{s:s, s:s, s:s, s:{s:o}, s:[s], s:n, s:n}", "quant_method", "compressed-tensors", "format",
                     "pack-quantized", "quantization_status", "compressed", "config_groups", "group_0", g, "ignore",
                     "lm_head", "kv_cache_scheme", "global_compression_ratio");
}

/* Every field says what was done (never a flag that did not apply: RTN has
 * no act-order, damping or sequential solve). */
static json_t *quant_config(const fs_outckpt *o, const json_t *extra)
{
    const fs_quant_opts *q = &o->q;
    const int act = fs_out_act_order_done(q), stat = q->static_groups && !q->rtn;
    json_t *qc;
    if (o->fmt == FS_FMT_GPTQ) {
        qc = json_pack("{s:s, s:i, s:I, s:b, s:b, s:b, s:s}", "quant_method", "gptq", "bits", q->bits,
                       "group_size", (json_int_t)q->group_size, "desc_act", fs_out_dynamic_groups(q), "sym", q->sym,
                       "static_groups", stat, "checkpoint_format", "gptq");
        if (qc && !q->rtn &&
            (json_object_set_new(qc, "true_sequential", json_true()) ||
             json_object_set_new(qc, "damp_percent", json_real(q->damp)))) {
            json_decref(qc);
            qc = NULL;
        }
    } else if (o->fmt == FS_FMT_CT) {
        qc = ct_config(q);
    } else {
        qc = json_pack("{s:s, s:i, s:i, s:I, s:b, s:b, s:b, s:s, s:s}", "quant_method", "forge",
                       "format_version", FS_FORGE_FORMAT_VERSION, "bits", q->bits, "group_size",
                       (json_int_t)q->group_size, "sym", q->sym, "act_order", act,
                       "static_groups", stat, "meta", "qmeta4", "packing",
                       "little-endian bit stream along the input dimension");
    }
    if (qc && extra) json_object_update(qc, (json_t *)extra);
    return qc;
}

fs_status fs_out_finish(fs_ctx *ctx, fs_outckpt *o, const void *config, const char *src_dir,
                        const void *extra)
{
    fs_status rc = fs_out_seal(ctx, o);
    char from[4200], to[4400], fname[64];
    json_t *cfg = NULL, *index = NULL;
    char *text = NULL;
    if (rc != FS_OK) goto out;
    /* config.json with our quantization_config, tokenizer and generation files */
    cfg = config ? json_deep_copy((const json_t *)config) : json_object();
    json_t *qc = quant_config(o, (const json_t *)extra);
    if (!cfg || !qc || json_object_set_new(cfg, "quantization_config", qc) != 0) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "config.json");
        goto out;
    }
    text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (!text) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "config.json"); goto out; }
    if ((rc = write_file(ctx, o->dir, "config.json", text, strlen(text))) != FS_OK) goto out;
    for (int i = 0; src_dir && rc == FS_OK && fs_ckpt_side_files[i]; i++)
        rc = copy_file(ctx, src_dir, o->dir, fs_ckpt_side_files[i]);
    if (rc != FS_OK) goto out;
    if (o->nshards == 0) { rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s: no tensors were written", o->dir); goto out; }
    /* shards to their final names; the index (or the single shard) last */
    if (o->nshards == 1) {
        fs_out_partial_path(o, 1, from, sizeof from);
        snprintf(to, sizeof to, "%s/model.safetensors", o->dir);
        if (rename(from, to) != 0) rc = fs_ctx_err(ctx, FS_ERR_IO, "rename %s: %s", from, strerror(errno));
        goto out;
    }
    index = json_object();
    json_t *map = json_object();
    json_object_set_new(index, "metadata", json_pack("{s:I}", "total_size", (json_int_t)o->total_bytes));
    json_object_set_new(index, "weight_map", map);
    for (int s = 1; rc == FS_OK && s <= o->nshards; s++) {
        fs_out_partial_path(o, s, from, sizeof from);
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s, o->nshards);
        snprintf(to, sizeof to, "%s/%s", o->dir, fname);
        if (rename(from, to) != 0) rc = fs_ctx_err(ctx, FS_ERR_IO, "rename %s: %s", from, strerror(errno));
        fs_crashpoint(ctx, "finish-rename");
    }
    for (size_t i = 0; rc == FS_OK && i < o->nt; i++) {
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", o->tshard[i], o->nshards);
        json_object_set_new(map, o->tname[i], json_string(fname));
    }
    free(text);
    text = rc == FS_OK ? json_dumps(index, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (rc == FS_OK && !text) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "index");
    if (rc == FS_OK) rc = write_file(ctx, o->dir, "model.safetensors.index.json", text, strlen(text));
    if (rc == FS_OK) {                                  /* the renames themselves durable */
        int fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0) rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: fsync: %s", o->dir, strerror(errno));
        if (fd >= 0) close(fd);
    }
out:
    free(text);
    json_decref(cfg);
    json_decref(index);
    fs_out_abort(o);
    return rc;
}
