/* backend-cpu-async.c: the `cpu-async` backend: a CPU backend that behaves
 * like a device, so the orchestration a GPU runs (uploads overlapping
 * compute, downloads on a third queue, events between them) is tested on
 * machines without one.  Its ops are the implementations of cpu/cpu.h, so
 * its bytes are the cpu backend's.
 *
 * Notes on the design:
 *  1. Each queue is a worker thread with a FIFO of records (an op with a copy
 *     of its args, an upload, a download, a wait).  A call appends a record
 *     and returns; the worker runs the records in order.  Nothing is done on
 *     the calling thread, so a caller that breaks backend.h's contract sees
 *     it: an upload copies from the host pointer only when its queue reaches
 *     it (a staging slot refilled too early gives the new bytes), a download
 *     writes the host pointer only then (reading it before a sync gives the
 *     old bytes), an op reads its buffers only when it runs (a missing
 *     fs_be_wait reads what was there: the 0xFF poison of a fresh buffer);
 *     and, under ThreadSanitizer, each of these is a reported data race.
 *  2. Every buffer is its own allocation, never the caller's memory, filled
 *     with 0xFF bytes (NaN in F32 and BF16) when allocated.
 *  3. Events are (queue, sequence number) pairs: record takes the number of
 *     records given to the queue so far; a queue's `done` counts the records
 *     it has finished (in order), so an event is reached when done >= seq.
 *     A wait is a record that blocks its worker until the other queue's
 *     done reaches the event's seq.
 *  4. One mutex (mu) and one condition variable guard every queue's FIFO,
 *     counters and sticky error; a worker holds mu only between records.
 *  5. Ops of different queues never run at once (exec lock, as one compute
 *     engine): the kernels set OpenBLAS's process-wide thread count around
 *     their OpenMP loops, and two at once would leave it wrong; copies run
 *     beside ops freely.  The v1 slots run on the calling thread under the
 *     same lock.
 *  6. Sticky errors (backend.h invariant 5): the first failing record sets its
 *     queue's err (with the record's sequence number); later records of the
 *     queue are skipped but still counted done, so nothing waits forever; a
 *     wait record whose event lies at or after the other queue's failure
 *     fails its own queue with it.
 *  7. OpenMP: a worker sets its thread count at start to opts->threads, or
 *     the opener's omp_get_max_threads() (a new thread would otherwise get
 *     the process default, not the caller's setting).
 *  8. Freeing a buffer waits until every queue is idle (as cudaFree); freeing
 *     the backend releases any hold, lets the workers drain, joins them.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

typedef enum { R_OP, R_UPLOAD, R_DOWNLOAD, R_WAIT } rec_kind;

typedef struct rec {
    rec_kind kind;
    uint64_t seq;
    struct rec *next;
    /* R_OP */
    fs_status (*run)(fs_ctx *ctx, const void *args);
    void *args;                  /* a copy of the op's args */
    fs_grid_params gp;           /* a copy of the args' grid parameters (grid, gptq, rtn) */
    /* R_UPLOAD / R_DOWNLOAD */
    fs_buf *buf;
    uint64_t off, n;
    const void *src;
    void *dst;
    /* R_WAIT */
    int wq;
    uint64_t wseq;
} rec;

typedef struct abe abe;

typedef struct aqueue {
    abe *A;
    int idx;
    pthread_t th;
    int started;
    rec *head, *tail;
    uint64_t given, done;          /* note 3 */
    int hold;
    fs_status err;                 /* note 6 */
    uint64_t err_seq;
    char msg[sizeof(((fs_ctx *)0)->errmsg)];
} aqueue;

struct abe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t exec;          /* note 5 */
    int stop;
    int threads;                   /* note 7 */
    aqueue q[FS_QUEUE_COUNT];
};

static abe *ab(fs_backend *be) { return (abe *)be->context; }

static const char *async_name(fs_backend *be)
{
    (void)be;
    return "cpu-async";
}

static void rec_free(rec *r)
{
    if (!r) return;
    free(r->gp.p);
    free(r->args);
    free(r);
}

/* ---- workers --------------------------------------------------------------------- */

static fs_status execute(abe *A, rec *r, fs_ctx *wctx)
{
    fs_status rc = FS_OK;
    switch (r->kind) {
    case R_OP:
        pthread_mutex_lock(&A->exec);
        rc = r->run(wctx, r->args);
        pthread_mutex_unlock(&A->exec);
        break;
    case R_UPLOAD:
        if (r->n) memcpy((char *)r->buf->data + r->off, r->src, (size_t)r->n);
        break;
    case R_DOWNLOAD:
        if (r->n) memcpy(r->dst, (const char *)r->buf->data + r->off, (size_t)r->n);
        break;
    case R_WAIT:
        break;
    }
    return rc;
}

static void *worker(void *arg)
{
    aqueue *Q = arg;
    abe *A = Q->A;
    if (A->threads > 0) omp_set_num_threads(A->threads);
    fs_ctx wctx;
    pthread_mutex_lock(&A->mu);
    for (;;) {
        while ((!Q->head || (Q->hold && !A->stop)) && !A->stop) pthread_cond_wait(&A->cv, &A->mu);
        if (!Q->head) break;                            /* stopping and drained */
        if (Q->hold && !A->stop) continue;
        rec *r = Q->head;
        if (r->kind == R_WAIT) {
            aqueue *S = &A->q[r->wq];
            while (S->done < r->wseq) pthread_cond_wait(&A->cv, &A->mu);
            if (S->err != FS_OK && S->err_seq <= r->wseq && Q->err == FS_OK) {
                Q->err = S->err;
                Q->err_seq = r->seq;
                snprintf(Q->msg, sizeof Q->msg, "cpu-async, %s queue: waited for the %s queue, which failed: %.700s",
                         fs_queue_name((fs_queue)Q->idx), fs_queue_name((fs_queue)S->idx), S->msg);
            }
        }
        const int skip = Q->err != FS_OK;
        pthread_mutex_unlock(&A->mu);
        fs_status rc = FS_OK;
        fs_ctx_init(&wctx);
        if (!skip) rc = execute(A, r, &wctx);
        pthread_mutex_lock(&A->mu);
        if (rc != FS_OK && Q->err == FS_OK) {
            Q->err = rc;
            Q->err_seq = r->seq;
            snprintf(Q->msg, sizeof Q->msg, "cpu-async, %s queue: %.900s", fs_queue_name((fs_queue)Q->idx), wctx.errmsg);
        }
        Q->head = r->next;
        if (!Q->head) Q->tail = NULL;
        Q->done = r->seq;
        pthread_cond_broadcast(&A->cv);
        pthread_mutex_unlock(&A->mu);
        rec_free(r);
        pthread_mutex_lock(&A->mu);
    }
    pthread_mutex_unlock(&A->mu);
    return NULL;
}

/* Under mu: q's sticky error into ctx. */
static fs_status sticky_locked(fs_ctx *ctx, aqueue *Q)
{
    if (Q->err != FS_OK) fs_ctx_err(ctx, Q->err, "%s", Q->msg);
    return Q->err;
}

/* Appends r to q (or frees it and reports q's sticky error). */
static fs_status submit(fs_ctx *ctx, fs_backend *be, fs_queue q, rec *r)
{
    abe *A = ab(be);
    aqueue *Q = &A->q[q];
    pthread_mutex_lock(&A->mu);
    fs_status rc = sticky_locked(ctx, Q);
    if (rc == FS_OK) {
        r->seq = ++Q->given;
        if (Q->tail) Q->tail->next = r;
        else Q->head = r;
        Q->tail = r;
        pthread_cond_broadcast(&A->cv);
    }
    pthread_mutex_unlock(&A->mu);
    if (rc != FS_OK) rec_free(r);
    return rc;
}

static rec *rec_new(fs_ctx *ctx, rec_kind k)
{
    rec *r = calloc(1, sizeof *r);
    if (!r) fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu-async: queue record");
    else r->kind = k;
    return r;
}

/* Waits under mu until q has done everything given to it. */
static void drain_locked(abe *A, aqueue *Q)
{
    while (Q->done < Q->given) pthread_cond_wait(&A->cv, &A->mu);
}

/* ---- memory (note 2) ------------------------------------------------------------------ */

static fs_status async_buf_alloc(fs_ctx *ctx, fs_backend *be, fs_buf *buf)
{
    (void)be;
    uint64_t r = (buf->size + 63) / 64 * 64;
    buf->data = aligned_alloc(64, r ? r : 64);
    if (!buf->data)
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu-async: %s: allocation of %llu bytes failed", buf->what,
                          (unsigned long long)buf->size);
    memset(buf->data, 0xFF, (size_t)(r ? r : 64));
    return FS_OK;
}

static void async_buf_free(fs_backend *be, fs_buf *buf)
{
    abe *A = ab(be);
    pthread_mutex_lock(&A->mu);
    for (int q = 0; q < FS_QUEUE_COUNT; q++) drain_locked(A, &A->q[q]);
    pthread_mutex_unlock(&A->mu);
    free(buf->data);
    buf->data = NULL;
}

/* ---- queues and events (notes 1, 3, 6) ---------------------------------------------------- */

static fs_status async_upload(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_buf *dst, uint64_t off, const void *src,
                              uint64_t n)
{
    rec *r = rec_new(ctx, R_UPLOAD);
    if (!r) return FS_ERR_NOMEM;
    r->buf = dst;
    r->off = off;
    r->n = n;
    r->src = src;
    return submit(ctx, be, q, r);
}

static fs_status async_download(fs_ctx *ctx, fs_backend *be, fs_queue q, void *dst, fs_buf *src, uint64_t off,
                                uint64_t n)
{
    rec *r = rec_new(ctx, R_DOWNLOAD);
    if (!r) return FS_ERR_NOMEM;
    r->buf = src;
    r->off = off;
    r->n = n;
    r->dst = dst;
    return submit(ctx, be, q, r);
}

static fs_status async_record(fs_ctx *ctx, fs_backend *be, fs_event *e, fs_queue q)
{
    abe *A = ab(be);
    pthread_mutex_lock(&A->mu);
    fs_status rc = sticky_locked(ctx, &A->q[q]);
    if (rc == FS_OK) {
        e->recorded = 1;
        e->q = q;
        e->seq = A->q[q].given;
    }
    pthread_mutex_unlock(&A->mu);
    return rc;
}

static fs_status async_wait(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_event *e)
{
    abe *A = ab(be);
    if (!e->recorded || e->q == (int)q) {         /* satisfied, or ordered by the FIFO */
        pthread_mutex_lock(&A->mu);
        fs_status rc = sticky_locked(ctx, &A->q[q]);
        pthread_mutex_unlock(&A->mu);
        return rc;
    }
    rec *r = rec_new(ctx, R_WAIT);
    if (!r) return FS_ERR_NOMEM;
    pthread_mutex_lock(&A->mu);
    r->wq = e->q;
    r->wseq = e->seq;
    pthread_mutex_unlock(&A->mu);
    return submit(ctx, be, q, r);
}

static fs_status async_event_sync(fs_ctx *ctx, fs_backend *be, fs_event *e)
{
    abe *A = ab(be);
    aqueue *Q = &A->q[e->q];
    pthread_mutex_lock(&A->mu);
    while (Q->done < e->seq) pthread_cond_wait(&A->cv, &A->mu);
    fs_status rc = sticky_locked(ctx, Q);
    pthread_mutex_unlock(&A->mu);
    return rc;
}

static int async_event_done(fs_backend *be, fs_event *e)
{
    abe *A = ab(be);
    pthread_mutex_lock(&A->mu);
    int done = A->q[e->q].done >= e->seq;
    pthread_mutex_unlock(&A->mu);
    return done;
}

static fs_status async_queue_sync(fs_ctx *ctx, fs_backend *be, fs_queue q)
{
    abe *A = ab(be);
    pthread_mutex_lock(&A->mu);
    drain_locked(A, &A->q[q]);
    fs_status rc = sticky_locked(ctx, &A->q[q]);
    pthread_mutex_unlock(&A->mu);
    return rc;
}

static void async_hold(fs_backend *be, fs_queue q, int hold)
{
    abe *A = ab(be);
    pthread_mutex_lock(&A->mu);
    A->q[q].hold = hold;
    pthread_cond_broadcast(&A->cv);
    pthread_mutex_unlock(&A->mu);
}

/* ---- ops: copied into a record (backend.h invariant 4) ---------------------------------- */

/* The args' grid parameters, which point to host memory of the caller, are
 * copied into the record (candidates included). */
static int fix_gp(rec *r, const fs_grid_params **slot)
{
    const fs_grid_params *gp = *slot;
    r->gp = *gp;
    r->gp.p = malloc(sizeof(float) * (size_t)gp->n);
    if (!r->gp.p) return -1;
    memcpy(r->gp.p, gp->p, sizeof(float) * (size_t)gp->n);
    *slot = &r->gp;
    return 0;
}
static int fix_grid(rec *r, void *a) { return fix_gp(r, &((fs_grid_args *)a)->gp); }
static int fix_gptq(rec *r, void *a) { return fix_gp(r, &((fs_gptq_args *)a)->gp); }
static int fix_rtn(rec *r, void *a) { return fix_gp(r, &((fs_rtn_args *)a)->gp); }
static int fix_none(rec *r, void *a) { (void)r; (void)a; return 0; }
#define FIX_OF(a) _Generic((a), const fs_grid_args *: fix_grid, const fs_gptq_args *: fix_gptq, \
                           const fs_rtn_args *: fix_rtn, default: fix_none)

static fs_status submit_op(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_status (*run)(fs_ctx *, const void *),
                           const void *a, size_t size, int (*fix)(rec *, void *))
{
    rec *r = rec_new(ctx, R_OP);
    if (!r) return FS_ERR_NOMEM;
    r->run = run;
    r->args = malloc(size);
    if (!r->args || (memcpy(r->args, a, size), fix(r, r->args)) != 0) {
        rec_free(r);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu-async: op arguments");
    }
    return submit(ctx, be, q, r);
}

#define ASYNC_OP(slot, T, impl)                                                          \
    static fs_status run_##slot(fs_ctx *ctx, const void *a) { return impl(ctx, (const T *)a); } \
    static fs_status async_##slot(fs_ctx *ctx, fs_backend *be, fs_queue q, const T *a)  \
    {                                                                                    \
        return submit_op(ctx, be, q, run_##slot, a, sizeof *a, FIX_OF(a));               \
    }
FS_CPU_OPS(ASYNC_OP)
#undef ASYNC_OP

/* ---- v1 slots: on the calling thread, under the exec lock (note 5) ----------------------- */

static fs_status async_hess_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x, int64_t rows)
{
    pthread_mutex_lock(&ab(be)->exec);
    fs_status rc = fs_hess_cpu_add(ctx, be, state, x, rows);
    pthread_mutex_unlock(&ab(be)->exec);
    return rc;
}

static fs_status async_hess_get(fs_ctx *ctx, fs_backend *be, void *state, float *H)
{
    pthread_mutex_lock(&ab(be)->exec);
    fs_status rc = fs_hess_cpu_get(ctx, be, state, H);
    pthread_mutex_unlock(&ab(be)->exec);
    return rc;
}

static fs_status async_chol_inv(fs_ctx *ctx, fs_backend *be, float *A, int64_t n)
{
    pthread_mutex_lock(&ab(be)->exec);
    fs_status rc = fs_chol_inv_cpu(ctx, be, A, n);
    pthread_mutex_unlock(&ab(be)->exec);
    return rc;
}

static fs_status async_grid(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                            int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta)
{
    (void)ctx;
    pthread_mutex_lock(&ab(be)->exec);
    fs_grid_matrix(gp, W, rows, cols, gw, qmeta);
    pthread_mutex_unlock(&ab(be)->exec);
    return FS_OK;
}

static fs_status async_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job)
{
    pthread_mutex_lock(&ab(be)->exec);
    fs_status rc = fs_gptq_cpu(ctx, job);
    pthread_mutex_unlock(&ab(be)->exec);
    return rc;
}

/* ---- lifetime (note 8) ------------------------------------------------------------------- */

static void async_destroy(abe *A)
{
    pthread_mutex_lock(&A->mu);
    A->stop = 1;
    for (int q = 0; q < FS_QUEUE_COUNT; q++) A->q[q].hold = 0;
    pthread_cond_broadcast(&A->cv);
    pthread_mutex_unlock(&A->mu);
    for (int q = 0; q < FS_QUEUE_COUNT; q++)
        if (A->q[q].started) pthread_join(A->q[q].th, NULL);
    for (int q = 0; q < FS_QUEUE_COUNT; q++)
        for (rec *r = A->q[q].head, *nx; r; r = nx) { nx = r->next; rec_free(r); }
    pthread_cond_destroy(&A->cv);
    pthread_mutex_destroy(&A->exec);
    pthread_mutex_destroy(&A->mu);
    free(A);
}

static void async_free(fs_backend *be)
{
    async_destroy(ab(be));
    free(be);
}

static const struct fs_backend_i async_iface = {
    /* .name        = */ async_name,
    /* .free        = */ async_free,
    /* .buf_alloc   = */ async_buf_alloc,
    /* .buf_free    = */ async_buf_free,
    /* .host_alloc  = */ fs_cpu_host_alloc,
    /* .host_free   = */ fs_cpu_host_free,
    /* .upload      = */ async_upload,
    /* .download    = */ async_download,
    /* .event_init  = */ NULL,
    /* .event_fini  = */ NULL,
    /* .record      = */ async_record,
    /* .wait        = */ async_wait,
    /* .event_sync  = */ async_event_sync,
    /* .event_done  = */ async_event_done,
    /* .queue_sync  = */ async_queue_sync,
    /* .hold        = */ async_hold,
    /* .fill        = */ async_fill,
    /* .gemm        = */ async_gemm,
    /* .bias_add    = */ async_bias_add,
    /* .add         = */ async_add,
    /* .copy        = */ async_copy,
    /* .hess_acc    = */ async_hess_acc,
    /* .hess_finish = */ async_hess_finish,
    /* .hess_wave   = */ async_hess_wave,
    /* .damp        = */ async_damp,
    /* .cholinv     = */ async_cholinv,
    /* .grid_op     = */ async_grid_op,
    /* .gptq_op     = */ async_gptq_op,
    /* .rtn         = */ async_rtn,
    /* .decode      = */ async_decode,
    /* .permute     = */ async_permute,
    /* .rmsnorm     = */ async_rmsnorm,
    /* .rope        = */ async_rope,
    /* .attention   = */ async_attention,
    /* .attention_libm = */ async_attention_libm,
    /* .swiglu      = */ async_swiglu,
    /* .route       = */ async_route,
    /* .route_lists = */ async_route_lists,
    /* .gather      = */ async_gather,
    /* .scatter_add = */ async_scatter_add,
    /* .gate_add    = */ async_gate_add,
    /* .loss        = */ async_loss,
    /* .pack        = */ async_pack,
    /* .hess_new    = */ fs_hess_cpu_new,
    /* .hess_add    = */ async_hess_add,
    /* .hess_get    = */ async_hess_get,
    /* .hess_free   = */ fs_hess_cpu_free,
    /* .chol_inv    = */ async_chol_inv,
    /* .grid        = */ async_grid,
    /* .gptq        = */ async_gptq,
    /* .synchronize = */ NULL,
    /* .describe    = */ NULL,
};

fs_status fs_backend_cpu_async_new(fs_ctx *ctx, const fs_backend_opts *opts, fs_backend **out)
{
    *out = NULL;
    fs_backend *be = calloc(1, sizeof *be);
    abe *A = calloc(1, sizeof *A);
    if (!be || !A) {
        free(be); free(A);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu-async backend");
    }
    if (pthread_mutex_init(&A->mu, NULL) != 0 || pthread_mutex_init(&A->exec, NULL) != 0 ||
        pthread_cond_init(&A->cv, NULL) != 0) {
        free(be); free(A);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu-async backend: mutex");
    }
    A->threads = opts && opts->threads > 0 ? opts->threads : omp_get_max_threads();
    for (int q = 0; q < FS_QUEUE_COUNT; q++) {
        A->q[q].A = A;
        A->q[q].idx = q;
    }
    for (int q = 0; q < FS_QUEUE_COUNT; q++) {
        if (pthread_create(&A->q[q].th, NULL, worker, &A->q[q]) != 0) {
            async_destroy(A);
            free(be);
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu-async backend: the %s queue's thread", fs_queue_name((fs_queue)q));
        }
        A->q[q].started = 1;
    }
    be->iface = async_iface;
    be->context = A;
    *out = be;
    return FS_OK;
}
