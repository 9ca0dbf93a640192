/* writer.c: the writer thread (see writer.h): a FIFO of jobs drained by one
 * background thread, with back-pressure on the bytes the jobs hold.
 *
 * Owns: the thread, the mutex and its two condition variables, the queue
 * nodes (wr_job, malloc'ed by submit, freed by the thread or by submit when
 * it refuses a job), the args of the jobs queued (freed through their
 * free_fn), the job context jctx and the sticky error.
 *
 * A job's life, all moves under w->mu except the run itself:
 *
 *                submit               wr_main                  wr_main
 *     (caller) ---------> QUEUED ----------------> RUNNING ---------------> DONE
 *        |                  |    (w->err == FS_OK)   fn(jctx, arg), then    (bytes released,
 *        |                  |                        free_fn(arg)            finished++)
 *        |                  +---------------------------------------------> DONE
 *        |                       wr_main, w->err set: dropped, free_fn(arg)
 *        +-- submit refuses (sticky error, NOMEM, USAGE): free_fn(arg) -----> (gone)
 *
 * The writer itself:
 *
 *     OK ---- a job returns an error (wr_main) ----> FAILED   (w->err, w->errmsg)
 *     OK / FAILED ---- fs_writer_free: flush, stop = 1 ----> STOPPING
 *     STOPPING ---- wr_main sees an empty queue: returns; free joins ----> freed
 *
 * Invariants:
 *  1. Jobs run on the writer thread only, one at a time, in queue order; the
 *     queue order is the order of the submit calls (tickets: a submit is
 *     queued only when w->serving reaches its ticket).
 *  2. w->pending is the sum of the bytes of the jobs QUEUED or RUNNING (a
 *     job's bytes are released only after its free_fn returned).  A job is
 *     queued only if pending + bytes <= max_pending, or pending == 0; so
 *     pending <= max(max_pending, the bytes of one job).
 *  3. w->err is set once, by the thread, from the first job that failed;
 *     after it no job runs and no job is queued; every job queued is still
 *     freed exactly once.
 *  4. w->finished counts the jobs DONE, w->queued those ever queued;
 *     finished <= queued, and finished == queued exactly when the queue is
 *     empty and nothing runs.  flush waits for finished to reach the value
 *     queued had when it was called.
 *  5. The thread exits only when stop is set and the queue is empty, so no
 *     arg is leaked; free sets stop only after its flush.
 *  6. jctx is touched by the thread only (free reads nothing from it).
 *
 * Condition variables: `work` wakes the thread (a job was queued, or stop);
 * `done` wakes callers (a job finished: room freed, flush progress; or the
 * ticket being served moved on).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "stream/writer.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct wr_job {
    struct wr_job *next;
    fs_job_fn fn;
    fs_job_free_fn free_fn;
    void *arg;
    uint64_t bytes;
} wr_job;

struct fs_writer {
    pthread_mutex_t mu;
    pthread_cond_t work;      /* to the thread: a job was queued, or stop */
    pthread_cond_t done;      /* to callers: a job finished, or the turn moved on */
    int sync_ok, thread_ok;
    pthread_t thread;
    wr_job *head, *tail;      /* QUEUED jobs, oldest first */
    uint64_t max_pending;
    uint64_t pending;         /* invariant 2 */
    uint64_t queued, finished;/* invariant 4 */
    uint64_t next_ticket;     /* handed to each submit on entry */
    uint64_t serving;         /* the ticket whose turn it is to queue */
    int nwaiting;             /* submits waiting on `done` */
    int running;              /* a job is RUNNING (for busy_s snapshots) */
    double busy_since;
    int stop;
    fs_status err;            /* sticky (invariant 3) */
    char errmsg[sizeof ((fs_ctx *)0)->errmsg];
    fs_ctx jctx;              /* the jobs' context (invariant 6) */
    fs_writer_stats st;
};

/* Copies the sticky error into ctx (call under w->mu, with w->err set). */
static fs_status sticky(fs_ctx *ctx, const fs_writer *w)
{
    assert(w->err != FS_OK);
    if (!ctx) return w->err;
    return fs_ctx_err(ctx, w->err, "%s", w->errmsg);
}

static void *wr_main(void *arg)
{
    fs_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stop) pthread_cond_wait(&w->work, &w->mu);
        wr_job *j = w->head;
        if (!j) break;                        /* stop, and nothing left (invariant 5) */
        w->head = j->next;
        if (!w->head) w->tail = NULL;
        int run = w->err == FS_OK;
        if (run) {
            w->running = 1;
            w->busy_since = fs_now();
        }
        uint64_t seq = w->finished;
        pthread_mutex_unlock(&w->mu);

        fs_status st = FS_OK;
        if (run) {
            fs_ctx_clear(&w->jctx);
            st = j->fn(&w->jctx, j->arg);
        }
        if (j->free_fn) j->free_fn(j->arg);

        pthread_mutex_lock(&w->mu);
        if (run) {
            w->running = 0;
            w->st.busy_s += fs_now() - w->busy_since;
            w->st.jobs++;
            w->st.bytes += j->bytes;
            if (st != FS_OK) {                /* FS_OK -> FAILED */
                w->err = st;
                if (w->jctx.errmsg[0])
                    memcpy(w->errmsg, w->jctx.errmsg, sizeof w->errmsg);
                else
                    snprintf(w->errmsg, sizeof w->errmsg,
                             "writer: job %llu failed (%s) without a message",
                             (unsigned long long)seq, fs_status_str(st));
            }
        } else {
            w->st.dropped++;
        }
        assert(w->pending >= j->bytes);
        w->pending -= j->bytes;
        w->finished++;
        free(j);
        pthread_cond_broadcast(&w->done);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Frees w and whatever it still owns; the thread must be joined (or never
 * started).  Cannot fail. */
static void destroy(fs_writer *w)
{
    /* Only reachable with jobs when new failed before the thread ran, which
     * cannot queue any; kept so that no arg is ever leaked. */
    for (wr_job *j = w->head, *n; j; j = n) {
        n = j->next;
        if (j->free_fn) j->free_fn(j->arg);
        free(j);
    }
    if (w->sync_ok) {
        pthread_cond_destroy(&w->done);
        pthread_cond_destroy(&w->work);
        pthread_mutex_destroy(&w->mu);
    }
    free(w);
}

fs_status fs_writer_new(fs_ctx *ctx, uint64_t max_pending_bytes, fs_writer **out)
{
    *out = NULL;
    if (max_pending_bytes == 0)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "writer: max_pending_bytes must be at least 1");
    fs_writer *w = calloc(1, sizeof *w);
    if (!w) return fs_ctx_err(ctx, FS_ERR_NOMEM, "writer: context of %zu bytes", sizeof *w);
    w->max_pending = max_pending_bytes;
    fs_ctx_init(&w->jctx);
    w->jctx.quiet = ctx->quiet;
    w->jctx.threads = ctx->threads;
    w->jctx.crash = ctx->crash;
    w->jctx.be = NULL;
    if (pthread_mutex_init(&w->mu, NULL)) {
        free(w);
        return fs_ctx_err(ctx, FS_ERR_IO, "writer: pthread_mutex_init failed");
    }
    if (pthread_cond_init(&w->work, NULL)) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return fs_ctx_err(ctx, FS_ERR_IO, "writer: pthread_cond_init failed");
    }
    if (pthread_cond_init(&w->done, NULL)) {
        pthread_cond_destroy(&w->work);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return fs_ctx_err(ctx, FS_ERR_IO, "writer: pthread_cond_init failed");
    }
    w->sync_ok = 1;
    int e = pthread_create(&w->thread, NULL, wr_main, w);
    if (e) {
        destroy(w);
        return fs_ctx_err(ctx, FS_ERR_IO, "writer: pthread_create: %s", strerror(e));
    }
    w->thread_ok = 1;
    *out = w;
    return FS_OK;
}

/* Whether a job of `bytes` may be queued now (invariant 2; under w->mu). */
static int fits(const fs_writer *w, uint64_t bytes)
{
    if (w->pending == 0) return 1;
    return w->pending <= w->max_pending && bytes <= w->max_pending - w->pending;
}

fs_status fs_writer_submit(fs_ctx *ctx, fs_writer *w, fs_job_fn fn, void *arg,
                           fs_job_free_fn free_fn, uint64_t bytes)
{
    if (!fn) {
        if (free_fn) free_fn(arg);
        return fs_ctx_err(ctx, FS_ERR_USAGE, "writer: submit without a job function");
    }
    wr_job *j = malloc(sizeof *j);
    if (!j) {
        if (free_fn) free_fn(arg);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "writer: job of %llu bytes",
                          (unsigned long long)bytes);
    }
    *j = (wr_job){ NULL, fn, free_fn, arg, bytes };

    pthread_mutex_lock(&w->mu);
    assert(!w->stop);                          /* no submit may race free */
    uint64_t ticket = w->next_ticket++;
    double t0 = 0;
    int waited = 0;
    while (w->err == FS_OK && !(ticket == w->serving && fits(w, bytes))) {
        if (!waited) {
            waited = 1;
            t0 = fs_now();
        }
        w->nwaiting++;
        pthread_cond_wait(&w->done, &w->mu);
        w->nwaiting--;
    }
    if (waited) {
        w->st.blocked++;
        w->st.blocked_s += fs_now() - t0;
    }
    if (w->err != FS_OK) {                     /* tickets no longer matter (invariant 3) */
        fs_status st = sticky(ctx, w);
        pthread_mutex_unlock(&w->mu);
        free(j);
        if (free_fn) free_fn(arg);
        return st;
    }
    w->serving++;
    if (w->nwaiting > 0) pthread_cond_broadcast(&w->done);   /* the next ticket's turn */
    if (w->tail) w->tail->next = j;
    else w->head = j;
    w->tail = j;
    w->pending += bytes;
    if (w->pending > w->st.max_pending) w->st.max_pending = w->pending;
    w->queued++;
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    return FS_OK;
}

/* Waits until the jobs queued so far are DONE; copies the sticky error into
 * ctx (if not NULL) and returns it. */
static fs_status wait_done(fs_ctx *ctx, fs_writer *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t target = w->queued;
    if (w->finished < target) {
        double t0 = fs_now();
        while (w->finished < target) pthread_cond_wait(&w->done, &w->mu);
        w->st.flush_s += fs_now() - t0;
    }
    fs_status st = w->err != FS_OK ? sticky(ctx, w) : FS_OK;
    pthread_mutex_unlock(&w->mu);
    return st;
}

fs_status fs_writer_flush(fs_ctx *ctx, fs_writer *w)
{
    return wait_done(ctx, w);
}

void fs_writer_get_stats(fs_writer *w, fs_writer_stats *st)
{
    pthread_mutex_lock(&w->mu);
    *st = w->st;
    if (w->running) st->busy_s += fs_now() - w->busy_since;
    pthread_mutex_unlock(&w->mu);
}

fs_status fs_writer_free(fs_ctx *ctx, fs_writer *w)
{
    if (!w) return FS_OK;
    fs_status st = wait_done(ctx, w);
    pthread_mutex_lock(&w->mu);
    w->stop = 1;                               /* -> STOPPING */
    pthread_cond_signal(&w->work);
    pthread_mutex_unlock(&w->mu);
    if (w->thread_ok) pthread_join(w->thread, NULL);
    destroy(w);
    return st;
}
