/* permute.c: the column permutation op (act-order) on the CPU: columns, or
 * rows and columns of a square matrix (P^T H P), forwards or back; element
 * copies only, so any thread split gives the same bytes. */
#include <string.h>

#include "cpu/cpu.h"

fs_status fs_cpu_op_permute(fs_ctx *ctx, const fs_permute_args *a)
{
    const int64_t R = a->src.rows, C = a->src.cols;
    const int32_t *perm = (const int32_t *)fs_cpu_at(&a->perm, 0, 0);
    const size_t es = fs_dtype_size(a->src.dt);
    for (int64_t k = 0; k < C; k++)
        if (perm[k] < 0 || perm[k] >= C)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "permute: entry %lld is %d, outside [0, %lld)", (long long)k,
                              (int)perm[k], (long long)C);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < R; i++) {
        const int64_t i2 = a->rows_too ? perm[i] : i;
        if (!a->inverse) {
            const uint8_t *s = (const uint8_t *)fs_cpu_at(&a->src, i2, 0);
            uint8_t *d = (uint8_t *)fs_cpu_at(&a->dst, i, 0);
            for (int64_t k = 0; k < C; k++) memcpy(d + (size_t)k * es, s + (size_t)perm[k] * es, es);
        } else {
            const uint8_t *s = (const uint8_t *)fs_cpu_at(&a->src, i, 0);
            uint8_t *d = (uint8_t *)fs_cpu_at(&a->dst, i2, 0);
            for (int64_t k = 0; k < C; k++) memcpy(d + (size_t)perm[k] * es, s + (size_t)k * es, es);
        }
    }
    return FS_OK;
}
