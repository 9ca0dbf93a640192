/* journal.h: the run journal, WORK/journal.json, the only source of truth
 * for what a quantize run has done (DESIGN.md §5).
 *
 * One JSON object (specifications.md §16 gives every key):
 *   format "forge-stream-journal", version 1, forge_stream (the version
 *   that wrote it), argv (the flags that shape the output, paths absolute),
 *   config (every option with defaults filled in), backend, device (the
 *   line of fs_backend_device: GPU and CUDA versions, or the CPU's BLAS;
 *   a resume elsewhere needs --allow-device-change), model {dir,
 *   files [{name, size, head_xxh3, tail_xxh3}]}, calib {path, size, xxh3,
 *   ids_xxh3}, layers_done, sealed, act (the boundary file holding the
 *   input of layer layers_done: {file, rows, row_bytes, checksum}, or null),
 *   output (the output writer's state, outckpt.h), moe (expert counts of
 *   the MoE layers done), layers [{layer, act_checksum, shards, tensors}].
 *
 * It is replaced whole at every commit (temporary file, fsync, rename,
 * fsync of the folder: fs_write_atomic), so a reader sees the previous
 * commit or the new one, never a mix. */
#ifndef FS_JOURNAL_H
#define FS_JOURNAL_H

#include "src/models/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_JOURNAL_NAME "journal.json"
#define FS_JOURNAL_PREV "journal.prev.json"        /* the previous commit's journal, whole */
#define FS_JOURNAL_DAMAGED "journal.damaged.json"  /* a damaged journal, set aside by a resume */
#define FS_JOURNAL_FORMAT "forge-stream-journal"
#define FS_JOURNAL_VERSION 2

/* A JSON object sealed with its own checksum (sealed.c): written atomically
 * as its compact text with a last key "checksum" = XXH3-64 of the text
 * without it; keep (NULL: none) names where the version it replaces stays
 * (fs_write_atomic_keep).  Errors: FS_ERR_IO, FS_ERR_NOSPACE, FS_ERR_NOMEM. */
fs_status fs_sealed_write(fs_ctx *ctx, const char *path, const void *root, const char *keep);
/* Reads one (*root: a new json_t * object, without the checksum key).
 * Errors: FS_ERR_USAGE when absent or not a regular file, FS_ERR_CORRUPT
 * naming the file when it is damaged (no seal, or a seal that does not
 * match), FS_ERR_FORMAT when the sealed text is not an object, FS_ERR_IO. */
fs_status fs_sealed_read(fs_ctx *ctx, const char *path, void **root);

/* Writes root (json_t *) to work/journal.json, sealed, atomically; the
 * journal it replaces becomes work/journal.prev.json.  Errors: FS_ERR_IO
 * naming the file, FS_ERR_NOSPACE, FS_ERR_NOMEM. */
fs_status fs_journal_write(fs_ctx *ctx, const char *work, const void *root);
/* Reads and checks work/journal.json: its seal, then every key above with
 * its type.  When it is damaged, journal.prev.json (the commit before) is
 * read instead, the damaged file set aside as journal.damaged.json, a
 * warning printed and *from_prev set.  *root: a new json_t *.  Errors:
 * FS_ERR_USAGE when there is no journal (the message says no run was
 * started there), FS_ERR_CORRUPT when both are damaged (nothing committed
 * can be trusted), FS_ERR_FORMAT naming the file and the key (or another
 * version's journal), FS_ERR_IO. */
fs_status fs_journal_read(fs_ctx *ctx, const char *work, void **root, int *from_prev);

/* The fingerprint of a model folder (a new json_t * array): for config.json,
 * the index and every shard, its name, size, XXH3-64 of its head (a shard's
 * 8-byte length and JSON header, a small file's whole bytes) and of its last
 * 64 KiB, and its identity: device, inode, modification and status-change
 * times.  Errors: FS_ERR_IO, FS_ERR_NOMEM. */
fs_status fs_fingerprint_model(fs_ctx *ctx, const fs_ckpt *c, void **files);
/* FS_ERR_USAGE naming the first file of `recorded` that is missing in `now`
 * (or new in `now`).  touched (of touched_n > 0 bytes) gets the first file
 * whose size, head or tail checksum, identity or times differ, and how (else
 * ""): the caller then refuses, or proves that the bytes the run read are
 * unchanged (fs_read_xxh3). */
fs_status fs_fingerprint_check(fs_ctx *ctx, const char *dir, const void *recorded, const void *now, char *touched,
                               size_t touched_n);
/* What the run read of decoder layer l (l = -1: the tensors outside the
 * layers), as the journal records it: XXH3-64 over, in the model
 * description's order, each tensor's name and the XXH3-64 of its bytes (an
 * MTP layer: every tensor of it).  The bytes' checksums come from the read
 * log (fs_ckpt_log_reads) or, from_disk or for a tensor not read yet, from
 * its shard; *disk_bytes (may be NULL) counts what was read for it.
 * Errors: FS_ERR_IO, FS_ERR_USAGE (a tensor cut short), FS_ERR_NOMEM. */
fs_status fs_read_xxh3(fs_ctx *ctx, const fs_ckpt *c, const fs_model *m, int l, int from_disk, uint64_t *sum,
                       uint64_t *disk_bytes);

#ifdef __cplusplus
}
#endif

#endif
