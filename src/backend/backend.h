/* backend.h: the one interface behind which every heavy operation runs (v2).
 *
 * A backend (fs_backend) owns memory (fs_buf: device memory on CUDA, host
 * memory on the CPU backends), three queues (upload, compute, download) and
 * events that order them; callers hold opaque handles and 2-D views
 * (fs_tensor) of buffers, never a pointer of the backend's memory.  The
 * backends: `cpu` (the reference: ops run inline on the calling thread),
 * `cpu-async` (each queue a worker thread, every buffer its own memory: the
 * orchestration a GPU runs, testable without one) and `cuda`.  The model is
 * ggml's backend interface (include/ggml-backend.h, src/ggml-backend-impl.h).
 *
 * Contract of the queues, buffers and ops (every backend keeps it; cpu-async
 * makes a breach visible as wrong bytes and a ThreadSanitizer report):
 *  1. Work given to one queue (uploads, downloads, ops, waits) runs in the
 *     order of the calls that gave it.  Queues run independently of each
 *     other: the only order between two queues is an event,
 *     fs_be_record(e, q1) then fs_be_wait(q2, e): the work given to q2 after
 *     the wait runs after the work given to q1 before the record.  A wait for
 *     an event never recorded is satisfied at once (as CUDA's); recording an
 *     event again moves it to the new point.
 *  2. Upload: the host memory given must not change, nor be freed, until the
 *     queue has run the upload; an event recorded after it (or a sync of the
 *     queue) says when.
 *  3. Download: the host memory is written when the queue reaches the
 *     download, and may be read only after fs_be_sync of that queue or
 *     fs_be_event_sync of an event recorded on it after the download.
 *  4. An op reads its input views and writes its outputs when its queue runs
 *     it, not when it is called; what the call passes besides buffers (the
 *     args struct, the views, small host parameters such as the grid's
 *     candidate factors) is copied by the call and may change at once.
 *  5. Errors.  A usage error (a view outside its buffer, a dtype or shape the
 *     op does not take, a buffer of another backend, a missing operand)
 *     returns FS_ERR_USAGE at once, naming the op and the operand, and
 *     queues nothing.  An op the backend does not implement returns
 *     FS_ERR_NODEV ("op gemm is not implemented on cuda").  An execution
 *     error (FS_ERR_NOMEM for an op's scratch, FS_ERR_FORMAT for data the op
 *     cannot take, such as an index out of range in a row list) is sticky on
 *     its queue, as CUDA's: the call
 *     that met it (the cpu backend runs inline) or the next call on that
 *     queue (op, upload, download, record, wait, sync) returns it, and every
 *     later call on the queue does too, until the backend is freed; the queue
 *     skips the rest of its work.  A queue that waits for an event of a failed
 *     queue fails with it.  fs_be_event_sync reports the error of the event's
 *     queue.
 *  6. Numeric outcomes that a caller decides on are data, written into
 *     buffers, not errors: the Cholesky status of each matrix, decode's first
 *     non-finite index, a zero point that the gptq format cannot store.
 *  7. A buffer must not be freed while work that uses it is queued;
 *     fs_be_free waits for every queue first (as cudaFree does), so freeing is
 *     safe but not free of cost.
 *  8. Calls on one backend may come from several host threads; the calls
 *     giving work to one queue are ordered as they return.  One event is used
 *     by one host thread at a time.
 *  9. Ops of the cpu backends are deterministic: the same inputs give the
 *     same bytes on cpu and cpu-async.  Across backends (cuda) results agree
 *     up to the summation order of the libraries (specifications.md §15).
 *
 * Views: fs_tensor {buf, off, dt, rows, cols, ld} is row r, column c at byte
 * off + (r * ld + c) * size(dt) of buf; ld (elements between row starts) >=
 * cols.  A vector is a [1, n] view.  An optional operand is absent when its
 * buf is NULL (fs_tensor_none()).  The constructors cannot fail; the ops check
 * the views they are given.
 *
 * The v1 slots at the end (Hessian state, chol_inv, grid, gptq on host
 * pointers, synchronous) are kept for today's callers until the pipeline
 * moves to the ops; on every backend they run on the calling thread.
 */
#ifndef FS_BACKEND_H
#define FS_BACKEND_H

#include "src/quant/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fs_backend fs_backend;
typedef struct fs_buf fs_buf;
typedef struct fs_event fs_event;

typedef enum fs_backend_kind {
    FS_BE_AUTO = 0,   /* cuda when this build has it and a device is present, else cpu */
    FS_BE_CPU,        /* the reference: ops inline on the calling thread */
    FS_BE_CPU_ASYNC,  /* queues are threads, buffers distinct memory (contract made visible) */
    FS_BE_CUDA
} fs_backend_kind;

/* The backend's own queues. */
typedef enum fs_queue {
    FS_QUEUE_UPLOAD = 0,
    FS_QUEUE_COMPUTE = 1,
    FS_QUEUE_DOWNLOAD = 2
} fs_queue;
#define FS_QUEUE_COUNT 3

typedef struct fs_backend_opts {
    uint64_t mem_budget;   /* bytes of fs_be_alloc buffers at once; 0 = unlimited */
    int threads;           /* OpenMP threads of the CPU backends' ops; 0 = the opener's
                              omp_get_max_threads() (cpu: the calling thread's setting) */
} fs_backend_opts;

/* Opens a backend (opts NULL: no budget, default threads).  AUTO picks CUDA
 * when this build has it and a device is present, else CPU.  CUDA without a
 * device (or without CUDA in the build) is FS_ERR_NODEV with a message saying
 * which.  Errors: FS_ERR_NODEV, FS_ERR_NOMEM, FS_ERR_CUDA. */
fs_status fs_backend_open(fs_ctx *ctx, fs_backend_kind kind, const fs_backend_opts *opts, fs_backend **out);
/* Waits for every queue, then frees the backend (its buffers and events
 * must have been freed before).  Accepts NULL. */
void fs_backend_free(fs_backend *be);
/* 1 when every op of the layer forward (src/forward/) is implemented. */
int fs_backend_runs_forward(fs_backend *be);
/* 1 when the queues run apart from the caller (cpu-async, cuda), 0 for cpu. */
int fs_backend_queues_async(fs_backend *be);
const char *fs_backend_name(fs_backend *be);        /* "cpu", "cpu-async", "cuda" */
const char *fs_queue_name(fs_queue q);              /* "upload", "compute", "download" */
/* The device whose arithmetic the output's bytes depend on, one line into
 * buf (n bytes), as the run journal records it: "cuda: NVIDIA H100 80GB HBM3
 * (sm_90), CUDA runtime 12.4, driver 12.4, cuBLAS 120403", or for the cpu
 * backends their name and BLAS: "cpu-async: OpenBLAS 0.3.21 ... (Haswell
 * kernels)".  Test builds: FORGE_STREAM_TEST_DEVICE replaces it (the resume
 * tests' other device).  Cannot fail. */
void fs_backend_device(fs_backend *be, char *buf, size_t n);
/* Number of CUDA devices visible to this build (0 without CUDA). Cannot fail. */
int fs_backend_cuda_devices(void);
/* One line for --version into buf (n bytes): "cuda: not in this build",
 * "cuda: no device (REASON)" or "cuda: N device(s), 0: NAME (sm_XY)".
 * Cannot fail. */
void fs_backend_cuda_summary(char *buf, size_t n);

/* ---- memory ------------------------------------------------------------------ */

/* A buffer of `bytes` bytes in the backend's memory (not initialised: cpu-async
 * fills it with 0xFF bytes, NaN in F32 and BF16, so a read before any write
 * shows), counted against the budget.  `what` names it in errors (copied).
 * Errors: FS_ERR_NOMEM when it does not fit, "cpu-async: hessian of
 * model.layers.3 (4194304 bytes) does not fit: 60129542144 bytes in use of a
 * budget of 64000000000", or when the allocation fails; FS_ERR_NODEV on a
 * backend without buffers. */
fs_status fs_be_alloc(fs_ctx *ctx, fs_backend *be, uint64_t bytes, const char *what, fs_buf **out);
/* Waits for every queue (invariant 7), then frees.  Accepts NULL. */
void fs_be_free(fs_backend *be, fs_buf *buf);
uint64_t fs_buf_size(const fs_buf *buf);
uint64_t fs_be_mem_used(fs_backend *be);     /* bytes of live buffers */
uint64_t fs_be_mem_peak(fs_backend *be);     /* most bytes live at once since open */
uint64_t fs_be_mem_budget(fs_backend *be);   /* 0 = unlimited */

/* Host staging memory for uploads and downloads: 4096-aligned (the io_uring
 * prefetcher reads into it with O_DIRECT), its size rounded up to 4096,
 * page-locked on CUDA.  Not counted against the budget (it is host memory:
 * the plan counts it under --host-mem).  Freed with fs_be_host_free (accepts
 * NULL) only when no upload or download using it is queued.  Errors:
 * FS_ERR_NOMEM naming the size. */
fs_status fs_be_host_alloc(fs_ctx *ctx, fs_backend *be, uint64_t bytes, void **p);
void fs_be_host_free(fs_backend *be, void *p);

/* ---- views ------------------------------------------------------------------- */

typedef struct fs_tensor {
    fs_buf *buf;        /* NULL: an absent optional operand */
    uint64_t off;       /* bytes from the buffer's start to element (0, 0) */
    fs_dtype dt;
    int64_t rows, cols;
    int64_t ld;         /* elements between the starts of consecutive rows, >= cols */
} fs_tensor;

/* [rows, cols] at byte offset off, rows contiguous (ld = cols). */
fs_tensor fs_tensor_2d(fs_buf *buf, uint64_t off, fs_dtype dt, int64_t rows, int64_t cols);
/* [rows, cols] with ld elements between row starts. */
fs_tensor fs_tensor_ld(fs_buf *buf, uint64_t off, fs_dtype dt, int64_t rows, int64_t cols, int64_t ld);
/* The whole buffer as a [1, size / size(dt)] vector. */
fs_tensor fs_tensor_vec(fs_buf *buf, fs_dtype dt);
/* Rows [r0, r0 + n) of t. */
fs_tensor fs_tensor_rows(fs_tensor t, int64_t r0, int64_t n);
/* Columns [c0, c0 + n) of t (same ld). */
fs_tensor fs_tensor_cols(fs_tensor t, int64_t c0, int64_t n);
/* A contiguous t (ld == cols) read as [rows, cols] of the same elements, e.g.
 * [n, heads * hd] as [n * heads, hd]; a view every op refuses (dtype
 * INVALID) when t is not contiguous or the element counts differ. */
fs_tensor fs_tensor_reshape(fs_tensor t, int64_t rows, int64_t cols);
/* The absent operand. */
fs_tensor fs_tensor_none(void);
/* Bytes from the view's first element to one past its last (0 if empty). */
uint64_t fs_tensor_span(const fs_tensor *t);

/* ---- queues and events --------------------------------------------------------- */

/* Copies n bytes from host memory src into dst at byte off, on queue q
 * (invariant 2).  Errors: FS_ERR_USAGE for a range outside dst; the queue's
 * sticky error. */
fs_status fs_be_upload(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_buf *dst, uint64_t off,
                       const void *src, uint64_t n);
/* Copies n bytes of src at byte off into host memory dst, on queue q
 * (invariant 3).  Errors: as fs_be_upload. */
fs_status fs_be_download(fs_ctx *ctx, fs_backend *be, fs_queue q, void *dst, fs_buf *src,
                         uint64_t off, uint64_t n);
/* An event (never recorded: waits on it are satisfied).  Errors: FS_ERR_NOMEM. */
fs_status fs_be_event_new(fs_ctx *ctx, fs_backend *be, fs_event **out);
void fs_be_event_free(fs_backend *be, fs_event *e);      /* accepts NULL */
/* e marks the point of queue q after everything given to it so far.
 * Errors: q's sticky error. */
fs_status fs_be_record(fs_ctx *ctx, fs_backend *be, fs_event *e, fs_queue q);
/* Queue q waits (the host does not) until e's point is reached: work given to
 * q afterwards runs after it.  Errors: q's sticky error. */
fs_status fs_be_wait(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_event *e);
/* The host waits until e's point is reached.  Errors: the sticky error of
 * e's queue. */
fs_status fs_be_event_sync(fs_ctx *ctx, fs_backend *be, fs_event *e);
/* 1 when e's point is reached (or e was never recorded), 0 otherwise; never
 * blocks.  Cannot fail. */
int fs_be_event_done(fs_backend *be, fs_event *e);
/* The host waits until queue q has run everything given to it.  Errors: q's
 * sticky error. */
fs_status fs_be_sync(fs_ctx *ctx, fs_backend *be, fs_queue q);
/* fs_be_sync of every queue; the first sticky error is returned. */
fs_status fs_be_sync_all(fs_ctx *ctx, fs_backend *be);

/* ---- ops ---------------------------------------------------------------------------
 *
 * Each op is fs_op_<name>(ctx, be, q, ...): checked (invariant 5), then given
 * to queue q.  Dtypes are F32 unless said; "I32 [1, n]" is an int32 vector.
 * Outputs may not overlap inputs unless said ("in place", "may alias"). */

/* Every element of t = value (converted to t's dtype: F32, F64, BF16, I32,
 * I64, U8). */
typedef struct fs_fill_args { fs_tensor t; double value; } fs_fill_args;
fs_status fs_op_fill(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor t, double value);

/* C [m, n] = alpha * A [m, k] op(B) + beta * C, op(B) = B [k, n] or, with
 * trans_b, B^T for B [n, k].  A and B F32 or BF16 (BF16 inputs are products
 * in F32 with F32 accumulation), C F32; beta 0 does not read C.  Strided
 * views (ld) on every operand. */
typedef struct fs_gemm_args {
    fs_tensor A, B, C;
    int trans_b;
    float alpha, beta;
} fs_gemm_args;
fs_status fs_op_gemm(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gemm_args *a);

/* y [n, c] += b [1, c] on every row. */
typedef struct fs_bias_args { fs_tensor y, b; } fs_bias_args;
fs_status fs_op_bias_add(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor y, fs_tensor b);

/* y += x, same shape (the residual add). */
typedef struct fs_add_args { fs_tensor y, x; } fs_add_args;
fs_status fs_op_add(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor y, fs_tensor x);

/* dst = src, same shape, F32 or BF16 each (F32 -> BF16 rounds to nearest
 * even); strided views, so a shared k_pe [n, rope] can be copied into every
 * head's columns of K, one column view per head. */
typedef struct fs_copy_args { fs_tensor dst, src; } fs_copy_args;
fs_status fs_op_copy(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor dst, fs_tensor src);

/* H [in, in] upper triangle += X^T X for X [rows, in] (ssyrk: the lower
 * triangle is neither read nor written).  One call is one ssyrk of all of
 * X's rows, so a caller that gives the chunks of today gets today's bytes. */
typedef struct fs_hess_acc_args { fs_tensor H, X; } fs_hess_acc_args;
fs_status fs_op_hess_acc(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor H, fs_tensor X);
/* H [count * in, in]: count stacked [in, in] sums; each gets its lower
 * triangle from its upper (the sum stays valid for more accumulation). */
typedef struct fs_hess_finish_args { fs_tensor H; int64_t count; } fs_hess_finish_args;
fs_status fs_op_hess_finish(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor H, int64_t count);
/* A wave of expert Hessians: for each expert e in [e0, e0 + ne), the rows
 * rows[offs[e] .. offs[e+1]) of X [n, in] (I32 row lists, as
 * fs_op_route_lists makes them) are gathered in list order and H block e - e0
 * of H [ne * in, in] gets its upper triangle += Xe^T Xe in one ssyrk (none
 * when the expert has no rows).  offs I32 [1, >= e0 + ne + 1], rows I32
 * [1, >= offs[e0 + ne]].  Execution error (FS_ERR_FORMAT): a row index or offset out of
 * range. */
typedef struct fs_hess_wave_args {
    fs_tensor X, offs, rows, H;
    int64_t e0, ne;
} fs_hess_wave_args;
fs_status fs_op_hess_wave(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_hess_wave_args *a);

/* dst = src + damp * mean(diag src) * I for each of count stacked [n, n]
 * matrices (src, dst [count * n, n]; may be the same view); the mean is summed
 * in double and the added value rounded to float once, as hessian/ did. */
typedef struct fs_damp_args { fs_tensor src, dst; int64_t count; double damp; } fs_damp_args;
fs_status fs_op_damp(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_damp_args *a);

/* In place on A [count * n, n] (contiguous): each SPD matrix becomes U, upper,
 * U^T U = A^-1 (lower triangle zeroed), by potrf + trtri of the reversed
 * matrix (specifications.md §4.2).  status I32 [1, count]: 0, or the failing
 * column of A + 1 (not positive definite, singular, or a non-finite factor);
 * a failed matrix is left unspecified.  count = 1 is the single inverse. */
typedef struct fs_cholinv_args { fs_tensor A, status; int64_t count; } fs_cholinv_args;
fs_status fs_op_cholinv(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_cholinv_args *a);

/* qmeta U8 [rows, ceil(cols / gw) * 4] of W [rows, cols] (specifications.md
 * §3, fs_grid_group per row and group). */
typedef struct fs_grid_args {
    fs_tensor W, qmeta;
    int64_t gw;
    const fs_grid_params *gp;
} fs_grid_args;
fs_status fs_op_grid(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_grid_args *a);

/* The blocked GPTQ solve of quant.h's fs_gptq_job on buffers, every view
 * contiguous: W [rows, cols] in processing order (in; out: the dequant), U
 * [cols, cols], codes U8 [rows, cols] out, qmeta U8 [rows, ng * 4] (in with
 * static groups, out otherwise), gcol I32 [1, cols] (static groups: group of
 * processing column k; absent = dynamic groups). */
typedef struct fs_gptq_args {
    fs_tensor W, U, codes, qmeta, gcol;
    int64_t gw;
    int block;
    const fs_grid_params *gp;
} fs_gptq_args;
fs_status fs_op_gptq(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gptq_args *a);

/* Round to nearest on the grids qmeta U8 [rows, ng * 4] (in, e.g. from
 * fs_op_grid): codes U8 [rows, cols] and the dequant D [rows, cols] (optional)
 * of W [rows, cols]. */
typedef struct fs_rtn_args {
    fs_tensor W, qmeta, codes, D;
    int64_t gw;
    const fs_grid_params *gp;
} fs_rtn_args;
fs_status fs_op_rtn(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rtn_args *a);

/* dst [rows, cols] F32 = decode(src [rows, cols]) for src F32, F16, BF16 or
 * F8_E4M3; F8_E4M3 with scale (F32 [ceil(rows / b0), ceil(cols / b1)]) is
 * block-scaled: (float)((double)e4m3 * (double)scale[r / b0][c / b1])
 * (ARCHITECTURES.md §6).  status I64 [1, 1]: 0 when every value is finite,
 * else the flat index r * cols + c of the first NaN/Inf + 1. */
typedef struct fs_decode_args {
    fs_tensor src, scale, dst, status;
    int64_t b0, b1;
} fs_decode_args;
fs_status fs_op_decode(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_decode_args *a);

/* Column permutation (act-order), perm I32 [1, cols], src and dst [rows, cols]
 * of the same dtype (F32, U8, I32): dst[i][k] = src[i'][perm[k]] with i' =
 * perm[i] when rows_too (a square matrix, H -> P^T H P) else i; inverse:
 * dst[i'][perm[k]] = src[i][k].  Execution error (FS_ERR_FORMAT): an index out of range. */
typedef struct fs_permute_args {
    fs_tensor src, dst, perm;
    int rows_too, inverse;
} fs_permute_args;
fs_status fs_op_permute(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_permute_args *a);

/* out [n, d] = w [1, d] * x / sqrt(mean(x^2) + eps) per row, sums in F32 in
 * order (ARCHITECTURES.md §2.1); out may be x itself.  Per head: x, out as
 * [n * heads, hd] views (fs_tensor_reshape). */
typedef struct fs_rmsnorm_args { fs_tensor x, w, out; float eps; } fs_rmsnorm_args;
fs_status fs_op_rmsnorm(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rmsnorm_args *a);

/* RoPE in place on x [n, >= (heads - 1) * hs + c0 + d]: in every head h
 * (columns h * hs ...) the d columns from c0 are rotated at position row % T,
 * pair i = (c0 + i, c0 + i + d/2) (half-split) or (c0 + 2i, c0 + 2i + 1)
 * (interleaved), angle pos * inv_freq[i] in double, cos and sin rounded to
 * float and times attn_factor (ARCHITECTURES.md §2.3-§2.4, §5.4).
 * inv_freq [1, d / 2] after rope scaling. */
typedef struct fs_rope_args {
    fs_tensor x, inv_freq;
    int64_t heads, hs, c0, d, T;
    int interleaved;
    float attn_factor;
} fs_rope_args;
fs_status fs_op_rope(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rope_args *a);

/* Causal attention of nseq sequences of T tokens (rows s * T + t): query head
 * h (nh heads) reads key/value head h / (nh / nkv); q head h is columns
 * [h * q_hs, + dqk) of q [n, ...], k's [h * k_hs, + dqk), v's [h * v_hs, +
 * dv), the output [h * o_hs, + dv) of out; scores (q . k) * scale, key j
 * allowed when j <= i and (window == 0 or j > i - window), softmax in F32.
 * MLA uses it with dqk = nope + rope, dv = v_head_dim, k assembled by
 * fs_op_copy.  qwen3's q/k norms and the biases are separate ops. */
typedef struct fs_attn_args {
    fs_tensor q, k, v, out;
    int64_t nseq, T, nh, nkv, dqk, dv;
    int64_t q_hs, k_hs, v_hs, o_hs;
    float scale;
    int64_t window;
} fs_attn_args;
fs_status fs_op_attention(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_attn_args *a);
/* The same with the softmax on libm's expf and one running sum (the bytes of
 * the DeepSeek MLA path) instead of the vectorised exp and eight partial sums;
 * both deterministic, they differ in the last bits. */
fs_status fs_op_attention_libm(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_attn_args *a);

/* out [n, I] = silu(g) * u; out may be g or u itself. */
typedef struct fs_swiglu_args { fs_tensor g, u, out; } fs_swiglu_args;
fs_status fs_op_swiglu(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor g, fs_tensor u, fs_tensor out);

/* Routers (src/models/moe.h's fs_moe_route and fs_moe_route_ex, exactly):
 *  SOFTMAX (mixtral, qwen*_moe): softmax of the logits in F32, top-k by
 *    probability, weights the probabilities, divided by their sum when
 *    norm_topk;
 *  DS_SOFTMAX (deepseek_v2): softmax; with n_group > 1 groups scored by their
 *    max (group_max) or the sum of their two best, topk_group kept; top-k;
 *    weights the probabilities * rsf;
 *  DS_SIGMOID (deepseek_v3): sigmoid, choice by sigmoid + bias, groups scored
 *    by the sum of their two best, weights the unbiased sigmoid, divided by
 *    (sum + 1e-20) when norm_topk, * rsf.
 * Ties go to the lower index; idx in descending score. */
typedef enum fs_route_kind { FS_ROUTE_SOFTMAX = 0, FS_ROUTE_DS_SOFTMAX = 1, FS_ROUTE_DS_SIGMOID = 2 } fs_route_kind;
typedef struct fs_route_cfg {
    int kind;                  /* fs_route_kind */
    int64_t E, topk;
    int norm_topk;
    int64_t n_group, topk_group;   /* 1 / 1: no group limit */
    int group_max;
    float rsf;                 /* routed_scaling_factor (DeepSeek) */
} fs_route_cfg;
/* logits [n, E] in; bias [1, E] (DS_SIGMOID's e_score_correction_bias,
 * optional); idx I32 [n, topk] and wt [n, topk] out. */
typedef struct fs_route_args {
    fs_tensor logits, bias, idx, wt;
    fs_route_cfg cfg;
} fs_route_args;
fs_status fs_op_route(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_route_args *a);

/* The per-expert row lists of a routing: from idx I32 [n, k] (and wt [n, k],
 * optional), offs I32 [1, E + 1] (expert e's entries are [offs[e],
 * offs[e+1])), rows I32 [1, >= n * k] (token indices, by expert, ascending
 * within an expert) and rw [1, >= n * k] (their weights; optional).
 * Execution error (FS_ERR_FORMAT): an expert index outside [0, E). */
typedef struct fs_lists_args {
    fs_tensor idx, wt, offs, rows, rw;
    int64_t E;
} fs_lists_args;
fs_status fs_op_route_lists(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_lists_args *a);

/* dst [m, c] row r = src [n, c] row rows[r], rows I32 [1, m]; F32 or BF16
 * (dst and src alike).  Execution error (FS_ERR_FORMAT): a row outside [0, n). */
typedef struct fs_gather_args { fs_tensor dst, src, rows; } fs_gather_args;
fs_status fs_op_gather(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_tensor dst, fs_tensor src, fs_tensor rows);

/* dst row rows[r] += w[r] * src row r, for r = 0 .. m-1 in order (so the
 * result is deterministic when rows repeat); src [m, c], rows I32 [1, m], w
 * [1, m] (optional: weight 1).  Execution error (FS_ERR_FORMAT): a row outside dst. */
typedef struct fs_scatter_args { fs_tensor dst, src, rows, w; } fs_scatter_args;
fs_status fs_op_scatter_add(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_scatter_args *a);

/* y [n, c] += sigmoid(x [n, d] . g [1, d]) * src [n, c] per row: the dot summed
 * in F32 in column order, the sigmoid 1 / (1 + expf(-z)) (qwen2_moe's
 * shared_expert_gate on its shared expert's output). */
typedef struct fs_gate_add_args { fs_tensor y, src, x, g; } fs_gate_add_args;
fs_status fs_op_gate_add(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gate_add_args *a);

/* The layer loss trace((W - D) H (W - D)^T) into out F64 [1, 1] (quant.h):
 *  EXACT: accumulated in double, H F32 or F64 (the Hessian of raw inputs);
 *  F32: one f32 GEMM per slab of rows (fs_quad_loss_f32);
 *  EST: the 128-row estimate (fs_quad_loss_est).
 * W, D [rows, cols] (D optional: 0), H [cols, cols] (F32 for F32 and EST). */
typedef enum fs_loss_mode { FS_LOSS_EXACT = 0, FS_LOSS_F32 = 1, FS_LOSS_EST = 2 } fs_loss_mode;
typedef struct fs_loss_args { fs_tensor W, D, H, out; int mode; } fs_loss_args;
fs_status fs_op_loss(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_loss_args *a);

/* Packing of codes for an output format (src/formats/pack.h), every view
 * contiguous:
 *  FORGE: src codes U8 [out, in] -> dst U8 [out, ceil(in * bits / 8)];
 *  GPTQ_QWEIGHT: src codes U8 [out, in] -> dst I32 [ceil(in * bits / 32), out];
 *  GPTQ_META: src qmeta U8 [out, ng * 4] -> dst qzeros I32 [ng, ceil(out *
 *    bits / 32)] (zero - 1) and dst2 scales F16 [ng, out] (the F16 of the
 *    Q8.8 scale); status I64 [1, 1]: 0, or the flat index o * ng + g of the
 *    first zero point 0 (which v1 cannot store) + 1, qzeros then unspecified. */
typedef enum fs_pack_kind { FS_PACK_FORGE = 0, FS_PACK_GPTQ_QWEIGHT = 1, FS_PACK_GPTQ_META = 2 } fs_pack_kind;
typedef struct fs_pack_args {
    int kind;              /* fs_pack_kind */
    int bits;
    fs_tensor src, dst, dst2, status;
} fs_pack_args;
fs_status fs_op_pack(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_pack_args *a);

/* ---- v1: host-pointer slots, synchronous --------------------------------------- */

/* Hessian accumulation: H = sum over chunks of X^T X, f32. */
fs_status fs_be_hess_new(fs_ctx *ctx, fs_backend *be, int64_t in, void **state);
fs_status fs_be_hess_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x,
                         int64_t rows);
fs_status fs_be_hess_get(fs_ctx *ctx, fs_backend *be, void *state, float *H);
void fs_be_hess_free(fs_backend *be, void *state);  /* accepts NULL state */

/* A [n, n] symmetric positive definite in, upper U with U^T U = A^-1 out (the
 * lower triangle zeroed).  FS_ERR_NUMERIC when A is not positive definite. */
fs_status fs_be_chol_inv(fs_ctx *ctx, fs_backend *be, float *A, int64_t n);
/* qmeta [rows, ceil(cols/gw), 4] of W [rows, cols]. */
fs_status fs_be_grid(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                     int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta);
/* The blocked GPTQ solve described by job (quant.h). */
fs_status fs_be_gptq(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job);

#ifdef __cplusplus
}
#endif

#endif
