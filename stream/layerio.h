/* layerio.h: reading decoder layers ahead.  For each layer of a model the
 * byte extents of its tensors (linears and their FP8 scales, biases, norms,
 * routers: wherever the shards put them) are fetched by the io_uring
 * prefetcher into a ring slot while the previous layer computes; while a
 * layer is acquired, the checkpoint reader serves those tensors from the slot
 * instead of the disk (fs_ckpt.mem), so every decoder (FP8, forge, gptq)
 * works unchanged.
 *
 * Use: start(l); [compute l-1]; acquire(l); start(l+1); load layer l's
 * weights; release(l); compute l ...
 */
#ifndef FS_LAYERIO_H
#define FS_LAYERIO_H

#include "src/models/model.h"
#include "stream/prefetch.h"

typedef struct fs_layer_reader fs_layer_reader;

/* Plans every layer's extents and sizes a ring of `slots` slots to the
 * largest layer.  host_budget (0: none) bounds slots x slot size.
 * Errors: FS_ERR_USAGE (a layer does not fit the budget), FS_ERR_NOMEM, I/O. */
fs_status fs_lr_new(fs_ctx *ctx, fs_ckpt *c, const fs_model *m, int slots, int direct,
                    uint64_t host_budget, fs_layer_reader **out);
/* Queues layer l (no-op when out of range). */
fs_status fs_lr_start(fs_ctx *ctx, fs_layer_reader *lr, int l);
/* Waits for layer l and routes its tensors' reads to the slot. */
fs_status fs_lr_acquire(fs_ctx *ctx, fs_layer_reader *lr, int l);
/* Ends the routing and frees the slot. Cannot fail. */
void fs_lr_release(fs_layer_reader *lr, int l);
/* Bytes of layer l's extents, and the prefetcher's statistics. */
uint64_t fs_lr_bytes(const fs_layer_reader *lr, int l);
void fs_lr_stats(fs_layer_reader *lr, fs_prefetch_stats *st);
void fs_lr_free(fs_layer_reader *lr);   /* accepts NULL */

#endif
