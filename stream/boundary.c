/* boundary.c: the activations between two layers and the layer boundary
 * job of the writer (boundary.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/actcache.h"
#include "stream/boundary.h"

#define ACT_CHUNK_BYTES (64ull << 20)       /* raw bytes per activation-cache chunk */
#define SPILL_PIECE_BYTES (8ull << 20)      /* read from a spill file at a time by the boundary job */

/* The calibration activations of every token, between layers and mid-layer:
 * BF16 (default: what the design budgets, half the memory) or F32.  Passes
 * load a batch of rows into F32 scratch and store back what they changed.
 * When the host budget cannot hold them (po->spill) they live in the work
 * folder instead (stream/spill.h) and every pass streams them chunk by
 * chunk: a pass is bracketed by fs_acts_begin / fs_acts_end and visits its batches
 * in row order. */

fs_status fs_acts_begin(fs_ctx *ctx, fs_acts *a, fs_spill_mode mode)
{
    return a->sp ? fs_spill_begin(ctx, a->sp, mode) : FS_OK;
}

fs_status fs_acts_end(fs_ctx *ctx, fs_acts *a, fs_status rc)
{
    return a->sp ? fs_spill_end(ctx, a->sp, rc) : rc;
}

static void rows_to_f32(const void *src, int elem, size_t k, float *dst)
{
    if (elem == 4) { memcpy(dst, src, sizeof(float) * k); return; }
    const uint16_t *s = src;
    for (size_t i = 0; i < k; i++) dst[i] = fs_bf16_to_f32(s[i]);
}

/* f32 rows out as stored; in BF16 src is rounded in place too, so the caller
 * goes on with exactly what later passes will load. */
static void rows_from_f32(float *src, int elem, size_t k, void *dst)
{
    if (elem == 4) { memcpy(dst, src, sizeof(float) * k); return; }
    uint16_t *d = dst;
    for (size_t i = 0; i < k; i++) {
        d[i] = fs_f32_to_bf16(src[i]);
        src[i] = fs_bf16_to_f32(d[i]);
    }
}

fs_status fs_acts_load(fs_ctx *ctx, fs_acts *a, int64_t row0, int64_t n, float *dst)
{
    if (!a->sp) {
        const void *src = a->f ? (const void *)(a->f + row0 * a->H) : (const void *)(a->b + row0 * a->H);
        rows_to_f32(src, a->elem, (size_t)(n * a->H), dst);
        return FS_OK;
    }
    for (int64_t done = 0; done < n;) {          /* the pass's next chunks: batches are whole chunks */
        const void *rows;
        uint64_t r0, m;
        fs_status rc = fs_spill_read(ctx, a->sp, &rows, &r0, &m);
        if (rc != FS_OK) return rc;
        if ((int64_t)r0 != row0 + done || (int64_t)m > n - done) {
            fs_spill_release(a->sp);
            return fs_ctx_err(ctx, FS_ERR_USAGE, "spilled activations: rows [%llu, %llu) came in for a batch of "
                              "[%lld, %lld)", (unsigned long long)r0, (unsigned long long)(r0 + m), (long long)row0,
                              (long long)(row0 + n));
        }
        rows_to_f32(rows, a->elem, (size_t)((int64_t)m * a->H), dst + done * a->H);
        fs_spill_release(a->sp);
        done += (int64_t)m;
    }
    return FS_OK;
}

fs_status fs_acts_store(fs_ctx *ctx, fs_acts *a, int64_t row0, int64_t n, float *src)
{
    if (!a->sp) {
        void *dst = a->f ? (void *)(a->f + row0 * a->H) : (void *)(a->b + row0 * a->H);
        rows_from_f32(src, a->elem, (size_t)(n * a->H), dst);
        return FS_OK;
    }
    const int64_t chunk = (int64_t)fs_spill_chunk_rows(a->sp);
    for (int64_t done = 0; done < n;) {
        const int64_t m = n - done < chunk ? n - done : chunk;
        void *dst;
        fs_status rc = fs_spill_wbuf(ctx, a->sp, (uint64_t)(row0 + done), (uint64_t)m, &dst);
        if (rc != FS_OK) return rc;
        rows_from_f32(src + done * a->H, a->elem, (size_t)(m * a->H), dst);
        done += m;
    }
    return FS_OK;
}

/* A layer's end: writes its boundary (when there is one), then commits the
 * layer to the journal (when there is one), then removes the previous
 * boundary, which the journal no longer names.  The rows come from a copy
 * (resident activations) or from the spill file the job holds. */
typedef struct job_act {
    fs_trace *tr;
    int layer;
    char *path, *prev;       /* write path (NULL: no boundary); then remove prev */
    void *rows;              /* resident: a copy of the boundary */
    fs_spill *sp;            /* spilled: the rows are in src, held until freed */
    const char *src;
    int hold;                /* the held spill file, -1 when none */
    int elem;
    uint64_t nrows, row_bytes;
    fs_boundary_sink sink;   /* where the boundary goes, and the commit after it */
    void *snap;
} job_act;

/* Copies the held spill file into the boundary writer in pieces (the writer
 * copies them into its own chunk). */
static fs_status put_from_spill(fs_ctx *ctx, job_act *j, fs_act_writer *w)
{
    const uint64_t chunk = SPILL_PIECE_BYTES / j->row_bytes ? SPILL_PIECE_BYTES / j->row_bytes : 1;
    int fd = open(j->src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fs_ctx_err(ctx, FS_ERR_IO, "%s: %s", j->src, strerror(errno));
    uint8_t *buf = fs_alloc2((size_t)chunk, (size_t)j->row_bytes);
    fs_status rc = buf ? FS_OK : fs_ctx_err(ctx, FS_ERR_NOMEM, "boundary chunk of %llu rows", (unsigned long long)chunk);
    for (uint64_t r = 0; rc == FS_OK && r < j->nrows; r += chunk) {
        const uint64_t m = j->nrows - r < chunk ? j->nrows - r : chunk;
        rc = fs_pread_full(ctx, fd, j->src, buf, m * j->row_bytes, r * j->row_bytes);
        if (rc == FS_OK) rc = fs_act_writer_put(ctx, w, buf, m);
    }
    free(buf);
    close(fd);
    return rc;
}

static fs_status run_act(fs_ctx *ctx, void *arg)
{
    job_act *j = arg;
    double t0 = fs_now();
    fs_status rc = FS_OK;
    fs_commit_info ci = {j->layer + 1, j->path, 0, j->nrows, j->row_bytes, j->snap};
    if (j->path) {
        fs_act_writer *w = NULL;
        uint64_t chunk = ACT_CHUNK_BYTES / j->row_bytes ? ACT_CHUNK_BYTES / j->row_bytes : 1;
        rc = fs_act_writer_open(ctx, j->path, j->elem, j->row_bytes, j->nrows, chunk, &w);
        if (rc == FS_OK) fs_act_writer_set_tag(w, (uint64_t)(j->layer + 1));   /* the input of layer + 1 */
        if (rc == FS_OK) rc = j->sp ? put_from_spill(ctx, j, w) : fs_act_writer_put(ctx, w, j->rows, j->nrows);
        if (j->hold >= 0) {                      /* the spill file may be written again */
            fs_spill_unhold(j->sp, j->hold);
            j->hold = -1;
        }
        if (rc == FS_OK) rc = fs_act_writer_close(ctx, w, &ci.act_sum);
        else fs_act_writer_abort(w);
        fs_trace_span(j->tr, FS_STAGE_WRITE, j->layer, "activation cache", t0, fs_now(), j->nrows * j->row_bytes, 0);
    }
    if (rc == FS_OK && j->sink.commit) {
        double t1 = fs_now();
        rc = j->sink.commit(ctx, j->sink.commit_arg, &ci);
        fs_trace_span(j->tr, FS_STAGE_JOURNAL, j->layer, "commit", t1, fs_now(), 0, 0);
        if (rc == FS_OK) fs_crashpoint(ctx, "committed");
    }
    if (rc == FS_OK && j->prev) unlink(j->prev);
    return rc;
}

static void free_act(void *arg)
{
    job_act *j = arg;
    if (j->hold >= 0) fs_spill_unhold(j->sp, j->hold);   /* dropped after an error */
    if (j->snap && j->sink.snap_free) j->sink.snap_free(j->snap);
    free(j->path);
    free(j->prev);
    free(j->rows);
    free(j);
}

fs_status fs_boundary_queue(fs_ctx *ctx, fs_writer *wr, const fs_boundary_sink *po, int l, const fs_acts *x,
                            int64_t n, int64_t H)
{
    job_act *j = calloc(1, sizeof *j);
    if (!j) return fs_ctx_err(ctx, FS_ERR_NOMEM, "end of layer %d", l);
    j->tr = po->trace;
    j->layer = l;
    j->sink = *po;
    j->hold = -1;
    fs_status rc = FS_OK;
    if (po->commit_prep && (rc = po->commit_prep(ctx, po->commit_arg, l + 1, &j->snap)) != FS_OK) {
        free_act(j);
        return rc;
    }
    uint64_t held = 0;                           /* memory the job holds until it ran */
    if (x && po->work) {
        size_t pl = strlen(po->work) + 32;
        j->path = malloc(pl);
        j->prev = malloc(pl);
        j->elem = x->elem;
        if (!x->sp) j->rows = fs_alloc2((size_t)n, (size_t)H * (size_t)j->elem);
        if (!j->path || !j->prev || (!x->sp && !j->rows)) {
            free_act(j);
            return fs_ctx_err(ctx, FS_ERR_NOMEM, "activation boundary of %lld tokens", (long long)n);
        }
        snprintf(j->path, pl, "%s/act-%04d.fsa", po->work, l + 1);
        /* the boundary two back: the journal's previous state needs the one before */
        snprintf(j->prev, pl, "%s/act-%04d.fsa", po->work, l - 1);
        if (l == 0) { free(j->prev); j->prev = NULL; }
        j->nrows = (uint64_t)n;
        j->row_bytes = (uint64_t)H * (uint64_t)j->elem;
        if (x->sp) {
            j->sp = x->sp;
            j->hold = fs_spill_hold(x->sp, &j->src);
            const uint64_t piece = SPILL_PIECE_BYTES / j->row_bytes ? SPILL_PIECE_BYTES / j->row_bytes : 1;
            held = (piece < j->nrows ? piece : j->nrows) * j->row_bytes;   /* its read buffer */
        } else {
            memcpy(j->rows, x->f ? (const void *)x->f : (const void *)x->b, (size_t)(n * H) * (size_t)j->elem);
            held = j->nrows * j->row_bytes;
        }
    }
    return fs_writer_submit(ctx, wr, run_act, j, free_act, held);
}

/* The input of layer layer from its boundary file, checked chunk by
 * chunk (straight into the spill file when spilled). */
fs_status fs_boundary_load(fs_ctx *ctx, const char *path, int layer, fs_acts *x, int64_t n, int64_t H)
{
    fs_act_file *af = NULL;
    fs_status rc = fs_act_open(ctx, path, &af);
    const int elem = x->elem;
    if (rc == FS_OK && fs_act_tag(af) != (uint64_t)layer)
        rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: holds the input of model.layers.%lld, not of model.layers.%d",
                        path, (long long)fs_act_tag(af), layer);
    if (rc == FS_OK && (fs_act_rows(af) != (uint64_t)n || fs_act_row_bytes(af) != (uint64_t)(H * elem) ||
                        fs_act_elem_size(af) != elem))
        rc = fs_ctx_err(ctx, FS_ERR_CORRUPT, "%s: %llu rows of %llu bytes, the run needs %lld of %lld", path,
                        (unsigned long long)fs_act_rows(af), (unsigned long long)fs_act_row_bytes(af), (long long)n,
                        (long long)(H * elem));
    if (rc == FS_OK && !x->sp) rc = fs_act_read_rows(ctx, af, 0, (uint64_t)n, x->f ? (void *)x->f : (void *)x->b);
    if (rc == FS_OK && x->sp) {
        const uint64_t chunk = fs_spill_chunk_rows(x->sp);
        rc = fs_spill_begin(ctx, x->sp, FS_SPILL_FILL);
        for (uint64_t r = 0; rc == FS_OK && r < (uint64_t)n; r += chunk) {
            const uint64_t m = (uint64_t)n - r < chunk ? (uint64_t)n - r : chunk;
            void *dst;
            rc = fs_spill_wbuf(ctx, x->sp, r, m, &dst);
            if (rc == FS_OK) rc = fs_act_read_rows(ctx, af, r, m, dst);
        }
        rc = fs_spill_end(ctx, x->sp, rc);
    }
    fs_act_close(af);
    return rc;
}

