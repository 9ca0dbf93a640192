/* check_cuda.c: the CUDA backend against the CPU backend on the same inputs:
 * grids (bytes), Hessian accumulation, the Cholesky factor of the inverse and
 * the GPTQ solve.  tests/run.c runs this suite in its own process without
 * fork (CUDA does not survive a fork).  Without a CUDA device (or without
 * CUDA in the build) each test prints "SKIP (no CUDA device)" and is counted
 * as skipped (fs_cuda_tests_skipped), not as a pass.
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
#include "src/backend/backend-impl.h"
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

/* Tests skipped for want of a device, for tests/run.c's summary.  This suite
 * runs without fork (tests/run.c), so the count is the runner's own. */
static int n_skipped;

int fs_cuda_tests_skipped(void)
{
    return n_skipped;
}

/* 1 (and a SKIP line naming the test) when no CUDA device is usable.  Check
 * 0.15 has no skip status: run.c reports the count and FS_REQUIRE_CUDA=1 turns
 * any skip into a failure, so on a GPU machine a suite that cannot see its
 * device fails instead of passing. */
static int skip_no_device(const char *test)
{
    if (fs_backend_cuda_devices() > 0) return 0;
    n_skipped++;
    printf("check_cuda: %s: SKIP (no CUDA device)\n", test);
    fflush(stdout);
    return 1;
}
#define SKIP_WITHOUT_DEVICE() do { if (skip_no_device(__func__)) return; } while (0)

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
    SKIP_WITHOUT_DEVICE();
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
    SKIP_WITHOUT_DEVICE();
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
    SKIP_WITHOUT_DEVICE();
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

    /* not positive definite: a negative pivot at row 10; named as the CPU
     * names it (its algorithm factors the reversed matrix: the trailing minor
     * from column 10), so both retry with more damping at the same matrices */
    memset(A, 0, sizeof(float) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++) A[i * n + i] = i == 10 ? -1.0f : 1.0f;
    fs_ctx_clear(&ctx);
    rc = fs_be_chol_inv(&ctx, gpu, A, n);
    ck_assert_int_eq(rc, FS_ERR_NUMERIC);
    ck_assert_int_eq(ctx.err, FS_ERR_NUMERIC);
    ck_assert_msg(strstr(ctx.errmsg, "minor from column 10") != NULL, "message: %s", ctx.errmsg);
    char cpu_msg[sizeof ctx.errmsg];
    snprintf(cpu_msg, sizeof cpu_msg, "%s", ctx.errmsg);
    fs_ctx_clear(&ctx);
    memset(A, 0, sizeof(float) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++) A[i * n + i] = i == 10 ? -1.0f : 1.0f;
    ck_assert_int_eq(fs_be_chol_inv(&ctx, cpu, A, n), FS_ERR_NUMERIC);
    ck_assert_str_eq(ctx.errmsg, cpu_msg);

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
    SKIP_WITHOUT_DEVICE();
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

/* ---- (e) the v2 ops: every op on the device against the cpu backend ------------------
 *
 * Each test gives the same inputs to the cpu backend and to the device
 * backend and compares the outputs: bytes where the arithmetic is the same
 * IEEE sequence on both (cuda/ops-*.cu invariants), else within a bound
 * computed here from the inputs (sum of |terms| in double times a few f32
 * epsilons), never from either backend's output.  Shapes: DeepSeek-V3's
 * (hidden 7168, expert 2048, MLA q/k 192 = 128 + 64 rope, v 128, 256 experts
 * in 8 groups, top-8) on few tokens, and odd sizes.
 *
 * FS_CUDA_STANDIN=cpu-async (tools/gpu-check.sh does not set it) runs these
 * tests with cpu-async in the device's place: a check of the tests' own
 * plumbing on a machine without a GPU, which says nothing about CUDA. */

#define EPS32 1.1920929e-07
/* f32 sums of k products: k * eps of the sum of |terms| bounds any order */
#define SUM_BOUND(k, absum) ((double)(k) * EPS32 * (absum) + 1e-30)
/* expf of CUDA (2 ulp) vs glibc (1 ulp), then a few roundings */
#define EXP_REL 1e-6
/* RMSNorm: a tree vs the CPU's ordered f32 sum of squares over d terms */
#define NORM_K(d) ((double)(d) * EPS32 + 4 * EPS32)

typedef struct duo {
    fs_ctx ctx;
    fs_backend *be[2];      /* 0: cpu, 1: the device (cuda, or the stand-in) */
} duo;

static const char *standin(void)
{
    const char *s = getenv("FS_CUDA_STANDIN");
    return s && strcmp(s, "cpu-async") == 0 ? s : NULL;
}

/* 0 (and a SKIP) without a device; else both backends open. */
static int duo_open(duo *d, const char *test)
{
    const char *st = standin();
    if (!st && skip_no_device(test)) return 0;
    fs_ctx_init(&d->ctx);
    d->ctx.quiet = 1;
    ck_assert_msg(fs_backend_open(&d->ctx, FS_BE_CPU, NULL, &d->be[0]) == FS_OK, "cpu: %s", d->ctx.errmsg);
    ck_assert_msg(fs_backend_open(&d->ctx, st ? FS_BE_CPU_ASYNC : FS_BE_CUDA, NULL, &d->be[1]) == FS_OK,
                  "device backend: %s", d->ctx.errmsg);
    if (!st) ck_assert_str_eq(fs_backend_name(d->be[1]), "cuda");
    return 1;
}

static void duo_close(duo *d)
{
    fs_backend_free(d->be[0]);
    fs_backend_free(d->be[1]);
}

#define DOK(d, expr) ck_assert_msg((expr) == FS_OK, "%s: %s", #expr, (d)->ctx.errmsg)

/* One buffer on each side with the same bytes (host NULL: 0xFF bytes, NaN in
 * F32, so an output the op should write but does not shows). */
typedef struct tw {
    fs_buf *b[2];
    uint64_t bytes;
} tw;

static tw tw_new(duo *d, const void *host, uint64_t bytes)
{
    tw t;
    t.bytes = bytes;
    uint8_t *tmp = NULL;
    if (!host) {
        tmp = xalloc((size_t)bytes, 1);
        memset(tmp, 0xFF, (size_t)bytes);
        host = tmp;
    }
    for (int k = 0; k < 2; k++) {
        DOK(d, fs_be_alloc(&d->ctx, d->be[k], bytes ? bytes : 8, "parity buffer", &t.b[k]));
        if (bytes) DOK(d, fs_be_upload(&d->ctx, d->be[k], FS_QUEUE_COMPUTE, t.b[k], 0, host, bytes));
        DOK(d, fs_be_sync(&d->ctx, d->be[k], FS_QUEUE_COMPUTE));    /* host may go */
    }
    free(tmp);
    return t;
}

/* side k's bytes into host */
static void tw_get(duo *d, const tw *t, int k, void *host)
{
    DOK(d, fs_be_download(&d->ctx, d->be[k], FS_QUEUE_COMPUTE, host, t->b[k], 0, t->bytes));
    DOK(d, fs_be_sync(&d->ctx, d->be[k], FS_QUEUE_COMPUTE));
}

static void tw_free(duo *d, tw *t)
{
    fs_be_free(d->be[0], t->b[0]);
    fs_be_free(d->be[1], t->b[1]);
}

/* both sides' bytes equal */
static void tw_same(duo *d, const tw *t, const char *what)
{
    uint8_t *a = xalloc((size_t)t->bytes, 1), *b = xalloc((size_t)t->bytes, 1);
    tw_get(d, t, 0, a);
    tw_get(d, t, 1, b);
    size_t i = 0;
    while (i < t->bytes && a[i] == b[i]) i++;
    ck_assert_msg(i == t->bytes, "%s: bytes differ first at %zu of %llu (cpu %02x, device %02x)", what, i,
                  (unsigned long long)t->bytes, i < t->bytes ? a[i] : 0, i < t->bytes ? b[i] : 0);
    free(a);
    free(b);
}

/* both sides as floats: |cpu - dev| <= bound[i] (bound NULL: abs_tol) */
static void tw_close(duo *d, const tw *t, const double *bound, double abs_tol, const char *what)
{
    const size_t n = (size_t)t->bytes / 4;
    float *a = xalloc(n, 4), *b = xalloc(n, 4);
    tw_get(d, t, 0, a);
    tw_get(d, t, 1, b);
    for (size_t i = 0; i < n; i++) {
        const double lim = bound ? bound[i] : abs_tol;
        const double diff = fabs((double)a[i] - (double)b[i]);
        ck_assert_msg((isnan(a[i]) && isnan(b[i])) || diff <= lim,
                      "%s: element %zu: cpu %.9g device %.9g (|diff| %.3g > %.3g)", what, i, (double)a[i],
                      (double)b[i], diff, lim);
    }
    free(a);
    free(b);
}

static void fill_unit(lcg *g, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = lcg_unit(g) * scale;
}

static void sync2(duo *d)
{
    for (int k = 0; k < 2; k++) DOK(d, fs_be_sync_all(&d->ctx, d->be[k]));
}

/* ---- memory, queues, events, sticky errors ---------------------------------------------------- */

START_TEST(test_v2_queues)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    fs_backend *be = d.be[1];
    const size_t n = 3 * 4096 + 17;
    float *host = NULL, *back = xalloc(n, sizeof(float));
    DOK(&d, fs_be_host_alloc(&d.ctx, be, n * sizeof(float), (void **)&host));
    ck_assert_msg(((uintptr_t)host & 4095) == 0, "staging not 4096-aligned");
    for (size_t i = 0; i < n; i++) host[i] = (float)i;
    fs_buf *b, *b2;
    fs_event *up, *done;
    DOK(&d, fs_be_alloc(&d.ctx, be, n * sizeof(float), "queues", &b));
    DOK(&d, fs_be_alloc(&d.ctx, be, n * sizeof(float), "queues 2", &b2));
    DOK(&d, fs_be_event_new(&d.ctx, be, &up));
    DOK(&d, fs_be_event_new(&d.ctx, be, &done));
    /* upload on one queue, an op after it on another, the download on a third */
    DOK(&d, fs_be_upload(&d.ctx, be, FS_QUEUE_UPLOAD, b, 0, host, n * sizeof(float)));
    DOK(&d, fs_be_record(&d.ctx, be, up, FS_QUEUE_UPLOAD));
    DOK(&d, fs_be_wait(&d.ctx, be, FS_QUEUE_COMPUTE, up));
    fs_tensor all = fs_tensor_2d(b, 0, FS_DT_F32, 1, (int64_t)n), all2 = fs_tensor_2d(b2, 0, FS_DT_F32, 1, (int64_t)n);
    DOK(&d, fs_op_fill(&d.ctx, be, FS_QUEUE_COMPUTE, all2, 1.0));
    DOK(&d, fs_op_add(&d.ctx, be, FS_QUEUE_COMPUTE, all2, all));                /* 1 + i: exact */
    DOK(&d, fs_be_record(&d.ctx, be, done, FS_QUEUE_COMPUTE));
    DOK(&d, fs_be_wait(&d.ctx, be, FS_QUEUE_DOWNLOAD, done));
    DOK(&d, fs_be_download(&d.ctx, be, FS_QUEUE_DOWNLOAD, back, b2, 0, n * sizeof(float)));
    DOK(&d, fs_be_sync(&d.ctx, be, FS_QUEUE_DOWNLOAD));
    for (size_t i = 0; i < n; i++) ck_assert_msg(back[i] == 1.0f + (float)i, "element %zu: %g", i, (double)back[i]);
    ck_assert_int_eq(fs_be_event_done(be, done), 1);
    DOK(&d, fs_be_event_sync(&d.ctx, be, done));

    /* a data error is sticky on its queue and not on the others */
    int32_t bad_rows[2] = {0, 99};
    fs_buf *rb;
    DOK(&d, fs_be_alloc(&d.ctx, be, sizeof bad_rows, "rows", &rb));
    DOK(&d, fs_be_upload(&d.ctx, be, FS_QUEUE_COMPUTE, rb, 0, bad_rows, sizeof bad_rows));
    fs_status rc = fs_op_gather(&d.ctx, be, FS_QUEUE_COMPUTE, fs_tensor_2d(b, 0, FS_DT_F32, 2, 4),
                                fs_tensor_2d(b, 64, FS_DT_F32, 8, 4), fs_tensor_2d(rb, 0, FS_DT_I32, 1, 2));
    if (rc == FS_OK) rc = fs_be_sync(&d.ctx, be, FS_QUEUE_COMPUTE);
    ck_assert_int_eq(rc, FS_ERR_FORMAT);
    ck_assert_msg(strstr(d.ctx.errmsg, "gather") != NULL, "message: %s", d.ctx.errmsg);
    fs_ctx_clear(&d.ctx);
    ck_assert_int_eq(fs_op_fill(&d.ctx, be, FS_QUEUE_COMPUTE, all, 0.0), FS_ERR_FORMAT);    /* sticky */
    fs_ctx_clear(&d.ctx);
    DOK(&d, fs_be_sync(&d.ctx, be, FS_QUEUE_UPLOAD));                                     /* others fine */
    fs_be_event_free(be, up);
    fs_be_event_free(be, done);
    fs_be_free(be, rb);
    fs_be_free(be, b2);
    fs_be_free(be, b);
    fs_be_host_free(be, host);
    free(back);
    duo_close(&d);

    /* the budget: an allocation past it is refused, naming it */
    fs_backend *bud;
    fs_backend_opts o = {1 << 20, 0};
    fs_ctx_init(&d.ctx);
    d.ctx.quiet = 1;
    DOK(&d, fs_backend_open(&d.ctx, standin() ? FS_BE_CPU_ASYNC : FS_BE_CUDA, &o, &bud));
    fs_buf *big = NULL;
    ck_assert_int_eq(fs_be_alloc(&d.ctx, bud, (1 << 20) + 1, "too big", &big), FS_ERR_NOMEM);
    ck_assert_msg(strstr(d.ctx.errmsg, "too big") != NULL, "message: %s", d.ctx.errmsg);
    fs_backend_free(bud);
}
END_TEST

/* ---- gemm ---------------------------------------------------------------------------------------- */

typedef struct gemm_case {
    int64_t m, k, n;
    fs_dtype ta, tb;
    int trans_b;
    float alpha, beta;
} gemm_case;

static float bf16_round(float x)
{
    return fs_bf16_to_f32(fs_f32_to_bf16(x));
}

START_TEST(test_v2_gemm)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    /* DeepSeek-V3 expert gate/up (7168 -> 2048) and down (2048 -> 7168) on 5
     * tokens, the MLA ranks (1536, 512 + 64), the dense MLP (18432); odd sizes
     * with strided C; BF16 x BF16, BF16 x F32; beta */
    static const gemm_case cases[] = {
        {5, 7168, 2048, FS_DT_BF16, FS_DT_BF16, 1, 1.0f, 0.0f},
        {5, 2048, 7168, FS_DT_F32, FS_DT_BF16, 1, 1.0f, 0.0f},
        {3, 7168, 1536, FS_DT_BF16, FS_DT_BF16, 1, 1.0f, 0.0f},       /* MLA q_a_proj: the q rank */
        {3, 7168, 576, FS_DT_BF16, FS_DT_BF16, 1, 1.0f, 0.0f},        /* kv_a_proj_with_mqa: 512 + 64 */
        {4, 1536, 24576, FS_DT_F32, FS_DT_BF16, 1, 1.0f, 0.0f},       /* q_b_proj: 128 heads x 192 */
        {2, 7168, 18432, FS_DT_BF16, FS_DT_BF16, 1, 1.0f, 0.0f},      /* the dense MLP's gate */
        {3, 37, 29, FS_DT_F32, FS_DT_F32, 0, 0.5f, 1.0f},
        {17, 53, 31, FS_DT_BF16, FS_DT_F32, 0, 1.0f, -2.0f},
        {7, 1, 9, FS_DT_F32, FS_DT_F32, 1, 1.0f, 0.0f},
    };
    lcg g = {2024};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const gemm_case *c = &cases[ci];
        const int64_t m = c->m, k = c->k, n = c->n, ldc = n + 3;
        const int64_t brows = c->trans_b ? n : k, bcols = c->trans_b ? k : n;
        float *A = xalloc((size_t)(m * k), 4), *B = xalloc((size_t)(brows * bcols), 4);
        float *C = xalloc((size_t)(m * ldc), 4);
        fill_unit(&g, A, (size_t)(m * k), 1.0f);
        fill_unit(&g, B, (size_t)(brows * bcols), 0.5f);
        fill_unit(&g, C, (size_t)(m * ldc), 1.0f);
        /* operands as their dtype on both sides */
        uint16_t *Ah = xalloc((size_t)(m * k), 2), *Bh = xalloc((size_t)(brows * bcols), 2);
        for (int64_t i = 0; i < m * k; i++) { Ah[i] = fs_f32_to_bf16(A[i]); if (c->ta == FS_DT_BF16) A[i] = bf16_round(A[i]); }
        for (int64_t i = 0; i < brows * bcols; i++) { Bh[i] = fs_f32_to_bf16(B[i]); if (c->tb == FS_DT_BF16) B[i] = bf16_round(B[i]); }
        tw ta = c->ta == FS_DT_BF16 ? tw_new(&d, Ah, (uint64_t)(m * k * 2)) : tw_new(&d, A, (uint64_t)(m * k * 4));
        tw tb = c->tb == FS_DT_BF16 ? tw_new(&d, Bh, (uint64_t)(brows * bcols * 2))
                                    : tw_new(&d, B, (uint64_t)(brows * bcols * 4));
        tw tc = tw_new(&d, C, (uint64_t)(m * ldc * 4));
        for (int s = 0; s < 2; s++) {
            fs_gemm_args ga = {fs_tensor_2d(ta.b[s], 0, c->ta, m, k), fs_tensor_2d(tb.b[s], 0, c->tb, brows, bcols),
                               fs_tensor_ld(tc.b[s], 0, FS_DT_F32, m, n, ldc), c->trans_b, c->alpha, c->beta};
            DOK(&d, fs_op_gemm(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &ga));
        }
        sync2(&d);
        double *bound = xalloc((size_t)(m * ldc), sizeof(double));
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < ldc; j++) {
                double ab = 0.0;
                if (j < n)
                    for (int64_t x = 0; x < k; x++)
                        ab += fabs((double)A[i * k + x] * (c->trans_b ? B[j * k + x] : B[x * n + j]));
                /* alpha * sum and beta * C: each side rounds both; padding columns untouched */
                bound[i * ldc + j] = j < n ? 2.0 * SUM_BOUND(k + 2, fabs(c->alpha) * ab + fabs(c->beta * C[i * ldc + j]))
                                           : 0.0;
            }
        char what[64];
        snprintf(what, sizeof what, "gemm case %zu", ci);
        tw_close(&d, &tc, bound, 0.0, what);
        free(bound);
        tw_free(&d, &ta);
        tw_free(&d, &tb);
        tw_free(&d, &tc);
        free(A); free(B); free(C); free(Ah); free(Bh);
    }
    duo_close(&d);
}
END_TEST

/* ---- Hessians: acc, finish, wave, damp ---------------------------------------------------------- */

START_TEST(test_v2_hessian)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    static const int64_t shapes[][2] = {{9, 2048}, {7, 131}};     /* rows, in */
    lcg g = {31337};
    for (size_t si = 0; si < 2; si++) {
        const int64_t r = shapes[si][0], in = shapes[si][1];
        float *X = xalloc((size_t)(r * in), 4), *H0 = xalloc((size_t)(in * in), 4);
        fill_unit(&g, X, (size_t)(r * in), 1.0f);
        fill_unit(&g, H0, (size_t)(in * in), 1.0f);
        for (int64_t i = 0; i < in; i++)                       /* a symmetric start */
            for (int64_t j = 0; j < i; j++) H0[i * in + j] = H0[j * in + i];
        tw tx = tw_new(&d, X, (uint64_t)(r * in * 4)), th = tw_new(&d, H0, (uint64_t)(in * in * 4));
        for (int s = 0; s < 2; s++) {
            fs_tensor H = fs_tensor_2d(th.b[s], 0, FS_DT_F32, in, in);
            DOK(&d, fs_op_hess_acc(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, H, fs_tensor_2d(tx.b[s], 0, FS_DT_F32, r, in)));
            DOK(&d, fs_op_hess_finish(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, H, 1));
            fs_damp_args da = {H, H, 1, 0.01};
            DOK(&d, fs_op_damp(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &da));
        }
        sync2(&d);
        double *bound = xalloc((size_t)(in * in), sizeof(double));
        double diag = 0.0;
        for (int64_t i = 0; i < in; i++) {
            double s = fabs(H0[i * in + i]);
            for (int64_t x = 0; x < r; x++) s += (double)X[x * in + i] * X[x * in + i];
            diag += s;
        }
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < in; j++) {
                const int64_t a = i < j ? i : j, b = i < j ? j : i;       /* the upper entry mirrored */
                double ab = fabs(H0[a * in + b]);
                for (int64_t x = 0; x < r; x++) ab += fabs((double)X[x * in + a] * X[x * in + b]);
                /* + the damping term on the diagonal, whose mean is of rounded sums */
                bound[i * in + j] = SUM_BOUND(r + 1, ab) + (i == j ? 0.01 * SUM_BOUND(r + 1 + in, diag / (double)in) + EPS32 * 0.01 * diag / (double)in : 0.0);
            }
        tw_close(&d, &th, bound, 0.0, si ? "hessian 7 x 131" : "hessian 9 x 2048");
        /* symmetric on the device: the mirror is a copy */
        float *Hd = xalloc((size_t)(in * in), 4);
        tw_get(&d, &th, 1, Hd);
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < i; j++)
                ck_assert_msg(Hd[i * in + j] == Hd[j * in + i], "not symmetric at %lld, %lld", (long long)i, (long long)j);
        free(Hd);
        free(bound);
        tw_free(&d, &tx);
        tw_free(&d, &th);
        free(X);
        free(H0);
    }

    /* a wave of 4 experts over 12 rows of 96: one expert without rows, one row twice */
    const int64_t n = 12, in = 96, ne = 4;
    int32_t offs[5] = {0, 3, 3, 8, 11};
    int32_t rows[11] = {0, 5, 11, 1, 2, 3, 4, 4, 6, 7, 10};
    float *X = xalloc((size_t)(n * in), 4), *H = xalloc((size_t)(ne * in * in), 4);
    fill_unit(&g, X, (size_t)(n * in), 1.0f);
    tw tx = tw_new(&d, X, (uint64_t)(n * in * 4)), to = tw_new(&d, offs, sizeof offs), tr = tw_new(&d, rows, sizeof rows);
    tw th = tw_new(&d, H, (uint64_t)(ne * in * in * 4));               /* zeros */
    for (int s = 0; s < 2; s++) {
        fs_hess_wave_args wa = {fs_tensor_2d(tx.b[s], 0, FS_DT_F32, n, in), fs_tensor_2d(to.b[s], 0, FS_DT_I32, 1, 5),
                                fs_tensor_2d(tr.b[s], 0, FS_DT_I32, 1, 11),
                                fs_tensor_2d(th.b[s], 0, FS_DT_F32, ne * in, in), 0, ne};
        DOK(&d, fs_op_hess_wave(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &wa));
    }
    sync2(&d);
    double *bound = xalloc((size_t)(ne * in * in), sizeof(double));
    for (int64_t e = 0; e < ne; e++)
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < in; j++) {
                double ab = 0.0;
                for (int32_t x = offs[e]; x < offs[e + 1]; x++) ab += fabs((double)X[rows[x] * in + i] * X[rows[x] * in + j]);
                /* the lower triangle is neither read nor written: both keep the zeros */
                bound[(e * in + i) * in + j] = j >= i ? SUM_BOUND(offs[e + 1] - offs[e], ab) : 0.0;
            }
    tw_close(&d, &th, bound, 0.0, "hess_wave");
    free(bound);
    tw_free(&d, &tx); tw_free(&d, &to); tw_free(&d, &tr); tw_free(&d, &th);
    free(X);
    free(H);
    duo_close(&d);
}
END_TEST

/* ---- cholinv: the factor and the same damping decisions ------------------------------------------- */

START_TEST(test_v2_cholinv)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    static const int64_t sizes[] = {96, 257};
    lcg g = {8080};
    for (size_t si = 0; si < 2; si++) {
        const int64_t n = sizes[si], count = 3;
        float *A = xalloc((size_t)(count * n * n), 4);
        make_spd(&g, A, n, 2 * n, 0.05);
        make_spd(&g, A + 2 * n * n, n, 2 * n, 0.05);
        /* matrix 1: not positive definite, a negative pivot at column n / 3 */
        for (int64_t i = 0; i < n; i++) A[n * n + i * n + i] = i == n / 3 ? -1.0f : 1.0f;
        tw ta = tw_new(&d, A, (uint64_t)(count * n * n * 4)), ts = tw_new(&d, NULL, (uint64_t)(count * 4));
        for (int s = 0; s < 2; s++) {
            fs_cholinv_args ca = {fs_tensor_2d(ta.b[s], 0, FS_DT_F32, count * n, n),
                                  fs_tensor_2d(ts.b[s], 0, FS_DT_I32, 1, count), count};
            DOK(&d, fs_op_cholinv(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &ca));
        }
        sync2(&d);
        tw_same(&d, &ts, "cholinv status (the damping decisions)");
        int32_t st[3];
        tw_get(&d, &ts, 1, st);
        ck_assert_msg(st[0] == 0 && st[2] == 0 && st[1] != 0, "status %d %d %d", st[0], st[1], st[2]);
        float *Uc = xalloc((size_t)(count * n * n), 4), *Ug = xalloc((size_t)(count * n * n), 4);
        tw_get(&d, &ta, 0, Uc);
        tw_get(&d, &ta, 1, Ug);
        for (int64_t m = 0; m < count; m += 2) {                       /* the factored ones */
            const float *uc = Uc + m * n * n, *ug = Ug + m * n * n;
            const double mx = max_abs(uc, (size_t)(n * n)), df = max_diff(uc, ug, (size_t)(n * n));
            ck_assert_msg(df <= CHOL_RTOL * mx, "n %lld matrix %lld: max |Ucpu - Udev| %g, max |U| %g", (long long)n,
                          (long long)m, df, mx);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < i; j++)
                    ck_assert_msg(ug[i * n + j] == 0.0f, "lower triangle not zero at %lld,%lld", (long long)i, (long long)j);
        }
        free(Uc); free(Ug); free(A);
        tw_free(&d, &ta);
        tw_free(&d, &ts);
    }
    duo_close(&d);
}
END_TEST

/* ---- grid, rtn, gptq on buffers ------------------------------------------------------------------- */

START_TEST(test_v2_quant)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    const int64_t R = 23, C = 300, ldw = 311;
    lcg g = {515};
    float *W = xalloc((size_t)(R * ldw), 4);
    fill_grid_rows(&g, W, R, ldw);
    static const int bits[] = {2, 3, 4, 8};
    for (int bi = 0; bi < 4; bi++)
        for (int mse = 0; mse <= 1; mse++) {
            fs_quant_opts qo;
            fs_grid_params gp;
            make_opts(&qo, bits[bi], bi & 1, 128, mse ? FS_GRID_MSE : FS_GRID_ABSMAX, mse ? 2.4f : 2.0f);
            ck_assert_int_eq(fs_grid_params_init(&d.ctx, &gp, &qo), FS_OK);
            const int64_t gw = 128, ng = (C + gw - 1) / gw, ldq = ng * 4 + 5;
            tw tw_w = tw_new(&d, W, (uint64_t)(R * ldw * 4));
            tw tq = tw_new(&d, NULL, (uint64_t)(R * ldq)), tc = tw_new(&d, NULL, (uint64_t)(R * C));
            tw tdq = tw_new(&d, NULL, (uint64_t)(R * C * 4));
            for (int s = 0; s < 2; s++) {
                fs_tensor Wv = fs_tensor_ld(tw_w.b[s], 0, FS_DT_F32, R, C, ldw);
                fs_tensor qv = fs_tensor_ld(tq.b[s], 0, FS_DT_U8, R, ng * 4, ldq);
                fs_grid_args ga = {Wv, qv, gw, &gp};
                DOK(&d, fs_op_grid(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &ga));
                fs_rtn_args ra = {Wv, qv, fs_tensor_2d(tc.b[s], 0, FS_DT_U8, R, C),
                                  fs_tensor_2d(tdq.b[s], 0, FS_DT_F32, R, C), gw, &gp};
                DOK(&d, fs_op_rtn(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &ra));
            }
            sync2(&d);
            tw_same(&d, &tq, "grid qmeta");
            tw_same(&d, &tc, "rtn codes");
            tw_same(&d, &tdq, "rtn dequant");
            tw_free(&d, &tw_w); tw_free(&d, &tq); tw_free(&d, &tc); tw_free(&d, &tdq);
            fs_grid_params_free(&gp);
        }
    free(W);

    /* the solve on buffers: dynamic groups of 64 with blocks of 48 */
    const int64_t GR = 32, GC = 192;
    float *H = xalloc((size_t)(GC * GC), 4), *U = xalloc((size_t)(GC * GC), 4), *W0 = xalloc((size_t)(GR * GC), 4);
    make_spd(&g, H, GC, 400, 0.0);
    memcpy(U, H, sizeof(float) * (size_t)(GC * GC));
    for (int64_t i = 0; i < GC; i++) U[i * GC + i] += 0.01f;
    fs_ctx c2;
    fs_ctx_init(&c2);
    ck_assert_int_eq(fs_be_chol_inv(&c2, d.be[0], U, GC), FS_OK);
    fill_unit(&g, W0, (size_t)(GR * GC), 0.05f);
    fs_quant_opts qo;
    fs_grid_params gp;
    make_opts(&qo, 4, 0, 64, FS_GRID_MSE, 2.4f);
    ck_assert_int_eq(fs_grid_params_init(&d.ctx, &gp, &qo), FS_OK);
    const int64_t ng = GC / 64;
    tw tw_w = tw_new(&d, W0, (uint64_t)(GR * GC * 4)), tu = tw_new(&d, U, (uint64_t)(GC * GC * 4));
    tw tc = tw_new(&d, NULL, (uint64_t)(GR * GC)), tq = tw_new(&d, NULL, (uint64_t)(GR * ng * 4));
    for (int s = 0; s < 2; s++) {
        fs_gptq_args qa = {fs_tensor_2d(tw_w.b[s], 0, FS_DT_F32, GR, GC), fs_tensor_2d(tu.b[s], 0, FS_DT_F32, GC, GC),
                           fs_tensor_2d(tc.b[s], 0, FS_DT_U8, GR, GC), fs_tensor_2d(tq.b[s], 0, FS_DT_U8, GR, ng * 4),
                           fs_tensor_none(), 64, 48, &gp};
        DOK(&d, fs_op_gptq(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &qa));
    }
    sync2(&d);
    uint8_t *cc = xalloc((size_t)(GR * GC), 1), *cg = xalloc((size_t)(GR * GC), 1);
    float *Dc = xalloc((size_t)(GR * GC), 4), *Dg = xalloc((size_t)(GR * GC), 4);
    tw_get(&d, &tc, 0, cc);
    tw_get(&d, &tc, 1, cg);
    tw_get(&d, &tw_w, 0, Dc);
    tw_get(&d, &tw_w, 1, Dg);
    int64_t same = 0;
    for (int64_t i = 0; i < GR * GC; i++) same += cc[i] == cg[i];
    ck_assert_msg((double)same / (double)(GR * GC) >= GPTQ_CODE_MATCH, "gptq op: codes equal on %lld of %lld",
                  (long long)same, (long long)(GR * GC));
    const double lc = quad_loss(W0, Dc, H, GR, GC), lg = quad_loss(W0, Dg, H, GR, GC);
    ck_assert_msg(fabs(lc - lg) <= GPTQ_LOSS_RTOL * lc, "gptq op: loss cpu %.9g device %.9g", lc, lg);
    free(cc); free(cg); free(Dc); free(Dg); free(H); free(U); free(W0);
    tw_free(&d, &tw_w); tw_free(&d, &tu); tw_free(&d, &tc); tw_free(&d, &tq);
    fs_grid_params_free(&gp);
    duo_close(&d);
}
END_TEST

/* ---- decode: F8 block-scaled, BF16, F16, F32 with non-finite values ------------------------------ */

START_TEST(test_v2_decode)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    const int64_t R = 300, C = 260, b0 = 128, b1 = 128, sr = 3, sc = 3;      /* odd: partial blocks */
    lcg g = {77};
    uint8_t *f8 = xalloc((size_t)(R * C), 1);
    uint16_t *h16 = xalloc((size_t)(R * C), 2);
    float *f32 = xalloc((size_t)(R * C), 4), *scale = xalloc((size_t)(sr * sc), 4);
    for (int64_t i = 0; i < R * C; i++) {
        f8[i] = (uint8_t)((g.s = g.s * 6364136223846793005ull + 1442695040888963407ull) >> 56);
        if (f8[i] == 0x7f || f8[i] == 0xff) f8[i] = 0x3c;                  /* no NaN yet */
        f32[i] = lcg_unit(&g) * 100.0f;
        h16[i] = (uint16_t)(g.s >> 20);
        if (((h16[i] >> 10) & 0x1f) == 0x1f) h16[i] &= 0xbfff;             /* finite as F16 */
        if (((h16[i] >> 7) & 0xff) == 0xff) h16[i] &= 0xbfff;              /* and as BF16 */
    }
    for (int64_t i = 0; i < sr * sc; i++) scale[i] = (float)(0.001 * (double)(i + 1));
    for (int pass = 0; pass < 2; pass++) {          /* all finite, then a NaN and an Inf */
        if (pass) {
            f8[(R - 2) * C + 7] = 0x7f;
            f32[5 * C + 259] = INFINITY;
            f32[200 * C] = NAN;
            h16[9 * C + 100] = 0x7c00;                 /* F16 Inf (finite as BF16) */
            h16[9 * C + 101] = 0x7f80;                 /* BF16 Inf (NaN as F16) */
        }
        static const fs_dtype dts[] = {FS_DT_F8_E4M3, FS_DT_F8_E4M3, FS_DT_BF16, FS_DT_F16, FS_DT_F32};
        for (int di = 0; di < 5; di++) {
            const fs_dtype dt = dts[di];
            const void *src = dt == FS_DT_F8_E4M3 ? (const void *)f8 : dt == FS_DT_F32 ? (const void *)f32 : (const void *)h16;
            tw ts = tw_new(&d, src, (uint64_t)(R * C) * fs_dtype_size(dt));
            tw tsc = tw_new(&d, scale, (uint64_t)(sr * sc * 4));
            tw td = tw_new(&d, NULL, (uint64_t)(R * C * 4)), tst = tw_new(&d, NULL, 8);
            for (int s = 0; s < 2; s++) {
                fs_decode_args da = {fs_tensor_2d(ts.b[s], 0, dt, R, C),
                                     di == 0 ? fs_tensor_2d(tsc.b[s], 0, FS_DT_F32, sr, sc) : fs_tensor_none(),
                                     fs_tensor_2d(td.b[s], 0, FS_DT_F32, R, C), fs_tensor_2d(tst.b[s], 0, FS_DT_I64, 1, 1),
                                     b0, b1};
                DOK(&d, fs_op_decode(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &da));
            }
            sync2(&d);
            tw_same(&d, &td, "decode values");
            tw_same(&d, &tst, "decode status");
            int64_t st;
            tw_get(&d, &tst, 1, &st);
            ck_assert_msg(pass ? st != 0 : st == 0, "decode dtype %d pass %d: status %lld", (int)dt, pass, (long long)st);
            tw_free(&d, &ts); tw_free(&d, &tsc); tw_free(&d, &td); tw_free(&d, &tst);
        }
    }
    free(f8); free(h16); free(f32); free(scale);
    duo_close(&d);
}
END_TEST

/* ---- elementwise and row ops --------------------------------------------------------------------- */

START_TEST(test_v2_elementwise)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    const int64_t n = 5, D = 7168, I = 2048, ld = D + 9;
    lcg g = {4711};
    float *x = xalloc((size_t)(n * ld), 4), *w = xalloc((size_t)D, 4), *u = xalloc((size_t)(n * I), 4);
    fill_unit(&g, x, (size_t)(n * ld), 3.0f);
    fill_unit(&g, w, (size_t)D, 1.0f);
    fill_unit(&g, u, (size_t)(n * I), 2.0f);
    tw tx = tw_new(&d, x, (uint64_t)(n * ld * 4)), tw_ = tw_new(&d, w, (uint64_t)(D * 4));
    tw to = tw_new(&d, NULL, (uint64_t)(n * D * 4)), tu = tw_new(&d, u, (uint64_t)(n * I * 4));
    tw tg = tw_new(&d, x, (uint64_t)(n * I * 4)), tb = tw_new(&d, NULL, (uint64_t)(n * ld * 2));
    tw tf = tw_new(&d, NULL, (uint64_t)(n * ld * 4)), tfill = tw_new(&d, NULL, 64 * 8);
    for (int s = 0; s < 2; s++) {
        fs_backend *be = d.be[s];
        fs_tensor X = fs_tensor_ld(tx.b[s], 0, FS_DT_F32, n, D, ld);
        fs_rmsnorm_args ra = {X, fs_tensor_2d(tw_.b[s], 0, FS_DT_F32, 1, D), fs_tensor_2d(to.b[s], 0, FS_DT_F32, n, D),
                              1e-6f};
        DOK(&d, fs_op_rmsnorm(&d.ctx, be, FS_QUEUE_COMPUTE, &ra));
        /* per head: [5, 7168] as [5 * 56, 128], in place */
        fs_tensor O = fs_tensor_2d(to.b[s], 0, FS_DT_F32, n, D);
        fs_rmsnorm_args rh = {fs_tensor_reshape(O, n * 56, 128), fs_tensor_2d(tw_.b[s], 0, FS_DT_F32, 1, 128),
                              fs_tensor_reshape(O, n * 56, 128), 1e-6f};
        DOK(&d, fs_op_rmsnorm(&d.ctx, be, FS_QUEUE_COMPUTE, &rh));
        fs_tensor G = fs_tensor_2d(tg.b[s], 0, FS_DT_F32, n, I), U = fs_tensor_2d(tu.b[s], 0, FS_DT_F32, n, I);
        DOK(&d, fs_op_swiglu(&d.ctx, be, FS_QUEUE_COMPUTE, G, U, G));
        DOK(&d, fs_op_add(&d.ctx, be, FS_QUEUE_COMPUTE, G, U));
        DOK(&d, fs_op_bias_add(&d.ctx, be, FS_QUEUE_COMPUTE, X, fs_tensor_2d(tw_.b[s], 0, FS_DT_F32, 1, D)));
        /* F32 -> BF16 (strided, odd columns) -> F32 */
        fs_tensor B = fs_tensor_ld(tb.b[s], 2, FS_DT_BF16, n, D - 1, ld), F = fs_tensor_ld(tf.b[s], 4, FS_DT_F32, n, D - 1, ld);
        DOK(&d, fs_op_copy(&d.ctx, be, FS_QUEUE_COMPUTE, B, fs_tensor_cols(X, 1, D - 1)));
        DOK(&d, fs_op_copy(&d.ctx, be, FS_QUEUE_COMPUTE, F, B));
        /* fill every dtype (8 elements each) */
        static const fs_dtype fd[] = {FS_DT_F32, FS_DT_F64, FS_DT_BF16, FS_DT_I32, FS_DT_I64, FS_DT_U8};
        for (int k = 0; k < 6; k++)
            DOK(&d, fs_op_fill(&d.ctx, be, FS_QUEUE_COMPUTE, fs_tensor_2d(tfill.b[s], (uint64_t)k * 64, fd[k], 1, 8),
                               k < 3 ? -1.75 : 7.0));
    }
    sync2(&d);
    /* RMSNorm twice (the row, then each head of 128), in double here; each
     * side's f32 sums of squares (D, then 128 terms) in its own order move
     * the result by at most their k * eps, relative */
    double *bound = xalloc((size_t)(n * D), sizeof(double)), *ref = xalloc((size_t)(n * D), sizeof(double));
    for (int64_t r = 0; r < n; r++) {
        double ss = 0.0;
        for (int64_t c = 0; c < D; c++) ss += (double)x[r * ld + c] * x[r * ld + c];
        const double inv = 1.0 / sqrt(ss / (double)D + 1e-6);
        for (int64_t c = 0; c < D; c++) ref[r * D + c] = w[c] * x[r * ld + c] * inv;
        for (int64_t h = 0; h < 56; h++) {
            double s2 = 0.0;
            for (int64_t c = 0; c < 128; c++) s2 += ref[r * D + h * 128 + c] * ref[r * D + h * 128 + c];
            const double i2 = 1.0 / sqrt(s2 / 128.0 + 1e-6);
            for (int64_t c = 0; c < 128; c++) ref[r * D + h * 128 + c] *= w[c] * i2;
        }
        for (int64_t c = 0; c < D; c++) bound[r * D + c] = 4.0 * (NORM_K(D) + NORM_K(128)) * fabs(ref[r * D + c]) + 1e-30;
    }
    tw_close(&d, &to, bound, 0.0, "rmsnorm");
    float *oc = xalloc((size_t)(n * D), 4);                 /* the bound is not too tight for the CPU itself */
    tw_get(&d, &to, 0, oc);
    for (int64_t i = 0; i < n * D; i++)
        ck_assert_msg(fabs(oc[i] - ref[i]) <= bound[i], "rmsnorm: cpu %.9g vs double %.9g", (double)oc[i], ref[i]);
    free(oc);
    free(bound);
    free(ref);
    bound = xalloc((size_t)(n * I), sizeof(double));
    for (int64_t i = 0; i < n * I; i++) {
        /* silu(g) * u + u: expf of either library */
        const double z = x[(i / I) * I + i % I], sil = z / (1.0 + exp(-z));
        bound[i] = 8.0 * EXP_REL * (fabs(sil * u[i]) + fabs(u[i])) + 1e-7;
    }
    tw_close(&d, &tg, bound, 0.0, "swiglu + add");
    free(bound);
    tw_same(&d, &tx, "bias_add");
    tw_same(&d, &tb, "copy F32 -> BF16");
    tw_same(&d, &tf, "copy BF16 -> F32");
    tw_same(&d, &tfill, "fill");
    tw_free(&d, &tx); tw_free(&d, &tw_); tw_free(&d, &to); tw_free(&d, &tu); tw_free(&d, &tg);
    tw_free(&d, &tb); tw_free(&d, &tf); tw_free(&d, &tfill);
    free(x); free(w); free(u);
    duo_close(&d);
}
END_TEST

/* ---- rope: DeepSeek-V3's MLA rope part (interleaved) and a half-split head --------------------------- */

START_TEST(test_v2_rope)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    const int64_t n = 6, heads = 4, hs = 192, c0 = 128, dd = 64, T = 4, cols = heads * hs;
    lcg g = {99991};
    float *x = xalloc((size_t)(n * cols), 4), *fr = xalloc((size_t)(dd / 2), 4);
    fill_unit(&g, x, (size_t)(n * cols), 4.0f);
    for (int64_t i = 0; i < dd / 2; i++) fr[i] = (float)pow(10000.0, -2.0 * (double)i / (double)dd) * (i % 3 ? 1.0f : 0.25f);
    for (int il = 0; il <= 1; il++) {
        tw tx = tw_new(&d, x, (uint64_t)(n * cols * 4)), tf = tw_new(&d, fr, (uint64_t)(dd / 2 * 4));
        for (int s = 0; s < 2; s++) {
            fs_rope_args ra = {fs_tensor_2d(tx.b[s], 0, FS_DT_F32, n, cols), fs_tensor_2d(tf.b[s], 0, FS_DT_F32, 1, dd / 2),
                               heads, hs, il ? c0 : 0, il ? dd : hs, T, il, 1.25f};
            if (!il) {                                  /* half-split over the whole head needs hs / 2 frequencies */
                ra.d = dd;
                ra.c0 = 5;
            }
            DOK(&d, fs_op_rope(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &ra));
        }
        sync2(&d);
        /* cos and sin of the double angle rounded to float: equal on both when
         * the device's double cos/sin round the same (1 ulp in double); two
         * products and a sum in f32 */
        tw_close(&d, &tx, NULL, 8.0 * EPS32 * 4.0 * 1.25 * 2.0, il ? "rope interleaved" : "rope half-split");
        tw_free(&d, &tx);
        tw_free(&d, &tf);
    }
    free(x);
    free(fr);
    duo_close(&d);
}
END_TEST

/* ---- gather, scatter_add, permute ------------------------------------------------------------------ */

START_TEST(test_v2_gather_permute)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    const int64_t n = 9, c = 7168, m = 12;
    int32_t rows[12] = {3, 0, 8, 3, 3, 1, 7, 2, 2, 5, 4, 6};
    lcg g = {1234};
    float *x = xalloc((size_t)(n * c), 4), *w = xalloc((size_t)m, 4), *src = xalloc((size_t)(m * c), 4);
    fill_unit(&g, x, (size_t)(n * c), 1.0f);
    fill_unit(&g, w, (size_t)m, 1.0f);
    fill_unit(&g, src, (size_t)(m * c), 1.0f);
    tw tx = tw_new(&d, x, (uint64_t)(n * c * 4)), tr = tw_new(&d, rows, sizeof rows), tw_ = tw_new(&d, w, (uint64_t)(m * 4));
    tw tgd = tw_new(&d, NULL, (uint64_t)(m * c * 4)), ts = tw_new(&d, src, (uint64_t)(m * c * 4));
    tw tacc = tw_new(&d, x, (uint64_t)(n * c * 4));
    for (int s = 0; s < 2; s++) {
        fs_tensor R = fs_tensor_2d(tr.b[s], 0, FS_DT_I32, 1, m);
        DOK(&d, fs_op_gather(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, fs_tensor_2d(tgd.b[s], 0, FS_DT_F32, m, c),
                             fs_tensor_2d(tx.b[s], 0, FS_DT_F32, n, c), R));
        fs_scatter_args sa = {fs_tensor_2d(tacc.b[s], 0, FS_DT_F32, n, c), fs_tensor_2d(ts.b[s], 0, FS_DT_F32, m, c), R,
                              fs_tensor_2d(tw_.b[s], 0, FS_DT_F32, 1, m)};
        DOK(&d, fs_op_scatter_add(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &sa));
    }
    sync2(&d);
    tw_same(&d, &tgd, "gather");
    tw_same(&d, &tacc, "scatter_add (rows repeat: the order is the CPU's)");
    tw_free(&d, &tx); tw_free(&d, &tr); tw_free(&d, &tw_); tw_free(&d, &tgd); tw_free(&d, &ts); tw_free(&d, &tacc);
    free(x); free(w); free(src);

    /* act-order: columns, rows and columns, and back; F32, U8, I32 */
    const int64_t P = 37;
    int32_t perm[37];
    for (int64_t i = 0; i < P; i++) perm[i] = (int32_t)((i * 11 + 5) % P);
    float *A = xalloc((size_t)(P * P), 4);
    fill_unit(&g, A, (size_t)(P * P), 1.0f);
    static const fs_dtype pd[] = {FS_DT_F32, FS_DT_U8, FS_DT_I32};
    for (int di = 0; di < 3; di++)
        for (int mode = 0; mode < 4; mode++) {
            tw ta = tw_new(&d, A, (uint64_t)(P * P) * fs_dtype_size(pd[di])), tp = tw_new(&d, perm, sizeof perm);
            tw tdst = tw_new(&d, NULL, (uint64_t)(P * P) * fs_dtype_size(pd[di]));
            for (int s = 0; s < 2; s++) {
                fs_permute_args pa = {fs_tensor_2d(ta.b[s], 0, pd[di], P, P), fs_tensor_2d(tdst.b[s], 0, pd[di], P, P),
                                      fs_tensor_2d(tp.b[s], 0, FS_DT_I32, 1, P), mode & 1, mode >> 1};
                DOK(&d, fs_op_permute(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &pa));
            }
            sync2(&d);
            tw_same(&d, &tdst, "permute");
            tw_free(&d, &ta); tw_free(&d, &tp); tw_free(&d, &tdst);
        }
    free(A);
    duo_close(&d);
}
END_TEST

/* ---- attention: MLA head dims, GQA with a window, odd sizes ----------------------------------------- */

typedef struct attn_case { int64_t nseq, T, nh, nkv, dqk, dv, window; } attn_case;

START_TEST(test_v2_attention)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    static const attn_case cases[] = {
        {2, 7, 4, 4, 192, 128, 0},        /* MLA: q/k 128 nope + 64 rope, v 128 */
        {1, 13, 8, 2, 37, 29, 5},         /* GQA, sliding window, odd dims */
    };
    lcg g = {6502};
    for (size_t ci = 0; ci < 2; ci++) {
        const attn_case *c = &cases[ci];
        const int64_t n = c->nseq * c->T, qc = c->nh * c->dqk + 3, kc = c->nkv * c->dqk, vc = c->nkv * c->dv + 1,
                      oc = c->nh * c->dv;
        float *q = xalloc((size_t)(n * qc), 4), *k = xalloc((size_t)(n * kc), 4), *v = xalloc((size_t)(n * vc), 4);
        fill_unit(&g, q, (size_t)(n * qc), 1.0f);
        fill_unit(&g, k, (size_t)(n * kc), 1.0f);
        fill_unit(&g, v, (size_t)(n * vc), 1.0f);
        tw tq = tw_new(&d, q, (uint64_t)(n * qc * 4)), tk = tw_new(&d, k, (uint64_t)(n * kc * 4));
        tw tv = tw_new(&d, v, (uint64_t)(n * vc * 4)), to = tw_new(&d, NULL, (uint64_t)(n * oc * 4));
        tw tl = tw_new(&d, NULL, (uint64_t)(n * oc * 4));
        const float scale = (float)(1.0 / sqrt((double)c->dqk));
        for (int s = 0; s < 2; s++) {
            fs_attn_args aa = {fs_tensor_2d(tq.b[s], 0, FS_DT_F32, n, qc), fs_tensor_2d(tk.b[s], 0, FS_DT_F32, n, kc),
                               fs_tensor_2d(tv.b[s], 0, FS_DT_F32, n, vc), fs_tensor_2d(to.b[s], 0, FS_DT_F32, n, oc),
                               c->nseq, c->T, c->nh, c->nkv, c->dqk, c->dv, c->dqk, c->dqk, c->dv, c->dv, scale,
                               c->window};
            DOK(&d, fs_op_attention(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &aa));
            aa.out = fs_tensor_2d(tl.b[s], 0, FS_DT_F32, n, oc);      /* MLA's op: libm's expf on the cpu */
            DOK(&d, fs_op_attention_libm(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &aa));
        }
        sync2(&d);
        /* scores: dqk-term f32 dots (|q|, |k| <= 1); the softmax's exp and
         * sum; the output a convex mix of |v| <= 1: bound the absolute error */
        const double sb = SUM_BOUND(c->dqk, (double)c->dqk) * scale;
        const double ab = 4.0 * sb + 8.0 * EXP_REL + SUM_BOUND(c->T + 2, 1.0);
        tw_close(&d, &to, NULL, ab, ci ? "attention gqa" : "attention mla");
        tw_close(&d, &tl, NULL, ab, ci ? "attention_libm gqa" : "attention_libm mla");
        tw_free(&d, &tq); tw_free(&d, &tk); tw_free(&d, &tv); tw_free(&d, &to); tw_free(&d, &tl);
        free(q); free(k); free(v);
    }
    duo_close(&d);
}
END_TEST

/* ---- the shared-expert gate: qwen2_moe's (hidden 2048) and odd, strided ------------------------------ */

typedef struct gate_case { int64_t n, d, c, ld; } gate_case;

START_TEST(test_v2_gate_add)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    static const gate_case cases[] = {{5, 2048, 2048, 2048}, {3, 37, 29, 41}};
    lcg g = {31337};
    for (size_t ci = 0; ci < 2; ci++) {
        const gate_case *c = &cases[ci];
        const size_t nx = (size_t)(c->n * c->ld);
        float *x = xalloc(nx, 4), *src = xalloc(nx, 4), *y = xalloc(nx, 4), *gw = xalloc((size_t)c->d, 4);
        fill_unit(&g, x, nx, 2.0f);
        fill_unit(&g, src, nx, 1.5f);
        fill_unit(&g, y, nx, 1.0f);
        fill_unit(&g, gw, (size_t)c->d, 0.1f);
        tw tx = tw_new(&d, x, nx * 4), ts = tw_new(&d, src, nx * 4), ty = tw_new(&d, y, nx * 4);
        tw tg = tw_new(&d, gw, (uint64_t)c->d * 4);
        for (int s = 0; s < 2; s++) {
            fs_gate_add_args ga = {fs_tensor_ld(ty.b[s], 0, FS_DT_F32, c->n, c->c, c->ld),
                                   fs_tensor_ld(ts.b[s], 0, FS_DT_F32, c->n, c->c, c->ld),
                                   fs_tensor_ld(tx.b[s], 0, FS_DT_F32, c->n, c->d, c->ld),
                                   fs_tensor_2d(tg.b[s], 0, FS_DT_F32, 1, c->d)};
            DOK(&d, fs_op_gate_add(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &ga));
        }
        sync2(&d);
        /* each side against the gate in double: the f32 dot (any order) moves
         * z by its sum bound, the sigmoid (slope <= 1/4) passes a quarter of
         * that on, expf and the multiply-add a few roundings */
        double *ref = xalloc(nx, sizeof(double)), *bound = xalloc(nx, sizeof(double));
        for (int64_t r = 0; r < c->n; r++) {
            double z = 0.0, az = 0.0;
            for (int64_t i = 0; i < c->d; i++) {
                z += (double)x[r * c->ld + i] * gw[i];
                az += fabs((double)x[r * c->ld + i] * gw[i]);
            }
            const double sg = 1.0 / (1.0 + exp(-z)), serr = 0.25 * SUM_BOUND(c->d, az) + 8.0 * EXP_REL;
            for (int64_t j = 0; j < c->ld; j++) {
                const size_t k = (size_t)(r * c->ld + j);
                ref[k] = j < c->c ? y[k] + sg * src[k] : y[k];          /* the ld padding stays */
                bound[k] = j < c->c ? fabs(src[k]) * serr + 4.0 * EPS32 * (fabs(y[k]) + fabs(sg * src[k])) : 0.0;
            }
        }
        float *out = xalloc(nx, 4);
        for (int s = 0; s < 2; s++) {
            tw_get(&d, &ty, s, out);
            for (size_t k = 0; k < nx; k++)
                ck_assert_msg(fabs(out[k] - ref[k]) <= bound[k], "gate_add case %zu, %s, element %zu: %.9g vs double %.9g",
                              ci, s ? "device" : "cpu", k, (double)out[k], ref[k]);
        }
        free(out); free(ref); free(bound);
        tw_free(&d, &tx); tw_free(&d, &ts); tw_free(&d, &ty); tw_free(&d, &tg);
        free(x); free(src); free(y); free(gw);
    }
    duo_close(&d);
}
END_TEST

/* ---- routers and row lists -------------------------------------------------------------------------- */

START_TEST(test_v2_route)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    /* DeepSeek-V3: sigmoid, 256 experts in 8 groups, 4 kept, top-8, bias, norm,
     * rsf 2.5; mixtral-like softmax: 60 experts, top-4 */
    static const fs_route_cfg cfgs[] = {
        {FS_ROUTE_DS_SIGMOID, 256, 8, 1, 8, 4, 0, 2.5f},
        {FS_ROUTE_SOFTMAX, 60, 4, 1, 1, 1, 0, 1.0f},
        {FS_ROUTE_DS_SOFTMAX, 64, 6, 0, 8, 3, 1, 16.0f},
    };
    const int64_t n = 6;
    lcg g = {271828};
    for (size_t ci = 0; ci < 3; ci++) {
        const fs_route_cfg *c = &cfgs[ci];
        float *lg = xalloc((size_t)(n * c->E), 4), *bias = xalloc((size_t)c->E, 4);
        fill_unit(&g, lg, (size_t)(n * c->E), 4.0f);        /* well separated: 24-bit spacing, no near-ties */
        fill_unit(&g, bias, (size_t)c->E, 0.1f);
        tw tl = tw_new(&d, lg, (uint64_t)(n * c->E * 4)), tb = tw_new(&d, bias, (uint64_t)(c->E * 4));
        tw ti = tw_new(&d, NULL, (uint64_t)(n * c->topk * 4)), tw_ = tw_new(&d, NULL, (uint64_t)(n * c->topk * 4));
        tw to = tw_new(&d, NULL, (uint64_t)((c->E + 1) * 4)), tr = tw_new(&d, NULL, (uint64_t)(n * c->topk * 4));
        tw trw = tw_new(&d, NULL, (uint64_t)(n * c->topk * 4));
        for (int s = 0; s < 2; s++) {
            fs_route_args ra = {fs_tensor_2d(tl.b[s], 0, FS_DT_F32, n, c->E),
                                c->kind == FS_ROUTE_DS_SIGMOID ? fs_tensor_2d(tb.b[s], 0, FS_DT_F32, 1, c->E) : fs_tensor_none(),
                                fs_tensor_2d(ti.b[s], 0, FS_DT_I32, n, c->topk), fs_tensor_2d(tw_.b[s], 0, FS_DT_F32, n, c->topk),
                                *c};
            DOK(&d, fs_op_route(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &ra));
            fs_lists_args la = {ra.idx, ra.wt, fs_tensor_2d(to.b[s], 0, FS_DT_I32, 1, c->E + 1),
                                fs_tensor_2d(tr.b[s], 0, FS_DT_I32, 1, n * c->topk),
                                fs_tensor_2d(trw.b[s], 0, FS_DT_F32, 1, n * c->topk), c->E};
            DOK(&d, fs_op_route_lists(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &la));
        }
        sync2(&d);
        tw_same(&d, &ti, "route: experts chosen");
        tw_close(&d, &tw_, NULL, 16.0 * EXP_REL * c->rsf, "route: weights");
        tw_same(&d, &to, "route_lists: offsets");
        tw_same(&d, &tr, "route_lists: rows");
        tw_close(&d, &trw, NULL, 16.0 * EXP_REL * c->rsf, "route_lists: weights");
        tw_free(&d, &tl); tw_free(&d, &tb); tw_free(&d, &ti); tw_free(&d, &tw_); tw_free(&d, &to); tw_free(&d, &tr);
        tw_free(&d, &trw);
        free(lg); free(bias);
    }
    duo_close(&d);
}
END_TEST

/* ---- loss and pack ---------------------------------------------------------------------------------- */

START_TEST(test_v2_loss_pack)
{
    duo d;
    if (!duo_open(&d, __func__)) return;
    const int64_t R = 300, C = 96;
    lcg g = {1618};
    float *W = xalloc((size_t)(R * C), 4), *D = xalloc((size_t)(R * C), 4), *H = xalloc((size_t)(C * C), 4);
    fill_unit(&g, W, (size_t)(R * C), 1.0f);
    for (int64_t i = 0; i < R * C; i++) D[i] = W[i] + lcg_unit(&g) * 0.01f;
    make_spd(&g, H, C, 200, 0.01);
    const double ref = quad_loss(W, D, H, R, C);
    tw tW = tw_new(&d, W, (uint64_t)(R * C * 4)), tD = tw_new(&d, D, (uint64_t)(R * C * 4)), tH = tw_new(&d, H, (uint64_t)(C * C * 4));
    for (int mode = 0; mode < 3; mode++) {
        tw tout = tw_new(&d, NULL, 8);
        for (int s = 0; s < 2; s++) {
            fs_loss_args la = {fs_tensor_2d(tW.b[s], 0, FS_DT_F32, R, C), fs_tensor_2d(tD.b[s], 0, FS_DT_F32, R, C),
                               fs_tensor_2d(tH.b[s], 0, FS_DT_F32, C, C), fs_tensor_2d(tout.b[s], 0, FS_DT_F64, 1, 1), mode};
            DOK(&d, fs_op_loss(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &la));
        }
        sync2(&d);
        double lc, lgv;
        tw_get(&d, &tout, 0, &lc);
        tw_get(&d, &tout, 1, &lgv);
        /* EXACT: double sums; F32: one f32 GEMM of C terms; EST: the same on 128 rows */
        const double tol = mode == FS_LOSS_EXACT ? 1e-9 : 1e-4;
        ck_assert_msg(fabs(lc - lgv) <= tol * fabs(ref), "loss mode %d: cpu %.12g device %.12g (reference %.12g)", mode,
                      lc, lgv, ref);
        if (mode != FS_LOSS_EST) ck_assert_msg(fabs(lgv - ref) <= 1e-3 * fabs(ref), "loss mode %d: device %.12g ref %.12g", mode, lgv, ref);
        tw_free(&d, &tout);
    }
    tw_free(&d, &tW); tw_free(&d, &tD); tw_free(&d, &tH);
    free(W); free(D); free(H);

    /* pack: forge rows, gptq qweight, gptq qzeros + scales with and without a zero point 0 */
    const int64_t out = 29, in = 133, ng = 5;
    uint8_t *codes = xalloc((size_t)(out * in), 1), *qm = xalloc((size_t)(out * ng * 4), 1);
    static const int bits[] = {2, 3, 4, 8};
    for (int bi = 0; bi < 4; bi++) {
        const int b = bits[bi];
        for (int64_t i = 0; i < out * in; i++) codes[i] = (uint8_t)(lcg_unit(&g) * 1000.0f + 1000.0f) & ((1 << b) - 1);
        for (int64_t i = 0; i < out * ng; i++) {
            qm[4 * i] = (uint8_t)(i * 37);
            qm[4 * i + 1] = (uint8_t)(0x10 + i % 7);
            qm[4 * i + 2] = (uint8_t)(1 + i % ((1 << b) - 1));
            qm[4 * i + 3] = 0;
        }
        for (int bad = 0; bad <= 1; bad++) {
            if (bad) qm[4 * 17 + 2] = 0;
            tw tc = tw_new(&d, codes, (uint64_t)(out * in)), tq = tw_new(&d, qm, (uint64_t)(out * ng * 4));
            const int64_t rb = (in * b + 7) / 8, qr = (in * b + 31) / 32, zc = (out * b + 31) / 32;
            tw tf = tw_new(&d, NULL, (uint64_t)(out * rb)), tqw = tw_new(&d, NULL, (uint64_t)(qr * out * 4));
            tw tz = tw_new(&d, NULL, (uint64_t)(ng * zc * 4)), tsc = tw_new(&d, NULL, (uint64_t)(ng * out * 2));
            tw tst = tw_new(&d, NULL, 8);
            for (int s = 0; s < 2; s++) {
                fs_pack_args p1 = {FS_PACK_FORGE, b, fs_tensor_2d(tc.b[s], 0, FS_DT_U8, out, in),
                                   fs_tensor_2d(tf.b[s], 0, FS_DT_U8, out, rb), fs_tensor_none(), fs_tensor_none()};
                fs_pack_args p2 = {FS_PACK_GPTQ_QWEIGHT, b, fs_tensor_2d(tc.b[s], 0, FS_DT_U8, out, in),
                                   fs_tensor_2d(tqw.b[s], 0, FS_DT_I32, qr, out), fs_tensor_none(), fs_tensor_none()};
                fs_pack_args p3 = {FS_PACK_GPTQ_META, b, fs_tensor_2d(tq.b[s], 0, FS_DT_U8, out, ng * 4),
                                   fs_tensor_2d(tz.b[s], 0, FS_DT_I32, ng, zc), fs_tensor_2d(tsc.b[s], 0, FS_DT_F16, ng, out),
                                   fs_tensor_2d(tst.b[s], 0, FS_DT_I64, 1, 1)};
                DOK(&d, fs_op_pack(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &p1));
                DOK(&d, fs_op_pack(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &p2));
                DOK(&d, fs_op_pack(&d.ctx, d.be[s], FS_QUEUE_COMPUTE, &p3));
            }
            sync2(&d);
            tw_same(&d, &tf, "pack forge");
            tw_same(&d, &tqw, "pack qweight");
            tw_same(&d, &tsc, "pack scales");
            tw_same(&d, &tst, "pack status");
            if (!bad) tw_same(&d, &tz, "pack qzeros");       /* unspecified after a zero point 0 */
            int64_t st;
            tw_get(&d, &tst, 1, &st);
            ck_assert_msg(bad ? st == 17 + 1 : st == 0, "pack status %lld (bad %d)", (long long)st, bad);
            tw_free(&d, &tc); tw_free(&d, &tq); tw_free(&d, &tf); tw_free(&d, &tqw); tw_free(&d, &tz);
            tw_free(&d, &tsc); tw_free(&d, &tst);
        }
    }
    free(codes);
    free(qm);
    duo_close(&d);
}
END_TEST

/* ---- an op the device cannot run: FS_ERR_NODEV naming it (callers fall back) ------------------------ */

START_TEST(test_v2_nodev)
{
    if (standin()) return;                              /* cuda's limit, not cpu-async's */
    duo d;
    if (!duo_open(&d, __func__)) return;
    const int64_t T = 12001;
    tw t = tw_new(&d, NULL, (uint64_t)(T * 4));
    fs_tensor v = fs_tensor_2d(t.b[1], 0, FS_DT_F32, T, 1);
    fs_attn_args aa = {v, v, v, v, 1, T, 1, 1, 1, 1, 1, 1, 1, 1, 1.0f, 0};
    ck_assert_int_eq(fs_op_attention(&d.ctx, d.be[1], FS_QUEUE_COMPUTE, &aa), FS_ERR_NODEV);
    ck_assert_msg(strstr(d.ctx.errmsg, "attention") && strstr(d.ctx.errmsg, "cuda"), "message: %s", d.ctx.errmsg);
    fs_ctx_clear(&d.ctx);
    tw_free(&d, &t);
    duo_close(&d);
}
END_TEST

/* ---- the start-up self-test (src/backend/selftest.c), on cpu-async: needs no device ----------------- */

/* broken slots: a gemm that writes 0.5 everywhere, a decode that writes nothing */
static fs_status bad_gemm(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gemm_args *a)
{
    return fs_op_fill(ctx, be, q, a->C, 0.5);
}

static fs_status lazy_decode(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_decode_args *a)
{
    (void)ctx; (void)be; (void)q; (void)a;
    return FS_OK;
}

START_TEST(test_selftest)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_backend *be, *ref;
    ck_assert_int_eq(fs_backend_open(&ctx, FS_BE_CPU, NULL, &ref), FS_OK);
    ck_assert_int_eq(fs_backend_open(&ctx, FS_BE_CPU_ASYNC, NULL, &be), FS_OK);
    const double t0 = fs_now();
    ck_assert_msg(fs_backend_selftest(&ctx, be, ref) == FS_OK, "a correct backend failed: %s", ctx.errmsg);
    printf("check_cuda: self-test on cpu-async: %.1f ms\n", (fs_now() - t0) * 1e3);
    be->iface.gemm = bad_gemm;
    ck_assert_int_eq(fs_backend_selftest(&ctx, be, ref), FS_ERR_CUDA);
    ck_assert_msg(strstr(ctx.errmsg, "gemm (F32)") != NULL, "message: %s", ctx.errmsg);
    fs_backend_free(be);
    fs_ctx_clear(&ctx);
    ck_assert_int_eq(fs_backend_open(&ctx, FS_BE_CPU_ASYNC, NULL, &be), FS_OK);
    be->iface.decode = lazy_decode;
    ck_assert_int_eq(fs_backend_selftest(&ctx, be, ref), FS_ERR_CUDA);
    ck_assert_msg(strstr(ctx.errmsg, "decode") != NULL, "message: %s", ctx.errmsg);
    fs_backend_free(be);
    fs_backend_free(ref);
}
END_TEST

Suite *fs_suite_cuda(void)
{
    /* no CUDA call here: the suites are built in the parent before any fork */
    Suite *s = suite_create("cuda");
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
    tc = tcase_create("v2");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_v2_queues);
    tcase_add_test(tc, test_v2_gemm);
    tcase_add_test(tc, test_v2_hessian);
    tcase_add_test(tc, test_v2_cholinv);
    tcase_add_test(tc, test_v2_quant);
    tcase_add_test(tc, test_v2_decode);
    tcase_add_test(tc, test_v2_elementwise);
    tcase_add_test(tc, test_v2_rope);
    tcase_add_test(tc, test_v2_gather_permute);
    tcase_add_test(tc, test_v2_attention);
    tcase_add_test(tc, test_v2_gate_add);
    tcase_add_test(tc, test_v2_route);
    tcase_add_test(tc, test_v2_loss_pack);
    tcase_add_test(tc, test_v2_nodev);
    suite_add_tcase(s, tc);
    tc = tcase_create("selftest");
    tcase_add_test(tc, test_selftest);
    suite_add_tcase(s, tc);
    return s;
}
