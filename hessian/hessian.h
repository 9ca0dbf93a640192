/* hessian.h: Hessian accumulation (H = sum X^T X) through a backend, the
 * dead-column fix, damping and the Cholesky inversion with its retry policy
 * (the CPU slots themselves are in cpu/cpu.h). */
#ifndef FS_HESSIAN_H
#define FS_HESSIAN_H

#include "src/backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Builds H [in, in] from inputs X [n, in] through the backend in chunks of
 * `chunk` rows (the pipeline feeds chunks the same way). */
fs_status fs_hess_from_inputs(fs_ctx *ctx, fs_backend *be, const float *X, int64_t n,
                              int64_t in, int64_t chunk, float *H);

/* Dead columns (diag(H) == 0): H[d,d] = 1 and W[:,d] = 0, in place.
 * Returns how many. Cannot fail. */
int64_t fs_hess_dead_fix(float *H, float *W, int64_t rows, int64_t in);

/* Damps a copy of H (+ damp * mean(diag H) * I) and inverts it through the
 * backend into U (upper factor of the inverse).  Not positive definite: retry
 * with damp x10, at most `max_retries` times, each logged.  FS_ERR_NUMERIC when
 * every try failed (then U is garbage); *damp_used and *retries say what was
 * tried last. */
fs_status fs_hess_invert(fs_ctx *ctx, fs_backend *be, const float *H, int64_t n, double damp,
                         int max_retries, float *U, double *damp_used, int *retries);

/* The damping of the retry after `damp` failed: x10; a zero damping cannot
 * grow, so it restarts at 1e-4.  Cannot fail. */
double fs_hess_damp_next(double damp);

#ifdef __cplusplus
}
#endif

#endif
