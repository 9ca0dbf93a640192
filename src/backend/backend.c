/* backend.c: the dispatcher: keeps a backend's memory accounting and
 * dispatches the memory, queue and event calls and the v1 slots through its
 * table (the ops are dispatched by ops.c; registry.c opens backends).
 * Callers never see CUDA headers.
 *
 * Invariants:
 *  1. Accounting (budget, used, peak) lives here, under be->mu, so every
 *     backend refuses an allocation the same way and names what did not fit.
 *  2. A NULL slot is FS_ERR_NODEV naming the call and the backend, except the
 *     optional ones (event_init/fini, hold, synchronize), which are skipped.
 *  3. Range checks of uploads and downloads happen here, before a backend
 *     queues anything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend/backend-impl.h"
#include "cpu/threads.h"

void fs_backend_free(fs_backend *be)
{
    if (!be) return;
    pthread_mutex_destroy(&be->mu);
    be->iface.free(be);
}

/* Every slot the layer forward calls is filled (a backend that lacks one
 * gets the forward run on the cpu; cpu, cpu-async and cuda fill them all). */
int fs_backend_runs_forward(fs_backend *be)
{
    const struct fs_backend_i *i = &be->iface;
    return i->buf_alloc && i->upload && i->download && i->record && i->wait && i->queue_sync &&
           i->fill && i->gemm && i->bias_add && i->add && i->copy && i->hess_acc && i->hess_finish &&
           i->decode && i->rmsnorm && i->rope && i->attention && i->attention_libm && i->swiglu &&
           i->route && i->route_lists && i->gather && i->scatter_add && i->gate_add;
}

/* cpu runs every call inline: work queued ahead of time gains nothing there. */
int fs_backend_queues_async(fs_backend *be)
{
    return be->kind != FS_BE_CPU;
}

const char *fs_backend_name(fs_backend *be)
{
    return be->iface.name(be);
}

void fs_backend_device(fs_backend *be, char *buf, size_t n)
{
    const char *fake = fs_test_env("FORGE_STREAM_TEST_DEVICE");
    if (fake) snprintf(buf, n, "%s", fake);
    else if (be->iface.describe) be->iface.describe(be, buf, n);
    else snprintf(buf, n, "%s: %s (%s kernels)", fs_backend_name(be), fs_blas_config(), fs_blas_kernels());
}

const char *fs_queue_name(fs_queue q)
{
    switch (q) {
    case FS_QUEUE_UPLOAD: return "upload";
    case FS_QUEUE_COMPUTE: return "compute";
    case FS_QUEUE_DOWNLOAD: return "download";
    }
    return "?";
}

static fs_status nodev(fs_ctx *ctx, fs_backend *be, const char *what)
{
    return fs_ctx_err(ctx, FS_ERR_NODEV, "%s is not implemented on %s", what, fs_backend_name(be));
}

static fs_status check_queue(fs_ctx *ctx, const char *what, fs_queue q)
{
    if ((int)q < 0 || (int)q >= FS_QUEUE_COUNT)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: queue %d does not exist (upload, compute, download)", what, (int)q);
    return FS_OK;
}

/* ---- memory -------------------------------------------------------------------- */

fs_status fs_be_alloc(fs_ctx *ctx, fs_backend *be, uint64_t bytes, const char *what, fs_buf **out)
{
    *out = NULL;
    if (!be->iface.buf_alloc) return nodev(ctx, be, "buffer allocation");
    pthread_mutex_lock(&be->mu);
    if (be->budget && (bytes > be->budget || be->used > be->budget - bytes)) {
        uint64_t used = be->used;
        pthread_mutex_unlock(&be->mu);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %s (%llu bytes) does not fit: %llu bytes in use of a budget of %llu",
                          fs_backend_name(be), what, (unsigned long long)bytes, (unsigned long long)used,
                          (unsigned long long)be->budget);
    }
    be->used += bytes;                  /* reserved now, so concurrent callers see it */
    if (be->used > be->peak) be->peak = be->used;
    pthread_mutex_unlock(&be->mu);
    fs_buf *b = calloc(1, sizeof *b);
    fs_status rc = b ? FS_OK : fs_ctx_err(ctx, FS_ERR_NOMEM, "%s: %s: buffer struct", fs_backend_name(be), what);
    if (rc == FS_OK) {
        b->be = be;
        b->size = bytes;
        snprintf(b->what, sizeof b->what, "%s", what);
        rc = be->iface.buf_alloc(ctx, be, b);
    }
    if (rc != FS_OK) {
        free(b);
        pthread_mutex_lock(&be->mu);
        be->used -= bytes;
        pthread_mutex_unlock(&be->mu);
        return rc;
    }
    *out = b;
    return FS_OK;
}

void fs_be_free(fs_backend *be, fs_buf *buf)
{
    if (!buf) return;
    be->iface.buf_free(be, buf);
    pthread_mutex_lock(&be->mu);
    be->used -= buf->size;
    pthread_mutex_unlock(&be->mu);
    free(buf);
}

uint64_t fs_buf_size(const fs_buf *buf)
{
    return buf->size;
}

uint64_t fs_be_mem_used(fs_backend *be)
{
    pthread_mutex_lock(&be->mu);
    uint64_t v = be->used;
    pthread_mutex_unlock(&be->mu);
    return v;
}

uint64_t fs_be_mem_peak(fs_backend *be)
{
    pthread_mutex_lock(&be->mu);
    uint64_t v = be->peak;
    pthread_mutex_unlock(&be->mu);
    return v;
}

uint64_t fs_be_mem_budget(fs_backend *be)
{
    return be->budget;
}

fs_status fs_be_host_alloc(fs_ctx *ctx, fs_backend *be, uint64_t bytes, void **p)
{
    *p = NULL;
    if (!be->iface.host_alloc) return nodev(ctx, be, "host staging memory");
    uint64_t r = bytes ? (bytes + 4095) / 4096 * 4096 : 4096;
    if (r < bytes) return fs_ctx_err(ctx, FS_ERR_NOMEM, "host staging memory of %llu bytes", (unsigned long long)bytes);
    return be->iface.host_alloc(ctx, be, r, p);
}

void fs_be_host_free(fs_backend *be, void *p)
{
    if (p) be->iface.host_free(be, p);
}

/* ---- queues and events ------------------------------------------------------------ */

static fs_status range(fs_ctx *ctx, const char *what, const fs_buf *b, uint64_t off, uint64_t n)
{
    if (!b) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: no buffer", what);
    if (off > b->size || n > b->size - off)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: bytes [%llu, %llu + %llu) are outside buffer '%s' (%llu bytes)",
                          what, (unsigned long long)off, (unsigned long long)off, (unsigned long long)n, b->what,
                          (unsigned long long)b->size);
    return FS_OK;
}

fs_status fs_be_upload(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_buf *dst, uint64_t off, const void *src,
                       uint64_t n)
{
    fs_status rc;
    if ((rc = check_queue(ctx, "upload", q)) != FS_OK || (rc = range(ctx, "upload", dst, off, n)) != FS_OK) return rc;
    if (dst->be != be) return fs_ctx_err(ctx, FS_ERR_USAGE, "upload: buffer '%s' belongs to another backend", dst->what);
    if (n && !src) return fs_ctx_err(ctx, FS_ERR_USAGE, "upload: no host memory");
    if (!be->iface.upload) return nodev(ctx, be, "upload");
    return be->iface.upload(ctx, be, q, dst, off, src, n);
}

fs_status fs_be_download(fs_ctx *ctx, fs_backend *be, fs_queue q, void *dst, fs_buf *src, uint64_t off,
                         uint64_t n)
{
    fs_status rc;
    if ((rc = check_queue(ctx, "download", q)) != FS_OK || (rc = range(ctx, "download", src, off, n)) != FS_OK)
        return rc;
    if (src->be != be) return fs_ctx_err(ctx, FS_ERR_USAGE, "download: buffer '%s' belongs to another backend", src->what);
    if (n && !dst) return fs_ctx_err(ctx, FS_ERR_USAGE, "download: no host memory");
    if (!be->iface.download) return nodev(ctx, be, "download");
    return be->iface.download(ctx, be, q, dst, src, off, n);
}

fs_status fs_be_event_new(fs_ctx *ctx, fs_backend *be, fs_event **out)
{
    *out = NULL;
    if (!be->iface.record) return nodev(ctx, be, "events");
    fs_event *e = calloc(1, sizeof *e);
    if (!e) return fs_ctx_err(ctx, FS_ERR_NOMEM, "event");
    e->be = be;
    if (be->iface.event_init) {
        fs_status rc = be->iface.event_init(ctx, be, e);
        if (rc != FS_OK) { free(e); return rc; }
    }
    *out = e;
    return FS_OK;
}

void fs_be_event_free(fs_backend *be, fs_event *e)
{
    if (!e) return;
    if (be->iface.event_fini) be->iface.event_fini(be, e);
    free(e);
}

static fs_status check_event(fs_ctx *ctx, fs_backend *be, const char *what, const fs_event *e)
{
    if (!e) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: no event", what);
    if (e->be != be) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: the event belongs to another backend", what);
    return FS_OK;
}

fs_status fs_be_record(fs_ctx *ctx, fs_backend *be, fs_event *e, fs_queue q)
{
    fs_status rc;
    if ((rc = check_queue(ctx, "record", q)) != FS_OK || (rc = check_event(ctx, be, "record", e)) != FS_OK) return rc;
    return be->iface.record(ctx, be, e, q);
}

fs_status fs_be_wait(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_event *e)
{
    fs_status rc;
    if ((rc = check_queue(ctx, "wait", q)) != FS_OK || (rc = check_event(ctx, be, "wait", e)) != FS_OK) return rc;
    if (!be->iface.wait) return nodev(ctx, be, "wait");
    return be->iface.wait(ctx, be, q, e);           /* never recorded: satisfied (the slot says) */
}

fs_status fs_be_event_sync(fs_ctx *ctx, fs_backend *be, fs_event *e)
{
    fs_status rc = check_event(ctx, be, "event sync", e);
    if (rc != FS_OK) return rc;
    if (!e->recorded) return FS_OK;
    if (!be->iface.event_sync) return nodev(ctx, be, "event sync");
    return be->iface.event_sync(ctx, be, e);
}

int fs_be_event_done(fs_backend *be, fs_event *e)
{
    if (!e || !e->recorded || !be->iface.event_done) return 1;
    return be->iface.event_done(be, e);
}

fs_status fs_be_sync(fs_ctx *ctx, fs_backend *be, fs_queue q)
{
    fs_status rc = check_queue(ctx, "sync", q);
    if (rc != FS_OK) return rc;
    if (!be->iface.queue_sync) return nodev(ctx, be, "queue sync");
    return be->iface.queue_sync(ctx, be, q);
}

fs_status fs_be_sync_all(fs_ctx *ctx, fs_backend *be)
{
    fs_status first = FS_OK;
    for (int q = 0; q < FS_QUEUE_COUNT; q++) {
        fs_status rc = fs_be_sync(ctx, be, (fs_queue)q);
        if (first == FS_OK) first = rc;
    }
    return first;
}

void fs_be_hold(fs_backend *be, fs_queue q, int hold)
{
    if (be->iface.hold) be->iface.hold(be, q, hold);
}

/* ---- v1 slots ---------------------------------------------------------------------- */

fs_status fs_be_hess_new(fs_ctx *ctx, fs_backend *be, int64_t in, void **state)
{
    if (!be->iface.hess_new) return nodev(ctx, be, "hess_new");
    return be->iface.hess_new(ctx, be, in, state);
}

fs_status fs_be_hess_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x, int64_t rows)
{
    return be->iface.hess_add(ctx, be, state, x, rows);
}

fs_status fs_be_hess_get(fs_ctx *ctx, fs_backend *be, void *state, float *H)
{
    fs_status rc = be->iface.hess_get(ctx, be, state, H);
    if (rc == FS_OK && be->iface.synchronize) rc = be->iface.synchronize(ctx, be);
    return rc;
}

void fs_be_hess_free(fs_backend *be, void *state)
{
    if (state) be->iface.hess_free(be, state);
}

fs_status fs_be_chol_inv(fs_ctx *ctx, fs_backend *be, float *A, int64_t n)
{
    if (!be->iface.chol_inv) return nodev(ctx, be, "chol_inv");
    return be->iface.chol_inv(ctx, be, A, n);
}

fs_status fs_be_grid(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                     int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta)
{
    if (!be->iface.grid) return nodev(ctx, be, "grid");
    return be->iface.grid(ctx, be, gp, W, rows, cols, gw, qmeta);
}

fs_status fs_be_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job)
{
    if (!be->iface.gptq) return nodev(ctx, be, "gptq");
    return be->iface.gptq(ctx, be, job);
}
