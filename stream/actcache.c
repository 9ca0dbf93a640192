/* actcache.c: the activation cache files of actcache.h: the byte shuffle,
 * the streaming writer (chunk -> shuffle -> LZ4 or raw -> pwrite; header and
 * table last; fsync, rename, fsync of the folder) and the validating reader.
 *
 * Owns: the writer's file descriptor, temporary file, chunk buffers and
 * encoded table; the reader's descriptor, parsed table and decode buffers.
 *
 * Invariants:
 *  1. A writer's payloads go to the temporary file at their final offsets
 *     (from 80 + 32 * nchunks on, contiguous); the header and table are
 *     written last, so a file whose header checksum matches was completely
 *     written, and the final path only ever names such a file (rename after
 *     fsync).
 *  2. w->given rows have been accepted; w->fill of them (< the current
 *     chunk's rows) wait in w->buf; every earlier chunk is written and its
 *     table entry encoded in w->meta.
 *  3. Once w->failed is set, nothing more is written; close and abort remove
 *     the temporary file.
 *  4. After fs_act_open every table entry has been checked against the header
 *     and the file size, so offsets, sizes and row ranges used by reads are
 *     in bounds and their arithmetic cannot overflow (nchunks <= 2^20, raw
 *     chunk <= 2^30 bytes).
 *  5. f->cached names the chunk whose verified raw bytes are in f->rbuf, or
 *     is -1.  No byte reaches a caller before its chunk's checksum matched.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "stream/actcache.h"


/* LZ4 cannot compress better than 255:1; a table claiming more is forged,
 * and refusing it bounds what a read allocates by the file's size. */
#define LZ4_MAX_RATIO 256u

typedef unsigned long long ull;

/* ---- little-endian fields -------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- shuffle ---------------------------------------------------------------- */

/* Inlined with a constant es per call site so each width gets its own loop. */
static inline void shuffle_es(uint8_t *restrict d, const uint8_t *restrict s, size_t es,
                              size_t n)
{
    for (size_t k = 0; k < es; k++) {
        uint8_t *dk = d + k * n;
        for (size_t i = 0; i < n; i++) dk[i] = s[i * es + k];
    }
}

static inline void unshuffle_es(uint8_t *restrict d, const uint8_t *restrict s, size_t es,
                                size_t n)
{
    for (size_t k = 0; k < es; k++) {
        const uint8_t *sk = s + k * n;
        for (size_t i = 0; i < n; i++) d[i * es + k] = sk[i];
    }
}

void fs_act_shuffle(void *dst, const void *src, size_t elem_size, size_t count)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (count == 0 || elem_size == 0) return;
    switch (elem_size) {
    case 1: memcpy(d, s, count); break;
    case 2: {
        /* both planes in one pass: half the reads of the generic loop */
        uint8_t *restrict d0 = d, *restrict d1 = d + count;
        for (size_t i = 0; i < count; i++) {
            d0[i] = s[2 * i];
            d1[i] = s[2 * i + 1];
        }
        break;
    }
    case 4: shuffle_es(d, s, 4, count); break;
    case 8: shuffle_es(d, s, 8, count); break;
    default: shuffle_es(d, s, elem_size, count); break;
    }
}

void fs_act_unshuffle(void *dst, const void *src, size_t elem_size, size_t count)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (count == 0 || elem_size == 0) return;
    switch (elem_size) {
    case 1: memcpy(d, s, count); break;
    case 2: {
        const uint8_t *restrict s0 = s, *restrict s1 = s + count;
        for (size_t i = 0; i < count; i++) {
            d[2 * i] = s0[i];
            d[2 * i + 1] = s1[i];
        }
        break;
    }
    case 4: unshuffle_es(d, s, 4, count); break;
    case 8: unshuffle_es(d, s, 8, count); break;
    default: unshuffle_es(d, s, elem_size, count); break;
    }
}

/* ---- file I/O ------------------------------------------------------------------ */

/* XXH3-64 of n checksums laid out as u64 LE: the journal checksum. */
static fs_status journal_sum(fs_ctx *ctx, const char *path, const uint64_t *sums, uint64_t n,
                             uint64_t *out)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: checksum state", path);
    XXH3_64bits_reset(st);
    uint8_t b[8 * 64];
    for (uint64_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < 64 && i < n; k++, i++) put64(b + 8 * k, sums[i]);
        XXH3_64bits_update(st, b, 8 * k);
    }
    *out = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return FS_OK;
}

/* ---- writer --------------------------------------------------------------------- */

struct fs_act_writer {
    int fd;                  /* the temporary file, -1 once closed */
    char *path, *tmp;        /* final and temporary paths */
    int elem_size;
    uint64_t row_bytes, rows, chunk_rows, nchunks;
    uint64_t given;          /* rows accepted so far */
    uint64_t fill;           /* rows waiting in buf */
    uint64_t chunk;          /* next chunk to write */
    uint64_t next_off;       /* where its payload goes */
    size_t chunk_bytes;      /* raw bytes of a full chunk */
    int cbound;              /* LZ4_compressBound(chunk_bytes) */
    uint8_t *buf;            /* [chunk_bytes] partial chunk, allocated on first need */
    uint8_t *shuf;           /* [chunk_bytes] shuffled chunk */
    uint8_t *cbuf;           /* [cbound] LZ4 output */
    uint8_t *meta;           /* [80 + 32 * nchunks] header + encoded table */
    uint64_t *sums;          /* [nchunks] chunk checksums */
    uint64_t tag;            /* the header's label (FS_ACT_NO_TAG unless set) */
    fs_status failed;        /* FS_OK, or the error that made the writer FAILED */
};

static void writer_free(fs_act_writer *w)
{
    if (w->fd >= 0) close(w->fd);
    free(w->path);
    free(w->tmp);
    free(w->buf);
    free(w->shuf);
    free(w->cbuf);
    free(w->meta);
    free(w->sums);
    free(w);
}

void fs_act_writer_abort(fs_act_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    unlink(w->tmp);
    writer_free(w);
}

fs_status fs_act_writer_open(fs_ctx *ctx, const char *path, int elem_size, uint64_t row_bytes,
                             uint64_t rows, uint64_t chunk_rows, fs_act_writer **out)
{
    *out = NULL;
    if (elem_size != 1 && elem_size != 2 && elem_size != 4 && elem_size != 8)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: element size %d is not 1, 2, 4 or 8", path,
                          elem_size);
    if (row_bytes == 0 || row_bytes % (uint64_t)elem_size != 0)
        return fs_ctx_err(ctx, FS_ERR_USAGE,
                          "%s: row of %llu bytes is not a positive multiple of the element "
                          "size %d", path, (ull)row_bytes, elem_size);
    if (chunk_rows == 0)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: chunks of 0 rows", path);
    if (rows > 0 && chunk_rows > rows) chunk_rows = rows;
    if (chunk_rows > FS_ACT_MAX_CHUNK_BYTES / row_bytes)
        return fs_ctx_err(ctx, FS_ERR_USAGE,
                          "%s: a chunk of %llu rows of %llu bytes exceeds %llu bytes", path,
                          (ull)chunk_rows, (ull)row_bytes, (ull)FS_ACT_MAX_CHUNK_BYTES);
    uint64_t nchunks = rows == 0 ? 0 : (rows - 1) / chunk_rows + 1;
    if (nchunks > FS_ACT_MAX_CHUNKS)
        return fs_ctx_err(ctx, FS_ERR_USAGE,
                          "%s: %llu rows in chunks of %llu make %llu chunks (at most %llu)", path,
                          (ull)rows, (ull)chunk_rows, (ull)nchunks, (ull)FS_ACT_MAX_CHUNKS);

    fs_act_writer *w = calloc(1, sizeof *w);
    if (!w) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: writer", path);
    w->fd = -1;
    w->elem_size = elem_size;
    w->row_bytes = row_bytes;
    w->rows = rows;
    w->chunk_rows = chunk_rows;
    w->nchunks = nchunks;
    w->tag = FS_ACT_NO_TAG;
    w->next_off = FS_ACT_HEADER_BYTES + FS_ACT_ENTRY_BYTES * nchunks;
    w->chunk_bytes = (size_t)(chunk_rows * row_bytes);
    size_t plen = strlen(path), tlen = plen + 32;
    w->path = strdup(path);
    w->tmp = malloc(tlen);
    w->meta = calloc(1, (size_t)w->next_off);
    w->sums = fs_alloc2(nchunks ? (size_t)nchunks : 1, sizeof *w->sums);
    if (nchunks > 0) {
        w->cbound = LZ4_compressBound((int)w->chunk_bytes);
        w->shuf = malloc(w->chunk_bytes);
        w->cbuf = w->cbound > 0 ? malloc((size_t)w->cbound) : NULL;
    }
    if (!w->path || !w->tmp || !w->meta || !w->sums ||
        (nchunks > 0 && (!w->shuf || !w->cbuf))) {
        writer_free(w);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: writer buffers (chunks of %llu bytes)", path,
                          (ull)chunk_rows * row_bytes);
    }
    snprintf(w->tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        fs_status rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: create: %s", w->tmp, strerror(errno));
        writer_free(w);
        return rc;
    }
    *out = w;
    return FS_OK;
}

/* Rows in chunk c (the last one may be short). */
static uint64_t chunk_nrows(uint64_t rows, uint64_t chunk_rows, uint64_t c)
{
    uint64_t first = c * chunk_rows;
    return rows - first < chunk_rows ? rows - first : chunk_rows;
}

/* Writes the next chunk from raw (its nrows * row_bytes bytes). */
static fs_status write_chunk(fs_ctx *ctx, fs_act_writer *w, const uint8_t *raw, uint64_t nrows)
{
    size_t n = (size_t)(nrows * w->row_bytes);
    uint64_t sum = XXH3_64bits(raw, n);
    fs_act_shuffle(w->shuf, raw, (size_t)w->elem_size, n / (size_t)w->elem_size);
    int c = LZ4_compress_default((const char *)w->shuf, (char *)w->cbuf, (int)n, w->cbound);
    const uint8_t *payload = raw;
    uint32_t stored = (uint32_t)n, flags = FS_ACT_CHUNK_RAW;
    /* LZ4 only when it saves at least 1/32: decoding costs more than it saves otherwise */
    if (c > 0 && (size_t)c < n && (size_t)c <= n - n / 32) {
        payload = w->cbuf;
        stored = (uint32_t)c;
        flags = FS_ACT_CHUNK_LZ4;
    }
    fs_status rc = fs_pwrite_full(ctx, w->fd, w->tmp, payload, stored, w->next_off, "act-write");
    if (rc != FS_OK) return rc;
    uint8_t *e = w->meta + FS_ACT_HEADER_BYTES + FS_ACT_ENTRY_BYTES * w->chunk;
    put64(e, w->next_off);
    put32(e + 8, stored);
    put32(e + 12, (uint32_t)n);
    put32(e + 16, flags);
    put32(e + 20, 0);
    put64(e + 24, sum);
    w->sums[w->chunk] = sum;
    w->next_off += stored;
    w->chunk++;
    fs_crashpoint(ctx, "act-chunk");   /* tests: killed with the file half written */
    return FS_OK;
}

fs_status fs_act_writer_put(fs_ctx *ctx, fs_act_writer *w, const void *rows_data, uint64_t nrows)
{
    if (w->failed != FS_OK)
        return fs_ctx_err(ctx, w->failed, "%s: the writer failed earlier", w->tmp);
    if (nrows > w->rows - w->given)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: %llu more rows given after %llu of %llu", w->path,
                          (ull)nrows, (ull)w->given, (ull)w->rows);
    if (nrows > 0 && !rows_data)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: NULL rows", w->path);
    const uint8_t *p = rows_data;
    fs_status rc = FS_OK;
    while (nrows > 0) {
        uint64_t cn = chunk_nrows(w->rows, w->chunk_rows, w->chunk);
        if (w->fill == 0 && nrows >= cn) {
            /* a whole chunk in the caller's buffer: no copy */
            if ((rc = write_chunk(ctx, w, p, cn)) != FS_OK) break;
            p += cn * w->row_bytes;
            nrows -= cn;
            w->given += cn;
            continue;
        }
        if (!w->buf && !(w->buf = malloc(w->chunk_bytes))) {
            rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: chunk buffer of %zu bytes", w->path,
                            w->chunk_bytes);
            break;
        }
        uint64_t take = cn - w->fill < nrows ? cn - w->fill : nrows;
        memcpy(w->buf + w->fill * w->row_bytes, p, (size_t)(take * w->row_bytes));
        p += take * w->row_bytes;
        nrows -= take;
        w->given += take;
        w->fill += take;
        if (w->fill == cn) {
            if ((rc = write_chunk(ctx, w, w->buf, cn)) != FS_OK) break;
            w->fill = 0;
        }
    }
    if (rc != FS_OK) w->failed = rc;
    return rc;
}

fs_status fs_act_writer_close(fs_ctx *ctx, fs_act_writer *w, uint64_t *checksum_out)
{
    fs_status rc = FS_OK;
    if (w->failed != FS_OK) {
        rc = fs_ctx_err(ctx, w->failed, "%s: the writer failed earlier", w->tmp);
        goto fail;
    }
    if (w->given < w->rows) {
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s: closed after %llu of %llu rows; file discarded",
                        w->path, (ull)w->given, (ull)w->rows);
        goto fail;
    }
    uint64_t sum = 0;
    if ((rc = journal_sum(ctx, w->path, w->sums, w->nchunks, &sum)) != FS_OK) goto fail;

    uint8_t *h = w->meta;
    memcpy(h, FS_ACT_MAGIC, 8);
    put32(h + 8, FS_ACT_VERSION);
    put32(h + 12, (uint32_t)w->elem_size);
    put64(h + 16, w->row_bytes);
    put64(h + 24, w->rows);
    put64(h + 32, w->chunk_rows);
    put64(h + 40, w->nchunks);
    put64(h + 48, w->tag);
    put64(h + 56, 0);
    put64(h + 64, XXH3_64bits(h + FS_ACT_HEADER_BYTES, (size_t)(FS_ACT_ENTRY_BYTES * w->nchunks)));
    put64(h + 72, XXH3_64bits(h, 72));
    uint64_t meta_bytes = FS_ACT_HEADER_BYTES + FS_ACT_ENTRY_BYTES * w->nchunks;
    if ((rc = fs_pwrite_full(ctx, w->fd, w->tmp, h, meta_bytes, 0, "act-write")) != FS_OK) goto fail;
    if (fsync(w->fd) != 0) {
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: fsync: %s", w->tmp, strerror(errno));
        goto fail;
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) {
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: close: %s", w->tmp, strerror(errno));
        goto fail;
    }
    fs_crashpoint(ctx, "act-written");
    if (rename(w->tmp, w->path) != 0) {
        rc = fs_ctx_err(ctx, FS_ERR_IO, "rename %s -> %s: %s", w->tmp, w->path, strerror(errno));
        goto fail;
    }
    if ((rc = fs_fsync_dir_of(ctx, w->path)) != FS_OK) {
        /* not durable: take it back rather than leave a file the journal cannot vouch for */
        unlink(w->path);
        writer_free(w);
        return rc;
    }
    if (checksum_out) *checksum_out = sum;
    writer_free(w);
    return FS_OK;
fail:
    fs_act_writer_abort(w);
    return rc;
}

/* ---- reader --------------------------------------------------------------------- */

typedef struct act_entry {
    uint64_t off;
    uint32_t stored, raw, flags;
    uint64_t sum;
} act_entry;

struct fs_act_file {
    int fd;
    char *path;
    int elem_size;
    uint64_t row_bytes, rows, chunk_rows, nchunks, size;
    act_entry *ent;          /* [nchunks] */
    uint64_t checksum;       /* journal checksum */
    uint64_t tag;            /* the header's label */
    size_t max_stored;       /* largest LZ4 payload */
    size_t max_raw;          /* largest raw chunk */
    uint8_t *cbuf;           /* [max_stored] LZ4 payload, on first need */
    uint8_t *sbuf;           /* [max_raw] shuffled chunk, on first need */
    uint8_t *rbuf;           /* [max_raw] verified raw chunk `cached`, on first need */
    int64_t cached;
};

void fs_act_close(fs_act_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f->ent);
    free(f->cbuf);
    free(f->sbuf);
    free(f->rbuf);
    free(f);
}

uint64_t fs_act_rows(const fs_act_file *f) { return f->rows; }
uint64_t fs_act_row_bytes(const fs_act_file *f) { return f->row_bytes; }
int fs_act_elem_size(const fs_act_file *f) { return f->elem_size; }
uint64_t fs_act_chunk_rows(const fs_act_file *f) { return f->chunk_rows; }
uint64_t fs_act_nchunks(const fs_act_file *f) { return f->nchunks; }
uint64_t fs_act_checksum(const fs_act_file *f) { return f->checksum; }
uint64_t fs_act_tag(const fs_act_file *f) { return f->tag; }

void fs_act_writer_set_tag(fs_act_writer *w, uint64_t tag)
{
    w->tag = tag;
}

/* Header fields and table of an open file (fd, path, size set). */
static fs_status parse(fs_ctx *ctx, fs_act_file *f)
{
    const char *path = f->path;
    uint8_t h[FS_ACT_HEADER_BYTES];
    if (f->size < FS_ACT_HEADER_BYTES)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: %llu bytes, shorter than the %u-byte header (truncated?)", path,
                          (ull)f->size, FS_ACT_HEADER_BYTES);
    fs_status rc = fs_pread_full(ctx, f->fd, path, h, sizeof h, 0);
    if (rc != FS_OK) return rc;
    if (memcmp(h, FS_ACT_MAGIC, 8) != 0)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: not an activation cache file (bad magic)",
                          path);
    if (get64(h + 72) != XXH3_64bits(h, 72))
        return fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: header checksum mismatch", path);
    uint32_t version = get32(h + 8), es = get32(h + 12);
    uint64_t row_bytes = get64(h + 16), rows = get64(h + 24), chunk_rows = get64(h + 32);
    uint64_t nchunks = get64(h + 40);
    f->tag = get64(h + 48);
    if (version != FS_ACT_VERSION)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: format version %u (this build reads %u)",
                          path, version, FS_ACT_VERSION);
    if (es != 1 && es != 2 && es != 4 && es != 8)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: element size %u", path, es);
    if (get64(h + 56) != 0)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: reserved header field is not 0", path);
    if (row_bytes == 0 || row_bytes % es != 0 || row_bytes > FS_ACT_MAX_CHUNK_BYTES)
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: row size %llu (element size %u)", path,
                          (ull)row_bytes, es);
    if (chunk_rows == 0 || chunk_rows > FS_ACT_MAX_CHUNK_BYTES / row_bytes ||
        (rows > 0 && chunk_rows > rows))
        return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: chunks of %llu rows (%llu rows of %llu bytes)",
                          path, (ull)chunk_rows, (ull)rows, (ull)row_bytes);
    uint64_t want = rows == 0 ? 0 : (rows - 1) / chunk_rows + 1;
    if (nchunks != want || nchunks > FS_ACT_MAX_CHUNKS)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: %llu chunks for %llu rows in chunks of %llu (expected %llu, at "
                          "most %llu)", path, (ull)nchunks, (ull)rows, (ull)chunk_rows, (ull)want,
                          (ull)FS_ACT_MAX_CHUNKS);
    uint64_t tbytes = FS_ACT_ENTRY_BYTES * nchunks, data_off = FS_ACT_HEADER_BYTES + tbytes;
    if (data_off > f->size)
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: the chunk table ends at %llu, past the end of the file (%llu "
                          "bytes; truncated?)", path, (ull)data_off, (ull)f->size);
    f->elem_size = (int)es;
    f->row_bytes = row_bytes;
    f->rows = rows;
    f->chunk_rows = chunk_rows;
    f->nchunks = nchunks;

    uint8_t *t = malloc(tbytes ? (size_t)tbytes : 1);
    f->ent = fs_alloc2(nchunks ? (size_t)nchunks : 1, sizeof *f->ent);
    uint64_t *sums = fs_alloc2(nchunks ? (size_t)nchunks : 1, sizeof *sums);
    if (!t || !f->ent || !sums) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: table of %llu chunks", path, (ull)nchunks);
        goto out;
    }
    if ((rc = fs_pread_full(ctx, f->fd, path, t, tbytes, FS_ACT_HEADER_BYTES)) != FS_OK) goto out;
    if (get64(h + 64) != XXH3_64bits(t, (size_t)tbytes)) {
        rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: chunk table checksum mismatch", path);
        goto out;
    }
    uint64_t at = data_off;
    for (uint64_t i = 0; i < nchunks; i++) {
        const uint8_t *e = t + FS_ACT_ENTRY_BYTES * i;
        act_entry *x = &f->ent[i];
        x->off = get64(e);
        x->stored = get32(e + 8);
        x->raw = get32(e + 12);
        x->flags = get32(e + 16);
        x->sum = get64(e + 24);
        sums[i] = x->sum;
        uint64_t raw = chunk_nrows(rows, chunk_rows, i) * row_bytes;
        const char *bad = NULL;
        if (x->off != at) bad = "offset is not where the previous payload ends";
        else if (x->raw != raw) bad = "raw size does not match its rows";
        else if (get32(e + 20) != 0) bad = "reserved field is not 0";
        else if (x->flags == FS_ACT_CHUNK_RAW && x->stored != x->raw)
            bad = "raw payload size differs from the raw size";
        else if (x->flags == FS_ACT_CHUNK_LZ4 &&
                 (x->stored == 0 || x->stored >= x->raw || x->raw / LZ4_MAX_RATIO > x->stored))
            bad = "LZ4 payload size impossible for its raw size";
        else if (x->flags != FS_ACT_CHUNK_RAW && x->flags != FS_ACT_CHUNK_LZ4)
            bad = "unknown flags";
        else if (x->stored > f->size - at)
            bad = "payload extends past the end of the file (truncated?)";
        if (bad) {
            rc = fs_ctx_err(ctx, FS_ERR_FORMAT,
                            "%s: chunk %llu of %llu (offset %llu, stored %u, raw %u, flags %u): %s",
                            path, (ull)i, (ull)nchunks, (ull)x->off, x->stored, x->raw, x->flags,
                            bad);
            goto out;
        }
        at += x->stored;
        if (x->flags == FS_ACT_CHUNK_LZ4 && x->stored > f->max_stored) f->max_stored = x->stored;
        if (x->raw > f->max_raw) f->max_raw = x->raw;
    }
    if (at != f->size) {
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT,
                        "%s: payloads end at %llu but the file has %llu bytes (trailing data)",
                        path, (ull)at, (ull)f->size);
        goto out;
    }
    rc = journal_sum(ctx, path, sums, nchunks, &f->checksum);
out:
    free(t);
    free(sums);
    return rc;
}

fs_status fs_act_open(fs_ctx *ctx, const char *path, fs_act_file **out)
{
    *out = NULL;
    fs_act_file *f = calloc(1, sizeof *f);
    if (!f) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: reader", path);
    f->cached = -1;
    f->fd = -1;
    if (!(f->path = strdup(path))) {
        fs_act_close(f);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: reader", path);
    }
    fs_status rc;
    struct stat st;
    f->fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);   /* never blocks on a named pipe */
    if (f->fd < 0) {
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(f->fd, &st) != 0) {
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: not a regular file", path);
        goto fail;
    }
    if (fcntl(f->fd, F_SETFL, fcntl(f->fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    f->size = (uint64_t)st.st_size;
    if ((rc = parse(ctx, f)) != FS_OK) goto fail;
    *out = f;
    return FS_OK;
fail:
    fs_act_close(f);
    return rc;
}

/* Decodes chunk c into out (its raw bytes) and checks its checksum. */
static fs_status decode_chunk(fs_ctx *ctx, fs_act_file *f, uint64_t c, uint8_t *out)
{
    const act_entry *x = &f->ent[c];
    uint64_t r0 = c * f->chunk_rows, r1 = r0 + x->raw / f->row_bytes;
    fs_status rc;
    if (x->flags == FS_ACT_CHUNK_RAW) {
        if ((rc = fs_pread_full(ctx, f->fd, f->path, out, x->stored, x->off)) != FS_OK) return rc;
    } else {
        if ((!f->cbuf && !(f->cbuf = malloc(f->max_stored))) ||
            (!f->sbuf && !(f->sbuf = malloc(f->max_raw))))
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: decode buffers of %zu bytes", f->path,
                              f->max_raw);
        if ((rc = fs_pread_full(ctx, f->fd, f->path, f->cbuf, x->stored, x->off)) != FS_OK)
            return rc;
        int got = LZ4_decompress_safe((const char *)f->cbuf, (char *)f->sbuf, (int)x->stored,
                                      (int)x->raw);
        if (got < 0 || (uint32_t)got != x->raw)
            return fs_ctx_err(ctx, FS_ERR_CORRUPT,
                              "%s: chunk %llu of %llu (rows %llu..%llu, offset %llu): LZ4 data "
                              "does not decode to %u bytes", f->path, (ull)c, (ull)f->nchunks,
                              (ull)r0, (ull)r1 - 1, (ull)x->off, x->raw);
        fs_act_unshuffle(out, f->sbuf, (size_t)f->elem_size, x->raw / (size_t)f->elem_size);
    }
    if (XXH3_64bits(out, x->raw) != x->sum)
        return fs_ctx_err(ctx, FS_ERR_CORRUPT,
                          "%s: chunk %llu of %llu (rows %llu..%llu, offset %llu): checksum "
                          "mismatch", f->path, (ull)c, (ull)f->nchunks, (ull)r0, (ull)r1 - 1,
                          (ull)x->off);
    return FS_OK;
}

/* Chunk c's verified bytes in f->rbuf. */
static fs_status load_cached(fs_ctx *ctx, fs_act_file *f, uint64_t c)
{
    if (f->cached == (int64_t)c) return FS_OK;
    if (!f->rbuf && !(f->rbuf = malloc(f->max_raw)))
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: chunk buffer of %zu bytes", f->path, f->max_raw);
    f->cached = -1;
    fs_status rc = decode_chunk(ctx, f, c, f->rbuf);
    if (rc == FS_OK) f->cached = (int64_t)c;
    return rc;
}

fs_status fs_act_read_rows(fs_ctx *ctx, fs_act_file *f, uint64_t row0, uint64_t nrows, void *dst)
{
    if (row0 > f->rows || nrows > f->rows - row0)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: rows %llu + %llu past the end (%llu rows)",
                          f->path, (ull)row0, (ull)nrows, (ull)f->rows);
    if (nrows == 0) return FS_OK;
    if (!dst) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: NULL destination", f->path);
    uint8_t *d = dst;
    uint64_t end = row0 + nrows;
    for (uint64_t c = row0 / f->chunk_rows; c * f->chunk_rows < end; c++) {
        uint64_t c0 = c * f->chunk_rows, c1 = c0 + f->ent[c].raw / f->row_bytes;
        uint64_t lo = row0 > c0 ? row0 : c0, hi = end < c1 ? end : c1;
        uint8_t *to = d + (lo - row0) * f->row_bytes;
        fs_status rc;
        if (f->cached != (int64_t)c && lo == c0 && hi == c1) {
            /* the whole chunk is wanted: decode straight into dst */
            if ((rc = decode_chunk(ctx, f, c, to)) != FS_OK) return rc;
            continue;
        }
        if ((rc = load_cached(ctx, f, c)) != FS_OK) return rc;
        memcpy(to, f->rbuf + (lo - c0) * f->row_bytes, (size_t)((hi - lo) * f->row_bytes));
    }
    return FS_OK;
}

fs_status fs_act_verify(fs_ctx *ctx, fs_act_file *f)
{
    for (uint64_t c = 0; c < f->nchunks; c++) {
        f->cached = -1;   /* decode again even if cached: verify reads the disk */
        fs_status rc = load_cached(ctx, f, c);
        if (rc != FS_OK) return rc;
    }
    return FS_OK;
}
