/* decode.c: the decode op on the CPU: F32, F16, BF16, F8_E4M3 (optionally
 * block-scaled, ARCHITECTURES.md §6) to F32, with the flat index of the first
 * non-finite value as data (backend.h invariant 6).  The scalar decoders are
 * src/core/dtype.c's; the block-scaled product is the checkpoint reader's,
 * (float)((double)e4m3 * (double)scale).  Rows run on OpenMP threads, each
 * keeping its first bad column; the smallest row wins, so the status does not
 * depend on the split. */
#include <math.h>

#include "cpu/cpu.h"

fs_status fs_cpu_op_decode(fs_ctx *ctx, const fs_decode_args *a)
{
    (void)ctx;
    const int64_t R = a->src.rows, C = a->src.cols;
    int64_t first = INT64_MAX;
#pragma omp parallel for schedule(static) reduction(min : first)
    for (int64_t r = 0; r < R; r++) {
        const uint8_t *s = (const uint8_t *)fs_cpu_at(&a->src, r, 0);
        float *d = (float *)fs_cpu_at(&a->dst, r, 0);
        const float *sc = a->scale.buf ? (const float *)fs_cpu_at(&a->scale, r / a->b0, 0) : NULL;
        for (int64_t c = 0; c < C; c++) {
            float v;
            switch (a->src.dt) {
            case FS_DT_F32: { float f; __builtin_memcpy(&f, s + 4 * c, 4); v = f; break; }
            case FS_DT_F16: v = fs_f16_to_f32((uint16_t)(s[2 * c] | (s[2 * c + 1] << 8))); break;
            case FS_DT_BF16: v = fs_bf16_to_f32((uint16_t)(s[2 * c] | (s[2 * c + 1] << 8))); break;
            default:
                v = fs_f8e4m3_to_f32(s[c]);
                if (sc) v = (float)((double)v * (double)sc[c / a->b1]);
                break;
            }
            d[c] = v;
            if (!isfinite(v) && r * C + c < first) first = r * C + c;
        }
    }
    *(int64_t *)fs_cpu_at(&a->status, 0, 0) = first == INT64_MAX ? 0 : first + 1;
    return FS_OK;
}
