/* cpu.h: the CPU implementations, the reference every backend is checked
 * against.  Two layers:
 *  - kernels on host pointers (BLAS/LAPACK wrappers, the attention, norm,
 *    rope, router and loss cores, the v1 slots), which today's callers
 *    (src/models, src/quant, hessian/, src/cli) use directly: nothing outside
 *    cpu/ and cuda/ calls BLAS or LAPACK;
 *  - the op implementations fs_cpu_op_<name>(ctx, args), one per op slot of
 *    backend-impl.h, on views of host-memory buffers (buf->data is host
 *    memory on both CPU backends), which the cpu backend runs inline and the
 *    cpu-async backend on its queue threads.
 *
 * Invariants:
 *  1. An op implementation reads and writes only through the views of its
 *     args (and scratch it allocates and frees itself); it never keeps a
 *     pointer past its return.  Its failure (FS_ERR_NOMEM for scratch, an
 *     index out of range in a row list) is reported in ctx and becomes the
 *     queue's sticky error.
 *  2. The arguments have been checked by src/backend/ops.c (shapes, dtypes,
 *     bounds); only data-dependent conditions are checked here.
 *  3. Every kernel is deterministic for a given OpenMP/BLAS thread count:
 *     reductions run in a fixed order; work split over threads never changes
 *     an element's operations.  Legacy callers and the ops share one kernel,
 *     so both give the same bytes.
 *  4. BLAS takes int sizes: the callers' dimensions fit (as before v2).
 */
#ifndef FS_CPU_H
#define FS_CPU_H

#include "src/backend/backend-impl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- views of host-memory buffers ------------------------------------------------ */

/* Element (r, c) of t (a view of a CPU backend's buffer). */
static inline void *fs_cpu_at(const fs_tensor *t, int64_t r, int64_t c)
{
    return (char *)t->buf->data + t->off + ((uint64_t)r * (uint64_t)t->ld + (uint64_t)c) * fs_dtype_size(t->dt);
}
#define FS_CPU_F32(t) ((float *)fs_cpu_at(&(t), 0, 0))

/* Host staging of both CPU backends (backend-cpu.c): 4096-aligned plain memory. */
fs_status fs_cpu_host_alloc(fs_ctx *ctx, fs_backend *be, uint64_t bytes, void **p);
void fs_cpu_host_free(fs_backend *be, void *p);

/* ---- BLAS wrappers (gemm.c, hessian.c) --------------------------------------------- */

/* C [m, n] = alpha * A [m, k] op(B) + beta * C, row-major, op(B) = B [k, n] or
 * B^T for B [n, k] (trans_b); sgemm.  m, n or k may be 0. */
void fs_cpu_sgemm(int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *A, int64_t lda,
                  const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* The same in double (dgemm). */
void fs_cpu_dgemm(int trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double *A, int64_t lda,
                  const double *B, int64_t ldb, double beta, double *C, int64_t ldc);
/* H [in, in] (ld ldh) upper triangle += X^T X, X [rows, in] (ld ldx): ssyrk. */
void fs_cpu_ssyrk_upper(float *H, int64_t ldh, int64_t in, const float *X, int64_t ldx, int64_t rows);
/* The same in double (dsyrk), contiguous. */
void fs_cpu_dsyrk_upper(double *H, int64_t in, const double *X, int64_t rows);
/* OpenBLAS's thread count (process-wide).  Cannot fail. */
int fs_cpu_blas_threads(void);
void fs_cpu_set_blas_threads(int n);

/* ---- v1 slots (hessian.c, cholinv.c, gptq.c) ------------------------------------------- */

fs_status fs_hess_cpu_new(fs_ctx *ctx, fs_backend *be, int64_t in, void **state);
fs_status fs_hess_cpu_add(fs_ctx *ctx, fs_backend *be, void *state, const float *x, int64_t rows);
fs_status fs_hess_cpu_get(fs_ctx *ctx, fs_backend *be, void *state, float *H);
void fs_hess_cpu_free(fs_backend *be, void *state);
/* A [n, n] SPD -> U in place (backend-impl.h's chol_inv).  FS_ERR_NUMERIC
 * naming the failing column. */
fs_status fs_chol_inv_cpu(fs_ctx *ctx, fs_backend *be, float *A, int64_t n);
/* The CPU solver of quant.h's fs_gptq_job (cpu/gptq.c).  Errors: FS_ERR_NOMEM. */
fs_status fs_gptq_cpu(fs_ctx *ctx, const fs_gptq_job *job);

/* ---- kernels on host pointers -------------------------------------------------------- */

/* out[r] = w * x[r] / sqrt(mean(x[r]^2) + eps) for n rows of d (norm.c);
 * out may be x (same ld). */
void fs_cpu_rmsnorm(const float *x, int64_t ldx, const float *w, int64_t n, int64_t d, float eps, float *out,
                    int64_t ldo);
/* RoPE in place on n rows of x (ld ldx), fs_op_rope's semantics (rope.c). */
void fs_cpu_rope(float *x, int64_t ldx, int64_t n, int64_t heads, int64_t hs, int64_t c0, int64_t d,
                 int interleaved, const float *inv_freq, float attn_factor, int64_t T);
/* out = silu(g) * u elementwise over n rows of inter (elementwise.c); out may be g or u. */
void fs_cpu_swiglu(const float *g, int64_t ldg, const float *u, int64_t ldu, int64_t n, int64_t inter, float *out,
                   int64_t ldo);

/* Causal attention (attention.c), fs_op_attention's semantics, plus what
 * mla.c's path of today needs to keep its bytes: kpe (optional) makes the key
 * of every head [its k columns (dqk - dpe) ; the shared kpe row (dpe)],
 * assembled contiguously per head as mla.c did, and libm_exp takes the
 * softmax with expf and one running sum (mla.c) instead of the vectorised
 * exponential and eight partial sums (forward.c).  fs_op_attention_libm
 * takes libm_exp, no op kpe (MLA's key is assembled by fs_op_copy). */
typedef struct fs_cpu_attn {
    int64_t nseq, T, nh, nkv, dqk, dv;
    const float *q; int64_t ldq, q_hs;
    const float *k; int64_t ldk, k_hs;
    const float *kpe; int64_t ldpe, dpe;
    const float *v; int64_t ldv, v_hs;
    float *out; int64_t ldo, o_hs;
    float scale;
    int64_t window;
    int libm_exp;
} fs_cpu_attn;
/* Errors: FS_ERR_NOMEM for the per-thread scores. */
fs_status fs_cpu_attention(fs_ctx *ctx, const fs_cpu_attn *j);

/* Routing of n tokens from their logits (route.c): idx [n, topk] (ld ldi),
 * wt [n, topk] (ld ldw), fs_op_route's semantics; bias [E] or NULL.  The
 * logits are not modified.  Errors: FS_ERR_NOMEM. */
fs_status fs_cpu_route(fs_ctx *ctx, const fs_route_cfg *c, const float *logits, int64_t ldl, int64_t n,
                       const float *bias, int32_t *idx, int64_t ldi, float *wt, int64_t ldw);

/* Losses (loss.c), quant.h's fs_quad_loss_f32 / _est / fs_quad_loss on
 * strided rows: W, D (ld ldw, ldd; D NULL = 0), H [cols, cols] (ld ldh; F32
 * H, or H64 when not NULL).  Errors: FS_ERR_NOMEM. */
fs_status fs_cpu_loss_f32(fs_ctx *ctx, const float *W, int64_t ldw, const float *D, int64_t ldd, const float *H,
                          int64_t ldh, int64_t rows, int64_t cols, double *loss);
fs_status fs_cpu_loss_est(fs_ctx *ctx, const float *W, int64_t ldw, const float *D, int64_t ldd, const float *H,
                          int64_t ldh, int64_t rows, int64_t cols, double *loss);
fs_status fs_cpu_loss_exact(fs_ctx *ctx, const float *W, int64_t ldw, const float *D, int64_t ldd, const float *H,
                            const double *H64, int64_t ldh, int64_t rows, int64_t cols, double *loss);

/* The Gram matrices of the group-scale least squares (refine.c, for quant.h's
 * fs_refine_scales): slab of nr rows, H [cols, cols], W [nr, cols] (the caller
 * passes the residual W - dequant) and nbpg
 * basis planes Phi [nbpg][nr, cols], every basis value of column d belonging
 * to group d / gw.  Out: K [nr][nb, nb], b [nr][nb], c [nr] (w^T H w) with
 * nb = ngroups * nbpg and basis j = g * nbpg + t; Y [nr, cols] is scratch.
 * Cannot fail. */
/* out[r] = e_r^T H e_r for the rows of E [nr, cols] (refine.c); Y [nr, cols]
 * scratch.  Cannot fail. */
void fs_cpu_row_losses(const double *Hd, const double *Ed, int64_t nr, int64_t cols, double *Y,
                       double *out);
void fs_cpu_group_gram(const double *Hd, const double *Wd, const double *Phi, int nbpg,
                       int64_t nr, int64_t cols, int64_t gw, double *Y, double *K, double *b,
                       double *c);

/* ---- op implementations (one per slot; invariants 1-2) ------------------------------- */

fs_status fs_cpu_op_fill(fs_ctx *ctx, const fs_fill_args *a);           /* elementwise.c */
fs_status fs_cpu_op_gemm(fs_ctx *ctx, const fs_gemm_args *a);           /* gemm.c */
fs_status fs_cpu_op_bias_add(fs_ctx *ctx, const fs_bias_args *a);       /* elementwise.c */
fs_status fs_cpu_op_add(fs_ctx *ctx, const fs_add_args *a);             /* elementwise.c */
fs_status fs_cpu_op_copy(fs_ctx *ctx, const fs_copy_args *a);           /* elementwise.c */
fs_status fs_cpu_op_hess_acc(fs_ctx *ctx, const fs_hess_acc_args *a);   /* hessian.c */
fs_status fs_cpu_op_hess_finish(fs_ctx *ctx, const fs_hess_finish_args *a);
fs_status fs_cpu_op_hess_wave(fs_ctx *ctx, const fs_hess_wave_args *a);
fs_status fs_cpu_op_damp(fs_ctx *ctx, const fs_damp_args *a);
fs_status fs_cpu_op_cholinv(fs_ctx *ctx, const fs_cholinv_args *a);     /* cholinv.c */
fs_status fs_cpu_op_grid(fs_ctx *ctx, const fs_grid_args *a);           /* grid.c */
fs_status fs_cpu_op_gptq(fs_ctx *ctx, const fs_gptq_args *a);           /* gptq.c */
fs_status fs_cpu_op_rtn(fs_ctx *ctx, const fs_rtn_args *a);             /* grid.c */
fs_status fs_cpu_op_decode(fs_ctx *ctx, const fs_decode_args *a);       /* decode.c */
fs_status fs_cpu_op_permute(fs_ctx *ctx, const fs_permute_args *a);     /* permute.c */
fs_status fs_cpu_op_rmsnorm(fs_ctx *ctx, const fs_rmsnorm_args *a);     /* norm.c */
fs_status fs_cpu_op_rope(fs_ctx *ctx, const fs_rope_args *a);           /* rope.c */
fs_status fs_cpu_op_attention(fs_ctx *ctx, const fs_attn_args *a);      /* attention.c */
fs_status fs_cpu_op_attention_libm(fs_ctx *ctx, const fs_attn_args *a);
fs_status fs_cpu_op_swiglu(fs_ctx *ctx, const fs_swiglu_args *a);       /* elementwise.c */
fs_status fs_cpu_op_route(fs_ctx *ctx, const fs_route_args *a);         /* route.c */
fs_status fs_cpu_op_route_lists(fs_ctx *ctx, const fs_lists_args *a);   /* route.c */
fs_status fs_cpu_op_gather(fs_ctx *ctx, const fs_gather_args *a);       /* gather.c */
fs_status fs_cpu_op_scatter_add(fs_ctx *ctx, const fs_scatter_args *a); /* gather.c */
fs_status fs_cpu_op_gate_add(fs_ctx *ctx, const fs_gate_add_args *a);   /* elementwise.c */
fs_status fs_cpu_op_loss(fs_ctx *ctx, const fs_loss_args *a);           /* loss.c */
fs_status fs_cpu_op_pack(fs_ctx *ctx, const fs_pack_args *a);           /* pack.c */

/* Every op as X(slot, args type, implementation), in the order of
 * backend-impl.h's op slots, for the backends to generate their slots from
 * (the tables themselves list each slot by name). */
#define FS_CPU_OPS(X)                                           \
    X(fill, fs_fill_args, fs_cpu_op_fill)                       \
    X(gemm, fs_gemm_args, fs_cpu_op_gemm)                       \
    X(bias_add, fs_bias_args, fs_cpu_op_bias_add)               \
    X(add, fs_add_args, fs_cpu_op_add)                          \
    X(copy, fs_copy_args, fs_cpu_op_copy)                       \
    X(hess_acc, fs_hess_acc_args, fs_cpu_op_hess_acc)           \
    X(hess_finish, fs_hess_finish_args, fs_cpu_op_hess_finish)  \
    X(hess_wave, fs_hess_wave_args, fs_cpu_op_hess_wave)        \
    X(damp, fs_damp_args, fs_cpu_op_damp)                       \
    X(cholinv, fs_cholinv_args, fs_cpu_op_cholinv)              \
    X(grid_op, fs_grid_args, fs_cpu_op_grid)                    \
    X(gptq_op, fs_gptq_args, fs_cpu_op_gptq)                    \
    X(rtn, fs_rtn_args, fs_cpu_op_rtn)                          \
    X(decode, fs_decode_args, fs_cpu_op_decode)                 \
    X(permute, fs_permute_args, fs_cpu_op_permute)              \
    X(rmsnorm, fs_rmsnorm_args, fs_cpu_op_rmsnorm)              \
    X(rope, fs_rope_args, fs_cpu_op_rope)                       \
    X(attention, fs_attn_args, fs_cpu_op_attention)             \
    X(attention_libm, fs_attn_args, fs_cpu_op_attention_libm)   \
    X(swiglu, fs_swiglu_args, fs_cpu_op_swiglu)                 \
    X(route, fs_route_args, fs_cpu_op_route)                    \
    X(route_lists, fs_lists_args, fs_cpu_op_route_lists)        \
    X(gather, fs_gather_args, fs_cpu_op_gather)                 \
    X(scatter_add, fs_scatter_args, fs_cpu_op_scatter_add)      \
    X(gate_add, fs_gate_add_args, fs_cpu_op_gate_add)           \
    X(loss, fs_loss_args, fs_cpu_op_loss)                       \
    X(pack, fs_pack_args, fs_cpu_op_pack)

#ifdef __cplusplus
}
#endif

#endif
