/* backend.c: opens a backend and dispatches through its table, skipping NULL
 * optional slots.  Callers never see CUDA headers. */
#include <stdlib.h>

#include "src/backend/backend-impl.h"

int fs_backend_cuda_devices(void)
{
#ifdef FS_HAVE_CUDA
    return fs_cuda_device_count();
#else
    return 0;
#endif
}

fs_status fs_backend_open(fs_ctx *ctx, fs_backend_kind kind, fs_backend **out)
{
    *out = NULL;
    if (kind == FS_BE_CPU) return fs_backend_cpu_new(ctx, out);
#ifdef FS_HAVE_CUDA
    if (fs_cuda_device_count() > 0) return fs_backend_cuda_new(ctx, out);
    if (kind == FS_BE_CUDA)
        return fs_ctx_err(ctx, FS_ERR_NODEV, "--backend cuda: no CUDA device is present");
#else
    if (kind == FS_BE_CUDA)
        return fs_ctx_err(ctx, FS_ERR_NODEV,
                          "--backend cuda: this build has no CUDA support (nvcc was not found "
                          "at build time; rebuild with CUDA=1)");
#endif
    return fs_backend_cpu_new(ctx, out);
}

void fs_backend_free(fs_backend *be)
{
    if (be) be->iface.free(be);
}

const char *fs_backend_name(fs_backend *be)
{
    return be->iface.name(be);
}

fs_status fs_be_hess_new(fs_ctx *ctx, fs_backend *be, int64_t in, void **state)
{
    return be->iface.hess_new(ctx, be, in, state);
}

fs_status fs_be_hess_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x, int64_t rows)
{
    return be->iface.hess_add(ctx, be, state, x, rows);
}

fs_status fs_be_hess_get(fs_ctx *ctx, fs_backend *be, void *state, float *H)
{
    fs_status rc = be->iface.hess_get(ctx, be, state, H);
    if (rc == FS_OK && be->iface.synchronize) rc = be->iface.synchronize(ctx, be);
    return rc;
}

void fs_be_hess_free(fs_backend *be, void *state)
{
    if (state) be->iface.hess_free(be, state);
}

fs_status fs_be_chol_inv(fs_ctx *ctx, fs_backend *be, float *A, int64_t n)
{
    return be->iface.chol_inv(ctx, be, A, n);
}

fs_status fs_be_grid(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                     int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta)
{
    return be->iface.grid(ctx, be, gp, W, rows, cols, gw, qmeta);
}

fs_status fs_be_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job)
{
    return be->iface.gptq(ctx, be, job);
}
