/* pretok.c: the pre-tokenizers of a tokenizer.json (tok-impl.h): Split (a
 * PCRE2 regex or a string, with the five delimiter behaviours and invert),
 * ByteLevel (optional prefix space, GPT-2's regex, the byte mapping),
 * Metaspace (replacement, prepend scheme, split) and Digits, applied in
 * order over the list of pieces (a Sequence is flattened at load).  Empty
 * pieces are dropped, as the `tokenizers` library drops them. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "src/tokenizer/tok-impl.h"

typedef struct span {
    size_t a, b;       /* relative to the piece */
    int match;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static int span_add(spans *s, size_t a, size_t b, int match)
{
    if (s->n == s->cap) {
        size_t c = s->cap ? 2 * s->cap : 256;
        span *v = realloc(s->v, c * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = c;
    }
    s->v[s->n++] = (span){a, b, match};
    return 0;
}

/* The matches of step st in p[0..n) as spans covering it (HF's find_matches). */
static fs_status find(fs_ctx *ctx, const tk_pre *st, const pcre2_code *re, const tk_rx *rx, const char *p, size_t n,
                      spans *out)
{
    size_t prev = 0, i = 0;
    out->n = 0;
    int rc = 0;
    if (st->kind == TK_DIGITS) {          /* Rust's char::is_numeric: categories Nd, Nl, No */
        for (i = 0; rc == 0 && i < n;) {
            int l;
            utf8proc_category_t c = utf8proc_category(tk_u8dec(p + i, &l));
            if (c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO) {
                if (prev < i) rc = span_add(out, prev, i, 0);
                if (rc == 0) rc = span_add(out, i, i + (size_t)l, 1);
                prev = i + (size_t)l;
            }
            i += (size_t)l;
        }
    } else if (re) {
        while (rc == 0 && i < n) {
            int m = pcre2_match(re, (PCRE2_SPTR)p, n, i, PCRE2_NO_UTF_CHECK, rx->md, rx->mc);
            if (m == PCRE2_ERROR_NOMATCH) break;
            if (m < 0) return fs_ctx_err(ctx, FS_ERR_FORMAT, "tokenizer: pre-tokenizer regex: match error %d", m);
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rx->md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) {                       /* an empty match splits nothing */
                i = ms + (ms < n ? (size_t)tk_u8len((unsigned char)p[ms]) : 1);
                continue;
            }
            if (prev < ms) rc = span_add(out, prev, ms, 0);
            if (rc == 0) rc = span_add(out, ms, me, 1);
            prev = i = me;
        }
    } else {
        const char *pat = st->kind == TK_METASPACE ? st->repl : st->str;
        size_t plen = st->kind == TK_METASPACE ? (size_t)st->repl_len : st->slen;
        while (rc == 0 && plen && i < n) {
            const char *q = memmem(p + i, n - i, pat, plen);
            if (!q) break;
            size_t ms = (size_t)(q - p);
            if (prev < ms) rc = span_add(out, prev, ms, 0);
            if (rc == 0) rc = span_add(out, ms, ms + plen, 1);
            prev = i = ms + plen;
        }
    }
    if (rc == 0 && prev < n) rc = span_add(out, prev, n, 0);
    if (rc == 0 && n == 0) rc = span_add(out, 0, 0, 0);
    if (rc) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: pre-tokenizer");
    if (st->invert)
        for (size_t k = 0; k < out->n; k++) out->v[k].match = !out->v[k].match;
    return FS_OK;
}

/* HF's SplitDelimiterBehavior over the spans, in place; the survivors have
 * match = 0 (kept) or 1 (removed). */
static void behave(tk_behavior b, spans *s)
{
    size_t w = 0;
    int prev_match = 0;
    switch (b) {
    case TK_ISOLATED:
        for (size_t k = 0; k < s->n; k++) s->v[k].match = 0;
        return;
    case TK_REMOVED:
        return;
    case TK_MERGED_PREV:
    case TK_CONTIGUOUS:
        for (size_t k = 0; k < s->n; k++) {
            span x = s->v[k];
            int join = b == TK_MERGED_PREV ? (x.match && !prev_match) : (x.match == prev_match);
            if (join && w > 0) s->v[w - 1].b = x.b;
            else s->v[w++] = (span){x.a, x.b, 0};
            prev_match = x.match;
        }
        s->n = w;
        return;
    case TK_MERGED_NEXT: {
        /* right to left, then the survivors are in reverse order at the end */
        size_t n = s->n;
        span *tmp = s->v;
        size_t top = n;                        /* write from the end backwards */
        for (size_t k = n; k-- > 0;) {
            span x = tmp[k];
            if (x.match && !prev_match && top < n) tmp[top].a = x.a;
            else tmp[--top] = (span){x.a, x.b, 0};
            prev_match = x.match;
        }
        memmove(tmp, tmp + top, (n - top) * sizeof *tmp);
        s->n = n - top;
        return;
    }
    }
}

static int emit(tk_pieces *out, const char *s, size_t n, int start)
{
    if (!n) return 0;
    size_t off = out->text.n;
    if (tk_buf_add(&out->text, s, n) != 0) return -1;
    return tk_pieces_add(out, off, n, start);
}

static fs_status split_piece(fs_ctx *ctx, const tk_pre *st, const pcre2_code *re, tk_behavior beh, const tk_rx *rx,
                             const char *p, size_t n, int start, spans *sp, tk_pieces *out, const tk_bytemap *bm)
{
    fs_status rc = find(ctx, st, re, rx, p, n, sp);
    if (rc != FS_OK) return rc;
    behave(beh, sp);
    for (size_t k = 0; k < sp->n; k++) {
        span x = sp->v[k];
        if (x.match || x.b == x.a) continue;
        int r;
        if (bm) {
            size_t off = out->text.n;
            r = tk_bytemap_apply(bm, p + x.a, x.b - x.a, &out->text);
            if (r == 0) r = tk_pieces_add(out, off, out->text.n - off, start && x.a == 0);
        } else {
            r = emit(out, p + x.a, x.b - x.a, start && x.a == 0);
        }
        if (r) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: pre-tokenizer");
    }
    return FS_OK;
}

static fs_status step(fs_ctx *ctx, const tk_pre *st, const tk_bytemap *bm, const tk_rx *rx, const tk_pieces *in,
                      tk_pieces *out, spans *sp, tk_buf *tmp)
{
    fs_status rc = FS_OK;
    for (size_t k = 0; rc == FS_OK && k < in->n; k++) {
        const char *p = in->text.p + in->v[k].off;
        size_t n = in->v[k].len;
        int start = in->v[k].start;
        switch (st->kind) {
        case TK_SPLIT:
        case TK_DIGITS:
            rc = split_piece(ctx, st, st->re, st->kind == TK_DIGITS ? (st->individual ? TK_ISOLATED : TK_CONTIGUOUS)
                                                                     : st->behavior,
                             rx, p, n, start, sp, out, NULL);
            break;
        case TK_BYTELEVEL:
            tmp->n = 0;
            if ((st->add_prefix_space && (n == 0 || p[0] != ' ') && tk_buf_add(tmp, " ", 1)) || tk_buf_add(tmp, p, n))
                return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
            if (st->re) {
                rc = split_piece(ctx, st, st->re, TK_ISOLATED, rx, tmp->p, tmp->n, start, sp, out, bm);
            } else if (tmp->n) {
                size_t off = out->text.n;
                if (tk_bytemap_apply(bm, tmp->p, tmp->n, &out->text) ||
                    tk_pieces_add(out, off, out->text.n - off, start))
                    return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
            }
            break;
        case TK_METASPACE: {
            tmp->n = 0;
            int r = 0;
            int has = n >= (size_t)st->repl_len && !memcmp(p, st->repl, (size_t)st->repl_len);
            int lead_space = n > 0 && p[0] == ' ';
            if ((st->prepend == 2 || (st->prepend == 1 && start)) && !has && !lead_space)
                r = tk_buf_add(tmp, st->repl, (size_t)st->repl_len);
            for (size_t i = 0; r == 0 && i < n; i++)
                r = p[i] == ' ' ? tk_buf_add(tmp, st->repl, (size_t)st->repl_len) : tk_buf_add(tmp, p + i, 1);
            if (r == 0 && tk_buf_add(tmp, "", 0)) r = -1;
            if (r) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
            if (st->split) rc = split_piece(ctx, st, NULL, TK_MERGED_NEXT, rx, tmp->p, tmp->n, start, sp, out, NULL);
            else if (emit(out, tmp->p, tmp->n, start)) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
            break;
        }
        }
    }
    return rc;
}

fs_status tk_pretokenize(fs_ctx *ctx, const tk_pre *steps, int nsteps, const tk_bytemap *bm, const tk_rx *rx,
                         tk_pieces *in, tk_pieces *tmp)
{
    spans sp = {0};
    tk_buf scratch = {0};
    fs_status rc = FS_OK;
    for (int i = 0; rc == FS_OK && i < nsteps; i++) {
        tk_pieces_reset(tmp);
        rc = step(ctx, &steps[i], bm, rx, in, tmp, &sp, &scratch);
        tk_pieces t = *in;
        *in = *tmp;
        *tmp = t;
    }
    free(sp.v);
    free(scratch.p);
    return rc;
}
