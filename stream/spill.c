/* spill.c: activations streamed from the work folder (spill.h).
 *
 * Owns: the two scratch files (removed by fs_spill_free), the prefetcher that
 * reads them, two write buffers and the thread that writes them.
 * Invariants:
 *  1. Reads: chunk r of a pass has ticket tk[r % 2] from its submission to
 *     its release; at most chunks r and r+1 are in flight (two slots).
 *  2. Writes: compute fills wb[wcur] while the thread may write wb[wcur ^ 1];
 *     the thread takes the pending buffers alternately (tnext), in the order
 *     compute handed them over.  wpend[], werr, holds[] and stop are guarded
 *     by mu; buffer b's contents belong to the thread while wpend[b].
 *  3. A file is written only by a pass that found it unpinned (holds == 0).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/prefetch.h"
#include "stream/spill.h"

#define MAX_CHUNK (1ull << 30)

typedef unsigned long long ull;

struct fs_spill {
    char path[2][4200];
    int fd[2];                   /* written through these (buffered); the prefetcher reads */
    uint64_t rows, row_bytes, chunk_rows, nchunks;
    int cur;                     /* the file holding x */
    fs_prefetch *pf;
    fs_ctx pctx;                 /* errors of submissions made by release */
    /* the pass */
    int active;
    fs_spill_mode mode;
    int src, dst;                /* files read / written, -1 for none */
    uint64_t next_sub, next_read;
    int tk[2];
    int lent;
    uint64_t written;            /* rows handed over by the pass */
    uint64_t last_read_end;      /* rows read so far (INPLACE writes stay below) */
    /* writes */
    uint8_t *wb[2];
    int wcur;
    uint64_t wrow0[2], wn[2];
    int wfile[2];
    int wpend[2], tnext;
    fs_ctx tctx;                 /* the thread's: fault hooks and its error message */
    fs_status werr;
    char werrmsg[sizeof ((fs_ctx *)0)->errmsg];
    int holds[2];
    int stop;
    pthread_t thr;
    int thr_started;
    pthread_mutex_t mu;
    pthread_cond_t cv_thread, cv_compute;
    fs_spill_stats st;
};

static void *writer_main(void *arg)
{
    fs_spill *sp = arg;
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (!sp->wpend[sp->tnext] && !sp->stop) pthread_cond_wait(&sp->cv_thread, &sp->mu);
        if (!sp->wpend[sp->tnext]) break;                /* stopped with nothing pending */
        const int b = sp->tnext, f = sp->wfile[b];
        const int skip = sp->werr != FS_OK;
        pthread_mutex_unlock(&sp->mu);
        fs_status rc = FS_OK;
        if (!skip) {
            fs_ctx_clear(&sp->tctx);
            rc = fs_pwrite_full(&sp->tctx, sp->fd[f], sp->path[f], sp->wb[b], sp->wn[b] * sp->row_bytes,
                                sp->wrow0[b] * sp->row_bytes, "spill-write");
            if (rc == FS_OK) fs_crashpoint(&sp->tctx, "spill-written");
        }
        pthread_mutex_lock(&sp->mu);
        if (rc != FS_OK && sp->werr == FS_OK) {
            sp->werr = rc;
            memcpy(sp->werrmsg, sp->tctx.errmsg, sizeof sp->werrmsg);
        }
        if (rc == FS_OK && !skip) sp->st.bytes_written += sp->wn[b] * sp->row_bytes;
        sp->wpend[b] = 0;
        sp->tnext ^= 1;
        pthread_cond_broadcast(&sp->cv_compute);
    }
    pthread_mutex_unlock(&sp->mu);
    return NULL;
}

/* The thread's sticky error in ctx (call under mu with werr set). */
static fs_status write_error(fs_ctx *ctx, const fs_spill *sp)
{
    return fs_ctx_err(ctx, sp->werr, "%s", sp->werrmsg);
}

void fs_spill_free(fs_spill *sp)
{
    if (!sp) return;
    if (sp->active) fs_spill_end(NULL, sp, FS_ERR_ABORTED);
    if (sp->thr_started) {
        pthread_mutex_lock(&sp->mu);
        sp->stop = 1;
        pthread_cond_broadcast(&sp->cv_thread);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->thr, NULL);
        pthread_cond_destroy(&sp->cv_thread);
        pthread_cond_destroy(&sp->cv_compute);
        pthread_mutex_destroy(&sp->mu);
    }
    fs_prefetch_free(sp->pf);
    for (int i = 0; i < 2; i++) {
        if (sp->fd[i] >= 0) {
            close(sp->fd[i]);
            unlink(sp->path[i]);
        }
        free(sp->wb[i]);
    }
    free(sp);
}

fs_status fs_spill_new(fs_ctx *ctx, const char *dir, uint64_t rows, uint64_t row_bytes, uint64_t chunk_rows,
                       fs_spill **out)
{
    *out = NULL;
    if (!rows || !row_bytes || !chunk_rows)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "spill: %llu rows of %llu bytes in chunks of %llu rows", (ull)rows,
                          (ull)row_bytes, (ull)chunk_rows);
    if (chunk_rows > rows) chunk_rows = rows;
    if (row_bytes > MAX_CHUNK / chunk_rows || rows > UINT64_MAX / row_bytes)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "spill: chunks of %llu rows of %llu bytes exceed 1 GiB", (ull)chunk_rows,
                          (ull)row_bytes);
    fs_spill *sp = calloc(1, sizeof *sp);
    if (!sp) return fs_ctx_err(ctx, FS_ERR_NOMEM, "spill");
    sp->fd[0] = sp->fd[1] = -1;
    sp->tk[0] = sp->tk[1] = -1;
    sp->rows = rows;
    sp->row_bytes = row_bytes;
    sp->chunk_rows = chunk_rows;
    sp->nchunks = (rows + chunk_rows - 1) / chunk_rows;
    fs_ctx_init(&sp->pctx);
    fs_ctx_init(&sp->tctx);
    sp->pctx.quiet = sp->tctx.quiet = 1;
    sp->tctx.crash = ctx->crash;
    const uint64_t cb = chunk_rows * row_bytes, size = rows * row_bytes;
    fs_status rc = FS_OK;
    for (int i = 0; rc == FS_OK && i < 2; i++) {
        snprintf(sp->path[i], sizeof sp->path[i], "%s/spill-%d.raw", dir, i);
        sp->fd[i] = open(sp->path[i], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (sp->fd[i] < 0) {
            rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", sp->path[i], strerror(errno));
            break;
        }
        /* the space up front: a full disk fails here, not layers later */
        int e = fallocate(sp->fd[i], 0, 0, (off_t)size) == 0 ? 0 : errno;
        if (e == EOPNOTSUPP || e == ENOSYS || e == EINVAL) e = ftruncate(sp->fd[i], (off_t)size) == 0 ? 0 : errno;
        if (e == ENOSPC || e == EDQUOT || e == EFBIG)
            rc = fs_ctx_err(ctx, FS_ERR_NOSPACE, "no space left on device for the spilled activations: %s needs %llu bytes "
                            "(two such files): %s", sp->path[i], (ull)size, strerror(e));
        else if (e)
            rc = fs_ctx_err(ctx, FS_ERR_IO, "%s: reserving %llu bytes: %s", sp->path[i], (ull)size, strerror(e));
        sp->wb[i] = malloc((size_t)cb);
        if (rc == FS_OK && !sp->wb[i]) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "spill: write buffer of %llu bytes", (ull)cb);
    }
    if (rc == FS_OK) {
        fs_prefetch_opts o;
        fs_prefetch_opts_default(&o);
        o.slots = 2;
        o.slot_bytes = (cb + 2 * FS_PREFETCH_ALIGN + FS_PREFETCH_ALIGN - 1) / FS_PREFETCH_ALIGN * FS_PREFETCH_ALIGN;
        rc = fs_prefetch_new(ctx, &o, &sp->pf);
    }
    if (rc == FS_OK) {
        if (pthread_mutex_init(&sp->mu, NULL) || pthread_cond_init(&sp->cv_thread, NULL) ||
            pthread_cond_init(&sp->cv_compute, NULL))
            rc = fs_ctx_err(ctx, FS_ERR_IO, "spill: pthread setup failed");
        else if (pthread_create(&sp->thr, NULL, writer_main, sp) != 0) {
            pthread_cond_destroy(&sp->cv_thread);
            pthread_cond_destroy(&sp->cv_compute);
            pthread_mutex_destroy(&sp->mu);
            rc = fs_ctx_err(ctx, FS_ERR_IO, "spill: cannot start the write thread");
        } else
            sp->thr_started = 1;
    }
    if (rc != FS_OK) {
        fs_spill_free(sp);
        return rc;
    }
    *out = sp;
    return FS_OK;
}

static fs_status submit(fs_ctx *ctx, fs_spill *sp, uint64_t chunk)
{
    const uint64_t r0 = chunk * sp->chunk_rows;
    const uint64_t n = sp->rows - r0 < sp->chunk_rows ? sp->rows - r0 : sp->chunk_rows;
    fs_extent e = {sp->path[sp->src], r0 * sp->row_bytes, n * sp->row_bytes};
    return fs_prefetch_submit(ctx, sp->pf, &e, 1, &sp->tk[chunk % 2]);
}

fs_status fs_spill_begin(fs_ctx *ctx, fs_spill *sp, fs_spill_mode mode)
{
    if (sp->active) return fs_ctx_err(ctx, FS_ERR_USAGE, "spill: a pass is already running");
    sp->mode = mode;
    sp->src = mode == FS_SPILL_FILL ? -1 : sp->cur;
    sp->dst = mode == FS_SPILL_READ ? -1 : mode == FS_SPILL_MOVE ? sp->cur ^ 1 : sp->cur;
    sp->next_sub = sp->next_read = 0;
    sp->lent = 0;
    sp->written = sp->last_read_end = 0;
    sp->wn[0] = sp->wn[1] = 0;
    fs_ctx_clear(&sp->pctx);
    if (sp->dst >= 0) {                          /* the writer's boundary job may still read it */
        double t0 = fs_now();
        pthread_mutex_lock(&sp->mu);
        while (sp->holds[sp->dst] > 0) pthread_cond_wait(&sp->cv_compute, &sp->mu);
        fs_status werr = sp->werr;
        pthread_mutex_unlock(&sp->mu);
        sp->st.hold_wait_s += fs_now() - t0;
        if (werr != FS_OK) {
            pthread_mutex_lock(&sp->mu);
            fs_status rc = write_error(ctx, sp);
            pthread_mutex_unlock(&sp->mu);
            return rc;
        }
    }
    sp->active = 1;
    fs_status rc = FS_OK;
    for (; rc == FS_OK && sp->src >= 0 && sp->next_sub < 2 && sp->next_sub < sp->nchunks; sp->next_sub++)
        rc = submit(ctx, sp, sp->next_sub);
    if (rc != FS_OK) fs_spill_end(NULL, sp, rc);
    return rc;
}

fs_status fs_spill_read(fs_ctx *ctx, fs_spill *sp, const void **rows, uint64_t *row0, uint64_t *n)
{
    if (!sp->active || sp->src < 0 || sp->lent || sp->next_read >= sp->nchunks)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "spill: read of chunk %llu of %llu out of turn", (ull)sp->next_read,
                          (ull)sp->nchunks);
    int *t = &sp->tk[sp->next_read % 2];
    if (*t < 0) {                                /* its submission failed in release */
        if (sp->pctx.err != FS_OK) return fs_ctx_err(ctx, sp->pctx.err, "%s", sp->pctx.errmsg);
        return fs_ctx_err(ctx, FS_ERR_IO, "spill: chunk %llu was not queued", (ull)sp->next_read);
    }
    const uint8_t *ptr[1];
    double t0 = fs_now();
    fs_status rc = fs_prefetch_wait(ctx, sp->pf, *t, ptr);
    sp->st.read_wait_s += fs_now() - t0;
    if (rc != FS_OK) {
        fs_prefetch_release(sp->pf, *t);
        *t = -1;
        return rc;
    }
    sp->lent = 1;
    *rows = ptr[0];
    *row0 = sp->next_read * sp->chunk_rows;
    *n = sp->rows - *row0 < sp->chunk_rows ? sp->rows - *row0 : sp->chunk_rows;
    sp->last_read_end = *row0 + *n;
    sp->st.bytes_read += *n * sp->row_bytes;
    return FS_OK;
}

void fs_spill_release(fs_spill *sp)
{
    if (!sp->active || !sp->lent) return;
    int *t = &sp->tk[sp->next_read % 2];
    fs_prefetch_release(sp->pf, *t);
    *t = -1;
    sp->lent = 0;
    sp->next_read++;
    if (sp->next_sub < sp->nchunks && sp->pctx.err == FS_OK) {
        if (submit(&sp->pctx, sp, sp->next_sub) == FS_OK) sp->next_sub++;
    }
}

/* Hands wb[wcur] to the thread, then waits until the other buffer is free. */
static fs_status hand_over(fs_ctx *ctx, fs_spill *sp)
{
    fs_status rc = FS_OK;
    pthread_mutex_lock(&sp->mu);
    const int b = sp->wcur;
    if (sp->wn[b] > 0) {
        sp->wfile[b] = sp->dst;
        sp->wpend[b] = 1;
        sp->written += sp->wn[b];
        pthread_cond_signal(&sp->cv_thread);
        sp->wcur ^= 1;
    }
    double t0 = fs_now();
    while (sp->wpend[sp->wcur]) pthread_cond_wait(&sp->cv_compute, &sp->mu);
    sp->st.write_wait_s += fs_now() - t0;
    sp->wn[sp->wcur] = 0;
    if (sp->werr != FS_OK && ctx) rc = write_error(ctx, sp);
    else if (sp->werr != FS_OK) rc = sp->werr;
    pthread_mutex_unlock(&sp->mu);
    return rc;
}

fs_status fs_spill_wbuf(fs_ctx *ctx, fs_spill *sp, uint64_t row0, uint64_t n, void **dst)
{
    if (!sp->active || sp->dst < 0 || n == 0 || n > sp->chunk_rows || row0 > sp->rows || n > sp->rows - row0 ||
        (sp->mode == FS_SPILL_INPLACE && row0 + n > sp->last_read_end))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "spill: write of rows [%llu, %llu) out of turn (%llu rows, chunks of "
                          "%llu)", (ull)row0, (ull)(row0 + n), (ull)sp->rows, (ull)sp->chunk_rows);
    const int b = sp->wcur;
    if (sp->wn[b] > 0 && (row0 != sp->wrow0[b] + sp->wn[b] || sp->wn[b] + n > sp->chunk_rows)) {
        fs_status rc = hand_over(ctx, sp);
        if (rc != FS_OK) return rc;
    } else {
        pthread_mutex_lock(&sp->mu);
        fs_status werr = sp->werr;
        fs_status rc = werr != FS_OK ? write_error(ctx, sp) : FS_OK;
        pthread_mutex_unlock(&sp->mu);
        if (rc != FS_OK) return rc;
    }
    const int c = sp->wcur;
    if (sp->wn[c] == 0) sp->wrow0[c] = row0;
    *dst = sp->wb[c] + sp->wn[c] * sp->row_bytes;
    sp->wn[c] += n;
    return FS_OK;
}

fs_status fs_spill_end(fs_ctx *ctx, fs_spill *sp, fs_status rc)
{
    if (!sp->active) return rc;
    if (rc != FS_OK) sp->wn[sp->wcur] = 0;       /* a failed pass: its last rows are not written */
    fs_status wr = hand_over(rc == FS_OK ? ctx : NULL, sp);
    if (rc == FS_OK) rc = wr;
    pthread_mutex_lock(&sp->mu);
    while (sp->wpend[0] || sp->wpend[1]) pthread_cond_wait(&sp->cv_compute, &sp->mu);
    if (rc == FS_OK && sp->werr != FS_OK) rc = write_error(ctx, sp);
    pthread_mutex_unlock(&sp->mu);
    for (int i = 0; i < 2; i++)
        if (sp->tk[i] >= 0) {                    /* read ahead, not used: dropped */
            fs_prefetch_release(sp->pf, sp->tk[i]);
            sp->tk[i] = -1;
        }
    if (rc == FS_OK && (sp->mode == FS_SPILL_MOVE || sp->mode == FS_SPILL_FILL) && sp->written != sp->rows)
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "spill: the pass wrote %llu of %llu rows", (ull)sp->written, (ull)sp->rows);
    if (rc == FS_OK && sp->mode == FS_SPILL_MOVE) sp->cur ^= 1;
    sp->active = 0;
    sp->lent = 0;
    return rc;
}

int fs_spill_hold(fs_spill *sp, const char **path)
{
    pthread_mutex_lock(&sp->mu);
    const int f = sp->cur;
    sp->holds[f]++;
    pthread_mutex_unlock(&sp->mu);
    if (path) *path = sp->path[f];
    return f;
}

void fs_spill_unhold(fs_spill *sp, int file)
{
    pthread_mutex_lock(&sp->mu);
    if (sp->holds[file] > 0) sp->holds[file]--;
    pthread_cond_broadcast(&sp->cv_compute);
    pthread_mutex_unlock(&sp->mu);
}

uint64_t fs_spill_chunk_rows(const fs_spill *sp) { return sp->chunk_rows; }

void fs_spill_get_stats(fs_spill *sp, fs_spill_stats *st)
{
    pthread_mutex_lock(&sp->mu);
    *st = sp->st;
    pthread_mutex_unlock(&sp->mu);
    fs_prefetch_stats ps;
    fs_prefetch_get_stats(sp->pf, &ps);
    st->direct = ps.direct;
}
