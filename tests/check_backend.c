/* check_backend.c: the contract of backend.h beyond the ops' arithmetic:
 * memory against a budget, the usage errors every op returns at once, the
 * order of three queues through events on cpu-async (with a queue held back
 * by the test hook so the outcome is deterministic: the chain with waits
 * gives the right bytes, a missing wait or a host slot refilled too early
 * gives the wrong ones, a safe refill after its event gives the right ones),
 * sticky execution errors on both CPU backends, freeing with work queued,
 * cpu and cpu-async giving the same bytes, and `--backend cpu-async` on the
 * command line. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tests/util.h"
#include "src/backend/backend-impl.h"

#define UP FS_QUEUE_UPLOAD
#define CO FS_QUEUE_COMPUTE
#define DN FS_QUEUE_DOWNLOAD

static fs_backend *open_be(fs_ctx *ctx, fs_backend_kind k, uint64_t budget)
{
    fs_ctx_init(ctx);
    fs_backend_opts o = {budget, 0};
    fs_backend *be = NULL;
    ck_assert_int_eq(fs_backend_open(ctx, k, &o, &be), FS_OK);
    return be;
}

#define OK(ctx, expr) ck_assert_msg((expr) == FS_OK, "%s: %s", #expr, (ctx)->errmsg)

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* ---- memory ---------------------------------------------------------------------------- */

START_TEST(budget_refusal_names_what)
{
    const fs_backend_kind kinds[2] = {FS_BE_CPU, FS_BE_CPU_ASYNC};
    for (int k = 0; k < 2; k++) {
        fs_ctx ctx;
        fs_backend *be = open_be(&ctx, kinds[k], 1000);
        fs_buf *a = NULL, *b = NULL, *z = NULL;
        OK(&ctx, fs_be_alloc(&ctx, be, 600, "weights of q_proj", &a));
        ck_assert_int_eq(fs_be_mem_used(be), 600);
        ck_assert_int_eq(fs_be_alloc(&ctx, be, 500, "hessian of model.layers.3", &b), FS_ERR_NOMEM);
        ck_assert_ptr_null(b);
        ck_assert_msg(has(ctx.errmsg, "hessian of model.layers.3") && has(ctx.errmsg, "500 bytes") &&
                      has(ctx.errmsg, "600 bytes in use") && has(ctx.errmsg, "budget of 1000") &&
                      has(ctx.errmsg, fs_backend_name(be)), "%s", ctx.errmsg);
        fs_ctx_clear(&ctx);
        ck_assert_int_eq(fs_be_mem_used(be), 600);      /* the refusal took nothing */
        OK(&ctx, fs_be_alloc(&ctx, be, 400, "exactly the rest", &b));
        OK(&ctx, fs_be_alloc(&ctx, be, 0, "empty", &z));
        ck_assert_int_eq(fs_be_mem_used(be), 1000);
        fs_be_free(be, a);
        fs_be_free(be, NULL);
        ck_assert_int_eq(fs_be_mem_used(be), 400);
        ck_assert_int_eq(fs_be_mem_peak(be), 1000);
        ck_assert_int_eq(fs_be_mem_budget(be), 1000);
        void *h = NULL;
        OK(&ctx, fs_be_host_alloc(&ctx, be, 5000, &h));
        ck_assert_int_eq((uintptr_t)h % 4096, 0);      /* O_DIRECT-ready staging */
        memset(h, 1, 8192);                              /* rounded up to whole pages */
        fs_be_host_free(be, h);
        fs_be_host_free(be, NULL);
        fs_be_free(be, b);
        fs_be_free(be, z);
        ck_assert_int_eq(fs_be_mem_used(be), 0);
        fs_backend_free(be);
    }
}
END_TEST

/* ---- usage errors ----------------------------------------------------------------------- */

/* rc must be want, with every needle in the message. */
static void expect(fs_ctx *ctx, fs_status rc, fs_status want, const char *n1, const char *n2, const char *n3)
{
    ck_assert_msg(rc == want, "got %s (%s), want %s", fs_status_str(rc), ctx->errmsg, fs_status_str(want));
    const char *n[3] = {n1, n2, n3};
    for (int k = 0; k < 3; k++) ck_assert_msg(!n[k] || has(ctx->errmsg, n[k]), "'%s' lacks '%s'", ctx->errmsg, n[k]);
    fs_ctx_clear(ctx);
}

START_TEST(usage_errors_return_at_once)
{
    fs_ctx ctx;
    fs_backend *be = open_be(&ctx, FS_BE_CPU_ASYNC, 0), *other = open_be(&ctx, FS_BE_CPU, 0);
    fs_buf *a, *o;
    OK(&ctx, fs_be_alloc(&ctx, be, 400, "act", &a));
    OK(&ctx, fs_be_alloc(&ctx, other, 400, "theirs", &o));
    fs_tensor x = fs_tensor_2d(a, 0, FS_DT_F32, 10, 10), wide = fs_tensor_2d(a, 0, FS_DT_F32, 10, 11);
    /* outside the buffer: 10 x 11 floats in 400 bytes */
    expect(&ctx, fs_op_add(&ctx, be, CO, wide, wide), FS_ERR_USAGE, "fs_op_add", "operand y",
           "does not lie inside buffer 'act'");
    /* a dtype the op does not take */
    expect(&ctx, fs_op_add(&ctx, be, CO, fs_tensor_2d(a, 0, FS_DT_BF16, 10, 10), x), FS_ERR_USAGE, "fs_op_add",
           "operand y is BF16", "F32");
    /* a shape mismatch */
    expect(&ctx, fs_op_add(&ctx, be, CO, x, fs_tensor_2d(a, 0, FS_DT_F32, 10, 9)), FS_ERR_USAGE, "operand x is [10, 9]",
           "[10, 10]", NULL);
    /* a buffer of another backend */
    expect(&ctx, fs_op_add(&ctx, be, CO, x, fs_tensor_2d(o, 0, FS_DT_F32, 10, 10)), FS_ERR_USAGE, "operand x",
           "buffer 'theirs' belongs to another backend", NULL);
    /* ld < cols, a misaligned offset, a missing operand, a bad queue, a bad reshape */
    fs_tensor shortld = fs_tensor_ld(a, 0, FS_DT_F32, 2, 10, 5);
    expect(&ctx, fs_op_add(&ctx, be, CO, shortld, shortld), FS_ERR_USAGE, "ld must be >= cols", NULL, NULL);
    expect(&ctx, fs_op_fill(&ctx, be, CO, fs_tensor_2d(a, 2, FS_DT_F32, 1, 4), 0), FS_ERR_USAGE, "byte offset 2",
           "multiple of 4", NULL);
    expect(&ctx, fs_op_add(&ctx, be, CO, x, fs_tensor_none()), FS_ERR_USAGE, "operand x is missing", NULL, NULL);
    expect(&ctx, fs_op_fill(&ctx, be, (fs_queue)3, x, 0), FS_ERR_USAGE, "queue 3", NULL, NULL);
    expect(&ctx, fs_op_fill(&ctx, be, CO, fs_tensor_reshape(shortld, 4, 5), 0), FS_ERR_USAGE, "invalid view", NULL, NULL);
    /* op-specific rules */
    fs_rope_args ro = {x, fs_tensor_2d(a, 0, FS_DT_F32, 1, 2), 3, 4, 0, 4, 5, 0, 1.0f};
    expect(&ctx, fs_op_rope(&ctx, be, CO, &ro), FS_ERR_USAGE, "fs_op_rope", "operand x has 10 columns", NULL);
    fs_cholinv_args ch = {fs_tensor_ld(a, 0, FS_DT_F32, 4, 4, 5), fs_tensor_2d(a, 0, FS_DT_I32, 1, 1), 1};
    expect(&ctx, fs_op_cholinv(&ctx, be, CO, &ch), FS_ERR_USAGE, "operand A must be contiguous", NULL, NULL);
    /* uploads and downloads: ranges and ownership */
    expect(&ctx, fs_be_upload(&ctx, be, UP, a, 300, &ctx, 101), FS_ERR_USAGE, "upload", "outside buffer 'act'", NULL);
    expect(&ctx, fs_be_download(&ctx, be, DN, &ctx, o, 0, 4), FS_ERR_USAGE, "download", "another backend", NULL);
    /* none of these was queued, and none poisoned its queue */
    OK(&ctx, fs_op_fill(&ctx, be, CO, x, 1.0));
    OK(&ctx, fs_be_sync_all(&ctx, be));
    /* an op the backend lacks (a CUDA table's NULL slot, here made by hand) */
    be->iface.gemm = NULL;
    fs_gemm_args g = {x, x, x, 0, 1.0f, 0.0f};
    expect(&ctx, fs_op_gemm(&ctx, be, CO, &g), FS_ERR_NODEV, "op gemm is not implemented on cpu-async", NULL, NULL);
    fs_be_free(be, a);
    fs_be_free(other, o);
    fs_backend_free(be);
    fs_backend_free(other);
}
END_TEST

/* ---- three queues on cpu-async ------------------------------------------------------------------ */

#define N 4096                 /* floats per transfer */

typedef struct chain {
    fs_ctx ctx;
    fs_backend *be;
    fs_buf *in, *out;
    float *host_in, *host_out;   /* staging */
    fs_event *up, *co, *dn;
} chain;

static void chain_open(chain *c)
{
    c->be = open_be(&c->ctx, FS_BE_CPU_ASYNC, 0);
    OK(&c->ctx, fs_be_alloc(&c->ctx, c->be, N * 4, "in", &c->in));
    OK(&c->ctx, fs_be_alloc(&c->ctx, c->be, N * 4, "out", &c->out));
    OK(&c->ctx, fs_be_host_alloc(&c->ctx, c->be, N * 4, (void **)&c->host_in));
    OK(&c->ctx, fs_be_host_alloc(&c->ctx, c->be, N * 4, (void **)&c->host_out));
    OK(&c->ctx, fs_be_event_new(&c->ctx, c->be, &c->up));
    OK(&c->ctx, fs_be_event_new(&c->ctx, c->be, &c->co));
    OK(&c->ctx, fs_be_event_new(&c->ctx, c->be, &c->dn));
    for (int i = 0; i < N; i++) { c->host_in[i] = (float)i; c->host_out[i] = -1.0f; }
}

static void chain_close(chain *c)
{
    fs_be_event_free(c->be, c->up);
    fs_be_event_free(c->be, c->co);
    fs_be_event_free(c->be, c->dn);
    fs_be_free(c->be, c->in);
    fs_be_free(c->be, c->out);
    fs_be_host_free(c->be, c->host_in);
    fs_be_host_free(c->be, c->host_out);
    fs_backend_free(c->be);
}

static fs_tensor vecf(fs_buf *b) { return fs_tensor_2d(b, 0, FS_DT_F32, 1, N); }

START_TEST(chain_with_waits_is_right)
{
    chain c;
    chain_open(&c);
    /* the upload queue is held back: without the waits the op would read
     * poison and the download an unwritten buffer */
    fs_be_hold(c.be, UP, 1);
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, c.host_in, N * 4));
    OK(&c.ctx, fs_be_record(&c.ctx, c.be, c.up, UP));
    OK(&c.ctx, fs_be_wait(&c.ctx, c.be, CO, c.up));
    OK(&c.ctx, fs_op_copy(&c.ctx, c.be, CO, vecf(c.out), vecf(c.in)));
    OK(&c.ctx, fs_op_add(&c.ctx, c.be, CO, vecf(c.out), vecf(c.in)));    /* out = 2 * in */
    OK(&c.ctx, fs_be_record(&c.ctx, c.be, c.co, CO));
    OK(&c.ctx, fs_be_wait(&c.ctx, c.be, DN, c.co));
    OK(&c.ctx, fs_be_download(&c.ctx, c.be, DN, c.host_out, c.out, 0, N * 4));
    OK(&c.ctx, fs_be_record(&c.ctx, c.be, c.dn, DN));
    usleep(20000);
    ck_assert(!fs_be_event_done(c.be, c.up));
    ck_assert(!fs_be_event_done(c.be, c.dn));
    ck_assert_float_eq(c.host_out[7], -1.0f);           /* nothing reached the host yet */
    fs_be_hold(c.be, UP, 0);
    OK(&c.ctx, fs_be_event_sync(&c.ctx, c.be, c.dn));
    for (int i = 0; i < N; i++) ck_assert_float_eq(c.host_out[i], 2.0f * i);
    chain_close(&c);
}
END_TEST

START_TEST(missing_wait_reads_poison)
{
    chain c;
    chain_open(&c);
    fs_be_hold(c.be, UP, 1);
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, c.host_in, N * 4));
    /* no fs_be_wait: the compute queue runs before the upload */
    OK(&c.ctx, fs_op_copy(&c.ctx, c.be, CO, vecf(c.out), vecf(c.in)));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, CO));
    fs_be_hold(c.be, UP, 0);
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, UP));
    OK(&c.ctx, fs_be_download(&c.ctx, c.be, DN, c.host_out, c.out, 0, N * 4));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, DN));
    ck_assert_msg(isnan(c.host_out[1]), "the copy ran after the upload: %g", c.host_out[1]);   /* 0xFF poison */
    chain_close(&c);
}
END_TEST

START_TEST(host_slot_reuse)
{
    chain c;
    chain_open(&c);
    /* safe: the slot is refilled only after the event of its upload */
    fs_be_hold(c.be, UP, 1);
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, c.host_in, N * 4));
    OK(&c.ctx, fs_be_record(&c.ctx, c.be, c.up, UP));
    ck_assert(!fs_be_event_done(c.be, c.up));            /* the slot is still the queue's */
    fs_be_hold(c.be, UP, 0);
    OK(&c.ctx, fs_be_event_sync(&c.ctx, c.be, c.up));
    ck_assert(fs_be_event_done(c.be, c.up));
    for (int i = 0; i < N; i++) c.host_in[i] = 1000.0f + i;
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.out, 0, c.host_in, N * 4));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, UP));
    float *a = malloc(N * 4), *b = malloc(N * 4);
    OK(&c.ctx, fs_be_download(&c.ctx, c.be, DN, a, c.in, 0, N * 4));
    OK(&c.ctx, fs_be_download(&c.ctx, c.be, DN, b, c.out, 0, N * 4));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, DN));
    for (int i = 0; i < N; i++) {
        ck_assert_float_eq(a[i], (float)i);
        ck_assert_float_eq(b[i], 1000.0f + i);
    }
    /* too early: refilled before the upload ran, the buffer gets the new bytes */
    for (int i = 0; i < N; i++) c.host_in[i] = (float)i;
    fs_be_hold(c.be, UP, 1);
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, c.host_in, N * 4));
    for (int i = 0; i < N; i++) c.host_in[i] = -5.0f;
    fs_be_hold(c.be, UP, 0);
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, UP));
    OK(&c.ctx, fs_be_download(&c.ctx, c.be, DN, a, c.in, 0, N * 4));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, DN));
    ck_assert_float_eq(a[3], -5.0f);
    free(a);
    free(b);
    chain_close(&c);
}
END_TEST

START_TEST(download_and_buffer_reuse)
{
    chain c;
    chain_open(&c);
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, c.host_in, N * 4));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, UP));
    /* a download writes the host only when its queue reaches it */
    fs_be_hold(c.be, DN, 1);
    OK(&c.ctx, fs_be_download(&c.ctx, c.be, DN, c.host_out, c.in, 0, N * 4));
    OK(&c.ctx, fs_be_record(&c.ctx, c.be, c.dn, DN));
    usleep(10000);
    ck_assert_float_eq(c.host_out[5], -1.0f);
    /* reusing the buffer before the download ran: the download sees the new bytes */
    float *other = malloc(N * 4);
    for (int i = 0; i < N; i++) other[i] = 7.0f;
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, other, N * 4));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, UP));
    fs_be_hold(c.be, DN, 0);
    OK(&c.ctx, fs_be_event_sync(&c.ctx, c.be, c.dn));
    ck_assert_float_eq(c.host_out[5], 7.0f);             /* wrong bytes: the contract was broken */
    /* reuse after a wait for the download's event: right bytes */
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, c.host_in, N * 4));
    OK(&c.ctx, fs_be_sync(&c.ctx, c.be, UP));
    fs_be_hold(c.be, DN, 1);
    OK(&c.ctx, fs_be_download(&c.ctx, c.be, DN, c.host_out, c.in, 0, N * 4));
    OK(&c.ctx, fs_be_record(&c.ctx, c.be, c.dn, DN));
    OK(&c.ctx, fs_be_wait(&c.ctx, c.be, UP, c.dn));
    OK(&c.ctx, fs_be_upload(&c.ctx, c.be, UP, c.in, 0, other, N * 4));
    OK(&c.ctx, fs_be_record(&c.ctx, c.be, c.up, UP));
    usleep(10000);
    ck_assert(!fs_be_event_done(c.be, c.up));            /* the upload waits for the download */
    fs_be_hold(c.be, DN, 0);
    OK(&c.ctx, fs_be_event_sync(&c.ctx, c.be, c.up));
    for (int i = 0; i < N; i++) ck_assert_float_eq(c.host_out[i], (float)i);
    free(other);
    chain_close(&c);
}
END_TEST

START_TEST(unrecorded_events_and_free_with_work_queued)
{
    fs_ctx ctx;
    fs_backend *be = open_be(&ctx, FS_BE_CPU_ASYNC, 0);
    fs_event *e;
    OK(&ctx, fs_be_event_new(&ctx, be, &e));
    ck_assert(fs_be_event_done(be, e));
    OK(&ctx, fs_be_wait(&ctx, be, CO, e));
    OK(&ctx, fs_be_event_sync(&ctx, be, e));
    /* buffers freed right after their work was queued: fs_be_free waits */
    t_rng r = {3};
    const int n = 200;
    float *A = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) A[i] = t_unif(&r);
    fs_buf *a, *c;
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * n * n, "A", &a));
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * n * n, "C", &c));
    OK(&ctx, fs_be_upload(&ctx, be, CO, a, 0, A, sizeof(float) * n * n));
    fs_gemm_args g = {fs_tensor_2d(a, 0, FS_DT_F32, n, n), fs_tensor_2d(a, 0, FS_DT_F32, n, n),
                      fs_tensor_2d(c, 0, FS_DT_F32, n, n), 1, 1.0f, 0.0f};
    for (int i = 0; i < 4; i++) OK(&ctx, fs_op_gemm(&ctx, be, CO, &g));
    fs_be_free(be, c);
    fs_be_free(be, a);
    free(A);                                   /* the upload surely ran (free waited) */
    fs_be_event_free(be, e);
    fs_be_event_free(be, NULL);
    fs_backend_free(be);
}
END_TEST

/* ---- sticky errors ---------------------------------------------------------------------------- */

START_TEST(sticky_errors)
{
    const fs_backend_kind kinds[2] = {FS_BE_CPU, FS_BE_CPU_ASYNC};
    for (int k = 0; k < 2; k++) {
        fs_ctx ctx;
        fs_backend *be = open_be(&ctx, kinds[k], 0);
        fs_buf *src, *dst, *rows;
        OK(&ctx, fs_be_alloc(&ctx, be, 4 * 40, "src", &src));
        OK(&ctx, fs_be_alloc(&ctx, be, 4 * 40, "dst", &dst));
        OK(&ctx, fs_be_alloc(&ctx, be, 4 * 4, "rows", &rows));
        int32_t bad[4] = {0, 1, 99, 2};                 /* row 99 of 10: found only when it runs */
        OK(&ctx, fs_be_upload(&ctx, be, CO, rows, 0, bad, sizeof bad));
        fs_tensor s = fs_tensor_2d(src, 0, FS_DT_F32, 10, 4), d = fs_tensor_2d(dst, 0, FS_DT_F32, 4, 4);
        fs_tensor r = fs_tensor_2d(rows, 0, FS_DT_I32, 1, 4);
        OK(&ctx, fs_op_fill(&ctx, be, CO, s, 0));
        fs_event *before, *after;
        OK(&ctx, fs_be_event_new(&ctx, be, &before));
        OK(&ctx, fs_be_event_new(&ctx, be, &after));
        OK(&ctx, fs_be_record(&ctx, be, before, CO));
        fs_be_hold(be, CO, 1);                           /* cpu-async: nothing runs until the waits are given */
        fs_status rc = fs_op_gather(&ctx, be, CO, d, s, r);
        if (kinds[k] == FS_BE_CPU) {                     /* inline: at once */
            expect(&ctx, rc, FS_ERR_FORMAT, "cpu, compute queue", "gather: row 99", NULL);
        } else {                                         /* queued: reported later */
            ck_assert_int_eq(rc, FS_OK);
            OK(&ctx, fs_be_record(&ctx, be, after, CO));
            OK(&ctx, fs_be_wait(&ctx, be, DN, after));     /* the download queue will fail with it */
            OK(&ctx, fs_be_wait(&ctx, be, UP, before));    /* the upload queue will not */
        }
        fs_be_hold(be, CO, 0);
        expect(&ctx, fs_be_sync(&ctx, be, CO), FS_ERR_FORMAT, "compute queue", "gather: row 99", NULL);
        /* every later call on the queue says it again */
        expect(&ctx, fs_op_fill(&ctx, be, CO, s, 0), FS_ERR_FORMAT, "gather: row 99", NULL, NULL);
        expect(&ctx, fs_be_upload(&ctx, be, CO, rows, 0, bad, 4), FS_ERR_FORMAT, "gather", NULL, NULL);
        expect(&ctx, fs_be_download(&ctx, be, CO, bad, rows, 0, 4), FS_ERR_FORMAT, "gather", NULL, NULL);
        expect(&ctx, fs_be_record(&ctx, be, after, CO), FS_ERR_FORMAT, "gather", NULL, NULL);
        expect(&ctx, fs_be_wait(&ctx, be, CO, before), FS_ERR_FORMAT, "gather", NULL, NULL);
        expect(&ctx, fs_be_sync(&ctx, be, CO), FS_ERR_FORMAT, "gather", NULL, NULL);
        expect(&ctx, fs_be_event_sync(&ctx, be, before), FS_ERR_FORMAT, "gather", NULL, NULL);
        if (kinds[k] == FS_BE_CPU_ASYNC)
            expect(&ctx, fs_be_sync(&ctx, be, DN), FS_ERR_FORMAT, "download queue", "waited for the compute queue",
                   "gather: row 99");
        else
            OK(&ctx, fs_be_sync(&ctx, be, DN));
        /* the upload queue waited only for the point before the failure */
        float host[40];
        OK(&ctx, fs_be_download(&ctx, be, UP, host, src, 0, sizeof host));
        OK(&ctx, fs_be_sync(&ctx, be, UP));
        for (int i = 0; i < 40; i++) ck_assert_float_eq(host[i], 0.0f);
        fs_be_event_free(be, before);
        fs_be_event_free(be, after);
        fs_be_free(be, src); fs_be_free(be, dst); fs_be_free(be, rows);
        fs_backend_free(be);
    }
}
END_TEST

/* ---- same bytes on both CPU backends -------------------------------------------------------------- */

/* An upload -> ops -> download pipeline of a few ops, overlapped on the
 * three queues with events; returns the downloaded bytes (malloc'ed). */
static float *pipeline_bytes(fs_backend_kind kind, size_t *nout)
{
    fs_ctx ctx;
    fs_backend *be = open_be(&ctx, kind, 1 << 22);
    t_rng r = {9};
    const int64_t nseq = 2, T = 16, n = nseq * T, H = 48, nh = 4, hd = 12;
    float *x = malloc(sizeof(float) * n * H), *w = malloc(sizeof(float) * 3 * H * H), *wn = malloc(sizeof(float) * H);
    float inv[6];
    for (int64_t i = 0; i < n * H; i++) x[i] = t_gauss(&r);
    for (int64_t i = 0; i < 3 * H * H; i++) w[i] = t_gauss(&r) * 0.1f;
    for (int64_t i = 0; i < H; i++) wn[i] = 1.0f + 0.1f * t_gauss(&r);
    for (int i = 0; i < 6; i++) inv[i] = (float)pow(10000.0, -i / 6.0);
    fs_buf *bx, *bw, *bn, *bi, *bq, *ba, *bo;
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * n * H, "x", &bx));
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * 3 * H * H, "w", &bw));
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * H, "norm", &bn));
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof inv, "inv_freq", &bi));
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * n * 3 * H, "qkv", &bq));
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * n * H, "att", &ba));
    OK(&ctx, fs_be_alloc(&ctx, be, sizeof(float) * (H * H + 1) * 2, "hessian, loss", &bo));
    fs_event *eu, *ec;
    OK(&ctx, fs_be_event_new(&ctx, be, &eu));
    OK(&ctx, fs_be_event_new(&ctx, be, &ec));
    OK(&ctx, fs_be_upload(&ctx, be, UP, bx, 0, x, sizeof(float) * n * H));
    OK(&ctx, fs_be_upload(&ctx, be, UP, bw, 0, w, sizeof(float) * 3 * H * H));
    OK(&ctx, fs_be_upload(&ctx, be, UP, bn, 0, wn, sizeof(float) * H));
    OK(&ctx, fs_be_upload(&ctx, be, UP, bi, 0, inv, sizeof inv));
    OK(&ctx, fs_be_record(&ctx, be, eu, UP));
    OK(&ctx, fs_be_wait(&ctx, be, CO, eu));
    fs_tensor X = fs_tensor_2d(bx, 0, FS_DT_F32, n, H), QKV = fs_tensor_2d(bq, 0, FS_DT_F32, n, 3 * H);
    fs_rmsnorm_args rn = {X, fs_tensor_2d(bn, 0, FS_DT_F32, 1, H), X, 1e-5f};
    OK(&ctx, fs_op_rmsnorm(&ctx, be, CO, &rn));
    fs_tensor Hs = fs_tensor_2d(bo, 0, FS_DT_F32, H, H);
    OK(&ctx, fs_op_fill(&ctx, be, CO, Hs, 0));
    OK(&ctx, fs_op_hess_acc(&ctx, be, CO, Hs, X));
    OK(&ctx, fs_op_hess_finish(&ctx, be, CO, Hs, 1));
    fs_gemm_args g = {X, fs_tensor_2d(bw, 0, FS_DT_F32, 3 * H, H), QKV, 1, 1.0f, 0.0f};
    OK(&ctx, fs_op_gemm(&ctx, be, CO, &g));
    for (int part = 0; part < 2; part++) {
        fs_rope_args ro = {fs_tensor_cols(QKV, part * H, H), fs_tensor_2d(bi, 0, FS_DT_F32, 1, 6), nh, hd, 0, hd, T, 0, 1.0f};
        OK(&ctx, fs_op_rope(&ctx, be, CO, &ro));
    }
    fs_attn_args at = {fs_tensor_cols(QKV, 0, H), fs_tensor_cols(QKV, H, H), fs_tensor_cols(QKV, 2 * H, H),
                       fs_tensor_2d(ba, 0, FS_DT_F32, n, H), nseq, T, nh, nh, hd, hd, hd, hd, hd, hd, 0.29f, 5};
    OK(&ctx, fs_op_attention(&ctx, be, CO, &at));
    fs_loss_args lo = {fs_tensor_2d(bw, 0, FS_DT_F32, H, H), fs_tensor_none(), Hs,
                       fs_tensor_2d(bo, sizeof(float) * H * H * 2, FS_DT_F64, 1, 1), FS_LOSS_F32};
    OK(&ctx, fs_op_loss(&ctx, be, CO, &lo));
    OK(&ctx, fs_be_record(&ctx, be, ec, CO));
    OK(&ctx, fs_be_wait(&ctx, be, DN, ec));
    *nout = (size_t)(n * H + H * H + 2);
    float *out = malloc(sizeof(float) * *nout);
    OK(&ctx, fs_be_download(&ctx, be, DN, out, ba, 0, sizeof(float) * n * H));
    OK(&ctx, fs_be_download(&ctx, be, DN, out + n * H, bo, 0, sizeof(float) * H * H));
    OK(&ctx, fs_be_download(&ctx, be, DN, out + n * H + H * H, bo, sizeof(float) * H * H * 2, 8));
    OK(&ctx, fs_be_sync_all(&ctx, be));
    ck_assert(fs_be_mem_peak(be) <= (1 << 22));
    fs_be_event_free(be, eu); fs_be_event_free(be, ec);
    fs_be_free(be, bx); fs_be_free(be, bw); fs_be_free(be, bn); fs_be_free(be, bi); fs_be_free(be, bq);
    fs_be_free(be, ba); fs_be_free(be, bo);
    fs_backend_free(be);
    free(x); free(w); free(wn);
    return out;
}

START_TEST(cpu_and_async_same_bytes)
{
    size_t n1, n2;
    float *a = pipeline_bytes(FS_BE_CPU, &n1), *b = pipeline_bytes(FS_BE_CPU_ASYNC, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert_mem_eq(a, b, n1 * sizeof(float));
    for (size_t i = 0; i < n1; i++) ck_assert(isfinite(a[i]));
    free(a);
    free(b);
}
END_TEST

/* ---- the command line -------------------------------------------------------------------------------- */

START_TEST(cli_backend_cpu_async)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !*bin) { printf("check_backend: FS_BIN unset, CLI test skipped\n"); return; }
    char *tmp = t_tmpdir(), err[4096], in[4200];
    snprintf(in, sizeof in, "%s/in.safetensors", tmp);
    /* a 37 x 53 weight with a 53 x 53 Hessian, written by hand */
    const int R = 37, C = 53;
    t_rng r = {8};
    float *W = malloc(sizeof(float) * R * C), *Hm = malloc(sizeof(float) * C * C);
    for (int i = 0; i < R * C; i++) W[i] = t_gauss(&r);
    float *X = t_corr_inputs(&r, 120, C);
    double *Hd = malloc(sizeof(double) * C * C);
    t_xtx(X, 120, C, Hd);
    for (int i = 0; i < C * C; i++) Hm[i] = (float)Hd[i];
    char hdr[512];
    int hl = snprintf(hdr, sizeof hdr, "{\"weight\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[0,%d]},"
                      "\"hessian\":{\"dtype\":\"F32\",\"shape\":[%d,%d],\"data_offsets\":[%d,%d]}}", R, C, R * C * 4, C, C,
                      R * C * 4, R * C * 4 + C * C * 4);
    while (hl % 8) hdr[hl++] = ' ';
    FILE *f = fopen(in, "wb");
    uint64_t len = (uint64_t)hl;
    fwrite(&len, 8, 1, f);
    fwrite(hdr, 1, (size_t)hl, f);
    fwrite(W, 4, (size_t)(R * C), f);
    fwrite(Hm, 4, (size_t)(C * C), f);
    fclose(f);
    const char *names[2] = {"cpu", "cpu-async"};
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(t_run_fmt(err, sizeof err, "'%s' layer --quiet --in '%s' --out '%s/%s.safetensors' --backend %s "
                                   "--group-size 32 --act-order > /dev/null", bin, in, tmp, names[i], names[i]), 0);
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "cmp -s '%s/cpu.safetensors' '%s/cpu-async.safetensors'", tmp, tmp), 0);
    ck_assert_int_eq(t_run_fmt(err, sizeof err, "'%s' layer --in '%s' --out '%s/x.safetensors' --backend gpu", bin, in, tmp), 2);
    ck_assert_msg(has(err, "--backend 'gpu': must be auto, cpu, cpu-async or cuda"), "%s", err);
    free(W); free(Hm); free(X); free(Hd);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

Suite *fs_suite_backend(void)
{
    Suite *s = suite_create("backend");
    struct { const char *name; const TTest *fn; } cases[] = {
        {"budget", budget_refusal_names_what}, {"usage_errors", usage_errors_return_at_once},
        {"chain_with_waits", chain_with_waits_is_right}, {"missing_wait", missing_wait_reads_poison},
        {"host_slot_reuse", host_slot_reuse}, {"download_reuse", download_and_buffer_reuse},
        {"events_and_free", unrecorded_events_and_free_with_work_queued}, {"sticky_errors", sticky_errors},
        {"same_bytes", cpu_and_async_same_bytes}, {"cli", cli_backend_cpu_async},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}
