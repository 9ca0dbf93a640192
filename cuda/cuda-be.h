/* cuda-be.h: what the files of the CUDA backend share (C++ only): the
 * backend's context (three streams, a cuBLAS and a cuSOLVER handle per
 * stream, the sticky errors), the view helpers and the op implementations
 * (cuda/ops-(name).cu) that cuda/backend-cuda.cu puts in its table.
 *
 * Invariants:
 *  1. Queue q is stream s[q]; every op given to q runs on s[q] with the
 *     handles blas[q] / solver[q], whose stream is s[q] for their lifetime,
 *     under qmu[q] (backend.h invariant 8: calls giving work to one queue may
 *     come from several host threads).
 *  2. Sticky errors (backend.h invariant 5): a host-side error of q (a failed
 *     launch, FS_ERR_NOMEM for scratch) is kept in err[q] / msg[q] at once; a
 *     data error a kernel finds (an index out of range) is written into the
 *     device word derr[q] (the first code wins, atomicCAS) and becomes q's
 *     sticky FS_ERR_FORMAT when the host next synchronises with q
 *     (fs_be_sync, fs_be_event_sync, or an op that reads back, hess_wave):
 *     the host cannot know it sooner without a synchronisation per op.
 *  3. Op scratch is stream-ordered (cudaMallocAsync / cudaFreeAsync on s[q]),
 *     so no op synchronises the device; only hess_wave synchronises its own
 *     stream (cuBLAS takes sizes from the host and the row lists are data).
 */
#ifndef FS_CUDA_BE_H
#define FS_CUDA_BE_H

#include <pthread.h>

#include "cuda/check.h"
#include "cuda/kern.h"
#include "src/backend/backend-impl.h"

/* Codes of derr[q] (invariant 2): which op met bad data. */
enum {
    FS_CU_DERR_NONE = 0,
    FS_CU_DERR_GATHER = 1,
    FS_CU_DERR_SCATTER = 2,
    FS_CU_DERR_PERMUTE = 3,
    FS_CU_DERR_HESS_WAVE = 4,
    FS_CU_DERR_LISTS = 5,
};

typedef struct cuda_be {
    int device;
    cudaStream_t s[FS_QUEUE_COUNT];
    cublasHandle_t blas[FS_QUEUE_COUNT];
    cusolverDnHandle_t solver[FS_QUEUE_COUNT];
    int *derr;                                  /* device int [FS_QUEUE_COUNT] */
    pthread_mutex_t mu;                         /* err, msg */
    pthread_mutex_t qmu[FS_QUEUE_COUNT];
    int have_mu;
    fs_status err[FS_QUEUE_COUNT];
    char msg[FS_QUEUE_COUNT][512];
} cuda_be;

#define FS_TRY_CU(expr)                    \
    do {                                   \
        fs_status fs_try_cu_ = (expr);     \
        if (fs_try_cu_ != FS_OK) return fs_try_cu_; \
    } while (0)

/* Device address of element (r, c) of a view of a cuda buffer. */
static inline void *fs_cu_at(const fs_tensor &t, int64_t r = 0, int64_t c = 0)
{
    return (char *)t.buf->data + t.off + ((uint64_t)r * (uint64_t)t.ld + (uint64_t)c) * fs_dtype_size(t.dt);
}
#define FS_CU_F32(t) ((float *)fs_cu_at((t)))

/* Stream-ordered scratch of `bytes` on queue q (invariant 3); FS_ERR_NOMEM
 * naming what. */
fs_status fs_cu_scratch(fs_ctx *ctx, cuda_be *cb, int q, void **p, size_t bytes, const char *what);
void fs_cu_scratch_free(cuda_be *cb, int q, void *p);

/* Blocks and threads of a grid-stride launch over n items. */
static inline unsigned fs_cu_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)b;
}

/* The GPTQ solve on device memory (cuda/backend-cuda.cu): the blocks of
 * fs_gptq_cpu, kernels of kern-gptq.cu and the trailing sgemm on `stream`
 * with `blas`; dErr [rows, min(block, cols)] scratch. */
fs_status fs_cu_gptq_solve(fs_ctx *ctx, cublasHandle_t blas, cudaStream_t stream, const fs_cuda_gp *g, float *dW,
                           const float *dU, uint8_t *dcodes, uint8_t *dq, const int32_t *dgcol, float *dErr,
                           int64_t R, int64_t C, int64_t ng, int64_t gw, int block);

/* The v1 chol_inv on device memory dA [n, n] (ops-blas.cu): cpu/cholinv.c's
 * algorithm and messages (FS_ERR_NUMERIC naming the failing column),
 * synchronising queue q to read each step's info. */
fs_status fs_cu_cholinv_sync(fs_ctx *ctx, cuda_be *cb, int q, float *dA, int64_t n);

/* ---- op implementations: (ctx, cb, q, args); the wrapper in backend-cuda.cu
 * holds qmu[q] and turns an error into q's sticky one ---- */
#define FS_CU_OPS(X)                                      \
    X(fill, fs_fill_args, fs_cu_op_fill)                  \
    X(gemm, fs_gemm_args, fs_cu_op_gemm)                  \
    X(bias_add, fs_bias_args, fs_cu_op_bias_add)          \
    X(add, fs_add_args, fs_cu_op_add)                     \
    X(copy, fs_copy_args, fs_cu_op_copy)                  \
    X(hess_acc, fs_hess_acc_args, fs_cu_op_hess_acc)      \
    X(hess_finish, fs_hess_finish_args, fs_cu_op_hess_finish) \
    X(hess_wave, fs_hess_wave_args, fs_cu_op_hess_wave)   \
    X(damp, fs_damp_args, fs_cu_op_damp)                  \
    X(cholinv, fs_cholinv_args, fs_cu_op_cholinv)         \
    X(grid_op, fs_grid_args, fs_cu_op_grid)               \
    X(gptq_op, fs_gptq_args, fs_cu_op_gptq)               \
    X(rtn, fs_rtn_args, fs_cu_op_rtn)                     \
    X(decode, fs_decode_args, fs_cu_op_decode)            \
    X(permute, fs_permute_args, fs_cu_op_permute)         \
    X(rmsnorm, fs_rmsnorm_args, fs_cu_op_rmsnorm)         \
    X(rope, fs_rope_args, fs_cu_op_rope)                  \
    X(attention, fs_attn_args, fs_cu_op_attention)        \
    X(attention_libm, fs_attn_args, fs_cu_op_attention_libm) \
    X(swiglu, fs_swiglu_args, fs_cu_op_swiglu)            \
    X(route, fs_route_args, fs_cu_op_route)               \
    X(route_lists, fs_lists_args, fs_cu_op_route_lists)   \
    X(gather, fs_gather_args, fs_cu_op_gather)            \
    X(scatter_add, fs_scatter_args, fs_cu_op_scatter_add) \
    X(gate_add, fs_gate_add_args, fs_cu_op_gate_add)      \
    X(loss, fs_loss_args, fs_cu_op_loss)                  \
    X(pack, fs_pack_args, fs_cu_op_pack)

#define FS_CU_DECL(slot, T, impl) fs_status impl(fs_ctx *ctx, cuda_be *cb, int q, const T *a);
FS_CU_OPS(FS_CU_DECL)
#undef FS_CU_DECL

#endif
