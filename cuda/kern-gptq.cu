/* kern-gptq.cu: the in-block pass of the blocked GPTQ solver on the GPU (the
 * row loop of fs_gptq_cpu in src/gptq.c); the trailing update of the later
 * columns is one cuBLAS GEMM in cuda/backend-cuda.cu.
 *
 * One warp per row.  The row's block segment W[r, i1:i2] lives in shared
 * memory when FS_GPTQ_WARPS segments fit in FS_GPTQ_SMEM bytes, else it is
 * updated in place in global memory: same arithmetic, any block width.
 *
 * Invariants:
 *  1. The per-column arithmetic is fs_gptq_cpu's, operation for operation
 *     (quantize, dequantize, e = (w_j - dq) / U[j,j], w_c = w_c - e * U[j,c]),
 *     compiled with -fmad=false: the in-block pass is bit-identical to the
 *     CPU's given the same inputs.
 *  2. Dynamic groups: blocks are cut at group starts, so a group can only
 *     start at i1; its grid is computed first, from the current W[r, i1:i1+glen]
 *     in global memory (all earlier errors have been applied there).  Inside a
 *     block that continues a group the scale comes from the group's qmeta, whose
 *     decoded values equal what fs_grid_group returned.
 *  3. Column jj is read by every lane before lane 0 overwrites it, and the
 *     updates of column jj+1 are visible before it is read: a __syncwarp()
 *     on each side.
 */
#include "cuda/check.h"
#include "cuda/grid-dev.cuh"
#include "cuda/kern.h"

#define FS_GPTQ_WARPS 4
#define FS_GPTQ_SMEM (48 * 1024)

extern __shared__ float fs_gptq_seg[];

static __global__ void __launch_bounds__(FS_GPTQ_WARPS * FS_WARP)
fs_gptq_kernel(fs_cuda_gp gp, float *__restrict__ W, const float *__restrict__ U,
               uint8_t *__restrict__ codes, uint8_t *__restrict__ qmeta,
               const int32_t *__restrict__ gcol, float *__restrict__ Err, int64_t rows,
               int64_t cols, int64_t ng, int64_t gw, int64_t i1, int64_t i2, int use_smem)
{
    const int warp = threadIdx.x / FS_WARP, lane = threadIdx.x & (FS_WARP - 1);
    const int64_t r = (int64_t)blockIdx.x * FS_GPTQ_WARPS + warp;
    if (r >= rows) return;                                   /* whole warp */
    const int64_t nb = i2 - i1;
    float *wrow = W + r * cols;
    uint8_t *qrow = qmeta + r * ng * 4;
    float s = 0.0f, z = 0.0f;
    int64_t gcur = -1;

    if (gcol == NULL && i1 % gw == 0) {                      /* invariant 2 */
        const int64_t glen = cols - i1 < gw ? cols - i1 : gw;
        gcur = i1 / gw;
        fs_dev_grid_group(gp, wrow + i1, glen, qrow + gcur * 4, &s, &z);
    }

    float *seg = wrow + i1;
    if (use_smem) {
        seg = fs_gptq_seg + (int64_t)warp * nb;
        for (int64_t c = lane; c < nb; c += FS_WARP) seg[c] = wrow[i1 + c];
        __syncwarp();
    }

    for (int64_t jj = 0; jj < nb; jj++) {
        const int64_t j = i1 + jj;
        const int64_t g = gcol ? (int64_t)gcol[j] : j / gw;
        if (g != gcur) {
            fs_dev_qmeta_unpack(gp, qrow + g * 4, &s, &z);
            gcur = g;
        }
        const float wj = seg[jj];
        const float q = fs_qm_quant(wj, s, z, gp.maxq);
        const float dq = fs_qm_dequant(q, s, z);
        const float *u = U + j * cols;
        const float e = (wj - dq) / u[j];
        __syncwarp();                                        /* invariant 3 */
        if (lane == 0) {
            seg[jj] = dq;
            codes[r * cols + j] = (uint8_t)q;
            Err[r * nb + jj] = e;
        }
        for (int64_t c = jj + 1 + lane; c < nb; c += FS_WARP) {
            const float t = e * u[i1 + c];
            seg[c] = seg[c] - t;
        }
        __syncwarp();
    }

    if (use_smem)
        for (int64_t c = lane; c < nb; c += FS_WARP) wrow[i1 + c] = seg[c];
}

extern "C" fs_status fs_cuda_gptq_block(fs_ctx *ctx, const fs_cuda_gp *gp, float *dW,
                                        const float *dU, uint8_t *dcodes, uint8_t *dqmeta,
                                        const int32_t *dgcol, float *dErr, int64_t rows,
                                        int64_t cols, int64_t ng, int64_t gw, int64_t i1,
                                        int64_t i2, cudaStream_t stream)
{
    if (rows <= 0 || i2 <= i1) return FS_OK;
    const int64_t nb = i2 - i1;
    const int64_t blocks = (rows + FS_GPTQ_WARPS - 1) / FS_GPTQ_WARPS;
    if (blocks > 0x7fffffff)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda gptq: %lld rows is too many", (long long)rows);
    const int64_t smem = nb * FS_GPTQ_WARPS * (int64_t)sizeof(float);
    const int use_smem = smem <= FS_GPTQ_SMEM;
    fs_gptq_kernel<<<(unsigned)blocks, FS_GPTQ_WARPS * FS_WARP, use_smem ? (size_t)smem : 0,
                     stream>>>(*gp, dW, dU, dcodes, dqmeta, dgcol, dErr, rows, cols, ng, gw, i1,
                               i2, use_smem);
    FS_LAUNCH_CHECK(ctx, fs_gptq_kernel);
    return FS_OK;
}
