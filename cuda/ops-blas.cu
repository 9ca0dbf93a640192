/* ops-blas.cu: the library ops of the CUDA backend: gemm (cublasGemmEx),
 * the Hessian sums (cublasSsyrk), their mirror, the expert wave, damping and
 * the Cholesky factor of the inverse (cuSOLVER potrf + trtri, the CPU's
 * algorithm, cpu/cholinv.c).
 *
 * Invariants:
 *  1. Layouts: a row-major [m, n] view with ld is the column-major [n, m]
 *     matrix with leading dimension ld; each library call below is the
 *     column-major reading of the row-major operation in its comment.
 *  2. Full F32 products: the handles keep CUBLAS_DEFAULT_MATH (no TF32), and
 *     BF16 x BF16 gemms use CUBLAS_COMPUTE_32F (products exact in F32, F32
 *     accumulation), as backend.h's gemm says; a gemm of one BF16 and one F32
 *     operand converts the BF16 one to F32 first, as cpu/gemm.c does.
 *  3. cholinv is cpu/cholinv.c's: reverse the flat array (J H J), potrf on
 *     the column-major upper triangle, trtri, reverse back, zero the lower
 *     triangle, then the first non-finite entry of the upper one in row-major
 *     order; the status (column + 1) is computed on the device from the
 *     libraries' info words, so the op never synchronises and its failing
 *     column is the CPU's: damping decisions agree.
 */
#include <limits.h>
#include <stdlib.h>

#include "cuda/cuda-be.h"

#define T256 256

static fs_status fit_int(fs_ctx *ctx, const char *op, const char *what, int64_t v)
{
    if (v < 0 || v > INT_MAX)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda %s: %s = %lld does not fit cuBLAS/cuSOLVER", op, what, (long long)v);
    return FS_OK;
}

/* ---- gemm ------------------------------------------------------------------------------ */

static __global__ void k_bf16_to_f32(const uint16_t *s, int64_t lds, float *d, int64_t rows, int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        d[i] = __uint_as_float((uint32_t)s[(i / cols) * lds + i % cols] << 16);
}

static __global__ void k_scale(float *C, int64_t ldc, int64_t rows, int64_t cols, float beta)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float *c = C + (i / cols) * ldc + i % cols;
        *c = beta == 0.0f ? 0.0f : beta * *c;
    }
}

/* A BF16 view as F32 scratch (contiguous) when the other operand is F32. */
static fs_status as_f32(fs_ctx *ctx, cuda_be *cb, int q, const fs_tensor &t, float **tmp)
{
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)tmp, sizeof(float) * (size_t)(t.rows * t.cols), "gemm: F32 copy"));
    k_bf16_to_f32<<<fs_cu_blocks(t.rows * t.cols, T256), T256, 0, cb->s[q]>>>((const uint16_t *)fs_cu_at(t), t.ld,
                                                                             *tmp, t.rows, t.cols);
    FS_LAUNCH_CHECK(ctx, k_bf16_to_f32);
    return FS_OK;
}

static fs_status gemm_run(fs_ctx *ctx, cuda_be *cb, int q, const fs_gemm_args *a, float **ta, float **tb)
{
    const int64_t m = a->A.rows, k = a->A.cols, n = a->C.cols;
    if (m == 0 || n == 0) return FS_OK;
    if (k == 0) {                                     /* C = beta * C; beta 0 does not read C */
        k_scale<<<fs_cu_blocks(m * n, T256), T256, 0, cb->s[q]>>>(FS_CU_F32(a->C), a->C.ld, m, n, a->beta);
        FS_LAUNCH_CHECK(ctx, k_scale);
        return FS_OK;
    }
    FS_TRY_CU(fit_int(ctx, "gemm", "m", m));
    FS_TRY_CU(fit_int(ctx, "gemm", "n", n));
    FS_TRY_CU(fit_int(ctx, "gemm", "k", k));
    const void *A = fs_cu_at(a->A), *B = fs_cu_at(a->B);
    int64_t lda = a->A.ld, ldb = a->B.ld;
    cudaDataType ty = a->A.dt == FS_DT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    if (a->A.dt != a->B.dt) {                         /* invariant 2 */
        if (a->A.dt == FS_DT_BF16) { FS_TRY_CU(as_f32(ctx, cb, q, a->A, ta)); A = *ta; lda = a->A.cols; }
        else { FS_TRY_CU(as_f32(ctx, cb, q, a->B, tb)); B = *tb; ldb = a->B.cols; }
        ty = CUDA_R_32F;
    }
    FS_TRY_CU(fit_int(ctx, "gemm", "lda", lda));
    FS_TRY_CU(fit_int(ctx, "gemm", "ldb", ldb));
    FS_TRY_CU(fit_int(ctx, "gemm", "ldc", a->C.ld));
    /* row-major C [m, n] = alpha A op(B) + beta C  ==  column-major
     * C' [n, m] = alpha op(B)' A' + beta C', B' = B read column-major (N for
     * B [k, n], T for B [n, k]), A' = A read column-major (invariant 1) */
    FS_CUBLAS_CHECK(ctx, cublasGemmEx(cb->blas[q], a->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m,
                                      (int)k, &a->alpha, B, ty, (int)ldb, A, ty, (int)lda, &a->beta, fs_cu_at(a->C),
                                      CUDA_R_32F, (int)a->C.ld, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return FS_OK;
}

fs_status fs_cu_op_gemm(fs_ctx *ctx, cuda_be *cb, int q, const fs_gemm_args *a)
{
    float *ta = NULL, *tb = NULL;
    fs_status rc = gemm_run(ctx, cb, q, a, &ta, &tb);
    fs_cu_scratch_free(cb, q, ta);
    fs_cu_scratch_free(cb, q, tb);
    return rc;
}

/* ---- Hessians -------------------------------------------------------------------------------- */

/* row-major H [in, in] (ld ldh) upper += X^T X, X [rows, in] (ld ldx)  ==
 * column-major lower H' += X' X'^T with X' = X^T [in, rows] */
static fs_status syrk(fs_ctx *ctx, cuda_be *cb, int q, float *H, int64_t ldh, int64_t in, const float *X, int64_t ldx,
                      int64_t rows)
{
    const float one = 1.0f;
    FS_TRY_CU(fit_int(ctx, "hess_acc", "in", in));
    FS_TRY_CU(fit_int(ctx, "hess_acc", "rows", rows));
    FS_TRY_CU(fit_int(ctx, "hess_acc", "ld", ldh > ldx ? ldh : ldx));
    FS_CUBLAS_CHECK(ctx, cublasSsyrk(cb->blas[q], CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)in, (int)rows, &one, X,
                                     (int)ldx, &one, H, (int)ldh));
    return FS_OK;
}

fs_status fs_cu_op_hess_acc(fs_ctx *ctx, cuda_be *cb, int q, const fs_hess_acc_args *a)
{
    if (a->X.rows == 0 || a->H.cols == 0) return FS_OK;
    return syrk(ctx, cb, q, FS_CU_F32(a->H), a->H.ld, a->H.cols, FS_CU_F32(a->X), a->X.ld, a->X.rows);
}

/* lower (i > j) = upper (j, i) of count stacked [n, n] matrices */
static __global__ void k_mirror(float *H, int64_t ld, int64_t n, int64_t count)
{
    const int64_t N = count * n * n;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < N; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = x / (n * n), i = x / n % n, j = x % n;
        if (j >= i) continue;
        float *M = H + m * n * ld;
        M[i * ld + j] = M[j * ld + i];
    }
}

fs_status fs_cu_op_hess_finish(fs_ctx *ctx, cuda_be *cb, int q, const fs_hess_finish_args *a)
{
    const int64_t n = a->H.cols;
    if (n <= 1) return FS_OK;
    k_mirror<<<fs_cu_blocks(a->count * n * n, T256), T256, 0, cb->s[q]>>>(FS_CU_F32(a->H), a->H.ld, n, a->count);
    FS_LAUNCH_CHECK(ctx, k_mirror);
    return FS_OK;
}

static __global__ void k_gather_rows(float *dst, const float *X, int64_t ldx, int64_t xrows, const int32_t *rows,
                                     int64_t m, int64_t in, int *derr)
{
    const int64_t N = m * in;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < N; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = x / in, c = x % in;
        const int32_t t = rows[r];
        if (t < 0 || t >= xrows) {
            atomicCAS(derr, 0, FS_CU_DERR_HESS_WAVE);
            dst[x] = 0.0f;
            continue;
        }
        dst[x] = X[t * ldx + c];
    }
}

/* cuda-be.h invariant 3: the per-expert counts are data the host needs for
 * cuBLAS's sizes, so this op reads offs back (one synchronisation of q). */
static fs_status wave_run(fs_ctx *ctx, cuda_be *cb, int q, const fs_hess_wave_args *a, int32_t *offs, float **xg)
{
    const int64_t in = a->X.cols;
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(offs, (const int32_t *)fs_cu_at(a->offs) + a->e0,
                                       sizeof(int32_t) * (size_t)(a->ne + 1), cudaMemcpyDeviceToHost, cb->s[q]));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[q]));
    int64_t cap = 0;
    for (int64_t e = 0; e < a->ne; e++) {
        const int64_t r0 = offs[e], r1 = offs[e + 1];
        if (r0 < 0 || r1 < r0 || r1 > a->rows.cols)
            return fs_ctx_err(ctx, FS_ERR_FORMAT, "hess_wave: expert %lld's rows [%lld, %lld) are outside the %lld "
                              "of the row list", (long long)(a->e0 + e), (long long)r0, (long long)r1,
                              (long long)a->rows.cols);
        if (r1 - r0 > cap) cap = r1 - r0;
    }
    if (cap == 0 || in == 0) return FS_OK;
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)xg, sizeof(float) * (size_t)(cap * in), "hess_wave: gathered rows"));
    for (int64_t e = 0; e < a->ne; e++) {
        const int64_t r0 = offs[e], nr = offs[e + 1] - r0;
        if (nr == 0) continue;
        k_gather_rows<<<fs_cu_blocks(nr * in, T256), T256, 0, cb->s[q]>>>(
            *xg, FS_CU_F32(a->X), a->X.ld, a->X.rows, (const int32_t *)fs_cu_at(a->rows) + r0, nr, in, cb->derr + q);
        FS_LAUNCH_CHECK(ctx, k_gather_rows);
        FS_TRY_CU(syrk(ctx, cb, q, (float *)fs_cu_at(a->H, e * in, 0), a->H.ld, in, *xg, in, nr));
    }
    return FS_OK;
}

fs_status fs_cu_op_hess_wave(fs_ctx *ctx, cuda_be *cb, int q, const fs_hess_wave_args *a)
{
    if (a->ne == 0) return FS_OK;
    int32_t *offs = (int32_t *)malloc(sizeof(int32_t) * (size_t)(a->ne + 1));
    if (!offs) return fs_ctx_err(ctx, FS_ERR_NOMEM, "hess_wave: %lld offsets", (long long)a->ne);
    float *xg = NULL;
    fs_status rc = wave_run(ctx, cb, q, a, offs, &xg);
    fs_cu_scratch_free(cb, q, xg);
    free(offs);
    return rc;
}

/* ---- damping ------------------------------------------------------------------------------------ */

/* add[m] = (float)(damp * mean(diag)), the mean in double in index order */
static __global__ void k_damp_add(const float *src, int64_t ld, int64_t n, int64_t count, double damp, float *add)
{
    const int64_t m = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= count) return;
    const float *S = src + m * n * ld;
    double mean = 0.0;
    for (int64_t i = 0; i < n; i++) mean += S[i * ld + i];
    mean /= (double)n;
    add[m] = (float)(damp * mean);
}

static __global__ void k_damp_apply(const float *src, int64_t lds, float *dst, int64_t ldd, int64_t n, int64_t count,
                                    const float *add)
{
    const int64_t N = count * n * n;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < N; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = x / (n * n), i = x / n % n, j = x % n;
        const float v = src[(m * n + i) * lds + j];
        dst[(m * n + i) * ldd + j] = i == j ? v + add[m] : v;
    }
}

fs_status fs_cu_op_damp(fs_ctx *ctx, cuda_be *cb, int q, const fs_damp_args *a)
{
    const int64_t n = a->src.cols;
    if (n == 0) return FS_OK;
    float *add = NULL;
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&add, sizeof(float) * (size_t)a->count, "damp: diagonal terms"));
    fs_status rc = FS_OK;
    k_damp_add<<<fs_cu_blocks(a->count, 64), 64, 0, cb->s[q]>>>(FS_CU_F32(a->src), a->src.ld, n, a->count, a->damp,
                                                                add);
    cudaError_t st = cudaGetLastError();
    if (st == cudaSuccess) {
        k_damp_apply<<<fs_cu_blocks(a->count * n * n, T256), T256, 0, cb->s[q]>>>(FS_CU_F32(a->src), a->src.ld,
                                                                                 FS_CU_F32(a->dst), a->dst.ld, n,
                                                                                 a->count, add);
        st = cudaGetLastError();
    }
    if (st != cudaSuccess)
        rc = fs_ctx_err(ctx, FS_ERR_CUDA, "cuda damp: launch: %s (device %d)", cudaGetErrorName(st),
                        fs_cuda_cur_device());
    fs_cu_scratch_free(cb, q, add);
    return rc;
}

/* ---- the Cholesky factor of the inverse (invariant 3) ------------------------------------------------ */

static __global__ void k_reverse(float *A, int64_t nn)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < nn / 2; i += (int64_t)gridDim.x * blockDim.x) {
        const float t = A[i];
        A[i] = A[nn - 1 - i];
        A[nn - 1 - i] = t;
    }
}

/* status from a library's info (> 0: pivot of the reversed order), unless
 * an earlier stage set it */
static __global__ void k_chol_info(const int *info, int32_t *status, int64_t n)
{
    if (*status == 0 && *info > 0) *status = (int32_t)(n - *info + 1);
}

static __global__ void k_chol_finish(float *A, int64_t n, unsigned long long *first)
{
    const int64_t N = n * n;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < N; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = x / n, j = x % n;
        if (j < i) A[x] = 0.0f;
        else if (!isfinite(A[x])) atomicMin(first, (unsigned long long)x);
    }
}

static __global__ void k_chol_status(const unsigned long long *first, int32_t *status, int64_t n)
{
    if (*status == 0 && *first != ~0ull) *status = (int32_t)(*first % (unsigned long long)n + 1);
}

typedef struct chol_scratch {
    int *info;
    unsigned long long *first;
    void *dwork;
    void *hwork;
} chol_scratch;

static fs_status chol_run(fs_ctx *ctx, cuda_be *cb, int q, const fs_cholinv_args *a, chol_scratch *w)
{
    const int64_t n = a->A.cols;
    const cudaStream_t s = cb->s[q];
    int32_t *status = (int32_t *)fs_cu_at(a->status);
    FS_CUDA_CHECK(ctx, cudaMemsetAsync(status, 0, sizeof(int32_t) * (size_t)a->count, s));
    if (n == 0) return FS_OK;
    FS_TRY_CU(fit_int(ctx, "cholinv", "n", n));
    float *A0 = FS_CU_F32(a->A);
    int lw = 0;
    size_t dtri = 0, htri = 0;
    FS_CUSOLVER_CHECK(ctx, cusolverDnSpotrf_bufferSize(cb->solver[q], CUBLAS_FILL_MODE_UPPER, (int)n, A0, (int)n, &lw));
    FS_CUSOLVER_CHECK(ctx, cusolverDnXtrtri_bufferSize(cb->solver[q], CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n,
                                                       CUDA_R_32F, A0, n, &dtri, &htri));
    size_t dbytes = sizeof(float) * (size_t)lw;
    if (dtri > dbytes) dbytes = dtri;
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, &w->dwork, dbytes ? dbytes : 16, "cholinv: workspace"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&w->info, sizeof(int) * 2, "cholinv: info"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&w->first, sizeof(unsigned long long), "cholinv: first bad entry"));
    if (htri) {
        w->hwork = malloc(htri);
        if (!w->hwork) return fs_ctx_err(ctx, FS_ERR_NOMEM, "cholinv: host workspace of %zu bytes", htri);
    }
    const int64_t nn = n * n;
    for (int64_t m = 0; m < a->count; m++) {
        float *A = A0 + m * nn;
        int32_t *st = status + m;
        k_reverse<<<fs_cu_blocks(nn / 2, T256), T256, 0, s>>>(A, nn);                    /* J H J */
        FS_LAUNCH_CHECK(ctx, k_reverse);
        /* column-major 'U' = the row-major lower triangle (cpu/cholinv.c) */
        FS_CUSOLVER_CHECK(ctx, cusolverDnSpotrf(cb->solver[q], CUBLAS_FILL_MODE_UPPER, (int)n, A, (int)n,
                                                (float *)w->dwork, lw, w->info));
        k_chol_info<<<1, 1, 0, s>>>(w->info, st, n);
        FS_LAUNCH_CHECK(ctx, k_chol_info);
        FS_CUSOLVER_CHECK(ctx, cusolverDnXtrtri(cb->solver[q], CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n,
                                                CUDA_R_32F, A, n, w->dwork, dtri, w->hwork, htri, w->info + 1));
        k_chol_info<<<1, 1, 0, s>>>(w->info + 1, st, n);
        FS_LAUNCH_CHECK(ctx, k_chol_info);
        k_reverse<<<fs_cu_blocks(nn / 2, T256), T256, 0, s>>>(A, nn);                    /* U = J L^-1 J */
        FS_LAUNCH_CHECK(ctx, k_reverse);
        FS_CUDA_CHECK(ctx, cudaMemsetAsync(w->first, 0xff, sizeof(unsigned long long), s));
        k_chol_finish<<<fs_cu_blocks(nn, T256), T256, 0, s>>>(A, n, w->first);
        FS_LAUNCH_CHECK(ctx, k_chol_finish);
        k_chol_status<<<1, 1, 0, s>>>(w->first, st, n);
        FS_LAUNCH_CHECK(ctx, k_chol_status);
    }
    if (htri) FS_CUDA_CHECK(ctx, cudaStreamSynchronize(s));    /* the host workspace is freed next */
    return FS_OK;
}

fs_status fs_cu_op_cholinv(fs_ctx *ctx, cuda_be *cb, int q, const fs_cholinv_args *a)
{
    chol_scratch w = {NULL, NULL, NULL, NULL};
    fs_status rc = chol_run(ctx, cb, q, a, &w);
    if (rc != FS_OK && w.hwork) cudaStreamSynchronize(cb->s[q]);
    fs_cu_scratch_free(cb, q, w.dwork);
    fs_cu_scratch_free(cb, q, w.info);
    fs_cu_scratch_free(cb, q, w.first);
    free(w.hwork);
    return rc;
}

/* ---- the v1 slot: synchronous, with the CPU's messages ------------------------------------------------ */

static fs_status chol_sync_run(fs_ctx *ctx, cuda_be *cb, int q, float *A, int64_t n, chol_scratch *w)
{
    const cudaStream_t s = cb->s[q];
    int lw = 0;
    size_t dtri = 0, htri = 0;
    FS_CUSOLVER_CHECK(ctx, cusolverDnSpotrf_bufferSize(cb->solver[q], CUBLAS_FILL_MODE_UPPER, (int)n, A, (int)n, &lw));
    FS_CUSOLVER_CHECK(ctx, cusolverDnXtrtri_bufferSize(cb->solver[q], CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n,
                                                       CUDA_R_32F, A, n, &dtri, &htri));
    size_t dbytes = sizeof(float) * (size_t)lw;
    if (dtri > dbytes) dbytes = dtri;
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, &w->dwork, dbytes ? dbytes : 16, "chol_inv: workspace"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&w->info, sizeof(int) * 2, "chol_inv: info"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)&w->first, sizeof(unsigned long long), "chol_inv: first bad entry"));
    if (htri && !(w->hwork = malloc(htri)))
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "chol_inv: host workspace of %zu bytes", htri);
    const int64_t nn = n * n;
    int info = 0;
    k_reverse<<<fs_cu_blocks(nn / 2, T256), T256, 0, s>>>(A, nn);                        /* J H J */
    FS_LAUNCH_CHECK(ctx, k_reverse);
    FS_CUSOLVER_CHECK(ctx, cusolverDnSpotrf(cb->solver[q], CUBLAS_FILL_MODE_UPPER, (int)n, A, (int)n,
                                            (float *)w->dwork, lw, w->info));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(&info, w->info, sizeof info, cudaMemcpyDeviceToHost, s));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(s));
    if (info > 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is not positive definite (its trailing minor from "
                          "column %d)", (int)(n - info));
    if (info == 0) {
        FS_CUSOLVER_CHECK(ctx, cusolverDnXtrtri(cb->solver[q], CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n,
                                                CUDA_R_32F, A, n, w->dwork, dtri, w->hwork, htri, w->info + 1));
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(&info, w->info + 1, sizeof info, cudaMemcpyDeviceToHost, s));
        FS_CUDA_CHECK(ctx, cudaStreamSynchronize(s));
        if (info > 0)
            return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is singular (pivot at column %d)", (int)(n - info));
    }
    if (info < 0) return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: cuSOLVER argument %d", -info);
    k_reverse<<<fs_cu_blocks(nn / 2, T256), T256, 0, s>>>(A, nn);                        /* U = J L^-1 J */
    FS_LAUNCH_CHECK(ctx, k_reverse);
    FS_CUDA_CHECK(ctx, cudaMemsetAsync(w->first, 0xff, sizeof(unsigned long long), s));
    k_chol_finish<<<fs_cu_blocks(nn, T256), T256, 0, s>>>(A, n, w->first);
    FS_LAUNCH_CHECK(ctx, k_chol_finish);
    unsigned long long first = 0;
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(&first, w->first, sizeof first, cudaMemcpyDeviceToHost, s));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(s));
    if (first != ~0ull)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: non-finite factor at (%lld, %lld)",
                          (long long)(first / (unsigned long long)n), (long long)(first % (unsigned long long)n));
    return FS_OK;
}

fs_status fs_cu_cholinv_sync(fs_ctx *ctx, cuda_be *cb, int q, float *dA, int64_t n)
{
    chol_scratch w = {NULL, NULL, NULL, NULL};
    fs_status rc = chol_sync_run(ctx, cb, q, dA, n, &w);
    fs_cu_scratch_free(cb, q, w.dwork);
    fs_cu_scratch_free(cb, q, w.info);
    fs_cu_scratch_free(cb, q, w.first);
    cudaStreamSynchronize(cb->s[q]);                  /* the host workspace is no longer in use */
    free(w.hwork);
    return rc;
}
