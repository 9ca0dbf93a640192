/* journal.h: the run journal, WORK/journal.json, the only source of truth
 * for what a quantize run has done (DESIGN.md §5).
 *
 * One JSON object (specifications.md §16 gives every key):
 *   format "forge-stream-journal", version 1, forge_stream (the version
 *   that wrote it), argv (the flags that shape the output, paths absolute),
 *   config (every option with defaults filled in), backend, model {dir,
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

#include "src/formats/ckpt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_JOURNAL_NAME "journal.json"
#define FS_JOURNAL_FORMAT "forge-stream-journal"
#define FS_JOURNAL_VERSION 1

/* Writes root (json_t *) to work/journal.json atomically.  Errors: FS_ERR_IO
 * naming the file (ENOSPC included), FS_ERR_NOMEM. */
fs_status fs_journal_write(fs_ctx *ctx, const char *work, const void *root);
/* Reads and checks work/journal.json: every key above present with its type.
 * *root: a new json_t *.  Errors: FS_ERR_IO (absent: says no run was
 * started there), FS_ERR_FORMAT naming the file and the key. */
fs_status fs_journal_read(fs_ctx *ctx, const char *work, void **root);

/* The fingerprint of a model folder (a new json_t * array): for config.json,
 * the index and every shard, its name, size, and XXH3-64 of its head (a
 * shard's 8-byte length and JSON header, a small file's whole bytes) and of
 * its last 64 KiB.  Errors: FS_ERR_IO, FS_ERR_NOMEM. */
fs_status fs_fingerprint_model(fs_ctx *ctx, const fs_ckpt *c, void **files);
/* FS_ERR_USAGE naming the first file of `recorded` that is missing or
 * differs in `now` (or is new in `now`), and how. */
fs_status fs_fingerprint_check(fs_ctx *ctx, const char *dir, const void *recorded, const void *now);

#ifdef __cplusplus
}
#endif

#endif
