/* dtype.c: element types of safetensors and their decoding to float32. */
#include <math.h>
#include <string.h>

#include "src/core/core.h"

static const struct { fs_dtype dt; const char *name; size_t size; } dtypes[] = {
    {FS_DT_F64, "F64", 8},   {FS_DT_F32, "F32", 4},   {FS_DT_F16, "F16", 2},
    {FS_DT_BF16, "BF16", 2}, {FS_DT_F8_E4M3, "F8_E4M3", 1}, {FS_DT_F8_E5M2, "F8_E5M2", 1},
    {FS_DT_I64, "I64", 8},   {FS_DT_I32, "I32", 4},   {FS_DT_I16, "I16", 2},
    {FS_DT_I8, "I8", 1},     {FS_DT_U64, "U64", 8},   {FS_DT_U32, "U32", 4},
    {FS_DT_U16, "U16", 2},   {FS_DT_U8, "U8", 1},     {FS_DT_BOOL, "BOOL", 1},
};
#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

const char *fs_dtype_name(fs_dtype dt)
{
    for (size_t i = 0; i < NDTYPES; i++)
        if (dtypes[i].dt == dt) return dtypes[i].name;
    return "?";
}

fs_dtype fs_dtype_from_name(const char *name)
{
    for (size_t i = 0; i < NDTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0) return dtypes[i].dt;
    return FS_DT_INVALID;
}

size_t fs_dtype_size(fs_dtype dt)
{
    for (size_t i = 0; i < NDTYPES; i++)
        if (dtypes[i].dt == dt) return dtypes[i].size;
    return 0;
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float fs_bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

float fs_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (man << 13)); /* Inf/NaN */
    if (exp == 0) {                    /* zero or subnormal: man * 2^-24, exact */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

float fs_f8e4m3_to_f32(uint8_t v)
{
    int sign = v & 0x80;
    int exp = (v >> 3) & 0xf, man = v & 7;
    float r;
    if (exp == 0xf && man == 7) return NAN;     /* S.1111.111: the only NaN, no Inf */
    if (exp == 0) r = (float)man * 0x1p-9f;     /* subnormal: man/8 * 2^-6 */
    else r = ldexpf(1.0f + (float)man / 8.0f, exp - 7);
    return sign ? -r : r;
}

uint16_t fs_f32_to_bf16(float f)
{
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

uint16_t fs_f32_to_f16(float f)
{
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00;                 /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00;                /* rounds to Inf */
    if (a < 0x38800000u) {                                     /* f16 subnormal/zero */
        float v = bits_to_f32(a) * 0x1p24f;                    /* exact scale */
        uint32_t m = (uint32_t)rintf(v);                       /* half to even */
        return sign | (uint16_t)m;                             /* m may reach 0x400 */
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);                 /* round to 10 bits */
    return sign | (uint16_t)(((r >> 13) - (112u << 10)) & 0xffffu);
}

fs_status fs_check_finite(fs_ctx *ctx, const char *what, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return fs_ctx_err(ctx, FS_ERR_NUMERIC, "%s: non-finite value (%s) at flat index %zu",
                              what, isnan(x[i]) ? "NaN" : "Inf", i);
    return FS_OK;
}

fs_status fs_decode_f32(fs_ctx *ctx, const char *what, fs_dtype dt, const void *src,
                        size_t n, float *dst)
{
    const uint8_t *b = src;
    switch (dt) {
    case FS_DT_F32:
        memcpy(dst, src, n * 4);
        break;
    case FS_DT_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = fs_f16_to_f32((uint16_t)(b[2 * i] | (b[2 * i + 1] << 8)));
        break;
    case FS_DT_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = fs_bf16_to_f32((uint16_t)(b[2 * i] | (b[2 * i + 1] << 8)));
        break;
    case FS_DT_F8_E4M3:
        for (size_t i = 0; i < n; i++) dst[i] = fs_f8e4m3_to_f32(b[i]);
        break;
    default:
        return fs_ctx_err(ctx, FS_ERR_FORMAT,
                          "%s: unsupported dtype %s (expected F32, F16, BF16 or F8_E4M3)",
                          what, fs_dtype_name(dt));
    }
    return fs_check_finite(ctx, what, dst, n);
}
