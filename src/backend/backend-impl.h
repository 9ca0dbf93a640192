/* backend-impl.h: what a backend implements.  One static const table of
 * function pointers per backend (cpu/backend-cpu.c, cpu/backend-cpu-async.c,
 * cuda/backend-cuda.cu) with `.slot = ` comments; src/backend/ dispatches.
 *
 * Invariants:
 *  1. The dispatcher (src/backend/backend.c, ops.c) checks every argument
 *     before a slot sees it: views inside their buffers, of this backend,
 *     with the dtypes and shapes the op takes (tensor.c).  A slot may assume
 *     them.
 *  2. The dispatcher owns the accounting: the budget, bytes in use and their
 *     peak (struct fs_backend), and the fs_buf / fs_event structs; a slot only
 *     fills and releases buf->data and e->context.
 *  3. Op slots take (ctx, be, q, const args *): the slot copies what it
 *     needs before it returns (an asynchronous backend keeps the args struct
 *     and a copy of the grid's candidate factors); buffers are read when the
 *     queue runs the op.
 *  4. NULL slots: an op slot left NULL is FS_ERR_NODEV ("op gemm is not
 *     implemented on cuda"); NULL memory, copy or event slots likewise
 *     (a backend without the v2 interface); the optional ones are marked.
 *  5. The v1 slots (hess_*, chol_inv, grid, gptq) take host pointers, run
 *     synchronously and return with every result in host memory.
 */
#ifndef FS_BACKEND_IMPL_H
#define FS_BACKEND_IMPL_H

#include <pthread.h>

#include "src/backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A buffer: `size` bytes at `data` in the backend's memory (host memory on
 * the CPU backends, device memory on CUDA). */
struct fs_buf {
    fs_backend *be;
    void *data;
    uint64_t size;
    char what[64];      /* as given to fs_be_alloc, for messages */
};

/* An event: the point (q, seq) of the backend's queue q, seq the number of
 * items given to q when it was recorded (cpu-async), or a backend's own
 * object in context (cuda). */
struct fs_event {
    fs_backend *be;
    int recorded;
    int q;
    uint64_t seq;
    void *context;
};

struct fs_backend_i {
    /* "cpu", "cpu-async", "cuda". */
    const char *(*name)(fs_backend *be);
    /* Lets the queues drain, then frees be->context and be itself (the
     * caller has freed its buffers and events). */
    void (*free)(fs_backend *be);

    /* ---- memory ---- */
    /* buf->size is set: allocate buf->data (>= 64-aligned).  FS_ERR_NOMEM. */
    fs_status (*buf_alloc)(fs_ctx *ctx, fs_backend *be, fs_buf *buf);
    /* Releases buf->data; the dispatcher has waited for the queues. */
    void (*buf_free)(fs_backend *be, fs_buf *buf);
    /* Host staging memory, 4096-aligned, bytes a multiple of 4096 (page-locked
     * on CUDA).  FS_ERR_NOMEM. */
    fs_status (*host_alloc)(fs_ctx *ctx, fs_backend *be, uint64_t bytes, void **p);
    void (*host_free)(fs_backend *be, void *p);

    /* ---- queues and events (backend.h invariants 1-3, 5) ---- */
    /* n bytes host src -> dst at off, on q (range checked). */
    fs_status (*upload)(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_buf *dst, uint64_t off,
                        const void *src, uint64_t n);
    /* n bytes of src at off -> host dst, on q (range checked). */
    fs_status (*download)(fs_ctx *ctx, fs_backend *be, fs_queue q, void *dst, fs_buf *src,
                          uint64_t off, uint64_t n);
    /* (optional) backend resources of a new event (e->context). */
    fs_status (*event_init)(fs_ctx *ctx, fs_backend *be, fs_event *e);
    /* (optional) releases them. */
    void (*event_fini)(fs_backend *be, fs_event *e);
    /* e = the current end of q (sets e->recorded, e->q, e->seq or its own). */
    fs_status (*record)(fs_ctx *ctx, fs_backend *be, fs_event *e, fs_queue q);
    /* q waits for e (recorded). */
    fs_status (*wait)(fs_ctx *ctx, fs_backend *be, fs_queue q, fs_event *e);
    /* The host waits for e (recorded); the sticky error of e's queue. */
    fs_status (*event_sync)(fs_ctx *ctx, fs_backend *be, fs_event *e);
    /* 1 when e (recorded) is reached. */
    int (*event_done)(fs_backend *be, fs_event *e);
    /* The host waits for q; its sticky error. */
    fs_status (*queue_sync)(fs_ctx *ctx, fs_backend *be, fs_queue q);
    /* (optional, test hook) hold != 0: q's worker takes no new item until
     * called again with 0, so a test can make the order of two queues
     * deterministic (cpu-async only). */
    void (*hold)(fs_backend *be, fs_queue q, int hold);

    /* ---- ops on buffers (backend.h): each enqueued on q ---- */
    fs_status (*fill)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_fill_args *a);
    fs_status (*gemm)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gemm_args *a);
    fs_status (*bias_add)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_bias_args *a);
    fs_status (*add)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_add_args *a);
    fs_status (*copy)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_copy_args *a);
    fs_status (*hess_acc)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_hess_acc_args *a);
    fs_status (*hess_finish)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_hess_finish_args *a);
    fs_status (*hess_wave)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_hess_wave_args *a);
    fs_status (*damp)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_damp_args *a);
    fs_status (*cholinv)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_cholinv_args *a);
    fs_status (*grid_op)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_grid_args *a);
    fs_status (*gptq_op)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gptq_args *a);
    fs_status (*rtn)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rtn_args *a);
    fs_status (*decode)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_decode_args *a);
    fs_status (*permute)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_permute_args *a);
    fs_status (*rmsnorm)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rmsnorm_args *a);
    fs_status (*rope)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_rope_args *a);
    fs_status (*attention)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_attn_args *a);
    fs_status (*attention_libm)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_attn_args *a);
    fs_status (*swiglu)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_swiglu_args *a);
    fs_status (*route)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_route_args *a);
    fs_status (*route_lists)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_lists_args *a);
    fs_status (*gather)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gather_args *a);
    fs_status (*scatter_add)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_scatter_args *a);
    fs_status (*gate_add)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_gate_add_args *a);
    fs_status (*loss)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_loss_args *a);
    fs_status (*pack)(fs_ctx *ctx, fs_backend *be, fs_queue q, const fs_pack_args *a);

    /* ---- v1 host-pointer slots (invariant 5) ---- */
    /* Starts an [in, in] Hessian sum; *state is owned by the backend. */
    fs_status (*hess_new)(fs_ctx *ctx, fs_backend *be, int64_t in, void **state);
    /* H += x^T x for x [rows, in] f32 (host; may be freed on return). */
    fs_status (*hess_add)(fs_ctx *ctx, fs_backend *be, void *state, const float *x,
                          int64_t rows);
    /* Writes the full symmetric sum to H [in, in] (host); the state stays valid. */
    fs_status (*hess_get)(fs_ctx *ctx, fs_backend *be, void *state, float *H);
    /* Frees a Hessian state. */
    void (*hess_free)(fs_backend *be, void *state);
    /* In place: A [n, n] SPD -> U upper, U^T U = A^-1, lower triangle zero.
     * FS_ERR_NUMERIC (failing column in the message) when not positive definite. */
    fs_status (*chol_inv)(fs_ctx *ctx, fs_backend *be, float *A, int64_t n);
    /* qmeta [rows, ceil(cols/gw), 4] of W [rows, cols] (grid semantics of fs_grid_group). */
    fs_status (*grid)(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                      int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta);
    /* The blocked GPTQ solve of fs_gptq_job (semantics of fs_gptq_cpu). */
    fs_status (*gptq)(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job);
    /* (optional) waits for the work of the v1 slots. */
    fs_status (*synchronize)(fs_ctx *ctx, fs_backend *be);
    /* (optional) fs_backend_device's line; absent: the CPU's (backend.c). */
    void (*describe)(fs_backend *be, char *buf, size_t n);
};

struct fs_backend {
    struct fs_backend_i iface;
    void *context;
    fs_backend_kind kind;
    /* memory accounting (the dispatcher's, under mu) */
    pthread_mutex_t mu;
    uint64_t budget, used, peak;
};

/* Constructors; each returns FS_OK and *out with iface and context set (the
 * dispatcher initialises the rest), or an error in ctx. */
fs_status fs_backend_cpu_new(fs_ctx *ctx, const fs_backend_opts *opts, fs_backend **out);
fs_status fs_backend_cpu_async_new(fs_ctx *ctx, const fs_backend_opts *opts, fs_backend **out);
#ifdef FS_HAVE_CUDA
fs_status fs_backend_cuda_new(fs_ctx *ctx, fs_backend **out);
int fs_cuda_device_count(void);
/* fs_backend_cuda_summary's line, for a build with CUDA. */
void fs_cuda_describe(char *buf, size_t n);
#endif

/* The start-up self-test (selftest.c): small ops on dev compared with the
 * same ops on ref (a cpu backend the caller opened: registry.c).  FS_OK, or
 * FS_ERR_CUDA naming the step that failed and how. */
fs_status fs_backend_selftest(fs_ctx *ctx, fs_backend *dev, fs_backend *ref);

/* Test hook: backend-impl.h's hold slot (cpu-async); a no-op elsewhere. */
void fs_be_hold(fs_backend *be, fs_queue q, int hold);

/* ---- checks the dispatcher and the backends share (src/backend/tensor.c) ---- */

/* FS_ERR_USAGE "OP: operand NAME: ..." unless t is a view of a buffer of be
 * with dtype in dtmask (bits 1 << fs_dtype), rows == rows (-1: any) and cols
 * == cols (-1: any), inside its buffer, off a multiple of the element size,
 * ld >= cols.  optional: an absent t (buf NULL) passes. */
fs_status fs_tensor_check(fs_ctx *ctx, fs_backend *be, const char *op, const char *name,
                          const fs_tensor *t, uint32_t dtmask, int64_t rows, int64_t cols, int optional);
/* The same for t contiguous (ld == cols). */
fs_status fs_tensor_check_dense(fs_ctx *ctx, fs_backend *be, const char *op, const char *name,
                                const fs_tensor *t, uint32_t dtmask, int64_t rows, int64_t cols,
                                int optional);
#define FS_DTM(dt) (1u << (dt))

#ifdef __cplusplus
}
#endif

#endif
