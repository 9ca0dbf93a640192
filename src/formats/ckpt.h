/* ckpt.h: a Hugging Face checkpoint folder (or one safetensors file) opened
 * for reading: config.json, the shards of model.safetensors.index.json (or a
 * single model.safetensors), and every tensor by name with its shard, dtype,
 * shape and byte extent.  Only headers are read at open; a tensor's bytes are
 * read when asked (fs_ckpt_read*), never a whole shard.
 *
 * Checkpoints come from the internet: shard names are plain file names inside
 * the folder (no '/', no '..', no absolute path, no symlink leading outside
 * but a Hugging Face cache snapshot's into its own blobs folder),
 * every header is validated (safetensors.h), a tensor may live in one shard
 * only, every tensor of the index must be in its shard, and counts are
 * bounded.
 */
#ifndef FS_CKPT_H
#define FS_CKPT_H

#include "src/formats/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_CKPT_MAX_SHARDS 65536
#define FS_CKPT_MAX_TENSORS (4 << 20)
#define FS_CKPT_MAX_JSON (256u << 20)     /* config.json / index bytes accepted */
#define FS_CKPT_MAX_SIDE (256u << 20)     /* bytes of a tokenizer or generation file */

/* The tokenizer and generation files of a model folder that a quantized
 * output carries over (NULL-terminated).  fs_ckpt_open refuses a folder where
 * one of them exists but is not a regular file (a named pipe, a folder, ...)
 * or is over FS_CKPT_MAX_SIDE bytes, so that nothing meets it after work has
 * begun. */
extern const char *const fs_ckpt_side_files[];

typedef struct fs_ckpt_entry {
    const fs_st_tensor *t;   /* inside shards[shard] */
    int shard;
} fs_ckpt_entry;

typedef struct fs_ckpt {
    char *dir;               /* the folder (resolved), or the file's folder */
    void *config;            /* json_t * of config.json, NULL when absent */
    int nshards;
    char **shard_names;      /* file names inside dir */
    fs_st_file **shards;
    size_t ntensors;
    fs_ckpt_entry *entries;  /* every tensor, shard by shard */
    size_t cap;              /* hash table: slots of entry index + 1, 0 = empty */
    uint32_t *table;
    int fp8_block[2];        /* quantization_config.weight_block_size, 0 if not fp8 */
    /* (optional) per entry, its bytes already in memory (the prefetcher's slot,
     * stream/layerio.h): fs_ckpt_read_raw copies from there instead of reading */
    const uint8_t **mem;
    /* (optional) the read log, for the run journal: when read_xxh is set
     * (fs_ckpt_log_reads), fs_ckpt_read_raw records per entry the XXH3-64 of
     * the bytes it returned (read_seen[i] = 1 once recorded) */
    uint64_t *read_xxh;
    uint8_t *read_seen;
} fs_ckpt;

/* Loads the JSON object of an outside file (config.json, an index) of at
 * most max bytes into *out (a json_t *, caller json_decref's it), through
 * fs_open_regular: a named pipe, device, socket or folder is refused before
 * a byte is read, never waited on; duplicate keys are refused, nesting is
 * bounded by jansson (2048 levels).  Errors: FS_ERR_USAGE naming the file
 * when it is missing, unreadable or not a regular file; FS_ERR_FORMAT naming
 * it when it is too big, not JSON (with the line) or not an object;
 * FS_ERR_IO.  On error *out is NULL. */
fs_status fs_json_load(fs_ctx *ctx, const char *path, uint64_t max, void **out);

/* Opens a folder (with model.safetensors.index.json or model.safetensors) or a
 * single .safetensors file.  Errors: FS_ERR_USAGE for a path that is missing,
 * unreadable or not a regular file (a named pipe is refused, never waited
 * on), FS_ERR_FORMAT naming the file and tensor (a shard the index names but
 * the folder lacks included), FS_ERR_IO, FS_ERR_NOMEM.  On error *out is NULL. */
fs_status fs_ckpt_open(fs_ctx *ctx, const char *path, fs_ckpt **out);
void fs_ckpt_close(fs_ckpt *c);                               /* accepts NULL */
const fs_ckpt_entry *fs_ckpt_find(const fs_ckpt *c, const char *name);  /* NULL if absent */
/* The F32 (or BF16) `<name>_scale_inv` partner of an F8_E4M3 weight, or NULL. */
const fs_ckpt_entry *fs_ckpt_scale_of(const fs_ckpt *c, const char *name);
/* Starts the read log (see fs_ckpt.read_xxh).  Errors: FS_ERR_NOMEM. */
fs_status fs_ckpt_log_reads(fs_ctx *ctx, fs_ckpt *c);
/* Raw bytes of a tensor into dst (entry->t->nbytes). */
fs_status fs_ckpt_read_raw(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e, void *dst);
/* A float tensor decoded to f32 (*out malloc'ed).  An F8_E4M3 tensor is
 * dequantized with its block scales: W[r,c] = fp8 * S[r/b0][c/b1], computed in
 * double and rounded once.  FS_ERR_FORMAT for a missing scale or one of the
 * wrong shape or dtype (fs_ckpt_check_fp8); FS_ERR_NUMERIC naming the tensor
 * and the flat index of the first NaN or Inf (a non-finite scale, an E4M3
 * NaN, a product beyond float). */
fs_status fs_ckpt_read_f32(fs_ctx *ctx, const fs_ckpt *c, const char *name, float **out);
/* The header-level check of F8_E4M3 tensor e: 2-D, with a `<name>_scale_inv`
 * of dtype F32 or BF16 and shape [ceil(rows / b0), ceil(cols / b1)] for the
 * block of quantization_config.weight_block_size (128 x 128 when unsaid).
 * FS_ERR_FORMAT naming the shard, the tensor and the shape needed. */
fs_status fs_ckpt_check_fp8(fs_ctx *ctx, const fs_ckpt *c, const fs_ckpt_entry *e);
/* 1 if name ends with "_scale_inv" and is the scale of an F8_E4M3 tensor. */
int fs_ckpt_is_scale(const fs_ckpt *c, const char *name);

#ifdef __cplusplus
}
#endif

#endif
