/* normalize.c: the normalizers of a tokenizer.json (tok-impl.h): NFC, NFKC,
 * NFD, NFKD (utf8proc), Prepend, Replace (a string or a PCRE2 regex), Strip,
 * Lowercase, applied in order (a Sequence is flattened at load). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "src/tokenizer/tok-impl.h"

static int set(tk_buf *b, const char *s, size_t n)
{
    b->n = 0;
    return tk_buf_add(b, s, n);
}

static fs_status unicode_form(fs_ctx *ctx, tk_norm_kind k, const char *s, size_t n, tk_buf *out)
{
    utf8proc_option_t opt = UTF8PROC_STABLE;
    if (k == TK_NFC || k == TK_NFKC) opt |= UTF8PROC_COMPOSE;
    else opt |= UTF8PROC_DECOMPOSE;
    if (k == TK_NFKC || k == TK_NFKD) opt |= UTF8PROC_COMPAT;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, opt);
    if (r < 0) {
        free(dst);
        return fs_ctx_err(ctx, r == UTF8PROC_ERROR_NOMEM ? FS_ERR_NOMEM : FS_ERR_FORMAT, "tokenizer: normalization: %s",
                          utf8proc_errmsg(r));
    }
    int rc = set(out, (const char *)dst, (size_t)r);
    free(dst);
    return rc ? fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: normalization") : FS_OK;
}

static fs_status replace(fs_ctx *ctx, const tk_norm *st, const tk_rx *rx, const char *s, size_t n, tk_buf *out)
{
    size_t i = 0;
    out->n = 0;
    int rc = tk_buf_add(out, "", 0);
    while (rc == 0 && i <= n) {
        size_t ms, me;
        if (st->re) {
            int m = pcre2_match(st->re, (PCRE2_SPTR)s, n, i, PCRE2_NO_UTF_CHECK, rx->md, rx->mc);
            if (m == PCRE2_ERROR_NOMATCH) break;
            if (m < 0) return fs_ctx_err(ctx, FS_ERR_FORMAT, "tokenizer: Replace normalizer: regex match error %d", m);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rx->md);
            ms = ov[0];
            me = ov[1];
            if (me == ms) {                            /* an empty match replaces nothing */
                if (ms >= n) break;
                size_t step = (size_t)tk_u8len((unsigned char)s[ms]);
                rc = tk_buf_add(out, s + i, ms + step - i);
                i = ms + step;
                continue;
            }
        } else {
            const char *p = st->alen ? memmem(s + i, n - i, st->a, st->alen) : NULL;
            if (!p) break;
            ms = (size_t)(p - s);
            me = ms + st->alen;
        }
        rc = tk_buf_add(out, s + i, ms - i);
        if (rc == 0) rc = tk_buf_add(out, st->b, st->blen);
        i = me;
    }
    if (rc == 0 && i < n) rc = tk_buf_add(out, s + i, n - i);
    return rc ? fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: Replace normalizer") : FS_OK;
}

static fs_status lowercase(fs_ctx *ctx, const char *s, size_t n, tk_buf *out)
{
    out->n = 0;
    for (size_t i = 0; i < n;) {
        int l;
        int32_t cp = tk_u8dec(s + i, &l);
        char enc[4];
        /* Rust's char::to_lowercase: the simple mapping, except U+0130, whose
         * unconditional full mapping is "i" + U+0307 */
        if (cp == 0x130) {
            if (tk_buf_add(out, "i\xCC\x87", 3) != 0) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: Lowercase normalizer");
        } else if (tk_buf_add(out, enc, (size_t)tk_u8enc(utf8proc_tolower(cp), enc)) != 0)
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: Lowercase normalizer");
        i += (size_t)l;
    }
    return tk_buf_add(out, "", 0) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer") : FS_OK;
}

static fs_status strip(fs_ctx *ctx, const tk_norm *st, const char *s, size_t n, tk_buf *out)
{
    size_t a = 0, b = n;
    while (st->left && a < b) {
        int l;
        if (!tk_is_space(tk_u8dec(s + a, &l))) break;
        a += (size_t)l;
    }
    while (st->right && b > a) {
        size_t k = b - 1;
        while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        int l;
        if (!tk_is_space(tk_u8dec(s + k, &l))) break;
        b = k;
    }
    return set(out, s + a, b - a) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: Strip normalizer") : FS_OK;
}

fs_status tk_normalize(fs_ctx *ctx, const tk_norm *steps, int nsteps, const tk_rx *rx, const char *s, size_t n,
                       tk_buf *out)
{
    tk_buf tmp = {0};
    fs_status rc = set(out, s, n) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer") : FS_OK;
    for (int i = 0; rc == FS_OK && i < nsteps; i++) {
        const tk_norm *st = &steps[i];
        switch (st->kind) {
        case TK_NFC: case TK_NFKC: case TK_NFD: case TK_NFKD:
            rc = unicode_form(ctx, st->kind, out->p, out->n, &tmp);
            break;
        case TK_PREPEND:
            tmp.n = 0;
            if (out->n && (tk_buf_add(&tmp, st->a, st->alen) || tk_buf_add(&tmp, out->p, out->n)))
                rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
            else if (!out->n && tk_buf_add(&tmp, "", 0))
                rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
            break;
        case TK_REPLACE: rc = replace(ctx, st, rx, out->p, out->n, &tmp); break;
        case TK_STRIP: rc = strip(ctx, st, out->p, out->n, &tmp); break;
        case TK_LOWERCASE: rc = lowercase(ctx, out->p, out->n, &tmp); break;
        }
        if (rc == FS_OK) { tk_buf t = *out; *out = tmp; tmp = t; }
    }
    free(tmp.p);
    return rc;
}
