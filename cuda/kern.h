/* kern.h: the host-side launchers of the kernels in cuda/kern-*.cu, called by
 * cuda/backend-cuda.cu (C++ only; callers outside cuda/ never include it).
 *
 * Every pointer named d* is device memory; every launcher queues its work on
 * `stream` and returns FS_OK, or FS_ERR_CUDA with the launch error in ctx.
 * Nothing here allocates or synchronizes.
 */
#ifndef FS_CUDA_KERN_H
#define FS_CUDA_KERN_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "src/quant/quant.h"

extern "C" {

/* fs_grid_params as the kernels see it: p is a device copy of gp->p [n]. */
typedef struct fs_cuda_gp {
    int bits, sym, mse, n, gptq_v1;
    float maxq, norm;
    const float *p;
} fs_cuda_gp;

/* qmeta [rows, ceil(cols/gw), 4] (rows ldq bytes apart) of dW [rows, cols]
 * (rows ldw floats apart): fs_grid_matrix. */
fs_status fs_cuda_grid(fs_ctx *ctx, const fs_cuda_gp *gp, const float *dW, int64_t ldw, int64_t rows,
                       int64_t cols, int64_t gw, uint8_t *dqmeta, int64_t ldq, cudaStream_t stream);

/* The in-block GPTQ pass over columns [i1, i2) of every row (fs_gptq_cpu's
 * row loop): dW [rows, cols] updated in place (dequant in [i1, i2), errors
 * applied inside the block only), dcodes [rows, cols], dErr [rows, i2 - i1],
 * dqmeta [rows, ng, 4] written at dynamic group starts (dgcol == NULL) or
 * read (static groups, dgcol [cols]). */
fs_status fs_cuda_gptq_block(fs_ctx *ctx, const fs_cuda_gp *gp, float *dW, const float *dU,
                             uint8_t *dcodes, uint8_t *dqmeta, const int32_t *dgcol,
                             float *dErr, int64_t rows, int64_t cols, int64_t ng, int64_t gw,
                             int64_t i1, int64_t i2, cudaStream_t stream);

/* Square row-major dA [n, n]: FS_TRI_MIRROR copies the upper triangle onto
 * the lower one; FS_TRI_ZERO_LOWER zeroes the strict lower triangle. */
enum { FS_TRI_MIRROR = 0, FS_TRI_ZERO_LOWER = 1 };
fs_status fs_cuda_tri(fs_ctx *ctx, float *dA, int64_t n, int mode, cudaStream_t stream);

}

#endif
