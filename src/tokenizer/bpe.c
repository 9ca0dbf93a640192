/* bpe.c: one pre-tokenized word through the BPE model (tok-impl.h), as the
 * `tokenizers` library's BPE::merge_word and Word::merge_all do: each
 * character is a symbol (its vocabulary id, else its bytes' <0xNN> tokens
 * with byte fallback, else the unknown token, consecutive ones fused when
 * fuse_unk); then the pair of lowest merge rank, leftmost first, is merged
 * until no pair of the word has a merge.  Words seen before come from a
 * cache. */
#include <stdlib.h>
#include <string.h>

#include "src/tokenizer/tok-impl.h"

static int grow(tk_bpe *m, size_t n)
{
    if (n > m->scap) {
        size_t c = m->scap ? m->scap : 256;
        while (c < n) c *= 2;
        uint32_t *s = realloc(m->sym, c * sizeof *s);
        if (s) m->sym = s;
        int32_t *p = realloc(m->prev, c * sizeof *p);
        if (p) m->prev = p;
        int32_t *x = realloc(m->next, c * sizeof *x);
        if (x) m->next = x;
        if (!s || !p || !x) return -1;
        m->scap = c;
    }
    return 0;
}

static int heap_push(tk_bpe *m, size_t *hn, uint32_t rank, uint32_t pos, uint32_t id)
{
    if (*hn == m->hcap) {
        size_t c = m->hcap ? 2 * m->hcap : 256;
        uint32_t *r = realloc(m->heap_rank, c * sizeof *r);
        if (r) m->heap_rank = r;
        uint32_t *p = realloc(m->heap_pos, c * sizeof *p);
        if (p) m->heap_pos = p;
        uint32_t *d = realloc(m->heap_id, c * sizeof *d);
        if (d) m->heap_id = d;
        if (!r || !p || !d) return -1;
        m->hcap = c;
    }
    size_t i = (*hn)++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (m->heap_rank[up] < rank || (m->heap_rank[up] == rank && m->heap_pos[up] < pos)) break;
        m->heap_rank[i] = m->heap_rank[up];
        m->heap_pos[i] = m->heap_pos[up];
        m->heap_id[i] = m->heap_id[up];
        i = up;
    }
    m->heap_rank[i] = rank;
    m->heap_pos[i] = pos;
    m->heap_id[i] = id;
    return 0;
}

static void heap_pop(tk_bpe *m, size_t *hn, uint32_t *pos, uint32_t *id)
{
    *pos = m->heap_pos[0];
    *id = m->heap_id[0];
    size_t n = --*hn;
    uint32_t r = m->heap_rank[n], p = m->heap_pos[n], d = m->heap_id[n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && (m->heap_rank[c + 1] < m->heap_rank[c] ||
                          (m->heap_rank[c + 1] == m->heap_rank[c] && m->heap_pos[c + 1] < m->heap_pos[c])))
            c++;
        if (r < m->heap_rank[c] || (r == m->heap_rank[c] && p < m->heap_pos[c])) break;
        m->heap_rank[i] = m->heap_rank[c];
        m->heap_pos[i] = m->heap_pos[c];
        m->heap_id[i] = m->heap_id[c];
        i = c;
    }
    m->heap_rank[i] = r;
    m->heap_pos[i] = p;
    m->heap_id[i] = d;
}

static int push_id(fs_ids *out, uint32_t id)
{
    if (out->n == out->cap) {
        size_t c = out->cap ? 2 * out->cap : 1024;
        uint32_t *v = realloc(out->v, c * sizeof *v);
        if (!v) return -1;
        out->v = v;
        out->cap = c;
    }
    out->v[out->n++] = id;
    return 0;
}

fs_status tk_bpe_word(fs_ctx *ctx, tk_bpe *m, const char *w, size_t n, fs_ids *out)
{
    uint32_t id, rank;
    if (n == 0) return FS_OK;
    if (m->ignore_merges && tk_strmap_get(&m->vocab, w, n, &id))
        return push_id(out, id) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer") : FS_OK;
    const uint32_t *cached;
    size_t cnt;
    if (tk_cache_get(&m->cache, w, n, &cached, &cnt)) {
        for (size_t i = 0; i < cnt; i++)
            if (push_id(out, cached[i])) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
        return FS_OK;
    }
    if (grow(m, n) != 0) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer: a word of %zu bytes", n);
    size_t ns = 0;
    int unk_pending = 0;
    for (size_t i = 0; i < n;) {
        size_t l = (size_t)tk_u8len((unsigned char)w[i]);
        if (i + l > n) l = n - i;
        if (tk_strmap_get(&m->vocab, w + i, l, &id)) {
            if (unk_pending) { m->sym[ns++] = (uint32_t)m->unk; unk_pending = 0; }
            m->sym[ns++] = id;
        } else {
            int all = m->byte_fallback;
            for (size_t k = 0; all && k < l; k++) all = m->byte_id[(unsigned char)w[i + k]] != UINT32_MAX;
            if (all) {
                for (size_t k = 0; k < l; k++) m->sym[ns++] = m->byte_id[(unsigned char)w[i + k]];
            } else if (m->unk >= 0) {
                if (unk_pending && !m->fuse_unk) m->sym[ns++] = (uint32_t)m->unk;
                unk_pending = 1;
            }
        }
        i += l;
    }
    if (unk_pending) m->sym[ns++] = (uint32_t)m->unk;
    for (size_t i = 0; i < ns; i++) {
        m->prev[i] = (int32_t)i - 1;
        m->next[i] = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        if (tk_pairmap_get(&m->merges, m->sym[i], m->sym[i + 1], &rank, &id) && heap_push(m, &hn, rank, (uint32_t)i, id))
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
    /* removed symbols: sym = UINT32_MAX */
    while (hn > 0) {
        uint32_t pos, nid, r2, id2;
        heap_pop(m, &hn, &pos, &nid);
        if (m->sym[pos] == UINT32_MAX || m->next[pos] < 0) continue;
        int32_t right = m->next[pos];
        if (!tk_pairmap_get(&m->merges, m->sym[pos], m->sym[right], &r2, &id2) || id2 != nid) continue;
        m->sym[pos] = nid;
        m->sym[right] = UINT32_MAX;
        m->next[pos] = m->next[right];
        if (m->next[right] >= 0) m->prev[m->next[right]] = (int32_t)pos;
        if (m->prev[pos] >= 0) {
            int32_t pv = m->prev[pos];
            if (tk_pairmap_get(&m->merges, m->sym[pv], nid, &r2, &id2) && heap_push(m, &hn, r2, (uint32_t)pv, id2))
                return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
        }
        if (m->next[pos] >= 0) {
            int32_t nx = m->next[pos];
            if (tk_pairmap_get(&m->merges, nid, m->sym[nx], &r2, &id2) && heap_push(m, &hn, r2, pos, id2))
                return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
        }
    }
    size_t first = out->n;
    for (size_t i = 0; i < ns; i++)
        if (m->sym[i] != UINT32_MAX && push_id(out, m->sym[i])) return fs_ctx_err(ctx, FS_ERR_NOMEM, "tokenizer");
    tk_cache_put(&m->cache, w, n, out->v + first, out->n - first);
    return FS_OK;
}

void tk_bpe_free(tk_bpe *m)
{
    tk_strmap_free(&m->vocab);
    tk_pairmap_free(&m->merges);
    tk_cache_free(&m->cache);
    free(m->sym); free(m->prev); free(m->next);
    free(m->heap_rank); free(m->heap_pos); free(m->heap_id);
    memset(m, 0, sizeof *m);
}

int tk_bpe_marker_cuts(const tk_bpe *m)
{
    static const char mk[] = "\xE2\x96\x81";
    uint32_t id;
    if (!tk_strmap_get(&m->vocab, mk, 3, &id)) return 0;
    for (size_t i = 0; i < m->vocab.cap; i++) {
        if (!m->vocab.hash[i]) continue;
        const char *s = m->vocab.arena + m->vocab.koff[i];
        size_t n = m->vocab.klen[i];
        for (size_t k = 1; k + 3 <= n; k++)
            if (!memcmp(s + k, mk, 3) && !(k >= 3 && !memcmp(s + k - 3, mk, 3))) return 0;
    }
    return 1;
}
