/* backend-cpu.c: the CPU backend, the reference every other backend is
 * tested against: OpenBLAS (ssyrk, sgemm), LAPACKE (potrf, potri) and the
 * grid and solver code of src/grid.c and src/gptq.c.  Stateless. */
#include <stdlib.h>

#include "src/backend/backend-impl.h"
#include "hessian/hessian.h"

static const char *cpu_name(fs_backend *be)
{
    (void)be;
    return "cpu";
}

static void cpu_free(fs_backend *be)
{
    free(be);
}

static fs_status cpu_grid(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                          int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta)
{
    (void)ctx; (void)be;
    fs_grid_matrix(gp, W, rows, cols, gw, qmeta);
    return FS_OK;
}

static fs_status cpu_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job)
{
    (void)be;
    return fs_gptq_cpu(ctx, job);
}

static const struct fs_backend_i cpu_iface = {
    /* .name        = */ cpu_name,
    /* .free        = */ cpu_free,
    /* .hess_new    = */ fs_hess_cpu_new,
    /* .hess_add    = */ fs_hess_cpu_add,
    /* .hess_get    = */ fs_hess_cpu_get,
    /* .hess_free   = */ fs_hess_cpu_free,
    /* .chol_inv    = */ fs_chol_inv_cpu,
    /* .grid        = */ cpu_grid,
    /* .gptq        = */ cpu_gptq,
    /* .synchronize = */ NULL,
};

fs_status fs_backend_cpu_new(fs_ctx *ctx, fs_backend **out)
{
    fs_backend *be = calloc(1, sizeof *be);
    if (!be) return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu backend");
    be->iface = cpu_iface;
    *out = be;
    return FS_OK;
}
