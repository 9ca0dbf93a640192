/* outckpt.h: writing a quantized checkpoint folder.
 *
 * Tensors are added one by one (quantized linears packed in the chosen
 * format, everything else copied) and gathered into shards of at most
 * max_shard bytes.  A full shard is written at once to a hidden partial name
 * (write, fsync, rename); fs_out_finish renames the shards to
 * model-0000i-of-0000N.safetensors (or model.safetensors when there is one),
 * writes the index, config.json with its quantization_config, and copies the
 * tokenizer and generation files, every file through a temporary name.  The
 * index (or the single shard) is renamed last: a folder without it is not a
 * finished checkpoint.  Every shard records an XXH3-64 checksum of each of
 * its tensors in __metadata__ ("xxh3:<name>"), checked by inspect --verify.
 */
#ifndef FS_OUTCKPT_H
#define FS_OUTCKPT_H

#include "src/formats/ckpt.h"
#include "src/quant/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fs_format { FS_FMT_FORGE = 0, FS_FMT_GPTQ = 1, FS_FMT_CT = 2 } fs_format;

/* "forge", "gptq" or "compressed-tensors" (the --format names). */
const char *fs_format_name(fs_format f);
/* The --format name -> *f; -1 for an unknown name. */
int fs_format_parse(const char *name, fs_format *f);

/* What the written g_idx is, from the options (config.json says this, never
 * the flags as given): 1 when some input column c may sit in a group other
 * than c / G (dynamic act-order groups: GPTQ's desc_act, compressed-tensors'
 * actorder "group"); 0 with static groups, a single group per row (-1), no
 * act-order, or RTN (which ignores act-order). */
int fs_out_dynamic_groups(const fs_quant_opts *q);
/* 1 when columns were processed in act-order (GPTQ, not RTN). */
int fs_out_act_order_done(const fs_quant_opts *q);

#define FS_FORGE_FORMAT_VERSION 1
#define FS_DEFAULT_MAX_SHARD (5000000000ull)   /* 5 GB, as Hugging Face writes them */

typedef struct fs_outckpt fs_outckpt;

/* Whether dir may receive a new checkpoint, touching nothing: absent, empty
 * (but for a default work folder .forge-work), or overwrite given.
 * FS_ERR_USAGE otherwise (or when it is not a folder); FS_ERR_IO. */
fs_status fs_out_check(fs_ctx *ctx, const char *dir, int overwrite);
/* Opens dir for writing: creates it, or refuses a non-empty one (FS_ERR_USAGE)
 * unless overwrite, which then removes the checkpoint files found there.  The
 * caller holds the folder's lock (fs_lock_dir) before calling with overwrite. */
fs_status fs_out_open(fs_ctx *ctx, const char *dir, int overwrite, uint64_t max_shard,
                      fs_format fmt, const fs_quant_opts *q, fs_outckpt **out);
/* Adds a tensor; takes ownership of data (malloc'ed; freed by the writer). */
fs_status fs_out_add(fs_ctx *ctx, fs_outckpt *o, const char *name, fs_dtype dt, int ndim,
                     const int64_t *shape, void *data);
/* Packs and adds one quantized linear (base name, e.g. "model.layers.0.mlp.up_proj"). */
fs_status fs_out_add_linear(fs_ctx *ctx, fs_outckpt *o, const char *base,
                            const fs_layer_result *r);
/* Copies tensor `name` from the source checkpoint unchanged, an F8_E4M3 one
 * dequantized to BF16 (its _scale_inv is consumed, never copied). */
fs_status fs_out_copy(fs_ctx *ctx, fs_outckpt *o, const fs_ckpt *src, const char *name);
/* The first half of fs_out_copy, which touches no writer state (so it can run
 * on the compute thread while the writer thread adds): *data (malloc'ed) gets
 * the bytes to write, in *dt with *ndim dims in shape[FS_ST_MAX_DIMS]. */
fs_status fs_out_read_copy(fs_ctx *ctx, const fs_ckpt *src, const char *name, fs_dtype *dt,
                           int *ndim, int64_t *shape, void **data);
/* Writes the rest (see above) and frees o.  config: the source config.json
 * (json_t *, not modified); src_dir: where tokenizer files are copied from
 * (NULL: none).  extra: more quantization_config keys (json_t *, or NULL). */
fs_status fs_out_finish(fs_ctx *ctx, fs_outckpt *o, const void *config, const char *src_dir,
                        const void *extra);
/* Drops everything not yet finished, removing partial files; accepts NULL. */
void fs_out_abort(fs_outckpt *o);
/* Frees o and leaves its files for a later --resume; accepts NULL. */
void fs_out_detach(fs_outckpt *o);
/* Writes the shard being gathered (when it holds tensors) to its partial
 * file now; fs_out_finish does it too.  Errors: FS_ERR_IO, FS_ERR_NOMEM. */
fs_status fs_out_seal(fs_ctx *ctx, fs_outckpt *o);

/* ---- resume (outstate.c) ---------------------------------------------------
 * A journaled writer keeps each sealed shard's staging file until
 * fs_out_release, so the state a journal recorded stays restorable until the
 * next one is committed.  Use: fs_out_journal once after open; at each
 * commit fs_out_state, write the journal durably, then fs_out_release. */
void fs_out_journal(fs_outckpt *o);
/* The state to record (a new json_t *): fsyncs the staging file and checksums
 * the shards sealed since the last call.  Errors: FS_ERR_IO, FS_ERR_NOMEM. */
fs_status fs_out_state(fs_ctx *ctx, fs_outckpt *o, void **state);
/* Removes the staging files of shards the last state recorded as sealed,
 * but for shard `keep` (the one an older state still in the journal was
 * gathering; 0: none). */
void fs_out_release(fs_outckpt *o, int keep);
/* Reopens dir at a recorded state (json_t *): checks the size and XXH3-64 of
 * every sealed shard (putting back one that a killed run had already given
 * its final name) and of every pending tensor in the staging file, cuts the
 * staging file to its committed length, and removes what the state does not
 * name (later partials, temporary files, an unfinished index), but for the
 * staging file of shard `keep` (see fs_out_release).  Errors:
 * FS_ERR_CORRUPT naming the file that does not match (nothing is trusted
 * then: the caller starts over), FS_ERR_FORMAT for a malformed state,
 * FS_ERR_IO, FS_ERR_NOMEM. */
fs_status fs_out_resume(fs_ctx *ctx, const char *dir, uint64_t max_shard, fs_format fmt,
                        const fs_quant_opts *q, const void *state, int keep, fs_outckpt **out);

#ifdef __cplusplus
}
#endif

#endif
