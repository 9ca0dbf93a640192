/* load-parts.c: the parts of a tokenizer.json (tok-impl.h): the BPE model,
 * the normalizer and the pre-tokenizer, each refused by name when it is of
 * a type not implemented here. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/tokenizer/tok-impl.h"

/* GPT-2's split of ByteLevel with use_regex (the `tokenizers` library's). */
static const char gpt2_regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* The files' regexes are Oniguruma's, whose \s is Unicode's White_Space;
 * PCRE2's \s also takes U+180E: \s and \S become the property itself. */
static char *onig_spaces(const char *pat, size_t len, size_t *outn)
{
    tk_buf b = {0};
    int r = tk_buf_add(&b, "", 0);
    for (size_t i = 0; r == 0 && i < len; i++) {
        if (pat[i] == '\\' && i + 1 < len) {
            if (pat[i + 1] == 's') r = tk_buf_add(&b, "\\p{White_Space}", 15);
            else if (pat[i + 1] == 'S') r = tk_buf_add(&b, "\\P{White_Space}", 15);
            else r = tk_buf_add(&b, pat + i, 2);
            i++;
        } else {
            r = tk_buf_add(&b, pat + i, 1);
        }
    }
    if (r) { free(b.p); return NULL; }
    *outn = b.n;
    return b.p;
}

fs_status tk_compile(fs_ctx *ctx, const char *path, const char *what, const char *pat, size_t len, pcre2_code **out)
{
    int err;
    PCRE2_SIZE off;
    size_t n;
    char *p = onig_spaces(pat, len, &n);
    if (!p) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %s: regex", path, what);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, n, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    free(p);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %s: regex '%.200s' refused at offset %zu: %s", path, what, pat,
                          (size_t)off, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);     /* without JIT (an error here) it is interpreted: same matches */
    *out = re;
    return FS_OK;
}

static char *dup_str(const json_t *s, size_t *len)
{
    size_t n = json_string_length(s);
    char *p = malloc(n + 1);
    if (p) { memcpy(p, json_string_value(s), n); p[n] = '\0'; }
    *len = n;
    return p;
}

static int is_true(const json_t *o, const char *k, int dflt)
{
    const json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* ---- model ------------------------------------------------------------------ */

static fs_status merge_pair(fs_ctx *ctx, fs_tok *t, const json_t *mg, size_t i, const char **a, size_t *al, const char **b,
                            size_t *bl)
{
    if (json_is_string(mg)) {          /* "a b" */
        const char *s = json_string_value(mg);
        size_t n = json_string_length(mg);
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.merges[%zu] is not two tokens separated by one space", t->path, i);
        *a = s; *al = (size_t)(sp - s); *b = sp + 1; *bl = n - *al - 1;
        return FS_OK;
    }
    if (json_is_array(mg) && json_array_size(mg) == 2 && json_is_string(json_array_get(mg, 0)) &&
        json_is_string(json_array_get(mg, 1))) {
        *a = json_string_value(json_array_get(mg, 0)); *al = json_string_length(json_array_get(mg, 0));
        *b = json_string_value(json_array_get(mg, 1)); *bl = json_string_length(json_array_get(mg, 1));
        return FS_OK;
    }
    return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", t->path, i);
}

fs_status tk_load_model(fs_ctx *ctx, fs_tok *t, const void *model_json)
{
    const json_t *m = model_json;
    if (!json_is_object(m)) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: \"model\" is missing or not an object", t->path);
    const json_t *ty = json_object_get(m, "type");
    const char *type = json_is_string(ty) ? json_string_value(ty) : json_object_get(m, "merges") ? "BPE" : "?";
    if (strcmp(type, "BPE") != 0)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model type %s is not supported (forge-stream reads BPE models only: "
                          "byte-level and SentencePiece-style)", t->path, type);
    const json_t *d = json_object_get(m, "dropout");
    if (json_is_number(d) && json_number_value(d) > 0)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.dropout %g is not supported (only deterministic BPE)", t->path,
                          json_number_value(d));
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const json_t *v = json_object_get(m, keys[k]);
        if (json_is_string(v) && json_string_length(v) > 0)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.%s \"%s\" is not supported", t->path, keys[k], json_string_value(v));
    }
    tk_bpe *b = &t->bpe;
    b->fuse_unk = is_true(m, "fuse_unk", 0);
    b->byte_fallback = is_true(m, "byte_fallback", 0);
    b->ignore_merges = is_true(m, "ignore_merges", 0);
    const json_t *vocab = json_object_get(m, "vocab");
    if (!json_is_object(vocab)) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.vocab is missing or not an object", t->path);
    const char *key;
    size_t klen;
    json_t *v;
    json_object_keylen_foreach((json_t *)vocab, key, klen, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1ll << 31))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.vocab[\"%.100s\"] is not an id in 0..2^31-1", t->path, key);
        if (tk_strmap_put(&b->vocab, key, klen, (uint32_t)json_integer_value(v)))
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: vocabulary", t->path);
        if (json_integer_value(v) + 1 > t->vocab_size) t->vocab_size = json_integer_value(v) + 1;
    }
    const json_t *merges = json_object_get(m, "merges");
    if (merges && !json_is_array(merges)) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.merges is not an array", t->path);
    tk_buf cat = {0};
    fs_status rc = FS_OK;
    for (size_t i = 0; rc == FS_OK && i < json_array_size(merges); i++) {
        const char *a = NULL, *bb = NULL;
        size_t al = 0, bl = 0;
        uint32_t ia, ib, ic;
        rc = merge_pair(ctx, t, json_array_get(merges, i), i, &a, &al, &bb, &bl);
        if (rc != FS_OK) break;
        cat.n = 0;
        if (tk_buf_add(&cat, a, al) || tk_buf_add(&cat, bb, bl)) { rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path); break; }
        if (!tk_strmap_get(&b->vocab, a, al, &ia) || !tk_strmap_get(&b->vocab, bb, bl, &ib) ||
            !tk_strmap_get(&b->vocab, cat.p, cat.n, &ic))
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.merges[%zu] (\"%.*s\" + \"%.*s\") is not in the vocabulary", t->path,
                            i, (int)(al < 100 ? al : 100), a, (int)(bl < 100 ? bl : 100), bb);
        else if (tk_pairmap_put(&b->merges, ia, ib, (uint32_t)i, ic))
            rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: merges", t->path);
    }
    free(cat.p);
    if (rc != FS_OK) return rc;
    for (int c = 0; c < 256; c++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", c);
        if (!tk_strmap_get(&b->vocab, name, 6, &b->byte_id[c])) b->byte_id[c] = UINT32_MAX;
    }
    b->unk = -1;
    const json_t *unk = json_object_get(m, "unk_token");
    if (json_is_string(unk)) {
        uint32_t id;
        if (!tk_strmap_get(&b->vocab, json_string_value(unk), json_string_length(unk), &id))
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: model.unk_token \"%.100s\" is not in the vocabulary", t->path,
                              json_string_value(unk));
        b->unk = id;
    }
    return FS_OK;
}

/* ---- normalizers -------------------------------------------------------------- */

static fs_status pattern(fs_ctx *ctx, fs_tok *t, const char *what, const json_t *p, char **str, size_t *slen,
                         pcre2_code **re)
{
    const json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    if (json_is_string(s)) {
        *str = dup_str(s, slen);
        return *str ? FS_OK : fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
    }
    if (json_is_string(r)) return tk_compile(ctx, t->path, what, json_string_value(r), json_string_length(r), re);
    return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: %s: pattern is neither {\"String\": ...} nor {\"Regex\": ...}", t->path, what);
}

static fs_status add_norm(fs_ctx *ctx, fs_tok *t, const json_t *n, int depth)
{
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!json_is_object(n) || !type) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: a normalizer has no type", t->path);
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(n, "normalizers");
        if (!json_is_array(a) || depth > 8)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: normalizer Sequence without a \"normalizers\" array", t->path);
        for (size_t i = 0; i < json_array_size(a); i++) {
            fs_status rc = add_norm(ctx, t, json_array_get(a, i), depth + 1);
            if (rc != FS_OK) return rc;
        }
        return FS_OK;
    }
    tk_norm *p = realloc(t->norm, (size_t)(t->nnorm + 1) * sizeof *p);
    if (!p) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
    t->norm = p;
    tk_norm *st = &t->norm[t->nnorm];
    memset(st, 0, sizeof *st);
    if (!strcmp(type, "NFC")) st->kind = TK_NFC;
    else if (!strcmp(type, "NFKC")) st->kind = TK_NFKC;
    else if (!strcmp(type, "NFD")) st->kind = TK_NFD;
    else if (!strcmp(type, "NFKD")) st->kind = TK_NFKD;
    else if (!strcmp(type, "Lowercase")) st->kind = TK_LOWERCASE;
    else if (!strcmp(type, "Strip")) {
        st->kind = TK_STRIP;
        st->left = is_true(n, "strip_left", 1);
        st->right = is_true(n, "strip_right", 1);
    } else if (!strcmp(type, "Prepend")) {
        const json_t *s = json_object_get(n, "prepend");
        if (!json_is_string(s)) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: normalizer Prepend without \"prepend\"", t->path);
        st->kind = TK_PREPEND;
        if (!(st->a = dup_str(s, &st->alen))) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
        if (!strcmp(st->a, "\xE2\x96\x81")) t->strip_decoded_space = 1;
    } else if (!strcmp(type, "Replace")) {
        const json_t *c = json_object_get(n, "content");
        if (!json_is_string(c)) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: normalizer Replace without \"content\"", t->path);
        st->kind = TK_REPLACE;
        t->nnorm++;                                  /* owned from here: freed with the tokenizer */
        if (!(st->b = dup_str(c, &st->blen))) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
        return pattern(ctx, t, "normalizer Replace", json_object_get(n, "pattern"), &st->a, &st->alen, &st->re);
    } else {
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: normalizer type %s is not supported (NFC, NFKC, NFD, NFKD, Prepend, "
                          "Replace, Strip, Lowercase and Sequence are)", t->path, type);
    }
    t->nnorm++;
    return FS_OK;
}

fs_status tk_load_norm(fs_ctx *ctx, fs_tok *t, const void *json)
{
    if (!json || json_is_null((const json_t *)json)) return FS_OK;
    return add_norm(ctx, t, json, 0);
}

/* ---- pre-tokenizers ------------------------------------------------------------- */

static fs_status behavior(fs_ctx *ctx, fs_tok *t, const json_t *b, tk_behavior *out)
{
    const char *s = json_string_value(b);
    if (!s) s = "Isolated";
    if (!strcmp(s, "Removed")) *out = TK_REMOVED;
    else if (!strcmp(s, "Isolated")) *out = TK_ISOLATED;
    else if (!strcmp(s, "MergedWithPrevious")) *out = TK_MERGED_PREV;
    else if (!strcmp(s, "MergedWithNext")) *out = TK_MERGED_NEXT;
    else if (!strcmp(s, "Contiguous")) *out = TK_CONTIGUOUS;
    else return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: pre-tokenizer Split: behavior \"%s\" is not known", t->path, s);
    return FS_OK;
}

static fs_status add_pre(fs_ctx *ctx, fs_tok *t, const json_t *n, int depth)
{
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!json_is_object(n) || !type) return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: a pre-tokenizer has no type", t->path);
    if (!strcmp(type, "Sequence")) {
        const json_t *a = json_object_get(n, "pretokenizers");
        if (!json_is_array(a) || depth > 8)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: pre-tokenizer Sequence without a \"pretokenizers\" array", t->path);
        for (size_t i = 0; i < json_array_size(a); i++) {
            fs_status rc = add_pre(ctx, t, json_array_get(a, i), depth + 1);
            if (rc != FS_OK) return rc;
        }
        return FS_OK;
    }
    tk_pre *p = realloc(t->pre, (size_t)(t->npre + 1) * sizeof *p);
    if (!p) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", t->path);
    t->pre = p;
    tk_pre *st = &t->pre[t->npre];
    memset(st, 0, sizeof *st);
    fs_status rc = FS_OK;
    if (!strcmp(type, "Split")) {
        st->kind = TK_SPLIT;
        st->invert = is_true(n, "invert", 0);
        t->npre++;
        rc = behavior(ctx, t, json_object_get(n, "behavior"), &st->behavior);
        if (rc == FS_OK) rc = pattern(ctx, t, "pre-tokenizer Split", json_object_get(n, "pattern"), &st->str, &st->slen, &st->re);
        return rc;
    }
    if (!strcmp(type, "ByteLevel")) {
        st->kind = TK_BYTELEVEL;
        st->add_prefix_space = is_true(n, "add_prefix_space", 1);
        t->kind = TK_KIND_BYTELEVEL;
        t->npre++;
        if (is_true(n, "use_regex", 1)) rc = tk_compile(ctx, t->path, "ByteLevel", gpt2_regex, sizeof gpt2_regex - 1, &st->re);
        return rc;
    }
    if (!strcmp(type, "Digits")) {
        st->kind = TK_DIGITS;
        st->individual = is_true(n, "individual_digits", 0);
    } else if (!strcmp(type, "Metaspace")) {
        const json_t *r = json_object_get(n, "replacement"), *ps = json_object_get(n, "prepend_scheme");
        st->kind = TK_METASPACE;
        const char *rs = json_is_string(r) ? json_string_value(r) : "\xE2\x96\x81";
        size_t rl = json_is_string(r) ? json_string_length(r) : 3;
        if (rl == 0 || rl >= sizeof st->repl)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: pre-tokenizer Metaspace: replacement is not one character", t->path);
        memcpy(st->repl, rs, rl);
        st->repl_len = (int)rl;
        const char *scheme = json_string_value(ps);
        if (!scheme) st->prepend = is_true(n, "add_prefix_space", 1) ? 2 : 0;
        else if (!strcmp(scheme, "always")) st->prepend = 2;
        else if (!strcmp(scheme, "first")) st->prepend = 1;
        else if (!strcmp(scheme, "never")) st->prepend = 0;
        else return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: pre-tokenizer Metaspace: prepend_scheme \"%s\" is not known", t->path, scheme);
        st->split = is_true(n, "split", 1);
        if (st->prepend) t->strip_decoded_space = 1;
    } else {
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: pre-tokenizer type %s is not supported (Split, ByteLevel, Metaspace, "
                          "Digits and Sequence are)", t->path, type);
    }
    t->npre++;
    return FS_OK;
}

fs_status tk_load_pre(fs_ctx *ctx, fs_tok *t, const void *json)
{
    if (!json || json_is_null((const json_t *)json)) return FS_OK;
    return add_pre(ctx, t, json, 0);
}
