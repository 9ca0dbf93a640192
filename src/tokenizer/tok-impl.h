/* tok-impl.h: the parts of the tokenizer (tokenizer.h) that its files share:
 * the hash maps, the normalizer and pre-tokenizer steps, the BPE model, the
 * added tokens, and the piece lists the steps pass along.  Not for other
 * folders. */
#ifndef FS_TOK_IMPL_H
#define FS_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "src/tokenizer/tokenizer.h"

/* A regex match's data and context (the JIT stack), one per tokenizer. */
typedef struct tk_rx {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} tk_rx;

/* ---- maps (maps.c) ---------------------------------------------------------- */

/* string -> uint32, open addressing; the strings live in the map's arena */
typedef struct tk_strmap {
    uint64_t *hash;      /* 0: empty slot */
    uint32_t *val;
    size_t *koff;        /* into arena */
    uint32_t *klen;
    size_t cap, n;
    char *arena;
    size_t alen, acap;
} tk_strmap;

int tk_strmap_put(tk_strmap *m, const char *s, size_t n, uint32_t v);     /* 0, or -1 out of memory; replaces */
int tk_strmap_get(const tk_strmap *m, const char *s, size_t n, uint32_t *v); /* 1 found */
void tk_strmap_free(tk_strmap *m);

/* (left id, right id) -> (rank, merged id) */
typedef struct tk_pairmap {
    uint64_t *key;       /* UINT64_MAX: empty */
    uint32_t *rank, *id;
    size_t cap, n;
} tk_pairmap;

int tk_pairmap_put(tk_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id);  /* keeps the first */
int tk_pairmap_get(const tk_pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *id);
void tk_pairmap_free(tk_pairmap *m);

/* word -> ids, the BPE results of words seen before (bounded; emptied when full) */
typedef struct tk_cache {
    uint64_t *hash;
    uint32_t *off, *cnt;         /* ids[off .. off+cnt) */
    size_t *koff;
    uint32_t *klen;
    size_t cap, n;
    char *keys;
    size_t klen_used, kcap;
    uint32_t *ids;
    size_t ids_used, ids_cap;
} tk_cache;

int tk_cache_get(const tk_cache *c, const char *s, size_t n, const uint32_t **ids, size_t *cnt);
void tk_cache_put(tk_cache *c, const char *s, size_t n, const uint32_t *ids, size_t cnt);  /* best effort */
void tk_cache_free(tk_cache *c);

uint64_t tk_hash(const char *s, size_t n);   /* never 0 */

/* ---- UTF-8 (utf8.c) ------------------------------------------------------- */

/* Length of the UTF-8 character at s (1..4) of a valid string. */
static inline int tk_u8len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}
/* Decodes the character at s of a valid string. */
int32_t tk_u8dec(const char *s, int *len);
int tk_u8enc(int32_t cp, char *out);   /* bytes written, 1..4 */
/* Offset of the first invalid byte of s[0..n), or n when it is valid UTF-8. */
size_t tk_utf8_check(const char *s, size_t n);
/* s with every maximal invalid subpart replaced by U+FFFD (a new buffer). */
char *tk_utf8_repair(const char *s, size_t n, size_t *outn);
/* Unicode White_Space (Rust's char::is_whitespace). */
int tk_is_space(int32_t cp);

/* A growable byte buffer. */
typedef struct tk_buf {
    char *p;
    size_t n, cap;
} tk_buf;
int tk_buf_add(tk_buf *b, const void *s, size_t n);   /* 0 or -1 */

/* ---- byte-level mapping (bytelevel.c) ------------------------------------- */

/* GPT-2's bytes_to_unicode: every byte has a printable character. */
typedef struct tk_bytemap {
    char enc[256][2];
    uint8_t enc_len[256];
    int16_t dec[324];         /* code point (< 324) -> byte, -1 */
} tk_bytemap;

void tk_bytemap_init(tk_bytemap *m);
/* Appends the mapped text of s[0..n) to b. */
int tk_bytemap_apply(const tk_bytemap *m, const char *s, size_t n, tk_buf *b);

/* ---- pieces ---------------------------------------------------------------- */

typedef struct tk_piece {
    size_t off, len;      /* in the list's buffer */
    int start;            /* begins at offset 0 of the original text (Metaspace "first") */
} tk_piece;

typedef struct tk_pieces {
    tk_buf text;
    tk_piece *v;
    size_t n, cap;
} tk_pieces;

int tk_pieces_add(tk_pieces *p, size_t off, size_t len, int start);
void tk_pieces_reset(tk_pieces *p);
void tk_pieces_free(tk_pieces *p);

/* ---- normalizers (normalize.c) -------------------------------------------- */

typedef enum tk_norm_kind {
    TK_NFC, TK_NFKC, TK_NFD, TK_NFKD, TK_PREPEND, TK_REPLACE, TK_STRIP, TK_LOWERCASE
} tk_norm_kind;

typedef struct tk_norm {
    tk_norm_kind kind;
    char *a, *b;            /* PREPEND: a; REPLACE: pattern string a (or re) -> content b */
    size_t alen, blen;
    pcre2_code *re;
    int left, right;        /* STRIP */
} tk_norm;

/* Applies the steps to s[0..n) into out (emptied first). */
fs_status tk_normalize(fs_ctx *ctx, const tk_norm *steps, int nsteps, const tk_rx *rx, const char *s, size_t n,
                       tk_buf *out);

/* ---- pre-tokenizers (pretok.c) -------------------------------------------- */

typedef enum tk_pre_kind { TK_SPLIT, TK_BYTELEVEL, TK_METASPACE, TK_DIGITS } tk_pre_kind;
typedef enum tk_behavior { TK_REMOVED, TK_ISOLATED, TK_MERGED_PREV, TK_MERGED_NEXT, TK_CONTIGUOUS } tk_behavior;

typedef struct tk_pre {
    tk_pre_kind kind;
    pcre2_code *re;         /* SPLIT with a regex; BYTELEVEL with use_regex */
    char *str;              /* SPLIT with a string */
    size_t slen;
    tk_behavior behavior;
    int invert;
    int add_prefix_space;   /* BYTELEVEL */
    char repl[8];           /* METASPACE */
    int repl_len;
    int prepend;            /* METASPACE: 0 never, 1 first, 2 always */
    int split;              /* METASPACE */
    int individual;         /* DIGITS */
} tk_pre;

/* Runs the steps over in (its pieces), leaving the result in in; tmp is scratch. */
fs_status tk_pretokenize(fs_ctx *ctx, const tk_pre *steps, int nsteps, const tk_bytemap *bm, const tk_rx *rx,
                         tk_pieces *in, tk_pieces *tmp);

/* ---- BPE (bpe.c) ------------------------------------------------------------- */

typedef struct tk_bpe {
    tk_strmap vocab;
    tk_pairmap merges;
    int64_t unk;            /* -1: none */
    int fuse_unk, byte_fallback, ignore_merges;
    uint32_t byte_id[256];  /* <0xNN>, UINT32_MAX when absent */
    tk_cache cache;
    /* scratch of one word */
    uint32_t *sym, *heap_rank, *heap_pos, *heap_id;
    int32_t *prev, *next;
    size_t scap, hcap;
} tk_bpe;

fs_status tk_bpe_word(fs_ctx *ctx, tk_bpe *m, const char *w, size_t n, fs_ids *out);
/* Whether no vocabulary token holds "\u2581" after another character (and
 * "\u2581" is one): then no merge joins a character to a following "\u2581"
 * and a word is split exactly as its parts cut before such "\u2581" are. */
int tk_bpe_marker_cuts(const tk_bpe *m);
void tk_bpe_free(tk_bpe *m);

/* ---- added tokens (added.c) ------------------------------------------------ */

typedef struct tk_added {
    char *s;
    size_t len;
    uint32_t id;
    int special, normalized, lstrip, rstrip, single_word;
} tk_added;

typedef struct tk_addset {
    tk_added **v;           /* those of one kind (normalized or not), sorted by first byte */
    size_t n;
    int32_t first[257];     /* v[first[c] .. first[c+1]) start with byte c */
} tk_addset;

/* The next match in s[from..n): 1 with [*ms, *me) and its id (lstrip and
 * rstrip applied, prev_end the end of the previous match), 0 when none. */
int tk_added_next(const tk_addset *a, const char *s, size_t n, size_t from, size_t prev_end, size_t *ms, size_t *me,
                  uint32_t *id);
int tk_addset_build(tk_addset *a, tk_added *all, size_t nall, int normalized);
void tk_addset_free(tk_addset *a);

/* ---- the tokenizer ------------------------------------------------------------ */

typedef enum tk_kind { TK_KIND_BYTELEVEL, TK_KIND_SENTENCEPIECE } tk_kind;

struct fs_tok {
    char path[4400];
    tk_kind kind;
    tk_norm *norm;
    int nnorm;
    tk_pre *pre;
    int npre;
    tk_bpe bpe;
    tk_added *added;
    size_t nadded;
    tk_addset raw_set, norm_set;   /* added tokens matched before / after normalization */
    tk_bytemap bm;
    int add_bos;
    int64_t bos, eos;
    int64_t vocab_size;
    int strip_decoded_space;       /* the normalizer or Metaspace prepends "\u2581" */
    int cut_before_marker;         /* no token has "\u2581" after another character: a word
                                      may be cut before each such "\u2581" (bpe.c) */
    /* id -> text, for decode */
    size_t *tok_off;
    uint32_t *tok_len;
    char *tok_text;
    uint8_t *tok_is_added;
    /* scratch */
    tk_rx rx;
    tk_buf normbuf;
    tk_pieces pa, pb;
};

/* The parts of tokenizer.json (load-parts.c); tk_compile: a regex of the file. */
fs_status tk_load_model(fs_ctx *ctx, fs_tok *t, const void *model_json);
fs_status tk_load_norm(fs_ctx *ctx, fs_tok *t, const void *json);
fs_status tk_load_pre(fs_ctx *ctx, fs_tok *t, const void *json);
fs_status tk_compile(fs_ctx *ctx, const char *path, const char *what, const char *pat, size_t len, pcre2_code **out);

#endif
