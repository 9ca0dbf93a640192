/* backend-cuda.cu: the CUDA backend: cuBLAS (ssyrk, sgemm), cuSOLVER (potrf,
 * potri) and the kernels of cuda/kern-*.cu behind the v1 slots of
 * struct fs_backend_i (src/backend/backend-impl.h); the v2 slots are NULL.  Owns one stream, one cuBLAS and
 * one cuSOLVER handle per backend (struct cuda_be, be->context).
 *
 * Invariants:
 *  1. Every slot takes host memory, copies in, computes on the backend's
 *     stream, copies out and synchronizes before it returns, so the caller may
 *     free or reuse its buffers at once.
 *  2. A slot that allocates device memory keeps it in a dev_bufs list; the
 *     work runs in a helper that returns on the first failure (cuda/check.h)
 *     and the slot frees the list whatever the helper returned.
 *  3. Layouts: a row-major [m, n] matrix is the column-major [n, m] matrix
 *     with the same leading dimension; every cuBLAS/cuSOLVER call below is the
 *     column-major reading of the row-major operation in its comment.
 *  4. The results match the CPU backend: grids and the in-block GPTQ pass bit
 *     for bit (cuda/grid-dev.cuh, cuda/kern-gptq.cu); the Hessian, the
 *     Cholesky factor and the trailing GPTQ update up to the summation order of
 *     the libraries.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend/backend-impl.h"
#include "cuda/check.h"
#include "cuda/kern.h"

typedef struct cuda_be {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
} cuda_be;

typedef struct hess_cuda {
    int64_t in;
    float *dH;          /* [in, in]; row-major upper triangle holds the sum */
    float *dX;          /* upload buffer for one chunk */
    int64_t xrows;      /* rows dX can hold */
} hess_cuda;

/* ---- device buffers (invariant 2) ---------------------------------------- */

#define FS_DEV_BUFS 8

typedef struct dev_bufs {
    void *p[FS_DEV_BUFS];
    int n;
} dev_bufs;

static void bufs_free(dev_bufs *b)
{
    for (int i = 0; i < b->n; i++) cudaFree(b->p[i]);
    b->n = 0;
}

/* *out = device array of count elements of T, recorded in b. */
template <typename T>
static fs_status bufs_alloc(fs_ctx *ctx, dev_bufs *b, T **out, int64_t count, const char *what)
{
    size_t bytes;
    *out = NULL;
    if (count < 0 || fs_mul_size((size_t)(count > 0 ? count : 1), sizeof(T), &bytes) != 0)
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda: %s: %lld elements overflow", what,
                          (long long)count);
    if (b->n == FS_DEV_BUFS)
        return fs_ctx_err(ctx, FS_ERR_CUDA, "cuda: %s: too many device buffers", what);
    void *p = NULL;
    cudaError_t st = cudaMalloc(&p, bytes);
    if (st != cudaSuccess) {
        cudaGetLastError();                         /* not sticky: clear it */
        return fs_ctx_err(ctx, FS_ERR_CUDA, "cudaMalloc of %s (%zu bytes) at %s:%d: %s (device %d)",
                          what, bytes, __FILE__, __LINE__, cudaGetErrorName(st),
                          fs_cuda_cur_device());
    }
    b->p[b->n++] = p;
    *out = (T *)p;
    return FS_OK;
}

#define FS_TRY(expr)                       \
    do {                                   \
        fs_status fs_try_rc_ = (expr);     \
        if (fs_try_rc_ != FS_OK) return fs_try_rc_; \
    } while (0)

static cuda_be *cb_of(fs_backend *be)
{
    return (cuda_be *)be->context;
}

/* cuBLAS and cuSOLVER take int sizes. */
static fs_status fit_int(fs_ctx *ctx, const char *what, int64_t v)
{
    if (v < 0 || v > INT_MAX)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda: %s = %lld does not fit cuBLAS/cuSOLVER",
                          what, (long long)v);
    return FS_OK;
}

/* ---- name, free, synchronize --------------------------------------------- */

static const char *cuda_name(fs_backend *be)
{
    (void)be;
    return "cuda";
}

static void cuda_ctx_destroy(cuda_be *cb)
{
    if (!cb) return;
    if (cb->solver) cusolverDnDestroy(cb->solver);
    if (cb->blas) cublasDestroy(cb->blas);
    if (cb->stream) cudaStreamDestroy(cb->stream);
    free(cb);
}

static void cuda_free(fs_backend *be)
{
    cuda_ctx_destroy(cb_of(be));
    free(be);
}

static fs_status cuda_synchronize(fs_ctx *ctx, fs_backend *be)
{
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb_of(be)->stream));
    return FS_OK;
}

/* ---- Hessian ---------------------------------------------------------------- */

static void cuda_hess_free(fs_backend *be, void *state)
{
    (void)be;
    hess_cuda *h = (hess_cuda *)state;
    if (!h) return;
    cudaFree(h->dX);
    cudaFree(h->dH);
    free(h);
}

static fs_status hess_new_run(fs_ctx *ctx, cuda_be *cb, hess_cuda *h)
{
    size_t bytes;
    FS_TRY(fit_int(ctx, "hessian width", h->in));
    if (h->in < 0 || fs_mul_size((size_t)h->in * (size_t)h->in, sizeof(float), &bytes) != 0)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda hessian: bad width %lld", (long long)h->in);
    if (bytes == 0) bytes = sizeof(float);       /* in = 0: an empty sum */
    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    FS_CUDA_CHECK(ctx, cudaMalloc(&h->dH, bytes));
    FS_CUDA_CHECK(ctx, cudaMemsetAsync(h->dH, 0, bytes, cb->stream));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));
    return FS_OK;
}

static fs_status cuda_hess_new(fs_ctx *ctx, fs_backend *be, int64_t in, void **state)
{
    hess_cuda *h = (hess_cuda *)calloc(1, sizeof *h);
    if (!h) return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda hessian state");
    h->in = in;
    fs_status rc = hess_new_run(ctx, cb_of(be), h);
    if (rc != FS_OK) {
        cuda_hess_free(be, h);
        return rc;
    }
    *state = h;
    return FS_OK;
}

static fs_status cuda_hess_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x,
                               int64_t rows)
{
    cuda_be *cb = cb_of(be);
    hess_cuda *h = (hess_cuda *)state;
    const float one = 1.0f;
    size_t bytes;
    if (rows <= 0) return FS_OK;
    FS_TRY(fit_int(ctx, "hessian chunk rows", rows));
    if (fs_mul_size((size_t)rows * (size_t)h->in, sizeof(float), &bytes) != 0)
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda hessian: chunk of %lld rows overflows",
                          (long long)rows);
    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    if (rows > h->xrows) {                     /* grow the upload buffer */
        FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));
        cudaFree(h->dX);
        h->dX = NULL;
        h->xrows = 0;
        FS_CUDA_CHECK(ctx, cudaMalloc(&h->dX, bytes));
        h->xrows = rows;
    }
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(h->dX, x, bytes, cudaMemcpyHostToDevice, cb->stream));
    /* row-major H(upper) += X^T X, X [rows, in]  ==  column-major H(lower) += A A^T,
     * A = X^T [in, rows] with lda = in (invariant 3) */
    FS_CUBLAS_CHECK(ctx, cublasSsyrk(cb->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)h->in,
                                     (int)rows, &one, h->dX, (int)h->in, &one, h->dH,
                                     (int)h->in));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));   /* x may be freed */
    return FS_OK;
}

static fs_status cuda_hess_get(fs_ctx *ctx, fs_backend *be, void *state, float *H)
{
    cuda_be *cb = cb_of(be);
    hess_cuda *h = (hess_cuda *)state;
    const size_t bytes = (size_t)h->in * (size_t)h->in * sizeof(float);
    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    /* the mirror writes only the row-major lower triangle, which ssyrk never
     * reads: the state stays valid for further adds */
    FS_TRY(fs_cuda_tri(ctx, h->dH, h->in, FS_TRI_MIRROR, cb->stream));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(H, h->dH, bytes, cudaMemcpyDeviceToHost, cb->stream));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));
    return FS_OK;
}

/* ---- Cholesky factor of the inverse --------------------------------------- */

/* devInfo of the last cuSOLVER call, on the host. */
static fs_status read_info(fs_ctx *ctx, cuda_be *cb, const int *dinfo, int *info)
{
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(info, dinfo, sizeof(int), cudaMemcpyDeviceToHost,
                                       cb->stream));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));
    return FS_OK;
}

/* potrf, potri, potrf on the column-major 'L' triangle of the row-major
 * buffer, i.e. its row-major upper triangle: the same U as the CPU's
 * potrf + trtri of the reversed matrix (hessian/cholinv.c), up to rounding. */
static fs_status chol_inv_run(fs_ctx *ctx, cuda_be *cb, dev_bufs *b, float *A, int64_t n)
{
    const cublasFillMode_t lo = CUBLAS_FILL_MODE_LOWER;
    const size_t bytes = (size_t)n * (size_t)n * sizeof(float);
    float *dA, *dwork;
    int *dinfo, info = 0, lw1 = 0, lw2 = 0;
    FS_TRY(fit_int(ctx, "chol_inv size", n));
    if (n == 0) return FS_OK;
    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    FS_TRY(bufs_alloc(ctx, b, &dA, n * n, "chol_inv matrix"));
    FS_TRY(bufs_alloc(ctx, b, &dinfo, 1, "chol_inv info"));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dA, A, bytes, cudaMemcpyHostToDevice, cb->stream));
    FS_CUSOLVER_CHECK(ctx, cusolverDnSpotrf_bufferSize(cb->solver, lo, (int)n, dA, (int)n, &lw1));
    FS_CUSOLVER_CHECK(ctx, cusolverDnSpotri_bufferSize(cb->solver, lo, (int)n, dA, (int)n, &lw2));
    const int lwork = lw1 > lw2 ? lw1 : lw2;
    FS_TRY(bufs_alloc(ctx, b, &dwork, lwork, "chol_inv workspace"));

    FS_CUSOLVER_CHECK(ctx, cusolverDnSpotrf(cb->solver, lo, (int)n, dA, (int)n, dwork, lwork,
                                            dinfo));
    FS_TRY(read_info(ctx, cb, dinfo, &info));
    if (info > 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC,
                          "cholesky: H is not positive definite (leading minor %d)", info);
    if (info == 0) {
        FS_CUSOLVER_CHECK(ctx, cusolverDnSpotri(cb->solver, lo, (int)n, dA, (int)n, dwork, lwork,
                                                dinfo));
        FS_TRY(read_info(ctx, cb, dinfo, &info));
        if (info > 0)
            return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: H is singular (pivot %d)", info);
    }
    if (info == 0) {
        FS_CUSOLVER_CHECK(ctx, cusolverDnSpotrf(cb->solver, lo, (int)n, dA, (int)n, dwork, lwork,
                                                dinfo));
        FS_TRY(read_info(ctx, cb, dinfo, &info));
        if (info > 0)
            return fs_ctx_err(ctx, FS_ERR_NUMERIC,
                              "cholesky: H^-1 is not positive definite (leading minor %d)", info);
    }
    if (info < 0)
        return fs_ctx_err(ctx, FS_ERR_NUMERIC, "cholesky: cuSOLVER argument %d", -info);

    FS_TRY(fs_cuda_tri(ctx, dA, n, FS_TRI_ZERO_LOWER, cb->stream));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(A, dA, bytes, cudaMemcpyDeviceToHost, cb->stream));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++)
            if (!isfinite(A[i * n + j]))
                return fs_ctx_err(ctx, FS_ERR_NUMERIC,
                                  "cholesky: non-finite factor at (%lld, %lld)", (long long)i,
                                  (long long)j);
    return FS_OK;
}

static fs_status cuda_chol_inv(fs_ctx *ctx, fs_backend *be, float *A, int64_t n)
{
    dev_bufs b = {{NULL}, 0};
    fs_status rc = chol_inv_run(ctx, cb_of(be), &b, A, n);
    bufs_free(&b);
    return rc;
}

/* ---- grids ------------------------------------------------------------------ */

/* Device copy of the candidate factors; the rest of gp by value. */
static fs_status gp_upload(fs_ctx *ctx, cuda_be *cb, dev_bufs *b, const fs_grid_params *gp,
                           fs_cuda_gp *out)
{
    float *dp;
    if (gp->hmse)                            /* the weighted search has no kernel yet */
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--grid hmse: not on the CUDA backend yet (use --backend cpu)");
    out->bits = gp->bits;
    out->sym = gp->sym;
    out->mse = gp->mse;
    out->gptq_v1 = gp->gptq_v1;
    out->n = gp->n;
    out->maxq = gp->maxq;
    out->norm = gp->norm;
    FS_TRY(bufs_alloc(ctx, b, &dp, gp->n, "grid candidates"));
    if (gp->n > 0)
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dp, gp->p, sizeof(float) * (size_t)gp->n,
                                           cudaMemcpyHostToDevice, cb->stream));
    out->p = dp;
    return FS_OK;
}

static fs_status grid_run(fs_ctx *ctx, cuda_be *cb, dev_bufs *b, const fs_grid_params *gp,
                          const float *W, int64_t rows, int64_t cols, int64_t gw,
                          uint8_t *qmeta)
{
    if (rows <= 0 || cols <= 0) return FS_OK;
    if (gw <= 0)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda grid: group width %lld", (long long)gw);
    const int64_t ng = (cols + gw - 1) / gw;
    float *dW;
    uint8_t *dq;
    fs_cuda_gp g;
    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    FS_TRY(bufs_alloc(ctx, b, &dW, rows * cols, "grid weights"));
    FS_TRY(bufs_alloc(ctx, b, &dq, rows * ng * 4, "grid qmeta"));
    FS_TRY(gp_upload(ctx, cb, b, gp, &g));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dW, W, sizeof(float) * (size_t)(rows * cols),
                                       cudaMemcpyHostToDevice, cb->stream));
    FS_TRY(fs_cuda_grid(ctx, &g, dW, rows, cols, gw, dq, cb->stream));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(qmeta, dq, (size_t)(rows * ng * 4),
                                       cudaMemcpyDeviceToHost, cb->stream));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));
    return FS_OK;
}

static fs_status cuda_grid(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp,
                           const float *W, int64_t rows, int64_t cols, int64_t gw,
                           uint8_t *qmeta)
{
    dev_bufs b = {{NULL}, 0};
    fs_status rc = grid_run(ctx, cb_of(be), &b, gp, W, rows, cols, gw, qmeta);
    bufs_free(&b);
    return rc;
}

/* ---- the GPTQ solve ----------------------------------------------------------- */

static fs_status gptq_run(fs_ctx *ctx, cuda_be *cb, dev_bufs *b, const fs_gptq_job *job)
{
    const int64_t R = job->rows, C = job->cols, ng = job->ngroups, gw = job->gw;
    const int dynamic = job->gcol == NULL;
    if (R <= 0 || C <= 0) return FS_OK;
    if (job->block < 1 || gw <= 0 || ng < 1)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda gptq: block %d, group width %lld, %lld groups",
                          job->block, (long long)gw, (long long)ng);
    FS_TRY(fit_int(ctx, "gptq rows", R));
    FS_TRY(fit_int(ctx, "gptq cols", C));
    const int64_t nbmax = job->block < C ? job->block : C;
    float *dW, *dU, *dErr;
    uint8_t *dcodes, *dq;
    int32_t *dgcol = NULL;
    fs_cuda_gp g;
    const float minus1 = -1.0f, one = 1.0f;

    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    FS_TRY(bufs_alloc(ctx, b, &dW, R * C, "gptq weights"));
    FS_TRY(bufs_alloc(ctx, b, &dU, C * C, "gptq U"));
    FS_TRY(bufs_alloc(ctx, b, &dErr, R * nbmax, "gptq errors"));
    FS_TRY(bufs_alloc(ctx, b, &dcodes, R * C, "gptq codes"));
    FS_TRY(bufs_alloc(ctx, b, &dq, R * ng * 4, "gptq qmeta"));
    if (!dynamic) FS_TRY(bufs_alloc(ctx, b, &dgcol, C, "gptq group map"));
    FS_TRY(gp_upload(ctx, cb, b, job->gp, &g));

    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dW, job->W, sizeof(float) * (size_t)(R * C),
                                       cudaMemcpyHostToDevice, cb->stream));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dU, job->U, sizeof(float) * (size_t)(C * C),
                                       cudaMemcpyHostToDevice, cb->stream));
    if (!dynamic) {
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dq, job->qmeta, (size_t)(R * ng * 4),
                                           cudaMemcpyHostToDevice, cb->stream));
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dgcol, job->gcol, sizeof(int32_t) * (size_t)C,
                                           cudaMemcpyHostToDevice, cb->stream));
    }

    for (int64_t i1 = 0; i1 < C;) {                 /* the blocks of fs_gptq_cpu */
        int64_t i2 = i1 + job->block < C ? i1 + job->block : C;
        if (dynamic) {
            int64_t gnext = (i1 / gw + 1) * gw;
            if (gnext < i2) i2 = gnext;
        }
        const int64_t nb = i2 - i1;
        FS_TRY(fs_cuda_gptq_block(ctx, &g, dW, dU, dcodes, dq, dgcol, dErr, R, C, ng, gw, i1,
                                  i2, cb->stream));
        if (i2 < C)
            /* row-major W[:, i2:] -= Err[:, 0:nb] @ U[i1:i2, i2:]  ==  column-major
             * C(C-i2 x R) -= A(C-i2 x nb) B(nb x R), A = U + i1*C + i2 (lda C),
             * B = Err (ldb nb), C = W + i2 (ldc C) (invariant 3) */
            FS_CUBLAS_CHECK(ctx, cublasSgemm(cb->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)(C - i2),
                                             (int)R, (int)nb, &minus1, dU + i1 * C + i2, (int)C,
                                             dErr, (int)nb, &one, dW + i2, (int)C));
        i1 = i2;
    }

    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(job->W, dW, sizeof(float) * (size_t)(R * C),
                                       cudaMemcpyDeviceToHost, cb->stream));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(job->codes, dcodes, (size_t)(R * C),
                                       cudaMemcpyDeviceToHost, cb->stream));
    if (dynamic)
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(job->qmeta, dq, (size_t)(R * ng * 4),
                                           cudaMemcpyDeviceToHost, cb->stream));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->stream));
    return FS_OK;
}

static fs_status cuda_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job)
{
    dev_bufs b = {{NULL}, 0};
    fs_status rc = gptq_run(ctx, cb_of(be), &b, job);
    if (rc != FS_OK) cudaStreamSynchronize(cb_of(be)->stream);   /* nothing in flight */
    bufs_free(&b);
    return rc;
}

/* ---- the table and the constructor ------------------------------------------ */

static const struct fs_backend_i cuda_iface = {
    /* .name        = */ cuda_name,
    /* .free        = */ cuda_free,
    /* the v2 interface (buffers, queues, events, ops) is the next issue's: its
     * slots are NULL, so the dispatcher answers FS_ERR_NODEV ("op gemm is not
     * implemented on cuda") */
    /* .buf_alloc   = */ NULL,
    /* .buf_free    = */ NULL,
    /* .host_alloc  = */ NULL,
    /* .host_free   = */ NULL,
    /* .upload      = */ NULL,
    /* .download    = */ NULL,
    /* .event_init  = */ NULL,
    /* .event_fini  = */ NULL,
    /* .record      = */ NULL,
    /* .wait        = */ NULL,
    /* .event_sync  = */ NULL,
    /* .event_done  = */ NULL,
    /* .queue_sync  = */ NULL,
    /* .hold        = */ NULL,
    /* .fill        = */ NULL,
    /* .gemm        = */ NULL,
    /* .bias_add    = */ NULL,
    /* .add         = */ NULL,
    /* .copy        = */ NULL,
    /* .hess_acc    = */ NULL,
    /* .hess_finish = */ NULL,
    /* .hess_wave   = */ NULL,
    /* .damp        = */ NULL,
    /* .cholinv     = */ NULL,
    /* .grid_op     = */ NULL,
    /* .gptq_op     = */ NULL,
    /* .rtn         = */ NULL,
    /* .decode      = */ NULL,
    /* .permute     = */ NULL,
    /* .rmsnorm     = */ NULL,
    /* .rope        = */ NULL,
    /* .attention   = */ NULL,
    /* .swiglu      = */ NULL,
    /* .route       = */ NULL,
    /* .route_lists = */ NULL,
    /* .gather      = */ NULL,
    /* .scatter_add = */ NULL,
    /* .loss        = */ NULL,
    /* .pack        = */ NULL,
    /* .hess_new    = */ cuda_hess_new,
    /* .hess_add    = */ cuda_hess_add,
    /* .hess_get    = */ cuda_hess_get,
    /* .hess_free   = */ cuda_hess_free,
    /* .chol_inv    = */ cuda_chol_inv,
    /* .grid        = */ cuda_grid,
    /* .gptq        = */ cuda_gptq,
    /* .synchronize = */ cuda_synchronize,
};

static fs_status cuda_ctx_create(fs_ctx *ctx, cuda_be *cb)
{
    FS_CUDA_CHECK(ctx, cudaGetDevice(&cb->device));
    FS_CUDA_CHECK(ctx, cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
    FS_CUBLAS_CHECK(ctx, cublasCreate(&cb->blas));
    FS_CUBLAS_CHECK(ctx, cublasSetStream(cb->blas, cb->stream));
    /* full f32 products (no TF32): the trailing update must track the CPU */
    FS_CUBLAS_CHECK(ctx, cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH));
    FS_CUSOLVER_CHECK(ctx, cusolverDnCreate(&cb->solver));
    FS_CUSOLVER_CHECK(ctx, cusolverDnSetStream(cb->solver, cb->stream));
    return FS_OK;
}

extern "C" fs_status fs_backend_cuda_new(fs_ctx *ctx, fs_backend **out)
{
    *out = NULL;
    cuda_be *cb = (cuda_be *)calloc(1, sizeof *cb);
    fs_backend *be = (fs_backend *)calloc(1, sizeof *be);
    if (!cb || !be) {
        free(cb);
        free(be);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda backend");
    }
    fs_status rc = cuda_ctx_create(ctx, cb);
    if (rc != FS_OK) {
        cuda_ctx_destroy(cb);
        free(be);
        return rc;
    }
    be->iface = cuda_iface;
    be->context = cb;
    *out = be;
    return FS_OK;
}

extern "C" int fs_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();                         /* leave no error behind */
        return 0;
    }
    return n > 0 ? n : 0;
}
