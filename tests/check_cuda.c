/* check_cuda.c: the CUDA backend against the CPU backend on the same inputs:
 * grids (bytes), Hessian accumulation, the Cholesky factor of the inverse and
 * the GPTQ solve.  Without a CUDA device (or without CUDA in the build) the
 * suite prints one line saying so and every test passes without running.
 *
 * Invariants:
 *  1. Inputs come from a seeded local LCG: every run sees the same data.
 *  2. Each tolerance is a named constant below with the reason for its size.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/quant/quant.h"
#include "src/backend/backend.h"
#include "hessian/hessian.h"

/* f32 ssyrk of 300 rows: cuBLAS and OpenBLAS add the products in different
 * orders; each sum carries a few ulp (~1e-7 relative) of rounding, so 1e-5 of
 * max|H| leaves a wide margin while catching any wrong element. */
#define HESS_RTOL 1e-5
/* potrf, potri, potrf in f32 amplify the rounding of either library by about
 * the condition number of A (~1e2 here): 1e-3 of max|U| still catches a wrong
 * triangle, a transpose or a missing step (all O(1) errors). */
#define CHOL_RTOL 1e-3
/* The in-block pass is bit-identical; only the trailing sgemm sums in another
 * order, so a weight that sits within an ulp of a rounding boundary may flip
 * its code (and shift that row's later errors slightly): rare, not zero. */
#define GPTQ_CODE_MATCH 0.999
/* The same few flips change the loss by far less than 1e-4 of it; a wrong
 * update (sign, transpose, block cut) changes it by O(1). */
#define GPTQ_LOSS_RTOL 1e-4

/* ---- helpers -------------------------------------------------------------- */

typedef struct lcg {
    uint64_t s;
} lcg;

static float lcg_unit(lcg *g)                      /* uniform in [-1, 1) */
{
    g->s = g->s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g->s >> 40) / 8388608.0 - 1.0);   /* 24 bits */
}

static int no_device(void)
{
    return fs_backend_cuda_devices() == 0;
}

static void open_both(fs_ctx *ctx, fs_backend **cpu, fs_backend **gpu)
{
    fs_ctx_init(ctx);
    ctx->quiet = 1;
    fs_status rc = fs_backend_open(ctx, FS_BE_CPU, NULL, cpu);
    ck_assert_msg(rc == FS_OK, "cpu backend: %s", ctx->errmsg);
    rc = fs_backend_open(ctx, FS_BE_CUDA, NULL, gpu);
    ck_assert_msg(rc == FS_OK, "cuda backend: %s", ctx->errmsg);
    ck_assert_str_eq(fs_backend_name(*gpu), "cuda");
}

static void *xalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    ck_assert_ptr_nonnull(p);
    return p;
}

static void make_opts(fs_quant_opts *q, int bits, int sym, int64_t G, fs_grid_kind grid,
                      float norm)
{
    memset(q, 0, sizeof *q);
    q->bits = bits;
    q->sym = sym;
    q->group_size = G;
    q->grid = grid;
    q->shrink = 0.75f;
    q->grid_n = 24;
    q->norm = norm;
    q->block = 128;
    q->damp = 0.01;
}

static int64_t width_of(int64_t cols, int64_t G)
{
    return G < 0 || G >= cols ? cols : G;
}

/* A [n, n] = B^T B / m + ridge * I with B [m, n] random, in double. */
static void make_spd(lcg *g, float *A, int64_t n, int64_t m, double ridge)
{
    float *B = xalloc((size_t)(m * n), sizeof(float));
    for (int64_t i = 0; i < m * n; i++) B[i] = lcg_unit(g);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < m; k++) s += (double)B[k * n + i] * B[k * n + j];
            s /= (double)m;
            if (i == j) s += ridge;
            A[i * n + j] = A[j * n + i] = (float)s;
        }
    free(B);
}

static double max_abs(const float *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        m = d > m ? d : m;
    }
    return m;
}

/* ---- (a) grids: identical qmeta bytes -------------------------------------- */

/* Rows with every kind of range: random at several magnitudes, all zero, all
 * positive, all negative, one spike. */
static void fill_grid_rows(lcg *g, float *W, int64_t rows, int64_t cols)
{
    static const float mag[] = {1.0f, 1e-3f, 37.0f, 1e-6f, 0.2f};
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v = lcg_unit(g) * mag[r % 5];
            switch (r) {
            case 0: v = 0.0f; break;
            case 1: v = fabsf(v) + 0.01f; break;
            case 2: v = -fabsf(v) - 0.01f; break;
            case 3: v = c == cols / 2 ? 5.0f : 0.0f; break;
            default: break;
            }
            W[r * cols + c] = v;
        }
}

START_TEST(test_grid_parity)
{
    if (no_device()) return;
    fs_ctx ctx;
    fs_backend *cpu, *gpu;
    open_both(&ctx, &cpu, &gpu);
    static const int64_t shapes[] = {172, 600};          /* 600 > 8 * 32: uncached path */
    static const int bits[] = {2, 3, 4, 8};
    static const int64_t groups[] = {32, 128, -1};
    static const struct { fs_grid_kind kind; float norm; } grids[] = {
        {FS_GRID_ABSMAX, 2.0f}, {FS_GRID_MSE, 2.0f}, {FS_GRID_MSE, 2.4f}};
    const int64_t rows = 23;
    lcg g = {12345};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int64_t cols = shapes[si];
        float *W = xalloc((size_t)(rows * cols), sizeof(float));
        fill_grid_rows(&g, W, rows, cols);
        for (size_t bi = 0; bi < 4; bi++)
            for (int sym = 0; sym <= 1; sym++)
                for (size_t gi = 0; gi < 3; gi++)
                    for (size_t ki = 0; ki < 3; ki++) {
                        fs_quant_opts q;
                        fs_grid_params gp;
                        make_opts(&q, bits[bi], sym, groups[gi], grids[ki].kind, grids[ki].norm);
                        ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
                        const int64_t gw = width_of(cols, groups[gi]);
                        const int64_t ng = (cols + gw - 1) / gw;
                        const size_t nq = (size_t)(rows * ng * 4);
                        uint8_t *qa = xalloc(nq, 1), *qb = xalloc(nq, 1);
                        memset(qb, 0xa5, nq);
                        ck_assert_int_eq(fs_be_grid(&ctx, cpu, &gp, W, rows, cols, gw, qa), FS_OK);
                        fs_status rc = fs_be_grid(&ctx, gpu, &gp, W, rows, cols, gw, qb);
                        ck_assert_msg(rc == FS_OK, "cuda grid: %s", ctx.errmsg);
                        size_t bad = 0;
                        while (bad < nq && qa[bad] == qb[bad]) bad++;
                        ck_assert_msg(memcmp(qa, qb, nq) == 0,
                                      "qmeta differ: cols %lld bits %d sym %d G %lld grid %d "
                                      "norm %g: first at byte %zu (row %lld group %lld) "
                                      "cpu %02x gpu %02x",
                                      (long long)cols, bits[bi], sym, (long long)groups[gi],
                                      (int)grids[ki].kind, (double)grids[ki].norm, bad,
                                      (long long)(bad / 4 / (size_t)ng),
                                      (long long)(bad / 4 % (size_t)ng), qa[bad], qb[bad]);
                        free(qa);
                        free(qb);
                        fs_grid_params_free(&gp);
                    }
        free(W);
    }
    fs_backend_free(cpu);
    fs_backend_free(gpu);
}
END_TEST

/* ---- (b) Hessian accumulation ------------------------------------------------ */

START_TEST(test_hessian_parity)
{
    if (no_device()) return;
    fs_ctx ctx;
    fs_backend *cpu, *gpu;
    open_both(&ctx, &cpu, &gpu);
    const int64_t n = 300, in = 96, chunk = 64;
    lcg g = {777};
    float *X = xalloc((size_t)(n * in), sizeof(float));
    for (int64_t i = 0; i < n * in; i++) X[i] = lcg_unit(&g) * (1.0f + (float)(i % in) / 16.0f);
    float *Hc = xalloc((size_t)(in * in), sizeof(float));
    float *Hg = xalloc((size_t)(in * in), sizeof(float));
    void *sc = NULL, *sg = NULL;
    ck_assert_int_eq(fs_be_hess_new(&ctx, cpu, in, &sc), FS_OK);
    ck_assert_msg(fs_be_hess_new(&ctx, gpu, in, &sg) == FS_OK, "%s", ctx.errmsg);
    /* read out half way and at the end: a read-out must leave the sum valid */
    for (int pass = 0; pass < 2; pass++) {
        const int64_t r0 = pass ? n / 2 : 0, r1 = pass ? n : n / 2;
        for (int64_t r = r0; r < r1; r += chunk) {
            const int64_t k = r1 - r < chunk ? r1 - r : chunk;
            ck_assert_int_eq(fs_be_hess_add(&ctx, cpu, sc, X + r * in, k), FS_OK);
            ck_assert_msg(fs_be_hess_add(&ctx, gpu, sg, X + r * in, k) == FS_OK, "%s",
                          ctx.errmsg);
        }
        ck_assert_int_eq(fs_be_hess_get(&ctx, cpu, sc, Hc), FS_OK);
        ck_assert_msg(fs_be_hess_get(&ctx, gpu, sg, Hg) == FS_OK, "%s", ctx.errmsg);
        const double m = max_abs(Hc, (size_t)(in * in));
        const double d = max_diff(Hc, Hg, (size_t)(in * in));
        ck_assert_msg(d <= HESS_RTOL * m, "pass %d: max |Hcpu - Hgpu| = %g, max |H| = %g", pass,
                      d, m);
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < i; j++)
                ck_assert_msg(Hg[i * in + j] == Hg[j * in + i], "H not symmetric at %lld,%lld",
                              (long long)i, (long long)j);
    }
    fs_be_hess_free(cpu, sc);
    fs_be_hess_free(gpu, sg);
    free(X);
    free(Hc);
    free(Hg);
    fs_backend_free(cpu);
    fs_backend_free(gpu);
}
END_TEST

/* ---- (c) Cholesky factor of the inverse ----------------------------------------- */

START_TEST(test_chol_inv_parity)
{
    if (no_device()) return;
    fs_ctx ctx;
    fs_backend *cpu, *gpu;
    open_both(&ctx, &cpu, &gpu);
    const int64_t n = 96;
    lcg g = {4242};
    float *A = xalloc((size_t)(n * n), sizeof(float));
    float *Uc = xalloc((size_t)(n * n), sizeof(float));
    float *Ug = xalloc((size_t)(n * n), sizeof(float));
    make_spd(&g, A, n, 200, 0.05);
    memcpy(Uc, A, sizeof(float) * (size_t)(n * n));
    memcpy(Ug, A, sizeof(float) * (size_t)(n * n));
    ck_assert_int_eq(fs_be_chol_inv(&ctx, cpu, Uc, n), FS_OK);
    fs_status rc = fs_be_chol_inv(&ctx, gpu, Ug, n);
    ck_assert_msg(rc == FS_OK, "cuda chol_inv: %s", ctx.errmsg);
    const double m = max_abs(Uc, (size_t)(n * n));
    const double d = max_diff(Uc, Ug, (size_t)(n * n));
    ck_assert_msg(d <= CHOL_RTOL * m, "max |Ucpu - Ugpu| = %g, max |U| = %g", d, m);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
            ck_assert_msg(Ug[i * n + j] == 0.0f, "lower triangle not zero at %lld,%lld",
                          (long long)i, (long long)j);

    /* not positive definite: a negative pivot at row 10 (leading minor 11) */
    memset(A, 0, sizeof(float) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++) A[i * n + i] = i == 10 ? -1.0f : 1.0f;
    fs_ctx_clear(&ctx);
    rc = fs_be_chol_inv(&ctx, gpu, A, n);
    ck_assert_int_eq(rc, FS_ERR_NUMERIC);
    ck_assert_int_eq(ctx.err, FS_ERR_NUMERIC);
    ck_assert_msg(strstr(ctx.errmsg, "minor 11") != NULL, "message: %s", ctx.errmsg);

    free(A);
    free(Uc);
    free(Ug);
    fs_backend_free(cpu);
    fs_backend_free(gpu);
}
END_TEST

/* ---- (d) the GPTQ solve ------------------------------------------------------------ */

/* trace((W - D) H (W - D)^T) in double. */
static double quad_loss(const float *W, const float *D, const float *H, int64_t rows,
                        int64_t cols)
{
    double *e = xalloc((size_t)cols, sizeof(double));
    double loss = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) e[c] = (double)W[r * cols + c] - D[r * cols + c];
        for (int64_t i = 0; i < cols; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < cols; j++) s += (double)H[i * cols + j] * e[j];
            loss += e[i] * s;
        }
    }
    free(e);
    return loss;
}

typedef struct gptq_case {
    int64_t G;
    int block;
    int static_groups;
    fs_grid_kind grid;
} gptq_case;

START_TEST(test_gptq_parity)
{
    if (no_device()) return;
    fs_ctx ctx;
    fs_backend *cpu, *gpu;
    open_both(&ctx, &cpu, &gpu);
    const int64_t R = 64, C = 256;
    /* dynamic: groups longer than blocks, blocks longer than groups, a partial
     * last group (256 = 2 * 96 + 64); static: a shuffled column-to-group map */
    static const gptq_case cases[] = {
        {64, 32, 0, FS_GRID_ABSMAX}, {96, 128, 0, FS_GRID_MSE}, {128, 48, 0, FS_GRID_MSE},
        {64, 128, 1, FS_GRID_ABSMAX}, {96, 40, 1, FS_GRID_MSE}};
    lcg g = {99};
    float *H = xalloc((size_t)(C * C), sizeof(float));
    float *U = xalloc((size_t)(C * C), sizeof(float));
    float *W0 = xalloc((size_t)(R * C), sizeof(float));
    float *Wc = xalloc((size_t)(R * C), sizeof(float));
    float *Wg = xalloc((size_t)(R * C), sizeof(float));
    uint8_t *cc = xalloc((size_t)(R * C), 1), *cg = xalloc((size_t)(R * C), 1);
    int32_t *gcol = xalloc((size_t)C, sizeof(int32_t));
    int32_t *perm = xalloc((size_t)C, sizeof(int32_t));

    make_spd(&g, H, C, 512, 0.0);
    double mean = 0.0;
    for (int64_t i = 0; i < C; i++) mean += H[i * C + i];
    memcpy(U, H, sizeof(float) * (size_t)(C * C));
    for (int64_t i = 0; i < C; i++) U[i * C + i] += (float)(0.01 * mean / (double)C);
    ck_assert_int_eq(fs_be_chol_inv(&ctx, cpu, U, C), FS_OK);     /* same U for both */
    for (int64_t i = 0; i < R * C; i++) W0[i] = lcg_unit(&g) * 0.05f;
    for (int64_t i = 0; i < C; i++) perm[i] = (int32_t)i;
    for (int64_t i = C - 1; i > 0; i--) {                          /* Fisher-Yates */
        int64_t j = (int64_t)((lcg_unit(&g) + 1.0f) * 0.5f * (float)(i + 1));
        if (j > i) j = i;
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }

    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const gptq_case *k = &cases[ci];
        fs_quant_opts q;
        fs_grid_params gp;
        make_opts(&q, 4, 0, k->G, k->grid, 2.4f);
        q.block = k->block;
        ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
        const int64_t gw = width_of(C, k->G), ng = (C + gw - 1) / gw;
        const size_t nq = (size_t)(R * ng * 4);
        uint8_t *qc = xalloc(nq, 1), *qg = xalloc(nq, 1);
        if (k->static_groups) {
            fs_grid_matrix(&gp, W0, R, C, gw, qc);
            memcpy(qg, qc, nq);
            for (int64_t c = 0; c < C; c++) gcol[c] = (int32_t)(perm[c] / gw);
        }
        memcpy(Wc, W0, sizeof(float) * (size_t)(R * C));
        memcpy(Wg, W0, sizeof(float) * (size_t)(R * C));
        fs_gptq_job jc = {R, C, Wc, U, cc, qc, ng, gw, k->static_groups ? gcol : NULL, k->block,
                          &gp, NULL};
        fs_gptq_job jg = jc;
        jg.W = Wg;
        jg.codes = cg;
        jg.qmeta = qg;
        ck_assert_int_eq(fs_be_gptq(&ctx, cpu, &jc), FS_OK);
        fs_status rc = fs_be_gptq(&ctx, gpu, &jg);
        ck_assert_msg(rc == FS_OK, "cuda gptq: %s", ctx.errmsg);

        int64_t same = 0;
        for (int64_t i = 0; i < R * C; i++) same += cc[i] == cg[i];
        const double frac = (double)same / (double)(R * C);
        ck_assert_msg(frac >= GPTQ_CODE_MATCH, "case %zu: codes equal on %.5f of entries", ci,
                      frac);
        const double lc = quad_loss(W0, Wc, H, R, C), lg = quad_loss(W0, Wg, H, R, C);
        ck_assert_msg(fabs(lc - lg) <= GPTQ_LOSS_RTOL * lc, "case %zu: loss cpu %.9g gpu %.9g",
                      ci, lc, lg);
        free(qc);
        free(qg);
        fs_grid_params_free(&gp);
    }
    free(H);
    free(U);
    free(W0);
    free(Wc);
    free(Wg);
    free(cc);
    free(cg);
    free(gcol);
    free(perm);
    fs_backend_free(cpu);
    fs_backend_free(gpu);
}
END_TEST

Suite *fs_suite_cuda(void)
{
    Suite *s = suite_create("cuda");
    if (no_device()) {  /* printed here, once: the tests may run in forked children */
        printf("check_cuda: no CUDA device, CUDA parity tests skipped\n");
        fflush(stdout);  /* or each child would print the buffered line again */
    }
    TCase *tc;
    tc = tcase_create("grid");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grid_parity);
    suite_add_tcase(s, tc);
    tc = tcase_create("hessian");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_hessian_parity);
    suite_add_tcase(s, tc);
    tc = tcase_create("chol_inv");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_chol_inv_parity);
    suite_add_tcase(s, tc);
    tc = tcase_create("gptq");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_gptq_parity);
    suite_add_tcase(s, tc);
    return s;
}
