/* check_dtype.c: decoding of F16, BF16 and F8_E4M3 against hand-worked bit
 * patterns, and the non-finite checks. */
#include <math.h>
#include <string.h>

#include "tests/util.h"

START_TEST(f16_hand)
{
    ck_assert_float_eq(fs_f16_to_f32(0x3C00), 1.0f);
    ck_assert_float_eq(fs_f16_to_f32(0xC000), -2.0f);
    ck_assert_float_eq(fs_f16_to_f32(0x7BFF), 65504.0f);            /* max */
    ck_assert_float_eq(fs_f16_to_f32(0x0001), ldexpf(1.0f, -24));   /* smallest subnormal */
    ck_assert_float_eq(fs_f16_to_f32(0x03FF), 1023.0f * ldexpf(1.0f, -24));
    ck_assert_float_eq(fs_f16_to_f32(0x0400), ldexpf(1.0f, -14));   /* smallest normal */
    ck_assert(isinf(fs_f16_to_f32(0x7C00)));
    ck_assert(isnan(fs_f16_to_f32(0x7E00)));
    ck_assert(signbit(fs_f16_to_f32(0x8000)));
}
END_TEST

START_TEST(bf16_hand)
{
    ck_assert_float_eq(fs_bf16_to_f32(0x3F80), 1.0f);
    ck_assert_float_eq(fs_bf16_to_f32(0xC040), -3.0f);
    ck_assert_float_eq(fs_bf16_to_f32(0x0001), ldexpf(1.0f, -133));  /* subnormal */
    ck_assert_float_eq(fs_bf16_to_f32(0x7F7F), 0x1.FEp127f);         /* max */
    ck_assert(isnan(fs_bf16_to_f32(0x7FC0)));
    ck_assert(isinf(fs_bf16_to_f32(0xFF80)));
}
END_TEST

START_TEST(f8_hand)
{
    /* E4M3FN: bias 7, 3 mantissa bits, S.1111.111 is NaN, no infinities */
    ck_assert_float_eq(fs_f8e4m3_to_f32(0x00), 0.0f);
    ck_assert_float_eq(fs_f8e4m3_to_f32(0x38), 1.0f);                /* 0.0111.000 */
    ck_assert_float_eq(fs_f8e4m3_to_f32(0x01), ldexpf(1.0f, -9));    /* smallest subnormal */
    ck_assert_float_eq(fs_f8e4m3_to_f32(0x07), 7.0f * ldexpf(1.0f, -9));
    ck_assert_float_eq(fs_f8e4m3_to_f32(0x08), ldexpf(1.0f, -6));    /* smallest normal */
    ck_assert_float_eq(fs_f8e4m3_to_f32(0x7E), 448.0f);              /* max */
    ck_assert_float_eq(fs_f8e4m3_to_f32(0xFE), -448.0f);
    ck_assert_float_eq(fs_f8e4m3_to_f32(0x78), 256.0f);              /* 0.1111.000: finite */
    ck_assert_float_eq(fs_f8e4m3_to_f32(0xB4), -0.75f);              /* 1.0110.100 */
    ck_assert(isnan(fs_f8e4m3_to_f32(0x7F)));
    ck_assert(isnan(fs_f8e4m3_to_f32(0xFF)));
}
END_TEST

START_TEST(f8_every_code_finite_except_nan)
{
    int nans = 0;
    for (int v = 0; v < 256; v++) {
        float f = fs_f8e4m3_to_f32((uint8_t)v);
        if (isnan(f)) nans++;
        else ck_assert(fabsf(f) <= 448.0f);
    }
    ck_assert_int_eq(nans, 2);
}
END_TEST

START_TEST(round_trips)
{
    /* every finite f16 survives f16 -> f32 -> f16; bf16 likewise */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7C00) == 0x7C00) continue;
        ck_assert_uint_eq(fs_f32_to_f16(fs_f16_to_f32((uint16_t)h)), h);
    }
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7F80) == 0x7F80) continue;
        ck_assert_uint_eq(fs_f32_to_bf16(fs_bf16_to_f32((uint16_t)h)), h);
    }
    /* halfway cases round to even */
    ck_assert_uint_eq(fs_f32_to_bf16(0x1.01p0f), 0x3F80);   /* 1 + 2^-8: tie, even is 1.0 */
    ck_assert_uint_eq(fs_f32_to_bf16(0x1.03p0f), 0x3F82);   /* 1 + 3*2^-8: tie, up to even */
    ck_assert_uint_eq(fs_f32_to_f16(65520.0f), 0x7C00);      /* rounds past max to Inf */
}
END_TEST

START_TEST(decode_rejects_nonfinite)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    uint16_t src[5] = {0x3F80, 0x3F80, 0x3F80, 0x7FC0, 0x3F80};   /* NaN at index 3 */
    float dst[5];
    ck_assert_int_eq(fs_decode_f32(&ctx, "tensor 'weight'", FS_DT_BF16, src, 5, dst),
                     FS_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "'weight'"));
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "index 3"));
    fs_ctx_init(&ctx);
    uint8_t f8[3] = {0x38, 0x7F, 0x38};
    float d8[3];
    ck_assert_int_eq(fs_decode_f32(&ctx, "w", FS_DT_F8_E4M3, f8, 3, d8), FS_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "index 1"));
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_decode_f32(&ctx, "w", FS_DT_I32, f8, 0, d8), FS_ERR_FORMAT);
}
END_TEST

Suite *fs_suite_dtype(void)
{
    Suite *s = suite_create("dtype");
    TCase *tc = tcase_create("decode");
    tcase_add_test(tc, f16_hand);
    tcase_add_test(tc, bf16_hand);
    tcase_add_test(tc, f8_hand);
    tcase_add_test(tc, f8_every_code_finite_except_nan);
    tcase_add_test(tc, round_trips);
    tcase_add_test(tc, decode_rejects_nonfinite);
    suite_add_tcase(s, tc);
    return s;
}
