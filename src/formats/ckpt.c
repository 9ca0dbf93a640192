/* ckpt.c: opening a checkpoint folder (see ckpt.h for the rules it enforces).
 *
 * Invariants after fs_ckpt_open:
 *  1. Every shard is a regular file directly inside c->dir (or a symlink whose
 *     target resolves inside it, or, for a Hugging Face cache snapshot
 *     R/snapshots/REV, directly inside R/blobs) with a validated header.
 *  2. Every tensor name is in exactly one shard; with an index, the index and
 *     the shards agree exactly (no tensor missing, none extra).
 *  3. The name table holds every tensor; lookups never touch the disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "src/formats/ckpt.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define JSON_DEPTH_NOTE "jansson bounds nesting at 2048 levels"

const char *const fs_ckpt_side_files[] = {
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "generation_config.json", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", NULL,
};

/* Every side file present is a regular file of at most FS_CKPT_MAX_SIDE bytes. */
static fs_status check_side_files(fs_ctx *ctx, const char *dir)
{
    char path[PATH_MAX + 64];
    for (int i = 0; fs_ckpt_side_files[i]; i++) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, fs_ckpt_side_files[i]);
        if (lstat(path, &st) != 0) continue;                 /* optional */
        int fd = -1;
        uint64_t size = 0;
        fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, &size);
        if (rc != FS_OK) return rc;
        close(fd);
        if (size > FS_CKPT_MAX_SIDE)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %llu bytes, more than a tokenizer or generation file may "
                              "hold (%u)", path, (unsigned long long)size, FS_CKPT_MAX_SIDE);
    }
    return FS_OK;
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;            /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

const fs_ckpt_entry *fs_ckpt_find(const fs_ckpt *c, const char *name)
{
    if (!c->table) return NULL;
    for (size_t i = hash_name(name) & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
        uint32_t v = c->table[i];
        if (v == 0) return NULL;
        if (strcmp(c->entries[v - 1].t->name, name) == 0) return &c->entries[v - 1];
    }
}

void fs_ckpt_close(fs_ckpt *c)
{
    if (!c) return;
    for (int i = 0; i < c->nshards; i++) {
        fs_st_close(c->shards ? c->shards[i] : NULL);
        free(c->shard_names ? c->shard_names[i] : NULL);
    }
    free(c->shards);
    free(c->shard_names);
    free(c->entries);
    free(c->table);
    free(c->mem);
    free(c->read_xxh);
    free(c->read_seen);
    json_decref((json_t *)c->config);
    free(c->dir);
    free(c);
}

fs_status fs_json_load(fs_ctx *ctx, const char *path, uint64_t max, void **out)
{
    *out = NULL;
    int fd = -1;
    uint64_t size = 0;
    fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, &size);   /* never waits on a pipe */
    if (rc != FS_OK) return rc;
    if (size > max) {
        close(fd);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %llu bytes, more than the %llu a JSON file may hold here", path,
                          (unsigned long long)size, (unsigned long long)max);
    }
    json_error_t je;
    json_t *j = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);   /* JSON_DEPTH_NOTE */
    close(fd);
    if (!j) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: invalid JSON: %s (line %d)", path, je.text, je.line);
    if (!json_is_object(j)) {
        json_decref(j);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = j;
    return FS_OK;
}

/* A shard name from the index must be a plain file name in the folder. */
static fs_status check_shard_name(fs_ctx *ctx, const char *dir, const char *name)
{
    if (!*name || strchr(name, '/') || strchr(name, '\\') || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0 || strlen(name) > 255)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s/%s: shard names in the index must be plain file names inside the "
                          "model folder", dir, name);
    return FS_OK;
}

/* A Hugging Face cache snapshot: dir is R/snapshots/REV and its files are
 * links to R/blobs/HASH.  That exact shape, and nothing wider, is accepted. */
static int hf_blob(const char *dir, const char *real)
{
    const char *rev = strrchr(dir, '/');
    static const char snaps[] = "/snapshots";
    const size_t sl = sizeof snaps - 1;
    if (!rev || (size_t)(rev - dir) <= sl || strncmp(rev - sl, snaps, sl) != 0) return 0;
    const size_t rl = (size_t)(rev - dir) - sl;                 /* R = dir[0, rl) */
    if (strncmp(real, dir, rl) != 0 || strncmp(real + rl, "/blobs/", 7) != 0) return 0;
    const char *blob = real + rl + 7;
    return blob[0] != '\0' && blob[0] != '.' && !strchr(blob, '/');
}

/* Resolves dir/name and checks that it stays inside dir (symlinks included;
 * a Hugging Face cache snapshot's links into its blobs folder too). */
static fs_status shard_path(fs_ctx *ctx, const char *dir, const char *name, char **out)
{
    *out = NULL;
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) return fs_ctx_err(ctx, FS_ERR_NOMEM, "path");
    snprintf(p, n, "%s/%s", dir, name);
    char *real = realpath(p, NULL);
    if (!real) {
        int e = errno;                       /* a shard the index names but the folder lacks: bad input */
        fs_status rc = fs_ctx_err(ctx, fs_path_status(e) == FS_ERR_USAGE ? FS_ERR_FORMAT : FS_ERR_IO,
                                  "%s: %s (listed in the index)", p, strerror(e));
        free(p);
        return rc;
    }
    size_t dl = strlen(dir);
    int inside = strncmp(real, dir, dl) == 0 && real[dl] == '/' && !strchr(real + dl + 1, '/');
    if (!inside && !hf_blob(dir, real)) {
        fs_status rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: resolves to %s, outside the model folder "
                                  "(only a Hugging Face cache snapshot's links into its own ../../blobs are "
                                  "followed; copy the files to get a self-contained folder)",
                                  p, real);
        free(p);
        free(real);
        return rc;
    }
    free(real);
    *out = p;
    return FS_OK;
}

/* Adds a shard name not seen before (the caller deduplicates). */
static fs_status add_shard(fs_ctx *ctx, fs_ckpt *c, const char *name)
{
    if (c->nshards == FS_CKPT_MAX_SHARDS)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: more than %d shards", c->dir, FS_CKPT_MAX_SHARDS);
    fs_status rc = check_shard_name(ctx, c->dir, name);
    if (rc != FS_OK) return rc;
    char **nn = realloc(c->shard_names, sizeof(char *) * (size_t)(c->nshards + 1));
    if (!nn) return fs_ctx_err(ctx, FS_ERR_NOMEM, "shard list");
    c->shard_names = nn;
    fs_st_file **ns = realloc(c->shards, sizeof(fs_st_file *) * (size_t)(c->nshards + 1));
    if (!ns) return fs_ctx_err(ctx, FS_ERR_NOMEM, "shard list");
    c->shards = ns;
    c->shard_names[c->nshards] = strdup(name);
    c->shards[c->nshards] = NULL;
    if (!c->shard_names[c->nshards]) return fs_ctx_err(ctx, FS_ERR_NOMEM, "shard name");
    c->nshards++;
    return FS_OK;
}

static fs_status build_table(fs_ctx *ctx, fs_ckpt *c)
{
    size_t total = 0;
    for (int i = 0; i < c->nshards; i++) total += (size_t)c->shards[i]->ntensors;
    if (total > FS_CKPT_MAX_TENSORS)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %zu tensors (at most %d)", c->dir, total,
                          FS_CKPT_MAX_TENSORS);
    c->cap = 16;
    while (c->cap < 2 * total + 2) c->cap *= 2;
    c->entries = calloc(total + 1, sizeof *c->entries);
    c->table = calloc(c->cap, sizeof *c->table);
    if (!c->entries || !c->table) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tensor table");
    for (int s = 0; s < c->nshards; s++)
        for (int k = 0; k < c->shards[s]->ntensors; k++) {
            const fs_st_tensor *t = &c->shards[s]->tensors[k];
            const fs_ckpt_entry *dup = fs_ckpt_find(c, t->name);
            if (dup)
                return fs_ctx_err(ctx, FS_ERR_FORMAT, "tensor '%s' is present in two shards: %s and %s",
                                  t->name, c->shard_names[dup->shard], c->shard_names[s]);
            c->entries[c->ntensors] = (fs_ckpt_entry){t, s};
            size_t i = hash_name(t->name) & (c->cap - 1);
            while (c->table[i]) i = (i + 1) & (c->cap - 1);
            c->table[i] = (uint32_t)(++c->ntensors);
        }
    return FS_OK;
}

/* The index and the shards must agree exactly (invariant 2). */
static fs_status check_index(fs_ctx *ctx, fs_ckpt *c, json_t *map, const char *ipath)
{
    const char *name;
    json_t *v;
    size_t listed = 0;
    json_object_foreach(map, name, v) {
        const fs_ckpt_entry *e = fs_ckpt_find(c, name);
        const char *want = json_string_value(v);
        if (!e)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s' is listed for %s but is not in it",
                              ipath, name, want);
        if (strcmp(c->shard_names[e->shard], want) != 0)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s' is listed for %s but is in %s",
                              ipath, name, want, c->shard_names[e->shard]);
        listed++;
    }
    if (listed != c->ntensors)
        for (size_t i = 0; i < c->ntensors; i++)
            if (!json_object_get(map, c->entries[i].t->name))
                return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s/%s: tensor '%s' is not in the index %s",
                                  c->dir, c->shard_names[c->entries[i].shard],
                                  c->entries[i].t->name, ipath);
    return FS_OK;
}

static fs_status read_fp8_block(fs_ctx *ctx, fs_ckpt *c)
{
    json_t *qc = c->config ? json_object_get((json_t *)c->config, "quantization_config") : NULL;
    if (!qc) return FS_OK;
    json_t *m = json_object_get(qc, "quant_method");
    if (!json_is_string(m) || strcmp(json_string_value(m), "fp8") != 0) return FS_OK;
    json_t *b = json_object_get(qc, "weight_block_size");
    c->fp8_block[0] = c->fp8_block[1] = 128;                 /* DeepSeek's, when unsaid */
    if (!b) return FS_OK;
    if (!json_is_array(b) || json_array_size(b) != 2 || !json_is_integer(json_array_get(b, 0)) ||
        !json_is_integer(json_array_get(b, 1)) || json_integer_value(json_array_get(b, 0)) < 1 ||
        json_integer_value(json_array_get(b, 1)) < 1 ||
        json_integer_value(json_array_get(b, 0)) > 65536 ||
        json_integer_value(json_array_get(b, 1)) > 65536)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s/config.json: quantization_config.weight_block_size must be two "
                          "integers in 1..65536", c->dir);
    c->fp8_block[0] = (int)json_integer_value(json_array_get(b, 0));
    c->fp8_block[1] = (int)json_integer_value(json_array_get(b, 1));
    return FS_OK;
}

static fs_status open_dir(fs_ctx *ctx, fs_ckpt *c)
{
    char path[PATH_MAX + 64];
    fs_status rc = FS_OK;
    snprintf(path, sizeof path, "%s/config.json", c->dir);
    if (access(path, F_OK) == 0 && (rc = fs_json_load(ctx, path, FS_CKPT_MAX_JSON, &c->config)) != FS_OK) return rc;
    snprintf(path, sizeof path, "%s/%s", c->dir, INDEX_NAME);
    json_t *index = NULL, *map = NULL;
    if (access(path, F_OK) == 0) {
        void *ij = NULL;
        if ((rc = fs_json_load(ctx, path, FS_CKPT_MAX_JSON, &ij)) != FS_OK) return rc;
        index = ij;
        map = json_object_get(index, "weight_map");
        if (!json_is_object(map)) {
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no \"weight_map\" object", path);
            goto out;
        }
        const char *k;
        json_t *v, *seen = json_object();          /* a hash set of shard names */
        if (!seen) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "shard set"); goto out; }
        json_object_foreach(map, k, v) {
            if (!json_is_string(v)) {
                rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: weight_map['%s'] is not a file name", path, k);
                break;
            }
            if (json_object_get(seen, json_string_value(v))) continue;
            if (json_object_set_new(seen, json_string_value(v), json_true()) != 0) {
                rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "shard set");
                break;
            }
            if ((rc = add_shard(ctx, c, json_string_value(v))) != FS_OK) break;
        }
        json_decref(seen);
        if (rc != FS_OK) goto out;
        if (c->nshards == 0) { rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: empty weight_map", path); goto out; }
    } else {
        snprintf(path, sizeof path, "%s/%s", c->dir, SINGLE_NAME);
        if (access(path, F_OK) != 0)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: neither %s nor %s", c->dir, INDEX_NAME, SINGLE_NAME);
        if ((rc = add_shard(ctx, c, SINGLE_NAME)) != FS_OK) return rc;
    }
    for (int i = 0; i < c->nshards && rc == FS_OK; i++) {
        char *p = NULL;
        rc = shard_path(ctx, c->dir, c->shard_names[i], &p);
        if (rc == FS_OK) rc = fs_st_open(ctx, p, &c->shards[i]);
        free(p);
    }
    if (rc == FS_OK) rc = build_table(ctx, c);
    if (rc == FS_OK && map) {
        snprintf(path, sizeof path, "%s/%s", c->dir, INDEX_NAME);
        rc = check_index(ctx, c, map, path);
    }
    if (rc == FS_OK) rc = read_fp8_block(ctx, c);
    if (rc == FS_OK) rc = check_side_files(ctx, c->dir);
out:
    json_decref(index);
    return rc;
}

fs_status fs_ckpt_open(fs_ctx *ctx, const char *path, fs_ckpt **out)
{
    *out = NULL;
    fs_ckpt *c = calloc(1, sizeof *c);
    if (!c) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    struct stat st;
    fs_status rc;
    if (stat(path, &st) != 0) {
        rc = fs_ctx_err(ctx, fs_path_status(errno), "%s: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        c->dir = realpath(path, NULL);
        rc = c->dir ? open_dir(ctx, c) : fs_ctx_err(ctx, fs_path_status(errno), "%s: %s", path, strerror(errno));
    } else {
        /* one file: its folder is the "model folder", the file its only shard */
        char *real = realpath(path, NULL);
        char *slash = real ? strrchr(real, '/') : NULL;
        if (!real || !slash) {
            free(real);
            rc = fs_ctx_err(ctx, fs_path_status(errno), "%s: cannot resolve: %s", path, strerror(errno));
        } else {
            *slash = '\0';
            c->dir = strdup(real[0] ? real : "/");
            char *base = strdup(slash + 1);
            free(real);
            rc = (!c->dir || !base) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path) : FS_OK;
            if (rc == FS_OK) rc = add_shard(ctx, c, base);
            if (rc == FS_OK) rc = fs_st_open(ctx, path, &c->shards[0]);
            if (rc == FS_OK) rc = build_table(ctx, c);
            free(base);
        }
    }
    if (rc != FS_OK) {
        fs_ckpt_close(c);
        return rc;
    }
    *out = c;
    return FS_OK;
}

fs_status fs_ckpt_log_reads(fs_ctx *ctx, fs_ckpt *c)
{
    c->read_xxh = calloc(c->ntensors + 1, sizeof *c->read_xxh);
    c->read_seen = calloc(c->ntensors + 1, 1);
    if (!c->read_xxh || !c->read_seen) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: read log", c->dir);
    return FS_OK;
}

fs_status fs_ckpt_read_raw(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e, void *dst)
{
    const size_t i = (size_t)(e - c->entries);
    fs_status rc = FS_OK;
    if (c->mem && c->mem[i]) memcpy(dst, c->mem[i], (size_t)e->t->nbytes);    /* prefetched */
    else rc = fs_st_read(ctx, c->shards[e->shard], e->t, dst);
    if (rc == FS_OK && c->read_xxh) {            /* the bytes the run used, for the journal */
        c->read_xxh[i] = XXH3_64bits(dst, (size_t)e->t->nbytes);
        __atomic_store_n(&c->read_seen[i], 1, __ATOMIC_RELEASE);
    }
    return rc;
}

const fs_ckpt_entry *fs_ckpt_scale_of(const fs_ckpt *c, const char *name)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s_scale_inv", name) >= (int)sizeof buf) return NULL;
    return fs_ckpt_find(c, buf);
}

int fs_ckpt_is_scale(const fs_ckpt *c, const char *name)
{
    size_t n = strlen(name), k = strlen("_scale_inv");
    if (n <= k || strcmp(name + n - k, "_scale_inv") != 0) return 0;
    char buf[1024];
    if (n - k >= sizeof buf) return 0;
    memcpy(buf, name, n - k);
    buf[n - k] = '\0';
    const fs_ckpt_entry *w = fs_ckpt_find(c, buf);
    return w && w->t->dtype == FS_DT_F8_E4M3;
}

/* A float tensor through fs_ckpt_read_raw (so prefetched bytes are used), decoded. */
static fs_status read_f32_entry(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e, float **out)
{
    const fs_st_tensor *t = e->t;
    *out = NULL;
    if (t->dtype != FS_DT_F32 && t->dtype != FS_DT_F16 && t->dtype != FS_DT_BF16)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: tensor '%s': dtype %s is not a float dtype",
                          c->shard_names[e->shard], t->name, fs_dtype_name(t->dtype));
    float *dst = fs_alloc2((size_t)t->nelem, sizeof(float));
    void *raw = t->dtype == FS_DT_F32 ? (void *)dst : malloc(t->nbytes ? (size_t)t->nbytes : 1);
    if (!dst || !raw) {
        free(dst);
        if (raw != dst) free(raw);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "tensor '%s'", t->name);
    }
    fs_status rc = fs_ckpt_read_raw(ctx, c, e, raw);
    if (rc == FS_OK) {
        char what[1200];
        snprintf(what, sizeof what, "%s: tensor '%s'", c->shard_names[e->shard], t->name);
        rc = fs_decode_f32(ctx, what, t->dtype, raw, (size_t)t->nelem, dst);
    }
    if (raw != dst) free(raw);
    if (rc != FS_OK) { free(dst); return rc; }
    *out = dst;
    return FS_OK;
}

fs_status fs_ckpt_check_fp8(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e)
{
    const fs_st_tensor *t = e->t;
    const char *sh = c->shard_names[e->shard];
    const fs_ckpt_entry *se = fs_ckpt_scale_of(c, t->name);
    if (!se)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: F8_E4M3 tensor '%s' has no '%s_scale_inv'", sh,
                          t->name, t->name);
    if (t->ndim != 2)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: F8_E4M3 tensor '%s' is not 2-D", sh, t->name);
    const int64_t rows = t->shape[0], cols = t->shape[1];
    const int b0 = c->fp8_block[0] ? c->fp8_block[0] : 128, b1 = c->fp8_block[1] ? c->fp8_block[1] : 128;
    const int64_t sr = (rows + b0 - 1) / b0, scn = (cols + b1 - 1) / b1;
    const fs_st_tensor *s = se->t;
    if (s->ndim != 2 || s->shape[0] != sr || s->shape[1] != scn ||
        (s->dtype != FS_DT_F32 && s->dtype != FS_DT_BF16))
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: scale '%s' is %s %s[%lld, %lld] but weight [%lld, %lld] with "
                          "%dx%d blocks needs F32 or BF16 [%lld, %lld]",
                          c->shard_names[se->shard], s->name, fs_dtype_name(s->dtype),
                          s->ndim == 2 ? "" : "(not 2-D) ", (long long)(s->ndim > 0 ? s->shape[0] : 0),
                          (long long)(s->ndim > 1 ? s->shape[1] : 0), (long long)rows,
                          (long long)cols, b0, b1, (long long)sr, (long long)scn);
    return FS_OK;
}

/* FP8 dequantization with the weight's block scales (ARCHITECTURES.md §6). */
static fs_status read_fp8(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e, float **out)
{
    const fs_st_tensor *t = e->t;
    const char *sh = c->shard_names[e->shard];
    fs_status rc0 = fs_ckpt_check_fp8(ctx, c, e);
    if (rc0 != FS_OK) return rc0;
    const fs_ckpt_entry *se = fs_ckpt_scale_of(c, t->name);
    const int64_t rows = t->shape[0], cols = t->shape[1];
    const int b0 = c->fp8_block[0] ? c->fp8_block[0] : 128, b1 = c->fp8_block[1] ? c->fp8_block[1] : 128;
    const int64_t scn = (cols + b1 - 1) / b1;
    float *S = NULL;
    fs_status rc = read_f32_entry(ctx, c, se, &S);
    if (rc != FS_OK) return rc;
    uint8_t *q = malloc(t->nbytes ? (size_t)t->nbytes : 1);
    float *W = fs_alloc2((size_t)t->nelem, sizeof(float));
    if (!q || !W) {
        free(S); free(q); free(W);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: tensor '%s'", sh, t->name);
    }
    rc = fs_ckpt_read_raw(ctx, c, e, q);
    for (int64_t r = 0; rc == FS_OK && r < rows; r++)
        for (int64_t k = 0; k < cols; k++) {
            float v = fs_f8e4m3_to_f32(q[r * cols + k]);
            if (v != v) {
                rc = fs_ctx_err(ctx, FS_ERR_NUMERIC, "%s: tensor '%s': NaN at flat index %lld", sh,
                                t->name, (long long)(r * cols + k));
                break;
            }
            double w = (double)v * (double)S[(r / b0) * scn + k / b1];
            if (!(fabs(w) <= FLT_MAX)) {           /* a huge scale: the float would be Inf */
                rc = fs_ctx_err(ctx, FS_ERR_NUMERIC, "%s: tensor '%s': Inf at flat index %lld (its scale %g)", sh,
                                t->name, (long long)(r * cols + k), (double)S[(r / b0) * scn + k / b1]);
                break;
            }
            W[r * cols + k] = (float)w;
        }
    free(S);
    free(q);
    if (rc != FS_OK) { free(W); return rc; }
    *out = W;
    return FS_OK;
}

fs_status fs_ckpt_read_f32(fs_ctx *ctx, const fs_ckpt *c, const char *name, float **out)
{
    *out = NULL;
    const fs_ckpt_entry *e = fs_ckpt_find(c, name);
    if (!e) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: no tensor '%s'", c->dir, name);
    if (e->t->dtype == FS_DT_F8_E4M3) return read_fp8(ctx, c, e, out);
    return read_f32_entry(ctx, c, e, out);
}
