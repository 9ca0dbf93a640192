/* quant-math.h: the scalar arithmetic of quantization, shared word for word by
 * the CPU reference and the CUDA kernels so that both produce the same bits.
 *
 * Invariants:
 *  1. Only IEEE-754 single operations (+ - * /, rint, min/max) and bit
 *     manipulation; no libm transcendental whose last bit differs between
 *     glibc and CUDA.  Builds must not contract a*b+c into fma (gcc
 *     -ffp-contract=off, nvcc -fmad=false).
 *  2. Q8.8 codes are encoded by comparing the mantissa with FS_Q88_TABLE_HALF
 *     and decoded from FS_Q88_TABLE_FRAC (src/qmeta-table.h): one table, every
 *     backend.
 *  3. The MSE loss of a group is summed the way a warp does it: element i goes
 *     to lane i % 32 (sequential within a lane), then a butterfly over lanes.
 */
#ifndef FS_QUANT_MATH_H
#define FS_QUANT_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define FS_HD __host__ __device__ __forceinline__
#else
#define FS_HD static inline
#endif

#define FS_WARP 32

FS_HD uint32_t fs_qm_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
FS_HD float fs_qm_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* 2^n as a float, n in [-149, 127]. */
FS_HD float fs_qm_pow2i(int n)
{
    if (n >= -126) return fs_qm_float((uint32_t)(n + 127) << 23);
    return fs_qm_float(1u << (n + 149));          /* subnormal power of two */
}

/* x * 2^n, exact when the result is normal (two steps keep subnormals exact
 * up to one rounding). */
FS_HD float fs_qm_ldexp(float x, int n)
{
    if (n > 127) { x = x * fs_qm_pow2i(127); n -= 127; if (n > 127) n = 127; }
    if (n < -126) { x = x * fs_qm_pow2i(-126); n += 126; if (n < -126) n = -126; }
    return x * fs_qm_pow2i(n);
}

/* log2(max(s, 1e-20)) * 256 rounded to nearest, clamped to int16. */
FS_HD int16_t fs_qm_encode(float s, const float *half)
{
    if (!(s > 1e-20f)) s = 1e-20f;                /* also maps NaN to the floor */
    uint32_t b = fs_qm_bits(s);
    int e = (int)(b >> 23) - 127;                 /* s >= 1e-20 is normal */
    if (e > 127) return 32767;                    /* +Inf */
    float m = fs_qm_float((b & 0x7fffffu) | 0x3f800000u);   /* [1, 2) */
    int lo = 0, hi = 256;                         /* count of half[k] <= m */
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (half[mid] <= m) lo = mid + 1; else hi = mid;
    }
    int32_t code = e * 256 + lo;
    if (code > 32767) code = 32767;
    if (code < -32768) code = -32768;
    return (int16_t)code;
}

/* 2^n as a double, n in [-1022, 1023]. */
FS_HD double fs_qm_pow2d(int n)
{
    uint64_t u = (uint64_t)(n + 1023) << 52;
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* 2^(code/256) correctly rounded to float: an exact double product, then one
 * rounding (subnormal results included). */
FS_HD float fs_qm_decode(int16_t code, const double *frac)
{
    int32_t c = code;
    int32_t k = c & 255;
    int32_t e = (c - k) / 256;                    /* floor(c / 256) */
    return (float)(frac[k] * fs_qm_pow2d(e));
}

FS_HD float fs_qm_clampf(float v, float lo, float hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* The code of x: clamp(rint(x/s + z), 0, maxq), rint = half to even.  The
 * + 0.0f turns a -0 (rint of a small negative with z = 0) into +0, so the
 * dequant (q - z) * s is the +0 that a decoder computes from the byte. */
FS_HD float fs_qm_quant(float x, float s, float z, float maxq)
{
    float t = x / s;
    t = t + z;
    return fs_qm_clampf(rintf(t), 0.0f, maxq) + 0.0f;
}

/* (q - z) * s */
FS_HD float fs_qm_dequant(float q, float s, float z)
{
    float d = q - z;
    return d * s;
}

/* Range grid from a group's raw min and max: unrounded scale and zero.
 * zmin1 (the gptq v1 format, which stores zero - 1): an asymmetric zero of 0
 * becomes 1, and the scale grows to xmax / (maxq - 1) so xmax stays on the
 * grid (the group's values are all >= -s/2 there, so nothing is lost below). */
FS_HD void fs_qm_range(float gmin, float gmax, int bits, int sym, int zmin1, float *scale,
                       float *zero)
{
    float maxq = (float)((1 << bits) - 1);
    float xmin = gmin < 0.0f ? gmin : 0.0f;
    float xmax = gmax > 0.0f ? gmax : 0.0f;
    if (sym) {
        float t = -xmin > xmax ? -xmin : xmax;
        xmin = -t;
        xmax = t;
    }
    if (xmin == 0.0f && xmax == 0.0f) { xmin = -1.0f; xmax = 1.0f; }
    float s = (xmax - xmin) / maxq;
    *scale = s;
    if (sym) {
        *zero = (float)(1 << (bits - 1));
    } else {
        float z = -xmin / s;
        *zero = fs_qm_clampf(rintf(z), 0.0f, maxq);
        if (zmin1 && *zero < 1.0f) {
            *zero = 1.0f;
            *scale = xmax / (maxq - 1.0f);
        }
    }
}

/* Rounds a positive scale to the nearest float16 value (ties to even), kept
 * in [2^-24, 65504] so that it is a finite, non-zero F16: the gptq format
 * stores scales as F16 and the solver must quantize with the stored value. */
FS_HD float fs_qm_f16_round(float f)
{
    if (!(f >= 0x1p-24f)) return 0x1p-24f;
    if (f >= 65504.0f) return 65504.0f;
    uint32_t a = fs_qm_bits(f);
    if (a < 0x38800000u) {                       /* F16 subnormal: multiples of 2^-24 */
        float m = rintf(f * 16777216.0f);
        return m * 0x1p-24f;
    }
    a = a + 0xfffu + ((a >> 13) & 1u);            /* round the mantissa to 10 bits */
    return fs_qm_float(a & 0xffffe000u);
}

/* |a|^p for the L^p search: exp2(p * log2|a|) from +,-,*,/ and bit tricks only
 * (about 1e-6 relative), identical on every backend. */
FS_HD float fs_qm_pow(float a, float p)
{
    if (a < 0.0f) a = -a;
    if (a == 0.0f) return 0.0f;
    int e = 0;
    if (a < 1.17549435e-38f) { a = a * 18446744073709551616.0f; e = -64; }  /* 2^64 */
    uint32_t b = fs_qm_bits(a);
    e += (int)(b >> 23) - 127;
    float m = fs_qm_float((b & 0x7fffffu) | 0x3f800000u);  /* [1, 2) */
    if (m > 1.41421356f) { m = m * 0.5f; e += 1; }         /* [0.707, 1.414] */
    float u = (m - 1.0f) / (m + 1.0f);
    float u2 = u * u;
    float t = 0.11111111f;                         /* atanh series: 1/9 */
    t = t * u2 + 0.14285715f;                      /* 1/7 */
    t = t * u2 + 0.2f;
    t = t * u2 + 0.33333334f;
    t = t * u2 + 1.0f;
    float l2 = (float)e + 2.8853900817779268f * (u * t);   /* 2/ln 2 */
    float y = p * l2;
    if (y < -149.0f) return 0.0f;
    if (y > 127.0f) return 1.7014118e38f;          /* 2^127: large, finite */
    float n = floorf(y);
    float r = (y - n) * 0.69314718f;               /* exp(r), r in [0, ln 2) */
    float x = 2.48015873e-05f;                     /* 1/8! */
    x = x * r + 1.98412698e-04f;                   /* 1/7! */
    x = x * r + 1.38888889e-03f;
    x = x * r + 8.33333333e-03f;
    x = x * r + 4.16666667e-02f;
    x = x * r + 1.66666667e-01f;
    x = x * r + 0.5f;
    x = x * r + 1.0f;
    x = x * r + 1.0f;
    return fs_qm_ldexp(x, (int)n);
}

/* The error term of one element for the MSE search. */
FS_HD float fs_qm_err(float x, float s, float z, float maxq, int l2, float norm)
{
    float q = fs_qm_quant(x, s, z, maxq);
    float d = fs_qm_dequant(q, s, z) - x;
    return l2 ? d * d : fs_qm_pow(d, norm);
}

#endif
