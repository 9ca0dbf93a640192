/* loss.c: the layer loss trace((W - D) H (W - D)^T) on the CPU, in three
 * precisions (quant.h): exact in double (GPTQ pushes the error towards H's
 * small eigenvectors, so a float GEMM could lose most of the digits of a
 * small loss: E and H go to double, rows in slabs), one f32 GEMM per slab,
 * and the FS_LOSS_EST_ROWS-row estimate the pipeline logs; and the loss op. */
#include <stdlib.h>

#include "cpu/cpu.h"

#define LOSS_SLAB 512   /* rows per GEMM: bounds the copies */

static float e_of(const float *W, int64_t ldw, const float *D, int64_t ldd, int64_t r, int64_t k)
{
    return W[r * ldw + k] - (D ? D[r * ldd + k] : 0.0f);
}

fs_status fs_cpu_loss_f32(fs_ctx *ctx, const float *W, int64_t ldw, const float *D, int64_t ldd, const float *H,
                          int64_t ldh, int64_t rows, int64_t cols, double *loss)
{
    float *E = fs_alloc2((size_t)LOSS_SLAB, (size_t)(cols ? cols : 1) * sizeof(float));
    float *T = fs_alloc2((size_t)LOSS_SLAB, (size_t)(cols ? cols : 1) * sizeof(float));
    if (!E || !T) {
        free(E); free(T);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "loss: %lld columns", (long long)cols);
    }
    double total = 0.0;
    for (int64_t r0 = 0; cols > 0 && r0 < rows; r0 += LOSS_SLAB) {
        int64_t m = rows - r0 < LOSS_SLAB ? rows - r0 : LOSS_SLAB;
        for (int64_t i = 0; i < m; i++)
            for (int64_t k = 0; k < cols; k++) E[i * cols + k] = e_of(W, ldw, D, ldd, r0 + i, k);
        fs_cpu_sgemm(0, m, cols, cols, 1.0f, E, cols, H, ldh, 0.0f, T, cols);
        for (int64_t i = 0; i < m * cols; i++) total += (double)T[i] * (double)E[i];
    }
    free(E); free(T);
    *loss = total;
    return FS_OK;
}

fs_status fs_cpu_loss_est(fs_ctx *ctx, const float *W, int64_t ldw, const float *D, int64_t ldd, const float *H,
                          int64_t ldh, int64_t rows, int64_t cols, double *loss)
{
    const int64_t S = rows < FS_LOSS_EST_ROWS ? rows : FS_LOSS_EST_ROWS;
    float *E = fs_alloc2((size_t)(S ? S : 1), (size_t)(cols ? cols : 1) * sizeof(float));
    float *T = fs_alloc2((size_t)(S ? S : 1), (size_t)(cols ? cols : 1) * sizeof(float));
    if (!E || !T) {
        free(E); free(T);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "loss: %lld columns", (long long)cols);
    }
    for (int64_t i = 0; i < S; i++) {               /* rows spread evenly over the matrix */
        const int64_t r = i * rows / S;
        for (int64_t k = 0; k < cols; k++) E[i * cols + k] = e_of(W, ldw, D, ldd, r, k);
    }
    double total = 0.0;
    if (S > 0 && cols > 0) {
        fs_cpu_sgemm(0, S, cols, cols, 1.0f, E, cols, H, ldh, 0.0f, T, cols);
        for (int64_t i = 0; i < S * cols; i++) total += (double)T[i] * (double)E[i];
    }
    free(E); free(T);
    *loss = S > 0 ? total * (double)rows / (double)S : 0.0;
    return FS_OK;
}

fs_status fs_cpu_loss_exact(fs_ctx *ctx, const float *W, int64_t ldw, const float *D, int64_t ldd, const float *H,
                            const double *H64, int64_t ldh, int64_t rows, int64_t cols, double *loss)
{
    const size_t n = (size_t)(cols ? cols : 1);
    double *Hd = H64 ? NULL : fs_alloc2(n * n, sizeof(double));
    double *E = fs_alloc2((size_t)LOSS_SLAB * n, sizeof(double));
    double *T = fs_alloc2((size_t)LOSS_SLAB * n, sizeof(double));
    if ((!Hd && !H64) || !E || !T) {
        free(Hd); free(E); free(T);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "loss: %lld x %lld in double", (long long)cols, (long long)cols);
    }
    if (!H64)
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = 0; j < cols; j++) Hd[i * cols + j] = H[i * ldh + j];
    const double *Hl = H64 ? H64 : Hd;
    const int64_t ldl = H64 ? ldh : cols;
    double total = 0.0;
    for (int64_t r0 = 0; cols > 0 && r0 < rows; r0 += LOSS_SLAB) {
        int64_t m = rows - r0 < LOSS_SLAB ? rows - r0 : LOSS_SLAB;
        for (int64_t i = 0; i < m; i++)
            for (int64_t k = 0; k < cols; k++)
                E[i * cols + k] = (double)W[(r0 + i) * ldw + k] - (D ? (double)D[(r0 + i) * ldd + k] : 0.0);
        fs_cpu_dgemm(0, m, cols, cols, 1.0, E, cols, Hl, ldl, 0.0, T, cols);
        for (int64_t i = 0; i < m * cols; i++) total += T[i] * E[i];
    }
    free(Hd); free(E); free(T);
    *loss = total;
    return FS_OK;
}

fs_status fs_cpu_op_loss(fs_ctx *ctx, const fs_loss_args *a)
{
    const float *W = FS_CPU_F32(a->W), *D = a->D.buf ? FS_CPU_F32(a->D) : NULL;
    const int64_t ldd = a->D.buf ? a->D.ld : 0;
    double loss = 0.0;
    fs_status rc;
    if (a->mode == FS_LOSS_EXACT)
        rc = fs_cpu_loss_exact(ctx, W, a->W.ld, D, ldd, a->H.dt == FS_DT_F32 ? FS_CPU_F32(a->H) : NULL,
                               a->H.dt == FS_DT_F64 ? (const double *)fs_cpu_at(&a->H, 0, 0) : NULL, a->H.ld,
                               a->W.rows, a->W.cols, &loss);
    else if (a->mode == FS_LOSS_F32)
        rc = fs_cpu_loss_f32(ctx, W, a->W.ld, D, ldd, FS_CPU_F32(a->H), a->H.ld, a->W.rows, a->W.cols, &loss);
    else
        rc = fs_cpu_loss_est(ctx, W, a->W.ld, D, ldd, FS_CPU_F32(a->H), a->H.ld, a->W.rows, a->W.cols, &loss);
    if (rc == FS_OK) *(double *)fs_cpu_at(&a->out, 0, 0) = loss;
    return rc;
}
