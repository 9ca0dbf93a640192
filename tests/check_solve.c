/* check_solve.c: the backend solver (src/quant/solve-be.h) against the host
 * solver fs_layer_quantize, whose arithmetic check_gptq.c checks against a
 * naive GPTQ: on the cpu and cpu-async backends the two must give the same
 * bytes (codes, grids, permutation, dequant) and the same losses, retries and
 * fallback, for every option the backend solver takes, and for the Hessians
 * that drive its host decisions (dead columns, damping retries, the RTN
 * fallback).  The whole-pipeline version (quantize on both solvers) is in
 * check_async.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/util.h"
#include "src/backend/backend.h"
#include "src/quant/solve-be.h"

enum { H_PLAIN = 0, H_DEAD, H_RETRY, H_FALLBACK };

/* W [rows, cols] and H = X^T X of correlated inputs, then shaped by kind:
 * dead columns (rows and columns 3 and 7 zeroed), a 2x2 minor that only
 * more damping makes positive definite (retries), or one no damping
 * of the policy does (the RTN fallback). */
static void problem(uint64_t seed, int rows, int cols, int kind, float **W, float **H)
{
    t_rng r = {seed};
    int n = 3 * cols;
    float *X = t_corr_inputs(&r, n, cols);
    double *Hd = malloc(sizeof(double) * cols * cols);
    t_xtx(X, n, cols, Hd);
    *H = malloc(sizeof(float) * cols * cols);
    for (int i = 0; i < cols * cols; i++) (*H)[i] = (float)Hd[i];
    *W = malloc(sizeof(float) * rows * cols);
    for (int i = 0; i < rows * cols; i++) (*W)[i] = t_gauss(&r) * 0.1f;
    float *h = *H;
    double m = 0;
    for (int i = 0; i < cols; i++) m += h[i * cols + i];
    m /= cols;
    const double a = h[0], b = h[cols + 1];
    if (kind == H_DEAD)
        for (int d = 3; d <= 7; d += 4)
            for (int i = 0; i < cols; i++) h[d * cols + i] = h[i * cols + d] = 0.0f;
    if (kind == H_RETRY) h[1] = h[cols] = (float)sqrt((a + 0.05 * m) * (b + 0.05 * m));
    if (kind == H_FALLBACK) h[1] = h[cols] = (float)(100.0 * (a + b + 20.0 * m));
    free(X); free(Hd);
}

typedef struct variant { const char *name; int act, sym, bits, static_g, grid, v1, rtn, lf32; int64_t g; } variant;

static const variant variants[] = {
    {"act-order asym g32", 1, 0, 4, 0, FS_GRID_ABSMAX, 0, 0, 1, 32},
    {"identity sym g-1", 0, 1, 4, 0, FS_GRID_ABSMAX, 0, 0, 1, -1},
    {"act-order static mse g32", 1, 0, 3, 1, FS_GRID_MSE, 0, 0, 1, 32},
    {"static sym g64 exact losses", 0, 1, 2, 1, FS_GRID_ABSMAX, 0, 0, 0, 64},
    {"gptq v1 act-order asym 8-bit", 1, 0, 8, 0, FS_GRID_MSE, 1, 0, 1, 32},
    {"rtn", 1, 0, 4, 0, FS_GRID_ABSMAX, 0, 1, 1, 32},
};

static fs_quant_opts opts_of(const variant *v)
{
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    q.act_order = v->act; q.sym = v->sym; q.bits = v->bits; q.static_groups = v->static_g; q.grid = v->grid;
    q.gptq_v1 = v->v1; q.rtn = v->rtn; q.loss_f32 = v->lf32; q.group_size = v->g; q.block = 16;
    return q;
}

/* One problem on backend kind k with options q: the backend solver's result
 * against the host solver's, byte for byte. */
static void same_as_host(fs_backend_kind k, const fs_quant_opts *q, int rows, int cols, int hk, const char *what)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_backend *host = NULL, *be = NULL;
    ck_assert_int_eq(fs_backend_open(&ctx, FS_BE_CPU, NULL, &host), FS_OK);
    ck_assert_int_eq(fs_backend_open(&ctx, k, NULL, &be), FS_OK);
    ctx.be = host;
    float *W, *H;
    problem(77 + (uint64_t)hk, rows, cols, hk, &W, &H);
    fs_layer_result a, b;
    ck_assert_msg(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, q, &a) == FS_OK, "%s", ctx.errmsg);
    double wn_host = 0;
    if (q->loss_f32) ck_assert_int_eq(fs_quad_loss_est(&ctx, W, NULL, H, rows, cols, &wn_host), FS_OK);
    else ck_assert_int_eq(fs_quad_loss_f32(&ctx, W, NULL, H, rows, cols, &wn_host), FS_OK);

    const uint64_t wb = (uint64_t)rows * cols * 4, hb = (uint64_t)cols * cols * 4;
    fs_buf *bw = NULL, *bh = NULL;
    ck_assert_int_eq(fs_be_alloc(&ctx, be, wb, "w", &bw), FS_OK);
    ck_assert_int_eq(fs_be_alloc(&ctx, be, hb, "h", &bh), FS_OK);
    ck_assert_int_eq(fs_be_upload(&ctx, be, FS_QUEUE_COMPUTE, bw, 0, W, wb), FS_OK);
    ck_assert_int_eq(fs_be_upload(&ctx, be, FS_QUEUE_COMPUTE, bh, 0, H, hb), FS_OK);
    fs_solve_ws ws = {0};
    double wn = -1;
    ck_assert_msg(fs_solve_be(&ctx, be, FS_QUEUE_COMPUTE, &ws, fs_tensor_2d(bw, 0, FS_DT_F32, rows, cols),
                              fs_tensor_2d(bh, 0, FS_DT_F32, cols, cols), q, &b, &wn) == FS_OK, "%s", ctx.errmsg);
    float *D = malloc(wb), *H2 = malloc(hb);
    ck_assert_int_eq(fs_be_download(&ctx, be, FS_QUEUE_COMPUTE, D, bw, 0, wb), FS_OK);
    ck_assert_int_eq(fs_be_download(&ctx, be, FS_QUEUE_COMPUTE, H2, bh, 0, hb), FS_OK);
    ck_assert_int_eq(fs_be_sync(&ctx, be, FS_QUEUE_COMPUTE), FS_OK);
    const char *bn = fs_backend_name(be);
    ck_assert_ptr_null(b.dequant);
    ck_assert_msg(memcmp(H, H2, hb) == 0, "%s on %s: the Hessian changed", what, bn);
    ck_assert_msg(memcmp(a.qweight, b.qweight, (size_t)rows * cols) == 0, "%s on %s: codes differ", what, bn);
    ck_assert_msg(memcmp(a.qmeta, b.qmeta, (size_t)rows * a.ngroups * 4) == 0, "%s on %s: qmeta differs", what, bn);
    ck_assert_msg(memcmp(a.dequant, D, wb) == 0, "%s on %s: dequant differs", what, bn);
    ck_assert_msg((a.perm == NULL) == (b.perm == NULL), "%s on %s: perm", what, bn);
    if (a.perm) ck_assert_msg(memcmp(a.perm, b.perm, (size_t)cols * 4) == 0, "%s on %s: perm differs", what, bn);
    ck_assert_msg(a.loss == b.loss && a.rtn_loss == b.rtn_loss, "%s on %s: losses %.17g %.17g vs %.17g %.17g", what,
                  bn, a.loss, a.rtn_loss, b.loss, b.rtn_loss);
    ck_assert_msg(wn == wn_host, "%s on %s: norm %.17g vs %.17g", what, bn, wn, wn_host);
    ck_assert_int_eq(a.retries, b.retries);
    ck_assert_int_eq(a.fallback_rtn, b.fallback_rtn);
    ck_assert_int_eq(a.dead_cols, b.dead_cols);
    ck_assert(a.damp_used == b.damp_used);
    if (!q->rtn && hk == H_DEAD) ck_assert_int_eq(b.dead_cols, 2);
    if (!q->rtn && hk == H_RETRY) ck_assert_msg(b.retries >= 1 && !b.fallback_rtn, "%s: %d retries", what, b.retries);
    if (!q->rtn && hk == H_FALLBACK) ck_assert_msg(b.fallback_rtn && b.retries == 3, "%s: no fallback", what);
    fs_layer_result_free(&a);
    fs_layer_result_free(&b);
    fs_solve_ws_release(be, &ws);
    fs_be_free(be, bw);
    fs_be_free(be, bh);
    free(W); free(H); free(D); free(H2);
    fs_backend_free(be);
    fs_backend_free(host);
}

static void all_variants(fs_backend_kind k)
{
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        fs_quant_opts q = opts_of(&variants[v]);
        same_as_host(k, &q, 37, 96, H_PLAIN, variants[v].name);
        same_as_host(k, &q, 20, 70, H_DEAD, variants[v].name);     /* ragged last group */
    }
}

START_TEST(cpu_same_as_host) { all_variants(FS_BE_CPU); }
END_TEST
START_TEST(async_same_as_host) { all_variants(FS_BE_CPU_ASYNC); }
END_TEST

START_TEST(retries_and_fallback)
{
    const fs_backend_kind kinds[2] = {FS_BE_CPU, FS_BE_CPU_ASYNC};
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 3; v++) {
            fs_quant_opts q = opts_of(&variants[v]);
            same_as_host(kinds[k], &q, 24, 64, H_RETRY, "retry");
            same_as_host(kinds[k], &q, 24, 64, H_FALLBACK, "fallback");
        }
}
END_TEST

/* A non-finite weight or Hessian: FS_ERR_NUMERIC naming it and the first
 * bad flat index, as the host solver's fs_check_finite; nothing returned. */
START_TEST(non_finite_refused)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_backend *be = NULL;
    ck_assert_int_eq(fs_backend_open(&ctx, FS_BE_CPU_ASYNC, NULL, &be), FS_OK);
    const int rows = 8, cols = 32;
    float *W, *H;
    problem(5, rows, cols, H_PLAIN, &W, &H);
    fs_buf *bw = NULL, *bh = NULL;
    ck_assert_int_eq(fs_be_alloc(&ctx, be, (uint64_t)rows * cols * 4, "w", &bw), FS_OK);
    ck_assert_int_eq(fs_be_alloc(&ctx, be, (uint64_t)cols * cols * 4, "h", &bh), FS_OK);
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    fs_solve_ws ws = {0};
    fs_layer_result r;
    for (int which = 0; which < 2; which++) {
        float *bad = which ? H : W;
        const int at = which ? 5 * cols + 9 : 3 * cols + 4;
        const float keep = bad[at];
        bad[at] = which ? INFINITY : NAN;
        ck_assert_int_eq(fs_be_upload(&ctx, be, FS_QUEUE_COMPUTE, bw, 0, W, (uint64_t)rows * cols * 4), FS_OK);
        ck_assert_int_eq(fs_be_upload(&ctx, be, FS_QUEUE_COMPUTE, bh, 0, H, (uint64_t)cols * cols * 4), FS_OK);
        fs_status rc = fs_solve_be(&ctx, be, FS_QUEUE_COMPUTE, &ws, fs_tensor_2d(bw, 0, FS_DT_F32, rows, cols),
                                   fs_tensor_2d(bh, 0, FS_DT_F32, cols, cols), &q, &r, NULL);
        ck_assert_int_eq(rc, FS_ERR_NUMERIC);
        char want[128];
        snprintf(want, sizeof want, "%s: non-finite value (%s) at flat index %d", which ? "hessian" : "weight",
                 which ? "Inf" : "NaN", at);
        ck_assert_msg(strstr(ctx.errmsg, want), "%s (wanted %s)", ctx.errmsg, want);
        ck_assert_ptr_null(r.qweight);
        fs_ctx_clear(&ctx);
        bad[at] = keep;
    }
    fs_solve_ws_release(be, &ws);
    fs_be_free(be, bw);
    fs_be_free(be, bh);
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

/* The options without ops stay on the host solver, by name. */
START_TEST(host_only_options)
{
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    const char *why = NULL;
    ck_assert(fs_solve_be_supports(&q, &why) && why == NULL);
    q.grid = FS_GRID_HMSE;
    ck_assert(!fs_solve_be_supports(&q, &why) && strstr(why, "--grid hmse"));
    fs_quant_opts_default(&q);
    q.refine_scales = 2;
    ck_assert(!fs_solve_be_supports(&q, &why) && strstr(why, "--refine-scales"));
    /* the figure the plan counts: two weight copies, two Hessians, two code planes at least */
    ck_assert_uint_ge(fs_solve_be_bytes(100, 64, 32), 2 * 100 * 64 * 4 + 2 * 64 * 64 * 4 + 2 * 100 * 64);
}
END_TEST

Suite *fs_suite_solve(void)
{
    Suite *s = suite_create("solve");
    TCase *tc = tcase_create("backend");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, cpu_same_as_host);
    tcase_add_test(tc, async_same_as_host);
    tcase_add_test(tc, retries_and_fallback);
    tcase_add_test(tc, non_finite_refused);
    tcase_add_test(tc, host_only_options);
    suite_add_tcase(s, tc);
    return s;
}
