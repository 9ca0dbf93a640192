/* check.h: error checks of the CUDA backend (C++ only, included by the .cu files of cuda/).
 *
 * One generic macro, FS_CHECK_GEN(ctx, expr, ok, name_fn), evaluates expr once
 * and, when the result is not `ok`, records
 *     "<expr> at <file>:<line>: <status name> (device <n>)"
 * with fs_ctx_err(ctx, FS_ERR_CUDA, ...) and returns FS_ERR_CUDA from the
 * enclosing function (which must return fs_status).  FS_CUDA_CHECK,
 * FS_CUBLAS_CHECK and FS_CUSOLVER_CHECK put it on top of the runtime, cuBLAS
 * and cuSOLVER status types; FS_LAUNCH_CHECK checks cudaGetLastError() right
 * after a kernel launch (and, with FS_DEBUG, synchronizes so that a fault in
 * the kernel is reported at its launch site).
 *
 * Invariants:
 *  1. A macro that fails returns at once: functions that own device memory
 *     call a helper that uses the macros and free in the caller (see
 *     cuda/backend-cuda.cu), so every error path frees.
 *  2. Only the first error is kept (fs_ctx_err keeps the first message).
 */
#ifndef FS_CUDA_CHECK_H
#define FS_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include "src/core/core.h"

/* cuSOLVER has no status-name function of its own. Cannot fail. */
static inline const char *fs_cusolver_status_name(cusolverStatus_t st)
{
    switch (st) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_MAPPING_ERROR: return "CUSOLVER_STATUS_MAPPING_ERROR";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED:
        return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_ZERO_PIVOT: return "CUSOLVER_STATUS_ZERO_PIVOT";
    case CUSOLVER_STATUS_INVALID_LICENSE: return "CUSOLVER_STATUS_INVALID_LICENSE";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "CUSOLVER_STATUS_(other)";
    }
}

/* The current device for the message, -1 if even that cannot be asked. */
static inline int fs_cuda_cur_device(void)
{
    int dev = -1;
    if (cudaGetDevice(&dev) != cudaSuccess) dev = -1;
    return dev;
}

#define FS_CHECK_GEN(ctx, expr, ok, name_fn)                                              \
    do {                                                                                  \
        auto fs_chk_st_ = (expr);                                                         \
        if (fs_chk_st_ != (ok))                                                           \
            return fs_ctx_err((ctx), FS_ERR_CUDA, "%s at %s:%d: %s (device %d)", #expr,   \
                              __FILE__, __LINE__, name_fn(fs_chk_st_),                    \
                              fs_cuda_cur_device());                                      \
    } while (0)

#define FS_CUDA_CHECK(ctx, expr) FS_CHECK_GEN(ctx, expr, cudaSuccess, cudaGetErrorName)
#define FS_CUBLAS_CHECK(ctx, expr) \
    FS_CHECK_GEN(ctx, expr, CUBLAS_STATUS_SUCCESS, cublasGetStatusName)
#define FS_CUSOLVER_CHECK(ctx, expr) \
    FS_CHECK_GEN(ctx, expr, CUSOLVER_STATUS_SUCCESS, fs_cusolver_status_name)

/* After each kernel launch (kernel: the kernel's name, for the message): the
 * launch error (bad configuration, no kernel image for this device); with
 * FS_DEBUG also a fault while it ran. */
#define FS_LAUNCH_CHECK_ONE(ctx, kernel, expr)                                            \
    do {                                                                                  \
        cudaError_t fs_chk_le_ = (expr);                                                  \
        if (fs_chk_le_ != cudaSuccess)                                                    \
            return fs_ctx_err((ctx), FS_ERR_CUDA, "%s (launch of %s) at %s:%d: %s (device %d)", \
                              #expr, #kernel, __FILE__, __LINE__,                         \
                              cudaGetErrorName(fs_chk_le_), fs_cuda_cur_device());        \
    } while (0)
#ifdef FS_DEBUG
#define FS_LAUNCH_CHECK(ctx, kernel)                                                      \
    do {                                                                                  \
        FS_LAUNCH_CHECK_ONE(ctx, kernel, cudaGetLastError());                             \
        FS_LAUNCH_CHECK_ONE(ctx, kernel, cudaDeviceSynchronize());                        \
    } while (0)
#else
#define FS_LAUNCH_CHECK(ctx, kernel) FS_LAUNCH_CHECK_ONE(ctx, kernel, cudaGetLastError())
#endif

#endif
