/* maps.c: the tokenizer's hash maps (tok-impl.h): vocabulary, merges, and
 * the cache of words already split. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "src/tokenizer/tok-impl.h"

uint64_t tk_hash(const char *s, size_t n)
{
    uint64_t h = XXH3_64bits(s, n);
    return h ? h : 1;
}

static int arena_add(char **a, size_t *len, size_t *cap, const char *s, size_t n, size_t *off)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n + 1) c *= 2;
        char *p = realloc(*a, c);
        if (!p) return -1;
        *a = p;
        *cap = c;
    }
    memcpy(*a + *len, s, n);
    (*a)[*len + n] = '\0';
    *off = *len;
    *len += n + 1;
    return 0;
}

static int strmap_grow(tk_strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint64_t *h = calloc(cap, sizeof *h);
    uint32_t *v = malloc(cap * sizeof *v), *kl = malloc(cap * sizeof *kl);
    size_t *ko = malloc(cap * sizeof *ko);
    if (!h || !v || !kl || !ko) { free(h); free(v); free(kl); free(ko); return -1; }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->hash[i]) continue;
        size_t j = m->hash[i] & (cap - 1);
        while (h[j]) j = (j + 1) & (cap - 1);
        h[j] = m->hash[i];
        v[j] = m->val[i];
        ko[j] = m->koff[i];
        kl[j] = m->klen[i];
    }
    free(m->hash); free(m->val); free(m->koff); free(m->klen);
    m->hash = h; m->val = v; m->koff = ko; m->klen = kl;
    m->cap = cap;
    return 0;
}

int tk_strmap_put(tk_strmap *m, const char *s, size_t n, uint32_t v)
{
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m) != 0) return -1;
    uint64_t h = tk_hash(s, n);
    size_t j = h & (m->cap - 1);
    while (m->hash[j]) {
        if (m->hash[j] == h && m->klen[j] == n && !memcmp(m->arena + m->koff[j], s, n)) {
            m->val[j] = v;
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    size_t off;
    if (arena_add(&m->arena, &m->alen, &m->acap, s, n, &off) != 0) return -1;
    m->hash[j] = h;
    m->val[j] = v;
    m->koff[j] = off;
    m->klen[j] = (uint32_t)n;
    m->n++;
    return 0;
}

int tk_strmap_get(const tk_strmap *m, const char *s, size_t n, uint32_t *v)
{
    if (!m->cap) return 0;
    uint64_t h = tk_hash(s, n);
    size_t j = h & (m->cap - 1);
    while (m->hash[j]) {
        if (m->hash[j] == h && m->klen[j] == n && !memcmp(m->arena + m->koff[j], s, n)) {
            *v = m->val[j];
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

void tk_strmap_free(tk_strmap *m)
{
    free(m->hash); free(m->val); free(m->koff); free(m->klen); free(m->arena);
    memset(m, 0, sizeof *m);
}

static inline size_t pair_slot(uint64_t k, size_t cap)
{
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    k ^= k >> 29;
    return (size_t)k & (cap - 1);
}

static int pairmap_grow(tk_pairmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint64_t *k = malloc(cap * sizeof *k);
    uint32_t *r = malloc(cap * sizeof *r), *id = malloc(cap * sizeof *id);
    if (!k || !r || !id) { free(k); free(r); free(id); return -1; }
    memset(k, 0xff, cap * sizeof *k);
    for (size_t i = 0; i < m->cap; i++) {
        if (m->key[i] == UINT64_MAX) continue;
        size_t j = pair_slot(m->key[i], cap);
        while (k[j] != UINT64_MAX) j = (j + 1) & (cap - 1);
        k[j] = m->key[i];
        r[j] = m->rank[i];
        id[j] = m->id[i];
    }
    free(m->key); free(m->rank); free(m->id);
    m->key = k; m->rank = r; m->id = id;
    m->cap = cap;
    return 0;
}

int tk_pairmap_put(tk_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id)
{
    if ((m->n + 1) * 2 > m->cap && pairmap_grow(m) != 0) return -1;
    uint64_t k = (uint64_t)a << 32 | b;
    size_t j = pair_slot(k, m->cap);
    while (m->key[j] != UINT64_MAX) {
        if (m->key[j] == k) return 0;          /* a repeated merge: the first rank stands */
        j = (j + 1) & (m->cap - 1);
    }
    m->key[j] = k;
    m->rank[j] = rank;
    m->id[j] = id;
    m->n++;
    return 0;
}

int tk_pairmap_get(const tk_pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *id)
{
    if (!m->cap) return 0;
    uint64_t k = (uint64_t)a << 32 | b;
    size_t j = pair_slot(k, m->cap);
    while (m->key[j] != UINT64_MAX) {
        if (m->key[j] == k) {
            *rank = m->rank[j];
            *id = m->id[j];
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return 0;
}

void tk_pairmap_free(tk_pairmap *m)
{
    free(m->key); free(m->rank); free(m->id);
    memset(m, 0, sizeof *m);
}

/* ---- cache ---------------------------------------------------------------- */

#define CACHE_SLOTS (1u << 16)        /* at most half used, then emptied */
#define CACHE_WORD_MAX 128            /* longer words are not kept */

int tk_cache_get(const tk_cache *c, const char *s, size_t n, const uint32_t **ids, size_t *cnt)
{
    if (!c->cap || n > CACHE_WORD_MAX) return 0;
    uint64_t h = tk_hash(s, n);
    size_t j = h & (c->cap - 1);
    while (c->hash[j]) {
        if (c->hash[j] == h && c->klen[j] == n && !memcmp(c->keys + c->koff[j], s, n)) {
            *ids = c->ids + c->off[j];
            *cnt = c->cnt[j];
            return 1;
        }
        j = (j + 1) & (c->cap - 1);
    }
    return 0;
}

void tk_cache_put(tk_cache *c, const char *s, size_t n, const uint32_t *ids, size_t cnt)
{
    if (n > CACHE_WORD_MAX) return;
    if (!c->cap) {
        c->hash = calloc(CACHE_SLOTS, sizeof *c->hash);
        c->off = malloc(CACHE_SLOTS * sizeof *c->off);
        c->cnt = malloc(CACHE_SLOTS * sizeof *c->cnt);
        c->koff = malloc(CACHE_SLOTS * sizeof *c->koff);
        c->klen = malloc(CACHE_SLOTS * sizeof *c->klen);
        if (!c->hash || !c->off || !c->cnt || !c->koff || !c->klen) { tk_cache_free(c); return; }
        c->cap = CACHE_SLOTS;
    }
    if (c->n * 2 >= c->cap) {                       /* full: start again */
        memset(c->hash, 0, c->cap * sizeof *c->hash);
        c->n = 0;
        c->klen_used = 0;
        c->ids_used = 0;
    }
    if (c->ids_used + cnt > c->ids_cap) {
        size_t cap = c->ids_cap ? c->ids_cap : 65536;
        while (cap < c->ids_used + cnt) cap *= 2;
        uint32_t *p = realloc(c->ids, cap * sizeof *p);
        if (!p) return;
        c->ids = p;
        c->ids_cap = cap;
    }
    size_t koff;
    if (arena_add(&c->keys, &c->klen_used, &c->kcap, s, n, &koff) != 0) return;
    uint64_t h = tk_hash(s, n);
    size_t j = h & (c->cap - 1);
    while (c->hash[j]) j = (j + 1) & (c->cap - 1);
    c->hash[j] = h;
    c->koff[j] = koff;
    c->klen[j] = (uint32_t)n;
    c->off[j] = (uint32_t)c->ids_used;
    c->cnt[j] = (uint32_t)cnt;
    memcpy(c->ids + c->ids_used, ids, cnt * sizeof *ids);
    c->ids_used += cnt;
    c->n++;
}

void tk_cache_free(tk_cache *c)
{
    free(c->hash); free(c->off); free(c->cnt); free(c->koff); free(c->klen); free(c->keys); free(c->ids);
    memset(c, 0, sizeof *c);
}
