/* check_gptq.c: the blocked solver and the layer driver against a naive
 * unblocked GPTQ written here (explicit H^-1 with the rank-one downdate after
 * each column, in double), RTN identities, act-order, dead columns, retries,
 * the RTN fallback, ragged groups, and the loss against its definition. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/util.h"
#include "src/backend/backend.h"
#include "hessian/hessian.h"

#define LOSS_REL 1e-7   /* the driver's double loss vs a long double evaluation here */

static fs_backend *cpu(fs_ctx *ctx)
{
    fs_ctx_init(ctx);
    ctx->quiet = 1;
    fs_backend *be = NULL;
    ck_assert_int_eq(fs_backend_open(ctx, FS_BE_CPU, NULL, &be), FS_OK);
    ctx->be = be;
    return be;
}

static fs_quant_opts opts(int bits, int sym, int64_t g, int block)
{
    fs_quant_opts q;
    fs_quant_opts_default(&q);
    q.bits = bits; q.sym = sym; q.group_size = g; q.block = block;
    return q;
}

/* Random weight and a correlated Hessian (H = X^T X) for a [rows, cols] layer. */
static void problem(uint64_t seed, int rows, int cols, float **W, float **H)
{
    t_rng r = {seed};
    int n = 3 * cols;
    float *X = t_corr_inputs(&r, n, cols);
    double *Hd = malloc(sizeof(double) * cols * cols);
    t_xtx(X, n, cols, Hd);
    *H = malloc(sizeof(float) * cols * cols);
    for (int i = 0; i < cols * cols; i++) (*H)[i] = (float)Hd[i];
    *W = malloc(sizeof(float) * rows * cols);
    for (int i = 0; i < rows * cols; i++) (*W)[i] = t_gauss(&r) * 0.1f;
    free(X); free(Hd);
}

/* Naive GPTQ, one column at a time in processing order `perm`, with the
 * explicit inverse Hessian downdated after each column (OBS form). Dynamic
 * groups: parameters from the current weights at the group's first column. */
#define NEAR_HALF 0.01   /* a naive value this close to x.5 may round either way */

static void naive_gptq(const float *W0, const float *H0, int rows, int cols,
                       const fs_quant_opts *q, const int32_t *perm, uint8_t *codes, double *pre)
{
    fs_grid_params gp;
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, q), FS_OK);
    int gw = (int)fs_group_width(cols, q->group_size);
    double *Hi = malloc(sizeof(double) * cols * cols), *w = malloc(sizeof(double) * cols);
    double mean = 0;
    float *Hf = malloc(sizeof(float) * cols * cols);
    memcpy(Hf, H0, sizeof(float) * cols * cols);
    float *Wf = malloc(sizeof(float) * rows * cols);
    memcpy(Wf, W0, sizeof(float) * rows * cols);
    for (int d = 0; d < cols; d++)
        if (Hf[d * cols + d] == 0) {
            Hf[d * cols + d] = 1;
            for (int r = 0; r < rows; r++) Wf[r * cols + d] = 0;
        }
    for (int i = 0; i < cols; i++) mean += Hf[perm[i] * cols + perm[i]];
    mean /= cols;
    float damp = (float)(q->damp * mean);
    for (int i = 0; i < cols; i++)
        for (int j = 0; j < cols; j++)
            Hi[i * cols + j] = Hf[perm[i] * cols + perm[j]] + (i == j ? damp : 0.0f);
    ck_assert_int_eq(t_inverse(Hi, cols), 0);
    double *Hrow = malloc(sizeof(double) * cols * cols);
    for (int r = 0; r < rows; r++) {
        memcpy(Hrow, Hi, sizeof(double) * cols * cols);
        for (int k = 0; k < cols; k++) w[k] = Wf[r * cols + perm[k]];
        float s = 1, z = 0, grp[4096];
        uint8_t qm[4];
        for (int j = 0; j < cols; j++) {
            if (j % gw == 0) {
                int n = cols - j < gw ? cols - j : gw;
                for (int i = 0; i < n; i++) grp[i] = (float)w[j + i];
                fs_grid_group(&gp, grp, n, qm, &s, &z);
            }
            float x = (float)w[j];
            float qv = fs_quant1(x, s, z, gp.maxq);
            codes[r * cols + j] = (uint8_t)qv;
            pre[r * cols + j] = w[j] / s + z;            /* before rounding */
            double e = ((double)x - (double)((qv - z) * s)) / Hrow[j * cols + j];
            for (int c = j + 1; c < cols; c++) w[c] -= e * Hrow[j * cols + c];
            /* remove column j from the inverse Hessian */
            for (int a = j + 1; a < cols; a++)
                for (int b = j + 1; b < cols; b++)
                    Hrow[a * cols + b] -= Hrow[a * cols + j] * Hrow[j * cols + b] / Hrow[j * cols + j];
        }
    }
    free(Hi); free(w); free(Hf); free(Wf); free(Hrow);
    fs_grid_params_free(&gp);
}

static void blocked_vs_naive_shape(int rows, int cols, int block, int act_order, int64_t g,
                                   int bits, int sym)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    float *W, *H;
    problem(100 + block, rows, cols, &W, &H);
    fs_quant_opts q = opts(bits, sym, g, block);
    q.act_order = act_order;
    fs_layer_result res;
    ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &res), FS_OK);
    int32_t *perm = malloc(sizeof(int32_t) * cols);
    for (int i = 0; i < cols; i++) perm[i] = act_order ? res.perm[i] : i;
    uint8_t *naive = malloc(rows * cols);
    double *pre = malloc(sizeof(double) * rows * cols);
    naive_gptq(W, H, rows, cols, &q, perm, naive, pre);
    /* Every code equals the naive solver's until, in a row, the naive value
     * before rounding lies within NEAR_HALF of a rounding boundary: there the
     * f32 inverse factor (relative error ~1e-4 on these conditionings) may
     * round the other way, and the row's later columns then follow a
     * different, equally valid error feedback; such a row is compared no
     * further.  Few rows may take that way out. */
    int split = 0;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            const double v = pre[r * cols + k], off = fabs(v - floor(v) - 0.5);
            if (naive[r * cols + k] == res.qweight[r * cols + perm[k]]) continue;
            ck_assert_msg(off < NEAR_HALF && abs((int)naive[r * cols + k] - (int)res.qweight[r * cols + perm[k]]) == 1,
                          "block %d: row %d column %d: code %d, the naive solver %d (its value %.6f is not at a "
                          "rounding boundary)", block, r, k, res.qweight[r * cols + perm[k]], naive[r * cols + k], v);
            split++;
            break;
        }
    ck_assert_msg(split <= 1 + rows / 10, "block %d: %d of %d rows left the naive solver's path", block, split, rows);
    free(perm); free(naive); free(pre); free(W); free(H);
    fs_layer_result_free(&res);
    fs_backend_free(be);
}

static void blocked_vs_naive(int block, int act_order, int64_t g, int bits, int sym)
{
    blocked_vs_naive_shape(12, 96, block, act_order, g, bits, sym);
}

START_TEST(naive_block1)   { blocked_vs_naive(1, 0, 32, 4, 1); }
END_TEST
START_TEST(naive_block3)   { blocked_vs_naive(3, 0, 32, 4, 0); }
END_TEST
START_TEST(naive_block128) { blocked_vs_naive(128, 0, 32, 3, 0); }
END_TEST
START_TEST(naive_block3_actorder) { blocked_vs_naive(3, 1, 64, 4, 0); }
END_TEST
START_TEST(naive_block128_rowgroup) { blocked_vs_naive(128, 1, -1, 2, 1); }
END_TEST

/* Many rows over several threads while the block width changes (groups of
 * 128 cut 172 columns into blocks of 128 and 44): thread slices run through
 * the blocks unsynchronised and must not share any scratch. */
START_TEST(naive_threads_ragged_blocks)
{
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        blocked_vs_naive_shape(40, 172, 128, 0, 128, 4, 1);
        blocked_vs_naive_shape(33, 172, 100, 1, 64, 3, 0);
    }
}
END_TEST

START_TEST(identity_hessian_is_rtn)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    const int rows = 9, cols = 160;
    t_rng r = {3};
    float *W = malloc(sizeof(float) * rows * cols), *H = calloc(cols * cols, sizeof(float));
    for (int i = 0; i < rows * cols; i++) W[i] = t_gauss(&r);
    for (int i = 0; i < cols; i++) H[i * cols + i] = 1.0f;
    int bits[4] = {2, 3, 4, 8};
    for (int b = 0; b < 4; b++) {
        fs_quant_opts q = opts(bits[b], b % 2, b == 3 ? -1 : 32, 7);
        fs_layer_result res;
        ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &res), FS_OK);
        /* RTN by hand: grid of each group of the original row, then rint */
        fs_grid_params gp;
        ck_assert_int_eq(fs_grid_params_init(&ctx, &gp, &q), FS_OK);
        int gw = (int)fs_group_width(cols, q.group_size);
        for (int row = 0; row < rows; row++)
            for (int c0 = 0; c0 < cols; c0 += gw) {
                int n = cols - c0 < gw ? cols - c0 : gw;
                uint8_t qm[4];
                float s, z;
                fs_grid_group(&gp, W + row * cols + c0, n, qm, &s, &z);
                for (int c = c0; c < c0 + n; c++) {
                    float qv = rintf(W[row * cols + c] / s + z);
                    qv = qv < 0 ? 0 : (qv > gp.maxq ? gp.maxq : qv);
                    ck_assert_uint_eq(res.qweight[row * cols + c], (uint8_t)qv);
                }
            }
        ck_assert(res.loss == res.rtn_loss);
        fs_grid_params_free(&gp);
        fs_layer_result_free(&res);
    }
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

/* dequant == (qweight - zero) * scale from the stored qmeta, bit for bit. */
static void check_decodes(const fs_layer_result *res, int64_t g, int static_groups)
{
    int64_t cols = res->cols, gw = fs_group_width(cols, g), ng = res->ngroups;
    int32_t *grp = malloc(sizeof(int32_t) * cols);
    for (int64_t k = 0; k < cols; k++) {
        int64_t c = res->perm && !static_groups ? res->perm[k] : k;
        grp[c] = (int32_t)(k / gw);
    }
    for (int64_t r = 0; r < res->rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            const uint8_t *m = res->qmeta + (r * ng + grp[c]) * 4;
            int16_t code = (int16_t)(uint16_t)(m[0] | m[1] << 8);
            float s = (float)exp2(code / 256.0), z = m[2];
            float want = ((float)res->qweight[r * cols + c] - z) * s;
            ck_assert_msg(memcmp(&want, &res->dequant[r * cols + c], 4) == 0,   /* bits: -0 != +0 */
                          "(%lld, %lld): dequant %a, decoded %a", (long long)r, (long long)c,
                          (double)res->dequant[r * cols + c], (double)want);
        }
    free(grp);
}

START_TEST(gptq_beats_rtn_and_loss_is_true)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    const int rows = 24, cols = 172;
    float *W, *H;
    problem(7, rows, cols, &W, &H);
    struct { int bits, sym, act, stat, mse; int64_t g; } cfg[] = {
        {4, 1, 0, 0, 0, 128}, {4, 0, 1, 0, 1, 128}, {3, 1, 0, 0, 0, 128}, {8, 1, 0, 0, 0, -1},
        {2, 0, 0, 1, 1, 64},  {4, 0, 1, 1, 0, 32},  {4, 1, 0, 0, 0, 32},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        fs_quant_opts q = opts(cfg[i].bits, cfg[i].sym, cfg[i].g, 128);
        q.act_order = cfg[i].act;
        q.static_groups = cfg[i].stat;
        q.grid = cfg[i].mse ? FS_GRID_MSE : FS_GRID_ABSMAX;
        fs_layer_result res;
        ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &res), FS_OK);
        ck_assert_int_eq(res.ngroups, cfg[i].g < 0 || cfg[i].g >= cols ? 1 : (cols + cfg[i].g - 1) / cfg[i].g);
        double truth = t_loss(W, res.dequant, H, rows, cols);
        ck_assert_msg(fabs(res.loss - truth) <= LOSS_REL * truth, "cfg %zu: loss %g vs %g", i, res.loss, truth);
        ck_assert_msg(res.loss < res.rtn_loss, "cfg %zu: gptq %g >= rtn %g", i, res.loss, res.rtn_loss);
        check_decodes(&res, cfg[i].g, cfg[i].stat);
        fs_layer_result_free(&res);
    }
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

START_TEST(act_order_perm)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    const int rows = 4, cols = 64;
    float *W, *H;
    problem(8, rows, cols, &W, &H);
    H[5 * cols + 5] = H[9 * cols + 9] = H[40 * cols + 40] = 7.5f;   /* ties stay in order */
    fs_quant_opts q = opts(4, 1, 32, 16);
    q.act_order = 1;
    fs_layer_result res;
    ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &res), FS_OK);
    /* selection sort, first maximum first: a stable descending order */
    int used[64] = {0};
    for (int k = 0; k < cols; k++) {
        int best = -1;
        for (int c = 0; c < cols; c++)
            if (!used[c] && (best < 0 || H[c * cols + c] > H[best * cols + best])) best = c;
        used[best] = 1;
        ck_assert_int_eq(res.perm[k], best);
    }
    check_decodes(&res, 32, 0);
    fs_layer_result_free(&res);
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

START_TEST(dead_columns_rank_deficient)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    const int rows = 8, cols = 64;
    float *W, *H;
    problem(9, rows, cols, &W, &H);
    for (int i = 0; i < cols; i++) H[3 * cols + i] = H[i * cols + 3] = H[50 * cols + i] = H[i * cols + 50] = 0;
    fs_quant_opts q = opts(4, 0, 32, 128);
    q.act_order = 1;
    fs_layer_result res;
    ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &res), FS_OK);
    ck_assert_int_eq(res.dead_cols, 2);
    for (int r = 0; r < rows; r++) {
        ck_assert_float_eq(res.dequant[r * cols + 3], 0.0f);
        ck_assert_float_eq(res.dequant[r * cols + 50], 0.0f);
    }
    ck_assert(res.loss < res.rtn_loss);
    ck_assert(fabs(res.loss - t_loss(W, res.dequant, H, rows, cols)) <= LOSS_REL * res.loss);
    fs_layer_result_free(&res);
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

START_TEST(retry_then_success)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    const int rows = 4, cols = 32;
    float *W, *H;
    problem(10, rows, cols, &W, &H);
    double mean = 0;
    for (int i = 0; i < cols; i++) mean += H[i * cols + i];
    mean /= cols;
    /* one direction slightly negative: damp .01 cannot lift it, .1 can */
    for (int i = 0; i < cols; i++) H[7 * cols + i] = H[i * cols + 7] = 0;
    H[7 * cols + 7] = (float)(-0.05 * mean);
    fs_quant_opts q = opts(4, 1, 32, 128);
    fs_layer_result res;
    ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &res), FS_OK);
    ck_assert_int_eq(res.retries, 1);
    ck_assert(fabs(res.damp_used - 0.1) < 1e-12);
    ck_assert_int_eq(res.fallback_rtn, 0);
    fs_layer_result_free(&res);
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

START_TEST(fallback_to_rtn)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    const int rows = 4, cols = 32;
    float *W, *H;
    problem(11, rows, cols, &W, &H);
    for (int i = 0; i < cols * cols; i++) H[i] = -H[i];     /* negative definite */
    fs_quant_opts q = opts(4, 1, 32, 128);
    q.act_order = 1;
    fs_layer_result res;
    ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, rows, cols, &q, &res), FS_OK);
    ck_assert_int_eq(res.fallback_rtn, 1);
    ck_assert_int_eq(res.retries, 3);
    ck_assert(res.loss == res.rtn_loss);
    for (int i = 0; i < cols; i++) ck_assert_int_eq(res.perm[i], i);
    check_decodes(&res, 32, 0);
    fs_layer_result_free(&res);
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

START_TEST(nonfinite_input_rejected)
{
    fs_ctx ctx;
    fs_backend *be = cpu(&ctx);
    float *W, *H;
    problem(12, 4, 32, &W, &H);
    W[37] = NAN;
    fs_quant_opts q = opts(4, 1, 32, 128);
    fs_layer_result res;
    ck_assert_int_eq(fs_layer_quantize(&ctx, W, H, NULL, 4, 32, &q, &res), FS_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "weight"));
    ck_assert_ptr_nonnull(strstr(ctx.errmsg, "37"));
    ck_assert_ptr_null(res.qweight);
    free(W); free(H);
    fs_backend_free(be);
}
END_TEST

/* The pipeline's logged loss: exact (up to f32 rounding) when the matrix has
 * at most FS_LOSS_EST_ROWS rows; an estimate from that many evenly spread
 * rows otherwise, checked against the long-double definition (t_loss) on a
 * matrix whose rows all cost about the same, and with the rows' costs made
 * very uneven by blocks (the spread sample must still see every block). */
START_TEST(log_loss_estimate)
{
    t_rng g = {77};
    const int cols = 48, n = 400;
    float *X = t_corr_inputs(&g, n, cols), *H = malloc(sizeof(float) * cols * cols);
    double *Hd = malloc(sizeof(double) * cols * cols);
    t_xtx(X, n, cols, Hd);
    for (int i = 0; i < cols * cols; i++) H[i] = (float)Hd[i];
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    const int rowsv[3] = {FS_LOSS_EST_ROWS / 2, 3000, 3000};
    for (int c = 0; c < 3; c++) {
        const int rows = rowsv[c];
        float *W = malloc(sizeof(float) * rows * cols), *D = malloc(sizeof(float) * rows * cols);
        for (int i = 0; i < rows * cols; i++) {
            W[i] = t_gauss(&g);
            D[i] = W[i] + 0.01f * t_gauss(&g) * (c == 2 ? (float)(1 + (i / cols) / 500) : 1.0f);   /* 6 blocks */
        }
        double est = 0, exact = t_loss(W, D, H, rows, cols);
        ck_assert_int_eq(fs_quad_loss_est(&ctx, W, D, H, rows, cols, &est), FS_OK);
        double rel = fabs(est - exact) / exact;
        if (rows <= FS_LOSS_EST_ROWS) ck_assert_msg(rel < 1e-5, "all rows: %g vs %g", est, exact);
        else ck_assert_msg(rel < 0.15, "case %d: estimate %g, exact %g (%.1f%% off)", c, est, exact, 100 * rel);
        double wn = 0;
        ck_assert_int_eq(fs_quad_loss_est(&ctx, W, NULL, H, rows, cols, &wn), FS_OK);
        float *Z = calloc((size_t)rows * cols, sizeof(float));
        double wexact = t_loss(W, Z, H, rows, cols);
        ck_assert_msg(fabs(wn - wexact) / wexact < (rows <= FS_LOSS_EST_ROWS ? 1e-5 : 0.15), "trace(W H W^T) %g vs %g", wn, wexact);
        free(Z); free(W); free(D);
    }
    free(X); free(H); free(Hd);
}
END_TEST

Suite *fs_suite_gptq(void)
{
    Suite *s = suite_create("gptq");
    TCase *tc = tcase_create("naive");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, naive_block1);
    tcase_add_test(tc, naive_block3);
    tcase_add_test(tc, naive_block128);
    tcase_add_test(tc, naive_block3_actorder);
    tcase_add_test(tc, naive_block128_rowgroup);
    tcase_add_test(tc, naive_threads_ragged_blocks);
    suite_add_tcase(s, tc);
    tc = tcase_create("layer");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, identity_hessian_is_rtn);
    tcase_add_test(tc, gptq_beats_rtn_and_loss_is_true);
    tcase_add_test(tc, act_order_perm);
    tcase_add_test(tc, dead_columns_rank_deficient);
    tcase_add_test(tc, retry_then_success);
    tcase_add_test(tc, fallback_to_rtn);
    tcase_add_test(tc, nonfinite_input_rejected);
    tcase_add_test(tc, log_loss_estimate);
    suite_add_tcase(s, tc);
    return s;
}
