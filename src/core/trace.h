/* trace.h: where a run's time goes.  Spans of the pipeline's stages are
 * recorded (from any thread) with their layer, bytes and FLOPs; at the end
 * they become a Chrome trace-event JSON (--profile: opens in Perfetto and
 * chrome://tracing, one track per stage), one JSON line per layer and stage
 * (--timings), and the table printed at the end of every run.
 *
 * Invariants:
 *  1. Spans of one stage are recorded by one thread at a time and in time
 *     order, so a track's spans never overlap (the "layer" and "expert"
 *     tracks span whole layers and expert waves: other stages nest in them).
 *  2. The per-stage totals of the table are the sums of the spans, exactly
 *     what --timings holds line by line.
 */
#ifndef FS_TRACE_H
#define FS_TRACE_H

#include <stdio.h>

#include "src/core/core.h"

typedef enum fs_stage {
    FS_STAGE_LAYER = 0,   /* a whole decoder layer */
    FS_STAGE_READ,        /* waiting for / reading checkpoint bytes */
    FS_STAGE_UPLOAD,      /* the layer's weights decoded into the compute layout (F32 host
                             memory on the CPU backend) */
    FS_STAGE_FORWARD,
    FS_STAGE_HESSIAN,
    FS_STAGE_CHOLESKY,
    FS_STAGE_GRID,
    FS_STAGE_GPTQ,        /* the solve and its bookkeeping: buffers, permutations, logged losses */
    FS_STAGE_DOWNLOAD,
    FS_STAGE_WRITE,
    FS_STAGE_JOURNAL,
    FS_STAGE_EXPERT,      /* one expert wave of a MoE layer (one expert on the CPU path),
                             nesting the stages it runs; not in the table, like layer */
    FS_STAGE_SPILL,       /* spilled activations coming in (stream/spill.h): the waits and
                             the conversion to F32 of each batch */
    FS_STAGE_COUNT
} fs_stage;

const char *fs_stage_name(fs_stage s);

typedef struct fs_trace fs_trace;

/* profile / timings: output paths, each may be NULL.  Cannot fail but for
 * FS_ERR_NOMEM; nothing is written before fs_trace_finish. */
fs_status fs_trace_new(fs_ctx *ctx, const char *profile, const char *timings, fs_trace **out);
/* Records [t0, t1] (fs_now() seconds) of stage s in layer (-1: none).  Thread
 * safe; accepts t == NULL (tracing off).  name (may be NULL) labels the span. */
void fs_trace_span(fs_trace *t, fs_stage s, int layer, const char *name, double t0, double t1,
                   uint64_t bytes, double flops);
/* Writes the profile and timings files (atomically) and prints the end table
 * to f (NULL: not printed).  Errors: FS_ERR_IO naming the file. */
fs_status fs_trace_finish(fs_ctx *ctx, fs_trace *t, double wall, FILE *f);
/* Per-stage totals, for tests and reports. */
void fs_trace_totals(const fs_trace *t, double seconds[FS_STAGE_COUNT], uint64_t bytes[FS_STAGE_COUNT]);
void fs_trace_free(fs_trace *t);    /* accepts NULL */

#endif
