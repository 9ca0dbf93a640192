/* encode.c: text to ids and back (tokenizer.h), the `tokenizers` library's
 * pipeline: invalid UTF-8 repaired; added tokens with normalized = false
 * split out of the raw text; each remaining segment normalized, then those
 * with normalized = true split out; each remaining part pre-tokenized, each
 * piece through BPE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/tokenizer/tok-impl.h"

static fs_status push(fs_ctx *ctx, fs_ids *out, uint32_t id)
{
    if (out->n == out->cap) {
        size_t c = out->cap ? 2 * out->cap : 1024;
        uint32_t *v = realloc(out->v, c * sizeof *v);
        if (!v) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: %zu ids", c);
        out->v = v;
        out->cap = c;
    }
    out->v[out->n++] = id;
    return FS_OK;
}

void fs_ids_free(fs_ids *ids)
{
    free(ids->v);
    memset(ids, 0, sizeof *ids);
}

/* One part without added tokens: pre-tokenizer, then BPE. */
static fs_status model_part(fs_ctx *ctx, fs_tok *t, const char *s, size_t n, int start, fs_ids *out)
{
    if (!n) return FS_OK;
    tk_pieces *in = &t->pa;
    tk_pieces_reset(in);
    if (tk_buf_add(&in->text, s, n) || tk_pieces_add(in, 0, n, start)) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
    fs_status rc = tk_pretokenize(ctx, t->pre, t->npre, &t->bm, &t->rx, in, &t->pb);
    /* the result is in t->pa or t->pb after the swaps: in points at it */
    for (size_t k = 0; rc == FS_OK && k < in->n; k++) {
        const char *w = in->text.p + in->v[k].off;
        size_t len = in->v[k].len, a = 0;
        if (t->cut_before_marker)      /* the same ids, in words of a few characters (and cached) */
            for (size_t i = 1; rc == FS_OK && i + 3 <= len; i++)
                if (!memcmp(w + i, "\xE2\x96\x81", 3) && (i < 3 || memcmp(w + i - 3, "\xE2\x96\x81", 3))) {
                    rc = tk_bpe_word(ctx, &t->bpe, w + a, i - a, out);
                    a = i;
                }
        if (rc == FS_OK) rc = tk_bpe_word(ctx, &t->bpe, w + a, len - a, out);
    }
    return rc;
}

/* A segment of the raw text between added tokens. */
static fs_status segment(fs_ctx *ctx, fs_tok *t, const char *s, size_t n, int start, fs_ids *out)
{
    if (!n) return FS_OK;
    if (!t->nnorm) return model_part(ctx, t, s, n, start, out);
    tk_buf norm = {0};
    fs_status rc = tk_normalize(ctx, t->norm, t->nnorm, &t->rx, s, n, &norm);
    size_t at = 0, ms, me, prev = 0;
    uint32_t id;
    while (rc == FS_OK && tk_added_next(&t->norm_set, norm.p, norm.n, at, prev, &ms, &me, &id)) {
        rc = model_part(ctx, t, norm.p + prev, ms - prev, start && prev == 0, out);
        if (rc == FS_OK) rc = push(ctx, out, id);
        at = prev = me;
    }
    if (rc == FS_OK) rc = model_part(ctx, t, norm.p + prev, norm.n - prev, start && prev == 0, out);
    free(norm.p);
    return rc;
}

fs_status fs_tok_encode(fs_ctx *ctx, fs_tok *t, const char *text, size_t n, fs_ids *out)
{
    char *fixed = NULL;
    if (tk_utf8_check(text, n) != n) {
        size_t fn;
        if (!(fixed = tk_utf8_repair(text, n, &fn))) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
        text = fixed;
        n = fn;
    }
    size_t at = 0, ms, me, prev = 0;
    uint32_t id;
    fs_status rc = FS_OK;
    while (rc == FS_OK && tk_added_next(&t->raw_set, text, n, at, prev, &ms, &me, &id)) {
        rc = segment(ctx, t, text + prev, ms - prev, prev == 0, out);
        if (rc == FS_OK) rc = push(ctx, out, id);
        at = prev = me;
    }
    if (rc == FS_OK) rc = segment(ctx, t, text + prev, n - prev, prev == 0, out);
    free(fixed);
    return rc;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

fs_status fs_tok_decode(fs_ctx *ctx, const fs_tok *t, const uint32_t *ids, size_t n, char **out, size_t *len)
{
    tk_buf b = {0};
    int r = tk_buf_add(&b, "", 0);
    for (size_t i = 0; r == 0 && i < n; i++) {
        uint32_t id = ids[i];
        if ((int64_t)id >= t->vocab_size) {
            free(b.p);
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "token id %u is outside the vocabulary (%lld)", id, (long long)t->vocab_size);
        }
        if (t->tok_is_added[id]) {
            for (size_t k = 0; k < t->nadded; k++)
                if (t->added[k].id == id) { r = tk_buf_add(&b, t->added[k].s, t->added[k].len); break; }
            continue;
        }
        const char *s = t->tok_text + t->tok_off[id];
        size_t l = t->tok_len[id];
        if (t->kind == TK_KIND_BYTELEVEL) {
            for (size_t k = 0; r == 0 && k < l;) {
                int cl;
                int32_t cp = tk_u8dec(s + k, &cl);
                char byte = (char)(cp < 324 && t->bm.dec[cp] >= 0 ? t->bm.dec[cp] : '?');
                r = cp < 324 && t->bm.dec[cp] >= 0 ? tk_buf_add(&b, &byte, 1) : tk_buf_add(&b, s + k, (size_t)cl);
                k += (size_t)cl;
            }
        } else if (l == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            char byte = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            r = tk_buf_add(&b, &byte, 1);
        } else {
            for (size_t k = 0; r == 0 && k < l;) {
                if (l - k >= 3 && !memcmp(s + k, "\xE2\x96\x81", 3)) { r = tk_buf_add(&b, " ", 1); k += 3; }
                else { r = tk_buf_add(&b, s + k, 1); k++; }
            }
        }
    }
    if (r) { free(b.p); return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: decode"); }
    size_t skip = t->strip_decoded_space && b.n > 0 && b.p[0] == ' ' ? 1 : 0;
    memmove(b.p, b.p + skip, b.n - skip + 1);
    *out = b.p;
    *len = b.n - skip;
    return FS_OK;
}
