/* grid-dev.cuh: the grid of one group computed by one warp, shared by the
 * grid kernel (cuda/kern-grid.cu) and the solver (cuda/kern-gptq.cu).  Each
 * translation unit that includes it gets its own __constant__ copy of the
 * Q8.8 tables (the kernels are built without relocatable device code).
 *
 * Invariants (these make the qmeta bytes identical to src/grid.c):
 *  1. All scalar arithmetic is quant-math.h, compiled with -fmad=false.
 *  2. Min and max are exact whatever the order, so any reduction tree works.
 *  3. The MSE loss of a candidate is summed as fs_grid_group does: lane l adds
 *     the error terms of elements l, l+32, l+64, ... in that order starting
 *     from 0.0f, then a butterfly over xor offsets 16, 8, 4, 2, 1 where each
 *     lane adds its partner's value (IEEE addition is commutative, so every
 *     lane ends with the bits of the CPU's lane[0]).
 *  4. The first minimum wins (k == 0 or loss < best), as on the CPU.
 *  5. The whole warp calls fs_dev_grid_group with the same arguments; every
 *     lane gets the scale and zero, lane 0 writes the 4 qmeta bytes.
 */
#ifndef FS_CUDA_GRID_DEV_CUH
#define FS_CUDA_GRID_DEV_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "src/quant/qmeta-table.h"
#include "src/quant/quant-math.h"
#include "cuda/kern.h"

static __constant__ double fs_c_q88_frac[256] = FS_Q88_TABLE_FRAC;
static __constant__ float fs_c_q88_half[256] = FS_Q88_TABLE_HALF;

#define FS_FULL_MASK 0xffffffffu
/* Groups up to FS_GRID_REG * 32 elements are held in registers for the MSE
 * search; longer ones are read again from memory for each candidate. */
#define FS_GRID_REG 8

/* The loss of one candidate (s, z) over x[n], this lane's share, then the
 * butterfly (invariant 3).  xr holds x[lane + 32 t] when cached. */
static __device__ __forceinline__ float fs_dev_cand_loss(const float *x, int64_t n, int lane,
                                                         const float *xr, bool cached, float s,
                                                         float z, float maxq, int l2,
                                                         float norm)
{
    float acc = 0.0f;
    if (cached) {
#pragma unroll
        for (int t = 0; t < FS_GRID_REG; t++) {
            int64_t i = lane + (int64_t)FS_WARP * t;
            if (i < n) acc = acc + fs_qm_err(xr[t], s, z, maxq, l2, norm);
        }
    } else {
        for (int64_t i = lane; i < n; i += FS_WARP)
            acc = acc + fs_qm_err(x[i], s, z, maxq, l2, norm);
    }
    for (int off = FS_WARP / 2; off > 0; off >>= 1)
        acc = acc + __shfl_xor_sync(FS_FULL_MASK, acc, off);
    return acc;
}

/* Grid of the group x[n] (n >= 1), fs_grid_group on one warp (invariant 5).
 * qmeta: 4 bytes written by lane 0 (NULL: not written). */
static __device__ __forceinline__ void fs_dev_grid_group(const fs_cuda_gp &gp, const float *x,
                                                         int64_t n, uint8_t *qmeta,
                                                         float *scale, float *zero)
{
    const int lane = threadIdx.x & (FS_WARP - 1);
    const bool cached = n <= (int64_t)FS_WARP * FS_GRID_REG;
    float xr[FS_GRID_REG];
    float gmin = x[0], gmax = x[0];
    if (cached) {
#pragma unroll
        for (int t = 0; t < FS_GRID_REG; t++) {
            int64_t i = lane + (int64_t)FS_WARP * t;
            xr[t] = i < n ? x[i] : 0.0f;
            if (i < n) {
                gmin = xr[t] < gmin ? xr[t] : gmin;
                gmax = xr[t] > gmax ? xr[t] : gmax;
            }
        }
    } else {
#pragma unroll
        for (int t = 0; t < FS_GRID_REG; t++) xr[t] = 0.0f;
        for (int64_t i = lane; i < n; i += FS_WARP) {
            float v = x[i];
            gmin = v < gmin ? v : gmin;
            gmax = v > gmax ? v : gmax;
        }
    }
    for (int off = FS_WARP / 2; off > 0; off >>= 1) {       /* invariant 2 */
        float omin = __shfl_xor_sync(FS_FULL_MASK, gmin, off);
        float omax = __shfl_xor_sync(FS_FULL_MASK, gmax, off);
        gmin = omin < gmin ? omin : gmin;
        gmax = omax > gmax ? omax : gmax;
    }
    float s, z;
    fs_qm_range(gmin, gmax, gp.bits, gp.sym, gp.gptq_v1, &s, &z);
    int16_t code = fs_qm_encode(s, fs_c_q88_half);
    if (gp.mse) {
        const float base = fs_qm_decode(code, fs_c_q88_frac);
        const int l2 = gp.norm == 2.0f;
        float best_s = base, best = 0.0f;
        for (int k = 0; k < gp.n; k++) {
            float sk = base * gp.p[k];
            float loss = fs_dev_cand_loss(x, n, lane, xr, cached, sk, z, gp.maxq, l2, gp.norm);
            if (k == 0 || loss < best) {                    /* invariant 4 */
                best = loss;
                best_s = sk;
            }
        }
        code = fs_qm_encode(best_s, fs_c_q88_half);
    }
    *scale = fs_qm_decode(code, fs_c_q88_frac);
    if (gp.gptq_v1) *scale = fs_qm_f16_round(*scale);
    *zero = z;
    if (qmeta && lane == 0) {                               /* fs_qmeta_pack */
        uint16_t u = (uint16_t)code;
        qmeta[0] = (uint8_t)(u & 0xff);
        qmeta[1] = (uint8_t)(u >> 8);
        qmeta[2] = (uint8_t)z;
        qmeta[3] = gp.sym ? FS_QMETA_SYM : 0;
    }
}

/* fs_grid_unpack on the device. */
static __device__ __forceinline__ void fs_dev_qmeta_unpack(const fs_cuda_gp &gp, const uint8_t *q,
                                                           float *scale, float *zero)
{
    int16_t code = (int16_t)(uint16_t)(q[0] | (q[1] << 8));
    *scale = fs_qm_decode(code, fs_c_q88_frac);
    if (gp.gptq_v1) *scale = fs_qm_f16_round(*scale);
    *zero = (float)q[2];
}

#endif
