/* ops-elem.cu: the elementwise and row ops of the CUDA backend: fill, bias
 * add, add, copy (F32 <-> BF16), SwiGLU, the shared-expert gate, RMSNorm,
 * RoPE, decode, gather, scatter-add, permute.  Each computes what its cpu/ (its .c) twin computes.
 *
 * Invariants:
 *  1. Grid-stride loops over rows * cols with 64-bit indices: any view size.
 *  2. Bit-identical to the CPU where the arithmetic is the same sequence of
 *     IEEE operations (fill, add, bias, copy, decode, gather, scatter-add,
 *     permute, RoPE's rotation; -fmad=false keeps a * b + c two roundings);
 *     RMSNorm's sum of squares is a tree (the CPU's runs in index order) and
 *     SwiGLU's expf is CUDA's (2 ulp): parity within tolerance there
 *     (tests/check_cuda.c).
 *  3. Scatter-add runs one thread per column over the rows in order, so
 *     repeated destination rows get the CPU's sums, bit for bit.
 *  4. A data error (an index out of range) sets the queue's device error word
 *     (cuda-be.h invariant 2) and leaves the output unspecified.
 */
#include <math.h>
#include <string.h>

#include "cuda/cuda-be.h"

#define T256 256

static __device__ void flag(int *derr, int code)
{
    atomicCAS(derr, 0, code);
}

/* ---- fill ---------------------------------------------------------------------------- */

static __global__ void k_fill(char *base, int64_t rows, int64_t cols, int64_t ldb, int es, uint64_t pat)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        char *p = base + (i / cols) * ldb + (i % cols) * es;
        switch (es) {
        case 1: *(uint8_t *)p = (uint8_t)pat; break;
        case 2: *(uint16_t *)p = (uint16_t)pat; break;
        case 4: *(uint32_t *)p = (uint32_t)pat; break;
        default: *(uint64_t *)p = pat; break;
        }
    }
}

fs_status fs_cu_op_fill(fs_ctx *ctx, cuda_be *cb, int q, const fs_fill_args *a)
{
    const fs_tensor &t = a->t;
    if (t.rows == 0 || t.cols == 0) return FS_OK;
    /* the element's bytes, converted on the host exactly as cpu/elementwise.c does */
    uint64_t pat = 0;
    const double v = a->value;
    switch (t.dt) {
    case FS_DT_F32: { float f = (float)v; memcpy(&pat, &f, 4); break; }
    case FS_DT_F64: memcpy(&pat, &v, 8); break;
    case FS_DT_BF16: pat = fs_f32_to_bf16((float)v); break;
    case FS_DT_I32: { int32_t x = (int32_t)v; memcpy(&pat, &x, 4); break; }
    case FS_DT_I64: { int64_t x = (int64_t)v; memcpy(&pat, &x, 8); break; }
    default: pat = (uint8_t)v; break;
    }
    const int es = (int)fs_dtype_size(t.dt);
    k_fill<<<fs_cu_blocks(t.rows * t.cols, T256), T256, 0, cb->s[q]>>>((char *)fs_cu_at(t), t.rows, t.cols,
                                                                      t.ld * es, es, pat);
    FS_LAUNCH_CHECK(ctx, k_fill);
    return FS_OK;
}

/* ---- add, bias add, SwiGLU --------------------------------------------------------------- */

/* y += x (x_row_stride 0: a bias row) */
static __global__ void k_add(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows, int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        y[r * ldy + c] += x[r * ldx + c];
    }
}

fs_status fs_cu_op_add(fs_ctx *ctx, cuda_be *cb, int q, const fs_add_args *a)
{
    if (a->y.rows == 0 || a->y.cols == 0) return FS_OK;
    k_add<<<fs_cu_blocks(a->y.rows * a->y.cols, T256), T256, 0, cb->s[q]>>>(
        FS_CU_F32(a->y), a->y.ld, FS_CU_F32(a->x), a->x.ld, a->y.rows, a->y.cols);
    FS_LAUNCH_CHECK(ctx, k_add);
    return FS_OK;
}

fs_status fs_cu_op_bias_add(fs_ctx *ctx, cuda_be *cb, int q, const fs_bias_args *a)
{
    if (a->y.rows == 0 || a->y.cols == 0) return FS_OK;
    k_add<<<fs_cu_blocks(a->y.rows * a->y.cols, T256), T256, 0, cb->s[q]>>>(FS_CU_F32(a->y), a->y.ld,
                                                                           FS_CU_F32(a->b), 0, a->y.rows,
                                                                           a->y.cols);
    FS_LAUNCH_CHECK(ctx, k_add);
    return FS_OK;
}

static __global__ void k_swiglu(const float *g, int64_t ldg, const float *u, int64_t ldu, float *o, int64_t ldo,
                                int64_t rows, int64_t cols)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        const float z = g[r * ldg + c];
        o[r * ldo + c] = z / (1.0f + expf(-z)) * u[r * ldu + c];
    }
}

fs_status fs_cu_op_swiglu(fs_ctx *ctx, cuda_be *cb, int q, const fs_swiglu_args *a)
{
    if (a->g.rows == 0 || a->g.cols == 0) return FS_OK;
    k_swiglu<<<fs_cu_blocks(a->g.rows * a->g.cols, T256), T256, 0, cb->s[q]>>>(
        FS_CU_F32(a->g), a->g.ld, FS_CU_F32(a->u), a->u.ld, FS_CU_F32(a->out), a->out.ld, a->g.rows, a->g.cols);
    FS_LAUNCH_CHECK(ctx, k_swiglu);
    return FS_OK;
}

/* y [n, c] += sigmoid(x . g) * src per row (qwen2_moe's shared-expert gate):
 * one block per row; the dot is a tree of per-thread partial sums in F32
 * (the CPU's runs in column order: parity within tolerance), the sigmoid
 * 1 / (1 + expf(-z)) with CUDA's expf. */
#define GATE_THREADS 256

static __global__ void k_gate_add(float *y, int64_t ldy, const float *src, int64_t lds, const float *x, int64_t ldx,
                                  const float *g, int64_t d, int64_t c)
{
    __shared__ float red[GATE_THREADS];
    const int64_t r = blockIdx.x;
    float z = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) z += x[r * ldx + i] * g[i];
    red[threadIdx.x] = z;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
        __syncthreads();
    }
    const float s = 1.0f / (1.0f + expf(-red[0]));
    for (int64_t j = threadIdx.x; j < c; j += blockDim.x) y[r * ldy + j] += s * src[r * lds + j];
}

fs_status fs_cu_op_gate_add(fs_ctx *ctx, cuda_be *cb, int q, const fs_gate_add_args *a)
{
    if (a->y.rows == 0) return FS_OK;
    if (a->y.rows > 0x7fffffff) return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda gate_add: %lld rows", (long long)a->y.rows);
    k_gate_add<<<(unsigned)a->y.rows, GATE_THREADS, 0, cb->s[q]>>>(FS_CU_F32(a->y), a->y.ld, FS_CU_F32(a->src),
                                                                   a->src.ld, FS_CU_F32(a->x), a->x.ld,
                                                                   FS_CU_F32(a->g), a->x.cols, a->y.cols);
    FS_LAUNCH_CHECK(ctx, k_gate_add);
    return FS_OK;
}

/* ---- copy ------------------------------------------------------------------------------------ */

/* src/core/dtype.c's conversions, on the device */
static __device__ __forceinline__ uint16_t d_f32_to_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static __device__ __forceinline__ float d_bf16_to_f32(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

static __device__ __forceinline__ float d_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

static __device__ __forceinline__ float d_f8e4m3_to_f32(uint8_t v)
{
    int sign = v & 0x80;
    int exp = (v >> 3) & 0xf, man = v & 7;
    float r;
    if (exp == 0xf && man == 7) return __uint_as_float(0x7fc00000u);
    if (exp == 0) r = (float)man * 0x1p-9f;
    else r = ldexpf(1.0f + (float)man / 8.0f, exp - 7);
    return sign ? -r : r;
}

/* mode 0: F32 -> BF16, 1: BF16 -> F32 */
static __global__ void k_convert(char *d, int64_t ldd, const char *s, int64_t lds, int64_t rows, int64_t cols, int mode)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        if (mode == 0) ((uint16_t *)(d + r * ldd))[c] = d_f32_to_bf16(((const float *)(s + r * lds))[c]);
        else ((float *)(d + r * ldd))[c] = d_bf16_to_f32(((const uint16_t *)(s + r * lds))[c]);
    }
}

fs_status fs_cu_op_copy(fs_ctx *ctx, cuda_be *cb, int q, const fs_copy_args *a)
{
    const fs_tensor &d = a->dst, &s = a->src;
    if (d.rows == 0 || d.cols == 0) return FS_OK;
    const size_t ed = fs_dtype_size(d.dt), es = fs_dtype_size(s.dt);
    if (d.dt == s.dt) {
        FS_CUDA_CHECK(ctx, cudaMemcpy2DAsync(fs_cu_at(d), (size_t)d.ld * ed, fs_cu_at(s), (size_t)s.ld * es,
                                             (size_t)d.cols * ed, (size_t)d.rows, cudaMemcpyDeviceToDevice,
                                             cb->s[q]));
        return FS_OK;
    }
    k_convert<<<fs_cu_blocks(d.rows * d.cols, T256), T256, 0, cb->s[q]>>>(
        (char *)fs_cu_at(d), d.ld * (int64_t)ed, (const char *)fs_cu_at(s), s.ld * (int64_t)es, d.rows, d.cols,
        d.dt == FS_DT_BF16 ? 0 : 1);
    FS_LAUNCH_CHECK(ctx, k_convert);
    return FS_OK;
}

/* ---- RMSNorm: one block per row ------------------------------------------------------------------ */

static __global__ void k_rmsnorm(const float *x, int64_t ldx, const float *w, int64_t d, float eps, float *o,
                                 int64_t ldo)
{
    __shared__ float part[T256];
    const float *xr = x + (int64_t)blockIdx.x * ldx;
    float *orow = o + (int64_t)blockIdx.x * ldo;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
    part[threadIdx.x] = ss;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
        __syncthreads();
    }
    const float inv = 1.0f / sqrtf(part[0] / (float)d + eps);
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) orow[i] = w[i] * (xr[i] * inv);   /* o may be x */
}

fs_status fs_cu_op_rmsnorm(fs_ctx *ctx, cuda_be *cb, int q, const fs_rmsnorm_args *a)
{
    if (a->x.rows == 0 || a->x.cols == 0) return FS_OK;
    if (a->x.rows > 0x7fffffff) return fs_ctx_err(ctx, FS_ERR_USAGE, "cuda rmsnorm: %lld rows", (long long)a->x.rows);
    k_rmsnorm<<<(unsigned)a->x.rows, T256, 0, cb->s[q]>>>(FS_CU_F32(a->x), a->x.ld, FS_CU_F32(a->w), a->x.cols,
                                                          a->eps, FS_CU_F32(a->out), a->out.ld);
    FS_LAUNCH_CHECK(ctx, k_rmsnorm);
    return FS_OK;
}

/* ---- RoPE: one thread per (row, pair), every head ------------------------------------------------- */

static __global__ void k_rope(float *x, int64_t ldx, int64_t n, int64_t heads, int64_t hs, int64_t c0, int64_t half,
                              int interleaved, const float *inv_freq, float attn_factor, int64_t T)
{
    const int64_t N = n * half;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < N; k += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = k / half, i = k % half, p = t % T;
        const double ang = (double)p * (double)inv_freq[i];
        const float c = (float)cos(ang) * attn_factor, s = (float)sin(ang) * attn_factor;
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + t * ldx + h * hs + c0;
            float *pa = interleaved ? v + 2 * i : v + i, *pb = interleaved ? v + 2 * i + 1 : v + i + half;
            const float xa = *pa, xb = *pb;
            *pa = xa * c - xb * s;
            *pb = xb * c + xa * s;
        }
    }
}

fs_status fs_cu_op_rope(fs_ctx *ctx, cuda_be *cb, int q, const fs_rope_args *a)
{
    if (a->x.rows == 0) return FS_OK;
    const int64_t half = a->d / 2;
    k_rope<<<fs_cu_blocks(a->x.rows * half, T256), T256, 0, cb->s[q]>>>(FS_CU_F32(a->x), a->x.ld, a->x.rows,
                                                                       a->heads, a->hs, a->c0, half, a->interleaved,
                                                                       FS_CU_F32(a->inv_freq), a->attn_factor, a->T);
    FS_LAUNCH_CHECK(ctx, k_rope);
    return FS_OK;
}

/* ---- decode: F32 / F16 / BF16 / F8_E4M3 (block-scaled) -> F32 --------------------------------------- */

static __global__ void k_decode(const char *src, int64_t lds, int dt, const float *scale, int64_t ldsc, int64_t b0,
                                int64_t b1, float *dst, int64_t ldd, int64_t rows, int64_t cols,
                                unsigned long long *first)
{
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / cols, c = i % cols;
        const uint8_t *s = (const uint8_t *)(src + r * lds);
        float v;
        switch (dt) {
        case FS_DT_F32: v = __uint_as_float((uint32_t)s[4 * c] | (uint32_t)s[4 * c + 1] << 8 |
                                            (uint32_t)s[4 * c + 2] << 16 | (uint32_t)s[4 * c + 3] << 24); break;
        case FS_DT_F16: v = d_f16_to_f32((uint16_t)(s[2 * c] | (s[2 * c + 1] << 8))); break;
        case FS_DT_BF16: v = d_bf16_to_f32((uint16_t)(s[2 * c] | (s[2 * c + 1] << 8))); break;
        default:
            v = d_f8e4m3_to_f32(s[c]);
            if (scale) v = (float)((double)v * (double)scale[(r / b0) * ldsc + c / b1]);
            break;
        }
        dst[r * ldd + c] = v;
        if (!isfinite(v)) atomicMin(first, (unsigned long long)i);
    }
}

/* status = first + 1, or 0 when no index was recorded (all ones) */
static __global__ void k_decode_status(unsigned long long *st)
{
    const unsigned long long v = *st;
    *st = v == ~0ull ? 0ull : v + 1ull;
}

fs_status fs_cu_op_decode(fs_ctx *ctx, cuda_be *cb, int q, const fs_decode_args *a)
{
    const int64_t R = a->src.rows, C = a->src.cols;
    unsigned long long *st = (unsigned long long *)fs_cu_at(a->status);
    FS_CUDA_CHECK(ctx, cudaMemsetAsync(st, 0xff, sizeof *st, cb->s[q]));
    if (R > 0 && C > 0) {
        const int64_t es = (int64_t)fs_dtype_size(a->src.dt);
        k_decode<<<fs_cu_blocks(R * C, T256), T256, 0, cb->s[q]>>>(
            (const char *)fs_cu_at(a->src), a->src.ld * es, (int)a->src.dt,
            a->scale.buf ? FS_CU_F32(a->scale) : NULL, a->scale.buf ? a->scale.ld : 0, a->b0, a->b1,
            FS_CU_F32(a->dst), a->dst.ld, R, C, st);
        FS_LAUNCH_CHECK(ctx, k_decode);
    }
    k_decode_status<<<1, 1, 0, cb->s[q]>>>(st);
    FS_LAUNCH_CHECK(ctx, k_decode_status);
    return FS_OK;
}

/* ---- gather, scatter-add -------------------------------------------------------------------------- */

static __global__ void k_gather(char *dst, int64_t ldd, const char *src, int64_t lds, int64_t srows,
                                const int32_t *rows, int64_t m, int64_t rowbytes, int *derr)
{
    const int64_t n = m * rowbytes;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / rowbytes, b = i % rowbytes;
        const int32_t sr = rows[r];
        if (sr < 0 || sr >= srows) {
            flag(derr, FS_CU_DERR_GATHER);
            continue;
        }
        dst[r * ldd + b] = src[sr * lds + b];
    }
}

fs_status fs_cu_op_gather(fs_ctx *ctx, cuda_be *cb, int q, const fs_gather_args *a)
{
    const int64_t es = (int64_t)fs_dtype_size(a->dst.dt), rb = a->dst.cols * es;
    if (a->dst.rows == 0 || rb == 0) return FS_OK;
    k_gather<<<fs_cu_blocks(a->dst.rows * rb, T256), T256, 0, cb->s[q]>>>(
        (char *)fs_cu_at(a->dst), a->dst.ld * es, (const char *)fs_cu_at(a->src), a->src.ld * es, a->src.rows,
        (const int32_t *)fs_cu_at(a->rows), a->dst.rows, rb, cb->derr + q);
    FS_LAUNCH_CHECK(ctx, k_gather);
    return FS_OK;
}

/* invariant 3: thread c walks the rows in order */
static __global__ void k_scatter(float *dst, int64_t ldd, int64_t drows, const float *src, int64_t lds,
                                 const int32_t *rows, const float *w, int64_t m, int64_t cols, int *derr)
{
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (int64_t)gridDim.x * blockDim.x)
        for (int64_t r = 0; r < m; r++) {
            const int32_t dr = rows[r];
            if (dr < 0 || dr >= drows) {
                flag(derr, FS_CU_DERR_SCATTER);
                return;
            }
            float *d = dst + dr * ldd + c;
            const float s = src[r * lds + c];
            if (w) *d += w[r] * s;
            else *d += s;
        }
}

fs_status fs_cu_op_scatter_add(fs_ctx *ctx, cuda_be *cb, int q, const fs_scatter_args *a)
{
    if (a->src.rows == 0 || a->dst.cols == 0) return FS_OK;
    k_scatter<<<fs_cu_blocks(a->dst.cols, 128), 128, 0, cb->s[q]>>>(
        FS_CU_F32(a->dst), a->dst.ld, a->dst.rows, FS_CU_F32(a->src), a->src.ld, (const int32_t *)fs_cu_at(a->rows),
        a->w.buf ? FS_CU_F32(a->w) : NULL, a->src.rows, a->dst.cols, cb->derr + q);
    FS_LAUNCH_CHECK(ctx, k_scatter);
    return FS_OK;
}

/* ---- permute ---------------------------------------------------------------------------------------- */

static __global__ void k_permute(const char *src, int64_t lds, char *dst, int64_t ldd, const int32_t *perm,
                                 int64_t R, int64_t C, int es, int rows_too, int inverse, int *derr)
{
    const int64_t n = R * C;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n; x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = x / C, k = x % C;
        const int32_t pk = perm[k], pi = rows_too ? perm[i] : (int32_t)i;
        if (pk < 0 || pk >= C || pi < 0 || pi >= R) {            /* rows_too: R == C */
            flag(derr, FS_CU_DERR_PERMUTE);
            continue;
        }
        const char *s;
        char *d;
        if (!inverse) {
            s = src + pi * lds + (int64_t)pk * es;
            d = dst + i * ldd + k * es;
        } else {
            s = src + i * lds + k * es;
            d = dst + pi * ldd + (int64_t)pk * es;
        }
        if (es == 4) *(uint32_t *)d = *(const uint32_t *)s;
        else *d = *s;
    }
}

fs_status fs_cu_op_permute(fs_ctx *ctx, cuda_be *cb, int q, const fs_permute_args *a)
{
    const int64_t R = a->src.rows, C = a->src.cols, es = (int64_t)fs_dtype_size(a->src.dt);
    if (R == 0 || C == 0) return FS_OK;
    k_permute<<<fs_cu_blocks(R * C, T256), T256, 0, cb->s[q]>>>(
        (const char *)fs_cu_at(a->src), a->src.ld * es, (char *)fs_cu_at(a->dst), a->dst.ld * es,
        (const int32_t *)fs_cu_at(a->perm), R, C, (int)es, a->rows_too, a->inverse, cb->derr + q);
    FS_LAUNCH_CHECK(ctx, k_permute);
    return FS_OK;
}
