/* added.c: the added tokens of a tokenizer.json (tok-impl.h), matched in the
 * text before the model runs: leftmost, then longest (as the `tokenizers`
 * library's Aho-Corasick LeftmostLongest), with single_word, lstrip and
 * rstrip.  Those with normalized = false are matched in the raw text, the
 * others in the normalized text. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "src/tokenizer/tok-impl.h"

static int by_first_byte(const void *a, const void *b)
{
    const tk_added *x = *(tk_added *const *)a, *y = *(tk_added *const *)b;
    unsigned cx = x->len ? (unsigned char)x->s[0] : 0, cy = y->len ? (unsigned char)y->s[0] : 0;
    if (cx != cy) return cx < cy ? -1 : 1;
    return x->len > y->len ? -1 : x->len < y->len;   /* longest first */
}

int tk_addset_build(tk_addset *a, tk_added *all, size_t nall, int normalized)
{
    memset(a, 0, sizeof *a);
    a->v = malloc((nall ? nall : 1) * sizeof *a->v);
    if (!a->v) return -1;
    for (size_t i = 0; i < nall; i++)
        if (!!all[i].normalized == !!normalized && all[i].len) a->v[a->n++] = &all[i];
    qsort(a->v, a->n, sizeof *a->v, by_first_byte);
    size_t k = 0;
    for (int c = 0; c <= 256; c++) {
        while (c < 256 && k < a->n && (unsigned char)a->v[k]->s[0] < c) k++;
        a->first[c] = (int32_t)k;
    }
    a->first[256] = (int32_t)a->n;
    return 0;
}

void tk_addset_free(tk_addset *a)
{
    free(a->v);
    memset(a, 0, sizeof *a);
}

static int is_word_char(int32_t cp)
{
    if (cp == '_') return 1;
    utf8proc_category_t c = utf8proc_category(cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_NO) ||
           c == UTF8PROC_CATEGORY_PC;
}

static int32_t char_before(const char *s, size_t at)
{
    size_t k = at - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    int l;
    return tk_u8dec(s + k, &l);
}

int tk_added_next(const tk_addset *a, const char *s, size_t n, size_t from, size_t prev_end, size_t *ms, size_t *me,
                  uint32_t *id)
{
    if (!a->n) return 0;
    for (size_t i = from; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t lo = a->first[c], hi = a->first[c + 1];
        const tk_added *best = NULL;
        for (int32_t k = lo; k < hi; k++) {           /* longest first: the first that fits */
            const tk_added *t = a->v[k];
            if (t->len <= n - i && !memcmp(s + i, t->s, t->len)) { best = t; break; }
        }
        if (!best) continue;
        size_t start = i, stop = i + best->len;
        if (best->single_word) {
            int l;
            int before = start > 0 && is_word_char(char_before(s, start));
            int after = stop < n && is_word_char(tk_u8dec(s + stop, &l));
            if (before || after) { i = stop - 1; continue; }
        }
        if (best->lstrip) {
            while (start > prev_end) {
                size_t k = start - 1;
                while (k > prev_end && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                int l;
                if (!tk_is_space(tk_u8dec(s + k, &l))) break;
                start = k;
            }
        }
        if (best->rstrip) {
            while (stop < n) {
                int l;
                if (!tk_is_space(tk_u8dec(s + stop, &l))) break;
                stop += (size_t)l;
            }
        }
        *ms = start;
        *me = stop;
        *id = best->id;
        return 1;
    }
    return 0;
}
