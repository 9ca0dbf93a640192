/* cholinv.c: dead columns, damping and the inversion with its retry policy
 * (backend-neutral; the CPU factorisation itself is cpu/cholinv.c). */
#include <string.h>

#include "hessian/hessian.h"

#define FS_DAMP_RESTART 1e-4   /* first retry damping when --damp 0 failed */

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

double fs_hess_damp_next(double damp)
{
    return damp > 0.0 ? damp * 10.0 : FS_DAMP_RESTART;
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
        double next = fs_hess_damp_next(damp);
        fs_log(ctx, "warning: %s with damp %g; retrying with damp %g", ctx->errmsg, damp, next);
        fs_ctx_clear(ctx);
        damp = next;
        (*retries)++;
    }
}
