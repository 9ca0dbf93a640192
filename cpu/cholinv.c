/* cholinv.c: the inverse Cholesky factor on the CPU (LAPACKE).
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
 * backend-neutral and lives in hessian/cholinv.c.
 *
 * One core (factor) serves the v1 slot, which reports a failure as
 * FS_ERR_NUMERIC naming the column, and the op, which writes the column + 1
 * into its status vector so that the caller's retry can read it. */
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>

#include "cpu/cpu.h"

enum { CH_OK = 0, CH_NOT_PD, CH_SINGULAR, CH_ARG, CH_NONFINITE };

static void reverse(float *a, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n / 2; i++) {
        float t = a[i];
        a[i] = a[n - 1 - i];
        a[n - 1 - i] = t;
    }
}

/* A [n, n] contiguous -> U in place.  Returns CH_*; *col the failing column
 * of A (CH_NONFINITE: *col the column, *row the row of the entry; CH_ARG: the
 * LAPACK argument). */
static int factor(float *A, int64_t n, int64_t *row, int64_t *col)
{
    const size_t nn = (size_t)n * (size_t)n;
    reverse(A, nn);                                   /* J H J */
    /* column-major 'U' = the row-major lower triangle: there R^T = L, J H J = L L^T */
    lapack_int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', (lapack_int)n, A, (lapack_int)n);
    if (info > 0) { *col = n - info; return CH_NOT_PD; }    /* pivot info of the reversed order */
    if (info == 0) info = LAPACKE_strtri(LAPACK_COL_MAJOR, 'U', 'N', (lapack_int)n, A, (lapack_int)n);
    if (info > 0) { *col = n - info; return CH_SINGULAR; }
    if (info < 0) { *col = -info; return CH_ARG; }
    reverse(A, nn);                                   /* L^-1 (row-major lower) -> U = J L^-1 J (upper) */
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < i; j++) A[i * n + j] = 0.0f;
        for (int64_t j = i; j < n; j++)
            if (!isfinite(A[i * n + j])) { *row = i; *col = j; return CH_NONFINITE; }
    }
    return CH_OK;
}

fs_status fs_chol_inv_cpu(fs_ctx *ctx, fs_backend *be, float *A, int64_t n)
{
    (void)be;
    int64_t row = 0, col = 0;
    switch (factor(A, n, &row, &col)) {
    case CH_NOT_PD:
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is not positive definite (its trailing minor from "
                          "column %d)", (int)col);
    case CH_SINGULAR:
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is singular (pivot at column %d)", (int)col);
    case CH_ARG:
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: LAPACK argument %d", (int)col);
    case CH_NONFINITE:
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: non-finite factor at (%lld, %lld)", (long long)row,
                          (long long)col);
    }
    return FS_OK;
}

fs_status fs_cpu_op_cholinv(fs_ctx *ctx, const fs_cholinv_args *a)
{
    const int64_t n = a->A.cols;
    for (int64_t m = 0; m < a->count; m++) {
        int64_t row = 0, col = 0;
        int k = factor((float *)fs_cpu_at(&a->A, m * n, 0), n, &row, &col);
        if (k == CH_ARG)
            return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholinv: matrix %lld: LAPACK argument %d", (long long)m, (int)col);
        *(int32_t *)fs_cpu_at(&a->status, 0, m) = k == CH_OK ? 0 : (int32_t)(col + 1);
    }
    return FS_OK;
}
