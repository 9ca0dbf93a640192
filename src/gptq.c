/* gptq.c: CPU reference of the blocked GPTQ solver (Frantar et al. 2023,
 * Algorithm 1 with lazy batch updates).
 *
 * Invariants:
 *  1. Columns are walked in processing order (the job's W and U are already
 *     permuted); rows are independent, so the in-block loop runs row by row
 *     with the row's block segment hot in cache, and the trailing update of
 *     every later column is one GEMM per block.
 *  2. Dynamic groups see the current weights: a block is cut at every group
 *     start, so when a group starts all earlier errors have reached its
 *     columns, however the group and block widths relate.
 *  3. On return job->W holds the dequantized weight and job->codes the codes,
 *     both in processing order.
 */
#include <cblas.h>
#include <stdlib.h>

#include "fs.h"
#include "quant-math.h"

fs_status fs_gptq_cpu(fs_ctx *ctx, const fs_gptq_job *job)
{
    const int64_t R = job->rows, C = job->cols, ng = job->ngroups, gw = job->gw;
    const int dynamic = job->gcol == NULL;
    const float maxq = job->gp->maxq;
    float *Err = fs_alloc2((size_t)R * (size_t)(job->block < C ? job->block : C), sizeof(float));
    float *sc = fs_alloc2((size_t)R * (size_t)ng, sizeof(float));
    float *zc = fs_alloc2((size_t)R * (size_t)ng, sizeof(float));
    if (!Err || !sc || !zc) {
        free(Err); free(sc); free(zc);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "gptq: work buffers for %lld x %lld",
                          (long long)R, (long long)C);
    }
    if (!dynamic)
        for (int64_t i = 0; i < R * ng; i++) fs_qmeta_unpack(job->qmeta + 4 * i, &sc[i], &zc[i]);

    for (int64_t i1 = 0; i1 < C;) {
        int64_t i2 = i1 + job->block < C ? i1 + job->block : C;
        if (dynamic) {                                   /* invariant 2 */
            int64_t gnext = (i1 / gw + 1) * gw;
            if (gnext < i2) i2 = gnext;
        }
        const int64_t nb = i2 - i1;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            float *w = job->W + r * C;
            uint8_t *cd = job->codes + r * C;
            float *er = Err + r * nb;
            for (int64_t j = i1; j < i2; j++) {
                int64_t g = dynamic ? j / gw : job->gcol[j];
                if (dynamic && j % gw == 0) {
                    int64_t glen = C - j < gw ? C - j : gw;
                    fs_grid_group(job->gp, w + j, glen, job->qmeta + (r * ng + g) * 4,
                                  &sc[r * ng + g], &zc[r * ng + g]);
                }
                float s = sc[r * ng + g], z = zc[r * ng + g];
                float q = fs_qm_quant(w[j], s, z, maxq);
                float dq = fs_qm_dequant(q, s, z);
                const float *u = job->U + j * C;
                float e = (w[j] - dq) / u[j];
                cd[j] = (uint8_t)q;
                w[j] = dq;
                er[j - i1] = e;
                for (int64_t c = j + 1; c < i2; c++) w[c] -= e * u[c];
            }
        }
        if (i2 < C)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)(C - i2),
                        (int)nb, -1.0f, Err, (int)nb, job->U + i1 * C + i2, (int)C, 1.0f,
                        job->W + i2, (int)C);
        i1 = i2;
    }
    free(Err); free(sc); free(zc);
    return FS_OK;
}
