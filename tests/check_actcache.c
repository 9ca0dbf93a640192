/* check_actcache.c: the activation cache files of stream/actcache.h.  The
 * shuffle against byte orders written out by hand; files written by the
 * writer and read back both by fs_act_read_rows and by a separate reader
 * written here from the format description (header and table parsed field by
 * field, LZ4 payloads decoded with liblz4 and unshuffled by the definition,
 * checksums computed with libxxhash); damaged files (flipped payload bytes,
 * truncations, forged fields with their checksums recomputed, a fuzz loop)
 * must give FS_ERR_FORMAT or FS_ERR_CORRUPT and never crash; failing writers
 * (abort, missing rows, ENOSPC through /dev/full, EFBIG through
 * RLIMIT_FSIZE) must leave no file behind.
 *
 * Invariants of the suite:
 *  1. Expected bytes never come from the code under test: the data is
 *     generated here and compared with memcmp; the layout is decoded by
 *     helpers below that only follow the documented format.
 *  2. Every file lives in a fresh t_tmpdir folder, removed at the end of the
 *     test; "no file left" means the folder is empty.
 *  3. The context error is cleared before each call whose message is checked
 *     (fs_ctx_err keeps the first error only).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <lz4.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "tests/util.h"

#define HDR 80   /* header bytes of format version 2, written out independently of the code */
#include "stream/actcache.h"

/* ---- helpers written from the format description -------------------------- */

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    ck_assert(b != NULL);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

static void spill(const char *path, const uint8_t *b, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert(fp != NULL);
    ck_assert_uint_eq(fwrite(b, 1, len, fp), len);
    ck_assert_int_eq(fclose(fp), 0);
}

static int entries_in(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Recomputes the table and header checksums of an image (after a forgery). */
static void fix_sums(uint8_t *b, size_t len)
{
    uint64_t n = rd64(b + 40);
    uint64_t tb = n < (len - HDR) / 32 ? n * 32 : (len - HDR) / 32 * 32;
    wr64(b + 64, XXH3_64bits(b + HDR, (size_t)tb));
    wr64(b + 72, XXH3_64bits(b, 72));
}

/* The independent reader: checks the layout of a file image and decodes it
 * into out (rows * row_bytes bytes).  Returns the number of LZ4 chunks. */
static int ref_decode(const uint8_t *b, size_t len, uint8_t *out, uint64_t *journal)
{
    ck_assert_uint_ge(len, HDR);
    ck_assert(memcmp(b, "FSACT002", 8) == 0);
    ck_assert_uint_eq(rd32(b + 8), 2);
    ck_assert_uint_eq(rd64(b + 56), 0);
    ck_assert_uint_eq(rd64(b + 72), XXH3_64bits(b, 72));
    uint32_t es = rd32(b + 12);
    uint64_t rb = rd64(b + 16), rows = rd64(b + 24), cr = rd64(b + 32), n = rd64(b + 40);
    ck_assert_uint_eq(n, rows == 0 ? 0 : (rows + cr - 1) / cr);
    ck_assert_uint_eq(rd64(b + 64), XXH3_64bits(b + HDR, (size_t)(32 * n)));
    uint64_t at = HDR + 32 * n;
    int nlz4 = 0;
    uint8_t *sums = malloc(8 * (size_t)n + 1), *shuf = malloc((size_t)(cr * rb));
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *e = b + HDR + 32 * i;
        uint64_t off = rd64(e), r0 = i * cr, nr = rows - r0 < cr ? rows - r0 : cr;
        uint32_t stored = rd32(e + 8), raw = rd32(e + 12), flags = rd32(e + 16);
        ck_assert_uint_eq(off, at);
        ck_assert_uint_eq(raw, nr * rb);
        ck_assert_uint_eq(rd32(e + 20), 0);
        ck_assert_uint_le(off + stored, len);
        uint8_t *dst = out + r0 * rb;
        if (flags == 0) {
            ck_assert_uint_eq(stored, raw);
            memcpy(dst, b + off, raw);
        } else {
            ck_assert_uint_eq(flags, 1);
            ck_assert_uint_lt(stored, raw);
            int got = LZ4_decompress_safe((const char *)b + off, (char *)shuf, (int)stored, (int)raw);
            ck_assert_int_eq(got, (int)raw);
            size_t cnt = raw / es;   /* unshuffle by the definition */
            for (size_t k = 0; k < es; k++)
                for (size_t j = 0; j < cnt; j++) dst[j * es + k] = shuf[k * cnt + j];
            nlz4++;
        }
        ck_assert_uint_eq(rd64(e + 24), XXH3_64bits(dst, raw));
        memcpy(sums + 8 * i, e + 24, 8);
        at += stored;
    }
    ck_assert_uint_eq(at, len);
    *journal = XXH3_64bits(sums, (size_t)(8 * n));
    free(sums);
    free(shuf);
    return nlz4;
}

/* BF16 by truncation of the float bits (good enough for test data). */
static uint16_t bf16_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

/* Smooth BF16 rows: compressible. */
static void fill_smooth(uint8_t *d, uint64_t r0, uint64_t rows, uint64_t elems)
{
    d -= r0 * elems * 2;
    for (uint64_t r = r0; r < r0 + rows; r++)
        for (uint64_t j = 0; j < elems; j++) {
            uint16_t v = bf16_of(1.0f + 0.001f * (float)((r * 7 + j) % 512));
            d[2 * (r * elems + j)] = (uint8_t)v;
            d[2 * (r * elems + j) + 1] = (uint8_t)(v >> 8);
        }
}

static void fill_random(t_rng *g, uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(t_next(g) >> 7);
}

/* Writes data (rows * row_bytes bytes) in pieces of varying size. */
static fs_status write_pieces(fs_ctx *ctx, const char *path, int es, uint64_t rb, uint64_t rows,
                              uint64_t cr, const uint8_t *data, uint64_t piece, uint64_t *sum)
{
    fs_act_writer *w = NULL;
    fs_status rc = fs_act_writer_open(ctx, path, es, rb, rows, cr, &w);
    if (rc != FS_OK) return rc;
    uint64_t done = 0, k = 0;
    while (done < rows) {
        uint64_t want = (k++ % 3 == 0) ? 1 : (k % 3 == 1 ? piece : 2 * piece + 1);
        if (want > rows - done) want = rows - done;
        if ((rc = fs_act_writer_put(ctx, w, data + done * rb, want)) != FS_OK) {
            fs_act_writer_abort(w);
            return rc;
        }
        done += want;
    }
    return fs_act_writer_close(ctx, w, sum);
}

static char *join(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* ---- shuffle ---------------------------------------------------------------------- */

START_TEST(shuffle_by_hand)
{
    /* BF16 1.0 = 0x3F80, -2.0 = 0xC000, 0.5 = 0x3F00, 3.140625 = 0x4049, LE bytes */
    const uint8_t bf[8] = {0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F, 0x49, 0x40};
    const uint8_t bf_sh[8] = {0x80, 0x00, 0x00, 0x49, /* low bytes */
                              0x3F, 0xC0, 0x3F, 0x40}; /* high bytes */
    /* F32 1.0f = 0x3F800000, -2.5f = 0xC0200000, bits 0x12345678, LE bytes */
    const uint8_t f32[12] = {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x20, 0xC0,
                             0x78, 0x56, 0x34, 0x12};
    const uint8_t f32_sh[12] = {0x00, 0x00, 0x78, 0x00, 0x00, 0x56,
                                0x80, 0x20, 0x34, 0x3F, 0xC0, 0x12};
    uint8_t out[16], back[16];

    memset(out, 0xEE, sizeof out);
    fs_act_shuffle(out, bf, 2, 4);
    ck_assert_mem_eq(out, bf_sh, 8);
    ck_assert_uint_eq(out[8], 0xEE);   /* nothing past count * elem_size */
    memset(back, 0xEE, sizeof back);
    fs_act_unshuffle(back, bf_sh, 2, 4);
    ck_assert_mem_eq(back, bf, 8);
    ck_assert_uint_eq(back[8], 0xEE);

    memset(out, 0xEE, sizeof out);
    fs_act_shuffle(out, f32, 4, 3);
    ck_assert_mem_eq(out, f32_sh, 12);
    ck_assert_uint_eq(out[12], 0xEE);
    fs_act_unshuffle(back, f32_sh, 4, 3);
    ck_assert_mem_eq(back, f32, 12);

    /* the host really stores those floats that way (little-endian) */
    float one = 1.0f, m25 = -2.5f;
    ck_assert_mem_eq(&one, f32, 4);
    ck_assert_mem_eq(&m25, f32 + 4, 4);

    /* count 0 touches nothing; elem_size 1 is a copy */
    memset(out, 0xEE, sizeof out);
    fs_act_shuffle(out, bf, 2, 0);
    ck_assert_uint_eq(out[0], 0xEE);
    fs_act_shuffle(out, bf, 1, 8);
    ck_assert_mem_eq(out, bf, 8);
}
END_TEST

START_TEST(shuffle_definition_wide)
{
    /* elem_size 8 and 3 (generic path) and odd counts, against the formula */
    t_rng g = {11};
    const size_t ess[] = {2, 3, 4, 8};
    for (size_t t = 0; t < 4; t++)
        for (size_t cnt = 1; cnt < 40; cnt += 7) {
            size_t es = ess[t], n = es * cnt;
            uint8_t *src = malloc(n), *sh = malloc(n), *ref = malloc(n), *back = malloc(n);
            fill_random(&g, src, n);
            for (size_t i = 0; i < cnt; i++)
                for (size_t k = 0; k < es; k++) ref[k * cnt + i] = src[i * es + k];
            fs_act_shuffle(sh, src, es, cnt);
            ck_assert_mem_eq(sh, ref, n);
            fs_act_unshuffle(back, sh, es, cnt);
            ck_assert_mem_eq(back, src, n);
            free(src); free(sh); free(ref); free(back);
        }
}
END_TEST

/* ---- round trips ----------------------------------------------------------------------- */

typedef struct { int es; uint64_t elems, rows, chunk_rows, piece; } rt_case;

static const rt_case rt_cases[] = {
    {2, 37, 100, 7, 3},      /* rows not a multiple of chunk_rows */
    {4, 19, 13, 1, 5},       /* chunk_rows 1 */
    {2, 64, 50, 1000, 50},   /* a single chunk (chunk_rows clamped to rows) */
    {4, 8, 64, 16, 64},      /* an exact multiple, large puts */
    {2, 1, 1, 1, 1},         /* one element */
    {8, 3, 29, 4, 2},        /* 8-byte elements */
    {1, 5, 17, 6, 4},        /* bytes */
};
#define N_RT (int)(sizeof rt_cases / sizeof rt_cases[0])

START_TEST(roundtrip)
{
    const rt_case *c = &rt_cases[_i];
    char *dir = t_tmpdir(), *path = join(dir, "act-0001.fsa");
    uint64_t rb = c->elems * (uint64_t)c->es, n = c->rows * rb;
    uint8_t *data = malloc(n), *got = malloc(n + 1), *ref = malloc(n + 1);
    t_rng g = {100 + (uint64_t)_i};
    /* even rows smooth-ish (repeating), odd rows random: both chunk kinds occur */
    for (uint64_t r = 0; r < c->rows; r++)
        for (uint64_t j = 0; j < rb; j++)
            data[r * rb + j] = (r % 2 == 0) ? (uint8_t)(j % 4 == 3 ? 0x3F : j / 16) : (uint8_t)t_next(&g);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    uint64_t sum = 0;
    ck_assert_msg(write_pieces(&ctx, path, c->es, rb, c->rows, c->chunk_rows, data, c->piece,
                               &sum) == FS_OK, "%s", ctx.errmsg);
    ck_assert_int_eq(entries_in(dir), 1);   /* the file, no temporary left */

    size_t len;
    uint8_t *img = slurp(path, &len);
    uint64_t jsum;
    memset(ref, 0xAB, n + 1);
    ref_decode(img, len, ref, &jsum);
    ck_assert_mem_eq(ref, data, n);
    ck_assert_uint_eq(jsum, sum);

    fs_act_file *f = NULL;
    ck_assert_msg(fs_act_open(&ctx, path, &f) == FS_OK, "%s", ctx.errmsg);
    ck_assert_uint_eq(fs_act_rows(f), c->rows);
    ck_assert_uint_eq(fs_act_row_bytes(f), rb);
    ck_assert_int_eq(fs_act_elem_size(f), c->es);
    ck_assert_uint_eq(fs_act_chunk_rows(f), c->chunk_rows < c->rows ? c->chunk_rows : c->rows);
    ck_assert_uint_eq(fs_act_nchunks(f), (c->rows + fs_act_chunk_rows(f) - 1) / fs_act_chunk_rows(f));
    ck_assert_uint_eq(fs_act_checksum(f), sum);
    memset(got, 0xCD, n + 1);
    ck_assert_msg(fs_act_read_rows(&ctx, f, 0, c->rows, got) == FS_OK, "%s", ctx.errmsg);
    ck_assert_mem_eq(got, data, n);
    ck_assert_uint_eq(got[n], 0xCD);
    ck_assert_int_eq(fs_act_verify(&ctx, f), FS_OK);
    fs_act_close(f);
    free(img); free(data); free(got); free(ref);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

START_TEST(zero_rows)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0000.fsa");
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_act_writer *w;
    uint64_t sum = 1;
    ck_assert_int_eq(fs_act_writer_open(&ctx, path, 2, 64, 0, 16, &w), FS_OK);
    ck_assert_int_eq(fs_act_writer_put(&ctx, w, NULL, 0), FS_OK);
    ck_assert_msg(fs_act_writer_close(&ctx, w, &sum) == FS_OK, "%s", ctx.errmsg);
    size_t len;
    uint8_t *img = slurp(path, &len);
    ck_assert_uint_eq(len, HDR);   /* the header alone */
    uint64_t jsum;
    ref_decode(img, len, NULL, &jsum);
    ck_assert_uint_eq(sum, XXH3_64bits(NULL, 0));
    ck_assert_uint_eq(jsum, sum);
    fs_act_file *f;
    ck_assert_msg(fs_act_open(&ctx, path, &f) == FS_OK, "%s", ctx.errmsg);
    ck_assert_uint_eq(fs_act_rows(f), 0);
    ck_assert_uint_eq(fs_act_nchunks(f), 0);
    uint8_t one[64];
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 0, 0, one), FS_OK);
    ck_assert_int_eq(fs_act_verify(&ctx, f), FS_OK);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 0, 1, one), FS_ERR_USAGE);
    fs_act_close(f);
    free(img);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

START_TEST(random_access)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0002.fsa");
    const uint64_t rows = 300, rb = 48, cr = 9, n = rows * rb;
    uint8_t *data = malloc(n), *got = malloc(n + 16);
    t_rng g = {7};
    for (uint64_t r = 0; r < rows; r++) {
        if (r % 3 == 0) fill_random(&g, data + r * rb, rb);
        else fill_smooth(data + r * rb, r, 1, rb / 2);
        data[r * rb] = (uint8_t)r;   /* every row distinct */
    }
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(write_pieces(&ctx, path, 2, rb, rows, cr, data, 40, NULL), FS_OK);
    fs_act_file *f;
    ck_assert_int_eq(fs_act_open(&ctx, path, &f), FS_OK);
    for (int it = 0; it < 400; it++) {
        uint64_t r0 = t_next(&g) % rows, nr = t_next(&g) % (it % 4 == 0 ? 40 : 12);
        if (nr > rows - r0) nr = rows - r0;
        memset(got, 0x5A, n + 16);
        ck_assert_msg(fs_act_read_rows(&ctx, f, r0, nr, got) == FS_OK, "%s", ctx.errmsg);
        ck_assert_mem_eq(got, data + r0 * rb, nr * rb);
        ck_assert_uint_eq(got[nr * rb], 0x5A);
    }
    /* one row at a time, in order (the cached chunk), then backwards */
    for (uint64_t r = 0; r < rows; r++) {
        ck_assert_int_eq(fs_act_read_rows(&ctx, f, r, 1, got), FS_OK);
        ck_assert_mem_eq(got, data + r * rb, rb);
    }
    for (uint64_t r = rows; r-- > 0;) {
        ck_assert_int_eq(fs_act_read_rows(&ctx, f, r, 1, got), FS_OK);
        ck_assert_mem_eq(got, data + r * rb, rb);
    }
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 0, rows, got), FS_OK);
    ck_assert_mem_eq(got, data, n);
    /* past the end */
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, rows, 1, got), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 1, rows, got), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, UINT64_MAX, 2, got), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, rows, 0, got), FS_OK);
    fs_act_close(f);
    free(data); free(got);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

/* ---- compression ------------------------------------------------------------------------ */

START_TEST(compressible_is_smaller)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0003.fsa");
    const uint64_t rows = 512, elems = 1024, rb = 2 * elems, n = rows * rb;
    uint8_t *data = malloc(n), *got = malloc(n);
    fill_smooth(data, 0, rows, elems);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(write_pieces(&ctx, path, 2, rb, rows, 64, data, 64, NULL), FS_OK);
    size_t len;
    uint8_t *img = slurp(path, &len);
    uint64_t j;
    ck_assert_int_eq(ref_decode(img, len, got, &j), 8);   /* all 8 chunks LZ4 */
    ck_assert_mem_eq(got, data, n);
    ck_assert_msg(len < n / 2, "%zu bytes on disk for %llu raw", len, (unsigned long long)n);
    /* and the shuffle helps: plain LZ4 of the unshuffled bytes is larger */
    int cap = LZ4_compressBound((int)n);
    char *plain = malloc((size_t)cap);
    int pl = LZ4_compress_default((const char *)data, plain, (int)n, cap);
    ck_assert_msg((size_t)pl > len, "plain lz4 %d, shuffled file %zu", pl, len);
    fs_act_file *f;
    ck_assert_int_eq(fs_act_open(&ctx, path, &f), FS_OK);
    memset(got, 0, n);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 0, rows, got), FS_OK);
    ck_assert_mem_eq(got, data, n);
    fs_act_close(f);
    free(plain); free(img); free(data); free(got);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

START_TEST(incompressible_stored_raw)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0004.fsa");
    const uint64_t rows = 40, rb = 1024, n = rows * rb;
    uint8_t *data = malloc(n), *got = malloc(n);
    t_rng g = {99};
    fill_random(&g, data, n);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(write_pieces(&ctx, path, 4, rb, rows, 8, data, 7, NULL), FS_OK);
    size_t len;
    uint8_t *img = slurp(path, &len);
    ck_assert_uint_eq(len, HDR + 32 * 5 + n);
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(rd32(img + HDR + 32 * i + 16), FS_ACT_CHUNK_RAW);
        ck_assert_uint_eq(rd32(img + HDR + 32 * i + 8), 8 * rb);
    }
    uint64_t j;
    ck_assert_int_eq(ref_decode(img, len, got, &j), 0);
    ck_assert_mem_eq(got, data, n);
    fs_act_file *f;
    ck_assert_int_eq(fs_act_open(&ctx, path, &f), FS_OK);
    memset(got, 0, n);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 3, rows - 5, got), FS_OK);
    ck_assert_mem_eq(got, data + 3 * rb, (rows - 5) * rb);
    ck_assert_int_eq(fs_act_verify(&ctx, f), FS_OK);
    fs_act_close(f);
    free(img); free(data); free(got);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

/* ---- damage ------------------------------------------------------------------------------- */

/* 6 chunks of 8 rows x 256 bytes: even chunks smooth (LZ4), odd random (raw). */
static uint8_t *mixed_file(const char *path, uint64_t *rows_out, uint64_t *rb_out)
{
    const uint64_t rows = 46, rb = 256, cr = 8;
    uint8_t *data = malloc(rows * rb);
    t_rng g = {5};
    for (uint64_t r = 0; r < rows; r++) {
        if ((r / cr) % 2 == 0) fill_smooth(data + r * rb, r, 1, rb / 2);
        else fill_random(&g, data + r * rb, rb);
    }
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_msg(write_pieces(&ctx, path, 2, rb, rows, cr, data, 5, NULL) == FS_OK, "%s",
                  ctx.errmsg);
    *rows_out = rows;
    *rb_out = rb;
    return data;
}

START_TEST(corrupt_payload)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0005.fsa");
    uint64_t rows, rb;
    uint8_t *data = mixed_file(path, &rows, &rb), *got = malloc(rows * rb);
    size_t len;
    uint8_t *img = slurp(path, &len);
    ck_assert_uint_eq(rd32(img + HDR + 32 * 2 + 16), FS_ACT_CHUNK_LZ4);
    ck_assert_uint_eq(rd32(img + HDR + 32 * 3 + 16), FS_ACT_CHUNK_RAW);
    for (int victim = 2; victim <= 3; victim++)
        for (int pos = 0; pos < 3; pos++) {
            uint8_t *bad = malloc(len);
            memcpy(bad, img, len);
            const uint8_t *e = bad + HDR + 32 * victim;
            uint64_t off = rd64(e), stored = rd32(e + 8);
            /* token byte, then literals (LZ4 blocks end with literals) */
            uint64_t at = off + (pos == 0 ? 0 : pos == 1 ? stored - 3 : stored - 1);
            bad[at] ^= 0x10;
            spill(path, bad, len);
            fs_ctx ctx;
            fs_ctx_init(&ctx);
            fs_act_file *f;
            ck_assert_int_eq(fs_act_open(&ctx, path, &f), FS_OK);   /* the table is fine */
            ck_assert_int_eq(fs_act_read_rows(&ctx, f, 0, 8, got), FS_OK);
            ck_assert_mem_eq(got, data, 8 * rb);
            char want[64];
            snprintf(want, sizeof want, "chunk %d of 6", victim);
            fs_ctx_clear(&ctx);
            ck_assert_int_eq(fs_act_read_rows(&ctx, f, 8 * (uint64_t)victim + 1, 2, got),
                             FS_ERR_CORRUPT);
            ck_assert_msg(strstr(ctx.errmsg, want) && strstr(ctx.errmsg, "act-0005.fsa"),
                          "message: %s", ctx.errmsg);
            fs_ctx_clear(&ctx);
            ck_assert_int_eq(fs_act_read_rows(&ctx, f, 5, 30, got), FS_ERR_CORRUPT);
            ck_assert_msg(strstr(ctx.errmsg, want), "message: %s", ctx.errmsg);
            fs_ctx_clear(&ctx);
            ck_assert_int_eq(fs_act_verify(&ctx, f), FS_ERR_CORRUPT);
            ck_assert_msg(strstr(ctx.errmsg, want), "message: %s", ctx.errmsg);
            /* the chunks after it still read */
            ck_assert_int_eq(fs_act_read_rows(&ctx, f, 40, 6, got), FS_OK);
            ck_assert_mem_eq(got, data + 40 * rb, 6 * rb);
            fs_act_close(f);
            free(bad);
        }
    free(img); free(data); free(got);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

typedef enum { M_TRUNC, M_EXTEND, M_BYTE, M_FIELD32, M_FIELD64 } mut_kind;
typedef struct {
    const char *what;
    mut_kind kind;
    size_t at;          /* byte offset, or new length for M_TRUNC */
    uint64_t val;       /* xor mask for M_BYTE; value for M_FIELD* */
    int fix;            /* recompute checksums afterwards */
    fs_status want;
} mut_case;

static const mut_case muts[] = {
    {"empty file", M_TRUNC, 0, 0, 0, FS_ERR_FORMAT},
    {"10 bytes", M_TRUNC, 10, 0, 0, FS_ERR_FORMAT},
    {"79 bytes", M_TRUNC, HDR - 1, 0, 0, FS_ERR_FORMAT},
    {"header alone", M_TRUNC, HDR, 0, 0, FS_ERR_FORMAT},
    {"half the table", M_TRUNC, HDR + 80, 0, 0, FS_ERR_FORMAT},
    {"table, no payload", M_TRUNC, HDR + 6 * 32, 0, 0, FS_ERR_FORMAT},
    {"last byte missing", M_TRUNC, (size_t)-1, 0, 0, FS_ERR_FORMAT},
    {"trailing byte", M_EXTEND, 0, 0, 0, FS_ERR_FORMAT},
    {"bad magic", M_BYTE, 3, 0x01, 0, FS_ERR_FORMAT},
    {"header byte", M_BYTE, 20, 0x01, 0, FS_ERR_CORRUPT},
    {"header checksum", M_BYTE, 76, 0x80, 0, FS_ERR_CORRUPT},
    {"tag byte", M_BYTE, 49, 0x01, 0, FS_ERR_CORRUPT},
    {"table byte", M_BYTE, HDR + 32 + 3, 0x04, 0, FS_ERR_CORRUPT},
    {"table checksum", M_BYTE, 66, 0x04, 0, FS_ERR_CORRUPT},
    {"version 1", M_FIELD32, 8, 1, 1, FS_ERR_FORMAT},
    {"version 3", M_FIELD32, 8, 3, 1, FS_ERR_FORMAT},
    {"reserved header field", M_FIELD64, 56, 1, 1, FS_ERR_FORMAT},
    {"elem_size 3", M_FIELD32, 12, 3, 1, FS_ERR_FORMAT},
    {"elem_size 0", M_FIELD32, 12, 0, 1, FS_ERR_FORMAT},
    {"row_bytes 0", M_FIELD64, 16, 0, 1, FS_ERR_FORMAT},
    {"row_bytes odd", M_FIELD64, 16, 255, 1, FS_ERR_FORMAT},
    {"row_bytes 2^40", M_FIELD64, 16, 1ull << 40, 1, FS_ERR_FORMAT},
    {"rows 2^63", M_FIELD64, 24, 1ull << 63, 1, FS_ERR_FORMAT},
    {"rows max", M_FIELD64, 24, UINT64_MAX, 1, FS_ERR_FORMAT},
    {"rows one more", M_FIELD64, 24, 47, 1, FS_ERR_FORMAT},
    {"chunk_rows 0", M_FIELD64, 32, 0, 1, FS_ERR_FORMAT},
    {"chunk_rows max", M_FIELD64, 32, UINT64_MAX, 1, FS_ERR_FORMAT},
    {"nchunks 2^40", M_FIELD64, 40, 1ull << 40, 1, FS_ERR_FORMAT},
    {"nchunks max", M_FIELD64, 40, UINT64_MAX, 1, FS_ERR_FORMAT},
    {"offset past EOF", M_FIELD64, HDR + 32 * 5, 1ull << 40, 1, FS_ERR_FORMAT},
    {"offset max", M_FIELD64, HDR + 32 * 1, UINT64_MAX, 1, FS_ERR_FORMAT},
    {"offset shifted", M_FIELD64, HDR + 32 * 1, HDR + 6 * 32 + 1, 1, FS_ERR_FORMAT},
    {"stored huge", M_FIELD32, HDR + 32 * 2 + 8, 0xFFFFFFFFu, 1, FS_ERR_FORMAT},
    {"stored 0", M_FIELD32, HDR + 32 * 0 + 8, 0, 1, FS_ERR_FORMAT},
    {"raw huge", M_FIELD32, HDR + 32 * 0 + 12, 0xFFFFFFFFu, 1, FS_ERR_FORMAT},
    {"flags 2", M_FIELD32, HDR + 32 * 1 + 16, 2, 1, FS_ERR_FORMAT},
    {"raw chunk marked lz4", M_FIELD32, HDR + 32 * 1 + 16, 1, 1, FS_ERR_FORMAT},
    {"reserved", M_FIELD32, HDR + 32 * 4 + 20, 1, 1, FS_ERR_FORMAT},
};
#define N_MUTS (int)(sizeof muts / sizeof muts[0])

START_TEST(bad_headers)
{
    const mut_case *m = &muts[_i];
    char *dir = t_tmpdir(), *path = join(dir, "act-0006.fsa"), *bpath = join(dir, "bad.fsa");
    uint64_t rows, rb;
    free(mixed_file(path, &rows, &rb));
    size_t len;
    uint8_t *img = slurp(path, &len), *b = malloc(len + 1);
    memcpy(b, img, len);
    size_t blen = len;
    switch (m->kind) {
    case M_TRUNC: blen = m->at == (size_t)-1 ? len - 1 : m->at; break;
    case M_EXTEND: b[len] = 0; blen = len + 1; break;
    case M_BYTE: b[m->at] ^= (uint8_t)m->val; break;
    case M_FIELD32: wr32(b + m->at, (uint32_t)m->val); break;
    case M_FIELD64: wr64(b + m->at, m->val); break;
    }
    if (m->fix) fix_sums(b, blen);
    spill(bpath, b, blen);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_act_file *f = (fs_act_file *)&ctx;   /* must be set to NULL on error */
    fs_status st = fs_act_open(&ctx, bpath, &f);
    ck_assert_msg(st == m->want, "%s: status %s, want %s (%s)", m->what, fs_status_str(st),
                  fs_status_str(m->want), ctx.errmsg);
    ck_assert(f == NULL);
    ck_assert_msg(strstr(ctx.errmsg, "bad.fsa") != NULL, "%s: message %s", m->what, ctx.errmsg);
    free(img); free(b);
    t_rmdir(dir);
    free(dir); free(path); free(bpath);
}
END_TEST

/* The header's label: written where the format says, read back, covered by
 * the header checksum; NO_TAG when unset. */
START_TEST(tag_in_header)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0003.fsa");
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    uint8_t rows[4 * 16] = {1, 2, 3};
    for (int k = 0; k < 2; k++) {
        fs_act_writer *w;
        ck_assert_int_eq(fs_act_writer_open(&ctx, path, 2, 16, 4, 2, &w), FS_OK);
        if (k) fs_act_writer_set_tag(w, 3);
        ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows, 4), FS_OK);
        ck_assert_int_eq(fs_act_writer_close(&ctx, w, NULL), FS_OK);
        size_t len;
        uint8_t *img = slurp(path, &len);
        ck_assert_uint_eq(rd64(img + 48), k ? 3 : UINT64_MAX);
        uint64_t js;
        uint8_t back[sizeof rows];
        ref_decode(img, len, back, &js);
        ck_assert_mem_eq(back, rows, sizeof rows);
        fs_act_file *f;
        ck_assert_int_eq(fs_act_open(&ctx, path, &f), FS_OK);
        ck_assert_uint_eq(fs_act_tag(f), k ? 3 : FS_ACT_NO_TAG);
        fs_act_close(f);
        free(img);
    }
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

START_TEST(missing_file)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_act_file *f;
    ck_assert_int_eq(fs_act_open(&ctx, "/nonexistent/act-9999.fsa", &f), FS_ERR_IO);
    ck_assert(strstr(ctx.errmsg, "act-9999.fsa") != NULL);
    fs_act_close(NULL);
}
END_TEST

START_TEST(fuzz_headers)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0007.fsa"), *bpath = join(dir, "fuzz.fsa");
    uint64_t rows, rb;
    free(mixed_file(path, &rows, &rb));
    size_t len;
    uint8_t *img = slurp(path, &len), *b = malloc(len);
    t_rng g = {2024};
    int n_ok = 0, n_format = 0, n_corrupt = 0;
    const size_t meta = HDR + 32 * 6;
    for (int it = 0; it < 600; it++) {
        memcpy(b, img, len);
        size_t blen = len;
        int nmut = 1 + (int)(t_next(&g) % 4);
        for (int k = 0; k < nmut; k++) {
            size_t at = t_next(&g) % meta;
            switch (t_next(&g) % 4) {
            case 0: b[at] ^= (uint8_t)(1u << (t_next(&g) % 8)); break;
            case 1: b[at] = (uint8_t)t_next(&g); break;
            case 2: b[at] = 0xFF; break;
            default: b[at] = 0; break;
            }
        }
        if (t_next(&g) % 2) fix_sums(b, blen);        /* reach the field checks */
        if (t_next(&g) % 8 == 0) blen = t_next(&g) % len;
        spill(bpath, b, blen);
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        fs_act_file *f = NULL;
        fs_status st = fs_act_open(&ctx, bpath, &f);
        if (st == FS_OK) {
            /* a forgery that passes validation: reads may fail, cleanly */
            n_ok++;
            uint64_t r = fs_act_rows(f), w = fs_act_row_bytes(f);
            ck_assert_uint_le(r * w, 256 * (uint64_t)blen);   /* bounded by the file */
            uint8_t *got = malloc(r * w + 1);
            fs_status v = fs_act_verify(&ctx, f);
            ck_assert_msg(v == FS_OK || v == FS_ERR_CORRUPT, "verify: %s", ctx.errmsg);
            fs_ctx_clear(&ctx);
            v = fs_act_read_rows(&ctx, f, 0, r, got);
            ck_assert_msg(v == FS_OK || v == FS_ERR_CORRUPT, "read: %s", ctx.errmsg);
            free(got);
            fs_act_close(f);
        } else {
            ck_assert_msg(st == FS_ERR_FORMAT || st == FS_ERR_CORRUPT, "iteration %d: %s (%s)",
                          it, fs_status_str(st), ctx.errmsg);
            ck_assert(f == NULL);
            ck_assert(ctx.errmsg[0] != '\0');
            if (st == FS_ERR_FORMAT) n_format++;
            else n_corrupt++;
        }
    }
    /* both the checksums and the field checks were exercised */
    ck_assert_int_gt(n_format, 100);
    ck_assert_int_gt(n_corrupt, 100);
    fprintf(stderr, "actcache fuzz: %d accepted, %d format, %d corrupt\n", n_ok, n_format,
            n_corrupt);
    free(img); free(b);
    t_rmdir(dir);
    free(dir); free(path); free(bpath);
}
END_TEST

START_TEST(zeros_max_ratio)
{
    /* the most compressible chunk LZ4 can make is still accepted by the reader */
    char *dir = t_tmpdir(), *path = join(dir, "act-0012.fsa");
    const uint64_t rows = 64, rb = 64 << 10, n = rows * rb;
    uint8_t *data = calloc(1, n), *got = malloc(n);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(write_pieces(&ctx, path, 2, rb, rows, rows, data, rows, NULL), FS_OK);
    size_t len;
    uint8_t *img = slurp(path, &len);
    ck_assert_uint_eq(rd32(img + HDR + 16), FS_ACT_CHUNK_LZ4);
    ck_assert_uint_lt(len, n / 200);
    fs_act_file *f;
    ck_assert_msg(fs_act_open(&ctx, path, &f) == FS_OK, "%s", ctx.errmsg);
    memset(got, 1, n);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 0, rows, got), FS_OK);
    ck_assert_mem_eq(got, data, n);
    fs_act_close(f);
    free(img); free(data); free(got);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

START_TEST(forged_ratio)
{
    /* a consistent forgery claiming 4 MiB chunks behind a few hundred bytes of
     * LZ4 each is refused at open, before anything is allocated for it */
    char *dir = t_tmpdir(), *path = join(dir, "act-0013.fsa");
    const uint64_t rows = 32, rb = 512, cr = 8;
    uint8_t *data = malloc(rows * rb);
    fill_smooth(data, 0, rows, rb / 2);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(write_pieces(&ctx, path, 2, rb, rows, cr, data, cr, NULL), FS_OK);
    size_t len;
    uint8_t *b = slurp(path, &len);
    const uint64_t big = rb << 10;
    wr64(b + 16, big);
    for (int i = 0; i < 4; i++) {
        ck_assert_uint_eq(rd32(b + HDR + 32 * i + 16), FS_ACT_CHUNK_LZ4);
        wr32(b + HDR + 32 * i + 12, (uint32_t)(cr * big));
    }
    fix_sums(b, len);
    spill(path, b, len);
    fs_act_file *f;
    ck_assert_int_eq(fs_act_open(&ctx, path, &f), FS_ERR_FORMAT);
    ck_assert_msg(strstr(ctx.errmsg, "chunk 0 of 4") && strstr(ctx.errmsg, "impossible"), "%s",
                  ctx.errmsg);
    free(b); free(data);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

/* ---- failing writers ----------------------------------------------------------------------- */

START_TEST(abort_leaves_nothing)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0008.fsa");
    uint8_t rows[10 * 64];
    t_rng g = {3};
    fill_random(&g, rows, sizeof rows);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_act_writer *w;
    ck_assert_int_eq(fs_act_writer_open(&ctx, path, 2, 64, 100, 4, &w), FS_OK);
    ck_assert_int_eq(entries_in(dir), 1);   /* the temporary file */
    ck_assert(!exists(path));
    ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows, 10), FS_OK);
    fs_act_writer_abort(w);
    ck_assert_int_eq(entries_in(dir), 0);
    ck_assert_int_eq(fs_act_writer_open(&ctx, path, 2, 64, 100, 4, &w), FS_OK);
    fs_act_writer_abort(w);
    ck_assert_int_eq(entries_in(dir), 0);
    fs_act_writer_abort(NULL);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

START_TEST(missing_rows)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0009.fsa");
    uint8_t rows[20 * 64];
    t_rng g = {4};
    fill_random(&g, rows, sizeof rows);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_act_writer *w;
    ck_assert_int_eq(fs_act_writer_open(&ctx, path, 4, 64, 20, 6, &w), FS_OK);
    ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows, 13), FS_OK);
    uint64_t sum = 42;
    ck_assert_int_eq(fs_act_writer_close(&ctx, w, &sum), FS_ERR_USAGE);
    ck_assert_msg(strstr(ctx.errmsg, "13 of 20") != NULL, "%s", ctx.errmsg);
    ck_assert_uint_eq(sum, 42);
    ck_assert_int_eq(entries_in(dir), 0);

    /* too many rows: refused, the writer stays usable */
    fs_ctx_clear(&ctx);
    ck_assert_int_eq(fs_act_writer_open(&ctx, path, 4, 64, 20, 6, &w), FS_OK);
    ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows, 15), FS_OK);
    ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows + 15 * 64, 6), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows + 15 * 64, 5), FS_OK);
    ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows, 1), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_writer_close(&ctx, w, &sum), FS_OK);
    ck_assert_int_eq(entries_in(dir), 1);
    fs_act_file *f;
    uint8_t got[sizeof rows];
    ck_assert_int_eq(fs_act_open(&ctx, path, &f), FS_OK);
    ck_assert_int_eq(fs_act_read_rows(&ctx, f, 0, 20, got), FS_OK);
    ck_assert_mem_eq(got, rows, sizeof rows);
    fs_act_close(f);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

START_TEST(bad_writer_args)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_act_writer *w = (fs_act_writer *)&ctx;
    ck_assert_int_eq(fs_act_writer_open(&ctx, "/tmp/x.fsa", 3, 6, 10, 1, &w), FS_ERR_USAGE);
    ck_assert(w == NULL);
    ck_assert_int_eq(fs_act_writer_open(&ctx, "/tmp/x.fsa", 2, 5, 10, 1, &w), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_writer_open(&ctx, "/tmp/x.fsa", 2, 0, 10, 1, &w), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_writer_open(&ctx, "/tmp/x.fsa", 2, 4, 10, 0, &w), FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_writer_open(&ctx, "/tmp/x.fsa", 2, 1ull << 31, 10, 1, &w),
                     FS_ERR_USAGE);
    ck_assert_int_eq(fs_act_writer_open(&ctx, "/tmp/x.fsa", 2, 2, UINT64_MAX, 1, &w),
                     FS_ERR_USAGE);
    fs_ctx_clear(&ctx);
    ck_assert_int_eq(fs_act_writer_open(&ctx, "/nonexistent/dir/x.fsa", 2, 2, 10, 1, &w),
                     FS_ERR_IO);
    ck_assert(strstr(ctx.errmsg, "/nonexistent/dir/x.fsa.tmp.") != NULL);
}
END_TEST

/* ENOSPC for real: the temporary name is a symlink to /dev/full. */
START_TEST(enospc_dev_full)
{
    struct stat st;
    if (stat("/dev/full", &st) != 0 || !S_ISCHR(st.st_mode)) {
        fprintf(stderr, "actcache: skipped ENOSPC through /dev/full (no /dev/full)\n");
        return;
    }
    char *dir = t_tmpdir(), *path = join(dir, "act-0010.fsa"), tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    ck_assert_int_eq(symlink("/dev/full", tmp), 0);
    uint8_t rows[8 * 128];
    t_rng g = {6};
    fill_random(&g, rows, sizeof rows);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_act_writer *w;
    ck_assert_msg(fs_act_writer_open(&ctx, path, 2, 128, 8, 4, &w) == FS_OK, "%s", ctx.errmsg);
    fs_status st2 = fs_act_writer_put(&ctx, w, rows, 8);
    if (st2 == FS_ERR_IO && strstr(ctx.errmsg, "Illegal seek")) {
        fprintf(stderr, "actcache: skipped ENOSPC through /dev/full (no pwrite on it)\n");
        fs_act_writer_abort(w);
    } else {
        ck_assert_int_eq(st2, FS_ERR_NOSPACE);
        ck_assert_msg(strstr(ctx.errmsg, "no space left on device while writing") &&
                      strstr(ctx.errmsg, tmp) && strstr(ctx.errmsg, "512 bytes needed"),
                      "message: %s", ctx.errmsg);
        /* FAILED: put repeats the error, close removes the temporary name */
        ck_assert_int_eq(fs_act_writer_put(&ctx, w, rows, 0), FS_ERR_NOSPACE);
        ck_assert_int_eq(fs_act_writer_close(&ctx, w, NULL), FS_ERR_NOSPACE);
    }
    ck_assert_int_eq(entries_in(dir), 0);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

/* A full disk as the file size limit: EFBIG in a child with RLIMIT_FSIZE. */
START_TEST(full_disk_rlimit)
{
    char *dir = t_tmpdir(), *path = join(dir, "act-0011.fsa");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct rlimit rl = {64 << 10, 64 << 10};
        signal(SIGXFSZ, SIG_IGN);
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(10);
        const uint64_t rows = 256, rb = 4096;
        uint8_t *data = malloc(rows * rb);
        t_rng g = {8};
        fill_random(&g, data, rows * rb);
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        fs_act_writer *w;
        if (fs_act_writer_open(&ctx, path, 2, rb, rows, 16, &w) != FS_OK) _exit(11);
        fs_status st = FS_OK;
        for (uint64_t r = 0; r < rows && st == FS_OK; r += 16)
            st = fs_act_writer_put(&ctx, w, data + r * rb, 16);
        if (st != FS_ERR_NOSPACE) _exit(12);
        fprintf(stderr, "actcache: full disk message: %s\n", ctx.errmsg);
        if (!strstr(ctx.errmsg, "file size limit exceeded while writing") ||
            !strstr(ctx.errmsg, path) || !strstr(ctx.errmsg, "bytes needed"))
            _exit(13);
        if (fs_act_writer_close(&ctx, w, NULL) != FS_ERR_NOSPACE) _exit(14);
        if (exists(path)) _exit(15);
        DIR *d = opendir(dir);
        struct dirent *e;
        int n = 0;
        while (d && (e = readdir(d)) != NULL)
            if (e->d_name[0] != '.') n++;
        if (d) closedir(d);
        _exit(n == 0 ? 0 : 16);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "child died, status %d", status);
    ck_assert_msg(WEXITSTATUS(status) == 0, "child check %d failed", WEXITSTATUS(status));
    ck_assert_int_eq(entries_in(dir), 0);
    t_rmdir(dir);
    free(dir); free(path);
}
END_TEST

Suite *fs_suite_actcache(void)
{
    Suite *s = suite_create("actcache");
    TCase *tc;
    tc = tcase_create("shuffle");
    tcase_add_test(tc, shuffle_by_hand);
    tcase_add_test(tc, shuffle_definition_wide);
    suite_add_tcase(s, tc);
    tc = tcase_create("roundtrip");
    tcase_add_loop_test(tc, roundtrip, 0, N_RT);
    tcase_add_test(tc, zero_rows);
    suite_add_tcase(s, tc);
    tc = tcase_create("random_access");
    tcase_add_test(tc, random_access);
    suite_add_tcase(s, tc);
    tc = tcase_create("compression");
    tcase_add_test(tc, compressible_is_smaller);
    tcase_add_test(tc, incompressible_stored_raw);
    tcase_add_test(tc, zeros_max_ratio);
    suite_add_tcase(s, tc);
    tc = tcase_create("damage");
    tcase_add_test(tc, corrupt_payload);
    tcase_add_loop_test(tc, bad_headers, 0, N_MUTS);
    tcase_add_test(tc, tag_in_header);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, fuzz_headers);
    tcase_add_test(tc, forged_ratio);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("failing_writer");
    tcase_add_test(tc, abort_leaves_nothing);
    tcase_add_test(tc, missing_rows);
    tcase_add_test(tc, bad_writer_args);
    tcase_add_test(tc, enospc_dev_full);
    tcase_add_test(tc, full_disk_rlimit);
    suite_add_tcase(s, tc);
    return s;
}
