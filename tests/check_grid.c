/* check_grid.c: the range grid on hand-worked groups and the MSE / L^p search
 * against an exhaustive evaluation written here in double precision. */
#include <math.h>
#include <string.h>

#include "tests/util.h"

/* Candidates whose exhaustive losses differ by less than this (relative) are a
 * tie that float summation may break either way. */
#define MSE_TIE_REL 1e-5

static fs_grid_params params(int bits, int sym, int mse, float shrink, int n, float norm)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    q.bits = bits; q.sym = sym; q.grid = mse ? FS_GRID_MSE : FS_GRID_ABSMAX;
    q.shrink = shrink; q.grid_n = n; q.norm = norm;
    fs_grid_params gp;
    ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
    return gp;
}

static int16_t code_of(const uint8_t b[4]) { return (int16_t)(uint16_t)(b[0] | b[1] << 8); }
static double q88(double s) { return exp2(rint(log2(s) * 256.0) / 256.0); }

START_TEST(range_asym_hand)
{
    fs_grid_params gp = params(4, 0, 0, 0.2f, 100, 2.4f);
    /* min -1, max 2: scale 3/15 = 0.2, zero rint(1/0.2) = 5, code rint(log2 .2 * 256) = -594 */
    float x[4] = {-1.0f, 0.5f, 2.0f, 0.25f}, s, z;
    uint8_t b[4];
    fs_grid_group(&gp, x, 4, b, &s, &z);
    ck_assert_int_eq(code_of(b), -594);
    ck_assert_uint_eq(b[2], 5);
    ck_assert_uint_eq(b[3], 0);
    ck_assert_float_eq(z, 5.0f);
    ck_assert_float_eq(s, (float)exp2(-594.0 / 256.0));
    fs_grid_params_free(&gp);
}
END_TEST

START_TEST(range_asym_positive_only)
{
    fs_grid_params gp = params(2, 0, 0, 0.2f, 100, 2.4f);
    /* all >= 0: xmin is 0, scale 1.5/3 = 0.5 (code -256 = 00 FF), zero 0 */
    float x[3] = {0.5f, 1.5f, 1.0f}, s, z;
    uint8_t b[4];
    fs_grid_group(&gp, x, 3, b, &s, &z);
    ck_assert_uint_eq(b[0], 0x00); ck_assert_uint_eq(b[1], 0xFF);
    ck_assert_uint_eq(b[2], 0); ck_assert_uint_eq(b[3], 0);
    fs_grid_params_free(&gp);
}
END_TEST

START_TEST(range_sym_hand)
{
    fs_grid_params gp = params(4, 1, 0, 0.2f, 100, 2.4f);
    /* max |x| 4: range [-4, 4], scale 8/15, zero 8, flags 1 */
    float x[3] = {-4.0f, 1.0f, 2.0f}, s, z;
    uint8_t b[4];
    fs_grid_group(&gp, x, 3, b, &s, &z);
    ck_assert_int_eq(code_of(b), (int16_t)rint(log2(8.0 / 15.0) * 256.0));
    ck_assert_uint_eq(b[2], 8); ck_assert_uint_eq(b[3], 1);
    fs_grid_params_free(&gp);
}
END_TEST

START_TEST(range_all_zero)
{
    for (int sym = 0; sym <= 1; sym++) {
        fs_grid_params gp = params(3, sym, 0, 0.2f, 100, 2.4f);
        float x[32] = {0}, s, z;
        uint8_t b[4];
        fs_grid_group(&gp, x, 32, b, &s, &z);
        /* [-1, 1]: scale 2/7; asym zero rint(1 / (2/7)) in float: 2/7 rounds up, the
         * quotient is 3.4999998 and rounds to 3; sym zero is 2^(3-1) = 4 */
        ck_assert_int_eq(code_of(b), (int16_t)rint(log2(2.0 / 7.0) * 256.0));
        ck_assert_uint_eq(b[2], sym ? 4 : 3);
        fs_grid_params_free(&gp);
    }
}
END_TEST

/* The loss of one candidate, exhaustively in double with the true pow. */
static double exhaustive_loss(const float *x, int n, double s, double z, double maxq, double norm)
{
    double tot = 0;
    for (int i = 0; i < n; i++) {
        double q = rint((double)x[i] / s + z);
        q = q < 0 ? 0 : (q > maxq ? maxq : q);
        double e = fabs((q - z) * s - (double)x[i]);
        tot += norm == 2.0 ? e * e : pow(e, norm);
    }
    return tot;
}

static void mse_case(int bits, int sym, float norm, int n, float shrink, int ncand, uint64_t seed)
{
    fs_grid_params gp = params(bits, sym, 1, shrink, ncand, norm);
    fs_grid_params ga = params(bits, sym, 0, shrink, ncand, norm);
    t_rng r = {seed};
    float x[256];
    int exact = 0, groups = 200;
    for (int g = 0; g < groups; g++) {
        for (int i = 0; i < n; i++) x[i] = t_gauss(&r) * (g % 3 == 0 ? 0.01f : 1.0f) + (sym ? 0 : 0.3f);
        if (g % 7 == 0) x[g % n] = 8.0f;    /* an outlier makes shrinking pay off */
        uint8_t b[4], ba[4];
        float s, z, sa, za;
        fs_grid_group(&gp, x, n, b, &s, &z);
        fs_grid_group(&ga, x, n, ba, &sa, &za);
        ck_assert_float_eq(z, za);                /* the zero stays fixed */
        /* exhaustive: every candidate from the range scale's Q8.8 value */
        double base = exp2(code_of(ba) / 256.0), best = INFINITY, best_s = 0;
        double losses[1024], codes[1024];
        for (int k = 0; k < ncand; k++) {
            double p = ncand == 1 ? 1.0 : 1.0 - (1.0 - shrink) * k / (ncand - 1);
            double sk = (double)((float)base * (float)p);
            losses[k] = exhaustive_loss(x, n, sk, z, (1 << bits) - 1, norm);
            codes[k] = rint(log2(sk) * 256.0);
            if (losses[k] < best) { best = losses[k]; best_s = sk; }
        }
        /* our choice must be a minimiser up to float summation */
        int ok = 0;
        for (int k = 0; k < ncand; k++)
            if (codes[k] == code_of(b) && losses[k] <= best * (1 + MSE_TIE_REL)) ok = 1;
        ck_assert_msg(ok, "group %d: chosen code %d is not a minimiser (best loss %g at scale %g)",
                      g, code_of(b), best, best_s);
        if (code_of(b) == (int16_t)rint(log2(best_s) * 256.0)) exact++;
    }
    ck_assert_int_ge(exact, groups * 95 / 100);    /* ties are rare */
    fs_grid_params_free(&gp);
    fs_grid_params_free(&ga);
}

START_TEST(mse_vs_exhaustive_lp)  { mse_case(4, 0, 2.4f, 128, 0.2f, 100, 1); }
END_TEST
START_TEST(mse_vs_exhaustive_l2)  { mse_case(4, 1, 2.0f, 128, 0.2f, 100, 2); }
END_TEST
START_TEST(mse_vs_exhaustive_2bit) { mse_case(2, 0, 2.4f, 64, 0.5f, 37, 3); }
END_TEST
START_TEST(mse_vs_exhaustive_odd_n) { mse_case(3, 1, 3.0f, 45, 0.3f, 11, 4); }
END_TEST

START_TEST(mse_never_worse_than_range)
{
    fs_grid_params gp = params(4, 0, 1, 0.2f, 100, 2.4f);
    fs_grid_params ga = params(4, 0, 0, 0.2f, 100, 2.4f);
    t_rng r = {9};
    float x[128];
    for (int g = 0; g < 100; g++) {
        for (int i = 0; i < 128; i++) x[i] = t_gauss(&r);
        x[g] = 6.0f;
        uint8_t b[4];
        float s, z, sa, za;
        fs_grid_group(&gp, x, 128, b, &s, &z);
        fs_grid_group(&ga, x, 128, b, &sa, &za);
        /* the range scale (p = 1) is a candidate; Q8.8 rounding of the winner can cost
         * at most a fraction of a step, so compare with slack */
        ck_assert(exhaustive_loss(x, 128, s, z, 15, 2.4) <=
                  exhaustive_loss(x, 128, sa, za, 15, 2.4) * 1.01);
    }
    fs_grid_params_free(&gp);
    fs_grid_params_free(&ga);
}
END_TEST

START_TEST(partial_last_group)
{
    /* in = 172 with G = 32: 6 groups, the last over 12 real columns only */
    fs_grid_params gp = params(4, 0, 1, 0.2f, 50, 2.4f);
    t_rng r = {5};
    float W[3 * 172];
    for (int i = 0; i < 3 * 172; i++) W[i] = t_gauss(&r);
    uint8_t qm[3 * 6 * 4];
    fs_grid_matrix(&gp, W, 3, 172, 32, qm);
    for (int row = 0; row < 3; row++)
        for (int g = 0; g < 6; g++) {
            int n = g < 5 ? 32 : 12;
            uint8_t b[4];
            float s, z;
            fs_grid_group(&gp, W + row * 172 + g * 32, n, b, &s, &z);
            ck_assert_mem_eq(b, qm + (row * 6 + g) * 4, 4);
        }
    /* the last group's range depends on its 12 values: a change in column 171
     * moves it, a change in column 159 (group 4) does not */
    W[171] = 50.0f;
    uint8_t qm2[3 * 6 * 4];
    fs_grid_matrix(&gp, W, 3, 172, 32, qm2);
    ck_assert(memcmp(qm + 5 * 4, qm2 + 5 * 4, 4) != 0);
    ck_assert_mem_eq(qm, qm2, 5 * 4);
    fs_grid_params_free(&gp);
}
END_TEST

START_TEST(dequant_uses_decoded_scale)
{
    /* what is stored is what quantization used: q88(scale) */
    fs_grid_params gp = params(4, 0, 0, 0.2f, 100, 2.4f);
    float x[2] = {-0.3f, 1.7f}, s, z;
    uint8_t b[4];
    fs_grid_group(&gp, x, 2, b, &s, &z);
    ck_assert_float_eq(s, (float)q88(2.0 / 15.0));
    fs_grid_params_free(&gp);
}
END_TEST

/* The nearest F16 value computed here from its definition: the F16 grid
 * around x is a multiple of 2^(e-10) (e = floor(log2 x), at least -14). */
static double f16_nearest(double x)
{
    int e = (int)floor(log2(x));
    if (e < -14) e = -14;
    double q = ldexp(1.0, e - 10), k = x / q, f = floor(k), r = k - f;
    double n = r > 0.5 ? f + 1 : (r < 0.5 ? f : (fmod(f, 2) == 0 ? f : f + 1));
    return n * q;
}

START_TEST(gptq_v1_f16_scales)
{
    fs_grid_params gp = params(4, 1, 0, 0.2f, 100, 2.4f);
    gp.gptq_v1 = 1;
    t_rng r = {21};
    float x[64];
    for (int g = 0; g < 300; g++) {
        float mag = ldexpf(1.0f, (int)(t_next(&r) % 30) - 20);
        for (int i = 0; i < 64; i++) x[i] = t_gauss(&r) * mag;
        uint8_t b[4];
        float s, z, s2, z2;
        fs_grid_group(&gp, x, 64, b, &s, &z);
        /* the scale used is the Q8.8 scale rounded to the nearest F16 */
        double q88 = exp2(code_of(b) / 256.0);
        ck_assert_msg((double)s == f16_nearest(q88), "scale %a, expected %a", (double)s, f16_nearest(q88));
        fs_grid_unpack(&gp, b, &s2, &z2);           /* and decoding the stored bytes agrees */
        ck_assert_float_eq(s, s2);
        ck_assert_float_eq(z, z2);
    }
    fs_grid_params_free(&gp);
}
END_TEST

START_TEST(gptq_v1_zero_never_0)
{
    for (int mse = 0; mse <= 1; mse++) {
        fs_grid_params gp = params(4, 0, mse, 0.2f, 100, 2.4f);
        gp.gptq_v1 = 1;
        /* all positive: the range zero would be 0; it becomes 1 and the scale
         * max / (maxq - 1) keeps the maximum on the grid */
        float x[4] = {0.5f, 1.4f, 2.8f, 0.1f}, s, z;
        uint8_t b[4];
        fs_grid_group(&gp, x, 4, b, &s, &z);
        ck_assert_uint_eq(b[2], 1);
        if (!mse) ck_assert_int_eq(code_of(b), (int16_t)rint(log2(2.8 / 14.0) * 256.0));
        t_rng r = {22};
        float y[32];
        for (int g = 0; g < 500; g++) {
            for (int i = 0; i < 32; i++) y[i] = fabsf(t_gauss(&r)) + (g % 2 ? 0.0f : -0.01f);
            fs_grid_group(&gp, y, 32, b, &s, &z);
            ck_assert_uint_ge(b[2], 1);
            float ymax = y[0];
            for (int i = 1; i < 32; i++) ymax = y[i] > ymax ? y[i] : ymax;
            /* the maximum is not clipped by the move: within half a step (plus
             * the Q8.8 and F16 roundings of the scale, < 1% of a step each) */
            float dq = (fs_quant1(ymax, s, z, 15) - z) * s;
            if (!mse) ck_assert_msg(fabsf(dq - ymax) <= 0.52f * s, "max %g decodes to %g (step %g)", ymax, dq, s);
        }
        fs_grid_params_free(&gp);
    }
}
END_TEST

Suite *fs_suite_grid(void)
{
    Suite *s = suite_create("grid");
    TCase *tc = tcase_create("range");
    tcase_add_test(tc, range_asym_hand);
    tcase_add_test(tc, range_asym_positive_only);
    tcase_add_test(tc, range_sym_hand);
    tcase_add_test(tc, range_all_zero);
    tcase_add_test(tc, partial_last_group);
    tcase_add_test(tc, dequant_uses_decoded_scale);
    tcase_add_test(tc, gptq_v1_f16_scales);
    tcase_add_test(tc, gptq_v1_zero_never_0);
    suite_add_tcase(s, tc);
    tc = tcase_create("mse");
    tcase_add_test(tc, mse_vs_exhaustive_lp);
    tcase_add_test(tc, mse_vs_exhaustive_l2);
    tcase_add_test(tc, mse_vs_exhaustive_2bit);
    tcase_add_test(tc, mse_vs_exhaustive_odd_n);
    tcase_add_test(tc, mse_never_worse_than_range);
    suite_add_tcase(s, tc);
    return s;
}
