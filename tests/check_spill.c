/* check_spill.c: activations spilled to the work folder (stream/spill.h).
 *  - the spill store against a byte array kept here: fills row by row,
 *    reads, in-place updates and moves, with ragged last chunks, rows whose
 *    offsets are not 4096-aligned and one-row chunks; a move leaves the held
 *    file untouched for its reader; both files removed at the end;
 *  - calls out of turn are refused (FS_ERR_USAGE) without damage;
 *  - a writing pass waits for a hold to be released;
 *  - a failing write (injected ENOSPC) is reported naming the file;
 *  - the pipeline spilled gives the very Hessians and output bytes of the
 *    resident run (whose Hessians check_pipeline matches against a naive
 *    forward): dense llama over several batches, qwen3_moe, deepseek_v3;
 *  - quantize spills by itself under a --host-mem that cannot hold a
 *    boundary (and says so), --spill never refuses it, a bad --spill is an
 *    error; the output equals the resident run's. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/record.h"
#include "tests/util.h"
#include "stream/spill.h"

/* ---- the store against a model in memory ---------------------------------- */

static void fill_random(uint8_t *p, size_t n, t_rng *g)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(t_next(g) >> 24);
}

/* A READ pass: every chunk in order, equal to ref. */
static void read_all(fs_ctx *ctx, fs_spill *sp, const uint8_t *ref, uint64_t rows, uint64_t rb, uint64_t chunk)
{
    ck_assert_int_eq(fs_spill_begin(ctx, sp, FS_SPILL_READ), FS_OK);
    for (uint64_t r = 0; r < rows; r += chunk) {
        const void *p;
        uint64_t r0, n;
        ck_assert_msg(fs_spill_read(ctx, sp, &p, &r0, &n) == FS_OK, "%s", ctx->errmsg);
        ck_assert_uint_eq(r0, r);
        ck_assert_uint_eq(n, rows - r < chunk ? rows - r : chunk);
        ck_assert_msg(memcmp(p, ref + r * rb, n * rb) == 0, "rows [%llu, %llu) differ", (unsigned long long)r,
                      (unsigned long long)(r + n));
        fs_spill_release(sp);
    }
    ck_assert_int_eq(fs_spill_end(ctx, sp, FS_OK), FS_OK);
}

/* A pass that reads each chunk and writes f(chunk) back (INPLACE) or to the
 * other file (MOVE), in two halves when the chunk has several rows. */
static void rewrite_all(fs_ctx *ctx, fs_spill *sp, fs_spill_mode mode, uint8_t *ref, uint64_t rows, uint64_t rb,
                        uint64_t chunk, uint8_t add)
{
    ck_assert_int_eq(fs_spill_begin(ctx, sp, mode), FS_OK);
    uint8_t *tmp = malloc(chunk * rb);
    for (uint64_t r = 0; r < rows; r += chunk) {
        const void *p;
        uint64_t r0, n;
        ck_assert_msg(fs_spill_read(ctx, sp, &p, &r0, &n) == FS_OK, "%s", ctx->errmsg);
        ck_assert_uint_eq(r0, r);
        for (uint64_t i = 0; i < n * rb; i++) tmp[i] = (uint8_t)(((const uint8_t *)p)[i] + add);
        fs_spill_release(sp);
        const uint64_t h = n > 1 ? n / 2 : n;
        void *d;
        ck_assert_msg(fs_spill_wbuf(ctx, sp, r0, h, &d) == FS_OK, "%s", ctx->errmsg);
        memcpy(d, tmp, h * rb);
        if (n > h) {
            ck_assert_msg(fs_spill_wbuf(ctx, sp, r0 + h, n - h, &d) == FS_OK, "%s", ctx->errmsg);
            memcpy(d, tmp + h * rb, (n - h) * rb);
        }
        for (uint64_t i = 0; i < n * rb; i++) ref[r0 * rb + i] = (uint8_t)(ref[r0 * rb + i] + add);
    }
    free(tmp);
    ck_assert_msg(fs_spill_end(ctx, sp, FS_OK) == FS_OK, "%s", ctx->errmsg);
}

static uint8_t *slurp(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    uint8_t *b = malloc(n);
    ck_assert_uint_eq(fread(b, 1, n, f), n);
    fclose(f);
    return b;
}

START_TEST(passes_match_a_model_in_memory)
{
    /* rows, row bytes, chunk rows: ragged, unaligned, one-row chunks, one chunk,
     * chunk larger than the rows, chunks of several pages */
    static const uint64_t cases[][3] = {{37, 12, 5}, {9, 4098, 1}, {16, 20, 16}, {7, 6, 100}, {300, 1000, 64}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const uint64_t rows = cases[c][0], rb = cases[c][1];
        const uint64_t chunk = cases[c][2] < rows ? cases[c][2] : rows;
        char *tmp = t_tmpdir(), p0[4200], p1[4200];
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        ctx.quiet = 1;
        fs_spill *sp = NULL;
        ck_assert_msg(fs_spill_new(&ctx, tmp, rows, rb, cases[c][2], &sp) == FS_OK, "%s", ctx.errmsg);
        ck_assert_uint_eq(fs_spill_chunk_rows(sp), chunk);
        snprintf(p0, sizeof p0, "%s/spill-0.raw", tmp);
        snprintf(p1, sizeof p1, "%s/spill-1.raw", tmp);
        ck_assert_int_eq(access(p0, F_OK), 0);
        ck_assert_int_eq(access(p1, F_OK), 0);
        uint8_t *ref = malloc(rows * rb);
        t_rng g = {11 + (uint32_t)c};
        fill_random(ref, rows * rb, &g);

        /* FILL row by row: the store gathers rows into chunks */
        ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_FILL), FS_OK);
        for (uint64_t r = 0; r < rows; r++) {
            void *d;
            ck_assert_msg(fs_spill_wbuf(&ctx, sp, r, 1, &d) == FS_OK, "%s", ctx.errmsg);
            memcpy(d, ref + r * rb, rb);
        }
        ck_assert_msg(fs_spill_end(&ctx, sp, FS_OK) == FS_OK, "%s", ctx.errmsg);
        read_all(&ctx, sp, ref, rows, rb, chunk);

        rewrite_all(&ctx, sp, FS_SPILL_INPLACE, ref, rows, rb, chunk, 1);
        read_all(&ctx, sp, ref, rows, rb, chunk);

        /* MOVE with the current file held: the holder still sees the old rows */
        uint8_t *before = malloc(rows * rb);
        memcpy(before, ref, rows * rb);
        const char *held = NULL;
        int h = fs_spill_hold(sp, &held);
        fs_spill_unhold(sp, h);                  /* (a hold on the file read does not stop a move) */
        h = fs_spill_hold(sp, &held);
        ck_assert_ptr_nonnull(held);
        rewrite_all(&ctx, sp, FS_SPILL_MOVE, ref, rows, rb, chunk, 0x5a);
        uint8_t *kept = slurp(held, rows * rb);
        ck_assert_msg(memcmp(kept, before, rows * rb) == 0, "a move changed the held file");
        fs_spill_unhold(sp, h);
        read_all(&ctx, sp, ref, rows, rb, chunk);
        const char *now = NULL;
        fs_spill_unhold(sp, fs_spill_hold(sp, &now));
        ck_assert_str_ne(now, held);             /* the other file is current */

        /* a second move comes back to the first file */
        rewrite_all(&ctx, sp, FS_SPILL_MOVE, ref, rows, rb, chunk, 3);
        read_all(&ctx, sp, ref, rows, rb, chunk);

        fs_spill_stats st;
        fs_spill_get_stats(sp, &st);
        ck_assert_uint_eq(st.bytes_read, 7 * rows * rb);     /* 7 reading passes */
        ck_assert_uint_eq(st.bytes_written, 4 * rows * rb);  /* fill, in place, two moves */
        fs_spill_free(sp);
        ck_assert_int_ne(access(p0, F_OK), 0);
        ck_assert_int_ne(access(p1, F_OK), 0);
        free(kept); free(before); free(ref);
        t_rmdir(tmp);
        free(tmp);
    }
}
END_TEST

START_TEST(out_of_turn_is_refused)
{
    char *tmp = t_tmpdir(), nodir[4200];
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_spill *sp = NULL;
    ck_assert_int_eq(fs_spill_new(&ctx, tmp, 0, 8, 1, &sp), FS_ERR_USAGE);
    ck_assert_ptr_null(sp);
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_new(&ctx, tmp, 10, 1ull << 29, 4, &sp), FS_ERR_USAGE);   /* 2 GiB chunks */
    fs_ctx_init(&ctx);
    snprintf(nodir, sizeof nodir, "%s/missing", tmp);
    ck_assert_int_eq(fs_spill_new(&ctx, nodir, 10, 8, 4, &sp), FS_ERR_IO);
    ck_assert_msg(strstr(ctx.errmsg, "missing/spill-0.raw"), "%s", ctx.errmsg);
    fs_ctx_init(&ctx);

    const uint64_t rows = 10, rb = 8;
    ck_assert_int_eq(fs_spill_new(&ctx, tmp, rows, rb, 4, &sp), FS_OK);
    uint8_t ref[80];
    t_rng g = {3};
    fill_random(ref, sizeof ref, &g);
    void *d;
    const void *p;
    uint64_t r0, n;
    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_FILL), FS_OK);
    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_READ), FS_ERR_USAGE);   /* a pass is running */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_read(&ctx, sp, &p, &r0, &n), FS_ERR_USAGE);      /* FILL does not read */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_wbuf(&ctx, sp, 0, 5, &d), FS_ERR_USAGE);          /* over a chunk */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_wbuf(&ctx, sp, 8, 3, &d), FS_ERR_USAGE);          /* past the end */
    fs_ctx_init(&ctx);
    for (uint64_t r = 0; r < rows; r += 2) {
        ck_assert_int_eq(fs_spill_wbuf(&ctx, sp, r, 2, &d), FS_OK);
        memcpy(d, ref + r * rb, 2 * rb);
    }
    ck_assert_int_eq(fs_spill_end(&ctx, sp, FS_OK), FS_OK);

    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_READ), FS_OK);
    ck_assert_int_eq(fs_spill_wbuf(&ctx, sp, 0, 1, &d), FS_ERR_USAGE);          /* READ does not write */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_read(&ctx, sp, &p, &r0, &n), FS_OK);
    ck_assert_int_eq(fs_spill_read(&ctx, sp, &p, &r0, &n), FS_ERR_USAGE);       /* not released */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_end(&ctx, sp, FS_OK), FS_OK);                      /* early end: fine */

    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_INPLACE), FS_OK);
    ck_assert_int_eq(fs_spill_read(&ctx, sp, &p, &r0, &n), FS_OK);
    fs_spill_release(sp);
    ck_assert_int_eq(fs_spill_wbuf(&ctx, sp, 4, 1, &d), FS_ERR_USAGE);          /* rows not read yet */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_end(&ctx, sp, FS_OK), FS_OK);

    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_MOVE), FS_OK);            /* half a move */
    ck_assert_int_eq(fs_spill_read(&ctx, sp, &p, &r0, &n), FS_OK);
    fs_spill_release(sp);
    ck_assert_int_eq(fs_spill_wbuf(&ctx, sp, 0, 4, &d), FS_OK);
    memset(d, 0, 4 * rb);
    ck_assert_int_eq(fs_spill_end(&ctx, sp, FS_OK), FS_ERR_USAGE);
    ck_assert_msg(strstr(ctx.errmsg, "wrote 4 of 10 rows"), "%s", ctx.errmsg);
    fs_ctx_init(&ctx);
    read_all(&ctx, sp, ref, rows, rb, 4);        /* the current file is still the filled one */

    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_READ), FS_OK);
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(fs_spill_read(&ctx, sp, &p, &r0, &n), FS_OK);
        fs_spill_release(sp);
    }
    ck_assert_int_eq(fs_spill_read(&ctx, sp, &p, &r0, &n), FS_ERR_USAGE);       /* no chunk left */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_end(&ctx, sp, FS_OK), FS_OK);
    fs_spill_free(sp);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

typedef struct holder {
    fs_spill *sp;
    int file, fd, released;
} holder;

static void *release_later(void *arg)
{
    holder *h = arg;
    char c;
    ck_assert_int_eq(read(h->fd, &c, 1), 1);     /* the test is about to begin a writing pass */
    usleep(50000);
    __atomic_store_n(&h->released, 1, __ATOMIC_SEQ_CST);
    fs_spill_unhold(h->sp, h->file);
    return NULL;
}

START_TEST(writing_pass_waits_for_a_hold)
{
    char *tmp = t_tmpdir();
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_spill *sp = NULL;
    ck_assert_int_eq(fs_spill_new(&ctx, tmp, 6, 16, 2, &sp), FS_OK);
    uint8_t ref[96] = {0};
    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_FILL), FS_OK);
    for (uint64_t r = 0; r < 6; r += 2) {
        void *d;
        ck_assert_int_eq(fs_spill_wbuf(&ctx, sp, r, 2, &d), FS_OK);
        memset(d, 0, 32);
    }
    ck_assert_int_eq(fs_spill_end(&ctx, sp, FS_OK), FS_OK);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    holder h = {sp, 0, pfd[0], 0};
    h.file = fs_spill_hold(sp, NULL);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, release_later, &h), 0);
    read_all(&ctx, sp, ref, 6, 16, 2);           /* reading a held file does not wait */
    ck_assert_int_eq(__atomic_load_n(&h.released, __ATOMIC_SEQ_CST), 0);
    ck_assert_int_eq(write(pfd[1], "x", 1), 1);
    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_INPLACE), FS_OK);   /* waits for the unhold */
    ck_assert_int_eq(__atomic_load_n(&h.released, __ATOMIC_SEQ_CST), 1);
    ck_assert_int_eq(fs_spill_end(&ctx, sp, FS_OK), FS_OK);
    pthread_join(th, NULL);
    fs_spill_stats st;
    fs_spill_get_stats(sp, &st);
    ck_assert(st.hold_wait_s > 0.0);
    close(pfd[0]);
    close(pfd[1]);
    fs_spill_free(sp);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

START_TEST(failed_write_names_the_file)
{
    char *tmp = t_tmpdir();
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_crash cr;
    memset(&cr, 0, sizeof cr);
    snprintf(cr.fail_point, sizeof cr.fail_point, "spill-write");
    cr.fail_at = 2;
    cr.fail_errno = ENOSPC;
    ctx.crash = &cr;
    fs_spill *sp = NULL;
    ck_assert_int_eq(fs_spill_new(&ctx, tmp, 12, 8, 2, &sp), FS_OK);
    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_FILL), FS_OK);
    fs_status rc = FS_OK;
    for (uint64_t r = 0; rc == FS_OK && r < 12; r += 2) {
        void *d;
        rc = fs_spill_wbuf(&ctx, sp, r, 2, &d);
        if (rc == FS_OK) memset(d, 7, 16);
    }
    rc = fs_spill_end(&ctx, sp, rc);
    ck_assert_int_eq(rc, FS_ERR_NOSPACE);
    ck_assert_msg(strstr(ctx.errmsg, "no space left on device") && strstr(ctx.errmsg, "/spill-0.raw") &&
                  strstr(ctx.errmsg, "16 bytes needed at offset 16"), "%s", ctx.errmsg);
    /* the error stays: the next writing pass reports it too */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_spill_begin(&ctx, sp, FS_SPILL_INPLACE), FS_ERR_NOSPACE);
    ck_assert_msg(strstr(ctx.errmsg, "spill-0.raw"), "%s", ctx.errmsg);
    fs_spill_free(sp);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* ---- the pipeline spilled ------------------------------------------------------ */

static int same_file(const char *a, const char *b)
{
    char cmd[9000], err[256];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return t_run_cmd(cmd, err, sizeof err) == 0;
}

static void same_as_resident(const char *type, const char *extra, int64_t nseq, int64_t T, int moe)
{
    char *tmp = t_tmpdir(), src[4200], d0[4200], d1[4200], w0[4200], w1[4200];
    snprintf(src, sizeof src, "%s/src", tmp);
    snprintf(d0, sizeof d0, "%s/resident", tmp);
    snprintf(d1, sizeof d1, "%s/spilled", tmp);
    snprintf(w0, sizeof w0, "%s/w0", tmp);
    snprintf(w1, sizeof w1, "%s/w1", tmp);
    int g = t_gen_tiny(src, "--type %s --layers 3 %s", type, extra);
    if (g < 0) { printf("check_spill: FS_GEN_TINY unset, skipped\n"); t_rmdir(tmp); free(tmp); return; }
    ck_assert_int_eq(g, 0);
    ck_assert_int_eq(mkdir(w0, 0755), 0);
    ck_assert_int_eq(mkdir(w1, 0755), 0);
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(nseq * T));
    t_rng rg = {17};
    for (int64_t i = 0; i < nseq * T; i++) ids[i] = t_next(&rg) % 90;
    t_rec a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    fs_moe_report ra = {0}, rb = {0};
    t_run_pipeline_with(src, d0, FS_FMT_FORGE, nseq, T, ids, &a, w0, 0, 2 * T, 0, FS_EXPERT_ALL_TOKENS, 1,
                        moe ? &ra : NULL);
    t_run_pipeline_with(src, d1, FS_FMT_FORGE, nseq, T, ids, &b, w1, 1, 2 * T, 0, FS_EXPERT_ALL_TOKENS, 1,
                        moe ? &rb : NULL);
    ck_assert_int_gt(a.n, 0);
    ck_assert_int_eq(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        ck_assert_str_eq(a.name[i], b.name[i]);
        ck_assert_msg(memcmp(a.H[i], b.H[i], sizeof(float) * (size_t)(a.in[i] * a.in[i])) == 0,
                      "%s %s: the spilled Hessian differs", type, a.name[i]);
    }
    char f0[4400], f1[4400];
    snprintf(f0, sizeof f0, "%s/model.safetensors", d0);
    snprintf(f1, sizeof f1, "%s/model.safetensors", d1);
    ck_assert_msg(same_file(f0, f1), "%s: spilled output differs", type);
    /* the same boundaries were written for resume, and no spill file is left */
    snprintf(f0, sizeof f0, "%s/act-0003.fsa", w0);
    snprintf(f1, sizeof f1, "%s/act-0003.fsa", w1);
    ck_assert_msg(same_file(f0, f1), "%s: spilled boundary differs", type);
    snprintf(f1, sizeof f1, "%s/spill-0.raw", w1);
    ck_assert_int_ne(access(f1, F_OK), 0);
    printf("check_spill: %s: %d Hessians and the output identical spilled (%lld windows of %lld)\n", type, a.n,
           (long long)nseq, (long long)T);
    t_rec_free(&a);
    t_rec_free(&b);
    fs_moe_report_free(&ra);
    fs_moe_report_free(&rb);
    free(ids);
    t_rmdir(tmp);
    free(tmp);
}

/* batches of 2 windows over 5: three batches, the last one a window short */
START_TEST(pipeline_llama_same_as_resident) { same_as_resident("llama", "--dtype f32", 5, 24, 0); }
END_TEST
START_TEST(pipeline_moe_same_as_resident) { same_as_resident("qwen3_moe", "", 5, 16, 1); }
END_TEST
START_TEST(pipeline_deepseek_same_as_resident) { same_as_resident("deepseek_v3", "", 3, 16, 1); }
END_TEST

/* ---- quantize: the budget decides ---------------------------------------------- */

static char err[16384];

#define run(...) t_run_fmt(err, sizeof err, __VA_ARGS__)

START_TEST(quantize_spills_under_a_small_budget)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !getenv("FS_GEN_TINY")) { printf("check_spill: FS_BIN unset, skipped\n"); return; }
    char *tmp = t_tmpdir(), model[4200], calib[4200], flags[9000];
    snprintf(model, sizeof model, "%s/model", tmp);
    ck_assert_int_eq(t_gen_tiny(model, "--type llama --layers 2"), 0);
    snprintf(calib, sizeof calib, "%s/calib.u32", tmp);
    FILE *f = fopen(calib, "wb");
    t_rng g = {9};
    for (int i = 0; i < 1000; i++) {
        uint32_t id = t_next(&g) % 96;
        fwrite(&id, 4, 1, f);
    }
    fclose(f);
    snprintf(flags, sizeof flags, "--model '%s' --calib '%s' --samples 24 --seq-len 32", model, calib);
    /* the least the plan accepts: it holds four windows, not the 24-window
     * boundary, and its batch is one window */
    ck_assert_msg(run("'%s' plan --model '%s' --samples 24 --seq-len 32 --json > '%s/plan.json'", bin, model, tmp) == 0,
                  "%s", err);
    char pj[4300];
    snprintf(pj, sizeof pj, "%s/plan.json", tmp);
    json_t *j = json_load_file(pj, 0, NULL);
    ck_assert_ptr_nonnull(j);
    json_t *tot = json_object_get(j, "total"), *l0 = json_array_get(json_object_get(j, "layers"), 0);
    long long hmin = (long long)json_integer_value(json_object_get(tot, "host_min"));
    long long act = (long long)json_integer_value(json_object_get(l0, "act_bytes"));
    json_decref(j);
    ck_assert_int_gt(hmin, 0);
    ck_assert_int_eq(act, 24LL * 32 * 64 * 2);

    /* the reference: resident, in the batches the small budget will use (Hessians
     * sum batch by batch, so the bytes depend on the batch, never on the spill) */
    ck_assert_msg(run("'%s' quantize %s --out '%s/ref' --batch-tokens 32", bin, flags, tmp) == 0, "%s", err);
    ck_assert_msg(!strstr(err, "spill"), "a large budget spilled: %s", err);
    ck_assert_msg(run("'%s' quantize %s --out '%s/small' --host-mem %lld", bin, flags, tmp, hmin) == 0, "%s", err);
    ck_assert_msg(strstr(err, "do not fit the host budget") && strstr(err, "spill to the work folder") &&
                  strstr(err, "spilled activations: read"), "%s", err);
    ck_assert_msg(run("cmp '%s/ref/model.safetensors' '%s/small/model.safetensors'", tmp, tmp) == 0,
                  "spilled output differs: %s", err);
    ck_assert_int_eq(run("'%s' quantize %s --out '%s/never' --host-mem %lld --spill never", bin, flags, tmp, hmin), 2);
    ck_assert_msg(strstr(err, "--spill never") && strstr(err, "--host-mem"), "%s", err);
    ck_assert_int_ne(run("test -e '%s/never'", tmp), 0);       /* refused before anything was written */
    ck_assert_int_eq(run("'%s' quantize %s --out '%s/bad' --spill sometimes", bin, flags, tmp), 2);
    ck_assert_msg(strstr(err, "--spill 'sometimes'"), "%s", err);
    /* always: spilled under any budget, same bytes */
    ck_assert_msg(run("'%s' quantize %s --out '%s/always' --spill always --act-dtype bf16 --batch-tokens 32 --profile "
                      "'%s/trace.json'", bin, flags, tmp, tmp) == 0, "%s", err);
    ck_assert_msg(strstr(err, "spilled activations: read"), "%s", err);
    /* the profile: one spill span per batch and pass, every track still in order and disjoint */
    char tp[4300];
    snprintf(tp, sizeof tp, "%s/trace.json", tmp);
    json_t *root = json_load_file(tp, 0, NULL), *ev = json_object_get(root, "traceEvents");
    ck_assert_ptr_nonnull(root);
    double last_end[64];
    for (int k = 0; k < 64; k++) last_end[k] = -1;
    int spill_spans = 0;
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *ph = json_string_value(json_object_get(e, "ph")), *cat = json_string_value(json_object_get(e, "cat"));
        int tid = (int)json_integer_value(json_object_get(e, "tid"));
        if (!ph || strcmp(ph, "X") || tid < 0 || tid >= 64) continue;
        double ts = json_number_value(json_object_get(e, "ts")), dur = json_number_value(json_object_get(e, "dur"));
        ck_assert_msg(ts >= last_end[tid] - 1e-6, "track %d (%s): spans overlap", tid, cat ? cat : "?");
        last_end[tid] = ts + dur;
        spill_spans += cat && !strcmp(cat, "spill");
    }
    json_decref(root);
    ck_assert_int_ge(spill_spans, 2 * 5 * 24);   /* 2 layers x 5 passes x 24 one-window batches */
    ck_assert_msg(run("cmp '%s/ref/model.safetensors' '%s/always/model.safetensors'", tmp, tmp) == 0, "%s", err);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

Suite *fs_suite_spill(void)
{
    Suite *s = suite_create("spill");
    TCase *tc = tcase_create("spill");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, passes_match_a_model_in_memory);
    tcase_add_test(tc, out_of_turn_is_refused);
    tcase_add_test(tc, writing_pass_waits_for_a_hold);
    tcase_add_test(tc, failed_write_names_the_file);
    tcase_add_test(tc, pipeline_llama_same_as_resident);
    tcase_add_test(tc, pipeline_moe_same_as_resident);
    tcase_add_test(tc, pipeline_deepseek_same_as_resident);
    tcase_add_test(tc, quantize_spills_under_a_small_budget);
    suite_add_tcase(s, tc);
    return s;
}
