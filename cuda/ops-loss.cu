/* ops-loss.cu: the layer loss trace((W - D) H (W - D)^T) of the CUDA backend
 * in cpu/loss.c's three modes: EXACT (E and H in double, cublasDgemm per
 * slab of rows), F32 (cublasSgemm per slab), EST (the FS_LOSS_EST_ROWS rows
 * i * rows / S, scaled by rows / S).
 *
 * Invariants:
 *  1. The sum of T .* E of each slab is one block's fixed-order reduction in
 *     double, added to out on the stream in slab order: deterministic, equal
 *     to the CPU's up to the GEMMs' and this reduction's summation order.
 *  2. Rows of a slab: r0 + i (EXACT, F32) or i * rows / S (EST), as the CPU.
 */
#include <limits.h>

#include "cuda/cuda-be.h"

#define LOSS_SLAB 1024
#define LOSS_THREADS 1024

/* E [m, cols] = W - D of rows row(i) (est: i * rows / S, else r0 + i) */
template <typename T>
static __global__ void k_loss_e(const float *W, int64_t ldw, const float *D, int64_t ldd, int64_t r0, int64_t m,
                                int64_t cols, int est, int64_t rows, int64_t S, T *E)
{
    const int64_t n = m * cols;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = x / cols, k = x % cols, r = est ? i * rows / S : r0 + i;
        if (sizeof(T) == sizeof(double))
            E[x] = (T)((double)W[r * ldw + k] - (D ? (double)D[r * ldd + k] : 0.0));
        else
            E[x] = (T)(W[r * ldw + k] - (D ? D[r * ldd + k] : 0.0f));
    }
}

template <typename T>
static __global__ void k_loss_sum(const T *Tm, const T *E, int64_t n, double *out, double scale, int last)
{
    __shared__ double part[LOSS_THREADS];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += (double)Tm[i] * (double)E[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        *out += part[0];
        if (last) *out *= scale;
    }
}

static __global__ void k_f32_to_f64(const float *H, int64_t ldh, int64_t n, double *Hd)
{
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n * n; x += (int64_t)gridDim.x * blockDim.x)
        Hd[x] = H[(x / n) * ldh + x % n];
}

typedef struct loss_scratch { void *E, *T, *Hd; } loss_scratch;

template <typename T>
static fs_status loss_run(fs_ctx *ctx, cuda_be *cb, int q, const fs_loss_args *a, loss_scratch *s)
{
    const cudaStream_t st = cb->s[q];
    const int64_t rows = a->W.rows, cols = a->W.cols;
    double *out = (double *)fs_cu_at(a->out);
    FS_CUDA_CHECK(ctx, cudaMemsetAsync(out, 0, sizeof(double), st));
    if (rows == 0 || cols == 0) return FS_OK;
    if (cols > INT_MAX || a->H.ld > INT_MAX) return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda loss: %lld columns", (long long)cols);
    const int est = a->mode == FS_LOSS_EST;
    const int64_t S = est ? (rows < FS_LOSS_EST_ROWS ? rows : FS_LOSS_EST_ROWS) : 0;
    const int64_t slab = est ? S : (rows < LOSS_SLAB ? rows : LOSS_SLAB);
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, &s->E, sizeof(T) * (size_t)(slab * cols), "loss: errors"));
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, &s->T, sizeof(T) * (size_t)(slab * cols), "loss: products"));
    const void *H = fs_cu_at(a->H);
    int64_t ldh = a->H.ld;
    if (sizeof(T) == sizeof(double) && a->H.dt == FS_DT_F32) {
        FS_TRY_CU(fs_cu_scratch(ctx, cb, q, &s->Hd, sizeof(double) * (size_t)(cols * cols), "loss: H in double"));
        k_f32_to_f64<<<fs_cu_blocks(cols * cols, 256), 256, 0, st>>>((const float *)H, ldh, cols, (double *)s->Hd);
        FS_LAUNCH_CHECK(ctx, k_f32_to_f64);
        H = s->Hd;
        ldh = cols;
    }
    const float *W = FS_CU_F32(a->W), *D = a->D.buf ? FS_CU_F32(a->D) : NULL;
    const int64_t ldd = a->D.buf ? a->D.ld : 0;
    const int64_t total = est ? S : rows;
    for (int64_t r0 = 0; r0 < total; r0 += slab) {
        const int64_t m = total - r0 < slab ? total - r0 : slab;
        T *E = (T *)s->E, *Tm = (T *)s->T;
        k_loss_e<T><<<fs_cu_blocks(m * cols, 256), 256, 0, st>>>(W, a->W.ld, D, ldd, r0, m, cols, est, rows, S, E);
        FS_LAUNCH_CHECK(ctx, k_loss_e);
        /* row-major Tm [m, cols] = E [m, cols] H [cols, cols]  ==  column-major Tm' = H' E' */
        if (sizeof(T) == sizeof(double)) {
            const double one = 1.0, zero = 0.0;
            FS_CUBLAS_CHECK(ctx, cublasDgemm(cb->blas[q], CUBLAS_OP_N, CUBLAS_OP_N, (int)cols, (int)m, (int)cols, &one,
                                             (const double *)H, (int)ldh, (const double *)E, (int)cols, &zero,
                                             (double *)Tm, (int)cols));
        } else {
            const float one = 1.0f, zero = 0.0f;
            FS_CUBLAS_CHECK(ctx, cublasSgemm(cb->blas[q], CUBLAS_OP_N, CUBLAS_OP_N, (int)cols, (int)m, (int)cols, &one,
                                             (const float *)H, (int)ldh, (const float *)E, (int)cols, &zero,
                                             (float *)Tm, (int)cols));
        }
        const int last = r0 + m >= total;
        k_loss_sum<T><<<1, LOSS_THREADS, 0, st>>>(Tm, E, m * cols, out, est ? (double)rows / (double)S : 1.0, last);
        FS_LAUNCH_CHECK(ctx, k_loss_sum);
    }
    return FS_OK;
}

fs_status fs_cu_op_loss(fs_ctx *ctx, cuda_be *cb, int q, const fs_loss_args *a)
{
    loss_scratch s = {NULL, NULL, NULL};
    fs_status rc = a->mode == FS_LOSS_EXACT ? loss_run<double>(ctx, cb, q, a, &s) : loss_run<float>(ctx, cb, q, a, &s);
    fs_cu_scratch_free(cb, q, s.E);
    fs_cu_scratch_free(cb, q, s.T);
    fs_cu_scratch_free(cb, q, s.Hd);
    return rc;
}
