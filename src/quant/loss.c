/* loss.c: the layer loss trace((W - D) H (W - D)^T), in double.  GPTQ pushes
 * the error towards H's small eigenvectors, so a float GEMM here could lose
 * most of the digits of a small loss: E and H go to double, rows in slabs. */
#include <cblas.h>
#include <stdlib.h>

#include "src/quant/quant.h"

#define LOSS_SLAB 512   /* rows per dgemm: bounds the double copies */

fs_status fs_quad_loss_f32(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss)
{
    float *E = fs_alloc2((size_t)LOSS_SLAB, (size_t)cols * sizeof(float));
    float *T = fs_alloc2((size_t)LOSS_SLAB, (size_t)cols * sizeof(float));
    if (!E || !T) {
        free(E); free(T);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "loss: %lld columns", (long long)cols);
    }
    double total = 0.0;
    for (int64_t r0 = 0; r0 < rows; r0 += LOSS_SLAB) {
        int64_t m = rows - r0 < LOSS_SLAB ? rows - r0 : LOSS_SLAB;
        for (int64_t i = 0; i < m * cols; i++) E[i] = W[r0 * cols + i] - (D ? D[r0 * cols + i] : 0.0f);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)cols, 1.0f, E,
                    (int)cols, H, (int)cols, 0.0f, T, (int)cols);
        for (int64_t i = 0; i < m * cols; i++) total += (double)T[i] * (double)E[i];
    }
    free(E); free(T);
    *loss = total;
    return FS_OK;
}

fs_status fs_quad_loss_est(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss)
{
    const int64_t S = rows < FS_LOSS_EST_ROWS ? rows : FS_LOSS_EST_ROWS;
    float *E = fs_alloc2((size_t)(S ? S : 1), (size_t)cols * sizeof(float));
    float *T = fs_alloc2((size_t)(S ? S : 1), (size_t)cols * sizeof(float));
    if (!E || !T) {
        free(E); free(T);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "loss: %lld columns", (long long)cols);
    }
    for (int64_t i = 0; i < S; i++) {               /* rows spread evenly over the matrix */
        const int64_t r = i * rows / S;
        for (int64_t k = 0; k < cols; k++) E[i * cols + k] = W[r * cols + k] - (D ? D[r * cols + k] : 0.0f);
    }
    double total = 0.0;
    if (S > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)S, (int)cols, (int)cols, 1.0f, E, (int)cols, H,
                    (int)cols, 0.0f, T, (int)cols);
        for (int64_t i = 0; i < S * cols; i++) total += (double)T[i] * (double)E[i];
    }
    free(E); free(T);
    *loss = S > 0 ? total * (double)rows / (double)S : 0.0;
    return FS_OK;
}

fs_status fs_quad_loss(fs_ctx *ctx, const float *W, const float *D, const float *H,
                       const double *H64, int64_t rows, int64_t cols, double *loss)
{
    const size_t n = (size_t)cols;
    double *Hd = H64 ? NULL : fs_alloc2(n * n, sizeof(double));
    double *E = fs_alloc2((size_t)LOSS_SLAB * n, sizeof(double));
    double *T = fs_alloc2((size_t)LOSS_SLAB * n, sizeof(double));
    if ((!Hd && !H64) || !E || !T) {
        free(Hd); free(E); free(T);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "loss: %lld x %lld in double", (long long)cols,
                          (long long)cols);
    }
    if (!H64)
        for (size_t i = 0; i < n * n; i++) Hd[i] = H[i];
    const double *Hl = H64 ? H64 : Hd;
    double total = 0.0;
    for (int64_t r0 = 0; r0 < rows; r0 += LOSS_SLAB) {
        int64_t m = rows - r0 < LOSS_SLAB ? rows - r0 : LOSS_SLAB;
        for (int64_t i = 0; i < m * cols; i++)
            E[i] = (double)W[r0 * cols + i] - (double)D[r0 * cols + i];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)cols, (int)cols,
                    1.0, E, (int)cols, Hl, (int)cols, 0.0, T, (int)cols);
        for (int64_t i = 0; i < m * cols; i++) total += T[i] * E[i];
    }
    free(Hd); free(E); free(T);
    *loss = total;
    return FS_OK;
}
