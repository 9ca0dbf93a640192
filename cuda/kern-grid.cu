/* kern-grid.cu: the qmeta4 grids of a whole matrix on the GPU (the device
 * twin of fs_grid_matrix in src/grid.c): one warp per (row, group), the
 * arithmetic of cuda/grid-dev.cuh, so the bytes equal the CPU's.
 *
 * Invariants:
 *  1. Warp w of the launch (FS_GRID_WARPS warps per block) handles item
 *     w = row * ng + group; its qmeta lands at qmeta + row * ldq + 4 * group
 *     (ldq = 4 ng: the layout [rows, ng, 4] of fs_grid_matrix); W's rows are
 *     ldw floats apart.
 *  2. A warp's lanes never diverge around the shuffles: the item index is
 *     uniform across the warp, and a warp past the end returns as a whole.
 */
#include "cuda/check.h"
#include "cuda/grid-dev.cuh"
#include "cuda/kern.h"

#define FS_GRID_WARPS 4

static __global__ void __launch_bounds__(FS_GRID_WARPS * FS_WARP)
fs_grid_kernel(fs_cuda_gp gp, const float *__restrict__ W, int64_t ldw, int64_t rows, int64_t cols,
               int64_t gw, int64_t ng, uint8_t *__restrict__ qmeta, int64_t ldq)
{
    const int64_t item = (int64_t)blockIdx.x * FS_GRID_WARPS + threadIdx.x / FS_WARP;
    if (item >= rows * ng) return;                          /* invariant 2 */
    const int64_t r = item / ng, g = item % ng;
    const int64_t c0 = g * gw, n = cols - c0 < gw ? cols - c0 : gw;
    float s, z;
    fs_dev_grid_group(gp, W + r * ldw + c0, n, qmeta + r * ldq + 4 * g, &s, &z);
}

extern "C" fs_status fs_cuda_grid(fs_ctx *ctx, const fs_cuda_gp *gp, const float *dW, int64_t ldw,
                                  int64_t rows, int64_t cols, int64_t gw, uint8_t *dqmeta, int64_t ldq,
                                  cudaStream_t stream)
{
    if (rows <= 0 || cols <= 0) return FS_OK;
    const int64_t ng = (cols + gw - 1) / gw;
    const int64_t blocks = (rows * ng + FS_GRID_WARPS - 1) / FS_GRID_WARPS;
    if (blocks > 0x7fffffff)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda grid: %lld x %lld groups is too many",
                          (long long)rows, (long long)ng);
    fs_grid_kernel<<<(unsigned)blocks, FS_GRID_WARPS * FS_WARP, 0, stream>>>(*gp, dW, ldw, rows,
                                                                            cols, gw, ng, dqmeta, ldq);
    FS_LAUNCH_CHECK(ctx, fs_grid_kernel);
    return FS_OK;
}
