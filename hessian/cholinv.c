/* cholinv.c: dead columns, damping and the inverse Cholesky factor.
 *
 * GPTQ needs U, the upper Cholesky factor of H^-1 (U^T U = H^-1).  On the CPU:
 * potrf, potri, potrf again (LAPACKE).  A row-major symmetric matrix is its own
 * column-major transpose, so the calls run column-major on the 'L' triangle,
 * which is the row-major upper triangle: no copies, no transposes.
 * The retry policy (damping x10) is backend-neutral and lives here too. */
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hessian.h"

#define FS_DAMP_RESTART 1e-4   /* first retry damping when --damp 0 failed */

fs_status fs_chol_inv_cpu(fs_ctx *ctx, fs_backend *be, float *A, int64_t n)
{
    (void)be;
    lapack_int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    if (info > 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC,
                          "cholesky: H is not positive definite (leading minor %d)", (int)info);
    if (info == 0) info = LAPACKE_spotri(LAPACK_COL_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    if (info > 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is singular (pivot %d)", (int)info);
    if (info == 0) info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)n, A, (lapack_int)n);
    if (info > 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC,
                          "cholesky: H^-1 is not positive definite (leading minor %d)",
                          (int)info);
    if (info < 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: LAPACK argument %d", (int)-info);
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
