/* load.c: reading a model folder's tokenizer.json and tokenizer_config.json
 * (tokenizer.h); the parts are in load-parts.c. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/tokenizer/tok-impl.h"

static fs_status read_json(fs_ctx *ctx, const char *path, int optional, json_t **out)
{
    int fd = -1;
    uint64_t size = 0;
    *out = NULL;
    if (optional && access(path, F_OK) != 0 && errno == ENOENT) return FS_OK;
    fs_status rc = fs_open_regular(ctx, path, O_RDONLY, &fd, &size);
    if (rc != FS_OK) return rc;
    if (size > FS_TOK_MAX_JSON) {
        close(fd);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %llu bytes, more than a tokenizer file may hold (1 GiB)", path,
                          (unsigned long long)size);
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) { close(fd); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %llu bytes", path, (unsigned long long)size); }
    rc = fs_pread_full(ctx, fd, path, buf, size, 0);
    close(fd);
    if (rc == FS_OK) {
        json_error_t je;
        *out = json_loadb(buf, size, JSON_ALLOW_NUL, &je);
        if (!*out || !json_is_object(*out)) {
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %s (line %d, column %d)", path, *out ? "not a JSON object" : je.text,
                            je.line, je.column);
            json_decref(*out);
            *out = NULL;
        }
    }
    free(buf);
    return rc;
}

/* A folder without tokenizer.json: name what it has instead. */
static fs_status missing(fs_ctx *ctx, const char *dir)
{
    static const char *const other[] = {"tiktoken.model", "tokenizer.tiktoken", "tokenizer.model", "vocab.txt",
                                        "spiece.model", "sentencepiece.bpe.model"};
    char p[4400];
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, other[i]);
        if (access(p, F_OK) == 0)
            return fs_ctx_err(ctx, FS_ERR_USAGE, "%s/tokenizer.json: missing; the folder has %s (%s), which forge-stream "
                              "does not read: give ids (--calib / eval's token file) or a tokenizer.json", dir, other[i],
                              i < 2 ? "a tiktoken file" : i == 3 ? "a WordPiece vocabulary" : "a SentencePiece model");
    }
    return fs_ctx_err(ctx, FS_ERR_USAGE, "%s/tokenizer.json: No such file (the model folder has no tokenizer)", dir);
}

static fs_status load_added(fs_ctx *ctx, fs_tok *t, const json_t *a)
{
    if (!a || json_is_null(a)) return FS_OK;
    if (!json_is_array(a)) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: added_tokens is not an array", t->path);
    t->added = calloc(json_array_size(a) + 1, sizeof *t->added);
    if (!t->added) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *e = json_array_get(a, i), *id = json_object_get(e, "id"), *c = json_object_get(e, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1ll << 31) || !json_is_string(c) ||
            json_string_length(c) == 0)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: added_tokens[%zu] has no id in 0..2^31-1 or no content", t->path, i);
        tk_added *x = &t->added[t->nadded++];
        x->len = json_string_length(c);
        if (!(x->s = malloc(x->len + 1))) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
        memcpy(x->s, json_string_value(c), x->len + 1);
        x->id = (uint32_t)json_integer_value(id);
        x->special = json_is_true(json_object_get(e, "special"));
        x->normalized = json_is_true(json_object_get(e, "normalized"));
        x->lstrip = json_is_true(json_object_get(e, "lstrip"));
        x->rstrip = json_is_true(json_object_get(e, "rstrip"));
        x->single_word = json_is_true(json_object_get(e, "single_word"));
        if ((int64_t)x->id + 1 > t->vocab_size) t->vocab_size = (int64_t)x->id + 1;
    }
    return FS_OK;
}

static int64_t token_id(const fs_tok *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].s, s, n)) return t->added[i].id;
    uint32_t id;
    return tk_strmap_get(&t->bpe.vocab, s, n, &id) ? (int64_t)id : -1;
}

/* bos_token / eos_token of tokenizer_config.json: a string or {"content": ...}. */
static fs_status config_token(fs_ctx *ctx, const fs_tok *t, const char *path, const json_t *cfg, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!v || json_is_null(v)) return FS_OK;
    if (!json_is_string(v)) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %s is not a string", path, key);
    *out = token_id(t, json_string_value(v), json_string_length(v));
    if (*out < 0) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %s \"%.100s\" is not a token of tokenizer.json", path, key,
                                    json_string_value(v));
    return FS_OK;
}

/* Without add_bos_token: does the post-processor's template put a special
 * token first (Llama-3's TemplateProcessing does)? */
static void template_bos(fs_tok *t, const json_t *pp)
{
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type) return;
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(pp, "processors");
        for (size_t i = 0; i < json_array_size(a); i++) template_bos(t, json_array_get(a, i));
        return;
    }
    if (strcmp(type, "TemplateProcessing") != 0) return;
    const json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    const json_t *sp = json_object_get(json_object_get(first, "SpecialToken"), "id");
    if (!json_is_string(sp)) return;
    const json_t *ids = json_object_get(json_object_get(json_object_get(pp, "special_tokens"), json_string_value(sp)), "ids");
    int64_t id = json_is_integer(json_array_get(ids, 0)) ? json_integer_value(json_array_get(ids, 0))
                                                          : token_id(t, json_string_value(sp), json_string_length(sp));
    if (id >= 0 && id < t->vocab_size) {
        t->add_bos = 1;
        if (t->bos < 0) t->bos = id;
    }
}

static fs_status load_config(fs_ctx *ctx, fs_tok *t, const char *dir, const json_t *root)
{
    char path[4400];
    json_t *cfg = NULL, *mc = NULL;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    fs_status rc = read_json(ctx, path, 1, &cfg);
    t->bos = t->eos = -1;
    if (rc == FS_OK && cfg) rc = config_token(ctx, t, path, cfg, "bos_token", &t->bos);
    if (rc == FS_OK && cfg) rc = config_token(ctx, t, path, cfg, "eos_token", &t->eos);
    const json_t *ab = cfg ? json_object_get(cfg, "add_bos_token") : NULL;
    if (rc == FS_OK && json_is_boolean(ab)) t->add_bos = json_is_true(ab) && t->bos >= 0;
    else if (rc == FS_OK) template_bos(t, json_object_get(root, "post_processor"));
    if (rc == FS_OK && (t->bos < 0 || t->eos < 0)) {      /* config.json's ids, when tokenizer_config says nothing */
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (read_json(ctx, path, 1, &mc) != FS_OK) fs_ctx_clear(ctx);
        const json_t *e = json_object_get(mc, "eos_token_id"), *b = json_object_get(mc, "bos_token_id");
        if (json_is_array(e)) e = json_array_get(e, 0);
        if (t->eos < 0 && json_is_integer(e) && json_integer_value(e) >= 0 && json_integer_value(e) < t->vocab_size)
            t->eos = json_integer_value(e);
        if (t->bos < 0 && json_is_integer(b) && json_integer_value(b) >= 0 && json_integer_value(b) < t->vocab_size)
            t->bos = json_integer_value(b);
    }
    json_decref(cfg);
    json_decref(mc);
    return rc;
}

static fs_status build_decode(fs_ctx *ctx, fs_tok *t)
{
    size_t n = (size_t)t->vocab_size;
    t->tok_off = calloc(n ? n : 1, sizeof *t->tok_off);
    t->tok_len = calloc(n ? n : 1, sizeof *t->tok_len);
    t->tok_is_added = calloc(n ? n : 1, 1);
    if (!t->tok_off || !t->tok_len || !t->tok_is_added) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
    const tk_strmap *v = &t->bpe.vocab;
    t->tok_text = v->arena;                        /* vocabulary strings stay in the map's arena */
    for (size_t i = 0; i < v->cap; i++)
        if (v->hash[i]) {
            t->tok_off[v->val[i]] = v->koff[i];
            t->tok_len[v->val[i]] = v->klen[i];
        }
    for (size_t i = 0; i < t->nadded; i++) t->tok_is_added[t->added[i].id] = 1;
    return FS_OK;
}

fs_status fs_tok_load(fs_ctx *ctx, const char *dir, fs_tok **out)
{
    *out = NULL;
    fs_tok *t = calloc(1, sizeof *t);
    if (!t) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
    snprintf(t->path, sizeof t->path, "%s/tokenizer.json", dir);
    t->kind = TK_KIND_SENTENCEPIECE;
    tk_bytemap_init(&t->bm);
    json_t *root = NULL;
    fs_status rc;
    if (access(t->path, F_OK) != 0 && errno == ENOENT) rc = missing(ctx, dir);
    else rc = read_json(ctx, t->path, 0, &root);
    if (rc == FS_OK) rc = tk_load_model(ctx, t, json_object_get(root, "model"));
    if (rc == FS_OK) t->cut_before_marker = t->kind != TK_KIND_BYTELEVEL && tk_bpe_marker_cuts(&t->bpe);
    if (rc == FS_OK) rc = load_added(ctx, t, json_object_get(root, "added_tokens"));
    if (rc == FS_OK) rc = tk_load_norm(ctx, t, json_object_get(root, "normalizer"));
    if (rc == FS_OK) rc = tk_load_pre(ctx, t, json_object_get(root, "pre_tokenizer"));
    if (rc == FS_OK && (tk_addset_build(&t->raw_set, t->added, t->nadded, 0) || tk_addset_build(&t->norm_set, t->added, t->nadded, 1)))
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
    if (rc == FS_OK && t->vocab_size == 0) rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: the vocabulary is empty", t->path);
    if (rc == FS_OK) rc = load_config(ctx, t, dir, root);
    if (rc == FS_OK) rc = build_decode(ctx, t);
    if (rc == FS_OK) {
        t->rx.md = pcre2_match_data_create(1, NULL);
        t->rx.mc = pcre2_match_context_create(NULL);
        t->rx.js = pcre2_jit_stack_create(32 << 10, 16 << 20, NULL);
        if (!t->rx.md || !t->rx.mc || !t->rx.js) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: regex match data");
        else pcre2_jit_stack_assign(t->rx.mc, NULL, t->rx.js);
    }
    json_decref(root);
    if (rc != FS_OK) { fs_tok_free(t); return rc; }
    *out = t;
    return FS_OK;
}

void fs_tok_free(fs_tok *t)
{
    if (!t) return;
    for (int i = 0; i < t->nnorm; i++) { free(t->norm[i].a); free(t->norm[i].b); pcre2_code_free(t->norm[i].re); }
    free(t->norm);
    for (int i = 0; i < t->npre; i++) { free(t->pre[i].str); pcre2_code_free(t->pre[i].re); }
    free(t->pre);
    for (size_t i = 0; i < t->nadded; i++) free(t->added[i].s);
    free(t->added);
    tk_addset_free(&t->raw_set);
    tk_addset_free(&t->norm_set);
    tk_bpe_free(&t->bpe);
    free(t->tok_off); free(t->tok_len); free(t->tok_is_added);
    pcre2_match_data_free(t->rx.md);
    pcre2_match_context_free(t->rx.mc);
    pcre2_jit_stack_free(t->rx.js);
    free(t->normbuf.p);
    tk_pieces_free(&t->pa);
    tk_pieces_free(&t->pb);
    free(t);
}

int fs_tok_add_bos(const fs_tok *t) { return t->add_bos; }
int64_t fs_tok_bos(const fs_tok *t) { return t->bos; }
int64_t fs_tok_eos(const fs_tok *t) { return t->eos; }
int64_t fs_tok_vocab_size(const fs_tok *t) { return t->vocab_size; }
const char *fs_tok_kind(const fs_tok *t) { return t->kind == TK_KIND_BYTELEVEL ? "byte-level BPE" : "SentencePiece BPE"; }
