/* check_hessian.c: accumulation against a naive double X^T X, the inverse
 * factor by (U^T U) H ~ I, non-PD detection, damping retries, dead columns. */
#include <math.h>
#include <string.h>

#include "tests/util.h"
#include "src/backend/backend.h"
#include "hessian/hessian.h"

#define ACCUM_REL 1e-5   /* f32 sums of 50 products vs double: a few ulps of the largest entry */
#define INV_REL 2e-3     /* three f32 factorisations: ~n * eps * cond = 40 * 6e-8 * 1e2, x8 */

static fs_backend *cpu(fs_ctx *ctx)
{
    fs_ctx_init(ctx);
    fs_backend *be = NULL;
    ck_assert_int_eq(fs_backend_open(ctx, FS_BE_CPU, NULL, &be), FS_OK);
    ctx->be = be;
    return be;
}

START_TEST(accum_matches_naive)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    t_rng r = {11};
    const int n = 50, d = 33;
    float *X = t_corr_inputs(&r, n, d), H[33 * 33];
    double ref[33 * 33], mx = 0;
    t_xtx(X, n, d, ref);
    for (int i = 0; i < d * d; i++) mx = fmax(mx, fabs(ref[i]));
    for (int chunk = 1; chunk <= n; chunk += 13) {
        ck_assert_int_eq(fs_hess_from_inputs(&ctx, be, X, n, d, chunk, H), FS_OK);
        for (int i = 0; i < d * d; i++) ck_assert(fabs(H[i] - ref[i]) <= ACCUM_REL * mx);
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) ck_assert_float_eq(H[i * d + j], H[j * d + i]);
    }
    free(X);
    fs_backend_free(be);
}
END_TEST

START_TEST(chol_inv_is_inverse_factor)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    t_rng r = {12};
    const int n = 200, d = 40;
    float *X = t_corr_inputs(&r, n, d), H[40 * 40], U[40 * 40];
    double ref[40 * 40];
    t_xtx(X, n, d, ref);
    for (int i = 0; i < d * d; i++) H[i] = (float)(ref[i] / n);
    for (int i = 0; i < d; i++) H[i * d + i] += 1.0f;    /* keeps the condition ~1e1 */
    memcpy(U, H, sizeof U);
    ck_assert_int_eq(fs_be_chol_inv(&ctx, be, U, d), FS_OK);
    for (int i = 0; i < d; i++) {
        ck_assert(U[i * d + i] > 0);
        for (int j = 0; j < i; j++) ck_assert_float_eq(U[i * d + j], 0.0f);
    }
    /* U^T U == H^-1, the inverse computed here by Gauss-Jordan in double */
    double inv[40 * 40], mx = 0, err = 0;
    for (int i = 0; i < d * d; i++) inv[i] = H[i];
    ck_assert_int_eq(t_inverse(inv, d), 0);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double uu = 0;
            for (int m = 0; m < d; m++) uu += (double)U[m * d + i] * U[m * d + j];
            err = fmax(err, fabs(uu - inv[i * d + j]));
            mx = fmax(mx, fabs(inv[i * d + j]));
        }
    ck_assert_msg(err <= INV_REL * mx, "max |U^T U - H^-1| = %g of %g", err, mx);
    free(X);
    fs_backend_free(be);
}
END_TEST

START_TEST(chol_inv_rejects_non_pd)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    float A[9] = {1, 2, 0, 2, 1, 0, 0, 0, 1};   /* eigenvalues 3, -1, 1 */
    ck_assert_int_eq(fs_be_chol_inv(&ctx, be, A, 3), FS_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "minor"));
    /* the column named is H's: a negative pivot at column 10 of 32 */
    float D[32 * 32] = {0};
    for (int i = 0; i < 32; i++) D[i * 32 + i] = i == 10 ? -1.0f : 1.0f;
    fs_ctx_clear(&ctx);
    ck_assert_int_eq(fs_be_chol_inv(&ctx, be, D, 32), FS_ERR_NUMERIC);
    ck_assert_msg(strstr(ctx.errmsg, "trailing minor from column 10"), "%s", ctx.errmsg);
    fs_backend_free(be);
}
END_TEST

START_TEST(invert_retries_with_more_damping)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    ctx.quiet = 1;
    enum { N = 16 };
    float H[N * N] = {0}, U[N * N];
    for (int i = 0; i < N; i++) H[i * N + i] = 1.0f;
    H[5 * N + 5] = -0.05f;    /* mean diag 0.934: damp .01 adds .0093 (fails), .1 adds .093 */
    double used = 0;
    int retries = -1;
    ck_assert_int_eq(fs_hess_invert(&ctx, be, H, N, 0.01, 3, U, &used, &retries), FS_OK);
    ck_assert_int_eq(retries, 1);
    ck_assert(fabs(used - 0.1) < 1e-12);
    /* hopeless: negative mean diagonal, damping only makes it worse */
    H[5 * N + 5] = -100.0f;
    ck_assert_int_eq(fs_hess_invert(&ctx, be, H, N, 0.01, 3, U, &used, &retries), FS_ERR_NUMERIC);
    ck_assert_int_eq(retries, 3);
    ck_assert(fabs(used - 10.0) < 1e-9);
    fs_backend_free(be);
}
END_TEST

START_TEST(dead_columns)
{
    float H[16] = {2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0, 0};
    float W[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    ck_assert_int_eq(fs_hess_dead_fix(H, W, 2, 4), 2);
    ck_assert_float_eq(H[1 * 4 + 1], 1.0f);
    ck_assert_float_eq(H[3 * 4 + 3], 1.0f);
    ck_assert_float_eq(H[0], 2.0f);
    float Wexp[8] = {1, 0, 3, 0, 5, 0, 7, 0};
    ck_assert_mem_eq(W, Wexp, sizeof W);
}
END_TEST

Suite *fs_suite_hessian(void)
{
    Suite *s = suite_create("hessian");
    TCase *tc = tcase_create("hessian");
    tcase_add_test(tc, accum_matches_naive);
    tcase_add_test(tc, chol_inv_is_inverse_factor);
    tcase_add_test(tc, chol_inv_rejects_non_pd);
    tcase_add_test(tc, invert_retries_with_more_damping);
    tcase_add_test(tc, dead_columns);
    suite_add_tcase(s, tc);
    return s;
}
