/* gather.c: gather of routed rows and the weighted scatter-add of expert
 * outputs on the CPU.  The scatter-add runs its rows in order on one thread
 * (a destination row may repeat), so its sums are deterministic: dst row
 * += w * src row, element by element, exactly as fs_moe_ffn combines. */
#include <string.h>

#include "cpu/cpu.h"

fs_status fs_cpu_op_gather(fs_ctx *ctx, const fs_gather_args *a)
{
    const int32_t *rows = (const int32_t *)fs_cpu_at(&a->rows, 0, 0);
    const size_t bytes = (size_t)a->dst.cols * fs_dtype_size(a->dst.dt);
    for (int64_t r = 0; r < a->dst.rows; r++)
        if (rows[r] < 0 || rows[r] >= a->src.rows)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "gather: row %d at entry %lld is outside the source's %lld rows",
                              (int)rows[r], (long long)r, (long long)a->src.rows);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a->dst.rows; r++) memcpy(fs_cpu_at(&a->dst, r, 0), fs_cpu_at(&a->src, rows[r], 0), bytes);
    return FS_OK;
}

fs_status fs_cpu_op_scatter_add(fs_ctx *ctx, const fs_scatter_args *a)
{
    const int32_t *rows = (const int32_t *)fs_cpu_at(&a->rows, 0, 0);
    const float *w = a->w.buf ? FS_CPU_F32(a->w) : NULL;
    const int64_t c = a->dst.cols;
    for (int64_t r = 0; r < a->src.rows; r++)
        if (rows[r] < 0 || rows[r] >= a->dst.rows)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "scatter_add: row %d at entry %lld is outside the destination's "
                              "%lld rows", (int)rows[r], (long long)r, (long long)a->dst.rows);
    for (int64_t r = 0; r < a->src.rows; r++) {
        float *d = (float *)fs_cpu_at(&a->dst, rows[r], 0);
        const float *s = (const float *)fs_cpu_at(&a->src, r, 0);
        if (w) {
            const float wr = w[r];
            for (int64_t i = 0; i < c; i++) d[i] += wr * s[i];
        } else {
            for (int64_t i = 0; i < c; i++) d[i] += s[i];
        }
    }
    return FS_OK;
}
