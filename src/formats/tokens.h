/* tokens.h: token files for calibration and evaluation: raw little-endian
 * uint32 (`.u32`, one sequence) or JSON lines, each an array of ids or an
 * object with "input_ids" (one sequence per line), and the windows cut from
 * them. */
#ifndef FS_TOKENS_H
#define FS_TOKENS_H

#include "src/core/core.h"

#define FS_TOKENS_MAX_FILE 16000000000ull  /* bytes of a token file accepted: 16 GB (spec §11.1) */

typedef struct fs_tokens {
    uint32_t *ids;       /* all sequences back to back */
    size_t n;
    size_t nseq;
    size_t *start;       /* [nseq + 1]: sequence i is ids[start[i] .. start[i+1]) */
} fs_tokens;

/* Errors: FS_ERR_USAGE naming the file when it is missing, unreadable or not
 * a regular file (a named pipe is refused, never waited on); FS_ERR_FORMAT
 * naming the file and the line or byte offset (a file over
 * FS_TOKENS_MAX_FILE, refused from its size before a byte is read; a .u32
 * whose size is not a multiple of 4, a line that is not an id array, an id
 * that is not an integer in 0..2^32-1, no tokens at all); FS_ERR_IO,
 * FS_ERR_NOMEM. */
fs_status fs_tokens_load(fs_ctx *ctx, const char *path, fs_tokens *t);
void fs_tokens_free(fs_tokens *t);
/* FS_ERR_FORMAT naming the first id >= vocab (its offset, and line for JSON lines). */
fs_status fs_tokens_check_vocab(fs_ctx *ctx, const fs_tokens *t, const char *path, int64_t vocab);
/* The non-overlapping windows of L tokens of every sequence, in order (the
 * last partial window of a sequence is dropped); returns how many, and their
 * starts into ids[] if starts is not NULL (size: the count). */
size_t fs_tokens_windows(const fs_tokens *t, size_t L, size_t *starts);

#endif
