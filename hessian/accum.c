/* accum.c: a Hessian from a matrix of inputs, through the backend's v1
 * slots, in chunks as the pipeline feeds them (the CPU accumulation itself is
 * cpu/hessian.c). */
#include "hessian/hessian.h"

fs_status fs_hess_from_inputs(fs_ctx *ctx, fs_backend *be, const float *X, int64_t n,
                              int64_t in, int64_t chunk, float *H)
{
    void *st = NULL;
    fs_status rc = fs_be_hess_new(ctx, be, in, &st);
    for (int64_t r = 0; rc == FS_OK && r < n; r += chunk)
        rc = fs_be_hess_add(ctx, be, st, X + r * in, n - r < chunk ? n - r : chunk);
    if (rc == FS_OK) rc = fs_be_hess_get(ctx, be, st, H);
    fs_be_hess_free(be, st);
    return rc;
}
