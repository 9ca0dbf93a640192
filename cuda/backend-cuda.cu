/* backend-cuda.cu: the CUDA backend: the v2 interface of
 * src/backend/backend-impl.h (device buffers against the dispatcher's budget,
 * page-locked host staging, three queues as three streams, events as
 * cudaEvents, asynchronous uploads and downloads, the ops of cuda/ops-(name).cu)
 * and the v1 host-pointer slots of today's pipeline (cuBLAS ssyrk, the
 * Cholesky factor by cpu/cholinv.c's algorithm with its messages, the grid
 * and GPTQ kernels, each synchronous).
 *
 * Invariants:
 *  1. v1 slots take host memory, copy in, compute on the compute stream,
 *     copy out and synchronize before they return, so the caller may free or
 *     reuse its buffers at once; their device memory is in a dev_bufs list
 *     freed whatever the helper returned (cuda/check.h).
 *  2. v2: queue q is stream s[q] (cuda/cuda-be.h); nothing in a v2 call
 *     synchronises the device except the syncs the caller asks for (and
 *     hess_wave, cuda-be.h invariant 3).  Buffers are cudaMalloc'd (so
 *     fs_be_free, which cudaFree's, waits for the device: backend.h
 *     invariant 7); staging is cudaHostAlloc'd.
 *  3. Sticky errors per queue (cuda-be.h invariant 2): every call on q
 *     returns q's error first; an op's failure is q's from then on.
 *  4. Layouts: a row-major [m, n] matrix is the column-major [n, m] matrix
 *     with the same leading dimension (ops-blas.cu invariant 1).
 *  5. Results match the CPU backend: grids and the in-block GPTQ pass bit
 *     for bit (cuda/grid-dev.cuh, cuda/kern-gptq.cu); sums of the libraries
 *     (ssyrk, gemm, potrf) up to their summation order.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda-be.h"

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
    for (int q = 0; q < FS_QUEUE_COUNT; q++)
        if (cb->s[q]) cudaStreamSynchronize(cb->s[q]);          /* the queues drain */
    for (int q = 0; q < FS_QUEUE_COUNT; q++) {
        if (cb->solver[q]) cusolverDnDestroy(cb->solver[q]);
        if (cb->blas[q]) cublasDestroy(cb->blas[q]);
        if (cb->s[q]) cudaStreamDestroy(cb->s[q]);
    }
    if (cb->derr) cudaFree(cb->derr);
    if (cb->have_mu) {
        pthread_mutex_destroy(&cb->mu);
        for (int q = 0; q < FS_QUEUE_COUNT; q++) pthread_mutex_destroy(&cb->qmu[q]);
    }
    free(cb);
}

static void cuda_free(fs_backend *be)
{
    cuda_ctx_destroy(cb_of(be));
    free(be);
}

static fs_status cuda_synchronize(fs_ctx *ctx, fs_backend *be)
{
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb_of(be)->s[FS_QUEUE_COMPUTE]));
    return FS_OK;
}

/* ---- v2: sticky errors (invariant 3, cuda-be.h invariant 2) ---------------------------- */

static fs_status sticky(fs_ctx *ctx, cuda_be *cb, int q)
{
    pthread_mutex_lock(&cb->mu);
    fs_status rc = cb->err[q];
    if (rc != FS_OK) fs_ctx_err(ctx, rc, "%s", cb->msg[q]);
    pthread_mutex_unlock(&cb->mu);
    return rc;
}

/* Marks q failed with rc / msg (the first failure stays) and reports it. */
static fs_status fail(fs_ctx *ctx, cuda_be *cb, int q, fs_status rc, const char *msg)
{
    pthread_mutex_lock(&cb->mu);
    if (cb->err[q] == FS_OK) {
        cb->err[q] = rc;
        snprintf(cb->msg[q], sizeof cb->msg[q], "cuda, %s queue: %.400s", fs_queue_name((fs_queue)q), msg);
    }
    fs_ctx_err(ctx, cb->err[q], "%s", cb->msg[q]);
    rc = cb->err[q];
    pthread_mutex_unlock(&cb->mu);
    return rc;
}

static const char *derr_what(int code)
{
    switch (code) {
    case FS_CU_DERR_GATHER: return "gather: a row index is outside the source's rows";
    case FS_CU_DERR_SCATTER: return "scatter_add: a row index is outside the destination's rows";
    case FS_CU_DERR_PERMUTE: return "permute: a permutation entry is outside [0, cols)";
    case FS_CU_DERR_HESS_WAVE: return "hess_wave: a row of an expert's list is outside X's rows";
    case FS_CU_DERR_LISTS: return "route_lists: an expert index is outside [0, E)";
    default: return "a kernel reported bad data";
    }
}

/* After the host has synchronised with q: an asynchronous fault of the
 * device, or a data error a kernel wrote into derr[q], becomes q's sticky
 * error. */
static fs_status after_sync(fs_ctx *ctx, cuda_be *cb, int q, cudaError_t st)
{
    if (st != cudaSuccess) {
        char m[256];
        snprintf(m, sizeof m, "the device failed: %s (%s)", cudaGetErrorName(st), cudaGetErrorString(st));
        return fail(ctx, cb, q, FS_ERR_CUDA, m);
    }
    int code = 0;
    st = cudaMemcpy(&code, cb->derr + q, sizeof code, cudaMemcpyDeviceToHost);
    if (st != cudaSuccess) {
        char m[256];
        snprintf(m, sizeof m, "reading the error word: %s", cudaGetErrorName(st));
        return fail(ctx, cb, q, FS_ERR_CUDA, m);
    }
    if (code != 0) return fail(ctx, cb, q, FS_ERR_FORMAT, derr_what(code));
    return sticky(ctx, cb, q);
}

/* The calling thread's current device is the backend's (a host thread may
 * have another one current: a stream of one device takes no work from
 * another). */
static fs_status use_device(fs_ctx *ctx, cuda_be *cb, int q)
{
    cudaError_t st = cudaSetDevice(cb->device);
    if (st == cudaSuccess) return FS_OK;
    char m[128];
    snprintf(m, sizeof m, "cudaSetDevice(%d): %s", cb->device, cudaGetErrorName(st));
    return fail(ctx, cb, q, FS_ERR_CUDA, m);
}

/* ---- v2: memory ----------------------------------------------------------------------------- */

static fs_status cuda_buf_alloc(fs_ctx *ctx, fs_backend *be, fs_buf *buf)
{
    cuda_be *cb = cb_of(be);
    size_t free_b = 0, total_b = 0;
    cudaError_t st = cudaSetDevice(cb->device);
    if (st == cudaSuccess) st = cudaMalloc(&buf->data, (size_t)(buf->size ? buf->size : 64));
    if (st != cudaSuccess) {
        cudaGetLastError();
        buf->data = NULL;
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda: %s: cudaMalloc of %llu bytes failed: %s (%zu of %zu bytes free "
                          "on device %d)", buf->what, (unsigned long long)buf->size, cudaGetErrorName(st), free_b,
                          total_b, cb->device);
    }
    return FS_OK;
}

static void cuda_buf_free(fs_backend *be, fs_buf *buf)
{
    cuda_be *cb = cb_of(be);
    /* backend.h invariant 7: every queue first (cudaFree alone need not wait
     * for work on non-blocking streams) */
    for (int q = 0; q < FS_QUEUE_COUNT; q++) cudaStreamSynchronize(cb->s[q]);
    cudaFree(buf->data);
    buf->data = NULL;
}

static fs_status cuda_host_alloc(fs_ctx *ctx, fs_backend *be, uint64_t bytes, void **p)
{
    (void)be;
    cudaError_t st = cudaHostAlloc(p, (size_t)bytes, cudaHostAllocPortable);
    if (st != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda: page-locked host staging memory of %llu bytes: %s",
                          (unsigned long long)bytes, cudaGetErrorName(st));
    }
    if ((uintptr_t)*p % 4096 != 0) {                /* backend.h: 4096-aligned (O_DIRECT reads) */
        cudaFreeHost(*p);
        *p = NULL;
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda: page-locked host memory of %llu bytes is not 4096-aligned",
                          (unsigned long long)bytes);
    }
    return FS_OK;
}

static void cuda_host_free(fs_backend *be, void *p)
{
    (void)be;
    cudaFreeHost(p);
}

/* ---- v2: copies, events, syncs --------------------------------------------------------------- */

static fs_status cuda_upload(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_buf *dst, uint64_t off, const void *src,
                             uint64_t n)
{
    cuda_be *cb = cb_of(be);
    fs_status rc = sticky(ctx, cb, q);
    if (rc != FS_OK || n == 0 || (rc = use_device(ctx, cb, q)) != FS_OK) return rc;
    cudaError_t st = cudaMemcpyAsync((char *)dst->data + off, src, (size_t)n, cudaMemcpyHostToDevice, cb->s[q]);
    if (st != cudaSuccess) {
        char m[256];
        snprintf(m, sizeof m, "upload of %llu bytes into '%s': %s", (unsigned long long)n, dst->what,
                 cudaGetErrorName(st));
        return fail(ctx, cb, q, FS_ERR_CUDA, m);
    }
    return FS_OK;
}

static fs_status cuda_download(fs_ctx *ctx, fs_backend *be, fs_queue q, void *dst, fs_buf *src, uint64_t off,
                               uint64_t n)
{
    cuda_be *cb = cb_of(be);
    fs_status rc = sticky(ctx, cb, q);
    if (rc != FS_OK || n == 0 || (rc = use_device(ctx, cb, q)) != FS_OK) return rc;
    cudaError_t st = cudaMemcpyAsync(dst, (const char *)src->data + off, (size_t)n, cudaMemcpyDeviceToHost, cb->s[q]);
    if (st != cudaSuccess) {
        char m[256];
        snprintf(m, sizeof m, "download of %llu bytes of '%s': %s", (unsigned long long)n, src->what,
                 cudaGetErrorName(st));
        return fail(ctx, cb, q, FS_ERR_CUDA, m);
    }
    return FS_OK;
}

static fs_status cuda_event_init(fs_ctx *ctx, fs_backend *be, fs_event *e)
{
    cudaEvent_t ev;
    FS_CUDA_CHECK(ctx, cudaSetDevice(cb_of(be)->device));
    FS_CUDA_CHECK(ctx, cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    e->context = (void *)ev;
    return FS_OK;
}

static void cuda_event_fini(fs_backend *be, fs_event *e)
{
    (void)be;
    if (e->context) cudaEventDestroy((cudaEvent_t)e->context);
    e->context = NULL;
}

static fs_status cuda_record(fs_ctx *ctx, fs_backend *be, fs_event *e, fs_queue q)
{
    cuda_be *cb = cb_of(be);
    fs_status rc = sticky(ctx, cb, q);
    if (rc != FS_OK || (rc = use_device(ctx, cb, q)) != FS_OK) return rc;
    cudaError_t st = cudaEventRecord((cudaEvent_t)e->context, cb->s[q]);
    if (st != cudaSuccess) return fail(ctx, cb, q, FS_ERR_CUDA, cudaGetErrorName(st));
    e->recorded = 1;
    e->q = q;
    return FS_OK;
}

static fs_status cuda_wait(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_event *e)
{
    cuda_be *cb = cb_of(be);
    fs_status rc = sticky(ctx, cb, q);
    if (rc != FS_OK || !e->recorded) return rc;
    if (e->q != (int)q) {                          /* a wait for a failed queue fails with it */
        fs_ctx other;
        fs_ctx_init(&other);
        if ((rc = sticky(&other, cb, e->q)) != FS_OK) {
            char m[sizeof other.errmsg + 64];
            snprintf(m, sizeof m, "waited for the %s queue, which failed: %.300s", fs_queue_name((fs_queue)e->q),
                     other.errmsg);
            return fail(ctx, cb, q, rc, m);
        }
    }
    cudaError_t st = cudaStreamWaitEvent(cb->s[q], (cudaEvent_t)e->context, 0);
    if (st != cudaSuccess) return fail(ctx, cb, q, FS_ERR_CUDA, cudaGetErrorName(st));
    return FS_OK;
}

static fs_status cuda_event_sync(fs_ctx *ctx, fs_backend *be, fs_event *e)
{
    cuda_be *cb = cb_of(be);
    return after_sync(ctx, cb, e->q, cudaEventSynchronize((cudaEvent_t)e->context));
}

static int cuda_event_done(fs_backend *be, fs_event *e)
{
    (void)be;
    cudaError_t st = cudaEventQuery((cudaEvent_t)e->context);
    if (st == cudaErrorNotReady) return 0;
    if (st != cudaSuccess) cudaGetLastError();      /* a failure is reached too; event_sync reports it */
    return 1;
}

static fs_status cuda_queue_sync(fs_ctx *ctx, fs_backend *be, fs_queue q)
{
    cuda_be *cb = cb_of(be);
    fs_status rc = sticky(ctx, cb, q);
    if (rc != FS_OK) return rc;
    return after_sync(ctx, cb, q, cudaStreamSynchronize(cb->s[q]));
}

/* ---- v2: scratch and the op slots ----------------------------------------------------------- */

fs_status fs_cu_scratch(fs_ctx *ctx, cuda_be *cb, int q, void **p, size_t bytes, const char *what)
{
    *p = NULL;
    cudaError_t st = cudaMallocAsync(p, bytes ? bytes : 16, cb->s[q]);
    if (st != cudaSuccess) {
        cudaGetLastError();
        *p = NULL;
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda: %s: %zu bytes of scratch: %s", what, bytes, cudaGetErrorName(st));
    }
    return FS_OK;
}

void fs_cu_scratch_free(cuda_be *cb, int q, void *p)
{
    if (p) cudaFreeAsync(p, cb->s[q]);
}

/* Each slot: q's sticky error, then the op under qmu[q] (cuda-be.h
 * invariant 1); its failure becomes q's. */
#define CUDA_OP(slot, T, impl)                                                          \
    static fs_status cuda_##slot(fs_ctx *ctx, fs_backend *be, fs_queue q, const T *a) \
    {                                                                                   \
        cuda_be *cb = cb_of(be);                                                        \
        fs_status rc = sticky(ctx, cb, q);                                              \
        if (rc != FS_OK || (rc = use_device(ctx, cb, (int)q)) != FS_OK) return rc;      \
        fs_ctx lc;                                                                      \
        fs_ctx_init(&lc);                                                               \
        pthread_mutex_lock(&cb->qmu[q]);                                                \
        rc = impl(&lc, cb, (int)q, a);                                                  \
        pthread_mutex_unlock(&cb->qmu[q]);                                              \
        return rc == FS_OK ? FS_OK : fail(ctx, cb, q, rc, lc.errmsg);                   \
    }
FS_CU_OPS(CUDA_OP)
#undef CUDA_OP


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
    FS_CUDA_CHECK(ctx, cudaMemsetAsync(h->dH, 0, bytes, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[FS_QUEUE_COMPUTE]));
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
        FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[FS_QUEUE_COMPUTE]));
        cudaFree(h->dX);
        h->dX = NULL;
        h->xrows = 0;
        FS_CUDA_CHECK(ctx, cudaMalloc(&h->dX, bytes));
        h->xrows = rows;
    }
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(h->dX, x, bytes, cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
    /* row-major H(upper) += X^T X, X [rows, in]  ==  column-major H(lower) += A A^T,
     * A = X^T [in, rows] with lda = in (invariant 3) */
    FS_CUBLAS_CHECK(ctx, cublasSsyrk(cb->blas[FS_QUEUE_COMPUTE], CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)h->in,
                                     (int)rows, &one, h->dX, (int)h->in, &one, h->dH,
                                     (int)h->in));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[FS_QUEUE_COMPUTE]));   /* x may be freed */
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
    FS_TRY(fs_cuda_tri(ctx, h->dH, h->in, FS_TRI_MIRROR, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(H, h->dH, bytes, cudaMemcpyDeviceToHost, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[FS_QUEUE_COMPUTE]));
    return FS_OK;
}

/* ---- Cholesky factor of the inverse --------------------------------------- */

/* The CPU's algorithm (cpu/cholinv.c) on the device, synchronous, with the
 * CPU's messages: the failing column is the CPU's, so the retry with more
 * damping (hessian/cholinv.c) happens at the same matrices on both. */
static fs_status chol_inv_run(fs_ctx *ctx, cuda_be *cb, dev_bufs *b, float *A, int64_t n)
{
    const size_t bytes = (size_t)n * (size_t)n * sizeof(float);
    float *dA;
    FS_TRY(fit_int(ctx, "chol_inv size", n));
    if (n == 0) return FS_OK;
    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    FS_TRY(bufs_alloc(ctx, b, &dA, n * n, "chol_inv matrix"));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dA, A, bytes, cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
    FS_TRY(fs_cu_cholinv_sync(ctx, cb, FS_QUEUE_COMPUTE, dA, n));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(A, dA, bytes, cudaMemcpyDeviceToHost, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[FS_QUEUE_COMPUTE]));
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
                                           cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
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
                                       cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
    FS_TRY(fs_cuda_grid(ctx, &g, dW, cols, rows, cols, gw, dq, ng * 4, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(qmeta, dq, (size_t)(rows * ng * 4),
                                       cudaMemcpyDeviceToHost, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[FS_QUEUE_COMPUTE]));
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

fs_status fs_cu_gptq_solve(fs_ctx *ctx, cublasHandle_t blas, cudaStream_t stream, const fs_cuda_gp *g, float *dW,
                           const float *dU, uint8_t *dcodes, uint8_t *dq, const int32_t *dgcol, float *dErr,
                           int64_t R, int64_t C, int64_t ng, int64_t gw, int block)
{
    const float minus1 = -1.0f, one = 1.0f;
    const int dynamic = dgcol == NULL;
    FS_TRY(fit_int(ctx, "gptq rows", R));
    FS_TRY(fit_int(ctx, "gptq cols", C));
    for (int64_t i1 = 0; i1 < C;) {                 /* the blocks of fs_gptq_cpu */
        int64_t i2 = i1 + block < C ? i1 + block : C;
        if (dynamic) {
            int64_t gnext = (i1 / gw + 1) * gw;
            if (gnext < i2) i2 = gnext;
        }
        const int64_t nb = i2 - i1;
        FS_TRY(fs_cuda_gptq_block(ctx, g, dW, dU, dcodes, dq, dgcol, dErr, R, C, ng, gw, i1, i2, stream));
        if (i2 < C)
            /* row-major W[:, i2:] -= Err[:, 0:nb] @ U[i1:i2, i2:]  ==  column-major
             * C(C-i2 x R) -= A(C-i2 x nb) B(nb x R), A = U + i1*C + i2 (lda C),
             * B = Err (ldb nb), C = W + i2 (ldc C) (invariant 4) */
            FS_CUBLAS_CHECK(ctx, cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)(C - i2), (int)R, (int)nb, &minus1,
                                             dU + i1 * C + i2, (int)C, dErr, (int)nb, &one, dW + i2, (int)C));
        i1 = i2;
    }
    return FS_OK;
}

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

    FS_CUDA_CHECK(ctx, cudaSetDevice(cb->device));
    FS_TRY(bufs_alloc(ctx, b, &dW, R * C, "gptq weights"));
    FS_TRY(bufs_alloc(ctx, b, &dU, C * C, "gptq U"));
    FS_TRY(bufs_alloc(ctx, b, &dErr, R * nbmax, "gptq errors"));
    FS_TRY(bufs_alloc(ctx, b, &dcodes, R * C, "gptq codes"));
    FS_TRY(bufs_alloc(ctx, b, &dq, R * ng * 4, "gptq qmeta"));
    if (!dynamic) FS_TRY(bufs_alloc(ctx, b, &dgcol, C, "gptq group map"));
    FS_TRY(gp_upload(ctx, cb, b, job->gp, &g));

    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dW, job->W, sizeof(float) * (size_t)(R * C),
                                       cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dU, job->U, sizeof(float) * (size_t)(C * C),
                                       cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
    if (!dynamic) {
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dq, job->qmeta, (size_t)(R * ng * 4),
                                           cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(dgcol, job->gcol, sizeof(int32_t) * (size_t)C,
                                           cudaMemcpyHostToDevice, cb->s[FS_QUEUE_COMPUTE]));
    }

    FS_TRY(fs_cu_gptq_solve(ctx, cb->blas[FS_QUEUE_COMPUTE], cb->s[FS_QUEUE_COMPUTE], &g, dW, dU, dcodes, dq, dgcol,
                            dErr, R, C, ng, gw, job->block));

    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(job->W, dW, sizeof(float) * (size_t)(R * C),
                                       cudaMemcpyDeviceToHost, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaMemcpyAsync(job->codes, dcodes, (size_t)(R * C),
                                       cudaMemcpyDeviceToHost, cb->s[FS_QUEUE_COMPUTE]));
    if (dynamic)
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(job->qmeta, dq, (size_t)(R * ng * 4),
                                           cudaMemcpyDeviceToHost, cb->s[FS_QUEUE_COMPUTE]));
    FS_CUDA_CHECK(ctx, cudaStreamSynchronize(cb->s[FS_QUEUE_COMPUTE]));
    return FS_OK;
}

static fs_status cuda_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job)
{
    dev_bufs b = {{NULL}, 0};
    fs_status rc = gptq_run(ctx, cb_of(be), &b, job);
    if (rc != FS_OK) cudaStreamSynchronize(cb_of(be)->s[FS_QUEUE_COMPUTE]);   /* nothing in flight */
    bufs_free(&b);
    return rc;
}

/* ---- the table and the constructor ------------------------------------------ */

static void cuda_describe_dev(fs_backend *be, char *buf, size_t n);

static const struct fs_backend_i cuda_iface = {
    /* .name        = */ cuda_name,
    /* .free        = */ cuda_free,
    /* .buf_alloc   = */ cuda_buf_alloc,
    /* .buf_free    = */ cuda_buf_free,
    /* .host_alloc  = */ cuda_host_alloc,
    /* .host_free   = */ cuda_host_free,
    /* .upload      = */ cuda_upload,
    /* .download    = */ cuda_download,
    /* .event_init  = */ cuda_event_init,
    /* .event_fini  = */ cuda_event_fini,
    /* .record      = */ cuda_record,
    /* .wait        = */ cuda_wait,
    /* .event_sync  = */ cuda_event_sync,
    /* .event_done  = */ cuda_event_done,
    /* .queue_sync  = */ cuda_queue_sync,
    /* .hold        = */ NULL,
    /* .fill        = */ cuda_fill,
    /* .gemm        = */ cuda_gemm,
    /* .bias_add    = */ cuda_bias_add,
    /* .add         = */ cuda_add,
    /* .copy        = */ cuda_copy,
    /* .hess_acc    = */ cuda_hess_acc,
    /* .hess_finish = */ cuda_hess_finish,
    /* .hess_wave   = */ cuda_hess_wave,
    /* .damp        = */ cuda_damp,
    /* .cholinv     = */ cuda_cholinv,
    /* .grid_op     = */ cuda_grid_op,
    /* .gptq_op     = */ cuda_gptq_op,
    /* .rtn         = */ cuda_rtn,
    /* .decode      = */ cuda_decode,
    /* .permute     = */ cuda_permute,
    /* .rmsnorm     = */ cuda_rmsnorm,
    /* .rope        = */ cuda_rope,
    /* .attention   = */ cuda_attention,
    /* .attention_libm = */ cuda_attention_libm,
    /* .swiglu      = */ cuda_swiglu,
    /* .route       = */ cuda_route,
    /* .route_lists = */ cuda_route_lists,
    /* .gather      = */ cuda_gather,
    /* .scatter_add = */ cuda_scatter_add,
    /* .gate_add    = */ cuda_gate_add,
    /* .loss        = */ cuda_loss,
    /* .pack        = */ cuda_pack,
    /* .hess_new    = */ cuda_hess_new,
    /* .hess_add    = */ cuda_hess_add,
    /* .hess_get    = */ cuda_hess_get,
    /* .hess_free   = */ cuda_hess_free,
    /* .chol_inv    = */ cuda_chol_inv,
    /* .grid        = */ cuda_grid,
    /* .gptq        = */ cuda_gptq,
    /* .synchronize = */ cuda_synchronize,
    /* .describe    = */ cuda_describe_dev,
};

/* The device and the libraries whose rounding the bytes depend on. */
static void cuda_describe_dev(fs_backend *be, char *buf, size_t n)
{
    cuda_be *cb = (cuda_be *)be->context;
    cudaDeviceProp p;
    int rt = 0, drv = 0, blas = 0;
    if (cudaGetDeviceProperties(&p, cb->device) != cudaSuccess) {
        cudaGetLastError();
        snprintf(p.name, sizeof p.name, "device %d", cb->device);
        p.major = p.minor = 0;
    }
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
    if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
    if (cublasGetVersion(cb->blas[FS_QUEUE_COMPUTE], &blas) != CUBLAS_STATUS_SUCCESS) blas = 0;
    cudaGetLastError();
    snprintf(buf, n, "cuda: %s (sm_%d%d), CUDA runtime %d.%d, driver %d.%d, cuBLAS %d", p.name, p.major, p.minor,
             rt / 1000, rt % 1000 / 10, drv / 1000, drv % 1000 / 10, blas);
}

static fs_status cuda_ctx_create(fs_ctx *ctx, cuda_be *cb)
{
    if (pthread_mutex_init(&cb->mu, NULL) != 0) return fs_ctx_err(ctx, FS_ERR_NOMEM, "cuda backend: mutex");
    for (int q = 0; q < FS_QUEUE_COUNT; q++) pthread_mutex_init(&cb->qmu[q], NULL);
    cb->have_mu = 1;
    FS_CUDA_CHECK(ctx, cudaGetDevice(&cb->device));
    for (int q = 0; q < FS_QUEUE_COUNT; q++) {
        FS_CUDA_CHECK(ctx, cudaStreamCreateWithFlags(&cb->s[q], cudaStreamNonBlocking));
        FS_CUBLAS_CHECK(ctx, cublasCreate(&cb->blas[q]));
        FS_CUBLAS_CHECK(ctx, cublasSetStream(cb->blas[q], cb->s[q]));
        /* full f32 products (no TF32): results must track the CPU's */
        FS_CUBLAS_CHECK(ctx, cublasSetMathMode(cb->blas[q], CUBLAS_DEFAULT_MATH));
        FS_CUSOLVER_CHECK(ctx, cusolverDnCreate(&cb->solver[q]));
        FS_CUSOLVER_CHECK(ctx, cusolverDnSetStream(cb->solver[q], cb->s[q]));
    }
    /* op scratch comes from the device's stream-ordered pool (cuda-be.h
     * invariant 3); it keeps up to 1 GiB between synchronisations instead of
     * returning everything to the driver each time, and no more, so scratch
     * does not hold memory that buffers under the budget then cannot get */
    cudaMemPool_t pool;
    FS_CUDA_CHECK(ctx, cudaDeviceGetDefaultMemPool(&pool, cb->device));
    uint64_t keep = 1ull << 30;
    FS_CUDA_CHECK(ctx, cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    FS_CUDA_CHECK(ctx, cudaMalloc((void **)&cb->derr, sizeof(int) * FS_QUEUE_COUNT));
    FS_CUDA_CHECK(ctx, cudaMemset(cb->derr, 0, sizeof(int) * FS_QUEUE_COUNT));
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

extern "C" void fs_cuda_describe(char *buf, size_t n)
{
    int count = 0;
    cudaError_t st = cudaGetDeviceCount(&count);
    if (st != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, n, "cuda: no device (%s: %s)", cudaGetErrorName(st), cudaGetErrorString(st));
        return;
    }
    if (count <= 0) {
        snprintf(buf, n, "cuda: no device (the driver reports none)");
        return;
    }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
        cudaGetLastError();
        snprintf(buf, n, "cuda: %d device(s)", count);
        return;
    }
    snprintf(buf, n, "cuda: %d device(s), 0: %s (sm_%d%d, %.1f GiB)", count, p.name, p.major, p.minor,
             (double)p.totalGlobalMem / 1073741824.0);
}
