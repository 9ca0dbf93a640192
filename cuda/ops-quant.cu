/* ops-quant.cu: the quantization ops of the CUDA backend: grid (qmeta bytes
 * equal to the CPU's, cuda/grid-dev.cuh), round to nearest on stored grids,
 * the GPTQ solve on buffers, and the packing of codes and grids for the
 * output formats (src/formats/pack.c's bit streams, cpu/pack.c's F16 scales).
 *
 * Invariants:
 *  1. The candidate factors of the grid (gp->p) are copied to stream-ordered
 *     scratch by the call (backend.h invariant 4: the caller may change them
 *     at once); a pageable H2D copy is staged before cudaMemcpyAsync returns.
 *  2. rtn and pack are the same IEEE operations as the CPU's (quant-math.h
 *     with -fmad=false; integer bit packing): identical bytes.
 *  3. Packing: every output word or byte is computed by one thread from the
 *     codes whose bits fall in it (LSB first, src/formats/pack.c), so no two
 *     threads write one word and the padding bits are zero.
 */
#include "cuda/cuda-be.h"
#include "cuda/grid-dev.cuh"

#define T256 256

/* gp with its candidates in scratch *dp (invariant 1). */
static fs_status gp_dev(fs_ctx *ctx, cuda_be *cb, int q, const fs_grid_params *gp, fs_cuda_gp *out, float **dp)
{
    out->bits = gp->bits;
    out->sym = gp->sym;
    out->mse = gp->mse;
    out->gptq_v1 = gp->gptq_v1;
    out->n = gp->n;
    out->maxq = gp->maxq;
    out->norm = gp->norm;
    FS_TRY_CU(fs_cu_scratch(ctx, cb, q, (void **)dp, sizeof(float) * (size_t)(gp->n > 0 ? gp->n : 1),
                            "grid candidates"));
    if (gp->n > 0)
        FS_CUDA_CHECK(ctx, cudaMemcpyAsync(*dp, gp->p, sizeof(float) * (size_t)gp->n, cudaMemcpyHostToDevice,
                                           cb->s[q]));
    out->p = *dp;
    return FS_OK;
}

fs_status fs_cu_op_grid(fs_ctx *ctx, cuda_be *cb, int q, const fs_grid_args *a)
{
    if (a->W.rows == 0 || a->W.cols == 0) return FS_OK;
    fs_cuda_gp g;
    float *dp = NULL;
    fs_status rc = gp_dev(ctx, cb, q, a->gp, &g, &dp);
    if (rc == FS_OK)
        rc = fs_cuda_grid(ctx, &g, FS_CU_F32(a->W), a->W.ld, a->W.rows, a->W.cols, a->gw,
                          (uint8_t *)fs_cu_at(a->qmeta), a->qmeta.ld, cb->s[q]);
    fs_cu_scratch_free(cb, q, dp);
    return rc;
}

/* ---- round to nearest --------------------------------------------------------------------- */

static __global__ void k_rtn(fs_cuda_gp gp, const float *W, int64_t ldw, const uint8_t *qm, int64_t ldq,
                             uint8_t *codes, int64_t ldc, float *D, int64_t ldd, int64_t rows, int64_t cols, int64_t gw)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        float s, z;
        fs_dev_qmeta_unpack(gp, qm + r * ldq + (c / gw) * 4, &s, &z);
        const float qv = fs_qm_quant(W[r * ldw + c], s, z, gp.maxq);
        codes[r * ldc + c] = (uint8_t)qv;
        if (D) D[r * ldd + c] = (qv - z) * s;
    }
}

fs_status fs_cu_op_rtn(fs_ctx *ctx, cuda_be *cb, int q, const fs_rtn_args *a)
{
    if (a->W.rows == 0 || a->W.cols == 0) return FS_OK;
    fs_cuda_gp g;
    g.bits = a->gp->bits;
    g.sym = a->gp->sym;
    g.mse = a->gp->mse;
    g.gptq_v1 = a->gp->gptq_v1;
    g.n = 0;
    g.maxq = a->gp->maxq;
    g.norm = a->gp->norm;
    g.p = NULL;                                         /* unpacking needs no candidates */
    k_rtn<<<fs_cu_blocks(a->W.rows * a->W.cols, T256), T256, 0, cb->s[q]>>>(
        g, FS_CU_F32(a->W), a->W.ld, (const uint8_t *)fs_cu_at(a->qmeta), a->qmeta.ld, (uint8_t *)fs_cu_at(a->codes),
        a->codes.ld, a->D.buf ? FS_CU_F32(a->D) : NULL, a->D.buf ? a->D.ld : 0, a->W.rows, a->W.cols, a->gw);
    FS_LAUNCH_CHECK(ctx, k_rtn);
    return FS_OK;
}

/* ---- the GPTQ solve on buffers --------------------------------------------------------------- */

fs_status fs_cu_op_gptq(fs_ctx *ctx, cuda_be *cb, int q, const fs_gptq_args *a)
{
    const int64_t R = a->W.rows, C = a->W.cols;
    if (R == 0 || C == 0) return FS_OK;
    const int64_t nb = a->block < C ? a->block : C;
    fs_cuda_gp g;
    float *dp = NULL, *dErr = NULL;
    fs_status rc = gp_dev(ctx, cb, q, a->gp, &g, &dp);
    if (rc == FS_OK) rc = fs_cu_scratch(ctx, cb, q, (void **)&dErr, sizeof(float) * (size_t)(R * nb), "gptq errors");
    if (rc == FS_OK)
        rc = fs_cu_gptq_solve(ctx, cb->blas[q], cb->s[q], &g, FS_CU_F32(a->W), FS_CU_F32(a->U),
                              (uint8_t *)fs_cu_at(a->codes), (uint8_t *)fs_cu_at(a->qmeta),
                              a->gcol.buf ? (const int32_t *)fs_cu_at(a->gcol) : NULL, dErr, R, C,
                              (C + a->gw - 1) / a->gw, a->gw, a->block);
    fs_cu_scratch_free(cb, q, dErr);
    fs_cu_scratch_free(cb, q, dp);
    return rc;
}

/* ---- packing (invariant 3) ----------------------------------------------------------------------- */

/* The W-bit word `word` of a stream of values v(k) of `bits` each, k < nk,
 * value k at bit position k * bits (LSB first). */
template <typename F>
static __device__ uint32_t d_word(int64_t word, int W, int bits, int64_t nk, F v)
{
    const int64_t start = word * W;
    int64_t k0 = start / bits, k1 = (start + W + bits - 1) / bits;
    if (k1 > nk) k1 = nk;
    const uint32_t mask = bits == 32 ? 0xffffffffu : (1u << bits) - 1u;
    uint64_t acc = 0;
    for (int64_t k = k0; k < k1; k++) {
        const int64_t pos = k * bits - start;
        const uint64_t x = (uint64_t)(v(k) & mask);
        acc |= pos >= 0 ? x << pos : x >> -pos;
    }
    return (uint32_t)(W == 32 ? acc & 0xffffffffull : acc & 0xffull);
}

/* the value streams of d_word */
struct codes_of_row {
    const uint8_t *c;
    __device__ uint32_t operator()(int64_t k) const { return c[k]; }
};
struct zeros_of_group {                     /* gptq v1 stores zero - 1 */
    const uint8_t *qm;
    int64_t ng, g;
    __device__ uint32_t operator()(int64_t o) const { return (uint32_t)(qm[(o * ng + g) * 4 + 2] - 1u); }
};

static __global__ void k_pack_forge(const uint8_t *codes, int64_t out, int64_t in, int bits, uint8_t *dst, int64_t rb)
{
    const int64_t n = out * rb;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = i / rb, b = i % rb;
        dst[i] = (uint8_t)d_word(b, 8, bits, in, codes_of_row{codes + o * in});
    }
}

/* qweight [rows, out]: word (w, o) of column o's stream */
static __global__ void k_pack_qweight(const uint8_t *codes, int64_t out, int64_t in, int bits, uint32_t *dst,
                                      int64_t rows)
{
    const int64_t n = rows * out;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t w = i / out, o = i % out;
        dst[i] = d_word(w, 32, bits, in, codes_of_row{codes + o * in});
    }
}

/* src/core/dtype.c's fs_f32_to_f16 */
static __device__ uint16_t d_f32_to_f16(float f)
{
    uint32_t u = __float_as_uint(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;
    if (a >= 0x477ff000u) return sign | 0x7c00;
    if (a < 0x38800000u) {
        float v = __uint_as_float(a) * 0x1p24f;
        uint32_t m = (uint32_t)rintf(v);
        return sign | (uint16_t)m;
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);
    return sign | (uint16_t)(((r >> 13) - (112u << 10)) & 0xffffu);
}

/* scales F16 [ng, out] and the first zero point 0 (flat o * ng + g) */
static __global__ void k_pack_scales(const uint8_t *qm, int64_t out, int64_t ng, uint16_t *sc, unsigned long long *bad)
{
    const int64_t n = out * ng;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = i / ng, g = i % ng;
        const uint8_t *m = qm + i * 4;
        const int16_t code = (int16_t)(uint16_t)(m[0] | m[1] << 8);
        if (m[2] < 1) atomicMin(bad, (unsigned long long)i);
        sc[g * out + o] = d_f32_to_f16(fs_qm_f16_round(fs_qm_decode(code, fs_c_q88_frac)));
    }
}

/* qzeros [ng, cols]: word (g, w) of group g's stream of zero - 1 over the outputs */
static __global__ void k_pack_qzeros(const uint8_t *qm, int64_t out, int64_t ng, int bits, uint32_t *dst, int64_t cols)
{
    const int64_t n = ng * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t g = i / cols, w = i % cols;
        dst[i] = d_word(w, 32, bits, out, zeros_of_group{qm, ng, g});
    }
}

static __global__ void k_pack_status(unsigned long long *st)
{
    const unsigned long long v = *st;
    *st = v == ~0ull ? 0ull : v + 1ull;
}

fs_status fs_cu_op_pack(fs_ctx *ctx, cuda_be *cb, int q, const fs_pack_args *a)
{
    const int64_t out = a->src.rows, in = a->src.cols;
    const int b = a->bits;
    const uint8_t *src = (const uint8_t *)fs_cu_at(a->src);
    const cudaStream_t s = cb->s[q];
    if (a->kind == FS_PACK_FORGE) {
        const int64_t rb = (in * b + 7) / 8;
        if (out == 0 || rb == 0) return FS_OK;
        k_pack_forge<<<fs_cu_blocks(out * rb, T256), T256, 0, s>>>(src, out, in, b, (uint8_t *)fs_cu_at(a->dst), rb);
        FS_LAUNCH_CHECK(ctx, k_pack_forge);
        return FS_OK;
    }
    if (a->kind == FS_PACK_GPTQ_QWEIGHT) {
        const int64_t rows = (in * b + 31) / 32;
        if (out == 0 || rows == 0) return FS_OK;
        k_pack_qweight<<<fs_cu_blocks(rows * out, T256), T256, 0, s>>>(src, out, in, b, (uint32_t *)fs_cu_at(a->dst),
                                                                     rows);
        FS_LAUNCH_CHECK(ctx, k_pack_qweight);
        return FS_OK;
    }
    const int64_t ng = in / 4, cols = (out * b + 31) / 32;
    unsigned long long *st = (unsigned long long *)fs_cu_at(a->status);
    FS_CUDA_CHECK(ctx, cudaMemsetAsync(st, 0xff, sizeof *st, s));
    if (out > 0 && ng > 0) {
        k_pack_scales<<<fs_cu_blocks(out * ng, T256), T256, 0, s>>>(src, out, ng, (uint16_t *)fs_cu_at(a->dst2), st);
        FS_LAUNCH_CHECK(ctx, k_pack_scales);
        k_pack_qzeros<<<fs_cu_blocks(ng * cols, T256), T256, 0, s>>>(src, out, ng, b, (uint32_t *)fs_cu_at(a->dst),
                                                                   cols);
        FS_LAUNCH_CHECK(ctx, k_pack_qzeros);
    }
    k_pack_status<<<1, 1, 0, s>>>(st);
    FS_LAUNCH_CHECK(ctx, k_pack_status);
    return FS_OK;
}
