/* pack.c: the packing op on the CPU: codes into the forge rows or gptq's
 * qweight words through src/formats/pack.c, and gptq's qzeros and F16 scales
 * from qmeta exactly as the output writer builds them (outckpt.c). */
#include <stdlib.h>

#include "cpu/cpu.h"
#include "src/formats/pack.h"
#include "src/quant/quant-math.h"

fs_status fs_cpu_op_pack(fs_ctx *ctx, const fs_pack_args *a)
{
    const int64_t out = a->src.rows, in = a->src.cols;
    const uint8_t *src = (const uint8_t *)fs_cpu_at(&a->src, 0, 0);
    if (a->kind == FS_PACK_FORGE) {
        fs_forge_pack(src, out, in, a->bits, (uint8_t *)fs_cpu_at(&a->dst, 0, 0));
        return FS_OK;
    }
    if (a->kind == FS_PACK_GPTQ_QWEIGHT) {
        fs_gptq_pack_qweight(src, out, in, a->bits, (uint32_t *)fs_cpu_at(&a->dst, 0, 0));
        return FS_OK;
    }
    const int64_t ng = in / 4;
    uint8_t *zeros = fs_alloc2((size_t)(ng ? ng : 1), (size_t)(out ? out : 1));
    if (!zeros) return fs_ctx_err(ctx, FS_ERR_NOMEM, "pack: zeros of %lld groups x %lld", (long long)ng, (long long)out);
    uint16_t *sc = (uint16_t *)fs_cpu_at(&a->dst2, 0, 0);
    int64_t bad = -1;
    for (int64_t row = 0; row < out; row++)
        for (int64_t k = 0; k < ng; k++) {
            const uint8_t *m = src + (row * ng + k) * 4;
            int16_t code = (int16_t)(uint16_t)(m[0] | m[1] << 8);
            if (m[2] < 1 && bad < 0) bad = row * ng + k;
            zeros[k * out + row] = m[2];
            sc[k * out + row] = fs_f32_to_f16(fs_qm_f16_round(fs_q88_decode(code)));
        }
    if (bad < 0) fs_gptq_pack_qzeros(zeros, ng, out, a->bits, (uint32_t *)fs_cpu_at(&a->dst, 0, 0));
    *(int64_t *)fs_cpu_at(&a->status, 0, 0) = bad < 0 ? 0 : bad + 1;
    free(zeros);
    return FS_OK;
}
