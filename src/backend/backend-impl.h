/* backend-impl.h: what a backend implements.  One static const table of
 * function pointers per backend (src/backend-cpu.c, cuda/backend-cuda.cu);
 * src/backend.c dispatches and skips NULL optional slots.
 *
 * Every slot takes host pointers, row-major f32 unless said, and returns
 * fs_status with the detail in ctx (fs_ctx_err).  A failing slot leaves its
 * outputs unspecified but frees whatever it allocated.
 */
#ifndef FS_BACKEND_IMPL_H
#define FS_BACKEND_IMPL_H

#include "src/backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fs_backend_i {
    /* "cpu", "cuda". */
    const char *(*name)(fs_backend *be);
    /* Frees be->context and be itself. */
    void (*free)(fs_backend *be);
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
     * FS_ERR_NUMERIC (failing minor in the message) when not positive definite. */
    fs_status (*chol_inv)(fs_ctx *ctx, fs_backend *be, float *A, int64_t n);
    /* qmeta [rows, ceil(cols/gw), 4] of W [rows, cols] (grid semantics of fs_grid_group). */
    fs_status (*grid)(fs_ctx *ctx, fs_backend *be, const fs_grid_params *gp, const float *W,
                      int64_t rows, int64_t cols, int64_t gw, uint8_t *qmeta);
    /* The blocked GPTQ solve of fs_gptq_job (semantics of fs_gptq_cpu). */
    fs_status (*gptq)(fs_ctx *ctx, fs_backend *be, const fs_gptq_job *job);
    /* (optional) waits for queued work. */
    fs_status (*synchronize)(fs_ctx *ctx, fs_backend *be);
};

struct fs_backend {
    struct fs_backend_i iface;
    void *context;
};

/* Constructors; each returns FS_OK and *out, or an error in ctx. */
fs_status fs_backend_cpu_new(fs_ctx *ctx, fs_backend **out);
#ifdef FS_HAVE_CUDA
fs_status fs_backend_cuda_new(fs_ctx *ctx, fs_backend **out);
int fs_cuda_device_count(void);
#endif

#ifdef __cplusplus
}
#endif

#endif
