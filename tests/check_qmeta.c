/* check_qmeta.c: qmeta4 bytes against hand-worked values and against
 * log2/exp2 computed in double in the test. */
#include <float.h>
#include <math.h>

#include "tests/util.h"

static void bytes_of(float s, uint8_t out[4])
{
    fs_qmeta_pack(out, fs_q88_encode(s), 7, FS_QMETA_SYM);
}

START_TEST(hand_worked_bytes)
{
    uint8_t b[4];
    bytes_of(1.0f, b);          /* log2 1 = 0 */
    ck_assert_uint_eq(b[0], 0x00); ck_assert_uint_eq(b[1], 0x00);
    ck_assert_uint_eq(b[2], 7); ck_assert_uint_eq(b[3], 0x01);
    bytes_of(0.5f, b);          /* -1 * 256 = -256 = 0xFF00 */
    ck_assert_uint_eq(b[0], 0x00); ck_assert_uint_eq(b[1], 0xFF);
    bytes_of(2.0f, b);          /* 256 = 0x0100 */
    ck_assert_uint_eq(b[0], 0x00); ck_assert_uint_eq(b[1], 0x01);
    bytes_of(0.25f, b);         /* -512 = 0xFE00 */
    ck_assert_uint_eq(b[0], 0x00); ck_assert_uint_eq(b[1], 0xFE);
    /* 0.2: log2 = -2.321928 -> *256 = -594.41 -> -594 = 0xFDAE */
    bytes_of(0.2f, b);
    ck_assert_uint_eq(b[0], 0xAE); ck_assert_uint_eq(b[1], 0xFD);
}
END_TEST

START_TEST(clamping)
{
    /* FLT_MAX: log2 = 128 - 2^-24 -> 32768 after rounding -> clamped to 32767 */
    ck_assert_int_eq(fs_q88_encode(FLT_MAX), 32767);
    ck_assert_int_eq(fs_q88_encode(INFINITY), 32767);
    /* below 1e-20 (and 0) the floor 1e-20 applies: rint(log2(1e-20) * 256) */
    int16_t floor_code = (int16_t)lrint(log2((double)1e-20f) * 256.0);
    ck_assert_int_eq(floor_code, -17008);   /* log2(1e-20) * 256 = -17008.3 */
    ck_assert_int_eq(fs_q88_encode(0.0f), floor_code);
    ck_assert_int_eq(fs_q88_encode(1e-30f), floor_code);
    ck_assert_int_eq(fs_q88_encode(-3.0f), floor_code);
    /* decoding the extremes of int16 */
    ck_assert_float_eq(fs_q88_decode(32767), (float)exp2(32767.0 / 256.0));
    ck_assert_float_eq(fs_q88_decode(-32768), ldexpf(1.0f, -128));   /* subnormal, exact */
}
END_TEST

START_TEST(encode_matches_double_log2)
{
    t_rng r = {42};
    int checked = 0;
    for (int i = 0; i < 200000; i++) {
        float s = ldexpf(1.0f + 0.5f * (t_unif(&r) + 1.0f), (int)(t_next(&r) % 120) - 60);
        double x = log2((double)s) * 256.0;
        double frac = x - floor(x);
        if (fabs(frac - 0.5) < 1e-4) continue;   /* too close to a rounding tie to judge */
        ck_assert_int_eq(fs_q88_encode(s), (int16_t)lrint(x));
        checked++;
    }
    ck_assert_int_gt(checked, 199000);
}
END_TEST

START_TEST(decode_is_correctly_rounded_exp2)
{
    /* every int16 code, subnormal results included */
    for (int c = -32768; c <= 32767; c++)
        ck_assert_float_eq(fs_q88_decode((int16_t)c), (float)exp2((double)c / 256.0));
}
END_TEST

START_TEST(unpack_reads_little_endian)
{
    uint8_t b[4] = {0xAE, 0xFD, 9, 0};
    float s, z;
    fs_qmeta_unpack(b, &s, &z);
    ck_assert_float_eq(s, (float)exp2(-594.0 / 256.0));
    ck_assert_float_eq(z, 9.0f);
}
END_TEST

Suite *fs_suite_qmeta(void)
{
    Suite *s = suite_create("qmeta");
    TCase *tc = tcase_create("q88");
    tcase_add_test(tc, hand_worked_bytes);
    tcase_add_test(tc, clamping);
    tcase_add_test(tc, encode_matches_double_log2);
    tcase_add_test(tc, decode_is_correctly_rounded_exp2);
    tcase_add_test(tc, unpack_reads_little_endian);
    suite_add_tcase(s, tc);
    return s;
}
