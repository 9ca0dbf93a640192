/* grid.c: the grid and round-to-nearest ops on the CPU: qmeta of every row
 * and group through fs_grid_group (src/quant/grid.c, the shared arithmetic
 * of quant-math.h), and codes and dequant from stored grids, exactly as the
 * layer driver's RTN computes them.  Rows run on OpenMP threads. */
#include "cpu/cpu.h"

fs_status fs_cpu_op_grid(fs_ctx *ctx, const fs_grid_args *a)
{
    (void)ctx;
    const int64_t cols = a->W.cols, gw = a->gw, ng = (cols + gw - 1) / gw;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a->W.rows; r++) {
        const float *w = (const float *)fs_cpu_at(&a->W, r, 0);
        uint8_t *qm = (uint8_t *)fs_cpu_at(&a->qmeta, r, 0);
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = g * gw, n = cols - c0 < gw ? cols - c0 : gw;
            float s, z;
            fs_grid_group_w(a->gp, w + c0, a->gp->colw ? a->gp->colw + c0 : NULL, n, qm + g * 4, &s, &z);
        }
    }
    return FS_OK;
}

fs_status fs_cpu_op_rtn(fs_ctx *ctx, const fs_rtn_args *a)
{
    (void)ctx;
    const int64_t cols = a->W.cols, gw = a->gw;
    const fs_grid_params *gp = a->gp;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a->W.rows; r++) {
        const float *w = (const float *)fs_cpu_at(&a->W, r, 0);
        const uint8_t *qm = (const uint8_t *)fs_cpu_at(&a->qmeta, r, 0);
        uint8_t *codes = (uint8_t *)fs_cpu_at(&a->codes, r, 0);
        float *D = a->D.buf ? (float *)fs_cpu_at(&a->D, r, 0) : NULL;
        for (int64_t c = 0; c < cols; c++) {
            float s, z;
            fs_grid_unpack(gp, qm + (c / gw) * 4, &s, &z);
            float q = fs_quant1(w[c], s, z, gp->maxq);
            codes[c] = (uint8_t)q;
            if (D) D[c] = (q - z) * s;
        }
    }
    return FS_OK;
}
