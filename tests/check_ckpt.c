/* check_ckpt.c: the checkpoint folder reader (ckpt.h), the model description
 * built from config.json (model.h) and the output folder's refusal rules
 * (fs_out_open).
 *
 * Checkpoints come from tools/gen-tiny ($FS_GEN_TINY) and are then broken on
 * purpose: shards removed, cut or rewritten (through the project's
 * safetensors writer, or by editing the header JSON here), the index and
 * config.json edited with jansson.  Expected values are derived here from
 * config.json and from the raw bytes (the E4M3 decoder and the linear counts
 * are written in this file), never taken from the code under test.
 *
 * Cases that may crash the process (hostile config sizes) run in a forked
 * child, so that `make test-asan` (CK_FORK=no) reports them as failures
 * instead of dying. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/util.h"
#include "src/formats/ckpt.h"
#include "src/models/model.h"
#include "src/formats/outckpt.h"


#define INDEX "model.safetensors.index.json"
#define FP8_BLOCK 128            /* DeepSeek's weight_block_size, what gen-tiny writes */
#define FUZZ_ITERS 10000         /* mutated checkpoints opened by the fuzz test */
#define FUZZ_SEED 0xc4e7f022ull
#define DEEP_LEVELS 100000       /* nesting of the deep-JSON cases */
#define HUGE_LEN (1ull << 62)    /* a shard header length no file can have */
/* E4M3 rounding: half a step is 2^-4 of a normal value; subnormals step by
 * 2^-9, so half a step is 2^-10 (times the block scale). */
#define E4M3_HALF_REL 0.0625
#define E4M3_HALF_SUB 0x1p-10
#define CHILD_MEM_MB 1024        /* address space a config-only case may add */
#define CHILD_SECONDS 60         /* and its wall-clock bound */
#define MANY_SHARDS 65536        /* FS_CKPT_MAX_SHARDS distinct names in an index */
#define MANY_ENTRIES 70000       /* index entries over them */
#define MANY_SECONDS 30.0        /* a guard against quadratic work (minutes before the fix), not a speed figure: jansson parses the 10 MB in well under 1 s, and a loaded 2-core machine took 4 s */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1             /* address-space limits break the sanitizer's shadow */
#else
#define UNDER_ASAN 0
#endif

/* ---- helpers -------------------------------------------------------------- */

static char *path2(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(fp, 0, SEEK_END), 0);
    long sz = ftell(fp);
    ck_assert(sz >= 0);
    rewind(fp);
    uint8_t *b = malloc((size_t)sz + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    b[sz] = 0;
    *n = (size_t)sz;
    return b;
}

static void write_all(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "cannot create %s", path);
    if (n) ck_assert_uint_eq(fwrite(buf, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void set_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Overwrites path in place (no truncation to 0 first: ext4 flushes such
 * rewrites at close, which would make the fuzz test I/O bound). */
static void write_in_place(const char *path, const void *buf, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    size_t off = 0;
    while (off < n) {
        ssize_t w = pwrite(fd, (const char *)buf + off, n - off, (off_t)off);
        ck_assert_msg(w > 0, "%s: %s", path, strerror(errno));
        off += (size_t)w;
    }
    ck_assert_int_eq(ftruncate(fd, (off_t)n), 0);
    ck_assert_int_eq(close(fd), 0);
}

static int file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* The generator, or NULL with one line on stdout (the test then passes empty). */
static const char *gen_tiny(void)
{
    const char *g = getenv("FS_GEN_TINY");
    if (g && *g) return g;
    printf("check_ckpt: FS_GEN_TINY unset, test skipped (run via make test)\n");
    fflush(stdout);
    return NULL;
}

/* gen-tiny --out out ARGS; out must not exist or be empty. */
static void gen(const char *out, const char *args)
{
    int st = t_gen_tiny(out, "%s", args);
    ck_assert_msg(st == 0, "gen-tiny failed (%d): --out %s %s", st, out, args);
}

static json_t *load_json(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    ck_assert_msg(j != NULL, "%s: %s", path, je.text);
    return j;
}

static void save_json(const char *path, json_t *j)       /* steals j */
{
    ck_assert_int_eq(json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
    json_decref(j);
}

/* Sets (val != NULL, stolen) or deletes config.json's key. */
static void edit_config(const char *m, const char *key, json_t *val)
{
    char *p = path2(m, "config.json");
    json_t *c = load_json(p);
    if (val) json_object_set_new(c, key, val);
    else json_object_del(c, key);
    save_json(p, c);
    free(p);
}

/* Shard file name of tensor `name` in the index of folder m (copied to out). */
static void shard_of(const char *m, const char *name, char *out, size_t n)
{
    char *p = path2(m, INDEX);
    json_t *idx = load_json(p);
    const char *s = json_string_value(json_object_get(json_object_get(idx, "weight_map"), name));
    ck_assert_msg(s != NULL, "%s not in the index", name);
    snprintf(out, n, "%s", s);
    json_decref(idx);
    free(p);
}

/* Rewrites every index entry naming shard `from` to name `to`. */
static void index_rename_shard(const char *m, const char *from, const char *to)
{
    char *p = path2(m, INDEX);
    json_t *idx = load_json(p), *wm = json_object_get(idx, "weight_map");
    const char *k;
    json_t *v;
    int n = 0;
    json_object_foreach(wm, k, v)
        if (!strcmp(json_string_value(v), from)) {
            json_string_set(v, to);
            n++;
        }
    ck_assert_int_gt(n, 0);
    save_json(p, idx);
    free(p);
}

/* Sets (val != NULL, stolen) or deletes weight_map[name]. */
static void index_set(const char *m, const char *name, json_t *val)
{
    char *p = path2(m, INDEX);
    json_t *idx = load_json(p), *wm = json_object_get(idx, "weight_map");
    if (val) json_object_set_new(wm, name, val);
    else ck_assert_int_eq(json_object_del(wm, name), 0);
    save_json(p, idx);
    free(p);
}

/* A tensor to put into a rewritten shard. */
typedef struct xtensor {
    const char *name;
    fs_dtype dt;
    int ndim;
    int64_t shape[2];
    const void *data;
} xtensor;

/* Rewrites shard path through the project's writer: every tensor but `drop`
 * and those named in add[], then add[]. */
static void rewrite_shard(const char *path, const char *drop, const xtensor *add, int nadd)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *f = NULL;
    ck_assert_msg(fs_st_open(&ctx, path, &f) == FS_OK, "%s", ctx.errmsg);
    fs_st_writer *w = NULL;
    ck_assert(fs_st_writer_new(&ctx, path, &w) == FS_OK);
    void **bufs = calloc((size_t)f->ntensors + 1, sizeof *bufs);
    int dropped = 0;
    for (int i = 0; i < f->ntensors; i++) {
        const fs_st_tensor *t = &f->tensors[i];
        int skip = drop && !strcmp(t->name, drop);
        for (int k = 0; k < nadd; k++) skip |= !strcmp(t->name, add[k].name);
        if (skip) { dropped++; continue; }
        bufs[i] = malloc(t->nbytes + 1);
        ck_assert(fs_st_read(&ctx, f, t, bufs[i]) == FS_OK);
        ck_assert(fs_st_writer_add(&ctx, w, t->name, t->dtype, t->ndim, t->shape, bufs[i]) == FS_OK);
    }
    if (drop) ck_assert_msg(dropped > 0, "%s not in %s", drop, path);
    for (int k = 0; k < nadd; k++)
        ck_assert_msg(fs_st_writer_add(&ctx, w, add[k].name, add[k].dt, add[k].ndim, add[k].shape,
                                       add[k].data) == FS_OK, "%s", ctx.errmsg);
    ck_assert(fs_st_writer_meta(&ctx, w, "format", "pt") == FS_OK);
    ck_assert_msg(fs_st_writer_commit(&ctx, w) == FS_OK, "%s", ctx.errmsg);
    for (int i = 0; i < f->ntensors; i++) free(bufs[i]);
    free(bufs);
    fs_st_close(f);
}

/* Raw bytes of tensor `name` of shard path (malloc'ed), with its description. */
static void *shard_tensor(const char *path, const char *name, fs_dtype *dt, int *ndim,
                          int64_t shape[2])
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *f = NULL;
    ck_assert_msg(fs_st_open(&ctx, path, &f) == FS_OK, "%s", ctx.errmsg);
    const fs_st_tensor *t = fs_st_find(f, name);
    ck_assert_msg(t != NULL, "%s not in %s", name, path);
    void *b = malloc(t->nbytes + 1);
    ck_assert(fs_st_read(&ctx, f, t, b) == FS_OK);
    *dt = t->dtype;
    *ndim = t->ndim;
    shape[0] = t->shape[0];
    shape[1] = t->ndim > 1 ? t->shape[1] : 0;
    fs_st_close(f);
    return b;
}

/* Edits a shard's header JSON by hand: the u64 length, then jansson; fn
 * changes the parsed header; the data buffer is written back unchanged. */
static void edit_header(const char *path, void (*fn)(json_t *hdr, uint64_t ndata))
{
    size_t n;
    uint8_t *buf = read_all(path, &n);
    uint64_t hl = le64(buf);
    ck_assert(hl + 8 <= n);
    json_error_t je;
    json_t *h = json_loadb((const char *)buf + 8, (size_t)hl, 0, &je);
    ck_assert_msg(h != NULL, "%s", je.text);
    fn(h, n - 8 - hl);
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t tl = strlen(text);
    uint8_t *out = malloc(8 + tl + (n - 8 - hl) + 1);
    set_le64(out, tl);
    memcpy(out + 8, text, tl);
    memcpy(out + 8 + tl, buf + 8 + hl, n - 8 - hl);
    write_all(path, out, 8 + tl + (n - 8 - hl));
    free(out);
    free(text);
    json_decref(h);
    free(buf);
}

/* ---- the pipeline: open, describe, check, read ------------------------------ */

enum stage { AT_OPEN, AT_MODEL, AT_READ, AT_CHECK, AT_RAW, AT_NONE };
static const char *const stage_name[] = {"fs_ckpt_open", "fs_model_from_config",
                                         "fs_ckpt_read_f32", "fs_model_check",
                                         "fs_ckpt_read_raw", "nothing (all succeeded)"};

typedef struct outcome {
    int stage;               /* where it stopped (AT_NONE: everything succeeded) */
    fs_status rc;
    int out_null;            /* the failing call left its *out NULL */
    int ctx_err;             /* ctx.err equals the returned status */
    int nlayers, nmtp;       /* of the model, when one was built */
    char errmsg[1024];
} outcome;

/* Opens folder m; builds the model; reads `target` with fs_ckpt_read_f32
 * (if not NULL); checks the model; reads every tensor raw and compares it
 * with the file's bytes. */
static void pipeline(const char *m, const char *target, outcome *o)
{
    memset(o, 0, sizeof *o);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    char where[4200];
    snprintf(where, sizeof where, "%s/config.json", m);
    fs_ckpt *c = (fs_ckpt *)&ctx, *cp = NULL;       /* *out must come back NULL on error */
    fs_model *md = (fs_model *)&ctx, *mp = NULL;
    o->stage = AT_OPEN;
    o->rc = fs_ckpt_open(&ctx, m, &c);
    o->out_null = c == NULL;
    if (o->rc != FS_OK) goto done;
    cp = c;
    o->stage = AT_MODEL;
    o->rc = fs_model_from_config(&ctx, c->config, where, &md);
    o->out_null = md == NULL;
    if (o->rc != FS_OK) goto done;
    mp = md;
    o->nlayers = md->nlayers;
    o->nmtp = md->nmtp;
    o->stage = AT_READ;
    if (target) {
        float *w = (float *)&ctx;
        o->rc = fs_ckpt_read_f32(&ctx, c, target, &w);
        o->out_null = w == NULL;
        if (o->rc == FS_OK) free(w);
        else goto done;
    }
    o->stage = AT_CHECK;
    o->rc = fs_model_check(&ctx, md, c);
    if (o->rc != FS_OK) goto done;
    o->stage = AT_RAW;
    for (size_t i = 0; i < c->ntensors; i++) {
        const fs_ckpt_entry *e = &c->entries[i];
        uint8_t *b = malloc(e->t->nbytes + 1);
        o->rc = fs_ckpt_read_raw(&ctx, c, e, b);
        if (o->rc == FS_OK) {                       /* the same bytes as the file holds */
            FILE *fp = fopen(c->shards[e->shard]->path, "rb");
            uint8_t *b2 = malloc(e->t->nbytes + 1);
            int same = fp && fseek(fp, (long)e->t->offset, SEEK_SET) == 0 &&
                       fread(b2, 1, e->t->nbytes, fp) == e->t->nbytes &&
                       memcmp(b, b2, e->t->nbytes) == 0;
            if (fp) fclose(fp);
            free(b2);
            if (!same) {
                o->rc = FS_ERR_CORRUPT;
                snprintf(ctx.errmsg, sizeof ctx.errmsg, "TEST: %s read back differently", e->t->name);
                ctx.err = o->rc;
            }
        }
        free(b);
        if (o->rc != FS_OK) goto done;
    }
    o->stage = AT_NONE;
done:
    o->ctx_err = ctx.err == o->rc;
    snprintf(o->errmsg, sizeof o->errmsg, "%s", ctx.errmsg);
    fs_model_free(mp);
    fs_ckpt_close(cp);
}

/* The pipeline in a child process: a crash (signal, sanitizer exit) becomes
 * o->stage = -1 with the cause in errmsg. */
static void pipeline_isolated(const char *m, const char *target, int limit, outcome *o)
{
    int fd[2];
    ck_assert_int_eq(pipe(fd), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fd[0]);
        if (limit) {                       /* current size + CHILD_MEM_MB, and a time bound */
            unsigned long pages = 0;
            FILE *fp = fopen("/proc/self/statm", "r");
            if (!fp || fscanf(fp, "%lu", &pages) != 1) _exit(4);
            fclose(fp);
            struct rlimit rl;
            rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) +
                                        ((rlim_t)CHILD_MEM_MB << 20);
            if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(4);
            alarm(CHILD_SECONDS);
        }
        outcome r;
        pipeline(m, target, &r);
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 3);
    }
    close(fd[1]);
    memset(o, 0, sizeof *o);
    size_t got = 0;
    while (got < sizeof *o) {
        ssize_t r = read(fd[0], (char *)o + got, sizeof *o - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd[0]);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    if (got != sizeof *o || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        o->stage = -1;
        snprintf(o->errmsg, sizeof o->errmsg, "the child crashed (%s %d)",
                 WIFSIGNALED(st) ? "signal" : "exit status",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    }
}

/* ---- 1. valid checkpoints of the nine families ------------------------------ */

static const char *const families[] = {"llama", "mistral", "qwen2", "qwen3", "mixtral",
                                       "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"};
#define NFAM ((int)(sizeof families / sizeof families[0]))

static int64_t jint(const json_t *c, const char *key, int64_t def)
{
    json_t *v = json_object_get(c, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

static int in_array(const json_t *a, int64_t x)
{
    for (size_t i = 0; json_is_array(a) && i < json_array_size(a); i++)
        if (json_integer_value(json_array_get(a, i)) == x) return 1;
    return 0;
}

/* Quantizable linears of one decoder layer (ARCHITECTURES.md §3-§7). */
static int64_t linears_of_layer(const json_t *c, const char *type, int64_t l)
{
    const int64_t attn_std = 4;                          /* q, k, v, o */
    const int64_t mlp = 3;                               /* gate, up, down */
    if (!strcmp(type, "llama") || !strcmp(type, "mistral") || !strcmp(type, "qwen2") ||
        !strcmp(type, "qwen3"))
        return attn_std + mlp;
    if (!strcmp(type, "mixtral")) return attn_std + mlp * jint(c, "num_local_experts", 8);
    if (!strcmp(type, "qwen2_moe") || !strcmp(type, "qwen3_moe")) {
        int64_t E = jint(c, "num_experts", 0), step = jint(c, "decoder_sparse_step", 1);
        int sparse = !in_array(json_object_get(c, "mlp_only_layers"), l) && E > 0 &&
                     (l + 1) % step == 0;
        if (!sparse) return attn_std + mlp;
        int64_t shared = !strcmp(type, "qwen2_moe") && jint(c, "shared_expert_intermediate_size", 0) > 0;
        return attn_std + mlp * E + mlp * shared;
    }
    /* deepseek: q_a, kv_a, q_b, kv_b, o (or q_proj, kv_a, kv_b, o) */
    json_t *q = json_object_get(c, "q_lora_rank");
    int64_t attn = (q && !json_is_null(q)) ? 5 : 4;
    int moe = l >= jint(c, "first_k_dense_replace", 0) && l % jint(c, "moe_layer_freq", 1) == 0;
    if (!moe) return attn + mlp;
    return attn + mlp * jint(c, "n_routed_experts", 0) + (jint(c, "n_shared_experts", 0) > 0 ? mlp : 0);
}

/* Linear weights found in the checkpoint by name (decoder layers below L). */
static int64_t linears_in_ckpt(const fs_ckpt *c, int64_t L)
{
    int64_t n = 0;
    for (size_t i = 0; i < c->ntensors; i++) {
        const char *s = c->entries[i].t->name;
        int l = -1, at = 0;
        if (sscanf(s, "model.layers.%d.%n", &l, &at) != 1 || at == 0 || l < 0 || l >= L) continue;
        size_t k = strlen(s);
        int is_lin = (k > 12 && !strcmp(s + k - 12, "_proj.weight")) ||
                     (k > 11 && !strcmp(s + k - 11, "_mqa.weight")) || strstr(s, ".w1.weight") ||
                     strstr(s, ".w2.weight") || strstr(s, ".w3.weight");
        if (is_lin) {
            ck_assert_int_eq(c->entries[i].t->ndim, 2);
            n++;
        }
    }
    return n;
}

START_TEST(test_families)
{
    if (!gen_tiny()) return;
    const char *fam = families[_i];
    char *root = t_tmpdir(), *m = path2(root, "m");
    char args[256];
    snprintf(args, sizeof args, "--type %s --shards 3%s", fam,
             !strcmp(fam, "deepseek_v3") ? " --mtp" : "");
    gen(m, args);

    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *c = NULL;
    ck_assert_msg(fs_ckpt_open(&ctx, m, &c) == FS_OK, "%s: %s", fam, ctx.errmsg);
    ck_assert_int_eq(c->nshards, 3);
    ck_assert_ptr_nonnull(c->config);
    fs_model *md = NULL;
    ck_assert_msg(fs_model_from_config(&ctx, c->config, "config.json", &md) == FS_OK, "%s: %s", fam,
                  ctx.errmsg);
    ck_assert_msg(fs_model_check(&ctx, md, c) == FS_OK, "%s: %s", fam, ctx.errmsg);

    char *cp = path2(m, "config.json");
    json_t *cfg = load_json(cp);
    const char *type = json_string_value(json_object_get(cfg, "model_type"));
    ck_assert_str_eq(type, fam);
    int64_t L = jint(cfg, "num_hidden_layers", -1), want = 0;
    for (int64_t l = 0; l < L; l++) want += linears_of_layer(cfg, type, l);
    ck_assert_int_eq(md->nlayers, L);
    int64_t got = 0;
    for (int l = 0; l < md->nlayers; l++) {
        got += md->layers[l].nlin;
        for (int i = 0; i < md->layers[l].nlin; i++) {   /* every linear is in the checkpoint */
            char w[600];
            snprintf(w, sizeof w, "%s.weight", md->layers[l].lin[i].name);
            const fs_ckpt_entry *e = fs_ckpt_find(c, w);
            ck_assert_msg(e != NULL, "%s: %s not in the checkpoint", fam, w);
            ck_assert_int_eq(e->t->shape[0], md->layers[l].lin[i].out);
            ck_assert_int_eq(e->t->shape[1], md->layers[l].lin[i].in);
        }
    }
    ck_assert_msg(got == want, "%s: %lld linears described, %lld expected from config.json", fam,
                  (long long)got, (long long)want);
    ck_assert_msg(linears_in_ckpt(c, L) == want, "%s: %lld linear weights in the checkpoint, %lld expected",
                  fam, (long long)linears_in_ckpt(c, L), (long long)want);
    int64_t mtp = jint(cfg, "num_nextn_predict_layers", 0);
    ck_assert_int_eq(md->nmtp, mtp);
    if (!strcmp(fam, "deepseek_v3")) {
        ck_assert_int_eq(md->nmtp, 1);
        ck_assert_int_eq(md->layers[L].mtp, 1);
        ck_assert_int_eq(md->layers[L].nlin, 0);           /* copied through, never quantized */
        char w[64];
        snprintf(w, sizeof w, "model.layers.%lld.eh_proj.weight", (long long)L);
        ck_assert_ptr_nonnull(fs_ckpt_find(c, w));
    }
    json_decref(cfg);
    free(cp);
    fs_model_free(md);
    fs_ckpt_close(c);
    free(m);
    t_rmdir(root);
    free(root);
}
END_TEST

/* One shard and no index: the folder and the file itself both open. */
START_TEST(test_single_file)
{
    if (!gen_tiny()) return;
    char *root = t_tmpdir(), *m = path2(root, "m");
    gen(m, "--type qwen3 --shards 1");
    char *f = path2(m, "model.safetensors");
    char *ip = path2(m, INDEX);
    ck_assert(!file_exists(ip));
    free(ip);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *c = NULL;
    ck_assert_msg(fs_ckpt_open(&ctx, m, &c) == FS_OK, "%s", ctx.errmsg);
    ck_assert_int_eq(c->nshards, 1);
    size_t n = c->ntensors;
    fs_model *md = NULL;
    ck_assert(fs_model_from_config(&ctx, c->config, "config.json", &md) == FS_OK);
    ck_assert_msg(fs_model_check(&ctx, md, c) == FS_OK, "%s", ctx.errmsg);
    fs_model_free(md);
    fs_ckpt_close(c);
    ck_assert_msg(fs_ckpt_open(&ctx, f, &c) == FS_OK, "%s", ctx.errmsg);
    ck_assert_int_eq(c->nshards, 1);
    ck_assert_uint_eq(c->ntensors, n);
    ck_assert_ptr_nonnull(fs_ckpt_find(c, "model.norm.weight"));
    ck_assert_ptr_null(fs_ckpt_find(c, "model.norm.bias"));
    fs_ckpt_close(c);
    free(f);
    free(m);
    t_rmdir(root);
    free(root);
}
END_TEST

/* ---- 2. FP8 block dequantization ----------------------------------------------- */

/* E4M3FN (ARCHITECTURES.md §6): sign, 4 exponent bits (bias 7), 3 mantissa bits. */
static double e4m3(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    if (e == 15 && m == 7) return NAN;
    double v = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

static float f32_le(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

START_TEST(test_fp8_dequant)
{
    if (!gen_tiny()) return;
    char *root = t_tmpdir(), *m = path2(root, "m"), *ref = path2(root, "ref");
    gen(m, "--type deepseek_v3 --mtp");
    gen(ref, "--type deepseek_v3 --mtp --no-fp8 --dtype f32 --hidden 160");   /* master weights */
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *c = NULL, *r = NULL;
    ck_assert_msg(fs_ckpt_open(&ctx, m, &c) == FS_OK, "%s", ctx.errmsg);
    ck_assert_msg(fs_ckpt_open(&ctx, ref, &r) == FS_OK, "%s", ctx.errmsg);
    ck_assert_int_eq(c->fp8_block[0], FP8_BLOCK);
    ck_assert_int_eq(c->fp8_block[1], FP8_BLOCK);
    int nfp8 = 0, ragged = 0, multi = 0, cross = 0;
    for (size_t i = 0; i < c->ntensors; i++) {
        const fs_ckpt_entry *e = &c->entries[i];
        if (e->t->dtype != FS_DT_F8_E4M3) continue;
        nfp8++;
        const char *name = e->t->name;
        ck_assert_int_eq(e->t->ndim, 2);
        const int64_t rows = e->t->shape[0], cols = e->t->shape[1];
        const int64_t sr = (rows + FP8_BLOCK - 1) / FP8_BLOCK, sc = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
        char sname[600];
        snprintf(sname, sizeof sname, "%s_scale_inv", name);
        const fs_ckpt_entry *se = fs_ckpt_find(c, sname);
        ck_assert_msg(se != NULL, "%s has no scale", name);
        ck_assert_ptr_eq(fs_ckpt_scale_of(c, name), se);
        ck_assert_int_eq(fs_ckpt_is_scale(c, sname), 1);
        ck_assert_int_eq(fs_ckpt_is_scale(c, name), 0);
        ck_assert_int_eq(se->t->dtype, FS_DT_F32);
        ck_assert_int_eq(se->t->ndim, 2);
        ck_assert_int_eq(se->t->shape[0], sr);
        ck_assert_int_eq(se->t->shape[1], sc);
        ragged += rows % FP8_BLOCK != 0 || cols % FP8_BLOCK != 0;
        multi += (rows % FP8_BLOCK != 0 && sr > 1) || (cols % FP8_BLOCK != 0 && sc > 1);
        cross += se->shard != e->shard;

        uint8_t *q = malloc((size_t)(rows * cols) + 1), *s = malloc((size_t)(sr * sc * 4) + 1);
        ck_assert(fs_ckpt_read_raw(&ctx, c, e, q) == FS_OK);
        ck_assert(fs_ckpt_read_raw(&ctx, c, se, s) == FS_OK);
        float *W = NULL, *M = NULL;
        ck_assert_msg(fs_ckpt_read_f32(&ctx, c, name, &W) == FS_OK, "%s", ctx.errmsg);
        ck_assert_msg(fs_ckpt_read_f32(&ctx, r, name, &M) == FS_OK, "%s", ctx.errmsg);
        for (int64_t y = 0; y < rows; y++)
            for (int64_t x = 0; x < cols; x++) {
                double S = (double)f32_le(s + 4 * ((y / FP8_BLOCK) * sc + x / FP8_BLOCK));
                float want = (float)(e4m3(q[y * cols + x]) * S);
                float got = W[y * cols + x];
                ck_assert_msg(memcmp(&want, &got, 4) == 0, "%s[%lld, %lld]: %a, want %a", name,
                              (long long)y, (long long)x, (double)got, (double)want);
                /* and it is the master weight to E4M3 precision: S multiplies */
                double err = fabs((double)got - (double)M[y * cols + x]);
                double tol = fmax(fabs((double)M[y * cols + x]) * E4M3_HALF_REL, S * E4M3_HALF_SUB) * 1.001;
                ck_assert_msg(err <= tol, "%s[%lld, %lld]: %g vs master %g", name, (long long)y,
                              (long long)x, (double)got, (double)M[y * cols + x]);
            }
        free(W);
        free(M);
        free(q);
        free(s);
    }
    ck_assert_int_gt(nfp8, 10);
    ck_assert_int_gt(ragged, 0);    /* dims not multiples of 128 */
    ck_assert_int_gt(multi, 0);     /* a partial block after a full one */
    ck_assert_int_gt(cross, 0);     /* a weight and its scale in different shards */
    fs_ckpt_close(c);
    fs_ckpt_close(r);
    free(m);
    free(ref);
    t_rmdir(root);
    free(root);
}
END_TEST

/* ---- 3 and 4. bad and hostile input ----------------------------------------------- */

typedef struct needles {
    char s[4][512];          /* the error message must contain each non-empty one */
    char target[512];        /* read with fs_ckpt_read_f32 (else every tensor raw) */
} needles;

typedef struct bad_case {
    const char *desc;
    const char *gen;         /* gen-tiny arguments */
    void (*make)(const char *root, const char *m, needles *nd);
    int at;                  /* the stage that must fail (AT_NONE: must all succeed) */
    fs_status want;          /* FS_OK: any error status */
    int isolate;             /* run in a child (the input may crash the process); 2: with
                              * CHILD_MEM_MB and CHILD_SECONDS limits (not under ASan) */
} bad_case;

#define LLAMA "--type llama"
#define LLAMA3 "--type llama --shards 3"
#define DSV3 "--type deepseek_v3"
#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"
#define X_DOWN "model.layers.1.mlp.down_proj.weight"
#define X_FP8 "model.layers.0.mlp.gate_proj.weight"   /* [172, 160]: ragged 2x2 blocks */

static void need(needles *nd, int k, const char *s) { snprintf(nd->s[k], sizeof nd->s[k], "%s", s); }

static void mk_missing_shard(const char *root, const char *m, needles *nd)
{
    (void)root;
    char *p = path2(m, "model-00002-of-00003.safetensors");
    ck_assert_int_eq(unlink(p), 0);
    need(nd, 0, "model-00002-of-00003.safetensors");
    free(p);
}

static void mk_not_in_shard(const char *root, const char *m, needles *nd)
{
    (void)root;
    char sh[256];
    shard_of(m, X_DOWN, sh, sizeof sh);
    char *p = path2(m, sh);
    rewrite_shard(p, X_DOWN, NULL, 0);
    need(nd, 0, X_DOWN);
    need(nd, 1, sh);
    free(p);
}

static void mk_two_shards(const char *root, const char *m, needles *nd)
{
    (void)root;
    char sh[256];
    shard_of(m, X_DOWN, sh, sizeof sh);
    const char *other = strcmp(sh, S1) ? S1 : S2;
    char *p = path2(m, sh), *q = path2(m, other);
    xtensor x = {X_DOWN, 0, 0, {0, 0}, NULL};
    void *data = shard_tensor(p, X_DOWN, &x.dt, &x.ndim, x.shape);
    x.data = data;
    rewrite_shard(q, NULL, &x, 1);
    need(nd, 0, X_DOWN);
    need(nd, 1, S1);
    need(nd, 2, S2);
    free(data);
    free(p);
    free(q);
}

static void mk_not_in_index(const char *root, const char *m, needles *nd)
{
    (void)root;
    char sh[256];
    shard_of(m, X_DOWN, sh, sizeof sh);
    index_set(m, X_DOWN, NULL);
    need(nd, 0, X_DOWN);
    need(nd, 1, sh);
}

static void mk_wrong_shard_listed(const char *root, const char *m, needles *nd)
{
    (void)root;
    char sh[256];
    shard_of(m, X_DOWN, sh, sizeof sh);
    index_set(m, X_DOWN, json_string(strcmp(sh, S1) ? S1 : S2));
    need(nd, 0, X_DOWN);
    need(nd, 1, INDEX);
}

/* Cut shard 2 to `keep(n, hlen)` bytes. */
static void cut_shard(const char *m, needles *nd, size_t (*keep)(size_t n, uint64_t hl))
{
    char *p = path2(m, S2);
    size_t n;
    uint8_t *b = read_all(p, &n);
    size_t k = keep(n, le64(b));
    ck_assert_uint_lt(k, n);
    ck_assert_int_eq(truncate(p, (off_t)k), 0);
    need(nd, 0, S2);
    free(b);
    free(p);
}

static size_t keep_data_half(size_t n, uint64_t hl) { return (size_t)(8 + hl + (n - 8 - hl) / 2); }
static size_t keep_hdr_half(size_t n, uint64_t hl) { (void)n; return (size_t)(8 + hl / 2); }
static size_t keep_5(size_t n, uint64_t hl) { (void)n; (void)hl; return 5; }
static size_t keep_last_byte(size_t n, uint64_t hl) { (void)hl; return n - 1; }

static void mk_cut_data(const char *r, const char *m, needles *nd) { (void)r; cut_shard(m, nd, keep_data_half); }
static void mk_cut_hdr(const char *r, const char *m, needles *nd) { (void)r; cut_shard(m, nd, keep_hdr_half); }
static void mk_cut_5(const char *r, const char *m, needles *nd) { (void)r; cut_shard(m, nd, keep_5); }
static void mk_cut_1(const char *r, const char *m, needles *nd) { (void)r; cut_shard(m, nd, keep_last_byte); }

static char edit_name[512];      /* the tensor the header editors changed */

static void first_two(json_t *h, const char **a, const char **b)
{
    const char *k, *lo = NULL, *other = NULL;
    json_t *v;
    json_int_t lob = -1;
    json_object_foreach(h, k, v) {
        if (!strcmp(k, "__metadata__")) continue;
        json_int_t beg = json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 0));
        if (lob < 0 || beg < lob) { lob = beg; lo = k; }
    }
    json_object_foreach(h, k, v)
        if (strcmp(k, "__metadata__") && strcmp(k, lo)) { other = k; break; }
    ck_assert(lo && other);
    *a = lo;
    *b = other;
}

static void hdr_overlap(json_t *h, uint64_t ndata)
{
    (void)ndata;
    const char *a, *b;
    first_two(h, &a, &b);
    json_t *oa = json_object_get(json_object_get(h, a), "data_offsets");
    json_t *ob = json_object_get(json_object_get(h, b), "data_offsets");
    json_int_t nb = json_integer_value(json_array_get(ob, 1)) - json_integer_value(json_array_get(ob, 0));
    json_int_t beg = json_integer_value(json_array_get(oa, 0));
    json_array_set_new(ob, 0, json_integer(beg));
    json_array_set_new(ob, 1, json_integer(beg + nb));
    snprintf(edit_name, sizeof edit_name, "%s", b);
}

static void hdr_past_end(json_t *h, uint64_t ndata)
{
    const char *a, *b;
    first_two(h, &a, &b);
    json_t *ob = json_object_get(json_object_get(h, b), "data_offsets");
    json_int_t nb = json_integer_value(json_array_get(ob, 1)) - json_integer_value(json_array_get(ob, 0));
    json_array_set_new(ob, 0, json_integer((json_int_t)ndata - nb + 8));
    json_array_set_new(ob, 1, json_integer((json_int_t)ndata + 8));
    snprintf(edit_name, sizeof edit_name, "%s", b);
}

static void mk_overlap(const char *r, const char *m, needles *nd)
{
    (void)r;
    char *p = path2(m, S1);
    edit_header(p, hdr_overlap);
    need(nd, 0, S1);
    need(nd, 1, edit_name);
    free(p);
}

static void mk_past_end(const char *r, const char *m, needles *nd)
{
    (void)r;
    char *p = path2(m, S1);
    edit_header(p, hdr_past_end);
    need(nd, 0, S1);
    need(nd, 1, edit_name);
    free(p);
}

static void set_len_field(const char *m, const char *shard, uint64_t v, needles *nd)
{
    char *p = path2(m, shard);
    size_t n;
    uint8_t *b = read_all(p, &n);
    set_le64(b, v == 0 ? (uint64_t)n - 8 + 1 : v);
    write_all(p, b, n);
    need(nd, 0, shard);
    free(b);
    free(p);
}

static void mk_len_beyond(const char *r, const char *m, needles *nd) { (void)r; set_len_field(m, S2, 0, nd); }
static void mk_len_huge(const char *r, const char *m, needles *nd) { (void)r; set_len_field(m, S2, HUGE_LEN, nd); }
static void mk_len_max(const char *r, const char *m, needles *nd) { (void)r; set_len_field(m, S1, UINT64_MAX, nd); }

/* FP8: drop X_FP8's scale from its shard and from the index. */
static void drop_scale(const char *m, needles *nd)
{
    char sh[256];
    shard_of(m, X_FP8 "_scale_inv", sh, sizeof sh);
    char *p = path2(m, sh);
    rewrite_shard(p, X_FP8 "_scale_inv", NULL, 0);
    index_set(m, X_FP8 "_scale_inv", NULL);
    need(nd, 0, X_FP8);
    need(nd, 1, "_scale_inv");
    free(p);
}

static void mk_no_scale_check(const char *r, const char *m, needles *nd) { (void)r; drop_scale(m, nd); }

static void mk_no_scale_read(const char *r, const char *m, needles *nd)
{
    (void)r;
    drop_scale(m, nd);
    snprintf(nd->target, sizeof nd->target, "%s", X_FP8);
}

/* Replaces X_FP8's scale by one of shape [d0, d1] and dtype dt (zeros). */
static void bad_scale(const char *m, needles *nd, fs_dtype dt, int64_t d0, int64_t d1)
{
    char sh[256];
    shard_of(m, X_FP8 "_scale_inv", sh, sizeof sh);
    char *p = path2(m, sh);
    void *z = calloc((size_t)(d0 * d1), 8);
    xtensor x = {X_FP8 "_scale_inv", dt, 2, {d0, d1}, z};
    rewrite_shard(p, NULL, &x, 1);
    need(nd, 0, X_FP8 "_scale_inv");
    need(nd, 1, sh);
    snprintf(nd->target, sizeof nd->target, "%s", X_FP8);
    free(z);
    free(p);
}

static void mk_scale_rows(const char *r, const char *m, needles *nd) { (void)r; bad_scale(m, nd, FS_DT_F32, 3, 2); }
static void mk_scale_cols(const char *r, const char *m, needles *nd) { (void)r; bad_scale(m, nd, FS_DT_F32, 2, 1); }
static void mk_scale_dtype(const char *r, const char *m, needles *nd) { (void)r; bad_scale(m, nd, FS_DT_I32, 2, 2); }

static void mk_block_size(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "quantization_config",
                json_pack("{s:s, s:s, s:[i,i]}", "quant_method", "fp8", "fmt", "e4m3",
                          "weight_block_size", 0, 128));
    need(nd, 0, "config.json");
    need(nd, 1, "weight_block_size");
}

static void mk_no_hidden(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "hidden_size", NULL);
    need(nd, 0, "config.json");
    need(nd, 1, "hidden_size");
}

static void mk_no_hidden_vocab(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "hidden_size", NULL);
    edit_config(m, "vocab_size", NULL);
    need(nd, 0, "config.json");
    need(nd, 1, "hidden_size");
    need(nd, 2, "vocab_size");
}

static void mk_no_experts(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "n_routed_experts", NULL);
    need(nd, 0, "config.json");
    need(nd, 1, "n_routed_experts");
}

static void mk_unknown_type(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "model_type", json_string("gpt_neox"));
    need(nd, 0, "gpt_neox");
    need(nd, 1, "llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3");
    need(nd, 2, "config.json");
}

static void mk_no_type(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "model_type", NULL);
    need(nd, 0, "model_type");
    need(nd, 1, "deepseek_v3");
}

static void mk_config_shape(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "intermediate_size", json_integer(176));
    need(nd, 0, "model.layers.0.mlp.gate_proj.weight");
}

/* Replaces tensor name (in whichever shard holds it) with a zero tensor. */
static void replace_tensor(const char *m, const char *name, fs_dtype dt, int ndim, int64_t d0,
                           int64_t d1, needles *nd)
{
    char sh[256];
    shard_of(m, name, sh, sizeof sh);
    char *p = path2(m, sh);
    void *z = calloc((size_t)(d0 * (ndim > 1 ? d1 : 1)), 8);
    xtensor x = {name, dt, ndim, {d0, d1}, z};
    rewrite_shard(p, NULL, &x, 1);
    need(nd, 0, name);
    need(nd, 1, sh);
    free(z);
    free(p);
}

static void mk_linear_shape(const char *r, const char *m, needles *nd)
{
    (void)r;
    replace_tensor(m, "model.layers.1.self_attn.k_proj.weight", FS_DT_BF16, 2, 32, 65, nd);
}

static void mk_linear_1d(const char *r, const char *m, needles *nd)
{
    (void)r;
    replace_tensor(m, "model.layers.1.self_attn.o_proj.weight", FS_DT_BF16, 1, 64 * 64, 0, nd);
}

static void mk_norm_shape(const char *r, const char *m, needles *nd)
{
    (void)r;
    replace_tensor(m, "model.layers.0.input_layernorm.weight", FS_DT_BF16, 1, 65, 0, nd);
}

static void mk_embed_shape(const char *r, const char *m, needles *nd)
{
    (void)r;
    replace_tensor(m, "model.embed_tokens.weight", FS_DT_BF16, 2, 64, 96, nd);
}

static void mk_linear_dtype(const char *r, const char *m, needles *nd)
{
    (void)r;
    replace_tensor(m, "model.layers.0.self_attn.q_proj.weight", FS_DT_I16, 2, 64, 64, nd);
}

/* hostile shard names: shard 1 moved to where the name points */
static void move_shard1(const char *m, const char *to_path)
{
    char *p = path2(m, S1);
    ck_assert_msg(rename(p, to_path) == 0, "rename %s %s: %s", p, to_path, strerror(errno));
    free(p);
}

static void mk_name_slash(const char *root, const char *m, needles *nd)
{
    (void)root;
    char *sub = path2(m, "sub"), *to = path2(sub, S1);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    move_shard1(m, to);
    index_rename_shard(m, S1, "sub/" S1);
    need(nd, 0, "sub/" S1);
    free(to);
    free(sub);
}

static void mk_name_dotdot(const char *root, const char *m, needles *nd)
{
    char *to = path2(root, S1);
    move_shard1(m, to);
    index_rename_shard(m, S1, "../" S1);
    need(nd, 0, "../" S1);
    free(to);
}

static void mk_name_abs(const char *root, const char *m, needles *nd)
{
    char *o = path2(root, "outside"), *to = path2(o, S1);
    ck_assert_int_eq(mkdir(o, 0755), 0);
    move_shard1(m, to);
    char *real = realpath(to, NULL);
    ck_assert_ptr_nonnull(real);
    index_rename_shard(m, S1, real);
    need(nd, 0, real);
    free(real);
    free(to);
    free(o);
}

static void mk_name_empty(const char *root, const char *m, needles *nd)
{
    (void)root;
    index_set(m, "model.norm.weight", json_string(""));
    char *real = realpath(m, NULL);
    need(nd, 0, real);                               /* names the folder */
    free(real);
}

static void mk_name_dot(const char *root, const char *m, needles *nd)
{
    (void)root;
    index_set(m, "model.norm.weight", json_string("."));
    char *real = realpath(m, NULL);
    need(nd, 0, real);
    free(real);
}

static void mk_link_out_abs(const char *root, const char *m, needles *nd)
{
    char *o = path2(root, "outside"), *to = path2(o, S1), *l = path2(m, S1);
    ck_assert_int_eq(mkdir(o, 0755), 0);
    move_shard1(m, to);
    ck_assert_int_eq(symlink(to, l), 0);
    need(nd, 0, S1);
    need(nd, 1, "outside");
    free(l);
    free(to);
    free(o);
}

static void mk_link_out_rel(const char *root, const char *m, needles *nd)
{
    char *o = path2(root, "outside"), *to = path2(o, S1), *l = path2(m, S1);
    ck_assert_int_eq(mkdir(o, 0755), 0);
    move_shard1(m, to);
    ck_assert_int_eq(symlink("../outside/" S1, l), 0);
    need(nd, 0, S1);
    need(nd, 1, "outside");
    free(l);
    free(to);
    free(o);
}

static void mk_link_in(const char *root, const char *m, needles *nd)
{
    (void)root;
    (void)nd;
    char *to = path2(m, "blob-1.bin"), *l = path2(m, S1);
    move_shard1(m, to);
    ck_assert_int_eq(symlink("blob-1.bin", l), 0);
    free(l);
    free(to);
}

static void write_deep(const char *path, const char *prefix, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix), n = pl + 2 * (size_t)DEEP_LEVELS + sl;
    char *b = malloc(n);
    memcpy(b, prefix, pl);
    memset(b + pl, '[', DEEP_LEVELS);
    memset(b + pl + DEEP_LEVELS, ']', DEEP_LEVELS);
    memcpy(b + pl + 2 * (size_t)DEEP_LEVELS, suffix, sl);
    write_all(path, b, n);
    free(b);
}

static void mk_deep_index(const char *root, const char *m, needles *nd)
{
    (void)root;
    char *p = path2(m, INDEX);
    write_deep(p, "{\"weight_map\":", "}");
    need(nd, 0, INDEX);
    free(p);
}

static void mk_deep_config(const char *root, const char *m, needles *nd)
{
    (void)root;
    char *p = path2(m, "config.json");
    write_deep(p, "{\"model_type\":\"llama\",\"x\":", "}");
    need(nd, 0, "config.json");
    free(p);
}

static void mk_map_number(const char *root, const char *m, needles *nd)
{
    (void)root;
    index_set(m, "model.norm.weight", json_integer(1));
    need(nd, 0, INDEX);
    need(nd, 1, "model.norm.weight");
}

static void mk_map_array(const char *root, const char *m, needles *nd)
{
    (void)root;
    char *p = path2(m, INDEX);
    save_json(p, json_pack("{s:[s]}", "weight_map", S1));
    need(nd, 0, INDEX);
    free(p);
}

static void mk_layers_1e9(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "num_hidden_layers", json_integer(1000000000));
    need(nd, 0, "config.json");
}

static void mk_hidden_neg(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "hidden_size", json_integer(-64));
    need(nd, 0, "config.json");
    need(nd, 1, "hidden_size");
}

static void mk_hidden_string(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "hidden_size", json_string("64"));
    need(nd, 0, "hidden_size");
}

/* 4096 layers of 65536 experts: each bound alone is respected, but the
 * description would hold 805M linears, far more tensors than a checkpoint may
 * (FS_CKPT_MAX_TENSORS), from a config.json of 1 KB. */
static void mk_layers_times_experts(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "num_hidden_layers", json_integer(4096));
    edit_config(m, "num_local_experts", json_integer(65536));
    need(nd, 0, "config.json");
}

static void mk_experts_huge(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "num_local_experts", json_integer(1000000));
    need(nd, 0, "config.json");
}

/* Sizes that pass the per-key bound (<= 2^32) but not int or int64 arithmetic. */
static void mk_layers_2p32(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "num_hidden_layers", json_integer(4294967296ll));
    need(nd, 0, "num_hidden_layers");
}

static void mk_layers_2p32m1(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "num_hidden_layers", json_integer(4294967295ll));
    need(nd, 0, "num_hidden_layers");
}

static void mk_mtp_2p32m1(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "num_nextn_predict_layers", json_integer(4294967295ll));
    need(nd, 0, "num_nextn_predict_layers");
}

static void mk_heads_overflow(const char *r, const char *m, needles *nd)
{
    (void)r;
    edit_config(m, "num_attention_heads", json_integer(4294967296ll));
    edit_config(m, "num_key_value_heads", json_integer(1));
    edit_config(m, "head_dim", json_integer(4294967296ll));
    need(nd, 0, "config.json");
}

static const bad_case bad[] = {
    /* 3. bad input */
    {"shard listed in the index but missing", LLAMA3, mk_missing_shard, AT_OPEN, FS_ERR_FORMAT, 0},
    {"tensor in the index but not in its shard", LLAMA, mk_not_in_shard, AT_OPEN, FS_ERR_FORMAT, 0},
    {"tensor present in two shards", LLAMA, mk_two_shards, AT_OPEN, FS_ERR_FORMAT, 0},
    {"tensor in a shard but not in the index", LLAMA, mk_not_in_index, AT_OPEN, FS_ERR_FORMAT, 0},
    {"tensor listed for the wrong shard", LLAMA, mk_wrong_shard_listed, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard cut inside its data", LLAMA, mk_cut_data, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard cut by its last byte", LLAMA, mk_cut_1, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard cut inside its header", LLAMA, mk_cut_hdr, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard cut to 5 bytes", LLAMA, mk_cut_5, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard header offsets overlap", LLAMA, mk_overlap, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard header offsets run past the file", LLAMA, mk_past_end, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard header length one past the file", LLAMA, mk_len_beyond, AT_OPEN, FS_ERR_FORMAT, 0},
    {"FP8 weight without its scale (check)", DSV3, mk_no_scale_check, AT_CHECK, FS_ERR_FORMAT, 0},
    {"FP8 weight without its scale (read)", DSV3, mk_no_scale_read, AT_READ, FS_ERR_FORMAT, 0},
    {"FP8 scale with a row too many", DSV3, mk_scale_rows, AT_READ, FS_ERR_FORMAT, 0},
    {"FP8 scale with a column too few", DSV3, mk_scale_cols, AT_READ, FS_ERR_FORMAT, 0},
    {"FP8 scale of dtype I32", DSV3, mk_scale_dtype, AT_READ, FS_ERR_FORMAT, 0},
    {"weight_block_size [0, 128]", DSV3, mk_block_size, AT_OPEN, FS_ERR_FORMAT, 0},
    {"config.json without hidden_size", LLAMA, mk_no_hidden, AT_MODEL, FS_ERR_FORMAT, 0},
    {"config.json without hidden_size and vocab_size", LLAMA, mk_no_hidden_vocab, AT_MODEL, FS_ERR_FORMAT, 0},
    {"deepseek config.json without n_routed_experts", DSV3, mk_no_experts, AT_MODEL, FS_ERR_FORMAT, 0},
    {"deepseek_v2 config.json without n_routed_experts", "--type deepseek_v2", mk_no_experts, AT_MODEL, FS_ERR_FORMAT, 0},
    {"unknown model_type", LLAMA, mk_unknown_type, AT_MODEL, FS_ERR_FORMAT, 0},
    {"no model_type", LLAMA, mk_no_type, AT_MODEL, FS_ERR_FORMAT, 0},
    {"config intermediate_size disagrees with the tensors", LLAMA, mk_config_shape, AT_CHECK, FS_ERR_FORMAT, 0},
    {"linear of the wrong shape", LLAMA, mk_linear_shape, AT_CHECK, FS_ERR_FORMAT, 0},
    {"linear stored 1-D", LLAMA, mk_linear_1d, AT_CHECK, FS_ERR_FORMAT, 0},
    {"norm of the wrong shape", LLAMA, mk_norm_shape, AT_CHECK, FS_ERR_FORMAT, 0},
    {"embedding transposed", LLAMA, mk_embed_shape, AT_CHECK, FS_ERR_FORMAT, 0},
    {"linear of dtype I16", LLAMA, mk_linear_dtype, AT_CHECK, FS_ERR_FORMAT, 0},
    /* 4. hostile input */
    {"shard name with '/'", LLAMA, mk_name_slash, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard name with '..'", LLAMA, mk_name_dotdot, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard name an absolute path", LLAMA, mk_name_abs, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard name empty", LLAMA, mk_name_empty, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard name '.'", LLAMA, mk_name_dot, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard a symlink outside (absolute)", LLAMA, mk_link_out_abs, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard a symlink outside (relative)", LLAMA, mk_link_out_rel, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard a symlink inside (accepted)", LLAMA, mk_link_in, AT_NONE, FS_OK, 0},
    {"index nested 100000 levels deep", LLAMA, mk_deep_index, AT_OPEN, FS_ERR_FORMAT, 0},
    {"config.json nested 100000 levels deep", LLAMA, mk_deep_config, AT_OPEN, FS_ERR_FORMAT, 0},
    {"weight_map value a number", LLAMA, mk_map_number, AT_OPEN, FS_ERR_FORMAT, 0},
    {"weight_map an array", LLAMA, mk_map_array, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard header length 2^62", LLAMA, mk_len_huge, AT_OPEN, FS_ERR_FORMAT, 0},
    {"shard header length 2^64-1", LLAMA, mk_len_max, AT_OPEN, FS_ERR_FORMAT, 0},
    {"num_hidden_layers 10^9", LLAMA, mk_layers_1e9, AT_MODEL, FS_ERR_FORMAT, 1},
    {"negative hidden_size", LLAMA, mk_hidden_neg, AT_MODEL, FS_ERR_FORMAT, 0},
    {"hidden_size a string", LLAMA, mk_hidden_string, AT_MODEL, FS_ERR_FORMAT, 0},
    {"num_local_experts 10^6", "--type mixtral", mk_experts_huge, AT_MODEL, FS_ERR_FORMAT, 1},
    {"4096 layers x 65536 experts", "--type mixtral", mk_layers_times_experts, AT_MODEL, FS_ERR_FORMAT, 2},
    {"num_hidden_layers 2^32", LLAMA, mk_layers_2p32, AT_MODEL, FS_ERR_FORMAT, 1},
    {"num_hidden_layers 2^32-1", LLAMA, mk_layers_2p32m1, AT_MODEL, FS_ERR_FORMAT, 1},
    {"num_nextn_predict_layers 2^32-1", DSV3 " --mtp", mk_mtp_2p32m1, AT_MODEL, FS_ERR_FORMAT, 1},
    {"num_attention_heads * head_dim = 2^64", LLAMA, mk_heads_overflow, AT_MODEL, FS_ERR_FORMAT, 1},
};
#define NBAD ((int)(sizeof bad / sizeof bad[0]))

START_TEST(test_bad)
{
    if (!gen_tiny()) return;
    const bad_case *b = &bad[_i];
    char *root = t_tmpdir(), *m = path2(root, "m");
    gen(m, b->gen);
    needles nd;
    memset(&nd, 0, sizeof nd);
    b->make(root, m, &nd);
    outcome o;
    if (b->isolate == 2 && UNDER_ASAN) {
        printf("check_ckpt: '%s' skipped under ASan (needs an address-space limit)\n", b->desc);
        free(m);
        t_rmdir(root);
        free(root);
        return;
    }
    if (b->isolate) pipeline_isolated(m, nd.target[0] ? nd.target : NULL, b->isolate == 2, &o);
    else pipeline(m, nd.target[0] ? nd.target : NULL, &o);
    free(m);                             /* before the asserts: nothing left behind */
    t_rmdir(root);
    free(root);
    ck_assert_msg(o.stage >= 0, "%s: %s", b->desc, o.errmsg);
    ck_assert_msg(o.stage == b->at, "%s: stopped at %s (%s: %s; model: %d layers + %d MTP), want a failure at %s",
                  b->desc, stage_name[o.stage], fs_status_str(o.rc), o.errmsg, o.nlayers, o.nmtp,
                  stage_name[b->at]);
    if (b->at != AT_NONE) {
        ck_assert_msg(o.rc != FS_OK, "%s", b->desc);
        if (b->want != FS_OK)
            ck_assert_msg(o.rc == b->want, "%s: status %s, want %s (%s)", b->desc, fs_status_str(o.rc),
                          fs_status_str(b->want), o.errmsg);
        if (b->at != AT_CHECK && b->at != AT_RAW)
            ck_assert_msg(o.out_null, "%s: *out not NULL on error", b->desc);
        ck_assert_msg(o.ctx_err, "%s: ctx.err is not the returned status", b->desc);
        ck_assert_msg(o.errmsg[0] != '\0', "%s: empty errmsg", b->desc);
        for (int k = 0; k < 4; k++)
            ck_assert_msg(!nd.s[k][0] || strstr(o.errmsg, nd.s[k]), "%s: message '%s' does not name '%s'",
                          b->desc, o.errmsg, nd.s[k]);
    }
}
END_TEST

/* An index naming FS_CKPT_MAX_SHARDS shards (none of them present) must be
 * refused in time linear in its size, not entries x shards. */
START_TEST(test_many_shard_names)
{
    if (UNDER_ASAN) {
        printf("check_ckpt: many shard names: timing skipped under ASan\n");
        return;
    }
    char *root = t_tmpdir(), *ip = path2(root, INDEX);
    FILE *fp = fopen(ip, "w");
    ck_assert_ptr_nonnull(fp);
    fprintf(fp, "{\"weight_map\": {");
    for (int i = 0; i < MANY_ENTRIES; i++)
        fprintf(fp, "%s\"t.%d\": \"model-%05d-of-%05d.safetensors\"", i ? ", " : "", i,
                i % MANY_SHARDS, MANY_SHARDS);
    fprintf(fp, "}}");
    ck_assert_int_eq(fclose(fp), 0);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *c = (fs_ckpt *)&ctx;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fs_status rc = fs_ckpt_open(&ctx, root, &c);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    free(ip);
    t_rmdir(root);
    free(root);
    ck_assert_int_eq(rc, FS_ERR_FORMAT);             /* the first shard is missing: bad input */
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "model-00000-of-65536.safetensors"));
    ck_assert_msg(sec < MANY_SECONDS, "%d index entries over %d shard names took %.1f s to refuse",
                  MANY_ENTRIES, MANY_SHARDS, sec);
}
END_TEST

/* ---- fs_out_open on a folder that is not empty ---------------------------------- */

START_TEST(test_out_nonempty)
{
    if (!gen_tiny()) return;
    char *root = t_tmpdir(), *m = path2(root, "m");
    gen(m, "--type llama --shards 3");
    static const char *const ckpt_files[] = {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", INDEX,
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors", ".shard-00001.partial"};
    const int nck = (int)(sizeof ckpt_files / sizeof ckpt_files[0]);
    char *partial = path2(m, ".shard-00001.partial"), *notes = path2(m, "notes.txt");
    char *sub = path2(m, "runs");
    write_all(partial, "x", 1);
    write_all(notes, "keep me\n", 8);
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_outckpt *o = (fs_outckpt *)&ctx;
    fs_status rc = fs_out_open(&ctx, m, 0, 0, FS_FMT_FORGE, &q, &o);
    ck_assert_msg(rc == FS_ERR_USAGE, "status %s (%s)", fs_status_str(rc), ctx.errmsg);
    ck_assert_ptr_null(o);
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, m));
    for (int i = 0; i < nck; i++) {
        char *p = path2(m, ckpt_files[i]);
        ck_assert_msg(file_exists(p), "%s removed without overwrite", ckpt_files[i]);
        free(p);
    }
    /* a folder holding only an unrelated file is not empty either */
    char *m2 = path2(root, "m2"), *n2 = path2(m2, "notes.txt");
    ck_assert_int_eq(mkdir(m2, 0755), 0);
    write_all(n2, "x", 1);
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_out_open(&ctx, m2, 0, 0, FS_FMT_FORGE, &q, &o), FS_ERR_USAGE);
    ck_assert_ptr_null(o);

    fs_ctx_init(&ctx);
    rc = fs_out_open(&ctx, m, 1, 0, FS_FMT_FORGE, &q, &o);
    ck_assert_msg(rc == FS_OK, "overwrite: %s", ctx.errmsg);
    ck_assert_ptr_nonnull(o);
    for (int i = 0; i < nck; i++) {
        char *p = path2(m, ckpt_files[i]);
        ck_assert_msg(!file_exists(p), "%s kept with overwrite", ckpt_files[i]);
        free(p);
    }
    size_t n;
    uint8_t *t = read_all(notes, &n);
    ck_assert_uint_eq(n, 8);
    ck_assert(memcmp(t, "keep me\n", 8) == 0);
    free(t);
    struct stat st;
    ck_assert(stat(sub, &st) == 0 && S_ISDIR(st.st_mode));
    fs_out_abort(o);
    ck_assert(file_exists(notes));

    /* an empty folder and a missing one are fine without overwrite */
    char *m3 = path2(root, "m3"), *m4 = path2(root, "m4");
    ck_assert_int_eq(mkdir(m3, 0755), 0);
    fs_ctx_init(&ctx);
    ck_assert_msg(fs_out_open(&ctx, m3, 0, 0, FS_FMT_FORGE, &q, &o) == FS_OK, "%s", ctx.errmsg);
    fs_out_abort(o);
    ck_assert_msg(fs_out_open(&ctx, m4, 0, 0, FS_FMT_FORGE, &q, &o) == FS_OK, "%s", ctx.errmsg);
    ck_assert(stat(m4, &st) == 0 && S_ISDIR(st.st_mode));
    fs_out_abort(o);
    free(m3);
    free(m4);
    free(n2);
    free(m2);
    free(sub);
    free(notes);
    free(partial);
    free(m);
    t_rmdir(root);
    free(root);
}
END_TEST

/* ---- 5. fuzz ------------------------------------------------------------------ */

typedef struct fz_file {
    char *path;
    uint8_t *base;           /* the valid bytes */
    size_t n;
    int is_shard;
} fz_file;

static const char fz_tokens[] = "0123456789[]{},:\"-. eE/\\";

/* Positions in [lo, hi) where `pat` starts, one picked at random; (size_t)-1 if none. */
static size_t fz_find(t_rng *r, const uint8_t *b, size_t lo, size_t hi, const char *pat)
{
    size_t pl = strlen(pat), cnt = 0;
    for (size_t i = lo; i + pl <= hi; i++) cnt += memcmp(b + i, pat, pl) == 0;
    if (!cnt) return (size_t)-1;
    size_t k = t_next(r) % cnt;
    for (size_t i = lo; i + pl <= hi; i++)
        if (memcmp(b + i, pat, pl) == 0 && k-- == 0) return i;
    return (size_t)-1;
}

static void fz_insert(uint8_t *b, size_t *n, size_t pos, const uint8_t *src, size_t len)
{
    memmove(b + pos + len, b + pos, *n - pos);
    memcpy(b + pos, src, len);
    *n += len;
}

/* One mutation of b[0..*n) (capacity cap) inside its text region: the whole
 * file for the index, the header for a shard (its length field kept in step
 * unless the mutation is about that field). */
static void fz_mutate(t_rng *r, uint8_t *b, size_t *n, size_t cap, int is_shard)
{
    size_t lo = is_shard ? 8 : 0;
    if (*n <= lo + 1) return;
    uint64_t hl = is_shard ? le64(b) : 0;
    size_t hi = is_shard ? (hl + 8 < *n ? (size_t)hl + 8 : *n) : *n;
    if (hi <= lo + 1) hi = *n;
    size_t pos = lo + t_next(r) % (hi - lo), before = *n;
    uint8_t tmp[512];
    switch (t_next(r) % 9) {
    case 0: b[pos] ^= (uint8_t)(1u << (t_next(r) % 8)); break;             /* bit flip */
    case 1: b[pos] = (uint8_t)fz_tokens[t_next(r) % (sizeof fz_tokens - 1)]; break;
    case 2: {                                                              /* insertion */
        size_t len = 1 + t_next(r) % 8;
        if (*n + len > cap) return;
        for (size_t i = 0; i < len; i++) tmp[i] = (uint8_t)fz_tokens[t_next(r) % (sizeof fz_tokens - 1)];
        fz_insert(b, n, pos, tmp, len);
        break;
    }
    case 3: {                                                              /* deletion */
        size_t len = 1 + t_next(r) % 16;
        if (pos + len > hi) len = hi - pos;
        memmove(b + pos, b + pos + len, *n - pos - len);
        *n -= len;
        break;
    }
    case 4: *n = t_next(r) % (*n + 1); return;                             /* truncation */
    case 5: {                                                              /* digits in numbers / names */
        size_t i = pos;
        while (i < hi && (b[i] < '0' || b[i] > '9')) i++;
        if (i >= hi) return;
        if (i + 1 < hi && b[i + 1] >= '0' && b[i + 1] <= '9' && t_next(r) % 2) {
            uint8_t t = b[i]; b[i] = b[i + 1]; b[i + 1] = t;
        } else {
            b[i] = (uint8_t)('0' + t_next(r) % 10);
        }
        break;
    }
    case 6: {                                                              /* duplicate a key */
        size_t s = fz_find(r, b, lo, hi, "\"model.");
        if (s == (size_t)-1) return;
        size_t e = s + 1;
        if (is_shard) { while (e < hi && b[e] != '}') e++; e++; }
        else { while (e < hi && b[e] != ',' && b[e] != '\n') e++; }
        if (e > hi || e - s + 1 > sizeof tmp || *n + (e - s) + 1 > cap) return;
        memcpy(tmp, b + s, e - s);
        tmp[e - s] = ',';
        fz_insert(b, n, s, tmp, e - s + 1);
        break;
    }
    case 7: {                                                              /* offsets: +-1, x10 */
        size_t s = fz_find(r, b, lo, hi, is_shard ? "data_offsets\":[" : "\"model");
        if (s == (size_t)-1) return;
        size_t i = s + (is_shard ? 15 : 1);
        if (t_next(r) % 2) while (i < hi && b[i] != ',') i++;
        while (i < hi && (b[i] < '0' || b[i] > '9')) i++;
        if (i >= hi) return;
        if (t_next(r) % 2) {
            uint8_t d = '0' + (uint8_t)(t_next(r) % 10);
            if (*n + 1 > cap) return;
            fz_insert(b, n, i, &d, 1);
        } else {
            b[i] = b[i] == '9' ? '0' : (uint8_t)(b[i] + 1);
        }
        break;
    }
    default:                                                               /* the length field */
        if (!is_shard) { b[pos] = (uint8_t)t_next(r); break; }
        hl = le64(b);
        switch (t_next(r) % 3) {
        case 0: hl += (t_next(r) % 17) - 8; break;
        case 1: hl ^= 1ull << (t_next(r) % 64); break;
        default: hl = (uint64_t)t_next(r) << 31; break;
        }
        set_le64(b, hl);
        return;
    }
    if (is_shard && *n != before && t_next(r) % 4) set_le64(b, le64(b) + (*n - before));
}

START_TEST(test_fuzz)
{
    if (!gen_tiny()) return;
    char *root = t_tmpdir(), *m = path2(root, "m");
    gen(m, "--type llama --shards 2");
    fz_file f[3] = {{path2(m, INDEX), NULL, 0, 0}, {path2(m, S1), NULL, 0, 1}, {path2(m, S2), NULL, 0, 1}};
    size_t cap = 0;
    for (int i = 0; i < 3; i++) {
        f[i].base = read_all(f[i].path, &f[i].n);
        if (2 * f[i].n + 4096 > cap) cap = 2 * f[i].n + 4096;
    }
    uint8_t *buf = malloc(cap);
    t_rng r = {FUZZ_SEED};
    int n_ok = 0, n_fail = 0, ok_by[3] = {0, 0, 0}, fail_by[3] = {0, 0, 0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int it = 0; it < FUZZ_ITERS; it++) {
        int which = (int)(t_next(&r) % 4);
        which = which < 2 ? 0 : which - 1;              /* half the cases on the index */
        fz_file *z = &f[which];
        size_t n = z->n;
        memcpy(buf, z->base, n);
        int nmut = 1 + (int)(t_next(&r) % 3);
        for (int k = 0; k < nmut; k++) fz_mutate(&r, buf, &n, cap, z->is_shard);
        write_in_place(z->path, buf, n);

        fs_ctx ctx;
        fs_ctx_init(&ctx);
        fs_ckpt *c = (fs_ckpt *)&ctx;
        fs_status rc = fs_ckpt_open(&ctx, m, &c);
        if (rc != FS_OK) {
            ck_assert_msg(c == NULL, "iteration %d: *out not NULL on error", it);
            ck_assert_msg(ctx.errmsg[0] != '\0', "iteration %d: empty errmsg", it);
            ck_assert_msg(ctx.err == rc, "iteration %d: ctx.err", it);
            n_fail++;
            fail_by[which]++;
        } else {
            n_ok++;
            ok_by[which]++;
            /* the index (valid JSON then) lists exactly the tensors found */
            char *ip = path2(m, INDEX);
            json_error_t je;
            json_t *idx = json_load_file(ip, JSON_REJECT_DUPLICATES, &je);
            ck_assert_msg(idx != NULL, "iteration %d: opened with an invalid index: %s", it, je.text);
            json_t *wm = json_object_get(idx, "weight_map");
            ck_assert_uint_eq(json_object_size(wm), c->ntensors);
            for (size_t i = 0; i < c->ntensors; i++) {
                const fs_ckpt_entry *e = &c->entries[i];
                ck_assert_ptr_eq(fs_ckpt_find(c, e->t->name), e);
                ck_assert_str_eq(json_string_value(json_object_get(wm, e->t->name)),
                                 c->shard_names[e->shard]);
                const fs_st_file *sf = c->shards[e->shard];
                ck_assert(e->t->offset >= sf->data_start && e->t->offset <= sf->size &&
                          e->t->nbytes <= sf->size - e->t->offset);
                uint8_t *raw = malloc(e->t->nbytes + 1);
                ck_assert_msg(fs_ckpt_read_raw(&ctx, c, e, raw) == FS_OK, "iteration %d: %s", it, ctx.errmsg);
                /* the bytes of the file this shard name stands for */
                const uint8_t *src = NULL;
                for (int s = 1; s < 3; s++)
                    if (!strcmp(strrchr(f[s].path, '/') + 1, c->shard_names[e->shard]))
                        src = s == which ? buf : f[s].base;
                if (src) ck_assert_msg(memcmp(raw, src + e->t->offset, e->t->nbytes) == 0,
                                       "iteration %d: %s read wrong bytes", it, e->t->name);
                free(raw);
            }
            json_decref(idx);
            free(ip);
            fs_model *md = (fs_model *)&ctx;
            rc = fs_model_from_config(&ctx, c->config, "config.json", &md);
            ck_assert_msg(rc == FS_OK, "iteration %d: %s", it, ctx.errmsg);   /* config untouched */
            rc = fs_model_check(&ctx, md, c);
            ck_assert_msg(rc == FS_OK || ctx.errmsg[0], "iteration %d: empty errmsg", it);
            fs_model_free(md);
            fs_ckpt_close(c);
        }
        write_in_place(z->path, z->base, z->n);         /* back to the valid file */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("check_ckpt fuzz: %d mutated checkpoints (%d opened: index %d, shard1 %d, shard2 %d; "
           "%d refused) in %.1f s\n", FUZZ_ITERS, n_ok, ok_by[0], ok_by[1], ok_by[2], n_fail,
           (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    fflush(stdout);
    /* both outcomes occur (for the index, whose mutations often keep it valid,
     * both occur on their own), or the mutations do not exercise the reader */
    ck_assert_int_gt(n_ok, 0);
    ck_assert_int_gt(ok_by[0], 0);
    for (int i = 0; i < 3; i++) ck_assert_int_gt(fail_by[i], 0);
    for (int i = 0; i < 3; i++) { free(f[i].path); free(f[i].base); }
    free(buf);
    free(m);
    t_rmdir(root);
    free(root);
}
END_TEST

/* A Hugging Face cache snapshot: R/snapshots/REV/<file> are links to
 * ../../blobs/<hash>.  Opened like a plain folder, same tensors, same bytes;
 * links of any other shape stay refused. */
START_TEST(test_hf_cache_snapshot)
{
    if (!gen_tiny()) return;
    char *root = t_tmpdir(), *plain = path2(root, "plain"), *repo = path2(root, "models--org--tiny");
    gen(plain, "--type llama --shards 2");
    char *blobs = path2(repo, "blobs"), *snaps = path2(repo, "snapshots"), *rev = path2(snaps, "0123abcd");
    ck_assert_int_eq(mkdir(repo, 0755), 0);
    ck_assert_int_eq(mkdir(blobs, 0755), 0);
    ck_assert_int_eq(mkdir(snaps, 0755), 0);
    ck_assert_int_eq(mkdir(rev, 0755), 0);
    char cmd[20000];
    /* each file to blobs/<its xxh-like name>, linked from the snapshot as huggingface_hub does */
    snprintf(cmd, sizeof cmd, "cd '%s' && i=0 && for f in *; do i=$((i+1)); cp \"$f\" '%s'/blob$i; "
             "ln -s ../../blobs/blob$i '%s'/\"$f\"; done", plain, blobs, rev);
    ck_assert_int_eq(system(cmd), 0);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_ckpt *a = NULL, *b = NULL;
    ck_assert_msg(fs_ckpt_open(&ctx, rev, &a) == FS_OK, "%s", ctx.errmsg);
    ck_assert_int_eq(fs_ckpt_open(&ctx, plain, &b), FS_OK);
    ck_assert_int_eq(a->ntensors, b->ntensors);
    ck_assert_int_eq(a->nshards, 2);
    for (size_t i = 0; i < b->ntensors; i++) {
        const fs_ckpt_entry *ea = fs_ckpt_find(a, b->entries[i].t->name), *eb = &b->entries[i];
        ck_assert_ptr_nonnull(ea);
        ck_assert_int_eq(ea->t->nbytes, eb->t->nbytes);
        uint8_t *x = malloc(eb->t->nbytes + 1), *y = malloc(eb->t->nbytes + 1);
        ck_assert_int_eq(fs_ckpt_read_raw(&ctx, a, ea, x), FS_OK);
        ck_assert_int_eq(fs_ckpt_read_raw(&ctx, b, eb, y), FS_OK);
        ck_assert(memcmp(x, y, eb->t->nbytes) == 0);
        free(x);
        free(y);
    }
    fs_ckpt_close(a);
    fs_ckpt_close(b);
    /* refused: a blob in a sub-folder of blobs, a link into another folder, and
     * the same links from a folder that is not under snapshots/ */
    const char *shard = "model-00001-of-00002.safetensors";
    struct { const char *what, *setup; } bad[] = {
        {"blob in a sub-folder", "mkdir '%1$s/blobs/sub' && mv '%1$s/blobs/blob1' '%1$s/blobs/sub/' && "
                                 "rm '%2$s/%3$s' && ln -s ../../blobs/sub/blob1 '%2$s/%3$s'"},
        {"link to a sibling folder", "mkdir '%1$s/other' && cp '%1$s/blobs/sub/blob1' '%1$s/other/' && "
                                     "rm '%2$s/%3$s' && ln -s ../../other/blob1 '%2$s/%3$s'"},
        {"snapshot not under snapshots/", "mv '%1$s/other/blob1' '%1$s/blobs/' && rm '%2$s/%3$s' && "
                                          "ln -s ../../blobs/blob1 '%2$s/%3$s' && mv '%1$s/snapshots' '%1$s/snaps'"},
    };
    char *rev2 = path2(repo, "snaps/0123abcd");
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        snprintf(cmd, sizeof cmd, bad[k].setup, repo, rev, shard);
        ck_assert_msg(system(cmd) == 0, "%s: %s", bad[k].what, cmd);
        fs_ctx_init(&ctx);
        fs_status rc = fs_ckpt_open(&ctx, k == 2 ? rev2 : rev, &a);
        ck_assert_msg(rc == FS_ERR_FORMAT && strstr(ctx.errmsg, "outside the model folder") &&
                      strstr(ctx.errmsg, shard), "%s: %d %s", bad[k].what, rc, ctx.errmsg);
    }
    free(rev2);
    free(rev); free(snaps); free(blobs); free(repo); free(plain);
    t_rmdir(root);
    free(root);
}
END_TEST

Suite *fs_suite_ckpt(void)
{
    Suite *s = suite_create("ckpt");
    TCase *tc = tcase_create("valid");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_families, 0, NFAM);
    tcase_add_test(tc, test_single_file);
    tcase_add_test(tc, test_hf_cache_snapshot);
    suite_add_tcase(s, tc);
    tc = tcase_create("fp8");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fp8_dequant);
    suite_add_tcase(s, tc);
    tc = tcase_create("bad");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_bad, 0, NBAD);
    tcase_add_test(tc, test_many_shard_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("out");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_out_nonempty);
    suite_add_tcase(s, tc);
    tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_fuzz);
    suite_add_tcase(s, tc);
    return s;
}
