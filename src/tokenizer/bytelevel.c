/* bytelevel.c: GPT-2's byte-to-character mapping (tok-impl.h), so that a
 * byte-level vocabulary spells every byte with a printable character: the
 * printable Latin-1 bytes (33..126, 161..172, 174..255) stand for
 * themselves, the other 68 get 256, 257, ... in byte order. */
#include <stdlib.h>
#include <string.h>

#include "src/tokenizer/tok-impl.h"

void tk_bytemap_init(tk_bytemap *m)
{
    int next = 256;
    for (int i = 0; i < 324; i++) m->dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = keep ? b : next++;
        m->enc_len[b] = (uint8_t)tk_u8enc(cp, m->enc[b]);
        m->dec[cp] = (int16_t)b;
    }
}

int tk_bytemap_apply(const tk_bytemap *m, const char *s, size_t n, tk_buf *b)
{
    if (b->n + 2 * n + 1 > b->cap && tk_buf_add(b, "", 0) == 0) {
        size_t need = b->n + 2 * n + 1;
        size_t c = b->cap;
        while (c < need) c *= 2;
        char *p = realloc(b->p, c);
        if (!p) return -1;
        b->p = p;
        b->cap = c;
    }
    if (!b->p) return -1;
    char *o = b->p + b->n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        o[0] = m->enc[c][0];
        if (m->enc_len[c] == 2) o[1] = m->enc[c][1];
        o += m->enc_len[c];
    }
    b->n = (size_t)(o - b->p);
    b->p[b->n] = '\0';
    return 0;
}
