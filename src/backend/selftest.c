/* selftest.c: the start-up self-test `--backend auto` runs before it trusts a
 * device backend (specifications.md §15): a few small ops (an upload through
 * staging memory and back, gemm in F32 and BF16, a Hessian sum and its
 * mirror, the Cholesky factor of its inverse, a grid, an F8 block-scaled
 * decode) on the device and on the cpu backend, compared.  Milliseconds on a
 * working device; a wrong result or an error names the step.
 *
 * Invariants:
 *  1. Only the backend interface is used (no CUDA here): any backend can be
 *     tested, and tests/check_cuda.c tests this file on cpu-async with a
 *     deliberately broken slot.
 *  2. Inputs come from a fixed LCG; bounds come from the inputs (k * eps of
 *     the sum of |terms|), bytes where both backends must agree exactly
 *     (grids, decode).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend/backend-impl.h"

#define ST_EPS 1.1920929e-07

typedef struct st_side {
    fs_backend *be;
    fs_buf *b[8];
    int nb;
} st_side;

typedef struct st {
    fs_ctx *ctx;          /* where the verdict goes */
    fs_ctx lc;            /* the backends' own errors */
    st_side s[2];         /* 0: cpu, 1: the device */
    uint64_t seed;
} st;

static float st_unit(st *t)
{
    t->seed = t->seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(t->seed >> 40) / 8388608.0 - 1.0);
}

static fs_status st_fail(st *t, const char *step, const char *why)
{
    return fs_ctx_err(t->ctx, FS_ERR_CUDA, "self-test of %s: %s: %s", fs_backend_name(t->s[1].be), step, why);
}

/* A buffer with the same bytes on both sides (index in s[k].b returned). */
static fs_status st_buf(st *t, const char *step, const void *host, uint64_t bytes, int *idx)
{
    for (int k = 0; k < 2; k++) {
        st_side *sd = &t->s[k];
        if (fs_be_alloc(&t->lc, sd->be, bytes, "self-test", &sd->b[sd->nb]) != FS_OK) return st_fail(t, step, t->lc.errmsg);
        if (fs_be_upload(&t->lc, sd->be, FS_QUEUE_COMPUTE, sd->b[sd->nb], 0, host, bytes) != FS_OK ||
            fs_be_sync(&t->lc, sd->be, FS_QUEUE_COMPUTE) != FS_OK)
            return st_fail(t, step, t->lc.errmsg);
        *idx = sd->nb++;
    }
    return FS_OK;
}

static fs_status st_get(st *t, const char *step, int k, int idx, void *host, uint64_t bytes)
{
    if (fs_be_download(&t->lc, t->s[k].be, FS_QUEUE_DOWNLOAD, host, t->s[k].b[idx], 0, bytes) != FS_OK ||
        fs_be_sync(&t->lc, t->s[k].be, FS_QUEUE_DOWNLOAD) != FS_OK)
        return st_fail(t, step, t->lc.errmsg);
    return FS_OK;
}

static void st_release(st *t)
{
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < t->s[k].nb; i++) fs_be_free(t->s[k].be, t->s[k].b[i]);
        t->s[k].nb = 0;
    }
}

#define ST_TRY(expr) do { fs_status st_rc_ = (expr); if (st_rc_ != FS_OK) return st_rc_; } while (0)
/* an op on both sides, then both compute queues synced */
#define ST_BOTH(t, step, call)                                                              \
    do {                                                                                    \
        for (int k_ = 0; k_ < 2; k_++) {                                                    \
            fs_backend *be_ = (t)->s[k_].be;                                                \
            st_side *sd_ = &(t)->s[k_];                                                     \
            (void)sd_;                                                                      \
            if ((call) != FS_OK || fs_be_sync(&(t)->lc, be_, FS_QUEUE_COMPUTE) != FS_OK)    \
                return st_fail((t), (step), (t)->lc.errmsg);                                \
        }                                                                                   \
    } while (0)
#define B(i) (sd_->b[i])

/* the staging round trip: host -> device -> host */
static fs_status st_copy(st *t)
{
    const uint64_t n = 3 * 4096 + 8;
    uint8_t *h = NULL, *back = malloc(n);
    fs_status rc = FS_OK;
    if (!back || fs_be_host_alloc(&t->lc, t->s[1].be, n, (void **)&h) != FS_OK)
        rc = st_fail(t, "staging memory", back ? t->lc.errmsg : "out of memory");
    if (rc == FS_OK && ((uintptr_t)h & 4095) != 0) rc = st_fail(t, "staging memory", "not 4096-aligned");
    int idx = 0;
    if (rc == FS_OK) {
        for (uint64_t i = 0; i < n; i++) h[i] = (uint8_t)(i * 131 + 7);
        rc = st_buf(t, "upload", h, n, &idx);
    }
    if (rc == FS_OK) rc = st_get(t, "download", 1, idx, back, n);
    if (rc == FS_OK && memcmp(h, back, n) != 0) rc = st_fail(t, "upload and download", "the bytes came back changed");
    fs_be_host_free(t->s[1].be, h);
    free(back);
    return rc;
}

/* |cpu - dev| <= k * eps * bound[i] * 4 for n floats of buffer idx */
static fs_status st_close(st *t, const char *step, int idx, const double *absum, int64_t n, double k)
{
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    fs_status rc = a && b ? FS_OK : st_fail(t, step, "out of memory");
    if (rc == FS_OK) rc = st_get(t, step, 0, idx, a, sizeof(float) * (uint64_t)n);
    if (rc == FS_OK) rc = st_get(t, step, 1, idx, b, sizeof(float) * (uint64_t)n);
    for (int64_t i = 0; rc == FS_OK && i < n; i++)
        if (!(fabs((double)a[i] - (double)b[i]) <= 4.0 * k * ST_EPS * absum[i] + 1e-30)) {
            char why[160];
            snprintf(why, sizeof why, "element %lld: cpu %.9g, device %.9g", (long long)i, (double)a[i], (double)b[i]);
            rc = st_fail(t, step, why);
        }
    free(a);
    free(b);
    return rc;
}

static fs_status st_same(st *t, const char *step, int idx, uint64_t bytes)
{
    uint8_t *a = malloc((size_t)bytes), *b = malloc((size_t)bytes);
    fs_status rc = a && b ? FS_OK : st_fail(t, step, "out of memory");
    if (rc == FS_OK) rc = st_get(t, step, 0, idx, a, bytes);
    if (rc == FS_OK) rc = st_get(t, step, 1, idx, b, bytes);
    if (rc == FS_OK && memcmp(a, b, (size_t)bytes) != 0) rc = st_fail(t, step, "bytes differ from the cpu backend's");
    free(a);
    free(b);
    return rc;
}

/* C [8, 16] = A [8, 64] B^T, B [16, 64], F32 then BF16 */
static fs_status st_gemm(st *t, fs_dtype dt)
{
    enum { M = 8, K = 64, N = 16 };
    float A[M * K], Bm[N * K], C[M * N];
    uint16_t Ah[M * K], Bh[N * K];
    double absum[M * N];
    for (int i = 0; i < M * K; i++) { A[i] = st_unit(t); Ah[i] = fs_f32_to_bf16(A[i]); if (dt == FS_DT_BF16) A[i] = fs_bf16_to_f32(Ah[i]); }
    for (int i = 0; i < N * K; i++) { Bm[i] = st_unit(t); Bh[i] = fs_f32_to_bf16(Bm[i]); if (dt == FS_DT_BF16) Bm[i] = fs_bf16_to_f32(Bh[i]); }
    memset(C, 0, sizeof C);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int x = 0; x < K; x++) s += fabs((double)A[i * K + x] * Bm[j * K + x]);
            absum[i * N + j] = s;
        }
    const char *step = dt == FS_DT_BF16 ? "gemm (BF16)" : "gemm (F32)";
    int ia, ib, ic;
    const size_t es = fs_dtype_size(dt);
    ST_TRY(st_buf(t, step, dt == FS_DT_BF16 ? (const void *)Ah : (const void *)A, M * K * es, &ia));
    ST_TRY(st_buf(t, step, dt == FS_DT_BF16 ? (const void *)Bh : (const void *)Bm, N * K * es, &ib));
    ST_TRY(st_buf(t, step, C, sizeof C, &ic));
    ST_BOTH(t, step, fs_op_gemm(&t->lc, be_, FS_QUEUE_COMPUTE, &(fs_gemm_args){
        fs_tensor_2d(B(ia), 0, dt, M, K), fs_tensor_2d(B(ib), 0, dt, N, K), fs_tensor_2d(B(ic), 0, FS_DT_F32, M, N),
        1, 1.0f, 0.0f}));
    return st_close(t, step, ic, absum, M * N, K);
}

/* H = X^T X [48, 48] + I, mirrored; then its inverse factor and a grid of it */
static fs_status st_hessian(st *t)
{
    enum { R = 64, D = 48 };
    float X[R * D], H[D * D];
    double absum[D * D];
    for (int i = 0; i < R * D; i++) X[i] = st_unit(t);
    for (int i = 0; i < D * D; i++) H[i] = i % (D + 1) == 0 ? (float)R : 0.0f;     /* R * I: well conditioned */
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double s = fabs(H[i * D + j]);
            for (int r = 0; r < R; r++) s += fabs((double)X[r * D + i] * X[r * D + j]);
            absum[i * D + j] = s;
        }
    int ix, ih, is;
    int32_t status[1] = {-1};
    ST_TRY(st_buf(t, "hess_acc", X, sizeof X, &ix));
    ST_TRY(st_buf(t, "hess_acc", H, sizeof H, &ih));
    ST_TRY(st_buf(t, "cholinv", status, sizeof status, &is));
    ST_BOTH(t, "hess_acc", fs_op_hess_acc(&t->lc, be_, FS_QUEUE_COMPUTE, fs_tensor_2d(B(ih), 0, FS_DT_F32, D, D),
                                          fs_tensor_2d(B(ix), 0, FS_DT_F32, R, D)));
    ST_BOTH(t, "hess_finish", fs_op_hess_finish(&t->lc, be_, FS_QUEUE_COMPUTE, fs_tensor_2d(B(ih), 0, FS_DT_F32, D, D), 1));
    ST_TRY(st_close(t, "hess_acc", ih, absum, D * D, R + 1));
    /* the same H on both sides for the factor: the cpu's */
    ST_TRY(st_get(t, "hess_acc", 0, ih, H, sizeof H));
    for (int k = 0; k < 2; k++)
        if (fs_be_upload(&t->lc, t->s[k].be, FS_QUEUE_COMPUTE, t->s[k].b[ih], 0, H, sizeof H) != FS_OK)
            return st_fail(t, "cholinv", t->lc.errmsg);
    ST_BOTH(t, "cholinv", fs_op_cholinv(&t->lc, be_, FS_QUEUE_COMPUTE, &(fs_cholinv_args){
        fs_tensor_2d(B(ih), 0, FS_DT_F32, D, D), fs_tensor_2d(B(is), 0, FS_DT_I32, 1, 1), 1}));
    int32_t sc = -1, sd = -1;
    ST_TRY(st_get(t, "cholinv", 0, is, &sc, 4));
    ST_TRY(st_get(t, "cholinv", 1, is, &sd, 4));
    if (sc != 0 || sd != 0) {
        char why[96];
        snprintf(why, sizeof why, "status %d (cpu %d) for a positive definite matrix", (int)sd, (int)sc);
        return st_fail(t, "cholinv", why);
    }
    /* U of a matrix with condition ~ 4: 1e-4 of max |U| is far above rounding */
    float Uc[D * D], Ud[D * D];
    ST_TRY(st_get(t, "cholinv", 0, ih, Uc, sizeof Uc));
    ST_TRY(st_get(t, "cholinv", 1, ih, Ud, sizeof Ud));
    double mx = 0.0;
    for (int i = 0; i < D * D; i++) mx = fabs(Uc[i]) > mx ? fabs(Uc[i]) : mx;
    for (int i = 0; i < D * D; i++)
        if (!(fabs((double)Uc[i] - (double)Ud[i]) <= 1e-4 * mx)) {
            char why[128];
            snprintf(why, sizeof why, "entry %d: cpu %.9g, device %.9g", i, (double)Uc[i], (double)Ud[i]);
            return st_fail(t, "cholinv", why);
        }
    return FS_OK;
}

/* 4-bit MSE grids of X [64, 48] in groups of 16: identical bytes */
static fs_status st_grid(st *t)
{
    enum { R = 64, D = 48, G = 16 };
    float W[R * D];
    uint8_t q[R * (D / G) * 4];
    for (int i = 0; i < R * D; i++) W[i] = st_unit(t) * (1.0f + (float)(i % 7));
    memset(q, 0, sizeof q);
    fs_quant_opts qo;
    fs_quant_opts_default(&qo);
    qo.bits = 4;
    qo.sym = 0;
    qo.group_size = G;
    qo.grid = FS_GRID_MSE;
    fs_grid_params gp;
    if (fs_grid_params_init(&t->lc, &gp, &qo) != FS_OK) return st_fail(t, "grid", t->lc.errmsg);
    int iw, iq;
    fs_status rc = st_buf(t, "grid", W, sizeof W, &iw);
    if (rc == FS_OK) rc = st_buf(t, "grid", q, sizeof q, &iq);
    for (int k = 0; rc == FS_OK && k < 2; k++) {
        fs_grid_args ga = {fs_tensor_2d(t->s[k].b[iw], 0, FS_DT_F32, R, D),
                           fs_tensor_2d(t->s[k].b[iq], 0, FS_DT_U8, R, (D / G) * 4), G, &gp};
        if (fs_op_grid(&t->lc, t->s[k].be, FS_QUEUE_COMPUTE, &ga) != FS_OK ||
            fs_be_sync(&t->lc, t->s[k].be, FS_QUEUE_COMPUTE) != FS_OK)
            rc = st_fail(t, "grid", t->lc.errmsg);
    }
    fs_grid_params_free(&gp);
    if (rc == FS_OK) rc = st_same(t, "grid", iq, sizeof q);
    return rc;
}

/* F8_E4M3 [40, 200] with 128 x 128 block scales: identical floats and status */
static fs_status st_decode(st *t)
{
    enum { R = 40, C = 200 };
    uint8_t f8[R * C];
    float sc[2] = {0.5f, 0.0078125f}, out[R * C];
    int64_t status = -1;
    for (int i = 0; i < R * C; i++) {
        f8[i] = (uint8_t)(st_unit(t) * 127.0f + 128.0f);
        if ((f8[i] & 0x7f) == 0x7f) f8[i] = 0x40;                 /* no NaN */
    }
    memset(out, 0, sizeof out);
    int is, isc, io, ist;
    ST_TRY(st_buf(t, "decode", f8, sizeof f8, &is));
    ST_TRY(st_buf(t, "decode", sc, sizeof sc, &isc));
    ST_TRY(st_buf(t, "decode", out, sizeof out, &io));
    ST_TRY(st_buf(t, "decode", &status, sizeof status, &ist));
    ST_BOTH(t, "decode", fs_op_decode(&t->lc, be_, FS_QUEUE_COMPUTE, &(fs_decode_args){
        fs_tensor_2d(B(is), 0, FS_DT_F8_E4M3, R, C), fs_tensor_2d(B(isc), 0, FS_DT_F32, 1, 2),
        fs_tensor_2d(B(io), 0, FS_DT_F32, R, C), fs_tensor_2d(B(ist), 0, FS_DT_I64, 1, 1), 128, 128}));
    ST_TRY(st_same(t, "decode", io, sizeof out));
    return st_same(t, "decode status", ist, sizeof status);
}

fs_status fs_backend_selftest(fs_ctx *ctx, fs_backend *dev, fs_backend *ref)
{
    st t;
    memset(&t, 0, sizeof t);
    t.ctx = ctx;
    fs_ctx_init(&t.lc);
    t.lc.quiet = 1;
    t.seed = 0x5e1f7e57ull;
    t.s[1].be = dev;
    t.s[0].be = ref;
    fs_status rc = st_copy(&t);
    st_release(&t);
    if (rc == FS_OK) rc = st_gemm(&t, FS_DT_F32);
    st_release(&t);
    if (rc == FS_OK) rc = st_gemm(&t, FS_DT_BF16);
    st_release(&t);
    if (rc == FS_OK) rc = st_hessian(&t);
    st_release(&t);
    if (rc == FS_OK) rc = st_grid(&t);
    st_release(&t);
    if (rc == FS_OK) rc = st_decode(&t);
    st_release(&t);
    return rc;
}
