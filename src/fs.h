/* fs.h: the core of forge-stream: status codes, the one context struct, dtypes,
 * quantization options, qmeta4, grids, the GPTQ solver and the layer driver.
 *
 * Conventions (see STYLE.md of the project):
 *  1. Every function that can fail returns fs_status and takes the fs_ctx first;
 *     the detail of the failure is in ctx->errmsg (first error wins).
 *  2. Matrices are row-major float32 unless said otherwise.  A linear layer's
 *     weight W is [out, in]; its Hessian H = X^T X is [in, in]; quantization
 *     groups run along the input dimension of each row.
 *  3. No global mutable state: everything a run owns hangs off fs_ctx.
 */
#ifndef FS_H
#define FS_H

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
    FS_ERR_NODEV    /* the requested backend has no device */
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
 * naming the file, FS_ERR_NOMEM. */
fs_status fs_write_atomic(fs_ctx *ctx, const char *path, const void *buf, size_t n);

/* pread / pwrite of all n bytes at off, in calls of at most 1 GiB, EINTR
 * retried.  Reads: FS_ERR_IO naming path and offset, a premature end of
 * file included.  Writes: FS_ERR_IO naming path, with "no space left on
 * device while writing PATH (N bytes needed at offset O)" for ENOSPC (and
 * the like for EDQUOT and EFBIG); fault_point (may be NULL) is the
 * fs_io_fault point the writes pass. */
fs_status fs_pread_full(fs_ctx *ctx, int fd, const char *path, void *dst, uint64_t n, uint64_t off);
fs_status fs_pwrite_full(fs_ctx *ctx, int fd, const char *path, const void *src, uint64_t n, uint64_t off,
                         const char *fault_point);

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

/* ---- quantization options ------------------------------------------------ */

typedef enum fs_grid_kind { FS_GRID_ABSMAX = 0, FS_GRID_MSE = 1 } fs_grid_kind;

typedef struct fs_quant_opts {
    int bits;              /* 2, 3, 4 or 8 */
    int sym;               /* 1 = symmetric grid (zero fixed at 2^(bits-1)) */
    int64_t group_size;    /* multiple of 32, or -1 for one group per row */
    fs_grid_kind grid;     /* range (absmax) or MSE / L^p search */
    float shrink;          /* MSE: smallest candidate factor, in (0, 1] */
    int grid_n;            /* MSE: number of candidates, >= 1 */
    float norm;            /* MSE: exponent of the error, > 0 (2 = L2 path) */
    int act_order;         /* process columns by descending diag(H) */
    int static_groups;     /* group parameters from the original weights */
    int block;             /* GPTQ lazy-batch block width, >= 1 */
    double damp;           /* relative damping, added as damp*mean(diag H) */
    int rtn;               /* round to nearest only (no GPTQ) */
    int gptq_v1;           /* grids for the gptq format: F16 scales, asym zero >= 1 */
    int loss_f32;          /* losses for logs only (the quantize pipeline): estimated by
                              fs_quad_loss_est instead of exact in f64 */
} fs_quant_opts;

void fs_quant_opts_default(fs_quant_opts *q);
/* FS_ERR_USAGE naming the flag if an option is out of range. */
fs_status fs_quant_opts_check(fs_ctx *ctx, const fs_quant_opts *q);
/* Groups per row for `in` columns: ceil(in / G), 1 for G = -1 or G >= in. */
int64_t fs_ngroups(int64_t in, int64_t group_size);
/* The effective group width (in for G = -1 or G >= in). */
int64_t fs_group_width(int64_t in, int64_t group_size);

/* ---- qmeta4 ------------------------------------------------------------ */

/* One group's metadata as stored: 4 bytes, int16 LE log2(scale) in Q8.8, u8
 * zero, u8 flags (bit0 = symmetric). */
#define FS_QMETA_SYM 0x01

int16_t fs_q88_encode(float scale);     /* clamp(rint(log2(max(s,1e-20))*256)) */
float fs_q88_decode(int16_t code);      /* 2^(code/256) rounded to float */
void fs_qmeta_pack(uint8_t out[4], int16_t code, uint8_t zero, uint8_t flags);
void fs_qmeta_unpack(const uint8_t in[4], float *scale, float *zero);

/* ---- grids (CPU reference) ---------------------------------------------- */

/* Everything a grid search needs, built once per layer. */
typedef struct fs_grid_params {
    int bits, sym, mse;
    int gptq_v1;        /* scale used = F16(Q8.8 scale); asymmetric zero >= 1 */
    float maxq;
    float norm;
    int n;              /* candidates */
    float *p;           /* [n] shrink factors, owned */
} fs_grid_params;

fs_status fs_grid_params_init(fs_ctx *ctx, fs_grid_params *gp, const fs_quant_opts *q);
void fs_grid_params_free(fs_grid_params *gp);
/* Grid of one group x[n] (n >= 1): writes the 4 qmeta bytes and returns the
 * decoded scale and zero that quantization must use. Cannot fail. */
void fs_grid_group(const fs_grid_params *gp, const float *x, int64_t n,
                   uint8_t qmeta[4], float *scale, float *zero);
/* Grids of every row and group of W [rows, cols] with group width gw:
 * qmeta [rows, ceil(cols/gw), 4]. Cannot fail. */
void fs_grid_matrix(const fs_grid_params *gp, const float *W, int64_t rows,
                    int64_t cols, int64_t gw, uint8_t *qmeta);

/* The scale and zero that quantization uses for a stored qmeta entry: the
 * Q8.8 scale, rounded to F16 in gptq_v1 mode. Cannot fail. */
void fs_grid_unpack(const fs_grid_params *gp, const uint8_t qmeta[4], float *scale, float *zero);

/* q = clamp(rint(x/s + z), 0, maxq) */
float fs_quant1(float x, float s, float z, float maxq);

/* ---- the solver (backend-neutral description) ---------------------------- */

typedef struct fs_gptq_job {
    int64_t rows, cols;     /* out, in */
    float *W;               /* [rows, cols] in processing order; on return the dequant */
    const float *U;         /* [cols, cols] upper Cholesky factor of H^-1, processing order */
    uint8_t *codes;         /* [rows, cols] out: codes in processing order */
    uint8_t *qmeta;         /* [rows, ngroups, 4]: in (static) or out (dynamic) */
    int64_t ngroups;
    int64_t gw;             /* group width */
    const int32_t *gcol;    /* static groups: group of processing column k; NULL = dynamic */
    int block;
    const fs_grid_params *gp;
} fs_gptq_job;

/* CPU reference solver. Errors: FS_ERR_NOMEM. */
fs_status fs_gptq_cpu(fs_ctx *ctx, const fs_gptq_job *job);

/* ---- the layer driver ------------------------------------------------------ */

typedef struct fs_layer_result {
    int64_t rows, cols, ngroups;
    uint8_t *qweight;    /* [rows, cols] codes, original column order */
    uint8_t *qmeta;      /* [rows, ngroups, 4] */
    int32_t *perm;       /* [cols] with act-order, else NULL */
    float *dequant;      /* [rows, cols], original column order */
    double loss, rtn_loss;
    double seconds;      /* solver (inversion + grid + GPTQ) */
    double grid_s, chol_s, gptq_s;   /* where the time went: grids (RTN baseline and
                                        static groups), damped inversion, solve */
    double damp_used;
    int retries;
    int fallback_rtn;    /* every inversion failed: the result is RTN */
    int dead_cols;
} fs_layer_result;

/* Quantizes W [rows, cols] given H [cols, cols] (as given: undamped, dead
 * columns included; NULL allowed with q->rtn, the losses then being the
 * squared Frobenius norm of W - D).  H64, if not NULL, is the same Hessian accumulated in
 * double (built from raw inputs) and is what the reported losses use.  W and
 * H are not modified.  On success *res owns its arrays (fs_layer_result_free).
 * Errors: FS_ERR_NOMEM, FS_ERR_NUMERIC (non-finite input), backend errors. */
fs_status fs_layer_quantize(fs_ctx *ctx, const float *W, const float *H, const double *H64,
                            int64_t rows, int64_t cols, const fs_quant_opts *q,
                            fs_layer_result *res);
void fs_layer_result_free(fs_layer_result *res);
/* sum (W - D)^2 over n elements, in double. Cannot fail. */
double fs_frob_loss(const float *W, const float *D, size_t n);

/* trace((W - D) H (W - D)^T) accumulated in double, with H in float (H) or,
 * when H64 is not NULL, in double.  fs_quad_loss_f32: the same from an f32
 * GEMM (several times faster; for logs, not for the `layer` report).
 * D may be NULL (then D = 0: trace(W H W^T)).  Errors: FS_ERR_NOMEM. */
fs_status fs_quad_loss_f32(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss);
/* The estimate the pipeline logs: the f32 loss of FS_LOSS_EST_ROWS rows spread
 * evenly (row i * rows / S), scaled by rows / S; exact (in f32) when rows <=
 * FS_LOSS_EST_ROWS.  Three exact losses per linear (RTN, GPTQ, trace(W H W^T))
 * cost three times the GPTQ solve itself; this costs a few percent of it. */
#define FS_LOSS_EST_ROWS 128
fs_status fs_quad_loss_est(fs_ctx *ctx, const float *W, const float *D, const float *H,
                           int64_t rows, int64_t cols, double *loss);
fs_status fs_quad_loss(fs_ctx *ctx, const float *W, const float *D, const float *H,
                       const double *H64, int64_t rows, int64_t cols, double *loss);

#ifdef __cplusplus
}
#endif

#endif
