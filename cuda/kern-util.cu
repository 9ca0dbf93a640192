/* kern-util.cu: small matrix kernels of the CUDA backend: mirroring a
 * triangle (Hessian read-out) and zeroing one (the Cholesky factor).
 *
 * Invariants:
 *  1. Row-major element (i, j) only: FS_TRI_MIRROR writes (i, j) with j < i
 *     from (j, i), so it reads only what it never writes: no race.
 */
#include "cuda/check.h"
#include "cuda/kern.h"

#define FS_TRI_TILE 16

static __global__ void fs_tri_kernel(float *__restrict__ A, int64_t n, int mode)
{
    const int64_t j = (int64_t)blockIdx.x * FS_TRI_TILE + threadIdx.x;
    const int64_t i = (int64_t)blockIdx.y * FS_TRI_TILE + threadIdx.y;
    if (i >= n || j >= i) return;
    A[i * n + j] = mode == FS_TRI_MIRROR ? A[j * n + i] : 0.0f;
}

extern "C" fs_status fs_cuda_tri(fs_ctx *ctx, float *dA, int64_t n, int mode,
                                 cudaStream_t stream)
{
    if (n <= 1) return FS_OK;
    const int64_t t = (n + FS_TRI_TILE - 1) / FS_TRI_TILE;
    if (t > 65535)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda: %lld x %lld matrix is too large",
                          (long long)n, (long long)n);
    dim3 grid((unsigned)t, (unsigned)t), block(FS_TRI_TILE, FS_TRI_TILE);
    fs_tri_kernel<<<grid, block, 0, stream>>>(dA, n, mode);
    FS_LAUNCH_CHECK(ctx, fs_tri_kernel);
    return FS_OK;
}
