/* cholinv.c: dead columns, damping and the inverse Cholesky factor.
 *
 * GPTQ needs U, the upper Cholesky factor of H^-1 (U^T U = H^-1).  With J the
 * order reversal, factor the reversed matrix J H J = L L^T; then
 * H^-1 = J L^-T L^-1 J = U^T U for U = J L^-1 J, upper triangular with a
 * positive diagonal, so it is the factor (unique).  One potrf and one trtri:
 * two thirds of n^3 flops where potrf, potri, potrf takes four thirds.
 * Reversing a row-major n x n matrix in both orders is reversing its flat
 * array; and a row-major symmetric matrix is its own column-major transpose,
 * so LAPACK runs column-major on its 'U' triangle, which holds the row-major
 * lower one: no transposes.  The retry policy (damping x10) is
 * backend-neutral and lives here too. */
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hessian/hessian.h"

#define FS_DAMP_RESTART 1e-4   /* first retry damping when --damp 0 failed */

static void reverse(float *a, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n / 2; i++) {
        float t = a[i];
        a[i] = a[n - 1 - i];
        a[n - 1 - i] = t;
    }
}

fs_status fs_chol_inv_cpu(fs_ctx *ctx, fs_backend *be, float *A, int64_t n)
{
    (void)be;
    const size_t nn = (size_t)n * (size_t)n;
    reverse(A, nn);                                   /* J H J */
    /* column-major 'U' = the row-major lower triangle: there R^T = L, J H J = L L^T */
    lapack_int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', (lapack_int)n, A, (lapack_int)n);
    if (info > 0)                                     /* pivot info of the reversed order */
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is not positive definite (its trailing minor from "
                          "column %d)", (int)(n - info));
    if (info == 0) info = LAPACKE_strtri(LAPACK_COL_MAJOR, 'U', 'N', (lapack_int)n, A, (lapack_int)n);
    if (info > 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is singular (pivot at column %d)", (int)(n - info));
    if (info < 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: LAPACK argument %d", (int)-info);
    reverse(A, nn);                                   /* L^-1 (row-major lower) -> U = J L^-1 J (upper) */
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < i; j++) A[i * n + j] = 0.0f;
        for (int64_t j = i; j < n; j++)
            if (!isfinite(A[i * n + j]))
                return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: non-finite factor at (%lld, %lld)",
                                  (long long)i, (long long)j);
    }
    return FS_OK;
}

int64_t fs_hess_dead_fix(float *H, float *W, int64_t rows, int64_t in)
{
    int64_t dead = 0;
    for (int64_t d = 0; d < in; d++) {
        if (H[d * in + d] != 0.0f) continue;
        H[d * in + d] = 1.0f;
        if (W)
            for (int64_t r = 0; r < rows; r++) W[r * in + d] = 0.0f;
        dead++;
    }
    return dead;
}

fs_status fs_hess_invert(fs_ctx *ctx, fs_backend *be, const float *H, int64_t n, double damp,
                         int max_retries, float *U, double *damp_used, int *retries)
{
    double mean = 0.0;
    for (int64_t i = 0; i < n; i++) mean += H[i * n + i];
    mean /= (double)n;
    *retries = 0;
    for (int attempt = 0;; attempt++) {
        const float add = (float)(damp * mean);
        memcpy(U, H, sizeof(float) * (size_t)n * (size_t)n);
        for (int64_t i = 0; i < n; i++) U[i * n + i] += add;
        *damp_used = damp;
        fs_status rc = fs_be_chol_inv(ctx, be, U, n);
        if (rc != FS_ERR_NUMERIC) return rc;
        if (attempt == max_retries) return rc;
        /* x10; a zero damping cannot grow, so it restarts at FS_DAMP_RESTART */
        double next = damp > 0.0 ? damp * 10.0 : FS_DAMP_RESTART;
        fs_log(ctx, "warning: %s with damp %g; retrying with damp %g", ctx->errmsg, damp, next);
        fs_ctx_clear(ctx);
        damp = next;
        (*retries)++;
    }
}
