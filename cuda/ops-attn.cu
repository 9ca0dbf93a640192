/* ops-attn.cu: causal attention of the CUDA backend (fs_op_attention and
 * fs_op_attention_libm, one kernel: on the CPU the two differ only in which
 * exponential the softmax calls, and the device has one expf): GQA,
 * sliding window, MLA's head dims (dqk != dv), strided heads.
 *
 * One block per (sequence, head, query row): the scores of the allowed keys
 * in shared memory, the softmax of cpu/attention.c (maximum, exp of the
 * differences, the sum, a multiply by its inverse) in F32, then the output
 * row.  A reference kernel, not a fast one: correct at any size that fits its
 * shared memory (T <= FS_ATTN_MAX_T), O(T^2 d) work without tiling; a tiled or
 * cuBLAS-batched path is the next step (README "CUDA", ROADMAP).
 *
 * Invariant: parity with the CPU up to summation order and CUDA's expf
 * (the CPU sums the dot products in sgemm order and uses its own
 * exponential); masked keys contribute exactly 0.
 */
#include <math.h>

#include "cuda/cuda-be.h"

#define FS_ATTN_THREADS 128
#define FS_ATTN_MAX_T 12000          /* 48 KB of F32 scores per block */

static __device__ float block_reduce(float v, float *red, int is_max)
{
    red[threadIdx.x] = v;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) {
            const float o = red[threadIdx.x + h];
            red[threadIdx.x] = is_max ? (o > red[threadIdx.x] ? o : red[threadIdx.x]) : red[threadIdx.x] + o;
        }
        __syncthreads();
    }
    const float r = red[0];
    __syncthreads();
    return r;
}

static __global__ void k_attn(fs_attn_args a, const float *Q, int64_t ldq, const float *K, int64_t ldk,
                              const float *V, int64_t ldv, float *O, int64_t ldo)
{
    extern __shared__ float sc[];
    __shared__ float red[FS_ATTN_THREADS];
    const int64_t T = a.T, nh = a.nh, rep = a.nh / a.nkv;
    const int64_t item = blockIdx.x;
    const int64_t i = item % T, h = item / T % nh, s = item / T / nh, kh = h / rep;
    const int64_t j0 = a.window > 0 && i - a.window + 1 > 0 ? i - a.window + 1 : 0;
    const float *q = Q + (s * T + i) * ldq + h * a.q_hs;
    float mx = -INFINITY;
    for (int64_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) {
        const float *k = K + (s * T + j) * ldk + kh * a.k_hs;
        float d = 0.0f;
        for (int64_t c = 0; c < a.dqk; c++) d += q[c] * k[c];
        d = a.scale * d;
        sc[j - j0] = d;
        mx = d > mx ? d : mx;
    }
    mx = block_reduce(mx, red, 1);
    float sum = 0.0f;
    for (int64_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) {
        const float e = expf(sc[j - j0] - mx);
        sc[j - j0] = e;
        sum += e;
    }
    sum = block_reduce(sum, red, 0);
    const float inv = 1.0f / sum;
    float *o = O + (s * T + i) * ldo + h * a.o_hs;
    for (int64_t c = threadIdx.x; c < a.dv; c += blockDim.x) {
        float acc = 0.0f;
        for (int64_t j = j0; j <= i; j++) acc += (sc[j - j0] * inv) * V[(s * T + j) * ldv + kh * a.v_hs + c];
        o[c] = acc;
    }
}

fs_status fs_cu_op_attention(fs_ctx *ctx, cuda_be *cb, int q, const fs_attn_args *a)
{
    const int64_t blocks = a->nseq * a->nh * a->T;
    if (blocks == 0) return FS_OK;
    if (a->T > FS_ATTN_MAX_T)
        return fs_ctx_err(ctx, FS_ERR_NODEV, "op attention is not implemented on cuda for sequences of %lld tokens "
                          "(at most %d)", (long long)a->T, FS_ATTN_MAX_T);
    if (blocks > 0x7fffffff)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda attention: %lld query rows x heads", (long long)blocks);
    const int64_t span = a->window > 0 && a->window < a->T ? a->window : a->T;
    const size_t smem = sizeof(float) * (size_t)span;
    k_attn<<<(unsigned)blocks, FS_ATTN_THREADS, smem, cb->s[q]>>>(*a, FS_CU_F32(a->q), a->q.ld, FS_CU_F32(a->k),
                                                                  a->k.ld, FS_CU_F32(a->v), a->v.ld,
                                                                  FS_CU_F32(a->out), a->out.ld);
    FS_LAUNCH_CHECK(ctx, k_attn);
    return FS_OK;
}

/* MLA's attention: on the CPU it takes libm's expf for the bytes of the
 * forward it replaced; the device's expf serves both (parity within tolerance). */
fs_status fs_cu_op_attention_libm(fs_ctx *ctx, cuda_be *cb, int q, const fs_attn_args *a)
{
    return fs_cu_op_attention(ctx, cb, q, a);
}
