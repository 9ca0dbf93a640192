/* spill.h: the calibration activations on disk, for runs whose host budget
 * cannot hold a layer boundary (DESIGN §3.4: "when the budget forces
 * activations to spill, they stream in through the prefetcher like
 * weights").  Memory then holds four chunks instead of the boundary: two
 * being read ahead and two being written behind.
 *
 * Two raw scratch files in the work folder, spill-0.raw and spill-1.raw,
 * each `rows` rows of `row_bytes` bytes (no header: scratch, not a format;
 * resume uses the checksummed boundaries of actcache.h, never these).  One
 * of them is "current": it holds the activations x.  Every pass over x goes
 * chunk by chunk (`chunk_rows` rows, the last one shorter) in row order:
 *
 *     fs_spill_begin(ctx, sp, mode);
 *     for (each chunk) {
 *         fs_spill_read(ctx, sp, &rows, &row0, &n);   (READ, MOVE, INPLACE)
 *         ... use rows ...
 *         fs_spill_release(sp);                        (the slot reads ahead)
 *         fs_spill_wbuf(ctx, sp, row0, n, &dst);       (MOVE, INPLACE, FILL)
 *         ... fill dst ...
 *     }
 *     fs_spill_end(ctx, sp, rc);                        (every write done)
 *
 *   FS_SPILL_READ     reads the current file;
 *   FS_SPILL_INPLACE  reads it and writes rows back over rows already read;
 *   FS_SPILL_MOVE     reads it and writes the other file, which becomes
 *                     current at fs_spill_end (so the rows read stay intact
 *                     for a reader elsewhere, see hold);
 *   FS_SPILL_FILL     only writes the current file (the first layer's input).
 *
 * Reads go through the io_uring prefetcher (prefetch.h: two slots, O_DIRECT
 * where the file system allows), so chunk k+1 and k+2 are on their way while
 * chunk k is used.  Writes are copied into one of two chunk buffers that a
 * background thread pwrite()s while compute fills the other; rows given to
 * wbuf must follow each other (a chunk is handed over when it is full, when
 * the next rows do not follow, and at end).  fs_spill_end returns once every
 * write of the pass has returned, so the next pass reads what this one wrote.
 *
 * Hold: fs_spill_hold pins the current file for a reader on another thread
 * (the writer thread turns it into a boundary file) until fs_spill_unhold; a
 * pass that would write a pinned file waits for the unhold in
 * fs_spill_begin.  Holds are the only calls safe from another thread.
 *
 * Errors: a failed write (ENOSPC, EIO, ...) is reported, naming the file,
 * by the next wbuf or end; the pass is then over (end drops what is left).
 */
#ifndef FS_SPILL_H
#define FS_SPILL_H

#include <stdint.h>

#include "src/core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fs_spill_mode {
    FS_SPILL_READ = 0,
    FS_SPILL_INPLACE,
    FS_SPILL_MOVE,
    FS_SPILL_FILL
} fs_spill_mode;

typedef struct fs_spill fs_spill;

typedef struct fs_spill_stats {
    uint64_t bytes_read, bytes_written;
    double read_wait_s;      /* compute waited for chunks to come in */
    double write_wait_s;     /* compute waited for a write buffer or the pass's writes */
    double hold_wait_s;      /* compute waited for a hold (the writer a layer behind) */
    int direct;              /* reads used O_DIRECT */
} fs_spill_stats;

/* Creates dir/spill-0.raw and dir/spill-1.raw (truncated, space reserved
 * with fallocate where the file system offers it), the prefetcher and the
 * write thread.  Errors: FS_ERR_USAGE (zero sizes, chunk_rows * row_bytes
 * over 1 GiB, overflow), FS_ERR_IO naming the file ("no space left on
 * device ... N bytes needed" when the reservation fails), FS_ERR_NOMEM.
 * Nothing is left on disk on error.  *out is freed by fs_spill_free. */
fs_status fs_spill_new(fs_ctx *ctx, const char *dir, uint64_t rows, uint64_t row_bytes,
                       uint64_t chunk_rows, fs_spill **out);

/* Starts a pass (see the header comment); waits while a hold pins the file
 * the pass writes.  Errors: FS_ERR_USAGE (a pass already running), the
 * prefetcher's errors. */
fs_status fs_spill_begin(fs_ctx *ctx, fs_spill *sp, fs_spill_mode mode);

/* The next chunk of the pass: *rows (valid until fs_spill_release) holds
 * *n rows from row *row0.  Errors: FS_ERR_USAGE (not a reading pass, no
 * chunk left, the previous chunk not released), FS_ERR_IO naming the file
 * and offset. */
fs_status fs_spill_read(fs_ctx *ctx, fs_spill *sp, const void **rows, uint64_t *row0, uint64_t *n);

/* Gives the chunk of the last read back; its slot reads ahead.  Cannot
 * fail (a failed submission is reported by the next read). */
void fs_spill_release(fs_spill *sp);

/* Room for n rows from row0 in the write buffer: *dst receives n *
 * row_bytes bytes to fill before the next call.  In INPLACE mode rows must
 * have been read already.  Errors: FS_ERR_USAGE (not a writing pass, rows
 * out of range or not following the previous ones, n over chunk_rows), the
 * error of an earlier write (FS_ERR_IO naming the file). */
fs_status fs_spill_wbuf(fs_ctx *ctx, fs_spill *sp, uint64_t row0, uint64_t n, void **dst);

/* Ends the pass: hands the last write buffer over and waits for every
 * write, drops chunks read ahead, and makes the other file current after a
 * MOVE.  With rc != FS_OK (the pass failed) only cleans up and returns rc.
 * Otherwise errors: a failed write (FS_ERR_IO naming the file), FS_ERR_USAGE
 * (a MOVE or FILL pass that did not write every row). */
fs_status fs_spill_end(fs_ctx *ctx, fs_spill *sp, fs_status rc);

/* Pins the current file (returns its index, 0 or 1; *path its path, valid
 * until fs_spill_free) and releases a pin.  Thread-safe; cannot fail. */
int fs_spill_hold(fs_spill *sp, const char **path);
void fs_spill_unhold(fs_spill *sp, int file);

uint64_t fs_spill_chunk_rows(const fs_spill *sp);
void fs_spill_get_stats(fs_spill *sp, fs_spill_stats *st);

/* Stops the thread, frees everything and removes both files.  A pass still
 * running is dropped.  Accepts NULL. */
void fs_spill_free(fs_spill *sp);

#ifdef __cplusplus
}
#endif

#endif
