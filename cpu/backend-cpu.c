/* backend-cpu.c: the `cpu` backend, the reference every other backend is
 * tested against: buffers are host memory (64-aligned), every op runs
 * inline on the calling thread through the implementations of cpu/cpu.h, so
 * an upload or download is a memcpy and queues and events are bookkeeping.
 *
 * Invariants:
 *  1. A call that gives work to a queue does the work before it returns; an
 *     event is reached as soon as it is recorded.
 *  2. Sticky errors (backend.h invariant 5) are kept per queue under mu: the
 *     op that fails returns its error and marks its queue; every later call
 *     on that queue returns it again; a wait for an event of a failed queue
 *     fails the waiting queue too.
 *  3. opts->threads > 0: each op runs with that many OpenMP threads on the
 *     calling thread (its own setting restored after); 0 leaves the caller's.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"

typedef struct cpu_be {
    int threads;
    pthread_mutex_t mu;
    fs_status err[FS_QUEUE_COUNT];
    char msg[FS_QUEUE_COUNT][sizeof(((fs_ctx *)0)->errmsg)];
} cpu_be;

static cpu_be *cb(fs_backend *be) { return (cpu_be *)be->context; }

static const char *cpu_name(fs_backend *be)
{
    (void)be;
    return "cpu";
}

static void cpu_free(fs_backend *be)
{
    cpu_be *c = cb(be);
    if (c) pthread_mutex_destroy(&c->mu);
    free(c);
    free(be);
}

/* The sticky error of q into ctx, or FS_OK. */
static fs_status sticky(fs_ctx *ctx, cpu_be *c, int q)
{
    pthread_mutex_lock(&c->mu);
    fs_status rc = c->err[q];
    if (rc != FS_OK) fs_ctx_err(ctx, rc, "%s", c->msg[q]);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Marks q failed with rc / msg (the first failure stays) and reports it. */
static fs_status fail(fs_ctx *ctx, cpu_be *c, int q, fs_status rc, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    if (c->err[q] == FS_OK) {
        c->err[q] = rc;
        snprintf(c->msg[q], sizeof c->msg[q], "cpu, %s queue: %.900s", fs_queue_name((fs_queue)q), msg);
    }
    fs_ctx_err(ctx, c->err[q], "%s", c->msg[q]);
    rc = c->err[q];
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- memory ------------------------------------------------------------------ */

static fs_status cpu_buf_alloc(fs_ctx *ctx, fs_backend *be, fs_buf *buf)
{
    (void)be;
    uint64_t r = (buf->size + 63) / 64 * 64;
    buf->data = aligned_alloc(64, r ? r : 64);
    if (!buf->data)
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu: %s: allocation of %llu bytes failed", buf->what,
                          (unsigned long long)buf->size);
    return FS_OK;
}

static void cpu_buf_free(fs_backend *be, fs_buf *buf)
{
    (void)be;
    free(buf->data);
    buf->data = NULL;
}

fs_status fs_cpu_host_alloc(fs_ctx *ctx, fs_backend *be, uint64_t bytes, void **p)
{
    (void)be;
    *p = aligned_alloc(4096, bytes);
    if (!*p) return fs_ctx_err(ctx, FS_ERR_NOMEM, "host staging memory of %llu bytes", (unsigned long long)bytes);
    return FS_OK;
}

void fs_cpu_host_free(fs_backend *be, void *p)
{
    (void)be;
    free(p);
}

/* ---- queues and events: inline (invariant 1) ------------------------------------- */

static fs_status cpu_upload(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_buf *dst, uint64_t off, const void *src,
                            uint64_t n)
{
    fs_status rc = sticky(ctx, cb(be), q);
    if (rc == FS_OK && n) memcpy((char *)dst->data + off, src, (size_t)n);
    return rc;
}

static fs_status cpu_download(fs_ctx *ctx, fs_backend *be, fs_queue q, void *dst, fs_buf *src, uint64_t off,
                              uint64_t n)
{
    fs_status rc = sticky(ctx, cb(be), q);
    if (rc == FS_OK && n) memcpy(dst, (const char *)src->data + off, (size_t)n);
    return rc;
}

static fs_status cpu_record(fs_ctx *ctx, fs_backend *be, fs_event *e, fs_queue q)
{
    fs_status rc = sticky(ctx, cb(be), q);
    if (rc == FS_OK) {
        e->recorded = 1;
        e->q = q;
    }
    return rc;
}

static fs_status cpu_wait(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_event *e)
{
    cpu_be *c = cb(be);
    fs_status rc = sticky(ctx, c, q);
    if (rc != FS_OK || !e->recorded || e->q == (int)q) return rc;
    fs_ctx other;
    fs_ctx_init(&other);
    if ((rc = sticky(&other, c, e->q)) != FS_OK) {
        char m[sizeof other.errmsg + 64];
        snprintf(m, sizeof m, "waited for the %s queue, which failed: %.900s", fs_queue_name((fs_queue)e->q), other.errmsg);
        return fail(ctx, c, q, rc, m);
    }
    return FS_OK;
}

static fs_status cpu_event_sync(fs_ctx *ctx, fs_backend *be, fs_event *e)
{
    return sticky(ctx, cb(be), e->q);
}

static int cpu_event_done(fs_backend *be, fs_event *e)
{
    (void)be; (void)e;
    return 1;
}

static fs_status cpu_queue_sync(fs_ctx *ctx, fs_backend *be, fs_queue q)
{
    return sticky(ctx, cb(be), q);
}

/* ---- ops: inline, with the queue's sticky error (invariants 2-3) -------------------- */

#define CPU_OP(slot, T, impl)                                                          \
    static fs_status cpu_##slot(fs_ctx *ctx, fs_backend *be, fs_queue q, const T *a) \
    {                                                                                  \
        cpu_be *c = cb(be);                                                            \
        fs_status rc = sticky(ctx, c, q);                                              \
        if (rc != FS_OK) return rc;                                                    \
        fs_ctx lc;                                                                     \
        fs_ctx_init(&lc);                                                              \
        const int saved = c->threads > 0 ? omp_get_max_threads() : 0;                 \
        if (c->threads > 0) omp_set_num_threads(c->threads);                           \
        rc = impl(&lc, a);                                                             \
        if (c->threads > 0) omp_set_num_threads(saved);                                \
        return rc == FS_OK ? FS_OK : fail(ctx, c, q, rc, lc.errmsg);                   \
    }
FS_CPU_OPS(CPU_OP)
#undef CPU_OP

/* ---- v1 slots ---------------------------------------------------------------------- */

static fs_status cpu_grid(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                          int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta)
{
    (void)ctx; (void)be;
    fs_grid_matrix(gp, W, rows, cols, gw, qmeta);
    return FS_OK;
}

static fs_status cpu_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job)
{
    (void)be;
    return fs_gptq_cpu(ctx, job);
}

static const struct fs_backend_i cpu_iface = {
    /* .name        = */ cpu_name,
    /* .free        = */ cpu_free,
    /* .buf_alloc   = */ cpu_buf_alloc,
    /* .buf_free    = */ cpu_buf_free,
    /* .host_alloc  = */ fs_cpu_host_alloc,
    /* .host_free   = */ fs_cpu_host_free,
    /* .upload      = */ cpu_upload,
    /* .download    = */ cpu_download,
    /* .event_init  = */ NULL,
    /* .event_fini  = */ NULL,
    /* .record      = */ cpu_record,
    /* .wait        = */ cpu_wait,
    /* .event_sync  = */ cpu_event_sync,
    /* .event_done  = */ cpu_event_done,
    /* .queue_sync  = */ cpu_queue_sync,
    /* .hold        = */ NULL,
    /* .fill        = */ cpu_fill,
    /* .gemm        = */ cpu_gemm,
    /* .bias_add    = */ cpu_bias_add,
    /* .add         = */ cpu_add,
    /* .copy        = */ cpu_copy,
    /* .hess_acc    = */ cpu_hess_acc,
    /* .hess_finish = */ cpu_hess_finish,
    /* .hess_wave   = */ cpu_hess_wave,
    /* .damp        = */ cpu_damp,
    /* .cholinv     = */ cpu_cholinv,
    /* .grid_op     = */ cpu_grid_op,
    /* .gptq_op     = */ cpu_gptq_op,
    /* .rtn         = */ cpu_rtn,
    /* .decode      = */ cpu_decode,
    /* .permute     = */ cpu_permute,
    /* .rmsnorm     = */ cpu_rmsnorm,
    /* .rope        = */ cpu_rope,
    /* .attention   = */ cpu_attention,
    /* .attention_libm = */ cpu_attention_libm,
    /* .swiglu      = */ cpu_swiglu,
    /* .route       = */ cpu_route,
    /* .route_lists = */ cpu_route_lists,
    /* .gather      = */ cpu_gather,
    /* .scatter_add = */ cpu_scatter_add,
    /* .gate_add    = */ cpu_gate_add,
    /* .loss        = */ cpu_loss,
    /* .pack        = */ cpu_pack,
    /* .hess_new    = */ fs_hess_cpu_new,
    /* .hess_add    = */ fs_hess_cpu_add,
    /* .hess_get    = */ fs_hess_cpu_get,
    /* .hess_free   = */ fs_hess_cpu_free,
    /* .chol_inv    = */ fs_chol_inv_cpu,
    /* .grid        = */ cpu_grid,
    /* .gptq        = */ cpu_gptq,
    /* .synchronize = */ NULL,
    /* .describe    = */ NULL,
};

fs_status fs_backend_cpu_new(fs_ctx *ctx, const fs_backend_opts *opts, fs_backend **out)
{
    fs_backend *be = calloc(1, sizeof *be);
    cpu_be *c = calloc(1, sizeof *c);
    if (!be || !c || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(be); free(c);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "cpu backend");
    }
    c->threads = opts ? opts->threads : 0;
    be->iface = cpu_iface;
    be->context = c;
    *out = be;
    return FS_OK;
}
