/* prefetch.c: the io_uring prefetcher (see prefetch.h): a ring of slot
 * buffers, a batch planner that coalesces extents into aligned reads, and a
 * background thread that drives one io_uring.
 *
 * Owns: the slot buffers (made by opts.alloc or posix_memalign, freed by the
 * matching release), the io_uring and its buffer registration, the thread,
 * the file descriptors (one per path; a second, buffered one for a file whose
 * O_DIRECT reads were refused) and the plan of each slot.
 *
 * Slot states, all changed under p->mu:
 *
 *              submit              settle               wait
 *     FREE ------------> READING ------------> READY ---------> IN_USE
 *      ^                                       |   |              |
 *      +---- wait, when the batch failed ------+   |              |
 *      +---------------- release ------------------+--------------+
 *
 *   fs_prefetch_submit  FREE -> READING      plan installed, reads queued
 *   settle (pf_main)    READING -> READY     every read of the batch finished
 *                                            (or skipped after an error: failed)
 *   fs_prefetch_wait    READY -> IN_USE      pointers lent to the caller
 *                       READY -> FREE        when the batch failed
 *   fs_prefetch_release IN_USE/READY -> FREE (READING: waits for READY first)
 *
 * Invariants:
 *  1. A slot's buffer and plan are touched by the thread only while the slot
 *     is READING, and by callers only while it is FREE (submit), READY or
 *     IN_USE; so no buffer is reused while a read on it is in flight.
 *  2. inflight counts the SQEs prepared and not yet completed; requeued reads
 *     are not in flight; inflight + nrequeue <= queue_depth.
 *  3. A READING slot's outstanding counts its reads issued and not finished
 *     (in flight or requeued); it becomes READY when all its reads are issued
 *     and outstanding is 0.
 *  4. The first failure (p->err, p->errmsg) is sticky: no read is queued after
 *     it, the batches it cut short are failed, later submits return it.
 *  5. The thread exits only when stopping with nothing in flight, so buffers
 *     and descriptors are freed after the last completion.
 *  6. Reads are aligned to 4096 in offset, length and memory in both modes,
 *     so a batch needs the same bytes with or without O_DIRECT and the
 *     buffered fallback can reuse the plan; the part of a read beyond the
 *     last byte asked ("need") may be cut short by the end of the file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "stream/prefetch.h"

#include <assert.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALIGN ((uint64_t)FS_PREFETCH_ALIGN)
#define DEFAULT_SLOTS 2
#define DEFAULT_SLOT_BYTES (256ull << 20)
#define DEFAULT_DEPTH 16
#define DEFAULT_MAX_REQUEST (8ull << 20)
#define DEFAULT_GAP (64ull << 10)
#define MAX_SLOTS 1024                 /* buf_index of read_fixed is 16 bits */
#define MAX_DEPTH 4096
#define MAX_REQUEST_CAP (1ull << 30)   /* a read's length is an unsigned int */

enum { SLOT_FREE, SLOT_READING, SLOT_READY, SLOT_IN_USE };

typedef struct pf_file {
    char *path;
    int fd;          /* the descriptor reads use now */
    int direct;      /* fd is O_DIRECT */
    int fd_old;      /* the O_DIRECT one after a fallback (reads may still use it), or -1 */
} pf_file;

typedef struct pf_req {
    int ext;         /* planned: an extent of the file (its path) */
    int file;        /* queued: index in p->files */
    int slot;
    int direct;      /* the descriptor of the read in flight was O_DIRECT */
    uint64_t pos;    /* where the read lands in the slot */
    uint64_t off;    /* file offset, aligned */
    uint64_t len;    /* bytes, aligned */
    uint64_t need;   /* bytes that must arrive; the rest may lie beyond EOF */
    uint64_t done;   /* bytes arrived */
} pf_req;

typedef struct pf_plan {
    pf_req *req;
    int nreq;
    uint64_t *rel;   /* [n] offset of each extent's bytes in the slot */
    int n;
    uint64_t need;   /* slot bytes */
    uint64_t asked;  /* sum of the extent lengths */
} pf_plan;

typedef struct pf_slot {
    uint8_t *buf;
    int state;
    int ticket;
    uint64_t seq;    /* submission order */
    int failed;      /* a read failed or was skipped: the bytes are not valid */
    pf_plan plan;
    int next;        /* next read to issue */
    int outstanding; /* issued and not finished (invariant 3) */
} pf_slot;

struct fs_prefetch {
    fs_prefetch_opts o;
    int quiet;
    pthread_mutex_t mu;
    pthread_cond_t work;   /* to the thread: a batch was queued, or stop */
    pthread_cond_t ready;  /* to waiters: a slot left READING */
    pthread_cond_t freed;  /* to submitters: a slot became FREE, or an error */
    int sync_ok, ring_ok, thread_ok;
    pthread_t thread;
    struct io_uring ring;
    int registered;
    pf_slot *slot;
    pf_file *file;
    int nfile, capfile;
    pf_req **requeue;      /* [queue_depth] reads to issue again */
    int nrequeue;
    int inflight;
    int lost;              /* a failed submit left SQEs that will never complete */
    int stop;
    int next_ticket;
    uint64_t next_seq;
    int logged_fallback;
    fs_status err;
    char errmsg[768];
    fs_prefetch_stats st;
    double busy_since;
};

void fs_prefetch_opts_default(fs_prefetch_opts *o)
{
    memset(o, 0, sizeof *o);
    o->slots = DEFAULT_SLOTS;
    o->slot_bytes = DEFAULT_SLOT_BYTES;
    o->queue_depth = DEFAULT_DEPTH;
    o->max_request = DEFAULT_MAX_REQUEST;
    o->gap = DEFAULT_GAP;
    o->direct = 1;
}

/* ---- planning ----------------------------------------------------------- */

typedef struct span {
    const char *path;
    uint64_t a, b;   /* aligned start and end */
    uint64_t end;    /* real end */
    int idx;         /* extent */
} span;

static int span_cmp(const void *x, const void *y)
{
    const span *s = x, *t = y;
    int c = strcmp(s->path, t->path);
    if (c) return c;
    if (s->a != t->a) return s->a < t->a ? -1 : 1;
    return s->idx - t->idx;
}

static void plan_free(pf_plan *pl)
{
    free(pl->req);
    free(pl->rel);
    memset(pl, 0, sizeof *pl);
}

/* Coalesces ext[n] into runs (same path, aligned spans at most gap apart),
 * lays the runs out one after the other and splits each into reads of at
 * most max_request; *pl_need gets the bytes.  With pl == NULL only *pl_need is
 * computed.  Errors: FS_ERR_USAGE (bad extent; more than limit bytes, saying
 * how many), FS_ERR_NOMEM; nothing is left allocated. */
static fs_status plan_batch(fs_ctx *ctx, uint64_t gap, uint64_t max_request, uint64_t limit,
                            const fs_extent *ext, int n, uint64_t *pl_need, pf_plan *pl)
{
    if (n < 0) return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: %d extents", n);
    if (n > 0 && !ext) return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: %d extents at NULL", n);
    span *sp = NULL;
    uint64_t *rel = NULL;
    pf_req *req = NULL;
    int m = 0;
    uint64_t asked = 0;
    if (n > 0) {
        sp = fs_alloc2((size_t)n, sizeof *sp);
        if (!sp) return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: plan of %d extents", n);
    }
    for (int i = 0; i < n; i++) {
        const fs_extent *e = &ext[i];
        if (!e->path) {
            free(sp);
            return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: extent %d has no path", i);
        }
        if (e->offset > UINT64_MAX - e->length || e->offset + e->length > UINT64_MAX - ALIGN) {
            free(sp);
            return fs_ctx_err(ctx, FS_ERR_USAGE,
                              "prefetch: extent %d of %s: offset %llu + length %llu overflows",
                              i, e->path, (unsigned long long)e->offset,
                              (unsigned long long)e->length);
        }
        asked += e->length;   /* a statistic only */
        if (e->length == 0) continue;
        uint64_t end = e->offset + e->length;
        sp[m++] = (span){ e->path, e->offset & ~(ALIGN - 1), (end + ALIGN - 1) & ~(ALIGN - 1),
                          end, i };
    }
    if (m > 1) qsort(sp, (size_t)m, sizeof *sp, span_cmp);

    /* Pass 1 finds the runs in place (sp[r] becomes run r); pass 2 emits. */
    int nrun = 0, nreq = 0;
    uint64_t pos = 0;
    if (pl && n > 0) {
        rel = calloc((size_t)n, sizeof *rel);
        if (!rel) goto nomem;
    }
    for (int i = 0; i < m;) {
        span run = sp[i];
        int j = i + 1;
        while (j < m && strcmp(sp[j].path, run.path) == 0 &&
               (sp[j].a <= run.b || sp[j].a - run.b <= gap)) {
            if (sp[j].b > run.b) run.b = sp[j].b;
            if (sp[j].end > run.end) run.end = sp[j].end;
            j++;
        }
        uint64_t len = run.b - run.a;
        if (pos > UINT64_MAX - len) {
            free(sp); free(rel);
            return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: batch of %d extents overflows", n);
        }
        if (rel)
            for (int k = i; k < j; k++) rel[sp[k].idx] = pos + (ext[sp[k].idx].offset - run.a);
        uint64_t pieces = (len + max_request - 1) / max_request;
        if (pieces > (uint64_t)(INT32_MAX - nreq)) {
            free(sp); free(rel);
            return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: batch of %d extents needs too many reads", n);
        }
        nreq += (int)pieces;
        sp[nrun++] = run;   /* run.idx: the first extent of the run (its path) */
        pos += len;
        i = j;
    }
    if (pos > limit) {
        free(sp); free(rel);
        return fs_ctx_err(ctx, FS_ERR_USAGE,
                          "prefetch: a batch of %d extents needs %llu bytes (coalesced, aligned to "
                          "%llu) but a slot holds %llu",
                          n, (unsigned long long)pos, (unsigned long long)ALIGN,
                          (unsigned long long)limit);
    }
    *pl_need = pos;
    if (!pl) {
        free(sp);
        return FS_OK;
    }
    if (nreq > 0) {
        req = calloc((size_t)nreq, sizeof *req);
        if (!req) goto nomem;
    }
    int q = 0;
    pos = 0;
    for (int r = 0; r < nrun; r++) {
        const span *s = &sp[r];
        uint64_t pieces = (s->b - s->a + max_request - 1) / max_request;
        for (uint64_t k = 0; k < pieces; k++) {
            uint64_t o = s->a + k * max_request;
            uint64_t len = s->b - o < max_request ? s->b - o : max_request;
            uint64_t need = s->end - o < len ? s->end - o : len;   /* o < b = roundup(end) */
            req[q++] = (pf_req){ .ext = s->idx, .file = -1, .slot = -1, .pos = pos + (o - s->a),
                                 .off = o, .len = len, .need = need };
        }
        pos += s->b - s->a;
    }
    assert(q == nreq);
    free(sp);
    pl->req = req;
    pl->nreq = nreq;
    pl->rel = rel;
    pl->n = n;
    pl->need = *pl_need;
    pl->asked = asked;
    return FS_OK;
nomem:
    free(sp); free(rel); free(req);
    return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: plan of %d extents", n);
}

fs_status fs_prefetch_need(fs_ctx *ctx, const fs_prefetch_opts *o, const fs_extent *ext,
                           int n, uint64_t *bytes)
{
    uint64_t need = 0;
    /* the split does not change the bytes: any valid max_request will do */
    fs_status st = plan_batch(ctx, o->gap, MAX_REQUEST_CAP, UINT64_MAX, ext, n, &need, NULL);
    if (st == FS_OK) *bytes = need;
    return st;
}

/* ---- files (under p->mu) -------------------------------------------------- */

static void log_fallback(fs_prefetch *p, const char *path, const char *when)
{
    if (p->logged_fallback) return;
    p->logged_fallback = 1;
    fs_ctx lc;
    fs_ctx_init(&lc);
    lc.quiet = p->quiet;
    fs_log(&lc, "prefetch: O_DIRECT refused for %s (%s: EINVAL); reading such files buffered",
           path, when);
}

/* open(2) through the rig; -errno on failure. */
static int open_fd(fs_prefetch *p, const char *path, int direct)
{
    if (p->o.rig_open) {
        int r = p->o.rig_open(p->o.rig_arg, path, direct);
        if (r < 0) return r;
    }
    /* O_NONBLOCK: a named pipe put in a shard's place must not hang the run */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (direct ? O_DIRECT : 0));
    if (fd < 0) return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        close(fd);
        return -EINVAL;
    }
    return fd;
}

/* Index of path in p->file, opening it if new.  Errors: FS_ERR_IO, FS_ERR_NOMEM. */
static fs_status file_get(fs_ctx *ctx, fs_prefetch *p, const char *path, int *idx)
{
    for (int i = p->nfile - 1; i >= 0; i--)
        if (strcmp(p->file[i].path, path) == 0) { *idx = i; return FS_OK; }
    if (p->nfile == p->capfile) {
        int cap = p->capfile ? 2 * p->capfile : 8;
        pf_file *f = realloc(p->file, (size_t)cap * sizeof *f);
        if (!f) return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: file table");
        p->file = f;
        p->capfile = cap;
    }
    char *copy = strdup(path);
    if (!copy) return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: file table");
    int direct = p->o.direct, fd = -1;
    if (direct) {
        fd = open_fd(p, path, 1);
        if (fd == -EINVAL) {
            log_fallback(p, path, "open");
            direct = 0;
        }
    }
    if (!direct) fd = open_fd(p, path, 0);
    if (fd < 0) {
        free(copy);
        return fs_ctx_err(ctx, FS_ERR_IO, "open %s: %s", path, strerror(-fd));
    }
    p->file[p->nfile] = (pf_file){ copy, fd, direct, -1 };
    *idx = p->nfile++;
    return FS_OK;
}

/* A file whose O_DIRECT read failed with EINVAL: reads go buffered from now
 * on.  Returns 0 or -errno of the open. */
static int file_fall_back(fs_prefetch *p, pf_file *f)
{
    if (!f->direct) return 0;   /* another read of it did it already */
    int fd = open_fd(p, f->path, 0);
    if (fd < 0) return fd;
    log_fallback(p, f->path, "read");
    f->fd_old = f->fd;
    f->fd = fd;
    f->direct = 0;
    return 0;
}

/* ---- the thread (everything here runs under p->mu) ------------------------ */

static void record_err(fs_prefetch *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void record_err(fs_prefetch *p, const char *fmt, ...)
{
    if (p->err != FS_OK) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errmsg, sizeof p->errmsg, fmt, ap);
    va_end(ap);
    p->err = FS_ERR_IO;
    pthread_cond_broadcast(&p->freed);   /* blocked submitters return the error */
}

/* The next read to issue: a requeued one, else the next of the oldest
 * READING batch with reads left.  NULL if none. */
static pf_req *next_req(fs_prefetch *p)
{
    if (p->nrequeue > 0) return p->requeue[--p->nrequeue];
    pf_slot *best = NULL;
    for (int i = 0; i < p->o.slots; i++) {
        pf_slot *s = &p->slot[i];
        if (s->state == SLOT_READING && s->next < s->plan.nreq && (!best || s->seq < best->seq))
            best = s;
    }
    if (!best) return NULL;
    best->outstanding++;
    return &best->plan.req[best->next++];
}

static void issue(fs_prefetch *p, struct io_uring_sqe *sqe, pf_req *r)
{
    pf_slot *s = &p->slot[r->slot];
    pf_file *f = &p->file[r->file];
    uint8_t *dst = s->buf + r->pos + r->done;
    unsigned len = (unsigned)(r->len - r->done);
    uint64_t off = r->off + r->done;
    r->direct = f->direct;
    if (p->registered)
        io_uring_prep_read_fixed(sqe, f->fd, dst, len, off, r->slot);
    else
        io_uring_prep_read(sqe, f->fd, dst, len, off);
    io_uring_sqe_set_data(sqe, r);
}

static void requeue(fs_prefetch *p, pf_req *r)
{
    assert(p->nrequeue < p->o.queue_depth);
    p->requeue[p->nrequeue++] = r;
    p->st.requeues++;
}

static void finish(fs_prefetch *p, pf_req *r, int failed)
{
    pf_slot *s = &p->slot[r->slot];
    assert(s->state == SLOT_READING && s->outstanding > 0);
    s->outstanding--;
    if (failed) s->failed = 1;
}

/* One completion (step 4 of the loop). */
static void complete(fs_prefetch *p, struct io_uring_cqe *cqe)
{
    pf_req *r = io_uring_cqe_get_data(cqe);
    pf_file *f = &p->file[r->file];
    int res = cqe->res;
    if (--p->inflight == 0) p->st.busy_s += fs_now() - p->busy_since;
    p->st.requests++;
    if (p->o.rig_read) res = p->o.rig_read(p->o.rig_arg, f->path, r->off + r->done, r->direct, res);
    if (res > 0) p->st.bytes += (uint64_t)res;
    if (p->err != FS_OK) {              /* stopping: account for it, queue nothing */
        if (res > 0) r->done += (uint64_t)res;
        finish(p, r, res < 0 || r->done < r->need);
        return;
    }
    if (res == -EAGAIN || res == -EINTR) {
        requeue(p, r);
        return;
    }
    if (res == -EINVAL && r->direct) {
        int e = file_fall_back(p, f);
        if (e == 0) {
            requeue(p, r);
            return;
        }
        record_err(p, "open %s (buffered, after O_DIRECT was refused): %s", f->path, strerror(-e));
        finish(p, r, 1);
        return;
    }
    if (res < 0) {
        record_err(p, "read %s @%llu (%llu bytes): %s", f->path,
                   (unsigned long long)(r->off + r->done),
                   (unsigned long long)(r->len - r->done), strerror(-res));
        finish(p, r, 1);
        return;
    }
    r->done += (uint64_t)res;
    if (r->done >= r->need) {           /* full, or all but padding beyond EOF */
        finish(p, r, 0);
        return;
    }
    if (res == 0) {
        record_err(p, "read %s @%llu: end of file, %llu bytes short",
                   f->path, (unsigned long long)(r->off + r->done),
                   (unsigned long long)(r->need - r->done));
        finish(p, r, 1);
        return;
    }
    requeue(p, r);                      /* short read: the rest */
}

/* READING -> READY for every batch that has nothing left to read; after an
 * error, drops what was not yet issued (invariant 4). */
static void settle(fs_prefetch *p)
{
    if (p->err != FS_OK) {
        while (p->nrequeue > 0) finish(p, p->requeue[--p->nrequeue], 1);
        for (int i = 0; i < p->o.slots; i++) {
            pf_slot *s = &p->slot[i];
            if (s->state == SLOT_READING && s->next < s->plan.nreq) {
                s->next = s->plan.nreq;
                s->failed = 1;
            }
        }
    }
    int changed = 0;
    for (int i = 0; i < p->o.slots; i++) {
        pf_slot *s = &p->slot[i];
        if (s->state != SLOT_READING) continue;
        int done = s->next == s->plan.nreq && s->outstanding == 0;
        if (p->lost && p->inflight == 0) {   /* reads that will never complete */
            done = 1;
            if (s->outstanding) s->failed = 1;
        }
        if (done) {
            s->state = SLOT_READY;
            changed = 1;
        }
    }
    if (changed) pthread_cond_broadcast(&p->ready);
}

/* The loop of STYLE.md "io_uring loops". */
static void *pf_main(void *arg)
{
    fs_prefetch *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        /* (1) fill SQEs while in flight < depth */
        while (!p->stop && p->err == FS_OK && p->inflight < p->o.queue_depth &&
               io_uring_sq_space_left(&p->ring) > 0) {
            pf_req *r = next_req(p);
            if (!r) break;
            issue(p, io_uring_get_sqe(&p->ring), r);
            if (p->inflight++ == 0) p->busy_since = fs_now();
        }
        if (p->inflight == 0) {
            settle(p);
            if (p->stop) break;
            pthread_cond_wait(&p->work, &p->mu);
            continue;
        }
        int may_submit = p->err == FS_OK && !p->stop;
        int inflight = p->inflight;
        pthread_mutex_unlock(&p->mu);

        /* (2) submit once */
        int sr = 0;
        if (may_submit && io_uring_sq_ready(&p->ring) > 0) sr = io_uring_submit(&p->ring);
        int unsubmitted = (int)io_uring_sq_ready(&p->ring);
        int hard = sr < 0 && sr != -EINTR && sr != -EAGAIN && sr != -EBUSY;
        if (unsubmitted > 0 && (hard || !may_submit)) {
            /* left in the SQ ring, never to be submitted (err or stop is set
             * for good): they will not complete */
            pthread_mutex_lock(&p->mu);
            if (hard) record_err(p, "prefetch: io_uring_submit: %s", strerror(-sr));
            p->inflight -= unsubmitted;
            p->lost = 1;
            if (p->inflight == 0) p->st.busy_s += fs_now() - p->busy_since;
            settle(p);
            continue;
        }
        if (inflight - unsubmitted <= 0) {   /* kernel busy, none of ours in it: retry */
            struct timespec ts = { 0, 200000 };
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&p->mu);
            continue;
        }

        /* (3) wait for one completion, then peek the rest */
        struct io_uring_cqe *cqe = NULL;
        int wr;
        do wr = io_uring_wait_cqe(&p->ring, &cqe);
        while (wr == -EINTR || wr == -EAGAIN);
        pthread_mutex_lock(&p->mu);
        if (wr < 0) {
            record_err(p, "prefetch: io_uring_wait_cqe: %s", strerror(-wr));
            p->inflight = 0;   /* cannot be waited out; see the comment in free */
            p->lost = 1;
            settle(p);
            continue;
        }
        /* (4) each: requeue, advance, record, or finish; always seen */
        do {
            complete(p, cqe);
            io_uring_cqe_seen(&p->ring, cqe);
        } while (io_uring_peek_cqe(&p->ring, &cqe) == 0);
        settle(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---- public ------------------------------------------------------------- */

static void destroy(fs_prefetch *p)
{
    if (p->thread_ok) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);   /* returns once nothing is in flight */
    }
    if (p->ring_ok) {
        if (p->registered) io_uring_unregister_buffers(&p->ring);
        io_uring_queue_exit(&p->ring);
    }
    if (p->slot) {
        for (int i = 0; i < p->o.slots; i++) {
            pf_slot *s = &p->slot[i];
            if (s->buf) {
                if (p->o.release) p->o.release(s->buf, (size_t)p->o.slot_bytes, p->o.alloc_arg);
                else free(s->buf);
            }
            plan_free(&s->plan);
        }
        free(p->slot);
    }
    for (int i = 0; i < p->nfile; i++) {
        close(p->file[i].fd);
        if (p->file[i].fd_old >= 0) close(p->file[i].fd_old);
        free(p->file[i].path);
    }
    free(p->file);
    free(p->requeue);
    if (p->sync_ok) {
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->ready);
        pthread_cond_destroy(&p->freed);
        pthread_mutex_destroy(&p->mu);
    }
    free(p);
}

static fs_status check_opts(fs_ctx *ctx, const fs_prefetch_opts *o)
{
    if (o->slots < 1 || o->slots > MAX_SLOTS)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: slots %d not in [1, %d]", o->slots, MAX_SLOTS);
    if (o->slot_bytes == 0 || o->slot_bytes % ALIGN || o->slot_bytes > SIZE_MAX)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: slot_bytes %llu is not a positive multiple of %llu",
                          (unsigned long long)o->slot_bytes, (unsigned long long)ALIGN);
    if (o->queue_depth < 1 || o->queue_depth > MAX_DEPTH)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: queue_depth %d not in [1, %d]",
                          o->queue_depth, MAX_DEPTH);
    if (o->max_request < ALIGN || o->max_request > MAX_REQUEST_CAP || o->max_request % ALIGN)
        return fs_ctx_err(ctx, FS_ERR_USAGE,
                          "prefetch: max_request %llu is not a multiple of %llu in [%llu, %llu]",
                          (unsigned long long)o->max_request, (unsigned long long)ALIGN,
                          (unsigned long long)ALIGN, (unsigned long long)MAX_REQUEST_CAP);
    if (!o->alloc != !o->release)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: alloc and release must be given together");
    return FS_OK;
}

fs_status fs_prefetch_new(fs_ctx *ctx, const fs_prefetch_opts *o, fs_prefetch **out)
{
    *out = NULL;
    fs_status st = check_opts(ctx, o);
    if (st) return st;
    fs_prefetch *p = calloc(1, sizeof *p);
    if (!p) return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: context");
    p->o = *o;
    p->quiet = ctx->quiet;
    p->slot = calloc((size_t)o->slots, sizeof *p->slot);
    p->requeue = calloc((size_t)o->queue_depth, sizeof *p->requeue);
    if (!p->slot || !p->requeue) {
        destroy(p);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: context");
    }
    for (int i = 0; i < o->slots; i++) {
        void *b = NULL;
        if (o->alloc) b = o->alloc((size_t)o->slot_bytes, o->alloc_arg);
        else if (posix_memalign(&b, ALIGN, (size_t)o->slot_bytes) != 0) b = NULL;
        if (!b) {
            destroy(p);
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: slot %d of %llu bytes", i,
                              (unsigned long long)o->slot_bytes);
        }
        p->slot[i].buf = b;
        if ((uintptr_t)b % ALIGN) {
            destroy(p);
            return fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: alloc returned %p, not aligned to %llu",
                              b, (unsigned long long)ALIGN);
        }
    }
    int e = io_uring_queue_init((unsigned)o->queue_depth, &p->ring, 0);
    if (e < 0) {
        destroy(p);
        return fs_ctx_err(ctx, FS_ERR_IO, "prefetch: io_uring_queue_init(%d): %s", o->queue_depth,
                          strerror(-e));
    }
    p->ring_ok = 1;
    struct iovec *iov = fs_alloc2((size_t)o->slots, sizeof *iov);
    if (!iov) {
        destroy(p);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "prefetch: context");
    }
    for (int i = 0; i < o->slots; i++) iov[i] = (struct iovec){ p->slot[i].buf, (size_t)o->slot_bytes };
    e = io_uring_register_buffers(&p->ring, iov, (unsigned)o->slots);
    free(iov);
    p->registered = e == 0;
    if (e)
        fs_log(ctx, "prefetch: cannot register %d buffers of %llu bytes (%s); using plain reads",
               o->slots, (unsigned long long)o->slot_bytes, strerror(-e));
    if (pthread_mutex_init(&p->mu, NULL) || pthread_cond_init(&p->work, NULL) ||
        pthread_cond_init(&p->ready, NULL) || pthread_cond_init(&p->freed, NULL)) {
        destroy(p);
        return fs_ctx_err(ctx, FS_ERR_IO, "prefetch: pthread mutex/cond init failed");
    }
    p->sync_ok = 1;
    e = pthread_create(&p->thread, NULL, pf_main, p);
    if (e) {
        destroy(p);
        return fs_ctx_err(ctx, FS_ERR_IO, "prefetch: pthread_create: %s", strerror(e));
    }
    p->thread_ok = 1;
    *out = p;
    return FS_OK;
}

/* Reports the sticky error to ctx (call under p->mu). */
static fs_status sticky(fs_ctx *ctx, const fs_prefetch *p)
{
    return fs_ctx_err(ctx, p->err, "%s", p->errmsg);
}

fs_status fs_prefetch_submit(fs_ctx *ctx, fs_prefetch *p, const fs_extent *ext, int n,
                             int *ticket)
{
    pf_plan pl = { 0 };
    uint64_t need = 0;
    fs_status st = plan_batch(ctx, p->o.gap, p->o.max_request, p->o.slot_bytes, ext, n, &need, &pl);
    if (st) return st;
    pthread_mutex_lock(&p->mu);
    if (p->err) {
        st = sticky(ctx, p);
        goto out;
    }
    for (int i = 0; i < pl.nreq; i++) {
        pf_req *r = &pl.req[i];
        if (i > 0 && pl.req[i - 1].ext == r->ext) {
            r->file = pl.req[i - 1].file;
            continue;
        }
        st = file_get(ctx, p, ext[r->ext].path, &r->file);
        if (st) goto out;
    }
    pf_slot *s = NULL;
    for (;;) {
        if (p->err) {
            st = sticky(ctx, p);
            goto out;
        }
        for (int i = 0; i < p->o.slots && !s; i++)
            if (p->slot[i].state == SLOT_FREE) s = &p->slot[i];
        if (s) break;
        pthread_cond_wait(&p->freed, &p->mu);
    }
    int si = (int)(s - p->slot);
    for (int i = 0; i < pl.nreq; i++) pl.req[i].slot = si;
    plan_free(&s->plan);
    s->plan = pl;
    memset(&pl, 0, sizeof pl);
    s->ticket = p->next_ticket;
    p->next_ticket = (p->next_ticket + 1) & INT32_MAX;
    s->seq = p->next_seq++;
    s->failed = 0;
    s->next = 0;
    s->outstanding = 0;
    s->state = s->plan.nreq ? SLOT_READING : SLOT_READY;
    p->st.batches++;
    p->st.asked += s->plan.asked;
    *ticket = s->ticket;
    pthread_cond_signal(&p->work);
out:
    pthread_mutex_unlock(&p->mu);
    plan_free(&pl);
    return st;
}

/* The slot of a ticket that is not FREE, or NULL (call under p->mu). */
static pf_slot *find(fs_prefetch *p, int ticket)
{
    for (int i = 0; i < p->o.slots; i++)
        if (p->slot[i].state != SLOT_FREE && p->slot[i].ticket == ticket) return &p->slot[i];
    return NULL;
}

fs_status fs_prefetch_wait(fs_ctx *ctx, fs_prefetch *p, int ticket, const uint8_t *ptr[])
{
    pthread_mutex_lock(&p->mu);
    pf_slot *s = find(p, ticket);
    fs_status st = FS_OK;
    if (!s || s->state == SLOT_IN_USE) {
        st = fs_ctx_err(ctx, FS_ERR_USAGE, "prefetch: ticket %d is not pending%s", ticket,
                        s ? " (already waited for)" : "");
        goto out;
    }
    while (s->state == SLOT_READING) pthread_cond_wait(&p->ready, &p->mu);
    if (s->failed) {
        s->state = SLOT_FREE;
        pthread_cond_broadcast(&p->freed);
        st = p->err ? sticky(ctx, p) : fs_ctx_err(ctx, FS_ERR_IO, "prefetch: batch %d failed", ticket);
        goto out;
    }
    for (int i = 0; i < s->plan.n; i++) ptr[i] = s->buf + s->plan.rel[i];
    s->state = SLOT_IN_USE;
out:
    pthread_mutex_unlock(&p->mu);
    return st;
}

void fs_prefetch_release(fs_prefetch *p, int ticket)
{
    pthread_mutex_lock(&p->mu);
    pf_slot *s = find(p, ticket);
    if (s) {
        while (s->state == SLOT_READING) pthread_cond_wait(&p->ready, &p->mu);
        s->state = SLOT_FREE;
        pthread_cond_broadcast(&p->freed);
    }
    pthread_mutex_unlock(&p->mu);
}

void fs_prefetch_get_stats(fs_prefetch *p, fs_prefetch_stats *st)
{
    pthread_mutex_lock(&p->mu);
    *st = p->st;
    if (p->inflight > 0) st->busy_s += fs_now() - p->busy_since;
    st->registered = p->registered;
    st->direct = p->o.direct;
    for (int i = 0; i < p->nfile; i++)
        if (!p->file[i].direct) st->direct = 0;
    pthread_mutex_unlock(&p->mu);
}

/* If the thread had to give up on completions it could not wait for (a
 * failing io_uring_wait_cqe, never seen in practice), io_uring_queue_exit
 * still cancels and reaps them; registered and O_DIRECT buffers are pinned by
 * the kernel for the duration of a read. */
void fs_prefetch_free(fs_prefetch *p)
{
    if (!p) return;
    destroy(p);
}
