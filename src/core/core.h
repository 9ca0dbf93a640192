/* core.h: the core of forge-stream every part builds on: status codes, the
 * one context struct and its error slot, logging, durable file I/O, the test
 * hooks (crash points, injected I/O faults), checked size arithmetic, dtypes
 * and their decoding, checksums.
 *
 * Conventions (see STYLE.md of the project):
 *  1. Every function that can fail returns fs_status and takes the fs_ctx first;
 *     the detail of the failure is in ctx->errmsg (first error wins).
 *  2. Matrices are row-major float32 unless said otherwise.  A linear layer's
 *     weight W is [out, in]; its Hessian H = X^T X is [in, in]; quantization
 *     groups run along the input dimension of each row.
 *  3. No global mutable state: everything a run owns hangs off fs_ctx.
 */
#ifndef FS_CORE_H
#define FS_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FS_VERSION "0.1.0"

/* ---- status ------------------------------------------------------------ */

typedef enum fs_status {
    FS_OK = 0,
    FS_ERR_NOMEM,   /* an allocation failed */
    FS_ERR_IO,      /* a read, write, open, rename or fsync failed */
    FS_ERR_FORMAT,  /* malformed or unsupported input data */
    FS_ERR_CORRUPT, /* a checksum did not match */
    FS_ERR_NUMERIC, /* NaN/Inf, or a matrix that is not positive definite */
    FS_ERR_CUDA,    /* a CUDA, cuBLAS or cuSOLVER call failed */
    FS_ERR_USAGE,   /* a bad flag or argument (exit code 2) */
    FS_ERR_ABORTED, /* stopped by a signal */
    FS_ERR_NODEV,   /* the requested backend has no device */
    FS_ERR_NOSPACE  /* a write failed for lack of space: ENOSPC, EDQUOT, EFBIG (as
                       SQLite's SQLITE_FULL: callers test the code, never the text) */
} fs_status;

const char *fs_status_str(fs_status st);

/* ---- context ------------------------------------------------------------ */

struct fs_backend;

typedef struct fs_ctx {
    fs_status err;            /* first error recorded, FS_OK if none */
    char errmsg[1024];        /* its message */
    int quiet;                /* no log lines on stderr */
    int threads;              /* CPU threads for BLAS (0 = library default) */
    struct fs_backend *be;    /* the compute backend of this run */
    struct fs_crash *crash;   /* test hook (fs_crashpoint), NULL in normal runs */
} fs_ctx;

void fs_ctx_init(fs_ctx *ctx);
/* Records the first error (code and printf-style message) and returns code. */
fs_status fs_ctx_err(fs_ctx *ctx, fs_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Forgets a recorded error (used when a failure is handled, e.g. a retry). */
void fs_ctx_clear(fs_ctx *ctx);
/* A log line on stderr unless ctx->quiet. */
void fs_log(const fs_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Monotonic seconds. Cannot fail. */
double fs_now(void);

/* fsync of the folder holding path (so a rename into it is durable).
 * Errors: FS_ERR_IO naming path, FS_ERR_NOMEM. */
fs_status fs_fsync_dir_of(fs_ctx *ctx, const char *path);
/* Writes buf[n] to path through path.tmp.PID, fsync, rename, fsync of the
 * folder; nothing is left under either name on error.  Errors: FS_ERR_IO
 * naming the file, FS_ERR_NOSPACE, FS_ERR_NOMEM. */
fs_status fs_write_atomic(fs_ctx *ctx, const char *path, const void *buf, size_t n);
/* The same, and the file being replaced (if any) stays readable under keep
 * (a hard link renamed over keep just before the new file is renamed in):
 * a reader that finds path damaged has the previous version whole.  Errors:
 * as fs_write_atomic. */
fs_status fs_write_atomic_keep(fs_ctx *ctx, const char *path, const void *buf, size_t n, const char *keep);

/* pread / pwrite of all n bytes at off, in calls of at most 1 GiB, EINTR
 * retried.  Reads: FS_ERR_IO naming path and offset, a premature end of
 * file included.  Writes: FS_ERR_NOSPACE with "no space left on device
 * while writing PATH (N bytes needed at offset O)" for ENOSPC (and the like
 * for EDQUOT and EFBIG), FS_ERR_IO naming path otherwise; fault_point (may
 * be NULL) is the fs_io_fault point the writes pass. */
fs_status fs_pread_full(fs_ctx *ctx, int fd, const char *path, void *dst, uint64_t n, uint64_t off);
fs_status fs_pwrite_full(fs_ctx *ctx, int fd, const char *path, const void *src, uint64_t n, uint64_t off,
                         const char *fault_point);

/* Records a failed write of n bytes at offset off of path (errno e):
 * FS_ERR_NOSPACE for ENOSPC, EDQUOT, EFBIG ("no space left on device while
 * writing PATH (N bytes needed at offset O)"), FS_ERR_IO otherwise.  Returns
 * the code. */
fs_status fs_write_errno(fs_ctx *ctx, int e, const char *path, uint64_t n, uint64_t off);

/* Opens an existing file of outside data for reading (flags: O_RDONLY or
 * O_RDWR; O_CLOEXEC is added) without ever blocking on it: a named pipe, a
 * device, a socket or a folder is refused before a byte is read.  *size
 * (may be NULL) gets its size.  Errors: FS_ERR_USAGE naming path for a
 * missing or unreadable file ("No such file ...") and for one that is not a
 * regular file ("not a regular file (a named pipe)"), FS_ERR_IO for other
 * failures. */
fs_status fs_open_regular(fs_ctx *ctx, const char *path, int flags, int *fd, uint64_t *size);
/* The status of a failed open, stat or realpath of outside data with errno
 * e: FS_ERR_USAGE for a path that is missing, unreadable or not what it
 * must be (ENOENT, ENOTDIR, EACCES, EPERM, ELOOP, ENAMETOOLONG, ENXIO,
 * EISDIR, ENODEV: bad input, exit 2), FS_ERR_IO otherwise.  Cannot fail. */
fs_status fs_path_status(int e);

/* Takes an exclusive lock on the folder itself (flock of the folder: no
 * file is left in it), held until *fd_out is closed or the process ends;
 * `what` names the folder in messages ("--out").  *fd_out stays -1 where
 * the file system cannot lock folders.  FS_ERR_USAGE when another process
 * holds it; FS_ERR_IO. */
fs_status fs_lock_dir(fs_ctx *ctx, const char *dir, const char *what, int *fd_out);

/* Takes an exclusive fcntl lock on dir/lock (held until *fd_out is closed,
 * or the process ends).  FS_ERR_USAGE naming the holder's pid when another
 * process holds it; FS_ERR_IO. */
fs_status fs_lock_folder(fs_ctx *ctx, const char *dir, int *fd_out);

/* Signals: SIGINT / SIGTERM set a process-wide flag (the only state outside
 * fs_ctx, since a handler can reach nothing else); long loops poll it and stop
 * with FS_ERR_ABORTED.  fs_signals_install cannot fail. */
void fs_signals_install(void);
/* The signal received (SIGINT, SIGTERM), or 0. */
int fs_interrupted(void);

/* Crash points, for the kill-and-resume tests: with FORGE_STREAM_CRASH_AT=
 * "POINT:N" in the environment, the N-th time any thread passes
 * fs_crashpoint(ctx, POINT) the process sends itself SIGKILL (POINT "*"
 * counts every point).  The counter is shared by the contexts that point at
 * the same fs_crash (the writer thread's copies the run's).  With
 * FORGE_STREAM_CRASH_REPORT set, fs_crash_report prints how many points
 * were passed, so a test can spread its kills over a whole run; with
 * FORGE_STREAM_CRASH_SIGNAL=S the point sends signal S (e.g. SIGTERM, to
 * test a clean stop) instead. */
typedef struct fs_crash {
    char point[48];
    long at;
    long passed;             /* every point passed (updated atomically) */
    long hits;               /* passes of the named point */
    int sig;                 /* FORGE_STREAM_CRASH_SIGNAL: send this instead of SIGKILL */
    char fail_point[48];     /* FORGE_STREAM_FAIL_AT=POINT:N: the N-th write at POINT */
    long fail_at, fail_hits;
    int fail_errno;          /* fails with this (FORGE_STREAM_FAIL_ERRNO, default EIO) */
} fs_crash;
/* Reads the environment into c; returns 1 when a crash hook is set (point
 * or report), 0 otherwise; FS_ERR_USAGE for a malformed value is reported
 * as -1 with the message in ctx. */
int fs_crash_from_env(fs_ctx *ctx, fs_crash *c);
void fs_crashpoint(const fs_ctx *ctx, const char *point);
/* I/O faults, for the same tests: with FORGE_STREAM_FAIL_AT="POINT:N" the
 * N-th write at POINT (tensor-write: output staging, shard-write: sealing a
 * shard, act-write: a boundary, spill-write: the spilled activations,
 * atomic-write: journal and small files) fails
 * with EIO (or FORGE_STREAM_FAIL_ERRNO); returns that errno, else 0. */
int fs_io_fault(const fs_ctx *ctx, const char *point);
/* Test builds: getenv(name) for the test-only switches FORGE_STREAM_TEST_*
 * (e.g. FORGE_STREAM_TEST_SOLVER: the pipeline's host solver; specifications.md
 * §4.6); NULL in a release build. */
const char *fs_test_env(const char *name);
void fs_crash_report(const fs_ctx *ctx);
/* Checked size arithmetic: return 0 and set *out, or return -1 on overflow. */
int fs_mul_size(size_t a, size_t b, size_t *out);
/* malloc of a*b bytes with overflow check; NULL on overflow or failure. */
void *fs_alloc2(size_t a, size_t b);

/* ---- dtypes ------------------------------------------------------------- */

typedef enum fs_dtype {
    FS_DT_INVALID = 0,
    FS_DT_F64, FS_DT_F32, FS_DT_F16, FS_DT_BF16, FS_DT_F8_E4M3, FS_DT_F8_E5M2,
    FS_DT_I64, FS_DT_I32, FS_DT_I16, FS_DT_I8,
    FS_DT_U64, FS_DT_U32, FS_DT_U16, FS_DT_U8, FS_DT_BOOL
} fs_dtype;

const char *fs_dtype_name(fs_dtype dt);          /* "F32", ...; "?" if invalid */
fs_dtype fs_dtype_from_name(const char *name);   /* FS_DT_INVALID if unknown */
size_t fs_dtype_size(fs_dtype dt);               /* bytes per element, 0 if invalid */

float fs_f16_to_f32(uint16_t h);
float fs_bf16_to_f32(uint16_t h);
float fs_f8e4m3_to_f32(uint8_t v);               /* OCP E4M3FN: NaN for S.1111.111 */
uint16_t fs_f32_to_bf16(float f);                /* round to nearest even */
uint16_t fs_f32_to_f16(float f);                 /* round to nearest even */

/* Decodes n elements of src (dtype dt, little-endian) into dst as float32 and
 * checks that every value is finite.  dt must be F32, F16, BF16 or F8_E4M3.
 * Errors: FS_ERR_FORMAT for another dtype, FS_ERR_NUMERIC naming `what` and
 * the first non-finite index. */
fs_status fs_decode_f32(fs_ctx *ctx, const char *what, fs_dtype dt,
                        const void *src, size_t n, float *dst);
/* FS_ERR_NUMERIC naming `what` and the index of the first NaN/Inf in x[n]. */
fs_status fs_check_finite(fs_ctx *ctx, const char *what, const float *x, size_t n);

/* ---- checksums (checksum.c) ------------------------------------------------ */

/* A checksum as the journal writes it: 16 lowercase hex digits.  fs_unhex64
 * returns -1 for anything else. */
void fs_hex64(char out[17], uint64_t v);
int fs_unhex64(const char *s, uint64_t *v);

/* XXH3-64 of bytes [off, off + n) of fd, read in pieces (n = UINT64_MAX: to
 * the end); *got: the bytes there were (fewer at the end of the file).
 * Errors: FS_ERR_IO naming path, FS_ERR_NOMEM. */
fs_status fs_fd_xxh3(fs_ctx *ctx, int fd, const char *path, uint64_t off, uint64_t n, uint64_t *sum, uint64_t *got);
/* Size and XXH3-64 of a whole file.  Errors: FS_ERR_IO naming it. */
fs_status fs_file_xxh3(fs_ctx *ctx, const char *path, uint64_t *size, uint64_t *sum);

#ifdef __cplusplus
}
#endif

#endif
