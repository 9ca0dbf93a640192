/* actcache.h: the activation cache.  One file per layer boundary holds the
 * activations flowing between two layers (e.g. WORK/act-0012.fsa: 512 x 4096
 * tokens x 7168 dims in BF16, ~30 GB raw), written chunk by chunk while the
 * layer produces them, so that an interrupted run can resume and a run short
 * of memory can spill them and read them back.
 *
 * The data is a byte array of `rows` rows of `row_bytes` bytes each, made of
 * elements of `elem_size` bytes (2 for BF16, 4 for F32; 1 and 8 are accepted
 * too).  It is cut into chunks of `chunk_rows` whole rows (the last chunk may
 * be shorter).  Each chunk is byte-shuffled (byte k of every element grouped
 * together: all byte-0s, then all byte-1s, ...; for BF16 the low mantissa
 * bytes, then the sign/exponent bytes) and LZ4-compressed; when LZ4 saves
 * less than 1/32 of the chunk, the chunk is stored raw (unshuffled, as
 * given) instead.  Each chunk carries the XXH3-64 (seed 0) of its raw,
 * unshuffled bytes.
 *
 * ---- File format, version 2 (a contract: readers elsewhere may rely on it) --
 *
 * All integers little-endian, fixed width; offsets are from the start of the
 * file.
 *
 *   Header, 80 bytes at offset 0:
 *      0  8  magic        "FSACT002" (ASCII, no terminator)
 *      8  4  version      u32 = 2
 *     12  4  elem_size    u32 in {1, 2, 4, 8}
 *     16  8  row_bytes    u64 >= 1, a multiple of elem_size
 *     24  8  rows         u64 (0 allowed: then nchunks = 0)
 *     32  8  chunk_rows   u64 >= 1; the writer stores min(chunk_rows, rows)
 *                         when rows > 0; chunk_rows * row_bytes <= 1 GiB
 *     40  8  nchunks      u64 = ceil(rows / chunk_rows) <= FS_ACT_MAX_CHUNKS
 *     48  8  tag          u64 the writer's label: a layer boundary holds the
 *                         index of the layer whose input it is, so a file is
 *                         never taken for another layer's; FS_ACT_NO_TAG unset
 *     56  8  reserved     u64 = 0
 *     64  8  table_xxh3   u64 XXH3-64 of the nchunks * 32 table bytes
 *     72  8  header_xxh3  u64 XXH3-64 of header bytes 0..71
 *
 *   Chunk table, nchunks entries of 32 bytes at offset 80; entry i:
 *      0  8  offset       u64 file offset of chunk i's payload
 *      8  4  stored       u32 payload bytes in the file
 *     12  4  raw          u32 raw bytes of the chunk = its rows * row_bytes
 *     16  4  flags        u32: FS_ACT_CHUNK_RAW (0) or FS_ACT_CHUNK_LZ4 (1)
 *     20  4  reserved     u32 = 0
 *     24  8  xxh3         u64 XXH3-64 of the chunk's raw (unshuffled) bytes
 *
 *   Payloads: chunk i holds rows [i * chunk_rows, min((i+1) * chunk_rows, rows)).
 *   Payloads are contiguous and in order: chunk 0 starts at 80 + 32 * nchunks,
 *   chunk i+1 at offset_i + stored_i, and the last one ends at the end of the
 *   file.  A RAW payload is the raw bytes (stored == raw).  An LZ4 payload is
 *   one LZ4 block (LZ4_compress_default format) of the shuffled raw bytes,
 *   1 <= stored < raw.
 *
 * The run journal records the checksum returned by fs_act_writer_close (and
 * by fs_act_checksum): the XXH3-64 of the nchunks chunk checksums laid out as
 * u64 little-endian, in chunk order (XXH3-64 of zero bytes when nchunks = 0).
 *
 * Zero rows are allowed: the file is the 80-byte header alone; reads of zero
 * rows succeed.  (A layer boundary with no tokens is odd but not invalid, and
 * refusing it would force every caller to special-case it.)
 *
 * Writer states (one writer per file, one thread at a time):
 *   OPEN --put--> OPEN (rows given < rows) ... --close--> committed, freed
 *   OPEN --put error (I/O, memory)--> FAILED: put returns the same error;
 *   close and abort remove the temporary file and free the writer.
 *   close with fewer rows than announced fails and removes the temporary file.
 * The final path appears only through rename() after the whole file is
 * written and fsynced; a crash leaves at most PATH.tmp.PID, which the resume
 * logic may delete.
 *
 * Reader: fs_act_open validates the whole header and table against the file
 * size before any payload is read; a payload is trusted only after its
 * checksum matched.  One fs_act_file serves one thread at a time (it keeps a
 * decode buffer and the last decoded chunk).
 */
#ifndef FS_ACTCACHE_H
#define FS_ACTCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "src/core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_ACT_MAGIC "FSACT002"
#define FS_ACT_VERSION 2u
#define FS_ACT_HEADER_BYTES 80u
#define FS_ACT_NO_TAG UINT64_MAX                /* a file written without a label */
#define FS_ACT_ENTRY_BYTES 32u
#define FS_ACT_MAX_CHUNK_BYTES (1ull << 30)   /* raw bytes of one chunk */
#define FS_ACT_MAX_CHUNKS (1ull << 20)        /* table of at most 32 MiB */

#define FS_ACT_CHUNK_RAW 0u   /* payload = raw bytes as given */
#define FS_ACT_CHUNK_LZ4 1u   /* payload = LZ4 block of the shuffled bytes */

typedef struct fs_act_writer fs_act_writer;
typedef struct fs_act_file fs_act_file;

/* ---- shuffle (pure; exposed for tests) ----------------------------------- */

/* dst[k * count + i] = src[i * elem_size + k] for every element i < count and
 * byte k < elem_size.  dst and src must not overlap.  Cannot fail. */
void fs_act_shuffle(void *dst, const void *src, size_t elem_size, size_t count);
/* The inverse: dst[i * elem_size + k] = src[k * count + i].  Cannot fail. */
void fs_act_unshuffle(void *dst, const void *src, size_t elem_size, size_t count);

/* ---- writer --------------------------------------------------------------- */

/* Starts writing `rows` rows of `row_bytes` bytes (elements of elem_size
 * bytes) to path, in chunks of chunk_rows rows; the bytes go to path.tmp.PID
 * (created or truncated) until fs_act_writer_close.  On success *out owns the
 * writer (closed by fs_act_writer_close or fs_act_writer_abort).
 * Errors: FS_ERR_USAGE for an elem_size outside {1,2,4,8}, row_bytes 0 or not
 * a multiple of elem_size, chunk_rows 0, a chunk over FS_ACT_MAX_CHUNK_BYTES,
 * more than FS_ACT_MAX_CHUNKS chunks, or a total that overflows;
 * FS_ERR_NOMEM; FS_ERR_IO naming the temporary file.  Nothing is left on
 * disk on error. */
fs_status fs_act_writer_open(fs_ctx *ctx, const char *path, int elem_size, uint64_t row_bytes,
                             uint64_t rows, uint64_t chunk_rows, fs_act_writer **out);

/* Sets the label the header will carry (tag above).  Cannot fail. */
void fs_act_writer_set_tag(fs_act_writer *w, uint64_t tag);

/* Appends nrows rows (nrows * row_bytes bytes at rows_data, copied: the
 * caller keeps its buffer) and compresses and writes every chunk they
 * complete.  Errors: FS_ERR_USAGE when the rows would exceed the announced
 * count (the writer is unchanged and still usable); FS_ERR_IO naming the
 * temporary file and offset, with "no space left on device while writing
 * PATH (N bytes needed ...)" for ENOSPC (likewise for EDQUOT and EFBIG);
 * after an I/O error the writer is FAILED (see the header comment). */
fs_status fs_act_writer_put(fs_ctx *ctx, fs_act_writer *w, const void *rows_data,
                            uint64_t nrows);

/* Finishes the file: checks that every row was given, writes the header and
 * table, fsyncs, renames the temporary file to the final path and fsyncs the
 * folder.  *checksum_out (may be NULL) receives the journal checksum
 * described above (untouched on error).  Always frees w.  On error the
 * temporary file is removed and nothing new is left at path (if only the
 * final fsync of the folder fails, the renamed file is unlinked again).
 * Errors: FS_ERR_USAGE for missing rows, the stored error of a FAILED
 * writer, FS_ERR_NOMEM, FS_ERR_IO naming the path. */
fs_status fs_act_writer_close(fs_ctx *ctx, fs_act_writer *w, uint64_t *checksum_out);

/* Drops the writer: closes and removes the temporary file, frees w.  Accepts
 * NULL.  Cannot fail (an unlink failure is ignored). */
void fs_act_writer_abort(fs_act_writer *w);

/* ---- reader --------------------------------------------------------------- */

/* Opens a cache file and validates its header and chunk table: magic and
 * version, header and table checksums, field ranges, counts within bounds,
 * chunk sizes consistent with the rows, payloads contiguous inside the file
 * and ending at its end, no arithmetic overflow.  On success *out owns the
 * open file (fs_act_close).  Errors: FS_ERR_IO (open, stat, read),
 * FS_ERR_FORMAT (not a cache file, unsupported version, inconsistent fields,
 * truncated), FS_ERR_CORRUPT (header or table checksum), FS_ERR_NOMEM; each
 * message names the file. */
fs_status fs_act_open(fs_ctx *ctx, const char *path, fs_act_file **out);

/* Reads rows [row0, row0 + nrows) into dst (nrows * row_bytes bytes),
 * decompressing every chunk the range touches and checking each chunk's
 * checksum.  Errors: FS_ERR_USAGE for a range past the end; FS_ERR_CORRUPT
 * naming the file and chunk when a payload does not decode or its checksum
 * does not match; FS_ERR_IO naming the file and offset; FS_ERR_NOMEM.  On
 * error the contents of dst are unspecified. */
fs_status fs_act_read_rows(fs_ctx *ctx, fs_act_file *f, uint64_t row0, uint64_t nrows,
                           void *dst);

/* Decodes and checks every chunk.  Errors as fs_act_read_rows. */
fs_status fs_act_verify(fs_ctx *ctx, fs_act_file *f);

/* Accessors.  Cannot fail. */
uint64_t fs_act_rows(const fs_act_file *f);
uint64_t fs_act_row_bytes(const fs_act_file *f);
int fs_act_elem_size(const fs_act_file *f);
uint64_t fs_act_chunk_rows(const fs_act_file *f);
uint64_t fs_act_nchunks(const fs_act_file *f);
/* The journal checksum (as fs_act_writer_close returned it), from the table.
 * It vouches for the payloads only once fs_act_verify passed. */
uint64_t fs_act_checksum(const fs_act_file *f);

/* The header's label (FS_ACT_NO_TAG when the writer set none); trusted once
 * fs_act_open returned, as the header checksum covers it.  Cannot fail. */
uint64_t fs_act_tag(const fs_act_file *f);

/* Closes the file and frees f.  Accepts NULL. */
void fs_act_close(fs_act_file *f);

#ifdef __cplusplus
}
#endif

#endif
