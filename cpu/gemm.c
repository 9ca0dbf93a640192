/* gemm.c: the CPU GEMMs: the sgemm/dgemm wrappers every caller of today goes
 * through, OpenBLAS's thread count, and the gemm op (F32, or BF16 inputs
 * converted to F32 and multiplied with F32 accumulation). */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

void fs_cpu_sgemm(int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, A,
                (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void fs_cpu_dgemm(int trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double *A, int64_t lda,
                  const double *B, int64_t ldb, double beta, double *C, int64_t ldc)
{
    cblas_dgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, A,
                (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

int fs_cpu_blas_threads(void)
{
    return openblas_get_num_threads();
}

void fs_cpu_set_blas_threads(int n)
{
    openblas_set_num_threads(n);
}

/* A BF16 operand as a contiguous F32 copy (malloc'ed), or t's own floats. */
static const float *as_f32(const fs_tensor *t, float **tmp, int64_t *ld)
{
    *tmp = NULL;
    if (t->dt == FS_DT_F32) {
        *ld = t->ld;
        return (const float *)fs_cpu_at(t, 0, 0);
    }
    float *f = fs_alloc2((size_t)(t->rows ? t->rows : 1), (size_t)(t->cols ? t->cols : 1) * sizeof(float));
    if (!f) return NULL;
    for (int64_t r = 0; r < t->rows; r++) {
        const uint16_t *s = (const uint16_t *)fs_cpu_at(t, r, 0);
        for (int64_t c = 0; c < t->cols; c++) f[r * t->cols + c] = fs_bf16_to_f32(s[c]);
    }
    *tmp = f;
    *ld = t->cols ? t->cols : 1;
    return f;
}

fs_status fs_cpu_op_gemm(fs_ctx *ctx, const fs_gemm_args *a)
{
    const int64_t m = a->A.rows, k = a->A.cols, n = a->C.cols;
    if (m == 0 || n == 0) return FS_OK;
    if (k == 0) {                                   /* C = beta * C; beta 0 does not read C */
        for (int64_t r = 0; r < m; r++) {
            float *c = (float *)fs_cpu_at(&a->C, r, 0);
            for (int64_t j = 0; j < n; j++) c[j] = a->beta == 0.0f ? 0.0f : a->beta * c[j];
        }
        return FS_OK;
    }
    float *ta, *tb;
    int64_t lda, ldb;
    const float *A = as_f32(&a->A, &ta, &lda), *B = as_f32(&a->B, &tb, &ldb);
    if (!A || !B) {
        free(ta); free(tb);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "gemm: F32 copies of BF16 operands [%lld, %lld]", (long long)m,
                          (long long)k);
    }
    fs_cpu_sgemm(a->trans_b, m, n, k, a->alpha, A, lda, B, ldb, a->beta, FS_CPU_F32(a->C), a->C.ld);
    free(ta);
    free(tb);
    return FS_OK;
}
