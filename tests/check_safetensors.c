/* check_safetensors.c: the safetensors reader and writer.
 *
 * Files for the reader are built here byte by byte (length, literal JSON,
 * little-endian data), and files from the writer are taken apart here by hand
 * (u64 length, jansson on the header, raw bytes at the offsets), so neither
 * direction is checked against the other. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/util.h"
#include "src/formats/safetensors.h"

#define FUZZ_ITERS 500        /* mutated files opened by the fuzz test */
#define FUZZ_SEED 0x5afe7e45ull
#define DEEP_LEVELS 10000     /* nesting depth of the deep-JSON case */
#define WAIT_SECONDS 10       /* alarm over an open that must not block (a named pipe) */

/* ---- helpers ------------------------------------------------------------ */

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "cannot create %s", path);
    if (n) ck_assert_uint_eq(fwrite(buf, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

/* length field, header bytes, then `data` bytes of the data buffer */
static void write_st(const char *path, uint64_t lenfield, const char *hdr, size_t hlen,
                     const uint8_t *data, size_t ndata)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_msg(fp != NULL, "cannot create %s", path);
    uint8_t lb[8];
    put_le64(lb, lenfield);
    ck_assert_uint_eq(fwrite(lb, 1, 8, fp), 8);
    if (hlen) ck_assert_uint_eq(fwrite(hdr, 1, hlen, fp), hlen);
    if (ndata) ck_assert_uint_eq(fwrite(data, 1, ndata, fp), ndata);
    ck_assert_int_eq(fclose(fp), 0);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_msg(fp != NULL, "cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    ck_assert(sz >= 0);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *n = (size_t)sz;
    return b;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* number of entries of dir whose name contains `part` */
static int count_named(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    ck_assert(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

static float f32_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- a hand-built valid file --------------------------------------------- */

/* "a" F32 [2,3] at [0,24), "b" BF16 [4] at [24,32), "c" U8 [0] at [32,32) */
static const char valid_hdr[] =
    "{\"__metadata__\":{\"k\":\"v\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"c\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[32,32]}}";
static const uint32_t a_bits[6] = {0x3FC00000u, 0xC0100000u, 0x00000000u,
                                   0x3E800000u, 0x42C80000u, 0xBF000000u};
static const float a_vals[6] = {1.5f, -2.25f, 0.0f, 0.25f, 100.0f, -0.5f};
static const uint16_t b_bits[4] = {0x3F80, 0xC000, 0x4049, 0xBE80};
static const float b_vals[4] = {1.0f, -2.0f, 3.140625f, -0.25f};

static void valid_data(uint8_t data[32])
{
    for (int i = 0; i < 6; i++) put_le32(data + 4 * i, a_bits[i]);
    for (int i = 0; i < 4; i++) put_le16(data + 24 + 2 * i, b_bits[i]);
}

static void check_valid_file(const char *path, uint64_t hlen, const uint8_t data[32])
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *f = NULL;
    ck_assert_msg(fs_st_open(&ctx, path, &f) == FS_OK, "open: %s", ctx.errmsg);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(f->ntensors, 3);
    ck_assert_uint_eq(f->data_start, 8 + hlen);
    ck_assert_str_eq(f->tensors[0].name, "a");
    ck_assert_str_eq(f->tensors[1].name, "b");
    ck_assert_str_eq(f->tensors[2].name, "c");

    const fs_st_tensor *a = fs_st_find(f, "a"), *b = fs_st_find(f, "b"), *c = fs_st_find(f, "c");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_null(fs_st_find(f, "d"));
    ck_assert_ptr_null(fs_st_find(f, "__metadata__"));

    ck_assert_int_eq(a->dtype, FS_DT_F32);
    ck_assert_int_eq(a->ndim, 2);
    ck_assert_int_eq(a->shape[0], 2);
    ck_assert_int_eq(a->shape[1], 3);
    ck_assert_uint_eq(a->nelem, 6);
    ck_assert_uint_eq(a->nbytes, 24);
    ck_assert_uint_eq(a->offset, 8 + hlen);

    ck_assert_int_eq(b->dtype, FS_DT_BF16);
    ck_assert_int_eq(b->ndim, 1);
    ck_assert_int_eq(b->shape[0], 4);
    ck_assert_uint_eq(b->nelem, 4);
    ck_assert_uint_eq(b->nbytes, 8);
    ck_assert_uint_eq(b->offset, 8 + hlen + 24);

    ck_assert_int_eq(c->dtype, FS_DT_U8);
    ck_assert_int_eq(c->ndim, 1);
    ck_assert_int_eq(c->shape[0], 0);
    ck_assert_uint_eq(c->nelem, 0);
    ck_assert_uint_eq(c->nbytes, 0);
    ck_assert_uint_eq(c->offset, 8 + hlen + 32);

    uint8_t raw[32];
    ck_assert(fs_st_read(&ctx, f, a, raw) == FS_OK);
    ck_assert(memcmp(raw, data, 24) == 0);
    ck_assert(fs_st_read(&ctx, f, b, raw) == FS_OK);
    ck_assert(memcmp(raw, data + 24, 8) == 0);
    ck_assert(fs_st_read(&ctx, f, c, raw) == FS_OK);

    float *x = NULL;
    ck_assert_msg(fs_st_read_f32(&ctx, f, a, &x) == FS_OK, "%s", ctx.errmsg);
    for (int i = 0; i < 6; i++) {
        ck_assert(x[i] == a_vals[i]);
        ck_assert(x[i] == f32_of_bits(a_bits[i]));
    }
    free(x);
    ck_assert_msg(fs_st_read_f32(&ctx, f, b, &x) == FS_OK, "%s", ctx.errmsg);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(x[i] == b_vals[i], "bf16 %d: %g != %g", i, (double)x[i], (double)b_vals[i]);
    free(x);
    /* U8 is not a float dtype */
    x = (float *)1;
    ck_assert(fs_st_read_f32(&ctx, f, c, &x) == FS_ERR_FORMAT);
    ck_assert_ptr_null(x);

    ck_assert_int_eq(f->nmeta, 1);
    ck_assert_pstr_eq(fs_st_meta(f, "k"), "v");
    ck_assert_ptr_null(fs_st_meta(f, "v"));
    ck_assert_ptr_null(fs_st_meta(f, "a"));
    fs_st_close(f);
}

START_TEST(test_valid_file)
{
    char *dir = t_tmpdir();
    ck_assert_ptr_nonnull(dir);
    char *path = join(dir, "valid.safetensors");
    uint8_t data[32];
    valid_data(data);
    size_t hlen = strlen(valid_hdr);
    write_st(path, hlen, valid_hdr, hlen, data, sizeof data);
    check_valid_file(path, hlen, data);
    fs_st_close(NULL);
    free(path);
    t_rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(test_padded_header)
{
    char *dir = t_tmpdir();
    char *path = join(dir, "padded.safetensors");
    uint8_t data[32];
    valid_data(data);
    size_t n = strlen(valid_hdr), padded = (n + 7) / 8 * 8;
    if (padded == n) padded += 8;             /* always some padding */
    char *hdr = malloc(padded);
    memcpy(hdr, valid_hdr, n);
    memset(hdr + n, ' ', padded - n);
    write_st(path, padded, hdr, padded, data, sizeof data);
    check_valid_file(path, padded, data);
    free(hdr);
    free(path);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* ---- the writer, checked by a hand parser ------------------------------- */

typedef struct wt {
    const char *name, *dtype;
    fs_dtype dt;
    int ndim;
    int64_t shape[3];
    size_t nbytes;
    const void *data;
} wt;

/* Parses path by hand and checks every tensor of want[] and the metadata. */
static void hand_parse(const char *path, const wt *want, int nwant, const char *mkey,
                       const char *mval)
{
    size_t size;
    uint8_t *buf = slurp(path, &size);
    ck_assert_uint_ge(size, 8);
    uint64_t n = get_le64(buf);
    ck_assert_msg(n % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)n);
    ck_assert_uint_le(8 + n, size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    ck_assert_msg(root != NULL, "header: %s", jerr.text);
    ck_assert(json_is_object(root));
    size_t total = 0;
    for (int i = 0; i < nwant; i++) {
        json_t *t = json_object_get(root, want[i].name);
        ck_assert_msg(json_is_object(t), "tensor %s", want[i].name);
        ck_assert_str_eq(json_string_value(json_object_get(t, "dtype")), want[i].dtype);
        json_t *sh = json_object_get(t, "shape"), *off = json_object_get(t, "data_offsets");
        ck_assert(json_is_array(sh));
        ck_assert_uint_eq(json_array_size(sh), (size_t)want[i].ndim);
        for (int d = 0; d < want[i].ndim; d++)
            ck_assert_int_eq(json_integer_value(json_array_get(sh, (size_t)d)), want[i].shape[d]);
        ck_assert(json_is_array(off) && json_array_size(off) == 2);
        json_int_t b = json_integer_value(json_array_get(off, 0));
        json_int_t e = json_integer_value(json_array_get(off, 1));
        ck_assert_int_ge(b, 0);
        ck_assert_int_eq(e - b, (json_int_t)want[i].nbytes);
        ck_assert_uint_le(8 + n + (uint64_t)e, size);
        if (want[i].nbytes)
            ck_assert_msg(memcmp(buf + 8 + n + b, want[i].data, want[i].nbytes) == 0,
                          "data of %s", want[i].name);
        total += want[i].nbytes;
    }
    size_t extra = mkey ? 1 : 0;
    ck_assert_uint_eq(json_object_size(root), (size_t)nwant + extra);
    if (mkey) {
        json_t *m = json_object_get(root, "__metadata__");
        ck_assert(json_is_object(m));
        ck_assert_str_eq(json_string_value(json_object_get(m, mkey)), mval);
    }
    ck_assert_uint_eq(size, 8 + n + total);   /* no stray bytes */
    json_decref(root);
    free(buf);
}

START_TEST(test_writer)
{
    char *dir = t_tmpdir();
    char *path = join(dir, "out.safetensors");
    t_rng r = {42};
    float w[15];
    for (int i = 0; i < 15; i++) w[i] = t_gauss(&r);
    int32_t iv[4] = {7, -1, 0, 2147483647};
    uint8_t iraw[16];
    for (int i = 0; i < 4; i++) put_le32(iraw + 4 * i, (uint32_t)iv[i]);
    uint16_t h[4] = {0x3F80, 0xC000, 0x0001, 0x7F7F};
    uint8_t hraw[8];
    for (int i = 0; i < 4; i++) put_le16(hraw + 2 * i, h[i]);
    uint8_t wraw[60];
    for (int i = 0; i < 15; i++) {
        uint32_t u;
        memcpy(&u, &w[i], 4);
        put_le32(wraw + 4 * i, u);
    }
    const wt want[] = {
        {"w", "F32", FS_DT_F32, 2, {3, 5, 0}, 60, wraw},
        {"i", "I32", FS_DT_I32, 1, {4, 0, 0}, 16, iraw},
        {"e", "U8", FS_DT_U8, 1, {0, 0, 0}, 0, NULL},
        {"h", "BF16", FS_DT_BF16, 2, {2, 2, 0}, 8, hraw},
    };
    const void *src[] = {w, iv, NULL, h};

    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_writer *wr = NULL;
    ck_assert(fs_st_writer_new(&ctx, path, &wr) == FS_OK);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(fs_st_writer_add(&ctx, wr, want[i].name, want[i].dt, want[i].ndim,
                                       want[i].shape, src[i]) == FS_OK, "%s", ctx.errmsg);
    ck_assert(fs_st_writer_meta(&ctx, wr, "format", "test-1") == FS_OK);
    ck_assert(!exists(path));                     /* nothing before commit */
    ck_assert_int_eq(count_named(dir, ".tmp"), 0);
    ck_assert_msg(fs_st_writer_commit(&ctx, wr) == FS_OK, "%s", ctx.errmsg);
    ck_assert(exists(path));
    ck_assert_int_eq(count_named(dir, ".tmp"), 0);
    hand_parse(path, want, 4, "format", "test-1");

    /* commit over an existing file replaces it whole */
    ck_assert(fs_st_writer_new(&ctx, path, &wr) == FS_OK);
    ck_assert(fs_st_writer_add(&ctx, wr, "h", FS_DT_BF16, 2, want[3].shape, h) == FS_OK);
    ck_assert(fs_st_writer_commit(&ctx, wr) == FS_OK);
    hand_parse(path, want + 3, 1, NULL, NULL);

    /* abort leaves nothing */
    char *path2 = join(dir, "aborted.safetensors");
    ck_assert(fs_st_writer_new(&ctx, path2, &wr) == FS_OK);
    ck_assert(fs_st_writer_add(&ctx, wr, "w", FS_DT_F32, 2, want[0].shape, w) == FS_OK);
    fs_st_writer_abort(wr);
    fs_st_writer_abort(NULL);
    ck_assert(!exists(path2));
    ck_assert_int_eq(count_named(dir, ".tmp"), 0);
    ck_assert_int_eq(count_named(dir, "aborted"), 0);

    /* a commit into a missing folder fails with IO and leaves nothing */
    char *path3 = join(dir, "no/such/folder.safetensors");
    ck_assert(fs_st_writer_new(&ctx, path3, &wr) == FS_OK);
    ck_assert(fs_st_writer_add(&ctx, wr, "w", FS_DT_F32, 2, want[0].shape, w) == FS_OK);
    ck_assert(fs_st_writer_commit(&ctx, wr) == FS_ERR_IO);
    ck_assert(strstr(ctx.errmsg, "folder.safetensors") != NULL);
    ck_assert(!exists(path3));
    ck_assert_int_eq(count_named(dir, ".tmp"), 0);

    /* a commit whose rename fails (the final name is a folder) leaves no temp file */
    char *path4 = join(dir, "taken");
    char *inner = join(path4, "x");
    ck_assert_int_eq(mkdir(path4, 0755), 0);
    write_bytes(inner, "x", 1);
    ck_assert(fs_st_writer_new(&ctx, path4, &wr) == FS_OK);
    ck_assert(fs_st_writer_add(&ctx, wr, "w", FS_DT_F32, 2, want[0].shape, w) == FS_OK);
    ck_assert(fs_st_writer_commit(&ctx, wr) == FS_ERR_IO);
    ck_assert_int_eq(count_named(dir, ".tmp"), 0);
    free(inner);
    free(path4);

    /* header length is a multiple of 8 for every name length */
    for (int len = 1; len <= 16; len++) {
        char name[17];
        memset(name, 'x', (size_t)len);
        name[len] = '\0';
        fs_ctx_init(&ctx);
        ck_assert(fs_st_writer_new(&ctx, path2, &wr) == FS_OK);
        ck_assert(fs_st_writer_add(&ctx, wr, name, FS_DT_F32, 2, want[0].shape, w) == FS_OK);
        ck_assert(fs_st_writer_commit(&ctx, wr) == FS_OK);
        wt one = want[0];
        one.name = name;
        hand_parse(path2, &one, 1, NULL, NULL);
    }
    free(path);
    free(path2);
    free(path3);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* Whatever the writer accepts must read back: a name the reader would reject
 * ("" or the reserved "__metadata__") has to be refused by add or commit. */
START_TEST(test_writer_names_readable)
{
    static const char *names[] = {"", "__metadata__"};
    char *dir = t_tmpdir();
    char *path = join(dir, "names.safetensors");
    float v[2] = {1.0f, 2.0f};
    int64_t shape[1] = {2};
    char bad[2048] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        unlink(path);
        fs_st_writer *w = NULL;
        ck_assert(fs_st_writer_new(&ctx, path, &w) == FS_OK);
        fs_status rc = fs_st_writer_add(&ctx, w, names[i], FS_DT_F32, 1, shape, v);
        if (rc == FS_OK) ck_assert(fs_st_writer_meta(&ctx, w, "k", "v") == FS_OK);
        if (rc == FS_OK) rc = fs_st_writer_commit(&ctx, w);
        else fs_st_writer_abort(w);
        if (rc != FS_OK) {
            ck_assert(!exists(path));
            continue;
        }
        fs_st_file *f = NULL;
        fs_ctx_init(&ctx);
        if (fs_st_open(&ctx, path, &f) != FS_OK)
            snprintf(bad + strlen(bad), sizeof bad - strlen(bad),
                     " [name '%s' accepted, file rejected: %s]", names[i], ctx.errmsg);
        fs_st_close(f);
    }
    free(path);
    t_rmdir(dir);
    free(dir);
    ck_assert_msg(bad[0] == '\0', "writer output unreadable:%s", bad);
}
END_TEST

/* ---- malformed files ------------------------------------------------------ */

enum { B_HDR, B_LEN, B_RAW, B_DEEP, B_BIG, B_MISSING, B_DIR, B_FIFO, B_DEV };

typedef struct bad_case {
    const char *desc;
    int kind;
    const char *hdr;      /* header text (B_HDR, B_LEN) or whole file (B_RAW) */
    size_t hlen;          /* 0: strlen(hdr) */
    uint64_t lenfield;    /* B_LEN: the length field written */
    size_t data;          /* zero bytes after the header */
    fs_status want;
} bad_case;

#define T1(x) "{\"t\":{\"dtype\":\"F32\",\"shape\":" x ",\"data_offsets\":[0,8]}}"
#define NUL_HDR "{\"__metadata__\":{\"k\":\"v\0\"}}"
#define TO(x) "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" x "}}"

static const bad_case bad[] = {
    {"empty file", B_RAW, "", 0, 0, 0, FS_ERR_FORMAT},
    {"file shorter than 8 bytes", B_RAW, "\x10\0\0\0\0", 5, 0, 0, FS_ERR_FORMAT},
    {"header length 0", B_LEN, "{}", 0, 0, 8, FS_ERR_FORMAT},
    {"header length larger than the file", B_LEN, "{}", 0, 100, 20, FS_ERR_FORMAT},
    {"header length 2^63", B_LEN, "{}", 0, 1ull << 63, 8, FS_ERR_FORMAT},
    {"header length 2^64-1", B_LEN, "{}", 0, UINT64_MAX, 8, FS_ERR_FORMAT},
    {"header length over the 100 MB cap", B_LEN, "{}", 0, FS_ST_MAX_HEADER + 8ull, 8,
     FS_ERR_FORMAT},
    {"header not JSON", B_HDR, "\x01\x02garbage\xfe!", 0, 0, 0, FS_ERR_FORMAT},
    {"header truncated JSON", B_HDR, "{\"t\":{\"dtype\":\"F32\"", 0, 0, 0, FS_ERR_FORMAT},
    {"header JSON is an array", B_HDR, "[1,2,3]", 0, 0, 0, FS_ERR_FORMAT},
    {"header JSON is a number", B_HDR, "42", 0, 0, 0, FS_ERR_FORMAT},
    {"trailing garbage after the object", B_HDR, "{}  xyz", 0, 0, 0, FS_ERR_FORMAT},
    {"tensor entry not an object", B_HDR, "{\"t\":[1,2]}", 0, 0, 8, FS_ERR_FORMAT},
    {"unknown dtype F7", B_HDR, "{\"t\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     0, 0, 8, FS_ERR_FORMAT},
    {"missing dtype", B_HDR, "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 0, 8,
     FS_ERR_FORMAT},
    {"dtype not a string", B_HDR, "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}",
     0, 0, 8, FS_ERR_FORMAT},
    {"missing shape", B_HDR, "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 0, 0, 8,
     FS_ERR_FORMAT},
    {"shape not an array", B_HDR, T1("2"), 0, 0, 8, FS_ERR_FORMAT},
    {"shape with a negative dim", B_HDR, T1("[-2]"), 0, 0, 8, FS_ERR_FORMAT},
    {"shape with 1.5", B_HDR, T1("[1.5]"), 0, 0, 8, FS_ERR_FORMAT},
    {"shape with \"3\"", B_HDR, T1("[\"3\"]"), 0, 0, 8, FS_ERR_FORMAT},
    {"shape with 2.0", B_HDR, T1("[2.0]"), 0, 0, 8, FS_ERR_FORMAT},
    {"shape with 9 dims", B_HDR, T1("[2,1,1,1,1,1,1,1,1]"), 0, 0, 8, FS_ERR_FORMAT},
    {"shape product overflows uint64", B_HDR,
     "{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
     0, 0, 8, FS_ERR_FORMAT},
    {"byte size overflows uint64", B_HDR,
     "{\"t\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952,4],\"data_offsets\":[0,0]}}",
     0, 0, 8, FS_ERR_FORMAT},
    {"missing data_offsets", B_HDR, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, 0, 8,
     FS_ERR_FORMAT},
    {"data_offsets with 1 element", B_HDR, TO("[8]"), 0, 0, 8, FS_ERR_FORMAT},
    {"data_offsets with 3 elements", B_HDR, TO("[0,8,8]"), 0, 0, 8, FS_ERR_FORMAT},
    {"data_offsets negative", B_HDR, TO("[-8,0]"), 0, 0, 8, FS_ERR_FORMAT},
    {"data_offsets not integers", B_HDR, TO("[0.0,8.0]"), 0, 0, 8, FS_ERR_FORMAT},
    {"data_offsets beyond int64", B_HDR, TO("[0,18446744073709551615]"), 0, 0, 8,
     FS_ERR_FORMAT},
    {"end < begin", B_HDR, TO("[8,0]"), 0, 0, 8, FS_ERR_FORMAT},
    {"span larger than the shape", B_HDR, TO("[0,12]"), 0, 0, 12, FS_ERR_FORMAT},
    {"span smaller than the shape", B_HDR, TO("[0,4]"), 0, 0, 8, FS_ERR_FORMAT},
    {"data truncated", B_HDR, TO("[0,8]"), 0, 0, 7, FS_ERR_FORMAT},
    {"offsets past the end of the file", B_HDR, TO("[1000,1008]"), 0, 0, 8, FS_ERR_FORMAT},
    {"empty tensor past the end", B_HDR,
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[1000,1000]}}", 0, 0, 8,
     FS_ERR_FORMAT},
    /* the tensors must tile the data region (the reference reader's
       MetadataIncompleteBuffer / InvalidOffset): found by make fuzz, a header
       length 2 short made every tensor read 2 bytes early */
    {"header length 2 short of its padded JSON", B_LEN,
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ", 0,
     sizeof "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}" - 1, 8,
     FS_ERR_FORMAT},
    {"bytes after the last tensor", B_HDR, TO("[0,8]"), 0, 0, 10, FS_ERR_FORMAT},
    {"first tensor not at offset 0", B_HDR, TO("[4,12]"), 0, 0, 12, FS_ERR_FORMAT},
    {"a gap between two tensors", B_HDR,
     "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 0, 0, 20, FS_ERR_FORMAT},
    {"offsets near 2^64 wrap", B_HDR, TO("[9223372036854775800,9223372036854775807]"), 0, 0,
     8, FS_ERR_FORMAT},
    {"two tensors overlapping", B_HDR,
     "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 0, 12, FS_ERR_FORMAT},
    {"two tensors on the same span", B_HDR,
     "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
     "\"y\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 0, 4, FS_ERR_FORMAT},
    {"duplicate tensor names", B_HDR,
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 0, 0, 16, FS_ERR_FORMAT},
    {"empty tensor name", B_HDR,
     "{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 0, 8, FS_ERR_FORMAT},
    {"__metadata__ value not a string", B_HDR, "{\"__metadata__\":{\"k\":1}}", 0, 0, 0,
     FS_ERR_FORMAT},
    {"__metadata__ not an object", B_HDR, "{\"__metadata__\":\"k\"}", 0, 0, 0, FS_ERR_FORMAT},
    {"duplicate __metadata__", B_HDR, "{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, 0,
     FS_ERR_FORMAT},
    {"invalid UTF-8 in a name", B_HDR,
     "{\"t\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 0, 8,
     FS_ERR_FORMAT},
    {"overlong UTF-8 in metadata", B_HDR, "{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}", 0, 0, 0,
     FS_ERR_FORMAT},
    {"NUL inside the header", B_HDR, NUL_HDR, sizeof NUL_HDR - 1, 0, 0,
     FS_ERR_FORMAT},
    {"escaped NUL in a name", B_HDR,
     "{\"t\\u0000x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 0, 8,
     FS_ERR_FORMAT},
    {"valid header longer than the cap", B_BIG, NULL, 0, 0, 0, FS_ERR_FORMAT},
    {"deep nesting inside a tensor entry", B_DEEP, NULL, 0, 0, 0, FS_ERR_FORMAT},
    {"nonexistent file", B_MISSING, NULL, 0, 0, 0, FS_ERR_USAGE},          /* bad input: exit 2 */
    {"a folder", B_DIR, NULL, 0, 0, 0, FS_ERR_USAGE},
    {"a named pipe (opened without blocking)", B_FIFO, NULL, 0, 0, 0, FS_ERR_USAGE},
    {"a device (a link to /dev/zero)", B_DEV, NULL, 0, 0, 0, FS_ERR_USAGE},
};
#define NBAD ((int)(sizeof bad / sizeof bad[0]))

static char *deep_header(void)
{
    const char *pre = "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":";
    size_t np = strlen(pre), n = np + 2 * DEEP_LEVELS + 3;
    char *h = malloc(n);
    memcpy(h, pre, np);
    memset(h + np, '[', DEEP_LEVELS);
    memset(h + np + DEEP_LEVELS, ']', DEEP_LEVELS);
    memcpy(h + np + 2 * DEEP_LEVELS, "}}", 3);
    return h;
}

/* "{}" and spaces up to FS_ST_MAX_HEADER + 8 bytes: valid JSON, so only the
 * cap can reject it (and nothing that size may be read or allocated). */
static void write_big(const char *path)
{
    const size_t chunk = 1u << 20;
    const uint64_t n = FS_ST_MAX_HEADER + 8ull;
    char *sp = malloc(chunk);
    memset(sp, ' ', chunk);
    FILE *fp = fopen(path, "wb");
    ck_assert(fp != NULL);
    uint8_t lb[8];
    put_le64(lb, n);
    ck_assert_uint_eq(fwrite(lb, 1, 8, fp), 8);
    ck_assert_uint_eq(fwrite("{}", 1, 2, fp), 2);
    for (uint64_t left = n - 2; left > 0;) {
        size_t k = left < chunk ? (size_t)left : chunk;
        ck_assert_uint_eq(fwrite(sp, 1, k, fp), k);
        left -= k;
    }
    ck_assert_int_eq(fclose(fp), 0);
    free(sp);
}

START_TEST(test_malformed)
{
    const bad_case *b = &bad[_i];
    char *dir = t_tmpdir();
    char *path = join(dir, "bad.safetensors");
    uint8_t *zero = calloc(b->data + 1, 1);
    const char *hdr = b->hdr;
    char *deep = NULL;
    size_t hlen = b->hlen ? b->hlen : (hdr ? strlen(hdr) : 0);
    switch (b->kind) {
    case B_RAW: write_bytes(path, hdr, hlen); break;
    case B_HDR: write_st(path, hlen, hdr, hlen, zero, b->data); break;
    case B_LEN: write_st(path, b->lenfield, hdr, hlen, zero, b->data); break;
    case B_DEEP:
        deep = deep_header();
        write_st(path, strlen(deep), deep, strlen(deep), zero, 0);
        break;
    case B_BIG: write_big(path); break;
    case B_MISSING: break;
    case B_DIR: ck_assert_int_eq(mkdir(path, 0755), 0); break;
    case B_FIFO: ck_assert_int_eq(mkfifo(path, 0644), 0); break;
    case B_DEV: ck_assert_int_eq(symlink("/dev/zero", path), 0); break;
    }
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_st_file *f = (fs_st_file *)&ctx;           /* must be overwritten with NULL */
    alarm(WAIT_SECONDS);                          /* a reader that blocks (a pipe) dies, not hangs */
    fs_status rc = fs_st_open(&ctx, path, &f);
    alarm(0);
    ck_assert_msg(rc == b->want, "%s: status %s, want %s (%s)", b->desc, fs_status_str(rc),
                  fs_status_str(b->want), ctx.errmsg);
    ck_assert_msg(f == NULL, "%s: *out not NULL", b->desc);
    ck_assert_msg(ctx.err == rc, "%s: ctx.err not set", b->desc);
    ck_assert_msg(strstr(ctx.errmsg, path) != NULL, "%s: message '%s' does not name the file",
                  b->desc, ctx.errmsg);
    free(deep);
    free(zero);
    free(path);
    t_rmdir(dir);
    free(dir);
}
END_TEST

/* ---- fuzz ------------------------------------------------------------------ */

static const char fuzz_hdr[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"q\":{\"dtype\":\"U8\",\"shape\":[2,4],\"data_offsets\":[32,40]},"
    "\"z\":{\"dtype\":\"I64\",\"shape\":[0,7],\"data_offsets\":[40,40]}}";

START_TEST(test_fuzz)
{
    char *dir = t_tmpdir();
    char *path = join(dir, "fuzz.safetensors");
    const size_t hlen = strlen(fuzz_hdr), ndata = 40, base_n = 8 + hlen + ndata;
    uint8_t *base = malloc(base_n);
    put_le64(base, hlen);
    memcpy(base + 8, fuzz_hdr, hlen);
    for (size_t i = 0; i < ndata; i++) base[8 + hlen + i] = (uint8_t)(i * 37 + 1);
    static const char tokens[] = "0123456789[]{},:\"-. eE";
    t_rng r = {FUZZ_SEED};
    int n_ok = 0, n_fail = 0;
    uint8_t *buf = malloc(4 * base_n + 64);
    for (int it = 0; it < FUZZ_ITERS; it++) {
        size_t n = base_n;
        memcpy(buf, base, n);
        int nmut = 1 + (int)(t_next(&r) % 3);
        for (int m = 0; m < nmut; m++) {
            size_t hend = n > 8 ? n : 9;          /* mutate mostly inside the header */
            uint32_t kind = t_next(&r) % 6;
            size_t pos = 8 + t_next(&r) % (hend - 8);
            if (kind == 0) {                      /* random byte */
                buf[pos] = (uint8_t)t_next(&r);
            } else if (kind == 1) {               /* JSON-ish byte: keeps it nearly valid */
                buf[pos] = (uint8_t)tokens[t_next(&r) % (sizeof tokens - 1)];
            } else if (kind == 2) {               /* flip one bit */
                buf[pos] ^= (uint8_t)(1u << (t_next(&r) % 8));
            } else if (kind == 3) {               /* truncate */
                n = t_next(&r) % (n + 1);
            } else if (kind == 4 && n > 8) {      /* duplicate a span (maybe fix the length) */
                size_t from = 8 + t_next(&r) % (n - 8);
                size_t len = 1 + t_next(&r) % 24;
                if (from + len > n) len = n - from;
                if (n + len > 4 * base_n) continue;
                memmove(buf + pos + len, buf + pos, n - pos);
                memmove(buf + pos, buf + (from >= pos ? from + len : from), len);
                n += len;
                if (t_next(&r) % 2) put_le64(buf, get_le64(buf) + len);
            } else if (kind == 5 && n >= 8) {     /* change the length field */
                uint64_t v = get_le64(buf);
                uint32_t how = t_next(&r) % 3;
                if (how == 0) v = v + (t_next(&r) % 17) - 8;
                else if (how == 1) v = (uint64_t)t_next(&r) << 32;
                else v ^= 1ull << (t_next(&r) % 64);
                put_le64(buf, v);
            }
        }
        write_bytes(path, buf, n);
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        fs_st_file *f = NULL;
        fs_status rc = fs_st_open(&ctx, path, &f);
        if (rc != FS_OK) {
            n_fail++;
            ck_assert_msg(f == NULL, "iteration %d: *out not NULL on error", it);
            ck_assert_msg(ctx.errmsg[0] != '\0', "iteration %d: empty errmsg", it);
            continue;
        }
        n_ok++;
        ck_assert_uint_eq(f->size, n);
        ck_assert_uint_le(f->data_start, n);
        uint64_t hl = get_le64(buf);
        ck_assert_uint_eq(f->data_start, 8 + hl);
        for (int i = 0; i < f->ntensors; i++) {
            const fs_st_tensor *t = &f->tensors[i];
            ck_assert_int_le(t->ndim, FS_ST_MAX_DIMS);
            uint64_t ne = 1;
            for (int d = 0; d < t->ndim; d++) {
                ck_assert_int_ge(t->shape[d], 0);
                ne *= (uint64_t)t->shape[d];
            }
            ck_assert_uint_eq(ne, t->nelem);
            ck_assert_uint_eq(t->nbytes, t->nelem * fs_dtype_size(t->dtype));
            ck_assert_uint_ge(t->offset, f->data_start);
            ck_assert_msg(t->offset <= n && t->nbytes <= n - t->offset,
                          "iteration %d: tensor %s [%llu, +%llu) outside the %zu-byte file", it,
                          t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes, n);
            for (int j = 0; j < i; j++) {
                const fs_st_tensor *u = &f->tensors[j];
                if (!t->nbytes || !u->nbytes) continue;
                ck_assert_msg(t->offset + t->nbytes <= u->offset ||
                                  u->offset + u->nbytes <= t->offset,
                              "iteration %d: %s and %s overlap", it, t->name, u->name);
            }
            uint8_t *raw = malloc(t->nbytes + 1);
            ck_assert_msg(fs_st_read(&ctx, f, t, raw) == FS_OK, "iteration %d: %s", it, ctx.errmsg);
            ck_assert(memcmp(raw, buf + t->offset, t->nbytes) == 0);
            free(raw);
        }
        fs_st_close(f);
    }
    /* both outcomes must occur, or the mutations are not exercising the reader */
    ck_assert_int_gt(n_ok, 0);
    ck_assert_int_gt(n_fail, 0);
    free(buf);
    free(base);
    free(path);
    t_rmdir(dir);
    free(dir);
}
END_TEST

Suite *fs_suite_safetensors(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("valid");
    tcase_add_test(tc, test_valid_file);
    tcase_add_test(tc, test_padded_header);
    suite_add_tcase(s, tc);
    tc = tcase_create("writer");
    tcase_add_test(tc, test_writer);
    tcase_add_test(tc, test_writer_names_readable);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_loop_test(tc, test_malformed, 0, NBAD);
    suite_add_tcase(s, tc);
    tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fuzz);
    suite_add_tcase(s, tc);
    return s;
}
