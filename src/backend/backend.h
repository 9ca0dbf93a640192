/* backend.h: the one interface behind which every heavy operation runs.
 *
 * A backend is an opaque handle; the layer driver and (later) the pipeline call
 * these functions and never know whether the CPU (OpenBLAS/LAPACKE) or CUDA
 * (cuBLAS/cuSOLVER and our kernels) does the work.  All pointers passed here are
 * host memory; a device backend copies in and out itself.
 */
#ifndef FS_BACKEND_H
#define FS_BACKEND_H

#include "src/quant/quant.h"

typedef struct fs_backend fs_backend;

typedef enum fs_backend_kind { FS_BE_AUTO = 0, FS_BE_CPU, FS_BE_CUDA } fs_backend_kind;

/* Opens a backend. AUTO picks CUDA when this build has it and a device is
 * present, else CPU.  CUDA without a device (or without CUDA in the build) is
 * FS_ERR_NODEV with a message saying which. */
fs_status fs_backend_open(fs_ctx *ctx, fs_backend_kind kind, fs_backend **out);
void fs_backend_free(fs_backend *be);               /* accepts NULL */
const char *fs_backend_name(fs_backend *be);        /* "cpu", "cuda" */
/* Number of CUDA devices visible to this build (0 without CUDA). Cannot fail. */
int fs_backend_cuda_devices(void);

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

#endif
