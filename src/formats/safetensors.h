/* safetensors.h: reading and writing single safetensors files.
 *
 * A file is: u64 little-endian header length N, N bytes of JSON (an object
 * mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
 * plus an optional "__metadata__" object of strings), then the data buffer;
 * offsets are relative to byte 8 + N.  Files come from the internet: the
 * reader validates everything before it trusts a number (see fs_st_open).
 */
#ifndef FS_SAFETENSORS_H
#define FS_SAFETENSORS_H

#include "src/core/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FS_ST_MAX_HEADER (100u * 1024u * 1024u)  /* header bytes accepted */
#define FS_ST_MAX_TENSORS (1 << 20)              /* tensors per file */
#define FS_ST_MAX_DIMS 8

typedef struct fs_st_tensor {
    char *name;
    fs_dtype dtype;
    int ndim;
    int64_t shape[FS_ST_MAX_DIMS];
    uint64_t nelem;
    uint64_t offset;     /* absolute byte offset of the data in the file */
    uint64_t nbytes;
} fs_st_tensor;

typedef struct fs_st_file {
    char *path;
    int fd;
    uint64_t size;       /* file size */
    uint64_t data_start; /* 8 + N */
    int ntensors;
    fs_st_tensor *tensors;   /* in header order */
    int nmeta;
    char **meta_keys, **meta_vals;
} fs_st_file;

/* Opens and validates path: header length within the file and the cap, JSON
 * object (duplicates rejected), known dtypes, shapes whose byte size (checked
 * for overflow) equals the data_offsets span, spans inside the file and not
 * overlapping.  Errors: FS_ERR_USAGE naming the file when it is missing,
 * unreadable or not a regular file (a named pipe is refused, never waited
 * on), FS_ERR_IO (a failed read), FS_ERR_FORMAT (naming the file and the
 * tensor), FS_ERR_NOMEM.  On error *out is NULL. */
fs_status fs_st_open(fs_ctx *ctx, const char *path, fs_st_file **out);
void fs_st_close(fs_st_file *f);                       /* accepts NULL */
const fs_st_tensor *fs_st_find(const fs_st_file *f, const char *name);  /* NULL if absent */
const char *fs_st_meta(const fs_st_file *f, const char *key);           /* NULL if absent */
/* Reads the tensor's raw bytes into dst (t->nbytes).  FS_ERR_IO on a short read. */
fs_status fs_st_read(fs_ctx *ctx, const fs_st_file *f, const fs_st_tensor *t, void *dst);
/* Reads and decodes a float tensor to f32 (F32/F16/BF16/F8_E4M3), checking
 * finiteness; *out is malloc'ed, caller frees. */
fs_status fs_st_read_f32(fs_ctx *ctx, const fs_st_file *f, const fs_st_tensor *t, float **out);

/* Writer: tensors are added by pointer (they must stay valid until commit or
 * abort) and written in the order added.  Commit writes a temporary file next
 * to path, fsyncs it, renames it over path and fsyncs the folder: readers see
 * either no file or the whole file. */
typedef struct fs_st_writer fs_st_writer;

fs_status fs_st_writer_new(fs_ctx *ctx, const char *path, fs_st_writer **out);
/* Errors: FS_ERR_USAGE for an empty, reserved ("__metadata__") or repeated
 * name or a bad shape; FS_ERR_NOMEM. */
fs_status fs_st_writer_add(fs_ctx *ctx, fs_st_writer *w, const char *name, fs_dtype dt,
                           int ndim, const int64_t *shape, const void *data);
/* As fs_st_writer_add, the bytes being in the open file fd at offset (fd
 * must stay open until commit; copied with copy_file_range at commit). */
fs_status fs_st_writer_add_file(fs_ctx *ctx, fs_st_writer *w, const char *name, fs_dtype dt,
                                int ndim, const int64_t *shape, int fd, uint64_t offset);
fs_status fs_st_writer_meta(fs_ctx *ctx, fs_st_writer *w, const char *key, const char *val);
fs_status fs_st_writer_commit(fs_ctx *ctx, fs_st_writer *w);   /* frees w */
void fs_st_writer_abort(fs_st_writer *w);                      /* frees w; accepts NULL */

#ifdef __cplusplus
}
#endif

#endif
