/* utf8.c: UTF-8 checks and repair, and the small helpers the steps share
 * (tok-impl.h).  Invalid input is repaired the way Python's
 * bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy do:
 * each maximal subpart of an ill-formed sequence (Unicode 15, §3.9, "U+FFFD
 * substitution of maximal subparts") becomes one U+FFFD. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "src/tokenizer/tok-impl.h"

int tk_buf_add(tk_buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *p = realloc(b->p, c);
        if (!p) return -1;
        b->p = p;
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int32_t tk_u8dec(const char *s, int *len)
{
    const unsigned char *u = (const unsigned char *)s;
    int l = tk_u8len(u[0]);
    int32_t cp = l == 1 ? u[0] : l == 2 ? u[0] & 0x1f : l == 3 ? u[0] & 0x0f : u[0] & 0x07;
    for (int i = 1; i < l; i++) cp = cp << 6 | (u[i] & 0x3f);
    *len = l;
    return cp;
}

int tk_u8enc(int32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = (unsigned char)(0xC0 | cp >> 6); o[1] = (unsigned char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12); o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18); o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f)); o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* How many bytes from s[0..n) form the longest valid prefix of one character
 * (Table 3-7 of the standard); *whole = 1 when that is the whole character. */
static size_t valid_prefix(const unsigned char *s, size_t n, int *whole)
{
    unsigned char c = s[0];
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    *whole = 0;
    if (c < 0x80) { *whole = 1; return 1; }
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return 0;                                    /* 80..C1, F5..FF: never a lead byte */
    size_t k = 1;
    for (int i = 0; i < need; i++, k++) {
        if (k >= n) return k;
        unsigned char b = s[k];
        if (i == 0 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return k;
    }
    *whole = 1;
    return k;
}

size_t tk_utf8_check(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        int whole;
        size_t k = valid_prefix(u + i, n - i, &whole);
        if (!whole) return i;
        i += k;
    }
    return n;
}

char *tk_utf8_repair(const char *s, size_t n, size_t *outn)
{
    const unsigned char *u = (const unsigned char *)s;
    tk_buf b = {0};
    size_t i = 0;
    while (i < n) {
        int whole;
        size_t k = valid_prefix(u + i, n - i, &whole);
        int rc;
        if (whole) rc = tk_buf_add(&b, u + i, k);
        else { rc = tk_buf_add(&b, "\xEF\xBF\xBD", 3); if (k == 0) k = 1; }
        if (rc != 0) { free(b.p); return NULL; }
        i += k;
    }
    if (tk_buf_add(&b, "", 0) != 0) { free(b.p); return NULL; }
    *outn = b.n;
    return b.p;
}

int tk_is_space(int32_t cp)
{
    if ((cp >= 9 && cp <= 13) || cp == 0x85) return 1;
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

int tk_pieces_add(tk_pieces *p, size_t off, size_t len, int start)
{
    if (p->n == p->cap) {
        size_t c = p->cap ? 2 * p->cap : 64;
        tk_piece *v = realloc(p->v, c * sizeof *v);
        if (!v) return -1;
        p->v = v;
        p->cap = c;
    }
    p->v[p->n++] = (tk_piece){off, len, start};
    return 0;
}

void tk_pieces_reset(tk_pieces *p)
{
    p->n = 0;
    p->text.n = 0;
}

void tk_pieces_free(tk_pieces *p)
{
    free(p->v);
    free(p->text.p);
    memset(p, 0, sizeof *p);
}
