/* boundary.h: the calibration activations between two layers.
 *
 * In memory (BF16 by default, or F32) or, when the host budget cannot hold
 * them, in the work folder's spill files (stream/spill.h), which every pass
 * streams chunk by chunk: a pass is bracketed by fs_acts_begin / fs_acts_end
 * and visits its batches in row order, loading rows into F32 scratch and
 * storing back what it changed.
 *
 * At a layer's end the boundary (the next layer's input) is written on the
 * writer thread as WORK/act-NNNN.fsa (stream/actcache.h, labelled with the
 * layer it feeds), then the journal commit runs, then the boundary two
 * layers back is removed; a resume reads one back with fs_boundary_load. */
#ifndef FS_BOUNDARY_H
#define FS_BOUNDARY_H

#include "src/core/trace.h"
#include "stream/spill.h"
#include "stream/writer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fs_acts {
    float *f;                /* [n, H] when F32 (resident) */
    uint16_t *b;             /* [n, H] BF16 otherwise (resident) */
    int64_t H;
    fs_spill *sp;            /* spilled: rows of H elements of elem bytes on disk */
    int elem;                /* 4 (f32) or 2 (bf16) */
} fs_acts;

/* A pass over the activations (no-ops when resident).  Errors: the spill's. */
fs_status fs_acts_begin(fs_ctx *ctx, fs_acts *a, fs_spill_mode mode);
fs_status fs_acts_end(fs_ctx *ctx, fs_acts *a, fs_status rc);
/* Rows [row0, row0 + n) as F32 into dst.  Spilled: the pass's next chunks,
 * which must be these rows (FS_ERR_USAGE otherwise). */
fs_status fs_acts_load(fs_ctx *ctx, fs_acts *a, int64_t row0, int64_t n, float *dst);
/* Rows [row0, row0 + n) from F32 src, stored in the activations' dtype; in
 * BF16 src is rounded in place too, so the caller goes on with exactly what
 * later passes will load. */
fs_status fs_acts_store(fs_ctx *ctx, fs_acts *a, int64_t row0, int64_t n, float *src);

/* What a layer commit hands to the journal (fs_boundary_sink.commit). */
typedef struct fs_commit_info {
    int layers_done;         /* layers 0 .. layers_done-1 are written (MTP layers count) */
    const char *act_path;    /* the boundary written with this commit (the input of layer
                                layers_done), or NULL when this layer wrote none */
    uint64_t act_sum;        /* its journal checksum (stream/actcache.h) */
    uint64_t act_rows, act_row_bytes;
    void *snap;              /* what commit_prep returned for this layer */
} fs_commit_info;

/* Where a layer's end goes: the work folder (NULL: no boundary files), the
 * trace, and the journal's callbacks (each may be NULL): commit_prep on the
 * compute thread when the layer ends, commit on the writer thread once the
 * boundary is written, snap_free for what commit_prep returned. */
typedef struct fs_boundary_sink {
    const char *work;
    fs_trace *trace;
    fs_status (*commit_prep)(fs_ctx *ctx, void *arg, int layers_done, void **snap);
    fs_status (*commit)(fs_ctx *ctx, void *arg, const fs_commit_info *ci);
    void (*snap_free)(void *snap);
    void *commit_arg;
} fs_boundary_sink;

/* The end of layer l, queued on the writer: the boundary after it (x [n, H],
 * copied now when resident; a spilled one is held until written) in
 * work/act-<l+1>.fsa (none when x or work is NULL), then the commit, then
 * work/act-<l-1>.fsa removed.  Errors: FS_ERR_NOMEM, the writer's. */
fs_status fs_boundary_queue(fs_ctx *ctx, fs_writer *wr, const fs_boundary_sink *sink, int l, const fs_acts *x,
                            int64_t n, int64_t H);
/* The input of layer `layer` from its boundary file at path into x (n rows
 * of H), every chunk checked (straight into the spill file when spilled).
 * Errors: FS_ERR_CORRUPT (a file labelled for another layer, other sizes, a
 * chunk that does not match), FS_ERR_IO, FS_ERR_FORMAT, FS_ERR_NOMEM. */
fs_status fs_boundary_load(fs_ctx *ctx, const char *path, int layer, fs_acts *x, int64_t n, int64_t H);

#ifdef __cplusplus
}
#endif

#endif
