/* writer.h: the writer thread.  One background thread runs jobs (write a
 * quantized tensor into the checkpoint, put a chunk into the activation
 * cache, ...) one at a time, in the order they were submitted, so that
 * compute hands its output over and goes on; it waits on the disk only when
 * the jobs queued hold more than max_pending_bytes of memory.
 *
 * Use:
 *
 *     fs_writer *w;
 *     if (fs_writer_new(ctx, layer_bytes, &w)) return ctx->err;
 *     for (each tensor of the layer)
 *         if (fs_writer_submit(ctx, w, write_tensor, t, tensor_free, t->bytes))
 *             break;                         (t was freed; the run has failed)
 *     fs_writer_flush(ctx, w);               (layer boundary: all on disk)
 *     fs_status st = fs_writer_free(ctx, w); (flush, stop, join)
 *
 * A job's fn runs on the writer thread with the writer's own fs_ctx (its
 * quiet and threads copied from the ctx of fs_writer_new; be is NULL: jobs
 * do not touch the compute backend), cleared before each job.  State that
 * is not thread-safe (fs_outckpt, fs_act_writer) must then be used only from
 * jobs once it has been handed to the writer.
 *
 * The first job that fails stops the writer for good: its status and
 * message are kept, every later job is dropped without running (its free_fn
 * still runs), and submit, flush and free report that error.
 *
 * Threads: submit, flush and get_stats may be called from any thread, at
 * the same time (they take the writer's mutex); new and free from one
 * thread with no other call in progress.  A job must not call the writer
 * it runs on (flush from a job would wait for itself).
 */
#ifndef FS_WRITER_H
#define FS_WRITER_H

#include <stdint.h>

#include "src/core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Runs on the writer thread; ctx is the writer's own (see above).  Returns
 * FS_OK, or an error with its message in ctx (fs_ctx_err), which becomes the
 * writer's sticky error.  Must not free arg (free_fn does). */
typedef fs_status (*fs_job_fn)(fs_ctx *ctx, void *arg);
/* Frees arg after the job ran or was dropped; on the writer thread, or on
 * the caller's thread when submit refuses the job.  May be NULL. */
typedef void (*fs_job_free_fn)(void *arg);

typedef struct fs_writer_stats {
    uint64_t jobs;          /* jobs that ran (failed one included) */
    uint64_t dropped;       /* jobs not run because of an earlier error */
    uint64_t bytes;         /* bytes accounted by the jobs that ran */
    uint64_t blocked;       /* submits that had to wait for room */
    uint64_t max_pending;   /* highest pending bytes seen */
    double busy_s;          /* seconds the thread spent running jobs */
    double blocked_s;       /* seconds callers spent waiting in submit (all threads) */
    double flush_s;         /* seconds callers spent waiting in flush and free */
} fs_writer_stats;

typedef struct fs_writer fs_writer;

/* Starts the writer thread.  max_pending_bytes bounds the bytes of the jobs
 * queued or running (see fs_writer_submit); it must be >= 1.  On success
 * *out owns the writer (fs_writer_free).  Errors: FS_ERR_USAGE for a zero
 * limit, FS_ERR_NOMEM, FS_ERR_IO (mutex or thread creation); *out is then
 * NULL and nothing is left allocated. */
fs_status fs_writer_new(fs_ctx *ctx, uint64_t max_pending_bytes, fs_writer **out);

/* Queues job fn(arg), which holds `bytes` bytes of memory until it is done
 * (ran or dropped, and freed).  Blocks while the pending bytes plus `bytes`
 * would exceed max_pending_bytes; a job larger than the limit is accepted
 * once nothing is pending.  Callers are served in the order they called:
 * a waiting submit holds back the ones that came after it, so the queue
 * order is the call order.  Takes ownership of arg in every case: on
 * success the writer calls free_fn(arg) after the job; on error submit calls
 * it before returning.  fn must not be NULL (FS_ERR_USAGE).
 * Errors: the writer's sticky error (message copied into ctx), FS_ERR_NOMEM,
 * FS_ERR_USAGE; the job is then not queued. */
fs_status fs_writer_submit(fs_ctx *ctx, fs_writer *w, fs_job_fn fn, void *arg,
                           fs_job_free_fn free_fn, uint64_t bytes);

/* Waits until every job queued before the call is done (jobs queued by other
 * threads meanwhile are not waited for).  Errors: the writer's sticky error,
 * message copied into ctx. */
fs_status fs_writer_flush(fs_ctx *ctx, fs_writer *w);

/* A snapshot of the counters (busy_s includes a job running now).  Cannot
 * fail. */
void fs_writer_get_stats(fs_writer *w, fs_writer_stats *st);

/* Flushes (every queued job is run, or dropped after an error), stops and
 * joins the thread, frees w.  Accepts NULL (returns FS_OK).  ctx may be NULL
 * (the error is then only returned, for cleanup paths).  Errors: the
 * writer's sticky error, message copied into ctx; w is freed in any case. */
fs_status fs_writer_free(fs_ctx *ctx, fs_writer *w);

#ifdef __cplusplus
}
#endif

#endif
