/* prefetch.h: the io_uring prefetcher.  It reads lists of byte extents (one
 * decoder layer's tensors, possibly spread over several shard files) into a
 * ring of large 4096-aligned buffers ("slots") while the caller computes on
 * another slot.
 *
 * Use:
 *
 *     fs_prefetch_opts o;
 *     fs_prefetch_opts_default(&o);
 *     o.slot_bytes = need_of_the_largest_layer;     (see fs_prefetch_need)
 *     fs_prefetch *p;
 *     if (fs_prefetch_new(ctx, &o, &p)) return ctx->err;
 *     int t0, t1;
 *     fs_prefetch_submit(ctx, p, layer0, n0, &t0);  (returns at once)
 *     fs_prefetch_submit(ctx, p, layer1, n1, &t1);
 *     const uint8_t *ptr[n0];
 *     fs_prefetch_wait(ctx, p, t0, ptr);            (ptr[i]: bytes of layer0[i])
 *     ... compute on layer 0 while layer 1 is read ...
 *     fs_prefetch_release(p, t0);
 *     fs_prefetch_free(p);
 *
 * Each batch lives in one slot; its extents are coalesced and read with
 * O_DIRECT where the file system allows.  Whatever the mode, the pointer of
 * an extent is congruent to its file offset modulo 4096 (so a tensor is as
 * aligned in memory as in its file).  Files are opened by the prefetcher and
 * stay open (cached by path) until fs_prefetch_free.
 *
 * Threads: one background thread owns the io_uring.  submit, wait and
 * release may be called from any thread (they take the prefetcher's mutex);
 * new and free from one thread with no other call in progress.
 */
#ifndef FS_PREFETCH_H
#define FS_PREFETCH_H

#include <stddef.h>
#include <stdint.h>

#include "src/core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_PREFETCH_ALIGN 4096u   /* buffer, offset and length alignment of O_DIRECT */

/* One run of bytes to read: [offset, offset + length) of the file at path. */
typedef struct fs_extent {
    const char *path;
    uint64_t offset, length;
} fs_extent;

typedef struct fs_prefetch_opts {
    int slots;              /* buffers in the ring, >= 1 (default 2) */
    uint64_t slot_bytes;    /* bytes per buffer, a multiple of 4096 (default 256 MiB) */
    int queue_depth;        /* reads in flight, 1..4096 (default 16) */
    uint64_t max_request;   /* largest single read, a multiple of 4096 in
                               [4096, 1 GiB] (default 8 MiB) */
    uint64_t gap;           /* two extents of a file whose aligned spans are at most
                               this many bytes apart are read as one (hole included);
                               default 64 KiB, 0 = only touching or overlapping spans */
    int direct;             /* 1: O_DIRECT where the file system allows it (a file
                               refusing it with EINVAL, at open or at read, is read
                               buffered; logged once); 0: buffered (default 1) */
    /* Slot memory: alloc returns bytes of memory aligned to 4096 or NULL;
     * release frees it.  NULL: posix_memalign/free.  (The CUDA backend
     * passes cudaHostAlloc/cudaFreeHost to get pinned memory.) */
    void *(*alloc)(size_t bytes, void *arg);
    void (*release)(void *ptr, size_t bytes, void *arg);
    void *alloc_arg;
    /* Fault injection for tests; NULL in production.  rig_open is asked
     * before each open: 0 opens normally, a negative errno makes that open
     * fail with it.  rig_read is called (by the background thread) on each
     * completion with the kernel's result and returns the result to use: a
     * negative errno, or a count no larger than res (a short read).  Both get
     * direct = 1 for an O_DIRECT descriptor. */
    int (*rig_open)(void *arg, const char *path, int direct);
    int (*rig_read)(void *arg, const char *path, uint64_t offset, int direct, int res);
    void *rig_arg;
} fs_prefetch_opts;

typedef struct fs_prefetch_stats {
    uint64_t bytes;         /* bytes read from files (alignment and gaps included) */
    uint64_t asked;         /* bytes of the extents submitted */
    uint64_t requests;      /* reads completed (a requeued read counts again) */
    uint64_t requeues;      /* -EAGAIN and short reads that were resubmitted */
    uint64_t batches;       /* batches submitted */
    double busy_s;          /* seconds during which at least one read was in flight */
    int direct;             /* 1: O_DIRECT was asked and every file opened uses it */
    int registered;         /* 1: slots are registered buffers (reads use read_fixed) */
} fs_prefetch_stats;

typedef struct fs_prefetch fs_prefetch;

/* Fills *o with the defaults above.  Cannot fail. */
void fs_prefetch_opts_default(fs_prefetch_opts *o);

/* The exact number of slot bytes a batch of n extents needs under o (its gap):
 * the sum, over the coalesced runs, of each run's span aligned down/up to
 * 4096.  Zero-length extents need nothing.  Errors: FS_ERR_USAGE (n < 0, a
 * NULL path, offset + length overflowing), FS_ERR_NOMEM; *bytes is then
 * unchanged. */
fs_status fs_prefetch_need(fs_ctx *ctx, const fs_prefetch_opts *o, const fs_extent *ext,
                           int n, uint64_t *bytes);

/* Allocates the slots, sets up the io_uring (registering the slots when the
 * kernel allows it; otherwise plain reads, logged) and starts the thread.
 * Errors: FS_ERR_USAGE naming a bad option, FS_ERR_NOMEM, FS_ERR_IO (io_uring
 * or thread setup).  On error *out is NULL and nothing is left allocated.
 * The caller frees *out with fs_prefetch_free. */
fs_status fs_prefetch_new(fs_ctx *ctx, const fs_prefetch_opts *o, fs_prefetch **out);

/* Queues a batch of n extents (n >= 0; ext is only read during the call) and
 * returns its ticket; blocks while no slot is FREE (another thread, or the
 * caller before, must release one).  Files are opened here.
 * Errors: FS_ERR_USAGE (bad extent, or a batch that cannot fit one slot: the
 * message gives the bytes it needs), FS_ERR_IO (a file cannot be opened,
 * naming it), FS_ERR_NOMEM, or the error that stopped the prefetcher (an
 * earlier failed read, see fs_prefetch_wait).  On error nothing is queued. */
fs_status fs_prefetch_submit(fs_ctx *ctx, fs_prefetch *p, const fs_extent *ext, int n,
                             int *ticket);

/* Waits until batch `ticket` is read and lends its slot to the caller:
 * ptr[i] (ptr has the n entries of the submit) points at the bytes of
 * extent i, valid until fs_prefetch_release; a zero-length extent gets a
 * valid pointer to nothing.  Errors: FS_ERR_IO (a read of the batch failed or
 * was cut short by an earlier failure; the message names the file and the
 * offset; the prefetcher stops queuing reads and the ticket is consumed),
 * FS_ERR_USAGE (ticket not pending, or already waited for). */
fs_status fs_prefetch_wait(fs_ctx *ctx, fs_prefetch *p, int ticket, const uint8_t *ptr[]);

/* Gives the slot of `ticket` back (its pointers become invalid).  A batch not
 * yet waited for is dropped (waiting out its reads in flight).  An unknown or
 * consumed ticket is ignored.  Cannot fail. */
void fs_prefetch_release(fs_prefetch *p, int ticket);

/* A snapshot of the counters.  Cannot fail. */
void fs_prefetch_get_stats(fs_prefetch *p, fs_prefetch_stats *st);

/* Stops queuing, drains the reads in flight, joins the thread, then frees
 * the slots and closes the files.  Pointers lent by wait become invalid.
 * Accepts NULL. */
void fs_prefetch_free(fs_prefetch *p);

#ifdef __cplusplus
}
#endif

#endif
