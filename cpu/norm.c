/* norm.c: RMSNorm on the CPU (ARCHITECTURES.md §2.1): per row, the sum of
 * squares in F32 in index order, then w * (x * inv); the op and the forward
 * of today share it.  Rows run on OpenMP threads (each row's arithmetic does
 * not depend on the split). */
#include <math.h>

#include "cpu/cpu.h"

void fs_cpu_rmsnorm(const float *x, int64_t ldx, const float *w, int64_t n, int64_t d, float eps, float *out,
                    int64_t ldo)
{
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * ldx;
        float *o = out + r * ldo;
        float ss = 0.0f;
        for (int64_t i = 0; i < d; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)d + eps);
        for (int64_t i = 0; i < d; i++) o[i] = w[i] * (xr[i] * inv);
    }
}

fs_status fs_cpu_op_rmsnorm(fs_ctx *ctx, const fs_rmsnorm_args *a)
{
    (void)ctx;
    fs_cpu_rmsnorm(FS_CPU_F32(a->x), a->x.ld, FS_CPU_F32(a->w), a->x.rows, a->x.cols, a->eps, FS_CPU_F32(a->out),
                   a->out.ld);
    return FS_OK;
}
