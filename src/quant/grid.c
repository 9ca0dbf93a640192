/* grid.c: CPU reference of the qmeta4 grids (seed 000 §4): the range grid and
 * the MSE / L^p shrink search, per row and group.  The arithmetic lives in
 * quant-math.h so that the CUDA kernels compute the same bits. */
#include <stdlib.h>

#include "src/quant/quant.h"
#include "src/quant/qmeta-table.h"
#include "src/quant/quant-math.h"

const double *fs_q88_frac_table(void);
const float *fs_q88_half_table(void);

fs_status fs_grid_params_init(fs_ctx *ctx, fs_grid_params *gp, const fs_quant_opts *q)
{
    gp->bits = q->bits;
    gp->sym = q->sym;
    gp->mse = q->grid == FS_GRID_MSE || q->grid == FS_GRID_HMSE;
    gp->hmse = q->grid == FS_GRID_HMSE;
    gp->colw = NULL;
    gp->gptq_v1 = q->gptq_v1;
    gp->maxq = (float)((1 << q->bits) - 1);
    gp->norm = q->norm;
    gp->n = gp->mse ? q->grid_n : 1;
    gp->p = malloc(sizeof(float) * (size_t)gp->n);
    if (!gp->p) return fs_ctx_err(ctx, FS_ERR_NOMEM, "grid: %d candidates", gp->n);
    /* linspace(1, shrink, n), each value computed in double and rounded once */
    for (int k = 0; k < gp->n; k++)
        gp->p[k] = gp->n == 1 ? 1.0f
                              : (float)(1.0 - (1.0 - (double)q->shrink) * k / (gp->n - 1));
    return FS_OK;
}

void fs_grid_params_free(fs_grid_params *gp)
{
    free(gp->p);
    gp->p = NULL;
}

float fs_quant1(float x, float s, float z, float maxq)
{
    return fs_qm_quant(x, s, z, maxq);
}

/* Loss of one candidate scale, summed as a warp would (quant-math.h inv. 3). */
static float mse_loss(const fs_grid_params *gp, const float *x, int64_t n, float s, float z,
                      int l2)
{
    float lane[FS_WARP] = {0};
    for (int64_t i = 0; i < n; i++)
        lane[i % FS_WARP] += fs_qm_err(x[i], s, z, gp->maxq, l2, gp->norm);
    for (int off = FS_WARP / 2; off > 0; off >>= 1) {
        float nx[FS_WARP];
        for (int l = 0; l < FS_WARP; l++) nx[l] = lane[l] + lane[l ^ off];
        for (int l = 0; l < FS_WARP; l++) lane[l] = nx[l];
    }
    return lane[0];
}

/* HMSE: sum w_i (dq_i - x_i)^2 in double, sequential (a CPU-only search). */
static double hmse_loss(const fs_grid_params *gp, const float *x, const float *w, int64_t n,
                        float s, float z)
{
    double l = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)fs_qm_dequant(fs_qm_quant(x[i], s, z, gp->maxq), s, z) - (double)x[i];
        l += (w ? (double)w[i] : 1.0) * d * d;
    }
    return l;
}

void fs_grid_group(const fs_grid_params *gp, const float *x, int64_t n, uint8_t qmeta[4],
                   float *scale, float *zero)
{
    fs_grid_group_w(gp, x, NULL, n, qmeta, scale, zero);
}

void fs_grid_group_w(const fs_grid_params *gp, const float *x, const float *w, int64_t n,
                     uint8_t qmeta[4], float *scale, float *zero)
{
    const double *frac = fs_q88_frac_table();
    const float *half = fs_q88_half_table();
    float gmin = x[0], gmax = x[0];
    for (int64_t i = 1; i < n; i++) {
        gmin = x[i] < gmin ? x[i] : gmin;
        gmax = x[i] > gmax ? x[i] : gmax;
    }
    float s, z;
    fs_qm_range(gmin, gmax, gp->bits, gp->sym, gp->gptq_v1, &s, &z);
    int16_t code = fs_qm_encode(s, half);
    if (gp->hmse) {
        float base = fs_qm_decode(code, frac), best_s = base;
        double best = 0.0;
        for (int k = 0; k < gp->n; k++) {
            float sk = base * gp->p[k];
            double loss = hmse_loss(gp, x, w, n, sk, z);
            if (k == 0 || loss < best) { best = loss; best_s = sk; }
        }
        code = fs_qm_encode(best_s, half);
    } else if (gp->mse) {
        float base = fs_qm_decode(code, frac), best_s = base, best = 0.0f;
        int l2 = gp->norm == 2.0f;
        for (int k = 0; k < gp->n; k++) {
            float sk = base * gp->p[k];
            float loss = mse_loss(gp, x, n, sk, z, l2);
            if (k == 0 || loss < best) { best = loss; best_s = sk; }
        }
        code = fs_qm_encode(best_s, half);
    }
    *scale = fs_qm_decode(code, frac);
    if (gp->gptq_v1) *scale = fs_qm_f16_round(*scale);
    *zero = z;
    fs_qmeta_pack(qmeta, code, (uint8_t)z, gp->sym ? FS_QMETA_SYM : 0);
}

void fs_grid_unpack(const fs_grid_params *gp, const uint8_t qmeta[4], float *scale, float *zero)
{
    fs_qmeta_unpack(qmeta, scale, zero);
    if (gp->gptq_v1) *scale = fs_qm_f16_round(*scale);
}

void fs_grid_matrix(const fs_grid_params *gp, const float *W, int64_t rows, int64_t cols,
                    int64_t gw, uint8_t *qmeta)
{
    int64_t ng = (cols + gw - 1) / gw;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t g = 0; g < ng; g++) {
            int64_t c0 = g * gw, n = cols - c0 < gw ? cols - c0 : gw;
            float s, z;
            fs_grid_group_w(gp, W + r * cols + c0, gp->colw ? gp->colw + c0 : NULL, n,
                            qmeta + (r * ng + g) * 4, &s, &z);
        }
}
